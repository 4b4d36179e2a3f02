//! Differential tests: `pktvault extract` against tcpdump on the shared
//! corpus of real captures.
//!
//! The reference for the default filter language is tcpdump applied to a
//! normalized copy of each capture. The copy lacks the headers that
//! pktvault's filters look through: VLAN tags, MPLS labels, IPv6 hop-by-hop,
//! routing, destination-options and authentication headers, and the fragment
//! header of a first fragment. Each packet of the copy carries its
//! index as its timestamp, so tcpdump's selection maps back to the original
//! packets, which pktvault must return with original bytes and timestamps,
//! sorted by time. libpcap mode is compared with tcpdump on the original files.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use pktvault_engine::decode::{decode, Network};

/// Captures of the corpus used by the default-language comparison.
const CAPTURES: &[&str] = &[
    "tls_browsing_167_hosts.pcap",
    "ipfrag_nfs_sctp_lab.pcap",
    "http_650_responses.pcap",
    "dns_mdns_llmnr.pcap",
    "sll_mptcp.pcap",
    "sll_sctp_forces.pcap",
    "sll2_small.pcap",
    "rawip_101_ipv6_http.pcap",
    "rawip_12_ipv6_http.pcap",
    "rawip4_228.pcap",
    "rawip6_229_mobility.pcap",
    "null_loopback_http2.pcap",
    "null_quic_trunc_snap256.pcap",
    "ns_bigendian_http.pcap",
    "ns_sll_tcp_handshake.pcap",
    "pptp_gre_bigendian.pcap",
    "vlan_8021q_cdp.pcap",
    "qinq_8021ad.pcap",
    "mpls_basic.pcap",
    "ppp_mpls_traceroute.pcap",
    "chdlc_cdp_slarp.pcap",
    "trunc_snaplen69.pcap",
    "malformed_arp_2282.pcap",
    "ipv4_fragments_nfs.pcap",
    "ipv6_fragments.pcap",
    "ipv6_ext_options.pcap",
    "ipv6_srv6_srh.pcap",
    "routing_mix_ospf_isis_bgp.pcap",
    "ipv6_icmpv6_ripng.pcap",
    "sctp_m3ua_synthetic.pcap",
    "ts_y2038_bgp.pcap",
    "synthetic_100_protocols.pcap",
];

/// Filter templates. `{A4}`/`{B4}`: the two most frequent IPv4 addresses,
/// `{N4}`: the /24 of `{A4}` and `{S4}` its short form (`192.0.2`),
/// `{A6}`: the most frequent IPv6 address, `{N6}`: its /64,
/// `{P}`/`{Q}`: the two most frequent ports, `{PX}`/`{PO}`: `{P}` in
/// hexadecimal and octal, `{M}`: the most frequent source MAC. A template whose values the capture lacks is skipped.
const FILTERS: &[&str] = &[
    "host {A4}",
    "src host {A4}",
    "dst host {A4}",
    "host {A4} and host {B4}",
    "host {A4} or host {B4}",
    "host {A4} and {B4}",
    "net {N4}/24",
    "not net {N4}/24",
    "ip host {A4}",
    "arp",
    "arp host {A4}",
    "host {A6}",
    "ip6 net {N6}/64",
    "src or dst host {A6}",
    "port {P}",
    "src port {P}",
    "dst port {P}",
    "tcp port {P}",
    "udp port {P}",
    "port {P} or port {Q}",
    "tcp port ({P} or {Q})",
    "not port {P} and not {Q}",
    "portrange 1-1023",
    "portrange 1024-65535",
    "tcp",
    "udp",
    "icmp",
    "icmp6",
    "ip",
    "ip6",
    "sctp",
    "proto 17",
    "ip proto 6",
    "ip6 proto 17",
    "not tcp",
    "tcp and not port {P}",
    "host {A4} and port {P}",
    "(tcp or udp) and not host {A4}",
    "not (host {A4} or port {P})",
    "tcp or udp and host {A4}",
    "! tcp && ! udp",
    "ether host {M}",
    "ether src {M}",
    "src and dst net {N4}/24",
    "rarp",
    "not arp",
    "not ip6",
    "src net {N4}/24",
    "dst net {N4}/24",
    "net {N4} mask 255.255.255.0",
    "net {S4}",
    "ip net {N4}/24",
    "ip6 host {A6}",
    "src host {A6}",
    "dst net {N6}/64",
    "src and dst host {A4}",
    "udp src port {P}",
    "tcp dst port {P}",
    "sctp port {P}",
    "src or dst port {P}",
    "src portrange 1-1023",
    "tcp portrange 1024-65535",
    "udp portrange 1-1023",
    "port {PX}",
    "port {PO}",
    "ether dst {M}",
    "ether src {M} and ip",
    "ether proto 0x0800",
    "ether proto 0x86dd",
    "ip proto 17",
    "ip proto 1",
    "ip6 proto 6",
    "ip6 proto 58",
    "proto 6",
    "ip and not tcp",
    "ip6 and udp",
    "icmp or icmp6",
    "host {A4} and not port {P}",
    "not host {A4} and not host {B4}",
    "(host {A4} or host {B4}) and (port {P} or port {Q})",
    "src host {A4} and dst port {P}",
    "dst host {A4} or src host {B4}",
    "host {A4} || host {B4}",
    "!(udp)",
    "udp && !port 53",
    "tcp and (port {P} or {Q})",
    "((tcp) and ((port {P})))",
];

/// Filters on tags and lengths, which the normalization changes, so they are
/// compared on the original capture.
const ORIGINAL_FILTERS: &[&str] = &["vlan", "not vlan", "mpls", "greater 500", "less 100", "greater 100 and less 200"];

fn be16(data: &[u8], offset: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*data.get(offset)?, *data.get(offset + 1)?]))
}

/// Removes IPv6 extension headers at the IPv6 header starting at `ip`.
fn strip_ipv6_extensions(data: &mut Vec<u8>, ip: usize) -> u32 {
    let mut removed = 0;
    loop {
        let Some(&next) = data.get(ip + 6) else { return removed };
        let header = ip + 40;
        let (Some(&following), Some(&units)) = (data.get(header), data.get(header + 1)) else { return removed };
        let length = match next {
            0 | 43 | 60 => (usize::from(units) + 1) * 8,
            51 => (usize::from(units) + 2) * 4,
            44 => match be16(data, header + 2) {
                Some(offset) if offset & 0xfff8 == 0 => 8,
                _ => return removed,
            },
            _ => return removed,
        };
        if header + length > data.len() {
            return removed;
        }
        data.drain(header..header + length);
        data[ip + 6] = following;
        removed += length as u32;
    }
}

/// Removes MPLS labels at `offset`, returning the bytes removed and the payload's IP version.
fn strip_mpls(data: &mut Vec<u8>, offset: usize) -> (u32, Option<u8>) {
    let mut removed = 0;
    loop {
        let Some(entry) = data.get(offset..offset + 4) else { return (removed, None) };
        let bottom = entry[2] & 1 == 1;
        data.drain(offset..offset + 4);
        removed += 4;
        if bottom {
            return (removed, data.get(offset).map(|byte| byte >> 4));
        }
    }
}

/// Returns the capture's packet with the headers pktvault looks through removed.
fn normalize(linktype: u32, packet: &Packet) -> Packet {
    let mut data = packet.data.clone();
    let mut removed = 0u32;
    let ethertype_offset = match linktype {
        1 => Some(12),
        113 => Some(14),
        104 => Some(2),
        _ => None,
    };
    let ip_offset = if let Some(at) = ethertype_offset {
        loop {
            match be16(&data, at) {
                Some(0x8100 | 0x88a8 | 0x9100) if data.len() >= at + 6 => {
                    data.drain(at..at + 4);
                    removed += 4;
                }
                Some(0x8847 | 0x8848) => {
                    let (bytes, version) = strip_mpls(&mut data, at + 2);
                    removed += bytes;
                    let ethertype: u16 = match version {
                        Some(4) => 0x0800,
                        Some(6) => 0x86dd,
                        _ => break None,
                    };
                    data[at..at + 2].copy_from_slice(&ethertype.to_be_bytes());
                }
                Some(0x86dd) => break Some(at + 2),
                _ => break None,
            }
        }
    } else {
        match linktype {
            9 => match be16(&data, 2) {
                Some(0x0281 | 0x0283) => {
                    let (bytes, version) = strip_mpls(&mut data, 4);
                    removed += bytes;
                    match version {
                        Some(4) => {
                            data[2..4].copy_from_slice(&0x0021u16.to_be_bytes());
                            None
                        }
                        Some(6) => {
                            data[2..4].copy_from_slice(&0x0057u16.to_be_bytes());
                            Some(4)
                        }
                        _ => None,
                    }
                }
                Some(0x0057) => Some(4),
                _ => None,
            },
            276 if be16(&data, 0) == Some(0x86dd) => Some(20),
            0 | 108 if data.get(4).map(|byte| byte >> 4) == Some(6) => Some(4),
            101 | 12 | 229 if data.first().map(|byte| byte >> 4) == Some(6) => Some(0),
            _ => None,
        }
    };
    if let Some(ip) = ip_offset {
        removed += strip_ipv6_extensions(&mut data, ip);
    }
    Packet {
        ts_ns: packet.ts_ns,
        caplen: data.len() as u32,
        wire_len: packet.wire_len.saturating_sub(removed).max(data.len() as u32),
        data,
    }
}

/// Writes a microsecond pcap whose packet `i` has timestamp `i + 1` seconds.
fn write_index_stamped(path: &Path, info: &PcapInfo, packets: &[Packet]) {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    bytes.extend_from_slice(&2u16.to_le_bytes());
    bytes.extend_from_slice(&4u16.to_le_bytes());
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(&info.snaplen.max(262_144).to_le_bytes());
    bytes.extend_from_slice(&info.linktype.to_le_bytes());
    for (index, packet) in packets.iter().enumerate() {
        bytes.extend_from_slice(&(index as u32 + 1).to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&packet.caplen.to_le_bytes());
        bytes.extend_from_slice(&packet.wire_len.to_le_bytes());
        bytes.extend_from_slice(&packet.data);
    }
    std::fs::write(path, bytes).expect("write stamped copy");
}

/// Runs tcpdump on an index-stamped copy; returns the selected indices, or
/// `None` when libpcap cannot compile the filter for the link type.
fn tcpdump_indices(stamped: &Path, filter: &str) -> Option<Vec<usize>> {
    let output =
        Command::new("tcpdump").arg("-r").arg(stamped).args(["-w", "-", filter]).output().expect("run tcpdump");
    if !output.status.success() {
        return None;
    }
    Some(read_pcap(&output.stdout).1.iter().map(|packet| (packet.ts_ns / 1_000_000_000) as usize - 1).collect())
}

/// Frequent values of a capture, for filling filter templates.
fn template_values(linktype: u32, packets: &[Packet]) -> HashMap<&'static str, String> {
    let mut v4: HashMap<[u8; 4], usize> = HashMap::new();
    let mut v6: HashMap<[u8; 16], usize> = HashMap::new();
    let mut ports: HashMap<u16, usize> = HashMap::new();
    let mut macs: HashMap<[u8; 6], usize> = HashMap::new();
    for packet in packets {
        let decoded = decode(linktype, &packet.data, packet.wire_len);
        if let Some(mac) = decoded.ether_src.filter(|_| decoded.link_is_ethernet) {
            *macs.entry(mac).or_default() += 1;
        }
        let ports_of = match &decoded.network {
            Network::Ipv4(ip) => {
                for addr in [ip.src, ip.dst].into_iter().flatten() {
                    *v4.entry(addr).or_default() += 1;
                }
                ip.ports
            }
            Network::Ipv6(ip) => {
                for addr in [ip.src, ip.dst].into_iter().flatten() {
                    *v6.entry(addr).or_default() += 1;
                }
                ip.ports
            }
            _ => continue,
        };
        for port in [ports_of.src, ports_of.dst].into_iter().flatten() {
            *ports.entry(port).or_default() += 1;
        }
    }
    fn top<K: Ord + Copy>(counts: &HashMap<K, usize>, rank: usize) -> Option<K> {
        let mut entries: Vec<(usize, K)> = counts.iter().map(|(key, count)| (*count, *key)).collect();
        entries.sort_by(|a, b| b.cmp(a));
        entries.get(rank).map(|(_, key)| *key)
    }
    let mut values = HashMap::new();
    if let Some(addr) = top(&v4, 0) {
        values.insert("A4", std::net::Ipv4Addr::from(addr).to_string());
        values.insert("N4", std::net::Ipv4Addr::from([addr[0], addr[1], addr[2], 0]).to_string());
        values.insert("S4", format!("{}.{}.{}", addr[0], addr[1], addr[2]));
    }
    if let Some(addr) = top(&v4, 1) {
        values.insert("B4", std::net::Ipv4Addr::from(addr).to_string());
    }
    if let Some(addr) = top(&v6, 0) {
        values.insert("A6", std::net::Ipv6Addr::from(addr).to_string());
        let mut prefix = addr;
        prefix[8..].fill(0);
        values.insert("N6", std::net::Ipv6Addr::from(prefix).to_string());
    }
    if let Some(port) = top(&ports, 0) {
        values.insert("P", port.to_string());
        values.insert("PX", format!("{port:#x}"));
        values.insert("PO", format!("0{port:o}"));
    }
    if let Some(port) = top(&ports, 1) {
        values.insert("Q", port.to_string());
    }
    if let Some(mac) = top(&macs, 0) {
        values.insert("M", mac.iter().map(|byte| format!("{byte:02x}")).collect::<Vec<_>>().join(":"));
    }
    values
}

fn fill(template: &str, values: &HashMap<&'static str, String>) -> Option<String> {
    let mut filter = template.to_string();
    for (name, value) in values {
        filter = filter.replace(&format!("{{{name}}}"), value);
    }
    (!filter.contains('{')).then_some(filter)
}

/// Rewrites `capture` as a nanosecond classic pcap at `output` with tcpdump.
fn convert_with_tcpdump(capture: &Path, output: &Path) -> std::process::Output {
    Command::new("tcpdump")
        .args(["--time-stamp-precision", "nano", "-r"])
        .arg(capture)
        .arg("-w")
        .arg(output)
        .output()
        .expect("run tcpdump")
}

/// Returns the capture's packets, converting pcapng to classic pcap with tcpdump first.
fn original_packets(capture: &Path, work: &Path) -> (PcapInfo, Vec<Packet>, PathBuf) {
    let bytes = std::fs::read(capture).expect("read capture");
    if !bytes.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        let (info, packets) = read_pcap(&bytes);
        return (info, packets, capture.to_path_buf());
    }
    let converted = work.join("original.pcap");
    let status = convert_with_tcpdump(capture, &converted);
    assert!(
        status.status.success(),
        "tcpdump cannot read {}: {}",
        capture.display(),
        String::from_utf8_lossy(&status.stderr)
    );
    let bytes = std::fs::read(&converted).expect("read converted capture");
    let (info, packets) = read_pcap(&bytes);
    (info, packets, converted)
}

#[test]
fn default_language_matches_tcpdump_on_corpus() {
    require_tool("tcpdump");
    assert!(FILTERS.len() + ORIGINAL_FILTERS.len() >= 80);
    let mut compared = 0usize;
    let mut captures_compared = 0usize;
    let mut failures = Vec::new();
    for name in CAPTURES {
        let work = tempfile::tempdir().unwrap();
        let capture = corpus(name);
        let (info, originals, _) = original_packets(&capture, work.path());
        let data_dir = work.path().join("data");
        import(&data_dir, &[&capture]);
        let stamped = work.path().join("stamped.pcap");
        let normalized: Vec<Packet> = originals.iter().map(|packet| normalize(info.linktype, packet)).collect();
        write_index_stamped(&stamped, &info, &normalized);
        let stamped_original = work.path().join("stamped_original.pcap");
        write_index_stamped(&stamped_original, &info, &originals);
        let values = template_values(info.linktype, &originals);
        let filters = FILTERS.iter().filter_map(|template| fill(template, &values)).map(|filter| (filter, &stamped));
        let original_filters = ORIGINAL_FILTERS.iter().map(|filter| (filter.to_string(), &stamped_original));
        let mut compared_here = 0;
        for (filter, reference) in filters.chain(original_filters) {
            let Some(indices) = tcpdump_indices(reference, &filter) else { continue };
            let expected = sort_by_time(indices.iter().map(|&index| originals[index].clone()).collect());
            let (_, actual) = extract_all(&data_dir, &filter, false);
            compared += 1;
            compared_here += 1;
            if expected != actual {
                failures.push(format!(
                    "{name} '{filter}': tcpdump selects {} packets, pktvault returns {}",
                    expected.len(),
                    actual.len()
                ));
            }
        }
        if compared_here > 0 {
            captures_compared += 1;
        }
    }
    assert!(failures.is_empty(), "{} of {compared} comparisons differ:\n{}", failures.len(), failures.join("\n"));
    assert!(captures_compared >= 10, "only {captures_compared} captures were compared");
    assert!(compared >= 300, "only {compared} comparisons ran");
}

/// Filters for libpcap mode, including syntax the default language lacks.
const BPF_FILTERS: &[&str] = &[
    "",
    "ip",
    "ip6",
    "tcp",
    "udp and not port 53",
    "tcp[tcpflags] & tcp-syn != 0",
    "len > 1000",
    "greater 64",
    "less 80",
    "vlan and ip",
    "not ip and not ip6",
    "icmp or icmp6",
    "ip[8] < 64",
    "port 80 or port 443",
];

#[test]
fn libpcap_mode_matches_tcpdump_on_corpus() {
    require_tool("tcpdump");
    let mut compared = 0usize;
    let mut failures = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir()).unwrap().map(|entry| entry.unwrap().path()).collect();
    files.sort();
    // libpcap cuts a record longer than the file's snaplen down to the snaplen
    // when reading; pktvault keeps every captured byte. This file has such a record.
    let longer_than_snaplen = ["wpan_802154_bigendian.pcap"];
    let captures = files.iter().filter(|path| {
        path.extension().is_some_and(|ext| ext == "pcap" || ext == "pcapng")
            && !longer_than_snaplen.iter().any(|name| path.ends_with(name))
    });
    for capture in captures {
        let work = tempfile::tempdir().unwrap();
        let converted = work.path().join("original.pcap");
        let readable = convert_with_tcpdump(capture, &converted);
        if !readable.status.success() {
            // libpcap cannot read it (several link types in one pcapng, unknown link types).
            continue;
        }
        let data_dir = work.path().join("data");
        let import_output = pktvault(&["import", "--data-dir", data_dir.to_str().unwrap(), capture.to_str().unwrap()]);
        assert_eq!(
            import_output.status.code(),
            Some(0),
            "import {}: {}",
            capture.display(),
            String::from_utf8_lossy(&import_output.stderr)
        );
        let (_, originals) = read_pcap(&std::fs::read(&converted).unwrap());
        for filter in BPF_FILTERS {
            let output = Command::new("tcpdump")
                .args(["--time-stamp-precision", "nano", "-r"])
                .arg(capture)
                .args(["-w", "-", filter])
                .output()
                .unwrap();
            if !output.status.success() {
                continue;
            }
            let expected = sort_by_time(read_pcap(&output.stdout).1);
            let (_, actual) = extract_all(&data_dir, filter, true);
            compared += 1;
            // pktvault skips packets whose timestamps a pcap cannot hold; none of these captures has one.
            if expected != actual {
                failures.push(format!(
                    "{} --bpf '{filter}': tcpdump selects {} of {}, pktvault returns {}",
                    capture.file_name().unwrap().to_string_lossy(),
                    expected.len(),
                    originals.len(),
                    actual.len()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {compared} comparisons differ:\n{}", failures.len(), failures.join("\n"));
    assert!(compared >= 200, "only {compared} comparisons ran");
}
