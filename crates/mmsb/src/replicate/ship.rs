//! The shipper: a log directory's committed frames into a JetStream stream.

use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::{self, kv, object_store, stream};
use bytes::Bytes;

use super::nats::Conn;
use super::wire::{self, Kind, Meta};
use super::{Control, ReplicateError, Result, age_seconds, block_on, hex_id};
use crate::checkpoint;
use crate::logdir::{self, LogId};
use crate::metrics::ROLE_SHIPPER;
use crate::page::Lsn;
use crate::tlog::{LogTail, RawFrame};

/// How a shipper runs. [`ShipOptions::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct ShipOptions {
    /// The stream (created when missing).
    pub stream: String,
    /// Connection and request timeout (default [`super::DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// Sleep between polls of the log when it has nothing new (default 1 ms).
    pub poll: Duration,
    /// Largest message published, bytes (default 512 KiB; never more than the server's
    /// `max_payload` less 4 KiB for headers). Commits are packed whole into a message while they
    /// fit; a larger commit spans several.
    pub max_message_bytes: usize,
    /// Publishes awaiting their acknowledgement at most (default 256).
    pub window: usize,
    /// Lifetime of the shipper lease without renewal (default 3 s; renewed every third of it).
    /// The lease bucket keeps the lifetime it was created with.
    pub lease: Duration,
    /// How long to wait for a lease another shipper holds before giving up with
    /// [`ReplicateError::Fenced`] (default 2 × `lease`: long enough for the lease of a killed
    /// shipper to expire).
    pub lease_wait: Duration,
    /// Publish the log's checkpoints to the object store (default true).
    pub checkpoints: bool,
    /// After publishing a checkpoint, purge the stream below the first message a follower
    /// bootstrapped from it still needs (default false).
    pub purge: bool,
}

impl ShipOptions {
    /// The defaults, for `stream`.
    #[must_use]
    pub fn new(stream: impl Into<String>) -> ShipOptions {
        let lease = Duration::from_secs(3);
        ShipOptions {
            stream: stream.into(),
            timeout: super::DEFAULT_TIMEOUT,
            poll: Duration::from_millis(1),
            max_message_bytes: 512 * 1024,
            window: 256,
            lease,
            lease_wait: lease * 2,
            checkpoints: true,
            purge: false,
        }
    }
}

/// What a shipper did.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ShipReport {
    /// The stream.
    pub stream: String,
    /// The log's id.
    pub leader: String,
    /// The LSN the stream held when this run started (0: empty).
    pub resumed_after: u64,
    /// The last LSN the stream acknowledged.
    pub last_lsn: u64,
    /// Messages, frames and frame bytes acknowledged in this run.
    pub messages: u64,
    /// Frames acknowledged.
    pub frames: u64,
    /// Bytes of those frames.
    pub bytes: u64,
    /// Checkpoints published to the object store.
    pub checkpoints: u64,
    /// The stream's first sequence after the last purge, if one was made.
    pub purged_below: Option<u64>,
    /// Times the shipper lost the server and found its place again.
    pub reconnects: u64,
}

/// [`ship`] on its own current-thread runtime.
///
/// # Errors
/// As [`ship`].
pub fn ship_blocking(
    dir: &Path,
    url: &str,
    opts: &ShipOptions,
    ctl: &Control,
) -> Result<ShipReport> {
    block_on(url, ship(dir, url, opts, ctl))
}

/// Ships the log in `dir` to stream `opts.stream` at `url` until `ctl` stops it (or, with
/// [`Control::finish_at`], until that LSN is acknowledged). The log's writer may be another
/// process; the shipper only reads the directory. Resumes after the stream's last message
/// (whose last frame it first compares byte for byte with the log's). Survives a restart of the
/// server: it reconnects, reads the stream's last message and goes on from there, so nothing is
/// published twice or skipped.
///
/// # Errors
/// [`ReplicateError::Fenced`]: another live shipper holds the lease, or the stream's last
/// message is from another log or a promotion, or a publish found the stream moved by another
/// writer; [`ReplicateError::Gap`]: the stream holds LSNs this log does not (or different
/// bytes at its last LSN); [`ReplicateError::FrameTooLarge`]; [`ReplicateError::Nats`] when the
/// server cannot be reached at start; [`ReplicateError::BadName`]; the log's errors.
pub async fn ship(dir: &Path, url: &str, opts: &ShipOptions, ctl: &Control) -> Result<ShipReport> {
    let leader = hex_id(logdir::read_identity(dir)?.id);
    let token = hex_id(LogId::generate());
    let conn = Conn::connect(url, &opts.stream, opts.timeout).await?;
    let stream = conn.stream(true).await?;
    let server_max = conn.client.server_info().max_payload;
    let max_msg = opts
        .max_message_bytes
        .min(server_max.saturating_sub(4096))
        .max(crate::frame::FRAME_HEADER_LEN);
    let lease = Lease::acquire(&conn, opts, &leader, &token, ctl).await?;
    let ckpts = if opts.checkpoints {
        conn.checkpoints(true).await?
    } else {
        None
    };
    let seen_ckpt = match &ckpts {
        Some(b) => conn
            .list_checkpoints(b)
            .await?
            .last()
            .map_or(Lsn::ZERO, |c| c.0),
        None => Lsn::ZERO,
    };
    ctl.update(|s| s.role = ROLE_SHIPPER);
    let mut s = Shipper {
        dir: dir.to_path_buf(),
        conn,
        stream,
        leader: leader.clone(),
        token,
        max_msg,
        opts: opts.clone(),
        lease,
        ckpts,
        seen_ckpt,
        expected: 0,
        tail: None,
        acked: Lsn::ZERO,
        polled: Lsn::ZERO,
        inflight: VecDeque::new(),
        adopted: false,
        report: ShipReport {
            stream: opts.stream.clone(),
            leader,
            ..ShipReport::default()
        },
    };
    s.position().await?;
    s.report.resumed_after = s.acked.0;
    s.run(ctl).await?;
    Ok(s.report)
}

/// A publish awaiting its acknowledgement.
struct Inflight {
    ack: PublishAckFuture,
    last: Lsn,
    frames: u64,
    bytes: u64,
    /// Timestamp of its first frame (ns since the Unix epoch).
    first_ts: u64,
}

struct Shipper {
    dir: PathBuf,
    conn: Conn,
    stream: stream::Stream,
    leader: String,
    token: String,
    max_msg: usize,
    opts: ShipOptions,
    lease: Lease,
    ckpts: Option<object_store::ObjectStore>,
    /// The newest checkpoint LSN in the object store, or found unusable in the directory.
    seen_ckpt: Lsn,
    /// Stream sequence the next publish expects as the last.
    expected: u64,
    tail: Option<LogTail>,
    /// Last LSN acknowledged by the stream.
    acked: Lsn,
    /// Last LSN read from the log (published or about to be).
    polled: Lsn,
    inflight: VecDeque<Inflight>,
    /// The stream's last message was adopted from an earlier shipper run (start only).
    adopted: bool,
    report: ShipReport,
}

/// What to do after a failed publish or acknowledgement.
enum Failure {
    /// The stream moved: find out who moved it.
    WrongSequence,
    /// The connection or server: wait and find our place again.
    Transient,
    /// Refused for good.
    Fatal(ReplicateError),
}

impl Shipper {
    fn fenced(&self, reason: String) -> ReplicateError {
        ReplicateError::Fenced {
            stream: self.opts.stream.clone(),
            reason,
        }
    }

    /// Finds where the stream ends and positions the tail after it. `self.adopted` false: the
    /// first call, which adopts the last message of an earlier run of a shipper of this log;
    /// afterwards the last message must be this run's.
    async fn position(&mut self) -> Result<()> {
        self.inflight.clear();
        let last = self.conn.last(&self.stream).await?;
        let next = match last {
            None => {
                self.expected = 0;
                Lsn(1)
            }
            Some(m) => {
                if m.meta.leader != self.leader {
                    return Err(self.fenced(match m.meta.kind {
                        Kind::Promote => format!(
                            "log {} was promoted at {} (sequence {}); this log {} is no longer the leader",
                            m.meta.leader, m.meta.last, m.seq, self.leader
                        ),
                        Kind::Frames => format!(
                            "its last message (sequence {}) is from log {}, not this log {}",
                            m.seq, m.meta.leader, self.leader
                        ),
                    }));
                }
                if self.adopted && m.meta.shipper != self.token {
                    return Err(self.fenced(format!(
                        "another shipper ({}) published sequence {} (LSN {}..={})",
                        m.meta.shipper, m.seq, m.meta.first.0, m.meta.last.0
                    )));
                }
                self.check_boundary(&m).await?;
                self.expected = m.seq;
                m.meta.last.next()
            }
        };
        self.adopted = true;
        self.acked = Lsn(next.0 - 1);
        self.polled = self.acked;
        self.tail = Some(LogTail::open(&self.dir, next)?);
        Ok(())
    }

    /// The log must hold the stream's last frame, byte for byte.
    async fn check_boundary(&self, m: &super::nats::Stored) -> Result<()> {
        let mut t = LogTail::open(&self.dir, m.meta.last)?;
        let mut got = Vec::new();
        match t.poll(&mut got, 1) {
            Ok(_) => {}
            // A checkpoint took it: nothing left to compare with.
            Err(crate::Error::Pruned { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let Some(f) = got.first().filter(|f| f.lsn == m.meta.last) else {
            return Err(ReplicateError::Gap {
                stream: self.opts.stream.clone(),
                reason: format!(
                    "the stream holds {} (sequence {}) but this log does not: it lost committed frames; rebuild its followers",
                    m.meta.last, m.seq
                ),
            });
        };
        if m.meta.kind == Kind::Frames {
            let ranges = wire::split_frames(&m.payload, m.meta.first, m.meta.last)
                .map_err(|r| self.conn.hostile(m.seq, r))?;
            let theirs = ranges.last().map(|r| &m.payload[r.clone()]);
            if theirs != Some(f.bytes.as_slice()) {
                return Err(ReplicateError::Gap {
                    stream: self.opts.stream.clone(),
                    reason: format!(
                        "the stream's frame at {} (sequence {}) differs from this log's",
                        m.meta.last, m.seq
                    ),
                });
            }
        }
        Ok(())
    }

    async fn run(&mut self, ctl: &Control) -> Result<()> {
        let mut buf: Vec<RawFrame> = Vec::new();
        let mut next_ckpt = Instant::now();
        loop {
            if ctl.is_stopped() {
                // Best effort: what is in flight is acknowledged or not; a restart finds out.
                while let Some(f) = self.inflight.pop_front() {
                    if self.ack(f).await.is_err() {
                        break;
                    }
                }
                return Ok(());
            }
            if ctl.finish_lsn().is_some_and(|l| self.acked.0 >= l) {
                return Ok(());
            }
            self.lease.keep(&self.conn, &self.token, ctl).await?;
            if self.ckpts.is_some() && Instant::now() >= next_ckpt {
                next_ckpt = Instant::now() + Duration::from_millis(500);
                self.publish_checkpoint(ctl).await?;
            }
            buf.clear();
            let polled = match self.tail.as_mut() {
                Some(t) => t.poll(&mut buf, self.max_msg * 4),
                None => Ok(0),
            };
            match polled {
                Ok(_) => {}
                Err(crate::Error::Pruned { wanted, first }) => {
                    self.skip_pruned(wanted, first, ctl).await?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            // With a finish LSN, publish up to the end of the commit that holds it, no further.
            if let Some(l) = ctl.finish_lsn()
                && let Some(end) = buf.iter().position(|f| f.lsn.0 >= l && f.commit)
            {
                buf.truncate(end + 1);
            }
            if buf.is_empty() {
                if let Some(f) = self.inflight.pop_front() {
                    self.settle(f, ctl).await?;
                } else {
                    self.update_stats(ctl);
                    tokio::time::sleep(self.opts.poll).await;
                }
                continue;
            }
            if let Err(e) = self.publish_all(&buf, ctl).await {
                self.recover(e, ctl).await?;
            }
        }
    }

    /// Publishes `frames` packed into messages, keeping at most `window` in flight.
    async fn publish_all(
        &mut self,
        frames: &[RawFrame],
        ctl: &Control,
    ) -> std::result::Result<(), Failure> {
        let mut i = 0;
        while i < frames.len() {
            let mut j = i;
            let mut size = 0usize;
            while j < frames.len() && (j == i || size + frames[j].bytes.len() <= self.max_msg) {
                size += frames[j].bytes.len();
                j += 1;
            }
            if size > self.max_msg {
                return Err(Failure::Fatal(ReplicateError::FrameTooLarge {
                    lsn: frames[i].lsn,
                    len: size,
                    max: self.max_msg,
                }));
            }
            let mut payload = Vec::with_capacity(size);
            for f in &frames[i..j] {
                payload.extend_from_slice(&f.bytes);
            }
            let meta = Meta {
                kind: Kind::Frames,
                leader: self.leader.clone(),
                shipper: self.token.clone(),
                first: frames[i].lsn,
                last: frames[j - 1].lsn,
            };
            let ack = self.send(&meta, Bytes::from(payload)).await?;
            self.expected += 1;
            self.polled = meta.last;
            self.inflight.push_back(Inflight {
                ack,
                last: meta.last,
                frames: (j - i) as u64,
                bytes: size as u64,
                first_ts: frames[i].timestamp_ns,
            });
            while self.inflight.len() >= self.opts.window.max(1) {
                let f = self.inflight.pop_front().expect("non-empty");
                self.ack(f).await?;
                self.update_stats(ctl);
            }
            i = j;
        }
        Ok(())
    }

    async fn send(
        &self,
        meta: &Meta,
        payload: Bytes,
    ) -> std::result::Result<PublishAckFuture, Failure> {
        let mut p = jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(meta.msg_id())
            .expected_last_sequence(self.expected);
        for (k, v) in meta.headers() {
            p = p.header(k, v.as_str());
        }
        self.conn
            .js
            .send_publish(wire::subject(&self.opts.stream), p)
            .await
            .map_err(|e| classify(&self.conn, e.kind(), &e))
    }

    /// Awaits one acknowledgement and counts it.
    async fn ack(&mut self, f: Inflight) -> std::result::Result<(), Failure> {
        match f.ack.await {
            Ok(_) => {
                self.acked = f.last;
                self.report.last_lsn = f.last.0;
                self.report.messages += 1;
                self.report.frames += f.frames;
                self.report.bytes += f.bytes;
                Ok(())
            }
            Err(e) => Err(classify(&self.conn, e.kind(), &e)),
        }
    }

    /// [`Shipper::ack`], recovering from a failure.
    async fn settle(&mut self, f: Inflight, ctl: &Control) -> Result<()> {
        let r = self.ack(f).await;
        self.update_stats(ctl);
        match r {
            Ok(()) => Ok(()),
            Err(e) => self.recover(e, ctl).await,
        }
    }

    /// After a failed publish: find our place again, or give up if fenced.
    async fn recover(&mut self, e: Failure, ctl: &Control) -> Result<()> {
        self.inflight.clear();
        ctl.update(|s| s.errors_total += 1);
        match e {
            Failure::Fatal(e) => Err(e),
            // An earlier publish of ours failed and the later ones of the window then expected
            // the wrong sequence, or someone else wrote: `position` tells which.
            Failure::WrongSequence => self.reposition(ctl).await,
            Failure::Transient => {
                self.report.reconnects += 1;
                ctl.update(|s| s.reconnects_total += 1);
                self.reposition(ctl).await
            }
        }
    }

    /// [`Shipper::position`], retried while the server is away.
    async fn reposition(&mut self, ctl: &Control) -> Result<()> {
        let mut delay = Duration::from_millis(20);
        loop {
            match self.position().await {
                Ok(()) => return Ok(()),
                Err(ReplicateError::Nats { .. }) if !ctl.is_stopped() => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn update_stats(&self, ctl: &Control) {
        let lag = self.polled.0.saturating_sub(self.acked.0);
        let ts = self.inflight.front().map(|f| f.first_ts);
        ctl.update(|s| {
            s.role = ROLE_SHIPPER;
            s.leader_lsn = self.polled.0.max(self.acked.0);
            s.applied_lsn = self.acked.0;
            s.lag_frames = lag;
            s.lag_seconds = if lag == 0 {
                0.0
            } else {
                ts.map_or(0.0, age_seconds)
            };
            s.frames_total = self.report.frames;
            s.bytes_total = self.report.bytes;
            s.checkpoints_total = self.report.checkpoints;
        });
    }

    /// The log no longer holds `wanted` (a checkpoint pruned it while the shipper was away):
    /// publish the newest checkpoint and go on after it. Followers older than it must be
    /// rebuilt; they find out with [`ReplicateError::Gap`].
    async fn skip_pruned(&mut self, wanted: Lsn, first: Lsn, ctl: &Control) -> Result<()> {
        let newest = checkpoint::list(&self.dir)?
            .into_iter()
            .rev()
            .find(|(l, _)| l.0 + 1 >= first.0);
        let Some((lsn, path)) = newest else {
            return Err(ReplicateError::Gap {
                stream: self.opts.stream.clone(),
                reason: format!(
                    "the log no longer holds {wanted} (it starts at {first}) and no checkpoint covers it"
                ),
            });
        };
        if !self.put_checkpoint(lsn, &path, ctl).await? {
            return Err(ReplicateError::Gap {
                stream: self.opts.stream.clone(),
                reason: format!(
                    "the log no longer holds {wanted} and its checkpoint at {lsn} cannot be published (unreadable, or another log's)"
                ),
            });
        }
        // Settle what is in flight, then continue after the checkpoint.
        while let Some(f) = self.inflight.pop_front() {
            self.settle(f, ctl).await?;
        }
        self.tail = Some(LogTail::open(&self.dir, lsn.next())?);
        Ok(())
    }

    /// Publishes the newest checkpoint of the log that the stream has reached, if it is newer
    /// than the newest in the object store; then purges, if asked.
    async fn publish_checkpoint(&mut self, ctl: &Control) -> Result<()> {
        let list = checkpoint::list(&self.dir)?;
        let Some((lsn, path)) = list
            .into_iter()
            .rev()
            .find(|(l, _)| *l <= self.acked)
            .filter(|(l, _)| *l > self.seen_ckpt)
        else {
            return Ok(());
        };
        // Purge only below a checkpoint a new follower can start from.
        if self.put_checkpoint(lsn, &path, ctl).await? && self.opts.purge {
            let (seq, _) = self.conn.find(&self.stream, lsn.next()).await?;
            let (first, _) = self.conn.bounds(&self.stream).await?;
            if seq > first {
                self.stream
                    .purge()
                    .sequence(seq)
                    .await
                    .map_err(|e| self.conn.err(format!("purging below sequence {seq}"), e))?;
                self.report.purged_below = Some(seq);
            }
        }
        Ok(())
    }

    /// Checks the checkpoint at `path` (sound, this log's) and puts it in the object store;
    /// keeps the newest two there. False when there is no object store, or the checkpoint is
    /// unusable (unreadable, damaged, gone since it was listed, or another log's: counted in
    /// `errors_total` and not tried again); the shipper goes on either way.
    async fn put_checkpoint(&mut self, lsn: Lsn, path: &Path, ctl: &Control) -> Result<bool> {
        let Some(bucket) = self.ckpts.clone() else {
            return Ok(false);
        };
        self.seen_ckpt = self.seen_ckpt.max(lsn);
        let read = checkpoint::read(path).and_then(|c| {
            let (mut f, len) = crate::tlog::segment::open_regular(path)?;
            let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            f.read_to_end(&mut bytes)
                .map_err(|e| crate::Error::io(path, e))?;
            Ok((c, bytes))
        });
        let bytes = match read {
            Ok((c, bytes)) if c.log_id.map(hex_id).as_deref() == Some(self.leader.as_str()) => {
                bytes
            }
            _ => {
                ctl.update(|s| s.errors_total += 1);
                return Ok(false);
            }
        };
        let name = wire::checkpoint_object(lsn);
        bucket
            .put(name.as_str(), &mut bytes.as_slice())
            .await
            .map_err(|e| self.conn.err(format!("putting checkpoint {name}"), e))?;
        for (_, n) in self
            .conn
            .list_checkpoints(&bucket)
            .await?
            .iter()
            .rev()
            .skip(2)
        {
            let _ = bucket.delete(n).await;
        }
        self.report.checkpoints += 1;
        ctl.update(|s| s.checkpoints_total += 1);
        Ok(true)
    }
}

fn classify(conn: &Conn, kind: PublishErrorKind, e: &dyn std::fmt::Display) -> Failure {
    match kind {
        PublishErrorKind::WrongLastSequence => Failure::WrongSequence,
        PublishErrorKind::MaxPayloadExceeded => Failure::Fatal(conn.err("publishing", e)),
        _ => Failure::Transient,
    }
}

/// The shipper lease: key [`wire::LEASE_KEY`] of the lease bucket, holding the shipper's
/// token, renewed by revision (so a renewal after someone else took it fails).
struct Lease {
    store: kv::Store,
    revision: u64,
    renewed: Instant,
    every: Duration,
}

impl Lease {
    async fn acquire(
        conn: &Conn,
        opts: &ShipOptions,
        leader: &str,
        token: &str,
        ctl: &Control,
    ) -> Result<Lease> {
        let store = conn.lease_bucket(opts.lease).await?;
        let deadline = Instant::now() + opts.lease_wait;
        loop {
            match store
                .create(wire::LEASE_KEY, Bytes::from(token.to_owned()))
                .await
            {
                Ok(revision) => {
                    return Ok(Lease {
                        store,
                        revision,
                        renewed: Instant::now(),
                        every: opts.lease / 3,
                    });
                }
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    // A promotion of this log left the lease to it: take it over.
                    if let Ok(Some(en)) = store.entry(wire::LEASE_KEY).await
                        && en.value.as_ref() == wire::promoted_value(leader).as_bytes()
                        && let Ok(revision) = store
                            .update(wire::LEASE_KEY, Bytes::from(token.to_owned()), en.revision)
                            .await
                    {
                        return Ok(Lease {
                            store,
                            revision,
                            renewed: Instant::now(),
                            every: opts.lease / 3,
                        });
                    }
                    if Instant::now() >= deadline || ctl.is_stopped() {
                        let holder: String = match store.entry(wire::LEASE_KEY).await {
                            Ok(Some(en)) => String::from_utf8_lossy(&en.value)
                                .chars()
                                .take(64)
                                .collect(),
                            _ => "unknown".into(),
                        };
                        return Err(ReplicateError::Fenced {
                            stream: opts.stream.clone(),
                            reason: format!(
                                "shipper {holder} holds the lease (waited {:?} for it to expire)",
                                opts.lease_wait
                            ),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(conn.err("taking the shipper lease", e)),
            }
        }
    }

    /// Renews the lease when a third of its lifetime has passed. A renewal refused because the
    /// key changed means another shipper (or a promotion) took it: fenced. One refused because
    /// the key expired while the server was away is retried as a new lease.
    async fn keep(&mut self, conn: &Conn, token: &str, ctl: &Control) -> Result<()> {
        if self.renewed.elapsed() < self.every {
            return Ok(());
        }
        match self
            .store
            .update(
                wire::LEASE_KEY,
                Bytes::from(token.to_owned()),
                self.revision,
            )
            .await
        {
            Ok(r) => {
                self.revision = r;
                self.renewed = Instant::now();
                Ok(())
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                match self.store.entry(wire::LEASE_KEY).await {
                    Ok(None) => match self
                        .store
                        .create(wire::LEASE_KEY, Bytes::from(token.to_owned()))
                        .await
                    {
                        Ok(r) => {
                            self.revision = r;
                            self.renewed = Instant::now();
                            Ok(())
                        }
                        Err(_) => Err(lost(conn)),
                    },
                    Ok(Some(en)) if en.value.as_ref() == token.as_bytes() => {
                        self.revision = en.revision;
                        Ok(())
                    }
                    Ok(Some(_)) => Err(lost(conn)),
                    Err(_) => Ok(()),
                }
            }
            Err(_) => {
                // The server is away; publishes find out too. Try again later.
                ctl.update(|s| s.errors_total += 1);
                self.renewed = Instant::now();
                Ok(())
            }
        }
    }
}

fn lost(conn: &Conn) -> ReplicateError {
    ReplicateError::Fenced {
        stream: conn.name.clone(),
        reason: "the shipper lease was taken over (another shipper, or a promotion)".into(),
    }
}
