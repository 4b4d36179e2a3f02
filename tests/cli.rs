//! End-to-end tests of the `pktvault` command: rejected inputs and their
//! messages and exit statuses, time windows compared with editcap, live
//! recording on the loopback interface, and piping the output into tcpdump.
//!
//! Every test that feeds a bad input first imports a good corpus capture and
//! checks afterwards that it still extracts exactly as tcpdump reads it.

mod common;

use std::fs;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::recorder::Recorder;
use common::*;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// An `--end` after every packet a pcap file can store: 2^32 seconds, one past
/// the largest 32-bit `ts_sec`.
const END_OF_PCAP_TIME: &str = "4294967296";

/// Formats nanoseconds since the epoch as `SECONDS.NNNNNNNNN`, a form that
/// both `pktvault --begin` and `editcap -A` accept.
fn epoch(ts_ns: u64) -> String {
    format!("{}.{:09}", ts_ns / NANOS_PER_SEC, ts_ns % NANOS_PER_SEC)
}

/// Converts days since 1970-01-01 to a (year, month, day) civil date
/// (Howard Hinnant's `civil_from_days` algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

/// Formats nanoseconds since the epoch as RFC 3339 with nine fraction digits,
/// in the time zone `offset_minutes` east of UTC (`Z` for 0).
fn rfc3339(ts_ns: u64, offset_minutes: i64) -> String {
    let local_ns = ts_ns as i64 + offset_minutes * 60 * NANOS_PER_SEC as i64;
    let seconds = local_ns.div_euclid(NANOS_PER_SEC as i64);
    let nanos = local_ns.rem_euclid(NANOS_PER_SEC as i64);
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let second_of_day = seconds.rem_euclid(86_400);
    let zone = if offset_minutes == 0 {
        "Z".to_string()
    } else {
        let sign = if offset_minutes < 0 { '-' } else { '+' };
        format!("{sign}{:02}:{:02}", offset_minutes.abs() / 60, offset_minutes.abs() % 60)
    };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}{zone}",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

fn stderr_text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

/// Runs `pktvault import --data-dir DATA_DIR FILES...` and returns its output.
fn run_import(data_dir: &Path, files: &[&Path]) -> Output {
    let mut args = vec!["import".to_string(), "--data-dir".to_string(), path_arg(data_dir)];
    args.extend(files.iter().map(|file| path_arg(file)));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    pktvault(&args)
}

/// Runs `pktvault extract` over `[begin, end)` to standard output, with the
/// extra arguments `rest` (options, then filter words).
fn run_extract(data_dir: &Path, begin: &str, end: &str, rest: &[&str]) -> Output {
    let data_dir = path_arg(data_dir);
    let mut args = vec!["extract", "--data-dir", &data_dir, "--begin", begin, "--end", end, "-w", "-"];
    args.extend_from_slice(rest);
    pktvault(&args)
}

/// Returns the half-open window `[first ts, last ts + 1 ns)` covering `packets`.
fn covering_window(packets: &[Packet]) -> (u64, u64) {
    let first = packets.iter().map(|packet| packet.ts_ns).min().expect("at least one packet");
    let last = packets.iter().map(|packet| packet.ts_ns).max().expect("at least one packet");
    (first, last + 1)
}

/// Asserts that the packets of `capture` imported into `data_dir` extract
/// exactly as tcpdump reads them from the capture, sorted by time.
fn assert_capture_extractable(data_dir: &Path, capture: &Path) {
    let expected = sort_by_time(tcpdump_select(capture, ""));
    assert!(!expected.is_empty(), "tcpdump read no packet from {}", capture.display());
    let (begin_ns, end_ns) = covering_window(&expected);

    let output = run_extract(data_dir, &epoch(begin_ns), &epoch(end_ns), &[]);
    assert_eq!(output.status.code(), Some(0), "extracting {} failed: {}", capture.display(), stderr_text(&output));
    let (_, actual) = read_pcap(&output.stdout);

    assert_eq!(
        actual.len(),
        expected.len(),
        "{}: pktvault extracted {} packets, tcpdump reads {}",
        capture.display(),
        actual.len(),
        expected.len()
    );
    assert_same_packets(&capture.display().to_string(), &expected, &actual);
}

/// Returns a little-endian, microsecond pcap file header.
fn pcap_header(snaplen: u32, linktype: u32) -> Vec<u8> {
    let mut header = Vec::with_capacity(24);
    header.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    header.extend_from_slice(&2u16.to_le_bytes());
    header.extend_from_slice(&4u16.to_le_bytes());
    header.extend_from_slice(&0i32.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&snaplen.to_le_bytes());
    header.extend_from_slice(&linktype.to_le_bytes());
    header
}

/// Returns a little-endian, microsecond pcap file holding `packets`.
fn build_pcap(linktype: u32, packets: &[Packet]) -> Vec<u8> {
    let mut bytes = pcap_header(65_535, linktype);
    for packet in packets {
        assert_eq!(packet.ts_ns % 1000, 0, "a microsecond pcap cannot store timestamp {}", packet.ts_ns);
        let ts_sec = (packet.ts_ns / NANOS_PER_SEC) as u32;
        let ts_usec = (packet.ts_ns % NANOS_PER_SEC / 1000) as u32;
        bytes.extend_from_slice(&ts_sec.to_le_bytes());
        bytes.extend_from_slice(&ts_usec.to_le_bytes());
        bytes.extend_from_slice(&packet.caplen.to_le_bytes());
        bytes.extend_from_slice(&packet.wire_len.to_le_bytes());
        bytes.extend_from_slice(&packet.data);
    }
    bytes
}

/// Returns the byte offset of record `index` (0-based) in a little-endian pcap file.
fn record_offset(pcap: &[u8], index: usize) -> usize {
    let mut offset = 24;
    for _ in 0..index {
        let caplen = u32::from_le_bytes(pcap[offset + 8..offset + 12].try_into().expect("4 bytes"));
        offset += 16 + caplen as usize;
    }
    offset
}

/// Returns `count` bytes from a fixed-seed xorshift generator, so a failure
/// reproduces with the same file.
fn pseudo_random_bytes(count: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn line_count(text: &str) -> usize {
    text.lines().count()
}

// ---------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------

#[test]
fn version_names_the_index_format() {
    let output = pktvault_expect(&["--version"], 0);
    let text = String::from_utf8_lossy(&output.stdout);
    let expected = format!("(index format {})", pktvault_schema::INDEX_FORMAT_VERSION);
    assert!(text.trim_end().ends_with(&expected), "{text}");
}

#[test]
fn status_lists_unreadable_interface_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let dns = corpus("dns_mdns_llmnr.pcap");
    for ifid in ["0", "1"] {
        pktvault_expect(&["import", "--data-dir", data, "--ifid", ifid, dns.to_str().unwrap()], 0);
    }
    let packets = read_pcap(&fs::read(&dns).unwrap()).1.len();
    common::mark_index_format(dir.path(), 1, 3);

    let text = pktvault_expect(&["status", "--data-dir", data], 2);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(stdout.contains(&format!("stored:    {packets} packets in ")), "{stdout}");
    let (_, second) = stdout.split_once("interface 1:").expect("interface 1 is listed");
    assert!(second.trim_start().starts_with("error:     "), "{stdout}");
    assert!(second.contains("index format version 3 is not supported"), "{stdout}");

    let json = pktvault_expect(&["status", "--data-dir", data, "--json"], 2);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("status --json prints JSON");
    assert_eq!(report[0]["ifid"], 0);
    assert_eq!(report[0]["packets"], packets as u64);
    assert_eq!(report[1]["ifid"], 1);
    let error = report[1]["error"].as_str().expect("an error for interface 1");
    assert!(error.contains("pktvault import --data-dir NEW_DIR --ifid 1"), "{error}");
}

#[test]
fn extraction_keeps_few_index_files_open() {
    // One-second segments give the index about 90 table files. The
    // extraction runs with at most 40 descriptors and still reads every segment.
    let dir = tempfile::tempdir().unwrap();
    let tls = corpus("tls_browsing_167_hosts.pcap");
    let table_files = common::import_one_second_segments(dir.path(), &tls);
    assert!(table_files > 80, "only {table_files} table files");
    let extract =
        format!("ulimit -n 40 && exec \"$0\" extract --data-dir \"$1\" --begin 0 --end {END_OF_PCAP_TIME} -w - tcp");
    let output = Command::new("sh")
        .args(["-c", &extract])
        .arg(pktvault_bin())
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let expected = sort_by_time(tcpdump_select(&tls, "tcp"));
    assert_same_packets("tcp with 40 descriptors", &expected, &read_pcap(&output.stdout).1);
}

#[test]
fn import_garbage_file_keeps_good_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let dns = corpus("dns_mdns_llmnr.pcap");
    let http = corpus("http_650_responses.pcap");
    import(&data_dir, &[&dns]);

    let garbage = dir.path().join("garbage.bin");
    let bytes = pseudo_random_bytes(4096);
    assert_ne!(&bytes[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "the generated garbage starts with a pcap magic number");
    assert_ne!(&bytes[..4], &[0x0a, 0x0d, 0x0d, 0x0a], "the generated garbage starts with the pcapng magic number");
    fs::write(&garbage, &bytes).expect("write garbage file");

    // The garbage file comes first, so the good file after it shows that the import goes on.
    let output = run_import(&data_dir, &[&garbage, &http]);
    let stderr = stderr_text(&output);

    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains(&path_arg(&garbage)), "the message does not name {}: {stderr}", garbage.display());
    assert!(
        stderr.contains("not a pcap or pcapng file"),
        "the message does not say which formats are accepted: {stderr}"
    );
    assert!(
        stderr.contains(&format!("{}: 682 packets imported", http.display())),
        "the good file was not imported: {stderr}"
    );
    assert!(stderr.contains("from 1 of 2 files"), "the summary does not count the failed file: {stderr}");

    assert_capture_extractable(&data_dir, &http);
    assert_capture_extractable(&data_dir, &dns);
}

#[test]
fn import_header_only_pcap() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let dns = corpus("dns_mdns_llmnr.pcap");
    import(&data_dir, &[&dns]);

    let header_only = dir.path().join("header_only.pcap");
    fs::write(&header_only, pcap_header(65_535, 1)).expect("write header-only pcap");
    let output = run_import(&data_dir, &[&header_only]);
    let stderr = stderr_text(&output);

    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    assert!(stderr.contains(&format!("{}: 0 packets imported", header_only.display())), "stderr: {stderr}");
    assert!(!stderr.contains("warning"), "a header-only pcap is valid, but the import warned: {stderr}");

    assert_capture_extractable(&data_dir, &dns);
}

#[test]
fn import_pcap_cut_mid_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let http = corpus("http_650_responses.pcap");
    let dns = corpus("dns_mdns_llmnr.pcap");
    import(&data_dir, &[&http]);

    // Cut the DNS capture 10 bytes into the data of record 100 (0-based), so 100 records are whole.
    let whole_records = 100;
    let original = fs::read(&dns).expect("read corpus capture");
    let cut_at = record_offset(&original, whole_records) + 16 + 10;
    let cut = dir.path().join("cut.pcap");
    fs::write(&cut, &original[..cut_at]).expect("write cut pcap");

    let output = run_import(&data_dir, &[&cut]);
    let stderr = stderr_text(&output);

    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    assert!(stderr.contains("warning"), "no warning for the cut record: {stderr}");
    assert!(
        stderr.contains(&format!("{}: stopped after packet {whole_records}", cut.display())),
        "the warning does not name the file and packet: {stderr}"
    );
    assert!(stderr.contains("ends in the middle of a record"), "the warning does not say what is wrong: {stderr}");
    assert!(stderr.contains(&format!("{}: {whole_records} packets imported", cut.display())), "stderr: {stderr}");

    let expected: Vec<Packet> = tcpdump_select(&dns, "").into_iter().take(whole_records).collect();
    let (begin_ns, end_ns) = covering_window(&expected);
    let extracted = run_extract(&data_dir, &epoch(begin_ns), &epoch(end_ns), &[]);
    assert_eq!(extracted.status.code(), Some(0), "stderr: {}", stderr_text(&extracted));
    let (_, actual) = read_pcap(&extracted.stdout);
    assert_eq!(actual.len(), whole_records, "packets extracted from the cut capture");
    assert_same_packets("packets before the cut", &sort_by_time(expected), &actual);

    assert_capture_extractable(&data_dir, &http);
}

/// Starts `pktvault import --data-dir DATA_DIR -` and returns it with the
/// pipe to its standard input.
fn start_stdin_import(data_dir: &Path) -> (std::process::Child, std::process::ChildStdin) {
    let mut child = Command::new(pktvault_bin())
        .args(["import", "--data-dir", &path_arg(data_dir), "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pktvault import");
    let stdin = child.stdin.take().expect("stdin");
    (child, stdin)
}

#[test]
fn import_reads_a_pipe() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    // A pcap and a pcapng file, each piped in as standard input.
    for name in ["dns_mdns_llmnr.pcap", "ipv6_ext_options.pcap"] {
        let capture = corpus(name);
        let (child, mut stdin) = start_stdin_import(&data_dir);
        let bytes = fs::read(&capture).expect("read corpus capture");
        let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &bytes));
        let output = child.wait_with_output().expect("wait for pktvault import");
        writer.join().expect("writer thread").expect("write to the pipe");
        let stderr = stderr_text(&output);
        assert_eq!(output.status.code(), Some(0), "{name}: {stderr}");
        let expected = tcpdump_select(&capture, "").len();
        assert!(stderr.contains(&format!("standard input: {expected} packets imported")), "{name}: {stderr}");
    }
    assert_capture_extractable(&data_dir, &corpus("dns_mdns_llmnr.pcap"));
}

/// Returns a little-endian pcapng file with one Ethernet interface of
/// microsecond timestamps and one enhanced packet block per packet.
fn build_pcapng(packets: &[Packet]) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut block = |block_type: u32, body: &[u8]| {
        let length = 12 + body.len().next_multiple_of(4) as u32;
        bytes.extend_from_slice(&block_type.to_le_bytes());
        bytes.extend_from_slice(&length.to_le_bytes());
        bytes.extend_from_slice(body);
        bytes.resize(bytes.len() + body.len().next_multiple_of(4) - body.len(), 0);
        bytes.extend_from_slice(&length.to_le_bytes());
    };
    let mut section = 0x1a2b_3c4du32.to_le_bytes().to_vec();
    section.extend_from_slice(&1u16.to_le_bytes());
    section.extend_from_slice(&0u16.to_le_bytes());
    section.extend_from_slice(&(-1i64).to_le_bytes());
    block(0x0a0d_0d0a, &section);
    let mut interface = 1u16.to_le_bytes().to_vec();
    interface.extend_from_slice(&0u16.to_le_bytes());
    interface.extend_from_slice(&65_535u32.to_le_bytes());
    block(1, &interface);
    for packet in packets {
        let units = packet.ts_ns / 1000;
        let mut body = 0u32.to_le_bytes().to_vec();
        body.extend_from_slice(&((units >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(units as u32).to_le_bytes());
        body.extend_from_slice(&packet.caplen.to_le_bytes());
        body.extend_from_slice(&packet.wire_len.to_le_bytes());
        body.extend_from_slice(&packet.data);
        block(6, &body);
    }
    bytes
}

#[test]
fn interrupted_import_seals_what_it_read() {
    let packets: Vec<Packet> = (0..30_000u64)
        .map(|number| Packet {
            ts_ns: 1_700_000_000_000_000_000 + number * 1_000_000,
            caplen: 60,
            wire_len: 60,
            data: vec![(number % 251) as u8; 60],
        })
        .collect();
    check_interrupted_import(&build_pcap(1, &packets));
    check_interrupted_import(&build_pcapng(&packets));
}

/// Pipes the first 2 MB of `capture`, 30,000 packets of 60 bytes, into an
/// import, signals it while the pipe stays open, and checks that what it
/// read is stored in sealed segments.
fn check_interrupted_import(capture: &[u8]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let (mut child, mut stdin) = start_stdin_import(&data_dir);

    // The first 2 MB go in, the last record cut, and the pipe stays open, as
    // a capture of an idle link leaves it. The import must stop at SIGINT
    // all the same.
    std::io::Write::write_all(&mut stdin, &capture[..2_000_000]).expect("write to the pipe");
    std::thread::sleep(Duration::from_millis(500));
    let signal = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("run kill");
    assert!(signal.success());

    let mut waited = Duration::ZERO;
    while child.try_wait().expect("poll pktvault import").is_none() {
        assert!(waited < Duration::from_secs(20), "the import ignored SIGINT while its input was open");
        std::thread::sleep(Duration::from_millis(50));
        waited += Duration::from_millis(50);
    }
    drop(stdin);
    let output = child.wait_with_output().expect("wait for pktvault import");
    let stderr = stderr_text(&output);
    assert_eq!(output.status.code(), Some(130), "{stderr}");

    let read: u64 = stderr
        .split("standard input: interrupted after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no interrupted line: {stderr}"));
    assert!(read < 30_000, "{stderr}");
    if read == 0 {
        // Interrupted before the first packet: nothing was stored.
        assert!(!data_dir.join("0").join("index").exists(), "{stderr}");
        return;
    }

    let data = path_arg(&data_dir);
    let output = pktvault_expect(&["status", "--data-dir", &data, "--json"], 0);
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("status JSON");
    assert_eq!(status[0]["packets"].as_u64(), Some(read), "{stderr}");

    // The segment was sealed: tcpdump reads it whole.
    for entry in fs::read_dir(data_dir.join("0").join("pcap")).expect("list segments") {
        let segment = entry.expect("segment entry").path();
        let tcpdump = Command::new("tcpdump").args(["-n", "-r"]).arg(&segment).output().expect("run tcpdump");
        assert!(tcpdump.status.success(), "tcpdump cannot read {}: {}", segment.display(), stderr_text(&tcpdump));
        let size = fs::metadata(&segment).expect("segment size").len();
        assert_eq!(size, 24 + read * 76, "{} holds the packets read only", segment.display());
    }
}

#[test]
fn empty_import_leaves_no_index() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    fs::create_dir_all(data_dir.join("8")).expect("create an interface folder");
    let empty = dir.path().join("empty.pcap");
    fs::write(&empty, b"").expect("write an empty file");
    let data = path_arg(&data_dir);
    let output = pktvault(&["import", "--data-dir", &data, "--ifid", "8", &path_arg(&empty)]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr_text(&output));
    assert!(data_dir.join("8").is_dir(), "the folder made before the import stays");
    let left: Vec<_> = fs::read_dir(data_dir.join("8")).expect("list the folder").collect();
    assert!(left.is_empty(), "the import left {left:?}");
    let fresh = dir.path().join("fresh");
    let output = pktvault(&["import", "--data-dir", &path_arg(&fresh), &path_arg(&empty)]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr_text(&output));
    assert!(!fresh.exists(), "the import left the data folder it created");
}

#[test]
fn import_stops_at_oversized_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let frame = |number: u8| Packet {
        ts_ns: 1_700_000_000_000_000_000 + u64::from(number) * 1000,
        caplen: 60,
        wire_len: 60,
        data: vec![number; 60],
    };
    let mut huge = frame(3);
    huge.data = vec![3; 300_000];
    huge.caplen = 300_000;
    huge.wire_len = 300_000;
    let bytes = build_pcap(1, &[frame(1), frame(2), huge, frame(4)]);
    let capture = dir.path().join("oversized.pcap");
    fs::write(&capture, bytes).expect("write test pcap");

    let output = run_import(&data_dir, &[&capture]);
    let stderr = stderr_text(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("stopped after packet 2"), "{stderr}");
    assert!(stderr.contains("captured length of 300000 bytes"), "{stderr}");
    assert!(stderr.contains("262144"), "{stderr}");
    assert!(stderr.contains(&format!("{}: 2 packets imported", capture.display())), "{stderr}");

    // Every segment stays readable by tcpdump.
    for entry in fs::read_dir(data_dir.join("0").join("pcap")).expect("list segments") {
        let segment = entry.expect("segment entry").path();
        let read = Command::new("tcpdump").args(["-n", "-r"]).arg(&segment).output().expect("run tcpdump");
        assert!(read.status.success(), "tcpdump cannot read {}: {}", segment.display(), stderr_text(&read));
    }
}

#[test]
fn import_rejects_unknown_pcap_versions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let mut version_3 = pcap_header(65_535, 1);
    version_3[4..6].copy_from_slice(&3u16.to_le_bytes());
    version_3[6..8].copy_from_slice(&0u16.to_le_bytes());
    let versioned = dir.path().join("version3.pcap");
    fs::write(&versioned, version_3).expect("write test pcap");
    let short = dir.path().join("short.pcap");
    fs::write(&short, &pcap_header(65_535, 1)[..10]).expect("write test pcap");

    let output = run_import(&data_dir, &[&versioned, &short]);
    let stderr = stderr_text(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("pcap version 3.0 is not supported"), "{stderr}");
    assert!(stderr.contains("the input is 10 bytes long, shorter than the 24-byte pcap file header"), "{stderr}");
    assert!(!data_dir.join("0").exists(), "an import that stored nothing left an interface folder");
}

#[test]
fn import_keeps_fcs_bits_of_linktype() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    // The link type field is 0x30000084: JUNIPER_ES with the FCS bits set.
    import(&data_dir, &[&corpus("malformed_linktype_fcsbits.pcap")]);
    let segments: Vec<_> = fs::read_dir(data_dir.join("0").join("pcap")).expect("list segments").collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
    let segment = fs::read(segments[0].as_ref().expect("segment entry").path()).expect("read segment");
    let linktype = u32::from_le_bytes(segment[20..24].try_into().expect("4 bytes"));
    assert_eq!(linktype, 0x3000_0084, "the segment's link type field is {linktype:#x}");
}

#[test]
fn import_rejects_zero_max_age() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = path_arg(&dir.path().join("data"));
    let dns = path_arg(&corpus("dns_mdns_llmnr.pcap"));
    let output = pktvault_expect(&["import", "--data-dir", &data, "--max-age", "0s", &dns], 2);
    let stderr = stderr_text(&output);
    assert!(stderr.contains("--max-age \"0s\" is invalid"), "{stderr}");
    assert!(stderr.contains("above zero"), "{stderr}");
}

#[test]
fn import_unknown_linktype_user0() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let dns = corpus("dns_mdns_llmnr.pcap");
    import(&data_dir, &[&dns]);

    // LINKTYPE_USER0 (147) payloads: an IPv4 header from 192.0.2.1 to
    // 192.0.2.2, which a decoder must not read because USER0 has no defined
    // format, and other bytes. The third packet was cut to 40 of 100 bytes.
    let ipv4_from_192_0_2_1: Vec<u8> = vec![
        0x45, 0x00, 0x00, 0x1c, 0x00, 0x01, 0x00, 0x00, 0x40, 0x11, 0x00, 0x00, 192, 0, 2, 1, 192, 0, 2, 2, 0x30, 0x39,
        0x00, 0x35, 0x00, 0x08, 0x00, 0x00,
    ];
    let base_ns = 1_600_000_000 * NANOS_PER_SEC;
    let packets = vec![
        Packet { ts_ns: base_ns, caplen: 28, wire_len: 28, data: ipv4_from_192_0_2_1 },
        Packet { ts_ns: base_ns + 250_000_000, caplen: 5, wire_len: 5, data: b"user0".to_vec() },
        Packet { ts_ns: base_ns + 250_000_000, caplen: 40, wire_len: 100, data: (0u8..40).collect() },
        Packet { ts_ns: base_ns + 1_000_001_000, caplen: 1, wire_len: 1, data: vec![0xff] },
    ];
    let user0 = dir.path().join("user0.pcap");
    fs::write(&user0, build_pcap(147, &packets)).expect("write USER0 pcap");

    let output = run_import(&data_dir, &[&user0]);
    let stderr = stderr_text(&output);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    assert!(stderr.contains(&format!("{}: 4 packets imported", user0.display())), "stderr: {stderr}");

    let (begin_ns, end_ns) = covering_window(&packets);
    let all = run_extract(&data_dir, &epoch(begin_ns), &epoch(end_ns), &[]);
    assert_eq!(all.status.code(), Some(0), "stderr: {}", stderr_text(&all));
    let (info, actual) = read_pcap(&all.stdout);
    assert_eq!(info.linktype, 147, "linktype of the extracted pcap");
    assert_same_packets("USER0 packets without a filter", &packets, &actual);

    let filtered = run_extract(&data_dir, &epoch(begin_ns), &epoch(end_ns), &["host", "192.0.2.1"]);
    let filtered_stderr = stderr_text(&filtered);
    assert_eq!(filtered.status.code(), Some(1), "a filter that selects nothing must exit 1; stderr: {filtered_stderr}");
    let selected = if filtered.stdout.is_empty() { Vec::new() } else { read_pcap(&filtered.stdout).1 };
    assert!(selected.is_empty(), "'host 192.0.2.1' selected {} USER0 packets", selected.len());
    assert!(
        filtered_stderr.contains("linktype 147 is not decoded"),
        "no warning that linktype 147 is not decoded: {filtered_stderr}"
    );

    assert_capture_extractable(&data_dir, &dns);
}

#[test]
fn import_snoop_file_rejected() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let dns = corpus("dns_mdns_llmnr.pcap");
    import(&data_dir, &[&dns]);

    let snoop = corpus("not_pcap_solaris.snoop");
    let output = run_import(&data_dir, &[&snoop]);
    let stderr = stderr_text(&output);

    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains(&path_arg(&snoop)), "the message does not name {}: {stderr}", snoop.display());
    assert!(
        stderr.contains("not a pcap or pcapng file"),
        "the message does not say which formats are accepted: {stderr}"
    );
    assert!(stderr.contains("imported 0 packets from 0 of 1 files"), "stderr: {stderr}");

    let text = dir.path().join("printed.txt");
    fs::write(&text, "12:00:01.000000 IP 192.0.2.1.53 > 192.0.2.2.4000: UDP, length 40\n").expect("write a text file");
    let output = run_import(&data_dir, &[&text]);
    let stderr = stderr_text(&output);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("it starts with the text \"12:0\"); give a capture file"), "stderr: {stderr}");

    assert_capture_extractable(&data_dir, &dns);
}

#[test]
fn extract_window_without_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let dns = corpus("dns_mdns_llmnr.pcap");
    import(&data_dir, &[&dns]);
    let (first_ns, end_ns) = covering_window(&tcpdump_select(&dns, ""));
    let available = format!("{} to {}", epoch(first_ns), epoch(end_ns - 1));

    // One window before the recorded data, one after it.
    for (begin, end) in [("1000000000", "1000000060"), ("1500000000", "1500000000.5")] {
        let out_file = dir.path().join(format!("empty-{begin}.pcap"));
        let data_dir_arg = path_arg(&data_dir);
        let out_arg = path_arg(&out_file);
        let output =
            pktvault(&["extract", "--data-dir", &data_dir_arg, "--begin", begin, "--end", end, "-w", &out_arg]);
        let stderr = stderr_text(&output);

        assert_eq!(output.status.code(), Some(1), "window [{begin}, {end}): stderr: {stderr}");
        assert!(stderr.contains("no packets were recorded in the window"), "window [{begin}, {end}): {stderr}");
        assert!(
            stderr.contains(&available),
            "window [{begin}, {end}): the message does not give the range {available}: {stderr}"
        );
        assert!(!out_file.exists(), "window [{begin}, {end}): {} was created for an empty result", out_file.display());
    }

    assert_capture_extractable(&data_dir, &dns);
}

#[test]
fn extract_inverted_window() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let dns = corpus("dns_mdns_llmnr.pcap");
    import(&data_dir, &[&dns]);

    // An inverted window and an empty one (begin == end) inside the recorded data.
    for (begin, end) in
        [("1413056000", "1413055000"), ("1413055000.5", "1413055000.5"), ("2014-10-11T19:33:20Z", "1413055000")]
    {
        let output = run_extract(&data_dir, begin, end, &[]);
        let stderr = stderr_text(&output);

        assert_eq!(output.status.code(), Some(2), "window [{begin}, {end}): stderr: {stderr}");
        assert!(
            stderr.contains(&format!("--begin {begin}")),
            "window [{begin}, {end}): the message does not show --begin: {stderr}"
        );
        assert!(
            stderr.contains(&format!("--end {end}")),
            "window [{begin}, {end}): the message does not show --end: {stderr}"
        );
        assert!(
            output.stdout.is_empty(),
            "window [{begin}, {end}): {} bytes written to standard output",
            output.stdout.len()
        );
    }

    assert_capture_extractable(&data_dir, &dns);
}

/// Asserts that `stderr` quotes `filter` and points a caret at byte `position` of it.
fn assert_filter_error_points_at(stderr: &str, filter: &str, position: usize) {
    assert!(stderr.contains(&format!("{filter:?}")), "the message does not quote the filter {filter:?}: {stderr}");
    assert!(
        stderr.contains(&format!("at byte {position}")),
        "the message does not give byte {position} for {filter:?}: {stderr}"
    );

    let lines: Vec<&str> = stderr.lines().collect();
    let echo = lines.iter().position(|line| line.trim_start() == filter && line.ends_with(filter));
    let echo = echo
        .unwrap_or_else(|| panic!("the message does not repeat the filter {filter:?} on a line of its own: {stderr}"));
    let column = lines[echo].len() - filter.len() + position;
    let caret_line = lines.get(echo + 1).copied().unwrap_or("");
    assert_eq!(caret_line.find('^'), Some(column), "the caret for {filter:?} is not under byte {position}: {stderr}");
}

#[test]
fn extract_filter_syntax_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let dns = corpus("dns_mdns_llmnr.pcap");
    import(&data_dir, &[&dns]);

    // Filter words, the joined filter, and the byte where the error is.
    let cases: &[(&[&str], &str, usize)] = &[
        (&["host", "192.0.2.1", "and", "and", "port", "80"], "host 192.0.2.1 and and port 80", 19),
        (&["host 192.0.2.1 and and port 80"], "host 192.0.2.1 and and port 80", 19),
        (&["(tcp"], "(tcp", 4),
    ];
    for (words, filter, position) in cases {
        let output = run_extract(&data_dir, "0", END_OF_PCAP_TIME, words);
        let stderr = stderr_text(&output);

        assert_eq!(output.status.code(), Some(2), "filter {filter:?}: stderr: {stderr}");
        assert!(
            output.stdout.is_empty(),
            "filter {filter:?}: {} bytes written to standard output",
            output.stdout.len()
        );
        assert_filter_error_points_at(&stderr, filter, *position);
    }

    assert_capture_extractable(&data_dir, &dns);
}

#[test]
fn extract_bpf_syntax_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let dns = corpus("dns_mdns_llmnr.pcap");
    import(&data_dir, &[&dns]);

    // A window over the data, and one before it: a typo in the filter is an
    // error whether or not the window contains packets.
    for (begin, end) in [("0", END_OF_PCAP_TIME), ("1000000000", "1000000060")] {
        for filter in ["host 192.0.2.1 and and port 80", "(tcp"] {
            let output = run_extract(&data_dir, begin, end, &["--bpf", filter]);
            let stderr = stderr_text(&output);

            assert_eq!(output.status.code(), Some(2), "--bpf {filter:?} in [{begin}, {end}): stderr: {stderr}");
            assert!(
                stderr.contains(&format!("{filter:?}")),
                "--bpf {filter:?} in [{begin}, {end}): the message does not quote the filter: {stderr}"
            );
            assert!(
                output.stdout.is_empty(),
                "--bpf {filter:?} in [{begin}, {end}): {} bytes written",
                output.stdout.len()
            );
        }
    }

    assert_capture_extractable(&data_dir, &dns);
}

#[test]
fn extract_to_terminal_rejected() {
    require_tool("script");
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let dns = corpus("dns_mdns_llmnr.pcap");
    import(&data_dir, &[&dns]);

    // script(1) from util-linux runs the command with a pseudo-terminal as
    // its standard output, and -e makes it return the command's exit status.
    let command = format!(
        "'{}' extract --data-dir '{}' --begin 0 --end {END_OF_PCAP_TIME}",
        pktvault_bin().display(),
        data_dir.display()
    );
    let output = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("run script");
    let terminal_text = String::from_utf8_lossy(&output.stdout).into_owned();

    assert_eq!(
        output.status.code(),
        Some(2),
        "terminal output: {terminal_text}\nscript stderr: {}",
        stderr_text(&output)
    );
    assert!(
        terminal_text.contains("to a terminal"),
        "the message does not say why the output was rejected: {terminal_text}"
    );
    assert!(terminal_text.contains("-w FILE"), "the message does not say what to do instead: {terminal_text}");
    let pcap_magic: &[u8] = &[0xd4, 0xc3, 0xb2, 0xa1];
    assert!(!output.stdout.windows(4).any(|window| window == pcap_magic), "pcap data was written to the terminal");

    assert_capture_extractable(&data_dir, &dns);
}

// ---------------------------------------------------------------------------
// Time windows against editcap
// ---------------------------------------------------------------------------

/// Runs `editcap -F pcap -A BEGIN -B END` on `capture` and returns the packets kept.
fn editcap_window(capture: &Path, begin: &str, end: &str, out_dir: &Path) -> Vec<Packet> {
    require_tool("editcap");
    let out_file = out_dir.join("editcap-window.pcap");
    let output = Command::new("editcap")
        .args(["-F", "pcap", "-A", begin, "-B", end])
        .arg(capture)
        .arg(&out_file)
        .output()
        .expect("run editcap");
    assert!(
        output.status.success(),
        "editcap -A {begin} -B {end} {} failed: {}",
        capture.display(),
        stderr_text(&output)
    );
    let bytes = fs::read(&out_file).expect("read editcap output");
    read_pcap(&bytes).1
}

/// Returns windows `(begin_ns, end_ns, description)` over `packets`, which are in time order.
fn windows_over(packets: &[Packet]) -> Vec<(u64, u64, String)> {
    let ts: Vec<u64> = packets.iter().map(|packet| packet.ts_ns).collect();
    let last = ts.len() - 1;
    let mut windows = vec![
        (ts[0], ts[last] + 1, "whole capture".to_string()),
        (ts[0], ts[last], "end exactly on the last packet".to_string()),
        (ts[0] + 1, ts[last] + 1, "begin 1 ns after the first packet".to_string()),
        (ts[10], ts[40], "begin and end exactly on packets 10 and 40".to_string()),
        (ts[10], ts[40] + 1, "end 1 ns after packet 40".to_string()),
        (ts[10] - 1, ts[40] - 1, "both 1 ns before a packet".to_string()),
        (ts[last / 3] + 500_000_000, ts[2 * last / 3] + 250_000, "fractions between packets".to_string()),
        (ts[5], ts[5] + 1, "one nanosecond on a packet".to_string()),
    ];

    // Two packets with the same timestamp: both are inside when begin is
    // that timestamp, and both are outside when end is.
    let duplicate = (1..ts.len()).find(|&index| ts[index] == ts[index - 1] && index >= 2 && index + 2 <= last);
    let duplicate = duplicate.expect("the capture has two packets with the same timestamp");
    windows.push((
        ts[duplicate],
        ts[duplicate + 2],
        format!("begin on the duplicated timestamp of packets {} and {duplicate}", duplicate - 1),
    ));
    windows.push((
        ts[duplicate - 2],
        ts[duplicate],
        format!("end on the duplicated timestamp of packets {} and {duplicate}", duplicate - 1),
    ));

    // The largest gap between two packets: a window inside it is empty.
    let gap = (1..ts.len()).max_by_key(|&index| ts[index] - ts[index - 1]).expect("at least two packets");
    windows.push((ts[gap - 1] + 1, ts[gap], format!("inside the gap before packet {gap}")));
    windows
}

fn assert_windows_match_editcap(name: &str) {
    let capture = corpus(name);
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    import(&data_dir, &[&capture]);
    let original = read_pcap(&fs::read(&capture).expect("read corpus capture")).1;
    assert!(
        original.windows(2).all(|pair| pair[0].ts_ns <= pair[1].ts_ns),
        "{name} is not in time order, so editcap -B may differ"
    );

    for (begin_ns, end_ns, description) in windows_over(&original) {
        let (begin, end) = (epoch(begin_ns), epoch(end_ns));
        let context = format!("{name} [{begin}, {end}) ({description})");
        let expected = editcap_window(&capture, &begin, &end, dir.path());
        let in_window = original.iter().filter(|packet| begin_ns <= packet.ts_ns && packet.ts_ns < end_ns).count();
        assert_eq!(
            expected.len(),
            in_window,
            "{context}: editcap kept {} packets, but {in_window} have begin <= ts < end",
            expected.len()
        );

        let output = run_extract(&data_dir, &begin, &end, &[]);
        let expected_code = if expected.is_empty() { 1 } else { 0 };
        assert_eq!(output.status.code(), Some(expected_code), "{context}: stderr: {}", stderr_text(&output));
        let actual = if output.stdout.is_empty() { Vec::new() } else { read_pcap(&output.stdout).1 };
        assert_same_packets(&context, &expected, &actual);
    }
}

#[test]
fn window_http_matches_editcap() {
    assert_windows_match_editcap("http_650_responses.pcap");
}

#[test]
fn window_dns_matches_editcap() {
    assert_windows_match_editcap("dns_mdns_llmnr.pcap");
}

#[test]
fn rfc3339_helper_matches_known_date() {
    assert_eq!(rfc3339(1_700_000_000 * NANOS_PER_SEC, 0), "2023-11-14T22:13:20.000000000Z");
    assert_eq!(rfc3339(1_700_000_000 * NANOS_PER_SEC + 500_000_000, 60), "2023-11-14T23:13:20.500000000+01:00");
    assert_eq!(rfc3339(951_782_400 * NANOS_PER_SEC - 1, -330), "2000-02-28T18:29:59.999999999-05:30");
}

#[test]
fn window_rfc3339_matches_epoch() {
    let capture = corpus("dns_mdns_llmnr.pcap");
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    import(&data_dir, &[&capture]);
    let original = read_pcap(&fs::read(&capture).expect("read corpus capture")).1;

    for (begin_ns, end_ns, description) in windows_over(&original) {
        let epoch_output = run_extract(&data_dir, &epoch(begin_ns), &epoch(end_ns), &[]);
        for offset_minutes in [0, 120, -330] {
            let (begin, end) = (rfc3339(begin_ns, offset_minutes), rfc3339(end_ns, offset_minutes));
            let context = format!("[{begin}, {end}) ({description})");
            let output = run_extract(&data_dir, &begin, &end, &[]);

            assert_eq!(output.status.code(), epoch_output.status.code(), "{context}: stderr: {}", stderr_text(&output));
            assert!(
                output.stdout == epoch_output.stdout,
                "{context}: the output differs from the epoch form [{}, {})",
                epoch(begin_ns),
                epoch(end_ns)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Live recording
// ---------------------------------------------------------------------------

#[test]
fn record_loopback_udp() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let mut recorder = Recorder::start(&data_dir, dir.path());

    // The receiver stays bound, so the kernel sends no ICMP port-unreachable replies.
    let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind UDP receiver");
    let port = receiver.local_addr().expect("receiver address").port();
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind UDP sender");
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
    let nonce = format!("{}-{}", std::process::id(), started.as_nanos());
    let payloads: Vec<String> =
        (0..50).map(|index| format!("pktvault live test {nonce} datagram {index:02}")).collect();
    for payload in &payloads {
        sender.send_to(payload.as_bytes(), ("127.0.0.1", port)).expect("send UDP datagram");
    }
    std::thread::sleep(Duration::from_secs(1));

    recorder.signal(libc::SIGINT);
    let code = recorder.wait_exit(Duration::from_secs(15));
    let record_stderr = recorder.stderr();
    assert_eq!(code, Some(0), "pktvault record exited with {code:?} after SIGINT; stderr: {record_stderr}");
    assert!(record_stderr.contains("recorded "), "pktvault record printed no summary: {record_stderr}");

    let filter = format!("udp port {port}");
    let output = run_extract(&data_dir, "0", END_OF_PCAP_TIME, &[&filter]);
    assert_eq!(output.status.code(), Some(0), "extract '{filter}' after recording: stderr: {}", stderr_text(&output));
    let (info, packets) = read_pcap(&output.stdout);
    assert_eq!(info.linktype, 1, "lo records as Ethernet (LINKTYPE 1)");
    assert!(
        packets.len() >= payloads.len(),
        "extract '{filter}' returned {} packets, {} datagrams were sent",
        packets.len(),
        payloads.len()
    );
    for payload in &payloads {
        let found =
            packets.iter().any(|packet| packet.data.windows(payload.len()).any(|window| window == payload.as_bytes()));
        assert!(found, "the datagram {payload:?} is not among the {} extracted packets", packets.len());
    }
}

// ---------------------------------------------------------------------------
// Output into a pipe
// ---------------------------------------------------------------------------

/// Runs `pktvault extract ... -w - | tcpdump -tt -n -r -` and returns tcpdump's standard output.
fn extract_into_tcpdump(data_dir: &Path, begin: &str, end: &str, rest: &[&str]) -> String {
    require_tool("tcpdump");
    let mut args = vec!["extract".to_string(), "--data-dir".to_string(), path_arg(data_dir)];
    args.extend(["--begin", begin, "--end", end, "-w", "-"].map(String::from));
    args.extend(rest.iter().map(|arg| arg.to_string()));
    let mut extract = Command::new(pktvault_bin())
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pktvault extract");
    let pipe = extract.stdout.take().expect("pktvault stdout pipe");
    let tcpdump = Command::new("tcpdump")
        .args(["-tt", "-n", "-r", "-"])
        .stdin(Stdio::from(pipe))
        .output()
        .expect("run tcpdump -r -");
    let extract = extract.wait_with_output().expect("wait for pktvault extract");

    assert_eq!(
        extract.status.code(),
        Some(0),
        "pktvault {args:?} | tcpdump: pktvault stderr: {}",
        stderr_text(&extract)
    );
    assert!(tcpdump.status.success(), "pktvault {args:?} | tcpdump -r -: tcpdump stderr: {}", stderr_text(&tcpdump));
    String::from_utf8(tcpdump.stdout).expect("tcpdump output is UTF-8")
}

/// Returns the output of `tcpdump -tt -n -r CAPTURE FILTER`.
fn tcpdump_text(capture: &Path, filter: &str) -> String {
    require_tool("tcpdump");
    let output =
        Command::new("tcpdump").args(["-tt", "-n", "-r"]).arg(capture).arg(filter).output().expect("run tcpdump");
    assert!(output.status.success(), "tcpdump -r {} '{filter}' failed: {}", capture.display(), stderr_text(&output));
    String::from_utf8(output.stdout).expect("tcpdump output is UTF-8")
}

#[test]
fn extract_pipe_into_tcpdump() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let dns = corpus("dns_mdns_llmnr.pcap");
    import(&data_dir, &[&dns]);

    let everything = extract_into_tcpdump(&data_dir, "0", END_OF_PCAP_TIME, &[]);
    let expected = tcpdump_text(&dns, "");
    assert_eq!(line_count(&everything), 464, "tcpdump lines for the whole capture");
    assert!(everything == expected, "tcpdump prints the piped extraction differently from the original capture");

    let mdns = extract_into_tcpdump(&data_dir, "0", END_OF_PCAP_TIME, &["--bpf", "udp port 5353"]);
    let expected = tcpdump_text(&dns, "udp port 5353");
    assert!(line_count(&expected) > 0, "the corpus capture has no mDNS packets");
    assert_eq!(line_count(&mdns), line_count(&expected), "tcpdump lines for --bpf 'udp port 5353'");
    assert!(mdns == expected, "tcpdump prints the piped mDNS extraction differently from the original capture");
}

/// Runs `pktvault extract` over all recorded time with `-w target`.
fn extract_to(data_dir: &Path, target: &str) -> Output {
    pktvault(&["extract", "--data-dir", &path_arg(data_dir), "--begin", "0", "--end", END_OF_PCAP_TIME, "-w", target])
}

#[test]
fn extract_absent_host_names_filter() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    import(&data_dir, &[&corpus("dns_mdns_llmnr.pcap")]);
    let out_file = dir.path().join("absent.pcap");
    let data_dir_arg = path_arg(&data_dir);
    let out_arg = path_arg(&out_file);
    let output = pktvault(&[
        "extract",
        "--data-dir",
        &data_dir_arg,
        "--begin",
        "0",
        "--end",
        END_OF_PCAP_TIME,
        "-w",
        &out_arg,
        "host 203.0.113.250",
    ]);
    let stderr = stderr_text(&output);

    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("no packet matched 'host 203.0.113.250' between"), "{stderr}");
    // No segment has a candidate, so none is opened.
    assert!(stderr.contains("(0 candidates read from 0 segments)"), "{stderr}");
    let (_, packets) = read_pcap(&fs::read(&out_file).expect("the output holds the pcap header"));
    assert!(packets.is_empty());
}

#[test]
fn extract_into_missing_folder_names_target() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    import(&data_dir, &[&corpus("dns_mdns_llmnr.pcap")]);
    let target = dir.path().join("missing").join("out.pcap");
    let output = extract_to(&data_dir, &path_arg(&target));
    let stderr = stderr_text(&output);

    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains(&format!("cannot write -w {}", target.display())), "{stderr}");
}

#[test]
fn extract_writes_through_special_files() {
    use std::os::unix::fs::FileTypeExt;

    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    import(&data_dir, &[&corpus("dns_mdns_llmnr.pcap")]);

    let output = extract_to(&data_dir, "/dev/null");
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr_text(&output));
    let null = fs::metadata("/dev/null").expect("stat /dev/null");
    assert!(null.file_type().is_char_device(), "-w /dev/null replaced the device");

    let target = dir.path().join("real.pcap");
    fs::write(&target, b"").unwrap();
    let link = dir.path().join("link.pcap");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let output = extract_to(&data_dir, &path_arg(&link));
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr_text(&output));
    assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "-w replaced the symbolic link");
    assert_eq!(read_pcap(&fs::read(&target).unwrap()).1.len(), 464, "the link's target did not receive the pcap");

    let output = extract_to(&data_dir, &path_arg(dir.path()));
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr_text(&output).contains("is a directory"), "stderr: {}", stderr_text(&output));
    let partial = dir.path().with_extension("partial");
    assert!(!partial.exists(), "a partial file was left at {}", partial.display());
}

#[test]
fn extract_mixed_linktypes_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    import(&data_dir, &[&corpus("pcapng_11_interfaces.pcapng")]);

    let output = run_extract(&data_dir, "0", END_OF_PCAP_TIME, &[]);
    assert_eq!(output.status.code(), Some(2), "stderr: {}", stderr_text(&output));
    assert!(stderr_text(&output).contains("--linktype"), "stderr: {}", stderr_text(&output));
    assert!(output.stdout.is_empty());

    let output = run_extract(&data_dir, "0", END_OF_PCAP_TIME, &["--linktype", "1"]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr_text(&output));
    let (info, packets) = read_pcap(&output.stdout);
    assert_eq!(info.linktype, 1);
    assert!(!packets.is_empty());

    let output = run_extract(&data_dir, "0", END_OF_PCAP_TIME, &["--linktype", "99"]);
    assert_eq!(output.status.code(), Some(2), "stderr: {}", stderr_text(&output));
    let stderr = stderr_text(&output);
    assert!(stderr.contains("no packets of linktype 99"), "stderr: {stderr}");
    assert!(stderr.contains("linktype 1 in"), "stderr: {stderr}");
}

/// SIGINT stops an extraction into a file and removes the partial file, so
/// that no file contains a cut pcap. The extraction of 100 MB must still be
/// running when the signal comes; when it finished first, the case runs again.
#[test]
fn interrupted_extraction_leaves_no_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = dir.path().join("trace.pcap");
    let generator = pktvault_bin().with_file_name("pktvault-gen");
    let status =
        Command::new(generator).args(["--bytes", "100M", "-w"]).arg(&trace).status().expect("run pktvault-gen");
    assert!(status.success(), "pktvault-gen failed");
    let data_dir = dir.path().join("data");
    import(&data_dir, &[&trace]);
    let output_file = dir.path().join("out.pcap");
    let partial = dir.path().join("out.pcap.partial");
    for _ in 0..3 {
        let child = Command::new(pktvault_bin())
            .args(["extract", "--data-dir", &path_arg(&data_dir), "--begin", "0", "--end", "4000000000", "-w"])
            .arg(&output_file)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pktvault extract");
        // The partial file appears after the signal handlers are installed.
        let mut waited = Duration::ZERO;
        while fs::metadata(&partial).map(|meta| meta.len()).unwrap_or(0) == 0 && !output_file.exists() {
            assert!(waited < Duration::from_secs(20), "the extraction wrote nothing in 20 s");
            std::thread::sleep(Duration::from_millis(1));
            waited += Duration::from_millis(1);
        }
        let signal = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("run kill");
        assert!(signal.success());
        let output = child.wait_with_output().expect("wait for pktvault extract");
        let stderr = stderr_text(&output);
        if output.status.code() == Some(0) {
            fs::remove_file(&output_file).expect("remove the finished output");
            continue;
        }
        assert_eq!(output.status.code(), Some(130), "{stderr}");
        assert!(stderr.contains("interrupted;"), "{stderr}");
        assert!(!partial.exists(), "the partial file is left: {stderr}");
        assert!(!output_file.exists(), "a cut output was renamed into place: {stderr}");
        return;
    }
    panic!("the extraction finished before SIGINT three times");
}
