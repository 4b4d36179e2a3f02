//! Hard filter cases on small built captures, each with the expected packet
//! numbers in the default language and tcpdump's result in libpcap mode.

mod common;

use common::frames::*;
use common::*;

const A: [u8; 4] = [192, 0, 2, 1];
const B: [u8; 4] = [192, 0, 2, 2];
const C: [u8; 4] = [198, 51, 100, 7];

/// A recorded built capture: its file and data directory.
struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new(frames: &[Vec<u8>]) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let capture = dir.path().join("case.pcap");
        write_pcap(&capture, frames);
        import(&dir.path().join("data"), &[&capture]);
        Case { dir }
    }

    fn capture(&self) -> std::path::PathBuf {
        self.dir.path().join("case.pcap")
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// Packet numbers the default language selects.
    fn select(&self, filter: &str) -> Vec<u32> {
        packet_numbers(&extract_all(&self.data(), filter, false).1)
    }

    /// Asserts that libpcap mode selects what tcpdump selects, and returns it.
    fn select_bpf(&self, filter: &str) -> Vec<u32> {
        let expected = packet_numbers(&tcpdump_select(&self.capture(), filter));
        let actual = packet_numbers(&extract_all(&self.data(), filter, true).1);
        assert_eq!(actual, expected, "libpcap mode '{filter}' differs from tcpdump");
        actual
    }
}

fn tcp_flow_frame(tags: &[(u16, u16)]) -> Vec<u8> {
    ethernet(tags, 0x0800, &ipv4(A, C, 6, 0x4000, &tcp(40000, 80)))
}

#[test]
fn tagged_frames_match_through_tags() {
    let case = Case::new(&[
        tcp_flow_frame(&[]),
        tcp_flow_frame(&[(0x8100, 100)]),
        tcp_flow_frame(&[(0x88a8, 10), (0x8100, 100)]),
    ]);
    assert_eq!(case.select("port 80"), vec![0, 1, 2]);
    assert_eq!(case.select("vlan and port 80"), vec![1, 2]);
    assert_eq!(case.select("vlan 100"), vec![1, 2]);
    assert_eq!(case.select("vlan 10 and vlan 100 and port 80"), vec![2]);
    for filter in ["port 80", "vlan and port 80", "vlan 100", "vlan 10 and vlan 100 and port 80"] {
        case.select_bpf(filter);
    }
    // libpcap reads only the outer tag and the untagged frame's port.
    assert_eq!(case.select_bpf("port 80"), vec![0]);
}

#[test]
fn vlan_disjunction_order_does_not_matter() {
    let frames = [
        ethernet(&[], 0x0800, &ipv4(A, C, 17, 0, &udp(1, 2, &[]))),
        ethernet(&[(0x8100, 100)], 0x0800, &ipv4(A, C, 17, 0, &udp(1, 2, &[]))),
        ethernet(&[], 0x0800, &ipv4(B, C, 17, 0, &udp(1, 2, &[]))),
        ethernet(&[(0x8100, 100)], 0x0800, &ipv4(B, C, 17, 0, &udp(1, 2, &[]))),
        ethernet(&[(0x8100, 200)], 0x0800, &ipv4(A, C, 17, 0, &udp(1, 2, &[]))),
    ];
    let case = Case::new(&frames);
    let first = "(vlan 100 and host 192.0.2.1) or host 192.0.2.2";
    let second = "host 192.0.2.2 or (vlan 100 and host 192.0.2.1)";
    assert_eq!(case.select(first), vec![1, 2, 3]);
    assert_eq!(case.select(second), vec![1, 2, 3]);
    case.select_bpf(first);
    case.select_bpf(second);
}

#[test]
fn port_matches_first_fragment_only() {
    // Three fragments of one UDP datagram to port 8080; the later fragments
    // start with bytes 0x1f90 0x1f90, which read as ports would be 8080.
    let first = ipv4(A, C, 17, 0x2000, &udp(5000, 8080, &[0; 16]));
    let second = ipv4(A, C, 17, 0x2003, &[0x1f, 0x90, 0x1f, 0x90, 0, 0, 0, 0]);
    let third = ipv4(A, C, 17, 0x0004, &[0x1f, 0x90, 0x1f, 0x90, 0, 0, 0, 0]);
    let case =
        Case::new(&[ethernet(&[], 0x0800, &first), ethernet(&[], 0x0800, &second), ethernet(&[], 0x0800, &third)]);
    assert_eq!(case.select("port 8080"), vec![0]);
    assert_eq!(case.select("udp"), vec![0, 1, 2]);
    assert_eq!(case.select_bpf("port 8080"), vec![0]);
}

#[test]
fn ipv6_udp_behind_extension_headers() {
    let src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let dst = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let datagram = udp(1234, 8000, &[1, 2, 3, 4]);
    let mut hop_by_hop = vec![17, 0, 1, 4, 0, 0, 0, 0];
    hop_by_hop.extend_from_slice(&datagram);
    let mut fragment = vec![17, 0, 0, 0, 0, 0, 0, 1];
    fragment.extend_from_slice(&datagram);
    let case = Case::new(&[
        ethernet(&[], 0x86dd, &ipv6(src, dst, 17, &datagram)),
        ethernet(&[], 0x86dd, &ipv6(src, dst, 0, &hop_by_hop)),
        ethernet(&[], 0x86dd, &ipv6(src, dst, 44, &fragment)),
    ]);
    assert_eq!(case.select("udp port 8000"), vec![0, 1, 2]);
    assert_eq!(case.select("ip6 proto 17"), vec![0, 1, 2]);
    assert_eq!(case.select("ip6 proto 0"), vec![1]);
    // libpcap reads ports only right after the fixed header.
    assert_eq!(case.select_bpf("udp port 8000"), vec![0]);
    case.select_bpf("ip6 proto 17");
}

#[test]
fn arp_request_matches_sender_and_target() {
    let case = Case::new(&[arp_request(A, B), ethernet(&[], 0x0800, &ipv4(C, C, 1, 0, &[8, 0, 0, 0]))]);
    assert_eq!(case.select("host 192.0.2.1"), vec![0]);
    assert_eq!(case.select("host 192.0.2.2"), vec![0]);
    assert_eq!(case.select("src host 192.0.2.1"), vec![0]);
    assert_eq!(case.select("dst host 192.0.2.1"), Vec::<u32>::new());
    assert_eq!(case.select("arp host 192.0.2.2"), vec![0]);
    assert_eq!(case.select("ip host 192.0.2.2"), Vec::<u32>::new());
    for filter in ["host 192.0.2.1", "host 192.0.2.2", "arp host 192.0.2.2"] {
        assert_eq!(case.select_bpf(filter), case.select(filter), "{filter}");
    }
}

#[test]
fn portrange_includes_both_edges() {
    let frames: Vec<Vec<u8>> = [999u16, 1000, 2000, 2001]
        .iter()
        .map(|port| ethernet(&[], 0x0800, &ipv4(A, C, 6, 0, &tcp(50000, *port))))
        .collect();
    let case = Case::new(&frames);
    assert_eq!(case.select("portrange 1000-2000"), vec![1, 2]);
    assert_eq!(case.select("portrange 2000-1000"), vec![1, 2]);
    assert_eq!(case.select("dst portrange 2000-2001"), vec![2, 3]);
    assert_eq!(case.select_bpf("portrange 1000-2000"), vec![1, 2]);
}

#[test]
fn short_net_is_a_slash_24() {
    let case = Case::new(&[
        ethernet(&[], 0x0800, &ipv4(A, C, 17, 0, &udp(1, 2, &[]))),
        ethernet(&[], 0x0800, &ipv4([192, 0, 3, 1], C, 17, 0, &udp(1, 2, &[]))),
        ethernet(&[], 0x0800, &ipv4(C, B, 17, 0, &udp(1, 2, &[]))),
    ]);
    assert_eq!(case.select("net 192.0.2"), vec![0, 2]);
    assert_eq!(case.select("net 192.0.2.0/23"), vec![0, 1, 2]);
    assert_eq!(case.select("src net 192.0.2"), vec![0]);
}

#[test]
fn net_with_host_bits_is_an_error() {
    let case = Case::new(&[ethernet(&[], 0x0800, &ipv4(A, C, 17, 0, &udp(1, 2, &[])))]);
    let data = case.data();
    let output = pktvault_expect(
        &["extract", "--data-dir", data.to_str().unwrap(), "--begin", "0", "--end", "1700000000", "net 192.0.2.1/30"],
        2,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("192.0.2.1/30"), "{stderr}");
    assert!(stderr.contains("host bits"), "{stderr}");
    assert!(output.stdout.is_empty(), "no pcap may be written on a filter error");
}

#[test]
fn libpcap_only_syntax_works_in_bpf_mode() {
    let case = Case::new(&[
        ethernet(&[], 0x0800, &ipv4(A, C, 6, 0, &tcp(40000, 80))),
        ethernet(&[], 0x0800, &ipv4(A, C, 17, 0, &udp(1, 2, &[0; 1200]))),
    ]);
    assert_eq!(case.select_bpf("tcp[tcpflags] & tcp-syn != 0"), vec![0]);
    assert_eq!(case.select_bpf("len > 1000"), vec![1]);
    assert_eq!(case.select_bpf("greater 64 and host 192.0.2.1"), vec![1]);
}
