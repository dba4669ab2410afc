//! Decoding: [`decode_view`] (zero-copy, validating) and [`decode`] (owned), and the cheap
//! header test the log's scanner uses.

use super::*;

#[inline]
pub(super) fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

#[inline]
pub(super) fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn corrupt(reason: impl Into<String>) -> DecodeError {
    DecodeError::Corrupt(reason.into())
}

/// Reads a minimal LEB128 varint of at most 10 bytes from `b[*at..]`.
pub(super) fn get_varint(b: &[u8], at: &mut usize) -> Result<u64, DecodeError> {
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
    let len = le_u32(h, LEN_OFFSET) as usize;
    let lsn = le_u64(h, LSN_OFFSET);
    let ok = (FRAME_HEADER_LEN..=MAX_FRAME_LEN).contains(&len)
        && lsn > min_lsn
        && FrameKind::from_code(h[KIND_OFFSET]).is_some()
        && Source::from_code(h[SOURCE_OFFSET]).is_some()
        && h[MASK_ENCODING_OFFSET] <= 2
        && h[FLAGS_OFFSET] & !FLAG_COMMIT == 0;
    ok.then_some((len, lsn))
}

/// The `len` field of the frame at the start of `buf`, if 4 bytes are there. Not validated.
#[must_use]
pub fn peek_len(buf: &[u8]) -> Option<u32> {
    (buf.len() >= LEN_OFFSET + LEN_LEN).then(|| le_u32(buf, LEN_OFFSET))
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
    let stored = le_u32(f, CRC_OFFSET);
    let computed = frame_crc(f);
    if stored != computed {
        return Err(corrupt(format!(
            "CRC mismatch: stored {stored:08x}, computed {computed:08x}"
        )));
    }
    let kind = FrameKind::from_code(f[KIND_OFFSET])
        .ok_or_else(|| corrupt(format!("unknown frame kind {}", f[KIND_OFFSET])))?;
    let source = Source::from_code(f[SOURCE_OFFSET])
        .ok_or_else(|| corrupt(format!("unknown source code {}", f[SOURCE_OFFSET])))?;
    let enc = MaskEncoding::from_code(f[MASK_ENCODING_OFFSET])
        .ok_or_else(|| corrupt(format!("unknown mask encoding {}", f[MASK_ENCODING_OFFSET])))?;
    let flags = f[FLAGS_OFFSET];
    if flags & !FLAG_COMMIT != 0 {
        return Err(corrupt(format!("unknown flag bits {flags:#04x}")));
    }
    let commit = flags & FLAG_COMMIT != 0;
    let b = &f[BODY_OFFSET..];
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
            if b.len() != CREATE_PAGE_BODY_LEN {
                return Err(corrupt(format!(
                    "create_page body of {} bytes (expected {CREATE_PAGE_BODY_LEN})",
                    b.len()
                )));
            }
            let size = le_u32(b, CREATE_PAGE_SIZE_OFFSET);
            if size == 0 || size as usize > MAX_PAGE_SIZE {
                return Err(corrupt(format!(
                    "page size {size} is outside 1..={MAX_PAGE_SIZE}"
                )));
            }
            let code = b[CREATE_PAGE_LOCATION_OFFSET];
            let location = Location::from_code(code)
                .ok_or_else(|| corrupt(format!("unknown location code {code}")))?;
            BodyView::CreatePage { size, location }
        }
        FrameKind::Metadata => {
            if b.len() < metadata_present_offset(0) + 1 {
                return Err(corrupt(format!(
                    "metadata body shorter than {} bytes",
                    metadata_present_offset(0) + 1
                )));
            }
            let klen = usize::from(u16::from_le_bytes([
                b[METADATA_KEY_LEN_OFFSET],
                b[METADATA_KEY_LEN_OFFSET + 1],
            ]));
            let Some(key) = b.get(METADATA_KEY_OFFSET..metadata_present_offset(klen)) else {
                return Err(corrupt(format!(
                    "metadata key of {klen} bytes runs past the frame"
                )));
            };
            let key = std::str::from_utf8(key).map_err(|_| corrupt("metadata key is not UTF-8"))?;
            let rest = &b[metadata_present_offset(klen)..];
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
        lsn: Lsn(le_u64(f, LSN_OFFSET)),
        page: PageId(le_u64(f, PAGE_OFFSET)),
        epoch: le_u64(f, EPOCH_OFFSET),
        timestamp_ns: le_u64(f, TIMESTAMP_OFFSET),
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
            if b.len() < BITPACKED_WORDS_OFFSET {
                return Err(corrupt("bit-packed mask header runs past the frame"));
            }
            let start_word = le_u32(b, BITPACKED_START_WORD_OFFSET);
            let n_words = le_u32(b, BITPACKED_N_WORDS_OFFSET);
            if u64::from(start_word) + u64::from(n_words) > MAX_WORDS {
                return Err(corrupt(format!(
                    "bit-packed mask words {start_word}..{} reach past MAX_PAGE_SIZE",
                    u64::from(start_word) + u64::from(n_words)
                )));
            }
            let words_len = n_words as usize * 8;
            let Some(words) = b.get(BITPACKED_WORDS_OFFSET..BITPACKED_WORDS_OFFSET + words_len)
            else {
                return Err(corrupt(format!(
                    "bit-packed mask of {n_words} words runs past the frame"
                )));
            };
            let payload = &b[BITPACKED_WORDS_OFFSET + words_len..];
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
