//! How `datahub pub` lays files out as messages, and how `datahub sub` reads them back.
//!
//! # Model
//! A **stream** is the sequence of messages of one `pub` run through one block (lossless
//! policy, so every consumer sees every message in order). It carries files one after the
//! other, numbered 0, 1, 2, ... (the **file index**); each file is
//!
//! ```text
//! FILE_START(index, length hint, base name)
//! DATA(index, offset 0, chunk) DATA(index, offset c0, chunk) ...   (none for an empty file)
//! FILE_END(index, length, BLAKE2b-256 of the whole file)
//! ```
//!
//! and the producer's `close()` (the block's end of stream) ends the stream. A producer that
//! fails part-way sends `ABORT(reason)` when it can and never closes the stream, so a consumer
//! never mistakes a failed transfer for a finished one.
//!
//! # Message layout (one message = one slot, little-endian)
//! ```text
//!  0      1         4          8                 16                24
//!  +------+---------+----------+-----------------+-----------------+----------------------+
//!  | kind | 0 0 0   | index u32| stream id u64   | value u64       | body                 |
//!  +------+---------+----------+-----------------+-----------------+----------------------+
//!  kind 1 FILE_START  value: length in bytes, u64::MAX if unknown (a pipe)   body: base name (UTF-8)
//!  kind 2 DATA        value: offset of the chunk in the file                 body: the chunk
//!  kind 3 FILE_END    value: length in bytes (authoritative)                 body: 32-byte digest
//!  kind 4 ABORT       value: 0                                               body: reason (UTF-8)
//! ```
//! The **stream id** is chosen by the producer at start (from its pid and the clock) and is the
//! same in every message of the stream; with the file index and the DATA offsets it lets a
//! consumer that takes over from a dead one (and finds its half-written file) resume exactly
//! where the dead one stopped (see `subscribe.rs`).
//!
//! # Invariants a consumer checks
//! - Every message has a known kind, the reserved bytes are zero and the body fits its kind.
//! - All messages of a stream carry the same stream id.
//! - Within a file: FILE_START, then DATA with offsets that continue exactly where the last chunk
//!   ended, then FILE_END whose length equals the bytes received and whose digest equals the
//!   BLAKE2b-256 of those bytes. Files follow in index order.
//! - A base name is one normal path component: not empty (except the unnamed standard-input
//!   stream, whose name is empty), at most 255 bytes, no `/`, no NUL, not `.`, no `..` anywhere
//!   (stricter than needed: `a..b` is refused too), and not starting with [`RESERVED_PREFIX`].
//!   So a consumer never writes outside its output directory; `pub` refuses such names before
//!   it starts.
//!
//! The blocks `pub` creates carry the schema [`schema`], so `sub` refuses blocks of other
//! programs at attach time instead of misreading their messages.

use blake2::Blake2b;
use blake2::digest::consts::U32;

/// BLAKE2b with a 256-bit output.
pub type Blake2b256 = Blake2b<U32>;

/// Bytes before a message's body.
pub const HEADER_LEN: usize = 24;
/// Digest bytes in a FILE_END body.
pub const DIGEST_LEN: usize = 32;
/// FILE_START length of a source whose size is not known up front.
pub const UNKNOWN_LEN: u64 = u64::MAX;
/// File names a consumer refuses (its own bookkeeping files in the output directory).
pub const RESERVED_PREFIX: &str = ".datahub-partial";
/// Longest base name, bytes (Linux `NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;

/// Text hashed into the stream schema.
pub const SCHEMA_TEXT: &str = "datahub-cli file stream: FILE_START/DATA/FILE_END/ABORT, 24-byte header (kind, index, stream, value), BLAKE2b-256 file digests";
/// Version of the layout above.
pub const SCHEMA_VERSION: u32 = 1;

/// The schema every `pub` block carries.
pub fn schema() -> datahub::Schema {
    datahub::Schema::named(SCHEMA_TEXT, SCHEMA_VERSION)
}

const KIND_FILE_START: u8 = 1;
const KIND_DATA: u8 = 2;
const KIND_FILE_END: u8 = 3;
const KIND_ABORT: u8 = 4;

/// One decoded message; bodies borrow from the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A file begins.
    FileStart {
        /// Stream id.
        stream: u64,
        /// File index.
        index: u32,
        /// Its length, if the producer knew it.
        len: Option<u64>,
        /// Its base name (empty: the unnamed standard-input stream).
        name: &'a str,
    },
    /// A chunk of the current file.
    Data {
        /// Stream id.
        stream: u64,
        /// File index.
        index: u32,
        /// Offset of `chunk` in the file.
        offset: u64,
        /// The bytes.
        chunk: &'a [u8],
    },
    /// The current file is complete.
    FileEnd {
        /// Stream id.
        stream: u64,
        /// File index.
        index: u32,
        /// Its length.
        len: u64,
        /// BLAKE2b-256 of its bytes.
        digest: [u8; DIGEST_LEN],
    },
    /// The producer gave up.
    Abort {
        /// Stream id.
        stream: u64,
        /// Why.
        reason: &'a str,
    },
}

impl Frame<'_> {
    /// The stream id.
    pub fn stream(&self) -> u64 {
        match *self {
            Frame::FileStart { stream, .. }
            | Frame::Data { stream, .. }
            | Frame::FileEnd { stream, .. }
            | Frame::Abort { stream, .. } => stream,
        }
    }
}

/// A message that is not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than the header.
    #[error("message of {0} bytes is shorter than the {HEADER_LEN}-byte frame header")]
    Short(usize),
    /// Unknown kind byte.
    #[error("unknown frame kind {0}")]
    Kind(u8),
    /// Reserved header bytes not zero.
    #[error("reserved frame header bytes are not zero")]
    Reserved,
    /// FILE_END body is not a digest.
    #[error("FILE_END body is {0} bytes, expected a {DIGEST_LEN}-byte digest")]
    DigestLen(usize),
    /// A name or reason that is not UTF-8.
    #[error("frame text is not UTF-8")]
    Utf8,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes one message.
///
/// # Errors
/// [`FrameError`] for anything that is not a frame; names are not checked here (see
/// [`check_name`]).
pub fn decode(msg: &[u8]) -> Result<Frame<'_>, FrameError> {
    if msg.len() < HEADER_LEN {
        return Err(FrameError::Short(msg.len()));
    }
    if msg[1..4] != [0, 0, 0] {
        return Err(FrameError::Reserved);
    }
    let index = u32_at(msg, 4);
    let stream = u64_at(msg, 8);
    let value = u64_at(msg, 16);
    let body = &msg[HEADER_LEN..];
    let text = || std::str::from_utf8(body).map_err(|_| FrameError::Utf8);
    match msg[0] {
        KIND_FILE_START => Ok(Frame::FileStart {
            stream,
            index,
            len: (value != UNKNOWN_LEN).then_some(value),
            name: text()?,
        }),
        KIND_DATA => Ok(Frame::Data {
            stream,
            index,
            offset: value,
            chunk: body,
        }),
        KIND_FILE_END => {
            let digest = body
                .try_into()
                .map_err(|_| FrameError::DigestLen(body.len()))?;
            Ok(Frame::FileEnd {
                stream,
                index,
                len: value,
                digest,
            })
        }
        KIND_ABORT => Ok(Frame::Abort {
            stream,
            reason: text()?,
        }),
        k => Err(FrameError::Kind(k)),
    }
}

/// Writes a frame header into `buf[..HEADER_LEN]`.
fn put_header(buf: &mut [u8], kind: u8, index: u32, stream: u64, value: u64) {
    buf[0] = kind;
    buf[1..4].fill(0);
    buf[4..8].copy_from_slice(&index.to_le_bytes());
    buf[8..16].copy_from_slice(&stream.to_le_bytes());
    buf[16..24].copy_from_slice(&value.to_le_bytes());
}

/// Encodes FILE_START into `buf`; returns the message length, or `None` if `buf` is too small.
pub fn file_start(
    buf: &mut [u8],
    stream: u64,
    index: u32,
    len: Option<u64>,
    name: &str,
) -> Option<usize> {
    let total = HEADER_LEN + name.len();
    if buf.len() < total {
        return None;
    }
    put_header(
        buf,
        KIND_FILE_START,
        index,
        stream,
        len.unwrap_or(UNKNOWN_LEN),
    );
    buf[HEADER_LEN..total].copy_from_slice(name.as_bytes());
    Some(total)
}

/// Writes a DATA header into `buf`; the caller has put `chunk_len` bytes at
/// `buf[HEADER_LEN..]`. Returns the message length.
pub fn data_header(
    buf: &mut [u8],
    stream: u64,
    index: u32,
    offset: u64,
    chunk_len: usize,
) -> usize {
    put_header(buf, KIND_DATA, index, stream, offset);
    HEADER_LEN + chunk_len
}

/// Encodes FILE_END into `buf` (at least `HEADER_LEN + DIGEST_LEN` bytes); returns the
/// message length.
pub fn file_end(
    buf: &mut [u8],
    stream: u64,
    index: u32,
    len: u64,
    digest: &[u8; DIGEST_LEN],
) -> usize {
    put_header(buf, KIND_FILE_END, index, stream, len);
    buf[HEADER_LEN..HEADER_LEN + DIGEST_LEN].copy_from_slice(digest);
    HEADER_LEN + DIGEST_LEN
}

/// Encodes ABORT into `buf` (the reason is cut to fit, at a character boundary); returns the
/// message length.
pub fn abort(buf: &mut [u8], stream: u64, reason: &str) -> usize {
    let room = buf.len().saturating_sub(HEADER_LEN);
    let mut cut = reason.len().min(room);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    put_header(buf, KIND_ABORT, 0, stream, 0);
    buf[HEADER_LEN..HEADER_LEN + cut].copy_from_slice(&reason.as_bytes()[..cut]);
    HEADER_LEN + cut
}

/// Checks a base name received in FILE_START (see the module doc); the empty name (the
/// unnamed standard-input stream) is accepted here and mapped by the caller.
///
/// # Errors
/// A one-line reason.
pub fn check_name(name: &str) -> Result<(), String> {
    let bad = if name.len() > MAX_NAME_LEN {
        Some("is longer than 255 bytes")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name.contains('\0') {
        Some("contains NUL")
    } else if name == "." || name.contains("..") {
        Some("is '.' or contains '..'")
    } else if name.starts_with(RESERVED_PREFIX) {
        Some("is reserved for sub's own files")
    } else {
        None
    };
    match bad {
        Some(why) => Err(format!(
            "file name {:?} {why}",
            cli_support::clip(name, cli_support::QUOTE_MAX)
        )),
        None => Ok(()),
    }
}

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = [0u8; 128];
        let n = file_start(&mut buf, 7, 3, Some(99), "a.txt").unwrap();
        assert_eq!(
            decode(&buf[..n]),
            Ok(Frame::FileStart {
                stream: 7,
                index: 3,
                len: Some(99),
                name: "a.txt"
            })
        );
        let n = file_start(&mut buf, 7, 0, None, "").unwrap();
        assert_eq!(
            decode(&buf[..n]),
            Ok(Frame::FileStart {
                stream: 7,
                index: 0,
                len: None,
                name: ""
            })
        );
        buf[HEADER_LEN..HEADER_LEN + 3].copy_from_slice(b"xyz");
        let n = data_header(&mut buf, 7, 3, 1000, 3);
        assert_eq!(
            decode(&buf[..n]),
            Ok(Frame::Data {
                stream: 7,
                index: 3,
                offset: 1000,
                chunk: b"xyz"
            })
        );
        let n = file_end(&mut buf, 7, 3, 1003, &[5; 32]);
        assert_eq!(
            decode(&buf[..n]),
            Ok(Frame::FileEnd {
                stream: 7,
                index: 3,
                len: 1003,
                digest: [5; 32]
            })
        );
        let mut small = [0u8; HEADER_LEN + 2];
        let n = abort(&mut small, 7, "héllo");
        assert_eq!(
            decode(&small[..n]),
            Ok(Frame::Abort {
                stream: 7,
                reason: "h"
            })
        );
        assert_eq!(file_start(&mut small, 1, 0, None, "too-long-name"), None);
    }

    #[test]
    fn garbage_is_rejected() {
        assert_eq!(decode(&[1, 2, 3]), Err(FrameError::Short(3)));
        let mut buf = [0u8; HEADER_LEN];
        buf[0] = 9;
        assert_eq!(decode(&buf), Err(FrameError::Kind(9)));
        buf[0] = KIND_DATA;
        buf[2] = 1;
        assert_eq!(decode(&buf), Err(FrameError::Reserved));
        buf[2] = 0;
        buf[0] = KIND_FILE_END;
        assert_eq!(decode(&buf), Err(FrameError::DigestLen(0)));
    }

    #[test]
    fn names_that_escape_the_directory_are_refused() {
        for bad in [
            "../x",
            "..",
            ".",
            "a/b",
            "/etc/passwd",
            "x\0y",
            ".datahub-partial.q",
            "a..b",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["a.txt", ".a", "a.b.c", "", "canada.json"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
        assert!(check_name(&"x".repeat(256)).is_err());
    }
}
