//! Packets into segments: time bucketing, rotation and commit to the index.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use rustc_hash::FxHashMap;

use pktvault_schema::time::NANOS_PER_SEC;
use pktvault_schema::{SegmentMeta, TsResolution};

use crate::decode::decode;
use crate::retention::{self, RetentionPolicy};
use crate::segment::{recover_open_segment, RecordHeader, SegmentWriter, RECORD_HEADER_BYTES};
use crate::store::InterfaceStore;
use crate::{Error, Result};

/// Index space kept free beyond a segment's own share, for RocksDB's
/// write-ahead log, manifest and compaction output.
const MIN_INDEX_RESERVE: u64 = 4 << 20;

/// Flows after which a segment is sealed early. The open segment's index
/// keeps about 150 bytes per flow in memory, so traffic where nearly every
/// packet is a flow of its own (a scan, a flood of spoofed sources) is bounded
/// to about 150 MiB per open segment.
const MAX_SEGMENT_FLOWS: u32 = 1 << 20;

/// When a segment is closed and the next one started.
#[derive(Debug, Clone, Copy)]
pub struct SegmentLimits {
    /// Packet-time span of one segment, in seconds.
    pub seconds: u64,
    /// Size of one segment file, in bytes.
    pub bytes: u64,
}

impl Default for SegmentLimits {
    fn default() -> Self {
        SegmentLimits { seconds: 60, bytes: 256 << 20 }
    }
}

/// One packet from a capture source.
#[derive(Debug, Clone, Copy)]
pub struct SourcePacket<'a> {
    pub ts_sec: u32,
    /// Fraction of the second in units of `resolution`, as the source stored it.
    pub ts_frac: u32,
    pub resolution: TsResolution,
    pub wire_len: u32,
    pub data: &'a [u8],
}

/// Counters of an ingest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestStats {
    pub packets: u64,
    pub bytes: u64,
    pub segments_sealed: u64,
    /// Segments deleted by retention or to free disk space, including ones
    /// written by this ingest.
    pub segments_deleted: u64,
}

/// Writes packets of one interface into segments and commits each sealed
/// segment to the index.
pub struct Ingester {
    store: Arc<InterfaceStore>,
    /// The segment being sealed on a thread of its own: its `fsync` and its
    /// commit to the index take several milliseconds, in which the next
    /// segment is written. At most one seal runs at a time.
    sealing: Option<JoinHandle<Result<SegmentMeta>>>,
    limits: SegmentLimits,
    /// One open segment per link type and timestamp resolution. The map is
    /// looked up for every packet, so it hashes with FxHash, not SipHash.
    open: FxHashMap<(u32, TsResolution), SegmentWriter>,
    next_segment_id: u64,
    stats: IngestStats,
    retention: RetentionPolicy,
    /// Newest packet timestamp recorded, the reference for the age limit.
    newest_ts_ns: u64,
    /// Set, by a signal handler for example, to make imports stop early.
    interrupt: Option<Arc<AtomicBool>>,
}

impl Ingester {
    /// Starts ingesting into `store`, which must be writable.
    pub fn new(store: InterfaceStore, limits: SegmentLimits) -> Result<Ingester> {
        if !store.is_writable() {
            return Err(Error::InvalidRequest("the interface store was opened read-only".into()));
        }
        if limits.seconds == 0 || limits.bytes < 1024 {
            return Err(Error::InvalidRequest(format!(
                "segment limits of {} s and {} bytes are too small; use at least 1 s and 1024 bytes",
                limits.seconds, limits.bytes
            )));
        }
        recover_open_segments(&store)?;
        check_room(&store, limits.bytes, &[], retention::available_bytes(&store.pcap_dir())?)?;
        let orphans = orphan_files(&store)?;
        let next_segment_id = store.next_segment_id()?;
        let newest_ts_ns = store.segments()?.iter().map(|meta| meta.max_ts_ns).max().unwrap_or(0);
        Ok(Ingester {
            store: Arc::new(store),
            sealing: None,
            limits,
            open: FxHashMap::default(),
            next_segment_id,
            stats: IngestStats::default(),
            retention: RetentionPolicy::default(),
            newest_ts_ns,
            interrupt: None,
        })
        .and_then(|mut ingester| {
            ingester.reindex(&orphans)?;
            Ok(ingester)
        })
    }

    /// Imports segment files that have no index entry (a writer died between
    /// creating a segment and its first checkpoint) into new segments, then
    /// deletes them. A torn last record is dropped.
    fn reindex(&mut self, orphans: &[std::path::PathBuf]) -> Result<()> {
        for path in orphans {
            let size = std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0);
            if size <= crate::segment::FILE_HEADER_BYTES {
                // Created, but no packet reached the file before its writer died.
                std::fs::remove_file(path).map_err(Error::io("cannot delete", path))?;
                tracing::warn!(file = %path.display(), "deleted an empty segment file that had no index entry");
                continue;
            }
            let report = crate::input::import_file(path, self)?;
            self.flush()?;
            std::fs::remove_file(path).map_err(Error::io("cannot delete", path))?;
            tracing::warn!(file = %path.display(), packets = report.packets, "re-indexed a segment file that had no index entry");
        }
        Ok(())
    }

    /// Applies `policy` from now on, first to the data already recorded.
    ///
    /// Before each new segment, enough old segments are deleted that a full
    /// new segment, and the index growth that comes with it, fits in the budget.
    pub fn with_retention(mut self, policy: RetentionPolicy) -> Result<Ingester> {
        if let Some(max_bytes) = policy.max_bytes {
            let minimum = 4 * self.limits.bytes + MIN_INDEX_RESERVE;
            if max_bytes < minimum {
                return Err(Error::InvalidRequest(format!(
                    "a disk limit of {max_bytes} bytes is below {minimum} bytes, the room for four segments of {} bytes and the index; raise the limit or lower the segment size",
                    self.limits.bytes
                )));
            }
        }
        self.retention = policy;
        self.enforce_retention()?;
        Ok(self)
    }

    /// Room kept free for the next segment: a full segment and its index.
    fn reserve_bytes(&self) -> u64 {
        self.limits.bytes + self.limits.bytes / 8 + MIN_INDEX_RESERVE
    }

    fn enforce_retention(&mut self) -> Result<()> {
        let protected: Vec<u64> = self.open.values().map(|writer| writer.meta().segment_id).collect();
        let open_bytes: u64 = self.open.values().map(|writer| writer.meta().file_bytes).sum();
        // Open segments may still grow to the full segment size.
        let reserve = self.reserve_bytes() + (self.limits.bytes * protected.len() as u64).saturating_sub(open_bytes);
        let enforced = retention::enforce(&self.store, &self.retention, reserve, self.newest_ts_ns, &protected)?;
        self.stats.segments_deleted += enforced.segments_deleted;
        // Whatever the limits, the filesystem keeps room for the next segment and
        // the index, because RocksDB stops accepting writes once a write fails
        // for lack of space.
        let available = retention::available_bytes(&self.store.pcap_dir())?;
        let wanted = 2 * self.limits.bytes + MIN_INDEX_RESERVE;
        if available < wanted {
            check_room(&self.store, self.limits.bytes, &protected, available)?;
            let freed = retention::free_oldest(&self.store, wanted - available, &protected)?;
            self.stats.segments_deleted += freed.segments_deleted;
            // Routine when the filesystem is the budget, so not a warning: an
            // import on a full disk would print one per segment.
            tracing::info!(
                available,
                segments = freed.segments_deleted,
                bytes = freed.bytes_freed,
                "filesystem nearly full; deleted the oldest segments"
            );
        }
        Ok(())
    }

    /// Makes [`crate::input::import_file`] stop before the next packet once
    /// `flag` is set. What was read stays imported.
    pub fn interrupt_on(&mut self, flag: Arc<AtomicBool>) {
        self.interrupt = Some(flag);
    }

    /// Returns the flag given to [`Ingester::interrupt_on`].
    pub fn interrupt_flag(&self) -> Option<Arc<AtomicBool>> {
        self.interrupt.clone()
    }

    /// Returns whether the flag given to [`Ingester::interrupt_on`] is set.
    pub fn is_interrupted(&self) -> bool {
        self.interrupt.as_ref().is_some_and(|flag| flag.load(Ordering::Relaxed))
    }

    /// Returns the store being written.
    pub fn store(&self) -> &InterfaceStore {
        &self.store
    }

    /// Counters so far.
    pub fn stats(&self) -> IngestStats {
        self.stats
    }

    /// Appends one packet of link type `linktype`, captured with `snaplen`.
    pub fn ingest(&mut self, linktype: u32, snaplen: u32, packet: &SourcePacket<'_>) -> Result<()> {
        let ts_ns =
            u64::from(packet.ts_sec) * NANOS_PER_SEC + u64::from(packet.ts_frac) * packet.resolution.nanos_per_unit();
        let key = (linktype, packet.resolution);
        let record_bytes = RECORD_HEADER_BYTES + packet.data.len() as u64;
        let bucket_ns = self.limits.seconds.saturating_mul(NANOS_PER_SEC);
        if let Some(writer) = self.open.get(&key) {
            let start = writer.bucket_start_ns();
            let meta = writer.meta();
            let rotate = ts_ns >= start.saturating_add(bucket_ns)
                || ts_ns.saturating_add(bucket_ns) <= start
                || meta.file_bytes + record_bytes > self.limits.bytes
                || meta.packets >= u64::from(u32::MAX - 1)
                || writer.flow_count() >= MAX_SEGMENT_FLOWS;
            if rotate {
                let writer = self.open.remove(&key).expect("segment is open");
                self.seal(writer)?;
            }
        }
        self.newest_ts_ns = self.newest_ts_ns.max(ts_ns);
        if !self.open.contains_key(&key) {
            self.enforce_retention()?;
            let writer = self.create_segment(ts_ns, linktype, snaplen, packet.resolution)?;
            self.open.insert(key, writer);
        }
        let header = RecordHeader {
            ts_sec: packet.ts_sec,
            ts_frac: packet.ts_frac,
            caplen: packet.data.len() as u32,
            wire_len: packet.wire_len,
        };
        let decoded = decode(linktype, packet.data, packet.wire_len);
        let writer = self.open.get_mut(&key).expect("segment is open");
        if let Err(err) = writer.append(header, ts_ns, packet.data, &decoded) {
            if !is_disk_full(&err) {
                return Err(err);
            }
            self.free_space_after(&err)?;
            let writer = self.open.get_mut(&key).expect("segment is open");
            writer.append(header, ts_ns, packet.data, &decoded)?;
        }
        self.stats.packets += 1;
        self.stats.bytes += u64::from(packet.wire_len);
        Ok(())
    }

    fn create_segment(
        &mut self,
        ts_ns: u64,
        linktype: u32,
        snaplen: u32,
        resolution: TsResolution,
    ) -> Result<SegmentWriter> {
        let pcap_dir = self.store.pcap_dir();
        // A file left by an interrupted run may hold the next id; skip past it.
        loop {
            let segment_id = self.next_segment_id;
            self.next_segment_id += 1;
            match SegmentWriter::create(&pcap_dir, segment_id, ts_ns, linktype, snaplen, resolution) {
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => continue,
                other => return other,
            }
        }
    }

    /// Writes the rest of the segment, here, so that a full disk is handled
    /// as for any write, then leaves the `fsync` and the commit to a thread.
    fn seal(&mut self, mut writer: SegmentWriter) -> Result<()> {
        if let Err(err) = writer.flush() {
            if !is_disk_full(&err) {
                return Err(err);
            }
            self.free_space_after(&err)?;
            writer.flush()?;
        }
        self.wait_for_seal()?;
        let store = Arc::clone(&self.store);
        let seal = move || {
            let (meta, tables, index) = writer.seal()?;
            store.commit_segment(&meta, &tables, &index)?;
            store.flush()?;
            Ok(meta)
        };
        let handle = std::thread::Builder::new().name("segment-sealer".into()).spawn(seal).map_err(|source| {
            Error::Io { action: "cannot start a thread to seal", path: self.store.pcap_dir(), source }
        })?;
        self.sealing = Some(handle);
        Ok(())
    }

    /// Waits for the segment being sealed, if any, and returns its error.
    fn wait_for_seal(&mut self) -> Result<()> {
        let Some(handle) = self.sealing.take() else { return Ok(()) };
        let meta =
            handle.join().map_err(|_| Error::InvalidRequest("the thread sealing a segment panicked".into()))??;
        self.stats.segments_sealed += 1;
        tracing::debug!(segment_id = meta.segment_id, packets = meta.packets, file = %meta.file_name, "segment sealed");
        Ok(())
    }

    /// Makes every packet ingested so far durable and extractable: flushes and
    /// syncs the open segment files, then stores a checkpoint of each in the index.
    pub fn checkpoint(&mut self) -> Result<()> {
        self.wait_for_seal()?;
        let keys: Vec<(u32, TsResolution)> = self.open.keys().copied().collect();
        for key in keys {
            let writer = self.open.get_mut(&key).expect("key of an open segment");
            if writer.meta().packets == 0 {
                continue;
            }
            if let Err(err) = writer.checkpoint() {
                if !is_disk_full(&err) {
                    return Err(err);
                }
                self.free_space_after(&err)?;
            }
            let writer = self.open.get_mut(&key).expect("key of an open segment");
            let (meta, tables, index) = writer.checkpoint()?;
            self.store.commit_segment(&meta, tables, index)?;
        }
        Ok(())
    }

    /// Handles a full disk by deleting the oldest sealed segments, two
    /// segments' worth, so that the failed write can be retried.
    fn free_space_after(&mut self, cause: &Error) -> Result<()> {
        tracing::error!(error = %cause, "disk full; deleting the oldest segments to continue");
        let protected: Vec<u64> = self.open.values().map(|writer| writer.meta().segment_id).collect();
        let freed = retention::free_oldest(&self.store, 2 * self.limits.bytes, &protected)?;
        self.stats.segments_deleted += freed.segments_deleted;
        if freed.segments_deleted == 0 {
            return Err(Error::InvalidRequest(format!(
                "the disk is full and no sealed segment is left to delete: {cause}"
            )));
        }
        tracing::warn!(segments = freed.segments_deleted, bytes = freed.bytes_freed, "freed space after a full disk");
        Ok(())
    }

    /// Adds drops reported by the capture source to the open segments.
    pub fn add_dropped(&mut self, dropped: u64) {
        if let Some(writer) = self.open.values_mut().next() {
            writer.add_dropped(dropped);
        }
    }

    /// Seals every open segment.
    pub fn flush(&mut self) -> Result<()> {
        let mut writers: Vec<SegmentWriter> = self.open.drain().map(|(_, writer)| writer).collect();
        writers.sort_by_key(|writer| writer.meta().segment_id);
        for writer in writers {
            self.seal(writer)?;
        }
        self.wait_for_seal()
    }

    /// Seals every open segment and returns the store.
    pub fn finish(mut self) -> Result<(InterfaceStore, IngestStats)> {
        self.flush()?;
        let store = Arc::clone(&self.store);
        let stats = self.stats;
        drop(self);
        let store = Arc::try_unwrap(store)
            .map_err(|_| Error::InvalidRequest("the index is still in use by a thread sealing a segment".into()))?;
        Ok((store, stats))
    }
}

impl Drop for Ingester {
    /// Waits for a seal still running, so that the index is closed when the
    /// ingester is gone. No caller receives its error, so it is logged.
    fn drop(&mut self) {
        if let Err(err) = self.wait_for_seal() {
            tracing::error!(error = %err, "sealing the last segment failed");
        }
    }
}

/// Returns the segment files in the pcap folder that no index entry names.
fn orphan_files(store: &InterfaceStore) -> Result<Vec<std::path::PathBuf>> {
    let indexed: std::collections::HashSet<String> = store.segments()?.into_iter().map(|meta| meta.file_name).collect();
    let pcap_dir = store.pcap_dir();
    let mut orphans = Vec::new();
    for entry in std::fs::read_dir(&pcap_dir).map_err(Error::io("cannot list", &pcap_dir))? {
        let entry = entry.map_err(Error::io("cannot list", &pcap_dir))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".pcap") && !indexed.contains(&name) {
            orphans.push(entry.path());
        }
    }
    orphans.sort();
    Ok(orphans)
}

/// Smallest segment size suggested when the filesystem is too small: the
/// smallest `--segment-bytes` the command line accepts.
const MIN_SUGGESTED_SEGMENT: u64 = 64 << 10;
const MIB: u64 = 1 << 20;

/// Checks that the filesystem, with `available` bytes free, has room for two
/// segments of `segment_bytes` and the index, counting the sealed segments
/// not in `protected`, which retention may delete. Without the check, a disk
/// smaller than that would have every recorded segment deleted to make room,
/// and the write would still fail.
fn check_room(store: &InterfaceStore, segment_bytes: u64, protected: &[u64], available: u64) -> Result<()> {
    let needed = 2 * segment_bytes + MIN_INDEX_RESERVE;
    if available >= needed {
        return Ok(());
    }

    let deletable: u64 = store
        .segments()?
        .iter()
        .filter(|meta| meta.sealed && !protected.contains(&meta.segment_id))
        .map(|meta| meta.file_bytes)
        .sum();
    let room = available.saturating_add(deletable);
    if room >= needed {
        return Ok(());
    }

    // Two segments of room are only the floor, and the space kept free holds
    // no recorded data. The size suggested therefore keeps about six segments.
    let suggested = room.saturating_sub(MIN_INDEX_RESERVE) / 8;
    let size = match suggested {
        0..MIN_SUGGESTED_SEGMENT => None,
        MIN_SUGGESTED_SEGMENT..MIB => Some(format!("{}K", suggested >> 10)),
        _ => Some(format!("{}M", suggested >> 20)),
    };
    let advice = match size {
        None => "free space on it or record to a larger filesystem".to_string(),
        Some(size) => {
            format!(
                "use a smaller --segment-bytes, such as {size}, which keeps about six segments, or free space on it"
            )
        }
    };

    Err(Error::InvalidRequest(format!(
        "the filesystem of {} has {available} bytes free and {deletable} bytes of segments that retention may delete, \
         less than the {needed} bytes that two segments of {segment_bytes} bytes and the index need; {advice}",
        store.pcap_dir().display()
    )))
}

fn is_disk_full(err: &Error) -> bool {
    matches!(err, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull || source.raw_os_error() == Some(libc::ENOSPC))
}

/// Seals the segments a previous writer left open (after a crash or
/// `kill -9`): each file is cut back to its last checkpoint.
fn recover_open_segments(store: &InterfaceStore) -> Result<()> {
    for mut meta in store.segments()?.into_iter().filter(|meta| !meta.sealed) {
        recover_open_segment(&store.pcap_dir(), &meta)?;
        meta.sealed = true;
        store.update_meta(&meta)?;
        tracing::warn!(
            segment_id = meta.segment_id,
            packets = meta.packets,
            file = %meta.file_name,
            "recovered a segment left open; packets after its last checkpoint were not reported durable and are dropped"
        );
    }
    Ok(())
}
