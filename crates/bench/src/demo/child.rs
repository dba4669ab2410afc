//! One peer's run of the demo workload, in a child process (`bench child-demo`): the handlers of
//! the peers that are not `tslab demo`'s own, and the JSON line the child prints.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};
use temporal_slab::SlabAllocator;
use tslab::demo::workload::{self, Handler, Leak, Plan, RequestError};
use tslab::demo::{AllocMode, Corpus, Counts, EpochHandler, tree};

use super::Peer;

/// Arguments of `bench child-demo`.
#[derive(Debug, Args)]
pub struct ChildDemoArgs {
    /// The peer to run.
    #[arg(long, value_enum)]
    pub peer: Peer,
    /// The corpus: a directory or file of JSON documents, or `generated`.
    #[arg(long, value_name = "PATH")]
    pub corpus: String,
    /// Requests in all.
    #[arg(long)]
    pub requests: u64,
    /// Worker threads.
    #[arg(long)]
    pub workers: usize,
    /// Requests per batch.
    #[arg(long)]
    pub batch: usize,
    /// Time between two RSS samples, milliseconds.
    #[arg(long)]
    pub rss_interval_ms: u64,
}

/// Request latency percentiles, nanoseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Slowest request.
    pub max_ns: u64,
    /// Mean.
    pub mean_ns: f64,
}

/// The process RSS over one child's run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rss {
    /// After the corpus was loaded, before the workers started, bytes.
    pub start_bytes: u64,
    /// Largest sample, bytes.
    pub peak_bytes: u64,
    /// After the last batch closed, bytes.
    pub final_bytes: u64,
    /// `[seconds since the workers started, bytes]`, one sample every `rss_interval_ms`.
    pub samples: Vec<(f64, u64)>,
}

/// What one child prints: one peer on one corpus.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerResult {
    /// The peer.
    pub peer: String,
    /// The process's global allocator, as the child itself reports it.
    pub global_allocator: String,
    /// Requests served.
    pub requests: u64,
    /// Batches run.
    pub batches: u64,
    /// JSON bytes parsed.
    pub bytes_parsed: u64,
    /// Wall time of the workers, seconds.
    pub elapsed_sec: f64,
    /// `requests / elapsed_sec`.
    pub requests_per_sec: f64,
    /// Request latency.
    pub latency: Latency,
    /// Process RSS.
    pub rss: Rss,
    /// What the requests counted (the same for every peer on one corpus).
    pub counts: Counts,
}

/// `serde_json::Value` on whatever the process's global allocator is; keys counted with std
/// collections ([`tree::count_value`]).
struct ValueHandler;

impl Handler for ValueHandler {
    type Batch<'h> = ();

    fn open_batch(&self, _: u64, _: &str, _: bool) -> tslab::Result<()> {
        Ok(())
    }

    fn request(&self, _: &mut (), doc: &[u8], _: bool) -> Result<Counts, RequestError> {
        let value: serde_json::Value = serde_json::from_slice(doc).map_err(RequestError::Parse)?;
        let counts = tree::count_value(&value);
        drop(value);
        Ok(counts)
    }

    fn close_batch(&self, (): ()) -> tslab::Result<Option<Leak>> {
        Ok(None)
    }
}

/// The demo's tree ([`tree::NodeSeed`], the same code as the epoch tree, monomorphised for
/// `&Bump`) and its key map in a bumpalo arena, one arena per batch, reset after every request.
struct BumpHandler;

impl Handler for BumpHandler {
    type Batch<'h> = bumpalo::Bump;

    fn open_batch(&self, _: u64, _: &str, _: bool) -> tslab::Result<bumpalo::Bump> {
        Ok(bumpalo::Bump::new())
    }

    fn request(
        &self,
        bump: &mut bumpalo::Bump,
        doc: &[u8],
        _: bool,
    ) -> Result<Counts, RequestError> {
        let counts = {
            let arena: &bumpalo::Bump = bump;
            let root = tree::parse_in(doc, arena).map_err(RequestError::Parse)?;
            let counts = tree::count(&root, arena).map_err(RequestError::Walk)?;
            drop(root);
            counts
        };
        bump.reset();
        Ok(counts)
    }

    fn close_batch(&self, bump: bumpalo::Bump) -> tslab::Result<Option<Leak>> {
        drop(bump);
        Ok(None)
    }
}

/// Runs `args.peer` on `args.corpus` and prints its [`PeerResult`] as one JSON line.
pub fn child_main(args: &ChildDemoArgs) -> ExitCode {
    crate::child_exit(args.peer.name(), run(args))
}

fn run(args: &ChildDemoArgs) -> crate::ChildResult {
    let want = args.peer.global_allocator();
    let chosen = crate::switch_alloc::chosen();
    if chosen != want {
        return Err(format!(
            "peer {} needs {}={want}, but the process runs on {chosen}",
            args.peer.name(),
            crate::switch_alloc::ENV
        )
        .into());
    }
    let corpus = if args.corpus == "generated" {
        Corpus::generated(tslab::demo::corpus::GENERATED_PER_KIND)
    } else {
        Corpus::load(&PathBuf::from(&args.corpus))?
    };
    let plan = Plan {
        corpus: &corpus,
        workers: args.workers,
        batch: args.batch,
        requests: args.requests,
        duration: None,
        leak_at: None,
        rss_interval: Duration::from_millis(args.rss_interval_ms),
    };
    let mut quiet = |_: u64, _: Duration| {};
    let out = match args.peer {
        Peer::TemporalSlabApi2 => {
            let alloc = SlabAllocator::new()?;
            // As `tslab demo`: the fresh allocator's epoch 0 is never used.
            alloc.epoch_close(alloc.epoch_current())?;
            workload::run(
                &plan,
                &EpochHandler::new(&alloc, AllocMode::Api2),
                &mut quiet,
            )?
        }
        Peer::TemporalSlabGlobal => {
            let alloc = tslab::demo::global_instance()?;
            alloc.epoch_close(alloc.epoch_current())?;
            workload::run(
                &plan,
                &EpochHandler::new(alloc, AllocMode::Global),
                &mut quiet,
            )?
        }
        Peer::ValueGlibc | Peer::ValueMimalloc | Peer::ValueJemalloc => {
            workload::run(&plan, &ValueHandler, &mut quiet)?
        }
        Peer::Bumpalo => workload::run(&plan, &BumpHandler, &mut quiet)?,
    };
    let h = &out.hist;
    let result = PeerResult {
        peer: args.peer.name().to_owned(),
        global_allocator: chosen.to_owned(),
        requests: out.requests,
        batches: out.batches,
        bytes_parsed: out.bytes,
        elapsed_sec: out.elapsed.as_secs_f64(),
        requests_per_sec: out.requests as f64 / out.elapsed.as_secs_f64().max(1e-9),
        latency: Latency {
            p50_ns: h.value_at_quantile(0.50),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
            mean_ns: h.mean(),
        },
        rss: Rss {
            start_bytes: out.rss_start,
            peak_bytes: out.samples.iter().map(|s| s.rss_bytes).max().unwrap_or(0),
            final_bytes: out.rss_end,
            samples: out.samples.iter().map(|s| (s.t_sec, s.rss_bytes)).collect(),
        },
        counts: out.counts,
    };
    Ok(serde_json::to_string(&result)?)
}
