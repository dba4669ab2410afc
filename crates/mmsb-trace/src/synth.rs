//! The embedded default trace, generated in code (used when no trace file is given), and a naive
//! reference model.
//!
//! The generator simulates someone typing a multilingual note: mostly one char per transaction at
//! a moving cursor, with backspaces, forward deletes, cursor jumps, selection replacements,
//! pastes, and multi-patch transactions (indenting several lines, find-and-replace). The text
//! mixes ASCII, Latin-1 and other 2-byte chars, CJK (3 bytes), emoji (4 bytes, with skin-tone
//! modifiers and ZWJ sequences), combining marks, and non-ASCII whitespace (U+00A0, U+3000), so it
//! exercises every UTF-8 width. It is deterministic (fixed seed, xorshift64*).

use crate::parse::{Trace, TraceError};

/// Number of transactions in [`default_trace`].
pub const DEFAULT_TXNS: usize = 4000;

/// Name of the embedded trace (stands in for a file name in errors and reports).
pub const DEFAULT_NAME: &str = "embedded-default-trace";

const START: &str = "# Notizen — 日本語 🚀\n\nStart here: café, naïve, Ωμέγα.\n";

const WORDS: &[&str] = &[
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "page",
    "delta",
    "log",
    "café",
    "naïve",
    "über",
    "straße",
    "Ωμέγα",
    "русский",
    "日本語",
    "中文",
    "한국어",
    "テスト",
    "😀",
    "🎉",
    "👍🏽",
    "👨\u{200D}👩\u{200D}👧",
    "e\u{301}te\u{301}",
    "a\u{308}",
    "🇫🇷",
    "x²",
    "∑",
    "→",
    "«quote»",
];
const SEPARATORS: &[&str] = &[
    " ", " ", " ", " ", ", ", ". ", "\n", "\u{A0}", "\u{3000}", "\t",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

/// Applies one patch to a `Vec<char>` document: the reference model, obviously correct and slow.
/// Returns `false` (and leaves `doc` unchanged) if the patch is out of range.
pub fn naive_apply(doc: &mut Vec<char>, pos: usize, del: usize, ins: &str) -> bool {
    if pos.checked_add(del).is_none_or(|e| e > doc.len()) {
        return false;
    }
    doc.splice(pos..pos + del, ins.chars());
    true
}

/// Transactions as lists of `(pos, del, ins)` patches.
pub type Txns = Vec<Vec<(usize, usize, String)>>;

/// The patches of a trace generated with `seed`: `txns` transactions, starting from a fixed
/// multilingual text. Returns `(start, end, txns)`.
pub fn generate(seed: u64, txns: usize) -> (String, String, Txns) {
    let mut rng = Rng(seed | 1);
    let mut doc: Vec<char> = START.chars().collect();
    let mut cursor = doc.len();
    let mut out: Txns = Vec::with_capacity(txns);
    // The word being typed, one char per transaction.
    let mut typing: Vec<char> = Vec::new();
    while out.len() < txns {
        cursor = cursor.min(doc.len());
        let mut txn: Vec<(usize, usize, String)> = Vec::new();
        if let Some(c) = typing.first().copied() {
            typing.remove(0);
            txn.push((cursor, 0, c.to_string()));
            cursor += 1;
        } else {
            match rng.below(100) {
                0..=59 => {
                    // Start typing a word and its separator.
                    typing.extend(rng.pick(WORDS).chars());
                    typing.extend(rng.pick(SEPARATORS).chars());
                    continue;
                }
                60..=71 if cursor > 0 => {
                    // Backspace (sometimes a few in one go, as key repeat).
                    let n = (1 + rng.below(3)).min(cursor);
                    txn.push((cursor - n, n, String::new()));
                    cursor -= n;
                }
                72..=75 if cursor < doc.len() => {
                    txn.push((cursor, 1, String::new()));
                }
                76..=83 => cursor = rng.below(doc.len() + 1),
                84..=88 if !doc.is_empty() => {
                    // Replace a selection with a word.
                    let a = rng.below(doc.len());
                    let n = (1 + rng.below(12)).min(doc.len() - a);
                    let w = rng.pick(WORDS);
                    txn.push((a, n, w.to_owned()));
                    cursor = a + w.chars().count();
                }
                89..=91 => {
                    // Paste a few lines.
                    let mut s = String::new();
                    for _ in 0..1 + rng.below(3) {
                        for _ in 0..2 + rng.below(6) {
                            s.push_str(rng.pick(WORDS));
                            s.push(' ');
                        }
                        s.push('\n');
                    }
                    txn.push((cursor, 0, s.clone()));
                    cursor += s.chars().count();
                }
                92..=95 => {
                    // Indent up to 4 line starts after the cursor: positions shift as each patch
                    // applies to the result of the previous one.
                    let mut p = cursor;
                    let mut shadow = doc.clone();
                    for _ in 0..4 {
                        match shadow[p.min(shadow.len())..]
                            .iter()
                            .position(|&c| c == '\n')
                        {
                            Some(k) => {
                                p += k + 1;
                                txn.push((p, 0, "\u{3000} ".to_owned()));
                                naive_apply(&mut shadow, p, 0, "\u{3000} ");
                                p += 2;
                            }
                            None => break,
                        }
                    }
                }
                _ => {
                    // Find and replace one word everywhere (up to 3 occurrences), back to front
                    // within one transaction.
                    let from = rng.pick(WORDS);
                    let to = rng.pick(WORDS);
                    let pat: Vec<char> = from.chars().collect();
                    let mut hits = Vec::new();
                    let mut i = 0;
                    while i + pat.len() <= doc.len() && hits.len() < 3 {
                        if doc[i..i + pat.len()] == pat[..] {
                            hits.push(i);
                            i += pat.len();
                        } else {
                            i += 1;
                        }
                    }
                    for &h in hits.iter().rev() {
                        txn.push((h, pat.len(), to.to_owned()));
                    }
                }
            }
        }
        if txn.is_empty() {
            continue;
        }
        for (pos, del, ins) in &txn {
            let ok = naive_apply(&mut doc, *pos, *del, ins);
            debug_assert!(ok);
        }
        out.push(txn);
    }
    (START.to_owned(), doc.into_iter().collect(), out)
}

/// The embedded default trace: [`DEFAULT_TXNS`] transactions of multilingual typing (see the
/// [module docs](self)).
pub fn default_trace() -> Trace {
    synthetic_trace(DEFAULT_NAME, 0x5EED_F00D_4D5B, DEFAULT_TXNS)
        .expect("the generator only emits in-range patches")
}

/// A generated trace with a given seed and size.
pub fn synthetic_trace(name: &str, seed: u64, txns: usize) -> Result<Trace, TraceError> {
    let (start, end, t) = generate(seed, txns);
    Trace::from_txns(name, &start, &end, &t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_trace_is_deterministic_and_multibyte() {
        let a = default_trace();
        let b = default_trace();
        assert_eq!(a.end_content(), b.end_content());
        assert_eq!(a.txn_count(), DEFAULT_TXNS);
        assert!(!a.stats().all_ascii);
        let end = a.end_content();
        for w in [1, 2, 3, 4] {
            assert!(end.chars().any(|c| c.len_utf8() == w), "no {w}-byte char");
        }
        assert!(a.patch_count() > a.txn_count());
        assert!(a.stats().deletes > 100);
    }
}
