//! Multi-threaded stress: real threads, real slabs, every object filled with a pattern that is
//! verified before it is freed.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

use temporal_slab::{CLASS_SIZES, Error, SlabAllocator};

const THREADS: usize = 4;
const OPS_PER_THREAD: usize = 1_000_000;

/// xorshift64*: small, deterministic, good enough to pick sizes and victims.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn fill(ptr: NonNull<u8>, size: usize, tag: u64) {
    let words = size / 8;
    // SAFETY: the object is live, ours, at least `size` bytes and 16-byte aligned.
    let slice = unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr().cast::<u64>(), words) };
    for (i, w) in slice.iter_mut().enumerate() {
        *w = tag ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

fn verify(ptr: NonNull<u8>, size: usize, tag: u64) {
    let words = size / 8;
    // SAFETY: as in `fill`.
    let slice = unsafe { std::slice::from_raw_parts(ptr.as_ptr().cast::<u64>(), words) };
    for (i, w) in slice.iter().enumerate() {
        let want = tag ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        assert_eq!(*w, want, "object {ptr:p} word {i} corrupted (tag {tag:#x})");
    }
}

enum Obj {
    Handle(temporal_slab::Handle, usize, u64),
    Ptr(NonNull<u8>, usize, u64),
}

#[test]
fn four_threads_a_million_ops_each_never_corrupt_an_object() {
    let slab = SlabAllocator::new().unwrap();
    let epoch = slab.epoch_current();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let slab = &slab;
            s.spawn(move || {
                let mut rng = Rng(0x1234_5678 + t as u64 * 7919);
                let mut live: Vec<Obj> = Vec::with_capacity(4096);
                for op in 0..OPS_PER_THREAD {
                    let r = rng.next();
                    let want_alloc = live.len() < 64 || (live.len() < 4000 && r % 100 < 52);
                    if want_alloc {
                        let size = CLASS_SIZES[(r >> 8) as usize % CLASS_SIZES.len()]
                            - (r >> 16) as usize % 16;
                        let tag = (t as u64) << 56 | op as u64;
                        if r & 1 == 0 {
                            let h = slab.alloc(size, epoch).unwrap();
                            fill(slab.get(h).unwrap(), size, tag);
                            live.push(Obj::Handle(h, size, tag));
                        } else {
                            let p = slab.alloc_ptr(size, epoch).unwrap();
                            fill(p, size, tag);
                            live.push(Obj::Ptr(p, size, tag));
                        }
                    } else {
                        let victim = live.swap_remove((r >> 20) as usize % live.len());
                        match victim {
                            Obj::Handle(h, size, tag) => {
                                verify(slab.get(h).expect("live handle"), size, tag);
                                slab.free(h).unwrap();
                                assert!(slab.get(h).is_none());
                            }
                            Obj::Ptr(p, size, tag) => {
                                verify(p, size, tag);
                                slab.free_ptr(p).unwrap();
                            }
                        }
                    }
                }
                for obj in live {
                    match obj {
                        Obj::Handle(h, size, tag) => {
                            verify(slab.get(h).unwrap(), size, tag);
                            slab.free(h).unwrap();
                        }
                        Obj::Ptr(p, size, tag) => {
                            verify(p, size, tag);
                            slab.free_ptr(p).unwrap();
                        }
                    }
                }
            });
        }
    });
    let stats = slab.stats();
    let allocs: u64 = stats.classes.iter().map(|c| c.allocs).sum();
    let frees: u64 = stats.classes.iter().map(|c| c.frees).sum();
    assert_eq!(allocs, frees, "every allocation freed exactly once");
    assert!(allocs as usize >= THREADS * OPS_PER_THREAD / 2);
    assert_eq!(stats.classes.iter().map(|c| c.live_objects).sum::<u64>(), 0);
    assert_eq!(stats.handle_errors + stats.pointer_errors, 0);
}

/// Workers allocate per "request" in whatever epoch is current while a coordinator advances
/// and closes epochs under them: allocations may be refused (closed or stale epoch) but no object
/// is ever corrupted, and every slab recycled under a racing fast path stays consistent.
#[test]
fn epochs_advance_and_close_under_concurrent_allocation() {
    let slab =
        SlabAllocator::with_config(temporal_slab::Config::default().track_rss(false)).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let (slab, stop) = (&slab, &stop);
            s.spawn(move || {
                let mut rng = Rng(99 + t);
                let mut request = 0u64;
                let mut held: Vec<(NonNull<u8>, usize, u64)> = Vec::new();
                while !stop.load(Ordering::Relaxed) || request < 2000 {
                    request += 1;
                    let epoch = slab.epoch_current();
                    let n = 1 + rng.next() as usize % 80;
                    for i in 0..n {
                        let size = CLASS_SIZES[rng.next() as usize % 8];
                        let tag = t << 60 | request << 16 | i as u64;
                        match slab.alloc_ptr(size, epoch) {
                            Ok(p) => {
                                fill(p, size, tag);
                                held.push((p, size, tag));
                            }
                            Err(Error::EpochClosed { .. } | Error::StaleEpoch { .. }) => break,
                            Err(e) => panic!("unexpected {e}"),
                        }
                    }
                    // Keep some objects across requests (they outlive their epoch's close).
                    let keep = if rng.next() % 4 == 0 {
                        held.len() / 2
                    } else {
                        0
                    };
                    while held.len() > keep {
                        let (p, size, tag) = held.swap_remove(rng.next() as usize % held.len());
                        verify(p, size, tag);
                        slab.free_ptr(p).unwrap();
                    }
                    if request > 200_000 {
                        break;
                    }
                }
                for (p, size, tag) in held {
                    verify(p, size, tag);
                    slab.free_ptr(p).unwrap();
                }
            });
        }
        let mut refused = 0;
        for _ in 0..400 {
            let old = slab.epoch_current();
            match slab.epoch_advance() {
                Ok(_) => {}
                // Workers keep objects across requests: until they free them, their epochs
                // hold the ring.
                Err(Error::EpochRingFull { .. }) => refused += 1,
                Err(e) => panic!("unexpected {e}"),
            }
            std::thread::yield_now();
            let _ = slab.epoch_close(old);
        }
        assert!(refused < 400, "the ring never advanced");
        stop.store(true, Ordering::Relaxed);
    });
    let stats = slab.stats();
    assert_eq!(stats.classes.iter().map(|c| c.live_objects).sum::<u64>(), 0);
    let recycled: u64 = stats.classes.iter().map(|c| c.empty_slab_recycled).sum();
    assert!(recycled > 0, "closing epochs must recycle slabs");
    assert_eq!(stats.pointer_errors, 0);
}
