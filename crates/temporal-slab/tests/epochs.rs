//! Epoch lifecycle, wrap-around, labels, refcounts, domains, collections and diagnostics.

use std::collections::HashSet;
use std::time::Duration;

use temporal_slab::{Config, EPOCH_COUNT, EpochState, Error, MAX_LABELS, SlabAllocator, diag};

fn quiet() -> SlabAllocator {
    SlabAllocator::with_config(Config::default().max_bytes(256 << 20)).unwrap()
}

#[test]
fn allocating_in_a_closing_epoch_is_refused_and_counted() {
    let slab = quiet();
    let e = slab.epoch_current();
    let h = slab.alloc(64, e).unwrap();
    slab.epoch_close(e).unwrap();
    assert_eq!(slab.epoch_state(e), Some(EpochState::Closing));
    assert!(matches!(slab.alloc(64, e), Err(Error::EpochClosed { .. })));
    assert!(matches!(
        slab.alloc_ptr(64, e),
        Err(Error::EpochClosed { .. })
    ));
    assert!(slab.get(h).is_some(), "live objects survive the close");
    let stats = slab.stats();
    assert_eq!(stats.epoch_closed_errors, 2);
    assert_eq!(stats.classes[0].slow_path_epoch_closed, 2);
    assert_eq!(stats.epoch_close_calls, 1, "counted once per call");
    // The run published for the allocation holds more slabs than the one used: the close
    // recycled all of them but the one with the live object.
    let held = stats.epochs[0].total_partial_slabs + stats.epochs[0].total_full_slabs;
    assert_eq!(held, 1, "only the slab with the live object is left");
    let recycled = stats.classes[0].empty_slab_recycled;
    assert!(
        recycled >= 1,
        "the run's unused slabs are recycled by the close"
    );
    slab.free(h).unwrap();
    let after = slab.stats();
    assert_eq!(
        after.classes[0].empty_slab_recycled,
        recycled + 1,
        "last free in a closed epoch recycles"
    );
    assert_eq!(after.epochs[0].estimated_rss_bytes, 0, "the epoch drained");
}

#[test]
fn close_recycles_every_empty_slab_and_counts_once_per_call() {
    let slab = quiet();
    let e = slab.epoch_current();
    let handles: Vec<_> = (0..31 * 10).map(|_| slab.alloc(128, e).unwrap()).collect();
    let keep = handles[0];
    for h in &handles[1..] {
        slab.free(*h).unwrap();
    }
    // 310 objects of 128 B fill 10 slabs; runs of 6 slabs were published, so the epoch holds
    // 12 (the last run's two unused slabs are empty too), carved as one contiguous range.
    let before = slab.stats();
    let epoch = &before.epochs[0];
    assert_eq!(epoch.live_objects, 1);
    assert_eq!(epoch.total_partial_slabs + epoch.total_full_slabs, 12);
    assert_eq!(epoch.total_reclaimable_slabs, 11);
    let recycled = slab.epoch_close(e).unwrap();
    assert_eq!(
        recycled, 11,
        "all empty slabs, not the one with a live object"
    );
    let after = slab.stats();
    assert_eq!(after.epoch_close_calls, 1);
    assert_eq!(after.epoch_close_recycled_slabs, 11);
    assert_eq!(after.epoch_close_scanned_slabs, 12);
    assert_eq!(
        after.classes[2].madvise_calls, 1,
        "slabs 1..=11 are contiguous: one madvise for all of them"
    );
    assert_eq!(after.classes[2].madvise_bytes, 11 * 4096);
    assert_eq!(after.epochs[0].estimated_rss_bytes, 4096);
    assert_eq!(after.epochs[0].recycled_slabs, 11);
    slab.free(keep).unwrap();
    assert_eq!(slab.stats().classes[2].empty_slab_recycled, 12);
}

#[test]
fn wrap_around_past_sixteen_advances_makes_old_ids_stale() {
    let slab = quiet();
    let first = slab.epoch_current();
    assert_eq!((first.index(), first.era()), (0, 1));
    let mut seen = vec![first];
    for i in 1..=40 {
        let e = slab.epoch_advance().unwrap();
        assert_eq!(e.index(), i % EPOCH_COUNT);
        assert!(e.era() > seen.last().unwrap().era(), "eras only grow");
        assert_eq!(slab.epoch_current(), e);
        slab.alloc(64, e).map(|h| slab.free(h)).unwrap().unwrap();
        seen.push(e);
    }
    for (i, e) in seen.iter().enumerate() {
        let live = i + EPOCH_COUNT > 40;
        assert_eq!(slab.epoch_state(*e).is_some(), live, "epoch #{i}");
        if !live {
            assert!(matches!(slab.alloc(64, *e), Err(Error::StaleEpoch { .. })));
            assert!(matches!(
                slab.epoch_close(*e),
                Err(Error::StaleEpoch { .. })
            ));
            assert!(slab.set_label(*e, "x").is_err());
        }
    }
    assert_eq!(slab.stats().epoch_advances, 40);
}

#[test]
fn an_epoch_with_live_objects_keeps_its_slot_and_drains_when_they_are_freed() {
    let slab = quiet();
    let old = slab.epoch_current();
    slab.set_label(old, "kept").unwrap();
    // The old epoch keeps objects alive across many advances, never closed by the program.
    let kept: Vec<_> = (0..100)
        .map(|i| {
            let p = slab.alloc_ptr(256, old).unwrap();
            // SAFETY: fresh 256-byte object.
            unsafe { std::ptr::write_bytes(p.as_ptr(), i as u8, 256) };
            (p, i as u8)
        })
        .collect();
    let kept_addrs: HashSet<usize> = kept.iter().map(|(p, _)| p.as_ptr() as usize).collect();
    let mut fresh = Vec::new();
    for _ in 0..3 * EPOCH_COUNT {
        let new = slab.epoch_advance().unwrap();
        assert_ne!(
            new.index(),
            old.index(),
            "a slot with live objects is never reopened"
        );
        // Allocate in every new epoch: none of it may overlap a kept object.
        for _ in 0..50 {
            let p = slab.alloc_ptr(256, new).unwrap();
            assert!(
                !kept_addrs.contains(&(p.as_ptr() as usize)),
                "old era's live object handed out again"
            );
            fresh.push(p);
        }
        for p in fresh.drain(..) {
            slab.free_ptr(p).unwrap();
        }
    }
    // The ring came back to the old epoch with nobody inside: it was closed, and stays with
    // its label and its objects.
    assert_eq!(slab.epoch_state(old), Some(EpochState::Closing));
    let stats = slab.stats();
    let e = &stats.epochs[old.index()];
    assert_eq!((e.epoch_era, e.label.as_str()), (old.era(), "kept"));
    assert_eq!(e.live_objects, 100);
    assert_eq!(stats.classes[4].total_orphan_slabs, 0);
    for (p, v) in &kept {
        // SAFETY: still live.
        let bytes = unsafe { std::slice::from_raw_parts(p.as_ptr(), 256) };
        assert!(bytes.iter().all(|b| b == v), "old-era object clobbered");
    }
    for (p, _) in kept {
        slab.free_ptr(p).unwrap();
    }
    // Drained: the ring may take the slot again.
    let stats = slab.stats();
    assert_eq!(stats.epochs[old.index()].estimated_rss_bytes, 0);
    let mut reused = false;
    for _ in 0..EPOCH_COUNT {
        reused |= slab.epoch_advance().unwrap().index() == old.index();
    }
    assert!(reused, "a drained slot is reused");
    assert!(slab.epoch_state(old).is_none(), "and the old id is stale");
}

#[test]
fn labels_are_cut_registered_and_safe_under_concurrency() {
    let slab = quiet();
    let e = slab.epoch_current();
    slab.set_label(e, "request-handler-with-a-very-long-name")
        .unwrap();
    assert_eq!(slab.label(e).unwrap(), "request-handler-with-a-very-lon");
    assert_eq!(slab.label(e).unwrap().len(), 31);
    std::thread::scope(|s| {
        for t in 0..4 {
            let slab = &slab;
            s.spawn(move || {
                for i in 0..2000 {
                    let label = format!("worker-{}", (t * 7 + i) % 24);
                    slab.set_label(e, &label).unwrap();
                    let now = slab.label(e).unwrap();
                    assert!(now.starts_with("worker-"), "torn label {now:?}");
                }
            });
        }
    });
    let stats = slab.stats();
    assert_eq!(stats.label_registry.count as usize, MAX_LABELS);
    assert_eq!(stats.label_registry.max_labels as usize, MAX_LABELS);
    let unique: HashSet<_> = stats.label_registry.labels.iter().collect();
    assert_eq!(unique.len(), MAX_LABELS, "no label registered twice");
    let epoch = &stats.epochs[0];
    let id = epoch.label_id as usize;
    if id == 0 {
        assert!(
            !stats.label_registry.labels.contains(&epoch.label),
            "label past capacity gets id 0"
        );
    } else {
        assert_eq!(stats.label_registry.labels[id - 1], epoch.label);
    }
}

#[test]
fn refcounts_balance_under_concurrency_and_never_go_below_zero() {
    let slab = quiet();
    let e = slab.epoch_current();
    assert_eq!(slab.dec_refcount(e).unwrap(), 0, "saturates at zero");
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..10_000 {
                    slab.inc_refcount(e).unwrap();
                    slab.dec_refcount(e).unwrap();
                }
                slab.inc_refcount(e).unwrap();
            });
        }
    });
    assert_eq!(slab.refcount(e).unwrap(), 4);
    for _ in 0..10 {
        slab.dec_refcount(e).unwrap();
    }
    assert_eq!(slab.refcount(e).unwrap(), 0);
}

#[test]
fn domains_nest_per_thread_and_count_threads_not_enters() {
    let slab = quiet();
    let e = slab.epoch_current();
    let outer = slab.enter(e).unwrap();
    let inner = slab.enter(e).unwrap();
    assert_eq!(slab.domain_depth(e), 2);
    assert_eq!(slab.refcount(e).unwrap(), 1, "one thread inside");
    std::thread::scope(|s| {
        s.spawn(|| {
            let _d = slab.enter(e).unwrap();
            assert_eq!(slab.refcount(e).unwrap(), 2);
        });
    });
    assert_eq!(slab.refcount(e).unwrap(), 1);
    drop(inner);
    assert_eq!(slab.refcount(e).unwrap(), 1);
    drop(outer);
    assert_eq!(slab.refcount(e).unwrap(), 0);
    assert_eq!(slab.domain_depth(e), 0);
    assert_eq!(
        slab.epoch_state(e),
        Some(EpochState::Active),
        "no auto-close by default"
    );
    let live = slab.alloc(64, e).unwrap();
    assert!(slab.get(live).is_some());
}

#[test]
fn auto_close_closes_on_last_exit_but_never_a_newer_era() {
    let slab = quiet();
    let e = slab.epoch_current();
    {
        let _a = slab.enter_auto_close(e).unwrap();
        let _b = slab.enter_auto_close(e).unwrap();
    }
    assert_eq!(slab.epoch_state(e), Some(EpochState::Closing));
    assert!(matches!(slab.enter(e), Err(Error::EpochClosed { .. })));

    // A guard inside an epoch keeps it (ACTIVE, its slot never reopened) however many epochs
    // are opened after it; its exit then closes that epoch and no other.
    let e2 = slab.epoch_advance().unwrap();
    let guard = slab.enter_auto_close(e2).unwrap();
    let mut newer = e2;
    for _ in 0..3 * EPOCH_COUNT {
        newer = slab.epoch_advance().unwrap();
        assert_ne!(newer.index(), e2.index());
    }
    assert_eq!(slab.epoch_state(e2), Some(EpochState::Active));
    assert_eq!(slab.refcount(e2).unwrap(), 1);
    drop(guard);
    assert_eq!(slab.epoch_state(e2), Some(EpochState::Closing));
    assert_eq!(
        slab.epoch_state(newer),
        Some(EpochState::Active),
        "newer era left open"
    );
}

#[test]
fn collections_allocate_in_an_epoch_and_large_requests_fall_back() {
    let slab = quiet();
    let e = slab.epoch_current();
    let epoch = slab.epoch(e);
    {
        let mut v: allocator_api2::vec::Vec<u32, _> = allocator_api2::vec::Vec::new_in(&epoch);
        for i in 0..1000 {
            v.push(i);
        }
        assert_eq!(v.iter().map(|&x| u64::from(x)).sum::<u64>(), 499_500);
        let mut map = hashbrown::HashMap::new_in(&epoch);
        for i in 0..40u64 {
            map.insert(i, i * i);
        }
        assert_eq!(map[&7], 49);
        let small: allocator_api2::vec::Vec<u8, _> =
            allocator_api2::vec::Vec::with_capacity_in(100, &epoch);
        assert_eq!(small.as_ptr() as usize % 16, 0);
        let stats = slab.stats();
        assert!(
            stats.system_fallback_allocs > 0,
            "4000-byte vec went to the system allocator"
        );
        assert!(stats.epochs[0].live_objects > 0);
    }
    let stats = slab.stats();
    assert_eq!(
        stats.epochs[0].live_objects, 0,
        "collections freed everything"
    );
    slab.epoch_close(e).unwrap();
    let mut v = allocator_api2::vec::Vec::<u8, _>::new_in(&epoch);
    assert!(
        v.try_reserve(10).is_err(),
        "closed epoch refuses allocation"
    );
}

#[test]
fn leak_report_names_closed_epochs_still_held_by_a_domain() {
    let slab = quiet();
    let e = slab.epoch_current();
    slab.set_label(e, "background-worker-3").unwrap();
    let _leaked = slab.enter(e).unwrap();
    let _h = slab.alloc(512, e).unwrap();
    let other = slab.epoch_advance().unwrap();
    slab.set_label(other, "request").unwrap();
    slab.epoch_close(e).unwrap();
    let snap = slab.stats();
    let leaks = diag::leak_report(&snap, Duration::ZERO);
    assert_eq!(leaks.len(), 1);
    assert_eq!(leaks[0].label, "background-worker-3");
    assert_eq!(leaks[0].refcount, 1);
    assert_eq!(
        leaks[0].live_objects, 1,
        "live objects reported apart from refcount"
    );
    assert!(
        leaks[0].message.contains("background-worker-3"),
        "{}",
        leaks[0].message
    );
    assert!(
        diag::leak_report(&snap, Duration::from_secs(3600)).is_empty(),
        "age threshold"
    );
    let reclaim = diag::reclamation_report(&snap);
    assert_eq!(reclaim.len(), 1);
    assert!(reclaim[0].rss_before_close > 0);
}

#[test]
fn slow_path_analysis_blames_allocation_after_close() {
    let slab = quiet();
    let e = slab.epoch_current();
    for _ in 0..10 {
        let _ = slab.alloc(64, e).unwrap();
    }
    let healthy = diag::slow_path_analysis(&slab.stats());
    assert!(
        healthy.recommendation.starts_with("healthy"),
        "{}",
        healthy.recommendation
    );
    slab.epoch_close(e).unwrap();
    for _ in 0..50 {
        assert!(slab.alloc(64, e).is_err());
    }
    let bad = diag::slow_path_analysis(&slab.stats());
    assert!(bad.epoch_closed_share > 0.9);
    assert!(
        bad.recommendation.contains("CLOSING"),
        "{}",
        bad.recommendation
    );
}

#[cfg(feature = "serde")]
#[test]
fn snapshot_serializes_with_screaming_states() {
    let slab = quiet();
    let json = serde_json::to_string(&slab.stats()).unwrap();
    assert!(json.contains("\"state\":\"ACTIVE\""), "{json}");
}

#[test]
fn a_leaked_domain_stays_visible_through_200_advances_and_disappears_when_it_drains() {
    let slab = quiet();
    let leaked = slab.epoch_current();
    slab.set_label(leaked, "background-worker-3").unwrap();
    let domain = slab.enter(leaked).unwrap();
    let held: Vec<_> = (0..10).map(|_| slab.alloc(256, leaked).unwrap()).collect();
    // The program closes the epoch but a handler never leaves its domain.
    slab.epoch_advance().unwrap();
    slab.epoch_close(leaked).unwrap();
    for round in 0..200 {
        let e = slab.epoch_advance().unwrap();
        assert_ne!(
            e.index(),
            leaked.index(),
            "round {round}: the leaked slot was reopened"
        );
        let hs: Vec<_> = (0..20).map(|_| slab.alloc(96, e).unwrap()).collect();
        for h in hs {
            slab.free(h).unwrap();
        }
        slab.epoch_close(e).unwrap();
    }
    let snap = slab.stats();
    assert!(snap.epoch_advances >= 200);
    let e = &snap.epochs[leaked.index()];
    assert_eq!(e.epoch_era, leaked.era());
    assert_eq!(e.label, "background-worker-3");
    assert_eq!(e.state, EpochState::Closing);
    assert_eq!(e.refcount, 1);
    assert_eq!(e.live_objects, 10);
    assert!(e.estimated_rss_bytes >= 4096);
    let leaks = diag::leak_report(&snap, Duration::ZERO);
    assert_eq!(leaks.len(), 1, "{leaks:?}");
    assert_eq!(
        (
            leaks[0].epoch_id,
            leaks[0].epoch_era,
            leaks[0].refcount,
            leaks[0].live_objects
        ),
        (leaked.index() as u32, leaked.era(), 1, 10)
    );
    assert_eq!(leaks[0].label, "background-worker-3");

    // The handler finally leaves and its objects are freed: the epoch drains, the ring takes
    // the slot again, and nothing reports it any more.
    drop(domain);
    for h in held {
        slab.free(h).unwrap();
    }
    assert_eq!(slab.stats().epochs[leaked.index()].estimated_rss_bytes, 0);
    let mut reused = false;
    for _ in 0..EPOCH_COUNT {
        let e = slab.epoch_advance().unwrap();
        reused |= e.index() == leaked.index();
        slab.epoch_close(e).unwrap();
    }
    assert!(reused, "the drained slot is reused");
    let snap = slab.stats();
    assert!(diag::leak_report(&snap, Duration::ZERO).is_empty());
    assert!(
        snap.epochs.iter().all(|e| e.epoch_era != leaked.era()),
        "the drained epoch is gone from the stats"
    );
}

#[test]
fn a_ring_whose_every_slot_is_held_refuses_to_advance_with_a_typed_error() {
    let slab = quiet();
    // Hold every slot: a domain inside each of the 16 epochs.
    let mut domains = Vec::new();
    let mut epochs = vec![slab.epoch_current()];
    for _ in 1..EPOCH_COUNT {
        epochs.push(slab.epoch_advance().unwrap());
    }
    for &e in &epochs {
        domains.push(slab.enter(e).unwrap());
    }
    let current = slab.epoch_current();
    let err = slab.epoch_advance().unwrap_err();
    assert!(matches!(err, Error::EpochRingFull { held: 15 }), "{err}");
    assert_eq!(slab.epoch_current(), current, "nothing changed");
    for &e in &epochs {
        assert_eq!(
            slab.epoch_state(e),
            Some(EpochState::Active),
            "no epoch was closed"
        );
        assert_eq!(slab.refcount(e).unwrap(), 1);
    }
    assert_eq!(slab.stats().epoch_advance_refused, 1);
    // Live objects hold a slot as well as domains do.
    let h = slab.alloc(64, epochs[1]).unwrap();
    drop(domains);
    for &e in &epochs {
        slab.epoch_close(e).unwrap();
    }
    let next = slab.epoch_advance().unwrap();
    assert_ne!(
        next.index(),
        epochs[1].index(),
        "a slot with a live object is skipped"
    );
    slab.free(h).unwrap();
    assert_eq!(slab.stats().epoch_advance_refused, 1);
}

#[test]
fn a_domain_of_an_old_era_never_changes_a_newer_eras_refcount() {
    let slab = quiet();
    let old = slab.epoch_current();
    slab.epoch_advance().unwrap();
    slab.epoch_close(old).unwrap();
    // Reopen the old slot under a newer era.
    let mut newer = None;
    for _ in 0..EPOCH_COUNT {
        let e = slab.epoch_advance().unwrap();
        if e.index() == old.index() {
            newer = Some(e);
            break;
        }
        slab.epoch_close(e).unwrap();
    }
    let newer = newer.expect("the drained slot is reused");
    slab.inc_refcount(newer).unwrap();
    assert!(matches!(
        slab.inc_refcount(old),
        Err(Error::StaleEpoch { .. })
    ));
    assert!(matches!(
        slab.dec_refcount(old),
        Err(Error::StaleEpoch { .. })
    ));
    assert_eq!(slab.refcount(newer).unwrap(), 1);
}

#[test]
fn an_epoch_opened_held_survives_every_later_advance_until_released() {
    let slab = quiet();
    let held = slab.epoch_advance_held().unwrap();
    assert_eq!(slab.refcount(held).unwrap(), 1, "born with one reference");
    assert_eq!(slab.epoch_current(), held);
    for _ in 0..3 * EPOCH_COUNT {
        let e = slab.epoch_advance().unwrap();
        assert_ne!(e.index(), held.index());
    }
    assert_eq!(
        slab.epoch_state(held),
        Some(EpochState::Active),
        "never closed under us"
    );
    slab.dec_refcount(held).unwrap();
    slab.epoch_close(held).unwrap();
    let mut reused = false;
    for _ in 0..EPOCH_COUNT {
        reused |= slab.epoch_advance().unwrap().index() == held.index();
    }
    assert!(
        reused,
        "released and closed, it drains and its slot is reused"
    );
}
