//! Exact evaluation of a filter on one decoded packet.
//!
//! Evaluation goes left to right with short-circuit `and`/`or`, and each
//! primitive reads its fields in the order libpcap's generated code loads
//! them. Reading a field that lies beyond the captured bytes rejects the
//! packet for the whole filter, as an out-of-bounds load does in BPF: that is
//! the [`Truncated`] error, which [`matches`] turns into "no match".

use std::net::IpAddr;

use super::ast::{AddrFamily, Dir, Expr, IpNet, Primitive};
use crate::decode::{Decoded, Ipv6, Network, Ports};

/// A field the filter needed lies beyond the captured bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated;

type Outcome = Result<bool, Truncated>;

/// Returns whether `packet` matches `expr`.
pub fn matches(expr: &Expr, packet: &Decoded) -> bool {
    evaluate(expr, packet) == Ok(true)
}

/// Evaluates `expr`, reporting a needed field beyond the captured bytes as [`Truncated`].
pub fn evaluate(expr: &Expr, packet: &Decoded) -> Outcome {
    match expr {
        Expr::And(left, right) => Ok(evaluate(left, packet)? && evaluate(right, packet)?),
        Expr::Or(left, right) => Ok(evaluate(left, packet)? || evaluate(right, packet)?),
        Expr::Not(inner) => Ok(!evaluate(inner, packet)?),
        Expr::Prim(primitive) => primitive_matches(primitive, packet),
    }
}

/// Tests `test` on the source, the destination or both, loading each only when needed.
fn by_direction<T: Copy>(dir: Dir, src: Option<T>, dst: Option<T>, test: impl Fn(T) -> bool) -> Outcome {
    let src = || src.map(&test).ok_or(Truncated);
    let dst = || dst.map(&test).ok_or(Truncated);
    Ok(match dir {
        Dir::Src => src()?,
        Dir::Dst => dst()?,
        Dir::SrcOrDst => src()? || dst()?,
        Dir::SrcAndDst => src()? && dst()?,
    })
}

fn primitive_matches(primitive: &Primitive, packet: &Decoded) -> Outcome {
    if packet.network == Network::Truncated
        && !matches!(primitive, Primitive::Length { .. } | Primitive::EtherHost { .. })
    {
        // The link header or a tag ends early: libpcap fails its first load.
        return Err(Truncated);
    }
    match primitive {
        Primitive::Host { family, dir, addr } => match addr {
            IpAddr::V4(addr) => ipv4_test(packet, *family, *dir, |bytes: [u8; 4]| bytes == addr.octets()),
            IpAddr::V6(addr) => ipv6_test(packet, *family, *dir, |bytes: [u8; 16]| bytes == addr.octets()),
        },
        Primitive::Net { family, dir, net } => match net.addr {
            IpAddr::V4(_) => ipv4_test(packet, *family, *dir, |bytes: [u8; 4]| in_net(net, &bytes)),
            IpAddr::V6(_) => ipv6_test(packet, *family, *dir, |bytes: [u8; 16]| in_net(net, &bytes)),
        },
        Primitive::Port { proto, dir, low, high } => port_test(packet, *proto, *dir, *low, *high),
        Primitive::EtherHost { dir, mac } => {
            if !packet.link_is_ethernet {
                return Ok(false);
            }
            by_direction(*dir, packet.ether_src, packet.ether_dst, |bytes| bytes == *mac)
        }
        Primitive::Network(ethertype) => Ok(match &packet.network {
            Network::Truncated => return Err(Truncated),
            Network::Ipv4(_) => *ethertype == crate::decode::ETHERTYPE_IPV4,
            Network::Ipv6(_) => *ethertype == crate::decode::ETHERTYPE_IPV6,
            Network::Arp { rarp: false, .. } => *ethertype == crate::decode::ETHERTYPE_ARP,
            Network::Arp { rarp: true, .. } => *ethertype == crate::decode::ETHERTYPE_RARP,
            Network::Other(found) => *found == Some(*ethertype),
        }),
        Primitive::IpProto { v4, v6, proto } => match &packet.network {
            Network::Ipv4(ip) if *v4 => Ok(ip.proto.ok_or(Truncated)? == *proto),
            Network::Ipv6(ip) if *v6 => ipv6_has_proto(ip, *proto),
            _ => Ok(false),
        },
        Primitive::Vlan(id) => Ok(match id {
            None => !packet.vlans.is_empty(),
            Some(id) => packet.vlans.contains(id),
        }),
        Primitive::Mpls(label) => Ok(match label {
            None => !packet.mpls.is_empty(),
            Some(label) => packet.mpls.contains(label),
        }),
        Primitive::Length { greater: true, bytes } => Ok(packet.wire_len >= *bytes),
        Primitive::Length { greater: false, bytes } => Ok(packet.wire_len <= *bytes),
    }
}

fn in_net(net: &IpNet, bytes: &[u8]) -> bool {
    net.contains_bytes(bytes)
}

fn ipv4_test(packet: &Decoded, family: AddrFamily, dir: Dir, test: impl Fn([u8; 4]) -> bool) -> Outcome {
    match &packet.network {
        Network::Ipv4(ip) if matches!(family, AddrFamily::Any | AddrFamily::Ip) => {
            by_direction(dir, ip.src, ip.dst, test)
        }
        Network::Arp { rarp, spa, tpa }
            if family == AddrFamily::Any
                || (family == AddrFamily::Arp && !rarp)
                || (family == AddrFamily::Rarp && *rarp) =>
        {
            by_direction(dir, *spa, *tpa, test)
        }
        _ => Ok(false),
    }
}

fn ipv6_test(packet: &Decoded, family: AddrFamily, dir: Dir, test: impl Fn([u8; 16]) -> bool) -> Outcome {
    match &packet.network {
        Network::Ipv6(ip) if matches!(family, AddrFamily::Any | AddrFamily::Ip6) => {
            by_direction(dir, ip.src, ip.dst, test)
        }
        _ => Ok(false),
    }
}

fn ipv6_has_proto(ip: &Ipv6, proto: u8) -> Outcome {
    if ip.chain.contains(&proto) {
        return Ok(true);
    }
    // libpcap reads the fixed header's next header, and the fragment header's
    // when the first is 44; either read may fall beyond the captured bytes.
    if ip.chain.is_empty() || (ip.chain_truncated && ip.chain == [44]) {
        return Err(Truncated);
    }
    Ok(false)
}

fn port_allowed(wanted: Option<u8>, found: u8) -> bool {
    match wanted {
        Some(wanted) => wanted == found,
        None => matches!(found, 6 | 17 | 132),
    }
}

fn ports_test(ports: &Ports, dir: Dir, low: u16, high: u16) -> Outcome {
    by_direction(dir, ports.src, ports.dst, |port| low <= port && port <= high)
}

fn port_test(packet: &Decoded, wanted: Option<u8>, dir: Dir, low: u16, high: u16) -> Outcome {
    match &packet.network {
        Network::Ipv4(ip) => {
            let proto = ip.proto.ok_or(Truncated)?;
            if !port_allowed(wanted, proto) {
                return Ok(false);
            }
            if !ip.first_fragment.ok_or(Truncated)? {
                return Ok(false);
            }
            ports_test(&ip.ports, dir, low, high)
        }
        Network::Ipv6(ip) => {
            if ip.chain.is_empty() {
                return Err(Truncated);
            }
            match ip.ports.proto {
                Some(proto) if port_allowed(wanted, proto) => ports_test(&ip.ports, dir, low, high),
                _ => Ok(false),
            }
        }
        _ => Ok(false),
    }
}
