//! The DataBlock's bytes: header, slot state array, checksum array, flexible zone, slot ring.
//!
//! Every region starts on a 64-byte boundary (the ring on a 4096-byte one) and every structure
//! that more than one process writes has a cache line of its own. `docs/datahub-format.md` has
//! the byte diagram; the `const` assertions at the bottom of this file keep the two in step.
//!
//! The header's identity lines (0..192) are written by the creating producer before it publishes
//! [`MAGIC`] with a Release store and never change afterwards; an opener reads them after an
//! Acquire load of the magic. Everything after them is atomics.

use blake2::digest::consts::U8;
use blake2::{Blake2b, Digest};

use crate::Error;
use crate::sync::{AtomicU32, AtomicU64};

/// `b"DATAHUB1"` read as a little-endian u64: the first 8 bytes of every block.
pub const MAGIC: u64 = u64::from_le_bytes(*b"DATAHUB1");
/// Format major version: an opener refuses any other.
pub const VERSION_MAJOR: u16 = 1;
/// Format minor version: additions that older readers can ignore.
pub const VERSION_MINOR: u16 = 2;
/// Bytes of the header region, consumer table included.
pub const HEADER_SIZE: usize = 8192;
/// Consumer registrations per block (one bit each in a slot's reader mask).
pub const MAX_CONSUMERS: usize = 64;
/// Shared spinlocks in the header; lock 0 guards the flexible zone.
pub const SPINLOCKS: usize = 8;
/// Alignment of the slot ring (a page, so large payload copies start page-aligned).
pub const RING_ALIGN: u64 = 4096;
/// Largest accepted slot: 1 GiB.
pub const MAX_SLOT_SIZE: u32 = 1 << 30;
/// Largest accepted slot count.
pub const MAX_SLOT_COUNT: u32 = 1 << 24;
/// Largest accepted flexible zone: 1 GiB.
pub const MAX_FLEX_ZONE: u64 = 1 << 30;
/// Bytes of an identity block an opener decodes before trusting anything else.
pub const IDENTITY_SIZE: usize = 192;
/// `seq` value meaning "no message" (a free slot, no held slot, an open stream).
pub const NO_SEQ: u64 = u64::MAX;

/// Slot states (the `state` word of a slot's control line, `SlotCtl`).
pub mod state {
    /// Never written, or reclaimed after a dead writer.
    pub const FREE: u32 = 0;
    /// The producer holds the slot and is filling it; `seq` is the message being written.
    pub const WRITING: u32 = 1;
    /// Holds message `seq`, `len` bytes; readers may acquire it.
    pub const COMMITTED: u32 = 2;
    /// The producer wants the slot and waits for its readers to leave; no new reader may enter.
    pub const DRAINING: u32 = 3;
    /// Name of a state word, for diagnostics.
    pub fn name(s: u32) -> &'static str {
        match s {
            FREE => "free",
            WRITING => "writing",
            COMMITTED => "committed",
            DRAINING => "draining",
            _ => "invalid",
        }
    }
}

/// Consumer registration states.
pub mod reg {
    /// Unused entry.
    pub const FREE: u32 = 0;
    /// Being filled in by an attaching consumer (or cleaned by recovery).
    pub const CLAIMING: u32 = 1;
    /// A registered consumer.
    pub const ACTIVE: u32 = 2;
}

/// Identity line 0 (bytes 0..64).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Identity {
    pub magic: AtomicU64,
    pub version_major: u16,
    pub version_minor: u16,
    pub header_size: u32,
    pub total_size: u64,
    pub layout_hash: u64,
    pub policy: u32,
    pub checksum_policy: u32,
    pub slot_size: u32,
    pub slot_count: u32,
    pub flex_zone_size: u64,
    pub max_consumers: u32,
    pub flags: u32,
}

/// Identity line 1 (64..128): schema and timing.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct SchemaLine {
    pub schema_hash: [u8; 32],
    pub schema_version: u32,
    pub _pad: u32,
    pub heartbeat_timeout_ns: u64,
    pub created_unix_ns: u64,
    pub _reserved: u64,
}

/// Identity line 2 (128..192): region offsets and the key check.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct OffsetsLine {
    pub slot_state_offset: u64,
    pub checksum_offset: u64,
    pub flex_offset: u64,
    pub ring_offset: u64,
    pub key_check: [u8; 32],
}

/// The producer's line (192..256). Written only by the producer (and by a producer taking over
/// from a dead one).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct ProducerLine {
    /// Next sequence number the producer will claim.
    pub write_index: AtomicU64,
    pub pid: AtomicU32,
    pub tid: AtomicU32,
    pub start_time: AtomicU64,
    pub heartbeat_ns: AtomicU64,
    /// Producers that have owned this block (1 after create, +1 per takeover).
    pub incarnation: AtomicU64,
    pub slots_written: AtomicU64,
    pub bytes_written: AtomicU64,
    pub aborted_writes: AtomicU64,
}

/// Commit line (256..320): what readers poll.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct CommitLine {
    /// One past the newest committed sequence number.
    pub commit_index: AtomicU64,
    /// Futex word readers sleep on: the low 32 bits of `commit_index`, bumped on close too.
    pub commit_word: AtomicU32,
    /// Readers asleep (or about to sleep) on `commit_word`.
    pub commit_waiters: AtomicU32,
    /// Sequence number one past the last message of the stream, or [`NO_SEQ`] while open.
    pub end_of_stream: AtomicU64,
    pub _reserved: [u64; 5],
}

/// Release line (320..384): what the producer sleeps on when it waits for readers.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct ReleaseLine {
    /// Futex word the producer sleeps on; bumped by a reader that releases while it waits.
    pub release_word: AtomicU32,
    pub release_waiters: AtomicU32,
    /// Lossless modes: the lowest sequence number a consumer may still need when none is
    /// registered (kept for the next consumer).
    pub retained_floor: AtomicU64,
    /// Bit `i` set: consumer entry `i` is ACTIVE.
    pub active_mask: AtomicU64,
    pub _reserved: [u64; 5],
}

/// Block-wide counters (384..640). Hot per-message counts live in the producer line and in each
/// consumer's entry; these are the rare events.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct MetricsBlock {
    pub reads_retired: AtomicU64,
    pub bytes_read_retired: AtomicU64,
    pub writer_timeouts_ring_full: AtomicU64,
    pub writer_timeouts_readers: AtomicU64,
    pub reader_timeouts: AtomicU64,
    pub reader_races: AtomicU64,
    pub validation_failures: AtomicU64,
    pub checksum_failures: AtomicU64,
    pub checksums_verified: AtomicU64,
    pub peak_readers: AtomicU64,
    pub recovery_actions: AtomicU64,
    pub consumers_reclaimed: AtomicU64,
    pub last_error_code: AtomicU64,
    pub last_error_unix_ns: AtomicU64,
    pub attaches: AtomicU64,
    pub detaches: AtomicU64,
    pub overruns: AtomicU64,
    pub _reserved: [u64; 15],
}

/// One robust shared spinlock, a line each (640..1152).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct SpinlockLine {
    /// `pid << 32 | tid` of the holder, 0 when free.
    pub owner: AtomicU64,
    /// Start time of the holder's process (PID reuse check).
    pub owner_start: AtomicU64,
    /// Times the holder has re-entered.
    pub recursion: AtomicU32,
    pub _pad: u32,
    pub acquisitions: AtomicU64,
    /// Times the lock was taken from a dead holder.
    pub reclaims: AtomicU64,
    pub _reserved: [u64; 3],
}

/// One consumer registration, a line each (4096..8192).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct ConsumerEntry {
    pub state: AtomicU32,
    pub pid: AtomicU32,
    pub start_time: AtomicU64,
    pub heartbeat_ns: AtomicU64,
    /// Next sequence number this consumer will read (lossless modes: what the producer waits on).
    pub position: AtomicU64,
    /// Sequence number of the slot it holds, or [`NO_SEQ`].
    pub held_seq: AtomicU64,
    pub reads: AtomicU64,
    pub bytes_read: AtomicU64,
    /// Bumped each time the entry is claimed, so a recovery decision made about an earlier
    /// occupant cannot hit a new one.
    pub generation: AtomicU32,
    pub _pad: u32,
}

/// The header region, as it lies at offset 0 of the block.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct Header {
    pub id: Identity,
    pub schema: SchemaLine,
    pub offsets: OffsetsLine,
    pub producer: ProducerLine,
    pub commit: CommitLine,
    pub release: ReleaseLine,
    pub metrics: MetricsBlock,
    pub spinlocks: [SpinlockLine; SPINLOCKS],
    /// Since 1.1: the pages backing the block ([`crate::Backing`] code; 0 unknown), written by
    /// the creator before the magic is published and never changed afterwards.
    pub backing: AtomicU32,
    pub _backing_pad: u32,
    /// Reserved (1160..1216).
    pub _reserved_1160: [u8; 56],
    /// Handover area (1216..1536): this block's first sequence number, the entries reserved
    /// for consumers following from a predecessor, and the successor record.
    pub handover: HandoverArea,
    /// Reserved for the discovery broker, secure attach and schema negotiation (later versions).
    pub reserved: [u8; 2560],
    pub consumers: [ConsumerEntry; MAX_CONSUMERS],
}

/// `state` of the handover area's successor record (header byte [`HANDOVER_STATE`]).
pub mod successor_state {
    /// No successor record.
    pub const NONE: u32 = 0;
    /// The producer is writing the record; readers ignore it.
    pub const WRITING: u32 = 1;
    /// The record is complete: the stream goes on in the successor from `cutover_seq`.
    pub const PUBLISHED: u32 = 2;
}

/// Offset of the handover area in the header.
pub const HANDOVER_OFFSET: usize = 1216;
/// Bytes of the handover area.
pub const HANDOVER_SIZE: usize = 320;
/// Offset of `first_seq` (u64) in the header.
pub const HANDOVER_FIRST_SEQ: usize = HANDOVER_OFFSET;
/// Offset of `reserved_mask` (u64) in the header.
pub const HANDOVER_RESERVED_MASK: usize = HANDOVER_FIRST_SEQ + 8;
/// Offset of the successor record's `state` (u32) in the header.
pub const HANDOVER_STATE: usize = HANDOVER_RESERVED_MASK + 8;
/// Offset of the successor name's length (u32) in the header.
pub const HANDOVER_NAME_LEN: usize = HANDOVER_STATE + 4;
/// Offset of `cutover_seq` (u64) in the header.
pub const HANDOVER_CUTOVER: usize = HANDOVER_NAME_LEN + 4;
/// Offset of the successor's layout hash (u64) in the header.
pub const HANDOVER_LAYOUT_HASH: usize = HANDOVER_CUTOVER + 8;
/// Offset of the successor's creation time (u64, ns since the Unix epoch) in the header.
pub const HANDOVER_CREATED: usize = HANDOVER_LAYOUT_HASH + 8;
/// Offset of the record's check word (u64, [`successor_check`]) in the header.
pub const HANDOVER_CHECK: usize = HANDOVER_CREATED + 8;
/// Offset of the successor's name (256 bytes, `name_len` of them used) in the header.
pub const HANDOVER_NAME: usize = HANDOVER_CHECK + 16;
/// Bytes of the successor name field.
pub const HANDOVER_NAME_CAP: usize = 256;

/// The handover area (header bytes 1216..1536, since format 1.2 of this build; zero in blocks
/// of older builds, which ignore it). See `docs/datahub-format.md`, "Handover".
///
/// `first_seq` and `reserved_mask` describe this block and are written by its creator before
/// the magic is published. The successor record (`state` .. `name`) is written once, by the
/// producer handing the block over: every field, then `state = PUBLISHED` (Release), then the
/// commit line's `end_of_stream = cutover_seq`.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct HandoverArea {
    /// Sequence number of this block's first message (0 unless it is a successor).
    pub first_seq: AtomicU64,
    /// Bit `i`: consumer entry `i` was registered by the handover for the consumer that held
    /// entry `i` of the predecessor, and not yet adopted by it.
    pub reserved_mask: AtomicU64,
    /// [`successor_state`].
    pub state: AtomicU32,
    /// Bytes of the successor's name used in `name`.
    pub name_len: AtomicU32,
    /// The successor's first sequence number, equal to this block's end of stream.
    pub cutover_seq: AtomicU64,
    /// The successor's layout hash (identity line 0, bytes 24..32).
    pub layout_hash: AtomicU64,
    /// The successor's creation time (identity line 1, bytes 112..120).
    pub created_unix_ns: AtomicU64,
    /// [`successor_check`] of the record.
    pub check: AtomicU64,
    pub _pad: u64,
    /// The successor's name, 8 bytes per word, little-endian.
    pub name: [AtomicU64; HANDOVER_NAME_CAP / 8],
}

/// The check word of a successor record: BLAKE2b-64 of `"datahub-handover"`, the name's
/// length (u32 LE) and bytes, `cutover_seq`, the layout hash and the creation time (u64 LE
/// each). A record whose stored check differs is refused ([`Error::InvalidSuccessor`]).
pub fn successor_check(
    name: &[u8],
    cutover_seq: u64,
    layout_hash: u64,
    created_unix_ns: u64,
) -> u64 {
    let mut h = Blake2b::<U8>::new();
    h.update(b"datahub-handover");
    h.update((name.len() as u32).to_le_bytes());
    h.update(name);
    for v in [cutover_seq, layout_hash, created_unix_ns] {
        h.update(v.to_le_bytes());
    }
    u64::from_le_bytes(h.finalize().into())
}

/// One slot's coordination words: a cache line per slot.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct SlotCtl {
    /// [`state`] word.
    pub state: AtomicU32,
    /// Committed payload length in bytes.
    pub len: AtomicU32,
    /// Sequence number of the message in the slot (WRITING: the one being written).
    pub seq: AtomicU64,
    /// Bit `i` set: consumer entry `i` holds the slot.
    pub readers: AtomicU64,
    /// Write generation: bumped each time the producer claims the slot.
    pub generation: AtomicU64,
    /// Pid of the producer that last claimed it.
    pub writer_pid: AtomicU32,
    pub _pad: u32,
    /// `CLOCK_MONOTONIC` ns of the last claim (one clock read per message).
    pub stamp_ns: AtomicU64,
    /// Since 1.2, blocks with [`FLAG_RECENT_SLOTS`]: this line is also *position line* `p`
    /// (for every message `seq` with `seq % slot_count == p`), and this word is the index of
    /// the slot that holds the newest such message the producer claimed. Written by the
    /// producer (Release) right after it claims the slot, before the commit index moves; read
    /// by lossless readers after they see the commit index pass `seq`. Unused (0) otherwise.
    pub position_slot: AtomicU32,
    pub _pad2: u32,
    pub _reserved: u64,
}

/// One slot's checksum: BLAKE2b-256 of its committed bytes.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct ChecksumEntry {
    pub digest: [u8; 32],
    /// Sequence number the digest was computed for ([`NO_SEQ`]: none).
    pub seq: u64,
    pub _reserved: [u64; 3],
}

#[cfg(not(loom))]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<Identity>() == 64);
    assert!(size_of::<SchemaLine>() == 64);
    assert!(size_of::<OffsetsLine>() == 64);
    assert!(size_of::<ProducerLine>() == 64);
    assert!(size_of::<CommitLine>() == 64);
    assert!(size_of::<ReleaseLine>() == 64);
    assert!(size_of::<MetricsBlock>() == 256);
    assert!(size_of::<SpinlockLine>() == 64);
    assert!(size_of::<ConsumerEntry>() == 64);
    assert!(size_of::<SlotCtl>() == 64);
    assert!(offset_of!(SlotCtl, position_slot) == 48);
    assert!(size_of::<ChecksumEntry>() == 64);
    assert!(offset_of!(Header, schema) == 64);
    assert!(offset_of!(Header, offsets) == 128);
    assert!(offset_of!(Header, producer) == 192);
    assert!(offset_of!(Header, commit) == 256);
    assert!(offset_of!(Header, release) == 320);
    assert!(offset_of!(Header, metrics) == 384);
    assert!(offset_of!(Header, spinlocks) == 640);
    assert!(offset_of!(Header, backing) == 1152);
    assert!(offset_of!(Header, _reserved_1160) == 1160);
    assert!(offset_of!(Header, handover) == HANDOVER_OFFSET);
    assert!(size_of::<HandoverArea>() == HANDOVER_SIZE);
    assert!(offset_of!(Header, reserved) == 1536);
    assert!(HANDOVER_OFFSET + offset_of!(HandoverArea, reserved_mask) == HANDOVER_RESERVED_MASK);
    assert!(HANDOVER_OFFSET + offset_of!(HandoverArea, state) == HANDOVER_STATE);
    assert!(HANDOVER_OFFSET + offset_of!(HandoverArea, name_len) == HANDOVER_NAME_LEN);
    assert!(HANDOVER_OFFSET + offset_of!(HandoverArea, cutover_seq) == HANDOVER_CUTOVER);
    assert!(HANDOVER_OFFSET + offset_of!(HandoverArea, layout_hash) == HANDOVER_LAYOUT_HASH);
    assert!(HANDOVER_OFFSET + offset_of!(HandoverArea, created_unix_ns) == HANDOVER_CREATED);
    assert!(HANDOVER_OFFSET + offset_of!(HandoverArea, check) == HANDOVER_CHECK);
    assert!(HANDOVER_OFFSET + offset_of!(HandoverArea, name) == HANDOVER_NAME);
    assert!(HANDOVER_NAME + HANDOVER_NAME_CAP == 1536);
    assert!(offset_of!(Header, consumers) == 4096);
    assert!(size_of::<Header>() == HEADER_SIZE);
    assert!(offset_of!(Identity, layout_hash) == 24);
    assert!(offset_of!(Identity, slot_size) == 40);
    assert!(offset_of!(Identity, flags) == 60);
};

/// Slot coordination policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Policy {
    /// Readers see the newest committed message; the producer never waits for readers except
    /// for the one slot it is about to overwrite while a reader holds it. Any number of readers
    /// (up to [`MAX_CONSUMERS`]); messages may be skipped.
    Latest,
    /// One reader, lossless FIFO: the producer waits (with a timeout) when the ring is full.
    Sequential,
    /// Up to `max_consumers` readers, each with its own read position, all lossless: the
    /// producer waits for the slowest.
    SequentialSync,
}

impl Policy {
    pub(crate) fn code(self) -> u32 {
        match self {
            Policy::Latest => 1,
            Policy::Sequential => 2,
            Policy::SequentialSync => 3,
        }
    }
    pub(crate) fn from_code(code: u32) -> Option<Policy> {
        match code {
            1 => Some(Policy::Latest),
            2 => Some(Policy::Sequential),
            3 => Some(Policy::SequentialSync),
            _ => None,
        }
    }
    /// Whether the producer waits for readers to consume every message.
    pub fn is_lossless(self) -> bool {
        !matches!(self, Policy::Latest)
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Policy::Latest => "latest",
            Policy::Sequential => "sequential",
            Policy::SequentialSync => "sequential_sync",
        })
    }
}

/// When checksums are computed and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum ChecksumPolicy {
    /// No checksums.
    None,
    /// The producer calls [`crate::WriteGuard::compute_checksum`]; a reader calls
    /// [`crate::ReadGuard::verify_checksum`].
    Manual,
    /// Computed at every commit, verified before a read guard is handed out.
    Enforced,
}

impl ChecksumPolicy {
    pub(crate) fn code(self) -> u32 {
        match self {
            ChecksumPolicy::None => 0,
            ChecksumPolicy::Manual => 1,
            ChecksumPolicy::Enforced => 2,
        }
    }
    pub(crate) fn from_code(code: u32) -> Option<ChecksumPolicy> {
        match code {
            0 => Some(ChecksumPolicy::None),
            1 => Some(ChecksumPolicy::Manual),
            2 => Some(ChecksumPolicy::Enforced),
            _ => None,
        }
    }
}

impl std::fmt::Display for ChecksumPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChecksumPolicy::None => "none",
            ChecksumPolicy::Manual => "manual",
            ChecksumPolicy::Enforced => "enforced",
        })
    }
}

/// Header flag: checksums are keyed (BLAKE2b MAC).
pub const FLAG_KEYED: u32 = 1;
/// Header flag (since 1.2; lossless policies only): message `seq` is not in slot
/// `seq % slot_count` but in the slot named by position line `seq % slot_count`
/// (the slot line's `position_slot` word); the producer hands out the most recently released slot first,
/// so a shallow queue keeps reusing cache-hot slots ([`crate::SlotOrder::Recent`]). A 1.0/1.1
/// reader refuses such a block (unknown flag), which is the point: it would look in the wrong
/// slot.
pub const FLAG_RECENT_SLOTS: u32 = 2;

/// The parameters that fix a block's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Params {
    pub policy: Policy,
    pub checksum: ChecksumPolicy,
    pub flags: u32,
    pub slot_size: u32,
    pub slot_count: u32,
    pub flex_zone_size: u64,
    pub max_consumers: u32,
}

/// Where each region lies, in bytes from the start of the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Regions {
    /// Slot state array: `slot_count` × 64 bytes.
    pub slot_state_offset: u64,
    /// Checksum array: `slot_count` × 64 bytes.
    pub checksum_offset: u64,
    /// Flexible zone (`flex_zone_size` bytes, padded to 64).
    pub flex_offset: u64,
    /// Slot ring: `slot_count` × `slot_size` bytes, 4096-aligned.
    pub ring_offset: u64,
    /// Size of the whole block, a multiple of 4096.
    pub total_size: u64,
}

fn round_up(v: u64, to: u64) -> Option<u64> {
    v.checked_add(to - 1).map(|x| x / to * to)
}

impl Params {
    /// Checks the parameters; `what` names the first bad one.
    pub(crate) fn check(&self) -> Result<(), Error> {
        let bad = |field: &'static str, value: u64| Err(Error::InvalidHeader { field, value });
        if self.slot_size == 0 || self.slot_size % 64 != 0 || self.slot_size > MAX_SLOT_SIZE {
            return bad("slot_size", self.slot_size.into());
        }
        if self.slot_count == 0 || self.slot_count > MAX_SLOT_COUNT {
            return bad("slot_count", self.slot_count.into());
        }
        if self.flex_zone_size > MAX_FLEX_ZONE {
            return bad("flex_zone_size", self.flex_zone_size);
        }
        if self.max_consumers == 0 || self.max_consumers as usize > MAX_CONSUMERS {
            return bad("max_consumers", self.max_consumers.into());
        }
        if self.policy == Policy::Sequential && self.max_consumers != 1 {
            return bad("max_consumers", self.max_consumers.into());
        }
        if self.flags & !(FLAG_KEYED | FLAG_RECENT_SLOTS) != 0 {
            return bad("flags", self.flags.into());
        }
        if self.flags & FLAG_RECENT_SLOTS != 0 && !self.policy.is_lossless() {
            return bad("flags", self.flags.into());
        }
        Ok(())
    }

    /// Region offsets for these parameters (checked arithmetic; `None` on overflow).
    pub(crate) fn regions(&self) -> Option<Regions> {
        let n = u64::from(self.slot_count);
        let slot_state_offset = HEADER_SIZE as u64;
        let checksum_offset = slot_state_offset.checked_add(n.checked_mul(64)?)?;
        let flex_offset = checksum_offset.checked_add(n.checked_mul(64)?)?;
        let flex_end = flex_offset.checked_add(round_up(self.flex_zone_size, 64)?)?;
        let ring_offset = round_up(flex_end, RING_ALIGN)?;
        let ring_bytes = n.checked_mul(u64::from(self.slot_size))?;
        let total_size = round_up(ring_offset.checked_add(ring_bytes)?, RING_ALIGN)?;
        Some(Regions {
            slot_state_offset,
            checksum_offset,
            flex_offset,
            ring_offset,
            total_size,
        })
    }

    /// BLAKE2b-64 over the format version, the sizes of this build's structures, the parameters
    /// and the region offsets. A block whose stored hash differs was written by a build with
    /// another layout, or its header is damaged.
    pub(crate) fn layout_hash(&self, r: &Regions) -> u64 {
        let mut h = Blake2b::<U8>::new();
        h.update(b"datahub-layout");
        for v in [
            u64::from(VERSION_MAJOR),
            HEADER_SIZE as u64,
            std::mem::size_of::<SlotCtl>() as u64,
            std::mem::size_of::<ChecksumEntry>() as u64,
            std::mem::size_of::<ConsumerEntry>() as u64,
            MAX_CONSUMERS as u64,
            SPINLOCKS as u64,
            u64::from(self.policy.code()),
            u64::from(self.checksum.code()),
            u64::from(self.flags),
            u64::from(self.slot_size),
            u64::from(self.slot_count),
            self.flex_zone_size,
            u64::from(self.max_consumers),
            r.slot_state_offset,
            r.checksum_offset,
            r.flex_offset,
            r.ring_offset,
            r.total_size,
        ] {
            h.update(v.to_le_bytes());
        }
        u64::from_le_bytes(h.finalize().into())
    }
}

/// A block's identity, decoded from a copy of its first [`IDENTITY_SIZE`] bytes and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decoded {
    pub params: Params,
    pub regions: Regions,
    pub version_minor: u16,
    pub layout_hash: u64,
    pub schema_hash: [u8; 32],
    pub schema_version: u32,
    pub heartbeat_timeout_ns: u64,
    pub created_unix_ns: u64,
    pub key_check: [u8; 32],
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes and checks a block's identity.
///
/// `bytes` is a copy of the start of the block (at least [`IDENTITY_SIZE`] bytes, or the whole
/// segment if shorter) and `segment_len` the segment's size. Any byte pattern gives either `Ok`
/// or a typed error: [`Error::Truncated`], [`Error::BadMagic`], [`Error::UnsupportedVersion`],
/// [`Error::InvalidHeader`] or [`Error::LayoutMismatch`].
pub(crate) fn decode(bytes: &[u8], segment_len: u64) -> Result<Decoded, Error> {
    if bytes.len() < IDENTITY_SIZE || segment_len < HEADER_SIZE as u64 {
        return Err(Error::Truncated {
            expected: HEADER_SIZE as u64,
            found: segment_len,
        });
    }
    let magic = u64_at(bytes, 0);
    if magic != MAGIC {
        return Err(Error::BadMagic {
            expected: MAGIC,
            found: magic,
        });
    }
    let major = u16_at(bytes, 8);
    let minor = u16_at(bytes, 10);
    if major != VERSION_MAJOR {
        return Err(Error::UnsupportedVersion {
            expected: VERSION_MAJOR,
            found_major: major,
            found_minor: minor,
        });
    }
    let header_size = u32_at(bytes, 12);
    if header_size as usize != HEADER_SIZE {
        return Err(Error::InvalidHeader {
            field: "header_size",
            value: header_size.into(),
        });
    }
    let policy = Policy::from_code(u32_at(bytes, 32)).ok_or(Error::InvalidHeader {
        field: "policy",
        value: u32_at(bytes, 32).into(),
    })?;
    let checksum = ChecksumPolicy::from_code(u32_at(bytes, 36)).ok_or(Error::InvalidHeader {
        field: "checksum_policy",
        value: u32_at(bytes, 36).into(),
    })?;
    let params = Params {
        policy,
        checksum,
        flags: u32_at(bytes, 60),
        slot_size: u32_at(bytes, 40),
        slot_count: u32_at(bytes, 44),
        flex_zone_size: u64_at(bytes, 48),
        max_consumers: u32_at(bytes, 56),
    };
    params.check()?;
    let regions = params.regions().ok_or(Error::InvalidHeader {
        field: "slot_count",
        value: params.slot_count.into(),
    })?;
    let stored_total = u64_at(bytes, 16);
    if stored_total != regions.total_size {
        return Err(Error::InvalidHeader {
            field: "total_size",
            value: stored_total,
        });
    }
    for (field, at, want) in [
        ("slot_state_offset", 128, regions.slot_state_offset),
        ("checksum_offset", 136, regions.checksum_offset),
        ("flex_offset", 144, regions.flex_offset),
        ("ring_offset", 152, regions.ring_offset),
    ] {
        if u64_at(bytes, at) != want {
            return Err(Error::InvalidHeader {
                field,
                value: u64_at(bytes, at),
            });
        }
    }
    let expected = params.layout_hash(&regions);
    let found = u64_at(bytes, 24);
    if expected != found {
        return Err(Error::LayoutMismatch { expected, found });
    }
    if segment_len < regions.total_size {
        return Err(Error::Truncated {
            expected: regions.total_size,
            found: segment_len,
        });
    }
    Ok(Decoded {
        params,
        regions,
        version_minor: minor,
        layout_hash: found,
        schema_hash: bytes[64..96].try_into().expect("32 bytes"),
        schema_version: u32_at(bytes, 96),
        heartbeat_timeout_ns: u64_at(bytes, 104),
        created_unix_ns: u64_at(bytes, 112),
        key_check: bytes[160..192].try_into().expect("32 bytes"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        Params {
            policy: Policy::Sequential,
            checksum: ChecksumPolicy::None,
            flags: 0,
            slot_size: 4096,
            slot_count: 8,
            flex_zone_size: 100,
            max_consumers: 1,
        }
    }

    #[test]
    fn regions_are_aligned_and_ordered() {
        let r = params().regions().unwrap();
        assert_eq!(r.slot_state_offset, 8192);
        assert_eq!(r.checksum_offset, 8192 + 8 * 64);
        assert_eq!(r.flex_offset, 8192 + 16 * 64);
        assert_eq!(r.ring_offset % 4096, 0);
        assert!(r.ring_offset >= r.flex_offset + 128);
        assert_eq!(r.total_size, r.ring_offset + 8 * 4096);
    }

    #[test]
    fn layout_hash_depends_on_every_parameter() {
        let base = params();
        let h = |p: Params| p.layout_hash(&p.regions().unwrap());
        let mut variants = vec![base];
        variants.push(Params {
            slot_size: 8192,
            ..base
        });
        variants.push(Params {
            slot_count: 9,
            ..base
        });
        variants.push(Params {
            flex_zone_size: 0,
            ..base
        });
        variants.push(Params {
            policy: Policy::Latest,
            ..base
        });
        variants.push(Params {
            checksum: ChecksumPolicy::Enforced,
            ..base
        });
        variants.push(Params {
            flags: FLAG_KEYED,
            ..base
        });
        variants.push(Params {
            flags: FLAG_RECENT_SLOTS,
            ..base
        });
        let hashes: std::collections::HashSet<u64> = variants.into_iter().map(h).collect();
        assert_eq!(hashes.len(), 8);
    }

    #[test]
    fn check_rejects_bad_parameters() {
        let base = params();
        for (p, field) in [
            (
                Params {
                    slot_size: 0,
                    ..base
                },
                "slot_size",
            ),
            (
                Params {
                    slot_size: 100,
                    ..base
                },
                "slot_size",
            ),
            (
                Params {
                    slot_count: 0,
                    ..base
                },
                "slot_count",
            ),
            (
                Params {
                    max_consumers: 2,
                    ..base
                },
                "max_consumers",
            ),
            (
                Params {
                    max_consumers: 65,
                    policy: Policy::Latest,
                    ..base
                },
                "max_consumers",
            ),
            (Params { flags: 4, ..base }, "flags"),
            (
                Params {
                    flags: FLAG_RECENT_SLOTS,
                    policy: Policy::Latest,
                    max_consumers: 8,
                    ..base
                },
                "flags",
            ),
        ] {
            match p.check() {
                Err(Error::InvalidHeader { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{p:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn decode_short_and_wrong_magic() {
        assert!(matches!(
            decode(&[0; 10], 10),
            Err(Error::Truncated { found: 10, .. })
        ));
        let mut b = vec![0u8; IDENTITY_SIZE];
        assert!(matches!(
            decode(&b, 1 << 20),
            Err(Error::BadMagic { found: 0, .. })
        ));
        b[..8].copy_from_slice(&MAGIC.to_le_bytes());
        b[8..10].copy_from_slice(&2u16.to_le_bytes());
        assert!(matches!(
            decode(&b, 1 << 20),
            Err(Error::UnsupportedVersion { found_major: 2, .. })
        ));
    }
}
