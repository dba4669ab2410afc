//! The write-ahead log: segment files of checksummed frames, one writer, any number of readers.
//!
//! A log is a directory. It holds segment files named `{first_lsn:020}.tlog` (the LSN of their
//! first frame, zero padded so that name order is LSN order), a `LOCK` file that the single
//! writer holds an exclusive `flock` on, a `LOGID` file naming the log ([`crate::logdir`];
//! written when the log is created, so a directory that holds something else is recognised and
//! refused, [`Error::NotALog`]), and whatever else the application keeps there (checkpoints, for
//! the bus): files whose names do not match the pattern are ignored. Every file of the log is
//! opened without following a symbolic link, without blocking on a FIFO, and must be a regular
//! file ([`Error::NotRegularFile`]).
//!
//! Each segment starts with a 40-byte header (magic `MMSBTLOG`, format version, first LSN,
//! creation time, CRC32C) followed by frames ([`crate::frame`]) with consecutive LSNs. LSNs run
//! on across segments: segment `k + 1` starts at the LSN after the last frame of segment `k`.
//! The exact layouts, the durability guarantees and the recovery argument are written out in
//! `docs/mmsb-format.md`.
//!
//! * [`TLog`] is the writer: [`TLog::open`] takes the lock (waiting up to
//!   [`LogConfig::lock_timeout`] for another holder to let go), recovers (checks every frame,
//!   drops an uncommitted batch and a torn tail, refuses corruption in the middle and a
//!   damaged last frame, [`Error::DamagedTail`]), then
//!   [`TLog::append`] logs frames with a [`Durability`] policy applied at each commit.
//! * [`LogReader`] reads a log (or one segment) without a lock and without modifying anything,
//!   yielding committed frames in LSN order ([`LogReader::frames_from`]).
//! * [`verify`] checks a whole log and lists every problem it finds.
//!
//! Files, one concern each: `segment` (segment files: names, header, the frame scanner),
//! `recover` (what [`TLog::open`] does to the tail), `writer` ([`TLog`]), `syncer` (the
//! group-commit thread), `read` ([`LogReader`]), `summary` ([`LogSummary`]), `verify` ([`verify`]).

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::delta::{Body, Source};
use crate::error::{Error, Result};
use crate::frame::{
    self, BodyRef, FRAME_HEADER_LEN, Frame, FrameView, MAX_FRAME_LEN, MAX_METADATA_KEY_LEN,
    MaskEncoding, decode_view, peek_len, plausible_header,
};
use crate::page::{Lsn, MAX_PAGE_SIZE, PageId};

/// The first 8 bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"MMSBTLOG";
/// The segment format version this build reads and writes.
pub const SEGMENT_VERSION: u16 = 1;
/// Length of the segment header in bytes; the first frame starts at this offset.
pub const SEGMENT_HEADER_LEN: usize = 40;
/// Name of the lock file in a log directory.
pub const LOCK_FILE: &str = "LOCK";
/// Default of [`LogConfig::lock_timeout`] (and of `mmsb::Config::lock_timeout`): 1 second.
///
/// Why 1 s: a lock that is about to be released is typically released within microseconds to a
/// few milliseconds: a child process forked (by `std::process::Command` or anything else)
/// while the previous writer was open keeps a copy of the lock's descriptor, and so the lock,
/// until it calls `exec`; a previous writer of the same directory may be closing on another
/// thread, or a previous process may still be exiting. One second covers those with a wide
/// margin on a loaded machine, yet a real second writer is still reported promptly (one
/// second is no noticeable delay for a command-line tool, nor for a service starting up).
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(1);
/// First pause between two attempts to take the lock.
const LOCK_BACKOFF_MIN: Duration = Duration::from_millis(1);
/// Longest pause between two attempts to take the lock (the pause doubles up to this).
const LOCK_BACKOFF_MAX: Duration = Duration::from_millis(10);

/// Bytes read from a segment at a time.
const READ_CHUNK: usize = 256 * 1024;
/// Bytes examined per read when scanning for a valid frame after a bad one.
const SCAN_WINDOW: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// What the writer does when a frame is appended with `commit = true` (a commit).
///
/// Frames appended with `commit = false` are only copied into the in-process buffer (which is
/// written when it fills). What a crash can lose, for each mode:
///
/// | mode | at each commit | process crash loses | power loss / kernel crash loses |
/// |---|---|---|---|
/// | `Buffered` | nothing | the buffer: up to `buffer_bytes` of the newest frames | everything not yet written back by the OS (typically the last ~30 s) |
/// | `Flush` (default) | `write(2)` the buffer | nothing committed | everything not yet written back by the OS |
/// | `FsyncEvery(n)` | `write(2)`, and `fdatasync` every `n`-th commit | nothing committed | at most the last `n - 1` commits |
/// | `GroupCommit(d)` | `write(2)`; a background thread `fdatasync`s at most once per `d` | nothing committed | the commits of the last `d` or so (those after the last completed sync) |
///
/// In every mode a crash loses a *suffix* of the log, never a frame in the middle: the file is
/// only appended to, and recovery cuts it back to the last intact committed frame. On power
/// loss without a sync, the OS may have written back later blocks of a file but not earlier
/// ones; recovery then finds an invalid frame *followed* by valid ones and refuses to open the
/// log ([`Error::CorruptFrame`]) rather than guess. Only `FsyncEvery(1)` (or `sync()` after each
/// commit) rules that out completely; see `docs/mmsb-format.md`.
///
/// [`TLog::sync`] and [`TLog::close`] always write and `fdatasync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// Keep frames in the buffer until it is full or `flush()`, `sync()` or close.
    Buffered,
    /// `write(2)` the buffer at every commit (survives a process crash, not a power loss).
    #[default]
    Flush,
    /// `write(2)` at every commit and `fdatasync` at every `n`-th (`n = 0` is taken as 1).
    FsyncEvery(u32),
    /// `write(2)` at every commit; a background thread `fdatasync`s when something was
    /// written, at most once per interval. The first commit after an idle period is synced at
    /// once; later ones wait for the interval to pass.
    GroupCommit(Duration),
}

/// Configuration of [`TLog::open`].
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// The log directory; created (with its parents) if missing.
    pub dir: PathBuf,
    /// What a commit does (default [`Durability::Flush`]).
    pub durability: Durability,
    /// A new segment is started, at a commit boundary, when the next frame would make the
    /// current one larger than this many bytes (default 64 MiB). A segment is never split
    /// inside a batch, so a segment may exceed this by the size of one batch.
    pub segment_bytes: u64,
    /// Capacity of the in-process write buffer in bytes (default 1 MiB). A frame larger than
    /// the buffer is still written whole (the buffer grows for it, then shrinks back).
    pub buffer_bytes: usize,
    /// How long [`TLog::open`] keeps trying to take the lock while another open file holds
    /// it, before it gives up with [`Error::Locked`] (default [`DEFAULT_LOCK_TIMEOUT`], 1 s).
    /// It retries every 1 ms at first, the pause doubling up to 10 ms. [`Duration::ZERO`]
    /// makes one attempt and fails at once; [`Duration::MAX`] waits as long as it takes.
    pub lock_timeout: Duration,
    /// Create a new log when `dir` is missing or empty (default true). With false, [`TLog::open`]
    /// only opens an existing log and fails with [`Error::NotALog`] otherwise, creating nothing
    /// (what a tool that maintains existing logs wants).
    pub create: bool,
    /// The LSN of the first frame of a log that has no segment yet (default 1). A replica
    /// bootstrapped from its leader's checkpoint at LSN `c` starts its own log at `c + 1`, so
    /// that its LSNs are its leader's ([`crate::replica::bootstrap`]). Ignored for a log that
    /// already has segments.
    pub first_lsn: Lsn,
}

impl LogConfig {
    /// Defaults for the log in `dir`: [`Durability::Flush`], 64 MiB segments, 1 MiB buffer,
    /// a lock timeout of [`DEFAULT_LOCK_TIMEOUT`] (1 s).
    #[must_use]
    pub fn new(dir: impl AsRef<Path>) -> LogConfig {
        LogConfig {
            dir: dir.as_ref().to_path_buf(),
            durability: Durability::Flush,
            segment_bytes: 64 << 20,
            buffer_bytes: 1 << 20,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            create: true,
            first_lsn: Lsn(1),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reports
// ---------------------------------------------------------------------------------------------

/// A tail that recovery cut off (or, from [`LogReader::tail`], that it would cut off).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    /// The segment file.
    pub file: PathBuf,
    /// Where the kept data ends: the file is (or would be) truncated to this length. 0 when the
    /// whole file is (or would be) removed because its header is torn.
    pub offset: u64,
    /// Bytes after `offset`.
    pub bytes_dropped: u64,
    /// Complete, valid frames among them: the frames of an uncommitted batch.
    pub frames_dropped: u64,
    /// Why: the torn or corrupt frame's offset and defect, and/or the uncommitted batch.
    pub reason: String,
}

/// What [`TLog::open`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryReport {
    /// LSN of the last (committed) frame kept; [`Lsn::ZERO`] for an empty new log. The next
    /// append gets `last_lsn + 1`.
    pub last_lsn: Lsn,
    /// Segment files in the log after recovery.
    pub segments: usize,
    /// Frames kept, over all segments.
    pub frames: u64,
    /// The tail that was cut off, if any.
    pub truncated: Option<Truncation>,
}

/// What [`TLog::append`] assigned to the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The frame's LSN.
    pub lsn: Lsn,
    /// The frame's timestamp: wall clock, nanoseconds since the Unix epoch, clamped so that
    /// timestamps never decrease along the log (also across reopening, should the clock step
    /// back).
    pub timestamp_ns: u64,
}

/// Counters of a [`TLog`] since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Frames appended.
    pub frames: u64,
    /// Bytes of frames appended (frame lengths; segment headers not included).
    pub bytes: u64,
    /// Buffer write-outs (each one `write_all` of the buffer, usually one `write(2)`).
    pub writes: u64,
    /// `fdatasync` calls on segment files: commits under `FsyncEvery`, the group-commit
    /// thread, `sync()`, `close()`, segment creation and roll (directory fsyncs not counted).
    pub fsyncs: u64,
    /// Segment files in the log now.
    pub segments: usize,
    /// Segment files created by this writer.
    pub segments_created: u64,
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn corrupt_frame(file: &Path, offset: u64, reason: impl Into<String>) -> Error {
    Error::CorruptFrame {
        file: file.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

/// Fsyncs a directory, so that file creations, renames and removals in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Takes an exclusive `flock` on `file` (the lock file of the log in `dir`). While another open
/// file description holds it, retries (pausing 1 ms, doubling up to 10 ms, never past the
/// deadline) until `timeout` has passed since the first attempt, then returns
/// [`Error::Locked`] with the time waited. Always makes at least one attempt, and one more at
/// the deadline.
fn lock_exclusive(file: &File, path: &Path, dir: &Path, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    let mut pause = LOCK_BACKOFF_MIN;
    loop {
        match rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(()),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {}
            Err(e) if e == rustix::io::Errno::INTR => continue,
            Err(e) => return Err(Error::io(path, e.into())),
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(Error::Locked {
                dir: dir.to_path_buf(),
                waited,
            });
        }
        std::thread::sleep(pause.min(timeout - waited));
        pause = (pause * 2).min(LOCK_BACKOFF_MAX);
    }
}

mod read;
mod recover;
pub(crate) mod segment;
mod summary;
mod syncer;
mod tail;
mod verify;
mod writer;

use crate::logdir::{self, DirKind, LogIdentity};
pub use read::{FrameAt, Frames, LogReader};
use recover::recover;
use segment::{HeaderErr, SegReader, Step, check_header, encode_header, open_regular_with};
pub use segment::{list_segments, parse_segment_file_name, segment_file_name};
pub use summary::{LogSummary, PageTally};
pub use tail::{LogTail, RawFrame};
pub use verify::{Problem, SegmentSummary, VerifyReport, verify};
pub use writer::TLog;
