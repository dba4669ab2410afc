//! Crash storms: writer and reader processes SIGKILLed at random points and restarted, then
//! the stream is checked for loss, corruption and leftover holds; and the bound on how long a
//! dead reader can block the writer. The test binary re-executes itself to run the `child_*`
//! functions as separate processes (see `support/mod.rs`).
//!
//! `DATAHUB_CRASH_ITERS` (default 100) sets the storm's kill count, `DATAHUB_CRASH_SEED` its
//! seed (printed on every run, so a failure can be replayed).

mod support;

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use datahub::{
    Admin, ChecksumPolicy, Config, Consumer, Error, Expectations, Policy, Preset, Producer,
    SlotOrder,
};
use serde_json::json;
use support::{BlockGuard, ChildProc, Rng, TempDir, child, mix, mono_ns, param, tell};

const T: Duration = Duration::from_secs(10);
const HB: Duration = Duration::from_millis(200);
const SLOTS: u32 = 4;
const LEN: usize = 64;

/// The timing assertions need the CPU: the tests of this file run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Message `seq`: the seq, then 7 words derived from it.
fn payload(seq: u64) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[..8].copy_from_slice(&seq.to_le_bytes());
    for k in 1..LEN / 8 {
        b[k * 8..k * 8 + 8]
            .copy_from_slice(&mix(seq.wrapping_mul(8).wrapping_add(k as u64)).to_le_bytes());
    }
    b
}

/// The storm's block: a 4-slot lossless ring, in the slot order the parent chose (`ORDER`:
/// `ring` or `recent`).
fn storm_config() -> Config {
    let order = match support::param_or::<String>("ORDER", "ring".into()).as_str() {
        "recent" => SlotOrder::Recent,
        _ => SlotOrder::Ring,
    };
    Config::new(Policy::Sequential)
        .slot_order(order)
        .slot_count(SLOTS)
        .slot_size(LEN as u32)
        .checksum(ChecksumPolicy::Enforced)
        .heartbeat_timeout(HB)
        .unlink_on_drop(false)
}

// ---------------------------------------------------------------------------------------------
// The lossless storm.

/// Child: takes the block over (or creates it) and writes numbered messages until killed.
/// Now and then it dawdles between the two halves of a payload, so kills land mid-write too.
#[test]
#[ignore = "re-exec entry point: runs only in a child process the parent test spawns"]
fn child_storm_writer() {
    let Some(()) = child("storm_writer") else {
        return;
    };
    let name: String = param("NAME");
    let mut rng = Rng::new(param("SEED"));
    let batch: u64 = support::param_or("BATCH", 1);
    let (mut p, t) = Producer::create_or_take_over(&name, storm_config()).unwrap();
    let takeover = t.map(|t| {
        json!({
            "previous_pid": t.previous_pid,
            "discarded_slots": t.discarded_slots,
            "finished_seq": t.finished_seq,
            "finished": t.finished,
        })
    });
    let mut next = p.next_seq();
    tell(
        "ready",
        &json!({ "next_seq": next, "takeover": takeover }).to_string(),
    );
    loop {
        if batch > 1 {
            // A batch of 1..=BATCH messages, each written in two halves with a dawdle between,
            // so kills land mid-batch.
            let k = 1 + rng.below(batch) as usize;
            let mut b = match p.write_batch(k, Duration::from_secs(1)) {
                Ok(b) => b,
                Err(Error::Timeout { .. }) => continue,
                Err(e) => panic!("batch of {k} at seq {next}: {e}"),
            };
            assert_eq!(b.first_seq(), next, "writer skipped or repeated a seq");
            for j in 0..k {
                let m = payload(next + j as u64);
                b.slot_mut(j)[..LEN / 2].copy_from_slice(&m[..LEN / 2]);
                if rng.below(8) == 0 {
                    std::thread::sleep(Duration::from_micros(rng.below(300)));
                }
                b.slot_mut(j)[LEN / 2..LEN].copy_from_slice(&m[LEN / 2..]);
                b.set_len(j, LEN);
            }
            b.commit().unwrap();
            next += k as u64;
            continue;
        }
        let mut w = match p.write(Duration::from_secs(1)) {
            Ok(w) => w,
            // No reader (killed, not yet replaced): the ring stays full.
            Err(Error::Timeout { .. }) => continue,
            Err(e) => panic!("write of seq {next}: {e}"),
        };
        assert_eq!(w.seq(), next, "writer skipped or repeated a seq");
        let b = payload(next);
        w[..LEN / 2].copy_from_slice(&b[..LEN / 2]);
        if rng.below(8) == 0 {
            std::thread::sleep(Duration::from_micros(rng.below(300)));
        }
        w[LEN / 2..LEN].copy_from_slice(&b[LEN / 2..]);
        w.commit(LEN).unwrap();
        next += 1;
    }
}

/// Child: reads until killed (or, with `DRAIN_TO`, until that seq is read). Every message is
/// checked (payload derived from its seq, Enforced checksum) and its seq appended to `LOG`
/// (8 bytes, one `write` each) *before* the slot is released, so a message missing from the
/// logs was never delivered, and the one a killed reader held is delivered again.
#[test]
#[ignore = "re-exec entry point: runs only in a child process the parent test spawns"]
fn child_storm_reader() {
    let Some(()) = child("storm_reader") else {
        return;
    };
    let name: String = param("NAME");
    let log_path: String = param("LOG");
    let drain_to: Option<u64> = std::env::var("DATAHUB_TEST_DRAIN_TO")
        .ok()
        .map(|s| s.parse().unwrap());
    let mut rng = Rng::new(param("SEED"));
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .unwrap();
    let mut c =
        Consumer::attach_wait(&name, Expectations::new().policy(Policy::Sequential), T).unwrap();
    tell("ready", &json!({ "position": c.position() }).to_string());
    if drain_to == Some(c.position()) {
        return;
    }
    let batch: u64 = support::param_or("BATCH", 1);
    loop {
        let pos = c.position();
        if batch > 1 {
            let b = match c.read_batch(1 + rng.below(batch) as usize, Duration::from_secs(1)) {
                Ok(b) => b,
                Err(Error::Timeout { .. }) => continue,
                Err(e) => panic!("batch read at position {pos}: {e}"),
            };
            let mut last = None;
            for (seq, m) in b.iter() {
                if m.len() != LEN || m != payload(seq) {
                    panic!("corrupt message in a batch: seq {seq}, len {}", m.len());
                }
                log.write_all(&seq.to_le_bytes()).unwrap();
                last = Some(seq);
            }
            if rng.below(4) == 0 {
                std::thread::sleep(Duration::from_micros(rng.below(500)));
            }
            b.release().unwrap();
            let last = last.expect("a batch holds a message");
            if drain_to.is_some_and(|d| last + 1 >= d) {
                assert_eq!(Some(last + 1), drain_to, "read past the drain point");
                return;
            }
            continue;
        }
        let r = match c.read(Duration::from_secs(1)) {
            Ok(r) => r,
            // The writer is dead or not yet restarted.
            Err(Error::Timeout { .. }) => continue,
            Err(e) => panic!("read at position {pos}: {e}"),
        };
        let seq = r.seq();
        if r.len() != LEN || r[..] != payload(seq) {
            panic!(
                "corrupt message: seq {seq}, len {}, bytes {:?}",
                r.len(),
                &r[..]
            );
        }
        log.write_all(&seq.to_le_bytes()).unwrap();
        if rng.below(4) == 0 {
            // Hold the slot a while: a kill now lands mid-read.
            std::thread::sleep(Duration::from_micros(rng.below(500)));
        }
        r.release().unwrap();
        if drain_to == Some(seq + 1) {
            return;
        }
    }
}

#[derive(Debug, Default)]
struct StormStats {
    kills: u64,
    writer_kills: u64,
    reader_kills: u64,
    /// Reader kills after which a slot was still held by the dead reader.
    reader_kills_holding: u64,
    /// Writer kills after which a slot was left `writing` / `draining` / committed unannounced.
    writer_kills_writing: u64,
    writer_kills_draining: u64,
    finished_commits: u64,
    discarded_slots: u64,
    /// Replacements killed before they said they were ready.
    early_kills: u64,
    early_writer_kills: u64,
}

/// The storm's shape: slot order (`ring` / `recent`) and the largest batch (1: single writes
/// and reads).
#[derive(Debug, Clone, Copy)]
struct Shape {
    order: &'static str,
    batch: u64,
}

fn spawn_writer(name: &str, rng: &mut Rng, shape: Shape) -> ChildProc {
    ChildProc::spawn(
        "child_storm_writer",
        "storm_writer",
        &[
            ("NAME", name.to_owned()),
            ("SEED", rng.next_u64().to_string()),
            ("ORDER", shape.order.to_owned()),
            ("BATCH", shape.batch.to_string()),
        ],
    )
}

fn spawn_reader(
    name: &str,
    log: &std::path::Path,
    rng: &mut Rng,
    drain_to: Option<u64>,
    shape: Shape,
) -> ChildProc {
    let mut params = vec![
        ("NAME", name.to_owned()),
        ("LOG", log.display().to_string()),
        ("SEED", rng.next_u64().to_string()),
        ("BATCH", shape.batch.to_string()),
    ];
    if let Some(d) = drain_to {
        params.push(("DRAIN_TO", d.to_string()));
    }
    ChildProc::spawn("child_storm_reader", "storm_reader", &params)
}

/// The attach position a reader reported, if it got that far.
fn ready_position(r: &mut ChildProc, timeout: Duration) -> Option<u64> {
    r.try_expect("ready", timeout).map(|s| {
        serde_json::from_str::<serde_json::Value>(&s).unwrap()["position"]
            .as_u64()
            .unwrap()
    })
}

/// One reader incarnation: its log file and the position it attached at (None: killed before
/// it said).
type LogFile = (std::path::PathBuf, Option<u64>);

/// Every reader incarnation's log, in order.
fn read_logs(logs: &[LogFile]) -> Vec<(Option<u64>, Vec<u64>)> {
    logs.iter()
        .map(|(p, start)| {
            let bytes = std::fs::read(p).unwrap_or_default();
            // A write cut short by SIGKILL (never seen in practice) is dropped: its message
            // was not released, so the next reader gets it again.
            let seqs = bytes
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (*start, seqs)
        })
        .collect()
}

/// Checks the logs: within one reader incarnation the seqs are consecutive from where it
/// attached; each incarnation starts at most `batch` messages before the end of what the
/// previous ones delivered (redelivery of what it held when killed: one message, or up to a
/// batch) or just after it; together they cover `0..end` exactly. Returns the number of
/// incarnations that began with a redelivery.
fn check_logs(logs: &[(Option<u64>, Vec<u64>)], end: u64, batch: u64) -> u64 {
    let mut next = 0u64; // one past the highest seq delivered so far
    let mut redelivered = 0;
    for (k, (start, seqs)) in logs.iter().enumerate() {
        if let (Some(start), Some(&first)) = (start, seqs.first()) {
            assert_eq!(
                first, *start,
                "reader {k}: first message is not its attach position"
            );
        }
        let Some(start) = start.or(seqs.first().copied()) else {
            continue;
        };
        assert!(
            start == next || (start < next && next - start <= batch),
            "reader {k} attached at {start}, but messages up to {next} had been delivered: {}",
            if start > next {
                "a gap (messages lost)"
            } else {
                "position went backwards"
            }
        );
        if seqs.first().is_some_and(|&f| f < next) {
            redelivered += 1;
        }
        for w in seqs.windows(2) {
            assert_eq!(w[1], w[0] + 1, "reader {k}: {} followed by {}", w[0], w[1]);
        }
        if let Some(&last) = seqs.last() {
            next = next.max(last + 1);
        }
    }
    assert_eq!(
        next, end,
        "messages {next}..{end} were committed but never delivered (or beyond commit)"
    );
    redelivered
}

#[test]
fn crash_storm_lossless_writer_and_reader_killed_at_random() {
    crash_storm(
        Shape {
            order: "ring",
            batch: 1,
        },
        100,
    );
}

/// The same storm on a recent-slots block (slot indirection: the producer's free list is
/// rebuilt from the position lines at every takeover).
#[test]
fn crash_storm_recent_slots_writer_and_reader_killed_at_random() {
    crash_storm(
        Shape {
            order: "recent",
            batch: 1,
        },
        60,
    );
}

/// The storm with batches of 1-3 messages written and read at once, in both slot orders: a
/// batch a killed writer left is announced whole or not at all.
#[test]
fn crash_storm_batches_all_or_nothing_writer_and_reader_killed_at_random() {
    crash_storm(
        Shape {
            order: "ring",
            batch: 3,
        },
        40,
    );
    crash_storm(
        Shape {
            order: "recent",
            batch: 3,
        },
        40,
    );
}

fn crash_storm(shape: Shape, default_iters: u64) {
    let order = shape.order;
    let _s = serial();
    let iters: u64 = std::env::var("DATAHUB_CRASH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_iters);
    let seed = support::seed_from_env("DATAHUB_CRASH_SEED");
    println!("crash storm ({order}): DATAHUB_CRASH_SEED={seed} DATAHUB_CRASH_ITERS={iters}");
    let mut rng = Rng::new(seed);
    let g = BlockGuard::new(&format!("storm-{order}-{}", shape.batch));
    let dir = TempDir::new("storm");
    let name = g.name.as_str();
    let n = u64::from(SLOTS);
    let t0 = Instant::now();

    let mut w = spawn_writer(name, &mut rng, shape);
    assert_eq!(
        w.expect_json("ready", T),
        json!({ "next_seq": 0, "takeover": null })
    );
    let mut logs: Vec<LogFile> = Vec::new();
    let new_log = |logs: &Vec<LogFile>| dir.path.join(format!("reader-{}.log", logs.len()));
    let path = new_log(&logs);
    let mut r = spawn_reader(name, &path, &mut rng, None, shape);
    let pos = ready_position(&mut r, T);
    assert_eq!(pos, Some(0));
    logs.push((path, pos));
    let mut st = StormStats::default();

    for it in 0..iters {
        std::thread::sleep(Duration::from_micros(rng.below(20_001)));
        let victim = rng.below(5); // 0,1: writer; 2,3: reader; 4: both
        let kill_writer = victim < 2 || victim == 4;
        let kill_reader = victim >= 2;
        st.kills += 1;
        if kill_reader {
            r.kill();
            st.reader_kills += 1;
            let d = Admin::open(name).unwrap().diagnose();
            if d.slots.iter().any(|s| !s.dead_readers.is_empty()) {
                st.reader_kills_holding += 1;
            }
        }
        if kill_writer {
            let mut dead_pids = vec![w.pid()];
            w.kill();
            st.writer_kills += 1;
            if rng.below(5) == 0 {
                // A replacement killed while it starts up (perhaps mid-takeover).
                let mut early = spawn_writer(name, &mut rng, shape);
                std::thread::sleep(Duration::from_micros(rng.below(10_000)));
                dead_pids.push(early.pid());
                early.kill();
                st.early_kills += 1;
                st.early_writer_kills += 1;
            }
            let a = Admin::open(name).unwrap();
            let info = a.info();
            let c = info.commit_index;
            let claimed = info.write_index.wrapping_sub(c);
            assert!(
                claimed <= shape.batch,
                "iteration {it}: write index {} vs commit index {c}",
                info.write_index
            );
            let d = a.diagnose();
            let writing: Vec<u64> = d
                .slots
                .iter()
                .filter(|s| s.state == "writing")
                .map(|s| s.slot as u64)
                .collect();
            if !writing.is_empty() {
                st.writer_kills_writing += 1;
            }
            if d.slots.iter().any(|s| s.state == "draining") {
                st.writer_kills_draining += 1;
            }
            drop(a);
            w = spawn_writer(name, &mut rng, shape);
            let ready = w.expect_json("ready", T);
            let t = &ready["takeover"];
            let prev = t["previous_pid"].as_u64().unwrap() as u32;
            assert!(
                dead_pids.contains(&prev),
                "iteration {it}: took over from {prev}, killed {dead_pids:?}"
            );
            let finished = t["finished_seq"].as_u64();
            let finished_count = t["finished"].as_u64().unwrap();
            if let Some(f) = finished {
                assert_eq!(
                    f, c,
                    "iteration {it}: finished a commit that is not the next one: {ready}"
                );
                // All or nothing: the whole claimed run (one write, or a batch).
                assert_eq!(
                    finished_count, claimed,
                    "iteration {it}: announced part of a claimed run: {ready}"
                );
                st.finished_commits += 1;
            } else {
                assert_eq!(finished_count, 0, "iteration {it}: {ready}");
            }
            let discarded = t["discarded_slots"].as_array().unwrap();
            assert!(discarded.len() as u64 <= claimed, "iteration {it}: {ready}");
            for s in discarded {
                let s = s.as_u64().unwrap();
                // Ring order: a slot of the claimed run; recent slots: any, but one being
                // written when the writer died.
                assert!(
                    writing.contains(&s)
                        && (order == "recent" || (0..claimed).any(|j| s == (c + j) % n)),
                    "iteration {it}: discarded a slot not being written ({writing:?}): {ready}"
                );
            }
            st.discarded_slots += discarded.len() as u64;
            assert_eq!(
                ready["next_seq"].as_u64().unwrap(),
                c + finished_count,
                "iteration {it}: new writer does not continue at the commit index: {ready}"
            );
        }
        if kill_reader {
            if rng.below(5) == 0 {
                // A replacement killed while it starts up (perhaps mid-attach).
                let path = new_log(&logs);
                let mut early = spawn_reader(name, &path, &mut rng, None, shape);
                std::thread::sleep(Duration::from_micros(rng.below(10_000)));
                early.kill();
                st.early_kills += 1;
                let pos = ready_position(&mut early, Duration::from_millis(500));
                logs.push((path, pos));
            }
            let path = new_log(&logs);
            r = spawn_reader(name, &path, &mut rng, None, shape);
            let pos = ready_position(&mut r, T);
            assert!(pos.is_some(), "iteration {it}: reader did not attach");
            logs.push((path, pos));
        }
    }

    // Last kill of both, then recovery from the outside.
    r.kill();
    w.kill();
    let a = Admin::open(name).unwrap();
    let actions = a.auto_recover(false);
    let d = a.diagnose();
    for s in &d.slots {
        assert!(
            s.dead_readers.is_empty(),
            "slot {} still held by dead consumers after auto_recover: {s:?}",
            s.slot
        );
        assert!(
            s.state == "committed" || s.state == "free",
            "slot {} left {} after auto_recover",
            s.slot,
            s.state
        );
    }
    assert!(
        d.info.consumers.is_empty(),
        "dead consumers still registered: {:?}",
        d.info.consumers
    );
    let v = a.validate(false);
    assert!(
        v.ok(),
        "after the storm and auto_recover: {:?} (actions {actions:?})",
        v.problems
    );
    let end = d.info.commit_index;
    assert_eq!(d.info.write_index, end);
    // One incarnation per writer that got through its takeover.
    let inc = d.info.producer_incarnation;
    assert!(
        inc > st.writer_kills && inc <= st.writer_kills + 1 + st.early_writer_kills,
        "incarnation {inc} after {} writer kills ({} early)",
        st.writer_kills,
        st.early_writer_kills
    );

    // A last reader drains what is left; then every committed message must have been delivered.
    let path = new_log(&logs);
    let mut last = spawn_reader(name, &path, &mut rng, Some(end), shape);
    let pos = ready_position(&mut last, T);
    assert!(pos.is_some(), "the final reader did not attach");
    logs.push((path, pos));
    last.wait_success(T);
    let m = a.metrics();
    let logs = read_logs(&logs);
    let redelivered = check_logs(&logs, end, shape.batch);
    assert_eq!(m.checksum_failures, 0);
    assert_eq!(m.validation_failures, 0);
    assert_eq!(m.overruns, 0);
    let v = a.validate(false);
    assert!(v.ok(), "after the final drain: {:?}", v.problems);
    drop(a);

    let summary = json!({
        "seed": seed,
        "iterations": iters,
        "kills": st.kills,
        "writer_kills": st.writer_kills,
        "writer_kills_mid_write": st.writer_kills_writing,
        "writer_kills_draining": st.writer_kills_draining,
        "takeover_finished_commits": st.finished_commits,
        "takeover_discarded_slots": st.discarded_slots,
        "reader_kills": st.reader_kills,
        "early_kills_during_startup": st.early_kills,
        "reader_kills_holding_a_slot": st.reader_kills_holding,
        "reader_incarnations": logs.len(),
        "messages_committed": end,
        "redelivered_after_reader_kill": redelivered,
        "consumers_reclaimed": m.consumers_reclaimed,
        "auto_recover_actions": actions.len(),
        "elapsed_ms": t0.elapsed().as_millis() as u64,
    });
    println!("crash storm: {summary}");
    assert!(end > 0, "no message got through the storm");
}

// ---------------------------------------------------------------------------------------------
// How long a dead reader can block the writer.

/// Child: writes until stdin closes, timing every `write()`; reports each write that waited
/// more than 20 ms (with the `CLOCK_MONOTONIC` time it returned) and the longest wait.
#[test]
#[ignore = "re-exec entry point: runs only in a child process the parent test spawns"]
fn child_bound_writer() {
    let Some(()) = child("bound_writer") else {
        return;
    };
    let name: String = param("NAME");
    let mode: String = param("MODE");
    let cfg = match mode.as_str() {
        "sequential" => Config::preset(Preset::RingBuffer(SLOTS)),
        "single" => Config::preset(Preset::Single),
        m => panic!("mode {m}"),
    };
    let max_writes: u64 = support::param_or("MAX_WRITES", u64::MAX);
    let mut p = Producer::create(&name, cfg.slot_size(LEN as u32).heartbeat_timeout(HB)).unwrap();
    tell("ready", "");
    if max_writes == u64::MAX {
        p.wait_for_consumers(1, T).unwrap();
    }
    let stop = support::stop_flag_on_stdin();
    let (mut max_wait, mut writes, mut timeouts) = (Duration::ZERO, 0u64, 0u64);
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        if writes == max_writes {
            // Idle: no library call, so no wait of the producer's retires a dead reader.
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let t = Instant::now();
        let mut g = match p.write(Duration::from_secs(5)) {
            Ok(g) => g,
            Err(Error::Timeout { .. }) => {
                timeouts += 1;
                tell("timeout", &json!({ "end_ns": mono_ns() }).to_string());
                continue;
            }
            Err(e) => panic!("{e}"),
        };
        let waited = t.elapsed();
        let end_ns = mono_ns();
        let seq = g.seq();
        g[..LEN].copy_from_slice(&payload(seq));
        g.commit(LEN).unwrap();
        writes += 1;
        max_wait = max_wait.max(waited);
        if waited > Duration::from_millis(20) {
            let j = json!({ "seq": seq, "wait_us": waited.as_micros() as u64, "end_ns": end_ns });
            tell("blocked", &j.to_string());
        }
        // Leave the CPU to the others (2-core machine).
        std::thread::sleep(Duration::from_micros(200));
    }
    let report = json!({ "max_wait_us": max_wait.as_micros() as u64, "writes": writes, "timeouts": timeouts });
    tell("report", &report.to_string());
}

/// Child: reads until it gets seq >= `HOLD_AT`, then holds that slot until killed (checking
/// that the held bytes stay intact meanwhile).
#[test]
#[ignore = "re-exec entry point: runs only in a child process the parent test spawns"]
fn child_holding_reader() {
    let Some(()) = child("holding_reader") else {
        return;
    };
    let name: String = param("NAME");
    let hold_at: u64 = param("HOLD_AT");
    let mut c = Consumer::attach_wait(&name, Expectations::new(), T).unwrap();
    loop {
        let r = c.read(T).unwrap();
        let seq = r.seq();
        assert_eq!(r[..], payload(seq));
        if seq >= hold_at {
            tell("holding", &seq.to_string());
            std::thread::sleep(Duration::from_millis(150));
            assert_eq!(r[..], payload(seq), "held slot changed under its reader");
            assert!(r.seq() == seq);
            tell("intact", &seq.to_string());
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Child: reads (checking each message) until stdin closes; reports the first seq it read.
#[test]
#[ignore = "re-exec entry point: runs only in a child process the parent test spawns"]
fn child_plain_reader() {
    let Some(()) = child("plain_reader") else {
        return;
    };
    let name: String = param("NAME");
    let mut c = Consumer::attach_wait(&name, Expectations::new(), T).unwrap();
    let stop = support::stop_flag_on_stdin();
    let mut first = None;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        match c.read(Duration::from_millis(50)) {
            Ok(r) => {
                assert_eq!(r[..], payload(r.seq()));
                if first.is_none() {
                    first = Some(r.seq());
                    tell("first", &r.seq().to_string());
                }
            }
            Err(Error::Timeout { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

/// Waits for the writer's first write that returned after `kill_ns`; returns (its end - kill,
/// the writer's wait). Panics if a blocked write returned before the kill, i.e. while the live
/// reader still held what the write needed.
fn recovery_after_kill(
    w: &mut ChildProc,
    kill_ns: u64,
    first_blocked_seq: u64,
) -> (Duration, Duration) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Some(line) = w.try_expect(
        "blocked",
        deadline.saturating_duration_since(Instant::now()),
    ) {
        let j: serde_json::Value = serde_json::from_str(&line).unwrap();
        let (seq, end) = (j["seq"].as_u64().unwrap(), j["end_ns"].as_u64().unwrap());
        if seq < first_blocked_seq {
            continue;
        }
        assert!(
            end > kill_ns,
            "write of seq {seq} went through while the reader was alive: {j}"
        );
        return (
            Duration::from_nanos(end - kill_ns),
            Duration::from_micros(j["wait_us"].as_u64().unwrap()),
        );
    }
    panic!("the writer did not get past the dead reader within 5 s");
}

/// Sequential: the only reader is killed holding a slot with the ring full; a new reader
/// attaches at once; the writer's blocked write must go through within 2 × heartbeat timeout
/// of the kill, and the new reader gets the held message again.
#[test]
fn dead_reader_blocks_sequential_writer_at_most_two_heartbeats() {
    let _s = serial();
    let g = BlockGuard::new("bound-seq");
    let nm = || ("NAME", g.name.clone());
    let mut w = ChildProc::spawn(
        "child_bound_writer",
        "bound_writer",
        &[nm(), ("MODE", "sequential".into())],
    );
    w.expect("ready", T);
    const HOLD: u64 = 10;
    let mut r1 = ChildProc::spawn(
        "child_holding_reader",
        "holding_reader",
        &[nm(), ("HOLD_AT", HOLD.to_string())],
    );
    assert_eq!(r1.expect("holding", T), HOLD.to_string());
    assert_eq!(r1.expect("intact", T), HOLD.to_string());
    // The writer has filled the ring up to the held message and waits (lossless).
    let a = Admin::open(&g.name).unwrap();
    let blocked_at = HOLD + u64::from(SLOTS);
    assert_eq!(
        a.info().commit_index,
        blocked_at,
        "the writer passed a live reader's position"
    );
    let kill_ns = mono_ns();
    r1.kill();
    let mut r2 = ChildProc::spawn("child_plain_reader", "plain_reader", &[nm()]);
    assert_eq!(
        r2.expect("first", T),
        HOLD.to_string(),
        "the held message must be delivered again"
    );
    let (after_kill, waited) = recovery_after_kill(&mut w, kill_ns, blocked_at);
    w.close_stdin();
    let rep = w.expect_json("report", T);
    r2.close_stdin();
    w.wait_success(T);
    r2.wait_success(T);
    println!(
        "sequential: writer unblocked {after_kill:?} after the reader's SIGKILL (bound {:?}; that write waited {waited:?} in all; writer {rep})",
        2 * HB
    );
    assert_eq!(rep["timeouts"], 0, "{rep}");
    assert!(
        after_kill <= 2 * HB,
        "writer blocked {after_kill:?} after its reader died (bound {:?})",
        2 * HB
    );
}

/// Latest, one slot: the reader holds the slot and is killed (left a zombie: not reaped); no
/// reader replaces it. The writer's blocked write must go through within 2 × heartbeat
/// timeout of the kill (the dead reader's hold is reclaimed).
#[test]
fn dead_reader_blocks_single_slot_writer_at_most_two_heartbeats() {
    let _s = serial();
    let g = BlockGuard::new("bound-single");
    let nm = || ("NAME", g.name.clone());
    let mut w = ChildProc::spawn(
        "child_bound_writer",
        "bound_writer",
        &[nm(), ("MODE", "single".into())],
    );
    w.expect("ready", T);
    let mut r1 = ChildProc::spawn(
        "child_holding_reader",
        "holding_reader",
        &[nm(), ("HOLD_AT", "0".into())],
    );
    let held: u64 = r1.expect("holding", T).parse().unwrap();
    r1.expect("intact", T);
    let a = Admin::open(&g.name).unwrap();
    let d = a.diagnose();
    assert_eq!(
        d.slots[0].seq,
        Some(held),
        "the writer overwrote a held slot: {:?}",
        d.slots[0]
    );
    assert_eq!(
        d.slots[0].state, "draining",
        "the writer should be waiting for the reader: {:?}",
        d.slots[0]
    );
    let kill_ns = mono_ns();
    r1.kill_no_reap();
    let (after_kill, waited) = recovery_after_kill(&mut w, kill_ns, held + 1);
    let zombie = is_zombie(r1.pid());
    r1.reap();
    w.close_stdin();
    let rep = w.expect_json("report", T);
    w.wait_success(T);
    println!(
        "single: writer unblocked {after_kill:?} after the reader's SIGKILL (reader a zombie meanwhile: {zombie}; bound {:?}; that write waited {waited:?} in all; writer {rep})",
        2 * HB
    );
    assert_eq!(rep["timeouts"], 0, "{rep}");
    assert!(
        after_kill <= 2 * HB,
        "writer blocked {after_kill:?} after its reader died (bound {:?})",
        2 * HB
    );
    assert_eq!(a.metrics().consumers_reclaimed, 1);
}

/// Sequential, writer idle (not waiting, so it retires nobody): the reader is killed holding a
/// slot and left a zombie; a new reader attaching at once must retire it, take its place and
/// get the held message again.
#[test]
fn reader_killed_while_writer_idles_is_retired_at_the_next_attach() {
    let _s = serial();
    let g = BlockGuard::new("attach-reclaim");
    let nm = || ("NAME", g.name.clone());
    let mut w = ChildProc::spawn(
        "child_bound_writer",
        "bound_writer",
        &[
            nm(),
            ("MODE", "sequential".into()),
            ("MAX_WRITES", "3".into()),
        ],
    );
    w.expect("ready", T);
    let mut r1 = ChildProc::spawn(
        "child_holding_reader",
        "holding_reader",
        &[nm(), ("HOLD_AT", "1".into())],
    );
    assert_eq!(r1.expect("holding", T), "1");
    r1.kill_no_reap();
    // SIGKILL is not instant: until the process has exited it is alive and keeps its entry.
    let t = Instant::now();
    while !is_zombie(r1.pid()) {
        assert!(t.elapsed() < T, "killed reader never became a zombie");
        std::thread::sleep(Duration::from_micros(200));
    }
    let mut r2 = ChildProc::spawn("child_plain_reader", "plain_reader", &[nm()]);
    assert_eq!(
        r2.expect("first", T),
        "1",
        "the held message must be delivered again"
    );
    assert!(
        is_zombie(r1.pid()),
        "the test meant to attach while the dead reader was a zombie"
    );
    r1.reap();
    let m = Admin::open(&g.name).unwrap().metrics();
    assert_eq!(m.consumers_reclaimed, 1, "{m:?}");
    r2.close_stdin();
    w.close_stdin();
    r2.wait_success(T);
    w.wait_success(T);
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

/// Sets consumer entry `entry`'s state word (header offset 4096 + 64 × entry, see
/// docs/datahub-format.md) through the segment file.
fn set_entry_state(name: &str, entry: u64, state: u32) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/{name}"))
        .unwrap();
    f.write_all_at(&state.to_le_bytes(), 4096 + 64 * entry)
        .unwrap();
}

const CLAIMING: u32 = 1;

/// A process SIGKILLed between claiming a registered consumer's entry for cleaning
/// (`state` ACTIVE → CLAIMING) and freeing it leaves exactly this: the entry CLAIMING, its bit
/// still in `active_mask`, its position and pid those of a dead reader. That happens when a
/// reader is killed inside `Consumer::drop`, or when the process retiring a dead reader (the
/// producer in a wait, a consumer in `attach`, an admin tool) is killed inside
/// `Block::retire_consumer`. The window is a few instructions, so the state is set through
/// the segment file rather than hoped for: the reader is killed for real, and its entry is
/// marked CLAIMING as the dying retirer would have left it.
///
/// Expected: the dead reader is still recovered from (a new reader attaches and gets the held
/// message; the writer is unblocked within 2 × heartbeat timeout). Now: nothing ever retires a
/// CLAIMING entry (`reclaim_dead_consumers` only takes ACTIVE ones, `claim_entry` only FREE
/// ones), so every attach fails with `TooManyConsumers { max: 1 }` and the writer waits on
/// the dead reader's position forever (`read_floor` counts every bit of `active_mask`).
#[test]
fn entry_left_claiming_by_a_killed_retirer_is_recovered() {
    let _s = serial();
    let g = BlockGuard::new("claiming-retire");
    let nm = || ("NAME", g.name.clone());
    let mut w = ChildProc::spawn(
        "child_bound_writer",
        "bound_writer",
        &[nm(), ("MODE", "sequential".into())],
    );
    w.expect("ready", T);
    const HOLD: u64 = 2;
    let mut r1 = ChildProc::spawn(
        "child_holding_reader",
        "holding_reader",
        &[nm(), ("HOLD_AT", HOLD.to_string())],
    );
    assert_eq!(r1.expect("holding", T), HOLD.to_string());
    r1.expect("intact", T);
    // Sequential: the one consumer is entry 0. Marked CLAIMING before the kill so that the
    // writer's own retiring (every 50 ms) cannot get in first; the end state is the same.
    set_entry_state(&g.name, 0, CLAIMING);
    let kill_ns = mono_ns();
    r1.kill();
    let mut r2 = ChildProc::spawn("child_plain_reader", "plain_reader", &[nm()]);
    let first = r2.try_expect("first", Duration::from_secs(3));
    let d = Admin::open(&g.name).unwrap().diagnose();
    assert_eq!(
        first.as_deref(),
        Some("2"),
        "no new reader could attach after the dead reader's entry was left CLAIMING (consumers {:?}, problems {:?})",
        d.info.consumers,
        d.problems
    );
    let (after_kill, _) = recovery_after_kill(&mut w, kill_ns, HOLD + u64::from(SLOTS));
    assert!(
        after_kill <= 2 * HB,
        "writer blocked {after_kill:?} after its reader died"
    );
    r2.close_stdin();
    w.close_stdin();
    r2.wait_success(T);
    w.wait_success(T);
}

/// A reader SIGKILLed inside `Consumer::attach` right after it claimed a free entry
/// (`claim_entry`: FREE → CLAIMING, before it stores ACTIVE) leaves the entry CLAIMING, not
/// in `active_mask`. Set through the segment file as in the test above (the window is a few
/// stores). Expected: the next reader attaches. Now: `TooManyConsumers { max: 1 }` for every
/// later attach to this Sequential block (in the other policies the entry is lost for good).
#[test]
fn entry_left_claiming_by_a_reader_killed_mid_attach_is_recovered() {
    let _s = serial();
    let g = BlockGuard::new("claiming-attach");
    let nm = || ("NAME", g.name.clone());
    let mut w = ChildProc::spawn(
        "child_bound_writer",
        "bound_writer",
        &[
            nm(),
            ("MODE", "sequential".into()),
            ("MAX_WRITES", "3".into()),
        ],
    );
    w.expect("ready", T);
    set_entry_state(&g.name, 0, CLAIMING);
    let mut r = ChildProc::spawn("child_plain_reader", "plain_reader", &[nm()]);
    let first = r.try_expect("first", Duration::from_secs(3));
    assert_eq!(
        first.as_deref(),
        Some("0"),
        "no reader could attach after an attach was killed midway"
    );
    r.close_stdin();
    w.close_stdin();
    r.wait_success(T);
    w.wait_success(T);
}
