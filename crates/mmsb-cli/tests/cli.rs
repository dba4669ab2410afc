//! The `mmsb` binary end to end: log inspect/verify (with a corrupted log), replay, checkpoint,
//! diff and stats, with exit codes.

use std::path::Path;
use std::process::{Command, Output};

use mmsb::tlog::Durability;
use mmsb::{Config, EdgeKind, Mmsb, passthrough};

fn mmsb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmsb"))
        .args(args)
        .output()
        .unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// A log with 2 source pages, a derived page and 40 commits; returns the LSN after commit 20.
fn make_log(dir: &Path) -> u64 {
    let mut c = Config::new(dir).durability(Durability::Flush);
    c.segment_bytes = 4096; // several segments
    let mut m = Mmsb::start(c).unwrap();
    let a = m.create_page(512).unwrap();
    let b = m.create_page(512).unwrap();
    m.add_dependency(a, b, EdgeKind::Data).unwrap();
    m.register_recompute(b, passthrough()).unwrap();
    let c2 = m.create_page(64).unwrap();
    let mut mid = 0;
    for i in 0..40u8 {
        m.write_range(a, usize::from(i) * 7, &[i + 1; 9]).unwrap();
        m.write_range(c2, usize::from(i), &[i + 1]).unwrap();
        if i == 19 {
            mid = m.state().last_lsn().0;
        }
    }
    m.stop().unwrap();
    mid
}

#[test]
fn inspect_verify_replay_diff_stats() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mid = make_log(&log);
    let log_s = log.to_str().unwrap();

    let out = mmsb(&["log", "inspect", log_s, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    assert_eq!(v["kinds"]["create_page"], 3);
    assert_eq!(v["delta_sources"]["propagation"], 40);
    assert_eq!(v["delta_sources"]["user"], 80);
    assert_eq!(v["first_lsn"], 1);
    assert!(
        v["segments"].as_array().unwrap().len() > 1,
        "segments roll at 4 KiB"
    );
    let out = mmsb(&["log", "inspect", log_s, "--frames", "--limit", "5"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("page "))
            .count()
            >= 5
    );

    let out = mmsb(&["log", "verify", log_s, "--json"]);
    assert!(out.status.success());
    assert_eq!(json(&out)["ok"], true);

    // Replay to the middle, compare with the full state: they differ; the end equals the log.
    let mid_dir = dir.path().join("mid");
    let out = mmsb(&[
        "replay",
        log_s,
        "--to-lsn",
        &mid.to_string(),
        "--out",
        mid_dir.to_str().unwrap(),
        "--pages",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out)["lsn"], mid);
    assert!(mid_dir.join("pages/1.bin").exists());
    let out = mmsb(&["diff", mid_dir.to_str().unwrap(), log_s, "--json"]);
    assert_eq!(out.status.code(), Some(1), "different states: exit 1");
    let v = json(&out);
    assert_eq!(v["same"], false);
    assert_eq!(v["pages"].as_array().unwrap().len(), 3);
    let end_dir = dir.path().join("end");
    assert!(
        mmsb(&["replay", log_s, "--out", end_dir.to_str().unwrap()])
            .status
            .success()
    );
    let out = mmsb(&["diff", end_dir.to_str().unwrap(), log_s]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let out = mmsb(&["checkpoint", log_s, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = mmsb(&["stats", log_s, "--json"]);
    assert!(out.status.success());
    let v = json(&out);
    assert_eq!(v["pages"], 3);
    assert_eq!(v["checkpoints"].as_array().unwrap().len(), 1);
    assert_eq!(v["max_epoch"], 40);
}

#[test]
fn verify_names_the_corrupt_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path());
    let mut segs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tlog"))
        .collect();
    segs.sort();
    let victim = &segs[0];
    let mut bytes = std::fs::read(victim).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    std::fs::write(victim, &bytes).unwrap();
    let out = mmsb(&["log", "verify", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let name = victim.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(name) && err.contains("offset"), "{err}");
    let out = mmsb(&["log", "verify", dir.path().to_str().unwrap(), "--json"]);
    let v = json(&out);
    let p = &v["problems"][0];
    let off = p["offset"].as_u64().unwrap() as usize;
    assert!(
        off <= at,
        "the reported frame starts at or before the flipped byte"
    );
    assert_eq!(
        p["tail"], false,
        "a corrupt segment followed by others is not a tail"
    );
}

#[test]
fn bad_input_is_exit_2_with_one_line() {
    let out = mmsb(&["log", "inspect", "/nonexistent/mmsb-log"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("00000000000000000001.tlog");
    std::fs::write(&f, b"not a log at all, just text").unwrap();
    let out = mmsb(&["log", "inspect", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("magic"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = mmsb(&[
        "replay",
        dir.path().to_str().unwrap(),
        "--to-epoch",
        "nope",
        "--out",
        "/tmp/x",
    ]);
    assert_eq!(out.status.code(), Some(2));
}
