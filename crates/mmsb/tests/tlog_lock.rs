//! The writer lock: a second writer is locked out, `open` waits for a lock another process
//! releases within the timeout and fails with `Locked` after it, the writer's descriptors are
//! close-on-exec.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mmsb::frame::BodyRef;
use mmsb::tlog::{self, Durability, LogReader, TLog};
use mmsb::{Error, Lsn, PageId, Source};

mod tlog_support;
use tlog_support::*;

#[test]
fn second_writer_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = TLog::open(cfg(dir.path(), Durability::Flush)).unwrap();
    let mut now = cfg(dir.path(), Durability::Flush);
    now.lock_timeout = Duration::ZERO;
    match TLog::open(now) {
        Err(Error::Locked { dir: d, waited }) => {
            assert_eq!(d, dir.path());
            // One attempt, no waiting (generous bound: far below the 1 s default).
            assert!(waited < tlog::DEFAULT_LOCK_TIMEOUT / 2, "{waited:?}");
        }
        other => panic!("{other:?}"),
    }
    // Readers need no lock.
    assert_eq!(
        LogReader::open(dir.path())
            .unwrap()
            .frames()
            .unwrap()
            .count(),
        0
    );
    log.close().unwrap();
    let (log, _) = TLog::open(cfg(dir.path(), Durability::Flush)).unwrap();
    drop(log);
    TLog::open(cfg(dir.path(), Durability::Flush)).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Waiting for the lock
// ---------------------------------------------------------------------------------------------

/// Environment variable that makes a run of this test binary a lock holder: the log directory.
const LOCK_HOLDER_DIR: &str = "MMSB_TLOG_LOCK_HOLDER_DIR";
/// Milliseconds the lock holder keeps the lock after its stdin reaches end of file.
const LOCK_HOLDER_LINGER_MS: &str = "MMSB_TLOG_LOCK_HOLDER_LINGER_MS";

/// The child side: opens the log in `$LOCK_HOLDER_DIR` as its writer, commits one frame,
/// creates `ready` in the directory, blocks until stdin is closed (by the parent, or by its
/// exit), keeps the lock `$LOCK_HOLDER_LINGER_MS` more, then closes the log. Returns false when
/// this process is not a lock holder (the test then runs its parent side).
fn lock_holder_child() -> bool {
    let Some(dir) = std::env::var_os(LOCK_HOLDER_DIR) else {
        return false;
    };
    let dir = PathBuf::from(dir);
    let linger: u64 = std::env::var(LOCK_HOLDER_LINGER_MS)
        .unwrap()
        .parse()
        .unwrap();
    let (mut log, _) = TLog::open(cfg(&dir, Durability::Flush)).unwrap();
    log.append(PageId(1), 0, Source::User, true, BodyRef::Commit)
        .unwrap();
    fs::write(dir.join("ready"), b"").unwrap();
    std::io::copy(&mut std::io::stdin(), &mut std::io::sink()).unwrap();
    std::thread::sleep(Duration::from_millis(linger));
    log.close().unwrap();
    true
}

/// Starts this test binary again as a lock holder of `dir` (running only `test`), and waits
/// until it holds the lock. The lock holder lets go `linger_ms` after the returned child's
/// stdin is closed.
fn spawn_lock_holder(test: &str, dir: &Path, linger_ms: u64) -> std::process::Child {
    use std::process::{Command, Stdio};
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--test-threads=1", "--nocapture"])
        .env(LOCK_HOLDER_DIR, dir)
        .env(LOCK_HOLDER_LINGER_MS, linger_ms.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !dir.join("ready").exists() {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "lock holder exited early ({status}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "lock holder not ready"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child
}

/// Closes the lock holder's stdin (it then lets go of the lock) and checks that it succeeded.
fn finish_lock_holder(mut child: std::process::Child) {
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "lock holder failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Another process holds the lock and lets go 50 ms after being told to: `open` with the
/// default timeout waits for it instead of failing.
#[test]
fn open_waits_for_a_lock_that_another_process_releases_within_the_timeout() {
    if lock_holder_child() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_lock_holder(
        "open_waits_for_a_lock_that_another_process_releases_within_the_timeout",
        dir.path(),
        50,
    );
    // The child really holds it: without waiting, open fails.
    let mut now = cfg(dir.path(), Durability::Flush);
    now.lock_timeout = Duration::ZERO;
    assert!(
        matches!(TLog::open(now), Err(Error::Locked { .. })),
        "the lock holder does not hold the lock"
    );
    // Tell it to let go (50 ms from now) and open at once with the default timeout (1 s).
    drop(child.stdin.take());
    let t = Instant::now();
    let opened = TLog::open(cfg(dir.path(), Durability::Flush));
    let waited = t.elapsed();
    let (log, rep) = opened.unwrap_or_else(|e| panic!("after {waited:?}: {e}"));
    // It opened after the child closed its log: the child's commit is there.
    assert_eq!(rep.last_lsn, Lsn(1), "after {waited:?}");
    log.close().unwrap();
    finish_lock_holder(child);
}

/// A live second writer in another process, holding the lock well past the timeout: `open`
/// fails with `Locked`, and not before the timeout has passed.
#[test]
fn open_fails_with_locked_after_the_timeout_when_another_process_keeps_the_lock() {
    if lock_holder_child() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let child = spawn_lock_holder(
        "open_fails_with_locked_after_the_timeout_when_another_process_keeps_the_lock",
        dir.path(),
        0,
    );
    let timeout = Duration::from_millis(100);
    let mut c = cfg(dir.path(), Durability::Flush);
    c.lock_timeout = timeout;
    let t = Instant::now();
    let r = TLog::open(c);
    let elapsed = t.elapsed();
    match r {
        Err(Error::Locked { dir: d, waited }) => {
            assert_eq!(d, dir.path());
            assert!(waited >= timeout, "gave up early: waited {waited:?}");
            assert!(elapsed >= timeout, "gave up early: {elapsed:?}");
            // A generous upper bound: it only rules out hanging on the lock.
            assert!(
                elapsed < Duration::from_secs(3),
                "waited too long: {elapsed:?}"
            );
        }
        Ok(_) => panic!("opened a log that another process holds"),
        Err(e) => panic!("{e}"),
    }
    // Once the other writer is gone, the lock is free.
    finish_lock_holder(child);
    let (log, rep) = TLog::open(cfg(dir.path(), Durability::Flush)).unwrap();
    assert_eq!(rep.last_lsn, Lsn(1));
    log.close().unwrap();
}

/// Every descriptor the writer keeps (the lock file, the active segment) is close-on-exec, so
/// a child process drops it (and the lock) when it `exec`s.
#[cfg(target_os = "linux")]
#[test]
fn every_descriptor_the_writer_keeps_is_close_on_exec() {
    const O_CLOEXEC: u32 = 0o2_000_000;
    let dir = tempfile::tempdir().unwrap();
    let real = fs::canonicalize(dir.path()).unwrap();
    let (mut log, _) = TLog::open(cfg(dir.path(), Durability::FsyncEvery(1))).unwrap();
    log.append(PageId(1), 0, Source::User, true, BodyRef::Commit)
        .unwrap();
    let mut checked = Vec::new();
    for entry in fs::read_dir("/proc/self/fd").unwrap() {
        let entry = entry.unwrap();
        let Ok(target) = fs::read_link(entry.path()) else {
            continue; // closed meanwhile (another test's descriptor)
        };
        if !target.starts_with(&real) {
            continue;
        }
        let fd = entry.file_name();
        let info = fs::read_to_string(Path::new("/proc/self/fdinfo").join(&fd)).unwrap_or_default();
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
            .unwrap_or_else(|| panic!("no flags for fd {fd:?}: {info:?}"));
        assert_ne!(
            flags & O_CLOEXEC,
            0,
            "fd {fd:?} -> {} is not close-on-exec",
            target.display()
        );
        checked.push(target);
    }
    assert!(
        checked.iter().any(|p| p.ends_with(tlog::LOCK_FILE)),
        "{checked:?}"
    );
    assert!(
        checked
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "tlog")),
        "{checked:?}"
    );
    log.close().unwrap();
}
