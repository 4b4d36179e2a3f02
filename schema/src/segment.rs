//! Segment metadata and chunk tables.

use serde::{Deserialize, Serialize};

use crate::FormatError;

/// Timestamp resolution of a segment file (its pcap magic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TsResolution {
    /// Magic `0xa1b2c3d4`: the fraction counts microseconds.
    Micro,
    /// Magic `0xa1b23c4d`: the fraction counts nanoseconds.
    Nano,
}

impl TsResolution {
    /// Nanoseconds in one unit of the fraction.
    pub fn nanos_per_unit(self) -> u64 {
        match self {
            TsResolution::Micro => 1_000,
            TsResolution::Nano => 1,
        }
    }

    /// Returns the little-endian pcap magic of this resolution.
    pub fn pcap_magic(self) -> u32 {
        match self {
            TsResolution::Micro => 0xa1b2_c3d4,
            TsResolution::Nano => 0xa1b2_3c4d,
        }
    }
}

/// Metadata of one segment, stored as versioned JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "format")]
pub enum StoredSegmentMeta {
    #[serde(rename = "1")]
    V1(SegmentMeta),
}

/// Facts about one segment file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMeta {
    /// Segment id, unique and increasing within an interface.
    pub segment_id: u64,
    /// File name inside the interface's `pcap/` folder.
    pub file_name: String,
    /// pcap LINKTYPE value written in the file header, FCS bits included.
    pub linktype: u32,
    /// Snapshot length written in the file header.
    pub snaplen: u32,
    /// Timestamp resolution of the file.
    pub resolution: TsResolution,
    /// Timestamp of the first packet written, in nanoseconds since the epoch.
    pub first_ts_ns: u64,
    /// Smallest packet timestamp in the segment.
    pub min_ts_ns: u64,
    /// Largest packet timestamp in the segment.
    pub max_ts_ns: u64,
    /// Whether packet timestamps never decrease in file order.
    pub monotonic: bool,
    /// Number of packet records.
    pub packets: u64,
    /// File size in bytes, pcap header included.
    pub file_bytes: u64,
    /// Sum of the original (wire) lengths of the packets.
    pub wire_bytes: u64,
    /// Packets the capture source reported as dropped while this segment was open.
    #[serde(default)]
    pub dropped: u64,
    /// Whether the segment is complete. An open segment's entry is a
    /// checkpoint: its file may hold more bytes than `file_bytes`, and readers
    /// read only up to `file_bytes`.
    #[serde(default = "sealed_default")]
    pub sealed: bool,
}

fn sealed_default() -> bool {
    true
}

impl SegmentMeta {
    /// Encodes the metadata for storage.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&StoredSegmentMeta::V1(self.clone())).expect("segment metadata serializes")
    }

    /// Decodes stored metadata, rejecting unknown versions.
    pub fn decode(bytes: &[u8]) -> Result<SegmentMeta, FormatError> {
        match serde_json::from_slice::<StoredSegmentMeta>(bytes) {
            Ok(StoredSegmentMeta::V1(meta)) => Ok(meta),
            Err(err) => Err(FormatError::Damaged { what: "segment metadata", reason: err.to_string() }),
        }
    }
}

/// Appends `value` as an unsigned LEB128 varint.
pub fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads an unsigned LEB128 varint at `*pos` and moves `*pos` past it.
/// Returns `None` when the bytes end inside it or it does not fit in a `u64`.
pub fn read_varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    let mut shift = 0u32;
    loop {
        let byte = *bytes.get(*pos)?;
        *pos += 1;
        if shift == 63 && byte > 1 {
            return None;
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

/// Bytes of the pcap file header, where the first group starts.
const FILE_HEADER_BYTES: u64 = 24;

/// Version byte that starts an encoded position table.
const POSITION_TABLE_VERSION: u8 = 1;
/// Bytes before the skip entries of a position table: version, packets per group, group count.
const POSITION_TABLE_HEADER: usize = 6;
/// Groups between two skip entries of a position table.
const GROUPS_PER_SKIP: u32 = 64;
/// Bytes of a skip entry: a file offset (`u64` LE) and a position in the lengths (`u32` LE).
const SKIP_ENTRY_BYTES: usize = 12;

fn damaged_positions(reason: String) -> FormatError {
    FormatError::Damaged { what: "position table", reason }
}

/// Encodes a position table from the byte length of each group of
/// [`crate::PACKETS_PER_GROUP`] records (record headers included).
///
/// Layout: a version byte, the group size (`u8`) and the group count (`u32`
/// LE). Then comes a skip entry for every 64th group, starting with group 0,
/// with the group's file offset (`u64` LE) and the position of its length
/// among the lengths (`u32` LE). The lengths follow, each a LEB128 varint.
pub fn encode_positions(group_lengths: &[u64]) -> Vec<u8> {
    let skips = group_lengths.len().div_ceil(GROUPS_PER_SKIP as usize);
    let mut lengths = Vec::with_capacity(group_lengths.len() * 2);
    let mut skip_entries = Vec::with_capacity(skips * SKIP_ENTRY_BYTES);
    let mut offset = FILE_HEADER_BYTES;
    for (group, &length) in group_lengths.iter().enumerate() {
        if group % GROUPS_PER_SKIP as usize == 0 {
            skip_entries.extend_from_slice(&offset.to_le_bytes());
            skip_entries.extend_from_slice(&(lengths.len() as u32).to_le_bytes());
        }
        write_varint(&mut lengths, length);
        offset += length;
    }
    let mut out = Vec::with_capacity(POSITION_TABLE_HEADER + skip_entries.len() + lengths.len());
    out.push(POSITION_TABLE_VERSION);
    out.push(crate::PACKETS_PER_GROUP as u8);
    out.extend_from_slice(&(group_lengths.len() as u32).to_le_bytes());
    out.extend_from_slice(&skip_entries);
    out.extend_from_slice(&lengths);
    out
}

/// The start offsets of the groups of [`crate::PACKETS_PER_GROUP`] records
/// in a segment file, decoded on demand.
///
/// A lookup starts from the group's skip entry, or from the previous lookup
/// when that is nearer, and adds at most 255 lengths, so its cost does not
/// grow with the segment.
#[derive(Debug, Clone)]
pub struct PositionTable {
    bytes: Vec<u8>,
    groups: u32,
    /// Start of the lengths in `bytes`.
    lengths_start: usize,
    /// Size of the segment file: the end of the last group.
    file_bytes: u64,
    /// A decoded group: its number, the position of its length in `bytes`, and its file offset.
    cursor: (u32, usize, u64),
}

impl PositionTable {
    /// Checks the header of a stored table for a segment of `packets`
    /// records and `file_bytes` bytes; lengths are checked as they are decoded.
    pub fn decode(bytes: Vec<u8>, packets: u64, file_bytes: u64) -> Result<PositionTable, FormatError> {
        if bytes.len() < POSITION_TABLE_HEADER {
            return Err(damaged_positions(format!("{} bytes is shorter than the header", bytes.len())));
        }
        if bytes[0] != POSITION_TABLE_VERSION {
            return Err(FormatError::UnsupportedVersion { found: u32::from(bytes[0]) });
        }
        if u32::from(bytes[1]) != crate::PACKETS_PER_GROUP {
            return Err(damaged_positions(format!(
                "groups of {} packets, this build reads groups of {}",
                bytes[1],
                crate::PACKETS_PER_GROUP
            )));
        }
        let groups = u32::from_le_bytes(bytes[2..6].try_into().expect("4 bytes"));
        let expected = packets.div_ceil(u64::from(crate::PACKETS_PER_GROUP));
        if u64::from(groups) != expected {
            return Err(damaged_positions(format!("{groups} groups for {packets} packets")));
        }
        let lengths_start = POSITION_TABLE_HEADER + groups.div_ceil(GROUPS_PER_SKIP) as usize * SKIP_ENTRY_BYTES;
        if bytes.len() < lengths_start {
            return Err(damaged_positions(format!("{groups} groups need more than {} bytes", bytes.len())));
        }
        let cursor = (0, lengths_start, FILE_HEADER_BYTES);
        Ok(PositionTable { bytes, groups, lengths_start, file_bytes, cursor })
    }

    /// Number of groups.
    pub fn groups(&self) -> u32 {
        self.groups
    }

    /// Returns the byte offset where group `group` starts; `groups()` gives
    /// the end of the last group, the file size.
    pub fn start(&mut self, group: u32) -> Result<u64, FormatError> {
        if group > self.groups {
            return Err(damaged_positions(format!("group {group} asked of {}", self.groups)));
        }
        if group == self.groups {
            return Ok(self.file_bytes);
        }
        let skip = group / GROUPS_PER_SKIP;
        if self.cursor.0 > group || self.cursor.0 / GROUPS_PER_SKIP != skip {
            let at = POSITION_TABLE_HEADER + skip as usize * SKIP_ENTRY_BYTES;
            let offset = u64::from_le_bytes(self.bytes[at..at + 8].try_into().expect("8 bytes"));
            let position = u32::from_le_bytes(self.bytes[at + 8..at + 12].try_into().expect("4 bytes")) as usize;
            if offset > self.file_bytes || self.lengths_start.checked_add(position).is_none() {
                return Err(damaged_positions(format!("skip entry {skip} points past the segment")));
            }
            self.cursor = (skip * GROUPS_PER_SKIP, self.lengths_start + position, offset);
        }
        let (mut current, mut pos, mut offset) = self.cursor;
        while current < group {
            let length = read_varint(&self.bytes, &mut pos)
                .ok_or_else(|| damaged_positions(format!("the length of group {current} is cut or overlong")))?;
            offset = offset.saturating_add(length);
            current += 1;
        }
        if offset > self.file_bytes {
            return Err(damaged_positions(format!(
                "group {group} starts at byte {offset}, past the {} bytes of the segment",
                self.file_bytes
            )));
        }
        self.cursor = (current, pos, offset);
        Ok(offset)
    }
}

/// The timestamps of one chunk of [`crate::PACKETS_PER_CHUNK`] packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkTimes {
    /// Smallest timestamp in the chunk, in nanoseconds.
    pub min_ts_ns: u64,
    /// Largest timestamp in the chunk, in nanoseconds.
    pub max_ts_ns: u64,
}

/// Version byte that starts an encoded time table.
const TIME_TABLE_VERSION: u8 = 1;

fn damaged_times(reason: String) -> FormatError {
    FormatError::Damaged { what: "time table", reason }
}

/// Encodes a time table: a version byte and the chunk count (`u32` LE), then
/// two LEB128 varints per chunk. The first is the difference of the chunk's
/// smallest timestamp to the previous chunk's (to 0 for the first chunk),
/// zigzag-coded because timestamps may go back. The second is the chunk's
/// largest timestamp minus its smallest.
pub fn encode_times(chunks: &[ChunkTimes]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + chunks.len() * 6);
    out.push(TIME_TABLE_VERSION);
    out.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
    let mut previous = 0u64;
    for chunk in chunks {
        let delta = chunk.min_ts_ns.wrapping_sub(previous) as i64;
        write_varint(&mut out, ((delta << 1) ^ (delta >> 63)) as u64);
        write_varint(&mut out, chunk.max_ts_ns - chunk.min_ts_ns);
        previous = chunk.min_ts_ns;
    }
    out
}

/// Decodes a time table written by [`encode_times`] for a segment of `packets` records.
pub fn decode_times(bytes: &[u8], packets: u64) -> Result<Vec<ChunkTimes>, FormatError> {
    if bytes.len() < 5 {
        return Err(damaged_times(format!("{} bytes is shorter than the header", bytes.len())));
    }
    if bytes[0] != TIME_TABLE_VERSION {
        return Err(FormatError::UnsupportedVersion { found: u32::from(bytes[0]) });
    }
    let count = u32::from_le_bytes(bytes[1..5].try_into().expect("4 bytes"));
    if u64::from(count) != packets.div_ceil(u64::from(crate::PACKETS_PER_CHUNK)) {
        return Err(damaged_times(format!("{count} chunks for {packets} packets")));
    }
    let mut chunks = Vec::with_capacity(count as usize);
    let mut pos = 5;
    let mut previous = 0u64;
    for chunk in 0..count {
        let cut = || damaged_times(format!("chunk {chunk} is cut or overlong"));
        let zigzag = read_varint(bytes, &mut pos).ok_or_else(cut)?;
        let span = read_varint(bytes, &mut pos).ok_or_else(cut)?;
        let delta = ((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64);
        let min_ts_ns = previous.wrapping_add(delta as u64);
        let max_ts_ns = min_ts_ns.checked_add(span).ok_or_else(cut)?;
        chunks.push(ChunkTimes { min_ts_ns, max_ts_ns });
        previous = min_ts_ns;
    }
    if pos != bytes.len() {
        return Err(damaged_times(format!("{} bytes follow the last chunk", bytes.len() - pos)));
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_reject_overlong_values() {
        let mut bytes = Vec::new();
        for value in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            bytes.clear();
            write_varint(&mut bytes, value);
            let mut pos = 0;
            assert_eq!(read_varint(&bytes, &mut pos), Some(value));
            assert_eq!(pos, bytes.len());
        }
        let mut pos = 0;
        assert_eq!(read_varint(&[0xff; 11], &mut pos), None);
        let mut pos = 0;
        assert_eq!(read_varint(&[0x80], &mut pos), None);
    }

    #[test]
    fn position_table_gives_group_starts_in_any_order() {
        // 600 groups cross two skip entries; group 300 is long.
        let mut lengths = vec![100u64; 600];
        lengths[300] = 2_000_000;
        let file_bytes = 24 + lengths.iter().sum::<u64>();
        let packets = 4 * 599 + 2;
        let mut table = PositionTable::decode(encode_positions(&lengths), packets, file_bytes).unwrap();
        assert_eq!(table.groups(), 600);
        let expected = |group: u32| 24 + lengths[..group as usize].iter().sum::<u64>();
        for group in [1, 299, 300, 301, 599, 0, 513, 256, 255, 12] {
            assert_eq!(table.start(group).unwrap(), expected(group), "group {group}");
        }
        assert_eq!(table.start(600).unwrap(), file_bytes);
        assert!(table.start(601).is_err());
    }

    #[test]
    fn damaged_position_tables_are_errors() {
        let bytes = encode_positions(&[100, 100]);
        assert!(PositionTable::decode(bytes.clone(), 9, 224).is_err(), "group count checked against packets");
        let mut short = PositionTable::decode(bytes.clone(), 8, 150).unwrap();
        assert!(short.start(1).is_ok());
        let mut short = PositionTable::decode(bytes.clone(), 8, 120).unwrap();
        assert!(short.start(1).is_err(), "a group starting past the file is found");
        let mut cut = bytes.clone();
        cut.truncate(cut.len() - 2);
        assert!(PositionTable::decode(cut, 8, 224).unwrap().start(1).is_err());
        let mut header_only = bytes.clone();
        header_only.truncate(10);
        assert!(PositionTable::decode(header_only, 8, 224).is_err());
        let mut version = bytes;
        version[0] = 9;
        assert!(matches!(PositionTable::decode(version, 8, 224), Err(FormatError::UnsupportedVersion { found: 9 })));
    }

    #[test]
    fn time_table_round_trip_with_time_going_back() {
        let chunks = vec![
            ChunkTimes { min_ts_ns: 1_700_000_000_000_000_000, max_ts_ns: 1_700_000_000_016_000_000 },
            ChunkTimes { min_ts_ns: 1_699_999_999_000_000_000, max_ts_ns: 1_700_000_001_000_000_000 },
            ChunkTimes { min_ts_ns: 0, max_ts_ns: u64::MAX },
        ];
        assert_eq!(decode_times(&encode_times(&chunks), 40).unwrap(), chunks);
        assert!(decode_times(&encode_times(&chunks), 60).is_err());
        let mut extra = encode_times(&chunks);
        extra.push(0);
        assert!(decode_times(&extra, 40).is_err());
        assert!(matches!(decode_times(&[9, 0, 0, 0, 0], 0), Err(FormatError::UnsupportedVersion { found: 9 })));
    }

    #[test]
    fn segment_meta_round_trip() {
        let meta = SegmentMeta {
            segment_id: 7,
            file_name: "1700000000.000000000-00000007.pcap".into(),
            linktype: 1,
            snaplen: 262144,
            resolution: TsResolution::Nano,
            first_ts_ns: 1,
            min_ts_ns: 1,
            max_ts_ns: 2,
            monotonic: true,
            packets: 2,
            file_bytes: 100,
            wire_bytes: 60,
            dropped: 0,
            sealed: true,
        };
        let bytes = meta.encode();
        assert!(std::str::from_utf8(&bytes).unwrap().contains("\"format\":\"1\""));
        assert_eq!(SegmentMeta::decode(&bytes).unwrap(), meta);
    }
}
