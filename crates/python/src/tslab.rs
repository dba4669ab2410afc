//! `memsys.tslab` (to be filled).

use pyo3::prelude::*;

/// Fills the `memsys.tslab` module.
pub(crate) fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
