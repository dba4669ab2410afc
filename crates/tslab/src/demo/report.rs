//! What `tslab demo` reports: the [`DemoReport`] (also its `--json` form) and its printing for
//! people.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;

use super::Counts;
use crate::snapshot::{EpochSnapshot, Snapshot};

/// Request latency percentiles over all requests, nanoseconds (HDR histogram, 3 significant
/// digits).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
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

/// One sample of the process RSS.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RssSample {
    /// Seconds since the workers started.
    pub t_sec: f64,
    /// Resident set size, bytes (0 when /proc is unreadable).
    pub rss_bytes: u64,
}

/// The process RSS over the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RssReport {
    /// Before the workers started, bytes.
    pub start_bytes: u64,
    /// Largest sample, bytes.
    pub peak_bytes: u64,
    /// After the last batch, bytes.
    pub end_bytes: u64,
    /// Samples every [`RSS_SAMPLE_INTERVAL`](super::RSS_SAMPLE_INTERVAL) (thinned out on long runs: at most 4096 kept).
    pub samples: Vec<RssSample>,
}

/// Requests of one document kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KindReport {
    /// The kind's label (file name or generated kind).
    pub label: String,
    /// Documents of this kind in the corpus.
    pub documents: usize,
    /// Requests served.
    pub requests: u64,
}

/// The epoch leaked by `--inject-leak` / `--inject-leak-at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LeakedEpoch {
    /// Ring index.
    pub epoch_id: u32,
    /// Era.
    pub epoch_era: u64,
    /// Label (`leak:` + the batch's kind).
    pub label: String,
    /// The batch that leaked it (0-based, in the order batches started).
    pub batch: u64,
    /// Epochs opened after it, at least (final `epoch_advances` minus the count read just after
    /// it opened, which may include another worker's advance of the same moment).
    pub epochs_opened_after: u64,
}

/// What a demo run did. `Serialize` is the `--json` output (without the final snapshot, which
/// `--json-out` writes).
#[derive(Clone, Debug, Serialize)]
pub struct DemoReport {
    /// `--corpus` path, or `"generated"`.
    pub corpus: String,
    /// Documents in the corpus.
    pub documents: usize,
    /// Bytes of the corpus's documents.
    pub corpus_bytes: u64,
    /// Requests per kind.
    pub kinds: Vec<KindReport>,
    /// Worker threads.
    pub workers: usize,
    /// Requests per batch (one epoch per batch).
    pub batch: usize,
    /// Requests served.
    pub requests: u64,
    /// Wall time from the workers' start to the last batch's close, seconds.
    pub elapsed_sec: f64,
    /// `requests / elapsed_sec`.
    pub requests_per_sec: f64,
    /// JSON bytes parsed.
    pub bytes_parsed: u64,
    /// Request latency (enter the domain, parse, count, drop, leave).
    pub latency: Latency,
    /// Sums of the per-request counts (`distinct_keys` and `top_key_count` are maxima).
    pub counts: Counts,
    /// Batches run, the leaking one included.
    pub batches: u64,
    /// `epoch_close` calls made by the workers.
    pub epochs_closed: u64,
    /// Process RSS over the run.
    pub rss: RssReport,
    /// Up to 5 epochs of the final snapshot, by refcount, then estimated RSS, then live objects.
    pub top_epochs: Vec<EpochSnapshot>,
    /// The batch asked to leak (`--inject-leak` is batch 0).
    pub inject_leak_at: Option<u64>,
    /// The epoch that batch leaked (`None` when no leak was asked, or the run ended before that
    /// batch started).
    pub leaked: Option<LeakedEpoch>,
    /// The address `/metrics` was served on (the real port when 0 was asked).
    pub listen: Option<SocketAddr>,
    /// Where the final snapshot was written (asked to be: see `json_out_error`).
    pub json_out: Option<PathBuf>,
    /// Why the final snapshot could not be written to `json_out` (`None` when it was, or none
    /// was asked).
    pub json_out_error: Option<String>,
    /// The final stats snapshot, taken after the last batch (not in the `--json` output).
    #[serde(skip)]
    pub snapshot: Snapshot,
}

/// `1.5 KiB`, `12.0 MiB`, ...
pub(super) fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `850 ns`, `12.3 us`, `4.56 ms`, `1.23 s`.
fn human_ns(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} us", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// Eight-level bar chart of `values` scaled between their minimum and maximum.
fn sparkline(values: &[u64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let (min, max) = match (values.iter().min(), values.iter().max()) {
        (Some(&a), Some(&b)) => (a, b),
        _ => return String::new(),
    };
    values
        .iter()
        .map(|&v| {
            let i = if max == min {
                0
            } else {
                ((v - min) as f64 / (max - min) as f64 * 7.0).round() as usize
            };
            BARS[i.min(7)]
        })
        .collect()
}

/// At most `n` samples evenly spread over `samples`, first and last included.
fn thin(samples: &[RssSample], n: usize) -> Vec<RssSample> {
    if samples.len() <= n || n < 2 {
        return samples.to_vec();
    }
    (0..n)
        .map(|i| samples[i * (samples.len() - 1) / (n - 1)])
        .collect()
}

impl DemoReport {
    /// The human-readable report: throughput, latency, RSS over time, top epochs, the leak.
    ///
    /// # Errors
    /// Errors of `out`.
    pub fn print_human(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let snap = &self.snapshot;
        writeln!(
            out,
            "requests      {} in {:.2} s = {:.0} requests/s ({} workers, batch {})",
            self.requests, self.elapsed_sec, self.requests_per_sec, self.workers, self.batch
        )?;
        writeln!(
            out,
            "corpus        {}: {} documents, {} ({})",
            self.corpus,
            self.documents,
            human_bytes(self.corpus_bytes),
            self.kinds
                .iter()
                .map(|k| format!("{} x{}", k.label, k.requests))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        writeln!(
            out,
            "parsed        {} ({}/s); {} values, {} keys, {} numbers, {} string bytes",
            human_bytes(self.bytes_parsed),
            human_bytes((self.bytes_parsed as f64 / self.elapsed_sec.max(1e-9)) as u64),
            self.counts.values,
            self.counts.keys,
            self.counts.numbers,
            self.counts.string_bytes
        )?;
        let l = &self.latency;
        writeln!(
            out,
            "latency       p50 {}  p99 {}  p99.9 {}  max {}  (mean {})",
            human_ns(l.p50_ns as f64),
            human_ns(l.p99_ns as f64),
            human_ns(l.p999_ns as f64),
            human_ns(l.max_ns as f64),
            human_ns(l.mean_ns)
        )?;
        writeln!(
            out,
            "allocator     {} slab allocations, {} system fallbacks (> 768 B), {} slabs carved, \
             {} madvise calls ({})",
            snap.allocs(),
            snap.system_fallback_allocs,
            snap.slabs_carved,
            snap.total_madvise_calls,
            human_bytes(snap.total_madvise_bytes)
        )?;
        writeln!(
            out,
            "epochs        {} batches, {} closed ({:.1} us per close), {} advances, {} refused \
             (ring full)",
            self.batches,
            self.epochs_closed,
            snap.epoch_close_total_ns as f64 / snap.epoch_close_calls.max(1) as f64 / 1e3,
            snap.epoch_advances,
            snap.epoch_advance_refused
        )?;
        let r = &self.rss;
        writeln!(
            out,
            "rss           start {}, peak {}, end {}",
            human_bytes(r.start_bytes),
            human_bytes(r.peak_bytes),
            human_bytes(r.end_bytes)
        )?;
        let curve: Vec<u64> = thin(&r.samples, 60).iter().map(|s| s.rss_bytes).collect();
        writeln!(out, "rss over time {}", sparkline(&curve))?;
        let points = thin(&r.samples, 6)
            .iter()
            .map(|s| format!("{:.1}s {}", s.t_sec, human_bytes(s.rss_bytes)))
            .collect::<Vec<_>>()
            .join(" | ");
        writeln!(out, "              {points}")?;
        writeln!(out, "top epochs (by refcount, then estimated RSS):")?;
        writeln!(
            out,
            "  {:>5} {:>7} {:<8} {:>8} {:>8} {:>10} {:>5}  LABEL",
            "EPOCH", "ERA", "STATE", "REFCOUNT", "LIVE", "RSS", "AGE"
        )?;
        for e in &self.top_epochs {
            writeln!(
                out,
                "  {:>5} {:>7} {:<8} {:>8} {:>8} {:>10} {:>4}s  {}",
                e.epoch_id,
                e.epoch_era,
                e.state.as_str(),
                e.refcount,
                e.live_objects,
                human_bytes(e.estimated_rss_bytes),
                e.age_sec,
                e.label
            )?;
        }
        match (&self.leaked, self.inject_leak_at) {
            (Some(l), _) => writeln!(
                out,
                "leaked epoch  {} (era {}) label {:?} in batch {}: CLOSING with a domain never \
                 left; still held after {} later epochs",
                l.epoch_id, l.epoch_era, l.label, l.batch, l.epochs_opened_after
            )?,
            (None, Some(at)) => writeln!(
                out,
                "leaked epoch  none: the run ended after {} batches, before batch {at} \
                 (--inject-leak-at)",
                self.batches
            )?,
            (None, None) => writeln!(out, "leaked epoch  none")?,
        }
        if let Some(a) = self.listen {
            writeln!(
                out,
                "served        http://{a}/metrics and http://{a}/stats.json"
            )?;
        }
        match (&self.json_out, &self.json_out_error) {
            (Some(p), None) => writeln!(out, "snapshot      {}", p.display())?,
            (Some(p), Some(e)) => {
                writeln!(out, "snapshot      NOT WRITTEN to {}: {e}", p.display())?
            }
            (None, _) => {}
        }
        Ok(())
    }
}
