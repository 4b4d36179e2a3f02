//! Live extraction: the pcap of a window streamed as it is found.
//!
//! The extraction runs on a blocking thread and hands chunks of about 256 KiB
//! to the response through a channel of four chunks, so a slow client slows
//! the extraction down instead of filling memory. When the client goes away
//! the channel closes and the extraction is cancelled at its next packet.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pktvault_engine::extract::{extract_to, ExtractControl, ExtractOutcomeError, ExtractRequest, PcapSink};
use pktvault_engine::Error;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use warp::http::header::{HeaderValue, CONTENT_DISPOSITION, CONTENT_TYPE};
use warp::reply::{Reply, Response};

use crate::error::ApiError;
use crate::extraction::{coverage, file_time, is_request_error, outcome_error, selection, Coverage};
use crate::params::ExtractionParams;
use crate::stores::Stores;

/// Chunk size handed to the response. Each chunk wakes the response task
/// and becomes one write to the socket. A one-host query of 2.4 MB took 16%
/// less server CPU time with 256 KiB chunks than with 64 KiB, and 1 MiB
/// saved little more for four times the memory per extraction.
const CHUNK_BYTES: usize = 256 << 10;
/// Capacity of a chunk's buffer: room for the last records that take it
/// past [`CHUNK_BYTES`].
const CHUNK_BUFFER_BYTES: usize = CHUNK_BYTES + (16 << 10);
/// Chunks waiting for the client.
const CHANNEL_CHUNKS: usize = 4;
/// A partly filled chunk is sent after this long, so that sparse matches reach
/// the client while the extraction goes on.
const CHUNK_DELAY: Duration = Duration::from_millis(50);

/// Counters of live extractions since the server started. A HEAD request
/// extracts nothing and counts only in `head_requests`.
#[derive(Debug, Default, Serialize)]
pub struct LiveCounters {
    pub active: AtomicU64,
    pub started: AtomicU64,
    pub completed: AtomicU64,
    /// Stopped because the client went away.
    pub cancelled: AtomicU64,
    /// Requests that got a 4xx status, such as for a window without data
    /// or a filter that does not parse.
    pub rejected: AtomicU64,
    /// Extractions ended by a failure of the server, such as a damaged segment.
    pub failed: AtomicU64,
    pub head_requests: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Set when the server is about to close the connections of the
    /// downloads still open, which then end by its doing, not the clients'.
    #[serde(skip)]
    pub server_stopping: AtomicBool,
}

impl LiveCounters {
    /// Counts a request of a pcap route: a HEAD request, or an extraction
    /// started.
    pub fn count_request(&self, head_only: bool) {
        let counter = if head_only { &self.head_requests } else { &self.started };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request that got a 4xx status before its extraction ran,
    /// such as one with an unknown interface or a bad parameter.
    pub fn count_rejected(&self, head_only: bool) {
        if !head_only {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> serde_json::Value {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        serde_json::json!({
            "active": get(&self.active),
            "started": get(&self.started),
            "completed": get(&self.completed),
            "cancelled_by_client": get(&self.cancelled),
            "rejected": get(&self.rejected),
            "failed": get(&self.failed),
            "head_requests": get(&self.head_requests),
            "bytes_sent": get(&self.bytes_sent),
        })
    }
}

pub(crate) type Chunk = Result<Bytes, std::io::Error>;

/// Sends pcap bytes to the response channel.
struct ChannelSink {
    tx: mpsc::Sender<Chunk>,
    started: Option<oneshot::Sender<()>>,
    /// Whether the request is HEAD: the extraction stops at the pcap header,
    /// which is not sent either.
    head_only: bool,
    buffer: BytesMut,
    /// When the oldest byte of `buffer` was added, by [`coarse_now_ms`].
    first_unsent_ms: Option<u64>,
    counters: Arc<LiveCounters>,
}

/// Returns milliseconds of `CLOCK_MONOTONIC_COARSE`. It advances once per
/// kernel tick (1 to 10 ms), fine enough for [`CHUNK_DELAY`], and costs
/// less than a precise clock read, which took 2% of a sparse extraction.
fn coarse_now_ms() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec for clock_gettime to write. The
    // clock exists since Linux 2.6.32, and on failure `now` stays zero,
    // which only sends the chunk later.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
    now.tv_sec as u64 * 1000 + now.tv_nsec as u64 / 1_000_000
}

impl ChannelSink {
    /// Sends the buffer once it is a chunk or its oldest byte waited [`CHUNK_DELAY`].
    fn appended(&mut self) -> std::io::Result<()> {
        let now_ms = coarse_now_ms();
        let first_ms = *self.first_unsent_ms.get_or_insert(now_ms);
        if self.buffer.len() >= CHUNK_BYTES || now_ms.saturating_sub(first_ms) >= CHUNK_DELAY.as_millis() as u64 {
            self.send()?;
        }
        Ok(())
    }

    /// Sends the buffer first when `bytes` more would not fit in it.
    fn make_room(&mut self, bytes: usize) -> std::io::Result<()> {
        if self.buffer.len() + bytes > self.buffer.capacity() {
            self.send()?;
        }
        Ok(())
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        // A new buffer for each chunk: growing one that a chunk still shares
        // would copy its bytes.
        let chunk = std::mem::replace(&mut self.buffer, BytesMut::with_capacity(CHUNK_BUFFER_BYTES)).freeze();
        let len = chunk.len() as u64;
        self.first_unsent_ms = None;
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::Interrupted, "the client closed the connection"))?;
        self.counters.bytes_sent.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }
}

impl PcapSink for ChannelSink {
    fn header(&mut self, file_header: &[u8; 24]) -> std::io::Result<()> {
        if let Some(started) = self.started.take() {
            let _ = started.send(());
        }
        if self.head_only {
            // Interrupted ends the extraction as cancelled, before any record is read.
            return Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "a HEAD response has no body"));
        }
        self.buffer.extend_from_slice(file_header);
        self.send()
    }

    fn record(&mut self, record_header: &[u8; 16], data: &[u8]) -> std::io::Result<()> {
        self.make_room(record_header.len() + data.len())?;
        self.buffer.extend_from_slice(record_header);
        self.buffer.extend_from_slice(data);
        self.appended()
    }

    /// Appends a run of whole records at once. A run longer than the buffer
    /// (up to one read of the segment reader, about 1 MiB) makes a chunk of
    /// its own.
    fn records(&mut self, records: &[u8]) -> std::io::Result<()> {
        self.make_room(records.len())?;
        self.buffer.extend_from_slice(records);
        self.appended()
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// The response body: the receiving end of the channel.
pub(crate) struct ChunkStream(pub(crate) mpsc::Receiver<Chunk>);

impl futures_util::Stream for ChunkStream {
    type Item = Chunk;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Chunk>> {
        self.0.poll_recv(cx)
    }
}

/// Runs a live extraction and returns an error before any pcap byte, or a streamed pcap.
///
/// With `head_only`, for a HEAD request, the extraction stops at the pcap
/// header: the response has the status and headers of a GET, and no body.
/// The caller counts the request first, with [`LiveCounters::count_request`],
/// and this function counts how it ends.
pub async fn live_extraction(
    stores: Arc<Stores>,
    ifid: u32,
    params: ExtractionParams,
    counters: Arc<LiveCounters>,
    head_only: bool,
) -> Result<Response, ApiError> {
    let selection = selection(&params.filter, params.syntax).inspect_err(|_| counters.count_rejected(head_only))?;
    let (tx, rx) = mpsc::channel::<Chunk>(CHANNEL_CHUNKS);
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let (coverage_tx, coverage_rx) = oneshot::channel::<Option<Coverage>>();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let control = Arc::new(ExtractControl::default());

    // Cancels the extraction when the client goes away.
    let watch_tx = tx.clone();
    let watch_control = control.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = watch_tx.closed() => watch_control.cancel(),
            _ = done_rx => {}
        }
    });

    if !head_only {
        counters.active.fetch_add(1, Ordering::Relaxed);
    }
    let task_counters = counters.clone();
    let window = params.window;
    let linktype = params.linktype;
    let task = tokio::task::spawn_blocking(move || {
        let _done = done_tx;
        let mut header_sent = false;
        let result = (|| -> Result<_, ExtractOutcomeError> {
            let store = stores.get(ifid)?;
            let _ = coverage_tx.send(coverage(&store, window, linktype)?);
            let mut sink = ChannelSink {
                tx: tx.clone(),
                started: Some(started_tx),
                head_only,
                buffer: BytesMut::with_capacity(CHUNK_BUFFER_BYTES),
                first_unsent_ms: None,
                counters: task_counters.clone(),
            };
            let mut request = ExtractRequest { window, selection, linktype };
            let result = extract_to(&store, &mut request, &mut sink, &control);
            header_sent = sink.started.is_none();
            if let Err(ExtractOutcomeError::Engine(err)) = &result {
                if !matches!(err, Error::Cancelled) {
                    // The buffered records precede the failure and are whole,
                    // so they are sent, as the CLI writes them, before the
                    // error breaks the body.
                    // NOTE: hyper may drop chunks still in its write buffer
                    // when the body fails, so a client can get fewer of them.
                    let _ = sink.send();
                }
            }
            result
        })();
        if !head_only {
            let counter = match &result {
                Ok(_) => &task_counters.completed,
                Err(ExtractOutcomeError::Engine(Error::Cancelled)) => &task_counters.cancelled,
                Err(err) if is_request_error(err) => &task_counters.rejected,
                Err(_) => &task_counters.failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            task_counters.active.fetch_sub(1, Ordering::Relaxed);
        }
        if let Err(ExtractOutcomeError::Engine(Error::Cancelled)) = &result {
            if head_only {
                tracing::debug!(ifid, "live extraction of a HEAD request stopped after the pcap header");
                return result;
            }
            if task_counters.server_stopping.load(Ordering::Relaxed) {
                tracing::info!(ifid, packets = control.packets(), "live extraction stopped: the server is stopping");
            } else {
                tracing::info!(
                    ifid,
                    packets = control.packets(),
                    "live extraction stopped: the client closed the connection"
                );
            }
        }
        if let Err(err) = &result {
            // An error before the pcap header becomes the response, and the
            // request's handler logs it. Past the header the status is already
            // sent, so the error is logged here and breaks the chunked body.
            // The client then sees a failed transfer rather than a short pcap.
            let cancelled = matches!(err, ExtractOutcomeError::Engine(Error::Cancelled));
            if header_sent && !cancelled && !is_request_error(err) {
                tracing::warn!(ifid, "live extraction failed after the pcap header: {err}");
                let _ = tx.blocking_send(Err(std::io::Error::other(err.to_string())));
            }
        }
        result
    });

    if started_rx.await.is_err() {
        // The extraction ended without writing a header: it failed.
        return match task.await {
            Ok(Ok(_)) => Err(ApiError::internal("the extraction ended without output")),
            Ok(Err(err)) => Err(outcome_error(err)),
            Err(err) => Err(ApiError::internal(format!("the extraction thread failed: {err}"))),
        };
    }
    let coverage = coverage_rx.await.ok().flatten();
    let mut response = warp::reply::stream(ChunkStream(rx)).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/vnd.tcpdump.pcap"));
    let name = format!("{}-{}.pcap", file_time(window.begin_ns), file_time(window.end_ns));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(CONTENT_DISPOSITION, value);
    }
    if let Some(coverage) = coverage {
        let (begin, end) = coverage.header_values();
        headers.insert("x-pktvault-coverage-begin", HeaderValue::from_str(&begin).expect("digits"));
        headers.insert("x-pktvault-coverage-end", HeaderValue::from_str(&end).expect("digits"));
    }
    Ok(response)
}
