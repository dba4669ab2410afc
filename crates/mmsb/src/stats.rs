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
    /// Sum of all samples: the histogram's mean times `count`, so within 0.1% of the true sum
    /// (the histogram keeps 3 significant digits); a Prometheus summary's `_sum`. Read as 0
    /// from JSON written before it existed.
    #[cfg_attr(feature = "serde", serde(default))]
    pub sum_ns: u64,
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
    /// Bytes those propagation deltas selected (part of `delta_bytes`).
    #[cfg_attr(feature = "serde", serde(default))]
    pub propagation_delta_bytes: u64,
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
    /// The highest LSN known to be on stable storage (fdatasynced since start; everything
    /// recovered at start counts). At most `last_lsn`; equal to it after a sync.
    #[cfg_attr(feature = "serde", serde(default))]
    pub durable_lsn: u64,
    /// Frames written since start.
    pub log_frames: u64,
    /// Frame bytes written since start.
    pub log_bytes: u64,
    /// `fdatasync` calls on the log since start.
    pub log_syncs: u64,
    /// Log operations that failed with an I/O error since start: appends (the first one
    /// poisons the bus), flushes, syncs (checkpoints' included). After the first failure the
    /// log refuses further work, and each refused flush or sync counts too.
    #[cfg_attr(feature = "serde", serde(default))]
    pub log_write_errors: u64,
    /// Complete frames of an uncommitted batch that recovery dropped from the log's end when
    /// this bus started ([`crate::tlog::Truncation::frames_dropped`]; 0 for a clean log).
    #[cfg_attr(feature = "serde", serde(default))]
    pub recovery_truncated_frames: u64,
    /// Bytes recovery cut off the log's end when this bus started (a torn frame and/or an
    /// uncommitted batch: [`crate::tlog::Truncation::bytes_dropped`]; 0 for a clean log).
    #[cfg_attr(feature = "serde", serde(default))]
    pub recovery_truncated_bytes: u64,
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
            sum_ns: sum_ns(h),
        }
    }
}

/// The sum of `h`'s samples: its mean (of the bucket values) times its length, saturating.
fn sum_ns(h: &Histogram<u64>) -> u64 {
    let sum = h.mean() * h.len() as f64;
    // `as` saturates a finite f64 at u64::MAX and maps NaN to 0.
    sum.round() as u64
}

/// Records `ns` into `h`, saturating at the histogram's top instead of failing.
#[inline]
pub(crate) fn record(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns.max(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_sum_is_the_sum_of_the_samples_to_histogram_precision() {
        let mut h = hist();
        for ns in [1_000u64, 2_000, 3_000, 10_000] {
            record(&mut h, ns);
        }
        let p = Timings::percentiles(&h);
        assert_eq!(p.count, 4);
        // 3 significant digits: each sample within 0.1% of its value.
        let exact = 16_000f64;
        assert!(
            (p.sum_ns as f64 - exact).abs() <= exact * 1e-3,
            "sum {} for samples summing to {exact}",
            p.sum_ns
        );
        assert_eq!(Timings::percentiles(&hist()).sum_ns, 0);
    }
}
