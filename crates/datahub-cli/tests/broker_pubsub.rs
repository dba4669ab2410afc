//! `datahub pub --channel` / `datahub sub --broker` through a real `datahub broker` process:
//! every file of the shared data folder crosses a brokered channel with its BLAKE2b digest
//! intact; a `sub` started first waits for the channel; a channel that never appears, or a
//! broker that is not there, is exit 2 at the deadline; a SIGKILLed `pub`, or a channel the
//! broker closes, makes a waiting `sub` fail naming the channel; `pub` logs its consumers
//! registering and dying and deregisters on SIGTERM. Every child is a [`Proc`], killed when
//! the test fails, and every wait is bounded.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Block, DEADLINE, Proc, blake2b, noise, run, signal, wait_until, write_file};
use datahub::broker::{ChannelInfo, ChannelSummary, Client, ClientOptions};
use datahub::{Config, Policy, Producer, Schema};

/// A `datahub broker` on an ipc endpoint in a temporary directory.
struct TestBroker {
    _proc: Proc,
    ep: String,
    _dir: tempfile::TempDir,
}

impl TestBroker {
    /// A short liveness window, `--heartbeat 50ms --pending-after 10 --dead-after 10`: dead
    /// after 1 s of silence (short for the tests that wait for a death, long enough that a live
    /// client's heartbeats delayed by a busy machine do not make it dead).
    fn start() -> TestBroker {
        TestBroker::with(&[
            "--heartbeat",
            "50ms",
            "--pending-after",
            "10",
            "--dead-after",
            "10",
        ])
    }

    /// A broker with the default liveness window (dead after 10 s of silence).
    fn slow() -> TestBroker {
        TestBroker::with(&[])
    }

    fn with(liveness: &[&str]) -> TestBroker {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("b.sock");
        let ep = format!("ipc://{}", sock.display());
        let mut args = vec!["broker", "--listen", &ep];
        args.extend_from_slice(liveness);
        let proc = Proc::spawn(&args);
        wait_until("the broker's socket", || sock.exists());
        TestBroker {
            _proc: proc,
            ep,
            _dir: dir,
        }
    }

    /// A client of this broker, for the test's own checks.
    fn client(&self, uid: &str) -> Client {
        Client::connect(Some(&self.ep), uid, ClientOptions::default()).unwrap()
    }

    fn channel(&self, c: &Client, name: &str) -> Option<ChannelSummary> {
        c.channels(Duration::from_secs(5))
            .unwrap()
            .into_iter()
            .find(|ch| ch.channel_name == name)
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `datahub pub --broker EP --channel CHANNEL --json EXTRA... FILES...`.
fn spawn_pub(ep: &str, channel: &str, extra: &[&str], files: &[PathBuf]) -> Proc {
    let mut args = vec!["pub", "--broker", ep, "--channel", channel, "--json"];
    args.extend_from_slice(extra);
    args.extend(files.iter().map(|f| path(f)));
    Proc::spawn(&args)
}

/// `datahub sub --broker EP CHANNEL --out DIR --json EXTRA...`.
fn spawn_sub(ep: &str, channel: &str, out: &Path, extra: &[&str]) -> Proc {
    let mut args = vec!["sub", "--broker", ep, channel, "--out", path(out), "--json"];
    args.extend_from_slice(extra);
    Proc::spawn(&args)
}

/// A `pub --consumers 2` with one `sub` attached: `pub` waits for the second consumer and
/// `sub` sits in its read loop (both registered with the broker, `pub` has logged the `sub`).
struct Waiting {
    block: Block,
    publisher: Proc,
    sub: Proc,
    _dirs: [tempfile::TempDir; 2],
}

impl Waiting {
    fn start(broker: &TestBroker, name: &str) -> Waiting {
        let dir = tempfile::tempdir().unwrap();
        let file = write_file(dir.path(), "a.bin", &noise(10_000, 2));
        let block = Block::new(name);
        let out = tempfile::tempdir().unwrap();
        let publisher = spawn_pub(&broker.ep, block.name(), &["--consumers", "2"], &[file]);
        let sub = spawn_sub(&broker.ep, block.name(), out.path(), &[]);
        wait_until("pub to log its registered consumer", || {
            publisher
                .stderr_so_far()
                .contains("1 consumer(s) registered with the broker")
        });
        Waiting {
            block,
            publisher,
            sub,
            _dirs: [dir, out],
        }
    }
}

/// Every file in `files` is in `out` under its base name with the source's digest, and the
/// summary lists them in order with those digests.
fn assert_received(files: &[PathBuf], out: &Path, summary: &serde_json::Value) {
    let received = summary["files"].as_array().unwrap();
    assert_eq!(received.len(), files.len(), "{summary}");
    for (i, f) in files.iter().enumerate() {
        let base = f.file_name().unwrap().to_str().unwrap();
        let digest = blake2b(&std::fs::read(f).unwrap());
        let copy = std::fs::read(out.join(base)).unwrap_or_else(|e| panic!("{base}: {e}"));
        assert_eq!(blake2b(&copy), digest, "{base}: the received copy differs");
        assert_eq!(received[i]["name"], base);
        assert_eq!(received[i]["blake2b"], digest.as_str(), "{base}");
    }
}

#[test]
fn every_shared_file_crosses_a_brokered_channel_with_its_digest_intact() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let files = common::files_under(&data);
    assert!(files.len() >= 3, "too few files in {}", data.display());
    // The default dead window (10 s): a channel gone right after `pub` exits was deregistered.
    let broker = TestBroker::slow();
    let block = Block::new("bps");
    let out = tempfile::tempdir().unwrap();
    let publisher = spawn_pub(&broker.ep, block.name(), &[], &files);
    let sub = spawn_sub(&broker.ep, block.name(), out.path(), &[]);
    let sj = sub.finish(DEADLINE).expect(0, "sub --broker").json();
    let pj = publisher.finish(DEADLINE).expect(0, "pub --broker").json();
    // Both ends deregistered: the channel is gone at once, not after a dead window.
    let c = broker.client("bps-check");
    assert!(broker.channel(&c, block.name()).is_none());
    assert_eq!(c.metrics(Duration::from_secs(5)).unwrap().consumers, 0);
    assert_received(&files, out.path(), &sj);
    assert_eq!(sj["channel"], block.name());
    assert_eq!(sj["block"], block.name());
    assert_eq!(pj["channel"], block.name());
    assert_eq!(pj["files"].as_array().unwrap().len(), files.len());
}

#[test]
fn sub_started_before_pub_waits_for_the_channel_and_then_gets_every_file() {
    let broker = TestBroker::slow();
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = (0..3)
        .map(|i| {
            write_file(
                dir.path(),
                &format!("f{i}.bin"),
                &noise(200_000 + i * 7, i as u64),
            )
        })
        .collect();
    let block = Block::new("bps-first");
    let out = tempfile::tempdir().unwrap();
    let mut sub = spawn_sub(&broker.ep, block.name(), out.path(), &[]);
    // The sub is asking for a channel that does not exist yet (CHANNEL_NOT_FOUND, retried).
    let c = broker.client("bps-first-check");
    wait_until("the sub's discovery requests", || {
        c.metrics(Duration::from_secs(5)).unwrap().counters.errors >= 2
    });
    // It keeps waiting (its deadline is 30 s), however long the channel takes to appear.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        sub.child.try_wait().unwrap().is_none(),
        "sub gave up before the channel appeared: {}",
        sub.stderr_so_far()
    );
    let publisher = spawn_pub(&broker.ep, block.name(), &[], &files);
    let sj = sub
        .finish(DEADLINE)
        .expect(0, "sub --broker started first")
        .json();
    publisher.finish(DEADLINE).expect(0, "pub --broker");
    assert_received(&files, out.path(), &sj);
    let m = c.metrics(Duration::from_secs(5)).unwrap();
    assert!(m.counters.discoveries >= 1, "{m:?}");
}

#[test]
fn sub_for_a_channel_that_never_appears_fails_with_exit_2_at_its_deadline() {
    let broker = TestBroker::start();
    let out = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let done = spawn_sub(&broker.ep, "never.there", out.path(), &["--wait", "1s"])
        .finish(DEADLINE)
        .expect(2, "sub of a missing channel");
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "gave up before its deadline"
    );
    let line = done.one_line_error();
    assert!(line.contains("\"never.there\""), "{line}");
    assert!(line.contains("CHANNEL_NOT_FOUND"), "{line}");
}

#[test]
fn sub_with_no_broker_there_is_one_error_line_and_exit_2_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let ep = format!("ipc://{}/nobody.sock", dir.path().display());
    let out = tempfile::tempdir().unwrap();
    let done = spawn_sub(&ep, "chan", out.path(), &["--wait", "500ms"])
        .finish(DEADLINE)
        .expect(2, "sub without a broker");
    let line = done.one_line_error();
    assert!(line.contains("running there"), "{line}");
    assert!(line.contains("\"chan\""), "{line}");
}

#[test]
fn a_sigkilled_pub_makes_a_waiting_sub_fail_naming_the_channel() {
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "a.bin", &noise(10_000, 1));
    let block = Block::new("bps-kill");
    let out = tempfile::tempdir().unwrap();
    // Waits for two consumers, so the one sub below waits with it.
    let publisher = spawn_pub(&broker.ep, block.name(), &["--consumers", "2"], &[file]);
    let sub = spawn_sub(&broker.ep, block.name(), out.path(), &[]);
    wait_until("pub to log its registered consumer", || {
        publisher
            .stderr_so_far()
            .contains("1 consumer(s) registered with the broker")
    });
    signal(publisher.pid(), libc::SIGKILL);
    let done = sub
        .finish(DEADLINE)
        .expect(2, "sub after its pub was killed");
    let line = done.one_line_error();
    assert!(
        line.contains(&format!("channel {:?}", block.name())),
        "{line}"
    );
    drop(publisher);
    // The broker removes the silent producer after its dead window.
    let c = broker.client("bps-kill-check");
    wait_until("the broker to drop the channel", || {
        broker.channel(&c, block.name()).is_none()
    });
}

/// The header schema of `pub` blocks (`frame.rs`'s `SCHEMA_TEXT`, version 1).
fn file_stream_schema() -> Schema {
    Schema::named(
        "datahub-cli file stream: FILE_START/DATA/FILE_END/ABORT, 24-byte header (kind, index, stream, value), BLAKE2b-256 file digests",
        1,
    )
}

#[test]
fn sub_fails_naming_the_channel_when_the_broker_closes_it_before_the_end() {
    let broker = TestBroker::start();
    let block = Block::new("bps-close");
    // A producer that stays alive (this process) but whose channel goes away, so only the
    // broker's CHANNEL_CLOSING_NOTIFY can tell the sub.
    let p = Producer::create(
        block.name(),
        Config::new(Policy::Sequential)
            .slot_size(4096)
            .schema(file_stream_schema()),
    )
    .unwrap();
    let c = broker.client("bps-close-producer");
    c.register(
        &ChannelInfo::from_producer("bps.close", &p, "datahub.files", None).unwrap(),
        Duration::from_secs(5),
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let sub = spawn_sub(&broker.ep, "bps.close", out.path(), &[]);
    wait_until("the sub to register", || {
        broker
            .channel(&c, "bps.close")
            .is_some_and(|ch| ch.consumers == 1)
    });
    c.deregister("bps.close", Duration::from_secs(5)).unwrap();
    let done = sub.finish(DEADLINE).expect(2, "sub of a closed channel");
    let line = done.one_line_error();
    assert!(line.contains("channel \"bps.close\""), "{line}");
    assert!(line.contains("producer_deregistered"), "{line}");
    drop(p);
}

#[test]
fn pub_logs_a_dead_consumer_and_deregisters_on_sigterm() {
    let broker = TestBroker::start();
    let Waiting {
        block,
        publisher,
        sub,
        _dirs,
    } = Waiting::start(&broker, "bps-died");
    signal(sub.pid(), libc::SIGKILL);
    wait_until("pub to log the dead consumer", || {
        publisher
            .stderr_so_far()
            .contains("died (heartbeat_timeout)")
    });
    let c = broker.client("bps-died-check");
    assert!(broker.channel(&c, block.name()).is_some());
    signal(publisher.pid(), libc::SIGTERM);
    let done = publisher.finish(DEADLINE);
    assert_eq!(done.code(), Some(143), "pub after SIGTERM: {}", done.stderr);
    assert!(
        broker.channel(&c, block.name()).is_none(),
        "SIGTERM left the channel registered"
    );
    drop(sub);
}

#[test]
fn pub_without_channel_needs_a_block_name_and_broker_needs_channel() {
    let done = run(&["pub", "--broker", "ipc:///nonexistent/b.sock", "x", "f"]);
    assert_eq!(done.code(), Some(2), "{}", done.stderr);
    assert!(done.stderr.contains("--channel"), "{}", done.stderr);
    let done = run(&["pub"]).expect(2, "pub without arguments");
    assert!(
        done.one_line_error().contains("block name"),
        "{}",
        done.stderr
    );
}

#[test]
fn a_second_pub_for_a_live_channel_is_refused_and_removes_its_block() {
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "a.bin", &noise(1_000, 3));
    let first = Block::new("bps-taken");
    let second = Block::new("bps-taken2");
    let publisher = spawn_pub(&broker.ep, first.name(), &[], std::slice::from_ref(&file));
    let c = broker.client("bps-taken-check");
    wait_until("the first pub's channel", || {
        broker
            .channel(&c, first.name())
            .is_some_and(|ch| ch.state == "live")
    });
    let done = spawn_pub(
        &broker.ep,
        first.name(),
        &["--block", second.name()],
        &[file],
    )
    .finish(DEADLINE)
    .expect(2, "a second pub for the channel");
    let line = done.one_line_error();
    assert!(line.contains("CHANNEL_EXISTS"), "{line}");
    assert!(line.contains(&format!("{:?}", first.name())), "{line}");
    assert!(
        !common::shm_path(second.name()).exists(),
        "the refused pub left its block behind"
    );
    // The first one is untouched.
    let ch = broker.channel(&c, first.name()).unwrap();
    assert_eq!(ch.block_name, first.name());
    drop(publisher);
}

#[test]
fn sub_stopped_by_sigterm_exits_143_and_deregisters_at_once() {
    // The default window: a consumer still registered after the signal would stay so for
    // 10 s, so seeing none right after `sub` exits proves it deregistered.
    let broker = TestBroker::slow();
    let Waiting {
        block,
        publisher,
        sub,
        _dirs,
    } = Waiting::start(&broker, "bps-subterm");
    signal(sub.pid(), libc::SIGTERM);
    let done = sub.finish(DEADLINE).expect(128 + 15, "sub after SIGTERM");
    let line = done.one_line_error();
    assert!(line.contains("interrupted by SIGTERM"), "{line}");
    assert!(
        line.contains(&format!("channel {:?}", block.name())),
        "{line}"
    );
    let c = broker.client("bps-subterm-check");
    let ch = broker
        .channel(&c, block.name())
        .expect("the channel is still there");
    assert_eq!(ch.consumers, 0, "SIGTERM left the consumer registered");
    drop(publisher);
}
