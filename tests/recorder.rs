//! Live recording: packets are extractable while the recorder runs, and a
//! recorder killed with SIGKILL loses nothing it had made durable.

mod common;

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::recorder::Recorder;
use common::*;

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
    std::thread::sleep(Duration::from_millis(1200));

    let packets = extract_port(&data_dir, traffic.port());
    assert_eq!(traffic.found(&packets, &numbers), 20, "packets sent 1.2 s ago are missing while the recorder runs");

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

#[test]
fn killed_recorder_keeps_durable_packets() {
    require_tool("tcpdump");
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut traffic = Traffic::new();
    let mut durable: Vec<usize> = Vec::new();
    for round in 0..3 {
        let recorder = Recorder::start(&data_dir, dir.path());
        durable.extend(traffic.send(30));
        // After a checkpoint interval and a poll interval these are durable.
        std::thread::sleep(Duration::from_millis(1200));
        let before_kill = extract_port(&data_dir, traffic.port());
        assert_eq!(
            traffic.found(&before_kill, &durable),
            durable.len(),
            "round {round}: durable packets missing before the kill"
        );

        // Packets in flight when SIGKILL lands may be lost; the durable ones may not.
        traffic.send(30);
        recorder.signal(libc::SIGKILL);
        drop(recorder);

        let after_kill = extract_port(&data_dir, traffic.port());
        assert_eq!(
            traffic.found(&after_kill, &durable),
            durable.len(),
            "round {round}: durable packets missing after SIGKILL"
        );
    }

    // A new recorder repairs the segments the killed ones left open.
    let mut recorder = Recorder::start(&data_dir, dir.path());
    recorder.signal(libc::SIGINT);
    assert_eq!(recorder.wait_exit(Duration::from_secs(15)), Some(0), "stderr: {}", recorder.stderr());
    assert!(recorder.stderr().contains("recovered a segment"), "no recovery was logged: {}", recorder.stderr());
    assert_segments_clean(&data_dir);
    let recovered = extract_port(&data_dir, traffic.port());
    assert_eq!(traffic.found(&recovered, &durable), durable.len(), "durable packets missing after recovery");
}
