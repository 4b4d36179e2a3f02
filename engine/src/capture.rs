//! Live capture with libpcap into an [`Ingester`].

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pktvault_schema::TsResolution;

use crate::ingest::{IngestStats, Ingester, SourcePacket};
use crate::{Error, Result};

/// Settings of one live capture.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// Interface name, as `tcpdump -i` takes it.
    pub interface: String,
    /// Bytes kept of each packet.
    pub snaplen: u32,
    pub promiscuous: bool,
    /// Kernel buffer size in bytes.
    pub buffer_bytes: u32,
    /// A libpcap capture filter applied in the kernel, if any.
    pub capture_filter: Option<String>,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            interface: String::new(),
            snaplen: 262_144,
            promiscuous: true,
            buffer_bytes: 32 << 20,
            capture_filter: None,
        }
    }
}

/// Counters of a finished capture.
#[derive(Debug, Clone, Copy, Default)]
pub struct CaptureStats {
    pub ingest: IngestStats,
    /// Packets dropped by libpcap because its buffer was full (`ps_drop`).
    pub dropped: u64,
    /// Packets dropped by the interface or its driver (`ps_ifdrop`).
    pub interface_dropped: u64,
}

/// Maps a DLT value reported by libpcap to the LINKTYPE value a pcap file stores.
fn dlt_to_linktype(dlt: i32) -> u32 {
    match dlt {
        12 | 14 => 101,
        other => other as u32,
    }
}

/// How often the capture loop wakes up to check `stop` and read drop counters.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How often the open segments are made durable and extractable. A packet is
/// extractable at most this long, plus one poll interval, after its capture.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(300);

/// Captures packets on `config.interface` into `ingester` until `stop` is set.
///
/// The capture runs in immediate mode without blocking, so packets at low
/// rates are written at once and a stop request is seen within
/// [`POLL_INTERVAL`] even when no packet arrives. `progress` is called after
/// every checkpoint with the counters so far.
pub fn capture(
    config: &CaptureConfig,
    ingester: &mut Ingester,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(&CaptureStats),
) -> Result<CaptureStats> {
    let capture_error =
        |err: pcap::Error| Error::Capture { interface: config.interface.clone(), message: err.to_string() };
    let inactive = pcap::Capture::from_device(config.interface.as_str()).map_err(capture_error)?;
    let mut handle = inactive
        .promisc(config.promiscuous)
        .snaplen(config.snaplen as i32)
        .buffer_size(config.buffer_bytes as i32)
        .immediate_mode(true)
        .timeout(100)
        .precision(pcap::Precision::Nano)
        .open()
        .map_err(capture_error)?
        .setnonblock()
        .map_err(capture_error)?;
    if let Some(filter) = &config.capture_filter {
        handle.filter(filter, true).map_err(capture_error)?;
    }
    let linktype = dlt_to_linktype(handle.get_datalink().0);
    tracing::info!(interface = %config.interface, linktype, snaplen = config.snaplen, "capture started");
    let fd = handle.as_raw_fd();
    let mut stats = CaptureStats::default();
    let mut last_stats_read = Instant::now();
    let mut last_checkpoint = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let mut poll_fd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the capture's descriptor, which lives as long as `handle`.
        let ready = unsafe { libc::poll(&mut poll_fd, 1, POLL_INTERVAL.as_millis() as libc::c_int) };
        if ready < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::Capture {
                    interface: config.interface.clone(),
                    message: format!("poll failed: {err}"),
                });
            }
        }
        loop {
            match handle.next_packet() {
                Ok(packet) => {
                    let header = packet.header;
                    let source = SourcePacket {
                        ts_sec: header.ts.tv_sec as u32,
                        // With nanosecond precision libpcap puts nanoseconds in tv_usec.
                        ts_frac: header.ts.tv_usec as u32,
                        resolution: TsResolution::Nano,
                        wire_len: header.len,
                        data: packet.data,
                    };
                    ingester.ingest(linktype, config.snaplen, &source)?;
                }
                Err(pcap::Error::TimeoutExpired) | Err(pcap::Error::NoMorePackets) => break,
                Err(err) => return Err(capture_error(err)),
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        if last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL {
            last_checkpoint = Instant::now();
            ingester.checkpoint()?;
            stats.ingest = ingester.stats();
            progress(&stats);
        }
        if last_stats_read.elapsed() >= Duration::from_secs(1) {
            last_stats_read = Instant::now();
            read_drops(&mut handle, &mut stats, ingester);
        }
    }
    read_drops(&mut handle, &mut stats, ingester);
    stats.ingest = ingester.stats();
    tracing::info!(interface = %config.interface, packets = stats.ingest.packets, dropped = stats.dropped, "capture stopped");
    Ok(stats)
}

fn read_drops(handle: &mut pcap::Capture<pcap::Active>, stats: &mut CaptureStats, ingester: &mut Ingester) {
    if let Ok(counters) = handle.stats() {
        let dropped = u64::from(counters.dropped);
        if dropped > stats.dropped {
            ingester.add_dropped(dropped - stats.dropped);
            stats.dropped = dropped;
        }
        stats.interface_dropped = u64::from(counters.if_dropped);
    }
}
