//! `tslab demo --alloc api2|global`: the epoch tree and `serde_json::Value` inside the batch's
//! epoch scope count the same on the generated and the real corpus, and `global` really puts
//! the requests in the global allocator's epochs.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tslab::demo::{Corpus, corpus, tree};

/// Generous: a debug build parses the real corpus in seconds.
const TIMEOUT: Duration = Duration::from_secs(300);

/// The shared real-data folder's `json/`, or `None` (with a note) when it is missing and not
/// required.
fn shared_json_dir() -> Option<PathBuf> {
    cli_support::testing::shared_data("json")
}

/// Runs `tslab demo --alloc MODE ... --json --json-out SNAPSHOT`, killed after [`TIMEOUT`];
/// returns the report and the final snapshot.
fn demo(
    mode: &str,
    corpus: Option<&Path>,
    requests: u32,
    batch: u32,
) -> (serde_json::Value, serde_json::Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let snapshot = dir.path().join("snapshot.json");
    let mut cmd = common::tslab();
    cmd.args([
        "demo", "--alloc", mode, "--listen", "none", "--quiet", "--json",
    ])
    .args([
        "--requests",
        &requests.to_string(),
        "--batch",
        &batch.to_string(),
    ])
    .arg("--json-out")
    .arg(&snapshot);
    if let Some(c) = corpus {
        cmd.arg("--corpus").arg(c);
    }
    let out = cli_support::testing::output_within(
        &mut cmd,
        TIMEOUT,
        &format!("tslab demo --alloc {mode}"),
    );
    assert!(
        out.status.success(),
        "tslab demo --alloc {mode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = serde_json::from_slice(&out.stdout).expect("the report is JSON");
    let snap = serde_json::from_slice(&std::fs::read(&snapshot).expect("snapshot written"))
        .expect("the snapshot is JSON");
    (report, snap)
}

fn class_allocs(snapshot: &serde_json::Value) -> u64 {
    snapshot["classes"]
        .as_array()
        .expect("classes")
        .iter()
        .map(|c| c["allocs"].as_u64().expect("allocs"))
        .sum()
}

/// Both modes on one corpus: same requests, same counts, and every request's objects went to
/// slab classes of the allocator the report describes.
fn both_modes_agree(corpus: Option<&Path>, requests: u32, batch: u32) {
    let (api2, api2_snap) = demo("api2", corpus, requests, batch);
    let (global, global_snap) = demo("global", corpus, requests, batch);
    assert_eq!(api2["requests"], u64::from(requests));
    assert_eq!(global["requests"], api2["requests"]);
    assert!(api2["counts"]["keys"].as_u64().expect("keys") > 0);
    assert_eq!(
        global["counts"], api2["counts"],
        "the two modes counted differently"
    );
    assert_eq!(global["batches"], api2["batches"]);
    // The global instance's epochs served the batches: one advance per batch, and the Values
    // and maps were slab objects (thousands per request), not system allocations.
    assert!(
        global_snap["epoch_advances"].as_u64() >= api2["batches"].as_u64(),
        "{global_snap}"
    );
    let per_request = class_allocs(&global_snap) / u64::from(requests);
    assert!(
        per_request > 100,
        "{per_request} slab allocations per request in global mode"
    );
    assert!(class_allocs(&api2_snap) / u64::from(requests) > 100);
}

#[test]
fn api2_and_global_count_the_same_on_the_generated_corpus() {
    both_modes_agree(None, 600, 50);
}

#[test]
fn api2_and_global_count_the_same_on_the_real_corpus() {
    let Some(dir) = shared_json_dir() else { return };
    both_modes_agree(Some(&dir), 6, 2);
}

#[test]
fn count_value_counts_what_the_reference_counts() {
    let corpus = Corpus::generated(corpus::GENERATED_PER_KIND);
    let mut docs = 0;
    for kind in corpus.kinds() {
        for i in 0..kind.len() {
            let value: serde_json::Value = serde_json::from_slice(kind.doc(i)).expect("valid");
            assert_eq!(
                tree::count_value(&value),
                tree::reference(&value).0,
                "{}",
                kind.origin(i)
            );
            docs += 1;
        }
    }
    assert!(docs > 100);
}

#[test]
fn global_mode_is_refused_where_the_global_allocator_is_not_epoch_global() {
    // This test binary runs on the system allocator.
    let err = tslab::demo::run(&tslab::demo::DemoArgs {
        alloc: tslab::demo::AllocMode::Global,
        requests: Some(10),
        listen: tslab::demo::Listen::Off,
        quiet: true,
        ..Default::default()
    })
    .expect_err("refused");
    assert!(err.to_string().contains("EpochGlobal"), "{err}");
}
