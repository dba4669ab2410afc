//! The `tslab` binary under hostile input and faults: clients that never read,
//! descriptor exhaustion, unbounded inputs, bad thresholds, unwritable outputs, and the error
//! messages of all of them. See `docs/failure-model/tslab.md`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::tslab;

/// Generous bound on anything that must not hang (a noisy 2-core VM included).
const HANG: Duration = Duration::from_secs(60);

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn snapshot_file(dir: &Path, name: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, common::snapshot().to_json_pretty()).expect("write");
    path.to_str().unwrap().to_owned()
}

/// A fresh directory for one test, removed when the returned guard drops.
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("tslab-hostile-{name}-"))
        .tempdir()
        .expect("create a temporary directory")
}

/// Waits for `child` at most `limit`; on timeout kills it and panics with `what`.
fn wait_or_kill(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?} (killed)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cmd` to its end (killed and failed after [`HANG`]), capturing its output.
fn output_within(cmd: &mut Command, what: &str) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let (out, err) = (read(Box::new(out)), read(Box::new(err)));
    let status = wait_or_kill(&mut child, HANG, what);
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// A `tslab serve` child, its address, and everything it wrote to stderr so far.
struct Served {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Served {
    /// Starts `sh -c "<prefix> exec tslab serve --listen 127.0.0.1:0 FILE"` and waits for its
    /// "serving" line.
    fn start(shell_prefix: &str, file: &str) -> Served {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{shell_prefix} exec \"$0\" serve --listen 127.0.0.1:0 \"$1\""
            ))
            .arg(env!("CARGO_BIN_EXE_tslab"))
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tslab serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let (pipe, stderr) = (child.stderr.take().unwrap(), stderr.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if let Some(rest) = line.split("serving http://").nth(1) {
                        let _ = tx.send(rest.split('/').next().unwrap_or("").to_owned());
                    }
                    let mut s = stderr.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
            });
        }
        let addr = match rx.recv_timeout(HANG) {
            Ok(a) => a.parse().expect("an address"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("tslab serve did not start: {}", stderr.lock().unwrap());
            }
        };
        Served {
            child,
            addr,
            stderr,
        }
    }

    fn scrape(&self, timeout: Duration) -> Result<String, String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .build()
            .into();
        let mut r = agent
            .get(&format!("http://{}/metrics", self.addr))
            .call()
            .map_err(|e| e.to_string())?;
        r.body_mut().read_to_string().map_err(|e| e.to_string())
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- item 16: the endpoint under a client that never reads --------------------------------

#[test]
fn a_client_that_pipelines_and_never_reads_does_not_stall_other_scrapes() {
    let tmp = temp_dir("pipeline");
    let dir = tmp.path();
    let file = snapshot_file(dir, "s.json");
    let served = Served::start("", &file);

    // Thousands of pipelined scrapes whose responses (tens of KiB each) are never read: the
    // server's writes to this client block once the socket buffers are full.
    let hog = TcpStream::connect(served.addr).expect("connect");
    hog.set_write_timeout(Some(HANG)).unwrap();
    let writer = {
        let mut hog = hog.try_clone().unwrap();
        std::thread::spawn(move || {
            let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
            for _ in 0..20_000 {
                if hog.write_all(request).is_err() {
                    break;
                }
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1));

    // Meanwhile another scraper is served.
    let body = served
        .scrape(Duration::from_secs(10))
        .expect("a scrape succeeds while another client never reads");
    assert!(body.contains("temporal_slab_class_allocs_total"), "{body}");
    drop(served); // kills the server, which ends the writer's blocked write
    let _ = hog.shutdown(std::net::Shutdown::Both);
    writer.join().unwrap();
}

// ---- item 17: descriptor exhaustion --------------------------------------------------------

#[test]
fn idle_connections_past_the_fd_limit_leave_the_endpoint_serving() {
    let tmp = temp_dir("fdlimit");
    let dir = tmp.path();
    let file = snapshot_file(dir, "s.json");
    let mut served = Served::start("ulimit -n 64 &&", &file);

    // More idle connections than the server has descriptors: accepts fail with EMFILE (the
    // rest wait in the listen backlog, or time out connecting).
    let idle: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect_timeout(&served.addr, Duration::from_secs(2)).ok())
        .collect();
    assert!(idle.len() > 64, "only {} connections opened", idle.len());
    std::thread::sleep(Duration::from_secs(2));
    assert!(served.alive(), "tslab serve died: {}", served.stderr());
    drop(idle);

    // Once descriptors are free again, scrapes succeed.
    let deadline = Instant::now() + HANG;
    let body = loop {
        match served.scrape(Duration::from_secs(10)) {
            Ok(body) => break body,
            Err(e) if Instant::now() > deadline => {
                panic!(
                    "no scrape succeeded after the idle connections closed: {e}\n{}",
                    served.stderr()
                )
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    assert!(body.contains("temporal_slab_class_allocs_total"));
    assert!(served.alive(), "tslab serve died: {}", served.stderr());
    let err = served.stderr();
    assert!(
        err.contains("cannot accept a connection"),
        "the test never exhausted the server's descriptors: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn idle_connections_at_the_connection_cap_do_not_lock_scrapers_out() {
    let tmp = temp_dir("idle-cap");
    let dir = tmp.path();
    let file = snapshot_file(dir, "s.json");
    let served = Served::start("", &file);
    // Twice the cap (64) of connections that never send a request, all held open.
    let idle: Vec<TcpStream> = (0..128)
        .filter_map(|_| TcpStream::connect_timeout(&served.addr, Duration::from_secs(2)).ok())
        .collect();
    assert_eq!(idle.len(), 128);
    std::thread::sleep(Duration::from_millis(500));
    // A scraper takes the place of the connection idle longest.
    let body = served
        .scrape(Duration::from_secs(10))
        .expect("a scrape succeeds while idle connections fill the cap");
    assert!(body.contains("temporal_slab_class_allocs_total"));
    drop(idle);
}

// ---- item 18: unbounded inputs -------------------------------------------------------------

/// Runs `tslab` with `args` (stdin from `stdin`) and returns its output and peak RSS (KiB),
/// failing after [`HANG`].
// The child is reaped by `wait4` (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn run_measured(args: &[&str], stdin: Stdio) -> (Output, i64) {
    let mut child = tslab()
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let (out, err) = (read(Box::new(out)), read(Box::new(err)));
    let deadline = Instant::now() + HANG;
    let (status, maxrss) = loop {
        let mut status = 0;
        // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our own unreaped child; `status` and `usage` are valid for writes.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(r >= 0, "wait4: {}", std::io::Error::last_os_error());
        if r == pid {
            break (status, usage.ru_maxrss);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tslab {args:?}: still running after {HANG:?} (killed)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    let output = Output {
        status: std::os::unix::process::ExitStatusExt::from_raw(status),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    assert_eq!(output.status.code(), Some(code));
    (output, maxrss)
}

#[test]
fn endless_and_blocking_inputs_are_refused_with_bounded_memory() {
    // Far above the 64 MiB bound's worst case (a doubled buffer), far below unbounded growth.
    const RSS_BOUND_KIB: i64 = 400 * 1024;

    let (o, rss) = run_measured(&["stats", "/dev/zero"], Stdio::null());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("/dev/zero: not a regular file"),
        "{}",
        stderr(&o)
    );
    assert!(rss < RSS_BOUND_KIB, "stats /dev/zero peaked at {rss} KiB");

    let mut yes = Command::new("yes")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn yes");
    let (o, rss) = run_measured(&["stats", "-"], Stdio::from(yes.stdout.take().unwrap()));
    let _ = yes.kill();
    let _ = yes.wait();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        stderr(&o).trim_end(),
        "tslab: standard input: input larger than 67108864 bytes"
    );
    assert!(rss < RSS_BOUND_KIB, "yes | stats - peaked at {rss} KiB");

    // A symbolic link is not followed, even to a good snapshot.
    let tmp = temp_dir("symlink");
    let dir = tmp.path();
    let target = snapshot_file(dir, "real.json");
    let link = dir.join("link.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let (o, _) = run_measured(&["stats", link.to_str().unwrap()], Stdio::null());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("symbolic link"), "{}", stderr(&o));

    // A FIFO without a writer: opening it must not block, and it is refused.
    let tmp = temp_dir("fifo");
    let dir = tmp.path();
    let fifo = dir.join("snap.json");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for args in [
        &["stats", fifo.to_str().unwrap()][..],
        &["validate", fifo.to_str().unwrap()][..],
        &[
            "demo",
            "--listen",
            "none",
            "--corpus",
            fifo.to_str().unwrap(),
        ][..],
    ] {
        let (o, _) = run_measured(args, Stdio::null());
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("not a regular file (fifo)"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn standard_input_that_never_sends_times_out() {
    // A writer that holds the pipe open and never writes: the read gives up after
    // STDIN_IDLE_TIMEOUT (30 s) instead of waiting for ever.
    let mut silent = Command::new("sleep")
        .arg("300")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn sleep");
    let (o, _) = run_measured(&["stats", "-"], Stdio::from(silent.stdout.take().unwrap()));
    let _ = silent.kill();
    let _ = silent.wait();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        stderr(&o).trim_end(),
        "tslab: standard input: no input for 30s (timed out)"
    );
}

// ---- item 19: diff thresholds --------------------------------------------------------------

#[test]
fn diff_refuses_thresholds_that_are_not_finite_or_are_negative() {
    let tmp = temp_dir("threshold");
    let dir = tmp.path();
    let snap = common::snapshot();
    let before = dir.join("before.json");
    std::fs::write(&before, snap.to_json_pretty()).unwrap();
    // A 10x RSS regression.
    let mut worse = snap.clone();
    worse.rss_bytes = snap.rss_bytes.max(1) * 10;
    let after = dir.join("after.json");
    std::fs::write(&after, worse.to_json_pretty()).unwrap();
    let (b, a) = (before.to_str().unwrap(), after.to_str().unwrap());
    for bad in ["nan", "NaN", "inf", "-inf", "infinity", "-1", "-0.5", "ten"] {
        let o = output_within(tslab().args(["diff", "--threshold", bad, b, a]), "diff");
        assert_eq!(
            o.status.code(),
            Some(2),
            "--threshold {bad}: {}",
            stderr(&o)
        );
        let err = stderr(&o);
        assert_eq!(
            err.lines().count(),
            1,
            "--threshold {bad}: one line, got {err:?}"
        );
        assert!(err.contains("--threshold"), "{err}");
        assert!(stdout(&o).is_empty());
    }
    // Valid thresholds still work: 0 flags the regression, identical snapshots pass.
    let o = output_within(tslab().args(["diff", "--threshold", "0", b, a]), "diff");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let o = output_within(tslab().args(["diff", "--threshold", "0", b, b]), "diff");
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

// ---- item 20: output files -----------------------------------------------------------------

#[test]
fn demo_json_out_is_checked_before_the_work_and_written_atomically() {
    let o = output_within(
        tslab().args([
            "demo",
            "--listen",
            "none",
            "--requests",
            "2000",
            "--json-out",
            "/nonexistent/x.json",
        ]),
        "demo",
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(
        err.lines().count(),
        1,
        "one line, no status line of a run: {err:?}"
    );
    assert!(err.contains("/nonexistent/x.json"), "{err}");
    assert!(stdout(&o).is_empty(), "no report of a run: {}", stdout(&o));

    // A run that succeeds leaves the snapshot and nothing else (no temporary file).
    let tmp = temp_dir("json-out");
    let dir = tmp.path();
    let out = dir.join("final.json");
    let o = output_within(
        tslab()
            .args(["demo", "--listen", "none", "--quiet", "--requests", "500"])
            .arg("--json-out")
            .arg(&out),
        "demo",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["final.json"]);
    tslab::Snapshot::from_json(&std::fs::read_to_string(&out).unwrap(), "final").unwrap();
}

#[test]
fn demo_prints_its_report_when_the_final_json_out_write_fails() {
    let tmp = temp_dir("json-out-gone");
    let dir = tmp.path();
    let sub = dir.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let out = sub.join("final.json");
    let mut child = tslab()
        .args(["demo", "--listen", "none", "--duration", "5s"])
        .arg("--json-out")
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The status line says the run started; take the directory away under it.
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    assert!(first.starts_with("tslab demo:"), "{first}");
    std::fs::remove_dir_all(&sub).unwrap();
    let reader = {
        let mut so = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut so, &mut s);
            let mut e = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut e);
            (s, e)
        })
    };
    let status = wait_or_kill(&mut child, HANG, "demo");
    let (report, rest) = reader.join().unwrap();
    assert_eq!(status.code(), Some(2), "{rest}");
    assert!(
        report.contains("requests"),
        "the report is printed: {report:?}"
    );
    assert!(report.contains("NOT WRITTEN"), "{report}");
    assert!(
        rest.contains("final.json"),
        "the error names the file: {rest}"
    );
}

// ---- messages ------------------------------------------------------------------------------

#[test]
fn errors_quote_at_most_a_bounded_excerpt_of_user_data() {
    let tmp = temp_dir("long-quote");
    let dir = tmp.path();
    let mut v = serde_json::to_value(common::snapshot()).unwrap();
    let huge = format!("{}\n{}", "x".repeat(5 << 20), "y".repeat(5 << 20));
    v["pid"] = serde_json::json!(huge.clone());
    let wrong_type = dir.join("wrong-type.json");
    std::fs::write(&wrong_type, v.to_string()).unwrap();
    let mut v = serde_json::to_value(common::snapshot()).unwrap();
    v["epochs"][0]["label"] = serde_json::json!(huge);
    let long_label = dir.join("long-label.json");
    std::fs::write(&long_label, v.to_string()).unwrap();
    let w = wrong_type.to_str().unwrap();
    let l = long_label.to_str().unwrap();
    for args in [
        &["stats", w][..],
        &["validate", w][..],
        &["validate", l][..],
        &["validate", "--json", l][..],
    ] {
        let o = output_within(tslab().args(args), "tslab");
        assert!(!o.status.success(), "{args:?}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{args:?}: one line");
        assert!(err.len() < 2048, "{args:?}: a {}-byte message", err.len());
        assert!(
            err.contains("more bytes"),
            "{args:?}: says it was cut: {err}"
        );
        assert!(
            stdout(&o).len() < 4096,
            "{args:?}: {} bytes out",
            o.stdout.len()
        );
    }
}

#[test]
fn a_failed_write_to_standard_output_is_named_so() {
    let tmp = temp_dir("stdout-full");
    let dir = tmp.path();
    let file = snapshot_file(dir, "s.json");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let mut child = tslab()
        .args(["stats", &file])
        .stdout(full)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let status = wait_or_kill(&mut child, HANG, "stats");
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.starts_with("tslab: standard output: "), "{err}");
}

#[test]
fn validate_json_prints_a_verdict_on_bad_input() {
    let tmp = temp_dir("verdict");
    let dir = tmp.path();
    let malformed = dir.join("malformed.json");
    std::fs::write(&malformed, "{\"schema_version\": 1, \"pid\": ").unwrap();
    let m = malformed.to_str().unwrap();
    let cases: [(&str, i32); 3] = [(m, 1), ("/dev/zero", 2), ("/nonexistent/s.json", 2)];
    for (source, code) in cases {
        let o = output_within(tslab().args(["validate", "--json", source]), "validate");
        assert_eq!(o.status.code(), Some(code), "{source}: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{source}: no JSON verdict ({e}): {}", stdout(&o)));
        assert_eq!(v["ok"], false, "{v}");
        assert_eq!(v["valid"], false, "{v}");
        assert!(v["error"].as_str().unwrap().contains(source), "{v}");
    }
    let good = snapshot_file(dir, "good.json");
    let o = output_within(tslab().args(["validate", "--json", &good]), "validate");
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true);
}

#[test]
fn class_counter_sums_saturate_instead_of_wrapping() {
    let tmp = temp_dir("saturate");
    let dir = tmp.path();
    let mut v = serde_json::to_value(common::snapshot()).unwrap();
    for class in v["classes"].as_array_mut().unwrap().iter_mut().take(3) {
        for field in [
            "allocs",
            "slow_path_hits",
            "madvise_failures",
            "madvise_bytes",
            "lock_fast_acquire",
            "lock_contended",
            "new_slab_count",
            "cache_reuses",
            "total_partial_slabs",
        ] {
            class[field] = serde_json::json!(u64::MAX - 1);
        }
    }
    let path = dir.join("huge.json");
    std::fs::write(&path, v.to_string()).unwrap();
    let p = path.to_str().unwrap();
    let o = output_within(tslab().args(["stats", "--json", p]), "stats");
    assert!(o.status.success(), "{}", stderr(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for field in [
        "allocs",
        "slow_path_hits",
        "madvise_failures",
        "madvise_bytes",
        "partial_slabs",
    ] {
        assert_eq!(s[field].as_u64(), Some(u64::MAX), "{field}: {}", s[field]);
    }
    for args in [
        &["export", "prometheus", p][..],
        &["top", "--classes", "--by", "lock_contended", p][..],
        &["diff", p, p][..],
    ] {
        let o = output_within(tslab().args(args), "tslab");
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{args:?}");
    }
}
