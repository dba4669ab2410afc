//! The epoch ring: advancing (reopening only drained slots), closing, labels and refcounts.

use std::time::Instant;

use super::{SlabAllocator, lock};
use crate::class::CLASS_COUNT;
use crate::epoch::{
    EPOCH_COUNT, EpochId, EpochSlot, EpochState, Label, MAX_REFCOUNT, pack_refs, pack_state,
    refs_count,
};
use crate::slab::{load_current, retire};
use crate::sync::Ordering;
use crate::{Error, Result};

impl SlabAllocator {
    /// The current epoch (the one `epoch_advance` opened last).
    pub fn epoch_current(&self) -> EpochId {
        loop {
            let index = self.current.load(Ordering::Acquire) as usize;
            let (era, _) = self.epochs[index].era_state();
            // Re-check: an advance between the two loads would pair the old index with the
            // new slot's era.
            if self.current.load(Ordering::Acquire) as usize == index {
                return EpochId {
                    index: index as u8,
                    era,
                };
            }
        }
    }

    /// State of `epoch`, or `None` if it is stale (its slot was re-opened).
    pub fn epoch_state(&self, epoch: EpochId) -> Option<EpochState> {
        let (era, state) = self.epochs[epoch.index()].era_state();
        (era == epoch.era).then_some(state)
    }

    /// Opens a new epoch under a new **era** and makes it current. The previous epoch keeps its
    /// state (close it with [`SlabAllocator::epoch_close`]).
    ///
    /// The new epoch takes the next ring slot whose epoch has **drained**: never opened, or
    /// CLOSING with refcount 0 and no slab holding its objects. A slot whose epoch still holds
    /// anything is skipped and keeps its identity (label, refcount, live objects, age) in
    /// [`SlabAllocator::stats`] for as long as that lasts, however many epochs are opened after
    /// it. When the ring comes back to an ACTIVE epoch that no domain is inside (refcount 0),
    /// that epoch is closed as `epoch_close` would close it; if its objects are all free it is
    /// then reused, otherwise it stays, CLOSING, until they are freed. An ACTIVE epoch with a
    /// domain inside is skipped and stays ACTIVE.
    ///
    /// # Errors
    /// [`Error::EpochRingFull`] when every other slot is held: nothing changes, the current
    /// epoch stays current, and the refusal is counted
    /// ([`crate::StatsSnapshot::epoch_advance_refused`]).
    pub fn epoch_advance(&self) -> Result<EpochId> {
        self.advance(0)
    }

    /// [`SlabAllocator::epoch_advance`], with one reference on the new epoch already taken (its
    /// refcount is 1 when it becomes current), so no other thread's advances can close or
    /// reuse it before the caller holds it, as they could between `epoch_advance` and
    /// `inc_refcount`. Release the reference with [`SlabAllocator::dec_refcount`].
    ///
    /// # Errors
    /// As [`SlabAllocator::epoch_advance`].
    pub fn epoch_advance_held(&self) -> Result<EpochId> {
        self.advance(1)
    }

    fn advance(&self, refs: u64) -> Result<EpochId> {
        let mut next_era = lock(&self.next_era);
        let current = self.current.load(Ordering::Acquire) as usize;
        for step in 1..EPOCH_COUNT {
            let index = (current + step) % EPOCH_COUNT;
            let era = *next_era;
            if self.try_reopen(index, era, refs) {
                *next_era += 1;
                self.current.store(index as u32, Ordering::Release);
                self.counters.epoch_advances.inc();
                return Ok(EpochId {
                    index: index as u8,
                    era,
                });
            }
        }
        self.counters.epoch_advance_refused.inc();
        Err(Error::EpochRingFull {
            held: (EPOCH_COUNT - 1) as u32,
        })
    }

    /// Reopens ring slot `index` under `era`, with `refs` references taken, if its epoch has
    /// drained (see `epoch_advance`). Called with the `next_era` lock held (so only one reopen
    /// runs at a time).
    fn try_reopen(&self, index: usize, era: u64, refs: u64) -> bool {
        let slot = &self.epochs[index];
        let word = slot.state.load(Ordering::Acquire);
        let old = word >> 1;
        if old == 0 {
            slot.refs.store(pack_refs(era, refs), Ordering::Release);
        } else {
            // A domain inside (or an explicit reference) holds the epoch.
            if refs_count(slot.refs.load(Ordering::Acquire), old) != Some(0) {
                return false;
            }
            if word & 1 == 0 && !self.mark_closing(slot, old) {
                return false;
            }
            // Sweep it: every shard lock is taken, so every slab a slow path gave the era is
            // counted in `slabs`, run slabs are filed, empty slabs are recycled.
            self.sweep(index);
            if slot.slabs.load(Ordering::Acquire) != 0 {
                return false; // live objects: it stays, CLOSING, with its attribution
            }
            // SYNC POINT: the refcount must still be 0 for the old era: a concurrent
            // `inc_refcount` either lands before this CAS (and the CAS fails: the slot is held)
            // or after it (and fails its era check): no reference is ever lost.
            if slot
                .refs
                .compare_exchange(
                    pack_refs(old, 0),
                    pack_refs(era, refs),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_err()
            {
                return false;
            }
        }
        // New era, CLOSING until set up: old-era ids are stale from here on, and nobody knows
        // the new era yet.
        slot.state.store(pack_state(era, true), Ordering::Release);
        for c in self.classes.iter() {
            for shard in &c.shards {
                shard.slow.slow_hits[index].set(0);
            }
            let counters = &c.per_epoch[index];
            counters.new_slabs.set(0);
            counters.recycled_slabs.set(0);
        }
        slot.rss_before_close.store(0, Ordering::Relaxed);
        slot.rss_after_close.store(0, Ordering::Relaxed);
        slot.closed_ns.store(0, Ordering::Relaxed);
        slot.opened_ns.store(self.now_ns(), Ordering::Relaxed);
        {
            let mut labels = lock(&self.labels);
            labels.epoch[index] = Label::default();
            slot.label_id.store(0, Ordering::Relaxed);
        }
        // SYNC POINT: Release pairs with the Acquire of `state` in `epoch_current` and the
        // fast path: whoever sees the new era sees the slot's reset fields.
        slot.state.store(pack_state(era, false), Ordering::Release);
        true
    }

    /// Moves `slot` from ACTIVE to CLOSING for `era`. True when it is CLOSING in that era now
    /// (by this call or another); false when the slot holds another era.
    fn mark_closing(&self, slot: &EpochSlot, era: u64) -> bool {
        let mut word = slot.state.load(Ordering::Acquire);
        loop {
            if word >> 1 != era {
                return false;
            }
            if word & 1 == 1 {
                return true;
            }
            match slot
                .state
                .compare_exchange(word, word | 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    slot.closed_ns.store(self.now_ns(), Ordering::Relaxed);
                    return true;
                }
                Err(now) => word = now,
            }
        }
    }

    /// Closes `epoch`: no new allocations in it (they fail with [`Error::EpochClosed`]), every
    /// slab of it whose objects are all free is recycled and its page returned to the kernel with
    /// `madvise(MADV_DONTNEED)`, one call per contiguous range of such slabs, issued with no lock
    /// held. Live objects stay valid; their slabs are recycled when their last object is freed,
    /// and the epoch keeps its ring slot (and its label and refcount in the stats) until then.
    /// Closing a closed epoch again scans it again. Counters are added once per call. Returns
    /// how many slabs this call recycled.
    ///
    /// # Errors
    /// [`Error::StaleEpoch`] when the ring slot holds a newer era.
    pub fn epoch_close(&self, epoch: EpochId) -> Result<u64> {
        let start = Instant::now();
        let slot = &self.epochs[epoch.index()];
        if !self.mark_closing(slot, epoch.era) {
            return Err(self.stale_now(epoch));
        }
        let rss_before = self.rss();
        let (scanned, recycled) = self.sweep(epoch.index());
        let rss_after = self.rss();
        if self.config.track_rss {
            slot.rss_before_close.store(rss_before, Ordering::Relaxed);
            slot.rss_after_close.store(rss_after, Ordering::Relaxed);
        }
        slot.closed_ns.store(self.now_ns(), Ordering::Relaxed);
        let g = &self.counters;
        g.epoch_close_calls.inc();
        g.epoch_close_scanned_slabs.add(scanned);
        g.epoch_close_recycled_slabs.add(recycled);
        g.epoch_close_total_ns
            .add(start.elapsed().as_nanos() as u64);
        Ok(recycled)
    }

    /// Retires every run of ring slot `index`, files its slabs, and recycles every slab of it
    /// that is empty, for a CLOSING epoch. Each shard's lock is held only while its run and
    /// partial list are walked; the recycling (`madvise`) happens after, with no lock held.
    /// Returns `(scanned, recycled)` slabs.
    fn sweep(&self, index: usize) -> (u64, u64) {
        let label = self.epochs[index].label_id.load(Ordering::Relaxed);
        let (mut scanned, mut recycled) = (0u64, 0u64);
        for class in 0..CLASS_COUNT {
            let c = &self.classes[class];
            let slots = c.shape.slots;
            let mut pending = super::lists::Pending::default();
            for (s, shard) in c.shards.iter().enumerate() {
                let mut sl = self.lock_shard(class, s, label);
                let run = &shard.runs[index];
                for word in &run.slabs {
                    if let Some(slab) = load_current(word) {
                        retire(word);
                        scanned += 1;
                        if let Some(sealed) = self.file(&mut sl, class, slab) {
                            self.pending_push(&mut pending, sealed);
                        }
                    }
                }
                run.cursor.store(0, Ordering::Relaxed);
                let mut next = sl.partial[index].head;
                while next != 0 {
                    let slab = next - 1;
                    let meta = self.meta(slab);
                    next = meta.next.load(Ordering::Relaxed);
                    scanned += 1;
                    if meta.seal(slots) {
                        self.unlink(&mut sl.partial[index], slab);
                        self.pending_push(&mut pending, slab);
                    }
                }
            }
            recycled += self.recycle_pending(class, pending);
        }
        (scanned, recycled)
    }

    /// [`Self::stale`] with the era the slot holds now.
    fn stale_now(&self, epoch: EpochId) -> Error {
        let era = self.epochs[epoch.index()].state.load(Ordering::Acquire) >> 1;
        self.stale(epoch, era)
    }

    pub(super) fn stale(&self, epoch: EpochId, current_era: u64) -> Error {
        self.counters.stale_epoch_errors.inc();
        Error::StaleEpoch {
            epoch: epoch.index,
            era: epoch.era,
            current_era,
        }
    }

    fn check_epoch(&self, epoch: EpochId) -> Result<&EpochSlot> {
        let slot = &self.epochs[epoch.index()];
        let (era, _) = slot.era_state();
        if era != epoch.era {
            return Err(self.stale(epoch, era));
        }
        Ok(slot)
    }

    /// Labels `epoch` (e.g. `"request:abc123"`): at most [`crate::MAX_LABEL_LEN`] bytes, longer
    /// text is cut at a char boundary. The first 16 distinct labels get ids 1..=16 in the
    /// registry; later ones get id 0 but the epoch still shows its text. Thread-safe, behind this
    /// allocator's own lock.
    ///
    /// # Errors
    /// [`Error::StaleEpoch`].
    pub fn set_label(&self, epoch: EpochId, label: &str) -> Result<()> {
        let slot = self.check_epoch(epoch)?;
        let label = Label::new(label);
        let mut labels = lock(&self.labels);
        let id = labels.intern(&label);
        labels.epoch[epoch.index()] = label;
        slot.label_id.store(id, Ordering::Relaxed);
        Ok(())
    }

    /// The label of `epoch` ("" when unlabeled).
    ///
    /// # Errors
    /// [`Error::StaleEpoch`].
    pub fn label(&self, epoch: EpochId) -> Result<String> {
        self.check_epoch(epoch)?;
        let label = lock(&self.labels).epoch[epoch.index()];
        Ok(label.as_str().to_owned())
    }

    /// Adds one to the domain refcount of `epoch`; returns the new value. An epoch with a
    /// reference is never reopened (see [`SlabAllocator::epoch_advance`]).
    ///
    /// # Errors
    /// [`Error::StaleEpoch`]; [`Error::RefcountOverflow`] at 2^24 - 1 references.
    pub fn inc_refcount(&self, epoch: EpochId) -> Result<u64> {
        self.update_refcount(
            epoch,
            |n| {
                if n == MAX_REFCOUNT { None } else { Some(n + 1) }
            },
        )
    }

    /// Subtracts one from the domain refcount of `epoch`, never going below 0; returns the new
    /// value.
    ///
    /// # Errors
    /// [`Error::StaleEpoch`].
    pub fn dec_refcount(&self, epoch: EpochId) -> Result<u64> {
        self.update_refcount(epoch, |n| Some(n.saturating_sub(1)))
    }

    /// CAS loop on the slot's `refs` word that only ever changes the count of `epoch`'s own
    /// era, so a reference taken in an older era can never change a newer era's count.
    fn update_refcount(&self, epoch: EpochId, f: impl Fn(u64) -> Option<u64>) -> Result<u64> {
        let slot = self.check_epoch(epoch)?;
        let mut refs = slot.refs.load(Ordering::Acquire);
        loop {
            let Some(n) = refs_count(refs, epoch.era) else {
                return Err(self.stale_now(epoch));
            };
            let Some(new) = f(n) else {
                return Err(Error::RefcountOverflow {
                    epoch: epoch.index,
                    era: epoch.era,
                    max: MAX_REFCOUNT,
                });
            };
            if new == n {
                return Ok(n);
            }
            match slot.refs.compare_exchange_weak(
                refs,
                pack_refs(epoch.era, new),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(new),
                Err(now) => refs = now,
            }
        }
    }

    /// The domain refcount of `epoch`.
    ///
    /// # Errors
    /// [`Error::StaleEpoch`].
    pub fn refcount(&self, epoch: EpochId) -> Result<u64> {
        let slot = self.check_epoch(epoch)?;
        refs_count(slot.refs.load(Ordering::Acquire), epoch.era)
            .ok_or_else(|| self.stale_now(epoch))
    }

    /// True when `slab`'s era is its ring slot's era and the slot is ACTIVE.
    #[inline]
    pub(super) fn slab_era_live(&self, meta: &crate::slab::SlabMeta) -> bool {
        let epoch = usize::from(meta.epoch.load(Ordering::Relaxed)) % EPOCH_COUNT;
        let word = self.epochs[epoch].state.load(Ordering::Acquire);
        word & 1 == 0 && crate::slab::era_tag(word >> 1) == meta.era.load(Ordering::Relaxed)
    }
}
