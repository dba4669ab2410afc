//! The C allocation functions: `malloc`, `free`, `calloc`, `realloc`, `reallocarray`,
//! `posix_memalign`, `aligned_alloc`, `memalign`, `valloc`, `pvalloc`, `malloc_usable_size`.
//!
//! | request | goes to |
//! |---|---|
//! | at most 768 bytes, alignment at most 16, after set-up | temporal-slab: the innermost scope's epoch on this thread, else the current epoch |
//! | anything else, or refused by the slab (epoch closed, ring full, reservation exhausted) | glibc (`__libc_*`) |
//! | `free`, `realloc`, `malloc_usable_size` of a pointer | by address: [`global::owns`] |
//!
//! Each function has glibc's contract (`man 3 malloc`); where the two allocators differ it is
//! said on the function. `errno` is `ENOMEM` after every failed allocation. The exported
//! symbols exist only in the cdylib (`cfg(not(test))`); unit tests call the same functions by
//! their Rust names, with glibc still the test binary's `malloc`.

use std::ffi::{c_int, c_void};
use std::ptr::{self, NonNull};

use temporal_slab::global::{self, Realloc};
use temporal_slab::{CLASS_SIZES, MAX_OBJECT_SIZE, OBJECT_ALIGN, class_for_size};

use crate::init::ready;
use crate::next;

fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns this thread's errno, always valid.
    unsafe { *libc::__errno_location() = e };
}

/// A slab object of `size` bytes aligned to `align`, or `None` for "ask glibc".
#[inline]
fn slab_alloc(size: usize, align: usize) -> Option<NonNull<u8>> {
    if size > MAX_OBJECT_SIZE || align > OBJECT_ALIGN || !ready() {
        return None;
    }
    // SAFETY: `alloc_routed` has no precondition beyond a valid request; the pointer it
    // returns is released only through `global::free_owned` (our `free` routes by address).
    unsafe { global::alloc_routed(size, align) }
}

/// Frees a pointer of either allocator.
///
/// # Safety
/// `ptr` is null or a live block from one of this module's functions (or from glibc).
#[inline]
unsafe fn free_any(ptr: *mut c_void) {
    let Some(p) = NonNull::new(ptr.cast::<u8>()) else {
        return;
    };
    if global::owns(p.as_ptr()) {
        // glibc's free keeps errno (since 2.33); so does ours, whatever the slab's slow path
        // (a `madvise`) does to it.
        // SAFETY: __errno_location returns this thread's errno, valid for the thread's life.
        let errno = unsafe { libc::__errno_location() };
        // SAFETY: as above.
        let saved = unsafe { *errno };
        // SAFETY: `owns(p)` holds; the caller promises a live block.
        unsafe { global::free_owned(p) };
        // SAFETY: as above.
        unsafe { *errno = saved };
    } else {
        // SAFETY: not ours, so a glibc block (the caller's obligation).
        unsafe { next::free(ptr) };
    }
}

/// `malloc(size)`: a slab object for at most 768 bytes, else glibc. `malloc(0)` returns a
/// unique pointer (a 64-byte slab object).
///
/// # Safety
/// None beyond C's: the result is freed once, with `free` or `realloc`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    match slab_alloc(size, OBJECT_ALIGN) {
        Some(p) => p.as_ptr().cast(),
        None => next::malloc(size),
    }
}

/// `free(ptr)`: by address, to the allocator that owns it; null is a no-op. A pointer inside
/// the slab reservation that is not a live object (double free, interior pointer) is handled
/// by [`global::free_owned`] (see its docs).
///
/// # Safety
/// `ptr` is null or a live block from this library's (or glibc's) allocation functions.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn free(ptr: *mut c_void) {
    // SAFETY: the caller's obligation.
    unsafe { free_any(ptr) }
}

/// `calloc(n, size)`: `n * size` zeroed bytes; an overflowing product is `ENOMEM` and null.
/// Recycled slab objects hold old bytes, so the whole slab object (its class size, what
/// `malloc_usable_size` reports) is zeroed here; glibc blocks come from `__libc_calloc`.
///
/// # Safety
/// As [`malloc`].
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    let Some(total) = n.checked_mul(size) else {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    };
    if let Some(p) = slab_alloc(total, OBJECT_ALIGN) {
        let usable = class_for_size(total).map_or(total, |c| CLASS_SIZES[c]);
        // SAFETY: `p` is a fresh slab object of its class size, `usable` bytes.
        unsafe { p.as_ptr().write_bytes(0, usable) };
        return p.as_ptr().cast();
    }
    next::calloc(n, size)
}

/// `realloc(ptr, size)`, as glibc: `realloc(NULL, n)` is `malloc(n)`; `realloc(p, 0)` frees
/// `p` and returns null; on failure `p` is untouched, the result null and errno `ENOMEM`.
///
/// A slab object stays where it is when `size` is in its own size class (same class: same
/// pointer); otherwise it moves where a new request of `size` bytes would go (another class,
/// or glibc past 768 bytes or when the slab refuses), with `min(old, new)` bytes copied
/// ([`global::realloc_owned`]). A glibc block stays with glibc (`__libc_realloc`, which can
/// grow in place).
///
/// # Safety
/// As [`free`]. A pointer inside the slab reservation that is not a live object aborts the
/// process with a message, as glibc's `realloc(): invalid pointer` does.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    let Some(p) = NonNull::new(ptr.cast::<u8>()) else {
        // SAFETY: as malloc.
        return unsafe { malloc(size) };
    };
    if size == 0 {
        // SAFETY: the caller's obligation.
        unsafe { free_any(ptr) };
        return ptr::null_mut();
    }
    if !global::owns(p.as_ptr()) {
        // SAFETY: not ours, so a glibc block.
        return unsafe { next::realloc(ptr, size) };
    }
    // SAFETY: `owns(p)`; the caller gives `p` up (it is used afterwards only as the result).
    match unsafe { global::realloc_owned(p, size, OBJECT_ALIGN) } {
        Realloc::Done(new) => new.as_ptr().cast(),
        Realloc::Fallback { old_size } => {
            let new = next::malloc(size);
            if new.is_null() {
                set_errno(libc::ENOMEM);
                return ptr::null_mut();
            }
            // SAFETY: `p` is live for `old_size` bytes, `new` is a fresh, distinct glibc block
            // of at least `size` bytes; `p` is freed once, after the copy.
            unsafe {
                ptr::copy_nonoverlapping(p.as_ptr(), new.cast::<u8>(), old_size.min(size));
                global::free_owned(p);
            }
            new
        }
        Realloc::NotLive => crate::abort_with(format_args!(
            "realloc(): invalid pointer {ptr:p} (inside the slab reservation but not a live object)"
        )),
    }
}

/// `reallocarray(ptr, n, size)`: `realloc(ptr, n * size)`, with an overflowing product
/// `ENOMEM` and null (`ptr` untouched). Exported so glibc's own copy, which might reach its
/// realloc without going through ours, is never used on a slab object.
///
/// # Safety
/// As [`realloc`].
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn reallocarray(ptr: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: the caller's obligation.
        Some(total) => unsafe { realloc(ptr, total) },
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// `posix_memalign(memptr, align, size)`: 0 and `*memptr` set, `EINVAL` when `align` is not a
/// power of two multiple of `sizeof(void *)`, `ENOMEM` when out of memory (`*memptr`
/// untouched on either error). Alignments up to 16 with at most 768 bytes are slab objects.
///
/// # Safety
/// `memptr` is valid for one pointer write.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn posix_memalign(
    memptr: *mut *mut c_void,
    align: usize,
    size: usize,
) -> c_int {
    if !align.is_power_of_two() || align < size_of::<*mut c_void>() {
        return libc::EINVAL;
    }
    let p = match slab_alloc(size, align) {
        Some(p) => p.as_ptr().cast(),
        None => next::memalign(align, size),
    };
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller's obligation.
    unsafe { *memptr = p };
    0
}

/// `aligned_alloc(align, size)`: an alignment that is not a power of two is `EINVAL` and null
/// (as glibc 2.38 and later; older glibc rounded it up like `memalign`).
///
/// # Safety
/// As [`malloc`].
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    // SAFETY: as malloc.
    unsafe { memalign(align, size) }
}

/// `memalign(align, size)`, as glibc: an alignment of at most 16 (any value, 0 included) is a
/// plain `malloc`; a larger one goes to glibc, which rounds one that is not a power of two up.
///
/// # Safety
/// As [`malloc`].
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    if align <= next::MALLOC_ALIGN {
        // SAFETY: as malloc.
        return unsafe { malloc(size) };
    }
    next::memalign(align, size)
}

/// `valloc(size)`: page-aligned, always glibc.
///
/// # Safety
/// As [`malloc`].
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    next::valloc(size)
}

/// `pvalloc(size)`: page-aligned and rounded up to whole pages, always glibc.
///
/// # Safety
/// As [`malloc`].
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    next::pvalloc(size)
}

/// `malloc_usable_size(ptr)`: the size class of a slab object (64 to 768), glibc's figure for
/// a glibc block, 0 for null or for an address inside the slab that is not a live object.
///
/// # Safety
/// `ptr` is null or a live block of either allocator.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn malloc_usable_size(ptr: *mut c_void) -> usize {
    if ptr.is_null() {
        return 0;
    }
    if global::owns(ptr.cast::<u8>()) {
        return global::usable_size(ptr.cast::<u8>()).unwrap_or(0);
    }
    // SAFETY: not ours, so a glibc block (the caller's obligation).
    unsafe { next::usable_size(ptr) }
}
