//! The cost of the global allocator's routed path against a direct `alloc_ptr`/`free_ptr`, and
//! against `System`: pairs of one 128-byte allocation and its free, in a loop, timed. The scoped paths
//! enter and exit the scope around every pair (two thread-local writes each).
//!
//! ```text
//! cargo run --release -p temporal-slab --example global_route_cost [pairs]
//! ```
//! Prints nanoseconds per pair for each path and the ratios. A measurement for people, not a
//! test: numbers vary with the machine and its load; run it more than once. On a loaded
//! machine count instructions instead: with a path name (`direct`, `routed`, `trait`,
//! `outside`, `system`) it runs only that path, untimed, so two runs under callgrind with
//! different counts give instructions per pair:
//!
//! ```text
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/global_route_cost 200000 routed
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::ptr::NonNull;
use std::time::Instant;

use temporal_slab::global::{self, EpochGlobal};

/// Runs each path `n` times per round, the paths interleaved round by round (so a burst of
/// load elsewhere on the machine hits all of them alike), and returns each path's best
/// nanoseconds per call over `rounds` rounds.
fn time_interleaved(n: u64, rounds: usize, paths: &mut [&mut dyn FnMut()]) -> Vec<f64> {
    let mut best = vec![f64::INFINITY; paths.len()];
    for _ in 0..rounds {
        for (path, best) in paths.iter_mut().zip(&mut best) {
            let start = Instant::now();
            for _ in 0..n {
                path();
            }
            *best = best.min(start.elapsed().as_nanos() as f64 / n as f64);
        }
    }
    best
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(5_000_000, |a| a.parse().expect("a number of pairs"));
    let slab = global::instance().expect("reserve address space");
    let epoch = slab.epoch_advance().expect("a ring slot");
    let layout = Layout::from_size_align(128, 8).unwrap();
    // One live object keeps the run's slab from being recycled between pairs.
    let _anchor = slab.alloc_ptr(128, epoch).unwrap();

    let mut direct = || {
        let p = slab.alloc_ptr(black_box(128), epoch).unwrap();
        slab.free_ptr(black_box(p)).unwrap();
    };
    let mut routed = || {
        global::scope_enter(epoch);
        // SAFETY: freed once, right away, through the module.
        unsafe {
            let p = global::alloc_routed(black_box(128), 8).unwrap();
            global::free_owned(black_box(p));
        }
        global::scope_exit();
    };
    let mut through_trait = || {
        global::scope_enter(epoch);
        let g = EpochGlobal::new();
        // SAFETY: a valid layout, freed once with it.
        unsafe {
            let p = g.alloc(black_box(layout));
            g.dealloc(black_box(p), layout);
        }
        global::scope_exit();
    };
    let mut outside = || {
        let g = EpochGlobal::new();
        // SAFETY: as above.
        unsafe {
            let p = g.alloc(black_box(layout));
            g.dealloc(black_box(p), layout);
        }
    };
    let mut system = || {
        // SAFETY: as above.
        unsafe {
            let p = System.alloc(black_box(layout));
            System.dealloc(black_box(NonNull::new(p).unwrap().as_ptr()), layout);
        }
    };
    if let Some(path) = std::env::args().nth(2) {
        let f: &mut dyn FnMut() = match path.as_str() {
            "direct" => &mut direct,
            "routed" => &mut routed,
            "trait" => &mut through_trait,
            "outside" => &mut outside,
            "system" => &mut system,
            other => panic!("unknown path {other:?}: direct, routed, trait, outside or system"),
        };
        for _ in 0..n {
            f();
        }
        println!("{n} pairs on the {path} path");
        return;
    }
    let t = time_interleaved(
        n / 10,
        10,
        &mut [
            &mut direct,
            &mut routed,
            &mut through_trait,
            &mut outside,
            &mut system,
        ],
    );
    let (direct, routed, through_trait, outside, system) = (t[0], t[1], t[2], t[3], t[4]);
    println!("{n} alloc+free pairs of 128 bytes, ns per pair (best of 10 interleaved rounds):");
    println!("  SlabAllocator::alloc_ptr + free_ptr       {direct:6.2}");
    println!(
        "  global::alloc_routed + free_owned (scope)  {routed:6.2}  ({:.2}x direct)",
        routed / direct
    );
    println!(
        "  EpochGlobal alloc + dealloc (scope)        {through_trait:6.2}  ({:.2}x direct)",
        through_trait / direct
    );
    println!(
        "  EpochGlobal outside scopes (System)        {outside:6.2}  ({:.2}x System)",
        outside / system
    );
    println!("  System alloc + dealloc                     {system:6.2}");
}
