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
            _reserved: [0; 2],
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
}
