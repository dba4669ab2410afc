//! The producer side: one per block.

use crate::huge::HugePageOutcome;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use crate::block::{Block, Created, REGISTRATION_LOCK};
use crate::checksum;
use crate::config::Config;
use crate::flex::{FlexZoneGuard, SharedSpinlock};
use crate::layout::{ChecksumPolicy, NO_SEQ, Params, reg, state};
use crate::metrics::Metrics;
use crate::proc::{self, Liveness};
use crate::protocol::FreeSlots;
use crate::segment::Access;
use crate::sync::Ordering::{Acquire, Relaxed, Release, SeqCst};
use crate::wait::{WaitPlan, wait_until};
use crate::{Error, WaitCause};

mod handover;
use handover::{Reservation, Retired, tend_reservations};

/// Operations between two heartbeat stores on the hot path (waits heartbeat on every tick).
const HEARTBEAT_EVERY: u32 = 256;

/// The writing end of a block. Creating it creates (or takes over) the block; dropping it
/// removes the block's name (unless configured not to) and marks the block producer-less.
#[derive(Debug)]
pub struct Producer {
    block: Block,
    next_seq: u64,
    /// Lowest consumer position seen last time it was computed (lossless modes).
    floor_cache: u64,
    plan: WaitPlan,
    key: Option<[u8; 32]>,
    unlink_on_drop: bool,
    pid: u32,
    ops: u32,
    closed: bool,
    /// What backs the block and why (`crate::huge`).
    huge: HugePageOutcome,
    /// Recent-slots blocks: the free list (`crate::protocol`, "Recent slots").
    free: Option<FreeSlots>,
    /// The slots of the claimed run (one for `write`), reused from claim to claim.
    run: Vec<usize>,
    /// Their states before the claim closed them (to reopen them on a timeout).
    prev: Vec<u32>,
    /// Secure attach: the socket and the thread serving the memfd (`crate::secure`).
    secure: Option<crate::secure::server::Server>,
    /// [`Config::handover_grace`] of the block written now.
    grace: Duration,
    /// Blocks handed over from, oldest first; the last one's successor is `block`.
    retired: Vec<Retired>,
}

/// What a producer found when it took over a block from a dead producer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Takeover {
    /// Pid of the dead producer.
    pub previous_pid: u32,
    /// Slots that held a half-written message and were discarded.
    pub discarded_slots: Vec<usize>,
    /// The first message committed but not yet announced by the dead producer, now
    /// announced.
    pub finished_seq: Option<u64>,
    /// How many were announced from `finished_seq` on (1 for a single write; a batch
    /// ([`Producer::write_batch`]) is announced whole, and not at all unless every message of
    /// it was published).
    pub finished: u64,
}

impl Producer {
    /// Creates block `name` in `/dev/shm` (mode 0600) with `config`.
    ///
    /// If a block of that name exists and its producer is dead (or gone cleanly without
    /// removing it), and its layout and schema equal `config`'s, this producer takes it over:
    /// committed messages are kept, a half-written slot is discarded, and writing goes on
    /// from the commit index ([`Producer::create_or_take_over`] says what was found).
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::InvalidConfig`]; [`Error::AlreadyExists`] if a live
    /// producer owns the block; [`Error::Busy`] if another process is creating or removing it
    /// right now; [`Error::NoSpace`] if the shared-memory file system cannot hold it;
    /// [`Error::LayoutMismatch`] / [`Error::SchemaMismatch`] if the
    /// existing block has another shape; [`Error::Io`] for system-call failures.
    pub fn create(name: &str, config: Config) -> Result<Producer, Error> {
        Self::create_inner(name, config).map(|(p, _)| p)
    }

    /// Like [`Producer::create`], also returning what was taken over from a dead producer
    /// (`None` for a new block).
    pub fn create_or_take_over(
        name: &str,
        config: Config,
    ) -> Result<(Producer, Option<Takeover>), Error> {
        Self::create_inner(name, config)
    }

    fn create_inner(name: &str, config: Config) -> Result<(Producer, Option<Takeover>), Error> {
        let params = config.params()?;
        let (pid, _) = proc::me();
        let regions = params.regions().expect("checked by params()");
        let identity = |b: &mut [u8]| write_identity(b, &params, &config, regions);
        let init = |blk: &Block| init_block(blk, 0, &[]);
        let plan = wait_plan(&config);
        // A name that exists may vanish before it can be opened (a stale block removed by
        // someone else): then creating it is worth another try.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let block = match Block::create(name, params, config.huge_pages, init, identity)? {
                Created::New(block, huge) => {
                    let p = Producer::new_stream(*block, &config, huge, pid, None);
                    return Ok((p, None));
                }
                Created::Exists => {
                    match Block::open(name, Duration::from_secs(1), Access::ReadWrite) {
                        Ok(b) => b,
                        Err(Error::NotFound { .. }) if attempts < 3 => continue,
                        Err(e @ Error::NotReady { .. }) => {
                            // Not published yet: by a live creator that holds the producer lock
                            // (Busy), or by one that died (NotReady says so).
                            return Err(if segment_locked(name) {
                                Error::Busy {
                                    name: name.to_owned(),
                                }
                            } else {
                                e
                            });
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            let (p, t) = Self::take_over(block, params, &config, plan)?;
            return Ok((p, Some(t)));
        }
    }

    /// Creates a block that has no name in `/dev/shm`, and serves it to authenticated
    /// consumers on the Unix stream socket `socket_path` ("secure attach", `crate::secure`).
    ///
    /// The block lives in a `memfd_create(MFD_CLOEXEC | MFD_ALLOW_SEALING)` file (with
    /// [`crate::Config::huge_pages`] not `Off`, `MFD_HUGETLB` is tried first; without a
    /// hugetlb pool it falls back to 4 KiB pages, or fails for `Require`; [`Self::huge_pages`]
    /// says which), sized, reserved, and sealed `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`, so
    /// no process can truncate it under its peers. The block's key is `config`'s checksum key
    /// ([`crate::Config::checksum_key`], which needs a checksum policy): a consumer must prove
    /// it holds it. The socket's directory must be a real directory owned by this process's
    /// user with mode 0700 (with a policy that allowlists other users: not writable by group or
    /// other, e.g. 0711, so they can reach the socket); the socket is bound under a temporary name in that directory and
    /// renamed over `socket_path` (an existing socket there is replaced). A thread accepts
    /// connections and runs the handshake under `policy`; [`Self::attach_stats`] counts the
    /// outcomes. Dropping the producer stops the thread (waiting for the handshakes in
    /// flight, each at most the policy's handshake timeout) and unlinks the socket (if the path
    /// still is the one it bound). Consumers already attached keep their mapping.
    ///
    /// [`Self::name`] is `memfd:` and the socket path; [`crate::remove`], [`crate::list`] and
    /// takeover do not apply to it.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] (also when `config` has no checksum key);
    /// [`Error::SocketDirUnsafe`]; [`Error::HugePagesUnavailable`]; [`Error::NoSpace`];
    /// [`Error::Io`] (`memfd_create`, `F_ADD_SEALS`, `bind`, `rename`, ...).
    pub fn create_secure(
        socket_path: impl AsRef<std::path::Path>,
        config: Config,
        policy: crate::secure::AttachPolicy,
    ) -> Result<Producer, Error> {
        let path = socket_path.as_ref();
        let params = config.params()?;
        let key = config.key.ok_or_else(|| Error::InvalidConfig {
            what: "secure attach needs the block's key (Config::checksum_key)".into(),
        })?;
        crate::secure::check_producer_dir(path, policy.allows_others())?;
        let label = format!("memfd:{}", crate::error::clip(&path.display().to_string()));
        let regions = params.regions().expect("checked by params()");
        let memfd =
            crate::secure::server::create_memfd("datahub", regions.total_size, config.huge_pages)?;
        let file_len = memfd.len;
        let seg = crate::segment::stat_segment(&label, memfd.file)?;
        let (pid, _) = proc::me();
        let (block, huge) = Block::init_new(
            &label,
            seg,
            file_len,
            regions.total_size,
            config.huge_pages,
            memfd.pages,
            false,
            |blk| init_block(blk, 0, &[]),
            |b| write_identity(b, &params, &config, regions),
        )?;
        let server = crate::secure::server::Server::start(path, block.file(), key, policy)?;
        Ok(Producer::new_stream(
            *block,
            &config,
            huge,
            pid,
            Some(server),
        ))
    }

    /// The producer of a block it just created (stream at 0, nobody registered). A secure
    /// producer never unlinks (its block has no name).
    fn new_stream(
        block: Block,
        config: &Config,
        huge: HugePageOutcome,
        pid: u32,
        secure: Option<crate::secure::server::Server>,
    ) -> Producer {
        let free = block
            .recent_slots()
            .then(|| FreeSlots::new(block.params().slot_count, 0));
        Producer {
            block,
            next_seq: 0,
            floor_cache: 0,
            plan: wait_plan(config),
            key: config.key,
            unlink_on_drop: config.unlink_on_drop && secure.is_none(),
            pid,
            ops: 0,
            closed: false,
            huge,
            free,
            run: Vec::new(),
            prev: Vec::new(),
            secure,
            grace: config.handover_grace,
            retired: Vec::new(),
        }
    }

    /// Identity, peers and indices of this producer's block, as [`crate::Inspector::info`]
    /// reports them (also for a secure block, which no inspector can open by name).
    pub fn info(&self) -> crate::BlockInfo {
        crate::admin::block_info(&self.block)
    }

    /// A secure producer's handshake counters (`None` for a named block).
    pub fn attach_stats(&self) -> Option<crate::secure::AttachStats> {
        self.secure.as_ref().map(|s| s.stats())
    }

    /// A secure producer's socket path (`None` for a named block).
    pub fn attach_socket(&self) -> Option<&std::path::Path> {
        self.secure.as_ref().map(|s| s.path())
    }

    fn take_over(
        block: Block,
        params: Params,
        config: &Config,
        plan: WaitPlan,
    ) -> Result<(Producer, Takeover), Error> {
        // A live owner is the first thing to report (checked again under the lock below).
        if block.producer_liveness() == Liveness::Alive {
            let pid = block.header().producer.pid.load(Acquire);
            return Err(Error::AlreadyExists {
                name: block.name.clone(),
                pid,
            });
        }
        // The producer lock (see `segment`): held by a live producer for its whole life, and
        // by a process creating or removing the block right now.
        if !block.try_lock()? {
            return Err(Error::Busy {
                name: block.name.clone(),
            });
        }
        // A handed-over block's stream goes on in its successor: continuing it here would fork
        // the stream.
        if crate::handover::published(&block.header().handover) {
            let successor = match crate::handover::read_record(&block.header().handover)? {
                Some(r) => r.name,
                None => String::new(),
            };
            return Err(Error::HandedOver { successor });
        }
        if block.info.params != params {
            let want = params.layout_hash(&params.regions().expect("checked"));
            return Err(Error::LayoutMismatch {
                expected: want,
                found: block.info.layout_hash,
            });
        }
        if block.info.schema_hash != config.schema.hash
            || block.info.schema_version != config.schema.version
        {
            return Err(Error::SchemaMismatch {
                expected: config.schema.hex(),
                expected_version: config.schema.version,
                found: checksum::hex(&block.info.schema_hash),
                found_version: block.info.schema_version,
            });
        }
        if let Some(k) = &config.key
            && checksum::key_check(k) != block.info.key_check
        {
            return Err(Error::KeyMismatch {
                why: "the block was created with another key",
            });
        }
        let (pid, start) = proc::me();
        // The liveness check and the new identity happen under the registration lock, so a
        // third producer cannot judge this one by its predecessor's start time.
        let lock = SharedSpinlock::new(&block, REGISTRATION_LOCK)?;
        let guard = lock.lock(Duration::from_secs(5))?;
        let h = block.header();
        let old_pid = h.producer.pid.load(Acquire);
        if block.producer_liveness() == Liveness::Alive {
            return Err(Error::AlreadyExists {
                name: block.name.clone(),
                pid: old_pid,
            });
        }
        h.producer.pid.store(pid, SeqCst);
        h.producer.start_time.store(start, SeqCst);
        h.producer.tid.store(proc::tid(), Relaxed);
        h.producer.heartbeat_ns.store(proc::monotonic_ns(), Relaxed);
        h.producer.incarnation.fetch_add(1, Relaxed);
        let mut t = Takeover {
            previous_pid: old_pid,
            ..Takeover::default()
        };
        let n = block.slot_count();
        let mut commit = h.commit.commit_index.load(SeqCst);
        // Messages the dead producer published (state COMMITTED) but did not announce: its
        // whole claimed run, or nothing (a batch is all or nothing).
        let finished = block.unannounced_run()?;
        if finished > 0 {
            t.finished_seq = Some(commit);
            t.finished = finished;
            commit = commit.wrapping_add(finished);
            h.commit.commit_index.store(commit, SeqCst);
        }
        for i in 0..n as usize {
            let s = block.slot(i);
            match s.state.load(Acquire) {
                state::WRITING => {
                    s.discard();
                    t.discarded_slots.push(i);
                }
                state::DRAINING => {
                    // The old message was not touched yet.
                    let keep = s.seq.load(Relaxed) != NO_SEQ;
                    s.reopen(if keep { state::COMMITTED } else { state::FREE });
                }
                _ => {}
            }
        }
        // The free list: every slot but those of the messages consumers have yet to read.
        let free = if block.recent_slots() {
            let floor = block.read_floor(None);
            let rebuilt = FreeSlots::rebuild(n as u32, floor, commit, |seq| {
                block.slot((seq % n) as usize).position_slot.load(Acquire)
            });
            Some(
                rebuilt.map_err(|(position, value)| Error::InvalidSlotIndex {
                    position,
                    value,
                    slots: n,
                })?,
            )
        } else {
            None
        };
        h.producer.write_index.store(commit, SeqCst);
        // A new producer continues the stream.
        h.commit.end_of_stream.store(NO_SEQ, SeqCst);
        h.metrics.recovery_actions.fetch_add(1, Relaxed);
        block.notify_commit();
        drop(guard);
        let huge = HugePageOutcome {
            requested: config.huge_pages,
            backing: block.backing(),
            reason: "taken over: the pages are the ones its creator obtained".into(),
        };
        let p = Producer {
            huge,
            floor_cache: block.read_floor(None),
            block,
            next_seq: commit,
            plan,
            key: config.key,
            unlink_on_drop: config.unlink_on_drop,
            pid,
            ops: 0,
            closed: false,
            free,
            run: Vec::new(),
            prev: Vec::new(),
            secure: None,
            grace: config.handover_grace,
            retired: Vec::new(),
        };
        Ok((p, t))
    }

    /// What backs the block's memory and why ([`crate::Config::huge_pages`]). A producer that
    /// took the block over reports the backing its creator recorded; [`crate::HugePages::Require`] is
    /// checked only when a block is created.
    pub fn huge_pages(&self) -> &HugePageOutcome {
        &self.huge
    }

    /// The block's name.
    pub fn name(&self) -> &str {
        &self.block.name
    }

    /// Sequence number the next write will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Payload capacity of a slot, bytes.
    pub fn slot_size(&self) -> usize {
        self.block.slot_size()
    }

    /// Claims the next slot for writing, waiting up to `timeout` for space (lossless modes:
    /// the slowest consumer must have read the message `slot_count` behind) and for readers of
    /// the slot to leave. While it waits it heartbeats and, every quarter heartbeat timeout,
    /// retires consumers whose processes have died, so a dead reader holds it up for at most
    /// that long.
    ///
    /// # Errors
    /// [`Error::Timeout`] (cause `RingFull` or `ReadersActive`); [`Error::Closed`] after
    /// [`Producer::close`].
    pub fn write(&mut self, timeout: Duration) -> Result<WriteGuard<'_>, Error> {
        self.block.check_intact(false)?;
        let claimed = self.claim(timeout);
        // A truncated block explains a timeout (its consumers' positions read as zeros).
        self.block.check_intact(claimed.is_err())?;
        let (slot, seq) = claimed?;
        Ok(WriteGuard {
            producer: self,
            slot,
            seq,
            done: false,
        })
    }

    /// Waits up to `timeout` until [`write`](Self::write) could claim its slot without
    /// waiting: (lossless) the ring has room, and no reader holds the slot. Claims nothing and
    /// counts no timeout in the metrics, so a caller can wait in short slices and check its
    /// own conditions (signals, deadlines) in between. Heartbeats and retires dead consumers
    /// meanwhile, as `write` does.
    ///
    /// # Errors
    /// [`Error::Timeout`] (cause `RingFull` or `ReadersActive`); [`Error::Closed`];
    /// [`Error::BlockTruncated`].
    pub fn wait_writable(&self, timeout: Duration) -> Result<(), Error> {
        if self.closed {
            return Err(Error::Closed);
        }
        let blk = &self.block;
        blk.check_intact(false)?;
        let seq = self.next_seq;
        let n = blk.slot_count();
        // Recent slots: the slot is picked at the claim; free slots have no lossless reader
        // left in them, so room is the condition.
        let slot = (!blk.recent_slots()).then(|| blk.slot((seq % n) as usize));
        let lossless = blk.params().policy.is_lossless();
        let room = || !lossless || seq < blk.read_floor(None).saturating_add(n);
        let started = Instant::now();
        let r = self.wait_tending(timeout, || {
            room() && slot.is_none_or(|s| s.reader_mask() == 0)
        })?;
        r.ok_or_else(|| Error::Timeout {
            op: "wait_writable",
            cause: if room() {
                WaitCause::ReadersActive
            } else {
                WaitCause::RingFull
            },
            waited_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Writes through a closure: `f` fills the slot and returns `Some(len)` to commit `len`
    /// bytes, or `None` to abort. Returns the committed sequence number.
    pub fn with_write(
        &mut self,
        timeout: Duration,
        f: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Result<Option<u64>, Error> {
        let mut g = self.write(timeout)?;
        match f(&mut g) {
            Some(len) => g.commit(len).map(Some),
            None => {
                g.abort();
                Ok(None)
            }
        }
    }

    /// Copies `data` into the next slot and commits it; returns its sequence number.
    pub fn send(&mut self, data: &[u8], timeout: Duration) -> Result<u64, Error> {
        if data.len() > self.block.slot_size() {
            return Err(Error::PayloadTooLarge {
                len: data.len(),
                slot_size: self.block.slot_size(),
            });
        }
        let mut g = self.write(timeout)?;
        g[..data.len()].copy_from_slice(data);
        g.commit(data.len())
    }

    /// Claims `n` consecutive slots at once, messages `next_seq .. next_seq + n`: all of them
    /// or none, within the ring's free space (lossless modes wait up to `timeout` until the
    /// slowest consumer has read far enough for all `n` to fit, then for readers still inside
    /// any of the slots to leave). [`BatchWriteGuard::commit`] publishes them in order with one
    /// commit-index advance and one wake-up, so readers see the whole batch at once and a
    /// producer of many small records pays the protocol's shared-memory traffic once per batch.
    /// Dropped without commit, the batch is aborted and the sequence numbers are reused.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] if `n` is 0 or more than the block's slot count; otherwise those
    /// of [`write`](Self::write).
    pub fn write_batch(
        &mut self,
        n: usize,
        timeout: Duration,
    ) -> Result<BatchWriteGuard<'_>, Error> {
        let slots = self.block.slot_count();
        if n == 0 || n as u64 > slots {
            return Err(Error::OutOfRange {
                what: "batch size",
                index: n,
                limit: slots as usize + 1,
            });
        }
        self.block.check_intact(false)?;
        let claimed = self.claim_run(n as u64, timeout);
        self.block.check_intact(claimed.is_err())?;
        let seq = claimed?;
        Ok(BatchWriteGuard {
            producer: self,
            seq,
            lens: vec![0; n],
            done: false,
        })
    }

    /// Copies each of `messages` into a slot of one batch ([`write_batch`](Self::write_batch))
    /// and commits them together; returns their sequence numbers.
    ///
    /// # Errors
    /// [`Error::PayloadTooLarge`] (nothing is claimed), and those of `write_batch`.
    pub fn send_batch(
        &mut self,
        messages: &[&[u8]],
        timeout: Duration,
    ) -> Result<std::ops::Range<u64>, Error> {
        let slot_size = self.block.slot_size();
        if let Some(m) = messages.iter().find(|m| m.len() > slot_size) {
            return Err(Error::PayloadTooLarge {
                len: m.len(),
                slot_size,
            });
        }
        let mut b = self.write_batch(messages.len(), timeout)?;
        for (k, m) in messages.iter().enumerate() {
            b.slot_mut(k)[..m.len()].copy_from_slice(m);
            b.set_len(k, m.len());
        }
        b.commit()
    }

    fn claim(&mut self, timeout: Duration) -> Result<(usize, u64), Error> {
        let seq = self.claim_run(1, timeout)?;
        Ok((self.run[0], seq))
    }

    /// Claims messages `next_seq .. next_seq + count` (1 ≤ `count` ≤ slot_count) and their
    /// slots, left in `self.run`: all of them or none. In a lossless mode it first waits until
    /// the whole run fits in the ring's free space, then closes every slot of the run to new
    /// readers and waits for the readers inside to leave; only when all are clear does it
    /// start writing them, so a timeout leaves every old message as it was. Returns the first
    /// sequence number.
    fn claim_run(&mut self, count: u64, timeout: Duration) -> Result<u64, Error> {
        if self.closed {
            return Err(Error::Closed);
        }
        let seq = self.next_seq;
        let n = self.block.slot_count();
        debug_assert!((1..=n).contains(&count));
        let lossless = self.block.params().policy.is_lossless();
        if self.free.is_some() {
            // Every claim looks at the floor, so the slot released last is the one reused.
            self.floor_cache = self.floor_cache.max(self.block.read_floor(None));
        }
        // The run fits while its last message is less than a ring ahead of the floor.
        let last = seq.wrapping_add(count - 1);
        if lossless && last >= self.floor_cache.saturating_add(n) {
            let blk = &self.block;
            let retired = &self.retired;
            let rel = &blk.header().release;
            let started = Instant::now();
            let floor = wait_until(
                &rel.release_word,
                &rel.release_waiters,
                timeout,
                self.plan,
                || {
                    let f = blk.read_floor(None);
                    (blk.truncated() || last < f.saturating_add(n)).then_some(f)
                },
                || {
                    heartbeat(blk);
                    blk.reclaim_dead_consumers();
                    tend_reservations(retired, blk);
                },
            );
            match floor {
                Some(f) => self.floor_cache = f,
                None => {
                    let m = &blk.header().metrics;
                    return Err(write_timeout(
                        blk,
                        &m.writer_timeouts_ring_full,
                        WaitCause::RingFull,
                        started,
                    ));
                }
            }
        }
        self.run.clear();
        match &mut self.free {
            None => self
                .run
                .extend((0..count).map(|k| (seq.wrapping_add(k) % n) as usize)),
            Some(free) => {
                free.release_to(self.floor_cache.min(seq));
                for k in 0..count {
                    match free.take(seq.wrapping_add(k)) {
                        Some(i) => self.run.push(i as usize),
                        None => {
                            // seq + count ≤ floor + n leaves enough free slots unless the
                            // accounting is broken.
                            debug_assert!(false, "no free slot for seq {seq} + {k}");
                            for &i in self.run.iter().rev() {
                                free.give_back(i as u32);
                            }
                            return Err(Error::InvalidSlotIndex {
                                position: (seq.wrapping_add(k) % n) as usize,
                                value: u32::MAX,
                                slots: n,
                            });
                        }
                    }
                }
            }
        }
        let blk = &self.block;
        self.prev.clear();
        let mut busy = false;
        for &i in &self.run {
            let (prev, mask) = blk.slot(i).close_for_write();
            self.prev.push(prev);
            busy |= mask != 0;
        }
        if busy {
            let run = &self.run;
            let clear = || run.iter().all(|&i| blk.slot(i).reader_mask() == 0);
            let rel = &blk.header().release;
            let started = Instant::now();
            let ok = wait_until(
                &rel.release_word,
                &rel.release_waiters,
                timeout,
                self.plan,
                || (blk.truncated() || clear()).then_some(()),
                || {
                    heartbeat(blk);
                    for &i in run {
                        evict_dead_readers(blk, i);
                    }
                },
            );
            if ok.is_none() {
                for (&i, &prev) in self.run.iter().zip(&self.prev) {
                    blk.slot(i).reopen(prev);
                }
                if let Some(free) = &mut self.free {
                    for &i in self.run.iter().rev() {
                        free.give_back(i as u32);
                    }
                }
                let m = &blk.header().metrics;
                return Err(write_timeout(
                    blk,
                    &m.writer_timeouts_readers,
                    WaitCause::ReadersActive,
                    started,
                ));
            }
        }
        let now = proc::monotonic_ns();
        for (k, &i) in self.run.iter().enumerate() {
            let s = seq.wrapping_add(k as u64);
            blk.slot(i).begin_write(s, self.pid, now);
            if self.free.is_some() {
                blk.slot((s % n) as usize).set_position_slot(i as u32);
            }
        }
        // After every slot of the run is WRITING (and named by its position line): a producer
        // taking over finds the run between the commit index and this.
        blk.header()
            .producer
            .write_index
            .store(seq.wrapping_add(count), Release);
        Ok(seq)
    }

    fn commit(&mut self, i: usize, seq: u64, len: usize, digest_done: bool) -> Result<u64, Error> {
        let blk = &self.block;
        // The payload may have been written to zero pages (SIGBUS handler): not a message.
        blk.check_intact(false)?;
        if len > blk.slot_size() {
            return Err(Error::PayloadTooLarge {
                len,
                slot_size: blk.slot_size(),
            });
        }
        if blk.params().checksum == ChecksumPolicy::Enforced && !digest_done {
            self.store_digest(i, seq, len);
        }
        let h = blk.header();
        blk.slot(i).publish(len as u32);
        h.commit.commit_index.store(seq.wrapping_add(1), SeqCst);
        blk.notify_commit();
        let p = &h.producer;
        p.slots_written
            .store(p.slots_written.load(Relaxed).wrapping_add(1), Relaxed);
        p.bytes_written.store(
            p.bytes_written.load(Relaxed).wrapping_add(len as u64),
            Relaxed,
        );
        self.next_seq = seq.wrapping_add(1);
        blk.check_intact(false)?;
        self.ops += 1;
        if self.ops >= HEARTBEAT_EVERY {
            self.ops = 0;
            heartbeat(blk);
            self.tend_retired();
        }
        Ok(seq)
    }

    fn store_digest(&self, i: usize, seq: u64, len: usize) {
        // SAFETY: the producer holds slot `i` in WRITING state: no reader reads its payload
        // or checksum entry until `publish`; `len` ≤ slot_size was checked by the caller.
        unsafe {
            let data = std::slice::from_raw_parts(self.block.payload(i), len);
            let d = checksum::digest(self.key.as_ref(), data);
            let e = self.block.checksum_entry(i);
            (*e).digest = d;
            (*e).seq = seq;
        }
    }

    fn abort(&mut self, i: usize, seq: u64) {
        let h = self.block.header();
        self.block.slot(i).discard();
        if let Some(free) = &mut self.free {
            free.give_back(i as u32);
        }
        h.producer.write_index.store(seq, Release);
        h.producer.aborted_writes.fetch_add(1, Relaxed);
    }

    /// Publishes the claimed run (`self.run`, first message `seq`) with lengths `lens`: every
    /// slot `COMMITTED` in order, then one commit-index store and one wake-up.
    fn commit_run(&mut self, seq: u64, lens: &[usize]) -> Result<std::ops::Range<u64>, Error> {
        let blk = &self.block;
        blk.check_intact(false)?;
        let slot_size = blk.slot_size();
        if let Some(&len) = lens.iter().find(|&&l| l > slot_size) {
            return Err(Error::PayloadTooLarge { len, slot_size });
        }
        if blk.params().checksum == ChecksumPolicy::Enforced {
            for (k, (&i, &len)) in self.run.iter().zip(lens).enumerate() {
                self.store_digest(i, seq.wrapping_add(k as u64), len);
            }
        }
        let blk = &self.block;
        for (&i, &len) in self.run.iter().zip(lens) {
            blk.slot(i).publish(len as u32);
        }
        let count = lens.len() as u64;
        let end = seq.wrapping_add(count);
        let h = blk.header();
        h.commit.commit_index.store(end, SeqCst);
        blk.notify_commit();
        let p = &h.producer;
        p.slots_written
            .store(p.slots_written.load(Relaxed).wrapping_add(count), Relaxed);
        let bytes: u64 = lens.iter().map(|&l| l as u64).sum();
        p.bytes_written
            .store(p.bytes_written.load(Relaxed).wrapping_add(bytes), Relaxed);
        self.next_seq = end;
        blk.check_intact(false)?;
        self.ops = self.ops.saturating_add(count as u32);
        if self.ops >= HEARTBEAT_EVERY {
            self.ops = 0;
            heartbeat(blk);
            self.tend_retired();
        }
        Ok(seq..end)
    }

    /// Gives back a claimed run that was not published: every slot emptied, the sequence
    /// numbers reused.
    fn abort_run(&mut self, seq: u64) {
        let h = self.block.header();
        for &i in &self.run {
            self.block.slot(i).discard();
        }
        if let Some(free) = &mut self.free {
            for &i in self.run.iter().rev() {
                free.give_back(i as u32);
            }
        }
        h.producer.write_index.store(seq, Release);
        h.producer
            .aborted_writes
            .fetch_add(self.run.len() as u64, Relaxed);
    }

    /// Marks the end of the stream: consumers that have read every message get
    /// [`Error::EndOfStream`]. Later writes fail with [`Error::Closed`].
    pub fn close(&mut self) {
        let h = self.block.header();
        self.closed = true;
        h.commit.end_of_stream.store(self.next_seq, SeqCst);
        // Close changes the readers' condition without a commit: always wake.
        h.commit.commit_word.fetch_add(1, SeqCst);
        let _ = rustix::thread::futex::wake(
            &h.commit.commit_word,
            rustix::thread::futex::Flags::empty(),
            i32::MAX as u32,
        );
    }

    /// Registered consumers.
    pub fn consumers(&self) -> u32 {
        self.block
            .header()
            .release
            .active_mask
            .load(SeqCst)
            .count_ones()
    }

    /// Waits until at least `n` consumers are registered.
    ///
    /// # Errors
    /// [`Error::Timeout`] with cause `Drain`.
    pub fn wait_for_consumers(&self, n: u32, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        while self.consumers() < n {
            heartbeat(&self.block);
            self.block.check_intact(false)?;
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    op: "wait_for_consumers",
                    cause: WaitCause::Drain,
                    waited_ms: timeout.as_millis() as u64,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Waits until every registered consumer has read every committed message (and, when
    /// none is registered, until the retained floor reaches the end, i.e. a consumer read
    /// everything and left). Dead consumers are retired meanwhile.
    ///
    /// # Errors
    /// [`Error::Timeout`] with cause `Drain`.
    pub fn wait_drained(&self, timeout: Duration) -> Result<(), Error> {
        let blk = &self.block;
        let end = self.next_seq;
        let started = Instant::now();
        let r = self.wait_tending(timeout, || blk.read_floor(None) >= end)?;
        r.ok_or(Error::Timeout {
            op: "wait_drained",
            cause: WaitCause::Drain,
            waited_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Waits on the release word up to `timeout` for `ready` (or a truncation), heartbeating
    /// and retiring dead consumers meanwhile, as `write` does. `Ok(None)` on timeout.
    ///
    /// # Errors
    /// [`Error::BlockTruncated`].
    fn wait_tending(
        &self,
        timeout: Duration,
        ready: impl Fn() -> bool,
    ) -> Result<Option<()>, Error> {
        let blk = &self.block;
        let rel = &blk.header().release;
        let r = wait_until(
            &rel.release_word,
            &rel.release_waiters,
            timeout,
            self.plan,
            || (blk.truncated() || ready()).then_some(()),
            || {
                heartbeat(blk);
                blk.reclaim_dead_consumers();
                tend_reservations(&self.retired, blk);
            },
        );
        if r.is_none() {
            // A wait shorter than a tick interval never ticked: look after peers now.
            heartbeat(blk);
            blk.reclaim_dead_consumers();
            tend_reservations(&self.retired, blk);
        }
        blk.check_intact(r.is_none())?;
        Ok(r)
    }

    /// [`Error::BlockTruncated`] if the segment was truncated under this producer (the SIGBUS
    /// handler saw it, or `fstat` says the file is shorter than the block). Every write,
    /// commit and wait checks the handler's mark on its own; this also asks the kernel, for
    /// callers that got an I/O error (`EFAULT`) copying into a slot.
    ///
    /// # Errors
    /// [`Error::BlockTruncated`].
    pub fn check_intact(&self) -> Result<(), Error> {
        self.block.check_intact(true)
    }

    /// Stores a fresh heartbeat (waits and every 256th commit do this on their own).
    pub fn heartbeat(&self) {
        heartbeat(&self.block);
    }

    /// The block's counters.
    pub fn metrics(&self) -> Metrics {
        Metrics::read(&self.block)
    }

    /// Locks the flexible zone (spinlock 0) for up to `timeout`.
    pub fn flex_zone(&self, timeout: Duration) -> Result<FlexZoneGuard<'_>, Error> {
        FlexZoneGuard::lock(&self.block, timeout)
    }

    /// Shared spinlock `index` (< [`crate::layout::SPINLOCKS`]; 0 is the flexible zone's).
    pub fn spinlock(&self, index: usize) -> Result<SharedSpinlock<'_>, Error> {
        SharedSpinlock::new(&self.block, index)
    }
}

/// Whether another process holds segment `name`'s producer lock (probing takes and drops it).
fn segment_locked(name: &str) -> bool {
    crate::segment::open(name, Access::ReadOnly)
        .and_then(|seg| crate::segment::try_lock(name, &seg.file))
        .is_ok_and(|got| !got)
}

/// A producer waiting for slot `i`'s readers: retires dead consumers holding it, and evicts
/// bits of entries that are no longer registered at all.
fn evict_dead_readers(blk: &Block, i: usize) {
    let slot = blk.slot(i);
    if blk.dead_readers(slot.reader_mask()) != 0 {
        blk.reclaim_dead_consumers();
        let left = blk.dead_readers(slot.reader_mask());
        if left != 0 {
            slot.evict(left);
            blk.header().metrics.recovery_actions.fetch_add(1, Relaxed);
        }
    }
}

/// Counts a timed-out write in `counter`, records it as the block's last error, returns it.
fn write_timeout(
    blk: &Block,
    counter: &crate::sync::AtomicU64,
    cause: WaitCause,
    started: Instant,
) -> Error {
    counter.fetch_add(1, Relaxed);
    let e = Error::Timeout {
        op: "write",
        cause,
        waited_ms: started.elapsed().as_millis() as u64,
    };
    blk.note_error(&e);
    e
}

fn heartbeat(blk: &Block) {
    blk.header()
        .producer
        .heartbeat_ns
        .store(proc::monotonic_ns(), Relaxed);
}

impl Drop for Producer {
    fn drop(&mut self) {
        // Secure attach: no new consumer from now on; the socket goes.
        drop(self.secure.take());
        let h = self.block.header();
        // No producer any more: consumers see `ProducerDead` when they run dry, and a new
        // producer may take the block over.
        h.producer.pid.store(0, Release);
        self.block.notify_commit();
        if self.unlink_on_drop {
            let _ = self.block.unlink();
        }
        for r in &self.retired {
            if self.unlink_on_drop && !r.unlinked {
                let _ = r.block.unlink();
            }
        }
        let _ = reg::FREE;
    }
}

/// How a producer configured with `config` waits: spin, then sleep in slices of a quarter of
/// the heartbeat timeout (so it heartbeats and checks peers four times per timeout).
fn wait_plan(config: &Config) -> WaitPlan {
    WaitPlan {
        spin: config.spin,
        slice: config.heartbeat_timeout / 4,
    }
}

/// Initialises a new block's header (private until its magic is published): this process as
/// its producer, the stream starting at `first` (write and commit index, retained floor,
/// `first_seq`), and, for a successor, the consumer registrations `regs` reserved at position
/// `first`.
fn init_block(blk: &Block, first: u64, regs: &[Reservation]) {
    let (pid, start) = proc::me();
    let now = proc::monotonic_ns();
    let h = blk.header();
    let p = &h.producer;
    p.pid.store(pid, Relaxed);
    p.tid.store(proc::tid(), Relaxed);
    p.start_time.store(start, Relaxed);
    p.heartbeat_ns.store(now, Relaxed);
    p.incarnation.store(1, Relaxed);
    p.write_index.store(first, Relaxed);
    h.commit.commit_index.store(first, Relaxed);
    h.commit.commit_word.store(first as u32, Relaxed);
    h.commit.end_of_stream.store(NO_SEQ, Relaxed);
    h.release.retained_floor.store(first, Relaxed);
    h.handover.first_seq.store(first, Relaxed);
    for e in &h.consumers {
        e.held_seq.store(NO_SEQ, Relaxed);
    }
    let mut mask = 0u64;
    for r in regs {
        let e = &h.consumers[r.entry];
        e.generation.store(1, Relaxed);
        e.pid.store(r.pid, Relaxed);
        e.start_time.store(r.start, Relaxed);
        e.heartbeat_ns.store(now, Relaxed);
        e.position.store(first, Relaxed);
        e.state.store(reg::ACTIVE, Relaxed);
        mask |= 1 << r.entry;
    }
    h.release.active_mask.store(mask, Relaxed);
    h.handover.reserved_mask.store(mask, Relaxed);
    for i in 0..blk.slot_count() as usize {
        blk.slot(i).seq.store(NO_SEQ, Relaxed);
        // SAFETY: the block is private until the magic is published.
        unsafe { (*blk.checksum_entry(i)).seq = NO_SEQ };
    }
}

/// Writes the identity lines (0..192) of a new block.
fn write_identity(b: &mut [u8], p: &Params, c: &Config, r: crate::layout::Regions) {
    let put = |b: &mut [u8], at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
    put(b, 8, &crate::layout::VERSION_MAJOR.to_le_bytes());
    put(b, 10, &crate::layout::VERSION_MINOR.to_le_bytes());
    put(b, 12, &(crate::layout::HEADER_SIZE as u32).to_le_bytes());
    put(b, 16, &r.total_size.to_le_bytes());
    put(b, 24, &p.layout_hash(&r).to_le_bytes());
    put(b, 32, &p.policy.code().to_le_bytes());
    put(b, 36, &p.checksum.code().to_le_bytes());
    put(b, 40, &p.slot_size.to_le_bytes());
    put(b, 44, &p.slot_count.to_le_bytes());
    put(b, 48, &p.flex_zone_size.to_le_bytes());
    put(b, 56, &p.max_consumers.to_le_bytes());
    put(b, 60, &p.flags.to_le_bytes());
    put(b, 64, &c.schema.hash);
    put(b, 96, &c.schema.version.to_le_bytes());
    put(
        b,
        104,
        &(c.heartbeat_timeout.as_nanos() as u64).to_le_bytes(),
    );
    put(b, 112, &proc::unix_ns().to_le_bytes());
    put(b, 128, &r.slot_state_offset.to_le_bytes());
    put(b, 136, &r.checksum_offset.to_le_bytes());
    put(b, 144, &r.flex_offset.to_le_bytes());
    put(b, 152, &r.ring_offset.to_le_bytes());
    if let Some(k) = &c.key {
        put(b, 160, &checksum::key_check(k));
    }
}

/// A claimed slot. Derefs to the slot's whole payload area (`slot_size` bytes); [`commit`]
/// publishes the first `len` bytes. Dropped without commit, the write is aborted: the slot is
/// returned empty and the sequence number is reused.
///
/// [`commit`]: WriteGuard::commit
#[derive(Debug)]
pub struct WriteGuard<'a> {
    producer: &'a mut Producer,
    slot: usize,
    seq: u64,
    done: bool,
}

impl WriteGuard<'_> {
    /// Sequence number this message will have.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Slot index.
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// Publishes the first `len` bytes (with their checksum under `Enforced`). Returns the
    /// sequence number.
    ///
    /// # Errors
    /// [`Error::PayloadTooLarge`] if `len` exceeds the slot (the write is then aborted).
    pub fn commit(mut self, len: usize) -> Result<u64, Error> {
        self.done = true;
        let (slot, seq) = (self.slot, self.seq);
        match self.producer.commit(slot, seq, len, false) {
            Ok(s) => Ok(s),
            Err(e) => {
                self.producer.abort(slot, seq);
                Err(e)
            }
        }
    }

    /// Manual checksums: computes and stores the checksum of the first `len` bytes now; the
    /// commit must then use the same `len`.
    pub fn compute_checksum(&mut self, len: usize) -> Result<(), Error> {
        if len > self.producer.block.slot_size() {
            return Err(Error::PayloadTooLarge {
                len,
                slot_size: self.producer.block.slot_size(),
            });
        }
        self.producer.store_digest(self.slot, self.seq, len);
        Ok(())
    }

    /// Manual checksums: [`compute_checksum`](Self::compute_checksum) then commit.
    pub fn commit_with_checksum(mut self, len: usize) -> Result<u64, Error> {
        self.compute_checksum(len)?;
        self.done = true;
        let (slot, seq) = (self.slot, self.seq);
        self.producer.commit(slot, seq, len, true)
    }

    /// Gives the slot back without publishing.
    pub fn abort(mut self) {
        self.done = true;
        self.producer.abort(self.slot, self.seq);
    }
}

impl Deref for WriteGuard<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the slot is in WRITING state and owned by this guard (only the producer
        // writes it, no reader enters it); the range is the slot's payload area.
        unsafe {
            std::slice::from_raw_parts(
                self.producer.block.payload(self.slot),
                self.producer.block.slot_size(),
            )
        }
    }
}

impl DerefMut for WriteGuard<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.producer.block.payload(self.slot),
                self.producer.block.slot_size(),
            )
        }
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.producer.abort(self.slot, self.seq);
        }
    }
}

/// A claimed batch of consecutive slots ([`Producer::write_batch`]). Fill slot `k` through
/// [`slot_mut`](Self::slot_mut), give its length with [`set_len`](Self::set_len) (default 0),
/// then [`commit`](Self::commit) them all. Dropped without commit, the batch is aborted.
#[derive(Debug)]
pub struct BatchWriteGuard<'a> {
    producer: &'a mut Producer,
    seq: u64,
    lens: Vec<usize>,
    done: bool,
}

impl BatchWriteGuard<'_> {
    /// Messages in the batch.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    /// Always false: a batch holds at least one slot.
    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Sequence number of the batch's first message (message `k` gets `first_seq() + k`).
    pub fn first_seq(&self) -> u64 {
        self.seq
    }

    /// The whole payload area (`slot_size` bytes) of the batch's message `k`.
    ///
    /// # Panics
    /// If `k >= len()`.
    pub fn slot_mut(&mut self, k: usize) -> &mut [u8] {
        let i = self.producer.run[k];
        let blk = &self.producer.block;
        // SAFETY: slot `i` is WRITING and claimed by this guard (no reader enters it, only
        // this producer writes it); `&mut self` makes this the only reference to it; the range
        // is the slot's payload area.
        unsafe { std::slice::from_raw_parts_mut(blk.payload(i), blk.slot_size()) }
    }

    /// Sets the committed length of message `k` (bytes, at most `slot_size`; checked at
    /// commit).
    ///
    /// # Panics
    /// If `k >= len()`.
    pub fn set_len(&mut self, k: usize, len: usize) {
        self.lens[k] = len;
    }

    /// Publishes every message of the batch, in order, with one commit-index advance; returns
    /// their sequence numbers. Under `Enforced` each message's checksum is stored first.
    ///
    /// # Errors
    /// [`Error::PayloadTooLarge`] if a length exceeds the slot (the whole batch is then
    /// aborted); [`Error::BlockTruncated`].
    pub fn commit(mut self) -> Result<std::ops::Range<u64>, Error> {
        self.done = true;
        let lens = std::mem::take(&mut self.lens);
        match self.producer.commit_run(self.seq, &lens) {
            Ok(r) => Ok(r),
            Err(e) => {
                if self.producer.next_seq == self.seq {
                    self.producer.abort_run(self.seq);
                }
                Err(e)
            }
        }
    }

    /// Gives every slot back without publishing.
    pub fn abort(mut self) {
        self.done = true;
        self.producer.abort_run(self.seq);
    }
}

impl Drop for BatchWriteGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.producer.abort_run(self.seq);
        }
    }
}
