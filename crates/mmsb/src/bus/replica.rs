//! Replica mode of the bus: opening a replica, applying its leader's commits, promotion.

use std::time::Instant;

use super::{Config, Mmsb, StartReport, elapsed_ns};
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::frame::{self, FrameBody};
use crate::page::{Lsn, PageId};
use crate::replica;
use crate::stats::record;
use crate::{Commit, Source};

/// Frames of one replicated commit, decoded.
struct Decoded {
    frames: Vec<frame::Frame>,
}

impl Mmsb {
    /// Opens `config.dir` as a **replica**: a read-only bus that changes only by its leader's
    /// frames ([`Mmsb::apply_replicated`]). A missing or empty directory becomes a new replica
    /// (an empty log with the [`replica::MARKER`] file); an empty log without the marker (a
    /// crash while creating one) is adopted. Recovery and restore are [`Mmsb::start`]'s.
    /// Propagation mode is ignored (a replica runs no recompute functions: propagation deltas
    /// arrive as frames).
    ///
    /// # Errors
    /// [`Error::NotALog`] for a directory that holds a non-empty log that is not a replica
    /// (promoted, or never one); otherwise as [`Mmsb::start`].
    pub fn start_replica(config: Config) -> Result<Mmsb> {
        Ok(Mmsb::start_replica_reporting(config)?.0)
    }

    /// [`Mmsb::start_replica`], also returning what recovery found.
    ///
    /// # Errors
    /// As [`Mmsb::start_replica`].
    pub fn start_replica_reporting(config: Config) -> Result<(Mmsb, StartReport)> {
        let dir = config.dir.clone();
        let marked = replica::is_replica(&dir)?;
        let (bus, report) = Mmsb::open(config, true)?;
        if !marked {
            if bus.log.last_lsn() != Lsn::ZERO || report.checkpoint_lsn.is_some() {
                return Err(Error::NotALog {
                    dir,
                    reason: format!(
                        "it holds a log that is not a replica (no {} file); a replica starts empty or from its leader's checkpoint",
                        replica::MARKER
                    ),
                });
            }
            replica::mark(&dir)?;
        }
        Ok((bus, report))
    }

    /// True for a bus opened with [`Mmsb::start_replica`] and not promoted.
    #[must_use]
    pub fn is_replica(&self) -> bool {
        self.replica
    }

    /// LSN up to which the log is known to be on stable storage (fdatasynced).
    #[must_use]
    pub fn durable_lsn(&self) -> Lsn {
        self.log.durable_lsn()
    }

    /// Applies one commit of the leader to this replica: `frames` are the commit's frames as the
    /// leader's log holds them, with consecutive LSNs from `state().last_lsn() + 1`, the last one
    /// (and only it) with the COMMIT flag. Each frame is decoded and checked (length, CRC,
    /// fields, LSN), the commit is applied to the pages by the replay code
    /// ([`crate::State::apply_frame`]: page existence, epochs, sizes), and then its frames are
    /// appended to this replica's log byte for byte ([`crate::tlog::TLog::append_raw`]) under the
    /// log's durability rule. Subscribers see the same events as on a writer (`PageCreated`,
    /// `DeltaApplied`, `PageChanged`).
    ///
    /// Nothing is logged unless the whole commit checked out. A commit that decodes but does not
    /// fit the state is found while it is being applied, after earlier frames of it changed
    /// pages in memory: the bus is then poisoned ([`Error::Poisoned`] afterwards), because its
    /// pages are ahead of its log; restarting restores the state before that commit from the
    /// log. A follower stops at such a frame anyway.
    ///
    /// # Errors
    /// [`Error::ReplicaFrame`] naming the LSN of the first bad frame (nothing logged);
    /// [`Error::ReadOnly`]-like misuse: [`Error::Batch`] when called on a bus that is not a
    /// replica; log write errors (which poison the bus).
    pub fn apply_replicated(&mut self, frames: &[&[u8]]) -> Result<Commit> {
        self.check_poison()?;
        if !self.replica {
            return Err(Error::Batch(
                "apply_replicated on a bus that is not a replica (open it with start_replica)",
            ));
        }
        let first = self.state.last_lsn().next();
        let decoded = decode_commit(first, frames)?;
        // Apply to the pages (checks epochs and sizes as replay does).
        let mut deltas = 0usize;
        let mut propagated = 0usize;
        let mut changed: Vec<PageId> = Vec::new();
        for f in &decoded.frames {
            let t = self.timings.enabled.then(Instant::now);
            if let Err(e) = self.state.apply_frame(f) {
                let lsn = f.lsn;
                let reason = e.to_string();
                if f.lsn != first {
                    let _ = self.poison(Error::ReplicaFrame {
                        lsn,
                        reason: reason.clone(),
                    });
                }
                return Err(Error::ReplicaFrame { lsn, reason });
            }
            if let FrameBody::Delta(body) = &f.body {
                if let Some(t) = t {
                    record(&mut self.timings.apply, elapsed_ns(t));
                }
                let n = match body {
                    crate::Body::Dense(b) => b.len(),
                    crate::Body::Sparse { payload, .. } => payload.len(),
                };
                self.counters.deltas += 1;
                self.counters.delta_bytes += n as u64;
                if f.source == Source::Propagation {
                    self.counters.propagation_deltas += 1;
                    self.counters.propagation_delta_bytes += n as u64;
                    propagated += 1;
                } else {
                    deltas += 1;
                }
                changed.push(f.page);
            }
        }
        // Then log, byte for byte.
        for (i, bytes) in frames.iter().enumerate() {
            let t = self.timings.enabled.then(Instant::now);
            let r = self.log.append_raw(bytes);
            if let Some(t) = t {
                record(&mut self.timings.append, elapsed_ns(t));
            }
            if let Err(e) = r {
                let e = self.log_error(e);
                // The pages already hold the whole commit; the log does not.
                let lsn = decoded.frames[i].lsn;
                self.poisoned.get_or_insert_with(|| {
                    format!(
                        "logging replicated frame {lsn} failed after the commit was applied: {e}"
                    )
                });
                return Err(e);
            }
        }
        self.committed();
        let lsn = decoded.frames.last().map_or(Lsn::ZERO, |f| f.lsn);
        self.emit_replicated(&decoded, &mut changed);
        Ok(Commit {
            lsn,
            deltas,
            propagated,
        })
    }

    fn emit_replicated(&mut self, decoded: &Decoded, changed: &mut Vec<PageId>) {
        for f in &decoded.frames {
            match &f.body {
                FrameBody::CreatePage { size, .. } if self.subs.wants(EventKind::PageCreated) => {
                    self.subs.emit(&Event::PageCreated {
                        page: f.page,
                        size: *size as usize,
                    });
                }
                FrameBody::Delta(body) if self.subs.wants(EventKind::DeltaApplied) => {
                    let bytes = match body {
                        crate::Body::Dense(b) => b.len(),
                        crate::Body::Sparse { payload, .. } => payload.len(),
                    };
                    self.subs.emit(&Event::DeltaApplied {
                        page: f.page,
                        lsn: f.lsn,
                        epoch: f.epoch,
                        source: f.source,
                        bytes,
                    });
                }
                _ => {}
            }
        }
        if self.subs.wants(EventKind::PageChanged) {
            self.changed.append(changed);
            self.emit_changed();
        }
    }

    /// Turns this replica into a writer: removes its [`replica::MARKER`] durably, and user
    /// writes are accepted from now on (new frames continue the leader's LSNs). Call it only
    /// once the old leader is fenced off: for a JetStream stream, `mmsb::replicate` does that
    /// first (`mmsb promote`).
    ///
    /// # Errors
    /// [`Error::NotALog`] when the bus is not a replica; [`Error::Io`].
    pub fn promote(&mut self) -> Result<()> {
        if !self.replica {
            return Err(Error::NotALog {
                dir: self.config.dir.clone(),
                reason: "it is not a replica".into(),
            });
        }
        self.log.sync()?;
        replica::promote_local(&self.config.dir)?;
        self.replica = false;
        self.in_batch = self.config.propagation == super::PropagationMode::Deferred;
        Ok(())
    }
}

/// Decodes and checks the frames of one commit that must start at `first`.
fn decode_commit(first: Lsn, frames: &[&[u8]]) -> Result<Decoded> {
    if frames.is_empty() {
        return Err(Error::ReplicaFrame {
            lsn: first,
            reason: "an empty commit".into(),
        });
    }
    let mut out = Vec::with_capacity(frames.len());
    for (i, bytes) in frames.iter().enumerate() {
        let lsn = Lsn(first.0 + i as u64);
        let refuse = |reason: String| Error::ReplicaFrame { lsn, reason };
        let (f, n) = frame::decode(bytes).map_err(|e| refuse(e.to_string()))?;
        if n != bytes.len() {
            return Err(refuse(format!(
                "{} bytes follow the {n}-byte frame",
                bytes.len() - n
            )));
        }
        if f.lsn != lsn {
            return Err(refuse(format!("the frame carries {}", f.lsn)));
        }
        let last = i + 1 == frames.len();
        if f.commit != last {
            return Err(refuse(if last {
                "the commit's last frame has no COMMIT flag".into()
            } else {
                "a COMMIT flag before the commit's last frame".into()
            }));
        }
        out.push(f);
    }
    Ok(Decoded { frames: out })
}
