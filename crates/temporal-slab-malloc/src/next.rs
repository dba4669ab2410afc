//! The next allocator: glibc's own entry points, reached without going through our exports.
//!
//! glibc exports its allocator a second time under `__libc_*` names (`__libc_malloc`,
//! `__libc_free`, ...). Calling those reaches glibc's heap directly, where calling `malloc`
//! would find our own export again (symbol interposition) and `dlsym(RTLD_NEXT, "malloc")`
//! could itself call `calloc` before it returns. The one entry point glibc has no `__libc_*`
//! name for, `malloc_usable_size`, is found once with `dlsym(RTLD_NEXT)`; any allocation `dlsym`
//! makes meanwhile is served by glibc (see [`crate::init`]).
//!
//! [`LibcAlloc`] is this library's own `#[global_allocator]`: every Rust allocation of the
//! library (the `SlabAllocator`'s `Box`, a stats JSON string, the thread registry of std) goes
//! straight to glibc and never re-enters `malloc`.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;
use std::sync::atomic::{AtomicPtr, Ordering};

unsafe extern "C" {
    fn __libc_malloc(size: usize) -> *mut c_void;
    fn __libc_free(ptr: *mut c_void);
    fn __libc_calloc(n: usize, size: usize) -> *mut c_void;
    fn __libc_realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
    fn __libc_memalign(align: usize, size: usize) -> *mut c_void;
    fn __libc_valloc(size: usize) -> *mut c_void;
    fn __libc_pvalloc(size: usize) -> *mut c_void;
}

/// The alignment glibc's `malloc` guarantees on x86-64 and aarch64 (`MALLOC_ALIGNMENT`), bytes.
pub(crate) const MALLOC_ALIGN: usize = 16;

/// glibc `malloc(size)`.
#[inline]
pub(crate) fn malloc(size: usize) -> *mut c_void {
    // SAFETY: glibc's malloc has no precondition.
    unsafe { __libc_malloc(size) }
}

/// glibc `free(ptr)`.
///
/// # Safety
/// `ptr` is null or a live block of glibc's heap (from one of the functions of this module).
#[inline]
pub(crate) unsafe fn free(ptr: *mut c_void) {
    // SAFETY: the caller's obligation.
    unsafe { __libc_free(ptr) }
}

/// glibc `calloc(n, size)` (checks the product itself).
#[inline]
pub(crate) fn calloc(n: usize, size: usize) -> *mut c_void {
    // SAFETY: glibc's calloc has no precondition.
    unsafe { __libc_calloc(n, size) }
}

/// glibc `realloc(ptr, size)`.
///
/// # Safety
/// As [`free`].
#[inline]
pub(crate) unsafe fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: the caller's obligation.
    unsafe { __libc_realloc(ptr, size) }
}

/// glibc `memalign(align, size)` (any `align`: glibc rounds it up to a power of two).
#[inline]
pub(crate) fn memalign(align: usize, size: usize) -> *mut c_void {
    // SAFETY: glibc's memalign has no precondition (it checks `align` itself).
    unsafe { __libc_memalign(align, size) }
}

/// glibc `valloc(size)`.
#[inline]
pub(crate) fn valloc(size: usize) -> *mut c_void {
    // SAFETY: no precondition.
    unsafe { __libc_valloc(size) }
}

/// glibc `pvalloc(size)` (checks the rounding overflow itself).
#[inline]
pub(crate) fn pvalloc(size: usize) -> *mut c_void {
    // SAFETY: no precondition.
    unsafe { __libc_pvalloc(size) }
}

type UsableSizeFn = unsafe extern "C" fn(*mut c_void) -> usize;

/// glibc's `malloc_usable_size`, found on first use (null until then).
static USABLE_SIZE: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());

/// glibc `malloc_usable_size(ptr)`, 0 if the symbol cannot be found.
///
/// # Safety
/// As [`free`].
pub(crate) unsafe fn usable_size(ptr: *mut c_void) -> usize {
    let mut f = USABLE_SIZE.load(Ordering::Acquire);
    if f.is_null() {
        // SAFETY: a NUL-terminated name; RTLD_NEXT finds the definition after this library
        // (glibc's). Two threads racing here both find the same address.
        f = unsafe { libc::dlsym(libc::RTLD_NEXT, c"malloc_usable_size".as_ptr()) };
        if f.is_null() {
            return 0;
        }
        // SYNC POINT: Release pairs with the Acquire load above on other threads.
        USABLE_SIZE.store(f, Ordering::Release);
    }
    // SAFETY: `f` is the address of glibc's `size_t malloc_usable_size(void *)`, whose
    // signature `UsableSizeFn` spells.
    let f: UsableSizeFn = unsafe { std::mem::transmute::<*mut c_void, UsableSizeFn>(f) };
    // SAFETY: the caller's obligation (a glibc block or null).
    unsafe { f(ptr) }
}

/// The library's `#[global_allocator]`: glibc, through the `__libc_*` names only.
#[derive(Debug)]
pub struct LibcAlloc;

// SAFETY: every block comes from glibc's malloc/memalign/calloc/realloc with at least the
// layout's size and alignment (memalign whenever the alignment is above what malloc
// guarantees or above the size, as glibc only guarantees `MALLOC_ALIGN` for any size), and
// goes back to glibc's free or realloc.
unsafe impl GlobalAlloc for LibcAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN {
            malloc(layout.size()).cast()
        } else {
            memalign(layout.align(), layout.size()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN {
            calloc(1, layout.size()).cast()
        } else {
            let p = memalign(layout.align(), layout.size()).cast::<u8>();
            if !p.is_null() {
                // SAFETY: `p` is a fresh block of at least `layout.size()` bytes.
                unsafe { p.write_bytes(0, layout.size()) };
            }
            p
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from `alloc`/`alloc_zeroed`/`realloc` above (the GlobalAlloc
        // contract), all of which return glibc blocks.
        unsafe { free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN {
            // SAFETY: `ptr` is a glibc block (as in `dealloc`); glibc's realloc keeps
            // `MALLOC_ALIGN`, which covers `layout.align()`.
            return unsafe { realloc(ptr.cast(), new_size) }.cast();
        }
        // glibc's realloc does not keep a larger alignment: allocate, copy, free.
        let new = memalign(layout.align(), new_size).cast::<u8>();
        if !new.is_null() {
            // SAFETY: both blocks are live and distinct, each at least `min(old, new)` bytes;
            // `ptr` is freed once, after the copy.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                free(ptr.cast());
            }
        }
        new
    }
}
