//! `bench malloc`: the larson and mstress workloads of `malloc-bench-rs` (generic over
//! `GlobalAlloc`) on temporal-slab's `EpochGlobal`, glibc, mimalloc and jemalloc.
//!
//! Both workloads come from the crate, unchanged: **larson** (each thread keeps a working set of
//! live blocks; every step frees a random one and allocates a new block of a random size, every
//! 16th handed to another thread to free) and **mstress** (rounds of filling a vector of blocks,
//! freeing half in random order, refilling and freeing all; a fraction freed by another thread).
//! Sizes are 16..512 bytes 97% of the time and 512 B..8 KiB otherwise, alignment 8. An op is one
//! allocation and one free; the figure is aggregate ops/s over the timed steady state.
//!
//! temporal-slab runs as `EpochGlobal` with requests outside any scope going to the allocator's
//! current epoch (`global::set_outside_scope(Outside::CurrentEpoch)`), which is how a program
//! that never opens a scope (the `LD_PRELOAD` case) uses it: requests up to 768 bytes are slab
//! objects, larger ones go to glibc. No epoch is ever closed, so this measures the allocator as
//! a plain malloc, not its epoch model.
//!
//! Every (allocator, workload, threads) run is a fresh child process (see the crate docs, "Why
//! child processes"); rounds interleave the allocators and the figure is the median of the rounds.

use std::alloc::{GlobalAlloc, System};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use malloc_bench_rs::{Config, Workload};
use serde::{Deserialize, Serialize};

use crate::BenchError;
use crate::machine::Machine;

/// `bench malloc` options.
#[derive(Debug, Args)]
pub struct MallocArgs {
    /// Short run (one round, far fewer steps): a few seconds.
    #[arg(long)]
    quick: bool,
    /// Print one JSON object on stdout instead of tables.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "PATH")]
    out: Option<std::path::PathBuf>,
}

/// The allocators compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Peer {
    /// `temporal_slab::global::EpochGlobal`, outside scopes in the current epoch.
    TemporalSlab,
    /// glibc malloc (`std::alloc::System`).
    System,
    /// mimalloc.
    Mimalloc,
    /// jemalloc.
    Jemalloc,
}

const PEERS: [Peer; 4] = [
    Peer::TemporalSlab,
    Peer::System,
    Peer::Mimalloc,
    Peer::Jemalloc,
];

impl Peer {
    fn as_str(self) -> &'static str {
        match self {
            Peer::TemporalSlab => "temporal-slab",
            Peer::System => "system",
            Peer::Mimalloc => "mimalloc",
            Peer::Jemalloc => "jemalloc",
        }
    }
}

/// The two workloads, as `malloc-bench-rs` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Load {
    /// Server churn with cross-thread handoff.
    Larson,
    /// Alloc-then-free batches, part freed cross-thread.
    Mstress,
}

impl Load {
    fn as_str(self) -> &'static str {
        match self {
            Load::Larson => "larson",
            Load::Mstress => "mstress",
        }
    }
}

/// Arguments of the hidden `child-malloc` subcommand: one run.
#[derive(Debug, Args)]
pub struct ChildMallocArgs {
    /// The allocator.
    #[arg(long)]
    allocator: Peer,
    /// The workload.
    #[arg(long)]
    workload: Load,
    /// Worker threads.
    #[arg(long)]
    threads: usize,
    /// Steps (alloc + free) per thread.
    #[arg(long)]
    steps: usize,
}

/// One child's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// Allocator.
    pub allocator: Peer,
    /// Workload.
    pub workload: Load,
    /// Worker threads.
    pub threads: usize,
    /// Steps per thread.
    pub steps_per_thread: usize,
    /// Aggregate alloc+free pairs per second.
    pub ops_per_sec: f64,
    /// temporal-slab only: slab allocations served (the rest went to glibc).
    pub slab_allocations: Option<u64>,
}

/// One (allocator, workload, threads) figure: the median over rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Allocator.
    pub allocator: Peer,
    /// Workload.
    pub workload: Load,
    /// Worker threads.
    pub threads: usize,
    /// Median ops/s over the rounds.
    pub ops_per_sec: f64,
    /// This allocator's ops/s over the best peer's (the highest of the four), this run.
    pub vs_best: f64,
    /// Every round's ops/s.
    pub rounds: Vec<f64>,
    /// temporal-slab only: slab allocations of the median round's child.
    pub slab_allocations: Option<u64>,
}

/// The report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The machine.
    pub machine: Machine,
    /// `--quick`.
    pub quick: bool,
    /// Steps per thread, live blocks (larson) and blocks per round (mstress).
    pub config: ConfigReport,
    /// Every figure.
    pub figures: Vec<Figure>,
}

/// The `malloc-bench-rs` configuration used.
#[derive(Debug, Serialize)]
pub struct ConfigReport {
    /// Steps per thread.
    pub steps_per_thread: usize,
    /// Larson working set per thread.
    pub working_set: usize,
    /// Mstress blocks per round.
    pub mstress_blocks: usize,
    /// Rounds per figure.
    pub rounds: usize,
    /// Thread counts.
    pub threads: Vec<usize>,
}

const WORKING_SET: usize = 512;
const MSTRESS_BLOCKS: usize = 256;

/// Entry point of `child-malloc`.
pub fn child_main(a: &ChildMallocArgs) -> ExitCode {
    let result = child_run(a).map_err(Into::into);
    crate::child_exit(a.allocator.as_str(), result)
}

fn child_run(a: &ChildMallocArgs) -> Result<String, BenchError> {
    let config = Config {
        threads: a.threads,
        steps_per_thread: a.steps,
        working_set: WORKING_SET,
        mstress_blocks: MSTRESS_BLOCKS,
    };
    let workload = match a.workload {
        Load::Larson => Workload::Larson,
        Load::Mstress => Workload::Mstress,
    };
    fn go<A: GlobalAlloc + Send + 'static>(w: Workload, c: &Config, make: fn() -> A) -> f64 {
        malloc_bench_rs::run(w, c, make)
    }
    let mut slab_allocations = None;
    let ops_per_sec = match a.allocator {
        Peer::TemporalSlab => {
            use temporal_slab::global::{self, EpochGlobal, Outside};
            global::set_outside_scope(Outside::CurrentEpoch);
            let ops = go(workload, &config, EpochGlobal::new);
            let slab = global::instance()
                .ok_or_else(|| BenchError::Io("temporal-slab could not be created".into()))?;
            let stats = slab.stats();
            slab_allocations = Some(stats.classes.iter().map(|c| c.allocs).sum());
            ops
        }
        Peer::System => go(workload, &config, || System),
        Peer::Mimalloc => go(workload, &config, || mimalloc::MiMalloc),
        Peer::Jemalloc => go(workload, &config, || tikv_jemallocator::Jemalloc),
    };
    let r = RunResult {
        allocator: a.allocator,
        workload: a.workload,
        threads: a.threads,
        steps_per_thread: a.steps,
        ops_per_sec,
        slab_allocations,
    };
    serde_json::to_string(&r).map_err(|e| BenchError::Io(e.to_string()))
}

/// `bench malloc`.
///
/// # Errors
/// A child that fails or prints something unreadable; an unwritable `--out`.
pub fn run(args: &MallocArgs) -> Result<(), BenchError> {
    let machine = Machine::detect();
    let exe = std::env::current_exe()
        .map_err(|e| BenchError::Io(format!("cannot find this executable: {e}")))?;
    let (steps, rounds) = if args.quick {
        (20_000, 1)
    } else {
        (400_000, 3)
    };
    let threads = [1usize, 2];
    let mut results: Vec<RunResult> = Vec::new();
    for round in 0..rounds {
        for load in [Load::Larson, Load::Mstress] {
            for &t in &threads {
                for k in 0..PEERS.len() {
                    let peer = PEERS[(k + round) % PEERS.len()];
                    if !args.json {
                        eprintln!(
                            "bench: round {}/{rounds}: {} {t} thread(s), {}",
                            round + 1,
                            load.as_str(),
                            peer.as_str()
                        );
                    }
                    let child_args = [
                        "child-malloc".to_owned(),
                        format!("--allocator={}", peer.as_str()),
                        format!("--workload={}", load.as_str()),
                        format!("--threads={t}"),
                        format!("--steps={steps}"),
                    ];
                    results.push(crate::run_child(&exe, peer.as_str(), &child_args)?);
                }
            }
        }
    }
    let mut figures = Vec::new();
    for load in [Load::Larson, Load::Mstress] {
        for &t in &threads {
            let mut row: Vec<Figure> = PEERS
                .iter()
                .map(|&peer| {
                    let mut mine: Vec<&RunResult> = results
                        .iter()
                        .filter(|r| r.allocator == peer && r.workload == load && r.threads == t)
                        .collect();
                    mine.sort_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec));
                    let median = mine[mine.len() / 2];
                    Figure {
                        allocator: peer,
                        workload: load,
                        threads: t,
                        ops_per_sec: median.ops_per_sec,
                        vs_best: 0.0,
                        rounds: mine.iter().map(|r| r.ops_per_sec).collect(),
                        slab_allocations: median.slab_allocations,
                    }
                })
                .collect();
            let best = row.iter().map(|f| f.ops_per_sec).fold(0.0, f64::max);
            for f in &mut row {
                f.vs_best = if best > 0.0 {
                    f.ops_per_sec / best
                } else {
                    0.0
                };
            }
            figures.extend(row);
        }
    }
    let report = Report {
        machine,
        quick: args.quick,
        config: ConfigReport {
            steps_per_thread: steps,
            working_set: WORKING_SET,
            mstress_blocks: MSTRESS_BLOCKS,
            rounds,
            threads: threads.to_vec(),
        },
        figures,
    };
    crate::emit_report(&report, args.out.as_deref(), args.json, print_table).map_err(BenchError::Io)
}

fn print_table(r: &Report) {
    println!("{}", r.machine.summary());
    println!(
        "malloc-bench-rs larson and mstress, {} steps per thread, median of {} round(s); Mops/s (x best peer)",
        r.config.steps_per_thread, r.config.rounds
    );
    println!(
        "{:<8} {:>7}  {:>18} {:>18} {:>18} {:>18}",
        "workload", "threads", "temporal-slab", "system", "mimalloc", "jemalloc"
    );
    for load in [Load::Larson, Load::Mstress] {
        for &t in &r.config.threads {
            let cells: Vec<String> = PEERS
                .iter()
                .map(|&p| {
                    r.figures
                        .iter()
                        .find(|f| f.allocator == p && f.workload == load && f.threads == t)
                        .map_or("-".to_owned(), |f| {
                            format!("{:.2} ({:.2}x)", f.ops_per_sec / 1e6, f.vs_best)
                        })
                })
                .collect();
            println!(
                "{:<8} {:>7}  {:>18} {:>18} {:>18} {:>18}",
                load.as_str(),
                t,
                cells[0],
                cells[1],
                cells[2],
                cells[3]
            );
        }
    }
}
