//! The writer: [`TLog`] opens (taking the lock and recovering), appends, rolls segments,
//! flushes and syncs a log.

use super::syncer::{Group, GroupShared, GroupState, group_thread};
use super::*;

/// The single writer of a log directory.
///
/// Holds an exclusive `flock` on `<dir>/LOCK` from [`TLog::open`] until it is closed or
/// dropped. Every file it opens is opened close-on-exec (`O_CLOEXEC`, as `std::fs` always
/// does on Unix), so a process started later does not keep the lock past its `exec`. Appends
/// go to an in-process buffer that is written to the active segment as the [`Durability`] mode
/// says; see [`TLog::append`]. After any failed write or sync the log
/// refuses further work ([`Error::LogFailed`]): the state of the file past the last good sync is
/// unknown, and reopening (recovery) is the way to find out.
#[derive(Debug)]
pub struct TLog {
    cfg: LogConfig,
    /// The log's id (from `LOGID`, created with a new log).
    identity: LogIdentity,
    /// Holds the directory lock (released when closed).
    _lock: File,
    /// The active (last) segment, opened for appending.
    file: Arc<File>,
    /// All segments in LSN order; the last is the active one.
    segments: Vec<(Lsn, PathBuf)>,
    /// Bytes in the active segment, including the header and what is still buffered.
    seg_len: u64,
    /// Frames in the active segment, including buffered ones.
    seg_frames: u64,
    buf: Vec<u8>,
    next_lsn: u64,
    last_committed: u64,
    /// A frame without COMMIT was appended and no commit followed yet.
    in_batch: bool,
    last_ts: u64,
    commits_since_sync: u32,
    /// Last LSN written to the file (not merely buffered).
    written_lsn: u64,
    /// Last LSN known fdatasynced by this thread.
    synced_lsn: u64,
    stats: LogStats,
    group: Option<Group>,
    failed: Option<String>,
    closed: bool,
}

impl TLog {
    /// Opens (creating if needed) the log in `cfg.dir` as its single writer, and recovers it.
    ///
    /// The writer lock is an exclusive `flock` on `<dir>/LOCK`. While another open file holds
    /// it (another [`TLog`] in this or another process, or a forked child that has not yet
    /// called `exec` and so still shares a closed writer's descriptor), `open` retries for up
    /// to [`LogConfig::lock_timeout`] (default 1 s; 1 ms pauses doubling to 10 ms) before it
    /// gives up, like SQLite's busy timeout. Readers ([`LogReader`]) take no lock and never
    /// wait.
    ///
    /// Recovery reads every segment in LSN order and checks every frame (CRC, fields, LSNs
    /// consecutive within and across segments). Then, in the **last** segment only: frames
    /// after the last committed frame (an uncommitted batch) are dropped, and an invalid frame
    /// that no valid frame follows and that is a torn write (the file ends inside it, or it is
    /// zero-filled from a sector boundary on; see `SegReader::tail_damage` and
    /// `docs/failure-model/mmsb.md`) is cut off with everything after it: the file is truncated
    /// to the end of the last committed frame (`set_len`, then fsync) and the cut is described
    /// in [`RecoveryReport::truncated`], for the caller to report. A complete last frame that
    /// fails its checks was damaged after it was written, not torn: it is refused
    /// ([`Error::DamagedTail`]), as cutting it could drop committed frames. A last segment whose
    /// header is torn or zero (a crash while creating it) and that holds no valid frame is
    /// removed. Nothing is modified unless all checks pass.
    ///
    /// The directory must hold a log (a `LOGID` file, or segments of a log written before log
    /// ids, which then gets a `LOGID`), or be missing or empty with [`LogConfig::create`] (a new
    /// log is created); anything else is [`Error::NotALog`], and nothing is created.
    ///
    /// # Errors
    /// [`Error::NotALog`], [`Error::CorruptLogId`]; [`Error::DamagedTail`] (nothing modified);
    /// [`Error::NotRegularFile`] for a link, FIFO or directory where a log file should be;
    /// [`Error::Locked`] (with the time waited) when another writer (in this or another
    /// process) still holds the lock after [`LogConfig::lock_timeout`];
    /// [`Error::CorruptFrame`] (file, offset, reason; nothing modified) for an invalid frame
    /// that valid frames follow, any invalid frame in a segment other than the last, a
    /// segment that ends inside a batch while another follows, or LSNs that skip or repeat;
    /// [`Error::BadMagic`] / [`Error::UnsupportedVersion`] for a segment that is not of this
    /// format; [`Error::Io`] for failed system calls.
    pub fn open(cfg: LogConfig) -> Result<(TLog, RecoveryReport)> {
        let dir = cfg.dir.clone();
        // Decide before creating anything: a directory that holds something else is never
        // turned into a log, and without `create` neither is an empty one.
        match logdir::probe(&dir)? {
            DirKind::Missing | DirKind::Empty if !cfg.create => {
                return Err(Error::NotALog {
                    dir,
                    reason: "it is empty or missing, and this opener does not create logs".into(),
                });
            }
            DirKind::Missing => fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?,
            _ => {}
        }
        let lock_path = dir.join(LOCK_FILE);
        // `std::fs` opens with O_CLOEXEC (checked by the test
        // `every_descriptor_the_writer_keeps_is_close_on_exec`): a child process drops the
        // descriptor, and with it the lock, when it execs. Until then it shares the lock, which
        // `lock_exclusive` waits out.
        let (lock_file, _) = open_regular_with(
            &lock_path,
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
        )?;
        lock_exclusive(&lock_file, &lock_path, &dir, cfg.lock_timeout)?;
        // Under the lock: check again, and give a new or legacy log its id.
        let identity = match logdir::probe(&dir)? {
            DirKind::Log(ident) => ident,
            DirKind::Legacy => logdir::create_identity(&dir, true)?,
            DirKind::Empty if cfg.create => logdir::create_identity(&dir, false)?,
            // A creation a crash interrupted: finish it.
            DirKind::Unfinished => logdir::create_identity(&dir, false)?,
            DirKind::Empty | DirKind::Missing => {
                return Err(Error::NotALog {
                    dir,
                    reason: "the directory changed while the lock was taken".into(),
                });
            }
        };
        let mut rec = recover(&dir)?;
        if rec.segments.is_empty() && rec.next_lsn == 1 {
            rec.next_lsn = cfg.first_lsn.0.max(1);
        }
        let durable = cfg.durability != Durability::Buffered;
        let mut stats = LogStats::default();
        let mut segments = rec.segments;
        let (file, seg_len) = match segments.last() {
            Some((_, path)) => open_regular_with(path, OpenOptions::new().append(true))?,
            None => {
                let first = Lsn(rec.next_lsn);
                let (f, path) = create_segment(&dir, first, durable)?;
                stats.segments_created += 1;
                stats.fsyncs += u64::from(durable);
                segments.push((first, path));
                (f, SEGMENT_HEADER_LEN as u64)
            }
        };
        // Frames are consecutive from the segment's first LSN.
        let seg_frames = rec.next_lsn - segments.last().map_or(rec.next_lsn, |s| s.0.0);
        let file = Arc::new(file);
        let last = rec.next_lsn - 1;
        let group = match cfg.durability {
            Durability::GroupCommit(interval) => {
                let shared = Arc::new(GroupShared {
                    state: Mutex::new(GroupState {
                        file: Arc::clone(&file),
                        dirty: false,
                        dirty_lsn: last,
                        durable_lsn: last,
                        stop: false,
                        fsyncs: 0,
                        error: None,
                    }),
                    cv: Condvar::new(),
                });
                let s2 = Arc::clone(&shared);
                let handle = std::thread::Builder::new()
                    .name("mmsb-group-commit".into())
                    .spawn(move || group_thread(&s2, interval))
                    .map_err(|e| Error::io(&dir, e))?;
                Some(Group {
                    shared,
                    handle: Some(handle),
                })
            }
            _ => None,
        };
        let report = RecoveryReport {
            last_lsn: Lsn(last),
            segments: segments.len(),
            frames: rec.frames,
            truncated: rec.truncated,
        };
        let buffer_bytes = cfg.buffer_bytes;
        let log = TLog {
            identity,
            cfg,
            _lock: lock_file,
            file,
            segments,
            seg_len,
            seg_frames,
            buf: Vec::with_capacity(buffer_bytes),
            next_lsn: rec.next_lsn,
            last_committed: last,
            in_batch: false,
            last_ts: rec.last_ts,
            commits_since_sync: 0,
            written_lsn: last,
            synced_lsn: last,
            stats,
            group,
            failed: None,
            closed: false,
        };
        Ok((log, report))
    }

    /// The log's identity (its `LOGID` file), which checkpoints of this log record.
    #[must_use]
    pub fn identity(&self) -> LogIdentity {
        self.identity
    }

    /// The log directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    /// The durability mode.
    #[must_use]
    pub fn durability(&self) -> Durability {
        self.cfg.durability
    }

    /// The LSN the next append will get.
    #[must_use]
    pub fn next_lsn(&self) -> Lsn {
        Lsn(self.next_lsn)
    }

    /// The LSN of the last frame appended (committed or not; [`Lsn::ZERO`] for an empty log).
    #[must_use]
    pub fn last_lsn(&self) -> Lsn {
        Lsn(self.next_lsn - 1)
    }

    /// The LSN of the last frame that ended a batch: what recovery would keep if the frames
    /// had reached the disk.
    #[must_use]
    pub fn last_committed_lsn(&self) -> Lsn {
        Lsn(self.last_committed)
    }

    /// The highest LSN known to be on stable storage (fdatasynced by this writer or its
    /// group-commit thread since it was opened; after open, everything recovered counts).
    #[must_use]
    pub fn durable_lsn(&self) -> Lsn {
        let g = self
            .group
            .as_ref()
            .map_or(0, |g| lock(&g.shared.state).durable_lsn);
        Lsn(self.synced_lsn.max(g))
    }

    /// Counters since open.
    #[must_use]
    pub fn stats(&self) -> LogStats {
        let mut s = self.stats;
        if let Some(g) = &self.group {
            s.fsyncs += lock(&g.shared.state).fsyncs;
        }
        s.segments = self.segments.len();
        s
    }

    /// The segment files, in LSN order, with their first LSNs; the last is being written.
    #[must_use]
    pub fn segments(&self) -> &[(Lsn, PathBuf)] {
        &self.segments
    }

    fn check_ok(&self) -> Result<()> {
        match &self.failed {
            Some(cause) => Err(Error::LogFailed {
                dir: self.cfg.dir.clone(),
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Records a write/sync failure: the log refuses further work.
    fn fail(&mut self, path: &Path, e: io::Error) -> Error {
        self.failed
            .get_or_insert_with(|| format!("{}: {e}", path.display()));
        Error::io(path, e)
    }

    fn active_path(&self) -> PathBuf {
        self.segments
            .last()
            .map(|s| s.1.clone())
            .unwrap_or_default()
    }

    /// Writes the buffer to the active segment.
    fn write_out(&mut self) -> Result<()> {
        self.check_ok()?;
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = (&*self.file).write_all(&self.buf) {
            let p = self.active_path();
            return Err(self.fail(&p, e));
        }
        self.stats.writes += 1;
        self.buf.clear();
        if self.buf.capacity() > 2 * self.cfg.buffer_bytes.max(4096) {
            self.buf.shrink_to(self.cfg.buffer_bytes);
        }
        self.written_lsn = self.next_lsn - 1;
        Ok(())
    }

    /// fdatasyncs the active segment (the buffer must have been written).
    fn sync_file(&mut self) -> Result<()> {
        self.check_ok()?;
        if let Err(e) = self.file.sync_data() {
            let p = self.active_path();
            return Err(self.fail(&p, e));
        }
        self.stats.fsyncs += 1;
        self.commits_since_sync = 0;
        self.synced_lsn = self.written_lsn;
        Ok(())
    }

    /// Appends one frame and returns its LSN and timestamp.
    ///
    /// The frame gets the next LSN and the current wall-clock time (clamped so timestamps
    /// never decrease along the log), and is encoded into the buffer (no allocation once
    /// the buffer has its capacity). If the buffer cannot take it, the buffer is written first.
    /// If the previous frame ended a batch and this one would grow the active segment beyond
    /// `segment_bytes`, the log first rolls to a new segment (`{next_lsn:020}.tlog`; unless
    /// [`Durability::Buffered`], the old segment is fdatasynced and the new one and the
    /// directory are fsynced). `commit = true` (and any [`BodyRef::Commit`] frame) ends a
    /// batch: the frames since the previous commit become committed and the [`Durability`]
    /// rule runs.
    ///
    /// # Errors
    /// Invalid bodies are refused before an LSN is assigned, and the log stays usable:
    /// [`Error::InvalidPageSize`] for an empty or larger than [`MAX_PAGE_SIZE`] dense body or
    /// page size, [`Error::OutOfBounds`] for a mask reaching past [`MAX_PAGE_SIZE`],
    /// [`Error::MaskPayloadMismatch`], [`Error::MetadataKeyTooLong`],
    /// [`Error::FrameTooLarge`]. A failed write or sync returns [`Error::Io`] and makes every
    /// later call return [`Error::LogFailed`] (the frame may or may not be in the file;
    /// reopen to find out).
    pub fn append(
        &mut self,
        page: PageId,
        epoch: u64,
        source: Source,
        commit: bool,
        body: BodyRef<'_>,
    ) -> Result<Appended> {
        self.check_ok()?;
        validate(page, body)?;
        let plan = frame::plan(body);
        if plan.len > MAX_FRAME_LEN {
            return Err(Error::FrameTooLarge {
                bytes: plan.len,
                max: MAX_FRAME_LEN,
            });
        }
        let commit = commit || matches!(body, BodyRef::Commit);
        self.make_room(plan.len)?;
        let ts = now_ns().max(self.last_ts);
        self.last_ts = ts;
        let lsn = Lsn(self.next_lsn);
        frame::encode_planned(
            &mut self.buf,
            &plan,
            lsn,
            page,
            epoch,
            ts,
            source,
            commit,
            body,
        );
        self.appended(lsn, plan.len, commit)?;
        Ok(Appended {
            lsn,
            timestamp_ns: ts,
        })
    }

    /// Before a frame of `len` bytes is put into the buffer: rolls the segment at a commit
    /// boundary when it would grow past `segment_bytes`, and writes the buffer out when the
    /// frame does not fit in it.
    fn make_room(&mut self, len: usize) -> Result<()> {
        if !self.in_batch
            && self.seg_frames > 0
            && self.seg_len + len as u64 > self.cfg.segment_bytes
        {
            self.roll()?;
        }
        if !self.buf.is_empty() && self.buf.len() + len > self.cfg.buffer_bytes {
            self.write_out()?;
        }
        Ok(())
    }

    /// After a frame of `len` bytes with LSN `lsn` went into the buffer: the counters, and at a
    /// commit the durability rule.
    fn appended(&mut self, lsn: Lsn, len: usize, commit: bool) -> Result<()> {
        self.next_lsn += 1;
        self.seg_len += len as u64;
        self.seg_frames += 1;
        self.stats.frames += 1;
        self.stats.bytes += len as u64;
        if commit {
            self.last_committed = lsn.0;
            self.in_batch = false;
            self.on_commit()
        } else {
            self.in_batch = true;
            Ok(())
        }
    }

    /// Appends a frame encoded elsewhere, byte for byte: what a replica does with its leader's
    /// frames, so that its log holds the same bytes (CRC and timestamp included) at the same
    /// LSNs. The frame must decode ([`frame::decode_view`]: length, CRC, fields), be exactly
    /// `bytes.len()` long, carry the next LSN ([`TLog::next_lsn`]) and a timestamp no earlier
    /// than the previous frame's. Segment rolls, buffering and the durability rule are those of
    /// [`TLog::append`]; the COMMIT flag in the frame decides whether it ends a batch.
    ///
    /// # Errors
    /// [`Error::ReplicaFrame`] (naming the LSN expected) for a frame that fails any check;
    /// nothing is written then and the log stays usable. Write and sync failures as
    /// [`TLog::append`].
    pub fn append_raw(&mut self, bytes: &[u8]) -> Result<Appended> {
        self.check_ok()?;
        let lsn = Lsn(self.next_lsn);
        let refuse = |reason: String| Error::ReplicaFrame { lsn, reason };
        let (v, n) = decode_view(bytes).map_err(|e| refuse(e.to_string()))?;
        if n != bytes.len() {
            return Err(refuse(format!(
                "{} bytes follow the {n}-byte frame",
                bytes.len() - n
            )));
        }
        if v.lsn != lsn {
            return Err(refuse(format!("the frame carries {}", v.lsn)));
        }
        if v.timestamp_ns < self.last_ts {
            return Err(refuse(format!(
                "its timestamp {} ns is before the previous frame's {} ns",
                v.timestamp_ns, self.last_ts
            )));
        }
        let commit = v.commit;
        let ts = v.timestamp_ns;
        self.make_room(n)?;
        self.buf.extend_from_slice(bytes);
        self.last_ts = ts;
        self.appended(lsn, n, commit)?;
        Ok(Appended {
            lsn,
            timestamp_ns: ts,
        })
    }

    /// The durability rule at a commit.
    fn on_commit(&mut self) -> Result<()> {
        match self.cfg.durability {
            Durability::Buffered => Ok(()),
            Durability::Flush => self.write_out(),
            Durability::FsyncEvery(n) => {
                self.write_out()?;
                self.commits_since_sync += 1;
                if self.commits_since_sync >= n.max(1) {
                    self.sync_file()
                } else {
                    Ok(())
                }
            }
            Durability::GroupCommit(_) => {
                self.write_out()?;
                self.notify_group()
            }
        }
    }

    /// Tells the group-commit thread there is something to sync; reports its failures.
    fn notify_group(&mut self) -> Result<()> {
        let Some(g) = &self.group else { return Ok(()) };
        let mut st = lock(&g.shared.state);
        if let Some(e) = st.error.clone() {
            drop(st);
            self.failed.get_or_insert_with(|| e.clone());
            return Err(Error::LogFailed {
                dir: self.cfg.dir.clone(),
                cause: e,
            });
        }
        st.dirty = true;
        st.dirty_lsn = self.written_lsn;
        drop(st);
        g.shared.cv.notify_one();
        Ok(())
    }

    /// Closes the active segment and starts a new one at `next_lsn`.
    fn roll(&mut self) -> Result<()> {
        self.write_out()?;
        let durable = self.cfg.durability != Durability::Buffered;
        if durable {
            self.sync_file()?;
        }
        let first = Lsn(self.next_lsn);
        let (f, path) = match create_segment(&self.cfg.dir, first, durable) {
            Ok(x) => x,
            Err(e) => {
                self.failed.get_or_insert_with(|| e.to_string());
                return Err(e);
            }
        };
        self.stats.segments_created += 1;
        self.stats.fsyncs += u64::from(durable);
        self.file = Arc::new(f);
        if let Some(g) = &self.group {
            lock(&g.shared.state).file = Arc::clone(&self.file);
        }
        self.segments.push((first, path));
        self.seg_len = SEGMENT_HEADER_LEN as u64;
        self.seg_frames = 0;
        Ok(())
    }

    /// Writes the buffer to the file (`write(2)`; no fsync). Afterwards a [`LogReader`] sees
    /// every frame appended so far (it yields those up to the last commit).
    ///
    /// # Errors
    /// [`Error::Io`] for a failed write (the log then refuses further work),
    /// [`Error::LogFailed`] after an earlier failure.
    pub fn flush(&mut self) -> Result<()> {
        self.write_out()
    }

    /// Writes the buffer and fdatasyncs the active segment: every frame appended so far is on
    /// stable storage when this returns.
    ///
    /// # Errors
    /// As [`TLog::flush`], also for a failed fdatasync.
    pub fn sync(&mut self) -> Result<()> {
        self.write_out()?;
        self.sync_file()
    }

    /// Deletes whole segments whose frames all have LSNs below `lsn` (for example everything a
    /// checkpoint at `lsn - 1` covers), oldest first, then fsyncs the directory. The active
    /// segment is never deleted. Returns the number of segments deleted.
    ///
    /// # Errors
    /// [`Error::Io`] when a file cannot be removed (the ones before it are gone).
    pub fn prune_before(&mut self, lsn: Lsn) -> Result<usize> {
        let mut removed = 0;
        while self.segments.len() > 1 && self.segments[1].0 <= lsn {
            let path = self.segments[0].1.clone();
            fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            self.segments.remove(0);
            removed += 1;
        }
        if removed > 0 {
            sync_dir(&self.cfg.dir)?;
        }
        Ok(removed)
    }

    /// Stops the group-commit thread (which syncs what is still unsynced first).
    fn stop_group(&mut self) -> Option<String> {
        let mut g = self.group.take()?;
        lock(&g.shared.state).stop = true;
        g.shared.cv.notify_all();
        if let Some(h) = g.handle.take() {
            let _ = h.join();
        }
        let st = lock(&g.shared.state);
        self.stats.fsyncs += st.fsyncs;
        st.error.clone()
    }

    /// Writes and fdatasyncs everything, stops the group-commit thread and releases the lock.
    ///
    /// # Errors
    /// As [`TLog::sync`]; also a failure the group-commit thread met. The lock is released
    /// either way.
    pub fn close(mut self) -> Result<()> {
        let r = self.sync();
        let g = self.stop_group();
        self.closed = true;
        r?;
        match g {
            Some(cause) => Err(Error::LogFailed {
                dir: self.cfg.dir.clone(),
                cause,
            }),
            None => Ok(()),
        }
    }
}

impl Drop for TLog {
    /// Best effort: writes the buffer (errors ignored), stops the group-commit thread (which
    /// syncs what it had pending). Does not fsync otherwise; use [`TLog::close`] for that.
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.write_out();
        }
        let _ = self.stop_group();
    }
}

/// Checks what [`frame::encode_into`] does not, so that every frame the log writes decodes.
fn validate(page: PageId, body: BodyRef<'_>) -> Result<()> {
    match body {
        BodyRef::Delta(Body::Dense(b)) => {
            if b.is_empty() || b.len() > MAX_PAGE_SIZE {
                return Err(Error::InvalidPageSize {
                    size: b.len(),
                    max: MAX_PAGE_SIZE,
                });
            }
        }
        BodyRef::Delta(Body::Sparse { mask, payload }) => {
            let end = mask.last_byte();
            if end > MAX_PAGE_SIZE {
                return Err(Error::OutOfBounds {
                    page,
                    offset: mask.start_word() * 64,
                    end,
                    size: MAX_PAGE_SIZE,
                });
            }
            let n = mask.count();
            if n != payload.len() {
                return Err(Error::MaskPayloadMismatch {
                    mask_bytes: n,
                    payload_bytes: payload.len(),
                });
            }
        }
        BodyRef::CreatePage { size, .. } => {
            if size == 0 || size as usize > MAX_PAGE_SIZE {
                return Err(Error::InvalidPageSize {
                    size: size as usize,
                    max: MAX_PAGE_SIZE,
                });
            }
        }
        BodyRef::Metadata { key, .. } => {
            if key.len() > MAX_METADATA_KEY_LEN {
                return Err(Error::MetadataKeyTooLong {
                    len: key.len(),
                    max: MAX_METADATA_KEY_LEN,
                });
            }
        }
        BodyRef::Commit => {}
    }
    Ok(())
}

/// Creates segment `first` in `dir` with its header; with `durable`, fdatasyncs it and fsyncs
/// the directory.
fn create_segment(dir: &Path, first: Lsn, durable: bool) -> Result<(File, PathBuf)> {
    let path = dir.join(segment_file_name(first));
    let mut f = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    f.write_all(&encode_header(first, now_ns()))
        .map_err(|e| Error::io(&path, e))?;
    if durable {
        f.sync_data().map_err(|e| Error::io(&path, e))?;
        sync_dir(dir)?;
    }
    Ok((f, path))
}
