//! End to end against a real Prometheus: Debian's `prometheus`, started on 127.0.0.1, scrapes
//! `tslab demo --inject-leak --duration 30s --batch 8 --listen ...` every second. The demo leaks
//! in its first batch; while it is still running, the test asks Prometheus's HTTP query API for
//! the refcount-leak expression of the alert rules (its 300 s threshold shortened to 2 s), which
//! must return the leaked epoch with its `leak:` label, and for `epoch_advances_total`, which must
//! be at least 100 higher than in the first scrape that showed the leak: the leaked epoch stays
//! visible while later batches advance the 16-slot ring many times over. Then the demo is killed
//! (it does not run its 30 s).
//!
//! Needs `prometheus` on PATH; without it the test is skipped with a note, unless
//! `REQUIRE_PROMETHEUS=1` (CI), which makes it fail. Every wait is bounded; both processes are
//! killed when the test ends, pass or fail.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `expr` of alert `name` in the rules file text (a `|` block or a one-line value), with
/// its lines joined by spaces.
fn alert_expr(rules: &str, name: &str) -> String {
    let mut lines = rules
        .lines()
        .skip_while(|l| l.trim() != format!("- alert: {name}"))
        .skip(1)
        .skip_while(|l| !l.trim_start().starts_with("expr:"));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no expr for alert {name}"));
    let inline = first.trim_start().trim_start_matches("expr:").trim();
    if inline != "|" && !inline.is_empty() {
        return inline.to_owned();
    }
    let indent = |l: &str| l.len() - l.trim_start().len();
    let base = indent(first);
    lines
        .take_while(|l| l.trim().is_empty() || indent(l) > base)
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
        .trim()
        .to_owned()
}

/// Kills the child when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn prometheus_available() -> bool {
    let found = Command::new("prometheus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found && std::env::var("REQUIRE_PROMETHEUS").is_ok_and(|v| v == "1") {
        panic!("prometheus not found and REQUIRE_PROMETHEUS=1: apt-get install prometheus");
    }
    found
}

/// GET `url`, the body on status 200.
fn get(url: &str) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut r = agent.get(url).call().ok()?;
    r.body_mut().read_to_string().ok()
}

/// Polls `f` every 250 ms until it returns `Some`, for at most `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Runs an instant query at `time` (Unix seconds; `None`: now); the result vector when the query
/// succeeded and it is not empty.
fn query_at(prom: &str, expr: &str, time: Option<f64>) -> Option<Vec<serde_json::Value>> {
    let mut url = format!("http://{prom}/api/v1/query?query=");
    for b in expr.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    if let Some(t) = time {
        url.push_str(&format!("&time={t:.3}"));
    }
    let body: serde_json::Value = serde_json::from_str(&get(&url)?).ok()?;
    assert_eq!(body["status"], "success", "query {expr} failed: {body}");
    let result = body["data"]["result"].as_array()?.clone();
    (!result.is_empty()).then_some(result)
}

fn query(prom: &str, expr: &str) -> Option<Vec<serde_json::Value>> {
    query_at(prom, expr, None)
}

/// The value of a one-series result as a number.
fn value(series: &[serde_json::Value]) -> f64 {
    assert_eq!(series.len(), 1, "one series expected: {series:?}");
    series[0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("not a number: {series:?}"))
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// How long the demo is asked to run; every assertion is made before it would end.
const DEMO_DURATION: Duration = Duration::from_secs(30);

/// Later epoch advances the test waits for after the leak was first seen.
const LATER_ADVANCES: f64 = 100.0;

#[test]
fn prometheus_sees_the_first_batch_leak_while_later_batches_advance_the_ring() {
    if !prometheus_available() {
        eprintln!("note: prometheus not on PATH; skipping the end-to-end test");
        return;
    }
    let rules = std::fs::read_to_string(repo_root().join("alerts/temporal-slab.rules.yml"))
        .expect("read the alert rules");
    let leak_alert = alert_expr(&rules, "EpochRefcountLeak");
    assert!(
        leak_alert.contains("> 300"),
        "EpochRefcountLeak's age threshold is no longer 300 s: {leak_alert}"
    );

    let dir = common::temp_dir("prometheus-e2e");
    let (demo_port, prom_port) = (free_port(), free_port());
    let demo_addr = format!("127.0.0.1:{demo_port}");
    let prom = format!("127.0.0.1:{prom_port}");

    // Prometheus first, so the demo's whole run is scraped.
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: tslab-demo\n    static_configs:\n      - targets: ['{demo_addr}']\n"
        ),
    )
    .unwrap();
    let prom_log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={prom}"))
            .stdout(prom_log.try_clone().unwrap())
            .stderr(prom_log)
            .spawn()
            .expect("start prometheus"),
    );
    let logs = || {
        format!(
            "--- demo.log\n{}\n--- prometheus.log (tail)\n{}",
            std::fs::read_to_string(dir.join("demo.log")).unwrap_or_default(),
            std::fs::read_to_string(dir.join("prometheus.log"))
                .unwrap_or_default()
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .join("\n")
        )
    };
    let ready = std::panic::catch_unwind(|| {
        wait_for("prometheus ready", Duration::from_secs(60), || {
            get(&format!("http://{prom}/-/ready"))
        });
    });
    if let Err(panic) = ready {
        eprintln!("{}", logs());
        std::panic::resume_unwind(panic);
    }

    let demo_log = std::fs::File::create(dir.join("demo.log")).unwrap();
    let demo_started = Instant::now();
    let demo = std::sync::Mutex::new(Killed(
        common::tslab()
            .args(["demo", "--inject-leak", "--batch", "8", "--duration"])
            .arg(format!("{}s", DEMO_DURATION.as_secs()))
            .args(["--listen", &demo_addr])
            .stdout(demo_log.try_clone().unwrap())
            .stderr(demo_log)
            .spawn()
            .expect("start tslab demo"),
    ));
    // Everything below must be seen while the demo runs: leave it 5 s of its 30.
    let limit = DEMO_DURATION - Duration::from_secs(5);
    let running = || {
        let status = demo.lock().unwrap().0.try_wait().expect("poll the demo");
        assert!(status.is_none(), "the demo exited early: {status:?}");
    };

    let result = std::panic::catch_unwind(|| {
        let left = || limit.saturating_sub(demo_started.elapsed());
        wait_for("up == 1", left(), || {
            query(&prom, "up{job=\"tslab-demo\"} == 1")
        });
        // The first scrape that shows the leak, and epoch_advances_total in that same scrape: at
        // least as many advances as when the leak happened (batch 0, the first or second).
        let seen = wait_for("the leaked epoch's first scrape", left(), || {
            let t = unix_now();
            let leak = query_at(
                &prom,
                "temporal_slab_epoch_info{label=~\"leak:.*\"}",
                Some(t),
            )?;
            let advances = query_at(
                &prom,
                "temporal_slab_epoch_advances_total and on (job, instance) \
                 temporal_slab_epoch_info{label=~\"leak:.*\"}",
                Some(t),
            )?;
            Some((leak, value(&advances)))
        });
        let (first_leak, advances_at_leak) = seen;
        assert_eq!(first_leak.len(), 1, "one leaked epoch: {first_leak:?}");
        let first = first_leak[0]["metric"].clone();
        let first_seen = demo_started.elapsed();

        // The alert's expression with its threshold shortened, joined to the label.
        let leak_expr = format!(
            "({}) * on (job, instance, epoch, era) group_left (label) temporal_slab_epoch_info",
            leak_alert.replace("> 300", "> 2")
        );
        let (leaks, advances_now, current_era) = wait_for(
            "the refcount-leak expression and 100 later epoch advances",
            left(),
            || {
                let t = unix_now();
                let leaks = query_at(&prom, &leak_expr, Some(t))?;
                let advances = value(&query_at(
                    &prom,
                    "temporal_slab_epoch_advances_total{job=\"tslab-demo\"}",
                    Some(t),
                )?);
                let era = value(&query_at(
                    &prom,
                    "temporal_slab_current_era{job=\"tslab-demo\"}",
                    Some(t),
                )?);
                (advances >= advances_at_leak + LATER_ADVANCES).then_some((leaks, advances, era))
            },
        );
        let matched = demo_started.elapsed();
        running();
        assert_eq!(leaks.len(), 1, "exactly one leaked epoch: {leaks:?}");
        let m = &leaks[0]["metric"];
        assert_eq!(m["state"], "CLOSING");
        assert!(
            m["label"].as_str().unwrap().starts_with("leak:"),
            "the leaked epoch's label: {m}"
        );
        assert_eq!(leaks[0]["value"][1], "1", "refcount 1 times info 1");
        for key in ["epoch", "era", "label"] {
            assert_eq!(
                m[key], first[key],
                "the same leaked epoch as first seen: {key}"
            );
        }
        let leak_era: f64 = m["era"].as_str().unwrap().parse().unwrap();
        eprintln!(
            "leaked epoch {} era {} label {}: first scraped {:.1} s after the demo started with \
             epoch_advances_total {advances_at_leak}; the leak expression matched at {:.1} s with \
             epoch_advances_total {advances_now} (+{}), current era {current_era} (+{} eras \
             after the leak's)",
            m["epoch"],
            m["era"],
            m["label"],
            first_seen.as_secs_f64(),
            matched.as_secs_f64(),
            advances_now - advances_at_leak,
            current_era - leak_era,
        );
        assert!(
            current_era - leak_era >= LATER_ADVANCES,
            "the ring went round many times after the leak"
        );

        // The epoch series exist and only _info carries the free-text label.
        let info = query(&prom, "temporal_slab_epoch_info").expect("epoch_info series");
        assert!(info.iter().all(|s| s["metric"].get("label").is_some()));
        for metric in [
            "temporal_slab_epoch_age_seconds",
            "temporal_slab_epoch_refcount",
            "temporal_slab_epoch_estimated_rss_bytes",
            "temporal_slab_epoch_reclaimable_bytes",
            "temporal_slab_epoch_live_objects",
        ] {
            let series = query(&prom, metric).unwrap_or_else(|| panic!("no {metric} series"));
            assert!(
                series.iter().all(|s| s["metric"].get("label").is_none()),
                "{metric} must not carry the free-text label"
            );
        }
        let live = query(
            &prom,
            &format!(
                "temporal_slab_epoch_live_objects{{epoch={},era={}}}",
                m["epoch"], m["era"]
            ),
        )
        .expect("the leaked epoch's live objects");
        assert!(value(&live) > 0.0, "the leaked tree is still live");
        // The ring never ran full: two workers and one leak hold at most 3 of 16 slots.
        let refused = query(&prom, "temporal_slab_epoch_advance_refused_total")
            .expect("the refused-advances counter is exposed");
        assert_eq!(value(&refused), 0.0);
        // Without the threshold shortened, nothing is old enough yet: the expression is not
        // true of every CLOSING epoch.
        assert!(query(&prom, &leak_alert).is_none());
        running();
    });
    let ran_for = demo_started.elapsed();
    drop(demo);
    if let Err(panic) = result {
        eprintln!("{}", logs());
        std::panic::resume_unwind(panic);
    }
    assert!(
        ran_for < DEMO_DURATION,
        "the assertions were made while the demo ran ({ran_for:?})"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
