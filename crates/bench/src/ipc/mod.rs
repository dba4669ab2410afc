//! `bench datahub [--quick] [--json] [--out PATH]`: DataHub (this workspace's shared-memory IPC
//! library) against iceoryx2, both between two processes, in the same run.
//!
//! # What is timed
//! Every measurement runs in a fresh pair of child processes (this binary re-executed with the
//! hidden `child-ipc` subcommand, see [`child`] for the protocol); the parent only starts them,
//! releases both at once when both are connected, and collects one JSON line.
//!
//! * **Latency** (64 B and 4 KiB): two channels, `ping` (A to B) and `pong` (B to A). A copies the
//!   full payload into a `ping` slot, stamps a sequence number and publishes; B busy-polls,
//!   checks the message (sequence number, length, last byte), copies the whole of it into a
//!   `pong` slot while still holding it, publishes, then releases the ping; A busy-polls for the
//!   pong and reads it the same way. A times each round trip with `Instant` from before the
//!   send to after the pong was read and released; **one-way latency = round trip / 2**,
//!   recorded per round trip in an HDR histogram (ns, 3 significant digits). Warm-up round
//!   trips are not recorded. p50/p99/p99.9 are reported.
//! * **Throughput** (64 B, 4 KiB, 64 KiB, 1 MiB; queue depths [`THROUGHPUT_DEPTHS`]): a
//!   producer sends `warmup + N` messages as fast as it can through a lossless queue of that
//!   many slots, each one a copy of the
//!   full payload into the slot plus the sequence number; the consumer reads each one (sequence
//!   number, length and last byte checked: a lost or reordered message fails the run) and
//!   releases it. **Timed in the consumer**, with `Instant`, from its receipt of the last
//!   warm-up message to its receipt of the last message, so exactly N messages fall in the
//!   interval: `msgs_per_sec = N / elapsed`, `gb_per_sec = N * size / 1e9 / elapsed`. Process
//!   start, connection set-up and teardown are outside every timed interval.
//!
//! * **Batches** (DataHub only, 64 B records, queue of [`BATCH_DEPTH`] slots): the throughput
//!   test with the producer claiming and committing 32 messages at a time
//!   (`Producer::write_batch`) and the consumer taking the committed run, up to 32
//!   (`Consumer::read_batch`), against the same test one message at a time; timed the same way
//!   (the warm-up is a multiple of the batch).
//! * **Thread-shape latency** (8 B, 64 B, 4 KiB): iceoryx2's own benchmark shape, the one its
//!   published figures come from: two pinned threads of this (parent) process ping-pong
//!   through channels of one message each; mean one-way latency = elapsed / (2 x iterations).
//!   See [`threads`].
//!
//! DataHub runs twice, with `ChecksumPolicy::None` (`datahub`) and `ChecksumPolicy::Enforced`
//! (`datahub_enforced`: BLAKE2b at commit, verified on read, so inside both timed intervals);
//! iceoryx2 has no checksum and runs once. [`dh`] and [`iox`] say how each system is set up.
//!
//! # Runs and medians
//! This VM sometimes runs 2-3x slower for a while, so the measurements are interleaved: run
//! after run, every test, and for each test the three systems one after the other (the first
//! of them rotates from run to run). Each reported number is the **median across runs** of that
//! number (the median of the runs' p99s, etc.); every run is kept in the report's `runs` array,
//! with its start time, to show the spread. `--quick` (a CI smoke run) does one run of each
//! with far fewer messages.

mod child;
mod dh;
mod iox;
mod threads;

use std::fmt;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command as Process, ExitCode, Stdio};
use std::time::Instant;

use clap::{Args, ValueEnum};
use serde::de::DeserializeOwned;
use serde::ser::SerializeMap as _;
use serde::{Serialize, Serializer};

pub use self::child::ChildArgs;
use self::child::{LatencyRun, PassiveRun, Role, ThroughputRun};
use crate::RatioGoal;
use crate::machine::Machine;

/// Slots of every latency channel, and the deep throughput queue.
pub const QUEUE_DEPTH: usize = 16;
/// Queue depths of the throughput test: a shallow queue and the deep one.
pub const THROUGHPUT_DEPTHS: [usize; 2] = [2, QUEUE_DEPTH];
/// The batch test (DataHub only): 64-byte records through a queue of this many slots, in
/// batches of [`BATCHES`] messages (`Producer::write_batch` / `Consumer::read_batch`).
pub const BATCH_DEPTH: usize = 64;
const BATCH_SIZE: usize = 64;
const BATCHES: [usize; 2] = [1, 32];
const LATENCY_SIZES: [usize; 2] = [64, 4096];
const THROUGHPUT_SIZES: [usize; 4] = [64, 4096, 65536, 1 << 20];
const THREAD_SIZES: [usize; 3] = [8, 64, 4096];
/// Systems in the order of the first run (rotated by one each run).
const SYSTEMS: [System; 3] = [System::Datahub, System::Iceoryx2, System::DatahubEnforced];

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum System {
    /// DataHub, checksums off.
    Datahub,
    /// DataHub with `ChecksumPolicy::Enforced`.
    DatahubEnforced,
    /// iceoryx2 publish-subscribe.
    Iceoryx2,
}

impl System {
    /// Its key in the report.
    fn key(self) -> &'static str {
        match self {
            System::Datahub => "datahub",
            System::DatahubEnforced => "datahub_enforced",
            System::Iceoryx2 => "iceoryx2",
        }
    }
    /// Its `--system` value.
    fn arg(self) -> &'static str {
        match self {
            System::Datahub => "datahub",
            System::DatahubEnforced => "datahub-enforced",
            System::Iceoryx2 => "iceoryx2",
        }
    }
}

/// DataHub's slot order for the process runs (`datahub::SlotOrder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DhSlotOrder {
    /// `SlotOrder::Auto`: recent slots for a lossless ring of at least 512 KiB.
    Auto,
    /// `SlotOrder::Ring`: message `seq` in slot `seq % depth` (DataHub before format 1.2).
    Ring,
    /// `SlotOrder::Recent`: the slot released last is written next.
    Recent,
}

impl DhSlotOrder {
    fn as_str(self) -> &'static str {
        match self {
            DhSlotOrder::Auto => "auto",
            DhSlotOrder::Ring => "ring",
            DhSlotOrder::Recent => "recent",
        }
    }
}

impl From<DhSlotOrder> for datahub::SlotOrder {
    fn from(o: DhSlotOrder) -> datahub::SlotOrder {
        match o {
            DhSlotOrder::Auto => datahub::SlotOrder::Auto,
            DhSlotOrder::Ring => datahub::SlotOrder::Ring,
            DhSlotOrder::Recent => datahub::SlotOrder::Recent,
        }
    }
}

/// Arguments of `bench datahub`.
#[derive(Debug, Args)]
pub struct DatahubArgs {
    /// Short run (one run per system, far fewer messages): well under a minute.
    #[arg(long)]
    quick: bool,
    /// Print one JSON object on stdout instead of tables.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// DataHub's slot order in the process runs (the thread-shape runs use one slot, so
    /// `auto`): `ring` measures DataHub as it was before recent slots.
    #[arg(long, value_enum, default_value_t = DhSlotOrder::Auto)]
    slot_order: DhSlotOrder,
}

// ------------------------------------------------------------------------------------ child

/// Entry point of the hidden `child-ipc` subcommand.
pub fn child_main(a: &ChildArgs) -> ExitCode {
    let result = child::validate(a).and_then(|()| match a.system {
        System::Iceoryx2 => iox::run(a),
        System::Datahub | System::DatahubEnforced => dh::run(a.system, a),
    });
    crate::child_exit(&format!("{} {}", a.system.key(), a.role.as_str()), result)
}

// ------------------------------------------------------------------------------------ parent

/// Why `bench datahub` failed.
#[derive(Debug)]
pub enum IpcError {
    /// A pair of children could not be started, failed, or printed something unreadable.
    Pair { what: String, detail: String },
    /// Something of the parent's own failed (finding its executable, writing `--out`, ...).
    Io(String),
}

impl fmt::Display for IpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpcError::Pair { what, detail } => write!(f, "{what} failed: {detail}"),
            IpcError::Io(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for IpcError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Test {
    Latency,
    Throughput,
}

impl Test {
    fn as_str(self) -> &'static str {
        match self {
            Test::Latency => "latency",
            Test::Throughput => "throughput",
        }
    }
    /// (passive role, active role): the active one measures and prints the result.
    fn roles(self) -> (Role, Role) {
        match self {
            Test::Latency => (Role::Pong, Role::Ping),
            Test::Throughput => (Role::Producer, Role::Consumer),
        }
    }
}

/// A map keyed by payload size, serialised in size order with the size as a string key.
#[derive(Debug, Clone)]
pub struct BySize<T>(Vec<(usize, T)>);

impl<T> BySize<T> {
    fn get(&self, size: usize) -> Option<&T> {
        self.0.iter().find(|(s, _)| *s == size).map(|(_, v)| v)
    }
}

impl<T: Serialize> Serialize for BySize<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (size, v) in &self.0 {
            m.serialize_entry(&size.to_string(), v)?;
        }
        m.end()
    }
}

/// One value per system.
#[derive(Debug, Clone, Serialize)]
struct PerSystem<T> {
    datahub: T,
    datahub_enforced: T,
    iceoryx2: T,
}

impl<T> PerSystem<T> {
    fn new(mut f: impl FnMut(System) -> T) -> PerSystem<T> {
        PerSystem {
            datahub: f(System::Datahub),
            datahub_enforced: f(System::DatahubEnforced),
            iceoryx2: f(System::Iceoryx2),
        }
    }
    fn get(&self, s: System) -> &T {
        match s {
            System::Datahub => &self.datahub,
            System::DatahubEnforced => &self.datahub_enforced,
            System::Iceoryx2 => &self.iceoryx2,
        }
    }
}

/// The sizes of a run.
#[derive(Debug, Clone, Serialize)]
struct IpcConfig {
    quick: bool,
    /// Runs of every (test, size, system).
    runs: u32,
    order: &'static str,
    summary: &'static str,
    queue_depth: usize,
    throughput_depths: Vec<usize>,
    latency_sizes: Vec<usize>,
    latency_round_trips: u64,
    latency_warmup_round_trips: u64,
    latency_timing: &'static str,
    histogram_significant_digits: u8,
    thread_latency_sizes: Vec<usize>,
    thread_latency_iterations: u64,
    thread_latency_warmup_iterations: u64,
    thread_latency: &'static str,
    throughput_sizes: Vec<usize>,
    throughput_messages: BySize<u64>,
    throughput_warmup_messages: BySize<u64>,
    throughput_timing: &'static str,
    batch_depth: usize,
    batch_payload_size: usize,
    batch_sizes: Vec<usize>,
    datahub: &'static str,
    datahub_spin_ms: u128,
    datahub_slot_order: DhSlotOrder,
    iceoryx2: &'static str,
    iceoryx2_version_req: &'static str,
    child_wait_timeout_s: u64,
}

impl IpcConfig {
    fn new(quick: bool, slot_order: DhSlotOrder) -> IpcConfig {
        // Messages per throughput run: a byte budget, capped, so every size takes similar time.
        let (budget, cap): (u64, u64) = if quick {
            (128 << 20, 200_000)
        } else {
            (4 << 30, 2_000_000)
        };
        let messages = |size: usize| (budget / size as u64).clamp(100, cap);
        let warmup = |size: usize| (messages(size) / 10).max(2 * QUEUE_DEPTH as u64);
        IpcConfig {
            quick,
            runs: if quick { 1 } else { 3 },
            order: "run after run: every test and size, the systems one after the other \
                    (datahub, iceoryx2, datahub_enforced, the first rotated by one each run)",
            summary: "median across runs of each number",
            queue_depth: QUEUE_DEPTH,
            throughput_depths: THROUGHPUT_DEPTHS.to_vec(),
            latency_sizes: LATENCY_SIZES.to_vec(),
            latency_round_trips: if quick { 10_000 } else { 100_000 },
            latency_warmup_round_trips: if quick { 1_000 } else { 10_000 },
            latency_timing: "in the ping process, per round trip: from before the ping's send to \
                             after the pong was read and released; one-way = round trip / 2",
            histogram_significant_digits: 3,
            thread_latency_sizes: THREAD_SIZES.to_vec(),
            thread_latency_iterations: if quick { 20_000 } else { 1_000_000 },
            thread_latency_warmup_iterations: if quick { 2_000 } else { 100_000 },
            thread_latency: "iceoryx2's benchmark shape (benchmarks/publish-subscribe): two \
                             threads of one process pinned to two cores, ping-pong, one \
                             message per channel (datahub: Policy::Sequential, slot_count 1; \
                             iceoryx2: history 0, subscriber_max_buffer_size 1), a full copy \
                             of the payload per message; timed in thread A after the warm-up; \
                             mean one-way = elapsed / (2 x iterations)",
            throughput_sizes: THROUGHPUT_SIZES.to_vec(),
            throughput_messages: BySize(THROUGHPUT_SIZES.map(|s| (s, messages(s))).to_vec()),
            throughput_warmup_messages: BySize(THROUGHPUT_SIZES.map(|s| (s, warmup(s))).to_vec()),
            throughput_timing: "in the consumer process: from its receipt of the last warm-up \
                                message to its receipt of the last message (N messages); \
                                every message is a full copy of the payload into the slot",
            batch_depth: BATCH_DEPTH,
            batch_payload_size: BATCH_SIZE,
            batch_sizes: BATCHES.to_vec(),
            datahub: "Policy::Sequential, slot_size = payload size, slot_count = queue depth, \
                      SlotOrder per datahub_slot_order (auto: recent slots from a 512 KiB \
                      ring); \
                      datahub: ChecksumPolicy::None, datahub_enforced: ChecksumPolicy::Enforced",
            datahub_spin_ms: dh::SPIN.as_millis(),
            datahub_slot_order: slot_order,
            iceoryx2: "ipc::Service publish-subscribe of [u8] slices, safe overflow off, \
                       subscriber_max_buffer_size = queue depth, history 0, publisher \
                       BackpressureStrategy::RetryUntilDelivered, loan_slice_uninit + \
                       write_from_slice, receive() busy-polled",
            iceoryx2_version_req: "0.10",
            child_wait_timeout_s: child::WAIT_TIMEOUT.as_secs(),
        }
    }

    fn messages(&self, test: Test, size: usize) -> (u64, u64) {
        match test {
            Test::Latency => (self.latency_round_trips, self.latency_warmup_round_trips),
            Test::Throughput => (
                self.throughput_messages.get(size).copied().unwrap_or(0),
                self.throughput_warmup_messages
                    .get(size)
                    .copied()
                    .unwrap_or(1),
            ),
        }
    }
}

/// One pair's result.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
enum RunResult {
    Latency(LatencyRun),
    Throughput(ThroughputRun),
    Thread(threads::ThreadRun),
}

/// One pair of children, as kept in the report.
#[derive(Debug, Clone, Serialize)]
struct RunRecord {
    run: u32,
    test: &'static str,
    system: &'static str,
    /// Start of the pair, seconds since the benchmark started.
    started_s: f64,
    #[serde(flatten)]
    result: RunResult,
}

/// Median latency percentiles across runs, ns (`None` only if no run of it was made).
#[derive(Debug, Clone, Serialize)]
struct LatencySummary {
    p50_ns: Option<u64>,
    p99_ns: Option<u64>,
    p999_ns: Option<u64>,
}

/// Median throughput across runs.
#[derive(Debug, Clone, Serialize)]
struct ThroughputSummary {
    msgs_per_sec: f64,
    gb_per_sec: f64,
}

/// A goal of the project, evaluated on this run's medians.
#[derive(Debug, Clone, Serialize)]
struct Goal {
    name: &'static str,
    #[serde(flatten)]
    goal: RatioGoal,
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    machine: Machine,
    config: IpcConfig,
    latency: PerSystem<BySize<LatencySummary>>,
    /// Throughput at the deep queue ([`QUEUE_DEPTH`]), by payload size.
    throughput: PerSystem<BySize<ThroughputSummary>>,
    /// Throughput by queue depth (key), then payload size.
    throughput_by_depth: BySize<PerSystem<BySize<ThroughputSummary>>>,
    /// DataHub's batch test by batch size (messages per batch).
    batch: BySize<ThroughputSummary>,
    /// Median across runs of the thread-shape mean one-way latency, ns.
    thread_latency: PerSystem<BySize<Option<f64>>>,
    goals: Vec<Goal>,
    runs: Vec<RunRecord>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn latencies(runs: &[RunRecord], system: System, size: usize) -> Vec<&LatencyRun> {
    runs.iter()
        .filter(|r| r.system == system.key())
        .filter_map(|r| match &r.result {
            RunResult::Latency(l) if l.size == size => Some(l),
            _ => None,
        })
        .collect()
}

fn throughputs(
    runs: &[RunRecord],
    system: System,
    size: usize,
    depth: usize,
) -> Vec<&ThroughputRun> {
    runs.iter()
        .filter(|r| r.system == system.key())
        .filter_map(|r| match &r.result {
            RunResult::Throughput(t) if t.size == size && t.depth == depth && t.batch == 1 => {
                Some(t)
            }
            _ => None,
        })
        .collect()
}

fn thread_runs(runs: &[RunRecord], system: System, size: usize) -> Vec<&threads::ThreadRun> {
    runs.iter()
        .filter(|r| r.system == system.key())
        .filter_map(|r| match &r.result {
            RunResult::Thread(t) if t.size == size => Some(t),
            _ => None,
        })
        .collect()
}

fn summarise_threads(runs: &[RunRecord], system: System) -> BySize<Option<f64>> {
    BySize(
        THREAD_SIZES
            .iter()
            .map(|&size| {
                let v = median(
                    thread_runs(runs, system, size)
                        .iter()
                        .map(|r| r.mean_one_way_ns)
                        .collect(),
                );
                (size, v.is_finite().then_some(v))
            })
            .collect(),
    )
}

fn summarise_latency(runs: &[RunRecord], system: System) -> BySize<LatencySummary> {
    BySize(
        LATENCY_SIZES
            .iter()
            .map(|&size| {
                let l = latencies(runs, system, size);
                let m = |f: fn(&LatencyRun) -> u64| {
                    let v = median(l.iter().map(|r| f(r) as f64).collect());
                    v.is_finite().then(|| v.round() as u64)
                };
                (
                    size,
                    LatencySummary {
                        p50_ns: m(|r| r.p50_ns),
                        p99_ns: m(|r| r.p99_ns),
                        p999_ns: m(|r| r.p999_ns),
                    },
                )
            })
            .collect(),
    )
}

fn batch_runs(runs: &[RunRecord], batch: usize) -> Vec<&ThroughputRun> {
    runs.iter()
        .filter(|r| r.test == "batch")
        .filter_map(|r| match &r.result {
            RunResult::Throughput(t) if t.batch == batch => Some(t),
            _ => None,
        })
        .collect()
}

fn summarise(t: &[&ThroughputRun]) -> ThroughputSummary {
    ThroughputSummary {
        msgs_per_sec: median(t.iter().map(|r| r.msgs_per_sec).collect()),
        gb_per_sec: median(t.iter().map(|r| r.gb_per_sec).collect()),
    }
}

fn summarise_throughput(
    runs: &[RunRecord],
    system: System,
    depth: usize,
) -> BySize<ThroughputSummary> {
    BySize(
        THROUGHPUT_SIZES
            .iter()
            .map(|&size| (size, summarise(&throughputs(runs, system, size, depth))))
            .collect(),
    )
}

fn goals(
    latency: &PerSystem<BySize<LatencySummary>>,
    throughput: &PerSystem<BySize<ThroughputSummary>>,
    by_depth: &BySize<PerSystem<BySize<ThroughputSummary>>>,
    batch: &BySize<ThroughputSummary>,
) -> Vec<Goal> {
    let p50 = |s: System, size| {
        latency
            .get(s)
            .get(size)
            .and_then(|l| l.p50_ns)
            .map_or(f64::NAN, |v| v as f64)
    };
    let tput = |s: System, size| throughput.get(s).get(size).cloned();
    let gbps = |s: System, size, depth| {
        by_depth
            .get(depth)
            .and_then(|t| t.get(s).get(size))
            .map_or(f64::NAN, |t| t.gb_per_sec)
    };
    let vs_iox = |size: usize, depth: usize| Goal {
        name: match (size, depth) {
            (65536, 2) => "datahub / iceoryx2 throughput, 64 KiB, depth 2",
            (65536, _) => "datahub / iceoryx2 throughput, 64 KiB, depth 16",
            (_, 2) => "datahub / iceoryx2 throughput, 1 MiB, depth 2",
            _ => "datahub / iceoryx2 throughput, 1 MiB, depth 16",
        },
        goal: RatioGoal::at_least(
            crate::ratio(
                gbps(System::Datahub, size, depth),
                gbps(System::Iceoryx2, size, depth),
            ),
            1.0,
        ),
    };
    let batch_ratio = {
        let m = |b| batch.get(b).map_or(f64::NAN, |t| t.msgs_per_sec);
        crate::ratio(m(BATCHES[1]), m(BATCHES[0]))
    };
    let mut goals = vec![
        Goal {
            name: "datahub 64 B msgs/s, batches of 32 / one at a time",
            goal: RatioGoal::at_least(batch_ratio, 1.5),
        },
        Goal {
            name: "datahub p50 one-way latency / iceoryx2's, 64 B",
            goal: RatioGoal::at_most(
                crate::ratio(p50(System::Datahub, 64), p50(System::Iceoryx2, 64)),
                1.0,
            ),
        },
        Goal {
            name: "datahub p50 one-way latency / iceoryx2's, 4 KiB",
            goal: RatioGoal::at_most(
                crate::ratio(p50(System::Datahub, 4096), p50(System::Iceoryx2, 4096)),
                1.0,
            ),
        },
        Goal {
            name: "datahub 4 KiB throughput, msgs/s",
            goal: RatioGoal::at_least(
                tput(System::Datahub, 4096).map_or(f64::NAN, |t| t.msgs_per_sec),
                2e6,
            ),
        },
        Goal {
            name: "datahub 1 MiB throughput (no checksum), GB/s",
            goal: RatioGoal::at_least(
                tput(System::Datahub, 1 << 20).map_or(f64::NAN, |t| t.gb_per_sec),
                5.0,
            ),
        },
    ];
    for depth in THROUGHPUT_DEPTHS {
        for size in [65536, 1 << 20] {
            goals.push(vs_iox(size, depth));
        }
    }
    goals
}

/// `bench datahub`.
pub fn run(args: &DatahubArgs) -> Result<(), IpcError> {
    let config = IpcConfig::new(args.quick, args.slot_order);
    let machine = Machine::detect();
    let exe = std::env::current_exe()
        .map_err(|e| IpcError::Io(format!("cannot find this executable: {e}")))?;
    let progress = |msg: &str| {
        if !args.json {
            eprintln!("bench: {msg}");
        }
    };

    let t0 = Instant::now();
    let mut counter = 0u32;
    let mut runs = Vec::new();
    let tests = LATENCY_SIZES
        .iter()
        .map(|&s| (Test::Latency, s, QUEUE_DEPTH))
        .chain(THROUGHPUT_DEPTHS.iter().flat_map(|&d| {
            THROUGHPUT_SIZES
                .iter()
                .map(move |&s| (Test::Throughput, s, d))
        }));
    let tests: Vec<(Test, usize, usize)> = tests.collect();
    for run in 0..config.runs {
        for &(test, size, depth) in &tests {
            for k in 0..SYSTEMS.len() {
                let system = SYSTEMS[(k + run as usize) % SYSTEMS.len()];
                counter += 1;
                let batch = 1;
                let (messages, warmup) = config.messages(test, size);
                progress(&format!(
                    "run {}/{}: {} {size} B, depth {depth}, {}",
                    run + 1,
                    config.runs,
                    test.as_str(),
                    system.key()
                ));
                let pair = Pair {
                    exe: &exe,
                    system,
                    test,
                    size,
                    depth,
                    batch,
                    messages,
                    warmup,
                    slot_order: args.slot_order,
                    name: format!("bench-{}-{counter}", std::process::id()),
                };
                let started_s = t0.elapsed().as_secs_f64();
                let result = pair.run()?;
                runs.push(RunRecord {
                    run,
                    test: test.as_str(),
                    system: system.key(),
                    started_s,
                    result,
                });
            }
        }
        // Batches: DataHub alone, one at a time and 32 at a time, alternating which goes first.
        for k in 0..BATCHES.len() {
            let batch = BATCHES[(k + run as usize) % BATCHES.len()];
            counter += 1;
            let (messages, warmup) = config.messages(Test::Throughput, BATCH_SIZE);
            progress(&format!(
                "run {}/{}: batch of {batch}, {BATCH_SIZE} B, depth {BATCH_DEPTH}, datahub",
                run + 1,
                config.runs
            ));
            let pair = Pair {
                exe: &exe,
                system: System::Datahub,
                test: Test::Throughput,
                size: BATCH_SIZE,
                depth: BATCH_DEPTH,
                batch,
                messages,
                warmup: warmup.div_ceil(batch as u64) * batch as u64,
                slot_order: args.slot_order,
                name: format!("bench-{}-{counter}", std::process::id()),
            };
            let started_s = t0.elapsed().as_secs_f64();
            let result = pair.run()?;
            runs.push(RunRecord {
                run,
                test: "batch",
                system: System::Datahub.key(),
                started_s,
                result,
            });
        }
        for &size in &THREAD_SIZES {
            for k in 0..SYSTEMS.len() {
                let system = SYSTEMS[(k + run as usize) % SYSTEMS.len()];
                counter += 1;
                progress(&format!(
                    "run {}/{}: thread latency {size} B, {}",
                    run + 1,
                    config.runs,
                    system.key()
                ));
                let started_s = t0.elapsed().as_secs_f64();
                let result = threads::run(
                    system,
                    size,
                    config.thread_latency_iterations,
                    config.thread_latency_warmup_iterations,
                    &format!("bench-{}-{counter}", std::process::id()),
                )
                .map_err(|detail| IpcError::Pair {
                    what: format!("thread latency {size} B of {}", system.key()),
                    detail,
                })?;
                runs.push(RunRecord {
                    run,
                    test: "thread_latency",
                    system: system.key(),
                    started_s,
                    result: RunResult::Thread(result),
                });
            }
        }
    }
    progress(&format!("done in {:.1} s", t0.elapsed().as_secs_f64()));

    let latency = PerSystem::new(|s| summarise_latency(&runs, s));
    let throughput = PerSystem::new(|s| summarise_throughput(&runs, s, QUEUE_DEPTH));
    let throughput_by_depth = BySize(
        THROUGHPUT_DEPTHS
            .iter()
            .map(|&d| (d, PerSystem::new(|s| summarise_throughput(&runs, s, d))))
            .collect(),
    );
    let batch = BySize(
        BATCHES
            .iter()
            .map(|&b| (b, summarise(&batch_runs(&runs, b))))
            .collect(),
    );
    let thread_latency = PerSystem::new(|s| summarise_threads(&runs, s));
    let goals = goals(&latency, &throughput, &throughput_by_depth, &batch);
    let report = Report {
        machine,
        config,
        latency,
        throughput,
        throughput_by_depth,
        batch,
        thread_latency,
        goals,
        runs,
    };
    crate::emit_report(&report, args.out.as_deref(), args.json, print_tables).map_err(IpcError::Io)
}

/// One measurement: a pair of children of one system.
struct Pair<'a> {
    exe: &'a Path,
    system: System,
    test: Test,
    size: usize,
    /// Queue depth (slots).
    depth: usize,
    /// Messages per batch (1: one at a time).
    batch: usize,
    messages: u64,
    warmup: u64,
    slot_order: DhSlotOrder,
    /// Base name of the channels (shared-memory files, iceoryx2 services), unique to the pair.
    name: String,
}

impl Pair<'_> {
    fn what(&self) -> String {
        format!(
            "{} {} B depth {} pair of {}",
            self.test.as_str(),
            self.size,
            self.depth,
            self.system.key()
        )
    }

    fn fail(&self, detail: impl Into<String>) -> IpcError {
        IpcError::Pair {
            what: self.what(),
            detail: detail.into(),
        }
    }

    fn spawn(&self, role: Role) -> Result<Child, IpcError> {
        let name = match self.system {
            // iceoryx2 service names are paths of segments.
            System::Iceoryx2 => self.name.replace('-', "/"),
            System::Datahub | System::DatahubEnforced => self.name.clone(),
        };
        Process::new(self.exe)
            .args([
                "child-ipc",
                "--system",
                self.system.arg(),
                "--role",
                role.as_str(),
                "--size",
                &self.size.to_string(),
                "--messages",
                &self.messages.to_string(),
                "--warmup",
                &self.warmup.to_string(),
                "--depth",
                &self.depth.to_string(),
                "--name",
                &name,
                "--slot-order",
                self.slot_order.as_str(),
                "--batch",
                &self.batch.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                self.fail(format!(
                    "cannot start {} ({}): {e}",
                    self.exe.display(),
                    role.as_str()
                ))
            })
    }

    /// Starts both children, runs them, and cleans up after them whatever happened.
    fn run(&self) -> Result<RunResult, IpcError> {
        let (passive_role, active_role) = self.test.roles();
        let mut passive = self.spawn(passive_role)?;
        let result = match self.spawn(active_role) {
            Ok(mut active) => {
                let r = self.drive(&mut passive, &mut active);
                if r.is_err() {
                    let _ = active.kill();
                }
                let _ = active.wait();
                r
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = passive.kill();
        }
        let _ = passive.wait();
        match self.system {
            System::Datahub | System::DatahubEnforced => dh::remove_segments(&self.name),
            System::Iceoryx2 => {
                if result.is_err() {
                    iox::cleanup_dead_nodes();
                }
            }
        }
        result
    }

    fn drive(&self, passive: &mut Child, active: &mut Child) -> Result<RunResult, IpcError> {
        let (passive_role, active_role) = self.test.roles();
        let io = |what: &str, e: std::io::Error| self.fail(format!("{what}: {e}"));
        let mut p_out = BufReader::new(
            passive
                .stdout
                .take()
                .ok_or_else(|| self.fail("no stdout"))?,
        );
        let mut a_out = BufReader::new(active.stdout.take().ok_or_else(|| self.fail("no stdout"))?);
        let mut p_in = passive.stdin.take().ok_or_else(|| self.fail("no stdin"))?;
        let mut a_in = active.stdin.take().ok_or_else(|| self.fail("no stdin"))?;

        self.expect_ready(&mut p_out, passive_role)?;
        self.expect_ready(&mut a_out, active_role)?;
        writeln!(p_in, "go")
            .and_then(|()| p_in.flush())
            .map_err(|e| io("cannot release the passive child", e))?;
        writeln!(a_in, "go")
            .and_then(|()| a_in.flush())
            .map_err(|e| io("cannot release the active child", e))?;
        drop(a_in);

        let line = self.last_line(&mut a_out, active_role);
        self.check_exit(active, active_role)?;
        let line = line?;
        drop(p_in); // the passive child tears down once its stdin is closed
        let p_line = self.last_line(&mut p_out, passive_role);
        self.check_exit(passive, passive_role)?;
        let p_line = p_line?;
        let _: PassiveRun = self.parse(&p_line, passive_role)?;
        Ok(match self.test {
            Test::Latency => RunResult::Latency(self.parse(&line, active_role)?),
            Test::Throughput => RunResult::Throughput(self.parse(&line, active_role)?),
        })
    }

    fn expect_ready(&self, out: &mut BufReader<ChildStdout>, role: Role) -> Result<(), IpcError> {
        let mut line = String::new();
        out.read_line(&mut line)
            .map_err(|e| self.fail(format!("{}: cannot read: {e}", role.as_str())))?;
        if line.trim() == "ready" {
            Ok(())
        } else {
            Err(self.fail(format!(
                "{} did not get ready (printed {:?})",
                role.as_str(),
                line.trim()
            )))
        }
    }

    fn last_line(&self, out: &mut BufReader<ChildStdout>, role: Role) -> Result<String, IpcError> {
        let mut text = String::new();
        std::io::Read::read_to_string(out, &mut text)
            .map_err(|e| self.fail(format!("{}: cannot read: {e}", role.as_str())))?;
        text.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .ok_or_else(|| self.fail(format!("{} printed no result", role.as_str())))
    }

    fn check_exit(&self, child: &mut Child, role: Role) -> Result<(), IpcError> {
        use std::os::unix::process::ExitStatusExt as _;
        let status = child
            .wait()
            .map_err(|e| self.fail(format!("{}: cannot wait: {e}", role.as_str())))?;
        if status.success() {
            return Ok(());
        }
        Err(self.fail(format!(
            "{}: {}",
            role.as_str(),
            match (status.code(), status.signal()) {
                (Some(code), _) => format!("exit code {code}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                (None, None) => "unknown exit status".to_owned(),
            }
        )))
    }

    fn parse<T: DeserializeOwned>(&self, line: &str, role: Role) -> Result<T, IpcError> {
        serde_json::from_str(line).map_err(|e| {
            self.fail(format!(
                "{}: unreadable output ({e}): {line}",
                role.as_str()
            ))
        })
    }
}

// ------------------------------------------------------------------------------------ tables

fn print_tables(r: &Report) {
    let m = &r.machine;
    let c = &r.config;
    println!("{}", m.summary());
    println!(
        "two processes per measurement; {} run(s) of each, systems interleaved, medians \
         across runs{}; latency queue depth {} slots, throughput depths {:?}; datahub slot \
         order {}",
        c.runs,
        if c.quick { " (quick)" } else { "" },
        c.queue_depth,
        c.throughput_depths,
        c.datahub_slot_order.as_str()
    );
    println!();
    println!(
        "latency: one-way = round trip / 2, ns; {} round trips (+{} warm-up) per run",
        c.latency_round_trips, c.latency_warmup_round_trips
    );
    println!(
        "{:<17} {:>6} {:>8} {:>8} {:>8}   p50 of each run",
        "system", "bytes", "p50", "p99", "p99.9"
    );
    for &size in &LATENCY_SIZES {
        for s in SYSTEMS {
            let Some(l) = r.latency.get(s).get(size) else {
                continue;
            };
            let each: Vec<String> = latencies(&r.runs, s, size)
                .iter()
                .map(|x| x.p50_ns.to_string())
                .collect();
            let ns = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
            println!(
                "{:<17} {:>6} {:>8} {:>8} {:>8}   {}",
                s.key(),
                size,
                ns(l.p50_ns),
                ns(l.p99_ns),
                ns(l.p999_ns),
                each.join(" ")
            );
        }
    }
    println!();
    println!("throughput: timed in the consumer, every message a full copy of the payload");
    println!(
        "{:<17} {:>8} {:>5} {:>9} {:>12} {:>8} {:>7}   msgs/s of each run",
        "system", "bytes", "depth", "messages", "msgs/s", "GB/s", "/ iox2"
    );
    for &depth in &THROUGHPUT_DEPTHS {
        let Some(by_system) = r.throughput_by_depth.get(depth) else {
            continue;
        };
        for &size in &THROUGHPUT_SIZES {
            let iox = by_system.iceoryx2.get(size).map(|t| t.gb_per_sec);
            for s in SYSTEMS {
                let Some(t) = by_system.get(s).get(size) else {
                    continue;
                };
                let each: Vec<String> = throughputs(&r.runs, s, size, depth)
                    .iter()
                    .map(|x| crate::si(x.msgs_per_sec))
                    .collect();
                let ratio = iox.map_or("-".to_owned(), |i| {
                    format!("{:.2}", crate::ratio(t.gb_per_sec, i))
                });
                println!(
                    "{:<17} {:>8} {:>5} {:>9} {:>12} {:>8.2} {:>7}   {}",
                    s.key(),
                    size,
                    depth,
                    c.throughput_messages.get(size).copied().unwrap_or(0),
                    crate::si(t.msgs_per_sec),
                    t.gb_per_sec,
                    ratio,
                    each.join(" ")
                );
            }
        }
    }
    println!();
    println!(
        "batches (datahub): {} B records, depth {}, write_batch/read_batch of up to n against \
         one at a time",
        c.batch_payload_size, c.batch_depth
    );
    println!(
        "{:<17} {:>6} {:>12} {:>9}   msgs/s of each run",
        "batch of", "bytes", "msgs/s", "/ single"
    );
    let single = r.batch.get(1).map(|t| t.msgs_per_sec);
    for &b in &BATCHES {
        let Some(t) = r.batch.get(b) else { continue };
        let each: Vec<String> = batch_runs(&r.runs, b)
            .iter()
            .map(|x| crate::si(x.msgs_per_sec))
            .collect();
        println!(
            "{:<17} {:>6} {:>12} {:>9}   {}",
            b,
            c.batch_payload_size,
            crate::si(t.msgs_per_sec),
            single.map_or("-".to_owned(), |s| format!(
                "{:.2}",
                crate::ratio(t.msgs_per_sec, s)
            )),
            each.join(" ")
        );
    }
    println!();
    println!(
        "thread latency, iceoryx2's benchmark shape (comparable with its published figures): \
         two pinned threads of one process, ping-pong, one message per channel, full payload \
         copy; mean one-way = elapsed / (2 x iterations), ns; {} iterations (+{} warm-up) per run",
        c.thread_latency_iterations, c.thread_latency_warmup_iterations
    );
    println!(
        "{:<17} {:>6} {:>9} {:>13}   mean of each run",
        "system", "bytes", "mean", "/ iceoryx2's"
    );
    for &size in &THREAD_SIZES {
        let iox = r.thread_latency.iceoryx2.get(size).copied().flatten();
        for s in SYSTEMS {
            let Some(&mean) = r.thread_latency.get(s).get(size) else {
                continue;
            };
            let each: Vec<String> = thread_runs(&r.runs, s, size)
                .iter()
                .map(|x| format!("{:.0}", x.mean_one_way_ns))
                .collect();
            let ratio = match (mean, iox) {
                (Some(m), Some(i)) => format!("{:.2}", crate::ratio(m, i)),
                _ => "-".to_owned(),
            };
            println!(
                "{:<17} {:>6} {:>9} {:>13}   {}",
                s.key(),
                size,
                mean.map_or("-".to_owned(), |m| format!("{m:.0}")),
                ratio,
                each.join(" ")
            );
        }
    }
    if let Some(cores) = r.runs.iter().find_map(|x| match &x.result {
        RunResult::Thread(t) => Some(t.cores),
        _ => None,
    }) {
        match cores {
            Some([a, b]) => println!("  threads pinned to CPUs {a} and {b}"),
            None => println!("  fewer than two CPUs: threads not pinned"),
        }
    }
    println!();
    println!("goals:");
    let met = r.goals.iter().filter(|g| g.goal.met).count();
    for g in &r.goals {
        println!(
            "  {:<48} {:>12.3}  {} {:<8} {}",
            g.name,
            g.goal.value,
            g.goal.comparison,
            g.goal.target,
            if g.goal.met { "met" } else { "MISSED" }
        );
    }
    println!("  {met} of {} met", r.goals.len());
}
