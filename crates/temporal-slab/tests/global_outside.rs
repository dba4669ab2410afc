//! `Outside::CurrentEpoch`: requests made outside every scope go to the allocator's current
//! epoch (what an `LD_PRELOAD` malloc uses), and back to the fallback under `Outside::System`.
//! One test: the setting is process-wide. Nothing in this binary creates the allocator before
//! the test's first `Box` in `CurrentEpoch` mode, so that `Box` creates it from inside the
//! global allocator.

use temporal_slab::global::{self, EpochGlobal, Outside};
use temporal_slab::{CLASS_SIZES, class_for_size};

#[global_allocator]
static GLOBAL: EpochGlobal = EpochGlobal::new();

#[test]
fn outside_scopes_current_epoch_mode_serves_small_requests_from_the_current_epoch() {
    assert_eq!(global::outside_scope(), Outside::System, "the default");
    let before = Box::new([1u8; 100]);
    assert!(
        !global::owns(before.as_ptr()),
        "System mode: outside scopes is the fallback"
    );
    assert_eq!(global::route(100, 8), None);

    // The first request routed to an epoch creates the allocator, from inside the global
    // allocator: its own allocations go to the fallback, this one is served by the slab.
    global::set_outside_scope(Outside::CurrentEpoch);
    let first = Box::new([5u8; 100]);
    assert!(
        global::owns(first.as_ptr()),
        "created inside an allocation, then served it"
    );
    let slab = global::instance().expect("the global allocator");
    let current = slab.epoch_current();
    assert_eq!(global::route(100, 8), Some(current));
    assert_eq!(
        global::route(769, 8),
        None,
        "large requests still go to the fallback"
    );
    assert_eq!(global::route(64, 32), None, "over-aligned ones too");
    let small = Box::new([2u8; 100]);
    assert!(global::owns(small.as_ptr()), "served by the current epoch");
    assert_eq!(
        global::usable_size(small.as_ptr()),
        Some(CLASS_SIZES[class_for_size(100).unwrap()])
    );
    let text: String = (0..20).map(|i| char::from(b'a' + i)).collect();
    assert!(global::owns(text.as_ptr()));

    // A scope still wins over the current epoch.
    let other = slab.epoch_advance().unwrap();
    let scoped = slab.epoch_advance().unwrap();
    assert_eq!(
        global::route(100, 8),
        Some(scoped),
        "the advance made `scoped` current"
    );
    global::scope(other, || assert_eq!(global::route(100, 8), Some(other)));

    // After the current epoch closes, requests are refused there and fall back.
    slab.epoch_close(scoped).unwrap();
    let refused = Box::new([3u8; 100]);
    assert!(
        !global::owns(refused.as_ptr()),
        "a closed current epoch refuses: the fallback"
    );

    global::set_outside_scope(Outside::System);
    let after = Box::new([4u8; 100]);
    assert!(!global::owns(after.as_ptr()), "back to the fallback");
    assert_eq!(global::route(100, 8), None);

    // Objects made in CurrentEpoch mode are freed by address whatever the mode is now.
    let addr = small.as_ptr();
    assert!(small.iter().all(|&b| b == 2) && text.len() == 20);
    drop(small);
    drop(text);
    assert_eq!(
        global::usable_size(addr),
        None,
        "freed in the slab, not by the fallback"
    );
    assert!(first.iter().all(|&b| b == 5));
    drop((before, first, refused, after));
}
