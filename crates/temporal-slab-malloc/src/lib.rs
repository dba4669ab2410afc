//! # temporal-slab-malloc: temporal-slab behind the C allocation ABI
//!
//! A `cdylib`, `libtslab_malloc.so`, that exports the C allocation functions, so any
//! dynamically linked program runs on temporal-slab without being rebuilt:
//!
//! ```text
//! LD_PRELOAD=target/release/libtslab_malloc.so TSLAB_STATS_FILE=/tmp/stats.json python3 app.py
//! tslab stats /tmp/stats.json
//! ```
//!
//! Programs that want epochs include `include/tslab.h` and link with `-ltslab_malloc` (or
//! keep the preload and look the `tslab_*` functions up with `dlsym`). `docs/ld-preload.md`
//! is the user's guide: the environment, what goes where, the limits.
//!
//! ## How a request is served
//! - The C functions (module [`malloc`]): requests of at most 768 bytes
//!   with alignment at most 16 go to temporal-slab through
//!   [`temporal_slab::global::alloc_routed`], in this thread's innermost scope's epoch or,
//!   outside any scope, the allocator's current epoch (`Outside::CurrentEpoch`, set at
//!   start-up). Everything else, and anything the slab refuses (the epoch is closed, the ring
//!   is full, the reservation is used up), goes to glibc through its `__libc_*` entry points
//!   (module `next`).
//! - `free`, `realloc` and `malloc_usable_size` find the owner from the address alone
//!   ([`temporal_slab::global::owns`]: one range check), so a block is always returned to the
//!   allocator that made it, whichever thread frees it and whenever.
//! - The `tslab_*` functions (module `api`, declared in `include/tslab.h`) drive epochs,
//!   scopes, labels and the stats JSON.
//!
//! ## Invariants
//! - **No re-entry.** Nothing on an allocation path calls our exported `malloc`: this
//!   library's own Rust allocations go to glibc through its `#[global_allocator]`
//!   ([`next::LibcAlloc`], `__libc_*` only); the environment is read with `getenv`; until
//!   the set-up (module `init`) has finished (it runs in the library's constructor), every request
//!   goes to glibc, so a `calloc` that `atexit` or `dlsym` makes during the set-up cannot
//!   recurse into it.
//! - **One owner per block.** A pointer is a slab object if and only if it lies inside the slab
//!   reservation, and only slab objects are given to [`temporal_slab::global::free_owned`];
//!   every other pointer goes to glibc's `free`/`realloc`.
//! - **No unwinding into C.** The exported functions are written without panicking paths
//!   (no indexing that can fail, no `unwrap`, writes to stderr ignore errors); should a panic
//!   happen anyway, an `extern "C"` function cannot unwind and Rust aborts the process with
//!   the panic message. An internal invariant failure (a `realloc` of an address inside the
//!   slab that is not a live object) aborts with one line on stderr, as glibc does.
//!
//! ## What the preload relies on
//! - glibc (`__libc_malloc` and friends, `dlsym(RTLD_NEXT, "malloc_usable_size")`), Linux and
//!   64-bit addresses, like temporal-slab itself.
//! - The library is loaded at program start (`LD_PRELOAD` or a link-time dependency): its
//!   thread-locals then live in static TLS, which glibc sets up without calling `malloc`.
//!   `dlopen`ing it into a running program is not supported.
//! - `fork`: the global module registers `pthread_atfork` handlers that hold every allocator
//!   lock across the fork (see [`temporal_slab::global`]), so a child can allocate and free;
//!   glibc does the same for its own heap.
//! - Threads that exit: their scopes end with them; their objects stay valid and are freed by
//!   whoever frees them.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod api;
mod init;
pub mod malloc;
mod next;
mod stats;

pub use next::LibcAlloc;

/// This library's own Rust allocations go straight to glibc (see [`LibcAlloc`]). Not in the
/// unit-test build: the test binary keeps the standard allocator.
#[cfg(not(test))]
#[global_allocator]
static GLOBAL: LibcAlloc = LibcAlloc;

/// Aborts the process after one line on stderr: an invariant of the C contract was broken
/// (the caller passed a pointer that is not a live object). Never returns, never unwinds.
#[cold]
pub(crate) fn abort_with(message: std::fmt::Arguments<'_>) -> ! {
    stats::stderr_line(message);
    std::process::abort()
}

#[cfg(test)]
mod tests;
