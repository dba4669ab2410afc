//! Loading editing traces: the `.json.gz` format of josephg/editing-traces, validated and stored
//! flat, plus the pre-scan that sizes the pages.
//!
//! Format (gzip-compressed JSON; a file that is neither gzip-magic nor named `*.gz` is read as
//! plain JSON):
//!
//! ```text
//! { "startContent": "...", "endContent": "...",
//!   "txns": [ { "time": "...", "patches": [ [pos, delCount, "inserted"], ... ] }, ... ] }
//! ```
//!
//! Each patch deletes `delCount` characters at `pos`, then inserts the text at `pos`; patches of a
//! transaction apply in order, each to the result of the previous one. Positions and counts are
//! Unicode scalar values (Rust `char`s), not bytes. Unknown fields (`time`, ...) are ignored;
//! a missing `startContent` means the empty string.

use std::borrow::Cow;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The largest document byte length a trace may reach: line-start offsets are stored as `u32`,
/// and a page is at most 1 GiB (`mmsb::MAX_PAGE_SIZE`).
pub const MAX_DOC_BYTES: usize = 1 << 30;

/// The largest trace this tool reads: 256 MiB of (decompressed) JSON. The limit is checked
/// while decompressing, before anything is kept, so a small gzip file that expands to gigabytes
/// is refused after reading at most this much of it, in memory bounded by a buffer (a first pass
/// counts the decompressed bytes; only then is the exact size allocated and filled). The
/// largest public editing traces are tens of megabytes.
pub const MAX_TRACE_JSON_BYTES: u64 = 256 << 20;

/// Everything that can go wrong loading a trace. Every variant names the file (or the trace
/// name for traces built in code).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// The file could not be read.
    #[error("{path}: cannot read trace: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file is named `*.gz` or starts with the gzip magic but does not decompress.
    #[error("{path}: not a valid gzip stream: {source}")]
    Gzip {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        #[source]
        source: std::io::Error,
    },
    /// The (decompressed) content is not JSON of the trace format.
    #[error("{path}: not a valid editing-trace JSON document: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What the parser said (it includes line and column).
        #[source]
        source: serde_json::Error,
    },
    /// A patch deletes past the end of the document, or inserts beyond it.
    #[error(
        "{path}: transaction {txn}, patch {patch}: position {pos} + delete {del} is beyond the \
         document length of {len} chars"
    )]
    PatchOutOfRange {
        /// The file.
        path: PathBuf,
        /// Transaction index (0-based).
        txn: usize,
        /// Patch index within the transaction (0-based).
        patch: usize,
        /// Patch position (chars).
        pos: u64,
        /// Patch delete count (chars).
        del: u64,
        /// Document length in chars before the patch.
        len: u64,
    },
    /// Applying every patch gives a document whose char length is not that of `endContent`.
    #[error("{path}: the patches produce a document of {got} chars, but endContent has {expected}")]
    EndLengthMismatch {
        /// The file.
        path: PathBuf,
        /// Char length after all patches.
        got: u64,
        /// Char length of `endContent`.
        expected: u64,
    },
    /// The document could grow beyond [`MAX_DOC_BYTES`] (or the trace has more patches or
    /// inserted bytes than this representation indexes with `u32`).
    #[error("{path}: the trace is too large: {what}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Which limit.
        what: String,
    },
}

/// One patch, borrowed from a [`Trace`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchRef<'a> {
    /// Position in chars.
    pub pos: usize,
    /// Number of chars deleted at `pos`.
    pub del: usize,
    /// Text inserted at `pos` after the deletion.
    pub ins: &'a str,
    /// `ins.chars().count()`, precomputed.
    pub ins_chars: usize,
}

#[derive(Clone, Copy, Debug)]
struct Patch {
    pos: usize,
    del: usize,
    ins_start: u32,
    ins_len: u32,
    ins_chars: u32,
}

/// A validated editing trace, stored flat: all inserted text in one string, all patches in one
/// vector, transactions as end indices into it. Constructed by [`load`], [`parse_bytes`],
/// [`Trace::from_txns`] or [`crate::synth::default_trace`]; construction validates every
/// patch against the running document length and computes [`TraceStats`].
#[derive(Clone, Debug)]
pub struct Trace {
    name: String,
    start_content: String,
    end_content: String,
    text: String,
    patches: Vec<Patch>,
    txn_ends: Vec<u32>,
    stats: TraceStats,
}

/// What the pre-scan learns about a trace without applying it (lengths only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceStats {
    /// Number of transactions.
    pub txns: usize,
    /// Number of patches.
    pub patches: usize,
    /// Patches with a non-empty insertion.
    pub inserts: usize,
    /// Patches with a non-zero delete count.
    pub deletes: usize,
    /// Chars inserted over the whole trace.
    pub inserted_chars: u64,
    /// Bytes inserted over the whole trace.
    pub inserted_bytes: u64,
    /// Chars deleted over the whole trace.
    pub deleted_chars: u64,
    /// Byte length of `startContent`.
    pub start_bytes: usize,
    /// Byte length of `endContent`.
    pub end_bytes: usize,
    /// Largest char length the document reaches (after any patch).
    pub max_chars: usize,
    /// A safe upper bound on the largest byte length the document reaches after any patch; exact
    /// when the start content and every insertion are ASCII. See [`Trace::stats`].
    pub max_bytes_bound: usize,
    /// A safe upper bound on the number of line starts (1 + newlines) the document ever has.
    pub max_lines_bound: usize,
    /// `startContent`, `endContent` and all inserted text are ASCII.
    pub all_ascii: bool,
}

impl Trace {
    /// Builds a trace from owned parts, validating it exactly as [`load`] does. `name` stands in
    /// for the file name in errors.
    pub fn from_txns<S: AsRef<str>>(
        name: &str,
        start_content: &str,
        end_content: &str,
        txns: &[Vec<(usize, usize, S)>],
    ) -> Result<Trace, TraceError> {
        let mut b = Builder::new(name, start_content.to_owned(), end_content.to_owned());
        for txn in txns {
            for (pos, del, ins) in txn {
                b.push_patch(*pos as u64, *del as u64, ins.as_ref())?;
            }
            b.end_txn()?;
        }
        b.finish()
    }

    /// The file name (or given name) of the trace.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The document before the first transaction.
    pub fn start_content(&self) -> &str {
        &self.start_content
    }

    /// The document after the last transaction, as the trace states it.
    pub fn end_content(&self) -> &str {
        &self.end_content
    }

    /// Number of transactions.
    pub fn txn_count(&self) -> usize {
        self.txn_ends.len()
    }

    /// Number of patches over all transactions.
    pub fn patch_count(&self) -> usize {
        self.patches.len()
    }

    /// The patches of transaction `i`, in order. Panics if `i >= txn_count()`.
    pub fn txn(&self, i: usize) -> impl ExactSizeIterator<Item = PatchRef<'_>> + Clone + '_ {
        let start = if i == 0 {
            0
        } else {
            self.txn_ends[i - 1] as usize
        };
        let end = self.txn_ends[i] as usize;
        self.patches[start..end]
            .iter()
            .map(move |p| self.patch_ref(p))
    }

    /// Every patch of every transaction, in order.
    pub fn all_patches(&self) -> impl ExactSizeIterator<Item = PatchRef<'_>> + '_ {
        self.patches.iter().map(move |p| self.patch_ref(p))
    }

    fn patch_ref<'a>(&'a self, p: &Patch) -> PatchRef<'a> {
        let s = p.ins_start as usize;
        PatchRef {
            pos: p.pos,
            del: p.del,
            ins: &self.text[s..s + p.ins_len as usize],
            ins_chars: p.ins_chars as usize,
        }
    }

    /// The pre-scan's results.
    ///
    /// Byte-length bound: write the document's byte length as `chars + excess`, where `excess`
    /// counts the bytes beyond the first of every multi-byte char. Deletions never increase
    /// `excess`, so `excess <= E` (the start content's excess plus the excess of everything
    /// inserted so far), and `excess <= 3 * chars`. The bound is the maximum over all patches of
    /// `chars + min(E, 3 * chars)`: exact for ASCII traces, and never more than
    /// `start bytes + inserted bytes` or `4 * max chars`. Line bound: the maximum over all
    /// patches of `1 + min(newlines in start + newlines inserted so far, chars)`.
    pub fn stats(&self) -> &TraceStats {
        &self.stats
    }
}

/// Incremental trace builder: validates while it goes.
struct Builder {
    path: PathBuf,
    start_content: String,
    end_content: String,
    text: String,
    patches: Vec<Patch>,
    txn_ends: Vec<u32>,
    stats: TraceStats,
    // running pre-scan state
    chars: u64,
    excess: u64,
    newlines: u64,
    max_bytes: u64,
    max_lines: u64,
}

impl Builder {
    fn new(name: &str, start_content: String, end_content: String) -> Builder {
        let chars = start_content.chars().count() as u64;
        let excess = start_content.len() as u64 - chars;
        let newlines = memchr::memchr_iter(b'\n', start_content.as_bytes()).count() as u64;
        let stats = TraceStats {
            start_bytes: start_content.len(),
            end_bytes: end_content.len(),
            max_chars: chars as usize,
            all_ascii: start_content.is_ascii() && end_content.is_ascii(),
            ..TraceStats::default()
        };
        Builder {
            path: PathBuf::from(name),
            start_content,
            end_content,
            text: String::new(),
            patches: Vec::new(),
            txn_ends: Vec::new(),
            stats,
            chars,
            excess,
            newlines,
            max_bytes: start_len_bound(chars, excess),
            max_lines: 1 + newlines.min(chars),
        }
    }

    fn too_large(&self, what: String) -> TraceError {
        TraceError::TooLarge {
            path: self.path.clone(),
            what,
        }
    }

    fn push_patch(&mut self, pos: u64, del: u64, ins: &str) -> Result<(), TraceError> {
        let (txn, patch) = (
            self.txn_ends.len(),
            self.patches.len() - self.txn_ends.last().map_or(0, |&e| e as usize),
        );
        if pos.checked_add(del).is_none_or(|end| end > self.chars) {
            return Err(TraceError::PatchOutOfRange {
                path: self.path.clone(),
                txn,
                patch,
                pos,
                del,
                len: self.chars,
            });
        }
        let ins_chars = ins.chars().count() as u64;
        // Deleted chars may take away excess and newlines, but the bounds do not track what is
        // deleted (that needs the content): both only ever grow, which keeps them safe.
        self.chars = self.chars - del + ins_chars;
        self.excess += ins.len() as u64 - ins_chars;
        self.newlines += memchr::memchr_iter(b'\n', ins.as_bytes()).count() as u64;
        self.max_bytes = self.max_bytes.max(start_len_bound(self.chars, self.excess));
        self.max_lines = self.max_lines.max(1 + self.newlines.min(self.chars));
        let st = &mut self.stats;
        st.max_chars = st.max_chars.max(self.chars as usize);
        st.inserted_chars += ins_chars;
        st.inserted_bytes += ins.len() as u64;
        st.deleted_chars += del;
        st.inserts += usize::from(!ins.is_empty());
        st.deletes += usize::from(del > 0);
        st.all_ascii &= ins.is_ascii();
        if self.max_bytes > MAX_DOC_BYTES as u64 {
            return Err(self.too_large(format!(
                "the document may reach {} bytes (limit {MAX_DOC_BYTES})",
                self.max_bytes
            )));
        }
        let ins_start = self.text.len();
        if ins_start + ins.len() > u32::MAX as usize || self.patches.len() >= u32::MAX as usize {
            return Err(self.too_large("more than 4 GiB of inserted text or 2^32 patches".into()));
        }
        self.text.push_str(ins);
        self.patches.push(Patch {
            pos: pos as usize,
            del: del as usize,
            ins_start: ins_start as u32,
            ins_len: ins.len() as u32,
            ins_chars: ins_chars as u32,
        });
        Ok(())
    }

    fn end_txn(&mut self) -> Result<(), TraceError> {
        self.txn_ends.push(self.patches.len() as u32);
        Ok(())
    }

    fn finish(mut self) -> Result<Trace, TraceError> {
        let expected = self.end_content.chars().count() as u64;
        if self.chars != expected {
            return Err(TraceError::EndLengthMismatch {
                path: self.path,
                got: self.chars,
                expected,
            });
        }
        self.stats.txns = self.txn_ends.len();
        self.stats.patches = self.patches.len();
        self.stats.max_bytes_bound = self.max_bytes as usize;
        self.stats.max_lines_bound = self.max_lines as usize;
        Ok(Trace {
            name: self.path.display().to_string(),
            start_content: self.start_content,
            end_content: self.end_content,
            text: self.text,
            patches: self.patches,
            txn_ends: self.txn_ends,
            stats: self.stats,
        })
    }
}

/// `chars + min(excess, 3 * chars)`: see [`Trace::stats`].
fn start_len_bound(chars: u64, excess: u64) -> u64 {
    chars + excess.min(3 * chars)
}

#[derive(Deserialize)]
struct RawTrace<'a> {
    #[serde(rename = "startContent", borrow, default)]
    start_content: Cow<'a, str>,
    #[serde(rename = "endContent", borrow)]
    end_content: Cow<'a, str>,
    #[serde(borrow)]
    txns: Vec<RawTxn<'a>>,
}

#[derive(Deserialize)]
struct RawTxn<'a> {
    #[serde(borrow)]
    patches: Vec<RawPatch<'a>>,
}

#[derive(Deserialize)]
struct RawPatch<'a>(u64, u64, #[serde(borrow)] Cow<'a, str>);

/// Reads and validates a trace file (`*.json.gz`, or plain JSON). The file must be a regular
/// file (a FIFO is refused, not waited on) of at most [`MAX_TRACE_JSON_BYTES`], and decompress
/// to at most that.
pub fn load(path: &Path) -> Result<Trace, TraceError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| TraceError::Io {
        path: path.into(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    let meta = f.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(io(std::io::Error::other("not a regular file")));
    }
    if meta.len() > MAX_TRACE_JSON_BYTES {
        return Err(TraceError::TooLarge {
            path: path.into(),
            what: format!(
                "the file has {} bytes (limit {MAX_TRACE_JSON_BYTES})",
                meta.len()
            ),
        });
    }
    let mut raw = Vec::with_capacity(meta.len() as usize);
    (&mut f)
        .take(MAX_TRACE_JSON_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(io)?;
    parse_bytes(path, &raw)
}

/// Decompressed length of the gzip stream `raw`, counted through a fixed buffer; an error once
/// it passes [`MAX_TRACE_JSON_BYTES`].
fn gunzipped_len(path: &Path, raw: &[u8]) -> Result<u64, TraceError> {
    let mut d = flate2::read::GzDecoder::new(raw);
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match d.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(TraceError::Gzip {
                    path: path.into(),
                    source,
                });
            }
        };
        total += n as u64;
        if total > MAX_TRACE_JSON_BYTES {
            return Err(TraceError::TooLarge {
                path: path.into(),
                what: format!(
                    "it decompresses to more than {MAX_TRACE_JSON_BYTES} bytes of JSON (the limit)"
                ),
            });
        }
    }
}

/// Parses and validates a trace from the bytes of a file; `path` names it in errors and decides,
/// together with the gzip magic `1f 8b`, whether the bytes are decompressed first.
pub fn parse_bytes(path: &Path, raw: &[u8]) -> Result<Trace, TraceError> {
    let gz = raw.starts_with(&[0x1f, 0x8b]) || path.extension().is_some_and(|e| e == "gz");
    let owned;
    let json: &[u8] = if gz {
        let len = gunzipped_len(path, raw)?;
        let mut out = Vec::with_capacity(len as usize);
        flate2::read::GzDecoder::new(raw)
            .take(len)
            .read_to_end(&mut out)
            .map_err(|source| TraceError::Gzip {
                path: path.into(),
                source,
            })?;
        owned = out;
        &owned
    } else {
        if raw.len() as u64 > MAX_TRACE_JSON_BYTES {
            return Err(TraceError::TooLarge {
                path: path.into(),
                what: format!("{} bytes of JSON (limit {MAX_TRACE_JSON_BYTES})", raw.len()),
            });
        }
        raw
    };
    let parsed: RawTrace<'_> = serde_json::from_slice(json).map_err(|source| TraceError::Json {
        path: path.into(),
        source,
    })?;
    let name = path.display().to_string();
    let mut b = Builder::new(
        &name,
        parsed.start_content.into_owned(),
        parsed.end_content.into_owned(),
    );
    b.patches.reserve(parsed.txns.len());
    b.txn_ends.reserve(parsed.txns.len());
    for txn in &parsed.txns {
        for RawPatch(pos, del, ins) in &txn.patches {
            b.push_patch(*pos, *del, ins)?;
        }
        b.end_txn()?;
    }
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gz(s: &str) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(s.as_bytes()).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn parses_plain_and_gzip() {
        let j = r#"{"startContent":"ab","endContent":"aé\nb","txns":[{"time":"t","patches":[[1,0,"é\n"]]}]}"#;
        for (p, bytes) in [("x.json", j.as_bytes().to_vec()), ("x.json.gz", gz(j))] {
            let t = parse_bytes(Path::new(p), &bytes).unwrap();
            assert_eq!(t.txn_count(), 1);
            let ps: Vec<_> = t.txn(0).collect();
            assert_eq!(
                ps,
                [PatchRef {
                    pos: 1,
                    del: 0,
                    ins: "é\n",
                    ins_chars: 2
                }]
            );
            let st = t.stats();
            assert_eq!(st.max_chars, 4);
            assert_eq!(st.max_bytes_bound, 5);
            assert_eq!(st.max_lines_bound, 2);
            assert!(!st.all_ascii);
        }
    }

    #[test]
    fn bounds_are_safe_after_deletes() {
        // Start with 4 four-byte chars, delete them all, insert 4 ASCII chars.
        let t = Trace::from_txns("t", "😀😀😀😀", "abcd", &[vec![(0, 4, "abcd")]]).unwrap();
        // min(E = 12, 3 * 4) + 4 = 16 >= the real maximum (16 at the start).
        assert_eq!(t.stats().max_bytes_bound, 16);
    }

    #[test]
    fn errors_are_typed() {
        let p = Path::new("bad.json.gz");
        assert!(matches!(
            parse_bytes(p, b"not gzip"),
            Err(TraceError::Gzip { .. })
        ));
        assert!(matches!(
            parse_bytes(p, &gz("{")),
            Err(TraceError::Json { .. })
        ));
        let oob = r#"{"endContent":"","txns":[{"patches":[[0,1,""]]}]}"#;
        let e = parse_bytes(p, &gz(oob)).unwrap_err();
        assert!(
            matches!(
                e,
                TraceError::PatchOutOfRange {
                    txn: 0,
                    patch: 0,
                    len: 0,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().starts_with("bad.json.gz: "), "{e}");
        let neg = r#"{"endContent":"","txns":[{"patches":[[-1,0,""]]}]}"#;
        assert!(matches!(
            parse_bytes(p, &gz(neg)),
            Err(TraceError::Json { .. })
        ));
        let mism = r#"{"endContent":"x","txns":[]}"#;
        assert!(matches!(
            parse_bytes(p, &gz(mism)),
            Err(TraceError::EndLengthMismatch { .. })
        ));
        let huge = r#"{"endContent":"","txns":[{"patches":[[0,18446744073709551615,""]]}]}"#;
        assert!(matches!(
            parse_bytes(p, &gz(huge)),
            Err(TraceError::PatchOutOfRange { .. })
        ));
    }
}
