//! The `datahub` binary under hostile input and faults: a full shared-memory file
//! system, a block truncated under its producer and consumer, FIFOs and symbolic links planted
//! at block names, a planted resume journal and partial file, racing `pub`s of one stale name,
//! a corrupt slot state word, signals and dead consumers, and blocks the caller may only read.
//! One test per finding, each through the real binary.

mod common;

#[allow(dead_code)]
#[path = "../src/frame.rs"]
mod frame;

use std::ffi::CString;
use std::io::Write;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use blake2::Digest;
use common::{
    Block, DEADLINE, Proc, blake2b, datahub, is_root, killed_by, noise, run, shm_path, signal,
    wait_for_block, wait_until, write_file,
};
use datahub::{ChecksumPolicy, Config, Consumer, Expectations, Inspector, Policy, Producer};

const T: Duration = Duration::from_secs(10);

/// A producer in this process writing hand-made frames; its block stays when it is dropped.
fn frame_producer(name: &str) -> Producer {
    let config = Config::new(Policy::Sequential)
        .slot_size(1024)
        .checksum(ChecksumPolicy::Enforced)
        .schema(frame::schema())
        .unlink_on_drop(false);
    Producer::create(name, config).unwrap()
}

fn send_start(p: &mut Producer, stream: u64, name: &str, len: u64) {
    let mut g = p.write(T).unwrap();
    let n = frame::file_start(&mut g, stream, 0, Some(len), name).unwrap();
    g.commit(n).unwrap();
}

fn send_data(p: &mut Producer, stream: u64, offset: u64, bytes: &[u8]) {
    let mut g = p.write(T).unwrap();
    g[frame::HEADER_LEN..frame::HEADER_LEN + bytes.len()].copy_from_slice(bytes);
    let n = frame::data_header(&mut g, stream, 0, offset, bytes.len());
    g.commit(n).unwrap();
}

fn send_end(p: &mut Producer, stream: u64, bytes: &[u8]) {
    let digest: [u8; 32] = frame::Blake2b256::digest(bytes).into();
    let mut g = p.write(T).unwrap();
    let n = frame::file_end(&mut g, stream, 0, bytes.len() as u64, &digest);
    g.commit(n).unwrap();
}

/// Removes a path (file, FIFO, link) when dropped.
struct Planted(PathBuf);

impl Drop for Planted {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Unmounts a test tmpfs when dropped.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn pub_of_a_block_larger_than_free_shm_space_is_a_one_line_error_not_sigbus() {
    if !is_root() {
        eprintln!("skipped: needs root to mount a 1 MiB tmpfs (runs on CI, which is root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let shm = dir.path().join("shm");
    std::fs::create_dir(&shm).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&shm)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: root but `mount -t tmpfs` failed (no CAP_SYS_ADMIN here)");
        return;
    }
    let _unmount = Mounted(shm.clone());
    let src = write_file(dir.path(), "big.bin", &noise(3 << 20, 7));
    let out = dir.path().join("out");
    // 32 slots of 64 KiB: a 2 MiB block on a 1 MiB file system.
    let publisher = Proc::spawn_cmd(
        datahub().env(datahub::SHM_DIR_ENV, &shm).args([
            "pub",
            "big",
            src.to_str().unwrap(),
            "--slot-size",
            "65536",
            "--slots",
            "32",
            "--wait",
            "20",
        ]),
        None,
    );
    let sub = Proc::spawn_cmd(
        datahub().env(datahub::SHM_DIR_ENV, &shm).args([
            "sub",
            "big",
            "--out",
            out.to_str().unwrap(),
            "--wait",
            "3",
        ]),
        None,
    );
    let d = publisher.finish(DEADLINE);
    assert_eq!(killed_by(&d), None, "pub died of a signal: {}", d.stderr);
    let d = d.expect(2, "pub on a full tmpfs");
    let line = d.one_line_error();
    assert!(line.contains("no space for block \"big\""), "{line}");
    assert!(line.contains("needs"), "{line}");
    let _ = sub.finish(DEADLINE);
    let left: Vec<_> = std::fs::read_dir(&shm).unwrap().collect();
    assert!(
        left.is_empty(),
        "the half-created block was removed: {left:?}"
    );
}

/// Spawns `datahub ARGS` with standard input a pipe this test keeps writing to.
fn spawn_piped(
    args: &[&str],
) -> (
    std::process::Child,
    std::process::ChildStdin,
    PathBuf,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let err = dir.path().join("stderr");
    let mut child = datahub()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    (child, stdin, err, dir)
}

#[test]
fn truncating_a_block_under_pub_and_sub_ends_both_with_a_message_not_sigbus() {
    let block = Block::new("trunc");
    let name = block.name();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // pub reads standard input, so the stream pauses whenever this test stops writing.
    let (mut publisher, mut input, pub_err, _pd) = spawn_piped(&[
        "pub",
        name,
        "--slot-size",
        "4096",
        "--slots",
        "4",
        "--wait",
        "30",
    ]);
    let sub = Proc::spawn(&["sub", name, "--out", out.to_str().unwrap()]);
    wait_for_block(name);
    input.write_all(&noise(1 << 20, 3)).unwrap();
    let a = Inspector::open(name).unwrap();
    wait_until("the stream to move", || a.metrics().slots_read >= 100);
    drop(a);
    std::fs::OpenOptions::new()
        .write(true)
        .open(shm_path(name))
        .unwrap()
        .set_len(4096)
        .unwrap();
    // More input makes pub touch the truncated ring; sub notices on its own (heartbeat).
    let _ = input.write_all(&noise(64 << 10, 4));
    let s = sub.finish(DEADLINE);
    assert_eq!(killed_by(&s), None, "sub died of a signal: {}", s.stderr);
    let s = s.expect(2, "sub");
    let line = s.one_line_error();
    assert!(line.contains("was truncated to 4096 bytes"), "{line}");
    let _ = input.write_all(&noise(64 << 10, 5));
    drop(input);
    let status = common::finish_child(&mut publisher, DEADLINE);
    let stderr = std::fs::read_to_string(&pub_err).unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        None,
        "pub died of a signal: {stderr}"
    );
    assert_eq!(status.code(), Some(2), "pub: {stderr}");
    assert!(stderr.contains("was truncated to 4096 bytes"), "{stderr}");
    assert!(
        !shm_path(name).exists(),
        "pub removed its block on the way out"
    );
}

#[test]
fn inspect_of_a_truncated_block_says_truncated() {
    for len in [0u64, 4096, 9000] {
        let block = Block::new("inspect-trunc");
        let name = block.name();
        let mut p = Producer::create(
            name,
            Config::new(Policy::Latest)
                .slot_count(4)
                .unlink_on_drop(false),
        )
        .unwrap();
        p.send(b"hello", T).unwrap();
        drop(p);
        std::fs::OpenOptions::new()
            .write(true)
            .open(shm_path(name))
            .unwrap()
            .set_len(len)
            .unwrap();
        for cmd in ["inspect", "diagnose", "metrics"] {
            let d = run(&[cmd, name]).expect(2, cmd);
            let line = d.one_line_error();
            assert!(line.contains("truncated"), "{cmd} of {len} bytes: {line}");
            assert!(
                !line.contains("never published"),
                "{cmd} of {len} bytes: {line}"
            );
        }
    }
}

#[test]
fn list_and_inspect_do_not_hang_on_a_fifo_at_a_block_name() {
    let name = format!("dhcli-fifo-{}", std::process::id());
    let path = shm_path(&name);
    mkfifo(&path);
    let _fifo = Planted(path);
    // `finish` kills the process and fails the test if it hangs.
    let d = Proc::spawn(&["list"])
        .finish(Duration::from_secs(20))
        .expect(0, "list");
    let row = d
        .text()
        .lines()
        .find(|l| l.starts_with(&name))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("the FIFO is listed as skipped: {}", d.text()));
    assert!(row.contains("skipped: a FIFO"), "{row}");
    let j = Proc::spawn(&["list", "--json"])
        .finish(Duration::from_secs(20))
        .expect(0, "list --json")
        .json();
    let entry = j
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name.as_str())
        .unwrap_or_else(|| panic!("{j}"))
        .clone();
    assert_eq!(entry["skipped"], "a FIFO");
    for cmd in ["inspect", "diagnose", "metrics", "recover", "validate"] {
        let d = Proc::spawn(&[cmd, &name])
            .finish(Duration::from_secs(20))
            .expect(2, cmd);
        assert!(d.one_line_error().contains("is a FIFO"), "{}", d.stderr);
    }
}

#[test]
fn commands_refuse_a_symbolic_link_at_a_block_name_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // FILE: a copy of a real block with messages in it, so following the link would "work".
    let real = Block::new("link-src");
    let mut p = Producer::create(
        real.name(),
        Config::new(Policy::Latest)
            .slot_count(4)
            .unlink_on_drop(false),
    )
    .unwrap();
    for i in 0..3u8 {
        p.send(&[i; 100], T).unwrap();
    }
    drop(p);
    let file = dir.path().join("FILE");
    std::fs::copy(shm_path(real.name()), &file).unwrap();
    drop(real);
    let before = blake2b(&std::fs::read(&file).unwrap());
    let passwd = blake2b(&std::fs::read("/etc/passwd").unwrap_or_default());
    let link = Block::new("link");
    let name = link.name();
    std::os::unix::fs::symlink(&file, shm_path(name)).unwrap();
    let to_passwd = Block::new("passwd");
    std::os::unix::fs::symlink("/etc/passwd", shm_path(to_passwd.name())).unwrap();
    let cases: [&[&str]; 7] = [
        &["reset-slot", name, "1", "--force"],
        &["recover", name],
        &["recover", name, "--force"],
        &["validate", name, "--repair"],
        &["inspect", name],
        &["inspect", to_passwd.name()],
        &["diagnose", to_passwd.name()],
    ];
    for args in cases {
        let d = run(args).expect(2, &args.join(" "));
        let line = d.one_line_error();
        assert!(line.contains("is a symbolic link"), "{args:?}: {line}");
    }
    assert_eq!(
        blake2b(&std::fs::read(&file).unwrap()),
        before,
        "FILE unchanged"
    );
    assert_eq!(
        blake2b(&std::fs::read("/etc/passwd").unwrap_or_default()),
        passwd
    );
    // `remove` unlinks the link itself, never its target.
    run(&["remove", name]).expect(2, "remove of a link");
    assert!(file.exists());
}

#[test]
fn sub_resume_journal_and_partial_file_cannot_write_outside_the_output_directory() {
    // 1. A planted journal naming a path outside DIR (relative and absolute).
    let escape_dir = tempfile::tempdir().unwrap();
    let absolute = escape_dir.path().join("absolute");
    for evil in ["../escaped", absolute.to_str().unwrap(), "a/../../b"] {
        let block = Block::new("journal");
        let name = block.name();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let mut p = frame_producer(name);
        send_start(&mut p, 7, "a.txt", 4);
        {
            // A consumer reads FILE_START and leaves, so the next one starts mid-file.
            let mut c = Consumer::attach(name, Expectations::new()).unwrap();
            c.read(T).unwrap().release().unwrap();
        }
        send_data(&mut p, 7, 0, b"evil");
        send_end(&mut p, 7, b"evil");
        p.close();
        let journal = format!(r#"{{"stream":7,"index":0,"name":{evil:?},"done":false}}"#);
        std::fs::write(out.join(format!(".datahub-partial.{name}.json")), journal).unwrap();
        std::fs::write(out.join(format!(".datahub-partial.{name}.data")), b"").unwrap();
        let d = run(&["sub", name, "--out", out.to_str().unwrap()]).expect(2, evil);
        assert!(d.one_line_error().contains("journal"), "{}", d.stderr);
        assert!(!dir.path().join("escaped").exists(), "{evil}");
        assert!(!absolute.exists(), "{evil}");
        assert!(!dir.path().join("b").exists(), "{evil}");
        drop(p);
    }
    // 2. A symbolic link planted at the partial file's name.
    let block = Block::new("partial-link");
    let name = block.name();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink(&victim, out.join(format!(".datahub-partial.{name}.data"))).unwrap();
    let sub = Proc::spawn(&["sub", name, "--out", out.to_str().unwrap()]);
    let mut p = frame_producer(name);
    send_start(&mut p, 9, "f.txt", 4);
    send_data(&mut p, 9, 0, b"data");
    send_end(&mut p, 9, b"data");
    p.close();
    sub.finish(DEADLINE).expect(0, "sub with a planted link");
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"precious",
        "link not followed"
    );
    let got = out.join("f.txt");
    assert!(!got.is_symlink());
    assert_eq!(std::fs::read(&got).unwrap(), b"data");
}

#[test]
fn concurrent_pubs_of_one_stale_name_leave_exactly_one_streaming() {
    let block = Block::new("race");
    let name = block.name();
    let dir = tempfile::tempdir().unwrap();
    let data = noise(200_000, 21);
    let src = write_file(dir.path(), "payload.bin", &data);
    let src = src.to_str().unwrap();
    for round in 0..3 {
        // A stale block: a pub killed while it waited for its consumer.
        let stale = Proc::spawn(&["pub", name, src, "--wait", "60"]);
        wait_for_block(name);
        signal(stale.pid(), libc::SIGKILL);
        assert_eq!(killed_by(&stale.finish(DEADLINE)), Some(libc::SIGKILL));
        let pubs: Vec<Proc> = (0..8)
            .map(|_| Proc::spawn(&["pub", name, src, "--wait", "30", "--json"]))
            .collect();
        let out = dir.path().join(format!("out{round}"));
        let sub = Proc::spawn(&["sub", name, "--out", out.to_str().unwrap(), "--json"]);
        let done: Vec<_> = pubs.into_iter().map(|p| p.finish(DEADLINE)).collect();
        let winners: Vec<_> = done.iter().filter(|d| d.code() == Some(0)).collect();
        assert_eq!(winners.len(), 1, "round {round}: {done:#?}");
        for d in done.iter().filter(|d| d.code() != Some(0)) {
            assert_eq!(d.code(), Some(2), "round {round}: {d:?}");
            let line = d.stderr.lines().last().unwrap_or_default();
            assert!(
                line.contains("is being created or removed by another process")
                    || line.contains("already exists and its producer"),
                "round {round}: a loser says why at once: {:?}",
                d.stderr
            );
        }
        // The block the name refers to is the winner's: the consumer got its whole file.
        let s = sub.finish(DEADLINE).expect(0, "sub").json();
        assert_eq!(
            s["files"][0]["blake2b"],
            winners[0].json()["files"][0]["blake2b"]
        );
        assert_eq!(std::fs::read(out.join("payload.bin")).unwrap(), data);
    }
}

#[test]
fn sub_exits_on_a_corrupt_slot_state_word_after_its_producer_is_gone() {
    let block = Block::new("corrupt");
    let name = block.name();
    let dir = tempfile::tempdir().unwrap();
    let mut p = frame_producer(name);
    send_start(&mut p, 5, "x.bin", 4);
    send_data(&mut p, 5, 0, b"abcd");
    drop(p);
    // Slot 1's state word (slot states start at 8192, 64 bytes each).
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(shm_path(name))
        .unwrap();
    f.write_all_at(&7u32.to_le_bytes(), 8192 + 64).unwrap();
    let d = Proc::spawn(&["sub", name, "--out", dir.path().to_str().unwrap()])
        .finish(Duration::from_secs(30))
        .expect(2, "sub");
    let line = d.one_line_error();
    assert!(
        line.contains("slot 1 has an invalid state word 7"),
        "{line}"
    );
}

#[test]
fn sigterm_on_pub_removes_its_block_and_a_dead_consumer_is_noticed_at_once() {
    let block = Block::new("sigterm");
    let name = block.name();
    let dir = tempfile::tempdir().unwrap();
    let src = write_file(dir.path(), "big.bin", &noise(8 << 20, 9));
    let publisher = Proc::spawn(&[
        "pub",
        name,
        src.to_str().unwrap(),
        "--slot-size",
        "4096",
        "--slots",
        "4",
        "--wait",
        "120",
    ]);
    let sub = Proc::spawn(&[
        "sub",
        name,
        "--out",
        dir.path().join("out").to_str().unwrap(),
    ]);
    wait_for_block(name);
    let a = Inspector::open(name).unwrap();
    wait_until("the stream to move", || a.metrics().slots_read >= 50);
    drop(a);
    signal(sub.pid(), libc::SIGKILL);
    let _ = sub.finish(DEADLINE);
    // Well before --wait (120 s) runs out, pub says its consumer died.
    wait_until("pub to notice the dead consumer", || {
        publisher.stderr_so_far().contains("its consumer(s) died")
    });
    signal(publisher.pid(), libc::SIGTERM);
    let d = publisher.finish(DEADLINE);
    assert_eq!(killed_by(&d), None, "pub handled SIGTERM: {}", d.stderr);
    let d = d.expect(128 + 15, "pub after SIGTERM (128 + SIGTERM)");
    let last = d.stderr.lines().last().unwrap();
    assert!(last.contains("interrupted by SIGTERM"), "{}", d.stderr);
    assert!(!shm_path(name).exists(), "the block was removed");
}

#[test]
fn remove_deletes_a_dead_producers_block_and_refuses_a_live_one() {
    let block = Block::new("remove");
    let name = block.name();
    let dir = tempfile::tempdir().unwrap();
    let src = write_file(dir.path(), "f.bin", b"abc");
    let src = src.to_str().unwrap();
    let stale = Proc::spawn(&["pub", name, src, "--wait", "60"]);
    wait_for_block(name);
    let pid = stale.pid();
    signal(pid, libc::SIGKILL);
    let _ = stale.finish(DEADLINE);
    let r = run(&["recover", name]).expect(0, "recover");
    assert!(r.stderr.contains("`datahub remove"), "{}", r.stderr);
    let d = run(&["remove", name]).expect(0, "remove");
    assert!(
        d.text()
            .contains(&format!("its producer pid {pid} is gone")),
        "{}",
        d.text()
    );
    assert!(!shm_path(name).exists());
    run(&["remove", name]).expect(2, "remove of nothing");

    let live = Proc::spawn(&["pub", name, src, "--wait", "60"]);
    wait_for_block(name);
    let d = run(&["remove", name]).expect(1, "remove of a live block");
    assert!(
        d.one_line_error().contains(&format!(
            "refused: block {name:?} is owned by live producer pid {}",
            live.pid()
        )),
        "{}",
        d.stderr
    );
    assert!(shm_path(name).exists());
    signal(live.pid(), libc::SIGTERM);
    live.finish(DEADLINE).expect(128 + 15, "pub after SIGTERM");
}

#[test]
fn read_only_commands_work_on_a_block_the_caller_may_only_read() {
    let block = Block::new("readonly");
    let name = block.name();
    let mut p = Producer::create(name, Config::new(Policy::Latest).slot_count(4)).unwrap();
    p.send(b"hi", T).unwrap();
    let hidden = Block::new("hidden");
    let _q = Producer::create(hidden.name(), Config::new(Policy::Latest).slot_count(1)).unwrap();
    std::fs::set_permissions(shm_path(hidden.name()), PermissionsExt::from_mode(0o000)).unwrap();
    // As root, run as nobody on a 0644 block; otherwise on our own 0400 block.
    let root = is_root();
    let mode = if root { 0o644 } else { 0o400 };
    std::fs::set_permissions(shm_path(name), PermissionsExt::from_mode(mode)).unwrap();
    let as_reader = |args: &[&str]| {
        let mut cmd = datahub();
        cmd.args(args);
        if root {
            cmd.uid(65534).gid(65534);
        }
        Proc::spawn_cmd(&mut cmd, None).finish(DEADLINE)
    };
    for cmd in ["inspect", "diagnose", "metrics", "validate"] {
        let d = as_reader(&[cmd, name]).expect(0, cmd);
        assert!(d.stderr.is_empty(), "{cmd}: {}", d.stderr);
    }
    let d = as_reader(&["metrics", name, "--prometheus"]).expect(0, "metrics --prometheus");
    assert!(d.text().contains("datahub_"), "{}", d.text());
    let d = as_reader(&["list"]).expect(0, "list");
    let text = d.text();
    let rows: Vec<&str> = text.lines().collect();
    let row = |n: &str| {
        rows.iter()
            .find(|l| l.starts_with(n))
            .unwrap_or_else(|| panic!("{n} listed: {}", d.text()))
            .to_string()
    };
    assert!(!row(name).contains("error"), "{}", row(name));
    assert!(
        row(hidden.name()).contains("cannot open"),
        "{}",
        row(hidden.name())
    );
    // Recovery still needs write access.
    as_reader(&["recover", name]).expect(2, "recover without write access");
}

#[test]
fn messages_are_one_line_bounded_and_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "plain", b"x");
    let mut lines = Vec::new();
    // A file given as the output directory.
    let d = run(&[
        "sub",
        "nothing-here",
        "--out",
        file.to_str().unwrap(),
        "--wait",
        "0",
    ])
    .expect(2, "--out FILE");
    let line = d.one_line_error().to_owned();
    assert!(line.contains("exists and is not a directory"), "{line}");
    assert!(!line.contains("File exists"), "{line}");
    lines.push(line);
    // A block name of 10 000 bytes is quoted cut short.
    let long = "n".repeat(10_000);
    for cmd in ["inspect", "remove", "sub"] {
        let d = run(&[cmd, &long]).expect(2, cmd);
        lines.push(d.one_line_error().to_owned());
    }
    // A file name from the wire (a slot long) is quoted cut short.
    let block = Block::new("longname");
    let mut p = frame_producer(block.name());
    let sub = Proc::spawn(&[
        "sub",
        block.name(),
        "--out",
        dir.path().join("o").to_str().unwrap(),
    ]);
    send_start(&mut p, 3, &"w".repeat(900), 1);
    p.close();
    let d = sub.finish(DEADLINE).expect(2, "sub of a long file name");
    assert!(
        d.one_line_error().contains("longer than 255 bytes"),
        "{}",
        d.stderr
    );
    lines.push(d.one_line_error().to_owned());
    drop(p);
    for l in &lines {
        assert!(l.len() < 300, "bounded: {} bytes: {l}", l.len());
        assert!(!l.contains("datahub: datahub:"), "{l}");
    }
}
