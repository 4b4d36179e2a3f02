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

/// What planning a segment needs of the selection. Unlike [`Selection`] it
/// can be shared with the planning thread: a libpcap program cannot, so a
/// libpcap filter is represented by the index filter that prunes for it.
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

/// Segments planned ahead of the one being read. Each plan holds the
/// segment's candidate bitmap and its open file.
const PLANNED_AHEAD: usize = 16;

/// Plans of the selected segments, handed to the reading thread in order.
///
/// Planning reads only the index, and reading only the segment files. A
/// second thread plans the segments ahead of the one being read, and the
/// reading thread, when the plan it needs is still being made, plans a
/// later segment instead of waiting. When planning is most of the work,
/// as for a rare host, both threads plan.
pub(super) struct PlanQueue<'s> {
    store: &'s InterfaceStore,
    window: TimeWindow,
    pruning: &'s Pruning<'s>,
    segments: &'s [SegmentMeta],
    state: Mutex<QueueState>,
    /// Signalled when a plan is stored while the reading thread waits.
    stored: Condvar,
    /// Signalled when the reading thread takes a plan or stops while the
    /// planning thread waits for room.
    taken: Condvar,
}

/// The shared state of a [`PlanQueue`].
struct QueueState {
    /// Plans made and not yet taken, by segment index.
    plans: Vec<Option<Result<Option<PlannedSegment>>>>,
    /// Index of the first segment that no thread has started to plan.
    next: usize,
    /// Number of plans the reading thread has taken.
    taken: usize,
    reader_waits: bool,
    planner_waits: bool,
    /// Set when the reading thread stops or the planning thread ends.
    stopped: bool,
    planner_gone: bool,
}

impl<'s> PlanQueue<'s> {
    pub(super) fn new(
        store: &'s InterfaceStore,
        window: TimeWindow,
        pruning: &'s Pruning<'s>,
        segments: &'s [SegmentMeta],
    ) -> PlanQueue<'s> {
        let mut plans = Vec::new();
        plans.resize_with(segments.len(), || None);
        let state = QueueState {
            plans,
            next: 0,
            taken: 0,
            reader_waits: false,
            planner_waits: false,
            stopped: false,
            planner_gone: false,
        };
        PlanQueue {
            store,
            window,
            pruning,
            segments,
            state: Mutex::new(state),
            stored: Condvar::new(),
            taken: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn plan(&self, index: usize) -> Result<Option<PlannedSegment>> {
        plan_segment(self.store, &self.segments[index], self.window, self.pruning)
    }

    /// Plans segments ahead of the reading thread until every segment is
    /// planned, the reading thread stops or the extraction is cancelled.
    pub(super) fn plan_ahead(&self, control: &ExtractControl) {
        // Marks the planning thread gone however it ends, unwinding
        // included; the reading thread then plans what it left unplanned.
        struct Gone<'a, 's>(&'a PlanQueue<'s>);
        impl Drop for Gone<'_, '_> {
            fn drop(&mut self) {
                let mut state = self.0.lock();
                state.planner_gone = true;
                if state.reader_waits {
                    self.0.stored.notify_one();
                }
            }
        }
        let _gone = Gone(self);
        loop {
            let index = {
                let mut state = self.lock();
                loop {
                    if state.stopped || state.next == self.segments.len() || control.is_cancelled() {
                        return;
                    }
                    if state.next < state.taken + PLANNED_AHEAD {
                        break;
                    }
                    state.planner_waits = true;
                    state = self.taken.wait(state).unwrap_or_else(PoisonError::into_inner);
                    state.planner_waits = false;
                }
                state.next += 1;
                state.next - 1
            };
            let plan = self.plan(index);
            let mut state = self.lock();
            state.plans[index] = Some(plan);
            if state.reader_waits {
                self.stored.notify_one();
            }
        }
    }

    /// Returns the plan of segment `index`. The reading thread takes the
    /// plans in segment order, each once.
    pub(super) fn take(&self, index: usize) -> Result<Option<PlannedSegment>> {
        let mut state = self.lock();
        loop {
            if let Some(plan) = state.plans[index].take() {
                state.taken = index + 1;
                if state.planner_waits {
                    self.taken.notify_one();
                }
                return plan;
            }
            // Not started, or abandoned by a planning thread that ended
            // while planning it: planned here.
            if state.next <= index || state.planner_gone {
                state.next = state.next.max(index + 1);
                state.taken = index + 1;
                if state.planner_waits {
                    self.taken.notify_one();
                }
                drop(state);
                return self.plan(index);
            }
            // The planning thread is planning it: plan a later segment meanwhile.
            if state.next < self.segments.len() && state.next < index + PLANNED_AHEAD {
                let later = state.next;
                state.next += 1;
                drop(state);
                let plan = self.plan(later);
                state = self.lock();
                state.plans[later] = Some(plan);
                continue;
            }
            state.reader_waits = true;
            state = self.stored.wait(state).unwrap_or_else(PoisonError::into_inner);
            state.reader_waits = false;
        }
    }

    /// Returns a guard that stops the planning thread when dropped: the
    /// reading thread holds it, so that the planning thread also stops when
    /// the reading thread fails or unwinds.
    pub(super) fn stop_on_drop(&self) -> StopPlanning<'_, 's> {
        StopPlanning(self)
    }
}

/// Stops the planning of a [`PlanQueue`] when dropped.
pub(super) struct StopPlanning<'a, 's>(&'a PlanQueue<'s>);

impl Drop for StopPlanning<'_, '_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.stopped = true;
        if state.planner_waits {
            self.0.taken.notify_one();
        }
    }
}
