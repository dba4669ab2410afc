//! Counters and latency histograms of a bus.

use hdrhistogram::Histogram;

/// Percentiles of one latency distribution, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Percentiles {
    /// Number of samples.
    pub count: u64,
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Largest sample.
    pub max_ns: u64,
}

/// A snapshot of a bus's counters ([`crate::Mmsb::stats`]).
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Stats {
    /// Pages that exist.
    pub pages: usize,
    /// Sum of their sizes, bytes.
    pub page_bytes: usize,
    /// Deltas applied since start (user and propagation).
    pub deltas: u64,
    /// Bytes those deltas selected (changed bytes, not encoded size).
    pub delta_bytes: u64,
    /// Deltas written by recompute functions.
    pub propagation_deltas: u64,
    /// Commits (single deltas outside a batch, and batches).
    pub commits: u64,
    /// Propagation waves run.
    pub waves: u64,
    /// Recompute functions called.
    pub recomputes: u64,
    /// Recomputes whose output equalled the page (early cutoff: its children were not visited).
    pub cutoffs: u64,
    /// Pages marked stale.
    pub stale_marks: u64,
    /// Pages with at least one edge.
    pub graph_nodes: usize,
    /// Edges.
    pub graph_edges: usize,
    /// Longest path in edges.
    pub graph_depth: usize,
    /// LSN of the last frame written.
    pub last_lsn: u64,
    /// Frames written since start.
    pub log_frames: u64,
    /// Frame bytes written since start.
    pub log_bytes: u64,
    /// `fdatasync` calls on the log since start.
    pub log_syncs: u64,
    /// Applying one delta to its page (excludes logging).
    pub delta_apply: Percentiles,
    /// Appending one frame to the log (encode, CRC, buffer, and the write/fsync the durability
    /// mode asks for).
    pub log_append: Percentiles,
    /// One propagation wave (all recomputes of one commit, with their logging).
    pub propagation: Percentiles,
}

/// Latency histograms, 1 ns to 60 s at 3 significant digits.
#[derive(Debug)]
pub(crate) struct Timings {
    pub(crate) enabled: bool,
    pub(crate) apply: Histogram<u64>,
    pub(crate) append: Histogram<u64>,
    pub(crate) wave: Histogram<u64>,
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static histogram bounds are valid")
}

impl Timings {
    pub(crate) fn new(enabled: bool) -> Timings {
        Timings {
            enabled,
            apply: hist(),
            append: hist(),
            wave: hist(),
        }
    }

    pub(crate) fn percentiles(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            p50_ns: h.value_at_quantile(0.50),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
        }
    }
}

/// Records `ns` into `h`, saturating at the histogram's top instead of failing.
#[inline]
pub(crate) fn record(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns.max(1));
}
