//! End to end against a real Prometheus: `tslab demo --inject-leak --listen` is scraped every
//! second by Debian's `prometheus` started on 127.0.0.1, and the test asks Prometheus's HTTP
//! query API for the epoch series and for the refcount-leak expression of the alert rules (its
//! 300 s threshold shortened to 2 s), which must return the leaked epoch with its label.
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

/// Runs an instant query; the result vector when the query succeeded and it is not empty.
fn query(prom: &str, expr: &str) -> Option<Vec<serde_json::Value>> {
    let mut url = format!("http://{prom}/api/v1/query?query=");
    for b in expr.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    let body: serde_json::Value = serde_json::from_str(&get(&url)?).ok()?;
    assert_eq!(body["status"], "success", "query {expr} failed: {body}");
    let result = body["data"]["result"].as_array()?.clone();
    (!result.is_empty()).then_some(result)
}

#[test]
fn prometheus_scrapes_the_demo_and_finds_the_leak() {
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
    let demo_log = std::fs::File::create(dir.join("demo.log")).unwrap();
    let _demo = Killed(
        common::tslab()
            .args([
                "demo",
                "--inject-leak",
                "--requests",
                "4000",
                "--linger",
                "120",
            ])
            .args(["--listen", &demo_addr])
            .stdout(demo_log.try_clone().unwrap())
            .stderr(demo_log)
            .spawn()
            .expect("start tslab demo"),
    );
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
    let result = std::panic::catch_unwind(|| {
        wait_for("prometheus ready", Duration::from_secs(60), || {
            get(&format!("http://{prom}/-/ready"))
        });
        // The target is up and the epoch series exist.
        wait_for("up == 1", Duration::from_secs(60), || {
            query(&prom, "up{job=\"tslab-demo\"} == 1")
        });
        let info = wait_for("epoch series", Duration::from_secs(60), || {
            query(&prom, "temporal_slab_epoch_info")
        });
        assert!(info.iter().all(|s| s["metric"].get("label").is_some()));
        for metric in [
            "temporal_slab_epoch_age_seconds",
            "temporal_slab_epoch_refcount",
            "temporal_slab_epoch_estimated_rss_bytes",
            "temporal_slab_epoch_reclaimable_bytes",
            "temporal_slab_epoch_live_objects",
        ] {
            let series = wait_for(metric, Duration::from_secs(30), || query(&prom, metric));
            assert!(
                series.iter().all(|s| s["metric"].get("label").is_none()),
                "{metric} must not carry the free-text label"
            );
        }
        // The alert's expression with its threshold shortened, joined to the label.
        let leak_expr = format!(
            "({}) * on (job, instance, epoch, era) group_left (label) temporal_slab_epoch_info",
            leak_alert.replace("> 300", "> 2")
        );
        let leaks = wait_for("the leaked epoch", Duration::from_secs(90), || {
            query(&prom, &leak_expr)
        });
        assert_eq!(leaks.len(), 1, "exactly one leaked epoch: {leaks:?}");
        let m = &leaks[0]["metric"];
        assert_eq!(m["state"], "CLOSING");
        assert!(
            m["label"].as_str().unwrap().starts_with("leak:"),
            "the leaked epoch's label: {m}"
        );
        assert_eq!(leaks[0]["value"][1], "1", "refcount 1 times info 1");
        // Without the threshold shortened, nothing is old enough yet: the expression is not
        // true of every CLOSING epoch.
        assert!(query(&prom, &leak_alert).is_none());
    });
    if let Err(panic) = result {
        eprintln!("{}", logs());
        std::panic::resume_unwind(panic);
    }
}
