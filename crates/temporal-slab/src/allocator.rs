//! The allocator: size classes of slabs, the epoch ring, the fast and slow paths.
//!
//! # Layout
//! - One [`Region`] of `max_bytes` for slab pages (slab `i` at `base + i * 4096`) and one for
//!   [`SlabMeta`] (entry `i` at `meta_base + i * 64`). Both are committed in chunks of
//!   [`CHUNK_SLABS`] slabs under the grow lock; slabs are carved in index order and never move.
//! - Per class: [`SHARDS`] shards and a class lock over the class-wide lists (orphans, the
//!   bounded empty cache and its overflow list). A shard holds, per epoch, the current-partial
//!   word the fast path allocates from, its partial and full lists behind its own lock, and its
//!   counters; each thread maps to one shard, so two threads rarely share a slab, a lock or a
//!   counter line. Lock order: shard lock, then class lock, then grow lock; a second shard lock
//!   only through `try_lock`.
//!
//! # Invariants
//! - A slab is on exactly one list, or is `Current` (published, or retired and about to be
//!   filed by the thread that won the retire CAS). A slab on a partial or full list is on its
//!   home shard's; membership changes only under the lock of the list it leaves or joins.
//! - A slab in the cache or overflow list is sealed (bitmap [`FULL`]), its page discarded, its
//!   `gen_floor` above every generation its slots ever reached.
//! - A slab's era equals its ring slot's era while the slot holds that era; when the slot is
//!   re-opened, slabs of the old era with live objects move to the orphan list (never handed out
//!   again until they empty and are recycled), empty ones are recycled.
//! - The fast path takes no lock: epoch state load, current-partial load, bitmap CAS, era check.

use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32 as StdAtomicU32, AtomicUsize};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Instant;

use crate::class::{CLASS_COUNT, SHAPES, SlabShape, class_for_size};
use crate::epoch::{EPOCH_COUNT, EpochId, EpochSlot, EpochState, Label, Labels, pack_state};
use crate::handle::{GEN_MASK, Handle, MAX_SLABS};
use crate::region::Region;
use crate::slab::{Claim, FULL, ListKind, SlabMeta, empty_bitmap, load_current, publish, retire};
use crate::stats::{
    ClassCounters, ClassEpochCounters, ClassStats, Counter, EpochStats, GlobalCounters,
    LabelRegistry, StatsSnapshot,
};
use crate::sync::{AtomicU32, Ordering};
use crate::{Error, MAX_OBJECT_SIZE, Result, SLAB_SIZE};

/// Shards per class: current-partial slabs per (class, epoch), one per thread group.
pub const SHARDS: usize = 8;
/// Slabs committed at a time (2 MiB of pages).
pub const CHUNK_SLABS: usize = 512;
const META_SIZE: usize = std::mem::size_of::<SlabMeta>();
#[cfg(not(loom))]
const _: () = assert!(META_SIZE == 64);

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
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_bytes: 16 << 30,
            empty_cache_slabs: 32,
            track_rss: true,
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
}

/// An intrusive list: head slab index + 1 (0 = empty) and length. Links live in [`SlabMeta`].
#[derive(Clone, Copy, Debug, Default)]
struct List {
    head: u32,
    len: u32,
}

/// Lists of one shard of a class, behind the shard's own lock: per epoch, the partial and the
/// full slabs whose home is this shard. A slab goes back to the shard that allocated from it, so
/// threads on different shards neither take each other's half-freed slabs nor share a lock on
/// the slow path (both made two threads slower than one). A shard whose own partial list is empty
/// steals from the other shards' (try-lock only) before using recycled or fresh slabs.
#[derive(Debug, Default)]
struct ShardLists {
    partial: [List; EPOCH_COUNT],
    full: [List; EPOCH_COUNT],
}

impl ShardLists {
    fn list(&mut self, kind: ListKind, epoch: usize) -> &mut List {
        match kind {
            ListKind::Full => &mut self.full[epoch],
            _ => &mut self.partial[epoch],
        }
    }
}

/// Class-wide lists, behind the class lock: orphans and recycled slabs. Lock order: a shard
/// lock, then the class lock; never two shard locks except through `try_lock`.
#[derive(Debug, Default)]
struct ClassLists {
    orphan: List,
    cache: List,
    overflow: List,
}

/// Slow-path counters of one shard (summed per class in snapshots).
#[derive(Debug, Default)]
struct ShardSlow {
    cache_miss: Counter,
    moves_to_full: Counter,
    moves_to_partial: Counter,
    current_cas_attempts: Counter,
    current_cas_failures: Counter,
    lock_fast: Counter,
    lock_contended: Counter,
    slow_hits: [Counter; EPOCH_COUNT],
}

/// One shard of a class: its current-partial slab per epoch, its hot counters, its lists and
/// slow-path counters. Used mostly by the threads mapped to it, so it gets its own cache lines.
#[repr(C, align(128))]
#[derive(Debug)]
struct Shard {
    current: [AtomicU32; EPOCH_COUNT],
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
    lists: Mutex<ClassLists>,
    counters: ClassCounters,
    per_epoch: [ClassEpochCounters; EPOCH_COUNT],
    shards: [Shard; SHARDS],
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
        current: std::array::from_fn(|_| AtomicU32::new(0)),
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
    /// [`Error::Map`] when the kernel refuses the reservation (e.g. under `RLIMIT_AS`).
    pub fn new() -> Result<SlabAllocator> {
        SlabAllocator::with_config(Config::default())
    }

    /// An allocator with the given settings.
    ///
    /// # Errors
    /// [`Error::Map`] when the kernel refuses the reservation.
    pub fn with_config(config: Config) -> Result<SlabAllocator> {
        let slabs = (config.max_bytes / SLAB_SIZE).min(MAX_SLABS);
        let max_slabs = (slabs / CHUNK_SLABS).max(1) * CHUNK_SLABS;
        let data = Region::reserve(max_slabs * SLAB_SIZE)?;
        let meta = Region::reserve(max_slabs * META_SIZE)?;
        let tag = (NEXT_TAG.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 4095 + 1) as u16;
        let classes = Box::new(std::array::from_fn(|i| Class {
            shape: SHAPES[i],
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
            .state
            .store(pack_state(1, false), Ordering::Release);
        Ok(alloc)
    }

    /// A number unique to this allocator within the process (never reused).
    pub fn uid(&self) -> u64 {
        self.uid
    }

    // ---------------------------------------------------------------- addressing

    /// Metadata of `slab`, which must be below `committed`.
    #[inline]
    fn meta(&self, slab: u32) -> &SlabMeta {
        debug_assert!(slab < self.committed.load(std::sync::atomic::Ordering::Relaxed));
        // SAFETY: `slab < committed` (every caller checks it or got the index from a list or a
        // current word, which only hold carved slabs), so the entry lies in the committed,
        // readable and writable part of the metadata region, 64-byte aligned (the region base
        // is page aligned, entries are 64 bytes). All-zero bytes are a valid SlabMeta (atomics
        // only), and the region lives as long as `self`.
        unsafe { &*self.meta.base().cast::<SlabMeta>().add(slab as usize) }
    }

    #[inline]
    fn page(&self, slab: u32) -> *mut u8 {
        // SAFETY: slab < max_slabs, so the offset stays inside the data reservation.
        unsafe { self.data.base().add(slab as usize * SLAB_SIZE) }
    }

    /// The slot word of `slot` in `slab`: generation << 1 | allocated.
    #[inline]
    fn slot_word(&self, slab: u32, slot: u32) -> &StdAtomicU32 {
        // SAFETY: slab is committed and slot < its class's slots, so the word lies in the
        // slab's header (header >= slots * 4), 4-byte aligned, in committed memory that lives as
        // long as `self`. Slot words are only ever accessed atomically.
        unsafe { &*self.page(slab).cast::<StdAtomicU32>().add(slot as usize) }
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
        let class = self.meta(slab).class.load(Ordering::Relaxed) as usize % CLASS_COUNT;
        (class, &SHAPES[class])
    }

    // ---------------------------------------------------------------- epochs

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

    /// Opens the next ring slot under a new era and makes it current. The previous epoch keeps
    /// its state (close it with [`SlabAllocator::epoch_close`]). If the slot being re-opened still
    /// holds an older era, that era is closed first: its empty slabs are recycled and slabs with
    /// live objects become orphans, which are never allocated from again and are recycled when
    /// their last object is freed. Label, refcount and per-epoch counters start fresh.
    pub fn epoch_advance(&self) -> EpochId {
        let mut next_era = lock(&self.next_era);
        let index = (self.current.load(Ordering::Acquire) as usize + 1) % EPOCH_COUNT;
        let era = *next_era;
        *next_era += 1;
        let slot = &self.epochs[index];
        // New era, CLOSING until set up: old-era ids are stale from here on, and nobody knows
        // the new era yet. Every slab of the old era is now "not live": `file` recycles the
        // empty ones and orphans the rest.
        slot.state.store(pack_state(era, true), Ordering::Release);
        for class in 0..CLASS_COUNT {
            let c = &self.classes[class];
            for (s, shard) in c.shards.iter().enumerate() {
                let mut sl = self.lock_shard(class, s, 0);
                if let Some(slab) = self.take_current(shard, index) {
                    self.file(&mut sl, class, slab);
                }
                for kind in [ListKind::Partial, ListKind::Full] {
                    while let Some(slab) = self.pop(sl.list(kind, index)) {
                        self.file(&mut sl, class, slab);
                    }
                }
                shard.slow.slow_hits[index].set(0);
            }
            let counters = &c.per_epoch[index];
            counters.new_slabs.set(0);
            counters.recycled_slabs.set(0);
        }
        slot.refcount.store(0, Ordering::Relaxed);
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
        self.current.store(index as u32, Ordering::Release);
        self.counters.epoch_advances.inc();
        EpochId {
            index: index as u8,
            era,
        }
    }

    /// Retires the current-partial slab of `shard` for epoch `index`, if any, returning it when
    /// this call won the retire CAS. Call with the shard lock held.
    fn take_current(&self, shard: &Shard, index: usize) -> Option<u32> {
        let slab = load_current(&shard.current[index])?;
        shard.slow.current_cas_attempts.inc();
        if retire(&shard.current[index], slab) {
            Some(slab)
        } else {
            shard.slow.current_cas_failures.inc();
            None
        }
    }

    /// Closes `epoch`: no new allocations in it (they fail with [`Error::EpochClosed`]), every
    /// slab of it whose objects are all free is recycled and its page returned to the kernel with
    /// `madvise(MADV_DONTNEED)`. Live objects stay valid; their slabs are recycled when their last
    /// object is freed. Closing a closed epoch again scans it again. Counters are added once per
    /// call. Returns how many slabs this call recycled.
    ///
    /// # Errors
    /// [`Error::StaleEpoch`] when the ring slot holds a newer era.
    pub fn epoch_close(&self, epoch: EpochId) -> Result<u64> {
        let start = Instant::now();
        let slot = &self.epochs[epoch.index()];
        let mut word = slot.state.load(Ordering::Acquire);
        loop {
            if word >> 1 != epoch.era {
                return Err(self.stale(epoch, word >> 1));
            }
            if word & 1 == 1 {
                break;
            }
            match slot
                .state
                .compare_exchange(word, word | 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => word = now,
            }
        }
        let rss_before = self.rss();
        let index = epoch.index();
        let (mut scanned, mut recycled) = (0u64, 0u64);
        let label = slot.label_id.load(Ordering::Relaxed);
        for class in 0..CLASS_COUNT {
            let c = &self.classes[class];
            for (s, shard) in c.shards.iter().enumerate() {
                let mut sl = self.lock_shard(class, s, label);
                if let Some(slab) = self.take_current(shard, index) {
                    scanned += 1;
                    recycled += u64::from(self.file(&mut sl, class, slab));
                }
                for kind in [ListKind::Partial, ListKind::Full] {
                    let mut next = sl.list(kind, index).head;
                    while next != 0 {
                        let slab = next - 1;
                        let meta = self.meta(slab);
                        next = meta.next.load(Ordering::Relaxed);
                        scanned += 1;
                        if meta.seal(c.shape.slots) {
                            self.unlink(sl.list(kind, index), slab);
                            self.recycle(class, slab, label);
                            recycled += 1;
                        }
                    }
                }
            }
        }
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

    fn stale(&self, epoch: EpochId, current_era: u64) -> Error {
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

    // ---------------------------------------------------------------- labels and refcounts

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

    /// Adds one to the domain refcount of `epoch`; returns the new value.
    ///
    /// # Errors
    /// [`Error::StaleEpoch`].
    pub fn inc_refcount(&self, epoch: EpochId) -> Result<u64> {
        let slot = self.check_epoch(epoch)?;
        Ok(slot.refcount.fetch_add(1, Ordering::AcqRel) + 1)
    }

    /// Subtracts one from the domain refcount of `epoch`, never going below 0; returns the new
    /// value.
    ///
    /// # Errors
    /// [`Error::StaleEpoch`].
    pub fn dec_refcount(&self, epoch: EpochId) -> Result<u64> {
        let slot = self.check_epoch(epoch)?;
        let before = slot
            .refcount
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            })
            .unwrap_or(0);
        Ok(before.saturating_sub(1))
    }

    /// The domain refcount of `epoch`.
    ///
    /// # Errors
    /// [`Error::StaleEpoch`].
    pub fn refcount(&self, epoch: EpochId) -> Result<u64> {
        Ok(self.check_epoch(epoch)?.refcount.load(Ordering::Acquire))
    }

    // ---------------------------------------------------------------- allocation

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
        let generation = self.mark_allocated(slab, slot);
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
        self.mark_allocated(slab, slot);
        Ok(self.object(slab, slot, &SHAPES[class]))
    }

    #[inline]
    fn mark_allocated(&self, slab: u32, slot: u32) -> u32 {
        let word = self.slot_word(slab, slot);
        let generation = word.load(std::sync::atomic::Ordering::Relaxed) >> 1;
        // SYNC POINT: Release pairs with the Acquire load in `get`/`locate`.
        word.store(generation << 1 | 1, std::sync::atomic::Ordering::Release);
        generation
    }

    /// Claims a slot of `class` in `epoch`: the lock-free fast path, falling back to
    /// [`SlabAllocator::alloc_slow`].
    #[inline]
    fn alloc_slot(&self, class: usize, epoch: EpochId) -> Result<(u32, u32)> {
        let c = &self.classes[class];
        let (shard_ix, owner) = thread_shard();
        let shard = &c.shards[shard_ix];
        let current = &shard.current[epoch.index()];
        let live = pack_state(epoch.era, false);
        loop {
            // SYNC POINT: Acquire pairs with the Release stores of `state` in `epoch_advance`.
            let state = self.epochs[epoch.index()].state.load(Ordering::Acquire);
            if state != live {
                return Err(self.refuse(class, epoch, state));
            }
            let mut retired = None;
            if let Some(slab) = load_current(current) {
                let meta = self.meta(slab);
                match meta.claim() {
                    Claim::Claimed { slot, retries } => {
                        self.count_alloc_retries(c, shard, epoch, retries);
                        // The claim's Acquire makes the era of a reopened slab visible.
                        if meta.era.load(Ordering::Relaxed) == epoch.era {
                            #[cfg(feature = "fast-path-counters")]
                            count_one(&shard.allocs_owned, &shard.allocs_shared, owner);
                            return Ok((slab, slot));
                        }
                        // The slab was retired, recycled and reopened for another era between
                        // our load of `current` and our claim: give the slot back.
                        self.release_slot(class, slab, slot, shard, None);
                        continue;
                    }
                    Claim::Full { retries } => {
                        self.count_alloc_retries(c, shard, epoch, retries);
                        shard.slow.current_cas_attempts.inc();
                        if retire(current, slab) {
                            retired = Some(slab);
                        } else {
                            shard.slow.current_cas_failures.inc();
                        }
                    }
                }
            }
            self.alloc_slow(class, epoch, retired)?;
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

    /// Slow path, under this thread's shard lock: file the slab this thread retired (if any),
    /// then publish a slab with room as the shard's current: the shard's first partial slab of the
    /// epoch, else one stolen from another shard, else a recycled one from the cache or overflow
    /// list, else a fresh one carved from the reservation. Returns so the caller retries the fast
    /// path.
    #[cold]
    #[inline(never)]
    fn alloc_slow(&self, class: usize, epoch: EpochId, retired: Option<u32>) -> Result<()> {
        let c = &self.classes[class];
        let index = epoch.index();
        let slot = &self.epochs[index];
        let label = slot.label_id.load(Ordering::Relaxed);
        let home = shard_index();
        let shard = &c.shards[home];
        let mut sl = self.lock_shard(class, home, label);
        if let Some(slab) = retired {
            // It was this shard's current, so this shard is its home.
            self.file(&mut sl, class, slab);
        }
        let state = slot.state.load(Ordering::Acquire);
        if state != pack_state(epoch.era, false) {
            drop(sl);
            return Err(self.refuse(class, epoch, state));
        }
        let current = &shard.current[index];
        if load_current(current).is_some() {
            return Ok(()); // another thread of this shard published meanwhile
        }
        shard.slow.cache_miss.inc();
        shard.slow.slow_hits[index].inc();
        let slab = if let Some(slab) = self.pop(&mut sl.partial[index]) {
            slab
        } else if let Some(slab) = self.steal(class, home, index) {
            slab
        } else {
            let mut cl = self.lock_class(class, label);
            let recycled = self
                .pop(&mut cl.cache)
                .or_else(|| self.pop(&mut cl.overflow));
            c.counters.cache_size.set(u64::from(cl.cache.len));
            c.counters.overflow_size.set(u64::from(cl.overflow.len));
            drop(cl);
            if let Some(slab) = recycled {
                c.counters.cache_reuses.inc();
                self.reuse(slab, &c.shape, index, epoch.era);
                slab
            } else {
                let slab = self.carve(class)?;
                c.counters.new_slabs.inc();
                c.per_epoch[index].new_slabs.inc();
                self.meta(slab)
                    .reopen(c.shape.slots, index as u32, epoch.era);
                slab
            }
        };
        let meta = self.meta(slab);
        meta.set_list(ListKind::Current);
        meta.home.store(home as u32, Ordering::Relaxed);
        shard.slow.current_cas_attempts.inc();
        if !publish(current, slab) {
            // Unreachable while publication happens only under this shard's lock; keep the
            // slab filed rather than losing it.
            shard.slow.current_cas_failures.inc();
            self.file(&mut sl, class, slab);
        }
        Ok(())
    }

    /// Takes a partial slab of `epoch` from another shard whose lock is free right now.
    fn steal(&self, class: usize, home: usize, epoch: usize) -> Option<u32> {
        let c = &self.classes[class];
        (1..SHARDS).find_map(|i| {
            let victim = &c.shards[(home + i) % SHARDS];
            let mut vl = match victim.lists.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::WouldBlock) => return None,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
            };
            self.pop(&mut vl.partial[epoch])
        })
    }

    /// Takes a recycled slab out of the cache for `(epoch, era)`: slot words to the generation
    /// floor (the page was discarded, so they read zero), then reopen.
    fn reuse(&self, slab: u32, shape: &SlabShape, epoch: usize, era: u64) {
        let meta = self.meta(slab);
        let floor = meta.gen_floor.load(Ordering::Relaxed);
        for slot in 0..shape.slots as u32 {
            self.slot_word(slab, slot)
                .store(floor << 1, std::sync::atomic::Ordering::Relaxed);
        }
        meta.reopen(shape.slots, epoch as u32, era);
    }

    /// Carves the next slab from the reservation for `class`, committing a chunk if needed.
    fn carve(&self, class: usize) -> Result<u32> {
        let mut next = lock(&self.grow);
        let slab = *next;
        if slab >= self.max_slabs {
            return Err(Error::OutOfMemory {
                reserved_bytes: self.data.len(),
            });
        }
        if slab >= self.committed.load(std::sync::atomic::Ordering::Relaxed) {
            let first = slab as usize;
            self.data
                .commit(first * SLAB_SIZE, CHUNK_SLABS * SLAB_SIZE)?;
            self.meta
                .commit(first * META_SIZE, CHUNK_SLABS * META_SIZE)?;
            // SYNC POINT: Release pairs with the Acquire loads of `committed` in
            // `locate`/`free_ptr`: a slab index below it has committed pages and metadata.
            self.committed.store(
                slab + CHUNK_SLABS as u32,
                std::sync::atomic::Ordering::Release,
            );
        }
        *next = slab + 1;
        self.meta(slab).class.store(class as u32, Ordering::Relaxed);
        Ok(slab)
    }

    // ---------------------------------------------------------------- free

    /// Frees the object of `handle`.
    ///
    /// # Errors
    /// [`Error::WrongAllocator`] for another allocator's handle, [`Error::InvalidHandle`] for a
    /// handle naming no slot, [`Error::DoubleFree`] when the slot was already freed, and
    /// [`Error::StaleHandle`] when it was freed and reused since. None of them changes anything.
    #[inline]
    pub fn free(&self, handle: Handle) -> Result<()> {
        let (class, slab, slot) = self.locate(handle)?;
        let word = self.slot_word(slab, slot);
        let generation = handle.generation();
        let next = ((generation + 1) & GEN_MASK) << 1;
        if let Err(found) = word.compare_exchange(
            generation << 1 | 1,
            next,
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Acquire,
        ) {
            self.counters.handle_errors.inc();
            let raw = handle.to_raw();
            // A recycled slab (cache or overflow, page discarded so its words read zero) has
            // handed out nothing since its last object was freed: the handle's object was freed.
            let recycled = self.meta(slab).list() >= ListKind::Cache;
            return Err(if found == next || recycled {
                Error::DoubleFree { handle: raw }
            } else {
                Error::StaleHandle {
                    handle: raw,
                    current: found >> 1,
                    found: generation,
                }
            });
        }
        let (shard_ix, owner) = thread_shard();
        let shard = &self.classes[class].shards[shard_ix];
        self.release_slot(class, slab, slot, shard, Some(owner));
        Ok(())
    }

    /// The object of `handle`, or `None` when the handle is not live (freed, stale, invalid, or
    /// another allocator's). The pointer is valid until the object is freed.
    #[inline]
    pub fn get(&self, handle: Handle) -> Option<NonNull<u8>> {
        let (class, slab, slot) = self.locate(handle).ok()?;
        let word = self
            .slot_word(slab, slot)
            .load(std::sync::atomic::Ordering::Acquire);
        (word == handle.generation() << 1 | 1).then(|| self.object(slab, slot, &SHAPES[class]))
    }

    /// Checks a handle's tag, slab and slot; returns `(class, slab, slot)`.
    #[inline]
    fn locate(&self, handle: Handle) -> Result<(usize, u32, u32)> {
        if handle.tag() != self.tag {
            self.counters.handle_errors.inc();
            return Err(Error::WrongAllocator {
                handle: handle.to_raw(),
                expected: self.tag,
                found: handle.tag(),
            });
        }
        let (slab, slot) = (handle.slab(), handle.slot());
        let invalid = || {
            self.counters.handle_errors.inc();
            Error::InvalidHandle {
                handle: handle.to_raw(),
            }
        };
        if slab >= self.committed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(invalid());
        }
        if self.meta(slab).list() == ListKind::Fresh {
            return Err(invalid());
        }
        let (class, shape) = self.shape_of(slab);
        if slot as usize >= shape.slots {
            return Err(invalid());
        }
        Ok((class, slab, slot))
    }

    /// Frees the object at `ptr`, which must have come from [`SlabAllocator::alloc_ptr`] (or
    /// the `Allocator` impl) of this allocator.
    ///
    /// # Errors
    /// [`Error::InvalidPointer`] when `ptr` is outside this allocator, not the start of an
    /// object, or not live (a double free). Nothing changes then. A pointer freed, then handed
    /// out again, then freed through its old copy cannot be told from a legitimate free.
    #[inline]
    pub fn free_ptr(&self, ptr: NonNull<u8>) -> Result<()> {
        let addr = ptr.as_ptr() as usize;
        let base = self.data.base() as usize;
        let reject = |reason| {
            self.counters.pointer_errors.inc();
            Error::InvalidPointer { addr, reason }
        };
        let offset = addr.wrapping_sub(base);
        let committed = self.committed.load(std::sync::atomic::Ordering::Acquire) as usize;
        if addr < base || offset >= committed * SLAB_SIZE {
            return Err(reject("outside the allocator's slabs"));
        }
        let slab = (offset / SLAB_SIZE) as u32;
        if self.meta(slab).list() == ListKind::Fresh {
            return Err(reject("in a slab never used"));
        }
        let (class, shape) = self.shape_of(slab);
        let within = offset % SLAB_SIZE;
        if within < shape.header || (within - shape.header) % shape.size != 0 {
            return Err(reject("not the start of an object"));
        }
        let slot = ((within - shape.header) / shape.size) as u32;
        if slot as usize >= shape.slots {
            return Err(reject("past the last object of its slab"));
        }
        let word = self.slot_word(slab, slot);
        let mut w = word.load(std::sync::atomic::Ordering::Acquire);
        loop {
            if w & 1 == 0 {
                return Err(reject("not live: double free or never allocated"));
            }
            let next = (((w >> 1) + 1) & GEN_MASK) << 1;
            match word.compare_exchange_weak(
                w,
                next,
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        let (shard_ix, owner) = thread_shard();
        let shard = &self.classes[class].shards[shard_ix];
        self.release_slot(class, slab, slot, shard, Some(owner));
        Ok(())
    }

    /// Gives a claimed slot back to its slab's bitmap, and fixes up the slab's list when the
    /// free made a full slab partial, or emptied a slab of a closed or re-opened era.
    #[inline]
    ///
    /// `counted` is `Some(owner)` for a real free (counted as one, see [`thread_shard`]), `None`
    /// for a slot claimed and given back before it was handed out (not an allocation either).
    fn release_slot(
        &self,
        class: usize,
        slab: u32,
        slot: u32,
        shard: &Shard,
        counted: Option<bool>,
    ) {
        let meta = self.meta(slab);
        let slots = self.classes[class].shape.slots;
        let (before, after, retries) = meta.release(slot);
        #[cfg(feature = "fast-path-counters")]
        {
            if let Some(owner) = counted {
                count_one(&shard.frees_owned, &shard.frees_shared, owner);
            }
            if retries > 0 {
                shard.free_retries.add(u64::from(retries));
            }
        }
        let _ = (shard, retries, counted);
        if before == FULL || (after == empty_bitmap(slots) && !self.slab_era_live(meta)) {
            self.fixup(class, slab);
        }
    }

    /// True when the slab's era is its ring slot's era and the slot is ACTIVE.
    #[inline]
    fn slab_era_live(&self, meta: &SlabMeta) -> bool {
        let epoch = meta.epoch.load(Ordering::Relaxed) as usize % EPOCH_COUNT;
        self.epochs[epoch].state.load(Ordering::Acquire)
            == pack_state(meta.era.load(Ordering::Relaxed), false)
    }

    /// Under the slab's home-shard lock: moves a full slab that a free made partial to the
    /// partial list, and recycles a slab that a free emptied in a closed or re-opened era.
    #[cold]
    fn fixup(&self, class: usize, slab: u32) {
        let meta = self.meta(slab);
        let label = {
            let epoch = meta.epoch.load(Ordering::Relaxed) as usize % EPOCH_COUNT;
            self.epochs[epoch].label_id.load(Ordering::Relaxed)
        };
        let slots = self.classes[class].shape.slots;
        loop {
            let home = meta.home.load(Ordering::Relaxed) as usize % SHARDS;
            let mut sl = self.lock_shard(class, home, label);
            if meta.home.load(Ordering::Relaxed) as usize % SHARDS != home {
                continue; // stolen and republished by another shard while we waited
            }
            let epoch = meta.epoch.load(Ordering::Relaxed) as usize % EPOCH_COUNT;
            match meta.list() {
                kind @ (ListKind::Partial | ListKind::Full) => {
                    if !self.slab_era_live(meta) && meta.seal(slots) {
                        self.unlink(sl.list(kind, epoch), slab);
                        self.recycle(class, slab, label);
                    } else if kind == ListKind::Full && meta.bitmap.load(Ordering::Relaxed) != FULL
                    {
                        self.unlink(&mut sl.full[epoch], slab);
                        self.push(&mut sl.partial[epoch], ListKind::Partial, slab);
                        self.classes[class].shards[home].slow.moves_to_partial.inc();
                    }
                }
                ListKind::Orphan => {
                    let mut cl = self.lock_class(class, label);
                    if meta.list() == ListKind::Orphan && meta.seal(slots) {
                        self.unlink(&mut cl.orphan, slab);
                        self.discard(class, slab);
                        self.cache_push(&mut cl, class, slab);
                    }
                }
                // Current: its filer decides; Cache/Overflow: already recycled.
                _ => {}
            }
            return;
        }
    }

    // ---------------------------------------------------------------- lists

    /// Files a `Current` slab that is no longer published, holding its home shard's lock:
    /// recycle it if its era is closed or gone and it is empty, else orphan it if its era is
    /// gone, else put it on the full or partial list. Returns whether it was recycled.
    fn file(&self, sl: &mut ShardLists, class: usize, slab: u32) -> bool {
        let meta = self.meta(slab);
        let c = &self.classes[class];
        if !self.slab_era_live(meta) && meta.seal(c.shape.slots) {
            self.recycle(class, slab, 0);
            return true;
        }
        let epoch = meta.epoch.load(Ordering::Relaxed) as usize % EPOCH_COUNT;
        let era_here = self.epochs[epoch].state.load(Ordering::Acquire) >> 1;
        let home = &c.shards[meta.home.load(Ordering::Relaxed) as usize % SHARDS];
        if meta.era.load(Ordering::Relaxed) != era_here {
            let mut cl = self.lock_class(class, 0);
            self.push(&mut cl.orphan, ListKind::Orphan, slab);
            c.counters.moves_to_orphan.inc();
        } else if meta.bitmap.load(Ordering::Relaxed) == FULL {
            self.push(&mut sl.full[epoch], ListKind::Full, slab);
            home.slow.moves_to_full.inc();
        } else {
            self.push(&mut sl.partial[epoch], ListKind::Partial, slab);
        }
        false
    }

    /// Recycles a sealed slab that is on no list: [`Self::discard`], then into the cache.
    fn recycle(&self, class: usize, slab: u32, label: u32) {
        self.discard(class, slab);
        let mut cl = self.lock_class(class, label);
        self.cache_push(&mut cl, class, slab);
    }

    /// Raises a sealed slab's generation floor above every slot's generation and returns its
    /// page to the kernel.
    fn discard(&self, class: usize, slab: u32) {
        let c = &self.classes[class];
        let meta = self.meta(slab);
        let mut max_generation = meta.gen_floor.load(Ordering::Relaxed);
        for slot in 0..c.shape.slots as u32 {
            let g = self
                .slot_word(slab, slot)
                .load(std::sync::atomic::Ordering::Relaxed)
                >> 1;
            // Generations wrap at 2^24; take the one furthest ahead of the floor.
            if g.wrapping_sub(max_generation) & GEN_MASK < (1 << 23) {
                max_generation = g;
            }
        }
        meta.gen_floor
            .store((max_generation + 1) & GEN_MASK, Ordering::Relaxed);
        let epoch = meta.epoch.load(Ordering::Relaxed) as usize % EPOCH_COUNT;
        if self.epochs[epoch].state.load(Ordering::Acquire) >> 1 == meta.era.load(Ordering::Relaxed)
        {
            c.per_epoch[epoch].recycled_slabs.inc();
        }
        meta.era.store(0, Ordering::Relaxed);
        c.counters.madvise_calls.inc();
        // SAFETY: the slab is sealed and on no list: no slot is live, no claim can succeed, so
        // no reference into its page exists other than transient atomic reads of slot words,
        // for which zero is a valid (not-allocated) value.
        match unsafe { self.data.discard(slab as usize * SLAB_SIZE, SLAB_SIZE) } {
            Ok(()) => c.counters.madvise_bytes.add(SLAB_SIZE as u64),
            Err(_) => c.counters.madvise_failures.inc(),
        }
        c.counters.recycled_slabs.inc();
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
        c.counters.cache_size.set(u64::from(cl.cache.len));
        c.counters.overflow_size.set(u64::from(cl.overflow.len));
    }

    /// Pushes `slab` on `list` (whose lock the caller holds) and marks it as being on `kind`.
    fn push(&self, list: &mut List, kind: ListKind, slab: u32) {
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
    fn unlink(&self, list: &mut List, slab: u32) {
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

    fn pop(&self, list: &mut List) -> Option<u32> {
        let slab = list.head.checked_sub(1)?;
        self.unlink(list, slab);
        Some(slab)
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

    // ---------------------------------------------------------------- allocator-trait support

    pub(crate) fn count_fallback(&self, bytes: usize) {
        self.counters.system_fallback_allocs.inc();
        self.counters.system_fallback_bytes.add(bytes as u64);
    }

    // ---------------------------------------------------------------- time and rss

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

    // ---------------------------------------------------------------- statistics

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
        let mut orphans = [(0u64, 0u64); CLASS_COUNT];
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
                    for (head, full) in
                        [(sl.partial[index].head, false), (sl.full[index].head, true)]
                    {
                        let mut next = head;
                        while next != 0 {
                            count(acc, next - 1, full);
                            next = self.meta(next - 1).next.load(Ordering::Relaxed);
                        }
                    }
                    if let Some(slab) = load_current(&shard.current[index]) {
                        let full = self.meta(slab).bitmap.load(Ordering::Relaxed) == FULL;
                        count(acc, slab, full);
                    }
                }
            }
            let lists = lock(&c.lists);
            let mut next = lists.orphan.head;
            while next != 0 {
                orphans[class].0 += 1;
                orphans[class].1 += u64::from(self.meta(next - 1).live(slots));
                next = self.meta(next - 1).next.load(Ordering::Relaxed);
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
                list_move_to_orphan: k.moves_to_orphan.get(),
                empty_slab_recycled: k.recycled_slabs.get(),
                empty_slab_cache_size: k.cache_size.get(),
                empty_slab_overflow_size: k.overflow_size.get(),
                empty_slab_overflowed: k.overflow_pushes.get(),
                madvise_calls: k.madvise_calls.get(),
                madvise_bytes: k.madvise_bytes.get(),
                madvise_failures: k.madvise_failures.get(),
                bitmap_alloc_attempts: allocs + alloc_retries,
                bitmap_alloc_cas_retries: alloc_retries,
                bitmap_free_attempts: frees + free_retries,
                bitmap_free_cas_retries: free_retries,
                current_partial_cas_attempts: sum(|s| &s.slow.current_cas_attempts),
                current_partial_cas_failures: sum(|s| &s.slow.current_cas_failures),
                lock_fast_acquire: lock_fast,
                lock_contended,
                total_partial_slabs: acc.partial,
                total_full_slabs: acc.full,
                total_orphan_slabs: orphans[class].0,
                live_objects: acc.live + orphans[class].1,
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
                refcount: slot.refcount.load(Ordering::Relaxed),
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

/// Locks `m`, probing with `try_lock` first; counts the acquisition as fast or contended and
/// says which.
fn lock_counted<'m, T>(
    m: &'m Mutex<T>,
    fast: &Counter,
    contended: &Counter,
) -> (MutexGuard<'m, T>, bool) {
    match m.try_lock() {
        Ok(guard) => {
            fast.inc();
            (guard, false)
        }
        Err(TryLockError::WouldBlock) => {
            contended.inc();
            (lock(m), true)
        }
        Err(TryLockError::Poisoned(p)) => (p.into_inner(), false),
    }
}

/// Locks a mutex, recovering from poisoning (nothing under our locks can panic half-way
/// through an update except on a broken invariant, and the data stays consistent then).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
