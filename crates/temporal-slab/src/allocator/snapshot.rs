//! [`SlabAllocator::stats`]: one snapshot of every counter and every epoch.

use super::{Shard, SlabAllocator, lock};
use crate::SLAB_SIZE;
use crate::class::CLASS_COUNT;
use crate::epoch::EPOCH_COUNT;
use crate::slab::{FULL, load_current};
use crate::stats::{
    ClassCounters, ClassEpochCounters, ClassStats, Counter, EpochStats, LabelRegistry,
    StatsSnapshot,
};
use crate::sync::Ordering;

impl SlabAllocator {
    /// A snapshot of every counter and every epoch (see [`StatsSnapshot`]). Takes each class
    /// lock briefly to walk the lists (no allocation while a lock is held); never blocks the fast
    /// path.
    pub fn stats(&self) -> StatsSnapshot {
        #[derive(Clone, Copy, Default)]
        struct Acc {
            partial: u64,
            full: u64,
            reclaimable: u64,
            live: u64,
        }
        impl std::ops::Add for Acc {
            type Output = Acc;
            fn add(self, o: Acc) -> Acc {
                Acc {
                    partial: self.partial + o.partial,
                    full: self.full + o.full,
                    reclaimable: self.reclaimable + o.reclaimable,
                    live: self.live + o.live,
                }
            }
        }
        let (registry, registry_len, epoch_labels) = {
            let l = lock(&self.labels);
            (l.registry, l.registry_len, l.epoch)
        };
        let mut per_epoch = [[Acc::default(); EPOCH_COUNT]; CLASS_COUNT];
        for (class, c) in self.classes.iter().enumerate() {
            let slots = c.shape.slots;
            let count = |acc: &mut Acc, slab: u32, full: bool| {
                let live = u64::from(self.meta(slab).live(slots));
                if full {
                    acc.full += 1;
                } else {
                    acc.partial += 1;
                }
                acc.reclaimable += u64::from(live == 0);
                acc.live += live;
            };
            for shard in &c.shards {
                let sl = lock(&shard.lists);
                for (index, acc) in per_epoch[class].iter_mut().enumerate() {
                    let mut next = sl.partial[index].head;
                    while next != 0 {
                        count(acc, next - 1, false);
                        next = self.meta(next - 1).next.load(Ordering::Relaxed);
                    }
                    let full = u64::from(sl.full[index]);
                    acc.full += full;
                    acc.live += full * slots as u64;
                    for word in &shard.runs[index].slabs {
                        if let Some(slab) = load_current(word) {
                            let full = self.meta(slab).bitmap.load(Ordering::Relaxed) == FULL;
                            count(acc, slab, full);
                        }
                    }
                }
            }
        }

        let now = self.now_ns();
        let mut snap = StatsSnapshot {
            timestamp_ns: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            pid: std::process::id(),
            page_size: SLAB_SIZE as u32,
            epoch_count: EPOCH_COUNT as u32,
            current_epoch: 0,
            current_era: 0,
            rss_bytes: crate::rss::process_rss_bytes().unwrap_or(0),
            slabs_carved: u64::from(*lock(&self.grow)),
            reserved_bytes: self.data.len() as u64,
            total_slow_path_hits: 0,
            total_new_slabs: 0,
            total_madvise_calls: 0,
            total_madvise_bytes: 0,
            total_madvise_failures: 0,
            epoch_close_calls: self.counters.epoch_close_calls.get(),
            epoch_close_scanned_slabs: self.counters.epoch_close_scanned_slabs.get(),
            epoch_close_recycled_slabs: self.counters.epoch_close_recycled_slabs.get(),
            epoch_close_total_ns: self.counters.epoch_close_total_ns.get(),
            epoch_advances: self.counters.epoch_advances.get(),
            epoch_advance_refused: self.counters.epoch_advance_refused.get(),
            epoch_closed_errors: self.counters.epoch_closed_errors.get(),
            stale_epoch_errors: self.counters.stale_epoch_errors.get(),
            handle_errors: self.counters.handle_errors.get(),
            pointer_errors: self.counters.pointer_errors.get(),
            system_fallback_allocs: self.counters.system_fallback_allocs.get(),
            system_fallback_bytes: self.counters.system_fallback_bytes.get(),
            label_registry: LabelRegistry {
                count: registry_len as u32,
                max_labels: crate::MAX_LABELS as u32,
                labels: registry[..registry_len]
                    .iter()
                    .map(|l| l.as_str().to_owned())
                    .collect(),
            },
            classes: Vec::with_capacity(CLASS_COUNT),
            epochs: Vec::with_capacity(EPOCH_COUNT),
        };
        let current = self.epoch_current();
        snap.current_epoch = current.index as u32;
        snap.current_era = current.era;

        for (class, c) in self.classes.iter().enumerate() {
            let k = &c.counters;
            let sum = |f: fn(&Shard) -> &Counter| c.shards.iter().map(|s| f(s).get()).sum::<u64>();
            let allocs = sum(|s| &s.allocs_owned) + sum(|s| &s.allocs_shared);
            let alloc_retries = sum(|s| &s.alloc_retries);
            let frees = sum(|s| &s.frees_owned) + sum(|s| &s.frees_shared);
            let free_retries = sum(|s| &s.free_retries);
            let cache_miss = sum(|s| &s.slow.cache_miss);
            let lock_fast = sum(|s| &s.slow.lock_fast) + k.lock_fast.get();
            let lock_contended = sum(|s| &s.slow.lock_contended) + k.lock_contended.get();
            let acc = per_epoch[class].iter().fold(Acc::default(), |a, &e| a + e);
            let stats = ClassStats {
                class: class as u32,
                object_size: c.shape.size as u32,
                slots_per_slab: c.shape.slots as u32,
                allocs,
                frees,
                slow_path_hits: cache_miss + k.slow_path_epoch_closed.get(),
                slow_path_cache_miss: cache_miss,
                slow_path_epoch_closed: k.slow_path_epoch_closed.get(),
                new_slab_count: k.new_slabs.get(),
                cache_reuses: k.cache_reuses.get(),
                list_move_partial_to_full: sum(|s| &s.slow.moves_to_full),
                list_move_full_to_partial: sum(|s| &s.slow.moves_to_partial),
                list_move_to_orphan: 0,
                empty_slab_recycled: k.recycled_slabs.get(),
                empty_slab_cache_size: k.cache_size.get(),
                empty_slab_overflow_size: k.overflow_size.get(),
                empty_slab_overflowed: k.overflow_pushes.get(),
                madvise_calls: k.madvise_calls.get(),
                madvise_bytes: k.madvise_bytes.get(),
                madvise_failures: k.madvise_failures.get(),
                slot_table_madvise_calls: k.slot_table_madvise_calls.get(),
                bitmap_alloc_attempts: allocs + alloc_retries,
                bitmap_alloc_cas_retries: alloc_retries,
                bitmap_free_attempts: frees + free_retries,
                bitmap_free_cas_retries: free_retries,
                current_partial_cas_attempts: sum(|s| &s.slow.run_publications),
                current_partial_cas_failures: 0,
                lock_fast_acquire: lock_fast,
                lock_contended,
                total_partial_slabs: acc.partial,
                total_full_slabs: acc.full,
                total_orphan_slabs: 0,
                live_objects: acc.live,
                by_label: label_contention(k),
            };
            snap.total_slow_path_hits += stats.slow_path_hits;
            snap.total_new_slabs += stats.new_slab_count;
            snap.total_madvise_calls += stats.madvise_calls;
            snap.total_madvise_bytes += stats.madvise_bytes;
            snap.total_madvise_failures += stats.madvise_failures;
            snap.classes.push(stats);
        }

        for (index, slot) in self.epochs.iter().enumerate() {
            let (era, state) = slot.era_state();
            if era == 0 {
                continue;
            }
            let acc = (0..CLASS_COUNT).fold(Acc::default(), |a, class| a + per_epoch[class][index]);
            let opened = slot.opened_ns.load(Ordering::Relaxed);
            let per_class = |f: fn(&ClassEpochCounters) -> &Counter| {
                self.classes
                    .iter()
                    .map(|c| f(&c.per_epoch[index]).get())
                    .sum::<u64>()
            };
            snap.epochs.push(EpochStats {
                epoch_id: index as u32,
                epoch_era: era,
                state,
                open_since_ns: opened,
                age_sec: now.saturating_sub(opened) as f64 / 1e9,
                refcount: slot.refcount_any(),
                label: epoch_labels[index].as_str().to_owned(),
                label_id: slot.label_id.load(Ordering::Relaxed),
                live_objects: acc.live,
                total_partial_slabs: acc.partial,
                total_full_slabs: acc.full,
                total_reclaimable_slabs: acc.reclaimable,
                estimated_rss_bytes: (acc.partial + acc.full) * SLAB_SIZE as u64,
                rss_before_close: slot.rss_before_close.load(Ordering::Relaxed),
                rss_after_close: slot.rss_after_close.load(Ordering::Relaxed),
                slow_path_hits: self
                    .classes
                    .iter()
                    .flat_map(|c| c.shards.iter())
                    .map(|s| s.slow.slow_hits[index].get())
                    .sum(),
                new_slabs: per_class(|c| &c.new_slabs),
                recycled_slabs: per_class(|c| &c.recycled_slabs),
            });
        }
        snap
    }
}

#[cfg(feature = "label-contention")]
fn label_contention(k: &ClassCounters) -> Vec<crate::stats::LabelContention> {
    (0..crate::stats::LABEL_BUCKETS)
        .map(|id| crate::stats::LabelContention {
            label_id: id as u32,
            lock_fast_acquire: k.lock_fast_by_label[id].get(),
            lock_contended: k.lock_contended_by_label[id].get(),
            bitmap_alloc_cas_retries: k.alloc_cas_retries_by_label[id].get(),
        })
        .collect()
}

#[cfg(not(feature = "label-contention"))]
fn label_contention(_: &ClassCounters) -> Vec<crate::stats::LabelContention> {
    Vec::new()
}
