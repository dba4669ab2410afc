//! One slab: its out-of-line metadata, and the lock-free protocols on it.
//!
//! A slab is one 4 KiB page of the reservation, holding nothing but objects. Its slot words (a
//! `u32` per slot: generation << 1 | allocated) live out of line in the allocator's slot-word
//! table, and everything else about it in a [`SlabMeta`] of 32 bytes in a metadata region that
//! is never discarded, so `madvise` on the page (and on the table's pages, with it) loses
//! nothing but object bytes and slot words (see "generation floor" below).
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
//! # Run publication
//! Each (class, epoch, shard) has a **run**: up to [`RUN_MAX`] words, each the slab index + 1 the
//! fast path allocates from, or 0, and a cursor (a hint: the first word worth trying). Runs are
//! written only under the shard's lock ([`publish`] with `Release`, [`retire`]); the fast path
//! only reads them ([`load_current`], `Acquire`) and claims from the slabs' bitmaps. A claim can
//! still land on a slab that was retired, recycled and reopened for another epoch between the
//! load and the claim; the claimer checks the slab's era after claiming and gives the slot back
//! when it does not match. A run of several slabs makes the slow path (the shard lock) rare: for
//! the 128-byte class a run of 6 slabs serves 186 allocations per slow-path visit (0.54%).
//!
//! # Slot words and generations
//! A slot word is `generation << 1 | allocated`. [`mark_allocated`] (after a successful claim)
//! sets the allocated bit and returns the generation the handle will carry; [`free_generation`]
//! frees only if the word is exactly `generation << 1 | 1` (one CAS), moving the generation on,
//! so a stale or doubled handle can never free a slot that was reused since: the reused slot's
//! word carries a later generation. A word of 0 means "not used since the page was discarded"
//! and stands for the slab's **generation floor** (`gen_floor`, one past every generation the
//! slab's slots reached before the discard), so reusing a recycled slab writes nothing: its
//! words are first written by the first allocation from it. Generation 0 is therefore
//! never produced by a free (it is skipped on wrap-around) and only exists on slabs that were
//! never recycled (floor 0).

use crate::handle::GEN_MASK;
use crate::sync::{AtomicU8, AtomicU32, AtomicU64, Ordering};

/// Bitmap value of a full (or sealed) slab.
pub(crate) const FULL: u64 = u64::MAX;

/// Longest run of published slabs per (class, epoch, shard).
pub(crate) const RUN_MAX: usize = 8;

/// Bitmap value of an empty slab with `slots` slots: the bits past the last slot set.
#[inline]
pub(crate) const fn empty_bitmap(slots: usize) -> u64 {
    if slots >= 64 {
        0
    } else {
        !((1u64 << slots) - 1)
    }
}

/// The era as stored in slab metadata: its low 32 bits. Two eras of one ring slot that differ
/// by a multiple of 2^32 could only be confused by a claim that waited across 2^32 advances.
#[inline]
pub(crate) fn era_tag(era: u64) -> u32 {
    era as u32
}

/// Where a slab is filed; stored in [`SlabMeta::list`] and changed only under the lock of the
/// list it leaves or joins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum ListKind {
    /// Carved from the reservation but never used (zeroed metadata reads as this).
    Fresh = 0,
    /// Published in some shard's run, or taken off a list by a lock holder who is about to
    /// file, publish or recycle it.
    Current = 1,
    /// On its epoch's partial list (of its home shard).
    Partial = 2,
    /// Full, counted in its home shard's full count for its epoch (full slabs are on no list:
    /// nothing needs to find them until a free makes room, and that free finds them).
    Full = 3,
    /// Recycled, pages returned, in the class's bounded empty cache.
    Cache = 5,
    /// Recycled, pages returned, on the class's overflow list (cache was full).
    Overflow = 6,
}

impl ListKind {
    fn from_u8(v: u8) -> ListKind {
        match v {
            1 => ListKind::Current,
            2 => ListKind::Partial,
            3 => ListKind::Full,
            5 => ListKind::Cache,
            6 => ListKind::Overflow,
            _ => ListKind::Fresh,
        }
    }
}

/// Out-of-line metadata of one slab, 32 bytes. All-zero bytes are a valid value (fresh
/// metadata pages are zero-filled by the kernel). Two slabs share a cache line; slabs are
/// carved and published in even-sized runs, so the two usually belong to the same shard.
#[repr(C, align(32))]
#[derive(Debug)]
pub(crate) struct SlabMeta {
    /// Slot bitmap, 1 = taken (see module docs).
    pub bitmap: AtomicU64,
    /// [`era_tag`] of the era of the epoch that owns the slab.
    pub era: AtomicU32,
    /// Ring index of the owning epoch.
    pub epoch: AtomicU8,
    /// Size class; set once when the slab is carved (slabs never change class).
    pub class: AtomicU8,
    /// Home shard: the shard that last published the slab; its partial list or full count
    /// holds it.
    pub home: AtomicU8,
    /// [`ListKind`] as u8.
    pub list: AtomicU8,
    /// Intrusive list links, slab index + 1 (0 = none). Under the lock of the slab's list.
    pub next: AtomicU32,
    /// See `next`.
    pub prev: AtomicU32,
    /// Generation a slot word of 0 stands for: one past the highest generation any slot
    /// reached before the page was last discarded, so no older handle matches.
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
            era: AtomicU32::new(0),
            epoch: AtomicU8::new(0),
            class: AtomicU8::new(0),
            home: AtomicU8::new(0),
            list: AtomicU8::new(0),
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
            // the previous owner) and in `reopen` (era and epoch of a reused slab).
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

    /// Makes a sealed (or fresh) slab claimable for epoch `(epoch, era)`. Only the owner (the
    /// thread that sealed it, or that carved it fresh) calls this.
    #[inline]
    pub(crate) fn reopen(&self, slots: usize, epoch: u32, era: u64) {
        self.era.store(era_tag(era), Ordering::Relaxed);
        self.epoch.store(epoch as u8, Ordering::Relaxed);
        // SYNC POINT: Release pairs with the Acquire in `claim`: a claimer that reads this
        // bitmap also reads the era and epoch above.
        self.bitmap.store(empty_bitmap(slots), Ordering::Release);
    }

    pub(crate) fn list(&self) -> ListKind {
        ListKind::from_u8(self.list.load(Ordering::Relaxed))
    }

    pub(crate) fn set_list(&self, kind: ListKind) {
        self.list.store(kind as u8, Ordering::Relaxed);
    }

    /// Number of taken slots (live objects) given `slots` per slab.
    pub(crate) fn live(&self, slots: usize) -> u32 {
        let word = self.bitmap.load(Ordering::Relaxed);
        if word == FULL && self.list() >= ListKind::Cache {
            return 0; // sealed
        }
        (word & !empty_bitmap(slots)).count_ones()
    }

    /// Generation a slot word stands for (0 = the generation floor).
    #[inline]
    pub(crate) fn generation_of(&self, word: u32) -> u32 {
        if word == 0 {
            self.gen_floor.load(Ordering::Relaxed)
        } else {
            word >> 1
        }
    }
}

/// The generation after `generation`: wraps at 2^24, skipping 0 (a word of 0 means "the
/// floor", see the module docs).
#[inline]
pub(crate) fn next_generation(generation: u32) -> u32 {
    match (generation + 1) & GEN_MASK {
        0 => 1,
        g => g,
    }
}

/// Marks a claimed slot allocated and returns the generation its handle carries. Only the
/// claimer of the slot's bitmap bit calls this, so a plain load and store suffice.
#[inline]
pub(crate) fn mark_allocated(meta: &SlabMeta, word: &AtomicU32) -> u32 {
    let generation = meta.generation_of(word.load(Ordering::Relaxed));
    // SYNC POINT: Release pairs with the Acquire loads in `free_generation`, `free_any` and
    // `is_live`: whoever sees the allocated word sees the claim before it.
    word.store(generation << 1 | 1, Ordering::Release);
    generation
}

/// Frees the slot if its word is exactly `generation << 1 | 1` (a live object of that
/// generation), moving the generation on. `Err(found)` leaves the word untouched: a double free
/// (found is the next generation, not allocated), a stale handle (found carries a later
/// generation), or a never-used slot (found is 0).
#[inline]
pub(crate) fn free_generation(word: &AtomicU32, generation: u32) -> Result<(), u32> {
    // SYNC POINT: AcqRel: Acquire pairs with `mark_allocated`; Release orders the freer's
    // writes to the object before the bitmap release that follows.
    word.compare_exchange(
        generation << 1 | 1,
        next_generation(generation) << 1,
        Ordering::AcqRel,
        Ordering::Acquire,
    )
    .map(|_| ())
}

/// Frees the slot whatever its generation, if it is allocated (the pointer API, which carries
/// no generation). False when the slot is not allocated.
#[inline]
pub(crate) fn free_any(word: &AtomicU32) -> bool {
    let mut w = word.load(Ordering::Acquire);
    loop {
        if w & 1 == 0 {
            return false;
        }
        // SYNC POINT: as in `free_generation`.
        match word.compare_exchange_weak(
            w,
            next_generation(w >> 1) << 1,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return true,
            Err(now) => w = now,
        }
    }
}

/// True when the slot holds a live object of `generation`.
#[inline]
pub(crate) fn is_live(word: &AtomicU32, generation: u32) -> bool {
    // SYNC POINT: Acquire pairs with `mark_allocated`.
    word.load(Ordering::Acquire) == generation << 1 | 1
}

/// Retires `slab` from a run word. Called only under the shard lock (the only writers of runs).
#[inline]
pub(crate) fn retire(current: &AtomicU32) {
    current.store(0, Ordering::Relaxed);
}

/// Publishes `slab` into a run word. Called only under the shard lock.
#[inline]
pub(crate) fn publish(current: &AtomicU32, slab: u32) {
    // SYNC POINT: Release pairs with the Acquire load of the run word on the fast path: the
    // slab's era and epoch (written by `reopen` or by the slow path) are visible to whoever
    // sees it.
    current.store(slab + 1, Ordering::Release);
}

/// Loads a run word: the published slab index, if any.
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
    fn publish_and_retire_round_trip() {
        let cur = AtomicU32::new(0);
        assert_eq!(load_current(&cur), None);
        publish(&cur, 7);
        assert_eq!(load_current(&cur), Some(7));
        retire(&cur);
        assert_eq!(load_current(&cur), None);
    }

    #[test]
    fn slot_words_free_once_per_generation_and_skip_generation_zero() {
        let m = SlabMeta::new();
        let w = AtomicU32::new(0);
        assert_eq!(mark_allocated(&m, &w), 0, "fresh slab, floor 0");
        assert!(is_live(&w, 0));
        assert_eq!(free_generation(&w, 0), Ok(()));
        assert_eq!(free_generation(&w, 0), Err(1 << 1), "double free");
        assert_eq!(mark_allocated(&m, &w), 1);
        assert_eq!(free_generation(&w, 0), Err(1 << 1 | 1), "stale handle");
        assert!(free_any(&w));
        assert!(!free_any(&w));
        // Wrap-around skips 0.
        assert_eq!(next_generation(GEN_MASK), 1);
        // A zero word after a discard stands for the floor.
        m.gen_floor.store(77, Ordering::Relaxed);
        let w = AtomicU32::new(0);
        assert_eq!(mark_allocated(&m, &w), 77);
        assert_eq!(free_generation(&w, 0), Err(77 << 1 | 1));
        assert_eq!(free_generation(&w, 77), Ok(()));
    }
}

/// Loom models of the bitmap, run and slot-word protocols. Run with
/// `RUSTFLAGS="--cfg loom" cargo test -p temporal-slab --lib --release loom_`.
/// Configurations are tiny (1-2 slot slabs, 2-3 threads) so loom explores every interleaving.
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::sync::{Arc, Mutex};
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
                    publish(&current, 0);
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

    /// Retirement and reuse race the fast path: a thread loaded the run word (era 1), then the
    /// slab was retired under the shard lock, sealed and reopened for era 2. If the stale
    /// thread's claim lands in the reopened slab, it must see era 2 (and give the slot back); if
    /// it kept a slot believing era 1, the seal must have failed.
    #[test]
    fn loom_stale_claim_after_reuse_sees_the_new_era() {
        loom::model(|| {
            let current = Arc::new(AtomicU32::new(0));
            let m = Arc::new(SlabMeta::new());
            m.reopen(1, 0, 1);
            publish(&current, 0);
            let stale = {
                let (current, m) = (current.clone(), m.clone());
                thread::spawn(move || {
                    let slab = load_current(&current);
                    slab.and_then(|_| claimed(m.claim()))
                        .map(|_| m.era.load(Ordering::Relaxed))
                })
            };
            // Recycler (holds the shard lock): retire, seal if empty, reopen for era 2.
            retire(&current);
            let sealed = m.seal(1);
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

    /// The run hand-off: two threads share a shard whose run holds two one-slot slabs. Each
    /// allocates by walking the run (claiming from the first slab with room) and, when every
    /// slab of the run is full, takes the shard lock and republishes the run with a fresh slab
    /// (what `alloc_slow` does). However the two interleave, they never get the same (slab,
    /// slot), every slab they got a slot from carries the era it was published with, and no
    /// published slab is lost (each is in the run or was filed by the lock holder).
    #[test]
    fn loom_run_refill_under_the_lock_never_hands_out_a_slot_twice() {
        loom::model(|| {
            let metas: Arc<Vec<SlabMeta>> = Arc::new((0..3).map(|_| SlabMeta::new()).collect());
            let run = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
            // Next fresh slab to carve, and the slabs filed (retired) by lock holders.
            let lock = Arc::new(Mutex::new((2u32, Vec::<u32>::new())));
            metas[0].reopen(1, 0, 1);
            metas[1].reopen(1, 0, 1);
            publish(&run[0], 0);
            publish(&run[1], 1);
            let alloc = {
                let (metas, run, lock) = (metas.clone(), run.clone(), lock.clone());
                move || -> Option<(u32, u32)> {
                    for _attempt in 0..2 {
                        for word in run.iter() {
                            if let Some(slab) = load_current(word) {
                                let m = &metas[slab as usize];
                                if let Some(slot) = claimed(m.claim()) {
                                    assert_eq!(m.era.load(Ordering::Relaxed), 1);
                                    return Some((slab, slot));
                                }
                            }
                        }
                        // Slow path.
                        let mut guard = lock.lock().unwrap();
                        let room = run.iter().any(|w| {
                            load_current(w).is_some_and(|s| {
                                metas[s as usize].bitmap.load(Ordering::Relaxed) != FULL
                            })
                        });
                        if room {
                            continue;
                        }
                        for word in run.iter() {
                            if let Some(s) = load_current(word) {
                                retire(word);
                                guard.1.push(s);
                            }
                        }
                        if guard.0 < 3 {
                            let fresh = guard.0;
                            guard.0 += 1;
                            metas[fresh as usize].reopen(1, 0, 1);
                            publish(&run[0], fresh);
                        }
                    }
                    None
                }
            };
            let t = thread::spawn(alloc.clone());
            let mine = alloc();
            let theirs = t.join().unwrap();
            let (a, b) = (mine.expect("room"), theirs.expect("room"));
            assert_ne!(a, b, "one slot handed out twice");
        });
    }

    /// "A stale handle never frees a reused slot": thread A frees its object (generation 0)
    /// and the main thread claims the slot again; thread B concurrently frees through a copy of
    /// A's handle (a double free). Whatever the interleaving, exactly one of the two frees of
    /// generation 0 succeeds, and if the main thread holds the reused slot at the end its
    /// bitmap bit is still set and its word is still live: B never freed it.
    #[test]
    fn loom_stale_handle_never_frees_a_reused_slot() {
        loom::model(|| {
            let m = Arc::new(SlabMeta::new());
            let word = Arc::new(AtomicU32::new(0));
            m.reopen(1, 0, 1);
            assert_eq!(claimed(m.claim()), Some(0));
            assert_eq!(mark_allocated(&m, &word), 0);
            let free = |m: Arc<SlabMeta>, word: Arc<AtomicU32>| {
                move || {
                    if free_generation(&word, 0).is_ok() {
                        m.release(0);
                        true
                    } else {
                        false
                    }
                }
            };
            let a = thread::spawn(free(m.clone(), word.clone()));
            let b = thread::spawn(free(m.clone(), word.clone()));
            let reused = claimed(m.claim()).map(|_| mark_allocated(&m, &word));
            let (fa, fb) = (a.join().unwrap(), b.join().unwrap());
            assert!(fa ^ fb, "exactly one free of generation 0 succeeds");
            if let Some(generation) = reused {
                assert_eq!(generation, 1);
                assert!(
                    is_live(&word, 1),
                    "the reused slot was freed by a stale handle"
                );
                assert_eq!(m.bitmap.load(Ordering::Relaxed), FULL);
            }
        });
    }
}
