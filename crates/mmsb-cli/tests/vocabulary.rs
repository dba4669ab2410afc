//! The command-line vocabulary `mmsb` shares with `tslab`, `datahub` and `bench`: a closed
//! standard output ends a command quietly with 0; durations (`--durability group:...`) are
//! humantime strings, `group:5` still 5 ms; a malformed one is one line, exit 2.

use std::path::Path;
use std::process::{Command, Output};

use cli_support::testing::{closed_stdout, piped_to_head};

fn mmsb() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mmsb"))
}

/// A log of a few thousand frames: the embedded trace applied through MMSB.
fn make_log(dir: &Path, durability: &str) -> Output {
    mmsb()
        .arg("trace")
        .arg("--log")
        .arg(dir)
        .args(["--no-verify", "--durability", durability])
        .output()
        .unwrap()
}

#[test]
fn log_inspect_frames_piped_to_head_exits_0_with_empty_stderr() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    let made = make_log(&log, "flush");
    assert_eq!(made.status.code(), Some(0), "{made:?}");
    let out = piped_to_head(env!("CARGO_BIN_EXE_mmsb"))
        .args(["log", "inspect", log.to_str().unwrap(), "--frames"])
        .output()
        .expect("run bash");
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn a_closed_stdout_ends_verify_of_a_damaged_log_quietly_with_0() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    assert_eq!(make_log(&log, "flush").status.code(), Some(0));
    // Flip a byte in the middle of the first segment: verify reports corruption (exit 1)...
    let seg = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "tlog"))
        .min()
        .expect("a segment file");
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let told = mmsb().args(["log", "verify"]).arg(&log).output().unwrap();
    assert_eq!(told.status.code(), Some(1), "{told:?}");
    // ... but a reader that went away before the verdict ends it quietly with 0 (its output is
    // short: a pipe whose reader is already gone, not `head`, makes the write fail for sure).
    let out = mmsb()
        .args(["log", "verify"])
        .arg(&log)
        .stdout(closed_stdout())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {err}");
    assert_eq!(err, "");
}

#[test]
fn group_durability_takes_humantime_and_bare_milliseconds_and_a_malformed_one_is_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, d) in ["group:5", "group:5ms", "group:1s"].iter().enumerate() {
        let out = make_log(&tmp.path().join(format!("log{i}")), d);
        assert_eq!(out.status.code(), Some(0), "--durability {d}: {out:?}");
    }
    let out = make_log(&tmp.path().join("bad"), "group:5 parsecs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("mmsb: ") && err.contains("not a duration"),
        "{err}"
    );
}
