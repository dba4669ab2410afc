//! The one place atomics come from, so `--cfg loom` can swap in loom's model-checked types.
//!
//! Only the lock-free protocols in [`crate::slab`] (the slot bitmap, run publication and the
//! slot-word generations) are exercised under loom; the rest of the crate compiles against these
//! aliases but its loom build is never run (mmap'd metadata and pages cannot hold loom atomics).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU8, AtomicU32, AtomicU64};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64};

pub(crate) use std::sync::atomic::Ordering;
