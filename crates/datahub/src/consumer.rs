//! The consumer side: up to `max_consumers` per block, each with its own registration.

use std::ops::Deref;
use std::time::{Duration, Instant};

use crate::block::{Block, REGISTRATION_LOCK};
use crate::checksum;
use crate::config::Expectations;
use crate::flex::{FlexZoneGuard, SharedSpinlock};
use crate::layout::{ChecksumPolicy, FLAG_KEYED, MAX_CONSUMERS, NO_SEQ, Policy, reg};
use crate::metrics::Metrics;
use crate::proc::{self, Liveness};
use crate::segment::Access;
use crate::sync::Ordering::{Acquire, Relaxed, Release, SeqCst};
use crate::sync::spin_hint;
use crate::wait::{WaitPlan, wait_until};
use crate::{Error, WaitCause};

mod batch;
mod handover;

pub use batch::BatchReadGuard;

/// Reads between two heartbeat stores on the hot path.
const HEARTBEAT_EVERY: u32 = 256;

/// A registered reader of a block.
///
/// Each consumer owns one entry of the block's consumer table (pid, process start time,
/// heartbeat, read position, held slot) and one bit in every slot's reader mask, so a consumer
/// that dies holding a slot is identified and its hold released (by the producer's waits, by
/// the next attach, or by [`crate::Admin`]). Dropping it unregisters it.
#[derive(Debug)]
pub struct Consumer {
    block: Block,
    entry: usize,
    bit: u64,
    /// Lossless: next sequence number to read. Latest: lowest acceptable sequence number.
    position: u64,
    /// Latest: the next read must be exactly `position` (after `seek_to`).
    exact: bool,
    plan: WaitPlan,
    key: Option<[u8; 32]>,
    ops: u32,
    /// The messages of the batch being read ([`Consumer::read_batch`]), reused.
    batch: Vec<Held>,
    /// What it requires of a block (checked again on every successor it follows to).
    exp: Expectations,
    /// Handovers followed.
    handovers: u64,
}

/// One message a consumer holds: slot, sequence number, committed length.
#[derive(Debug, Clone, Copy)]
struct Held {
    slot: usize,
    seq: u64,
    len: u32,
}

impl Consumer {
    /// Attaches to an existing block now.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::NotReady`] (waits up to 1 s for a block being created),
    /// any header error of [`crate::check_header`], [`Error::NotRegular`], [`Error::ExpectationMismatch`],
    /// [`Error::SchemaMismatch`], [`Error::KeyMismatch`], [`Error::TooManyConsumers`].
    pub fn attach(name: &str, exp: Expectations) -> Result<Consumer, Error> {
        let block = Block::open(name, Duration::from_secs(1), Access::ReadWrite)?;
        Self::register(block, exp)
    }

    /// Attaches, waiting up to `timeout` for the block to appear (and be published).
    pub fn attach_wait(
        name: &str,
        exp: Expectations,
        timeout: Duration,
    ) -> Result<Consumer, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match Block::open(name, left, Access::ReadWrite) {
                Ok(b) => return Self::register(b, exp),
                Err(Error::NotFound { .. }) if !left.is_zero() => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Attaches to a secure producer ([`crate::Producer::create_secure`]) serving its block on
    /// the Unix socket `socket_path`, proving it holds `key` ([`crate::secure::read_key_file`]).
    ///
    /// The socket path must be a socket (not a symbolic link) in a directory group and other
    /// cannot write. The handshake (at most [`crate::secure::DEFAULT_HANDSHAKE_TIMEOUT`]) proves
    /// the key both ways without sending it; the descriptor received must be a memfd sealed
    /// at least `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`, at least a header long; then the
    /// block is validated and the consumer registered as for [`Consumer::attach`] (`exp`'s
    /// checksum key, when not given, is `key`).
    ///
    /// # Errors
    /// [`Error::SocketDirUnsafe`]; [`Error::NotFound`] (no socket, or nobody listening);
    /// [`Error::AttachRefused`] (peer credentials or key refused, or the producer did not
    /// prove the key); [`Error::AttachFailed`] (protocol, timeout, socket I/O);
    /// [`Error::NotSealed`]; [`Error::Truncated`] and the other header errors of
    /// [`crate::check_header`]; the registration errors of [`Consumer::attach`].
    pub fn attach_secure(
        socket_path: impl AsRef<std::path::Path>,
        key: &[u8; 32],
        exp: Expectations,
    ) -> Result<Consumer, Error> {
        Self::attach_secure_once(socket_path.as_ref(), key, exp)
    }

    /// [`Consumer::attach_secure`], retrying while the socket does not exist or nobody listens
    /// on it ([`Error::NotFound`]) until `timeout`.
    ///
    /// # Errors
    /// As [`Consumer::attach_secure`]; [`Error::NotFound`] once `timeout` has passed.
    pub fn attach_secure_wait(
        socket_path: impl AsRef<std::path::Path>,
        key: &[u8; 32],
        exp: Expectations,
        timeout: Duration,
    ) -> Result<Consumer, Error> {
        let path = socket_path.as_ref();
        let deadline = Instant::now() + timeout;
        loop {
            match Self::attach_secure_once(path, key, exp.clone()) {
                Err(Error::NotFound { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                r => return r,
            }
        }
    }

    fn attach_secure_once(
        path: &std::path::Path,
        key: &[u8; 32],
        mut exp: Expectations,
    ) -> Result<Consumer, Error> {
        let file = crate::secure::client::fetch_block_fd(
            path,
            key,
            crate::secure::DEFAULT_HANDSHAKE_TIMEOUT,
        )?;
        let label = format!("memfd:{}", crate::error::clip(&path.display().to_string()));
        let seg = crate::segment::stat_segment(&label, file)?;
        let block =
            Block::from_segment(&label, seg, Access::ReadWrite, false)?.ok_or(Error::NotReady {
                name: label.clone(),
                len: 0,
            })?;
        if exp.key.is_none() {
            exp.key = Some(*key);
        }
        Self::register(block, exp)
    }

    fn register(block: Block, exp: Expectations) -> Result<Consumer, Error> {
        check_expectations(&block, &exp)?;
        if exp.no_follow && crate::handover::published(&block.header().handover) {
            let successor = crate::handover::read_record(&block.header().handover)?
                .map(|r| r.name)
                .unwrap_or_default();
            return Err(Error::HandedOver { successor });
        }
        let plan = wait_plan(&block, &exp);
        let entry = {
            let lock = SharedSpinlock::new(&block, REGISTRATION_LOCK)?;
            let _g = lock.lock(Duration::from_secs(5))?;
            block.reclaim_dead_consumers();
            claim_entry(&block)?
        };
        let position = block.consumer(entry).position.load(Relaxed);
        block.header().metrics.attaches.fetch_add(1, Relaxed);
        let key = exp.key;
        Ok(Consumer {
            block,
            entry,
            bit: 1 << entry,
            position,
            exact: false,
            plan,
            key,
            ops: 0,
            batch: Vec::new(),
            exp,
            handovers: 0,
        })
    }

    /// Identity, peers and indices of the block, as [`crate::Inspector::info`] reports them.
    pub fn info(&self) -> crate::BlockInfo {
        crate::admin::block_info(&self.block)
    }

    /// Handovers this consumer has followed ([`crate::Producer::handover`]): each time it
    /// reached a block's cutover and went on reading in the successor.
    pub fn handovers(&self) -> u64 {
        self.handovers
    }

    /// The block's name.
    pub fn name(&self) -> &str {
        &self.block.name
    }

    /// The block's policy.
    pub fn policy(&self) -> Policy {
        self.block.params().policy
    }

    /// This consumer's entry in the consumer table (its reader bit).
    pub fn entry(&self) -> usize {
        self.entry
    }

    /// Lossless modes: the next sequence number to be read. Latest: the lowest one accepted.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Waits up to `timeout` for the next message and returns a guard over it.
    ///
    /// Lossless modes return messages in order, each once (a message being read when its
    /// consumer died is delivered again to the consumer that takes over its position).
    /// `Latest` returns the newest committed message newer than the last one returned
    /// (after [`seek_to`](Self::seek_to): exactly that one).
    ///
    /// # Errors
    /// [`Error::EndOfStream`]; [`Error::Timeout`] (cause `NoData` or `ProducerDead`);
    /// [`Error::ChecksumMismatch`] (Enforced; the message counts as read, so the next call
    /// moves on); [`Error::Overrun`] if this consumer was evicted and the message is gone;
    /// [`Error::SeqUnavailable`] after a `seek_to` to an overwritten message;
    /// [`Error::InvalidSlotState`] if the slot due holds a state word no protocol step
    /// writes (a damaged block); [`Error::BlockTruncated`] if the segment was truncated.
    /// At a handover's cutover ([`crate::Producer::handover`]) the consumer follows to the
    /// successor and returns its first message; following can fail with
    /// [`Error::InvalidSuccessor`] (a bad successor record: nothing is opened),
    /// [`Error::HandedOver`] (following disabled, [`Expectations::follow_handover`]),
    /// [`Error::NotFound`] (the successor is gone) or the attach errors of the successor
    /// (expectations, key, [`Error::TooManyConsumers`]); the consumer then stays on the old
    /// block, and the next read tries again.
    pub fn read(&mut self, timeout: Duration) -> Result<ReadGuard<'_>, Error> {
        let r = self.read_checked(timeout);
        if let Err(e) = &r {
            if !matches!(e, Error::EndOfStream) {
                self.block.note_error(e);
            }
        }
        let (slot, seq, len) = r?;
        Ok(ReadGuard {
            consumer: self,
            slot,
            seq,
            len,
            released: false,
        })
    }

    /// Whether [`read`](Self::read) would return without waiting (a message is committed, the
    /// stream ended, the block was truncated or handed over). Claims nothing and counts
    /// nothing: a binding can take the fast path without releasing its interpreter lock, and
    /// wait (releasing it) only when this is false.
    pub fn readable(&self) -> bool {
        readable_at(&self.block, self.position).is_some()
    }

    /// Waits up to `timeout` until [`read`](Self::read) would return without waiting (see
    /// [`readable`](Self::readable)). Claims nothing and counts no timeout in the block's
    /// metrics, so a caller can wait in short slices and check its own conditions (signals,
    /// deadlines) in between, then read with a zero timeout. Heartbeats meanwhile, as `read`
    /// does.
    ///
    /// # Errors
    /// [`Error::Timeout`] (cause `NoData`, or `ProducerDead` when the producer is gone).
    pub fn wait_readable(&self, timeout: Duration) -> Result<(), Error> {
        let blk = &self.block;
        let h = blk.header();
        let pos = self.position;
        let started = Instant::now();
        let ready = wait_until(
            &h.commit.commit_word,
            &h.commit.commit_waiters,
            timeout,
            self.plan,
            || readable_at(blk, pos),
            || heartbeat(blk, self.entry),
        );
        match ready {
            Some(_) => Ok(()),
            None => Err(Error::Timeout {
                op: "wait_readable",
                cause: if blk.producer_liveness() == Liveness::Dead {
                    WaitCause::ProducerDead
                } else {
                    WaitCause::NoData
                },
                waited_ms: started.elapsed().as_millis() as u64,
            }),
        }
    }

    /// Like [`read`](Self::read) without waiting: `Ok(None)` when nothing new is there.
    pub fn try_read(&mut self) -> Result<Option<ReadGuard<'_>>, Error> {
        match self.read_checked(Duration::ZERO) {
            Ok((slot, seq, len)) => Ok(Some(ReadGuard {
                consumer: self,
                slot,
                seq,
                len,
                released: false,
            })),
            Err(Error::Timeout { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads through a closure; the slot is released (and validated) after `f` returns.
    pub fn with_read<R>(
        &mut self,
        timeout: Duration,
        f: impl FnOnce(&ReadGuard<'_>) -> R,
    ) -> Result<R, Error> {
        let g = self.read(timeout)?;
        let r = f(&g);
        g.release()?;
        Ok(r)
    }

    /// A lending iterator over incoming slots: `while let Some(slot) = it.next() { ... }`.
    /// Each `next` waits up to `timeout`; the iterator ends at the end of the stream.
    pub fn slots(&mut self, timeout: Duration) -> Slots<'_> {
        Slots {
            consumer: self,
            timeout,
        }
    }

    /// Skips to the newest committed message: the next read returns it (or the next one to
    /// be committed, if there is none yet).
    pub fn seek_latest(&mut self) {
        let c = self.block.header().commit.commit_index.load(SeqCst);
        self.set_position(c.saturating_sub(1));
        self.exact = false;
    }

    /// Makes the next read return message `seq`. Lossless modes only move forward (to at most
    /// the commit index); `Latest` may go anywhere still in the ring.
    ///
    /// # Errors
    /// [`Error::SeqUnavailable`] when `seq` is outside what can be read.
    pub fn seek_to(&mut self, seq: u64) -> Result<(), Error> {
        let h = self.block.header();
        let next = h.commit.commit_index.load(SeqCst);
        let oldest = h
            .producer
            .write_index
            .load(SeqCst)
            .saturating_sub(self.block.slot_count());
        let lossless = self.policy().is_lossless();
        let ok = if lossless {
            seq >= self.position && seq <= next
        } else {
            seq >= oldest && seq <= next
        };
        if !ok {
            return Err(Error::SeqUnavailable {
                requested: seq,
                oldest: oldest.max(if lossless { self.position } else { 0 }),
                next,
            });
        }
        self.set_position(seq);
        self.exact = !lossless;
        Ok(())
    }

    fn set_position(&mut self, seq: u64) {
        self.position = seq;
        self.block.consumer(self.entry).position.store(seq, SeqCst);
        self.block.notify_release();
    }

    /// [`read_inner`](Self::read_inner), then the truncation check: on zero pages (a block
    /// truncated under us) the end of the stream or a timeout is an artefact, not an answer.
    fn read_checked(&mut self, timeout: Duration) -> Result<(usize, u64, u32), Error> {
        let deadline = Instant::now() + timeout;
        let mut r = self.read_inner(timeout);
        while matches!(r, Err(Error::EndOfStream)) && self.follow()? {
            r = self.read_inner(deadline.saturating_duration_since(Instant::now()));
        }
        if let Err(e) = self.block.check_intact(r.is_err()) {
            if let Ok((slot, _, _)) = r {
                self.block.slot(slot).leave(self.bit);
            }
            return Err(e);
        }
        r
    }

    fn read_inner(&mut self, timeout: Duration) -> Result<(usize, u64, u32), Error> {
        let blk = &self.block;
        let h = blk.header();
        let n = blk.slot_count();
        let lossless = blk.params().policy.is_lossless();
        let started = Instant::now();
        let pos = self.position;
        // Wait for a message at or after `pos`, or the end of the stream.
        let commit = wait_until(
            &h.commit.commit_word,
            &h.commit.commit_waiters,
            timeout,
            self.plan,
            || readable_at(blk, pos),
            || heartbeat(blk, self.entry),
        );
        let Some(commit) = commit else {
            h.metrics.reader_timeouts.fetch_add(1, Relaxed);
            let cause = if blk.producer_liveness() == Liveness::Dead {
                WaitCause::ProducerDead
            } else {
                WaitCause::NoData
            };
            return Err(Error::Timeout {
                op: "read",
                cause,
                waited_ms: started.elapsed().as_millis() as u64,
            });
        };
        if commit <= pos {
            return Err(Error::EndOfStream);
        }
        let deadline = started + timeout;
        let mut races = 0u32;
        let (slot, entered) = loop {
            let want = if lossless || self.exact {
                pos
            } else {
                h.commit.commit_index.load(SeqCst).wrapping_sub(1)
            };
            // Recent slots: the index is re-read on every try; after the commit index passed
            // `want` it names `want`'s slot (`crate::protocol`, "Recent slots").
            let i = match blk.slot_of(want) {
                Ok(i) => i,
                Err(e) => {
                    h.metrics.validation_failures.fetch_add(1, Relaxed);
                    return Err(e);
                }
            };
            if let Some(e) = blk.slot(i).try_enter(self.bit) {
                if e.seq == want || (!lossless && !self.exact && e.seq != NO_SEQ && e.seq >= pos) {
                    break (i, e);
                }
                blk.slot(i).leave(self.bit);
                if e.seq != NO_SEQ && e.seq > want {
                    // The message due is gone.
                    if lossless {
                        self.position = e.seq;
                        blk.consumer(self.entry).position.store(e.seq, SeqCst);
                        blk.notify_release();
                        h.metrics.overruns.fetch_add(1, Relaxed);
                        return Err(Error::Overrun {
                            expected: want,
                            found: e.seq,
                        });
                    }
                    if self.exact {
                        self.exact = false;
                        let oldest = h.producer.write_index.load(SeqCst).saturating_sub(n);
                        return Err(Error::SeqUnavailable {
                            requested: want,
                            oldest,
                            next: h.commit.commit_index.load(SeqCst),
                        });
                    }
                }
            }
            let st = blk.slot(i).state.load(Acquire);
            if st > crate::layout::state::DRAINING {
                // No protocol step stores this: the block is damaged. Waiting cannot help.
                h.metrics.validation_failures.fetch_add(1, Relaxed);
                return Err(Error::InvalidSlotState { slot: i, value: st });
            }
            if lossless
                && st == crate::layout::state::FREE
                && h.commit.commit_index.load(SeqCst) > want
            {
                // Committed, then reset by recovery before this reader got to it.
                self.position = want.wrapping_add(1);
                blk.consumer(self.entry)
                    .position
                    .store(want.wrapping_add(1), SeqCst);
                blk.notify_release();
                h.metrics.overruns.fetch_add(1, Relaxed);
                return Err(Error::Discarded { slot: i, seq: want });
            }
            races += 1;
            if races >= 64 {
                // Not a short race with the producer: back off instead of burning the core.
                if races < 1024 {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
            if races % 64 == 0 && Instant::now() >= deadline {
                h.metrics.reader_races.fetch_add(u64::from(races), Relaxed);
                // The message is announced but its slot never became readable: if the
                // producer is gone, it never will.
                let cause = if blk.producer_liveness() == Liveness::Dead {
                    WaitCause::ProducerDead
                } else {
                    WaitCause::NoData
                };
                return Err(Error::Timeout {
                    op: "read",
                    cause,
                    waited_ms: started.elapsed().as_millis() as u64,
                });
            }
            spin_hint();
        };
        if races > 0 {
            h.metrics.reader_races.fetch_add(u64::from(races), Relaxed);
        }
        let peak = u64::from(entered.mask.count_ones());
        if peak > h.metrics.peak_readers.load(Relaxed) {
            h.metrics.peak_readers.fetch_max(peak, Relaxed);
        }
        let me = blk.consumer(self.entry);
        me.held_seq.store(entered.seq, Relaxed);
        if blk.params().checksum == ChecksumPolicy::Enforced {
            if let Err(e) = self.verify(slot, entered.seq, entered.len) {
                blk.slot(slot).leave(self.bit);
                me.held_seq.store(NO_SEQ, Relaxed);
                self.advance(entered.seq, entered.len);
                return Err(e);
            }
        }
        self.ops += 1;
        if self.ops >= HEARTBEAT_EVERY {
            self.ops = 0;
            heartbeat(blk, self.entry);
        }
        Ok((slot, entered.seq, entered.len))
    }

    /// Verifies slot `i` (held by this consumer, holding `seq`, `len` bytes) against its stored
    /// checksum.
    fn verify(&self, i: usize, seq: u64, len: u32) -> Result<(), Error> {
        let blk = &self.block;
        let m = &blk.header().metrics;
        // SAFETY: this consumer holds slot `i` (its bit is set and the state was COMMITTED),
        // so the producer does not write its payload or checksum entry; `len` ≤ slot_size was
        // stored by the producer (clamped below against a damaged header).
        let (stored, stored_seq, computed) = unsafe {
            let e = &*blk.checksum_entry(i);
            let len = (len as usize).min(blk.slot_size());
            let data = std::slice::from_raw_parts(blk.payload(i), len);
            (e.digest, e.seq, checksum::digest(self.key.as_ref(), data))
        };
        if stored_seq != seq {
            m.checksum_failures.fetch_add(1, Relaxed);
            return Err(Error::ChecksumMissing { slot: i, seq });
        }
        if stored != computed {
            m.checksum_failures.fetch_add(1, Relaxed);
            return Err(Error::ChecksumMismatch {
                slot: i,
                seq,
                expected: checksum::hex(&stored),
                found: checksum::hex(&computed),
            });
        }
        m.checksums_verified.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Counts message `seq` as read and moves past it.
    fn advance(&mut self, seq: u64, len: u32) {
        self.advance_run(seq, 1, u64::from(len));
    }

    /// Counts `count` messages of `bytes` in all, the last `seq`, as read and moves past them.
    fn advance_run(&mut self, seq: u64, count: u64, bytes: u64) {
        let me = self.block.consumer(self.entry);
        me.reads
            .store(me.reads.load(Relaxed).wrapping_add(count), Relaxed);
        me.bytes_read
            .store(me.bytes_read.load(Relaxed).wrapping_add(bytes), Relaxed);
        self.exact = false;
        self.position = seq.wrapping_add(1);
        if self.block.params().policy.is_lossless() {
            me.position.store(seq.wrapping_add(1), SeqCst);
        } else {
            me.position.store(seq.wrapping_add(1), Relaxed);
        }
        self.block.notify_release();
    }

    fn release_slot(&mut self, slot: usize, seq: u64, len: u32) -> Result<(), Error> {
        // Bytes read from zero pages (a block truncated while held) are not the message.
        self.block.check_intact(false)?;
        let valid = self.block.slot(slot).still_holds(seq);
        self.block.slot(slot).leave(self.bit);
        self.block
            .consumer(self.entry)
            .held_seq
            .store(NO_SEQ, Relaxed);
        self.advance(seq, len);
        let blk = &self.block;
        if valid {
            Ok(())
        } else {
            // A truncation between the check above and `still_holds` (the handler's zero pages
            // hold seq 0) is the truncation, not a recovery reset.
            blk.check_intact(true)?;
            blk.header()
                .metrics
                .validation_failures
                .fetch_add(1, Relaxed);
            let e = Error::ValidationFailed { slot, seq };
            blk.note_error(&e);
            Err(e)
        }
    }

    /// Whether the producer process is alive.
    pub fn producer_alive(&self) -> bool {
        self.block.producer_liveness() == Liveness::Alive
    }

    /// [`Error::BlockTruncated`] if the segment was truncated under this consumer (the SIGBUS
    /// handler saw it, or `fstat` says the file is shorter than the block). Every read and
    /// release checks the handler's mark on its own; this also asks the kernel, for callers
    /// that got an I/O error (`EFAULT`) copying out of a slot.
    ///
    /// # Errors
    /// [`Error::BlockTruncated`].
    pub fn check_intact(&self) -> Result<(), Error> {
        self.block.check_intact(true)
    }

    /// Stores a fresh heartbeat (reads and waits do this on their own).
    pub fn heartbeat(&self) {
        heartbeat(&self.block, self.entry);
    }

    /// The block's counters.
    pub fn metrics(&self) -> Metrics {
        Metrics::read(&self.block)
    }

    /// Locks the flexible zone (spinlock 0) for up to `timeout`.
    pub fn flex_zone(&self, timeout: Duration) -> Result<FlexZoneGuard<'_>, Error> {
        FlexZoneGuard::lock(&self.block, timeout)
    }

    /// Shared spinlock `index`.
    pub fn spinlock(&self, index: usize) -> Result<SharedSpinlock<'_>, Error> {
        SharedSpinlock::new(&self.block, index)
    }
}

fn heartbeat(blk: &Block, entry: usize) {
    blk.consumer(entry)
        .heartbeat_ns
        .store(proc::monotonic_ns(), Relaxed);
}

/// Claims a free consumer entry (caller holds the registration lock and has retired dead
/// consumers) and sets its start position. See the crate docs, "Attaching to a lossless
/// stream", for why the position is safe.
fn claim_entry(blk: &Block) -> Result<usize, Error> {
    let h = blk.header();
    let max = blk.params().max_consumers as usize;
    let active = h.release.active_mask.load(SeqCst);
    if active.count_ones() as usize >= max {
        return Err(Error::TooManyConsumers { max: max as u32 });
    }
    let lossless = blk.params().policy.is_lossless();
    let n = blk.slot_count();
    for i in 0..max.min(MAX_CONSUMERS) {
        let e = &h.consumers[i];
        if e.state
            .compare_exchange(reg::FREE, reg::CLAIMING, SeqCst, Relaxed)
            .is_err()
        {
            continue;
        }
        let (pid, start) = proc::me();
        let start_pos = if lossless { blk.read_floor(None) } else { 0 };
        e.generation.fetch_add(1, Relaxed);
        e.pid.store(pid, Relaxed);
        e.start_time.store(start, Relaxed);
        e.heartbeat_ns.store(proc::monotonic_ns(), Relaxed);
        e.held_seq.store(NO_SEQ, Relaxed);
        e.reads.store(0, Relaxed);
        e.bytes_read.store(0, Relaxed);
        e.position.store(start_pos, SeqCst);
        e.state.store(reg::ACTIVE, Release);
        h.release.active_mask.fetch_or(1 << i, SeqCst);
        if lossless && blk.recent_slots() {
            // The producer may have freed (and reused) the slots of messages below a floor it
            // computed before our bit was visible: never above the others' floor now (their
            // positions only grow, and the set of others is fixed while we hold the lock).
            let others = blk.read_floor(Some(i));
            if others > start_pos {
                e.position.store(others, SeqCst);
            }
        } else if lossless {
            // The producer may have claimed one slot with a floor computed before our bit was
            // visible; everything it claims later sees us.
            let w = h.producer.write_index.load(SeqCst);
            let others = blk.read_floor(Some(i));
            let first_intact = if w < others.saturating_add(n) {
                w.saturating_add(1).saturating_sub(n)
            } else {
                w.saturating_sub(n)
            };
            if first_intact > start_pos {
                e.position.store(first_intact, SeqCst);
            }
        }
        return Ok(i);
    }
    Err(Error::TooManyConsumers { max: max as u32 })
}

/// Checks `block` against what the consumer requires.
fn check_expectations(block: &Block, exp: &Expectations) -> Result<(), Error> {
    let info = &block.info;
    if let Some(p) = exp.policy
        && p != info.params.policy
    {
        return Err(Error::ExpectationMismatch {
            what: "policy",
            expected: p.to_string(),
            found: info.params.policy.to_string(),
        });
    }
    if let Some(min) = exp.min_slot_size
        && info.params.slot_size < min
    {
        return Err(Error::ExpectationMismatch {
            what: "slot_size",
            expected: format!(">= {min}"),
            found: info.params.slot_size.to_string(),
        });
    }
    if let Some(s) = exp.schema
        && (s.hash != info.schema_hash || s.version != info.schema_version)
    {
        return Err(Error::SchemaMismatch {
            expected: s.hex(),
            expected_version: s.version,
            found: checksum::hex(&info.schema_hash),
            found_version: info.schema_version,
        });
    }
    let keyed = info.params.flags & FLAG_KEYED != 0;
    match (&exp.key, keyed) {
        (Some(k), true) if checksum::key_check(k) != info.key_check => {
            return Err(Error::KeyMismatch {
                why: "the key differs from the producer's",
            });
        }
        (None, true) => {
            return Err(Error::KeyMismatch {
                why: "the block is keyed; no key given",
            });
        }
        (Some(_), false) => {
            return Err(Error::KeyMismatch {
                why: "a key was given; the block is not keyed",
            });
        }
        _ => {}
    }
    Ok(())
}

/// Unregisters consumer entry `entry` of `blk` (drop, or leaving a block handed over).
fn unregister(blk: &Block, entry: usize) {
    let e = blk.consumer(entry);
    let lock = SharedSpinlock::new(blk, REGISTRATION_LOCK);
    let guard = lock
        .as_ref()
        .ok()
        .and_then(|l| l.lock(Duration::from_secs(1)).ok());
    if e.state
        .compare_exchange(reg::ACTIVE, reg::CLAIMING, SeqCst, Relaxed)
        .is_ok()
    {
        blk.retire_consumer(entry);
        blk.header().metrics.detaches.fetch_add(1, Relaxed);
    }
    drop(guard);
}

/// `Some(commit index)` when a read at `pos` has an answer now: a message, the end of the
/// stream, a truncated block or a handover to follow.
fn readable_at(blk: &Block, pos: u64) -> Option<u64> {
    let h = blk.header();
    let c = h.commit.commit_index.load(SeqCst);
    (c > pos
        || h.commit.end_of_stream.load(SeqCst) <= pos
        || blk.truncated()
        || handed_over_at(blk, pos))
    .then_some(c)
}

/// Whether `blk` was handed over at or before `pos` (a published successor record whose
/// cutover this reader has reached): the end of its stream, even if the producer died before
/// storing `end_of_stream`.
#[inline]
fn handed_over_at(blk: &Block, pos: u64) -> bool {
    let a = &blk.header().handover;
    crate::handover::published(a) && a.cutover_seq.load(Relaxed) <= pos
}

/// The wait plan for `blk`: spin as `exp` says, wake four times per heartbeat timeout.
fn wait_plan(blk: &Block, exp: &Expectations) -> WaitPlan {
    let timeout_ns = blk.info.heartbeat_timeout_ns.max(4_000_000);
    WaitPlan {
        spin: exp.spin.unwrap_or(Duration::from_micros(20)),
        slice: Duration::from_nanos(timeout_ns / 4),
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        unregister(&self.block, self.entry);
    }
}

/// A held slot. Derefs to the committed bytes; its [`seq`](Self::seq) is read while the slot
/// is held, so it always labels these bytes. Released (and validated) by
/// [`release`](Self::release) or on drop.
#[derive(Debug)]
pub struct ReadGuard<'a> {
    consumer: &'a mut Consumer,
    slot: usize,
    seq: u64,
    len: u32,
    released: bool,
}

impl ReadGuard<'_> {
    /// Sequence number of the message.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Slot index.
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// Verifies the bytes against the stored checksum (Manual mode; Enforced already did).
    ///
    /// # Errors
    /// [`Error::ChecksumMismatch`], [`Error::ChecksumMissing`].
    pub fn verify_checksum(&self) -> Result<(), Error> {
        self.consumer.verify(self.slot, self.seq, self.len)
    }

    /// Releases the slot and checks that it still held this message while it was read.
    ///
    /// # Errors
    /// [`Error::ValidationFailed`] if recovery reset the slot under the reader (the bytes read
    /// may be torn).
    pub fn release(mut self) -> Result<(), Error> {
        self.released = true;
        let (slot, seq, len) = (self.slot, self.seq, self.len);
        self.consumer.release_slot(slot, seq, len)
    }
}

impl Deref for ReadGuard<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let blk = &self.consumer.block;
        let len = (self.len as usize).min(blk.slot_size());
        // SAFETY: this consumer's bit is set in the slot's reader mask and the slot was
        // COMMITTED when it entered, so the producer does not write the payload until the bit
        // is cleared (in release); `len` is clamped to the slot.
        unsafe { std::slice::from_raw_parts(blk.payload(self.slot), len) }
    }
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        if !self.released {
            let _ = self.consumer.release_slot(self.slot, self.seq, self.len);
        }
    }
}

/// Lending iterator over incoming slots (see [`Consumer::slots`]). Not a `std::iter::Iterator`:
/// each guard borrows the consumer until it is released.
#[derive(Debug)]
pub struct Slots<'a> {
    consumer: &'a mut Consumer,
    timeout: Duration,
}

impl Slots<'_> {
    /// The next slot; `None` at the end of the stream.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Result<ReadGuard<'_>, Error>> {
        match self.consumer.read(self.timeout) {
            Err(Error::EndOfStream) => None,
            r => Some(r),
        }
    }

    /// See [`Consumer::seek_latest`].
    pub fn seek_latest(&mut self) {
        self.consumer.seek_latest();
    }

    /// See [`Consumer::seek_to`].
    pub fn seek_to(&mut self, seq: u64) -> Result<(), Error> {
        self.consumer.seek_to(seq)
    }
}
