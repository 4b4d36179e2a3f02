//! Syntax tree of the default filter language.

use std::fmt;
use std::net::IpAddr;

/// A filter expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Prim(Primitive),
}

/// The side (source, destination or both) of a packet that a primitive tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Src,
    Dst,
    /// The default: either the source or the destination.
    SrcOrDst,
    SrcAndDst,
}

/// The protocol qualifier of `host` and `net`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrFamily {
    /// No qualifier: IPv4 and ARP/RARP for an IPv4 address, IPv6 for an IPv6 address.
    Any,
    Ip,
    Ip6,
    Arp,
    Rarp,
}

/// An IP network: an address with its host bits clear and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl IpNet {
    /// Returns the first and last address of the network as big-endian bytes.
    pub fn range_bytes(&self) -> (Vec<u8>, Vec<u8>) {
        match self.addr {
            IpAddr::V4(addr) => {
                let base = u32::from(addr);
                let host_mask = if self.prefix_len == 0 { u32::MAX } else { u32::MAX >> self.prefix_len };
                ((base & !host_mask).to_be_bytes().to_vec(), (base | host_mask).to_be_bytes().to_vec())
            }
            IpAddr::V6(addr) => {
                let base = u128::from(addr);
                let host_mask = if self.prefix_len == 0 { u128::MAX } else { u128::MAX >> self.prefix_len };
                ((base & !host_mask).to_be_bytes().to_vec(), (base | host_mask).to_be_bytes().to_vec())
            }
        }
    }

    /// Returns whether `addr` (4 or 16 bytes) lies in the network.
    pub fn contains_bytes(&self, addr: &[u8]) -> bool {
        let (first, last) = self.range_bytes();
        addr.len() == first.len() && first.as_slice() <= addr && addr <= last.as_slice()
    }
}

/// One test on a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Primitive {
    /// `[ip|ip6|arp|rarp] [src|dst] host ADDR`
    Host { family: AddrFamily, dir: Dir, addr: IpAddr },
    /// `[ip|ip6|arp|rarp] [src|dst] net NET`
    Net { family: AddrFamily, dir: Dir, net: IpNet },
    /// `[tcp|udp|sctp] [src|dst] port N` and `portrange A-B`; `proto` is `None` for all three.
    Port { proto: Option<u8>, dir: Dir, low: u16, high: u16 },
    /// `ether [src|dst] host MAC`
    EtherHost { dir: Dir, mac: [u8; 6] },
    /// `ip`, `ip6`, `arp`, `rarp`: the network layer's EtherType.
    Network(u16),
    /// `tcp`, `udp`, `sctp`, `icmp`, `icmp6`, `proto N`, `ip proto N`, `ip6 proto N`.
    IpProto { v4: bool, v6: bool, proto: u8 },
    /// `vlan [ID]`
    Vlan(Option<u16>),
    /// `mpls [LABEL]`
    Mpls(Option<u32>),
    /// `greater N` (`greater` true) or `less N`, on the original packet length.
    Length { greater: bool, bytes: u32 },
}

impl Expr {
    /// Builds `left and right`.
    pub fn and(left: Expr, right: Expr) -> Expr {
        Expr::And(Box::new(left), Box::new(right))
    }

    /// Builds `left or right`.
    pub fn or(left: Expr, right: Expr) -> Expr {
        Expr::Or(Box::new(left), Box::new(right))
    }

    /// Builds `not inner`.
    #[allow(clippy::should_implement_trait)]
    pub fn not(inner: Expr) -> Expr {
        Expr::Not(Box::new(inner))
    }
}

impl fmt::Display for Dir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dir::Src => f.write_str("src "),
            Dir::Dst => f.write_str("dst "),
            Dir::SrcOrDst => Ok(()),
            Dir::SrcAndDst => f.write_str("src and dst "),
        }
    }
}

impl fmt::Display for AddrFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrFamily::Any => Ok(()),
            AddrFamily::Ip => f.write_str("ip "),
            AddrFamily::Ip6 => f.write_str("ip6 "),
            AddrFamily::Arp => f.write_str("arp "),
            AddrFamily::Rarp => f.write_str("rarp "),
        }
    }
}

fn proto_name(proto: u8) -> &'static str {
    match proto {
        6 => "tcp ",
        17 => "udp ",
        132 => "sctp ",
        _ => "",
    }
}

impl fmt::Display for Primitive {
    /// Writes the primitive in the filter language, so that parsing the output
    /// yields the same primitive.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Primitive::Host { family, dir, addr } => write!(f, "{family}{dir}host {addr}"),
            Primitive::Net { family, dir, net } => write!(f, "{family}{dir}net {}/{}", net.addr, net.prefix_len),
            Primitive::Port { proto, dir, low, high } => {
                let proto = proto.map(proto_name).unwrap_or("");
                if low == high {
                    write!(f, "{proto}{dir}port {low}")
                } else {
                    write!(f, "{proto}{dir}portrange {low}-{high}")
                }
            }
            Primitive::EtherHost { dir, mac } => {
                let mac: Vec<String> = mac.iter().map(|byte| format!("{byte:02x}")).collect();
                write!(f, "ether {dir}host {}", mac.join(":"))
            }
            Primitive::Network(0x0800) => f.write_str("ip"),
            Primitive::Network(0x86dd) => f.write_str("ip6"),
            Primitive::Network(0x0806) => f.write_str("arp"),
            Primitive::Network(0x8035) => f.write_str("rarp"),
            Primitive::Network(other) => write!(f, "ether proto {other}"),
            Primitive::IpProto { v4: true, v6: true, proto } => write!(f, "proto {proto}"),
            Primitive::IpProto { v4: true, v6: false, proto } => write!(f, "ip proto {proto}"),
            Primitive::IpProto { v6: true, proto, .. } => write!(f, "ip6 proto {proto}"),
            Primitive::IpProto { proto, .. } => write!(f, "(not proto {proto} and proto {proto})"),
            Primitive::Vlan(None) => f.write_str("vlan"),
            Primitive::Vlan(Some(id)) => write!(f, "vlan {id}"),
            Primitive::Mpls(None) => f.write_str("mpls"),
            Primitive::Mpls(Some(label)) => write!(f, "mpls {label}"),
            Primitive::Length { greater: true, bytes } => write!(f, "greater {bytes}"),
            Primitive::Length { greater: false, bytes } => write!(f, "less {bytes}"),
        }
    }
}

impl fmt::Display for Expr {
    /// Writes the expression fully parenthesized.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::And(left, right) => write!(f, "({left} and {right})"),
            Expr::Or(left, right) => write!(f, "({left} or {right})"),
            Expr::Not(inner) => write!(f, "(not {inner})"),
            Expr::Prim(primitive) => write!(f, "{primitive}"),
        }
    }
}
