//! The crate's report types as Python dicts.

use mmsb::checkpoint::CheckpointInfo;
use mmsb::frame::{FrameBody, MaskEncoding};
use mmsb::tlog::{FrameAt, Truncation, VerifyReport};
use mmsb::{Body, Commit, Percentiles, Source, StartReport, Stats};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

pub(crate) fn truncation<'py>(py: Python<'py>, t: &Truncation) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("file", t.file.display().to_string())?;
    d.set_item("offset", t.offset)?;
    d.set_item("bytes_dropped", t.bytes_dropped)?;
    d.set_item("frames_dropped", t.frames_dropped)?;
    d.set_item("reason", &t.reason)?;
    Ok(d)
}

pub(crate) fn start_report(py: Python<'_>, r: &StartReport) -> PyResult<Py<PyDict>> {
    let d = PyDict::new(py);
    d.set_item("last_lsn", r.log.last_lsn.0)?;
    d.set_item("segments", r.log.segments)?;
    d.set_item("frames", r.log.frames)?;
    match &r.log.truncated {
        Some(t) => d.set_item("truncated", truncation(py, t)?)?,
        None => d.set_item("truncated", py.None())?,
    }
    d.set_item("checkpoint_lsn", r.checkpoint_lsn.map(|l| l.0))?;
    let skipped: Vec<(String, String)> = r
        .skipped_checkpoints
        .iter()
        .map(|(p, e)| (p.display().to_string(), e.to_string()))
        .collect();
    d.set_item("skipped_checkpoints", skipped)?;
    d.set_item("pages", r.pages)?;
    Ok(d.unbind())
}

pub(crate) fn checkpoint(py: Python<'_>, c: &CheckpointInfo) -> PyResult<Py<PyDict>> {
    let d = PyDict::new(py);
    d.set_item("path", c.path.display().to_string())?;
    d.set_item("lsn", c.lsn.0)?;
    d.set_item("pages", c.pages)?;
    d.set_item("bytes", c.bytes)?;
    Ok(d.unbind())
}

pub(crate) fn commit(py: Python<'_>, c: &Commit) -> PyResult<Py<PyDict>> {
    let d = PyDict::new(py);
    d.set_item("lsn", c.lsn.0)?;
    d.set_item("deltas", c.deltas)?;
    d.set_item("propagated", c.propagated)?;
    Ok(d.unbind())
}

fn percentiles<'py>(py: Python<'py>, p: &Percentiles) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("count", p.count)?;
    d.set_item("p50_ns", p.p50_ns)?;
    d.set_item("p99_ns", p.p99_ns)?;
    d.set_item("p999_ns", p.p999_ns)?;
    d.set_item("max_ns", p.max_ns)?;
    d.set_item("sum_ns", p.sum_ns)?;
    Ok(d)
}

pub(crate) fn stats(py: Python<'_>, s: &Stats) -> PyResult<Py<PyDict>> {
    let d = PyDict::new(py);
    d.set_item("pages", s.pages)?;
    d.set_item("page_bytes", s.page_bytes)?;
    d.set_item("deltas", s.deltas)?;
    d.set_item("delta_bytes", s.delta_bytes)?;
    d.set_item("propagation_deltas", s.propagation_deltas)?;
    d.set_item("propagation_delta_bytes", s.propagation_delta_bytes)?;
    d.set_item("commits", s.commits)?;
    d.set_item("waves", s.waves)?;
    d.set_item("recomputes", s.recomputes)?;
    d.set_item("cutoffs", s.cutoffs)?;
    d.set_item("stale_marks", s.stale_marks)?;
    d.set_item("graph_nodes", s.graph_nodes)?;
    d.set_item("graph_edges", s.graph_edges)?;
    d.set_item("graph_depth", s.graph_depth)?;
    d.set_item("last_lsn", s.last_lsn)?;
    d.set_item("durable_lsn", s.durable_lsn)?;
    d.set_item("log_frames", s.log_frames)?;
    d.set_item("log_bytes", s.log_bytes)?;
    d.set_item("log_syncs", s.log_syncs)?;
    d.set_item("log_write_errors", s.log_write_errors)?;
    d.set_item("recovery_truncated_frames", s.recovery_truncated_frames)?;
    d.set_item("recovery_truncated_bytes", s.recovery_truncated_bytes)?;
    d.set_item("delta_apply", percentiles(py, &s.delta_apply)?)?;
    d.set_item("log_append", percentiles(py, &s.log_append)?)?;
    d.set_item("propagation", percentiles(py, &s.propagation)?)?;
    Ok(d.unbind())
}

fn source_name(s: Source) -> &'static str {
    match s {
        Source::User => "user",
        Source::Propagation => "propagation",
        Source::Import => "import",
        _ => "unknown",
    }
}

fn mask_name(m: MaskEncoding) -> &'static str {
    match m {
        MaskEncoding::Dense => "dense",
        MaskEncoding::BitPacked => "bit_packed",
        MaskEncoding::RunLength => "run_length",
    }
}

/// One frame: `lsn, kind, page, epoch, timestamp_ns, source, commit, file, offset, length,
/// mask_encoding`, and per kind: delta `dense, payload_bytes`; create_page `size, location`;
/// metadata `key, value` (bytes or None).
pub(crate) fn frame<'py>(py: Python<'py>, at: &FrameAt) -> PyResult<Bound<'py, PyDict>> {
    let f = &at.frame;
    let d = PyDict::new(py);
    d.set_item("lsn", f.lsn.0)?;
    d.set_item("kind", f.kind().name())?;
    d.set_item("page", f.page.0)?;
    d.set_item("epoch", f.epoch)?;
    d.set_item("timestamp_ns", f.timestamp_ns)?;
    d.set_item("source", source_name(f.source))?;
    d.set_item("commit", f.commit)?;
    d.set_item("file", at.file.display().to_string())?;
    d.set_item("offset", at.offset)?;
    d.set_item("length", at.len)?;
    d.set_item("mask_encoding", mask_name(at.mask_encoding))?;
    match &f.body {
        FrameBody::Delta(Body::Dense(b)) => {
            d.set_item("dense", true)?;
            d.set_item("payload_bytes", b.len())?;
        }
        FrameBody::Delta(Body::Sparse { payload, .. }) => {
            d.set_item("dense", false)?;
            d.set_item("payload_bytes", payload.len())?;
        }
        FrameBody::CreatePage { size, location } => {
            d.set_item("size", *size)?;
            d.set_item("location", format!("{location:?}").to_lowercase())?;
        }
        FrameBody::Metadata { key, value } => {
            d.set_item("key", key)?;
            match value {
                Some(v) => d.set_item("value", PyBytes::new(py, v))?,
                None => d.set_item("value", py.None())?,
            }
        }
        FrameBody::Commit => {}
    }
    Ok(d)
}

/// The report of `log_verify`: `{"ok", "frames", "last_lsn", "segments": [...], "problems":
/// [{"file", "offset", "reason", "tail", "lsn"}]}`; `lsns[i]` is the LSN problem `i`'s frame
/// should have had, when known.
pub(crate) fn verify<'py>(
    py: Python<'py>,
    r: &VerifyReport,
    lsns: &[Option<u64>],
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("ok", r.is_ok())?;
    d.set_item("frames", r.frames)?;
    d.set_item("last_lsn", r.last_lsn.0)?;
    let segs = PyList::empty(py);
    for s in &r.segments {
        let e = PyDict::new(py);
        e.set_item("file", s.file.display().to_string())?;
        e.set_item("first_lsn", s.first_lsn.0)?;
        e.set_item("frames", s.frames)?;
        e.set_item("first_frame", s.first_frame.map(|l| l.0))?;
        e.set_item("last_frame", s.last_frame.map(|l| l.0))?;
        e.set_item("bytes", s.bytes)?;
        e.set_item("uncommitted", s.uncommitted)?;
        segs.append(e)?;
    }
    d.set_item("segments", segs)?;
    let probs = PyList::empty(py);
    for (i, p) in r.problems.iter().enumerate() {
        let e = PyDict::new(py);
        e.set_item("file", p.file.display().to_string())?;
        e.set_item("offset", p.offset)?;
        e.set_item("reason", &p.reason)?;
        e.set_item("tail", p.tail)?;
        e.set_item("lsn", lsns.get(i).copied().flatten())?;
        probs.append(e)?;
    }
    d.set_item("problems", probs)?;
    Ok(d)
}
