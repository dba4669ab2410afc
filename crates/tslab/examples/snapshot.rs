//! Writes the stats JSON of a small allocator workload to stdout: a quick way to get a real
//! snapshot for `tslab stats`, `validate` or `export prometheus`.
//!
//! ```text
//! cargo run -p tslab --example snapshot > snap.json
//! ```

use temporal_slab::SlabAllocator;

fn main() {
    let alloc = SlabAllocator::new().expect("reserve address space");
    let a = alloc.epoch_current();
    alloc
        .set_label(a, "request \"quoted\" \\ \t")
        .expect("label");
    let handles: Vec<_> = (0..10_000)
        .map(|i| alloc.alloc(64 + (i % 8) * 90, a).expect("alloc"))
        .collect();
    for h in handles.iter().step_by(2) {
        alloc.free(*h).expect("free");
    }
    let b = alloc.epoch_advance().expect("advance");
    alloc.set_label(b, "background").expect("label");
    alloc.inc_refcount(b).expect("refcount");
    alloc.epoch_close(a).expect("close");
    let _ = alloc.alloc(100, b).expect("alloc");
    println!("{}", tslab::Snapshot::of(&alloc).to_json_pretty());
}
