//! Following a handover ([`crate::Producer::handover`]): at the end of a block's stream, moving
//! to the successor its record names (`docs/datahub-format.md`, "Handover").

use super::*;

impl Consumer {
    /// At the end of the stream: if the block has a successor record, moves to the successor
    /// (`Ok(true)`); `Ok(false)` if there is none.
    ///
    /// Lossless: adopts the entry the handover reserved for this consumer (position = the
    /// cutover) or, for a consumer that attached after the handover, registers anew at the
    /// successor's read floor; only then unregisters from the old block.
    pub(super) fn follow(&mut self) -> Result<bool, Error> {
        let Some(rec) = crate::handover::read_record(&self.block.header().handover)? else {
            return Ok(false);
        };
        if self.exp.no_follow {
            return Err(Error::HandedOver {
                successor: rec.name,
            });
        }
        let lossless = self.policy().is_lossless();
        if lossless && self.position != rec.cutover_seq {
            return Err(Error::InvalidSuccessor {
                why: format!(
                    "cutover {} but this consumer is at {}",
                    rec.cutover_seq, self.position
                ),
            });
        }
        let succ = Block::open(&rec.name, Duration::from_secs(1), Access::ReadWrite)?;
        crate::handover::check_successor(&rec, &succ)?;
        check_expectations(&succ, &self.exp)?;
        let (pid, start) = proc::me();
        let entry = {
            let lock = SharedSpinlock::new(&succ, REGISTRATION_LOCK)?;
            let _g = lock.lock(Duration::from_secs(5))?;
            succ.reclaim_dead_consumers();
            let h = succ.header();
            let bit = 1u64 << self.entry;
            let e = succ.consumer(self.entry);
            let reserved = h.handover.reserved_mask.load(SeqCst) & bit != 0
                && e.state.load(Acquire) == reg::ACTIVE
                && e.pid.load(Relaxed) == pid
                && e.start_time.load(Relaxed) == start;
            if reserved {
                h.handover.reserved_mask.fetch_and(!bit, SeqCst);
                e.heartbeat_ns.store(proc::monotonic_ns(), Relaxed);
                self.entry
            } else {
                claim_entry(&succ)?
            }
        };
        succ.header().metrics.attaches.fetch_add(1, Relaxed);
        self.plan = wait_plan(&succ, &self.exp);
        let old = std::mem::replace(&mut self.block, succ);
        unregister(&old, self.entry);
        self.entry = entry;
        self.bit = 1 << entry;
        let e = self.block.consumer(entry);
        if lossless {
            self.position = e.position.load(SeqCst);
        } else {
            self.position = self.position.max(rec.cutover_seq);
            e.position.store(self.position, Relaxed);
        }
        self.exact = false;
        self.handovers += 1;
        Ok(true)
    }
}
