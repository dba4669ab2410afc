//! The live bus: write-ahead logging, propagation, batches, events, restart and replay.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mmsb::tlog::Durability;
use mmsb::{
    Config, EdgeKind, Error, Event, EventKind, Lsn, Mmsb, PageId, PropagationMode, ReplayTarget,
    State, diff, map, passthrough,
};

fn bus(dir: &tempfile::TempDir) -> Mmsb {
    Mmsb::start(Config::new(dir.path()).durability(Durability::Flush)).unwrap()
}

#[test]
fn writes_are_logged_and_replay_equals_live() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = bus(&dir);
    let a = m.create_page(1024).unwrap();
    let b = m.create_page(100).unwrap();
    assert_eq!(m.write_range(a, 10, b"hello").unwrap(), Some(Lsn(3)));
    assert_eq!(
        m.write_range(a, 10, b"hello").unwrap(),
        None,
        "unchanged bytes log nothing"
    );
    assert_eq!(m.update_page(b, &[7u8; 100]).unwrap(), Some(Lsn(4)));
    assert_eq!(m.update_page(b, &[7u8; 100]).unwrap(), None);
    assert_eq!(m.query_page(a).unwrap().epoch(), 1);
    assert_eq!(m.query_page(b).unwrap().epoch(), 1);
    assert_eq!(&m.query_page(a).unwrap().bytes()[8..17], b"\0\0hello\0\0");
    m.verify_consistency().unwrap();
    let replayed = m.replay_to(ReplayTarget::End).unwrap();
    assert_eq!(&replayed, m.state());
    assert!(matches!(
        m.update_page(b, &[0; 3]),
        Err(Error::SizeMismatch {
            expected: 100,
            found: 3,
            ..
        })
    ));
    assert!(matches!(
        m.write_range(b, 98, &[1, 2, 3]),
        Err(Error::OutOfBounds {
            end: 101,
            size: 100,
            ..
        })
    ));
    assert!(matches!(
        m.write_range(PageId(99), 0, &[1]),
        Err(Error::NoSuchPage(PageId(99)))
    ));
    assert!(matches!(
        m.create_page(0),
        Err(Error::InvalidPageSize { .. })
    ));
    m.stop().unwrap();
}

#[test]
fn restart_restores_state_and_lsns_continue() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = bus(&dir);
    let a = m.create_page(64).unwrap();
    for i in 0..50u8 {
        m.write_range(a, usize::from(i), &[i + 1]).unwrap();
    }
    let before = m.state().clone();
    m.stop().unwrap();
    let mut m = bus(&dir);
    assert_eq!(m.state(), &before);
    assert_eq!(m.write_range(a, 63, &[9]).unwrap(), Some(Lsn(52)));
    assert_eq!(m.query_page(a).unwrap().epoch(), 51);
    let b = m.create_page(8).unwrap();
    assert_eq!(b, PageId(2), "page ids continue after restart");
}

#[test]
fn second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _m = bus(&dir);
    // The default: waits for the lock (1 s), then refuses.
    match Mmsb::start(Config::new(dir.path())) {
        Err(Error::Locked { waited, .. }) => {
            assert!(waited >= mmsb::tlog::DEFAULT_LOCK_TIMEOUT, "{waited:?}");
        }
        other => panic!("{other:?}"),
    }
    // `Config::lock_timeout` reaches the log: zero refuses at once.
    match Mmsb::start(Config::new(dir.path()).lock_timeout(Duration::ZERO)) {
        Err(Error::Locked { waited, .. }) => {
            assert!(waited < mmsb::tlog::DEFAULT_LOCK_TIMEOUT / 2, "{waited:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn cycles_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = bus(&dir);
    let p: Vec<PageId> = (0..4).map(|_| m.create_page(8).unwrap()).collect();
    m.add_dependency(p[0], p[1], EdgeKind::Data).unwrap();
    m.add_dependency(p[1], p[2], EdgeKind::Data).unwrap();
    m.add_dependency(p[2], p[3], EdgeKind::Control).unwrap();
    assert!(
        matches!(m.add_dependency(p[3], p[0], EdgeKind::Data), Err(Error::Cycle { parent, child }) if parent == p[3] && child == p[0])
    );
    assert!(matches!(
        m.add_dependency(p[1], p[1], EdgeKind::Data),
        Err(Error::Cycle { .. })
    ));
    assert!(matches!(
        m.add_dependency(p[0], PageId(77), EdgeKind::Data),
        Err(Error::NoSuchPage(PageId(77)))
    ));
    assert_eq!(m.graph().edge_count(), 3);
    assert_eq!(m.stats().graph_depth, 3);
}

/// A -> B, A -> C, (B, C) -> D. D must be recomputed once per commit and always see B and C
/// computed from the same value of A.
#[test]
fn diamond_recomputes_the_join_once_and_never_sees_a_stale_parent() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = bus(&dir);
    let a = m.create_page(8).unwrap();
    let b = m.create_page(8).unwrap();
    let c = m.create_page(8).unwrap();
    let d = m.create_page(8).unwrap();
    // Edges added in an order that forces the maintained topological order to change.
    m.add_dependency(b, d, EdgeKind::Data).unwrap();
    m.add_dependency(c, d, EdgeKind::Data).unwrap();
    m.add_dependency(a, c, EdgeKind::Data).unwrap();
    m.add_dependency(a, b, EdgeKind::Data).unwrap();
    m.register_recompute(b, |p: &[&[u8]], out: &mut [u8]| {
        out[0] = p[0][0];
        out[1] = 0xB;
    })
    .unwrap();
    m.register_recompute(c, |p: &[&[u8]], out: &mut [u8]| {
        out[0] = p[0][0];
        out[1] = 0xC;
    })
    .unwrap();
    let d_runs = Arc::new(AtomicUsize::new(0));
    let glitches = Arc::new(AtomicUsize::new(0));
    let (runs, bad) = (d_runs.clone(), glitches.clone());
    m.register_recompute(d, move |p: &[&[u8]], out: &mut [u8]| {
        runs.fetch_add(1, Ordering::SeqCst);
        if p[0][0] != p[1][0] {
            bad.fetch_add(1, Ordering::SeqCst);
        }
        out[0] = p[0][0];
        out[1] = p[1][0];
    })
    .unwrap();
    for v in 1..=20u8 {
        m.write_range(a, 0, &[v]).unwrap();
        assert_eq!(
            d_runs.load(Ordering::SeqCst),
            usize::from(v),
            "D recomputed once per commit"
        );
        assert_eq!(&m.query_page(d).unwrap().bytes()[..2], &[v, v]);
    }
    assert_eq!(
        glitches.load(Ordering::SeqCst),
        0,
        "D saw B and C from different values of A"
    );
    assert!(matches!(m.write_range(d, 0, &[1]), Err(Error::Derived(p)) if p == d));
    // Propagation deltas are logged: replay reproduces D without running recompute functions.
    let replayed = m.replay_to(ReplayTarget::End).unwrap();
    assert_eq!(
        replayed.page(d).unwrap().bytes(),
        m.query_page(d).unwrap().bytes()
    );
    let st = m.stats();
    assert_eq!(st.propagation_deltas, 60);
    assert_eq!(st.waves, 20);
}

#[test]
fn early_cutoff_stops_the_wave() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = bus(&dir);
    let a = m.create_page(4).unwrap();
    let hi = m.create_page(4).unwrap();
    let leaf = m.create_page(4).unwrap();
    m.add_dependency(a, hi, EdgeKind::Data).unwrap();
    m.add_dependency(hi, leaf, EdgeKind::Data).unwrap();
    m.register_recompute(hi, map(|b| b & 0xF0)).unwrap();
    let leaf_runs = Arc::new(AtomicUsize::new(0));
    let r = leaf_runs.clone();
    m.register_recompute(leaf, move |p: &[&[u8]], out: &mut [u8]| {
        r.fetch_add(1, Ordering::SeqCst);
        out.copy_from_slice(p[0]);
    })
    .unwrap();
    m.write_range(a, 0, &[0x11]).unwrap();
    assert_eq!(leaf_runs.load(Ordering::SeqCst), 1);
    m.write_range(a, 0, &[0x12]).unwrap(); // hi stays 0x10: cutoff
    assert_eq!(
        leaf_runs.load(Ordering::SeqCst),
        1,
        "leaf must not run when its parent did not change"
    );
    assert_eq!(m.stats().cutoffs, 1);
    assert_eq!(m.query_page(leaf).unwrap().bytes()[0], 0x10);
}

#[test]
fn control_edges_mark_stale_without_recomputing() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = bus(&dir);
    let a = m.create_page(4).unwrap();
    let c = m.create_page(4).unwrap();
    m.add_dependency(a, c, EdgeKind::Control).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    m.subscribe(&[EventKind::PageStale], move |e| {
        s.lock().unwrap().push(e.clone())
    });
    m.write_range(a, 0, &[1]).unwrap();
    assert!(m.query_page(c).unwrap().is_stale());
    assert_eq!(m.query_page(c).unwrap().bytes(), &[0; 4]);
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        &[Event::PageStale { page: c }]
    );
    m.write_range(c, 0, &[5]).unwrap();
    assert!(
        !m.query_page(c).unwrap().is_stale(),
        "writing a stale page refreshes it"
    );
}

#[test]
fn deferred_mode_runs_one_wave_per_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut m =
        Mmsb::start(Config::new(dir.path()).propagation(PropagationMode::Deferred)).unwrap();
    let a = m.create_page(16).unwrap();
    let b = m.create_page(16).unwrap();
    let sum = m.create_page(8).unwrap();
    m.add_dependency(a, sum, EdgeKind::Data).unwrap();
    m.add_dependency(b, sum, EdgeKind::Data).unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    m.register_recompute(sum, move |p: &[&[u8]], out: &mut [u8]| {
        r.fetch_add(1, Ordering::SeqCst);
        let s: u64 = p.iter().flat_map(|x| x.iter()).map(|&x| u64::from(x)).sum();
        out.copy_from_slice(&s.to_le_bytes());
    })
    .unwrap();
    for i in 0..16 {
        m.write_range(a, i, &[1]).unwrap();
        m.write_range(b, i, &[2]).unwrap();
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "deferred: nothing recomputed before commit"
    );
    let c = m.commit().unwrap();
    assert_eq!((c.deltas, c.propagated), (32, 1));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(m.query_page(sum).unwrap().bytes(), &48u64.to_le_bytes());
    m.stop().unwrap();
    let m = Mmsb::start(Config::new(dir.path())).unwrap();
    assert_eq!(m.query_page(sum).unwrap().bytes(), &48u64.to_le_bytes());
}

#[test]
fn an_uncommitted_batch_is_dropped_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = bus(&dir);
    let a = m.create_page(8).unwrap();
    m.write_range(a, 0, &[1]).unwrap();
    m.begin_batch().unwrap();
    m.write_range(a, 1, &[2]).unwrap();
    m.write_range(a, 2, &[3]).unwrap();
    assert_eq!(
        &m.query_page(a).unwrap().bytes()[..3],
        &[1, 2, 3],
        "reads inside a batch see its writes"
    );
    m.flush().unwrap(); // the frames reach the file, but no commit frame does
    drop(m);
    let (m, report) = Mmsb::start_reporting(Config::new(dir.path())).unwrap();
    assert_eq!(&m.query_page(a).unwrap().bytes()[..3], &[1, 0, 0]);
    let t = report
        .log
        .truncated
        .expect("the uncommitted tail is reported");
    assert_eq!(t.frames_dropped, 2);
}

#[test]
fn checkpoint_restore_and_replay_targets() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = bus(&dir);
    let a = m.create_page(256).unwrap();
    let b = m.create_page(256).unwrap();
    m.add_dependency(a, b, EdgeKind::Data).unwrap();
    m.register_recompute(b, passthrough()).unwrap();
    for i in 0..10u8 {
        m.write_range(a, usize::from(i) * 3, &[i; 5]).unwrap();
    }
    let mid = m.state().clone();
    let info = m.checkpoint().unwrap();
    assert_eq!(info.lsn, mid.last_lsn());
    for i in 0..10u8 {
        m.write_range(a, 100 + usize::from(i), &[0xEE]).unwrap();
    }
    let end = m.state().clone();
    assert_eq!(
        m.replay_to(ReplayTarget::Lsn(info.lsn)).unwrap().hashes(),
        mid.hashes()
    );
    let at_epoch = m.replay_to(ReplayTarget::PageEpoch(a, 3)).unwrap();
    assert_eq!(at_epoch.page(a).unwrap().epoch(), 3);
    assert_eq!(
        &at_epoch.page(a).unwrap().bytes()[..9],
        &[0, 0, 0, 1, 1, 1, 2, 2, 2]
    );
    assert!(matches!(
        m.replay_to(ReplayTarget::Lsn(Lsn(10_000))),
        Err(Error::TargetBeyondLog { .. })
    ));
    let ts = m.replay_to(ReplayTarget::Timestamp(u64::MAX)).unwrap();
    assert_eq!(ts.hashes(), end.hashes());
    m.verify_consistency().unwrap();
    m.stop().unwrap();
    // Restore = checkpoint + suffix; equal to the live state at stop.
    assert_eq!(State::restore(dir.path()).unwrap().hashes(), end.hashes());
    let (m, report) = Mmsb::start_reporting(Config::new(dir.path())).unwrap();
    assert_eq!(report.checkpoint_lsn, Some(info.lsn));
    assert_eq!(m.state().hashes(), end.hashes());
    // diff(mid, end) applied to mid gives end.
    let mut x = mid.clone();
    for d in diff(&mid, &end).unwrap() {
        x.apply(&d).unwrap();
    }
    assert_eq!(x.page(a).unwrap().bytes(), end.page(a).unwrap().bytes());
    assert_eq!(x.page(b).unwrap().bytes(), end.page(b).unwrap().bytes());
}

#[test]
fn events_are_typed_and_unsubscribable() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = bus(&dir);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let id = m.subscribe(
        &[
            EventKind::PageCreated,
            EventKind::DeltaApplied,
            EventKind::PageChanged,
        ],
        move |e| {
            s.lock().unwrap().push(e.clone());
        },
    );
    let a = m.create_page(8).unwrap();
    m.write_range(a, 0, &[1, 2]).unwrap();
    assert!(m.unsubscribe(id));
    m.write_range(a, 0, &[3]).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(matches!(seen[0], Event::PageCreated { page, size: 8 } if page == a));
    assert!(matches!(seen[1], Event::DeltaApplied { page, epoch: 1, bytes: 2, .. } if page == a));
    assert!(matches!(seen[2], Event::PageChanged { page, epoch: 1 } if page == a));
}

#[test]
fn metadata_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = bus(&dir);
    let a = m.create_page(8).unwrap();
    m.set_metadata(a, "name", Some(b"doc")).unwrap();
    m.set_metadata(a, "tmp", Some(b"x")).unwrap();
    m.set_metadata(a, "tmp", None).unwrap();
    m.stop().unwrap();
    let m = bus(&dir);
    let md = m.query_page(a).unwrap().metadata();
    assert_eq!(md.len(), 1);
    assert_eq!(md["name"], b"doc");
}
