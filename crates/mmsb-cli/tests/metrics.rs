//! MMSB's Prometheus side against the real `promtool`:
//!
//! - a scrape of `mmsb trace --listen 127.0.0.1:0 --linger 5s` (the bound address read from
//!   its stderr line) shows the final numbers of the run, and its text format passes
//!   `promtool check metrics`;
//! - `alerts/mmsb.rules.yml` passes `promtool check rules` with the four alerts and their
//!   metadata, and `promtool test rules` (`tests/data/mmsb.rules.test.yml`) shows each fire
//!   above its threshold and stay quiet below;
//! - every query of `dashboards/mmsb.json`, its variables substituted, parses (written out as
//!   recording rules and checked by `promtool check rules`);
//! - every metric name the dashboard and the rules use is documented in `docs/metrics.md`, and
//!   every bus metric among them has a sample in a real scrape.
//!
//! Needs `promtool` on PATH; without it the promtool steps are skipped with a note, unless
//! `REQUIRE_PROMETHEUS=1` (CI, `.ci/run`), which makes a missing one a failure.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const DASHBOARD: &str = "dashboards/mmsb.json";
const RULES: &str = "alerts/mmsb.rules.yml";
const RULE_TESTS: &str = "crates/mmsb-cli/tests/data/mmsb.rules.test.yml";
const METRICS_DOC: &str = "docs/metrics.md";
const ALERTS: [&str; 4] = [
    "ReplicaLagHigh",
    "LogWriteErrors",
    "RecoveryTruncated",
    "PropagationSlow",
];
/// Generous bound for a process to start, a scrape, or promtool, on a noisy machine.
const DEADLINE: Duration = Duration::from_secs(60);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `promtool` when it runs from PATH; `None` with a note when it does not, unless
/// `REQUIRE_PROMETHEUS=1` (CI), which makes a missing one a failure.
fn promtool() -> Option<PathBuf> {
    let runs = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let required = std::env::var("REQUIRE_PROMETHEUS").is_ok_and(|v| v == "1")
        || std::env::var_os("CI").is_some();
    match (runs, required) {
        (true, _) => Some(PathBuf::from("promtool")),
        (false, true) => panic!("promtool not found on CI: apt-get install prometheus"),
        (false, false) => {
            eprintln!(
                "note: promtool not on PATH; skipping (REQUIRE_PROMETHEUS=1 makes this fail)"
            );
            None
        }
    }
}

/// Waits for `child` for at most [`DEADLINE`]; kills it after that (and fails).
fn finish(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let until = Instant::now() + DEADLINE;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `promtool ARGS` (in `dir`, if given) with `stdin`: (success, its output).
fn run_promtool(
    promtool: &Path,
    args: &[&str],
    dir: Option<&Path>,
    stdin: Option<&str>,
) -> (bool, String) {
    let tmp = tempfile::tempdir().unwrap();
    let (input, output) = (tmp.path().join("stdin"), tmp.path().join("output"));
    std::fs::write(&input, stdin.unwrap_or_default()).unwrap();
    let out = std::fs::File::create(&output).unwrap();
    let mut cmd = Command::new(promtool);
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let mut child = cmd
        .args(args)
        .stdin(std::fs::File::open(&input).unwrap())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start promtool");
    let status = finish(&mut child, "promtool");
    let text = std::fs::read_to_string(&output).unwrap_or_default();
    (
        status.success(),
        format!("$ promtool {}\n{text}", args.join(" ")),
    )
}

/// `GET path` with `Connection: close` and `accept` as the Accept header: (status, content
/// type, body); `None` when the exchange fails.
fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, DEADLINE).ok()?;
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let ct = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    Some((status, ct, body.to_owned()))
}

/// The value of the sample line `series` (name and labels exactly as written).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Metric names of the sample lines of an exposition.
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

/// A finished `mmsb trace --listen 127.0.0.1:0 --linger 5s` still lingering: its final
/// scrapes in both formats. The child is killed if the test fails on the way.
struct TraceScrape {
    text: String,
    text_type: String,
    openmetrics: String,
    stats_json: Value,
}

fn scrape_trace_run() -> TraceScrape {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_mmsb"))
        .args(["trace", "--listen", "127.0.0.1:0", "--linger", "5s"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("spawn mmsb trace");
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            if let Ok(None) = self.0.try_wait() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
    let guard = Kill(&mut child);
    let until = Instant::now() + DEADLINE;
    let log = || std::fs::read_to_string(&err).unwrap_or_default();
    // The whole stderr line only (a half-written port would still parse).
    let addr: SocketAddr = loop {
        let l = log();
        if let Some(rest) = l.split("metrics on http://").nth(1)
            && let Some((line, _)) = rest.split_once('\n')
        {
            let a = line.strip_suffix("/metrics").expect("…/metrics");
            break a.parse().unwrap_or_else(|_| panic!("address in {l:?}"));
        }
        assert!(Instant::now() < until, "no address line: {l}");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_ne!(addr.port(), 0, "the bound port is printed");
    // The run is over once its report is on stdout; the endpoint lingers with the final stats.
    while !std::fs::read_to_string(&out)
        .unwrap_or_default()
        .contains("endContent")
    {
        assert!(
            Instant::now() < until,
            "no report within {DEADLINE:?}: {}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, text_type, text) = get(addr, "/metrics", None).expect("scrape while lingering");
    assert_eq!(status, 200, "{text}");
    let (status, _, openmetrics) = get(
        addr,
        "/metrics",
        Some("application/openmetrics-text; version=1.0.0"),
    )
    .expect("OpenMetrics scrape");
    assert_eq!(status, 200, "{openmetrics}");
    let (status, _, json) = get(addr, "/stats.json", None).expect("/stats.json");
    assert_eq!(status, 200, "{json}");
    let status = finish(guard.0, "mmsb trace --linger 5s");
    assert!(status.success(), "exit {status}: {}", log());
    TraceScrape {
        text,
        text_type,
        openmetrics,
        stats_json: serde_json::from_str(&json).unwrap(),
    }
}

#[test]
fn scrape_of_trace_listen_shows_the_final_numbers_and_passes_promtool_check_metrics() {
    let s = scrape_trace_run();
    assert!(
        s.text_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        s.text_type
    );
    let stats = &s.stats_json["stats"];
    // Final: the stats the bus published when it stopped, the same in both answers.
    let commits = stats["commits"].as_u64().unwrap();
    assert!(commits > 0, "{stats}");
    assert_eq!(sample(&s.text, "mmsb_commits_total"), Some(commits as f64));
    let last = sample(&s.text, "mmsb_last_lsn").expect("mmsb_last_lsn");
    assert!(last > 0.0);
    assert_eq!(
        sample(&s.text, "mmsb_durable_lsn"),
        Some(last),
        "synced at stop"
    );
    let user = sample(&s.text, r#"mmsb_deltas_total{source="user"}"#).unwrap();
    let prop = sample(&s.text, r#"mmsb_deltas_total{source="propagation"}"#).unwrap();
    assert!(prop > 0.0, "the trace has derived pages");
    assert_eq!(user + prop, stats["deltas"].as_f64().unwrap());
    assert!(sample(&s.text, "mmsb_propagation_seconds_count").unwrap() > 0.0);
    assert!(s.openmetrics.ends_with("# EOF\n"), "{}", s.openmetrics);
    assert!(s.stats_json["replication"].is_null());

    assert!(
        s.openmetrics
            .contains("# TYPE mmsb_delta_apply_seconds summary\n"),
        "{}",
        s.openmetrics
    );

    // The text format only: promtool reads OpenMetrics counter families (`# HELP x` with
    // samples `x_total`) as counters without help (see prom_text::openmetrics_to_text).
    let Some(promtool) = promtool() else { return };
    let (ok, out) = run_promtool(&promtool, &["check", "metrics"], None, Some(&s.text));
    assert!(ok, "{out}\n{}", s.text);
}

/// `(alert name, the rest of its rule's text)` for every `- alert:` entry, in order.
fn alert_blocks(yaml: &str) -> Vec<(String, String)> {
    yaml.split("- alert:")
        .skip(1)
        .map(|rule| {
            let (name, rest) = rule.split_once('\n').unwrap_or((rule, ""));
            (name.trim().to_owned(), rest.to_owned())
        })
        .collect()
}

#[test]
fn alert_rules_have_the_four_alerts_with_metadata_and_pass_promtool() {
    let yaml = read(RULES);
    let blocks = alert_blocks(&yaml);
    let names: Vec<&str> = blocks.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ALERTS, "alerts in {RULES}");
    for (name, body) in &blocks {
        for key in ["expr:", "severity:", "summary:", "description:"] {
            assert!(body.contains(key), "alert {name} has no {key}");
        }
        assert!(
            body.contains("{{ $labels.instance }}") && body.contains("$value"),
            "alert {name}: annotations name the instance and the value"
        );
    }
    for (name, threshold) in [
        ("ReplicaLagHigh", "mmsb_replication_lag_seconds > 5"),
        (
            "PropagationSlow",
            "mmsb_propagation_seconds{quantile=\"0.99\"} > 0.1",
        ),
        ("LogWriteErrors", "increase(mmsb_log_write_errors_total"),
        ("RecoveryTruncated", "mmsb_recovery_truncated_bytes > 0"),
    ] {
        let body = &blocks.iter().find(|b| b.0 == name).unwrap().1;
        assert!(body.contains(threshold), "{name}: {threshold} in\n{body}");
    }
    let Some(promtool) = promtool() else { return };
    let path = repo_root().join(RULES);
    let (ok, out) = run_promtool(
        &promtool,
        &["check", "rules", path.to_str().unwrap()],
        None,
        None,
    );
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS: 4 rules found"), "{out}");
}

#[test]
fn each_alert_fires_above_its_threshold_in_promtool_test_rules() {
    let tests = read(RULE_TESTS);
    for a in ALERTS {
        assert!(
            tests.contains(&format!(
                "alertname: {a}\n        exp_alerts:\n          - exp_labels"
            )),
            "{RULE_TESTS} has no firing case for {a}"
        );
    }
    let Some(promtool) = promtool() else { return };
    let file = repo_root().join(RULE_TESTS);
    // promtool reads `rule_files` relative to the test file.
    let (ok, out) = run_promtool(
        &promtool,
        &["test", "rules", file.file_name().unwrap().to_str().unwrap()],
        file.parent(),
        None,
    );
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// Every query of the dashboard: (panel title, `expr`); rows nest no panels.
fn targets(dash: &Value) -> Vec<(String, String)> {
    dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .inspect(|p| {
            assert!(
                p.get("panels")
                    .is_none_or(|n| n.as_array().is_some_and(Vec::is_empty)),
                "a row with nested panels: {p}"
            )
        })
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("?").to_owned();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| (title.clone(), t["expr"].as_str().expect("expr").to_owned()))
        })
        .collect()
}

/// The query with Grafana's variables replaced: `$__rate_interval` by 5m, `$job` and
/// `$instance` by their All value.
fn substitute(expr: &str) -> String {
    let out = expr
        .replace("$__rate_interval", "5m")
        .replace("$job", ".*")
        .replace("$instance", ".*");
    assert!(!out.contains('$'), "an unknown variable in {expr}");
    out
}

#[test]
fn every_dashboard_query_filters_on_instance_and_parses() {
    let ts = targets(&dashboard());
    assert!(ts.len() >= 13, "only {} queries", ts.len());
    let mut rules = String::from("groups:\n  - name: mmsb-dashboard-queries\n    rules:\n");
    for (i, (panel, expr)) in ts.iter().enumerate() {
        assert!(
            expr.contains("instance=~\"$instance\""),
            "panel {panel:?} does not filter on $instance: {expr}"
        );
        rules.push_str(&format!(
            "      - record: mmsb_dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&substitute(expr)).unwrap()
        ));
    }
    let Some(promtool) = promtool() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("queries.rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let (ok, out) = run_promtool(
        &promtool,
        &["check", "rules", file.to_str().unwrap()],
        None,
        None,
    );
    assert!(ok, "dashboard queries do not parse:\n{out}\n{rules}");
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", ts.len())),
        "{out}"
    );
}

/// Words of `text` that look like MMSB metric names (summary suffixes folded into the family).
fn used_metrics(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("mmsb_") && !w.starts_with("mmsb_dashboard"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_metric_in_the_dashboard_and_rules_is_documented_and_bus_metrics_are_scraped() {
    let documented = used_metrics(&read(METRICS_DOC));
    let in_dashboard = used_metrics(&read(DASHBOARD));
    let in_rules = used_metrics(&read(RULES));
    assert!(in_dashboard.len() >= 12, "{in_dashboard:?}");
    let scraped = sample_names(&scrape_trace_run().text);
    for (file, used) in [(DASHBOARD, &in_dashboard), (RULES, &in_rules)] {
        let undocumented: Vec<_> = used.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "{file}: not in {METRICS_DOC}: {undocumented:?}"
        );
        // A trace run has no replication; every other metric has samples.
        let missing: Vec<_> = used
            .iter()
            .filter(|m| !m.starts_with("mmsb_replication_") && !scraped.contains(*m))
            .collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics a trace run does not emit: {missing:?}\nscraped: {scraped:?}"
        );
    }
}

#[test]
fn listen_on_a_busy_address_is_bad_input_before_the_run_and_linger_needs_listen() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_mmsb"))
        .args(["trace", "--listen", &addr, "--json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(&addr), "names the address: {err}");
    assert!(out.stdout.is_empty(), "no run, no report");
    let out = Command::new(env!("CARGO_BIN_EXE_mmsb"))
        .args(["trace", "--linger", "1s"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
