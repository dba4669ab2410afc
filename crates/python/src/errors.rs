//! The exception root shared by the three submodules, and helpers to raise typed exceptions.

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyType;

pyo3::create_exception!(
    memsys,
    MemsysError,
    PyException,
    "Base of every exception memsys raises (DataHubError, MmsbError, TslabError)."
);

/// Builds an exception of class `ty` with message `msg` and sets the given attributes on it
/// (for example `code`, the Rust error's stable number).
pub(crate) fn raise_with(
    py: Python<'_>,
    ty: Bound<'_, PyType>,
    msg: String,
    attrs: &[(&str, Py<PyAny>)],
) -> PyErr {
    let err = PyErr::from_type(ty, (msg,));
    let value = err.value(py);
    for (k, v) in attrs {
        // An attribute that cannot be set (never for a plain exception instance) leaves the
        // message, which already says everything.
        let _ = value.setattr(*k, v.bind(py));
    }
    err
}
