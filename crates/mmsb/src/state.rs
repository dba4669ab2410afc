//! A set of pages detached from any log: what replay and restore produce, and what the live bus
//! keeps internally.

use std::path::Path;

use crate::checkpoint::Checkpoint;
use crate::delta::Delta;
use crate::error::{Error, Result};
use crate::frame::{Frame, FrameBody};
use crate::page::{Location, Lsn, MAX_PAGE_SIZE, Page, PageId};
use crate::tlog::{LogReader, Truncation};

/// Where a replay stops.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ReplayTarget {
    /// Every committed frame.
    End,
    /// Every frame with LSN `<=` this one.
    Lsn(Lsn),
    /// Up to and including the frame that brings `page` to `epoch`.
    PageEpoch(PageId, u64),
    /// Every frame with a timestamp `<=` this many nanoseconds since the Unix epoch.
    Timestamp(u64),
}

impl std::fmt::Display for ReplayTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayTarget::End => write!(f, "end"),
            ReplayTarget::Lsn(l) => write!(f, "{l}"),
            ReplayTarget::PageEpoch(p, e) => write!(f, "{p} epoch {e}"),
            ReplayTarget::Timestamp(t) => write!(f, "timestamp {t} ns"),
        }
    }
}

/// Pages indexed by id, with the LSN of the last frame applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pages: Vec<Option<Page>>,
    count: usize,
    bytes: usize,
    next_page_id: u64,
    last_lsn: Lsn,
}

impl State {
    /// An empty state (no pages, LSN 0).
    #[must_use]
    pub fn new() -> State {
        State {
            next_page_id: 1,
            ..State::default()
        }
    }

    /// The page `id`, if it exists.
    #[must_use]
    pub fn page(&self, id: PageId) -> Option<&Page> {
        self.pages.get(usize::try_from(id.0).ok()?)?.as_ref()
    }

    pub(crate) fn page_mut(&mut self, id: PageId) -> Option<&mut Page> {
        self.pages.get_mut(usize::try_from(id.0).ok()?)?.as_mut()
    }

    /// All pages in id order.
    pub fn pages(&self) -> impl Iterator<Item = &Page> {
        self.pages.iter().flatten()
    }

    /// Number of pages.
    #[must_use]
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when there is no page.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Sum of page sizes in bytes.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The id the next created page gets.
    #[must_use]
    pub fn next_page_id(&self) -> u64 {
        self.next_page_id
    }

    /// LSN of the last frame applied (or of the checkpoint restored).
    #[must_use]
    pub fn last_lsn(&self) -> Lsn {
        self.last_lsn
    }

    pub(crate) fn set_last_lsn(&mut self, lsn: Lsn) {
        self.last_lsn = lsn;
    }

    /// `(id, epoch, XXH3-64 of the bytes)` of every page, in id order.
    #[must_use]
    pub fn hashes(&self) -> Vec<(PageId, u64, u64)> {
        self.pages().map(|p| (p.id, p.epoch, p.hash())).collect()
    }

    pub(crate) fn insert(&mut self, page: Page) -> Result<()> {
        let i = usize::try_from(page.id.0).map_err(|_| Error::NoSuchPage(page.id))?;
        if i >= self.pages.len() {
            self.pages.resize_with(i + 1, || None);
        }
        if self.pages[i].is_some() {
            return Err(Error::PageExists(page.id));
        }
        self.count += 1;
        self.bytes += page.size();
        self.next_page_id = self.next_page_id.max(page.id.0 + 1);
        self.pages[i] = Some(page);
        Ok(())
    }

    /// Creates an empty page with a chosen id (used by replay; the bus assigns ids itself).
    ///
    /// # Errors
    /// [`Error::InvalidPageSize`], [`Error::PageExists`].
    pub fn create(&mut self, id: PageId, size: usize, location: Location) -> Result<()> {
        if size == 0 || size > MAX_PAGE_SIZE {
            return Err(Error::InvalidPageSize {
                size,
                max: MAX_PAGE_SIZE,
            });
        }
        if id.0 == 0 {
            return Err(Error::NoSuchPage(id));
        }
        self.insert(Page::new(id, size, location))
    }

    /// Applies a delta and bumps the page's epoch by one.
    ///
    /// # Errors
    /// [`Error::NoSuchPage`] and the errors of [`Delta::apply`]; the page is unchanged on error.
    pub fn apply(&mut self, delta: &Delta) -> Result<()> {
        let page = self
            .page_mut(delta.page)
            .ok_or(Error::NoSuchPage(delta.page))?;
        delta.apply(&mut page.bytes)?;
        page.epoch += 1;
        page.stale = false;
        Ok(())
    }

    /// Applies one log frame: creates a page, applies a delta (checking that the frame's epoch is
    /// the page's next epoch), sets or removes a metadata key; commit frames change nothing but
    /// the LSN.
    ///
    /// # Errors
    /// [`Error::ReplayMismatch`] when the frame does not fit the state (unknown page, wrong epoch,
    /// a delta that does not fit the page, a page created twice).
    pub fn apply_frame(&mut self, frame: &Frame) -> Result<()> {
        let mismatch = |reason: String| Error::ReplayMismatch {
            lsn: frame.lsn,
            page: frame.page,
            reason,
        };
        match &frame.body {
            FrameBody::Delta(body) => {
                let page = self
                    .page_mut(frame.page)
                    .ok_or_else(|| mismatch("delta for a page that does not exist".into()))?;
                if frame.epoch != page.epoch + 1 {
                    return Err(mismatch(format!(
                        "frame epoch {} but the page is at epoch {}",
                        frame.epoch, page.epoch
                    )));
                }
                let delta = Delta {
                    page: frame.page,
                    lsn: frame.lsn,
                    epoch: frame.epoch,
                    timestamp_ns: frame.timestamp_ns,
                    source: frame.source,
                    body: body.clone(),
                };
                delta
                    .check(page.bytes.len())
                    .map_err(|e| mismatch(e.to_string()))?;
                delta.apply_unchecked(&mut page.bytes);
                page.epoch = frame.epoch;
                page.stale = false;
            }
            FrameBody::CreatePage { size, location } => {
                self.create(frame.page, *size as usize, *location)
                    .map_err(|e| mismatch(e.to_string()))?;
            }
            FrameBody::Metadata { key, value } => {
                let page = self
                    .page_mut(frame.page)
                    .ok_or_else(|| mismatch("metadata for a page that does not exist".into()))?;
                match value {
                    Some(v) => {
                        page.metadata.insert(key.clone(), v.clone());
                    }
                    None => {
                        page.metadata.remove(key);
                    }
                }
            }
            FrameBody::Commit => {}
        }
        self.last_lsn = frame.lsn;
        Ok(())
    }

    /// The state a checkpoint holds.
    ///
    /// # Errors
    /// [`Error::PageExists`] if the checkpoint lists a page twice.
    pub fn from_checkpoint(ckpt: Checkpoint) -> Result<State> {
        let mut s = State::new();
        for page in ckpt.pages {
            s.insert(page)?;
        }
        s.next_page_id = s.next_page_id.max(ckpt.next_page_id);
        s.last_lsn = ckpt.lsn;
        Ok(s)
    }

    /// The state the log directory `dir` holds: the newest usable checkpoint plus the committed
    /// log after it, or the whole log (the rule is in [`crate::restore`]; the writer uses the
    /// same). Reads only; takes no lock. [`State::restore_reporting`] also says what was used
    /// and what was left out.
    ///
    /// # Errors
    /// [`Error::NotALog`]; [`Error::StateUnrecoverable`] when segments were pruned and no usable
    /// checkpoint covers them, or a checkpoint covers more than the log holds; I/O errors,
    /// [`Error::CorruptFrame`] / [`Error::DamagedTail`] for a damaged log,
    /// [`Error::ReplayMismatch`] for a log that does not fit its checkpoint.
    pub fn restore(dir: &Path) -> Result<State> {
        Ok(State::restore_reporting(dir)?.0)
    }

    /// Replays the log at `path` (a directory or one segment file) up to `target`. For a
    /// directory, starts from the newest usable checkpoint at or below an LSN target (or, for
    /// [`ReplayTarget::End`], the newest usable one: the same state as [`State::restore`]);
    /// page-epoch and timestamp targets start from the empty state. A segment file is replayed
    /// from the empty state.
    ///
    /// # Errors
    /// As [`State::restore`]; [`Error::TargetBeyondLog`] for a target past the log's end.
    pub fn replay(path: &Path, target: ReplayTarget) -> Result<State> {
        Ok(State::replay_reporting(path, target)?.0)
    }

    /// Applies the committed frames of the log at `path` after this state's LSN, up to `target`.
    ///
    /// # Errors
    /// As [`State::replay`].
    pub fn replay_log(self, path: &Path, target: ReplayTarget) -> Result<State> {
        Ok(self.replay_log_reporting(path, target)?.0)
    }

    /// [`State::replay_log`], also returning what the reader ignored after the last committed
    /// frame (when the replay reached the end of the log).
    ///
    /// # Errors
    /// As [`State::replay_log`]; [`Error::StateUnrecoverable`] when this state's LSN is past the
    /// end of the log (a checkpoint covering frames the log lost).
    pub fn replay_log_reporting(
        mut self,
        path: &Path,
        target: ReplayTarget,
    ) -> Result<(State, Option<Truncation>)> {
        let reader = LogReader::open(path)?;
        let start = self.last_lsn.next();
        let base = self.last_lsn;
        let mut expected = start;
        let mut frames = reader.frames_from(start)?;
        let mut reached_end = true;
        for item in frames.by_ref() {
            let at = item?;
            let f = &at.frame;
            if f.lsn != expected {
                return Err(Error::ReplayMismatch {
                    lsn: f.lsn,
                    page: f.page,
                    reason: format!(
                        "expected {expected} next (the log does not continue the base state)"
                    ),
                });
            }
            expected = f.lsn.next();
            match target {
                ReplayTarget::Lsn(l) if f.lsn > l => {
                    reached_end = false;
                    break;
                }
                ReplayTarget::Timestamp(t)
                    if f.timestamp_ns > t && !matches!(f.body, FrameBody::Commit) =>
                {
                    reached_end = false;
                    break;
                }
                _ => {}
            }
            self.apply_frame(f)?;
            if let ReplayTarget::PageEpoch(p, e) = target
                && f.page == p
                && matches!(f.body, FrameBody::Delta(_))
                && f.epoch >= e
            {
                return Ok((self, None));
            }
        }
        let log_end = frames.last_committed().unwrap_or(Lsn::ZERO);
        let tail = frames.tail().cloned();
        drop(frames);
        if reached_end && base > log_end && path.is_dir() {
            return Err(Error::StateUnrecoverable {
                dir: path.to_path_buf(),
                reason: format!(
                    "a checkpoint covers {base} but the log ends at {log_end}: committed frames it covers are missing from the log"
                ),
            });
        }
        match target {
            ReplayTarget::Lsn(l) if l > self.last_lsn => Err(Error::TargetBeyondLog {
                target: target.to_string(),
                last: self.last_lsn,
            }),
            ReplayTarget::PageEpoch(..) => Err(Error::TargetBeyondLog {
                target: target.to_string(),
                last: self.last_lsn,
            }),
            _ => Ok((self, if reached_end { tail } else { None })),
        }
    }
}

/// How the page sets of two states differ (what [`diff`] refuses with [`Error::DiffShape`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageSetDiff {
    /// Pages only in the first state, in id order.
    pub only_in_a: Vec<PageId>,
    /// Pages only in the second state, in id order.
    pub only_in_b: Vec<PageId>,
    /// Pages in both with different sizes: `(id, size in a, size in b)`.
    pub resized: Vec<(PageId, usize, usize)>,
}

impl PageSetDiff {
    /// True when both states have the same pages with the same sizes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.only_in_a.is_empty() && self.only_in_b.is_empty() && self.resized.is_empty()
    }
}

/// How the page ids and sizes of `a` and `b` differ.
#[must_use]
pub fn page_set_diff(a: &State, b: &State) -> PageSetDiff {
    let mut d = PageSetDiff::default();
    for i in 0..a.pages.len().max(b.pages.len()) {
        let pa = a.pages.get(i).and_then(Option::as_ref);
        let pb = b.pages.get(i).and_then(Option::as_ref);
        match (pa, pb) {
            (Some(x), Some(y)) if x.size() != y.size() => {
                d.resized.push((x.id, x.size(), y.size()))
            }
            (Some(x), None) => d.only_in_a.push(x.id),
            (None, Some(y)) => d.only_in_b.push(y.id),
            _ => {}
        }
    }
    d
}

/// The deltas that turn `a` into `b`: one per page whose bytes differ, in page order, each built
/// by [`Delta::diff`] (so sparse unless most of the page changed). Applying them to `a` gives
/// `b`'s bytes; epochs and metadata are not compared.
///
/// # Errors
/// [`Error::DiffShape`] when the two states do not have the same page ids with the same sizes.
pub fn diff(a: &State, b: &State) -> Result<Vec<Delta>> {
    let mut out = Vec::new();
    let n = a.pages.len().max(b.pages.len());
    for i in 0..n {
        let pa = a.pages.get(i).and_then(Option::as_ref);
        let pb = b.pages.get(i).and_then(Option::as_ref);
        match (pa, pb) {
            (None, None) => {}
            (Some(x), Some(y)) if x.size() == y.size() => {
                if let Some(d) = Delta::diff(x.id, &x.bytes, &y.bytes) {
                    out.push(d);
                }
            }
            (Some(x), _) => return Err(Error::DiffShape { page: x.id }),
            (None, Some(y)) => return Err(Error::DiffShape { page: y.id }),
        }
    }
    Ok(out)
}
