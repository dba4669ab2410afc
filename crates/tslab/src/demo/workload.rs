//! The request workload itself, apart from any allocator: workers claiming batches of requests
//! from a shared budget, a [`Handler`] that opens a batch, serves its requests and closes it,
//! per-request latency in an HDR histogram and the process RSS sampled while the workers run.
//!
//! `tslab demo` runs it with a handler whose batches are temporal-slab epochs
//! (`--alloc api2`: epoch trees; `--alloc global`: `serde_json::Value` inside the batch's epoch
//! scope); `bench demo` runs the same [`Plan`] with other handlers (`serde_json::Value` on
//! glibc, mimalloc or jemalloc, a bumpalo arena per request), so every peer serves the same
//! requests in the same batches.
//!
//! What a [`Plan`] fixes: the corpus, the workers, the batch size, the request budget (or a
//! deadline) and the batch that leaks. Batches are numbered from 0 in the order they start;
//! batch `b` serves documents of kind `b % kinds`, each kind's documents in turn (one cursor per
//! kind shared by the workers). Latency is measured around [`Handler::request`] alone: opening
//! and closing a batch are outside it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::corpus::Corpus;
use super::report::{LeakedEpoch, RssSample};
use super::tree::{AllocFailed, Counts};
use crate::{Error, Result};

/// What serves the requests of a batch: opens the batch, handles each request, closes the
/// batch. Called from every worker thread at once (each batch on one thread).
pub trait Handler: Sync {
    /// One running batch's state (its epoch, its arena, ...).
    type Batch<'h>
    where
        Self: 'h;

    /// Opens batch number `batch` (0-based, in start order), whose requests are documents of the
    /// kind labelled `label`; `leak` when its last request is to leak.
    ///
    /// # Errors
    /// Whatever the handler cannot do (an epoch it cannot open, ...); the run stops.
    fn open_batch(&self, batch: u64, label: &str, leak: bool) -> Result<Self::Batch<'_>>;

    /// Serves one request: `doc` is one JSON document of the batch's kind. With `leak`, the
    /// request leaks what it allocated (it is the last of a leaking batch). Timed.
    ///
    /// # Errors
    /// Why the request failed; the run stops, naming the document.
    fn request(
        &self,
        batch: &mut Self::Batch<'_>,
        doc: &[u8],
        leak: bool,
    ) -> std::result::Result<Counts, RequestError>;

    /// Closes the batch after its last request; returns the leaked epoch when the batch leaked.
    ///
    /// # Errors
    /// Whatever the handler cannot do; the run stops.
    fn close_batch(&self, batch: Self::Batch<'_>) -> Result<Option<Leak>>;
}

/// The epoch a leaking batch left behind, as [`Handler::close_batch`] returns it.
#[derive(Clone, Debug)]
pub struct Leak {
    /// The epoch (its `epochs_opened_after` is filled in by whoever reads the final stats).
    pub epoch: LeakedEpoch,
    /// The allocator's `epoch_advances` just after the epoch opened.
    pub advances_at_open: u64,
}

/// Why one request failed (after the corpus was validated, only allocation can fail).
#[derive(Debug)]
#[non_exhaustive]
pub enum RequestError {
    /// The allocator refused the request's epoch domain.
    Alloc(temporal_slab::Error),
    /// serde_json failed (an allocation failed while building the tree, or the document is not
    /// what the corpus check saw).
    Parse(serde_json::Error),
    /// Counting the keys could not allocate.
    Walk(AllocFailed),
}

impl RequestError {
    /// The run's error for this request's failure; `origin` names the document.
    pub fn at(self, origin: &str) -> Error {
        match self {
            RequestError::Alloc(e) => Error::Alloc(e),
            RequestError::Parse(e) => Error::Request(format!("{origin}: request failed: {e}")),
            RequestError::Walk(e) => Error::Request(format!("{origin}: request failed: {e}")),
        }
    }
}

/// The shape of a run, the same whichever handler serves it.
#[derive(Clone, Copy, Debug)]
pub struct Plan<'c> {
    /// The documents.
    pub corpus: &'c Corpus,
    /// Worker threads (at least 1).
    pub workers: usize,
    /// Requests per batch (at least 1).
    pub batch: usize,
    /// Requests to serve in all (`u64::MAX`: until the deadline).
    pub requests: u64,
    /// Stop claiming batches, and end running ones early, after this long.
    pub duration: Option<Duration>,
    /// The batch whose last request leaks (it runs all its requests even past the deadline).
    pub leak_at: Option<u64>,
    /// Time between two RSS samples (the first is taken before the workers start, the last
    /// after they finish).
    pub rss_interval: Duration,
}

/// What a run did, summed over the workers.
#[derive(Debug)]
pub struct Outcome {
    /// Request latencies, nanoseconds (1 ns to 1 hour, 3 significant digits).
    pub hist: Histogram<u64>,
    /// Requests served.
    pub requests: u64,
    /// JSON bytes parsed.
    pub bytes: u64,
    /// Batches run (opened and closed).
    pub batches: u64,
    /// Sums of the per-request counts (`distinct_keys` and `top_key_count` are maxima).
    pub counts: Counts,
    /// Requests per kind, in corpus order.
    pub per_kind: Vec<u64>,
    /// The leaked epoch, if a batch leaked one.
    pub leaked: Option<Leak>,
    /// From the workers' start to the last batch's close.
    pub elapsed: Duration,
    /// RSS before the workers started, bytes (0 when /proc is unreadable).
    pub rss_start: u64,
    /// RSS after the last batch closed, bytes.
    pub rss_end: u64,
    /// RSS over the run, the first and last samples included (at most 4096: a long run keeps
    /// every other sample and samples half as often, as many times as needed).
    pub samples: Vec<RssSample>,
}

/// Runs `plan` with `handler`: starts the workers, samples the RSS every `plan.rss_interval`
/// and calls `progress(requests done, time since start)` about every 10 ms on the calling
/// thread until they are done.
///
/// # Errors
/// [`Error::Io`] when a worker thread cannot be spawned; the first error of a worker (the
/// others stop at their next request). A worker's panic is resumed on the calling thread.
pub fn run<H: Handler>(
    plan: &Plan<'_>,
    handler: &H,
    progress: &mut dyn FnMut(u64, Duration),
) -> Result<Outcome> {
    let kinds = plan.corpus.kinds();
    let rss_start = temporal_slab::process_rss_bytes().unwrap_or(0);
    let mut samples = vec![RssSample {
        t_sec: 0.0,
        rss_bytes: rss_start,
    }];
    let start = Instant::now();
    let shared = Shared {
        handler,
        corpus: plan.corpus,
        budget: AtomicU64::new(plan.requests),
        leak_at: plan.leak_at,
        next_batch: AtomicU64::new(0),
        cursors: kinds.iter().map(|_| AtomicUsize::new(0)).collect(),
        done: AtomicU64::new(0),
        deadline: plan.duration.map(|d| start + d),
        abort: AtomicBool::new(false),
        batch: plan.batch,
    };
    let outcomes: Vec<std::thread::Result<Result<WorkerOut>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..plan.workers)
            .map(|w| {
                let shared = &shared;
                std::thread::Builder::new()
                    .name(format!("demo-worker-{w}"))
                    .spawn_scoped(s, move || shared.worker())
            })
            .collect::<std::io::Result<_>>()
            .map_err(|source| Error::Io {
                path: "spawning demo workers".into(),
                source,
            })?;
        let mut interval = plan.rss_interval;
        let mut next_sample = start + interval;
        loop {
            let finished = handles.iter().all(|h| h.is_finished());
            let now = Instant::now();
            if now >= next_sample && !finished {
                samples.push(RssSample {
                    t_sec: (now - start).as_secs_f64(),
                    rss_bytes: temporal_slab::process_rss_bytes().unwrap_or(0),
                });
                if samples.len() >= 4096 {
                    // Long run: keep every other sample, sample half as often.
                    let mut i = 0;
                    samples.retain(|_| {
                        i += 1;
                        i % 2 == 1
                    });
                    interval *= 2;
                }
                next_sample = now + interval;
            }
            progress(shared.done.load(Ordering::Relaxed), now - start);
            if finished {
                break;
            }
            let until_sample = next_sample.saturating_duration_since(Instant::now());
            std::thread::sleep(until_sample.min(Duration::from_millis(10)));
        }
        Ok::<_, Error>(handles.into_iter().map(|h| h.join()).collect())
    })?;
    let elapsed = start.elapsed();

    let mut merged = WorkerOut::new(kinds.len());
    let mut first_error = None;
    for outcome in outcomes {
        match outcome {
            Ok(Ok(out)) => merged.merge(out),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let rss_end = temporal_slab::process_rss_bytes().unwrap_or(0);
    samples.push(RssSample {
        t_sec: elapsed.as_secs_f64(),
        rss_bytes: rss_end,
    });
    Ok(Outcome {
        hist: merged.hist,
        requests: merged.requests,
        bytes: merged.bytes,
        batches: merged.batches,
        counts: merged.counts,
        per_kind: merged.per_kind,
        leaked: merged.leaked,
        elapsed,
        rss_start,
        rss_end,
        samples,
    })
}

struct Shared<'a, H> {
    handler: &'a H,
    corpus: &'a Corpus,
    /// Requests not yet claimed by a batch.
    budget: AtomicU64,
    /// The batch that leaks.
    leak_at: Option<u64>,
    /// Number of the next batch to start.
    next_batch: AtomicU64,
    /// Next document of each kind.
    cursors: Vec<AtomicUsize>,
    /// Requests done, for the progress bar.
    done: AtomicU64,
    deadline: Option<Instant>,
    /// A worker failed: the others stop.
    abort: AtomicBool,
    batch: usize,
}

/// What one worker did.
struct WorkerOut {
    hist: Histogram<u64>,
    requests: u64,
    bytes: u64,
    batches: u64,
    counts: Counts,
    per_kind: Vec<u64>,
    leaked: Option<Leak>,
}

impl WorkerOut {
    fn new(kinds: usize) -> WorkerOut {
        WorkerOut {
            // 1 ns to 1 hour, 3 significant digits.
            hist: Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
                .expect("static histogram bounds are valid"),
            requests: 0,
            bytes: 0,
            batches: 0,
            counts: Counts::default(),
            per_kind: vec![0; kinds],
            leaked: None,
        }
    }

    fn merge(&mut self, other: WorkerOut) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.hist.add(&other.hist);
        self.requests += other.requests;
        self.bytes += other.bytes;
        self.batches += other.batches;
        self.counts.accumulate(&other.counts);
        for (a, b) in self.per_kind.iter_mut().zip(&other.per_kind) {
            *a += b;
        }
        if other.leaked.is_some() {
            self.leaked = other.leaked;
        }
    }
}

/// Stops the other workers when dropped during a panic.
struct AbortOnPanic<'s>(&'s AtomicBool);

impl Drop for AbortOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Release);
        }
    }
}

impl<H: Handler> Shared<'_, H> {
    fn stopping(&self) -> bool {
        self.abort.load(Ordering::Acquire) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Claims up to one batch of requests from the budget; 0 when it is spent.
    fn claim(&self) -> usize {
        let batch = self.batch as u64;
        match self
            .budget
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                (left > 0).then(|| left - left.min(batch))
            }) {
            Ok(left) => left.min(batch) as usize,
            Err(_) => 0,
        }
    }

    fn worker(&self) -> Result<WorkerOut> {
        let _abort = AbortOnPanic(&self.abort);
        let mut out = WorkerOut::new(self.corpus.kinds().len());
        let result = self.work(&mut out);
        if result.is_err() {
            self.abort.store(true, Ordering::Release);
        }
        result.map(|()| out)
    }

    fn work(&self, out: &mut WorkerOut) -> Result<()> {
        let kinds = self.corpus.kinds().len() as u64;
        while !self.stopping() {
            let n = self.claim();
            if n == 0 {
                break;
            }
            let batch = self.next_batch.fetch_add(1, Ordering::Relaxed);
            let kind = (batch % kinds) as usize;
            self.run_batch(batch, kind, n, self.leak_at == Some(batch), out)?;
        }
        Ok(())
    }

    /// Runs batch `batch`: opens it, serves `n` requests of `kind`, closes it. With `leak`, the
    /// last request leaks, and the batch runs all `n` requests even past the deadline, so the
    /// leak always happens.
    fn run_batch(
        &self,
        batch: u64,
        kind: usize,
        n: usize,
        leak: bool,
        out: &mut WorkerOut,
    ) -> Result<()> {
        let k = &self.corpus.kinds()[kind];
        let mut state = self.handler.open_batch(batch, k.label(), leak)?;
        for i in 0..n {
            if !leak && self.stopping() {
                break;
            }
            let d = self.cursors[kind].fetch_add(1, Ordering::Relaxed) % k.len();
            let doc = k.doc(d);
            let t0 = Instant::now();
            let counts = self
                .handler
                .request(&mut state, doc, leak && i + 1 == n)
                .map_err(|e| e.at(&k.origin(d)))?;
            out.hist
                .saturating_record((t0.elapsed().as_nanos() as u64).max(1));
            out.requests += 1;
            out.bytes += doc.len() as u64;
            out.per_kind[kind] += 1;
            out.counts.accumulate(&counts);
            self.done.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(leak) = self.handler.close_batch(state)? {
            out.leaked = Some(leak);
        }
        out.batches += 1;
        Ok(())
    }
}
