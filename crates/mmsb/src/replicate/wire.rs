//! What a replicated bus puts in JetStream: subjects, names, message headers, and the payload
//! of a frames message. Everything read back from the server is checked here before use: a
//! stream is shared and any client with the permission can publish to it.
//!
//! For a stream `NAME` (1 to 64 of `A-Z a-z 0-9 _ -`):
//!
//! | what | where |
//! |---|---|
//! | log messages | stream `NAME`, subject `mmsb.NAME.log` |
//! | checkpoints | object store bucket `NAME-checkpoints`, objects `checkpoint-<LSN, 20 digits>` |
//! | the shipper lease | key-value bucket `NAME-lease`, key `shipper`: the shipper's token, or `promoted:<log id>` after a promotion |
//!
//! A log message has these headers (values ASCII):
//!
//! | header | value |
//! |---|---|
//! | `Nats-Msg-Id` | `<leader log id>:<first LSN>` (JetStream drops a re-sent copy) |
//! | `Mmsb-Kind` | `frames` or `promote` |
//! | `Mmsb-Leader` | the writing log's id, 32 hex digits ([`crate::logdir::LogId`]) |
//! | `Mmsb-Shipper` | the shipper run's token, 32 hex digits (`promote`: the promoter's) |
//! | `Mmsb-First-Lsn`, `Mmsb-Last-Lsn` | decimal LSNs of the first and last frame |
//!
//! A `frames` payload is frames `first..=last` exactly as the leader's log holds them
//! (`docs/mmsb-format.md` section 1), back to back, nothing else. A `promote` message has an
//! empty payload and `first = last` = the LSN the promoted replica had applied; frames after it
//! come from the new leader.

use crate::frame;
use crate::page::Lsn;

/// Header: `frames` or `promote`.
pub const HDR_KIND: &str = "Mmsb-Kind";
/// Header: the writing log's id.
pub const HDR_LEADER: &str = "Mmsb-Leader";
/// Header: the shipper run's token.
pub const HDR_SHIPPER: &str = "Mmsb-Shipper";
/// Header: first LSN.
pub const HDR_FIRST: &str = "Mmsb-First-Lsn";
/// Header: last LSN.
pub const HDR_LAST: &str = "Mmsb-Last-Lsn";
/// Key of the shipper lease in the lease bucket.
pub const LEASE_KEY: &str = "shipper";

/// The lease value a promotion leaves: the promoted log's shipper takes the lease over at once;
/// any other shipper (the old leader's) finds it taken.
#[must_use]
pub fn promoted_value(leader: &str) -> String {
    format!("promoted:{leader}")
}

/// Longest stream name.
pub const MAX_STREAM_NAME: usize = 64;

/// Checks a stream name: 1 to [`MAX_STREAM_NAME`] of `A-Z a-z 0-9 _ -` (it becomes part of
/// subjects and bucket names, where `.`, `*`, `>` and spaces mean something).
///
/// # Errors
/// The reason, for [`super::ReplicateError::BadName`].
pub fn check_stream_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > MAX_STREAM_NAME {
        return Err("longer than 64 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err("only A-Z a-z 0-9 _ - are allowed");
    }
    Ok(())
}

/// The subject of a stream's log messages.
#[must_use]
pub fn subject(stream: &str) -> String {
    format!("mmsb.{stream}.log")
}

/// The object store bucket of a stream's checkpoints.
#[must_use]
pub fn checkpoint_bucket(stream: &str) -> String {
    format!("{stream}-checkpoints")
}

/// The key-value bucket of a stream's shipper lease.
#[must_use]
pub fn lease_bucket(stream: &str) -> String {
    format!("{stream}-lease")
}

/// The object name of the checkpoint at `lsn`.
#[must_use]
pub fn checkpoint_object(lsn: Lsn) -> String {
    format!("checkpoint-{:020}", lsn.0)
}

/// The LSN of a checkpoint object's name, if it is one.
#[must_use]
pub fn parse_checkpoint_object(name: &str) -> Option<Lsn> {
    let d = name.strip_prefix("checkpoint-")?;
    (d.len() == 20 && d.bytes().all(|b| b.is_ascii_digit()))
        .then(|| d.parse().ok().map(Lsn))
        .flatten()
}

/// The kind of a log message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Frames of the leader's log.
    Frames,
    /// A replica was promoted at `first` (= `last`).
    Promote,
}

impl Kind {
    /// The header value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Frames => "frames",
            Kind::Promote => "promote",
        }
    }
}

/// The headers of a log message, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// `Mmsb-Kind`.
    pub kind: Kind,
    /// `Mmsb-Leader`, 32 lowercase hex digits.
    pub leader: String,
    /// `Mmsb-Shipper`, 32 lowercase hex digits.
    pub shipper: String,
    /// `Mmsb-First-Lsn`.
    pub first: Lsn,
    /// `Mmsb-Last-Lsn`.
    pub last: Lsn,
}

/// 32 lowercase hex digits.
fn is_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Meta {
    /// Reads and checks the headers through `get` (a header's first value).
    ///
    /// # Errors
    /// What is missing or malformed, one line.
    pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<Meta, String> {
        let need = |h: &str| get(h).ok_or_else(|| format!("no {h} header"));
        let kind = match need(HDR_KIND)?.as_str() {
            "frames" => Kind::Frames,
            "promote" => Kind::Promote,
            other => {
                return Err(format!(
                    "{HDR_KIND} {:?} is neither frames nor promote",
                    clip(other)
                ));
            }
        };
        let id = |h: &str| -> Result<String, String> {
            let v = need(h)?;
            if is_id(&v) {
                Ok(v)
            } else {
                Err(format!("{h} {:?} is not 32 hex digits", clip(&v)))
            }
        };
        let lsn = |h: &str| -> Result<Lsn, String> {
            let v = need(h)?;
            match v.parse::<u64>() {
                Ok(n) if n > 0 && v.bytes().all(|b| b.is_ascii_digit()) => Ok(Lsn(n)),
                _ => Err(format!("{h} {:?} is not an LSN", clip(&v))),
            }
        };
        let m = Meta {
            kind,
            leader: id(HDR_LEADER)?,
            shipper: id(HDR_SHIPPER)?,
            first: lsn(HDR_FIRST)?,
            last: lsn(HDR_LAST)?,
        };
        if m.last < m.first {
            return Err(format!(
                "{HDR_LAST} {} is before {HDR_FIRST} {}",
                m.last, m.first
            ));
        }
        if m.kind == Kind::Promote && m.first != m.last {
            return Err("a promote message names one LSN".into());
        }
        Ok(m)
    }

    /// The `Nats-Msg-Id` of this message.
    #[must_use]
    pub fn msg_id(&self) -> String {
        match self.kind {
            Kind::Frames => format!("{}:{}", self.leader, self.first.0),
            Kind::Promote => format!("promote:{}:{}", self.leader, self.first.0),
        }
    }

    /// The headers to publish, as (name, value) pairs (`Nats-Msg-Id` is set separately).
    #[must_use]
    pub fn headers(&self) -> [(&'static str, String); 5] {
        [
            (HDR_KIND, self.kind.as_str().to_owned()),
            (HDR_LEADER, self.leader.clone()),
            (HDR_SHIPPER, self.shipper.clone()),
            (HDR_FIRST, self.first.0.to_string()),
            (HDR_LAST, self.last.0.to_string()),
        ]
    }
}

/// At most 80 characters of a hostile value, for an error message.
fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Splits a frames payload into its frames by their `len` fields: the byte ranges of frames
/// `first..=last`. Checks only that the lengths tile the payload exactly and that there are
/// `last - first + 1` of them; each frame's own checks (CRC, fields, LSN) are the decoder's.
///
/// # Errors
/// What does not add up, one line.
pub fn split_frames(
    payload: &[u8],
    first: Lsn,
    last: Lsn,
) -> Result<Vec<std::ops::Range<usize>>, String> {
    let want = last.0 - first.0 + 1;
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < payload.len() {
        if out.len() as u64 == want {
            return Err(format!(
                "{} bytes after the {want} frames the headers announce",
                payload.len() - at
            ));
        }
        let lsn = first.0 + out.len() as u64;
        let Some(len) = frame::peek_len(&payload[at..]) else {
            return Err(format!("the payload ends inside the length of frame {lsn}"));
        };
        let len = len as usize;
        if !(frame::FRAME_HEADER_LEN..=frame::MAX_FRAME_LEN).contains(&len) {
            return Err(format!("frame {lsn} declares an impossible length {len}"));
        }
        if payload.len() - at < len {
            return Err(format!(
                "frame {lsn} declares {len} bytes; {} are left",
                payload.len() - at
            ));
        }
        out.push(at..at + len);
        at += len;
    }
    if out.len() as u64 != want {
        return Err(format!(
            "{} frames in the payload; the headers announce {want}",
            out.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta_of(pairs: &[(&str, &str)]) -> Result<Meta, String> {
        Meta::parse(|h| {
            pairs
                .iter()
                .find(|(k, _)| *k == h)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn headers_round_trip_and_hostile_values_are_refused() {
        let m = Meta {
            kind: Kind::Frames,
            leader: ID.into(),
            shipper: ID.into(),
            first: Lsn(3),
            last: Lsn(9),
        };
        let h = m.headers();
        let pairs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(meta_of(&pairs), Ok(m));
        for (k, bad) in [
            (HDR_KIND, "deltas"),
            (HDR_LEADER, "0123"),
            (HDR_SHIPPER, "ZZ23456789abcdef0123456789abcdef"),
            (HDR_FIRST, "+3"),
            (HDR_LAST, "2"),
            (HDR_FIRST, "0"),
        ] {
            let p: Vec<(&str, &str)> = pairs
                .iter()
                .map(|&(n, v)| if n == k { (n, bad) } else { (n, v) })
                .collect();
            assert!(meta_of(&p).is_err(), "{k}={bad} accepted");
        }
        assert!(meta_of(&pairs[1..]).unwrap_err().contains(HDR_KIND));
    }

    #[test]
    fn stream_names_are_restricted_to_subject_safe_bytes() {
        assert!(check_stream_name("doc_1-a").is_ok());
        for bad in ["", "a.b", "a*", "a>", "a b", &"x".repeat(65)] {
            assert!(check_stream_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn checkpoint_object_names_round_trip_only_in_their_exact_form() {
        assert_eq!(
            parse_checkpoint_object(&checkpoint_object(Lsn(42))),
            Some(Lsn(42))
        );
        assert_eq!(parse_checkpoint_object("checkpoint-42"), None);
        assert_eq!(
            parse_checkpoint_object("checkpoint-0000000000000000004x"),
            None
        );
    }

    #[test]
    fn split_frames_needs_lengths_that_tile_the_payload_exactly() {
        let mut one = vec![0u8; frame::FRAME_HEADER_LEN];
        one[..4].copy_from_slice(&(frame::FRAME_HEADER_LEN as u32).to_le_bytes());
        let two = [one.clone(), one.clone()].concat();
        assert_eq!(
            split_frames(&two, Lsn(5), Lsn(6)).unwrap(),
            vec![0..44, 44..88]
        );
        assert!(split_frames(&two, Lsn(5), Lsn(5)).is_err());
        assert!(split_frames(&two, Lsn(5), Lsn(7)).is_err());
        assert!(split_frames(&two[..80], Lsn(5), Lsn(6)).is_err());
        let mut bad = two.clone();
        bad[..4].copy_from_slice(&3u32.to_le_bytes());
        assert!(split_frames(&bad, Lsn(5), Lsn(6)).is_err());
    }
}
