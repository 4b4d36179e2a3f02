//! A `pktvault serve` child process on an ephemeral loopback port.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::pktvault_bin;

fn serve_args(data_dir: &Path) -> [&str; 5] {
    ["serve", "--data-dir", data_dir.to_str().expect("UTF-8 path"), "--listen", "127.0.0.1:0"]
}

/// A running `pktvault serve`, killed by its pid when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    stderr_path: PathBuf,
}

impl Server {
    /// Starts `pktvault serve --data-dir DATA_DIR --listen 127.0.0.1:0 ARGS...`
    /// and waits until it listens.
    pub fn start(data_dir: &Path, args: &[&str]) -> Server {
        Server::start_with_env(data_dir, args, &[])
    }

    /// Like [`Server::start`], with extra environment variables for the server.
    pub fn start_with_env(data_dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> Server {
        let mut command = Command::new(pktvault_bin());
        command.args(serve_args(data_dir)).args(args).envs(env.iter().copied());
        Server::spawn(command, args)
    }

    /// Starts the server as [`Server::start`] does, with the soft and hard
    /// limit of open file descriptors set to `limit` by the shell's `ulimit -n`.
    pub fn start_with_open_file_limit(data_dir: &Path, limit: u32) -> Server {
        let mut command = Command::new("sh");
        command
            .args(["-c", "ulimit -n \"$1\" && shift && exec \"$@\"", "sh", &limit.to_string()])
            .arg(pktvault_bin())
            .args(serve_args(data_dir));
        Server::spawn(command, &[])
    }

    fn spawn(mut command: Command, args: &[&str]) -> Server {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let number = STARTED.fetch_add(1, Ordering::Relaxed);
        let stderr_path = std::env::temp_dir().join(format!("pktvault-serve-{}-{number}.stderr", std::process::id()));
        let stderr_file = fs::File::create(&stderr_path).expect("create stderr file");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr_file)
            .spawn()
            .expect("start pktvault serve");
        let mut server = Server { child, base: String::new(), stderr_path };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let stderr = server.stderr();
            // The line is read only once it ends, because the server may be
            // halfway through writing it, with the port still missing.
            if let Some((line, _)) = stderr.split("serving http://").nth(1).and_then(|rest| rest.split_once('\n')) {
                let addr = line.split('/').next().expect("an address");
                server.base = format!("http://{addr}");
                return server;
            }
            if let Some(status) = server.child.try_wait().expect("poll pktvault serve") {
                panic!("pktvault serve {args:?} exited with {status} before listening; stderr: {stderr}");
            }
            assert!(Instant::now() < deadline, "pktvault serve did not listen within 30 s; stderr: {stderr}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Returns what the server wrote to standard error so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Kills the server with SIGKILL, as a crash would, and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Resident memory of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = fs::remove_file(&self.stderr_path);
    }
}

/// Adds a user with `pktvault user add NAME ARGS... --password-stdin`.
pub fn add_user(name: &str, password: &str, args: &[&str]) {
    let mut child = Command::new(pktvault_bin())
        .args(["user", "add", name, "--password-stdin"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pktvault user add");
    child.stdin.take().expect("stdin").write_all(format!("{password}\n").as_bytes()).expect("write password");
    let output = child.wait_with_output().expect("wait for pktvault user add");
    assert!(output.status.success(), "pktvault user add {name} failed: {}", String::from_utf8_lossy(&output.stderr));
}
