//! Interface indexes kept open between extractions.
//!
//! Opening an index for each request reads the footer, index block and
//! properties of every table file it touches and starts with a cold block
//! cache. The server instead keeps one follower store per interface (a
//! RocksDB secondary instance, see `InterfaceStore::open_follower`) and
//! brings it up to the recorder's last commit before each use, which costs
//! little when nothing changed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pktvault_engine::store::InterfaceStore;
use pktvault_engine::Result;

const SCRATCH_PREFIX: &str = "pktvault-follower-";

/// Time after a failed follower open during which the interface is opened
/// read-only for each request; the follower is tried again after it.
const FOLLOWER_RETRY: Duration = Duration::from_secs(60);

/// Removes the scratch folders of servers that are no longer running; a
/// server stopped by a signal does not remove its own.
fn remove_stale_scratch_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|name| name.strip_prefix(SCRATCH_PREFIX)) else { continue };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The open stores of one data directory.
pub struct Stores {
    data_dir: PathBuf,
    /// Folder for RocksDB's logs of the follower stores; removed on drop.
    scratch_dir: PathBuf,
    open: Mutex<HashMap<u32, Arc<InterfaceStore>>>,
    /// Interfaces whose follower failed to open, and when.
    failed: Mutex<HashMap<u32, Instant>>,
}

impl Stores {
    /// Creates an empty set of stores for `data_dir`; the followers keep
    /// their RocksDB logs in a folder of the system's temporary folder.
    pub fn new(data_dir: &Path) -> Stores {
        remove_stale_scratch_dirs();
        let scratch_dir = std::env::temp_dir().join(format!("{SCRATCH_PREFIX}{}", std::process::id()));
        Stores {
            data_dir: data_dir.to_path_buf(),
            scratch_dir,
            open: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
        }
    }

    /// Returns the store of interface `ifid`, up to date with its writer.
    pub fn get(&self, ifid: u32) -> Result<Arc<InterfaceStore>> {
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(store) = open.get(&ifid) {
            match store.catch_up() {
                Ok(()) => return Ok(store.clone()),
                Err(err) => {
                    // The index was replaced or damaged under the follower: open it anew.
                    tracing::warn!("reopening the index of interface {ifid}: {err}");
                    open.remove(&ifid);
                }
            }
        }
        let mut failed = self.failed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if failed.get(&ifid).is_some_and(|since| since.elapsed() < FOLLOWER_RETRY) {
            return Ok(Arc::new(InterfaceStore::open_read_only(&self.data_dir, ifid)?));
        }
        let scratch = self.scratch_dir.join(ifid.to_string());
        if let Err(err) = std::fs::create_dir_all(&scratch) {
            // RocksDB cannot follow without a folder for its log, so the
            // index is opened read-only for this request instead, which is slower.
            tracing::warn!("cannot create {}: {err}; opening the index for each request", scratch.display());
            failed.insert(ifid, Instant::now());
            return Ok(Arc::new(InterfaceStore::open_read_only(&self.data_dir, ifid)?));
        }
        // A secondary instance recovers the last state of the index whose
        // table files all exist, so with a table file missing it would serve
        // an older index, and a short pcap, without an error. A read-only
        // open rejects such an index, as the CLI does.
        InterfaceStore::open_read_only(&self.data_dir, ifid)?;
        match InterfaceStore::open_follower(&self.data_dir, ifid, &scratch) {
            Ok(store) => {
                failed.remove(&ifid);
                let store = Arc::new(store);
                open.insert(ifid, store.clone());
                Ok(store)
            }
            // RocksDB failed where a read-only open may not, for example
            // when a follower, which keeps every table file open, exceeds
            // the descriptor limit. A read-only open keeps at most 10.
            Err(err @ pktvault_engine::Error::Index { .. }) => {
                let hint = if err.to_string().contains("Too many open files") {
                    "; raise the limit of open files (ulimit -n, or LimitNOFILE= in a systemd unit) to keep it open"
                } else {
                    ""
                };
                tracing::warn!(
                    "cannot keep the index of interface {ifid} open: {err}; opening it for each request for the next {} s{hint}",
                    FOLLOWER_RETRY.as_secs()
                );
                failed.insert(ifid, Instant::now());
                Ok(Arc::new(InterfaceStore::open_read_only(&self.data_dir, ifid)?))
            }
            Err(err) => Err(err),
        }
    }
}

impl Drop for Stores {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch_dir);
    }
}
