//! The documents the demo serves as requests: real files (`--corpus PATH`) or a default corpus
//! the program generates deterministically, so the demo runs on a fresh machine.
//!
//! A corpus is a list of **kinds**; each kind has a label (the epoch label of its batches) and
//! one or more documents. A real corpus has one kind per file, labeled with the file name; a
//! file is one document, or one document per non-blank line when it is NDJSON (extension
//! `.ndjson` or `.jsonl`, or any file whose first JSON value is followed by more text). The
//! generated corpus has six kinds of synthetic API payloads (orders, searches, logins, profiles,
//! telemetry series, catalogs) of 1 to 60 KB each.
//!
//! Every document is checked when the corpus is loaded (parsed once, values discarded), so a
//! malformed one is an error that names its file and line before the run starts.

use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;
use serde_json::json;

use crate::source::{Symlinks, read_file_bounded};
use crate::{Error, Result};

/// Largest corpus [`Corpus::load`] reads, all files together, bytes (1 GiB: it is held in memory).
pub const MAX_CORPUS_BYTES: u64 = 1 << 30;

/// One kind of request: a label and its documents, kept as one text buffer.
#[derive(Debug, Clone)]
pub struct Kind {
    label: String,
    origin: String,
    text: Vec<u8>,
    /// (start, end, 1-based line) of each document in `text`.
    docs: Vec<(usize, usize, usize)>,
    line_numbers: bool,
}

impl Kind {
    /// The label: a file name or a generated kind's name (the allocator keeps 31 bytes of it).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// `true` when the kind has no documents (never the case in a loaded corpus).
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// The text of document `i` (panics when `i >= len()`).
    pub fn doc(&self, i: usize) -> &[u8] {
        let (start, end, _) = self.docs[i];
        &self.text[start..end]
    }

    /// Where document `i` came from: `PATH` for a single-document file, `PATH:LINE` for an
    /// NDJSON line, `generated:KIND:LINE` for the generated corpus.
    pub fn origin(&self, i: usize) -> String {
        let (_, _, line) = self.docs[i];
        if self.line_numbers {
            format!("{}:{line}", self.origin)
        } else {
            self.origin.clone()
        }
    }

    /// Total bytes of the documents.
    pub fn bytes(&self) -> u64 {
        self.docs.iter().map(|&(s, e, _)| (e - s) as u64).sum()
    }
}

/// The documents of a demo run, grouped by kind. Never empty.
#[derive(Debug, Clone)]
pub struct Corpus {
    source: String,
    kinds: Vec<Kind>,
}

impl Corpus {
    /// Where the corpus came from: the `--corpus` path, or `"generated"`.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The kinds, in load order (files sorted by name).
    pub fn kinds(&self) -> &[Kind] {
        &self.kinds
    }

    /// Total number of documents.
    pub fn documents(&self) -> usize {
        self.kinds.iter().map(Kind::len).sum()
    }

    /// Total bytes of the documents.
    pub fn bytes(&self) -> u64 {
        self.kinds.iter().map(Kind::bytes).sum()
    }

    /// Loads a real corpus: `path` is a file (JSON or NDJSON) or a directory, whose regular
    /// files ending in `.json`, `.ndjson` or `.jsonl` are loaded in name order (other files,
    /// symbolic links and subdirectories are ignored). Files are opened with `O_NOFOLLOW` and
    /// must be regular files; `path` itself may be a directory reached through a symbolic link
    /// (`metadata` follows it) but a file `path` that is a symbolic link is refused. At most
    /// [`MAX_CORPUS_BYTES`] are read in all.
    ///
    /// # Errors
    /// [`Error::Io`] when the path or a file cannot be read; [`Error::NotRegularFile`] when
    /// `path` is not a regular file or a directory (a FIFO, `/dev/zero`, a symbolic link to a
    /// file); [`Error::TooLarge`]
    /// past [`MAX_CORPUS_BYTES`]; [`Error::Corpus`] naming `FILE:LINE:COLUMN` for a malformed
    /// document, and for a corpus without documents.
    pub fn load(path: &Path) -> Result<Corpus> {
        let io = |p: &Path, source| Error::Io {
            path: p.display().to_string(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(|e| io(path, e))?;
        let mut files: Vec<PathBuf> = Vec::new();
        let symlinks = Symlinks::Refuse;
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).map_err(|e| io(path, e))? {
                let entry = entry.map_err(|e| io(path, e))?;
                // The entry's own type: a symbolic link is not followed.
                let regular = entry.file_type().is_ok_and(|t| t.is_file());
                let p = entry.path();
                let wanted = p.extension().and_then(|x| x.to_str()).is_some_and(|x| {
                    ["json", "ndjson", "jsonl"].contains(&x.to_ascii_lowercase().as_str())
                });
                let hidden = p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'));
                if wanted && !hidden && regular {
                    files.push(p);
                }
            }
            files.sort();
        } else {
            files.push(path.to_owned());
        }
        let mut kinds = Vec::new();
        let mut budget = MAX_CORPUS_BYTES;
        for file in &files {
            let text = read_file_bounded(file, symlinks, budget).map_err(|e| match e {
                Error::TooLarge { .. } => Error::TooLarge {
                    origin: format!("{} (the corpus, {} so far)", path.display(), file.display()),
                    limit: MAX_CORPUS_BYTES,
                },
                e => e,
            })?;
            budget -= text.len() as u64;
            let kind = kind_of_file(file, text)?;
            if !kind.is_empty() {
                kinds.push(kind);
            }
        }
        if kinds.is_empty() {
            return Err(Error::Corpus(format!(
                "{}: no JSON documents (expected a .json, .ndjson or .jsonl file, or a directory \
                 holding some)",
                path.display()
            )));
        }
        Ok(Corpus {
            source: path.display().to_string(),
            kinds,
        })
    }

    /// The default corpus: `per_kind` documents of each of six generated kinds (`order`,
    /// `search`, `login`, `profile`, `telemetry`, `catalog`), the same bytes on every machine.
    pub fn generated(per_kind: usize) -> Corpus {
        let per_kind = per_kind.max(1);
        let kinds = GENERATED_KINDS
            .iter()
            .enumerate()
            .map(|(k, &name)| {
                let mut rng = Rng(0x5eed_0000 + k as u64);
                let mut text = Vec::new();
                let mut docs = Vec::with_capacity(per_kind);
                for i in 0..per_kind {
                    let start = text.len();
                    let doc = generate(name, i, &mut rng);
                    serde_json::to_writer(&mut text, &doc)
                        .expect("a serde_json::Value always serializes");
                    docs.push((start, text.len(), i + 1));
                    text.push(b'\n');
                }
                Kind {
                    label: name.to_owned(),
                    origin: format!("generated:{name}"),
                    text,
                    docs,
                    line_numbers: true,
                }
            })
            .collect();
        Corpus {
            source: "generated".to_owned(),
            kinds,
        }
    }
}

/// Documents per kind in the default generated corpus.
pub const GENERATED_PER_KIND: usize = 160;

const GENERATED_KINDS: [&str; 6] = [
    "order",
    "search",
    "login",
    "profile",
    "telemetry",
    "catalog",
];

/// serde_json's message without its " at line L column C" suffix.
fn message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

fn malformed(file: &Path, line: usize, column: usize, e: &serde_json::Error) -> Error {
    Error::Corpus(format!(
        "{}:{line}:{column}: malformed JSON document: {}",
        file.display(),
        message(e)
    ))
}

fn kind_of_file(file: &Path, text: Vec<u8>) -> Result<Kind> {
    let label = file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let origin = file.display().to_string();
    let ndjson_ext = file
        .extension()
        .and_then(|x| x.to_str())
        .is_some_and(|x| matches!(x.to_ascii_lowercase().as_str(), "ndjson" | "jsonl"));
    let ndjson = ndjson_ext || {
        // One document, or NDJSON written to a `.json` file? Parse the first value and see
        // whether anything but whitespace follows it.
        let mut stream = serde_json::Deserializer::from_slice(&text).into_iter::<IgnoredAny>();
        match stream.next() {
            None => false, // empty or whitespace only: no documents
            Some(Err(e)) => return Err(malformed(file, e.line(), e.column(), &e)),
            Some(Ok(_)) => text[stream.byte_offset()..]
                .iter()
                .any(|b| !b.is_ascii_whitespace()),
        }
    };
    let mut docs = Vec::new();
    if ndjson {
        let mut start = 0;
        for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
            let end = start + raw.len();
            let line = raw.strip_suffix(b"\r").unwrap_or(raw);
            if !line.iter().all(u8::is_ascii_whitespace) {
                if let Err(e) = serde_json::from_slice::<IgnoredAny>(line) {
                    return Err(malformed(file, i + 1, e.column(), &e));
                }
                docs.push((start, start + line.len(), i + 1));
            }
            start = end + 1;
        }
    } else if !text.iter().all(u8::is_ascii_whitespace) {
        docs.push((0, text.len(), 1));
    }
    Ok(Kind {
        label,
        origin,
        text,
        docs,
        line_numbers: ndjson,
    })
}

/// splitmix64: small, fast and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.next() as usize % items.len()]
    }
    fn word(&mut self) -> &'static str {
        self.pick(&WORDS)
    }
    fn sentence(&mut self, words: u64) -> String {
        let n = self.range(1, words);
        (0..n).map(|_| self.word()).collect::<Vec<_>>().join(" ")
    }
    fn float(&mut self, scale: f64) -> f64 {
        // Printed with the shortest round-tripping form, so the text is the same everywhere.
        (self.next() % 1_000_000) as f64 / 1_000_000.0 * scale
    }
}

const WORDS: [&str; 24] = [
    "alpha", "bravo", "cobalt", "delta", "ember", "fjord", "garnet", "harbor", "indigo", "juniper",
    "kestrel", "lumen", "meadow", "nimbus", "onyx", "prairie", "quartz", "raven", "sierra",
    "tundra", "umber", "vertex", "willow", "zephyr",
];

fn generate(kind: &str, i: usize, rng: &mut Rng) -> serde_json::Value {
    match kind {
        "order" => {
            let items: Vec<_> = (0..rng.range(1, 40))
                .map(|_| {
                    json!({
                        "sku": format!("SKU-{:05}", rng.range(0, 99_999)),
                        "qty": rng.range(1, 9),
                        "price": rng.float(500.0),
                        "tags": [rng.word(), rng.word(), "order"],
                        "gift": rng.range(0, 9) == 0,
                    })
                })
                .collect();
            json!({
                "id": i,
                "kind": "order",
                "user": {"name": format!("user-{}", rng.range(0, 4999)), "tier": rng.range(0, 3),
                         "active": rng.range(0, 4) != 0},
                "items": items,
                "shipping": {"method": rng.pick(&["ground", "air", "pickup"]),
                             "address": {"street": rng.sentence(3), "zip": format!("{:05}", rng.range(0, 99_999))}},
                "note": rng.sentence(30),
                "coupon": null,
            })
        }
        "search" => {
            let results: Vec<_> = (0..rng.range(10, 80))
                .map(|r| {
                    json!({
                        "rank": r,
                        "title": rng.sentence(8),
                        "url": format!("https://example.invalid/{}/{}", rng.word(), rng.range(0, 1 << 20)),
                        "score": rng.float(1.0),
                        "snippet": rng.sentence(40),
                    })
                })
                .collect();
            json!({
                "id": i,
                "kind": "search",
                "query": rng.sentence(4),
                "page": rng.range(1, 10),
                "results": results,
                "facets": {"color": [rng.word(), rng.word()], "size": ["S", "M", "L"]},
            })
        }
        "login" => json!({
            "id": i,
            "kind": "login",
            "user": format!("user-{}", rng.range(0, 4999)),
            "ip": format!("10.{}.{}.{}", rng.range(0, 255), rng.range(0, 255), rng.range(1, 254)),
            "ok": rng.range(0, 9) != 0,
            "mfa": rng.pick(&["totp", "sms", "none"]),
            "agent": rng.sentence(6),
        }),
        "profile" => {
            let prefs: serde_json::Map<String, serde_json::Value> = (0..rng.range(5, 120))
                .map(|p| (format!("pref_{p}"), json!(rng.range(0, 1) == 1)))
                .collect();
            let addresses: Vec<_> = (0..rng.range(1, 4))
                .map(|_| json!({"street": rng.sentence(3), "city": rng.word(), "primary": false}))
                .collect();
            json!({
                "id": i,
                "kind": "profile",
                "name": {"first": rng.word(), "last": rng.word()},
                "bio": rng.sentence(80),
                "addresses": addresses,
                "prefs": prefs,
                "followers": rng.range(0, 100_000),
            })
        }
        "telemetry" => {
            // Like canada.json: deep arrays of numbers.
            let series: Vec<_> = (0..rng.range(1, 6))
                .map(|_| {
                    let points: Vec<_> = (0..rng.range(50, 600))
                        .map(|t| json!([t, rng.float(100.0) - 50.0]))
                        .collect();
                    json!({"metric": rng.word(), "unit": "ms", "points": points})
                })
                .collect();
            json!({"id": i, "kind": "telemetry", "host": format!("node-{}", rng.range(0, 63)), "series": series})
        }
        _ => {
            // "catalog", like citm_catalog.json: maps keyed by numeric ids, many small objects.
            let events: serde_json::Map<String, serde_json::Value> = (0..rng.range(5, 60))
                .map(|_| {
                    let id = rng.range(100_000, 999_999);
                    let prices: Vec<_> = (0..rng.range(1, 5))
                        .map(|_| json!({"amount": rng.range(10, 300) * 100, "audienceSubCategoryId": rng.range(1, 9)}))
                        .collect();
                    (
                        id.to_string(),
                        json!({"id": id, "name": rng.sentence(5), "subTopicIds": [rng.range(1, 99), rng.range(1, 99)],
                               "logo": null, "prices": prices}),
                    )
                })
                .collect();
            json!({"id": i, "kind": "catalog", "events": events, "venueNames": {"PLEYEL": "Salle Pleyel"}})
        }
    }
}
