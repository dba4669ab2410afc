//! The process's `#[global_allocator]`: one of the system allocator (glibc), mimalloc, jemalloc
//! or temporal-slab's `EpochGlobal`, chosen once, on the first allocation, from the environment
//! variable [`ENV`]. `bench demo` starts each of its children with [`ENV`] set, so a child's
//! every allocation (its corpus, its `serde_json::Value` trees, its threads, its histograms) goes
//! to one allocator; without the variable (the parent, every other subcommand) it is the system
//! allocator, which is what `bench slab`, `datahub` and `mmsb` always ran on.
//!
//! Invariants:
//! - The choice is read with `libc::getenv` (no allocation: this runs inside the first call to
//!   the allocator) and stored in [`CHOICE`] before that first call allocates anything, and never
//!   changes afterwards; so every block is freed, resized and reallocated by the allocator that
//!   handed it out. Two threads racing on the first call read the same variable and store the
//!   same value (the first allocation happens before `main`, with one thread, in practice).
//! - An unknown value selects the system allocator; [`chosen`] reports what was selected, so a
//!   child states which allocator it really ran on and the parent checks it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, Ordering};

/// The variable that names the allocator: `system`, `mimalloc`, `jemalloc` or `epoch`.
pub const ENV: &str = "BENCH_GLOBAL_ALLOCATOR";
/// [`ENV`] as a C string, for `getenv`.
const ENV_C: &std::ffi::CStr = c"BENCH_GLOBAL_ALLOCATOR";

const UNDECIDED: u8 = 0;
const SYSTEM: u8 = 1;
const MIMALLOC: u8 = 2;
const JEMALLOC: u8 = 3;
const EPOCH: u8 = 4;

/// The allocator every call goes to, once decided (`UNDECIDED` before the first call).
static CHOICE: AtomicU8 = AtomicU8::new(UNDECIDED);

/// The switch itself; see the module docs.
#[derive(Debug)]
pub struct Switch;

#[global_allocator]
static GLOBAL: Switch = Switch;

static MIMALLOC_ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
static JEMALLOC_ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
static EPOCH_ALLOC: temporal_slab::global::EpochGlobal = temporal_slab::global::EpochGlobal::new();

#[cold]
fn decide() -> u8 {
    // SAFETY: `ENV_C` is NUL-terminated; getenv returns null or a pointer to a NUL-terminated
    // string in the environment, which nothing in this process modifies (bench never calls
    // setenv), so it stays valid while it is read below.
    let value = unsafe { libc::getenv(ENV_C.as_ptr()) };
    let choice = if value.is_null() {
        SYSTEM
    } else {
        // SAFETY: non-null, NUL-terminated, not modified meanwhile (see above).
        match unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes() {
            b"mimalloc" => MIMALLOC,
            b"jemalloc" => JEMALLOC,
            b"epoch" => EPOCH,
            _ => SYSTEM,
        }
    };
    match CHOICE.compare_exchange(UNDECIDED, choice, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => choice,
        Err(already) => already,
    }
}

#[inline]
fn choice() -> u8 {
    match CHOICE.load(Ordering::Acquire) {
        UNDECIDED => decide(),
        c => c,
    }
}

/// The allocator this process runs on: `"system"`, `"mimalloc"`, `"jemalloc"` or `"epoch"`.
pub fn chosen() -> &'static str {
    match choice() {
        MIMALLOC => "mimalloc",
        JEMALLOC => "jemalloc",
        EPOCH => "epoch",
        _ => "system",
    }
}

// SAFETY: every call is forwarded to one allocator, the same for the process's lifetime (the
// module's first invariant), so each forwarded call meets that allocator's contract exactly as
// the caller meets ours: blocks are freed and resized by the allocator that returned them.
unsafe impl GlobalAlloc for Switch {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's obligations (non-zero size) pass through unchanged.
        unsafe {
            match choice() {
                MIMALLOC => MIMALLOC_ALLOC.alloc(layout),
                JEMALLOC => JEMALLOC_ALLOC.alloc(layout),
                EPOCH => EPOCH_ALLOC.alloc(layout),
                _ => System.alloc(layout),
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe {
            match choice() {
                MIMALLOC => MIMALLOC_ALLOC.alloc_zeroed(layout),
                JEMALLOC => JEMALLOC_ALLOC.alloc_zeroed(layout),
                EPOCH => EPOCH_ALLOC.alloc_zeroed(layout),
                _ => System.alloc_zeroed(layout),
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this switch with `layout`, so from the allocator `choice()`
        // names (it never changes).
        unsafe {
            match choice() {
                MIMALLOC => MIMALLOC_ALLOC.dealloc(ptr, layout),
                JEMALLOC => JEMALLOC_ALLOC.dealloc(ptr, layout),
                EPOCH => EPOCH_ALLOC.dealloc(ptr, layout),
                _ => System.dealloc(ptr, layout),
            }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as `dealloc` for `ptr` and `layout`; `new_size` passes through unchanged.
        unsafe {
            match choice() {
                MIMALLOC => MIMALLOC_ALLOC.realloc(ptr, layout, new_size),
                JEMALLOC => JEMALLOC_ALLOC.realloc(ptr, layout, new_size),
                EPOCH => EPOCH_ALLOC.realloc(ptr, layout, new_size),
                _ => System.realloc(ptr, layout, new_size),
            }
        }
    }
}
