//! `memsys.mmsb` (to be filled).

use pyo3::prelude::*;

/// Fills the `memsys.mmsb` module.
pub(crate) fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
