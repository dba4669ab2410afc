//! Following a live log: [`LogTail`] returns each committed frame once, as the bytes the log
//! holds, while a writer (in this or another process) appends.

#![allow(clippy::wildcard_imports)]
use super::*;

/// One frame as it is in the log: its bytes (header, CRC and body, exactly as written) and the
/// header fields a shipper needs without decoding again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFrame {
    /// The frame's LSN.
    pub lsn: Lsn,
    /// The frame ends a commit (its COMMIT flag).
    pub commit: bool,
    /// When the writer logged it, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// The frame, byte for byte (`frame::decode` reads it back).
    pub bytes: Vec<u8>,
}

/// The segment a tail reads now.
#[derive(Debug)]
struct TailSeg {
    reader: SegReader,
    /// Offset just past the last frame returned (a commit boundary), where the next poll reads.
    commit_end: u64,
}

/// Follows the committed frames of a log directory without a lock and without modifying it
/// (the log's writer may be another process). Each [`LogTail::poll`] returns the whole commits
/// written (`write(2)`, not necessarily fsynced) since the last one; frames after the last
/// commit (a batch still open, or one a crash left and recovery will cut) are never returned,
/// nor are torn frames.
///
/// A poll reads from the end of the last commit it returned, so a writer that crashes, recovers
/// (cutting its uncommitted tail) and writes again is followed correctly: committed frames never
/// change, and only they are returned. Segment rolls are followed (a writer rolls only at commit
/// boundaries); a segment pruned while it is read stays readable through the open descriptor.
///
/// Cost: opening the tail, or moving to another segment, reads the segment from its start up to
/// the first LSN wanted; afterwards a poll reads only new bytes plus one `fstat`, and one `stat`
/// of the next segment's name when it finds nothing new.
#[derive(Debug)]
pub struct LogTail {
    dir: PathBuf,
    /// LSN of the first frame not yet returned.
    next: u64,
    seg: Option<TailSeg>,
}

impl LogTail {
    /// A tail of the log in `dir` that returns frames from `from` on (`from` should be the
    /// first LSN of a commit, or the frames of that commit before it are skipped silently:
    /// [`LogTail::poll`] returns the rest of the commit only). [`Lsn::ZERO`] means the start.
    ///
    /// # Errors
    /// [`Error::NotALog`] when `dir` holds no log; [`Error::Io`].
    pub fn open(dir: impl AsRef<Path>, from: Lsn) -> Result<LogTail> {
        let dir = dir.as_ref().to_path_buf();
        logdir::probe_log(&dir)?;
        Ok(LogTail {
            dir,
            next: from.0.max(1),
            seg: None,
        })
    }

    /// LSN of the next frame a poll would return.
    #[must_use]
    pub fn next_lsn(&self) -> Lsn {
        Lsn(self.next)
    }

    /// Appends to `out` the committed frames written since the last poll, whole commits only,
    /// stopping after the commit that reaches `max_bytes` of frames (so at least one commit, when
    /// there is one, however large). Returns the number of frames appended (0: nothing new).
    /// Never waits.
    ///
    /// # Errors
    /// [`Error::Pruned`] when the next LSN is older than the oldest segment (a checkpoint
    /// covers it: start again from the checkpoint); [`Error::CorruptFrame`] for a complete
    /// frame that fails its checks or carries an unexpected LSN, or a segment that ends inside
    /// a commit while a later one exists; [`Error::NotRegularFile`], [`Error::BadMagic`],
    /// [`Error::UnsupportedVersion`] for a segment that is not one; [`Error::Io`]. The tail
    /// stays where it was: a later poll meets the same error.
    pub fn poll(&mut self, out: &mut Vec<RawFrame>, max_bytes: usize) -> Result<usize> {
        let before = out.len();
        let mut bytes = 0usize;
        loop {
            if self.seg.is_none() && !self.open_segment()? {
                break;
            }
            let got = self.read_commits(out, max_bytes.saturating_sub(bytes))?;
            bytes += got;
            if bytes >= max_bytes && got > 0 {
                break;
            }
            // Nothing more in this segment now: move on if the writer rolled to a new one.
            if !self.next_segment_exists()? {
                break;
            }
            self.seg = None;
        }
        Ok(out.len() - before)
    }

    /// Opens the segment that holds `next` and positions at it. False when there is none yet.
    fn open_segment(&mut self) -> Result<bool> {
        let segs = list_segments(&self.dir)?;
        let Some(i) = segs.iter().rposition(|(first, _)| first.0 <= self.next) else {
            return match segs.first() {
                Some((first, _)) => Err(Error::Pruned {
                    wanted: Lsn(self.next),
                    first: *first,
                }),
                None => Ok(false),
            };
        };
        let (first, path) = &segs[i];
        let mut r = SegReader::open(Arc::from(path.as_path()))?;
        let h = r.read_header()?;
        match check_header(path, &h, Some(*first)) {
            Ok(_) => {}
            Err(HeaderErr::Fatal(e)) => return Err(e),
            // A segment being created: its header is not all there yet.
            Err(HeaderErr::Bad(_)) if i + 1 == segs.len() => return Ok(false),
            Err(HeaderErr::Bad(reason)) => return Err(corrupt_frame(path, 0, reason)),
        }
        // Skip the frames before `next` (checked as they are read).
        let mut expected = first.0;
        let mut end = SEGMENT_HEADER_LEN as u64;
        while expected < self.next {
            match r.step()? {
                Step::Frame(v, off, len) => {
                    if v.lsn.0 != expected {
                        return Err(corrupt_frame(
                            path,
                            off,
                            format!("frame has {} where LSN {expected} was expected", v.lsn),
                        ));
                    }
                    expected += 1;
                    end = off + u64::from(len);
                }
                // The frames up to `next` are not all written yet (or `next` is past the end):
                // start reading from what is there.
                Step::End | Step::Bad { .. } => break,
            }
        }
        // When the log ends before `next - 1`, reading goes on from where it ends: nothing is
        // returned until frames appear there, and a frame with an LSN below `next` (a log that
        // lost commits it once had) is refused by `read_commits`.
        self.seg = Some(TailSeg {
            reader: r,
            commit_end: end,
        });
        Ok(true)
    }

    /// Reads whole commits from the current segment into `out`, up to about `budget` bytes;
    /// returns the bytes appended.
    fn read_commits(&mut self, out: &mut Vec<RawFrame>, budget: usize) -> Result<usize> {
        let Some(seg) = self.seg.as_mut() else {
            return Ok(0);
        };
        let r = &mut seg.reader;
        r.len = r.file.metadata().map_err(|e| r.io(e))?.len();
        r.seek(seg.commit_end);
        let mut pending: Vec<RawFrame> = Vec::new();
        let mut added = 0usize;
        let mut expected = self.next;
        loop {
            match r.step()? {
                Step::Frame(v, off, len) => {
                    let (lsn, commit, timestamp_ns) = (v.lsn, v.commit, v.timestamp_ns);
                    if lsn.0 != expected {
                        return Err(corrupt_frame(
                            &r.path,
                            off,
                            format!("frame has {lsn} where LSN {expected} was expected"),
                        ));
                    }
                    expected += 1;
                    let rel = (off - r.buf_off) as usize;
                    pending.push(RawFrame {
                        lsn,
                        commit,
                        timestamp_ns,
                        bytes: r.buf[rel..rel + len as usize].to_vec(),
                    });
                    if commit {
                        seg.commit_end = off + u64::from(len);
                        self.next = expected;
                        added += pending.iter().map(|f| f.bytes.len()).sum::<usize>();
                        out.append(&mut pending);
                        if added >= budget {
                            break;
                        }
                    }
                }
                Step::End => break,
                Step::Bad { offset, reason } => {
                    // A frame still being written (its end is not in the file yet) is waited
                    // for; a complete frame that fails its checks is damage.
                    if frame_is_complete(r, offset)? {
                        return Err(corrupt_frame(&r.path, offset, reason));
                    }
                    break;
                }
            }
        }
        if !pending.is_empty() && self.segment_named(pending[0].lsn.0 + pending.len() as u64)? {
            let seg = self.seg.as_ref().map_or(Path::new(""), |s| &*s.reader.path);
            return Err(corrupt_frame(
                seg,
                self.seg.as_ref().map_or(0, |s| s.commit_end),
                format!(
                    "segment ends with {} uncommitted frames (only the last segment may)",
                    pending.len()
                ),
            ));
        }
        Ok(added)
    }

    fn next_segment_exists(&self) -> Result<bool> {
        self.segment_named(self.next)
    }

    /// A segment file named for `first` exists.
    fn segment_named(&self, first: u64) -> Result<bool> {
        let p = self.dir.join(segment_file_name(Lsn(first)));
        match fs::symlink_metadata(&p) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(&p, e)),
        }
    }
}

/// The bytes at `offset` hold a whole frame by its length field (so a failed check there is not
/// a write in progress). A writer's `write(2)` makes data visible before it extends the file
/// over it, so a reader sees a prefix of a frame, never a frame-long region that is not yet
/// what the writer wrote.
fn frame_is_complete(r: &SegReader, offset: u64) -> Result<bool> {
    let mut lenb = [0u8; frame::LEN_LEN];
    let n = segment::read_full_at(&r.file, &mut lenb, offset + frame::LEN_OFFSET as u64)
        .map_err(|e| r.io(e))?;
    if n < frame::LEN_LEN {
        return Ok(false);
    }
    let declared = u64::from(u32::from_le_bytes(lenb));
    if !(FRAME_HEADER_LEN as u64..=MAX_FRAME_LEN as u64).contains(&declared) {
        // Not a length a writer writes: damage.
        return Ok(true);
    }
    Ok(offset + declared <= r.len)
}
