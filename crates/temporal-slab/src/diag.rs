//! Diagnostics over a [`StatsSnapshot`]: leaked epochs, slow-path analysis, reclamation.

use std::time::Duration;

use crate::{EpochState, StatsSnapshot};

/// A CLOSING epoch that a domain still holds: probably entered and never exited.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct EpochLeak {
    /// Ring index.
    pub epoch_id: u32,
    /// Era.
    pub epoch_era: u64,
    /// Label ("" = unlabeled).
    pub label: String,
    /// Seconds since the era opened.
    pub age_sec: f64,
    /// Domain refcount (> 0).
    pub refcount: u64,
    /// Live objects.
    pub live_objects: u64,
    /// Bytes of slab pages the epoch still holds.
    pub estimated_rss_bytes: u64,
    /// One line for people, e.g. `epoch 12 (worker-3) has been open 600 s with refcount 2: ...`.
    pub message: String,
}

/// CLOSING epochs with refcount > 0 that are at least `min_age` old, largest RSS first.
pub fn leak_report(snap: &StatsSnapshot, min_age: Duration) -> Vec<EpochLeak> {
    let mut leaks: Vec<EpochLeak> = snap
        .epochs_in(EpochState::Closing)
        .filter(|e| e.refcount > 0 && e.age_sec >= min_age.as_secs_f64())
        .map(|e| {
            let name = if e.label.is_empty() {
                "unlabeled".to_owned()
            } else {
                e.label.clone()
            };
            EpochLeak {
                epoch_id: e.epoch_id,
                epoch_era: e.epoch_era,
                label: e.label.clone(),
                age_sec: e.age_sec,
                refcount: e.refcount,
                live_objects: e.live_objects,
                estimated_rss_bytes: e.estimated_rss_bytes,
                message: format!(
                    "epoch {} ({name}) has been open {:.0} s with refcount {} after it was closed: \
                     a domain was entered {} and never exited; {} live objects hold {} bytes",
                    e.epoch_id,
                    e.age_sec,
                    e.refcount,
                    if e.refcount == 1 {
                        "once".to_owned()
                    } else {
                        format!("{} times", e.refcount)
                    },
                    e.live_objects,
                    e.estimated_rss_bytes
                ),
            }
        })
        .collect();
    leaks.sort_by_key(|l| std::cmp::Reverse(l.estimated_rss_bytes));
    leaks
}

/// Where the slow path is taken and what to do about it.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct SlowPathAnalysis {
    /// Objects allocated, all classes.
    pub allocations: u64,
    /// Slow-path hits, all classes.
    pub slow_path_hits: u64,
    /// `slow_path_hits / (allocations + epoch-closed refusals)`, 0..1.
    pub slow_path_rate: f64,
    /// Share of slow-path hits caused by needing another slab.
    pub cache_miss_share: f64,
    /// Share of slow-path hits caused by allocating in a CLOSING or stale epoch.
    pub epoch_closed_share: f64,
    /// Share of class-lock acquisitions that blocked.
    pub lock_contended_share: f64,
    /// Object size of the class with the highest slow-path rate (0 if none allocated).
    pub worst_class_object_size: u32,
    /// Slow-path rate of that class.
    pub worst_class_rate: f64,
    /// What to do, one sentence.
    pub recommendation: String,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Analyses slow-path hits by cause and recommends a fix.
pub fn slow_path_analysis(snap: &StatsSnapshot) -> SlowPathAnalysis {
    let allocations: u64 = snap.classes.iter().map(|c| c.allocs).sum();
    let hits: u64 = snap.classes.iter().map(|c| c.slow_path_hits).sum();
    let closed: u64 = snap.classes.iter().map(|c| c.slow_path_epoch_closed).sum();
    let miss: u64 = snap.classes.iter().map(|c| c.slow_path_cache_miss).sum();
    let fast: u64 = snap.classes.iter().map(|c| c.lock_fast_acquire).sum();
    let contended: u64 = snap.classes.iter().map(|c| c.lock_contended).sum();
    let worst = snap
        .classes
        .iter()
        .filter(|c| c.allocs > 0)
        .map(|c| {
            (
                c.object_size,
                ratio(c.slow_path_hits, c.allocs + c.slow_path_epoch_closed),
            )
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((0, 0.0));
    let rate = ratio(hits, allocations + closed);
    let closed_share = ratio(closed, hits);
    let contended_share = ratio(contended, fast + contended);
    // One slow-path hit per slab-full of allocations is expected: ceil(allocs / slots) per
    // class (fewer when freed slots are reused in place).
    let floor_hits: u64 = snap
        .classes
        .iter()
        .map(|c| c.allocs.div_ceil(u64::from(c.slots_per_slab.max(1))))
        .sum();
    let floor = ratio(floor_hits, allocations + closed);
    let recommendation = if allocations + closed == 0 {
        "no allocations yet".to_owned()
    } else if closed_share > 0.5 {
        format!(
            "{:.0}% of slow-path hits are allocations into CLOSING or stale epochs: the application \
             allocates after epoch_close; close epochs only after their last allocation",
            closed_share * 100.0
        )
    } else if contended_share > 0.1 {
        format!(
            "{:.0}% of class-lock acquisitions blocked: threads turn slabs over in the same class \
             and epoch; give threads their own epochs or batch allocations",
            contended_share * 100.0
        )
    } else if miss > 2 * floor_hits {
        format!(
            "slow path on {:.1}% of allocations, over twice the one-per-slab-full rate of {:.1}% \
             (worst: {}-byte class at {:.1}%): epochs are closed or advanced before their slabs \
             fill; use longer-lived epochs",
            rate * 100.0,
            floor * 100.0,
            worst.0,
            worst.1 * 100.0
        )
    } else {
        format!(
            "healthy: slow path on {:.1}% of allocations (one per slab-full of objects would be \
             {:.1}%)",
            rate * 100.0,
            floor * 100.0
        )
    };
    SlowPathAnalysis {
        allocations,
        slow_path_hits: hits,
        slow_path_rate: rate,
        cache_miss_share: ratio(miss, hits),
        epoch_closed_share: closed_share,
        lock_contended_share: contended_share,
        worst_class_object_size: worst.0,
        worst_class_rate: worst.1,
        recommendation,
    }
}

/// What one `epoch_close` gave back.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct EpochReclaim {
    /// Ring index.
    pub epoch_id: u32,
    /// Era.
    pub epoch_era: u64,
    /// Label.
    pub label: String,
    /// Process RSS before / after the last close, bytes.
    pub rss_before_close: u64,
    /// See `rss_before_close`.
    pub rss_after_close: u64,
    /// `rss_before_close - rss_after_close` (0 if RSS grew meanwhile).
    pub released_bytes: u64,
    /// Slabs of this era recycled so far.
    pub recycled_slabs: u64,
}

/// Per-epoch RSS before and after the last close, for every epoch closed in its current era.
pub fn reclamation_report(snap: &StatsSnapshot) -> Vec<EpochReclaim> {
    snap.epochs
        .iter()
        .filter(|e| e.rss_before_close > 0)
        .map(|e| EpochReclaim {
            epoch_id: e.epoch_id,
            epoch_era: e.epoch_era,
            label: e.label.clone(),
            rss_before_close: e.rss_before_close,
            rss_after_close: e.rss_after_close,
            released_bytes: e.rss_before_close.saturating_sub(e.rss_after_close),
            recycled_slabs: e.recycled_slabs,
        })
        .collect()
}
