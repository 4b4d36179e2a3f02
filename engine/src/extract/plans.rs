//! Planning: the candidate packets of each segment, from the index alone.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use pktvault_schema::time::TimeWindow;
use pktvault_schema::{SegmentMeta, PACKETS_PER_CHUNK};
use roaring::RoaringBitmap;

use super::{ExtractControl, Selection};
use crate::filter::plan::{monotone_candidates, plan};
use crate::filter::Expr;
use crate::segment::SegmentReader;
use crate::store::InterfaceStore;
use crate::Result;

/// A planned segment: its reader, the packets to read, and which of them
/// match without an exact check.
pub(super) struct PlannedSegment {
    pub(super) reader: SegmentReader,
    pub(super) candidates: RoaringBitmap,
    pub(super) exact: Exact,
}

/// The candidates of a segment that the index proves to match.
pub(super) enum Exact {
    All,
    None,
    Some(RoaringBitmap),
}

impl Exact {
    pub(super) fn contains(&self, packet: u32) -> bool {
        match self {
            Exact::All => true,
            Exact::None => false,
            Exact::Some(packets) => packets.contains(packet),
        }
    }
}

/// The part of the selection that planning a segment needs. A libpcap
/// filter is represented by the index filter that prunes for it, derived
/// once per extraction instead of once per segment.
pub(super) enum Pruning<'a> {
    All,
    Native(&'a Expr),
    /// Candidates from the index filter, when one can be derived; libpcap decides every packet.
    Bpf(Option<Expr>),
}

impl<'a> Pruning<'a> {
    pub(super) fn new(selection: &'a Selection, linktype: u32) -> Pruning<'a> {
        match selection {
            Selection::All => Pruning::All,
            Selection::Native(expr) => Pruning::Native(expr),
            Selection::Bpf(filter) => Pruning::Bpf(filter.pruning_expr(linktype)),
        }
    }
}

/// Plans the extraction from one segment. Returns `None`, without reading
/// the segment's position table or opening its file, when no packet of the
/// segment is a candidate.
pub(super) fn plan_segment(
    store: &InterfaceStore,
    meta: &SegmentMeta,
    window: TimeWindow,
    pruning: &Pruning<'_>,
) -> Result<Option<PlannedSegment>> {
    let mut in_window = RoaringBitmap::new();
    if window.begin_ns <= meta.min_ts_ns && meta.max_ts_ns < window.end_ns {
        in_window.insert_range(0..meta.packets as u32);
    } else {
        for (number, chunk) in store.times(meta)?.iter().enumerate() {
            if window.overlaps(chunk.min_ts_ns, chunk.max_ts_ns) {
                let first = number as u32 * PACKETS_PER_CHUNK;
                let end = (first as u64 + u64::from(PACKETS_PER_CHUNK)).min(meta.packets) as u32;
                in_window.insert_range(first..end);
            }
        }
    }
    let (candidates, exact) = match pruning {
        Pruning::All => (in_window, Exact::All),
        Pruning::Native(expr) => {
            let bitmaps = store.bitmaps(meta);
            let plan = plan(expr, &bitmaps)?;
            let candidates = bitmaps.packets_of(&plan.candidates)? & in_window;
            let exact = if plan.exact == plan.candidates {
                Exact::All
            } else if plan.exact.is_empty() || candidates.is_empty() {
                Exact::None
            } else {
                Exact::Some(bitmaps.packets_of(&plan.exact)?)
            };
            (candidates, exact)
        }
        Pruning::Bpf(Some(expr)) => {
            let bitmaps = store.bitmaps(meta);
            (bitmaps.packets_of(&monotone_candidates(expr, &bitmaps)?)? & in_window, Exact::None)
        }
        // libpcap's filters read fields the index does not cover.
        Pruning::Bpf(None) => (in_window, Exact::None),
    };
    if candidates.is_empty() {
        return Ok(None);
    }
    let positions = store.positions(meta, &candidates)?;
    let reader = SegmentReader::open(&store.pcap_dir(), meta.clone(), positions)?;
    Ok(Some(PlannedSegment { reader, candidates, exact }))
}

/// Segments prepared ahead of the one being read. Each contains the segment's
/// candidate bitmap and its open file, and at most
/// [`super::EXTRACTED_AHEAD_BYTES`] of its output.
const PLANNED_AHEAD: usize = 16;

/// Segments prepared for the merge, handed to the reading thread in order.
///
/// Planning reads only the index, and reading only the segment files. A
/// second thread prepares the segments ahead of the one being read, and the
/// reading thread, when the segment it needs is still being prepared,
/// prepares a later one instead of waiting. `prepare(index, ahead)` makes
/// the item of segment `index`; `ahead` is false when the reading thread
/// needs it at once.
pub(super) struct PlanQueue<T, F> {
    count: usize,
    prepare: F,
    state: Mutex<QueueState<T>>,
    /// Signalled when an item is stored while the reading thread waits.
    stored: Condvar,
    /// Signalled when the reading thread takes an item or stops while the
    /// planning thread waits for room.
    room_freed: Condvar,
}

/// The shared state of a [`PlanQueue`].
struct QueueState<T> {
    /// Items prepared and not yet taken, by segment index.
    items: Vec<Option<Result<T>>>,
    /// Index of the first segment that no thread has started to prepare.
    next: usize,
    /// Number of items the reading thread has taken.
    items_taken: usize,
    reader_waits: bool,
    planner_waits: bool,
    /// Set when the reading thread stops.
    stopped: bool,
    /// Set when the planning thread ends.
    planner_gone: bool,
}

impl<T: Send, F: Fn(usize, bool) -> Result<T> + Sync> PlanQueue<T, F> {
    /// Returns the queue of `count` segments.
    pub(super) fn new(count: usize, prepare: F) -> PlanQueue<T, F> {
        let mut items = Vec::new();
        items.resize_with(count, || None);
        let state = QueueState {
            items,
            next: 0,
            items_taken: 0,
            reader_waits: false,
            planner_waits: false,
            stopped: false,
            planner_gone: false,
        };
        PlanQueue { count, prepare, state: Mutex::new(state), stored: Condvar::new(), room_freed: Condvar::new() }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Prepares segments ahead of the reading thread until every segment is
    /// prepared, the reading thread stops or the extraction is cancelled.
    pub(super) fn plan_ahead(&self, control: &ExtractControl) {
        // Marks the planning thread gone however it ends, unwinding
        // included; the reading thread then prepares what it left.
        struct MarkPlannerGone<'a, T, F: Fn(usize, bool) -> Result<T> + Sync>(&'a PlanQueue<T, F>);
        impl<T, F: Fn(usize, bool) -> Result<T> + Sync> Drop for MarkPlannerGone<'_, T, F> {
            fn drop(&mut self) {
                let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
                state.planner_gone = true;
                if state.reader_waits {
                    self.0.stored.notify_one();
                }
            }
        }
        let _mark = MarkPlannerGone(self);
        loop {
            let index = {
                let mut state = self.lock();
                loop {
                    if state.stopped || state.next == self.count || control.is_cancelled() {
                        return;
                    }
                    if state.next < state.items_taken + PLANNED_AHEAD {
                        break;
                    }
                    state.planner_waits = true;
                    state = self.room_freed.wait(state).unwrap_or_else(PoisonError::into_inner);
                    state.planner_waits = false;
                }
                state.next += 1;
                state.next - 1
            };
            let item = (self.prepare)(index, true);
            let mut state = self.lock();
            state.items[index] = Some(item);
            if state.reader_waits {
                self.stored.notify_one();
            }
        }
    }

    /// Returns the item of segment `index`. The reading thread takes the
    /// items in segment order, each once.
    pub(super) fn take(&self, index: usize) -> Result<T> {
        let mut state = self.lock();
        loop {
            if let Some(item) = state.items[index].take() {
                state.items_taken = index + 1;
                if state.planner_waits {
                    self.room_freed.notify_one();
                }
                return item;
            }
            // Not started, or abandoned by a planning thread that ended
            // while preparing it: prepared here.
            if state.next <= index || state.planner_gone {
                state.next = state.next.max(index + 1);
                state.items_taken = index + 1;
                if state.planner_waits {
                    self.room_freed.notify_one();
                }
                drop(state);
                return (self.prepare)(index, false);
            }
            // The planning thread is preparing it: prepare a later segment meanwhile.
            if state.next < self.count && state.next < index + PLANNED_AHEAD {
                let later = state.next;
                state.next += 1;
                drop(state);
                let item = (self.prepare)(later, true);
                state = self.lock();
                state.items[later] = Some(item);
                continue;
            }
            state.reader_waits = true;
            state = self.stored.wait(state).unwrap_or_else(PoisonError::into_inner);
            state.reader_waits = false;
        }
    }

    /// Returns a guard that stops the planning thread when dropped. The
    /// reading thread keeps it, so the planning thread also stops when the
    /// reading thread fails or unwinds.
    pub(super) fn stop_on_drop(&self) -> StopOnDrop<'_, T, F> {
        StopOnDrop(self)
    }
}

/// Stops the planning thread of a [`PlanQueue`] when dropped.
pub(super) struct StopOnDrop<'a, T, F: Fn(usize, bool) -> Result<T> + Sync>(&'a PlanQueue<T, F>);

impl<T, F: Fn(usize, bool) -> Result<T> + Sync> Drop for StopOnDrop<'_, T, F> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.stopped = true;
        if state.planner_waits {
            self.0.room_freed.notify_one();
        }
    }
}
