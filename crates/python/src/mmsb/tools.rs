//! Functions for tools that take a log by path: `log_verify`, `log_frames`, `replay`.

use std::path::{Path, PathBuf};

use mmsb::Lsn;
use mmsb::tlog::{self, FrameAt, LogReader};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::bus::target;
use super::dicts;
use super::errors::to_py;
use super::state::State;

/// For each problem, the LSN its frame should have had: the LSN after the last valid frame
/// before it in the same file (the first LSN of the file for a problem before any frame).
fn problem_lsns(path: &Path, report: &tlog::VerifyReport) -> Vec<Option<u64>> {
    // Frames by file and offset, all of them (committed or not), up to the first error.
    let mut seen: Vec<(PathBuf, u64, u64)> = Vec::new();
    if let Ok(r) = LogReader::open(path) {
        let r = r.with_uncommitted(true);
        if let Ok(frames) = r.frames() {
            for f in frames {
                match f {
                    Ok(at) => seen.push((at.file.to_path_buf(), at.offset, at.frame.lsn.0)),
                    Err(_) => break,
                }
            }
        }
    }
    report
        .problems
        .iter()
        .map(|p| {
            let before = seen
                .iter()
                .filter(|(f, off, _)| *f == p.file && *off < p.offset)
                .map(|(_, _, l)| *l)
                .max();
            match before {
                Some(l) => Some(l + 1),
                None => report
                    .segments
                    .iter()
                    .find(|s| s.file == p.file)
                    .map(|s| s.first_lsn.0),
            }
        })
        .collect()
}

/// Checks every frame (CRC, fields, LSN order) of the log at `path` (a directory or one
/// segment file), read-only, and returns the report (see `dicts::verify`).
///
/// With `strict` (default), a log that a reader refuses raises that reader's typed exception
/// (`CorruptFrameError`, `DamagedTailError`, `BadMagicError`, ...) with `lsn` (the LSN the bad
/// frame should have had, when known) and `report` (the dict) set on it; a torn tail, which
/// recovery cuts without losing a commit, is only reported.
#[pyfunction]
#[pyo3(signature = (path, *, strict = true))]
pub(crate) fn log_verify<'py>(
    py: Python<'py>,
    path: PathBuf,
    strict: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let p = path.clone();
    let (report, lsns, refusal) = py
        .detach(move || {
            let report = tlog::verify(&p)?;
            let lsns = if report.is_ok() {
                Vec::new()
            } else {
                problem_lsns(&p, &report)
            };
            // The reader's verdict (the rule recovery and replay use), when there is a problem.
            let mut refusal = None;
            if !report.is_ok() {
                let reader = LogReader::open(&p)?.with_uncommitted(true);
                let mut last: Option<u64> = None;
                for f in reader.frames()? {
                    match f {
                        Ok(at) => last = Some(at.frame.lsn.0),
                        Err(e) => {
                            refusal = Some((e, last));
                            break;
                        }
                    }
                }
            }
            Ok::<_, mmsb::Error>((report, lsns, refusal))
        })
        .map_err(|e| to_py(py, &e))?;
    let dict = dicts::verify(py, &report, &lsns)?;
    if !strict {
        return Ok(dict);
    }
    let first_hard = report.problems.iter().position(|p| !p.tail);
    let err = match (refusal, first_hard) {
        (Some((e, last)), _) => {
            let err = to_py(py, &e);
            let lsn = match &e {
                mmsb::Error::CorruptFrame { .. } | mmsb::Error::DamagedTail { .. } => last
                    .map(|l| l + 1)
                    .or_else(|| lsns.first().copied().flatten()),
                _ => None,
            };
            if lsn.is_some() {
                err.value(py).setattr("lsn", lsn)?;
            }
            Some(err)
        }
        // The reader accepts the log but verify found a defect (a bad frame in a segment it
        // did not read): report it as the corrupt frame it is.
        (None, Some(i)) => {
            let p = &report.problems[i];
            let err = to_py(
                py,
                &mmsb::Error::CorruptFrame {
                    file: p.file.clone(),
                    offset: p.offset,
                    reason: p.reason.clone(),
                },
            );
            err.value(py)
                .setattr("lsn", lsns.get(i).copied().flatten())?;
            Some(err)
        }
        (None, None) => None,
    };
    match err {
        Some(e) => {
            e.value(py).setattr("report", &dict)?;
            Err(e)
        }
        None => Ok(dict),
    }
}

/// The frames of the log at `path` (a directory or one segment file), in LSN order, from
/// `start_lsn`, at most `limit` of them, as dicts (see `dicts::frame`). Only committed frames
/// unless `uncommitted`. Raises the reader's typed exception for a corrupt log.
#[pyfunction]
#[pyo3(signature = (path, *, start_lsn = 0, limit = 10_000, uncommitted = false))]
pub(crate) fn log_frames<'py>(
    py: Python<'py>,
    path: PathBuf,
    start_lsn: u64,
    limit: usize,
    uncommitted: bool,
) -> PyResult<Vec<Bound<'py, PyDict>>> {
    if limit == 0 {
        return Err(PyValueError::new_err("limit must be at least 1"));
    }
    let frames = py
        .detach(move || {
            let reader = LogReader::open(&path)?.with_uncommitted(uncommitted);
            let mut out: Vec<FrameAt> = Vec::new();
            for f in reader.frames_from(Lsn(start_lsn))? {
                out.push(f?);
                if out.len() >= limit {
                    break;
                }
            }
            Ok::<_, mmsb::Error>(out)
        })
        .map_err(|e| to_py(py, &e))?;
    frames.iter().map(|f| dicts::frame(py, f)).collect()
}

/// Replays the log at `path` (a directory or one segment file) into a detached `State`,
/// without a lock: targets as `Bus.replay_to`.
#[pyfunction]
#[pyo3(signature = (path, *, lsn = None, page = None, epoch = None, time = None, time_ns = None))]
pub(crate) fn replay(
    py: Python<'_>,
    path: PathBuf,
    lsn: Option<u64>,
    page: Option<&Bound<'_, PyAny>>,
    epoch: Option<u64>,
    time: Option<f64>,
    time_ns: Option<u64>,
) -> PyResult<State> {
    let t = target(lsn, page, epoch, time, time_ns)?;
    let s = py
        .detach(move || mmsb::State::replay(&path, t))
        .map_err(|e| to_py(py, &e))?;
    Ok(State::new(s))
}
