//! `memsys.mmsb`: the versioned page store (`mmsb::Mmsb`), its write-ahead log, checkpoints and
//! replay, from Python.
//!
//! - [`bus`]: `Bus` (start, pages, dependencies, recompute functions, batches, checkpoint,
//!   replay, stats, close), `Page` (bytes, a zero-copy read-only view, writes) and `Batch`.
//! - [`recompute`]: Python callables as recompute closures (the GIL taken only for the call).
//! - [`state`]: `State`, the detached result of replay, and its `StatePage`s.
//! - [`tools`]: `log_verify`, `log_frames`, `replay` for logs given by path.
//! - [`shared`]: the lock and export rules shared by a bus and its views.
//! - [`errors`]: `MmsbError` and one subclass per `mmsb::Error` variant.
//!
//! Views follow CPython's `mmap` rule: while a buffer of a page's bytes is exported, anything
//! that would change or free those bytes raises `BufferError` (see [`shared`]).

use pyo3::prelude::*;

mod bus;
mod dicts;
mod errors;
mod recompute;
mod shared;
mod state;
mod tools;

/// Fills the `memsys.mmsb` module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::add_all(m)?;
    m.add_class::<bus::Bus>()?;
    m.add_class::<bus::Page>()?;
    m.add_class::<bus::Batch>()?;
    m.add_class::<recompute::ParentView>()?;
    m.add_class::<state::State>()?;
    m.add_class::<state::StatePage>()?;
    m.add_function(wrap_pyfunction!(tools::log_verify, m)?)?;
    m.add_function(wrap_pyfunction!(tools::log_frames, m)?)?;
    m.add_function(wrap_pyfunction!(tools::replay, m)?)?;
    m.add("MAX_PAGE_SIZE", mmsb::MAX_PAGE_SIZE)?;
    Ok(())
}
