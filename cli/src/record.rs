//! `pktvault record`: one capture thread per interface.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context};
use pktvault_engine::capture::{capture, CaptureConfig, CaptureStats};
use pktvault_engine::ingest::{Ingester, SegmentLimits};
use pktvault_engine::retention::RetentionPolicy;
use pktvault_engine::status::{unix_now_ns, write_state, RecorderPhase, RecorderState};
use pktvault_engine::store::InterfaceStore;
use pktvault_schema::text::parse_size;
use serde::Deserialize;

use crate::commands::{retention_policy, segment_limits};
use crate::{RecordArgs, SegmentArgs};

/// Everything needed to record one interface.
struct InterfacePlan {
    ifid: u32,
    capture: CaptureConfig,
    limits: SegmentLimits,
    retention: RetentionPolicy,
}

/// One `[[interface]]` table of the configuration file. Missing keys take the
/// command-line value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InterfaceConfig {
    name: String,
    ifid: Option<u32>,
    snaplen: Option<u32>,
    promiscuous: Option<bool>,
    capture_filter: Option<String>,
    buffer_size: Option<String>,
    segment_seconds: Option<u64>,
    segment_bytes: Option<String>,
    max_disk: Option<String>,
    max_age: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(rename = "interface", default)]
    interfaces: Vec<InterfaceConfig>,
    /// Read by the HTTP API (`--serve`, `pktvault serve`).
    #[serde(default)]
    #[allow(dead_code)]
    server: crate::serve::ServerSection,
    /// Users and tokens of the HTTP API.
    #[serde(default, rename = "user")]
    #[allow(dead_code)]
    users: Vec<toml::Value>,
    #[serde(default, rename = "token")]
    #[allow(dead_code)]
    tokens: Vec<toml::Value>,
}

fn parse_buffer_size(text: &str) -> anyhow::Result<u32> {
    let bytes = parse_size(text).map_err(|err| anyhow::anyhow!("buffer size: {err}"))?;
    u32::try_from(bytes).map_err(|_| anyhow::anyhow!("buffer size {text} is too large; at most 4G-1 is accepted"))
}

fn check_snaplen(snaplen: u32) -> anyhow::Result<u32> {
    if snaplen == 0 || snaplen > 262_144 {
        bail!("snaplen {snaplen} is out of range; accepted are 1 to 262144 bytes");
    }
    Ok(snaplen)
}

fn plans_from_flags(args: &RecordArgs) -> anyhow::Result<Vec<InterfacePlan>> {
    let mut plans = Vec::new();
    for (position, spec) in args.interfaces.iter().enumerate() {
        let (name, ifid) = match spec.rsplit_once('@') {
            Some((name, ifid)) => {
                let ifid = ifid.parse().map_err(|_| {
                    anyhow::anyhow!("-i {spec}: '{ifid}' is not an interface id; write NAME@N, for example eth1@5")
                })?;
                (name.to_string(), ifid)
            }
            None => (spec.clone(), args.location.ifid + position as u32),
        };
        plans.push(InterfacePlan {
            ifid,
            capture: CaptureConfig {
                interface: name,
                snaplen: check_snaplen(args.snaplen)?,
                promiscuous: !args.no_promisc,
                buffer_bytes: parse_buffer_size(&args.buffer_size)?,
                capture_filter: args.capture_filter.clone(),
            },
            limits: segment_limits(&args.segments)?,
            retention: retention_policy(&args.segments)?,
        });
    }
    Ok(plans)
}

fn plans_from_file(path: &Path, args: &RecordArgs) -> anyhow::Result<Vec<InterfacePlan>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read configuration file {}", path.display()))?;
    let config: ConfigFile =
        toml::from_str(&text).with_context(|| format!("invalid configuration file {}", path.display()))?;
    if config.interfaces.is_empty() {
        bail!("{} has no [[interface]] table; add one per interface to record", path.display());
    }
    let mut plans = Vec::new();
    for (position, interface) in config.interfaces.into_iter().enumerate() {
        let context = format!("{}: interface {}", path.display(), interface.name);
        let segments = SegmentArgs {
            segment_seconds: interface.segment_seconds.unwrap_or(args.segments.segment_seconds),
            segment_bytes: interface.segment_bytes.unwrap_or_else(|| args.segments.segment_bytes.clone()),
            max_disk: interface.max_disk.or_else(|| args.segments.max_disk.clone()),
            max_age: interface.max_age.or_else(|| args.segments.max_age.clone()),
        };
        plans.push(InterfacePlan {
            ifid: interface.ifid.unwrap_or(args.location.ifid + position as u32),
            capture: CaptureConfig {
                interface: interface.name,
                snaplen: check_snaplen(interface.snaplen.unwrap_or(args.snaplen)).context(context.clone())?,
                promiscuous: interface.promiscuous.unwrap_or(!args.no_promisc),
                buffer_bytes: parse_buffer_size(interface.buffer_size.as_deref().unwrap_or(&args.buffer_size))
                    .context(context.clone())?,
                capture_filter: interface.capture_filter.or_else(|| args.capture_filter.clone()),
            },
            limits: segment_limits(&segments).context(context.clone())?,
            retention: retention_policy(&segments).context(context)?,
        });
    }
    Ok(plans)
}

/// Records one interface until `stop` is set, keeping its state file current.
fn record_interface(plan: &InterfacePlan, data_dir: &Path, stop: &AtomicBool) -> anyhow::Result<CaptureStats> {
    let store = InterfaceStore::open_writable(data_dir, plan.ifid)?;
    let mut ingester = Ingester::new(store, plan.limits)?.with_retention(plan.retention)?;
    let mut state = RecorderState {
        pid: std::process::id(),
        interface: plan.capture.interface.clone(),
        phase: RecorderPhase::Running,
        error: None,
        started_unix_ns: unix_now_ns(),
        updated_unix_ns: unix_now_ns(),
        packets: 0,
        bytes: 0,
        dropped: 0,
        interface_dropped: 0,
        max_disk_bytes: plan.retention.max_bytes,
    };
    write_state(data_dir, plan.ifid, &state)?;
    let update = |state: &mut RecorderState, stats: &CaptureStats| {
        state.updated_unix_ns = unix_now_ns();
        state.packets = stats.ingest.packets;
        state.bytes = stats.ingest.bytes;
        state.dropped = stats.dropped;
        state.interface_dropped = stats.interface_dropped;
    };
    let mut running = state.clone();
    let mut progress = |stats: &CaptureStats| {
        update(&mut running, stats);
        if let Err(err) = write_state(data_dir, plan.ifid, &running) {
            tracing::warn!(ifid = plan.ifid, error = %err, "cannot update the recorder state file");
        }
    };
    let result = capture(&plan.capture, &mut ingester, stop, &mut progress);
    let sealed = ingester.finish().context("cannot seal the open segments");
    if let Ok(stats) = &result {
        update(&mut state, stats);
    }
    state.updated_unix_ns = unix_now_ns();
    state.phase = RecorderPhase::Stopped;
    let failure = match (&result, &sealed) {
        (Err(err), _) => Some(err.to_string()),
        (_, Err(err)) => Some(format!("{err:#}")),
        _ => None,
    };
    if let Some(reason) = &failure {
        state.phase = RecorderPhase::Failed;
        state.error = Some(reason.clone());
        tracing::error!(interface = %plan.capture.interface, ifid = plan.ifid, error = %reason, "recorder failed");
    }
    write_state(data_dir, plan.ifid, &state)?;
    let stats = result?;
    sealed?;
    Ok(stats)
}

pub fn record(args: RecordArgs) -> anyhow::Result<ExitCode> {
    let plans = match &args.config {
        Some(path) => plans_from_file(path, &args)?,
        None => plans_from_flags(&args)?,
    };
    let mut ifids: Vec<u32> = plans.iter().map(|plan| plan.ifid).collect();
    ifids.sort_unstable();
    if ifids.windows(2).any(|pair| pair[0] == pair[1]) {
        bail!(
            "two interfaces share an ifid ({ifids:?}); give each its own with NAME@IFID or ifid in the configuration"
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("cannot install the signal handler")?;
    }
    let data_dir: PathBuf = args.location.data_dir.clone();
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let server = match &args.serve {
        Some(listen) => {
            let config = crate::serve::server_config(&data_dir, Some(listen), args.config.as_deref(), &args.jobs)?;
            Some(crate::serve::serve_beside_recorder(config, Arc::clone(&stop))?)
        }
        None => None,
    };
    let results: Vec<(String, anyhow::Result<CaptureStats>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = plans
            .iter()
            .map(|plan| {
                let stop = &stop;
                let data_dir = &data_dir;
                let result = scope.spawn(move || {
                    let result = record_interface(plan, data_dir, stop);
                    // One failed interface stops the others, so the process exits
                    // and a supervisor such as systemd can restart it.
                    if result.is_err() {
                        stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    result
                });
                (plan.capture.interface.clone(), result)
            })
            .collect();
        handles
            .into_iter()
            .map(|(name, handle)| {
                (name, handle.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the capture thread panicked"))))
            })
            .collect()
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(server) = server {
        let _ = server.join();
    }
    let mut failed = false;
    for (name, result) in results {
        match result {
            Ok(stats) => eprintln!(
                "recorded {} packets ({} bytes) on {name}; {} dropped by libpcap, {} by the interface",
                stats.ingest.packets, stats.ingest.bytes, stats.dropped, stats.interface_dropped
            ),
            Err(err) => {
                failed = true;
                eprintln!("pktvault: recording {name} failed: {err:#}");
            }
        }
    }
    Ok(if failed { ExitCode::from(2) } else { ExitCode::SUCCESS })
}
