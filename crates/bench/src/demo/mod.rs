//! `bench demo [--quick] [--json] [--out PATH] [--plot PATH]`: `tslab demo`'s request workload
//! on temporal-slab and on its peers, each in a fresh child process.
//!
//! # The workload
//! The same for every peer, from `tslab`'s library ([`tslab::demo::workload`]): 2 workers take
//! batches of 128 requests (16 with `--quick`) from one budget; a request is one JSON document of the corpus
//! (batch `b` serves kind `b % kinds`, each kind's documents in turn), parsed and walked, every
//! object key counted in a hash map; its latency (parse, count, drop) goes into an HDR
//! histogram. The corpora: the real one (`$SHARED_DATA_DIR/json`, else `../shared/data/json`
//! beside the workspace: canada, citm_catalog and twitter; skipped when missing, required
//! under `REQUIRE_SHARED_DATA=1`) and the generated one (`tslab demo`'s default).
//!
//! # The peers
//! - `temporal-slab-api2`: `tslab demo --alloc api2`: each batch is an epoch (opened held,
//!   closed after its last request); the document becomes the demo's epoch tree
//!   (`allocator_api2` vectors on the epoch, hashbrown key map on the epoch).
//! - `temporal-slab-global`: `tslab demo --alloc global`: the same epochs, but the request is
//!   plain `serde_json::from_slice::<Value>` and std collections inside the epoch's scope
//!   (`temporal_slab::global::scope`), the child's global allocator being `EpochGlobal`.
//! - `value-glibc`, `value-mimalloc`, `value-jemalloc`: `serde_json::from_slice::<Value>`, keys
//!   counted in a std `HashMap` (with hashbrown's hasher, the one the epoch tree's map uses), the
//!   child's global allocator being glibc, mimalloc or jemalloc.
//! - `bumpalo`: the demo's tree (the same `DeserializeSeed`, monomorphised for `&Bump`) and key
//!   map in a bumpalo arena, one per batch, reset after every request.
//!
//! # What is reported
//! Per peer and corpus: requests/s (requests / wall time of the workers), latency p50, p99,
//! p99.9 and max, peak RSS (largest sample), final RSS (after the last batch closed, the
//! allocator still alive) and RSS over time (`/proc/self/statm` every 50 ms, from the parent
//! thread of the workers). Every peer's counts must equal every other's on one corpus (the run
//! fails otherwise). The goals, computed from this run on the real corpus, for each
//! temporal-slab peer against the others: p99 latency no higher than the best peer's, final RSS
//! no higher than any peer's, requests/s at least 0.9x the best peer's.

mod child;
mod plot;
mod tables;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::machine::Machine;
use crate::{BenchError, emit_report};
pub use child::{ChildDemoArgs, PeerResult, child_main};

/// Workers of every run (the demo's default).
const WORKERS: usize = 2;
/// Requests per batch (the demo's default; `--quick`: 16, so its few requests still make
/// several batches of every kind).
const BATCH: usize = 128;
const QUICK_BATCH: usize = 16;
/// Time between two RSS samples, milliseconds.
const RSS_INTERVAL_MS: u64 = 50;

/// Arguments of `bench demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Short run (far fewer requests per peer): well under a minute.
    #[arg(long)]
    quick: bool,
    /// Print one JSON object on stdout instead of tables.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// Draw RSS over time for every peer to this SVG file (default with --out: beside it, named
    /// after it without "-bench", plus "-rss.svg": demo-bench.json gives demo-rss.svg).
    #[arg(long, value_name = "PATH")]
    plot: Option<PathBuf>,
}

/// One contender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Peer {
    /// temporal-slab, epoch trees (`tslab demo --alloc api2`).
    TemporalSlabApi2,
    /// temporal-slab, `serde_json::Value` inside the batch epoch's scope, the child's global
    /// allocator being `EpochGlobal` (`tslab demo --alloc global`).
    TemporalSlabGlobal,
    /// `serde_json::Value` on glibc malloc.
    ValueGlibc,
    /// `serde_json::Value` on mimalloc.
    ValueMimalloc,
    /// `serde_json::Value` on jemalloc.
    ValueJemalloc,
    /// The demo's tree in a bumpalo arena per request.
    Bumpalo,
}

impl Peer {
    /// Every peer, in report order.
    pub const ALL: [Peer; 6] = [
        Peer::TemporalSlabApi2,
        Peer::TemporalSlabGlobal,
        Peer::ValueGlibc,
        Peer::ValueMimalloc,
        Peer::ValueJemalloc,
        Peer::Bumpalo,
    ];

    /// The peer's name in the report (and on the child's command line).
    pub fn name(self) -> &'static str {
        match self {
            Peer::TemporalSlabApi2 => "temporal-slab-api2",
            Peer::TemporalSlabGlobal => "temporal-slab-global",
            Peer::ValueGlibc => "value-glibc",
            Peer::ValueMimalloc => "value-mimalloc",
            Peer::ValueJemalloc => "value-jemalloc",
            Peer::Bumpalo => "bumpalo",
        }
    }

    /// Whether this is one of temporal-slab's own (the goals compare these with the others).
    pub fn is_temporal_slab(self) -> bool {
        matches!(self, Peer::TemporalSlabApi2 | Peer::TemporalSlabGlobal)
    }

    /// The child's global allocator ([`crate::switch_alloc::ENV`]).
    pub fn global_allocator(self) -> &'static str {
        match self {
            Peer::ValueMimalloc => "mimalloc",
            Peer::ValueJemalloc => "jemalloc",
            Peer::TemporalSlabGlobal => "epoch",
            Peer::TemporalSlabApi2 | Peer::ValueGlibc | Peer::Bumpalo => "system",
        }
    }
}

/// Sizes of a run.
#[derive(Debug, Clone, Serialize)]
struct RunConfig {
    quick: bool,
    workers: usize,
    batch: usize,
    rss_interval_ms: u64,
    /// Requests per peer on the real corpus.
    requests_real: u64,
    /// Requests per peer on the generated corpus.
    requests_generated: u64,
    /// `BENCH_GLOBAL_ALLOCATOR` of each peer's child.
    global_allocator: BTreeMap<&'static str, &'static str>,
}

impl RunConfig {
    fn new(quick: bool) -> RunConfig {
        RunConfig {
            quick,
            workers: WORKERS,
            batch: if quick { QUICK_BATCH } else { BATCH },
            rss_interval_ms: RSS_INTERVAL_MS,
            requests_real: if quick { 48 } else { 768 },
            requests_generated: if quick { 2_000 } else { 20_000 },
            global_allocator: Peer::ALL
                .iter()
                .map(|p| (p.name(), p.global_allocator()))
                .collect(),
        }
    }
}

/// Every peer on one corpus.
#[derive(Debug, Clone, Serialize)]
struct CorpusResult {
    /// `real` or `generated`.
    corpus: &'static str,
    /// The path, or `generated`.
    source: String,
    documents: usize,
    bytes: u64,
    requests: u64,
    /// By peer name, in report order.
    peers: Vec<PeerResult>,
}

/// `value <= other` (or `>=`), with both numbers.
#[derive(Debug, Clone, Serialize)]
struct VsGoal {
    /// temporal-slab's figure.
    value: f64,
    /// The peer it is compared with, and its figure (times `factor`).
    peer: String,
    peer_value: f64,
    factor: f64,
    comparison: &'static str,
    met: bool,
}

impl VsGoal {
    /// `value <= min over peers`.
    fn at_most_best(value: f64, peers: &[(&str, f64)]) -> VsGoal {
        let (peer, best) = peers
            .iter()
            .copied()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or(("none", f64::NAN));
        VsGoal {
            value,
            peer: peer.to_owned(),
            peer_value: best,
            factor: 1.0,
            comparison: "<=",
            met: value <= best,
        }
    }

    /// `value >= factor * max over peers`.
    fn at_least_best(value: f64, factor: f64, peers: &[(&str, f64)]) -> VsGoal {
        let (peer, best) = peers
            .iter()
            .copied()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or(("none", f64::NAN));
        VsGoal {
            value,
            peer: peer.to_owned(),
            peer_value: best,
            factor,
            comparison: ">=",
            met: value >= factor * best,
        }
    }
}

/// The goals of one temporal-slab peer on the real corpus.
#[derive(Debug, Clone, Serialize)]
struct Goals {
    /// p99 request latency <= the lowest p99 of the other peers, ns.
    p99_le_best_peer: VsGoal,
    /// Final RSS <= every other peer's (the lowest), bytes.
    final_rss_le_every_peer: VsGoal,
    /// requests/s >= 0.9 x the highest of the other peers.
    requests_per_sec_ge_0_9x_best_peer: VsGoal,
}

impl Goals {
    fn compute(ts: &PeerResult, others: &[&PeerResult]) -> Goals {
        let of = |f: fn(&PeerResult) -> f64| -> Vec<(&str, f64)> {
            others.iter().map(|p| (p.peer.as_str(), f(p))).collect()
        };
        Goals {
            p99_le_best_peer: VsGoal::at_most_best(
                ts.latency.p99_ns as f64,
                &of(|p| p.latency.p99_ns as f64),
            ),
            final_rss_le_every_peer: VsGoal::at_most_best(
                ts.rss.final_bytes as f64,
                &of(|p| p.rss.final_bytes as f64),
            ),
            requests_per_sec_ge_0_9x_best_peer: VsGoal::at_least_best(
                ts.requests_per_sec,
                0.9,
                &of(|p| p.requests_per_sec),
            ),
        }
    }
}

/// The whole report (`--json`, `--out`).
#[derive(Debug, Clone, Serialize)]
struct Report {
    machine: Machine,
    config: RunConfig,
    /// The real corpus (when found), then the generated one.
    corpora: Vec<CorpusResult>,
    /// By temporal-slab peer, on the real corpus; empty when the real corpus was not found.
    goals: BTreeMap<String, Goals>,
    notes: Vec<String>,
}

/// The real corpus: `$SHARED_DATA_DIR/json`, else `../shared/data/json` beside the workspace.
fn real_corpus_dir() -> PathBuf {
    let data = match std::env::var_os("SHARED_DATA_DIR") {
        Some(d) => PathBuf::from(d),
        // CARGO_MANIFEST_DIR is crates/bench; the workspace root is two levels up.
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
    };
    data.join("json")
}

/// Runs one peer on one corpus in a fresh child.
fn run_peer(
    exe: &Path,
    peer: Peer,
    corpus: &str,
    requests: u64,
    batch: usize,
) -> Result<PeerResult, BenchError> {
    let args = [
        "child-demo".to_owned(),
        "--peer".to_owned(),
        peer.to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_owned()),
        "--corpus".to_owned(),
        corpus.to_owned(),
        "--requests".to_owned(),
        requests.to_string(),
        "--workers".to_owned(),
        WORKERS.to_string(),
        "--batch".to_owned(),
        batch.to_string(),
        "--rss-interval-ms".to_owned(),
        RSS_INTERVAL_MS.to_string(),
    ];
    let env = [(crate::switch_alloc::ENV, peer.global_allocator())];
    run_child(exe, peer.name(), &args, &env)
}

/// Longest a child may run before it is killed and the run fails.
const CHILD_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs `exe args...` with `env` added and parses the last line of its stdout as a
/// [`PeerResult`]; kills it after [`CHILD_TIMEOUT`].
fn run_child(
    exe: &Path,
    peer: &str,
    args: &[String],
    env: &[(&str, &str)],
) -> Result<PeerResult, BenchError> {
    let fail = |detail: String| BenchError::Child {
        allocator: peer.to_owned(),
        detail,
    };
    let mut child = Process::new(exe)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| fail(format!("cannot start {}: {e}", exe.display())))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() < CHILD_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!(
                    "still running after {} s: killed",
                    CHILD_TIMEOUT.as_secs()
                )));
            }
            Err(e) => return Err(fail(format!("cannot wait for it: {e}"))),
        }
    };
    let text = reader
        .join()
        .map_err(|_| fail("its output reader panicked".to_owned()))?
        .map_err(|e| fail(format!("cannot read its output: {e}")))?;
    if !status.success() {
        use std::os::unix::process::ExitStatusExt as _;
        return Err(fail(match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            (None, None) => "unknown exit status".to_owned(),
        }));
    }
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| fail("printed nothing".to_owned()))?;
    serde_json::from_str(line).map_err(|e| fail(format!("unreadable output ({e}): {line}")))
}

/// Every peer on one corpus; checks that every peer counted the same.
fn run_corpus(
    exe: &Path,
    name: &'static str,
    source: &str,
    requests: u64,
    batch: usize,
) -> Result<CorpusResult, BenchError> {
    let corpus = if source == "generated" {
        tslab::demo::Corpus::generated(tslab::demo::corpus::GENERATED_PER_KIND)
    } else {
        tslab::demo::Corpus::load(Path::new(source))
            .map_err(|e| BenchError::Io(format!("cannot load the corpus {source}: {e}")))?
    };
    let mut peers = Vec::new();
    for peer in Peer::ALL {
        eprintln!(
            "bench demo: {} on the {name} corpus ({requests} requests)",
            peer.name()
        );
        let r = run_peer(exe, peer, source, requests, batch)?;
        if r.requests != requests {
            return Err(BenchError::Child {
                allocator: peer.name().to_owned(),
                detail: format!("served {} requests of {requests}", r.requests),
            });
        }
        if let Some(first) = peers.first().filter(|f: &&PeerResult| f.counts != r.counts) {
            return Err(BenchError::Child {
                allocator: peer.name().to_owned(),
                detail: format!(
                    "counted {:?} on the {name} corpus, {} counted {:?}",
                    r.counts, first.peer, first.counts
                ),
            });
        }
        peers.push(r);
    }
    Ok(CorpusResult {
        corpus: name,
        source: source.to_owned(),
        documents: corpus.documents(),
        bytes: corpus.bytes(),
        requests,
        peers,
    })
}

/// The goals of each temporal-slab peer against the others, on `real`.
fn goals(real: &CorpusResult) -> BTreeMap<String, Goals> {
    let is_ts = |p: &PeerResult| {
        Peer::ALL
            .iter()
            .any(|k| k.name() == p.peer && k.is_temporal_slab())
    };
    let others: Vec<&PeerResult> = real.peers.iter().filter(|p| !is_ts(p)).collect();
    real.peers
        .iter()
        .filter(|p| is_ts(p))
        .map(|ts| (ts.peer.clone(), Goals::compute(ts, &others)))
        .collect()
}

/// `bench demo`.
///
/// # Errors
/// A child that fails, serves fewer requests than asked or counts differently from the first
/// peer; a real corpus that is missing under `REQUIRE_SHARED_DATA=1`; `--out` or `--plot`
/// that cannot be written.
pub fn run(args: &DemoArgs) -> Result<(), BenchError> {
    let exe = std::env::current_exe()
        .map_err(|e| BenchError::Io(format!("cannot find bench's own executable: {e}")))?;
    let config = RunConfig::new(args.quick);
    let machine = Machine::detect();
    let mut notes = vec![
        "each peer runs once per corpus in its own child process; peers run one after another"
            .to_owned(),
        "latency is one request: parse the document, count its keys, drop what was built \
         (temporal-slab also enters and leaves the batch epoch's domain); opening and closing \
         a batch is outside it"
            .to_owned(),
    ];
    let mut corpora = Vec::new();
    let real = real_corpus_dir();
    if real.is_dir() {
        let source = std::fs::canonicalize(&real)
            .unwrap_or(real)
            .display()
            .to_string();
        corpora.push(run_corpus(
            &exe,
            "real",
            &source,
            config.requests_real,
            config.batch,
        )?);
    } else if std::env::var("REQUIRE_SHARED_DATA").as_deref() == Ok("1") {
        return Err(BenchError::Io(format!(
            "REQUIRE_SHARED_DATA=1 but the real corpus {} is missing (set SHARED_DATA_DIR)",
            real.display()
        )));
    } else {
        notes.push(format!(
            "the real corpus {} is missing: no goals (set SHARED_DATA_DIR)",
            real.display()
        ));
    }
    corpora.push(run_corpus(
        &exe,
        "generated",
        "generated",
        config.requests_generated,
        config.batch,
    )?);
    let goals = corpora
        .iter()
        .find(|c| c.corpus == "real")
        .map(goals)
        .unwrap_or_default();
    let report = Report {
        machine,
        config,
        corpora,
        goals,
        notes,
    };
    let plot_path = args.plot.clone().or_else(|| {
        args.out.as_ref().map(|o| {
            let stem = o
                .file_stem()
                .map_or_else(Default::default, |s| s.to_string_lossy());
            let stem = stem.strip_suffix("-bench").unwrap_or(&stem);
            o.with_file_name(format!("{stem}-rss.svg"))
        })
    });
    if let Some(path) = &plot_path {
        plot::draw(path, &report.corpora).map_err(BenchError::Io)?;
    }
    emit_report(&report, args.out.as_deref(), args.json, tables::print).map_err(BenchError::Io)
}
