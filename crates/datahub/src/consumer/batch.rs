//! Batch reads ([`Consumer::read_batch`]): the committed run after the next message, held and
//! released together with one position update.

use super::*;

impl Consumer {
    /// Waits up to `timeout` for the next message, then takes it and every message committed
    /// after it that is already there, up to `max` (and at most the slot count): the committed
    /// run available, read in place and released together, with one position update (and one
    /// wake-up of the producer) for the whole batch.
    ///
    /// Lossless modes: messages in order, each once, as [`read`](Self::read) gives them; a
    /// message the batch stops before (not committed yet, or under `Enforced` not yet
    /// verified) is the first of the next batch. `Latest`: the message `read` would return,
    /// alone (a latest reader skips, so it has no run to take).
    ///
    /// # Errors
    /// Those of [`read`](Self::read), for the first message; [`Error::OutOfRange`] if `max`
    /// is 0.
    pub fn read_batch(
        &mut self,
        max: usize,
        timeout: Duration,
    ) -> Result<BatchReadGuard<'_>, Error> {
        if max == 0 {
            return Err(Error::OutOfRange {
                what: "batch size",
                index: 0,
                limit: usize::MAX,
            });
        }
        let r = self.read_checked(timeout);
        if let Err(e) = &r {
            if !matches!(e, Error::EndOfStream) {
                self.block.note_error(e);
            }
        }
        let (slot, seq, len) = r?;
        let mut batch = std::mem::take(&mut self.batch);
        batch.clear();
        batch.push(Held { slot, seq, len });
        if self.policy().is_lossless() {
            self.extend_batch(&mut batch, max);
        }
        Ok(BatchReadGuard {
            consumer: self,
            held: batch,
            released: false,
        })
    }

    /// Adds to `batch` (holding message `first`) the messages after it that are committed,
    /// enterable and (Enforced) verified, up to `max` in all. Stops at the first that is not:
    /// the next read meets it through the full path of `read`.
    fn extend_batch(&mut self, batch: &mut Vec<Held>, max: usize) {
        let blk = &self.block;
        let first = batch[0].seq;
        let commit = blk.header().commit.commit_index.load(SeqCst);
        let want = (max as u64)
            .min(blk.slot_count())
            .min(commit.wrapping_sub(first));
        let enforced = blk.params().checksum == ChecksumPolicy::Enforced;
        for k in 1..want {
            let seq = first.wrapping_add(k);
            let Ok(i) = blk.slot_of(seq) else { break };
            match blk.slot(i).try_enter(self.bit) {
                Some(e) if e.seq == seq => {
                    if enforced && self.verify(i, seq, e.len).is_err() {
                        blk.slot(i).leave(self.bit);
                        break;
                    }
                    batch.push(Held {
                        slot: i,
                        seq,
                        len: e.len,
                    });
                }
                Some(_) => {
                    blk.slot(i).leave(self.bit);
                    break;
                }
                None => break,
            }
        }
    }

    /// Releases a batch: checks every slot still held its message, leaves them all, then moves
    /// past the last one with one position store.
    fn release_batch(&mut self, batch: &[Held]) -> Result<(), Error> {
        self.block.check_intact(false)?;
        let blk = &self.block;
        let mut invalid = None;
        for h in batch {
            if invalid.is_none() && !blk.slot(h.slot).still_holds(h.seq) {
                invalid = Some(*h);
            }
            blk.slot(h.slot).leave(self.bit);
        }
        blk.consumer(self.entry).held_seq.store(NO_SEQ, Relaxed);
        let last = batch.last().expect("a batch holds at least one message");
        let bytes: u64 = batch.iter().map(|h| u64::from(h.len)).sum();
        self.advance_run(last.seq, batch.len() as u64, bytes);
        let blk = &self.block;
        match invalid {
            None => Ok(()),
            Some(h) => {
                blk.check_intact(true)?;
                blk.header()
                    .metrics
                    .validation_failures
                    .fetch_add(1, Relaxed);
                let e = Error::ValidationFailed {
                    slot: h.slot,
                    seq: h.seq,
                };
                blk.note_error(&e);
                Err(e)
            }
        }
    }
}

/// A batch of held messages ([`Consumer::read_batch`]): consecutive sequence numbers from
/// [`first_seq`](Self::first_seq), each read in place. Released together (and validated) by
/// [`release`](Self::release) or on drop.
#[derive(Debug)]
pub struct BatchReadGuard<'a> {
    consumer: &'a mut Consumer,
    held: Vec<Held>,
    released: bool,
}

impl BatchReadGuard<'_> {
    /// Messages in the batch (at least 1).
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Always false: a batch holds at least one message.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Sequence number of the first message (message `k` is `first_seq() + k`).
    pub fn first_seq(&self) -> u64 {
        self.held[0].seq
    }

    /// The committed bytes of message `k`.
    ///
    /// # Panics
    /// If `k >= len()`.
    pub fn get(&self, k: usize) -> &[u8] {
        let h = self.held[k];
        let blk = &self.consumer.block;
        let len = (h.len as usize).min(blk.slot_size());
        // SAFETY: this consumer's bit is set in slot `h.slot`'s reader mask and the slot was
        // COMMITTED with message `h.seq` when it entered, so the producer does not write the
        // payload until the bit is cleared (in release); `len` is clamped to the slot.
        unsafe { std::slice::from_raw_parts(blk.payload(h.slot), len) }
    }

    /// `(seq, bytes)` of each message, in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        (0..self.held.len()).map(|k| (self.held[k].seq, self.get(k)))
    }

    /// Releases every message and checks that each slot still held its message while it was
    /// read.
    ///
    /// # Errors
    /// [`Error::ValidationFailed`] for the first message whose slot recovery reset under the
    /// reader (every message of the batch is released and counted as read all the same).
    pub fn release(mut self) -> Result<(), Error> {
        self.released = true;
        let held = std::mem::take(&mut self.held);
        let r = self.consumer.release_batch(&held);
        self.consumer.batch = held;
        r
    }
}

impl Drop for BatchReadGuard<'_> {
    fn drop(&mut self) {
        if !self.released {
            let held = std::mem::take(&mut self.held);
            let _ = self.consumer.release_batch(&held);
            self.consumer.batch = held;
        }
    }
}
