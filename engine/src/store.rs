//! The RocksDB index of one interface.
//!
//! Layout on disk: `DATA_DIR/<ifid>/pcap/` contains the segment files and
//! `DATA_DIR/<ifid>/index/` the RocksDB database (keys in `pktvault_schema::keys`).
//!
//! Segment metadata lives in its own column family, [`keys::META_CF`], because
//! every extraction lists it. In the default column family each sealed segment
//! has a table file of its own, so a listing there would open and decompress a
//! block of every table file.

use std::cell::{OnceCell, RefCell};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use pktvault_schema::keys::{self, Field};
use pktvault_schema::segment::{decode_times, encode_position_pieces, encode_times};
use pktvault_schema::{
    ChunkTimes, FormatMarker, PositionTable, SegmentMeta, FLOWS_PER_PIECE, GROUPS_PER_PIECE, PACKETS_PER_GROUP,
};
use roaring::RoaringBitmap;

use rocksdb::{ColumnFamily, Options, WriteBatch, WriteOptions, DB};

use crate::filter::plan::BitmapSource;
use crate::index::{flow_piece, FlowPackets, FlowTableHeader, SegmentIndex};
use crate::{Error, Result};

/// The index and segment folder of one interface.
pub struct InterfaceStore {
    ifid: u32,
    root: PathBuf,
    index_path: PathBuf,
    db: DB,
    writable: bool,
    /// The segment list and the sequence number it was read at. Every write
    /// raises the sequence number, so the list is valid while it is unchanged.
    segments_cache: Mutex<Option<(u64, Vec<SegmentMeta>)>>,
}

/// Block cache of a store opened with [`InterfaceStore::open_follower`].
const FOLLOWER_CACHE_BYTES: usize = 64 << 20;

/// Returns the table options of every open, for writing and for reading.
///
/// Each table file has a Bloom filter of its keys (10 bits per key, about 1%
/// false positives by RocksDB's estimate). Planning a filter looks up the
/// bitmap of every address and port its primitives name, in every segment,
/// and most of these keys are absent. Without the Bloom filter, each absent
/// key cost the read of a data block, up to 140 KB in the 2 GiB benchmark.
fn table_options() -> rocksdb::BlockBasedOptions {
    let mut table_options = rocksdb::BlockBasedOptions::default();
    table_options.set_bloom_filter(10.0, false);
    table_options
}

/// Returns the descriptor of the default column family with `options`.
/// Without it, the rocksdb crate opens the default column family with
/// `Options::default()`, whatever the options given for the database.
fn default_family(options: &Options) -> rocksdb::ColumnFamilyDescriptor {
    rocksdb::ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, options.clone())
}

/// Returns the descriptors of both column families, with `options`.
fn families(options: &Options) -> [rocksdb::ColumnFamilyDescriptor; 2] {
    [default_family(options), rocksdb::ColumnFamilyDescriptor::new(keys::META_CF, options.clone())]
}

/// Raises the soft limit on open files to the hard limit.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Maps a failed open for reading to an error that names what to do. An index
/// without the metadata column family comes from an older release, and its
/// format marker names the version.
fn open_error(data_dir: &Path, ifid: u32, index_path: &Path, source: rocksdb::Error) -> Error {
    if !source.to_string().contains("Column family not found") {
        return Error::Index { path: index_path.to_path_buf(), source };
    }
    match DB::open_for_read_only(&Options::default(), index_path, false) {
        Ok(db) => match db.get(keys::FORMAT_KEY) {
            Ok(Some(bytes)) => match FormatMarker::check(&bytes) {
                Err(format) => Error::Format { path: index_path.to_path_buf(), source: format },
                Ok(()) => Error::Index { path: index_path.to_path_buf(), source },
            },
            _ => Error::NoInterface { ifid, data_dir: data_dir.to_path_buf() },
        },
        Err(_) => Error::Index { path: index_path.to_path_buf(), source },
    }
}

/// Returns the folder of interface `ifid` inside `data_dir`.
pub fn interface_dir(data_dir: &Path, ifid: u32) -> PathBuf {
    data_dir.join(ifid.to_string())
}

impl InterfaceStore {
    /// Opens the interface for writing, creating its folders and index when
    /// missing. An index of another format is rejected before it is opened
    /// for writing, because a writable open adds files to it.
    pub fn open_writable(data_dir: &Path, ifid: u32) -> Result<InterfaceStore> {
        let root = interface_dir(data_dir, ifid);
        if root.join("index").join("CURRENT").exists() {
            if let Err(err @ Error::Format { .. }) = InterfaceStore::open_read_only(data_dir, ifid) {
                return Err(err);
            }
        }
        let pcap_dir = root.join("pcap");
        std::fs::create_dir_all(&pcap_dir).map_err(Error::io("cannot create", &pcap_dir))?;
        let index_path = root.join("index");
        let mut options = Options::default();
        options.create_if_missing(true);
        // LZ4 on every level: with zstd at the bottom the index was 0.53% of
        // the pcap bytes instead of 0.71%, but a one-host query over 56
        // segments took 41 ms instead of 33 ms, most of it decompression.
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        options.set_bottommost_compression_type(rocksdb::DBCompressionType::Lz4);
        options.set_max_open_files(512);
        // RocksDB's own log grows with every flush and compaction, and a
        // recorder runs for months: warnings only, in at most two 1 MiB files.
        options.set_log_level(rocksdb::LogLevel::Warn);
        options.set_max_log_file_size(1 << 20);
        options.set_keep_log_file_num(2);
        options.set_block_based_table_factory(&table_options());
        options.create_missing_column_families(true);
        // Each sealed segment adds a small table file to the metadata column
        // family. Universal compaction merges them, where level compaction
        // would move each one down unmerged, one table file per segment.
        let mut meta_options = options.clone();
        meta_options.set_compaction_style(rocksdb::DBCompactionStyle::Universal);
        let meta_family = rocksdb::ColumnFamilyDescriptor::new(keys::META_CF, meta_options);
        let db = DB::open_cf_descriptors(&options, &index_path, [default_family(&options), meta_family]).map_err(
            |source| {
                if source.to_string().contains("LOCK") {
                    Error::Busy { ifid, data_dir: data_dir.to_path_buf() }
                } else {
                    Error::Index { path: index_path.clone(), source }
                }
            },
        )?;
        let store = InterfaceStore { ifid, root, index_path, db, writable: true, segments_cache: Mutex::default() };
        match store.get(keys::FORMAT_KEY)? {
            Some(bytes) => store.check_format(&bytes)?,
            None => {
                let marker = serde_json::to_vec(&FormatMarker::current()).expect("format marker serializes");
                store.db.put(keys::FORMAT_KEY, marker).map_err(|source| store.index_error(source))?;
            }
        }
        Ok(store)
    }

    /// Opens the interface for reading; works while a recorder writes to it.
    pub fn open_read_only(data_dir: &Path, ifid: u32) -> Result<InterfaceStore> {
        let root = interface_dir(data_dir, ifid);
        let index_path = root.join("index");
        if !index_path.join("CURRENT").exists() {
            return Err(Error::NoInterface { ifid, data_dir: data_dir.to_path_buf() });
        }
        let mut options = Options::default();
        // With -1 RocksDB opens every table file at once, and first tries a
        // second kind of read-only open that fails unless the index is one
        // file. With a limit it opens min(16, (limit - 10) / 4) table files
        // up front and the others when a read first needs them. 20, the
        // smallest limit RocksDB accepts, opens 2: a one-minute query on the
        // 2 GiB index took 2 ms less than with 4096, and a query over all
        // segments, which opens each table file once, took as long.
        options.set_max_open_files(20);
        // The table cache has room for limit - 10 files, but split into 64
        // shards by default it keeps one file per shard it touched: an
        // extraction over 90 segments kept 35 table files open. One shard
        // keeps it to 10.
        options.set_table_cache_num_shard_bits(0);
        // RocksDB starts max_file_opening_threads - 1 threads each time it
        // loads table files; with 1 the loading thread does it alone.
        options.set_max_file_opening_threads(1);
        options.set_skip_stats_update_on_db_open(true);
        options.set_block_based_table_factory(&table_options());
        let db = DB::open_cf_descriptors_read_only(&options, &index_path, families(&options), false)
            .map_err(|source| open_error(data_dir, ifid, &index_path, source))?;
        let store = InterfaceStore { ifid, root, index_path, db, writable: false, segments_cache: Mutex::default() }
            .checked(data_dir)?;
        store.check_table_files()?;
        Ok(store)
    }

    /// Checks that every table file of the index exists. A read-only open
    /// opens most table files when a read first needs them, so it does not
    /// always fail when one is missing, and a follower opens the index at its
    /// last state whose table files all exist.
    fn check_table_files(&self) -> Result<()> {
        let files = self.db.live_files().map_err(|source| Error::Index { path: self.index_path.clone(), source })?;
        for file in files {
            let name = file.name.trim_start_matches('/');
            if !self.index_path.join(name).exists() {
                return Err(Error::MissingTableFile { path: self.index_path.clone(), file: name.to_string() });
            }
        }
        Ok(())
    }

    /// Opens the interface for a long-lived reader, such as the HTTP server,
    /// that keeps table files and a block cache open between extractions.
    /// [`InterfaceStore::catch_up`] brings it up to the writer's last commit.
    /// RocksDB keeps its own log of this reader in `scratch_dir`.
    pub fn open_follower(data_dir: &Path, ifid: u32, scratch_dir: &Path) -> Result<InterfaceStore> {
        let root = interface_dir(data_dir, ifid);
        let index_path = root.join("index");
        if !index_path.join("CURRENT").exists() {
            return Err(Error::NoInterface { ifid, data_dir: data_dir.to_path_buf() });
        }
        let mut options = Options::default();
        // A secondary instance keeps every table file open, so that files
        // the writer deletes stay readable until the next catch-up. Sealed
        // segments have a table file each, so the descriptor limit is raised.
        options.set_max_open_files(-1);
        // Every catch-up loads the table files of the new version, and with
        // the default of 16 it started 15 threads for that, 54 per request
        // for an extraction over 56 segments.
        options.set_max_file_opening_threads(1);
        raise_open_file_limit();
        let mut table_options = table_options();
        table_options.set_block_cache(&rocksdb::Cache::new_lru_cache(FOLLOWER_CACHE_BYTES));
        // Index blocks go to the bounded cache instead of staying with each open table.
        table_options.set_cache_index_and_filter_blocks(true);
        options.set_block_based_table_factory(&table_options);
        let db = DB::open_cf_descriptors_as_secondary(&options, index_path.as_path(), scratch_dir, families(&options))
            .map_err(|source| open_error(data_dir, ifid, &index_path, source))?;
        InterfaceStore { ifid, root, index_path, db, writable: false, segments_cache: Mutex::default() }
            .checked(data_dir)
    }

    /// Reads what the writer committed since the last call; only for a
    /// store from [`InterfaceStore::open_follower`].
    pub fn catch_up(&self) -> Result<()> {
        self.db.try_catch_up_with_primary().map_err(|source| self.index_error(source))
    }

    fn checked(self, data_dir: &Path) -> Result<InterfaceStore> {
        match self.get(keys::FORMAT_KEY)? {
            Some(bytes) => self.check_format(&bytes)?,
            None => return Err(Error::NoInterface { ifid: self.ifid, data_dir: data_dir.to_path_buf() }),
        }
        Ok(self)
    }

    fn check_format(&self, bytes: &[u8]) -> Result<()> {
        FormatMarker::check(bytes).map_err(|source| Error::Format { path: self.index_path.clone(), source })
    }

    fn index_error(&self, source: rocksdb::Error) -> Error {
        Error::Index { path: self.index_path.clone(), source }
    }

    fn format_error(&self, source: pktvault_schema::FormatError) -> Error {
        Error::Format { path: self.index_path.clone(), source }
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get(key).map_err(|source| self.index_error(source))
    }

    fn meta_cf(&self) -> &ColumnFamily {
        self.db.cf_handle(keys::META_CF).expect("the store is opened with its metadata column family")
    }

    /// Returns the interface id.
    pub fn ifid(&self) -> u32 {
        self.ifid
    }

    /// Returns whether the store was opened for writing.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Returns the folder of the segment files.
    pub fn pcap_dir(&self) -> PathBuf {
        self.root.join("pcap")
    }

    /// Returns the RocksDB folder.
    pub fn index_dir(&self) -> &Path {
        &self.index_path
    }

    /// Returns the metadata of every committed segment, by segment id.
    pub fn segments(&self) -> Result<Vec<SegmentMeta>> {
        // Read before the list, so that a write in between only makes the
        // next call read the list again.
        let sequence = self.db.latest_sequence_number();
        let mut cache = self.segments_cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((cached_at, segments)) = cache.as_ref() {
            if *cached_at == sequence {
                return Ok(segments.clone());
            }
        }
        let mut segments = Vec::new();
        let mut iterator = self.db.raw_iterator_cf(self.meta_cf());
        iterator.seek_to_first();
        while iterator.valid() {
            let value = iterator.value().expect("valid iterator has a value");
            segments.push(SegmentMeta::decode(value).map_err(|source| self.format_error(source))?);
            iterator.next();
        }
        iterator.status().map_err(|source| self.index_error(source))?;
        *cache = Some((sequence, segments.clone()));
        Ok(segments)
    }

    /// Returns the id after the largest segment id in the index.
    pub fn next_segment_id(&self) -> Result<u64> {
        let mut iterator = self.db.raw_iterator_cf(self.meta_cf());
        iterator.seek_to_last();
        let next = match iterator.key().and_then(keys::parse_meta_key) {
            Some(last) => last + 1,
            None => 1,
        };
        iterator.status().map_err(|source| self.index_error(source))?;
        Ok(next)
    }

    /// Stores a segment's metadata, position, time and flow tables and
    /// bitmaps in one synced batch; for an open segment this replaces its
    /// previous checkpoint. Tables only grow between checkpoints, so every
    /// piece of the previous checkpoint is replaced.
    pub fn commit_segment(&self, meta: &SegmentMeta, tables: &SegmentTables, index: &SegmentIndex) -> Result<()> {
        let id = meta.segment_id;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.meta_cf(), keys::segment_meta(id), meta.encode());
        encode_position_pieces(&tables.group_lengths, |piece, bytes| {
            batch.put(keys::position_piece(id, piece), bytes);
        });
        batch.put(keys::segment_times(id), encode_times(&tables.chunk_times));
        let header = index.encode_flows(|piece, bytes| batch.put(keys::flow_piece(id, piece), bytes));
        batch.put(keys::segment_flows(id), header.encode());
        let mut buffer = Vec::new();
        for (field, value, bitmap) in index.optimized_entries() {
            buffer.clear();
            bitmap.serialize_into(&mut buffer).expect("writing to a Vec cannot fail");
            batch.put(keys::bitmap(id, field, value.as_bytes()), &buffer);
        }
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options).map_err(|source| self.index_error(source))
    }

    /// Writes the memtable to a table file, so that the write-ahead log
    /// stays short: a read-only open replays the whole log, which made every
    /// extraction pay for the index writes since the last flush.
    pub fn flush(&self) -> Result<()> {
        self.db.flush_cf(self.meta_cf()).map_err(|source| self.index_error(source))?;
        self.db.flush().map_err(|source| self.index_error(source))
    }

    /// Replaces a segment's metadata.
    pub fn update_meta(&self, meta: &SegmentMeta) -> Result<()> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db
            .put_cf_opt(self.meta_cf(), keys::segment_meta(meta.segment_id), meta.encode(), &options)
            .map_err(|source| self.index_error(source))
    }

    /// Deletes every index entry of a segment with one range delete.
    pub fn delete_segment_entries(&self, segment_id: u64) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.meta_cf(), keys::segment_meta(segment_id));
        batch.delete_range(keys::segment_start(segment_id), keys::segment_start(segment_id + 1));
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options).map_err(|source| self.index_error(source))
    }

    fn table(&self, what: &'static str, key: &[u8], segment_id: u64) -> Result<Vec<u8>> {
        self.get(key)?.ok_or_else(|| {
            self.format_error(pktvault_schema::FormatError::Damaged {
                what,
                reason: format!("missing for segment {segment_id}"),
            })
        })
    }

    /// Returns a segment's position table with the pieces needed to read
    /// `packets` (see [`InterfaceStore::read_pieces`]).
    pub fn positions(&self, meta: &SegmentMeta, packets: &RoaringBitmap) -> Result<PositionTable> {
        let mut table =
            PositionTable::new(meta.packets, meta.file_bytes).map_err(|source| self.format_error(source))?;
        // Within a piece, only its first candidate group and its last group
        // decide which pieces are needed, because the last group also needs
        // the next piece. The walk skips the candidates in between, which a
        // broad extraction has by the tens of thousands per segment.
        let mut pieces: Vec<u32> = Vec::new();
        let mut candidates = packets.iter();
        while let Some(packet) = candidates.next() {
            let group = packet / PACKETS_PER_GROUP;
            for piece in table.pieces_of_group(group) {
                if pieces.last().is_none_or(|&last| last < piece) {
                    pieces.push(piece);
                }
            }
            let last_group_of_piece = (group / GROUPS_PER_PIECE) * GROUPS_PER_PIECE + (GROUPS_PER_PIECE - 1);
            if group < last_group_of_piece {
                candidates.advance_to(last_group_of_piece.saturating_mul(PACKETS_PER_GROUP));
            }
        }
        let total = table.piece_count();
        table.reserve_pieces(pieces.len());
        self.read_pieces(keys::position_piece, meta.segment_id, &pieces, total, |piece, bytes| {
            table.add_piece(piece, bytes).map_err(|source| self.format_error(source))
        })
        .map_err(|missing| match missing {
            PieceError::Missing(piece) => self.format_error(pktvault_schema::FormatError::Damaged {
                what: "position table",
                reason: format!("piece {piece} is missing for segment {}", meta.segment_id),
            }),
            PieceError::Other(err) => err,
        })?;
        Ok(table)
    }

    /// Reads the pieces numbered `pieces` (ascending, out of `total`) of the
    /// table whose keys `key` returns, and passes each to `visit`. When at
    /// least 90% of the pieces are requested, one iterator reads them,
    /// because it costs less per key than a batched lookup. Otherwise one
    /// batched lookup reads them, with only the blocks that contain them.
    fn read_pieces(
        &self,
        key: fn(u64, u32) -> [u8; keys::PIECE_KEY_BYTES],
        segment_id: u64,
        pieces: &[u32],
        total: u32,
        mut visit: impl FnMut(u32, &[u8]) -> Result<()>,
    ) -> std::result::Result<(), PieceError> {
        let (Some(&first), Some(&last)) = (pieces.first(), pieces.last()) else {
            return Ok(());
        };
        if (pieces.len() as u64) * 10 < u64::from(total) * 9 {
            let keys: Vec<_> = pieces.iter().map(|&piece| key(segment_id, piece)).collect();
            let family =
                self.db.cf_handle(rocksdb::DEFAULT_COLUMN_FAMILY_NAME).expect("every store has the default family");
            for (&piece, value) in pieces.iter().zip(self.db.batched_multi_get_cf(&family, &keys, true)) {
                let bytes = value.map_err(|source| self.index_error(source))?.ok_or(PieceError::Missing(piece))?;
                visit(piece, &bytes)?;
            }
            return Ok(());
        }
        let mut options = rocksdb::ReadOptions::default();
        let end = key(segment_id, last);
        options.set_iterate_upper_bound(key(segment_id, last.saturating_add(1)).to_vec());
        let mut iterator = self.db.raw_iterator_opt(options);
        iterator.seek(key(segment_id, first));
        let mut remaining = pieces.iter().copied().peekable();
        while let (true, Some(&next)) = (iterator.valid(), remaining.peek()) {
            let stored = iterator.key().expect("valid iterator has a key");
            // The upper bound ends the scan after piece `last`; a key of
            // another table or segment would mean the bound was not applied.
            if stored.len() != end.len() || stored[..10] != end[..10] {
                break;
            }
            let piece = u32::from_be_bytes(stored[10..14].try_into().expect("4 bytes"));
            if piece > next {
                return Err(PieceError::Missing(next));
            }
            if piece == next {
                visit(piece, iterator.value().expect("valid iterator has a value"))?;
                remaining.next();
            }
            iterator.next();
        }
        iterator.status().map_err(|source| self.index_error(source))?;
        match remaining.next() {
            Some(piece) => Err(PieceError::Missing(piece)),
            None => Ok(()),
        }
    }

    /// Returns a segment's time table: the timestamps of each chunk of
    /// [`pktvault_schema::PACKETS_PER_CHUNK`] packets.
    pub fn times(&self, meta: &SegmentMeta) -> Result<Vec<ChunkTimes>> {
        let bytes = self.table("time table", &keys::segment_times(meta.segment_id), meta.segment_id)?;
        decode_times(&bytes, meta.packets).map_err(|source| self.format_error(source))
    }

    /// Returns the stored bitmaps and flow table of a segment. The flow
    /// table is read when first needed, and only the pieces of the requested
    /// flows, so a filter that selects no flow of the segment reads only bitmaps.
    pub fn bitmaps<'a>(&'a self, meta: &SegmentMeta) -> StoredBitmaps<'a> {
        StoredBitmaps {
            store: self,
            segment_id: meta.segment_id,
            packets: meta.packets,
            header: OnceCell::new(),
            pieces: RefCell::new(BTreeMap::new()),
        }
    }

    /// Compacts the whole index into as few table files as its size allows.
    pub fn compact(&self) {
        self.db.compact_range::<&[u8], &[u8]>(None, None);
    }
}

/// The position and time tables of a segment being written.
#[derive(Debug, Default, Clone)]
pub struct SegmentTables {
    /// Byte length of each group of [`pktvault_schema::PACKETS_PER_GROUP`] records.
    pub group_lengths: Vec<u64>,
    /// Timestamps of each chunk of [`pktvault_schema::PACKETS_PER_CHUNK`] records.
    pub chunk_times: Vec<ChunkTimes>,
}

/// The failure to read a table piece.
enum PieceError {
    /// The piece is absent from the index.
    Missing(u32),
    /// Reading the index or decoding the piece failed.
    Other(Error),
}

impl From<Error> for PieceError {
    fn from(err: Error) -> Self {
        PieceError::Other(err)
    }
}

/// The stored flow bitmaps and flow table of one segment.
pub struct StoredBitmaps<'a> {
    store: &'a InterfaceStore,
    segment_id: u64,
    packets: u64,
    header: OnceCell<FlowTableHeader>,
    /// Flow table pieces read so far, by piece number.
    pieces: RefCell<BTreeMap<u32, Vec<u8>>>,
}

impl<'a> StoredBitmaps<'a> {
    fn damaged_flows(&self, reason: String) -> Error {
        self.store.format_error(pktvault_schema::FormatError::Damaged {
            what: "flow table",
            reason: format!("segment {}: {reason}", self.segment_id),
        })
    }

    fn header(&self) -> Result<FlowTableHeader> {
        if let Some(header) = self.header.get() {
            return Ok(*header);
        }
        let bytes = self
            .store
            .db
            .get_pinned(keys::segment_flows(self.segment_id))
            .map_err(|source| self.store.index_error(source))?
            .ok_or_else(|| self.damaged_flows("the header is missing".into()))?;
        let header = FlowTableHeader::decode(&bytes).map_err(|reason| self.damaged_flows(reason))?;
        if u64::from(header.packets) != self.packets {
            return Err(self.damaged_flows(format!(
                "the flow table lists {} packets, the segment has {}",
                header.packets, self.packets
            )));
        }
        Ok(*self.header.get_or_init(|| header))
    }

    /// Returns the packets of the flows in `flows`.
    pub fn packets_of(&self, flows: &RoaringBitmap) -> Result<RoaringBitmap> {
        let Some(last) = flows.max() else {
            return Ok(RoaringBitmap::new());
        };
        let header = self.header()?;
        if last >= header.flows {
            return Err(self.damaged_flows(format!("flow {last} is past the {} flows of the table", header.flows)));
        }
        if flows.len() == u64::from(header.flows) {
            let mut all = RoaringBitmap::new();
            all.insert_range(0..header.packets);
            return Ok(all);
        }
        let mut pieces = self.pieces.borrow_mut();
        let mut missing: Vec<u32> = Vec::new();
        for flow in flows {
            let piece = flow_piece(flow);
            if missing.last() != Some(&piece) && !pieces.contains_key(&piece) {
                missing.push(piece);
            }
        }
        let total = header.flows.div_ceil(FLOWS_PER_PIECE);
        self.store
            .read_pieces(keys::flow_piece, self.segment_id, &missing, total, |piece, bytes| {
                pieces.insert(piece, bytes.to_vec());
                Ok(())
            })
            .map_err(|err| match err {
                PieceError::Missing(piece) => self.damaged_flows(format!("piece {piece} is missing")),
                PieceError::Other(err) => err,
            })?;
        let mut packets = FlowPackets::new(header);
        let mut chosen: Vec<u32> = Vec::new();
        let mut flows = flows.iter().peekable();
        while let Some(flow) = flows.next() {
            chosen.push(flow);
            let piece = flow_piece(flow);
            if flows.peek().is_some_and(|&next| flow_piece(next) == piece) {
                continue;
            }
            let bytes = pieces.get(&piece).expect("every piece of the chosen flows was read");
            packets.add_piece(piece, bytes, &chosen).map_err(|reason| self.damaged_flows(reason))?;
            chosen.clear();
        }
        Ok(packets.into_bitmap())
    }

    fn decode(&self, bytes: &[u8]) -> Result<RoaringBitmap> {
        RoaringBitmap::deserialize_from(bytes).map_err(|err| {
            self.store.format_error(pktvault_schema::FormatError::Damaged { what: "bitmap", reason: err.to_string() })
        })
    }
}

impl BitmapSource for StoredBitmaps<'_> {
    fn flow_count(&self) -> Result<u32> {
        Ok(self.header()?.flows)
    }

    fn bitmap(&self, field: Field, value: &[u8]) -> Result<RoaringBitmap> {
        let bytes = self
            .store
            .db
            .get_pinned(keys::bitmap(self.segment_id, field, value))
            .map_err(|source| self.store.index_error(source))?;
        match bytes {
            Some(bytes) => self.decode(&bytes),
            None => Ok(RoaringBitmap::new()),
        }
    }

    fn union_range(&self, field: Field, first: &[u8], last: &[u8]) -> Result<RoaringBitmap> {
        let prefix = keys::bitmap_field_prefix(self.segment_id, field);
        let end = keys::bitmap(self.segment_id, field, last);
        let mut result = RoaringBitmap::new();
        let mut iterator = self.store.db.raw_iterator();
        iterator.seek(keys::bitmap(self.segment_id, field, first));
        while iterator.valid() {
            let key = iterator.key().expect("valid iterator has a key");
            if !key.starts_with(&prefix) || key > end.as_slice() {
                break;
            }
            if key.len() == end.len() {
                result |= self.decode(iterator.value().expect("valid iterator has a value"))?;
            }
            iterator.next();
        }
        iterator.status().map_err(|source| self.store.index_error(source))?;
        Ok(result)
    }
}

impl BitmapSource for SegmentIndex {
    fn flow_count(&self) -> Result<u32> {
        Ok(SegmentIndex::flow_count(self))
    }

    fn bitmap(&self, field: Field, value: &[u8]) -> Result<RoaringBitmap> {
        Ok(self.get(field, value).cloned().unwrap_or_default())
    }

    fn union_range(&self, field: Field, first: &[u8], last: &[u8]) -> Result<RoaringBitmap> {
        Ok(SegmentIndex::union_range(self, field, first, last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{Ingester, SegmentLimits, SourcePacket};
    use pktvault_schema::TsResolution;

    /// Returns an Ethernet frame of a UDP datagram from 10.0.0.`host` port `port` to 192.0.2.1 port 53.
    fn udp_frame(host: u8, port: u16) -> Vec<u8> {
        let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
        frame.extend_from_slice(&[0x45, 0, 0, 36, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, host, 192, 0, 2, 1]);
        frame.extend_from_slice(&port.to_be_bytes());
        frame.extend_from_slice(&[0, 53, 0, 16, 0, 0]);
        frame.extend_from_slice(&[0xab; 8]);
        frame
    }

    /// Records `count` Ethernet frames, `frame(number)` each, at `per_second`
    /// packets per second of packet time into interface 0 of `dir`, with a
    /// new segment every `segment_seconds`, and returns the store.
    fn record_udp(
        dir: &Path,
        segment_seconds: u64,
        count: u32,
        per_second: u32,
        frame: impl Fn(u32) -> Vec<u8>,
    ) -> InterfaceStore {
        let store = InterfaceStore::open_writable(dir, 0).unwrap();
        let mut ingester = Ingester::new(store, SegmentLimits { seconds: segment_seconds, bytes: 64 << 20 }).unwrap();
        for number in 0..count {
            let frame = frame(number);
            let packet = SourcePacket {
                ts_sec: 1_700_000_000 + number / per_second,
                ts_frac: number % per_second,
                resolution: TsResolution::Micro,
                wire_len: frame.len() as u32,
                data: &frame,
            };
            ingester.ingest(1, 65535, &packet).unwrap();
        }
        ingester.finish().unwrap().0
    }

    /// Returns the name and size of every file in `dir`.
    fn listing(dir: &Path) -> Vec<(String, u64)> {
        let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                (entry.file_name().to_string_lossy().into_owned(), entry.metadata().unwrap().len())
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn writable_open_rejects_other_format() {
        let dir = tempfile::tempdir().unwrap();
        let store = InterfaceStore::open_writable(dir.path(), 3).unwrap();
        store.db.put(keys::FORMAT_KEY, br#"{"magic":"pktvault-index","version":3}"#).unwrap();
        store.flush().unwrap();
        let index_path = store.index_path.clone();
        drop(store);
        let before = listing(&index_path);
        let err = InterfaceStore::open_writable(dir.path(), 3).err().expect("version 3 is rejected").to_string();
        assert!(err.contains("index format version 3 is not supported"), "{err}");
        let pcap_dir = dir.path().join("3").join("pcap");
        let command = format!("pktvault import --data-dir NEW_DIR --ifid 3 {}/*.pcap", pcap_dir.display());
        assert!(err.contains(&command), "{err}");
        assert_eq!(listing(&index_path), before, "the rejected open changed the index folder");
    }

    #[test]
    fn dropped_ingester_commits_the_segment_it_was_sealing() {
        let dir = tempfile::tempdir().unwrap();
        let store = InterfaceStore::open_writable(dir.path(), 0).unwrap();
        let mut ingester = Ingester::new(store, SegmentLimits { seconds: 1, bytes: 64 << 20 }).unwrap();
        // Three one-second segments: the first two are sealed when the next starts.
        for number in 0..30u32 {
            let frame = udp_frame(number as u8, 1000);
            let packet = SourcePacket {
                ts_sec: 1_700_000_000 + number / 10,
                ts_frac: number % 10,
                resolution: TsResolution::Micro,
                wire_len: frame.len() as u32,
                data: &frame,
            };
            ingester.ingest(1, 65535, &packet).unwrap();
        }
        drop(ingester);
        let store = InterfaceStore::open_read_only(dir.path(), 0).unwrap();
        let segments = store.segments().unwrap();
        assert_eq!(segments.len(), 2, "the open segment had no checkpoint");
        for meta in &segments {
            assert!(meta.sealed, "{meta:?}");
            assert_eq!(meta.packets, 10, "{meta:?}");
        }
    }

    #[test]
    fn segment_list_follows_writes() {
        let dir = tempfile::tempdir().unwrap();
        let writer = record_udp(dir.path(), 1, 300, 100, |number| udp_frame((number % 7) as u8, 1000));
        let scratch = tempfile::tempdir().unwrap();
        let follower = InterfaceStore::open_follower(dir.path(), 0, scratch.path()).unwrap();
        let before = follower.segments().unwrap();
        assert_eq!(before.len(), 3);
        assert_eq!(writer.segments().unwrap(), before);

        let mut changed = before[1].clone();
        changed.dropped = 42;
        writer.update_meta(&changed).unwrap();
        assert_eq!(writer.segments().unwrap()[1], changed, "the writer lists its own change");
        assert_eq!(follower.segments().unwrap(), before, "the follower has not caught up yet");
        follower.catch_up().unwrap();
        assert_eq!(follower.segments().unwrap()[1], changed, "the follower lists the change after catching up");

        writer.delete_segment_entries(before[0].segment_id).unwrap();
        follower.catch_up().unwrap();
        let after = follower.segments().unwrap();
        assert_eq!(after.len(), 2);
        assert_eq!(after[0], changed);
        assert_eq!(writer.segments().unwrap(), after);
    }

    #[test]
    fn missing_table_pieces_are_named() {
        let dir = tempfile::tempdir().unwrap();
        // 20,000 packets in 5 position pieces and 400 flows in 4 flow pieces.
        let store = record_udp(dir.path(), 3600, 20_000, 1000, |number| {
            udp_frame((number % 20) as u8, 1000 + (number % 400) as u16)
        });
        let meta = store.segments().unwrap().remove(0);
        assert_eq!(meta.packets, 20_000);
        let id = meta.segment_id;
        store.db.delete(keys::position_piece(id, 1)).unwrap();
        store.db.delete(keys::flow_piece(id, 2)).unwrap();

        // Every packet: the pieces are read with an iterator.
        let all: RoaringBitmap = (0..20_000).collect();
        let dense = store.positions(&meta, &all).unwrap_err().to_string();
        assert!(dense.contains(&format!("piece 1 is missing for segment {id}")), "{dense}");
        // One packet of group 1250, in piece 1: a batched lookup.
        let sparse = store.positions(&meta, &[5000].into_iter().collect()).unwrap_err().to_string();
        assert!(sparse.contains(&format!("piece 1 is missing for segment {id}")), "{sparse}");
        let mut table = store.positions(&meta, &[10, 19_999].into_iter().collect()).unwrap();
        // Records of 16 + 50 bytes, from byte 24.
        assert_eq!(table.start(2).unwrap(), 24 + 2 * 4 * 66);
        assert!(table.start(4999).is_ok());
        // The last group of piece 2 ends where piece 3 starts, so both are read.
        let mut table = store.positions(&meta, &[12_287].into_iter().collect()).unwrap();
        assert!(table.start(3071).unwrap() < table.start(3072).unwrap());
        // Also with an earlier candidate in piece 2, which the walk passes
        // before it skips ahead to the last group.
        let mut table = store.positions(&meta, &[8_200, 8_201, 12_286].into_iter().collect()).unwrap();
        assert!(table.start(2050).unwrap() < table.start(2051).unwrap());
        assert!(table.start(3071).unwrap() < table.start(3072).unwrap());

        let bitmaps = store.bitmaps(&meta);
        assert_eq!(bitmaps.flow_count().unwrap(), 400);
        let flows: RoaringBitmap = (256..260).collect();
        let sparse = bitmaps.packets_of(&flows).unwrap_err().to_string();
        assert!(sparse.contains("piece 2 is missing"), "{sparse}");
        let flows: RoaringBitmap = (1..400).collect();
        let dense = store.bitmaps(&meta).packets_of(&flows).unwrap_err().to_string();
        assert!(dense.contains("piece 2 is missing"), "{dense}");
        let flows: RoaringBitmap = [0, 399].into_iter().collect();
        assert_eq!(store.bitmaps(&meta).packets_of(&flows).unwrap().len(), 100);
    }

    /// Returns the lines of `section` in the OPTIONS file RocksDB wrote last.
    fn options_section(index_path: &Path, section: &str) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(index_path)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.file_name().unwrap().to_string_lossy().starts_with("OPTIONS-"))
            .collect();
        files.sort();
        let text = std::fs::read_to_string(files.last().expect("an OPTIONS file")).unwrap();
        text.lines()
            .skip_while(|line| line.trim() != section)
            .skip(1)
            .take_while(|line| !line.trim_start().starts_with('['))
            .map(|line| line.trim().to_string())
            .collect()
    }

    #[test]
    fn bitmap_family_gets_table_options() {
        let dir = tempfile::tempdir().unwrap();
        let store = InterfaceStore::open_writable(dir.path(), 0).unwrap();
        let lines = options_section(&store.index_path, "[TableOptions/BlockBasedTable \"default\"]");
        assert!(!lines.is_empty(), "no table options for the default column family");
        assert!(lines.iter().any(|line| line == "filter_policy=bloomfilter"), "{lines:?}");
        let lines = options_section(&store.index_path, "[CFOptions \"default\"]");
        assert!(lines.iter().any(|line| line == "compression=kLZ4Compression"), "{lines:?}");
        assert!(lines.iter().any(|line| line == "bottommost_compression=kLZ4Compression"), "{lines:?}");
    }
}
