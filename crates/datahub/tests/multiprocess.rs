//! Producer and consumers in separate processes: this test binary re-executes itself to run
//! one `child_*` function per process (see `support/mod.rs`). The `child_*` tests return at
//! once in a normal run.

mod support;

use std::time::{Duration, Instant};

use datahub::{
    Admin, ChecksumPolicy, Config, Consumer, Error, Expectations, Policy, Producer, SlotOrder,
};
use serde_json::json;
use support::{BlockGuard, ChildProc, child, mix, param, tell};

const T: Duration = Duration::from_secs(10);
/// How long a whole child run may take before the parent gives up on it.
const CHILD_LIMIT: Duration = Duration::from_secs(120);
/// Payload of the lossless streams: 4 words derived from the seq.
const LEN: usize = 32;

fn payload(seq: u64) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[..8].copy_from_slice(&seq.to_le_bytes());
    b[8..16].copy_from_slice(&mix(seq).to_le_bytes());
    b[16..24].copy_from_slice(&mix(seq ^ 0x5555).to_le_bytes());
    b[24..].copy_from_slice(&(!seq).to_le_bytes());
    b
}

/// Order-sensitive checksum of a stream of payloads (FNV-1a over 64-bit words).
fn fold(h: u64, bytes: &[u8]) -> u64 {
    bytes.chunks(8).fold(h, |h, w| {
        let mut x = [0u8; 8];
        x[..w.len()].copy_from_slice(w);
        (h ^ u64::from_le_bytes(x)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

const FOLD0: u64 = 0xCBF2_9CE4_8422_2325;

fn expected_checksum(n: u64) -> u64 {
    (0..n).fold(FOLD0, |h, s| fold(h, &payload(s)))
}

fn count_env(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// Lossless streams: one producer process, 1 (Sequential) or 3 (SequentialSync) consumer
// processes, every message verified in order.

/// Child: creates the block, waits for `CONSUMERS` consumers, sends `N` messages, closes the
/// stream and waits until every consumer has read everything.
#[test]
#[ignore = "re-exec entry point: runs only in a child process the parent test spawns"]
fn child_stream_producer() {
    let Some(()) = child("stream_producer") else {
        return;
    };
    let name: String = param("NAME");
    let n: u64 = param("N");
    let consumers: u32 = param("CONSUMERS");
    let policy = if consumers == 1 {
        Policy::Sequential
    } else {
        Policy::SequentialSync
    };
    let order = match support::param_or::<String>("ORDER", "ring".into()).as_str() {
        "recent" => SlotOrder::Recent,
        _ => SlotOrder::Ring,
    };
    let mut cfg = Config::new(policy)
        .slot_size(LEN as u32)
        .slot_count(64)
        .slot_order(order);
    if consumers > 1 {
        cfg = cfg.max_consumers(consumers);
    }
    let mut p = Producer::create(&name, cfg).unwrap();
    tell("ready", "");
    p.wait_for_consumers(consumers, T).unwrap();
    let t0 = Instant::now();
    for seq in 0..n {
        let mut w = p.write(T).unwrap();
        assert_eq!(w.seq(), seq);
        w[..LEN].copy_from_slice(&payload(seq));
        w.commit(LEN).unwrap();
    }
    p.close();
    p.wait_drained(T).unwrap();
    let m = p.metrics();
    let report = json!({
        "sent": n,
        "elapsed_ms": t0.elapsed().as_millis() as u64,
        "slots_written": m.slots_written,
        "slots_read": m.slots_read,
        "overruns": m.overruns,
    });
    tell("report", &report.to_string());
}

/// Child: reads until the end of the stream, checking each message's seq and bytes.
#[test]
#[ignore = "re-exec entry point: runs only in a child process the parent test spawns"]
fn child_stream_consumer() {
    let Some(()) = child("stream_consumer") else {
        return;
    };
    let name: String = param("NAME");
    let mut c = Consumer::attach_wait(&name, Expectations::new(), T).unwrap();
    tell("attached", &c.entry().to_string());
    let t0 = Instant::now();
    let mut want = 0u64;
    let mut h = FOLD0;
    loop {
        let r = match c.read(T) {
            Ok(r) => r,
            Err(Error::EndOfStream) => break,
            Err(e) => panic!("read of seq {want}: {e}"),
        };
        let seq = r.seq();
        if seq != want || r.len() != LEN || r[..] != payload(seq) {
            panic!(
                "want seq {want}, got seq {seq} len {} bytes {:?}",
                r.len(),
                &r[..]
            );
        }
        h = fold(h, &r);
        want += 1;
    }
    let report = json!({
        "count": want,
        "checksum": h,
        "elapsed_ms": t0.elapsed().as_millis() as u64,
    });
    tell("report", &report.to_string());
}

fn run_stream(tag: &str, n: u64, consumers: u32, order: &str) {
    let g = BlockGuard::new(tag);
    let params = |extra: &[(&'static str, String)]| {
        let mut v = vec![("NAME", g.name.clone()), ("ORDER", order.to_owned())];
        v.extend(extra.iter().cloned());
        v
    };
    let t0 = Instant::now();
    let mut prod = ChildProc::spawn(
        "child_stream_producer",
        "stream_producer",
        &params(&[("N", n.to_string()), ("CONSUMERS", consumers.to_string())]),
    );
    prod.expect("ready", T);
    let mut cons: Vec<ChildProc> = (0..consumers)
        .map(|_| ChildProc::spawn("child_stream_consumer", "stream_consumer", &params(&[])))
        .collect();
    let expected = expected_checksum(n);
    let reports: Vec<serde_json::Value> = cons
        .iter_mut()
        .map(|c| c.expect_json("report", CHILD_LIMIT))
        .collect();
    let p = prod.expect_json("report", CHILD_LIMIT);
    for c in &mut cons {
        c.wait_success(T);
    }
    prod.wait_success(T);
    for (i, r) in reports.iter().enumerate() {
        assert_eq!(r["count"], n, "consumer {i}: {r}");
        assert_eq!(r["checksum"], expected, "consumer {i}: {r}");
    }
    assert_eq!(p["slots_written"], n, "{p}");
    assert_eq!(p["slots_read"], n * u64::from(consumers), "{p}");
    assert_eq!(p["overruns"], 0, "{p}");
    eprintln!(
        "{tag}: {n} messages x {consumers} consumer(s): producer {} ms, consumers {:?} ms, total {:?}",
        p["elapsed_ms"],
        reports
            .iter()
            .map(|r| r["elapsed_ms"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        t0.elapsed()
    );
}

/// Sequential across processes: 1,000,000 messages, each received once, in order, intact.
#[test]
fn sequential_million_messages_across_processes() {
    run_stream(
        "seq",
        count_env("DATAHUB_MP_MESSAGES", 1_000_000),
        1,
        "ring",
    );
}

/// Sequential on a recent-slots block (slot indirection) across processes: every message
/// once, in order, intact.
#[test]
fn sequential_recent_slots_across_processes_every_message_once_in_order() {
    run_stream(
        "seq-recent",
        count_env("DATAHUB_MP_MESSAGES", 1_000_000) / 2,
        1,
        "recent",
    );
}

/// SequentialSync: three consumer processes each receive every message in order.
#[test]
fn sequential_sync_three_consumer_processes() {
    run_stream(
        "sync",
        count_env("DATAHUB_MP_SYNC_MESSAGES", 100_000),
        3,
        "ring",
    );
}

/// SequentialSync on a recent-slots block: a slot is reused only after all three consumer
/// processes have read its message.
#[test]
fn sequential_sync_recent_slots_three_consumer_processes_lose_nothing() {
    run_stream(
        "sync-recent",
        count_env("DATAHUB_MP_SYNC_MESSAGES", 100_000),
        3,
        "recent",
    );
}

// ---------------------------------------------------------------------------------------------
// Latest: readers in other processes never see a torn or mislabelled slot.

const BIG: usize = 4096;

fn fill_byte(seq: u64) -> u8 {
    (mix(seq) % 251) as u8
}

/// Child: writes 4096-byte messages (seq in the first 8 bytes, the rest one seq-derived byte)
/// for `MS` milliseconds once `READERS` readers are attached, then closes.
#[test]
#[ignore = "re-exec entry point: runs only in a child process the parent test spawns"]
fn child_latest_writer() {
    let Some(()) = child("latest_writer") else {
        return;
    };
    let name: String = param("NAME");
    let readers: u32 = param("READERS");
    let ms: u64 = param("MS");
    let cfg = Config::new(Policy::Latest)
        .slot_count(2)
        .slot_size(BIG as u32);
    let mut p = Producer::create(&name, cfg).unwrap();
    tell("ready", "");
    p.wait_for_consumers(readers, T).unwrap();
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < Duration::from_millis(ms) {
        let mut w = p.write(T).unwrap();
        let seq = w.seq();
        assert_eq!(seq, n);
        w[..8].copy_from_slice(&seq.to_le_bytes());
        w[8..BIG].fill(fill_byte(seq));
        w.commit(BIG).unwrap();
        n += 1;
    }
    p.close();
    tell("report", &json!({ "written": n }).to_string());
    // Stay until the parent has the readers' reports (the block goes when this drops).
    support::hear();
}

/// Child: reads the newest message until the end of the stream; checks each is whole.
#[test]
#[ignore = "re-exec entry point: runs only in a child process the parent test spawns"]
fn child_latest_reader() {
    let Some(()) = child("latest_reader") else {
        return;
    };
    let name: String = param("NAME");
    let mut c =
        Consumer::attach_wait(&name, Expectations::new().policy(Policy::Latest), T).unwrap();
    tell("attached", "");
    let mut last: Option<u64> = None;
    let mut reads = 0u64;
    loop {
        let r = match c.read(T) {
            Ok(r) => r,
            Err(Error::EndOfStream) => break,
            Err(e) => panic!("read after {last:?}: {e}"),
        };
        let seq = r.seq();
        assert_eq!(r.len(), BIG, "seq {seq}");
        let stamped = u64::from_le_bytes(r[..8].try_into().unwrap());
        assert_eq!(stamped, seq, "slot labelled {seq} holds message {stamped}");
        let b = fill_byte(seq);
        if let Some(k) = r[8..].iter().position(|&x| x != b) {
            panic!(
                "torn slot: seq {seq}: byte {} is {:#x}, want {b:#x}",
                k + 8,
                r[8 + k]
            );
        }
        assert!(last.is_none_or(|l| seq > l), "seq {seq} after {last:?}");
        last = Some(seq);
        reads += 1;
    }
    tell(
        "report",
        &json!({ "reads": reads, "last": last }).to_string(),
    );
}

#[test]
fn latest_readers_in_other_processes_never_see_torn_slots() {
    const READERS: usize = 3;
    let g = BlockGuard::new("latest");
    let nm = || ("NAME", g.name.clone());
    let mut w = ChildProc::spawn(
        "child_latest_writer",
        "latest_writer",
        &[
            nm(),
            ("READERS", READERS.to_string()),
            ("MS", "1500".into()),
        ],
    );
    w.expect("ready", T);
    let mut rs: Vec<ChildProc> = (0..READERS)
        .map(|_| ChildProc::spawn("child_latest_reader", "latest_reader", &[nm()]))
        .collect();
    let written = w.expect_json("report", CHILD_LIMIT)["written"]
        .as_u64()
        .unwrap();
    let reports: Vec<_> = rs
        .iter_mut()
        .map(|r| r.expect_json("report", CHILD_LIMIT))
        .collect();
    w.close_stdin();
    for r in &mut rs {
        r.wait_success(T);
    }
    w.wait_success(T);
    eprintln!("latest: {written} written; reader reports {reports:?}");
    assert!(written > 0);
    for (i, r) in reports.iter().enumerate() {
        let reads = r["reads"].as_u64().unwrap();
        assert!(reads > 0, "reader {i} read nothing: {r}");
        assert!(reads <= written, "reader {i}: {r}");
        // The stream ended: each reader saw the last message (EndOfStream only comes after it).
        assert_eq!(r["last"], written - 1, "reader {i}: {r}");
    }
}

// ---------------------------------------------------------------------------------------------
// Enforced checksums: a byte flipped by a third process is caught by the consumer.

/// Child: Sequential + Enforced; sends two messages, then a third on the parent's word.
#[test]
#[ignore = "re-exec entry point: runs only in a child process the parent test spawns"]
fn child_sum_producer() {
    let Some(()) = child("sum_producer") else {
        return;
    };
    let name: String = param("NAME");
    let cfg = Config::new(Policy::Sequential)
        .slot_count(4)
        .slot_size(256)
        .checksum(ChecksumPolicy::Enforced);
    let mut p = Producer::create(&name, cfg).unwrap();
    tell("ready", "");
    p.wait_for_consumers(1, T).unwrap();
    assert_eq!(p.send(b"first message, read intact", T).unwrap(), 0);
    assert_eq!(p.send(b"second message, to be damaged", T).unwrap(), 1);
    tell("sent", "2");
    assert_eq!(support::hear(), "more");
    assert_eq!(p.send(b"third message, intact", T).unwrap(), 2);
    p.close();
    p.wait_drained(T).unwrap();
    let m = p.metrics();
    let report = json!({
        "checksum_failures": m.checksum_failures,
        "checksums_verified": m.checksums_verified,
        "slots_read": m.slots_read,
    });
    tell("report", &report.to_string());
}

/// Child: reads message 0, waits for the parent, then reads on and reports what it got.
#[test]
#[ignore = "re-exec entry point: runs only in a child process the parent test spawns"]
fn child_sum_consumer() {
    let Some(()) = child("sum_consumer") else {
        return;
    };
    let name: String = param("NAME");
    let mut c = Consumer::attach_wait(&name, Expectations::new(), T).unwrap();
    tell("attached", "");
    {
        let r = c.read(T).unwrap();
        assert_eq!((r.seq(), &r[..]), (0, &b"first message, read intact"[..]));
    }
    tell("read0", "");
    assert_eq!(support::hear(), "go");
    let damaged = match c.read(T) {
        Err(Error::ChecksumMismatch {
            slot,
            seq,
            expected,
            found,
        }) => {
            assert_ne!(expected, found);
            json!({ "slot": slot, "seq": seq })
        }
        Err(e) => panic!("expected a checksum mismatch, got {e}"),
        Ok(r) => panic!(
            "expected a checksum mismatch, got seq {} = {:?}",
            r.seq(),
            &r[..]
        ),
    };
    let failures = c.metrics().checksum_failures;
    tell(
        "damaged",
        &json!({ "error": damaged, "checksum_failures": failures }).to_string(),
    );
    let mut after = Vec::new();
    loop {
        match c.read(T) {
            Ok(r) => after.push((r.seq(), String::from_utf8_lossy(&r).into_owned())),
            Err(Error::EndOfStream) => break,
            Err(e) => panic!("after the damaged message: {e}"),
        }
    }
    tell("report", &json!({ "after": after }).to_string());
}

/// Child: flips one byte of message `SEQ`'s payload through the segment file.
#[test]
#[ignore = "re-exec entry point: runs only in a child process the parent test spawns"]
fn child_byte_flipper() {
    let Some(()) = child("byte_flipper") else {
        return;
    };
    let name: String = param("NAME");
    let seq: u64 = param("SEQ");
    let info = Admin::open(&name).unwrap().info();
    let slot = seq % u64::from(info.slot_count);
    let off = info.regions.ring_offset + slot * u64::from(info.slot_size) + 7;
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/shm/{name}"))
        .unwrap();
    let mut b = [0u8];
    f.seek(SeekFrom::Start(off)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0x01;
    f.seek(SeekFrom::Start(off)).unwrap();
    f.write_all(&b).unwrap();
    tell(
        "flipped",
        &json!({ "slot": slot, "offset": off }).to_string(),
    );
}

#[test]
fn enforced_checksum_catches_a_byte_flipped_by_another_process() {
    let g = BlockGuard::new("sum");
    let nm = || ("NAME", g.name.clone());
    let mut p = ChildProc::spawn("child_sum_producer", "sum_producer", &[nm()]);
    p.expect("ready", T);
    let mut c = ChildProc::spawn("child_sum_consumer", "sum_consumer", &[nm()]);
    p.expect("sent", T);
    c.expect("read0", T);
    // Message 1 is committed and not yet read: damage it from a third process.
    let mut f = ChildProc::spawn(
        "child_byte_flipper",
        "byte_flipper",
        &[nm(), ("SEQ", "1".into())],
    );
    let flipped = f.expect_json("flipped", T);
    f.wait_success(T);
    assert_eq!(flipped["slot"], 1);
    c.say("go");
    let d = c.expect_json("damaged", T);
    assert_eq!(d["error"], json!({ "slot": 1, "seq": 1 }), "{d}");
    assert_eq!(d["checksum_failures"], 1, "{d}");
    p.say("more");
    let after = c.expect_json("report", T);
    // The damaged message counts as consumed; the stream goes on with the next one.
    assert_eq!(
        after["after"],
        json!([[2, "third message, intact"]]),
        "{after}"
    );
    let pr = p.expect_json("report", T);
    assert_eq!(pr["checksum_failures"], 1, "{pr}");
    assert_eq!(pr["checksums_verified"], 2, "{pr}");
    c.wait_success(T);
    p.wait_success(T);
}
