//! Applying real editing traces through MMSB: the library behind `mmsb trace` and the MMSB trace benchmark.
//!
//! A trace ([`parse::Trace`]) is a start text and transactions of patches `(pos, del, ins)` in
//! char positions. The document lives in one page as a gap buffer of UTF-8 bytes, described by a
//! 64-byte header page ([`doc`] has both layouts); two derived pages are recomputed from
//! `[header, document]` by propagation: a line-start index and a word count ([`derived`] has
//! their layouts).
//!
//! The MMSB-independent parts are pure: [`parse`] (loading and validating, with the pre-scan that
//! sizes the pages), [`synth`] (the embedded default trace and a naive reference model),
//! [`doc`] (the gap buffer as page writes into any [`doc::PageStore`]) and [`derived`] (the
//! recompute functions and direct computations). [`apply_pure`] runs a whole trace with plain
//! vectors for pages.

pub mod derived;
pub mod doc;
pub mod parse;
pub mod run;
pub mod synth;

use std::convert::Infallible;
use std::time::{Duration, Instant};

pub use doc::{DocError, GapDoc, HEADER_SIZE, Header, PageRole, PageStore, VecPages};
pub use parse::{PatchRef, Trace, TraceError, TraceStats, load};
pub use run::{
    CheckpointRecord, DEFAULT_WAVE_EVERY, OnStart, RunError, RunOptions, RunReport, TracePages,
    VerifyReport, run, run_trace, verify,
};
pub use synth::default_trace;

/// Page sizes for a trace, from its pre-scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Layout {
    /// Document page size: the pre-scan's byte-length bound rounded up to a multiple of 64
    /// (at least 64).
    pub doc_capacity: usize,
    /// Line starts the line-index page holds (the pre-scan's line bound).
    pub max_lines: usize,
    /// Line-index page size, `4 + 4 * max_lines`.
    pub line_index_size: usize,
}

impl Layout {
    /// The layout for a trace with these statistics.
    pub fn for_stats(stats: &TraceStats) -> Layout {
        let doc_capacity = stats.max_bytes_bound.max(1).div_ceil(64) * 64;
        let max_lines = stats.max_lines_bound.max(1);
        Layout {
            doc_capacity,
            max_lines,
            line_index_size: derived::line_index_size(max_lines),
        }
    }
}

/// The result of [`apply_pure`].
#[derive(Debug, Clone)]
pub struct PureRun {
    /// Header and document pages after [`GapDoc::finish`].
    pub pages: VecPages,
    /// The line-index page, recomputed after the finish.
    pub line_index: Vec<u8>,
    /// The word-count page, recomputed after the finish.
    pub word_count: Vec<u8>,
    /// The layout used.
    pub layout: Layout,
    /// Propagation waves simulated (recomputes of both derived pages), the final one included.
    pub waves: u64,
    /// Time spent applying transactions and finishing (derived recomputes excluded).
    pub apply_time: Duration,
    /// Time spent in derived recomputes.
    pub derived_time: Duration,
}

/// Applies a whole trace with plain vectors for pages, as [`run_trace`] does with a bus: the
/// header page is written and both derived pages recomputed every `wave_every` transactions
/// (never, if `None`), and once after the finish.
pub fn apply_pure(
    trace: &Trace,
    wave_every: Option<usize>,
) -> Result<PureRun, DocError<Infallible>> {
    let layout = Layout::for_stats(trace.stats());
    let mut pages = VecPages::new(layout.doc_capacity);
    let mut line_index = vec![0u8; layout.line_index_size];
    let mut word_count = vec![0u8; derived::WORD_COUNT_SIZE];
    let (mut apply_time, mut derived_time, mut waves) = (Duration::ZERO, Duration::ZERO, 0u64);
    let mut wave = |pages: &VecPages, li: &mut Vec<u8>, wc: &mut Vec<u8>| {
        let t = Instant::now();
        derived::line_index_recompute(&[&pages.header, &pages.doc], li);
        derived::word_count_recompute(&[&pages.header, &pages.doc], wc);
        waves += 1;
        t.elapsed()
    };
    let t = Instant::now();
    let mut doc = GapDoc::create(&mut pages, trace.start_content(), layout.doc_capacity)?;
    let every = wave_every.unwrap_or(0);
    let mut mark = t;
    for i in 0..trace.txn_count() {
        doc.apply_txn_unsynced(&mut pages, trace.txn(i))?;
        if every > 0 && (i + 1) % every == 0 {
            doc.sync_header(&mut pages)?;
            apply_time += mark.elapsed();
            derived_time += wave(&pages, &mut line_index, &mut word_count);
            mark = Instant::now();
        }
    }
    doc.finish(&mut pages)?;
    apply_time += mark.elapsed();
    derived_time += wave(&pages, &mut line_index, &mut word_count);
    Ok(PureRun {
        pages,
        line_index,
        word_count,
        layout,
        waves,
        apply_time,
        derived_time,
    })
}

/// The document the pure model holds after the first `txns` transactions of `trace`.
pub fn model_text_after(trace: &Trace, txns: usize) -> Result<String, DocError<Infallible>> {
    let layout = Layout::for_stats(trace.stats());
    let mut pages = VecPages::new(layout.doc_capacity);
    let mut doc = GapDoc::create(&mut pages, trace.start_content(), layout.doc_capacity)?;
    for i in 0..txns.min(trace.txn_count()) {
        doc.apply_txn(&mut pages, trace.txn(i))?;
    }
    doc::logical_text(&pages.header, &pages.doc)
        .ok_or(DocError::Corrupt("the pages do not decode to UTF-8 text"))
}
