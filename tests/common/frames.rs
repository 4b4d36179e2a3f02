//! Builders of small frames and pcap files for pinned test cases.

use std::path::Path;

pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

/// Builds an Ethernet frame: MACs, then each `(tpid, vlan id)` tag, then `ethertype` and `payload`.
pub fn ethernet(tags: &[(u16, u16)], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&MAC_B);
    frame.extend_from_slice(&MAC_A);
    for (tpid, id) in tags {
        frame.extend_from_slice(&tpid.to_be_bytes());
        frame.extend_from_slice(&id.to_be_bytes());
    }
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Builds a 20-byte IPv4 header followed by `payload`. `fragment` is the
/// flags and fragment-offset field.
pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, fragment: u16, payload: &[u8]) -> Vec<u8> {
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0x12, 0x34]);
    ip.extend_from_slice(&fragment.to_be_bytes());
    ip.extend_from_slice(&[64, proto, 0, 0]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    ip.extend_from_slice(payload);
    ip
}

/// Builds an IPv6 header whose next header is `next`, followed by `rest` (extension headers and payload).
pub fn ipv6(src: [u8; 16], dst: [u8; 16], next: u8, rest: &[u8]) -> Vec<u8> {
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&(rest.len() as u16).to_be_bytes());
    ip.extend_from_slice(&[next, 64]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    ip.extend_from_slice(rest);
    ip
}

/// Builds a UDP header and payload.
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut datagram = Vec::new();
    datagram.extend_from_slice(&sport.to_be_bytes());
    datagram.extend_from_slice(&dport.to_be_bytes());
    datagram.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    datagram.extend_from_slice(&[0, 0]);
    datagram.extend_from_slice(payload);
    datagram
}

/// Builds a 20-byte TCP header with the SYN flag.
pub fn tcp(sport: u16, dport: u16) -> Vec<u8> {
    let mut segment = Vec::new();
    segment.extend_from_slice(&sport.to_be_bytes());
    segment.extend_from_slice(&dport.to_be_bytes());
    segment.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    segment
}

/// Builds an ARP request from `sender` for `target`.
pub fn arp_request(sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&MAC_A);
    arp.extend_from_slice(&sender);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&target);
    ethernet(&[], 0x0806, &arp)
}

/// First timestamp of [`write_pcap`] files: packet `n` is at `BASE_SECS + n` seconds.
pub const BASE_SECS: u32 = 1_600_000_000;

/// Writes an Ethernet microsecond pcap whose packet `n` has timestamp `BASE_SECS + n`.
pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    bytes.extend_from_slice(&2u16.to_le_bytes());
    bytes.extend_from_slice(&4u16.to_le_bytes());
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(&65535u32.to_le_bytes());
    bytes.extend_from_slice(&1u32.to_le_bytes());
    for (number, frame) in frames.iter().enumerate() {
        bytes.extend_from_slice(&(BASE_SECS + number as u32).to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        bytes.extend_from_slice(frame);
    }
    std::fs::write(path, bytes).expect("write test pcap");
}

/// Packet numbers of packets written by [`write_pcap`].
pub fn packet_numbers(packets: &[super::Packet]) -> Vec<u32> {
    packets.iter().map(|packet| (packet.ts_ns / 1_000_000_000) as u32 - BASE_SECS).collect()
}
