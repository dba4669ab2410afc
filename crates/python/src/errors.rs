//! The exception root shared by the three submodules, and helpers to raise typed exceptions
//! and to hand Rust values to Python.

use pyo3::IntoPyObjectExt;
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

/// Any Python-convertible value as an object, for exception attributes (`None` if the
/// conversion fails, which it never does for the strings and numbers passed).
pub(crate) fn obj<'py, T: IntoPyObject<'py>>(py: Python<'py>, v: T) -> Py<PyAny> {
    v.into_bound_py_any(py)
        .map_or_else(|_| py.None(), Bound::unbind)
}

/// A serde value as plain Python data (dicts, lists, numbers, strings, None), by pythonize.
pub(crate) fn to_python<'py, T: serde::Serialize + ?Sized>(
    py: Python<'py>,
    v: &T,
) -> PyResult<Bound<'py, PyAny>> {
    pythonize::pythonize(py, v).map_err(PyErr::from)
}
