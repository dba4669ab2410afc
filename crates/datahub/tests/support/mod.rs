//! Helpers shared by the multi-process tests: the test binary re-executes itself to run one
//! "child" test function in a new process (`--exact --ignored NAME`), with its role and
//! parameters in environment variables; children talk back through `@@`-prefixed stdout lines
//! and take commands on stdin. Child functions are `#[ignore]`d, so a plain test run neither
//! runs nor counts them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// Environment variable naming a child's role; absent in the parent test run.
pub const ROLE: &str = "DATAHUB_TEST_ROLE";
/// Prefix of the stdout lines a child sends to its parent.
pub const MARK: &str = "@@";

/// A block name no other test (or test process) uses.
pub fn unique_name(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "dh-mp-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes the block (and whatever else was registered) when the test ends, passed or not.
#[derive(Debug)]
pub struct BlockGuard {
    pub name: String,
}

impl BlockGuard {
    pub fn new(tag: &str) -> BlockGuard {
        let name = unique_name(tag);
        let _ = datahub::remove(&name);
        BlockGuard { name }
    }
}

impl Drop for BlockGuard {
    fn drop(&mut self) {
        let _ = datahub::remove(&self.name);
    }
}

/// A scratch directory removed at the end of the test.
#[derive(Debug)]
pub struct TempDir {
    pub path: std::path::PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique_name(tag));
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// In a child process whose role is `role`: `Some(())`. In the parent run (or another child):
/// `None`, and the child test function returns at once.
pub fn child(role: &str) -> Option<()> {
    (std::env::var(ROLE).ok()?.as_str() == role).then_some(())
}

/// A parameter the parent passed to this child.
pub fn param<T: std::str::FromStr>(key: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    let v = std::env::var(format!("DATAHUB_TEST_{key}"))
        .unwrap_or_else(|_| panic!("child parameter {key} missing"));
    v.parse()
        .unwrap_or_else(|e| panic!("child parameter {key}={v}: {e:?}"))
}

/// An optional parameter.
pub fn param_or<T: std::str::FromStr>(key: &str, default: T) -> T
where
    T::Err: std::fmt::Debug,
{
    match std::env::var(format!("DATAHUB_TEST_{key}")) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|e| panic!("child parameter {key}={v}: {e:?}")),
        Err(_) => default,
    }
}

/// Sends `@@tag rest` to the parent (one `write` per line: a line written before a SIGKILL
/// reaches the parent whole).
pub fn tell(tag: &str, rest: &str) {
    let line = format!("{MARK}{tag} {rest}\n");
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes()).unwrap();
    out.flush().unwrap();
}

/// Blocks until the parent sends a line on stdin; returns it (empty at EOF).
pub fn hear() -> String {
    let mut s = String::new();
    std::io::stdin().read_line(&mut s).unwrap();
    s.trim().to_owned()
}

/// Starts a thread that sets the returned flag when stdin reaches EOF or a line arrives.
pub fn stop_flag_on_stdin() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = flag.clone();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::stdin().read_line(&mut s);
        f.store(true, Ordering::SeqCst);
    });
    flag
}

/// A child process running one test function of this binary.
#[derive(Debug)]
pub struct ChildProc {
    pub label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    status: Option<ExitStatus>,
}

impl ChildProc {
    /// Runs test function `test_fn` of this binary in a new process with role `role` and the
    /// parameters `params` (`DATAHUB_TEST_<key>`).
    pub fn spawn(test_fn: &str, role: &str, params: &[(&str, String)]) -> ChildProc {
        let exe = std::env::current_exe().unwrap();
        let mut cmd = Command::new(exe);
        cmd.args([
            test_fn,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "--quiet",
        ])
        .env(ROLE, role)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        for (k, v) in params {
            cmd.env(format!("DATAHUB_TEST_{k}"), v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix(MARK) {
                    if tx.send(rest.to_owned()).is_err() {
                        break;
                    }
                }
            }
        });
        ChildProc {
            label: format!("{role}[{}]", child.id()),
            child,
            stdin,
            lines: rx,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the next `@@tag ...` line and returns what follows the tag. Lines with other
    /// tags are skipped. Panics (naming the child) on timeout or if the child exits first.
    pub fn expect(&mut self, tag: &str, timeout: Duration) -> String {
        match self.try_expect(tag, timeout) {
            Some(s) => s,
            None => {
                let st = self.child.try_wait().ok().flatten();
                panic!(
                    "{}: no '@@{tag}' line within {timeout:?} (exit status {st:?})",
                    self.label
                )
            }
        }
    }

    /// As `expect`, `None` on timeout or end of output.
    pub fn try_expect(&mut self, tag: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let (t, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                    if t == tag {
                        return Some(rest.to_owned());
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Next line with `tag`, parsed as JSON.
    pub fn expect_json(&mut self, tag: &str, timeout: Duration) -> serde_json::Value {
        let s = self.expect(tag, timeout);
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("{}: bad JSON {s:?}: {e}", self.label))
    }

    /// Sends one line to the child's stdin.
    pub fn say(&mut self, line: &str) {
        let w = self.stdin.as_mut().expect("stdin open");
        writeln!(w, "{line}").unwrap();
        w.flush().unwrap();
    }

    /// Closes the child's stdin (children watching it for EOF stop).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Whether the process has exited (reaping it if so).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap();
        }
        self.status
    }

    /// SIGKILL, without reaping: the child stays a zombie until [`ChildProc::reap`].
    pub fn kill_no_reap(&mut self) {
        // SAFETY: kill(2) on a pid this process spawned and has not reaped (so the pid cannot
        // have been reused).
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
        assert_eq!(r, 0, "{}: kill failed", self.label);
    }

    /// Waits for the process (after a kill).
    pub fn reap(&mut self) -> ExitStatus {
        if self.status.is_none() {
            self.status = Some(self.child.wait().unwrap());
        }
        self.status.unwrap()
    }

    /// SIGKILL and reap. Panics if the child had already exited on its own with a failure
    /// (a child that should run until killed must not stop by itself).
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(st) = self.exited() {
            panic!("{}: exited on its own before the kill: {st}", self.label);
        }
        self.kill_no_reap();
        self.reap()
    }

    /// Waits up to `timeout` for the child to exit and checks it succeeded.
    pub fn wait_success(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.exited() {
                assert!(
                    st.success(),
                    "{}: exited with {st} (its stderr is above)",
                    self.label
                );
                return;
            }
            if Instant::now() >= deadline {
                self.kill_no_reap();
                self.reap();
                panic!("{}: still running after {timeout:?}; killed", self.label);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `CLOCK_MONOTONIC` in ns: system-wide, so one process's reading compares with another's.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(r, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// splitmix64: a seq-derived word, for payloads a reader can check.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A small deterministic RNG (xorshift64*), so a failing storm can be replayed by seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(mix(seed) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0; slight bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A seed from the environment variable `var`, or from the clock; printed so a run can be
/// repeated.
pub fn seed_from_env(var: &str) -> u64 {
    let seed = std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{var}={seed}");
    seed
}
