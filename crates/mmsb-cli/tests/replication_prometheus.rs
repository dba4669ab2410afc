//! End to end against a real Prometheus (Debian's `prometheus`, on 127.0.0.1, a temporary
//! config and store, scraping every 200 ms) and a real `nats-server -js`: Prometheus scrapes
//! `mmsb follow --listen 127.0.0.1:0` while `mmsb trace --ship` runs an editing trace into the
//! stream the follower reads, and
//!
//! - at the end Prometheus reports the follower caught up: `mmsb_replication_applied_lsn` and
//!   `mmsb_replication_leader_lsn` equal to the leader's last LSN (`mmsb stats`), and
//!   `mmsb_replication_lag_frames` 0;
//! - in every sample Prometheus stored, the follower's applied LSN never went down and
//!   `lag_frames == leader_lsn - applied_lsn` (the three gauges come from one snapshot);
//! - with the real trace (automerge-paper, seconds of shipping) Prometheus stored at least one
//!   sample with the applied LSN strictly between 0 and the final LSN: it watched the follower
//!   climb, not only its end state. The lag itself (`lag_frames > 0`) is visible only now and
//!   then (the follower is rarely a whole message behind when its figures are published), so
//!   it is not asserted. The embedded trace (used when the shared data is missing and not
//!   required) ships in well under a second, so with it only the end state is asserted;
//! - the follower, stopped with SIGTERM, exits 0 and its replica has the leader's state
//!   (`mmsb diff`).
//!
//! Needs `prometheus` (skipped with a note without it, unless `REQUIRE_PROMETHEUS=1`) and a
//! nats-server (see `support`). Every wait is bounded; the follower and Prometheus are killed
//! when the test ends, pass or fail.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Nats;

/// The job name in the Prometheus config, and so the `job` label of the follower's series.
const JOB: &str = "mmsb-follower";
/// The stream the trace ships to and the follower reads.
const STREAM: &str = "prom_e2e";
/// Bound of each wait for Prometheus or the follower.
const WAIT: Duration = Duration::from_secs(60);
/// Bound of the trace run (a debug build ships automerge-paper in about 20 s).
const TRACE_LIMIT: Duration = Duration::from_secs(300);

/// Kills the child when dropped.
struct Killed(Option<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn prometheus_available() -> bool {
    let found = Command::new("prometheus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found || std::env::var("REQUIRE_PROMETHEUS").as_deref() != Ok("1"),
        "prometheus not found and REQUIRE_PROMETHEUS=1: apt-get install prometheus"
    );
    found
}

/// `GET path` (HTTP/1.0: no chunked body), the status and body; `None` when nothing answers.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
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

/// Evaluates `expr` on Prometheus at Unix time `at`: the result array (`None` while Prometheus
/// does not answer 200). A query Prometheus rejects fails the test.
fn query_at(prom: SocketAddr, expr: &str, at: f64) -> Option<Vec<Value>> {
    let path = format!("/api/v1/query?query={}&time={at:.3}", encode(expr));
    let (status, body) = http_get(prom, &path)?;
    let v: Value = serde_json::from_str(&body).ok()?;
    assert!(
        status == 200 && v["status"] == "success",
        "query {expr}: HTTP {status}: {body}"
    );
    v["data"]["result"].as_array().cloned()
}

/// The value of the one series an instant query returned (`None` if it returned none).
fn one_value(result: &[Value]) -> Option<f64> {
    assert!(result.len() <= 1, "more than one series: {result:?}");
    result.first().map(|s| number(&s["value"]))
}

/// A `[time, "value"]` pair's value.
fn number(pair: &Value) -> f64 {
    pair[1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("not a sample: {pair}"))
}

/// The raw samples of the one series of a range-vector selector: (time, value).
fn samples(result: &[Value]) -> Vec<(f64, f64)> {
    assert_eq!(result.len(), 1, "one series expected: {result:?}");
    result[0]["values"]
        .as_array()
        .expect("a range vector")
        .iter()
        .map(|p| (p[0].as_f64().expect("a sample time"), number(p)))
        .collect()
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `limit`; then fails with
/// `what` and `last()` (what was seen last).
fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Option<T>,
    last: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}; last seen: {}",
            last()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The follower's series selector for `metric`.
fn follower(metric: &str) -> String {
    format!("{metric}{{job=\"{JOB}\",role=\"follower\"}}")
}

#[test]
fn prometheus_scraping_a_follower_sees_its_applied_lsn_climb_to_the_leaders_and_its_lag_reach_zero()
{
    if !prometheus_available() {
        eprintln!("skipped: prometheus not on PATH");
        return;
    }
    let Some(nats) = Nats::start() else { return };
    let trace = support::trace_path("automerge-paper.json.gz");
    let dir = tempfile::tempdir().unwrap();
    let leader = dir.path().join("leader");
    let replica = dir.path().join("replica");

    // The follower first: it waits for the stream, and serves 503 until its replica is open.
    let mut child = support::spawn(&[
        "follow",
        "--nats",
        &nats.url,
        "--stream",
        STREAM,
        "--dir",
        replica.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    let stderr = child.stderr.take().unwrap();
    let mut follow = Killed(Some(child));
    let follow_err = Arc::new(Mutex::new(String::new()));
    let (addr_tx, addr_rx) = mpsc::channel();
    {
        let follow_err = Arc::clone(&follow_err);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(a) = line
                    .strip_prefix("metrics on http://")
                    .and_then(|r| r.strip_suffix("/metrics"))
                {
                    let _ = addr_tx.send(a.to_owned());
                }
                let mut e = follow_err.lock().unwrap();
                e.push_str(&line);
                e.push('\n');
            }
        });
    }
    let metrics: SocketAddr = addr_rx
        .recv_timeout(WAIT)
        .unwrap_or_else(|_| {
            panic!(
                "no `metrics on` line from mmsb follow; stderr: {}",
                follow_err.lock().unwrap()
            )
        })
        .parse()
        .expect("the follower's metrics address");

    let prom: SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 200ms\n  scrape_timeout: 200ms\n  evaluation_interval: 200ms\n\
             scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: ['{metrics}']\n"
        ),
    )
    .unwrap();
    let prom_log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prometheus = Killed(Some(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={prom}"))
            .stdout(prom_log.try_clone().unwrap())
            .stderr(prom_log)
            .spawn()
            .expect("start prometheus"),
    ));
    let logs = |dir: &Path| {
        let prom = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = prom.lines().collect();
        format!(
            "--- mmsb follow stderr\n{}\n--- prometheus.log (tail)\n{}",
            follow_err.lock().unwrap(),
            lines[lines.len().saturating_sub(15)..].join("\n")
        )
    };

    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let started = unix_now();
        wait_for(
            "prometheus ready",
            WAIT,
            || http_get(prom, "/-/ready").filter(|(s, _)| *s == 200),
            String::new,
        );
        // Prometheus scrapes the follower (up is 0 while it answers 503) before anything is
        // shipped, so the whole catch-up is in its store.
        wait_for(
            "prometheus to scrape the follower",
            WAIT,
            || {
                query_at(prom, &format!("up{{job=\"{JOB}\"}}"), unix_now())
                    .filter(|r| !r.is_empty())
            },
            String::new,
        );

        let mut args = vec!["trace"];
        if let Some(t) = &trace {
            args.push(t.to_str().unwrap());
        }
        args.extend([
            "--log",
            leader.to_str().unwrap(),
            "--ship",
            &nats.url,
            "--stream",
            STREAM,
            "--no-verify",
        ]);
        let traced = Instant::now();
        let o = support::run(&args, TRACE_LIMIT);
        assert!(
            o.status.success(),
            "mmsb trace --ship: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        eprintln!("mmsb trace --ship took {:?}", traced.elapsed());
        let last = support::last_lsn(&leader);
        assert!(last > 0, "the trace wrote nothing");

        // Prometheus's latest scrape shows the follower caught up. The three gauges are read
        // at one evaluation time, so from the same scrape.
        let seen = Mutex::new(String::from("nothing"));
        let at = wait_for(
            "prometheus to report the follower caught up",
            WAIT,
            || {
                let t = unix_now();
                let get = |m: &str| one_value(&query_at(prom, &follower(m), t)?);
                let (applied, leader_lsn, lag) = (
                    get("mmsb_replication_applied_lsn"),
                    get("mmsb_replication_leader_lsn"),
                    get("mmsb_replication_lag_frames"),
                );
                *seen.lock().unwrap() = format!(
                    "applied_lsn {applied:?}, leader_lsn {leader_lsn:?}, lag_frames {lag:?} (want {last}, {last}, 0)"
                );
                (applied == Some(last as f64)
                    && leader_lsn == Some(last as f64)
                    && lag == Some(0.0))
                .then_some(t)
            },
            || seen.lock().unwrap().clone(),
        );
        eprintln!("prometheus: caught up at LSN {last}");

        // Everything Prometheus stored since before the trace.
        let window = format!("[{}s]", (at - started).ceil() as u64 + 5);
        let history = |m: &str| {
            samples(
                &query_at(prom, &format!("{}{window}", follower(m)), at)
                    .expect("prometheus answers"),
            )
        };
        let applied = history("mmsb_replication_applied_lsn");
        let leader_lsn = history("mmsb_replication_leader_lsn");
        let lag = history("mmsb_replication_lag_frames");
        assert!(
            applied.len() == leader_lsn.len() && applied.len() == lag.len(),
            "the gauges have different scrapes: {} {} {}",
            applied.len(),
            leader_lsn.len(),
            lag.len()
        );
        for i in 0..applied.len() {
            let ((t, a), (tl, l), (tg, g)) = (applied[i], leader_lsn[i], lag[i]);
            assert!(t == tl && t == tg, "scrape {i}: times {t} {tl} {tg}");
            assert_eq!(
                g,
                l - a,
                "scrape {i} at {t}: lag_frames is not leader_lsn {l} - applied_lsn {a}"
            );
            if i > 0 {
                assert!(
                    a >= applied[i - 1].1,
                    "applied_lsn went down at {t}: {} -> {a}",
                    applied[i - 1].1
                );
            }
        }
        assert_eq!(applied.last().unwrap().1, last as f64, "{applied:?}");
        let partway: Vec<f64> = applied
            .iter()
            .map(|&(_, a)| a)
            .filter(|&a| a > 0.0 && a < last as f64)
            .collect();
        let lagging = lag.iter().filter(|&&(_, g)| g > 0.0).count();
        eprintln!(
            "prometheus stored {} scrapes of the follower: {} with 0 < applied_lsn < {last}, {lagging} with lag_frames > 0",
            applied.len(),
            partway.len()
        );
        if trace.is_some() {
            assert!(
                !partway.is_empty(),
                "prometheus never saw the follower partway (0 < applied_lsn < {last}): {applied:?}"
            );
        }
    }));
    if let Err(panic) = result {
        eprintln!("{}", logs(dir.path()));
        std::panic::resume_unwind(panic);
    }

    // The follower stops cleanly on SIGTERM, with the leader's state.
    let child = follow.0.take().unwrap();
    let o = support::terminate(child, WAIT);
    assert!(
        o.status.success(),
        "mmsb follow after SIGTERM: {:?}; stderr: {}",
        o.status,
        follow_err.lock().unwrap()
    );
    assert!(
        support::same_state(&leader, &replica),
        "the replica differs from the leader"
    );
}
