//! Slots as Python objects that export their memory through the buffer protocol.

use std::ffi::c_int;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use pyo3::exceptions::{PyBufferError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;

use datahub::{ReadGuard, WriteGuard};

use crate::buffer;

use super::consumer::PyConsumer;
use super::errors;
use super::producer::PyProducer;

fn views_alive(n: usize, what: &str) -> PyErr {
    PyBufferError::new_err(format!(
        "cannot {what} the slot: {n} exported view(s) of it are alive (release them: memoryview.release(), del the numpy array)"
    ))
}

/// A slot guard held by a Python slot object, with the count of buffers exported from it:
/// the one place that decides when the slot's memory may be handed out and when it may be
/// given back.
struct Held<G> {
    /// `None` once finished (committed, aborted, released).
    guard: Mutex<Option<G>>,
    /// Live buffer exports (`__getbuffer__` minus `__releasebuffer__`).
    exports: AtomicUsize,
    /// How a finished slot is described in errors ("committed or aborted", "released").
    gone: &'static str,
}

impl<G> Held<G> {
    fn new(guard: G, gone: &'static str) -> Held<G> {
        Held {
            guard: Mutex::new(Some(guard)),
            exports: AtomicUsize::new(0),
            gone,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<G>> {
        // No code panics while holding it; recover from poisoning anyway.
        self.guard.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_finished(&self) -> bool {
        self.lock().is_none()
    }

    /// `f` on the guard; SlotInUse once finished.
    fn with<R>(&self, f: impl FnOnce(&G) -> R) -> PyResult<R> {
        match self.lock().as_ref() {
            Some(g) => Ok(f(g)),
            None => Err(errors::slot_in_use(&format!(
                "the slot was {} already",
                self.gone
            ))),
        }
    }

    /// Takes the guard to finish the slot (`what`: "commit", "abort", "release"):
    /// `BufferError` while views are alive, SlotInUse once finished.
    fn take(&self, what: &str) -> PyResult<G> {
        let mut g = self.lock();
        let n = self.exports.load(Ordering::Acquire);
        if n > 0 {
            return Err(views_alive(n, what));
        }
        g.take()
            .ok_or_else(|| errors::slot_in_use(&format!("the slot was {} already", self.gone)))
    }

    /// The guard of a slot object being freed (no view can be alive: each holds a reference).
    fn take_for_drop(&mut self) -> Option<G> {
        self.guard
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Exports the region `region` gives of the guard into `view`, owned by `owner`.
    ///
    /// # Safety
    /// `view` is the pointer CPython passed to `bf_getbuffer`; the region stays valid and
    /// unmoved while the guard is held, and nothing else writes it (for a read-only export)
    /// or reads it (for a writable one) meanwhile: what the slot protocol gives a guard.
    unsafe fn export(
        &self,
        owner: Bound<'_, PyAny>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
        readonly: bool,
        region: impl FnOnce(&mut G) -> (*mut u8, usize),
    ) -> PyResult<()> {
        let mut g = self.lock();
        let Some(guard) = g.as_mut() else {
            return Err(PyBufferError::new_err(format!(
                "the slot was {}: its memory is no longer this slot's",
                self.gone
            )));
        };
        buffer::check_request(view, flags, readonly.then_some("a read slot is read-only"))?;
        let (buf, len) = region(guard);
        self.exports.fetch_add(1, Ordering::AcqRel);
        // SAFETY: the guard (and so the region) lives until `take`, which refuses while
        // `exports` > 0; the view holds a reference to `owner`, which owns this; the caller's
        // contract covers `view` and the region.
        unsafe { buffer::fill(view, flags, buf, len, readonly, owner) };
        Ok(())
    }

    /// One export ended.
    fn release_export(&self) {
        self.exports.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A claimed slot of a producer (`Producer.write`). Exports the slot's whole payload area
/// (`size` bytes, writable) through the buffer protocol.
///
/// As a context manager: leaving the block normally commits the whole slot unless `commit(n)`
/// ran inside it; an exception aborts the write. A slot never finished is aborted when the
/// object is freed.
#[pyclass(module = "memsys.datahub", frozen)]
pub(crate) struct WriteSlot {
    held: Held<WriteGuard<'static>>,
    /// Keeps the producer (which the guard borrows) alive.
    owner: Py<PyProducer>,
    seq: u64,
    size: usize,
}

impl WriteSlot {
    /// A slot around `guard`, which borrows `owner`'s lent producer.
    pub(crate) fn new(guard: WriteGuard<'static>, owner: Py<PyProducer>) -> WriteSlot {
        WriteSlot {
            seq: guard.seq(),
            size: guard.len(),
            held: Held::new(guard, "committed or aborted"),
            owner,
        }
    }

    /// Finishes the slot with `f` (commit or abort) and ends the producer's lending.
    fn finish<R>(
        &self,
        what: &str,
        f: impl FnOnce(WriteGuard<'static>) -> Result<R, datahub::Error>,
    ) -> PyResult<R> {
        let g = self.held.take(what)?;
        let r = f(g);
        self.owner.get().lendable().give_back();
        r.map_err(errors::to_py)
    }
}

impl Drop for WriteSlot {
    fn drop(&mut self) {
        if let Some(g) = self.held.take_for_drop() {
            // Dropping the guard aborts the write; then the producer is usable again.
            drop(g);
            self.owner.get().lendable().give_back();
        }
    }
}

#[pymethods]
impl WriteSlot {
    /// Sequence number the message will have.
    #[getter]
    fn seq(&self) -> u64 {
        self.seq
    }

    /// The slot's size in bytes (the most `commit` can publish).
    #[getter]
    fn size(&self) -> usize {
        self.size
    }

    /// Whether the slot was committed or aborted.
    #[getter]
    fn finished(&self) -> bool {
        self.held.is_finished()
    }

    fn __len__(&self) -> usize {
        self.size
    }

    /// The slot's address in this process (an int; for checking that a view is the slot
    /// itself, for example against `numpy.ndarray.ctypes.data`). Raises SlotInUse once
    /// finished.
    #[getter]
    fn address(&self) -> PyResult<usize> {
        self.held.with(|g| g.as_ptr() as usize)
    }

    /// Publishes the first `n` bytes (default: the whole slot) and returns the sequence number.
    ///
    /// Raises: BufferError while a view of the slot is alive; PayloadTooLarge if `n` exceeds
    /// the slot (the write is then aborted); SlotInUse if already finished.
    #[pyo3(signature = (n = None))]
    fn commit(&self, n: Option<usize>) -> PyResult<u64> {
        let n = n.unwrap_or(self.size);
        self.finish("commit", |g| g.commit(n))
    }

    /// Manual checksums: computes and stores the checksum of the first `n` bytes, then commits
    /// them. Raises as `commit`.
    fn commit_with_checksum(&self, n: usize) -> PyResult<u64> {
        self.finish("commit", |g| g.commit_with_checksum(n))
    }

    /// Gives the slot back unpublished (the sequence number is reused).
    ///
    /// Raises: BufferError while a view is alive; SlotInUse if already finished.
    fn abort(&self) -> PyResult<()> {
        self.finish("abort", |g| {
            g.abort();
            Ok(())
        })
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Commits the whole slot (no exception, not finished yet) or aborts it (exception).
    fn __exit__(
        &self,
        exc_type: Option<Bound<'_, PyAny>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if self.finished() {
            return Ok(false);
        }
        if exc_type.is_some() {
            self.abort()?;
        } else {
            self.commit(None)?;
        }
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "<WriteSlot seq={} size={} {}>",
            self.seq,
            self.size,
            if self.finished() { "finished" } else { "open" }
        )
    }

    /// # Safety
    /// Called by CPython with a valid `view`.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let owner = slf.clone().into_any();
        // SAFETY: the slot is in WRITING state and owned by this guard: only this producer
        // writes it and no reader enters it until the commit, which waits for the exports.
        unsafe {
            slf.get()
                .held
                .export(owner, view, flags, false, |g| (g.as_mut_ptr(), g.len()))
        }
    }

    /// # Safety
    /// Called by CPython once for each successful `__getbuffer__`.
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        self.held.release_export();
    }
}

/// A message being read (`Consumer.read`). Exports the message's bytes (`len(slot)` of them,
/// read-only) through the buffer protocol; `bytes(slot)` copies them.
///
/// As a context manager, leaving the block releases the slot (the producer may then reuse
/// it). A slot never released is released when the object is freed.
#[pyclass(module = "memsys.datahub", frozen)]
pub(crate) struct ReadSlot {
    held: Held<ReadGuard<'static>>,
    /// Keeps the consumer (which the guard borrows) alive.
    owner: Py<PyConsumer>,
    seq: u64,
    len: usize,
}

impl ReadSlot {
    /// A slot around `guard`, which borrows `owner`'s lent consumer.
    pub(crate) fn new(guard: ReadGuard<'static>, owner: Py<PyConsumer>) -> ReadSlot {
        ReadSlot {
            seq: guard.seq(),
            len: guard.len(),
            held: Held::new(guard, "released"),
            owner,
        }
    }

    /// Whether the slot was released.
    pub(crate) fn is_released(&self) -> bool {
        self.held.is_finished()
    }
}

impl Drop for ReadSlot {
    fn drop(&mut self) {
        if let Some(g) = self.held.take_for_drop() {
            // Dropping the guard releases the slot; then the consumer is usable again.
            drop(g);
            self.owner.get().lendable().give_back();
        }
    }
}

#[pymethods]
impl ReadSlot {
    /// The message's sequence number.
    #[getter]
    fn seq(&self) -> u64 {
        self.seq
    }

    /// Whether the slot was released.
    #[getter]
    fn released(&self) -> bool {
        self.is_released()
    }

    fn __len__(&self) -> usize {
        self.len
    }

    /// The message's address in this process (an int). Raises SlotInUse once released.
    #[getter]
    fn address(&self) -> PyResult<usize> {
        self.held.with(|g| g.as_ptr() as usize)
    }

    /// Checks the message against its stored checksum (Manual checksums; Enforced blocks are
    /// checked on read).
    ///
    /// Raises: ChecksumMismatch, ChecksumMissing; SlotInUse once released.
    fn verify_checksum(&self) -> PyResult<()> {
        self.held
            .with(|g| g.verify_checksum())?
            .map_err(errors::to_py)
    }

    /// Gives the slot back to the producer.
    ///
    /// Raises: BufferError while a view is alive; ValidationFailed or Overrun if the message
    /// was overwritten while it was read (Latest policy, or an evicted lossless reader);
    /// SlotInUse if already released.
    pub(crate) fn release(&self) -> PyResult<()> {
        let g = self.held.take("release")?;
        let r = g.release();
        self.owner.get().lendable().give_back();
        r.map_err(errors::to_py)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        _exc_type: Option<Bound<'_, PyAny>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if !self.is_released() {
            self.release()?;
        }
        Ok(false)
    }

    /// A copy of the message. Raises ValueError once released.
    fn bytes(&self) -> PyResult<Vec<u8>> {
        self.held
            .with(|g| g.to_vec())
            .map_err(|_| PyValueError::new_err("the slot was released"))
    }

    fn __repr__(&self) -> String {
        format!(
            "<ReadSlot seq={} len={} {}>",
            self.seq,
            self.len,
            if self.is_released() {
                "released"
            } else {
                "open"
            }
        )
    }

    /// # Safety
    /// Called by CPython with a valid `view`.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let owner = slf.clone().into_any();
        // SAFETY: the message stays held (this consumer's reader bit set) until the guard is
        // released, so the producer does not write it; the export is read-only.
        unsafe {
            slf.get().held.export(owner, view, flags, true, |g| {
                (g.as_ptr().cast_mut(), g.len())
            })
        }
    }

    /// # Safety
    /// Called by CPython once for each successful `__getbuffer__`.
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        self.held.release_export();
    }
}
