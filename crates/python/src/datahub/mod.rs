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
//! - The GIL is released during every wait. Timeouts are seconds (`float`); `None` waits
//!   without end, in 200 ms slices between which signals are checked (so Ctrl-C works).
//! - [`Schema`](schema::PySchema) gives the same fingerprint for a numpy structured dtype as
//!   `datahub::Schema::of` for the `#[repr(C)]` struct with the same layout.

use std::time::Duration;

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

/// Runs `op` with the GIL released: once with `timeout`, or (`None`) in [`SLICE`]s until it
/// returns anything but a timeout, checking for signals (KeyboardInterrupt) between slices.
pub(crate) fn wait<T: Send>(
    py: Python<'_>,
    timeout: Option<Duration>,
    mut op: impl FnMut(Duration) -> Result<T, Error> + Send,
) -> PyResult<T> {
    match timeout {
        Some(t) => py.detach(|| op(t)).map_err(errors::to_py),
        None => loop {
            match py.detach(|| op(SLICE)) {
                Err(Error::Timeout { .. }) => py.check_signals()?,
                r => return r.map_err(errors::to_py),
            }
        },
    }
}

/// [`wait`], but when `ready` says the operation will not wait, runs it at once with the GIL
/// held: releasing and retaking the GIL costs more than a claim or a read that does not wait.
pub(crate) fn wait_unless_ready<T: Send>(
    py: Python<'_>,
    timeout: Option<Duration>,
    ready: bool,
    mut op: impl FnMut(Duration) -> Result<T, Error> + Send,
) -> PyResult<T> {
    if ready {
        op(Duration::ZERO).map_err(errors::to_py)
    } else {
        wait(py, timeout, op)
    }
}

/// A policy argument: `"latest"`, `"sequential"`, `"sequential_sync"`.
pub(crate) fn policy(s: &str) -> PyResult<Policy> {
    match s {
        "latest" => Ok(Policy::Latest),
        "sequential" => Ok(Policy::Sequential),
        "sequential_sync" => Ok(Policy::SequentialSync),
        _ => Err(PyValueError::new_err(format!(
            "policy must be 'latest', 'sequential' or 'sequential_sync', not {s:?}"
        ))),
    }
}

/// A checksum argument: `"none"`, `"manual"`, `"enforced"`.
pub(crate) fn checksum(s: &str) -> PyResult<ChecksumPolicy> {
    match s {
        "none" => Ok(ChecksumPolicy::None),
        "manual" => Ok(ChecksumPolicy::Manual),
        "enforced" => Ok(ChecksumPolicy::Enforced),
        _ => Err(PyValueError::new_err(format!(
            "checksum must be 'none', 'manual' or 'enforced', not {s:?}"
        ))),
    }
}

/// A 32-byte key argument.
pub(crate) fn key(k: &[u8]) -> PyResult<[u8; 32]> {
    k.try_into()
        .map_err(|_| PyValueError::new_err(format!("a block key is 32 bytes, not {}", k.len())))
}

/// A serde value as plain Python data (dicts, lists, numbers, strings).
pub(crate) fn to_python<'py, T: serde::Serialize>(
    py: Python<'py>,
    v: &T,
) -> PyResult<Bound<'py, PyAny>> {
    pythonize::pythonize(py, v).map_err(PyErr::from)
}
