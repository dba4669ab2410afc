//! The log frame codec: one self-checking, length-prefixed record per logged change.
//!
//! Every change to the store (a delta, a page creation, a metadata edit, the end of a batch) is
//! written to the write-ahead log as one **frame**. The byte layout is specified in
//! `docs/mmsb-format.md`; in short (all integers little endian):
//!
//! ```text
//! offset  size  field
//!      0     4  len           bytes of the whole frame, this field included (44..=MAX_FRAME_LEN)
//!      4     4  crc           CRC32C (Castagnoli) of bytes 0..4 followed by bytes 8..len
//!      8     8  lsn           log sequence number
//!     16     8  page          page id (0 for a Commit frame)
//!     24     8  epoch         the page's epoch after the change
//!     32     8  timestamp_ns  wall clock, nanoseconds since the Unix epoch
//!     40     1  kind          1 Delta, 2 CreatePage, 3 Metadata, 4 Commit
//!     41     1  source        Source::code()
//!     42     1  mask enc.     Delta: 0 dense, 1 bit-packed, 2 run-length; other kinds: 0
//!     43     1  flags         bit 0 = COMMIT; other bits are zero
//!     44     -  body          depends on kind (and mask encoding)
//! ```
//!
//! [`encode_into`] appends one frame to a `Vec<u8>` without allocating when the vector has the
//! capacity; [`decode`] (allocating [`Frame`]) and [`decode_view`] (zero-copy [`FrameView`])
//! read one back. Decoding never panics: every length is bounds-checked, the CRC is verified
//! before any body field is trusted, and an impossible frame is reported as
//! [`DecodeError::Corrupt`] with a reason.

use std::fmt;

use crate::delta::{Body, Delta, Mask, Source};
use crate::page::{Location, Lsn, MAX_PAGE_SIZE, PageId};

/// Size of the fixed frame header (`len` through `flags`), in bytes. The smallest frame (a
/// Commit frame) is exactly this long.
pub const FRAME_HEADER_LEN: usize = 44;

/// The largest `len` a frame may declare: [`MAX_PAGE_SIZE`] (a dense delta of the largest
/// page) plus an eighth of it (the largest bit-packed mask, which a sparse delta of the largest
/// page may carry next to its payload) plus 64 KiB of slack for headers and metadata keys.
/// About 1.13 GiB. A larger declared length is reported as corrupt without reading further, so
/// a flipped high bit in `len` never makes a reader allocate gigabytes.
pub const MAX_FRAME_LEN: usize = MAX_PAGE_SIZE + MAX_PAGE_SIZE / 8 + 64 * 1024;

/// Bit 0 of the `flags` byte: this frame ends a batch (the frames up to and including it are
/// committed).
pub const FLAG_COMMIT: u8 = 1;

/// The longest metadata key a frame (or checkpoint) can carry, in bytes of UTF-8.
pub const MAX_METADATA_KEY_LEN: usize = u16::MAX as usize;

/// What a frame records.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// A delta applied to a page (on-disk code 1).
    Delta,
    /// A page was created (code 2).
    CreatePage,
    /// A metadata key of a page was set or removed (code 3).
    Metadata,
    /// The end of a multi-frame batch; carries no data (code 4).
    Commit,
}

impl FrameKind {
    /// The on-disk code (1..=4).
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            FrameKind::Delta => 1,
            FrameKind::CreatePage => 2,
            FrameKind::Metadata => 3,
            FrameKind::Commit => 4,
        }
    }

    /// The kind with on-disk code `code`, if any.
    #[must_use]
    pub fn from_code(code: u8) -> Option<FrameKind> {
        match code {
            1 => Some(FrameKind::Delta),
            2 => Some(FrameKind::CreatePage),
            3 => Some(FrameKind::Metadata),
            4 => Some(FrameKind::Commit),
            _ => None,
        }
    }

    /// Lower-case name (`delta`, `create_page`, `metadata`, `commit`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            FrameKind::Delta => "delta",
            FrameKind::CreatePage => "create_page",
            FrameKind::Metadata => "metadata",
            FrameKind::Commit => "commit",
        }
    }
}

/// How the body of a Delta frame stores its mask (the `mask encoding` byte).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum MaskEncoding {
    /// Code 0: a dense delta, no mask; the body is the whole page. Also the code of every
    /// non-Delta frame.
    Dense,
    /// Code 1: `start_word u32`, `n_words u32`, then `n_words` little-endian `u64` mask words
    /// (the [`Mask`] representation as is).
    BitPacked,
    /// Code 2: the number of runs, then per run the gap from the end of the previous run (from
    /// byte 0 for the first) and the run length, all LEB128 varints.
    RunLength,
}

impl MaskEncoding {
    /// The on-disk code (0..=2).
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            MaskEncoding::Dense => 0,
            MaskEncoding::BitPacked => 1,
            MaskEncoding::RunLength => 2,
        }
    }

    /// The encoding with on-disk code `code`, if any.
    #[must_use]
    pub fn from_code(code: u8) -> Option<MaskEncoding> {
        match code {
            0 => Some(MaskEncoding::Dense),
            1 => Some(MaskEncoding::BitPacked),
            2 => Some(MaskEncoding::RunLength),
            _ => None,
        }
    }
}

/// The data of a frame (owned). See [`BodyRef`] for the borrowed form the encoder takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameBody {
    /// A delta's body (dense or sparse).
    Delta(Body),
    /// A page of `size` bytes (1..=[`MAX_PAGE_SIZE`]) was created at `location`.
    CreatePage {
        /// Page size in bytes.
        size: u32,
        /// Where its bytes live.
        location: Location,
    },
    /// Metadata key `key` was set to `value` (`None`: the key was removed).
    Metadata {
        /// The key (at most [`MAX_METADATA_KEY_LEN`] bytes of UTF-8).
        key: String,
        /// The new value, or `None` to remove the key.
        value: Option<Vec<u8>>,
    },
    /// End of a multi-frame batch.
    Commit,
}

/// A frame body borrowed from the caller: what [`encode_into`] and
/// [`crate::tlog::TLog::append`] take, so logging never copies the payload first.
#[derive(Copy, Clone, Debug)]
pub enum BodyRef<'a> {
    /// A delta's body.
    Delta(&'a Body),
    /// A page creation.
    CreatePage {
        /// Page size in bytes (1..=[`MAX_PAGE_SIZE`]).
        size: u32,
        /// Where its bytes live.
        location: Location,
    },
    /// A metadata change.
    Metadata {
        /// The key (at most [`MAX_METADATA_KEY_LEN`] bytes).
        key: &'a str,
        /// The new value, or `None` to remove the key.
        value: Option<&'a [u8]>,
    },
    /// End of a batch.
    Commit,
}

impl BodyRef<'_> {
    /// The kind of frame this body makes.
    #[must_use]
    pub fn kind(&self) -> FrameKind {
        match self {
            BodyRef::Delta(_) => FrameKind::Delta,
            BodyRef::CreatePage { .. } => FrameKind::CreatePage,
            BodyRef::Metadata { .. } => FrameKind::Metadata,
            BodyRef::Commit => FrameKind::Commit,
        }
    }
}

impl FrameBody {
    /// The borrowed form.
    #[must_use]
    pub fn as_ref(&self) -> BodyRef<'_> {
        match self {
            FrameBody::Delta(b) => BodyRef::Delta(b),
            FrameBody::CreatePage { size, location } => BodyRef::CreatePage {
                size: *size,
                location: *location,
            },
            FrameBody::Metadata { key, value } => BodyRef::Metadata {
                key,
                value: value.as_deref(),
            },
            FrameBody::Commit => BodyRef::Commit,
        }
    }
}

/// One decoded log frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Its log sequence number.
    pub lsn: Lsn,
    /// The page it concerns (`PageId(0)` for a Commit frame).
    pub page: PageId,
    /// The page's epoch after the change (0 where it has no meaning).
    pub epoch: u64,
    /// Wall-clock time it was logged, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// Who produced the change.
    pub source: Source,
    /// True when this frame ends a batch (always true for a Commit frame).
    pub commit: bool,
    /// The data.
    pub body: FrameBody,
}

impl Frame {
    /// The kind of this frame.
    #[must_use]
    pub fn kind(&self) -> FrameKind {
        self.body.as_ref().kind()
    }

    /// The delta this frame records (`None` for other kinds).
    #[must_use]
    pub fn into_delta(self) -> Option<Delta> {
        match self.body {
            FrameBody::Delta(body) => Some(Delta {
                page: self.page,
                lsn: self.lsn,
                epoch: self.epoch,
                timestamp_ns: self.timestamp_ns,
                source: self.source,
                body,
            }),
            _ => None,
        }
    }

    /// Bytes this frame occupies when encoded (the `len` field).
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        encoded_len(self.body.as_ref())
    }

    /// Appends the encoding of this frame to `out` (see [`encode_into`]); returns its length.
    ///
    /// # Panics
    /// As [`encode_into`].
    pub fn encode(&self, out: &mut Vec<u8>) -> usize {
        encode_into(
            out,
            self.lsn,
            self.page,
            self.epoch,
            self.timestamp_ns,
            self.source,
            self.commit,
            self.body.as_ref(),
        )
    }
}

/// Why [`decode`] failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer ends before the frame does: fewer than 4 bytes (no length yet), or fewer than
    /// the declared length. At the end of a log file this is a torn (partially written) frame.
    Incomplete,
    /// The bytes cannot be a frame: bad CRC, impossible length, unknown kind, source, mask
    /// encoding or flag, mask and payload that disagree, invalid UTF-8, trailing bytes... The
    /// string says which.
    Corrupt(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Incomplete => f.write_str("incomplete frame"),
            DecodeError::Corrupt(r) => f.write_str(r),
        }
    }
}

impl std::error::Error for DecodeError {}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// Number of bytes of the LEB128 encoding of `v` (1..=10).
#[inline]
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Index of the first set bit at or after bit `from` of `words`.
#[inline]
fn next_set(words: &[u64], from: usize) -> Option<usize> {
    let mut i = from / 64;
    let mut w = *words.get(i)? & (!0u64 << (from % 64));
    loop {
        if w != 0 {
            return Some(i * 64 + w.trailing_zeros() as usize);
        }
        i += 1;
        w = *words.get(i)?;
    }
}

/// Index of the first clear bit at or after bit `from` of `words` (`64 * words.len()` if none).
#[inline]
fn next_clear(words: &[u64], from: usize) -> usize {
    let end = words.len() * 64;
    let mut i = from / 64;
    let Some(&first) = words.get(i) else {
        return end;
    };
    let mut w = !first & (!0u64 << (from % 64));
    loop {
        if w != 0 {
            return i * 64 + w.trailing_zeros() as usize;
        }
        i += 1;
        match words.get(i) {
            Some(&x) => w = !x,
            None => return end,
        }
    }
}

/// Calls `f(offset, len)` for each maximal run of set bits of `mask`, in increasing order,
/// with `offset` absolute; stops early when `f` returns false.
#[inline]
fn runs_until(mask: &Mask, mut f: impl FnMut(usize, usize) -> bool) {
    let words = mask.words();
    let base = mask.start_word() * 64;
    let mut pos = 0;
    while let Some(s) = next_set(words, pos) {
        let e = next_clear(words, s);
        if !f(base + s, e - s) {
            return;
        }
        pos = e;
    }
}

/// What the encoder decided for a body: its total frame length and mask encoding.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Plan {
    /// The frame's `len`.
    pub(crate) len: usize,
    /// The mask encoding code.
    pub(crate) enc: u8,
    /// Number of runs (run-length encoding only).
    pub(crate) runs: usize,
}

/// Decides the mask encoding and computes the frame length for `body`, without allocating.
/// For a sparse body the run-length size is counted only until it reaches the bit-packed size.
pub(crate) fn plan(body: BodyRef<'_>) -> Plan {
    match body {
        BodyRef::Delta(Body::Dense(bytes)) => Plan {
            len: FRAME_HEADER_LEN + bytes.len(),
            enc: 0,
            runs: 0,
        },
        BodyRef::Delta(Body::Sparse { mask, payload }) => {
            let packed = 8 + 8 * mask.words().len();
            let mut rle = 0usize; // without the run-count prefix
            let mut runs = 0usize;
            let mut prev_end = 0usize;
            let mut fits = true;
            runs_until(mask, |off, len| {
                rle += varint_len((off - prev_end) as u64) + varint_len(len as u64);
                runs += 1;
                prev_end = off + len;
                fits = rle < packed;
                fits
            });
            let rle_total = rle + varint_len(runs as u64);
            if fits && rle_total < packed {
                Plan {
                    len: FRAME_HEADER_LEN + rle_total + payload.len(),
                    enc: 2,
                    runs,
                }
            } else {
                Plan {
                    len: FRAME_HEADER_LEN + packed + payload.len(),
                    enc: 1,
                    runs: 0,
                }
            }
        }
        BodyRef::CreatePage { .. } => Plan {
            len: FRAME_HEADER_LEN + 5,
            enc: 0,
            runs: 0,
        },
        BodyRef::Metadata { key, value } => Plan {
            len: FRAME_HEADER_LEN + 2 + key.len() + 1 + value.map_or(0, <[u8]>::len),
            enc: 0,
            runs: 0,
        },
        BodyRef::Commit => Plan {
            len: FRAME_HEADER_LEN,
            enc: 0,
            runs: 0,
        },
    }
}

/// Bytes the frame for `body` occupies (its `len` field), including the header. For a sparse
/// delta this includes the smaller of the two mask encodings, which is what [`encode_into`]
/// writes.
#[must_use]
pub fn encoded_len(body: BodyRef<'_>) -> usize {
    plan(body).len
}

/// Appends exactly one frame to `out` and returns its length in bytes.
///
/// The frame is encoded straight into `out` (after a single `reserve` of the exact length, a
/// no-op when `out` has the capacity, so steady-state logging does not allocate); then `len` and
/// `crc` are patched in. A sparse delta's mask is written bit-packed or run-length, whichever is
/// smaller (bit-packed on a tie). A Commit body always gets the COMMIT flag, whatever `commit`
/// says.
///
/// This function does not validate the body against a page: a sparse body whose payload length
/// is not its mask's bit count, a mask reaching past [`MAX_PAGE_SIZE`], a page size outside
/// `1..=MAX_PAGE_SIZE` or an empty dense body make a frame that [`decode`] rejects as corrupt.
/// [`crate::tlog::TLog::append`] checks all of these first.
///
/// # Panics
/// If a metadata key is longer than [`MAX_METADATA_KEY_LEN`] bytes, or the frame would be longer
/// than [`MAX_FRAME_LEN`] (only possible with a huge metadata value or a body for a page larger
/// than [`MAX_PAGE_SIZE`]).
#[allow(clippy::too_many_arguments)]
pub fn encode_into(
    out: &mut Vec<u8>,
    lsn: Lsn,
    page: PageId,
    epoch: u64,
    timestamp_ns: u64,
    source: Source,
    commit: bool,
    body: BodyRef<'_>,
) -> usize {
    let p = plan(body);
    encode_planned(
        out,
        &p,
        lsn,
        page,
        epoch,
        timestamp_ns,
        source,
        commit,
        body,
    );
    p.len
}

/// [`encode_into`] with the plan already made (the log computes it once to decide on
/// buffering and segment roll).
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn encode_planned(
    out: &mut Vec<u8>,
    p: &Plan,
    lsn: Lsn,
    page: PageId,
    epoch: u64,
    timestamp_ns: u64,
    source: Source,
    commit: bool,
    body: BodyRef<'_>,
) {
    if let BodyRef::Metadata { key, .. } = body {
        assert!(
            key.len() <= MAX_METADATA_KEY_LEN,
            "metadata key of {} bytes is too long",
            key.len()
        );
    }
    assert!(
        p.len <= MAX_FRAME_LEN,
        "frame of {} bytes exceeds MAX_FRAME_LEN",
        p.len
    );
    let commit = commit || matches!(body, BodyRef::Commit);
    let start = out.len();
    out.reserve(p.len);
    let mut h = [0u8; FRAME_HEADER_LEN];
    h[0..4].copy_from_slice(&(p.len as u32).to_le_bytes());
    h[8..16].copy_from_slice(&lsn.0.to_le_bytes());
    h[16..24].copy_from_slice(&page.0.to_le_bytes());
    h[24..32].copy_from_slice(&epoch.to_le_bytes());
    h[32..40].copy_from_slice(&timestamp_ns.to_le_bytes());
    h[40] = body.kind().code();
    h[41] = source.code();
    h[42] = p.enc;
    h[43] = if commit { FLAG_COMMIT } else { 0 };
    out.extend_from_slice(&h);
    match body {
        BodyRef::Delta(Body::Dense(bytes)) => out.extend_from_slice(bytes),
        BodyRef::Delta(Body::Sparse { mask, payload }) => {
            if p.enc == 2 {
                put_varint(out, p.runs as u64);
                let mut prev_end = 0usize;
                runs_until(mask, |off, len| {
                    put_varint(out, (off - prev_end) as u64);
                    put_varint(out, len as u64);
                    prev_end = off + len;
                    true
                });
            } else {
                out.extend_from_slice(&(mask.start_word() as u32).to_le_bytes());
                out.extend_from_slice(&(mask.words().len() as u32).to_le_bytes());
                for w in mask.words() {
                    out.extend_from_slice(&w.to_le_bytes());
                }
            }
            out.extend_from_slice(payload);
        }
        BodyRef::CreatePage { size, location } => {
            out.extend_from_slice(&size.to_le_bytes());
            out.push(location.code());
        }
        BodyRef::Metadata { key, value } => {
            out.extend_from_slice(&(key.len() as u16).to_le_bytes());
            out.extend_from_slice(key.as_bytes());
            match value {
                Some(v) => {
                    out.push(1);
                    out.extend_from_slice(v);
                }
                None => out.push(0),
            }
        }
        BodyRef::Commit => {}
    }
    debug_assert_eq!(out.len() - start, p.len);
    let f = &out[start..];
    let crc = crc32c::crc32c_append(crc32c::crc32c(&f[0..4]), &f[8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

#[inline]
fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

#[inline]
fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn corrupt(reason: impl Into<String>) -> DecodeError {
    DecodeError::Corrupt(reason.into())
}

/// Reads a minimal LEB128 varint of at most 10 bytes from `b[*at..]`.
fn get_varint(b: &[u8], at: &mut usize) -> Result<u64, DecodeError> {
    let mut v = 0u64;
    for i in 0..10 {
        let Some(&byte) = b.get(*at) else {
            return Err(corrupt("run-length mask: varint runs past the mask"));
        };
        *at += 1;
        let bits = u64::from(byte & 0x7f);
        if i == 9 && byte > 1 {
            return Err(corrupt("run-length mask: varint overflows 64 bits"));
        }
        v |= bits << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Err(corrupt("run-length mask: non-minimal varint"));
            }
            return Ok(v);
        }
    }
    Err(corrupt("run-length mask: varint longer than 10 bytes"))
}

/// The body of a [`FrameView`], borrowed from the decoded buffer. Already validated.
#[derive(Copy, Clone, Debug)]
enum BodyView<'a> {
    Dense(&'a [u8]),
    BitPacked {
        start_word: u32,
        words: &'a [u8],
        payload: &'a [u8],
    },
    RunLength {
        runs: &'a [u8],
        n_runs: usize,
        payload: &'a [u8],
    },
    CreatePage {
        size: u32,
        location: Location,
    },
    Metadata {
        key: &'a str,
        value: Option<&'a [u8]>,
    },
    Commit,
}

/// A validated frame borrowed from a buffer (what [`decode_view`] returns): the header fields,
/// with the body still in encoded form. Checking a log with views allocates nothing; turn one
/// into an owned [`Frame`] with [`FrameView::to_frame`].
#[derive(Copy, Clone, Debug)]
pub struct FrameView<'a> {
    /// Its log sequence number.
    pub lsn: Lsn,
    /// The page it concerns.
    pub page: PageId,
    /// The page's epoch after the change.
    pub epoch: u64,
    /// Wall-clock time it was logged, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// Who produced the change.
    pub source: Source,
    /// True when the frame ends a batch.
    pub commit: bool,
    /// What it records.
    pub kind: FrameKind,
    /// How a Delta frame stores its mask ([`MaskEncoding::Dense`] for other kinds).
    pub mask_encoding: MaskEncoding,
    /// The frame's length in bytes (its `len` field).
    pub len: u32,
    body: BodyView<'a>,
}

impl FrameView<'_> {
    /// Number of page bytes a Delta frame writes (the page size for a dense delta, the mask's
    /// bit count for a sparse one); 0 for other kinds.
    #[must_use]
    pub fn payload_len(&self) -> usize {
        match self.body {
            BodyView::Dense(p) => p.len(),
            BodyView::BitPacked { payload, .. } | BodyView::RunLength { payload, .. } => {
                payload.len()
            }
            _ => 0,
        }
    }

    /// The owned frame.
    #[must_use]
    pub fn to_frame(&self) -> Frame {
        let body = match self.body {
            BodyView::Dense(p) => FrameBody::Delta(Body::Dense(p.to_vec())),
            BodyView::BitPacked {
                start_word,
                words,
                payload,
            } => {
                let words: Vec<u64> = words.chunks_exact(8).map(|c| le_u64(c, 0)).collect();
                let mask = Mask::from_words(start_word as usize, words);
                FrameBody::Delta(Body::Sparse {
                    mask,
                    payload: payload.to_vec(),
                })
            }
            BodyView::RunLength {
                runs,
                n_runs,
                payload,
            } => {
                let mask = rle_to_mask(runs, n_runs);
                FrameBody::Delta(Body::Sparse {
                    mask,
                    payload: payload.to_vec(),
                })
            }
            BodyView::CreatePage { size, location } => FrameBody::CreatePage { size, location },
            BodyView::Metadata { key, value } => FrameBody::Metadata {
                key: key.to_owned(),
                value: value.map(<[u8]>::to_vec),
            },
            BodyView::Commit => FrameBody::Commit,
        };
        Frame {
            lsn: self.lsn,
            page: self.page,
            epoch: self.epoch,
            timestamp_ns: self.timestamp_ns,
            source: self.source,
            commit: self.commit,
            body,
        }
    }
}

/// Builds the mask of an already validated run-length encoding.
fn rle_to_mask(runs: &[u8], n_runs: usize) -> Mask {
    let mut spans = Vec::with_capacity(n_runs);
    let mut at = 0;
    let mut pos = 0usize;
    for _ in 0..n_runs {
        // Validated by decode_view: these cannot fail.
        let gap = get_varint(runs, &mut at).unwrap_or(0) as usize;
        let len = get_varint(runs, &mut at).unwrap_or(0) as usize;
        spans.push((pos + gap, len));
        pos += gap + len;
    }
    let Some(&(first, _)) = spans.first() else {
        return Mask::new();
    };
    let start_word = first / 64;
    let mut words = vec![0u64; pos.div_ceil(64) - start_word];
    for (off, len) in spans {
        let mut p = off;
        let end = off + len;
        while p < end {
            let w = p / 64 - start_word;
            let bit = p % 64;
            let n = (end - p).min(64 - bit);
            words[w] |= if n == 64 {
                !0u64
            } else {
                ((1u64 << n) - 1) << bit
            };
            p += n;
        }
    }
    Mask::from_words(start_word, words)
}

/// Cheap plausibility test of the 44 header bytes at the start of `h` (no CRC): used to skip
/// positions quickly when scanning for a valid frame after a corrupt one. Returns the declared
/// length and LSN when the fixed fields are in range and the LSN is above `min_lsn`.
pub(crate) fn plausible_header(h: &[u8], min_lsn: u64) -> Option<(usize, u64)> {
    if h.len() < FRAME_HEADER_LEN {
        return None;
    }
    let len = le_u32(h, 0) as usize;
    let lsn = le_u64(h, 8);
    let ok = (FRAME_HEADER_LEN..=MAX_FRAME_LEN).contains(&len)
        && lsn > min_lsn
        && FrameKind::from_code(h[40]).is_some()
        && Source::from_code(h[41]).is_some()
        && h[42] <= 2
        && h[43] & !FLAG_COMMIT == 0;
    ok.then_some((len, lsn))
}

/// The `len` field of the frame at the start of `buf`, if 4 bytes are there. Not validated.
#[must_use]
pub fn peek_len(buf: &[u8]) -> Option<u32> {
    (buf.len() >= 4).then(|| le_u32(buf, 0))
}

/// Decodes and validates the frame at the start of `buf` without copying its body. Returns the
/// view and the number of bytes consumed (the frame's `len`).
///
/// # Errors
/// [`DecodeError::Incomplete`] when `buf` holds fewer than 4 bytes or fewer than the declared
/// length; [`DecodeError::Corrupt`] when the length is outside
/// `FRAME_HEADER_LEN..=MAX_FRAME_LEN`, the CRC does not match, or (CRC correct) a field is
/// invalid: unknown kind, source or mask encoding, unknown flag bits, a body that does not have
/// the shape its kind and encoding require, a non-canonical mask, a mask past
/// [`MAX_PAGE_SIZE`], a payload whose length differs from the mask's bit count, a page size
/// outside `1..=MAX_PAGE_SIZE`, an unknown location, a metadata key that is not UTF-8, a Commit
/// frame without the COMMIT flag.
pub fn decode_view(buf: &[u8]) -> Result<(FrameView<'_>, usize), DecodeError> {
    let Some(len) = peek_len(buf) else {
        return Err(DecodeError::Incomplete);
    };
    let len = len as usize;
    if !(FRAME_HEADER_LEN..=MAX_FRAME_LEN).contains(&len) {
        return Err(corrupt(format!(
            "frame length {len} is outside {FRAME_HEADER_LEN}..={MAX_FRAME_LEN}"
        )));
    }
    if buf.len() < len {
        return Err(DecodeError::Incomplete);
    }
    let f = &buf[..len];
    let stored = le_u32(f, 4);
    let computed = crc32c::crc32c_append(crc32c::crc32c(&f[0..4]), &f[8..]);
    if stored != computed {
        return Err(corrupt(format!(
            "CRC mismatch: stored {stored:08x}, computed {computed:08x}"
        )));
    }
    let kind = FrameKind::from_code(f[40])
        .ok_or_else(|| corrupt(format!("unknown frame kind {}", f[40])))?;
    let source = Source::from_code(f[41])
        .ok_or_else(|| corrupt(format!("unknown source code {}", f[41])))?;
    let enc = MaskEncoding::from_code(f[42])
        .ok_or_else(|| corrupt(format!("unknown mask encoding {}", f[42])))?;
    let flags = f[43];
    if flags & !FLAG_COMMIT != 0 {
        return Err(corrupt(format!("unknown flag bits {flags:#04x}")));
    }
    let commit = flags & FLAG_COMMIT != 0;
    let b = &f[FRAME_HEADER_LEN..];
    if kind != FrameKind::Delta && enc != MaskEncoding::Dense {
        return Err(corrupt(format!(
            "{} frame with mask encoding {}",
            kind.name(),
            enc.code()
        )));
    }
    let body = match kind {
        FrameKind::Delta => decode_delta_body(enc, b)?,
        FrameKind::CreatePage => {
            if b.len() != 5 {
                return Err(corrupt(format!(
                    "create_page body of {} bytes (expected 5)",
                    b.len()
                )));
            }
            let size = le_u32(b, 0);
            if size == 0 || size as usize > MAX_PAGE_SIZE {
                return Err(corrupt(format!(
                    "page size {size} is outside 1..={MAX_PAGE_SIZE}"
                )));
            }
            let location = Location::from_code(b[4])
                .ok_or_else(|| corrupt(format!("unknown location code {}", b[4])))?;
            BodyView::CreatePage { size, location }
        }
        FrameKind::Metadata => {
            if b.len() < 3 {
                return Err(corrupt("metadata body shorter than 3 bytes"));
            }
            let klen = usize::from(u16::from_le_bytes([b[0], b[1]]));
            let Some(key) = b.get(2..2 + klen) else {
                return Err(corrupt(format!(
                    "metadata key of {klen} bytes runs past the frame"
                )));
            };
            let key = std::str::from_utf8(key).map_err(|_| corrupt("metadata key is not UTF-8"))?;
            let rest = &b[2 + klen..];
            let value = match rest.split_first() {
                Some((1, v)) => Some(v),
                Some((0, [])) => None,
                Some((0, _)) => return Err(corrupt("metadata removal carries a value")),
                Some((p, _)) => {
                    return Err(corrupt(format!(
                        "metadata presence byte {p} (expected 0 or 1)"
                    )));
                }
                None => return Err(corrupt("metadata body ends before the presence byte")),
            };
            BodyView::Metadata { key, value }
        }
        FrameKind::Commit => {
            if !b.is_empty() {
                return Err(corrupt(format!(
                    "commit frame with a {}-byte body",
                    b.len()
                )));
            }
            if !commit {
                return Err(corrupt("commit frame without the COMMIT flag"));
            }
            BodyView::Commit
        }
    };
    let view = FrameView {
        lsn: Lsn(le_u64(f, 8)),
        page: PageId(le_u64(f, 16)),
        epoch: le_u64(f, 24),
        timestamp_ns: le_u64(f, 32),
        source,
        commit,
        kind,
        mask_encoding: enc,
        len: len as u32,
        body,
    };
    Ok((view, len))
}

/// Validates the body of a Delta frame.
fn decode_delta_body(enc: MaskEncoding, b: &[u8]) -> Result<BodyView<'_>, DecodeError> {
    /// Mask words a page of MAX_PAGE_SIZE bytes can need.
    const MAX_WORDS: u64 = (MAX_PAGE_SIZE as u64).div_ceil(64);
    match enc {
        MaskEncoding::Dense => {
            if b.is_empty() {
                return Err(corrupt("dense delta with an empty payload"));
            }
            if b.len() > MAX_PAGE_SIZE {
                return Err(corrupt(format!(
                    "dense delta of {} bytes exceeds MAX_PAGE_SIZE",
                    b.len()
                )));
            }
            Ok(BodyView::Dense(b))
        }
        MaskEncoding::BitPacked => {
            if b.len() < 8 {
                return Err(corrupt("bit-packed mask header runs past the frame"));
            }
            let start_word = le_u32(b, 0);
            let n_words = le_u32(b, 4);
            if u64::from(start_word) + u64::from(n_words) > MAX_WORDS {
                return Err(corrupt(format!(
                    "bit-packed mask words {start_word}..{} reach past MAX_PAGE_SIZE",
                    u64::from(start_word) + u64::from(n_words)
                )));
            }
            let words_len = n_words as usize * 8;
            let Some(words) = b.get(8..8 + words_len) else {
                return Err(corrupt(format!(
                    "bit-packed mask of {n_words} words runs past the frame"
                )));
            };
            let payload = &b[8 + words_len..];
            if n_words == 0 && start_word != 0 {
                return Err(corrupt("empty bit-packed mask with a non-zero start word"));
            }
            if n_words > 0 && (le_u64(words, 0) == 0 || le_u64(words, words_len - 8) == 0) {
                return Err(corrupt(
                    "bit-packed mask is not canonical (zero first or last word)",
                ));
            }
            let count: u64 = words
                .chunks_exact(8)
                .map(|c| u64::from(le_u64(c, 0).count_ones()))
                .sum();
            if count != payload.len() as u64 {
                return Err(corrupt(format!(
                    "mask selects {count} bytes but the payload has {}",
                    payload.len()
                )));
            }
            Ok(BodyView::BitPacked {
                start_word,
                words,
                payload,
            })
        }
        MaskEncoding::RunLength => {
            let mut at = 0;
            let n_runs = get_varint(b, &mut at)?;
            // Every run takes at least two bytes.
            if n_runs > (b.len() as u64) / 2 {
                return Err(corrupt(format!(
                    "run-length mask claims {n_runs} runs, more than the frame can hold"
                )));
            }
            let runs_start = at;
            let mut pos = 0u64;
            let mut count = 0u64;
            for i in 0..n_runs {
                let gap = get_varint(b, &mut at)?;
                let len = get_varint(b, &mut at)?;
                if len == 0 {
                    return Err(corrupt(format!("run-length mask: run {i} has length 0")));
                }
                if gap == 0 && i > 0 {
                    return Err(corrupt(format!(
                        "run-length mask: run {i} touches the previous run"
                    )));
                }
                pos = pos.saturating_add(gap).saturating_add(len);
                if pos > MAX_PAGE_SIZE as u64 {
                    return Err(corrupt("run-length mask reaches past MAX_PAGE_SIZE"));
                }
                count += len;
            }
            let runs = &b[runs_start..at];
            let payload = &b[at..];
            if count != payload.len() as u64 {
                return Err(corrupt(format!(
                    "mask selects {count} bytes but the payload has {}",
                    payload.len()
                )));
            }
            Ok(BodyView::RunLength {
                runs,
                n_runs: n_runs as usize,
                payload,
            })
        }
    }
}

/// Decodes the frame at the start of `buf` into an owned [`Frame`]; returns it and the number
/// of bytes consumed. Never panics, whatever `buf` holds.
///
/// # Errors
/// As [`decode_view`].
pub fn decode(buf: &[u8]) -> Result<(Frame, usize), DecodeError> {
    let (view, n) = decode_view(buf)?;
    Ok((view.to_frame(), n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(body: BodyRef<'_>, commit: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let n = encode_into(
            &mut out,
            Lsn(7),
            PageId(3),
            9,
            1234,
            Source::Propagation,
            commit,
            body,
        );
        assert_eq!(n, out.len());
        assert_eq!(n, encoded_len(body));
        out
    }

    #[test]
    fn varint_len_matches_encoder() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            let mut at = 0;
            assert_eq!(get_varint(&out, &mut at).unwrap(), v);
            assert_eq!(at, out.len());
        }
        assert!(get_varint(&[0x80, 0x00], &mut 0).is_err(), "non-minimal");
        assert!(get_varint(&[0xff; 10], &mut 0).is_err(), "overflow");
    }

    #[test]
    fn run_helpers() {
        let m = Mask::from_ranges(&[(3, 5), (63, 2), (128, 64), (300, 1)]);
        let mut v = Vec::new();
        runs_until(&m, |o, l| {
            v.push((o, l));
            true
        });
        assert_eq!(v, m.runs());
    }

    #[test]
    fn sparse_round_trip_both_encodings() {
        // One run: run-length wins.
        let m = Mask::from_ranges(&[(1000, 16)]);
        let body = Body::Sparse {
            mask: m,
            payload: (0..16).collect(),
        };
        let out = enc(BodyRef::Delta(&body), true);
        assert_eq!(out[42], 2);
        let (f, n) = decode(&out).unwrap();
        assert_eq!(n, out.len());
        assert_eq!(f.body, FrameBody::Delta(body));
        // Alternating bits: bit-packed wins.
        let ranges: Vec<(usize, usize)> = (0..64).map(|i| (i * 2, 1)).collect();
        let m = Mask::from_ranges(&ranges);
        let body = Body::Sparse {
            mask: m,
            payload: vec![5; 64],
        };
        let out = enc(BodyRef::Delta(&body), false);
        assert_eq!(out[42], 1);
        let (f, _) = decode(&out).unwrap();
        assert_eq!(f.body, FrameBody::Delta(body));
        assert!(!f.commit);
    }

    #[test]
    fn decode_detects_flip_and_short_buffers() {
        let body = Body::Dense(vec![1, 2, 3]);
        let mut out = enc(BodyRef::Delta(&body), true);
        out[45] ^= 1;
        assert!(matches!(decode(&out), Err(DecodeError::Corrupt(_))));
        assert_eq!(decode(&out[..10]), Err(DecodeError::Incomplete));
        assert_eq!(decode(&out[..3]), Err(DecodeError::Incomplete));
    }
}
