//! The subcommands.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use pktvault_engine::extract::{
    extract_to, ExtractControl, ExtractError, ExtractOutcomeError, ExtractRequest, Selection, WriteSink,
};
use pktvault_engine::filter::bpf::BpfFilter;
use pktvault_engine::filter::parse;
use pktvault_engine::ingest::{Ingester, SegmentLimits};
use pktvault_engine::input::{import_file, STDIN_NAME};
use pktvault_engine::retention::RetentionPolicy;
use pktvault_engine::status::{interface_ids, interface_report, InterfaceReport, RecorderPhase};
use pktvault_engine::store::{interface_dir, InterfaceStore};
use pktvault_schema::time::{format_epoch_ns, TimeWindow};
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::{ExtractArgs, ImportArgs, SegmentArgs, StatusArgs};
use pktvault_schema::text::{parse_size, parse_time};

pub(crate) fn retention_policy(args: &SegmentArgs) -> anyhow::Result<RetentionPolicy> {
    let max_bytes = args
        .max_disk
        .as_deref()
        .map(|text| parse_size(text).map_err(|err| anyhow::anyhow!("--max-disk: {err}")))
        .transpose()?;
    let max_age_ns = args
        .max_age
        .as_deref()
        .map(|text| {
            let age = humantime::parse_duration(text)
                .map(|age| u64::try_from(age.as_nanos()).unwrap_or(u64::MAX))
                .map_err(|err| anyhow::anyhow!("--max-age: invalid duration {text:?} ({err}); give a number and a unit, such as 7d, 12h or 30m"))?;
            if age == 0 {
                // An age limit of zero would delete each segment as soon as it is sealed.
                bail!("--max-age {text:?} is invalid: give a duration above zero, such as 7d, 12h or 30m");
            }
            Ok(age)
        })
        .transpose()?;
    Ok(RetentionPolicy { max_bytes, max_age_ns })
}

pub(crate) fn segment_limits(args: &SegmentArgs) -> anyhow::Result<SegmentLimits> {
    let bytes = parse_size(&args.segment_bytes).map_err(|err| anyhow::anyhow!("--segment-bytes: {err}"))?;
    if args.segment_seconds == 0 {
        bail!("--segment-seconds 0 is invalid; give at least 1 second");
    }
    if bytes < 64 << 10 {
        bail!("--segment-bytes {} is too small; give at least 64K", args.segment_bytes);
    }
    Ok(SegmentLimits { seconds: args.segment_seconds, bytes })
}

pub fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let limits = segment_limits(&args.segments)?;
    let retention = retention_policy(&args.segments)?;
    let data_dir_existed = args.location.data_dir.exists();
    let interface = interface_dir(&args.location.data_dir, args.location.ifid);
    let interface_existed = interface.exists();
    let new_interface = !interface.join("index").exists();
    let store = InterfaceStore::open_writable(&args.location.data_dir, args.location.ifid)?;
    let mut ingester = Ingester::new(store, limits)?.with_retention(retention)?;
    // The first SIGINT or SIGTERM stops the import after the packet being
    // read and seals what was read. A second one ends the process at once.
    let interrupt = interrupt_flag()?;
    ingester.interrupt_on(Arc::clone(&interrupt));
    let mut failed = 0usize;
    let mut completed = 0usize;
    let mut total_packets = 0u64;
    let mut interrupted = false;
    for path in &args.files {
        if interrupt.load(Ordering::Relaxed) {
            interrupted = true;
            eprintln!("pktvault: interrupted before {}; sealing the packets read so far", path.display());
            break;
        }
        let name = if path.as_os_str() == "-" { STDIN_NAME.into() } else { path.display().to_string() };
        let read_before = ingester.stats().packets;
        match import_file(path, &mut ingester) {
            Ok(report) => {
                for warning in &report.warnings {
                    eprintln!("pktvault: warning: {warning}");
                }
                total_packets += report.packets;
                if report.interrupted {
                    interrupted = true;
                    eprintln!(
                        "{name}: interrupted after {} packets; sealing the packets read so far (a second signal ends at once)",
                        report.packets
                    );
                    break;
                }
                completed += 1;
                eprintln!("{name}: {} packets imported{}", report.packets, skipped_note(report.skipped));
            }
            Err(err) => {
                failed += 1;
                // An error in the middle of a file keeps the packets of the
                // segments sealed before it. Those of the segment being
                // written may be lost, so they are counted as read.
                let read = ingester.stats().packets - read_before;
                total_packets += read;
                if read > 0 {
                    eprintln!(
                        "pktvault: {err} ({read} packets of {name} were read before the error; 'pktvault status' shows what is stored)"
                    );
                } else {
                    eprintln!("pktvault: {err}");
                }
            }
        }
    }
    // Sealing commits what was read, even when a later file failed.
    let (store, stats) = ingester.finish().context("cannot seal the open segments")?;
    // The index is closed before an empty one is removed.
    drop(store);
    if new_interface && stats.packets == 0 {
        remove_empty_interface(&interface, interface_existed, data_dir_existed);
    }
    if interrupted {
        eprintln!(
            "imported {total_packets} packets into {} segments before the interrupt; {completed} of {} files were read whole",
            stats.segments_sealed,
            args.files.len()
        );
    } else {
        eprintln!(
            "imported {total_packets} packets from {completed} of {} files into {} segments",
            args.files.len(),
            stats.segments_sealed
        );
    }
    if stats.segments_deleted > 0 {
        eprintln!(
            "pktvault: warning: {} of the oldest segments were deleted to stay within --max-disk, --max-age \
             or the free disk space, so fewer packets are stored than were imported; 'pktvault status' shows what is kept",
            stats.segments_deleted
        );
    }
    Ok(if interrupted {
        // As a shell reports a process that SIGINT ended.
        ExitCode::from(130)
    } else if failed > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// Removes what an import that stored nothing created, so that no empty
/// interface is left for 'status' and the server to list: the index, the
/// empty pcap folder and, where the import created them, the interface
/// and data folders.
fn remove_empty_interface(interface: &std::path::Path, interface_existed: bool, data_dir_existed: bool) {
    let index = interface.join("index");
    if let Err(err) = std::fs::remove_dir_all(&index) {
        eprintln!("pktvault: warning: cannot remove the empty index {}: {err}", index.display());
        return;
    }
    // Each removal fails, and leaves the folder, where something else is in it.
    let _ = std::fs::remove_dir(interface.join("pcap"));
    if !interface_existed {
        let _ = std::fs::remove_dir(interface);
        if !data_dir_existed {
            if let Some(data_dir) = interface.parent() {
                let _ = std::fs::remove_dir(data_dir);
            }
        }
    }
}

fn skipped_note(skipped: u64) -> String {
    if skipped == 0 {
        String::new()
    } else {
        format!(", {skipped} skipped")
    }
}

/// Buffer size of an extraction's output. A broad extraction hands over up
/// to a reader block (1 MiB) of records in one vectored write. `BufWriter`
/// passes a write at least as large as its buffer straight to the file, so
/// with a small buffer most of those records are not copied.
const OUTPUT_BUFFER_BYTES: usize = 128 << 10;

/// The output of an extraction. A regular file is written under a temporary
/// name and renamed when complete, so a failed extraction leaves no partial
/// file. Anything else (a device, FIFO or symbolic link) is written in place,
/// as tcpdump does.
enum Destination {
    Stdout,
    File { path: PathBuf, partial: PathBuf },
    Special,
}

impl Destination {
    fn open(target: &str) -> anyhow::Result<(Destination, Box<dyn Write>)> {
        if target == "-" {
            if std::io::stdout().is_terminal() {
                bail!("refusing to write a binary pcap to a terminal; use -w FILE, or pipe the output (for example into 'tcpdump -r -')");
            }
            return Ok((
                Destination::Stdout,
                Box::new(BufWriter::with_capacity(OUTPUT_BUFFER_BYTES, std::io::stdout().lock())),
            ));
        }
        let path = PathBuf::from(target);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => bail!("-w {target} is a directory; give a file name"),
            Ok(meta) if !meta.file_type().is_file() => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(&path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                return Ok((Destination::Special, Box::new(BufWriter::with_capacity(OUTPUT_BUFFER_BYTES, file))));
            }
            _ => {}
        }
        let mut partial_name = path.file_name().map(|name| name.to_os_string()).unwrap_or_default();
        partial_name.push(".partial");
        let partial = path.with_file_name(partial_name);
        let file = File::create(&partial).with_context(|| {
            format!("cannot write -w {target} (the output goes to {} until it is complete)", partial.display())
        })?;
        Ok((Destination::File { path, partial }, Box::new(BufWriter::with_capacity(OUTPUT_BUFFER_BYTES, file))))
    }

    fn commit(&self) -> anyhow::Result<()> {
        if let Destination::File { path, partial } = self {
            std::fs::rename(partial, path)
                .with_context(|| format!("cannot rename {} to {}", partial.display(), path.display()))?;
        }
        Ok(())
    }

    fn discard(&self) {
        if let Destination::File { partial, .. } = self {
            let _ = std::fs::remove_file(partial);
        }
    }
}

/// Returns a flag that the first SIGINT or SIGTERM sets. A second signal
/// ends the process at once, with status 130 or 143.
fn interrupt_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let interrupt = Arc::new(AtomicBool::new(false));
    for (signal, status) in [(SIGINT, 130), (SIGTERM, 143)] {
        signal_hook::flag::register_conditional_shutdown(signal, status, Arc::clone(&interrupt))
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&interrupt)))
            .context("cannot install the signal handler")?;
    }
    Ok(interrupt)
}

pub fn extract(args: ExtractArgs) -> anyhow::Result<ExitCode> {
    let begin_ns = parse_time(&args.begin).map_err(|err| anyhow::anyhow!("--begin: {err}"))?;
    let end_ns = parse_time(&args.end).map_err(|err| anyhow::anyhow!("--end: {err}"))?;
    if begin_ns >= end_ns {
        bail!(
            "the window is empty: --begin {} is not before --end {}; the window is half-open, begin <= ts < end",
            args.begin,
            args.end
        );
    }
    let filter_text = args.filter.join(" ");
    let selection = if filter_text.trim().is_empty() {
        Selection::All
    } else if args.bpf {
        Selection::Bpf(BpfFilter::new(&filter_text)?)
    } else {
        match parse(&filter_text) {
            Ok(expr) => Selection::Native(expr),
            Err(err) => {
                bail!("{err}\n{}", err.pointer());
            }
        }
    };
    let store = InterfaceStore::open_read_only(&args.location.data_dir, args.location.ifid)?;
    let mut request = ExtractRequest { window: TimeWindow { begin_ns, end_ns }, selection, linktype: args.linktype };
    // The first SIGINT or SIGTERM stops the extraction at its next packet,
    // and a partial output file is removed. A second one ends the process at once.
    let control = ExtractControl::cancelled_by(interrupt_flag()?);
    let (destination, output) = Destination::open(&args.write)?;
    match extract_to(&store, &mut request, &mut WriteSink(output), &control) {
        Ok(stats) => {
            destination.commit()?;
            for linktype in &stats.undecoded_linktypes {
                eprintln!(
                    "pktvault: warning: linktype {linktype} is not decoded by the default filter language, so only protocol-independent primitives match it; use --bpf"
                );
            }
            eprintln!(
                "{} packets extracted ({} candidates read from {} segments)",
                stats.packets, stats.candidates, stats.segments_read
            );
            if stats.packets == 0 {
                let selection =
                    if filter_text.trim().is_empty() { String::new() } else { format!(" matched '{filter_text}'") };
                eprintln!(
                    "pktvault: no packet{selection} between {} and {}; the output holds only the pcap header",
                    format_epoch_ns(begin_ns),
                    format_epoch_ns(end_ns)
                );
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(ExtractOutcomeError::Empty(err)) => {
            destination.discard();
            eprintln!("pktvault: {err}");
            // No data in the window is "nothing matched"; anything else is an error.
            Ok(if matches!(err, ExtractError::NoDataInWindow { .. }) { ExitCode::from(1) } else { ExitCode::from(2) })
        }
        Err(ExtractOutcomeError::Engine(pktvault_engine::Error::Output(err)))
            if err.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            Ok(ExitCode::SUCCESS)
        }
        Err(ExtractOutcomeError::Engine(pktvault_engine::Error::Cancelled)) => {
            destination.discard();
            let written = match &destination {
                Destination::File { path, .. } => format!("{} was not written", path.display()),
                _ => format!("the output ends after {} packets", control.packets()),
            };
            eprintln!("pktvault: interrupted; {written}");
            // As a shell reports a process that SIGINT ended.
            Ok(ExitCode::from(130))
        }
        Err(ExtractOutcomeError::Engine(err)) => {
            destination.discard();
            Err(err.into())
        }
    }
}

pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let report: Vec<InterfaceReport> =
        interface_ids(&args.data_dir)?.into_iter().map(|ifid| interface_report(&args.data_dir, ifid)).collect();
    // An interface whose index cannot be read is reported in its place and
    // makes the exit status 2, after the others are printed.
    let code = if report.iter().any(|entry| matches!(entry, InterfaceReport::Unreadable { .. })) {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(code);
    }
    if report.is_empty() {
        println!("no interfaces recorded in {}", args.data_dir.display());
    }
    for entry in &report {
        let status = match entry {
            InterfaceReport::Readable(status) => status,
            InterfaceReport::Unreadable { ifid, error } => {
                println!("interface {ifid}:");
                println!("  error:     {error}");
                continue;
            }
        };
        println!("interface {}:", status.ifid);
        match &status.recorder {
            Some(recorder) => {
                let state = match recorder.state {
                    RecorderPhase::Running => "running",
                    RecorderPhase::Stopped => "stopped",
                    RecorderPhase::Failed => "failed",
                };
                println!("  recorder:  {state} on {} (pid {})", recorder.interface, recorder.pid);
                if let Some(reason) = &recorder.reason {
                    println!("  reason:    {reason}");
                }
                if let Some(uptime) = recorder.uptime_secs {
                    println!("  uptime:    {uptime} s");
                }
                println!(
                    "  captured:  {} packets, {} bytes; dropped {} by libpcap, {} by the interface",
                    recorder.packets, recorder.bytes, recorder.dropped, recorder.interface_dropped
                );
            }
            None => println!("  recorder:  none has run (imported data only)"),
        }
        let limit = status.max_disk_bytes.map(|max| format!(" of {max} allowed")).unwrap_or_default();
        println!(
            "  stored:    {} packets in {} segments, {} bytes on disk{limit}",
            status.packets, status.segments, status.disk_bytes
        );
        match (status.first_packet_ns, status.last_packet_ns) {
            (Some(first), Some(last)) => {
                println!("  window:    {} to {}", format_epoch_ns(first), format_epoch_ns(last))
            }
            _ => println!("  window:    empty"),
        }
        for line in &status.log_tail {
            println!("  log: {line}");
        }
    }
    Ok(code)
}
