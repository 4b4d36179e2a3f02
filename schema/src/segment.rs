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
#[inline]
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

/// Version byte that starts each piece of a position table.
const POSITION_PIECE_VERSION: u8 = 2;

/// Groups between two skip entries of a position table piece.
const GROUPS_PER_SKIP: u32 = 64;

fn damaged_positions(reason: String) -> FormatError {
    FormatError::Damaged { what: "position table", reason }
}

/// Encodes a position table from the byte length of each group of
/// [`crate::PACKETS_PER_GROUP`] records (record headers included), and
/// passes each piece of [`crate::GROUPS_PER_PIECE`] groups to `visit` with
/// its number.
///
/// Layout of a piece: a version byte, then the file offset of its first
/// group (LEB128). Then comes a skip entry for each later run of 64 groups:
/// the position of the run's first length among the lengths (`u16` LE) and
/// the run's file offset minus the piece's (LEB128). The length of each
/// group (LEB128) follows. Every piece but the last contains
/// [`crate::GROUPS_PER_PIECE`] groups.
pub fn encode_position_pieces(group_lengths: &[u64], mut visit: impl FnMut(u32, &[u8])) {
    let mut piece = Vec::with_capacity(2 * crate::GROUPS_PER_PIECE as usize + 32);
    let mut lengths = Vec::with_capacity(2 * crate::GROUPS_PER_PIECE as usize);
    let mut offset = FILE_HEADER_BYTES;
    for (number, chunk) in group_lengths.chunks(crate::GROUPS_PER_PIECE as usize).enumerate() {
        piece.clear();
        lengths.clear();
        piece.push(POSITION_PIECE_VERSION);
        write_varint(&mut piece, offset);
        let piece_offset = offset;
        for (index, &length) in chunk.iter().enumerate() {
            if index > 0 && index % GROUPS_PER_SKIP as usize == 0 {
                piece.extend_from_slice(&(lengths.len() as u16).to_le_bytes());
                write_varint(&mut piece, offset - piece_offset);
            }
            write_varint(&mut lengths, length);
            offset += length;
        }
        piece.extend_from_slice(&lengths);
        visit(number as u32, &piece);
    }
}

/// Adds the `count` group lengths that start at `bytes[pos]` and returns
/// their sum and the position after them, or `None` when the bytes end
/// first.
///
/// Group lengths take one to three bytes, so decoding them one by one takes
/// a branch per length, mispredicted where sizes mix. This loop takes a
/// byte per step and has no branch on the data: each byte adds its low
/// seven bits times the weight of its place in the varint.
#[inline]
fn sum_lengths(bytes: &[u8], pos: usize, count: u32) -> Option<(u64, usize)> {
    let mut sum = 0u64;
    let mut weight = 1u64;
    let mut ended = 0;
    let mut at = pos;
    while ended < count {
        let byte = *bytes.get(at)?;
        sum = sum.wrapping_add(u64::from(byte & 0x7f).wrapping_mul(weight));
        let more = byte >> 7;
        weight = if more == 1 { weight << 7 } else { 1 };
        ended += u32::from(more ^ 1);
        at += 1;
    }
    Some((sum, at))
}

/// The start offsets of the groups of [`crate::PACKETS_PER_GROUP`] records
/// in a segment file, from the pieces of its position table that a reader
/// loaded.
///
/// A lookup starts from the skip entry of its group's run of 64 groups. When
/// the previous lookup is in the same run and not after the group, it
/// starts there instead. So a lookup adds at most 63 lengths, and lookups in
/// ascending order add each length once.
#[derive(Debug, Clone)]
pub struct PositionTable {
    groups: u32,
    /// Size of the segment file: the end of the last group.
    file_bytes: u64,
    /// The loaded pieces back to back.
    bytes: Vec<u8>,
    /// Per piece, its byte range in `bytes`; empty when it is not loaded.
    pieces: Vec<(u32, u32)>,
    /// The group looked up last: its number, the position of its length in
    /// `bytes`, and its file offset.
    cursor: Option<(u32, usize, u64)>,
    /// The piece whose skip entries were read last, and per run of 64
    /// groups the position of its first length in `bytes` and its offset.
    skips: Option<(u32, Vec<(usize, u64)>)>,
}

impl PositionTable {
    /// Returns an empty table for a segment of `packets` records and
    /// `file_bytes` bytes; [`PositionTable::add_piece`] loads its pieces.
    pub fn new(packets: u64, file_bytes: u64) -> Result<PositionTable, FormatError> {
        let groups = u32::try_from(packets.div_ceil(u64::from(crate::PACKETS_PER_GROUP)))
            .map_err(|_| damaged_positions(format!("{packets} packets are more than a segment holds")))?;
        let pieces = vec![(0, 0); groups.div_ceil(crate::GROUPS_PER_PIECE) as usize];
        Ok(PositionTable { groups, file_bytes, bytes: Vec::new(), pieces, cursor: None, skips: None })
    }

    /// Number of groups.
    pub fn groups(&self) -> u32 {
        self.groups
    }

    /// Number of pieces.
    pub fn piece_count(&self) -> u32 {
        self.groups.div_ceil(crate::GROUPS_PER_PIECE)
    }

    /// Returns the pieces needed to find where `group` starts and ends.
    pub fn pieces_of_group(&self, group: u32) -> impl Iterator<Item = u32> {
        let first = group / crate::GROUPS_PER_PIECE;
        let next = group.saturating_add(1);
        let second =
            (next < self.groups && next / crate::GROUPS_PER_PIECE != first).then_some(next / crate::GROUPS_PER_PIECE);
        std::iter::once(first).chain(second)
    }

    /// Makes room for `pieces` more pieces of typical size, so that adding
    /// them does not copy the ones added before.
    pub fn reserve_pieces(&mut self, pieces: usize) {
        self.bytes.reserve(pieces.saturating_mul(2 * crate::GROUPS_PER_PIECE as usize + 32));
    }

    /// Adds stored piece `piece`. The version is checked here, the rest as
    /// it is decoded.
    pub fn add_piece(&mut self, piece: u32, bytes: &[u8]) -> Result<(), FormatError> {
        let count = self.piece_count();
        let slot = self
            .pieces
            .get_mut(piece as usize)
            .ok_or_else(|| damaged_positions(format!("piece {piece} of a table with {count} pieces")))?;
        match bytes.first() {
            None => return Err(damaged_positions(format!("piece {piece} is empty"))),
            Some(&POSITION_PIECE_VERSION) => {}
            Some(&version) => return Err(FormatError::UnsupportedVersion { found: u32::from(version) }),
        }
        let start = self.bytes.len();
        let end = start + bytes.len();
        let (Ok(start), Ok(end)) = (u32::try_from(start), u32::try_from(end)) else {
            return Err(damaged_positions(format!("piece {piece} makes the table longer than 4 GiB")));
        };
        *slot = (start, end);
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }

    /// Returns the byte range of loaded piece `piece` in `bytes`.
    fn piece_range(&self, piece: u32, group: u32) -> Result<(usize, usize), FormatError> {
        match self.pieces.get(piece as usize) {
            Some(&(start, end)) if start < end => Ok((start as usize, end as usize)),
            _ => Err(damaged_positions(format!("piece {piece}, which holds group {group}, was not loaded"))),
        }
    }

    /// Returns the first group of the run of `group`, the position of its
    /// length in `bytes` and its file offset, from the run's skip entry.
    fn skip(&mut self, group: u32) -> Result<(u32, usize, u64), FormatError> {
        let piece = group / crate::GROUPS_PER_PIECE;
        let first = piece * crate::GROUPS_PER_PIECE;
        let run = ((group - first) / GROUPS_PER_SKIP) as usize;
        if let Some((cached, runs)) = &self.skips {
            if *cached == piece {
                let (position, offset) = runs[run];
                return Ok((first + run as u32 * GROUPS_PER_SKIP, position, offset));
            }
        }

        let (piece_start, piece_end) = self.piece_range(piece, group)?;
        let bytes = &self.bytes[piece_start..piece_end];
        let cut = || damaged_positions(format!("the header of piece {piece} is cut or overlong"));
        let mut pos = 1;
        let piece_offset = read_varint(bytes, &mut pos).ok_or_else(cut)?;
        let count = (self.groups - first).min(crate::GROUPS_PER_PIECE);

        let mut runs = self.skips.take().map(|(_, runs)| runs).unwrap_or_default();
        runs.clear();
        runs.push((0, piece_offset));
        for _ in 1..count.div_ceil(GROUPS_PER_SKIP) {
            let position = bytes.get(pos..pos + 2).ok_or_else(cut)?;
            let position = usize::from(u16::from_le_bytes([position[0], position[1]]));
            pos += 2;
            let delta = read_varint(bytes, &mut pos).ok_or_else(cut)?;
            runs.push((position, piece_offset.saturating_add(delta)));
        }
        // Positions so far count from the first length; make them indexes into `bytes`.
        for (position, _) in &mut runs {
            *position += piece_start + pos;
            if *position >= piece_end {
                return Err(damaged_positions(format!("a skip entry of piece {piece} points past its end")));
            }
        }

        let (position, offset) = runs[run];
        self.skips = Some((piece, runs));
        Ok((first + run as u32 * GROUPS_PER_SKIP, position, offset))
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
        let (current, mut pos, mut offset) = match self.cursor {
            Some((previous, pos, offset))
                if previous <= group && previous / GROUPS_PER_SKIP == group / GROUPS_PER_SKIP =>
            {
                (previous, pos, offset)
            }
            _ => self.skip(group)?,
        };
        if current < group {
            let piece = group / crate::GROUPS_PER_PIECE;
            let (_, piece_end) = self.piece_range(piece, group)?;
            let bytes = &self.bytes[..piece_end];
            let Some((sum, next)) = sum_lengths(bytes, pos, group - current) else {
                return Err(damaged_positions(format!("the lengths of groups {current} to {group} are cut")));
            };
            offset = offset.saturating_add(sum);
            pos = next;
        }
        if offset > self.file_bytes {
            return Err(damaged_positions(format!(
                "group {group} starts at byte {offset}, past the {} bytes of the segment",
                self.file_bytes
            )));
        }
        self.cursor = Some((group, pos, offset));
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
    fn summed_lengths_match_decoded_varints() {
        let lengths = [0u64, 1, 76, 127, 128, 1530, 16_383, 16_384, 262_160, 1 << 35, 90];
        let mut bytes = Vec::new();
        for &length in &lengths {
            write_varint(&mut bytes, length);
        }
        let mut pos = 0;
        for count in 0..=lengths.len() {
            let (sum, end) = sum_lengths(&bytes, 0, count as u32).unwrap();
            assert_eq!(sum, lengths[..count].iter().sum::<u64>(), "first {count} lengths");
            assert_eq!(end, pos);
            if count < lengths.len() {
                read_varint(&bytes, &mut pos).unwrap();
            }
        }
        assert_eq!(sum_lengths(&bytes, 3, 8).unwrap().0, lengths[3..].iter().sum::<u64>());
        assert_eq!(sum_lengths(&bytes, 0, lengths.len() as u32 + 1), None, "one length too many");
        assert_eq!(sum_lengths(&[0x80, 0x80], 0, 1), None, "a varint cut short");
    }

    /// Returns a table of `lengths` with every piece loaded.
    fn loaded_table(lengths: &[u64], packets: u64, file_bytes: u64) -> Result<PositionTable, FormatError> {
        let mut table = PositionTable::new(packets, file_bytes)?;
        let mut pieces = Vec::new();
        encode_position_pieces(lengths, |number, bytes| pieces.push((number, bytes.to_vec())));
        for (number, bytes) in pieces {
            table.add_piece(number, &bytes)?;
        }
        Ok(table)
    }

    #[test]
    fn position_table_gives_group_starts_in_any_order() {
        // The groups cross three pieces; one in the second piece is long.
        let piece = crate::GROUPS_PER_PIECE;
        let groups = 2 * piece + piece / 2;
        let long = piece + 276;
        let mut lengths = vec![100u64; groups as usize];
        lengths[long as usize] = 2_000_000;
        let file_bytes = 24 + lengths.iter().sum::<u64>();
        let packets = u64::from(crate::PACKETS_PER_GROUP) * u64::from(groups - 1) + 1;
        let mut table = loaded_table(&lengths, packets, file_bytes).unwrap();
        assert_eq!(table.groups(), groups);
        assert_eq!(table.piece_count(), 3);
        let expected = |group: u32| 24 + lengths[..group as usize].iter().sum::<u64>();
        let lookups =
            [1, 2, 3, 63, 64, 65, piece - 1, piece, piece + 1, long - 1, long, long + 1, long + 44, groups - 1];
        for group in lookups.into_iter().chain([0, 2 * piece + 52, 2 * piece, 2 * piece - 1, 12, 127]) {
            assert_eq!(table.start(group).unwrap(), expected(group), "group {group}");
        }
        for group in 0..groups {
            assert_eq!(table.start(group).unwrap(), expected(group), "group {group} in order");
        }
        assert_eq!(table.start(groups).unwrap(), file_bytes);
        assert!(table.start(groups + 1).is_err());
    }

    #[test]
    fn position_table_reads_only_loaded_pieces() {
        let piece = crate::GROUPS_PER_PIECE;
        let groups = 3 * piece + 128;
        let lengths = vec![50u64; groups as usize];
        let file_bytes = 24 + 50 * u64::from(groups);
        let mut table = PositionTable::new(u64::from(crate::PACKETS_PER_GROUP * groups), file_bytes).unwrap();
        assert_eq!(table.pieces_of_group(piece - 1).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(table.pieces_of_group(piece).collect::<Vec<_>>(), [1]);
        assert_eq!(table.pieces_of_group(groups - 1).collect::<Vec<_>>(), [3]);
        let mut pieces = Vec::new();
        encode_position_pieces(&lengths, |number, bytes| pieces.push((number, bytes.to_vec())));
        assert_eq!(pieces.len(), 4);
        table.add_piece(2, &pieces[2].1).unwrap();
        assert_eq!(table.start(2 * piece + 82).unwrap(), 24 + 50 * u64::from(2 * piece + 82));
        let missing = table.start(10).unwrap_err().to_string();
        assert!(missing.contains("piece 0, which holds group 10, was not loaded"), "{missing}");
        table.add_piece(0, &pieces[0].1).unwrap();
        assert_eq!(table.start(10).unwrap(), 24 + 50 * 10);
        assert!(table.add_piece(4, &pieces[3].1).is_err(), "piece past the table");
    }

    #[test]
    fn damaged_position_tables_are_errors() {
        let mut pieces = Vec::new();
        encode_position_pieces(&[100, 100], |number, bytes| pieces.push((number, bytes.to_vec())));
        let bytes = pieces.pop().unwrap().1;
        let packets = 2 * u64::from(crate::PACKETS_PER_GROUP);
        let mut exact = PositionTable::new(packets, 224).unwrap();
        exact.add_piece(0, &bytes).unwrap();
        assert_eq!(exact.start(1).unwrap(), 124);
        let mut short = PositionTable::new(packets, 120).unwrap();
        short.add_piece(0, &bytes).unwrap();
        assert!(short.start(1).is_err(), "a group starting past the file is found");
        let mut cut = bytes.clone();
        cut.truncate(cut.len() - 2);
        let mut table = PositionTable::new(packets, 224).unwrap();
        table.add_piece(0, &cut).unwrap();
        assert!(table.start(1).is_err());
        let mut table = PositionTable::new(packets, 224).unwrap();
        assert!(table.add_piece(0, &[]).is_err());
        let mut version = bytes;
        version[0] = 9;
        assert!(matches!(table.add_piece(0, &version), Err(FormatError::UnsupportedVersion { found: 9 })));
        assert!(PositionTable::new(u64::MAX, 0).is_err());
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
