//! Index planner: turns a filter into bitmap operations over one segment.
//!
//! The bitmaps are over the segment's flows (see `index`): every packet of a
//! flow has the same keys, so a set of flows stands for the set of their
//! packets, and the operations below mean the same on either. For every
//! sub-expression the planner computes two sets of the segment: `upper`, which contains every packet the sub-expression accepts,
//! and `lower`, which contains only packets it does not reject (it accepts
//! them, or evaluating it would run past the captured bytes and reject the
//! packet for the whole filter). With these definitions
//!
//! * `a and b`: upper = upper(a) ∩ upper(b), lower = lower(a) ∩ lower(b)
//! * `a or b`: upper = upper(a) ∪ upper(b), lower = lower(a) ∪ lower(b)
//! * `not a`: upper = all − lower(a), lower = all − upper(a)
//!
//! keep both bounds true. A primitive the index covers has upper = lower =
//! its bitmap; any other primitive has upper = all and lower = ∅. The
//! candidates of a filter are its upper set; the exact check decides.

use std::net::IpAddr;

use pktvault_schema::keys::Field;
use roaring::RoaringBitmap;

use super::ast::{AddrFamily, Dir, Expr, Primitive};
use crate::Error;

/// Flow bitmaps of one segment.
pub trait BitmapSource {
    /// Number of flows in the segment; flow ids are `0..flow_count`.
    fn flow_count(&self) -> Result<u32, Error>;
    /// Returns the flow bitmap of `field` = `value`, empty when absent.
    fn bitmap(&self, field: Field, value: &[u8]) -> Result<RoaringBitmap, Error>;
    /// Returns the union of the bitmaps of `field` with values in `first..=last`
    /// (values of equal length, compared as bytes).
    fn union_range(&self, field: Field, first: &[u8], last: &[u8]) -> Result<RoaringBitmap, Error>;
}

struct Bounds {
    upper: RoaringBitmap,
    lower: RoaringBitmap,
}

fn all_flows(source: &dyn BitmapSource) -> Result<RoaringBitmap, Error> {
    let mut all = RoaringBitmap::new();
    all.insert_range(0..source.flow_count()?);
    Ok(all)
}

/// Returns the flows of the segment whose packets may match `expr`.
pub fn candidates(expr: &Expr, source: &dyn BitmapSource) -> Result<RoaringBitmap, Error> {
    Ok(bounds(expr, source)?.upper)
}

/// The flows a filter selects in one segment.
pub struct Plan {
    /// Flows whose packets may match.
    pub candidates: RoaringBitmap,
    /// Candidate flows whose packets all match, so they need no exact check.
    pub exact: RoaringBitmap,
}

/// Plans `expr` over a segment. A flow in the lower bound matches unless
/// evaluating the filter runs past a packet's captured bytes, which only
/// packets of [`Field::Truncated`] flows can do, so the lower bound without
/// those flows is exact.
pub fn plan(expr: &Expr, source: &dyn BitmapSource) -> Result<Plan, Error> {
    let bounds = bounds(expr, source)?;
    let exact = bounds.lower - source.bitmap(Field::Truncated, &[])?;
    Ok(Plan { candidates: bounds.upper, exact })
}

/// Returns the flows that may match a filter whose primitives have
/// libpcap's meaning. Negations are not planned: a `not` subtree counts as
/// every packet, so only the monotone part of the filter prunes.
///
/// A primitive also admits the flows whose decode ran past the captured
/// bytes ([`Field::Truncated`]): libpcap's optimizer may drop a load that
/// cannot change the result, as for `net 0.0.0.0/0`, and then accepts a
/// packet whose header the index never saw.
pub fn monotone_candidates(expr: &Expr, source: &dyn BitmapSource) -> Result<RoaringBitmap, Error> {
    let truncated = source.bitmap(Field::Truncated, &[])?;
    monotone(expr, source, &truncated)
}

fn monotone(expr: &Expr, source: &dyn BitmapSource, truncated: &RoaringBitmap) -> Result<RoaringBitmap, Error> {
    Ok(match expr {
        Expr::And(left, right) => monotone(left, source, truncated)? & monotone(right, source, truncated)?,
        Expr::Or(left, right) => monotone(left, source, truncated)? | monotone(right, source, truncated)?,
        Expr::Not(_) => all_flows(source)?,
        Expr::Prim(primitive) => match primitive_bitmap(primitive, source)? {
            Some(bitmap) => bitmap | truncated,
            None => all_flows(source)?,
        },
    })
}

fn bounds(expr: &Expr, source: &dyn BitmapSource) -> Result<Bounds, Error> {
    Ok(match expr {
        Expr::And(left, right) => {
            let left = bounds(left, source)?;
            let right = bounds(right, source)?;
            Bounds { upper: left.upper & right.upper, lower: left.lower & right.lower }
        }
        Expr::Or(left, right) => {
            let left = bounds(left, source)?;
            let right = bounds(right, source)?;
            Bounds { upper: left.upper | right.upper, lower: left.lower | right.lower }
        }
        Expr::Not(inner) => {
            let inner = bounds(inner, source)?;
            let all = all_flows(source)?;
            Bounds { upper: &all - &inner.lower, lower: all - inner.upper }
        }
        Expr::Prim(primitive) => match primitive_bitmap(primitive, source)? {
            Some(bitmap) => Bounds { upper: bitmap.clone(), lower: bitmap },
            None => Bounds { upper: all_flows(source)?, lower: RoaringBitmap::new() },
        },
    })
}

fn by_direction(dir: Dir, src: RoaringBitmap, dst: RoaringBitmap) -> RoaringBitmap {
    match dir {
        Dir::Src => src,
        Dir::Dst => dst,
        Dir::SrcOrDst => src | dst,
        Dir::SrcAndDst => src & dst,
    }
}

/// Looks up `first..=last` (a single value when equal) for a source and a destination field.
fn pair(
    source: &dyn BitmapSource,
    dir: Dir,
    fields: (Field, Field),
    first: &[u8],
    last: &[u8],
) -> Result<RoaringBitmap, Error> {
    let lookup = |field: Field| -> Result<RoaringBitmap, Error> {
        if first == last {
            source.bitmap(field, first)
        } else {
            source.union_range(field, first, last)
        }
    };
    let src = if dir == Dir::Dst { RoaringBitmap::new() } else { lookup(fields.0)? };
    let dst = if dir == Dir::Src { RoaringBitmap::new() } else { lookup(fields.1)? };
    Ok(by_direction(dir, src, dst))
}

fn address_bitmap(
    source: &dyn BitmapSource,
    family: AddrFamily,
    dir: Dir,
    v4: bool,
    first: &[u8],
    last: &[u8],
) -> Result<RoaringBitmap, Error> {
    let mut result = RoaringBitmap::new();
    if !v4 {
        if matches!(family, AddrFamily::Any | AddrFamily::Ip6) {
            result |= pair(source, dir, (Field::Ip6Src, Field::Ip6Dst), first, last)?;
        }
        return Ok(result);
    }
    if matches!(family, AddrFamily::Any | AddrFamily::Ip) {
        result |= pair(source, dir, (Field::Ip4Src, Field::Ip4Dst), first, last)?;
    }
    if matches!(family, AddrFamily::Any | AddrFamily::Arp | AddrFamily::Rarp) {
        let mut arp = pair(source, dir, (Field::ArpSpa, Field::ArpTpa), first, last)?;
        match family {
            AddrFamily::Arp => arp &= source.bitmap(Field::Network, &0x0806u16.to_be_bytes())?,
            AddrFamily::Rarp => arp &= source.bitmap(Field::Network, &0x8035u16.to_be_bytes())?,
            _ => {}
        }
        result |= arp;
    }
    Ok(result)
}

/// Returns the exact bitmap of a primitive, or `None` when the index does not cover it.
fn primitive_bitmap(primitive: &Primitive, source: &dyn BitmapSource) -> Result<Option<RoaringBitmap>, Error> {
    let bitmap = match primitive {
        Primitive::Host { family, dir, addr } => {
            let bytes = match addr {
                IpAddr::V4(addr) => addr.octets().to_vec(),
                IpAddr::V6(addr) => addr.octets().to_vec(),
            };
            address_bitmap(source, *family, *dir, addr.is_ipv4(), &bytes, &bytes)?
        }
        Primitive::Net { family, dir, net } => {
            let (first, last) = net.range_bytes();
            address_bitmap(source, *family, *dir, net.addr.is_ipv4(), &first, &last)?
        }
        Primitive::Port { proto, dir, low, high } => {
            let protos: &[u8] = match proto {
                Some(proto) => std::slice::from_ref(proto),
                None => &[6, 17, 132],
            };
            let mut result = RoaringBitmap::new();
            for proto in protos {
                let first = port_value(*proto, *low);
                let last = port_value(*proto, *high);
                result |= pair(source, *dir, (Field::SrcPort, Field::DstPort), &first, &last)?;
            }
            result
        }
        Primitive::EtherHost { dir, mac } => pair(source, *dir, (Field::EtherSrc, Field::EtherDst), mac, mac)?,
        Primitive::Network(ethertype) => source.bitmap(Field::Network, &ethertype.to_be_bytes())?,
        Primitive::IpProto { v4, v6, proto } => {
            let mut result = RoaringBitmap::new();
            if *v4 {
                result |= source.bitmap(Field::Ip4Proto, &[*proto])?;
            }
            if *v6 {
                result |= source.bitmap(Field::Ip6NextHeader, &[*proto])?;
            }
            result
        }
        Primitive::Vlan(None) => source.bitmap(Field::VlanAny, &[])?,
        Primitive::Vlan(Some(id)) => source.bitmap(Field::VlanId, &id.to_be_bytes())?,
        Primitive::Mpls(None) => source.bitmap(Field::MplsAny, &[])?,
        Primitive::Mpls(Some(label)) => source.bitmap(Field::MplsLabel, &label.to_be_bytes())?,
        Primitive::Length { .. } => return Ok(None),
    };
    Ok(Some(bitmap))
}

/// Encodes a port key value: the transport protocol, then the port big-endian.
pub fn port_value(proto: u8, port: u16) -> [u8; 3] {
    let port = port.to_be_bytes();
    [proto, port[0], port[1]]
}
