//! Live recording: packets are extractable while the recorder runs, and a
//! recorder killed with SIGKILL at 20 moments loses nothing it had made
//! durable, leaving index and segment files in agreement.

mod common;

use std::collections::HashSet;
use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::recorder::Recorder;
use common::*;
use pktvault_engine::store::InterfaceStore;

/// A receiving socket on loopback (bound, so the kernel sends no ICMP errors) and a sender.
struct Traffic {
    receiver: UdpSocket,
    sender: UdpSocket,
    sent: Vec<String>,
}

impl Traffic {
    fn new() -> Traffic {
        let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind UDP receiver");
        let sender = UdpSocket::bind("127.0.0.1:0").expect("bind UDP sender");
        Traffic { receiver, sender, sent: Vec::new() }
    }

    fn port(&self) -> u16 {
        self.receiver.local_addr().expect("receiver address").port()
    }

    /// Sends `count` datagrams and returns the range of their numbers.
    fn send(&mut self, count: usize) -> std::ops::Range<usize> {
        let first = self.sent.len();
        for _ in 0..count {
            let payload = format!("pktvault recorder test {} datagram {:04}", std::process::id(), self.sent.len());
            self.sender.send_to(payload.as_bytes(), ("127.0.0.1", self.port())).expect("send UDP datagram");
            self.sent.push(payload);
        }
        first..self.sent.len()
    }

    /// Returns how many of the payloads numbered `numbers` appear in `packets`.
    fn found(&self, packets: &[Packet], numbers: &[usize]) -> usize {
        numbers
            .iter()
            .map(|number| &self.sent[*number])
            .filter(|payload| {
                packets
                    .iter()
                    .any(|packet| packet.data.windows(payload.len()).any(|window| window == payload.as_bytes()))
            })
            .count()
    }
}

fn extract_port(data_dir: &Path, port: u16) -> Vec<Packet> {
    extract_all(data_dir, &format!("udp port {port}"), false).1
}

#[test]
fn running_recorder_serves_recent_packets() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut recorder = Recorder::start(&data_dir, dir.path());
    let mut traffic = Traffic::new();
    let numbers: Vec<usize> = traffic.send(20).collect();
    std::thread::sleep(Duration::from_millis(900));

    let packets = extract_port(&data_dir, traffic.port());
    assert_eq!(traffic.found(&packets, &numbers), 20, "packets sent 0.9 s ago are missing while the recorder runs");

    recorder.signal(libc::SIGINT);
    assert_eq!(recorder.wait_exit(Duration::from_secs(15)), Some(0), "stderr: {}", recorder.stderr());
}

/// Asserts that tcpdump reads every segment file to its end without a warning.
fn assert_segments_clean(data_dir: &Path) {
    for entry in std::fs::read_dir(data_dir.join("0/pcap")).unwrap() {
        let path = entry.unwrap().path();
        let output = Command::new("tcpdump").arg("-r").arg(&path).arg("-c").arg("1000000").output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "tcpdump cannot read {}: {stderr}", path.display());
        assert!(!stderr.contains("truncated"), "{} has a torn record: {stderr}", path.display());
    }
}

/// Asserts that index and segment files agree: every file has an index
/// entry, a sealed segment's file has exactly the bytes its entry records, and
/// an open one at least as many.
fn assert_index_matches_files(data_dir: &Path) {
    assert_index_matches_older_files(data_dir, None);
}

/// Names of the segment files of interface 0.
fn segment_files(data_dir: &Path) -> HashSet<String> {
    std::fs::read_dir(data_dir.join("0/pcap"))
        .map(|entries| entries.map(|entry| entry.unwrap().file_name().to_string_lossy().to_string()).collect())
        .unwrap_or_default()
}

/// Like [`assert_index_matches_files`] while a recorder runs: a segment file
/// it created after `older` was listed gets its index entry only at its first
/// checkpoint, so only the files in `older` must have one.
fn assert_index_matches_older_files(data_dir: &Path, older: Option<&HashSet<String>>) {
    let store = InterfaceStore::open_read_only(data_dir, 0).unwrap();
    let segments = store.segments().unwrap();
    for entry in std::fs::read_dir(store.pcap_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let meta = segments.iter().find(|meta| meta.file_name == name);
        if meta.is_none() && older.is_some_and(|older| !older.contains(&name)) {
            continue;
        }
        let meta = meta.unwrap_or_else(|| panic!("segment file {name} has no index entry"));
        let size = std::fs::metadata(&path).unwrap().len();
        if meta.sealed {
            assert_eq!(size, meta.file_bytes, "sealed segment {name}: file size and index disagree");
        } else {
            assert!(size >= meta.file_bytes, "open segment {name}: the file is shorter than its checkpoint");
        }
    }
    for meta in &segments {
        assert!(store.pcap_dir().join(&meta.file_name).exists(), "index entry {} has no file", meta.file_name);
    }
}

/// Asserts that tcpdump reads a whole extraction of the port without complaint.
fn assert_extraction_readable(data_dir: &Path, port: u16) {
    let output = pktvault(&[
        "extract",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--begin",
        "0",
        "--end",
        "18000000000",
        &format!("udp port {port}"),
    ]);
    assert_eq!(output.status.code(), Some(0), "extract failed: {}", String::from_utf8_lossy(&output.stderr));
    let mut tcpdump = Command::new("tcpdump")
        .args(["-r", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(tcpdump.stdin.as_mut().unwrap(), &output.stdout).unwrap();
    let result = tcpdump.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "tcpdump cannot read the extraction: {stderr}");
    assert!(!stderr.contains("truncated"), "the extraction ends in a torn record: {stderr}");
}

#[test]
fn killed_recorder_keeps_durable_packets() {
    require_tool("tcpdump");
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut traffic = Traffic::new();
    let mut durable: Vec<usize> = Vec::new();
    // A fixed linear congruential sequence picks the kill moments.
    let mut random: u64 = 0x2545_f491_4f6c_dd1d;
    for round in 0..20 {
        // The recorder captures all of lo, where other tests send too, so it
        // may start a segment of its own before the check below.
        let before_start = segment_files(&data_dir);
        let recorder = Recorder::start(&data_dir, dir.path());
        if round > 0 {
            assert!(
                recorder.stderr().contains("recovered a segment"),
                "round {round}: no recovery was logged: {}",
                recorder.stderr()
            );
            assert_index_matches_older_files(&data_dir, Some(&before_start));
        }
        durable.extend(traffic.send(10));
        // After a checkpoint interval and a poll interval these are durable.
        std::thread::sleep(Duration::from_millis(1200));
        let before_kill = extract_port(&data_dir, traffic.port());
        assert_eq!(
            traffic.found(&before_kill, &durable),
            durable.len(),
            "round {round}: durable packets missing before the kill"
        );

        // Packets in flight when SIGKILL lands may be lost; the durable ones may not.
        traffic.send(10);
        random = random.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        std::thread::sleep(Duration::from_millis((random >> 33) % 700));
        recorder.signal(libc::SIGKILL);
        drop(recorder);

        let after_kill = extract_port(&data_dir, traffic.port());
        assert_eq!(
            traffic.found(&after_kill, &durable),
            durable.len(),
            "round {round}: durable packets missing after SIGKILL"
        );
        assert_extraction_readable(&data_dir, traffic.port());
    }

    // A last recorder repairs the segments and stops cleanly.
    let mut recorder = Recorder::start(&data_dir, dir.path());
    recorder.signal(libc::SIGINT);
    assert_eq!(recorder.wait_exit(Duration::from_secs(15)), Some(0), "stderr: {}", recorder.stderr());
    assert_index_matches_files(&data_dir);
    assert_segments_clean(&data_dir);
    let recovered = extract_port(&data_dir, traffic.port());
    assert_eq!(traffic.found(&recovered, &durable), durable.len(), "durable packets missing after recovery");
}

fn status_json(data_dir: &Path) -> serde_json::Value {
    let output = pktvault_expect(&["status", "--data-dir", data_dir.to_str().unwrap(), "--json"], 0);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("status prints JSON");
    report[0].clone()
}

#[test]
fn status_follows_recorder_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut traffic = Traffic::new();

    let mut recorder = Recorder::start(&data_dir, dir.path());
    traffic.send(10);
    std::thread::sleep(Duration::from_millis(1200));
    let running = status_json(&data_dir);
    assert_eq!(running["recorder"]["state"], "running", "{running:#}");
    assert_eq!(running["recorder"]["interface"], "lo");
    assert!(running["recorder"]["uptime_secs"].is_u64(), "{running:#}");
    assert!(running["recorder"]["packets"].as_u64().unwrap() >= 10, "{running:#}");
    assert!(running["last_packet_ns"].as_u64().is_some(), "{running:#}");
    let log = running["log_tail"].as_array().unwrap();
    assert!(log.iter().any(|line| line.as_str().unwrap().contains("capture started")), "{running:#}");

    recorder.signal(libc::SIGINT);
    assert_eq!(recorder.wait_exit(Duration::from_secs(15)), Some(0));
    let stopped = status_json(&data_dir);
    assert_eq!(stopped["recorder"]["state"], "stopped", "{stopped:#}");
    assert!(stopped["recorder"]["uptime_secs"].is_null());

    let recorder = Recorder::start(&data_dir, dir.path());
    recorder.signal(libc::SIGKILL);
    drop(recorder);
    let killed = status_json(&data_dir);
    assert_eq!(killed["recorder"]["state"], "failed", "{killed:#}");
    assert!(killed["recorder"]["reason"].as_str().unwrap().contains("exited without stopping"), "{killed:#}");
}

#[test]
fn several_interfaces_record_to_own_ifids() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut traffic = Traffic::new();
    let mut recorder = Recorder::start_with(&data_dir, dir.path(), &["-i", "lo", "-i", "lo@7"]);
    let numbers: Vec<usize> = traffic.send(10).collect();
    std::thread::sleep(Duration::from_millis(1200));
    recorder.signal(libc::SIGINT);
    assert_eq!(recorder.wait_exit(Duration::from_secs(15)), Some(0), "stderr: {}", recorder.stderr());

    for ifid in ["0", "7"] {
        let output = pktvault_expect(
            &[
                "extract",
                "--data-dir",
                data_dir.to_str().unwrap(),
                "--ifid",
                ifid,
                "--begin",
                "0",
                "--end",
                "18000000000",
                &format!("udp port {}", traffic.port()),
            ],
            0,
        );
        let packets = read_pcap(&output.stdout).1;
        assert_eq!(traffic.found(&packets, &numbers), 10, "ifid {ifid} misses packets");
    }
}

#[test]
fn config_file_sets_each_interface() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = dir.path().join("pktvault.toml");
    std::fs::write(
        &config,
        "[[interface]]\nname = \"lo\"\nifid = 3\nsnaplen = 64\ncapture_filter = \"udp\"\nsegment_seconds = 30\n",
    )
    .unwrap();
    let mut traffic = Traffic::new();
    let mut recorder = Recorder::start_with(&data_dir, dir.path(), &["--config", config.to_str().unwrap()]);
    traffic.send(5);
    std::thread::sleep(Duration::from_millis(1200));
    recorder.signal(libc::SIGTERM);
    assert_eq!(recorder.wait_exit(Duration::from_secs(15)), Some(0), "stderr: {}", recorder.stderr());

    let output = pktvault_expect(
        &[
            "extract",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--ifid",
            "3",
            "--begin",
            "0",
            "--end",
            "18000000000",
            &format!("udp port {}", traffic.port()),
        ],
        0,
    );
    let (info, packets) = read_pcap(&output.stdout);
    assert!(packets.len() >= 5, "{} packets recorded", packets.len());
    assert!(packets.iter().all(|packet| packet.caplen <= 64), "snaplen 64 was not applied");
    assert!(info.snaplen >= 64);

    std::fs::write(&config, "[[interface]]\nname = \"lo\"\nsnaplen = 0\n").unwrap();
    let output =
        pktvault_expect(&["record", "--data-dir", data_dir.to_str().unwrap(), "--config", config.to_str().unwrap()], 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("snaplen 0"), "{stderr}");
    std::fs::write(&config, "[[interface]]\nname = \"lo\"\nsnap_len = 10\n").unwrap();
    let output =
        pktvault_expect(&["record", "--data-dir", data_dir.to_str().unwrap(), "--config", config.to_str().unwrap()], 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("snap_len"), "{stderr}");
}

#[test]
fn orphan_segment_file_is_reindexed() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    import(&data_dir, &[&corpus("dns_mdns_llmnr.pcap")]);
    // A segment file whose writer died before its first checkpoint, with a torn last record.
    let orphan = data_dir.join("0/pcap/1413746216.000000000-00000099.pcap");
    let mut bytes = std::fs::read(corpus("http_650_responses.pcap")).unwrap();
    bytes.truncate(bytes.len() - 10);
    std::fs::write(&orphan, &bytes).unwrap();

    // The next writer re-indexes it.
    import(&data_dir, &[&corpus("vlan_8021q_cdp.pcap")]);
    assert!(!orphan.exists(), "the orphan file was not replaced");
    let expected = read_pcap(&std::fs::read(corpus("http_650_responses.pcap")).unwrap()).1;
    let (_, actual) = extract_all(&data_dir, "", false);
    let from_orphan = actual.iter().filter(|packet| expected.contains(packet)).count();
    assert_eq!(from_orphan, expected.len() - 1, "every whole record of the orphan is extractable");
    assert_index_matches_files(&data_dir);
}

#[test]
fn second_writer_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut recorder = Recorder::start(&data_dir, dir.path());
    let output = pktvault_expect(
        &["import", "--data-dir", data_dir.to_str().unwrap(), corpus("rawip4_228.pcap").to_str().unwrap()],
        2,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("being written by another process"), "{stderr}");
    assert!(!stderr.contains("LOCK"), "the raw RocksDB error leaks: {stderr}");
    recorder.signal(libc::SIGINT);
    assert_eq!(recorder.wait_exit(Duration::from_secs(15)), Some(0), "stderr: {}", recorder.stderr());
}

#[test]
fn record_with_serve_answers_over_http_while_recording() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut recorder = Recorder::start_with(&data_dir, dir.path(), &["-i", "lo", "--serve", "127.0.0.1:0"]);
    // The server may log its address after the capture starts, so the
    // whole line is waited for.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let addr = loop {
        let stderr = recorder.stderr();
        let line = stderr.split("serving http://").nth(1).and_then(|rest| rest.split_once('\n'));
        if let Some((line, _)) = line {
            break line.split('/').next().expect("an address").to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no 'serving http://' line: {stderr}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut traffic = Traffic::new();
    let numbers: Vec<usize> = traffic.send(20).collect();
    std::thread::sleep(Duration::from_millis(900));

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let url = format!(
        "http://{addr}/api/v1/interfaces/0/pcap?begin={}&end={}&filter=udp%20port%20{}",
        now - 60,
        now + 60,
        traffic.port()
    );
    let response = reqwest::blocking::get(&url).expect("GET live extraction");
    assert_eq!(response.status().as_u16(), 200);
    let packets = read_pcap(&response.bytes().unwrap()).1;
    assert_eq!(traffic.found(&packets, &numbers), 20, "packets sent 0.9 s ago are missing from the HTTP answer");

    let status: serde_json::Value =
        reqwest::blocking::get(format!("http://{addr}/api/v1/interfaces/0/status")).unwrap().json().unwrap();
    assert_eq!(status["recorder"]["state"], "running", "{status}");

    recorder.signal(libc::SIGINT);
    assert_eq!(recorder.wait_exit(Duration::from_secs(15)), Some(0), "stderr: {}", recorder.stderr());
    assert!(std::net::TcpStream::connect(&addr).is_err(), "the server still listens after the recorder stopped");
}
