//! Robust shared spinlocks and the flexible zone they guard.
//!
//! A lock word holds `pid << 32 | tid` of its holder (0: free) and a second word the holder
//! process's start time. The holder may re-enter (a recursion count). A waiter that finds the
//! holder's thread gone (`/proc/PID/task/TID` missing) or its process dead or replaced
//! (start time differs), twice in a row 5 ms apart, takes the lock over with a
//! compare-and-swap on the word it saw, so two waiters cannot both take it; the takeover is
//! counted.

use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use crate::block::Block;
use crate::layout::{SPINLOCKS, SpinlockLine};
use crate::proc::{self, Liveness};
use crate::sync::Ordering::{Acquire, Relaxed, Release};
use crate::{Error, WaitCause};

/// How often a waiter checks whether the holder is alive.
const LIVENESS_CHECK: Duration = Duration::from_millis(5);

/// Handle to shared spinlock `index` of a block.
#[derive(Debug, Clone, Copy)]
pub struct SharedSpinlock<'a> {
    line: &'a SpinlockLine,
    index: usize,
}

/// A held spinlock; unlocks on drop.
#[derive(Debug)]
pub struct SpinGuard<'a> {
    line: &'a SpinlockLine,
}

fn me() -> u64 {
    (u64::from(proc::me().0) << 32) | u64::from(proc::tid())
}

impl<'a> SharedSpinlock<'a> {
    pub(crate) fn new(block: &'a Block, index: usize) -> Result<SharedSpinlock<'a>, Error> {
        if index >= SPINLOCKS {
            return Err(Error::OutOfRange {
                what: "spinlock",
                index,
                limit: SPINLOCKS,
            });
        }
        Ok(SharedSpinlock {
            line: &block.header().spinlocks[index],
            index,
        })
    }

    /// Whether the calling thread holds the lock.
    pub fn held_by_me(&self) -> bool {
        self.line.owner.load(Acquire) == me()
    }

    /// `(pid, tid)` of the holder, if held.
    pub fn holder(&self) -> Option<(u32, u32)> {
        let o = self.line.owner.load(Acquire);
        (o != 0).then_some(((o >> 32) as u32, o as u32))
    }

    /// Acquires the lock (re-entrant for the holding thread), waiting up to `timeout`.
    ///
    /// # Errors
    /// [`Error::Timeout`] (cause `Lock`) while a live holder keeps it.
    pub fn lock(&self, timeout: Duration) -> Result<SpinGuard<'a>, Error> {
        let me = me();
        let l = self.line;
        if l.owner.load(Relaxed) == me {
            l.recursion.fetch_add(1, Relaxed);
            return Ok(SpinGuard { line: l });
        }
        let start = Instant::now();
        let mut next_check = start + LIVENESS_CHECK;
        let mut spins = 0u32;
        let mut suspect: Option<(u64, u64)> = None;
        loop {
            let cur = l.owner.load(Relaxed);
            if cur == 0
                && l.owner
                    .compare_exchange_weak(0, me, Acquire, Relaxed)
                    .is_ok()
            {
                l.owner_start.store(proc::me().1, Relaxed);
                l.recursion.store(0, Relaxed);
                l.acquisitions.fetch_add(1, Relaxed);
                return Ok(SpinGuard { line: l });
            }
            spins = spins.wrapping_add(1);
            if spins % 64 == 0 {
                let now = Instant::now();
                if cur != 0 && now >= next_check {
                    next_check = now + LIVENESS_CHECK;
                    let (pid, tid) = ((cur >> 32) as u32, cur as u32);
                    let start_seen = l.owner_start.load(Relaxed);
                    let dead = proc::liveness(pid, start_seen) == Liveness::Dead
                        || !proc::thread_exists(pid, tid);
                    // A holder stores its start time just after its owner word, so one "dead"
                    // verdict may have used the predecessor's start time: take the lock only
                    // when two checks, one interval apart, saw the same owner and start time
                    // and both found it dead.
                    let verdict = (cur, start_seen);
                    if dead && suspect == Some(verdict) {
                        if l.owner.compare_exchange(cur, me, Acquire, Relaxed).is_ok() {
                            l.owner_start.store(proc::me().1, Relaxed);
                            l.recursion.store(0, Relaxed);
                            l.acquisitions.fetch_add(1, Relaxed);
                            l.reclaims.fetch_add(1, Relaxed);
                            return Ok(SpinGuard { line: l });
                        }
                        suspect = None;
                    } else {
                        suspect = dead.then_some(verdict);
                    }
                }
                if now >= start + timeout {
                    return Err(Error::Timeout {
                        op: "spinlock",
                        cause: WaitCause::Lock,
                        waited_ms: start.elapsed().as_millis() as u64,
                    });
                }
                if spins > 4096 {
                    std::thread::yield_now();
                }
            }
            std::hint::spin_loop();
        }
    }

    /// The lock's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Times the lock was taken over from a dead holder.
    pub fn reclaims(&self) -> u64 {
        self.line.reclaims.load(Relaxed)
    }
}

impl Drop for SpinGuard<'_> {
    fn drop(&mut self) {
        let l = self.line;
        let r = l.recursion.load(Relaxed);
        if r > 0 {
            l.recursion.store(r - 1, Relaxed);
        } else {
            l.owner.store(0, Release);
        }
    }
}

/// The flexible zone, locked (spinlock 0). Derefs to its bytes.
#[derive(Debug)]
pub struct FlexZoneGuard<'a> {
    _guard: SpinGuard<'a>,
    ptr: *mut u8,
    len: usize,
}

impl<'a> FlexZoneGuard<'a> {
    pub(crate) fn lock(block: &'a Block, timeout: Duration) -> Result<FlexZoneGuard<'a>, Error> {
        let lock = SharedSpinlock::new(block, 0)?;
        if lock.held_by_me() {
            // Two guards would be two `&mut` to the same bytes.
            return Err(Error::WouldDeadlock { index: 0 });
        }
        let guard = lock.lock(timeout)?;
        let (ptr, len) = block.flex_zone();
        Ok(FlexZoneGuard {
            _guard: guard,
            ptr,
            len,
        })
    }
}

impl Deref for FlexZoneGuard<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the zone lies inside the mapping (decode() checked it) and spinlock 0 is
        // held by this thread, non-recursively, so no other cooperating process or thread
        // accesses it.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl DerefMut for FlexZoneGuard<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference in this process.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}
