//! temporal-slab as this test binary's global allocator.

use temporal_slab::global::{self, EpochGlobal};

#[global_allocator]
static GLOBAL: EpochGlobal = EpochGlobal::new();

#[test]
fn smoke() {
    let slab = global::instance().expect("instance");
    let e = slab.epoch_advance().unwrap();
    let b = global::scope(e, || Box::new([7u8; 100]));
    assert!(global::owns(b.as_ptr()));
    let c = Box::new([1u8; 100]);
    assert!(!global::owns(c.as_ptr()));
    let mut v: Vec<u8> = global::scope(e, || (0..50).collect());
    global::scope(e, || v.extend(0..200));
    assert!(global::owns(v.as_ptr()));
    global::scope(e, || v.extend((0..2000).map(|i| i as u8)));
    assert!(!global::owns(v.as_ptr()));
    drop(b);
    drop(v);
}
