//! RocksDB key layout of one interface's index.
//!
//! All multi-byte integers in keys are big-endian so that keys sort by value.
//! Segment metadata is kept in the column family [`META_CF`], keyed by segment
//! id. In the default column family every key of a segment starts with
//! `SEGMENT_PREFIX` and the segment id, so one range delete over
//! `[segment_start(id), segment_start(id + 1))` drops the segment's position,
//! time and flow tables and its bitmaps together. The position and flow
//! tables are stored in pieces, each under a key of its own, so a query
//! reads only the pieces of the packets and flows it selects.

/// Key of the [`crate::FormatMarker`].
pub const FORMAT_KEY: &[u8] = b"F";

/// Column family of the segment metadata.
pub const META_CF: &str = "segments";

/// First byte of every per-segment key in the default column family.
pub const SEGMENT_PREFIX: u8 = b'S';

/// Sub-key prefix of a segment's position table pieces. The piece number
/// (`u32`) follows, and each piece gives the start of 1,024 groups of records.
pub const SUB_POSITIONS: u8 = 0x01;
/// Sub-key prefix of a segment's flow bitmaps; a [`Field`] byte and the value follow.
pub const SUB_BITMAP: u8 = 0x02;
/// Sub-key of a segment's flow table header: its flow and packet counts.
pub const SUB_FLOWS: u8 = 0x03;
/// Sub-key of a segment's time table: the timestamps each chunk spans.
pub const SUB_TIMES: u8 = 0x04;
/// Sub-key prefix of a segment's flow table pieces. The piece number (`u32`)
/// follows, and each piece lists the packet numbers of 128 flows.
pub const SUB_FLOW_PIECES: u8 = 0x05;

/// Indexed packet fields. The numeric value is stored in keys and must not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Field {
    /// IPv4 source address (4 bytes) of an IPv4 packet.
    Ip4Src = 1,
    /// IPv4 destination address (4 bytes) of an IPv4 packet.
    Ip4Dst = 2,
    /// IPv6 source address (16 bytes).
    Ip6Src = 3,
    /// IPv6 destination address (16 bytes).
    Ip6Dst = 4,
    /// ARP or RARP sender protocol address (4 bytes).
    ArpSpa = 5,
    /// ARP or RARP target protocol address (4 bytes).
    ArpTpa = 6,
    /// Source port: transport protocol (1 byte) then port (2 bytes).
    SrcPort = 7,
    /// Destination port: transport protocol (1 byte) then port (2 bytes).
    DstPort = 8,
    /// IPv4 protocol field (1 byte), set on every fragment.
    Ip4Proto = 9,
    /// Every next-header value of the IPv6 header chain (1 byte).
    Ip6NextHeader = 10,
    /// Network layer: the EtherType (2 bytes) after link headers and tags.
    Network = 11,
    /// 802.1Q/802.1ad VLAN id (2 bytes) at any tag depth.
    VlanId = 12,
    /// Packets with at least one VLAN tag (empty value).
    VlanAny = 13,
    /// MPLS label (4 bytes) at any stack depth.
    MplsLabel = 14,
    /// Packets with at least one MPLS label (empty value).
    MplsAny = 15,
    /// Ethernet source MAC address (6 bytes).
    EtherSrc = 16,
    /// Ethernet destination MAC address (6 bytes).
    EtherDst = 17,
    /// Packets whose captured bytes end before a header field the default
    /// filter language reads (empty value). Only these can be rejected for
    /// reading past the captured bytes, so extraction checks them exactly.
    Truncated = 18,
}

/// Returns the first key of segment `segment_id`.
pub fn segment_start(segment_id: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(SEGMENT_PREFIX);
    key.extend_from_slice(&segment_id.to_be_bytes());
    key
}

/// Returns the key of a segment's metadata in [`META_CF`]: the segment id.
pub fn segment_meta(segment_id: u64) -> [u8; 8] {
    segment_id.to_be_bytes()
}

/// Parses a key of [`META_CF`].
pub fn parse_meta_key(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// Bytes of the key of a table piece.
pub const PIECE_KEY_BYTES: usize = 14;

fn piece_key(segment_id: u64, sub: u8, piece: u32) -> [u8; PIECE_KEY_BYTES] {
    let mut key = [0u8; PIECE_KEY_BYTES];
    key[0] = SEGMENT_PREFIX;
    key[1..9].copy_from_slice(&segment_id.to_be_bytes());
    key[9] = sub;
    key[10..14].copy_from_slice(&piece.to_be_bytes());
    key
}

/// Returns the key of piece `piece` of a segment's position table.
pub fn position_piece(segment_id: u64, piece: u32) -> [u8; PIECE_KEY_BYTES] {
    piece_key(segment_id, SUB_POSITIONS, piece)
}

/// Returns the key of a segment's time table.
pub fn segment_times(segment_id: u64) -> Vec<u8> {
    let mut key = segment_start(segment_id);
    key.push(SUB_TIMES);
    key
}

/// Returns the key of a segment's flow table header.
pub fn segment_flows(segment_id: u64) -> Vec<u8> {
    let mut key = segment_start(segment_id);
    key.push(SUB_FLOWS);
    key
}

/// Returns the key of piece `piece` of a segment's flow table.
pub fn flow_piece(segment_id: u64, piece: u32) -> [u8; PIECE_KEY_BYTES] {
    piece_key(segment_id, SUB_FLOW_PIECES, piece)
}

/// Returns the key prefix of all bitmaps of `field` in a segment.
pub fn bitmap_field_prefix(segment_id: u64, field: Field) -> Vec<u8> {
    let mut key = segment_start(segment_id);
    key.push(SUB_BITMAP);
    key.push(field as u8);
    key
}

/// Returns the key of the bitmap of `field` = `value` in a segment.
pub fn bitmap(segment_id: u64, field: Field, value: &[u8]) -> Vec<u8> {
    let mut key = bitmap_field_prefix(segment_id, field);
    key.extend_from_slice(value);
    key
}
