//! `mmsb ship` / `mmsb follow` / `mmsb promote` / `mmsb trace --ship` against a real
//! `nats-server -js` (tests/support): the automerge-paper trace replicated live and late, and
//! the faults of the failure model, each at least 20 times with random timing (seed printed as
//! `MMSB_TEST_SEED`, which replays it): SIGKILL of the shipper, SIGKILL of the follower, restarts
//! of the server, a second shipper, a paused shipper that wakes after another took over, a
//! corrupted frame published by a rogue client; a follower that joins after a checkpoint and a
//! purge; promotion fencing the old leader.

mod support;

use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mmsb::{Config, EdgeKind, Mmsb, ReplayTarget, State, passthrough};
use support::{Nats, Rng, kill9, run, same_state, spawn, wait_output};

const LONG: Duration = Duration::from_secs(120);

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A bus in this process that writes until stopped: 8-byte writes to a 4 KiB page, each
/// propagated to a derived page (two-frame commits), and every tenth write a dense 1 KiB update
/// of a third page. `Durability::Flush`: a shipper in another process sees each commit.
struct Leader {
    stop: Arc<AtomicBool>,
    /// Commits made so far (for tests that wait for progress).
    commits: Arc<AtomicU64>,
    thread: Option<JoinHandle<u64>>,
}

impl Leader {
    /// Starts writing to a new bus in `dir`, one commit per `every` (at most).
    fn start(dir: &Path, every: Duration) -> Leader {
        let mut bus = Mmsb::start(Config::new(dir)).expect("leader bus");
        let a = bus.create_page(4096).unwrap();
        let b = bus.create_page(4096).unwrap();
        let c = bus.create_page(1024).unwrap();
        bus.add_dependency(a, b, EdgeKind::Data).unwrap();
        bus.register_recompute(b, passthrough()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let commits = Arc::new(AtomicU64::new(0));
        let (st, cm) = (Arc::clone(&stop), Arc::clone(&commits));
        let thread = std::thread::spawn(move || {
            let mut i: u64 = 0;
            while !st.load(Ordering::Relaxed) {
                i += 1;
                let off = (i as usize * 8) % (4096 - 8);
                bus.write_range(a, off, &i.to_le_bytes()).unwrap();
                if i % 10 == 0 {
                    bus.update_page(c, &[(i % 251) as u8 + 1; 1024]).unwrap();
                }
                cm.store(i, Ordering::Relaxed);
                std::thread::sleep(every);
            }
            let last = bus.state().last_lsn().0;
            bus.stop().unwrap();
            last
        });
        Leader {
            stop,
            commits,
            thread: Some(thread),
        }
    }

    /// Waits until at least `n` more commits were made.
    fn progress(&self, n: u64) {
        let start = self.commits.load(Ordering::Relaxed);
        let deadline = Instant::now() + LONG;
        while self.commits.load(Ordering::Relaxed) < start + n {
            assert!(Instant::now() < deadline, "the leader stopped writing");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Stops writing; the leader's final LSN.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().expect("leader thread")
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn ship_args<'a>(dir: &'a Path, n: &'a Nats, stream: &'a str) -> Vec<&'a str> {
    vec![
        "ship",
        s(dir),
        "--nats",
        &n.url,
        "--stream",
        stream,
        "--lease",
        "1s",
    ]
}

fn follow_args<'a>(dir: &'a Path, n: &'a Nats, stream: &'a str) -> Vec<&'a str> {
    vec![
        "follow",
        "--nats",
        &n.url,
        "--stream",
        stream,
        "--dir",
        s(dir),
    ]
}

/// The replica holds exactly the leader's history: same state (`mmsb diff`), same last LSN,
/// and its log verifies (every frame's CRC, LSNs contiguous).
fn assert_replica_exact(leader: &Path, replica: &Path, last: u64) {
    assert_eq!(support::last_lsn(replica), last, "replica's last LSN");
    assert!(
        same_state(leader, replica),
        "mmsb diff: leader and replica differ"
    );
    let o = run(&["log", "verify", s(replica)], LONG);
    assert!(
        o.status.success(),
        "log verify replica: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let a = State::replay(leader, ReplayTarget::End).unwrap();
    let b = State::replay(replica, ReplayTarget::End).unwrap();
    assert_eq!(a.last_lsn(), b.last_lsn());
}

/// The document text of the trace state in `dir` (pages from the trace report).
fn document(dir: &Path, header: u64, doc: u64) -> String {
    let st = State::replay(dir, ReplayTarget::End).unwrap();
    let h = st.page(mmsb::PageId(header)).unwrap().bytes();
    let d = st.page(mmsb::PageId(doc)).unwrap().bytes();
    mmsb_trace::doc::logical_text(h, d).unwrap()
}

#[test]
fn followers_started_before_and_after_mmsb_trace_ship_of_automerge_paper_reach_its_last_lsn_and_end_content()
 {
    let Some(n) = Nats::start() else { return };
    let Some(trace) = support::trace_path("automerge-paper.json.gz") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (leader, before, after) = (
        tmp.path().join("leader"),
        tmp.path().join("before"),
        tmp.path().join("after"),
    );
    // The follower started first waits for the stream; it is stopped with SIGTERM once it has
    // caught up.
    let early = spawn(&follow_args(&before, &n, "doc"));
    let o = run(
        &[
            "trace",
            s(&trace),
            "--log",
            s(&leader),
            "--ship",
            &n.url,
            "--stream",
            "doc",
            "--json",
        ],
        LONG,
    );
    assert!(o.status.success(), "mmsb trace --ship: {}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let last = support::last_lsn(&leader);
    assert_eq!(
        report["shipped"]["last_lsn"].as_u64(),
        Some(last),
        "{}",
        report["shipped"]
    );
    let (header, doc) = (
        report["report"]["pages"]["header"].as_u64().unwrap(),
        report["report"]["pages"]["document"].as_u64().unwrap(),
    );
    let l = last.to_string();
    let mut a = follow_args(&after, &n, "doc");
    a.extend(["--until-lsn", &l, "--json"]);
    let o = run(&a, LONG);
    assert!(o.status.success(), "late follow: {}", stderr(&o));
    // The early follower: wait for it to reach the end, then stop it.
    let deadline = Instant::now() + LONG;
    let mut early = Some(early);
    while Instant::now() < deadline {
        if State::replay(&before, ReplayTarget::End).is_ok_and(|st| st.last_lsn().0 == last) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = support::terminate(early.take().unwrap(), LONG);
    assert!(
        o.status.success(),
        "early follower after SIGTERM: {}",
        stderr(&o)
    );
    let want = support::end_content(&trace);
    for f in [&before, &after] {
        assert_replica_exact(&leader, f, last);
        assert_eq!(
            document(f, header, doc),
            want,
            "{}: document != endContent",
            f.display()
        );
    }
}

#[test]
fn a_shipper_killed_at_random_points_20_times_and_restarted_leaves_no_gap_and_no_duplicate() {
    let Some(n) = Nats::start() else { return };
    let mut rng = Rng::new();
    let tmp = tempfile::tempdir().unwrap();
    let (ld, fd) = (tmp.path().join("leader"), tmp.path().join("replica"));
    let leader = Leader::start(&ld, Duration::from_micros(300));
    // The follower runs throughout: a duplicate or a gap in the stream would stop it (exit 1
    // or 2), and it must still be running at the end.
    let mut follower = spawn(&follow_args(&fd, &n, "s"));
    for i in 0..20 {
        let shipper = spawn(&ship_args(&ld, &n, "s"));
        std::thread::sleep(rng.ms(30, 400));
        kill9(shipper);
        assert!(
            follower.try_wait().unwrap().is_none(),
            "the follower stopped after kill {i}"
        );
    }
    let last = leader.stop();
    let l = last.to_string();
    let mut a = ship_args(&ld, &n, "s");
    a.extend(["--until-lsn", &l]);
    let o = run(&a, LONG);
    assert!(o.status.success(), "final ship: {}", stderr(&o));
    wait_replica(&fd, last, follower);
    assert_replica_exact(&ld, &fd, last);
}

/// Waits until the running follower has applied `last`, then stops it (SIGTERM, exit 0).
fn wait_replica(dir: &Path, last: u64, mut follower: Child) {
    let deadline = Instant::now() + LONG;
    loop {
        if let Some(st) = follower.try_wait().unwrap() {
            panic!("the follower exited early: {st}");
        }
        if State::replay(dir, ReplayTarget::End).is_ok_and(|s| s.last_lsn().0 >= last) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the follower did not reach LSN {last}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = support::terminate(follower, LONG);
    assert!(o.status.success(), "follower after SIGTERM: {}", stderr(&o));
}

#[test]
fn a_follower_killed_at_random_points_20_times_resumes_at_its_last_commit_with_the_exact_state() {
    let Some(n) = Nats::start() else { return };
    let mut rng = Rng::new();
    let tmp = tempfile::tempdir().unwrap();
    let (ld, fd) = (tmp.path().join("leader"), tmp.path().join("replica"));
    let leader = Leader::start(&ld, Duration::from_micros(300));
    let shipper = spawn(&ship_args(&ld, &n, "s"));
    let mut resumed = Vec::new();
    for _ in 0..20 {
        let before = State::replay(&fd, ReplayTarget::End).map_or(0, |s| s.last_lsn().0);
        resumed.push(before);
        let f = spawn(&follow_args(&fd, &n, "s"));
        std::thread::sleep(rng.ms(30, 400));
        kill9(f);
    }
    let last = leader.stop();
    let l = last.to_string();
    let mut a = follow_args(&fd, &n, "s");
    a.extend(["--until-lsn", &l]);
    let o = run(&a, LONG);
    assert!(o.status.success(), "final follow: {}", stderr(&o));
    kill9(shipper);
    assert_replica_exact(&ld, &fd, last);
    // It did make progress between kills (resumed, not rebuilt each time).
    assert!(resumed.windows(2).all(|w| w[0] <= w[1]), "{resumed:?}");
    assert!(
        resumed.iter().filter(|&&l| l > 0).count() >= 10,
        "{resumed:?}"
    );
}

#[test]
fn shipper_and_follower_reconnect_and_converge_across_20_restarts_of_the_nats_server() {
    let Some(mut n) = Nats::start() else { return };
    let mut rng = Rng::new();
    let tmp = tempfile::tempdir().unwrap();
    let (ld, fd) = (tmp.path().join("leader"), tmp.path().join("replica"));
    let leader = Leader::start(&ld, Duration::from_micros(500));
    let mut shipper = spawn(&ship_args(&ld, &n, "s"));
    let mut follower = spawn(&follow_args(&fd, &n, "s"));
    for i in 0..20 {
        std::thread::sleep(rng.ms(50, 400));
        n.restart(rng.ms(0, 300));
        for (name, c) in [("shipper", &mut shipper), ("follower", &mut follower)] {
            assert!(
                c.try_wait().unwrap().is_none(),
                "the {name} exited at restart {i}"
            );
        }
    }
    leader.progress(50);
    let last = leader.stop();
    wait_replica(&fd, last, follower);
    kill9(shipper);
    assert_replica_exact(&ld, &fd, last);
}

#[test]
fn a_second_shipper_is_refused_and_a_paused_shipper_is_fenced_once_another_took_over_20_times() {
    let Some(n) = Nats::start() else { return };
    let mut rng = Rng::new();
    let tmp = tempfile::tempdir().unwrap();
    let (ld, fd) = (tmp.path().join("leader"), tmp.path().join("replica"));
    let leader = Leader::start(&ld, Duration::from_micros(500));
    let mut first = spawn(&ship_args(&ld, &n, "s"));
    for i in 0..20 {
        std::thread::sleep(rng.ms(20, 200));
        if i % 2 == 0 {
            // A second shipper while the first lives: refused by the lease (it waits 2 x its
            // lease for the lease to expire).
            let o = run(
                &[
                    "ship",
                    s(&ld),
                    "--nats",
                    &n.url,
                    "--stream",
                    "s",
                    "--lease",
                    "200ms",
                ],
                LONG,
            );
            assert_eq!(
                o.status.code(),
                Some(1),
                "second shipper {i}: {}",
                stderr(&o)
            );
            assert!(stderr(&o).contains("fenced"), "{}", stderr(&o));
            assert!(
                first.try_wait().unwrap().is_none(),
                "the first shipper stopped"
            );
        } else {
            // The first shipper pauses past its lease; a new one takes over; the old one
            // wakes up and must be fenced (lease renewal or publish refused), exit 1.
            let before = shipper_of_last(&n.url, "s");
            // SAFETY: kill(2) on our child's pid, not yet reaped.
            unsafe { libc::kill(first.id() as i32, libc::SIGSTOP) };
            let mut second = spawn(&ship_args(&ld, &n, "s"));
            // The new shipper took over once the stream's last message is its.
            let deadline = Instant::now() + LONG;
            while shipper_of_last(&n.url, "s") == before {
                if second.try_wait().unwrap().is_some() {
                    let o = second.wait_with_output().unwrap();
                    panic!("round {i}: the new shipper exited: {}", stderr(&o));
                }
                assert!(Instant::now() < deadline, "round {i}: no takeover");
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(rng.ms(0, 500));
            // SAFETY: as above.
            unsafe { libc::kill(first.id() as i32, libc::SIGCONT) };
            let o = wait_output(first, LONG);
            assert_eq!(
                o.status.code(),
                Some(1),
                "woken shipper {i}: {}",
                stderr(&o)
            );
            assert!(stderr(&o).contains("fenced"), "{}", stderr(&o));
            first = second;
        }
    }
    let last = leader.stop();
    let l = last.to_string();
    // The survivor ships to the end.
    let deadline = Instant::now() + LONG;
    let mut a = follow_args(&fd, &n, "s");
    a.extend(["--until-lsn", &l]);
    let o = run(&a, LONG);
    assert!(o.status.success(), "follow: {}", stderr(&o));
    assert!(Instant::now() < deadline);
    kill9(first);
    assert_replica_exact(&ld, &fd, last);
}

/// Publishes `payload` as the next message of `stream` with `headers`, as a client that is not
/// a shipper would (no expected sequence).
fn rogue_publish(url: &str, stream: &str, headers: &[(String, String)], payload: Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = async_nats::connect(url).await.unwrap();
        let js = async_nats::jetstream::new(c);
        let mut h = async_nats::HeaderMap::new();
        for (k, v) in headers {
            h.insert(k.as_str(), v.as_str());
        }
        js.publish_with_headers(format!("mmsb.{stream}.log"), h, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    });
}

/// The `Mmsb-Shipper` of the last message of `stream`.
fn shipper_of_last(url: &str, stream: &str) -> String {
    last_headers(url, stream)
        .into_iter()
        .find(|(k, _)| k == "Mmsb-Shipper")
        .map(|(_, v)| v)
        .unwrap_or_default()
}

/// The `Mmsb-Last-Lsn` of the last message of `stream`.
fn last_lsn_in_stream(url: &str, stream: &str) -> u64 {
    last_headers(url, stream)
        .into_iter()
        .find(|(k, _)| k == "Mmsb-Last-Lsn")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// The headers of the last message of `stream` (none while the stream is missing or empty).
fn last_headers(url: &str, stream: &str) -> Vec<(String, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = async_nats::connect(url).await.unwrap();
        let js = async_nats::jetstream::new(c);
        let Ok(st) = js.get_stream(stream).await else {
            return Vec::new();
        };
        let last = st.get_info().await.unwrap().state.last_sequence;
        if last == 0 {
            return Vec::new();
        }
        let m = st.get_raw_message(last).await.unwrap();
        // Ours only: the Nats-* ones (expected sequence, message id) are the shipper's.
        m.headers
            .iter()
            .filter(|(k, _)| k.to_string().starts_with("Mmsb-"))
            .map(|(k, v)| (k.to_string(), v[0].as_str().to_owned()))
            .collect()
    })
}

#[test]
fn a_corrupted_frame_from_a_rogue_publisher_stops_the_follower_with_exit_2_naming_its_lsn_20_times()
{
    let Some(n) = Nats::start() else { return };
    let mut rng = Rng::new();
    let tmp = tempfile::tempdir().unwrap();
    let ld = tmp.path().join("leader");
    let last = {
        let leader = Leader::start(&ld, Duration::from_micros(50));
        leader.progress(300);
        leader.stop()
    };
    // The leader's frames, to forge from.
    let mut tail = mmsb::tlog::LogTail::open(&ld, mmsb::Lsn::ZERO).unwrap();
    let mut frames = Vec::new();
    tail.poll(&mut frames, usize::MAX).unwrap();
    assert_eq!(frames.len() as u64, last);
    for i in 0..20 {
        let stream = format!("r{i}");
        // Ship up to the end of a random commit.
        let commits: Vec<u64> = frames
            .iter()
            .filter(|f| f.commit)
            .map(|f| f.lsn.0)
            .collect();
        let upto = commits[10 + (rng.next() as usize % (commits.len() - 20))];
        let u = upto.to_string();
        let mut a = ship_args(&ld, &n, &stream);
        a.extend(["--until-lsn", &u, "--no-checkpoints"]);
        let o = run(&a, LONG);
        assert!(o.status.success(), "ship: {}", stderr(&o));
        // The rogue: the next commit, one byte changed in one of its frames. Odd rounds flip
        // a byte (the CRC catches it); even rounds change the page epoch and fix the CRC (the
        // replay checks catch it).
        let start = upto as usize; // index of LSN upto + 1
        let end = frames[start..].iter().position(|f| f.commit).unwrap() + start;
        // Even rounds forge a field the replay checks (a delta's page epoch): a delta frame.
        let victim = loop {
            let v = start + rng.next() as usize % (end - start + 1);
            if i % 2 == 1 || frames[v].bytes[40] == 1 {
                break v;
            }
        };
        let mut payload = Vec::new();
        let mut bad_lsn = 0;
        for (k, f) in frames[start..=end].iter().enumerate() {
            let mut b = f.bytes.clone();
            if start + k == victim {
                bad_lsn = f.lsn.0;
                if i % 2 == 1 {
                    let at = 4 + rng.next() as usize % (b.len() - 4);
                    b[at] ^= 1 << (rng.next() % 8);
                } else {
                    let epoch = u64::from_le_bytes(b[24..32].try_into().unwrap());
                    b[24..32].copy_from_slice(&(epoch + 7).to_le_bytes());
                    let crc = crc32c::crc32c_append(crc32c::crc32c(&b[0..4]), &b[8..]);
                    b[4..8].copy_from_slice(&crc.to_le_bytes());
                }
            }
            payload.extend_from_slice(&b);
        }
        let mut h = last_headers(&n.url, &stream);
        for (k, v) in &mut h {
            match k.as_str() {
                "Mmsb-First-Lsn" => *v = (upto + 1).to_string(),
                "Mmsb-Last-Lsn" => *v = frames[end].lsn.0.to_string(),
                _ => {}
            }
        }
        rogue_publish(&n.url, &stream, &h, payload);
        let fd = tmp.path().join(format!("replica{i}"));
        let mut a = follow_args(&fd, &n, &stream);
        let l = last.to_string();
        a.extend(["--until-lsn", &l]);
        let o = run(&a, LONG);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "round {i}: {err}");
        assert!(
            err.contains(&format!("frame at LSN {bad_lsn} refused")),
            "round {i}: the error must name LSN {bad_lsn}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        // Nothing of the bad commit was applied; what was is exact.
        assert_eq!(support::last_lsn(&fd), upto, "round {i}");
        let o = run(&["log", "verify", s(&fd)], LONG);
        assert!(o.status.success(), "round {i}: replica log verify");
        let a = State::replay(&ld, ReplayTarget::Lsn(mmsb::Lsn(upto))).unwrap();
        let b = State::replay(&fd, ReplayTarget::End).unwrap();
        assert!(
            mmsb::page_set_diff(&a, &b).is_empty() && mmsb::diff(&a, &b).unwrap().is_empty(),
            "round {i}: replica != leader at {upto}"
        );
    }
}

#[test]
fn a_follower_started_after_a_checkpoint_and_a_purge_catches_up_from_the_checkpoint_and_the_suffix()
{
    let Some(n) = Nats::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (ld, fd, stale) = (
        tmp.path().join("leader"),
        tmp.path().join("late"),
        tmp.path().join("stale"),
    );
    let leader = Leader::start(&ld, Duration::from_micros(100));
    let shipper = spawn(&{
        let mut a = ship_args(&ld, &n, "s");
        a.push("--purge");
        a
    });
    leader.progress(500);
    // A replica that follows for a while, then stops: it will be behind the purge.
    let o = run(
        &{
            let mut a = follow_args(&stale, &n, "s");
            a.extend(["--until-lsn", "50"]);
            a
        },
        LONG,
    );
    assert!(o.status.success(), "stale follow: {}", stderr(&o));
    let stale_last = support::last_lsn(&stale);
    leader.progress(500);
    leader.stop();
    // Checkpoint the stopped leader (`mmsb checkpoint` opens it), then write a suffix.
    let o = run(&["checkpoint", s(&ld), "--json"], LONG);
    assert!(o.status.success(), "checkpoint: {}", stderr(&o));
    let ckpt: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ckpt_lsn = ckpt["lsn"].as_u64().unwrap_or_else(|| panic!("{ckpt}"));
    let leader = Leader::start(&ld, Duration::from_micros(100));
    leader.progress(300);
    let last = leader.stop();
    assert!(last > ckpt_lsn + 300);
    // Wait until the suffix is in the stream (its last message ends at `last`); the shipper
    // looks for checkpoints every half second: give it time to publish and purge, then stop it.
    // (A follower reading the stream meanwhile could be purged past: see the stale replica.)
    let deadline = Instant::now() + LONG;
    while last_lsn_in_stream(&n.url, "s") < last {
        assert!(
            Instant::now() < deadline,
            "the suffix never reached the stream"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let o = String::from_utf8_lossy(&support::terminate(shipper, LONG).stdout).into_owned();
    assert!(
        o.contains("1 checkpoints") && o.contains("purged below"),
        "{o}"
    );
    let l = last.to_string();
    let o = run(
        &{
            let mut a = follow_args(&fd, &n, "s");
            a.extend(["--until-lsn", &l, "--json"]);
            a
        },
        LONG,
    );
    assert!(o.status.success(), "late follow: {}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["bootstrapped_from"].as_u64(), Some(ckpt_lsn), "{r}");
    assert_eq!(r["frames"].as_u64(), Some(last - ckpt_lsn), "{r}");
    assert_replica_exact(&ld, &fd, last);
    // The stale replica cannot continue: the stream no longer holds what it needs (exit 1).
    let o = run(
        &{
            let mut a = follow_args(&stale, &n, "s");
            a.extend(["--until-lsn", &l]);
            a
        },
        LONG,
    );
    assert_eq!(o.status.code(), Some(1), "stale follow: {}", stderr(&o));
    let want = format!("the replica needs LSN {}", stale_last + 1);
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
}

#[test]
fn promote_fences_the_old_leader_and_the_promoted_replica_ships_on_to_new_followers() {
    let Some(n) = Nats::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (ld, fd, gd) = (
        tmp.path().join("leader"),
        tmp.path().join("replica"),
        tmp.path().join("next"),
    );
    let leader = Leader::start(&ld, Duration::from_micros(200));
    let old_shipper = spawn(&ship_args(&ld, &n, "s"));
    leader.progress(300);
    // Pause the old leader's writes by stopping it; catch the replica up; promote it.
    let last = leader.stop();
    finish_follow(&fd, &n, "s", last);
    let o = run(
        &[
            "promote",
            s(&fd),
            "--nats",
            &n.url,
            "--stream",
            "s",
            "--json",
        ],
        LONG,
    );
    assert!(o.status.success(), "promote: {}", stderr(&o));
    let p: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(p["lsn"].as_u64(), Some(last));
    // The old leader writes again: its shipper must be fenced (exit 1) rather than publish.
    {
        let mut bus = Mmsb::start(Config::new(&ld)).unwrap();
        bus.write_range(mmsb::PageId(1), 0, b"stale!!!").unwrap();
        bus.stop().unwrap();
    }
    let o = wait_output(old_shipper, LONG);
    assert_eq!(o.status.code(), Some(1), "old shipper: {}", stderr(&o));
    assert!(stderr(&o).contains("fenced"), "{}", stderr(&o));
    // The promoted replica writes and ships; a new follower gets its history.
    let new_last = {
        let mut bus = Mmsb::start(Config::new(&fd)).expect("promoted replica opens as a writer");
        bus.write_range(mmsb::PageId(1), 0, b"new lead").unwrap();
        bus.update_page(mmsb::PageId(3), &[9u8; 1024]).unwrap();
        let l = bus.state().last_lsn().0;
        bus.stop().unwrap();
        l
    };
    assert!(new_last > last);
    let nl = new_last.to_string();
    let o = run(
        &{
            let mut a = ship_args(&fd, &n, "s");
            a.extend(["--until-lsn", &nl]);
            a
        },
        LONG,
    );
    assert!(o.status.success(), "new leader's shipper: {}", stderr(&o));
    finish_follow(&gd, &n, "s", new_last);
    assert_replica_exact(&fd, &gd, new_last);
    // The old leader's diverged write is nowhere in the stream's history.
    assert!(!same_state(&ld, &gd));
}

fn finish_follow(dir: &Path, n: &Nats, stream: &str, last: u64) {
    let l = last.to_string();
    let mut a = follow_args(dir, n, stream);
    a.extend(["--until-lsn", &l]);
    let o = run(&a, LONG);
    assert!(o.status.success(), "follow: {}", stderr(&o));
}

#[test]
fn bad_stream_names_unreachable_servers_and_non_replica_dirs_are_one_line_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let ld = tmp.path().join("leader");
    Leader::start(&ld, Duration::from_millis(1)).stop();
    let dead = format!("nats://127.0.0.1:{}", support::free_port());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["ship", s(&ld), "--nats", &dead, "--stream", "a.b"],
            "bad stream name",
        ),
        (
            vec!["follow", "--nats", &dead, "--stream", "x>", "--dir", s(&ld)],
            "bad stream name",
        ),
        (
            vec![
                "ship",
                s(&ld),
                "--nats",
                &dead,
                "--stream",
                "s",
                "--timeout",
                "300ms",
            ],
            "connecting",
        ),
        (
            vec![
                "promote",
                s(&ld),
                "--nats",
                &dead,
                "--stream",
                "s",
                "--timeout",
                "300ms",
            ],
            "not a replica",
        ),
    ];
    for (args, want) in cases {
        let o = run(&args, LONG);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
    // A follower pointed at a leader's (writable) log refuses it rather than write into it.
    let Some(n) = Nats::start() else { return };
    let o = run(
        &[
            "ship",
            s(&ld),
            "--nats",
            &n.url,
            "--stream",
            "s",
            "--until-lsn",
            "1",
        ],
        LONG,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let before = support::last_lsn(&ld);
    let o = run(&follow_args(&ld, &n, "s"), LONG);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(support::last_lsn(&ld), before);
}

#[test]
fn an_unusable_checkpoint_in_the_leader_dir_is_skipped_and_nothing_is_purged_for_it() {
    let Some(n) = Nats::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (ld, fd) = (tmp.path().join("leader"), tmp.path().join("replica"));
    let last = {
        let leader = Leader::start(&ld, Duration::from_micros(100));
        leader.progress(200);
        leader.stop()
    };
    // A damaged checkpoint the leader's directory happens to hold (a name, junk inside).
    std::fs::write(
        ld.join(mmsb::checkpoint::file_name(mmsb::Lsn(5))),
        b"MMSBCKPT junk",
    )
    .unwrap();
    let mut a = ship_args(&ld, &n, "s");
    a.push("--purge");
    let shipper = spawn(&a);
    let deadline = Instant::now() + LONG;
    while last_lsn_in_stream(&n.url, "s") < last {
        assert!(
            Instant::now() < deadline,
            "the log never reached the stream"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Past two checkpoint looks (every half second), then stop it.
    std::thread::sleep(Duration::from_millis(1200));
    let o = support::terminate(shipper, LONG);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "shipper: {}", stderr(&o));
    assert!(
        out.contains("0 checkpoints") && !out.contains("purged"),
        "{out}"
    );
    // The whole stream is still there: a new follower replays it from LSN 1.
    let l = last.to_string();
    let mut a = follow_args(&fd, &n, "s");
    a.extend(["--until-lsn", &l, "--json"]);
    let o = run(&a, LONG);
    assert!(o.status.success(), "follow: {}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["bootstrapped_from"], serde_json::Value::Null, "{r}");
    assert_replica_exact(&ld, &fd, last);
}
