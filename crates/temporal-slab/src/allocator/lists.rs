//! The intrusive lists, filing, and recycling with coalesced `madvise`.

use super::{ClassLists, List, ShardLists, SlabAllocator};
use crate::SLAB_SIZE;
use crate::epoch::EPOCH_COUNT;
use crate::handle::GEN_MASK;
use crate::slab::{FULL, ListKind, era_tag, next_generation};
use crate::sync::Ordering;

/// Slabs recycled per batch: sorted, then one `madvise` per contiguous range. 4 KiB on the
/// stack; no allocation (the allocator may one day serve the global allocator).
const BATCH: usize = 1024;

/// Up to [`OPEN_RANGES`] ranges of sealed slabs not yet returned, so slabs that arrive out of
/// order (a pending chain is in list order, not address order) still join their neighbours.
const OPEN_RANGES: usize = 4;

#[derive(Debug, Default)]
struct OpenRanges {
    /// `(start, end)` slab ranges, the oldest first; `len` of them are in use.
    ranges: [(u32, u32); OPEN_RANGES],
    len: usize,
}

impl OpenRanges {
    /// Adds `slab`: extends a range it touches (merging two that it joins), else opens a new
    /// range. Returns the oldest range when a new one needed its place.
    fn add(&mut self, slab: u32) -> Option<(u32, u32)> {
        let used = &mut self.ranges[..self.len];
        if let Some(i) = used.iter().position(|&(s, e)| slab == e || slab + 1 == s) {
            let (s, e) = used[i];
            let (s, e) = if slab == e { (s, e + 1) } else { (slab, e) };
            used[i] = (s, e);
            // The grown range may now touch another one: merge them.
            if let Some(j) =
                (0..self.len).find(|&j| j != i && (self.ranges[j].0 == e || self.ranges[j].1 == s))
            {
                let (s2, e2) = self.ranges[j];
                self.ranges[i] = (s.min(s2), e.max(e2));
                self.remove(j);
            }
            return None;
        }
        let evicted = (self.len == OPEN_RANGES).then(|| {
            let oldest = self.ranges[0];
            self.remove(0);
            oldest
        });
        self.ranges[self.len] = (slab, slab + 1);
        self.len += 1;
        evicted
    }

    fn remove(&mut self, i: usize) {
        self.ranges.copy_within(i + 1..self.len, i);
        self.len -= 1;
    }

    /// Hands every open range to `f`, oldest first, and empties the set.
    fn drain(&mut self, mut f: impl FnMut((u32, u32))) {
        for &range in &self.ranges[..self.len] {
            f(range);
        }
        self.len = 0;
    }
}

/// A chain of sealed slabs waiting to be recycled, linked through their `next` fields (a
/// sealed slab on no list is owned by whoever sealed it, so nobody else reads its links).
#[derive(Debug, Default)]
pub(super) struct Pending {
    head: u32,
}

impl SlabAllocator {
    /// Files a slab taken out of a run, holding its home shard's lock. In a CLOSING epoch an
    /// empty slab is sealed and returned (the caller recycles it once no lock is held);
    /// otherwise a full slab is counted full and a slab with room goes on the partial list.
    pub(super) fn file(&self, sl: &mut ShardLists, class: usize, slab: u32) -> Option<u32> {
        let meta = self.meta(slab);
        let c = &self.classes[class];
        if !self.slab_era_live(meta) && meta.seal(c.shape.slots) {
            return Some(slab);
        }
        let epoch = usize::from(meta.epoch.load(Ordering::Relaxed)) % EPOCH_COUNT;
        debug_assert_eq!(
            era_tag(self.epochs[epoch].state.load(Ordering::Acquire) >> 1),
            meta.era.load(Ordering::Relaxed),
            "a slab outlived its era"
        );
        let home = &c.shards[usize::from(meta.home.load(Ordering::Relaxed)) % super::SHARDS];
        if meta.bitmap.load(Ordering::Relaxed) == FULL {
            sl.full[epoch] += 1;
            meta.set_list(ListKind::Full);
            home.slow.moves_to_full.bump_single_writer(); // under the home shard's lock
        } else {
            self.push(&mut sl.partial[epoch], ListKind::Partial, slab);
        }
        None
    }

    /// Adds a sealed slab (on no list) to a pending chain.
    pub(super) fn pending_push(&self, pending: &mut Pending, slab: u32) {
        let meta = self.meta(slab);
        meta.set_list(ListKind::Current);
        meta.next.store(pending.head, Ordering::Relaxed);
        pending.head = slab + 1;
    }

    /// Recycles every slab of a pending chain, in batches of up to [`BATCH`] (a contiguous
    /// range that spans two batches still gets one `madvise`). Call with no lock held. Returns
    /// how many slabs were recycled.
    pub(super) fn recycle_pending(&self, class: usize, mut pending: Pending) -> u64 {
        let mut buf = [0u32; BATCH];
        let mut open = OpenRanges::default();
        let mut total = 0;
        while pending.head != 0 {
            let mut n = 0;
            while n < BATCH && pending.head != 0 {
                let slab = pending.head - 1;
                pending.head = self.meta(slab).next.load(Ordering::Relaxed);
                buf[n] = slab;
                n += 1;
            }
            self.recycle_batch(class, &mut buf[..n], &mut open);
            total += n as u64;
        }
        open.drain(|range| self.return_range(class, range));
        total
    }

    /// Recycles sealed slabs that are on no list (see [`Self::recycle_batch`]). Call with no
    /// lock held.
    pub(super) fn recycle_slabs(&self, class: usize, slabs: &mut [u32]) {
        let mut open = OpenRanges::default();
        self.recycle_batch(class, slabs, &mut open);
        open.drain(|range| self.return_range(class, range));
    }

    /// Raises each slab's generation floor above every generation its slots reached, then
    /// adds the slabs to the `open` ranges; a range pushed out of them is returned to the
    /// kernel and filed in the class's cache ([`Self::return_range`]): one `madvise` per range
    /// with [`super::Config::coalesce_madvise`], else one per slab. `madvise` on a large range
    /// takes a while and nothing else can touch sealed slabs, so this runs with no lock held.
    fn recycle_batch(&self, class: usize, slabs: &mut [u32], open: &mut OpenRanges) {
        slabs.sort_unstable();
        for &slab in slabs.iter() {
            self.raise_floor(class, slab);
        }
        if !self.config.coalesce_madvise {
            for &slab in slabs.iter() {
                self.return_range(class, (slab, slab + 1));
            }
            return;
        }
        for &slab in slabs.iter() {
            if let Some(full) = open.add(slab) {
                self.return_range(class, full);
            }
        }
    }

    /// Returns the pages of sealed slabs `start..end` (floors raised) to the kernel with one
    /// `madvise`, then puts the slabs in the class's cache or overflow list.
    fn return_range(&self, class: usize, (start, end): (u32, u32)) {
        let c = &self.classes[class];
        c.counters.madvise_calls.inc();
        let (offset, len) = (
            start as usize * SLAB_SIZE,
            (end - start) as usize * SLAB_SIZE,
        );
        // SAFETY: every slab of the range is sealed and on no list: no slot is live and no
        // claim can succeed, so no reference into its page exists other than transient atomic
        // reads of slot words, for which zero is a valid value (it stands for the generation
        // floor just raised).
        match unsafe { self.data.discard(offset, len) } {
            Ok(()) => c.counters.madvise_bytes.add(len as u64),
            Err(_) => c.counters.madvise_failures.inc(),
        }
        // The slot words of these slabs: whole 4 KiB table pages (the same page size the slabs
        // assume) inside the range go back too (a
        // page shared with a slab outside the range stays; its zero words would be wrong only
        // for a live slab, and a discarded word reads as the floor just raised).
        let first = (start as usize * super::WORDS_SIZE).div_ceil(SLAB_SIZE) * SLAB_SIZE;
        let last = end as usize * super::WORDS_SIZE / SLAB_SIZE * SLAB_SIZE;
        if last > first {
            c.counters.slot_table_madvise_calls.inc();
            // SAFETY: the table bytes [first, last) hold only the slot words of slabs of this
            // range (every 256-byte entry in it belongs to a slab in `start..end`), which are
            // sealed and on no list: nobody holds a reference to them, and a zero word is the
            // valid "generation floor" value for a recycled slab.
            if unsafe { self.words.discard(first, last - first) }.is_err() {
                c.counters.madvise_failures.inc();
            }
        }
        c.counters.recycled_slabs.add(u64::from(end - start));
        let mut cl = self.lock_class(class, 0);
        for slab in start..end {
            self.cache_push(&mut cl, class, slab);
        }
        c.counters.cache_size.set(u64::from(cl.cache.len));
        c.counters.overflow_size.set(u64::from(cl.overflow.len));
    }

    /// Sets a sealed slab's generation floor one past every generation its slots reached, and
    /// takes it off its era's slab count.
    fn raise_floor(&self, class: usize, slab: u32) {
        let c = &self.classes[class];
        let meta = self.meta(slab);
        let floor = meta.gen_floor.load(Ordering::Relaxed);
        let mut max_generation = floor;
        for slot in 0..c.shape.slots as u32 {
            let g = meta.generation_of(self.slot_word(slab, slot).load(Ordering::Relaxed));
            // Generations wrap at 2^24; take the one furthest ahead of the floor.
            if g.wrapping_sub(max_generation) & GEN_MASK < (1 << 23) {
                max_generation = g;
            }
        }
        meta.gen_floor
            .store(next_generation(max_generation), Ordering::Relaxed);
        let epoch = usize::from(meta.epoch.load(Ordering::Relaxed)) % EPOCH_COUNT;
        let slot = &self.epochs[epoch];
        if era_tag(slot.state.load(Ordering::Acquire) >> 1) == meta.era.load(Ordering::Relaxed) {
            c.per_epoch[epoch].recycled_slabs.inc();
        }
        // SYNC POINT: Release pairs with the Acquire load in `try_reopen`.
        slot.slabs.fetch_sub(1, Ordering::Release);
        meta.era.store(0, Ordering::Relaxed);
    }

    /// Puts a discarded slab in the bounded cache, or on the overflow list when it is full.
    fn cache_push(&self, cl: &mut ClassLists, class: usize, slab: u32) {
        let c = &self.classes[class];
        if cl.cache.len < self.config.empty_cache_slabs {
            self.push(&mut cl.cache, ListKind::Cache, slab);
            c.counters.cache_pushes.inc();
        } else {
            self.push(&mut cl.overflow, ListKind::Overflow, slab);
            c.counters.overflow_pushes.inc();
        }
    }

    /// Pushes `slab` on `list` (whose lock the caller holds) and marks it as being on `kind`.
    pub(super) fn push(&self, list: &mut List, kind: ListKind, slab: u32) {
        let meta = self.meta(slab);
        meta.prev.store(0, Ordering::Relaxed);
        meta.next.store(list.head, Ordering::Relaxed);
        if list.head != 0 {
            self.meta(list.head - 1)
                .prev
                .store(slab + 1, Ordering::Relaxed);
        }
        list.head = slab + 1;
        list.len += 1;
        meta.set_list(kind);
    }

    /// Unlinks `slab` from `list` (the list it is on; the caller holds its lock) and marks it
    /// `Current` (on no list).
    pub(super) fn unlink(&self, list: &mut List, slab: u32) {
        let meta = self.meta(slab);
        let (prev, next) = (
            meta.prev.load(Ordering::Relaxed),
            meta.next.load(Ordering::Relaxed),
        );
        if prev != 0 {
            self.meta(prev - 1).next.store(next, Ordering::Relaxed);
        } else {
            list.head = next;
        }
        if next != 0 {
            self.meta(next - 1).prev.store(prev, Ordering::Relaxed);
        }
        list.len -= 1;
        meta.prev.store(0, Ordering::Relaxed);
        meta.next.store(0, Ordering::Relaxed);
        meta.set_list(ListKind::Current);
    }

    pub(super) fn pop(&self, list: &mut List) -> Option<u32> {
        let slab = list.head.checked_sub(1)?;
        self.unlink(list, slab);
        Some(slab)
    }
}

#[cfg(test)]
mod tests {
    use super::OpenRanges;

    #[test]
    fn open_ranges_join_neighbours_in_any_order_and_evict_the_oldest() {
        let mut open = OpenRanges::default();
        let mut out = Vec::new();
        for slab in [10, 12, 11, 9, 13, 30, 31, 29] {
            if let Some(r) = open.add(slab) {
                out.push(r);
            }
        }
        open.drain(|r| out.push(r));
        out.sort_unstable();
        assert_eq!(out, vec![(9, 14), (29, 32)], "11 joined 10..11 and 12..13");
        let mut open = OpenRanges::default();
        let evicted: Vec<_> = [0, 2, 4, 6, 8]
            .iter()
            .filter_map(|&s| open.add(s))
            .collect();
        assert_eq!(
            evicted,
            vec![(0, 1)],
            "a fifth separate range pushes out the oldest"
        );
    }
}
