//! Property test of the read-only commands against a hostile shared-memory directory.
//!
//! A private directory stands in for `/dev/shm` (`DATAHUB_SHM_DIR`). Each case fills it with
//! random entries: files of random bytes, real block images cut short or with flipped bits or
//! garbage words in their runtime state, symbolic links to files outside (and to nothing),
//! FIFOs, directories and sockets named like blocks. Then every read command of the real binary
//! (`list`, `inspect`, `diagnose`, `metrics` in each format, `validate`) runs on every entry, each
//! killed after 20 s (a hang fails the test). Claims: exit code 0, 1 or 2, no panic, no death by
//! a signal, and not one byte written: every file and link target is hashed before and after.

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Block, Proc, blake2b, datahub, killed_by, shm_path};
use datahub::{Config, Consumer, Expectations, Policy, Producer};

/// Cases (directories) and entries per case: 8 × 16 entries × 6 commands plus `list`, well under 60 s debug.
const CASES: u64 = 8;
const ENTRIES: u64 = 16;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Images of real blocks (two policies, with messages, a consumer registered in one).
fn real_images() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (policy, slots) in [(Policy::Latest, 4), (Policy::Sequential, 8)] {
        let b = Block::new("fuzz-src");
        let mut p = Producer::create(
            b.name(),
            Config::new(policy).slot_count(slots).slot_size(256),
        )
        .unwrap();
        let c = Consumer::attach(b.name(), Expectations::new()).unwrap();
        for i in 0..5u8 {
            p.send(&[i; 40], Duration::from_secs(5)).unwrap();
        }
        out.push(std::fs::read(shm_path(b.name())).unwrap());
        drop(c);
    }
    out
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Fills `shm` with `ENTRIES` random entries; links point into `outside`.
fn plant(rng: &mut Rng, shm: &Path, outside: &Path, images: &[Vec<u8>]) -> Vec<String> {
    let mut names = Vec::new();
    let mut sockets = Vec::new();
    for i in 0..ENTRIES {
        let name = format!("e{i}");
        let path = shm.join(&name);
        let image = &images[rng.below(images.len() as u64) as usize];
        match rng.below(9) {
            0 => {
                let len = rng.below(20_000) as usize;
                std::fs::write(&path, rng.bytes(len)).unwrap();
            }
            1 => {
                let cut = rng.below(image.len() as u64) as usize;
                std::fs::write(&path, &image[..cut]).unwrap();
            }
            2 => {
                let mut img = image.clone();
                for _ in 0..1 + rng.below(8) {
                    let at = rng.below(img.len() as u64) as usize;
                    img[at] ^= 1 << rng.below(8);
                }
                std::fs::write(&path, img).unwrap();
            }
            3 => {
                // Garbage 8-byte words past the identity (runtime state: indices, masks, slots).
                let mut img = image.clone();
                for _ in 0..1 + rng.below(16) {
                    let at = 192 + rng.below((img.len() as u64 - 200) / 8) as usize * 8;
                    img[at..at + 8].copy_from_slice(&rng.next().to_le_bytes());
                }
                std::fs::write(&path, img).unwrap();
            }
            4 => {
                let target = outside.join(format!("target{i}"));
                std::fs::write(&target, image).unwrap();
                std::os::unix::fs::symlink(&target, &path).unwrap();
            }
            5 => std::os::unix::fs::symlink(outside.join("nothing"), &path).unwrap(),
            6 => mkfifo(&path),
            7 => std::fs::create_dir(&path).unwrap(),
            _ => sockets.push(std::os::unix::net::UnixListener::bind(&path).unwrap()),
        }
        names.push(name);
    }
    // The sockets' files stay after the listeners close.
    drop(sockets);
    names
}

/// Content hash of every file under `dirs` (links: of the link text; FIFOs and sockets: kind).
fn snapshot(dirs: &[&Path]) -> BTreeMap<PathBuf, String> {
    let mut m = BTreeMap::new();
    for d in dirs {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let v = if meta.is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if meta.is_file() {
                format!("{} {}", blake2b(&std::fs::read(&p).unwrap()), meta.len())
            } else {
                format!("{:?}", meta.file_type())
            };
            m.insert(p, v);
        }
    }
    m
}

fn check(shm: &Path, args: &[&str]) {
    let mut cmd = datahub();
    cmd.env(datahub::SHM_DIR_ENV, shm).args(args);
    // `finish` kills the process and fails the test after 20 s.
    let d = Proc::spawn_cmd(&mut cmd, None).finish(Duration::from_secs(20));
    assert_eq!(
        killed_by(&d),
        None,
        "{args:?} died of a signal: {}",
        d.stderr
    );
    assert!(
        matches!(d.code(), Some(0..=2)),
        "{args:?}: exit {:?}: {}",
        d.code(),
        d.stderr
    );
    assert!(!d.stderr.contains("panicked"), "{args:?}: {}", d.stderr);
    assert!(
        d.stderr.lines().count() <= 1,
        "{args:?}: one line: {}",
        d.stderr
    );
}

#[test]
fn read_commands_survive_a_hostile_shm_directory_and_write_nothing() {
    let images = real_images();
    for case in 0..CASES {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (case + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
        let shm = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let names = plant(&mut rng, shm.path(), outside.path(), &images);
        let before = snapshot(&[shm.path(), outside.path()]);
        check(shm.path(), &["list"]);
        check(shm.path(), &["list", "--json"]);
        for n in &names {
            for args in [
                &["inspect", n][..],
                &["inspect", n, "--json"],
                &["diagnose", n, "--json"],
                &["metrics", n],
                &["metrics", n, "--prometheus"],
                &["validate", n],
            ] {
                check(shm.path(), args);
            }
        }
        assert_eq!(
            snapshot(&[shm.path(), outside.path()]),
            before,
            "case {case}: nothing was written"
        );
    }
}
