//! A fixed number of fast-path allocation/free pairs, for instruction counting: the cost of the
//! stats counters is the difference between a build with the default feature
//! `fast-path-counters` and one without, under `valgrind --tool=callgrind`.
//!
//! ```text
//! cargo build --release -p temporal-slab --example fast_path_loop [--no-default-features]
//! valgrind --tool=callgrind target/release/examples/fast_path_loop 1000000
//! ```
//! Running it with two counts and subtracting gives instructions per pair without the setup.

use std::hint::black_box;

use temporal_slab::SlabAllocator;

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(1_000_000, |a| a.parse().expect("a count"));
    let slab = SlabAllocator::new().expect("reserve");
    let epoch = slab.epoch_current();
    let _anchor = slab.alloc(128, epoch).expect("alloc");
    for _ in 0..n {
        let p = slab.alloc_ptr(black_box(128), epoch).expect("alloc");
        slab.free_ptr(black_box(p)).expect("free");
    }
    println!("{n} pairs");
}
