//! Inspection and recovery: what the `datahub` tool runs.
//!
//! An [`Inspector`] maps a block read-only (`O_RDONLY`, `PROT_READ`) without registering as a
//! producer or consumer: [`Inspector::info`], [`Inspector::diagnose`], [`Inspector::metrics`]
//! and [`Inspector::validate`] change nothing and cannot (a store would fault). An [`Admin`]
//! is an `Inspector` over a writable mapping (it derefs to one) plus the recovery calls. Every recovery call takes `dry_run` and returns the [`Action`]s it
//! took (or would take). A slot or consumer owned by a live process is only touched with
//! `force`.

use std::time::Duration;

use crate::block::Block;
use crate::layout::{ChecksumPolicy, FLAG_KEYED, MAX_CONSUMERS, NO_SEQ, Regions, reg, state};
use crate::metrics::Metrics;
use crate::proc::{self, Liveness};
use crate::segment::Access;
use crate::sync::Ordering::{Acquire, Relaxed, SeqCst};
use crate::{Error, checksum};

/// A recovery step.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "action", rename_all = "snake_case"))]
pub enum Action {
    /// Reader bits of dead (or unregistered) consumers removed from a slot.
    EvictReaders {
        /// Slot index.
        slot: usize,
        /// Consumer entries evicted.
        entries: Vec<usize>,
    },
    /// A dead consumer's registration retired (its holds released, its position kept as the
    /// retained floor if it was the last).
    RetireConsumer {
        /// Entry index.
        entry: usize,
        /// Its pid.
        pid: u32,
    },
    /// A slot the dead producer was writing, emptied.
    DiscardSlot {
        /// Slot index.
        slot: usize,
        /// The message it was writing.
        seq: u64,
    },
    /// A slot the dead producer was draining, given back its intact message.
    ReopenSlot {
        /// Slot index.
        slot: usize,
    },
    /// A message the dead producer committed but did not announce, announced.
    FinishCommit {
        /// Its sequence number.
        seq: u64,
    },
    /// A slot forced back to free.
    ResetSlot {
        /// Slot index.
        slot: usize,
        /// The message it held, if any.
        seq: Option<u64>,
    },
    /// The producer's write index brought back to the commit index.
    ResetWriteIndex {
        /// Old value.
        from: u64,
        /// New value.
        to: u64,
    },
    /// The active-consumer mask rebuilt from the consumer table.
    FixActiveMask {
        /// Old mask.
        from: u64,
        /// New mask.
        to: u64,
    },
}

/// One registered peer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PeerInfo {
    /// Consumer entry (None for the producer).
    pub entry: Option<usize>,
    /// Process id (0: none).
    pub pid: u32,
    /// Process alive and the same process that registered.
    pub alive: bool,
    /// Age of its last heartbeat, ms.
    pub heartbeat_age_ms: u64,
    /// Alive but its heartbeat is older than the block's heartbeat timeout.
    pub stalled: bool,
    /// Consumers: next sequence number to read.
    pub position: Option<u64>,
    /// Consumers: the message it holds.
    pub held_seq: Option<u64>,
    /// Messages read (consumers) or written (producer).
    pub messages: u64,
}

/// A block's identity and state.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BlockInfo {
    /// Block name.
    pub name: String,
    /// Format version, `major.minor`.
    pub version: String,
    /// Slot policy.
    pub policy: crate::Policy,
    /// Checksum policy.
    pub checksum: ChecksumPolicy,
    /// Checksums are keyed.
    pub keyed: bool,
    /// Since 1.2: the producer hands out recently released slots first
    /// ([`crate::SlotOrder::Recent`]); otherwise message `seq` is in slot `seq % slot_count`.
    pub recent_slots: bool,
    /// Payload bytes per slot.
    pub slot_size: u32,
    /// Slots in the ring.
    pub slot_count: u32,
    /// Flexible zone bytes.
    pub flex_zone_size: u64,
    /// Most consumers at once.
    pub max_consumers: u32,
    /// Region offsets and total size.
    pub regions: Regions,
    /// Layout hash (hex).
    pub layout_hash: String,
    /// Schema hash (hex) and version.
    pub schema_hash: String,
    /// Schema version.
    pub schema_version: u32,
    /// Heartbeat timeout, ms.
    pub heartbeat_timeout_ms: u64,
    /// Creation time, ns since the Unix epoch.
    pub created_unix_ns: u64,
    /// Producers that have owned the block.
    pub producer_incarnation: u64,
    /// The producer.
    pub producer: PeerInfo,
    /// Registered consumers.
    pub consumers: Vec<PeerInfo>,
    /// Next sequence number the producer claims.
    pub write_index: u64,
    /// One past the newest committed message.
    pub commit_index: u64,
    /// End of the stream, if the producer closed it.
    pub end_of_stream: Option<u64>,
    /// Lossless modes: where a new consumer starts when none is registered.
    pub retained_floor: u64,
    /// The pages backing the block, as its creator recorded them (format 1.1;
    /// [`crate::Backing::Unknown`] for a 1.0 block).
    pub backing: crate::Backing,
    /// Sequence number of the block's first message: 0, or for a successor of a handover
    /// ([`crate::Producer::handover`]) the cutover.
    pub first_seq: u64,
    /// The block the stream was handed over to (its successor record, checked as a consumer
    /// checks it; `None` if there is none or it is invalid). The cutover is `end_of_stream`.
    pub successor: Option<String>,
}

/// One slot, as diagnosed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SlotReport {
    /// Slot index.
    pub slot: usize,
    /// `free`, `writing`, `committed`, `draining` (or `invalid`).
    pub state: &'static str,
    /// Message sequence number.
    pub seq: Option<u64>,
    /// Committed length.
    pub len: u32,
    /// Write generation.
    pub generation: u64,
    /// Consumer entries holding it.
    pub readers: Vec<usize>,
    /// Of those, the dead ones.
    pub dead_readers: Vec<usize>,
    /// Pid of the producer that last claimed it.
    pub writer_pid: u32,
    /// Writing or draining, and that producer is dead.
    pub writer_dead: bool,
    /// Time since the producer last claimed it, ms (`None`: never written).
    pub age_ms: Option<u64>,
}

/// Everything [`Inspector::diagnose`] found.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Diagnosis {
    /// Identity and peers.
    pub info: BlockInfo,
    /// Every slot.
    pub slots: Vec<SlotReport>,
    /// Problems found, one line each (empty: healthy).
    pub problems: Vec<String>,
}

/// Result of [`Admin::validate`].
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Validation {
    /// Inconsistencies found, one line each.
    pub problems: Vec<String>,
    /// Repairs made (with `repair`).
    pub repairs: Vec<Action>,
}

impl Validation {
    /// No problems found.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Read-only access to a block: opened `O_RDONLY` and mapped `PROT_READ`, so it works on a
/// block the caller may only read and cannot change anything. What `inspect`, `diagnose`,
/// `metrics`, `list` and `validate` (without repair) run.
#[derive(Debug)]
pub struct Inspector {
    block: Block,
}

/// Administrative access to a block: an [`Inspector`] (every read is available through
/// `Deref`) over a writable mapping, plus the recovery calls.
#[derive(Debug)]
pub struct Admin {
    view: Inspector,
}

impl std::ops::Deref for Admin {
    type Target = Inspector;
    fn deref(&self) -> &Inspector {
        &self.view
    }
}

fn age_ms(now: u64, then: u64) -> u64 {
    now.saturating_sub(then) / 1_000_000
}

impl Inspector {
    /// Maps block `name` read-only (waiting up to 100 ms for one being created).
    ///
    /// # Errors
    /// As [`crate::Consumer::attach`] for opening and header checks; [`Error::NotRegular`] for
    /// a name that is a link, FIFO or directory.
    pub fn open(name: &str) -> Result<Inspector, Error> {
        Ok(Inspector {
            block: Block::open(name, Duration::from_millis(100), Access::ReadOnly)?,
        })
    }

    /// [`Error::BlockTruncated`] if the segment is now shorter than the block (checked with
    /// `fstat`, and by the SIGBUS handler for what was read). Reports read from a truncated
    /// block are not trustworthy; the tool checks this after every report.
    ///
    /// # Errors
    /// [`Error::BlockTruncated`].
    pub fn check_intact(&self) -> Result<(), Error> {
        self.block.check_intact(true)
    }

    /// The block's counters.
    pub fn metrics(&self) -> Metrics {
        Metrics::read(&self.block)
    }

    /// Identity, peers and indices.
    pub fn info(&self) -> BlockInfo {
        block_info(&self.block)
    }
}

/// What [`Inspector::info`] reports, for any mapped block (producers and consumers of memfd
/// blocks have no name to open an inspector by).
pub(crate) fn block_info(b: &Block) -> BlockInfo {
    let h = b.header();
    let now = proc::monotonic_ns();
    let timeout = b.info.heartbeat_timeout_ns;
    let p = &h.producer;
    let palive = b.producer_liveness() == Liveness::Alive;
    let page = age_ms(now, p.heartbeat_ns.load(Relaxed));
    let producer = PeerInfo {
        entry: None,
        pid: p.pid.load(Relaxed),
        alive: palive,
        heartbeat_age_ms: page,
        stalled: palive && page * 1_000_000 > timeout,
        position: None,
        held_seq: None,
        messages: p.slots_written.load(Relaxed),
    };
    let consumers = (0..MAX_CONSUMERS)
        .filter(|&i| b.consumer(i).state.load(Acquire) == reg::ACTIVE)
        .map(|i| {
            let e = b.consumer(i);
            let alive = b.consumer_liveness(i) == Liveness::Alive;
            let age = age_ms(now, e.heartbeat_ns.load(Relaxed));
            let held = e.held_seq.load(Relaxed);
            PeerInfo {
                entry: Some(i),
                pid: e.pid.load(Relaxed),
                alive,
                heartbeat_age_ms: age,
                stalled: alive && age * 1_000_000 > timeout,
                position: Some(e.position.load(Relaxed)),
                held_seq: (held != NO_SEQ).then_some(held),
                messages: e.reads.load(Relaxed),
            }
        })
        .collect();
    let eos = h.commit.end_of_stream.load(SeqCst);
    let i = &b.info;
    BlockInfo {
        name: b.name.clone(),
        version: format!("{}.{}", crate::layout::VERSION_MAJOR, i.version_minor),
        policy: i.params.policy,
        checksum: i.params.checksum,
        keyed: i.params.flags & FLAG_KEYED != 0,
        recent_slots: b.recent_slots(),
        slot_size: i.params.slot_size,
        slot_count: i.params.slot_count,
        flex_zone_size: i.params.flex_zone_size,
        max_consumers: i.params.max_consumers,
        regions: i.regions,
        layout_hash: format!("{:016x}", i.layout_hash),
        schema_hash: checksum::hex(&i.schema_hash),
        schema_version: i.schema_version,
        heartbeat_timeout_ms: i.heartbeat_timeout_ns / 1_000_000,
        created_unix_ns: i.created_unix_ns,
        producer_incarnation: p.incarnation.load(Relaxed),
        producer,
        consumers,
        write_index: p.write_index.load(SeqCst),
        commit_index: h.commit.commit_index.load(SeqCst),
        end_of_stream: (eos != NO_SEQ).then_some(eos),
        retained_floor: h.release.retained_floor.load(SeqCst),
        backing: b.backing(),
        first_seq: h.handover.first_seq.load(Relaxed),
        successor: crate::handover::read_record(&h.handover)
            .ok()
            .flatten()
            .map(|r| r.name),
    }
}

impl Inspector {
    fn slot_report(&self, i: usize, now: u64) -> SlotReport {
        let b = &self.block;
        let s = b.slot(i);
        let st = s.state.load(Acquire);
        let seq = s.seq.load(Acquire);
        let mask = s.reader_mask();
        let dead = b.dead_readers(mask);
        let busy = st == state::WRITING || st == state::DRAINING;
        SlotReport {
            slot: i,
            state: state::name(st),
            seq: (seq != NO_SEQ).then_some(seq),
            len: s.len.load(Relaxed),
            generation: s.generation.load(Relaxed),
            readers: bits(mask),
            dead_readers: bits(dead),
            writer_pid: s.writer_pid.load(Relaxed),
            writer_dead: busy && b.producer_liveness() == Liveness::Dead,
            age_ms: (s.generation.load(Relaxed) != 0)
                .then(|| age_ms(now, s.stamp_ns.load(Relaxed))),
        }
    }

    /// Every slot (state, owner, readers, age), the peers, and the problems seen.
    pub fn diagnose(&self) -> Diagnosis {
        let now = proc::monotonic_ns();
        let info = self.info();
        let slots: Vec<SlotReport> = (0..self.block.slot_count() as usize)
            .map(|i| self.slot_report(i, now))
            .collect();
        let mut problems = Vec::new();
        for s in &slots {
            if !s.dead_readers.is_empty() {
                problems.push(format!(
                    "slot {}: held by dead consumer(s) {:?}",
                    s.slot, s.dead_readers
                ));
            }
            if s.writer_dead {
                problems.push(format!(
                    "slot {}: {} by dead producer pid {}",
                    s.slot, s.state, s.writer_pid
                ));
            }
            if s.state == "invalid" {
                problems.push(format!("slot {}: invalid state word", s.slot));
            }
        }
        for c in &info.consumers {
            if !c.alive {
                problems.push(format!(
                    "consumer {}: pid {} is dead",
                    c.entry.unwrap_or(0),
                    c.pid
                ));
            } else if c.stalled {
                problems.push(format!(
                    "consumer {}: pid {} alive but heartbeat {} ms old",
                    c.entry.unwrap_or(0),
                    c.pid,
                    c.heartbeat_age_ms
                ));
            }
        }
        if info.producer.pid != 0 && !info.producer.alive {
            problems.push(format!("producer pid {} is dead", info.producer.pid));
        } else if info.producer.stalled {
            problems.push(format!(
                "producer pid {} heartbeat {} ms old",
                info.producer.pid, info.producer.heartbeat_age_ms
            ));
        }
        Diagnosis {
            info,
            slots,
            problems,
        }
    }

    /// Checks the block's invariants and changes nothing.
    pub fn validate(&self) -> Validation {
        self.check(false)
    }

    /// The checks of `validate`; with `repair` (only through a writable [`Admin`]) fixes the
    /// active mask and zombie reader bits as it goes.
    fn check(&self, repair: bool) -> Validation {
        debug_assert!(!repair || self.block.writable());
        let b = &self.block;
        let h = b.header();
        let n = b.slot_count();
        let mut v = Validation::default();
        let commit = h.commit.commit_index.load(SeqCst);
        let write = h.producer.write_index.load(SeqCst);
        if write < commit || write > commit.saturating_add(1) {
            v.problems.push(format!(
                "write index {write} not in commit index {commit} ..= {}",
                commit.saturating_add(1)
            ));
        }
        let expect_mask = (0..MAX_CONSUMERS)
            .filter(|&i| b.consumer(i).state.load(Acquire) == reg::ACTIVE)
            .fold(0u64, |m, i| m | 1 << i);
        let mask = h.release.active_mask.load(SeqCst);
        if mask != expect_mask {
            v.problems.push(format!(
                "active mask {mask:#x} but registered consumers {expect_mask:#x}"
            ));
            if repair {
                h.release.active_mask.store(expect_mask, SeqCst);
                v.repairs.push(Action::FixActiveMask {
                    from: mask,
                    to: expect_mask,
                });
            }
        }
        for i in 0..MAX_CONSUMERS {
            let e = b.consumer(i);
            if e.state.load(Acquire) == reg::ACTIVE && e.position.load(Relaxed) > commit {
                v.problems.push(format!(
                    "consumer {i}: position {} beyond commit index {commit}",
                    e.position.load(Relaxed)
                ));
            }
        }
        for i in 0..n as usize {
            let s = b.slot(i);
            let st = s.state.load(Acquire);
            let seq = s.seq.load(Acquire);
            let len = s.len.load(Relaxed);
            if st > state::DRAINING {
                v.problems
                    .push(format!("slot {i}: invalid state word {st}"));
            }
            if b.recent_slots() {
                let to = s.position_slot.load(Acquire);
                if u64::from(to) >= n {
                    v.problems.push(format!(
                        "position line {i}: names slot {to}, beyond the block's {n} slots"
                    ));
                }
            } else if seq != NO_SEQ && seq % n != i as u64 {
                v.problems
                    .push(format!("slot {i}: seq {seq} belongs in slot {}", seq % n));
            }
            if st == state::COMMITTED && seq != NO_SEQ && seq >= commit.max(1) && seq != commit {
                v.problems.push(format!(
                    "slot {i}: committed seq {seq} beyond commit index {commit}"
                ));
            }
            if len as usize > b.slot_size() {
                v.problems.push(format!(
                    "slot {i}: length {len} exceeds slot size {}",
                    b.slot_size()
                ));
            }
            let dead = b.dead_readers(s.reader_mask());
            if dead != 0 {
                v.problems.push(format!(
                    "slot {i}: held by dead or unregistered consumer(s) {:?}",
                    bits(dead)
                ));
                if repair {
                    s.evict(dead);
                    v.repairs.push(Action::EvictReaders {
                        slot: i,
                        entries: bits(dead),
                    });
                }
            }
            if st == state::COMMITTED && b.params().checksum != ChecksumPolicy::None {
                if let Some(p) = self.check_slot_checksum(i, seq, len) {
                    v.problems.push(p);
                }
            }
        }
        v
    }

    /// Verifies a committed slot's checksum without holding it: the bytes are copied, then
    /// the slot's state and seq are read again; a slot that changed meanwhile is skipped.
    fn check_slot_checksum(&self, i: usize, seq: u64, len: u32) -> Option<String> {
        let b = &self.block;
        if b.info.params.flags & FLAG_KEYED != 0 {
            return None; // the admin has no key
        }
        let len = (len as usize).min(b.slot_size());
        let mut copy = vec![0u8; len];
        // SAFETY: the payload range lies in the mapping. Another process may be writing it
        // (the admin holds no slot), so the bytes are copied with volatile reads and used only
        // if the slot is unchanged afterwards.
        let (stored, stored_seq) = unsafe {
            let p = b.payload(i);
            for (k, c) in copy.iter_mut().enumerate() {
                *c = std::ptr::read_volatile(p.add(k));
            }
            let e = b.checksum_entry(i);
            (
                std::ptr::read_volatile(&(*e).digest),
                std::ptr::read_volatile(&(*e).seq),
            )
        };
        if !b.slot(i).still_holds(seq) || stored_seq != seq {
            return None;
        }
        let d = checksum::digest(None, &copy);
        (d != stored).then(|| {
            format!(
                "slot {i}: checksum mismatch for seq {seq} (stored {}, computed {})",
                checksum::hex(&stored),
                checksum::hex(&d)
            )
        })
    }
}

impl Admin {
    /// Maps block `name` read-write for recovery (waiting up to 100 ms for one being created).
    ///
    /// # Errors
    /// As [`Inspector::open`].
    pub fn open(name: &str) -> Result<Admin, Error> {
        Ok(Admin {
            view: Inspector {
                block: Block::open(name, Duration::from_millis(100), Access::ReadWrite)?,
            },
        })
    }

    /// Checks the block's invariants; with `repair`, fixes what can be fixed without a live
    /// owner's cooperation (zombie reader bits, the active mask, a dead producer's indices).
    pub fn validate(&self, repair: bool) -> Validation {
        let mut v = self.view.check(repair);
        if repair {
            v.repairs.extend(self.clean_dead_consumers(false));
            v.repairs.extend(self.release_zombie_writer(false));
        }
        v
    }

    /// Removes reader bits of dead or unregistered consumers from every slot.
    pub fn release_zombie_readers(&self, dry_run: bool) -> Vec<Action> {
        let b = &self.block;
        let mut out = Vec::new();
        for i in 0..b.slot_count() as usize {
            let dead = b.dead_readers(b.slot(i).reader_mask());
            if dead != 0 {
                if !dry_run {
                    b.slot(i).evict(dead);
                    b.header().metrics.recovery_actions.fetch_add(1, Relaxed);
                    b.notify_release();
                }
                out.push(Action::EvictReaders {
                    slot: i,
                    entries: bits(dead),
                });
            }
        }
        out
    }

    /// Retires consumers whose processes are dead, and entries a dead process left half
    /// claimed. (A dry run also lists an entry being claimed right now by a live attach.)
    pub fn clean_dead_consumers(&self, dry_run: bool) -> Vec<Action> {
        let b = &self.block;
        if dry_run {
            return (0..MAX_CONSUMERS)
                .filter(|&i| {
                    let st = b.consumer(i).state.load(Acquire);
                    (st == reg::ACTIVE && b.consumer_liveness(i) == Liveness::Dead)
                        || st == reg::CLAIMING
                })
                .map(|i| Action::RetireConsumer {
                    entry: i,
                    pid: b.consumer(i).pid.load(Relaxed),
                })
                .collect();
        }
        b.reclaim_dead_consumers()
            .into_iter()
            .map(|(entry, pid)| Action::RetireConsumer { entry, pid })
            .collect()
    }

    /// With the producer dead: discards its half-written slot, reopens a slot it was
    /// draining, announces a message it committed but did not announce, and brings the write
    /// index back to the commit index. Nothing while the producer is alive.
    pub fn release_zombie_writer(&self, dry_run: bool) -> Vec<Action> {
        let b = &self.block;
        let h = b.header();
        let mut out = Vec::new();
        if b.producer_liveness() == Liveness::Alive {
            return out;
        }
        let n = b.slot_count();
        let mut commit = h.commit.commit_index.load(SeqCst);
        let Ok(finished) = b.unannounced_run() else {
            // A damaged position line: `validate` reports it; nothing here is safe to guess.
            return out;
        };
        if finished > 0 {
            out.extend((0..finished).map(|k| Action::FinishCommit {
                seq: commit.wrapping_add(k),
            }));
            commit = commit.wrapping_add(finished);
            if !dry_run {
                h.commit.commit_index.store(commit, SeqCst);
                b.notify_commit();
            }
        }
        for i in 0..n as usize {
            let s = b.slot(i);
            match s.state.load(Acquire) {
                state::WRITING => {
                    out.push(Action::DiscardSlot {
                        slot: i,
                        seq: s.seq.load(Relaxed),
                    });
                    if !dry_run {
                        s.discard();
                    }
                }
                state::DRAINING => {
                    out.push(Action::ReopenSlot { slot: i });
                    if !dry_run {
                        let keep = s.seq.load(Relaxed) != NO_SEQ;
                        s.reopen(if keep { state::COMMITTED } else { state::FREE });
                    }
                }
                _ => {}
            }
        }
        let w = h.producer.write_index.load(SeqCst);
        if w != commit {
            out.push(Action::ResetWriteIndex {
                from: w,
                to: commit,
            });
            if !dry_run {
                h.producer.write_index.store(commit, SeqCst);
            }
        }
        if !dry_run && !out.is_empty() {
            h.metrics
                .recovery_actions
                .fetch_add(out.len() as u64, Relaxed);
        }
        out
    }

    /// Forces slot `slot` back to free, evicting its readers. Refused while a live producer
    /// is writing it, live consumers hold it, or (lossless modes) a live consumer has yet to
    /// read its message, unless `force`. A lossless consumer that finds its message reset
    /// gets [`Error::Discarded`] and moves on.
    ///
    /// # Errors
    /// [`Error::OutOfRange`], [`Error::OwnerAlive`].
    pub fn force_reset_slot(&self, slot: usize, force: bool) -> Result<Action, Error> {
        let b = &self.block;
        let n = b.slot_count() as usize;
        if slot >= n {
            return Err(Error::OutOfRange {
                what: "slot",
                index: slot,
                limit: n,
            });
        }
        let s = b.slot(slot);
        if !force {
            let st = s.state.load(Acquire);
            if (st == state::WRITING || st == state::DRAINING)
                && b.producer_liveness() == Liveness::Alive
            {
                return Err(Error::OwnerAlive {
                    what: format!("slot {slot} ({})", state::name(st)),
                    pid: b.header().producer.pid.load(Relaxed),
                });
            }
            let seq = s.seq.load(Acquire);
            if st == state::COMMITTED && seq != NO_SEQ && b.params().policy.is_lossless() {
                // A message some live consumer has not read yet: resetting it loses it.
                let mut active = b.header().release.active_mask.load(SeqCst);
                while active != 0 {
                    let e = active.trailing_zeros() as usize;
                    active &= active - 1;
                    if b.consumer_liveness(e) == Liveness::Alive
                        && b.consumer(e).position.load(SeqCst) <= seq
                    {
                        return Err(Error::OwnerAlive {
                            what: format!(
                                "slot {slot} (message {seq} not yet read by consumer {e})"
                            ),
                            pid: b.consumer(e).pid.load(Relaxed),
                        });
                    }
                }
            }
            let mask = s.reader_mask();
            let live = mask & !b.dead_readers(mask);
            if live != 0 {
                let e = live.trailing_zeros() as usize;
                return Err(Error::OwnerAlive {
                    what: format!("slot {slot} (read by consumer {e})"),
                    pid: b.consumer(e).pid.load(Relaxed),
                });
            }
        }
        let seq = s.seq.load(Acquire);
        s.evict(u64::MAX);
        s.discard();
        b.header().metrics.recovery_actions.fetch_add(1, Relaxed);
        b.notify_release();
        Ok(Action::ResetSlot {
            slot,
            seq: (seq != NO_SEQ).then_some(seq),
        })
    }

    /// Every safe recovery at once: retire dead consumers, evict zombie reader bits, clean up
    /// after a dead producer. Returns the actions (with `dry_run`, what it would do).
    pub fn auto_recover(&self, dry_run: bool) -> Vec<Action> {
        let mut out = self.clean_dead_consumers(dry_run);
        out.extend(self.release_zombie_readers(dry_run));
        out.extend(self.release_zombie_writer(dry_run));
        out
    }

    /// Frees the slots held by consumers that are alive but stalled (their heartbeat is older
    /// than the block's heartbeat timeout: stopped, or stuck outside the library), evicting
    /// their reader bits. A slot whose message a live consumer that is not stalled has yet to
    /// read (its position is at or before the message) is left alone: a lossless consumer would
    /// wait for it forever once the slot is empty. A stalled reader whose slot was reset gets
    /// [`Error::ValidationFailed`] from its guard and moves on.
    ///
    /// This is the one recovery that acts on live processes, so it is not part of
    /// [`Admin::auto_recover`]; `datahub recover --force` runs both. Returns the actions (with
    /// `dry_run`, what it would do).
    ///
    /// # Errors
    /// As [`Admin::force_reset_slot`] (a slot out of range cannot occur: slots come from the
    /// block's own diagnosis).
    pub fn reset_stalled_readers(&self, dry_run: bool) -> Result<Vec<Action>, Error> {
        let d = self.diagnose();
        let stalled: Vec<usize> = d
            .info
            .consumers
            .iter()
            .filter(|c| c.alive && c.stalled)
            .filter_map(|c| c.entry)
            .collect();
        let mut out = Vec::new();
        for s in &d.slots {
            if !s.readers.iter().any(|r| stalled.contains(r)) {
                continue;
            }
            let needed = s.seq.is_some_and(|seq| {
                d.info.consumers.iter().any(|c| {
                    c.entry.is_some_and(|e| !stalled.contains(&e))
                        && c.alive
                        && c.position.is_some_and(|p| p <= seq)
                })
            });
            if needed {
                continue;
            }
            out.push(if dry_run {
                Action::ResetSlot {
                    slot: s.slot,
                    seq: s.seq,
                }
            } else {
                self.force_reset_slot(s.slot, true)?
            });
        }
        Ok(out)
    }

    /// An operator's reset of slot `slot`: without `force`, refused while the block's producer
    /// is alive, whatever the slot holds (a live producer may claim the slot at any moment, and
    /// its message may be one a consumer has yet to read); then [`Admin::force_reset_slot`]
    /// with the same `force`. Stricter than [`Admin::force_reset_slot`], which refuses only
    /// what it can see a live process holds; `datahub reset-slot` uses this.
    ///
    /// # Errors
    /// [`Error::ProducerAlive`]; as [`Admin::force_reset_slot`].
    pub fn reset_slot(&self, slot: usize, force: bool) -> Result<Action, Error> {
        let p = self.info().producer;
        if !force && p.alive && slot < self.block.slot_count() as usize {
            return Err(Error::ProducerAlive { slot, pid: p.pid });
        }
        self.force_reset_slot(slot, force)
    }

    /// Removes the block's name from `/dev/shm`.
    pub fn remove(&self) -> Result<(), Error> {
        self.block.unlink()
    }
}

fn bits(mut m: u64) -> Vec<usize> {
    let mut v = Vec::new();
    while m != 0 {
        v.push(m.trailing_zeros() as usize);
        m &= m - 1;
    }
    v
}
