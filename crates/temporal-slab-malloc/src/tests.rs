//! Unit tests of the C functions called by their Rust names: the test binary keeps glibc as
//! its `malloc` (the symbols are not exported under `cfg(test)`), and [`crate::init::init`]
//! is called by hand.

use std::ffi::c_void;
use std::ptr;

use temporal_slab::{CLASS_SIZES, class_for_size, global};

use crate::api::*;
use crate::malloc::*;

/// Runs the library's set-up once (waiting for it: `init` itself returns at once on a thread
/// that loses the race, as the allocation path must).
fn setup() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(crate::init::init);
    assert!(crate::init::ready(), "the allocator could not be created");
}

fn errno() -> i32 {
    // SAFETY: this thread's errno.
    unsafe { *libc::__errno_location() }
}

#[test]
fn small_requests_are_slab_objects_and_large_ones_are_not() {
    setup();
    // SAFETY: each block is freed once with our free.
    unsafe {
        let small = malloc(100);
        let edge = malloc(768);
        let large = malloc(769);
        assert!(global::owns(small.cast()) && global::owns(edge.cast()));
        assert!(!global::owns(large.cast()) && !large.is_null());
        assert_eq!(malloc_usable_size(small), 128);
        assert_eq!(malloc_usable_size(edge), 768);
        assert!(malloc_usable_size(large) >= 769);
        assert_eq!(malloc_usable_size(ptr::null_mut()), 0);
        free(small);
        free(edge);
        free(large);
        free(ptr::null_mut());
    }
}

#[test]
fn calloc_zeroes_a_recycled_object_and_refuses_an_overflowing_product() {
    setup();
    // SAFETY: blocks freed once; writes stay within the usable size.
    unsafe {
        // Dirty a 256-byte object and free it: its slot is the next one this thread gets.
        let p = malloc(256).cast::<u8>();
        p.write_bytes(0xAB, 256);
        free(p.cast());
        let q = calloc(10, 20).cast::<u8>(); // 200 bytes: the same class
        let zeroed = std::slice::from_raw_parts(q, CLASS_SIZES[class_for_size(200).unwrap()]);
        assert!(zeroed.iter().all(|&b| b == 0), "calloc left old bytes");
        free(q.cast());

        *libc::__errno_location() = 0;
        assert!(calloc(usize::MAX / 2, 3).is_null());
        assert_eq!(errno(), libc::ENOMEM);
    }
}

#[test]
fn realloc_keeps_the_pointer_within_a_class_and_moves_contents_across_classes() {
    setup();
    // SAFETY: every pointer is used only while live and freed once.
    unsafe {
        let p = malloc(70).cast::<u8>();
        for i in 0..70 {
            p.add(i).write(i as u8);
        }
        assert_eq!(
            realloc(p.cast(), 96).cast::<u8>(),
            p,
            "70 and 96 share a class"
        );
        let mut cur = p;
        let mut len = 70;
        for &size in &[100usize, 200, 500, 768, 769, 5000, 300, 64] {
            let next = realloc(cur.cast(), size).cast::<u8>();
            assert!(!next.is_null());
            for i in 0..len.min(size) {
                assert_eq!(
                    next.add(i).read(),
                    (i % 70) as u8,
                    "byte {i} lost at {size}"
                );
            }
            for i in len.min(size)..size {
                next.add(i).write((i % 70) as u8);
            }
            // A slab object moves to glibc past 768 bytes; a glibc block stays with glibc.
            let was_slab = global::owns(cur.cast());
            assert_eq!(global::owns(next.cast()), was_slab && size <= 768, "{size}");
            cur = next;
            len = size;
        }
        assert!(realloc(cur.cast(), 0).is_null(), "realloc(p, 0) frees");
        let slab = malloc(50);
        assert!(realloc(slab, 0).is_null());
        assert_eq!(malloc_usable_size(slab), 0, "the slab object was freed");
        let fresh = realloc(ptr::null_mut(), 50);
        assert!(global::owns(fresh.cast()));
        free(fresh);
    }
}

#[test]
fn aligned_requests_follow_glibc_rules() {
    setup();
    // SAFETY: blocks freed once; `out` is a valid pointer slot.
    unsafe {
        let mut out: *mut c_void = ptr::dangling_mut();
        assert_eq!(posix_memalign(&mut out, 24, 10), libc::EINVAL);
        assert_eq!(posix_memalign(&mut out, 4, 10), libc::EINVAL);
        assert_eq!(out, ptr::dangling_mut(), "untouched on error");
        for align in [8usize, 16, 32, 64, 4096] {
            assert_eq!(posix_memalign(&mut out, align, 100), 0);
            assert_eq!(out as usize % align, 0);
            assert_eq!(global::owns(out.cast()), align <= 16, "{align}");
            free(out);
        }
        assert!(aligned_alloc(24, 48).is_null());
        assert_eq!(errno(), libc::EINVAL);
        let a = aligned_alloc(64, 128);
        assert_eq!(a as usize % 64, 0);
        free(a);
        let m = memalign(3, 40); // at most 16: a plain malloc, as glibc
        assert!(global::owns(m.cast()));
        free(m);
        let v = valloc(10);
        assert_eq!(v as usize % 4096, 0);
        free(v);
        let pv = pvalloc(5000);
        assert!(malloc_usable_size(pv) >= 8192);
        free(pv);
        assert!(reallocarray(ptr::null_mut(), usize::MAX, 2).is_null());
        assert_eq!(errno(), libc::ENOMEM);
    }
}

#[test]
fn epoch_ids_round_trip_and_made_up_or_stale_ones_are_refused() {
    setup();
    let mut cur = 0u64;
    // SAFETY: `cur` is a valid u64 slot.
    assert_eq!(unsafe { tslab_epoch_current(&mut cur) }, TSLAB_OK);
    assert_ne!(cur, TSLAB_EPOCH_NONE);
    assert_eq!(tslab_epoch_close(TSLAB_EPOCH_NONE), TSLAB_ERR_STALE);
    assert_eq!(tslab_scope_enter(cur + (1 << 4)), TSLAB_ERR_STALE);
    assert_eq!(tslab_scope_enter(u64::MAX), TSLAB_ERR_STALE);
    // SAFETY: null is allowed (an error).
    let null = unsafe { tslab_epoch_current(ptr::null_mut()) };
    assert_eq!(null, TSLAB_ERR_INVALID);

    assert_eq!(tslab_scope_enter(cur), TSLAB_OK);
    assert_eq!(global::current_scope().map(|e| e.era()), Some(cur >> 4));
    assert_eq!(tslab_scope_exit(), TSLAB_OK);
    assert_eq!(tslab_scope_exit(), TSLAB_ERR_SCOPE);
}

#[test]
fn scope_stack_overflow_is_an_error_and_enters_nothing() {
    setup();
    let mut cur = 0u64;
    // SAFETY: `cur` is a valid u64 slot.
    assert_eq!(unsafe { tslab_epoch_current(&mut cur) }, TSLAB_OK);
    let depth = global::scope_depth();
    for _ in depth..global::MAX_SCOPE_DEPTH {
        assert_eq!(tslab_scope_enter(cur), TSLAB_OK);
    }
    assert_eq!(tslab_scope_enter(cur), TSLAB_ERR_SCOPE);
    assert_eq!(global::scope_depth(), global::MAX_SCOPE_DEPTH);
    for _ in depth..global::MAX_SCOPE_DEPTH {
        assert_eq!(tslab_scope_exit(), TSLAB_OK);
    }
    assert_eq!(global::scope_depth(), depth);
}

#[test]
fn stats_json_fills_a_large_enough_buffer_only() {
    setup();
    // SAFETY: null with cap 0 writes nothing.
    let need = unsafe { tslab_stats_json(ptr::null_mut(), 0) };
    assert!(need > 0);
    let mut small = [b'x' as libc::c_char; 16];
    // SAFETY: `small` is valid for 16 bytes.
    let n = unsafe { tslab_stats_json(small.as_mut_ptr(), small.len()) };
    assert!(n >= 16);
    assert!(
        small.iter().all(|&c| c == b'x' as libc::c_char),
        "written anyway"
    );
    let mut buf = vec![0 as libc::c_char; need as usize + 65536];
    // SAFETY: `buf` is valid for its length.
    let n = unsafe { tslab_stats_json(buf.as_mut_ptr(), buf.len()) } as usize;
    assert_eq!(buf[n], 0);
    // SAFETY: c_char and u8 have the same layout; `n` bytes were written.
    let text = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
    let snap = tslab::Snapshot::from_json(std::str::from_utf8(text).unwrap(), "buffer").unwrap();
    assert_eq!(snap.schema_version, 1);
}
