//! The live bus: pages, the write-ahead log, the dependency graph and propagation (the last
//! two in `propagate`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checkpoint::{self, CheckpointInfo};
use crate::delta::{Body, Delta, Source};
use crate::error::{Error, Result};
use crate::events::{Event, EventKind, Subscribers, SubscriptionId};
use crate::frame::BodyRef;
use crate::graph::Graph;
use crate::logdir::DirKind;
use crate::page::{Location, Lsn, MAX_PAGE_SIZE, Page, PageId};
use crate::restore;
use crate::state::{ReplayTarget, State};
use crate::stats::{Stats, Timings, record};
use crate::tlog::{DEFAULT_LOCK_TIMEOUT, Durability, LogConfig, RecoveryReport, TLog};

mod metrics;
mod propagate;
mod replica;

pub use metrics::{METRICS_PUBLISH_INTERVAL, MetricsHandle, Published};

/// When derived pages are recomputed.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum PropagationMode {
    /// Every write outside an explicit batch is its own commit and runs its own propagation
    /// wave before the call returns.
    #[default]
    Immediate,
    /// Writes accumulate in an open batch; [`Mmsb::commit`] runs one propagation wave for all of
    /// them and commits them together. A batch is always open in this mode.
    Deferred,
}

/// Configuration of [`Mmsb::start`].
#[derive(Clone, Debug)]
pub struct Config {
    /// The log directory (segments, checkpoints, the writer lock, `LOGID`). Created if missing
    /// (unless [`field@Config::create`] is false).
    pub dir: PathBuf,
    /// What a commit waits for (see [`Durability`]).
    pub durability: Durability,
    /// When derived pages are recomputed.
    pub propagation: PropagationMode,
    /// A segment is closed and a new one started past this many bytes.
    pub segment_bytes: u64,
    /// Size of the in-process log buffer, bytes.
    pub buffer_bytes: usize,
    /// Record latency histograms (two clock reads per measured step, about 40 ns).
    pub timings: bool,
    /// After a checkpoint, delete log segments it makes unnecessary.
    pub prune_after_checkpoint: bool,
    /// How long [`Mmsb::start`] waits for the directory's writer lock while another open file
    /// holds it, before [`Error::Locked`] (default [`DEFAULT_LOCK_TIMEOUT`], 1 s; see
    /// [`LogConfig::lock_timeout`]). [`Duration::ZERO`] fails at once.
    pub lock_timeout: Duration,
    /// Create a new log when `dir` is missing or empty (default true; see
    /// [`LogConfig::create`]). A directory that holds something other than a log is never
    /// turned into one.
    pub create: bool,
}

impl Config {
    /// Defaults: `Durability::Flush`, immediate propagation, 64 MiB segments, 1 MiB buffer,
    /// timings on, no pruning, a 1 s lock timeout ([`DEFAULT_LOCK_TIMEOUT`]).
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>) -> Config {
        Config {
            dir: dir.into(),
            durability: Durability::Flush,
            propagation: PropagationMode::Immediate,
            segment_bytes: 64 << 20,
            buffer_bytes: 1 << 20,
            timings: true,
            prune_after_checkpoint: false,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            create: true,
        }
    }

    /// Sets the durability mode.
    #[must_use]
    pub fn durability(mut self, d: Durability) -> Config {
        self.durability = d;
        self
    }

    /// Sets the propagation mode.
    #[must_use]
    pub fn propagation(mut self, p: PropagationMode) -> Config {
        self.propagation = p;
        self
    }

    /// Sets how long [`Mmsb::start`] waits for the writer lock ([`field@Config::lock_timeout`];
    /// `Duration::ZERO`: fail at once when another writer has it).
    #[must_use]
    pub fn lock_timeout(mut self, t: Duration) -> Config {
        self.lock_timeout = t;
        self
    }
}

/// What [`Mmsb::start`] found and did.
#[derive(Debug)]
pub struct StartReport {
    /// The log's recovery (torn or uncommitted tail truncated, if any).
    pub log: RecoveryReport,
    /// LSN of the checkpoint the state was restored from (`None`: replayed from empty).
    pub checkpoint_lsn: Option<Lsn>,
    /// Checkpoints skipped because they failed their checks.
    pub skipped_checkpoints: Vec<(PathBuf, Error)>,
    /// Pages after restore.
    pub pages: usize,
}

/// What one commit did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Commit {
    /// LSN of the frame that made the commit durable-to-be (the last frame of the commit;
    /// `Lsn::ZERO` for an empty batch).
    pub lsn: Lsn,
    /// Deltas written by the application in this commit.
    pub deltas: usize,
    /// Deltas written by propagation in this commit.
    pub propagated: usize,
}

/// A recompute function: parents' bytes in edge order, and the child's bytes to overwrite (they
/// hold the child's current contents on entry).
pub type RecomputeFn = Arc<dyn Fn(&[&[u8]], &mut [u8]) + Send + Sync>;

/// A recompute function that copies its first parent (the parent must be the child's size; a
/// shorter parent fills the start, a longer one is cut).
pub fn passthrough() -> impl Fn(&[&[u8]], &mut [u8]) + Send + Sync + 'static {
    |parents: &[&[u8]], out: &mut [u8]| {
        if let Some(p) = parents.first() {
            let n = p.len().min(out.len());
            out[..n].copy_from_slice(&p[..n]);
        }
    }
}

/// A recompute function that maps every byte of the first parent through `f`, position by
/// position (bytes past the parent's length are left as they are).
pub fn map(
    f: impl Fn(u8) -> u8 + Send + Sync + 'static,
) -> impl Fn(&[&[u8]], &mut [u8]) + Send + Sync + 'static {
    move |parents: &[&[u8]], out: &mut [u8]| {
        if let Some(p) = parents.first() {
            for (o, &b) in out.iter_mut().zip(p.iter()) {
                *o = f(b);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    deltas: u64,
    delta_bytes: u64,
    propagation_deltas: u64,
    propagation_delta_bytes: u64,
    commits: u64,
    waves: u64,
    recomputes: u64,
    cutoffs: u64,
    stale_marks: u64,
}

/// The memory-mapped state bus: see the crate documentation for the model and invariants.
///
/// One `Mmsb` owns its log directory (an exclusive lock); methods take `&mut self`, so share it
/// between threads behind a `Mutex`.
///
/// A bus opened with [`Mmsb::start_replica`] is a **replica** (see [`crate::replica`]): every
/// method that writes (`create_page*`, `set_metadata`, `update_page`, `write_range`,
/// `apply_delta`, `begin_batch`) returns [`Error::ReadOnly`]; it changes only by
/// [`Mmsb::apply_replicated`] until [`Mmsb::promote`].
pub struct Mmsb {
    state: State,
    log: TLog,
    graph: Graph,
    recompute: Vec<Option<RecomputeFn>>,
    subs: Subscribers,
    timings: Timings,
    counters: Counters,
    config: Config,
    /// A batch is open (explicitly, or always in deferred mode).
    in_batch: bool,
    explicit_batch: bool,
    /// Pages written by the application in the open batch (propagation roots).
    batch_roots: Vec<PageId>,
    batch_frames: usize,
    batch_deltas: usize,
    /// Pages whose bytes changed in the current commit (for `PageChanged`), when wanted.
    changed: Vec<PageId>,
    /// Per-page wave stamp: queued in wave `n` when `stamp[id] == n`.
    stamp: Vec<u64>,
    wave: u64,
    scratch: Vec<u8>,
    poisoned: Option<String>,
    /// Opened with [`Mmsb::start_replica`] and not promoted: user writes are refused.
    replica: bool,
    /// Log error and recovery counts, and the stats slot a metrics server reads.
    metrics: metrics::BusMetrics,
}

impl std::fmt::Debug for Mmsb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mmsb")
            .field("dir", &self.config.dir)
            .field("pages", &self.state.len())
            .field("last_lsn", &self.log.last_lsn())
            .field("graph_edges", &self.graph.edge_count())
            .field("in_batch", &self.in_batch)
            .finish_non_exhaustive()
    }
}

fn elapsed_ns(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

impl Mmsb {
    /// Opens (or creates) the log in `config.dir`, recovers it (a torn or uncommitted tail is
    /// truncated and reported), and restores the state: the newest usable checkpoint plus the
    /// committed log suffix. The dependency graph and recompute functions are code, not data:
    /// register them again after a restart.
    ///
    /// The directory's writer lock is waited for as [`TLog::open`] describes: while another
    /// open file holds it (another bus, or a child process forked while one was open and not
    /// yet `exec`ed), `start` retries for up to [`field@Config::lock_timeout`] (default 1 s).
    ///
    /// # Errors
    /// [`Error::IsReplica`] for a replica's directory ([`Mmsb::start_replica`] opens it);
    /// [`Error::Locked`] when another writer still has the directory after the lock timeout;
    /// [`Error::CorruptFrame`] for a log corrupt in the middle and [`Error::DamagedTail`] for a
    /// damaged last frame (nothing is modified in either case); [`Error::NotALog`] for a
    /// directory that holds something else (or an empty one without [`field@Config::create`]);
    /// [`Error::StateUnrecoverable`] when pruned segments are covered by no usable checkpoint
    /// (the rule readers use too: [`crate::restore`]); [`Error::ReplayMismatch`] when the log
    /// does not fit its checkpoint; I/O errors.
    pub fn start(config: Config) -> Result<Mmsb> {
        Ok(Mmsb::start_reporting(config)?.0)
    }

    /// [`Mmsb::start`], also returning what recovery found.
    ///
    /// # Errors
    /// As [`Mmsb::start`].
    pub fn start_reporting(config: Config) -> Result<(Mmsb, StartReport)> {
        if crate::replica::is_replica(&config.dir)? {
            return Err(Error::IsReplica {
                dir: config.dir.clone(),
            });
        }
        Mmsb::open(config, false)
    }

    /// Opens the log and restores the state; `replica` only sets the mode (the marker file is
    /// the callers' business).
    fn open(config: Config, replica: bool) -> Result<(Mmsb, StartReport)> {
        let mut lc = LogConfig::new(&config.dir);
        lc.durability = config.durability;
        lc.segment_bytes = config.segment_bytes;
        lc.buffer_bytes = config.buffer_bytes;
        lc.lock_timeout = config.lock_timeout;
        lc.create = config.create;
        let (log, recovery) = TLog::open(lc)?;
        // The same rule as readers (`crate::restore`): the newest usable checkpoint of this log.
        let kind = DirKind::Log(log.identity());
        let base = restore::choose_base(&config.dir, &kind, None)?;
        let skipped = base.skipped;
        let checkpoint_lsn = base.checkpoint.as_ref().map(|(c, _)| c.lsn);
        let base = match base.checkpoint {
            Some((c, _)) => State::from_checkpoint(c)?,
            None => State::new(),
        };
        let state = base.replay_log(&config.dir, ReplayTarget::End)?;
        let metrics = metrics::BusMetrics::new(&recovery);
        let report = StartReport {
            log: recovery,
            checkpoint_lsn,
            skipped_checkpoints: skipped,
            pages: state.len(),
        };
        let in_batch = !replica && config.propagation == PropagationMode::Deferred;
        let timings = Timings::new(config.timings);
        let bus = Mmsb {
            state,
            log,
            graph: Graph::new(),
            recompute: Vec::new(),
            subs: Subscribers::default(),
            timings,
            counters: Counters::default(),
            config,
            in_batch,
            explicit_batch: false,
            batch_roots: Vec::new(),
            batch_frames: 0,
            batch_deltas: 0,
            changed: Vec::new(),
            stamp: Vec::new(),
            wave: 0,
            scratch: Vec::new(),
            poisoned: None,
            replica,
            metrics,
        };
        Ok((bus, report))
    }

    /// Commits an open deferred batch, writes and fsyncs the log, and releases the lock.
    ///
    /// # Errors
    /// The error of the last commit or of the final sync.
    pub fn stop(mut self) -> Result<()> {
        if self.config.propagation == PropagationMode::Deferred && self.batch_frames > 0 {
            self.commit()?;
        }
        self.publish_before_stop();
        self.log.close()
    }

    fn check_poison(&self) -> Result<()> {
        match &self.poisoned {
            Some(why) => Err(Error::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    /// [`Mmsb::check_poison`], and refuses writes on a replica.
    fn check_writable(&self) -> Result<()> {
        self.check_poison()?;
        if self.replica {
            return Err(Error::ReadOnly {
                dir: self.config.dir.clone(),
            });
        }
        Ok(())
    }

    fn poison(&mut self, e: Error) -> Error {
        if self.poisoned.is_none() {
            self.poisoned = Some(e.to_string());
        }
        e
    }

    /// Appends a frame, timing it. A failed append after state changes poisons the bus.
    fn append(
        &mut self,
        page: PageId,
        epoch: u64,
        source: Source,
        commit: bool,
        body: BodyRef<'_>,
    ) -> Result<(Lsn, u64)> {
        let t = self.timings.enabled.then(Instant::now);
        let a = self.log.append(page, epoch, source, commit, body);
        if let Some(t) = t {
            record(&mut self.timings.append, elapsed_ns(t));
        }
        match a {
            Ok(a) => {
                self.state.set_last_lsn(a.lsn);
                Ok((a.lsn, a.timestamp_ns))
            }
            Err(e) => {
                let e = self.log_error(e);
                Err(self.poison(e))
            }
        }
    }

    /// Creates a zeroed page of `size` bytes in host memory; see [`Mmsb::create_page_with`].
    ///
    /// # Errors
    /// As [`Mmsb::create_page_with`].
    pub fn create_page(&mut self, size: usize) -> Result<PageId> {
        self.create_page_with(size, Location::Cpu)
    }

    /// Creates a zeroed page of `size` bytes at `location`, logged before it exists. Epoch 0.
    ///
    /// # Errors
    /// [`Error::InvalidPageSize`] for 0 or more than [`MAX_PAGE_SIZE`]; log write errors
    /// (which poison the bus: [`Error::Poisoned`] afterwards).
    pub fn create_page_with(&mut self, size: usize, location: Location) -> Result<PageId> {
        self.check_writable()?;
        if size == 0 || size > MAX_PAGE_SIZE {
            return Err(Error::InvalidPageSize {
                size,
                max: MAX_PAGE_SIZE,
            });
        }
        let id = PageId(self.state.next_page_id());
        let commit = !self.in_batch;
        let size32 = u32::try_from(size).map_err(|_| Error::InvalidPageSize {
            size,
            max: MAX_PAGE_SIZE,
        })?;
        let (lsn, _) = self.append(
            id,
            0,
            Source::User,
            commit,
            BodyRef::CreatePage {
                size: size32,
                location,
            },
        )?;
        self.state.create(id, size, location)?;
        self.state.set_last_lsn(lsn);
        if self.in_batch {
            self.batch_frames += 1;
        } else {
            self.committed();
        }
        if self.subs.wants(EventKind::PageCreated) {
            self.subs.emit(&Event::PageCreated { page: id, size });
        }
        Ok(id)
    }

    /// Sets (`Some`) or removes (`None`) a metadata key of a page, logged.
    ///
    /// # Errors
    /// [`Error::NoSuchPage`]; log write errors.
    pub fn set_metadata(&mut self, id: PageId, key: &str, value: Option<&[u8]>) -> Result<Lsn> {
        self.check_writable()?;
        let epoch = self.state.page(id).ok_or(Error::NoSuchPage(id))?.epoch;
        let commit = !self.in_batch;
        let (lsn, _) = self.append(
            id,
            epoch,
            Source::User,
            commit,
            BodyRef::Metadata { key, value },
        )?;
        let page = self.state.page_mut(id).ok_or(Error::NoSuchPage(id))?;
        match value {
            Some(v) => {
                page.metadata.insert(key.to_owned(), v.to_vec());
            }
            None => {
                page.metadata.remove(key);
            }
        }
        self.state.set_last_lsn(lsn);
        if self.in_batch {
            self.batch_frames += 1;
        } else {
            self.committed();
        }
        Ok(lsn)
    }

    /// The page `id`.
    ///
    /// # Errors
    /// [`Error::NoSuchPage`].
    pub fn query_page(&self, id: PageId) -> Result<&Page> {
        self.state.page(id).ok_or(Error::NoSuchPage(id))
    }

    /// The live state (all pages).
    #[must_use]
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The dependency graph.
    #[must_use]
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The log directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// Replaces the whole contents of page `id`. The delta is built by diffing word at a time
    /// against the current bytes; nothing is logged or applied when nothing changed.
    ///
    /// Returns the delta's LSN, or `None` when nothing changed.
    ///
    /// # Errors
    /// [`Error::NoSuchPage`], [`Error::SizeMismatch`] when `bytes.len()` is not the page size,
    /// [`Error::Derived`] for a page with a recompute function; log write errors.
    ///
    /// # Panics
    /// If a recompute function run by propagation panics.
    pub fn update_page(&mut self, id: PageId, bytes: &[u8]) -> Result<Option<Lsn>> {
        let page = self.writable(id)?;
        if page.bytes.len() != bytes.len() {
            return Err(Error::SizeMismatch {
                page: id,
                expected: page.bytes.len(),
                found: bytes.len(),
            });
        }
        match Delta::diff(id, &page.bytes, bytes) {
            None => Ok(None),
            Some(d) => self.commit_user_delta(d).map(Some),
        }
    }

    /// Writes `bytes` at `offset` of page `id`; only the bytes that differ go into the delta.
    /// Returns the delta's LSN, or `None` when nothing changed.
    ///
    /// # Errors
    /// [`Error::NoSuchPage`], [`Error::OutOfBounds`], [`Error::Derived`]; log write errors.
    ///
    /// # Panics
    /// If a recompute function run by propagation panics.
    pub fn write_range(&mut self, id: PageId, offset: usize, bytes: &[u8]) -> Result<Option<Lsn>> {
        let page = self.writable(id)?;
        let end = offset.saturating_add(bytes.len());
        if end > page.bytes.len() {
            return Err(Error::OutOfBounds {
                page: id,
                offset,
                end,
                size: page.bytes.len(),
            });
        }
        match Delta::diff_at(id, &page.bytes, offset, bytes) {
            None => Ok(None),
            Some(d) => self.commit_user_delta(d).map(Some),
        }
    }

    /// Logs and applies a delta built elsewhere (from [`crate::diff`], another bus, a tool).
    /// Its `lsn`, `epoch` and `timestamp_ns` are assigned here; its source is kept.
    ///
    /// # Errors
    /// [`Error::NoSuchPage`], [`Error::Derived`], and the errors of [`Delta::check`] (nothing is
    /// logged then); log write errors.
    ///
    /// # Panics
    /// If a recompute function run by propagation panics.
    pub fn apply_delta(&mut self, delta: &Delta) -> Result<Lsn> {
        let page = self.writable(delta.page)?;
        delta.check(page.bytes.len())?;
        self.commit_user_delta(delta.clone())
    }

    fn writable(&self, id: PageId) -> Result<&Page> {
        self.check_writable()?;
        let page = self.state.page(id).ok_or(Error::NoSuchPage(id))?;
        if self
            .recompute
            .get(id.0 as usize)
            .is_some_and(Option::is_some)
        {
            return Err(Error::Derived(id));
        }
        Ok(page)
    }

    /// Logs (write-ahead) then applies a user delta; outside a batch, propagates and commits.
    fn commit_user_delta(&mut self, mut d: Delta) -> Result<Lsn> {
        let id = d.page;
        let has_children = !self.graph.children(id).is_empty();
        let commit = !self.in_batch && !has_children;
        let lsn = self.log_and_apply(&mut d, commit)?;
        if self.in_batch {
            self.batch_frames += 1;
            self.batch_deltas += 1;
            if has_children {
                self.batch_roots.push(id);
            }
            if self.subs.wants(EventKind::PageChanged) {
                self.changed.push(id);
            }
            return Ok(lsn);
        }
        if has_children {
            self.propagate(&[id])?;
            self.append(PageId(0), 0, Source::User, true, BodyRef::Commit)?;
        }
        self.committed();
        if self.subs.wants(EventKind::PageChanged) {
            self.changed.push(id);
            self.emit_changed();
        }
        Ok(lsn)
    }

    /// Appends `d` to the log, then applies it; fills in its LSN, epoch and timestamp.
    fn log_and_apply(&mut self, d: &mut Delta, commit: bool) -> Result<Lsn> {
        let epoch = self
            .state
            .page(d.page)
            .ok_or(Error::NoSuchPage(d.page))?
            .epoch
            + 1;
        let (lsn, ts) = self.append(d.page, epoch, d.source, commit, BodyRef::Delta(&d.body))?;
        d.lsn = lsn;
        d.epoch = epoch;
        d.timestamp_ns = ts;
        let t = self.timings.enabled.then(Instant::now);
        let page = self
            .state
            .page_mut(d.page)
            .ok_or(Error::NoSuchPage(d.page))?;
        d.apply_unchecked(&mut page.bytes);
        page.epoch = epoch;
        page.stale = false;
        if let Some(t) = t {
            record(&mut self.timings.apply, elapsed_ns(t));
        }
        self.state.set_last_lsn(lsn);
        let n = match &d.body {
            Body::Dense(b) => b.len(),
            Body::Sparse { payload, .. } => payload.len(),
        };
        self.counters.deltas += 1;
        self.counters.delta_bytes += n as u64;
        if self.subs.wants(EventKind::DeltaApplied) {
            self.subs.emit(&Event::DeltaApplied {
                page: d.page,
                lsn,
                epoch,
                source: d.source,
                bytes: n,
            });
        }
        Ok(lsn)
    }

    fn emit_changed(&mut self) {
        let mut changed = std::mem::take(&mut self.changed);
        changed.sort_unstable();
        changed.dedup();
        for &p in &changed {
            let epoch = self.state.page(p).map_or(0, Page::epoch);
            self.subs.emit(&Event::PageChanged { page: p, epoch });
        }
        changed.clear();
        self.changed = changed;
    }

    /// Opens an explicit batch: writes are logged and applied at once (reads see them), but
    /// propagation and the commit wait for [`Mmsb::commit`]. A crash before the commit loses the
    /// whole batch (recovery drops an uncommitted tail), never part of it.
    ///
    /// # Errors
    /// [`Error::Batch`] when a batch is already open (always, in deferred mode).
    pub fn begin_batch(&mut self) -> Result<()> {
        self.check_writable()?;
        if self.in_batch {
            return Err(Error::Batch("a batch is already open"));
        }
        self.in_batch = true;
        self.explicit_batch = true;
        Ok(())
    }

    /// Ends the open batch: runs one propagation wave from every page written in it (each
    /// affected page is recomputed once), then writes the commit frame. In deferred mode a new
    /// batch opens at once.
    ///
    /// # Errors
    /// [`Error::Batch`] when no batch is open; log write errors.
    ///
    /// # Panics
    /// If a recompute function panics.
    pub fn commit(&mut self) -> Result<Commit> {
        self.check_poison()?;
        if !self.in_batch {
            return Err(Error::Batch("commit without an open batch"));
        }
        let roots = std::mem::take(&mut self.batch_roots);
        let deltas = self.batch_deltas;
        let propagated = if roots.is_empty() {
            0
        } else {
            self.propagate(&roots)?
        };
        let frames = self.batch_frames + propagated;
        let lsn = if frames > 0 {
            self.append(PageId(0), 0, Source::User, true, BodyRef::Commit)?
                .0
        } else {
            Lsn::ZERO
        };
        if frames > 0 {
            self.state.set_last_lsn(lsn);
            self.committed();
        }
        self.batch_frames = 0;
        self.batch_deltas = 0;
        self.batch_roots = roots;
        self.batch_roots.clear();
        if self.explicit_batch {
            self.explicit_batch = false;
            self.in_batch = self.config.propagation == PropagationMode::Deferred;
        }
        if self.subs.wants(EventKind::PageChanged) {
            self.emit_changed();
        }
        Ok(Commit {
            lsn,
            deltas,
            propagated,
        })
    }

    /// Runs `f` inside a batch and commits it (see [`Mmsb::begin_batch`]). If `f` fails, the
    /// writes it made are committed anyway (they are already applied); the error is returned.
    ///
    /// # Errors
    /// `f`'s error, or the commit's.
    pub fn batch<T>(&mut self, f: impl FnOnce(&mut Mmsb) -> Result<T>) -> Result<(T, Commit)> {
        self.begin_batch()?;
        let r = f(self);
        let c = self.commit()?;
        Ok((r?, c))
    }

    /// Writes a checkpoint of every page at the current LSN (after syncing the log, so the log
    /// always reaches at least as far as any checkpoint). With `prune_after_checkpoint`, deletes
    /// the log segments it covers.
    ///
    /// # Errors
    /// [`Error::Batch`] when a batch holds uncommitted frames; I/O errors.
    pub fn checkpoint(&mut self) -> Result<CheckpointInfo> {
        self.check_poison()?;
        if self.batch_frames > 0 {
            return Err(Error::Batch(
                "checkpoint with uncommitted frames in the open batch: commit first",
            ));
        }
        self.log.sync().map_err(|e| self.log_error(e))?;
        let lsn = self.log.last_lsn();
        let info = checkpoint::write_for_log(
            &self.config.dir,
            self.log.identity().id,
            lsn,
            self.state.next_page_id(),
            self.state.pages(),
        )?;
        if self.config.prune_after_checkpoint {
            self.log.prune_before(lsn.next())?;
        }
        self.publish_now();
        Ok(info)
    }

    /// Writes buffered log frames to the file (not fsynced), so readers of the directory see
    /// them.
    ///
    /// # Errors
    /// I/O errors.
    pub fn flush(&mut self) -> Result<()> {
        self.log.flush().map_err(|e| self.log_error(e))
    }

    /// Writes and fsyncs the log.
    ///
    /// # Errors
    /// I/O errors.
    pub fn sync(&mut self) -> Result<()> {
        let r = self.log.sync().map_err(|e| self.log_error(e));
        self.publish_now();
        r
    }

    /// Replays this bus's log into a detached [`State`] up to `target` (the live state is not
    /// touched). Flushes the log buffer first.
    ///
    /// # Errors
    /// As [`State::replay`].
    pub fn replay_to(&mut self, target: ReplayTarget) -> Result<State> {
        self.log.flush()?;
        State::replay(&self.config.dir, target)
    }

    /// Replays the whole log from empty (or from the oldest checkpoint when segments were
    /// pruned) and checks that every page's epoch and bytes equal the live ones.
    ///
    /// # Errors
    /// [`Error::Inconsistent`] naming the first page that differs; [`Error::Batch`] with
    /// uncommitted frames open; replay errors.
    pub fn verify_consistency(&mut self) -> Result<()> {
        if self.batch_frames > 0 {
            return Err(Error::Batch(
                "verify_consistency with uncommitted frames in the open batch: commit first",
            ));
        }
        self.log.flush()?;
        let replayed = match State::replay(&self.config.dir, ReplayTarget::End) {
            Ok(s) => s,
            Err(Error::ReplayMismatch { .. }) => State::restore(&self.config.dir)?,
            Err(e) => return Err(e),
        };
        let live = self.state.hashes();
        let other = replayed.hashes();
        for i in 0..live.len().max(other.len()) {
            let a = live.get(i).copied();
            let b = other.get(i).copied();
            if a != b {
                let page = a.or(b).map_or(PageId(0), |x| x.0);
                return Err(Error::Inconsistent {
                    page,
                    live: a.map_or(0, |x| x.2),
                    replayed: b.map_or(0, |x| x.2),
                });
            }
        }
        Ok(())
    }

    /// Subscribes `f` to the given kinds of events of this bus. Callbacks run synchronously on
    /// the writing thread, after the change is logged and applied; keep them short.
    pub fn subscribe(
        &mut self,
        kinds: &[EventKind],
        f: impl FnMut(&Event) + Send + 'static,
    ) -> SubscriptionId {
        self.subs.add(kinds, Box::new(f))
    }

    /// Removes a subscription; false if it did not exist.
    pub fn unsubscribe(&mut self, id: SubscriptionId) -> bool {
        self.subs.remove(id)
    }

    /// Counters, graph shape and latency percentiles.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        let l = self.log.stats();
        Stats {
            pages: self.state.len(),
            page_bytes: self.state.bytes(),
            deltas: c.deltas,
            delta_bytes: c.delta_bytes,
            propagation_deltas: c.propagation_deltas,
            propagation_delta_bytes: c.propagation_delta_bytes,
            commits: c.commits,
            waves: c.waves,
            recomputes: c.recomputes,
            cutoffs: c.cutoffs,
            stale_marks: c.stale_marks,
            graph_nodes: self.graph.node_count(),
            graph_edges: self.graph.edge_count(),
            graph_depth: self.graph.depth(),
            last_lsn: self.log.last_lsn().0,
            durable_lsn: self.log.durable_lsn().0,
            log_frames: l.frames,
            log_bytes: l.bytes,
            log_syncs: l.fsyncs,
            log_write_errors: self.metrics.write_errors,
            recovery_truncated_frames: self.metrics.truncated_frames,
            recovery_truncated_bytes: self.metrics.truncated_bytes,
            delta_apply: Timings::percentiles(&self.timings.apply),
            log_append: Timings::percentiles(&self.timings.append),
            propagation: Timings::percentiles(&self.timings.wave),
        }
    }
}
