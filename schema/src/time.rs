//! Packet timestamps.
//!
//! pktvault keeps every timestamp as nanoseconds since the Unix epoch in a
//! `u64`, which covers the years 1970 to 2554. Windows are half-open:
//! a packet is inside `[begin_ns, end_ns)` when `begin_ns <= ts_ns < end_ns`.

/// Nanoseconds in one second.
pub const NANOS_PER_SEC: u64 = 1_000_000_000;

/// A half-open time window `[begin_ns, end_ns)` in nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    pub begin_ns: u64,
    pub end_ns: u64,
}

impl TimeWindow {
    /// Returns whether `ts_ns` lies inside the window.
    pub fn contains(&self, ts_ns: u64) -> bool {
        self.begin_ns <= ts_ns && ts_ns < self.end_ns
    }

    /// Returns whether the closed range `[min_ns, max_ns]` overlaps the window.
    pub fn overlaps(&self, min_ns: u64, max_ns: u64) -> bool {
        min_ns < self.end_ns && max_ns >= self.begin_ns
    }
}

/// Formats nanoseconds since the epoch as `SECONDS.NNNNNNNNN`.
pub fn format_epoch_ns(ts_ns: u64) -> String {
    format!("{}.{:09}", ts_ns / NANOS_PER_SEC, ts_ns % NANOS_PER_SEC)
}
