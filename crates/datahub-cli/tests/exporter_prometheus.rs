//! The DataHub dashboard (`dashboards/datahub.json`) and alert rules (`alerts/datahub.rules.yml`)
//! against the real `promtool` and a real exporter, and end to end with a real Prometheus:
//!
//! - the rules pass `promtool check rules`, with the five alerts and their metadata;
//! - every dashboard query, its variables substituted, parses (written out as recording rules
//!   and checked by `promtool check rules`);
//! - every metric name the dashboard and the rules use is documented in `docs/metrics.md` and
//!   has a sample in a scrape of a real exporter (a block with a producer and a consumer);
//! - `promtool test rules` shows ConsumerLagHigh and ProducerDead fire on synthetic series and
//!   stay quiet below their thresholds;
//! - end to end: `datahub pub` (fed through a pipe the test holds) and `datahub sub` as real
//!   processes, the exporter, and Prometheus scraping it every 200 ms with the rules loaded
//!   (ConsumerStalled's 30 s and 1 m shortened to 3 s and 1 s in a temporary copy). The alert
//!   is not pending or firing while the consumer runs; after SIGSTOP of the consumer Prometheus
//!   reports it pending or firing for that block and consumer.
//!
//! Needs `promtool` and `prometheus` on PATH; without them the tests are skipped with a note,
//! unless `REQUIRE_PROMETHEUS=1` (CI), which makes them fail. Every wait is bounded; every child
//! is continued and killed when the test ends, pass or fail.

mod common;
mod exporter_support;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::DEADLINE;
use datahub::{Config, Consumer, Expectations, Policy, Producer};
use exporter_support::{Exporter, promtool, run_promtool, samples, try_get};
use serde_json::Value;

const DASHBOARD: &str = "dashboards/datahub.json";
const RULES: &str = "alerts/datahub.rules.yml";
const METRICS_DOC: &str = "docs/metrics.md";
const ALERTS: [&str; 5] = [
    "ConsumerStalled",
    "ProducerDead",
    "WriterTimeouts",
    "ChecksumFailures",
    "ConsumerLagHigh",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// Every query of the dashboard: (panel title, `expr`). The dashboard's rows are flat (they
/// nest no panels), which this checks.
fn targets(dash: &Value) -> Vec<(String, String)> {
    let panels = dash["panels"].as_array().expect("panels");
    panels
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

/// The query with Grafana's variables replaced: `$__rate_interval` by 5m, the dashboard's
/// `$job`, `$instance`, `$block` by their All value.
fn substitute(expr: &str) -> String {
    let out = expr.replace("$__rate_interval", "5m");
    let out = ["$job", "$instance", "$block"]
        .iter()
        .fold(out, |e, v| e.replace(v, ".*"));
    assert!(!out.contains('$'), "an unknown variable in {expr}");
    out
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

/// Words of `text` that look like our metric names.
fn used_metrics(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("datahub_"))
        .map(str::to_owned)
        .collect()
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

#[test]
fn alert_rules_have_the_five_alerts_with_metadata_and_pass_promtool() {
    let yaml = read(RULES);
    let blocks = alert_blocks(&yaml);
    let names: Vec<&str> = blocks.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ALERTS, "alerts in {RULES}");
    for (name, body) in &blocks {
        for key in ["expr:", "for:", "severity:", "summary:", "description:"] {
            assert!(body.contains(key), "alert {name} has no {key}");
        }
        assert!(
            body.contains("{{ $labels.block }}") && body.contains("$value"),
            "alert {name}: annotations name the block and the value"
        );
    }
    let Some(promtool) = promtool() else { return };
    let path = repo_root().join(RULES);
    let (ok, out) = run_promtool(&promtool, &["check", "rules", path.to_str().unwrap()], None);
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS: 5 rules found"), "{out}");
}

#[test]
fn every_dashboard_query_parses() {
    let dash = dashboard();
    let ts = targets(&dash);
    assert!(ts.len() >= 15, "only {} queries", ts.len());
    let mut rules = String::from("groups:\n  - name: datahub-dashboard-queries\n    rules:\n");
    for (i, (panel, expr)) in ts.iter().enumerate() {
        assert!(
            expr.contains("instance=~\"$instance\""),
            "panel {panel:?} does not filter on $instance: {expr}"
        );
        rules.push_str(&format!(
            "      - record: datahub_dashboard:query_{i}\n        expr: {}\n",
            yaml_str(&substitute(expr))
        ));
    }
    let Some(promtool) = promtool() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("queries.rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let (ok, out) = run_promtool(&promtool, &["check", "rules", file.to_str().unwrap()], None);
    assert!(ok, "dashboard queries do not parse:\n{out}\n{rules}");
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", ts.len())),
        "{out}"
    );
}

#[test]
fn every_metric_in_the_dashboard_and_rules_is_documented_and_in_a_real_scrape() {
    let documented = used_metrics(&read(METRICS_DOC));
    let in_dashboard = used_metrics(&read(DASHBOARD));
    let in_rules = used_metrics(&read(RULES));
    assert!(in_dashboard.len() >= 15, "{in_dashboard:?}");
    assert!(in_rules.len() >= 6, "{in_rules:?}");

    // A real exporter over a block with a producer and a consumer: every family has samples.
    let prefix = format!("dhexpprom-names-{}-", std::process::id());
    let name = format!("{prefix}b");
    let mut p = Producer::create(
        &name,
        Config::new(Policy::Sequential).slot_size(64).slot_count(4),
    )
    .unwrap();
    let mut c = Consumer::attach(&name, Expectations::new()).unwrap();
    let mut w = p.write(DEADLINE).unwrap();
    w[0] = 1;
    w.commit(1).unwrap();
    drop(c.read(DEADLINE).unwrap());
    let exp = Exporter::start(&["exporter", "--prefix", &prefix]);
    let scraped: BTreeSet<String> = samples(&exp.scrape()).into_iter().map(|s| s.name).collect();

    for (file, used) in [(DASHBOARD, &in_dashboard), (RULES, &in_rules)] {
        let undocumented: Vec<_> = used.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "{file}: not in {METRICS_DOC}: {undocumented:?}"
        );
        let missing: Vec<_> = used.difference(&scraped).collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics the exporter does not emit: {missing:?}\nscraped: {scraped:?}"
        );
    }
}

/// `promtool test rules` input; `@RULES@` becomes the rule file's path.
const ALERT_TESTS: &str = r#"rule_files:
  - "@RULES@"
evaluation_interval: 1m
tests:
  # Consumer 0:10 is 4 messages behind a 4-slot ring from the start, consumer 1:11 only 3
  # (under 90% of 4): ConsumerLagHigh is pending from 0m and fires (for: 5m) from 5m, for 0:10
  # only.
  - interval: 1m
    input_series:
      - series: 'datahub_consumer_lag_messages{job="d", instance="h:9464", block="b", consumer="0:10"}'
        values: '4x10'
      - series: 'datahub_consumer_lag_messages{job="d", instance="h:9464", block="b", consumer="1:11"}'
        values: '3x10'
      - series: 'datahub_slots{job="d", instance="h:9464", block="b"}'
        values: '4x10'
      - series: 'datahub_producer_alive{job="d", instance="h:9464", block="b"}'
        values: '1x10'
    alert_rule_test:
      - eval_time: 4m
        alertname: ConsumerLagHigh
        exp_alerts: []
      - eval_time: 6m
        alertname: ConsumerLagHigh
        exp_alerts:
          - exp_labels:
              severity: warning
              job: d
              instance: "h:9464"
              block: b
              consumer: "0:10"
            exp_annotations:
              summary: 'DataHub consumer 0:10 of block b on h:9464 is 4 messages behind'
              description: 'Consumer 0:10 (ENTRY:PID) of block b on h:9464 has been at least 90% of the ring (4 messages) behind the producer for 5 minutes. In the lossless policies the producer waits for it (see WriterTimeouts); with the latest policy it is missing messages.'
      - eval_time: 6m
        alertname: ProducerDead
        exp_alerts: []
  # The producer dies at 2m: ProducerDead fires from 3m (for: 1m).
  - interval: 1m
    input_series:
      - series: 'datahub_producer_alive{job="d", instance="h:9464", block="b"}'
        values: '1 1 0 0 0 0'
    alert_rule_test:
      - eval_time: 2m
        alertname: ProducerDead
        exp_alerts: []
      - eval_time: 4m
        alertname: ProducerDead
        exp_alerts:
          - exp_labels:
              severity: critical
              job: d
              instance: "h:9464"
              block: b
            exp_annotations:
              summary: 'DataHub block b on h:9464 has no live producer (value 0)'
              description: 'The producer process recorded in block b on h:9464 is dead (its pid is gone or belongs to another process), so nothing new will be committed. A killed producer leaves its block behind: restart it (it takes the block over) or `datahub remove b`.'
"#;

#[test]
fn alert_unit_tests_pass_promtool_test_rules() {
    let Some(promtool) = promtool() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tests.yml");
    let rules = repo_root().join(RULES);
    std::fs::write(
        &file,
        ALERT_TESTS.replace("@RULES@", rules.to_str().unwrap()),
    )
    .unwrap();
    let (ok, out) = run_promtool(&promtool, &["test", "rules", file.to_str().unwrap()], None);
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

// ------------------------------------------------------------------------------------------
// End to end

/// A port nobody listens on now (Prometheus needs its port on the command line).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("its address").port()
}

/// Every child of the end-to-end test: continued (the stopped consumer too) and killed when
/// dropped, then the block the killed `pub` left behind is removed.
struct Children {
    kids: Vec<Child>,
    block: String,
}

impl Drop for Children {
    fn drop(&mut self) {
        for k in &mut self.kids {
            // SAFETY: kill(2) has no memory-safety preconditions; the pid is our child's,
            // not yet reaped.
            unsafe { libc::kill(k.id() as i32, libc::SIGCONT) };
            let _ = k.kill();
            let _ = k.wait();
        }
        let _ = datahub::remove(&self.block);
    }
}

/// Percent-encodes a query string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `GET path` on Prometheus, its JSON (`None` if it does not answer 200 yet).
fn prom_get(prom: std::net::SocketAddr, path: &str) -> Option<Value> {
    let (status, _, body) = try_get(prom, path, None)?;
    (status == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

/// `f`'s first `Some`, polled every 100 ms for at most [`DEADLINE`] (then the test fails).
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let mut got = None;
    common::wait_until(what, || {
        got = f();
        if got.is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
        got.is_some()
    });
    got.expect("wait_until returned")
}

/// The ConsumerStalled alerts Prometheus reports for `block`: (consumer, state).
fn stalled_alerts(prom: std::net::SocketAddr, block: &str) -> Option<Vec<(String, String)>> {
    let v = prom_get(prom, "/api/v1/alerts")?;
    assert_eq!(v["status"], "success", "{v}");
    Some(
        v["data"]["alerts"]
            .as_array()?
            .iter()
            .filter(|a| {
                a["labels"]["alertname"] == "ConsumerStalled" && a["labels"]["block"] == block
            })
            .map(|a| {
                (
                    a["labels"]["consumer"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    a["state"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
    )
}

/// The rules file with ConsumerStalled's threshold (30 s) and `for:` (1m) shortened.
fn shortened_rules() -> String {
    let yaml = read(RULES);
    let start = yaml.find("- alert: ConsumerStalled").unwrap();
    let end = start + yaml[start..].find("- alert: ProducerDead").unwrap();
    let block = &yaml[start..end];
    assert!(
        block.contains("datahub_consumer_heartbeat_age_seconds > 30") && block.contains("for: 1m"),
        "ConsumerStalled's threshold or for: changed; update this test:\n{block}"
    );
    let short = block
        .replace(
            "datahub_consumer_heartbeat_age_seconds > 30",
            "datahub_consumer_heartbeat_age_seconds > 3",
        )
        .replace("for: 1m", "for: 1s");
    format!("{}{short}{}", &yaml[..start], &yaml[end..])
}

#[test]
fn prometheus_sees_consumer_stalled_after_the_consumer_is_stopped() {
    if exporter_support::tool("prometheus").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("dhexpprom-e2e-{}-", std::process::id());
    let block = format!("{prefix}stream");
    let mut kids = Children {
        kids: Vec::new(),
        block: block.clone(),
    };
    let bin = env!("CARGO_BIN_EXE_datahub");
    let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();

    // The producer: `pub` of its standard input, a pipe this test writes to.
    let mut producer = Command::new(bin)
        .args([
            "pub",
            &block,
            "-",
            "--wait",
            "300s",
            "--slots",
            "8",
            "--slot-size",
            "512",
        ])
        .stdin(Stdio::piped())
        .stdout(log("pub.out"))
        .stderr(log("pub.err"))
        .spawn()
        .expect("spawn datahub pub");
    let mut feed = producer.stdin.take().unwrap();
    kids.kids.push(producer);
    common::wait_for_block(&block);
    let out = dir.path().join("out");
    let consumer = Command::new(bin)
        .args([
            "sub",
            &block,
            "--out",
            out.to_str().unwrap(),
            "--wait",
            "60s",
        ])
        .stdin(Stdio::null())
        .stdout(log("sub.out"))
        .stderr(log("sub.err"))
        .spawn()
        .expect("spawn datahub sub");
    let consumer_pid = consumer.id();
    kids.kids.push(consumer);
    // The consumer's label, from the block header: ENTRY:PID.
    let label = wait_for("the consumer to attach", || {
        let info = datahub::Inspector::open(&block).ok()?.info();
        let c = info.consumers.iter().find(|c| c.pid == consumer_pid)?;
        Some(format!("{}:{}", c.entry?, c.pid))
    });
    feed.write_all(&[7u8; 1000]).unwrap();

    let exporter = Exporter::start(&["exporter", "--prefix", &prefix]);
    let rules = dir.path().join("datahub.rules.yml");
    std::fs::write(&rules, shortened_rules()).unwrap();
    let prom: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 200ms\n  evaluation_interval: 200ms\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: datahub\n    static_configs:\n      - targets: ['{}']\n",
            yaml_str(rules.to_str().unwrap()),
            exporter.addr
        ),
    )
    .unwrap();
    kids.kids.push(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={prom}"))
            .stdout(log("prometheus.log"))
            .stderr(log("prometheus.err"))
            .spawn()
            .expect("start prometheus"),
    );
    let logs = || {
        let tail = |f: &str| {
            let t = std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
            let lines: Vec<&str> = t.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        format!(
            "--- pub.err\n{}\n--- sub.err\n{}\n--- exporter\n{}\n--- prometheus.err\n{}",
            tail("pub.err"),
            tail("sub.err"),
            exporter.stderr(),
            tail("prometheus.err")
        )
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for("prometheus ready", || {
            (try_get(prom, "/-/ready", None)?.0 == 200).then_some(())
        });
        // Prometheus has scraped the consumer's heartbeat age.
        let query = format!(
            "/api/v1/query?query={}",
            encode(&format!(
                "datahub_consumer_heartbeat_age_seconds{{block=\"{block}\",consumer=\"{label}\"}}"
            ))
        );
        wait_for("the consumer's heartbeat age in Prometheus", || {
            let v = prom_get(prom, &query)?;
            (!v["data"]["result"].as_array()?.is_empty()).then_some(())
        });
        // While the consumer runs, many evaluations (200 ms each) pass without the alert.
        let quiet_until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < quiet_until {
            let alerts = wait_for("the alerts API", || stalled_alerts(prom, &block));
            assert!(
                alerts.is_empty(),
                "ConsumerStalled before the SIGSTOP: {alerts:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }

        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our live child's.
        assert_eq!(unsafe { libc::kill(consumer_pid as i32, libc::SIGSTOP) }, 0);
        // Messages keep coming; the stopped consumer does not read them.
        feed.write_all(&[9u8; 1000]).unwrap();
        let alerts = wait_for("ConsumerStalled pending or firing", || {
            let a = stalled_alerts(prom, &block)?;
            (!a.is_empty()).then_some(a)
        });
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].0, label, "the stopped consumer");
        assert!(
            alerts[0].1 == "pending" || alerts[0].1 == "firing",
            "{alerts:?}"
        );
        eprintln!(
            "ConsumerStalled for {block} consumer {label}: {}",
            alerts[0].1
        );
    }));
    drop(feed);
    drop(kids);
    if let Err(panic) = result {
        eprintln!("{}", logs());
        std::panic::resume_unwind(panic);
    }
}
