//! # tslab: observability for temporal-slab
//!
//! - [`snapshot`]: the stats JSON (schema version 1), converted from an allocator's
//!   [`temporal_slab::StatsSnapshot`], parsed with a version check, and its JSON Schema.
//! - [`exposition`]: the Prometheus text exposition of a snapshot, rendered with
//!   `prometheus-client` (metric names in `docs/metrics.md`).
//! - [`endpoint`]: serve `/metrics` and `/stats.json` of a live allocator from a background
//!   thread.
//! - [`source`]: where the CLI reads snapshots from: a file, stdin or a live endpoint.
//! - [`report`]: the CLI's views (summary, top, watch rates, diff).
//! - [`demo`]: the request-processing workload behind `tslab demo`.
//!
//! Errors are one [`Error`] type; the CLI prints it on one line and exits with code 2.

pub mod demo;
pub mod endpoint;
pub mod exposition;
pub mod report;
pub mod snapshot;
pub mod source;

pub use snapshot::{EpochSnapshot, Snapshot};

/// Everything that can go wrong reading, checking or serving snapshots.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or stream could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path (or `-` for stdin/stdout).
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The document is not valid JSON, or a field has the wrong type.
    #[error("{origin}: malformed stats JSON: {source}")]
    Json {
        /// Where the document came from.
        origin: String,
        /// serde_json's error, with line and column.
        source: serde_json::Error,
    },
    /// The document has no `schema_version`.
    #[error("{origin}: not a temporal-slab stats snapshot: no schema_version field")]
    MissingSchemaVersion {
        /// Where the document came from.
        origin: String,
    },
    /// The document has a `schema_version` other than 1.
    #[error("{origin}: unknown schema_version {found} (this tslab reads version 1)")]
    UnknownSchemaVersion {
        /// Where the document came from.
        origin: String,
        /// The value found, as JSON text.
        found: String,
    },
    /// The document breaks `schemas/stats_v1.schema.json`.
    #[error("{origin}: schema violation at {instance_path}: {message}")]
    Schema {
        /// Where the document came from.
        origin: String,
        /// JSON pointer of the failing value ("" for the root).
        instance_path: String,
        /// What is wrong.
        message: String,
    },
    /// An HTTP source could not be fetched.
    #[error("{url}: {message}")]
    Http {
        /// The URL.
        url: String,
        /// What went wrong (connection refused, status code, ...).
        message: String,
    },
    /// A demo corpus is empty or holds a malformed document (the message names `FILE:LINE:COL`).
    #[error("{0}")]
    Corpus(String),
    /// A demo request failed (the allocator refused an allocation while building its tree).
    #[error("{0}")]
    Request(String),
    /// A command-line value is invalid.
    #[error("{0}")]
    Usage(String),
    /// The demo could not open a batch epoch: every other ring slot stayed held by an epoch
    /// that had not drained for the whole wait (`source` is the allocator's last refusal).
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
