//! # tslab: observability for temporal-slab
//!
//! - [`snapshot`]: the stats JSON (schema version 1), converted from an allocator's
//!   [`temporal_slab::StatsSnapshot`], parsed with a version check, and its JSON Schema.
//! - [`exposition`]: the Prometheus text exposition of a snapshot, rendered with
//!   `prometheus-client` (metric names in `docs/metrics.md`).
//! - [`endpoint`]: serve `/metrics` and `/stats.json` of a live allocator from a background
//!   thread.
//! - [`source`] (feature `sources`): where the CLI reads snapshots from: a file, stdin or a
//!   live endpoint, each read through one bounded reader.
//! - [`output`] (feature `cli`): output files, checked before the work and replaced
//!   atomically.
//! - [`report`] (feature `cli`): the CLI's views (summary, top, watch rates, diff).
//! - [`demo`] (feature `demo`): the request-processing workload behind `tslab demo`.
//!
//! Errors are one [`Error`] type; the CLI prints it on one line and exits with code 2. Its
//! messages quote user data [`clip`]ped to [`MAX_QUOTED`] bytes. `docs/failure-model/tslab.md`
//! says what each part does under hostile input and faults.
//!
//! ## Features
//!
//! All are on by default; the binary needs all three. A service that only exposes its
//! allocator (the snapshot model, the exposition and the endpoint: serde, prometheus-client,
//! hyper and tokio) depends on `tslab = { version = "0.1", default-features = false }`.
//!
//! | feature | adds | dependencies it brings |
//! |---|---|---|
//! | `sources` | `source`: snapshots from files, stdin or HTTP, checked against the JSON Schema | ureq, jsonschema, libc, humantime |
//! | `cli` | `report`, `output`: the CLI's views and atomically replaced output files | clap, cli-support, tempfile |
//! | `demo` | `demo`: the `tslab demo` workload (implies `cli` and `sources`) | hdrhistogram, hashbrown, allocator-api2, indicatif, humantime |
//!
//! Without `demo`, [`Error`] has no `EpochRingFull` variant (only the demo produces it); the
//! other variants are there in every build.
//!
// A build without a feature has no module to link to: its name links to the table above.
#![cfg_attr(not(feature = "sources"), doc = "[`source`]: crate#features")]
#![cfg_attr(not(feature = "cli"), doc = "[`output`]: crate#features")]
#![cfg_attr(not(feature = "cli"), doc = "[`report`]: crate#features")]
#![cfg_attr(not(feature = "demo"), doc = "[`demo`]: crate#features")]

#[cfg(feature = "demo")]
pub mod demo;
pub mod endpoint;
pub mod exposition;
#[cfg(feature = "cli")]
pub mod output;
#[cfg(feature = "cli")]
pub mod report;
pub mod snapshot;
#[cfg(feature = "sources")]
pub mod source;

pub use snapshot::{EpochSnapshot, Snapshot};

/// Longest user-supplied text (a path, a URL, a value quoted from a document, a message that
/// quotes one) an [`Error`] message shows, in bytes; longer text is cut by [`clip`].
pub const MAX_QUOTED: usize = 200;

/// `text`, cut to at most `max` bytes at a character boundary with `...(N more bytes)`
/// appended when it is longer, so no message quotes unbounded data.
///
/// # Examples
/// ```
/// assert_eq!(tslab::clip("short", 10), "short");
/// assert_eq!(tslab::clip(&"x".repeat(30), 10), "xxxxxxxxxx...(20 more bytes)");
/// ```
pub fn clip(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!(
        "{}...({} more bytes)",
        &text[..end],
        text.len() - end
    ))
}

/// `text` [`clip`]ped to `max` bytes with control characters (line feeds included) escaped,
/// so a message stays one bounded line.
pub fn quote_bounded(text: &str, max: usize) -> String {
    clip(text, max)
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Messages bound each text field to [`MAX_QUOTED`] bytes; the fields keep the full text.
fn q(text: &str) -> String {
    quote_bounded(text, MAX_QUOTED)
}

/// A longer budget for fields that are whole messages (which may themselves quote data).
fn qm(text: &str) -> String {
    quote_bounded(text, 2 * MAX_QUOTED)
}

/// The name errors give standard input.
pub const STDIN_NAME: &str = "standard input";
/// The name errors give standard output.
pub const STDOUT_NAME: &str = "standard output";

/// Everything that can go wrong reading, checking or serving snapshots. Messages are one line
/// and quote user data ([`clip`]ped) at most [`MAX_QUOTED`] bytes a field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or stream could not be read or written.
    #[error("{}: {source}", q(.path))]
    Io {
        /// The path (or [`STDIN_NAME`], [`STDOUT_NAME`]).
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// An input is larger than the reader's bound (`source::MAX_INPUT_BYTES`, or the demo
    /// corpus bounds).
    #[error("{}: input larger than {limit} bytes", q(.origin))]
    TooLarge {
        /// Where the input came from.
        origin: String,
        /// The bound, bytes.
        limit: u64,
    },
    /// A path names something other than a regular file (a FIFO, a device, a directory, a
    /// socket), which could block or never end.
    #[error("{}: not a regular file ({kind})", q(.path))]
    NotRegularFile {
        /// The path.
        path: String,
        /// What it is ("fifo", "character device", "directory", ...).
        kind: &'static str,
    },
    /// The document is not valid JSON, or a field has the wrong type.
    #[error("{}: malformed stats JSON: {}", q(.origin), qm(&.source.to_string()))]
    Json {
        /// Where the document came from.
        origin: String,
        /// serde_json's error, with line and column.
        source: serde_json::Error,
    },
    /// The document has no `schema_version`.
    #[error("{}: not a temporal-slab stats snapshot: no schema_version field", q(.origin))]
    MissingSchemaVersion {
        /// Where the document came from.
        origin: String,
    },
    /// The document has a `schema_version` other than 1.
    #[error("{}: unknown schema_version {} (this tslab reads version 1)", q(.origin), q(.found))]
    UnknownSchemaVersion {
        /// Where the document came from.
        origin: String,
        /// The value found, as JSON text.
        found: String,
    },
    /// The document breaks `schemas/stats_v1.schema.json`.
    #[error("{}: schema violation at {}: {}", q(.origin), q(.instance_path), qm(.message))]
    Schema {
        /// Where the document came from.
        origin: String,
        /// JSON pointer of the failing value ("" for the root).
        instance_path: String,
        /// What is wrong (may quote the document's value: the message clips it).
        message: String,
    },
    /// An HTTP source could not be fetched.
    #[error("{}: {}", q(.url), qm(.message))]
    Http {
        /// The URL.
        url: String,
        /// What went wrong (connection refused, status code, ...).
        message: String,
    },
    /// A demo corpus is empty or holds a malformed document (the message names `FILE:LINE:COL`).
    #[error("{}", qm(.0))]
    Corpus(String),
    /// A demo request failed (the allocator refused an allocation while building its tree).
    #[error("{}", qm(.0))]
    Request(String),
    /// A command-line value is invalid.
    #[error("{}", qm(.0))]
    Usage(String),
    /// The demo could not open a batch epoch: every other ring slot stayed held by an epoch
    /// that had not drained for the whole wait (`source` is the allocator's last refusal).
    /// Only with the `demo` feature.
    #[cfg(feature = "demo")]
    #[error(
        "no epoch ring slot drained within {}: {source}",
        humantime::format_duration(*waited)
    )]
    EpochRingFull {
        /// How long the worker waited, retrying.
        waited: std::time::Duration,
        /// The allocator's refusal (`EpochRingFull`, or `StaleEpoch` for an epoch reused before
        /// it could be held).
        source: temporal_slab::Error,
    },
    /// The allocator refused something the demo asked.
    #[error("allocator: {0}")]
    Alloc(#[from] temporal_slab::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
