//! What a log holds, counted in one pass: [`LogSummary`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{FrameAt, LogReader, Truncation};
use crate::delta::Body;
use crate::error::Result;
use crate::frame::FrameBody;
use crate::page::{Lsn, PageId};

/// What the frames of one page add up to in a [`LogSummary`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageTally {
    /// Delta frames for the page.
    pub deltas: u64,
    /// Of those, dense deltas (the whole page).
    pub dense: u64,
    /// Changed bytes the deltas carry (dense: the page; sparse: the masked bytes).
    pub bytes: u64,
    /// Epoch after the newest delta (0 when the page only has a CreatePage frame).
    pub last_epoch: u64,
}

/// Counts over the frames a [`LogReader`] yields: committed frames only, or uncommitted ones
/// too after [`LogReader::with_uncommitted`]. Built by [`LogReader::summary`] (or, while
/// visiting each frame, [`LogReader::summary_with`]); reads only, like the reader.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogSummary {
    /// Segment files, in LSN order, with the LSN of their first frame.
    pub segments: Vec<(Lsn, PathBuf)>,
    /// Frames read.
    pub frames: u64,
    /// Their encoded size in bytes (headers, bodies and checksums).
    pub frame_bytes: u64,
    /// Changed bytes carried by Delta frames (dense: whole pages; sparse: masked bytes).
    pub payload_bytes: u64,
    /// LSN of the first frame (`None`: no frame).
    pub first_lsn: Option<Lsn>,
    /// LSN of the last frame (`None`: no frame).
    pub last_lsn: Option<Lsn>,
    /// Timestamp of the first frame, nanoseconds since the Unix epoch.
    pub first_timestamp_ns: Option<u64>,
    /// Timestamp of the last frame, nanoseconds since the Unix epoch (0: no frame).
    pub last_timestamp_ns: u64,
    /// Frames by kind name ([`crate::frame::FrameKind::name`]).
    pub kinds: BTreeMap<&'static str, u64>,
    /// Delta frames by source name ([`crate::Source::name`]).
    pub delta_sources: BTreeMap<&'static str, u64>,
    /// Per page with a Delta or CreatePage frame, in page order.
    pub pages: BTreeMap<PageId, PageTally>,
    /// What the reader ignored after the last frame it yielded (a torn write, an uncommitted
    /// batch), as [`Frames::tail`](super::Frames::tail) reports it.
    pub tail: Option<Truncation>,
}

/// Changed bytes a delta body carries.
fn changed_bytes(body: &Body) -> usize {
    match body {
        Body::Dense(b) => b.len(),
        Body::Sparse { payload, .. } => payload.len(),
    }
}

impl LogSummary {
    /// Counts one frame in.
    pub fn record(&mut self, at: &FrameAt) {
        let f = &at.frame;
        self.first_lsn.get_or_insert(f.lsn);
        self.last_lsn = Some(f.lsn);
        self.first_timestamp_ns.get_or_insert(f.timestamp_ns);
        self.last_timestamp_ns = f.timestamp_ns;
        self.frames += 1;
        self.frame_bytes += u64::from(at.len);
        *self.kinds.entry(f.kind().name()).or_default() += 1;
        match &f.body {
            FrameBody::Delta(body) => {
                *self.delta_sources.entry(f.source.name()).or_default() += 1;
                let t = self.pages.entry(f.page).or_default();
                t.deltas += 1;
                if matches!(body, Body::Dense(_)) {
                    t.dense += 1;
                }
                let n = changed_bytes(body) as u64;
                t.bytes += n;
                t.last_epoch = f.epoch;
                self.payload_bytes += n;
            }
            FrameBody::CreatePage { .. } => {
                self.pages.entry(f.page).or_default();
            }
            _ => {}
        }
    }
}

impl FrameAt {
    /// Changed bytes of a Delta frame (`None` for other kinds).
    #[must_use]
    pub fn changed_bytes(&self) -> Option<usize> {
        match &self.frame.body {
            FrameBody::Delta(b) => Some(changed_bytes(b)),
            _ => None,
        }
    }
}

impl LogReader {
    /// A [`LogSummary`] of the frames this reader yields.
    ///
    /// # Errors
    /// As [`LogReader::segments`] and the frame iterator ([`crate::Error::CorruptFrame`],
    /// [`crate::Error::DamagedTail`], I/O errors).
    pub fn summary(&self) -> Result<LogSummary> {
        self.summary_with(|_| {})
    }

    /// [`LogReader::summary`], calling `visit` with every frame as it is counted (one pass for
    /// a tool that also lists frames).
    ///
    /// # Errors
    /// As [`LogReader::summary`].
    pub fn summary_with(&self, mut visit: impl FnMut(&FrameAt)) -> Result<LogSummary> {
        let mut s = LogSummary {
            segments: self.segments()?,
            ..LogSummary::default()
        };
        let mut iter = self.frames()?;
        for item in iter.by_ref() {
            let at = item?;
            s.record(&at);
            visit(&at);
        }
        s.tail = iter.tail().cloned();
        Ok(s)
    }
}
