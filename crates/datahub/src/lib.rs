//! DataHub: zero-copy data exchange between processes through shared-memory **DataBlocks**.
//!
//! A producer creates a block (a POSIX shared-memory segment in `/dev/shm`, or in
//! `$DATAHUB_SHM_DIR` when set, mode 0600) holding
//! a header, a ring of fixed-size **slots**, a per-slot state array, a per-slot checksum array
//! and a flexible zone; consumers in other processes attach to it by name and read slots in
//! place. The byte layout is in `docs/datahub-format.md`.
//!
//! ```
//! use std::time::Duration;
//! use datahub::{Config, Consumer, Expectations, Policy, Producer};
//! # fn main() -> Result<(), datahub::Error> {
//! # let quotes = &format!("doc-quotes-{}", std::process::id()); // unique per test run
//! let mut p = Producer::create(quotes, Config::new(Policy::Sequential).slot_size(256))?;
//! let mut w = p.write(Duration::from_secs(1))?;
//! w[..5].copy_from_slice(b"hello");
//! w.commit(5)?;
//! // usually in another process:
//! let mut c = Consumer::attach(quotes, Expectations::new())?;
//! let r = c.read(Duration::from_secs(1))?;
//! assert_eq!((&r[..], r.seq()), (&b"hello"[..], 0));
//! # drop(r);
//! # drop((c, p)); // dropping the producer removed the block
//! # assert!(matches!(datahub::remove(quotes), Err(datahub::Error::NotFound { .. })));
//! # Ok(()) }
//! ```
//!
//! # Model
//! One producer per block writes messages numbered 0, 1, 2, ... (the **sequence number**,
//! `seq`); message `seq` goes to slot `seq % slot_count`, or, in a lossless block with
//! [`SlotOrder::Recent`] (the default for rings of 512 KiB and more), to the slot its consumers
//! released most recently, named in position line `seq % slot_count` (`docs/datahub-format.md`,
//! "Recent slots"). Messages can be written and read one at a time or as batches of
//! consecutive slots ([`Producer::write_batch`], [`Consumer::read_batch`]). Three [`Policy`]s:
//! - **Latest**: a reader gets the newest committed message; the producer never waits except
//!   for readers of the one slot it is about to overwrite.
//! - **Sequential**: one reader, lossless FIFO; the producer waits while the ring is full.
//! - **SequentialSync**: up to `max_consumers` readers, each with its own position, all
//!   lossless; the producer waits for the slowest.
//!
//! Each consumer **registers** in the header's consumer table (pid, process start time,
//! heartbeat, position, held slot) and owns bit `entry` of every slot's reader mask, so every
//! hold has a known owner. A consumer whose process dies (checked through `/proc`, pid and
//! start time) is retired: its bits are cleared and its position is kept for whoever
//! continues. A producer that dies mid-write leaves one slot `WRITING`; the next producer
//! (or [`Admin::release_zombie_writer`]) discards it and continues from the commit index.
//!
//! # Handover
//! [`Producer::handover`] moves the stream to a successor block (another slot size, slot
//! count, schema or slot order; same policy family) without loss: the successor's first
//! sequence number is the old block's next one (the cutover), a successor record is published
//! in the old header (Release) before its `end_of_stream = cutover`, and in lossless modes each
//! registered consumer has an entry reserved in the successor at the cutover, so the producer
//! waits for it there. A consumer reaching the cutover checks the record (a name read from
//! shared memory is never trusted: [`Error::InvalidSuccessor`]), attaches the successor,
//! adopts its reserved entry and goes on reading inside `read`, `try_read` and `read_batch`
//! ([`Consumer::handovers`]). The old block is removed when its consumers have left or after
//! [`Config::handover_grace`] ([`Producer::retired_blocks`]). Format: `docs/datahub-format.md`,
//! "Handover".
//!
//! # Schemas
//! A block's header carries a 32-byte schema hash and a version, checked at attach
//! ([`Expectations::schema`]). [`Schema::of`] takes it from a type's layout: [`describe!`] a
//! `#[repr(C)]` `bytemuck::Pod` struct, and its fingerprint ([`schema`]: BLAKE2b-256 of a
//! canonical field list, `DHS01_...`) equals that of the same fields written by hand in any
//! language; type names play no part. [`TypedProducer`] and [`TypedConsumer`] use it.
//!
//! # Slot protocol and its invariants
//! Every slot has a state word (`FREE`, `WRITING`, `COMMITTED`, `DRAINING`), its message's
//! `seq` and `len`, a 64-bit reader mask and a write generation ([`layout`] has the structs).
//!
//! 1. A reader reads a slot's payload only while its bit is set in the slot's mask and after
//!    it saw the state `COMMITTED`; the producer writes a slot's payload only in `WRITING`,
//!    which it enters only after it stored `DRAINING` and then saw the mask empty.
//! 2. While a reader holds a slot, the slot's `seq`, `len` and payload do not change; the
//!    `seq` a reader reports is the one it read while holding, so a slot is never mislabelled.
//! 3. `commit_index` (one past the newest committed `seq`) only grows, and a slot's message is
//!    complete before `commit_index` covers it.
//! 4. Lossless modes: the producer claims `seq` only while `seq < floor + slot_count`, where
//!    `floor` is the lowest position of the registered consumers (or, with none, the retained
//!    floor), so no message is overwritten before every registered consumer has read it.
//!
//! # Memory ordering (every Acquire/Release pair)
//! - **Publish**: the producer's payload and checksum writes, then `state = COMMITTED`
//!   (Release) → a reader's load of `state` seeing `COMMITTED` (Acquire). Then
//!   `commit_index` store (SeqCst) → a reader's `commit_index` load (SeqCst) before it enters.
//! - **Enter/drain (Dekker)**: producer: `state = DRAINING` (AcqRel swap), SeqCst fence,
//!   load mask (Acquire). Reader: `mask |= bit` (AcqRel), SeqCst fence, load `state`
//!   (Acquire). The two fences are ordered in the single SeqCst order, so one side sees the
//!   other: the producer waits, or the reader backs off. Details in `protocol.rs` (source);
//!   the `loom_*` models fail without the fences.
//! - **Leave**: the reader's payload reads, then `mask &= !bit` (SeqCst ⊇ Release) → the
//!   producer's mask load (Acquire) that sees the bit gone, before it writes again.
//! - **Position** (lossless): a reader stores its position (SeqCst) after leaving the slot →
//!   the producer loads every position (SeqCst) before claiming a slot that far ahead.
//! - **Sleep/wake** (futex): waiter increments `waiters`, loads the futex word, re-checks;
//!   waker changes the condition, loads `waiters`, and only then bumps the word and wakes; all
//!   SeqCst (see `wait.rs` in the source).
//! - **Block publication**: all header fields, then `magic` (Release) → an opener's `magic`
//!   load (Acquire) before it reads the identity lines.
//! - **Registration**: entry fields, `state = ACTIVE` (Release), `active_mask |= bit`
//!   (SeqCst) → the producer's `active_mask` (SeqCst) and position loads.
//! - **Handover**: the successor record's fields, then its `state = PUBLISHED` (Release), then
//!   `end_of_stream = cutover` (SeqCst) → a reader's `end_of_stream` load (SeqCst) or its
//!   `state` load (Acquire) before it reads the record. The successor's reserved entries are
//!   published with its magic (Release → the opener's Acquire).
//!
//! # Attaching to a lossless stream
//! A new consumer starts at the read floor (so, after a crash, where the dead consumer
//! stopped: its in-flight message is delivered again). Its position is stored before its bit
//! appears in `active_mask`; the producer may have claimed one slot with a floor computed
//! before that, so the consumer then moves its start past any message that claim could have
//! overwritten. Messages from the start on are never lost.
//!
//! # Waiting
//! Waits spin for a configurable time (default 20 µs), then sleep on a futex word in the
//! header, waking every quarter of the heartbeat timeout to heartbeat and to retire dead peers.
//! Every wait takes a timeout and returns [`Error::Timeout`] naming its [`WaitCause`].
//!
//! # Checksums
//! BLAKE2b-256 (RFC 7693) of the committed bytes, per slot: [`ChecksumPolicy::Manual`] or
//! [`ChecksumPolicy::Enforced`] (computed at commit, verified before a read guard is handed
//! out). With a 32-byte key ([`Config::checksum_key`]) it is BLAKE2b's keyed MAC, for tamper
//! detection; the header keeps a MAC of a fixed string so a wrong key is refused at attach.
//!
//! # Huge pages
//! [`Config::huge_pages`] ([`HugePages::Off`] by default). For a named `/dev/shm` block the only
//! route is transparent huge pages on shmem: [`HugePages::Try`] advises them
//! (`madvise(MADV_HUGEPAGE)`) when the segment's tmpfs mount allows them, sizes the file to a
//! multiple of the huge page size and checks `/proc/self/smaps`; [`HugePages::Require`] fails
//! with [`Error::HugePagesUnavailable`] otherwise. The result ([`Backing`]: `small`,
//! `thp_requested`, `thp`) is in the header, [`BlockInfo::backing`] and
//! [`Producer::huge_pages`]; the module `huge.rs` explains each kernel setting.
//! A secure block ([`Producer::create_secure`]) lives in a memfd instead: there `Try` and
//! `Require` first try `memfd_create(MFD_HUGETLB)` (a hugetlb pool), recorded as
//! [`Backing::Hugetlb`], and `Try` falls back to 4 KiB pages.
//!
//! # Hostile local users and faults
//! Any local user can create files in `/dev/shm`, and whoever can write a block can also
//! truncate it. The library assumes both happen (the whole story is in
//! `docs/failure-model/datahub.md`):
//! - Segments are opened by one opener (`segment.rs`): the name is one path component,
//!   `O_NOFOLLOW | O_NONBLOCK`, and anything but a regular file is refused
//!   ([`Error::NotRegular`]). [`Inspector`] opens `O_RDONLY` and maps `PROT_READ`, so
//!   inspection works on a block the caller may only read, and cannot write.
//! - A producer holds `flock(LOCK_EX)` on its segment for its life; removing a stale block
//!   ([`remove_dead`]) and taking one over happen under that lock, after re-checking that the
//!   recorded producer is dead and that the name still is the locked inode. Racing creators
//!   and removers get [`Error::Busy`] or [`Error::AlreadyExists`]; none streams into a
//!   deleted segment.
//! - Creation reserves the segment (`fallocate`): a full tmpfs is [`Error::NoSpace`].
//! - A process-wide `SIGBUS` handler (`sigbus.rs`, the technique of libwayland's `wl_shm`)
//!   turns a truncation under a mapped block into zero pages and [`Error::BlockTruncated`]
//!   from the next operation, instead of death by `SIGBUS`. A fault outside every block is
//!   passed to the previous handler (or the default action).
//! - A slot state word no protocol step writes is [`Error::InvalidSlotState`], not a wait.
//!
//! # Secure attach
//! A named block can be opened, overwritten or truncated by any process of its user.
//! [`Producer::create_secure`] puts the block in a `memfd` sealed against shrinking and
//! growing (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`) and serves the descriptor on a Unix
//! socket in a 0700 directory; [`Consumer::attach_secure`] proves it holds the block's key
//! (a mutual BLAKE2b-MAC challenge over fresh nonces and both pids), checks the peer's
//! credentials are checked by the producer against a [`secure::AttachPolicy`], and refuses
//! a descriptor that is not sealed ([`Error::NotSealed`]). Module [`secure`] and
//! `docs/datahub-format.md`, "Secure attach", have the frames and the threat model.
//!
//! # Broker (feature `broker`)
//! `datahub::broker` is the control plane beside the blocks: a ZeroMQ broker where producers register
//! their channel (block name, layout, schema fingerprint and fields, producer pid) and
//! consumers discover it, with exact-fingerprint schema negotiation and heartbeat liveness
//! (`CONSUMER_DIED_NOTIFY` to a producer, `CHANNEL_CLOSING_NOTIFY` to consumers). Data never
//! passes through it; the header stays the authority at attach. Wire protocol 1.2 is in
//! `docs/datahub-broker.md` (1.2 added `HANDOVER_REQ`/`HANDOVER_NOTIFY`); a secure channel
//! announces its socket (`attach_socket`). Without the feature the crate does not link libzmq.
//!
//! # Limits
//! Linux only (`/proc`, futex). At most 64 consumers per block. A consumer that is alive but
//! stuck (stopped, or not calling into the library) keeps its holds; it is reported as
//! stalled by [`Inspector::diagnose`] and only released with `force`.

#![warn(missing_docs)]

mod sync;

pub mod layout;
mod protocol;

#[cfg(not(loom))]
mod admin;
#[cfg(not(loom))]
mod block;
#[cfg(all(feature = "broker", not(loom)))]
pub mod broker;
#[cfg(not(loom))]
pub mod checksum;
#[cfg(not(loom))]
mod config;
#[cfg(not(loom))]
mod consumer;
mod error;
#[cfg(not(loom))]
mod flex;
mod handover;
#[cfg(not(loom))]
mod huge;
#[cfg(not(loom))]
mod metrics;
#[cfg(not(loom))]
pub mod proc;
#[cfg(not(loom))]
mod producer;
#[cfg(not(loom))]
pub mod schema;
#[cfg(not(loom))]
pub mod secure;
#[cfg(not(loom))]
mod segment;
#[cfg(not(loom))]
mod sigbus;
#[cfg(not(loom))]
mod typed;
#[cfg(not(loom))]
pub(crate) mod wait;

pub use crate::error::{Error, WaitCause};
#[cfg(not(loom))]
pub use crate::{
    admin::{Action, Admin, BlockInfo, Diagnosis, Inspector, PeerInfo, SlotReport, Validation},
    config::{Config, Expectations, Preset, Schema, SlotOrder},
    consumer::{BatchReadGuard, Consumer, ReadGuard, Slots},
    flex::{FlexZoneGuard, SharedSpinlock, SpinGuard},
    handover::Handover,
    huge::{
        Backing, HugePageOutcome, HugePages, ShmemEnabled, THP_SYSFS_DIR, THP_SYSFS_ENV,
        parse_shmem_enabled,
    },
    layout::{ChecksumPolicy, Policy},
    metrics::Metrics,
    producer::{BatchWriteGuard, Producer, Takeover, WriteGuard},
    segment::{
        Listed, MAX_NAME_LEN, SHM_DIR_ENV, list, list_all, list_where, remove, remove_dead, shm_dir,
    },
    typed::{TypedConsumer, TypedProducer},
};

/// Decodes and checks a block header from raw bytes (a copy of the segment's start, or all of
/// it) without mapping anything: what an opener does first. `segment_len` is the segment's
/// size. Exposed for tools and fuzzing; any input gives `Ok` or a typed error.
///
/// # Errors
/// [`Error::Truncated`], [`Error::BadMagic`], [`Error::UnsupportedVersion`],
/// [`Error::InvalidHeader`], [`Error::LayoutMismatch`].
#[cfg(not(loom))]
pub fn check_header(bytes: &[u8], segment_len: u64) -> Result<(), Error> {
    layout::decode(bytes, segment_len).map(|_| ())
}
