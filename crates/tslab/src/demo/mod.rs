//! `tslab demo`: a request-processing workload on a temporal-slab allocator, observable while it
//! runs.
//!
//! Each **request** is one JSON document of the [`corpus`] (a file, or one line of an NDJSON
//! file; without `--corpus`, a generated default corpus). Handling a request means: enter the
//! batch's epoch domain ([`SlabAllocator::enter`]), parse the document with serde_json straight
//! into a tree whose nodes are `allocator_api2` collections allocated in that epoch
//! ([`tree::NodeSeed`], no intermediate `serde_json::Value`), walk the tree counting every object
//! key in an epoch-allocated `hashbrown` map ([`tree::count`]), drop the tree and leave the
//! domain. The request's latency (enter to leave) goes into an HDR histogram.
//!
//! That is `--alloc api2` (the default). With `--alloc global` the request is plain
//! `serde_json::from_slice::<serde_json::Value>` and the same counting with std collections
//! ([`tree::count_value`]) inside the batch epoch's scope ([`temporal_slab::global::scope`]):
//! the `tslab` binary's `#[global_allocator]` is [`temporal_slab::global::EpochGlobal`], which
//! sends every request of at most 768 bytes made in the scope to the epoch and everything else
//! (the rest of the tool included) to the system allocator. The batch epochs then come from
//! [`temporal_slab::global::instance`] instead of the demo's own allocator, and the endpoint, the
//! snapshot and the report describe that instance. Both modes count the same; on the real corpus
//! neither is clearly faster on the development VM (see `docs/results/demo-bench.md`), so the
//! default stays `api2`. The workers, batches and timing are [`workload`]'s, which `bench demo`
//! runs with other allocators.
//!
//! ## Batches and epochs
//! Workers (`--workers`, default 2) take **batches** of `--batch` requests (default 128) of one
//! document kind from a shared budget (`--requests`, or until `--duration` has passed); batches
//! are numbered from 0 in the order they start. Per batch a worker opens its own epoch with
//! [`open_batch_epoch`]: [`SlabAllocator::epoch_advance_held`], which opens it with one
//! reference taken, held for as long as the batch runs, and the label
//! (the kind: the file name or the generated kind). It runs the batch's requests in it, then
//! [`BatchEpoch::close`] closes it with [`SlabAllocator::epoch_close`] (which hands the epoch's
//! now empty slabs back to the kernel) and drops the batch's reference.
//!
//! `epoch_advance` only reopens a ring slot whose epoch has drained (CLOSING, refcount 0, no live
//! objects), and the batch's reference keeps its epoch from draining, so however many epochs the
//! other workers advance meanwhile (15 or 1500), the ring never closes or reuses a running
//! batch's epoch. The workers need no coordinator. Should every other slot be held,
//! `epoch_advance` refuses with `EpochRingFull`; a worker then retries for up to
//! [`RING_WAIT`] and fails with [`Error::EpochRingFull`]. In the demo that cannot happen: at most
//! `--workers` (up to 14) batches and one leaked epoch hold slots, and a worker that advances
//! holds none itself, so at most 14 of the 15 slots besides the current one are held.
//!
//! ## The injected leak
//! With `--inject-leak` (or `--inject-leak-at N`, batch `N` instead of the first batch), the
//! leaking batch is labeled `leak:` + the kind's label and its last request's domain guard is
//! `std::mem::forget`-ten (and its tree with it, as if a handler were stuck holding it). After
//! the batch's close and release the epoch stays CLOSING with refcount 1 and live objects, so
//! `epoch_advance` skips its slot for the rest of the run: it keeps its label, refcount, live
//! objects and age on `/metrics` and `/stats.json` while every later batch advances the ring,
//! it is in the final snapshot (`--json-out`) and report ([`LeakedEpoch`]), and it comes first
//! in `tslab top --epochs --by refcount`.
//!
//! ## Observing it
//! While it runs, `/metrics` and `/stats.json` are served on `--listen` (default
//! 127.0.0.1:2112; port 0 picks a free port; `none` disables), a progress bar is drawn on
//! stderr when it is a terminal, and the process RSS is sampled every 100 ms. The
//! [`DemoReport`] has requests/s, latency percentiles, the RSS curve, the top epochs of the
//! final snapshot and the leaked epoch.

pub mod corpus;
mod report;
pub mod tree;
pub mod workload;

use std::fmt;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use temporal_slab::{EPOCH_COUNT, Epoch, EpochId, MAX_LABEL_LEN, SlabAllocator};

use crate::snapshot::Snapshot;
use crate::{Error, Result};

pub use corpus::{Corpus, Kind};
use report::human_bytes;
pub use report::{DemoReport, KindReport, Latency, LeakedEpoch, RssReport, RssSample};
pub use tree::Counts;
pub use workload::{Handler, Leak, Outcome, Plan, RequestError};

/// Requests run when neither `--requests` nor `--duration` is given.
pub const DEFAULT_REQUESTS: u64 = 20_000;

/// Default `--batch`: requests per epoch.
pub const DEFAULT_BATCH: usize = 128;

/// Largest `--workers`: every worker holds one of the ring's 16 slots while its batch runs and
/// the leak holds one, and `epoch_advance` needs a drained slot besides the current one.
pub const MAX_WORKERS: usize = EPOCH_COUNT - 2;

/// How long a demo worker waits (in [`open_batch_epoch`]) for a ring slot to drain.
pub const RING_WAIT: Duration = Duration::from_secs(5);

/// Time between two `epoch_advance` tries while the ring is full.
const RING_RETRY: Duration = Duration::from_millis(2);

/// Prefix of the leaked epoch's label.
pub const LEAK_LABEL_PREFIX: &str = "leak:";

/// Time between two RSS samples.
pub const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// Where the demo serves `/metrics` and `/stats.json`: `none` (or `off`) or an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    /// No endpoint.
    Off,
    /// Listen on this address (port 0: a free port, see [`DemoReport::listen`]).
    On(SocketAddr),
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Listen, String> {
        match s.trim() {
            "none" | "off" => Ok(Listen::Off),
            t => t
                .parse()
                .map(Listen::On)
                .map_err(|e| format!("{s:?} is not an address like 127.0.0.1:2112 (or none): {e}")),
        }
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Off => f.write_str("none"),
            Listen::On(a) => write!(f, "{a}"),
        }
    }
}

/// Parses `"30s"`, `"1m 30s"`, `"250ms"` (humantime) or plain seconds (`"2"`, `"0.5"`): the
/// duration vocabulary of every tool ([`cli_support::parse_duration`]).
///
/// # Errors
/// A message for anything else.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    cli_support::parse_duration(s)
}

/// How `tslab demo` allocates each request's document (`--alloc`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AllocMode {
    /// The epoch tree: `allocator_api2` vectors and a `hashbrown` map on the batch's
    /// [`Epoch`] of the demo's own allocator ([`tree`]).
    #[default]
    Api2,
    /// Plain `serde_json::from_slice::<serde_json::Value>` and std collections inside the batch's
    /// epoch scope ([`temporal_slab::global::scope`]): needs the process's
    /// `#[global_allocator]` to be [`temporal_slab::global::EpochGlobal`] (the `tslab`
    /// binary's is); the epochs are [`temporal_slab::global::instance`]'s.
    Global,
}

impl AllocMode {
    /// The name `--alloc` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            AllocMode::Api2 => "api2",
            AllocMode::Global => "global",
        }
    }
}

/// Arguments of `tslab demo` (also usable from code: [`DemoArgs::default`] has the CLI's
/// defaults).
#[derive(Clone, Debug, clap::Args)]
pub struct DemoArgs {
    /// JSON documents to serve as requests: a .json file (one request), an NDJSON file (one
    /// request per line) or a directory of them. Default: a generated corpus.
    #[arg(long, value_name = "PATH")]
    pub corpus: Option<PathBuf>,
    /// Worker threads (1 to 14).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Stop after this many requests (default 20000 unless --duration is given).
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,
    /// Stop after this long (e.g. 30s, 2m); with --requests, whichever comes first.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Requests per batch; each batch runs in its own epoch, closed when the batch is done.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BATCH)]
    pub batch: usize,
    /// How each request's document is allocated in the batch's epoch.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = AllocMode::Api2)]
    pub alloc: AllocMode,
    /// Leak one epoch domain on purpose, in the first batch (same as --inject-leak-at 0): its
    /// last request never leaves its domain, so that epoch stays CLOSING with refcount 1 and
    /// live objects (label "leak:..."), visible however many batches follow.
    #[arg(long)]
    pub inject_leak: bool,
    /// Leak in batch N instead of the first (0-based, in the order batches start); implies
    /// --inject-leak.
    #[arg(long, value_name = "N")]
    pub inject_leak_at: Option<u64>,
    /// Serve /metrics and /stats.json on this address while running (port 0: any free port;
    /// "none" to disable).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:2112")]
    pub listen: Listen,
    /// Write the final stats snapshot (schema v1 JSON) to FILE.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
    /// After the work is done, keep serving the endpoint this long (e.g. 60s) so a scraper sees
    /// the final state, the leak included (ignored with --listen none).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "0")]
    pub linger: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bar and no status lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

impl Default for DemoArgs {
    fn default() -> DemoArgs {
        DemoArgs {
            corpus: None,
            workers: 2,
            requests: None,
            duration: None,
            batch: DEFAULT_BATCH,
            alloc: AllocMode::Api2,
            inject_leak: false,
            inject_leak_at: None,
            listen: Listen::On(SocketAddr::from(([127, 0, 0, 1], 2112))),
            json_out: None,
            linger: Duration::ZERO,
            json: false,
            quiet: false,
        }
    }
}

impl DemoArgs {
    /// The batch that leaks: `--inject-leak-at N`, else 0 with `--inject-leak`, else none.
    pub fn leak_batch(&self) -> Option<u64> {
        self.inject_leak_at.or(self.inject_leak.then_some(0))
    }
}

/// Loads the corpus (`--corpus`, or the generated one) and runs the demo; see [`run_corpus`].
///
/// # Errors
/// As [`Corpus::load`] and [`run_corpus`].
pub fn run(args: &DemoArgs) -> Result<DemoReport> {
    check_args(args)?;
    let corpus = match &args.corpus {
        Some(path) => Corpus::load(path)?,
        None => Corpus::generated(corpus::GENERATED_PER_KIND),
    };
    run_corpus(args, &corpus)
}

fn check_args(args: &DemoArgs) -> Result<()> {
    if args.workers == 0 || args.workers > MAX_WORKERS {
        return Err(Error::Usage(format!(
            "--workers {} is out of range (1 to {MAX_WORKERS}: each worker holds one of the \
             {EPOCH_COUNT} epoch slots)",
            args.workers
        )));
    }
    if args.batch == 0 {
        return Err(Error::Usage("--batch must be at least 1".into()));
    }
    if args.requests == Some(0) {
        return Err(Error::Usage("--requests must be at least 1".into()));
    }
    if args.duration == Some(Duration::ZERO) {
        return Err(Error::Usage("--duration must be longer than 0".into()));
    }
    if let (Some(at), None) = (args.leak_batch(), args.duration) {
        let requests = args.requests.unwrap_or(DEFAULT_REQUESTS);
        let batches = requests.div_ceil(args.batch as u64);
        if at >= batches {
            return Err(Error::Usage(format!(
                "--inject-leak-at {at} is out of range: {requests} requests in batches of {} \
                 are batches 0 to {}",
                args.batch,
                batches - 1
            )));
        }
    }
    Ok(())
}

/// Runs the demo on `corpus` (`args.corpus` is ignored): serves the endpoint, runs the
/// workers, takes the final snapshot, writes `--json-out`, lingers, and returns the report.
///
/// `--json-out` is checked before the work (its temporary file is created beside it) and
/// written atomically after it; should that final write fail, the report is still returned,
/// with the error in [`DemoReport::json_out_error`] (`tslab demo` prints the report, then the
/// error, and exits 2).
///
/// # Errors
/// [`Error::Usage`] for out-of-range arguments; [`Error::Io`] naming the address when the
/// endpoint cannot listen, or naming the file when `--json-out`'s directory is missing or not
/// writable; [`Error::NotRegularFile`] when `--json-out` names an existing non-regular file;
/// [`Error::Alloc`] when the allocator cannot reserve its address space or refuses an epoch
/// operation.
pub fn run_corpus(args: &DemoArgs, corpus: &Corpus) -> Result<DemoReport> {
    check_args(args)?;
    // Before any work: a --json-out that cannot be written fails now, not after the run.
    let json_out = args
        .json_out
        .as_deref()
        .map(crate::output::AtomicFile::create)
        .transpose()?;
    match args.alloc {
        AllocMode::Api2 => {
            let alloc = Arc::new(SlabAllocator::new()?);
            let served = alloc.clone();
            let source = Box::new(move || Ok(Snapshot::of(&served)));
            run_on(args, corpus, json_out, &alloc, source)
        }
        AllocMode::Global => {
            let alloc = global_instance()?;
            let source = Box::new(move || Ok(Snapshot::of(alloc)));
            run_on(args, corpus, json_out, alloc, source)
        }
    }
}

/// The process-wide allocator of [`temporal_slab::global`], once it is checked that the
/// process's global allocator routes a scope's requests to it (a `Box` made inside a scope of
/// the current epoch lands in its reservation).
///
/// # Errors
/// [`Error::Usage`] when the allocator cannot be created or the process's `#[global_allocator]`
/// is not `EpochGlobal` (or a switch that forwards to it).
pub fn global_instance() -> Result<&'static SlabAllocator> {
    let alloc = temporal_slab::global::instance().ok_or_else(|| {
        Error::Usage("--alloc global: temporal-slab's global allocator could not be created".into())
    })?;
    let routed = temporal_slab::global::scope(alloc.epoch_current(), || {
        let probe = std::hint::black_box(Box::new([0u8; 64]));
        temporal_slab::global::owns(probe.as_ptr())
    });
    if !routed {
        return Err(Error::Usage(
            "--alloc global needs temporal_slab::global::EpochGlobal as the process's global \
             allocator (the tslab binary has it)"
                .into(),
        ));
    }
    Ok(alloc)
}

/// [`run_corpus`] once the allocator is chosen: `alloc` is the allocator whose epochs the
/// batches use and whose stats `source` serves on the endpoint.
fn run_on(
    args: &DemoArgs,
    corpus: &Corpus,
    json_out: Option<crate::output::AtomicFile>,
    alloc: &SlabAllocator,
    source: Box<crate::endpoint::SnapshotFn>,
) -> Result<DemoReport> {
    let endpoint = match args.listen {
        Listen::Off => None,
        Listen::On(addr) => Some(
            crate::endpoint::serve_with(addr, crate::exposition::DEFAULT_PREFIX.to_owned(), source)
                .map_err(|source| Error::Io {
                    path: addr.to_string(),
                    source,
                })?,
        ),
    };
    let listen = endpoint.as_ref().map(crate::endpoint::Endpoint::local_addr);
    let status = !args.quiet;
    if status {
        eprintln!(
            "tslab demo: {} documents ({}) from {}, {} workers, batch {}{}{}",
            corpus.documents(),
            human_bytes(corpus.bytes()),
            corpus.source(),
            args.workers,
            args.batch,
            args.leak_batch()
                .map_or_else(String::new, |b| format!(", leaking in batch {b}")),
            listen.map_or_else(String::new, |a| format!(
                "; metrics on http://{a}/metrics and http://{a}/stats.json"
            )),
        );
    }
    // The fresh allocator's epoch 0 is never used: close it, so every epoch in the snapshots
    // is one of ours.
    alloc.epoch_close(alloc.epoch_current())?;

    let total = args.requests.unwrap_or(if args.duration.is_some() {
        u64::MAX
    } else {
        DEFAULT_REQUESTS
    });
    let kinds = corpus.kinds();
    let progress = progress_bar(args, total);
    let plan = Plan {
        corpus,
        workers: args.workers,
        batch: args.batch,
        requests: total,
        duration: args.duration,
        leak_at: args.leak_batch(),
        rss_interval: RSS_SAMPLE_INTERVAL,
    };
    let mut show = |done: u64, since: Duration| match args.duration {
        Some(d) if args.requests.is_none() => {
            progress.set_position(since.as_millis().min(d.as_millis()) as u64);
            progress.set_message(format!("{done} requests"));
        }
        _ => progress.set_position(done),
    };
    let handler = EpochHandler {
        alloc,
        mode: args.alloc,
        ring_wait: RING_WAIT,
    };
    let merged = workload::run(&plan, &handler, &mut show)?;
    progress.finish_and_clear();
    let elapsed = merged.elapsed;
    let snapshot = Snapshot::of(alloc);
    let leaked = merged.leaked.map(|leak| LeakedEpoch {
        epochs_opened_after: snapshot
            .epoch_advances
            .saturating_sub(leak.advances_at_open),
        ..leak.epoch
    });
    // A failed final write does not lose the report: it is returned in `json_out_error`.
    let json_out_error = json_out
        .and_then(|f| {
            f.commit((snapshot.to_json_pretty() + "\n").as_bytes())
                .err()
        })
        .map(|e| e.to_string());
    let mut top_epochs = snapshot.epochs().to_vec();
    top_epochs.sort_by(|a, b| {
        (
            b.refcount,
            b.estimated_rss_bytes,
            b.live_objects,
            b.epoch_era,
        )
            .cmp(&(
                a.refcount,
                a.estimated_rss_bytes,
                a.live_objects,
                a.epoch_era,
            ))
    });
    top_epochs.truncate(5);
    let h = &merged.hist;
    let report = DemoReport {
        corpus: corpus.source().to_owned(),
        documents: corpus.documents(),
        corpus_bytes: corpus.bytes(),
        kinds: kinds
            .iter()
            .zip(&merged.per_kind)
            .map(|(k, &requests)| KindReport {
                label: k.label().to_owned(),
                documents: k.len(),
                requests,
            })
            .collect(),
        workers: args.workers,
        batch: args.batch,
        requests: merged.requests,
        elapsed_sec: elapsed.as_secs_f64(),
        requests_per_sec: merged.requests as f64 / elapsed.as_secs_f64().max(1e-9),
        bytes_parsed: merged.bytes,
        latency: if h.is_empty() {
            Latency::default()
        } else {
            Latency {
                p50_ns: h.value_at_quantile(0.50),
                p99_ns: h.value_at_quantile(0.99),
                p999_ns: h.value_at_quantile(0.999),
                max_ns: h.max(),
                mean_ns: h.mean(),
            }
        },
        counts: merged.counts,
        batches: merged.batches,
        epochs_closed: merged.batches,
        rss: RssReport {
            start_bytes: merged.rss_start,
            peak_bytes: merged
                .samples
                .iter()
                .map(|s| s.rss_bytes)
                .max()
                .unwrap_or(0),
            end_bytes: merged.rss_end,
            samples: merged.samples,
        },
        top_epochs,
        inject_leak_at: args.leak_batch(),
        leaked,
        listen,
        json_out: args.json_out.clone(),
        json_out_error,
        snapshot,
    };
    if let Some(endpoint) = &endpoint {
        if !args.linger.is_zero() {
            if status {
                eprintln!(
                    "tslab demo: done ({} requests); serving the final state on http://{}/metrics \
                     for {}",
                    report.requests,
                    endpoint.local_addr(),
                    humantime::format_duration(args.linger)
                );
            }
            std::thread::sleep(args.linger);
        }
    }
    drop(endpoint);
    Ok(report)
}

fn progress_bar(args: &DemoArgs, total: u64) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    if args.quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (len, template) = match (args.requests, args.duration) {
        (None, Some(d)) => (
            d.as_millis() as u64,
            "{spinner} [{elapsed_precise}] {wide_bar} {percent}% of the duration, {msg}",
        ),
        _ => (
            total,
            "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} requests ({per_sec}, eta {eta})",
        ),
    };
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// `leak:` + `label`, cut at a char boundary to the allocator's 31 bytes.
fn leak_label(label: &str) -> String {
    let mut text = format!("{LEAK_LABEL_PREFIX}{label}");
    let mut end = text.len().min(MAX_LABEL_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

/// One batch's epoch, held by a reference of the batch's own ([`SlabAllocator::epoch_advance_held`])
/// from [`open_batch_epoch`] to [`BatchEpoch::close`]. While the reference is held the epoch
/// cannot drain, so `epoch_advance` skips its slot: no other worker's advance closes or reuses
/// it, however many it makes. Dropped without `close` (an error path), it closes the epoch and
/// drops the reference all the same, so a failed batch does not hold the ring.
#[derive(Debug)]
pub struct BatchEpoch<'a> {
    alloc: &'a SlabAllocator,
    id: EpochId,
    held: bool,
}

impl BatchEpoch<'_> {
    /// The batch's epoch.
    pub fn id(&self) -> EpochId {
        self.id
    }

    /// Closes the epoch ([`SlabAllocator::epoch_close`]: its empty slabs are recycled), then
    /// drops the batch's reference; returns the slabs the close recycled. Closing first means
    /// the close always finds the batch's own era (the reference still pins it); once the
    /// reference is gone the epoch drains, unless a leaked domain still holds it or objects are
    /// still live, and the ring may reuse its slot.
    ///
    /// # Errors
    /// [`Error::Alloc`] when the allocator refuses the close or the release.
    pub fn close(mut self) -> Result<u64> {
        self.held = false;
        let closed = self.alloc.epoch_close(self.id);
        let released = self.alloc.dec_refcount(self.id);
        let recycled = closed?;
        released?;
        Ok(recycled)
    }
}

impl Drop for BatchEpoch<'_> {
    fn drop(&mut self) {
        if self.held {
            let _ = self.alloc.epoch_close(self.id);
            let _ = self.alloc.dec_refcount(self.id);
        }
    }
}

/// Opens a new epoch for one batch with [`SlabAllocator::epoch_advance_held`]: the epoch comes
/// with one reference taken, held for the batch's duration, so no other worker's advances can
/// close or reuse it, and gets `label`. While every other ring slot is held (`EpochRingFull`),
/// it tries again every 2 ms for up to `wait`.
///
/// # Errors
/// [`Error::EpochRingFull`] when no slot drained within `wait` (the allocator counts each
/// refusal in `epoch_advance_refused`); [`Error::Alloc`] for any other refusal.
pub fn open_batch_epoch<'a>(
    alloc: &'a SlabAllocator,
    label: &str,
    wait: Duration,
) -> Result<BatchEpoch<'a>> {
    let start = Instant::now();
    loop {
        let refused = match alloc.epoch_advance_held() {
            Ok(id) => {
                let batch = BatchEpoch {
                    alloc,
                    id,
                    held: true,
                };
                alloc.set_label(id, label)?;
                return Ok(batch);
            }
            Err(e @ temporal_slab::Error::EpochRingFull { .. }) => e,
            Err(e) => return Err(e.into()),
        };
        let waited = start.elapsed();
        if waited >= wait {
            return Err(Error::EpochRingFull {
                waited: Duration::from_millis(waited.as_millis() as u64),
                source: refused,
            });
        }
        std::thread::sleep(RING_RETRY.min(wait - waited));
    }
}

/// The demo's handler: each batch is an epoch of `alloc`, opened with [`open_batch_epoch`] and
/// closed with [`BatchEpoch::close`]; a request enters the epoch's domain and then, by `mode`,
/// builds the epoch tree (`api2`) or parses a `serde_json::Value` inside the epoch's scope
/// (`global`), counts the keys, drops what it built and leaves the domain.
///
/// `bench demo` runs its temporal-slab peers with it ([`EpochHandler::new`]).
#[derive(Debug)]
pub struct EpochHandler<'a> {
    alloc: &'a SlabAllocator,
    mode: AllocMode,
    /// How long a worker waits for a drained ring slot.
    ring_wait: Duration,
}

impl<'a> EpochHandler<'a> {
    /// The handler of `tslab demo --alloc mode` on `alloc`: batches wait up to [`RING_WAIT`] for
    /// a ring slot.
    pub fn new(alloc: &'a SlabAllocator, mode: AllocMode) -> EpochHandler<'a> {
        EpochHandler {
            alloc,
            mode,
            ring_wait: RING_WAIT,
        }
    }
}

/// A running batch of [`EpochHandler`]: its held epoch, and what to report if it leaks.
#[derive(Debug)]
pub struct EpochBatch<'h> {
    held: BatchEpoch<'h>,
    epoch: Epoch<'h>,
    leak: Option<Leak>,
}

impl Handler for EpochHandler<'_> {
    type Batch<'h>
        = EpochBatch<'h>
    where
        Self: 'h;

    fn open_batch(&self, batch: u64, label: &str, leak: bool) -> Result<EpochBatch<'_>> {
        let label = if leak {
            leak_label(label)
        } else {
            label.to_owned()
        };
        let held = open_batch_epoch(self.alloc, &label, self.ring_wait)?;
        let id = held.id();
        let leak = leak.then(|| Leak {
            advances_at_open: self.alloc.stats().epoch_advances,
            epoch: LeakedEpoch {
                epoch_id: id.index() as u32,
                epoch_era: id.era(),
                label,
                batch,
                epochs_opened_after: 0,
            },
        });
        Ok(EpochBatch {
            epoch: self.alloc.epoch(id),
            held,
            leak,
        })
    }

    fn request(
        &self,
        batch: &mut EpochBatch<'_>,
        doc: &[u8],
        leak: bool,
    ) -> std::result::Result<Counts, RequestError> {
        let id = batch.held.id();
        let domain = self.alloc.enter(id).map_err(RequestError::Alloc)?;
        let counts = match self.mode {
            AllocMode::Api2 => {
                let tree = tree::parse_in(doc, &batch.epoch).map_err(RequestError::Parse)?;
                let counts = tree::count(&tree, &batch.epoch).map_err(RequestError::Walk)?;
                if leak {
                    std::mem::forget(tree);
                }
                counts
            }
            AllocMode::Global => temporal_slab::global::scope(id, || {
                let value: serde_json::Value =
                    serde_json::from_slice(doc).map_err(RequestError::Parse)?;
                let counts = tree::count_value(&value);
                if leak {
                    std::mem::forget(value);
                }
                Ok::<_, RequestError>(counts)
            })?,
        };
        if leak {
            std::mem::forget(domain);
        } else {
            drop(domain);
        }
        Ok(counts)
    }

    fn close_batch(&self, batch: EpochBatch<'_>) -> Result<Option<Leak>> {
        batch.held.close()?;
        Ok(batch.leak)
    }
}
