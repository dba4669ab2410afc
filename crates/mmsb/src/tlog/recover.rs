//! Recovery of a log directory by its writer.

#![allow(clippy::wildcard_imports)]
use super::*;

// ---------------------------------------------------------------------------------------------
// Recovery
// ---------------------------------------------------------------------------------------------

/// What recovery leaves: the segment list and the next LSN.
pub(super) struct Recovered {
    pub(super) segments: Vec<(Lsn, PathBuf)>,
    pub(super) next_lsn: u64,
    pub(super) frames: u64,
    pub(super) truncated: Option<Truncation>,
    /// Largest timestamp of a kept frame (new timestamps are clamped to it).
    pub(super) last_ts: u64,
}

/// Scans every segment of `dir`; repairs only the tail of the last one (see the module docs).
/// Modifies nothing unless every check passed.
pub(super) fn recover(dir: &Path) -> Result<Recovered> {
    let mut segs = list_segments(dir)?;
    let n = segs.len();
    // LSN of the last frame kept so far (first - 1 for a segment without kept frames).
    let mut last: Option<u64> = None;
    let mut frames = 0u64;
    let mut truncated = None;
    let mut remove_last = false;
    let mut cut: Option<(PathBuf, u64)> = None;
    let mut last_ts = 0u64;
    for (i, (first, path)) in segs.iter().enumerate() {
        let is_last = i + 1 == n;
        if let Some(l) = last
            && first.0 != l + 1
        {
            return Err(corrupt_frame(
                path,
                0,
                format!("segment starts at {first} but the previous segment ends at LSN {l}"),
            ));
        }
        let mut r = SegReader::open(Arc::from(path.as_path()))?;
        let hdr = r.read_header()?;
        match check_header(path, &hdr, Some(*first)) {
            Ok(_) => {}
            Err(HeaderErr::Fatal(e)) => return Err(e),
            Err(HeaderErr::Bad(reason)) => {
                if !is_last {
                    return Err(corrupt_frame(path, 0, reason));
                }
                if let Some((at, lsn)) = r.find_valid(1, first.0 - 1)? {
                    return Err(corrupt_frame(
                        path,
                        0,
                        format!("{reason}; yet a valid frame ({lsn}) follows at offset {at}"),
                    ));
                }
                if let Some(why) = r.tail_damage(0)? {
                    return Err(Error::DamagedTail {
                        file: path.clone(),
                        offset: 0,
                        reason: format!("{reason}; {why}"),
                    });
                }
                truncated = Some(Truncation {
                    file: path.clone(),
                    offset: 0,
                    bytes_dropped: r.len,
                    frames_dropped: 0,
                    reason: format!(
                        "{reason} (a crash while starting this segment); the file was removed"
                    ),
                });
                remove_last = true;
                last.get_or_insert(first.0 - 1);
                break;
            }
        }
        let mut expected = first.0;
        let mut commit_end = SEGMENT_HEADER_LEN as u64;
        let mut last_commit: Option<u64> = None;
        let mut seg_frames = 0u64;
        let mut uncommitted = 0u64;
        let mut torn: Option<(u64, String)> = None;
        let mut batch_ts = 0u64;
        loop {
            match r.step()? {
                Step::End => break,
                Step::Frame(v, off, len) => {
                    if v.lsn.0 != expected {
                        return Err(corrupt_frame(
                            path,
                            off,
                            format!("frame has {} where LSN {expected} was expected", v.lsn),
                        ));
                    }
                    expected += 1;
                    seg_frames += 1;
                    batch_ts = batch_ts.max(v.timestamp_ns);
                    if v.commit {
                        commit_end = off + u64::from(len);
                        last_commit = Some(v.lsn.0);
                        uncommitted = 0;
                        last_ts = last_ts.max(batch_ts);
                    } else {
                        uncommitted += 1;
                    }
                }
                Step::Bad { offset, reason } => {
                    if !is_last {
                        return Err(corrupt_frame(path, offset, reason));
                    }
                    if let Some((at, lsn)) = r.find_valid(offset + 1, expected - 1)? {
                        return Err(corrupt_frame(
                            path,
                            offset,
                            format!(
                                "{reason}; a valid frame ({lsn}) follows at offset {at}, so this is not a torn tail"
                            ),
                        ));
                    }
                    if let Some(why) = r.tail_damage(offset)? {
                        return Err(Error::DamagedTail {
                            file: path.clone(),
                            offset,
                            reason: format!("{reason}; {why}"),
                        });
                    }
                    torn = Some((offset, reason));
                    break;
                }
            }
        }
        if !is_last && uncommitted > 0 {
            return Err(corrupt_frame(
                path,
                commit_end,
                format!(
                    "segment ends with {uncommitted} uncommitted frames (only the last segment may)"
                ),
            ));
        }
        frames += seg_frames - uncommitted;
        last = Some(last_commit.unwrap_or(first.0 - 1));
        if is_last && commit_end < r.len {
            let mut reason = match &torn {
                Some((off, why)) => format!("frame at offset {off}: {why}"),
                None => String::new(),
            };
            if uncommitted > 0 {
                if !reason.is_empty() {
                    reason.push_str("; ");
                }
                reason.push_str(&format!(
                    "{uncommitted} uncommitted frames after the last commit"
                ));
            }
            truncated = Some(Truncation {
                file: path.clone(),
                offset: commit_end,
                bytes_dropped: r.len - commit_end,
                frames_dropped: uncommitted,
                reason,
            });
            cut = Some((path.clone(), commit_end));
        }
    }
    // Every check passed: now repair.
    if let Some((path, len)) = cut {
        let (f, _) = segment::open_regular_with(&path, OpenOptions::new().write(true))?;
        f.set_len(len)
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io(&path, e))?;
    }
    if remove_last && let Some((_, path)) = segs.pop() {
        fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        sync_dir(dir)?;
    }
    Ok(Recovered {
        segments: segs,
        next_lsn: last.map_or(1, |l| l + 1),
        frames,
        truncated,
        last_ts,
    })
}
