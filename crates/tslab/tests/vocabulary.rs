//! The command-line vocabulary `tslab` shares with `datahub`, `mmsb` and `bench`: a closed
//! standard output ends a command quietly with 0; durations are humantime strings or bare
//! seconds; a malformed duration is one line, exit 2.

mod common;

use cli_support::testing::piped_to_head;

#[test]
fn watch_piped_to_head_exits_0_with_empty_stderr() {
    let dir = common::temp_dir("vocab-head");
    let file = dir.join("s.json");
    std::fs::write(&file, common::snapshot().to_json_pretty()).unwrap();
    // `watch` without --count prints until its reader goes away.
    let out = piped_to_head(env!("CARGO_BIN_EXE_tslab"))
        .args(["watch", "--interval", "1ms", file.to_str().unwrap()])
        .output()
        .expect("run bash");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn durations_are_humantime_or_bare_seconds_and_a_malformed_one_is_one_line_exit_2() {
    let dir = common::temp_dir("vocab-dur");
    let file = dir.join("s.json");
    std::fs::write(&file, common::snapshot().to_json_pretty()).unwrap();
    let f = file.to_str().unwrap();
    for interval in ["500ms", "1", "0.2", "20ms"] {
        let out = common::tslab()
            .args(["watch", "--count", "1", "--interval", interval, f])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "--interval {interval}: {out:?}");
    }
    for window in ["10ms", "0"] {
        let out = common::tslab()
            .args(["top", "--classes", "--window", window, f])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "--window {window}: {out:?}");
    }
    let out = common::tslab()
        .args(["watch", "--interval", "20 parsecs", f])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("tslab: ") && err.contains("not a duration"),
        "{err}"
    );
}
