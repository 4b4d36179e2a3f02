//! A `pktvault record -i lo` child process for live-capture tests.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::pktvault_bin;

/// A `pktvault record` child process, killed by its pid if the test ends early.
pub struct Recorder {
    pub child: Child,
    stderr_path: PathBuf,
}

impl Recorder {
    /// Starts recording `lo` into `data_dir` and waits until the capture runs.
    /// The child's standard error goes to a file in `work_dir`.
    pub fn start(data_dir: &Path, work_dir: &Path) -> Recorder {
        Recorder::start_with(data_dir, work_dir, &["-i", "lo"])
    }

    /// Starts `pktvault record --data-dir DATA_DIR ARGS...` and waits until every
    /// interface's capture runs (one "capture started" line each).
    pub fn start_with(data_dir: &Path, work_dir: &Path, args: &[&str]) -> Recorder {
        let captures = args.iter().filter(|arg| **arg == "-i").count().max(1);
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let number = STARTED.fetch_add(1, Ordering::Relaxed);
        let stderr_path = work_dir.join(format!("record-{number}.stderr"));
        let stderr_file = fs::File::create(&stderr_path).expect("create stderr file");
        let child = Command::new(pktvault_bin())
            .args(["record", "--data-dir", data_dir.to_str().expect("UTF-8 path")])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr_file)
            .spawn()
            .expect("start pktvault record");
        let mut recorder = Recorder { child, stderr_path };
        let deadline = Instant::now() + Duration::from_secs(30);
        while recorder.stderr().matches("capture started").count() < captures {
            if let Some(status) = recorder.child.try_wait().expect("poll pktvault record") {
                panic!(
                    "pktvault record {args:?} exited with {status} before capture started; live capture needs root (CAP_NET_RAW) and the lo interface. stderr: {}",
                    recorder.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "pktvault record {args:?} did not log 'capture started' within 30 s; stderr: {}",
                recorder.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        recorder
    }

    /// Returns what the child wrote to standard error so far.
    pub fn stderr(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = fs::File::open(&self.stderr_path) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// Sends `signal` to the child by its pid.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits in pid_t");
        // SAFETY: kill(2) with the pid of a child this test started and has not reaped yet.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "kill({pid}, {signal}) failed: {}", std::io::Error::last_os_error());
    }

    /// Waits up to `timeout` for the child to exit and returns its exit status code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for pktvault record") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "pktvault record did not exit within {timeout:?} of a signal; stderr: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Child::kill sends SIGKILL to this child's pid only.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
