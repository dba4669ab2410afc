//! `tslab demo`: the epoch-built tree against serde_json's own, and whole runs checked through
//! their final snapshot.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use temporal_slab::{EpochState, SlabAllocator};
use tslab::demo::{self, Corpus, DemoArgs, Listen, corpus, tree};
use tslab::{Error, Snapshot};

/// The shared real-data folder, or `None` (with a note) when it is missing and not required.
fn shared_json_dir() -> Option<PathBuf> {
    let base = std::env::var_os("SHARED_DATA_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
        PathBuf::from,
    );
    let dir = base.join("json");
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("REQUIRE_SHARED_DATA").as_deref() == Ok("1") {
        panic!("REQUIRE_SHARED_DATA=1 but {} does not exist", dir.display());
    }
    eprintln!(
        "note: {} not found (set SHARED_DATA_DIR); real-corpus test skipped",
        dir.display()
    );
    None
}

/// Checks the seed-built tree of `text` against serde_json's `Value`: counts and per-key counts.
fn check_against_value(text: &[u8], origin: &str) -> tree::Counts {
    let value: serde_json::Value = serde_json::from_slice(text).expect("valid JSON");
    let (want, want_keys) = tree::reference(&value);

    let alloc = SlabAllocator::new().expect("reserve");
    let id = alloc.epoch_current();
    let epoch = alloc.epoch(id);
    {
        let _domain = alloc.enter(id).expect("enter");
        let root = tree::parse_in(text, &epoch).expect("the seed parses what serde_json parses");
        let walk = tree::walk(&root, &epoch).expect("walk");
        assert_eq!(
            walk.counts, want,
            "{origin}: counts differ from serde_json::Value's"
        );
        let got_keys: BTreeMap<String, u64> = walk
            .per_key
            .iter()
            .map(|(k, &n)| (String::from_utf8(k.to_vec()).expect("utf-8 key"), n))
            .collect();
        let want_keys: BTreeMap<String, u64> = want_keys.into_iter().collect();
        assert_eq!(got_keys, want_keys, "{origin}: per-key counts differ");
        if want.keys > 0 {
            // At least the key map and the object vector are live, in the epoch's slabs.
            let snap = alloc.stats();
            let live: u64 = snap.classes.iter().map(|c| c.live_objects).sum();
            assert!(
                live > 0,
                "{origin}: the tree must live in the epoch's slabs"
            );
        }
    }
    // Tree and map dropped: every slab object is free again.
    let live: u64 = alloc.stats().classes.iter().map(|c| c.live_objects).sum();
    assert_eq!(live, 0, "{origin}: dropping the tree frees every object");
    want
}

#[test]
fn seed_counts_equal_value_counts_on_the_real_corpus() {
    let Some(dir) = shared_json_dir() else { return };
    let mut checked = 0;
    for name in ["twitter.json", "citm_catalog.json", "canada.json"] {
        let path = dir.join(name);
        let text = std::fs::read(&path).expect("read corpus file");
        let counts = check_against_value(&text, name);
        assert!(counts.values > 1000, "{name}: a real document is big");
        checked += 1;
    }
    // Anything else in the folder (NDJSON files included), through the demo's own loader.
    let corpus = Corpus::load(&dir).expect("load the real corpus");
    for kind in corpus.kinds() {
        for i in 0..kind.len() {
            check_against_value(kind.doc(i), &kind.origin(i));
        }
    }
    assert!(checked == 3 && corpus.documents() >= 3);
}

#[test]
fn seed_counts_equal_value_counts_on_the_generated_corpus() {
    let corpus = Corpus::generated(8);
    assert_eq!(corpus.kinds().len(), 6);
    let mut total = tree::Counts::default();
    for kind in corpus.kinds() {
        for i in 0..kind.len() {
            total.accumulate(&check_against_value(kind.doc(i), &kind.origin(i)));
        }
    }
    assert!(total.keys > 1000 && total.numbers > 1000 && total.trues > 0);
}

#[test]
fn the_generated_corpus_is_deterministic() {
    let (a, b) = (Corpus::generated(4), Corpus::generated(4));
    for (ka, kb) in a.kinds().iter().zip(b.kinds()) {
        for i in 0..ka.len() {
            assert_eq!(ka.doc(i), kb.doc(i));
        }
    }
    assert!(a.bytes() > 10_000);
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        "[a-z\u{e9}\u{1F600}\"\\\\\n]{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 200, 12, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..12).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("[a-d]{1,3}", inner, 0..12)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]
    #[test]
    fn seed_counts_equal_value_counts_on_any_json(value in json_value(), pretty in any::<bool>()) {
        let text = if pretty {
            serde_json::to_vec_pretty(&value)
        } else {
            serde_json::to_vec(&value)
        }
        .expect("serialize");
        check_against_value(&text, "proptest");
    }
}

/// The epochs of the run's final snapshot that a reference still holds (the leak).
fn held_epochs(report: &demo::DemoReport) -> Vec<&tslab::snapshot::EpochSnapshot> {
    report
        .snapshot
        .epochs()
        .iter()
        .filter(|e| e.refcount > 0)
        .collect()
}

/// A free port on 127.0.0.1 (port 0 cannot be known before `run` returns, so take one first).
fn free_local_addr() -> SocketAddr {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn args(requests: u64, inject_leak: bool) -> DemoArgs {
    DemoArgs {
        requests: Some(requests),
        batch: 16,
        inject_leak,
        listen: Listen::On(SocketAddr::from(([127, 0, 0, 1], 0))),
        quiet: true,
        ..DemoArgs::default()
    }
}

fn assert_ran(report: &demo::DemoReport, requests: u64) {
    assert_eq!(report.requests, requests, "every budgeted request runs");
    assert_eq!(
        report.kinds.iter().map(|k| k.requests).sum::<u64>(),
        requests
    );
    let l = &report.latency;
    assert!(l.p50_ns > 0 && l.p99_ns >= l.p50_ns && l.p999_ns >= l.p99_ns && l.max_ns >= l.p999_ns);
    assert!(l.mean_ns > 0.0);
    assert!(report.requests_per_sec > 0.0 && report.elapsed_sec > 0.0);
    assert!(report.counts.keys > 0 && report.bytes_parsed > 0);
    assert!(report.rss.samples.len() >= 2 && report.rss.peak_bytes > 0);
    let addr = report.listen.expect("an endpoint was asked for");
    assert_ne!(addr.port(), 0, "the bound port is reported, not 0");
    let snap = &report.snapshot;
    assert!(snap.epochs().len() > 1);
    assert!(
        snap.epochs().iter().any(|e| e.state == EpochState::Closing),
        "batches close their epochs"
    );
    assert!(
        snap.epochs().iter().all(|e| e.state == EpochState::Closing),
        "no epoch is left open: {:?}",
        snap.epochs()
    );
    assert_eq!(report.epochs_closed, report.batches);
    // The ring wrapped: 2000 / 16 batches is far more than 16 slots.
    assert!(report.batches > 16);
    assert_eq!(snap.epoch_advances, report.batches);
    assert_eq!(snap.epoch_advance_refused, 0, "the ring never ran full");
    assert_eq!(snap.stale_epoch_errors, 0);
    assert_eq!(snap.epoch_closed_errors, 0);
    assert_eq!(report.top_epochs.len(), 5);
    let mut out = Vec::new();
    report.print_human(&mut out).expect("print");
    let text = String::from_utf8(out).expect("utf-8");
    assert!(text.contains("requests/s") && text.contains("p99.9") && text.contains("top epochs"));
    serde_json::to_string(report).expect("the report serializes");
}

#[test]
fn a_run_with_inject_leak_leaves_exactly_one_closing_epoch_with_refcount_1_from_the_first_batch() {
    let dir = tempdir("leak");
    let json_out = dir.join("snap.json");
    let report = demo::run(&DemoArgs {
        json_out: Some(json_out.clone()),
        ..args(2000, true)
    })
    .expect("demo runs");
    assert_ran(&report, 2000);
    let snap = &report.snapshot;
    let held = held_epochs(&report);
    assert_eq!(held.len(), 1, "exactly one leaked epoch: {held:?}");
    let leak = held[0];
    assert_eq!(leak.state, EpochState::Closing);
    assert_eq!(leak.refcount, 1);
    assert!(leak.label.starts_with("leak:"), "label {:?}", leak.label);
    assert!(leak.live_objects > 0, "the leaked tree is still live");
    let reported = report.leaked.as_ref().expect("the leak is reported");
    assert_eq!(
        (
            reported.epoch_id,
            reported.epoch_era,
            reported.label.as_str()
        ),
        (leak.epoch_id, leak.epoch_era, leak.label.as_str())
    );
    assert_eq!(reported.batch, 0, "--inject-leak leaks in the first batch");
    assert_eq!(
        report.top_epochs[0].epoch_era, leak.epoch_era,
        "the leak ranks first"
    );
    // The leak came first and stayed while every later batch advanced the ring (2000 / 16 =
    // 125 batches; with 2 workers at most one other batch started with it).
    assert!(leak.epoch_era < snap.current_era);
    assert!(
        reported.epochs_opened_after >= report.batches - 2,
        "{} epochs opened after the leak of {} batches",
        reported.epochs_opened_after,
        report.batches
    );
    assert!(
        reported.epochs_opened_after > 16,
        "the ring wrapped after it"
    );
    let mut text = Vec::new();
    report.print_human(&mut text).expect("print");
    let text = String::from_utf8(text).expect("utf-8");
    assert!(
        text.contains(&format!(
            "in batch 0: CLOSING with a domain never left; still held after {} later epochs",
            reported.epochs_opened_after
        )),
        "{text}"
    );

    // --json-out: the same final state, readable by tslab.
    let text = std::fs::read_to_string(&json_out).expect("--json-out written");
    let saved = Snapshot::from_json(&text, "snap.json").expect("a valid snapshot");
    let mut by_refcount = saved.epochs().to_vec();
    by_refcount.sort_by_key(|e| std::cmp::Reverse(e.refcount));
    assert_eq!(by_refcount[0].epoch_era, leak.epoch_era);
    assert_eq!(by_refcount[0].refcount, 1);
    assert_eq!(by_refcount[1].refcount, 0);
}

#[test]
fn a_run_without_inject_leak_holds_no_epoch() {
    let report = demo::run(&args(2000, false)).expect("demo runs");
    assert_ran(&report, 2000);
    assert!(report.leaked.is_none());
    for e in report.snapshot.epochs() {
        assert_eq!(e.refcount, 0, "epoch {e:?} still held");
        assert!(!e.label.starts_with("leak:"));
        assert_eq!(e.live_objects, 0, "every request freed its tree: {e:?}");
    }
    let labels: Vec<&str> = report
        .snapshot
        .epochs()
        .iter()
        .map(|e| e.label.as_str())
        .collect();
    for kind in [
        "order",
        "search",
        "login",
        "profile",
        "telemetry",
        "catalog",
    ] {
        assert!(
            labels.contains(&kind),
            "kind {kind} labels its batches: {labels:?}"
        );
    }
}

#[test]
fn one_worker_and_a_single_request_still_leak_one_epoch() {
    let report = demo::run(&DemoArgs {
        workers: 1,
        ..args(1, true)
    })
    .expect("demo runs");
    assert_eq!(report.requests, 1);
    assert_eq!(report.batches, 1);
    let held = held_epochs(&report);
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].label, format!("leak:{}", report.kinds[0].label));
}

#[test]
fn inject_leak_at_n_leaks_in_batch_n_labeled_with_that_batch_kind() {
    let report = demo::run(&DemoArgs {
        inject_leak: false,
        inject_leak_at: Some(20),
        workers: 1,
        ..args(800, false)
    })
    .expect("demo runs");
    assert_ran(&report, 800);
    let leak = report.leaked.as_ref().expect("batch 20 leaked");
    assert_eq!(leak.batch, 20);
    // One worker: batches run in order, batch b has kind b % kinds.
    let kind = &report.kinds[20 % report.kinds.len()].label;
    assert_eq!(leak.label, format!("leak:{kind}"));
    let held = held_epochs(&report);
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(
        (held[0].epoch_id, held[0].epoch_era),
        (leak.epoch_id, leak.epoch_era)
    );
    // 50 batches: batch 20 was the 21st epoch opened, 29 came after it.
    assert_eq!(report.batches, 50);
    assert_eq!(leak.epochs_opened_after, 29);
    assert_eq!(report.inject_leak_at, Some(20));
}

#[test]
fn inject_leak_at_past_the_last_batch_is_a_usage_error() {
    // 100 requests in batches of 16: batches 0 to 6.
    let err = demo::run(&DemoArgs {
        inject_leak_at: Some(7),
        ..args(100, false)
    })
    .expect_err("no batch 7");
    assert!(matches!(err, Error::Usage(_)), "{err:?}");
    assert!(err.to_string().contains("batches 0 to 6"), "{err}");
    let report = demo::run(&DemoArgs {
        inject_leak_at: Some(6),
        listen: Listen::Off,
        ..args(100, false)
    })
    .expect("batch 6 is the last");
    assert_eq!(report.leaked.expect("leaked").batch, 6);
}

#[test]
fn a_batch_epoch_held_by_its_reference_survives_any_number_of_advances() {
    let alloc = SlabAllocator::new().expect("reserve");
    let batch = demo::open_batch_epoch(&alloc, "batch", Duration::from_secs(1)).expect("open");
    let id = batch.id();
    let h = alloc.alloc(100, id).expect("alloc");
    assert_eq!(alloc.refcount(id).unwrap(), 1, "the batch's own reference");
    // Another worker runs 40 batches meanwhile: the ring goes round 2.5 times.
    for _ in 0..40 {
        let other = demo::open_batch_epoch(&alloc, "other", Duration::from_secs(1)).expect("open");
        let o = alloc.alloc(64, other.id()).expect("alloc");
        alloc.free(o).expect("free");
        other.close().expect("close");
        assert_ne!(alloc.epoch_current().index(), id.index());
    }
    assert_eq!(alloc.epoch_state(id), Some(EpochState::Active));
    assert_eq!(alloc.label(id).unwrap(), "batch");
    assert!(alloc.get(h).is_some(), "the batch's object is still valid");
    alloc.alloc(100, id).expect("the batch can still allocate");
    assert_eq!(alloc.stats().epoch_advance_refused, 0);
    batch.close().expect("close");
    assert_eq!(alloc.epoch_state(id), Some(EpochState::Closing));
    assert_eq!(alloc.refcount(id).unwrap(), 0);
}

/// Holds every ring slot with a reference: the current one and 15 advances.
fn fill_the_ring(alloc: &SlabAllocator) -> Vec<temporal_slab::EpochId> {
    let mut held = vec![alloc.epoch_current()];
    alloc.inc_refcount(held[0]).unwrap();
    for _ in 1..temporal_slab::EPOCH_COUNT {
        let e = alloc.epoch_advance().expect("a drained slot");
        alloc.inc_refcount(e).unwrap();
        held.push(e);
    }
    held
}

#[test]
fn a_full_ring_is_a_typed_error_after_the_bounded_wait() {
    let alloc = SlabAllocator::new().expect("reserve");
    fill_the_ring(&alloc);
    let current = alloc.epoch_current();
    let started = std::time::Instant::now();
    let err = demo::open_batch_epoch(&alloc, "x", Duration::from_millis(100)).expect_err("full");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(100) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    match &err {
        Error::EpochRingFull { waited, source } => {
            assert!(*waited >= Duration::from_millis(100));
            assert!(
                matches!(source, temporal_slab::Error::EpochRingFull { held: 15 }),
                "{source:?}"
            );
        }
        other => panic!("expected EpochRingFull, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.starts_with("no epoch ring slot drained within 100ms: cannot advance the epoch")
            && !text.contains('\n'),
        "{text}"
    );
    assert_eq!(alloc.epoch_current(), current, "nothing changed");
    let stats = alloc.stats();
    assert!(
        stats.epoch_advance_refused >= 2,
        "it retried: {}",
        stats.epoch_advance_refused
    );
    assert_eq!(
        Snapshot::of(&alloc).epoch_advance_refused,
        stats.epoch_advance_refused
    );
}

#[test]
fn a_full_ring_waits_until_a_slot_drains() {
    let alloc = SlabAllocator::new().expect("reserve");
    let held = fill_the_ring(&alloc);
    let freed = held[5];
    let opened = std::thread::scope(|s| {
        let waiter = s.spawn(|| demo::open_batch_epoch(&alloc, "late", Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "the ring is still full");
        alloc.epoch_close(freed).unwrap();
        alloc.dec_refcount(freed).unwrap();
        let batch = waiter
            .join()
            .expect("no panic")
            .expect("opens once a slot drained");
        let id = batch.id();
        assert_eq!(alloc.refcount(id).unwrap(), 1);
        assert_eq!(alloc.label(id).unwrap(), "late");
        batch.close().unwrap();
        id
    });
    assert_eq!(opened.index(), freed.index(), "the one slot that drained");
    assert!(opened.era() > freed.era());
    assert!(alloc.stats().epoch_advance_refused >= 1);
}

#[test]
fn the_leak_in_the_first_batch_stays_on_the_endpoint_while_later_batches_run() {
    let addr = free_local_addr();
    let runner = std::thread::spawn(move || {
        demo::run(&DemoArgs {
            listen: Listen::On(addr),
            // 1000 batches, a few seconds in a debug build.
            batch: 4,
            ..args(4000, true)
        })
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    // (era of the leak, epoch_advances when it was first seen)
    let mut first: Option<(u64, u64)> = None;
    let mut seen = None;
    while std::time::Instant::now() < deadline && !runner.is_finished() {
        let Some(snap) = http_get(addr, "/stats.json")
            .ok()
            .and_then(|r| r.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()))
            .and_then(|b| Snapshot::from_json(&b, "endpoint").ok())
        else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let leak = snap
            .epochs()
            .iter()
            .find(|e| e.label.starts_with("leak:"))
            .cloned();
        match (first, leak) {
            (None, Some(l)) => first = Some((l.epoch_era, snap.epoch_advances)),
            (Some((era, at)), Some(l)) => {
                assert_eq!(l.epoch_era, era, "the same leaked epoch");
                assert_eq!((l.state, l.refcount), (EpochState::Closing, 1));
                assert!(l.live_objects > 0);
                if snap.epoch_advances >= at + 100 && !runner.is_finished() {
                    seen = Some((at, snap.epoch_advances));
                    break;
                }
            }
            (Some(_), None) => panic!("the leaked epoch vanished from /stats.json"),
            (None, None) => {}
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let report = runner.join().expect("no panic").expect("demo runs");
    let (at, later) = seen.expect("saw the leak and 100 later advances while the demo ran");
    assert!(later - at >= 100);
    assert_eq!(report.leaked.expect("leaked").epoch_era, first.unwrap().0);
}

#[test]
fn a_duration_bound_stops_the_run() {
    let started = std::time::Instant::now();
    let report = demo::run(&DemoArgs {
        requests: None,
        duration: Some(Duration::from_millis(300)),
        listen: Listen::Off,
        ..args(1, true)
    })
    .expect("demo runs");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(report.requests > 1, "it ran until the deadline");
    assert!(report.listen.is_none());
    assert_eq!(held_epochs(&report).len(), 1);
}

#[test]
fn the_endpoint_serves_the_leak_while_lingering() {
    let addr = free_local_addr();
    let runner = std::thread::spawn(move || {
        demo::run(&DemoArgs {
            listen: Listen::On(addr),
            linger: Duration::from_secs(3),
            ..args(200, true)
        })
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut found = None;
    while std::time::Instant::now() < deadline && !runner.is_finished() {
        if let Ok(body) = http_get(addr, "/metrics") {
            if let Some(line) = body.lines().find(|l| {
                l.contains("epoch_info") && l.contains("leak:") && l.contains("\"CLOSING\"")
            }) {
                found = Some((line.to_owned(), body));
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let report = runner.join().expect("no panic").expect("demo runs");
    let (info, body) = found.expect("/metrics showed the leaked epoch while lingering");
    let leak = report.leaked.expect("leaked");
    assert!(
        info.contains(&format!("era=\"{}\"", leak.epoch_era)),
        "{info}"
    );
    let refcount = body
        .lines()
        .find(|l| {
            l.contains("epoch_refcount{") && l.contains(&format!("era=\"{}\"", leak.epoch_era))
        })
        .expect("a refcount series for the leaked epoch");
    assert!(refcount.trim_end().ends_with(" 1"), "{refcount}");
}

fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

#[test]
fn a_run_on_the_real_corpus_leaks_one_epoch() {
    let Some(dir) = shared_json_dir() else { return };
    let report = demo::run(&DemoArgs {
        corpus: Some(dir),
        workers: 2,
        batch: 4,
        ..args(24, true)
    })
    .expect("demo runs");
    assert_eq!(report.requests, 24);
    let labels: Vec<&str> = report.kinds.iter().map(|k| k.label.as_str()).collect();
    assert_eq!(labels, ["canada.json", "citm_catalog.json", "twitter.json"]);
    let held = held_epochs(&report);
    assert_eq!(held.len(), 1);
    assert!(held[0].label.starts_with("leak:") && held[0].label.ends_with(".json"));
}

fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tslab-demo-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn a_malformed_ndjson_line_is_an_error_naming_file_and_line() {
    let dir = tempdir("bad-ndjson");
    let path = dir.join("requests.ndjson");
    std::fs::write(
        &path,
        "{\"a\": 1}\n\n{\"b\": [1, 2]}\n{\"c\": tru}\n{\"d\": 4}\n",
    )
    .unwrap();
    let err = demo::run(&DemoArgs {
        corpus: Some(path.clone()),
        ..args(10, false)
    })
    .expect_err("malformed corpus");
    let text = err.to_string();
    assert!(matches!(err, Error::Corpus(_)), "{err:?}");
    assert!(
        text.contains(&format!("{}:4:", path.display())),
        "names file:line: {text}"
    );

    // The same lines in a .json file: detected as NDJSON by the text that follows the first
    // value.
    let json = dir.join("requests.json");
    std::fs::copy(&path, &json).unwrap();
    let text = Corpus::load(&json).expect_err("malformed").to_string();
    assert!(text.contains(&format!("{}:4:", json.display())), "{text}");

    // A good NDJSON file: one request per non-blank line, origins with line numbers.
    std::fs::write(&path, "{\"a\": 1}\n\n{\"b\": [1, 2]}\r\n").unwrap();
    let corpus = Corpus::load(&path).expect("valid NDJSON");
    assert_eq!(corpus.documents(), 2);
    let kind = &corpus.kinds()[0];
    assert_eq!(kind.label(), "requests.ndjson");
    assert_eq!(kind.origin(1), format!("{}:3", path.display()));
    assert_eq!(kind.doc(1), b"{\"b\": [1, 2]}");
}

#[test]
fn a_malformed_json_document_is_an_error_naming_file_and_line() {
    let dir = tempdir("bad-json");
    let path = dir.join("doc.json");
    std::fs::write(&path, "{\n  \"a\": 1,\n  \"b\": [1, 2,]\n}\n").unwrap();
    let text = Corpus::load(&dir).expect_err("malformed").to_string();
    assert!(text.contains(&format!("{}:3:", path.display())), "{text}");
}

#[test]
fn an_empty_or_missing_corpus_is_an_error() {
    let dir = tempdir("empty");
    std::fs::write(dir.join("notes.txt"), "not a corpus").unwrap();
    std::fs::write(dir.join("blank.json"), "  \n").unwrap();
    let err = demo::run(&DemoArgs {
        corpus: Some(dir.clone()),
        ..args(10, false)
    })
    .expect_err("empty corpus");
    assert!(err.to_string().contains("no JSON documents"), "{err}");

    let missing = dir.join("nope");
    let err = Corpus::load(&missing).expect_err("missing");
    match err {
        Error::Io { path, .. } => assert_eq!(path, missing.display().to_string()),
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn a_listen_address_in_use_is_an_io_error_naming_it() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().unwrap();
    let err = demo::run(&DemoArgs {
        listen: Listen::On(addr),
        ..args(10, false)
    })
    .expect_err("address in use");
    match err {
        Error::Io { path, .. } => assert_eq!(path, addr.to_string()),
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn bad_arguments_are_usage_errors() {
    for bad in [
        DemoArgs {
            workers: 0,
            ..args(10, false)
        },
        DemoArgs {
            workers: 15,
            ..args(10, false)
        },
        DemoArgs {
            batch: 0,
            ..args(10, false)
        },
        args(0, false),
    ] {
        assert!(matches!(demo::run(&bad), Err(Error::Usage(_))), "{bad:?}");
    }
    assert_eq!("none".parse::<Listen>(), Ok(Listen::Off));
    assert!("nonsense".parse::<Listen>().is_err());
    assert_eq!(demo::parse_duration("1.5"), Ok(Duration::from_millis(1500)));
    assert_eq!(demo::parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert!(demo::parse_duration("-1").is_err());
    let _ = corpus::GENERATED_PER_KIND;
}

/// The done-when, through the library: 20000 requests on the real corpus with a leak.
/// Slow in a debug build: `cargo test --release -p tslab --test demo -- --ignored --nocapture`.
#[test]
#[ignore = "slow: 20000 requests on the real corpus (run with --release -- --ignored)"]
fn done_when_20000_real_requests_leak_one_epoch_that_ranks_first() {
    let Some(dir) = shared_json_dir() else { return };
    let out = tempdir("done-when").join("snap.json");
    let report = demo::run(&DemoArgs {
        corpus: Some(dir),
        requests: Some(20_000),
        inject_leak: true,
        json_out: Some(out.clone()),
        listen: Listen::On(SocketAddr::from(([127, 0, 0, 1], 0))),
        quiet: true,
        ..DemoArgs::default()
    })
    .expect("demo runs");
    let mut text = Vec::new();
    report.print_human(&mut text).expect("print");
    println!("{}", String::from_utf8_lossy(&text));
    assert_eq!(report.requests, 20_000);
    let saved = Snapshot::from_json(&std::fs::read_to_string(&out).unwrap(), "snap.json").unwrap();
    let mut epochs = saved.epochs().to_vec();
    epochs.sort_by_key(|e| std::cmp::Reverse(e.refcount));
    assert_eq!(epochs[0].refcount, 1);
    assert!(epochs[0].label.starts_with("leak:"));
    assert!(epochs[1..].iter().all(|e| e.refcount == 0));
}

/// The CLI end to end, as in the done-when (generated corpus, small): `tslab demo
/// --inject-leak --json-out F`, then `tslab top --epochs --by refcount F` ranks the leak first.
#[test]
fn the_cli_demo_writes_a_snapshot_whose_top_epoch_by_refcount_is_the_leak() {
    let exe = env!("CARGO_BIN_EXE_tslab");
    let snap = tempdir("cli").join("snap.json");
    let run = std::process::Command::new(exe)
        .args([
            "demo",
            "--requests",
            "600",
            "--batch",
            "16",
            "--inject-leak",
        ])
        .args(["--listen", "127.0.0.1:0", "--quiet", "--json-out"])
        .arg(&snap)
        .output()
        .expect("run tslab demo");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}\n{}",
        stdout,
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("requests/s") && stdout.contains("leaked epoch"),
        "{stdout}"
    );
    let top = std::process::Command::new(exe)
        .args(["top", "--epochs", "--by", "refcount"])
        .arg(&snap)
        .output()
        .expect("run tslab top");
    assert!(top.status.success());
    let text = String::from_utf8_lossy(&top.stdout);
    let first = text
        .lines()
        .find(|l| l.contains("CLOSING"))
        .expect("an epoch row");
    assert!(first.contains("leak:"), "{text}");

    // --help documents both leak switches; an out-of-range batch is a one-line usage error.
    let help = std::process::Command::new(exe)
        .args(["demo", "--help"])
        .output()
        .expect("run tslab demo --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--inject-leak-at <N>") && help.contains("same as --inject-leak-at 0"),
        "{help}"
    );
    let bad = std::process::Command::new(exe)
        .args(["demo", "--requests", "10", "--inject-leak-at", "1"])
        .args(["--listen", "none", "--quiet"])
        .output()
        .expect("run tslab demo");
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--inject-leak-at 1 is out of range"), "{err}");

    // --json prints the report as JSON.
    let json = std::process::Command::new(exe)
        .args([
            "demo",
            "--requests",
            "50",
            "--listen",
            "none",
            "--quiet",
            "--json",
        ])
        .output()
        .expect("run tslab demo --json");
    assert!(json.status.success());
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON report");
    assert_eq!(report["requests"], 50);
    assert!(report["latency"]["p99_ns"].as_u64().unwrap() > 0);
}
