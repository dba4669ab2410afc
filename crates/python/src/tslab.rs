//! `memsys.tslab`: temporal-slab stats snapshots (schema version 1) from Python.
//!
//! A thin layer over the `tslab` crate:
//! - [`PySnapshot`] (`memsys.tslab.Snapshot`): one snapshot, read by `Snapshot.load` from a file
//!   or a live endpoint's URL through `tslab::source` (the reader the `tslab` CLI uses: files
//!   opened with `O_NOFOLLOW` and `O_NONBLOCK`, `fstat`-checked to be regular files, every input
//!   bounded to `Snapshot.MAX_INPUT_BYTES`, HTTP fetches timed out after
//!   `Snapshot.HTTP_TIMEOUT`), or by `Snapshot.from_json` from text. Rankings (`top_epochs`, `top_classes`), the summary and
//!   the comparison (`diff`) are `tslab::report`'s, the code behind `tslab top/stats/diff`.
//! - One exception class per variant of [`tslab::Error`], each a subclass of `TslabError`
//!   (itself a subclass of `memsys.MemsysError`), carrying the variant's fields as attributes.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple, PyType};
use serde_json::Value;
use tslab::report::{ClassMetric, Diff, EpochMetric, Summary};
use tslab::source::{HTTP_TIMEOUT, MAX_INPUT_BYTES, Source};
use tslab::{Error, MAX_QUOTED, quote_bounded};

use crate::errors::{MemsysError, obj, raise_with, to_python};

pyo3::create_exception!(
    memsys.tslab,
    TslabError,
    MemsysError,
    "Base of every memsys.tslab exception. Attribute `origin`: the path or URL the document came from (None when the error has none)."
);
pyo3::create_exception!(
    memsys.tslab,
    IoError,
    TslabError,
    "A file could not be opened or read, or is not UTF-8 (Rust `Error::Io`). Attributes: `origin`, `path`, `errno` (int or None), `strerror`."
);
pyo3::create_exception!(
    memsys.tslab,
    TooLargeError,
    TslabError,
    "The input is larger than the bound, Snapshot.MAX_INPUT_BYTES (Rust `Error::TooLarge`). Attributes: `origin`, `limit` (bytes)."
);
pyo3::create_exception!(
    memsys.tslab,
    NotRegularFileError,
    TslabError,
    "The path names a symbolic link (never followed), a directory, a FIFO, a device or a socket (Rust `Error::NotRegularFile`). Attributes: `origin`, `path`, `kind`."
);
pyo3::create_exception!(
    memsys.tslab,
    JsonError,
    TslabError,
    "The document is not valid JSON or a field has the wrong type (Rust `Error::Json`). Attributes: `origin`, `line`, `column` (1-based), `category` ('syntax', 'data', 'eof' or 'io')."
);
pyo3::create_exception!(
    memsys.tslab,
    MissingSchemaVersionError,
    TslabError,
    "The document has no `schema_version` (Rust `Error::MissingSchemaVersion`). Attributes: `origin`, `field` ('schema_version')."
);
pyo3::create_exception!(
    memsys.tslab,
    UnknownSchemaVersionError,
    TslabError,
    "The document's `schema_version` is not 1 (Rust `Error::UnknownSchemaVersion`). Attributes: `origin`, `field` ('schema_version'), `found` (the value as JSON text)."
);
pyo3::create_exception!(
    memsys.tslab,
    SchemaError,
    TslabError,
    "The document breaks schemas/stats_v1.schema.json (Rust `Error::Schema`; only with validate=True). Attributes: `origin`, `instance_path` and `field` (JSON pointer of the failing value, '' for the root), `message`."
);
pyo3::create_exception!(
    memsys.tslab,
    HttpError,
    TslabError,
    "A URL could not be fetched: refused, timed out, non-200 status (Rust `Error::Http`). Attributes: `origin`, `url`, `message`."
);
pyo3::create_exception!(
    memsys.tslab,
    CorpusError,
    TslabError,
    "A demo corpus is empty or malformed (Rust `Error::Corpus`; not raised by this module's API, which runs no demo). Attribute: `message`."
);
pyo3::create_exception!(
    memsys.tslab,
    RequestError,
    TslabError,
    "A demo request failed (Rust `Error::Request`; not raised by this module's API). Attribute: `message`."
);
pyo3::create_exception!(
    memsys.tslab,
    UsageError,
    TslabError,
    "An argument is invalid: an unknown metric name, an https:// URL, '-', a negative or non-finite threshold (Rust `Error::Usage`). Attribute: `message`."
);
pyo3::create_exception!(
    memsys.tslab,
    AllocError,
    TslabError,
    "The allocator refused something (Rust `Error::Alloc`; not raised by this module's API). Attribute: `message`."
);

/// Converts a `tslab::Error` into its exception class, message = the Rust error's one line,
/// attributes = the variant's fields (and `origin` on every class).
pub(crate) fn to_pyerr(py: Python<'_>, e: Error) -> PyErr {
    let msg = e.to_string();
    let none = py.None();
    let (ty, attrs): (Bound<'_, PyType>, Vec<(&str, Py<PyAny>)>) = match &e {
        Error::Io { path, source } => (
            py.get_type::<IoError>(),
            vec![
                ("origin", obj(py, path.as_str())),
                ("path", obj(py, path.as_str())),
                ("errno", obj(py, source.raw_os_error())),
                ("strerror", obj(py, source.to_string())),
            ],
        ),
        Error::TooLarge { origin, limit } => (
            py.get_type::<TooLargeError>(),
            vec![
                ("origin", obj(py, origin.as_str())),
                ("limit", obj(py, *limit)),
            ],
        ),
        Error::NotRegularFile { path, kind } => (
            py.get_type::<NotRegularFileError>(),
            vec![
                ("origin", obj(py, path.as_str())),
                ("path", obj(py, path.as_str())),
                ("kind", obj(py, *kind)),
            ],
        ),
        Error::Json { origin, source } => {
            let category = match source.classify() {
                serde_json::error::Category::Io => "io",
                serde_json::error::Category::Syntax => "syntax",
                serde_json::error::Category::Data => "data",
                serde_json::error::Category::Eof => "eof",
            };
            (
                py.get_type::<JsonError>(),
                vec![
                    ("origin", obj(py, origin.as_str())),
                    ("line", obj(py, source.line())),
                    ("column", obj(py, source.column())),
                    ("category", obj(py, category)),
                ],
            )
        }
        Error::MissingSchemaVersion { origin } => (
            py.get_type::<MissingSchemaVersionError>(),
            vec![
                ("origin", obj(py, origin.as_str())),
                ("field", obj(py, "schema_version")),
            ],
        ),
        Error::UnknownSchemaVersion { origin, found } => (
            py.get_type::<UnknownSchemaVersionError>(),
            vec![
                ("origin", obj(py, origin.as_str())),
                ("field", obj(py, "schema_version")),
                ("found", obj(py, found.as_str())),
            ],
        ),
        Error::Schema {
            origin,
            instance_path,
            message,
        } => (
            py.get_type::<SchemaError>(),
            vec![
                ("origin", obj(py, origin.as_str())),
                ("instance_path", obj(py, instance_path.as_str())),
                ("field", obj(py, instance_path.as_str())),
                ("message", obj(py, message.as_str())),
            ],
        ),
        Error::Http { url, message } => (
            py.get_type::<HttpError>(),
            vec![
                ("origin", obj(py, url.as_str())),
                ("url", obj(py, url.as_str())),
                ("message", obj(py, message.as_str())),
            ],
        ),
        Error::Corpus(m) => (
            py.get_type::<CorpusError>(),
            vec![("origin", none), ("message", obj(py, m.as_str()))],
        ),
        Error::Request(m) => (
            py.get_type::<RequestError>(),
            vec![("origin", none), ("message", obj(py, m.as_str()))],
        ),
        Error::Usage(m) => (
            py.get_type::<UsageError>(),
            vec![("origin", none), ("message", obj(py, m.as_str()))],
        ),
        Error::Alloc(a) => (
            py.get_type::<AllocError>(),
            vec![("origin", none), ("message", obj(py, a.to_string()))],
        ),
        // `Error` is non-exhaustive (and has `EpochRingFull` only with tslab's `demo` feature,
        // off here): a variant this module does not know yet still raises a TslabError.
        _ => (
            py.get_type::<TslabError>(),
            vec![("origin", none), ("message", obj(py, msg.as_str()))],
        ),
    };
    raise_with(py, ty, msg, &attrs)
}

/// Any serializable value (a snapshot or report type) as plain Python data, through
/// `serde_json::Value` (a macro: the crate names serde only through serde_json).
macro_rules! ser_to_py {
    ($py:expr, $v:expr) => {
        serde_json::to_value($v)
            .map_err(|e| PyErr::new::<TslabError, _>(format!("serializing: {e}")))
            .and_then(|v| to_python($py, &v))
    };
}

/// Ranked rows (`tslab::report::Ranked`, serialized as `[{"value", "entry"}]`) as a list of
/// the entries' dicts, each with a `value` key added: the figure ranked by.
fn ranked_to_py<'py>(py: Python<'py>, rows: Value) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    if let Value::Array(rows) = rows {
        for row in rows {
            if let Value::Object(mut row) = row {
                let value = row.remove("value").unwrap_or(Value::Null);
                let mut entry = row.remove("entry").unwrap_or(Value::Null);
                if let Value::Object(e) = &mut entry {
                    e.insert("value".to_owned(), value);
                }
                out.append(to_python(py, &entry)?)?;
            }
        }
    }
    Ok(out)
}

/// `rows` as `serde_json::Value`.
macro_rules! rows_value {
    ($rows:expr) => {
        serde_json::to_value($rows)
            .map_err(|e| PyErr::new::<TslabError, _>(format!("serializing: {e}")))?
    };
}

/// The epoch metrics `top_epochs(by=...)` takes, as `tslab top --epochs --by` names them.
const EPOCH_METRICS: [&str; 4] = ["rss_bytes", "age_sec", "refcount", "reclaimable_bytes"];
/// The class metrics `top_classes(by=...)` takes, as `tslab top --classes --by` names them.
const CLASS_METRICS: [&str; 6] = [
    "slow_path_hits",
    "new_slab_count",
    "madvise_bytes",
    "net_slabs",
    "lock_contended",
    "bitmap_alloc_cas_retries",
];

/// `by` as an [`EpochMetric`] (`"rss"` is accepted for `"rss_bytes"`).
fn epoch_metric(by: &str) -> Result<EpochMetric, Error> {
    Ok(match by {
        "rss_bytes" | "rss" => EpochMetric::RssBytes,
        "age_sec" => EpochMetric::AgeSec,
        "refcount" => EpochMetric::Refcount,
        "reclaimable_bytes" => EpochMetric::ReclaimableBytes,
        _ => {
            return Err(Error::Usage(format!(
                "by={:?} is not an epoch metric (one of {})",
                quote_bounded(by, MAX_QUOTED),
                EPOCH_METRICS.join(", ")
            )));
        }
    })
}

/// `by` as a [`ClassMetric`].
fn class_metric(by: &str) -> Result<ClassMetric, Error> {
    Ok(match by {
        "slow_path_hits" => ClassMetric::SlowPathHits,
        "new_slab_count" => ClassMetric::NewSlabCount,
        "madvise_bytes" => ClassMetric::MadviseBytes,
        "net_slabs" => ClassMetric::NetSlabs,
        "lock_contended" => ClassMetric::LockContended,
        "bitmap_alloc_cas_retries" => ClassMetric::BitmapAllocCasRetries,
        _ => {
            return Err(Error::Usage(format!(
                "by={:?} is not a class metric (one of {})",
                quote_bounded(by, MAX_QUOTED),
                CLASS_METRICS.join(", ")
            )));
        }
    })
}

/// The source `Snapshot.load` reads: a str is parsed as the CLI parses a SOURCE
/// (`http://host:port[/path]` is a URL, `/stats.json` when no path is given; `https://` is
/// refused), except that `-` (standard input for the CLI) is refused; any other os.PathLike is
/// a file path.
fn source_of(arg: &Bound<'_, PyAny>) -> PyResult<Result<Source, Error>> {
    if let Ok(s) = arg.cast::<PyString>() {
        let s = s.to_str()?;
        if s == "-" {
            return Ok(Err(Error::Usage(
                "\"-\": standard input is not a source here; use Snapshot.from_json(sys.stdin.read())"
                    .to_owned(),
            )));
        }
        return Ok(s.parse::<Source>());
    }
    let path: PathBuf = arg.extract().map_err(|_| {
        pyo3::exceptions::PyTypeError::new_err(format!(
            "Snapshot.load() takes a str or os.PathLike, not {}",
            arg.get_type()
                .name()
                .map_or_else(|_| "?".to_owned(), |n| n.to_string())
        ))
    })?;
    Ok(Ok(Source::File(path)))
}

/// Parses `text` as [`tslab::Snapshot::from_json`] does, after the JSON Schema check when `validate`.
fn parse(text: &str, origin: &str, validate: bool) -> Result<tslab::Snapshot, Error> {
    if validate {
        tslab::source::validate(text, origin)
    } else {
        tslab::Snapshot::from_json(text, origin)
    }
}

/// One temporal-slab stats snapshot (schema version 1), read-only.
///
/// The scalar fields of the schema are properties (integers; units in their docs), the label
/// registry is a dict, `classes()` and `epochs()` are lists of dicts, `to_dict()` the whole
/// document as plain Python data.
#[pyclass(module = "memsys.tslab", name = "Snapshot", frozen)]
pub(crate) struct PySnapshot {
    inner: tslab::Snapshot,
    /// Where the snapshot was read from: the path or URL given to `load`, or `from_json`'s
    /// `origin`.
    #[pyo3(get)]
    origin: String,
    /// Schema version of the document: always 1 (other versions are refused with `UnknownSchemaVersionError`).
    #[pyo3(get)]
    schema_version: u32,
    /// Wall-clock time of the snapshot, nanoseconds since the Unix epoch.
    #[pyo3(get)]
    timestamp_ns: u64,
    /// Process id of the allocator's process.
    #[pyo3(get)]
    pid: u32,
    /// Slab (page) size in bytes.
    #[pyo3(get)]
    page_size: u32,
    /// Epoch ring size.
    #[pyo3(get)]
    epoch_count: u32,
    /// Ring index of the current epoch.
    #[pyo3(get)]
    current_epoch: u32,
    /// Era of the current epoch.
    #[pyo3(get)]
    current_era: u64,
    /// Process RSS, bytes (0 when it could not be read).
    #[pyo3(get)]
    rss_bytes: u64,
    /// Slabs carved from the reservation so far.
    #[pyo3(get)]
    slabs_carved: u64,
    /// Address space reserved, bytes.
    #[pyo3(get)]
    reserved_bytes: u64,
    /// Objects allocated, all classes.
    #[pyo3(get)]
    total_allocs: u64,
    /// Objects freed, all classes.
    #[pyo3(get)]
    total_frees: u64,
    /// Slow-path allocations, all classes.
    #[pyo3(get)]
    total_slow_path_hits: u64,
    /// Slabs carved fresh, all classes.
    #[pyo3(get)]
    total_new_slabs: u64,
    /// `madvise` calls, all classes.
    #[pyo3(get)]
    total_madvise_calls: u64,
    /// Bytes given back with `madvise`, all classes.
    #[pyo3(get)]
    total_madvise_bytes: u64,
    /// Failed `madvise` calls, all classes.
    #[pyo3(get)]
    total_madvise_failures: u64,
    /// `epoch_close` calls.
    #[pyo3(get)]
    epoch_close_calls: u64,
    /// Slabs examined by `epoch_close`.
    #[pyo3(get)]
    epoch_close_scanned_slabs: u64,
    /// Slabs recycled by `epoch_close`.
    #[pyo3(get)]
    epoch_close_recycled_slabs: u64,
    /// Time spent in `epoch_close`, nanoseconds.
    #[pyo3(get)]
    epoch_close_total_ns: u64,
    /// Epochs opened by `epoch_advance`.
    #[pyo3(get)]
    epoch_advances: u64,
    /// `epoch_advance` calls refused because every other ring slot held an epoch that had not drained (`EpochRingFull`); 0 in snapshots written before the field existed.
    #[pyo3(get)]
    epoch_advance_refused: u64,
    /// Allocations refused because their epoch was CLOSING.
    #[pyo3(get)]
    epoch_closed_errors: u64,
    /// Operations refused because their epoch id was stale.
    #[pyo3(get)]
    stale_epoch_errors: u64,
    /// Frees and lookups refused because of a bad handle.
    #[pyo3(get)]
    handle_errors: u64,
    /// `free_ptr` calls refused.
    #[pyo3(get)]
    pointer_errors: u64,
    /// Requests sent to the system allocator (too large or over-aligned).
    #[pyo3(get)]
    system_fallback_allocs: u64,
    /// Bytes of those requests.
    #[pyo3(get)]
    system_fallback_bytes: u64,
}

impl PySnapshot {
    /// Wraps a parsed snapshot, copying its scalar fields into the properties.
    fn new(s: tslab::Snapshot, origin: String) -> PySnapshot {
        PySnapshot {
            schema_version: s.schema_version,
            timestamp_ns: s.timestamp_ns,
            pid: s.pid,
            page_size: s.page_size,
            epoch_count: s.epoch_count,
            current_epoch: s.current_epoch,
            current_era: s.current_era,
            rss_bytes: s.rss_bytes,
            slabs_carved: s.slabs_carved,
            reserved_bytes: s.reserved_bytes,
            total_allocs: s.total_allocs,
            total_frees: s.total_frees,
            total_slow_path_hits: s.total_slow_path_hits,
            total_new_slabs: s.total_new_slabs,
            total_madvise_calls: s.total_madvise_calls,
            total_madvise_bytes: s.total_madvise_bytes,
            total_madvise_failures: s.total_madvise_failures,
            epoch_close_calls: s.epoch_close_calls,
            epoch_close_scanned_slabs: s.epoch_close_scanned_slabs,
            epoch_close_recycled_slabs: s.epoch_close_recycled_slabs,
            epoch_close_total_ns: s.epoch_close_total_ns,
            epoch_advances: s.epoch_advances,
            epoch_advance_refused: s.epoch_advance_refused,
            epoch_closed_errors: s.epoch_closed_errors,
            stale_epoch_errors: s.stale_epoch_errors,
            handle_errors: s.handle_errors,
            pointer_errors: s.pointer_errors,
            system_fallback_allocs: s.system_fallback_allocs,
            system_fallback_bytes: s.system_fallback_bytes,
            inner: s,
            origin,
        }
    }
}

#[pymethods]
impl PySnapshot {
    /// The schema version read and written: 1.
    #[classattr]
    const SCHEMA_VERSION: u32 = tslab::snapshot::SCHEMA_VERSION;

    /// Largest document `load` reads from a file or URL, or `from_json` takes, bytes (64 MiB).
    #[classattr]
    const MAX_INPUT_BYTES: u64 = MAX_INPUT_BYTES;

    /// Longest a URL fetch may take, connect to last byte, seconds.
    #[classattr]
    #[pyo3(name = "HTTP_TIMEOUT")]
    fn http_timeout() -> f64 {
        HTTP_TIMEOUT.as_secs_f64()
    }

    /// What `top_epochs(by=...)` ranks by (tuple of str).
    #[classattr]
    #[pyo3(name = "EPOCH_METRICS")]
    fn epoch_metrics(py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
        PyTuple::new(py, EPOCH_METRICS)
    }

    /// What `top_classes(by=...)` ranks by (tuple of str).
    #[classattr]
    #[pyo3(name = "CLASS_METRICS")]
    fn class_metrics(py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
        PyTuple::new(py, CLASS_METRICS)
    }

    /// Reads one snapshot from `source`: a file path (str or os.PathLike) or the URL of a live
    /// endpoint (`http://host:port` fetches `/stats.json`; `http://host:port/path` that path).
    ///
    /// Files: a final symbolic link is refused, not followed, and anything but a regular file
    /// (directory, FIFO, device, socket) is refused without blocking; at most
    /// `Snapshot.MAX_INPUT_BYTES` are read. URLs: plain http, the whole fetch bounded by
    /// `Snapshot.HTTP_TIMEOUT` seconds and `Snapshot.MAX_INPUT_BYTES`. With `validate`, the
    /// document is first checked against the JSON Schema (SchemaError). The GIL is released
    /// while reading.
    ///
    /// Raises IoError, NotRegularFileError, TooLargeError, HttpError, JsonError,
    /// MissingSchemaVersionError, UnknownSchemaVersionError, SchemaError, UsageError ('-',
    /// https://), or TypeError for a source that is neither str nor os.PathLike.
    #[staticmethod]
    #[pyo3(signature = (source, *, validate = false))]
    fn load(py: Python<'_>, source: &Bound<'_, PyAny>, validate: bool) -> PyResult<PySnapshot> {
        let source = source_of(source)?.map_err(|e| to_pyerr(py, e))?;
        let origin = source.to_string();
        let read = py.detach(|| {
            let text = source.read_text()?;
            parse(&text, &origin, validate)
        });
        read.map(|s| PySnapshot::new(s, origin))
            .map_err(|e| to_pyerr(py, e))
    }

    /// Parses a stats JSON document given as str or bytes (UTF-8); `origin` names it in errors.
    ///
    /// Raises TooLargeError (more than `Snapshot.MAX_INPUT_BYTES`), IoError (bytes not UTF-8),
    /// JsonError, MissingSchemaVersionError, UnknownSchemaVersionError, SchemaError (with
    /// `validate`).
    #[staticmethod]
    #[pyo3(signature = (text, origin = "<string>", *, validate = false))]
    fn from_json(
        py: Python<'_>,
        text: &Bound<'_, PyAny>,
        origin: &str,
        validate: bool,
    ) -> PyResult<PySnapshot> {
        let too_large = || Error::TooLarge {
            origin: origin.to_owned(),
            limit: MAX_INPUT_BYTES,
        };
        let owned: String = if let Ok(s) = text.cast::<PyString>() {
            s.to_str()?.to_owned()
        } else if let Ok(b) = text.cast::<PyBytes>() {
            let bytes = b.as_bytes();
            if bytes.len() as u64 > MAX_INPUT_BYTES {
                return Err(to_pyerr(py, too_large()));
            }
            String::from_utf8(bytes.to_vec()).map_err(|_| {
                to_pyerr(
                    py,
                    Error::Io {
                        path: origin.to_owned(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "not valid UTF-8",
                        ),
                    },
                )
            })?
        } else {
            return Err(pyo3::exceptions::PyTypeError::new_err(
                "Snapshot.from_json() takes str or bytes",
            ));
        };
        if owned.len() as u64 > MAX_INPUT_BYTES {
            return Err(to_pyerr(py, too_large()));
        }
        let origin = origin.to_owned();
        py.detach(|| parse(&owned, &origin, validate))
            .map(|s| PySnapshot::new(s, origin))
            .map_err(|e| to_pyerr(py, e))
    }

    /// The label registry: `{"count": int, "max_labels": int, "labels": list[str]}`; label id
    /// `i + 1` is `labels[i]`, id 0 means unlabeled.
    #[getter]
    fn label_registry<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        ser_to_py!(py, &self.inner.label_registry)
    }

    /// Whether the document has an `epochs` array (snapshots older than Phase 2.3 have none).
    #[getter]
    fn has_epochs(&self) -> bool {
        self.inner.epochs.is_some()
    }

    /// One dict per size class, the schema's `classes[]` entries (counters, gauges, and the
    /// derived `slow_path_rate`, `cas_retries_per_alloc`, `lock_contention_rate` as floats and
    /// `net_slabs`), in document order.
    fn classes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        ser_to_py!(py, &self.inner.classes)
    }

    /// One dict per opened ring slot, the schema's `epochs[]` entries (`state` is "ACTIVE" or
    /// "CLOSING", `age_sec` whole seconds, `*_bytes` bytes), in document order; `[]` when the
    /// snapshot has no epoch data (see `has_epochs`).
    fn epochs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        ser_to_py!(py, self.inner.epochs())
    }

    /// The whole snapshot as plain Python data (what `json.loads(snapshot.to_json())` gives):
    /// fields the document left out have their defaults (0), derived class rates are recomputed.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        ser_to_py!(py, &self.inner)
    }

    /// The snapshot as pretty-printed schema-v1 JSON (as `/stats.json` serves it).
    fn to_json(&self) -> String {
        self.inner.to_json_pretty()
    }

    /// The `tslab stats` summary as a dict: RSS and slab totals (bytes), slow-path, madvise and
    /// contention totals and rates, epoch counts by state, and `top_epochs_by_rss` (3 epoch
    /// dicts).
    fn summary<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        ser_to_py!(py, &Summary::of(&self.inner))
    }

    /// The `n` epochs ranked by `by` (one of Snapshot.EPOCH_METRICS: "rss_bytes" (alias "rss"),
    /// "age_sec", "refcount", "reclaimable_bytes"), largest first (smallest with `ascending`),
    /// ties by ring index: `tslab top --epochs`. Each row is the epoch's dict plus `value`
    /// (float), the figure ranked by; with `before` (an older snapshot of the same allocator),
    /// `value` is its change per second between the two. `[]` when there is no epoch data.
    ///
    /// Raises UsageError for an unknown metric.
    #[pyo3(signature = (by = "rss_bytes", n = 10, *, ascending = false, before = None))]
    fn top_epochs<'py>(
        &self,
        py: Python<'py>,
        by: &str,
        n: usize,
        ascending: bool,
        before: Option<PyRef<'py, PySnapshot>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let metric = epoch_metric(by).map_err(|e| to_pyerr(py, e))?;
        let before = before.as_ref().map(|b| &b.inner);
        match tslab::report::top_epochs(&self.inner, before, metric, n, ascending) {
            Some(top) => ranked_to_py(py, rows_value!(&top.rows)),
            None => Ok(PyList::empty(py)),
        }
    }

    /// The `n` size classes ranked by `by` (one of Snapshot.CLASS_METRICS), largest first (smallest with
    /// `ascending`), ties by class index: `tslab top --classes`. Each row is the class's dict
    /// plus `value` (float); with `before`, its change per second.
    ///
    /// Raises UsageError for an unknown metric.
    #[pyo3(signature = (by = "slow_path_hits", n = 10, *, ascending = false, before = None))]
    fn top_classes<'py>(
        &self,
        py: Python<'py>,
        by: &str,
        n: usize,
        ascending: bool,
        before: Option<PyRef<'py, PySnapshot>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let metric = class_metric(by).map_err(|e| to_pyerr(py, e))?;
        let before = before.as_ref().map(|b| &b.inner);
        let top = tslab::report::top_classes(&self.inner, before, metric, n, ascending);
        ranked_to_py(py, rows_value!(&top.rows))
    }

    /// Compares this (older) snapshot with `other` (newer), as `tslab diff self other`:
    /// `{"threshold_pct": float, "rows": [{"metric", "before", "after", "change_pct" (float or
    /// None when before is 0), "regression" (bool)}], "regressed": bool}` over slow_path_rate,
    /// madvise_failures, rss_bytes and lock_contention_rate (higher is worse for all).
    ///
    /// Raises UsageError for a negative or non-finite threshold.
    #[pyo3(signature = (other, threshold_pct = 10.0))]
    fn diff<'py>(
        &self,
        py: Python<'py>,
        other: PyRef<'py, PySnapshot>,
        threshold_pct: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let threshold = tslab::report::parse_threshold(&threshold_pct.to_string())
            .map_err(|m| to_pyerr(py, Error::Usage(format!("threshold_pct: {m}"))))?;
        let diff = Diff::between(&self.inner, &other.inner, threshold);
        let out = ser_to_py!(py, &diff)?;
        out.set_item("regressed", diff.regressed())?;
        Ok(out)
    }

    /// Equal when the snapshots' contents are (the origin is not compared).
    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PySnapshot>()
            .is_ok_and(|o| o.get().inner == self.inner)
    }

    /// `<memsys.tslab.Snapshot pid=... timestamp_ns=... classes=N epochs=N|none rss_bytes=...
    /// origin='...'>`.
    fn __repr__(&self) -> String {
        format!(
            "<memsys.tslab.Snapshot pid={} timestamp_ns={} classes={} epochs={} rss_bytes={} origin={:?}>",
            self.pid,
            self.timestamp_ns,
            self.inner.classes.len(),
            self.inner
                .epochs
                .as_ref()
                .map_or_else(|| "none".to_owned(), |e| e.len().to_string()),
            self.rss_bytes,
            quote_bounded(&self.origin, 80),
        )
    }
}

/// Fills the `memsys.tslab` module: `Snapshot` and the exception classes.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add(
        "__doc__",
        "temporal-slab stats snapshots (schema version 1): Snapshot.load(path_or_url), \
         attributes mirroring the schema, epochs()/classes() as lists of dicts, top_epochs(), \
         top_classes(), summary(), diff(). Every error is a TslabError subclass.",
    )?;
    m.add_class::<PySnapshot>()?;
    m.add("TslabError", py.get_type::<TslabError>())?;
    m.add("IoError", py.get_type::<IoError>())?;
    m.add("TooLargeError", py.get_type::<TooLargeError>())?;
    m.add("NotRegularFileError", py.get_type::<NotRegularFileError>())?;
    m.add("JsonError", py.get_type::<JsonError>())?;
    m.add(
        "MissingSchemaVersionError",
        py.get_type::<MissingSchemaVersionError>(),
    )?;
    m.add(
        "UnknownSchemaVersionError",
        py.get_type::<UnknownSchemaVersionError>(),
    )?;
    m.add("SchemaError", py.get_type::<SchemaError>())?;
    m.add("HttpError", py.get_type::<HttpError>())?;
    m.add("CorpusError", py.get_type::<CorpusError>())?;
    m.add("RequestError", py.get_type::<RequestError>())?;
    m.add("UsageError", py.get_type::<UsageError>())?;
    m.add("AllocError", py.get_type::<AllocError>())?;
    Ok(())
}
