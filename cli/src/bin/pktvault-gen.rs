//! `pktvault-gen`: a deterministic generator of realistic Ethernet traffic as pcap.
//!
//! The same seed and options always give the same bytes. The mix: hosts
//! drawn with Zipf skew (thousands of IPv4 clients, some IPv6), many short
//! flows and a few elephants, about 80% TCP, 17% UDP and 3% ICMP, server
//! ports concentrated on well-known services and client ports from the
//! ephemeral range, a bimodal size distribution between 60 and 1514 bytes,
//! about 10% of flows VLAN-tagged, and timestamps increasing at a set rate.

use std::io::{BufWriter, IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Zipf};

#[derive(Parser)]
#[command(name = "pktvault-gen", about = "Write deterministic, realistic Ethernet traffic as a microsecond pcap")]
struct Args {
    /// Random seed; the same seed gives the same file.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stop after this many packets.
    #[arg(long, conflicts_with = "bytes")]
    packets: Option<u64>,
    /// Stop once the file reaches this many bytes (K, M, G suffixes; powers of 1024).
    #[arg(long)]
    bytes: Option<String>,
    /// Packets per second of packet time.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Timestamp of the first packet, in epoch seconds.
    #[arg(long, default_value_t = 1_700_000_000)]
    start: u32,
    /// Output file; '-' writes to standard output (refused when it is a terminal).
    #[arg(short = 'w', long = "write", default_value = "-")]
    write: String,
}

const IPV4_CLIENTS: usize = 5000;
const IPV4_SERVERS: usize = 800;
const IPV6_HOSTS: usize = 400;
const ACTIVE_FLOWS: usize = 512;

/// Well-known server ports with their relative weights, for TCP and for UDP.
const TCP_SERVICES: &[(u16, u32)] =
    &[(443, 50), (80, 18), (22, 5), (25, 3), (8080, 4), (3306, 3), (993, 2), (5432, 2), (445, 3)];
const UDP_SERVICES: &[(u16, u32)] = &[(53, 55), (123, 10), (443, 20), (5353, 5), (161, 4), (514, 6)];

struct Flow {
    client: Host,
    server: Host,
    proto: u8,
    client_port: u16,
    server_port: u16,
    vlan: Option<u16>,
    remaining: u32,
    /// Typical payload size of the flow's data packets.
    bulk: bool,
}

#[derive(Clone, Copy)]
enum Host {
    V4([u8; 4]),
    V6([u8; 16]),
}

fn ipv4_client(index: usize) -> [u8; 4] {
    [10, (index >> 16) as u8, (index >> 8) as u8, index as u8]
}

fn ipv4_server(index: usize) -> [u8; 4] {
    [198, 18 + (index >> 8) as u8 % 2, (index >> 8) as u8, index as u8]
}

fn ipv6_host(index: usize, server: bool) -> [u8; 16] {
    let mut addr = [0x20, 0x01, 0x0d, 0xb8, 0, if server { 1 } else { 2 }, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    addr[14] = (index >> 8) as u8;
    addr[15] = index as u8;
    addr
}

fn weighted(rng: &mut ChaCha8Rng, table: &[(u16, u32)]) -> u16 {
    let total: u32 = table.iter().map(|(_, weight)| weight).sum();
    let mut pick = rng.random_range(0..total);
    for (port, weight) in table {
        if pick < *weight {
            return *port;
        }
        pick -= weight;
    }
    table[0].0
}

struct Generator {
    rng: ChaCha8Rng,
    client_zipf: Zipf<f64>,
    server_zipf: Zipf<f64>,
    v6_zipf: Zipf<f64>,
    flows: Vec<Flow>,
}

impl Generator {
    fn new(seed: u64) -> Generator {
        let mut generator = Generator {
            rng: ChaCha8Rng::seed_from_u64(seed),
            client_zipf: Zipf::new(IPV4_CLIENTS as f64, 1.1).expect("valid Zipf"),
            server_zipf: Zipf::new(IPV4_SERVERS as f64, 1.2).expect("valid Zipf"),
            v6_zipf: Zipf::new(IPV6_HOSTS as f64, 1.1).expect("valid Zipf"),
            flows: Vec::with_capacity(ACTIVE_FLOWS),
        };
        for _ in 0..ACTIVE_FLOWS {
            let flow = generator.new_flow();
            generator.flows.push(flow);
        }
        generator
    }

    fn new_flow(&mut self) -> Flow {
        let rng = &mut self.rng;
        let v6 = rng.random_bool(0.1);
        let (client, server) = if v6 {
            let client = self.v6_zipf.sample(rng) as usize - 1;
            let server = self.v6_zipf.sample(rng) as usize - 1;
            (Host::V6(ipv6_host(client, false)), Host::V6(ipv6_host(server, true)))
        } else {
            let client = self.client_zipf.sample(rng) as usize - 1;
            let server = self.server_zipf.sample(rng) as usize - 1;
            (Host::V4(ipv4_client(client)), Host::V4(ipv4_server(server)))
        };
        let roll = rng.random_range(0..100);
        let (proto, server_port) = if roll < 80 {
            (6, weighted(rng, TCP_SERVICES))
        } else if roll < 97 {
            (17, weighted(rng, UDP_SERVICES))
        } else {
            (if v6 { 58 } else { 1 }, 0)
        };
        let elephant = rng.random_bool(0.02);
        let remaining = if elephant { rng.random_range(2_000..50_000) } else { rng.random_range(2..40) };
        Flow {
            client,
            server,
            proto,
            client_port: rng.random_range(32768..61000),
            server_port,
            vlan: rng.random_bool(0.1).then(|| [10u16, 20, 30, 100][rng.random_range(0..4)]),
            remaining,
            bulk: elephant || rng.random_bool(0.3),
        }
    }

    /// Builds the next frame.
    fn next_frame(&mut self, frame: &mut Vec<u8>) {
        // Elephants sit in the pool longer, so they send a large share of the packets.
        let index = self.rng.random_range(0..self.flows.len());
        let to_server = self.rng.random_bool(0.5);
        let size_roll = self.rng.random_range(0..100);
        let flow = &mut self.flows[index];
        let payload_len: usize = match flow.proto {
            6 if flow.bulk && !to_server => {
                if size_roll < 85 {
                    1448
                } else {
                    self.rng.random_range(0..1448)
                }
            }
            6 => {
                if size_roll < 70 {
                    0
                } else {
                    self.rng.random_range(1..600)
                }
            }
            17 => self.rng.random_range(20..512),
            _ => 56,
        };
        build_frame(frame, flow, to_server, payload_len);
        flow.remaining -= 1;
        if flow.remaining == 0 {
            self.flows[index] = self.new_flow();
        }
    }
}

fn build_frame(frame: &mut Vec<u8>, flow: &Flow, to_server: bool, payload_len: usize) {
    frame.clear();
    let (src, dst) = if to_server { (flow.client, flow.server) } else { (flow.server, flow.client) };
    let (sport, dport) =
        if to_server { (flow.client_port, flow.server_port) } else { (flow.server_port, flow.client_port) };
    let mac = |host: Host| -> [u8; 6] {
        match host {
            Host::V4(addr) => [0x02, 0, addr[0], addr[1], addr[2], addr[3]],
            Host::V6(addr) => [0x02, 0x06, addr[12], addr[13], addr[14], addr[15]],
        }
    };
    frame.extend_from_slice(&mac(dst));
    frame.extend_from_slice(&mac(src));
    if let Some(vlan) = flow.vlan {
        frame.extend_from_slice(&[0x81, 0x00]);
        frame.extend_from_slice(&vlan.to_be_bytes());
    }
    let mut l4 = Vec::with_capacity(20 + payload_len);
    match flow.proto {
        6 => {
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
            l4.extend_from_slice(&[0, 0, 0x10, 0, 0, 0, 0x20, 0, 0x50, 0x18, 0x01, 0xf6, 0, 0, 0, 0]);
        }
        17 => {
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
            l4.extend_from_slice(&((8 + payload_len) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
        }
        _ => l4.extend_from_slice(&[if to_server { 8 } else { 0 }, 0, 0, 0, 0, 1, 0, 1]),
    }
    l4.extend((0..payload_len).map(|index| (index as u8).wrapping_mul(31)));
    match (src, dst) {
        (Host::V4(src), Host::V4(dst)) => {
            frame.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
            frame.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
            frame.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, flow.proto, 0, 0]);
            frame.extend_from_slice(&src);
            frame.extend_from_slice(&dst);
        }
        (Host::V6(src), Host::V6(dst)) => {
            frame.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            frame.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            frame.extend_from_slice(&[flow.proto, 64]);
            frame.extend_from_slice(&src);
            frame.extend_from_slice(&dst);
        }
        _ => unreachable!("a flow's hosts share an IP version"),
    }
    frame.extend_from_slice(&l4);
    if frame.len() < 60 {
        frame.resize(60, 0);
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    let upper = text.trim().to_ascii_uppercase();
    let digits = upper.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("invalid --bytes {text:?}; give a number with an optional K, M or G suffix"))?;
    let shift = match upper[digits.len()..].trim_end_matches('B').trim_end_matches('I') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => return Err(format!("invalid --bytes suffix in {text:?}; accepted are K, M and G")),
    };
    Ok(number << shift)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.contains("Broken pipe") => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pktvault-gen: {err}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    if args.rate == 0 {
        return Err("--rate 0 is invalid; give packets per second, at least 1".into());
    }
    let max_bytes = args.bytes.as_deref().map(parse_size).transpose()?;
    let max_packets = args.packets.unwrap_or(if max_bytes.is_some() { u64::MAX } else { 100_000 });
    let out: Box<dyn Write> = if args.write == "-" {
        if std::io::stdout().is_terminal() {
            return Err("refusing to write a binary pcap to a terminal; use -w FILE or a pipe".into());
        }
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::fs::File::create(&args.write).map_err(|err| format!("cannot create {}: {err}", args.write))?)
    };
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let io = |err: std::io::Error| err.to_string();
    out.write_all(&pktvault_engine::segment::pcap_file_header(pktvault_schema::TsResolution::Micro, 65535, 1))
        .map_err(io)?;
    let mut generator = Generator::new(args.seed);
    let mut frame = Vec::with_capacity(1600);
    let mut written = 24u64;
    let interval_ns = 1_000_000_000 / args.rate.max(1);
    let start_ns = u64::from(args.start) * 1_000_000_000;
    for number in 0..max_packets {
        generator.next_frame(&mut frame);
        if max_bytes.is_some_and(|max| written + 16 + frame.len() as u64 > max) {
            break;
        }
        let ts_ns = start_ns + number * interval_ns + generator.rng.random_range(0..interval_ns.max(1)) / 2;
        let mut record = [0u8; 16];
        record[0..4].copy_from_slice(&((ts_ns / 1_000_000_000) as u32).to_le_bytes());
        record[4..8].copy_from_slice(&(((ts_ns % 1_000_000_000) / 1000) as u32).to_le_bytes());
        record[8..12].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        record[12..16].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        out.write_all(&record).map_err(io)?;
        out.write_all(&frame).map_err(io)?;
        written += 16 + frame.len() as u64;
    }
    out.flush().map_err(io)
}
