//! Handle safety, checked against a model with random operation sequences (proptest): every
//! stale or double free is rejected, every live handle stays valid with its bytes intact.

use proptest::prelude::*;
use temporal_slab::{Config, EpochId, Error, Handle, SlabAllocator};

#[derive(Clone, Debug)]
enum Op {
    Alloc { size: usize },
    AllocPtr { size: usize },
    Free(usize),
    Get(usize),
    Close,
    Advance,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..=768).prop_map(|size| Op::Alloc { size }),
        2 => (0usize..=768).prop_map(|size| Op::AllocPtr { size }),
        6 => any::<usize>().prop_map(Op::Free),
        2 => any::<usize>().prop_map(Op::Get),
        1 => Just(Op::Close),
        1 => Just(Op::Advance),
    ]
}

enum Entry {
    Handle {
        h: Handle,
        size: usize,
        tag: u8,
        live: bool,
    },
    Ptr {
        p: std::ptr::NonNull<u8>,
        size: usize,
        tag: u8,
        live: bool,
    },
}

fn fill(p: std::ptr::NonNull<u8>, size: usize, tag: u8) {
    // SAFETY: live object of at least `size` bytes.
    unsafe { std::ptr::write_bytes(p.as_ptr(), tag, size) }
}

fn check(p: std::ptr::NonNull<u8>, size: usize, tag: u8) {
    // SAFETY: live object of at least `size` bytes.
    let bytes = unsafe { std::slice::from_raw_parts(p.as_ptr(), size) };
    assert!(
        bytes.iter().all(|&b| b == tag),
        "object bytes changed under a live handle"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn stale_and_double_frees_are_always_rejected(ops in proptest::collection::vec(op(), 1..400)) {
        let slab = SlabAllocator::with_config(Config::default().max_bytes(64 << 20).track_rss(false)).unwrap();
        let other = SlabAllocator::with_config(Config::default().max_bytes(2 << 20).track_rss(false)).unwrap();
        let foreign = other.alloc(8, other.epoch_current()).unwrap();
        let mut entries: Vec<Entry> = Vec::new();
        let mut epoch: EpochId = slab.epoch_current();
        let mut closed = false;
        let mut tag = 0u8;
        for op in ops {
            match op {
                Op::Alloc { size } | Op::AllocPtr { size } => {
                    tag = tag.wrapping_add(1).max(1);
                    let as_ptr = matches!(op, Op::AllocPtr { .. });
                    let result = if as_ptr {
                        slab.alloc_ptr(size, epoch).map(|p| {
                            fill(p, size, tag);
                            Entry::Ptr { p, size, tag, live: true }
                        })
                    } else {
                        slab.alloc(size, epoch).map(|h| {
                            fill(slab.get(h).unwrap(), size, tag);
                            Entry::Handle { h, size, tag, live: true }
                        })
                    };
                    match result {
                        Ok(e) => { prop_assert!(!closed, "allocated in a closed epoch"); entries.push(e) }
                        Err(Error::EpochClosed { .. }) => prop_assert!(closed),
                        Err(e) => prop_assert!(false, "unexpected error {}", e),
                    }
                }
                Op::Free(i) if !entries.is_empty() => {
                    let n = entries.len();
                    match &mut entries[i % n] {
                        Entry::Handle { h, size, tag, live } => {
                            if *live {
                                check(slab.get(*h).expect("live handle lost"), *size, *tag);
                            }
                            match (*live, slab.free(*h)) {
                                (true, Ok(())) => *live = false,
                                (true, Err(e)) => prop_assert!(false, "live free failed: {}", e),
                                (false, Err(Error::DoubleFree { .. } | Error::StaleHandle { .. })) => {}
                                (false, other) => prop_assert!(false, "dead handle free gave {:?}", other),
                            }
                            prop_assert!(slab.get(*h).is_none());
                        }
                        Entry::Ptr { p, live, size, tag } => {
                            if *live {
                                check(*p, *size, *tag);
                                prop_assert!(slab.free_ptr(*p).is_ok());
                                *live = false;
                            }
                            // A dead pointer may have been handed out again to a later entry;
                            // only free it again when no live entry shares the address.
                        }
                    }
                }
                Op::Get(i) if !entries.is_empty() => {
                    let n = entries.len();
                    if let Entry::Handle { h, size, tag, live } = &entries[i % n] {
                        match (slab.get(*h), *live) {
                            (Some(p), true) => check(p, *size, *tag),
                            (None, false) => {}
                            (got, live) => prop_assert!(false, "get={:?} live={}", got, live),
                        }
                    }
                }
                Op::Close => {
                    slab.epoch_close(epoch).unwrap();
                    closed = true;
                }
                Op::Advance => match slab.epoch_advance() {
                    Ok(e) => {
                        epoch = e;
                        closed = false;
                    }
                    // Every other epoch still holds live objects: the ring keeps them.
                    Err(Error::EpochRingFull { .. }) => {}
                    Err(e) => prop_assert!(false, "advance failed: {}", e),
                },
                _ => {}
            }
            let foreign_free = slab.free(foreign);
            prop_assert!(matches!(foreign_free, Err(Error::WrongAllocator { .. })), "foreign handle accepted");
        }
        // Every live object still holds its bytes, and frees cleanly.
        for e in &entries {
            match e {
                Entry::Handle { h, size, tag, live: true } => {
                    check(slab.get(*h).expect("live"), *size, *tag);
                    prop_assert!(slab.free(*h).is_ok());
                    let again = slab.free(*h);
                    prop_assert!(matches!(again, Err(Error::DoubleFree { .. })), "second free gave {:?}", again);
                }
                Entry::Ptr { p, size, tag, live: true } => {
                    check(*p, *size, *tag);
                    prop_assert!(slab.free_ptr(*p).is_ok());
                    prop_assert!(slab.free_ptr(*p).is_err(), "pointer double free");
                }
                _ => {}
            }
        }
        prop_assert_eq!(slab.stats().classes.iter().map(|c| c.live_objects).sum::<u64>(), 0);
    }
}

#[test]
fn a_freed_handle_stays_stale_after_its_slot_is_reused_many_times() {
    let slab = SlabAllocator::new().unwrap();
    let epoch = slab.epoch_current();
    let first = slab.alloc(64, epoch).unwrap();
    slab.free(first).unwrap();
    for _ in 0..10_000 {
        let h = slab.alloc(64, epoch).unwrap();
        assert!(matches!(
            slab.free(first),
            Err(Error::StaleHandle { .. } | Error::DoubleFree { .. })
        ));
        assert!(slab.get(first).is_none());
        slab.free(h).unwrap();
    }
}

#[test]
fn handles_stay_stale_across_recycling_and_page_discard() {
    let slab = SlabAllocator::new().unwrap();
    let e1 = slab.epoch_current();
    let handles: Vec<Handle> = (0..200).map(|_| slab.alloc(128, e1).unwrap()).collect();
    for h in &handles {
        slab.free(*h).unwrap();
    }
    let e2 = slab.epoch_advance().unwrap();
    assert!(slab.epoch_close(e1).unwrap() > 0, "empty slabs recycled");
    // The recycled slabs are reused by the next epoch; old handles must not match new objects.
    let fresh: Vec<Handle> = (0..200).map(|_| slab.alloc(128, e2).unwrap()).collect();
    for h in &handles {
        assert!(
            slab.get(*h).is_none(),
            "stale handle resolved after recycling"
        );
        assert!(slab.free(*h).is_err());
    }
    for h in fresh {
        slab.free(h).unwrap();
    }
}

#[test]
fn invalid_handles_and_pointers_are_typed_errors() {
    let slab = SlabAllocator::new().unwrap();
    let epoch = slab.epoch_current();
    let h = slab.alloc(64, epoch).unwrap();
    // Same tag, slab far past anything carved.
    let bogus = Handle::from_raw(h.to_raw() | (0x3f_ffff << 6));
    assert!(matches!(slab.free(bogus), Err(Error::InvalidHandle { .. })));
    assert!(matches!(
        slab.free(Handle::from_raw(0)),
        Err(Error::WrongAllocator { .. })
    ));
    let p = slab.get(h).unwrap();
    // SAFETY: pointer arithmetic inside the object, never dereferenced.
    let inside = unsafe { std::ptr::NonNull::new_unchecked(p.as_ptr().add(8)) };
    assert!(matches!(
        slab.free_ptr(inside),
        Err(Error::InvalidPointer { .. })
    ));
    let mut on_stack = 0u64;
    let stack = std::ptr::NonNull::from(&mut on_stack).cast::<u8>();
    assert!(matches!(
        slab.free_ptr(stack),
        Err(Error::InvalidPointer { .. })
    ));
    assert!(matches!(
        slab.alloc(769, epoch),
        Err(Error::TooLarge {
            size: 769,
            max: 768
        })
    ));
    slab.free(h).unwrap();
    let stats = slab.stats();
    assert_eq!(stats.handle_errors, 2);
    assert_eq!(stats.pointer_errors, 2);
}
