//! libpcap mode: filters compiled and matched by libpcap itself.
//!
//! Each segment's link type gets its own program, compiled as `tcpdump -O`
//! compiles it when reading a file of that link type: without libpcap's
//! optimizer. libpcap 1.10's optimizer mis-evaluates some compound filters
//! (one that ends in `and arp` matched a TCP packet), and the index prunes
//! candidates by what a filter means, so only unoptimized programs agree
//! with it on every filter. Matching calls libpcap's
//! `bpf_filter` with the record's real original length, so `len`, `greater`
//! and `less` see what they see in tcpdump.

use std::collections::HashMap;

use super::ast::Expr;
use super::parse::{parse, MAX_FILTER_BYTES, MAX_NESTING_DEPTH};
use crate::decode::is_decoded_linktype;
use crate::{Error, Result};

/// Most `and`/`or` operators accepted in a libpcap-mode filter, a bound on
/// the size of its program and on the time to compile it.
pub const MAX_BPF_OPERATORS: usize = 128;

/// Words that make libpcap read every later primitive at a shifted offset.
const OFFSET_SHIFTING_WORDS: [&str; 6] = ["vlan", "mpls", "pppoes", "pppoed", "geneve", "vxlan"];

#[repr(C)]
struct BpfInsn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

#[link(name = "pcap")]
extern "C" {
    /// libpcap's BPF interpreter (`pcap/bpf.h`); returns 0 when the packet is rejected.
    fn bpf_filter(
        program: *const BpfInsn,
        packet: *const u8,
        wire_len: libc::c_uint,
        captured_len: libc::c_uint,
    ) -> libc::c_uint;
}

/// Opens a libpcap handle on an empty pcap file of `linktype`.
///
/// libpcap compiles some primitives differently for a savefile than for a
/// live or dead handle: on `NULL` (BSD loopback) captures, `ip6` tests the
/// three BSD values of `AF_INET6` only when reading a file. Compiling against
/// a savefile handle gives the program tcpdump uses with `-r`. The file lives
/// in an anonymous memory file, so nothing is written to disk.
fn savefile_handle(linktype: u32) -> std::result::Result<pcap::Capture<pcap::Offline>, String> {
    use std::io::Write;
    use std::os::fd::FromRawFd;

    let name = c"pktvault-bpf";
    // SAFETY: `name` is a valid C string; the returned descriptor is owned by `file` below.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("memfd_create failed: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    let header = crate::segment::pcap_file_header(pktvault_schema::TsResolution::Micro, 262_144, linktype);
    file.write_all(&header).map_err(|err| format!("cannot write the pcap header: {err}"))?;
    let path = format!("/proc/self/fd/{fd}");
    let handle = pcap::Capture::from_file(&path).map_err(|err| err.to_string());
    drop(file);
    handle
}

/// A filter in libpcap syntax, with one compiled program per link type.
pub struct BpfFilter {
    text: String,
    programs: HashMap<u32, pcap::BpfProgram>,
}

// SAFETY: shared access only reads the compiled programs: `matches` passes
// their instructions to libpcap's `bpf_filter`, which reads them and the
// packet and writes nothing. Compiling and freeing take `&mut self` or `self`.
unsafe impl Sync for BpfFilter {}

impl std::fmt::Debug for BpfFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let linktypes: Vec<&u32> = self.programs.keys().collect();
        f.debug_struct("BpfFilter").field("text", &self.text).field("compiled_for", &linktypes).finish()
    }
}

impl BpfFilter {
    /// Checks the limits of `text`; programs are compiled by [`BpfFilter::prepare`].
    pub fn new(text: &str) -> Result<BpfFilter> {
        if text.len() > MAX_FILTER_BYTES {
            return Err(Error::InvalidRequest(format!(
                "the filter is {} bytes long; at most {MAX_FILTER_BYTES} bytes are accepted",
                text.len()
            )));
        }
        let operators = text
            .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
            .filter(|word| matches!(*word, "and" | "or" | "&&" | "||"))
            .count();
        if operators > MAX_BPF_OPERATORS {
            return Err(Error::InvalidRequest(format!(
                "the filter has {operators} 'and'/'or' operators; libpcap mode accepts at most {MAX_BPF_OPERATORS}"
            )));
        }
        let mut depth = 0usize;
        let mut max_depth = 0usize;
        for c in text.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                _ => {}
            }
            max_depth = max_depth.max(depth);
        }
        if max_depth > MAX_NESTING_DEPTH {
            return Err(Error::InvalidRequest(format!(
                "the filter nests parentheses {max_depth} deep; at most {MAX_NESTING_DEPTH} levels are accepted"
            )));
        }
        Ok(BpfFilter { text: text.to_string(), programs: HashMap::new() })
    }

    /// Returns the filter text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Compiles the filter for `linktype` unless already compiled.
    pub fn prepare(&mut self, linktype: u32) -> Result<()> {
        if self.programs.contains_key(&linktype) {
            return Ok(());
        }
        let compile_error = |message: String| Error::BpfCompile { filter: self.text.clone(), linktype, message };
        let handle = savefile_handle(linktype).map_err(compile_error)?;
        let program = handle.compile(&self.text, false).map_err(|err| compile_error(err.to_string()))?;
        self.programs.insert(linktype, program);
        Ok(())
    }

    /// Returns whether libpcap accepts the packet; `prepare` must have been called for `linktype`.
    pub fn matches(&self, linktype: u32, data: &[u8], wire_len: u32) -> bool {
        let Some(program) = self.programs.get(&linktype) else {
            debug_assert!(false, "filter not prepared for linktype {linktype}");
            return false;
        };
        let instructions = program.get_instructions();
        // SAFETY: `BpfInstruction` is a transparent wrapper of libpcap's
        // `struct bpf_insn`, which `BpfInsn` mirrors. libpcap's compiler produced
        // the program, and `bpf_filter` reads at most `data.len()` bytes.
        let result = unsafe {
            bpf_filter(instructions.as_ptr() as *const BpfInsn, data.as_ptr(), wire_len, data.len() as libc::c_uint)
        };
        result != 0
    }

    /// Returns an expression in the default language whose candidates contain
    /// every packet libpcap accepts on `linktype`, or `None` when the index
    /// cannot prune this filter soundly.
    ///
    /// The link type must be one the decoder reads at libpcap's offsets, and
    /// the filter must not contain a word that shifts libpcap's offsets
    /// (`vlan`, `mpls`, ...). Then the whole filter is used if it parses in the
    /// default language, and otherwise its top-level conjuncts that parse
    /// alone. Negations never prune (see `plan::monotone_candidates`).
    pub fn pruning_expr(&self, linktype: u32) -> Option<Expr> {
        if !is_decoded_linktype(linktype) {
            return None;
        }
        let words: Vec<&str> =
            self.text.split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == '!').collect();
        if words.iter().any(|word| OFFSET_SHIFTING_WORDS.contains(word)) {
            return None;
        }
        if let Ok(expr) = parse(&self.text) {
            return Some(expr);
        }
        top_level_conjuncts(&self.text).iter().filter_map(|conjunct| parse(conjunct).ok()).reduce(Expr::and)
    }
}

/// Splits a filter into the terms that libpcap joins with a top-level `and`.
///
/// libpcap gives `and` and `or` equal precedence and groups from the left, so
/// only the terms after the last top-level `or` are conjuncts of the whole filter.
fn top_level_conjuncts(text: &str) -> Vec<String> {
    let mut conjuncts = vec![String::new()];
    let mut depth = 0usize;
    let mut saw_top_level_or = false;
    let spaced = text.replace('(', " ( ").replace(')', " ) ").replace("&&", " && ").replace("||", " || ");
    for word in spaced.split_whitespace() {
        match word {
            "(" => depth += 1,
            ")" => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth == 0 && matches!(word, "or" | "||") {
            saw_top_level_or = true;
            conjuncts = vec![String::new()];
            continue;
        }
        if depth == 0 && matches!(word, "and" | "&&") {
            conjuncts.push(String::new());
            continue;
        }
        let current = conjuncts.last_mut().expect("never empty");
        current.push_str(word);
        current.push(' ');
    }
    // The first term after the last `or` is the right operand of that `or`,
    // which the earlier terms also reach, so it is not a conjunct on its own.
    if saw_top_level_or {
        conjuncts.remove(0);
    }
    conjuncts.into_iter().filter(|conjunct| !conjunct.trim().is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conjuncts_after_last_or() {
        assert_eq!(top_level_conjuncts("a or b and c and d"), vec!["c ", "d "]);
        assert_eq!(top_level_conjuncts("(a or b) and c"), vec!["( a or b ) ", "c "]);
        assert_eq!(
            top_level_conjuncts("tcp[13] & 2 != 0 and host 192.0.2.1"),
            vec!["tcp[13] & 2 != 0 ", "host 192.0.2.1 "]
        );
    }

    #[test]
    fn vlan_disables_pruning() {
        let filter = BpfFilter::new("vlan and host 192.0.2.1").unwrap();
        assert!(filter.pruning_expr(1).is_none());
    }

    #[test]
    fn libpcap_length_uses_wire_length() {
        let mut filter = BpfFilter::new("greater 100").unwrap();
        filter.prepare(1).unwrap();
        let frame = [0u8; 60];
        assert!(filter.matches(1, &frame, 1500));
        assert!(!filter.matches(1, &frame, 60));
    }

    #[test]
    fn limits_are_enforced_before_libpcap() {
        let chain = vec!["not host 192.0.2.1"; MAX_BPF_OPERATORS + 2].join(" and ");
        assert!(BpfFilter::new(&chain).unwrap_err().to_string().contains("operators"));
        let nested = format!("{}tcp{}", "(".repeat(40), ")".repeat(40));
        assert!(BpfFilter::new(&nested).unwrap_err().to_string().contains("deep"));
        let long = format!("host 192.0.2.1 {}", " ".repeat(MAX_FILTER_BYTES));
        assert!(BpfFilter::new(&long).unwrap_err().to_string().contains("bytes"));
    }

    #[test]
    fn filters_match_as_unoptimized_libpcap() {
        // A TCP packet from 192.0.2.1 port 53 to itself, port 443, between
        // two Ethernet stations with the same address. It is not ARP, so the
        // filter cannot match; libpcap 1.10's optimizer matched it anyway.
        let mac = [0, 0x11, 0x22, 0x33, 0x44, 0x55];
        let mut frame = [mac, mac].concat();
        frame.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 192, 0, 2, 1, 192, 0, 2, 1]);
        frame.extend_from_slice(&[0, 53, 0x01, 0xbb, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0x20, 0, 0, 0, 0, 0]);
        let text = "((ether src host 00:11:22:33:44:55 or arp) and (not dst port 53)) \
                    and ((ether src and dst host 00:11:22:33:44:55 or src port 53) and arp)";
        let mut filter = BpfFilter::new(text).unwrap();
        filter.prepare(1).unwrap();
        assert!(!filter.matches(1, &frame, frame.len() as u32));
        let mut tcp = BpfFilter::new("tcp and src port 53 and ether dst 00:11:22:33:44:55").unwrap();
        tcp.prepare(1).unwrap();
        assert!(tcp.matches(1, &frame, frame.len() as u32), "the frame is the TCP packet described");
    }

    #[test]
    fn libpcap_syntax_error_is_reported() {
        let mut filter = BpfFilter::new("host and and").unwrap();
        let err = filter.prepare(1).unwrap_err();
        assert!(err.to_string().contains("libpcap rejected"), "{err}");
    }
}
