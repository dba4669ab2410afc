//! `memsys.datahub.Admin` and the block listing functions.

use pyo3::prelude::*;

use datahub::Admin;

use super::{errors, to_python};

/// Opens block `name` for diagnosis and recovery (what `datahub diagnose` and `datahub
/// recover` do). Opening changes nothing; each method says what it changes.
///
/// Raises: NotFound, NotRegular, BadMagic, and the header errors of `Consumer.attach`.
#[pyclass(module = "memsys.datahub", name = "Admin", frozen)]
pub(crate) struct PyAdmin {
    admin: Admin,
}

#[pymethods]
impl PyAdmin {
    #[new]
    fn new(py: Python<'_>, name: &str) -> PyResult<PyAdmin> {
        let admin = py.detach(|| Admin::open(name)).map_err(errors::to_py)?;
        Ok(PyAdmin { admin })
    }

    /// The block's header, peers and slots (read only).
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &self.admin.info())
    }

    /// The block's counters (read only).
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &self.admin.metrics())
    }

    /// What is wrong (read only): `{"info": ..., "slots": [{"slot", "state", "seq", "len",
    /// "writer_dead", "dead_readers", "age_ms", ...}], "problems": [str, ...]}`; no problems
    /// means healthy.
    fn diagnose<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let d = py.detach(|| self.admin.diagnose());
        to_python(py, &d)
    }

    /// Checks the header and every slot's state; with repair=True also fixes what it safely
    /// can. `ok` in the result tells whether the block is consistent.
    #[pyo3(signature = (repair = false))]
    fn validate<'py>(&self, py: Python<'py>, repair: bool) -> PyResult<Bound<'py, PyAny>> {
        let v = py.detach(|| self.admin.validate(repair));
        let d = to_python(py, &v)?;
        d.set_item("ok", v.ok())?;
        Ok(d)
    }

    /// Every safe recovery (release zombie readers, clean dead consumers, release a dead
    /// writer's slot); with dry_run=True (the default) only says what it would do.
    #[pyo3(signature = (dry_run = true))]
    fn recover<'py>(&self, py: Python<'py>, dry_run: bool) -> PyResult<Bound<'py, PyAny>> {
        let a = py.detach(|| self.admin.auto_recover(dry_run));
        to_python(py, &a)
    }

    /// Raises BlockTruncated if the segment was shrunk under this mapping.
    fn check_intact(&self) -> PyResult<()> {
        self.admin.check_intact().map_err(errors::to_py)
    }

    /// Unlinks the block. Raises: ProducerAlive/OwnerAlive if its producer is alive.
    fn remove(&self) -> PyResult<()> {
        self.admin.remove().map_err(errors::to_py)
    }
}

/// Names of the DataHub blocks in the shared-memory directory.
///
/// Raises: Io.
#[pyfunction]
pub(crate) fn list_blocks() -> PyResult<Vec<String>> {
    datahub::list().map_err(errors::to_py)
}

/// Unlinks block `name` whatever its state (`datahub remove --force`).
///
/// Raises: NotFound, InvalidName, Io.
#[pyfunction]
pub(crate) fn remove_block(name: &str) -> PyResult<()> {
    datahub::remove(name).map_err(errors::to_py)
}
