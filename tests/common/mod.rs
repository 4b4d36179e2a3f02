//! Helpers shared by the integration tests: running the `pktvault` binary,
//! running tcpdump, and reading pcap output.
#![allow(dead_code)]

pub mod frames;
pub mod recorder;
pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use pcap_file::pcap::PcapReader;
use pcap_file::TsResolution;

/// One packet of a pcap file, with the timestamp in nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Packet {
    pub ts_ns: u64,
    pub caplen: u32,
    pub wire_len: u32,
    pub data: Vec<u8>,
}

/// Header facts of a pcap file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcapInfo {
    pub linktype: u32,
    pub nanosecond: bool,
    pub snaplen: u32,
}

/// Returns the path of the `pktvault` binary built next to this test.
pub fn pktvault_bin() -> PathBuf {
    let test_exe = std::env::current_exe().expect("test executable path");
    let target_dir = test_exe.parent().and_then(Path::parent).expect("target directory");
    let binary = target_dir.join("pktvault");
    assert!(
        binary.exists(),
        "{} is missing; build it with 'cargo build --workspace' (cargo test --workspace does)",
        binary.display()
    );
    binary
}

/// Runs `pktvault` with `args` and returns its output.
pub fn pktvault(args: &[&str]) -> Output {
    Command::new(pktvault_bin()).args(args).stdin(Stdio::null()).output().expect("run pktvault")
}

/// Runs `pktvault`, asserting that it exits with `code`, and returns its output.
pub fn pktvault_expect(args: &[&str], code: i32) -> Output {
    let output = pktvault(args);
    assert_eq!(
        output.status.code(),
        Some(code),
        "pktvault {args:?} exited with {:?}, expected {code}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Returns the folder of the shared capture corpus (`PKTVAULT_CORPUS` overrides it).
pub fn corpus_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PKTVAULT_CORPUS") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus")
}

/// Returns the path of a corpus capture, failing when the corpus is missing.
pub fn corpus(name: &str) -> PathBuf {
    let path = corpus_dir().join(name);
    assert!(path.exists(), "corpus capture {} is missing; set PKTVAULT_CORPUS to the corpus folder", path.display());
    path
}

/// Fails the test when `tool` is not installed; tests never skip silently.
pub fn require_tool(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false);
    assert!(found, "{tool} is not installed; install it (apt-get install tcpdump tshark) or run .ci/run, which does");
}

/// Reads every packet of a classic pcap file held in `bytes`.
pub fn read_pcap(bytes: &[u8]) -> (PcapInfo, Vec<Packet>) {
    let mut reader = PcapReader::new(bytes).expect("valid pcap header");
    let header = reader.header();
    let nanosecond = header.ts_resolution == TsResolution::NanoSecond;
    let unit = if nanosecond { 1 } else { 1000 };
    let info = PcapInfo { linktype: u32::from(header.datalink), nanosecond, snaplen: header.snaplen };
    let mut packets = Vec::new();
    while let Some(record) = reader.next_raw_packet() {
        let record = record.expect("valid pcap record");
        packets.push(Packet {
            ts_ns: u64::from(record.ts_sec) * 1_000_000_000 + u64::from(record.ts_frac) * unit,
            caplen: record.incl_len,
            wire_len: record.orig_len,
            data: record.data.into_owned(),
        });
    }
    (info, packets)
}

/// Runs `tcpdump -r FILE -w - FILTER` and returns the selected packets in file order.
pub fn tcpdump_select(file: &Path, filter: &str) -> Vec<Packet> {
    require_tool("tcpdump");
    let output = Command::new("tcpdump").arg("-r").arg(file).args(["-w", "-", filter]).output().expect("run tcpdump");
    assert!(
        output.status.success(),
        "tcpdump -r {} '{filter}' failed: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    read_pcap(&output.stdout).1
}

/// Sorts packets by timestamp, keeping file order among equal timestamps.
pub fn sort_by_time(mut packets: Vec<Packet>) -> Vec<Packet> {
    packets.sort_by_key(|packet| packet.ts_ns);
    packets
}

/// Asserts that two packet lists are equal, naming the first difference.
pub fn assert_same_packets(context: &str, expected: &[Packet], actual: &[Packet]) {
    for (index, (want, got)) in expected.iter().zip(actual).enumerate() {
        assert!(
            want == got,
            "{context}: packet {index} differs: expected ts {} caplen {} len {}, got ts {} caplen {} len {}",
            want.ts_ns,
            want.caplen,
            want.wire_len,
            got.ts_ns,
            got.caplen,
            got.wire_len
        );
    }
    assert_eq!(expected.len(), actual.len(), "{context}: expected {} packets, got {}", expected.len(), actual.len());
}

/// Imports `files` into `data_dir` (interface 0), asserting success.
pub fn import(data_dir: &Path, files: &[&Path]) {
    let mut args = vec!["import".to_string(), "--data-dir".into(), data_dir.display().to_string()];
    args.extend(files.iter().map(|file| file.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    pktvault_expect(&args, 0);
}

/// Imports `file` into `data_dir` with one segment per second of packet
/// time, so that the index has a table file per segment, and returns the
/// number of table files.
pub fn import_one_second_segments(data_dir: &Path, file: &Path) -> usize {
    let data = data_dir.to_str().expect("UTF-8 path");
    pktvault_expect(&["import", "--data-dir", data, "--segment-seconds", "1", file.to_str().expect("UTF-8 path")], 0);
    let index = std::fs::read_dir(data_dir.join("0").join("index")).expect("read the index folder");
    index
        .filter(|entry| entry.as_ref().is_ok_and(|entry| entry.file_name().to_string_lossy().ends_with(".sst")))
        .count()
}

/// Rewrites the format marker of interface `ifid`'s index to `version`, so
/// that the index looks like one written by a release of another format.
pub fn mark_index_format(data_dir: &Path, ifid: u32, version: u32) {
    let path = data_dir.join(ifid.to_string()).join("index");
    let options = rocksdb::Options::default();
    let families = rocksdb::DB::list_cf(&options, &path).expect("list the column families of the index");
    let db = rocksdb::DB::open_cf(&options, &path, families).expect("open the index");
    let marker = pktvault_schema::FormatMarker { version, ..pktvault_schema::FormatMarker::current() };
    db.put(pktvault_schema::keys::FORMAT_KEY, serde_json::to_vec(&marker).unwrap()).expect("write the format marker");
    db.flush().expect("flush the index");
}

/// Extracts `filter` (default language unless `bpf`) over the whole time range and returns the packets.
pub fn extract_all(data_dir: &Path, filter: &str, bpf: bool) -> (PcapInfo, Vec<Packet>) {
    let data_dir = data_dir.display().to_string();
    let mut args = vec!["extract", "--data-dir", &data_dir, "--begin", "0", "--end", "18000000000", "-w", "-"];
    if bpf {
        args.push("--bpf");
    }
    if !filter.is_empty() {
        args.push(filter);
    }
    let output = pktvault(&args);
    assert!(
        matches!(output.status.code(), Some(0) | Some(1)),
        "pktvault extract '{filter}' failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    if output.stdout.is_empty() {
        return (PcapInfo { linktype: 0, nanosecond: false, snaplen: 0 }, Vec::new());
    }
    read_pcap(&output.stdout)
}
