//! Extraction: the packets of a time window that match a filter, as one pcap.
//!
//! For each segment overlapping the window the planner turns the filter into
//! a candidate bitmap, the time table drops chunks outside the window (when
//! the window cuts the segment), and only the candidates are read and checked
//! exactly. Segments are merged by
//! timestamp; ties keep ingest order (segment id, then position).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io::{IoSlice, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use pktvault_schema::time::{format_epoch_ns, TimeWindow, NANOS_PER_SEC};
use pktvault_schema::{SegmentMeta, TsResolution};

use crate::decode::{decode, is_decoded_linktype};
use crate::filter::bpf::BpfFilter;
use crate::filter::{matches, Expr};
use crate::segment::{pcap_file_header, RecordHeader};
use crate::store::InterfaceStore;
use crate::{Error, Result};

mod plans;

use plans::{plan_segment, Exact, PlanQueue, PlannedSegment, Pruning};

/// The packet selection of an extraction.
pub enum Selection {
    /// Every packet of the window.
    All,
    /// A filter in the default language.
    Native(Expr),
    /// A filter in libpcap syntax, matched by libpcap.
    Bpf(BpfFilter),
}

/// An extraction request.
pub struct ExtractRequest {
    pub window: TimeWindow,
    pub selection: Selection,
    /// Keep only segments of this link type.
    pub linktype: Option<u32>,
}

/// Counters of one extraction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractStats {
    pub packets: u64,
    /// Bytes written, pcap header included.
    pub bytes: u64,
    pub segments_read: u64,
    /// Packets read from segment files and checked exactly.
    pub candidates: u64,
    pub linktype: u32,
    /// Link types in the window whose packets the default filter language does not decode.
    pub undecoded_linktypes: Vec<u32>,
}

/// Shared view of a running extraction: progress counters another thread can
/// read, and a flag that stops the extraction at the next candidate packet.
#[derive(Debug, Default)]
pub struct ExtractControl {
    cancelled: Arc<AtomicBool>,
    segments_total: AtomicU64,
    segments_done: AtomicU64,
    packets: AtomicU64,
    bytes: AtomicU64,
}

impl ExtractControl {
    /// Returns a control whose extraction stops when `flag` is set, for
    /// example by a signal handler.
    pub fn cancelled_by(flag: Arc<AtomicBool>) -> ExtractControl {
        ExtractControl { cancelled: flag, ..ExtractControl::default() }
    }

    /// Asks the extraction to stop; it returns [`Error::Cancelled`].
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Fraction of the selected segments read so far, from 0 to 1.
    pub fn progress(&self) -> f64 {
        let total = self.segments_total.load(Ordering::Relaxed);
        if total == 0 {
            return 0.0;
        }
        (self.segments_done.load(Ordering::Relaxed) as f64 / total as f64).min(1.0)
    }

    /// Packets written so far.
    pub fn packets(&self) -> u64 {
        self.packets.load(Ordering::Relaxed)
    }

    /// Bytes written so far, pcap header included.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// Maximum number of ranges in one vectored write, `IOV_MAX` on Linux.
const MAX_RUNS_PER_WRITE: usize = 1024;

/// Receives the pcap an extraction produces: one file header, then whole
/// records. [`extract_to`] calls `header` only once the request is known to
/// succeed, so a sink that has seen no header may still return an error response.
pub trait PcapSink {
    fn header(&mut self, file_header: &[u8; 24]) -> std::io::Result<()>;
    fn record(&mut self, record_header: &[u8; 16], data: &[u8]) -> std::io::Result<()>;
    fn finish(&mut self) -> std::io::Result<()>;

    /// Writes whole consecutive records, headers included, as they are in
    /// the output format. The default passes them to [`PcapSink::record`] one by one.
    fn records(&mut self, mut records: &[u8]) -> std::io::Result<()> {
        while records.len() >= 16 {
            let header: &[u8; 16] = records[..16].try_into().expect("16 bytes");
            let caplen = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes")) as usize;
            let Some(data) = records.get(16..16 + caplen) else { break };
            self.record(header, data)?;
            records = &records[16 + caplen..];
        }
        if records.is_empty() {
            Ok(())
        } else {
            Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the last record is incomplete"))
        }
    }

    /// Writes the whole records in each range of `buffer`, in order. The
    /// default passes each range to [`PcapSink::records`].
    fn records_vectored(&mut self, buffer: &[u8], runs: &[std::ops::Range<usize>]) -> std::io::Result<()> {
        for run in runs {
            self.records(&buffer[run.clone()])?;
        }
        Ok(())
    }
}

/// A [`PcapSink`] that writes one pcap byte stream.
pub struct WriteSink<W: Write>(pub W);

impl<W: Write> PcapSink for WriteSink<W> {
    fn header(&mut self, file_header: &[u8; 24]) -> std::io::Result<()> {
        self.0.write_all(file_header)
    }

    fn record(&mut self, record_header: &[u8; 16], data: &[u8]) -> std::io::Result<()> {
        self.0.write_all(record_header)?;
        self.0.write_all(data)
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }

    fn records(&mut self, records: &[u8]) -> std::io::Result<()> {
        self.0.write_all(records)
    }

    /// Writes the ranges with vectored writes. A `BufWriter` passes a large
    /// vectored write straight to its file, so the records skip its buffer.
    fn records_vectored(&mut self, buffer: &[u8], runs: &[std::ops::Range<usize>]) -> std::io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = runs.iter().map(|run| IoSlice::new(&buffer[run.clone()])).collect();
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            match self.0.write_vectored(slices) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(written) => IoSlice::advance_slices(&mut slices, written),
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

/// Reasons an extraction produced no pcap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExtractError {
    /// Nothing was recorded in the window.
    #[error("no packets were recorded in the window [{}, {}); {}", format_epoch_ns(*.begin_ns), format_epoch_ns(*.end_ns), describe_range(.available))]
    NoDataInWindow { begin_ns: u64, end_ns: u64, available: Option<(u64, u64)> },
    /// `--linktype` names a link type that no segment in the window has.
    #[error("the window holds no packets of linktype {requested}; it holds {}", describe_linktypes(.present))]
    NoSuchLinktype { requested: u32, present: Vec<(u32, u64)> },
    /// The matching packets have different link types, which one pcap cannot hold.
    #[error("the window holds packets of several link types ({}), and a pcap file has one; choose one with --linktype", describe_linktypes(.linktypes))]
    MixedLinktypes { linktypes: Vec<(u32, u64)> },
}

fn describe_range(available: &Option<(u64, u64)>) -> String {
    match available {
        Some((first, last)) => {
            format!("the recorded data covers {} to {}", format_epoch_ns(*first), format_epoch_ns(*last))
        }
        None => "nothing has been recorded for this interface yet".to_string(),
    }
}

fn describe_linktypes(linktypes: &[(u32, u64)]) -> String {
    linktypes
        .iter()
        .map(|(linktype, segments)| format!("linktype {linktype} in {segments} segment(s)"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Returns the first and last packet time recorded, over all segments.
pub fn recorded_range(segments: &[SegmentMeta]) -> Option<(u64, u64)> {
    let first = segments.iter().map(|meta| meta.min_ts_ns).min()?;
    let last = segments.iter().map(|meta| meta.max_ts_ns).max()?;
    Some((first, last))
}

/// An extracted packet waiting in the merge.
struct Pending {
    header: RecordHeader,
    resolution: TsResolution,
    data: Vec<u8>,
}

/// Yields one segment's matching packets in timestamp order.
struct SegmentStream {
    planned: PlannedSegment,
    /// Candidates still to read, in file order.
    next: roaring::bitmap::IntoIter,
    /// For segments whose timestamps go backwards: matches sorted by time.
    sorted: Option<std::vec::IntoIter<(u64, u32)>>,
    /// The buffer of the packet written last, reused for the next one.
    spare: Vec<u8>,
}

impl SegmentStream {
    fn new(
        planned: PlannedSegment,
        request: &ExtractRequest,
        stats: &mut ExtractStats,
        control: &ExtractControl,
    ) -> Result<SegmentStream> {
        let next = planned.candidates.clone().into_iter();
        let mut planned = planned;
        planned.reader.set_wanted(&planned.candidates);
        let mut stream = SegmentStream { planned, next, sorted: None, spare: Vec::new() };
        if !stream.planned.reader.meta().monotonic {
            let mut matches = Vec::new();
            while let Some((ts_ns, packet)) = stream.next_in_file_order(request, stats, control)? {
                matches.push((ts_ns, packet));
            }
            matches.sort_unstable();
            stream.sorted = Some(matches.into_iter());
        }
        Ok(stream)
    }

    fn accepts(request: &ExtractRequest, linktype: u32, data: &[u8], wire_len: u32) -> bool {
        match &request.selection {
            Selection::All => true,
            Selection::Native(expr) => matches(expr, &decode(linktype, data, wire_len)),
            Selection::Bpf(filter) => filter.matches(linktype, data, wire_len),
        }
    }

    /// Returns whether candidate `packet`, read as `data`, is in the window and matches.
    fn selects(
        request: &ExtractRequest,
        exact: &Exact,
        linktype: u32,
        packet: u32,
        ts_ns: u64,
        data: &[u8],
        wire_len: u32,
    ) -> bool {
        request.window.contains(ts_ns) && (exact.contains(packet) || Self::accepts(request, linktype, data, wire_len))
    }

    /// Returns the next matching packet number in file order, with its timestamp.
    fn next_in_file_order(
        &mut self,
        request: &ExtractRequest,
        stats: &mut ExtractStats,
        control: &ExtractControl,
    ) -> Result<Option<(u64, u32)>> {
        let monotonic = self.planned.reader.meta().monotonic;
        let resolution = self.planned.reader.meta().resolution;
        let linktype = self.planned.reader.meta().linktype;
        for packet in self.next.by_ref() {
            if control.is_cancelled() {
                return Err(Error::Cancelled);
            }
            stats.candidates += 1;
            let (header, data) = self.planned.reader.packet(packet)?;
            let ts_ns = header.ts_ns(resolution);
            if ts_ns >= request.window.end_ns && monotonic {
                break;
            }
            if Self::selects(request, &self.planned.exact, linktype, packet, ts_ns, data, header.wire_len) {
                return Ok(Some((ts_ns, packet)));
            }
        }
        Ok(None)
    }

    fn next_packet(
        &mut self,
        request: &ExtractRequest,
        stats: &mut ExtractStats,
        control: &ExtractControl,
    ) -> Result<Option<(u64, u32, Pending)>> {
        let found = match &mut self.sorted {
            Some(sorted) => sorted.next(),
            None => self.next_in_file_order(request, stats, control)?,
        };
        let Some((ts_ns, packet)) = found else { return Ok(None) };
        let resolution = self.planned.reader.meta().resolution;
        let (header, data) = self.planned.reader.packet(packet)?;
        let mut buffer = std::mem::take(&mut self.spare);
        buffer.clear();
        buffer.extend_from_slice(data);
        Ok(Some((ts_ns, packet, Pending { header, resolution, data: buffer })))
    }
}

impl SegmentStream {
    /// Writes the remaining matches of the stream to `output`, in order,
    /// and returns whether it wrote them all: it stops once `output` has
    /// `budget` bytes or more.
    ///
    /// Used when no other segment can hold a packet before this stream's
    /// last one, so no merge is needed. Matches are written from the
    /// reader's buffer without a copy, and runs of adjacent matches in one
    /// write when their record headers need no conversion.
    fn drain(
        &mut self,
        request: &ExtractRequest,
        stats: &mut ExtractStats,
        control: &ExtractControl,
        output: &mut PcapOutput<'_>,
        budget: u64,
    ) -> Result<bool> {
        let resolution = self.planned.reader.meta().resolution;
        if let Some(sorted) = &mut self.sorted {
            for (_, packet) in sorted.by_ref() {
                let (header, data) = self.planned.reader.packet(packet)?;
                output.write(header, resolution, data)?;
                stats.packets += 1;
                output.report(stats, control);
                if output.bytes >= budget {
                    return Ok(false);
                }
            }
            return Ok(true);
        }
        let meta = self.planned.reader.meta();
        let monotonic = meta.monotonic;
        let linktype = meta.linktype;
        let raw = resolution == output.resolution;
        let in_window = request.window.begin_ns <= meta.min_ts_ns && meta.max_ts_ns < request.window.end_ns;
        if budget == u64::MAX && raw && in_window && matches!(self.planned.exact, Exact::All) {
            self.drain_unchecked(stats, control, output)?;
            return Ok(true);
        }
        // Byte ranges in the reader's buffer of matches not yet written, one
        // range per run of adjacent matches, and their total length. They
        // are written before the reader loads other bytes into its buffer.
        let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
        let mut pending = 0;
        let mut finished = true;
        for packet in self.next.by_ref() {
            if control.is_cancelled() {
                return Err(Error::Cancelled);
            }
            if !runs.is_empty() && (!self.planned.reader.is_loaded(packet) || runs.len() >= MAX_RUNS_PER_WRITE) {
                output.write_runs(self.planned.reader.buffer(), &runs)?;
                runs.clear();
                pending = 0;
            }
            stats.candidates += 1;
            let (header, data) = match self.planned.reader.packet(packet) {
                Ok(record) => record,
                Err(err) => {
                    // The matches before a damaged record are whole: written first.
                    output.write_runs(self.planned.reader.buffer(), &runs)?;
                    return Err(err);
                }
            };
            let ts_ns = header.ts_ns(resolution);
            if ts_ns >= request.window.end_ns && monotonic {
                break;
            }
            if !Self::selects(request, &self.planned.exact, linktype, packet, ts_ns, data, header.wire_len) {
                continue;
            }
            if raw {
                let record = self.planned.reader.last_record().expect("a record was just read");
                pending += record.len() as u64;
                match runs.last_mut() {
                    Some(range) if range.end == record.start => range.end = record.end,
                    _ => runs.push(record),
                }
            } else {
                output.write(header, resolution, data)?;
            }
            stats.packets += 1;
            output.report(stats, control);
            if output.bytes + pending >= budget {
                finished = false;
                break;
            }
        }
        if !runs.is_empty() {
            output.write_runs(self.planned.reader.buffer(), &runs)?;
        }
        Ok(finished)
    }

    /// Writes every remaining candidate to `output` in file order without
    /// decoding it. The caller checks that the segment lies inside the
    /// window, that the index proves every candidate, and that the records
    /// are in the output's format.
    fn drain_unchecked(
        &mut self,
        stats: &mut ExtractStats,
        control: &ExtractControl,
        output: &mut PcapOutput<'_>,
    ) -> Result<()> {
        let reader = &mut self.planned.reader;
        let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
        let mut next = self.next.next();
        while let Some(packet) = next {
            if control.is_cancelled() {
                return Err(Error::Cancelled);
            }
            if !runs.is_empty() && (!reader.is_loaded(packet) || runs.len() >= MAX_RUNS_PER_WRITE) {
                output.write_runs(reader.buffer(), &runs)?;
                runs.clear();
            }
            let collected = match reader.collect_runs(&mut next, &mut self.next, &mut runs, MAX_RUNS_PER_WRITE) {
                Ok(collected) => collected,
                Err(err) => {
                    // The records collected before a damaged one are whole: written first.
                    output.write_runs(reader.buffer(), &runs)?;
                    return Err(err);
                }
            };
            stats.candidates += collected;
            stats.packets += collected;
            output.report(stats, control);
        }
        if !runs.is_empty() {
            output.write_runs(reader.buffer(), &runs)?;
        }
        Ok(())
    }
}

/// Writes classic pcap records into a sink.
struct PcapOutput<'a> {
    sink: &'a mut dyn PcapSink,
    resolution: TsResolution,
    bytes: u64,
    /// Whether [`PcapOutput::report`] publishes the counters.
    reports: bool,
}

impl<'a> PcapOutput<'a> {
    fn new(
        sink: &'a mut dyn PcapSink,
        resolution: TsResolution,
        snaplen: u32,
        linktype: u32,
    ) -> Result<PcapOutput<'a>> {
        sink.header(&pcap_file_header(resolution, snaplen, linktype)).map_err(output_error)?;
        Ok(PcapOutput { sink, resolution, bytes: 24, reports: true })
    }

    /// Returns an output of records only, without a file header, whose
    /// counters are not published: a segment's records extracted ahead.
    fn records_only(sink: &'a mut dyn PcapSink, resolution: TsResolution) -> PcapOutput<'a> {
        PcapOutput { sink, resolution, bytes: 0, reports: false }
    }

    fn write(&mut self, header: RecordHeader, resolution: TsResolution, data: &[u8]) -> Result<()> {
        let mut header = header;
        if resolution != self.resolution {
            // Only microsecond records go into a nanosecond file.
            let ts_ns = header.ts_ns(resolution);
            header.ts_sec = (ts_ns / NANOS_PER_SEC) as u32;
            header.ts_frac = (ts_ns % NANOS_PER_SEC) as u32;
        }
        let mut record = [0u8; 16];
        record[0..4].copy_from_slice(&header.ts_sec.to_le_bytes());
        record[4..8].copy_from_slice(&header.ts_frac.to_le_bytes());
        record[8..12].copy_from_slice(&header.caplen.to_le_bytes());
        record[12..16].copy_from_slice(&header.wire_len.to_le_bytes());
        self.sink.record(&record, data).map_err(output_error)?;
        self.bytes += 16 + data.len() as u64;
        Ok(())
    }

    /// Writes whole consecutive records already in the output's format.
    fn write_records(&mut self, records: &[u8]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.sink.records(records).map_err(output_error)?;
        self.bytes += records.len() as u64;
        Ok(())
    }

    /// Writes whole records already in the output's format.
    fn write_runs(&mut self, buffer: &[u8], runs: &[std::ops::Range<usize>]) -> Result<()> {
        self.sink.records_vectored(buffer, runs).map_err(output_error)?;
        self.bytes += runs.iter().map(|run| run.len() as u64).sum::<u64>();
        Ok(())
    }

    /// Publishes the counters to `control`.
    fn report(&self, stats: &ExtractStats, control: &ExtractControl) {
        if !self.reports {
            return;
        }
        control.packets.store(stats.packets, Ordering::Relaxed);
        control.bytes.store(self.bytes, Ordering::Relaxed);
    }
}

/// Maps a sink error to an engine error. A sink that stops on purpose reports
/// `Interrupted`, which is a cancellation.
fn output_error(err: std::io::Error) -> Error {
    if err.kind() == std::io::ErrorKind::Interrupted {
        Error::Cancelled
    } else {
        Error::Output(err)
    }
}

/// Chooses the segments to read, or explains why there are none.
fn select_segments(
    store: &InterfaceStore,
    request: &mut ExtractRequest,
) -> Result<Vec<SegmentMeta>, ExtractOutcomeError> {
    let window = request.window;
    let all = store.segments()?;
    if let Selection::Bpf(filter) = &mut request.selection {
        check_compiles(filter, &all)?;
    }
    let mut overlapping: Vec<SegmentMeta> = all
        .iter()
        .filter(|meta| meta.packets > 0 && window.overlaps(meta.min_ts_ns, meta.max_ts_ns))
        .filter(|meta| request.linktype.is_none_or(|linktype| linktype == meta.linktype))
        .cloned()
        .collect();
    if overlapping.is_empty() {
        if let Some(requested) = request.linktype {
            let mut present: BTreeMap<u32, u64> = BTreeMap::new();
            for meta in all.iter().filter(|meta| meta.packets > 0 && window.overlaps(meta.min_ts_ns, meta.max_ts_ns)) {
                *present.entry(meta.linktype).or_default() += 1;
            }
            if !present.is_empty() {
                return Err(ExtractError::NoSuchLinktype { requested, present: present.into_iter().collect() }.into());
            }
        }
        let available = recorded_range(&all);
        return Err(ExtractError::NoDataInWindow { begin_ns: window.begin_ns, end_ns: window.end_ns, available }.into());
    }
    let mut linktypes: BTreeMap<u32, u64> = BTreeMap::new();
    for meta in &overlapping {
        *linktypes.entry(meta.linktype).or_default() += 1;
    }
    if linktypes.len() > 1 {
        // Only link types with candidate packets count; computing the
        // candidates once here costs index reads but no segment reads.
        if let Selection::Bpf(filter) = &mut request.selection {
            for linktype in linktypes.keys() {
                filter.prepare(*linktype)?;
            }
        }
        let mut with_candidates: BTreeMap<u32, u64> = BTreeMap::new();
        for meta in &overlapping {
            let pruning = Pruning::new(&request.selection, meta.linktype);
            if plan_segment(store, meta, request.window, &pruning)?.is_some() {
                *with_candidates.entry(meta.linktype).or_default() += 1;
            }
        }
        if with_candidates.len() > 1 {
            return Err(ExtractError::MixedLinktypes { linktypes: with_candidates.into_iter().collect() }.into());
        }
        let chosen = with_candidates.keys().next().copied().unwrap_or(overlapping[0].linktype);
        overlapping.retain(|meta| meta.linktype == chosen);
    }
    overlapping.sort_by_key(|meta| (meta.min_ts_ns, meta.segment_id));
    Ok(overlapping)
}

/// Checks that libpcap compiles `filter` for at least one link type recorded
/// in `store` (Ethernet when nothing is recorded yet).
pub fn check_bpf(store: &InterfaceStore, filter: &mut BpfFilter) -> Result<()> {
    check_compiles(filter, &store.segments()?)
}

/// Compiles a libpcap filter for every link type recorded, so that a typo is
/// reported even for a window without packets. An error is returned only when
/// no recorded link type accepts the filter: a filter may be valid for some
/// link types and not others (`ether host` on raw IP, for example).
fn check_compiles(filter: &mut BpfFilter, segments: &[SegmentMeta]) -> Result<()> {
    let mut linktypes: Vec<u32> = segments.iter().map(|meta| meta.linktype).collect();
    linktypes.sort_unstable();
    linktypes.dedup();
    if linktypes.is_empty() {
        linktypes.push(crate::decode::linktype::ETHERNET);
    }
    let mut first_error = None;
    for linktype in linktypes {
        match filter.prepare(linktype) {
            Ok(()) => return Ok(()),
            Err(err) => {
                first_error.get_or_insert(err);
            }
        }
    }
    Err(first_error.expect("at least one link type was tried"))
}

/// Error of [`extract`]: either an engine failure or an [`ExtractError`].
#[derive(Debug, thiserror::Error)]
pub enum ExtractOutcomeError {
    #[error(transparent)]
    Engine(#[from] Error),
    #[error(transparent)]
    Empty(#[from] ExtractError),
}

/// Writes the packets selected by `request` to `out` as one pcap file.
///
/// Nothing is written when the result is an [`ExtractError`], so a caller can
/// still return an error response instead of a pcap.
pub fn extract<W: Write>(
    store: &InterfaceStore,
    request: &mut ExtractRequest,
    out: W,
) -> Result<ExtractStats, ExtractOutcomeError> {
    extract_to(store, request, &mut WriteSink(out), &ExtractControl::default())
}

/// Like [`extract`], into any [`PcapSink`], reporting progress to `control`
/// and stopping with [`Error::Cancelled`] when it is cancelled.
pub fn extract_to(
    store: &InterfaceStore,
    request: &mut ExtractRequest,
    sink: &mut dyn PcapSink,
    control: &ExtractControl,
) -> Result<ExtractStats, ExtractOutcomeError> {
    let segments = select_segments(store, request)?;
    control.segments_total.store(segments.len() as u64, Ordering::Relaxed);
    let linktype = segments[0].linktype;
    if let Selection::Bpf(filter) = &mut request.selection {
        filter.prepare(linktype)?;
    }
    let resolution = if segments.iter().any(|meta| meta.resolution == TsResolution::Nano) {
        TsResolution::Nano
    } else {
        TsResolution::Micro
    };
    let snaplen = segments.iter().map(|meta| meta.snaplen).max().unwrap_or(262_144);
    let mut stats = ExtractStats { linktype, ..ExtractStats::default() };
    if matches!(request.selection, Selection::Native(_)) && !is_decoded_linktype(linktype) {
        stats.undecoded_linktypes.push(linktype);
    }
    let mut output = PcapOutput::new(sink, resolution, snaplen, linktype)?;
    let pruning = Pruning::new(&request.selection, linktype);
    let isolated = isolated_segments(&segments);
    let output_resolution = output.resolution;
    let request = &*request;
    let prepare = |index: usize, ahead: bool| -> Result<Option<Prepared>> {
        let Some(planned) = plan_segment(store, &segments[index], request.window, &pruning)? else {
            return Ok(None);
        };
        if !ahead || !isolated[index] || planned.candidates.len() > EXTRACTED_AHEAD_CANDIDATES {
            return Ok(Some(Prepared::Planned(Box::new(planned))));
        }
        Ok(Some(extract_ahead(planned, request, control, output_resolution)))
    };
    let plans = PlanQueue::new(segments.len(), prepare);
    std::thread::scope(|scope| {
        if segments.len() > 1 {
            scope.spawn(|| plans.plan_ahead(control));
        }
        let _stop = plans.stop_on_drop();
        merge(request, &segments, |index| plans.take(index), &mut output, &mut stats, control)
    })?;
    output.sink.finish().map_err(output_error)?;
    control.segments_done.store(control.segments_total.load(Ordering::Relaxed), Ordering::Relaxed);
    control.bytes.store(output.bytes, Ordering::Relaxed);
    stats.bytes = output.bytes;
    Ok(stats)
}

/// Output bytes of a segment that the planning thread extracts ahead at
/// most; a segment with more hands the rest to the merge.
const EXTRACTED_AHEAD_BYTES: u64 = 1 << 20;

/// Candidates of a segment that the planning thread extracts ahead at most.
/// A segment with more, as in a broad extraction, is only planned: the merge
/// copies its matches from the reader's buffer without checking each one,
/// which costs less than extracting them into memory first.
const EXTRACTED_AHEAD_CANDIDATES: u64 = 4096;

/// A segment made ready for the merge.
enum Prepared {
    /// Planned; the merge reads it.
    Planned(Box<PlannedSegment>),
    /// Extracted ahead: a segment whose packets need no merge, because no
    /// other segment of the window has a packet between its first and last
    /// ones. `records` contains its first matches, in the output's format.
    Extracted { records: Vec<u8>, candidates: u64, packets: u64, rest: Rest },
}

/// The remainder of a segment extracted ahead.
enum Rest {
    None,
    /// Matches beyond [`EXTRACTED_AHEAD_BYTES`].
    Stream(Box<SegmentStream>),
    /// Reading failed after `records`.
    Failed(Error),
}

/// Returns, per segment (sorted by first timestamp), whether no other
/// segment has a packet between its first and last ones, both included.
fn isolated_segments(segments: &[SegmentMeta]) -> Vec<bool> {
    let mut latest_before: Option<u64> = None;
    let mut isolated = Vec::with_capacity(segments.len());
    for (index, meta) in segments.iter().enumerate() {
        let after_previous = latest_before.is_none_or(|latest| latest < meta.min_ts_ns);
        let before_next = segments.get(index + 1).is_none_or(|next| meta.max_ts_ns < next.min_ts_ns);
        isolated.push(after_previous && before_next);
        latest_before = Some(latest_before.map_or(meta.max_ts_ns, |latest| latest.max(meta.max_ts_ns)));
    }
    isolated
}

/// Extracts up to [`EXTRACTED_AHEAD_BYTES`] of an isolated segment's
/// matches into memory, for the merge to copy out.
fn extract_ahead(
    planned: PlannedSegment,
    request: &ExtractRequest,
    control: &ExtractControl,
    resolution: TsResolution,
) -> Prepared {
    let mut stats = ExtractStats::default();
    // Room for every candidate at the segment's mean record size, so that
    // the buffer is seldom moved while it grows.
    let meta = planned.reader.meta();
    let mean_record = meta.file_bytes / meta.packets.max(1);
    let expected = planned.candidates.len().saturating_mul(mean_record).min(EXTRACTED_AHEAD_BYTES);
    let mut sink = WriteSink(Vec::with_capacity(expected as usize));
    let mut output = PcapOutput::records_only(&mut sink, resolution);
    let rest = match SegmentStream::new(planned, request, &mut stats, control) {
        Ok(mut stream) => match stream.drain(request, &mut stats, control, &mut output, EXTRACTED_AHEAD_BYTES) {
            Ok(true) => Rest::None,
            Ok(false) => Rest::Stream(Box::new(stream)),
            Err(err) => Rest::Failed(err),
        },
        Err(err) => Rest::Failed(err),
    };
    Prepared::Extracted { records: sink.0, candidates: stats.candidates, packets: stats.packets, rest }
}

/// Reads the planned segments and writes their matches to `output` in
/// timestamp order, merging segments whose times overlap.
fn merge(
    request: &ExtractRequest,
    segments: &[SegmentMeta],
    take: impl Fn(usize) -> Result<Option<Prepared>>,
    output: &mut PcapOutput<'_>,
    stats: &mut ExtractStats,
    control: &ExtractControl,
) -> Result<()> {
    // Finished streams are dropped at once, which closes their files.
    let mut streams: Vec<Option<SegmentStream>> = Vec::new();
    let mut heap: BinaryHeap<Reverse<(u64, u64, u32, usize)>> = BinaryHeap::new();
    let mut heads: Vec<Option<Pending>> = Vec::new();
    let mut unopened = segments.iter().enumerate().peekable();
    loop {
        // Open every segment that may hold a packet as early as the earliest pending one.
        while let Some((_, meta)) = unopened.peek() {
            let earliest = heap.peek().map(|Reverse((ts_ns, ..))| *ts_ns);
            if earliest.is_some_and(|ts_ns| meta.min_ts_ns > ts_ns) {
                break;
            }
            let (number, meta) = unopened.next().expect("peeked");
            let planned = match take(number)? {
                None => {
                    control.segments_done.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Some(Prepared::Planned(planned)) => *planned,
                Some(Prepared::Extracted { records, candidates, packets, rest }) => {
                    // Only an isolated segment is extracted ahead, and the
                    // merge opens it when every segment before it is done.
                    debug_assert!(heap.is_empty(), "a segment extracted ahead overlaps another");
                    stats.segments_read += 1;
                    stats.candidates += candidates;
                    stats.packets += packets;
                    output.write_records(&records)?;
                    output.report(stats, control);
                    match rest {
                        Rest::None => {}
                        Rest::Stream(mut stream) => {
                            stream.drain(request, stats, control, output, u64::MAX)?;
                        }
                        Rest::Failed(err) => return Err(err),
                    }
                    control.segments_done.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            };
            stats.segments_read += 1;
            let mut stream = SegmentStream::new(planned, request, stats, control)?;
            if let Some((ts_ns, packet, pending)) = stream.next_packet(request, stats, control)? {
                heap.push(Reverse((ts_ns, meta.segment_id, packet, streams.len())));
                heads.push(Some(pending));
                streams.push(Some(stream));
            } else {
                control.segments_done.fetch_add(1, Ordering::Relaxed);
            }
        }
        let Some(Reverse((_, segment_id, _, index))) = heap.pop() else { break };
        let pending = heads[index].take().expect("a queued stream has a head");
        output.write(pending.header, pending.resolution, &pending.data)?;
        stats.packets += 1;
        output.report(stats, control);
        let stream = streams[index].as_mut().expect("a queued stream is open");
        stream.spare = pending.data;
        // Alone, and before every segment not yet opened: no merge needed.
        let max_ts_ns = stream.planned.reader.meta().max_ts_ns;
        if heap.is_empty() && unopened.peek().is_none_or(|(_, meta)| meta.min_ts_ns > max_ts_ns) {
            stream.drain(request, stats, control, output, u64::MAX)?;
            streams[index] = None;
            control.segments_done.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        match stream.next_packet(request, stats, control)? {
            Some((ts_ns, packet, pending)) => {
                heap.push(Reverse((ts_ns, segment_id, packet, index)));
                heads[index] = Some(pending);
            }
            None => {
                streams[index] = None;
                control.segments_done.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}
