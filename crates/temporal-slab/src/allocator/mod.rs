//! The allocator: size classes of slabs, the epoch ring, the fast and slow paths.
//!
//! One `impl SlabAllocator` block per file, along the seams of the work:
//! - this file: the types, construction and addressing;
//! - `epochs.rs`: the ring (advance, close, drain), labels and refcounts;
//! - `alloc.rs`: the allocation fast path and the slow path that refills a run;
//! - `free.rs`: frees, handle and pointer checks, and the list fix-ups a free triggers;
//! - `lists.rs`: the intrusive lists, filing, recycling and the coalesced `madvise`;
//! - `snapshot.rs`: [`SlabAllocator::stats`];
//! - `fork.rs`: every lock at once, in lock order (what the global allocator's `fork`
//!   handlers hold across a `fork`).
//!
//! # Layout
//! - One [`Region`] of `max_bytes` for slab pages (slab `i` at `base + i * 4096`), one for
//!   [`SlabMeta`] (entry `i` at `meta_base + i * 32`) and one for the **slot-word table** (the
//!   64 `u32` slot words of slab `i` at `words_base + i * 256`). All three are committed in
//!   chunks of [`CHUNK_SLABS`] slabs under the grow lock; slabs are carved in index order and
//!   never move. Slot words out of line mean allocation and free never touch an object's page
//!   (with 100,000 live 128-byte objects, a first touch of a page cost a TLB and a cache miss,
//!   several hundred ns under nested paging); the table is dense (16 slabs per 4 KiB), and its
//!   pages are returned to the kernel with the slabs they describe (see `lists.rs`).
//! - Per class: [`SHARDS`] shards and a class lock over the class-wide lists (the bounded empty
//!   cache and its overflow list). A shard holds, per epoch, the **run** of published slabs the
//!   fast path allocates from, its partial list and full count behind its own lock, and its
//!   counters; each thread maps to one shard, so two threads rarely share a slab, a lock or a
//!   counter line. Lock order: `next_era` (epoch_advance), `labels`, a shard lock, the class
//!   lock, the grow lock; a second shard lock only through `try_lock`, never two classes' locks
//!   at once. No lock is held across `madvise`, and no lock holder allocates (so the allocator
//!   can serve the global allocator, see `crate::global`).
//!
//! # Invariants
//! - A slab is on exactly one list, counted full, or `Current` (published in a run, or held by
//!   a lock holder about to file, publish or recycle it). A slab on a partial list or counted
//!   full is its home shard's; those change only under the home shard's lock.
//! - A slab in the cache or overflow list is sealed (bitmap [`FULL`]), its page discarded, its
//!   `gen_floor` above every generation its slots ever reached.
//! - A slab's era is its ring slot's era while the slab is assigned to it: a ring slot is
//!   reopened only after its era drained (CLOSING, refcount 0, no slab left), so the new era is
//!   never handed memory the old era still uses, and the old era's attribution (label,
//!   refcount, live objects) is never erased while anything holds it.
//! - The fast path takes no lock: epoch state load, run load, bitmap CAS, era check, slot word.

mod alloc;
mod epochs;
mod fork;
mod free;
mod lists;
mod snapshot;

use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32 as StdAtomicU32, AtomicUsize};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Instant;

use crate::class::{CLASS_COUNT, SHAPES, SlabShape};
use crate::epoch::{EPOCH_COUNT, EpochSlot, Labels, pack_refs, pack_state};
use crate::handle::MAX_SLABS;
use crate::region::Region;
use crate::slab::{RUN_MAX, SlabMeta};
use crate::stats::{ClassCounters, ClassEpochCounters, Counter, GlobalCounters};
use crate::sync::{AtomicU32, Ordering};
use crate::{Result, SLAB_SIZE};

pub(crate) use fork::AllLocks;

/// Shards per class: runs per (class, epoch), one per thread group.
pub const SHARDS: usize = 8;
/// Slabs committed at a time (2 MiB of pages).
pub const CHUNK_SLABS: usize = 512;
const META_SIZE: usize = std::mem::size_of::<SlabMeta>();
/// Bytes of slot words per slab in the slot-word table: 64 slots of 4 bytes.
const WORDS_SIZE: usize = 64 * 4;
#[cfg(not(loom))]
const _: () = assert!(META_SIZE == 32);

/// Settings of a [`SlabAllocator`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Address space reserved for slabs, bytes (rounded down to 2 MiB, at most 16 GiB). Only
    /// touched pages cost memory. Default 16 GiB.
    pub max_bytes: usize,
    /// Empty slabs each class keeps in its bounded cache before using the overflow list.
    /// Default 32.
    pub empty_cache_slabs: u32,
    /// Read `/proc/self/statm` before and after every `epoch_close` (two small reads). Default
    /// true.
    pub track_rss: bool,
    /// `epoch_close` returns adjacent empty slabs to the kernel with one `madvise` per
    /// contiguous range (true, the default) instead of one call per slab (false; exists to
    /// measure the difference, see `bench slab`).
    pub coalesce_madvise: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_bytes: 16 << 30,
            empty_cache_slabs: 32,
            track_rss: true,
            coalesce_madvise: true,
        }
    }
}

impl Config {
    /// Sets [`Config::max_bytes`].
    pub fn max_bytes(mut self, bytes: usize) -> Config {
        self.max_bytes = bytes;
        self
    }
    /// Sets [`Config::empty_cache_slabs`].
    pub fn empty_cache_slabs(mut self, slabs: u32) -> Config {
        self.empty_cache_slabs = slabs;
        self
    }
    /// Sets [`Config::track_rss`].
    pub fn track_rss(mut self, on: bool) -> Config {
        self.track_rss = on;
        self
    }
    /// Sets [`Config::coalesce_madvise`].
    pub fn coalesce_madvise(mut self, on: bool) -> Config {
        self.coalesce_madvise = on;
        self
    }
}

/// An intrusive list: head slab index + 1 (0 = empty) and length. Links live in [`SlabMeta`].
#[derive(Clone, Copy, Debug, Default)]
struct List {
    head: u32,
    len: u32,
}

/// Lists of one shard of a class, behind the shard's own lock: per epoch, the partial slabs
/// and the number of full slabs whose home is this shard. A slab goes back to the shard that
/// allocated from it, so threads on different shards neither take each other's half-freed slabs
/// nor share a lock on the slow path. A shard whose own partial list is empty steals from the
/// other shards' (try-lock only) before using recycled or fresh slabs.
#[derive(Debug, Default)]
struct ShardLists {
    partial: [List; EPOCH_COUNT],
    full: [u32; EPOCH_COUNT],
}

/// Class-wide lists, behind the class lock: recycled slabs. Lock order: a shard lock, then the
/// class lock; never two shard locks except through `try_lock`.
#[derive(Debug, Default)]
struct ClassLists {
    cache: List,
    overflow: List,
}

/// Slow-path counters of one shard (summed per class in snapshots).
#[derive(Debug, Default)]
struct ShardSlow {
    cache_miss: Counter,
    moves_to_full: Counter,
    moves_to_partial: Counter,
    run_publications: Counter,
    lock_fast: Counter,
    lock_contended: Counter,
    slow_hits: [Counter; EPOCH_COUNT],
}

/// The slabs one (class, epoch, shard) allocates from: up to [`RUN_MAX`] run words (slab + 1,
/// or 0) and a cursor, the index of the first word worth trying (a hint: a stale cursor only
/// sends a thread to the slow path early, which then finds the room and resets it). Written
/// only under the shard lock, read by the fast path.
#[derive(Debug)]
struct Run {
    slabs: [AtomicU32; RUN_MAX],
    cursor: AtomicU32,
}

/// One shard of a class: its runs, its hot counters, its lists and slow-path counters. Used
/// mostly by the threads mapped to it, so it gets its own cache lines.
#[repr(C, align(128))]
#[derive(Debug)]
struct Shard {
    runs: [Run; EPOCH_COUNT],
    /// Allocations by the shard's owner thread (single writer, see [`thread_shard`]).
    allocs_owned: Counter,
    /// Allocations by threads sharing the shard.
    allocs_shared: Counter,
    alloc_retries: Counter,
    /// Frees by the owner thread (single writer).
    frees_owned: Counter,
    /// Frees by threads sharing the shard.
    frees_shared: Counter,
    free_retries: Counter,
    lists: Mutex<ShardLists>,
    slow: ShardSlow,
}

#[derive(Debug)]
struct Class {
    shape: SlabShape,
    /// Slabs per run: enough for about 150 objects per slow-path visit, even, at most
    /// [`RUN_MAX`].
    run_len: usize,
    lists: Mutex<ClassLists>,
    counters: ClassCounters,
    per_epoch: [ClassEpochCounters; EPOCH_COUNT],
    shards: [Shard; SHARDS],
}

/// Slabs per run for a class of `slots` objects per slab: the fewest that hold at least
/// [`RUN_OBJECTS`] objects, rounded up to an even number (two slabs share a metadata cache
/// line), at most [`RUN_MAX`].
/// Objects a run should hold at least: 151, so at most 1 allocation in 151 (0.66%) takes the
/// slow path, which keeps it out of the 99th percentile (the in-run slab switches, 1 in
/// `slots`, are cheap: the slab's page was prefetched when the run was published).
const RUN_OBJECTS: usize = 151;

pub(crate) const fn run_len(slots: usize) -> usize {
    let n = RUN_OBJECTS.div_ceil(slots);
    let n = n + (n & 1);
    if n > RUN_MAX { RUN_MAX } else { n }
}

/// The epoch-scoped slab allocator. See the crate docs for the model.
///
/// `SlabAllocator` is `Send` and `Sync`: all shared state is atomics or behind its own mutexes,
/// and the two mappings it owns are only reached through those (see `region.rs`). Every
/// method takes `&self`; share it with `Arc` or a `static`.
#[derive(Debug)]
pub struct SlabAllocator {
    tag: u16,
    uid: u64,
    data: Region,
    meta: Region,
    words: Region,
    max_slabs: u32,
    /// Slabs whose pages and metadata are committed; grows only, under `grow`.
    committed: StdAtomicU32,
    /// Next slab index to carve.
    grow: Mutex<u32>,
    classes: Box<[Class; CLASS_COUNT]>,
    epochs: [EpochSlot; EPOCH_COUNT],
    current: AtomicU32,
    /// Next era to hand out; the lock serialises `epoch_advance`.
    next_era: Mutex<u64>,
    labels: Mutex<Labels>,
    counters: GlobalCounters,
    created: Instant,
    config: Config,
}

static NEXT_TAG: StdAtomicU32 = StdAtomicU32::new(0);
static NEXT_UID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's ordinal: the order in which threads first used any allocator.
    static ORDINAL: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's ordinal, assigned on first use.
#[inline]
fn thread_ordinal() -> usize {
    ORDINAL.with(|s| {
        let v = s.get();
        if v != usize::MAX {
            return v;
        }
        let v = NEXT_SHARD.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        s.set(v);
        v
    })
}

/// This thread's shard: assigned round-robin on first use, the same for every allocator.
#[inline]
fn shard_index() -> usize {
    thread_ordinal() % SHARDS
}

/// Whether this thread is the owner of its shard: the first [`SHARDS`] threads each own one
/// shard, and only an owner writes its shard's `*_owned` counters, so those are bumped with a
/// plain load and store instead of a locked read-modify-write. Later threads share shards and
/// count with `fetch_add` into the `*_shared` counters. Both are exact.
#[inline]
fn thread_shard() -> (usize, bool) {
    let ordinal = thread_ordinal();
    (ordinal % SHARDS, ordinal < SHARDS)
}

/// Counts one event: single-writer bump for the shard's owner, `fetch_add` for the others.
#[cfg(feature = "fast-path-counters")]
#[inline]
fn count_one(owned: &Counter, shared: &Counter, owner: bool) {
    if owner {
        owned.bump_single_writer();
    } else {
        shared.inc();
    }
}

fn new_shard() -> Shard {
    Shard {
        runs: std::array::from_fn(|_| Run {
            slabs: std::array::from_fn(|_| AtomicU32::new(0)),
            cursor: AtomicU32::new(0),
        }),
        allocs_owned: Counter::default(),
        allocs_shared: Counter::default(),
        alloc_retries: Counter::default(),
        frees_owned: Counter::default(),
        frees_shared: Counter::default(),
        free_retries: Counter::default(),
        lists: Mutex::new(ShardLists::default()),
        slow: ShardSlow::default(),
    }
}

impl SlabAllocator {
    /// An allocator with [`Config::default`]: 16 GiB of address space reserved (no memory used
    /// until slabs are touched), epoch 0 open as era 1.
    ///
    /// # Errors
    /// [`crate::Error::Map`] when the kernel refuses the reservation (e.g. under `RLIMIT_AS`).
    pub fn new() -> Result<SlabAllocator> {
        SlabAllocator::with_config(Config::default())
    }

    /// An allocator with the given settings.
    ///
    /// # Errors
    /// [`crate::Error::Map`] when the kernel refuses the reservation.
    pub fn with_config(config: Config) -> Result<SlabAllocator> {
        let slabs = (config.max_bytes / SLAB_SIZE).min(MAX_SLABS);
        let max_slabs = (slabs / CHUNK_SLABS).max(1) * CHUNK_SLABS;
        let data = Region::reserve(max_slabs * SLAB_SIZE)?;
        let meta = Region::reserve(max_slabs * META_SIZE)?;
        let words = Region::reserve(max_slabs * WORDS_SIZE)?;
        let tag = (NEXT_TAG.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 4095 + 1) as u16;
        let classes = Box::new(std::array::from_fn(|i| Class {
            shape: SHAPES[i],
            run_len: run_len(SHAPES[i].slots),
            lists: Mutex::new(ClassLists::default()),
            counters: ClassCounters::default(),
            per_epoch: std::array::from_fn(|_| ClassEpochCounters::default()),
            shards: std::array::from_fn(|_| new_shard()),
        }));
        let alloc = SlabAllocator {
            tag,
            uid: NEXT_UID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            data,
            meta,
            words,
            max_slabs: max_slabs as u32,
            committed: StdAtomicU32::new(0),
            grow: Mutex::new(0),
            classes,
            epochs: std::array::from_fn(|_| EpochSlot::new()),
            current: AtomicU32::new(0),
            next_era: Mutex::new(2),
            labels: Mutex::new(Labels::default()),
            counters: GlobalCounters::default(),
            created: Instant::now(),
            config,
        };
        alloc.epochs[0]
            .refs
            .store(pack_refs(1, 0), Ordering::Relaxed);
        alloc.epochs[0]
            .state
            .store(pack_state(1, false), Ordering::Release);
        Ok(alloc)
    }

    /// A number unique to this allocator within the process (never reused).
    pub fn uid(&self) -> u64 {
        self.uid
    }

    /// Metadata of `slab`, which must be below `committed`.
    #[inline]
    fn meta(&self, slab: u32) -> &SlabMeta {
        debug_assert!(slab < self.committed.load(std::sync::atomic::Ordering::Relaxed));
        // SAFETY: `slab < committed` (every caller checks it or got the index from a list or a
        // run word, which only hold carved slabs), so the entry lies in the committed, readable
        // and writable part of the metadata region, 32-byte aligned (the region base is page
        // aligned, entries are 32 bytes). All-zero bytes are a valid SlabMeta (atomics only),
        // and the region lives as long as `self`.
        unsafe { &*self.meta.base().cast::<SlabMeta>().add(slab as usize) }
    }

    #[inline]
    fn page(&self, slab: u32) -> *mut u8 {
        // SAFETY: slab < max_slabs, so the offset stays inside the data reservation.
        unsafe { self.data.base().add(slab as usize * SLAB_SIZE) }
    }

    /// The slot word of `slot` in `slab`: generation << 1 | allocated.
    #[inline]
    fn slot_word(&self, slab: u32, slot: u32) -> &AtomicU32 {
        debug_assert!(slot < 64);
        // SAFETY: slab is committed (its table entry was committed with its page) and slot <
        // 64, so the word lies in the slab's 256-byte entry of the slot-word table, 4-byte
        // aligned, in committed memory that lives as long as `self`. Slot words are only ever
        // accessed atomically (zero bytes are a valid atomic, and a discarded page reads zero).
        unsafe {
            &*self
                .words
                .base()
                .add(slab as usize * WORDS_SIZE)
                .cast::<AtomicU32>()
                .add(slot as usize)
        }
    }

    #[inline]
    fn object(&self, slab: u32, slot: u32, shape: &SlabShape) -> NonNull<u8> {
        // SAFETY: header + slot * size < SLAB_SIZE for slot < slots, so the pointer stays
        // inside the slab's page; the page pointer is non-null (inside a live mapping).
        unsafe {
            NonNull::new_unchecked(
                self.page(slab)
                    .add(shape.header + slot as usize * shape.size),
            )
        }
    }

    #[inline]
    fn shape_of(&self, slab: u32) -> (usize, &SlabShape) {
        let class = usize::from(self.meta(slab).class.load(Ordering::Relaxed)) % CLASS_COUNT;
        (class, &SHAPES[class])
    }

    /// Asks the CPU to bring every cache line of `slab`'s slot words that `slots` slots use
    /// into the cache, without waiting for them.
    #[inline]
    fn prefetch_words(&self, slab: u32, slots: usize) {
        #[cfg(target_arch = "x86_64")]
        for line in 0..(slots * 4).div_ceil(64) {
            // SAFETY: a prefetch never faults and has no architectural effect; the address is
            // inside the slab's 256-byte table entry, inside our reservation (slab <
            // max_slabs). SSE is part of the x86_64 baseline.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    self.words
                        .base()
                        .add(slab as usize * WORDS_SIZE + line * 64)
                        .cast::<i8>(),
                );
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (slab, slots);
    }

    /// Takes a shard lock, probing with `try_lock` first so contention is counted.
    fn lock_shard(&self, class: usize, shard: usize, label: u32) -> MutexGuard<'_, ShardLists> {
        let s = &self.classes[class].shards[shard];
        let (guard, contended) = lock_counted(&s.lists, &s.slow.lock_fast, &s.slow.lock_contended);
        self.count_label_lock(class, label, contended);
        guard
    }

    /// Takes a class lock, probing with `try_lock` first so contention is counted.
    fn lock_class(&self, class: usize, label: u32) -> MutexGuard<'_, ClassLists> {
        let c = &self.classes[class];
        let (guard, contended) =
            lock_counted(&c.lists, &c.counters.lock_fast, &c.counters.lock_contended);
        self.count_label_lock(class, label, contended);
        guard
    }

    #[inline]
    fn count_label_lock(&self, class: usize, label: u32, contended: bool) {
        #[cfg(feature = "label-contention")]
        {
            let c = &self.classes[class].counters;
            let id = label as usize % crate::stats::LABEL_BUCKETS;
            if contended {
                c.lock_contended_by_label[id].inc();
            } else {
                c.lock_fast_by_label[id].inc();
            }
        }
        let _ = (class, label, contended);
    }

    pub(crate) fn count_fallback(&self, bytes: usize) {
        self.counters.system_fallback_allocs.inc();
        self.counters.system_fallback_bytes.add(bytes as u64);
    }

    /// Counts a pointer refused by a path other than `free_ptr` (which counts its own).
    pub(crate) fn count_pointer_error(&self) {
        self.counters.pointer_errors.inc();
    }

    fn now_ns(&self) -> u64 {
        self.created.elapsed().as_nanos() as u64
    }

    fn rss(&self) -> u64 {
        if self.config.track_rss {
            crate::rss::process_rss_bytes().unwrap_or(0)
        } else {
            0
        }
    }
}

/// Locks `m`, probing with `try_lock` first; counts the acquisition as fast or contended and
/// says which. Both counters belong to the lock and are bumped while holding it, so a plain
/// load and store (no locked add) keeps them exact.
fn lock_counted<'m, T>(
    m: &'m Mutex<T>,
    fast: &Counter,
    contended: &Counter,
) -> (MutexGuard<'m, T>, bool) {
    match m.try_lock() {
        Ok(guard) => {
            fast.bump_single_writer();
            (guard, false)
        }
        Err(TryLockError::WouldBlock) => {
            let guard = lock(m);
            contended.bump_single_writer();
            (guard, true)
        }
        Err(TryLockError::Poisoned(p)) => (p.into_inner(), false),
    }
}

/// Locks a mutex, recovering from poisoning (nothing under our locks can panic half-way
/// through an update except on a broken invariant, and the data stays consistent then).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_hold_about_a_hundred_objects_and_are_even() {
        for shape in SHAPES {
            let n = run_len(shape.slots);
            assert!((2..=RUN_MAX).contains(&n) && n % 2 == 0, "{shape:?}: {n}");
            assert!(
                n * shape.slots >= RUN_OBJECTS || n == RUN_MAX,
                "{shape:?}: {n}"
            );
        }
        assert_eq!(run_len(SHAPES[2].slots), 6, "128-byte class: 6 x 31 = 186");
    }
}
