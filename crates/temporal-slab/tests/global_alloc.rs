//! temporal-slab as this test binary's global allocator (`EpochGlobal`): std collections and
//! serde_json in scopes across threads, frees after the scope and on other threads, objects
//! kept past their epoch's close, realloc across every class boundary, exact stats.
//!
//! The tests share the process-wide allocator, so each one takes `SERIAL` first: the per-class
//! counters are process-wide and would count another test's scoped allocations.

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, mpsc};

use temporal_slab::global::{self, EpochGlobal, Realloc};
use temporal_slab::{CLASS_COUNT, CLASS_SIZES, EpochId, EpochState, SlabAllocator, StatsSnapshot};

#[global_allocator]
static GLOBAL: EpochGlobal = EpochGlobal::new();

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn slab() -> &'static SlabAllocator {
    global::instance().expect("the global allocator reserves its address space")
}

/// A new epoch of the global allocator (outside every scope).
fn new_epoch() -> EpochId {
    slab().epoch_advance().expect("a free ring slot")
}

fn epoch_stats(snap: &StatsSnapshot, epoch: EpochId) -> &temporal_slab::EpochStats {
    snap.epochs
        .iter()
        .find(|e| e.epoch_id as usize == epoch.index() && e.epoch_era == epoch.era())
        .unwrap_or_else(|| panic!("epoch {epoch:?} in the stats"))
}

fn class_of(size: usize) -> usize {
    temporal_slab::class_for_size(size).expect("a slab size")
}

#[test]
fn known_boxes_in_a_scope_are_counted_exactly_per_class_and_per_epoch() {
    let _serial = serial();
    const SIZES: [usize; 16] = [
        1, 64, 65, 96, 97, 128, 129, 192, 200, 256, 300, 384, 500, 512, 700, 768,
    ];
    const LARGE: [usize; 3] = [769, 1000, 4096];
    const ROUNDS: usize = 40;
    let epoch = new_epoch();
    let mut expected = [0u64; CLASS_COUNT];
    for &size in &SIZES {
        expected[class_of(size)] += ROUNDS as u64;
    }
    // The holders are allocated outside the scope: only the boxes are counted.
    let mut small: Vec<Box<[u8]>> = Vec::with_capacity(SIZES.len() * ROUNDS);
    let mut large: Vec<Box<[u8]>> = Vec::with_capacity(LARGE.len());
    let before = slab().stats();
    global::scope(epoch, || {
        for round in 0..ROUNDS {
            for &size in &SIZES {
                small.push(vec![round as u8; size].into_boxed_slice());
            }
        }
        for &size in &LARGE {
            large.push(vec![7u8; size].into_boxed_slice());
        }
    });
    let after = slab().stats();
    for class in 0..CLASS_COUNT {
        assert_eq!(
            after.classes[class].allocs - before.classes[class].allocs,
            expected[class],
            "allocations of class {} ({} bytes)",
            class,
            CLASS_SIZES[class]
        );
    }
    assert_eq!(
        epoch_stats(&after, epoch).live_objects,
        (SIZES.len() * ROUNDS) as u64
    );
    assert_eq!(
        after.system_fallback_allocs - before.system_fallback_allocs,
        LARGE.len() as u64,
        "requests over 768 bytes in a scope go to the fallback and are counted"
    );
    assert!(small.iter().all(|b| global::owns(b.as_ptr())));
    assert!(large.iter().all(|b| !global::owns(b.as_ptr())));
    for b in &small {
        assert_eq!(
            global::usable_size(b.as_ptr()),
            Some(CLASS_SIZES[class_of(b.len())])
        );
    }

    // Free every other box, outside the scope.
    let mut freed = [0u64; CLASS_COUNT];
    let mut kept = Vec::with_capacity(small.len());
    for (i, b) in small.into_iter().enumerate() {
        if i % 2 == 0 {
            freed[class_of(b.len())] += 1;
            drop(b);
        } else {
            kept.push(b);
        }
    }
    drop(large);
    let mid = slab().stats();
    for (class, &want) in freed.iter().enumerate() {
        assert_eq!(
            mid.classes[class].frees - after.classes[class].frees,
            want,
            "frees of class {class}"
        );
    }
    assert_eq!(epoch_stats(&mid, epoch).live_objects, kept.len() as u64);

    // Close the epoch: the kept boxes stay valid and are its live objects.
    slab().epoch_close(epoch).unwrap();
    let closed = slab().stats();
    let e = epoch_stats(&closed, epoch);
    assert_eq!(e.state, EpochState::Closing);
    assert_eq!(
        e.live_objects,
        kept.len() as u64,
        "objects outliving their epoch are reported"
    );
    for (j, b) in kept.iter().enumerate() {
        let round = (2 * j + 1) / SIZES.len();
        assert!(
            b.iter().all(|&x| x == round as u8),
            "box {j} still holds its bytes"
        );
    }
    drop(kept);
    let drained = slab().stats();
    assert!(
        drained
            .epochs
            .iter()
            .filter(|e| e.epoch_id as usize == epoch.index() && e.epoch_era == epoch.era())
            .all(|e| e.live_objects == 0),
        "the last free leaves the closed epoch empty"
    );
}

/// What one worker makes in its scope; `Send` so it can be freed elsewhere.
struct Made {
    text: String,
    numbers: Vec<u64>,
    map: HashMap<String, Vec<u32>>,
    json: serde_json::Value,
}

fn make(worker: usize, i: usize) -> Made {
    let text = format!("worker {worker} item {i}");
    let numbers: Vec<u64> = (0..(i % 90) as u64).collect();
    let mut map = HashMap::new();
    for k in 0..(i % 7) {
        map.insert(format!("k{k}"), vec![k as u32; k + 1]);
    }
    let json: serde_json::Value = serde_json::from_str(&format!(
        r#"{{"worker": {worker}, "item": {i}, "tags": ["a", "bb", "{text}"], "nested": {{"n": [1, 2, 3]}}}}"#
    ))
    .unwrap();
    Made {
        text,
        numbers,
        map,
        json,
    }
}

fn check(made: &Made, worker: usize, i: usize) {
    assert_eq!(made.text, format!("worker {worker} item {i}"));
    assert_eq!(made.numbers.len(), i % 90);
    assert!(made.numbers.iter().enumerate().all(|(j, &n)| n == j as u64));
    assert_eq!(made.map.len(), i % 7);
    for (k, v) in &made.map {
        let k: usize = k[1..].parse().unwrap();
        assert_eq!(v, &vec![k as u32; k + 1]);
    }
    assert_eq!(made.json["worker"], worker);
    assert_eq!(made.json["tags"][2], made.text.as_str());
    assert_eq!(made.json["nested"]["n"][2], 3);
}

#[test]
fn collections_made_in_scopes_on_many_threads_are_freed_anywhere_and_outlive_their_epoch() {
    let _serial = serial();
    const WORKERS: usize = 4;
    const ITEMS: usize = 400;
    const KEPT: usize = 25;
    let epochs: Vec<EpochId> = (0..WORKERS).map(|_| new_epoch()).collect();
    let (to_freer, freer_inbox) = mpsc::channel::<(usize, usize, Made)>();
    let freer = std::thread::spawn(move || {
        let mut n = 0;
        for (worker, i, made) in freer_inbox {
            check(&made, worker, i);
            drop(made); // on another thread, outside any scope
            n += 1;
        }
        n
    });
    let kept: Vec<Vec<Box<[u8; 200]>>> = std::thread::scope(|s| {
        let handles: Vec<_> = epochs
            .iter()
            .enumerate()
            .map(|(worker, &epoch)| {
                let to_freer = to_freer.clone();
                s.spawn(move || {
                    let mut kept = Vec::with_capacity(KEPT);
                    let mut own = Vec::new();
                    global::scope(epoch, || {
                        for i in 0..ITEMS {
                            let made = make(worker, i);
                            assert!(
                                global::owns(made.text.as_ptr()),
                                "a short String is slab memory"
                            );
                            match i % 3 {
                                0 => to_freer.send((worker, i, made)).unwrap(),
                                1 => own.push((i, made)),
                                _ => drop(made),
                            }
                            if i < KEPT {
                                kept.push(Box::new([worker as u8; 200]));
                            }
                        }
                        for (i, made) in &own {
                            check(made, worker, *i);
                        }
                    });
                    // Freed after the scope ended, on this thread.
                    drop(own);
                    kept
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    drop(to_freer);
    assert_eq!(freer.join().unwrap(), WORKERS * ITEMS.div_ceil(3));
    for &epoch in &epochs {
        slab().epoch_close(epoch).unwrap();
    }
    let snap = slab().stats();
    for (worker, &epoch) in epochs.iter().enumerate() {
        let e = epoch_stats(&snap, epoch);
        assert_eq!(e.state, EpochState::Closing);
        assert_eq!(
            e.live_objects, KEPT as u64,
            "worker {worker}: exactly the kept boxes outlive the epoch"
        );
        assert!(
            kept[worker]
                .iter()
                .all(|b| b.iter().all(|&x| x == worker as u8))
        );
        assert!(kept[worker].iter().all(|b| global::owns(b.as_ptr())));
    }
    drop(kept);
    let snap = slab().stats();
    for &epoch in &epochs {
        assert!(
            snap.epochs
                .iter()
                .filter(|e| e.epoch_id as usize == epoch.index() && e.epoch_era == epoch.era())
                .all(|e| e.live_objects == 0)
        );
    }
}

/// Capacities that cross every class boundary (both sides of each) and 768.
fn boundary_sizes() -> Vec<usize> {
    let mut sizes = vec![1];
    for &c in &CLASS_SIZES {
        sizes.extend([c - 1, c, c + 1]);
    }
    sizes.extend([1000, 4096, 10_000]);
    sizes
}

#[test]
fn vec_growth_and_shrinking_cross_every_class_boundary_with_contents_kept() {
    let _serial = serial();
    let epoch = new_epoch();
    let sizes = boundary_sizes();
    let byte = |i: usize| (i * 7 + 3) as u8;
    global::scope(epoch, || {
        let mut v: Vec<u8> = Vec::with_capacity(1);
        for &cap in &sizes {
            v.reserve_exact(cap - v.len());
            assert_eq!(v.capacity(), cap);
            while v.len() < cap {
                v.push(byte(v.len()));
            }
            assert!(
                v.iter().enumerate().all(|(i, &b)| b == byte(i)),
                "grown to {cap}"
            );
            assert_eq!(global::owns(v.as_ptr()), cap <= 768, "capacity {cap}");
            if cap <= 768 {
                assert_eq!(
                    global::usable_size(v.as_ptr()),
                    Some(CLASS_SIZES[class_of(cap)])
                );
            }
        }
        for &cap in sizes.iter().rev() {
            v.truncate(cap);
            v.shrink_to_fit();
            assert!(
                v.iter().enumerate().all(|(i, &b)| b == byte(i)),
                "shrunk to {cap}"
            );
            assert_eq!(global::owns(v.as_ptr()), cap <= 768, "capacity {cap}");
        }
    });
    slab().epoch_close(epoch).unwrap();
}

#[test]
fn realloc_keeps_the_pointer_within_a_class_and_moves_across_classes_and_owners() {
    let _serial = serial();
    let epoch = new_epoch();
    let layout = Layout::from_size_align(65, 8).unwrap();
    let fill = |p: *mut u8, n: usize| {
        for i in 0..n {
            // SAFETY: p is a live block of at least n bytes.
            unsafe { p.add(i).write(i as u8) };
        }
    };
    let holds = |p: *mut u8, n: usize| {
        // SAFETY: p is a live block of at least n bytes.
        (0..n).all(|i| unsafe { p.add(i).read() } == i as u8)
    };
    global::scope(epoch, || {
        // SAFETY: each pointer is used only while live, with the layout it was made with.
        unsafe {
            let p = GLOBAL.alloc(layout);
            assert!(global::owns(p));
            fill(p, 65);
            let same = GLOBAL.realloc(p, layout, 96);
            assert_eq!(same, p, "65 -> 96 stays in the 96-byte class");
            let same = GLOBAL.realloc(same, Layout::from_size_align(96, 8).unwrap(), 70);
            assert_eq!(same, p, "96 -> 70 stays in the 96-byte class");
            let moved = GLOBAL.realloc(same, Layout::from_size_align(70, 8).unwrap(), 97);
            assert_ne!(moved, p, "97 bytes is the next class");
            assert!(global::owns(moved) && holds(moved, 65));
            assert_eq!(global::usable_size(p), None, "the old object was freed");
            let big = GLOBAL.realloc(moved, Layout::from_size_align(97, 8).unwrap(), 5000);
            assert!(
                !global::owns(big) && holds(big, 65),
                "past 768 bytes: the fallback"
            );
            let back = GLOBAL.realloc(big, Layout::from_size_align(5000, 8).unwrap(), 300);
            assert!(
                global::owns(back) && holds(back, 65),
                "back under 768 in a scope: the slab"
            );
            GLOBAL.dealloc(back, Layout::from_size_align(300, 8).unwrap());
        }
    });
    // Outside every scope, a move goes to the fallback; a same-class resize stays.
    let p = global::scope(epoch, || {
        // SAFETY: a valid layout.
        unsafe { GLOBAL.alloc(layout) }
    });
    // SAFETY: p is live with `layout`; each result replaces it.
    unsafe {
        fill(p, 65);
        let same = GLOBAL.realloc(p, layout, 90);
        assert_eq!(same, p);
        let out = GLOBAL.realloc(same, Layout::from_size_align(90, 8).unwrap(), 200);
        assert!(
            !global::owns(out) && holds(out, 65),
            "outside scopes a move leaves the slab"
        );
        GLOBAL.dealloc(out, Layout::from_size_align(200, 8).unwrap());
    }
    slab().epoch_close(epoch).unwrap();
}

#[test]
fn zeroed_allocations_are_zero_even_on_reused_slots() {
    let _serial = serial();
    let epoch = new_epoch();
    global::scope(epoch, || {
        for _ in 0..100 {
            let dirty = vec![0xFFu8; 200];
            drop(dirty);
            let clean = vec![0u8; 200].into_boxed_slice(); // alloc_zeroed
            assert!(global::owns(clean.as_ptr()));
            assert!(clean.iter().all(|&b| b == 0));
        }
    });
    slab().epoch_close(epoch).unwrap();
}

#[test]
fn over_aligned_large_and_refused_requests_go_to_the_fallback() {
    let _serial = serial();
    let epoch = new_epoch();
    let aligned = Layout::from_size_align(64, 32).unwrap();
    global::scope(epoch, || {
        assert_eq!(global::route(64, 32), None);
        assert_eq!(global::route(769, 8), None);
        assert_eq!(global::route(768, 16), Some(epoch));
        // SAFETY: a valid layout, freed with it.
        unsafe {
            let p = GLOBAL.alloc(aligned);
            assert!(!global::owns(p) && p as usize % 32 == 0);
            GLOBAL.dealloc(p, aligned);
        }
    });
    assert_eq!(
        global::route(64, 8),
        None,
        "outside every scope: the fallback"
    );
    slab().epoch_close(epoch).unwrap();
    let before = slab().stats();
    let b = global::scope(epoch, || Box::new([3u8; 100]));
    assert!(
        !global::owns(b.as_ptr()),
        "a closed epoch refuses: the fallback serves"
    );
    let after = slab().stats();
    assert_eq!(after.epoch_closed_errors - before.epoch_closed_errors, 1);
    assert_eq!(
        after.system_fallback_allocs - before.system_fallback_allocs,
        1
    );
}

#[test]
fn a_double_free_through_the_contract_is_counted_and_changes_nothing() {
    let _serial = serial();
    let epoch = new_epoch();
    // SAFETY: the object is freed through `free_owned`; the second free is the case under
    // test, which the contract promises to detect (the slot is not handed out again between
    // the two frees: nothing else allocates in this epoch).
    unsafe {
        global::scope_enter(epoch);
        let p = global::alloc_routed(100, 8).expect("served in a scope");
        global::scope_exit();
        assert!(global::owns(p.as_ptr()));
        let before = slab().stats();
        global::free_owned(p);
        global::free_owned(p);
        assert_eq!(global::realloc_owned(p, 10, 8), Realloc::NotLive);
        let after = slab().stats();
        assert_eq!(after.pointer_errors - before.pointer_errors, 2);
        assert_eq!(epoch_stats(&after, epoch).live_objects, 0);
        assert_eq!(global::usable_size(p.as_ptr()), None);
    }
    slab().epoch_close(epoch).unwrap();
}

thread_local! {
    /// A thread-local whose destructor allocates and frees, run at thread exit.
    static ON_EXIT: AllocatesOnDrop = const { AllocatesOnDrop };
}

struct AllocatesOnDrop;

impl Drop for AllocatesOnDrop {
    fn drop(&mut self) {
        let v: Vec<String> = (0..50).map(|i| i.to_string()).collect();
        assert_eq!(v.len(), 50);
    }
}

#[test]
fn a_thread_that_exits_inside_a_scope_with_allocating_destructors_exits_cleanly() {
    let _serial = serial();
    let epoch = new_epoch();
    let kept = std::thread::spawn(move || {
        ON_EXIT.with(|_| {});
        global::scope_enter(epoch); // never exited: the thread ends inside the scope
        Box::new([9u8; 300])
    })
    .join()
    .expect("the thread and its thread-local destructors ran");
    assert!(global::owns(kept.as_ptr()) && kept.iter().all(|&b| b == 9));
    assert_eq!(global::current_scope(), None, "scopes are per thread");
    drop(kept);
    slab().epoch_close(epoch).unwrap();
}

#[path = "support/shared_data.rs"]
mod shared_data;
use shared_data::shared_data;

#[test]
fn real_json_parsed_and_printed_in_a_scope_matches_the_fallback_and_frees_to_zero() {
    let Some(dir) = shared_data() else { return };
    let _serial = serial();
    for name in ["twitter.json", "citm_catalog.json", "canada.json"] {
        let text = std::fs::read_to_string(dir.join("json").join(name)).unwrap();
        let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
        let epoch = new_epoch();
        slab().set_label(epoch, name).unwrap();
        let (value, printed) = global::scope(epoch, || {
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            let printed = serde_json::to_string(&value).unwrap();
            (value, printed)
        });
        // `assert!`, not `assert_eq!`: a failure would print megabytes.
        assert!(
            value == reference,
            "{name}: the tree built in the slab differs"
        );
        let expected = serde_json::to_string(&reference).unwrap();
        assert!(printed == expected, "{name}: printed from the slab differs");
        let live = epoch_stats(&slab().stats(), epoch).live_objects;
        assert!(
            live > 1000,
            "{name}: the tree lives in its epoch ({live} objects)"
        );
        drop((value, printed));
        slab().epoch_close(epoch).unwrap();
        let after = slab().stats();
        let left = after
            .epochs
            .iter()
            .filter(|e| e.epoch_id as usize == epoch.index() && e.epoch_era == epoch.era())
            .map(|e| e.live_objects)
            .sum::<u64>();
        assert_eq!(left, 0, "{name}: everything freed");
    }
}
