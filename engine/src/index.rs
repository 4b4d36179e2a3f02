//! Index keys of a packet and the in-memory bitmaps of an open segment.
//!
//! [`for_each_key`] and the planner in `filter::plan` must agree: a packet is
//! in the bitmap of a key exactly when the primitive that reads that key
//! accepts it (see the bounds in `filter::plan`).

use pktvault_schema::keys::Field;
use roaring::RoaringBitmap;
use rustc_hash::FxHashMap;

use crate::decode::{Decoded, Network, Ports, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_RARP};
use crate::filter::plan::port_value;

/// Calls `visit` with every index key of `packet`.
pub fn for_each_key(packet: &Decoded, mut visit: impl FnMut(Field, &[u8])) {
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

/// Bitmaps of the packets of one segment, built while the segment is written.
///
/// The keys are hashed with FxHash rather than SipHash: they come from packet
/// headers, but a flood of distinct keys costs memory whatever the hash, and
/// SipHash took a fifth of the import time.
#[derive(Debug, Default)]
pub struct SegmentIndex {
    bitmaps: FxHashMap<(Field, KeyValue), RoaringBitmap>,
}

impl SegmentIndex {
    /// Adds packet number `packet` of the segment under every key of `decoded`.
    /// Packets are numbered in ascending order, so each goes at the end of
    /// its bitmaps.
    pub fn add(&mut self, packet: u32, decoded: &Decoded) {
        for_each_key(decoded, |field, value| {
            let bitmap = self.bitmaps.entry((field, KeyValue::new(value))).or_default();
            if bitmap.try_push(packet).is_err() {
                bitmap.insert(packet);
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

    /// Returns the keys with copies of their bitmaps, optimized for storage.
    pub fn optimized_entries(&self) -> impl Iterator<Item = (Field, KeyValue, RoaringBitmap)> + '_ {
        self.bitmaps.iter().map(|((field, value), bitmap)| {
            let mut bitmap = bitmap.clone();
            bitmap.optimize();
            (*field, *value, bitmap)
        })
    }

    /// Returns the bitmap of a key, for reading an open segment.
    pub fn get(&self, field: Field, value: &[u8]) -> Option<&RoaringBitmap> {
        self.bitmaps.get(&(field, KeyValue::new(value)))
    }

    /// Returns the union of the bitmaps of `field` with values in `first..=last`.
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
