//! The crate's one error type.

use std::io;

/// What a wait was waiting for when it timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum WaitCause {
    /// Producer: the ring is full of messages a consumer has not read (lossless modes).
    RingFull,
    /// Producer: a reader still holds the slot to be overwritten.
    ReadersActive,
    /// Consumer: no new message arrived.
    NoData,
    /// Consumer: no new message, and the producer process is gone.
    ProducerDead,
    /// Producer: consumers have not read to the end of the stream (or none attached).
    Drain,
    /// A shared spinlock stayed held by a live owner.
    Lock,
}

impl std::fmt::Display for WaitCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WaitCause::RingFull => "ring full",
            WaitCause::ReadersActive => "readers hold the slot",
            WaitCause::NoData => "no new message",
            WaitCause::ProducerDead => "no new message and the producer is dead",
            WaitCause::Drain => "consumers have not drained the stream",
            WaitCause::Lock => "spinlock held",
        })
    }
}

/// Errors of every DataHub operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call on the segment failed.
    #[error("{op} on block {name:?}: {source}")]
    Io {
        /// The call (`shm_open`, `mmap`, ...).
        op: &'static str,
        /// Block name.
        name: String,
        /// The OS error.
        source: io::Error,
    },
    /// Block names are 1..=200 bytes without `/` or NUL.
    #[error("invalid block name {name:?}: 1 to 200 bytes, no '/', no NUL, not '.' or '..'")]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// No segment of that name exists.
    #[error("no block named {name:?} in /dev/shm")]
    NotFound {
        /// Block name.
        name: String,
    },
    /// The segment exists but its creator has not published it (magic still 0), or it is
    /// empty (0 bytes: a creator that died before sizing it, or a block truncated to nothing).
    #[error("{}", not_ready(name, *len))]
    NotReady {
        /// Block name.
        name: String,
        /// The segment's size in bytes.
        len: u64,
    },
    /// The name refers to something that is not a regular file (a symbolic link, a FIFO, a
    /// directory, ...): never opened, read or followed.
    #[error("block {name:?} is {kind}, not a shared-memory segment (refused)")]
    NotRegular {
        /// Block name.
        name: String,
        /// What it is (`a symbolic link`, `a FIFO`, ...).
        kind: &'static str,
    },
    /// The shared-memory file system cannot hold the block (checked at creation by reserving
    /// the whole segment).
    #[error(
        "no space for block {name:?}: it needs {needed} bytes and the shared-memory file system has {available} free (use fewer or smaller slots, or free space there)"
    )]
    NoSpace {
        /// Block name.
        name: String,
        /// Bytes the block needs.
        needed: u64,
        /// Bytes free when creation failed.
        available: u64,
    },
    /// Another process holds the block's producer lock while it is not the live producer: it
    /// is creating the block or removing it as stale right now.
    #[error("block {name:?} is being created or removed by another process right now")]
    Busy {
        /// Block name.
        name: String,
    },
    /// The segment was shrunk (`ftruncate`) while this process had it mapped; the part beyond
    /// the new end now reads as zeros in this process, so nothing it reads is trusted any more.
    #[error("{}", truncated(name, *expected, *found))]
    BlockTruncated {
        /// Block name.
        name: String,
        /// The block's size.
        expected: u64,
        /// The segment's size now.
        found: u64,
    },
    /// A slot's state word holds none of the protocol's values (a damaged block).
    #[error("slot {slot} has an invalid state word {value} (damaged block)")]
    InvalidSlotState {
        /// Slot index.
        slot: usize,
        /// The word.
        value: u32,
    },
    /// A recent-slots block's position line names a slot that does not exist (a damaged
    /// block).
    #[error(
        "position line {position} names slot {value}, beyond the block's {slots} slots (damaged block)"
    )]
    InvalidSlotIndex {
        /// Position line (`seq % slot_count`).
        position: usize,
        /// The index it holds.
        value: u32,
        /// Slots in the block.
        slots: u64,
    },
    /// A block's successor record (its handover area, `docs/datahub-format.md`, "Handover")
    /// is malformed: a bad state word, name, length or check word, or a successor that is not
    /// the block the record names. Nothing named by it was opened, or it was closed again.
    #[error("invalid successor record: {why}")]
    InvalidSuccessor {
        /// What was wrong (names quoted at most 64 characters long).
        why: String,
    },
    /// The block was handed over to `successor` ([`crate::Producer::handover`]) and this
    /// operation cannot follow it there (a consumer with following disabled, a producer taking
    /// over the old block).
    #[error("block was handed over to {successor:?}")]
    HandedOver {
        /// The successor's name.
        successor: String,
    },
    /// A live producer owns the block.
    #[error("block {name:?} already exists and its producer (pid {pid}) is alive")]
    AlreadyExists {
        /// Block name.
        name: String,
        /// The owner's pid.
        pid: u32,
    },
    /// The first 8 bytes are not the DataHub magic.
    #[error("not a DataHub block: magic {found:#018x}, expected {expected:#018x}")]
    BadMagic {
        /// [`crate::layout::MAGIC`].
        expected: u64,
        /// What the segment holds.
        found: u64,
    },
    /// The block's format major version is not this library's.
    #[error(
        "unsupported format version {found_major}.{found_minor}, this library reads {expected}.x"
    )]
    UnsupportedVersion {
        /// The major version this library reads.
        expected: u16,
        /// The block's major version.
        found_major: u16,
        /// The block's minor version.
        found_minor: u16,
    },
    /// The stored layout hash differs from the one computed from the header's parameters.
    #[error(
        "layout hash mismatch: expected {expected:#018x}, found {found:#018x} (other build, or damaged header)"
    )]
    LayoutMismatch {
        /// Computed from the header's parameters by this build.
        expected: u64,
        /// Stored in the header.
        found: u64,
    },
    /// The segment is shorter than its header says.
    #[error("truncated block: expected {expected} bytes, found {found}")]
    Truncated {
        /// Bytes needed.
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// A header field holds an impossible value.
    #[error("invalid header field {field}: {value}")]
    InvalidHeader {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {what}")]
    InvalidConfig {
        /// What is wrong.
        what: String,
    },
    /// The block's schema is not the expected one.
    #[error(
        "schema mismatch: expected {expected} v{expected_version}, found {found} v{found_version}"
    )]
    SchemaMismatch {
        /// Expected schema hash (hex).
        expected: String,
        /// Expected schema version.
        expected_version: u32,
        /// The block's schema hash (hex).
        found: String,
        /// The block's schema version.
        found_version: u32,
    },
    /// The block's policy or slot size is not what the consumer expects.
    #[error("block {what} is {found}, expected {expected}")]
    ExpectationMismatch {
        /// Which property.
        what: &'static str,
        /// Expected value.
        expected: String,
        /// The block's value.
        found: String,
    },
    /// Keyed checksums: the consumer's key is not the producer's (or one side has none).
    #[error("checksum key mismatch: {why}")]
    KeyMismatch {
        /// What differs.
        why: &'static str,
    },
    /// A wait ran out of time.
    #[error("timed out after {waited_ms} ms in {op}: {cause}")]
    Timeout {
        /// The operation (`write`, `read`, ...).
        op: &'static str,
        /// What it waited for.
        cause: WaitCause,
        /// How long it waited.
        waited_ms: u64,
    },
    /// A slot's bytes do not match its stored checksum.
    #[error("checksum mismatch in slot {slot} (seq {seq}): stored {expected}, computed {found}")]
    ChecksumMismatch {
        /// Slot index.
        slot: usize,
        /// Message sequence number.
        seq: u64,
        /// Stored digest (hex).
        expected: String,
        /// Digest of the bytes (hex).
        found: String,
    },
    /// Manual checksums: no checksum was computed for this message.
    #[error("no checksum stored for seq {seq} in slot {slot}")]
    ChecksumMissing {
        /// Slot index.
        slot: usize,
        /// Message sequence number.
        seq: u64,
    },
    /// All consumer registrations the block allows are taken by live consumers.
    #[error("block already has its maximum of {max} live consumer(s)")]
    TooManyConsumers {
        /// The block's `max_consumers`.
        max: u32,
    },
    /// A message longer than a slot.
    #[error("payload of {len} bytes does not fit a {slot_size}-byte slot")]
    PayloadTooLarge {
        /// Requested length.
        len: usize,
        /// The block's slot size.
        slot_size: usize,
    },
    /// The slot a reader held was reset or reused under it (recovery evicted the reader).
    #[error("slot {slot} no longer holds seq {seq} (reset by recovery while read)")]
    ValidationFailed {
        /// Slot index.
        slot: usize,
        /// The sequence number the reader held.
        seq: u64,
    },
    /// A lossless reader found a newer message than the one it was due (it was evicted).
    #[error("message {expected} was overwritten (slot holds {found}); this consumer was evicted")]
    Overrun {
        /// The sequence number due.
        expected: u64,
        /// What the slot holds.
        found: u64,
    },
    /// A lossless reader's message was discarded by recovery (a forced slot reset) before it
    /// was read; the reader moves past it.
    #[error("message {seq} in slot {slot} was discarded by recovery before it was read")]
    Discarded {
        /// Slot index.
        slot: usize,
        /// The lost message.
        seq: u64,
    },
    /// The requested message is no longer (or not yet) in the ring.
    #[error("seq {requested} is not available (available: {oldest}..{next})")]
    SeqUnavailable {
        /// Requested sequence number.
        requested: u64,
        /// Oldest message still in the ring.
        oldest: u64,
        /// One past the newest committed.
        next: u64,
    },
    /// The producer closed the stream and every message has been read.
    #[error("end of stream")]
    EndOfStream,
    /// The producer already closed the stream.
    #[error("stream closed")]
    Closed,
    /// Recovery refused to act on a live owner without `force`.
    #[error("refused: {what} is owned by live pid {pid} (use force)")]
    OwnerAlive {
        /// What was to be reset.
        what: String,
        /// The live owner.
        pid: u32,
    },
    /// [`crate::Admin::reset_slot`] refused: the block's producer is alive, and a live producer
    /// may claim the slot (or still owe its message to a reader) at any moment.
    #[error(
        "refused: slot {slot} may hold an unread message and the block's producer pid {pid} is alive (use force)"
    )]
    ProducerAlive {
        /// The slot that was to be reset.
        slot: usize,
        /// The live producer.
        pid: u32,
    },
    /// The calling thread already holds this spinlock (the flexible zone is not re-entrant).
    #[error("spinlock {index} is already held by this thread")]
    WouldDeadlock {
        /// Lock index.
        index: usize,
    },
    /// [`crate::HugePages::Require`] could not be met: the kernel does not allow or did not
    /// give huge pages for the block (nothing was created, or the new block was removed).
    #[error("huge pages unavailable: {why}")]
    HugePagesUnavailable {
        /// Why, in one line (for example "shmem_enabled is [never] and /dev/shm is mounted
        /// without huge=").
        why: String,
    },
    /// Secure attach: the socket's directory (or the socket path itself) is not safe to use:
    /// a symbolic link, not a directory (or not a socket), writable or (for the producer)
    /// accessible by group or other, or owned by another user.
    #[error("unsafe socket path {path}: {why}")]
    SocketDirUnsafe {
        /// The path checked (clipped).
        path: String,
        /// What is wrong, in one line.
        why: String,
    },
    /// Secure attach: the producer refused this peer (its credentials are not in the
    /// [`crate::secure::AttachPolicy`], or it did not prove it holds the block's key), or
    /// the consumer refused a producer that did not prove it holds the key.
    #[error("secure attach refused: {why}")]
    AttachRefused {
        /// Why, in one line.
        why: String,
    },
    /// Secure attach: the descriptor received is not a memfd sealed against shrinking,
    /// growing and further sealing (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`), so its
    /// sender could truncate it under this process.
    #[error("received block descriptor is not sealed against resizing: seals {seals:#x}")]
    NotSealed {
        /// The seals `F_GET_SEALS` reported (0 when the file cannot carry seals).
        seals: u32,
    },
    /// Secure attach: the handshake failed (a malformed or unexpected frame, a timeout, an
    /// I/O error on the socket, no descriptor received).
    #[error("secure attach failed: {why}")]
    AttachFailed {
        /// Why, in one line.
        why: String,
    },
    /// An index out of range (slot, spinlock).
    #[error("{what} {index} out of range (< {limit})")]
    OutOfRange {
        /// What was indexed.
        what: &'static str,
        /// The index.
        index: usize,
        /// The bound.
        limit: usize,
    },
}

impl Error {
    /// A small stable number for the header's `last_error_code` metric.
    pub fn code(&self) -> u32 {
        match self {
            Error::Io { .. } => 1,
            Error::InvalidName { .. } => 2,
            Error::NotFound { .. } => 3,
            Error::NotReady { .. } => 4,
            Error::AlreadyExists { .. } => 5,
            Error::BadMagic { .. } => 6,
            Error::UnsupportedVersion { .. } => 7,
            Error::LayoutMismatch { .. } => 8,
            Error::Truncated { .. } => 9,
            Error::InvalidHeader { .. } => 10,
            Error::InvalidConfig { .. } => 11,
            Error::SchemaMismatch { .. } => 12,
            Error::ExpectationMismatch { .. } => 13,
            Error::KeyMismatch { .. } => 14,
            Error::Timeout { .. } => 15,
            Error::ChecksumMismatch { .. } => 16,
            Error::ChecksumMissing { .. } => 17,
            Error::TooManyConsumers { .. } => 18,
            Error::PayloadTooLarge { .. } => 19,
            Error::ValidationFailed { .. } => 20,
            Error::Overrun { .. } => 21,
            Error::SeqUnavailable { .. } => 22,
            Error::EndOfStream => 23,
            Error::Closed => 24,
            Error::OwnerAlive { .. } => 25,
            Error::WouldDeadlock { .. } => 26,
            Error::OutOfRange { .. } => 27,
            Error::Discarded { .. } => 28,
            Error::NotRegular { .. } => 29,
            Error::NoSpace { .. } => 30,
            Error::Busy { .. } => 31,
            Error::BlockTruncated { .. } => 32,
            Error::InvalidSlotState { .. } => 33,
            Error::ProducerAlive { .. } => 34,
            Error::HugePagesUnavailable { .. } => 35,
            Error::InvalidSlotIndex { .. } => 36,
            Error::SocketDirUnsafe { .. } => 37,
            Error::AttachRefused { .. } => 38,
            Error::NotSealed { .. } => 39,
            Error::AttachFailed { .. } => 40,
            Error::InvalidSuccessor { .. } => 41,
            Error::HandedOver { .. } => 42,
        }
    }
}

fn not_ready(name: &str, len: u64) -> String {
    if len == 0 {
        format!(
            "block {name:?} is empty (0 bytes): its creator is still sizing it, died before doing so, or it was truncated"
        )
    } else {
        format!(
            "block {name:?} exists but was never published (creator still initialising, or died while doing so)"
        )
    }
}

fn truncated(name: &str, expected: u64, found: u64) -> String {
    if found >= expected {
        // SIGBUS at full size: the file system could not supply a page (tmpfs full, or a
        // segment created without reserving its memory).
        format!(
            "block {name:?} could not be paged in (SIGBUS at its full size of {expected} bytes): the shared-memory file system is out of space"
        )
    } else {
        format!("block {name:?} was truncated to {found} bytes while in use (it needs {expected})")
    }
}

/// Longest piece of outside data (a name from disk or the command line) quoted in a message.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) const CLIP: usize = 64;

/// `s` cut to at most [`CLIP`] characters, with `...` when cut: messages never quote unbounded
/// data.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) fn clip(s: &str) -> String {
    match s.char_indices().nth(CLIP) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}
