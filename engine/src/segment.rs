//! Segment files: classic little-endian pcap files of one link type and
//! timestamp resolution, with position and time tables kept in the index.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use pktvault_schema::time::NANOS_PER_SEC;
use pktvault_schema::{ChunkTimes, PositionTable, SegmentMeta, TsResolution, PACKETS_PER_CHUNK, PACKETS_PER_GROUP};

use roaring::RoaringBitmap;

use crate::decode::Decoded;
use crate::index::SegmentIndex;
use crate::store::SegmentTables;
use crate::write_behind::WriteBehind;
use crate::{Error, Result};

/// Largest block a [`SegmentReader`] reads at once when consecutive groups
/// hold wanted packets.
const MAX_READ_BYTES: u64 = 1 << 20;

/// Bytes of a segment's write buffer; a record fits in it whole up to this size.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// Bytes of a pcap file header.
pub const FILE_HEADER_BYTES: u64 = 24;
/// Bytes of a pcap record header.
pub const RECORD_HEADER_BYTES: u64 = 16;

/// Returns the 24-byte little-endian pcap file header.
pub fn pcap_file_header(resolution: TsResolution, snaplen: u32, linktype: u32) -> [u8; 24] {
    let mut header = [0u8; 24];
    header[0..4].copy_from_slice(&resolution.pcap_magic().to_le_bytes());
    header[4..6].copy_from_slice(&2u16.to_le_bytes());
    header[6..8].copy_from_slice(&4u16.to_le_bytes());
    header[16..20].copy_from_slice(&snaplen.to_le_bytes());
    header[20..24].copy_from_slice(&linktype.to_le_bytes());
    header
}

/// Returns the segment file name: the first packet's time, then the segment id.
pub fn segment_file_name(first_ts_ns: u64, segment_id: u64) -> String {
    format!("{}.{:09}-{:08}.pcap", first_ts_ns / NANOS_PER_SEC, first_ts_ns % NANOS_PER_SEC, segment_id)
}

/// A packet as stored in a pcap record.
#[derive(Debug, Clone, Copy)]
pub struct RecordHeader {
    pub ts_sec: u32,
    /// Microseconds or nanoseconds, by the segment's resolution.
    pub ts_frac: u32,
    pub caplen: u32,
    pub wire_len: u32,
}

impl RecordHeader {
    /// Returns the timestamp in nanoseconds since the epoch.
    pub fn ts_ns(&self, resolution: TsResolution) -> u64 {
        u64::from(self.ts_sec) * NANOS_PER_SEC + u64::from(self.ts_frac) * resolution.nanos_per_unit()
    }

    fn parse(bytes: &[u8]) -> RecordHeader {
        let field = |index: usize| u32::from_le_bytes(bytes[index * 4..index * 4 + 4].try_into().expect("4 bytes"));
        RecordHeader { ts_sec: field(0), ts_frac: field(1), caplen: field(2), wire_len: field(3) }
    }

    fn encode(&self) -> [u8; 16] {
        let mut bytes = [0u8; 16];
        bytes[0..4].copy_from_slice(&self.ts_sec.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.ts_frac.to_le_bytes());
        bytes[8..12].copy_from_slice(&self.caplen.to_le_bytes());
        bytes[12..16].copy_from_slice(&self.wire_len.to_le_bytes());
        bytes
    }
}

/// A segment being written.
pub struct SegmentWriter {
    path: PathBuf,
    file: WriteBehind,
    meta: SegmentMeta,
    tables: SegmentTables,
    index: SegmentIndex,
    /// Start of the time bucket: the first packet's timestamp.
    bucket_start_ns: u64,
    /// Whether the folder entry of the new file has been made durable.
    synced_dir: bool,
}

impl SegmentWriter {
    /// Creates the file of segment `segment_id` in `pcap_dir` and writes its header.
    pub fn create(
        pcap_dir: &Path,
        segment_id: u64,
        first_ts_ns: u64,
        linktype: u32,
        snaplen: u32,
        resolution: TsResolution,
    ) -> Result<SegmentWriter> {
        let file_name = segment_file_name(first_ts_ns, segment_id);
        let path = pcap_dir.join(&file_name);
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(Error::io("cannot create segment", &path))?;
        (&file)
            .write_all(&pcap_file_header(resolution, snaplen, linktype))
            .map_err(Error::io("cannot write", &path))?;
        let file = WriteBehind::new(file, WRITE_BUFFER_BYTES).map_err(Error::io("cannot start writing", &path))?;
        let meta = SegmentMeta {
            segment_id,
            file_name,
            linktype,
            snaplen,
            resolution,
            first_ts_ns,
            min_ts_ns: first_ts_ns,
            max_ts_ns: first_ts_ns,
            monotonic: true,
            packets: 0,
            file_bytes: FILE_HEADER_BYTES,
            wire_bytes: 0,
            dropped: 0,
            sealed: false,
        };
        Ok(SegmentWriter {
            path,
            file,
            meta,
            tables: SegmentTables::default(),
            index: SegmentIndex::default(),
            bucket_start_ns: first_ts_ns,
            synced_dir: false,
        })
    }

    /// Returns the metadata so far.
    pub fn meta(&self) -> &SegmentMeta {
        &self.meta
    }

    /// Number of flows in the segment's index so far.
    pub fn flow_count(&self) -> u32 {
        self.index.flow_count()
    }

    /// Start of the segment's time bucket.
    pub fn bucket_start_ns(&self) -> u64 {
        self.bucket_start_ns
    }

    /// Adds a packet drop count reported by the capture source.
    pub fn add_dropped(&mut self, dropped: u64) {
        self.meta.dropped += dropped;
    }

    /// Appends one packet record and indexes it.
    ///
    /// A failed write (a full disk, say) leaves the segment unchanged: the
    /// record goes in only once the buffer has room for it whole, so it is
    /// either appended or not at all. Bytes of earlier records that a write
    /// left unwritten stay buffered, and the next append or checkpoint
    /// writes them first.
    pub fn append(&mut self, header: RecordHeader, ts_ns: u64, data: &[u8], decoded: &Decoded) -> Result<()> {
        debug_assert_eq!(header.caplen as usize, data.len());
        let needed = RECORD_HEADER_BYTES as usize + data.len();
        if needed > self.file.capacity() {
            // Larger than the buffer: written directly, as one record or an error.
            let mut record = header.encode().to_vec();
            record.extend_from_slice(data);
            self.file.write_now(&record).map_err(Error::io("cannot write", &self.path))?;
        } else {
            self.file.reserve(needed).map_err(Error::io("cannot write", &self.path))?;
            self.file.push(&header.encode());
            self.file.push(data);
        }
        let packet = self.meta.packets as u32;
        let record_bytes = RECORD_HEADER_BYTES + data.len() as u64;
        if packet.is_multiple_of(PACKETS_PER_GROUP) {
            self.tables.group_lengths.push(record_bytes);
        } else {
            *self.tables.group_lengths.last_mut().expect("a group is open") += record_bytes;
        }
        if packet.is_multiple_of(PACKETS_PER_CHUNK) {
            self.tables.chunk_times.push(ChunkTimes { min_ts_ns: ts_ns, max_ts_ns: ts_ns });
        } else {
            let chunk = self.tables.chunk_times.last_mut().expect("a chunk is open");
            chunk.min_ts_ns = chunk.min_ts_ns.min(ts_ns);
            chunk.max_ts_ns = chunk.max_ts_ns.max(ts_ns);
        }
        self.index.add(packet, decoded);
        let meta = &mut self.meta;
        if ts_ns < meta.max_ts_ns {
            meta.monotonic = false;
        }
        meta.min_ts_ns = meta.min_ts_ns.min(ts_ns);
        meta.max_ts_ns = meta.max_ts_ns.max(ts_ns);
        meta.packets += 1;
        meta.file_bytes += record_bytes;
        meta.wire_bytes += u64::from(header.wire_len);
        if header.caplen > meta.snaplen {
            meta.snaplen = header.caplen;
        }
        Ok(())
    }

    /// Makes every packet appended so far durable and returns the open
    /// segment's metadata, tables and bitmaps for a checkpoint in the index.
    pub fn checkpoint(&mut self) -> Result<(SegmentMeta, &SegmentTables, &SegmentIndex)> {
        self.file.flush().map_err(Error::io("cannot write", &self.path))?;
        self.file.file().sync_data().map_err(Error::io("cannot sync", &self.path))?;
        if !self.synced_dir {
            if let Some(dir) = self.path.parent() {
                sync_dir(dir)?;
            }
            self.synced_dir = true;
        }
        Ok((self.meta.clone(), &self.tables, &self.index))
    }

    /// Writes the buffered records to the file; on failure they stay buffered.
    pub fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(Error::io("cannot write", &self.path))
    }

    /// Flushes the file, makes it durable and returns what the index stores.
    pub fn seal(self) -> Result<(SegmentMeta, SegmentTables, SegmentIndex)> {
        let SegmentWriter { path, file, mut meta, tables, index, .. } = self;
        meta.sealed = true;
        let file = file.finish().map_err(Error::io("cannot write", &path))?;
        // A record longer than the snaplen of the header makes libpcap truncate
        // it, so the header is rewritten with the largest record length seen.
        file.write_all_at(&meta.snaplen.to_le_bytes(), 16).map_err(Error::io("cannot write", &path))?;
        file.sync_all().map_err(Error::io("cannot sync", &path))?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        Ok((meta, tables, index))
    }
}

/// Opens a segment file for reading without updating its access time, which
/// took about 2% of a sparse extraction's CPU time in the kernel's checks.
/// `O_NOATIME` is allowed only to the file's owner, so other users open it
/// the usual way.
// NOTE: the tests run as root, which may use O_NOATIME on any file, so the
// EPERM branch runs only where a user other than the recorder's reads.
fn open_for_reading(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    match File::options().read(true).custom_flags(libc::O_NOATIME).open(path) {
        Err(err) if err.raw_os_error() == Some(libc::EPERM) => File::open(path),
        other => other,
    }
}

/// Makes a directory's entries durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|dir_file| dir_file.sync_all()).map_err(Error::io("cannot sync", dir))
}

/// Reads records of a sealed segment by packet number.
pub struct SegmentReader {
    path: PathBuf,
    file: File,
    meta: SegmentMeta,
    positions: PositionTable,
    /// First and last number of the groups held in `buffer`.
    loaded: Option<(u32, u32)>,
    /// Per group, one bit: whether the caller will read one of its packets.
    /// A read takes the following groups too while their bits are set, up to
    /// [`MAX_READ_BYTES`].
    candidate_groups: Vec<u64>,
    /// Read buffer. It only grows, so that a read of another size does not
    /// fill it with zeros again; `filled` bytes of it are valid.
    buffer: Vec<u8>,
    filled: usize,
    /// Packet number and byte offset in `buffer` of the next record to parse.
    cursor: (u32, usize),
    /// The record returned last: packet number, header, and data range in
    /// `buffer`. Extraction reads a match twice (once to check it, once to
    /// copy it), and without this the second read would reload the group.
    last: Option<(u32, RecordHeader, usize, usize)>,
    /// File size, when the last read ended there before the bytes the
    /// index places in the segment: the file was cut short.
    cut_at: Option<u64>,
}

impl SegmentReader {
    /// Opens a segment and checks its file header against the metadata.
    pub fn open(pcap_dir: &Path, meta: SegmentMeta, positions: PositionTable) -> Result<SegmentReader> {
        let path = pcap_dir.join(&meta.file_name);
        let file = open_for_reading(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                Error::DamagedSegment {
                    path: path.clone(),
                    reason: "the file is missing; when retention deleted it after the extraction started, \
                             running the extraction again reads the segments that remain"
                        .into(),
                }
            } else {
                Error::Io { action: "cannot open segment", path: path.clone(), source }
            }
        })?;
        let mut header = [0u8; 24];
        file.read_exact_at(&mut header, 0).map_err(|err| Error::DamagedSegment {
            path: path.clone(),
            reason: format!("cannot read the pcap header: {err}"),
        })?;
        let magic = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
        if magic != meta.resolution.pcap_magic() {
            return Err(Error::DamagedSegment {
                path,
                reason: format!(
                    "pcap magic is {magic:#010x}, the index expects {:#010x}",
                    meta.resolution.pcap_magic()
                ),
            });
        }
        Ok(SegmentReader {
            path,
            file,
            meta,
            positions,
            loaded: None,
            candidate_groups: Vec::new(),
            buffer: Vec::new(),
            filled: 0,
            cursor: (0, 0),
            last: None,
            cut_at: None,
        })
    }

    /// Returns the segment's metadata.
    pub fn meta(&self) -> &SegmentMeta {
        &self.meta
    }

    fn damaged(&self, reason: String) -> Error {
        Error::DamagedSegment { path: self.path.clone(), reason }
    }

    /// Returns the error for a record that does not lie whole in the bytes
    /// read, with the file size when the file was cut short.
    fn record_outside(&self, reason: String) -> Error {
        match self.cut_at {
            Some(size) => self.damaged(format!(
                "{reason}: the file is {size} bytes long but the index expects {} bytes, \
                 so the file was cut short after it was indexed",
                self.meta.file_bytes
            )),
            None => self.damaged(reason),
        }
    }

    fn group_start(&mut self, group: u32) -> Result<u64> {
        self.positions.start(group).map_err(|err| Error::DamagedSegment {
            path: self.path.clone(),
            reason: format!("its entry in the index is damaged: {err}"),
        })
    }

    /// Declares the packets that will be read, in ascending order, so that
    /// dense runs are read in large blocks and sparse packets group by group.
    pub fn set_wanted(&mut self, packets: &RoaringBitmap) {
        self.candidate_groups.clear();
        self.candidate_groups.resize(self.positions.groups().div_ceil(64) as usize, 0);
        for packet in packets {
            let group = packet / PACKETS_PER_GROUP;
            if let Some(word) = self.candidate_groups.get_mut((group / 64) as usize) {
                *word |= 1 << (group % 64);
            }
        }
    }

    fn is_candidate_group(&self, group: u32) -> bool {
        self.candidate_groups.get((group / 64) as usize).is_some_and(|word| word & (1 << (group % 64)) != 0)
    }

    fn load_group(&mut self, group: u32) -> Result<()> {
        // Group starts are looked up in ascending order, so the position
        // table adds each group length once.
        let start = self.group_start(group)?;
        let mut last = group;
        let mut end = self.group_start(group + 1)?;
        while last + 1 < self.positions.groups() && self.is_candidate_group(last + 1) {
            let next_end = self.group_start(last + 2)?;
            if next_end.saturating_sub(start) > MAX_READ_BYTES {
                break;
            }
            last += 1;
            end = next_end;
        }
        if end < start || end - start > 1 << 34 {
            return Err(self.damaged(format!("groups {group}..={last} span bytes {start}..{end}")));
        }
        let length = (end - start) as usize;
        if self.buffer.len() < length {
            self.buffer.resize(length, 0);
        }
        // Nothing counts as loaded until the read succeeds.
        self.loaded = None;
        self.last = None;
        self.filled = 0;
        // A file cut short ends within the block: its whole records before
        // the cut are still returned, and the first record past it fails.
        let mut filled = 0;
        while filled < length {
            match self.file.read_at(&mut self.buffer[filled..length], start + filled as u64) {
                Ok(0) => break,
                Ok(read) => filled += read,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => {
                    return Err(Error::DamagedSegment {
                        path: self.path.clone(),
                        reason: format!("cannot read bytes {start}..{end}: {err}"),
                    })
                }
            }
        }
        // A read that starts past the cut returns nothing, so the size
        // comes from the file itself.
        self.cut_at = (filled < length)
            .then(|| self.file.metadata().map_or(start + filled as u64, |meta| meta.len().min(start + filled as u64)));
        self.filled = filled;
        self.loaded = Some((group, last));
        self.cursor = (group * PACKETS_PER_GROUP, 0);
        self.last = None;
        Ok(())
    }

    /// Returns whether reading `packet` next keeps the buffer, so that byte
    /// ranges from [`SegmentReader::last_record`] stay valid.
    pub fn is_loaded(&self, packet: u32) -> bool {
        if self.last.is_some_and(|(number, ..)| number == packet) {
            return true;
        }
        let group = packet / PACKETS_PER_GROUP;
        self.loaded.is_some_and(|(first, last)| first <= group && group <= last) && self.cursor.0 <= packet
    }

    /// Returns the byte range, record header included, of the record
    /// returned last, within [`SegmentReader::buffer`].
    pub fn last_record(&self) -> Option<std::ops::Range<usize>> {
        self.last.map(|(_, _, data_start, data_end)| data_start - RECORD_HEADER_BYTES as usize..data_end)
    }

    /// Returns the bytes read last: whole records.
    pub fn buffer(&self) -> &[u8] {
        &self.buffer[..self.filled]
    }

    /// Collects the records of `*next` and of the following `packets` that
    /// lie in the same block, without looking at their contents. Appends one
    /// byte range of [`SegmentReader::buffer`] per run of adjacent records
    /// to `runs`, up to `max_runs` ranges, and leaves the first packet not
    /// collected in `next`. Returns the number of records collected.
    ///
    /// Packets must ascend. When [`SegmentReader::is_loaded`] is false for
    /// `*next`, this call loads another block, so the caller writes `runs` first.
    pub fn collect_runs(
        &mut self,
        next: &mut Option<u32>,
        packets: &mut impl Iterator<Item = u32>,
        runs: &mut Vec<std::ops::Range<usize>>,
        max_runs: usize,
    ) -> Result<u64> {
        let Some(first) = *next else { return Ok(0) };
        if u64::from(first) >= self.meta.packets {
            return Err(self.damaged(format!("packet {first} requested, the segment has {}", self.meta.packets)));
        }
        if !self.is_loaded(first) {
            self.load_group(first / PACKETS_PER_GROUP)?;
        } else if let Some((number, _, data_start, _)) = self.last.filter(|(number, ..)| *number == first) {
            // The record returned last is requested again, so the cursor steps back onto it.
            self.cursor = (number, data_start - RECORD_HEADER_BYTES as usize);
        }
        self.last = None;

        let (_, last_group) = self.loaded.expect("a block was loaded");
        let block_end = (u64::from(last_group) + 1) * u64::from(PACKETS_PER_GROUP);
        let bytes = &self.buffer[..self.filled];
        let (mut number, mut offset) = self.cursor;
        let mut target = first;
        let mut collected = 0;
        let outcome = loop {
            // Steps over the records before the target.
            let end = loop {
                let Some(header) = bytes.get(offset..offset + RECORD_HEADER_BYTES as usize) else {
                    break Err(format!("record {number} starts past the end of its group"));
                };
                let caplen = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
                let end = offset + RECORD_HEADER_BYTES as usize + caplen as usize;
                if end > bytes.len() {
                    break Err(format!("record {number} of {caplen} bytes runs past the end of its group"));
                }
                if number == target {
                    break Ok(end);
                }
                number += 1;
                offset = end;
            };
            let end = match end {
                Ok(end) => end,
                Err(reason) => break Err(reason),
            };

            match runs.last_mut() {
                Some(run) if run.end == offset => run.end = end,
                _ => runs.push(offset..end),
            }
            collected += 1;
            number += 1;
            offset = end;
            *next = packets.next();
            match *next {
                Some(packet) if u64::from(packet) < block_end && runs.len() < max_runs => target = packet,
                _ => break Ok(()),
            }
        };

        self.cursor = (number, offset);
        outcome.map_err(|reason| self.record_outside(reason))?;
        Ok(collected)
    }

    /// Returns packet number `packet`: its record header and captured bytes.
    ///
    /// Reading is fastest when packet numbers ascend.
    pub fn packet(&mut self, packet: u32) -> Result<(RecordHeader, &[u8])> {
        if u64::from(packet) >= self.meta.packets {
            return Err(self.damaged(format!("packet {packet} requested, the segment has {}", self.meta.packets)));
        }
        if let Some((number, header, start, end)) = self.last {
            if number == packet {
                return Ok((header, &self.buffer[start..end]));
            }
        }
        let group = packet / PACKETS_PER_GROUP;
        let loaded = self.loaded.is_some_and(|(first, last)| first <= group && group <= last);
        if !loaded || self.cursor.0 > packet {
            self.load_group(group)?;
        }
        loop {
            let (number, offset) = self.cursor;
            let Some(header_bytes) = self.buffer[..self.filled].get(offset..offset + RECORD_HEADER_BYTES as usize)
            else {
                return Err(self.record_outside(format!("record {number} starts past the end of its group")));
            };
            let header = RecordHeader::parse(header_bytes);
            let data_start = offset + RECORD_HEADER_BYTES as usize;
            let data_end = data_start + header.caplen as usize;
            if data_end > self.filled {
                return Err(self.record_outside(format!(
                    "record {number} of {} bytes runs past the end of its group",
                    header.caplen
                )));
            }
            self.cursor = (number + 1, data_end);
            if number == packet {
                self.last = Some((number, header, data_start, data_end));
                return Ok((header, &self.buffer[data_start..data_end]));
            }
        }
    }
}

/// Brings the file of an interrupted open segment back to its last
/// checkpoint: cuts it to `meta.file_bytes` (the bytes after it were never
/// reported durable) and writes the snaplen a sealed segment would have.
pub fn recover_open_segment(pcap_dir: &Path, meta: &SegmentMeta) -> Result<()> {
    let path = pcap_dir.join(&meta.file_name);
    let file = File::options().write(true).open(&path).map_err(Error::io("cannot open segment", &path))?;
    let length = file.metadata().map_err(Error::io("cannot read the size of", &path))?.len();
    if length < meta.file_bytes {
        return Err(Error::DamagedSegment {
            path,
            reason: format!("the file has {length} bytes, its last checkpoint recorded {}", meta.file_bytes),
        });
    }
    file.set_len(meta.file_bytes).map_err(Error::io("cannot truncate", &path))?;
    file.write_all_at(&meta.snaplen.to_le_bytes(), 16).map_err(Error::io("cannot write", &path))?;
    file.sync_all().map_err(Error::io("cannot sync", &path))
}
