//! The CLI's views of snapshots: the summary (`stats`), rankings (`top`), rates between two
//! samples (`watch`, `top --window`) and comparisons (`diff`). Each view is a serde type, printed
//! as JSON with `--json` or as text with its `Display`.

use std::fmt;

use serde::Serialize;

use crate::snapshot::{ClassSnapshot, EpochSnapshot, Snapshot, saturating_sum};

const MIB: f64 = 1024.0 * 1024.0;

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / MIB)
}

fn pct(x: f64) -> String {
    format!("{:.3}%", x * 100.0)
}

/// The `tslab stats` summary.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Process id.
    pub pid: u32,
    /// Process RSS, bytes.
    pub rss_bytes: u64,
    /// Slab pages held, bytes.
    pub estimated_slab_rss_bytes: u64,
    /// Slabs on partial lists.
    pub partial_slabs: u64,
    /// Slabs on full lists.
    pub full_slabs: u64,
    /// Orphaned slabs.
    pub orphan_slabs: u64,
    /// Slabs held, new + reused - recycled.
    pub net_slabs: i64,
    /// Slabs carved from the reservation.
    pub slabs_carved: u64,
    /// Allocations.
    pub allocs: u64,
    /// Slow-path allocations.
    pub slow_path_hits: u64,
    /// `slow_path_hits / allocs`.
    pub slow_path_rate: f64,
    /// Slow-path hits because no current slab had room.
    pub slow_path_cache_miss: u64,
    /// Allocations refused because the epoch was closing.
    pub slow_path_epoch_closed: u64,
    /// `madvise` calls.
    pub madvise_calls: u64,
    /// Bytes given back.
    pub madvise_bytes: u64,
    /// Failed `madvise` calls.
    pub madvise_failures: u64,
    /// `lock_contended / acquisitions`.
    pub lock_contention_rate: f64,
    /// `epoch_close` calls.
    pub epoch_close_calls: u64,
    /// Mean `epoch_close` time, microseconds.
    pub epoch_close_mean_us: f64,
    /// Epochs opened by `epoch_advance`.
    pub epoch_advances: u64,
    /// `epoch_advance` calls refused because the ring was full of epochs that had not drained.
    pub epoch_advance_refused: u64,
    /// Whether the snapshot carries epoch data.
    pub has_epochs: bool,
    /// ACTIVE epochs.
    pub epochs_active: usize,
    /// CLOSING epochs.
    pub epochs_closing: usize,
    /// CLOSING epochs with refcount > 0 (domains never exited).
    pub epochs_closing_with_refs: usize,
    /// The 3 epochs holding the most pages.
    pub top_epochs_by_rss: Vec<EpochSnapshot>,
}

impl Summary {
    /// Summarizes `s`.
    pub fn of(s: &Snapshot) -> Summary {
        let sum = |f: fn(&ClassSnapshot) -> u64| saturating_sum(s.classes.iter().map(f));
        let mut top = s.epochs().to_vec();
        top.sort_by(|a, b| {
            b.estimated_rss_bytes
                .cmp(&a.estimated_rss_bytes)
                .then(a.epoch_id.cmp(&b.epoch_id))
        });
        top.truncate(3);
        let state_count = |state: &str| {
            s.epochs()
                .iter()
                .filter(|e| e.state.as_str() == state)
                .count()
        };
        Summary {
            pid: s.pid,
            rss_bytes: s.rss_bytes,
            estimated_slab_rss_bytes: s.estimated_slab_rss_bytes(),
            partial_slabs: sum(|c| c.total_partial_slabs),
            full_slabs: sum(|c| c.total_full_slabs),
            orphan_slabs: sum(|c| c.total_orphan_slabs),
            net_slabs: s
                .classes
                .iter()
                .map(|c| c.net_slabs)
                .fold(0, i64::saturating_add),
            slabs_carved: s.slabs_carved,
            allocs: s.allocs(),
            slow_path_hits: sum(|c| c.slow_path_hits),
            slow_path_rate: s.slow_path_rate(),
            slow_path_cache_miss: sum(|c| c.slow_path_cache_miss),
            slow_path_epoch_closed: sum(|c| c.slow_path_epoch_closed),
            madvise_calls: sum(|c| c.madvise_calls),
            madvise_bytes: sum(|c| c.madvise_bytes),
            madvise_failures: sum(|c| c.madvise_failures),
            lock_contention_rate: s.lock_contention_rate(),
            epoch_close_calls: s.epoch_close_calls,
            epoch_close_mean_us: if s.epoch_close_calls == 0 {
                0.0
            } else {
                s.epoch_close_total_ns as f64 / s.epoch_close_calls as f64 / 1e3
            },
            epoch_advances: s.epoch_advances,
            epoch_advance_refused: s.epoch_advance_refused,
            has_epochs: s.epochs.is_some(),
            epochs_active: state_count("ACTIVE"),
            epochs_closing: state_count("CLOSING"),
            epochs_closing_with_refs: s
                .epochs()
                .iter()
                .filter(|e| e.state.as_str() == "CLOSING" && e.refcount > 0)
                .count(),
            top_epochs_by_rss: top,
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "temporal-slab stats (pid {})", self.pid)?;
        writeln!(
            f,
            "  RSS            {}   slabs hold {}",
            mib(self.rss_bytes),
            mib(self.estimated_slab_rss_bytes)
        )?;
        writeln!(
            f,
            "  slabs          {} partial, {} full, {} orphan; net {}; {} carved",
            self.partial_slabs,
            self.full_slabs,
            self.orphan_slabs,
            self.net_slabs,
            self.slabs_carved
        )?;
        writeln!(
            f,
            "  slow path      {} of {} allocations ({}): {} needed a slab, {} refused (epoch closing)",
            self.slow_path_hits,
            self.allocs,
            pct(self.slow_path_rate),
            self.slow_path_cache_miss,
            self.slow_path_epoch_closed
        )?;
        writeln!(
            f,
            "  madvise        {} calls, {} returned, {} failed",
            self.madvise_calls,
            mib(self.madvise_bytes),
            self.madvise_failures
        )?;
        writeln!(
            f,
            "  contention     {} of lock acquisitions blocked",
            pct(self.lock_contention_rate)
        )?;
        writeln!(
            f,
            "  epoch_close    {} calls, mean {:.1} us",
            self.epoch_close_calls, self.epoch_close_mean_us
        )?;
        writeln!(
            f,
            "  epoch_advance  {} epochs opened, {} refused (ring full of epochs not drained)",
            self.epoch_advances, self.epoch_advance_refused
        )?;
        if !self.has_epochs {
            return writeln!(f, "  epochs         (no epoch data in this snapshot)");
        }
        writeln!(
            f,
            "  epochs         {} open, {} closing ({} closing with refcount > 0)",
            self.epochs_active, self.epochs_closing, self.epochs_closing_with_refs
        )?;
        if !self.top_epochs_by_rss.is_empty() {
            writeln!(f, "  top epochs by RSS:")?;
            write_epoch_table(f, self.top_epochs_by_rss.iter().map(|e| (e, None)))?;
        }
        Ok(())
    }
}

fn write_epoch_table<'a>(
    f: &mut fmt::Formatter<'_>,
    rows: impl Iterator<Item = (&'a EpochSnapshot, Option<f64>)>,
) -> fmt::Result {
    writeln!(
        f,
        "    {:<5} {:<8} {:<7} {:>8} {:>8} {:>11} {:>11} {:>12}  label",
        "epoch", "era", "state", "age", "refcount", "rss", "reclaimable", "live"
    )?;
    for (e, rate) in rows {
        write!(
            f,
            "    {:<5} {:<8} {:<7} {:>7}s {:>8} {:>11} {:>11} {:>12}  {:?}",
            e.epoch_id,
            e.epoch_era,
            e.state.as_str(),
            e.age_sec,
            e.refcount,
            mib(e.estimated_rss_bytes),
            e.total_reclaimable_slabs,
            e.live_objects,
            e.label
        )?;
        match rate {
            Some(r) => writeln!(f, "  ({r:+.1}/s)")?,
            None => writeln!(f)?,
        }
    }
    Ok(())
}

/// What `top --classes` can rank by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
#[clap(rename_all = "snake_case")]
pub enum ClassMetric {
    /// Slow-path allocations.
    SlowPathHits,
    /// Slabs carved fresh.
    NewSlabCount,
    /// Bytes given back with madvise.
    MadviseBytes,
    /// Slabs held.
    NetSlabs,
    /// Blocked lock acquisitions.
    LockContended,
    /// Failed allocation-side bitmap CASes.
    BitmapAllocCasRetries,
}

impl ClassMetric {
    fn value(self, c: &ClassSnapshot) -> f64 {
        match self {
            ClassMetric::SlowPathHits => c.slow_path_hits as f64,
            ClassMetric::NewSlabCount => c.new_slab_count as f64,
            ClassMetric::MadviseBytes => c.madvise_bytes as f64,
            ClassMetric::NetSlabs => c.net_slabs as f64,
            ClassMetric::LockContended => c.lock_contended as f64,
            ClassMetric::BitmapAllocCasRetries => c.bitmap_alloc_cas_retries as f64,
        }
    }
}

/// What `top --epochs` can rank by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
#[clap(rename_all = "snake_case")]
pub enum EpochMetric {
    /// Estimated RSS bytes.
    RssBytes,
    /// Seconds open.
    AgeSec,
    /// Domain refcount.
    Refcount,
    /// Bytes of empty slabs not yet recycled.
    ReclaimableBytes,
}

impl EpochMetric {
    fn value(self, e: &EpochSnapshot, page_size: u32) -> f64 {
        match self {
            EpochMetric::RssBytes => e.estimated_rss_bytes as f64,
            EpochMetric::AgeSec => e.age_sec as f64,
            EpochMetric::Refcount => e.refcount as f64,
            EpochMetric::ReclaimableBytes => e.reclaimable_bytes(page_size) as f64,
        }
    }
}

/// One ranked row: the entry and the value it was ranked by (a per-second rate with a window).
#[derive(Clone, Debug, Serialize)]
pub struct Ranked<T> {
    /// The value ranked by.
    pub value: f64,
    /// The entry (from the newer sample with a window).
    pub entry: T,
}

/// A `top` result.
#[derive(Clone, Debug, Serialize)]
pub struct Top<T> {
    /// The metric's name.
    pub by: String,
    /// Seconds between the two samples, when ranked by rate.
    pub window_sec: Option<f64>,
    /// Ranked rows, best first.
    pub rows: Vec<Ranked<T>>,
}

fn metric_name(by: impl clap::ValueEnum) -> String {
    by.to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_owned())
}

fn rank<T>(mut rows: Vec<(u64, Ranked<T>)>, n: usize, ascending: bool) -> Vec<Ranked<T>> {
    rows.sort_by(|(ia, a), (ib, b)| {
        let ord = a.value.total_cmp(&b.value);
        (if ascending { ord } else { ord.reverse() }).then(ia.cmp(ib))
    });
    rows.into_iter().take(n).map(|(_, r)| r).collect()
}

/// Seconds between two snapshots by their timestamps (at least 1 ns).
pub fn seconds_between(before: &Snapshot, after: &Snapshot) -> f64 {
    (after.timestamp_ns.saturating_sub(before.timestamp_ns)).max(1) as f64 / 1e9
}

/// Ranks size classes by `by` (or its rate between `before` and `after`).
pub fn top_classes(
    after: &Snapshot,
    before: Option<&Snapshot>,
    by: ClassMetric,
    n: usize,
    ascending: bool,
) -> Top<ClassSnapshot> {
    let window = before.map(|b| seconds_between(b, after));
    let rows = after
        .classes
        .iter()
        .map(|c| {
            let mut value = by.value(c);
            if let (Some(b), Some(dt)) = (before, window) {
                let old = b.classes.iter().find(|o| o.class == c.class);
                value = (value - old.map_or(0.0, |o| by.value(o))) / dt;
            }
            (
                u64::from(c.class),
                Ranked {
                    value,
                    entry: c.clone(),
                },
            )
        })
        .collect();
    Top {
        by: metric_name(by),
        window_sec: window,
        rows: rank(rows, n, ascending),
    }
}

/// Ranks epochs by `by` (or its rate, matching entries by ring index and era); `None` when
/// the snapshot has no epoch data.
pub fn top_epochs(
    after: &Snapshot,
    before: Option<&Snapshot>,
    by: EpochMetric,
    n: usize,
    ascending: bool,
) -> Option<Top<EpochSnapshot>> {
    let epochs = after.epochs.as_ref()?;
    let window = before.map(|b| seconds_between(b, after));
    let rows = epochs
        .iter()
        .map(|e| {
            let mut value = by.value(e, after.page_size);
            if let (Some(b), Some(dt)) = (before, window) {
                let old = b
                    .epochs()
                    .iter()
                    .find(|o| o.epoch_id == e.epoch_id && o.epoch_era == e.epoch_era);
                value = (value - old.map_or(0.0, |o| by.value(o, b.page_size))) / dt;
            }
            (
                u64::from(e.epoch_id),
                Ranked {
                    value,
                    entry: e.clone(),
                },
            )
        })
        .collect();
    Some(Top {
        by: metric_name(by),
        window_sec: window,
        rows: rank(rows, n, ascending),
    })
}

impl fmt::Display for Top<ClassSnapshot> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.window_sec {
            Some(w) => writeln!(f, "top classes by {} per second (window {w:.2}s)", self.by)?,
            None => writeln!(f, "top classes by {}", self.by)?,
        }
        writeln!(
            f,
            "  {:<5} {:>6} {:>14} {:>12} {:>10} {:>10} {:>12} {:>10} {:>10}",
            "class",
            "size",
            "value",
            "slow_path",
            "new_slabs",
            "net_slabs",
            "madvise",
            "contended",
            "cas_retry"
        )?;
        for r in &self.rows {
            let c = &r.entry;
            writeln!(
                f,
                "  {:<5} {:>6} {:>14.1} {:>12} {:>10} {:>10} {:>12} {:>10} {:>10}",
                c.class,
                c.object_size,
                r.value,
                c.slow_path_hits,
                c.new_slab_count,
                c.net_slabs,
                mib(c.madvise_bytes),
                c.lock_contended,
                c.bitmap_alloc_cas_retries
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Top<EpochSnapshot> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.window_sec {
            Some(w) => writeln!(f, "top epochs by {} per second (window {w:.2}s)", self.by)?,
            None => writeln!(f, "top epochs by {}", self.by)?,
        }
        let rate = self.window_sec.is_some();
        write_epoch_table(
            f,
            self.rows
                .iter()
                .map(|r| (&r.entry, rate.then_some(r.value))),
        )
    }
}

/// Per-second rates between two samples (`tslab watch`).
#[derive(Clone, Debug, Serialize)]
pub struct Rates {
    /// Wall-clock time of the newer sample, ns since the Unix epoch.
    pub timestamp_ns: u64,
    /// Seconds between the samples.
    pub interval_sec: f64,
    /// Allocations per second.
    pub allocs_per_sec: f64,
    /// Frees per second.
    pub frees_per_sec: f64,
    /// Slow-path allocations per second.
    pub slow_path_per_sec: f64,
    /// Slabs carved per second.
    pub new_slabs_per_sec: f64,
    /// Bytes given back per second.
    pub madvise_bytes_per_sec: f64,
    /// Failed madvise calls per second.
    pub madvise_failures_per_sec: f64,
    /// Blocked lock acquisitions per second.
    pub lock_contended_per_sec: f64,
    /// `epoch_close` calls per second.
    pub epoch_closes_per_sec: f64,
    /// RSS of the newer sample, bytes.
    pub rss_bytes: u64,
    /// RSS change per second, bytes (negative when memory went back to the kernel).
    pub rss_bytes_per_sec: f64,
    /// Whether the process changed between samples (pid differs); rates are then meaningless.
    pub restarted: bool,
}

impl Rates {
    /// Rates from `before` to `after`. Counters that went backwards count as 0.
    pub fn between(before: &Snapshot, after: &Snapshot) -> Rates {
        let dt = seconds_between(before, after);
        let sum =
            |s: &Snapshot, f: fn(&ClassSnapshot) -> u64| saturating_sum(s.classes.iter().map(f));
        let per_sec =
            |f: fn(&ClassSnapshot) -> u64| sum(after, f).saturating_sub(sum(before, f)) as f64 / dt;
        Rates {
            timestamp_ns: after.timestamp_ns,
            interval_sec: dt,
            allocs_per_sec: per_sec(|c| c.allocs),
            frees_per_sec: per_sec(|c| c.frees),
            slow_path_per_sec: per_sec(|c| c.slow_path_hits),
            new_slabs_per_sec: per_sec(|c| c.new_slab_count),
            madvise_bytes_per_sec: per_sec(|c| c.madvise_bytes),
            madvise_failures_per_sec: per_sec(|c| c.madvise_failures),
            lock_contended_per_sec: per_sec(|c| c.lock_contended),
            epoch_closes_per_sec: after
                .epoch_close_calls
                .saturating_sub(before.epoch_close_calls) as f64
                / dt,
            rss_bytes: after.rss_bytes,
            rss_bytes_per_sec: (after.rss_bytes as f64 - before.rss_bytes as f64) / dt,
            restarted: before.pid != after.pid,
        }
    }

    /// The header line matching [`Rates`]'s `Display`.
    pub const HEADER: &'static str = "   allocs/s    frees/s  slow/s  slabs/s  madvise/s  mfail/s  contended/s  closes/s        RSS   dRSS/s";
}

impl fmt::Display for Rates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>11.0} {:>10.0} {:>7.0} {:>8.1} {:>10} {:>8.1} {:>12.1} {:>9.1} {:>10} {:>8}",
            self.allocs_per_sec,
            self.frees_per_sec,
            self.slow_path_per_sec,
            self.new_slabs_per_sec,
            format!("{:.1}M", self.madvise_bytes_per_sec / MIB),
            self.madvise_failures_per_sec,
            self.lock_contended_per_sec,
            self.epoch_closes_per_sec,
            format!("{:.1}M", self.rss_bytes as f64 / MIB),
            format!("{:+.1}M", self.rss_bytes_per_sec / MIB),
        )?;
        if self.restarted {
            write!(f, "  (process changed)")?;
        }
        Ok(())
    }
}

/// Parses a `diff` threshold in percent: a finite number, at least 0 (`nan` or `inf` would
/// pass every regression, a negative one would flag identical snapshots).
///
/// # Errors
/// A one-line message for anything else.
///
/// # Examples
/// ```
/// assert_eq!(tslab::report::parse_threshold("2.5"), Ok(2.5));
/// assert!(tslab::report::parse_threshold("nan").is_err());
/// assert!(tslab::report::parse_threshold("-1").is_err());
/// ```
pub fn parse_threshold(s: &str) -> Result<f64, String> {
    let shown = crate::quote_bounded(s, crate::MAX_QUOTED);
    match s.trim().parse::<f64>() {
        Ok(t) if t.is_finite() && t >= 0.0 => Ok(t),
        Ok(_) => Err(format!(
            "{shown:?} is not a threshold: give a finite percentage, 0 or more"
        )),
        Err(e) => Err(format!("{shown:?} is not a number: {e}")),
    }
}

/// One compared figure of `tslab diff`.
#[derive(Clone, Debug, Serialize)]
pub struct DiffRow {
    /// The figure's name.
    pub metric: &'static str,
    /// Value before.
    pub before: f64,
    /// Value after.
    pub after: f64,
    /// Change in percent of `before` (`null` in JSON when `before` is 0 and `after` is not).
    pub change_pct: Option<f64>,
    /// Worse by more than the threshold.
    pub regression: bool,
}

/// The `tslab diff` result.
#[derive(Clone, Debug, Serialize)]
pub struct Diff {
    /// Threshold, percent.
    pub threshold_pct: f64,
    /// The compared figures; for all of them higher is worse.
    pub rows: Vec<DiffRow>,
}

impl Diff {
    /// Compares slow-path rate, madvise failures, RSS and lock contention rate. A figure
    /// regresses when it grew by more than `threshold_pct` percent, or grew from 0.
    pub fn between(before: &Snapshot, after: &Snapshot, threshold_pct: f64) -> Diff {
        let failures =
            |s: &Snapshot| saturating_sum(s.classes.iter().map(|c| c.madvise_failures)) as f64;
        let figures: [(&'static str, f64, f64); 4] = [
            (
                "slow_path_rate",
                before.slow_path_rate(),
                after.slow_path_rate(),
            ),
            ("madvise_failures", failures(before), failures(after)),
            ("rss_bytes", before.rss_bytes as f64, after.rss_bytes as f64),
            (
                "lock_contention_rate",
                before.lock_contention_rate(),
                after.lock_contention_rate(),
            ),
        ];
        let rows = figures
            .into_iter()
            .map(|(metric, before, after)| {
                let change_pct = if before == 0.0 {
                    (after == 0.0).then_some(0.0)
                } else {
                    Some((after - before) / before * 100.0)
                };
                // Written so that a NaN threshold (never accepted by `parse_threshold`) counts
                // every figure as regressed rather than none.
                #[allow(clippy::neg_cmp_op_on_partial_ord)]
                let regression = match change_pct {
                    Some(p) => !(p <= threshold_pct),
                    None => true,
                };
                DiffRow {
                    metric,
                    before,
                    after,
                    change_pct,
                    regression,
                }
            })
            .collect();
        Diff {
            threshold_pct,
            rows,
        }
    }

    /// Whether any figure regressed.
    pub fn regressed(&self) -> bool {
        self.rows.iter().any(|r| r.regression)
    }
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<22} {:>16} {:>16} {:>10}  (threshold {}%)",
            "metric", "before", "after", "change", self.threshold_pct
        )?;
        for r in &self.rows {
            let change = r
                .change_pct
                .map_or_else(|| "new".to_owned(), |p| format!("{p:+.1}%"));
            let show = |v: f64| {
                if r.metric.ends_with("_rate") {
                    format!("{:.4}%", v * 100.0)
                } else {
                    format!("{v:.0}")
                }
            };
            writeln!(
                f,
                "{:<22} {:>16} {:>16} {:>10}  {}",
                r.metric,
                show(r.before),
                show(r.after),
                change,
                if r.regression { "REGRESSION" } else { "ok" }
            )?;
        }
        Ok(())
    }
}
