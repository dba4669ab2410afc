//! What the tools' end-to-end tests of this vocabulary share: a command piped into `head -1`,
//! and a standard output whose reader is already gone.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

/// `timeout 120 bash -c 'set -o pipefail; BIN ARGS | head -1 >/dev/null'`: add the arguments
/// with `.args(..)` and run it. Its status is `BIN`'s (`head` exits 0), its stderr `BIN`'s
/// alone; `timeout` bounds a command that never notices the closed pipe (exit 124).
pub fn piped_to_head(bin: &str) -> Command {
    let mut c = Command::new("timeout");
    c.args([
        "120",
        "bash",
        "-c",
        r#"set -o pipefail; "$0" "$@" | head -1 >/dev/null"#,
        bin,
    ]);
    c
}

/// A standard output whose reader is gone (one end of a socket pair, the other closed): the
/// first write fails with `EPIPE`, however short the output.
///
/// # Panics
/// If the socket pair cannot be created (out of file descriptors).
pub fn closed_stdout() -> Stdio {
    let (ours, theirs) = UnixStream::pair().expect("socket pair");
    drop(theirs);
    Stdio::from(OwnedFd::from(ours))
}
