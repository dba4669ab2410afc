//! The slot protocol: how one producer and many readers hand a slot back and forth without a
//! lock. Each step is a method on [`SlotCtl`] (one slot's coordination line) so the same code
//! runs on shared memory in production and on loom's model-checked atomics in the `loom_*`
//! tests at the bottom of this file.
//!
//! # Steps
//! Producer, claiming slot `i` for message `seq`:
//! 1. [`SlotCtl::close_for_write`]: swap in `DRAINING` (AcqRel), a SeqCst fence, then load
//!    the reader mask (Acquire). While the mask is non-zero it waits ([`SlotCtl::reader_mask`]); no new reader can
//!    enter a `DRAINING` slot.
//! 2. [`SlotCtl::begin_write`]: store `seq`, then `WRITING` (Release). The payload is written.
//! 3. [`SlotCtl::publish`]: store `len`, then `COMMITTED` (**Release**). The caller then
//!    advances the commit index (SeqCst) and wakes sleepers.
//!
//! Reader `r` (bit `1 << r`), entering slot `i`:
//! 1. [`SlotCtl::try_enter`]: `fetch_or` its bit into the reader mask (AcqRel), a SeqCst
//!    fence, then load the state (**Acquire**). Only `COMMITTED` lets it in; then `seq` and `len` are
//!    read (Acquire). Anything else: it clears its bit and retries.
//! 2. Reads the payload in place.
//! 3. [`SlotCtl::leave`]: `fetch_and` its bit out (**Release**).
//!
//! # Why a reader never sees a slot being written (the Dekker pair)
//! Each side writes its own word (producer: `state`; reader: the mask), then issues a SeqCst
//! fence, then reads the other's word. The two fences are ordered one way or the other in the
//! single total order of SeqCst operations (C++20 [atomics.fences]: if fence A precedes fence
//! B, a load after B sees the store before A or a later one). If the producer's fence comes
//! first, the reader's state load sees `DRAINING`, `WRITING`, or a later `COMMITTED`; never the
//! `COMMITTED` of the message being replaced. Otherwise the producer's mask load sees the
//! reader's bit and it waits. (Plain SeqCst accesses without the fences would also be correct
//! under the C++ model, but loom models SeqCst accesses as AcqRel and only fences as SeqCst;
//! with the fences the code loom checks is the code that runs. On x86-64 each fence is one
//! `mfence`.) A reader that sees
//! `COMMITTED` synchronizes with the producer's Release `publish`, so the payload, `seq` and
//! `len` are those of one complete message; and while its bit is set no producer can pass step
//! 1, so they stay so until it leaves. The reader's Release `leave` pairs with the producer's
//! (SeqCst ⊇ Acquire) mask load that sees the bit gone, so every payload read happens before the
//! producer's next write of that slot.
//!
//! The `seq` stored in each slot is what labels a read: a reader reports the `seq` it read
//! while holding its bit, so it can never return one message's bytes with another's number.
//!
//! # Recent slots (format 1.2, lossless policies)
//! In a block with [`crate::layout::FLAG_RECENT_SLOTS`] message `seq` lives in whichever slot
//! the producer took from its free list ([`FreeSlots`]: last in, first out, so the slot its
//! consumers released most recently, still in cache, is written next). The producer records
//! the choice in position line `seq % n` ([`SlotCtl::set_position_slot`]) after step 2 and
//! before the commit index passes `seq`; a lossless reader at position `pos` loads that word
//! only after it has seen the commit index pass `pos`, so (the SeqCst commit store is a
//! release, the load an acquire) it sees the store made for `pos` or a later one. A later one
//! is only written for `pos + k·n`, which the producer cannot claim while this reader's
//! position (part of the floor) is still `pos`; a reader that was evicted meanwhile finds a
//! higher `seq` in the slot and reports an overrun, as in ring order. Every slot access is
//! still steps 1-3 above, so a stale index can only lead a reader into a slot whose `seq` is
//! not the one it wants: it leaves and looks again.
//!
//! A slot goes back on the free list when every consumer's position has passed the message
//! in it (the read floor), which in lossless modes also means every reader has left it; the
//! producer still closes it (step 1) before writing, so a reader that followed a stale index
//! into it is waited for. The free list is the producer's own memory; a producer that takes
//! over a block rebuilds it from the position lines of the messages between the floor and the
//! commit index ([`FreeSlots::rebuild`]).

use crate::layout::{NO_SEQ, SlotCtl, state};
use crate::sync::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use crate::sync::fence;

/// What a reader found when it entered a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entered {
    /// Sequence number of the message in the slot.
    pub seq: u64,
    /// Its committed length.
    pub len: u32,
    /// The reader mask right after this reader's bit went in.
    pub mask: u64,
}

impl SlotCtl {
    /// Producer step 1: closes the slot to new readers and returns the current reader mask
    /// (the slot may be written once it reads 0). Returns the state it replaced, for
    /// [`SlotCtl::reopen`].
    #[inline]
    pub(crate) fn close_for_write(&self) -> (u32, u64) {
        let prev = self.state.swap(state::DRAINING, AcqRel);
        fence(SeqCst);
        (prev, self.readers.load(Acquire))
    }

    /// The reader mask, for a producer waiting in step 1.
    #[inline]
    pub(crate) fn reader_mask(&self) -> u64 {
        self.readers.load(SeqCst)
    }

    /// Undoes [`SlotCtl::close_for_write`] when the producer gives up waiting: the old message
    /// is intact, so the slot returns to `prev`.
    pub(crate) fn reopen(&self, prev: u32) {
        self.state.store(prev, Release);
    }

    /// Producer step 2 (after the reader mask read 0): the slot now holds message `seq`, being
    /// written.
    #[inline]
    pub(crate) fn begin_write(&self, seq: u64, pid: u32, now_ns: u64) {
        self.seq.store(seq, Relaxed);
        self.generation
            .store(self.generation.load(Relaxed).wrapping_add(1), Relaxed);
        self.writer_pid.store(pid, Relaxed);
        self.stamp_ns.store(now_ns, Relaxed);
        self.state.store(state::WRITING, Release);
    }

    /// Producer step 3: message `seq` is complete with `len` bytes. Release: everything the
    /// producer wrote to the payload and checksum before this is visible to a reader that
    /// sees `COMMITTED`.
    #[inline]
    pub(crate) fn publish(&self, len: u32) {
        self.len.store(len, Relaxed);
        self.state.store(state::COMMITTED, Release);
    }

    /// A write abandoned after step 2: the payload is partly overwritten, so the slot holds no
    /// message any more.
    pub(crate) fn discard(&self) {
        self.seq.store(NO_SEQ, Relaxed);
        self.len.store(0, Relaxed);
        self.state.store(state::FREE, Release);
    }

    /// Reader step 1: enters the slot if it holds a committed message. `None`: the slot is
    /// free, being drained or written; the reader's bit is already out again.
    #[inline]
    pub(crate) fn try_enter(&self, bit: u64) -> Option<Entered> {
        let mask = self.readers.fetch_or(bit, AcqRel) | bit;
        fence(SeqCst);
        if self.state.load(Acquire) == state::COMMITTED {
            let seq = self.seq.load(Acquire);
            let len = self.len.load(Acquire);
            Some(Entered { seq, len, mask })
        } else {
            self.readers.fetch_and(!bit, Release);
            None
        }
    }

    /// Whether the slot still holds message `seq`: checked by a reader before it leaves, to
    /// catch a slot reset under it by recovery. `DRAINING` counts: the producer may close the
    /// slot to new readers while this one is still inside; the message is intact until the
    /// reader's bit is gone.
    #[inline]
    pub(crate) fn still_holds(&self, seq: u64) -> bool {
        let s = self.state.load(Acquire);
        (s == state::COMMITTED || s == state::DRAINING) && self.seq.load(Acquire) == seq
    }

    /// Reader step 3: leaves the slot. SeqCst (not only Release) so that the reader's later
    /// check for a sleeping producer is ordered after it (see `Block::notify_release`).
    #[inline]
    pub(crate) fn leave(&self, bit: u64) {
        self.readers.fetch_and(!bit, SeqCst);
    }

    /// Recovery: removes the bits in `mask` (readers found dead).
    pub(crate) fn evict(&self, mask: u64) -> u64 {
        self.readers.fetch_and(!mask, SeqCst) & mask
    }

    /// Recent-slots blocks, on position line `seq % n`: message `seq` is in slot `slot`.
    /// Stored by the producer after [`SlotCtl::begin_write`] and before the commit index
    /// passes `seq` (Release; the commit store orders it for readers).
    #[inline]
    pub(crate) fn set_position_slot(&self, slot: u32) {
        self.position_slot.store(slot, Release);
    }
}

/// The producer's free list of a recent-slots block: the slots whose messages every consumer
/// has read, last released first, and which slot each position still in flight went to.
#[derive(Debug, Clone)]
pub(crate) struct FreeSlots {
    /// Free slots; the top is the most recently released.
    stack: Vec<u32>,
    /// `slot_of[seq % n]`: the slot this producer gave message `seq` (for `seq` between
    /// `released_to` and the next claim). Private: never read back from shared memory.
    slot_of: Vec<u32>,
    /// Messages below this have had their slots returned to `stack`.
    released_to: u64,
}

impl FreeSlots {
    /// A new stream of `n` slots whose first message is `start`: every slot free, slot 0 first.
    pub(crate) fn new(n: u32, start: u64) -> FreeSlots {
        FreeSlots {
            stack: (0..n).rev().collect(),
            slot_of: vec![0; n as usize],
            released_to: start,
        }
    }

    /// A producer taking over: messages `floor..commit` are still needed, and `in_flight(seq)`
    /// gives the slot position line `seq % n` names for each. Every other slot is free.
    ///
    /// # Errors
    /// `Err((position, value))` if a position names a slot out of range or one already named
    /// by another position in flight (a damaged block).
    pub(crate) fn rebuild(
        n: u32,
        floor: u64,
        commit: u64,
        in_flight: impl Fn(u64) -> u32,
    ) -> Result<FreeSlots, (usize, u32)> {
        let floor = floor.min(commit).max(commit.saturating_sub(u64::from(n)));
        let mut used = vec![false; n as usize];
        let mut slot_of = vec![0; n as usize];
        for seq in floor..commit {
            let p = (seq % u64::from(n)) as usize;
            let v = in_flight(seq);
            if v >= n || used[v as usize] {
                return Err((p, v));
            }
            used[v as usize] = true;
            slot_of[p] = v;
        }
        Ok(FreeSlots {
            stack: (0..n).rev().filter(|&i| !used[i as usize]).collect(),
            slot_of,
            released_to: floor,
        })
    }

    /// Every consumer has read the messages below `floor` (the caller passes at most the next
    /// message to claim): their slots go on the stack, oldest first, so the newest is on top.
    #[inline]
    pub(crate) fn release_to(&mut self, floor: u64) {
        let n = self.slot_of.len() as u64;
        // A jump of more than a lap (a consumer position moved far ahead) frees each slot once.
        let from = self.released_to.max(floor.saturating_sub(n));
        for seq in from..floor {
            self.stack.push(self.slot_of[(seq % n) as usize]);
        }
        self.released_to = self.released_to.max(floor);
    }

    /// Takes the most recently released slot for message `seq`. `None` when none is free
    /// (the caller claims only while `seq < floor + n`, which leaves at least one).
    #[inline]
    pub(crate) fn take(&mut self, seq: u64) -> Option<u32> {
        let i = self.stack.pop()?;
        let n = self.slot_of.len() as u64;
        self.slot_of[(seq % n) as usize] = i;
        Some(i)
    }

    /// Gives back the slot a claim took (the write was aborted or timed out).
    #[inline]
    pub(crate) fn give_back(&mut self, slot: u32) {
        self.stack.push(slot);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! Model checks of the slot protocol. Payloads are loom `UnsafeCell`s, so loom reports any
    //! read of a payload that is not ordered with its write as a data race.
    use super::*;
    use crate::sync::{AtomicU32, AtomicU64};
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::thread;

    fn slot() -> SlotCtl {
        SlotCtl {
            state: AtomicU32::new(state::FREE),
            len: AtomicU32::new(0),
            seq: AtomicU64::new(NO_SEQ),
            readers: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            writer_pid: AtomicU32::new(0),
            _pad: 0,
            stamp_ns: AtomicU64::new(0),
            position_slot: AtomicU32::new(0),
            _pad2: 0,
            _reserved: 0,
        }
    }

    struct Ring {
        slots: Vec<SlotCtl>,
        payload: Vec<UnsafeCell<[u64; 2]>>,
        commit: AtomicU64,
        /// Lossless model: the reader's next position.
        position: AtomicU64,
    }

    // SAFETY: the payload cells are only touched under the slot protocol, which is what the
    // model checks; loom flags any unsynchronised access.
    unsafe impl Sync for Ring {}

    fn ring(n: usize) -> Arc<Ring> {
        Arc::new(Ring {
            slots: (0..n).map(|_| slot()).collect(),
            payload: (0..n).map(|_| UnsafeCell::new([0; 2])).collect(),
            commit: AtomicU64::new(0),
            position: AtomicU64::new(0),
        })
    }

    /// The payload of message `seq`: both words derived from it, so a torn or mislabelled read
    /// shows.
    fn pattern(seq: u64) -> [u64; 2] {
        [seq * 7 + 1, !seq]
    }

    fn write(r: &Ring, seq: u64, lossless: bool) {
        let n = r.slots.len() as u64;
        if lossless {
            while r.position.load(SeqCst) + n <= seq {
                thread::yield_now();
            }
        }
        let i = (seq % n) as usize;
        let s = &r.slots[i];
        let (_prev, mut mask) = s.close_for_write();
        while mask != 0 {
            thread::yield_now();
            mask = s.reader_mask();
        }
        s.begin_write(seq, 1, 0);
        r.payload[i].with_mut(|p| unsafe { *p = pattern(seq) });
        s.publish(16);
        r.commit.store(seq + 1, SeqCst);
    }

    /// Latest: reads the newest committed message once (if any) and checks it.
    fn read_latest(r: &Ring, bit: u64) -> Option<u64> {
        let n = r.slots.len() as u64;
        let c = r.commit.load(SeqCst);
        if c == 0 {
            return None;
        }
        let want = c - 1;
        let i = (want % n) as usize;
        let e = r.slots[i].try_enter(bit)?;
        // SAFETY (model): the bit is held and the state was COMMITTED.
        let got = r.payload[i].with(|p| unsafe { *p });
        assert_eq!(got, pattern(e.seq), "torn or mislabelled slot");
        assert!(e.seq >= want, "slot went backwards");
        assert!(r.slots[i].still_holds(e.seq));
        r.slots[i].leave(bit);
        Some(e.seq)
    }

    #[test]
    fn loom_latest_single_slot_reader_never_sees_partial_write() {
        loom::model(|| {
            let r = ring(1);
            let w = {
                let r = r.clone();
                thread::spawn(move || {
                    write(&r, 0, false);
                    write(&r, 1, false);
                })
            };
            let rd = {
                let r = r.clone();
                thread::spawn(move || {
                    read_latest(&r, 1);
                })
            };
            w.join().unwrap();
            rd.join().unwrap();
            assert_eq!(r.slots[0].reader_mask(), 0);
        });
    }

    #[test]
    fn loom_latest_two_readers_two_slots() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(|| {
            let r = ring(2);
            let w = {
                let r = r.clone();
                thread::spawn(move || {
                    for seq in 0..3 {
                        write(&r, seq, false);
                    }
                })
            };
            let readers: Vec<_> = [1u64, 2]
                .into_iter()
                .map(|bit| {
                    let r = r.clone();
                    thread::spawn(move || {
                        read_latest(&r, bit);
                    })
                })
                .collect();
            w.join().unwrap();
            for h in readers {
                h.join().unwrap();
            }
        });
    }

    #[test]
    fn loom_lossless_in_order_none_lost() {
        loom::model(|| {
            let r = ring(1);
            let w = {
                let r = r.clone();
                thread::spawn(move || {
                    write(&r, 0, true);
                    write(&r, 1, true);
                })
            };
            let rd = {
                let r = r.clone();
                thread::spawn(move || {
                    for want in 0..2u64 {
                        while r.commit.load(SeqCst) <= want {
                            thread::yield_now();
                        }
                        let e = loop {
                            if let Some(e) = r.slots[0].try_enter(1) {
                                break e;
                            }
                            thread::yield_now();
                        };
                        assert_eq!(e.seq, want, "lost or reordered message");
                        let got = r.payload[0].with(|p| unsafe { *p });
                        assert_eq!(got, pattern(want));
                        r.slots[0].leave(1);
                        r.position.store(want + 1, SeqCst);
                    }
                })
            };
            w.join().unwrap();
            rd.join().unwrap();
        });
    }

    // Recent slots (format 1.2): the slot of message `seq` comes from the producer's free list
    // and is published in position line `seq % n`.

    /// How far a recent-slots producer gets with a message.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Upto {
        /// The whole write: claim, payload, publish, commit index.
        Done,
        /// Dies after recording the slot in the position line, half way through the payload.
        CrashMidPayload,
        /// Dies after `publish`, before the commit index moves.
        CrashBeforeCommit,
    }

    fn write_recent(r: &Ring, free: &mut FreeSlots, seq: u64, upto: Upto) {
        let n = r.slots.len() as u64;
        while r.position.load(SeqCst) + n <= seq {
            thread::yield_now();
        }
        free.release_to(r.position.load(SeqCst).min(seq));
        let i = free.take(seq).expect("seq < floor + n leaves a free slot") as usize;
        let s = &r.slots[i];
        let (_prev, mut mask) = s.close_for_write();
        while mask != 0 {
            thread::yield_now();
            mask = s.reader_mask();
        }
        s.begin_write(seq, 1, 0);
        r.slots[(seq % n) as usize].set_position_slot(i as u32);
        if upto == Upto::CrashMidPayload {
            r.payload[i].with_mut(|p| unsafe { (*p)[0] = pattern(seq)[0] });
            return;
        }
        r.payload[i].with_mut(|p| unsafe { *p = pattern(seq) });
        s.publish(16);
        if upto == Upto::CrashBeforeCommit {
            return;
        }
        r.commit.store(seq + 1, SeqCst);
    }

    /// A lossless reader of a recent-slots ring: messages `0..count` in order, each checked.
    fn read_recent(r: &Ring, count: u64) {
        let n = r.slots.len() as u64;
        for want in 0..count {
            while r.commit.load(SeqCst) <= want {
                thread::yield_now();
            }
            let (i, e) = loop {
                let i = r.slots[(want % n) as usize].position_slot.load(Acquire) as usize;
                if let Some(e) = r.slots[i].try_enter(1) {
                    if e.seq == want {
                        break (i, e);
                    }
                    assert!(
                        e.seq == NO_SEQ || e.seq < want,
                        "message {want} overwritten"
                    );
                    r.slots[i].leave(1);
                }
                thread::yield_now();
            };
            // SAFETY (model): the bit is held and the state was COMMITTED.
            let got = r.payload[i].with(|p| unsafe { *p });
            assert_eq!(got, pattern(e.seq), "torn or mislabelled slot");
            assert!(r.slots[i].still_holds(want));
            r.slots[i].leave(1);
            r.position.store(want + 1, SeqCst);
        }
    }

    #[test]
    fn loom_recent_slots_lossless_in_order_none_lost_nothing_torn() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(|| {
            let r = ring(2);
            let w = {
                let r = r.clone();
                thread::spawn(move || {
                    let mut free = FreeSlots::new(2, 0);
                    for seq in 0..3 {
                        write_recent(&r, &mut free, seq, Upto::Done);
                    }
                })
            };
            let rd = {
                let r = r.clone();
                thread::spawn(move || read_recent(&r, 3))
            };
            w.join().unwrap();
            rd.join().unwrap();
        });
    }

    /// A producer that dies part way through message 1 (after the position line names its slot)
    /// and a successor that takes over as `Producer::take_over` does: announces a published
    /// message, discards a half-written one, rebuilds the free list from the position lines.
    fn crash_and_take_over(upto: Upto) {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(move || {
            let r = ring(2);
            let rd = {
                let r = r.clone();
                thread::spawn(move || read_recent(&r, 3))
            };
            let first = {
                let r = r.clone();
                thread::spawn(move || {
                    let mut free = FreeSlots::new(2, 0);
                    write_recent(&r, &mut free, 0, Upto::Done);
                    write_recent(&r, &mut free, 1, upto);
                })
            };
            first.join().unwrap();
            // Take over.
            let n = 2u64;
            let mut commit = r.commit.load(SeqCst);
            let last = r.slots[(commit % n) as usize].position_slot.load(Acquire) as usize;
            if r.slots[last].state.load(Acquire) == state::COMMITTED
                && r.slots[last].seq.load(Acquire) == commit
            {
                commit += 1;
                r.commit.store(commit, SeqCst);
            }
            for s in &r.slots {
                if s.state.load(Acquire) == state::WRITING {
                    s.discard();
                }
            }
            let floor = r.position.load(SeqCst);
            let mut free = FreeSlots::rebuild(2, floor, commit, |seq| {
                r.slots[(seq % n) as usize].position_slot.load(Acquire)
            })
            .expect("position lines intact");
            for seq in commit..3 {
                write_recent(&r, &mut free, seq, Upto::Done);
            }
            rd.join().unwrap();
        });
    }

    #[test]
    fn loom_recent_slots_crash_after_position_line_before_commit_loses_nothing() {
        crash_and_take_over(Upto::CrashMidPayload);
    }

    #[test]
    fn loom_recent_slots_crash_after_publish_before_commit_index_loses_nothing() {
        crash_and_take_over(Upto::CrashBeforeCommit);
    }
}
