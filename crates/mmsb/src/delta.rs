//! Deltas: the only way a page changes.
//!
//! A delta is either **dense** (the whole page's new bytes) or **sparse**: a bit-packed
//! [`Mask`] with one bit per byte of the page, and a payload holding only the masked bytes, in
//! increasing offset order. `state x delta -> state'` is [`Delta::apply`].

use crate::error::{Error, Result};
use crate::page::{Lsn, PageId};

/// Who produced a delta. Stored in every log frame.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Source {
    /// Written by the application (`update_page`, `write_range`, `apply_delta`).
    #[default]
    User,
    /// Written by a recompute function during propagation. Replay applies these deltas and
    /// never re-runs recompute functions.
    Propagation,
    /// Written by a tool (for example `mmsb replay` applying a `diff`).
    Import,
}

impl Source {
    /// On-disk code.
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            Source::User => 0,
            Source::Propagation => 1,
            Source::Import => 2,
        }
    }

    /// The source with on-disk code `code`.
    #[must_use]
    pub fn from_code(code: u8) -> Option<Source> {
        match code {
            0 => Some(Source::User),
            1 => Some(Source::Propagation),
            2 => Some(Source::Import),
            _ => None,
        }
    }

    /// Lower-case name (`user`, `propagation`, `import`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Source::User => "user",
            Source::Propagation => "propagation",
            Source::Import => "import",
        }
    }
}

/// One bit per byte of a page, bit-packed in `u64` words: bit `b` of word `i` stands for byte
/// `64 * (start_word + i) + b`. Words before `start_word` and after the last stored word are
/// implicitly zero, so a mask costs space for the span it covers, not for the whole page.
///
/// Masks are kept canonical (no leading or trailing zero word), so `==` compares the sets.
#[derive(Clone, PartialEq, Eq, Default, Debug)]
pub struct Mask {
    start_word: u32,
    words: Vec<u64>,
}

/// Sets bits `[start, end)` (absolute byte offsets) of a mask whose first word is `start_word`.
fn set_bits(words: &mut [u64], start_word: usize, start: usize, end: usize) {
    let mut pos = start;
    while pos < end {
        let w = pos / 64 - start_word;
        let bit = pos % 64;
        let n = (end - pos).min(64 - bit);
        let bits = if n == 64 {
            !0u64
        } else {
            ((1u64 << n) - 1) << bit
        };
        words[w] |= bits;
        pos += n;
    }
}

impl Mask {
    /// The empty mask.
    #[must_use]
    pub fn new() -> Mask {
        Mask::default()
    }

    /// A mask of the byte ranges `(offset, len)`, which may overlap and come in any order.
    #[must_use]
    pub fn from_ranges(ranges: &[(usize, usize)]) -> Mask {
        let live = ranges.iter().filter(|r| r.1 > 0);
        let Some(lo) = live.clone().map(|r| r.0).min() else {
            return Mask::new();
        };
        let hi = live.clone().map(|r| r.0 + r.1).max().unwrap_or(lo);
        let start_word = lo / 64;
        let mut words = vec![0u64; hi.div_ceil(64) - start_word];
        for &(off, len) in live {
            set_bits(&mut words, start_word, off, off + len);
        }
        Mask::from_words(start_word, words)
    }

    /// A mask from its raw words (see the type's doc for the bit order). Trims zero words.
    ///
    /// # Panics
    /// If `start_word + words.len()` does not fit in `u32` words (a 256 GiB page).
    #[must_use]
    pub fn from_words(start_word: usize, mut words: Vec<u64>) -> Mask {
        let lead = words.iter().take_while(|&&w| w == 0).count();
        if lead == words.len() {
            return Mask::new();
        }
        let trail = words.iter().rev().take_while(|&&w| w == 0).count();
        words.truncate(words.len() - trail);
        words.drain(..lead);
        let start_word = u32::try_from(start_word + lead).expect("mask start word fits in u32");
        Mask { start_word, words }
    }

    /// Index of the first stored word (byte offset `64 * start_word`).
    #[must_use]
    pub fn start_word(&self) -> usize {
        self.start_word as usize
    }

    /// The stored words.
    #[must_use]
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// True when no bit is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Number of bytes selected.
    #[must_use]
    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// One past the last byte the stored words can address (0 for an empty mask). A mask fits a
    /// page of `size` bytes when [`Mask::end`] `<= size` rounded up to 64, and its last set
    /// bit is below `size`; see [`Mask::last_byte`].
    #[must_use]
    pub fn end(&self) -> usize {
        (self.start_word as usize + self.words.len()) * 64
    }

    /// One past the last selected byte (0 for an empty mask).
    #[must_use]
    pub fn last_byte(&self) -> usize {
        match self.words.last() {
            None => 0,
            Some(&w) => self.end() - 64 + (64 - w.leading_zeros() as usize),
        }
    }

    /// True when byte `offset` is selected.
    #[must_use]
    pub fn contains(&self, offset: usize) -> bool {
        let w = offset / 64;
        w >= self.start_word as usize
            && w < self.start_word as usize + self.words.len()
            && self.words[w - self.start_word as usize] & (1 << (offset % 64)) != 0
    }

    /// Calls `f(offset, len)` for each maximal run of selected bytes, in increasing order.
    pub fn for_each_run(&self, mut f: impl FnMut(usize, usize)) {
        let mut cur: Option<(usize, usize)> = None;
        for (i, &word) in self.words.iter().enumerate() {
            let base = (self.start_word as usize + i) * 64;
            let mut w = word;
            let mut shift = 0usize;
            while w != 0 {
                let tz = w.trailing_zeros() as usize;
                w >>= tz;
                let pos = shift + tz;
                let ones = (!w).trailing_zeros() as usize;
                let (start, end) = (base + pos, base + pos + ones);
                cur = match cur {
                    Some((s, e)) if e == start => Some((s, end)),
                    Some((s, e)) => {
                        f(s, e - s);
                        Some((start, end))
                    }
                    None => Some((start, end)),
                };
                shift = pos + ones;
                w = if ones >= 64 { 0 } else { w >> ones };
            }
        }
        if let Some((s, e)) = cur {
            f(s, e - s);
        }
    }

    /// The runs of [`Mask::for_each_run`], collected.
    #[must_use]
    pub fn runs(&self) -> Vec<(usize, usize)> {
        let mut v = Vec::new();
        self.for_each_run(|o, l| v.push((o, l)));
        v
    }

    /// Union of two masks.
    #[must_use]
    pub fn union(&self, other: &Mask) -> Mask {
        if self.is_empty() {
            return other.clone();
        }
        if other.is_empty() {
            return self.clone();
        }
        let lo = self.start_word.min(other.start_word) as usize;
        let hi = (self.end().max(other.end())) / 64;
        let mut words = vec![0u64; hi - lo];
        for m in [self, other] {
            let off = m.start_word as usize - lo;
            for (d, s) in words[off..].iter_mut().zip(&m.words) {
                *d |= s;
            }
        }
        Mask::from_words(lo, words)
    }
}

/// Calls `f(bit, len)` for each run of set bits in `w`, lowest first (no allocation).
#[inline]
fn for_each_run_in_word(mut w: u64, mut f: impl FnMut(usize, usize)) {
    let mut shift = 0usize;
    while w != 0 {
        let tz = w.trailing_zeros() as usize;
        w >>= tz;
        let pos = shift + tz;
        let ones = (!w).trailing_zeros() as usize;
        f(pos, ones);
        shift = pos + ones;
        w = if ones >= 64 { 0 } else { w >> ones };
    }
}

/// The body of a delta.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Body {
    /// The page's complete new contents; the length must equal the page size.
    Dense(Vec<u8>),
    /// Only the masked bytes change; `payload.len() == mask.count()`.
    Sparse {
        /// Which bytes change.
        mask: Mask,
        /// Their new values, in increasing offset order.
        payload: Vec<u8>,
    },
}

/// A change to one page.
///
/// `lsn`, `epoch` and `timestamp_ns` are filled in when the delta is committed (or read back from
/// the log): `epoch` is the page's epoch *after* the delta is applied.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Delta {
    /// The page it changes.
    pub page: PageId,
    /// Position in the log (`Lsn::ZERO` until committed).
    pub lsn: Lsn,
    /// The page's epoch after this delta (0 until committed).
    pub epoch: u64,
    /// Wall-clock time of the commit, nanoseconds since the Unix epoch (0 until committed).
    pub timestamp_ns: u64,
    /// Who produced it.
    pub source: Source,
    /// What changes.
    pub body: Body,
}

/// One flag bit per byte of `x` (`x = a ^ b`): bit `k` of the result is set when byte `k` is
/// non-zero. SWAR: the high bit of each byte of `t` is set iff that byte is non-zero, then a
/// multiply gathers the eight flags into the top byte.
#[inline]
fn nonzero_bytes(x: u64) -> u64 {
    const LO7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let t = (((x & LO7).wrapping_add(LO7)) | x) & !LO7;
    ((t >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56
}

/// Mask bits for one 64-byte (or shorter, at the edges) block: bit `k` set when
/// `old[k] != new[k]`.
#[inline]
fn block_diff(old: &[u8], new: &[u8]) -> u64 {
    debug_assert_eq!(old.len(), new.len());
    let mut bits = 0u64;
    let mut k = 0;
    while k + 8 <= old.len() {
        let a = u64::from_le_bytes(old[k..k + 8].try_into().unwrap_or([0; 8]));
        let b = u64::from_le_bytes(new[k..k + 8].try_into().unwrap_or([0; 8]));
        bits |= nonzero_bytes(a ^ b) << k;
        k += 8;
    }
    while k < old.len() {
        bits |= u64::from(old[k] != new[k]) << k;
        k += 1;
    }
    bits
}

impl Delta {
    /// A dense delta: the page's complete new contents.
    #[must_use]
    pub fn dense(page: PageId, bytes: Vec<u8>) -> Delta {
        Delta {
            page,
            lsn: Lsn::ZERO,
            epoch: 0,
            timestamp_ns: 0,
            source: Source::User,
            body: Body::Dense(bytes),
        }
    }

    /// A sparse delta.
    ///
    /// # Errors
    /// [`Error::MaskPayloadMismatch`] when `payload.len() != mask.count()`.
    pub fn sparse(page: PageId, mask: Mask, payload: Vec<u8>) -> Result<Delta> {
        let mask_bytes = mask.count();
        if mask_bytes != payload.len() {
            return Err(Error::MaskPayloadMismatch {
                mask_bytes,
                payload_bytes: payload.len(),
            });
        }
        Ok(Delta {
            page,
            lsn: Lsn::ZERO,
            epoch: 0,
            timestamp_ns: 0,
            source: Source::User,
            body: Body::Sparse { mask, payload },
        })
    }

    /// A sparse delta that writes `bytes` at `offset` unconditionally (no comparison).
    #[must_use]
    pub fn write(page: PageId, offset: usize, bytes: &[u8]) -> Delta {
        let mask = Mask::from_ranges(&[(offset, bytes.len())]);
        Delta {
            page,
            lsn: Lsn::ZERO,
            epoch: 0,
            timestamp_ns: 0,
            source: Source::User,
            body: Body::Sparse {
                mask,
                payload: bytes.to_vec(),
            },
        }
    }

    /// The delta that turns `old` into `new` (same length), comparing word at a time: 64-byte
    /// blocks that are equal cost one `memcmp`; differing blocks get one mask word from eight
    /// 8-byte XORs. `None` when nothing differs. The result is dense when at least 7/8 of the
    /// bytes differ (a dense delta is smaller than mask plus payload there, and applies as one
    /// copy), sparse otherwise.
    ///
    /// # Panics
    /// If `old.len() != new.len()`.
    #[must_use]
    pub fn diff(page: PageId, old: &[u8], new: &[u8]) -> Option<Delta> {
        assert_eq!(old.len(), new.len(), "Delta::diff needs equal lengths");
        let mut d = Delta::diff_at(page, old, 0, new)?;
        if let Body::Sparse { mask, payload } = &mut d.body {
            let n = mask.count();
            if n == new.len() {
                // Every byte changed: the payload already is the page.
                d.body = Body::Dense(std::mem::take(payload));
            } else if n * 8 >= new.len() * 7 {
                d.body = Body::Dense(new.to_vec());
            }
        }
        Some(d)
    }

    /// The sparse delta that writes `new` at `offset` of a page whose current bytes are `page`,
    /// selecting only the bytes that differ. `None` when nothing differs.
    ///
    /// # Panics
    /// If `offset + new.len() > page.len()`.
    #[must_use]
    pub fn diff_at(page_id: PageId, page: &[u8], offset: usize, new: &[u8]) -> Option<Delta> {
        let end = offset + new.len();
        assert!(end <= page.len(), "Delta::diff_at: range past the page");
        if new.is_empty() {
            return None;
        }
        let first_word = offset / 64;
        let last_word = end.div_ceil(64);
        let mut words = Vec::with_capacity(last_word - first_word);
        let mut payload = Vec::with_capacity(new.len());
        let mut lead_zero = 0usize;
        for w in first_word..last_word {
            let lo = (w * 64).max(offset);
            let hi = ((w + 1) * 64).min(end);
            let old_b = &page[lo..hi];
            let new_b = &new[lo - offset..hi - offset];
            let bits = if old_b == new_b {
                0
            } else {
                block_diff(old_b, new_b) << (lo - w * 64)
            };
            if bits == 0 && words.is_empty() {
                lead_zero += 1;
                continue;
            }
            words.push(bits);
            if bits == !0 {
                payload.extend_from_slice(&new[w * 64 - offset..w * 64 + 64 - offset]);
            } else if bits != 0 {
                for_each_run_in_word(bits, |o, l| {
                    let abs = w * 64 + o;
                    payload.extend_from_slice(&new[abs - offset..abs - offset + l]);
                });
            }
        }
        if words.is_empty() {
            return None;
        }
        let mask = Mask::from_words(first_word + lead_zero, words);
        Some(Delta {
            page: page_id,
            lsn: Lsn::ZERO,
            epoch: 0,
            timestamp_ns: 0,
            source: Source::User,
            body: Body::Sparse { mask, payload },
        })
    }

    /// True for a dense delta.
    #[must_use]
    pub fn is_dense(&self) -> bool {
        matches!(self.body, Body::Dense(_))
    }

    /// The mask of a sparse delta (`None` for a dense one, which selects every byte).
    #[must_use]
    pub fn mask(&self) -> Option<&Mask> {
        match &self.body {
            Body::Dense(_) => None,
            Body::Sparse { mask, .. } => Some(mask),
        }
    }

    /// The bytes carried: the page for a dense delta, the masked bytes for a sparse one.
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        match &self.body {
            Body::Dense(b) => b,
            Body::Sparse { payload, .. } => payload,
        }
    }

    /// Checks that this delta fits a page of `size` bytes.
    ///
    /// # Errors
    /// [`Error::SizeMismatch`] for a dense delta of another length, [`Error::OutOfBounds`] for a
    /// mask past the end, [`Error::MaskPayloadMismatch`] for an inconsistent sparse delta.
    pub fn check(&self, size: usize) -> Result<()> {
        match &self.body {
            Body::Dense(b) if b.len() != size => Err(Error::SizeMismatch {
                page: self.page,
                expected: size,
                found: b.len(),
            }),
            Body::Dense(_) => Ok(()),
            Body::Sparse { mask, payload } => {
                let last = mask.last_byte();
                if last > size {
                    let first = mask.runs().first().map_or(0, |r| r.0);
                    return Err(Error::OutOfBounds {
                        page: self.page,
                        offset: first,
                        end: last,
                        size,
                    });
                }
                let n = mask.count();
                if n != payload.len() {
                    return Err(Error::MaskPayloadMismatch {
                        mask_bytes: n,
                        payload_bytes: payload.len(),
                    });
                }
                Ok(())
            }
        }
    }

    /// Applies the delta to `bytes` (a page's contents). Does not touch epochs.
    ///
    /// # Errors
    /// As [`Delta::check`]; `bytes` is unchanged on error.
    pub fn apply(&self, bytes: &mut [u8]) -> Result<()> {
        self.check(bytes.len())?;
        self.apply_unchecked(bytes);
        Ok(())
    }

    /// [`Delta::apply`] without the checks, for deltas already checked against this page size.
    pub(crate) fn apply_unchecked(&self, bytes: &mut [u8]) {
        match &self.body {
            Body::Dense(b) => bytes.copy_from_slice(b),
            Body::Sparse { mask, payload } => {
                let mut p = 0;
                let base = mask.start_word as usize * 64;
                for (i, &w) in mask.words.iter().enumerate() {
                    if w == !0 {
                        let at = base + i * 64;
                        bytes[at..at + 64].copy_from_slice(&payload[p..p + 64]);
                        p += 64;
                    } else if w != 0 {
                        for_each_run_in_word(w, |o, l| {
                            let at = base + i * 64 + o;
                            bytes[at..at + l].copy_from_slice(&payload[p..p + l]);
                            p += l;
                        });
                    }
                }
            }
        }
    }

    /// The dense form of this delta applied to `base` (the page it will be applied to).
    ///
    /// # Errors
    /// As [`Delta::check`] for `base.len()`.
    pub fn to_dense(&self, base: &[u8]) -> Result<Delta> {
        let mut bytes = base.to_vec();
        self.apply(&mut bytes)?;
        Ok(Delta {
            body: Body::Dense(bytes),
            ..self.clone()
        })
    }

    /// `self` followed by `later`, as one delta: where both write a byte, `later` wins; the
    /// masks are OR-ed. Applying the result equals applying `self` then `later`. The result
    /// carries `later`'s LSN, epoch, timestamp and source.
    ///
    /// # Errors
    /// [`Error::PageMismatch`] when the deltas are for different pages; [`Error::SizeMismatch`]
    /// for two dense deltas of different lengths.
    pub fn merge(&self, later: &Delta) -> Result<Delta> {
        if self.page != later.page {
            return Err(Error::PageMismatch {
                first: self.page,
                second: later.page,
            });
        }
        let body = match (&self.body, &later.body) {
            (Body::Dense(a), Body::Dense(b)) if a.len() != b.len() => {
                return Err(Error::SizeMismatch {
                    page: self.page,
                    expected: a.len(),
                    found: b.len(),
                });
            }
            (_, Body::Dense(b)) => Body::Dense(b.clone()),
            (Body::Dense(a), Body::Sparse { .. }) => {
                let mut bytes = a.clone();
                later.apply(&mut bytes)?;
                Body::Dense(bytes)
            }
            (Body::Sparse { mask: ma, .. }, Body::Sparse { mask: mb, .. }) => {
                let mask = ma.union(mb);
                if mask.is_empty() {
                    Body::Sparse {
                        mask,
                        payload: Vec::new(),
                    }
                } else {
                    let base = mask.start_word as usize * 64;
                    let mut scratch = vec![0u8; mask.end() - base];
                    for d in [self, later] {
                        if let Body::Sparse { mask: m, payload } = &d.body {
                            let mut p = 0;
                            m.for_each_run(|o, l| {
                                scratch[o - base..o - base + l].copy_from_slice(&payload[p..p + l]);
                                p += l;
                            });
                        }
                    }
                    let mut payload = Vec::with_capacity(mask.count());
                    mask.for_each_run(|o, l| {
                        payload.extend_from_slice(&scratch[o - base..o - base + l])
                    });
                    Body::Sparse { mask, payload }
                }
            }
        };
        Ok(Delta {
            body,
            ..later.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonzero_bytes_matches_bytewise() {
        for pattern in 0u32..256 {
            let mut x = 0u64;
            for k in 0..8 {
                if pattern & (1 << k) != 0 {
                    x |= 0x80u64 << (8 * k); // high bit only
                }
            }
            assert_eq!(
                nonzero_bytes(x),
                u64::from(pattern),
                "high bits {pattern:08b}"
            );
            let low = x >> 7; // low bit only
            assert_eq!(
                nonzero_bytes(low),
                u64::from(pattern),
                "low bits {pattern:08b}"
            );
            let all = low * 0xff;
            assert_eq!(
                nonzero_bytes(all),
                u64::from(pattern),
                "full bytes {pattern:08b}"
            );
        }
    }

    #[test]
    fn runs_cross_word_boundaries() {
        let m = Mask::from_ranges(&[(60, 10), (200, 1), (255, 66)]);
        assert_eq!(m.runs(), vec![(60, 10), (200, 1), (255, 66)]);
        assert_eq!(m.count(), 77);
        assert_eq!(m.last_byte(), 321);
        assert!(m.contains(69) && !m.contains(70) && m.contains(320) && !m.contains(321));
        let full = Mask::from_ranges(&[(64, 128)]);
        assert_eq!(full.runs(), vec![(64, 128)]);
        assert_eq!(full.start_word(), 1);
        assert_eq!(full.words(), &[!0, !0]);
    }

    #[test]
    fn diff_apply_round_trip() {
        let old: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let mut new = old.clone();
        for i in [0usize, 1, 63, 64, 65, 500, 998, 999] {
            new[i] ^= 0x5a;
        }
        let d = Delta::diff(PageId(1), &old, &new).unwrap();
        assert!(!d.is_dense());
        assert_eq!(d.mask().unwrap().count(), 8);
        let mut x = old.clone();
        d.apply(&mut x).unwrap();
        assert_eq!(x, new);
        assert!(Delta::diff(PageId(1), &old, &old).is_none());
        let all: Vec<u8> = old.iter().map(|b| !b).collect();
        assert!(Delta::diff(PageId(1), &old, &all).unwrap().is_dense());
    }

    #[test]
    fn diff_at_unaligned_range() {
        let page = vec![0u8; 300];
        let d = Delta::diff_at(PageId(2), &page, 61, &[0, 1, 0, 2, 2]).unwrap();
        assert_eq!(d.mask().unwrap().runs(), vec![(62, 1), (64, 2)]);
        assert_eq!(d.payload(), &[1, 2, 2]);
        assert!(Delta::diff_at(PageId(2), &page, 100, &[0; 50]).is_none());
    }

    #[test]
    fn bad_deltas_are_errors() {
        let d = Delta::write(PageId(1), 10, &[1; 10]);
        assert!(matches!(
            d.apply(&mut [0u8; 15]),
            Err(Error::OutOfBounds {
                end: 20,
                size: 15,
                ..
            })
        ));
        assert!(matches!(
            Delta::dense(PageId(1), vec![0; 3]).apply(&mut [0u8; 4]),
            Err(Error::SizeMismatch { .. })
        ));
        assert!(matches!(
            Delta::sparse(PageId(1), Mask::from_ranges(&[(0, 2)]), vec![1]),
            Err(Error::MaskPayloadMismatch {
                mask_bytes: 2,
                payload_bytes: 1
            })
        ));
        assert!(matches!(
            d.merge(&Delta::write(PageId(2), 0, &[1])),
            Err(Error::PageMismatch { .. })
        ));
    }

    #[test]
    fn merge_later_wins() {
        let a = Delta::write(PageId(1), 0, &[1, 1, 1, 1]);
        let b = Delta::write(PageId(1), 2, &[2, 2, 2, 2]);
        let m = a.merge(&b).unwrap();
        assert_eq!(m.payload(), &[1, 1, 2, 2, 2, 2]);
        let mut x = [0u8; 8];
        m.apply(&mut x).unwrap();
        assert_eq!(x, [1, 1, 2, 2, 2, 2, 0, 0]);
    }
}
