//! Statistics: the relaxed counters the allocator keeps, and the snapshot types it returns.
//!
//! Counters are plain relaxed atomics, outside every synchronization protocol; they stay std
//! atomics under `--cfg loom`. Counters touched on every allocation or free live in per-shard
//! cache lines (one shard per thread, see [`crate::allocator`]), so threads never share a line
//! for them; the rest are touched only on the slow path. A snapshot reads them while other
//! threads allocate: each value is exact at some instant, the set is consistent enough for
//! rates and ratios but not a transaction.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::epoch::{EPOCH_COUNT, EpochState};

/// Number of label-id buckets of the per-label counters: id 0 plus [`crate::MAX_LABELS`].
pub const LABEL_BUCKETS: usize = crate::epoch::MAX_LABELS + 1;

#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    #[inline]
    pub(crate) fn inc(&self) {
        self.add(1);
    }
    /// Adds one with a plain load and store: no locked instruction. Only for counters that one
    /// thread alone ever writes (readers still see whole values: the cell is atomic).
    #[inline]
    pub(crate) fn bump_single_writer(&self) {
        self.0
            .store(self.0.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
    /// Adds `n` with a plain load and store (see [`Counter::bump_single_writer`]).
    #[inline]
    pub(crate) fn add_single_writer(&self, n: u64) {
        self.0
            .store(self.0.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }
    #[inline]
    pub(crate) fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }
    #[inline]
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Per size class counters touched when slabs are carved, recycled or orphaned, and the class
/// lock's acquisitions (slow-path counters of the shards live beside each shard).
#[derive(Debug, Default)]
pub(crate) struct ClassCounters {
    pub slow_path_epoch_closed: Counter,
    pub new_slabs: Counter,
    pub recycled_slabs: Counter,
    pub cache_pushes: Counter,
    pub overflow_pushes: Counter,
    pub cache_reuses: Counter,
    pub cache_size: Counter,
    pub overflow_size: Counter,
    pub madvise_calls: Counter,
    pub madvise_bytes: Counter,
    pub madvise_failures: Counter,
    pub slot_table_madvise_calls: Counter,
    pub lock_fast: Counter,
    pub lock_contended: Counter,
    #[cfg(feature = "label-contention")]
    pub lock_fast_by_label: [Counter; LABEL_BUCKETS],
    #[cfg(feature = "label-contention")]
    pub lock_contended_by_label: [Counter; LABEL_BUCKETS],
    #[cfg(feature = "label-contention")]
    pub alloc_cas_retries_by_label: [Counter; LABEL_BUCKETS],
}

/// Per (class, epoch) counters, reset when the ring slot is re-opened.
#[derive(Debug, Default)]
pub(crate) struct ClassEpochCounters {
    pub new_slabs: Counter,
    pub recycled_slabs: Counter,
}

/// Allocator-wide counters.
#[derive(Debug, Default)]
pub(crate) struct GlobalCounters {
    pub epoch_close_calls: Counter,
    pub epoch_close_scanned_slabs: Counter,
    pub epoch_close_recycled_slabs: Counter,
    pub epoch_close_total_ns: Counter,
    pub epoch_advances: Counter,
    pub epoch_advance_refused: Counter,
    pub epoch_closed_errors: Counter,
    pub stale_epoch_errors: Counter,
    pub handle_errors: Counter,
    pub pointer_errors: Counter,
    pub system_fallback_allocs: Counter,
    pub system_fallback_bytes: Counter,
}

/// Per size class figures of a [`StatsSnapshot`].
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct ClassStats {
    /// Class index, 0..8.
    pub class: u32,
    /// Object size in bytes.
    pub object_size: u32,
    /// Objects per 4 KiB slab.
    pub slots_per_slab: u32,
    /// Objects handed out (successful bitmap claims that were kept). 0 when the crate is built
    /// without the default feature `fast-path-counters`.
    pub allocs: u64,
    /// Objects freed (0 without `fast-path-counters`).
    pub frees: u64,
    /// Allocations that took the slow path (any cause).
    pub slow_path_hits: u64,
    /// Slow-path hits because no current-partial slab had room (needed another slab).
    pub slow_path_cache_miss: u64,
    /// Allocation attempts refused because the epoch was CLOSING (or stale).
    pub slow_path_epoch_closed: u64,
    /// Slabs carved fresh from the reservation.
    pub new_slab_count: u64,
    /// Slabs taken from the empty cache or overflow list instead of carving a new one.
    pub cache_reuses: u64,
    /// List moves: partial (or current) -> full.
    pub list_move_partial_to_full: u64,
    /// List moves: full -> partial, when a free made room.
    pub list_move_full_to_partial: u64,
    /// Always 0: a ring slot is reopened only after its epoch drained, so no slab is ever
    /// orphaned (kept so older readers of the stats find the field).
    pub list_move_to_orphan: u64,
    /// Empty slabs recycled (pages returned, slab cached for reuse).
    pub empty_slab_recycled: u64,
    /// Slabs in the bounded empty cache now.
    pub empty_slab_cache_size: u64,
    /// Slabs on the overflow list now.
    pub empty_slab_overflow_size: u64,
    /// Recycled slabs that went to the overflow list because the cache was full.
    pub empty_slab_overflowed: u64,
    /// `madvise(MADV_DONTNEED)` calls, bytes they covered, and failed calls.
    pub madvise_calls: u64,
    /// See `madvise_calls`.
    pub madvise_bytes: u64,
    /// See `madvise_calls`.
    pub madvise_failures: u64,
    /// `madvise` calls that returned pages of the slot-word table (the out-of-line generation
    /// words) with the slabs they describe: one per recycled range that covers a whole table
    /// page (16 slabs). Not in `madvise_calls`, which counts calls on slab pages.
    #[cfg_attr(feature = "serde", serde(default))]
    pub slot_table_madvise_calls: u64,
    /// Bitmap CAS attempts and failed attempts, allocation side.
    pub bitmap_alloc_attempts: u64,
    /// See `bitmap_alloc_attempts`.
    pub bitmap_alloc_cas_retries: u64,
    /// Bitmap CAS attempts and failed attempts, free side.
    pub bitmap_free_attempts: u64,
    /// See `bitmap_free_attempts`.
    pub bitmap_free_cas_retries: u64,
    /// Slabs published into runs (the fast path's current slabs), all shards. Runs are
    /// written only under the shard lock, so there is no CAS to fail any more.
    pub current_partial_cas_attempts: u64,
    /// Always 0 (see `current_partial_cas_attempts`).
    pub current_partial_cas_failures: u64,
    /// Class-lock acquisitions that succeeded on the first try-lock probe.
    pub lock_fast_acquire: u64,
    /// Class-lock acquisitions that found the lock held and blocked.
    pub lock_contended: u64,
    /// Slabs on partial lists (including published current slabs with room), all epochs.
    pub total_partial_slabs: u64,
    /// Slabs on full lists, all epochs.
    pub total_full_slabs: u64,
    /// Always 0 (see `list_move_to_orphan`): slabs of an epoch that has not drained stay
    /// attributed to it.
    pub total_orphan_slabs: u64,
    /// Live objects of this class, all epochs.
    pub live_objects: u64,
    /// Per-label counters, indexed by label id (feature `label-contention`; empty without it).
    pub by_label: Vec<LabelContention>,
}

/// Contention attributed to one label id (feature `label-contention`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct LabelContention {
    /// Label id (0 = unlabeled).
    pub label_id: u32,
    /// Lock acquisitions won on the try-lock probe.
    pub lock_fast_acquire: u64,
    /// Lock acquisitions that blocked.
    pub lock_contended: u64,
    /// Failed allocation-side bitmap CASes.
    pub bitmap_alloc_cas_retries: u64,
}

/// Per epoch figures of a [`StatsSnapshot`].
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct EpochStats {
    /// Ring index, 0..16.
    pub epoch_id: u32,
    /// Era the slot holds (0 = never opened).
    pub epoch_era: u64,
    /// ACTIVE or CLOSING.
    pub state: EpochState,
    /// Monotonic nanoseconds since the allocator was created, when this era opened.
    pub open_since_ns: u64,
    /// Seconds since the era opened (monotonic clock).
    pub age_sec: f64,
    /// Domain refcount.
    pub refcount: u64,
    /// Label text ("" = unlabeled).
    pub label: String,
    /// Label id in the registry (0 = unlabeled or over capacity).
    pub label_id: u32,
    /// Live objects (set bitmap bits), separate from the refcount.
    pub live_objects: u64,
    /// Slabs with room (partial lists and published current slabs).
    pub total_partial_slabs: u64,
    /// Full slabs.
    pub total_full_slabs: u64,
    /// Slabs with no live object that are not yet recycled (recycled by `epoch_close`).
    pub total_reclaimable_slabs: u64,
    /// Pages the epoch's slabs hold, in bytes (slabs x 4096).
    pub estimated_rss_bytes: u64,
    /// Process RSS before / after the last `epoch_close` of this era, bytes (0 = not closed).
    pub rss_before_close: u64,
    /// See `rss_before_close`.
    pub rss_after_close: u64,
    /// Slow-path hits of allocations in this era.
    pub slow_path_hits: u64,
    /// Slabs carved fresh for this era.
    pub new_slabs: u64,
    /// Slabs of this era recycled so far.
    pub recycled_slabs: u64,
}

/// The label registry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct LabelRegistry {
    /// Labels registered (ids 1..=count).
    pub count: u32,
    /// Capacity (16).
    pub max_labels: u32,
    /// `labels[i]` has id `i + 1`.
    pub labels: Vec<String>,
}

/// Everything the allocator knows, in one struct. See the module docs for consistency.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Wall-clock time of the snapshot, nanoseconds since the Unix epoch (for people).
    pub timestamp_ns: u64,
    /// Process id.
    pub pid: u32,
    /// Slab size in bytes (4096).
    pub page_size: u32,
    /// Epoch ring size (16).
    pub epoch_count: u32,
    /// Ring index of the current epoch.
    pub current_epoch: u32,
    /// Era of the current epoch.
    pub current_era: u64,
    /// Process RSS now, bytes (`/proc/self/statm`; 0 if unreadable).
    pub rss_bytes: u64,
    /// Slabs carved from the reservation so far (never shrinks).
    pub slabs_carved: u64,
    /// Bytes of address space reserved.
    pub reserved_bytes: u64,
    /// Sum over classes.
    pub total_slow_path_hits: u64,
    /// Sum over classes.
    pub total_new_slabs: u64,
    /// Sum over classes.
    pub total_madvise_calls: u64,
    /// Sum over classes.
    pub total_madvise_bytes: u64,
    /// Sum over classes.
    pub total_madvise_failures: u64,
    /// `epoch_close` calls (each counted once).
    pub epoch_close_calls: u64,
    /// Slabs examined by `epoch_close`, all calls.
    pub epoch_close_scanned_slabs: u64,
    /// Slabs recycled by `epoch_close`, all calls.
    pub epoch_close_recycled_slabs: u64,
    /// Time spent in `epoch_close`, all calls, nanoseconds.
    pub epoch_close_total_ns: u64,
    /// Epochs opened by `epoch_advance`.
    pub epoch_advances: u64,
    /// `epoch_advance` calls refused with `EpochRingFull` (every other ring slot held by an
    /// epoch that has not drained).
    #[cfg_attr(feature = "serde", serde(default))]
    pub epoch_advance_refused: u64,
    /// Allocations refused because their epoch was closing.
    pub epoch_closed_errors: u64,
    /// Operations refused because their epoch id was stale.
    pub stale_epoch_errors: u64,
    /// Frees/gets refused: wrong allocator, invalid, stale or double-freed handles.
    pub handle_errors: u64,
    /// `free_ptr` calls refused: not a live object of this allocator.
    pub pointer_errors: u64,
    /// `Allocator`-trait requests over 768 bytes (or over 16-byte alignment) sent to the system
    /// allocator, and their bytes.
    pub system_fallback_allocs: u64,
    /// See `system_fallback_allocs`.
    pub system_fallback_bytes: u64,
    /// The label registry.
    pub label_registry: LabelRegistry,
    /// One entry per size class.
    pub classes: Vec<ClassStats>,
    /// One entry per ring slot that has been opened, by ring index.
    pub epochs: Vec<EpochStats>,
}

impl StatsSnapshot {
    /// Epoch entries of the given state.
    pub fn epochs_in(&self, state: EpochState) -> impl Iterator<Item = &EpochStats> {
        self.epochs.iter().filter(move |e| e.state == state)
    }
}

const _: () = assert!(EPOCH_COUNT == 16);
