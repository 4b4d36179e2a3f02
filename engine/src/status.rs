//! Recorder state and interface status.
//!
//! A recorder writes `DIR/<ifid>/recorder.json` when it starts, after every
//! checkpoint and when it stops, and appends its log to `DIR/<ifid>/recorder.log`.
//! [`interface_status`] combines them with the index into the facts that
//! `pktvault status` prints. It only reads, so it works on a data directory
//! that another process records into.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::extract::recorded_range;
use crate::retention::disk_usage;
use crate::store::{interface_dir, InterfaceStore};
use crate::{Error, Result};

/// File name of the recorder state inside an interface folder.
pub const STATE_FILE: &str = "recorder.json";
/// File name of the recorder log inside an interface folder.
pub const LOG_FILE: &str = "recorder.log";
/// Lines of the recorder log that a status shows.
const LOG_TAIL_LINES: usize = 10;

/// Lifecycle of a recorder, as it last wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecorderPhase {
    Running,
    Stopped,
    Failed,
}

/// The state a recorder writes about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecorderState {
    pub pid: u32,
    pub interface: String,
    pub phase: RecorderPhase,
    /// The error that stopped the recorder, when `phase` is failed.
    pub error: Option<String>,
    pub started_unix_ns: u64,
    pub updated_unix_ns: u64,
    pub packets: u64,
    pub bytes: u64,
    /// Packets libpcap dropped because its buffer was full.
    pub dropped: u64,
    /// Packets the interface or its driver dropped.
    pub interface_dropped: u64,
    /// The `--max-disk` limit in bytes, if any.
    pub max_disk_bytes: Option<u64>,
}

/// Returns nanoseconds since the epoch by the system clock.
pub fn unix_now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|now| now.as_nanos() as u64).unwrap_or(0)
}

fn state_path(data_dir: &Path, ifid: u32) -> PathBuf {
    interface_dir(data_dir, ifid).join(STATE_FILE)
}

/// Replaces the recorder state file atomically (write, then rename).
pub fn write_state(data_dir: &Path, ifid: u32, state: &RecorderState) -> Result<()> {
    let path = state_path(data_dir, ifid);
    let partial = path.with_extension("json.partial");
    let bytes = serde_json::to_vec_pretty(state).expect("recorder state serializes");
    std::fs::write(&partial, bytes).map_err(Error::io("cannot write", &partial))?;
    std::fs::rename(&partial, &path).map_err(Error::io("cannot rename", &partial))
}

/// Status of a recorder as seen from outside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecorderStatus {
    /// `running`, `stopped`, or `failed` (the recorder reported an error, or
    /// its process is gone without having stopped).
    pub state: RecorderPhase,
    pub reason: Option<String>,
    pub pid: u32,
    pub interface: String,
    pub uptime_secs: Option<u64>,
    pub packets: u64,
    pub bytes: u64,
    pub dropped: u64,
    pub interface_dropped: u64,
}

/// Everything `pktvault status` reports about one interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InterfaceStatus {
    pub ifid: u32,
    /// The recorder that writes or wrote this interface, if one ever ran.
    pub recorder: Option<RecorderStatus>,
    pub segments: usize,
    pub packets: u64,
    pub wire_bytes: u64,
    /// Bytes of segment files and index on disk.
    pub disk_bytes: u64,
    pub max_disk_bytes: Option<u64>,
    /// Drops recorded in the segments' metadata.
    pub dropped: u64,
    /// First and last packet time available, in nanoseconds since the epoch.
    pub first_packet_ns: Option<u64>,
    pub last_packet_ns: Option<u64>,
    /// The last lines of the recorder log.
    pub log_tail: Vec<String>,
}

fn process_is_pktvault(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| cmdline.windows(8).any(|window| window == b"pktvault"))
        .unwrap_or(false)
}

fn recorder_status(state: RecorderState) -> RecorderStatus {
    let alive = process_is_pktvault(state.pid);
    let (phase, reason) = match state.phase {
        RecorderPhase::Running if alive => (RecorderPhase::Running, None),
        RecorderPhase::Running => {
            (RecorderPhase::Failed, Some(format!("process {} exited without stopping the capture", state.pid)))
        }
        phase => (phase, state.error.clone()),
    };
    let uptime_secs =
        (phase == RecorderPhase::Running).then(|| unix_now_ns().saturating_sub(state.started_unix_ns) / 1_000_000_000);
    RecorderStatus {
        state: phase,
        reason,
        pid: state.pid,
        interface: state.interface,
        uptime_secs,
        packets: state.packets,
        bytes: state.bytes,
        dropped: state.dropped,
        interface_dropped: state.interface_dropped,
    }
}

fn log_tail(path: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].iter().map(|line| line.to_string()).collect()
}

/// Returns the ids of the interfaces recorded in `data_dir`.
pub fn interface_ids(data_dir: &Path) -> Result<Vec<u32>> {
    let entries = std::fs::read_dir(data_dir).map_err(Error::io("cannot read data directory", data_dir))?;
    let mut ids: Vec<u32> = entries.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok()).collect();
    ids.sort_unstable();
    Ok(ids)
}

/// One interface's entry in a status listing: its status, or the reason its
/// index cannot be read, so that one unreadable index does not hide the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum InterfaceReport {
    Readable(InterfaceStatus),
    Unreadable { ifid: u32, error: String },
}

/// Collects the status of interface `ifid`, or the error that prevents it.
pub fn interface_report(data_dir: &Path, ifid: u32) -> InterfaceReport {
    match interface_status(data_dir, ifid) {
        Ok(status) => InterfaceReport::Readable(status),
        Err(err) => InterfaceReport::Unreadable { ifid, error: err.to_string() },
    }
}

/// Collects the status of interface `ifid`; reads only.
pub fn interface_status(data_dir: &Path, ifid: u32) -> Result<InterfaceStatus> {
    let store = InterfaceStore::open_read_only(data_dir, ifid)?;
    let segments = store.segments()?;
    let range = recorded_range(&segments);
    let state: Option<RecorderState> =
        std::fs::read(state_path(data_dir, ifid)).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let max_disk_bytes = state.as_ref().and_then(|state| state.max_disk_bytes);
    Ok(InterfaceStatus {
        ifid,
        recorder: state.map(recorder_status),
        segments: segments.len(),
        packets: segments.iter().map(|meta| meta.packets).sum(),
        wire_bytes: segments.iter().map(|meta| meta.wire_bytes).sum(),
        disk_bytes: disk_usage(&store)?,
        max_disk_bytes,
        dropped: segments.iter().map(|meta| meta.dropped).sum(),
        first_packet_ns: range.map(|(first, _)| first),
        last_packet_ns: range.map(|(_, last)| last),
        log_tail: log_tail(&interface_dir(data_dir, ifid).join(LOG_FILE)),
    })
}
