//! What the tools' end-to-end tests share: a command piped into `head -1`, a standard output
//! whose reader is already gone, a command run with a timeout, and the shared data folder.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// Runs `cmd` with standard input closed and both outputs captured, reading them while it runs
/// (an output larger than a pipe buffer cannot block it), and returns its status and output.
///
/// # Panics
/// If it cannot be started, or has not finished within `timeout` (it is killed first): a hung
/// command fails the test instead of hanging the run. `what` names it in the message.
pub fn output_within(cmd: &mut Command, timeout: Duration, what: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = drain(child.stderr.take().expect("stderr is piped"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if start.elapsed() > timeout {
            child.kill().ok();
            child.wait().ok();
            panic!("{what} did not finish within {} s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        pipe.read_to_end(&mut bytes).expect("read a pipe");
        bytes
    })
}

/// The shared real-data folder the tests read: `$SHARED_DATA_DIR`, else `../shared/data` beside
/// the workspace root (whether it exists or not).
pub fn shared_data_dir() -> PathBuf {
    match std::env::var_os("SHARED_DATA_DIR") {
        Some(d) => PathBuf::from(d),
        // CARGO_MANIFEST_DIR is crates/cli-support; the workspace root is two levels up.
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
    }
}

/// `sub` of the shared data folder ([`shared_data_dir`]) if it is a directory; else `None` with
/// a note on stderr, or a panic when `REQUIRE_SHARED_DATA=1` (CI), so a missing folder never
/// skips silently where it must not skip.
pub fn shared_data(sub: &str) -> Option<PathBuf> {
    let dir = shared_data_dir().join(sub);
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("REQUIRE_SHARED_DATA").as_deref() == Ok("1") {
        panic!("REQUIRE_SHARED_DATA=1 but {} does not exist", dir.display());
    }
    eprintln!(
        "note: {} not found (set SHARED_DATA_DIR); its tests are skipped",
        dir.display()
    );
    None
}
