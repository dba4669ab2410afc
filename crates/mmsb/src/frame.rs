//! The log frame codec: one self-checking, length-prefixed record per logged change.
//!
//! Every change to the store (a delta, a page creation, a metadata edit, the end of a batch) is
//! written to the write-ahead log as one **frame**: a 44-byte header (length, CRC32C, LSN, page,
//! epoch, timestamp, kind, source, mask encoding, flags), then a body that depends on the kind.
//! The byte layout is specified in `docs/mmsb-format.md` (section 1.2) and drawn above the
//! header's offset constants in this file. Files: `encode` (the encoder), `decode` (the
//! validating decoder), `tests` (unit tests of their helpers).
//!
//! [`encode_into`] appends one frame to a `Vec<u8>` without allocating when the vector has the
//! capacity; [`decode`] (allocating [`Frame`]) and [`decode_view`] (zero-copy [`FrameView`])
//! read one back. Decoding never panics: every length is bounds-checked, the CRC is verified
//! before any body field is trusted, and an impossible frame is reported as
//! [`DecodeError::Corrupt`] with a reason.

use std::fmt;

use crate::delta::{Body, Delta, Mask, Source};
use crate::page::{Location, Lsn, MAX_PAGE_SIZE, PageId};

mod decode;
mod encode;
#[cfg(test)]
mod tests;

pub(crate) use decode::plausible_header;
pub use decode::{FrameView, decode, decode_view, peek_len};
pub use encode::{encode_into, encoded_len};
pub(crate) use encode::{encode_planned, plan};

// The frame header, as in `docs/mmsb-format.md` section 1.2 (all integers little endian). Each
// offset is the previous field's offset plus its length; the encoder and the decoder both use
// these constants.
//
// offset  size  field
//      0     4  len           bytes of the whole frame, this field included (44..=MAX_FRAME_LEN)
//      4     4  crc           CRC32C (Castagnoli) of bytes 0..4 followed by bytes 8..len
//      8     8  lsn           log sequence number
//     16     8  page          page id (0 for a Commit frame)
//     24     8  epoch         the page's epoch after the change
//     32     8  timestamp_ns  wall clock, nanoseconds since the Unix epoch
//     40     1  kind          1 Delta, 2 CreatePage, 3 Metadata, 4 Commit
//     41     1  source        Source::code()
//     42     1  mask enc.     Delta: 0 dense, 1 bit-packed, 2 run-length; other kinds: 0
//     43     1  flags         bit 0 = COMMIT; other bits are zero
//     44     -  body          depends on kind (and mask encoding)
pub(crate) const LEN_OFFSET: usize = 0;
pub(crate) const LEN_LEN: usize = 4;
const CRC_OFFSET: usize = LEN_OFFSET + LEN_LEN;
const CRC_LEN: usize = 4;
const LSN_OFFSET: usize = CRC_OFFSET + CRC_LEN;
const LSN_LEN: usize = 8;
const PAGE_OFFSET: usize = LSN_OFFSET + LSN_LEN;
const PAGE_LEN: usize = 8;
const EPOCH_OFFSET: usize = PAGE_OFFSET + PAGE_LEN;
const EPOCH_LEN: usize = 8;
const TIMESTAMP_OFFSET: usize = EPOCH_OFFSET + EPOCH_LEN;
const TIMESTAMP_LEN: usize = 8;
const KIND_OFFSET: usize = TIMESTAMP_OFFSET + TIMESTAMP_LEN;
const SOURCE_OFFSET: usize = KIND_OFFSET + 1;
const MASK_ENCODING_OFFSET: usize = SOURCE_OFFSET + 1;
const FLAGS_OFFSET: usize = MASK_ENCODING_OFFSET + 1;
const BODY_OFFSET: usize = FLAGS_OFFSET + 1;

/// Size of the fixed frame header (`len` through `flags`), in bytes. The smallest frame (a
/// Commit frame) is exactly this long.
pub const FRAME_HEADER_LEN: usize = BODY_OFFSET;
const _: () = assert!(
    FRAME_HEADER_LEN == 44,
    "the frame header is 44 bytes on disk"
);

// Frame bodies, as in the table of `docs/mmsb-format.md` section 1.2: offsets from the first
// byte of the body (the frame's byte FRAME_HEADER_LEN). A dense delta's body is the page's new
// bytes; a run-length mask is varints (section 1.3); a Commit frame has no body.
//
// kind                 offset  size     field
// CreatePage                0     4     size       page size in bytes, 1..=MAX_PAGE_SIZE
//                           4     1     location   Location::code()
// Metadata                  0     2     key_len    k, bytes of the key
//                           2     k     key        UTF-8
//                         2+k     1     present    1: a value follows; 0: the key is removed
//                         3+k     -     value      present = 1 only
// Delta, bit-packed         0     4     start_word first mask word stored
//                           4     4     n_words    n
//                           8    8n     words      u64 mask words
//                        8+8n     -     payload    one byte per set mask bit
const CREATE_PAGE_SIZE_OFFSET: usize = 0;
const CREATE_PAGE_SIZE_LEN: usize = 4;
const CREATE_PAGE_LOCATION_OFFSET: usize = CREATE_PAGE_SIZE_OFFSET + CREATE_PAGE_SIZE_LEN;
/// A CreatePage body is exactly this long.
const CREATE_PAGE_BODY_LEN: usize = CREATE_PAGE_LOCATION_OFFSET + 1;
const METADATA_KEY_LEN_OFFSET: usize = 0;
const METADATA_KEY_LEN_LEN: usize = 2;
/// The key starts here; the presence byte follows it.
const METADATA_KEY_OFFSET: usize = METADATA_KEY_LEN_OFFSET + METADATA_KEY_LEN_LEN;
/// The presence byte, and a value's first byte, after a key of `k` bytes.
const fn metadata_present_offset(k: usize) -> usize {
    METADATA_KEY_OFFSET + k
}
const BITPACKED_START_WORD_OFFSET: usize = 0;
const BITPACKED_START_WORD_LEN: usize = 4;
const BITPACKED_N_WORDS_OFFSET: usize = BITPACKED_START_WORD_OFFSET + BITPACKED_START_WORD_LEN;
const BITPACKED_N_WORDS_LEN: usize = 4;
/// The mask words start here; the payload follows them.
const BITPACKED_WORDS_OFFSET: usize = BITPACKED_N_WORDS_OFFSET + BITPACKED_N_WORDS_LEN;
const _: () = assert!(CREATE_PAGE_BODY_LEN == 5 && BITPACKED_WORDS_OFFSET == 8);

/// The CRC32C a frame stores at `CRC_OFFSET`: of the `len` field followed by everything after
/// the `crc` field (`f` is the whole frame).
fn frame_crc(f: &[u8]) -> u32 {
    crc32c::crc32c_append(
        crc32c::crc32c(&f[LEN_OFFSET..LEN_OFFSET + LEN_LEN]),
        &f[CRC_OFFSET + CRC_LEN..],
    )
}

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
