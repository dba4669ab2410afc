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
//! The workloads and what exactly each times are listed in [`describe`]; `--json` prints
//! `{"machine", "config", "results": {name: {p50_ns, p99_ns, ops_per_sec, ...}}, "trace",
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

// ------------------------------------------------------------------------------------ workloads

/// What a workload's operation is, for the report's `notes` field of each result.
fn describe(name: &str) -> String {
    let s = match name {
        "allocation/cpu_1kb" => {
            "create_page(1024) on a running bus (logs a CreatePage commit frame, Buffered); \
             MMSB.jl timed start + create + stop"
        }
        "delta/cpu_sparse" => {
            "update_page(page, buf) on a 1 KiB page alternating two buffers that differ in the \
             first 10 bytes (0xff vs 0x00): diff, log and apply a 10-byte sparse delta (Buffered)"
        }
        "delta/cpu_sparse_timings_on" => {
            "delta/cpu_sparse with the bus's own latency histograms on (Config::new's default)"
        }
        "delta/cpu_dense" => {
            "update_page(page, buf) on a 1 KiB page cycling random buffers that differ at every \
             byte: diff, log and apply a dense 1 KiB delta (Buffered)"
        }
        "propagation/single_hop" => {
            "update_page(parent, random 1 KiB) with parent -> child (Data edge, passthrough): the \
             parent's dense delta, the child's recompute, its logged dense delta, the commit frame"
        }
        "propagation/chain_10" => {
            "update_page(first, random 1 KiB) on a chain of 10 pages (passthrough each): 10 logged \
             dense deltas, 9 recomputes, one commit frame"
        }
        "propagation/batch_32x4" => {
            "begin_batch, 4 x update_page(first, random 1 KiB), commit, on a chain of 32 pages \
             (passthrough each): one wave of 31 recomputes at commit; one sample per batch"
        }
        "propagation/batch_128x2" => {
            "begin_batch, 2 x update_page(first, random 1 KiB), commit, on a chain of 128 pages: \
             one wave of 127 recomputes; one sample per batch"
        }
        "replay/100_epochs" => {
            "State::replay(dir, PageEpoch(page, 100)) of a log holding the page's creation and 100 \
             dense 1 KiB updates (flushed, page cache warm; the bus stays open)"
        }
        "persistence/checkpoint_100pages" => {
            "checkpoint() of 100 random 1 KiB pages: log sync, checkpoint file write + fsync, \
             rename, directory fsync; one page is updated (untimed) between samples so each \
             checkpoint has a new LSN"
        }
        "persistence/restore_100pages" => {
            "State::restore(dir) of a stopped bus's directory holding one checkpoint of 100 \
             random 1 KiB pages and an empty log suffix"
        }
        "graph/topological_sort_1024" => {
            "bus.graph().topological_order() of 1024 pages, page i -> i+1..=i+4: reads the order \
             Pearce-Kelly maintains on every add_dependency (allocates the 1024-entry Vec)"
        }
        "graph/topological_sort_1024_from_scratch" => {
            "petgraph::algo::toposort on the same graph as a DiGraph<(), ()> built once (a DFS \
             per call)"
        }
        "graph/add_edges_1024x4" => {
            "one add_dependency(i, j, Data) (incremental cycle check and order maintenance) while \
             building the 1024-node graph, edges added in increasing i then j; per edge"
        }
        "graph/add_edges_1024x4_reverse" => {
            "graph/add_edges_1024x4 with i decreasing (every new parent enters the order after \
             its children, so Pearce-Kelly reorders on every edge); per edge"
        }
        "log/deltas_buffered" => {
            "write_range(page, offset, 8 bytes) on a 4 KiB page, offsets cycling through the \
             page, all 8 bytes changed each time: one logged 8-byte sparse delta and commit \
             frame per call, Durability::Buffered; ops/s = deltas / wall time of an untimed loop, \
             percentiles from a separate timed pass"
        }
        "log/deltas_fsync1000" => "log/deltas_buffered with Durability::FsyncEvery(1000)",
        _ => "",
    };
    s.to_owned()
}

/// Runs the workloads one after the other, reporting progress with `progress`.
struct Runner<'a> {
    parent: PathBuf,
    sizes: Sizes,
    progress: &'a dyn Fn(&str),
    results: Ordered<WorkloadResult>,
    only: Option<String>,
}

impl Runner<'_> {
    /// True when `--only` selects the workload `name` (or is not given).
    fn wants(&self, name: &str) -> bool {
        runner_wants(self.only.as_deref(), name)
    }

    fn push(&mut self, name: &str, mut r: WorkloadResult) {
        r.notes = describe(name);
        (self.progress)(&format!(
            "{name}: p50 {} p99 {} ({} samples)",
            dur(r.p50_ns as f64),
            dur(r.p99_ns as f64),
            r.samples
        ));
        self.results.0.push((name.to_owned(), r));
    }

    fn fresh(&self) -> R<Fresh> {
        Fresh::new(&self.parent, Durability::Buffered, false)
    }

    fn allocation(&mut self) -> R<()> {
        if !self.wants("allocation/cpu_1kb") {
            return Ok(());
        }
        let n = self.sizes.allocation_ops;
        let mut f = self.fresh()?;
        let (lat, ops) = run_repeated(warmup_of(n), n, |_| {
            black_box(f.bus.create_page(PAGE).ctx("create_page")?);
            Ok(())
        })?;
        self.push("allocation/cpu_1kb", lat.result(Some(ops), String::new()));
        Ok(())
    }

    /// `update_page` of one 1 KiB page cycling through `bufs`.
    fn delta(&mut self, name: &str, n: u64, bufs: &[Vec<u8>], timings: bool) -> R<()> {
        if !self.wants(name) {
            return Ok(());
        }
        let mut f = Fresh::new(&self.parent, Durability::Buffered, timings)?;
        let page = f.page(PAGE)?;
        let k = bufs.len() as u64;
        let warm = warmup_of(n);
        let before = f.log_bytes();
        let (lat, ops) = run_repeated(warm, n, |i| {
            changed(
                f.bus.update_page(page, &bufs[(i % k) as usize]),
                "update_page",
            )
        })?;
        let mut r = lat.result(Some(ops), String::new());
        r.log_bytes_per_op = Some(per_op(f.log_bytes() - before, warm + 2 * n));
        self.push(name, r);
        Ok(())
    }

    fn deltas(&mut self) -> R<()> {
        let mut a = vec![0u8; PAGE];
        a[..10].fill(0xff);
        let sparse = [a, vec![0u8; PAGE]];
        self.delta(
            "delta/cpu_sparse",
            self.sizes.delta_sparse_ops,
            &sparse,
            false,
        )?;
        self.delta(
            "delta/cpu_sparse_timings_on",
            self.sizes.delta_sparse_ops,
            &sparse,
            true,
        )?;
        let dense = distinct_buffers(&mut Rng(1), PAGE);
        self.delta("delta/cpu_dense", self.sizes.delta_dense_ops, &dense, false)
    }

    /// `update_page` of the first page of a passthrough chain of `len` pages.
    fn chain(&mut self, name: &str, len: usize, n: u64) -> R<()> {
        if !self.wants(name) {
            return Ok(());
        }
        let mut f = self.fresh()?;
        let ids = f.chain(len, PAGE)?;
        let bufs = distinct_buffers(&mut Rng(len as u64), PAGE);
        let (first, last) = (ids[0], ids[len - 1]);
        let warm = warmup_of(n);
        let before = f.log_bytes();
        let (lat, ops) = run_repeated(warm, n, |i| {
            changed(
                f.bus.update_page(first, &bufs[(i % 3) as usize]),
                "update_page",
            )
        })?;
        let end = f.bus.query_page(last).ctx("query_page")?;
        if end.bytes() != f.bus.query_page(first).ctx("query_page")?.bytes() {
            return Err(format!(
                "{name}: the chain's last page does not follow the first"
            ));
        }
        let mut r = lat.result(Some(ops), String::new());
        r.log_bytes_per_op = Some(per_op(f.log_bytes() - before, warm + 2 * n));
        self.push(name, r);
        Ok(())
    }

    /// One batch of `updates` updates of the first page of a chain of `len`, committed.
    fn batch(&mut self, name: &str, len: usize, updates: u64, n: u64) -> R<()> {
        if !self.wants(name) {
            return Ok(());
        }
        // The buffers cycle with period 3 across batches; a batch size that is a multiple of 3
        // would end every batch on the same value and the wave would stop at the first child.
        assert!(
            !updates.is_multiple_of(3),
            "batch size must not be a multiple of 3"
        );
        let mut f = self.fresh()?;
        let ids = f.chain(len, PAGE)?;
        let bufs = distinct_buffers(&mut Rng(len as u64 * 31 + updates), PAGE);
        let expected = len - 1;
        let warm = warmup_of(n);
        let before = f.log_bytes();
        let mut k = 0u64;
        let (lat, ops) = run_repeated(warm, n, |_| {
            f.bus.begin_batch().ctx("begin_batch")?;
            for _ in 0..updates {
                changed(
                    f.bus.update_page(ids[0], &bufs[(k % 3) as usize]),
                    "update_page",
                )?;
                k += 1;
            }
            let c = f.bus.commit().ctx("commit")?;
            if c.propagated != expected {
                return Err(format!(
                    "{name}: commit propagated {} deltas, expected {expected}",
                    c.propagated
                ));
            }
            Ok(())
        })?;
        let mut r = lat.result(Some(ops), String::new());
        r.log_bytes_per_op = Some(per_op(f.log_bytes() - before, warm + 2 * n));
        self.push(name, r);
        Ok(())
    }

    fn propagation(&mut self) -> R<()> {
        let s = self.sizes.clone();
        self.chain("propagation/single_hop", 2, s.single_hop_ops)?;
        self.chain("propagation/chain_10", 10, s.chain_10_ops)?;
        self.batch("propagation/batch_32x4", 32, 4, s.batch_32x4_ops)?;
        self.batch("propagation/batch_128x2", 128, 2, s.batch_128x2_ops)
    }

    fn replay(&mut self) -> R<()> {
        if !self.wants("replay/100_epochs") {
            return Ok(());
        }
        let mut f = self.fresh()?;
        let page = f.page(PAGE)?;
        let mut rng = Rng(7);
        for _ in 0..REPLAY_EPOCHS {
            // Random bytes: the page changes almost everywhere each time (a dense delta).
            changed(f.bus.update_page(page, &rng.bytes(PAGE)), "update_page")?;
        }
        f.bus.flush().ctx("flush")?;
        let target = ReplayTarget::PageEpoch(page, REPLAY_EPOCHS);
        let live = f.bus.query_page(page).ctx("query_page")?.bytes().to_vec();
        let n = self.sizes.replay_reps;
        for _ in 0..warmup_of(n) {
            let s = State::replay(f.path(), target).ctx("State::replay")?;
            let p = s.page(page).ok_or("replay lost the page")?;
            if p.epoch() != REPLAY_EPOCHS || p.bytes() != live {
                return Err(
                    "replay/100_epochs: the replayed page differs from the live one".into(),
                );
            }
        }
        let mut lat = Lat::new()?;
        for _ in 0..n {
            let t0 = Instant::now();
            let s = State::replay(f.path(), target);
            lat.record(t0);
            black_box(s.ctx("State::replay")?);
        }
        self.push("replay/100_epochs", lat.result(None, String::new()));
        Ok(())
    }

    /// A bus with `PERSIST_PAGES` random 1 KiB pages.
    fn persist_bus(&self, seed: u64) -> R<(Fresh, Vec<PageId>)> {
        let mut f = self.fresh()?;
        let mut rng = Rng(seed);
        let mut ids = Vec::with_capacity(PERSIST_PAGES);
        for _ in 0..PERSIST_PAGES {
            let id = f.page(PAGE)?;
            changed(f.bus.update_page(id, &rng.bytes(PAGE)), "update_page")?;
            ids.push(id);
        }
        Ok((f, ids))
    }

    fn persistence(&mut self) -> R<()> {
        if self.wants("persistence/checkpoint_100pages") {
            self.checkpoint()?;
        }
        if self.wants("persistence/restore_100pages") {
            self.restore()?;
        }
        Ok(())
    }

    fn checkpoint(&mut self) -> R<()> {
        let (mut f, ids) = self.persist_bus(11)?;
        settle_disk();
        let mut rng = Rng(12);
        let n = self.sizes.checkpoint_reps;
        let mut lat = Lat::new()?;
        for i in 0..warmup_of(n) + n {
            let id = ids[(i as usize) % ids.len()];
            changed(f.bus.update_page(id, &rng.bytes(PAGE)), "update_page")?;
            let t0 = Instant::now();
            let c = f.bus.checkpoint();
            if i >= warmup_of(n) {
                lat.record(t0);
            }
            black_box(c.ctx("checkpoint")?);
        }
        drop(f);
        self.push(
            "persistence/checkpoint_100pages",
            lat.result(None, String::new()),
        );
        Ok(())
    }

    fn restore(&mut self) -> R<()> {
        let (mut f, _) = self.persist_bus(13)?;
        f.bus.checkpoint().ctx("checkpoint")?;
        let expected = f.bus.state().hashes();
        let Fresh { bus, dir } = f;
        bus.stop().ctx("stop")?;
        let n = self.sizes.restore_reps;
        for _ in 0..warmup_of(n) {
            let s = State::restore(dir.path()).ctx("State::restore")?;
            if s.hashes() != expected {
                return Err("persistence/restore_100pages: the restored state differs".into());
            }
        }
        let mut lat = Lat::new()?;
        for _ in 0..n {
            let t0 = Instant::now();
            let s = State::restore(dir.path());
            lat.record(t0);
            black_box(s.ctx("State::restore")?);
        }
        self.push(
            "persistence/restore_100pages",
            lat.result(None, String::new()),
        );
        Ok(())
    }

    /// The edges of the graph workloads, parents increasing (or decreasing), as page indices.
    fn graph_edges(reverse: bool) -> Vec<(u64, u64)> {
        let mut e = Vec::new();
        for i in 0..GRAPH_NODES {
            for j in i + 1..=(i + GRAPH_FANOUT).min(GRAPH_NODES - 1) {
                e.push((i, j));
            }
        }
        if reverse {
            // Decreasing parents, children still increasing within one parent.
            e.sort_by_key(|&(i, j)| (std::cmp::Reverse(i), j));
        }
        e
    }

    /// A bus with the 1024 pages of the graph workloads (64 bytes each: their size is not used).
    fn graph_bus(&self) -> R<(Fresh, Vec<PageId>)> {
        let mut f = self.fresh()?;
        let ids = (0..GRAPH_NODES)
            .map(|_| f.page(64))
            .collect::<R<Vec<_>>>()?;
        Ok((f, ids))
    }

    fn add_edges(&mut self, name: &str, reverse: bool) -> R<()> {
        if !self.wants(name) {
            return Ok(());
        }
        let edges = Self::graph_edges(reverse);
        let mut lat = Lat::new()?;
        // One unrecorded build as warm-up.
        for b in 0..=self.sizes.add_edges_builds {
            let (mut f, ids) = self.graph_bus()?;
            for &(i, j) in &edges {
                let (p, c) = (ids[i as usize], ids[j as usize]);
                let t0 = Instant::now();
                let r = f.bus.add_dependency(p, c, EdgeKind::Data);
                if b > 0 {
                    lat.record(t0);
                }
                r.ctx("add_dependency")?;
            }
            if f.bus.graph().edge_count() != edges.len() {
                return Err(format!("{name}: the graph has the wrong number of edges"));
            }
        }
        self.push(name, lat.result(None, String::new()));
        Ok(())
    }

    fn graph(&mut self) -> R<()> {
        if self.wants("graph/topological_sort_1024") {
            self.topo()?;
        }
        if self.wants("graph/topological_sort_1024_from_scratch") {
            self.topo_from_scratch()?;
        }
        self.add_edges("graph/add_edges_1024x4", false)?;
        self.add_edges("graph/add_edges_1024x4_reverse", true)
    }

    fn topo(&mut self) -> R<()> {
        let edges = Self::graph_edges(false);
        let (mut f, ids) = self.graph_bus()?;
        for &(i, j) in &edges {
            f.bus
                .add_dependency(ids[i as usize], ids[j as usize], EdgeKind::Data)
                .ctx("add_dependency")?;
        }
        let n = self.sizes.topo_reps;
        let (lat, ops) = run_repeated(warmup_of(n), n, |_| {
            let order = f.bus.graph().topological_order();
            if order.len() != GRAPH_NODES as usize {
                return Err("topological_order has the wrong length".into());
            }
            black_box(order);
            Ok(())
        })?;
        self.push(
            "graph/topological_sort_1024",
            lat.result(Some(ops), String::new()),
        );
        Ok(())
    }

    fn topo_from_scratch(&mut self) -> R<()> {
        let edges = Self::graph_edges(false);
        let n = self.sizes.topo_reps;
        let mut g =
            petgraph::graph::DiGraph::<(), ()>::with_capacity(GRAPH_NODES as usize, edges.len());
        let nodes: Vec<_> = (0..GRAPH_NODES).map(|_| g.add_node(())).collect();
        for &(i, j) in &edges {
            g.add_edge(nodes[i as usize], nodes[j as usize], ());
        }
        let (lat, ops) = run_repeated(warmup_of(n), n, |_| {
            let order = petgraph::algo::toposort(&g, None)
                .map_err(|_| "the graph has a cycle".to_owned())?;
            if order.len() != GRAPH_NODES as usize {
                return Err("toposort has the wrong length".into());
            }
            black_box(order);
            Ok(())
        })?;
        self.push(
            "graph/topological_sort_1024_from_scratch",
            lat.result(Some(ops), String::new()),
        );
        Ok(())
    }

    /// `write_range` of 8 changed bytes, `n` untimed then `timed` timed, on a 4 KiB page.
    fn log(&mut self, name: &str, durability: Durability, n: u64, timed: u64) -> R<()> {
        if !self.wants(name) {
            return Ok(());
        }
        let mut f = Fresh::new(&self.parent, durability, false)?;
        let page = f.page(LOG_PAGE)?;
        settle_disk();
        let slots = (LOG_PAGE / LOG_WRITE) as u64;
        // Write `i` goes to slot `i % slots` with every byte `(i / slots) + 1` (mod 256): each
        // write differs from the slot's previous contents in all 8 bytes.
        let write = |bus: &mut Mmsb, i: u64| {
            let off = ((i % slots) as usize) * LOG_WRITE;
            let v = ((i / slots) as u8).wrapping_add(1);
            changed(bus.write_range(page, off, &[v; LOG_WRITE]), "write_range")
        };
        let mut i = 0u64;
        for _ in 0..warmup_of(n) {
            write(&mut f.bus, i)?;
            i += 1;
        }
        let before = f.log_bytes();
        let t = Instant::now();
        for _ in 0..n {
            write(&mut f.bus, i)?;
            i += 1;
        }
        let wall = t.elapsed().as_secs_f64();
        let bytes = f.log_bytes() - before;
        let mut lat = Lat::new()?;
        for _ in 0..timed {
            let t0 = Instant::now();
            let r = write(&mut f.bus, i);
            lat.record(t0);
            r?;
            i += 1;
        }
        let mut r = lat.result(Some(n as f64 / wall), String::new());
        r.log_bytes_per_op = Some(bytes as f64 / n as f64);
        self.push(name, r);
        Ok(())
    }

    fn logs(&mut self) -> R<()> {
        let s = self.sizes.clone();
        self.log(
            "log/deltas_buffered",
            Durability::Buffered,
            s.log_buffered_ops,
            s.log_buffered_timed_ops,
        )?;
        self.log(
            "log/deltas_fsync1000",
            Durability::FsyncEvery(1000),
            s.log_fsync_ops,
            s.log_fsync_timed_ops,
        )
    }
}

// ------------------------------------------------------------------------------------ trace

/// The trace workload: `automerge-paper` through `mmsb_cli::trace::run_trace` (fresh bus,
/// Durability::Flush as `mmsb trace` uses, bus timings off, one commit and propagation wave per
/// 100 transactions, a checkpoint after half of them), then `verify` (untimed: replay, mid-trace
/// checkpoint and restore checked against the trace's text), then `State::replay(dir, End)` of
/// the stopped bus's log, timed. `runs` whole runs; the medians are reported.
fn run_trace(parent: &Path, runs: usize, progress: &dyn Fn(&str)) -> TraceResult {
    let skipped = |note: String| TraceResult {
        note: Some(note),
        ..TraceResult::default()
    };
    let file = shared_data_dir()
        .join("editing-traces")
        .join(format!("{TRACE_NAME}.json.gz"));
    if !file.is_file() {
        return skipped(format!(
            "skipped: {} not found (set SHARED_DATA_DIR to the directory holding editing-traces/)",
            file.display()
        ));
    }
    progress(&format!("trace: loading {}", file.display()));
    let trace = match mmsb_cli::trace::load(&file) {
        Ok(t) => t,
        Err(e) => return skipped(format!("skipped: {e}")),
    };
    match trace_runs(&trace, parent, runs, progress) {
        Ok(r) => r,
        Err(e) => skipped(format!("failed: {e}")),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn trace_runs(
    trace: &mmsb_cli::trace::Trace,
    parent: &Path,
    runs: usize,
    progress: &dyn Fn(&str),
) -> R<TraceResult> {
    use mmsb_cli::trace::{RunOptions, run_trace as run_one, verify};
    let (mut apply, mut txns_ms, mut finish, mut replay) = (vec![], vec![], vec![], vec![]);
    let mut last = None;
    for run in 0..runs {
        let tmp = tempfile::Builder::new()
            .prefix("mmsb-bench-trace-")
            .tempdir_in(parent)
            .ctx("temporary directory")?;
        let opts = RunOptions {
            trace: None,
            log_dir: Some(tmp.path().join("log")),
            durability: Durability::Flush,
            timings: false,
            ..RunOptions::default()
        };
        let report = run_one(trace, &opts).ctx("trace run")?;
        verify(trace, &report).ctx("trace verify")?;
        let t0 = Instant::now();
        // From empty: `State::replay(dir, End)` now starts from the newest checkpoint.
        let state = State::new()
            .replay_log(&report.log_dir, ReplayTarget::End)
            .ctx("State::replay_log")?;
        let replay_s = t0.elapsed().as_secs_f64();
        black_box(state);
        let ms = |s: f64| s * 1e3;
        progress(&format!(
            "trace {TRACE_NAME} run {}: apply {:.0} ms (+ finish {:.0} ms), replay {:.0} ms, log {} bytes",
            run + 1,
            ms(report.apply_seconds),
            ms(report.finish_seconds),
            ms(replay_s),
            report.log_file_bytes
        ));
        apply.push(ms(report.apply_seconds + report.finish_seconds));
        txns_ms.push(ms(report.apply_seconds));
        finish.push(ms(report.finish_seconds));
        replay.push(ms(replay_s));
        last = Some(report);
    }
    let report = last.ok_or("no trace run")?;
    let mut extra = BTreeMap::new();
    let mut put = |k: &str, v: serde_json::Value| {
        extra.insert(k.to_owned(), v);
    };
    put("runs", runs.into());
    put("apply_txns_ms", median(txns_ms).into());
    put("finish_ms", median(finish).into());
    put("apply_ms_each", apply.clone().into());
    put("replay_ms_each", replay.clone().into());
    put("txns", report.txns.into());
    put("patches", report.patches.into());
    put("commits", report.commits.into());
    put("wave_every", report.wave_every.into());
    put("user_deltas", report.user_deltas.into());
    put("propagation_deltas", report.stats.propagation_deltas.into());
    put("doc_bytes", report.doc_bytes.into());
    put("durability", "Flush".into());
    Ok(TraceResult {
        apply_ms: Some(median(apply)),
        replay_ms: Some(median(replay)),
        log_bytes: Some(report.log_file_bytes),
        extra,
        note: Some(
            "apply_ms: mmsb_cli::trace::run_trace's apply + finish time (every transaction through \
             write_range into a gap-buffer document page, in batches of wave_every transactions, \
             each batch one commit and one propagation wave recomputing a line index and a word \
             count; the mid-trace checkpoint excluded), Durability::Flush, bus timings off; \
             replay_ms: State::new().replay_log(dir, End) of the whole log from empty, page cache warm; \
             log_bytes: size of the log segment files; medians over runs"
                .to_owned(),
        ),
    })
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
    let goals = goals(&results, &trace);
    let report = Report {
        machine,
        config,
        results,
        trace,
        original: ORIGINAL,
        goals,
        notes: NOTES.to_vec(),
    };
    emit_report(&report, args.out.as_deref(), args.json, print_tables)
}

// ------------------------------------------------------------------------------------ tables

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

fn print_tables(r: &Report) {
    let c = &r.config;
    println!("{}", r.machine.summary());
    println!(
        "mmsb: fresh bus per workload under {} ({}), log Buffered unless named, bus timings off{}",
        c.temp_dir.display(),
        c.temp_dir_fs.as_deref().unwrap_or("unknown filesystem"),
        if c.sizes.quick { " (quick)" } else { "" }
    );
    println!(
        "latencies per operation, each including one clock pair (~{} ns, not subtracted); \
         ops/s from an untimed pass (*: from the timed samples)",
        c.timer_overhead_ns
    );
    println!();
    println!(
        "{:<41} {:>8} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>9}",
        "workload", "samples", "p50", "p99", "p99.9", "max", "ops/s", "log B/op", "MMSB.jl"
    );
    for (name, w) in &r.results.0 {
        println!(
            "{:<41} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}{} {:>9} {:>9}",
            name,
            w.samples,
            dur(w.p50_ns as f64),
            dur(w.p99_ns as f64),
            dur(w.p999_ns as f64),
            dur(w.max_ns as f64),
            crate::si(w.ops_per_sec),
            if w.ops_per_sec_from == "untimed pass" {
                " "
            } else {
                "*"
            },
            w.log_bytes_per_op
                .map_or("-".to_owned(), |b| format!("{b:.0}")),
            r.original
                .for_workload(name)
                .map_or("-".to_owned(), |ns| dur(ns as f64)),
        );
    }
    println!();
    for (name, t) in &r.trace.0 {
        match (t.apply_ms, t.replay_ms, t.log_bytes) {
            (Some(a), Some(p), Some(b)) => println!(
                "trace {name}: apply with logging {a:.1} ms, replay {p:.1} ms, log {:.2} MiB",
                b as f64 / (1024.0 * 1024.0)
            ),
            _ => println!("trace {name}: {}", t.note.as_deref().unwrap_or("not run")),
        }
    }
    println!();
    println!("goals:");
    let evaluated = r.goals.iter().filter(|g| g.evaluated).count();
    let met = r.goals.iter().filter(|g| g.evaluated && g.goal.met).count();
    for g in &r.goals {
        let status = match (g.evaluated, g.goal.met) {
            (false, _) => "not run",
            (true, true) => "met",
            (true, false) => "MISSED",
        };
        println!(
            "  {:<50} {:>14}  {} {:<10} {}",
            g.name,
            if g.evaluated {
                format!("{:.0}", g.goal.value)
            } else {
                "-".to_owned()
            },
            g.goal.comparison,
            g.goal.target,
            status
        );
    }
    println!(
        "  {met} of {evaluated} evaluated goals met ({} not run)",
        r.goals.len() - evaluated
    );
    println!();
    println!("MMSB.jl column: {}", r.original.source);
    println!("notes:");
    for n in &r.notes {
        println!("  - {n}");
    }
}
