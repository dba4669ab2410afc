//! Live metrics of a bus (feature `metrics`): `Mmsb::serve_metrics` scraped over a plain
//! `TcpStream` while the bus writes, after it stops; the published handle; and the figures
//! `Stats` gained for metrics (propagation bytes, recovery truncation, durable LSN).
#![cfg(feature = "metrics")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use mmsb::{Config, EdgeKind, Mmsb, passthrough};

/// Bound on every wait (a noisy machine); never a claim about speed.
const DEADLINE: Duration = Duration::from_secs(30);

/// `GET path` over a fresh connection: (status, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, DEADLINE).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// The value of the sample line `series` (exactly as written) in a scrape of `/metrics`.
fn scrape(addr: SocketAddr, series: &str) -> f64 {
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{body}"))
}

#[test]
fn scraped_counters_increase_while_the_bus_writes_without_forced_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let mut bus = Mmsb::start(Config::new(dir.path().join("bus"))).unwrap();
    let page = bus.create_page(64).unwrap();
    let ep = bus.serve_metrics("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = ep.local_addr();
    let first = scrape(addr, "mmsb_commits_total");
    assert_eq!(first, 1.0, "published at serve_metrics: the page creation");
    assert_eq!(scrape(addr, r#"mmsb_deltas_total{source="user"}"#), 0.0);
    // Commits only (no sync, checkpoint or publish_metrics): the commit-time publish.
    let until = Instant::now() + DEADLINE;
    let mut i = 0u8;
    loop {
        i = i.wrapping_add(1);
        bus.write_range(page, 0, &[i.max(1)]).unwrap();
        let seen = scrape(addr, "mmsb_commits_total");
        assert!(
            seen <= bus.stats().commits as f64,
            "a scrape is never ahead of the bus"
        );
        if seen > first {
            break;
        }
        assert!(Instant::now() < until, "no new commit seen in {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(scrape(addr, r#"mmsb_deltas_total{source="user"}"#) >= 1.0);
    assert!(scrape(addr, "mmsb_log_frames_total") >= 2.0);
    let (status, json) = get(addr, "/stats.json");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["stats"]["commits"].as_u64().unwrap() >= 2, "{v}");
    assert_eq!(get(addr, "/nope").0, 404);
    bus.stop().unwrap();
}

#[test]
fn after_stop_the_endpoint_serves_the_final_stats() {
    let dir = tempfile::tempdir().unwrap();
    let mut bus = Mmsb::start(Config::new(dir.path().join("bus"))).unwrap();
    let ep = bus.serve_metrics("127.0.0.1:0".parse().unwrap()).unwrap();
    let page = bus.create_page(64).unwrap();
    for i in 1..=5u8 {
        bus.write_range(page, usize::from(i), &[i]).unwrap();
    }
    let commits = bus.stats().commits;
    assert_eq!(commits, 6);
    bus.stop().unwrap();
    let addr = ep.local_addr();
    assert_eq!(scrape(addr, "mmsb_commits_total"), commits as f64);
    assert_eq!(scrape(addr, r#"mmsb_deltas_total{source="user"}"#), 5.0);
    let last = scrape(addr, "mmsb_last_lsn");
    assert_eq!(last, 6.0);
    assert_eq!(scrape(addr, "mmsb_durable_lsn"), last, "stop syncs first");
}

#[test]
fn handle_sees_every_commit_after_sync() {
    let dir = tempfile::tempdir().unwrap();
    let mut bus = Mmsb::start(Config::new(dir.path().join("bus"))).unwrap();
    let handle = bus.metrics_handle();
    assert_eq!(handle.stats().map(|s| s.commits), Some(0));
    let page = bus.create_page(64).unwrap();
    for i in 1..=3u8 {
        bus.write_range(page, 0, &[i]).unwrap();
    }
    bus.sync().unwrap();
    let published = handle.published().expect("published");
    assert_eq!(published.stats, bus.stats());
    assert_eq!(published.stats.commits, 4);
    assert_eq!(published.stats.durable_lsn, published.stats.last_lsn);
    bus.stop().unwrap();
}

#[test]
fn delta_bytes_are_split_by_source() {
    let dir = tempfile::tempdir().unwrap();
    let mut bus = Mmsb::start(Config::new(dir.path().join("bus"))).unwrap();
    let a = bus.create_page(64).unwrap();
    let b = bus.create_page(64).unwrap();
    bus.add_dependency(a, b, EdgeKind::Data).unwrap();
    bus.register_recompute(b, passthrough()).unwrap();
    bus.write_range(a, 10, b"hello").unwrap();
    let s = bus.stats();
    assert_eq!((s.deltas, s.propagation_deltas), (2, 1));
    assert_eq!((s.delta_bytes, s.propagation_delta_bytes), (10, 5));
    let text = mmsb::metrics::render(&s, None, false);
    assert!(
        text.contains("mmsb_delta_bytes_total{source=\"user\"} 5\n"),
        "{text}"
    );
    assert!(
        text.contains("mmsb_delta_bytes_total{source=\"propagation\"} 5\n"),
        "{text}"
    );
    bus.stop().unwrap();
}

#[test]
fn an_uncommitted_tail_dropped_at_start_is_in_the_stats() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("bus");
    {
        let mut bus = Mmsb::start(Config::new(&log)).unwrap();
        let page = bus.create_page(64).unwrap();
        bus.begin_batch().unwrap();
        bus.write_range(page, 0, b"lost").unwrap();
        bus.write_range(page, 8, b"too").unwrap();
        bus.flush().unwrap();
        // Dropped with the batch open: two complete frames without a commit on disk.
    }
    let (bus, report) = Mmsb::start_reporting(Config::new(&log)).unwrap();
    let t = report.log.truncated.as_ref().expect("a truncated tail");
    let s = bus.stats();
    assert_eq!(s.recovery_truncated_frames, t.frames_dropped);
    assert_eq!(s.recovery_truncated_bytes, t.bytes_dropped);
    assert_eq!(s.recovery_truncated_frames, 2);
    assert!(s.recovery_truncated_bytes > 0);
    let clean = Mmsb::start(Config::new(dir.path().join("clean"))).unwrap();
    assert_eq!(
        (
            clean.stats().recovery_truncated_frames,
            clean.stats().recovery_truncated_bytes
        ),
        (0, 0)
    );
    drop(bus);
}

#[test]
fn a_follower_splits_deltas_and_bytes_by_source_like_its_leader_and_publishes_its_commits() {
    use mmsb::Lsn;
    use mmsb::tlog::LogTail;
    let ld = tempfile::tempdir().unwrap();
    let rd = tempfile::tempdir().unwrap();
    let mut leader = Mmsb::start(Config::new(ld.path())).unwrap();
    let a = leader.create_page(64).unwrap();
    let b = leader.create_page(64).unwrap();
    leader.add_dependency(a, b, EdgeKind::Data).unwrap();
    leader.register_recompute(b, passthrough()).unwrap();
    leader.write_range(a, 3, b"abc").unwrap();
    leader.write_range(a, 20, b"defgh").unwrap();
    leader.flush().unwrap();
    let mut follower = Mmsb::start_replica(Config::new(rd.path())).unwrap();
    let handle = follower.metrics_handle();
    let mut tail = LogTail::open(ld.path(), Lsn(1)).unwrap();
    let mut frames = Vec::new();
    tail.poll(&mut frames, usize::MAX).unwrap();
    let mut commit: Vec<&[u8]> = Vec::new();
    for f in &frames {
        commit.push(&f.bytes);
        if f.commit {
            follower.apply_replicated(&commit).unwrap();
            commit.clear();
        }
    }
    follower.sync().unwrap();
    let (l, f) = (leader.stats(), handle.stats().unwrap());
    assert_eq!((l.deltas, l.propagation_deltas), (4, 2));
    assert_eq!(
        (f.deltas, f.propagation_deltas),
        (l.deltas, l.propagation_deltas)
    );
    assert_eq!((l.delta_bytes, l.propagation_delta_bytes), (16, 8));
    assert_eq!(
        (f.delta_bytes, f.propagation_delta_bytes),
        (l.delta_bytes, l.propagation_delta_bytes)
    );
    assert_eq!(f.commits, l.commits, "every replicated commit counted");
    leader.stop().unwrap();
    follower.stop().unwrap();
}
