//! The JetStream side shared by the shipper, the follower and promotion: connecting, the
//! stream, reading a message's checked headers, finding the message that holds an LSN, the
//! checkpoint bucket and the shipper lease.

use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;

use super::wire::{self, Meta};
use super::{ReplicateError, Result};
use crate::page::Lsn;

/// A connected client and JetStream context, with the names it works on.
pub(super) struct Conn {
    pub(super) url: String,
    pub(super) name: String,
    pub(super) js: jetstream::Context,
    pub(super) client: async_nats::Client,
}

/// A message read back from the stream, headers checked.
pub(super) struct Stored {
    pub(super) seq: u64,
    pub(super) meta: Meta,
    pub(super) payload: Bytes,
}

impl Conn {
    /// Connects to `url` (retrying for up to `timeout`), reconnecting forever afterwards.
    pub(super) async fn connect(url: &str, name: &str, timeout: Duration) -> Result<Conn> {
        wire::check_stream_name(name).map_err(|reason| ReplicateError::BadName {
            name: name.to_owned(),
            reason,
        })?;
        let opts = async_nats::ConnectOptions::new()
            .connection_timeout(timeout)
            .request_timeout(Some(timeout))
            .max_reconnects(None)
            // Quick retries: a restarted server on loopback is back in well under a second.
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((50 * attempts as u64).min(1000))
            });
        let deadline = tokio::time::Instant::now() + timeout;
        let client = loop {
            match opts.clone().connect(url).await {
                Ok(c) => break c,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(ReplicateError::Nats {
                        url: url.to_owned(),
                        what: "connecting".into(),
                        reason: e.to_string(),
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let mut js = jetstream::new(client.clone());
        js.set_timeout(timeout);
        Ok(Conn {
            url: url.to_owned(),
            name: name.to_owned(),
            js,
            client,
        })
    }

    pub(super) fn err(&self, what: impl Into<String>, e: impl std::fmt::Display) -> ReplicateError {
        ReplicateError::Nats {
            url: self.url.clone(),
            what: what.into(),
            reason: e.to_string(),
        }
    }

    pub(super) fn hostile(&self, seq: u64, reason: impl Into<String>) -> ReplicateError {
        ReplicateError::Hostile {
            stream: self.name.clone(),
            seq,
            reason: reason.into(),
        }
    }

    /// The stream, created when `create` and missing (file storage, direct get allowed, one
    /// subject). An existing stream must have exactly our subject.
    pub(super) async fn stream(&self, create: bool) -> Result<stream::Stream> {
        let subject = wire::subject(&self.name);
        let s = if create {
            self.js
                .get_or_create_stream(stream::Config {
                    name: self.name.clone(),
                    subjects: vec![subject.clone()],
                    storage: stream::StorageType::File,
                    allow_direct: true,
                    duplicate_window: Duration::from_secs(120),
                    ..Default::default()
                })
                .await
                .map_err(|e| self.err(format!("creating stream {}", self.name), e))?
        } else {
            self.js
                .get_stream(&self.name)
                .await
                .map_err(|e| self.err(format!("opening stream {}", self.name), e))?
        };
        let subjects = &s.cached_info().config.subjects;
        if subjects.as_slice() != std::slice::from_ref(&subject) {
            return Err(ReplicateError::Fenced {
                stream: self.name.clone(),
                reason: format!(
                    "the stream exists with subjects {subjects:?}, not [{subject:?}]: it is not an MMSB log stream"
                ),
            });
        }
        Ok(s)
    }

    /// First and last sequence of the stream now (`last == 0`: empty, and `first` is then the
    /// sequence the next message gets).
    pub(super) async fn bounds(&self, s: &stream::Stream) -> Result<(u64, u64)> {
        let info = s
            .get_info()
            .await
            .map_err(|e| self.err(format!("reading stream {}", self.name), e))?;
        Ok((info.state.first_sequence, info.state.last_sequence))
    }

    /// Message `seq`, headers checked.
    pub(super) async fn get(&self, s: &stream::Stream, seq: u64) -> Result<Stored> {
        let m = s
            .get_raw_message(seq)
            .await
            .map_err(|e| self.err(format!("reading message {seq} of {}", self.name), e))?;
        let meta = Meta::parse(|h| m.headers.get(h).map(|v| v.as_str().to_owned()))
            .map_err(|r| self.hostile(seq, r))?;
        Ok(Stored {
            seq,
            meta,
            payload: m.payload,
        })
    }

    /// The last message, or `None` for an empty stream.
    pub(super) async fn last(&self, s: &stream::Stream) -> Result<Option<Stored>> {
        let (_, last) = self.bounds(s).await?;
        if last == 0 {
            return Ok(None);
        }
        Ok(Some(self.get(s, last).await?))
    }

    /// The sequence of the first message whose last LSN is at least `lsn`, by binary search
    /// between the stream's first and last sequence (last LSNs never decrease along the
    /// stream); `last + 1` when every message is older. Also returns that message's first LSN.
    pub(super) async fn find(&self, s: &stream::Stream, lsn: Lsn) -> Result<(u64, Option<Lsn>)> {
        let (first, last) = self.bounds(s).await?;
        if last == 0 || first > last {
            return Ok((last + 1, None));
        }
        let (mut lo, mut hi) = (first, last + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.get(s, mid).await?.meta.last >= lsn {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        if lo > last {
            return Ok((lo, None));
        }
        Ok((lo, Some(self.get(s, lo).await?.meta.first)))
    }

    /// The checkpoint bucket, created when `create` (`None` when missing and not created).
    pub(super) async fn checkpoints(
        &self,
        create: bool,
    ) -> Result<Option<object_store::ObjectStore>> {
        let bucket = wire::checkpoint_bucket(&self.name);
        match self.js.get_object_store(&bucket).await {
            Ok(b) => Ok(Some(b)),
            Err(_) if create => self
                .js
                .create_object_store(object_store::Config {
                    bucket: bucket.clone(),
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map(Some)
                .map_err(|e| self.err(format!("creating object store {bucket}"), e)),
            Err(_) => Ok(None),
        }
    }

    /// The checkpoint objects in the bucket, by LSN, oldest first (other objects are ignored).
    pub(super) async fn list_checkpoints(
        &self,
        b: &object_store::ObjectStore,
    ) -> Result<Vec<(Lsn, String)>> {
        let mut list = b
            .list()
            .await
            .map_err(|e| self.err("listing checkpoints", e))?;
        let mut out = Vec::new();
        while let Some(o) = list.next().await {
            let o = o.map_err(|e| self.err("listing checkpoints", e))?;
            if o.deleted {
                continue;
            }
            if let Some(lsn) = wire::parse_checkpoint_object(&o.name) {
                out.push((lsn, o.name));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Reads checkpoint object `name`, refusing more than `max` bytes (the object store checks
    /// its digest).
    pub(super) async fn read_checkpoint(
        &self,
        b: &object_store::ObjectStore,
        name: &str,
        max: u64,
    ) -> Result<Vec<u8>> {
        let mut o = b
            .get(name)
            .await
            .map_err(|e| self.err(format!("reading checkpoint {name}"), e))?;
        let size = o.info().size as u64;
        if size > max {
            return Err(ReplicateError::Gap {
                stream: self.name.clone(),
                reason: format!("checkpoint {name} is {size} bytes, more than the limit of {max}"),
            });
        }
        let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        (&mut o)
            .take(max + 1)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| self.err(format!("reading checkpoint {name}"), e))?;
        if buf.len() as u64 > max {
            return Err(ReplicateError::Gap {
                stream: self.name.clone(),
                reason: format!("checkpoint {name} is more than the limit of {max} bytes"),
            });
        }
        Ok(buf)
    }

    /// The lease bucket, created when missing (entries expire `ttl` after their last write).
    pub(super) async fn lease_bucket(&self, ttl: Duration) -> Result<kv::Store> {
        let bucket = wire::lease_bucket(&self.name);
        match self.js.get_key_value(&bucket).await {
            Ok(s) => Ok(s),
            Err(_) => self
                .js
                .create_key_value(kv::Config {
                    bucket: bucket.clone(),
                    history: 1,
                    max_age: ttl,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| self.err(format!("creating key-value bucket {bucket}"), e)),
        }
    }
}
