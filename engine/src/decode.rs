//! Header decoding for indexing and for the default filter mode.
//!
//! The decoder reads the same bytes at the same offsets as libpcap's generated
//! BPF code does, so filters agree with tcpdump on untagged traffic, even on
//! malformed headers. An IPv4 header is not validated, ports are read at
//! `4 * IHL` even when IHL is below 5, and ARP addresses are read at fixed
//! offsets. Unlike libpcap, the decoder walks through VLAN tags, MPLS labels
//! and IPv6 extension headers. A field beyond the captured bytes is `None`,
//! and the filter evaluator rejects a packet when it reads such a field, as
//! libpcap does on an out-of-bounds load.
//!
//! A hand-written decoder is used instead of a parsing library because
//! libraries validate headers (and drop malformed ones) where libpcap does not,
//! and because MPLS, SLL2 and the BSD loopback headers must be handled too.

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of RARP.
pub const ETHERTYPE_RARP: u16 = 0x8035;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;
const ETHERTYPE_MPLS: u16 = 0x8847;
const ETHERTYPE_MPLS_MULTICAST: u16 = 0x8848;

/// IP protocol numbers that carry ports.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_SCTP: u8 = 132;

/// Most VLAN tags or MPLS labels recorded per packet; deeper ones are skipped.
const MAX_TAGS: usize = 8;

/// LINKTYPE values (the value in a pcap header) that the decoder understands.
pub mod linktype {
    pub const NULL: u32 = 0;
    pub const ETHERNET: u32 = 1;
    pub const PPP: u32 = 9;
    pub const RAW_BSD: u32 = 12;
    pub const RAW_OPENBSD: u32 = 14;
    pub const PPP_HDLC: u32 = 50;
    pub const RAW: u32 = 101;
    pub const C_HDLC: u32 = 104;
    pub const LOOP: u32 = 108;
    pub const LINUX_SLL: u32 = 113;
    pub const IPV4: u32 = 228;
    pub const IPV6: u32 = 229;
    pub const LINUX_SLL2: u32 = 276;
}

/// Returns whether the decoder understands `linktype` (FCS bits ignored).
pub fn is_decoded_linktype(linktype: u32) -> bool {
    use linktype::*;
    matches!(
        linktype & 0x03ff_ffff,
        NULL | ETHERNET
            | PPP
            | RAW_BSD
            | RAW_OPENBSD
            | PPP_HDLC
            | RAW
            | C_HDLC
            | LOOP
            | LINUX_SLL
            | IPV4
            | IPV6
            | LINUX_SLL2
    )
}

/// The network layer found after the link header, tags and labels.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Network {
    /// The packet ends before the network layer's type is known.
    #[default]
    Truncated,
    /// The link type is not decoded, or the payload is neither IP nor ARP.
    Other(Option<u16>),
    Ipv4(Ipv4),
    Ipv6(Ipv6),
    /// ARP (`rarp` is false) or RARP (`rarp` is true).
    Arp {
        rarp: bool,
        spa: Option<[u8; 4]>,
        tpa: Option<[u8; 4]>,
    },
}

/// IPv4 header fields, each `None` when beyond the captured bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ipv4 {
    pub proto: Option<u8>,
    /// Whether the fragment offset is zero.
    pub first_fragment: Option<bool>,
    pub src: Option<[u8; 4]>,
    pub dst: Option<[u8; 4]>,
    /// Ports, read only when `proto` is TCP, UDP or SCTP and this is a first fragment.
    pub ports: Ports,
}

/// IPv6 header fields, each `None` when beyond the captured bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ipv6 {
    pub src: Option<[u8; 16]>,
    pub dst: Option<[u8; 16]>,
    /// Next-header values of the fixed header and of each extension header walked.
    pub chain: Vec<u8>,
    /// Whether the chain walk stopped at the end of the captured bytes.
    pub chain_truncated: bool,
    pub ports: Ports,
}

/// Transport ports of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ports {
    /// Transport protocol the ports belong to; `None` when the packet has no ports.
    pub proto: Option<u8>,
    pub src: Option<u16>,
    pub dst: Option<u16>,
}

/// Decoded headers of one packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decoded {
    /// Whether the link type is Ethernet, so that MAC addresses apply.
    pub link_is_ethernet: bool,
    /// Ethernet destination and source MAC, for Ethernet link types.
    pub ether_dst: Option<[u8; 6]>,
    pub ether_src: Option<[u8; 6]>,
    /// VLAN ids, outermost first.
    pub vlans: Vec<u16>,
    /// MPLS labels, outermost first.
    pub mpls: Vec<u32>,
    pub network: Network,
    /// Original length of the packet on the wire.
    pub wire_len: u32,
}

impl Decoded {
    /// Returns whether the captured bytes end before a field the filter
    /// evaluator may read, so that a filter can reject the packet for
    /// reading past them. False for a packet whose link type is not decoded.
    pub fn ran_past_capture(&self) -> bool {
        let ports_cut = |ports: &Ports| ports.proto.is_some() && (ports.src.is_none() || ports.dst.is_none());
        if self.link_is_ethernet && (self.ether_dst.is_none() || self.ether_src.is_none()) {
            return true;
        }
        match &self.network {
            Network::Truncated => true,
            Network::Other(_) => false,
            Network::Ipv4(ip) => {
                ip.proto.is_none()
                    || ip.first_fragment.is_none()
                    || ip.src.is_none()
                    || ip.dst.is_none()
                    || ports_cut(&ip.ports)
            }
            Network::Ipv6(ip) => {
                ip.src.is_none()
                    || ip.dst.is_none()
                    || ip.chain.is_empty()
                    || ip.chain_truncated
                    || ports_cut(&ip.ports)
            }
            Network::Arp { spa, tpa, .. } => spa.is_none() || tpa.is_none(),
        }
    }
}

fn be16(data: &[u8], offset: usize) -> Option<u16> {
    let bytes = data.get(offset..offset.checked_add(2)?)?;
    Some(u16::from_be_bytes([bytes[0], bytes[1]]))
}

fn array<const N: usize>(data: &[u8], offset: usize) -> Option<[u8; N]> {
    data.get(offset..offset.checked_add(N)?)?.try_into().ok()
}

/// Decodes `data`, the captured bytes of a packet of `linktype`.
pub fn decode(linktype: u32, data: &[u8], wire_len: u32) -> Decoded {
    let mut decoded = Decoded { wire_len, ..Decoded::default() };
    decoded.network = match linktype & 0x03ff_ffff {
        linktype::ETHERNET => {
            decoded.link_is_ethernet = true;
            decoded.ether_dst = array(data, 0);
            decoded.ether_src = array(data, 6);
            decode_ethertype(data, 12, &mut decoded)
        }
        linktype::LINUX_SLL => decode_ethertype(data, 14, &mut decoded),
        linktype::LINUX_SLL2 => decode_sll2(data, &mut decoded),
        linktype::NULL => decode_null(data, false),
        linktype::LOOP => decode_null(data, true),
        linktype::RAW | linktype::RAW_BSD | linktype::RAW_OPENBSD => decode_by_version(data, 0),
        linktype::IPV4 => decode_ipv4(data, 0),
        linktype::IPV6 => decode_ipv6(data, 0),
        linktype::PPP | linktype::PPP_HDLC => decode_ppp(data, &mut decoded),
        linktype::C_HDLC => decode_ethertype(data, 2, &mut decoded),
        _ => Network::Other(None),
    };
    decoded
}

fn decode_sll2(data: &[u8], decoded: &mut Decoded) -> Network {
    // SLL2 puts the protocol type first and the payload after a 20-byte header.
    match be16(data, 0) {
        None => Network::Truncated,
        Some(ethertype) => decode_payload(data, ethertype, 20, decoded),
    }
}

/// Decodes the BSD loopback header: a 4-byte address family, in the capturing
/// host's byte order for `NULL` and big-endian for `LOOP`.
fn decode_null(data: &[u8], big_endian: bool) -> Network {
    let Some(bytes) = array::<4>(data, 0) else {
        return Network::Truncated;
    };
    let family = if big_endian {
        u32::from_be_bytes(bytes)
    } else {
        // The file does not record the capturing host's byte order. A family
        // number is small, so the byte order that yields a small value is used.
        let little = u32::from_le_bytes(bytes);
        if little <= 0xffff {
            little
        } else {
            u32::from_be_bytes(bytes)
        }
    };
    match family {
        2 => decode_ipv4(data, 4),
        24 | 28 | 30 => decode_ipv6(data, 4),
        _ => Network::Other(None),
    }
}

fn decode_ppp(data: &[u8], decoded: &mut Decoded) -> Network {
    match be16(data, 2) {
        None => Network::Truncated,
        Some(0x0021) => decode_ipv4(data, 4),
        Some(0x0057) => decode_ipv6(data, 4),
        Some(0x0281) | Some(0x0283) => decode_mpls(data, 4, decoded),
        Some(_) => Network::Other(None),
    }
}

fn decode_ethertype(data: &[u8], offset: usize, decoded: &mut Decoded) -> Network {
    match be16(data, offset) {
        None => Network::Truncated,
        Some(ethertype) => decode_payload(data, ethertype, offset + 2, decoded),
    }
}

/// Decodes what follows an EtherType, walking VLAN tags and MPLS labels.
fn decode_payload(data: &[u8], mut ethertype: u16, mut offset: usize, decoded: &mut Decoded) -> Network {
    loop {
        match ethertype {
            ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD => {
                let (Some(tci), Some(inner)) = (be16(data, offset), be16(data, offset + 2)) else {
                    return Network::Truncated;
                };
                if decoded.vlans.len() < MAX_TAGS {
                    decoded.vlans.push(tci & 0x0fff);
                }
                ethertype = inner;
                offset += 4;
            }
            ETHERTYPE_MPLS | ETHERTYPE_MPLS_MULTICAST => return decode_mpls(data, offset, decoded),
            ETHERTYPE_IPV4 => return decode_ipv4(data, offset),
            ETHERTYPE_IPV6 => return decode_ipv6(data, offset),
            ETHERTYPE_ARP | ETHERTYPE_RARP => {
                return Network::Arp {
                    rarp: ethertype == ETHERTYPE_RARP,
                    spa: array(data, offset + 14),
                    tpa: array(data, offset + 24),
                }
            }
            other => return Network::Other(Some(other)),
        }
    }
}

fn decode_mpls(data: &[u8], mut offset: usize, decoded: &mut Decoded) -> Network {
    loop {
        let Some(entry) = array::<4>(data, offset) else {
            return Network::Truncated;
        };
        let entry = u32::from_be_bytes(entry);
        if decoded.mpls.len() < MAX_TAGS {
            decoded.mpls.push(entry >> 12);
        }
        offset += 4;
        if entry & 0x100 != 0 {
            break;
        }
    }
    // MPLS does not name its payload; the IP version nibble decides.
    decode_by_version(data, offset)
}

fn decode_by_version(data: &[u8], offset: usize) -> Network {
    match data.get(offset).map(|byte| byte >> 4) {
        None => Network::Truncated,
        Some(4) => decode_ipv4(data, offset),
        Some(6) => decode_ipv6(data, offset),
        Some(_) => Network::Other(None),
    }
}

fn decode_ipv4(data: &[u8], offset: usize) -> Network {
    let proto = data.get(offset + 9).copied();
    let first_fragment = be16(data, offset + 6).map(|flags| flags & 0x1fff == 0);
    let mut ip =
        Ipv4 { proto, first_fragment, src: array(data, offset + 12), dst: array(data, offset + 16), ..Ipv4::default() };
    if let (Some(proto @ (IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP)), Some(true)) = (proto, first_fragment) {
        // libpcap reads the header length without checking it against 5.
        let header_len = usize::from(data[offset] & 0x0f) * 4;
        ip.ports = read_ports(data, offset + header_len, proto);
    }
    Network::Ipv4(ip)
}

fn read_ports(data: &[u8], offset: usize, proto: u8) -> Ports {
    Ports { proto: Some(proto), src: be16(data, offset), dst: be16(data, offset + 2) }
}

fn decode_ipv6(data: &[u8], offset: usize) -> Network {
    let mut ip = Ipv6 { src: array(data, offset + 8), dst: array(data, offset + 24), ..Ipv6::default() };
    let Some(mut next) = data.get(offset + 6).copied() else {
        ip.chain_truncated = true;
        return Network::Ipv6(ip);
    };
    ip.chain.push(next);
    let mut header = offset + 40;
    loop {
        let (following, length, more) = match next {
            // Hop-by-hop, routing and destination options: length in 8-octet units, first 8 excluded.
            0 | 43 | 60 => match (data.get(header), data.get(header + 1)) {
                (Some(&following), Some(&units)) => (following, (usize::from(units) + 1) * 8, true),
                _ => {
                    ip.chain_truncated = true;
                    break;
                }
            },
            // Fragment header: later fragments carry no upper-layer header.
            44 => match (data.get(header), be16(data, header + 2)) {
                (Some(&following), Some(offset_flags)) => (following, 8, offset_flags & 0xfff8 == 0),
                _ => {
                    ip.chain_truncated = true;
                    break;
                }
            },
            // Authentication header: length in 4-octet units, first 8 excluded.
            51 => match (data.get(header), data.get(header + 1)) {
                (Some(&following), Some(&units)) => (following, (usize::from(units) + 2) * 4, true),
                _ => {
                    ip.chain_truncated = true;
                    break;
                }
            },
            IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => {
                ip.ports = read_ports(data, header, next);
                break;
            }
            _ => break,
        };
        ip.chain.push(following);
        if !more || ip.chain.len() > 16 {
            break;
        }
        next = following;
        header += length;
    }
    Network::Ipv6(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0xaa; 6];
        frame.extend_from_slice(&[0xbb; 6]);
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    fn ipv4_udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, frag: u16) -> Vec<u8> {
        let mut ip = vec![0x45, 0, 0, 28, 0, 1];
        ip.extend_from_slice(&frag.to_be_bytes());
        ip.extend_from_slice(&[64, IPPROTO_UDP, 0, 0]);
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        ip.extend_from_slice(&sport.to_be_bytes());
        ip.extend_from_slice(&dport.to_be_bytes());
        ip.extend_from_slice(&[0, 8, 0, 0]);
        ip
    }

    #[test]
    fn qinq_frame_reaches_ports() {
        let inner = ipv4_udp([192, 0, 2, 1], [192, 0, 2, 2], 1000, 53, 0);
        let mut tagged = vec![0x00, 100, 0x81, 0x00, 0x00, 10, 0x08, 0x00];
        tagged.extend_from_slice(&inner);
        let frame = ethernet(ETHERTYPE_QINQ, &tagged);
        let decoded = decode(linktype::ETHERNET, &frame, frame.len() as u32);
        assert_eq!(decoded.vlans, vec![100, 10]);
        let Network::Ipv4(ip) = decoded.network else { panic!("not IPv4: {:?}", decoded.network) };
        assert_eq!(ip.ports, Ports { proto: Some(IPPROTO_UDP), src: Some(1000), dst: Some(53) });
    }

    #[test]
    fn later_fragment_has_no_ports() {
        let frame = ethernet(ETHERTYPE_IPV4, &ipv4_udp([1, 1, 1, 1], [2, 2, 2, 2], 80, 80, 0x0010));
        let decoded = decode(linktype::ETHERNET, &frame, frame.len() as u32);
        let Network::Ipv4(ip) = decoded.network else { panic!("not IPv4") };
        assert_eq!(ip.first_fragment, Some(false));
        assert_eq!(ip.ports.proto, None);
    }

    #[test]
    fn truncated_ethernet_is_truncated() {
        let decoded = decode(linktype::ETHERNET, &[0; 13], 60);
        assert_eq!(decoded.network, Network::Truncated);
    }

    #[test]
    fn ipv6_hop_by_hop_then_udp() {
        let mut ip = vec![0x60, 0, 0, 0, 0, 16, 0, 64];
        ip.extend_from_slice(&[0x20; 16]);
        ip.extend_from_slice(&[0x30; 16]);
        ip.extend_from_slice(&[IPPROTO_UDP, 0, 1, 4, 0, 0, 0, 0]);
        ip.extend_from_slice(&[0x1f, 0x40, 0x1f, 0x41, 0, 8, 0, 0]);
        let decoded = decode(linktype::IPV6, &ip, ip.len() as u32);
        let Network::Ipv6(ip) = decoded.network else { panic!("not IPv6") };
        assert_eq!(ip.chain, vec![0, IPPROTO_UDP]);
        assert_eq!(ip.ports.src, Some(8000));
        assert_eq!(ip.ports.dst, Some(8001));
    }
}
