//! The stats JSON, schema version 1: the serde types, the conversion from an allocator's
//! [`StatsSnapshot`], parsing with a version check, and derived figures.
//!
//! The layout follows the original temporal-slab `stats_dump` JSON (Phase 2.0-2.5): top-level
//! `schema_version` (1), `timestamp_ns`, `pid`, `page_size`, `epoch_count`, global counters,
//! `label_registry {count, max_labels, labels}`, `classes[]` and, since Phase 2.3, an optional
//! `epochs[]` whose entries carry `epoch_id`, `epoch_era`, `state`, `age_sec` (whole seconds,
//! monotonic clock), `refcount`, `label`, `total_partial_slabs`, `total_full_slabs`,
//! `total_reclaimable_slabs` and `estimated_rss_bytes`. Our additions (`live_objects`,
//! `rss_before_close`, `rss_after_close`, the per-epoch slow-path counters, the derived class
//! rates) are optional on input, so a snapshot written by the original tools still parses.
//! The JSON Schema of this layout is `schemas/stats_v1.schema.json` ([`SCHEMA_JSON`]).

use serde::{Deserialize, Serialize};
use temporal_slab::{EpochState, StatsSnapshot};

use crate::Error;

/// The schema version this crate reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// `schemas/stats_v1.schema.json`: JSON Schema (draft 2020-12) of [`Snapshot`].
pub const SCHEMA_JSON: &str = include_str!("../../../schemas/stats_v1.schema.json");

/// One stats snapshot of one allocator (schema version 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Always [`SCHEMA_VERSION`]; [`Snapshot::from_json`] refuses any other.
    pub schema_version: u32,
    /// Wall-clock time of the snapshot, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// Process id of the allocator's process.
    pub pid: u32,
    /// Slab (page) size in bytes.
    pub page_size: u32,
    /// Epoch ring size.
    pub epoch_count: u32,
    /// Ring index of the current epoch.
    #[serde(default)]
    pub current_epoch: u32,
    /// Era of the current epoch.
    #[serde(default)]
    pub current_era: u64,
    /// Process RSS, bytes (0 when it could not be read).
    #[serde(default)]
    pub rss_bytes: u64,
    /// Slabs carved from the reservation so far.
    #[serde(default)]
    pub slabs_carved: u64,
    /// Address space reserved, bytes.
    #[serde(default)]
    pub reserved_bytes: u64,
    /// Objects allocated, all classes.
    #[serde(default)]
    pub total_allocs: u64,
    /// Objects freed, all classes.
    #[serde(default)]
    pub total_frees: u64,
    /// Slow-path allocations, all classes.
    #[serde(default)]
    pub total_slow_path_hits: u64,
    /// Slabs carved fresh, all classes.
    #[serde(default)]
    pub total_new_slabs: u64,
    /// `madvise` calls, all classes.
    #[serde(default)]
    pub total_madvise_calls: u64,
    /// Bytes given back with `madvise`, all classes.
    #[serde(default)]
    pub total_madvise_bytes: u64,
    /// Failed `madvise` calls, all classes.
    #[serde(default)]
    pub total_madvise_failures: u64,
    /// `epoch_close` calls.
    #[serde(default)]
    pub epoch_close_calls: u64,
    /// Slabs examined by `epoch_close`.
    #[serde(default)]
    pub epoch_close_scanned_slabs: u64,
    /// Slabs recycled by `epoch_close`.
    #[serde(default)]
    pub epoch_close_recycled_slabs: u64,
    /// Time spent in `epoch_close`, nanoseconds.
    #[serde(default)]
    pub epoch_close_total_ns: u64,
    /// Epochs opened by `epoch_advance`.
    #[serde(default)]
    pub epoch_advances: u64,
    /// `epoch_advance` calls refused because every other ring slot held an epoch that had not
    /// drained (`EpochRingFull`); 0 in snapshots written before the field existed.
    #[serde(default)]
    pub epoch_advance_refused: u64,
    /// Allocations refused because their epoch was CLOSING.
    #[serde(default)]
    pub epoch_closed_errors: u64,
    /// Operations refused because their epoch id was stale.
    #[serde(default)]
    pub stale_epoch_errors: u64,
    /// Frees and lookups refused because of a bad handle.
    #[serde(default)]
    pub handle_errors: u64,
    /// `free_ptr` calls refused.
    #[serde(default)]
    pub pointer_errors: u64,
    /// Requests sent to the system allocator (too large or over-aligned).
    #[serde(default)]
    pub system_fallback_allocs: u64,
    /// Bytes of those requests.
    #[serde(default)]
    pub system_fallback_bytes: u64,
    /// The label registry.
    pub label_registry: LabelRegistry,
    /// One entry per size class.
    pub classes: Vec<ClassSnapshot>,
    /// One entry per opened ring slot; absent in snapshots older than Phase 2.3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<Vec<EpochSnapshot>>,
}

/// The label registry: `labels[i]` has id `i + 1`; id 0 means unlabeled or over capacity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelRegistry {
    /// Labels registered.
    pub count: u32,
    /// Capacity.
    pub max_labels: u32,
    /// Label texts (at most 31 bytes each).
    pub labels: Vec<String>,
}

/// Per size class counters, gauges and derived rates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClassSnapshot {
    /// Class index.
    pub class: u32,
    /// Object size, bytes.
    pub object_size: u32,
    /// Objects per slab.
    pub slots_per_slab: u32,
    /// Objects allocated.
    pub allocs: u64,
    /// Objects freed.
    pub frees: u64,
    /// Allocations that took the slow path.
    pub slow_path_hits: u64,
    /// Slow-path hits because no current slab had room.
    pub slow_path_cache_miss: u64,
    /// Allocations refused because the epoch was CLOSING or stale.
    pub slow_path_epoch_closed: u64,
    /// Slabs carved fresh.
    pub new_slab_count: u64,
    /// Slabs reused from the empty cache or overflow list.
    pub cache_reuses: u64,
    /// List moves partial -> full.
    pub list_move_partial_to_full: u64,
    /// List moves full -> partial.
    pub list_move_full_to_partial: u64,
    /// Slabs orphaned when their ring slot was re-opened (always 0 from an allocator that
    /// reopens only drained slots; kept for older snapshots).
    pub list_move_to_orphan: u64,
    /// Empty slabs recycled.
    pub empty_slab_recycled: u64,
    /// Slabs in the empty cache now.
    pub empty_slab_cache_size: u64,
    /// Slabs on the overflow list now.
    pub empty_slab_overflow_size: u64,
    /// Recycled slabs that went to the overflow list.
    pub empty_slab_overflowed: u64,
    /// `madvise` calls.
    pub madvise_calls: u64,
    /// Bytes covered by `madvise`.
    pub madvise_bytes: u64,
    /// Failed `madvise` calls.
    pub madvise_failures: u64,
    /// Allocation-side bitmap CAS attempts.
    pub bitmap_alloc_attempts: u64,
    /// Allocation-side bitmap CAS failures.
    pub bitmap_alloc_cas_retries: u64,
    /// Free-side bitmap CAS attempts.
    pub bitmap_free_attempts: u64,
    /// Free-side bitmap CAS failures.
    pub bitmap_free_cas_retries: u64,
    /// Current-partial CAS attempts.
    pub current_partial_cas_attempts: u64,
    /// Current-partial CAS failures.
    pub current_partial_cas_failures: u64,
    /// Lock acquisitions won on the first try.
    pub lock_fast_acquire: u64,
    /// Lock acquisitions that blocked.
    pub lock_contended: u64,
    /// Slabs on partial lists now.
    pub total_partial_slabs: u64,
    /// Slabs on full lists now.
    pub total_full_slabs: u64,
    /// Orphaned slabs now (always 0 from an allocator that reopens only drained slots).
    pub total_orphan_slabs: u64,
    /// Live objects now.
    pub live_objects: u64,
    /// Derived: `slow_path_hits / allocs` (0 when no allocations).
    pub slow_path_rate: f64,
    /// Derived: `bitmap_alloc_cas_retries / allocs`.
    pub cas_retries_per_alloc: f64,
    /// Derived: `lock_contended / (lock_fast_acquire + lock_contended)`.
    pub lock_contention_rate: f64,
    /// Derived: slabs the class holds, `new_slab_count + cache_reuses - empty_slab_recycled`.
    pub net_slabs: i64,
    /// Per-label contention (only when the allocator was built with `label-contention`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub by_label: Vec<LabelContention>,
}

/// Contention attributed to one label id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LabelContention {
    /// Label id (0 = unlabeled).
    pub label_id: u32,
    /// Lock acquisitions won on the first try.
    pub lock_fast_acquire: u64,
    /// Lock acquisitions that blocked.
    pub lock_contended: u64,
    /// Failed allocation-side bitmap CASes.
    pub bitmap_alloc_cas_retries: u64,
}

/// One opened ring slot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochSnapshot {
    /// Ring index.
    pub epoch_id: u32,
    /// Era the slot holds.
    pub epoch_era: u64,
    /// `"ACTIVE"` or `"CLOSING"`.
    pub state: EpochState,
    /// Whole seconds since the era opened (monotonic clock).
    pub age_sec: u64,
    /// Domain refcount: threads inside the epoch plus explicit increments.
    pub refcount: u64,
    /// Label text, "" when unlabeled.
    pub label: String,
    /// Slabs with room.
    pub total_partial_slabs: u64,
    /// Full slabs.
    pub total_full_slabs: u64,
    /// Slabs with no live object not yet recycled.
    pub total_reclaimable_slabs: u64,
    /// Pages the epoch's slabs hold, bytes.
    pub estimated_rss_bytes: u64,
    /// Live objects (bitmap bits set).
    #[serde(default)]
    pub live_objects: u64,
    /// Process RSS before the last `epoch_close` of this era, bytes (0 = not closed).
    #[serde(default)]
    pub rss_before_close: u64,
    /// Process RSS after it, bytes.
    #[serde(default)]
    pub rss_after_close: u64,
    /// Slow-path allocations in this era.
    #[serde(default)]
    pub slow_path_hits: u64,
    /// Slabs carved fresh for this era.
    #[serde(default)]
    pub new_slabs: u64,
    /// Slabs of this era recycled.
    #[serde(default)]
    pub recycled_slabs: u64,
}

impl EpochSnapshot {
    /// Bytes of slabs with no live object, waiting for recycling.
    pub fn reclaimable_bytes(&self, page_size: u32) -> u64 {
        self.total_reclaimable_slabs
            .saturating_mul(u64::from(page_size))
    }
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

impl ClassSnapshot {
    /// Fills the derived fields from the counters.
    pub fn derive(&mut self) {
        self.slow_path_rate = ratio(self.slow_path_hits, self.allocs);
        self.cas_retries_per_alloc = ratio(self.bitmap_alloc_cas_retries, self.allocs);
        self.lock_contention_rate = ratio(
            self.lock_contended,
            self.lock_fast_acquire.saturating_add(self.lock_contended),
        );
        // i128 holds every difference of two u64 sums; clamped to i64 at the ends.
        let net = i128::from(self.new_slab_count) + i128::from(self.cache_reuses)
            - i128::from(self.empty_slab_recycled);
        self.net_slabs = net.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    }
}

impl From<&temporal_slab::ClassStats> for ClassSnapshot {
    fn from(c: &temporal_slab::ClassStats) -> ClassSnapshot {
        let mut out = ClassSnapshot {
            class: c.class,
            object_size: c.object_size,
            slots_per_slab: c.slots_per_slab,
            allocs: c.allocs,
            frees: c.frees,
            slow_path_hits: c.slow_path_hits,
            slow_path_cache_miss: c.slow_path_cache_miss,
            slow_path_epoch_closed: c.slow_path_epoch_closed,
            new_slab_count: c.new_slab_count,
            cache_reuses: c.cache_reuses,
            list_move_partial_to_full: c.list_move_partial_to_full,
            list_move_full_to_partial: c.list_move_full_to_partial,
            list_move_to_orphan: c.list_move_to_orphan,
            empty_slab_recycled: c.empty_slab_recycled,
            empty_slab_cache_size: c.empty_slab_cache_size,
            empty_slab_overflow_size: c.empty_slab_overflow_size,
            empty_slab_overflowed: c.empty_slab_overflowed,
            madvise_calls: c.madvise_calls,
            madvise_bytes: c.madvise_bytes,
            madvise_failures: c.madvise_failures,
            bitmap_alloc_attempts: c.bitmap_alloc_attempts,
            bitmap_alloc_cas_retries: c.bitmap_alloc_cas_retries,
            bitmap_free_attempts: c.bitmap_free_attempts,
            bitmap_free_cas_retries: c.bitmap_free_cas_retries,
            current_partial_cas_attempts: c.current_partial_cas_attempts,
            current_partial_cas_failures: c.current_partial_cas_failures,
            lock_fast_acquire: c.lock_fast_acquire,
            lock_contended: c.lock_contended,
            total_partial_slabs: c.total_partial_slabs,
            total_full_slabs: c.total_full_slabs,
            total_orphan_slabs: c.total_orphan_slabs,
            live_objects: c.live_objects,
            slow_path_rate: 0.0,
            cas_retries_per_alloc: 0.0,
            lock_contention_rate: 0.0,
            net_slabs: 0,
            by_label: c
                .by_label
                .iter()
                .map(|l| LabelContention {
                    label_id: l.label_id,
                    lock_fast_acquire: l.lock_fast_acquire,
                    lock_contended: l.lock_contended,
                    bitmap_alloc_cas_retries: l.bitmap_alloc_cas_retries,
                })
                .collect(),
        };
        out.derive();
        out
    }
}

impl From<&temporal_slab::EpochStats> for EpochSnapshot {
    fn from(e: &temporal_slab::EpochStats) -> EpochSnapshot {
        EpochSnapshot {
            epoch_id: e.epoch_id,
            epoch_era: e.epoch_era,
            state: e.state,
            age_sec: e.age_sec.max(0.0) as u64,
            refcount: e.refcount,
            label: e.label.clone(),
            total_partial_slabs: e.total_partial_slabs,
            total_full_slabs: e.total_full_slabs,
            total_reclaimable_slabs: e.total_reclaimable_slabs,
            estimated_rss_bytes: e.estimated_rss_bytes,
            live_objects: e.live_objects,
            rss_before_close: e.rss_before_close,
            rss_after_close: e.rss_after_close,
            slow_path_hits: e.slow_path_hits,
            new_slabs: e.new_slabs,
            recycled_slabs: e.recycled_slabs,
        }
    }
}

impl From<&StatsSnapshot> for Snapshot {
    fn from(s: &StatsSnapshot) -> Snapshot {
        let classes: Vec<ClassSnapshot> = s.classes.iter().map(ClassSnapshot::from).collect();
        Snapshot {
            schema_version: SCHEMA_VERSION,
            timestamp_ns: s.timestamp_ns,
            pid: s.pid,
            page_size: s.page_size,
            epoch_count: s.epoch_count,
            current_epoch: s.current_epoch,
            current_era: s.current_era,
            rss_bytes: s.rss_bytes,
            slabs_carved: s.slabs_carved,
            reserved_bytes: s.reserved_bytes,
            total_allocs: saturating_sum(classes.iter().map(|c| c.allocs)),
            total_frees: saturating_sum(classes.iter().map(|c| c.frees)),
            total_slow_path_hits: s.total_slow_path_hits,
            total_new_slabs: s.total_new_slabs,
            total_madvise_calls: s.total_madvise_calls,
            total_madvise_bytes: s.total_madvise_bytes,
            total_madvise_failures: s.total_madvise_failures,
            epoch_close_calls: s.epoch_close_calls,
            epoch_close_scanned_slabs: s.epoch_close_scanned_slabs,
            epoch_close_recycled_slabs: s.epoch_close_recycled_slabs,
            epoch_close_total_ns: s.epoch_close_total_ns,
            epoch_advances: s.epoch_advances,
            epoch_advance_refused: s.epoch_advance_refused,
            epoch_closed_errors: s.epoch_closed_errors,
            stale_epoch_errors: s.stale_epoch_errors,
            handle_errors: s.handle_errors,
            pointer_errors: s.pointer_errors,
            system_fallback_allocs: s.system_fallback_allocs,
            system_fallback_bytes: s.system_fallback_bytes,
            label_registry: LabelRegistry {
                count: s.label_registry.count,
                max_labels: s.label_registry.max_labels,
                labels: s.label_registry.labels.clone(),
            },
            classes,
            epochs: Some(s.epochs.iter().map(EpochSnapshot::from).collect()),
        }
    }
}

/// Sums counters, saturating at `u64::MAX` instead of wrapping: every per-class sum in the
/// snapshot helpers, `stats`, `export`, `top` and `diff` goes through it, so a (hostile or
/// corrupt) snapshot whose counters add past 2^64 shows `u64::MAX`, never a small wrapped number
/// and never a panic.
pub fn saturating_sum(values: impl IntoIterator<Item = u64>) -> u64 {
    values.into_iter().fold(0, u64::saturating_add)
}

impl Snapshot {
    /// Snapshot of a live allocator.
    pub fn of(alloc: &temporal_slab::SlabAllocator) -> Snapshot {
        Snapshot::from(&alloc.stats())
    }

    /// Parses a stats JSON document.
    ///
    /// # Errors
    /// [`Error::Json`] for malformed JSON or a field of the wrong type (with line and column),
    /// [`Error::MissingSchemaVersion`] and [`Error::UnknownSchemaVersion`] for a document that
    /// is not schema version 1. `origin` names the document in the error (a path, `-`, a URL).
    pub fn from_json(text: &str, origin: &str) -> Result<Snapshot, Error> {
        #[derive(Deserialize)]
        struct Version {
            schema_version: Option<serde_json::Value>,
        }
        let json_err = |source| Error::Json {
            origin: origin.to_owned(),
            source,
        };
        let version: Version = serde_json::from_str(text).map_err(json_err)?;
        match version.schema_version {
            None => {
                return Err(Error::MissingSchemaVersion {
                    origin: origin.to_owned(),
                });
            }
            Some(v) if v.as_u64() != Some(u64::from(SCHEMA_VERSION)) => {
                return Err(Error::UnknownSchemaVersion {
                    origin: origin.to_owned(),
                    found: v.to_string(),
                });
            }
            Some(_) => {}
        }
        let mut snap: Snapshot = serde_json::from_str(text).map_err(json_err)?;
        for class in &mut snap.classes {
            class.derive();
        }
        Ok(snap)
    }

    /// The snapshot as pretty-printed JSON.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("a Snapshot always serializes")
    }

    /// Epoch entries, empty when the snapshot has none.
    pub fn epochs(&self) -> &[EpochSnapshot] {
        self.epochs.as_deref().unwrap_or(&[])
    }

    /// Slabs the size classes hold now (partial + full + orphan), times the page size: the
    /// allocator's own estimate of its resident bytes.
    pub fn estimated_slab_rss_bytes(&self) -> u64 {
        saturating_sum(self.classes.iter().map(|c| {
            c.total_partial_slabs
                .saturating_add(c.total_full_slabs)
                .saturating_add(c.total_orphan_slabs)
        }))
        .saturating_mul(u64::from(self.page_size))
    }

    /// Sum of the class lock acquisitions (fast + contended).
    pub fn lock_acquisitions(&self) -> u64 {
        saturating_sum(
            self.classes
                .iter()
                .map(|c| c.lock_fast_acquire.saturating_add(c.lock_contended)),
        )
    }

    /// Sum of the contended class lock acquisitions.
    pub fn lock_contended(&self) -> u64 {
        saturating_sum(self.classes.iter().map(|c| c.lock_contended))
    }

    /// Allocations, all classes (from the classes, so old snapshots without `total_allocs` work).
    pub fn allocs(&self) -> u64 {
        saturating_sum(self.classes.iter().map(|c| c.allocs))
    }

    /// `total_slow_path_hits / allocs`, 0 with no allocations.
    pub fn slow_path_rate(&self) -> f64 {
        ratio(
            saturating_sum(self.classes.iter().map(|c| c.slow_path_hits)),
            self.allocs(),
        )
    }

    /// `lock_contended / lock_acquisitions`, 0 with no acquisitions.
    pub fn lock_contention_rate(&self) -> f64 {
        ratio(self.lock_contended(), self.lock_acquisitions())
    }

    /// Label text of label id `id` ("" for 0 or unknown ids).
    pub fn label_text(&self, id: u32) -> &str {
        id.checked_sub(1)
            .and_then(|i| self.label_registry.labels.get(i as usize))
            .map_or("", String::as_str)
    }
}
