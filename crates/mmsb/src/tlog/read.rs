//! Reading a log without a lock: `LogReader` and its frame iterator.

#![allow(clippy::wildcard_imports)]
use super::*;

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// A frame read from a log, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameAt {
    /// The frame.
    pub frame: Frame,
    /// The segment file it is in.
    pub file: Arc<Path>,
    /// Byte offset of its first byte in that file.
    pub offset: u64,
    /// Its length in bytes.
    pub len: u32,
    /// How a Delta frame's mask is stored ([`MaskEncoding::Dense`] for dense deltas and other
    /// kinds), for inspection tools.
    pub mask_encoding: MaskEncoding,
}

#[derive(Clone, Debug)]
pub(super) struct SegEntry {
    /// First LSN (from the name, or the header for a file whose name is not a segment name; 0
    /// if neither is readable).
    pub(super) first: Lsn,
    /// LSN in the file name, if it is a segment name.
    pub(super) name_lsn: Option<Lsn>,
    pub(super) path: Arc<Path>,
}

/// Reads a log directory (or one segment file) without taking the lock and without modifying
/// anything. Safe to use on a live log: it sees what the writer has written (`flush()`ed) by the
/// time each segment is opened.
#[derive(Debug)]
pub struct LogReader {
    path: PathBuf,
    is_dir: bool,
    include_uncommitted: bool,
    tail: Mutex<Option<Truncation>>,
}

impl LogReader {
    /// A reader of `path`: a log directory or a single segment file.
    ///
    /// # Errors
    /// [`Error::Io`] when `path` does not exist or cannot be examined; [`Error::NotALog`] for a
    /// directory that holds no log ([`logdir::probe_log`]).
    pub fn open(path: impl AsRef<Path>) -> Result<LogReader> {
        let path = path.as_ref().to_path_buf();
        let meta = fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
        if meta.is_dir() {
            logdir::probe_log(&path)?;
        }
        Ok(LogReader {
            is_dir: meta.is_dir(),
            path,
            include_uncommitted: false,
            tail: Mutex::new(None),
        })
    }

    /// Also yield frames after the last commit (an unfinished or abandoned batch), which are
    /// skipped by default so that replay never applies half a batch.
    #[must_use]
    pub fn with_uncommitted(mut self, yes: bool) -> LogReader {
        self.include_uncommitted = yes;
        self
    }

    /// The path given to [`LogReader::open`].
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The segment files now, in LSN order, with their first LSN (from the file name; for a
    /// single file with another name, from its header, or 0 if that is unreadable).
    ///
    /// # Errors
    /// [`Error::Io`] when the directory cannot be listed.
    pub fn segments(&self) -> Result<Vec<(Lsn, PathBuf)>> {
        Ok(self
            .entries()?
            .into_iter()
            .map(|e| (e.first, e.path.to_path_buf()))
            .collect())
    }

    pub(super) fn entries(&self) -> Result<Vec<SegEntry>> {
        if self.is_dir {
            return Ok(list_segments(&self.path)?
                .into_iter()
                .map(|(first, p)| SegEntry {
                    first,
                    name_lsn: Some(first),
                    path: Arc::from(p.as_path()),
                })
                .collect());
        }
        let name_lsn = self.path.file_name().and_then(parse_segment_file_name);
        let first = match name_lsn {
            Some(l) => l,
            None => {
                let mut r = SegReader::open(Arc::from(self.path.as_path()))?;
                let h = r.read_header()?;
                check_header(&self.path, &h, None).unwrap_or(Lsn::ZERO)
            }
        };
        Ok(vec![SegEntry {
            first,
            name_lsn,
            path: Arc::from(self.path.as_path()),
        }])
    }

    /// Iterates over the frames with LSN `>= lsn`, in order, across segments. Segments that end
    /// before `lsn` are skipped unread (by the first LSNs in their names); frames below `lsn` in
    /// the first segment read are checked but not yielded.
    ///
    /// By default only committed frames are yielded (see [`LogReader::with_uncommitted`]).
    /// The iterator ends at the end of the log, or at a torn tail of the last segment (an
    /// invalid frame that no valid frame follows); [`LogReader::tail`] (or [`Frames::tail`])
    /// then describes what recovery would cut. It yields `Err` and ends for a corrupt frame that
    /// valid frames follow, any invalid frame in a segment other than the last, an LSN gap or
    /// repeat ([`Error::CorruptFrame`]), an invalid end of the last segment that is damage
    /// rather than a torn write ([`Error::DamagedTail`], the same rule as recovery), a bad
    /// segment header ([`Error::BadMagic`], [`Error::UnsupportedVersion`],
    /// [`Error::CorruptFrame`]), a segment that is not a regular file
    /// ([`Error::NotRegularFile`]) or an I/O error.
    ///
    /// # Errors
    /// [`Error::Io`] when the directory cannot be listed (the segment list is taken now, so an
    /// iterator sees segments created after [`LogReader::open`]).
    pub fn frames_from(&self, lsn: Lsn) -> Result<Frames<'_>> {
        let segs = self.entries()?;
        let start = segs.partition_point(|s| s.first <= lsn).saturating_sub(1);
        *lock(&self.tail) = None;
        Ok(Frames {
            reader: self,
            segs,
            next_seg: start,
            cur: None,
            cur_last: false,
            from: lsn,
            last_lsn: None,
            since_commit: 0,
            committed: None,
            commit_end: 0,
            pending: VecDeque::new(),
            ready: VecDeque::new(),
            done: false,
            tail: None,
        })
    }

    /// [`LogReader::frames_from`] from the start.
    ///
    /// # Errors
    /// As [`LogReader::frames_from`].
    pub fn frames(&self) -> Result<Frames<'_>> {
        self.frames_from(Lsn::ZERO)
    }

    /// What the last iteration that reached the end of the log found after the last committed
    /// frame (torn bytes and/or uncommitted frames), if anything. Nothing was modified.
    #[must_use]
    pub fn tail(&self) -> Option<Truncation> {
        lock(&self.tail).clone()
    }
}

/// Iterator over the frames of a log: see [`LogReader::frames_from`].
#[derive(Debug)]
pub struct Frames<'r> {
    reader: &'r LogReader,
    segs: Vec<SegEntry>,
    next_seg: usize,
    cur: Option<SegReader>,
    cur_last: bool,
    from: Lsn,
    /// LSN of the last valid frame read (or first - 1 of the current segment).
    last_lsn: Option<u64>,
    /// Valid frames read since the last commit.
    since_commit: u64,
    /// LSN of the last committed frame read (first - 1 of the first segment read before any).
    pub(super) committed: Option<u64>,
    /// Offset just past the last committed frame in the current segment.
    commit_end: u64,
    pending: VecDeque<FrameAt>,
    ready: VecDeque<FrameAt>,
    done: bool,
    tail: Option<Truncation>,
}

impl std::fmt::Debug for SegReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegReader")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("pos", &self.pos)
            .finish()
    }
}

impl Frames<'_> {
    /// What this iteration found after the last committed frame, once it has ended (see
    /// [`LogReader::tail`]).
    #[must_use]
    pub fn tail(&self) -> Option<&Truncation> {
        self.tail.as_ref()
    }

    /// LSN of the last committed frame this iteration has read (for an iteration that ended,
    /// the last committed frame of the log); `None` before any segment was opened or when the
    /// log has none.
    #[must_use]
    pub fn last_committed(&self) -> Option<Lsn> {
        self.committed.map(Lsn)
    }

    fn finish(&mut self, tail: Option<Truncation>) {
        self.done = true;
        self.pending.clear();
        self.cur = None;
        (*lock(&self.reader.tail)).clone_from(&tail);
        self.tail = tail;
    }

    /// One step: opens a segment, or reads one frame, or ends.
    fn advance(&mut self) -> Result<()> {
        let Some(r) = self.cur.as_mut() else {
            let Some(seg) = self.segs.get(self.next_seg).cloned() else {
                self.finish(None);
                return Ok(());
            };
            self.next_seg += 1;
            let is_last = self.next_seg == self.segs.len();
            let mut r = SegReader::open(Arc::clone(&seg.path))?;
            let hdr = r.read_header()?;
            let first = match check_header(&seg.path, &hdr, seg.name_lsn) {
                Ok(first) => first,
                Err(HeaderErr::Fatal(e)) => return Err(e),
                Err(HeaderErr::Bad(reason)) => {
                    let min = self.last_lsn.unwrap_or(seg.first.0.saturating_sub(1));
                    if !is_last {
                        return Err(corrupt_frame(&seg.path, 0, reason));
                    }
                    if let Some((at, lsn)) = r.find_valid(1, min)? {
                        return Err(corrupt_frame(
                            &seg.path,
                            0,
                            format!("{reason}; yet a valid frame ({lsn}) follows at offset {at}"),
                        ));
                    }
                    if let Some(why) = r.tail_damage(0)? {
                        return Err(Error::DamagedTail {
                            file: seg.path.to_path_buf(),
                            offset: 0,
                            reason: format!("{reason}; {why}"),
                        });
                    }
                    let frames_dropped = self.since_commit;
                    self.finish(Some(Truncation {
                        file: seg.path.to_path_buf(),
                        offset: 0,
                        bytes_dropped: r.len,
                        frames_dropped,
                        reason: format!("{reason} (a crash while starting this segment)"),
                    }));
                    return Ok(());
                }
            };
            if let Some(l) = self.last_lsn
                && first.0 != l + 1
            {
                return Err(corrupt_frame(
                    &seg.path,
                    0,
                    format!("segment starts at {first} but the previous segment ends at LSN {l}"),
                ));
            }
            self.last_lsn = Some(first.0 - 1);
            if self.since_commit == 0 {
                self.committed = Some(first.0 - 1);
            }
            self.commit_end = SEGMENT_HEADER_LEN as u64;
            self.cur_last = is_last;
            self.cur = Some(r);
            return Ok(());
        };
        let path = Arc::clone(&r.path);
        let file_len = r.len;
        match r.step()? {
            Step::Frame(v, off, len) => {
                let expected = self.last_lsn.map_or(v.lsn.0, |l| l + 1);
                if v.lsn.0 != expected {
                    return Err(corrupt_frame(
                        &path,
                        off,
                        format!("frame has {} where LSN {expected} was expected", v.lsn),
                    ));
                }
                self.last_lsn = Some(v.lsn.0);
                let commit = v.commit;
                if v.lsn >= self.from {
                    let at = FrameAt {
                        frame: v.to_frame(),
                        file: path,
                        offset: off,
                        len,
                        mask_encoding: v.mask_encoding,
                    };
                    if self.reader.include_uncommitted {
                        self.ready.push_back(at);
                    } else {
                        self.pending.push_back(at);
                    }
                }
                if commit {
                    self.since_commit = 0;
                    self.committed = Some(v.lsn.0);
                    self.commit_end = off + u64::from(len);
                    self.ready.extend(self.pending.drain(..));
                } else {
                    self.since_commit += 1;
                }
            }
            Step::End => {
                if !self.cur_last {
                    if self.since_commit > 0 {
                        return Err(corrupt_frame(
                            &path,
                            self.commit_end,
                            format!(
                                "segment ends with {} uncommitted frames (only the last segment may)",
                                self.since_commit
                            ),
                        ));
                    }
                    self.cur = None;
                    return Ok(());
                }
                let tail = (self.since_commit > 0).then(|| Truncation {
                    file: path.to_path_buf(),
                    offset: self.commit_end,
                    bytes_dropped: file_len - self.commit_end,
                    frames_dropped: self.since_commit,
                    reason: format!(
                        "{} uncommitted frames after the last commit",
                        self.since_commit
                    ),
                });
                self.finish(tail);
            }
            Step::Bad { offset, reason } => {
                if !self.cur_last {
                    return Err(corrupt_frame(&path, offset, reason));
                }
                let min = self.last_lsn.unwrap_or(0);
                if let Some((at, lsn)) = r.find_valid(offset + 1, min)? {
                    return Err(corrupt_frame(
                        &path,
                        offset,
                        format!(
                            "{reason}; a valid frame ({lsn}) follows at offset {at}, so this is not a torn tail"
                        ),
                    ));
                }
                if let Some(damage) = r.tail_damage(offset)? {
                    return Err(Error::DamagedTail {
                        file: path.to_path_buf(),
                        offset,
                        reason: format!("{reason}; {damage}"),
                    });
                }
                let mut why = format!("frame at offset {offset}: {reason}");
                if self.since_commit > 0 {
                    why.push_str(&format!(
                        "; {} uncommitted frames before it",
                        self.since_commit
                    ));
                }
                let tail = Truncation {
                    file: path.to_path_buf(),
                    offset: self.commit_end,
                    bytes_dropped: file_len - self.commit_end,
                    frames_dropped: self.since_commit,
                    reason: why,
                };
                self.finish(Some(tail));
            }
        }
        Ok(())
    }
}

impl Iterator for Frames<'_> {
    type Item = Result<FrameAt>;

    fn next(&mut self) -> Option<Result<FrameAt>> {
        loop {
            if let Some(f) = self.ready.pop_front() {
                return Some(Ok(f));
            }
            if self.done {
                return None;
            }
            if let Err(e) = self.advance() {
                self.done = true;
                self.pending.clear();
                self.cur = None;
                return Some(Err(e));
            }
        }
    }
}
