//! Index keys of a packet and the in-memory index of an open segment.
//!
//! [`for_each_key`] and the planner in `filter::plan` must agree: a packet
//! has a key exactly when the primitive that reads that key accepts it (see
//! the bounds in `filter::plan`).
//!
//! The index is kept per flow: packets with the same set of keys (the same
//! MACs, tags, addresses, protocol and ports) form one flow, numbered in order
//! of appearance within the segment. Each key maps to a bitmap of flow ids,
//! and each flow to the list of its packet numbers. Every packet of a flow has
//! the same keys, so planning a filter over flows and then taking the packets
//! of the chosen flows gives exactly the packets a per-packet index would
//! give. The index stores and updates one entry per flow and key instead of
//! one per packet and key.

use hashbrown::HashTable;
use pktvault_schema::keys::Field;
use pktvault_schema::segment::{read_varint, write_varint};
use pktvault_schema::FLOWS_PER_PIECE;
use roaring::RoaringBitmap;
use rustc_hash::{FxHashMap, FxHasher};
use std::hash::Hasher;

use crate::decode::{Decoded, Network, Ports, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_RARP};
use crate::filter::plan::port_value;

/// Calls `visit` with every index key of `packet`.
pub fn for_each_key(packet: &Decoded, mut visit: impl FnMut(Field, &[u8])) {
    if packet.ran_past_capture() {
        visit(Field::Truncated, &[]);
    }
    if packet.link_is_ethernet {
        if let Some(mac) = &packet.ether_src {
            visit(Field::EtherSrc, mac);
        }
        if let Some(mac) = &packet.ether_dst {
            visit(Field::EtherDst, mac);
        }
    }
    if !packet.vlans.is_empty() {
        visit(Field::VlanAny, &[]);
        for id in &packet.vlans {
            visit(Field::VlanId, &id.to_be_bytes());
        }
    }
    if !packet.mpls.is_empty() {
        visit(Field::MplsAny, &[]);
        for label in &packet.mpls {
            visit(Field::MplsLabel, &label.to_be_bytes());
        }
    }
    match &packet.network {
        Network::Truncated | Network::Other(None) => {}
        Network::Other(Some(ethertype)) => visit(Field::Network, &ethertype.to_be_bytes()),
        Network::Ipv4(ip) => {
            visit(Field::Network, &ETHERTYPE_IPV4.to_be_bytes());
            if let Some(proto) = ip.proto {
                visit(Field::Ip4Proto, &[proto]);
            }
            if let Some(src) = &ip.src {
                visit(Field::Ip4Src, src);
            }
            if let Some(dst) = &ip.dst {
                visit(Field::Ip4Dst, dst);
            }
            port_keys(&ip.ports, &mut visit);
        }
        Network::Ipv6(ip) => {
            visit(Field::Network, &ETHERTYPE_IPV6.to_be_bytes());
            if let Some(src) = &ip.src {
                visit(Field::Ip6Src, src);
            }
            if let Some(dst) = &ip.dst {
                visit(Field::Ip6Dst, dst);
            }
            for (position, next) in ip.chain.iter().enumerate() {
                if !ip.chain[..position].contains(next) {
                    visit(Field::Ip6NextHeader, &[*next]);
                }
            }
            port_keys(&ip.ports, &mut visit);
        }
        Network::Arp { rarp, spa, tpa } => {
            let ethertype = if *rarp { ETHERTYPE_RARP } else { ETHERTYPE_ARP };
            visit(Field::Network, &ethertype.to_be_bytes());
            if let Some(spa) = spa {
                visit(Field::ArpSpa, spa);
            }
            if let Some(tpa) = tpa {
                visit(Field::ArpTpa, tpa);
            }
        }
    }
}

fn port_keys(ports: &Ports, visit: &mut impl FnMut(Field, &[u8])) {
    let Some(proto) = ports.proto else { return };
    if let Some(port) = ports.src {
        visit(Field::SrcPort, &port_value(proto, port));
    }
    if let Some(port) = ports.dst {
        visit(Field::DstPort, &port_value(proto, port));
    }
}

/// A key value of at most 16 bytes, stored inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyValue {
    len: u8,
    bytes: [u8; 16],
}

impl KeyValue {
    fn new(value: &[u8]) -> KeyValue {
        let mut bytes = [0u8; 16];
        bytes[..value.len()].copy_from_slice(value);
        KeyValue { len: value.len() as u8, bytes }
    }

    /// Returns the value's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The index of one segment, built while the segment is written.
///
/// Keys are hashed with FxHash rather than SipHash: they come from packet
/// headers, but a flood of distinct keys costs memory whatever the hash, and
/// SipHash took a fifth of the import time. The key sets of the flows lie back
/// to back in one buffer, and each packet stores only its flow id, so a new
/// flow or packet costs no allocation of its own.
#[derive(Debug, Default)]
pub struct SegmentIndex {
    /// Flow ids, found by the hash of their key set.
    flows: HashTable<u32>,
    /// Key sets of the flows, serialized as in [`key_set`], back to back.
    key_sets: Vec<u8>,
    /// End of each flow's key set in `key_sets`.
    key_set_ends: Vec<u32>,
    /// Flow id of each packet, by packet number.
    packet_flows: Vec<u32>,
    /// Flow ids of each key.
    bitmaps: FxHashMap<(Field, KeyValue), RoaringBitmap>,
    scratch: Vec<u8>,
}

/// Serializes the keys of a packet into `out`: per key, the field byte, the
/// value length and the value.
fn key_set(decoded: &Decoded, out: &mut Vec<u8>) {
    out.clear();
    for_each_key(decoded, |field, value| {
        out.push(field as u8);
        out.push(value.len() as u8);
        out.extend_from_slice(value);
    });
}

/// Returns the key set of `flow` from the buffers of a [`SegmentIndex`].
fn flow_key_set<'a>(key_sets: &'a [u8], key_set_ends: &[u32], flow: u32) -> &'a [u8] {
    let start = if flow == 0 { 0 } else { key_set_ends[flow as usize - 1] as usize };
    &key_sets[start..key_set_ends[flow as usize] as usize]
}

fn hash_key_set(key_set: &[u8]) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write(key_set);
    hasher.finish()
}

impl SegmentIndex {
    /// Adds packet `packet` of the segment to the flow of its keys. Packets
    /// are added in order of their numbers, starting at 0.
    pub fn add(&mut self, packet: u32, decoded: &Decoded) {
        debug_assert_eq!(packet as usize, self.packet_flows.len());
        key_set(decoded, &mut self.scratch);
        let hash = hash_key_set(&self.scratch);
        let SegmentIndex { flows, key_sets, key_set_ends, scratch, .. } = self;
        if let Some(&flow) = flows.find(hash, |&flow| flow_key_set(key_sets, key_set_ends, flow) == scratch.as_slice())
        {
            self.packet_flows.push(flow);
            return;
        }
        let flow = key_set_ends.len() as u32;
        key_sets.extend_from_slice(scratch);
        key_set_ends.push(key_sets.len() as u32);
        let (key_sets, key_set_ends) = (&*key_sets, &*key_set_ends);
        flows.insert_unique(hash, flow, |&flow| hash_key_set(flow_key_set(key_sets, key_set_ends, flow)));
        self.packet_flows.push(flow);
        let bitmaps = &mut self.bitmaps;
        for_each_key(decoded, |field, value| {
            let bitmap = bitmaps.entry((field, KeyValue::new(value))).or_default();
            if bitmap.try_push(flow).is_err() {
                bitmap.insert(flow);
            }
        });
    }

    /// Number of distinct keys.
    pub fn len(&self) -> usize {
        self.bitmaps.len()
    }

    /// Returns whether no key has been added.
    pub fn is_empty(&self) -> bool {
        self.bitmaps.is_empty()
    }

    /// Number of flows.
    pub fn flow_count(&self) -> u32 {
        self.key_set_ends.len() as u32
    }

    /// Returns the keys with copies of their flow bitmaps, optimized for storage.
    pub fn optimized_entries(&self) -> impl Iterator<Item = (Field, KeyValue, RoaringBitmap)> + '_ {
        self.bitmaps.iter().map(|((field, value), bitmap)| {
            let mut bitmap = bitmap.clone();
            bitmap.optimize();
            (*field, *value, bitmap)
        })
    }

    /// Encodes the packet lists of the flows: passes each piece to `visit`
    /// with its number and returns the header (see [`FlowTableHeader`]).
    pub fn encode_flows(&self, visit: impl FnMut(u32, &[u8])) -> FlowTableHeader {
        encode_flow_table(&self.packet_flows, self.flow_count(), visit)
    }

    /// Returns the flow bitmap of a key, for reading an open segment.
    pub fn get(&self, field: Field, value: &[u8]) -> Option<&RoaringBitmap> {
        self.bitmaps.get(&(field, KeyValue::new(value)))
    }

    /// Returns the union of the flow bitmaps of `field` with values in `first..=last`.
    pub fn union_range(&self, field: Field, first: &[u8], last: &[u8]) -> RoaringBitmap {
        let mut result = RoaringBitmap::new();
        for ((key_field, value), bitmap) in &self.bitmaps {
            if *key_field == field
                && value.as_bytes().len() == first.len()
                && first <= value.as_bytes()
                && value.as_bytes() <= last
            {
                result |= bitmap;
            }
        }
        result
    }
}

/// Version byte of a flow table's header and of each of its pieces.
const FLOW_TABLE_VERSION: u8 = 2;

/// Bytes of an encoded [`FlowTableHeader`].
const FLOW_TABLE_HEADER: usize = 9;

/// The header of a segment's flow table, stored apart from its pieces.
///
/// A flow table lists the packet numbers of each flow. Its flows are stored
/// in pieces of [`FLOWS_PER_PIECE`], by flow id, so a query reads the pieces
/// of the flows it selects and no others. Header layout: version byte (2),
/// flow count (`u32` LE), packet count (`u32` LE). Piece layout: version
/// byte (2), then the byte length of each flow's list as a LEB128 varint,
/// then the lists. A list is the flow's packet numbers, ascending, as LEB128
/// varints of the difference to the previous number (the first one to 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowTableHeader {
    pub flows: u32,
    pub packets: u32,
}

impl FlowTableHeader {
    pub fn encode(&self) -> [u8; FLOW_TABLE_HEADER] {
        let mut bytes = [0u8; FLOW_TABLE_HEADER];
        bytes[0] = FLOW_TABLE_VERSION;
        bytes[1..5].copy_from_slice(&self.flows.to_le_bytes());
        bytes[5..9].copy_from_slice(&self.packets.to_le_bytes());
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<FlowTableHeader, String> {
        if bytes.len() != FLOW_TABLE_HEADER {
            return Err(format!("the header has {} bytes, not {FLOW_TABLE_HEADER}", bytes.len()));
        }
        if bytes[0] != FLOW_TABLE_VERSION {
            return Err(format!("flow table version {} is not {FLOW_TABLE_VERSION}", bytes[0]));
        }
        let flows = u32::from_le_bytes(bytes[1..5].try_into().expect("4 bytes"));
        let packets = u32::from_le_bytes(bytes[5..9].try_into().expect("4 bytes"));
        Ok(FlowTableHeader { flows, packets })
    }

    /// Number of flows in piece `piece`.
    fn flows_in_piece(&self, piece: u32) -> u32 {
        self.flows.saturating_sub(piece.saturating_mul(FLOWS_PER_PIECE)).min(FLOWS_PER_PIECE)
    }
}

/// Encodes the flow table of `flows` flows where packet `n` belongs to flow
/// `packet_flows[n]`: passes each piece to `visit` with its number and
/// returns the header.
pub(crate) fn encode_flow_table(
    packet_flows: &[u32],
    flows: u32,
    mut visit: impl FnMut(u32, &[u8]),
) -> FlowTableHeader {
    let packets = packet_flows.len();
    // A counting sort of the packet numbers by flow, which keeps each
    // flow's packets in ascending order.
    let mut starts = vec![0u32; flows as usize + 1];
    for &flow in packet_flows {
        starts[flow as usize + 1] += 1;
    }
    for flow in 0..flows as usize {
        starts[flow + 1] += starts[flow];
    }
    let mut next = starts.clone();
    let mut by_flow = vec![0u32; packets];
    for (packet, &flow) in packet_flows.iter().enumerate() {
        by_flow[next[flow as usize] as usize] = packet as u32;
        next[flow as usize] += 1;
    }
    let mut lists = Vec::new();
    let mut piece = Vec::new();
    let per_piece = FLOWS_PER_PIECE as usize;
    for first in (0..flows as usize).step_by(per_piece) {
        let last = (first + per_piece).min(flows as usize);
        lists.clear();
        piece.clear();
        piece.push(FLOW_TABLE_VERSION);
        for flow in first..last {
            let list_start = lists.len();
            let mut previous = 0u32;
            for &packet in &by_flow[starts[flow] as usize..starts[flow + 1] as usize] {
                write_varint(&mut lists, u64::from(packet - previous));
                previous = packet;
            }
            write_varint(&mut piece, (lists.len() - list_start) as u64);
        }
        piece.extend_from_slice(&lists);
        visit((first / per_piece) as u32, &piece);
    }
    FlowTableHeader { flows, packets: packets as u32 }
}

/// Returns the number of the flow table piece with flow `flow`.
pub fn flow_piece(flow: u32) -> u32 {
    flow / FLOWS_PER_PIECE
}

/// The packets of a set of flows, built from flow table pieces.
pub struct FlowPackets {
    header: FlowTableHeader,
    /// One bit per packet of the segment: marking and then walking the bits
    /// costs less than sorting the lists' packets when many flows are chosen.
    marked: Vec<u64>,
}

impl FlowPackets {
    pub fn new(header: FlowTableHeader) -> FlowPackets {
        FlowPackets { header, marked: vec![0u64; (header.packets as usize).div_ceil(64)] }
    }

    /// Adds the packets of `flows`, ascending flow ids in piece `piece`,
    /// whose stored bytes are `bytes`. A damaged piece is an error.
    pub fn add_piece(&mut self, piece: u32, bytes: &[u8], flows: &[u32]) -> Result<(), String> {
        let count = self.header.flows_in_piece(piece);
        if count == 0 {
            return Err(format!("piece {piece} is past the {} flows of the table", self.header.flows));
        }
        match bytes.first() {
            Some(&FLOW_TABLE_VERSION) => {}
            Some(&version) => return Err(format!("piece {piece} has version {version}, not {FLOW_TABLE_VERSION}")),
            None => return Err(format!("piece {piece} is empty")),
        }

        // The end of each flow's list within the lists.
        let mut pos = 1;
        let mut ends = [0usize; FLOWS_PER_PIECE as usize];
        let mut end = 0usize;
        for slot in ends.iter_mut().take(count as usize) {
            let length = read_varint(bytes, &mut pos).ok_or_else(|| format!("piece {piece} has a cut list length"))?;
            end = end.saturating_add(usize::try_from(length).unwrap_or(usize::MAX));
            *slot = end;
        }
        let lists = &bytes[pos..];
        if end != lists.len() {
            return Err(format!("piece {piece} lists {end} bytes of packets but holds {}", lists.len()));
        }

        let first_flow = piece * FLOWS_PER_PIECE;
        for &flow in flows {
            let slot = flow.checked_sub(first_flow).filter(|&slot| slot < count).ok_or_else(|| {
                format!("flow {flow} is not in piece {piece} of a table with {} flows", self.header.flows)
            })? as usize;
            let start = if slot == 0 { 0 } else { ends[slot - 1] };
            self.add_list(flow, &lists[start..ends[slot]])?;
        }
        Ok(())
    }

    fn add_list(&mut self, flow: u32, list: &[u8]) -> Result<(), String> {
        let packets = self.header.packets;
        let mut value = 0u32;
        let mut delta = 0u32;
        let mut shift = 0u32;
        for &byte in list {
            if shift > 28 {
                return Err(format!("the list of flow {flow} has an overlong number"));
            }
            delta |= u32::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                value = value.wrapping_add(delta);
                if value >= packets {
                    return Err(format!("flow {flow} lists packet {value} of {packets}"));
                }
                let (word, bit) = ((value / 64) as usize, value % 64);
                if self.marked[word] & (1 << bit) != 0 {
                    return Err(format!("packet {value} is listed twice"));
                }
                self.marked[word] |= 1 << bit;
                delta = 0;
                shift = 0;
            } else {
                shift += 7;
            }
        }
        if shift != 0 {
            return Err(format!("the list of flow {flow} ends inside a number"));
        }
        Ok(())
    }

    /// Returns the packets added. roaring builds its containers from the
    /// bytes of the bit set, instead of taking the packets one at a time.
    pub fn into_bitmap(self) -> RoaringBitmap {
        let bytes: Vec<u8> = self.marked.iter().flat_map(|word| word.to_le_bytes()).collect();
        RoaringBitmap::from_lsb0_bytes(0, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes a table from the packet lists of its flows.
    fn encode_lists(lists: &[Vec<u32>]) -> (FlowTableHeader, Vec<Vec<u8>>) {
        let packets: usize = lists.iter().map(Vec::len).sum();
        let mut packet_flows = vec![u32::MAX; packets];
        for (flow, list) in lists.iter().enumerate() {
            for &packet in list {
                packet_flows[packet as usize] = flow as u32;
            }
        }
        let mut pieces = Vec::new();
        let header = encode_flow_table(&packet_flows, lists.len() as u32, |number, bytes| {
            assert_eq!(number as usize, pieces.len());
            pieces.push(bytes.to_vec());
        });
        (header, pieces)
    }

    /// Returns the packets of `flows` from an encoded table.
    fn packets_of(header: FlowTableHeader, pieces: &[Vec<u8>], flows: &[u32]) -> Result<Vec<u32>, String> {
        let mut packets = FlowPackets::new(header);
        for (piece, bytes) in pieces.iter().enumerate() {
            let chosen: Vec<u32> = flows.iter().copied().filter(|&flow| flow_piece(flow) == piece as u32).collect();
            if !chosen.is_empty() {
                packets.add_piece(piece as u32, bytes, &chosen)?;
            }
        }
        Ok(packets.into_bitmap().into_iter().collect())
    }

    #[test]
    fn flow_table_round_trip() {
        // Flow 0 has a gap that needs a three-byte varint; the others gaps of
        // 299, over three pieces.
        let mut lists = vec![vec![0, 99_999]; 1];
        lists.extend(std::iter::repeat_with(Vec::new).take(299));
        for packet in 1..99_999u32 {
            lists[1 + (packet % 299) as usize].push(packet);
        }
        let (header, pieces) = encode_lists(&lists);
        assert_eq!(header, FlowTableHeader::decode(&header.encode()).unwrap());
        assert_eq!(header.flows, 300);
        assert_eq!(pieces.len(), 3);
        let total: usize = lists.iter().map(Vec::len).sum();
        assert_eq!(header.packets as usize, total);
        let chosen = [0, 3, 127, 128, 299];
        let mut expected: Vec<u32> = chosen.iter().flat_map(|&flow| lists[flow as usize].clone()).collect();
        expected.sort_unstable();
        assert_eq!(packets_of(header, &pieces, &chosen).unwrap(), expected);
        let all: Vec<u32> = (0..300).collect();
        assert_eq!(packets_of(header, &pieces, &all).unwrap().len(), total);
    }

    #[test]
    fn damaged_flow_tables_are_errors() {
        assert!(FlowTableHeader::decode(&[2, 2, 0]).is_err());
        assert!(FlowTableHeader::decode(&[9, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let (header, pieces) = encode_lists(&[vec![0, 1], vec![2]]);
        let mut cut = pieces[0].clone();
        cut.truncate(cut.len() - 1);
        assert!(packets_of(header, &[cut], &[0]).is_err());
        let mut version = pieces[0].clone();
        version[0] = 1;
        assert!(packets_of(header, &[version], &[0]).is_err());
        assert!(FlowPackets::new(header).add_piece(0, &pieces[0], &[7]).is_err(), "flow past the table");
        assert!(FlowPackets::new(header).add_piece(1, &pieces[0], &[32]).is_err(), "piece past the table");
        let wrong_count = FlowTableHeader { flows: 2, packets: 2 };
        assert!(packets_of(wrong_count, &pieces, &[1]).is_err(), "packet past the count");
    }
}
