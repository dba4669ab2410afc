//! `memsys._native`: the extension module behind the `memsys` Python package.
//!
//! Three submodules, each a thin layer over its Rust crate:
//! - `memsys.datahub` (`src/datahub/`, over the `datahub` crate): producers and consumers of shared-memory DataBlocks, slots
//!   exported through the buffer protocol (zero-copy), broker discovery, admin.
//! - `memsys.mmsb` (`src/mmsb/`, over the `mmsb` crate): the versioned page store, its log, checkpoints and replay.
//! - `memsys.tslab` (`src/tslab.rs`, over the `tslab` crate): temporal-slab stats snapshots.
//!
//! Every error the crates return arrives in Python as its own exception class, each a
//! subclass of its system's base (`DataHubError`, `MmsbError`, `TslabError`), all subclasses
//! of `memsys.MemsysError`. The typed stubs are `python/memsys/*.pyi`.

use pyo3::prelude::*;

mod buffer;
mod datahub;
mod errors;
mod mmsb;
mod tslab;

pub use errors::MemsysError;

/// Adds `name` as a submodule of `parent`, importable as `memsys.<name>` (the package's
/// `__init__.py` puts it in `sys.modules`).
fn add_submodule(
    parent: &Bound<'_, PyModule>,
    name: &str,
    fill: fn(&Bound<'_, PyModule>) -> PyResult<()>,
) -> PyResult<()> {
    let m = PyModule::new(parent.py(), name)?;
    fill(&m)?;
    parent.add_submodule(&m)
}

/// The module `memsys._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("MemsysError", m.py().get_type::<MemsysError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    add_submodule(m, "datahub", datahub::register)?;
    add_submodule(m, "mmsb", mmsb::register)?;
    add_submodule(m, "tslab", tslab::register)?;
    Ok(())
}
