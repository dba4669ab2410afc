//! Recent slots (format 1.2, `SlotOrder::Recent`): a lossless producer writes the slot its
//! consumers released last instead of slot `seq % n`, and readers find it through the position
//! lines. In-process tests; the cross-process and crash runs are in `multiprocess.rs` and
//! `crash.rs`.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use datahub::{Admin, Config, Consumer, Error, Expectations, Policy, Producer, SlotOrder};
use support::BlockGuard;

const T: Duration = Duration::from_secs(5);

fn recent(policy: Policy, slots: u32) -> Config {
    Config::new(policy)
        .slot_size(256)
        .slot_count(slots)
        .slot_order(SlotOrder::Recent)
}

fn send(p: &mut Producer, seq: u64) -> usize {
    let mut w = p.write(T).unwrap();
    assert_eq!(w.seq(), seq);
    w[..8].copy_from_slice(&seq.to_le_bytes());
    let slot = w.slot();
    w.commit(8).unwrap();
    slot
}

fn recv(c: &mut Consumer, seq: u64) -> usize {
    let r = c.read(T).unwrap();
    assert_eq!(r.seq(), seq);
    assert_eq!(
        &r[..8],
        &seq.to_le_bytes(),
        "message {seq} has another's bytes"
    );
    let slot = r.slot();
    r.release().unwrap();
    slot
}

#[test]
fn a_consumer_that_keeps_up_gets_the_same_slot_back_every_time() {
    let g = BlockGuard::new("recent-reuse");
    let mut p = Producer::create(&g.name, recent(Policy::Sequential, 16)).unwrap();
    let mut c = Consumer::attach(&g.name, Expectations::new()).unwrap();
    let mut used = HashSet::new();
    for seq in 0..100 {
        let slot = send(&mut p, seq);
        assert_eq!(recv(&mut c, seq), slot, "the reader read another slot");
        used.insert(slot);
    }
    assert_eq!(used.len(), 1, "slots used: {used:?}");
}

#[test]
fn ring_order_walks_every_slot_for_the_same_traffic() {
    let g = BlockGuard::new("ring-walk");
    let cfg = recent(Policy::Sequential, 16).slot_order(SlotOrder::Ring);
    let mut p = Producer::create(&g.name, cfg).unwrap();
    let mut c = Consumer::attach(&g.name, Expectations::new()).unwrap();
    let mut used = HashSet::new();
    for seq in 0..32 {
        used.insert(send(&mut p, seq));
        recv(&mut c, seq);
    }
    assert_eq!(used.len(), 16);
}

#[test]
fn recent_slots_fill_the_whole_ring_in_order_when_nobody_reads() {
    let g = BlockGuard::new("recent-full");
    let mut p = Producer::create(&g.name, recent(Policy::Sequential, 4)).unwrap();
    let mut c = Consumer::attach(&g.name, Expectations::new()).unwrap();
    let slots: HashSet<usize> = (0..4).map(|seq| send(&mut p, seq)).collect();
    assert_eq!(slots.len(), 4, "four messages in flight need four slots");
    match p.write(Duration::from_millis(50)) {
        Err(Error::Timeout { .. }) => {}
        other => panic!("a full ring must time out: {other:?}"),
    }
    // The released slot is the one reused.
    let freed = recv(&mut c, 0);
    assert_eq!(send(&mut p, 4), freed);
    for seq in 1..5 {
        recv(&mut c, seq);
    }
}

#[test]
fn sequential_sync_reuses_a_slot_only_after_every_consumer_read_it() {
    let g = BlockGuard::new("recent-sync");
    let mut p =
        Producer::create(&g.name, recent(Policy::SequentialSync, 4).max_consumers(2)).unwrap();
    let mut a = Consumer::attach(&g.name, Expectations::new()).unwrap();
    let mut b = Consumer::attach(&g.name, Expectations::new()).unwrap();
    let s0 = send(&mut p, 0);
    recv(&mut a, 0);
    // b has not read 0: its slot is not free, so 1 goes elsewhere.
    let s1 = send(&mut p, 1);
    assert_ne!(s0, s1);
    recv(&mut b, 0);
    recv(&mut a, 1);
    recv(&mut b, 1);
    // Both read 1: its slot (released last) is reused.
    assert_eq!(send(&mut p, 2), s1);
    recv(&mut a, 2);
    recv(&mut b, 2);
}

#[test]
fn a_late_consumer_starts_at_a_message_whose_slot_is_intact() {
    let g = BlockGuard::new("recent-late");
    let mut p =
        Producer::create(&g.name, recent(Policy::SequentialSync, 4).max_consumers(2)).unwrap();
    let mut a = Consumer::attach(&g.name, Expectations::new()).unwrap();
    for seq in 0..10 {
        send(&mut p, seq);
        recv(&mut a, seq);
    }
    send(&mut p, 10);
    send(&mut p, 11);
    let mut late = Consumer::attach(&g.name, Expectations::new()).unwrap();
    assert_eq!(
        late.position(),
        10,
        "starts at the slowest consumer's position"
    );
    recv(&mut late, 10);
    recv(&mut late, 11);
    recv(&mut a, 10);
    recv(&mut a, 11);
}

#[test]
fn a_taken_over_block_keeps_its_unread_messages_and_reuses_freed_slots() {
    let g = BlockGuard::new("recent-takeover");
    let cfg = || recent(Policy::Sequential, 4).unlink_on_drop(false);
    let mut p = Producer::create(&g.name, cfg()).unwrap();
    let mut c = Consumer::attach(&g.name, Expectations::new()).unwrap();
    for seq in 0..3 {
        send(&mut p, seq);
    }
    let first = recv(&mut c, 0);
    drop(p);
    let (mut p, t) = Producer::create_or_take_over(&g.name, cfg()).unwrap();
    assert!(t.is_some());
    assert_eq!(p.next_seq(), 3);
    // 1 and 2 are unread; 0's slot is free again (and one never used).
    let s3 = send(&mut p, 3);
    let s4 = send(&mut p, 4);
    let unread: HashSet<usize> = [s3, s4].into();
    assert!(unread.contains(&first), "0's slot is reused: {unread:?}");
    for seq in 1..5 {
        recv(&mut c, seq);
    }
}

#[test]
fn recent_slots_need_a_lossless_policy() {
    let g = BlockGuard::new("recent-latest");
    let cfg = Config::new(Policy::Latest).slot_order(SlotOrder::Recent);
    match Producer::create(&g.name, cfg) {
        Err(Error::InvalidConfig { what }) => assert!(what.contains("lossless"), "{what}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn auto_picks_recent_slots_for_a_large_lossless_ring_only() {
    let cases = [
        (Policy::Sequential, 64 << 10, 16, true),
        (Policy::SequentialSync, 1 << 20, 2, true),
        (Policy::Sequential, 4096, 16, false),
        (Policy::Latest, 1 << 20, 16, false),
    ];
    for (policy, size, count, want) in cases {
        let g = BlockGuard::new("recent-auto");
        let cfg = Config::new(policy).slot_size(size).slot_count(count);
        let p = Producer::create(&g.name, cfg).unwrap();
        let info = Admin::open(p.name()).unwrap().info();
        assert_eq!(info.recent_slots, want, "{policy} {size} x {count}");
        assert_eq!(info.version, "1.2");
    }
}

#[test]
fn a_damaged_position_line_is_a_typed_error_for_the_reader() {
    use std::io::{Seek, SeekFrom, Write};
    let g = BlockGuard::new("recent-damaged");
    let mut p = Producer::create(&g.name, recent(Policy::Sequential, 4)).unwrap();
    let mut c = Consumer::attach(&g.name, Expectations::new()).unwrap();
    send(&mut p, 0);
    // Position line 0 is slot line 0 (header 8192 bytes, 64 per line); the index is at +48.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("{}/{}", datahub::shm_dir().display(), g.name))
        .unwrap();
    f.seek(SeekFrom::Start(8192 + 48)).unwrap();
    f.write_all(&99u32.to_le_bytes()).unwrap();
    match c.read(T) {
        Err(Error::InvalidSlotIndex {
            position: 0,
            value: 99,
            slots: 4,
        }) => {}
        other => panic!("{other:?}"),
    }
    let v = Admin::open(&g.name).unwrap().validate(false);
    assert!(
        v.problems.iter().any(|p| p.contains("names slot 99")),
        "{:?}",
        v.problems
    );
}
