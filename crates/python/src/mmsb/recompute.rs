//! Python recompute functions as `mmsb` recompute closures.
//!
//! The bus calls the closure during a propagation wave, with the bus locked and the GIL
//! released (the operation runs inside `py.detach`). The closure takes the GIL
//! (`Python::attach`) only for the call of the Python function: it wraps each parent's bytes in
//! a `ParentView` (a buffer exporter valid during the call), passes memoryviews of them, then
//! invalidates the views and releases the memoryviews it made. A view the function kept a
//! buffer of (`numpy.frombuffer(mv)`, say) keeps its page's export count up, so the page is then
//! protected like a `Page` view: writes and `close` raise `BufferError`.
//!
//! The closure cannot fail (`mmsb::RecomputeFn` returns nothing): an exception is stored in
//! `Shared::pending`, the page is left as it was, later recomputes of the same operation are
//! skipped, and `Shared::op` raises the exception when the operation returns.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use mmsb::PageId;
use pyo3::exceptions::{PyBufferError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyMemoryView};

use super::errors::misuse;
use super::shared::{Shared, lock};
use crate::buffer;

/// The recompute closure of `child`. It holds the bus weakly (the bus holds the closure).
pub(crate) fn closure(
    shared: &Arc<Shared>,
    child: PageId,
) -> impl Fn(&[&[u8]], &mut [u8]) + Send + Sync + 'static {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    move |parents: &[&[u8]], out: &mut [u8]| {
        let Some(shared) = weak.upgrade() else {
            return;
        };
        if lock(&shared.pending).is_some() {
            return;
        }
        Python::attach(|py| {
            if let Err(e) = run(py, &shared, child, parents, out) {
                let mut p = lock(&shared.pending);
                if p.is_none() {
                    *p = Some(e);
                }
            }
        });
    }
}

/// One call of the Python function of `child`.
fn run(
    py: Python<'_>,
    shared: &Arc<Shared>,
    child: PageId,
    parents: &[&[u8]],
    out: &mut [u8],
) -> PyResult<()> {
    let func = match lock(&shared.funcs).get(&child.0) {
        Some(f) => f.clone_ref(py),
        None => return Ok(()),
    };
    let ids = lock(&shared.data_parents)
        .get(&child.0)
        .cloned()
        .unwrap_or_default();
    if ids.len() != parents.len() {
        return Err(misuse(format!(
            "page {}: the bus passed {} parents but {} data dependencies are known",
            child.0,
            parents.len(),
            ids.len()
        )));
    }
    let mut holders = Vec::with_capacity(parents.len());
    let mut views = Vec::with_capacity(parents.len());
    for (id, bytes) in ids.iter().zip(parents) {
        let h = Bound::new(
            py,
            ParentView {
                shared: Arc::clone(shared),
                page: *id,
                ptr: bytes.as_ptr() as usize,
                len: bytes.len(),
                valid: AtomicBool::new(true),
            },
        )?;
        views.push(PyMemoryView::from(h.as_any())?);
        holders.push(h);
    }
    let list = PyList::new(py, &views)?;
    let result = func.call1(py, (list,));
    for h in &holders {
        h.get().valid.store(false, Ordering::Relaxed);
    }
    for v in &views {
        // Fails (BufferError) only when the function kept a buffer of the memoryview; the
        // export then stays counted and protects the page.
        let _ = v.call_method0("release");
    }
    let result = result?;
    let result = result.bind(py);
    if result.is_none() {
        return Ok(());
    }
    let buf = pyo3::buffer::PyBuffer::<u8>::get(result).map_err(|e| {
        let t = PyTypeError::new_err(format!(
            "page {}: a recompute function returns a bytes-like object or None",
            child.0
        ));
        t.set_cause(py, Some(e));
        t
    })?;
    let n = buf.item_count();
    if n > out.len() {
        return Err(PyValueError::new_err(format!(
            "page {}: the recompute function returned {n} bytes for a page of {}",
            child.0,
            out.len()
        )));
    }
    buf.copy_to_slice(py, &mut out[..n])
}

/// The bytes of one parent page, exported read-only to a recompute function during its call.
#[pyclass(module = "memsys.mmsb", frozen, name = "ParentView")]
pub(crate) struct ParentView {
    shared: Arc<Shared>,
    page: u64,
    /// Address of the parent's bytes in the bus's state (a `usize` so the class is `Send`).
    ptr: usize,
    len: usize,
    /// True during the call; a new export after it is refused.
    valid: AtomicBool,
}

#[pymethods]
impl ParentView {
    /// The parent's page id.
    #[getter]
    fn page(&self) -> u64 {
        self.page
    }

    /// The parent's size in bytes.
    fn __len__(&self) -> usize {
        self.len
    }

    /// Exports the parent's bytes read-only (only during the recompute call) and counts the
    /// export on the parent page.
    ///
    /// # Safety
    /// Called by CPython with a valid `Py_buffer`.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: std::ffi::c_int,
    ) -> PyResult<()> {
        buffer::check_request(
            view,
            flags,
            Some("page views are read-only: write through write_range or update"),
        )?;
        let me = slf.get();
        if !me.valid.load(Ordering::Relaxed) {
            return Err(PyBufferError::new_err(
                "a parent view is only valid while its recompute function runs",
            ));
        }
        me.shared.export(me.page);
        let (ptr, len) = (me.ptr as *const u8, me.len);
        // SAFETY: `view` is valid (CPython's call, checked non-null). `valid` is true, so the
        // bus is inside the wave that passed these bytes (a borrow of the parent's boxed
        // slice, which is never reallocated); after the call the export counted above keeps
        // every write to the parent and `close` refused (BufferError) until
        // `__releasebuffer__`, and `obj` (this view) keeps the `Shared`, so the bytes, alive.
        unsafe { buffer::fill(view, flags, ptr, len, true, slf.into_any()) };
        Ok(())
    }

    /// Removes the export counted by `__getbuffer__`.
    ///
    /// # Safety
    /// Called by CPython once per successful `__getbuffer__`.
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        self.shared.unexport(self.page);
    }
}
