//! temporal-slab as the process's allocator: [`EpochGlobal`] for `#[global_allocator]`, and
//! the building blocks a C `malloc` is made of (`temporal-slab-malloc` uses them).
//!
//! One process-wide [`SlabAllocator`] ([`instance`]) serves every small request made inside a
//! **scope**: a per-thread, nestable "allocate in this epoch" marker ([`scope`], [`enter`],
//! or [`scope_enter`]/[`scope_exit`] for callers without closures). Everything else goes to
//! a **fallback** allocator (`std::alloc::System` for [`EpochGlobal::new`]). Frees find the
//! owner from the address alone, so memory can be freed anywhere, any time, by any thread.
//!
//! ```no_run
//! use temporal_slab::global::{self, EpochGlobal};
//!
//! #[global_allocator]
//! static GLOBAL: EpochGlobal = EpochGlobal::new();
//!
//! fn handle(request: &str) -> usize {
//!     let slab = global::instance().expect("reserve address space");
//!     let epoch = slab.epoch_advance().expect("a free ring slot");
//!     slab.set_label(epoch, "request").unwrap();
//!     // Every String, Vec and HashMap node of at most 768 bytes made here is in `epoch`.
//!     let words = global::scope(epoch, || {
//!         request.split(' ').map(str::to_owned).collect::<Vec<_>>()
//!     });
//!     let n = words.len();
//!     drop(words); // freed outside the scope: routed by address
//!     slab.epoch_close(epoch).unwrap(); // its empty slabs go back to the kernel
//!     n
//! }
//! # fn main() { handle("a b c"); }
//! ```
//!
//! # Routing
//! | request                                                          | goes to                  |
//! |------------------------------------------------------------------|--------------------------|
//! | size <= 768, align <= 16, inside a scope                         | the innermost scope's epoch |
//! | size <= 768, align <= 16, outside every scope, [`Outside::System`] (default) | the fallback |
//! | size <= 768, align <= 16, outside every scope, [`Outside::CurrentEpoch`] | the allocator's current epoch |
//! | larger than 768 bytes or aligned to more than 16                 | the fallback             |
//! | refused by the slab (epoch closed or stale, reservation exhausted) | the fallback           |
//! | more than [`MAX_SCOPE_DEPTH`] scopes open on the thread          | the fallback             |
//! | made while the allocator is being created, or if creation failed | the fallback             |
//! | free / realloc / usable size of a pointer                        | its owner, by address ([`owns`]) |
//!
//! Requests routed to an epoch that the slab does not serve (too large, over-aligned or
//! refused) are counted in [`crate::StatsSnapshot::system_fallback_allocs`]; requests outside
//! every scope in [`Outside::System`] mode are not counted (they never involve the slab).
//! Allocating in a closed epoch is also counted in `epoch_closed_errors`, as for any caller.
//!
//! `realloc` keeps the pointer when the new size is in the same size class (shrink or grow),
//! and otherwise moves the object where a new request of the new size would go: between
//! classes, from the slab to the fallback (past 768 bytes, or a move made outside every scope
//! in [`Outside::System`] mode) and back (a fallback block resized to 768 bytes or less where
//! a new request would go to an epoch), copying the contents.
//!
//! # Lifetimes
//! - The allocator is created on first use and never dropped: its reservation stays mapped,
//!   so [`owns`] is exact for the life of the process.
//! - Closing an epoch never frees its live objects (see [`SlabAllocator::epoch_close`]), and
//!   this module frees only on `dealloc`/`free`: an object that outlives its epoch stays
//!   valid and is reported as one of that epoch's `live_objects` in
//!   [`SlabAllocator::stats`] (its entry stays there, CLOSING, with its label, and keeps its
//!   ring slot until the object is freed). That entry is the leak report of the global path:
//!   [`crate::diag::leak_report`] lists only epochs a *domain* still holds (refcount > 0),
//!   which a scope never is.
//! - A scope is a routing decision, not a reference: it does not raise the epoch's refcount.
//!   Closing an epoch while scopes on it are open is allowed; their requests then go to the
//!   fallback.
//!
//! # What costs what
//! - Allocation in a scope: one thread-local read, one `Acquire` load of the state word, then
//!   [`SlabAllocator::alloc_ptr`]'s fast path (no lock).
//! - Allocation outside every scope: one thread-local read and one relaxed load, then the
//!   fallback; in [`Outside::CurrentEpoch`] mode also the three loads of
//!   [`SlabAllocator::epoch_current`].
//! - Free: [`owns`] (two loads of statics, a subtraction and a compare), then either
//!   [`SlabAllocator::free_ptr`] (no lock unless the free makes a full slab partial or empties
//!   a slab of a closed epoch) or the fallback's free.
//! - The first request routed to an epoch creates the allocator: three `mmap`s (16 GiB of
//!   address space, no memory) and one `pthread_atfork`.
//!
//! # Re-entrancy
//! Nothing on the allocation or free path allocates through the global allocator, so a
//! request is never re-entered from inside itself:
//! - Thread-local state is `const`-initialised with no destructor: the scope stack
//!   (`scope.rs`), the "creating here" flag (`init.rs`) and the allocator's thread ordinal
//!   (which shard a thread uses). Such thread-locals are plain `#[thread_local]` statics: no
//!   lazy initialisation, no destructor registration (which would call `calloc` in glibc),
//!   usable during thread exit.
//! - The slab's slow path (refilling a run, carving and committing slabs, `mprotect`), its
//!   free-side fix-ups and recycling (`madvise`, a 4 KiB stack buffer), and its errors (all
//!   plain values; `Error::Map` wraps an OS error code) allocate nothing. Locks are futex-based
//!   `std::sync::Mutex`es, which allocate nothing, and no lock holder allocates, so even a
//!   call that *does* allocate (stats, labels as `String`, `epoch_close` reading
//!   `/proc/self/statm` with a stack buffer) never holds an allocator lock while doing so.
//! - Creating the allocator allocates (two `Box`es); those requests see the state word
//!   "creating" and go to the fallback (see `init.rs`).
//! - Thread exit: a thread that exits inside a scope leaves nothing behind (a scope holds no
//!   reference and no resource); destructors of other thread-locals that allocate or free
//!   while the thread exits are routed as usual; the objects the thread allocated stay valid
//!   and can be freed by any thread.
//!
//! # Fork
//! `pthread_atfork` handlers, registered once when the allocator is created: `prepare` takes
//! every lock of the allocator in the allocator's own lock order, `parent` and `child` release
//! them, so a forked child never inherits a lock held by a thread it does not have, and can
//! allocate and free at once. What other threads were doing lock-free at the instant of the
//! fork can only leak memory in the child (an object claimed but not yet handed out, slabs
//! being recycled with no lock held), never corrupt it. The fallback (glibc `malloc`) makes
//! itself fork-safe the same way. The full argument, including a fork during creation, is in
//! `init.rs`.
//!
//! # Errors
//! The allocation path never fails on its own: whatever the slab refuses goes to the
//! fallback, and only the fallback can return null. [`free_owned`] of a pointer that is not a
//! live object (a double free, or an address inside the reservation that is not the start of
//! an object) changes nothing and is counted in [`crate::StatsSnapshot::pointer_errors`]; it
//! does not abort. A pointer freed, handed out again and then freed through its old copy cannot
//! be told from a legitimate free (as in any allocator without quarantine).
//!
//! [`SlabAllocator`]: crate::SlabAllocator
//! [`SlabAllocator::epoch_close`]: crate::SlabAllocator::epoch_close
//! [`SlabAllocator::stats`]: crate::SlabAllocator::stats
//! [`SlabAllocator::alloc_ptr`]: crate::SlabAllocator::alloc_ptr
//! [`SlabAllocator::epoch_current`]: crate::SlabAllocator::epoch_current
//! [`SlabAllocator::free_ptr`]: crate::SlabAllocator::free_ptr

mod init;
mod scope;

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, Ordering};

pub use init::{instance, owns};
pub use scope::{
    MAX_SCOPE_DEPTH, ScopeGuard, current_scope, enter, scope, scope_depth, scope_enter, scope_exit,
    scope_overflows,
};

use crate::class::{OBJECT_ALIGN, class_for_size};
use crate::{EpochId, MAX_OBJECT_SIZE};
use scope::Innermost;

/// Where requests made outside every scope go (see the routing table). Process-wide; set with
/// [`set_outside_scope`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Outside {
    /// The fallback allocator (`std::alloc::System` for [`EpochGlobal::new`]). The default.
    System = 0,
    /// The allocator's current epoch ([`crate::SlabAllocator::epoch_current`]), so every small
    /// request is served by the slab; what an `LD_PRELOAD` `malloc` wants.
    CurrentEpoch = 1,
}

static OUTSIDE: AtomicU8 = AtomicU8::new(Outside::System as u8);

/// Sets where requests made outside every scope go, for every thread, from the next request
/// on. Objects already allocated are unaffected (frees route by address).
pub fn set_outside_scope(outside: Outside) {
    OUTSIDE.store(outside as u8, Ordering::Relaxed);
}

/// The current [`Outside`] setting.
pub fn outside_scope() -> Outside {
    if OUTSIDE.load(Ordering::Relaxed) == Outside::CurrentEpoch as u8 {
        Outside::CurrentEpoch
    } else {
        Outside::System
    }
}

#[inline]
fn in_slab(size: usize, align: usize) -> bool {
    size <= MAX_OBJECT_SIZE && align <= OBJECT_ALIGN
}

/// The epoch this thread's request would be routed to ignoring size: the innermost scope's,
/// the current epoch in [`Outside::CurrentEpoch`] mode, or `None` for the fallback. Creates
/// the allocator in [`Outside::CurrentEpoch`] mode if needed.
#[inline]
fn selected_epoch() -> Option<EpochId> {
    match scope::innermost() {
        Innermost::Epoch(epoch) => Some(epoch),
        Innermost::Overflowed => None,
        Innermost::Outside => {
            if OUTSIDE.load(Ordering::Relaxed) == Outside::CurrentEpoch as u8 {
                Some(init::get_or_start()?.epoch_current())
            } else {
                None
            }
        }
    }
}

/// The epoch a request of `size` bytes aligned to `align` made now on this thread goes to, by
/// the routing table, or `None` when it goes to the fallback. Says nothing about whether the
/// slab will serve it (the epoch may be closed): [`alloc_routed`] tries. Creates the allocator
/// when the answer needs its current epoch.
#[inline]
pub fn route(size: usize, align: usize) -> Option<EpochId> {
    if !in_slab(size, align) {
        return None;
    }
    selected_epoch()
}

/// Routes a request of `size` bytes aligned to `align` (a power of two) and, when it goes to
/// an epoch, allocates it there. `Some` is a 16-byte aligned object of the size class of
/// `size` (at least `size` bytes, [`usable_size`] says how many), its bytes unspecified (not
/// zeroed); `None` means "use your fallback": the request routes there, or the slab refused it
/// (counted, see the module docs). Creates the allocator on the first request routed to an
/// epoch. Never allocates through the global allocator, never blocks except on the slab's
/// slow-path locks, never panics.
///
/// # Safety
/// The returned object must be freed only through this module ([`free_owned`],
/// [`realloc_owned`], or [`EpochGlobal`]), at most once, and not used after that; it stays
/// valid until then (the allocator is never dropped, closing its epoch does not free it).
#[inline]
pub unsafe fn alloc_routed(size: usize, align: usize) -> Option<NonNull<u8>> {
    let epoch = selected_epoch()?;
    let slab = init::get_or_start()?;
    if !in_slab(size, align) {
        slab.count_fallback(size);
        return None;
    }
    match slab.alloc_ptr(size, epoch) {
        Ok(ptr) => Some(ptr),
        Err(_) => {
            slab.count_fallback(size);
            None
        }
    }
}

/// Frees an object the global allocator owns.
///
/// A `ptr` that is not a live object (a double free, or an address inside the reservation
/// that is not the start of an object) changes nothing: it is counted in
/// [`crate::StatsSnapshot::pointer_errors`] and the call returns. It does not abort (glibc
/// aborts on the double frees it detects; this allocator detects every double free of a slot
/// that was not handed out again since, and never corrupts its state on one).
///
/// # Safety
/// [`owns`]`(ptr)` must hold, and `ptr` must not be used after this call (by anyone): as for
/// `free`. If the object was freed and handed out again, the call frees the new owner's object.
#[inline]
pub unsafe fn free_owned(ptr: NonNull<u8>) {
    debug_assert!(owns(ptr.as_ptr()));
    if let Some(slab) = init::ready() {
        // An error is counted by `free_ptr` and changes nothing (see above).
        let _ = slab.free_ptr(ptr);
    }
}

/// The size class in bytes of the live object at `ptr` (it may be used up to this size), or
/// `None` when `ptr` is not the start of a live object of the global allocator (including
/// every pointer the fallback handed out). Counts nothing, changes nothing.
#[inline]
pub fn usable_size(ptr: *const u8) -> Option<usize> {
    if !owns(ptr) {
        return None;
    }
    init::ready()?.usable_size(ptr)
}

/// Outcome of [`realloc_owned`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Realloc {
    /// The object, resized: the same pointer when the new size is in the same size class,
    /// otherwise a new object with the contents copied and the old one freed.
    Done(NonNull<u8>),
    /// The new size goes to the fallback (or the slab refused it): allocate it there, copy
    /// `min(old_size, new_size)` bytes, then [`free_owned`] the old pointer. Nothing was done.
    Fallback {
        /// The old object's usable size (its class size), bytes.
        old_size: usize,
    },
    /// `ptr` is not a live object: nothing was done (counted in
    /// [`crate::StatsSnapshot::pointer_errors`]).
    NotLive,
}

/// Resizes an object the global allocator owns to `new_size` bytes aligned to `align`: keeps
/// it when `new_size` is in its size class (and `align <= 16`), otherwise moves it where a new
/// request would be routed now (see [`Realloc`]). The old object's bytes up to
/// `min(old class size, new_size)` are preserved.
///
/// # Safety
/// [`owns`]`(ptr)` must hold and `ptr` must not be used after a `Done` result except as the
/// returned pointer (which may be `ptr`); the new object follows [`alloc_routed`]'s rules.
pub unsafe fn realloc_owned(ptr: NonNull<u8>, new_size: usize, align: usize) -> Realloc {
    let Some(slab) = init::ready() else {
        return Realloc::NotLive;
    };
    let Some(old_size) = slab.usable_size(ptr.as_ptr()) else {
        slab.count_pointer_error();
        return Realloc::NotLive;
    };
    if in_slab(new_size, align) && class_for_size(new_size) == class_for_size(old_size) {
        return Realloc::Done(ptr);
    }
    // SAFETY: the new object is handed to the caller under `alloc_routed`'s rules (ours).
    match unsafe { alloc_routed(new_size, align) } {
        Some(new) => {
            // SAFETY: `ptr` is live for `old_size` bytes (usable_size above; the caller owns
            // it, so nobody frees it meanwhile), `new` for at least `new_size`; they are two
            // distinct live objects, so the ranges do not overlap. A raw byte copy may copy
            // bytes of the old object's class the caller never wrote.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), old_size.min(new_size));
            }
            // An error here would mean the caller freed `ptr` concurrently (their contract).
            let _ = slab.free_ptr(ptr);
            Realloc::Done(new)
        }
        None => Realloc::Fallback { old_size },
    }
}

/// temporal-slab as a [`GlobalAlloc`]: `#[global_allocator] static GLOBAL: EpochGlobal =
/// EpochGlobal::new();`. Routes by the table in the [module docs](self); `F` is the fallback
/// allocator (`std::alloc::System` unless made with [`EpochGlobal::with_fallback`]).
///
/// All `EpochGlobal` values share the one process-wide allocator ([`instance`]) and the
/// per-thread scopes; a pointer's owner is found by address, so a block may be freed through
/// any of them (or through `temporal-slab-malloc`'s `free`) as long as the fallbacks agree.
#[derive(Debug, Default, Clone, Copy)]
pub struct EpochGlobal<F = System> {
    fallback: F,
}

impl EpochGlobal<System> {
    /// The global allocator with `System` as its fallback. Does nothing until the first
    /// request routed to an epoch (which creates the slab allocator).
    pub const fn new() -> EpochGlobal<System> {
        EpochGlobal { fallback: System }
    }
}

impl<F> EpochGlobal<F> {
    /// The global allocator with `fallback` for everything the slab does not serve.
    pub const fn with_fallback(fallback: F) -> EpochGlobal<F> {
        EpochGlobal { fallback }
    }
}

// SAFETY: every block comes either from the slab (`alloc_routed`: valid, 16-byte aligned, at
// least `layout.size()` bytes, never moved and never freed until deallocated, since the
// allocator lives for the whole process) or from `F` with the same layout; `dealloc` and
// `realloc` send a pointer to the slab exactly when `owns` says it is in the slab reservation,
// which holds for every slab block and for no block of `F` (the reservation is mapped for the
// life of the process, so `F` can never be handed addresses in it). Slab requests are routed
// only when `align <= 16`, which every slab object satisfies. Nothing here unwinds.
unsafe impl<F: GlobalAlloc> GlobalAlloc for EpochGlobal<F> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the block is freed only through `dealloc`/`realloc` below, which route it back
        // by address (the `alloc_routed` contract).
        match unsafe { alloc_routed(layout.size(), layout.align()) } {
            Some(ptr) => ptr.as_ptr(),
            // SAFETY: the caller's layout obligations (non-zero size) pass through unchanged.
            None => unsafe { self.fallback.alloc(layout) },
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        match unsafe { alloc_routed(layout.size(), layout.align()) } {
            Some(ptr) => {
                // SAFETY: the object is at least `layout.size()` bytes and ours alone. Slab
                // memory is not zero on reuse, so it is zeroed here.
                unsafe { ptr.as_ptr().write_bytes(0, layout.size()) };
                ptr.as_ptr()
            }
            // SAFETY: as in `alloc`.
            None => unsafe { self.fallback.alloc_zeroed(layout) },
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if owns(ptr) {
            // SAFETY: the caller passes a block of this allocator (non-null) that is not used
            // after; `owns` holds.
            unsafe { free_owned(NonNull::new_unchecked(ptr)) }
        } else {
            // SAFETY: not in the slab reservation, so `F` allocated it with `layout`.
            unsafe { self.fallback.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        if owns(ptr) {
            // SAFETY: a non-null block of ours in the reservation (`owns`), given up by the
            // caller on success.
            let old = unsafe { NonNull::new_unchecked(ptr) };
            // SAFETY: as above.
            match unsafe { realloc_owned(old, new_size, align) } {
                Realloc::Done(new) => new.as_ptr(),
                Realloc::Fallback { .. } => {
                    // SAFETY: `GlobalAlloc::realloc`'s contract makes `new_size` with the old
                    // alignment a valid layout.
                    let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, align) };
                    // SAFETY: `new_size` is non-zero (the caller's contract).
                    let new = unsafe { self.fallback.alloc(new_layout) };
                    if !new.is_null() {
                        // SAFETY: the old block holds `layout.size()` bytes, the new one
                        // `new_size`; distinct blocks. Then the old one is freed, once.
                        unsafe {
                            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                            free_owned(old);
                        }
                    }
                    new
                }
                // The caller passed a block that is not live: nothing to resize. Null makes the
                // caller report an allocation failure.
                Realloc::NotLive => std::ptr::null_mut(),
            }
        } else {
            if in_slab(new_size, align) {
                // SAFETY: as in `alloc`.
                if let Some(new) = unsafe { alloc_routed(new_size, align) } {
                    // SAFETY: `ptr` is `F`'s block of `layout.size()` bytes, `new` a distinct
                    // slab object of at least `new_size`; `ptr` is then freed once, by `F`.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            ptr,
                            new.as_ptr(),
                            layout.size().min(new_size),
                        );
                        self.fallback.dealloc(ptr, layout);
                    }
                    return new.as_ptr();
                }
            }
            // SAFETY: `F`'s block with `layout`; the caller's contract covers `new_size`.
            unsafe { self.fallback.realloc(ptr, layout, new_size) }
        }
    }
}
