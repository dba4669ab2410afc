//! Replication through NATS JetStream (feature `replicate`): a **shipper** publishes a bus's
//! committed log frames to a stream, **followers** apply them to replicas
//! ([`crate::replica`]), and **promotion** turns a caught-up replica into the writer, fencing
//! the old leader off.
//!
//! JetStream is the log service: a durable stream with a sequence per message, de-duplication
//! by message id, optimistic writer fencing (`Nats-Expected-Last-Sequence`), replay from any
//! sequence and purge below one. Nothing here is a network protocol of our own; the layout of
//! what we put in the stream is [`wire`], and `docs/mmsb-replication.md` explains the design,
//! the failure model and the commands (`mmsb ship`, `mmsb follow`, `mmsb promote`).
//!
//! - [`ship`] tails the committed frames of a log directory ([`crate::tlog::LogTail`]: whole
//!   commits only, never a torn or uncommitted frame) and publishes them byte for byte (CRC
//!   included), packed in messages of at most [`ShipOptions::max_message_bytes`]; message id =
//!   the leader's log id and the first LSN, every publish fenced by the sequence of the previous
//!   one. One shipper per stream holds a lease (a key in a JetStream key-value bucket renewed
//!   every third of [`ShipOptions::lease`]); a second is refused ([`ReplicateError::Fenced`]).
//!   Checkpoints of the leader go to a JetStream object store; with [`ShipOptions::purge`] the
//!   stream is then purged below the first message a follower bootstrapped from that checkpoint
//!   still needs.
//! - [`follow`] builds or resumes a replica: the newest checkpoint from the object store for a
//!   new one, then the stream from the message holding the next LSN, every commit checked and
//!   applied by [`crate::Mmsb::apply_replicated`] (the replay code's checks) and written to the
//!   replica's own log. It resumes at its log's last commit after a crash. A frame that fails
//!   its checks stops it with [`ReplicateError::Frame`] naming the LSN; nothing of that commit
//!   is applied.
//! - [`promote`] publishes a promotion marker fenced by the stream's last sequence (so a stale
//!   leader's next publish is refused), drops the shipper lease, and makes the replica writable.
//!
//! Each entry point has an async form (for a tokio runtime the caller owns) and a `_blocking`
//! one that runs its own current-thread runtime. [`Control`] stops a running shipper or
//! follower from another thread and reads its [`ReplicationStats`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::bus::MetricsHandle;
use crate::page::Lsn;
use crate::stats::Stats;

pub use crate::metrics::ReplicationStats;

mod follow;
mod nats;
mod promote;
mod ship;
pub mod wire;

pub use follow::{FollowOptions, FollowReport, follow, follow_blocking};
pub use promote::{PromoteOptions, PromoteReport, promote, promote_blocking};
pub use ship::{ShipOptions, ShipReport, ship, ship_blocking};

/// How long a connection to the server may take, and how long a request (stream info, a
/// publish acknowledgement) may wait for its answer, unless the options say otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong while replicating.
#[derive(Debug, thiserror::Error)]
pub enum ReplicateError {
    /// A stream name that is not 1 to 64 of `A-Z a-z 0-9 _ -`.
    #[error("bad stream name {name:?}: {reason}")]
    BadName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The server could not be reached or refused a request (after the timeouts).
    #[error("NATS {url}: {what}: {reason}")]
    Nats {
        /// The server's URL.
        url: String,
        /// What was being done.
        what: String,
        /// The client's error.
        reason: String,
    },
    /// Another writer owns the stream: a live shipper holds the lease, a promoted replica or
    /// another log wrote the stream's last message, or a publish was refused because the stream
    /// moved under this shipper.
    #[error("stream {stream}: fenced: {reason}")]
    Fenced {
        /// The stream.
        stream: String,
        /// Who holds it, as far as the stream says.
        reason: String,
    },
    /// A message in the stream is not one of ours: headers missing or malformed, frames that do
    /// not split, LSNs out of order. Nothing of it was applied.
    #[error("stream {stream} message {seq}: {reason}")]
    Hostile {
        /// The stream.
        stream: String,
        /// The message's stream sequence.
        seq: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A replicated frame failed its checks (CRC, fields, LSN, or it does not fit the
    /// replica's state). The follower stopped before applying the commit it belongs to.
    #[error("stream {stream} message {seq}: frame at {lsn} refused: {reason}")]
    Frame {
        /// The stream.
        stream: String,
        /// The stream sequence of the message that carried it.
        seq: u64,
        /// The LSN the frame was expected to have.
        lsn: Lsn,
        /// What is wrong with it.
        reason: String,
    },
    /// The stream no longer holds the frames this replica needs next (purged after a
    /// checkpoint, or never published), or holds frames the leader's log does not: the replica
    /// must be rebuilt from the newest checkpoint (remove its directory and follow again).
    #[error("stream {stream}: {reason}")]
    Gap {
        /// The stream.
        stream: String,
        /// What is missing.
        reason: String,
    },
    /// A frame larger than the largest message the server accepts.
    #[error("frame at {lsn} is {len} bytes; the server accepts messages of at most {max}")]
    FrameTooLarge {
        /// The frame's LSN.
        lsn: Lsn,
        /// Its length, bytes.
        len: usize,
        /// The limit, bytes.
        max: usize,
    },
    /// The log, replica or checkpoint failed (the bus's error, unchanged).
    #[error(transparent)]
    Mmsb(#[from] crate::Error),
}

impl ReplicateError {
    /// Whether this is bad input (a hostile or corrupt stream, a bad name, an unreachable
    /// server): the tools exit 2 for these and 1 for the rest (fencing, gaps).
    #[must_use]
    pub fn is_bad_input(&self) -> bool {
        !matches!(
            self,
            ReplicateError::Fenced { .. } | ReplicateError::Gap { .. }
        )
    }
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, ReplicateError>;

/// Stops a running [`ship`] or [`follow`] from another thread and reads its figures. Cheap to
/// share (`Arc`); one per running shipper or follower.
#[derive(Debug, Default)]
pub struct Control {
    stop: AtomicBool,
    /// 0: none; else the LSN at which to return.
    finish_at: AtomicU64,
    stats: Mutex<ReplicationStats>,
    bus: Mutex<Option<MetricsHandle>>,
}

impl Control {
    /// A new control, not stopped.
    #[must_use]
    pub fn new() -> Arc<Control> {
        Arc::new(Control::default())
    }

    /// Asks the shipper or follower to return (within a poll interval or a receive wait, at
    /// most about 100 ms), with what it did so far.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Whether [`Control::stop`] was called.
    #[must_use]
    pub fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Asks the shipper to publish up to the end of the commit that holds `lsn` (no further)
    /// and return once the stream acknowledged it, or the follower to return once it has
    /// applied `lsn`.
    pub fn finish_at(&self, lsn: Lsn) {
        self.finish_at.store(lsn.0.max(1), Ordering::Release);
    }

    fn finish_lsn(&self) -> Option<u64> {
        match self.finish_at.load(Ordering::Acquire) {
            0 => None,
            l => Some(l),
        }
    }

    /// The replication figures now (role, LSNs, lag, counts).
    #[must_use]
    pub fn stats(&self) -> ReplicationStats {
        self.stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The stats a follower's replica bus last published (`None` for a shipper, or before the
    /// replica is open).
    #[must_use]
    pub fn bus_stats(&self) -> Option<Stats> {
        self.bus
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(MetricsHandle::stats)
    }

    fn set_bus(&self, h: MetricsHandle) {
        *self.bus.lock().unwrap_or_else(PoisonError::into_inner) = Some(h);
    }

    fn update(&self, f: impl FnOnce(&mut ReplicationStats)) {
        f(&mut self.stats.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// Runs `fut` (talking to `url`) on a new current-thread tokio runtime (the `_blocking` entry
/// points).
fn block_on<T>(url: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ReplicateError::Nats {
            url: url.to_owned(),
            what: "creating the client's runtime".into(),
            reason: e.to_string(),
        })?;
    rt.block_on(fut)
}

/// A log id as the stream carries it: its 16 bytes as 32 lowercase hex digits.
fn hex_id(id: crate::logdir::LogId) -> String {
    use std::fmt::Write;
    id.0.iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Nanoseconds since the Unix epoch now.
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Seconds from `ts_ns` (Unix epoch) to now, 0 when in the future.
fn age_seconds(ts_ns: u64) -> f64 {
    now_ns().saturating_sub(ts_ns) as f64 / 1e9
}
