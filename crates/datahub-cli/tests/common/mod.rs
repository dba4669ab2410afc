//! Helpers shared by the `datahub` binary's tests: real processes with deadlines, unique block
//! names that are removed at the end, generated files, BLAKE2b digests.

#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use blake2::Digest;
use blake2::digest::consts::U32;

/// Generous upper bound for one `datahub` process in a test (they take well under a second).
pub const DEADLINE: Duration = Duration::from_secs(40);

/// A block name unique to this process and call; the block is removed when dropped.
#[derive(Debug)]
pub struct Block(pub String);

impl Block {
    pub fn new(tag: &str) -> Block {
        static N: AtomicU64 = AtomicU64::new(0);
        Block(format!(
            "dhcli-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
    }
    pub fn name(&self) -> &str {
        &self.0
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        let _ = datahub::remove(&self.0);
    }
}

pub fn blake2b(bytes: &[u8]) -> String {
    let d = blake2::Blake2b::<U32>::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// `len` bytes of deterministic noise (xorshift), different per `seed`.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

pub fn datahub() -> Command {
    Command::new(env!("CARGO_BIN_EXE_datahub"))
}

/// A finished process.
#[derive(Debug)]
pub struct Done {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Done {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                self.text(),
                self.stderr
            )
        })
    }
    /// Asserts exit code `code`.
    pub fn expect(self, code: i32, what: &str) -> Done {
        assert_eq!(
            self.code(),
            Some(code),
            "{what}: exit code; stdout: {}\nstderr: {}",
            self.text(),
            self.stderr
        );
        self
    }
    /// Asserts that standard error is exactly one line `datahub: ...` and returns it.
    pub fn one_line_error(&self) -> &str {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one error line, got: {:?}",
            self.stderr
        );
        assert!(lines[0].starts_with("datahub: "), "{:?}", lines[0]);
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        lines[0]
    }
}

/// A running process whose output goes to files (so it never blocks on a full pipe).
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    out: PathBuf,
    err: PathBuf,
    _dir: tempfile::TempDir,
    feeder: Option<std::thread::JoinHandle<()>>,
}

impl Proc {
    pub fn spawn(args: &[&str]) -> Proc {
        Proc::spawn_cmd(datahub().args(args), None)
    }

    /// Spawns with `input` written to its standard input (then closed).
    pub fn spawn_with_stdin(args: &[&str], input: Vec<u8>) -> Proc {
        Proc::spawn_cmd(datahub().args(args), Some(input))
    }

    pub fn spawn_cmd(cmd: &mut Command, input: Option<Vec<u8>>) -> Proc {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("stdout");
        let err = dir.path().join("stderr");
        cmd.stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap());
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd.spawn().expect("spawn datahub");
        let feeder = input.map(|data| {
            let mut stdin = child.stdin.take().unwrap();
            std::thread::spawn(move || {
                let _ = stdin.write_all(&data);
            })
        });
        Proc {
            child,
            out,
            err,
            _dir: dir,
            feeder,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// What it has written to standard error so far.
    pub fn stderr_so_far(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits up to `timeout` (kills it and panics after).
    pub fn finish(mut self, timeout: Duration) -> Done {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "process did not finish within {timeout:?}; stderr: {}",
                    std::fs::read_to_string(&self.err).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if let Some(f) = self.feeder.take() {
            let _ = f.join();
        }
        Done {
            status,
            stdout: std::fs::read(&self.out).unwrap(),
            stderr: std::fs::read_to_string(&self.err).unwrap(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A test that panicked must not leave a process behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `datahub ARGS` to completion.
pub fn run(args: &[&str]) -> Done {
    Proc::spawn(args).finish(DEADLINE)
}

/// Waits until block `name` can be opened (its creator published it).
pub fn wait_for_block(name: &str) {
    let deadline = Instant::now() + DEADLINE;
    while datahub::Admin::open(name).is_err() {
        assert!(Instant::now() < deadline, "block {name} did not appear");
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// The shared data folder (`$SHARED_DATA_DIR`, else `../shared/data` beside the workspace), or
/// `None` after printing why the caller skips; panics when `REQUIRE_SHARED_DATA=1`.
pub fn shared_data() -> Option<PathBuf> {
    let dir = match std::env::var_os("SHARED_DATA_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
    };
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("REQUIRE_SHARED_DATA").is_ok_and(|v| v == "1") {
        panic!(
            "shared data not found at {} and REQUIRE_SHARED_DATA=1",
            dir.display()
        );
    }
    eprintln!(
        "skipped: shared data not found at {} (set SHARED_DATA_DIR)",
        dir.display()
    );
    None
}

/// Path of block `name`'s segment (this test process never sets `DATAHUB_SHM_DIR`).
/// Every regular file under `dir`, depth first, each directory's entries in name order.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if p.is_file() {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out
}

pub fn shm_path(name: &str) -> PathBuf {
    datahub::shm_dir().join(name)
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Sends signal `sig` to `pid`.
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    let r = unsafe { libc::kill(pid, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig})");
}

/// The signal that ended a process, if one did.
pub fn killed_by(d: &Done) -> Option<i32> {
    std::os::unix::process::ExitStatusExt::signal(&d.status)
}

/// Waits up to [`DEADLINE`] for `cond`, panicking with `what` after.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits up to `timeout` for `child` (kills it and panics after).
pub fn finish_child(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
