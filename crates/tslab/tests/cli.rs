//! The `tslab` binary, end to end: outputs, JSON modes, exit codes, and `promtool check metrics`
//! on the exposition it writes.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use common::tslab;

fn run(args: &[&str]) -> Output {
    tslab().args(args).output().expect("run tslab")
}

/// Runs `cmd` with `text` on its standard input, capturing its output.
fn with_stdin(cmd: &mut Command, text: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).expect("write");
    path.to_str().unwrap().to_owned()
}

fn snapshot_file(dir: &Path, name: &str) -> String {
    write(&dir.join(name), &common::snapshot().to_json_pretty())
}

fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found && std::env::var("REQUIRE_PROMETHEUS").is_ok_and(|v| v == "1") {
        panic!("promtool not found and REQUIRE_PROMETHEUS=1: install Debian's prometheus package");
    }
    if !found {
        eprintln!("note: promtool not found; skipping the promtool part of this test");
    }
    found.then_some("promtool")
}

/// `promtool check metrics` accepts `text` (skipped, with a note, without promtool).
fn assert_promtool_accepts_metrics(text: &str) {
    if let Some(promtool) = promtool() {
        let mut cmd = Command::new(promtool);
        let out = with_stdin(cmd.args(["check", "metrics"]), text);
        assert!(
            out.status.success(),
            "promtool check metrics failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn stats_text_and_json() {
    let dir = common::temp_dir("stats");
    let f = snapshot_file(&dir, "s.json");
    let o = run(&["stats", &f]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for needle in [
        "RSS",
        "slow path",
        "madvise",
        "2 open, 1 closing",
        "top epochs by RSS",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    let o = run(&["stats", "--json", &f]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("--json is JSON");
    assert_eq!(v["epochs_active"], 2);
    assert_eq!(v["epochs_closing"], 1);
    assert_eq!(v["top_epochs_by_rss"].as_array().unwrap().len(), 3);
    assert_eq!(
        v["top_epochs_by_rss"][0]["label"], "requests",
        "the big epoch first"
    );
    assert!(v["allocs"].as_u64().unwrap() >= 20_110);
}

#[test]
fn top_epochs_and_classes() {
    let dir = common::temp_dir("top");
    let f = snapshot_file(&dir, "s.json");
    let o = run(&["top", "--epochs", "--by", "refcount", "--json", &f]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["rows"][0]["entry"]["label"], common::NASTY_LABEL);
    assert_eq!(v["rows"][0]["value"], 2.0);
    let o = run(&[
        "top", "--epochs", "--by", "refcount", "--asc", "--n", "1", "--json", &f,
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["rows"].as_array().unwrap().len(), 1);
    assert_eq!(v["rows"][0]["value"], 0.0);
    // Text mode shows the label escaped, on the first data row.
    let o = run(&["top", "--epochs", "--by", "refcount", &f]);
    let text = stdout(&o);
    let first_row = text.lines().nth(2).unwrap();
    assert!(
        first_row.contains("\"q\\\"b\\\\s\\nn\\tt\\u{1}é\""),
        "{text}"
    );
    for by in [
        "slow_path_hits",
        "new_slab_count",
        "madvise_bytes",
        "net_slabs",
        "lock_contended",
        "bitmap_alloc_cas_retries",
    ] {
        let o = run(&["top", "--classes", "--by", by, "--json", &f]);
        assert!(o.status.success(), "{by}: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        let values: Vec<f64> = v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["value"].as_f64().unwrap())
            .collect();
        assert_eq!(values.len(), 5);
        assert!(
            values.windows(2).all(|w| w[0] >= w[1]),
            "{by}: not descending: {values:?}"
        );
    }
    let o = run(&["top", "--classes", "--by", "refcount", &f]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "an epoch metric for classes is a usage error"
    );
    assert!(stderr(&o).contains("not a class metric"), "{}", stderr(&o));
}

#[test]
fn top_without_epoch_data_exits_zero() {
    let dir = common::temp_dir("noepochs");
    let mut v = serde_json::to_value(common::snapshot()).unwrap();
    v.as_object_mut().unwrap().remove("epochs");
    let f = write(&dir.join("old.json"), &v.to_string());
    let o = run(&["top", "--epochs", &f]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("no epoch data"), "{}", stdout(&o));
    let o = run(&["stats", &f]);
    assert!(stdout(&o).contains("no epoch data"));
}

#[test]
fn export_prometheus_passes_promtool_and_escapes_labels() {
    let dir = common::temp_dir("export");
    let f = snapshot_file(&dir, "s.json");
    let o = run(&["export", "prometheus", &f]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    // The label text is only on _epoch_info, escaped; numeric epoch metrics carry no label.
    assert!(
        text.contains(r#"label="q\"b\\s\nn	t"#),
        "label not escaped as the exposition format requires:\n{text}"
    );
    for line in text
        .lines()
        .filter(|l| l.starts_with("temporal_slab_epoch_"))
    {
        assert_eq!(
            line.starts_with("temporal_slab_epoch_info{"),
            line.contains("label="),
            "only _epoch_info may carry the label: {line}"
        );
    }
    assert!(text.contains("# TYPE temporal_slab_class_allocs_total counter"));
    assert!(text.contains(r#"temporal_slab_epoch_refcount{epoch="1",era="2",state="ACTIVE"} 2"#));
    let o = run(&["export", "prometheus", "--prefix", "myapp_slab", &f]);
    assert!(stdout(&o).contains("myapp_slab_epoch_refcount{"));
    let o = run(&["export", "prometheus", "--prefix", "9bad", &f]);
    assert_eq!(o.status.code(), Some(2));
    let om = stdout(&run(&[
        "export",
        "prometheus",
        "--format",
        "openmetrics",
        &f,
    ]));
    assert!(om.ends_with("# EOF\n"));
    assert!(om.contains("# TYPE temporal_slab_class_allocs counter"));

    assert_promtool_accepts_metrics(&text);
}

#[test]
fn refused_epoch_advances_are_exported_as_a_counter_and_summarized() {
    // A real refusal: every ring slot held by a reference, then three advances refused.
    let alloc = temporal_slab::SlabAllocator::new().unwrap();
    alloc.inc_refcount(alloc.epoch_current()).unwrap();
    for _ in 1..temporal_slab::EPOCH_COUNT {
        let e = alloc.epoch_advance().unwrap();
        alloc.inc_refcount(e).unwrap();
    }
    for _ in 0..3 {
        assert!(matches!(
            alloc.epoch_advance(),
            Err(temporal_slab::Error::EpochRingFull { .. })
        ));
    }
    let snap = tslab::Snapshot::of(&alloc);
    assert_eq!(snap.epoch_advance_refused, 3);
    let dir = common::temp_dir("refused");
    let f = write(&dir.join("full.json"), &snap.to_json_pretty());

    let text = stdout(&run(&["export", "prometheus", &f]));
    assert!(
        text.contains("# TYPE temporal_slab_epoch_advance_refused_total counter\n")
            && text.contains("\ntemporal_slab_epoch_advance_refused_total 3\n")
            && text.contains("\ntemporal_slab_epoch_advances_total 15\n"),
        "{text}"
    );
    let om = stdout(&run(&[
        "export",
        "prometheus",
        "--format",
        "openmetrics",
        "--prefix",
        "myapp_slab",
        &f,
    ]));
    assert!(
        om.contains("# TYPE myapp_slab_epoch_advance_refused counter\n")
            && om.contains("\nmyapp_slab_epoch_advance_refused_total 3\n"),
        "{om}"
    );
    let o = run(&["stats", &f]);
    assert!(
        stdout(&o).contains("epoch_advance  15 epochs opened, 3 refused"),
        "{}",
        stdout(&o)
    );
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&run(&["stats", "--json", &f]))).unwrap();
    assert_eq!(v["epoch_advance_refused"], 3);
    assert_promtool_accepts_metrics(&text);
}

#[test]
fn diff_exit_codes() {
    let dir = common::temp_dir("diff");
    let snap = common::snapshot();
    let before = write(&dir.join("a.json"), &snap.to_json_pretty());
    let mut worse = snap.clone();
    worse.rss_bytes = snap.rss_bytes * 2;
    let after = write(&dir.join("b.json"), &worse.to_json_pretty());
    let mut slightly = snap.clone();
    slightly.rss_bytes = snap.rss_bytes + snap.rss_bytes / 20; // +5%
    let slight = write(&dir.join("c.json"), &slightly.to_json_pretty());

    assert_eq!(run(&["diff", &before, &before]).status.code(), Some(0));
    let o = run(&["diff", &before, &after]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("REGRESSION"));
    assert_eq!(run(&["diff", &before, &slight]).status.code(), Some(0));
    assert_eq!(
        run(&["diff", "--threshold", "2", &before, &slight])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        run(&["diff", "--fail-on", "never", &before, &after])
            .status
            .code(),
        Some(0)
    );
    // Improvements are not regressions.
    assert_eq!(run(&["diff", &after, &before]).status.code(), Some(0));
    let o = run(&["diff", "--json", &before, &after]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let rss = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["metric"] == "rss_bytes")
        .unwrap();
    assert_eq!(rss["regression"], true);
    assert!((rss["change_pct"].as_f64().unwrap() - 100.0).abs() < 1e-9);
    // madvise failures appearing from zero is a regression at any threshold.
    let mut failing = snap.clone();
    failing.classes[0].madvise_failures = 1;
    let f = write(&dir.join("d.json"), &failing.to_json_pretty());
    assert_eq!(
        run(&["diff", "--threshold", "1000", &before, &f])
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn validate_exits_one_on_invalid_documents_and_bad_input_exits_two() {
    let dir = common::temp_dir("bad");
    let good = snapshot_file(&dir, "good.json");
    let o = run(&["validate", &good]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("valid"));
    let o = run(&["validate", "--json", &good]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["epochs"], 3);

    let mut v = serde_json::to_value(common::snapshot()).unwrap();
    v["epochs"][0]["state"] = serde_json::json!("OPEN");
    let bad_schema = write(&dir.join("schema.json"), &v.to_string());
    let malformed = write(
        &dir.join("malformed.json"),
        "{\"schema_version\": 1, \"pid\": ",
    );
    let v2 = write(&dir.join("v2.json"), "{\"schema_version\": 2}");
    // `validate` found the document invalid: a failed check, exit 1; every other command
    // reading it: bad input, exit 2.
    let cases: [(&[&str], &str, i32); 6] = [
        (&["validate", &bad_schema], "/epochs/0/state", 1),
        (&["stats", &malformed], "malformed stats JSON", 2),
        (&["validate", &malformed], "malformed stats JSON", 1),
        (&["stats", &v2], "unknown schema_version 2", 2),
        (
            &["stats", "http://127.0.0.1:9/"],
            "http://127.0.0.1:9/stats.json",
            2,
        ),
        (
            &["stats", "/nonexistent/snap.json"],
            "/nonexistent/snap.json",
            2,
        ),
    ];
    for (args, needle, code) in cases {
        let o = run(args);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{args:?}: one line, got {err:?}");
        assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn stdin_source() {
    let text = common::snapshot().to_json_pretty();
    let mut cmd = tslab();
    let out = with_stdin(
        cmd.args(["top", "--epochs", "--by", "refcount", "--json", "-"]),
        &text,
    );
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rows"][0]["entry"]["refcount"], 2);
    // Watching stdin is refused: it cannot be sampled twice.
    let o = tslab()
        .args(["watch", "-"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn watch_and_top_window_on_a_live_endpoint() {
    let alloc = Arc::new(temporal_slab::SlabAllocator::new().unwrap());
    let endpoint =
        tslab::endpoint::serve("127.0.0.1:0".parse().unwrap(), alloc.clone()).expect("serve");
    let url = format!("http://{}", endpoint.local_addr());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = {
        let (alloc, stop) = (alloc.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let e = alloc.epoch_advance().unwrap();
                let hs: Vec<_> = (0..2000).map(|_| alloc.alloc(128, e).unwrap()).collect();
                for h in hs {
                    alloc.free(h).unwrap();
                }
                alloc.epoch_close(e).unwrap();
                n += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            n
        })
    };
    let o = run(&[
        "watch",
        "--interval",
        "300ms",
        "--count",
        "2",
        "--json",
        &url,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        assert!(l["allocs_per_sec"].as_f64().unwrap() > 0.0, "{l}");
        assert!(l["epoch_closes_per_sec"].as_f64().unwrap() > 0.0, "{l}");
        assert_eq!(l["restarted"], false);
    }
    let o = run(&[
        "top",
        "--classes",
        "--window",
        "300ms",
        "--n",
        "1",
        "--json",
        &url,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        v["rows"][0]["entry"]["object_size"], 128,
        "the busy class ranks first"
    );
    assert!(v["window_sec"].as_f64().unwrap() >= 0.29);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(worker.join().unwrap() > 0);
}

#[test]
fn serve_re_serves_a_file() {
    let dir = common::temp_dir("serve");
    let f = snapshot_file(&dir, "s.json");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let mut child = tslab()
        .args(["serve", "--listen", &listen, &f])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://{listen}/metrics");
    let mut body = None;
    for _ in 0..100 {
        if let Ok(mut r) = ureq::get(&url).call() {
            body = Some(r.body_mut().read_to_string().unwrap());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let body = body.expect("tslab serve answered within 5 s");
    assert!(
        body.contains("temporal_slab_epoch_refcount{epoch=\"1\",era=\"2\",state=\"ACTIVE\"} 2")
    );
    // A bad source fails at start, not at the first scrape.
    let o = run(&["serve", "--listen", "127.0.0.1:0", "/nonexistent.json"]);
    assert_eq!(o.status.code(), Some(2));
}
