//! `bench mmsb [--quick] [--json] [--out PATH] [--dir PATH] [--only SUBSTRING]`: the workloads
//! of MMSB.jl's benchmark suite, run against this workspace's `mmsb` crate, plus logged-delta
//! throughput and a real editing trace.
//!
//! # What is timed
//! Every workload starts a fresh bus ([`Mmsb::start`]) in its own temporary directory (under
//! `--dir`, default the system temp directory), with the bus's own latency histograms off
//! (`Config::timings = false`: the bench times from outside; the default config has them on,
//! which `delta/cpu_sparse_timings_on` shows the cost of) and the log in
//! [`Durability::Buffered`] unless the workload names another mode. Set-up (pages, edges,
//! recompute functions, input buffers) is outside every timed region, and each workload first
//! runs unrecorded warm-up operations on the same bus.
//!
//! Per-operation latencies are `Instant` pairs around exactly the named call, recorded in an HDR
//! histogram (ns, 3 significant digits); each includes one clock pair (`timer_overhead_ns`, not
//! subtracted). `ops_per_sec` comes, for repeatable operations, from a separate untimed pass of
//! the same operations on the same bus (operations / wall time of the loop); for operations
//! that need set-up between them (replay, checkpoint, restore, edge insertion) it is
//! `samples / sum of the timed durations`. Each result's `ops_per_sec_from` says which.
//!
//! The workloads and what exactly each times are listed in [`workloads::describe`]; `--json`
//! prints `{"machine", "config", "results": {name: {p50_ns, p99_ns, ops_per_sec, ...}}, "trace",
//! "original", "goals", "notes"}`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ::mmsb::{Config, Durability, EdgeKind, Mmsb, PageId, ReplayTarget, State, passthrough};
use clap::Args;
use hdrhistogram::Histogram;
use serde::ser::SerializeMap as _;
use serde::{Serialize, Serializer};

use crate::machine::Machine;
use crate::{RatioGoal, emit_report};

mod replication;
mod tables;
mod trace;
mod workloads;

use tables::print_tables;
use trace::run_trace;
use workloads::Runner;

/// Page size of the allocation, delta, propagation, replay and persistence workloads.
const PAGE: usize = 1024;
/// Page size of the log-throughput workloads.
const LOG_PAGE: usize = 4096;
/// Bytes per write of the log-throughput workloads.
const LOG_WRITE: usize = 8;
/// Nodes of the graph workloads, and the fan-out of each.
const GRAPH_NODES: u64 = 1024;
const GRAPH_FANOUT: u64 = 4;
/// Updates of the replayed page.
const REPLAY_EPOCHS: u64 = 100;
/// Pages of the checkpoint and restore workloads.
const PERSIST_PAGES: usize = 100;
/// The editing trace of the trace workload, in `<data dir>/editing-traces/`.
const TRACE_NAME: &str = "automerge-paper";

/// Arguments of `bench mmsb`.
#[derive(Debug, Args)]
pub struct MmsbArgs {
    /// Short run (far fewer operations per workload): well under a minute.
    #[arg(long)]
    quick: bool,
    /// Print one JSON object on stdout instead of tables.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// Directory in which each workload's temporary log directory is created (default: the
    /// system temp directory). fsync costs depend on its filesystem, which the report names.
    #[arg(long, value_name = "PATH")]
    dir: Option<PathBuf>,
    /// Run only the workloads whose name contains this string (`trace/automerge-paper` names
    /// the trace workload); goals of workloads not run are reported as not run.
    #[arg(long, value_name = "SUBSTRING")]
    only: Option<String>,
}

type R<T> = Result<T, String>;

/// Adds what failed to an error.
trait Ctx<T> {
    fn ctx(self, what: &str) -> R<T>;
}

impl<T, E: std::fmt::Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> R<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

// ------------------------------------------------------------------------------------ sizes

/// Operation counts of a run.
#[derive(Debug, Clone, Serialize)]
struct Sizes {
    quick: bool,
    /// Pages created in the timed pass of `allocation/cpu_1kb` (as many again untimed).
    allocation_ops: u64,
    delta_sparse_ops: u64,
    delta_dense_ops: u64,
    single_hop_ops: u64,
    chain_10_ops: u64,
    /// Batches (not updates) of `propagation/batch_32x4`.
    batch_32x4_ops: u64,
    batch_128x2_ops: u64,
    replay_reps: u64,
    checkpoint_reps: u64,
    restore_reps: u64,
    topo_reps: u64,
    /// Whole graphs built per `graph/add_edges_*` workload.
    add_edges_builds: u64,
    /// Writes of the untimed (ops/s) and timed (percentiles) passes of `log/deltas_buffered`.
    log_buffered_ops: u64,
    log_buffered_timed_ops: u64,
    log_fsync_ops: u64,
    log_fsync_timed_ops: u64,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        // Full sizes keep each workload at a few seconds on a 2-core VM and its log under
        // ~150 MB per pass; quick sizes are a tenth (a CI smoke run).
        let s = |full: u64, quick_n: u64| if quick { quick_n } else { full };
        Sizes {
            quick,
            allocation_ops: s(50_000, 5_000),
            delta_sparse_ops: s(200_000, 20_000),
            delta_dense_ops: s(100_000, 10_000),
            single_hop_ops: s(50_000, 5_000),
            chain_10_ops: s(10_000, 1_000),
            batch_32x4_ops: s(3_000, 300),
            batch_128x2_ops: s(1_000, 100),
            replay_reps: s(2_000, 30),
            checkpoint_reps: s(100, 5),
            restore_reps: s(2_000, 30),
            topo_reps: s(20_000, 1_000),
            add_edges_builds: s(20, 3),
            log_buffered_ops: s(2_000_000, 200_000),
            log_buffered_timed_ops: s(500_000, 50_000),
            log_fsync_ops: s(1_000_000, 100_000),
            log_fsync_timed_ops: s(200_000, 20_000),
        }
    }
}

/// Unrecorded operations before a workload's measured ones.
fn warmup_of(n: u64) -> u64 {
    (n / 10).clamp(3, 5_000)
}

// ------------------------------------------------------------------------------------ results

/// One workload's numbers.
#[derive(Debug, Clone, Serialize)]
struct WorkloadResult {
    p50_ns: u64,
    p99_ns: u64,
    ops_per_sec: f64,
    p999_ns: u64,
    max_ns: u64,
    mean_ns: f64,
    /// Timed operations in the histogram.
    samples: u64,
    /// `"untimed pass"` (operations / wall time of a separate loop) or `"timed samples"`
    /// (samples / sum of their durations).
    ops_per_sec_from: &'static str,
    /// Log frame bytes written per timed operation (from the bus's counters), where it applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    log_bytes_per_op: Option<f64>,
    /// Exactly what one operation is.
    notes: String,
}

/// Latencies of one workload.
struct Lat {
    hist: Histogram<u64>,
    sum_ns: u128,
}

impl Lat {
    fn new() -> R<Lat> {
        let hist = Histogram::new_with_bounds(1, 600_000_000_000, 3).ctx("histogram")?;
        Ok(Lat { hist, sum_ns: 0 })
    }

    /// Records the time since `t0`.
    #[inline]
    fn record(&mut self, t0: Instant) {
        let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.hist.saturating_record(ns.max(1));
        self.sum_ns += u128::from(ns);
    }

    fn result(&self, ops_per_sec: Option<f64>, notes: String) -> WorkloadResult {
        let h = &self.hist;
        let n = h.len();
        let mean = if n == 0 {
            f64::NAN
        } else {
            self.sum_ns as f64 / n as f64
        };
        let (ops, from) = match ops_per_sec {
            Some(v) => (v, "untimed pass"),
            None => (1e9 / mean, "timed samples"),
        };
        WorkloadResult {
            p50_ns: h.value_at_quantile(0.50),
            p99_ns: h.value_at_quantile(0.99),
            ops_per_sec: ops,
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
            mean_ns: mean,
            samples: n,
            ops_per_sec_from: from,
            log_bytes_per_op: None,
            notes,
        }
    }
}

/// Runs `warmup` unrecorded operations, then `n` in an untimed loop (for ops/s), then `n` each
/// timed on its own. `op(i)` gets a running index across all three passes.
fn run_repeated(warmup: u64, n: u64, mut op: impl FnMut(u64) -> R<()>) -> R<(Lat, f64)> {
    let mut i = 0u64;
    for _ in 0..warmup {
        op(i)?;
        i += 1;
    }
    let t = Instant::now();
    for _ in 0..n {
        op(i)?;
        i += 1;
    }
    let wall = t.elapsed().as_secs_f64();
    let mut lat = Lat::new()?;
    for _ in 0..n {
        let t0 = Instant::now();
        op(i)?;
        lat.record(t0);
        i += 1;
    }
    Ok((lat, n as f64 / wall))
}

/// Results in report order, serialised as a JSON object.
#[derive(Debug, Clone)]
struct Ordered<T>(Vec<(String, T)>);

impl<T: Serialize> Serialize for Ordered<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<T> Ordered<T> {
    fn get(&self, key: &str) -> Option<&T> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// The trace workload's numbers (`null` when it did not run; `note` says why).
#[derive(Debug, Clone, Default, Serialize)]
struct TraceResult {
    apply_ms: Option<f64>,
    replay_ms: Option<f64>,
    log_bytes: Option<u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", flatten)]
    extra: BTreeMap<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

/// MMSB.jl's own numbers (one sample each, from its benchmark report), for comparison.
#[derive(Debug, Clone, Serialize)]
struct Original {
    source: &'static str,
    #[serde(rename = "propagation/single_hop_ns")]
    single_hop_ns: u64,
    #[serde(rename = "propagation/chain_10_ns")]
    chain_10_ns: u64,
    #[serde(rename = "allocation/cpu_1kb_ns")]
    allocation_1kb_ns: u64,
    #[serde(rename = "delta_1kb_ns")]
    delta_1kb_ns: u64,
}

const ORIGINAL: Original = Original {
    source: "MMSB.jl's own benchmark report (Julia; a single sample per workload; its allocation \
             figure times start + create + stop; its 1 KiB delta figure is compared here with both \
             delta/cpu_sparse and delta/cpu_dense)",
    single_hop_ns: 176_000,
    chain_10_ns: 1_370_000,
    allocation_1kb_ns: 12_000,
    delta_1kb_ns: 22_000,
};

impl Original {
    /// The original's figure for a workload of ours, if it has one.
    fn for_workload(&self, name: &str) -> Option<u64> {
        match name {
            "propagation/single_hop" => Some(self.single_hop_ns),
            "propagation/chain_10" => Some(self.chain_10_ns),
            "allocation/cpu_1kb" => Some(self.allocation_1kb_ns),
            "delta/cpu_sparse" | "delta/cpu_dense" => Some(self.delta_1kb_ns),
            _ => None,
        }
    }
}

/// A goal of the issue, evaluated on this run.
#[derive(Debug, Clone, Serialize)]
struct Goal {
    name: &'static str,
    #[serde(flatten)]
    goal: RatioGoal,
    /// False when the workload did not run (the goal is then neither met nor missed).
    evaluated: bool,
}

/// Run parameters that are not operation counts.
#[derive(Debug, Clone, Serialize)]
struct RunConfig {
    #[serde(flatten)]
    sizes: Sizes,
    /// Parent of the temporary log directories, and its filesystem type (from /proc/mounts).
    temp_dir: PathBuf,
    temp_dir_fs: Option<String>,
    /// Median cost of an empty timed section, ns (included in every latency, not subtracted).
    timer_overhead_ns: u64,
    page_bytes: usize,
    bus_timings: bool,
    default_durability: &'static str,
    /// `--only`, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    only: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    machine: Machine,
    config: RunConfig,
    results: Ordered<WorkloadResult>,
    trace: Ordered<TraceResult>,
    original: Original,
    goals: Vec<Goal>,
    /// Log shipping through NATS JetStream to a follower (`mmsb::replicate`), against the
    /// same writes with no replication: see `mmsb/replication.rs`.
    replication: Ordered<replication::ReplicationResult>,
    notes: Vec<&'static str>,
}

const NOTES: [&str; 7] = [
    "Every workload runs on a fresh bus in its own temporary directory, log in Durability::Buffered \
     unless its name says otherwise, bus timings off (Config::timings = false).",
    "Latencies include one Instant pair (config.timer_overhead_ns), not subtracted.",
    "allocation/cpu_1kb times create_page(1024) on a running bus (Buffered log); MMSB.jl's figure \
     timed starting a bus, creating the page and stopping the bus.",
    "The workloads that fsync (persistence/checkpoint_100pages, log/*) start after a sync(2) of \
     the whole system, so they do not pay for earlier workloads' writeback.",
    "persistence/checkpoint_100pages includes syncing the log (fdatasync), writing the checkpoint \
     file, its fsync, the rename and the directory fsync: its cost is mostly the filesystem's \
     (config.temp_dir_fs).",
    "The machine is a shared 2-core VM; compare medians, not single runs.",
    "MMSB.jl's figures (original) are single samples from its own report, on another machine.",
];

// ------------------------------------------------------------------------------------ helpers

/// SplitMix64: deterministic bytes for the input buffers.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Three random buffers of `n` bytes that differ from each other at every byte (so any update
/// from one to another is a dense delta, and a cycle through them never repeats a value twice
/// in a row).
fn distinct_buffers(rng: &mut Rng, n: usize) -> [Vec<u8>; 3] {
    let a = rng.bytes(n);
    let mut b = a.clone();
    let mut c = a.clone();
    for i in 0..n {
        let d = 1 + (rng.next_u64() % 127) as u8; // 1..=127
        b[i] = a[i].wrapping_add(d);
        c[i] = a[i].wrapping_add(d + 128); // differs from a (d + 128 != 0) and from b
    }
    [a, b, c]
}

/// A bus in a fresh temporary directory. Fields drop in order: the bus, then the directory.
struct Fresh {
    bus: Mmsb,
    dir: tempfile::TempDir,
}

impl Fresh {
    fn new(parent: &Path, durability: Durability, timings: bool) -> R<Fresh> {
        let dir = tempfile::Builder::new()
            .prefix("mmsb-bench-")
            .tempdir_in(parent)
            .ctx(&format!(
                "cannot create a temporary directory in {}",
                parent.display()
            ))?;
        let mut cfg = Config::new(dir.path()).durability(durability);
        cfg.timings = timings;
        let bus = Mmsb::start(cfg).ctx("Mmsb::start")?;
        Ok(Fresh { bus, dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn page(&mut self, size: usize) -> R<PageId> {
        self.bus.create_page(size).ctx("create_page")
    }

    /// Pages `0..n` of `size` bytes chained by Data edges, each but the first a passthrough of
    /// its parent.
    fn chain(&mut self, n: usize, size: usize) -> R<Vec<PageId>> {
        let ids = (0..n).map(|_| self.page(size)).collect::<R<Vec<_>>>()?;
        for w in ids.windows(2) {
            self.bus
                .add_dependency(w[0], w[1], EdgeKind::Data)
                .ctx("add_dependency")?;
            self.bus
                .register_recompute(w[1], passthrough())
                .ctx("register_recompute")?;
        }
        Ok(ids)
    }

    fn log_bytes(&self) -> u64 {
        self.bus.stats().log_bytes
    }
}

/// Fails unless an update produced a delta.
#[inline]
fn changed<T>(r: ::mmsb::Result<Option<T>>, what: &str) -> R<()> {
    match r {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(format!("{what}: the update changed nothing (bench bug)")),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

/// Writes back every dirty page of the system (`sync(2)`), so that the fsyncs of the next
/// workload do not pay for the hundreds of MB earlier workloads left in the page cache (measured:
/// checkpoint p50 0.75 ms alone, 2.9 ms right after the propagation workloads).
fn settle_disk() {
    // SAFETY: sync(2) takes no arguments, touches no memory of ours and cannot fail.
    unsafe { libc::sync() };
}

/// Log bytes per operation.
fn per_op(bytes: u64, ops: u64) -> f64 {
    bytes as f64 / ops as f64
}

/// Filesystem type of the mount holding `path` (longest mount-point prefix in /proc/mounts).
fn fs_type(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_ascii_whitespace();
            let (_dev, mnt, ty) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mnt).then(|| (mnt.len(), ty.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, ty)| ty)
}

/// Where shared data lives: `$SHARED_DATA_DIR`, else `../shared/data` from the workspace root.
fn shared_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SHARED_DATA_DIR") {
        return PathBuf::from(d);
    }
    // CARGO_MANIFEST_DIR is crates/bench; the workspace root is two levels up.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data")
}

/// A duration in ns, in a readable unit.
fn dur(ns: f64) -> String {
    if !ns.is_finite() {
        "-".to_owned()
    } else if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e4 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

// ------------------------------------------------------------------------------------ goals

fn goals(results: &Ordered<WorkloadResult>, trace: &Ordered<TraceResult>) -> Vec<Goal> {
    let p50 = |w: &str| results.get(w).map(|r| r.p50_ns as f64);
    let ops = |w: &str| results.get(w).map(|r| r.ops_per_sec);
    let tr = trace.get(TRACE_NAME);
    let goal = |name, v: Option<f64>, at_most: bool, target: f64| Goal {
        name,
        goal: if at_most {
            RatioGoal::at_most(v.unwrap_or(f64::NAN), target)
        } else {
            RatioGoal::at_least(v.unwrap_or(f64::NAN), target)
        },
        evaluated: v.is_some_and(f64::is_finite),
    };
    vec![
        goal(
            "propagation/single_hop p50, ns",
            p50("propagation/single_hop"),
            true,
            5_000.0,
        ),
        goal(
            "propagation/chain_10 p50, ns",
            p50("propagation/chain_10"),
            true,
            20_000.0,
        ),
        goal(
            "delta/cpu_sparse p50 (1 KiB page, Buffered), ns",
            p50("delta/cpu_sparse"),
            true,
            2_000.0,
        ),
        goal(
            "delta/cpu_dense p50 (1 KiB delta, Buffered), ns",
            p50("delta/cpu_dense"),
            true,
            2_000.0,
        ),
        goal(
            "log/deltas_buffered, deltas/s (1 thread)",
            ops("log/deltas_buffered"),
            false,
            2e6,
        ),
        goal(
            "automerge-paper apply with logging, ms",
            tr.and_then(|t| t.apply_ms),
            true,
            2_000.0,
        ),
        goal(
            "automerge-paper replay, ms",
            tr.and_then(|t| t.replay_ms),
            true,
            1_000.0,
        ),
    ]
}

// ------------------------------------------------------------------------------------ entry

fn runner_wants(only: Option<&str>, name: &str) -> bool {
    only.is_none_or(|o| name.contains(o))
}

/// Runs `bench mmsb`.
///
/// # Errors
/// A workload failed (the bus returned an error, or a check of its result failed), or the report
/// could not be written. A missed goal is not an error.
pub fn run(args: &MmsbArgs) -> Result<(), String> {
    let sizes = Sizes::new(args.quick);
    let machine = Machine::detect();
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent).ctx(&format!("cannot create {}", parent.display()))?;
    let json = args.json;
    let progress = move |msg: &str| {
        if !json {
            eprintln!("bench: {msg}");
        }
    };
    let timer_overhead_ns = crate::workload::timer_overhead_ns();
    let config = RunConfig {
        sizes: sizes.clone(),
        temp_dir_fs: fs_type(&parent),
        temp_dir: parent.clone(),
        timer_overhead_ns,
        page_bytes: PAGE,
        bus_timings: false,
        default_durability: "Buffered",
        only: args.only.clone(),
    };

    let mut runner = Runner {
        parent: parent.clone(),
        sizes,
        progress: &progress,
        results: Ordered(Vec::new()),
        only: args.only.clone(),
    };
    runner.allocation()?;
    runner.deltas()?;
    runner.propagation()?;
    runner.replay()?;
    runner.persistence()?;
    runner.graph()?;
    runner.logs()?;
    let results = runner.results;

    let trace_runs = if args.quick { 1 } else { 3 };
    let trace = if runner_wants(args.only.as_deref(), &format!("trace/{TRACE_NAME}")) {
        Ordered(vec![(
            TRACE_NAME.to_owned(),
            run_trace(&parent, trace_runs, &progress),
        )])
    } else {
        Ordered(vec![(
            TRACE_NAME.to_owned(),
            TraceResult {
                note: Some("not run (--only)".to_owned()),
                ..TraceResult::default()
            },
        )])
    };
    let replication = if ["replication/sparse_8b", "replication/dense_1kb"]
        .iter()
        .any(|n| runner_wants(args.only.as_deref(), n))
    {
        Ordered(replication::run(&parent, args.quick, &progress))
    } else {
        Ordered(Vec::new())
    };
    let goals = goals(&results, &trace);
    let report = Report {
        machine,
        config,
        results,
        trace,
        original: ORIGINAL,
        goals,
        replication,
        notes: NOTES.to_vec(),
    };
    emit_report(&report, args.out.as_deref(), args.json, print_tables)
}
