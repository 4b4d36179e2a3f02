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

    /// Encodes the packet lists of the flows (see [`FlowTable`]).
    pub fn encode_flows(&self) -> Vec<u8> {
        FlowTable::encode(&self.packet_flows, self.flow_count())
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

/// Version byte of an encoded [`FlowTable`].
const FLOW_TABLE_VERSION: u8 = 1;

/// The packet lists of a segment's flows, as stored in the index.
///
/// Layout: version byte (1), flow count (`u32` LE), packet count (`u32` LE),
/// then one `u32` LE per flow giving the end of its list relative to the start
/// of the lists, then the lists. A list is the flow's packet numbers,
/// ascending, as LEB128 varints of the difference to the previous number (the
/// first one to 0).
#[derive(Debug, Clone)]
pub struct FlowTable<B = Vec<u8>> {
    bytes: B,
    flows: u32,
    packets: u32,
}

const FLOW_TABLE_HEADER: usize = 9;

impl FlowTable {
    /// Encodes the table of `flows` flows where packet `n` belongs to flow
    /// `packet_flows[n]`.
    pub(crate) fn encode(packet_flows: &[u32], flows: u32) -> Vec<u8> {
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
        let mut ends = Vec::with_capacity(flows as usize * 4);
        let mut lists = Vec::with_capacity(packets * 2);
        for flow in 0..flows as usize {
            let mut previous = 0u32;
            for &packet in &by_flow[starts[flow] as usize..starts[flow + 1] as usize] {
                let mut delta = packet - previous;
                previous = packet;
                while delta >= 0x80 {
                    lists.push((delta as u8) | 0x80);
                    delta >>= 7;
                }
                lists.push(delta as u8);
            }
            ends.extend_from_slice(&(lists.len() as u32).to_le_bytes());
        }
        let mut bytes = Vec::with_capacity(FLOW_TABLE_HEADER + ends.len() + lists.len());
        bytes.push(FLOW_TABLE_VERSION);
        bytes.extend_from_slice(&flows.to_le_bytes());
        bytes.extend_from_slice(&(packets as u32).to_le_bytes());
        bytes.extend_from_slice(&ends);
        bytes.extend_from_slice(&lists);
        bytes
    }
}

impl<B: AsRef<[u8]>> FlowTable<B> {
    /// Checks the header and the table of list ends.
    pub fn decode(bytes: B) -> Result<FlowTable<B>, String> {
        let slice = bytes.as_ref();
        if slice.len() < FLOW_TABLE_HEADER {
            return Err(format!("{} bytes is shorter than the header", slice.len()));
        }
        if slice[0] != FLOW_TABLE_VERSION {
            return Err(format!("flow table version {} is not {FLOW_TABLE_VERSION}", slice[0]));
        }
        let flows = u32::from_le_bytes(slice[1..5].try_into().expect("4 bytes"));
        let packets = u32::from_le_bytes(slice[5..9].try_into().expect("4 bytes"));
        let lists_start = FLOW_TABLE_HEADER + flows as usize * 4;
        let length = slice.len();
        if length < lists_start {
            return Err(format!("{flows} flows do not fit in {length} bytes"));
        }
        let table = FlowTable { bytes, flows, packets };
        if flows > 0 && table.list_end(flows - 1) > length - lists_start {
            return Err("the last flow list runs past the end".into());
        }
        Ok(table)
    }

    pub fn flow_count(&self) -> u32 {
        self.flows
    }

    pub fn packet_count(&self) -> u32 {
        self.packets
    }

    fn list_end(&self, flow: u32) -> usize {
        let at = FLOW_TABLE_HEADER + flow as usize * 4;
        u32::from_le_bytes(self.bytes.as_ref()[at..at + 4].try_into().expect("4 bytes")) as usize
    }

    /// Returns the packets of the flows in `flows`; flow ids past the table
    /// and damaged lists are errors.
    pub fn packets_of(&self, flows: &RoaringBitmap) -> Result<RoaringBitmap, String> {
        if flows.len() == u64::from(self.flows) {
            let mut all = RoaringBitmap::new();
            all.insert_range(0..self.packets);
            return Ok(all);
        }
        let lists_start = FLOW_TABLE_HEADER + self.flows as usize * 4;
        let lists = &self.bytes.as_ref()[lists_start..];
        // One bit per packet of the segment: marking and then walking the
        // bits costs less than sorting the lists' packets when many flows are chosen.
        let mut marked = vec![0u64; (self.packets as usize).div_ceil(64)];
        for flow in flows {
            if flow >= self.flows {
                return Err(format!("flow {flow} is past the {} flows of the table", self.flows));
            }
            let start = if flow == 0 { 0 } else { self.list_end(flow - 1) };
            let end = self.list_end(flow);
            if start > end || end > lists.len() {
                return Err(format!("the list of flow {flow} spans bytes {start}..{end}"));
            }
            let mut value = 0u32;
            let mut delta = 0u32;
            let mut shift = 0u32;
            for &byte in &lists[start..end] {
                if shift > 28 {
                    return Err(format!("the list of flow {flow} has an overlong number"));
                }
                delta |= u32::from(byte & 0x7f) << shift;
                if byte & 0x80 == 0 {
                    value = value.wrapping_add(delta);
                    if value >= self.packets {
                        return Err(format!("flow {flow} lists packet {value} of {}", self.packets));
                    }
                    let (word, bit) = ((value / 64) as usize, value % 64);
                    if marked[word] & (1 << bit) != 0 {
                        return Err(format!("packet {value} is listed twice"));
                    }
                    marked[word] |= 1 << bit;
                    delta = 0;
                    shift = 0;
                } else {
                    shift += 7;
                }
            }
        }
        let packets = marked.iter().enumerate().flat_map(|(word, &bits)| {
            let base = word as u32 * 64;
            let mut bits = bits;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let bit = bits.trailing_zeros();
                bits &= bits - 1;
                Some(base + bit)
            })
        });
        Ok(RoaringBitmap::from_sorted_iter(packets).expect("bits are walked in ascending order"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes a table from the packet lists of its flows.
    fn encode_lists(lists: &[Vec<u32>]) -> Vec<u8> {
        let packets: usize = lists.iter().map(Vec::len).sum();
        let mut packet_flows = vec![u32::MAX; packets];
        for (flow, list) in lists.iter().enumerate() {
            for &packet in list {
                packet_flows[packet as usize] = flow as u32;
            }
        }
        FlowTable::encode(&packet_flows, lists.len() as u32)
    }

    #[test]
    fn flow_table_round_trip() {
        // Flow 0 has a gap that needs a three-byte varint; the others gaps of 3.
        let mut lists = vec![vec![0, 99_999], Vec::new(), Vec::new(), Vec::new()];
        for packet in 1..99_999u32 {
            lists[1 + (packet % 3) as usize].push(packet);
        }
        let table = FlowTable::decode(encode_lists(&lists)).unwrap();
        assert_eq!(table.flow_count(), 4);
        let total: usize = lists.iter().map(Vec::len).sum();
        assert_eq!(table.packet_count() as usize, total);
        let chosen: RoaringBitmap = [0, 3].into_iter().collect();
        let packets: Vec<u32> = table.packets_of(&chosen).unwrap().into_iter().collect();
        let mut expected: Vec<u32> = lists[0].iter().chain(&lists[3]).copied().collect();
        expected.sort_unstable();
        assert_eq!(packets, expected);
        let all: RoaringBitmap = (0..4).collect();
        assert_eq!(table.packets_of(&all).unwrap().len() as usize, total);
    }

    #[test]
    fn damaged_flow_tables_are_errors() {
        assert!(FlowTable::decode(vec![1, 2, 0]).is_err());
        assert!(FlowTable::decode(vec![9, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let mut bytes = FlowTable::encode(&[0, 0], 1);
        bytes.truncate(bytes.len() - 1);
        assert!(FlowTable::decode(bytes).is_err());
        let table = FlowTable::decode(FlowTable::encode(&[0, 1], 2)).unwrap();
        assert!(table.packets_of(&[7].into_iter().collect()).is_err());
    }
}
