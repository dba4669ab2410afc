//! Every lock of the allocator at once, in the one order the rest of the code takes them in:
//! what a `fork` handler holds across the `fork` so the child never inherits a lock that a
//! thread which does not exist in the child was holding (see `crate::global`).

use std::sync::MutexGuard;

use super::{ClassLists, SHARDS, ShardLists, SlabAllocator, lock};
use crate::class::CLASS_COUNT;
use crate::epoch::Labels;

/// Guards of every mutex of one allocator; dropping it releases them all.
///
/// The order they are taken in is the allocator's lock order (see the module docs of
/// `allocator`): `next_era` (held by `epoch_advance` while it sweeps shards and resets
/// labels), `labels`, then per class its shard locks 0..[`SHARDS`] and the class lock, class
/// after class, then `grow`. Every thread that holds one of these locks and waits for another
/// waits only for one later in this order (a second shard lock is only ever *tried*, never
/// waited for; no two classes' locks are held together elsewhere), so taking them all in this
/// order cannot deadlock with the allocator's own paths. Lock holders never allocate, so no
/// holder is waiting for the global allocator either.
#[derive(Debug)]
#[must_use = "the locks are released as soon as the value is dropped"]
pub(crate) struct AllLocks<'a> {
    // Fields drop in declaration order; the release order does not matter for correctness.
    _grow: Option<MutexGuard<'a, u32>>,
    _classes: [Option<MutexGuard<'a, ClassLists>>; CLASS_COUNT],
    _shards: [[Option<MutexGuard<'a, ShardLists>>; SHARDS]; CLASS_COUNT],
    _labels: Option<MutexGuard<'a, Labels>>,
    _next_era: Option<MutexGuard<'a, u64>>,
}

impl SlabAllocator {
    /// Takes every lock of the allocator in lock order (see [`AllLocks`]). Blocks until each is
    /// free. Allocates nothing.
    pub(crate) fn lock_all(&self) -> AllLocks<'_> {
        let mut all = AllLocks {
            _grow: None,
            _classes: [const { None }; CLASS_COUNT],
            _shards: [const { [const { None }; SHARDS] }; CLASS_COUNT],
            _labels: None,
            _next_era: None,
        };
        // Explicit loops, so the order is the one written here.
        all._next_era = Some(lock(&self.next_era));
        all._labels = Some(lock(&self.labels));
        for (c, class) in self.classes.iter().enumerate() {
            for (s, shard) in class.shards.iter().enumerate() {
                all._shards[c][s] = Some(lock(&shard.lists));
            }
            all._classes[c] = Some(lock(&class.lists));
        }
        all._grow = Some(lock(&self.grow));
        all
    }
}

#[cfg(test)]
mod tests {
    use crate::SlabAllocator;

    #[test]
    fn lock_all_holds_every_lock_and_releases_them_on_drop() {
        let slab = SlabAllocator::new().unwrap();
        let e = slab.epoch_current();
        let held = slab.lock_all();
        std::thread::scope(|s| {
            let t = s.spawn(|| {
                // Blocks on the first slow path (shard lock) until `held` is dropped.
                let p = slab.alloc_ptr(64, e).unwrap();
                slab.free_ptr(p).unwrap();
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(
                !t.is_finished(),
                "an allocation went through while every lock was held"
            );
            drop(held);
            t.join().unwrap();
        });
        // Nothing stays locked: every path still works.
        let next = slab.epoch_advance().unwrap();
        slab.set_label(next, "after").unwrap();
        slab.epoch_close(e).unwrap();
        let _ = slab.stats();
    }
}
