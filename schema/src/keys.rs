//! RocksDB key layout of one interface's index.
//!
//! All multi-byte integers in keys are big-endian so that keys sort by value.
//! Every key of a segment starts with `SEGMENT_PREFIX` and the segment id, so
//! one range delete over `[segment_start(id), segment_start(id + 1))` drops the
//! segment's metadata, chunk table and bitmaps together.

/// Key of the [`crate::FormatMarker`].
pub const FORMAT_KEY: &[u8] = b"F";

/// First byte of every per-segment key.
pub const SEGMENT_PREFIX: u8 = b'S';

/// Sub-key of a segment's [`crate::SegmentMeta`].
pub const SUB_META: u8 = 0x00;
/// Sub-key of a segment's chunk table.
pub const SUB_CHUNKS: u8 = 0x01;
/// Sub-key prefix of a segment's flow bitmaps; a [`Field`] byte and the value follow.
pub const SUB_BITMAP: u8 = 0x02;
/// Sub-key of a segment's flow table: the packet numbers of each flow.
pub const SUB_FLOWS: u8 = 0x03;

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
}

/// Returns the first key of segment `segment_id`.
pub fn segment_start(segment_id: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(SEGMENT_PREFIX);
    key.extend_from_slice(&segment_id.to_be_bytes());
    key
}

/// Returns the key of a segment's metadata.
pub fn segment_meta(segment_id: u64) -> Vec<u8> {
    let mut key = segment_start(segment_id);
    key.push(SUB_META);
    key
}

/// Returns the key of a segment's chunk table.
pub fn segment_chunks(segment_id: u64) -> Vec<u8> {
    let mut key = segment_start(segment_id);
    key.push(SUB_CHUNKS);
    key
}

/// Returns the key of a segment's flow table.
pub fn segment_flows(segment_id: u64) -> Vec<u8> {
    let mut key = segment_start(segment_id);
    key.push(SUB_FLOWS);
    key
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

/// Parses the segment id out of a segment key.
pub fn parse_segment_id(key: &[u8]) -> Option<u64> {
    if key.len() < 9 || key[0] != SEGMENT_PREFIX {
        return None;
    }
    Some(u64::from_be_bytes(key[1..9].try_into().ok()?))
}
