//! Replicas: following a live log with `LogTail`, applying its commits with
//! `Mmsb::apply_replicated`, bootstrapping from a checkpoint, refusing bad frames, promotion.

use std::fs;
use std::path::Path;

use mmsb::tlog::{Durability, LogTail, RawFrame};
use mmsb::{Config, EdgeKind, Error, Lsn, Mmsb, PageId, ReplayTarget, State, map};

fn config(dir: &Path) -> Config {
    Config::new(dir).durability(Durability::Flush)
}

/// Splits frames into commits (each ends with a COMMIT frame).
fn commits(frames: &[RawFrame]) -> Vec<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for f in frames {
        cur.push(f.bytes.as_slice());
        if f.commit {
            out.push(std::mem::take(&mut cur));
        }
    }
    assert!(cur.is_empty(), "a poll returned part of a commit");
    out
}

/// Polls `tail` and applies everything to `replica`; returns the frames applied.
fn pump(tail: &mut LogTail, replica: &mut Mmsb) -> usize {
    let mut frames = Vec::new();
    tail.poll(&mut frames, usize::MAX).unwrap();
    for c in commits(&frames) {
        replica.apply_replicated(&c).unwrap();
    }
    frames.len()
}

/// A leader with a derived page: `b = upper(a)`.
fn leader(dir: &Path) -> (Mmsb, PageId, PageId) {
    let mut m = Mmsb::start(config(dir)).unwrap();
    let a = m.create_page(4096).unwrap();
    let b = m.create_page(4096).unwrap();
    m.add_dependency(a, b, EdgeKind::Data).unwrap();
    m.register_recompute(b, map(|c| c.to_ascii_uppercase()))
        .unwrap();
    (m, a, b)
}

#[test]
fn a_replica_fed_by_a_tail_holds_the_leaders_state_and_the_same_log_bytes() {
    let ld = tempfile::tempdir().unwrap();
    let rd = tempfile::tempdir().unwrap();
    let (mut m, a, b) = leader(ld.path());
    let mut tail = LogTail::open(ld.path(), Lsn(1)).unwrap();
    let mut r = Mmsb::start_replica(config(rd.path())).unwrap();
    assert!(r.is_replica());
    for i in 0..200usize {
        m.write_range(a, (i * 37) % 4000, format!("word{i} ").as_bytes())
            .unwrap();
        if i % 7 == 0 {
            m.batch(|m| {
                m.write_range(a, i, b"xyz")?;
                m.set_metadata(a, "k", Some(format!("{i}").as_bytes()))?;
                Ok(())
            })
            .unwrap();
        }
        if i % 50 == 0 {
            pump(&mut tail, &mut r);
        }
    }
    pump(&mut tail, &mut r);
    assert_eq!(tail.next_lsn(), Lsn(m.stats().last_lsn + 1));
    assert_eq!(r.state(), m.state(), "replica pages equal the leader's");
    assert_eq!(
        r.query_page(b).unwrap().bytes(),
        m.query_page(b).unwrap().bytes(),
        "derived page arrives as logged propagation deltas"
    );
    let rs = r.stats();
    assert_eq!(rs.deltas, m.stats().deltas);
    assert_eq!(rs.propagation_deltas, m.stats().propagation_deltas);
    // Byte-identical logs: every frame equal at every LSN.
    m.flush().unwrap();
    r.flush().unwrap();
    let lf: Vec<_> = mmsb::tlog::LogReader::open(ld.path())
        .unwrap()
        .frames()
        .unwrap()
        .map(|f| f.unwrap().frame)
        .collect();
    let rf: Vec<_> = mmsb::tlog::LogReader::open(rd.path())
        .unwrap()
        .frames()
        .unwrap()
        .map(|f| f.unwrap().frame)
        .collect();
    assert_eq!(lf, rf);
    // Time and epoch replay answer the same on both.
    let mid = lf[lf.len() / 2].timestamp_ns;
    assert_eq!(
        State::replay(rd.path(), ReplayTarget::Timestamp(mid)).unwrap(),
        State::replay(ld.path(), ReplayTarget::Timestamp(mid)).unwrap()
    );
    r.stop().unwrap();
    let r = Mmsb::start_replica(config(rd.path())).unwrap();
    assert_eq!(
        r.state(),
        m.state(),
        "a restarted replica restores the same state"
    );
}

#[test]
fn a_tail_never_returns_an_open_batch_and_returns_it_once_committed() {
    let ld = tempfile::tempdir().unwrap();
    let (mut m, a, _) = leader(ld.path());
    let mut tail = LogTail::open(ld.path(), Lsn::ZERO).unwrap();
    let mut got = Vec::new();
    tail.poll(&mut got, usize::MAX).unwrap();
    let committed = got.len();
    assert!(got.last().unwrap().commit);
    m.begin_batch().unwrap();
    m.write_range(a, 0, b"one").unwrap();
    m.write_range(a, 10, b"two").unwrap();
    m.flush().unwrap();
    assert_eq!(tail.poll(&mut got, usize::MAX).unwrap(), 0, "open batch");
    m.commit().unwrap();
    let n = tail.poll(&mut got, usize::MAX).unwrap();
    assert!(n >= 3, "the batch's frames and its commit frame: {n}");
    assert_eq!(got.len(), committed + n);
    assert!(got.last().unwrap().commit);
    assert_eq!(tail.poll(&mut got, usize::MAX).unwrap(), 0, "nothing twice");
}

#[test]
fn a_tail_follows_segment_rolls_and_a_writer_that_crashed_mid_batch() {
    let ld = tempfile::tempdir().unwrap();
    let rd = tempfile::tempdir().unwrap();
    let mut c = config(ld.path());
    c.segment_bytes = 4096;
    let mut m = Mmsb::start(c.clone()).unwrap();
    let a = m.create_page(1024).unwrap();
    let mut tail = LogTail::open(ld.path(), Lsn(1)).unwrap();
    let mut r = Mmsb::start_replica(config(rd.path())).unwrap();
    for i in 0..300usize {
        m.write_range(
            a,
            i % 1000,
            &[(i % 251) as u8 + 1; 20][..(1000 - i % 1000).min(20)],
        )
        .unwrap();
        if i % 13 == 0 {
            pump(&mut tail, &mut r);
        }
    }
    // A batch left open by a "crash": written to the file, never committed.
    m.begin_batch().unwrap();
    m.write_range(a, 0, b"lost").unwrap();
    m.flush().unwrap();
    pump(&mut tail, &mut r);
    drop(m);
    let mut m = Mmsb::start(c).unwrap();
    assert_ne!(&m.query_page(a).unwrap().bytes()[..4], b"lost");
    m.write_range(a, 0, b"kept").unwrap();
    pump(&mut tail, &mut r);
    assert!(
        mmsb::tlog::list_segments(ld.path()).unwrap().len() > 3,
        "the workload rolled segments"
    );
    assert_eq!(r.state(), m.state());
}

#[test]
fn a_tail_behind_a_pruned_log_says_pruned_and_a_replica_bootstraps_from_the_checkpoint() {
    let ld = tempfile::tempdir().unwrap();
    let base = tempfile::tempdir().unwrap();
    let rd = base.path().join("replica");
    let mut c = config(ld.path());
    c.segment_bytes = 4096;
    c.prune_after_checkpoint = true;
    let mut m = Mmsb::start(c).unwrap();
    let a = m.create_page(2048).unwrap();
    for i in 0..400usize {
        m.write_range(a, i % 2000, format!("{i:04}").as_bytes())
            .unwrap();
    }
    let info = m.checkpoint().unwrap();
    for i in 0..50usize {
        m.write_range(a, i * 3, b"after").unwrap();
    }
    let mut tail = LogTail::open(ld.path(), Lsn(1)).unwrap();
    let err = tail.poll(&mut Vec::new(), usize::MAX).unwrap_err();
    assert!(matches!(err, Error::Pruned { wanted: Lsn(1), .. }), "{err}");
    let lsn = mmsb::replica::bootstrap(&rd, &fs::read(&info.path).unwrap()).unwrap();
    assert_eq!(lsn, info.lsn);
    let mut r = Mmsb::start_replica(config(&rd)).unwrap();
    assert_eq!(r.state().last_lsn(), info.lsn);
    let mut tail = LogTail::open(ld.path(), lsn.next()).unwrap();
    assert!(pump(&mut tail, &mut r) >= 50);
    assert_eq!(r.state(), m.state());
    r.stop().unwrap();
    assert_eq!(State::restore(&rd).unwrap(), *m.state());
    assert!(
        mmsb::replica::bootstrap(&rd, &fs::read(&info.path).unwrap()).is_err(),
        "never bootstraps over an existing replica"
    );
    let mut junk = fs::read(&info.path).unwrap();
    let n = junk.len();
    junk[n / 2] ^= 1;
    let other = base.path().join("other");
    assert!(mmsb::replica::bootstrap(&other, &junk).is_err());
    assert!(!other.exists(), "a failed bootstrap leaves nothing");
    assert_eq!(
        fs::read_dir(base.path()).unwrap().count(),
        1,
        "and no temporary directory"
    );
}

#[test]
fn a_bad_replicated_frame_is_refused_by_lsn_and_nothing_of_its_commit_is_logged() {
    let ld = tempfile::tempdir().unwrap();
    let rd = tempfile::tempdir().unwrap();
    let (mut m, a, _) = leader(ld.path());
    let mut tail = LogTail::open(ld.path(), Lsn(1)).unwrap();
    let mut r = Mmsb::start_replica(config(rd.path())).unwrap();
    pump(&mut tail, &mut r);
    let before = r.state().clone();
    m.write_range(a, 0, b"hello").unwrap(); // a delta, its propagation and a commit frame
    let mut frames = Vec::new();
    tail.poll(&mut frames, usize::MAX).unwrap();
    assert!(frames.len() >= 2);
    let next = before.last_lsn().next();

    // A flipped byte in the middle frame of the commit: refused by CRC, named by LSN.
    let mut bad: Vec<Vec<u8>> = frames.iter().map(|f| f.bytes.clone()).collect();
    let k = bad.len() / 2;
    let len = bad[k].len();
    bad[k][len - 1] ^= 0x40;
    let refs: Vec<&[u8]> = bad.iter().map(Vec::as_slice).collect();
    match r.apply_replicated(&refs) {
        Err(Error::ReplicaFrame { lsn, .. }) => assert_eq!(lsn, Lsn(next.0 + k as u64)),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.state(), &before, "nothing applied");

    // Missing COMMIT frame, and a commit that starts at the wrong LSN.
    let good: Vec<&[u8]> = frames.iter().map(|f| f.bytes.as_slice()).collect();
    assert!(matches!(
        r.apply_replicated(&good[..good.len() - 1]),
        Err(Error::ReplicaFrame { .. })
    ));
    assert!(matches!(
        r.apply_replicated(&good[1..]),
        Err(Error::ReplicaFrame { lsn, .. }) if lsn == next
    ));
    assert_eq!(r.state(), &before);
    r.apply_replicated(&good).unwrap();
    assert_eq!(r.state(), m.state(), "the good commit still applies");

    r.stop().unwrap();
    let mut r = Mmsb::start_replica(config(rd.path())).unwrap();
    assert_eq!(r.state(), m.state(), "the refused attempts logged nothing");
    // Replaying the previous commit's frames now has the right shape but the wrong LSNs.
    let stale: Vec<&[u8]> = frames.iter().map(|f| f.bytes.as_slice()).collect();
    assert!(matches!(
        r.apply_replicated(&stale),
        Err(Error::ReplicaFrame { lsn, .. }) if lsn == r.state().last_lsn().next()
    ));
}

#[test]
fn an_epoch_mismatch_inside_a_commit_poisons_the_replica_and_a_restart_restores_before_it() {
    let ld = tempfile::tempdir().unwrap();
    let rd = tempfile::tempdir().unwrap();
    let mut m = Mmsb::start(config(ld.path())).unwrap();
    let a = m.create_page(64).unwrap();
    let mut tail = LogTail::open(ld.path(), Lsn(1)).unwrap();
    let mut r = Mmsb::start_replica(config(rd.path())).unwrap();
    pump(&mut tail, &mut r);
    let before = r.state().clone();
    // Two deltas in one batch; the replica gets the second one twice (a rogue commit whose
    // frames all decode, with consecutive LSNs, but whose third frame repeats an epoch).
    m.batch(|m| {
        m.write_range(a, 0, b"ab")?;
        m.write_range(a, 4, b"cd")?;
        Ok(())
    })
    .unwrap();
    let mut frames = Vec::new();
    tail.poll(&mut frames, usize::MAX).unwrap();
    assert_eq!(frames.len(), 3, "two deltas and a commit frame");
    // Re-encode the second delta with the commit's LSN and flag: same epoch as the second.
    let f1 = mmsb::frame::decode(&frames[1].bytes).unwrap().0;
    let mut dup = f1.clone();
    dup.lsn = frames[2].lsn;
    dup.commit = true;
    let mut enc = Vec::new();
    dup.encode(&mut enc);
    let rogue: Vec<&[u8]> = vec![&frames[0].bytes, &frames[1].bytes, &enc];
    match r.apply_replicated(&rogue) {
        Err(Error::ReplicaFrame { lsn, reason }) => {
            assert_eq!(lsn, frames[2].lsn);
            assert!(reason.contains("epoch"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        r.apply_replicated(&[&frames[0].bytes]),
        Err(Error::Poisoned(_))
    ));
    drop(r);
    let r = Mmsb::start_replica(config(rd.path())).unwrap();
    assert_eq!(
        r.state(),
        &before,
        "the log holds nothing of the refused commit"
    );
}

#[test]
fn a_replica_refuses_writes_and_writers_until_promoted_then_continues_the_lsns() {
    let ld = tempfile::tempdir().unwrap();
    let rd = tempfile::tempdir().unwrap();
    let (mut m, a, _) = leader(ld.path());
    m.write_range(a, 0, b"x").unwrap();
    let mut tail = LogTail::open(ld.path(), Lsn(1)).unwrap();
    let mut r = Mmsb::start_replica(config(rd.path())).unwrap();
    pump(&mut tail, &mut r);
    assert!(matches!(
        r.write_range(a, 0, b"y"),
        Err(Error::ReadOnly { .. })
    ));
    assert!(matches!(r.create_page(8), Err(Error::ReadOnly { .. })));
    assert!(matches!(r.begin_batch(), Err(Error::ReadOnly { .. })));
    assert!(matches!(
        r.set_metadata(a, "k", None),
        Err(Error::ReadOnly { .. })
    ));
    r.stop().unwrap();
    let leader_pages = m.state().len();
    m.stop().unwrap();
    assert!(matches!(
        Mmsb::start(config(rd.path())),
        Err(Error::IsReplica { .. })
    ));
    assert!(
        matches!(
            Mmsb::start_replica(config(ld.path())),
            Err(Error::NotALog { .. })
        ),
        "a leader's log is not adopted as a replica"
    );
    let mut r = Mmsb::start_replica(config(rd.path())).unwrap();
    let last = r.state().last_lsn();
    r.promote().unwrap();
    assert!(!r.is_replica());
    let lsn = r.create_page(16).unwrap();
    assert_eq!(r.state().last_lsn(), last.next(), "{lsn:?}");
    r.stop().unwrap();
    let r = Mmsb::start(config(rd.path())).unwrap();
    assert_eq!(r.state().len(), leader_pages + 1);
    assert!(!rd.path().join(mmsb::replica::MARKER).exists());
}

#[test]
fn a_tail_refuses_a_complete_corrupt_frame_but_waits_for_a_frame_being_written() {
    let ld = tempfile::tempdir().unwrap();
    let mut m = Mmsb::start(config(ld.path())).unwrap();
    let a = m.create_page(64).unwrap();
    m.write_range(a, 0, b"abc").unwrap();
    m.stop().unwrap();
    let seg = mmsb::tlog::list_segments(ld.path()).unwrap()[0].1.clone();
    let good = fs::read(&seg).unwrap();
    // Half of a frame appended by a writer still writing: nothing new, no error.
    let (f, _) = mmsb::frame::decode(&good[mmsb::tlog::SEGMENT_HEADER_LEN..]).unwrap();
    let mut next = f.clone();
    next.lsn = Lsn(3);
    let mut enc = Vec::new();
    next.encode(&mut enc);
    let mut partial = good.clone();
    partial.extend_from_slice(&enc[..enc.len() / 2]);
    fs::write(&seg, &partial).unwrap();
    let mut tail = LogTail::open(ld.path(), Lsn(1)).unwrap();
    let mut got = Vec::new();
    assert_eq!(tail.poll(&mut got, usize::MAX).unwrap(), 2);
    assert_eq!(tail.poll(&mut got, usize::MAX).unwrap(), 0);
    // The same frame complete but with a flipped byte: damage, refused.
    let mut bad = good.clone();
    let mut e2 = enc.clone();
    let n = e2.len();
    e2[n - 1] ^= 1;
    bad.extend_from_slice(&e2);
    fs::write(&seg, &bad).unwrap();
    assert!(matches!(
        tail.poll(&mut got, usize::MAX),
        Err(Error::CorruptFrame { .. })
    ));
    // Whole and sound: returned.
    let mut ok = good;
    ok.extend_from_slice(&enc);
    fs::write(&seg, &ok).unwrap();
    assert_eq!(tail.poll(&mut got, usize::MAX).unwrap(), 1);
    assert_eq!(got[2].lsn, Lsn(3));
}

#[test]
fn a_replica_just_built_from_a_checkpoint_verifies_clean_though_its_log_has_no_frame_yet() {
    let ld = tempfile::tempdir().unwrap();
    let base = tempfile::tempdir().unwrap();
    let rd = base.path().join("replica");
    let mut m = Mmsb::start(config(ld.path())).unwrap();
    let a = m.create_page(64).unwrap();
    m.write_range(a, 0, b"before").unwrap();
    let info = m.checkpoint().unwrap();
    m.stop().unwrap();
    mmsb::replica::bootstrap(&rd, &fs::read(&info.path).unwrap()).unwrap();
    let r = mmsb::verify_dir(&rd).unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(r.restore_from, Some(info.lsn));
}
