//! The command-line vocabulary `bench` shares with `tslab`, `datahub` and `mmsb`: a closed
//! standard output ends a command quietly with 0; a bad argument is one line, exit 2.

use std::process::Command;

use cli_support::testing::closed_stdout;

#[test]
fn a_closed_stdout_ends_a_child_run_quietly_with_0() {
    let out = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["child-close", "--bytes", "65536", "--coalesce", "true"])
        .stdout(closed_stdout())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {err}");
    assert_eq!(err, "");
}

#[test]
fn a_malformed_value_is_one_line_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["child-close", "--bytes", "lots", "--coalesce", "true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("bench: "), "{err}");
}
