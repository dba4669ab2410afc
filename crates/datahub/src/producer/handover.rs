//! Handover ([`Producer::handover`]): moving the stream to a successor block, and looking
//! after the blocks handed over from until their consumers have left (`docs/datahub-format.md`,
//! "Handover").

use super::*;

/// A block this producer handed over from, kept until its consumers have left (or the grace
/// period is over) and no reservation for them is pending in its successor.
#[derive(Debug)]
pub(super) struct Retired {
    pub(super) block: Block,
    /// When its name is removed even if consumers are still attached.
    pub(super) deadline: Instant,
    /// Its name has been removed.
    pub(super) unlinked: bool,
    /// Entries registered in the successor for this block's consumers (not yet known adopted).
    pub(super) reservations: Vec<Reservation>,
}

impl Drop for Retired {
    fn drop(&mut self) {
        // Nobody writes it any more; its stream ended at the cutover.
        self.block.header().producer.pid.store(0, Release);
        self.block.notify_commit();
    }
}

/// A consumer registration copied into a successor at a handover.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reservation {
    pub(super) entry: usize,
    pub(super) pid: u32,
    pub(super) start: u64,
    pub(super) generation: u32,
}

impl Producer {
    /// Moves the stream to a new block, `successor_name`, created with `successor_config`
    /// (another slot size, slot count, schema or slot order): its first sequence number is
    /// this block's next one (the **cutover**), so sequence numbers continue; this block is
    /// closed with `end_of_stream = cutover` after a successor record naming the new block is
    /// published in its header (`docs/datahub-format.md`, "Handover"). From now on `self`
    /// writes into the successor.
    ///
    /// Consumers follow on their own when they reach the cutover, inside `read`, `try_read`
    /// and `read_batch` ([`crate::Consumer::handovers`] counts it). In lossless modes every
    /// consumer registered here gets a registration in the successor at the cutover, so the
    /// successor's producer waits for it: nothing is lost or read twice across the cutover. A
    /// reservation is dropped if its consumer leaves this block without following or dies.
    ///
    /// The old block's name is removed once no consumer is attached to it, or after this
    /// block's [`Config::handover_grace`]; [`Producer::retired_blocks`] lists those still kept.
    ///
    /// # Errors
    /// [`Error::Closed`] after [`Producer::close`]; [`Error::InvalidName`];
    /// [`Error::InvalidConfig`] for a secure producer ([`Producer::create_secure`]: not
    /// supported), a bad configuration, a successor whose policy is not of
    /// this block's family (lossless or `Latest`), one with fewer consumer entries than a
    /// registered consumer uses, or a name that exists already; the errors of
    /// [`Producer::create`] for creating the block. On error nothing has changed: this block
    /// is still open and written.
    pub fn handover(
        &mut self,
        successor_name: &str,
        successor_config: Config,
    ) -> Result<crate::Handover, Error> {
        if self.closed {
            return Err(Error::Closed);
        }
        if self.secure.is_some() {
            // A named successor would undo what secure attach is for (anyone of the user could
            // open or truncate it), and a consumer of a memfd has no name to follow.
            return Err(Error::InvalidConfig {
                what: "a secure (memfd) block cannot be handed over: successors are named blocks"
                    .into(),
            });
        }
        crate::segment::check_name(successor_name)?;
        if successor_name == self.block.name {
            return Err(Error::InvalidConfig {
                what: "the successor needs a name of its own".into(),
            });
        }
        let params = successor_config.params()?;
        let old = &self.block;
        let old_policy = old.params().policy;
        if params.policy.is_lossless() != old_policy.is_lossless() {
            return Err(Error::InvalidConfig {
                what: format!(
                    "successor policy {} is not of the family of {old_policy} (lossless or latest)",
                    params.policy
                ),
            });
        }
        let lossless = old_policy.is_lossless();
        let cutover = self.next_seq;
        // Registrations cannot change from here until the old block is closed: a consumer
        // registered now gets a reservation, one registering later reads to the cutover and
        // then attaches the successor as a new consumer.
        let lock = SharedSpinlock::new(old, REGISTRATION_LOCK)?;
        let guard = lock.lock(Duration::from_secs(5))?;
        old.reclaim_dead_consumers();
        let mut regs = Vec::new();
        if lossless {
            let mut mask = old.header().release.active_mask.load(SeqCst);
            while mask != 0 {
                let i = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                let e = old.consumer(i);
                if e.state.load(Acquire) != reg::ACTIVE {
                    continue;
                }
                if i >= params.max_consumers as usize {
                    return Err(Error::InvalidConfig {
                        what: format!(
                            "consumer entry {i} is registered; the successor has {} entries",
                            params.max_consumers
                        ),
                    });
                }
                regs.push(Reservation {
                    entry: i,
                    pid: e.pid.load(Relaxed),
                    start: e.start_time.load(Relaxed),
                    generation: e.generation.load(Relaxed),
                });
            }
        }
        let regions = params.regions().expect("checked by params()");
        let identity = |b: &mut [u8]| write_identity(b, &params, &successor_config, regions);
        let init = |blk: &Block| init_block(blk, cutover, &regs);
        let (succ, huge) = match Block::create(
            successor_name,
            params,
            successor_config.huge_pages,
            init,
            identity,
        )? {
            Created::New(b, huge) => (*b, huge),
            Created::Exists => {
                return Err(Error::InvalidConfig {
                    what: format!(
                        "successor block {:?} exists already",
                        crate::error::clip(successor_name)
                    ),
                });
            }
        };
        let record = crate::handover::Record {
            name: successor_name.to_owned(),
            cutover_seq: cutover,
            layout_hash: succ.info.layout_hash,
            created_unix_ns: succ.info.created_unix_ns,
        };
        let h = old.header();
        crate::handover::publish_record(&h.handover, &record);
        // SYNC POINT: readers' SeqCst load of `end_of_stream`; the record was published
        // (Release) before, so a reader that sees the end sees the record.
        h.commit.end_of_stream.store(cutover, SeqCst);
        h.commit.commit_word.fetch_add(1, SeqCst);
        let _ = rustix::thread::futex::wake(
            &h.commit.commit_word,
            rustix::thread::futex::Flags::empty(),
            i32::MAX as u32,
        );
        drop(guard);
        let free = succ
            .recent_slots()
            .then(|| FreeSlots::new(params.slot_count, cutover));
        let old_block = std::mem::replace(&mut self.block, succ);
        let old_name = old_block.name.clone();
        self.retired.push(Retired {
            block: old_block,
            deadline: Instant::now() + self.grace,
            unlinked: false,
            reservations: regs,
        });
        self.grace = successor_config.handover_grace;
        self.floor_cache = cutover;
        self.free = free;
        self.huge = huge;
        self.key = successor_config.key;
        self.plan = wait_plan(&successor_config);
        self.ops = 0;
        self.tend_retired();
        Ok(crate::Handover {
            old: old_name,
            new: successor_name.to_owned(),
            cutover_seq: cutover,
        })
    }

    /// Names of the blocks this producer handed over from ([`Producer::handover`]) that are
    /// still in `/dev/shm`: removed once no consumer is attached, or after their
    /// [`Config::handover_grace`]. Calling this also does that clean-up (writes do it too).
    pub fn retired_blocks(&mut self) -> Vec<String> {
        self.tend_retired();
        self.retired
            .iter()
            .filter(|r| !r.unlinked)
            .map(|r| r.block.name.clone())
            .collect()
    }

    /// Drops reservations whose consumers left or died, removes old blocks whose consumers
    /// have left (or whose grace is over), and forgets those with nothing left to look after.
    pub(super) fn tend_retired(&mut self) {
        if self.retired.is_empty() {
            return;
        }
        let now = Instant::now();
        let len = self.retired.len();
        for k in 0..len {
            let (head, tail) = self.retired.split_at_mut(k + 1);
            let r = &mut head[k];
            let next = tail.first().map_or(&self.block, |n| &n.block);
            r.reservations
                .retain(|res| tend_reservation(&r.block, next, res));
            if !r.unlinked {
                r.block.reclaim_dead_consumers();
                let attached = r.block.header().release.active_mask.load(SeqCst) != 0;
                if !attached || now >= r.deadline {
                    let _ = r.block.unlink();
                    r.unlinked = true;
                }
            }
        }
        self.retired
            .retain(|r| !(r.unlinked && r.reservations.is_empty()));
    }
}

/// Drops reservation `r` in `next` (its consumer left the predecessor without following, or
/// died): clears its bit and retires the entry if it still is the reserved registration.
fn drop_reservation(next: &Block, r: &Reservation) {
    let Ok(lock) = SharedSpinlock::new(next, REGISTRATION_LOCK) else {
        return;
    };
    let Ok(_g) = lock.lock(Duration::from_millis(50)) else {
        return;
    };
    let h = next.header();
    let bit = 1u64 << r.entry;
    if h.handover.reserved_mask.fetch_and(!bit, SeqCst) & bit == 0 {
        return; // adopted meanwhile
    }
    let e = &h.consumers[r.entry];
    if e.pid.load(Relaxed) == r.pid
        && e.start_time.load(Relaxed) == r.start
        && e.state
            .compare_exchange(reg::ACTIVE, reg::CLAIMING, SeqCst, Relaxed)
            .is_ok()
    {
        next.retire_consumer(r.entry);
        h.metrics.recovery_actions.fetch_add(1, Relaxed);
    }
}

/// Whether reservation `r` (made in `next` for consumer entry `r.entry` of `old`) is still
/// wanted: pending in `next`, and its consumer still registered, alive, on `old`. Drops it
/// otherwise.
fn tend_reservation(old: &Block, next: &Block, r: &Reservation) -> bool {
    let bit = 1u64 << r.entry;
    if next.header().handover.reserved_mask.load(SeqCst) & bit == 0 {
        return false;
    }
    let e = old.consumer(r.entry);
    let still = e.state.load(Acquire) == reg::ACTIVE
        && e.pid.load(Relaxed) == r.pid
        && e.start_time.load(Relaxed) == r.start
        && e.generation.load(Relaxed) == r.generation
        && old.consumer_liveness(r.entry) == Liveness::Alive;
    if !still {
        drop_reservation(next, r);
    }
    still
}

/// Looks after every pending reservation of `retired` (whose last successor is `current`)
/// without changing the lists: what a producer's wait does on each tick.
pub(super) fn tend_reservations(retired: &[Retired], current: &Block) {
    for (k, r) in retired.iter().enumerate() {
        let next = retired.get(k + 1).map_or(current, |n| &n.block);
        for res in &r.reservations {
            tend_reservation(&r.block, next, res);
        }
    }
}
