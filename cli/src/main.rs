//! The `pktvault` command.
//!
//! Exit status: 0 on success, 1 when an extraction selected no packet, 2 on
//! any error, including a `status` that could not read one of the interfaces.

mod commands;
mod record;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// The release and the index format it reads, as `--version` prints them.
/// An index of another format is rejected, so a user needs the release whose
/// format matches the index.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (index format 4)");

#[derive(Parser)]
#[command(name = "pktvault", version = VERSION, about = "Continuous packet recorder with indexed extraction")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Import pcap or pcapng files into the data directory.
    Import(ImportArgs),
    /// Record a live interface with libpcap until SIGINT or SIGTERM.
    Record(RecordArgs),
    /// Extract the packets of a time window that match a filter, as pcap.
    Extract(ExtractArgs),
    /// Show what is recorded for each interface.
    Status(StatusArgs),
    /// Serve the recorded packets over HTTP: live extraction, extraction jobs, status.
    Serve(ServeArgs),
    /// Manage the users and API tokens of the HTTP API.
    User(UserArgs),
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Data directory to serve.
    #[arg(long, alias = "pcap-dir", value_name = "DIR")]
    data_dir: PathBuf,
    /// Address to listen on [default: 127.0.0.1:3000]. A non-loopback address needs a user
    /// (see 'pktvault user add').
    #[arg(long, value_name = "IP:PORT")]
    listen: Option<String>,
    /// TOML file with a [server] table and [[user]] tables (see dist/pktvault.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    jobs: JobArgs,
}

#[derive(Args, Clone, Default)]
struct JobArgs {
    /// Extraction jobs that run at the same time [default: 2].
    #[arg(long, value_name = "N")]
    max_jobs: Option<usize>,
    /// Disk space the output files of all extraction jobs may use [default: 10G].
    #[arg(long, value_name = "SIZE")]
    job_disk: Option<String>,
    /// Size at which a job's output continues in a new pcap file [default: 1G].
    #[arg(long, value_name = "SIZE")]
    job_file_size: Option<String>,
}

#[derive(Args)]
struct UserArgs {
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(Args, Clone)]
struct UserFileArgs {
    /// Keep users in DIR/users.toml, which 'pktvault serve --data-dir DIR' reads.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Keep users in this configuration file, which 'pktvault serve --config FILE' reads.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user, or change its password; prompts for the password.
    Add {
        name: String,
        #[command(flatten)]
        file: UserFileArgs,
        /// Read the password from the first line of standard input, for scripts.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Create an API token for a user (Authorization: Bearer TOKEN); prints it once.
    Token {
        name: String,
        #[command(flatten)]
        file: UserFileArgs,
        /// Label of the token, such as the script that uses it; stored beside its hash.
        #[arg(long, default_value = "api", value_name = "TEXT")]
        label: String,
    },
    /// Remove a user and its API tokens.
    Remove {
        name: String,
        #[command(flatten)]
        file: UserFileArgs,
    },
    /// List the users.
    List {
        #[command(flatten)]
        file: UserFileArgs,
    },
}

#[derive(Args, Clone)]
struct Location {
    /// Data directory: segments go to DIR/<ifid>/pcap/, the index to DIR/<ifid>/index/.
    /// `--pcap-dir` is accepted as another name, as ntopng calls it.
    #[arg(long, alias = "pcap-dir", value_name = "DIR")]
    data_dir: PathBuf,
    /// Interface id the packets are stored under.
    #[arg(long, default_value_t = 0, value_name = "N")]
    ifid: u32,
}

#[derive(Args, Clone)]
struct SegmentArgs {
    /// Start a new segment after this many seconds of packet time.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    segment_seconds: u64,
    /// Start a new segment before a file would exceed this size (K, M, G, T suffixes; powers of 1024).
    #[arg(long, default_value = "256M", value_name = "SIZE")]
    segment_bytes: String,
    /// Keep segment files plus index of the interface within this size (K, M, G, T suffixes);
    /// the oldest segments are deleted first. No limit by default.
    #[arg(long, value_name = "SIZE")]
    max_disk: Option<String>,
    /// Delete segments whose newest packet is older than this, in packet time before the
    /// newest packet recorded (for example 7d, 12h, 30m). No limit by default.
    #[arg(long, value_name = "DURATION")]
    max_age: Option<String>,
}

#[derive(Args)]
struct ImportArgs {
    #[command(flatten)]
    location: Location,
    #[command(flatten)]
    segments: SegmentArgs,
    /// Capture files to import, pcap or pcapng.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

#[derive(Args)]
pub(crate) struct RecordArgs {
    #[command(flatten)]
    location: Location,
    #[command(flatten)]
    segments: SegmentArgs,
    /// Interface to capture on, as tcpdump -i takes it; repeat for several. The n-th
    /// interface is stored under ifid --ifid + n - 1, or under the id after '@' (eth1@5).
    #[arg(short = 'i', long = "interface", value_name = "IFACE[@IFID]", required_unless_present = "config")]
    interfaces: Vec<String>,
    /// TOML file with one [[interface]] table per interface (see dist/pktvault.toml);
    /// its values replace the flags for that interface.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Bytes kept of each packet.
    #[arg(long, default_value_t = 262_144, value_name = "BYTES")]
    snaplen: u32,
    /// Do not put the interface into promiscuous mode.
    #[arg(long)]
    no_promisc: bool,
    /// Kernel capture buffer size (K, M, G, T suffixes).
    #[arg(long, default_value = "32M", value_name = "SIZE")]
    buffer_size: String,
    /// libpcap filter applied in the kernel; packets it rejects are not recorded.
    #[arg(long, value_name = "BPF")]
    capture_filter: Option<String>,
    /// Also serve the HTTP API on this address (as 'pktvault serve' does), in the same process.
    #[arg(long, value_name = "IP:PORT")]
    serve: Option<String>,
    #[command(flatten)]
    jobs: JobArgs,
}

#[derive(Args)]
struct ExtractArgs {
    #[command(flatten)]
    location: Location,
    /// Start of the window, inclusive: epoch seconds with an optional fraction
    /// (1700000000.25) or RFC 3339 (2023-11-14T22:13:20Z).
    #[arg(long, value_name = "TIME")]
    begin: String,
    /// End of the window, exclusive: a packet is extracted when begin <= ts < end,
    /// to the nanosecond. Same formats as --begin.
    #[arg(long, value_name = "TIME")]
    end: String,
    /// Output pcap file; '-' writes to standard output (refused when it is a terminal).
    #[arg(short = 'w', long = "write", default_value = "-", value_name = "FILE")]
    write: String,
    /// Compile the filter with libpcap and match packets with libpcap, exactly as tcpdump does.
    #[arg(long)]
    bpf: bool,
    /// Extract only segments of this LINKTYPE value when the window contains several.
    #[arg(long, value_name = "N")]
    linktype: Option<u32>,
    /// Filter; the words are joined with spaces, as tcpdump does. No filter selects every packet.
    #[arg(value_name = "FILTER")]
    filter: Vec<String>,
}

#[derive(Args)]
struct StatusArgs {
    /// Data directory to report on.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Largest recorder log kept; a longer one is renamed to `recorder.log.1` at start.
const MAX_LOG_BYTES: u64 = 1 << 20;

/// Opens the recorder log of an interface for appending, rotating it when large.
fn open_recorder_log(location: &Location) -> Option<std::fs::File> {
    let dir = pktvault_engine::store::interface_dir(&location.data_dir, location.ifid);
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join(pktvault_engine::status::LOG_FILE);
    if std::fs::metadata(&path).is_ok_and(|meta| meta.len() > MAX_LOG_BYTES) {
        let _ = std::fs::rename(&path, path.with_extension("log.1"));
    }
    std::fs::OpenOptions::new().create(true).append(true).open(path).ok()
}

fn init_logging(command: &Command) {
    use tracing_subscriber::fmt::writer::MakeWriterExt;

    // warp logs an error for every connection that ends badly, which for a
    // download means the client went away. The server logs that case itself
    // at info level, and a failed extraction as a warning.
    let default_filter =
        if matches!(command, Command::Record(_) | Command::Serve(_)) { "info,warp::server::run=off" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false);
    // The recorder also logs into its interface folder, where `status` shows the last lines.
    // NOTE: with several interfaces, only the --ifid interface's folder gets the log.
    match command {
        Command::Record(args) => match open_recorder_log(&args.location) {
            Some(file) => builder.with_writer(std::io::stderr.and(std::sync::Mutex::new(file))).init(),
            None => builder.with_writer(std::io::stderr).init(),
        },
        _ => builder.with_writer(std::io::stderr).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.command);
    let result = match cli.command {
        Command::Import(args) => commands::import(args),
        Command::Record(args) => record::record(args),
        Command::Extract(args) => commands::extract(args),
        Command::Status(args) => commands::status(args),
        Command::Serve(args) => serve::serve(args),
        Command::User(args) => serve::user(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("pktvault: {}", error_text(&err));
            ExitCode::from(2)
        }
    }
}

/// Joins an error and its causes with ": ", leaving out a cause whose text
/// the message already contains (engine errors print their source themselves).
fn error_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}
