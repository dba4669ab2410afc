//! The fast-path counters stay exact when more threads than shards allocate: the first threads
//! own their shard and count with plain stores, later ones share shards and count with
//! `fetch_add`.

#![cfg(feature = "fast-path-counters")]

use std::sync::mpsc;
use std::sync::{Arc, Barrier};

use temporal_slab::SlabAllocator;

/// The tests of this file take thread ordinals; one at a time keeps them predictable.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn counts_are_exact_with_more_threads_than_shards() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const THREADS: usize = 20; // more than the 8 shards, so some threads share
    const PAIRS: u64 = 20_000;
    let alloc = Arc::new(SlabAllocator::new().unwrap());
    let epoch = alloc.epoch_current();
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (alloc, barrier) = (alloc.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut live = Vec::new();
                for i in 0..PAIRS {
                    live.push(alloc.alloc(64 + (t % 4) * 64, epoch).unwrap());
                    if i % 3 == 2 {
                        for h in live.drain(..) {
                            alloc.free(h).unwrap();
                        }
                    }
                }
                for h in live {
                    alloc.free(h).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = alloc.stats();
    let allocs: u64 = s.classes.iter().map(|c| c.allocs).sum();
    let frees: u64 = s.classes.iter().map(|c| c.frees).sum();
    assert_eq!(allocs, THREADS as u64 * PAIRS);
    assert_eq!(frees, THREADS as u64 * PAIRS);
    assert_eq!(s.classes.iter().map(|c| c.live_objects).sum::<u64>(), 0);
}

/// Two threads that share shard 0 as non-owners hammer the same class at once: a counter bumped
/// with a plain load and store would lose updates here (checked by making every thread count as
/// an owner: this test then fails), `fetch_add` does not. Thread ordinals are per process and
/// this binary's only other test is serialised behind a lock, so the ordinals are known: 0..8
/// own the shards, 8 and 16 both map to shard 0.
#[test]
fn threads_sharing_a_shard_do_not_lose_counts() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const PAIRS: u64 = 2_000_000;
    let alloc = Arc::new(SlabAllocator::new().unwrap());
    let epoch = alloc.epoch_current();
    let claim = |alloc: &Arc<SlabAllocator>| {
        let alloc = alloc.clone();
        std::thread::spawn(move || alloc.free(alloc.alloc(64, epoch).unwrap()).unwrap())
            .join()
            .unwrap();
    };
    let before: u64 = alloc.stats().classes.iter().map(|c| c.allocs).sum();
    let barrier = Arc::new(Barrier::new(2));
    let hammer = |alloc: &Arc<SlabAllocator>, barrier: &Arc<Barrier>| {
        let (alloc, barrier) = (alloc.clone(), barrier.clone());
        let (ready_tx, ready_rx) = mpsc::channel();
        let t = std::thread::spawn(move || {
            alloc.free(alloc.alloc(128, epoch).unwrap()).unwrap(); // takes its ordinal now
            ready_tx.send(()).unwrap();
            barrier.wait();
            for _ in 0..PAIRS {
                let p = alloc.alloc_ptr(128, epoch).unwrap();
                alloc.free_ptr(p).unwrap();
            }
        });
        ready_rx.recv().unwrap();
        t
    };
    // Whatever ordinals earlier threads took, pad so the two hammers land 8 apart.
    for _ in 0..8 {
        claim(&alloc);
    }
    let a = hammer(&alloc, &barrier);
    for _ in 0..7 {
        claim(&alloc);
    }
    let b = hammer(&alloc, &barrier);
    a.join().unwrap();
    b.join().unwrap();
    let s = alloc.stats();
    let allocs: u64 = s.classes.iter().map(|c| c.allocs).sum::<u64>() - before;
    let frees: u64 = s.classes.iter().map(|c| c.frees).sum();
    assert_eq!(allocs, 2 * PAIRS + 2 + 15);
    assert_eq!(frees, allocs + before);
}
