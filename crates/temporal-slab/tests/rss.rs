//! RSS really falls when an epoch is closed: its own test binary, and its tests serialised, so
//! no other test's allocations move the process RSS while one measures.

use std::sync::Mutex;

use temporal_slab::{SlabAllocator, process_rss_bytes};

/// The tests of this binary measure the process RSS: they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn closing_an_epoch_returns_at_least_80_percent_of_64_mib_to_the_kernel() {
    const BYTES: usize = 64 << 20;
    const SIZE: usize = 768;
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let slab = SlabAllocator::new().unwrap();
    let epoch = slab.epoch_current();
    let mut ptrs = Vec::with_capacity(BYTES / SIZE + 1);
    let before_alloc = process_rss_bytes().unwrap();
    while ptrs.len() * SIZE < BYTES {
        let p = slab.alloc_ptr(SIZE, epoch).unwrap();
        // SAFETY: fresh object of SIZE bytes: touch every byte so its page is resident.
        unsafe { std::ptr::write_bytes(p.as_ptr(), 0xa5, SIZE) };
        ptrs.push(p);
    }
    let after_alloc = process_rss_bytes().unwrap();
    assert!(
        after_alloc - before_alloc >= BYTES as u64,
        "allocation must make {BYTES} bytes resident: {before_alloc} -> {after_alloc}"
    );
    for p in ptrs.drain(..) {
        slab.free_ptr(p).unwrap();
    }
    let next = slab.epoch_advance().unwrap();
    slab.epoch_close(epoch).unwrap();
    let after_close = process_rss_bytes().unwrap();
    let released = after_alloc.saturating_sub(after_close);
    assert!(
        released as f64 >= 0.8 * BYTES as f64,
        "released {released} of {BYTES} bytes (rss {before_alloc} -> {after_alloc} -> {after_close})"
    );
    let stats = slab.stats();
    assert_eq!(
        stats.epochs[0].rss_before_close,
        stats.epochs[0].rss_before_close.max(after_close)
    );
    assert!(stats.epochs[0].rss_after_close < stats.epochs[0].rss_before_close);
    // The recycled slabs serve the next epoch without carving new ones.
    let carved = stats.slabs_carved;
    let again: Vec<_> = (0..1000)
        .map(|_| slab.alloc_ptr(SIZE, next).unwrap())
        .collect();
    assert_eq!(
        slab.stats().slabs_carved,
        carved,
        "recycled slabs reused first"
    );
    for p in again {
        slab.free_ptr(p).unwrap();
    }
}

#[test]
fn closing_a_64_mib_epoch_makes_at_most_one_madvise_per_contiguous_run_of_empty_slabs() {
    const BYTES: usize = 64 << 20;
    const SIZE: usize = 128;
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let slab = SlabAllocator::new().unwrap();
    let epoch = slab.epoch_current();
    let mut ptrs = Vec::with_capacity(BYTES / SIZE + 1);
    while ptrs.len() * SIZE < BYTES {
        let p = slab.alloc_ptr(SIZE, epoch).unwrap();
        // SAFETY: fresh object of SIZE bytes: touch every byte so its page is resident.
        unsafe { std::ptr::write_bytes(p.as_ptr(), 0x3c, SIZE) };
        ptrs.push(p);
    }
    // The slabs the objects live in, and how many contiguous runs they form.
    let mut pages: Vec<usize> = ptrs.iter().map(|p| p.as_ptr() as usize / 4096).collect();
    pages.sort_unstable();
    pages.dedup();
    let runs = 1 + pages.windows(2).filter(|w| w[1] != w[0] + 1).count();
    for p in ptrs.drain(..) {
        slab.free_ptr(p).unwrap();
    }
    let before = slab.stats();
    let after_free = process_rss_bytes().unwrap();
    slab.epoch_advance().unwrap();
    let recycled = slab.epoch_close(epoch).unwrap();
    let after_close = process_rss_bytes().unwrap();
    let stats = slab.stats();
    let calls = stats.total_madvise_calls - before.total_madvise_calls;
    assert!(
        recycled as usize >= pages.len(),
        "{recycled} of {} slabs",
        pages.len()
    );
    assert!(
        calls as usize <= runs,
        "{calls} madvise calls for {recycled} slabs in {runs} contiguous runs"
    );
    assert_eq!(
        stats.total_madvise_bytes - before.total_madvise_bytes,
        recycled * 4096,
        "every recycled slab's page was returned"
    );
    let released = after_free.saturating_sub(after_close);
    assert!(
        released as f64 >= 0.8 * BYTES as f64,
        "released {released} of {BYTES} bytes (rss {after_free} -> {after_close})"
    );
}
