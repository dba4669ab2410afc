//! `mmsb trace` on every shared editing trace (`$SHARED_DATA_DIR`, else `../shared/data` beside
//! the workspace; skipped when absent unless `REQUIRE_SHARED_DATA=1`): exit 0, `--out` equals
//! `endContent`, the log verifies; and a trace whose `endContent` was altered exits 1.

mod support;

use std::io::Read;
use std::path::PathBuf;
use std::process::Command;

use support::end_content;

fn traces() -> Vec<PathBuf> {
    let dir = support::editing_traces_dir();
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|r| {
            r.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.to_string_lossy().ends_with(".json.gz"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    if v.is_empty() {
        assert_ne!(
            std::env::var("REQUIRE_SHARED_DATA").as_deref(),
            Ok("1"),
            "REQUIRE_SHARED_DATA=1 but {} has no traces",
            dir.display()
        );
        eprintln!("skipped: no editing traces in {}", dir.display());
    }
    v
}

#[test]
fn every_shared_trace_reaches_end_content_through_the_log() {
    for t in traces() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("log");
        let out = tmp.path().join("doc.txt");
        let o = Command::new(env!("CARGO_BIN_EXE_mmsb"))
            .args([
                "trace",
                t.to_str().unwrap(),
                "--log",
                log.to_str().unwrap(),
                "--checkpoint-every",
                "5000",
                "--out",
                out.to_str().unwrap(),
                "--json",
            ])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{}: {}",
            t.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["matches_end_content"], true);
        assert!(v["checks"].as_array().unwrap().len() >= 4, "{v}");
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            end_content(&t),
            "{}",
            t.display()
        );
        let o = Command::new(env!("CARGO_BIN_EXE_mmsb"))
            .args(["log", "verify", log.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    }
}

#[test]
fn an_altered_end_content_exits_1() {
    let Some(t) = traces()
        .into_iter()
        .find(|p| p.to_string_lossy().contains("sveltecomponent"))
    else {
        return;
    };
    let mut s = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&t).unwrap())
        .read_to_string(&mut s)
        .unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&s).unwrap();
    let mut end = v["endContent"].as_str().unwrap().to_owned();
    end.replace_range(100..101, "#");
    v["endContent"] = serde_json::Value::String(end);
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("altered.json");
    std::fs::write(&f, serde_json::to_vec(&v).unwrap()).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_mmsb"))
        .args(["trace", f.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("differs from endContent at byte 100"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
