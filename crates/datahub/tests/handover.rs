//! Handover (`Producer::handover`): a stream moves to a successor block (another slot size,
//! slot count, schema or slot order) and consumers follow at the cutover without loss. The
//! cross-process runs re-execute this binary (`support/mod.rs`); `child_*` tests return at
//! once in a normal run.

mod support;

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use datahub::layout::{
    HANDOVER_CHECK, HANDOVER_CREATED, HANDOVER_CUTOVER, HANDOVER_LAYOUT_HASH, HANDOVER_NAME,
    HANDOVER_NAME_LEN, HANDOVER_STATE, successor_check,
};
use datahub::{
    Config, Consumer, Error, Expectations, Inspector, Policy, Producer, SlotOrder, shm_dir,
};
use serde_json::json;
use support::{BlockGuard, ChildProc, child, mix, param, tell};

const T: Duration = Duration::from_secs(10);
const CHILD_LIMIT: Duration = Duration::from_secs(120);

/// Message `seq`, `len` bytes (at least 16): the seq, a mix of it, then a pattern.
fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut b: Vec<u8> = (0..len)
        .map(|i| (seq as u8).wrapping_add(i as u8))
        .collect();
    b[..8].copy_from_slice(&seq.to_le_bytes());
    b[8..16].copy_from_slice(&mix(seq).to_le_bytes());
    b
}

fn check(seq: u64, bytes: &[u8]) {
    assert_eq!(
        bytes,
        &payload(seq, bytes.len())[..],
        "message {seq} has other bytes"
    );
}

fn ring(policy: Policy, size: u32, slots: u32, order: SlotOrder) -> Config {
    Config::new(policy)
        .slot_size(size)
        .slot_count(slots)
        .slot_order(order)
}

fn orders() -> [SlotOrder; 2] {
    [SlotOrder::Ring, SlotOrder::Recent]
}

fn order_name(o: SlotOrder) -> &'static str {
    match o {
        SlotOrder::Recent => "recent",
        _ => "ring",
    }
}

#[test]
fn a_handover_to_larger_slots_carries_messages_of_the_new_size_and_seqs_continue() {
    for order in orders() {
        let a = BlockGuard::new("ho-grow-a");
        let b = BlockGuard::new("ho-grow-b");
        let mut p = Producer::create(&a.name, ring(Policy::Sequential, 64, 8, order)).unwrap();
        let mut c = Consumer::attach(&a.name, Expectations::new()).unwrap();
        for seq in 0..5 {
            assert_eq!(p.send(&payload(seq, 64), T).unwrap(), seq);
        }
        let h = p
            .handover(&b.name, ring(Policy::Sequential, 4096, 4, order))
            .unwrap();
        assert_eq!((h.old.as_str(), h.new.as_str()), (&a.name[..], &b.name[..]));
        assert_eq!(h.cutover_seq, 5);
        assert_eq!(p.name(), b.name);
        assert_eq!(p.slot_size(), 4096);
        let mut got = Vec::new();
        for seq in 5..20 {
            // Keep the new, smaller ring (4 slots) from filling up: read in the same thread.
            while c.position() + 4 <= seq {
                let r = c.read(T).unwrap();
                check(r.seq(), &r);
                got.push((r.seq(), r.len()));
            }
            assert_eq!(p.send(&payload(seq, 4000), T).unwrap(), seq);
        }
        p.close();
        loop {
            match c.read(T) {
                Ok(r) => {
                    check(r.seq(), &r);
                    got.push((r.seq(), r.len()));
                }
                Err(Error::EndOfStream) => break,
                Err(e) => panic!("{order:?}: {e}"),
            }
        }
        let all: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(all, (0..20).collect::<Vec<_>>(), "{order:?}");
        assert!(got.iter().any(|&(s, l)| s >= 5 && l == 4000), "{order:?}");
        assert_eq!(c.handovers(), 1);
        assert_eq!(c.name(), b.name);
    }
}

/// Reads everything until the end of the stream, checking order and bytes: (seqs, handovers).
fn drain(c: &mut Consumer, from: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut want = from;
    loop {
        match c.read(T) {
            Ok(r) => {
                assert_eq!(r.seq(), want, "lost or repeated message");
                check(r.seq(), &r);
                seqs.push(r.seq());
                want += 1;
            }
            Err(Error::EndOfStream) => return seqs,
            Err(e) => panic!("read of {want}: {e}"),
        }
    }
}

#[test]
fn each_lossless_policy_delivers_every_message_once_across_a_handover_in_process() {
    for policy in [Policy::Sequential, Policy::SequentialSync] {
        for order in orders() {
            let a = BlockGuard::new("ho-ll-a");
            let b = BlockGuard::new("ho-ll-b");
            let mut p = Producer::create(&a.name, ring(policy, 64, 4, order)).unwrap();
            let mut c = Consumer::attach(&a.name, Expectations::new()).unwrap();
            for seq in 0..4 {
                p.send(&payload(seq, 32), T).unwrap();
            }
            // The ring is full: nothing is read yet. The successor reserves the consumer's
            // place at the cutover, so the new ring fills up to it and then waits.
            p.handover(&b.name, ring(policy, 64, 2, order)).unwrap();
            p.send(&payload(4, 32), T).unwrap();
            p.send(&payload(5, 32), T).unwrap();
            let full = p.write(Duration::from_millis(50));
            assert!(
                matches!(full, Err(Error::Timeout { .. })),
                "{policy:?} {order:?}: the successor did not wait for the follower"
            );
            drop(full);
            p.close();
            assert_eq!(drain(&mut c, 0), (0..6).collect::<Vec<_>>());
            assert_eq!(c.handovers(), 1);
        }
    }
}

#[test]
fn a_consumer_still_on_the_old_block_loses_nothing_while_another_has_followed_and_read_ahead() {
    for order in orders() {
        let a = BlockGuard::new("ho-lag-a");
        let b = BlockGuard::new("ho-lag-b");
        let sync = ring(Policy::SequentialSync, 64, 4, order).max_consumers(2);
        let mut p = Producer::create(&a.name, sync.clone()).unwrap();
        let mut fast = Consumer::attach(&a.name, Expectations::new()).unwrap();
        let mut slow = Consumer::attach(&a.name, Expectations::new()).unwrap();
        for seq in 0..3 {
            p.send(&payload(seq, 32), T).unwrap();
        }
        p.handover(&b.name, sync).unwrap();
        assert_eq!(drain_n(&mut fast, 3), vec![0, 1, 2]);
        for seq in 3..7 {
            p.send(&payload(seq, 32), T).unwrap();
            assert_eq!(drain_n(&mut fast, 1), vec![seq]);
        }
        // The successor (4 slots from the cutover at 3) is full of messages `slow` has not
        // read: its reservation holds the producer.
        assert!(
            matches!(
                p.write(Duration::from_millis(50)),
                Err(Error::Timeout { .. })
            ),
            "{order:?}: the producer overwrote what the lagging consumer has yet to read"
        );
        p.close();
        assert_eq!(drain(&mut slow, 0), (0..7).collect::<Vec<_>>(), "{order:?}");
        assert_eq!((fast.handovers(), slow.handovers()), (1, 1));
    }
}

#[test]
fn a_consumer_that_attaches_the_old_block_after_the_handover_follows_to_the_successor() {
    let a = BlockGuard::new("ho-late-a");
    let b = BlockGuard::new("ho-late-b");
    let sync = |size| ring(Policy::SequentialSync, size, 8, SlotOrder::Ring).max_consumers(2);
    let mut p = Producer::create(&a.name, sync(64)).unwrap();
    // An attached consumer keeps the old block's name after the handover.
    let _holder = Consumer::attach(&a.name, Expectations::new()).unwrap();
    for seq in 0..3 {
        p.send(&payload(seq, 32), T).unwrap();
    }
    p.handover(&b.name, sync(128)).unwrap();
    for seq in 3..6 {
        p.send(&payload(seq, 100), T).unwrap();
    }
    p.close();
    let mut c = Consumer::attach(&a.name, Expectations::new()).unwrap();
    assert_eq!(drain(&mut c, 0), (0..6).collect::<Vec<_>>());
    assert_eq!(c.handovers(), 1);
}

#[test]
fn attaching_a_handed_over_block_with_following_disabled_is_handed_over() {
    let a = BlockGuard::new("ho-nofollow-a");
    let b = BlockGuard::new("ho-nofollow-b");
    let mut p = Producer::create(&a.name, ring(Policy::Latest, 64, 2, SlotOrder::Ring)).unwrap();
    let mut c = Consumer::attach(&a.name, Expectations::new().follow_handover(false)).unwrap();
    p.send(&payload(0, 16), T).unwrap();
    p.handover(&b.name, ring(Policy::Latest, 64, 2, SlotOrder::Ring))
        .unwrap();
    assert_eq!(c.read(T).unwrap().seq(), 0);
    match c.read(T) {
        Err(Error::HandedOver { successor }) => assert_eq!(successor, b.name),
        other => panic!("{other:?}"),
    }
    match Consumer::attach(&a.name, Expectations::new().follow_handover(false)) {
        Err(e @ Error::HandedOver { .. }) => assert_eq!(e.code(), 42),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_producer_cannot_take_over_a_handed_over_block() {
    let a = BlockGuard::new("ho-takeover-a");
    let b = BlockGuard::new("ho-takeover-b");
    let cfg = ring(Policy::Sequential, 64, 4, SlotOrder::Ring).unwrap_on_drop_false();
    let mut p = Producer::create(&a.name, cfg.clone()).unwrap();
    // An attached consumer keeps the old block's name after the handover.
    let _holder = Consumer::attach(&a.name, Expectations::new()).unwrap();
    p.handover(&b.name, cfg.clone()).unwrap();
    drop(p);
    match Producer::create(&a.name, cfg) {
        Err(Error::HandedOver { successor }) => assert_eq!(successor, b.name),
        other => panic!("{other:?}"),
    }
}

trait KeepOnDrop {
    fn unwrap_on_drop_false(self) -> Config;
}
impl KeepOnDrop for Config {
    fn unwrap_on_drop_false(self) -> Config {
        self.unlink_on_drop(false)
    }
}

#[test]
fn a_chain_of_two_handovers_is_followed_to_the_end() {
    for order in orders() {
        let a = BlockGuard::new("ho-chain-a");
        let b = BlockGuard::new("ho-chain-b");
        let c3 = BlockGuard::new("ho-chain-c");
        let mut p = Producer::create(&a.name, ring(Policy::SequentialSync, 64, 8, order)).unwrap();
        let mut c = Consumer::attach(&a.name, Expectations::new()).unwrap();
        for seq in 0..3 {
            p.send(&payload(seq, 32), T).unwrap();
        }
        p.handover(&b.name, ring(Policy::SequentialSync, 128, 8, order))
            .unwrap();
        for seq in 3..6 {
            p.send(&payload(seq, 100), T).unwrap();
        }
        let h = p
            .handover(&c3.name, ring(Policy::SequentialSync, 256, 8, order))
            .unwrap();
        assert_eq!(h.cutover_seq, 6);
        for seq in 6..9 {
            p.send(&payload(seq, 200), T).unwrap();
        }
        p.close();
        assert_eq!(drain(&mut c, 0), (0..9).collect::<Vec<_>>(), "{order:?}");
        assert_eq!(c.handovers(), 2);
        assert_eq!(c.name(), c3.name);
    }
}

#[test]
fn batch_reads_cross_a_cutover_without_loss() {
    for order in orders() {
        let a = BlockGuard::new("ho-batch-a");
        let b = BlockGuard::new("ho-batch-b");
        let mut p = Producer::create(&a.name, ring(Policy::Sequential, 64, 16, order)).unwrap();
        let mut c = Consumer::attach(&a.name, Expectations::new()).unwrap();
        let msgs: Vec<Vec<u8>> = (0..5).map(|s| payload(s, 32)).collect();
        let refs: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
        p.send_batch(&refs, T).unwrap();
        p.handover(&b.name, ring(Policy::Sequential, 64, 16, order))
            .unwrap();
        let msgs: Vec<Vec<u8>> = (5..12).map(|s| payload(s, 48)).collect();
        let refs: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
        assert_eq!(p.send_batch(&refs, T).unwrap(), 5..12);
        p.close();
        let mut seen = Vec::new();
        loop {
            match c.read_batch(100, T) {
                Ok(g) => {
                    for (seq, bytes) in g.iter() {
                        check(seq, bytes);
                        seen.push(seq);
                    }
                }
                Err(Error::EndOfStream) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(seen, (0..12).collect::<Vec<_>>(), "{order:?}");
        assert_eq!(c.handovers(), 1);
    }
}

#[test]
fn try_read_follows_a_handover() {
    let a = BlockGuard::new("ho-try-a");
    let b = BlockGuard::new("ho-try-b");
    let mut p =
        Producer::create(&a.name, ring(Policy::Sequential, 64, 4, SlotOrder::Ring)).unwrap();
    let mut c = Consumer::attach(&a.name, Expectations::new()).unwrap();
    p.handover(&b.name, ring(Policy::Sequential, 64, 4, SlotOrder::Ring))
        .unwrap();
    p.send(&payload(0, 32), T).unwrap();
    let r = c.try_read().unwrap().expect("the message in the successor");
    assert_eq!(r.seq(), 0);
    drop(r);
    assert_eq!(c.handovers(), 1);
}

#[test]
fn the_old_block_is_removed_once_its_consumers_leave() {
    let a = BlockGuard::new("ho-unlink-a");
    let b = BlockGuard::new("ho-unlink-b");
    let cfg =
        ring(Policy::Sequential, 64, 4, SlotOrder::Ring).handover_grace(Duration::from_secs(60));
    let mut p = Producer::create(&a.name, cfg.clone()).unwrap();
    let mut c = Consumer::attach(&a.name, Expectations::new()).unwrap();
    p.send(&payload(0, 32), T).unwrap();
    p.handover(&b.name, cfg).unwrap();
    assert_eq!(p.retired_blocks(), vec![a.name.clone()]);
    assert!(shm_dir().join(&a.name).exists());
    p.send(&payload(1, 32), T).unwrap();
    assert_eq!(drain_n(&mut c, 2), vec![0, 1]);
    // The consumer left the old block when it followed.
    assert!(p.retired_blocks().is_empty());
    assert!(!shm_dir().join(&a.name).exists());
}

fn drain_n(c: &mut Consumer, n: usize) -> Vec<u64> {
    (0..n)
        .map(|_| {
            let r = c.read(T).unwrap();
            check(r.seq(), &r);
            r.seq()
        })
        .collect()
}

#[test]
fn the_old_block_is_removed_after_the_grace_period_even_with_a_consumer_attached() {
    let a = BlockGuard::new("ho-grace-a");
    let b = BlockGuard::new("ho-grace-b");
    let cfg =
        ring(Policy::Latest, 64, 4, SlotOrder::Ring).handover_grace(Duration::from_millis(100));
    let mut p = Producer::create(&a.name, cfg.clone()).unwrap();
    let mut c = Consumer::attach(&a.name, Expectations::new()).unwrap();
    p.send(&payload(0, 32), T).unwrap();
    p.handover(&b.name, cfg).unwrap();
    assert_eq!(p.retired_blocks(), vec![a.name.clone()]);
    std::thread::sleep(Duration::from_millis(150));
    assert!(p.retired_blocks().is_empty());
    assert!(!shm_dir().join(&a.name).exists());
    // The consumer still has the old block mapped, and still follows.
    assert_eq!(c.read(T).unwrap().seq(), 0);
    p.send(&payload(1, 32), T).unwrap();
    assert_eq!(c.read(T).unwrap().seq(), 1);
    assert_eq!(c.handovers(), 1);
}

#[test]
fn inspect_shows_first_seq_and_successor() {
    let a = BlockGuard::new("ho-inspect-a");
    let b = BlockGuard::new("ho-inspect-b");
    let cfg = ring(Policy::Latest, 64, 4, SlotOrder::Ring);
    let mut p = Producer::create(&a.name, cfg.clone()).unwrap();
    let _c = Consumer::attach(&a.name, Expectations::new()).unwrap();
    for seq in 0..7 {
        p.send(&payload(seq, 32), T).unwrap();
    }
    p.handover(&b.name, cfg).unwrap();
    let old = Inspector::open(&a.name).unwrap().info();
    assert_eq!(old.first_seq, 0);
    assert_eq!(old.successor.as_deref(), Some(&b.name[..]));
    assert_eq!(old.end_of_stream, Some(7));
    let new = Inspector::open(&b.name).unwrap().info();
    assert_eq!((new.first_seq, new.successor.clone()), (7, None));
    assert_eq!(new.commit_index, 7);
}

// ---------------------------------------------------------------------------------------------
// Hostile successor records: written straight into the old block's header file.

/// A block handed over to a real successor, then its record overwritten by `forge`.
fn forged(tag: &str, forge: impl FnOnce(&std::fs::File, &str)) -> (Error, BlockGuard, BlockGuard) {
    let a = BlockGuard::new(&format!("{tag}-a"));
    let b = BlockGuard::new(&format!("{tag}-b"));
    let cfg = ring(Policy::Sequential, 64, 4, SlotOrder::Ring).unlink_on_drop(false);
    let mut p = Producer::create(&a.name, cfg.clone()).unwrap();
    let mut c = Consumer::attach(&a.name, Expectations::new()).unwrap();
    p.send(&payload(0, 32), T).unwrap();
    p.handover(&b.name, cfg).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(shm_dir().join(&a.name))
        .unwrap();
    forge(&f, &b.name);
    assert_eq!(c.read(T).unwrap().seq(), 0);
    let e = c.read(T).expect_err("a forged record is refused");
    assert_eq!(c.handovers(), 0, "followed a forged record");
    assert_eq!(
        c.name(),
        a.name,
        "nothing named by a forged record is attached"
    );
    drop(p);
    (e, a, b)
}

/// Writes a record naming `name` with a correct check word (so only the name is wrong).
fn write_record(f: &std::fs::File, name: &[u8], fix_check: bool) {
    let mut hdr = [0u8; 1536];
    f.read_exact_at(&mut hdr, 0).unwrap();
    let u64_at = |at: usize| u64::from_le_bytes(hdr[at..at + 8].try_into().unwrap());
    let cutover = u64_at(HANDOVER_CUTOVER);
    let layout = u64_at(HANDOVER_LAYOUT_HASH);
    let created = u64_at(HANDOVER_CREATED);
    let mut field = vec![0u8; 256];
    let n = name.len().min(256);
    field[..n].copy_from_slice(&name[..n]);
    f.write_all_at(&field, HANDOVER_NAME as u64).unwrap();
    f.write_all_at(&(name.len() as u32).to_le_bytes(), HANDOVER_NAME_LEN as u64)
        .unwrap();
    if fix_check {
        let check = successor_check(name, cutover, layout, created);
        f.write_all_at(&check.to_le_bytes(), HANDOVER_CHECK as u64)
            .unwrap();
    }
}

fn assert_invalid_successor(e: Error, needle: &str) {
    match &e {
        Error::InvalidSuccessor { why } => assert!(why.contains(needle), "{why}"),
        other => panic!("want InvalidSuccessor ({needle}), got {other:?}"),
    }
    assert_eq!(e.code(), 41);
}

#[test]
fn a_successor_name_with_a_slash_is_refused() {
    let (e, _a, _b) = forged("ho-evil-slash", |f, _| {
        write_record(f, b"../etc/passwd", true)
    });
    assert_invalid_successor(e, "not a block name");
}

#[test]
fn a_successor_name_dot_dot_is_refused() {
    let (e, _a, _b) = forged("ho-evil-dots", |f, _| write_record(f, b"..", true));
    assert_invalid_successor(e, "not a block name");
}

#[test]
fn an_overlong_successor_name_is_refused() {
    let (e, _a, _b) = forged("ho-evil-long", |f, _| write_record(f, &[b'x'; 250], true));
    assert_invalid_successor(e, "name length 250");
}

#[test]
fn a_successor_name_with_control_characters_is_refused() {
    let (e, _a, _b) = forged("ho-evil-ctl", |f, _| write_record(f, b"a\x1b[2Jb", true));
    assert_invalid_successor(e, "control characters");
}

#[test]
fn a_successor_record_with_a_bad_check_word_is_refused() {
    let (e, _a, _b) = forged("ho-evil-check", |f, _| {
        f.write_all_at(&0x1234u64.to_le_bytes(), HANDOVER_CHECK as u64)
            .unwrap()
    });
    assert_invalid_successor(e, "check word");
}

#[test]
fn a_successor_record_naming_another_block_is_refused() {
    let other = BlockGuard::new("ho-evil-other");
    let _q = Producer::create(
        &other.name,
        ring(Policy::Sequential, 64, 4, SlotOrder::Ring),
    )
    .unwrap();
    let name = other.name.clone();
    let (e, _a, _b) = forged("ho-evil-other", |f, _| {
        write_record(f, name.as_bytes(), true)
    });
    assert_invalid_successor(e, "is not the successor recorded");
}

#[test]
fn a_bad_successor_state_word_is_refused() {
    let (e, _a, _b) = forged("ho-evil-state", |f, _| {
        f.write_all_at(&7u32.to_le_bytes(), HANDOVER_STATE as u64)
            .unwrap()
    });
    // The old block is still closed at the cutover; an unknown state word is an error.
    match e {
        Error::InvalidSuccessor { .. } => {}
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Consumers in other processes.

/// Payload length in the old block / in the successor.
const OLD_LEN: usize = 32;
const NEW_LEN: usize = 200;

/// Child: creates the block, waits for `CONSUMERS`, sends `N` messages, hands over to `NEXT`
/// (larger slots) after `CUT` of them, closes and waits until everything is read.
#[test]
#[ignore = "re-exec entry point: runs only in a child process the parent test spawns"]
fn child_handover_producer() {
    let Some(()) = child("handover_producer") else {
        return;
    };
    let name: String = param("NAME");
    let next: String = param("NEXT");
    let n: u64 = param("N");
    let cut: u64 = param("CUT");
    let consumers: u32 = param("CONSUMERS");
    let policy = if consumers == 1 {
        Policy::Sequential
    } else {
        Policy::SequentialSync
    };
    let order = match param::<String>("ORDER").as_str() {
        "recent" => SlotOrder::Recent,
        _ => SlotOrder::Ring,
    };
    let mut cfg = ring(policy, OLD_LEN as u32, 16, order);
    let mut next_cfg = ring(policy, NEW_LEN as u32, 8, order);
    if consumers > 1 {
        cfg = cfg.max_consumers(consumers);
        next_cfg = next_cfg.max_consumers(consumers);
    }
    let mut p = Producer::create(&name, cfg).unwrap();
    tell("ready", "");
    p.wait_for_consumers(consumers, T).unwrap();
    for seq in 0..n {
        if seq == cut {
            let h = p.handover(&next, next_cfg.clone()).unwrap();
            assert_eq!(h.cutover_seq, cut);
            tell("handed_over", "");
        }
        let len = if seq < cut { OLD_LEN } else { NEW_LEN };
        assert_eq!(p.send(&payload(seq, len), T).unwrap(), seq);
    }
    p.close();
    p.wait_drained(T).unwrap();
    tell("report", &json!({"sent": n}).to_string());
}

/// Child: reads until the end of the stream, checking every message; reports count, the
/// handovers followed and whether seqs were in order. With `SLOW`, sleeps 1 ms per message
/// for the first 50 (so the handover happens while it is behind).
#[test]
#[ignore = "re-exec entry point: runs only in a child process the parent test spawns"]
fn child_handover_consumer() {
    let Some(()) = child("handover_consumer") else {
        return;
    };
    let name: String = param("NAME");
    let slow: bool = support::param_or("SLOW", false);
    let mut c = Consumer::attach_wait(&name, Expectations::new(), T).unwrap();
    tell("attached", &c.entry().to_string());
    let mut want = c.position();
    let first = want;
    loop {
        match c.read(T) {
            Ok(r) => {
                assert_eq!(r.seq(), want, "lost or repeated message");
                check(r.seq(), &r);
                if want % 97 == 0 {
                    tell("progress", &want.to_string());
                }
                want += 1;
            }
            Err(Error::EndOfStream) => break,
            Err(e) => panic!("read of {want}: {e}"),
        }
        if slow && want < 50 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    tell(
        "report",
        &json!({"first": first, "next": want, "handovers": c.handovers()}).to_string(),
    );
}

fn run_cross_process(tag: &str, consumers: u32, order: SlotOrder) {
    let a = BlockGuard::new(tag);
    let b = BlockGuard::new(&format!("{tag}-next"));
    let n = 3000u64;
    let cut = 1234u64;
    let mut prod = ChildProc::spawn(
        "child_handover_producer",
        "handover_producer",
        &[
            ("NAME", a.name.clone()),
            ("NEXT", b.name.clone()),
            ("N", n.to_string()),
            ("CUT", cut.to_string()),
            ("CONSUMERS", consumers.to_string()),
            ("ORDER", order_name(order).into()),
        ],
    );
    prod.expect("ready", T);
    let mut cons: Vec<ChildProc> = (0..consumers)
        .map(|k| {
            ChildProc::spawn(
                "child_handover_consumer",
                "handover_consumer",
                &[("NAME", a.name.clone()), ("SLOW", (k == 0).to_string())],
            )
        })
        .collect();
    for c in &mut cons {
        c.expect("attached", T);
    }
    prod.expect("handed_over", CHILD_LIMIT);
    prod.expect("report", CHILD_LIMIT);
    for c in &mut cons {
        let r = c.expect_json("report", CHILD_LIMIT);
        assert_eq!(r["first"], 0, "{tag}");
        assert_eq!(r["next"], n, "{tag}: lost messages");
        assert_eq!(r["handovers"], 1, "{tag}");
        c.wait_success(CHILD_LIMIT);
    }
    prod.wait_success(CHILD_LIMIT);
}

#[test]
fn sequential_consumer_in_another_process_loses_and_repeats_nothing_across_a_handover_ring() {
    run_cross_process("ho-mp-seq-ring", 1, SlotOrder::Ring);
}

#[test]
fn sequential_consumer_in_another_process_loses_and_repeats_nothing_across_a_handover_recent() {
    run_cross_process("ho-mp-seq-recent", 1, SlotOrder::Recent);
}

#[test]
fn sequential_sync_consumers_in_other_processes_lose_and_repeat_nothing_across_a_handover_ring() {
    run_cross_process("ho-mp-sync-ring", 3, SlotOrder::Ring);
}

#[test]
fn sequential_sync_consumers_in_other_processes_lose_and_repeat_nothing_across_a_handover_recent() {
    run_cross_process("ho-mp-sync-recent", 3, SlotOrder::Recent);
}

/// Child: attaches, reads `UPTO` messages (reporting each), then stops reading and waits to be
/// killed.
#[test]
#[ignore = "re-exec entry point: runs only in a child process the parent test spawns"]
fn child_handover_stuck_consumer() {
    let Some(()) = child("handover_stuck_consumer") else {
        return;
    };
    let name: String = param("NAME");
    let upto: u64 = param("UPTO");
    let mut c = Consumer::attach_wait(&name, Expectations::new(), T).unwrap();
    tell("attached", "");
    for want in 0..upto {
        let r = c.read(T).unwrap();
        assert_eq!(r.seq(), want);
    }
    tell("stuck", "");
    std::thread::sleep(Duration::from_secs(600));
}

fn spawn_victim(name: &str) -> ChildProc {
    let mut victim = ChildProc::spawn(
        "child_handover_stuck_consumer",
        "handover_stuck_consumer",
        &[("NAME", name.to_owned()), ("UPTO", "3".into())],
    );
    victim.expect("attached", T);
    victim
}

#[test]
fn a_consumer_killed_during_a_handover_is_resumed_by_a_restarted_consumer_without_loss() {
    for order in orders() {
        let a = BlockGuard::new("ho-kill-a");
        let b = BlockGuard::new("ho-kill-b");
        let cfg = ring(Policy::Sequential, 64, 8, order)
            .heartbeat_timeout(Duration::from_millis(100))
            .handover_grace(Duration::from_secs(60));
        let mut p = Producer::create(&a.name, cfg.clone()).unwrap();
        let mut victim = spawn_victim(&a.name);
        for seq in 0..6 {
            p.send(&payload(seq, 32), T).unwrap();
        }
        victim.expect("stuck", T);
        // The handover reserves the victim's place in the successor; it dies before following.
        p.handover(&b.name, cfg).unwrap();
        victim.kill();
        for seq in 6..14 {
            p.send(&payload(seq, 32), T).unwrap();
        }
        // The successor is full up to the retained floor (the cutover); the wait retires the
        // dead consumer's reservation (its pid is dead).
        assert!(matches!(
            p.write(Duration::from_millis(300)),
            Err(Error::Timeout { .. })
        ));
        let succ = Inspector::open(&b.name).unwrap().info();
        assert!(succ.consumers.is_empty(), "{order:?}: {:?}", succ.consumers);
        assert_eq!(succ.retained_floor, 6);
        // A restarted consumer resumes where the victim stopped, and follows.
        let mut c = Consumer::attach(&a.name, Expectations::new()).unwrap();
        assert_eq!(c.position(), 3, "{order:?}");
        p.close();
        assert_eq!(drain(&mut c, 3), (3..14).collect::<Vec<_>>(), "{order:?}");
        assert_eq!(c.handovers(), 1);
    }
}

#[test]
fn a_consumer_killed_during_a_handover_does_not_block_the_producer_on_the_successor() {
    for order in orders() {
        let a = BlockGuard::new("ho-kill2-a");
        let b = BlockGuard::new("ho-kill2-b");
        let cfg = ring(Policy::SequentialSync, 64, 8, order)
            .max_consumers(2)
            .heartbeat_timeout(Duration::from_millis(100));
        let mut p = Producer::create(&a.name, cfg.clone()).unwrap();
        let mut victim = spawn_victim(&a.name);
        let mut live = Consumer::attach(&a.name, Expectations::new()).unwrap();
        for seq in 0..6 {
            p.send(&payload(seq, 32), T).unwrap();
        }
        victim.expect("stuck", T);
        p.handover(&b.name, cfg).unwrap();
        victim.kill();
        assert_eq!(drain_n(&mut live, 6), (0..6).collect::<Vec<_>>());
        // Four rings' worth: only possible once the dead consumer's reservation is gone.
        let t0 = Instant::now();
        for seq in 6..38 {
            p.send(&payload(seq, 32), Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("{order:?}: blocked at {seq}: {e}"));
            let r = live.read(T).unwrap();
            assert_eq!(r.seq(), seq);
        }
        assert!(t0.elapsed() < Duration::from_secs(8));
        assert_eq!(live.handovers(), 1);
    }
}

// ---------------------------------------------------------------------------------------------
// Broker (protocol 1.2): HANDOVER_REQ / HANDOVER_ACK / HANDOVER_NOTIFY.

#[cfg(feature = "broker")]
#[test]
fn broker_handover_notifies_subscribed_consumers_and_discovery_names_the_new_block() {
    use datahub::broker::{Broker, BrokerConfig, ChannelInfo, Client, ClientOptions, Notification};
    let dir = support::TempDir::new("ho-brk");
    let ep = format!("ipc://{}/b.sock", dir.path.display());
    let broker = Broker::spawn(BrokerConfig::at(&ep)).unwrap();
    let a = BlockGuard::new("ho-brk-a");
    let b = BlockGuard::new("ho-brk-b");
    let cfg = |size| ring(Policy::Latest, size, 4, SlotOrder::Ring);
    let mut p = Producer::create(&a.name, cfg(64)).unwrap();
    let pc = Client::connect(Some(broker.endpoint()), "ho-prod", ClientOptions::default()).unwrap();
    p.register(&pc, "ho-chan", "x", None, T).unwrap();
    let cc = Client::connect(Some(broker.endpoint()), "ho-cons", ClientOptions::default()).unwrap();
    let (mut c, found) = Consumer::discover(&cc, "ho-chan", None, Expectations::new(), T).unwrap();
    assert_eq!(found.block_name, a.name);
    p.send(&payload(0, 32), T).unwrap();
    let h = p
        .handover_channel(&pc, "ho-chan", &b.name, cfg(256), "x", None, T)
        .unwrap();
    assert_eq!(h.cutover_seq, 1);
    let deadline = Instant::now() + T;
    let note = loop {
        assert!(Instant::now() < deadline, "no HANDOVER_NOTIFY");
        if let Some(n @ Notification::HandedOver { .. }) =
            cc.next_notification(Duration::from_millis(100))
        {
            break n;
        }
    };
    assert_eq!(
        note,
        Notification::HandedOver {
            channel_name: "ho-chan".into(),
            old_block: a.name.clone(),
            new_block: b.name.clone(),
            cutover_seq: 1,
        }
    );
    let now = cc.discover("ho-chan", None, T).unwrap();
    assert_eq!(now.block_name, b.name);
    assert_eq!(now.slot_size, 256);
    let direct = ChannelInfo::from_producer("ho-chan", &p, "x", None).unwrap();
    assert_eq!(now.layout_hash, direct.layout_hash);
    // The consumer attached through the broker follows through the header.
    assert_eq!(c.read(T).unwrap().seq(), 0);
    p.send(&payload(1, 200), T).unwrap();
    let r = c.read(T).unwrap();
    assert_eq!((r.seq(), r.len()), (1, 200));
    drop(r);
    drop(c);
    drop((pc, cc));
    broker.join().unwrap();
}
