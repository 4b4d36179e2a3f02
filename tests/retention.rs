//! Retention: an interface stays within its disk budget and age limit while
//! it ingests many times that volume, deleting only its oldest segments.

mod common;

use common::frames::*;
use common::read_pcap;
use pktvault_engine::extract::{extract, ExtractRequest, Selection};
use pktvault_engine::ingest::{Ingester, SegmentLimits, SourcePacket};
use pktvault_engine::retention::{disk_usage, RetentionPolicy};
use pktvault_engine::store::InterfaceStore;
use pktvault_schema::time::TimeWindow;
use pktvault_schema::TsResolution;

const SEGMENT_BYTES: u64 = 512 << 10;
const MAX_DISK: u64 = 12 << 20;
const START_SECS: u32 = 1_700_000_000;

/// Builds a 1,000-byte UDP frame whose payload carries `number`.
fn frame(number: u32) -> Vec<u8> {
    let mut payload = number.to_be_bytes().to_vec();
    payload.resize(958, 0xab);
    ethernet(&[], 0x0800, &ipv4([192, 0, 2, 1], [192, 0, 2, 2], 17, 0, &udp(4000, 5000, &payload)))
}

/// Ingests packets `numbers`, 100 per second of packet time, checking the
/// disk usage after every 50 packets; returns the largest usage seen.
fn ingest(ingester: &mut Ingester, numbers: std::ops::Range<u32>, max_disk: u64) -> u64 {
    let mut largest = 0;
    for number in numbers {
        let data = frame(number);
        let packet = SourcePacket {
            ts_sec: START_SECS + number / 100,
            ts_frac: (number % 100) * 10_000,
            resolution: TsResolution::Micro,
            wire_len: data.len() as u32,
            data: &data,
        };
        ingester.ingest(1, 65535, &packet).unwrap();
        if number % 50 == 0 {
            let usage = disk_usage(ingester.store()).unwrap();
            assert!(usage <= max_disk, "usage {usage} exceeds the limit {max_disk} after packet {number}");
            largest = largest.max(usage);
        }
    }
    largest
}

/// Returns the packet numbers of every packet still extractable.
fn extractable(store: &InterfaceStore) -> Vec<u32> {
    let mut request = ExtractRequest {
        window: TimeWindow { begin_ns: 0, end_ns: u64::from(u32::MAX) * 1_000_000_000 },
        selection: Selection::All,
        linktype: None,
    };
    let mut output = Vec::new();
    extract(store, &mut request, &mut output).unwrap();
    read_pcap(&output).1.iter().map(|packet| u32::from_be_bytes(packet.data[42..46].try_into().unwrap())).collect()
}

#[test]
fn disk_limit_holds_and_drops_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let limits = SegmentLimits { seconds: 3600, bytes: SEGMENT_BYTES };
    let policy = RetentionPolicy { max_bytes: Some(MAX_DISK), max_age_ns: None };
    let store = InterfaceStore::open_writable(dir.path(), 0).unwrap();
    let mut ingester = Ingester::new(store, limits).unwrap().with_retention(policy).unwrap();
    // About 60 MB, five times the limit.
    let largest = ingest(&mut ingester, 0..60_000, MAX_DISK);
    let (store, _) = ingester.finish().unwrap();
    assert!(disk_usage(&store).unwrap() <= MAX_DISK);
    // Deleting no more than needed: at least half the budget is still in use.
    assert!(largest > MAX_DISK / 2, "the largest usage seen was only {largest} bytes");

    let kept = extractable(&store);
    let first = *kept.first().expect("recent packets are kept");
    assert!(first > 0, "the oldest packets should have been deleted");
    assert_eq!(kept, (first..60_000).collect::<Vec<u32>>(), "the kept packets are not the newest, in order");
    let kept_bytes = kept.len() as u64 * 1016;
    assert!(kept_bytes > MAX_DISK / 2, "only {kept_bytes} bytes of packets are kept");
    drop(store);

    // A restarted writer accounts for the data already there.
    let store = InterfaceStore::open_writable(dir.path(), 0).unwrap();
    let mut ingester = Ingester::new(store, limits).unwrap().with_retention(policy).unwrap();
    assert_eq!(extractable(ingester.store()).first(), Some(&first), "a restart under the limit deleted data");
    ingest(&mut ingester, 60_000..70_000, MAX_DISK);
    let (store, _) = ingester.finish().unwrap();
    assert!(disk_usage(&store).unwrap() <= MAX_DISK);
    let kept = extractable(&store);
    assert_eq!(kept.last(), Some(&69_999));
    let first = kept[0];
    assert_eq!(kept, (first..70_000).collect::<Vec<u32>>());
}

#[test]
fn age_limit_drops_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let limits = SegmentLimits { seconds: 2, bytes: 64 << 20 };
    let policy = RetentionPolicy { max_bytes: None, max_age_ns: Some(10_000_000_000) };
    let store = InterfaceStore::open_writable(dir.path(), 0).unwrap();
    let mut ingester = Ingester::new(store, limits).unwrap().with_retention(policy).unwrap();
    // 60 seconds of packet time.
    ingest(&mut ingester, 0..6_000, u64::MAX);
    let (store, _) = ingester.finish().unwrap();
    let kept = extractable(&store);
    let first = kept[0];
    // Segments span 2 s, and are deleted at the next rotation once their newest
    // packet is more than 10 s older than the newest packet.
    assert!((6_000 - 1_400..=6_000 - 1_000).contains(&first), "the oldest kept packet is {first}");
    assert_eq!(kept, (first..6_000).collect::<Vec<u32>>());
}

/// Unmounts a test filesystem when dropped.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Mounts a 16 MiB tmpfs in `dir`, or returns `None` after printing why the
/// test `name` is skipped.
fn small_filesystem(dir: &std::path::Path, name: &str) -> Option<(std::path::PathBuf, Mount)> {
    let mount_point = dir.join("small");
    std::fs::create_dir(&mount_point).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "pktvault-test", mount_point.to_str().unwrap()])
        .output()
        .unwrap();
    if !mounted.status.success() {
        eprintln!(
            "SKIPPED {name}: cannot mount a 16 MiB tmpfs (needs root): {}",
            String::from_utf8_lossy(&mounted.stderr)
        );
        return None;
    }
    Some((mount_point.clone(), Mount(mount_point)))
}

#[test]
fn full_disk_frees_oldest_and_continues() {
    let dir = tempfile::tempdir().unwrap();
    let Some((mount_point, _mount)) = small_filesystem(dir.path(), "full_disk_frees_oldest_and_continues") else {
        return;
    };
    let limits = SegmentLimits { seconds: 3600, bytes: 1 << 20 };
    let store = InterfaceStore::open_writable(&mount_point, 0).unwrap();
    let mut ingester = Ingester::new(store, limits).unwrap();
    // About 40 MB into 16 MiB, with no disk limit set: the disk fills up.
    ingest(&mut ingester, 0..40_000, u64::MAX);
    let (store, _) = ingester.finish().unwrap();
    let kept = extractable(&store);
    let first = kept[0];
    assert!(first > 0, "nothing was deleted, so the disk never filled");
    assert_eq!(kept, (first..40_000).collect::<Vec<u32>>(), "the kept packets are not the newest, in order");
}

#[test]
fn small_filesystem_rejects_large_segments() {
    let dir = tempfile::tempdir().unwrap();
    let Some((mount_point, _mount)) = small_filesystem(dir.path(), "small_filesystem_rejects_large_segments") else {
        return;
    };
    let small = SegmentLimits { seconds: 3600, bytes: 1 << 20 };
    let mut ingester = Ingester::new(InterfaceStore::open_writable(&mount_point, 0).unwrap(), small).unwrap();
    ingest(&mut ingester, 0..3_000, u64::MAX);
    drop(ingester.finish().unwrap());

    // Two 8 MiB segments and the index do not fit in 16 MiB, even with the
    // recorded segments deleted, so the ingester stops before deleting any.
    let large = SegmentLimits { seconds: 3600, bytes: 8 << 20 };
    let err = match Ingester::new(InterfaceStore::open_writable(&mount_point, 0).unwrap(), large) {
        Ok(_) => panic!("8 MiB segments were accepted on a 16 MiB filesystem"),
        Err(err) => err.to_string(),
    };
    assert!(err.contains("two segments of 8388608 bytes"), "{err}");
    assert!(err.contains("use a smaller --segment-bytes, such as "), "{err}");
    assert!(err.contains(", which keeps about six segments"), "{err}");
    let store = InterfaceStore::open_read_only(&mount_point, 0).unwrap();
    assert_eq!(extractable(&store), (0..3_000).collect::<Vec<u32>>(), "recorded packets were deleted");
}
