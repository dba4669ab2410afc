//! Promotion: a caught-up replica becomes the stream's writer, and the old leader is fenced.

use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;

use super::nats::Conn;
use super::wire::{self, Kind, Meta};
use super::{ReplicateError, Result, block_on, hex_id};
use crate::logdir::{self, LogId};
use crate::{Config, Mmsb};

/// How a promotion runs.
#[derive(Clone, Debug)]
pub struct PromoteOptions {
    /// The stream.
    pub stream: String,
    /// Connection and request timeout (default [`super::DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
}

impl PromoteOptions {
    /// The defaults, for `stream`.
    #[must_use]
    pub fn new(stream: impl Into<String>) -> PromoteOptions {
        PromoteOptions {
            stream: stream.into(),
            timeout: super::DEFAULT_TIMEOUT,
        }
    }
}

/// What a promotion did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PromoteReport {
    /// The stream.
    pub stream: String,
    /// The promoted log's id: the stream's leader from now on.
    pub leader: String,
    /// The log that led before.
    pub previous_leader: Option<String>,
    /// The LSN at which the promotion took effect (the replica's last LSN).
    pub lsn: u64,
    /// The stream sequence of the promotion marker.
    pub seq: u64,
}

/// [`promote`] on its own current-thread runtime.
///
/// # Errors
/// As [`promote`].
pub fn promote_blocking(dir: &Path, url: &str, opts: &PromoteOptions) -> Result<PromoteReport> {
    block_on(url, promote(dir, url, opts))
}

/// Promotes the replica in `dir` (not running: its follower stopped) to the writer of stream
/// `opts.stream`: it must hold everything the stream holds (its last LSN = the stream's last);
/// a promotion marker is then published with the stream's last sequence as the expected one,
/// so it is refused if anything was published meanwhile, and once it is in, the old leader's
/// next publish is refused (its expected sequence is stale) and its shipper lease is dropped.
/// Only then is the replica made writable ([`Mmsb::promote`]). Ship from it with
/// [`super::ship`]: it continues after the marker.
///
/// # Errors
/// [`ReplicateError::Gap`] when the replica is behind the stream (follow it to the end first);
/// [`ReplicateError::Fenced`] when the stream moved while promoting, or its last message is
/// not a frame this replica holds; [`ReplicateError::Nats`]; the replica's errors
/// ([`crate::Error::NotALog`] when `dir` is not a replica).
pub async fn promote(dir: &Path, url: &str, opts: &PromoteOptions) -> Result<PromoteReport> {
    let mut bus = Mmsb::start_replica(Config::new(dir))?;
    let applied = bus.state().last_lsn();
    let leader = hex_id(logdir::read_identity(dir)?.id);
    let conn = Conn::connect(url, &opts.stream, opts.timeout).await?;
    let stream = conn.stream(false).await?;
    let last = conn.last(&stream).await?;
    let (expected, previous) = match &last {
        None => (0, None),
        Some(m) => {
            if m.meta.last != applied {
                return Err(ReplicateError::Gap {
                    stream: opts.stream.clone(),
                    reason: format!(
                        "the replica is at {applied} and the stream at {} (sequence {}): follow it to the end before promoting",
                        m.meta.last, m.seq
                    ),
                });
            }
            (m.seq, Some(m.meta.leader.clone()))
        }
    };
    let meta = Meta {
        kind: Kind::Promote,
        leader: leader.clone(),
        shipper: hex_id(LogId::generate()),
        first: applied,
        last: applied,
    };
    let mut p = PublishMessage::build()
        .payload(Bytes::new())
        .message_id(meta.msg_id())
        .expected_last_sequence(expected);
    for (k, v) in meta.headers() {
        p = p.header(k, v.as_str());
    }
    let ack = conn
        .js
        .send_publish(wire::subject(&opts.stream), p)
        .await
        .map_err(|e| conn.err("publishing the promotion", e))?
        .await;
    let seq = match ack {
        Ok(a) => a.sequence,
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
            return Err(ReplicateError::Fenced {
                stream: opts.stream.clone(),
                reason: format!(
                    "the stream moved past sequence {expected} while promoting; follow again and retry"
                ),
            });
        }
        Err(e) => return Err(conn.err("publishing the promotion", e)),
    };
    // The old shipper's next renewal fails; the promoted log's shipper takes the lease at once.
    if let Ok(kv) = conn
        .js
        .get_key_value(wire::lease_bucket(&opts.stream))
        .await
    {
        kv.put(wire::LEASE_KEY, Bytes::from(wire::promoted_value(&leader)))
            .await
            .map_err(|e| conn.err("handing the shipper lease over", e))?;
    }
    bus.promote()?;
    bus.stop()?;
    Ok(PromoteReport {
        stream: opts.stream.clone(),
        leader,
        previous_leader: previous,
        lsn: applied.0,
        seq,
    })
}
