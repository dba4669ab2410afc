//! Batch slots: `Producer::write_batch` claims n consecutive slots all or nothing and commits
//! them with one index advance; `Consumer::read_batch` takes the committed run. In-process; the
//! SIGKILL storm with batches is in `crash.rs`.

mod support;

use std::time::Duration;

use datahub::{
    Admin, ChecksumPolicy, Config, Consumer, Error, Expectations, Policy, Producer, SlotOrder,
    WaitCause,
};
use support::BlockGuard;

const T: Duration = Duration::from_secs(5);
const SHORT: Duration = Duration::from_millis(50);

fn record(seq: u64) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[..8].copy_from_slice(&seq.to_le_bytes());
    b[63] = (seq as u8).wrapping_mul(7);
    b
}

fn config(order: SlotOrder, slots: u32) -> Config {
    Config::new(Policy::Sequential)
        .slot_size(64)
        .slot_count(slots)
        .slot_order(order)
}

fn send_batch(p: &mut Producer, first: u64, n: usize) -> std::ops::Range<u64> {
    let recs: Vec<[u8; 64]> = (0..n as u64).map(|k| record(first + k)).collect();
    let msgs: Vec<&[u8]> = recs.iter().map(|r| &r[..]).collect();
    p.send_batch(&msgs, T).unwrap()
}

#[test]
fn a_batch_is_read_whole_in_order_in_both_slot_orders() {
    for order in [SlotOrder::Ring, SlotOrder::Recent] {
        let g = BlockGuard::new("batch-rt");
        let mut p = Producer::create(&g.name, config(order, 64)).unwrap();
        let mut c = Consumer::attach(&g.name, Expectations::new()).unwrap();
        let mut next = 0u64;
        // Batches of 32 across several laps of the ring.
        for _ in 0..10 {
            assert_eq!(send_batch(&mut p, next, 32), next..next + 32);
            let b = c.read_batch(32, T).unwrap();
            assert_eq!(b.len(), 32, "{order:?}");
            assert_eq!(b.first_seq(), next);
            for (k, (seq, m)) in b.iter().enumerate() {
                assert_eq!(seq, next + k as u64);
                assert_eq!(m, &record(seq)[..], "{order:?}: message {seq}");
            }
            b.release().unwrap();
            next += 32;
        }
        assert_eq!(c.position(), next);
        let m = p.metrics();
        assert_eq!(m.slots_written, next);
        assert_eq!(m.slots_read, next);
    }
}

#[test]
fn readers_see_nothing_of_a_batch_until_it_is_committed() {
    let g = BlockGuard::new("batch-atomic");
    let mut p = Producer::create(&g.name, config(SlotOrder::Ring, 16)).unwrap();
    let mut c = Consumer::attach(&g.name, Expectations::new()).unwrap();
    let mut b = p.write_batch(8, T).unwrap();
    for k in 0..8 {
        b.slot_mut(k)[..64].copy_from_slice(&record(k as u64));
        b.set_len(k, 64);
    }
    assert!(
        matches!(c.try_read(), Ok(None)),
        "a claimed batch is invisible"
    );
    assert_eq!(b.commit().unwrap(), 0..8);
    let r = c.read_batch(100, T).unwrap();
    assert_eq!(r.len(), 8, "the whole batch appears at once");
}

#[test]
fn read_batch_takes_only_what_is_committed_and_at_most_max() {
    let g = BlockGuard::new("batch-run");
    let mut p = Producer::create(&g.name, config(SlotOrder::Ring, 16)).unwrap();
    let mut c = Consumer::attach(&g.name, Expectations::new()).unwrap();
    for seq in 0..5 {
        p.send(&record(seq), T).unwrap();
    }
    let b = c.read_batch(3, T).unwrap();
    assert_eq!((b.first_seq(), b.len()), (0, 3));
    b.release().unwrap();
    let b = c.read_batch(10, T).unwrap();
    assert_eq!((b.first_seq(), b.len()), (3, 2));
    b.release().unwrap();
    match c.read_batch(10, SHORT) {
        Err(Error::Timeout {
            cause: WaitCause::NoData,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // A single read after batches goes on in order.
    p.send(&record(5), T).unwrap();
    assert_eq!(c.read(T).unwrap().seq(), 5);
}

#[test]
fn a_batch_that_does_not_fit_times_out_and_leaves_every_message_intact() {
    for order in [SlotOrder::Ring, SlotOrder::Recent] {
        let g = BlockGuard::new("batch-full");
        let mut p = Producer::create(&g.name, config(order, 8)).unwrap();
        let mut c = Consumer::attach(&g.name, Expectations::new()).unwrap();
        for seq in 0..5 {
            p.send(&record(seq), T).unwrap();
        }
        // 3 slots free: a batch of 4 does not fit and claims nothing.
        match p.write_batch(4, SHORT) {
            Err(Error::Timeout {
                cause: WaitCause::RingFull,
                ..
            }) => {}
            other => panic!("{order:?}: {other:?}"),
        }
        assert_eq!(p.next_seq(), 5);
        assert_eq!(send_batch(&mut p, 5, 3), 5..8);
        for seq in 0..8 {
            let r = c.read(T).unwrap();
            assert_eq!(r.seq(), seq);
            assert_eq!(&r[..], &record(seq)[..], "{order:?}");
        }
    }
}

#[test]
fn a_batch_waiting_for_a_reader_inside_one_of_its_slots_times_out_without_touching_it() {
    let g = BlockGuard::new("batch-held");
    let mut p = Producer::create(
        &g.name,
        Config::new(Policy::Latest).slot_size(64).slot_count(4),
    )
    .unwrap();
    let mut c = Consumer::attach(&g.name, Expectations::new()).unwrap();
    for seq in 0..4 {
        p.send(&record(seq), T).unwrap();
    }
    // The reader holds message 3 (slot 3); a batch of 4 needs every slot.
    let held = c.read(T).unwrap();
    assert_eq!(held.seq(), 3);
    match p.write_batch(4, SHORT) {
        Err(Error::Timeout {
            cause: WaitCause::ReadersActive,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(
        &held[..],
        &record(3)[..],
        "the held message was not touched"
    );
    held.release().unwrap();
    // The other slots were reopened with their messages too.
    c.seek_to(1).unwrap();
    assert_eq!(c.read(T).unwrap().seq(), 1);
    assert_eq!(send_batch(&mut p, 4, 4), 4..8);
}

#[test]
fn batch_sizes_outside_one_to_slot_count_are_refused() {
    let g = BlockGuard::new("batch-range");
    let mut p = Producer::create(&g.name, config(SlotOrder::Ring, 8)).unwrap();
    let mut c = Consumer::attach(&g.name, Expectations::new()).unwrap();
    for n in [0, 9] {
        match p.write_batch(n, T) {
            Err(Error::OutOfRange {
                what: "batch size",
                index,
                limit: 9,
            }) => assert_eq!(index, n),
            other => panic!("{n}: {other:?}"),
        }
    }
    assert!(matches!(
        c.read_batch(0, T),
        Err(Error::OutOfRange { index: 0, .. })
    ));
}

#[test]
fn a_dropped_or_oversized_batch_is_aborted_and_its_sequence_numbers_reused() {
    let g = BlockGuard::new("batch-abort");
    let mut p = Producer::create(&g.name, config(SlotOrder::Recent, 8)).unwrap();
    let mut c = Consumer::attach(&g.name, Expectations::new()).unwrap();
    drop(p.write_batch(4, T).unwrap());
    assert_eq!(p.next_seq(), 0);
    let mut b = p.write_batch(2, T).unwrap();
    b.set_len(1, 65);
    assert!(matches!(
        b.commit(),
        Err(Error::PayloadTooLarge {
            len: 65,
            slot_size: 64
        })
    ));
    assert_eq!(p.next_seq(), 0);
    assert!(matches!(c.try_read(), Ok(None)));
    assert_eq!(p.metrics().aborted_writes, 6);
    assert_eq!(send_batch(&mut p, 0, 8), 0..8, "every slot is free again");
    let r = c.read_batch(8, T).unwrap();
    assert_eq!((r.first_seq(), r.len()), (0, 8));
}

#[test]
fn sequential_sync_batches_reach_every_consumer_and_wait_for_the_slowest() {
    let g = BlockGuard::new("batch-sync");
    let cfg = Config::new(Policy::SequentialSync)
        .slot_size(64)
        .slot_count(8)
        .max_consumers(2);
    let mut p = Producer::create(&g.name, cfg).unwrap();
    let mut a = Consumer::attach(&g.name, Expectations::new()).unwrap();
    let mut b = Consumer::attach(&g.name, Expectations::new()).unwrap();
    send_batch(&mut p, 0, 8);
    a.read_batch(8, T).unwrap().release().unwrap();
    // b has read nothing: no room for even one more.
    assert!(matches!(
        p.write_batch(1, SHORT),
        Err(Error::Timeout { .. })
    ));
    let r = b.read_batch(5, T).unwrap();
    assert_eq!(r.len(), 5);
    r.release().unwrap();
    assert_eq!(send_batch(&mut p, 8, 5), 8..13);
    let r = b.read_batch(8, T).unwrap();
    assert_eq!((r.first_seq(), r.len()), (5, 8));
}

#[test]
fn enforced_checksums_a_corrupted_message_ends_the_batch_before_it_and_is_reported_next() {
    use std::io::{Seek, SeekFrom, Write};
    let g = BlockGuard::new("batch-sum");
    let cfg = config(SlotOrder::Ring, 8).checksum(ChecksumPolicy::Enforced);
    let mut p = Producer::create(&g.name, cfg).unwrap();
    let mut c = Consumer::attach(&g.name, Expectations::new()).unwrap();
    send_batch(&mut p, 0, 6);
    // Flip a byte of message 3's payload (ring order: slot 3).
    let ring = Admin::open(&g.name).unwrap().info().regions.ring_offset;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("{}/{}", datahub::shm_dir().display(), g.name))
        .unwrap();
    f.seek(SeekFrom::Start(ring + 3 * 64 + 10)).unwrap();
    f.write_all(&[0xff]).unwrap();
    let r = c.read_batch(8, T).unwrap();
    assert_eq!(
        (r.first_seq(), r.len()),
        (0, 3),
        "stops before the bad message"
    );
    r.release().unwrap();
    match c.read_batch(8, T) {
        Err(Error::ChecksumMismatch { seq: 3, .. }) => {}
        other => panic!("{other:?}"),
    }
    let r = c.read_batch(8, T).unwrap();
    assert_eq!((r.first_seq(), r.len()), (4, 2), "goes on after it");
}

#[test]
fn latest_read_batch_returns_the_newest_message_alone() {
    let g = BlockGuard::new("batch-latest");
    let mut p = Producer::create(
        &g.name,
        Config::new(Policy::Latest).slot_size(64).slot_count(8),
    )
    .unwrap();
    let mut c = Consumer::attach(&g.name, Expectations::new()).unwrap();
    send_batch(&mut p, 0, 5);
    let r = c.read_batch(8, T).unwrap();
    assert_eq!((r.first_seq(), r.len()), (4, 1));
}

/// Rewrites a little-endian word of the block's file (a dead producer's leftovers, made by
/// hand: the window between publishing a batch and moving the commit index is too short for
/// the SIGKILL storm to hit).
fn poke(name: &str, at: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("{}/{}", datahub::shm_dir().display(), name))
        .unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(bytes).unwrap();
}

/// Header byte offsets (docs/datahub-format.md): the commit index, and slot `i`'s state word.
const COMMIT_INDEX: u64 = 256;
fn slot_state(i: u64) -> u64 {
    8192 + i * 64
}

#[test]
fn a_takeover_announces_a_published_but_unannounced_batch_whole() {
    for order in [SlotOrder::Ring, SlotOrder::Recent] {
        let g = BlockGuard::new("batch-finish");
        let cfg = || config(order, 8).unlink_on_drop(false);
        let mut p = Producer::create(&g.name, cfg()).unwrap();
        send_batch(&mut p, 0, 2);
        send_batch(&mut p, 2, 3);
        drop(p);
        // As if the producer died after publishing 2..5 and before the commit index moved.
        poke(&g.name, COMMIT_INDEX, &2u64.to_le_bytes());
        let (p, t) = Producer::create_or_take_over(&g.name, cfg()).unwrap();
        let t = t.unwrap();
        assert_eq!((t.finished_seq, t.finished), (Some(2), 3), "{order:?}");
        assert_eq!(p.next_seq(), 5);
        let mut c = Consumer::attach(&g.name, Expectations::new()).unwrap();
        let r = c.read_batch(8, T).unwrap();
        assert_eq!((r.first_seq(), r.len()), (0, 5));
    }
}

#[test]
fn a_takeover_announces_nothing_of_a_batch_with_a_slot_still_being_written() {
    let g = BlockGuard::new("batch-partial");
    let cfg = || config(SlotOrder::Ring, 8).unlink_on_drop(false);
    let mut p = Producer::create(&g.name, cfg()).unwrap();
    send_batch(&mut p, 0, 2);
    send_batch(&mut p, 2, 3);
    drop(p);
    // Died mid-batch: 2 and 3 published, 4 (slot 4) still being written, commit index at 2.
    poke(&g.name, COMMIT_INDEX, &2u64.to_le_bytes());
    poke(&g.name, slot_state(4), &1u32.to_le_bytes());
    let (mut p, t) = Producer::create_or_take_over(&g.name, cfg()).unwrap();
    let t = t.unwrap();
    assert_eq!((t.finished_seq, t.finished), (None, 0));
    assert_eq!(t.discarded_slots, vec![4]);
    assert_eq!(p.next_seq(), 2, "the whole batch is written again");
    let mut c = Consumer::attach(&g.name, Expectations::new()).unwrap();
    send_batch(&mut p, 2, 1);
    let r = c.read_batch(8, T).unwrap();
    assert_eq!((r.first_seq(), r.len()), (0, 3));
    for (seq, m) in r.iter() {
        assert_eq!(m, &record(seq)[..]);
    }
}
