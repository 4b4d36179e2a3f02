//! Retention: keeping an interface's segments and index within a disk budget
//! and an age limit, deleting the oldest segments first.
//!
//! A segment is deleted index first (one synced range delete), then its file.
//! A crash between the two leaves a file without an index entry, never an
//! index entry without a file. The next writer imports such a file again (see
//! `Ingester::new`), and retention deletes it again when it is the oldest.

use std::path::Path;

use pktvault_schema::SegmentMeta;

use crate::store::InterfaceStore;
use crate::{Error, Result};

/// Limits on what one interface keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Maximum bytes of segment files plus index.
    pub max_bytes: Option<u64>,
    /// Maximum age of a segment's newest packet, in nanoseconds of packet
    /// time before the newest packet recorded.
    pub max_age_ns: Option<u64>,
}

/// Counts of the segments and bytes one enforcement deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionStats {
    pub segments_deleted: u64,
    pub bytes_freed: u64,
}

fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(Error::io("cannot list", dir)(err)),
    };
    for entry in entries {
        let entry = entry.map_err(Error::io("cannot list", dir))?;
        match entry.metadata() {
            Ok(meta) if meta.is_file() => total += meta.len(),
            Ok(meta) if meta.is_dir() => total += dir_bytes(&entry.path())?,
            // A file deleted while listing no longer uses space.
            _ => {}
        }
    }
    Ok(total)
}

/// Returns the bytes an interface uses on disk: segment files and index.
pub fn disk_usage(store: &InterfaceStore) -> Result<u64> {
    Ok(dir_bytes(&store.pcap_dir())? + dir_bytes(store.index_dir())?)
}

/// Deletes one segment: its index entries first, then its file.
pub fn delete_segment(store: &InterfaceStore, meta: &SegmentMeta) -> Result<u64> {
    store.delete_segment_entries(meta.segment_id)?;
    let path = store.pcap_dir().join(&meta.file_name);
    let size = std::fs::metadata(&path).map(|file| file.len()).unwrap_or(0);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(Error::io("cannot delete segment", &path)(err)),
    }
    Ok(size)
}

/// Deletes the oldest sealed segments until the interface uses at most
/// `max_bytes - reserve_bytes`, and every sealed segment older than the age
/// limit. Segments are taken oldest first by their newest packet; `protected`
/// segment ids (the open segments) are never deleted.
pub fn enforce(
    store: &InterfaceStore,
    policy: &RetentionPolicy,
    reserve_bytes: u64,
    newest_ts_ns: u64,
    protected: &[u64],
) -> Result<RetentionStats> {
    let mut stats = RetentionStats::default();
    if policy.max_bytes.is_none() && policy.max_age_ns.is_none() {
        return Ok(stats);
    }
    let mut segments: Vec<SegmentMeta> =
        store.segments()?.into_iter().filter(|meta| meta.sealed && !protected.contains(&meta.segment_id)).collect();
    segments.sort_by_key(|meta| (meta.max_ts_ns, meta.segment_id));
    let mut usage = disk_usage(store)?;
    for meta in &segments {
        let too_old = policy.max_age_ns.is_some_and(|max_age| meta.max_ts_ns.saturating_add(max_age) < newest_ts_ns);
        let over_budget = policy.max_bytes.is_some_and(|max_bytes| usage.saturating_add(reserve_bytes) > max_bytes);
        if !too_old && !over_budget {
            // Later segments are newer, so neither limit applies to them.
            break;
        }
        let freed = delete_segment(store, meta)?;
        usage = usage.saturating_sub(freed);
        stats.segments_deleted += 1;
        stats.bytes_freed += freed;
        tracing::info!(segment_id = meta.segment_id, file = %meta.file_name, bytes = freed, too_old, "retention deleted a segment");
    }
    if policy.max_bytes.is_some_and(|max_bytes| usage.saturating_add(reserve_bytes) > max_bytes) {
        tracing::warn!(usage, reserve_bytes, "retention cannot free enough space: only open segments remain");
    }
    if stats.segments_deleted > 0 {
        crate::segment::sync_dir(&store.pcap_dir())?;
    }
    Ok(stats)
}

/// Deletes the oldest sealed segments until at least `wanted_bytes` are freed
/// or none is left; `protected` segment ids are kept.
pub fn free_oldest(store: &InterfaceStore, wanted_bytes: u64, protected: &[u64]) -> Result<RetentionStats> {
    let mut segments: Vec<SegmentMeta> =
        store.segments()?.into_iter().filter(|meta| meta.sealed && !protected.contains(&meta.segment_id)).collect();
    segments.sort_by_key(|meta| (meta.max_ts_ns, meta.segment_id));
    let mut stats = RetentionStats::default();
    for meta in &segments {
        if stats.bytes_freed >= wanted_bytes {
            break;
        }
        stats.bytes_freed += delete_segment(store, meta)?;
        stats.segments_deleted += 1;
    }
    if stats.segments_deleted > 0 {
        crate::segment::sync_dir(&store.pcap_dir())?;
    }
    Ok(stats)
}

/// Returns the bytes available to unprivileged writers on the filesystem of `path`.
pub fn available_bytes(path: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;

    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidRequest(format!("path {} contains a NUL byte", path.display())))?;
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed statvfs that the call fills in.
    let result = unsafe { libc::statvfs(c_path.as_ptr(), &mut stats) };
    if result != 0 {
        return Err(Error::io("cannot read free space of", path)(std::io::Error::last_os_error()));
    }
    Ok((stats.f_bavail as u64).saturating_mul(stats.f_frsize as u64))
}
