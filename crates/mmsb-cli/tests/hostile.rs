//! The `mmsb` binary under hostile input and faults: one regression test per finding of the
//! hostile review, each through the real binary, named as the claim it checks. See
//! `docs/failure-model/mmsb.md`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use mmsb::tlog::Durability;
use mmsb::{Config, EdgeKind, Mmsb, passthrough};

fn mmsb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmsb"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} / {}",
            String::from_utf8_lossy(&out.stdout),
            stderr(out)
        )
    })
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A log with 3 pages (one derived) and 40 commits in several small segments.
fn make_log(dir: &Path, first_byte: u8) {
    let mut c = Config::new(dir).durability(Durability::Flush);
    c.segment_bytes = 4096;
    let mut m = Mmsb::start(c).unwrap();
    let a = m.create_page(512).unwrap();
    let b = m.create_page(512).unwrap();
    m.add_dependency(a, b, EdgeKind::Data).unwrap();
    m.register_recompute(b, passthrough()).unwrap();
    let c2 = m.create_page(64).unwrap();
    for i in 0..40u8 {
        m.write_range(a, usize::from(i) * 7, &[first_byte.wrapping_add(i); 9])
            .unwrap();
        m.write_range(c2, usize::from(i), &[i + 1]).unwrap();
    }
    // The last commit is a batch: two delta frames closed by a COMMIT frame.
    m.begin_batch().unwrap();
    m.write_range(c2, 50, b"xyz").unwrap();
    m.write_range(c2, 54, b"uvw").unwrap();
    m.commit().unwrap();
    m.stop().unwrap();
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tlog"))
        .collect();
    v.sort();
    v
}

fn checkpoints(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ckpt"))
        .collect();
    v.sort();
    v
}

/// Every file name in `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let bytes = if e.file_type().unwrap().is_file() {
                fs::read(e.path()).unwrap()
            } else {
                Vec::new()
            };
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect()
}

fn flip(path: &Path, from_end: usize) {
    let mut b = fs::read(path).unwrap();
    let at = b.len() - from_end;
    b[at] ^= 0x20;
    fs::write(path, &b).unwrap();
}

// Item 1 ------------------------------------------------------------------------------------

#[test]
fn checkpoint_refuses_log_with_damaged_tail() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    make_log(&log, 1);
    // A byte of the last COMMIT frame (the last 44 bytes of the last segment).
    let last = segments(&log).pop().unwrap();
    flip(&last, 10);
    let before = snapshot(&log);
    let v = mmsb(&["log", "verify", s(&log)]);
    assert_eq!(v.status.code(), Some(1), "{}", stderr(&v));
    let out = mmsb(&["checkpoint", s(&log)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("damaged frame"), "{}", stderr(&out));
    assert_eq!(snapshot(&log), before, "checkpoint changed a damaged log");
    // The evidence is still there.
    assert_eq!(mmsb(&["log", "verify", s(&log)]).status.code(), Some(1));
    // Readers give the same verdict.
    for cmd in [vec!["stats", s(&log)], vec!["diff", s(&log), s(&log)]] {
        let o = mmsb(&cmd);
        assert_eq!(o.status.code(), Some(2), "{cmd:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("damaged frame"),
            "{cmd:?}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn checkpoint_reports_the_torn_tail_it_discards() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    make_log(&log, 1);
    let last = segments(&log).pop().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    // Cut into the last frame: indistinguishable from a write that stopped.
    fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 20)
        .unwrap();
    let st = mmsb(&["stats", s(&log), "--json"]);
    assert_eq!(st.status.code(), Some(0), "{}", stderr(&st));
    assert!(
        stderr(&st).contains("ignored"),
        "stats is silent: {}",
        stderr(&st)
    );
    assert!(
        json(&st)["notes"]["ignored_tail"]["bytes"]
            .as_u64()
            .unwrap()
            > 0
    );
    let out = mmsb(&["checkpoint", s(&log), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("discarded"),
        "silent cut: {}",
        stderr(&out)
    );
    let v = json(&out);
    let t = &v["recovery"]["discarded_tail"];
    assert_eq!(
        t["frames"], 2,
        "the two delta frames of the batch whose COMMIT was cut: {v}"
    );
    assert!(t["bytes"].as_u64().unwrap() > 20);
}

// Item 2 ------------------------------------------------------------------------------------

#[test]
fn verify_fails_when_the_pruned_log_has_only_damaged_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    make_log(&log, 1);
    let out = mmsb(&["checkpoint", s(&log), "--prune"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        segments(&log)[0].file_name().unwrap() != "00000000000000000001.tlog",
        "pruned"
    );
    assert_eq!(mmsb(&["log", "verify", s(&log)]).status.code(), Some(0));
    for c in checkpoints(&log) {
        flip(&c, 30);
    }
    let v = mmsb(&["log", "verify", s(&log), "--json"]);
    assert_eq!(v.status.code(), Some(1), "{}", stderr(&v));
    let j = json(&v);
    assert_eq!(j["ok"], false);
    assert!(
        j["unrecoverable"].as_str().unwrap().contains("pruned"),
        "{j}"
    );
    assert_eq!(j["checkpoints"][0]["ok"], false);
    // Readers say the same.
    let st = mmsb(&["stats", s(&log)]);
    assert_eq!(st.status.code(), Some(2));
    assert!(
        stderr(&st).contains("state unrecoverable"),
        "{}",
        stderr(&st)
    );
}

// Item 3 ------------------------------------------------------------------------------------

#[test]
fn replay_refuses_a_live_log_as_out_and_foreign_checkpoints_are_never_used() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let other = dir.path().join("other");
    make_log(&live, 1);
    make_log(&other, 100);
    for extra in 0..3u8 {
        // More frames in the other log, so its checkpoint lies past the end of `live`.
        let mut m = Mmsb::start(Config::new(&other)).unwrap();
        m.write_range(mmsb::PageId(3), 60, &[extra]).unwrap();
        m.stop().unwrap();
    }
    let before = snapshot(&live);
    let out = mmsb(&["replay", s(&other), "--to-lsn", "100", "--out", s(&live)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("log directory"), "{}", stderr(&out));
    assert_eq!(snapshot(&live), before, "replay wrote into a live log");
    // A checkpoint of the other log copied in by hand: readers and the writer both ignore it.
    let o = mmsb(&["checkpoint", s(&other)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let foreign = checkpoints(&other).pop().unwrap();
    fs::copy(&foreign, live.join(foreign.file_name().unwrap())).unwrap();
    let st = mmsb(&["stats", s(&live), "--json"]);
    assert_eq!(st.status.code(), Some(0), "{}", stderr(&st));
    assert!(stderr(&st).contains("belongs to"), "{}", stderr(&st));
    let reader = json(&st);
    let own = mmsb(&["checkpoint", s(&live), "--json"]);
    assert!(own.status.success(), "{}", stderr(&own));
    assert!(stderr(&own).contains("belongs to"), "{}", stderr(&own));
    let writer = json(&own);
    assert_eq!(
        reader["last_lsn"], writer["lsn"],
        "reader and writer disagree"
    );
    let d = mmsb(&["diff", s(&live), writer["path"].as_str().unwrap()]);
    assert_eq!(d.status.code(), Some(0), "{}", stderr(&d));
}

// Item 4 ------------------------------------------------------------------------------------

#[test]
fn replay_after_prune_starts_from_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    make_log(&log, 1);
    let o = mmsb(&["checkpoint", s(&log), "--prune", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ck = json(&o)["lsn"].as_u64().unwrap();
    let r = dir.path().join("r");
    let out = mmsb(&["replay", s(&log), "--out", s(&r)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let d = mmsb(&["diff", s(&r), s(&log)]);
    assert_eq!(d.status.code(), Some(0), "{}", stderr(&d));
    // A target below the checkpoint, whose log was pruned: a clear error naming the range.
    let low = mmsb(&[
        "replay",
        s(&log),
        "--to-lsn",
        &(ck / 2).to_string(),
        "--out",
        s(&dir.path().join("low")),
    ]);
    assert_eq!(low.status.code(), Some(2));
    assert!(
        stderr(&low).contains("pruned") && stderr(&low).contains("LSN 1..="),
        "{}",
        stderr(&low)
    );
}

// Item 5 ------------------------------------------------------------------------------------

#[test]
fn commands_refuse_a_directory_that_is_not_a_log_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    fs::create_dir(&etc).unwrap();
    fs::write(etc.join("passwd"), b"root:x:0:0\n").unwrap();
    fs::write(etc.join("hosts"), b"127.0.0.1 localhost\n").unwrap();
    let before = snapshot(&etc);
    for cmd in [
        vec!["log", "verify", s(&etc)],
        vec!["checkpoint", s(&etc)],
        vec!["stats", s(&etc)],
        vec!["log", "inspect", s(&etc)],
    ] {
        let o = mmsb(&cmd);
        assert_eq!(o.status.code(), Some(2), "{cmd:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("not an mmsb log directory"),
            "{cmd:?}: {}",
            stderr(&o)
        );
        assert_eq!(stderr(&o).lines().count(), 1);
    }
    assert_eq!(
        snapshot(&etc),
        before,
        "a command wrote into a non-log directory"
    );
    // An empty directory is not a log for `checkpoint` either: it creates nothing.
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    assert_eq!(mmsb(&["checkpoint", s(&empty)]).status.code(), Some(2));
    assert!(snapshot(&empty).is_empty());
    // A file given as the output directory.
    let file = dir.path().join("file");
    fs::write(&file, b"x").unwrap();
    let log = dir.path().join("log");
    make_log(&log, 1);
    let o = mmsb(&["replay", s(&log), "--out", s(&file)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is not a directory"), "{}", stderr(&o));
}

#[test]
fn diff_of_different_page_sets_exits_1_listing_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    {
        let mut m = Mmsb::start(Config::new(&log)).unwrap();
        let a = m.create_page(64).unwrap();
        m.write_range(a, 0, b"one").unwrap();
        m.stop().unwrap();
    }
    let early = dir.path().join("early");
    let o = mmsb(&["replay", s(&log), "--out", s(&early)]);
    assert!(o.status.success(), "{}", stderr(&o));
    {
        let mut m = Mmsb::start(Config::new(&log)).unwrap();
        let b = m.create_page(32).unwrap();
        m.write_range(b, 0, b"two").unwrap();
        m.stop().unwrap();
    }
    let out = mmsb(&["diff", s(&early), s(&log), "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["only_in_b"], serde_json::json!([2]), "{v}");
    assert_eq!(v["only_in_a_count"], 0);
    let text = mmsb(&["diff", s(&early), s(&log)]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("pages only in b (1): 2"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
}

// Item 6 ------------------------------------------------------------------------------------

/// A real editing trace: `$SHARED_DATA_DIR`, else `../shared/data` beside the workspace.
fn trace_file() -> PathBuf {
    std::env::var_os("SHARED_DATA_DIR")
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
            PathBuf::from,
        )
        .join("editing-traces/automerge-paper.json.gz")
}

fn trace_dirs(tmp: &Path) -> Vec<PathBuf> {
    fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("mmsb-trace-"))
        })
        .collect()
}

#[test]
fn trace_interrupted_by_sigterm_removes_its_temporary_log() {
    if !trace_file().exists() {
        assert_ne!(
            std::env::var("REQUIRE_SHARED_DATA").as_deref(),
            Ok("1"),
            "REQUIRE_SHARED_DATA=1 but {} is missing",
            trace_file().display()
        );
        eprintln!(
            "skipped: {} missing (set SHARED_DATA_DIR)",
            trace_file().display()
        );
        return;
    }
    for (sig, code) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        let tmp = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_mmsb"))
            .args(["trace", s(&trace_file()), "--checkpoint-every", "1"])
            .env("TMPDIR", tmp.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the run has its log directory and has written into it.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let dirs = trace_dirs(tmp.path());
            if dirs.iter().any(|d| !checkpoints(d).is_empty()) {
                break;
            }
            assert!(Instant::now() < deadline, "the trace run never started");
            assert!(child.try_wait().unwrap().is_none(), "ended early");
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = i32::try_from(child.id()).unwrap();
        // SAFETY: `pid` is our child, not yet waited for, so the id is not reused.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("mmsb trace did not stop after the signal");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(code), "{err}");
        assert!(err.contains("interrupted"), "{err}");
        assert!(
            trace_dirs(tmp.path()).is_empty(),
            "the temporary log directory is left behind"
        );
    }
}

#[test]
fn trace_with_checkpoint_every_keeps_only_the_newest_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let out = mmsb(&["trace", "--log", s(&log), "--checkpoint-every", "5"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let n = checkpoints(&log).len();
    assert!(
        n <= 2,
        "{n} checkpoints kept (the newest and the mid-trace one at most)"
    );
}

/// A gzip file of a few MB whose one insert decompresses to more than 1 GiB: built from one
/// deflate block of 1 MiB of 'a' (full flush: no reference to earlier data) repeated, so the
/// test does not compress a gigabyte. It has no gzip trailer: a reader that gets to the end has
/// already failed the test.
fn gzip_bomb(path: &Path) {
    use flate2::{Compress, Compression, FlushCompress};
    let mut c = Compress::new(Compression::best(), false);
    let mut deflate = |input: &[u8]| {
        let mut out = Vec::with_capacity(input.len() + 1024);
        c.compress_vec(input, &mut out, FlushCompress::Full)
            .unwrap();
        out
    };
    let head = deflate(br#"{"startContent":"","endContent":"","txns":[{"patches":[[0,0,""#);
    let block = deflate(&vec![b'a'; 1 << 20]);
    let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    gz.extend_from_slice(&head);
    for _ in 0..1100 {
        gz.extend_from_slice(&block);
    }
    fs::write(path, gz).unwrap();
}

#[test]
fn hostile_gzip_trace_is_refused_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.json.gz");
    gzip_bomb(&bomb);
    assert!(fs::metadata(&bomb).unwrap().len() < 8 << 20);
    let child = Command::new(env!("CARGO_BIN_EXE_mmsb"))
        .args(["trace", s(&bomb)])
        .env("TMPDIR", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    let mut status = 0;
    // SAFETY: an all-zero `rusage` is valid; `wait4` fills it for our child `pid`, which we
    // have not waited for (the `Child` is forgotten so that it does not wait again).
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to locals; `pid` is our unwaited child.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    std::mem::forget(child);
    assert_eq!(r, pid);
    assert!(libc::WIFEXITED(status), "killed by a signal: {status}");
    assert_eq!(libc::WEXITSTATUS(status), 2, "not refused as input");
    let peak_mib = ru.ru_maxrss / 1024;
    assert!(peak_mib < 512, "peak RSS {peak_mib} MiB");
    let out = mmsb(&["trace", s(&bomb)]);
    assert!(stderr(&out).contains("too large"), "{}", stderr(&out));
}

// Messages (issue items 20 and "messages") -------------------------------------------------

#[test]
fn trace_with_an_unwritable_out_fails_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let out = mmsb(&[
        "trace",
        "--log",
        s(&log),
        "--out",
        "/nonexistent-mmsb-dir/doc.txt",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot write here"),
        "{}",
        stderr(&out)
    );
    assert!(
        !log.exists(),
        "the run started although the output is unwritable"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn errors_are_one_bounded_line_without_a_doubled_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let huge = "7".repeat(100_000);
    let epoch = format!("x{huge}");
    let o = mmsb(&[
        "replay",
        s(dir.path()),
        "--to-epoch",
        &epoch,
        "--out",
        "/tmp/x",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{}", &e[..200.min(e.len())]);
    assert!(e.len() < 4096, "a {}-byte message", e.len());
    // A bus error inside `trace`: its log directory cannot be created.
    let o = mmsb(&["trace", "--log", "/proc/self/mmsb-log"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with("mmsb: /proc/self/mmsb-log"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("mmsb: mmsb:"), "{}", stderr(&o));
    let cp = mmsb(&["checkpoint", s(&dir.path().join("missing"))]);
    assert!(!stderr(&cp).contains("mmsb: mmsb:"), "{}", stderr(&cp));
}
