//! Recognising a log directory, and the log id that ties checkpoints to their log.
//!
//! A log directory holds a `LOGID` file written when the log is created: a random 128-bit id,
//! checksummed. The bus writes this id into every checkpoint it takes, and only a checkpoint
//! that carries the directory's id is ever restored from, by readers ([`crate::State::restore`])
//! and the writer ([`crate::Mmsb::start`]) alike; a checkpoint copied in from another log, or a
//! detached one written by `mmsb replay`, is reported and ignored.
//!
//! ```text
//! offset  size  field
//!      0     8  magic        "MMSBLGID"
//!      8     2  version      1
//!     10     2  flags        bit 0 = ADOPTED: the log predates log ids (see below)
//!     12     4  reserved     0
//!     16    16  log id       random
//!     32     4  crc32c       of bytes 0..32
//!     36     4  reserved     0                                              (40 bytes)
//! ```
//!
//! [`probe`] classifies a directory without modifying it: a log ([`DirKind::Log`]), a log
//! written before log ids existed ([`DirKind::Legacy`]: segment files with the segment magic but
//! no `LOGID`; readable, and its writer adds a `LOGID` with the ADOPTED flag, under which
//! checkpoints of format version 1, which carry no id, are still restored from), an empty or
//! missing directory (where only a writer may create a new log), a creation that a crash
//! interrupted ([`DirKind::Unfinished`]: only `LOCK`/`LOGID.tmp`; an empty log), or not a log
//! at all ([`crate::Error::NotALog`]).

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::tlog::segment::{open_regular, open_regular_with, read_full_at};
use crate::tlog::{LOCK_FILE, SEGMENT_MAGIC, parse_segment_file_name, sync_dir};

/// Name of the log id file in a log directory.
pub const LOG_ID_FILE: &str = "LOGID";
/// The first 8 bytes of a log id file.
pub const LOG_ID_MAGIC: [u8; 8] = *b"MMSBLGID";
/// The log id file version this build reads and writes.
pub const LOG_ID_VERSION: u16 = 1;
/// Length of the log id file.
pub const LOG_ID_LEN: usize = 40;
const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + 8;
const FLAGS_OFFSET: usize = VERSION_OFFSET + 2;
const RESERVED_OFFSET: usize = FLAGS_OFFSET + 2;
const ID_OFFSET: usize = RESERVED_OFFSET + 4;
const CRC_OFFSET: usize = ID_OFFSET + 16;
const RESERVED2_OFFSET: usize = CRC_OFFSET + 4;
const _: () = assert!(RESERVED2_OFFSET + 4 == LOG_ID_LEN);
/// Flag: the log was created before log ids; version-1 checkpoints (no id) belong to it.
const FLAG_ADOPTED: u16 = 1;
/// Temporary name of the log id file while it is written.
const TMP_NAME: &str = "LOGID.tmp";

/// A log's identity: 16 random bytes. All zeros ([`LogId::DETACHED`]) marks a checkpoint that
/// belongs to no log.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct LogId(pub [u8; 16]);

impl LogId {
    /// The id of no log (detached checkpoints).
    pub const DETACHED: LogId = LogId([0; 16]);

    /// A fresh id: XXH3-128 of the time, the process id, a stack address and a counter.
    #[must_use]
    pub fn generate() -> LogId {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let local = 0u8;
        let mut seed = Vec::with_capacity(48);
        seed.extend_from_slice(&t.to_le_bytes());
        seed.extend_from_slice(&std::process::id().to_le_bytes());
        seed.extend_from_slice(&(std::ptr::addr_of!(local) as usize as u64).to_le_bytes());
        // Relaxed: only uniqueness within the process matters, no ordering with other memory.
        seed.extend_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        let id = LogId(xxhash_rust::xxh3::xxh3_128(&seed).to_le_bytes());
        if id == LogId::DETACHED {
            LogId([1; 16])
        } else {
            id
        }
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == LogId::DETACHED {
            return write!(f, "no log (a detached checkpoint)");
        }
        write!(f, "log ")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What a directory's `LOGID` file says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogIdentity {
    /// The log's id.
    pub id: LogId,
    /// The log predates log ids: version-1 checkpoints (which carry no id) belong to it.
    pub adopted: bool,
}

impl LogIdentity {
    /// Whether a checkpoint recording `ckpt` (`None`: a version-1 checkpoint) belongs here.
    #[must_use]
    pub fn owns(&self, ckpt: Option<LogId>) -> bool {
        match ckpt {
            Some(id) => id == self.id,
            None => self.adopted,
        }
    }
}

/// What [`probe`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirKind {
    /// The path does not exist.
    Missing,
    /// An empty directory.
    Empty,
    /// A directory that holds nothing but a `LOCK` and/or a `LOGID.tmp`: a writer began to
    /// create a log here and died before writing `LOGID`. Readers see an empty log; the next
    /// writer finishes creating it.
    Unfinished,
    /// A log with a `LOGID` file.
    Log(LogIdentity),
    /// A log written before log ids: segment files with the segment magic, no `LOGID`.
    Legacy,
}

impl DirKind {
    /// Whether the directory holds a log (with or without a `LOGID`).
    #[must_use]
    pub fn is_log(&self) -> bool {
        matches!(self, DirKind::Log(_) | DirKind::Legacy)
    }

    /// Whether checkpoints recording `ckpt` belong to this directory's log. In a legacy
    /// directory only version-1 checkpoints do; in an empty or missing one none.
    #[must_use]
    pub fn owns(&self, ckpt: Option<LogId>) -> bool {
        match self {
            DirKind::Log(ident) => ident.owns(ckpt),
            DirKind::Legacy => ckpt.is_none(),
            DirKind::Missing | DirKind::Empty | DirKind::Unfinished => false,
        }
    }
}

/// Classifies `dir` without modifying anything.
///
/// # Errors
/// [`Error::NotALog`] for a path that is not a directory, or a non-empty directory with
/// neither a `LOGID` file nor a segment file that starts with the segment magic;
/// [`Error::CorruptLogId`] / [`Error::NotRegularFile`] for a bad `LOGID` file; [`Error::Io`].
pub fn probe(dir: &Path) -> Result<DirKind> {
    let meta = match fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DirKind::Missing),
        Err(e) => return Err(Error::io(dir, e)),
    };
    if !meta.is_dir() {
        return Err(Error::NotALog {
            dir: dir.to_path_buf(),
            reason: "not a directory".into(),
        });
    }
    let mut other = 0usize;
    let mut segment_names = 0usize;
    let mut has_id = false;
    let mut magic_seen = false;
    let mut begun = false;
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        if name == LOG_ID_FILE {
            has_id = true;
        } else if name == LOCK_FILE || name == TMP_NAME {
            begun = true;
        } else if parse_segment_file_name(&name).is_some() {
            segment_names += 1;
            if !magic_seen && let Ok((f, len)) = open_regular(&entry.path()) {
                let mut m = [0u8; 8];
                magic_seen = len >= 8
                    && read_full_at(&f, &mut m, 0).is_ok_and(|n| n == 8)
                    && m == SEGMENT_MAGIC;
            }
        } else {
            other += 1;
        }
    }
    if has_id {
        return read_identity(dir).map(DirKind::Log);
    }
    if magic_seen {
        return Ok(DirKind::Legacy);
    }
    if segment_names == 0 && other == 0 {
        return Ok(if begun {
            DirKind::Unfinished
        } else {
            DirKind::Empty
        });
    }
    Err(Error::NotALog {
        dir: dir.to_path_buf(),
        reason: if segment_names > 0 {
            format!(
                "no {LOG_ID_FILE} file, and none of its {segment_names} segment-named files starts with the segment magic"
            )
        } else {
            format!("no {LOG_ID_FILE} file and no log segments")
        },
    })
}

/// [`probe`], requiring a log (readers: an empty or missing directory is not a log; an
/// unfinished one is an empty log).
///
/// # Errors
/// As [`probe`]; [`Error::NotALog`] also for an empty or missing directory.
pub fn probe_log(dir: &Path) -> Result<DirKind> {
    match probe(dir)? {
        DirKind::Missing => Err(Error::NotALog {
            dir: dir.to_path_buf(),
            reason: "no such directory".into(),
        }),
        DirKind::Empty => Err(Error::NotALog {
            dir: dir.to_path_buf(),
            reason: "the directory is empty".into(),
        }),
        k => Ok(k),
    }
}

/// Reads and checks `dir/LOGID`.
///
/// # Errors
/// [`Error::CorruptLogId`], [`Error::UnsupportedVersion`], [`Error::NotRegularFile`],
/// [`Error::Io`].
pub fn read_identity(dir: &Path) -> Result<LogIdentity> {
    let path = dir.join(LOG_ID_FILE);
    let corrupt = |reason: String| Error::CorruptLogId {
        file: path.clone(),
        reason,
    };
    let (f, len) = open_regular(&path)?;
    if len != LOG_ID_LEN as u64 {
        return Err(corrupt(format!(
            "the file has {len} bytes, expected {LOG_ID_LEN}"
        )));
    }
    let mut h = [0u8; LOG_ID_LEN];
    let n = read_full_at(&f, &mut h, 0).map_err(|e| Error::io(&path, e))?;
    if n != LOG_ID_LEN {
        return Err(corrupt(format!("short read: {n} bytes")));
    }
    if h[MAGIC_OFFSET..VERSION_OFFSET] != LOG_ID_MAGIC {
        return Err(corrupt("bad magic".into()));
    }
    let u16_at = |a: usize| u16::from_le_bytes([h[a], h[a + 1]]);
    let u32_at = |a: usize| u32::from_le_bytes([h[a], h[a + 1], h[a + 2], h[a + 3]]);
    let stored = u32_at(CRC_OFFSET);
    let computed = crc32c::crc32c(&h[..CRC_OFFSET]);
    if stored != computed {
        return Err(corrupt(format!(
            "CRC mismatch: stored {stored:08x}, computed {computed:08x}"
        )));
    }
    let version = u16_at(VERSION_OFFSET);
    if version != LOG_ID_VERSION {
        return Err(Error::UnsupportedVersion {
            file: path,
            found: version,
            supported: LOG_ID_VERSION,
        });
    }
    let flags = u16_at(FLAGS_OFFSET);
    if flags & !FLAG_ADOPTED != 0 || u32_at(RESERVED_OFFSET) != 0 || u32_at(RESERVED2_OFFSET) != 0 {
        return Err(corrupt("unknown flags or reserved bytes not zero".into()));
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&h[ID_OFFSET..CRC_OFFSET]);
    Ok(LogIdentity {
        id: LogId(id),
        adopted: flags & FLAG_ADOPTED != 0,
    })
}

/// Writes a new `dir/LOGID` (temporary file, fsync, rename, directory fsync) and returns it.
/// Only the writer calls this, holding the lock, in a directory [`probe`] found empty or legacy.
pub(crate) fn create_identity(dir: &Path, adopted: bool) -> Result<LogIdentity> {
    let ident = LogIdentity {
        id: LogId::generate(),
        adopted,
    };
    let mut h = [0u8; LOG_ID_LEN];
    h[MAGIC_OFFSET..VERSION_OFFSET].copy_from_slice(&LOG_ID_MAGIC);
    h[VERSION_OFFSET..FLAGS_OFFSET].copy_from_slice(&LOG_ID_VERSION.to_le_bytes());
    let flags = if adopted { FLAG_ADOPTED } else { 0 };
    h[FLAGS_OFFSET..RESERVED_OFFSET].copy_from_slice(&flags.to_le_bytes());
    h[ID_OFFSET..CRC_OFFSET].copy_from_slice(&ident.id.0);
    let crc = crc32c::crc32c(&h[..CRC_OFFSET]);
    h[CRC_OFFSET..RESERVED2_OFFSET].copy_from_slice(&crc.to_le_bytes());
    let tmp = dir.join(TMP_NAME);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&tmp, e)),
    }
    let (mut f, _) = open_regular_with(&tmp, OpenOptions::new().write(true).create_new(true))?;
    f.write_all(&h)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    let path = dir.join(LOG_ID_FILE);
    fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    sync_dir(dir)?;
    Ok(ident)
}
