//! `State` (a detached `mmsb::State`: what replay produces) and its `StatePage`s.

use std::sync::Arc;

use mmsb::PageId;
use pyo3::exceptions::PyKeyError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyMemoryView};

use crate::buffer;

/// A set of pages detached from any log (the result of `replay_to`): immutable, so its views
/// need no export rule.
#[pyclass(module = "memsys.mmsb", frozen, name = "State")]
pub(crate) struct State {
    inner: Arc<mmsb::State>,
}

impl State {
    pub(crate) fn new(s: mmsb::State) -> State {
        State { inner: Arc::new(s) }
    }

    fn page_obj(&self, py: Python<'_>, id: PageId) -> PyResult<Py<StatePage>> {
        match self.inner.page(id) {
            Some(_) => Py::new(
                py,
                StatePage {
                    state: Arc::clone(&self.inner),
                    id,
                },
            ),
            None => Err(super::errors::to_py(py, &mmsb::Error::NoSuchPage(id))),
        }
    }
}

#[pymethods]
impl State {
    /// LSN of the last frame applied (or of the checkpoint restored).
    #[getter]
    fn last_lsn(&self) -> u64 {
        self.inner.last_lsn().0
    }

    /// Sum of the page sizes, bytes.
    #[getter]
    fn bytes(&self) -> usize {
        self.inner.bytes()
    }

    /// The page `id` (`NoSuchPageError` if the state has none).
    fn page(&self, py: Python<'_>, id: u64) -> PyResult<Py<StatePage>> {
        self.page_obj(py, PageId(id))
    }

    /// Every page, in id order.
    fn pages(&self, py: Python<'_>) -> PyResult<Vec<Py<StatePage>>> {
        self.inner
            .pages()
            .map(|p| self.page_obj(py, p.id()))
            .collect()
    }

    /// `[(id, epoch, xxh3_64)]` of every page, in id order.
    fn hashes(&self) -> Vec<(u64, u64, u64)> {
        self.inner
            .hashes()
            .into_iter()
            .map(|(p, e, h)| (p.0, e, h))
            .collect()
    }

    /// `{page id: bytes}` of every page (copies).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for p in self.inner.pages() {
            d.set_item(p.id().0, PyBytes::new(py, p.bytes()))?;
        }
        Ok(d)
    }

    /// Number of pages.
    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// True when the state has page `id`.
    fn __contains__(&self, id: u64) -> bool {
        self.inner.page(PageId(id)).is_some()
    }

    /// `state[id]`: the page `id` (`KeyError` if absent).
    fn __getitem__(&self, py: Python<'_>, id: u64) -> PyResult<Py<StatePage>> {
        match self.inner.page(PageId(id)) {
            Some(_) => self.page_obj(py, PageId(id)),
            None => Err(PyKeyError::new_err(id)),
        }
    }

    /// A one-line description for debugging.
    fn __repr__(&self) -> String {
        format!(
            "<memsys.mmsb.State {} pages at LSN {}>",
            self.inner.len(),
            self.inner.last_lsn().0
        )
    }
}

/// A page of a detached `State`. `memoryview(page)` is a zero-copy read-only view; the state
/// never changes, and the view keeps it alive.
#[pyclass(module = "memsys.mmsb", frozen, name = "StatePage")]
pub(crate) struct StatePage {
    state: Arc<mmsb::State>,
    id: PageId,
}

impl StatePage {
    fn page(&self) -> PyResult<&mmsb::Page> {
        // A StatePage is only made for a page of its state, which never changes.
        self.state
            .page(self.id)
            .ok_or_else(|| super::errors::misuse(format!("page {} vanished", self.id.0)))
    }
}

#[pymethods]
impl StatePage {
    /// The page id.
    #[getter]
    fn id(&self) -> u64 {
        self.id.0
    }

    /// Size in bytes.
    #[getter]
    fn size(&self) -> PyResult<usize> {
        Ok(self.page()?.size())
    }

    /// The page's epoch in this state.
    #[getter]
    fn epoch(&self) -> PyResult<u64> {
        Ok(self.page()?.epoch())
    }

    /// XXH3-64 of the bytes.
    #[getter]
    fn hash(&self) -> PyResult<u64> {
        Ok(self.page()?.hash())
    }

    /// A copy of the bytes.
    fn read<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, self.page()?.bytes()))
    }

    /// A zero-copy read-only memoryview of the bytes.
    fn view<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyMemoryView>> {
        PyMemoryView::from(slf.as_any())
    }

    /// The metadata, `{key: bytes}`.
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in self.page()?.metadata() {
            d.set_item(k, PyBytes::new(py, v))?;
        }
        Ok(d)
    }

    /// The page size in bytes.
    fn __len__(&self) -> PyResult<usize> {
        self.size()
    }

    /// A one-line description for debugging.
    fn __repr__(&self) -> String {
        format!("<memsys.mmsb.StatePage {}>", self.id.0)
    }

    /// Exports the bytes read-only.
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
        let bytes = slf.get().page()?.bytes();
        let (ptr, len) = (bytes.as_ptr(), bytes.len());
        // SAFETY: `view` is valid (CPython's call, checked non-null); the bytes belong to an
        // `mmsb::State` nothing can change (only `Arc`s of it exist, no `&mut`), kept alive by
        // this object, which the view's `obj` holds.
        unsafe { buffer::fill(view, flags, ptr, len, true, slf.into_any()) };
        Ok(())
    }

    /// Nothing to undo: the state is immutable.
    ///
    /// # Safety
    /// Called by CPython once per successful `__getbuffer__`.
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}
}
