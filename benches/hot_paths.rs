//! Micro-benchmarks of the hot paths: decoding and indexing a packet,
//! planning a filter over a segment's bitmaps, and extracting (reading
//! candidates and writing pcap).
//!
//! Run with `cargo bench --bench hot_paths`; `cargo test --benches` runs each
//! benchmark once as a check. The data is built from a fixed seed.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pktvault_engine::decode::decode;
use pktvault_engine::extract::{extract, ExtractRequest, Selection};
use pktvault_engine::filter::parse;
use pktvault_engine::filter::plan::candidates;
use pktvault_engine::index::SegmentIndex;
use pktvault_engine::ingest::{Ingester, SegmentLimits, SourcePacket};
use pktvault_engine::store::InterfaceStore;
use pktvault_schema::time::TimeWindow;
use pktvault_schema::TsResolution;

const PACKETS: u32 = 20_000;

/// Builds a TCP/IPv4 frame of host `10.0.x.y` to one of 64 servers, with a payload of 0 to 1400 bytes.
fn frame(number: u32) -> Vec<u8> {
    let mixed = number.wrapping_mul(2_654_435_761);
    let client = [10, 0, (mixed >> 8) as u8 % 16, mixed as u8];
    let server = [198, 18, 0, (mixed >> 16) as u8 % 64];
    let payload = (mixed >> 20) as usize % 1400;
    let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00, 0x45, 0];
    frame.extend_from_slice(&((40 + payload) as u16).to_be_bytes());
    frame.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0]);
    frame.extend_from_slice(&client);
    frame.extend_from_slice(&server);
    frame.extend_from_slice(&(40_000 + (mixed % 1000) as u16).to_be_bytes());
    frame.extend_from_slice(&[1, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    frame.resize(frame.len() + payload, 0xab);
    frame
}

fn decode_and_index(c: &mut Criterion) {
    let frames: Vec<Vec<u8>> = (0..PACKETS).map(frame).collect();
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(u64::from(PACKETS)));
    group.bench_function("decode_and_index", |b| {
        b.iter(|| {
            let mut index = SegmentIndex::default();
            for (number, data) in frames.iter().enumerate() {
                index.add(number as u32, &decode(1, data, data.len() as u32));
            }
            index.len()
        })
    });
    group.finish();
}

fn recorded_store(dir: &std::path::Path) -> InterfaceStore {
    let store = InterfaceStore::open_writable(dir, 0).unwrap();
    let mut ingester = Ingester::new(store, SegmentLimits::default()).unwrap();
    for number in 0..PACKETS {
        let data = frame(number);
        let packet = SourcePacket {
            ts_sec: 1_700_000_000 + number / 10_000,
            ts_frac: number % 10_000 * 100,
            resolution: TsResolution::Micro,
            wire_len: data.len() as u32,
            data: &data,
        };
        ingester.ingest(1, 65535, &packet).unwrap();
    }
    ingester.finish().unwrap().0
}

fn plan_and_extract(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = recorded_store(dir.path());
    let segments = store.segments().unwrap();
    let expr = parse("net 10.0.3.0/24 and not port 443 or host 198.18.0.7").unwrap();
    c.bench_function("plan/net_not_port_host", |b| {
        b.iter(|| {
            let bitmaps = store.bitmaps(&segments[0]);
            bitmaps.packets_of(&candidates(&expr, &bitmaps).unwrap()).unwrap().len()
        })
    });
    let window = TimeWindow { begin_ns: 0, end_ns: u64::MAX };
    let mut group = c.benchmark_group("extract");
    group.throughput(Throughput::Elements(u64::from(PACKETS)));
    group.bench_function("all_packets_to_pcap", |b| {
        b.iter(|| {
            let mut request = ExtractRequest { window, selection: Selection::All, linktype: None };
            let mut output = Vec::with_capacity(16 << 20);
            extract(&store, &mut request, &mut output).unwrap();
            output.len()
        })
    });
    group.bench_function("one_host", |b| {
        b.iter(|| {
            let mut request = ExtractRequest {
                window,
                selection: Selection::Native(parse("host 10.0.1.7").unwrap()),
                linktype: None,
            };
            let mut output = Vec::new();
            extract(&store, &mut request, &mut output).unwrap();
            output.len()
        })
    });
    group.finish();
}

criterion_group!(benches, decode_and_index, plan_and_extract);
criterion_main!(benches);
