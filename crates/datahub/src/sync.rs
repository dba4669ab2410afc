//! The one place atomics come from, so `--cfg loom` can swap in loom's model-checked types.
//!
//! Only the slot protocol ([`crate::protocol`]) is exercised under loom. The rest of the crate
//! compiles against these aliases, but its loom build is never run: a shared-memory mapping
//! cannot hold loom's atomics.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, fence};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, fence};

pub(crate) use std::sync::atomic::Ordering;

/// Busy-wait hint inside spin loops (loom: yields to the model's scheduler).
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}
