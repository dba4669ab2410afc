//! In-process behaviour: producer and consumers on separate mappings of one block, threads
//! standing in for processes (the cross-process tests are in `multiprocess.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use datahub::{
    Action, Admin, ChecksumPolicy, Config, Consumer, Error, Expectations, Inspector, Policy,
    Preset, Producer, Schema, TypedConsumer, TypedProducer, WaitCause,
};

const T: Duration = Duration::from_secs(5);

fn name(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "dh-test-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[test]
fn write_commit_read_roundtrip_and_mode_0600() {
    let n = name("rt");
    let mut p = Producer::create(&n, Config::new(Policy::Sequential).slot_size(100)).unwrap();
    assert_eq!(p.slot_size(), 128, "rounded up to 64");
    let mode = std::fs::metadata(format!("/dev/shm/{n}")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    let mut c = Consumer::attach(&n, Expectations::new()).unwrap();
    let mut w = p.write(T).unwrap();
    assert_eq!(w.seq(), 0);
    w[..5].copy_from_slice(b"hello");
    assert_eq!(w.commit(5).unwrap(), 0);
    let r = c.read(T).unwrap();
    assert_eq!(&r[..], b"hello");
    assert_eq!(r.seq(), 0);
    r.release().unwrap();
    assert!(matches!(c.try_read(), Ok(None)));
    let m = p.metrics();
    assert_eq!(
        (m.slots_written, m.slots_read, m.bytes_written, m.bytes_read),
        (1, 1, 5, 5)
    );
    drop(c);
    drop(p);
    assert!(!std::path::Path::new(&format!("/dev/shm/{n}")).exists());
}

#[test]
fn dropped_write_guard_aborts_and_reuses_seq() {
    let n = name("abort");
    let mut p = Producer::create(&n, Config::new(Policy::Sequential)).unwrap();
    let mut c = Consumer::attach(&n, Expectations::new()).unwrap();
    {
        let mut w = p.write(T).unwrap();
        w[0] = 9;
    }
    assert_eq!(p.with_write(T, |_| None).unwrap(), None);
    assert_eq!(p.send(b"x", T).unwrap(), 0);
    let r = c.read(T).unwrap();
    assert_eq!((r.seq(), &r[..]), (0, &b"x"[..]));
    drop(r);
    assert_eq!(p.metrics().aborted_writes, 2);
    assert!(matches!(
        p.send(&vec![0; 5000], T),
        Err(Error::PayloadTooLarge {
            len: 5000,
            slot_size: 4096
        })
    ));
}

#[test]
fn sequential_lossless_in_order_across_threads() {
    let n = name("seq");
    let mut p = Producer::create(&n, Config::preset(Preset::RingBuffer(4)).slot_size(64)).unwrap();
    let mut c = Consumer::attach(&n, Expectations::new().policy(Policy::Sequential)).unwrap();
    const N: u64 = 50_000;
    let reader = std::thread::spawn(move || {
        for want in 0..N {
            let r = c.read(T).unwrap();
            assert_eq!(r.seq(), want);
            assert_eq!(&r[..8], &want.to_le_bytes());
        }
        assert!(matches!(c.read(T), Err(Error::EndOfStream)));
    });
    for i in 0..N {
        p.send(&i.to_le_bytes(), T).unwrap();
    }
    p.close();
    reader.join().unwrap();
    p.wait_drained(T).unwrap();
}

#[test]
fn sequential_allows_one_consumer_and_ring_full_times_out() {
    let n = name("one");
    let mut p = Producer::create(&n, Config::preset(Preset::RingBuffer(2))).unwrap();
    let c = Consumer::attach(&n, Expectations::new()).unwrap();
    assert!(matches!(
        Consumer::attach(&n, Expectations::new()),
        Err(Error::TooManyConsumers { max: 1 })
    ));
    p.send(b"a", T).unwrap();
    p.send(b"b", T).unwrap();
    match p.send(b"c", Duration::from_millis(50)) {
        Err(Error::Timeout {
            cause: WaitCause::RingFull,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(p.metrics().writer_timeouts_ring_full, 1);
    drop(c);
}

#[test]
fn late_consumer_gets_retained_messages() {
    let n = name("late");
    let mut p = Producer::create(&n, Config::new(Policy::Sequential).slot_count(4)).unwrap();
    for i in 0..4u8 {
        p.send(&[i], T).unwrap();
    }
    let mut c = Consumer::attach(&n, Expectations::new()).unwrap();
    for i in 0..4u8 {
        let r = c.read(T).unwrap();
        assert_eq!((r.seq(), r[0]), (u64::from(i), i));
    }
    // It leaves after reading two more; the next consumer continues where it stopped.
    p.send(&[4], T).unwrap();
    p.send(&[5], T).unwrap();
    c.read(T).unwrap().release().unwrap();
    drop(c);
    let mut c2 = Consumer::attach(&n, Expectations::new()).unwrap();
    let r = c2.read(T).unwrap();
    assert_eq!(r.seq(), 5);
}

#[test]
fn sequential_sync_three_readers_each_get_everything() {
    let n = name("sync");
    let mut p = Producer::create(
        &n,
        Config::new(Policy::SequentialSync)
            .slot_count(4)
            .max_consumers(3),
    )
    .unwrap();
    let mut readers = Vec::new();
    for _ in 0..3 {
        let mut c = Consumer::attach(&n, Expectations::new()).unwrap();
        readers.push(std::thread::spawn(move || {
            let mut sum = 0u64;
            let mut want = 0;
            let mut it = c.slots(T);
            while let Some(r) = it.next() {
                let r = r.unwrap();
                assert_eq!(r.seq(), want);
                want += 1;
                sum += u64::from_le_bytes(r[..8].try_into().unwrap());
            }
            (want, sum)
        }));
    }
    assert!(matches!(
        Consumer::attach(&n, Expectations::new()),
        Err(Error::TooManyConsumers { max: 3 })
    ));
    for i in 0..10_000u64 {
        p.send(&i.to_le_bytes(), T).unwrap();
    }
    p.close();
    for h in readers {
        assert_eq!(h.join().unwrap(), (10_000, (0..10_000u64).sum()));
    }
}

#[test]
fn latest_returns_newest_and_labels_it() {
    let n = name("latest");
    let mut p = Producer::create(&n, Config::preset(Preset::DoubleBuffer)).unwrap();
    let mut c = Consumer::attach(&n, Expectations::new()).unwrap();
    for i in 0..5u64 {
        p.send(&i.to_le_bytes(), T).unwrap();
    }
    let r = c.read(T).unwrap();
    assert_eq!(r.seq(), 4);
    assert_eq!(&r[..8], &4u64.to_le_bytes());
    drop(r);
    assert!(matches!(c.try_read(), Ok(None)), "nothing newer than 4");
    p.send(&5u64.to_le_bytes(), T).unwrap();
    assert_eq!(c.read(T).unwrap().seq(), 5);
    // seek_to an older message still in the ring.
    c.seek_to(4).unwrap();
    assert_eq!(c.read(T).unwrap().seq(), 4);
    assert!(matches!(
        c.seek_to(1),
        Err(Error::SeqUnavailable { requested: 1, .. })
    ));
}

#[test]
fn latest_single_slot_writer_waits_only_for_the_held_slot() {
    let n = name("single");
    let mut p = Producer::create(&n, Config::preset(Preset::Single)).unwrap();
    let mut c = Consumer::attach(&n, Expectations::new()).unwrap();
    p.send(b"a", T).unwrap();
    let r = c.read(T).unwrap();
    match p.send(b"b", Duration::from_millis(30)) {
        Err(Error::Timeout {
            cause: WaitCause::ReadersActive,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(
        &r[..],
        b"a",
        "the held message is intact after the timed-out write"
    );
    drop(r);
    p.send(b"b", T).unwrap();
    assert_eq!(&c.read(T).unwrap()[..], b"b");
}

#[test]
fn latest_concurrent_reader_never_sees_torn_or_mislabelled() {
    let n = name("torn");
    let mut p = Producer::create(
        &n,
        Config::new(Policy::Latest).slot_count(2).slot_size(4096),
    )
    .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reads: std::sync::Arc<[AtomicU64; 2]> =
        std::sync::Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let mut handles = Vec::new();
    for k in 0..2 {
        let mut c = Consumer::attach(&n, Expectations::new()).unwrap();
        let (stop, reads) = (stop.clone(), reads.clone());
        handles.push(std::thread::spawn(move || {
            let mut last = None;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(Some(r)) = c.try_read() {
                    let b = (r.seq() % 251) as u8;
                    assert!(
                        r.iter().all(|&x| x == b),
                        "torn or mislabelled slot {}",
                        r.seq()
                    );
                    assert!(last.is_none_or(|l| r.seq() > l));
                    last = Some(r.seq());
                    reads[k].fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Write until both readers have read plenty while writes were going on (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut i = 0u64;
    while (reads[0].load(Ordering::Relaxed) < 1000 || reads[1].load(Ordering::Relaxed) < 1000)
        && std::time::Instant::now() < deadline
    {
        let mut w = p.write(T).unwrap();
        w.fill((i % 251) as u8);
        w.commit(4096).unwrap();
        i += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    assert!(
        reads.iter().all(|r| r.load(Ordering::Relaxed) >= 1000),
        "readers starved"
    );
}

#[test]
fn enforced_checksum_catches_a_flipped_byte() {
    let n = name("sum");
    let mut p = Producer::create(
        &n,
        Config::new(Policy::Sequential).checksum(ChecksumPolicy::Enforced),
    )
    .unwrap();
    let mut c = Consumer::attach(&n, Expectations::new()).unwrap();
    p.send(b"good message", T).unwrap();
    c.read(T).unwrap().release().unwrap();
    p.send(b"to be damaged", T).unwrap();
    // Flip a byte of slot 1's payload through the file, as another process could.
    let info = Admin::open(&n).unwrap().info();
    let off = info.regions.ring_offset + u64::from(info.slot_size);
    flip_byte(&n, off + 3);
    match c.read(T) {
        Err(Error::ChecksumMismatch {
            slot: 1, seq: 1, ..
        }) => {}
        other => panic!("{:?}", other.map(|g| g.seq())),
    }
    assert_eq!(p.metrics().checksum_failures, 1);
    // The damaged message counts as consumed; the stream goes on.
    p.send(b"next", T).unwrap();
    assert_eq!(c.read(T).unwrap().seq(), 2);
}

fn flip_byte(name: &str, offset: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/shm/{name}"))
        .unwrap();
    let mut b = [0u8];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0x20;
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&b).unwrap();
}

#[test]
fn manual_and_keyed_checksums() {
    let n = name("keyed");
    let key = [7u8; 32];
    let mut p = Producer::create(
        &n,
        Config::new(Policy::Sequential)
            .checksum(ChecksumPolicy::Manual)
            .checksum_key(key),
    )
    .unwrap();
    assert!(matches!(
        Consumer::attach(&n, Expectations::new()),
        Err(Error::KeyMismatch { .. })
    ));
    assert!(matches!(
        Consumer::attach(&n, Expectations::new().checksum_key([8; 32])),
        Err(Error::KeyMismatch { .. })
    ));
    let mut c = Consumer::attach(&n, Expectations::new().checksum_key(key)).unwrap();
    let mut w = p.write(T).unwrap();
    w[..3].copy_from_slice(b"abc");
    w.commit_with_checksum(3).unwrap();
    p.send(b"no sum", T).unwrap();
    c.read(T).unwrap().verify_checksum().unwrap();
    assert!(matches!(
        c.read(T).unwrap().verify_checksum(),
        Err(Error::ChecksumMissing { seq: 1, .. })
    ));
}

#[test]
fn expectations_are_checked_at_attach() {
    let n = name("exp");
    let _p = Producer::create(
        &n,
        Config::new(Policy::Latest)
            .slot_size(256)
            .schema(Schema::named("quote", 2)),
    )
    .unwrap();
    assert!(matches!(
        Consumer::attach(&n, Expectations::new().policy(Policy::Sequential)),
        Err(Error::ExpectationMismatch { what: "policy", .. })
    ));
    assert!(matches!(
        Consumer::attach(&n, Expectations::new().min_slot_size(1024)),
        Err(Error::ExpectationMismatch {
            what: "slot_size",
            ..
        })
    ));
    assert!(matches!(
        Consumer::attach(&n, Expectations::new().schema(Schema::named("quote", 3))),
        Err(Error::SchemaMismatch {
            expected_version: 3,
            found_version: 2,
            ..
        })
    ));
    Consumer::attach(&n, Expectations::new().schema(Schema::named("quote", 2))).unwrap();
    assert!(matches!(
        Consumer::attach("dh-test-missing-block", Expectations::new()),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        Producer::create("a/b", Config::new(Policy::Latest)),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        Producer::create(&n, Config::new(Policy::Latest)),
        Err(Error::AlreadyExists { .. })
    ));
}

#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Pose {
    x: f64,
    y: f64,
    stamp: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Other {
    a: u64,
}

datahub::describe!(Pose {
    x: f64,
    y: f64,
    stamp: u64
});
datahub::describe!(Other { a: u64 });

#[test]
fn typed_blocks_check_the_type() {
    let n = name("typed");
    let mut p = TypedProducer::<Pose>::create(&n, Config::new(Policy::Sequential), 1).unwrap();
    assert!(matches!(
        TypedConsumer::<Other>::attach(&n, Expectations::new(), 1, T),
        Err(Error::SchemaMismatch { .. })
    ));
    let mut c = TypedConsumer::<Pose>::attach(&n, Expectations::new(), 1, T).unwrap();
    p.send(
        &Pose {
            x: 1.0,
            y: 2.0,
            stamp: 3,
        },
        T,
    )
    .unwrap();
    p.with_write(T, |v| v.stamp = 9).unwrap();
    assert_eq!(
        c.recv(T).unwrap(),
        (
            0,
            Pose {
                x: 1.0,
                y: 2.0,
                stamp: 3
            }
        )
    );
    assert_eq!(c.with_read(T, |seq, v| (seq, v.stamp)).unwrap(), (1, 9));
}

#[test]
fn flex_zone_is_shared_and_locked() {
    let n = name("flex");
    let p = Producer::create(&n, Config::new(Policy::Latest).flex_zone_size(100)).unwrap();
    let c = Consumer::attach(&n, Expectations::new()).unwrap();
    {
        let mut z = p.flex_zone(T).unwrap();
        assert_eq!(z.len(), 100);
        z[..4].copy_from_slice(b"meta");
        assert!(matches!(
            p.flex_zone(T),
            Err(Error::WouldDeadlock { index: 0 })
        ));
    }
    assert_eq!(&c.flex_zone(T).unwrap()[..4], b"meta");
    let l = p.spinlock(3).unwrap();
    let g1 = l.lock(T).unwrap();
    let g2 = l.lock(T).unwrap(); // re-entrant
    drop(g2);
    assert!(l.held_by_me());
    drop(g1);
    assert!(!l.held_by_me());
    assert!(matches!(p.spinlock(8), Err(Error::OutOfRange { .. })));
}

#[test]
fn admin_reports_and_validates_a_healthy_block() {
    let n = name("admin");
    let mut p = Producer::create(
        &n,
        Config::new(Policy::SequentialSync).checksum(ChecksumPolicy::Enforced),
    )
    .unwrap();
    let mut c = Consumer::attach(&n, Expectations::new()).unwrap();
    p.send(b"abc", T).unwrap();
    let g = c.read(T).unwrap();
    let a = Admin::open(&n).unwrap();
    let d = a.diagnose();
    assert!(d.problems.is_empty(), "{:?}", d.problems);
    assert_eq!(d.slots[0].state, "committed");
    assert_eq!(d.slots[0].readers, vec![c_entry(&d)]);
    assert_eq!(d.info.consumers.len(), 1);
    assert_eq!(d.info.consumers[0].held_seq, Some(0));
    assert!(d.info.producer.alive);
    let v = a.validate(false);
    assert!(v.ok(), "{:?}", v.problems);
    // A live reader's slot is not reset without force.
    assert!(matches!(
        a.force_reset_slot(0, false),
        Err(Error::OwnerAlive { .. })
    ));
    assert!(a.auto_recover(true).is_empty());
    // Forced: the reader's guard fails validation on release.
    a.force_reset_slot(0, true).unwrap();
    assert!(matches!(
        g.release(),
        Err(Error::ValidationFailed { slot: 0, seq: 0 })
    ));
    assert_eq!(a.metrics().validation_failures, 1);
}

#[test]
fn admin_reset_slot_refuses_while_the_producer_lives_and_stalled_readers_are_reset_only_on_request()
{
    let n = name("stall");
    let mut p = Producer::create(
        &n,
        Config::new(Policy::Sequential)
            .slot_count(4)
            .heartbeat_timeout(Duration::from_millis(50)),
    )
    .unwrap();
    let mut c = Consumer::attach(&n, Expectations::new()).unwrap();
    p.send(b"held", T).unwrap();
    p.send(b"next", T).unwrap();
    let g = c.read(T).unwrap();
    let a = Admin::open(&n).unwrap();
    // A free slot nobody holds is still refused while the producer lives: it may claim it.
    assert!(matches!(
        a.reset_slot(3, false),
        Err(Error::ProducerAlive { slot: 3, pid }) if pid == std::process::id()
    ));
    assert!(matches!(
        a.reset_slot(4, true),
        Err(Error::OutOfRange { .. })
    ));
    std::thread::sleep(Duration::from_millis(150));
    let d = a.diagnose();
    assert!(d.info.consumers[0].stalled, "{:?}", d.info.consumers[0]);
    // Stalled: not part of the safe recovery, reset only when asked for.
    assert!(a.auto_recover(false).is_empty());
    let dry = a.reset_stalled_readers(true).unwrap();
    assert_eq!(dry, a.reset_stalled_readers(false).unwrap());
    assert!(matches!(
        dry[..],
        [Action::ResetSlot {
            slot: 0,
            seq: Some(0)
        }]
    ));
    assert!(matches!(
        g.release(),
        Err(Error::ValidationFailed { slot: 0, seq: 0 })
    ));
    assert_eq!(&c.read(T).unwrap()[..], b"next");
}

fn c_entry(d: &datahub::Diagnosis) -> usize {
    d.info.consumers[0].entry.unwrap()
}

#[test]
fn header_errors_are_typed() {
    use std::io::Write;
    // A segment with garbage, one too short, and one with a newer major version.
    let n = name("bad");
    let path = format!("/dev/shm/{n}");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&[0xAB; 9000])
        .unwrap();
    assert!(matches!(
        Consumer::attach(&n, Expectations::new()),
        Err(Error::BadMagic {
            found: 0xABAB_ABAB_ABAB_ABAB,
            ..
        })
    ));
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&[1; 100])
        .unwrap();
    assert!(matches!(
        Consumer::attach(&n, Expectations::new()),
        Err(Error::Truncated { found: 100, .. })
    ));
    std::fs::remove_file(&path).unwrap();
    // A real block cut short.
    let p = Producer::create(&n, Config::new(Policy::Latest).unlink_on_drop(false)).unwrap();
    let full = std::fs::metadata(&path).unwrap().len();
    drop(p);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(full - 4096)
        .unwrap();
    match Consumer::attach(&n, Expectations::new()) {
        Err(Error::Truncated { expected, found }) => {
            assert_eq!((expected, found), (full, full - 4096))
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    datahub::remove(&n).unwrap();
}

#[test]
fn new_producer_takes_over_a_block_whose_producer_left() {
    let n = name("take");
    let cfg = || {
        Config::new(Policy::Sequential)
            .slot_count(4)
            .unlink_on_drop(false)
    };
    let mut p = Producer::create(&n, cfg()).unwrap();
    p.send(b"0", T).unwrap();
    let mut w = p.write(T).unwrap();
    w[0] = b'X';
    std::mem::forget(w); // the producer "dies" mid-write
    drop(p);
    let a = Admin::open(&n).unwrap();
    assert_eq!(a.diagnose().slots[1].state, "writing");
    let (mut p2, t) = Producer::create_or_take_over(&n, cfg()).unwrap();
    let t = t.expect("took over");
    assert_eq!(t.discarded_slots, vec![1]);
    assert_eq!(p2.next_seq(), 1);
    p2.send(b"1", T).unwrap();
    let mut c = Consumer::attach(&n, Expectations::new()).unwrap();
    assert_eq!(&c.read(T).unwrap()[..], b"0");
    assert_eq!(&c.read(T).unwrap()[..], b"1");
    // A different layout is refused.
    drop(p2);
    assert!(matches!(
        Producer::create(&n, Config::new(Policy::Sequential).slot_count(8)),
        Err(Error::LayoutMismatch { .. })
    ));
    datahub::remove(&n).unwrap();
}

#[test]
fn unread_lossless_message_is_not_reset_without_force_and_a_forced_reset_is_reported() {
    let n = name("reset");
    let mut p = Producer::create(&n, Config::new(Policy::Sequential).slot_count(4)).unwrap();
    let mut c = Consumer::attach(&n, Expectations::new()).unwrap();
    p.send(b"a", T).unwrap();
    let a = Admin::open(&n).unwrap();
    assert!(matches!(
        a.force_reset_slot(0, false),
        Err(Error::OwnerAlive { .. })
    ));
    a.force_reset_slot(0, true).unwrap();
    p.send(b"b", T).unwrap();
    match c.read(T) {
        Err(Error::Discarded { slot: 0, seq: 0 }) => {}
        other => panic!("{:?}", other.map(|g| g.seq())),
    }
    let r = c.read(T).unwrap();
    assert_eq!((r.seq(), &r[..]), (1, &b"b"[..]));
}

/// Child half of `spinlock_held_by_a_killed_process_is_reclaimed`: with `DH_CHILD_LOCK` set,
/// attaches, takes spinlock 2 and waits to be killed.
#[test]
#[ignore = "re-exec entry point: runs only in a child process the parent test spawns"]
fn child_lock_and_hang() {
    let Ok(block) = std::env::var("DH_CHILD_LOCK") else {
        return;
    };
    let c = Consumer::attach(&block, Expectations::new()).unwrap();
    let lock = c.spinlock(2).unwrap();
    let _g = lock.lock(T).unwrap();
    println!("locked");
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn spinlock_held_by_a_killed_process_is_reclaimed() {
    use std::io::BufRead;
    let n = name("lockdead");
    let p = Producer::create(&n, Config::new(Policy::Latest)).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "--ignored",
            "child_lock_and_hang",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DH_CHILD_LOCK", &n)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("locked") {
        line.clear();
        assert_ne!(
            out.read_line(&mut line).unwrap(),
            0,
            "child ended before locking"
        );
    }
    let lock = p.spinlock(2).unwrap();
    assert_eq!(lock.holder().map(|(pid, _)| pid), Some(child.id()));
    // Alive: not taken.
    assert!(matches!(
        lock.lock(Duration::from_millis(50)),
        Err(Error::Timeout { .. })
    ));
    child.kill().unwrap();
    child.wait().unwrap();
    let g = lock.lock(T).unwrap();
    assert!(lock.held_by_me());
    assert_eq!(lock.reclaims(), 1);
    drop(g);
    // The dead child's consumer registration is retired by the next attach.
    let _c = Consumer::attach(&n, Expectations::new()).unwrap();
    assert_eq!(p.metrics().consumers_reclaimed, 1);
}

/// `slots_read` counts consumers that left: a consumer leaving moves its count into the
/// block's retired total, and a metrics read that ran through that move used to miss it (the
/// entry no longer ACTIVE, the count not yet folded), so a producer's report could be short by
/// one consumer's reads. Here consumers attach, read and leave over and over while another
/// thread reads the metrics: the total may never go backwards.
#[test]
fn slots_read_never_goes_backwards_while_consumers_leave() {
    use std::sync::atomic::AtomicBool;
    let n = name("retire-metrics");
    let mut p = Producer::create(&n, Config::new(Policy::Latest).slot_count(8)).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let i = datahub::Inspector::open(&n).unwrap();
            let (mut last, mut reads) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let now = i.metrics().slots_read;
                assert!(now >= last, "slots_read went back from {last} to {now}");
                last = now;
                reads += 1;
            }
            reads
        });
        let leaver = s.spawn(|| {
            for _ in 0..400 {
                let mut c = Consumer::attach(&n, Expectations::new()).unwrap();
                for _ in 0..4 {
                    if let Ok(Some(r)) = c.try_read() {
                        r.release().unwrap();
                    }
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
        while !stop.load(Ordering::Relaxed) {
            p.with_write(T, |w| {
                w[0] = 1;
                Some(1)
            })
            .unwrap();
        }
        leaver.join().unwrap();
        assert!(watcher.join().unwrap() > 0, "the watcher read the metrics");
    });
    assert!(p.metrics().slots_read > 0, "consumers read something");
}

/// `remove_dead` takes a block that is not published yet for a creator's corpse; racing a
/// creator in the instant between its `O_CREAT|O_EXCL` and its lock, it may unlink the new
/// file and let go of it before the creator locks. The creator must then give up (Busy), not
/// go on with a file no name refers to while another block takes the name (seen in CI as a
/// `datahub pub` that waited 30 s for a consumer that attached to the other block).
#[test]
fn a_creator_whose_new_file_was_unlinked_by_a_remover_gives_up_instead_of_producing_into_it() {
    let n = name("remove-race");
    let threads: Vec<_> = (1..=4u32)
        .map(|t| {
            let n = n.clone();
            std::thread::spawn(move || {
                let mut created = 0;
                for _ in 0..400 {
                    let _ = datahub::remove_dead(&n);
                    let config = Config::new(Policy::Sequential)
                        .slot_size(64)
                        .slot_count(2)
                        .schema(Schema::named("remove-race", t));
                    let Ok(p) = Producer::create(&n, config) else {
                        continue;
                    };
                    // Live and locked: nobody may have taken the name from it.
                    let found = Inspector::open(&n).map(|i| i.info().schema_version);
                    assert_eq!(found.ok(), Some(t), "thread {t}: the name is not its block");
                    created += 1;
                    drop(p);
                }
                created
            })
        })
        .collect();
    let created: u32 = threads.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(created > 0, "no thread ever created the block");
    let _ = datahub::remove(&n);
}

#[test]
fn wait_readable_waits_for_a_message_claims_nothing_and_counts_no_timeout() {
    let n = name("wait-readable");
    let mut p = Producer::create(&n, Config::new(Policy::Sequential).slot_size(64)).unwrap();
    let mut c = Consumer::attach(&n, Expectations::new()).unwrap();
    assert!(!c.readable());
    let e = c.wait_readable(Duration::from_millis(30)).unwrap_err();
    assert!(matches!(
        e,
        Error::Timeout {
            cause: WaitCause::NoData,
            ..
        }
    ));
    assert_eq!(
        c.metrics().reader_timeouts,
        0,
        "a wait that claims nothing counts nothing"
    );
    p.send(b"one", T).unwrap();
    c.wait_readable(T).unwrap();
    assert!(c.readable());
    assert_eq!(c.position(), 0, "waiting read nothing");
    let g = c.read(Duration::ZERO).unwrap();
    assert_eq!(&g[..], b"one");
    g.release().unwrap();
    p.close();
    c.wait_readable(T).unwrap(); // the end of the stream is an answer too
    assert!(matches!(c.read(Duration::ZERO), Err(Error::EndOfStream)));
}
