//! `datahub exporter` as a real process scraped over HTTP: every block of its prefix with the
//! right labels, a consumer that stops reading shows growing lag, hostile entries of the
//! shared-memory directory are counted and not followed and do not fail the scrape, the
//! exposition passes `promtool check metrics`, a broker's counters (and a silent broker's
//! `datahub_broker_up 0`), at most `--max-blocks` blocks per scrape, and SIGTERM stops it with
//! exit 0.
//!
//! Blocks are made in this process (a real producer and consumer of the library) in the real
//! shared-memory directory, under a name prefix unique to the test that the exporter is given
//! with `--prefix`, so tests running at once never see each other's blocks.

mod common;
mod exporter_support;

use std::time::{Duration, Instant};

use common::{DEADLINE, Proc, signal, wait_until};
use datahub::{Config, Consumer, Expectations, Policy, Producer};
use exporter_support::{Exporter, get, promtool, run_promtool, samples, value};

/// A prefix unique to this process and `tag`; the blocks of a test start with it.
fn prefix(tag: &str) -> String {
    format!("dhexp-{tag}-{}-", std::process::id())
}

fn exporter(prefix: &str) -> Exporter {
    Exporter::start(&["exporter", "--prefix", prefix])
}

/// A sequential block `name` with `slots` slots of 64 bytes.
fn producer(name: &str, slots: u32) -> Producer {
    Producer::create(
        name,
        Config::new(Policy::Sequential)
            .slot_size(64)
            .slot_count(slots),
    )
    .unwrap()
}

fn write(p: &mut Producer, n: usize) {
    for i in 0..n {
        let mut w = p.write(DEADLINE).unwrap();
        w[..4].copy_from_slice(&(i as u32).to_le_bytes());
        w.commit(4).unwrap();
    }
}

fn read(c: &mut Consumer, n: usize) {
    for _ in 0..n {
        drop(c.read(DEADLINE).unwrap());
    }
}

/// The `consumer` label the exporter gives consumer `c` of this process.
fn consumer_label(c: &Consumer) -> String {
    format!("{}:{}", c.entry(), std::process::id())
}

#[test]
fn a_scrape_lists_every_block_with_its_labels() {
    let p = prefix("labels");
    let (a, b) = (format!("{p}a"), format!("{p}b"));
    let mut pa = producer(&a, 8);
    let mut pb = producer(&b, 4);
    let mut ca = Consumer::attach(&a, Expectations::new()).unwrap();
    write(&mut pa, 3);
    write(&mut pb, 2);
    read(&mut ca, 1);
    let exp = exporter(&p);
    let text = exp.scrape();

    assert_eq!(
        value(&text, "datahub_exporter_blocks", &[]),
        Some(2.0),
        "{text}"
    );
    for (block, writes, slots) in [(&a, 3.0, 8.0), (&b, 2.0, 4.0)] {
        let l = [("block", block.as_str())];
        assert_eq!(
            value(&text, "datahub_slot_writes_total", &l),
            Some(writes),
            "{text}"
        );
        assert_eq!(value(&text, "datahub_commit_index", &l), Some(writes));
        assert_eq!(value(&text, "datahub_slots", &l), Some(slots));
        assert_eq!(value(&text, "datahub_producer_alive", &l), Some(1.0));
        assert!(value(&text, "datahub_producer_heartbeat_age_seconds", &l).is_some());
        assert_eq!(
            value(
                &text,
                "datahub_block_info",
                &[
                    ("block", block),
                    ("policy", "sequential"),
                    ("version", "1.2")
                ]
            ),
            Some(1.0),
            "{text}"
        );
    }
    // One consumer, on block a only, labelled ENTRY:PID.
    let consumer = consumer_label(&ca);
    let cl = [("block", a.as_str()), ("consumer", consumer.as_str())];
    assert_eq!(
        value(&text, "datahub_consumer_lag_messages", &cl),
        Some(2.0),
        "{text}"
    );
    assert_eq!(value(&text, "datahub_consumer_alive", &cl), Some(1.0));
    let age = value(&text, "datahub_consumer_heartbeat_age_seconds", &cl).unwrap();
    assert!((0.0..3600.0).contains(&age), "heartbeat age {age}");
    let lags: Vec<_> = samples(&text)
        .into_iter()
        .filter(|s| s.name == "datahub_consumer_lag_messages")
        .collect();
    assert_eq!(lags.len(), 1, "{lags:?}");
    // Nothing outside the prefix, and every series of a block family names its block.
    for s in samples(&text) {
        if let Some(block) = s.label("block") {
            assert!(
                block == a || block == b,
                "a block outside the prefix: {s:?}"
            );
        } else {
            assert!(
                s.name.starts_with("datahub_exporter_"),
                "a block series without a block label: {s:?}"
            );
        }
    }
    // The scrape changed nothing: the consumer still reads where it was.
    read(&mut ca, 2);
    assert_eq!(ca.position(), 3);
}

#[test]
fn a_consumer_that_stops_reading_shows_growing_lag() {
    let p = prefix("lag");
    let name = format!("{p}x");
    let mut prod = producer(&name, 16);
    let mut c = Consumer::attach(&name, Expectations::new()).unwrap();
    write(&mut prod, 2);
    read(&mut c, 2);
    let exp = exporter(&p);
    let consumer = consumer_label(&c);
    let lag = || {
        let text = exp.scrape();
        value(
            &text,
            "datahub_consumer_lag_messages",
            &[("block", name.as_str()), ("consumer", consumer.as_str())],
        )
        .unwrap_or_else(|| panic!("no lag series: {text}"))
    };
    assert_eq!(lag(), 0.0, "caught up");
    // The consumer stops reading; the producer goes on.
    write(&mut prod, 3);
    assert_eq!(lag(), 3.0);
    write(&mut prod, 5);
    assert_eq!(lag(), 8.0);
    // It reads again: the lag falls.
    read(&mut c, 6);
    assert_eq!(lag(), 2.0);
}

#[test]
fn hostile_entries_are_counted_not_followed_and_do_not_fail_the_scrape() {
    let p = prefix("hostile");
    let real = format!("{p}real");
    let mut prod = producer(&real, 4);
    write(&mut prod, 1);
    let dir = datahub::shm_dir();
    let link = dir.join(format!("{p}link"));
    let fifo = dir.join(format!("{p}fifo"));
    let sub = dir.join(format!("{p}dir"));
    let garbage = dir.join(format!("{p}garbage"));
    let cleanup = Cleanup(vec![
        link.clone(),
        fifo.clone(),
        sub.clone(),
        garbage.clone(),
    ]);
    // A link to the real block: followed, it would show the block a second time.
    std::os::unix::fs::symlink(dir.join(&real), &link).unwrap();
    // A FIFO: opened without O_NONBLOCK, the scrape would hang.
    let cpath = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(cpath.as_ptr(), 0o600) }, 0);
    std::fs::create_dir(&sub).unwrap();
    // The magic, then garbage: the lister takes it for a block, the opener refuses it.
    let mut bytes = datahub::layout::MAGIC.to_le_bytes().to_vec();
    bytes.extend(common::noise(3 * 8192, 7));
    std::fs::write(&garbage, &bytes).unwrap();

    let exp = exporter(&p);
    // A scrape that blocked on the FIFO would fail here, at the GET's read deadline.
    let text = exp.scrape();
    let errors = |reason: &str| {
        value(
            &text,
            "datahub_exporter_block_errors",
            &[("reason", reason)],
        )
    };
    assert_eq!(
        errors("not_regular"),
        Some(3.0),
        "link, FIFO, directory: {text}"
    );
    assert_eq!(errors("open_failed"), Some(1.0), "the garbage file: {text}");
    assert_eq!(value(&text, "datahub_exporter_blocks", &[]), Some(1.0));
    let blocks: std::collections::BTreeSet<String> = samples(&text)
        .iter()
        .filter_map(|s| s.label("block").map(str::to_owned))
        .collect();
    assert_eq!(
        blocks,
        [real.clone()].into(),
        "only the real block is shown"
    );
    // Nothing was changed or removed.
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(&garbage).unwrap(), bytes);
    drop(cleanup);
}

/// Removes the paths when dropped (pass or fail).
struct Cleanup(Vec<std::path::PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p).or_else(|_| std::fs::remove_dir(p));
        }
    }
}

#[test]
fn the_exposition_passes_promtool_check_metrics_in_both_formats() {
    let p = prefix("promtool");
    let name = format!("{p}q\"uote");
    let mut prod = producer(&name, 4);
    let mut c = Consumer::attach(&name, Expectations::new()).unwrap();
    write(&mut prod, 2);
    read(&mut c, 1);
    let exp = exporter(&p);
    let (status, ct, text) = get(exp.addr, "/metrics", None);
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    assert!(!text.contains("# EOF"));
    assert!(
        text.contains("# TYPE datahub_slot_writes_total counter"),
        "{text}"
    );
    assert!(value(&text, "datahub_consumer_lag_messages", &[("block", &name)]).is_some());
    let prom_accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let (status, ct, open) = get(exp.addr, "/metrics", Some(prom_accept));
    assert_eq!(status, 200);
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert_eq!(get(exp.addr, "/nope", None).0, 404);
    if let Some(promtool) = promtool() {
        let (ok, out) = run_promtool(&promtool, &["check", "metrics"], Some(&text));
        assert!(
            ok,
            "promtool check metrics failed:\n{out}\n--- scrape ---\n{text}"
        );
        assert!(!out.contains("error"), "{out}");
    }
}

#[test]
fn broker_counters_are_exported_and_a_silent_broker_is_up_0() {
    let dir = tempfile::tempdir().unwrap();
    let p = prefix("broker");
    // Nobody listens here: every scrape waits its timeout and says the broker is down.
    let silent = format!("ipc://{}/nobody.sock", dir.path().display());
    let exp = Exporter::start(&[
        "exporter",
        "--prefix",
        &p,
        "--broker",
        &silent,
        "--broker-timeout",
        "200ms",
    ]);
    let text = exp.scrape();
    assert_eq!(value(&text, "datahub_broker_up", &[]), Some(0.0), "{text}");
    assert!(value(&text, "datahub_broker_registrations_total", &[]).is_none());
    drop(exp);

    let sock = dir.path().join("b.sock");
    let ep = format!("ipc://{}", sock.display());
    let _broker = Proc::spawn(&["broker", "--listen", &ep]);
    wait_until("the broker's socket", || sock.exists());
    let exp = Exporter::start(&["exporter", "--prefix", &p, "--broker", &ep]);
    // The broker may take a moment to answer its first request: bounded retries.
    let deadline = Instant::now() + DEADLINE;
    let text = loop {
        let text = exp.scrape();
        if value(&text, "datahub_broker_up", &[]) == Some(1.0) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the broker never answered: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for name in [
        "datahub_broker_received_messages_total",
        "datahub_broker_registrations_total",
        "datahub_broker_channels",
        "datahub_broker_consumers",
        "datahub_broker_uptime_seconds",
    ] {
        assert!(value(&text, name, &[]).is_some(), "no {name} in {text}");
    }
    assert!(value(&text, "datahub_broker_received_messages_total", &[]).unwrap() >= 1.0);
}

#[test]
fn sigterm_stops_the_exporter_with_exit_0_and_a_bad_listen_address_is_exit_2() {
    let mut exp = exporter(&prefix("sigterm"));
    exp.scrape();
    signal(exp.child.id() as i32, libc::SIGTERM);
    let status = common::finish_child(&mut exp.child, DEADLINE);
    assert_eq!(status.code(), Some(0), "stderr: {}", exp.stderr());
    assert!(exp.stderr().contains("stopped"), "{}", exp.stderr());

    let done = common::run(&["exporter", "--listen", "not-an-address"]).expect(2, "bad --listen");
    assert!(
        done.one_line_error().contains("--listen"),
        "{}",
        done.stderr
    );
}

#[test]
fn blocks_beyond_max_blocks_are_counted_as_over_limit_not_shown() {
    let p = prefix("bound");
    let _blocks: Vec<Producer> = (0..3).map(|i| producer(&format!("{p}{i}"), 4)).collect();
    let exp = Exporter::start(&["exporter", "--prefix", &p, "--max-blocks", "2"]);
    let text = exp.scrape();
    assert_eq!(
        value(&text, "datahub_exporter_blocks", &[]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "datahub_exporter_block_errors",
            &[("reason", "over_limit")]
        ),
        Some(1.0),
        "{text}"
    );
    let shown = samples(&text)
        .into_iter()
        .filter(|s| s.name == "datahub_slots")
        .count();
    assert_eq!(shown, 2);
}
