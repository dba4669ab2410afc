//! Waiting: spin briefly, then sleep on a futex word, always within a deadline.
//!
//! A waiter registers in a `waiters` count before it reads the futex word and re-checks its
//! condition; a waker changes the condition, then reads `waiters` and only if it is non-zero
//! bumps the word and calls `FUTEX_WAKE`. All four accesses are SeqCst, so either the waker sees
//! the waiter (and wakes it, or changes the word before it sleeps, which makes `FUTEX_WAIT`
//! return at once), or the waiter's re-check sees the new condition. A message that finds no
//! one asleep costs one extra load, no system call.
//!
//! The words live in shared memory, so the futex calls are not `FUTEX_PRIVATE`.

use std::time::{Duration, Instant};

use rustix::thread::futex;

use crate::sync::{AtomicU32, Ordering::SeqCst, spin_hint};

/// How a wait spins and how often it wakes to look after peers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WaitPlan {
    /// Time spent polling before the first futex sleep.
    pub spin: Duration,
    /// Longest single sleep: after each, `tick` runs (heartbeat, dead-peer checks).
    pub slice: Duration,
}

/// Waits until `ready` returns `Some`, or `timeout` passes (`None`). `tick` runs about every
/// `plan.slice` while waiting (also during the spin phase). The clock is first read after
/// `ready` has failed once, so a wait that is not needed costs one call of `ready`.
pub(crate) fn wait_until<T>(
    word: &AtomicU32,
    waiters: &AtomicU32,
    timeout: Duration,
    plan: WaitPlan,
    mut ready: impl FnMut() -> Option<T>,
    mut tick: impl FnMut(),
) -> Option<T> {
    if let Some(v) = ready() {
        return Some(v);
    }
    let start = Instant::now();
    let deadline = start + timeout;
    let spin_end = start + plan.spin.min(deadline.saturating_duration_since(start));
    let mut next_tick = start + plan.slice;
    let mut i: u32 = 0;
    loop {
        if let Some(v) = ready() {
            return Some(v);
        }
        spin_hint();
        i = i.wrapping_add(1);
        if i % 128 == 0 {
            let now = Instant::now();
            if now >= next_tick {
                tick();
                next_tick = now + plan.slice;
            }
            if now >= spin_end {
                break;
            }
        }
    }
    loop {
        waiters.fetch_add(1, SeqCst);
        let seen = word.load(SeqCst);
        if let Some(v) = ready() {
            waiters.fetch_sub(1, SeqCst);
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            waiters.fetch_sub(1, SeqCst);
            return ready();
        }
        let nap = deadline.duration_since(now).min(plan.slice);
        let ts = rustix::time::Timespec {
            tv_sec: nap.as_secs() as i64,
            tv_nsec: i64::from(nap.subsec_nanos()),
        };
        // EAGAIN (word already changed), EINTR and ETIMEDOUT all mean "look again".
        let _ = futex::wait(word, futex::Flags::empty(), seen, Some(&ts));
        waiters.fetch_sub(1, SeqCst);
        if Instant::now() >= next_tick {
            tick();
            next_tick = Instant::now() + plan.slice;
        }
    }
}

/// Wakes every sleeper on `word` if there is one (see the module doc for the ordering).
#[inline]
pub(crate) fn wake_all(word: &AtomicU32, waiters: &AtomicU32) {
    if waiters.load(SeqCst) != 0 {
        word.fetch_add(1, SeqCst);
        let _ = futex::wake(word, futex::Flags::empty(), i32::MAX as u32);
    }
}
