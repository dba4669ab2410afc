//! `bench`: side-by-side benchmarks of this workspace's three systems against their peers.
//!
//! `bench slab [--quick] [--json] [--out PATH]` compares temporal-slab with glibc malloc (with
//! its default trim threshold and without trimming), mimalloc and jemalloc on one workload:
//! 128-byte objects, 100,000 live, all allocated then all freed in allocation order, 200 cycles
//! after 2 warm-up cycles, every allocation timed on its own (see [`workload`] for exactly what is
//! timed), three rounds with the allocators interleaved (figures are per-figure medians of the
//! rounds, every round is in `latency_rounds`); then 1- and 2-thread scaling, RSS after an epoch
//! close, and the cost of closing one 64 MiB epoch with coalesced `madvise` ranges against one
//! call per slab (`Config::coalesce_madvise(false)`), each in its own child.
//!
//! `bench datahub [--quick] [--json] [--out PATH]` compares DataHub with iceoryx2 between two
//! processes: ping-pong latency and lossless throughput (see [`ipc`] for exactly what is timed).
//!
//! `bench mmsb [--quick] [--json] [--out PATH] [--dir PATH] [--only SUBSTRING]` runs MMSB.jl's benchmark workloads
//! (allocation, deltas, propagation, replay, checkpoint/restore, graph), logged-delta throughput
//! and an editing trace against the `mmsb` crate, in this process (see [`mod@mmsb`]).
//!
//! # Why child processes
//! Each allocator's latency run, each scaling run (per allocator and thread count) and the RSS
//! run executes in a fresh child: the parent re-executes its own binary
//! (`std::env::current_exe()`) with a hidden subcommand (`child-latency`, `child-scaling`,
//! `child-rss`), the child prints one JSON line on stdout and exits, and the parent parses it.
//! glibc's behaviour depends on the heap's history (what was freed, trimmed or left in bins
//! before), and every allocator keeps caches and mappings for the process's lifetime; a fresh
//! process gives each the same empty start and keeps one allocator's leftovers out of another's
//! numbers. Children run one at a time. Except in `bench demo`'s children, mimalloc and jemalloc
//! are only ever called directly: the `#[global_allocator]` is a switch ([`switch_alloc`]) that
//! picks the system allocator, mimalloc, jemalloc or `EpochGlobal` once, on its first call, from
//! `BENCH_GLOBAL_ALLOCATOR` (read with `libc::getenv`, no allocation), and it is unset everywhere
//! but in the `child-demo` processes, so each of those runs wholly on one allocator and the rest
//! stays on the system allocator.
//!
//! # Reading the numbers
//! Percentiles include the cost of reading the clock twice (`timer_overhead_ns` in each result,
//! not subtracted). `ops_per_sec` comes from a separate untimed pass of the same cycles in the
//! same child. The `goals` section compares this run's numbers with the project's targets.

mod demo;
mod ipc;
mod machine;
mod malloc;
mod mmsb;
mod python;
mod slab_tables;
/// Number formatting the tables of every subcommand share.
pub(crate) use slab_tables::si;
mod switch_alloc;
mod workload;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitCode, Stdio};

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::machine::Machine;
use crate::workload::{
    Global, LatencyParams, LatencyResult, OBJECT_SIZE, RawAlloc, RssResult, ScalingRun, Slab,
    SystemMalloc,
};

/// Objects live at once in the latency and RSS workloads.
const LIVE_OBJECTS: usize = 100_000;
/// Objects per round of the scaling workload.
const SCALING_BATCH: usize = 10_000;
/// Unrecorded cycles before the measured ones.
const WARMUP_CYCLES: u32 = 2;
/// `M_TRIM_THRESHOLD` of the `system-notrim` allocator.
const NOTRIM_THRESHOLD: i32 = 1 << 30;

#[derive(Debug, Parser)]
#[command(name = "bench", about = "Allocator benchmarks for temporal-slab")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// temporal-slab vs glibc malloc, mimalloc and jemalloc: allocation latency percentiles,
    /// throughput, 1- and 2-thread scaling, RSS after epoch close, and the project's goals.
    Slab(SlabArgs),
    /// DataHub vs iceoryx2 between two processes: ping-pong latency percentiles (64 B, 4 KiB),
    /// lossless throughput (64 B to 1 MiB), with and without DataHub checksums, and the goals.
    Datahub(ipc::DatahubArgs),
    /// MMSB (versioned pages, deltas, write-ahead log, propagation): MMSB.jl's benchmark
    /// workloads, logged-delta throughput and an editing trace, with the goals.
    Mmsb(crate::mmsb::MmsbArgs),
    /// `tslab demo`'s JSON request workload on temporal-slab, serde_json::Value on glibc,
    /// mimalloc and jemalloc, and bumpalo: requests/s, latency, peak/final RSS, RSS over time.
    Demo(demo::DemoArgs),
    /// DataHub from Python (the memsys package) against the same loop in Rust: the cost of one
    /// write/commit and one read/release at 64 B and 4 KiB.
    Python(python::PythonArgs),
    /// (internal) One peer's demo run.
    #[command(hide = true)]
    ChildDemo(demo::ChildDemoArgs),
    /// larson and mstress (malloc-bench-rs) on temporal-slab's global allocator, glibc,
    /// mimalloc and jemalloc, 1 and 2 threads.
    Malloc(malloc::MallocArgs),
    /// (internal) One allocator's larson or mstress run.
    #[command(hide = true)]
    ChildMalloc(malloc::ChildMallocArgs),
    /// (internal) One allocator's latency and throughput run.
    #[command(hide = true)]
    ChildLatency {
        /// The allocator to measure.
        #[arg(long)]
        allocator: AllocName,
        /// Measured allocation cycles.
        #[arg(long)]
        cycles: u32,
        /// Cycles run before measuring.
        #[arg(long, default_value_t = WARMUP_CYCLES)]
        warmup: u32,
        /// Objects kept live during a cycle.
        #[arg(long, default_value_t = LIVE_OBJECTS)]
        live: usize,
    },
    /// (internal) One allocator's multi-thread throughput run.
    #[command(hide = true)]
    ChildScaling {
        /// The allocator to measure.
        #[arg(long)]
        allocator: AllocName,
        /// Threads allocating at once.
        #[arg(long)]
        threads: usize,
        /// Operations per thread.
        #[arg(long)]
        ops: u64,
        /// Objects allocated before they are freed, per batch.
        #[arg(long, default_value_t = SCALING_BATCH)]
        batch: usize,
    },
    /// (internal) temporal-slab's RSS run.
    #[command(hide = true)]
    ChildRss {
        /// Objects kept live.
        #[arg(long, default_value_t = LIVE_OBJECTS)]
        live: usize,
    },
    /// (internal) temporal-slab's close-cost run.
    #[command(hide = true)]
    ChildClose {
        /// Bytes allocated in the epoch that is closed.
        #[arg(long)]
        bytes: usize,
        /// Whether close coalesces adjacent slabs into ranges (`true` or `false`).
        #[arg(long, action = clap::ArgAction::Set)]
        coalesce: bool,
    },
    /// (internal) One process of a `datahub` ping-pong or producer-consumer pair.
    #[command(hide = true)]
    ChildIpc(ipc::ChildArgs),
}

#[derive(Debug, Args)]
struct SlabArgs {
    /// Short run (a few cycles per allocator, fewer scaling ops): well under 30 s.
    #[arg(long)]
    quick: bool,
    /// Print one JSON object on stdout instead of tables.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AllocName {
    TemporalSlab,
    System,
    SystemNotrim,
    Mimalloc,
    Jemalloc,
}

impl AllocName {
    fn as_str(self) -> &'static str {
        match self {
            AllocName::TemporalSlab => "temporal-slab",
            AllocName::System => "system",
            AllocName::SystemNotrim => "system-notrim",
            AllocName::Mimalloc => "mimalloc",
            AllocName::Jemalloc => "jemalloc",
        }
    }
}

impl fmt::Display for AllocName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return ExitCode::from(cli_support::usage_error("bench", &e)),
    };
    // The tables are printed with `println!` after the work: a reader that went away
    // (`bench ... | head -1`) ends the run quietly with 0 instead of a panic.
    cli_support::stdout::exit_quietly_on_println_broken_pipe();
    let failed = |e: &dyn fmt::Display| {
        eprintln!("bench: {}", cli_support::one_line(&e.to_string()));
        ExitCode::from(cli_support::exit::BAD_INPUT)
    };
    match cli.command {
        Command::Slab(args) => match run_slab(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => failed(&e),
        },
        Command::ChildLatency {
            allocator,
            cycles,
            warmup,
            live,
        } => child_exit(
            allocator.as_str(),
            child_latency(allocator, cycles, warmup, live),
        ),
        Command::ChildScaling {
            allocator,
            threads,
            ops,
            batch,
        } => child_exit(
            allocator.as_str(),
            child_scaling(allocator, threads, ops, batch),
        ),
        Command::ChildRss { live } => child_exit("temporal-slab", child_rss(live)),
        Command::ChildClose { bytes, coalesce } => child_exit(
            "temporal-slab",
            workload::run_close(bytes, coalesce)
                .map_err(Into::into)
                .and_then(|r| Ok(serde_json::to_string(&r)?)),
        ),
        Command::Datahub(args) => match ipc::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => failed(&e),
        },
        Command::ChildIpc(args) => ipc::child_main(&args),
        Command::Mmsb(args) => match crate::mmsb::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => failed(&e),
        },
        Command::Python(args) => match python::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => failed(&e),
        },
        Command::Malloc(args) => match malloc::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => failed(&e),
        },
        Command::ChildMalloc(args) => malloc::child_main(&args),
        Command::Demo(args) => match demo::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => failed(&e),
        },
        Command::ChildDemo(args) => demo::child_main(&args),
    }
}

// ------------------------------------------------------------------------------------ children

type ChildResult = Result<String, Box<dyn std::error::Error>>;

/// Prints a child's JSON line, or its error on stderr with exit code 1.
pub(crate) fn child_exit(name: &str, result: ChildResult) -> ExitCode {
    match result {
        // A closed standard output (the parent went away) ends the child quietly with 0.
        Ok(line) => match cli_support::stdout::line(&line) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.is_closed() => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench child ({name}): {e}");
                ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!("bench child ({name}): {e}");
            ExitCode::from(1)
        }
    }
}

fn child_latency(name: AllocName, cycles: u32, warmup: u32, live: usize) -> ChildResult {
    if name == AllocName::SystemNotrim {
        // SAFETY: mallopt only changes a malloc tunable; no allocation of ours is affected.
        // It runs before the histogram, the pointer array or any workload allocation exist.
        let ok = unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, NOTRIM_THRESHOLD) };
        if ok != 1 {
            return Err("mallopt(M_TRIM_THRESHOLD) failed".into());
        }
    }
    let mut hist = workload::new_histogram()?;
    let mut slots = workload::new_slots(live);
    let params = LatencyParams { cycles, warmup };
    fn go<A: RawAlloc>(
        name: AllocName,
        a: &A,
        slots: &mut [*mut u8],
        hist: &mut hdrhistogram::Histogram<u64>,
        params: LatencyParams,
    ) -> Result<LatencyResult, workload::WorkloadError> {
        let overhead = workload::timer_overhead_ns();
        workload::run_latency(name.as_str(), a, slots, hist, params, overhead)
    }
    let result = match name {
        AllocName::TemporalSlab => go(name, &Slab::new()?, &mut slots, &mut hist, params)?,
        AllocName::System | AllocName::SystemNotrim => {
            go(name, &SystemMalloc, &mut slots, &mut hist, params)?
        }
        AllocName::Mimalloc => go(
            name,
            &Global::new(mimalloc::MiMalloc)?,
            &mut slots,
            &mut hist,
            params,
        )?,
        AllocName::Jemalloc => go(
            name,
            &Global::new(tikv_jemallocator::Jemalloc)?,
            &mut slots,
            &mut hist,
            params,
        )?,
    };
    let line = serde_json::to_string(&result)?;
    drop(hist);
    Ok(line)
}

fn child_scaling(name: AllocName, threads: usize, ops: u64, batch: usize) -> ChildResult {
    let n = name.as_str();
    let run = match name {
        AllocName::TemporalSlab => workload::run_scaling(n, &Slab::new()?, threads, ops, batch)?,
        AllocName::System | AllocName::SystemNotrim => {
            workload::run_scaling(n, &SystemMalloc, threads, ops, batch)?
        }
        AllocName::Mimalloc => {
            workload::run_scaling(n, &Global::new(mimalloc::MiMalloc)?, threads, ops, batch)?
        }
        AllocName::Jemalloc => workload::run_scaling(
            n,
            &Global::new(tikv_jemallocator::Jemalloc)?,
            threads,
            ops,
            batch,
        )?,
    };
    Ok(serde_json::to_string(&run)?)
}

fn child_rss(live: usize) -> ChildResult {
    Ok(serde_json::to_string(&workload::run_rss(live)?)?)
}

// ------------------------------------------------------------------------------------ parent

/// Why the parent failed.
#[derive(Debug)]
pub(crate) enum BenchError {
    /// A child could not be started, failed, or printed something unreadable.
    Child { allocator: String, detail: String },
    /// Something of the parent's own failed (finding its executable, writing `--out`, ...).
    Io(String),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Child { allocator, detail } => {
                write!(f, "child for allocator {allocator} failed: {detail}")
            }
            BenchError::Io(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for BenchError {}

/// Runs `exe args...` and parses the last line of its stdout as `T`.
pub(crate) fn run_child<T: DeserializeOwned>(
    exe: &Path,
    allocator: &str,
    args: &[String],
) -> Result<T, BenchError> {
    let fail = |detail: String| BenchError::Child {
        allocator: allocator.to_owned(),
        detail,
    };
    let out = Process::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| fail(format!("cannot start {}: {e}", exe.display())))?;
    if !out.status.success() {
        use std::os::unix::process::ExitStatusExt as _;
        return Err(fail(match (out.status.code(), out.status.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            (None, None) => "unknown exit status".to_owned(),
        }));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| fail("printed nothing".to_owned()))?;
    serde_json::from_str(line).map_err(|e| fail(format!("unreadable output ({e}): {line}")))
}

/// Sizes of a run.
#[derive(Debug, Clone, Serialize)]
struct RunConfig {
    quick: bool,
    object_size: usize,
    live_objects: usize,
    cycles: u32,
    warmup_cycles: u32,
    timed_allocations_per_allocator: u64,
    histogram_significant_digits: u8,
    free_order: &'static str,
    scaling_threads: [usize; 2],
    scaling_ops_per_thread: u64,
    scaling_batch: usize,
    system_notrim_trim_threshold: i32,
    /// Bytes of 128-byte objects in the epoch whose close is timed.
    close_epoch_bytes: usize,
    /// Latency runs per allocator, interleaved; the report gives their medians.
    latency_rounds: u32,
}

impl RunConfig {
    fn new(quick: bool) -> RunConfig {
        let cycles = if quick { 3 } else { 200 };
        RunConfig {
            quick,
            object_size: OBJECT_SIZE,
            live_objects: LIVE_OBJECTS,
            cycles,
            warmup_cycles: WARMUP_CYCLES,
            timed_allocations_per_allocator: u64::from(cycles) * LIVE_OBJECTS as u64,
            histogram_significant_digits: 3,
            free_order: "allocation order",
            scaling_threads: [1, 2],
            scaling_ops_per_thread: if quick { 2_000_000 } else { 20_000_000 },
            scaling_batch: SCALING_BATCH,
            system_notrim_trim_threshold: NOTRIM_THRESHOLD,
            close_epoch_bytes: if quick { 8 << 20 } else { 64 << 20 },
            latency_rounds: if quick { 1 } else { 3 },
        }
    }
}

/// Latency results, in report order.
#[derive(Debug, Clone, Serialize)]
struct Results {
    #[serde(rename = "temporal-slab")]
    temporal_slab: LatencyResult,
    system: LatencyResult,
    #[serde(rename = "system-notrim")]
    system_notrim: LatencyResult,
    mimalloc: LatencyResult,
    jemalloc: LatencyResult,
}

/// 1- and 2-thread throughput of one allocator.
#[derive(Debug, Clone, Serialize)]
struct Scaling {
    threads_1_ops_per_sec: f64,
    threads_2_ops_per_sec: f64,
    /// 2-thread / 1-thread.
    ratio: f64,
    ops_per_thread: u64,
    batch: usize,
    /// temporal-slab's class counters of the 1- and 2-thread children.
    #[serde(skip_serializing_if = "Option::is_none")]
    threads_1_slab_diag: Option<workload::SlabDiag>,
    #[serde(skip_serializing_if = "Option::is_none")]
    threads_2_slab_diag: Option<workload::SlabDiag>,
}

#[derive(Debug, Clone, Serialize)]
struct ScalingPeers {
    mimalloc: Scaling,
    jemalloc: Scaling,
    system: Scaling,
}

/// A numeric goal: `value <= target` or `value >= target`.
#[derive(Debug, Clone, Serialize)]
struct RatioGoal {
    value: f64,
    target: f64,
    comparison: &'static str,
    met: bool,
}

impl RatioGoal {
    fn at_most(value: f64, target: f64) -> RatioGoal {
        RatioGoal {
            value,
            target,
            comparison: "<=",
            met: value <= target,
        }
    }
    fn at_least(value: f64, target: f64) -> RatioGoal {
        RatioGoal {
            value,
            target,
            comparison: ">=",
            met: value >= target,
        }
    }
}

/// temporal-slab's percentile no higher than a peer's.
#[derive(Debug, Clone, Serialize)]
struct CompareGoal {
    value: bool,
    temporal_slab_ns: u64,
    other_ns: u64,
    met: bool,
}

impl CompareGoal {
    fn new(ts: u64, other: u64) -> CompareGoal {
        CompareGoal {
            value: ts <= other,
            temporal_slab_ns: ts,
            other_ns: other,
            met: ts <= other,
        }
    }
}

/// The cost of closing one big epoch, with and without coalesced `madvise`.
#[derive(Debug, Clone, Serialize)]
struct CloseCost {
    coalesced: workload::CloseResult,
    per_slab_calls: workload::CloseResult,
    /// `per_slab_calls.ns_per_slab / coalesced.ns_per_slab`.
    speedup_per_slab: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Goals {
    p99_le_1_5x_notrim: RatioGoal,
    p999_le_1_5x_notrim: RatioGoal,
    ops_ge_jemalloc: RatioGoal,
    ops_ge_0_8x_mimalloc: RatioGoal,
    close_per_slab_speedup: RatioGoal,
    p99_vs_system: RatioGoal,
    p999_vs_system: RatioGoal,
    p50_vs_system: RatioGoal,
    p99_le_mimalloc: CompareGoal,
    p99_le_jemalloc: CompareGoal,
    p999_le_mimalloc: CompareGoal,
    p999_le_jemalloc: CompareGoal,
    scaling_ratio: RatioGoal,
    rss_after_close_vs_baseline: RatioGoal,
}

/// The per-figure median of one allocator's rounds (for an even count, the upper median).
fn median_result(rounds: &[LatencyResult]) -> LatencyResult {
    fn med<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        v[v.len() / 2]
    }
    let mut out = rounds[rounds.len() / 2].clone();
    out.p50_ns = med(rounds.iter().map(|r| r.p50_ns).collect());
    out.p99_ns = med(rounds.iter().map(|r| r.p99_ns).collect());
    out.p999_ns = med(rounds.iter().map(|r| r.p999_ns).collect());
    out.p9999_ns = med(rounds.iter().map(|r| r.p9999_ns).collect());
    out.max_ns = med(rounds.iter().map(|r| r.max_ns).collect());
    out.mean_ns = med(rounds.iter().map(|r| r.mean_ns).collect());
    out.ops_per_sec = med(rounds.iter().map(|r| r.ops_per_sec).collect());
    out
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { f64::NAN } else { a / b }
}

impl Goals {
    fn compute(r: &Results, scaling: &Scaling, rss: &RssResult, close: &CloseCost) -> Goals {
        let (ts, sys) = (&r.temporal_slab, &r.system);
        let notrim = &r.system_notrim;
        let growth = rss.after_close_bytes as f64 - rss.baseline_bytes as f64;
        Goals {
            p99_le_1_5x_notrim: RatioGoal::at_most(
                ratio(ts.p99_ns as f64, notrim.p99_ns as f64),
                1.5,
            ),
            p999_le_1_5x_notrim: RatioGoal::at_most(
                ratio(ts.p999_ns as f64, notrim.p999_ns as f64),
                1.5,
            ),
            ops_ge_jemalloc: RatioGoal::at_least(
                ratio(ts.ops_per_sec, r.jemalloc.ops_per_sec),
                1.0,
            ),
            ops_ge_0_8x_mimalloc: RatioGoal::at_least(
                ratio(ts.ops_per_sec, r.mimalloc.ops_per_sec),
                0.8,
            ),
            close_per_slab_speedup: RatioGoal::at_least(close.speedup_per_slab, 10.0),
            p99_vs_system: RatioGoal::at_most(ratio(ts.p99_ns as f64, sys.p99_ns as f64), 0.2),
            p999_vs_system: RatioGoal::at_most(ratio(ts.p999_ns as f64, sys.p999_ns as f64), 0.2),
            p50_vs_system: RatioGoal::at_most(ratio(ts.p50_ns as f64, sys.p50_ns as f64), 1.5),
            p99_le_mimalloc: CompareGoal::new(ts.p99_ns, r.mimalloc.p99_ns),
            p99_le_jemalloc: CompareGoal::new(ts.p99_ns, r.jemalloc.p99_ns),
            p999_le_mimalloc: CompareGoal::new(ts.p999_ns, r.mimalloc.p999_ns),
            p999_le_jemalloc: CompareGoal::new(ts.p999_ns, r.jemalloc.p999_ns),
            scaling_ratio: RatioGoal::at_least(scaling.ratio, 1.6),
            rss_after_close_vs_baseline: RatioGoal::at_most(
                ratio(growth, rss.baseline_bytes as f64),
                0.05,
            ),
        }
    }

    /// (name, value, target, met) for the table.
    fn rows(&self) -> Vec<(&'static str, String, String, bool)> {
        let r = |name, g: &RatioGoal| {
            (
                name,
                format!("{:.3}", g.value),
                format!("{} {}", g.comparison, g.target),
                g.met,
            )
        };
        let c = |name, g: &CompareGoal| {
            (
                name,
                format!("{} vs {} ns", g.temporal_slab_ns, g.other_ns),
                "ts <= peer".to_owned(),
                g.met,
            )
        };
        vec![
            r("p99 / system-notrim p99", &self.p99_le_1_5x_notrim),
            r("p99.9 / system-notrim p99.9", &self.p999_le_1_5x_notrim),
            r("ops/s / jemalloc ops/s", &self.ops_ge_jemalloc),
            r("ops/s / mimalloc ops/s", &self.ops_ge_0_8x_mimalloc),
            r(
                "close: per-slab calls / ranges",
                &self.close_per_slab_speedup,
            ),
            r("p99 / system p99", &self.p99_vs_system),
            r("p99.9 / system p99.9", &self.p999_vs_system),
            r("p50 / system p50", &self.p50_vs_system),
            c("p99 <= mimalloc p99", &self.p99_le_mimalloc),
            c("p99 <= jemalloc p99", &self.p99_le_jemalloc),
            c("p99.9 <= mimalloc p99.9", &self.p999_le_mimalloc),
            c("p99.9 <= jemalloc p99.9", &self.p999_le_jemalloc),
            r("scaling 2T / 1T", &self.scaling_ratio),
            r(
                "RSS after close vs baseline",
                &self.rss_after_close_vs_baseline,
            ),
        ]
    }
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    machine: Machine,
    config: RunConfig,
    results: Results,
    scaling: Scaling,
    scaling_peers: ScalingPeers,
    rss: RssResult,
    close: CloseCost,
    goals: Goals,
    /// Every latency round of every allocator (the results above are their medians).
    latency_rounds: std::collections::BTreeMap<String, Vec<LatencyResult>>,
}

fn run_slab(args: &SlabArgs) -> Result<(), BenchError> {
    let config = RunConfig::new(args.quick);
    let machine = Machine::detect();
    let exe = std::env::current_exe()
        .map_err(|e| BenchError::Io(format!("cannot find this executable: {e}")))?;
    let progress = |msg: &str| {
        if !args.json {
            eprintln!("bench: {msg}");
        }
    };

    let latency = |name: AllocName| -> Result<LatencyResult, BenchError> {
        progress(&format!("latency: {name}"));
        run_child(
            &exe,
            name.as_str(),
            &[
                "child-latency".to_owned(),
                "--allocator".to_owned(),
                name.as_str().to_owned(),
                "--cycles".to_owned(),
                config.cycles.to_string(),
                "--warmup".to_owned(),
                config.warmup_cycles.to_string(),
                "--live".to_owned(),
                config.live_objects.to_string(),
            ],
        )
    };
    // Rounds interleave the allocators (a slow moment of a shared VM then hits all of them);
    // each allocator's figures are the per-figure medians of its rounds.
    let order = [
        AllocName::TemporalSlab,
        AllocName::System,
        AllocName::SystemNotrim,
        AllocName::Mimalloc,
        AllocName::Jemalloc,
    ];
    let mut rounds: Vec<Vec<LatencyResult>> = vec![Vec::new(); order.len()];
    for round in 0..config.latency_rounds {
        for (k, &name) in order.iter().enumerate() {
            progress(&format!("round {}/{}", round + 1, config.latency_rounds));
            rounds[k].push(latency(name)?);
        }
    }
    let mut medians = rounds.iter().map(|r| median_result(r));
    let mut next = || medians.next().expect("one per allocator");
    let results = Results {
        temporal_slab: next(),
        system: next(),
        system_notrim: next(),
        mimalloc: next(),
        jemalloc: next(),
    };
    let latency_rounds = order
        .iter()
        .zip(rounds)
        .map(|(name, r)| (name.as_str().to_owned(), r))
        .collect();

    let scaling_of = |name: AllocName| -> Result<Scaling, BenchError> {
        let run = |threads: usize| -> Result<ScalingRun, BenchError> {
            progress(&format!("scaling: {name}, {threads} thread(s)"));
            run_child(
                &exe,
                name.as_str(),
                &[
                    "child-scaling".to_owned(),
                    "--allocator".to_owned(),
                    name.as_str().to_owned(),
                    "--threads".to_owned(),
                    threads.to_string(),
                    "--ops".to_owned(),
                    config.scaling_ops_per_thread.to_string(),
                    "--batch".to_owned(),
                    config.scaling_batch.to_string(),
                ],
            )
        };
        let (one, two) = (run(1)?, run(2)?);
        Ok(Scaling {
            threads_1_ops_per_sec: one.ops_per_sec,
            threads_2_ops_per_sec: two.ops_per_sec,
            ratio: ratio(two.ops_per_sec, one.ops_per_sec),
            ops_per_thread: one.ops_per_thread,
            batch: one.batch,
            threads_1_slab_diag: one.slab_diag,
            threads_2_slab_diag: two.slab_diag,
        })
    };
    let scaling = scaling_of(AllocName::TemporalSlab)?;
    let scaling_peers = ScalingPeers {
        mimalloc: scaling_of(AllocName::Mimalloc)?,
        jemalloc: scaling_of(AllocName::Jemalloc)?,
        system: scaling_of(AllocName::System)?,
    };

    progress("rss: temporal-slab");
    let rss: RssResult = run_child(
        &exe,
        "temporal-slab",
        &[
            "child-rss".to_owned(),
            "--live".to_owned(),
            config.live_objects.to_string(),
        ],
    )?;

    let close_run = |coalesce: bool| -> Result<workload::CloseResult, BenchError> {
        progress(&format!(
            "close: {} MiB epoch, {}",
            config.close_epoch_bytes >> 20,
            if coalesce {
                "coalesced madvise"
            } else {
                "one madvise per slab"
            }
        ));
        run_child(
            &exe,
            "temporal-slab",
            &[
                "child-close".to_owned(),
                "--bytes".to_owned(),
                config.close_epoch_bytes.to_string(),
                "--coalesce".to_owned(),
                coalesce.to_string(),
            ],
        )
    };
    let (coalesced, per_slab_calls) = (close_run(true)?, close_run(false)?);
    let close = CloseCost {
        speedup_per_slab: ratio(per_slab_calls.ns_per_slab, coalesced.ns_per_slab),
        coalesced,
        per_slab_calls,
    };

    let goals = Goals::compute(&results, &scaling, &rss, &close);
    let report = Report {
        machine,
        config,
        results,
        scaling,
        scaling_peers,
        rss,
        close,
        goals,
        latency_rounds,
    };
    emit_report(
        &report,
        args.out.as_deref(),
        args.json,
        slab_tables::print_tables,
    )
    .map_err(BenchError::Io)
}

/// Writes `report` as pretty JSON to `out` (creating its directory), then prints it as JSON
/// (`json`) or as tables (`print`). Errors are one line.
pub(crate) fn emit_report<T: Serialize>(
    report: &T,
    out: Option<&Path>,
    json: bool,
    print: impl FnOnce(&T),
) -> Result<(), String> {
    let text = serde_json::to_string_pretty(report)
        .map_err(|e| format!("cannot serialise the report: {e}"))?;
    if let Some(path) = out {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        std::fs::write(path, format!("{text}\n"))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if json {
        match cli_support::stdout::line(&text) {
            Ok(()) => {}
            // The reader went away: nothing more to say, exit 0.
            Err(e) if e.is_closed() => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
    } else {
        print(report);
    }
    Ok(())
}
