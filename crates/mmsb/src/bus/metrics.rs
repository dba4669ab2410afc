//! The bus's side of live metrics: log error and recovery counts, and a published copy of
//! [`Mmsb::stats`] that a metrics server on another thread reads ([`Mmsb::serve_metrics`],
//! [`Mmsb::metrics_handle`]).
//!
//! The bus is one writer (`&mut self`), so a server thread cannot call [`Mmsb::stats`]. Once
//! something asks for metrics, the bus keeps a slot (`Arc<Mutex<Option<Published>>>`) and puts
//! a fresh [`Stats`] in it:
//!
//! - at the end of a commit, when at least [`METRICS_PUBLISH_INTERVAL`] has passed since the
//!   last publish (one `Instant::now()` per commit; nothing at all while no slot exists). The
//!   writer takes the lock with `try_lock`: when a reader holds it (copying the stats), this
//!   publish is skipped and the next commit tries again, so a commit never waits for a scrape;
//! - at once (waiting for a reader's copy, a few hundred nanoseconds) when the slot is
//!   created, after [`Mmsb::checkpoint`] and [`Mmsb::sync`], when a log write fails, before
//!   [`Mmsb::stop`] closes the log (after syncing it), and on [`Mmsb::publish_metrics`].
//!
//! So a scrape sees the stats of a moment at most [`METRICS_PUBLISH_INTERVAL`] before the last
//! commit (longer only while scrapes keep the lock busy at every commit). A writer that goes
//! idle leaves the commits of its last interval unpublished until its next commit, checkpoint,
//! sync, stop or [`Mmsb::publish_metrics`].

use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use super::Mmsb;
use crate::error::Error;
use crate::stats::Stats;
use crate::tlog::RecoveryReport;

/// Least time between two publishes made at commits (see [`Mmsb::metrics_handle`]).
pub const METRICS_PUBLISH_INTERVAL: Duration = Duration::from_millis(100);

/// One published copy of a bus's stats.
#[derive(Clone, Debug, PartialEq)]
pub struct Published {
    /// [`Mmsb::stats`] at `at`.
    pub stats: Stats,
    /// When it was taken (monotonic clock).
    pub at: Instant,
}

type Slot = Arc<Mutex<Option<Published>>>;

/// A reader's end of a bus's published stats ([`Mmsb::metrics_handle`]): cheap to clone,
/// `Send + Sync`, usable from any thread while the bus writes, and after the bus stopped (it
/// then keeps the stats published by [`Mmsb::stop`]).
#[derive(Clone, Debug)]
pub struct MetricsHandle {
    slot: Slot,
}

impl MetricsHandle {
    /// The last published stats (`None` only before the first publish; a handle from
    /// [`Mmsb::metrics_handle`] has one from the start).
    #[must_use]
    pub fn stats(&self) -> Option<Stats> {
        self.published().map(|p| p.stats)
    }

    /// The last published stats with the time they were taken.
    #[must_use]
    pub fn published(&self) -> Option<Published> {
        // A panic while the lock was held cannot leave a half-written value: the slot is only
        // ever assigned whole.
        self.slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// What the bus keeps for metrics beyond its counters.
#[derive(Debug)]
pub(super) struct BusMetrics {
    /// `Some` once a server or handle asked for metrics.
    slot: Option<Slot>,
    /// When the slot was last filled.
    last: Instant,
    /// Log operations that failed with an I/O error ([`Stats::log_write_errors`]).
    pub(super) write_errors: u64,
    /// From the start's recovery report ([`Stats::recovery_truncated_frames`]).
    pub(super) truncated_frames: u64,
    /// From the start's recovery report ([`Stats::recovery_truncated_bytes`]).
    pub(super) truncated_bytes: u64,
}

impl BusMetrics {
    pub(super) fn new(recovery: &RecoveryReport) -> BusMetrics {
        let t = recovery.truncated.as_ref();
        BusMetrics {
            slot: None,
            last: Instant::now(),
            write_errors: 0,
            truncated_frames: t.map_or(0, |t| t.frames_dropped),
            truncated_bytes: t.map_or(0, |t| t.bytes_dropped),
        }
    }
}

impl Mmsb {
    /// A handle on this bus's published stats, for a metrics server or any other reader on
    /// another thread (the replication module combines it with its own figures). The first
    /// call starts publishing (see `bus/metrics.rs`'s rules: at most
    /// [`METRICS_PUBLISH_INTERVAL`] behind the last commit) and publishes at once; later calls
    /// return handles on the same slot.
    pub fn metrics_handle(&mut self) -> MetricsHandle {
        let slot = match &self.metrics.slot {
            Some(s) => s.clone(),
            None => {
                let s = Slot::default();
                self.metrics.slot = Some(s.clone());
                self.publish_now();
                s
            }
        };
        MetricsHandle { slot }
    }

    /// Publishes the current stats now, waiting for a reader's copy if one is being made (a
    /// few hundred nanoseconds); does nothing while nobody asked for metrics.
    pub fn publish_metrics(&mut self) {
        self.publish_now();
    }

    /// Serves this bus's metrics on `addr` (port 0 picks a free one: see
    /// [`Endpoint::local_addr`](crate::metrics::Endpoint::local_addr)): `/metrics` (Prometheus
    /// text 0.0.4, or OpenMetrics when asked), `/stats.json`, and an index at `/`
    /// ([`crate::metrics::serve`]). The server reads the stats this bus publishes (see
    /// [`Mmsb::metrics_handle`]): a scrape sees them at most [`METRICS_PUBLISH_INTERVAL`] older
    /// than the last commit. Dropping the endpoint stops the server; stopping the bus does not
    /// (it goes on serving the stats published at [`Mmsb::stop`]).
    ///
    /// # Errors
    /// The address cannot be bound (in use, not local, no permission), or the server's thread
    /// or runtime cannot be created; the message names the address.
    #[cfg(feature = "metrics")]
    pub fn serve_metrics(
        &mut self,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<crate::metrics::Endpoint> {
        let handle = self.metrics_handle();
        crate::metrics::serve(
            addr,
            Box::new(move || {
                handle
                    .stats()
                    .map(|s| (Some(s), None))
                    .ok_or_else(|| "no stats published yet".to_owned())
            }),
        )
    }

    /// A commit ended: count it, and publish if the interval has passed.
    #[inline]
    pub(super) fn committed(&mut self) {
        self.counters.commits += 1;
        if self.metrics.slot.is_some() {
            self.publish_if_due();
        }
    }

    fn publish_if_due(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.metrics.last) < METRICS_PUBLISH_INTERVAL {
            return;
        }
        let Some(slot) = &self.metrics.slot else {
            return;
        };
        let mut guard = match slot.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            // A reader is copying: skip, the next commit tries again.
            Err(TryLockError::WouldBlock) => return,
        };
        *guard = Some(Published {
            stats: self.stats(),
            at: now,
        });
        drop(guard);
        self.metrics.last = now;
    }

    /// Publishes now (waiting for a reader's copy), when a slot exists.
    pub(super) fn publish_now(&mut self) {
        let Some(slot) = &self.metrics.slot else {
            return;
        };
        let now = Instant::now();
        let stats = self.stats();
        *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(Published { stats, at: now });
        self.metrics.last = now;
    }

    /// Before [`Mmsb::stop`] closes the log: when publishing, sync it and publish, so the last
    /// stats a server shows are the final ones (`durable_lsn == last_lsn`; the close's own
    /// fdatasync, of nothing new, is not in `log_syncs`).
    pub(super) fn publish_before_stop(&mut self) {
        if self.metrics.slot.is_none() {
            return;
        }
        // A failure is counted here and returned again by the close.
        let _ = self.log.sync().map_err(|e| self.log_error(e));
        self.publish_now();
    }

    /// Counts `e` in [`Stats::log_write_errors`] when it is a log write or sync failure (an
    /// I/O error, or the log refusing work after one), publishes, and returns it.
    pub(super) fn log_error(&mut self, e: Error) -> Error {
        if matches!(e, Error::Io { .. } | Error::LogFailed { .. }) {
            self.metrics.write_errors += 1;
            self.publish_now();
        }
        e
    }
}
