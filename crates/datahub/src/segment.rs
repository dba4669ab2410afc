//! The file under a block: where segments live and how they are opened, created, locked,
//! removed and listed. Everything here treats the shared-memory directory as hostile: any local
//! user may plant a symbolic link, a FIFO, a directory or a crafted file under a block's name.
//!
//! # Rules
//! - A segment is `DIR/NAME`, `DIR` being `/dev/shm` (what glibc's `shm_open` uses) or the
//!   directory named by `$DATAHUB_SHM_DIR` (read once; for tests and for hosts whose tmpfs lives
//!   elsewhere). `NAME` is checked by [`check_name`] first: one path component.
//! - Every open is `O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK` (a symbolic link is refused, a FIFO
//!   cannot block the opener), then `fstat`: anything but a regular file is refused with
//!   [`Error::NotRegular`] before a byte is read or mapped. Read-only callers open `O_RDONLY`.
//! - **The producer lock.** A producer holds `flock(LOCK_EX)` on its segment for its whole life
//!   (taken right after `O_CREAT|O_EXCL`, or on takeover). The kernel drops it when the process
//!   dies, however it dies. So "is this block's producer alive" has a race-free answer: try the
//!   lock. Removing a stale block ([`remove_dead`]) takes the lock, re-checks under it that the
//!   producer recorded in the header is dead, checks that the name still refers to the locked
//!   inode, and only then unlinks. Two processes that race to replace one stale block therefore
//!   cannot both succeed: the loser finds the lock held (or the name gone and re-created) and
//!   gets [`Error::Busy`] / [`Error::AlreadyExists`].
//! - Creation reserves the segment's memory (`fallocate`) so a full tmpfs is a clean
//!   [`Error::NoSpace`] at creation instead of a `SIGBUS` on first touch; a half-created name is
//!   unlinked again.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use crate::Error;
use crate::layout::{HEADER_SIZE, MAGIC};
use crate::proc::{self, Liveness};

/// Environment variable naming the directory that holds segments (default `/dev/shm`).
pub const SHM_DIR_ENV: &str = "DATAHUB_SHM_DIR";

/// Longest block name (without the directory).
pub const MAX_NAME_LEN: usize = 200;

/// The directory segments live in: `$DATAHUB_SHM_DIR` if set (read once), else `/dev/shm`.
pub fn shm_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| match std::env::var_os(SHM_DIR_ENV) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from("/dev/shm"),
    })
}

pub(crate) fn path_of(name: &str) -> PathBuf {
    shm_dir().join(name)
}

/// Checks a block name: 1..=200 bytes, no `/`, no NUL, not `.` or `..`.
pub(crate) fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.contains('/')
        && !name.contains('\0')
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName {
            name: crate::error::clip(name),
        })
    }
}

pub(crate) fn io_err(op: &'static str, name: &str, e: impl Into<std::io::Error>) -> Error {
    Error::Io {
        op,
        name: crate::error::clip(name),
        source: e.into(),
    }
}

/// How a segment is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// `O_RDONLY`, mapped `PROT_READ`: inspection; never writes.
    ReadOnly,
    /// `O_RDWR`: producers, consumers, recovery.
    ReadWrite,
}

/// An open segment file and what `fstat` said about it.
#[derive(Debug)]
pub(crate) struct Segment {
    pub file: File,
    pub len: u64,
    pub dev: u64,
    pub ino: u64,
}

fn kind_name(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        _ => "not a regular file",
    }
}

fn not_regular(name: &str, kind: &'static str) -> Error {
    Error::NotRegular {
        name: name.to_owned(),
        kind,
    }
}

pub(crate) fn stat_segment(name: &str, file: File) -> Result<Segment, Error> {
    let st = rustix::fs::fstat(&file).map_err(|e| io_err("fstat", name, e))?;
    let t = FileType::from_raw_mode(st.st_mode);
    if t != FileType::RegularFile {
        return Err(not_regular(name, kind_name(t)));
    }
    Ok(Segment {
        file,
        len: st.st_size as u64,
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

/// Opens segment `name` without following a link and without blocking, and checks that it is
/// a regular file.
pub(crate) fn open(name: &str, access: Access) -> Result<Segment, Error> {
    check_name(name)?;
    let mode = match access {
        Access::ReadOnly => OFlags::RDONLY,
        Access::ReadWrite => OFlags::RDWR,
    };
    let flags = mode | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = match rustix::fs::open(path_of(name), flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => {
            return Err(Error::NotFound {
                name: name.to_owned(),
            });
        }
        Err(Errno::LOOP) => return Err(not_regular(name, "a symbolic link")),
        Err(Errno::ISDIR) => return Err(not_regular(name, "a directory")),
        Err(Errno::NXIO) => return Err(not_regular(name, "a socket")),
        Err(e) => return Err(io_err("open", name, e)),
    };
    stat_segment(name, File::from(fd))
}

/// Creates segment `name` (mode 0600, `O_EXCL`), takes the producer lock, sizes it to `len` and
/// reserves its memory. `Ok(None)`: a file of that name exists.
///
/// # Errors
/// [`Error::Busy`] if another process locked the new file before this one could (a concurrent
/// stale-block remover; this creator then leaves the name alone); [`Error::NoSpace`] if the
/// directory's file system cannot hold `len` bytes (the name is removed again); [`Error::Io`].
pub(crate) fn create(name: &str, len: u64) -> Result<Option<Segment>, Error> {
    check_name(name)?;
    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(path_of(name), flags, Mode::RUSR | Mode::WUSR) {
        Ok(fd) => fd,
        Err(Errno::EXIST) => return Ok(None),
        Err(e) => return Err(io_err("open(O_CREAT|O_EXCL)", name, e)),
    };
    let seg = stat_segment(name, File::from(fd))?;
    // Someone may open the empty file and lock it in the instant since O_EXCL: a remover that
    // takes it for a creator's corpse. Then either the lock is still theirs, or they have
    // unlinked the file and let go of it, and the lock is ours but the name is not (the file is
    // nobody's block now, and a third process may already have created another under the
    // name). Both times the name is the other process's business: leave it alone. Once the
    // lock is ours and the name is still our file, removers fail on the lock.
    if !try_lock(name, &seg.file)? || !name_is(name, seg.dev, seg.ino) {
        return Err(Error::Busy {
            name: name.to_owned(),
        });
    }
    let undo = |e: Error| {
        unlink_if_same(name, seg.dev, seg.ino);
        e
    };
    seg.file
        .set_len(len)
        .map_err(|e| undo(io_err("ftruncate", name, e)))?;
    match rustix::fs::fallocate(&seg.file, rustix::fs::FallocateFlags::empty(), 0, len) {
        Ok(()) => {}
        // A file system without fallocate (a custom DATAHUB_SHM_DIR): no reservation.
        Err(Errno::OPNOTSUPP) => {}
        Err(Errno::NOSPC | Errno::FBIG) => {
            let available = rustix::fs::fstatvfs(&seg.file)
                .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
                .unwrap_or(0);
            return Err(undo(Error::NoSpace {
                name: name.to_owned(),
                needed: len,
                available,
            }));
        }
        Err(e) => return Err(undo(io_err("fallocate", name, e))),
    }
    Ok(Some(Segment { len, ..seg }))
}

/// Tries the producer lock (`flock(LOCK_EX | LOCK_NB)`) on `file`: `false` if another open file
/// holds it.
pub(crate) fn try_lock(name: &str, file: &File) -> Result<bool, Error> {
    match rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(io_err("flock", name, e)),
    }
}

/// Whether `DIR/name` (not following a link) is the inode `(dev, ino)`.
pub(crate) fn name_is(name: &str, dev: u64, ino: u64) -> bool {
    rustix::fs::statat(rustix::fs::CWD, path_of(name), AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
}

/// Unlinks `DIR/name` if it still is the inode `(dev, ino)` (best effort).
pub(crate) fn unlink_if_same(name: &str, dev: u64, ino: u64) -> bool {
    name_is(name, dev, ino) && rustix::fs::unlink(path_of(name)).is_ok()
}

/// Unlinks `DIR/name` whatever it is (never follows: unlink removes a link, not its target).
pub(crate) fn unlink(name: &str) -> Result<(), Error> {
    check_name(name)?;
    match rustix::fs::unlink(path_of(name)) {
        Ok(()) => Ok(()),
        Err(Errno::NOENT) => Err(Error::NotFound {
            name: name.to_owned(),
        }),
        Err(Errno::ISDIR | Errno::PERM) if path_of(name).is_dir() => {
            Err(not_regular(name, "a directory"))
        }
        Err(e) => Err(io_err("unlink", name, e)),
    }
}

/// Offsets in the header's producer line (see `docs/datahub-format.md`).
const PRODUCER_PID_AT: u64 = 200;
const PRODUCER_START_AT: u64 = 208;

/// Reads `N` bytes at `at` with `pread` (no mapping, so a file shrinking under the reader gives
/// a short read, not a fault).
fn read_at<const N: usize>(f: &File, at: u64) -> Option<[u8; N]> {
    let mut b = [0u8; N];
    f.read_exact_at(&mut b, at).ok()?;
    Some(b)
}

/// The producer recorded in an open segment's header: `(pid, start_time)`, `(0, 0)` if the
/// segment is too short to hold one. `Err` if it is not a DataHub segment at all.
fn recorded_producer(name: &str, seg: &Segment) -> Result<(u32, u64), Error> {
    let Some(magic) = read_at::<8>(&seg.file, 0) else {
        return Ok((0, 0)); // empty: a creator that died before sizing it
    };
    let magic = u64::from_le_bytes(magic);
    if magic == 0 {
        return Ok((0, 0)); // never published: a creator that died initialising it
    }
    if magic != MAGIC {
        return Err(Error::BadMagic {
            expected: MAGIC,
            found: magic,
        });
    }
    if seg.len < HEADER_SIZE as u64 {
        let _ = name;
        return Ok((0, 0));
    }
    let pid = read_at::<4>(&seg.file, PRODUCER_PID_AT).map_or(0, u32::from_le_bytes);
    let start = read_at::<8>(&seg.file, PRODUCER_START_AT).map_or(0, u64::from_le_bytes);
    Ok((pid, start))
}

/// Removes block `name` if no live producer owns it: the file is locked with the producer lock
/// (so a live producer, or another process removing or creating it right now, makes this fail
/// instead of racing), the producer recorded in its header is checked dead under the lock, and
/// the name is unlinked only if it still refers to the locked file. Returns the dead producer's
/// pid (0: the block was never published, or had no producer).
///
/// A file of that name that is not a block (bad magic) is refused, as is anything that is not
/// a regular file. Processes that have the block mapped keep their mapping.
///
/// # Errors
/// [`Error::NotFound`]; [`Error::AlreadyExists`] (a live producer); [`Error::Busy`] (another
/// process holds the lock: it is creating or removing the block); [`Error::BadMagic`],
/// [`Error::NotRegular`], [`Error::InvalidName`], [`Error::Io`].
pub fn remove_dead(name: &str) -> Result<u32, Error> {
    for _ in 0..3 {
        let seg = open(name, Access::ReadOnly)?;
        let (pid, start) = recorded_producer(name, &seg)?;
        let alive = proc::liveness(pid, start) == Liveness::Alive;
        if !try_lock(name, &seg.file)? {
            return Err(if alive {
                Error::AlreadyExists {
                    name: name.to_owned(),
                    pid,
                }
            } else {
                Error::Busy {
                    name: name.to_owned(),
                }
            });
        }
        // Under the lock: nobody can be publishing a new producer in this file.
        let (pid, start) = recorded_producer(name, &seg)?;
        if proc::liveness(pid, start) == Liveness::Alive {
            return Err(Error::AlreadyExists {
                name: name.to_owned(),
                pid,
            });
        }
        if !name_is(name, seg.dev, seg.ino) {
            continue; // replaced since we opened it: judge the new file
        }
        return match rustix::fs::unlink(path_of(name)) {
            Ok(()) => Ok(pid),
            Err(Errno::NOENT) => Err(Error::NotFound {
                name: name.to_owned(),
            }),
            Err(e) => Err(io_err("unlink", name, e)),
        };
    }
    Err(Error::Busy {
        name: name.to_owned(),
    })
}

/// One entry of the shared-memory directory, as [`list_all`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "kind", rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Listed {
    /// A regular file starting with the DataHub magic.
    Block {
        /// Its name.
        name: String,
    },
    /// A regular file this user cannot open (it may or may not be a block).
    Unreadable {
        /// Its name.
        name: String,
        /// Why (the OS error).
        reason: String,
    },
    /// Not a regular file (a link, FIFO, directory, ...), or a name that is not a valid block
    /// name: never opened.
    Skipped {
        /// Its name (lossy UTF-8, clipped).
        name: String,
        /// What it is.
        what: String,
    },
}

/// Every entry of the shared-memory directory that is a DataHub block, cannot be opened, or is
/// not a regular file, sorted by name. Regular files that open and do not start with the magic
/// (other programs' segments) are left out. Never blocks on a FIFO, never follows a link, reads
/// at most 8 bytes of each file.
///
/// # Errors
/// [`Error::Io`] if the directory cannot be read.
pub fn list_all() -> Result<Vec<Listed>, Error> {
    list_where(|_| true)
}

/// [`list_all`] restricted to the entries whose name `keep` accepts: the others are never
/// opened (a scraper watching one prefix does not read every file of the directory). Names
/// that are not UTF-8 are passed to `keep` lossily converted.
///
/// # Errors
/// [`Error::Io`] if the directory cannot be read.
pub fn list_where(mut keep: impl FnMut(&str) -> bool) -> Result<Vec<Listed>, Error> {
    let dir_name = shm_dir().display().to_string();
    let dir = std::fs::read_dir(shm_dir()).map_err(|e| io_err("read_dir", &dir_name, e))?;
    let mut out = Vec::new();
    for entry in dir {
        let entry = entry.map_err(|e| io_err("read_dir", &dir_name, e))?;
        let raw = entry.file_name();
        if !keep(&raw.to_string_lossy()) {
            continue;
        }
        let Some(name) = raw.to_str() else {
            out.push(Listed::Skipped {
                name: crate::error::clip(&raw.to_string_lossy()),
                what: "a name that is not UTF-8".into(),
            });
            continue;
        };
        if check_name(name).is_err() {
            out.push(Listed::Skipped {
                name: crate::error::clip(name),
                what: "not a valid block name".into(),
            });
            continue;
        }
        match open(name, Access::ReadOnly) {
            Ok(seg) => {
                if read_at::<8>(&seg.file, 0).is_some_and(|m| u64::from_le_bytes(m) == MAGIC) {
                    out.push(Listed::Block {
                        name: name.to_owned(),
                    });
                }
            }
            Err(Error::NotFound { .. }) => {} // removed meanwhile
            Err(Error::NotRegular { kind, .. }) => out.push(Listed::Skipped {
                name: name.to_owned(),
                what: kind.to_owned(),
            }),
            Err(Error::Io { source, .. }) => out.push(Listed::Unreadable {
                name: name.to_owned(),
                reason: source.to_string(),
            }),
            Err(e) => out.push(Listed::Unreadable {
                name: name.to_owned(),
                reason: e.to_string(),
            }),
        }
    }
    out.sort_by(|a, b| listed_name(a).cmp(listed_name(b)));
    Ok(out)
}

fn listed_name(l: &Listed) -> &str {
    match l {
        Listed::Block { name } | Listed::Unreadable { name, .. } | Listed::Skipped { name, .. } => {
            name
        }
    }
}

/// Names of the DataHub blocks in the shared-memory directory (see [`list_all`] for what is
/// checked; entries that are not blocks or cannot be opened are left out here), sorted.
///
/// # Errors
/// [`Error::Io`] if the directory cannot be read.
pub fn list() -> Result<Vec<String>, Error> {
    Ok(list_all()?
        .into_iter()
        .filter_map(|l| match l {
            Listed::Block { name } => Some(name),
            _ => None,
        })
        .collect())
}

/// Removes block `name` whatever its state (processes that have it mapped keep their mapping).
/// Prefer [`remove_dead`], which refuses a block with a live producer.
///
/// # Errors
/// [`Error::NotFound`] if there is no such segment, [`Error::Io`] otherwise.
pub fn remove(name: &str) -> Result<(), Error> {
    unlink(name)
}
