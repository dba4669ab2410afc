//! The `datahub` binary end to end, as real processes: pub/sub round trips in both start
//! orders, inspection of a live block (with `promtool check metrics`), exit codes and one-line
//! errors, refusal of hostile file names and bad digests, and a consumer killed mid-stream that
//! is diagnosed, recovered and replaced.

mod common;

#[allow(dead_code)]
#[path = "../src/frame.rs"]
mod frame;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Block, DEADLINE, Proc, blake2b, noise, run, wait_for_block, write_file};
use datahub::{ChecksumPolicy, Config, Consumer, Expectations, Policy, Producer};
use serde_json::Value;

const T: Duration = Duration::from_secs(10);

/// Three files: one spanning hundreds of 4 KiB slots, one empty, one small.
fn sample_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let files = vec![
        ("big.bin".to_owned(), noise(900_000, 1)),
        ("empty".to_owned(), Vec::new()),
        ("notes.txt".to_owned(), b"hello\nworld\n".to_vec()),
    ];
    for (name, bytes) in &files {
        write_file(dir, name, bytes);
    }
    files
}

fn paths(dir: &Path, files: &[(String, Vec<u8>)]) -> Vec<String> {
    files
        .iter()
        .map(|(n, _)| dir.join(n).to_str().unwrap().to_owned())
        .collect()
}

/// Checks that `out` holds exactly `files`, and that both summaries list their digests.
fn assert_received(out: &Path, files: &[(String, Vec<u8>)], pub_json: &Value, sub_json: &Value) {
    for (i, (name, bytes)) in files.iter().enumerate() {
        let got = std::fs::read(out.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got.len(), bytes.len(), "{name}: length");
        assert!(got == *bytes, "{name}: content differs");
        let want = blake2b(bytes);
        assert_eq!(pub_json["files"][i]["name"], name.as_str());
        assert_eq!(
            pub_json["files"][i]["blake2b"],
            want.as_str(),
            "{name}: pub digest"
        );
        assert_eq!(
            sub_json["files"][i]["blake2b"],
            want.as_str(),
            "{name}: sub digest"
        );
        assert_eq!(sub_json["files"][i]["bytes"], bytes.len() as u64);
    }
    assert_eq!(sub_json["files"].as_array().unwrap().len(), files.len());
    let mut names: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut want: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    want.sort();
    assert_eq!(names, want, "no partial or journal files are left behind");
}

fn round_trip(sub_first: bool) {
    let block = Block::new(if sub_first {
        "rt-sub-first"
    } else {
        "rt-pub-first"
    });
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let out = dir.path().join("out");
    std::fs::create_dir(&src).unwrap();
    let files = sample_files(&src);
    let out_s = out.to_str().unwrap();
    let mut pub_args = vec![
        "pub",
        block.name(),
        "--slot-size",
        "4096",
        "--slots",
        "4",
        "--json",
    ];
    let p = paths(&src, &files);
    pub_args.extend(p.iter().map(String::as_str));
    let sub_args = ["sub", block.name(), "--out", out_s, "--json"];
    let (publisher, subscriber) = if sub_first {
        let s = Proc::spawn(&sub_args);
        std::thread::sleep(Duration::from_millis(100)); // the sub waits for the block
        (Proc::spawn(&pub_args), s)
    } else {
        let p = Proc::spawn(&pub_args);
        wait_for_block(block.name()); // the pub waits for a consumer
        (p, Proc::spawn(&sub_args))
    };
    let s = subscriber.finish(DEADLINE).expect(0, "sub");
    let p = publisher.finish(DEADLINE).expect(0, "pub");
    let pj = p.json();
    assert_eq!(pj["policy"], "sequential");
    // FILE_START + FILE_END per file, plus ceil(len / (4096 - 24)) DATA messages.
    let data: u64 = files
        .iter()
        .map(|(_, b)| b.len().div_ceil(4096 - frame::HEADER_LEN) as u64)
        .sum();
    assert_eq!(pj["messages"], 2 * files.len() as u64 + data);
    assert!(data > 200, "the big file spans many slots");
    assert_received(&out, &files, &pj, &s.json());
    assert!(
        !Path::new("/dev/shm").join(block.name()).exists(),
        "pub removes its block when done"
    );
}

#[test]
fn files_round_trip_when_sub_starts_first() {
    round_trip(true);
}

#[test]
fn files_round_trip_when_pub_starts_first() {
    round_trip(false);
}

#[test]
fn stdin_streams_to_stdout() {
    let block = Block::new("stdio");
    let input = noise(300_000, 7);
    let sub = Proc::spawn(&["sub", block.name()]);
    let publisher = Proc::spawn_with_stdin(
        &[
            "pub",
            block.name(),
            "--slot-size",
            "1024",
            "--checksum",
            "none",
            "--json",
        ],
        input.clone(),
    );
    let s = sub.finish(DEADLINE).expect(0, "sub");
    let p = publisher.finish(DEADLINE).expect(0, "pub");
    assert!(
        s.stdout == input,
        "stdout carries the bytes ({} of {})",
        s.stdout.len(),
        input.len()
    );
    assert_eq!(p.json()["files"][0]["name"], "");
    assert_eq!(p.json()["files"][0]["blake2b"], blake2b(&input).as_str());
}

#[test]
fn sequential_sync_gives_every_consumer_every_file() {
    let block = Block::new("sync");
    let dir = tempfile::tempdir().unwrap();
    let files = [
        ("a.bin".to_owned(), noise(100_000, 3)),
        ("b.txt".to_owned(), b"b".to_vec()),
    ];
    let p = paths(dir.path(), &files);
    for (n, b) in &files {
        write_file(dir.path(), n, b);
    }
    let mut args = vec![
        "pub",
        block.name(),
        "--consumers",
        "2",
        "--slot-size",
        "2048",
        "--slots",
        "4",
        "--json",
    ];
    args.extend(p.iter().map(String::as_str));
    let publisher = Proc::spawn(&args);
    wait_for_block(block.name());
    let info = run(&["inspect", block.name(), "--json"])
        .expect(0, "inspect")
        .json();
    assert_eq!(info["policy"], "sequential_sync");
    assert_eq!(info["max_consumers"], 2);
    let outs = [dir.path().join("o1"), dir.path().join("o2")];
    let subs: Vec<Proc> = outs
        .iter()
        .map(|o| Proc::spawn(&["sub", block.name(), "--out", o.to_str().unwrap(), "--json"]))
        .collect();
    let sums: Vec<Value> = subs
        .into_iter()
        .map(|s| s.finish(DEADLINE).expect(0, "sub").json())
        .collect();
    let pj = publisher.finish(DEADLINE).expect(0, "pub").json();
    for (o, sj) in outs.iter().zip(&sums) {
        assert_received(o, &files, &pj, sj);
    }
}

fn promtool_check(text: &str) {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("REQUIRE_PROMETHEUS").is_ok_and(|v| v == "1") {
            panic!(
                "promtool not found and REQUIRE_PROMETHEUS=1: install Debian's prometheus package"
            );
        }
        eprintln!("note: promtool not found; skipping `promtool check metrics`");
        return;
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success() && o.stdout.is_empty() && o.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn inspect_shows_a_handed_over_blocks_successor_and_the_successors_first_seq() {
    let old = Block::new("ho-old");
    let new = Block::new("ho-new");
    let cfg = Config::new(Policy::SequentialSync)
        .slot_size(64)
        .slot_count(4);
    let mut p = Producer::create(old.name(), cfg.clone()).unwrap();
    let _c = Consumer::attach(old.name(), Expectations::new()).unwrap();
    for m in [&b"one"[..], b"two"] {
        p.send(m, T).unwrap();
    }
    p.handover(new.name(), cfg.slot_size(128)).unwrap();
    let info = run(&["inspect", old.name(), "--json"])
        .expect(0, "inspect old")
        .json();
    assert_eq!(info["successor"], new.name());
    assert_eq!(
        (info["first_seq"].as_u64(), info["end_of_stream"].as_u64()),
        (Some(0), Some(2))
    );
    let text = run(&["inspect", old.name()])
        .expect(0, "inspect text")
        .text();
    assert!(
        text.contains(&format!("handed over  to {:?} at seq 2", new.name())),
        "{text}"
    );
    let info = run(&["inspect", new.name(), "--json"])
        .expect(0, "inspect new")
        .json();
    assert_eq!(info["successor"], Value::Null);
    assert_eq!(info["first_seq"], 2);
    assert_eq!(info["commit_index"], 2);
    let text = run(&["inspect", new.name()])
        .expect(0, "inspect text")
        .text();
    assert!(
        text.contains("first seq 2") && !text.contains("handed over"),
        "{text}"
    );
}

#[test]
fn inspect_diagnose_metrics_and_validate_a_live_block() {
    let block = Block::new("live");
    let name = block.name();
    let config = Config::new(Policy::Sequential)
        .slot_size(256)
        .slot_count(4)
        .checksum(ChecksumPolicy::Enforced);
    let mut p = Producer::create(name, config).unwrap();
    let mut c = Consumer::attach(name, Expectations::new()).unwrap();
    for m in [&b"one"[..], b"two", b"three"] {
        p.send(m, T).unwrap();
    }
    for _ in 0..2 {
        c.read(T).unwrap().release().unwrap();
    }
    let me = std::process::id();

    let info = run(&["inspect", name, "--json"])
        .expect(0, "inspect")
        .json();
    assert_eq!(info["name"], name);
    assert_eq!(info["version"], "1.2");
    assert_eq!(info["policy"], "sequential");
    assert_eq!(info["checksum"], "enforced");
    assert_eq!(
        (info["slot_size"].as_u64(), info["slot_count"].as_u64()),
        (Some(256), Some(4))
    );
    assert_eq!(info["flex_zone_size"], 0);
    assert_eq!(info["layout_hash"].as_str().unwrap().len(), 16);
    assert_eq!(info["schema_version"], 0);
    assert!(info["regions"]["ring_offset"].as_u64().unwrap() >= 8192);
    assert_eq!(info["producer"]["pid"], me);
    assert_eq!(info["producer"]["alive"], true);
    assert_eq!(info["consumers"][0]["pid"], me);
    assert_eq!(info["consumers"][0]["position"], 2);
    assert_eq!(
        (info["write_index"].as_u64(), info["commit_index"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(info["end_of_stream"], Value::Null);
    let text = run(&["inspect", name]).expect(0, "inspect text").text();
    assert!(
        text.contains("policy       sequential") && text.contains("slots        4 x 256 bytes"),
        "{text}"
    );

    let d = run(&["diagnose", name, "--json"])
        .expect(0, "diagnose of a healthy block")
        .json();
    assert_eq!(d["problems"].as_array().unwrap().len(), 0);
    let slots = d["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 4);
    for (i, seq) in [
        (0, Value::from(0)),
        (1, 1.into()),
        (2, 2.into()),
        (3, Value::Null),
    ] {
        assert_eq!(slots[i]["seq"], seq, "slot {i}");
        assert_eq!(
            slots[i]["state"],
            if seq.is_null() { "free" } else { "committed" },
            "slot {i}"
        );
    }
    assert_eq!(slots[2]["len"], 5);
    let text = run(&["diagnose", name]).expect(0, "diagnose text").text();
    assert!(text.contains("no problems"), "{text}");

    let m = run(&["metrics", name, "--json"])
        .expect(0, "metrics")
        .json();
    assert_eq!(m["block"], name);
    assert_eq!(
        (m["slots_written"].as_u64(), m["slots_read"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(
        (m["bytes_written"].as_u64(), m["bytes_read"].as_u64()),
        (Some(11), Some(6))
    );
    assert_eq!(
        (m["consumers"].as_u64(), m["commit_index"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(m["checksums_verified"], 2);

    let prom = run(&["metrics", name, "--prometheus"])
        .expect(0, "metrics --prometheus")
        .text();
    for line in [
        format!("datahub_slot_writes_total{{block=\"{name}\"}} 3"),
        format!("datahub_slot_reads_total{{block=\"{name}\"}} 2"),
        format!("datahub_bytes_written_total{{block=\"{name}\"}} 11"),
        format!("datahub_bytes_read_total{{block=\"{name}\"}} 6"),
        format!("datahub_consumers{{block=\"{name}\"}} 1"),
        format!("datahub_commit_index{{block=\"{name}\"}} 3"),
        format!("datahub_producer_alive{{block=\"{name}\"}} 1"),
        "# TYPE datahub_slot_writes_total counter".to_owned(),
        "# TYPE datahub_consumers gauge".to_owned(),
    ] {
        assert!(
            prom.lines().any(|l| l == line),
            "missing {line:?} in\n{prom}"
        );
    }
    assert!(!prom.contains("# EOF"));
    promtool_check(&prom);
    let open = run(&["metrics", name, "--openmetrics"])
        .expect(0, "metrics --openmetrics")
        .text();
    assert!(open.ends_with("# EOF\n"));

    let list = run(&["list", "--json"]).expect(0, "list").json();
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .expect("listed");
    assert_eq!(
        (
            row["producer_pid"].as_u64(),
            row["producer_alive"].as_bool()
        ),
        (Some(me.into()), Some(true))
    );
    assert_eq!(
        (row["slots"].as_u64(), row["consumers"].as_u64()),
        (Some(4), Some(1))
    );
    assert!(run(&["list"]).expect(0, "list text").text().contains(name));

    let v = run(&["validate", name, "--json"])
        .expect(0, "validate of a healthy block")
        .json();
    assert_eq!(v["problems"].as_array().unwrap().len(), 0);
    assert!(
        run(&["validate", name])
            .expect(0, "validate text")
            .text()
            .contains("valid")
    );

    let r = run(&["recover", name, "--json"])
        .expect(0, "recover")
        .json();
    assert_eq!(
        r["actions"].as_array().unwrap().len(),
        0,
        "nothing to recover on a healthy block"
    );

    // Slot 2 holds a message the consumer has not read: the live producer owns it.
    let refused = run(&["reset-slot", name, "2"]).expect(1, "reset-slot without --force");
    assert!(
        refused.one_line_error().contains("refused"),
        "{}",
        refused.stderr
    );
    let out_of_range =
        run(&["reset-slot", name, "9", "--force"]).expect(2, "reset-slot out of range");
    assert!(out_of_range.one_line_error().contains("out of range"));
    // The consumer still gets message 2: nothing was reset.
    assert_eq!(&c.read(T).unwrap()[..], b"three");
}

#[test]
fn errors_are_one_line_with_exit_code_2() {
    let missing = Block::new("missing");
    for cmd in ["inspect", "diagnose", "metrics", "validate", "recover"] {
        let d = run(&[cmd, missing.name()]).expect(2, cmd);
        let line = d.one_line_error();
        assert!(
            line.contains(missing.name()) && line.contains("no block"),
            "{cmd}: {line}"
        );
    }
    let d = run(&["reset-slot", missing.name(), "0"]).expect(2, "reset-slot");
    d.one_line_error();

    // Not a DataHub block: a segment of the header's size whose first bytes are not the magic.
    let garbage = Block::new("garbage");
    std::fs::write(
        Path::new("/dev/shm").join(garbage.name()),
        vec![0xAB; 16384],
    )
    .unwrap();
    for cmd in ["inspect", "diagnose"] {
        let d = run(&[cmd, garbage.name()]).expect(2, "garbage block");
        let line = d.one_line_error();
        assert!(
            line.contains("bad magic") && line.contains("0xabababababababab"),
            "{line}"
        );
    }
    let listed = run(&["list", "--json"]).expect(0, "list").json();
    assert!(
        !listed
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == garbage.name()),
        "list shows only DataHub blocks"
    );

    let dir = tempfile::tempdir().unwrap();
    let nope = dir.path().join("nope.bin");
    let d =
        run(&["pub", missing.name(), nope.to_str().unwrap()]).expect(2, "pub of a missing file");
    assert!(d.one_line_error().contains("nope.bin"));
    let d =
        run(&["pub", missing.name(), dir.path().to_str().unwrap()]).expect(2, "pub of a directory");
    assert!(d.one_line_error().contains("directory"));
    let a = write_file(dir.path(), "same", b"1");
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let b = write_file(&dir.path().join("sub"), "same", b"2");
    let d = run(&[
        "pub",
        missing.name(),
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ])
    .expect(2, "same base name twice");
    assert!(d.one_line_error().contains("same base name"));
    let d = run(&[
        "pub",
        missing.name(),
        a.to_str().unwrap(),
        "--slot-size",
        "100",
    ])
    .expect(2, "tiny slot");
    d.one_line_error();
    assert!(
        !Path::new("/dev/shm").join(missing.name()).exists(),
        "nothing created on input errors"
    );

    let d = run(&["sub", missing.name(), "--wait", "0.2"]).expect(2, "sub of a missing block");
    assert!(d.one_line_error().contains("appeared"));
    let d = run(&["pub", missing.name(), a.to_str().unwrap(), "--wait", "0.3"])
        .expect(2, "pub without a consumer");
    assert!(d.one_line_error().contains("did not attach"));
    assert!(
        !Path::new("/dev/shm").join(missing.name()).exists(),
        "pub removes its block when it gives up"
    );

    assert_eq!(run(&[]).code(), Some(2), "no command is a usage error");
    assert_eq!(run(&["inspect"]).code(), Some(2));
    assert_eq!(run(&["pub", "x", "--wait", "soon"]).code(), Some(2));
}

/// A producer in this process writing hand-made frames, for hostile-stream tests.
fn frame_producer(name: &str) -> Producer {
    let config = Config::new(Policy::Sequential)
        .slot_size(1024)
        .checksum(ChecksumPolicy::Enforced)
        .schema(frame::schema());
    Producer::create(name, config).unwrap()
}

#[test]
fn sub_refuses_file_names_that_leave_the_output_directory() {
    for evil in ["../evil", "..", "a/b", ".datahub-partial.x.data"] {
        let block = Block::new("evil");
        let mut p = frame_producer(block.name());
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let sub = Proc::spawn(&["sub", block.name(), "--out", out.to_str().unwrap()]);
        let mut g = p.write(T).unwrap();
        let n = frame::file_start(&mut g, 1, 0, Some(4), evil).unwrap();
        g.commit(n).unwrap();
        let mut g = p.write(T).unwrap();
        g[frame::HEADER_LEN..frame::HEADER_LEN + 4].copy_from_slice(b"pwnd");
        let n = frame::data_header(&mut g, 1, 0, 0, 4);
        g.commit(n).unwrap();
        p.close();
        let d = sub.finish(DEADLINE).expect(2, evil);
        assert!(d.one_line_error().contains("refusing"), "{}", d.stderr);
        assert!(
            !dir.path().join("evil").exists(),
            "{evil}: nothing written outside --out"
        );
        let left: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            left.is_empty(),
            "{evil}: nothing written inside either: {left:?}"
        );
    }
}

#[test]
fn sub_exits_1_when_a_digest_does_not_match() {
    let block = Block::new("digest");
    let mut p = frame_producer(block.name());
    let dir = tempfile::tempdir().unwrap();
    let sub = Proc::spawn(&["sub", block.name(), "--out", dir.path().to_str().unwrap()]);
    let mut send = |f: &dyn Fn(&mut [u8]) -> usize| {
        let mut g = p.write(T).unwrap();
        let n = f(&mut g);
        g.commit(n).unwrap();
    };
    send(&|g| frame::file_start(g, 9, 0, Some(5), "a.txt").unwrap());
    send(&|g| {
        g[frame::HEADER_LEN..frame::HEADER_LEN + 5].copy_from_slice(b"hello");
        frame::data_header(g, 9, 0, 0, 5)
    });
    let wrong: [u8; 32] = [0x11; 32];
    send(&|g| frame::file_end(g, 9, 0, 5, &wrong));
    p.close();
    let d = sub.finish(DEADLINE).expect(1, "digest mismatch");
    let line = d.one_line_error();
    assert!(
        line.contains("a.txt") && line.contains("mismatch") && line.contains(&"11".repeat(32)),
        "{line}"
    );
    assert!(
        !dir.path().join("a.txt").exists(),
        "an unverified file is not published"
    );
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    let r = unsafe { libc::kill(pid, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig})");
}

/// Sends SIGSTOP and waits until the process is stopped.
fn stop(pid: i32) {
    signal(pid, libc::SIGSTOP);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let state = stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap();
        if state == 'T' {
            return;
        }
        assert!(Instant::now() < deadline, "pid {pid} did not stop");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `pub` of `files` through a small ring (4 slots of 4 KiB) and one `sub --out DIR`, started
/// and seen moving (100 slots read).
struct Streaming {
    block: Block,
    publisher: Proc,
    sub1: Proc,
    out: std::path::PathBuf,
    admin: datahub::Admin,
    _dir: tempfile::TempDir,
}

impl Streaming {
    fn start(tag: &str, files: &[(String, Vec<u8>)]) -> Streaming {
        let block = Block::new(tag);
        let name = block.name();
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let out = dir.path().join("out");
        std::fs::create_dir(&src).unwrap();
        for (n, b) in files {
            write_file(&src, n, b);
        }
        let p = paths(&src, files);
        let mut args = vec!["pub", name, "--slot-size", "4096", "--slots", "4", "--json"];
        args.extend(p.iter().map(String::as_str));
        let publisher = Proc::spawn(&args);
        let sub1 = Proc::spawn(&["sub", name, "--out", out.to_str().unwrap()]);
        wait_for_block(name);
        let admin = datahub::Admin::open(name).unwrap();
        let deadline = Instant::now() + DEADLINE;
        while admin.metrics().slots_read < 100 {
            assert!(Instant::now() < deadline, "the stream does not move");
            std::thread::sleep(Duration::from_millis(1));
        }
        Streaming {
            block,
            publisher,
            sub1,
            out,
            admin,
            _dir: dir,
        }
    }
}

#[test]
fn dead_consumer_is_diagnosed_recovered_and_replaced() {
    let files = vec![
        ("first.bin".to_owned(), noise(300_000, 11)),
        ("middle.bin".to_owned(), noise(5_000_000, 12)),
        ("last.txt".to_owned(), b"the end\n".to_vec()),
    ];
    let Streaming {
        block,
        publisher,
        sub1,
        out,
        admin,
        _dir,
    } = Streaming::start("dead", &files);
    let (name, out_s) = (block.name(), out.to_str().unwrap());
    // Stop the consumer while it holds a slot (retrying: between two reads it holds none).
    let victim = sub1.pid();
    let mut held = false;
    for _ in 0..200 {
        stop(victim);
        held = admin.diagnose().slots.iter().any(|s| !s.readers.is_empty());
        if held {
            break;
        }
        signal(victim, libc::SIGCONT);
        std::thread::sleep(Duration::from_micros(500));
    }
    assert!(held, "the consumer was never caught holding a slot");
    // Stop the producer too, so that its own dead-peer checks do not retire the consumer
    // before the tool sees it; then kill the consumer.
    stop(publisher.pid());
    signal(victim, libc::SIGKILL);
    let killed = sub1.finish(DEADLINE);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&killed.status),
        Some(libc::SIGKILL)
    );

    let d = run(&["diagnose", name, "--json"])
        .expect(1, "diagnose with a dead consumer")
        .json();
    let consumers = d["info"]["consumers"].as_array().unwrap();
    assert_eq!(consumers.len(), 1);
    assert_eq!(
        (
            consumers[0]["pid"].as_i64(),
            consumers[0]["alive"].as_bool()
        ),
        (Some(victim.into()), Some(false))
    );
    let problems: Vec<&str> = d["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        problems
            .iter()
            .any(|p| p.contains(&format!("pid {victim} is dead"))),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("held by dead consumer")),
        "{problems:?}"
    );
    let dead_slots: Vec<&Value> = d["slots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !s["dead_readers"].as_array().unwrap().is_empty())
        .collect();
    assert_eq!(dead_slots.len(), 1, "the slot it was reading");
    // Which message it died holding: FILE_START, DATA... and FILE_END of each file in turn.
    let held = dead_slots[0]["seq"].as_u64().unwrap();
    let mut first_seq = 0;
    let mut in_data_of = None;
    for (i, (_, bytes)) in files.iter().enumerate() {
        let data = bytes.len().div_ceil(4096 - frame::HEADER_LEN) as u64;
        if (first_seq + 1..=first_seq + data).contains(&held) {
            in_data_of = Some(i);
        }
        first_seq += data + 2;
    }
    let text = run(&["diagnose", name]).expect(1, "diagnose text");
    assert!(text.text().contains("dead"), "{}", text.text());

    let retire = serde_json::json!({"action": "retire_consumer", "entry": 0, "pid": victim});
    let dry = run(&["recover", name, "--dry-run", "--json"])
        .expect(0, "recover --dry-run")
        .json();
    assert_eq!(dry["dry_run"], true);
    assert!(
        dry["actions"].as_array().unwrap().contains(&retire),
        "{dry}"
    );
    let text = run(&["recover", name, "--dry-run"])
        .expect(0, "recover --dry-run text")
        .text();
    assert!(
        text.contains(&format!("would retire dead consumer 0 (pid {victim})")),
        "{text}"
    );
    let still = run(&["diagnose", name, "--json"])
        .expect(1, "a dry run changes nothing")
        .json();
    assert_eq!(still["info"]["consumers"].as_array().unwrap().len(), 1);

    let done = run(&["recover", name, "--json"])
        .expect(0, "recover")
        .json();
    assert!(
        done["actions"].as_array().unwrap().contains(&retire),
        "{done}"
    );
    let after = run(&["diagnose", name, "--json"]).json();
    assert_eq!(after["info"]["consumers"].as_array().unwrap().len(), 0);
    assert!(
        after["slots"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["readers"].as_array().unwrap().is_empty())
    );
    let again = run(&["recover", name, "--json"])
        .expect(0, "recover twice")
        .json();
    assert_eq!(again["actions"].as_array().unwrap().len(), 0, "{again}");

    signal(publisher.pid(), libc::SIGCONT);
    let sub2 = Proc::spawn(&["sub", name, "--out", out_s, "--json"]);
    let s2 = sub2.finish(DEADLINE).expect(0, "the replacement consumer");
    let pj = publisher.finish(DEADLINE).expect(0, "pub").json();
    for (name, bytes) in &files {
        let got = std::fs::read(out.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            got == *bytes,
            "{name}: content differs ({} vs {} bytes)",
            got.len(),
            bytes.len()
        );
    }
    let sj = s2.json();
    // The replacement finished what the dead one left: the file in flight, resumed, and the
    // rest. Every file's digest was verified by one of the two.
    let received = sj["files"].as_array().unwrap();
    assert!(!received.is_empty() && received.len() <= files.len());
    assert_eq!(received.last().unwrap()["name"], "last.txt");
    if let Some(i) = in_data_of {
        // It died inside a file: the replacement continued that file from the partial copy.
        assert_eq!(received[0]["name"], files[i].0.as_str(), "{sj}");
        assert_eq!(received[0]["resumed"], true, "{sj}");
    }
    for r in received {
        let i = files
            .iter()
            .position(|(n, _)| r["name"] == n.as_str())
            .unwrap();
        assert_eq!(r["blake2b"], pj["files"][i]["blake2b"]);
    }
    assert_eq!(pj["files"].as_array().unwrap().len(), 3);
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 3, "no partial or journal files left: {left:?}");
}

#[test]
fn sub_stopped_by_sigterm_mid_file_exits_143_and_the_next_sub_resumes_it() {
    let files = vec![
        ("big.bin".to_owned(), noise(5_000_000, 21)),
        ("last.txt".to_owned(), b"the end\n".to_vec()),
    ];
    let Streaming {
        block,
        publisher,
        sub1,
        out,
        admin: _,
        _dir,
    } = Streaming::start("subterm", &files);
    let (name, out_s) = (block.name(), out.to_str().unwrap());
    // The producer stopped: the consumer is inside big.bin, with nothing more to read.
    stop(publisher.pid());
    signal(sub1.pid(), libc::SIGTERM);
    let done = sub1.finish(DEADLINE).expect(128 + 15, "sub after SIGTERM");
    assert!(
        done.one_line_error().contains("interrupted by SIGTERM"),
        "{}",
        done.stderr
    );
    signal(publisher.pid(), libc::SIGCONT);
    let s2 = Proc::spawn(&["sub", name, "--out", out_s, "--json"])
        .finish(DEADLINE)
        .expect(0, "the next sub")
        .json();
    publisher.finish(DEADLINE).expect(0, "pub");
    for (n, bytes) in &files {
        let got = std::fs::read(out.join(n)).unwrap_or_else(|e| panic!("{n}: {e}"));
        assert!(got == *bytes, "{n}: content differs");
    }
    // The interrupted file was continued from the partial copy, not restarted or lost.
    let received = s2["files"].as_array().unwrap();
    assert_eq!(received[0]["name"], "big.bin", "{s2}");
    assert_eq!(received[0]["resumed"], true, "{s2}");
}

#[test]
fn recover_force_frees_only_slots_of_stalled_consumers() {
    let block = Block::new("stalled");
    let name = block.name();
    let config = Config::new(Policy::Sequential)
        .slot_size(256)
        .slot_count(4)
        .heartbeat_timeout(Duration::from_millis(50));
    let mut p = Producer::create(name, config).unwrap();
    let mut c = Consumer::attach(name, Expectations::new()).unwrap();
    p.send(b"held", T).unwrap();
    p.send(b"next", T).unwrap();
    let g = c.read(T).unwrap();
    assert_eq!(g.seq(), 0);
    // The consumer holds slot 0 and stops calling into the library: stalled, not dead.
    std::thread::sleep(Duration::from_millis(150));
    let d = run(&["diagnose", name, "--json"])
        .expect(1, "diagnose a stalled consumer")
        .json();
    assert_eq!(d["info"]["consumers"][0]["stalled"], true, "{d}");
    assert_eq!(d["info"]["consumers"][0]["alive"], true, "{d}");
    let safe = run(&["recover", name, "--json"])
        .expect(0, "recover")
        .json();
    assert_eq!(
        safe["actions"].as_array().unwrap().len(),
        0,
        "a live consumer is not touched without --force: {safe}"
    );
    let reset = serde_json::json!({"action": "reset_slot", "slot": 0, "seq": 0});
    let dry = run(&["recover", name, "--force", "--dry-run", "--json"])
        .expect(0, "recover --force --dry-run")
        .json();
    assert_eq!(dry["actions"], serde_json::json!([reset]), "{dry}");
    let slot0 = |v: &Value| v["slots"][0]["readers"].as_array().unwrap().len();
    assert_eq!(slot0(&run(&["diagnose", name, "--json"]).json()), 1);
    let done = run(&["recover", name, "--force", "--json"])
        .expect(0, "recover --force")
        .json();
    assert_eq!(done["actions"], serde_json::json!([reset]), "{done}");
    assert_eq!(slot0(&run(&["diagnose", name, "--json"]).json()), 0);
    // The stalled reader learns that its slot was reset under it; the stream goes on.
    assert!(matches!(
        g.release(),
        Err(datahub::Error::ValidationFailed { slot: 0, seq: 0 })
    ));
    let r = c.read(T).unwrap();
    assert_eq!((r.seq(), &r[..]), (1, &b"next"[..]));
    drop(r);
    let forced = run(&["reset-slot", name, "1", "--force", "--json"])
        .expect(0, "reset-slot --force")
        .json();
    assert_eq!(
        forced["actions"],
        serde_json::json!([{"action": "reset_slot", "slot": 1, "seq": 1}])
    );
}
