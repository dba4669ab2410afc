//! The exceptions of `memsys.mmsb`: `MmsbError` and one subclass per variant of
//! [`mmsb::Error`], named after the variant with an `Error` suffix (`Error::NoSuchPage` is
//! `NoSuchPageError`), each carrying the variant's fields as attributes.
//!
//! Paths are `str`, LSNs and page ids `int`, durations `float` seconds. Errors that are not the
//! Rust crate's (a closed bus, a call into the bus from inside a recompute function) are the
//! base `MmsbError`; wrong arguments are `TypeError`/`ValueError`, as everywhere in Python.

use std::path::Path;

use pyo3::prelude::*;
use pyo3::types::PyType;

use crate::errors::{MemsysError, obj, raise_with};

pyo3::create_exception!(
    memsys.mmsb,
    MmsbError,
    MemsysError,
    "Base of every exception memsys.mmsb raises; also raised on its own for misuse of a bus that \
     the Rust crate has no variant for (a closed bus, a call into the bus from a recompute \
     function)."
);

/// Declares one exception class per variant, all subclasses of `MmsbError`, and `ALL`, the
/// list `register` adds to the module.
macro_rules! variants {
    ($($name:ident => $doc:literal,)*) => {
        $(pyo3::create_exception!(memsys.mmsb, $name, MmsbError, $doc);)*
        /// Every variant's class, by Python name.
        pub(crate) fn add_all(m: &Bound<'_, PyModule>) -> PyResult<()> {
            let py = m.py();
            m.add("MmsbError", py.get_type::<MmsbError>())?;
            $(m.add(stringify!($name), py.get_type::<$name>())?;)*
            Ok(())
        }
    };
}

variants! {
    IoError => "An operating-system call on `path` failed (attributes: path, errno, strerror).",
    LockedError => "Another writer holds the log directory's lock (attributes: dir, waited in seconds).",
    BadMagicError => "A file is not an MMSB log segment or checkpoint (attributes: file, what).",
    UnsupportedVersionError => "A file has a format version this build does not read (attributes: file, found, supported).",
    CorruptFrameError => "A frame followed by valid data fails its checks (attributes: file, offset, reason; lsn: the LSN the frame should have had, when known).",
    DamagedTailError => "The last frame of the log was damaged after it was written (attributes: file, offset, reason; lsn when known).",
    NotRegularFileError => "A file of a log directory is not a regular file (attributes: file, found).",
    NotALogError => "A directory holds no MMSB log (attributes: dir, reason).",
    CorruptLogIdError => "The LOGID file fails its checks (attributes: file, reason).",
    ForeignCheckpointError => "A checkpoint belongs to another log (attributes: file, found, expected).",
    StateUnrecoverableError => "The state of a log directory cannot be rebuilt (attributes: dir, reason).",
    CorruptCheckpointError => "A checkpoint file fails its checks (attributes: file, reason).",
    NoSuchPageError => "No page with this id exists (attribute: page).",
    PageExistsError => "A page id was created twice (attribute: page).",
    InvalidPageSizeError => "A page size of zero or above the maximum (attributes: size, max).",
    SizeMismatchError => "Whole-page bytes whose length is not the page's size (attributes: page, expected, found).",
    OutOfBoundsError => "A write reaches past the end of the page (attributes: page, offset, end, size).",
    MaskPayloadMismatchError => "A sparse delta whose payload does not match its mask (attributes: mask_bytes, payload_bytes).",
    PageMismatchError => "Two deltas of different pages were merged (attributes: first, second).",
    CycleError => "The dependency parent -> child would close a cycle (attributes: parent, child).",
    DerivedError => "A derived page (one with a recompute function) was written directly (attribute: page).",
    InconsistentError => "Replayed state differs from the live state (attributes: page, live, replayed: XXH3-64 hashes).",
    DiffShapeError => "States differ in page set or page size (attribute: page).",
    TargetBeyondLogError => "A replay target the log cannot reach (attributes: target, last: the last LSN).",
    ReplayMismatchError => "A log frame does not fit the state it is replayed onto (attributes: lsn, page, reason).",
    PoisonedError => "The bus refuses work after a failed log write; restart it (attribute: reason).",
    BatchError => "A batch misuse: commit without a batch, a batch inside a batch, a checkpoint with uncommitted frames (attribute: reason).",
    FrameTooLargeError => "A log frame would exceed the maximum frame length (attributes: bytes, max).",
    MetadataKeyTooLongError => "A metadata key longer than the maximum (attributes: len, max).",
    LogFailedError => "The log stopped after an earlier write or sync failure; reopen it (attributes: dir, cause).",
    ReadOnlyError => "A write was asked of a read-only replica (attribute: dir).",
    IsReplicaError => "A replica's directory was opened as a writer; promote it first (attribute: dir).",
    ReplicaFrameError => "A replicated frame was refused; nothing of its commit was logged (attributes: lsn, reason).",
    PrunedError => "Frames asked of a log that pruned them after a checkpoint (attributes: wanted, first).",
}

fn s(py: Python<'_>, p: &Path) -> Py<PyAny> {
    p.display()
        .to_string()
        .into_pyobject(py)
        .map_or_else(|_| py.None(), |o| o.into_any().unbind())
}

/// The Python exception for `e`: its variant's class, message, and fields as attributes.
pub(crate) fn to_py(py: Python<'_>, e: &mmsb::Error) -> PyErr {
    use mmsb::Error as E;
    let msg = e.to_string();
    let (ty, attrs): (Bound<'_, PyType>, Vec<(&str, Py<PyAny>)>) = match e {
        E::Io { path, source } => (
            py.get_type::<IoError>(),
            vec![
                ("path", s(py, path)),
                ("errno", obj(py, source.raw_os_error())),
                ("strerror", obj(py, source.to_string())),
            ],
        ),
        E::Locked { dir, waited } => (
            py.get_type::<LockedError>(),
            vec![
                ("dir", s(py, dir)),
                ("waited", obj(py, waited.as_secs_f64())),
            ],
        ),
        E::BadMagic { file, what } => (
            py.get_type::<BadMagicError>(),
            vec![("file", s(py, file)), ("what", obj(py, *what))],
        ),
        E::UnsupportedVersion {
            file,
            found,
            supported,
        } => (
            py.get_type::<UnsupportedVersionError>(),
            vec![
                ("file", s(py, file)),
                ("found", obj(py, *found)),
                ("supported", obj(py, *supported)),
            ],
        ),
        E::CorruptFrame {
            file,
            offset,
            reason,
        } => (
            py.get_type::<CorruptFrameError>(),
            vec![
                ("file", s(py, file)),
                ("offset", obj(py, *offset)),
                ("reason", obj(py, reason.as_str())),
                ("lsn", py.None()),
            ],
        ),
        E::DamagedTail {
            file,
            offset,
            reason,
        } => (
            py.get_type::<DamagedTailError>(),
            vec![
                ("file", s(py, file)),
                ("offset", obj(py, *offset)),
                ("reason", obj(py, reason.as_str())),
                ("lsn", py.None()),
            ],
        ),
        E::NotRegularFile { file, found } => (
            py.get_type::<NotRegularFileError>(),
            vec![("file", s(py, file)), ("found", obj(py, *found))],
        ),
        E::NotALog { dir, reason } => (
            py.get_type::<NotALogError>(),
            vec![("dir", s(py, dir)), ("reason", obj(py, reason.as_str()))],
        ),
        E::CorruptLogId { file, reason } => (
            py.get_type::<CorruptLogIdError>(),
            vec![("file", s(py, file)), ("reason", obj(py, reason.as_str()))],
        ),
        E::ForeignCheckpoint {
            file,
            found,
            expected,
        } => (
            py.get_type::<ForeignCheckpointError>(),
            vec![
                ("file", s(py, file)),
                ("found", obj(py, found.as_str())),
                ("expected", obj(py, expected.as_str())),
            ],
        ),
        E::StateUnrecoverable { dir, reason } => (
            py.get_type::<StateUnrecoverableError>(),
            vec![("dir", s(py, dir)), ("reason", obj(py, reason.as_str()))],
        ),
        E::CorruptCheckpoint { file, reason } => (
            py.get_type::<CorruptCheckpointError>(),
            vec![("file", s(py, file)), ("reason", obj(py, reason.as_str()))],
        ),
        E::NoSuchPage(p) => (
            py.get_type::<NoSuchPageError>(),
            vec![("page", obj(py, p.0))],
        ),
        E::PageExists(p) => (
            py.get_type::<PageExistsError>(),
            vec![("page", obj(py, p.0))],
        ),
        E::InvalidPageSize { size, max } => (
            py.get_type::<InvalidPageSizeError>(),
            vec![("size", obj(py, *size)), ("max", obj(py, *max))],
        ),
        E::SizeMismatch {
            page,
            expected,
            found,
        } => (
            py.get_type::<SizeMismatchError>(),
            vec![
                ("page", obj(py, page.0)),
                ("expected", obj(py, *expected)),
                ("found", obj(py, *found)),
            ],
        ),
        E::OutOfBounds {
            page,
            offset,
            end,
            size,
        } => (
            py.get_type::<OutOfBoundsError>(),
            vec![
                ("page", obj(py, page.0)),
                ("offset", obj(py, *offset)),
                ("end", obj(py, *end)),
                ("size", obj(py, *size)),
            ],
        ),
        E::MaskPayloadMismatch {
            mask_bytes,
            payload_bytes,
        } => (
            py.get_type::<MaskPayloadMismatchError>(),
            vec![
                ("mask_bytes", obj(py, *mask_bytes)),
                ("payload_bytes", obj(py, *payload_bytes)),
            ],
        ),
        E::PageMismatch { first, second } => (
            py.get_type::<PageMismatchError>(),
            vec![("first", obj(py, first.0)), ("second", obj(py, second.0))],
        ),
        E::Cycle { parent, child } => (
            py.get_type::<CycleError>(),
            vec![("parent", obj(py, parent.0)), ("child", obj(py, child.0))],
        ),
        E::Derived(p) => (py.get_type::<DerivedError>(), vec![("page", obj(py, p.0))]),
        E::Inconsistent {
            page,
            live,
            replayed,
        } => (
            py.get_type::<InconsistentError>(),
            vec![
                ("page", obj(py, page.0)),
                ("live", obj(py, *live)),
                ("replayed", obj(py, *replayed)),
            ],
        ),
        E::DiffShape { page } => (
            py.get_type::<DiffShapeError>(),
            vec![("page", obj(py, page.0))],
        ),
        E::TargetBeyondLog { target, last } => (
            py.get_type::<TargetBeyondLogError>(),
            vec![
                ("target", obj(py, target.as_str())),
                ("last", obj(py, last.0)),
            ],
        ),
        E::ReplayMismatch { lsn, page, reason } => (
            py.get_type::<ReplayMismatchError>(),
            vec![
                ("lsn", obj(py, lsn.0)),
                ("page", obj(py, page.0)),
                ("reason", obj(py, reason.as_str())),
            ],
        ),
        E::Poisoned(why) => (
            py.get_type::<PoisonedError>(),
            vec![("reason", obj(py, why.as_str()))],
        ),
        E::Batch(why) => (py.get_type::<BatchError>(), vec![("reason", obj(py, *why))]),
        E::FrameTooLarge { bytes, max } => (
            py.get_type::<FrameTooLargeError>(),
            vec![("bytes", obj(py, *bytes)), ("max", obj(py, *max))],
        ),
        E::MetadataKeyTooLong { len, max } => (
            py.get_type::<MetadataKeyTooLongError>(),
            vec![("len", obj(py, *len)), ("max", obj(py, *max))],
        ),
        E::LogFailed { dir, cause } => (
            py.get_type::<LogFailedError>(),
            vec![("dir", s(py, dir)), ("cause", obj(py, cause.as_str()))],
        ),
        E::ReadOnly { dir } => (py.get_type::<ReadOnlyError>(), vec![("dir", s(py, dir))]),
        E::IsReplica { dir } => (py.get_type::<IsReplicaError>(), vec![("dir", s(py, dir))]),
        E::ReplicaFrame { lsn, reason } => (
            py.get_type::<ReplicaFrameError>(),
            vec![
                ("lsn", obj(py, lsn.0)),
                ("reason", obj(py, reason.as_str())),
            ],
        ),
        E::Pruned { wanted, first } => (
            py.get_type::<PrunedError>(),
            vec![("wanted", obj(py, wanted.0)), ("first", obj(py, first.0))],
        ),
        // `mmsb::Error` is non-exhaustive: a variant added later arrives as the base class
        // until it gets its own.
        _ => (py.get_type::<MmsbError>(), Vec::new()),
    };
    raise_with(py, ty, msg, &attrs)
}

/// [`to_py`] for use in `map_err` where a `Python` token is at hand.
pub(crate) fn err(py: Python<'_>) -> impl Fn(mmsb::Error) -> PyErr + '_ {
    move |e| to_py(py, &e)
}

/// The base `MmsbError` with `msg` (misuse the Rust crate has no variant for).
pub(crate) fn misuse(msg: impl Into<String>) -> PyErr {
    MmsbError::new_err(msg.into())
}
