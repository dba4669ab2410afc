//! One slab: its out-of-line metadata, and the lock-free protocols on it.
//!
//! A slab is one 4 KiB page of the reservation. Its page holds the slot words (a `u32` per slot:
//! generation << 1 | allocated) then the objects; everything else about it lives in a
//! [`SlabMeta`] in a separate metadata region that is never discarded, so `madvise` on the page
//! loses nothing but object bytes and slot words (see "generation floor" below).
//!
//! # The slot bitmap
//! `bitmap` has one bit per slot, 1 = taken. Bits at positions `>= slots` are permanently 1, so
//! a full slab always reads [`FULL`] and an empty one reads [`empty_bitmap`]`(slots)`.
//! - **claim** (allocation): CAS a 0 bit to 1 (`Acquire` on success). Never touches a full word.
//! - **release** (free): CAS the bit back to 0 (`Release`), reporting the word before and after
//!   so the caller can see the full -> partial and partial -> empty transitions.
//! - **seal** (recycling): CAS the whole word from empty to [`FULL`]. A sealed slab cannot be
//!   claimed from, so whoever sealed it owns it exclusively; a claim that raced and won makes the
//!   seal fail instead.
//! - **reopen**: the owner stores the empty word with `Release` after writing `era`, so a claimer
//!   whose CAS reads the reopened word also reads the new era.
//!
//! # Current-partial publication
//! Each (class, epoch, shard) has a `current` word: the slab index + 1 that the fast path
//! allocates from, or 0. Only the slow path, under the class lock, publishes (0 -> slab). Anyone
//! may retire: a fast-path thread that finds the published slab full CASes it to 0 and, if its CAS
//! won, owns the job of filing that slab on a list. A claim can still land on a slab that was
//! retired, recycled and reopened for another epoch in between; the claimer checks the slab's era
//! after claiming and gives the slot back when it does not match.

use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// Bitmap value of a full (or sealed) slab.
pub(crate) const FULL: u64 = u64::MAX;

/// Bitmap value of an empty slab with `slots` slots: the bits past the last slot set.
#[inline]
pub(crate) const fn empty_bitmap(slots: usize) -> u64 {
    if slots >= 64 {
        0
    } else {
        !((1u64 << slots) - 1)
    }
}

/// Where a slab is filed; stored in [`SlabMeta::list`] and changed only under the class lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub(crate) enum ListKind {
    /// Carved from the reservation but never used (zeroed metadata reads as this).
    Fresh = 0,
    /// Published as some shard's current-partial slab, or retired and not yet filed.
    Current = 1,
    /// On its epoch's partial list.
    Partial = 2,
    /// On its epoch's full list.
    Full = 3,
    /// Still holds live objects of an era whose ring slot was re-opened.
    Orphan = 4,
    /// Recycled, pages returned, in the class's bounded empty cache.
    Cache = 5,
    /// Recycled, pages returned, on the class's overflow list (cache was full).
    Overflow = 6,
}

impl ListKind {
    fn from_u32(v: u32) -> ListKind {
        match v {
            1 => ListKind::Current,
            2 => ListKind::Partial,
            3 => ListKind::Full,
            4 => ListKind::Orphan,
            5 => ListKind::Cache,
            6 => ListKind::Overflow,
            _ => ListKind::Fresh,
        }
    }
}

/// Out-of-line metadata of one slab. All-zero bytes are a valid value (fresh metadata pages are
/// zero-filled by the kernel). One cache line each, so bitmaps of neighbouring slabs never share
/// a line.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct SlabMeta {
    /// Slot bitmap, 1 = taken (see module docs).
    pub bitmap: AtomicU64,
    /// Era of the epoch that owns the slab; 0 while recycled.
    pub era: AtomicU64,
    /// Ring index of the owning epoch.
    pub epoch: AtomicU32,
    /// Size class; set once when the slab is carved (slabs never change class).
    pub class: AtomicU32,
    /// Home shard: the shard that last published the slab; its partial and full lists hold it.
    pub home: AtomicU32,
    /// [`ListKind`] as u32. Under the class lock.
    pub list: AtomicU32,
    /// Intrusive list links, slab index + 1 (0 = none). Under the class lock.
    pub next: AtomicU32,
    /// See `next`.
    pub prev: AtomicU32,
    /// Generation every slot word takes when the slab is reused after its page was discarded:
    /// one past the highest generation any slot reached, so no older handle matches.
    pub gen_floor: AtomicU32,
}

/// Outcome of [`SlabMeta::claim`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Slot `slot` is now ours; `retries` CASes failed on the way.
    Claimed { slot: u32, retries: u32 },
    /// The slab is full (or sealed).
    Full { retries: u32 },
}

impl SlabMeta {
    /// A zeroed value (what a fresh metadata page holds), for tests and loom models.
    #[cfg(any(test, loom))]
    pub(crate) fn new() -> SlabMeta {
        SlabMeta {
            bitmap: AtomicU64::new(0),
            era: AtomicU64::new(0),
            epoch: AtomicU32::new(0),
            class: AtomicU32::new(0),
            home: AtomicU32::new(0),
            list: AtomicU32::new(0),
            next: AtomicU32::new(0),
            prev: AtomicU32::new(0),
            gen_floor: AtomicU32::new(0),
        }
    }

    /// Takes a free slot. On success the claimer synchronizes with the release that freed it
    /// (and with the reopen that last reset the bitmap).
    #[inline]
    pub(crate) fn claim(&self) -> Claim {
        let mut retries = 0;
        let mut word = self.bitmap.load(Ordering::Relaxed);
        loop {
            if word == FULL {
                return Claim::Full { retries };
            }
            let slot = (!word).trailing_zeros();
            // SYNC POINT: Acquire pairs with the Release in `release` (object bytes written by
            // the previous owner) and in `reopen` (era and slot words of a reused slab).
            match self.bitmap.compare_exchange_weak(
                word,
                word | (1 << slot),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Claim::Claimed { slot, retries },
                Err(now) => {
                    retries += 1;
                    word = now;
                }
            }
        }
    }

    /// Gives slot `slot` back. Returns `(before, after, retries)`; `before` has the bit set
    /// unless the caller broke the protocol (checked by the slot word before we get here).
    #[inline]
    pub(crate) fn release(&self, slot: u32) -> (u64, u64, u32) {
        let bit = 1u64 << slot;
        let mut retries = 0;
        let mut word = self.bitmap.load(Ordering::Relaxed);
        loop {
            debug_assert!(word & bit != 0, "releasing a slot that is not taken");
            // SYNC POINT: Release pairs with the Acquire in `claim`.
            match self.bitmap.compare_exchange_weak(
                word,
                word & !bit,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return (word, word & !bit, retries),
                Err(now) => {
                    retries += 1;
                    word = now;
                }
            }
        }
    }

    /// Seals an empty slab so nobody can claim from it. True when this call sealed it.
    #[inline]
    pub(crate) fn seal(&self, slots: usize) -> bool {
        // SYNC POINT: Acquire pairs with the Release in `release` of the last object freed, so
        // the sealer sees the final slot words before reading them for the generation floor.
        self.bitmap
            .compare_exchange(
                empty_bitmap(slots),
                FULL,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Makes a sealed slab claimable again for epoch `(epoch, era)`. Only the owner (the thread
    /// that sealed it, or that carved it fresh) calls this.
    #[inline]
    pub(crate) fn reopen(&self, slots: usize, epoch: u32, era: u64) {
        self.era.store(era, Ordering::Relaxed);
        self.epoch.store(epoch, Ordering::Relaxed);
        // SYNC POINT: Release pairs with the Acquire in `claim`: a claimer that reads this
        // bitmap also reads the era and epoch above and the slot words the caller reset.
        self.bitmap.store(empty_bitmap(slots), Ordering::Release);
    }

    pub(crate) fn list(&self) -> ListKind {
        ListKind::from_u32(self.list.load(Ordering::Relaxed))
    }

    pub(crate) fn set_list(&self, kind: ListKind) {
        self.list.store(kind as u32, Ordering::Relaxed);
    }

    /// Number of taken slots (live objects) given `slots` per slab.
    pub(crate) fn live(&self, slots: usize) -> u32 {
        let word = self.bitmap.load(Ordering::Relaxed);
        if word == FULL && self.list() >= ListKind::Cache {
            return 0; // sealed
        }
        (word & !empty_bitmap(slots)).count_ones()
    }
}

/// Retires `slab` from a current-partial word: CAS `slab + 1 -> 0`. True when this call won and
/// therefore owns filing the slab.
#[inline]
pub(crate) fn retire(current: &AtomicU32, slab: u32) -> bool {
    // SYNC POINT: AcqRel: Acquire pairs with `publish` (we take over the slab the publisher set
    // up); Release orders our failed claims before the slot is reused.
    current
        .compare_exchange(slab + 1, 0, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
}

/// Publishes `slab` into an empty current-partial word: CAS `0 -> slab + 1`. Called under the
/// class lock, so it only fails if the protocol is broken; returns whether it succeeded.
#[inline]
pub(crate) fn publish(current: &AtomicU32, slab: u32) -> bool {
    // SYNC POINT: Release pairs with the Acquire load of `current` on the fast path: the slab's
    // era and epoch (written by `reopen` or by the slow path) are visible to whoever sees it.
    current
        .compare_exchange(0, slab + 1, Ordering::Release, Ordering::Relaxed)
        .is_ok()
}

/// Loads a current-partial word: the published slab index, if any.
#[inline]
pub(crate) fn load_current(current: &AtomicU32) -> Option<u32> {
    // SYNC POINT: Acquire pairs with `publish`.
    match current.load(Ordering::Acquire) {
        0 => None,
        v => Some(v - 1),
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn claim_fills_every_slot_once_then_reports_full() {
        let m = SlabMeta::new();
        m.reopen(5, 0, 1);
        let mut seen = 0u64;
        for _ in 0..5 {
            match m.claim() {
                Claim::Claimed { slot, retries } => {
                    assert_eq!(retries, 0);
                    assert_eq!(seen & (1 << slot), 0, "slot {slot} handed out twice");
                    seen |= 1 << slot;
                }
                Claim::Full { .. } => panic!("full too early"),
            }
        }
        assert_eq!(seen, 0b11111);
        assert_eq!(m.claim(), Claim::Full { retries: 0 });
    }

    #[test]
    fn release_reports_full_to_partial_and_partial_to_empty() {
        let m = SlabMeta::new();
        m.reopen(2, 0, 1);
        let _ = m.claim();
        let _ = m.claim();
        let (before, after, _) = m.release(0);
        assert_eq!(before, FULL);
        assert_ne!(after, FULL);
        let (_, after, _) = m.release(1);
        assert_eq!(after, empty_bitmap(2));
    }

    #[test]
    fn seal_fails_while_any_slot_is_taken_and_blocks_claims_after() {
        let m = SlabMeta::new();
        m.reopen(4, 0, 1);
        let _ = m.claim();
        assert!(!m.seal(4));
        m.release(0);
        assert!(m.seal(4));
        assert!(matches!(m.claim(), Claim::Full { .. }));
    }

    #[test]
    fn retire_is_won_by_exactly_one_caller() {
        let cur = AtomicU32::new(0);
        assert!(publish(&cur, 7));
        assert!(
            !publish(&cur, 8),
            "publishing over a published slab must fail"
        );
        assert_eq!(load_current(&cur), Some(7));
        assert!(retire(&cur, 7));
        assert!(!retire(&cur, 7));
        assert_eq!(load_current(&cur), None);
    }
}

/// Loom models of the bitmap and current-partial protocols. Run with
/// `RUSTFLAGS="--cfg loom" cargo test -p temporal-slab --lib --release loom_`.
/// Configurations are tiny (1-2 slot slabs, 2-3 threads) so loom explores every interleaving.
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    fn claimed(c: Claim) -> Option<u32> {
        match c {
            Claim::Claimed { slot, .. } => Some(slot),
            Claim::Full { .. } => None,
        }
    }

    /// Two threads claiming from a two-slot slab get different slots, and the slab is then full.
    #[test]
    fn loom_concurrent_claims_never_share_a_slot() {
        loom::model(|| {
            let m = Arc::new(SlabMeta::new());
            m.reopen(2, 0, 1);
            let t = {
                let m = m.clone();
                thread::spawn(move || claimed(m.claim()))
            };
            let mine = claimed(m.claim());
            let theirs = t.join().unwrap();
            let (a, b) = (mine.expect("room for two"), theirs.expect("room for two"));
            assert_ne!(a, b);
            assert_eq!(m.bitmap.load(Ordering::Relaxed), FULL);
        });
    }

    /// A slot freed by one thread and claimed by another: the claimer sees what the freer wrote
    /// before freeing (release/acquire through the bitmap). The payload is a relaxed atomic so
    /// loom may show the claimer a stale value unless the bitmap orders it.
    #[test]
    fn loom_release_then_claim_publishes_object_bytes() {
        loom::model(|| {
            let m = Arc::new(SlabMeta::new());
            let payload = Arc::new(AtomicU64::new(0));
            m.reopen(1, 0, 1);
            assert_eq!(claimed(m.claim()), Some(0));
            let t = {
                let (m, payload) = (m.clone(), payload.clone());
                thread::spawn(move || {
                    payload.store(42, Ordering::Relaxed);
                    m.release(0);
                })
            };
            if claimed(m.claim()) == Some(0) {
                assert_eq!(
                    payload.load(Ordering::Relaxed),
                    42,
                    "claimer saw a stale object"
                );
            }
            t.join().unwrap();
        });
    }

    /// Sealing races a claim on an empty slab: exactly one of them wins.
    #[test]
    fn loom_seal_and_claim_exclude_each_other() {
        loom::model(|| {
            let m = Arc::new(SlabMeta::new());
            m.reopen(2, 0, 1);
            let t = {
                let m = m.clone();
                thread::spawn(move || claimed(m.claim()).is_some())
            };
            let sealed = m.seal(2);
            let claimed = t.join().unwrap();
            assert!(sealed ^ claimed, "sealed={sealed} claimed={claimed}");
        });
    }

    /// A free racing a seal: the seal only wins once the slab is really empty.
    #[test]
    fn loom_seal_waits_for_the_last_free() {
        loom::model(|| {
            let m = Arc::new(SlabMeta::new());
            m.reopen(2, 0, 1);
            assert_eq!(claimed(m.claim()), Some(0));
            let t = {
                let m = m.clone();
                thread::spawn(move || {
                    m.release(0);
                })
            };
            let sealed = m.seal(2);
            t.join().unwrap();
            if sealed {
                assert!(matches!(m.claim(), Claim::Full { .. }));
            } else {
                assert!(m.seal(2), "after the free the slab is empty and sealable");
            }
        });
    }

    /// Two threads find the published slab full and race to retire it: exactly one owns it.
    #[test]
    fn loom_exactly_one_thread_wins_retirement() {
        loom::model(|| {
            let current = Arc::new(AtomicU32::new(0));
            assert!(publish(&current, 3));
            let t = {
                let current = current.clone();
                thread::spawn(move || retire(&current, 3))
            };
            let mine = retire(&current, 3);
            let theirs = t.join().unwrap();
            assert!(mine ^ theirs);
            assert_eq!(load_current(&current), None);
        });
    }

    /// Publication: a fast-path thread that sees the published slab sees the era the slow path
    /// wrote before publishing.
    #[test]
    fn loom_published_slab_carries_its_era() {
        loom::model(|| {
            let current = Arc::new(AtomicU32::new(0));
            let m = Arc::new(SlabMeta::new());
            let t = {
                let (current, m) = (current.clone(), m.clone());
                thread::spawn(move || {
                    m.reopen(2, 4, 7);
                    assert!(publish(&current, 0));
                })
            };
            if let Some(slab) = load_current(&current) {
                assert_eq!(slab, 0);
                if let Some(_slot) = claimed(m.claim()) {
                    assert_eq!(m.era.load(Ordering::Relaxed), 7);
                    assert_eq!(m.epoch.load(Ordering::Relaxed), 4);
                }
            }
            t.join().unwrap();
        });
    }

    /// Retirement and reuse race the fast path: a thread loaded `current` (era 1), then the slab
    /// was retired, sealed and reopened for era 2. If the stale thread's claim lands in the
    /// reopened slab, it must see era 2 (and give the slot back); if it kept a slot believing
    /// era 1, the seal must have failed.
    #[test]
    fn loom_stale_claim_after_reuse_sees_the_new_era() {
        loom::model(|| {
            let current = Arc::new(AtomicU32::new(0));
            let m = Arc::new(SlabMeta::new());
            m.reopen(1, 0, 1);
            assert!(publish(&current, 0));
            let stale = {
                let (current, m) = (current.clone(), m.clone());
                thread::spawn(move || {
                    let slab = load_current(&current);
                    slab.and_then(|_| claimed(m.claim()))
                        .map(|_| m.era.load(Ordering::Relaxed))
                })
            };
            // Recycler: retire, seal if empty, reopen for era 2.
            let retired = retire(&current, 0);
            let sealed = retired && m.seal(1);
            if sealed {
                m.reopen(1, 0, 2);
            }
            let seen_era = stale.join().unwrap();
            if let Some(era) = seen_era {
                if sealed {
                    assert_eq!(era, 2, "claim after reuse must see the new era");
                } else {
                    assert_eq!(era, 1);
                }
            }
        });
    }
}
