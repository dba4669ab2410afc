//! # temporal-slab: an epoch-scoped slab allocator
//!
//! Objects that die together are allocated together. A program that handles requests, frames or
//! batches allocates everything one unit needs in that unit's **epoch**; when the unit is done it
//! **closes** the epoch, and every slab of the epoch whose objects are all free is recycled and
//! its page handed back to the kernel with `madvise(MADV_DONTNEED)`. Memory does not creep, and
//! the allocator can say who holds what: epochs carry labels, domain refcounts and live-object
//! counts, and [`SlabAllocator::stats`] returns all of it while other threads allocate.
//!
//! ## The model
//! - **Size classes**: 64, 96, 128, 192, 256, 384, 512 and 768 bytes ([`CLASS_SIZES`]), found
//!   from the size with one table read. Every object is 16-byte aligned. Larger requests are
//!   [`Error::TooLarge`] (the [`Epoch`] allocator sends them to the system allocator instead).
//! - **Slabs**: 4 KiB pages carved in order from one address-space reservation made with `mmap`
//!   and never moved, so an object's address finds its slab with a subtraction and a shift. A
//!   slab holds objects of one class and nothing else ([`SlabShape`]). Its slot words (one
//!   `u32` per slot: generation and allocated bit) live in a dense table beside the slabs, and
//!   its bookkeeping (slot bitmap, owning epoch and era, list links, generation floor: 32
//!   bytes) in a metadata region, so allocating never touches an object's page and returning
//!   the page to the kernel loses nothing that matters.
//! - **Runs and lists**: per class, epoch and shard a **run** of published slabs the fast path
//!   allocates from (enough for about 150 objects), a partial list and a count of full slabs;
//!   per class a bounded cache of recycled slabs with an overflow list.
//! - **Epochs**: a ring of [`EPOCH_COUNT`] = 16 slots. [`SlabAllocator::epoch_advance`] opens a
//!   slot under a new **era**, a number that only grows, so an [`EpochId`] (slot + era) taken
//!   before the slot was re-opened is recognisably stale ([`Error::StaleEpoch`]). States:
//!   ACTIVE, then CLOSING after [`SlabAllocator::epoch_close`]; allocating in a CLOSING epoch is
//!   [`Error::EpochClosed`] and counted. A slot is reopened only once its epoch has **drained**
//!   (CLOSING, refcount 0, no slab holding its objects): an epoch that still holds anything keeps
//!   its slot, label, refcount and live objects in the stats however many epochs are opened
//!   after it, the ring skips it, and when every other slot is held `epoch_advance` returns
//!   [`Error::EpochRingFull`] instead of erasing one.
//! - **Handles**: [`Handle`] packs an allocator tag, the slab index, the slot and the slot's
//!   **generation**. Every free advances the slot's generation, so a double free, a free or `get`
//!   of a handle whose slot was reused, and a handle of another allocator are each an error every
//!   time (up to the limits in [`Handle`]'s docs), never a corruption.
//!
//! ## Four ways to allocate
//! ```
//! use temporal_slab::SlabAllocator;
//! use allocator_api2::vec::Vec;
//!
//! let slab = SlabAllocator::new()?;
//! let epoch = slab.epoch_current();
//!
//! // (a) handles: checked on every use
//! let h = slab.alloc(100, epoch)?;
//! let p = slab.get(h).expect("live");
//! assert_eq!(p.as_ptr() as usize % 16, 0);
//! slab.free(h)?;
//! assert!(slab.free(h).is_err(), "double free is an error, not a corruption");
//!
//! // (b) pointers, malloc-style
//! let p = slab.alloc_ptr(48, epoch)?;
//! slab.free_ptr(p)?;
//!
//! // (c) collections, through allocator_api2
//! let e = slab.epoch(epoch);
//! let mut v: Vec<u64, _> = Vec::new_in(&e);
//! v.extend(0..10);
//! assert_eq!(v.iter().sum::<u64>(), 45);
//! drop(v);
//!
//! // done with the unit of work: close its epoch, its empty slabs go back to the kernel
//! let next = slab.epoch_advance()?;
//! slab.epoch_close(epoch)?;
//! assert!(slab.alloc(64, epoch).is_err());
//! assert!(slab.alloc(64, next).is_ok());
//! # Ok::<(), temporal_slab::Error>(())
//! ```
//!
//! (d) **As the global allocator**: [`global::EpochGlobal`] in `#[global_allocator]` serves
//! every request of at most 768 bytes (alignment at most 16) made inside a per-thread scope
//! ([`global::scope`], [`global::enter`]) from the scope's epoch of one process-wide allocator
//! ([`global::instance`]), and everything else from `std::alloc::System`; frees find the owner
//! by address, so `String`, `Vec`, `HashMap` and anything else can be freed anywhere, at any
//! time. Its building blocks (routing, owned free, usable size, the scope stack) are public for
//! a C `malloc` (`temporal-slab-malloc`). The [`global`] module docs have the routing table, the
//! costs, the re-entrancy argument and the `fork` scheme.
//!
//! ## Semantic attribution
//! [`SlabAllocator::set_label`] names an epoch (31 bytes at most; the first 16 distinct labels
//! get registry ids), [`SlabAllocator::enter`] returns an [`EpochDomain`] guard whose first
//! enter on a thread raises the epoch's refcount and whose last exit lowers it (optionally closing
//! the epoch), and [`diag::leak_report`] finds CLOSING epochs a domain still holds.
//!
//! ## Safety and correctness
//! Invariants the code keeps (argued where they are kept, in `allocator.rs` and `slab.rs`):
//! - A slot is handed out only by a successful CAS of its bitmap bit from 0 to 1, and given back
//!   only after its slot word's generation moved on (CAS on the slot word): two owners of one
//!   slot, or a free through a stale handle, are impossible.
//! - Only an empty slab can be **sealed** (bitmap CAS from empty to all ones), and only a sealed
//!   slab is recycled: its page is discarded while no slot is live and no claim can succeed.
//! - A recycled slab's next generations start above every generation its slots reached (the
//!   generation floor in its metadata), so handles from before the recycling stay stale.
//! - A ring slot is reopened only after its era drained, so the new era is never handed memory
//!   the old era still uses, and a reference (domain) taken in an old era can never change a
//!   newer era's refcount: the refcount word carries its era and changes only by CAS.
//! - The lock-free protocols (bitmap, run publication and reuse, slot-word generations) are
//!   model checked with loom (the `loom_models` module of `src/slab.rs`,
//!   `RUSTFLAGS="--cfg loom" cargo test -p temporal-slab --lib --release loom_`).
//!
//! `SlabAllocator` is `Send + Sync`: every shared field is an atomic or behind one of its own
//! mutexes; the two mappings it owns are reached only through them. [`EpochDomain`] is neither:
//! it must be dropped on the thread that entered.
//!
//! ## Performance
//! The fast path takes no lock: one load of the epoch state, loads of this thread's shard's run
//! (a cursor and a slab), one bitmap CAS, one era check, one slot-word store and one counter
//! bump on a cache line this thread's shard owns (no locked instruction for the first
//! [`SHARDS`] threads). Threads map to one of [`SHARDS`] shards per class, each with its own run
//! per epoch, so threads do not fight over a bitmap, and each shard keeps its own partial list
//! behind its own lock, so the slow path of one thread does not wait for another's. The slow
//! path runs once per run of slabs (about 150 objects, so under 1% of allocations): it files
//! the run's slabs and publishes a new run from the shard's partial slabs, then slabs stolen
//! from other shards (try-lock only), then recycled ones (class lock), then fresh ones, and
//! prefetches their slot words. Lock holders never allocate and never print; `epoch_close` returns
//! empty slabs to the kernel with one `madvise` per contiguous range, with no lock held.
//! Measurements against glibc, mimalloc and jemalloc: `cargo run --release -p bench -- slab`.
//!
//! ## Assumptions
//! Linux (`mmap`, `mprotect`, `madvise(MADV_DONTNEED)` zero-filling anonymous private pages,
//! `/proc/self/statm`), 4 KiB slabs regardless of the kernel's page size, 64-bit addresses.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

mod allocator;
mod api2;
mod class;
pub mod diag;
mod domain;
mod epoch;
mod error;
pub mod global;
mod handle;
mod region;
mod rss;
mod slab;
mod stats;
mod sync;

pub use allocator::{CHUNK_SLABS, Config, SHARDS, SlabAllocator};
pub use api2::Epoch;
pub use class::{
    CLASS_COUNT, CLASS_SIZES, MAX_OBJECT_SIZE, OBJECT_ALIGN, SHAPES, SlabShape, class_for_size,
};
pub use domain::EpochDomain;
pub use epoch::{EPOCH_COUNT, EpochId, EpochState, MAX_LABEL_LEN, MAX_LABELS};
pub use error::{Error, Result};
pub use handle::Handle;
pub use rss::process_rss_bytes;
pub use stats::{
    ClassStats, EpochStats, LABEL_BUCKETS, LabelContention, LabelRegistry, StatsSnapshot,
};

/// Size of a slab, bytes.
pub const SLAB_SIZE: usize = 4096;

#[cfg(test)]
mod send_sync {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn allocator_is_send_and_sync() {
        assert_send_sync::<crate::SlabAllocator>();
        assert_send_sync::<crate::Handle>();
        assert_send_sync::<crate::EpochId>();
    }
}
