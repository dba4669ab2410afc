//! Interop: a Python client written from `docs/datahub-broker.md` alone
//! (`tests/python/test_broker_interop.py`, pytest + pyzmq) against a real `datahub broker`:
//! it lists channels, discovers a channel `datahub pub --channel` registered, registers its own
//! channel that `datahub channels --json` shows, and gets the documented errors.
//!
//! The interpreter is `$DATAHUB_TEST_PYTHON` (a venv with pyzmq and pytest; `.ci/run` makes
//! `target/venv`). Without it, or when it cannot import both, the test is skipped with a note,
//! except with `REQUIRE_PYTHON_ZMQ=1` (CI), when it fails.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cli_support::testing::output_within;
use common::{Proc, signal, wait_until};

/// The interpreter to use, or `None` after saying why the test is skipped.
fn python() -> Option<String> {
    let required = std::env::var("REQUIRE_PYTHON_ZMQ").is_ok_and(|v| v == "1");
    let skip = |why: String| {
        assert!(!required, "REQUIRE_PYTHON_ZMQ=1 but {why}");
        eprintln!(
            "skipped: {why} (set DATAHUB_TEST_PYTHON to a venv's python with pyzmq and pytest)"
        );
        None
    };
    let Ok(py) = std::env::var("DATAHUB_TEST_PYTHON") else {
        return skip("DATAHUB_TEST_PYTHON is not set".to_owned());
    };
    let probe = output_within(
        Command::new(&py).args(["-c", "import zmq, pytest"]),
        Duration::from_secs(60),
        "python import probe",
    );
    if !probe.status.success() {
        return skip(format!(
            "{py} cannot import zmq and pytest: {}",
            String::from_utf8_lossy(&probe.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    Some(py)
}

#[test]
fn a_python_client_written_from_the_protocol_doc_passes_its_tests() {
    let Some(py) = python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("b.sock");
    let ep = format!("ipc://{}", sock.display());
    // Default liveness (pending after 5 s of silence): the Python side heartbeats only while it
    // waits for `datahub channels`.
    let broker = Proc::spawn(&["broker", "--listen", &ep]);
    wait_until("the broker's socket", || sock.exists());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/test_broker_interop.py");
    let out = output_within(
        Command::new(&py)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .arg(&script)
            .env("DATAHUB_BIN", env!("CARGO_BIN_EXE_datahub"))
            .env("DATAHUB_BROKER", &ep)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .current_dir(dir.path()),
        Duration::from_secs(180),
        "pytest test_broker_interop.py",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pytest failed ({}):\n{stdout}\n{}\nbroker log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        broker.stderr_so_far()
    );
    // Every test ran (none skipped for a missing environment variable).
    assert!(
        stdout.contains(" passed") && !stdout.contains("skipped"),
        "{stdout}"
    );
    signal(broker.pid(), libc::SIGTERM);
    broker
        .finish(common::DEADLINE)
        .expect(0, "broker after SIGTERM");
}
