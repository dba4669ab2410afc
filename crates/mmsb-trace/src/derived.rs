//! Derived pages computed from `[header page, document page]` (in that edge order), and the same
//! values computed directly from a `&str` for checking.
//!
//! # Page layouts
//!
//! **Line-start index** ([`line_index_size`]`(max_lines)` = `4 + 4 * max_lines` bytes): a
//! little-endian `u32` count of line starts, then that many little-endian `u32` byte offsets into
//! the logical document: 0, and one past every `'\n'` (so a document ending in `'\n'` has a last
//! line start equal to its length). The rest of the page is zero. If the document ever had more
//! line starts than the page holds, the count is the true count and only the entries that fit are
//! stored ([`decode_line_index`] then returns `None`); the trace pre-scan's bound makes that
//! impossible for trace pages.
//!
//! **Word count** ([`WORD_COUNT_SIZE`] = 8 bytes): a little-endian `u64`,
//! `str::split_whitespace().count()` of the logical document.
//!
//! When the header does not decode (for example the all-zero header of a page not written yet)
//! or does not match the document page, both functions fill their page with zeros.

use crate::doc::Header;

/// Size of the word-count page.
pub const WORD_COUNT_SIZE: usize = 8;

/// Size of a line-start index page holding up to `max_lines` line starts.
pub fn line_index_size(max_lines: usize) -> usize {
    4 + 4 * max_lines
}

/// The logical document's two byte segments from the parents `[header, document]`.
fn segments<'a>(parents: &[&'a [u8]]) -> Option<(&'a [u8], &'a [u8])> {
    let [hdr, doc, ..] = parents else { return None };
    Header::decode(hdr).ok()?.segments(doc)
}

/// Recompute function of the line-start index page: parents `[header, document]`.
pub fn line_index_recompute(parents: &[&[u8]], out: &mut [u8]) {
    if out.len() < 4 {
        out.fill(0);
        return;
    }
    let Some((a, b)) = segments(parents) else {
        out.fill(0);
        return;
    };
    let slots = (out.len() - 4) / 4;
    let (count_field, entries) = out.split_at_mut(4);
    let mut n = 0usize;
    let mut push = |off: usize| {
        if n < slots {
            entries[4 * n..4 * n + 4].copy_from_slice(&(off as u32).to_le_bytes());
        }
        n += 1;
    };
    push(0);
    for i in memchr::memchr_iter(b'\n', a) {
        push(i + 1);
    }
    let base = a.len() + 1;
    for i in memchr::memchr_iter(b'\n', b) {
        push(base + i);
    }
    count_field.copy_from_slice(&(n.min(u32::MAX as usize) as u32).to_le_bytes());
    entries[4 * n.min(slots)..].fill(0);
}

/// Recompute function of the word-count page: parents `[header, document]`.
pub fn word_count_recompute(parents: &[&[u8]], out: &mut [u8]) {
    let n = match segments(parents) {
        Some((a, b)) => {
            let mut w = WordCounter::new();
            w.feed(a);
            w.feed(b);
            w.count
        }
        None => 0,
    };
    let k = out.len().min(WORD_COUNT_SIZE);
    out[..k].copy_from_slice(&n.to_le_bytes()[..k]);
    out[k..].fill(0);
}

/// `char::is_whitespace` for ASCII: space and `\t \n \x0B \x0C \r`.
#[cfg_attr(
    all(target_arch = "x86_64", target_feature = "sse2", not(test)),
    allow(dead_code)
)]
#[inline(always)]
fn ascii_ws(b: u8) -> bool {
    b == b' ' || b.wrapping_sub(9) < 5
}

/// If a whitespace char other than ASCII starts at `s[i]`, its byte length. These are U+0085,
/// U+00A0 (lead byte `C2`), U+1680 (`E1`), U+2000..=U+200A, U+2028, U+2029, U+202F, U+205F
/// (`E2`) and U+3000 (`E3`); a test checks this against `char::is_whitespace` for every char.
#[inline]
fn non_ascii_ws_len(s: &[u8], i: usize) -> Option<usize> {
    let b1 = *s.get(i + 1)?;
    let ws = match s[i] {
        0xC2 => return matches!(b1, 0x85 | 0xA0).then_some(2),
        0xE1 => b1 == 0x9A && s.get(i + 2) == Some(&0x80),
        0xE2 => match (b1, *s.get(i + 2)?) {
            (0x80, b2) => matches!(b2, 0x80..=0x8A | 0xA8 | 0xA9 | 0xAF),
            (0x81, b2) => b2 == 0x9F,
            _ => false,
        },
        0xE3 => b1 == 0x80 && s.get(i + 2) == Some(&0x80),
        _ => false,
    };
    ws.then_some(3)
}

/// For 64 bytes: bit k of `.0` is set when byte k is ASCII whitespace, of `.1` when byte k is
/// one of the lead bytes `C2`, `E1`, `E2`, `E3` that can start a non-ASCII whitespace char.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
fn block_masks(b: &[u8; 64]) -> (u64, u64) {
    use std::arch::x86_64::{
        __m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_cmpgt_epi8, _mm_cmplt_epi8, _mm_loadu_si128,
        _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    let (mut ws, mut lead) = (0u64, 0u64);
    for k in 0..4 {
        // SAFETY: SSE2 is enabled (checked by the cfg above; it is part of the x86_64 baseline),
        // which is all these intrinsics require; the load reads the 16 bytes at 16 * k of the
        // 64-byte `b` and an unaligned load has no alignment requirement.
        let (w, l) = unsafe {
            let v = _mm_loadu_si128(b.as_ptr().add(16 * k).cast::<__m128i>());
            let sp = _mm_cmpeq_epi8(v, _mm_set1_epi8(0x20));
            // Signed compares: bytes >= 0x80 are negative and fail `> 8`.
            let ctl = _mm_and_si128(
                _mm_cmpgt_epi8(v, _mm_set1_epi8(8)),
                _mm_cmplt_epi8(v, _mm_set1_epi8(14)),
            );
            let c2 = _mm_cmpeq_epi8(v, _mm_set1_epi8(0xC2_u8 as i8));
            // E1..=E3 as signed bytes: -31..=-29.
            let e = _mm_and_si128(
                _mm_cmpgt_epi8(v, _mm_set1_epi8(0xE0_u8 as i8)),
                _mm_cmplt_epi8(v, _mm_set1_epi8(0xE4_u8 as i8)),
            );
            (
                _mm_movemask_epi8(_mm_or_si128(sp, ctl)),
                _mm_movemask_epi8(_mm_or_si128(c2, e)),
            )
        };
        ws |= u64::from(w as u16) << (16 * k);
        lead |= u64::from(l as u16) << (16 * k);
    }
    (ws, lead)
}

/// Portable version of the x86_64 SSE2 `block_masks`.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline]
fn block_masks(b: &[u8; 64]) -> (u64, u64) {
    block_masks_portable(b)
}

#[cfg_attr(
    all(target_arch = "x86_64", target_feature = "sse2", not(test)),
    allow(dead_code)
)]
#[inline]
fn block_masks_portable(b: &[u8; 64]) -> (u64, u64) {
    let (mut ws, mut lead) = (0u64, 0u64);
    for (k, &x) in b.iter().enumerate() {
        ws |= u64::from(ascii_ws(x)) << k;
        lead |= u64::from(matches!(x, 0xC2 | 0xE1 | 0xE2 | 0xE3)) << k;
    }
    (ws, lead)
}

/// Counts words (maximal runs of non-whitespace chars, as `split_whitespace`) over UTF-8 text fed
/// in pieces that each start and end on a char boundary.
///
/// Works on 64-byte blocks: a bit mask of whitespace bytes, where every byte of a multi-byte char
/// is non-whitespace unless the char is one of the few non-ASCII whitespace chars (found by their
/// lead bytes `C2`, `E1`, `E2`, `E3`, then decoded); a word starts at every non-whitespace byte
/// whose predecessor is whitespace. About 0.1 ns per byte on ASCII text.
#[derive(Clone, Copy, Debug)]
pub struct WordCounter {
    /// Words started so far.
    pub count: u64,
    prev_ws: bool,
}

impl Default for WordCounter {
    fn default() -> Self {
        WordCounter::new()
    }
}

impl WordCounter {
    /// Nothing seen yet.
    pub fn new() -> WordCounter {
        WordCounter {
            count: 0,
            prev_ws: true,
        }
    }

    /// Counts the words starting in `s`, continuing a word from the previous piece.
    pub fn feed(&mut self, s: &[u8]) {
        // Whitespace bits forced into the next block: the continuation bytes of a non-ASCII
        // whitespace char that straddles the block boundary.
        let mut spill = 0u64;
        let mut i = 0;
        while i + 64 <= s.len() {
            let block: &[u8; 64] = s[i..i + 64].try_into().expect("64 bytes");
            spill = self.block(s, i, block, spill, 64);
            i += 64;
        }
        let rest = s.len() - i;
        if rest > 0 {
            // Pad with spaces: they start no word; the state after the block is taken from the
            // last real byte.
            let mut block = [b' '; 64];
            block[..rest].copy_from_slice(&s[i..]);
            self.block(s, i, &block, spill, rest);
        }
    }

    /// One block of `len` real bytes (the rest padding) at `s[at..]`; returns the spill.
    #[inline]
    fn block(&mut self, s: &[u8], at: usize, block: &[u8; 64], spill: u64, len: usize) -> u64 {
        let (mut ws, mut leads) = block_masks(block);
        ws |= spill;
        let mut next_spill = 0u64;
        while leads != 0 {
            let k = leads.trailing_zeros() as usize;
            leads &= leads - 1;
            if k < len
                && let Some(w) = non_ascii_ws_len(s, at + k)
            {
                let bits = ((1u128 << w) - 1) << k;
                ws |= bits as u64;
                next_spill |= (bits >> 64) as u64;
            }
        }
        let starts = !ws & ((ws << 1) | u64::from(self.prev_ws));
        let real = if len == 64 {
            u64::MAX
        } else {
            (1u64 << len) - 1
        };
        self.count += u64::from((starts & real).count_ones());
        self.prev_ws = (ws >> (len - 1)) & 1 != 0;
        next_spill
    }
}

/// Line starts of `text`, computed directly: 0 and one past every `'\n'`.
pub fn line_starts(text: &str) -> Vec<u32> {
    std::iter::once(0)
        .chain(memchr::memchr_iter(b'\n', text.as_bytes()).map(|i| (i + 1) as u32))
        .collect()
}

/// Words of `text`, computed directly: `split_whitespace().count()`.
pub fn word_count(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The line starts stored in a line-index page, or `None` when the page is shorter than its
/// count says.
pub fn decode_line_index(page: &[u8]) -> Option<Vec<u32>> {
    let n = u32::from_le_bytes(page.get(..4)?.try_into().ok()?) as usize;
    let body = page.get(4..4 + n.checked_mul(4)?)?;
    Some(
        body.chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4")))
            .collect(),
    )
}

/// The word count stored in a word-count page.
pub fn decode_word_count(page: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(page.get(..8)?.try_into().ok()?))
}

/// The exact bytes a line-index page of `size` bytes holds for `text`.
pub fn expected_line_index_page(text: &str, size: usize) -> Vec<u8> {
    let starts = line_starts(text);
    let mut page = vec![0u8; size];
    let n = starts.len();
    if size >= 4 {
        page[..4].copy_from_slice(&(n as u32).to_le_bytes());
        for (k, s) in starts.iter().take((size - 4) / 4).enumerate() {
            page[4 + 4 * k..8 + 4 * k].copy_from_slice(&s.to_le_bytes());
        }
    }
    page
}

/// The exact bytes of the word-count page for `text`.
pub fn expected_word_count_page(text: &str) -> [u8; WORD_COUNT_SIZE] {
    word_count(text).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::{GapDoc, VecPages};
    use crate::parse::PatchRef;

    #[test]
    fn whitespace_tables_match_std() {
        for b in 0u8..128 {
            assert_eq!(ascii_ws(b), (b as char).is_whitespace(), "{b}");
        }
        let mut buf = [0u8; 4];
        for c in (0..=0x10FFFFu32)
            .filter_map(char::from_u32)
            .filter(|c| !c.is_ascii())
        {
            let e = c.encode_utf8(&mut buf).as_bytes();
            let got = non_ascii_ws_len(e, 0);
            assert_eq!(
                got,
                c.is_whitespace().then_some(e.len()),
                "U+{:04X}",
                c as u32
            );
        }
    }

    #[test]
    fn block_masks_match_portable() {
        let mut b = [0u8; 64];
        let mut x = 0x1234_5678_9ABC_DEF1u64;
        for _ in 0..2000 {
            for v in b.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *v = match x % 4 {
                    0 => (x >> 8) as u8,
                    1 => 0xE0 + (x >> 8) as u8 % 5,
                    2 => 0xC0 + (x >> 8) as u8 % 4,
                    _ => (x >> 8) as u8 % 16 + 4,
                };
            }
            assert_eq!(block_masks(&b), block_masks_portable(&b), "{b:?}");
        }
    }

    #[test]
    fn blocks_and_boundaries() {
        // Non-ASCII whitespace straddling 64-byte block boundaries, at every offset.
        for ws in ["\u{A0}", "\u{3000}", "\u{2028}", "\u{85}"] {
            for k in 0..70 {
                let s = format!("{}{ws}b 日本{}", "a".repeat(k), "é".repeat(k));
                let mut w = WordCounter::new();
                w.feed(s.as_bytes());
                assert_eq!(w.count, word_count(&s), "{ws:?} at {k}");
            }
        }
    }

    #[test]
    fn word_counter_matches_split_whitespace() {
        let ws = [
            " ", "\t", "\n", "\x0B", "\x0C", "\r", "\u{85}", "\u{A0}", "\u{1680}", "\u{2000}",
            "\u{200A}", "\u{2028}", "\u{2029}", "\u{202F}", "\u{205F}", "\u{3000}",
        ];
        let words = [
            "a",
            "日本",
            "😀",
            "e\u{301}",
            "\u{200B}",
            "x\u{FEFF}y",
            "\u{1F}",
            "ü",
        ];
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        for round in 0..300 {
            let mut s = String::new();
            let len = next(400);
            while s.len() < len {
                match next(4) {
                    0 => s.push_str(ws[next(ws.len())]),
                    1 => s.push_str(words[next(words.len())]),
                    _ => s.push_str(&"abcdefgh ijk"[..1 + next(11)]),
                }
            }
            let expect = word_count(&s);
            let mut w = WordCounter::new();
            w.feed(s.as_bytes());
            assert_eq!(w.count, expect, "round {round}: {s:?}");
            // Split at every char boundary.
            for (k, _) in s.char_indices().step_by(7) {
                let mut w = WordCounter::new();
                w.feed(&s.as_bytes()[..k]);
                w.feed(&s.as_bytes()[k..]);
                assert_eq!(w.count, expect, "round {round} split {k}");
            }
        }
    }

    #[test]
    fn recompute_over_gap() {
        let mut p = VecPages::new(256);
        let start = "one two\nthree\u{A0}four\n\n日本 語\n";
        let mut d = GapDoc::create(&mut p, start, 256).unwrap();
        d.apply_txn(
            &mut p,
            [PatchRef {
                pos: 10,
                del: 0,
                ins: "x\ny ",
                ins_chars: 4,
            }],
        )
        .unwrap();
        let text = crate::doc::logical_text(&p.header, &p.doc).unwrap();
        assert_eq!(text, "one two\nthx\ny ree\u{A0}four\n\n日本 語\n");
        let mut li = vec![0xAAu8; line_index_size(10)];
        line_index_recompute(&[&p.header, &p.doc], &mut li);
        assert_eq!(li, expected_line_index_page(&text, li.len()));
        assert_eq!(decode_line_index(&li).unwrap(), line_starts(&text));
        let mut wc = [0xAAu8; 8];
        word_count_recompute(&[&p.header, &p.doc], &mut wc);
        assert_eq!(decode_word_count(&wc), Some(word_count(&text)));
        // A page too small keeps the true count but truncates the entries.
        let mut small = vec![0u8; line_index_size(2)];
        line_index_recompute(&[&p.header, &p.doc], &mut small);
        assert_eq!(
            u32::from_le_bytes(small[..4].try_into().unwrap()) as usize,
            line_starts(&text).len()
        );
        assert_eq!(decode_line_index(&small), None);
        // Unwritten header: zeros.
        word_count_recompute(&[&[0; 64], &p.doc], &mut wc);
        assert_eq!(wc, [0; 8]);
        line_index_recompute(&[&[0; 64]], &mut li);
        assert!(li.iter().all(|&b| b == 0));
    }
}
