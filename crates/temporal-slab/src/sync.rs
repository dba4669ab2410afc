//! The one place atomics come from, so `--cfg loom` can swap in loom's model-checked types.
//!
//! Only the lock-free protocols (the slot bitmap and current-partial publication in
//! [`crate::slab`]) are exercised under loom; the rest of the crate compiles against these aliases
//! but its loom build is never run (mmap'd metadata cannot hold loom atomics).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64};

pub(crate) use std::sync::atomic::Ordering;
