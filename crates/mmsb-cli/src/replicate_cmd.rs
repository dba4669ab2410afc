//! `mmsb ship`, `mmsb follow`, `mmsb promote`: replication through NATS JetStream
//! (`mmsb::replicate`), and the shipper `mmsb trace --ship` runs beside its bus.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use clap::Args;
use mmsb::replicate::{
    self, Control, FollowOptions, PromoteOptions, ReplicateError, ShipOptions, ShipReport,
};
use mmsb::tlog::Durability;

use crate::trace_cmd::{
    INTERRUPTED, install_signal_handlers, parse_durability, parse_listen, serve_listen,
};
use crate::{Fail, out};

/// Where the stream is: `--nats URL --stream NAME`.
#[derive(Args, Debug, Clone)]
pub(crate) struct StreamArgs {
    /// The NATS server, e.g. nats://127.0.0.1:4222 (JetStream enabled).
    #[arg(long, value_name = "URL")]
    pub(crate) nats: String,
    /// The JetStream stream (1 to 64 of A-Z a-z 0-9 _ -); created by the shipper.
    #[arg(long, value_name = "NAME")]
    pub(crate) stream: String,
    /// How long connecting and each request may take (`5s`).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = cli_support::parse_duration)]
    pub(crate) timeout: Duration,
}

#[derive(Args, Debug)]
pub(crate) struct ShipArgs {
    /// The leader's log directory (its bus may be running in another process).
    dir: PathBuf,
    #[command(flatten)]
    stream: StreamArgs,
    /// After publishing a checkpoint, purge the stream below what a follower built from it
    /// needs.
    #[arg(long)]
    purge: bool,
    /// Do not publish checkpoints to the stream's object store.
    #[arg(long)]
    no_checkpoints: bool,
    /// Lifetime of the shipper lease without renewal (`3s`); a second shipper is refused while
    /// it lives.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = cli_support::parse_duration)]
    lease: Duration,
    /// Ship up to the end of the commit holding this LSN, then return once the stream has it
    /// (default: run until SIGINT/SIGTERM).
    #[arg(long, value_name = "LSN")]
    until_lsn: Option<u64>,
    /// Serve the shipper's replication metrics on ADDR:PORT (`/metrics`, `/stats.json`).
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen)]
    listen: Option<SocketAddr>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct FollowArgs {
    #[command(flatten)]
    stream: StreamArgs,
    /// The replica's directory: missing or empty for a new replica (built from the newest
    /// checkpoint in the stream's object store, if any), or one to resume.
    #[arg(long)]
    dir: PathBuf,
    /// Durability of the replica's log: buffered, flush, fsync:N, group:DURATION.
    #[arg(long, default_value = "flush", value_parser = parse_durability)]
    durability: Durability,
    /// Return once this LSN is applied (default: run until SIGINT/SIGTERM).
    #[arg(long, value_name = "LSN")]
    until_lsn: Option<u64>,
    /// Serve the replica's metrics and its lag on ADDR:PORT (`/metrics`, `/stats.json`).
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen)]
    listen: Option<SocketAddr>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct PromoteArgs {
    /// The replica's directory (its follower stopped, caught up with the stream).
    dir: PathBuf,
    #[command(flatten)]
    stream: StreamArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// A replication error as the tools report it: exit 2 for bad input (a hostile or corrupt
/// stream, a bad name, an unreachable server, a log that cannot be read), 1 for a refused
/// operation (fenced, a gap).
pub(crate) fn fail(e: &ReplicateError) -> Fail {
    let msg = out::bound(&e.to_string());
    if e.is_bad_input() {
        crate::input_error(msg)
    } else {
        crate::check_failed(msg)
    }
}

/// Stops `ctl` when SIGINT or SIGTERM arrives (a watcher thread polling the flag).
fn stop_on_signal(ctl: &Arc<Control>) {
    install_signal_handlers();
    let c = Arc::clone(ctl);
    std::thread::spawn(move || {
        while !INTERRUPTED.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        c.stop();
    });
}

/// Serves `ctl`'s figures (and the bus's, when `with_bus`) on `addr`.
pub(crate) fn serve(
    addr: SocketAddr,
    ctl: &Arc<Control>,
    with_bus: bool,
) -> Result<mmsb::metrics::Endpoint, Fail> {
    let c = Arc::clone(ctl);
    serve_listen(
        addr,
        Box::new(move || {
            let bus = c.bus_stats();
            if with_bus && bus.is_none() {
                return Err("the replica is not open yet".to_owned());
            }
            Ok((bus, Some(c.stats())))
        }),
    )
}

fn ship_options(s: &StreamArgs) -> ShipOptions {
    let mut o = ShipOptions::new(s.stream.clone());
    o.timeout = s.timeout;
    o
}

pub(crate) fn ship(a: &ShipArgs) -> Result<(), Fail> {
    let mut opts = ship_options(&a.stream);
    opts.purge = a.purge;
    opts.checkpoints = !a.no_checkpoints;
    opts.lease = a.lease;
    opts.lease_wait = a.lease * 2;
    let ctl = Control::new();
    if let Some(l) = a.until_lsn {
        ctl.finish_at(mmsb::Lsn(l));
    }
    let _endpoint = a.listen.map(|l| serve(l, &ctl, false)).transpose()?;
    stop_on_signal(&ctl);
    let r = replicate::ship_blocking(&a.dir, &a.stream.nats, &opts, &ctl).map_err(|e| fail(&e))?;
    if a.json {
        out::json_out(&r)?;
    } else {
        print_ship(&r)?;
    }
    Ok(())
}

fn print_ship(r: &ShipReport) -> Result<(), Fail> {
    outln!(
        "shipped to {}: LSN {}..={} ({} messages, {} frames, {} bytes), {} checkpoints, {} reconnects{}",
        r.stream,
        r.resumed_after + 1,
        r.last_lsn.max(r.resumed_after),
        r.messages,
        r.frames,
        r.bytes,
        r.checkpoints,
        r.reconnects,
        r.purged_below
            .map(|s| format!(", purged below sequence {s}"))
            .unwrap_or_default()
    );
    Ok(())
}

pub(crate) fn follow(a: &FollowArgs) -> Result<(), Fail> {
    let mut opts = FollowOptions::new(a.stream.stream.clone());
    opts.timeout = a.stream.timeout;
    opts.durability = a.durability;
    let ctl = Control::new();
    if let Some(l) = a.until_lsn {
        ctl.finish_at(mmsb::Lsn(l));
    }
    let _endpoint = a.listen.map(|l| serve(l, &ctl, true)).transpose()?;
    stop_on_signal(&ctl);
    let r =
        replicate::follow_blocking(&a.dir, &a.stream.nats, &opts, &ctl).map_err(|e| fail(&e))?;
    if a.json {
        out::json_out(&r)?;
    } else {
        outln!(
            "followed {} into {}: at LSN {} (stream at {}), {} commits, {} frames, {} bytes applied, {} reconnects{}",
            r.stream,
            a.dir.display(),
            r.applied_lsn,
            r.leader_lsn,
            r.commits,
            r.frames,
            r.bytes,
            r.reconnects,
            r.bootstrapped_from
                .map(|l| format!(", built from the checkpoint at LSN {l}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

pub(crate) fn promote(a: &PromoteArgs) -> Result<(), Fail> {
    let mut opts = PromoteOptions::new(a.stream.stream.clone());
    opts.timeout = a.stream.timeout;
    let r = replicate::promote_blocking(&a.dir, &a.stream.nats, &opts).map_err(|e| fail(&e))?;
    if a.json {
        out::json_out(&r)?;
    } else {
        outln!(
            "promoted {} to leader of {} at LSN {} (stream sequence {}); the previous leader {} is fenced",
            a.dir.display(),
            r.stream,
            r.lsn,
            r.seq,
            r.previous_leader.as_deref().unwrap_or("(none)")
        );
    }
    Ok(())
}

/// The shipper `mmsb trace --ship` runs on its own thread beside the trace's bus.
pub(crate) struct TraceShipper {
    pub(crate) ctl: Arc<Control>,
    thread: Option<JoinHandle<replicate::Result<ShipReport>>>,
}

impl TraceShipper {
    /// Starts shipping `dir` (the bus is running: its `LOGID` exists).
    pub(crate) fn start(dir: &Path, s: &StreamArgs, ctl: Arc<Control>) -> TraceShipper {
        let (dir, url, opts) = (dir.to_path_buf(), s.nats.clone(), ship_options(s));
        let c = Arc::clone(&ctl);
        let thread = std::thread::spawn(move || replicate::ship_blocking(&dir, &url, &opts, &c));
        TraceShipper {
            ctl,
            thread: Some(thread),
        }
    }

    /// Waits until `last` is in the stream (or the shipper failed), and returns its report.
    pub(crate) fn finish(mut self, last: mmsb::Lsn) -> Result<ShipReport, Fail> {
        self.ctl.finish_at(last);
        let t = self.thread.take().expect("joined once");
        match t.join() {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(fail(&e)),
            Err(_) => Err(crate::input_error("the shipper thread panicked")),
        }
    }
}

impl Drop for TraceShipper {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.ctl.stop();
            let _ = t.join();
        }
    }
}
