//! The follower: a replica directory kept up with a JetStream stream.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use bytes::Bytes;
use futures_util::StreamExt;

use super::nats::Conn;
use super::wire::{self, Kind, Meta};
use super::{Control, ReplicateError, Result, age_seconds, block_on};
use crate::metrics::ROLE_FOLLOWER;
use crate::page::Lsn;
use crate::tlog::Durability;
use crate::{Config, Error, Mmsb, frame, replica};

/// How a follower runs. [`FollowOptions::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct FollowOptions {
    /// The stream. A follower started before its stream exists waits for it.
    pub stream: String,
    /// Connection and request timeout (default [`super::DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// Durability of the replica's own log (default [`Durability::Flush`], as a bus's).
    pub durability: Durability,
    /// Largest checkpoint read from the object store to build a new replica, bytes (default
    /// 16 GiB).
    pub max_checkpoint_bytes: u64,
    /// Largest commit gathered before it is applied, bytes of frames (default 1 GiB): a stream
    /// that never closes a commit does not exhaust memory.
    pub max_commit_bytes: usize,
}

impl FollowOptions {
    /// The defaults, for `stream`.
    #[must_use]
    pub fn new(stream: impl Into<String>) -> FollowOptions {
        FollowOptions {
            stream: stream.into(),
            timeout: super::DEFAULT_TIMEOUT,
            durability: Durability::Flush,
            max_checkpoint_bytes: 16 << 30,
            max_commit_bytes: 1 << 30,
        }
    }
}

/// What a follower did.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct FollowReport {
    /// The stream.
    pub stream: String,
    /// The LSN of the checkpoint a new replica was built from, if it was.
    pub bootstrapped_from: Option<u64>,
    /// The replica's last LSN when it opened (after recovery).
    pub resumed_at: u64,
    /// Its last LSN when the follower returned.
    pub applied_lsn: u64,
    /// The last LSN known in the stream.
    pub leader_lsn: u64,
    /// Commits applied in this run.
    pub commits: u64,
    /// Frames applied.
    pub frames: u64,
    /// Bytes of those frames.
    pub bytes: u64,
    /// Times the consumer was recreated after losing the server.
    pub reconnects: u64,
}

/// [`follow`] on its own current-thread runtime.
///
/// # Errors
/// As [`follow`].
pub fn follow_blocking(
    dir: &Path,
    url: &str,
    opts: &FollowOptions,
    ctl: &Control,
) -> Result<FollowReport> {
    block_on(url, follow(dir, url, opts, ctl))
}

/// Follows stream `opts.stream` at `url` into the replica in `dir` until `ctl` stops it (or,
/// with [`Control::finish_at`], until that LSN is applied). A missing or empty `dir` becomes a
/// new replica, from the newest checkpoint in the stream's object store when there is one; an
/// existing replica resumes after its last commit. Each commit is checked and applied by
/// [`Mmsb::apply_replicated`]; the replica's stats are published for [`Control::bus_stats`].
///
/// # Errors
/// [`ReplicateError::Frame`] for a frame that fails its checks (the follower stops; nothing of
/// its commit was applied), [`ReplicateError::Hostile`] for a message that is not ours,
/// [`ReplicateError::Gap`] when the stream no longer holds what the replica needs next;
/// [`ReplicateError::Nats`] when the server cannot be reached at start; the replica's errors
/// ([`Error::NotALog`] for a directory that is not a replica, [`Error::Locked`]
/// when another process has it open).
pub async fn follow(
    dir: &Path,
    url: &str,
    opts: &FollowOptions,
    ctl: &Control,
) -> Result<FollowReport> {
    let conn = Conn::connect(url, &opts.stream, opts.timeout).await?;
    let stream = loop {
        match conn.stream(false).await {
            Ok(s) => break s,
            Err(ReplicateError::Nats { .. }) if !ctl.is_stopped() => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(ReplicateError::Nats { .. }) => {
                return Ok(FollowReport {
                    stream: opts.stream.clone(),
                    ..FollowReport::default()
                });
            }
            Err(e) => return Err(e),
        }
    };
    let mut report = FollowReport {
        stream: opts.stream.clone(),
        ..FollowReport::default()
    };
    if replica::is_fresh(dir)? {
        if let Some(b) = conn.checkpoints(false).await? {
            if let Some((lsn, name)) = conn.list_checkpoints(&b).await?.pop() {
                let bytes = conn
                    .read_checkpoint(&b, &name, opts.max_checkpoint_bytes)
                    .await?;
                let got = replica::bootstrap(dir, &bytes)?;
                if got != lsn {
                    return Err(ReplicateError::Hostile {
                        stream: opts.stream.clone(),
                        seq: 0,
                        reason: format!("checkpoint object {name} holds a checkpoint at LSN {got}"),
                    });
                }
                report.bootstrapped_from = Some(lsn.0);
                ctl.update(|s| s.checkpoints_total += 1);
            }
        }
    }
    let mut bus = Mmsb::start_replica(Config::new(dir).durability(opts.durability))?;
    ctl.set_bus(bus.metrics_handle());
    report.resumed_at = bus.state().last_lsn().0;
    let mut f = Follower {
        conn,
        stream,
        opts: opts.clone(),
        leader: None,
        applied: bus.state().last_lsn(),
        leader_lsn: Lsn::ZERO,
        newest_ts: 0,
        pending: Vec::new(),
        pending_bytes: 0,
        report,
        dir: dir.to_path_buf(),
    };
    ctl.update(|s| s.role = ROLE_FOLLOWER);
    let r = f.run(&mut bus, ctl).await;
    f.report.applied_lsn = f.applied.0;
    f.report.leader_lsn = f.leader_lsn.0;
    f.update_stats(ctl);
    let stopped = bus.stop();
    r?;
    stopped?;
    Ok(f.report)
}

struct Follower {
    conn: Conn,
    stream: async_nats::jetstream::stream::Stream,
    opts: FollowOptions,
    /// The log id whose frames the stream carries now.
    leader: Option<String>,
    applied: Lsn,
    leader_lsn: Lsn,
    /// Timestamp of the newest frame applied.
    newest_ts: u64,
    /// Frames of the commit being gathered.
    pending: Vec<Bytes>,
    pending_bytes: usize,
    report: FollowReport,
    dir: PathBuf,
}

impl Follower {
    async fn run(&mut self, bus: &mut Mmsb, ctl: &Control) -> Result<()> {
        let mut refreshed = Instant::now() - Duration::from_secs(10);
        'position: loop {
            self.pending.clear();
            self.pending_bytes = 0;
            let want = self.applied.next();
            let (seq, first) = match self.conn.find(&self.stream, want).await {
                Ok(x) => x,
                Err(ReplicateError::Nats { .. }) if !ctl.is_stopped() => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(ReplicateError::Nats { .. }) => return Ok(()),
                Err(e) => return Err(e),
            };
            if let Some(first) = first.filter(|f| *f > want) {
                return Err(self.gap(format!(
                    "the replica needs {want}; the stream's message {seq} starts at {first} (purged after a checkpoint?): remove {} and follow again to rebuild it from the newest checkpoint",
                    self.dir.display()
                )));
            }
            let consumer = self
                .stream
                .create_consumer(pull::OrderedConfig {
                    filter_subject: wire::subject(&self.opts.stream),
                    deliver_policy: DeliverPolicy::ByStartSequence {
                        start_sequence: seq,
                    },
                    ..Default::default()
                })
                .await;
            let mut messages = match consumer {
                Ok(c) => match c.messages().await {
                    Ok(m) => m,
                    Err(_) => {
                        self.lost(ctl).await;
                        continue;
                    }
                },
                Err(_) => {
                    if ctl.is_stopped() {
                        return Ok(());
                    }
                    self.lost(ctl).await;
                    continue;
                }
            };
            // The first message may hold frames the replica has (it starts mid-message).
            let mut resumed = true;
            loop {
                if ctl.is_stopped() || ctl.finish_lsn().is_some_and(|l| self.applied.0 >= l) {
                    return Ok(());
                }
                if refreshed.elapsed() >= Duration::from_secs(1) {
                    refreshed = Instant::now();
                    if let Ok(Some(m)) = self.conn.last(&self.stream).await {
                        self.leader_lsn = self.leader_lsn.max(m.meta.last);
                    }
                    self.update_stats(ctl);
                }
                let next = tokio::time::timeout(Duration::from_millis(100), messages.next()).await;
                let msg = match next {
                    Err(_) => continue,
                    Ok(Some(Ok(m))) => m,
                    Ok(Some(Err(_)) | None) => {
                        self.lost(ctl).await;
                        continue 'position;
                    }
                };
                let (seq, pending) = match msg.info() {
                    Ok(i) => (i.stream_sequence, i.pending),
                    Err(e) => {
                        return Err(self.conn.hostile(0, format!("unreadable delivery: {e}")));
                    }
                };
                let meta = Meta::parse(|h| {
                    msg.message
                        .headers
                        .as_ref()
                        .and_then(|hs| hs.get(h))
                        .map(|v| v.as_str().to_owned())
                })
                .map_err(|r| self.conn.hostile(seq, r))?;
                self.apply_message(bus, seq, &meta, &msg.message.payload, resumed)?;
                resumed = false;
                self.leader_lsn = self.leader_lsn.max(meta.last);
                if pending == 0 {
                    self.leader_lsn = self.leader_lsn.max(self.applied);
                }
                self.update_stats(ctl);
            }
        }
    }

    async fn lost(&mut self, ctl: &Control) {
        self.report.reconnects += 1;
        ctl.update(|s| {
            s.reconnects_total += 1;
            s.errors_total += 1;
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    fn gap(&self, reason: String) -> ReplicateError {
        ReplicateError::Gap {
            stream: self.opts.stream.clone(),
            reason,
        }
    }

    fn frame_err(&self, seq: u64, lsn: Lsn, reason: String) -> ReplicateError {
        ReplicateError::Frame {
            stream: self.opts.stream.clone(),
            seq,
            lsn,
            reason,
        }
    }

    /// Checks one message and applies the commits it completes. `resumed`: the first message
    /// after positioning, which may repeat frames the replica has.
    fn apply_message(
        &mut self,
        bus: &mut Mmsb,
        seq: u64,
        meta: &Meta,
        payload: &Bytes,
        resumed: bool,
    ) -> Result<()> {
        if meta.kind == Kind::Promote {
            if !payload.is_empty() {
                return Err(self.conn.hostile(seq, "a promote message with a payload"));
            }
            if !self.pending.is_empty() || meta.last != self.applied {
                if meta.last < self.applied && resumed {
                    // Positioned on an old marker: nothing to do.
                } else {
                    return Err(self.conn.hostile(
                        seq,
                        format!(
                            "a promotion at {} while this replica is at {} with {} frames of an open commit",
                            meta.last,
                            self.applied,
                            self.pending.len()
                        ),
                    ));
                }
            }
            self.leader = Some(meta.leader.clone());
            return Ok(());
        }
        if let Some(l) = &self.leader {
            if *l != meta.leader {
                return Err(self.conn.hostile(
                    seq,
                    format!(
                        "frames from log {} while the stream's leader is {l} (no promotion between)",
                        meta.leader
                    ),
                ));
            }
        } else {
            self.leader = Some(meta.leader.clone());
        }
        let ranges = wire::split_frames(payload, meta.first, meta.last)
            .map_err(|r| self.conn.hostile(seq, r))?;
        for (i, r) in ranges.into_iter().enumerate() {
            let lsn = Lsn(meta.first.0 + i as u64);
            let expected = Lsn(self.applied.0 + self.pending.len() as u64 + 1);
            if lsn < expected {
                if resumed && self.pending.is_empty() {
                    continue;
                }
                return Err(self
                    .conn
                    .hostile(seq, format!("{lsn} again: the replica expects {expected}")));
            }
            if lsn > expected {
                return Err(self.gap(format!(
                    "message {seq} holds {lsn}; the replica needs {expected} first"
                )));
            }
            let bytes = payload.slice(r);
            let view = frame::decode_view(&bytes)
                .map_err(|e| self.frame_err(seq, lsn, e.to_string()))?
                .0;
            if view.lsn != lsn {
                return Err(self.frame_err(seq, lsn, format!("the frame carries {}", view.lsn)));
            }
            self.pending_bytes += bytes.len();
            if self.pending_bytes > self.opts.max_commit_bytes {
                return Err(self.frame_err(
                    seq,
                    lsn,
                    format!(
                        "its commit exceeds {} bytes without a COMMIT frame",
                        self.opts.max_commit_bytes
                    ),
                ));
            }
            let commit = view.commit;
            let ts = view.timestamp_ns;
            self.pending.push(bytes);
            if commit {
                let refs: Vec<&[u8]> = self.pending.iter().map(|b| b.as_ref()).collect();
                match bus.apply_replicated(&refs) {
                    Ok(c) => {
                        self.report.commits += 1;
                        self.report.frames += self.pending.len() as u64;
                        self.report.bytes += self.pending_bytes as u64;
                        self.applied = c.lsn;
                        self.newest_ts = ts;
                    }
                    Err(Error::ReplicaFrame { lsn, reason }) => {
                        return Err(self.frame_err(seq, lsn, reason));
                    }
                    Err(e) => return Err(e.into()),
                }
                self.pending.clear();
                self.pending_bytes = 0;
            }
        }
        Ok(())
    }

    fn update_stats(&self, ctl: &Control) {
        let leader = self.leader_lsn.max(self.applied);
        let lag = leader.0 - self.applied.0;
        ctl.update(|s| {
            s.role = ROLE_FOLLOWER;
            s.leader_lsn = leader.0;
            s.applied_lsn = self.applied.0;
            s.lag_frames = lag;
            s.lag_seconds = if lag == 0 || self.newest_ts == 0 {
                0.0
            } else {
                age_seconds(self.newest_ts)
            };
            s.frames_total = self.report.frames;
            s.bytes_total = self.report.bytes;
        });
    }
}
