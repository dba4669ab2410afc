//! The one error type of this crate.

use std::path::PathBuf;
use std::time::Duration;

use crate::page::{Lsn, PageId};

/// Everything that can go wrong in `mmsb`. Each variant names the condition; file errors name the
/// file and, for log frames, the byte offset of the frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call on `path` failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Another writer holds the log directory's lock (one writer per log), and still held it
    /// when the lock timeout ([`crate::tlog::LogConfig::lock_timeout`],
    /// [`field@crate::Config::lock_timeout`]) ran out.
    #[error(
        "{dir}: the log is locked by another writer (gave up after {} ms)",
        .waited.as_millis()
    )]
    Locked {
        /// The log directory.
        dir: PathBuf,
        /// How long `TLog::open` tried before giving up (at least the lock timeout).
        waited: Duration,
    },
    /// A file does not start with the expected magic bytes: it is not an MMSB log segment or
    /// checkpoint.
    #[error("{file}: not an MMSB {what} (bad magic)")]
    BadMagic {
        /// The file.
        file: PathBuf,
        /// "log segment" or "checkpoint".
        what: &'static str,
    },
    /// A file has a format version this build does not read.
    #[error("{file}: format version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion {
        /// The file.
        file: PathBuf,
        /// Version in the file.
        found: u16,
        /// Version this build reads and writes.
        supported: u16,
    },
    /// A frame that is followed by valid data fails its checks: the log is corrupt in the
    /// middle, and recovering would silently drop committed frames, so it is refused.
    #[error("{file}: corrupt frame at byte offset {offset}: {reason}")]
    CorruptFrame {
        /// The segment file.
        file: PathBuf,
        /// Byte offset of the frame's first byte.
        offset: u64,
        /// What failed (CRC, length, LSN order, field value).
        reason: String,
    },
    /// The end of the last segment holds bytes that are not a valid frame, that no valid frame
    /// follows, and that are not a torn write (see `docs/failure-model/mmsb.md`): a complete
    /// frame that was damaged after it was written. Cutting it could drop committed frames, so
    /// readers and the writer refuse the log and nothing is changed.
    #[error(
        "{file}: damaged frame at byte offset {offset}: {reason}; committed frames may be lost, so nothing was changed (to discard the frame and everything after it, truncate the file to {offset} bytes)"
    )]
    DamagedTail {
        /// The segment file.
        file: PathBuf,
        /// Byte offset of the damaged frame.
        offset: u64,
        /// What is wrong and why it is not a torn write.
        reason: String,
    },
    /// A file in a log directory (segment, checkpoint, lock, log id) is not a regular file.
    /// Links are not followed and FIFOs are never read, so a hostile entry can neither redirect
    /// a read or write nor make a command hang.
    #[error("{file}: expected a regular file, found {found}")]
    NotRegularFile {
        /// The file.
        file: PathBuf,
        /// What it is: "a symbolic link", "a FIFO", "a directory", ...
        found: &'static str,
    },
    /// A directory given as a log directory holds no log: no `LOGID` file and no segment file
    /// with the segment magic, or (for commands that never create a log) nothing at all.
    #[error("{dir}: not an mmsb log directory ({reason})")]
    NotALog {
        /// The directory.
        dir: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// The `LOGID` file of a log directory fails its checks.
    #[error("{file}: corrupt log id file: {reason}")]
    CorruptLogId {
        /// The file.
        file: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A checkpoint in a log directory was not written by that log (another log's, or a
    /// detached one written by `replay`), so it is never restored from.
    #[error("{file}: checkpoint belongs to {found}, not to this log ({expected})")]
    ForeignCheckpoint {
        /// The checkpoint file.
        file: PathBuf,
        /// The log id the checkpoint records (or "no log").
        found: String,
        /// This log's id.
        expected: String,
    },
    /// The state of a log directory cannot be rebuilt: segments were pruned and no usable
    /// checkpoint covers what they held, or a checkpoint covers more than the log holds.
    #[error("{dir}: state unrecoverable: {reason}")]
    StateUnrecoverable {
        /// The log directory.
        dir: PathBuf,
        /// Why, naming the missing LSN range and the checkpoints that could not be used.
        reason: String,
    },
    /// A checkpoint file fails its checks.
    #[error("{file}: corrupt checkpoint: {reason}")]
    CorruptCheckpoint {
        /// The checkpoint file.
        file: PathBuf,
        /// What failed.
        reason: String,
    },
    /// No page with this id exists.
    #[error("{0} does not exist")]
    NoSuchPage(PageId),
    /// A page id was created twice (in a log or checkpoint being replayed).
    #[error("{0} already exists")]
    PageExists(PageId),
    /// A page size of zero or above [`crate::MAX_PAGE_SIZE`].
    #[error("page size {size} is not in 1..={max}")]
    InvalidPageSize {
        /// Requested size.
        size: usize,
        /// Largest size allowed.
        max: usize,
    },
    /// Whole-page bytes or a dense delta whose length is not the page's size.
    #[error("{page}: expected {expected} bytes, got {found}")]
    SizeMismatch {
        /// The page.
        page: PageId,
        /// The page's size.
        expected: usize,
        /// Length supplied.
        found: usize,
    },
    /// A write or a sparse delta reaches past the end of the page.
    #[error("{page}: bytes {offset}..{end} are outside the page ({size} bytes)")]
    OutOfBounds {
        /// The page.
        page: PageId,
        /// First byte written.
        offset: usize,
        /// One past the last byte written.
        end: usize,
        /// The page's size.
        size: usize,
    },
    /// A sparse delta whose payload length is not the number of bits set in its mask.
    #[error("sparse delta: mask selects {mask_bytes} bytes but the payload has {payload_bytes}")]
    MaskPayloadMismatch {
        /// Bits set in the mask.
        mask_bytes: usize,
        /// Payload length.
        payload_bytes: usize,
    },
    /// Two deltas of different pages were merged.
    #[error("cannot merge a delta of {first} with a delta of {second}")]
    PageMismatch {
        /// Page of the earlier delta.
        first: PageId,
        /// Page of the later delta.
        second: PageId,
    },
    /// Adding the edge `parent -> child` would close a cycle (or is a self-loop).
    #[error("dependency {parent} -> {child} would close a cycle")]
    Cycle {
        /// The would-be parent.
        parent: PageId,
        /// The would-be child.
        child: PageId,
    },
    /// A page is written directly although it is derived (it has a recompute function).
    #[error("{0} is derived (it has a recompute function); write its parents instead")]
    Derived(PageId),
    /// Replayed state differs from the live state.
    #[error("{page}: live hash {live:016x}, replayed hash {replayed:016x}")]
    Inconsistent {
        /// The first page that differs (`PageId(0)` when the page sets differ).
        page: PageId,
        /// Hash of the live bytes (0 if the page is missing).
        live: u64,
        /// Hash of the replayed bytes (0 if the page is missing).
        replayed: u64,
    },
    /// `diff(a, b)` between states whose pages differ in ids or sizes.
    #[error("{page}: states differ in page set or page size; diff needs the same pages")]
    DiffShape {
        /// The page that is missing from one side or differs in size.
        page: PageId,
    },
    /// A replay target that the log cannot reach.
    #[error("replay target {target} is beyond the end of the log ({last})")]
    TargetBeyondLog {
        /// Requested target, formatted.
        target: String,
        /// Last LSN in the log.
        last: Lsn,
    },
    /// A log frame that does not fit the state it is replayed onto: a delta for a missing page,
    /// an epoch that is not the page's next, a page created twice, an LSN gap.
    #[error("{lsn} ({page}): replay mismatch: {reason}")]
    ReplayMismatch {
        /// The frame's LSN.
        lsn: Lsn,
        /// The frame's page.
        page: PageId,
        /// What did not fit.
        reason: String,
    },
    /// An earlier log write failed after the in-memory state had been changed; the bus refuses
    /// further work. Restart it: recovery rebuilds the state from the log.
    #[error("the bus is stopped after a failed log write ({0}); restart to recover from the log")]
    Poisoned(String),
    /// `commit` without a batch, or `begin_batch` inside one.
    #[error("{0}")]
    Batch(&'static str),
    /// A log frame would be longer than [`crate::frame::MAX_FRAME_LEN`] (a huge metadata value).
    #[error("a log frame of {bytes} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// Encoded length the frame would have.
        bytes: usize,
        /// The maximum ([`crate::frame::MAX_FRAME_LEN`]).
        max: usize,
    },
    /// A metadata key longer than [`crate::frame::MAX_METADATA_KEY_LEN`] bytes.
    #[error("metadata key of {len} bytes exceeds the maximum of {max}")]
    MetadataKeyTooLong {
        /// Key length in bytes.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A write was asked of a replica (a bus opened with [`crate::Mmsb::start_replica`]): a
    /// replica changes only by its leader's frames ([`crate::Mmsb::apply_replicated`]) until it
    /// is promoted ([`crate::Mmsb::promote`]).
    #[error("{dir}: the bus is a read-only replica (promote it to write)")]
    ReadOnly {
        /// The replica's log directory.
        dir: PathBuf,
    },
    /// [`crate::Mmsb::start`] was asked to open a replica's directory (it holds the
    /// [`crate::replica::MARKER`] file) as a writer; open it with
    /// [`crate::Mmsb::start_replica`], or promote it first.
    #[error("{dir}: the directory is a replica; follow it, or promote it before writing")]
    IsReplica {
        /// The directory.
        dir: PathBuf,
    },
    /// A frame handed to a replica ([`crate::Mmsb::apply_replicated`]) was refused: it does not
    /// decode (CRC, length, fields), carries another LSN than the next one, does not fit the
    /// replica's state (page epoch, size, a page created twice), or its commit is malformed.
    /// Nothing of the commit it belongs to was logged.
    #[error("replicated frame {lsn} refused: {reason}")]
    ReplicaFrame {
        /// The LSN the frame was expected to have (its position in the leader's log).
        lsn: Lsn,
        /// What is wrong with it.
        reason: String,
    },
    /// A log tail ([`crate::tlog::LogTail`]) was asked for frames the log no longer holds:
    /// segments up to `first` were pruned after a checkpoint.
    #[error("LSN {wanted} is no longer in the log (pruned: the oldest segment starts at {first})")]
    Pruned {
        /// The LSN asked for.
        wanted: Lsn,
        /// First LSN of the oldest segment left.
        first: Lsn,
    },
    /// An earlier write or fsync of the log failed, so what the file holds past the last
    /// successful sync is unknown; the log refuses further work. Drop it and reopen: recovery
    /// repairs the tail.
    #[error(
        "{dir}: the log stopped after an earlier write or sync failure ({cause}); reopen it to recover"
    )]
    LogFailed {
        /// The log directory.
        dir: PathBuf,
        /// The first failure.
        cause: String,
    },
}

/// Shorthand for `std::result::Result<T, mmsb::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
