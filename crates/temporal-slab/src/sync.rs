//! The one place atomics come from, so `--cfg loom` can swap in loom's model-checked types.
//!
//! Only the lock-free protocols in [`crate::slab`] (the slot bitmap, run publication and the
//! slot-word generations) are exercised under loom; the rest of the crate compiles against these
//! aliases but its loom build is never run (mmap'd metadata and pages cannot hold loom atomics).
//! The statics of [`crate::global`] (its state word, the reservation's range, the outside-scope
//! setting, the scope-overflow count) stay std atomics: a `static` needs a `const`
//! constructor, which loom's types lack. Their one protocol, a once-only publication, is argued
//! in `global/init.rs`.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU8, AtomicU32, AtomicU64};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64};

pub(crate) use std::sync::atomic::Ordering;
