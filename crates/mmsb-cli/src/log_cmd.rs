//! `mmsb log inspect` and `mmsb log verify`.

use std::collections::BTreeMap;
use std::path::Path;

use mmsb::frame::FrameBody;
use mmsb::tlog::{LogReader, LogSummary};
use serde::Serialize;

use crate::{Fail, out};

/// One frame of `mmsb log inspect --frames`.
#[derive(Serialize)]
struct FrameRow {
    lsn: u64,
    file: String,
    offset: u64,
    len: u32,
    kind: &'static str,
    page: u64,
    epoch: u64,
    source: &'static str,
    commit: bool,
    timestamp_ns: u64,
    changed_bytes: Option<usize>,
    dense: bool,
}

#[derive(Serialize)]
struct SegmentRow {
    file: String,
    first_lsn: u64,
}

#[derive(Serialize)]
struct PageRow {
    page: u64,
    deltas: u64,
    dense: u64,
    bytes: u64,
    last_epoch: u64,
}

#[derive(Serialize)]
struct TailRow {
    file: String,
    offset: u64,
    bytes: u64,
    reason: String,
}

/// `mmsb log inspect --json`.
#[derive(Serialize)]
struct Inspected<'a> {
    path: String,
    segments: Vec<SegmentRow>,
    frames: u64,
    frame_bytes: u64,
    payload_bytes: u64,
    first_lsn: Option<u64>,
    last_lsn: Option<u64>,
    first_timestamp_ns: Option<u64>,
    last_timestamp_ns: u64,
    kinds: &'a BTreeMap<&'static str, u64>,
    delta_sources: &'a BTreeMap<&'static str, u64>,
    pages: Vec<PageRow>,
    tail: Option<TailRow>,
    frame_list: Option<Vec<FrameRow>>,
}

#[derive(Serialize)]
struct VerifiedSegment {
    file: String,
    first_lsn: u64,
    frames: u64,
    bytes: u64,
    uncommitted: u64,
}

#[derive(Serialize)]
struct VerifiedProblem<'a> {
    file: String,
    offset: u64,
    reason: &'a str,
    tail: bool,
}

#[derive(Serialize)]
struct VerifiedCheckpoint<'a> {
    file: String,
    lsn: u64,
    ok: bool,
    problem: Option<&'a str>,
}

/// `mmsb log verify --json`.
#[derive(Serialize)]
struct Verified<'a> {
    ok: bool,
    frames: u64,
    last_lsn: u64,
    segments: Vec<VerifiedSegment>,
    problems: Vec<VerifiedProblem<'a>>,
    checkpoints: Vec<VerifiedCheckpoint<'a>>,
    restore_from: Option<u64>,
    unrecoverable: Option<&'a str>,
}

pub(crate) fn inspect(
    path: &Path,
    list: bool,
    from: u64,
    limit: Option<usize>,
    json: bool,
) -> Result<(), Fail> {
    crate::exists(path)?;
    let reader = LogReader::open(path)?.with_uncommitted(true);
    let mut listed = Vec::new();
    let summary = reader.summary_with(|at| {
        let f = &at.frame;
        if list && f.lsn.0 >= from && limit.is_none_or(|l| listed.len() < l) {
            listed.push(FrameRow {
                lsn: f.lsn.0,
                file: at.file.display().to_string(),
                offset: at.offset,
                len: at.len,
                kind: f.kind().name(),
                page: f.page.0,
                epoch: f.epoch,
                source: f.source.name(),
                commit: f.commit,
                timestamp_ns: f.timestamp_ns,
                changed_bytes: at.changed_bytes(),
                dense: matches!(&f.body, FrameBody::Delta(mmsb::Body::Dense(_))),
            });
        }
    })?;
    let LogSummary {
        segments,
        frames,
        frame_bytes,
        payload_bytes: payload,
        first_lsn: first,
        last_lsn: last,
        first_timestamp_ns: first_ts,
        last_timestamp_ns: last_ts,
        kinds,
        delta_sources: sources,
        pages,
        tail,
    } = summary;
    if json {
        out::json_out(&Inspected {
            path: path.display().to_string(),
            segments: segments
                .iter()
                .map(|(l, p)| SegmentRow {
                    file: p.display().to_string(),
                    first_lsn: l.0,
                })
                .collect(),
            frames,
            frame_bytes,
            payload_bytes: payload,
            first_lsn: first.map(|l| l.0),
            last_lsn: last.map(|l| l.0),
            first_timestamp_ns: first_ts,
            last_timestamp_ns: last_ts,
            kinds: &kinds,
            delta_sources: &sources,
            pages: pages
                .iter()
                .map(|(id, t)| PageRow {
                    page: id.0,
                    deltas: t.deltas,
                    dense: t.dense,
                    bytes: t.bytes,
                    last_epoch: t.last_epoch,
                })
                .collect(),
            tail: tail.map(|t| TailRow {
                file: t.file.display().to_string(),
                offset: t.offset,
                bytes: t.bytes_dropped,
                reason: t.reason,
            }),
            frame_list: if list { Some(listed) } else { None },
        })?;
        return Ok(());
    }
    outln!("log {}", path.display());
    outln!("  segments   {}", segments.len());
    for (l, p) in &segments {
        outln!("    {}  first {}", p.display(), l);
    }
    match (first, last) {
        (Some(a), Some(b)) => outln!("  LSN        {} ..= {}", a.0, b.0),
        _ => outln!("  LSN        (empty)"),
    }
    outln!("  frames     {frames} ({frame_bytes} bytes; {payload} payload bytes)");
    for (k, n) in &kinds {
        outln!("    {k:<12} {n}");
    }
    for (s, n) in &sources {
        outln!("    deltas from {s:<12} {n}");
    }
    outln!("  pages      {}", pages.len());
    for (id, t) in pages.iter().take(20) {
        outln!(
            "    page {:<6} deltas {:<8} dense {:<6} bytes {:<10} epoch {}",
            id.0,
            t.deltas,
            t.dense,
            t.bytes,
            t.last_epoch
        );
    }
    if pages.len() > 20 {
        outln!("    ... {} more (use --json)", pages.len() - 20);
    }
    if let Some(t) = tail {
        outln!(
            "  tail       {} at offset {}: {} ({} bytes)",
            t.file.display(),
            t.offset,
            t.reason,
            t.bytes_dropped
        );
    }
    for f in listed {
        outln!(
            "  {:>8}  {:<11} page {:<5} epoch {:<7} {:<11} {:>8} B{}{}",
            f.lsn,
            f.kind,
            f.page,
            f.epoch,
            f.source,
            f.changed_bytes.map_or(String::from("-"), |n| n.to_string()),
            if f.dense { " dense" } else { "" },
            if f.commit { " commit" } else { "" },
        );
    }
    Ok(())
}

/// `mmsb log verify`: the library's verdict on a directory (frames, checkpoints, whether the
/// state can be rebuilt) or a segment file.
pub(crate) fn verify(path: &Path, json: bool) -> Result<(), Fail> {
    crate::exists(path)?;
    let r = mmsb::verify_dir(path)?;
    let log = &r.log;
    if json {
        out::json_out(&Verified {
            ok: r.is_ok(),
            frames: log.frames,
            last_lsn: log.last_lsn.0,
            segments: log
                .segments
                .iter()
                .map(|s| VerifiedSegment {
                    file: s.file.display().to_string(),
                    first_lsn: s.first_lsn.0,
                    frames: s.frames,
                    bytes: s.bytes,
                    uncommitted: s.uncommitted,
                })
                .collect(),
            problems: log
                .problems
                .iter()
                .map(|p| VerifiedProblem {
                    file: p.file.display().to_string(),
                    offset: p.offset,
                    reason: &p.reason,
                    tail: p.tail,
                })
                .collect(),
            checkpoints: r
                .checkpoints
                .iter()
                .map(|c| VerifiedCheckpoint {
                    file: c.file.display().to_string(),
                    lsn: c.lsn.0,
                    ok: c.problem.is_none(),
                    problem: c.problem.as_deref(),
                })
                .collect(),
            restore_from: r.restore_from.map(|l| l.0),
            unrecoverable: r.unrecoverable.as_deref(),
        })?;
    } else {
        for s in &log.segments {
            outln!(
                "{}: {} frames, {} bytes, first {}",
                s.file.display(),
                s.frames,
                s.bytes,
                s.first_lsn
            );
        }
        for p in &log.problems {
            outln!(
                "{}: {} at byte offset {}: {}",
                p.file.display(),
                if p.tail { "torn tail" } else { "CORRUPT" },
                p.offset,
                p.reason
            );
        }
        for c in &r.checkpoints {
            match &c.problem {
                None => outln!("{}: checkpoint at {}: ok", c.file.display(), c.lsn),
                Some(p) => outln!("{}: checkpoint at {}: BAD: {p}", c.file.display(), c.lsn),
            }
        }
        if let Some(u) = &r.unrecoverable {
            outln!("state unrecoverable: {u}");
        }
        outln!(
            "{} frames, last {}, {} checkpoints: {}",
            log.frames,
            log.last_lsn,
            r.checkpoints.len(),
            if r.is_ok() { "ok" } else { "problems found" }
        );
    }
    if r.is_ok() {
        return Ok(());
    }
    let msg = if let Some(p) = log.problems.first() {
        let what = if p.tail { "torn tail" } else { "corrupt" };
        format!(
            "{}: {what} at byte offset {}: {}",
            p.file.display(),
            p.offset,
            p.reason
        )
    } else if let Some(u) = &r.unrecoverable {
        format!("{}: state unrecoverable: {u}", path.display())
    } else if let Some(c) = r.checkpoints.iter().find(|c| c.problem.is_some()) {
        format!(
            "{}: checkpoint not usable: {}",
            c.file.display(),
            c.problem.as_deref().unwrap_or_default()
        )
    } else {
        format!("{}: problems found", path.display())
    };
    Err(crate::check_failed(msg))
}
