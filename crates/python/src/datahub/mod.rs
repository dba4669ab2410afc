//! `memsys.datahub`: producers and consumers of DataHub blocks from Python.
//!
//! - [`Producer`](producer::PyProducer) creates a block; `write(timeout)` claims a slot as a
//!   [`WriteSlot`](slot::WriteSlot), which exports the slot's own memory through the buffer
//!   protocol (`memoryview(slot)`, `np.frombuffer(slot, ...)`: no copy).
//! - [`Consumer`](consumer::PyConsumer) attaches (by name, through a broker, or by secure
//!   attach); `read(timeout)` gives a read-only [`ReadSlot`](slot::ReadSlot).
//! - A view can never outlive its slot: a slot counts its exported buffers, and committing,
//!   aborting or releasing it while one is alive raises `BufferError` (the rule of CPython's
//!   `mmap.close()`); the slot object is kept alive by every view (`memoryview.obj`), and an
//!   unfinished slot is aborted (write) or released (read) only when its last reference goes.
//! - The GIL is released during every wait, in slices of at most 200 ms between which signals
//!   are checked (so Ctrl-C works whatever the timeout). Timeouts are seconds (`float`);
//!   `None` waits without end. A wait that times out counts one timeout in the block's
//!   metrics, as the Rust call with the same timeout would.
//! - [`Schema`](schema::PySchema) gives the same fingerprint for a numpy structured dtype as
//!   `datahub::Schema::of` for the `#[repr(C)]` struct with the same layout.

use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use datahub::{ChecksumPolicy, Error, Policy};

mod admin;
mod broker;
mod consumer;
pub(crate) mod errors;
mod lend;
mod producer;
mod schema;
mod slot;

pub(crate) use crate::errors::to_python;

/// Wait slice when the timeout is `None` (signals are checked between slices).
const SLICE: Duration = Duration::from_millis(200);

/// Fills `memsys.datahub`.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<producer::PyProducer>()?;
    m.add_class::<consumer::PyConsumer>()?;
    m.add_class::<consumer::SlotIter>()?;
    m.add_class::<slot::WriteSlot>()?;
    m.add_class::<slot::ReadSlot>()?;
    m.add_class::<schema::PySchema>()?;
    m.add_class::<admin::PyAdmin>()?;
    m.add_class::<broker::PyBroker>()?;
    m.add_function(wrap_pyfunction!(admin::list_blocks, m)?)?;
    m.add_function(wrap_pyfunction!(admin::remove_block, m)?)?;
    m.add_function(wrap_pyfunction!(read_key_file, m)?)?;
    Ok(())
}

/// Reads a 32-byte block key: 64 hex characters or 32 raw bytes. The file is opened with
/// O_NOFOLLOW and must be a regular file of mode 0600 or stricter.
///
/// Raises: InvalidConfig (unsafe or malformed file), Io.
#[pyfunction]
fn read_key_file(path: std::path::PathBuf) -> PyResult<Vec<u8>> {
    datahub::secure::read_key_file(&path)
        .map(|k| k.to_vec())
        .map_err(errors::to_py)
}

/// A timeout argument: seconds, or `None` for no limit.
pub(crate) fn timeout(t: Option<f64>) -> PyResult<Option<Duration>> {
    match t {
        None => Ok(None),
        Some(s) => Duration::try_from_secs_f64(s).map(Some).map_err(|_| {
            PyValueError::new_err(format!(
                "timeout must be a non-negative number of seconds or None, not {s}"
            ))
        }),
    }
}

/// A duration argument in seconds.
pub(crate) fn seconds(name: &str, s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| {
        PyValueError::new_err(format!(
            "{name} must be a non-negative number of seconds, not {s}"
        ))
    })
}

/// The deadline of a timeout argument (`None`: no limit).
fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// A timeout error whose `waited_ms` is the whole wait (the slices'), not the last slice's.
fn whole_wait(e: Error, started: Instant) -> Error {
    match e {
        Error::Timeout { op, cause, .. } => Error::Timeout {
            op,
            cause,
            waited_ms: started.elapsed().as_millis() as u64,
        },
        e => e,
    }
}

/// Runs `op(slice)` with the GIL released, in slices of at most [`SLICE`] until it returns
/// anything but a timeout or `timeout` (`None`: no limit) has passed, checking for signals
/// (KeyboardInterrupt) between slices. For waits that count nothing in the block's metrics
/// (attaching, waiting for consumers or for the drain).
pub(crate) fn wait<T: Send>(
    py: Python<'_>,
    timeout: Option<Duration>,
    mut op: impl FnMut(Duration) -> Result<T, Error> + Send,
) -> PyResult<T> {
    let started = Instant::now();
    let end = deadline(timeout);
    loop {
        let left = end.map(|d| d.saturating_duration_since(Instant::now()));
        let slice = left.map_or(SLICE, |l| l.min(SLICE));
        match py.detach(|| op(slice)) {
            Err(Error::Timeout { .. }) if left.is_none_or(|l| l > slice) => py.check_signals()?,
            r => return r.map_err(|e| errors::to_py(whole_wait(e, started))),
        }
    }
}

/// Waits until `ready(slice)` says an operation will not wait, or `timeout` (`None`: no
/// limit) has passed; the caller then runs the operation with a zero timeout and passes its
/// result through [`finish`]. `ready_now` (the caller's cheap check): returns at once with
/// the GIL held (releasing and retaking the GIL costs more than a claim or a read that does
/// not wait). Else waits with `ready` in GIL-free slices of at most [`SLICE`], checking for
/// signals between them. When `timeout` passes first, the operation still runs once: it
/// reports the timeout, counted once in the block's metrics as one Rust call with the whole
/// timeout would count it. Returns when the wait started (`None`: it did not wait).
pub(crate) fn wait_until_ready(
    py: Python<'_>,
    timeout: Option<Duration>,
    ready_now: bool,
    mut ready: impl FnMut(Duration) -> Result<(), Error> + Send,
) -> PyResult<Option<Instant>> {
    if ready_now {
        return Ok(None);
    }
    let started = Instant::now();
    let end = deadline(timeout);
    loop {
        let left = end.map(|d| d.saturating_duration_since(Instant::now()));
        if left == Some(Duration::ZERO) {
            return Ok(Some(started));
        }
        let slice = left.map_or(SLICE, |l| l.min(SLICE));
        match py.detach(|| ready(slice)) {
            Err(Error::Timeout { .. }) => py.check_signals()?,
            // Ready, or closed, truncated, ...: the operation says which.
            _ => return Ok(Some(started)),
        }
    }
}

/// The result of the operation after [`wait_until_ready`]: a timeout with `waited_ms` the
/// whole wait (`started`: when the wait began, `None` if it did not wait).
pub(crate) fn finish<T>(r: Result<T, Error>, started: Option<Instant>) -> PyResult<T> {
    r.map_err(|e| match started {
        Some(t) => errors::to_py(whole_wait(e, t)),
        None => errors::to_py(e),
    })
}

/// A unit enum named by its serde name (the names the broker protocol and `--json` use).
fn by_name<T: serde::de::DeserializeOwned>(what: &str, names: &str, s: &str) -> PyResult<T> {
    use serde::de::IntoDeserializer;
    let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> = s.into_deserializer();
    T::deserialize(de)
        .map_err(|_| PyValueError::new_err(format!("{what} must be {names}, not {s:?}")))
}

/// A policy argument: `"latest"`, `"sequential"`, `"sequential_sync"`.
pub(crate) fn policy(s: &str) -> PyResult<Policy> {
    by_name("policy", "'latest', 'sequential' or 'sequential_sync'", s)
}

/// A checksum argument: `"none"`, `"manual"`, `"enforced"`.
pub(crate) fn checksum(s: &str) -> PyResult<ChecksumPolicy> {
    by_name("checksum", "'none', 'manual' or 'enforced'", s)
}

/// A 32-byte key argument.
pub(crate) fn key(k: &[u8]) -> PyResult<[u8; 32]> {
    k.try_into()
        .map_err(|_| PyValueError::new_err(format!("a block key is 32 bytes, not {}", k.len())))
}
