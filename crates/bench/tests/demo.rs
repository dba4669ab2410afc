//! `bench demo`: every peer serves the workload (real corpus when present, generated always),
//! and each child runs on the global allocator its environment names.

use std::process::{Command, Output};
use std::time::Duration;

/// Generous: `--quick` takes well under a minute on a 2-core VM.
const TIMEOUT: Duration = Duration::from_secs(600);

/// Runs `cmd`, killing it (and failing) after [`TIMEOUT`].
fn run(mut cmd: Command) -> Output {
    cli_support::testing::output_within(&mut cmd, TIMEOUT, "bench")
}

use cli_support::testing::shared_data_dir;

const PEERS: [&str; 6] = [
    "temporal-slab-api2",
    "temporal-slab-global",
    "value-glibc",
    "value-mimalloc",
    "value-jemalloc",
    "bumpalo",
];

#[test]
fn quick_json_has_every_peer_with_requests_on_every_corpus() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plot = dir.path().join("rss.svg");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bench"));
    cmd.args(["demo", "--quick", "--json", "--plot"]).arg(&plot);
    let out = run(cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench demo failed: {err}");
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
    let corpora = report["corpora"].as_array().expect("corpora");
    let real = shared_data_dir().join("json").is_dir();
    let want: &[&str] = if real {
        &["real", "generated"]
    } else {
        assert_ne!(
            std::env::var("REQUIRE_SHARED_DATA").as_deref(),
            Ok("1"),
            "REQUIRE_SHARED_DATA=1 but {} is missing",
            shared_data_dir().display()
        );
        &["generated"]
    };
    let names: Vec<&str> = corpora
        .iter()
        .filter_map(|c| c["corpus"].as_str())
        .collect();
    assert_eq!(names, want);
    for c in corpora {
        let peers: Vec<&str> = c["peers"]
            .as_array()
            .expect("peers")
            .iter()
            .filter_map(|p| p["peer"].as_str())
            .collect();
        assert_eq!(peers, PEERS, "{}", c["corpus"]);
        let asked = c["requests"].as_u64().expect("requests");
        assert!(asked > 0);
        for p in c["peers"].as_array().unwrap() {
            assert_eq!(p["requests"].as_u64(), Some(asked), "{p}");
            assert!(p["requests_per_sec"].as_f64().unwrap() > 0.0, "{p}");
            assert!(p["latency"]["p99_ns"].as_u64().unwrap() > 0, "{p}");
            assert!(p["rss"]["final_bytes"].as_u64().unwrap() > 0, "{p}");
            assert!(p["rss"]["samples"].as_array().unwrap().len() >= 2, "{p}");
        }
    }
    // Goals exist exactly when the real corpus ran, each with a computed verdict.
    let goals = report["goals"].as_object().expect("goals");
    assert_eq!(!goals.is_empty(), real);
    for g in goals.values() {
        for name in [
            "p99_le_best_peer",
            "final_rss_le_every_peer",
            "requests_per_sec_ge_0_9x_best_peer",
        ] {
            assert!(g[name]["met"].is_boolean(), "{name}: {g}");
        }
    }
    assert!(report["machine"]["logical_cores"].as_u64().unwrap() >= 1);
    let svg = std::fs::read_to_string(&plot).expect("the plot is written");
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
    assert!(svg.contains("value-jemalloc"), "the legend names the peers");
}

fn child(peer: &str, env: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bench"));
    cmd.args([
        "child-demo",
        "--peer",
        peer,
        "--corpus",
        "generated",
        "--requests",
        "20",
        "--workers",
        "1",
        "--batch",
        "10",
        "--rss-interval-ms",
        "50",
    ]);
    cmd.env_remove("BENCH_GLOBAL_ALLOCATOR");
    if let Some(v) = env {
        cmd.env("BENCH_GLOBAL_ALLOCATOR", v);
    }
    run(cmd)
}

#[test]
fn a_child_runs_on_the_allocator_its_environment_names() {
    for (peer, alloc) in [
        ("value-mimalloc", "mimalloc"),
        ("value-jemalloc", "jemalloc"),
        ("value-glibc", "system"),
        ("temporal-slab-global", "epoch"),
    ] {
        let out = child(peer, Some(alloc));
        assert!(
            out.status.success(),
            "{peer}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
        assert_eq!(r["global_allocator"], alloc, "{peer}");
        assert_eq!(r["requests"], 20, "{peer}");
    }
}

#[test]
fn a_child_without_its_allocator_in_the_environment_refuses_to_run() {
    let out = child("value-mimalloc", None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("runs on system"), "{err}");
}
