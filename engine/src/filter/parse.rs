//! Parser of the default filter language.
//!
//! The grammar follows libpcap's: `and` and `or` have equal precedence and
//! group from the left, `not` binds tighter, and an address or number without
//! qualifiers takes the qualifiers of the primitive before it
//! (`host 192.0.2.1 or 192.0.2.2`, `tcp port (80 or 443)`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ast::{AddrFamily, Dir, Expr, IpNet, Primitive};

/// Maximum length of a filter, in bytes.
pub const MAX_FILTER_BYTES: usize = 4096;
/// Deepest nesting of parentheses and `not` accepted.
pub const MAX_NESTING_DEPTH: usize = 32;
/// Most primitives accepted in one filter.
pub const MAX_PRIMITIVES: usize = 256;

const SUPPORTED: &str = "supported: host, net (ADDR/LEN, ADDR mask MASK, short IPv4 nets), port, portrange, \
     ether host, vlan, mpls, proto, ip, ip6, arp, rarp, tcp, udp, sctp, icmp, icmp6, greater, less, \
     with src/dst, and/or/not and parentheses";

/// A filter that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter {filter:?} at byte {position}: {message}")]
pub struct FilterError {
    /// The filter text as given.
    pub filter: String,
    /// Byte offset of the offending token.
    pub position: usize,
    /// The problem and the accepted forms.
    pub message: String,
}

impl FilterError {
    /// Renders the filter with a caret under the error position.
    pub fn pointer(&self) -> String {
        let column = self.filter[..self.position.min(self.filter.len())].chars().count();
        format!("  {}\n  {}^", self.filter, " ".repeat(column))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    LParen,
    RParen,
    Not,
    And,
    Or,
    Word(String),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::LParen => f.write_str("'('"),
            Token::RParen => f.write_str("')'"),
            Token::Not => f.write_str("'not'"),
            Token::And => f.write_str("'and'"),
            Token::Or => f.write_str("'or'"),
            Token::Word(word) => write!(f, "'{word}'"),
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '/' | '-' | '_' | '\\')
}

fn tokenize(filter: &str) -> Result<Vec<(usize, Token)>, (usize, String)> {
    let mut tokens = Vec::new();
    let mut chars = filter.char_indices().peekable();
    while let Some(&(position, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '(' {
            chars.next();
            tokens.push((position, Token::LParen));
        } else if c == ')' {
            chars.next();
            tokens.push((position, Token::RParen));
        } else if c == '!' {
            chars.next();
            if chars.peek().map(|&(_, next)| next) == Some('=') {
                return Err((position, arithmetic_hint("!=")));
            }
            tokens.push((position, Token::Not));
        } else if c == '&' || c == '|' {
            chars.next();
            if chars.peek().map(|&(_, next)| next) == Some(c) {
                chars.next();
                tokens.push((position, if c == '&' { Token::And } else { Token::Or }));
            } else {
                return Err((position, arithmetic_hint(&c.to_string())));
            }
        } else if is_word_char(c) {
            let mut word = String::new();
            while let Some(&(_, c)) = chars.peek() {
                if !is_word_char(c) {
                    break;
                }
                word.push(c);
                chars.next();
            }
            let token = match word.as_str() {
                "and" => Token::And,
                "or" => Token::Or,
                "not" => Token::Not,
                _ => Token::Word(word),
            };
            tokens.push((position, token));
        } else if matches!(c, '[' | ']' | '<' | '>' | '=' | '+' | '*' | '%' | '^') {
            return Err((position, arithmetic_hint(&c.to_string())));
        } else {
            return Err((position, format!("unexpected character {c:?}")));
        }
    }
    Ok(tokens)
}

fn arithmetic_hint(symbol: &str) -> String {
    format!(
        "{symbol:?} starts a byte-offset or arithmetic expression, which the default filter language does not have; \
         use libpcap mode (--bpf) for such filters"
    )
}

/// Words of libpcap's filter language that the default language does not
/// have; an error on a filter that uses one points to libpcap mode.
const LIBPCAP_ONLY_WORDS: &[&str] = &[
    "broadcast",
    "multicast",
    "protochain",
    "gateway",
    "atalk",
    "decnet",
    "iso",
    "stp",
    "ipx",
    "netbeui",
    "llc",
    "wlan",
    "type",
    "subtype",
    "pppoed",
    "pppoes",
    "geneve",
    "ifname",
    "rnr",
    "reason",
    "action",
    "inbound",
    "outbound",
    "len",
];

/// Parses `filter` in the default filter language.
pub fn parse(filter: &str) -> Result<Expr, FilterError> {
    parse_default(filter).map_err(|mut err| {
        let libpcap_word = filter
            .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
            .find(|word| LIBPCAP_ONLY_WORDS.contains(word));
        if let Some(word) = libpcap_word {
            if !err.message.contains("--bpf") {
                err.message.push_str(&format!(
                    "; '{word}' belongs to libpcap's filter language, which libpcap mode (--bpf) accepts"
                ));
            }
        }
        err
    })
}

fn parse_default(filter: &str) -> Result<Expr, FilterError> {
    let error = |position: usize, message: String| FilterError { filter: filter.to_string(), position, message };
    if filter.len() > MAX_FILTER_BYTES {
        return Err(error(
            0,
            format!("the filter is {} bytes long; at most {MAX_FILTER_BYTES} bytes are accepted", filter.len()),
        ));
    }
    let tokens = tokenize(filter).map_err(|(position, message)| error(position, message))?;
    if tokens.is_empty() {
        return Err(error(0, "the filter is empty; omit it to select every packet".into()));
    }
    let mut parser = Parser { tokens, position: 0, end: filter.len(), last: None, depth: 0, primitives: 0 };
    let expr = parser.expr().map_err(|(position, message)| error(position, message))?;
    if let Some((position, token)) = parser.tokens.get(parser.position) {
        let message = match token {
            Token::RParen => "unbalanced ')'".to_string(),
            other => format!("expected 'and', 'or' or the end of the filter, found {other}"),
        };
        return Err(error(*position, message));
    }
    Ok(expr)
}

type ParseResult<T> = Result<T, (usize, String)>;

/// Qualifiers of the last primitive, inherited by a bare address or number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Qualifiers {
    proto: Option<ProtoQualifier>,
    dir: Dir,
    kind: Option<Kind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProtoQualifier {
    Ether,
    Ip,
    Ip6,
    Arp,
    Rarp,
    Tcp,
    Udp,
    Sctp,
    Icmp,
    Icmp6,
}

impl ProtoQualifier {
    fn from_word(word: &str) -> Option<ProtoQualifier> {
        Some(match word {
            "ether" | "link" => ProtoQualifier::Ether,
            "ip" => ProtoQualifier::Ip,
            "ip6" => ProtoQualifier::Ip6,
            "arp" => ProtoQualifier::Arp,
            "rarp" => ProtoQualifier::Rarp,
            "tcp" => ProtoQualifier::Tcp,
            "udp" => ProtoQualifier::Udp,
            "sctp" => ProtoQualifier::Sctp,
            "icmp" => ProtoQualifier::Icmp,
            "icmp6" => ProtoQualifier::Icmp6,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            ProtoQualifier::Ether => "ether",
            ProtoQualifier::Ip => "ip",
            ProtoQualifier::Ip6 => "ip6",
            ProtoQualifier::Arp => "arp",
            ProtoQualifier::Rarp => "rarp",
            ProtoQualifier::Tcp => "tcp",
            ProtoQualifier::Udp => "udp",
            ProtoQualifier::Sctp => "sctp",
            ProtoQualifier::Icmp => "icmp",
            ProtoQualifier::Icmp6 => "icmp6",
        }
    }

    /// Returns the primitive a protocol word means when used alone.
    fn alone(self) -> Option<Primitive> {
        Some(match self {
            ProtoQualifier::Ether => return None,
            ProtoQualifier::Ip => Primitive::Network(0x0800),
            ProtoQualifier::Ip6 => Primitive::Network(0x86dd),
            ProtoQualifier::Arp => Primitive::Network(0x0806),
            ProtoQualifier::Rarp => Primitive::Network(0x8035),
            ProtoQualifier::Tcp => Primitive::IpProto { v4: true, v6: true, proto: 6 },
            ProtoQualifier::Udp => Primitive::IpProto { v4: true, v6: true, proto: 17 },
            ProtoQualifier::Sctp => Primitive::IpProto { v4: true, v6: true, proto: 132 },
            ProtoQualifier::Icmp => Primitive::IpProto { v4: true, v6: false, proto: 1 },
            ProtoQualifier::Icmp6 => Primitive::IpProto { v4: false, v6: true, proto: 58 },
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Host,
    Net,
    Port,
    PortRange,
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    position: usize,
    /// Byte length of the filter, reported for errors at its end.
    end: usize,
    last: Option<Qualifiers>,
    depth: usize,
    primitives: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.position).map(|(_, token)| token)
    }

    fn peek_word(&self, offset: usize) -> Option<&str> {
        match self.tokens.get(self.position + offset) {
            Some((_, Token::Word(word))) => Some(word),
            _ => None,
        }
    }

    fn here(&self) -> usize {
        self.tokens.get(self.position).map(|(position, _)| *position).unwrap_or(self.end)
    }

    fn next_word(&mut self, expected: &str) -> ParseResult<(usize, String)> {
        match self.tokens.get(self.position) {
            Some((position, Token::Word(word))) => {
                let found = (*position, word.clone());
                self.position += 1;
                Ok(found)
            }
            Some((position, token)) => Err((*position, format!("expected {expected}, found {token}"))),
            None => Err((self.end, format!("expected {expected}, found the end of the filter"))),
        }
    }

    fn expr(&mut self) -> ParseResult<Expr> {
        let mut left = self.unary()?;
        loop {
            match self.peek() {
                Some(Token::And) => {
                    self.position += 1;
                    let right = self.unary()?;
                    left = Expr::and(left, right);
                }
                Some(Token::Or) => {
                    self.position += 1;
                    let right = self.unary()?;
                    left = Expr::or(left, right);
                }
                _ => return Ok(left),
            }
        }
    }

    fn enter(&mut self) -> ParseResult<()> {
        self.depth += 1;
        if self.depth > MAX_NESTING_DEPTH {
            return Err((
                self.here(),
                format!("nesting is deeper than {MAX_NESTING_DEPTH} levels of parentheses and 'not'"),
            ));
        }
        Ok(())
    }

    fn unary(&mut self) -> ParseResult<Expr> {
        match self.peek() {
            Some(Token::Not) => {
                self.position += 1;
                self.enter()?;
                let inner = self.unary()?;
                self.depth -= 1;
                Ok(Expr::not(inner))
            }
            Some(Token::LParen) => {
                self.position += 1;
                self.enter()?;
                let inner = self.expr()?;
                self.depth -= 1;
                self.close_paren()?;
                Ok(inner)
            }
            Some(Token::Word(_)) => self.primitive(),
            Some(token) => Err((self.here(), format!("expected a primitive, 'not' or '(', found {token}"))),
            None => Err((self.end, "expected a primitive, 'not' or '(', found the end of the filter".into())),
        }
    }

    fn close_paren(&mut self) -> ParseResult<()> {
        match self.peek() {
            Some(Token::RParen) => {
                self.position += 1;
                Ok(())
            }
            Some(token) => Err((self.here(), format!("expected ')', found {token}"))),
            None => Err((self.end, "expected ')', found the end of the filter".into())),
        }
    }

    fn count_primitive(&mut self, position: usize) -> ParseResult<()> {
        self.primitives += 1;
        if self.primitives > MAX_PRIMITIVES {
            return Err((position, format!("the filter has more than {MAX_PRIMITIVES} primitives")));
        }
        Ok(())
    }

    fn primitive(&mut self) -> ParseResult<Expr> {
        let (position, word) = self.next_word("a primitive")?;
        self.count_primitive(position)?;
        match word.as_str() {
            "vlan" => {
                self.last = None;
                let id = self.optional_number(position, 4095, "VLAN id")?;
                Ok(Expr::Prim(Primitive::Vlan(id.map(|id| id as u16))))
            }
            "mpls" => {
                self.last = None;
                let label = self.optional_number(position, 0xf_ffff, "MPLS label")?;
                Ok(Expr::Prim(Primitive::Mpls(label)))
            }
            "greater" | "less" => {
                self.last = None;
                let (number_position, text) = self.next_word("a length in bytes")?;
                let bytes =
                    parse_number(&text, u64::from(u32::MAX), "length").map_err(|message| (number_position, message))?;
                Ok(Expr::Prim(Primitive::Length { greater: word == "greater", bytes: bytes as u32 }))
            }
            "proto" => {
                self.last = None;
                let proto = self.protocol_number()?;
                Ok(Expr::Prim(Primitive::IpProto { v4: true, v6: true, proto }))
            }
            "l7proto" => Err((
                position,
                "'l7proto' needs application-protocol detection, which pktvault does not do; filter on ports instead"
                    .into(),
            )),
            _ => {
                if let Some(proto) = ProtoQualifier::from_word(&word) {
                    self.after_protocol(position, proto)
                } else if let Some(dir) = self.direction(&word)? {
                    let kind = self.kind()?;
                    self.qualified(Qualifiers { proto: None, dir, kind })
                } else if let Some(kind) = kind_from_word(&word) {
                    self.qualified(Qualifiers { proto: None, dir: Dir::SrcOrDst, kind: Some(kind) })
                } else {
                    self.position -= 1;
                    self.primitives -= 1;
                    self.bare_id()
                }
            }
        }
    }

    fn optional_number(&mut self, position: usize, max: u64, what: &str) -> ParseResult<Option<u32>> {
        match self.peek_word(0) {
            Some(text) if text.starts_with(|c: char| c.is_ascii_digit()) => {
                let text = text.to_string();
                let number_position = self.here();
                self.position += 1;
                let value = parse_number(&text, max, what).map_err(|message| (number_position, message))?;
                Ok(Some(value as u32))
            }
            _ => {
                let _ = position;
                Ok(None)
            }
        }
    }

    fn protocol_number(&mut self) -> ParseResult<u8> {
        let (position, text) = self.next_word("a protocol number")?;
        let name = text.trim_start_matches('\\');
        let number = match name {
            "icmp" => 1,
            "igmp" => 2,
            "tcp" => 6,
            "udp" => 17,
            "ipv6" => 41,
            "gre" => 47,
            "esp" => 50,
            "ah" => 51,
            "icmp6" => 58,
            "pim" => 103,
            "sctp" => 132,
            _ => parse_number(name, 255, "protocol number").map_err(|message| (position, message))?,
        };
        Ok(number as u8)
    }

    /// Reads `src`, `dst`, `src or dst` or `src and dst` whose first word is `word`.
    fn direction(&mut self, word: &str) -> ParseResult<Option<Dir>> {
        let first = match word {
            "src" => Dir::Src,
            "dst" => Dir::Dst,
            _ => return Ok(None),
        };
        let other = if first == Dir::Src { "dst" } else { "src" };
        let combined = match self.peek() {
            Some(Token::Or) if self.peek_word(1) == Some(other) => Some(Dir::SrcOrDst),
            Some(Token::And) if self.peek_word(1) == Some(other) => Some(Dir::SrcAndDst),
            _ => None,
        };
        match combined {
            Some(dir) => {
                self.position += 2;
                Ok(Some(dir))
            }
            None => Ok(Some(first)),
        }
    }

    fn kind(&mut self) -> ParseResult<Option<Kind>> {
        match self.peek_word(0).and_then(kind_from_word) {
            Some(kind) => {
                self.position += 1;
                Ok(Some(kind))
            }
            None => Ok(None),
        }
    }

    fn after_protocol(&mut self, position: usize, proto: ProtoQualifier) -> ParseResult<Expr> {
        let next = self.peek_word(0).map(str::to_string);
        match next.as_deref() {
            Some("proto") => {
                self.position += 1;
                self.last = None;
                if proto == ProtoQualifier::Ether {
                    return self.ether_proto();
                }
                let number = self.protocol_number()?;
                match proto {
                    ProtoQualifier::Ip => Ok(Expr::Prim(Primitive::IpProto { v4: true, v6: false, proto: number })),
                    ProtoQualifier::Ip6 => Ok(Expr::Prim(Primitive::IpProto { v4: false, v6: true, proto: number })),
                    other => Err((
                        position,
                        format!("'{} proto' is not valid; use 'ip proto N', 'ip6 proto N' or 'proto N'", other.name()),
                    )),
                }
            }
            Some("src") | Some("dst") => {
                let (_, word) = self.next_word("src or dst")?;
                let dir = self.direction(&word)?.expect("src or dst");
                let kind = self.kind()?;
                self.qualified(Qualifiers { proto: Some(proto), dir, kind })
            }
            Some(word) if kind_from_word(word).is_some() => {
                let kind = self.kind()?;
                self.qualified(Qualifiers { proto: Some(proto), dir: Dir::SrcOrDst, kind })
            }
            _ => match proto.alone() {
                Some(primitive) => {
                    self.last = None;
                    Ok(Expr::Prim(primitive))
                }
                None => Err((position, "'ether' needs 'host', 'src', 'dst' or 'proto' after it".into())),
            },
        }
    }

    /// Parses the EtherType after `ether proto`.
    fn ether_proto(&mut self) -> ParseResult<Expr> {
        let (position, text) = self.next_word("an EtherType")?;
        let ethertype = match text.trim_start_matches('\\') {
            "ip" => 0x0800,
            "ip6" => 0x86dd,
            "arp" => 0x0806,
            "rarp" => 0x8035,
            number => parse_number(number, 0xffff, "EtherType").map_err(|message| (position, message))? as u16,
        };
        Ok(Expr::Prim(Primitive::Network(ethertype)))
    }

    /// Parses the id (or parenthesized ids) after a qualifier block.
    fn qualified(&mut self, qualifiers: Qualifiers) -> ParseResult<Expr> {
        self.last = Some(qualifiers);
        if self.peek() == Some(&Token::LParen) {
            self.position += 1;
            self.enter()?;
            let inner = self.expr()?;
            self.depth -= 1;
            self.close_paren()?;
            self.last = Some(qualifiers);
            return Ok(inner);
        }
        let (position, id) = self.next_word("an address, network or port")?;
        self.id(position, &id, qualifiers)
    }

    fn bare_id(&mut self) -> ParseResult<Expr> {
        let (position, id) = self.next_word("a primitive")?;
        self.count_primitive(position)?;
        match self.last {
            Some(qualifiers) => self.id(position, &id, qualifiers),
            None => {
                let qualifiers = Qualifiers { proto: None, dir: Dir::SrcOrDst, kind: None };
                if id.starts_with(|c: char| c.is_ascii_digit()) && !id.contains(['.', ':']) {
                    return Err((
                        position,
                        format!("a bare number '{id}' needs a qualifier, such as 'port {id}'; {SUPPORTED}"),
                    ));
                }
                self.id(position, &id, qualifiers)
            }
        }
    }

    fn id(&mut self, position: usize, id: &str, qualifiers: Qualifiers) -> ParseResult<Expr> {
        let fail = |message: String| Err((position, message));
        let Qualifiers { proto, dir, kind } = qualifiers;
        match kind {
            Some(Kind::Port) | Some(Kind::PortRange) => {
                let proto = match proto {
                    None => None,
                    Some(ProtoQualifier::Tcp) => Some(6),
                    Some(ProtoQualifier::Udp) => Some(17),
                    Some(ProtoQualifier::Sctp) => Some(132),
                    Some(other) => {
                        return fail(format!("'{}' cannot qualify a port; use tcp, udp or sctp", other.name()))
                    }
                };
                let (low, high) = if kind == Some(Kind::Port) {
                    let port = parse_port(id).map_err(|message| (position, message))?;
                    (port, port)
                } else {
                    parse_port_range(id).map_err(|message| (position, message))?
                };
                Ok(Expr::Prim(Primitive::Port { proto, dir, low, high }))
            }
            Some(Kind::Net) => {
                let family = address_family(proto).map_err(|message| (position, message))?;
                let net = self.network(position, id)?;
                check_family(family, net.addr).map_err(|message| (position, message))?;
                Ok(Expr::Prim(Primitive::Net { family, dir, net }))
            }
            Some(Kind::Host) | None => {
                if proto == Some(ProtoQualifier::Ether)
                    || (id.contains([':', '-']) && parse_mac(id).is_some() && id.parse::<Ipv6Addr>().is_err())
                {
                    return match parse_mac(id) {
                        Some(mac) => Ok(Expr::Prim(Primitive::EtherHost { dir, mac })),
                        None => fail(format!("'{id}' is not a MAC address; accepted forms are 00:11:22:33:44:55, 00-11-22-33-44-55 and 0011.2233.4455")),
                    };
                }
                let family = address_family(proto).map_err(|message| (position, message))?;
                let addr = parse_address(id).map_err(|message| (position, message))?;
                check_family(family, addr).map_err(|message| (position, message))?;
                Ok(Expr::Prim(Primitive::Host { family, dir, addr }))
            }
        }
    }

    /// Parses a network: `ADDR/LEN`, `ADDR mask MASK`, `ADDR`, or a short IPv4 form such as `192.0.2`.
    fn network(&mut self, position: usize, id: &str) -> ParseResult<IpNet> {
        let fail = |message: String| (position, message);
        let (addr, prefix_len) = if let Some((addr, len)) = id.split_once('/') {
            let addr = parse_address(addr).map_err(fail)?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let len = parse_number(len, max, "prefix length").map_err(fail)?;
            (addr, len as u8)
        } else if self.peek_word(0) == Some("mask") {
            self.position += 1;
            let (mask_position, mask) = self.next_word("a netmask")?;
            let addr = parse_address(id).map_err(fail)?;
            let len = parse_mask(&mask, addr).map_err(|message| (mask_position, message))?;
            (addr, len)
        } else if let Ok(addr) = id.parse::<Ipv6Addr>() {
            (IpAddr::V6(addr), 128)
        } else {
            parse_short_ipv4(id).map_err(fail)?
        };
        let net = IpNet { addr, prefix_len };
        let (first, _) = net.range_bytes();
        let given = match addr {
            IpAddr::V4(addr) => addr.octets().to_vec(),
            IpAddr::V6(addr) => addr.octets().to_vec(),
        };
        if first != given {
            return Err(fail(format!(
                "'{id}' has host bits set beyond the /{prefix_len} prefix; write the network address instead"
            )));
        }
        Ok(net)
    }
}

fn kind_from_word(word: &str) -> Option<Kind> {
    Some(match word {
        "host" => Kind::Host,
        "net" => Kind::Net,
        "port" => Kind::Port,
        "portrange" => Kind::PortRange,
        _ => return None,
    })
}

fn address_family(proto: Option<ProtoQualifier>) -> Result<AddrFamily, String> {
    Ok(match proto {
        None => AddrFamily::Any,
        Some(ProtoQualifier::Ip) => AddrFamily::Ip,
        Some(ProtoQualifier::Ip6) => AddrFamily::Ip6,
        Some(ProtoQualifier::Arp) => AddrFamily::Arp,
        Some(ProtoQualifier::Rarp) => AddrFamily::Rarp,
        Some(other) => {
            return Err(format!(
                "'{}' cannot qualify a host or net; write '{} and host ADDR' instead",
                other.name(),
                other.name()
            ))
        }
    })
}

fn check_family(family: AddrFamily, addr: IpAddr) -> Result<(), String> {
    match (family, addr) {
        (AddrFamily::Ip6, IpAddr::V4(_)) => Err(format!("'ip6' needs an IPv6 address, found {addr}")),
        (AddrFamily::Ip | AddrFamily::Arp | AddrFamily::Rarp, IpAddr::V6(_)) => {
            Err(format!("an IPv4 qualifier needs an IPv4 address, found {addr}"))
        }
        _ => Ok(()),
    }
}

/// Parses a number in decimal, `0x` hexadecimal or leading-zero octal, as libpcap does.
fn parse_number(text: &str, max: u64, what: &str) -> Result<u64, String> {
    let parsed = if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16)
    } else if text.len() > 1 && text.starts_with('0') {
        u64::from_str_radix(&text[1..], 8)
    } else {
        text.parse::<u64>()
    };
    match parsed {
        Ok(value) if value <= max => Ok(value),
        Ok(value) => Err(format!("{what} {value} is out of range; accepted values are 0 to {max}")),
        Err(_) => Err(format!(
            "'{text}' is not a valid {what}; accepted are decimal, 0x hexadecimal and leading-zero octal numbers"
        )),
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    if text.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(format!("service name '{text}' is not supported; give the port number (for example 'port 443')"));
    }
    if text.contains('-') {
        return Err(format!("'{text}' is a range; use 'portrange {text}'"));
    }
    parse_number(text, 65535, "port").map(|port| port as u16)
}

fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let Some((low, high)) = text.split_once('-') else {
        return Err(format!("'{text}' is not a port range; write it as LOW-HIGH, for example 1000-2000"));
    };
    if low.is_empty() || high.is_empty() {
        return Err(format!("port range '{text}' lacks an end; write it as LOW-HIGH, for example 1000-2000"));
    }
    let low = parse_port(low)?;
    let high = parse_port(high)?;
    // libpcap accepts a reversed range and swaps its ends.
    Ok((low.min(high), low.max(high)))
}

fn parse_address(text: &str) -> Result<IpAddr, String> {
    if let Ok(addr) = text.parse::<Ipv4Addr>() {
        return Ok(IpAddr::V4(addr));
    }
    if let Ok(addr) = text.parse::<Ipv6Addr>() {
        return Ok(IpAddr::V6(addr));
    }
    if text.starts_with(|c: char| c.is_ascii_alphabetic()) && !text.contains(':') {
        let near = near_keywords(text);
        if !near.is_empty() {
            let near: Vec<String> = near.iter().map(|keyword| format!("'{keyword}'")).collect();
            return Err(format!(
                "'{text}' is neither a keyword nor an IP address; did you mean {}? {SUPPORTED}",
                near.join(" or ")
            ));
        }
        return Err(format!(
            "'{text}' is not an IP address; host names are not resolved when filtering, so give the address; {SUPPORTED}"
        ));
    }
    Err(format!("'{text}' is not a valid IPv4 or IPv6 address"))
}

/// Words of the filter language, offered when a word that is not one of
/// them is close to one.
const KEYWORDS: [&str; 27] = [
    "host",
    "net",
    "port",
    "portrange",
    "src",
    "dst",
    "ether",
    "vlan",
    "mpls",
    "proto",
    "ip",
    "ip6",
    "arp",
    "rarp",
    "tcp",
    "udp",
    "sctp",
    "icmp",
    "icmp6",
    "greater",
    "less",
    "and",
    "or",
    "not",
    "mask",
    "gateway",
    "broadcast",
];

/// Returns the keywords at the smallest edit distance from `word`, if that
/// distance is one, or two for words of five letters or more. A swap of two
/// neighbouring letters counts as one edit.
fn near_keywords(word: &str) -> Vec<&'static str> {
    let word = word.to_ascii_lowercase();
    let limit = if word.len() >= 5 { 2 } else { 1 };
    let distances: Vec<(usize, &'static str)> =
        KEYWORDS.iter().map(|keyword| (strsim::osa_distance(&word, keyword), *keyword)).collect();
    let best = distances.iter().map(|(distance, _)| *distance).min().unwrap_or(usize::MAX);
    if best == 0 || best > limit {
        return Vec::new();
    }
    distances.into_iter().filter(|(distance, _)| *distance == best).map(|(_, keyword)| keyword).collect()
}

/// Parses `a`, `a.b` or `a.b.c` as a /8, /16 or /24 network, and `a.b.c.d` as /32.
fn parse_short_ipv4(text: &str) -> Result<(IpAddr, u8), String> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.is_empty() || parts.len() > 4 || parts.iter().any(|part| part.is_empty()) {
        return Err(parse_address(text).err().unwrap_or_else(|| format!("'{text}' is not a network")));
    }
    let mut octets = [0u8; 4];
    for (octet, part) in octets.iter_mut().zip(&parts) {
        *octet =
            parse_number(part, 255, "address byte").map_err(|_| parse_address(text).err().unwrap_or_default())? as u8;
    }
    Ok((IpAddr::V4(Ipv4Addr::from(octets)), (parts.len() * 8) as u8))
}

fn parse_mask(text: &str, addr: IpAddr) -> Result<u8, String> {
    let mask = parse_address(text)?;
    let (bits, total) = match (mask, addr) {
        (IpAddr::V4(mask), IpAddr::V4(_)) => (u128::from(u32::from(mask)) << 96, 32),
        (IpAddr::V6(mask), IpAddr::V6(_)) => (u128::from(mask), 128),
        _ => return Err(format!("mask {text} and address {addr} are of different IP versions")),
    };
    let len = bits.leading_ones();
    if bits.checked_shl(len).unwrap_or(0) != 0 || len > total {
        return Err(format!("mask {text} is not contiguous; give a mask such as 255.255.255.0"));
    }
    Ok(len as u8)
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let hex: String = if text.contains('.') {
        let groups: Vec<&str> = text.split('.').collect();
        if groups.len() != 3 || groups.iter().any(|group| group.len() != 4) {
            return None;
        }
        groups.concat()
    } else {
        let groups: Vec<&str> = text.split([':', '-']).collect();
        if groups.len() != 6 || groups.iter().any(|group| group.is_empty() || group.len() > 2) {
            return None;
        }
        groups.iter().map(|group| format!("{group:0>2}")).collect()
    };
    if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut mac = [0u8; 6];
    for (index, byte) in mac.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[index * 2..index * 2 + 2], 16).ok()?;
    }
    Some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(filter: &str) -> String {
        parse(filter).unwrap_or_else(|err| panic!("{err}")).to_string()
    }

    fn error(filter: &str) -> FilterError {
        parse(filter).expect_err(filter)
    }

    #[test]
    fn and_or_have_equal_precedence() {
        assert_eq!(parsed("tcp or udp and host 192.0.2.1"), "((proto 6 or proto 17) and host 192.0.2.1)");
    }

    #[test]
    fn bare_ids_inherit_qualifiers() {
        assert_eq!(parsed("host 192.0.2.1 and 192.0.2.2"), "(host 192.0.2.1 and host 192.0.2.2)");
        assert_eq!(parsed("tcp src port (80 or 443)"), "(tcp src port 80 or tcp src port 443)");
        assert_eq!(parsed("not port 22 and not 53"), "((not port 22) and (not port 53))");
    }

    #[test]
    fn misspelled_keywords_are_named() {
        let message = error("prot 443").message;
        assert!(message.contains("did you mean 'port' or 'proto'?"), "{message}");
        let message = error("tcp and dts port 80").message;
        assert!(message.contains("did you mean 'dst'?"), "{message}");
        let message = error("hots 192.0.2.1").message;
        assert!(message.contains("did you mean 'host'?"), "{message}");
        // A word far from every keyword is taken for a host name.
        let message = error("gateway1.example").message;
        assert!(message.contains("host names are not resolved"), "{message}");
        assert!(!error("router").message.contains("did you mean"));
    }

    #[test]
    fn port_range_needs_both_ends() {
        assert!(error("udp portrange 10-").message.contains("lacks an end"));
        assert!(error("portrange -20").message.contains("lacks an end"));
    }

    #[test]
    fn numbers_accept_hex_and_octal() {
        assert_eq!(parsed("port 0x50"), "port 80");
        assert_eq!(parsed("port 0120"), "port 80");
    }

    #[test]
    fn short_and_masked_networks() {
        assert_eq!(parsed("net 192.0.2"), "net 192.0.2.0/24");
        assert_eq!(parsed("net 10.0.0.0 mask 255.0.0.0"), "net 10.0.0.0/8");
        assert_eq!(parsed("ip6 net 2001:db8::/32"), "ip6 net 2001:db8::/32");
    }

    #[test]
    fn reversed_portrange_is_swapped() {
        assert_eq!(parsed("portrange 2000-1000"), "portrange 1000-2000");
    }

    #[test]
    fn net_with_host_bits_is_rejected() {
        let err = error("net 192.0.2.1/30");
        assert_eq!(err.position, 4);
        assert!(err.message.contains("host bits"), "{err}");
    }

    #[test]
    fn port_above_65535_is_rejected() {
        let err = error("port 70000");
        assert!(err.message.contains("0 to 65535"), "{err}");
    }

    #[test]
    fn host_name_is_rejected() {
        let err = error("host example.com");
        assert!(err.message.contains("not resolved"), "{err}");
    }

    #[test]
    fn service_name_is_rejected() {
        let err = error("port http");
        assert!(err.message.contains("service name"), "{err}");
    }

    #[test]
    fn unbalanced_parenthesis_points_at_end() {
        let err = error("(host 192.0.2.1");
        assert_eq!(err.position, 15);
        assert!(err.message.contains("expected ')'"), "{err}");
    }

    #[test]
    fn arithmetic_suggests_bpf_mode() {
        let err = error("tcp[13] & 2 != 0");
        assert!(err.message.contains("--bpf"), "{err}");
        for filter in ["ether broadcast", "ip6 protochain 6", "ip multicast", "len > 100"] {
            let err = parse(filter).unwrap_err();
            assert!(err.message.contains("--bpf"), "{filter}: {err}");
        }
    }

    #[test]
    fn nesting_limit_is_enforced() {
        let filter = format!("{}tcp{}", "(".repeat(40), ")".repeat(40));
        let err = error(&filter);
        assert!(err.message.contains("nesting"), "{err}");
    }

    #[test]
    fn mac_addresses_in_three_notations() {
        for text in ["00:11:22:33:44:55", "00-11-22-33-44-55", "0011.2233.4455"] {
            assert_eq!(parsed(&format!("ether host {text}")), "ether host 00:11:22:33:44:55");
        }
    }

    #[test]
    fn display_round_trips() {
        for filter in [
            "src and dst host 192.0.2.1",
            "udp dst portrange 1-5",
            "vlan 100 and mpls 16",
            "ip6 proto 17",
            "greater 64",
        ] {
            let once = parsed(filter);
            assert_eq!(parsed(&once), once);
        }
    }
}
