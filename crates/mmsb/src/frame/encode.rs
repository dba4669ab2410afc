//! Encoding: [`encode_into`] and [`encoded_len`], and the plan (mask encoding, length) they
//! share with the log writer.

use super::*;

/// Number of bytes of the LEB128 encoding of `v` (1..=10).
#[inline]
pub(super) fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
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
pub(super) fn runs_until(mask: &Mask, mut f: impl FnMut(usize, usize) -> bool) {
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
            let packed = BITPACKED_WORDS_OFFSET + 8 * mask.words().len();
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
            len: FRAME_HEADER_LEN + CREATE_PAGE_BODY_LEN,
            enc: 0,
            runs: 0,
        },
        BodyRef::Metadata { key, value } => Plan {
            len: FRAME_HEADER_LEN
                + metadata_present_offset(key.len())
                + 1
                + value.map_or(0, <[u8]>::len),
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
    h[LEN_OFFSET..LEN_OFFSET + LEN_LEN].copy_from_slice(&(p.len as u32).to_le_bytes());
    h[LSN_OFFSET..LSN_OFFSET + LSN_LEN].copy_from_slice(&lsn.0.to_le_bytes());
    h[PAGE_OFFSET..PAGE_OFFSET + PAGE_LEN].copy_from_slice(&page.0.to_le_bytes());
    h[EPOCH_OFFSET..EPOCH_OFFSET + EPOCH_LEN].copy_from_slice(&epoch.to_le_bytes());
    h[TIMESTAMP_OFFSET..TIMESTAMP_OFFSET + TIMESTAMP_LEN]
        .copy_from_slice(&timestamp_ns.to_le_bytes());
    h[KIND_OFFSET] = body.kind().code();
    h[SOURCE_OFFSET] = source.code();
    h[MASK_ENCODING_OFFSET] = p.enc;
    h[FLAGS_OFFSET] = if commit { FLAG_COMMIT } else { 0 };
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
    let crc = frame_crc(&out[start..]);
    out[start + CRC_OFFSET..start + CRC_OFFSET + CRC_LEN].copy_from_slice(&crc.to_le_bytes());
}
