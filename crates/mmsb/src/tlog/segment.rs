//! Segment files: names, the header, and reading frames one by one (`SegReader`).

#![allow(clippy::wildcard_imports)]
use super::*;

/// Opens `path` read-only as a regular file: `O_NOFOLLOW` (a symbolic link is refused, not
/// followed), `O_NONBLOCK` (a FIFO or device does not block the open) and `O_CLOEXEC`, then
/// `fstat` checks the type. Returns the file and its length.
///
/// # Errors
/// [`Error::NotRegularFile`] for a link, FIFO, socket, device or directory; [`Error::Io`].
pub(crate) fn open_regular(path: &Path) -> Result<(File, u64)> {
    open_regular_with(path, OpenOptions::new().read(true))
}

/// [`open_regular`] with other open options (write access, create); the same checks.
///
/// # Errors
/// As [`open_regular`].
pub(crate) fn open_regular_with(path: &Path, opts: &mut OpenOptions) -> Result<(File, u64)> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let f = match opts.custom_flags(flags.bits() as i32).open(path) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(Error::NotRegularFile {
                file: path.to_path_buf(),
                found: "a symbolic link",
            });
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    let meta = f.metadata().map_err(|e| Error::io(path, e))?;
    let t = meta.file_type();
    if !t.is_file() {
        let found = if t.is_dir() {
            "a directory"
        } else if t.is_fifo() {
            "a FIFO"
        } else if t.is_socket() {
            "a socket"
        } else if t.is_symlink() {
            "a symbolic link"
        } else {
            "a device"
        };
        return Err(Error::NotRegularFile {
            file: path.to_path_buf(),
            found,
        });
    }
    Ok((f, meta.len()))
}

/// Alignment of the blocks a file system writes back independently (a sector). After a power
/// loss, a block the kernel had not written back reads as zeros.
const WRITEBACK_BLOCK: u64 = 512;
/// Largest tail that [`SegReader::tail_damage`] reads to test for a damaged length field.
const LENGTH_PROBE_MAX: u64 = 64 << 20;

/// Reads into `buf` at `offset` until it is full or the file ends; returns the bytes read.
pub(crate) fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The file name of the segment whose first frame has LSN `first`.
#[must_use]
pub fn segment_file_name(first: Lsn) -> String {
    format!("{:020}.tlog", first.0)
}

/// The first LSN encoded in a segment file name (`{first_lsn:020}.tlog`), if it is one.
#[must_use]
pub fn parse_segment_file_name(name: &OsStr) -> Option<Lsn> {
    let digits = name.to_str()?.strip_suffix(".tlog")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Lsn)
}

/// The segment files of the log directory `dir`, in LSN order.
///
/// # Errors
/// [`Error::Io`] when the directory cannot be read.
pub fn list_segments(dir: &Path) -> Result<Vec<(Lsn, PathBuf)>> {
    let mut v = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if let Some(lsn) = parse_segment_file_name(&entry.file_name()) {
            v.push((lsn, entry.path()));
        }
    }
    v.sort();
    Ok(v)
}

// The segment header, as in `docs/mmsb-format.md` section 1.1 (all integers little endian).
// Each offset is the previous field's offset plus its length; `encode_header` and
// `check_header` both use these constants.
//
// offset size field
//      0    8 magic        "MMSBTLOG"
//      8    2 version      1
//     10    2 header_len   40 (the offset of the first frame)
//     12    4 flags        0 (reserved)
//     16    8 first_lsn    equals the LSN in the file name; >= 1
//     24    8 created_ns   wall clock at creation, ns since the Unix epoch (informative)
//     32    4 crc          CRC32C of bytes 0..32
//     36    4 reserved     0
const MAGIC_OFFSET: usize = 0;
const MAGIC_LEN: usize = SEGMENT_MAGIC.len();
const VERSION_OFFSET: usize = MAGIC_OFFSET + MAGIC_LEN;
const VERSION_LEN: usize = 2;
const HEADER_LEN_OFFSET: usize = VERSION_OFFSET + VERSION_LEN;
const HEADER_LEN_LEN: usize = 2;
const FLAGS_OFFSET: usize = HEADER_LEN_OFFSET + HEADER_LEN_LEN;
const FLAGS_LEN: usize = 4;
const FIRST_LSN_OFFSET: usize = FLAGS_OFFSET + FLAGS_LEN;
const FIRST_LSN_LEN: usize = 8;
const CREATED_OFFSET: usize = FIRST_LSN_OFFSET + FIRST_LSN_LEN;
const CREATED_LEN: usize = 8;
/// The CRC covers every byte before it.
const CRC_OFFSET: usize = CREATED_OFFSET + CREATED_LEN;
const CRC_LEN: usize = 4;
const RESERVED_OFFSET: usize = CRC_OFFSET + CRC_LEN;
const RESERVED_LEN: usize = 4;
const _: () = assert!(RESERVED_OFFSET + RESERVED_LEN == SEGMENT_HEADER_LEN);

pub(super) fn encode_header(first: Lsn, created_ns: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[MAGIC_OFFSET..MAGIC_OFFSET + MAGIC_LEN].copy_from_slice(&SEGMENT_MAGIC);
    h[VERSION_OFFSET..VERSION_OFFSET + VERSION_LEN].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h[HEADER_LEN_OFFSET..HEADER_LEN_OFFSET + HEADER_LEN_LEN]
        .copy_from_slice(&(SEGMENT_HEADER_LEN as u16).to_le_bytes());
    // FLAGS: zero.
    h[FIRST_LSN_OFFSET..FIRST_LSN_OFFSET + FIRST_LSN_LEN].copy_from_slice(&first.0.to_le_bytes());
    h[CREATED_OFFSET..CREATED_OFFSET + CREATED_LEN].copy_from_slice(&created_ns.to_le_bytes());
    let crc = crc32c::crc32c(&h[..CRC_OFFSET]);
    h[CRC_OFFSET..CRC_OFFSET + CRC_LEN].copy_from_slice(&crc.to_le_bytes());
    // RESERVED: zero.
    h
}

/// Why a segment header is not valid.
pub(super) enum HeaderErr {
    /// Not a segment of this format: bad magic, unknown version, or a checksummed header that
    /// contradicts the file name. Never repaired.
    Fatal(Error),
    /// Torn or damaged (short, zero-filled, CRC mismatch): a crash while starting the segment
    /// if nothing valid follows.
    Bad(String),
}

/// Checks the first bytes of a segment file (`h`: up to [`SEGMENT_HEADER_LEN`] bytes, fewer
/// when the file is shorter). `name_lsn` is the LSN in the file name, when it has one. Returns
/// the first LSN.
pub(super) fn check_header(
    path: &Path,
    h: &[u8],
    name_lsn: Option<Lsn>,
) -> std::result::Result<Lsn, HeaderErr> {
    if name_lsn == Some(Lsn::ZERO) {
        return Err(HeaderErr::Fatal(corrupt_frame(
            path,
            0,
            "segment named for LSN 0 (LSNs start at 1)",
        )));
    }
    let bad_magic = || {
        HeaderErr::Fatal(Error::BadMagic {
            file: path.to_path_buf(),
            what: "log segment",
        })
    };
    let n = h.len().min(SEGMENT_HEADER_LEN);
    let h = &h[..n];
    let all_zero = h.iter().all(|&b| b == 0);
    if n < MAGIC_OFFSET + MAGIC_LEN {
        return if all_zero || h == &SEGMENT_MAGIC[..n] {
            Err(HeaderErr::Bad(format!(
                "segment header torn: the file has only {n} bytes"
            )))
        } else {
            Err(bad_magic())
        };
    }
    if h[MAGIC_OFFSET..MAGIC_OFFSET + MAGIC_LEN] != SEGMENT_MAGIC {
        return if all_zero {
            Err(HeaderErr::Bad("segment header is all zeros".into()))
        } else {
            Err(bad_magic())
        };
    }
    if n < VERSION_OFFSET + VERSION_LEN {
        return Err(HeaderErr::Bad(format!(
            "segment header torn: the file has only {n} bytes"
        )));
    }
    let version = u16::from_le_bytes([h[VERSION_OFFSET], h[VERSION_OFFSET + 1]]);
    if version != SEGMENT_VERSION {
        return Err(HeaderErr::Fatal(Error::UnsupportedVersion {
            file: path.to_path_buf(),
            found: version,
            supported: SEGMENT_VERSION,
        }));
    }
    if n < SEGMENT_HEADER_LEN {
        return Err(HeaderErr::Bad(format!(
            "segment header torn: the file has only {n} bytes"
        )));
    }
    let u32_at = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let stored = u32_at(CRC_OFFSET);
    let computed = crc32c::crc32c(&h[..CRC_OFFSET]);
    if stored != computed {
        return Err(HeaderErr::Bad(format!(
            "segment header CRC mismatch: stored {stored:08x}, computed {computed:08x}"
        )));
    }
    let header_len = u16::from_le_bytes([h[HEADER_LEN_OFFSET], h[HEADER_LEN_OFFSET + 1]]);
    if usize::from(header_len) != SEGMENT_HEADER_LEN
        || u32_at(FLAGS_OFFSET) != 0
        || u32_at(RESERVED_OFFSET) != 0
    {
        return Err(HeaderErr::Fatal(corrupt_frame(
            path,
            0,
            format!("segment header: length {header_len} or reserved fields invalid for version 1"),
        )));
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&h[FIRST_LSN_OFFSET..FIRST_LSN_OFFSET + FIRST_LSN_LEN]);
    let first = Lsn(u64::from_le_bytes(first));
    if first == Lsn::ZERO {
        return Err(HeaderErr::Fatal(corrupt_frame(
            path,
            0,
            "segment header: first LSN is 0",
        )));
    }
    if let Some(name) = name_lsn
        && name != first
    {
        return Err(HeaderErr::Fatal(corrupt_frame(
            path,
            0,
            format!("segment header says it starts at {first} but its file name says {name}"),
        )));
    }
    Ok(first)
}

/// Reads one segment file frame by frame through a buffer (positioned reads; never seeks).
pub(super) struct SegReader {
    pub(super) path: Arc<Path>,
    pub(super) file: File,
    /// File length when opened (or the shorter length found later, if it shrank).
    pub(super) len: u64,
    pub(super) buf: Vec<u8>,
    /// File offset of `buf[0]`.
    pub(super) buf_off: u64,
    /// File offset of the next frame. Invariant: `buf_off <= pos <= buf_off + buf.len()`.
    pub(super) pos: u64,
}

/// One step of a [`SegReader`].
pub(super) enum Step<'a> {
    /// A valid frame at `offset`, `len` bytes long.
    Frame(FrameView<'a>, u64, u32),
    /// The file ends exactly after the previous frame.
    End,
    /// The bytes at `offset` are not a valid frame (torn or corrupt).
    Bad { offset: u64, reason: String },
}

impl SegReader {
    pub(super) fn open(path: Arc<Path>) -> Result<SegReader> {
        let (file, len) = open_regular(&path)?;
        Ok(SegReader {
            path,
            file,
            len,
            buf: Vec::new(),
            buf_off: 0,
            pos: 0,
        })
    }

    pub(super) fn io(&self, e: io::Error) -> Error {
        Error::io(&*self.path, e)
    }

    /// Decides whether the invalid bytes at `offset` of the **last** segment, which no valid
    /// frame follows, are a torn write (`None`: a crash left them; recovery may discard them)
    /// or damage (`Some(why)`: they were written whole and changed later, so the frames they
    /// held, possibly committed ones, would be lost by cutting them).
    ///
    /// Torn: the file ends inside the frame's length field, or before the end the length
    /// declares (a write that stopped), unless the length itself is what is damaged (the frame
    /// checks out when its length is taken to be the bytes left); or everything from a
    /// [`WRITEBACK_BLOCK`]-aligned offset to the end of the file is zero (blocks a power loss
    /// left unwritten, the file size already extended). Damaged: every other case, in
    /// particular a complete frame with a flipped bit.
    pub(super) fn tail_damage(&self, offset: u64) -> Result<Option<String>> {
        let avail = self.len.saturating_sub(offset);
        if avail < (frame::LEN_OFFSET + frame::LEN_LEN) as u64 {
            return Ok(None);
        }
        let nz = self.end_of_nonzero(offset).map_err(|e| self.io(e))?;
        let aligned = nz.max(offset).div_ceil(WRITEBACK_BLOCK) * WRITEBACK_BLOCK;
        if nz <= offset || aligned < self.len {
            return Ok(None);
        }
        let mut lenb = [0u8; frame::LEN_LEN];
        read_full_at(&self.file, &mut lenb, offset + frame::LEN_OFFSET as u64)
            .map_err(|e| self.io(e))?;
        let declared = u64::from(u32::from_le_bytes(lenb));
        let in_range = (FRAME_HEADER_LEN as u64..=MAX_FRAME_LEN as u64).contains(&declared);
        if in_range && declared > avail {
            // A write that stopped, unless a damaged length is what makes it look so.
            if avail >= FRAME_HEADER_LEN as u64 && avail <= LENGTH_PROBE_MAX {
                let mut f = vec![0u8; avail as usize];
                let n = read_full_at(&self.file, &mut f, offset).map_err(|e| self.io(e))?;
                f.truncate(n);
                if n as u64 == avail {
                    f[frame::LEN_OFFSET..frame::LEN_OFFSET + frame::LEN_LEN]
                        .copy_from_slice(&(avail as u32).to_le_bytes());
                    if decode_view(&f).is_ok() {
                        return Ok(Some(format!(
                            "the frame's length field says {declared} bytes, but with the {avail} bytes that are there the frame checks out: its length field is damaged"
                        )));
                    }
                }
            }
            return Ok(None);
        }
        Ok(Some(if in_range {
            format!(
                "the {declared}-byte frame is complete in the file and not zero-filled, so it was written whole and damaged later (not a torn write)"
            )
        } else {
            "the bytes are neither a frame nor zero fill, so they were damaged after being written (not a torn write)".to_string()
        }))
    }

    /// Offset just past the last non-zero byte at or after `from` (`from` if all are zero).
    fn end_of_nonzero(&self, from: u64) -> io::Result<u64> {
        let mut end = self.len;
        let mut chunk = vec![0u8; 64 * 1024];
        while end > from {
            let start = end.saturating_sub(chunk.len() as u64).max(from);
            let want = (end - start) as usize;
            let n = read_full_at(&self.file, &mut chunk[..want], start)?;
            if let Some(i) = chunk[..n].iter().rposition(|&b| b != 0) {
                return Ok(start + i as u64 + 1);
            }
            if n < want {
                return Ok(start + n as u64);
            }
            end = start;
        }
        Ok(from)
    }

    /// The header bytes (fewer than [`SEGMENT_HEADER_LEN`] if the file is shorter); positions
    /// the reader at the first frame.
    pub(super) fn read_header(&mut self) -> Result<Vec<u8>> {
        let mut h = vec![0u8; SEGMENT_HEADER_LEN];
        let n = read_full_at(&self.file, &mut h, 0).map_err(|e| self.io(e))?;
        h.truncate(n);
        self.seek(SEGMENT_HEADER_LEN as u64);
        Ok(h)
    }

    pub(super) fn seek(&mut self, pos: u64) {
        self.buf.clear();
        self.buf_off = pos;
        self.pos = pos;
    }

    /// Makes at least `need` bytes from `pos` available in `buf` (fewer only at the end of the
    /// file); returns how many are available.
    pub(super) fn fill(&mut self, need: usize) -> io::Result<usize> {
        let have = (self.buf_off + self.buf.len() as u64 - self.pos) as usize;
        let remaining = self.len.saturating_sub(self.pos) as usize;
        if have >= need || have >= remaining {
            return Ok(have);
        }
        let consumed = (self.pos - self.buf_off) as usize;
        self.buf.drain(..consumed);
        self.buf_off = self.pos;
        let target = need.max(READ_CHUNK).min(remaining);
        self.buf.resize(target, 0);
        let got = read_full_at(&self.file, &mut self.buf[have..], self.pos + have as u64)?;
        self.buf.truncate(have + got);
        if have + got < target {
            // The file shrank since it was opened.
            self.len = self.pos + (have + got) as u64;
        }
        Ok(self.buf.len())
    }

    /// Reads the frame at `pos`.
    pub(super) fn step(&mut self) -> Result<Step<'_>> {
        let offset = self.pos;
        if offset >= self.len {
            return Ok(Step::End);
        }
        let have = self.fill(FRAME_HEADER_LEN).map_err(|e| self.io(e))?;
        let rel = (offset - self.buf_off) as usize;
        let Some(len) = peek_len(&self.buf[rel..rel + have]) else {
            return Ok(Step::Bad {
                offset,
                reason: format!(
                    "torn frame: the file ends {have} bytes into a frame's length field"
                ),
            });
        };
        let len = len as usize;
        if !(FRAME_HEADER_LEN..=MAX_FRAME_LEN).contains(&len) {
            return Ok(Step::Bad {
                offset,
                reason: format!(
                    "frame length {len} is outside {FRAME_HEADER_LEN}..={MAX_FRAME_LEN}"
                ),
            });
        }
        if offset + len as u64 > self.len {
            return Ok(Step::Bad {
                offset,
                reason: format!(
                    "torn frame: a {len}-byte frame would end at {} but the file has {} bytes",
                    offset + len as u64,
                    self.len
                ),
            });
        }
        let have = self.fill(len).map_err(|e| self.io(e))?;
        if have < len {
            return Ok(Step::Bad {
                offset,
                reason: "torn frame: the file shrank while being read".into(),
            });
        }
        let rel = (offset - self.buf_off) as usize;
        match decode_view(&self.buf[rel..rel + len]) {
            Ok((view, n)) => {
                self.pos = offset + n as u64;
                Ok(Step::Frame(view, offset, n as u32))
            }
            Err(e) => Ok(Step::Bad {
                offset,
                reason: e.to_string(),
            }),
        }
    }

    /// The first position at or after `from` where a valid frame with an LSN above `min_lsn`
    /// starts, with that LSN. Scans byte by byte, using a cheap header test before the CRC.
    pub(super) fn find_valid(&self, from: u64, min_lsn: u64) -> Result<Option<(u64, Lsn)>> {
        let mut p = from;
        let mut win = Vec::new();
        let mut tmp = Vec::new();
        while p + FRAME_HEADER_LEN as u64 <= self.len {
            let want = ((self.len - p) as usize).min(SCAN_WINDOW + FRAME_HEADER_LEN);
            win.resize(want, 0);
            let got = read_full_at(&self.file, &mut win, p).map_err(|e| self.io(e))?;
            win.truncate(got);
            if got < FRAME_HEADER_LEN {
                break;
            }
            let positions = (got - FRAME_HEADER_LEN + 1).min(SCAN_WINDOW);
            for i in 0..positions {
                let Some((len, _)) = plausible_header(&win[i..], min_lsn) else {
                    continue;
                };
                let at = p + i as u64;
                if at + len as u64 > self.len {
                    continue;
                }
                let bytes: &[u8] = if i + len <= got {
                    &win[i..i + len]
                } else {
                    tmp.resize(len, 0);
                    let n = read_full_at(&self.file, &mut tmp, at).map_err(|e| self.io(e))?;
                    &tmp[..n]
                };
                if let Ok((v, _)) = decode_view(bytes) {
                    return Ok(Some((at, v.lsn)));
                }
            }
            p += positions as u64;
        }
        Ok(None)
    }
}
