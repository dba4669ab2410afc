//! `mmsb trace`: apply an editing trace through MMSB and check it.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use clap::Args;
use mmsb::tlog::Durability;
use mmsb::{MetricsHandle, ReplayTarget, State};
use mmsb_trace::doc::logical_text;
use mmsb_trace::{self as trace, OnStart, RunOptions};
use serde::Serialize;

use mmsb::replicate::Control;

use crate::replicate_cmd::{StreamArgs, TraceShipper};
use crate::{Fail, input_error, out};

#[derive(Args, Debug)]
pub(crate) struct TraceArgs {
    /// The trace (`.json.gz` or `.json`, josephg/editing-traces format). Without it, an
    /// embedded trace generated in code (deterministic, with multi-byte characters).
    file: Option<PathBuf>,
    /// Log directory (must be missing or empty); default: a temporary directory, removed at
    /// the end.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Take a checkpoint every N transactions (only the newest is kept, with the mid-trace one).
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Write the final document here (through a temporary file in the same directory, created
    /// before the run, so an unwritable path fails at once).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Transactions per commit (one propagation wave each) [default: 100].
    #[arg(long, default_value_t = trace::run::DEFAULT_WAVE_EVERY)]
    wave_every: usize,
    /// Log durability: buffered, flush, fsync:N (every N commits), group:DURATION (`group:5ms`;
    /// a bare number is milliseconds, `group:5` = 5 ms).
    #[arg(long, default_value = "flush", value_parser = parse_durability)]
    durability: Durability,
    /// Skip the checks that replay the log from empty and restore from the mid-trace checkpoint.
    #[arg(long)]
    no_verify: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Serve the running bus's metrics on ADDR:PORT (`/metrics`, `/stats.json`; port 0 picks
    /// a free one); the address is printed on stderr.
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen)]
    listen: Option<SocketAddr>,
    /// With --listen: keep serving this long after the trace ends, so a scraper can read the
    /// final numbers (`5s`, `1m`; SIGINT ends it early).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = cli_support::parse_duration, requires = "listen")]
    linger: Duration,
    /// Ship the log to this NATS server (JetStream) while the trace runs, so `mmsb follow`
    /// can replicate it live; the run ends once the last LSN is in the stream. Needs --log
    /// and --stream.
    #[arg(long, value_name = "URL", requires_all = ["log", "stream"])]
    ship: Option<String>,
    /// With --ship: the stream.
    #[arg(long, value_name = "NAME", requires = "ship")]
    stream: Option<String>,
}

pub(crate) fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!(
            "expected ADDR:PORT, e.g. 127.0.0.1:9465, got {}",
            out::quote(s)
        )
    })
}

pub(crate) fn parse_durability(s: &str) -> Result<Durability, String> {
    match s.split_once(':') {
        None if s == "buffered" => Ok(Durability::Buffered),
        None if s == "flush" => Ok(Durability::Flush),
        Some(("fsync", n)) => n
            .parse()
            .map(Durability::FsyncEvery)
            .map_err(|_| format!("bad count {}", out::quote(n))),
        // A bare number is milliseconds (what `group:5` always meant); anything else is a
        // duration like every other flag's (`group:5ms`, `group:1s`).
        Some(("group", ms)) => match ms.trim().parse::<u64>() {
            Ok(m) => Ok(Durability::GroupCommit(Duration::from_millis(m))),
            Err(_) if ms.trim().parse::<f64>().is_ok() => Err(format!(
                "bad interval {} (a whole number of milliseconds, or a duration like 5ms)",
                out::quote(ms)
            )),
            Err(_) => cli_support::parse_duration(ms)
                .map(Durability::GroupCommit)
                .map_err(|e| format!("bad interval: {e}")),
        },
        _ => Err(format!(
            "unknown durability {} (buffered, flush, fsync:N, group:DURATION)",
            out::quote(s)
        )),
    }
}

/// `mmsb trace --json`.
#[derive(Serialize)]
struct TraceJson<'a> {
    report: &'a trace::run::RunReport,
    matches_end_content: bool,
    checks: Option<&'a Vec<String>>,
    replay_seconds: Option<f64>,
    restore_seconds: Option<f64>,
    verify_error: Option<&'a str>,
    out_error: Option<&'a str>,
    shipped: Option<&'a mmsb::replicate::ShipReport>,
}

/// Set by the SIGINT/SIGTERM handler; the run checks it before every transaction.
pub(crate) static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// The signal that set [`INTERRUPTED`].
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only async-signal-safe work here: two atomic stores. Relaxed: the run loop polls the flag
    // and reads the signal number after seeing it, on the same thread that exits.
    SIGNAL.store(sig, Ordering::Relaxed);
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Routes SIGINT and SIGTERM to [`on_signal`] for the rest of the run, once (`SA_RESETHAND`: a
/// second signal has its default effect, so a stuck run can still be killed).
pub(crate) fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed `sigaction` is a valid starting value (no flags, empty mask); we set
        // the handler to an `extern "C" fn(c_int)` that only stores to atomics, which is
        // async-signal-safe, and pass valid pointers (the old action is not wanted: null).
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            act.sa_flags = libc::SA_RESETHAND;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
    }
}

fn interrupted() -> Option<Fail> {
    if !INTERRUPTED.load(Ordering::Relaxed) {
        return None;
    }
    let sig = SIGNAL.load(Ordering::Relaxed);
    let name = if sig == libc::SIGTERM {
        "SIGTERM"
    } else {
        "SIGINT"
    };
    Some(Fail {
        code: cli_support::exit::signal(sig),
        msg: format!("interrupted by {name}; the temporary log directory was removed"),
    })
}

/// The document's destination, opened before the run: a temporary file beside `--out`, so an
/// unwritable path is an error at once, and the final file appears whole (rename) or not at all.
fn open_out(out: &Path) -> Result<tempfile::NamedTempFile, Fail> {
    if std::fs::symlink_metadata(out).is_ok_and(|m| m.is_dir()) {
        return Err(input_error(format!(
            "{}: is a directory (--out names the file that receives the document)",
            out.display()
        )));
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    tempfile::Builder::new()
        .prefix(".mmsb-trace-out-")
        .tempfile_in(parent)
        .map_err(|e| input_error(format!("{}: cannot write here: {e}", out.display())))
}

/// The shipper of `--ship`, started by the run's start hook.
type ShipSlot = Arc<Mutex<Option<TraceShipper>>>;

/// The start hook: hands the bus's metrics handle to `--listen`'s server and starts the
/// `--ship` shipper.
fn start_hook(
    handle: Option<Arc<OnceLock<MetricsHandle>>>,
    ship: Option<(StreamArgs, Arc<Control>, ShipSlot)>,
) -> OnStart {
    OnStart(Arc::new(move |bus: &mut mmsb::Mmsb| {
        if let Some(h) = &handle {
            let _ = h.set(bus.metrics_handle());
        }
        if let Some((args, ctl, slot)) = &ship {
            let s = TraceShipper::start(bus.dir(), args, Arc::clone(ctl));
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(s);
        }
    }))
}

/// Serves the published stats of the run's bus once the start hook has given their handle
/// (503 before that), with the shipper's figures when there is one.
fn listen(
    addr: SocketAddr,
    ship: Option<Arc<Control>>,
) -> Result<(mmsb::metrics::Endpoint, Arc<OnceLock<MetricsHandle>>), Fail> {
    let handle: Arc<OnceLock<MetricsHandle>> = Arc::default();
    let reader = handle.clone();
    let endpoint = serve_listen(
        addr,
        Box::new(move || match reader.get() {
            Some(h) => h
                .stats()
                .map(|s| (Some(s), ship.as_ref().map(|c| c.stats())))
                .ok_or_else(|| "no stats published yet".to_owned()),
            None => Err("the trace run has not started its bus yet".to_owned()),
        }),
    )?;
    Ok((endpoint, handle))
}

/// `--listen`: serves `source` on `addr` and names the address on stderr (`metrics on
/// http://ADDR/metrics`); a bind failure is exit 2.
pub(crate) fn serve_listen(
    addr: SocketAddr,
    source: Box<mmsb::metrics::MetricsSource>,
) -> Result<mmsb::metrics::Endpoint, Fail> {
    let endpoint =
        mmsb::metrics::serve(addr, source).map_err(|e| input_error(format!("--listen: {e}")))?;
    eprintln!("metrics on http://{}/metrics", endpoint.local_addr());
    Ok(endpoint)
}

pub(crate) fn run(a: &TraceArgs) -> Result<(), Fail> {
    let ship = match (&a.ship, &a.stream) {
        (Some(url), Some(name)) => Some((
            StreamArgs {
                nats: url.clone(),
                stream: name.clone(),
                timeout: mmsb::replicate::DEFAULT_TIMEOUT,
            },
            Control::new(),
            ShipSlot::default(),
        )),
        _ => None,
    };
    let served = a
        .listen
        .map(|l| listen(l, ship.as_ref().map(|s| Arc::clone(&s.1))))
        .transpose()?;
    let (endpoint, handle) = served.unzip();
    let slot = ship.as_ref().map(|s| Arc::clone(&s.2));
    let hook = (handle.is_some() || ship.is_some()).then(|| start_hook(handle, ship));
    let r = run_trace(a, hook, slot);
    if let Some(endpoint) = endpoint {
        // Serve the final stats (published when the bus stopped) a while longer, unless a
        // signal asks to stop.
        let until = Instant::now() + a.linger;
        while !INTERRUPTED.load(Ordering::Relaxed) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
        drop(endpoint);
    }
    r
}

fn run_trace(a: &TraceArgs, on_start: Option<OnStart>, ship: Option<ShipSlot>) -> Result<(), Fail> {
    if let Some(log) = &a.log
        && std::fs::symlink_metadata(log).is_ok_and(|m| !m.is_dir())
    {
        return Err(input_error(format!(
            "{}: is not a directory",
            log.display()
        )));
    }
    let out_tmp = a.out.as_deref().map(open_out).transpose()?;
    let t = match &a.file {
        Some(p) => trace::load(p).map_err(|e| input_error(e.to_string()))?,
        None => trace::default_trace(),
    };
    install_signal_handlers();
    let opts = RunOptions {
        trace: a.file.clone(),
        log_dir: a.log.clone(),
        wave_every: a.wave_every.max(1),
        checkpoint_every: a.checkpoint_every,
        mid_checkpoint: !a.no_verify,
        durability: a.durability,
        timings: true,
        cancel: Some(&INTERRUPTED),
        prune_checkpoints: true,
        on_start,
    };
    let report = match trace::run::run_trace(&t, &opts) {
        Ok(r) => r,
        Err(trace::RunError::Interrupted) => {
            return Err(interrupted().unwrap_or_else(|| input_error("interrupted")));
        }
        Err(e) => return Err(input_error(e.to_string())),
    };
    // The final document, read back from what the log directory holds.
    let state = State::replay(&report.log_dir, ReplayTarget::End)
        .map_err(|e| input_error(e.to_string()))?;
    if let Some(f) = interrupted() {
        return Err(f);
    }
    // With --ship: wait until the stream holds the last LSN.
    let shipper = ship.and_then(|s| s.lock().unwrap_or_else(PoisonError::into_inner).take());
    let shipped = match shipper {
        Some(s) => Some(s.finish(state.last_lsn())?),
        None => None,
    };
    let header = state
        .page(report.pages.header)
        .map(|p| p.bytes())
        .unwrap_or_default();
    let doc = state
        .page(report.pages.document)
        .map(|p| p.bytes())
        .unwrap_or_default();
    let text = logical_text(header, doc).unwrap_or_default();
    let matches = text == t.end_content();
    let verified = if a.no_verify || !matches {
        None
    } else {
        Some(trace::run::verify(&t, &report))
    };
    if let Some(f) = interrupted() {
        return Err(f);
    }
    let verify_error = match &verified {
        Some(Err(e)) => Some(e.to_string()),
        _ => None,
    };
    // Write the document (the report is printed whether or not this succeeds).
    let write_error = match (&a.out, out_tmp) {
        (Some(out), Some(mut tmp)) => tmp
            .write_all(text.as_bytes())
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| e.to_string())
            .and_then(|()| tmp.persist(out).map(drop).map_err(|e| e.error.to_string()))
            .err()
            .map(|e| format!("{}: {e}", out.display())),
        _ => None,
    };
    if a.json {
        let v = verified.as_ref().and_then(|r| r.as_ref().ok());
        out::json_out(&TraceJson {
            report: &report,
            matches_end_content: matches,
            checks: v.map(|v| &v.checks),
            replay_seconds: v.map(|v| v.replay_seconds),
            restore_seconds: v.map(|v| v.restore_seconds),
            verify_error: verify_error.as_deref(),
            out_error: write_error.as_deref(),
            shipped: shipped.as_ref(),
        })?;
    } else {
        outln!(
            "trace {}: {} transactions, {} patches",
            report.trace,
            report.txns,
            report.patches
        );
        outln!(
            "  applied in {:.3} s ({} commits, {} user deltas, {} log bytes); checkpoints {:.3} s",
            report.apply_seconds,
            report.commits,
            report.user_deltas,
            report.log_file_bytes,
            report.checkpoint_seconds
        );
        outln!(
            "  document {} bytes, {} chars, {} words, {} lines",
            report.doc_bytes,
            report.doc_chars,
            report.word_count,
            report.line_starts
        );
        outln!(
            "  endContent: {}",
            if matches { "identical" } else { "DIFFERENT" }
        );
        if let Some(Ok(v)) = &verified {
            for c in &v.checks {
                outln!("  ok: {c}");
            }
            outln!(
                "  replay from empty {:.3} s, restore from checkpoint {:.3} s",
                v.replay_seconds,
                v.restore_seconds
            );
        }
        if let Some(r) = &shipped {
            outln!(
                "  shipped to stream {}: up to LSN {} ({} frames, {} messages)",
                r.stream,
                r.last_lsn.max(r.resumed_after),
                r.frames,
                r.messages
            );
        }
    }
    if let Some(e) = write_error {
        return Err(input_error(e));
    }
    if !matches {
        let at = text
            .bytes()
            .zip(t.end_content().bytes())
            .position(|(x, y)| x != y)
            .unwrap_or(text.len().min(t.end_content().len()));
        return Err(crate::check_failed(format!(
            "{}: final document differs from endContent at byte {at}",
            report.trace
        )));
    }
    if let Some(e) = verify_error {
        return Err(crate::check_failed(format!("{}: {e}", report.trace)));
    }
    Ok(())
}
