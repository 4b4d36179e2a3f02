//! `pktvault serve`, `record --serve`, and `pktvault user`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use pktvault_schema::text::parse_size;
use pktvault_server::auth::{
    add_token, check_user_name, hash_password, list_users, new_token, remove_user, set_user, USERS_FILE,
};
use pktvault_server::jobs::JobLimits;
use pktvault_server::{BoundServer, ServerConfig};
use serde::Deserialize;

use crate::{JobArgs, ServeArgs, UserArgs, UserCommand, UserFileArgs};

/// Time open downloads get to finish after SIGINT or SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Default address of the HTTP API.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";

/// The `[server]` table of the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listen: Option<String>,
    pub max_jobs: Option<usize>,
    pub job_disk: Option<String>,
    pub job_file_size: Option<String>,
}

/// The parts of the configuration file the server reads.
#[derive(Debug, Default, Deserialize)]
struct ServeConfigFile {
    #[serde(default)]
    server: ServerSection,
}

fn read_server_section(path: &Path) -> anyhow::Result<ServerSection> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read configuration file {}", path.display()))?;
    let file: ServeConfigFile =
        toml::from_str(&text).with_context(|| format!("invalid configuration file {}", path.display()))?;
    Ok(file.server)
}

fn parse_listen(text: &str) -> anyhow::Result<SocketAddr> {
    text.parse().map_err(|_| {
        anyhow::anyhow!("listen address {text:?} is not valid; give IP:PORT, such as 127.0.0.1:3000 or [::1]:3000")
    })
}

/// Builds the server configuration from flags, then the `[server]` table, then defaults.
pub fn server_config(
    data_dir: &Path,
    listen: Option<&str>,
    config: Option<&Path>,
    args: &JobArgs,
) -> anyhow::Result<ServerConfig> {
    let section = match config {
        Some(path) => read_server_section(path)?,
        None => ServerSection::default(),
    };
    let listen = parse_listen(listen.or(section.listen.as_deref()).unwrap_or(DEFAULT_LISTEN))?;
    let defaults = JobLimits::default();
    let max_running = args.max_jobs.or(section.max_jobs).unwrap_or(defaults.max_running);
    if max_running == 0 {
        bail!("--max-jobs 0 would never run a job; give at least 1");
    }
    let size = |flag: &Option<String>, value: &Option<String>, name: &str, default: u64| -> anyhow::Result<u64> {
        match flag.as_ref().or(value.as_ref()) {
            Some(text) => parse_size(text).map_err(|err| anyhow::anyhow!("--{name}: {err}")),
            None => Ok(default),
        }
    };
    let max_disk_bytes = size(&args.job_disk, &section.job_disk, "job-disk", defaults.max_disk_bytes)?;
    let max_file_bytes = size(&args.job_file_size, &section.job_file_size, "job-file-size", defaults.max_file_bytes)?;
    if max_file_bytes < 1024 {
        bail!("--job-file-size {max_file_bytes} is too small; give at least 1K");
    }
    let mut credential_files = vec![data_dir.join(USERS_FILE)];
    credential_files.extend(config.map(Path::to_path_buf));
    Ok(ServerConfig {
        data_dir: data_dir.to_path_buf(),
        listen,
        credential_files,
        job_limits: JobLimits { max_running, max_disk_bytes, max_file_bytes },
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pktvault-http")
        .build()
        .context("cannot start the HTTP runtime")
}

pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = server_config(&args.data_dir, args.listen.as_deref(), args.config.as_deref(), &args.jobs)?;
    let runtime = runtime()?;
    runtime.block_on(async move {
        let server = BoundServer::bind(config).await.map_err(anyhow::Error::msg)?;
        eprintln!("pktvault: serving http://{}/api/v1/ (stop with Ctrl-C)", server.local_addr());
        let shutdown = async {
            let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("a SIGTERM handler can be installed");
            let signal = tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            };
            tracing::info!("{signal} received; stopping, open downloads get {} s to finish", SHUTDOWN_GRACE.as_secs());
        };
        serve_until(server, shutdown).await;
        Ok::<_, anyhow::Error>(())
    })?;
    // Dropping the runtime ends the downloads still open, which log that.
    runtime.shutdown_timeout(Duration::from_secs(1));
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Serves until `shutdown` completes, then gives open downloads
/// [`SHUTDOWN_GRACE`] to finish, so a slow client cannot hold up a supervisor
/// such as systemd.
async fn serve_until(server: BoundServer, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let live = server.live_counters();
    let serving = server.serve(async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    });
    tokio::select! {
        _ = serving => {}
        _ = async {
            let _ = stopping_rx.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            // The open downloads end when the runtime drops their connections.
            live.server_stopping.store(true, Ordering::Relaxed);
            tracing::warn!("stopped with downloads still open after {} s", SHUTDOWN_GRACE.as_secs());
        }
    }
}

/// Starts the HTTP API beside a recorder; it stops when `stop` is set.
pub fn serve_beside_recorder(
    config: ServerConfig,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let runtime = runtime()?;
    let server = runtime.block_on(BoundServer::bind(config)).map_err(anyhow::Error::msg)?;
    tracing::info!("serving http://{}/api/v1/", server.local_addr());
    Ok(std::thread::spawn(move || {
        runtime.block_on(serve_until(server, async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
        runtime.shutdown_timeout(Duration::from_secs(1));
    }))
}

/// Returns the file `pktvault user` edits: the configuration file, or `DIR/users.toml`.
fn users_file(args: &UserFileArgs) -> anyhow::Result<PathBuf> {
    match (&args.config, &args.data_dir) {
        (Some(config), None) => Ok(config.clone()),
        (None, Some(data_dir)) => {
            std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
            Ok(data_dir.join(USERS_FILE))
        }
        _ => bail!("give either --data-dir DIR (users go to DIR/{USERS_FILE}) or --config FILE"),
    }
}

fn read_password(name: &str, from_stdin: bool) -> anyhow::Result<String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).context("cannot read the password from standard input")?;
        line.trim_end_matches(['\n', '\r']).to_string()
    } else {
        let first = rpassword::prompt_password(format!("password for {name}: "))
            .context("cannot read the password from the terminal; use --password-stdin in scripts")?;
        let second = rpassword::prompt_password("again: ").context("cannot read the password from the terminal")?;
        if first != second {
            bail!("the two passwords differ; nothing was changed");
        }
        first
    };
    if password.chars().count() < 8 {
        bail!("the password has {} characters; at least 8 are required", password.chars().count());
    }
    Ok(password)
}

pub fn user(args: UserArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        UserCommand::Add { name, file, password_stdin } => {
            check_user_name(&name).map_err(anyhow::Error::msg)?;
            let path = users_file(&file)?;
            let password = read_password(&name, password_stdin)?;
            let hash = hash_password(&password).map_err(anyhow::Error::msg)?;
            let added = set_user(&path, &name, &hash).map_err(anyhow::Error::msg)?;
            let verb = if added { "added" } else { "changed the password of" };
            eprintln!("{verb} user {name} in {}", path.display());
        }
        UserCommand::Token { name, file, label } => {
            let path = users_file(&file)?;
            let token = new_token().map_err(anyhow::Error::msg)?;
            add_token(&path, &name, &label, &token).map_err(anyhow::Error::msg)?;
            eprintln!("added an API token for {name} to {}; it is shown once, keep it:", path.display());
            println!("{token}");
        }
        UserCommand::Remove { name, file } => {
            let path = users_file(&file)?;
            let tokens = remove_user(&path, &name).map_err(anyhow::Error::msg)?;
            eprintln!("removed user {name} and {tokens} API token(s) from {}", path.display());
        }
        UserCommand::List { file } => {
            let path = users_file(&file)?;
            for name in list_users(&path).map_err(anyhow::Error::msg)? {
                println!("{name}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
