//! The command-line vocabulary `datahub` shares with `tslab`, `mmsb` and `bench`: a closed
//! standard output ends a command quietly with 0; durations are humantime strings or bare
//! seconds; a malformed duration is one line, exit 2.

mod common;

use cli_support::testing::piped_to_head;

use common::{Block, DEADLINE, Proc, datahub, noise, run, wait_for_block, write_file};

#[test]
fn sub_to_stdout_piped_to_head_exits_0_with_empty_stderr() {
    let block = Block::new("vocab-head");
    let dir = tempfile::tempdir().unwrap();
    // 4 MiB with line feeds here and there: far more than a pipe holds once `head` is gone.
    let file = write_file(dir.path(), "big.bin", &noise(4 << 20, 13));
    let publisher = Proc::spawn(&["pub", block.name(), "--wait", "20s", file.to_str().unwrap()]);
    wait_for_block(block.name());
    let sub = piped_to_head(env!("CARGO_BIN_EXE_datahub"))
        .args(["sub", block.name(), "--wait", "20"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&sub.stderr);
    assert_eq!(sub.status.code(), Some(0), "sub stderr: {err}");
    assert_eq!(err, "");
    // The pub lost its consumer; it is stopped by the test, whatever it decided.
    drop(publisher);
}

#[test]
fn wait_takes_humantime_or_bare_seconds_and_a_malformed_one_is_one_line_exit_2() {
    // Accepted (the block never appears: the wait, not the parse, is what fails).
    for wait in ["500ms", "0.2", "1"] {
        let block = Block::new("vocab-wait");
        let d = run(&["sub", block.name(), "--wait", wait]).expect(2, "sub on a missing block");
        let line = d.one_line_error();
        assert!(line.contains("within"), "--wait {wait}: {line}");
    }
    for bad in ["20x", "-1", "soon"] {
        let block = Block::new("vocab-bad");
        let d = datahub()
            .args(["pub", block.name(), &format!("--wait={bad}")])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&d.stderr);
        assert_eq!(d.status.code(), Some(2), "--wait {bad}: {err}");
        assert_eq!(err.lines().count(), 1, "--wait {bad}: {err}");
        assert!(
            err.starts_with("datahub: ") && err.contains("not a duration"),
            "{err}"
        );
    }
    let _ = DEADLINE;
}
