//! # MMSB: a versioned page store changed only by deltas
//!
//! All state lives in **pages**: fixed-size byte arrays identified by a [`PageId`], each with an
//! **epoch** (the number of deltas applied to it), string-keyed metadata and a [`Location`].
//! State changes only by **deltas** (`state x delta -> state'`, [`Delta::apply`]): dense (the
//! whole page) or sparse (a bit-packed [`Mask`], one bit per byte, and the masked bytes).
//! Every change is a frame in a **write-ahead log** ([`tlog`]) before it touches a page; pages
//! that are computed from other pages are kept current by **propagation** through a dependency
//! [`Graph`]; **checkpoints** ([`checkpoint`]) bound recovery time; **replay** rebuilds any past
//! state from the log, deterministically.
//!
//! ```
//! use mmsb::{Config, EdgeKind, Mmsb, passthrough};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?; // a fresh directory per run, removed at the end
//! # let log_dir = dir.path().join("bus");
//! let mut bus = Mmsb::start(Config::new(log_dir))?;
//! let a = bus.create_page(1024)?;
//! let b = bus.create_page(1024)?;
//! bus.add_dependency(a, b, EdgeKind::Data)?;
//! bus.register_recompute(b, passthrough())?;
//! bus.write_range(a, 10, b"hello")?;          // logs a 5-byte sparse delta, then b follows
//! assert_eq!(&bus.query_page(b)?.bytes()[10..15], b"hello");
//! bus.checkpoint()?;
//! bus.stop()?;
//! # Ok(()) }
//! ```
//!
//! ## Invariants
//! 1. **Write-ahead.** A frame (page creation, delta, metadata change) is appended to the log
//!    before the in-memory state changes. If the append fails, nothing changed and the bus
//!    refuses further writes ([`Error::Poisoned`]); restarting recovers from the log.
//! 2. **Order.** Every frame has a global LSN, strictly increasing by one; every delta also
//!    carries its page's new epoch, which is the page's previous epoch plus one. Replay checks
//!    both ([`Error::ReplayMismatch`]).
//! 3. **Atomic commits.** A commit is one frame with the COMMIT flag (a single change with no
//!    dependants) or a run of frames closed by a commit frame (a batch, or a change and the
//!    propagation deltas it caused). Recovery drops frames after the last commit, so every
//!    recovered state is one the live bus passed through at a commit, and derived pages in it
//!    are consistent with their parents.
//! 4. **Deterministic replay.** Propagation deltas are logged with source
//!    [`Source::Propagation`]; replay applies logged deltas and never runs recompute functions,
//!    so replay does not depend on the code that computed them.
//! 5. **Propagation.** After a commit, every page reachable from the changed pages through
//!    `Data` edges is recomputed at most once, in topological order, from its parents' new
//!    bytes (no glitch: a page never sees a parent that is about to change in the same wave).
//!    A recompute that does not change its page stops the wave there (early cutoff).
//!    Adding an edge that closes a cycle is refused ([`Error::Cycle`]), incrementally
//!    (Pearce-Kelly dynamic topological order, via petgraph's `Acyclic`).
//! 6. **Checkpoints** record the LSN they cover, the id of their log ([`logdir`]) and a hash per
//!    page, are written to a temporary file, fsynced, renamed and the directory fsynced;
//!    [`Mmsb::start`] and the readers ([`State::restore`]) restore from the same one, by one
//!    rule ([`restore`]): the newest that is sound, this log's, and followed by the log.
//! 7. **One verdict per directory.** Recovery and readers classify the end of the log the same
//!    way: a torn write is discarded (and reported), a damaged complete frame is refused
//!    ([`Error::DamagedTail`]); a directory that holds no log is refused ([`Error::NotALog`]);
//!    files of a log are never followed through links nor read if not regular. The failure
//!    model is in `docs/failure-model/mmsb.md`.
//!
//! Byte layouts of log segments, frames and checkpoints, and the recovery argument, are in
//! `docs/mmsb-format.md`.
//!
//! ## Threads
//! A bus is one writer: methods take `&mut self`. Share it behind a `Mutex`; readers of another
//! process can read the log directory ([`tlog::LogReader`], [`State::replay`]) without a lock.
//! Tools that take "a state" by path (a log, a segment, a checkpoint) use [`State::load`];
//! [`tlog::LogReader::summary`] counts what a log holds ([`tlog::LogSummary`]).
//!
//! ## Metrics
//! [`Mmsb::stats`] is a point-in-time copy of the counters and latency percentiles. A server on
//! another thread cannot call it (one writer), so [`Mmsb::metrics_handle`] makes the bus
//! publish a copy: at the end of a commit when [`METRICS_PUBLISH_INTERVAL`] (100 ms) has passed
//! since the last (a `try_lock`: a commit never waits for a scrape), and at once on
//! checkpoint, sync, a log write error and stop. A reader therefore sees stats at most 100 ms
//! older than the last commit. With the cargo feature `metrics`, `metrics` renders them for
//! Prometheus and `Mmsb::serve_metrics` serves them (`docs/metrics.md`, "MMSB").

pub mod bus;
pub mod checkpoint;
pub mod delta;
pub mod error;
pub mod events;
pub mod frame;
pub mod graph;
pub mod logdir;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod page;
pub mod replica;
#[cfg(feature = "replicate")]
pub mod replicate;
pub mod restore;
pub mod state;
pub mod stats;
pub mod tlog;

pub use bus::{
    Commit, Config, METRICS_PUBLISH_INTERVAL, MetricsHandle, Mmsb, PropagationMode, Published,
    RecomputeFn, StartReport, map, passthrough,
};
pub use delta::{Body, Delta, Mask, Source};
pub use error::{Error, Result};
pub use events::{Event, EventKind, SubscriptionId};
pub use graph::{EdgeKind, Graph};
pub use page::{Location, Lsn, MAX_PAGE_SIZE, Page, PageId};
pub use restore::{RestoreReport, verify_dir};
pub use state::{PageSetDiff, ReplayTarget, State, diff, page_set_diff};
pub use stats::{Percentiles, Stats};
pub use tlog::Durability;
