//! Running a trace through a live [`mmsb::Mmsb`], and verifying the log it leaves.
//!
//! Pages (created in this order, so ids 1..=4 in a fresh log directory):
//! `header` ([`HEADER_SIZE`] bytes), `document` ([`Layout::doc_capacity`]), `line-index`
//! ([`Layout::line_index_size`]) and `word-count` ([`derived::WORD_COUNT_SIZE`]). Both derived
//! pages have the data parents `[header, document]`, in that order. Each page carries the
//! metadata key `mmsb.trace.role` naming its role; the header page also `mmsb.trace.name`.
//!
//! Transactions are applied in explicit batches of [`RunOptions::wave_every`] transactions: each
//! batch is one commit and one propagation wave (both derived pages recomputed once). The
//! gap-buffer writes go straight to the bus with `write_range`, which logs only the bytes that
//! change; the editor reads the document page back from the bus (writes in an open batch are
//! applied at once), so it keeps no copy of the document. The header page is written once per
//! batch, just before the commit, so a transaction costs one delta for its inserted text and one
//! for a gap move, if any (deletions write nothing). Recovery and checkpoints only ever see
//! commits, where header and document agree; replaying to an LSN inside a batch gives a document
//! page ahead of its header.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use mmsb::{EdgeKind, Mmsb, PageId, ReplayTarget, State};
use serde::Serialize;

use crate::derived::{self, WORD_COUNT_SIZE};
use crate::doc::{DocError, GapDoc, HEADER_SIZE, Header, PageRole, PageStore, logical_text};
use crate::parse::{self, Trace, TraceError};
use crate::{Layout, model_text_after, synth};

/// Metadata key naming a page's role.
pub const ROLE_KEY: &str = "mmsb.trace.role";
/// Metadata key (on the header page) holding the trace name.
pub const NAME_KEY: &str = "mmsb.trace.name";

/// Transactions per propagation wave when not told otherwise. Measured on automerge-paper
/// (260k transactions, 105 KB document, release build, 2-core machine): a wave costs about 20 µs
/// (both recomputes over the whole document, about 12 µs, plus diffing and logging their
/// output). Applying the trace takes 0.06 s with a wave every 1000 transactions, 0.11 s every
/// 100, 0.56 s every 10, and several seconds every transaction; 100 keeps the derived pages at
/// most 100 edits behind for under a microsecond per edit.
pub const DEFAULT_WAVE_EVERY: usize = 100;

/// A function [`run_trace`] calls once with the bus, right after it starts and before the
/// first page is created: `mmsb trace --listen` takes a [`mmsb::MetricsHandle`] there.
#[derive(Clone)]
pub struct OnStart(pub Arc<dyn Fn(&mut Mmsb) + Send + Sync>);

impl std::fmt::Debug for OnStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnStart(..)")
    }
}

/// What [`run`] does.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The trace file; `None` runs the embedded default trace ([`synth::default_trace`]).
    pub trace: Option<PathBuf>,
    /// The log directory, which must be missing or empty; `None` uses a temporary directory
    /// that lives as long as the [`RunReport`].
    pub log_dir: Option<PathBuf>,
    /// Transactions per batch (one commit, one propagation wave); 0 is taken as 1.
    pub wave_every: usize,
    /// Take a checkpoint after every this many transactions (at a commit).
    pub checkpoint_every: Option<usize>,
    /// Take a checkpoint after half of the transactions (for [`verify`]).
    pub mid_checkpoint: bool,
    /// Log durability.
    pub durability: mmsb::Durability,
    /// Record MMSB latency histograms.
    pub timings: bool,
    /// Checked before every transaction and checkpoint: once it is true, the run stops with
    /// [`RunError::Interrupted`] (a temporary log directory is removed on the way out). Set
    /// from a signal handler by `mmsb trace`.
    pub cancel: Option<&'static AtomicBool>,
    /// With `checkpoint_every`, keep only the newest periodic checkpoint (and the mid-trace
    /// one): each new checkpoint deletes the previous periodic one, so that a long run with
    /// frequent checkpoints does not fill the disk. [`CheckpointRecord::removed`] says which.
    pub prune_checkpoints: bool,
    /// Called with the bus once it has started ([`OnStart`]).
    pub on_start: Option<OnStart>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            trace: None,
            log_dir: None,
            wave_every: DEFAULT_WAVE_EVERY,
            checkpoint_every: None,
            mid_checkpoint: true,
            durability: mmsb::Durability::Flush,
            timings: true,
            cancel: None,
            prune_checkpoints: true,
            on_start: None,
        }
    }
}

/// What can go wrong running or verifying a trace.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// Loading the trace failed.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// The bus failed.
    #[error(transparent)]
    Mmsb(#[from] mmsb::Error),
    /// Applying a transaction failed (a store error, or a page that does not match its header).
    #[error("{trace}: transaction {txn}: {source}")]
    Apply {
        /// Trace name.
        trace: String,
        /// Transaction index (`txn_count` for the finish step).
        txn: usize,
        /// What failed.
        #[source]
        source: DocError<mmsb::Error>,
    },
    /// The log directory given already holds files.
    #[error("{0}: log directory is not empty (the trace run needs a fresh log)")]
    LogDirNotEmpty(PathBuf),
    /// Creating or reading the log directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A verification check failed.
    #[error("verification failed: {0}")]
    Verify(String),
    /// [`RunOptions::cancel`] was set.
    #[error("interrupted")]
    Interrupted,
}

/// Page ids of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TracePages {
    /// Header page.
    pub header: PageId,
    /// Document page.
    pub document: PageId,
    /// Line-start index page.
    pub line_index: PageId,
    /// Word-count page.
    pub word_count: PageId,
}

/// A checkpoint taken during a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckpointRecord {
    /// Transactions applied when it was taken.
    pub txns_applied: usize,
    /// The LSN it covers.
    pub lsn: u64,
    /// The checkpoint file.
    pub path: PathBuf,
    /// Deleted later in the run ([`RunOptions::prune_checkpoints`]).
    pub removed: bool,
}

/// What [`run`] did.
#[derive(Debug, Serialize)]
pub struct RunReport {
    /// Trace name (file path, or the embedded trace's name).
    pub trace: String,
    /// The log directory.
    pub log_dir: PathBuf,
    /// Transactions applied.
    pub txns: usize,
    /// Patches applied.
    pub patches: usize,
    /// Page sizes.
    pub layout: Layout,
    /// Page ids.
    pub pages: TracePages,
    /// Transactions per wave.
    pub wave_every: usize,
    /// Commits made by the run (each one propagation wave), creation and finish included.
    pub commits: u64,
    /// Deltas written by the run (user writes that changed something).
    pub user_deltas: u64,
    /// Page writes sent by the editor (before diffing; some change nothing and log nothing).
    pub page_writes: u64,
    /// Bytes in those page writes.
    pub page_write_bytes: u64,
    /// Size of the log segment files at the end, bytes.
    pub log_file_bytes: u64,
    /// Seconds applying transactions, waves and commits included, checkpoints excluded.
    pub apply_seconds: f64,
    /// Seconds in checkpoints.
    pub checkpoint_seconds: f64,
    /// Seconds for the finish step (gap to the end, zeroed tail, last wave).
    pub finish_seconds: f64,
    /// Final document length in bytes.
    pub doc_bytes: usize,
    /// Final document length in chars.
    pub doc_chars: usize,
    /// Word count read from the live word-count page at the end.
    pub word_count: u64,
    /// Number of line starts read from the live line-index page at the end.
    pub line_starts: usize,
    /// The checkpoint taken after half of the transactions, if any.
    pub mid_checkpoint: Option<CheckpointRecord>,
    /// Every checkpoint taken, in order (the mid-trace one included).
    pub checkpoints: Vec<CheckpointRecord>,
    /// The bus's counters and latency percentiles at the end.
    pub stats: mmsb::Stats,
    #[serde(skip)]
    _tempdir: Option<tempfile::TempDir>,
}

impl RunReport {
    /// Keeps a temporary log directory on disk after the report is dropped; returns its path.
    pub fn keep_log(&mut self) -> PathBuf {
        if let Some(t) = self._tempdir.take() {
            let _ = t.keep();
        }
        self.log_dir.clone()
    }
}

/// The editor's view of the bus: reads the document page, sends writes with `write_range`.
struct BusPages<'a> {
    bus: &'a mut Mmsb,
    header: PageId,
    doc: PageId,
    writes: u64,
    bytes: u64,
}

impl PageStore for BusPages<'_> {
    type Error = mmsb::Error;

    fn doc_page(&self) -> Result<&[u8], mmsb::Error> {
        Ok(self.bus.query_page(self.doc)?.bytes())
    }

    fn write(&mut self, role: PageRole, offset: usize, bytes: &[u8]) -> Result<(), mmsb::Error> {
        let id = match role {
            PageRole::Header => self.header,
            PageRole::Doc => self.doc,
        };
        self.writes += 1;
        self.bytes += bytes.len() as u64;
        self.bus.write_range(id, offset, bytes)?;
        Ok(())
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Loads the trace named by `opts.trace` (or the embedded default) and runs it: see
/// [`run_trace`].
pub fn run(opts: &RunOptions) -> Result<RunReport, RunError> {
    let trace = match &opts.trace {
        Some(p) => parse::load(p)?,
        None => synth::default_trace(),
    };
    run_trace(&trace, opts)
}

/// Runs `trace` through a new bus in `opts.log_dir` (or a temporary directory): creates the
/// four pages and the derived-page graph, applies the transactions in batches of
/// `opts.wave_every`, checkpoints as asked, finishes the document (gap to the end, zero tail) in
/// a last batch, reads the derived values from the live pages, and stops the bus (the log is
/// synced and closed; [`verify`] reads it).
pub fn run_trace(trace: &Trace, opts: &RunOptions) -> Result<RunReport, RunError> {
    let layout = Layout::for_stats(trace.stats());
    let (dir, tempdir) = match &opts.log_dir {
        Some(d) => {
            if d.exists() && std::fs::read_dir(d).map_err(io_err(d))?.next().is_some() {
                return Err(RunError::LogDirNotEmpty(d.clone()));
            }
            (d.clone(), None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("mmsb-trace-")
                .tempdir()
                .map_err(io_err(&std::env::temp_dir()))?;
            (t.path().to_owned(), Some(t))
        }
    };
    let mut config = mmsb::Config::new(&dir).durability(opts.durability);
    config.timings = opts.timings;
    let mut bus = Mmsb::start(config)?;
    if let Some(OnStart(f)) = &opts.on_start {
        f(&mut bus);
    }

    let header = bus.create_page(HEADER_SIZE)?;
    let document = bus.create_page(layout.doc_capacity)?;
    let line_index = bus.create_page(layout.line_index_size)?;
    let word_count = bus.create_page(WORD_COUNT_SIZE)?;
    let pages = TracePages {
        header,
        document,
        line_index,
        word_count,
    };
    for (id, role) in [
        (header, "header"),
        (document, "document"),
        (line_index, "line-index"),
        (word_count, "word-count"),
    ] {
        bus.set_metadata(id, ROLE_KEY, Some(role.as_bytes()))?;
    }
    bus.set_metadata(header, NAME_KEY, Some(trace.name().as_bytes()))?;
    for child in [line_index, word_count] {
        bus.add_dependency(header, child, EdgeKind::Data)?;
        bus.add_dependency(document, child, EdgeKind::Data)?;
    }
    bus.register_recompute(line_index, derived::line_index_recompute)?;
    bus.register_recompute(word_count, derived::word_count_recompute)?;

    let name = trace.name().to_owned();
    let apply_err = |txn: usize| {
        let name = name.clone();
        move |source| RunError::Apply {
            trace: name,
            txn,
            source,
        }
    };
    let n = trace.txn_count();
    let wave_every = opts.wave_every.max(1);
    let mid = n / 2;
    let mut checkpoints: Vec<CheckpointRecord> = Vec::new();
    let mut mid_checkpoint = None;
    let mut commits = 0u64;
    let mut checkpoint_seconds = 0.0;
    let start_stats = bus.stats();

    let t_apply = Instant::now();
    bus.begin_batch()?;
    let mut store = BusPages {
        bus: &mut bus,
        header,
        doc: document,
        writes: 0,
        bytes: 0,
    };
    let mut editor = GapDoc::create(&mut store, trace.start_content(), layout.doc_capacity)
        .map_err(apply_err(0))?;
    store.bus.commit()?;
    commits += 1;
    let mut open = false;
    let cancelled = || opts.cancel.is_some_and(|c| c.load(Ordering::Relaxed));
    for applied in 0..=n {
        if cancelled() {
            return Err(RunError::Interrupted);
        }
        if applied > 0 {
            if !open {
                store.bus.begin_batch()?;
                open = true;
            }
            let i = applied - 1;
            editor
                .apply_txn_unsynced(&mut store, trace.txn(i))
                .map_err(apply_err(i))?;
        }
        let is_mid = opts.mid_checkpoint && applied == mid;
        let periodic = opts
            .checkpoint_every
            .is_some_and(|c| c > 0 && applied > 0 && applied % c == 0);
        if open && (applied % wave_every == 0 || applied == n || is_mid || periodic) {
            // The header page is written once per commit: nothing reads it inside a batch.
            editor
                .sync_header(&mut store)
                .map_err(apply_err(i_last(applied)))?;
            store.bus.commit()?;
            commits += 1;
            open = false;
        }
        if is_mid || periodic {
            let t = Instant::now();
            let info = store.bus.checkpoint()?;
            checkpoint_seconds += t.elapsed().as_secs_f64();
            let rec = CheckpointRecord {
                txns_applied: applied,
                lsn: info.lsn.0,
                path: info.path,
                removed: false,
            };
            if opts.prune_checkpoints {
                // Keep the new one and the mid-trace one (verify reads it); delete the others.
                let mid_path = mid_checkpoint
                    .as_ref()
                    .map(|m: &CheckpointRecord| m.path.clone());
                for old in &mut checkpoints {
                    if !old.removed && old.path != rec.path && Some(&old.path) != mid_path.as_ref()
                    {
                        std::fs::remove_file(&old.path).map_err(io_err(&old.path))?;
                        old.removed = true;
                    }
                }
            }
            if is_mid {
                mid_checkpoint = Some(rec.clone());
            }
            checkpoints.push(rec);
        }
    }
    let apply_seconds = t_apply.elapsed().as_secs_f64() - checkpoint_seconds;

    let t_finish = Instant::now();
    store.bus.begin_batch()?;
    editor.finish(&mut store).map_err(apply_err(n))?;
    store.bus.commit()?;
    commits += 1;
    let finish_seconds = t_finish.elapsed().as_secs_f64();
    let (page_writes, page_write_bytes) = (store.writes, store.bytes);

    let hdr = *editor.header();
    let li = bus.query_page(line_index)?.bytes();
    let line_starts = derived::decode_line_index(li)
        .ok_or_else(|| RunError::Verify("the live line-index page overflowed".into()))?
        .len();
    let word_count_value = derived::decode_word_count(bus.query_page(word_count)?.bytes())
        .ok_or_else(|| RunError::Verify("the live word-count page is short".into()))?;
    let stats = bus.stats();
    bus.stop()?;
    let log_file_bytes = log_file_bytes(&dir)?;

    Ok(RunReport {
        trace: trace.name().to_owned(),
        log_dir: dir,
        txns: n,
        patches: trace.patch_count(),
        layout,
        pages,
        wave_every,
        commits,
        user_deltas: stats.deltas
            - stats.propagation_deltas
            - (start_stats.deltas - start_stats.propagation_deltas),
        page_writes,
        page_write_bytes,
        log_file_bytes,
        apply_seconds,
        checkpoint_seconds,
        finish_seconds,
        doc_bytes: hdr.byte_len,
        doc_chars: hdr.char_len,
        word_count: word_count_value,
        line_starts,
        mid_checkpoint,
        checkpoints,
        stats,
        _tempdir: tempdir,
    })
}

fn i_last(applied: usize) -> usize {
    applied.saturating_sub(1)
}

/// Bytes of the files in `dir` that are not checkpoints (the log segments).
fn log_file_bytes(dir: &Path) -> Result<u64, RunError> {
    let mut total = 0;
    for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let name = e.file_name();
        let meta = e.metadata().map_err(io_err(dir))?;
        if meta.is_file() && mmsb::checkpoint::parse_file_name(&name.to_string_lossy()).is_none() {
            total += meta.len();
        }
    }
    Ok(total)
}

/// What [`verify`] checked.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The checks that passed, in order, one line each.
    pub checks: Vec<String>,
    /// Seconds replaying the whole log from empty.
    pub replay_seconds: f64,
    /// Seconds restoring from the mid-trace checkpoint plus the log suffix.
    pub restore_seconds: f64,
}

fn fail(msg: String) -> RunError {
    RunError::Verify(msg)
}

fn page<'a>(s: &'a State, id: PageId, what: &str) -> Result<&'a [u8], RunError> {
    s.page(id)
        .map(mmsb::Page::bytes)
        .ok_or_else(|| fail(format!("{what}: {id} is missing")))
}

/// Checks that `s` holds the document `text` after `txns` transactions, with derived pages
/// consistent with it.
fn check_state(
    s: &State,
    pages: &TracePages,
    layout: &Layout,
    text: &str,
    txns: usize,
    what: &str,
) -> Result<(), RunError> {
    let hdr = page(s, pages.header, what)?;
    let doc = page(s, pages.document, what)?;
    let h = Header::decode(hdr).map_err(|e| fail(format!("{what}: {e}")))?;
    if h.txns_applied != txns as u64 {
        return Err(fail(format!(
            "{what}: header says {} transactions, expected {txns}",
            h.txns_applied
        )));
    }
    let got =
        logical_text(hdr, doc).ok_or_else(|| fail(format!("{what}: document does not decode")))?;
    if got != text {
        let at = got
            .bytes()
            .zip(text.bytes())
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(text.len()));
        return Err(fail(format!(
            "{what}: document differs from the expected text at byte {at} ({} vs {} bytes)",
            got.len(),
            text.len()
        )));
    }
    let li = page(s, pages.line_index, what)?;
    if li != derived::expected_line_index_page(text, layout.line_index_size) {
        return Err(fail(format!(
            "{what}: line-index page differs from the line starts of the document"
        )));
    }
    let wc = page(s, pages.word_count, what)?;
    if wc != derived::expected_word_count_page(text) {
        return Err(fail(format!(
            "{what}: word-count page says {:?}, the document has {}",
            derived::decode_word_count(wc),
            derived::word_count(text)
        )));
    }
    Ok(())
}

/// The finished state: [`check_state`] with `endContent`, and the document page is exactly
/// `endContent` followed by zeros.
fn check_final(s: &State, trace: &Trace, r: &RunReport, what: &str) -> Result<(), RunError> {
    check_state(
        s,
        &r.pages,
        &r.layout,
        trace.end_content(),
        trace.txn_count(),
        what,
    )?;
    let doc = page(s, r.pages.document, what)?;
    let end = trace.end_content().as_bytes();
    if &doc[..end.len()] != end || doc[end.len()..].iter().any(|&b| b != 0) {
        return Err(fail(format!(
            "{what}: document page is not endContent followed by zeros"
        )));
    }
    Ok(())
}

fn same_pages(a: &State, b: &State, pages: &TracePages, what: &str) -> Result<(), RunError> {
    for id in [
        pages.header,
        pages.document,
        pages.line_index,
        pages.word_count,
    ] {
        let (x, y) = (a.page(id), b.page(id));
        if x.map(|p| (p.bytes(), p.epoch())) != y.map(|p| (p.bytes(), p.epoch())) {
            return Err(fail(format!("{what}: {id} differs (bytes or epoch)")));
        }
    }
    Ok(())
}

/// Verifies the log a [`run_trace`] of `trace` left (the bus must be stopped, as `run_trace`
/// leaves it):
///
/// 1. replaying the whole log from empty gives the finished document (`endContent` followed by
///    zeros) and derived pages equal to the line starts and word count computed directly from
///    `endContent`, and the values the run read from the live pages;
/// 2. the mid-trace checkpoint holds the document the pure model has after the same number of
///    transactions, with consistent derived pages;
/// 3. that checkpoint plus the log suffix reproduces the replayed pages exactly (bytes and
///    epochs), and so does [`State::restore`] (newest checkpoint plus suffix).
pub fn verify(trace: &Trace, report: &RunReport) -> Result<VerifyReport, RunError> {
    let mut checks = Vec::new();
    let dir = &report.log_dir;
    let t = Instant::now();
    let full = State::new().replay_log(dir, ReplayTarget::End)?;
    let replay_seconds = t.elapsed().as_secs_f64();
    check_final(&full, trace, report, "replay from empty")?;
    checks.push(format!(
        "replay from empty (up to LSN {}): document == endContent ({} bytes) + zeros, \
         line index and word count == direct values",
        full.last_lsn().0,
        trace.end_content().len()
    ));
    let end = trace.end_content();
    if report.word_count != derived::word_count(end)
        || report.line_starts != derived::line_starts(end).len()
    {
        return Err(fail(
            "the live derived values differ from the direct values".into(),
        ));
    }
    checks.push(format!(
        "live derived pages: {} words, {} line starts == direct values",
        report.word_count, report.line_starts
    ));

    let mut restore_seconds = 0.0;
    if let Some(mc) = &report.mid_checkpoint {
        let t = Instant::now();
        let ckpt = mmsb::checkpoint::read(&mc.path)?;
        let at = State::from_checkpoint(ckpt)?;
        let expect = model_text_after(trace, mc.txns_applied)
            .map_err(|e| fail(format!("pure model: {e}")))?;
        check_state(
            &at,
            &report.pages,
            &report.layout,
            &expect,
            mc.txns_applied,
            "mid-trace checkpoint",
        )?;
        checks.push(format!(
            "mid-trace checkpoint at LSN {} ({} transactions): document == pure model, derived pages consistent",
            mc.lsn, mc.txns_applied
        ));
        let restored = at.replay_log(dir, ReplayTarget::End)?;
        restore_seconds = t.elapsed().as_secs_f64();
        check_final(
            &restored,
            trace,
            report,
            "mid-trace checkpoint + log suffix",
        )?;
        same_pages(
            &restored,
            &full,
            &report.pages,
            "mid-trace checkpoint + log suffix",
        )?;
        checks.push("mid-trace checkpoint + log suffix == full replay (bytes and epochs)".into());
    }
    let newest = State::restore(dir)?;
    same_pages(
        &newest,
        &full,
        &report.pages,
        "newest checkpoint + log suffix",
    )?;
    checks.push("State::restore (newest checkpoint + suffix) == full replay".into());
    Ok(VerifyReport {
        checks,
        replay_seconds,
        restore_seconds,
    })
}
