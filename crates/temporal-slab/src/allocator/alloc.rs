//! Allocation: the lock-free fast path over a shard's run, and the slow path that refills it.

use std::ptr::NonNull;
use std::sync::TryLockError;

use super::{
    CHUNK_SLABS, Class, META_SIZE, SHARDS, Shard, SlabAllocator, WORDS_SIZE, lock, shard_index,
};
use crate::class::{SHAPES, class_for_size};
use crate::epoch::{EpochId, pack_state};
use crate::handle::Handle;
use crate::slab::{Claim, FULL, ListKind, RUN_MAX, era_tag, load_current, publish, retire};
use crate::sync::Ordering;
use crate::{Error, MAX_OBJECT_SIZE, Result, SLAB_SIZE};

#[cfg(feature = "fast-path-counters")]
use super::count_one;

impl SlabAllocator {
    /// Allocates an object of `size` bytes (at most 768) in `epoch` and returns its handle.
    /// The object is 16-byte aligned; its bytes are unspecified (zero on a fresh or recycled
    /// page, the previous object's bytes on reuse).
    ///
    /// # Errors
    /// [`Error::TooLarge`], [`Error::EpochClosed`], [`Error::StaleEpoch`],
    /// [`Error::OutOfMemory`], [`Error::Map`].
    #[inline]
    pub fn alloc(&self, size: usize, epoch: EpochId) -> Result<Handle> {
        let class = class_for_size(size).ok_or(Error::TooLarge {
            size,
            max: MAX_OBJECT_SIZE,
        })?;
        let (slab, slot) = self.alloc_slot(class, epoch)?;
        let generation = crate::slab::mark_allocated(self.meta(slab), self.slot_word(slab, slot));
        Ok(Handle::pack(self.tag, slab, slot, generation))
    }

    /// Allocates like [`SlabAllocator::alloc`] and returns the object's address, malloc-style.
    /// The pointer is valid for `size` bytes until [`SlabAllocator::free_ptr`] or until the
    /// allocator is dropped.
    ///
    /// # Errors
    /// As [`SlabAllocator::alloc`].
    #[inline]
    pub fn alloc_ptr(&self, size: usize, epoch: EpochId) -> Result<NonNull<u8>> {
        let class = class_for_size(size).ok_or(Error::TooLarge {
            size,
            max: MAX_OBJECT_SIZE,
        })?;
        let (slab, slot) = self.alloc_slot(class, epoch)?;
        crate::slab::mark_allocated(self.meta(slab), self.slot_word(slab, slot));
        Ok(self.object(slab, slot, &SHAPES[class]))
    }

    /// Claims a slot of `class` in `epoch`: the lock-free fast path over this thread's shard's
    /// run, from the cursor on, falling back to [`SlabAllocator::alloc_slow`] when every slab of
    /// the run is full.
    #[inline]
    fn alloc_slot(&self, class: usize, epoch: EpochId) -> Result<(u32, u32)> {
        let c = &self.classes[class];
        let (shard_ix, owner) = super::thread_shard();
        let shard = &c.shards[shard_ix];
        let run = &shard.runs[epoch.index()];
        let live = pack_state(epoch.era, false);
        let tag = era_tag(epoch.era);
        loop {
            // SYNC POINT: Acquire pairs with the Release stores of `state` in `epoch_advance`.
            let state = self.epochs[epoch.index()].state.load(Ordering::Acquire);
            if state != live {
                return Err(self.refuse(class, epoch, state));
            }
            let mut i = run.cursor.load(Ordering::Relaxed) as usize;
            while i < c.run_len {
                if let Some(slab) = load_current(&run.slabs[i]) {
                    let meta = self.meta(slab);
                    match meta.claim() {
                        Claim::Claimed { slot, retries } => {
                            self.count_alloc_retries(c, shard, epoch, retries);
                            // The claim's Acquire makes the era of a reopened slab visible.
                            if meta.era.load(Ordering::Relaxed) == tag {
                                #[cfg(feature = "fast-path-counters")]
                                count_one(&shard.allocs_owned, &shard.allocs_shared, owner);
                                return Ok((slab, slot));
                            }
                            // The slab was retired, recycled and reopened for another era
                            // between our load of the run and our claim: give the slot back.
                            self.release_slot(class, slab, slot, shard, None);
                            break;
                        }
                        Claim::Full { retries } => {
                            self.count_alloc_retries(c, shard, epoch, retries);
                        }
                    }
                }
                i += 1;
                run.cursor.store(i as u32, Ordering::Relaxed);
            }
            if i >= c.run_len {
                self.alloc_slow(class, epoch)?;
            }
        }
    }

    #[inline]
    fn count_alloc_retries(&self, c: &Class, shard: &Shard, epoch: EpochId, retries: u32) {
        if retries > 0 {
            shard.alloc_retries.add(u64::from(retries));
            #[cfg(feature = "label-contention")]
            {
                let id = self.epochs[epoch.index()].label_id.load(Ordering::Relaxed) as usize;
                c.counters.alloc_cas_retries_by_label[id].add(u64::from(retries));
            }
            let _ = (c, epoch);
        }
    }

    /// Counts and builds the error for an allocation into a non-ACTIVE or stale epoch.
    #[cold]
    fn refuse(&self, class: usize, epoch: EpochId, state: u64) -> Error {
        self.classes[class].counters.slow_path_epoch_closed.inc();
        if state >> 1 == epoch.era {
            self.counters.epoch_closed_errors.inc();
            Error::EpochClosed {
                epoch: epoch.index,
                era: epoch.era,
            }
        } else {
            self.stale(epoch, state >> 1)
        }
    }

    /// Slow path, under this thread's shard lock. If a slab of the run has room again (another
    /// thread of the shard refilled it, or frees made room), point the cursor at it. Otherwise
    /// file every slab of the run (full ones counted, others on the partial list) and publish a
    /// new run of up to `run_len` slabs: the shard's partial slabs of the epoch first, then
    /// recycled ones from the cache or overflow list; only when that found nothing, slabs stolen
    /// from other shards, and failing those a full run carved fresh from the reservation.
    /// Returns so the caller retries the fast path.
    #[cold]
    #[inline(never)]
    fn alloc_slow(&self, class: usize, epoch: EpochId) -> Result<()> {
        let c = &self.classes[class];
        let index = epoch.index();
        let slot = &self.epochs[index];
        let label = slot.label_id.load(Ordering::Relaxed);
        let home = shard_index();
        let shard = &c.shards[home];
        let run = &shard.runs[index];
        let mut sl = self.lock_shard(class, home, label);
        let state = slot.state.load(Ordering::Acquire);
        if state != pack_state(epoch.era, false) {
            drop(sl);
            return Err(self.refuse(class, epoch, state));
        }
        for (i, word) in run.slabs[..c.run_len].iter().enumerate() {
            if let Some(slab) = load_current(word) {
                if self.meta(slab).bitmap.load(Ordering::Relaxed) != FULL {
                    run.cursor.store(i as u32, Ordering::Relaxed);
                    return Ok(());
                }
            }
        }
        // Counters written only under this shard's lock: single-writer bumps, no locked add.
        shard.slow.cache_miss.bump_single_writer();
        shard.slow.slow_hits[index].bump_single_writer();
        for word in &run.slabs[..c.run_len] {
            if let Some(slab) = load_current(word) {
                retire(word);
                // The era is live (checked above, under the lock), so nothing is sealed here.
                let sealed = self.file(&mut sl, class, slab);
                debug_assert!(sealed.is_none());
            }
        }
        let want = c.run_len;
        let mut got = [0u32; RUN_MAX];
        let mut n = 0;
        while n < want {
            match self.pop(&mut sl.partial[index]) {
                Some(slab) => {
                    // Start its slot words now, so they arrive while the rest is popped.
                    self.prefetch_words(slab, c.shape.slots);
                    got[n] = slab;
                    n += 1;
                }
                None => break,
            }
        }
        let popped = n;
        let mut added = 0u64;
        if n < want {
            let mut cl = self.lock_class(class, label);
            while n < want {
                let Some(slab) = self
                    .pop(&mut cl.cache)
                    .or_else(|| self.pop(&mut cl.overflow))
                else {
                    break;
                };
                got[n] = slab;
                n += 1;
                added += 1;
                c.counters.cache_reuses.inc();
                self.meta(slab)
                    .reopen(c.shape.slots, index as u32, epoch.era);
            }
            c.counters.cache_size.set(u64::from(cl.cache.len));
            c.counters.overflow_size.set(u64::from(cl.overflow.len));
        }
        // Steal only when this shard has nothing of its own and the cache is empty too, and
        // only from idle shards (see `steal`).
        if n == 0 {
            n += self.steal(class, home, index, &mut got[..want]);
        }
        let mut carve_error = None;
        if n == 0 {
            match self.carve(class, (want - n) as u32) {
                Ok(first) => {
                    let fresh = want - n;
                    for k in 0..fresh {
                        let slab = first + k as u32;
                        self.meta(slab)
                            .reopen(c.shape.slots, index as u32, epoch.era);
                        got[n] = slab;
                        n += 1;
                    }
                    added += fresh as u64;
                    c.counters.new_slabs.add(fresh as u64);
                    c.per_epoch[index].new_slabs.add(fresh as u64);
                }
                Err(e) => carve_error = Some(e),
            }
        }
        if added > 0 {
            // SYNC POINT: Release pairs with the Acquire load in `try_reopen`, which reads it
            // after taking this shard's lock (so it sees this add in any case).
            slot.slabs.fetch_add(added, Ordering::Release);
        }
        if n == 0 {
            return Err(carve_error.unwrap_or(Error::OutOfMemory {
                reserved_bytes: self.data.len(),
            }));
        }
        // Bring all the run's slot words in, at once (the popped ones were started above): the
        // misses overlap here instead of each landing on the allocation that first needs a line
        // (on this x86 the next locked instruction waits for outstanding prefetches anyway, so a
        // prefetch hides nothing behind later work; it only overlaps misses with each other).
        for &slab in &got[popped..n] {
            self.prefetch_words(slab, c.shape.slots);
        }
        for (word, &slab) in run.slabs.iter().zip(&got[..n]) {
            let meta = self.meta(slab);
            meta.set_list(ListKind::Current);
            meta.home.store(home as u8, Ordering::Relaxed);
            publish(word, slab);
        }
        shard.slow.run_publications.add_single_writer(n as u64);
        run.cursor.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Takes partial slabs of `epoch` from other shards that are idle in that epoch (no run
    /// published: nobody allocates there now) and whose locks are free right now, into `out`;
    /// returns how many. A shard that is allocating is left alone: its partial slabs are being
    /// freed into by its own threads, and sharing them would make two threads pass bitmap and
    /// metadata lines back and forth (measured: stealing from busy shards cost the 2-thread
    /// benchmark a third of its throughput). Carving fresh slabs is cheaper than that.
    fn steal(&self, class: usize, home: usize, epoch: usize, out: &mut [u32]) -> usize {
        let c = &self.classes[class];
        let mut n = 0;
        for i in 1..SHARDS {
            if n == out.len() {
                break;
            }
            let victim = &c.shards[(home + i) % SHARDS];
            if victim.runs[epoch]
                .slabs
                .iter()
                .any(|w| load_current(w).is_some())
            {
                continue;
            }
            let mut vl = match victim.lists.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::WouldBlock) => continue,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
            };
            while n < out.len() {
                match self.pop(&mut vl.partial[epoch]) {
                    Some(slab) => {
                        out[n] = slab;
                        n += 1;
                    }
                    None => break,
                }
            }
        }
        n
    }

    /// Carves the next `count` slabs from the reservation for `class`, committing chunks as
    /// needed; returns the first index (the slabs are contiguous).
    fn carve(&self, class: usize, count: u32) -> Result<u32> {
        let mut next = lock(&self.grow);
        let first = *next;
        let end = first
            .checked_add(count)
            .filter(|&end| end <= self.max_slabs)
            .ok_or(Error::OutOfMemory {
                reserved_bytes: self.data.len(),
            })?;
        let mut committed = self.committed.load(std::sync::atomic::Ordering::Relaxed);
        while end > committed {
            let chunk = committed as usize;
            self.data
                .commit(chunk * SLAB_SIZE, CHUNK_SLABS * SLAB_SIZE)?;
            self.meta
                .commit(chunk * META_SIZE, CHUNK_SLABS * META_SIZE)?;
            self.words
                .commit(chunk * WORDS_SIZE, CHUNK_SLABS * WORDS_SIZE)?;
            committed += CHUNK_SLABS as u32;
            // SYNC POINT: Release pairs with the Acquire loads of `committed` in
            // `locate`/`free_ptr`: a slab index below it has committed pages and metadata.
            self.committed
                .store(committed, std::sync::atomic::Ordering::Release);
        }
        *next = end;
        for slab in first..end {
            self.meta(slab).class.store(class as u8, Ordering::Relaxed);
        }
        Ok(first)
    }
}
