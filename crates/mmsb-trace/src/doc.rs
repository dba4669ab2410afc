//! The document as a gap buffer of UTF-8 bytes in one page, described by a small header page.
//!
//! # Page layouts
//!
//! **Document page** (`capacity` bytes): `[text before the gap][gap][text after the gap]`, where
//! the text after the gap always ends at the end of the page. The logical document is
//! `page[..gap_start] ++ page[gap_end..capacity]`. Bytes inside the gap are stale (whatever was
//! there before) and mean nothing. After [`GapDoc::finish`] the gap is at the end and zeroed, so
//! the page is exactly the document followed by zero bytes.
//!
//! **Header page** ([`HEADER_SIZE`] = 64 bytes, every field a little-endian `u64`):
//!
//! | offset | field | meaning |
//! |---|---|---|
//! | 0  | tag | [`FORMAT_TAG`], the ASCII bytes `MMSBGAP1` |
//! | 8  | `capacity` | size of the document page in bytes |
//! | 16 | `byte_len` | document length in bytes (`gap_start + capacity - gap_end`) |
//! | 24 | `char_len` | document length in chars; `== byte_len` exactly when the document is ASCII |
//! | 32 | `gap_start` | first byte of the gap (= bytes before the gap) |
//! | 40 | `gap_end` | first byte after the gap |
//! | 48 | `chars_before_gap` | chars before the gap (the gap's char position) |
//! | 56 | `txns_applied` | transactions applied so far (where to resume a trace from these pages) |
//!
//! # Edits as page writes
//!
//! Each patch `(pos, del, ins)` becomes: a gap move (when the gap is not already inside the
//! deleted range) that writes exactly the bytes it moves, a deletion that only moves the gap's
//! edges (no page write), and an insertion that writes the inserted bytes at the gap start. The
//! header is written once per transaction ([`GapDoc::apply_txn`]), or once per batch of
//! transactions ([`GapDoc::apply_txn_unsynced`] then [`GapDoc::sync_header`]). Deleting next to the gap (backspace, forward delete,
//! replacing a selection that touches the cursor) writes nothing to the document page.
//!
//! Char positions become byte positions by walking from the gap over the same bytes the gap move
//! copies; when `byte_len == char_len` the document is ASCII and no walk is needed.
//!
//! [`GapDoc`] reads the document page through [`PageStore::doc_page`] and writes through
//! [`PageStore::write`]; it keeps no copy of the document, only the header fields and one
//! scratch buffer for moved bytes (reused, so a transaction allocates nothing once the scratch
//! has grown to the longest move).

use crate::parse::PatchRef;

/// Size of the header page in bytes.
pub const HEADER_SIZE: usize = 64;
/// The format tag at offset 0 of the header page.
pub const FORMAT_TAG: [u8; 8] = *b"MMSBGAP1";

/// Which page a write goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageRole {
    /// The header page ([`HEADER_SIZE`] bytes).
    Header,
    /// The document page (`capacity` bytes).
    Doc,
}

/// The header page's fields (see the [module docs](self) for the layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Header {
    /// Size of the document page.
    pub capacity: usize,
    /// Document length in bytes.
    pub byte_len: usize,
    /// Document length in chars.
    pub char_len: usize,
    /// First byte of the gap.
    pub gap_start: usize,
    /// First byte after the gap.
    pub gap_end: usize,
    /// Chars before the gap.
    pub chars_before_gap: usize,
    /// Transactions applied so far.
    pub txns_applied: u64,
}

/// Why a header page does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Shorter than [`HEADER_SIZE`].
    #[error("header page is {0} bytes, expected at least {HEADER_SIZE}")]
    TooShort(usize),
    /// The format tag is not [`FORMAT_TAG`] (for example an all-zero page never written).
    #[error("header page does not start with the format tag MMSBGAP1")]
    BadTag,
    /// The fields contradict each other.
    #[error("header fields are inconsistent: {0}")]
    Inconsistent(&'static str),
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Header {
    /// An empty document in a page of `capacity` bytes: the gap is the whole page.
    pub fn empty(capacity: usize) -> Header {
        Header {
            capacity,
            gap_end: capacity,
            ..Header::default()
        }
    }

    /// The header page's bytes.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(&FORMAT_TAG);
        let fields = [
            self.capacity as u64,
            self.byte_len as u64,
            self.char_len as u64,
            self.gap_start as u64,
            self.gap_end as u64,
            self.chars_before_gap as u64,
            self.txns_applied,
        ];
        for (i, f) in fields.iter().enumerate() {
            b[8 + 8 * i..16 + 8 * i].copy_from_slice(&f.to_le_bytes());
        }
        b
    }

    /// Decodes and checks a header page (bytes past [`HEADER_SIZE`] are ignored).
    pub fn decode(b: &[u8]) -> Result<Header, HeaderError> {
        if b.len() < HEADER_SIZE {
            return Err(HeaderError::TooShort(b.len()));
        }
        if b[0..8] != FORMAT_TAG {
            return Err(HeaderError::BadTag);
        }
        let f = |i: usize| usize::try_from(get_u64(b, 8 + 8 * i));
        let (Ok(capacity), Ok(byte_len), Ok(char_len), Ok(gap_start), Ok(gap_end), Ok(cbg)) =
            (f(0), f(1), f(2), f(3), f(4), f(5))
        else {
            return Err(HeaderError::Inconsistent("a field does not fit in usize"));
        };
        let h = Header {
            capacity,
            byte_len,
            char_len,
            gap_start,
            gap_end,
            chars_before_gap: cbg,
            txns_applied: get_u64(b, 56),
        };
        h.check()?;
        Ok(h)
    }

    /// Checks the invariants between the fields.
    pub fn check(&self) -> Result<(), HeaderError> {
        use HeaderError::Inconsistent as I;
        if !(self.gap_start <= self.gap_end && self.gap_end <= self.capacity) {
            return Err(I("gap outside the page"));
        }
        if self.byte_len != self.gap_start + (self.capacity - self.gap_end) {
            return Err(I("byte_len is not the text before plus after the gap"));
        }
        if self.char_len > self.byte_len || self.chars_before_gap > self.char_len {
            return Err(I("char counts exceed byte counts"));
        }
        if self.char_len.saturating_mul(4) < self.byte_len {
            return Err(I("char_len too small for byte_len"));
        }
        if self.chars_before_gap > self.gap_start
            || self.chars_before_gap.saturating_mul(4) < self.gap_start
        {
            return Err(I("chars_before_gap does not match gap_start"));
        }
        Ok(())
    }

    /// The document is ASCII (every char one byte).
    pub fn is_ascii(&self) -> bool {
        self.byte_len == self.char_len
    }

    /// The logical document's two parts (before and after the gap) in `doc`, or `None` when
    /// `doc` is not `capacity` bytes long.
    pub fn segments<'a>(&self, doc: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
        if doc.len() != self.capacity || self.check().is_err() {
            return None;
        }
        Some((&doc[..self.gap_start], &doc[self.gap_end..]))
    }
}

/// The logical document of a header and document page as a `String` (`None` if the pages do not
/// match or the bytes are not UTF-8).
pub fn logical_text(header: &[u8], doc: &[u8]) -> Option<String> {
    let h = Header::decode(header).ok()?;
    let (a, b) = h.segments(doc)?;
    let mut v = Vec::with_capacity(a.len() + b.len());
    v.extend_from_slice(a);
    v.extend_from_slice(b);
    String::from_utf8(v).ok()
}

/// Where [`GapDoc`] reads the document page and sends its writes.
pub trait PageStore {
    /// What a failed read or write reports.
    type Error;
    /// The document page's current bytes, including every write sent so far.
    fn doc_page(&self) -> Result<&[u8], Self::Error>;
    /// Writes `bytes` at `offset` of page `role`.
    fn write(&mut self, role: PageRole, offset: usize, bytes: &[u8]) -> Result<(), Self::Error>;
}

/// Two plain vectors standing in for the header and document pages (tests, benchmarks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VecPages {
    /// The header page.
    pub header: Vec<u8>,
    /// The document page.
    pub doc: Vec<u8>,
    /// Page writes received.
    pub writes: u64,
    /// Bytes written, over both pages.
    pub bytes_written: u64,
}

impl VecPages {
    /// Zeroed pages for a document page of `capacity` bytes.
    pub fn new(capacity: usize) -> VecPages {
        VecPages {
            header: vec![0; HEADER_SIZE],
            doc: vec![0; capacity],
            writes: 0,
            bytes_written: 0,
        }
    }
}

impl PageStore for VecPages {
    type Error = std::convert::Infallible;

    fn doc_page(&self) -> Result<&[u8], Self::Error> {
        Ok(&self.doc)
    }

    fn write(&mut self, role: PageRole, offset: usize, bytes: &[u8]) -> Result<(), Self::Error> {
        let page = match role {
            PageRole::Header => &mut self.header,
            PageRole::Doc => &mut self.doc,
        };
        page[offset..offset + bytes.len()].copy_from_slice(bytes);
        self.writes += 1;
        self.bytes_written += bytes.len() as u64;
        Ok(())
    }
}

/// What can go wrong applying edits.
#[derive(Debug, thiserror::Error)]
pub enum DocError<E> {
    /// The page store failed.
    #[error("page store: {0}")]
    Store(#[source] E),
    /// A patch reaches past the end of the document.
    #[error("patch at {pos} deleting {del} chars is beyond the document length of {len} chars")]
    OutOfRange {
        /// Position (chars).
        pos: usize,
        /// Delete count (chars).
        del: usize,
        /// Document length (chars).
        len: usize,
    },
    /// The document would not fit in the page.
    #[error("the document needs {need} bytes but the page holds {capacity}")]
    Capacity {
        /// Bytes needed.
        need: usize,
        /// Page size.
        capacity: usize,
    },
    /// The document page does not match the header (wrong size, fewer chars than counted).
    #[error("the document page does not match its header: {0}")]
    Corrupt(&'static str),
}

#[inline]
fn is_lead(b: u8) -> bool {
    // Not a UTF-8 continuation byte (0x80..=0xBF).
    (b as i8) >= -0x40
}

#[inline]
fn count_leads(s: &[u8]) -> usize {
    s.iter().filter(|&&b| is_lead(b)).count()
}

/// Byte length of the first `n` chars of the UTF-8 text `s`, or `None` when `s` has fewer than
/// `n` chars. Cost: about the bytes walked (at most three passes over them for text of 4-byte
/// chars), vectorised char counting.
pub fn fwd_bytes(s: &[u8], n: usize) -> Option<usize> {
    let (mut i, mut c) = (0usize, 0usize);
    while c < n {
        // Each char is at least one byte, so the next n - c bytes hold at most n - c chars.
        let k = n - c;
        if k > s.len() - i {
            return None;
        }
        c += count_leads(&s[i..i + k]);
        i += k;
        while i < s.len() && !is_lead(s[i]) {
            i += 1;
        }
    }
    Some(i)
}

/// Byte length of the last `n` chars of the UTF-8 text `s`, or `None` when `s` has fewer than
/// `n` chars.
pub fn bwd_bytes(s: &[u8], n: usize) -> Option<usize> {
    let (mut j, mut c) = (s.len(), 0usize);
    while c < n {
        let k = n - c;
        if k > j {
            return None;
        }
        let old = j;
        j -= k;
        // Back to the start of the char that byte j belongs to: adds at most one lead, and only
        // when byte j was a continuation, so at most k chars are counted in all.
        while j > 0 && !is_lead(s[j]) {
            j -= 1;
        }
        c += count_leads(&s[j..old]);
    }
    Some(s.len() - j)
}

/// The gap-buffer editor. Holds the header fields and a scratch buffer; the document's bytes
/// live only in the [`PageStore`]. After any error the pages may hold a half-applied patch.
#[derive(Debug, Clone)]
pub struct GapDoc {
    hdr: Header,
    scratch: Vec<u8>,
    /// The header page is behind `hdr`.
    dirty: bool,
}

type R<S> = Result<(), DocError<<S as PageStore>::Error>>;

impl GapDoc {
    /// Writes `start` and a fresh header into zeroed pages whose document page is `capacity`
    /// bytes.
    pub fn create<S: PageStore>(
        store: &mut S,
        start: &str,
        capacity: usize,
    ) -> Result<GapDoc, DocError<S::Error>> {
        let len = store.doc_page().map_err(DocError::Store)?.len();
        if len != capacity {
            return Err(DocError::Corrupt(
                "the document page is not `capacity` bytes",
            ));
        }
        if start.len() > capacity {
            return Err(DocError::Capacity {
                need: start.len(),
                capacity,
            });
        }
        if !start.is_empty() {
            store
                .write(PageRole::Doc, 0, start.as_bytes())
                .map_err(DocError::Store)?;
        }
        let chars = start.chars().count();
        let mut d = GapDoc {
            hdr: Header {
                capacity,
                byte_len: start.len(),
                char_len: chars,
                gap_start: start.len(),
                gap_end: capacity,
                chars_before_gap: chars,
                txns_applied: 0,
            },
            scratch: Vec::new(),
            dirty: true,
        };
        d.write_header(store)?;
        Ok(d)
    }

    /// Continues editing pages that already hold a document described by `hdr` (for example
    /// pages restored from a checkpoint).
    pub fn resume(hdr: Header) -> GapDoc {
        GapDoc {
            hdr,
            scratch: Vec::new(),
            dirty: false,
        }
    }

    /// The current header fields (as last written, or about to be written by
    /// [`GapDoc::sync_header`]).
    pub fn header(&self) -> &Header {
        &self.hdr
    }

    /// Applies every patch of one transaction, then writes the header page.
    pub fn apply_txn<'a, S: PageStore>(
        &mut self,
        store: &mut S,
        patches: impl IntoIterator<Item = PatchRef<'a>>,
    ) -> R<S> {
        self.apply_txn_unsynced(store, patches)?;
        self.sync_header(store)
    }

    /// Applies every patch of one transaction and counts it, without writing the header page:
    /// the header fields change in memory only until [`GapDoc::sync_header`]. Between the two
    /// the document page does not match the header page, so only use this inside a batch that
    /// syncs the header before it commits (nothing reads the header page within a batch).
    pub fn apply_txn_unsynced<'a, S: PageStore>(
        &mut self,
        store: &mut S,
        patches: impl IntoIterator<Item = PatchRef<'a>>,
    ) -> R<S> {
        for p in patches {
            self.apply_patch(store, p)?;
        }
        self.hdr.txns_applied += 1;
        self.dirty = true;
        Ok(())
    }

    /// Writes the header page if the header changed since it was last written.
    pub fn sync_header<S: PageStore>(&mut self, store: &mut S) -> R<S> {
        if self.dirty {
            self.write_header(store)
        } else {
            Ok(())
        }
    }

    fn write_header<S: PageStore>(&mut self, store: &mut S) -> R<S> {
        store
            .write(PageRole::Header, 0, &self.hdr.encode())
            .map_err(DocError::Store)?;
        self.dirty = false;
        Ok(())
    }

    /// Applies one patch: delete `p.del` chars at `p.pos`, then insert `p.ins` there. Neither
    /// writes the header page nor counts a transaction.
    pub fn apply_patch<S: PageStore>(&mut self, store: &mut S, p: PatchRef<'_>) -> R<S> {
        debug_assert_eq!(p.ins.chars().count(), p.ins_chars);
        let h = self.hdr;
        let (pos, del) = (p.pos, p.del);
        if pos.checked_add(del).is_none_or(|end| end > h.char_len) {
            return Err(DocError::OutOfRange {
                pos,
                del,
                len: h.char_len,
            });
        }
        let c = h.chars_before_gap;
        if c < pos {
            self.move_right(store, pos - c)?;
            self.delete_after(store, del)?;
        } else if c > pos + del {
            self.move_left(store, c - pos - del)?;
            self.delete_before(store, del)?;
        } else {
            // The gap is inside the deleted range: just widen it.
            self.delete_before(store, c - pos)?;
            self.delete_after(store, pos + del - c)?;
        }
        if !p.ins.is_empty() {
            self.insert(store, p.ins, p.ins_chars)?;
        }
        self.dirty = true;
        Ok(())
    }

    /// Moves the gap to the end and zeroes the stale bytes after the document, so that the
    /// document page is the document followed by zeros. Writes the header.
    pub fn finish<S: PageStore>(&mut self, store: &mut S) -> R<S> {
        self.move_right(store, self.hdr.char_len - self.hdr.chars_before_gap)?;
        let doc = store.doc_page().map_err(DocError::Store)?;
        if doc.len() != self.hdr.capacity {
            return Err(DocError::Corrupt(
                "the document page is not `capacity` bytes",
            ));
        }
        let start = self.hdr.byte_len;
        if let Some(last) = doc[start..].iter().rposition(|&b| b != 0) {
            self.scratch.clear();
            self.scratch.resize(last + 1, 0);
            store
                .write(PageRole::Doc, start, &self.scratch)
                .map_err(DocError::Store)?;
        }
        self.dirty = true;
        self.write_header(store)
    }

    /// The document page, checked against the capacity.
    fn page<S: PageStore>(store: &S, capacity: usize) -> Result<&[u8], DocError<S::Error>> {
        let doc = store.doc_page().map_err(DocError::Store)?;
        if doc.len() != capacity {
            return Err(DocError::Corrupt(
                "the document page is not `capacity` bytes",
            ));
        }
        Ok(doc)
    }

    /// Moves the gap `n` chars to the right (copies the bytes after the gap to its start).
    fn move_right<S: PageStore>(&mut self, store: &mut S, n: usize) -> R<S> {
        if n == 0 {
            return Ok(());
        }
        let h = &mut self.hdr;
        let doc = Self::page(store, h.capacity)?;
        let after = &doc[h.gap_end..];
        let nb = if h.is_ascii() {
            n
        } else {
            fwd_bytes(after, n)
                .ok_or(DocError::Corrupt("fewer chars after the gap than counted"))?
        };
        if nb > after.len() {
            return Err(DocError::Corrupt("fewer bytes after the gap than counted"));
        }
        if h.gap_start != h.gap_end {
            self.scratch.clear();
            self.scratch.extend_from_slice(&after[..nb]);
            store
                .write(PageRole::Doc, h.gap_start, &self.scratch)
                .map_err(DocError::Store)?;
        }
        h.gap_start += nb;
        h.gap_end += nb;
        h.chars_before_gap += n;
        Ok(())
    }

    /// Moves the gap `n` chars to the left (copies the bytes before the gap to its end).
    fn move_left<S: PageStore>(&mut self, store: &mut S, n: usize) -> R<S> {
        if n == 0 {
            return Ok(());
        }
        let h = &mut self.hdr;
        let doc = Self::page(store, h.capacity)?;
        let before = &doc[..h.gap_start];
        let nb = if h.is_ascii() {
            n
        } else {
            bwd_bytes(before, n)
                .ok_or(DocError::Corrupt("fewer chars before the gap than counted"))?
        };
        if nb > before.len() {
            return Err(DocError::Corrupt("fewer bytes before the gap than counted"));
        }
        if h.gap_start != h.gap_end {
            self.scratch.clear();
            self.scratch.extend_from_slice(&before[before.len() - nb..]);
            store
                .write(PageRole::Doc, h.gap_end - nb, &self.scratch)
                .map_err(DocError::Store)?;
        }
        h.gap_start -= nb;
        h.gap_end -= nb;
        h.chars_before_gap -= n;
        Ok(())
    }

    /// Deletes `n` chars right after the gap (moves the gap end; no page write).
    fn delete_after<S: PageStore>(&mut self, store: &mut S, n: usize) -> R<S> {
        if n == 0 {
            return Ok(());
        }
        let h = &mut self.hdr;
        let nb = if h.is_ascii() {
            n
        } else {
            let doc = Self::page(store, h.capacity)?;
            fwd_bytes(&doc[h.gap_end..], n)
                .ok_or(DocError::Corrupt("fewer chars after the gap than counted"))?
        };
        if nb > h.capacity - h.gap_end {
            return Err(DocError::Corrupt("fewer bytes after the gap than counted"));
        }
        h.gap_end += nb;
        h.byte_len -= nb;
        h.char_len -= n;
        Ok(())
    }

    /// Deletes `n` chars right before the gap (moves the gap start; no page write).
    fn delete_before<S: PageStore>(&mut self, store: &mut S, n: usize) -> R<S> {
        if n == 0 {
            return Ok(());
        }
        let h = &mut self.hdr;
        let nb = if h.is_ascii() {
            n
        } else {
            let doc = Self::page(store, h.capacity)?;
            bwd_bytes(&doc[..h.gap_start], n)
                .ok_or(DocError::Corrupt("fewer chars before the gap than counted"))?
        };
        if nb > h.gap_start {
            return Err(DocError::Corrupt("fewer bytes before the gap than counted"));
        }
        h.gap_start -= nb;
        h.byte_len -= nb;
        h.char_len -= n;
        h.chars_before_gap -= n;
        Ok(())
    }

    /// Inserts at the gap start.
    fn insert<S: PageStore>(&mut self, store: &mut S, ins: &str, ins_chars: usize) -> R<S> {
        let h = &mut self.hdr;
        if ins.len() > h.gap_end - h.gap_start {
            return Err(DocError::Capacity {
                need: h.byte_len + ins.len(),
                capacity: h.capacity,
            });
        }
        store
            .write(PageRole::Doc, h.gap_start, ins.as_bytes())
            .map_err(DocError::Store)?;
        h.gap_start += ins.len();
        h.chars_before_gap += ins_chars;
        h.char_len += ins_chars;
        h.byte_len += ins.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pr(pos: usize, del: usize, ins: &str) -> PatchRef<'_> {
        PatchRef {
            pos,
            del,
            ins,
            ins_chars: ins.chars().count(),
        }
    }

    #[test]
    fn walks() {
        let s = "aé日😀b".as_bytes();
        assert_eq!(fwd_bytes(s, 0), Some(0));
        assert_eq!(fwd_bytes(s, 1), Some(1));
        assert_eq!(fwd_bytes(s, 2), Some(3));
        assert_eq!(fwd_bytes(s, 3), Some(6));
        assert_eq!(fwd_bytes(s, 4), Some(10));
        assert_eq!(fwd_bytes(s, 5), Some(11));
        assert_eq!(fwd_bytes(s, 6), None);
        assert_eq!(bwd_bytes(s, 0), Some(0));
        assert_eq!(bwd_bytes(s, 1), Some(1));
        assert_eq!(bwd_bytes(s, 2), Some(5));
        assert_eq!(bwd_bytes(s, 3), Some(8));
        assert_eq!(bwd_bytes(s, 4), Some(10));
        assert_eq!(bwd_bytes(s, 5), Some(11));
        assert_eq!(bwd_bytes(s, 6), None);
        // Exhaustive against char_indices on a mixed string.
        let t = "x😀😀日ée\u{301}ab日本語🎉\n";
        let n = t.chars().count();
        for k in 0..=n {
            let f: usize = t.chars().take(k).map(char::len_utf8).sum();
            let b: usize = t.chars().rev().take(k).map(char::len_utf8).sum();
            assert_eq!(fwd_bytes(t.as_bytes(), k), Some(f), "fwd {k}");
            assert_eq!(bwd_bytes(t.as_bytes(), k), Some(b), "bwd {k}");
        }
    }

    #[test]
    fn header_roundtrip_and_checks() {
        let h = Header {
            capacity: 100,
            byte_len: 30,
            char_len: 20,
            gap_start: 10,
            gap_end: 80,
            chars_before_gap: 7,
            txns_applied: 5,
        };
        assert_eq!(Header::decode(&h.encode()), Ok(h));
        assert_eq!(Header::decode(&[0; 64]), Err(HeaderError::BadTag));
        assert_eq!(Header::decode(&[0; 10]), Err(HeaderError::TooShort(10)));
        let bad = Header { gap_end: 101, ..h };
        assert!(matches!(
            Header::decode(&bad.encode()),
            Err(HeaderError::Inconsistent(_))
        ));
    }

    #[test]
    fn edits_and_writes() {
        let mut p = VecPages::new(64);
        let mut d = GapDoc::create(&mut p, "héllo wörld", 64).unwrap();
        let text = |p: &VecPages| logical_text(&p.header, &p.doc).unwrap();
        assert_eq!(text(&p), "héllo wörld");
        d.apply_txn(&mut p, [pr(0, 1, "H"), pr(6, 0, "big ")])
            .unwrap();
        assert_eq!(text(&p), "Héllo big wörld");
        // Backspace at the gap writes nothing to the document page.
        let before = p.doc.clone();
        d.apply_txn(&mut p, [pr(9, 1, "")]).unwrap();
        assert_eq!(p.doc, before);
        assert_eq!(text(&p), "Héllo bigwörld");
        d.apply_txn(&mut p, [pr(9, 5, "🎉"), pr(0, 0, "日本")])
            .unwrap();
        assert_eq!(text(&p), "日本Héllo big🎉");
        let err = d.apply_txn(&mut p, [pr(12, 1, "")]).unwrap_err();
        assert!(matches!(
            err,
            DocError::OutOfRange {
                pos: 12,
                del: 1,
                len: 12
            }
        ));
        d.finish(&mut p).unwrap();
        let s = "日本Héllo big🎉";
        assert_eq!(&p.doc[..s.len()], s.as_bytes());
        assert!(p.doc[s.len()..].iter().all(|&b| b == 0));
        let h = Header::decode(&p.header).unwrap();
        assert_eq!(
            (h.byte_len, h.char_len, h.gap_start, h.gap_end),
            (s.len(), 12, s.len(), 64)
        );
        assert_eq!(h.txns_applied, 3);
        let err = d
            .apply_txn(&mut p, [pr(0, 0, &"x".repeat(64))])
            .unwrap_err();
        assert!(matches!(err, DocError::Capacity { .. }));
    }
}
