//! Property test: every read command of the real `mmsb` binary, run on a directory of random
//! hostile contents (random bytes; files named like segments, checkpoints, `LOCK` and `LOGID`
//! holding real contents cut short or with a flipped bit; symbolic links to files outside;
//! FIFOs; subdirectories named like segments), exits 0, 1 or 2 within a timeout, never panics
//! or dies of a signal, and writes nothing: not in the directory, not through a link.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mmsb::tlog::Durability;
use mmsb::{Config, Mmsb};
use proptest::prelude::*;

/// A command that runs longer than this hangs.
const HANG: Duration = Duration::from_secs(20);

/// The files of a real log (several segments, a checkpoint, `LOGID`, `LOCK`), name and bytes.
fn template() -> &'static Vec<(String, Vec<u8>)> {
    static T: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::new(dir.path()).durability(Durability::Flush);
        c.segment_bytes = 2048;
        let mut m = Mmsb::start(c).unwrap();
        let a = m.create_page(256).unwrap();
        let b = m.create_page(64).unwrap();
        for i in 0..30u8 {
            m.write_range(a, usize::from(i) * 5, &[i; 7]).unwrap();
            if i == 15 {
                m.checkpoint().unwrap();
            }
        }
        m.begin_batch().unwrap();
        m.write_range(b, 3, b"batch").unwrap();
        m.write_range(a, 200, b"end").unwrap();
        m.commit().unwrap();
        m.stop().unwrap();
        let mut v: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    })
}

/// One entry to create in the hostile directory.
#[derive(Debug, Clone)]
enum Entry {
    /// Template file `i` under its own name or `name`, cut to `cut` (if shorter) and with
    /// bit `bit` of byte `at` flipped (if `flip`).
    Real {
        i: usize,
        rename: Option<u8>,
        cut: Option<usize>,
        flip: Option<(usize, u8)>,
    },
    /// Random bytes under a log-like name.
    Random { name: u8, bytes: Vec<u8> },
    /// A symbolic link named like a log file to the outside file (or the outside directory).
    Link { name: u8, to_dir: bool },
    /// A FIFO named like a log file.
    Fifo { name: u8 },
    /// A directory named like a log file.
    Dir { name: u8 },
}

/// A log-like name: segments around the template's, checkpoints, `LOCK`, `LOGID`, temporaries.
fn name(n: u8) -> String {
    match n % 9 {
        0 => "00000000000000000001.tlog".into(),
        1 => format!("{:020}.tlog", u64::from(n) * 7 + 1),
        2 => format!("checkpoint-{:020}.ckpt", u64::from(n)),
        3 => "checkpoint-00000000000000000017.ckpt".into(),
        4 => "LOCK".into(),
        5 => "LOGID".into(),
        6 => "LOGID.tmp".into(),
        7 => format!("checkpoint-{:020}.ckpt.tmp", u64::from(n)),
        _ => format!("other-{n}"),
    }
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        4 => (any::<usize>(), proptest::option::of(any::<u8>()), proptest::option::of(any::<usize>()),
              proptest::option::of((any::<usize>(), 0u8..8)))
            .prop_map(|(i, rename, cut, flip)| Entry::Real { i, rename, cut, flip }),
        2 => (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300))
            .prop_map(|(name, bytes)| Entry::Random { name, bytes }),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(name, to_dir)| Entry::Link { name, to_dir }),
        1 => any::<u8>().prop_map(|name| Entry::Fifo { name }),
        1 => any::<u8>().prop_map(|name| Entry::Dir { name }),
    ]
}

fn build(dir: &Path, outside: &Path, all_real: bool, entries: &[Entry]) {
    let t = template();
    if all_real {
        for (n, b) in t {
            fs::write(dir.join(n), b).unwrap();
        }
    }
    for e in entries {
        let (path, kind) = match e {
            Entry::Real { i, rename, .. } => {
                let (n, _) = &t[i % t.len()];
                (dir.join(rename.map_or(n.clone(), name)), 0)
            }
            Entry::Random { name: n, .. } => (dir.join(name(*n)), 1),
            Entry::Link { name: n, .. } => (dir.join(name(*n)), 2),
            Entry::Fifo { name: n } => (dir.join(name(*n)), 3),
            Entry::Dir { name: n } => (dir.join(name(*n)), 4),
        };
        if fs::symlink_metadata(&path).is_ok() {
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                let _ = fs::remove_dir_all(&path);
            } else {
                let _ = fs::remove_file(&path);
            }
        }
        match (e, kind) {
            (Entry::Real { i, cut, flip, .. }, _) => {
                let mut b = t[i % t.len()].1.clone();
                if let Some(c) = cut {
                    b.truncate(c % (b.len() + 1));
                }
                if let Some((at, bit)) = flip
                    && !b.is_empty()
                {
                    let at = at % b.len();
                    b[at] ^= 1 << bit;
                }
                fs::write(&path, b).unwrap();
            }
            (Entry::Random { bytes, .. }, _) => fs::write(&path, bytes).unwrap(),
            (Entry::Link { to_dir, .. }, _) => {
                let target = if *to_dir {
                    outside.to_path_buf()
                } else {
                    outside.join("victim")
                };
                std::os::unix::fs::symlink(target, &path).unwrap();
            }
            (Entry::Fifo { .. }, _) => {
                let c = CString::new(path.as_os_str().as_bytes()).unwrap();
                // SAFETY: `c` is a valid NUL-terminated path that lives across the call.
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            }
            (Entry::Dir { .. }, _) => fs::create_dir(&path).unwrap(),
        }
    }
}

/// Names, types, sizes, modification times and content hashes of everything in `dir` (links are
/// not followed; FIFOs are not opened).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (String, u64, i64, i64, u64)> {
    let mut m = BTreeMap::new();
    let top = fs::symlink_metadata(dir).unwrap();
    m.insert(
        dir.to_path_buf(),
        ("dir".to_string(), 0, top.mtime(), top.mtime_nsec(), 0),
    );
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            let t = md.file_type();
            let (kind, hash) = if t.is_symlink() {
                let target = fs::read_link(&p).unwrap();
                ("link", xxhash_of(target.as_os_str().as_bytes()))
            } else if t.is_fifo() {
                ("fifo", 0)
            } else if t.is_dir() {
                stack.push(p.clone());
                ("dir", 0)
            } else {
                ("file", xxhash_of(&fs::read(&p).unwrap()))
            };
            m.insert(
                p,
                (
                    kind.to_string(),
                    md.len(),
                    md.mtime(),
                    md.mtime_nsec(),
                    hash,
                ),
            );
        }
    }
    m
}

fn xxhash_of(b: &[u8]) -> u64 {
    // FNV-1a: enough to notice a changed byte in a test.
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Runs the binary; `Err` with a description on a hang, a signal or a panic.
fn run(args: &[&str]) -> Result<i32, String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mmsb"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{args:?}: hangs"));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    if err.contains("panicked") {
        return Err(format!("{args:?}: panicked: {err}"));
    }
    match status.code() {
        Some(c @ 0..=2) => Ok(c),
        Some(c) => Err(format!("{args:?}: exit {c}: {err}")),
        None => Err(format!("{args:?}: killed by a signal: {err}")),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn read_commands_survive_hostile_directories_and_write_nothing(
        all_real in any::<bool>(),
        entries in proptest::collection::vec(entry(), 0..6),
        lsn in 0u64..40,
    ) {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("log");
        let outside = root.path().join("outside");
        let out = root.path().join("out");
        fs::create_dir(&dir).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("victim"), b"must not change").unwrap();
        build(&dir, &outside, all_real, &entries);
        let before = snapshot(&dir);
        let outside_before = snapshot(&outside);
        let d = dir.to_str().unwrap();
        let lsn = lsn.to_string();
        let seg = dir.join("00000000000000000001.tlog");
        let seg = seg.to_str().unwrap();
        let commands: Vec<Vec<&str>> = vec![
            vec!["log", "verify", d],
            vec!["log", "verify", d, "--json"],
            vec!["log", "inspect", d, "--frames"],
            vec!["log", "inspect", seg],
            vec!["stats", d, "--json"],
            vec!["diff", d, d],
            vec!["replay", d, "--out", out.to_str().unwrap()],
            vec!["replay", d, "--to-lsn", &lsn, "--out", out.to_str().unwrap()],
        ];
        for c in &commands {
            let r = run(c);
            prop_assert!(r.is_ok(), "{}", r.unwrap_err());
        }
        prop_assert_eq!(&snapshot(&dir), &before, "a read command changed the directory");
        prop_assert_eq!(&snapshot(&outside), &outside_before, "a write went through a link");
    }
}
