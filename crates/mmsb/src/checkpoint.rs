//! Checkpoints: every page at one LSN, in one self-checking file.
//!
//! A checkpoint file `checkpoint-{lsn:020}.ckpt` holds the complete state after the frame with
//! LSN `lsn`: every page (id, epoch, size, location, metadata, bytes, XXH3-64 of the bytes) and
//! the next page id. Recovery loads the newest usable checkpoint and replays the log after its
//! LSN, so checkpoints bound recovery time and let [`crate::tlog::TLog::prune_before`] delete
//! old segments. The byte layout is in `docs/mmsb-format.md`; in short (little endian):
//!
//! ```text
//! header   magic "MMSBCKPT" | version u16 = 2 | flags u16 = 0 | reserved u32 = 0
//!          | lsn u64 | next_page_id u64 | page_count u64 | log_id [16]          (56 bytes)
//! page     id u64 | epoch u64 | size u32 | location u8 | reserved [3] = 0 | meta_count u32
//!          | meta_count x (key_len u16 | key | value_len u32 | value)
//!          | bytes [size] | xxh3_64(bytes) u64
//! trailer  crc32c u32 of every byte before it
//! ```
//!
//! The log id ([`crate::logdir`]) ties a checkpoint to the log it was taken of: the bus writes its
//! log's id ([`write_for_log`]), [`write()`] writes [`LogId::DETACHED`] (a state that belongs to no
//! log, as `mmsb replay` writes), and restore only uses checkpoints that carry the directory's
//! id. Version 1 files (40-byte header, no id) are still read, with `log_id: None`.
//!
//! Writing is crash-safe: the file is written under a temporary name in the same directory,
//! fsynced, renamed over the final name, and the directory is fsynced; a crash leaves either
//! no checkpoint or a complete one (plus, at worst, a temporary file that the next
//! [`write()`] removes and readers ignore).

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::frame::MAX_METADATA_KEY_LEN;
use crate::logdir::LogId;
use crate::page::{Location, Lsn, MAX_PAGE_SIZE, Page, PageId};
use crate::tlog::segment::{open_regular, open_regular_with};
use crate::tlog::sync_dir;

/// The first 8 bytes of a checkpoint file.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"MMSBCKPT";
/// The checkpoint format version this build reads and writes.
pub const CHECKPOINT_VERSION: u16 = 2;

// The checkpoint header and the fixed part of a page record, as in `docs/mmsb-format.md`
// section 2 (all integers little endian). Each offset is the previous field's offset plus its
// length; `write_file` and `read` both use these constants.
//
// header (56 bytes; 40 in version 1, which has no log_id)
//      0    8 magic          "MMSBCKPT"
//      8    2 version        2 (1 is still read)
//     10    2 flags          0
//     12    4 reserved       0
//     16    8 lsn            the last frame whose effect is included; equals the LSN in the name
//     24    8 next_page_id   the id the next created page gets
//     32    8 page_count
//     40   16 log_id         the log it was taken of; all zero: detached (belongs to no log)
// page record, page_count times
//      0    8 id
//      8    8 epoch
//     16    4 size           1 ..= 2^30
//     20    1 location       0 = CPU
//     21    3 reserved       0
//     24    4 meta_count
//     28    4 reserved       0
//     32      meta_count x { key_len u16 | key (UTF-8) | value_len u32 | value }, keys ascending
//      -      bytes [size]
//      -    8 xxh3_64(bytes)
// trailer
//      0    4 crc            CRC32C of every byte before the trailer
const MAGIC_OFFSET: usize = 0;
const MAGIC_LEN: usize = CHECKPOINT_MAGIC.len();
const VERSION_OFFSET: usize = MAGIC_OFFSET + MAGIC_LEN;
const VERSION_LEN: usize = 2;
/// `flags` and `reserved`, both zero.
const FLAGS_OFFSET: usize = VERSION_OFFSET + VERSION_LEN;
const FLAGS_RESERVED_LEN: usize = 2 + 4;
const LSN_OFFSET: usize = FLAGS_OFFSET + FLAGS_RESERVED_LEN;
const LSN_LEN: usize = 8;
const NEXT_PAGE_ID_OFFSET: usize = LSN_OFFSET + LSN_LEN;
const NEXT_PAGE_ID_LEN: usize = 8;
const PAGE_COUNT_OFFSET: usize = NEXT_PAGE_ID_OFFSET + NEXT_PAGE_ID_LEN;
const PAGE_COUNT_LEN: usize = 8;
/// Length of the fixed header of version 1 (no log id).
const HEADER_LEN_V1: usize = PAGE_COUNT_OFFSET + PAGE_COUNT_LEN;
/// Offset of the log id in a version-2 header.
const LOG_ID_OFFSET: usize = HEADER_LEN_V1;
const LOG_ID_LEN: usize = 16;
/// Length of the fixed header.
const HEADER_LEN: usize = LOG_ID_OFFSET + LOG_ID_LEN;
const _: () = assert!(HEADER_LEN_V1 == 40 && HEADER_LEN == 56);

const PAGE_ID_OFFSET: usize = 0;
const PAGE_ID_LEN: usize = 8;
const PAGE_EPOCH_OFFSET: usize = PAGE_ID_OFFSET + PAGE_ID_LEN;
const PAGE_EPOCH_LEN: usize = 8;
const PAGE_SIZE_OFFSET: usize = PAGE_EPOCH_OFFSET + PAGE_EPOCH_LEN;
const PAGE_SIZE_LEN: usize = 4;
const PAGE_LOCATION_OFFSET: usize = PAGE_SIZE_OFFSET + PAGE_SIZE_LEN;
const PAGE_LOCATION_LEN: usize = 1;
const PAGE_RESERVED1_OFFSET: usize = PAGE_LOCATION_OFFSET + PAGE_LOCATION_LEN;
const PAGE_RESERVED1_LEN: usize = 3;
const PAGE_META_COUNT_OFFSET: usize = PAGE_RESERVED1_OFFSET + PAGE_RESERVED1_LEN;
const PAGE_META_COUNT_LEN: usize = 4;
const PAGE_RESERVED2_OFFSET: usize = PAGE_META_COUNT_OFFSET + PAGE_META_COUNT_LEN;
const PAGE_RESERVED2_LEN: usize = 4;
/// Fixed part of a page record (before metadata).
const PAGE_FIXED: usize = PAGE_RESERVED2_OFFSET + PAGE_RESERVED2_LEN;
const _: () = assert!(PAGE_FIXED == 32);
/// Suffix of temporary files.
const TMP_SUFFIX: &str = ".ckpt.tmp";

/// What [`write()`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// The checkpoint file.
    pub path: PathBuf,
    /// The LSN it covers (the state after this frame).
    pub lsn: Lsn,
    /// Pages written.
    pub pages: usize,
    /// File size in bytes.
    pub bytes: u64,
}

/// A checkpoint read back by [`read`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The LSN it covers: the state after the frame with this LSN.
    pub lsn: Lsn,
    /// The id the next created page gets.
    pub next_page_id: u64,
    /// Every page, in the order they were written. Pages are never stale after a restore.
    pub pages: Vec<Page>,
    /// The log it was taken of ([`LogId::DETACHED`] for none); `None` for a version-1 file.
    pub log_id: Option<LogId>,
}

/// The file name of the checkpoint at `lsn`.
#[must_use]
pub fn file_name(lsn: Lsn) -> String {
    format!("checkpoint-{:020}.ckpt", lsn.0)
}

/// The LSN in a checkpoint file name, if `name` is one (temporary files are not).
#[must_use]
pub fn parse_file_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_prefix("checkpoint-")?.strip_suffix(".ckpt")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Lsn)
}

/// A writer that keeps the CRC32C of everything written through it.
struct CrcWriter<W: Write> {
    inner: W,
    crc: u32,
    bytes: u64,
}

impl<W: Write> CrcWriter<W> {
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, b);
        self.bytes += b.len() as u64;
        self.inner.write_all(b)
    }
}

/// Writes a detached checkpoint (one that belongs to no log, [`LogId::DETACHED`]) of `pages`
/// at `lsn` into `dir` (created if missing) and returns where: [`write_for_log`] with the
/// detached id. A log directory never restores from a detached checkpoint.
///
/// # Errors
/// As [`write_for_log`].
pub fn write<'a>(
    dir: &Path,
    lsn: Lsn,
    next_page_id: u64,
    pages: impl IntoIterator<Item = &'a Page>,
) -> Result<CheckpointInfo> {
    write_for_log(dir, LogId::DETACHED, lsn, next_page_id, pages)
}

/// Writes a checkpoint of `pages` at `lsn`, taken of the log `log_id`, into `dir` (created if
/// missing) and returns where.
///
/// `lsn` is the LSN of the last frame whose effect the pages include; `next_page_id` is the id
/// the next created page will get. Any leftover temporary checkpoint files in `dir` are deleted
/// first. The file is written as `checkpoint-{lsn:020}.ckpt.tmp`, fsynced, renamed to
/// `checkpoint-{lsn:020}.ckpt` (replacing an existing checkpoint at the same LSN) and the
/// directory is fsynced, so a crash at any point leaves either the old set of checkpoints or
/// the new one.
///
/// # Errors
/// [`Error::PageExists`] when a page id appears twice, [`Error::InvalidPageSize`] for a page
/// of size 0 or above [`MAX_PAGE_SIZE`], [`Error::MetadataKeyTooLong`] for a key over
/// [`MAX_METADATA_KEY_LEN`] bytes or [`Error::SizeMismatch`] for a metadata value of 4 GiB or
/// more (nothing is renamed into place in these cases); [`Error::Io`] for failed system calls.
pub fn write_for_log<'a>(
    dir: &Path,
    log_id: LogId,
    lsn: Lsn,
    next_page_id: u64,
    pages: impl IntoIterator<Item = &'a Page>,
) -> Result<CheckpointInfo> {
    let pages: Vec<&Page> = pages.into_iter().collect();
    let mut seen = HashSet::with_capacity(pages.len());
    for p in &pages {
        if !seen.insert(p.id) {
            return Err(Error::PageExists(p.id));
        }
        if p.bytes.is_empty() || p.bytes.len() > MAX_PAGE_SIZE {
            return Err(Error::InvalidPageSize {
                size: p.bytes.len(),
                max: MAX_PAGE_SIZE,
            });
        }
        for (k, v) in &p.metadata {
            if k.len() > MAX_METADATA_KEY_LEN {
                return Err(Error::MetadataKeyTooLong {
                    len: k.len(),
                    max: MAX_METADATA_KEY_LEN,
                });
            }
            if u32::try_from(v.len()).is_err() {
                return Err(Error::SizeMismatch {
                    page: p.id,
                    expected: u32::MAX as usize,
                    found: v.len(),
                });
            }
        }
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    remove_temporaries(dir)?;
    let final_path = dir.join(file_name(lsn));
    let tmp_path = dir.join(format!(
        "{}{TMP_SUFFIX}",
        file_name(lsn).trim_end_matches(".ckpt")
    ));
    let r = write_file(&tmp_path, log_id, lsn, next_page_id, &pages);
    let bytes = match r {
        Ok(b) => b,
        Err(e) => {
            let _ = fs::remove_file(&tmp_path);
            return Err(Error::io(&tmp_path, e));
        }
    };
    fs::rename(&tmp_path, &final_path).map_err(|e| Error::io(&final_path, e))?;
    sync_dir(dir)?;
    Ok(CheckpointInfo {
        path: final_path,
        lsn,
        pages: pages.len(),
        bytes,
    })
}

fn write_file(
    path: &Path,
    log_id: LogId,
    lsn: Lsn,
    next_page_id: u64,
    pages: &[&Page],
) -> io::Result<u64> {
    let (f, _) =
        open_regular_with(path, OpenOptions::new().write(true).create_new(true)).map_err(|e| {
            match e {
                Error::Io { source, .. } => source,
                other => io::Error::other(other.to_string()),
            }
        })?;
    let mut w = CrcWriter {
        inner: BufWriter::with_capacity(1 << 20, f),
        crc: 0,
        bytes: 0,
    };
    let mut h = [0u8; HEADER_LEN];
    h[MAGIC_OFFSET..MAGIC_OFFSET + MAGIC_LEN].copy_from_slice(&CHECKPOINT_MAGIC);
    h[VERSION_OFFSET..VERSION_OFFSET + VERSION_LEN]
        .copy_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
    h[LSN_OFFSET..LSN_OFFSET + LSN_LEN].copy_from_slice(&lsn.0.to_le_bytes());
    h[NEXT_PAGE_ID_OFFSET..NEXT_PAGE_ID_OFFSET + NEXT_PAGE_ID_LEN]
        .copy_from_slice(&next_page_id.to_le_bytes());
    h[PAGE_COUNT_OFFSET..PAGE_COUNT_OFFSET + PAGE_COUNT_LEN]
        .copy_from_slice(&(pages.len() as u64).to_le_bytes());
    h[LOG_ID_OFFSET..LOG_ID_OFFSET + LOG_ID_LEN].copy_from_slice(&log_id.0);
    w.put(&h)?;
    for p in pages {
        let mut fixed = [0u8; PAGE_FIXED];
        fixed[PAGE_ID_OFFSET..PAGE_ID_OFFSET + PAGE_ID_LEN].copy_from_slice(&p.id.0.to_le_bytes());
        fixed[PAGE_EPOCH_OFFSET..PAGE_EPOCH_OFFSET + PAGE_EPOCH_LEN]
            .copy_from_slice(&p.epoch.to_le_bytes());
        fixed[PAGE_SIZE_OFFSET..PAGE_SIZE_OFFSET + PAGE_SIZE_LEN]
            .copy_from_slice(&(p.bytes.len() as u32).to_le_bytes());
        fixed[PAGE_LOCATION_OFFSET] = p.location.code();
        // PAGE_RESERVED1: zero.
        fixed[PAGE_META_COUNT_OFFSET..PAGE_META_COUNT_OFFSET + PAGE_META_COUNT_LEN]
            .copy_from_slice(&(p.metadata.len() as u32).to_le_bytes());
        // PAGE_RESERVED2: zero.
        w.put(&fixed)?;
        for (k, v) in &p.metadata {
            w.put(&(k.len() as u16).to_le_bytes())?;
            w.put(k.as_bytes())?;
            w.put(&(v.len() as u32).to_le_bytes())?;
            w.put(v)?;
        }
        w.put(&p.bytes)?;
        w.put(&p.hash().to_le_bytes())?;
    }
    let crc = w.crc;
    w.inner.write_all(&crc.to_le_bytes())?;
    let f = w
        .inner
        .into_inner()
        .map_err(io::IntoInnerError::into_error)?;
    f.sync_all()?;
    Ok(w.bytes + 4)
}

/// Deletes leftover temporary checkpoint files (`checkpoint-*.ckpt.tmp`) in `dir`.
fn remove_temporaries(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        if let Some(name) = name.to_str()
            && name.starts_with("checkpoint-")
            && name.ends_with(TMP_SUFFIX)
        {
            let p = entry.path();
            fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
        }
    }
    Ok(())
}

/// Reads a checkpoint file through a CRC, never past the body (the last 4 bytes).
struct CkptReader {
    inner: BufReader<File>,
    crc: u32,
    /// Body bytes not yet read.
    left: u64,
    path: PathBuf,
}

impl CkptReader {
    fn corrupt(&self, reason: impl Into<String>) -> Error {
        Error::CorruptCheckpoint {
            file: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// Checks that `n` more bytes exist before allocating for them.
    fn ensure(&self, n: u64, what: &str) -> Result<()> {
        if n > self.left {
            return Err(self.corrupt(format!("{what} of {n} bytes runs past the end of the file")));
        }
        Ok(())
    }

    fn take_into(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        self.ensure(buf.len() as u64, what)?;
        self.inner
            .read_exact(buf)
            .map_err(|e| Error::io(&self.path, e))?;
        self.crc = crc32c::crc32c_append(self.crc, buf);
        self.left -= buf.len() as u64;
        Ok(())
    }

    fn take<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.take_into(&mut b, what)?;
        Ok(b)
    }

    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(what)?))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(what)?))
    }

    fn vec(&mut self, n: u64, what: &str) -> Result<Vec<u8>> {
        self.ensure(n, what)?;
        let mut v = vec![0u8; n as usize];
        self.take_into(&mut v, what)?;
        Ok(v)
    }
}

/// Reads and fully checks the checkpoint file at `path`.
///
/// Checked: magic, version, reserved fields, every length against the bytes left in the file
/// (so a corrupt length never causes a large allocation), page sizes in `1..=MAX_PAGE_SIZE`,
/// known locations, UTF-8 and unique metadata keys, unique page ids, each page's XXH3-64, that
/// the last page ends exactly at the trailer, the CRC32C of the whole file, and, for a file
/// named `checkpoint-{lsn}.ckpt`, that the LSN in the header is the one in the name. The file
/// is opened without following a link and must be a regular file ([`Error::NotRegularFile`]).
///
/// # Errors
/// [`Error::BadMagic`] when the file is not a checkpoint, [`Error::UnsupportedVersion`] for
/// another format version, [`Error::CorruptCheckpoint`] (with the reason) for any failed
/// check, [`Error::Io`] when the file cannot be read.
pub fn read(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let path = path.as_ref().to_path_buf();
    let (f, len) = open_regular(&path)?;
    let mut r = CkptReader {
        inner: BufReader::with_capacity(1 << 20, f),
        crc: 0,
        left: len.saturating_sub(4),
        path,
    };
    if len < (HEADER_LEN_V1 + 4) as u64 {
        // Distinguish "not a checkpoint" from "a truncated one" where the magic is there.
        let mut head = vec![0u8; len.min(MAGIC_LEN as u64) as usize];
        r.inner
            .read_exact(&mut head)
            .map_err(|e| Error::io(&r.path, e))?;
        if head.as_slice() != &CHECKPOINT_MAGIC[..head.len()] {
            return Err(Error::BadMagic {
                file: r.path.clone(),
                what: "checkpoint",
            });
        }
        return Err(r.corrupt(format!(
            "file of {len} bytes is shorter than a checkpoint header"
        )));
    }
    let h: [u8; HEADER_LEN_V1] = r.take("header")?;
    if h[MAGIC_OFFSET..MAGIC_OFFSET + MAGIC_LEN] != CHECKPOINT_MAGIC {
        return Err(Error::BadMagic {
            file: r.path.clone(),
            what: "checkpoint",
        });
    }
    let version = u16::from_le_bytes([h[VERSION_OFFSET], h[VERSION_OFFSET + 1]]);
    if version != CHECKPOINT_VERSION && version != 1 {
        return Err(Error::UnsupportedVersion {
            file: r.path.clone(),
            found: version,
            supported: CHECKPOINT_VERSION,
        });
    }
    if h[FLAGS_OFFSET..FLAGS_OFFSET + FLAGS_RESERVED_LEN]
        .iter()
        .any(|&b| b != 0)
    {
        return Err(r.corrupt("reserved header bytes are not zero"));
    }
    let le = |a: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[a..a + 8]);
        u64::from_le_bytes(b)
    };
    let log_id = if version == 1 {
        None
    } else {
        Some(LogId(r.take("log id")?))
    };
    let lsn = Lsn(le(LSN_OFFSET));
    // A name read from disk is not trusted: the file's own LSN must agree with it.
    if let Some(named) = r
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_file_name)
        && named != lsn
    {
        return Err(r.corrupt(format!("its name says {named} but its header says {lsn}")));
    }
    let next_page_id = le(NEXT_PAGE_ID_OFFSET);
    let count = le(PAGE_COUNT_OFFSET);
    // Every page record takes at least PAGE_FIXED + 1 byte + 8 bytes of hash.
    let min_record = (PAGE_FIXED + 1 + 8) as u64;
    if count > r.left / min_record {
        return Err(r.corrupt(format!("page count {count} cannot fit in the file")));
    }
    let mut pages = Vec::with_capacity(count as usize);
    let mut ids = HashSet::with_capacity(count as usize);
    for i in 0..count {
        let fixed: [u8; PAGE_FIXED] = r.take("page header")?;
        let le8 = |a: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&fixed[a..a + 8]);
            u64::from_le_bytes(b)
        };
        let le4 =
            |a: usize| u32::from_le_bytes([fixed[a], fixed[a + 1], fixed[a + 2], fixed[a + 3]]);
        let id = PageId(le8(PAGE_ID_OFFSET));
        let epoch = le8(PAGE_EPOCH_OFFSET);
        let size = le4(PAGE_SIZE_OFFSET) as usize;
        let code = fixed[PAGE_LOCATION_OFFSET];
        let location = Location::from_code(code)
            .ok_or_else(|| r.corrupt(format!("page {i}: unknown location code {code}")))?;
        if fixed[PAGE_RESERVED1_OFFSET..PAGE_RESERVED1_OFFSET + PAGE_RESERVED1_LEN]
            .iter()
            .any(|&b| b != 0)
            || le4(PAGE_RESERVED2_OFFSET) != 0
        {
            return Err(r.corrupt(format!("page {i}: reserved bytes are not zero")));
        }
        let meta_count = le4(PAGE_META_COUNT_OFFSET);
        if size == 0 || size > MAX_PAGE_SIZE {
            return Err(r.corrupt(format!("{id}: size {size} is outside 1..={MAX_PAGE_SIZE}")));
        }
        if !ids.insert(id) {
            return Err(r.corrupt(format!("{id} appears twice")));
        }
        // Each metadata entry takes at least 6 bytes.
        if u64::from(meta_count) > r.left / 6 {
            return Err(r.corrupt(format!(
                "{id}: {meta_count} metadata entries cannot fit in the file"
            )));
        }
        let mut metadata = BTreeMap::new();
        for _ in 0..meta_count {
            let klen = r.u16("metadata key length")?;
            let key = r.vec(u64::from(klen), "metadata key")?;
            let key = String::from_utf8(key)
                .map_err(|_| r.corrupt(format!("{id}: metadata key is not UTF-8")))?;
            let vlen = r.u32("metadata value length")?;
            let value = r.vec(u64::from(vlen), "metadata value")?;
            if metadata.insert(key, value).is_some() {
                return Err(r.corrupt(format!("{id}: a metadata key appears twice")));
            }
        }
        let bytes = r.vec(size as u64, "page bytes")?.into_boxed_slice();
        let hash = r.u64("page hash")?;
        let page = Page {
            id,
            epoch,
            bytes,
            metadata,
            location,
            stale: false,
        };
        let actual = page.hash();
        if actual != hash {
            return Err(r.corrupt(format!(
                "{id}: bytes hash to {actual:016x}, the checkpoint says {hash:016x}"
            )));
        }
        pages.push(page);
    }
    if r.left != 0 {
        return Err(r.corrupt(format!("{} unexpected bytes after the last page", r.left)));
    }
    let mut t = [0u8; 4];
    r.inner
        .read_exact(&mut t)
        .map_err(|e| Error::io(&r.path, e))?;
    let stored = u32::from_le_bytes(t);
    if stored != r.crc {
        return Err(r.corrupt(format!(
            "CRC mismatch: stored {stored:08x}, computed {:08x}",
            r.crc
        )));
    }
    Ok(Checkpoint {
        lsn,
        next_page_id,
        pages,
        log_id,
    })
}

/// The checkpoint files in `dir` with their LSNs, oldest first (newest last). A missing
/// directory has none. Temporary files are ignored.
///
/// # Errors
/// [`Error::Io`] when the directory exists but cannot be read.
pub fn list(dir: impl AsRef<Path>) -> Result<Vec<(Lsn, PathBuf)>> {
    let dir = dir.as_ref();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut v = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if let Some(lsn) = entry.file_name().to_str().and_then(parse_file_name) {
            v.push((lsn, entry.path()));
        }
    }
    v.sort();
    Ok(v)
}

/// A checkpoint file that failed its checks, and why.
pub type Skipped = (PathBuf, Error);

/// The newest checkpoint in `dir` that passes every check of [`read`], and the newer ones
/// that did not (with why), newest first. `(None, ..)` when there is no valid checkpoint.
///
/// This does not check that a checkpoint belongs to the directory's log, nor that the log
/// still holds what follows it; restoring a log directory uses the rule of
/// [`crate::restore`] instead ([`crate::State::restore`], [`crate::Mmsb::start`]).
///
/// # Errors
/// [`Error::Io`] when the directory cannot be listed. Errors reading a single checkpoint
/// (including I/O errors) are reported in the list, not returned.
pub fn newest_valid(dir: impl AsRef<Path>) -> Result<(Option<Checkpoint>, Vec<Skipped>)> {
    let mut skipped = Vec::new();
    for (_, path) in list(dir)?.into_iter().rev() {
        match read(&path) {
            Ok(c) => return Ok((Some(c), skipped)),
            Err(e) => skipped.push((path, e)),
        }
    }
    Ok((None, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(file_name(Lsn(42)), "checkpoint-00000000000000000042.ckpt");
        assert_eq!(parse_file_name(&file_name(Lsn(42))), Some(Lsn(42)));
        assert_eq!(
            parse_file_name("checkpoint-00000000000000000042.ckpt.tmp"),
            None
        );
        assert_eq!(parse_file_name("checkpoint-42.ckpt"), None);
    }
}
