//! The process-wide allocator: created lazily on first use, published through one word, and
//! kept consistent across `fork`.
//!
//! # The state word
//! [`STATE`] is one `usize`, written only by the thread that creates the allocator:
//!
//! | value                  | meaning                                                       |
//! |------------------------|---------------------------------------------------------------|
//! | 0                      | not created yet                                               |
//! | `pid << 2 \| 1`        | being created by a thread of process `pid`                    |
//! | 2                      | creation failed (`mmap` refused): every request falls back    |
//! | a pointer (8-aligned)  | the leaked `&'static SlabAllocator`                           |
//!
//! The only transitions are 0 -> creating (one CAS: exactly one thread wins and is the
//! creator) and creating -> pointer or failed (one `Release` store by the creator; or by the
//! `fork` child handler, see below). Readers load it with `Acquire` and see either a value
//! they must not use (0, creating, failed: the request goes to the fallback) or the pointer,
//! and then everything the creator wrote before publishing it. This is `std::sync::Once` with
//! the waiting taken out (the allocation path never waits: a request made while the
//! allocator is being created goes to the fallback, which is always right because frees route
//! by address) and with the creator recognisable, so it needs no model of its own: the one CAS
//! picks the creator, and the one Release/Acquire pair publishes the value.
//!
//! Creating the allocator allocates (`SlabAllocator::with_config` boxes its classes, and the
//! allocator itself is boxed and leaked): those requests come back through the global
//! allocator, find the word "creating" and go to the fallback. No request ever waits for
//! creation and none recurses into it.
//!
//! # Fork
//! Once the allocator exists, [`libc::pthread_atfork`] registers three handlers, once per
//! process: `prepare` takes every lock of the allocator in its lock order
//! (`SlabAllocator::lock_all`), `parent` and `child` release them. So the child never starts
//! with a lock held by a thread that does not exist in it. What else another thread was doing
//! at the instant of the fork stops half-done in the child, and each such half is harmless:
//! - a fast-path claim whose slot word was not written yet: that slot stays taken (a leak of
//!   one object in the child);
//! - a recycling pass (sealed slabs being returned to the kernel with no lock held): those
//!   slabs are never filed in the child (a leak of those slabs; their epoch never drains, it
//!   keeps its ring slot);
//! - counters are relaxed atomics and keep whatever value they had.
//!
//! No lock is held in the child, no slab is on two lists, no object is handed out twice.
//! A fork that lands while the allocator is being created (before the handlers exist) leaves
//! the child with the word "creating by the parent's pid": the child sees a pid that is not
//! its own, never waits for it ([`instance`] returns `None`), and serves every request from
//! the fallback. A fork that lands after the handlers were registered but before the creator
//! published the pointer is finished by the child handler, which publishes it.

use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use crate::SlabAllocator;
use crate::allocator::{AllLocks, Config};

const UNINIT: usize = 0;
const FAILED: usize = 2;
const CREATING_TAG: usize = 1;

/// See the module docs for the values.
static STATE: AtomicUsize = AtomicUsize::new(UNINIT);
/// The allocator, once it exists (set before the fork handlers are registered, so `prepare`
/// and `child` find it even while [`STATE`] still says "creating").
static CREATED: AtomicPtr<SlabAllocator> = AtomicPtr::new(std::ptr::null_mut());
/// The slab reservation's first address; set before [`RESERVED_LEN`] (see [`owns`]).
static RESERVED_BASE: AtomicUsize = AtomicUsize::new(0);
/// The slab reservation's length in bytes; 0 until the allocator exists.
static RESERVED_LEN: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// True on the thread that is creating the allocator, while it does. Const-initialised and
    /// without a destructor: reading it never allocates and works during thread exit.
    static CREATING_HERE: Cell<bool> = const { Cell::new(false) };
}

#[inline]
fn as_ready(word: usize) -> Option<&'static SlabAllocator> {
    if word & 3 == 0 && word != UNINIT {
        // SAFETY: a word with the low two bits clear and not 0 is only ever the address of the
        // allocator the creator leaked (`Box::leak`, never freed), published with Release
        // after it was fully built; the caller loaded it with Acquire.
        Some(unsafe { &*(word as *const SlabAllocator) })
    } else {
        None
    }
}

/// The allocator if it exists now; never creates it, never waits.
#[inline]
pub(super) fn ready() -> Option<&'static SlabAllocator> {
    // SYNC POINT: Acquire pairs with the Release store of the pointer in `create` (or in the
    // fork child handler).
    as_ready(STATE.load(Ordering::Acquire))
}

/// The allocator, creating it if nobody has started to; `None` while it is being created (by
/// any thread) or if creation failed. Never waits: the allocation path's entry.
#[inline]
pub(super) fn get_or_start() -> Option<&'static SlabAllocator> {
    // SYNC POINT: as in `ready`.
    let word = STATE.load(Ordering::Acquire);
    if let Some(a) = as_ready(word) {
        return Some(a);
    }
    if word == UNINIT {
        create();
        return ready();
    }
    None
}

/// The process-wide allocator: created on the first call (from this function or from the
/// first request the global path routes to an epoch), then the same `&'static` for the life
/// of the process; it is never dropped, so pointers it handed out stay valid however late
/// they are freed.
///
/// `None` when creation failed (the kernel refused the 16 GiB address-space reservation, e.g.
/// under a tight `RLIMIT_AS`), when called by the thread that is creating it (from inside an
/// allocation creation makes), and in a `fork` child forked while another thread was creating
/// it. A call made while *another* thread of this process is creating it waits (yielding) until
/// that thread is done; creation takes a few system calls.
///
/// Use it for everything the global path does not do itself: `epoch_advance`, `epoch_close`,
/// labels, stats, domains.
pub fn instance() -> Option<&'static SlabAllocator> {
    loop {
        // SYNC POINT: as in `ready`.
        let word = STATE.load(Ordering::Acquire);
        if let Some(a) = as_ready(word) {
            return Some(a);
        }
        match word {
            UNINIT => create(),
            FAILED => return None,
            creating => {
                if CREATING_HERE.get() || creating >> 2 != std::process::id() as usize {
                    return None;
                }
                std::thread::yield_now();
            }
        }
    }
}

/// Whether `ptr` lies in the global allocator's slab reservation: one subtraction and one
/// compare against two statics, without touching the allocator. False before the allocator
/// exists and for every pointer the fallback allocator handed out (the reservation is mapped
/// for the life of the process, so nothing else is ever placed there).
#[inline]
pub fn owns(ptr: *const u8) -> bool {
    // SYNC POINT: Acquire pairs with the Release store of RESERVED_LEN in `create`: a thread
    // that sees the length also sees the base (a length paired with a base of 0 would claim
    // the low 16 GiB of the address space).
    let len = RESERVED_LEN.load(Ordering::Acquire);
    (ptr as usize).wrapping_sub(RESERVED_BASE.load(Ordering::Relaxed)) < len
}

/// Sets [`STATE`] to `FAILED` if creation unwinds, so waiters in [`instance`] stop waiting.
struct CreationGuard {
    done: bool,
}

impl Drop for CreationGuard {
    fn drop(&mut self) {
        CREATING_HERE.set(false);
        if !self.done {
            // SYNC POINT: Release pairs with the Acquire loads of STATE.
            STATE.store(FAILED, Ordering::Release);
        }
    }
}

/// Creates the allocator if [`STATE`] is still 0 (otherwise does nothing).
#[cold]
#[inline(never)]
fn create() {
    let creating = (std::process::id() as usize) << 2 | CREATING_TAG;
    if STATE
        .compare_exchange(UNINIT, creating, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    CREATING_HERE.set(true);
    let mut guard = CreationGuard { done: false };
    // Every allocation below comes back through the global allocator, finds STATE "creating"
    // and goes to the fallback.
    let word = match SlabAllocator::with_config(Config::default()) {
        Ok(alloc) => {
            let alloc: &'static SlabAllocator = Box::leak(Box::new(alloc));
            let (base, len) = alloc.data_range();
            RESERVED_BASE.store(base, Ordering::Relaxed);
            // SYNC POINT: Release pairs with the Acquire load in `owns`.
            RESERVED_LEN.store(len, Ordering::Release);
            let ptr = alloc as *const SlabAllocator as *mut SlabAllocator;
            // SYNC POINT: Release pairs with the Acquire loads in the fork handlers.
            CREATED.store(ptr, Ordering::Release);
            register_fork_handlers();
            ptr as usize
        }
        Err(_) => FAILED,
    };
    // SYNC POINT: Release pairs with the Acquire loads of STATE (`ready`, `instance`): whoever
    // sees the pointer sees the allocator built.
    STATE.store(word, Ordering::Release);
    guard.done = true;
}

/// The locks `fork_prepare` took, until `fork_parent` or `fork_child` releases them.
struct ForkLocks(UnsafeCell<Option<AllLocks<'static>>>);

// SAFETY: the cell is written by `fork_prepare` only while it holds every allocator lock
// (after taking them), and emptied by `fork_parent`/`fork_child` before they are released,
// on the thread that called `fork` (glibc runs the three handlers on the forking thread and
// serialises concurrent forks; even without that, the allocator locks order the accesses).
unsafe impl Sync for ForkLocks {}

static FORK_LOCKS: ForkLocks = ForkLocks(UnsafeCell::new(None));

fn register_fork_handlers() {
    // SAFETY: the three handlers are `extern "C" fn()` that never unwind (they only lock and
    // unlock mutexes, recovering from poisoning) and live for the whole process. Registration
    // happens once per process: `create` runs once (it is the CAS winner), and a fork child
    // inherits the registration, never re-creates.
    let rc =
        unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child)) };
    // A failed registration (ENOMEM) leaves the allocator working, but fork-unsafe; there is
    // nobody to tell without allocating, so it is ignored (glibc only fails it on ENOMEM).
    let _ = rc;
}

extern "C" fn fork_prepare() {
    // SYNC POINT: Acquire pairs with the Release store in `create`.
    let ptr = CREATED.load(Ordering::Acquire);
    if ptr.is_null() {
        return;
    }
    // SAFETY: CREATED holds only the leaked, never-freed allocator.
    let alloc: &'static SlabAllocator = unsafe { &*ptr };
    let locks = alloc.lock_all();
    // SAFETY: we hold every allocator lock, so no other `fork_prepare` is between its
    // `lock_all` and its `fork_parent`/`fork_child`: the cell is ours (see `ForkLocks`).
    unsafe { *FORK_LOCKS.0.get() = Some(locks) };
}

extern "C" fn fork_parent() {
    // SAFETY: runs after our `fork_prepare` on the same thread, while the locks it stored are
    // still held (see `ForkLocks`).
    drop(unsafe { (*FORK_LOCKS.0.get()).take() });
}

extern "C" fn fork_child() {
    // A fork between registering the handlers and publishing the pointer: the creator thread
    // does not exist here, so publish for it.
    let word = STATE.load(Ordering::Relaxed);
    if word & 3 == CREATING_TAG {
        let ptr = CREATED.load(Ordering::Acquire);
        if !ptr.is_null() {
            // SYNC POINT: Release pairs with the Acquire loads of STATE.
            STATE.store(ptr as usize, Ordering::Release);
        }
    }
    // SAFETY: the child is single-threaded; the locks were taken by `fork_prepare` of this
    // thread before the fork (see `ForkLocks`).
    drop(unsafe { (*FORK_LOCKS.0.get()).take() });
}
