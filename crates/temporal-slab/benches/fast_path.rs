//! Criterion micro-benchmarks of the fast path: one allocation and its free, through each API,
//! in a warm epoch (the slab stays published, no slow path). Peers and latency distributions are
//! in the `bench` crate; these track regressions of the fast path itself.
//!
//! `cargo bench -p temporal-slab --bench fast_path`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use temporal_slab::SlabAllocator;

fn fast_path(c: &mut Criterion) {
    let slab = SlabAllocator::new().unwrap();
    let epoch = slab.epoch_current();
    // Keep one object live so the class's current slab never empties out of the picture.
    let _anchor = slab.alloc(128, epoch).unwrap();

    let mut g = c.benchmark_group("fast_path_128B");
    g.bench_function("alloc_ptr+free_ptr", |b| {
        b.iter(|| {
            let p = slab.alloc_ptr(black_box(128), epoch).unwrap();
            slab.free_ptr(black_box(p)).unwrap();
        })
    });
    g.bench_function("alloc+free (handle)", |b| {
        b.iter(|| {
            let h = slab.alloc(black_box(128), epoch).unwrap();
            slab.free(black_box(h)).unwrap();
        })
    });
    let h = slab.alloc(128, epoch).unwrap();
    g.bench_function("get (handle check)", |b| {
        b.iter(|| slab.get(black_box(h)).unwrap())
    });
    let e = slab.epoch(epoch);
    g.bench_function("allocator_api2 Box::new_in", |b| {
        b.iter(|| allocator_api2::boxed::Box::new_in(black_box([0u64; 16]), &e))
    });
    g.bench_function("system malloc+free (reference)", |b| {
        b.iter(|| black_box(Box::new(black_box([0u64; 16]))))
    });
    g.finish();
}

criterion_group!(benches, fast_path);
criterion_main!(benches);
