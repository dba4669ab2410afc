//! `verify`: every problem of a log, read-only.

#![allow(clippy::wildcard_imports)]
use super::*;

// ---------------------------------------------------------------------------------------------
// Verify
// ---------------------------------------------------------------------------------------------

/// One segment as [`verify`] saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    /// The file.
    pub file: PathBuf,
    /// First LSN according to the file name (or the header for a file with another name).
    pub first_lsn: Lsn,
    /// Valid frames found.
    pub frames: u64,
    /// LSN of the first valid frame.
    pub first_frame: Option<Lsn>,
    /// LSN of the last valid frame.
    pub last_frame: Option<Lsn>,
    /// File size in bytes.
    pub bytes: u64,
    /// Valid frames after the last commit at the end of the last segment (an open or
    /// abandoned batch; not a problem, recovery drops them).
    pub uncommitted: u64,
}

/// A defect [`verify`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The segment file.
    pub file: PathBuf,
    /// Byte offset of the bad frame (0 for a header problem).
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
    /// True when this is a torn tail that [`TLog::open`] would cut off (an invalid frame or
    /// header at the end of the last segment that no valid frame follows); false for
    /// corruption that recovery refuses.
    pub tail: bool,
}

/// The result of [`verify`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Per segment, in LSN order.
    pub segments: Vec<SegmentSummary>,
    /// Every problem found, in file order. Empty for a sound log.
    pub problems: Vec<Problem>,
    /// Valid frames in all segments.
    pub frames: u64,
    /// LSN of the last valid frame ([`Lsn::ZERO`] if none).
    pub last_lsn: Lsn,
}

impl VerifyReport {
    /// True when no problem was found.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks every frame (CRC, fields, LSN order) of every segment of the log at `path` (a
/// directory or one segment file), read-only. Unlike recovery it does not stop at the first
/// problem: after an invalid frame it resumes at the next position where a valid frame starts
/// (scanning byte by byte), and after a bad segment it goes on with the next one.
///
/// # Errors
/// Only when `path` cannot be examined or listed, or a read fails midway ([`Error::Io`]);
/// defects of segments, including files that cannot be opened, are in
/// [`VerifyReport::problems`].
pub fn verify(path: impl AsRef<Path>) -> Result<VerifyReport> {
    let reader = LogReader::open(path)?;
    let segs = reader.entries()?;
    let mut rep = VerifyReport::default();
    let mut prev_last: Option<u64> = None;
    let n = segs.len();
    for (i, seg) in segs.iter().enumerate() {
        let is_last = i + 1 == n;
        let file = seg.path.to_path_buf();
        let mut sum = SegmentSummary {
            file: file.clone(),
            first_lsn: seg.first,
            frames: 0,
            first_frame: None,
            last_frame: None,
            bytes: 0,
            uncommitted: 0,
        };
        let problem = |offset: u64, reason: String, tail: bool| Problem {
            file: file.clone(),
            offset,
            reason,
            tail,
        };
        let opened = SegReader::open(Arc::clone(&seg.path))
            .and_then(|mut r| r.read_header().map(|h| (r, h)));
        let (mut r, hdr) = match opened {
            Ok(x) => x,
            Err(e) => {
                rep.problems.push(problem(0, e.to_string(), false));
                rep.segments.push(sum);
                continue;
            }
        };
        sum.bytes = r.len;
        let mut expected = seg.first.0;
        match check_header(&seg.path, &hdr, seg.name_lsn) {
            Ok(first) => {
                if let Some(l) = prev_last
                    && first.0 != l + 1
                {
                    rep.problems.push(problem(
                        0,
                        format!(
                            "segment starts at {first} but the previous segment ends at LSN {l}"
                        ),
                        false,
                    ));
                }
                expected = first.0;
            }
            Err(HeaderErr::Fatal(e)) => {
                rep.problems.push(problem(0, e.to_string(), false));
                rep.segments.push(sum);
                continue;
            }
            Err(HeaderErr::Bad(reason)) => {
                match r.find_valid(1, prev_last.unwrap_or(expected.saturating_sub(1)))? {
                    Some((at, lsn)) => {
                        rep.problems.push(problem(0, reason, false));
                        r.seek(at);
                        expected = lsn.0;
                    }
                    None => {
                        let damage = if is_last { r.tail_damage(0)? } else { None };
                        let torn = is_last && damage.is_none();
                        let reason = match damage {
                            Some(why) => format!("{reason}; {why}"),
                            None => reason,
                        };
                        rep.problems.push(problem(0, reason, torn));
                        rep.segments.push(sum);
                        continue;
                    }
                }
            }
        }
        let mut since_commit = 0u64;
        let mut commit_end = SEGMENT_HEADER_LEN as u64;
        let mut last_valid = expected.saturating_sub(1);
        loop {
            match r.step()? {
                Step::End => break,
                Step::Frame(v, off, len) => {
                    if v.lsn.0 != expected {
                        rep.problems.push(problem(
                            off,
                            format!("frame has {} where LSN {expected} was expected", v.lsn),
                            false,
                        ));
                    }
                    expected = v.lsn.0 + 1;
                    last_valid = v.lsn.0;
                    sum.frames += 1;
                    sum.first_frame.get_or_insert(v.lsn);
                    sum.last_frame = Some(v.lsn);
                    if v.commit {
                        since_commit = 0;
                        commit_end = off + u64::from(len);
                    } else {
                        since_commit += 1;
                    }
                }
                Step::Bad { offset, reason } => match r.find_valid(offset + 1, last_valid)? {
                    Some((at, lsn)) => {
                        rep.problems.push(problem(offset, reason, false));
                        r.seek(at);
                        expected = lsn.0;
                    }
                    None => {
                        let damage = if is_last {
                            r.tail_damage(offset)?
                        } else {
                            None
                        };
                        let torn = is_last && damage.is_none();
                        let reason = match damage {
                            Some(why) => format!("{reason}; {why}"),
                            None => reason,
                        };
                        rep.problems.push(problem(offset, reason, torn));
                        break;
                    }
                },
            }
        }
        if since_commit > 0 {
            if is_last {
                sum.uncommitted = since_commit;
            } else {
                rep.problems.push(problem(
                    commit_end,
                    format!("segment ends with {since_commit} uncommitted frames (only the last segment may)"),
                    false,
                ));
            }
        }
        rep.frames += sum.frames;
        if let Some(l) = sum.last_frame {
            rep.last_lsn = l;
        }
        prev_last = Some(sum.last_frame.map_or(expected.saturating_sub(1), |l| l.0));
        rep.segments.push(sum);
    }
    Ok(rep)
}
