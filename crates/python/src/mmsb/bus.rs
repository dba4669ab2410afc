//! `Bus` (an `mmsb::Mmsb`), its `Page` objects and `Batch`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mmsb::{Config, Durability, EdgeKind, Mmsb, PageId, ReplayTarget};
use pyo3::PyTraverseError;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyMemoryView};

use super::dicts;
use super::recompute;
use super::shared::{OpError, Shared, lock};
use super::state::State;
use crate::buffer;

/// Parses a durability string: `buffered`, `flush`, `fsync` (every commit), `fsync:N` (every
/// N-th commit), `group` (5 ms) or `group:MS` (milliseconds, may be fractional).
fn parse_durability(s: &str) -> PyResult<Durability> {
    let bad = || {
        PyValueError::new_err(format!(
            "unknown durability {s:?} (buffered, flush, fsync, fsync:N, group, group:MS)"
        ))
    };
    match s.split_once(':') {
        None => match s {
            "buffered" => Ok(Durability::Buffered),
            "flush" => Ok(Durability::Flush),
            "fsync" => Ok(Durability::FsyncEvery(1)),
            "group" => Ok(Durability::GroupCommit(Duration::from_millis(5))),
            _ => Err(bad()),
        },
        Some(("fsync", n)) => n
            .trim()
            .parse::<u32>()
            .map(Durability::FsyncEvery)
            .map_err(|_| bad()),
        Some(("group", ms)) => match ms.trim().parse::<f64>() {
            Ok(m) if m.is_finite() && m >= 0.0 => Ok(Durability::GroupCommit(
                Duration::try_from_secs_f64(m / 1000.0).map_err(|_| bad())?,
            )),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// The string form of a durability (what `parse_durability` reads back).
pub(crate) fn durability_name(d: Durability) -> String {
    match d {
        Durability::Buffered => "buffered".into(),
        Durability::Flush => "flush".into(),
        Durability::FsyncEvery(n) => format!("fsync:{n}"),
        Durability::GroupCommit(t) => format!("group:{}", t.as_secs_f64() * 1000.0),
    }
}

fn parse_edge(kind: &str) -> PyResult<EdgeKind> {
    match kind {
        "data" => Ok(EdgeKind::Data),
        "control" => Ok(EdgeKind::Control),
        _ => Err(PyValueError::new_err(format!(
            "unknown dependency kind {kind:?} (data, control)"
        ))),
    }
}

/// A page id from a `Page` or an `int`.
pub(crate) fn page_id(obj: &Bound<'_, PyAny>) -> PyResult<PageId> {
    if let Ok(p) = obj.cast::<Page>() {
        return Ok(p.get().id);
    }
    match obj.extract::<u64>() {
        Ok(id) => Ok(PageId(id)),
        Err(_) => Err(PyTypeError::new_err("a page is a Page or an int page id")),
    }
}

/// The bytes of any object exporting a buffer of bytes, copied (the GIL is released while the
/// bus works on them).
pub(crate) fn bytes_of(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    let buf = pyo3::buffer::PyBuffer::<u8>::get(obj)?;
    buf.to_vec(obj.py())
}

/// A replay target from `replay_to`'s keyword arguments (at most one of them, `epoch` with
/// `page`).
pub(crate) fn target(
    lsn: Option<u64>,
    page: Option<&Bound<'_, PyAny>>,
    epoch: Option<u64>,
    time: Option<f64>,
    time_ns: Option<u64>,
) -> PyResult<ReplayTarget> {
    let given = usize::from(lsn.is_some())
        + usize::from(epoch.is_some())
        + usize::from(time.is_some())
        + usize::from(time_ns.is_some());
    if given > 1 {
        return Err(PyValueError::new_err(
            "give one replay target: lsn=, epoch= (with page=), time= or time_ns=",
        ));
    }
    if page.is_some() != epoch.is_some() {
        return Err(PyValueError::new_err("epoch= and page= go together"));
    }
    if let Some(l) = lsn {
        return Ok(ReplayTarget::Lsn(mmsb::Lsn(l)));
    }
    if let (Some(p), Some(e)) = (page, epoch) {
        return Ok(ReplayTarget::PageEpoch(page_id(p)?, e));
    }
    if let Some(t) = time {
        if !t.is_finite() || t < 0.0 {
            return Err(PyValueError::new_err(
                "time= is seconds since the Unix epoch, >= 0",
            ));
        }
        // Saturating float-to-int conversion: a time past year 2554 is "the end".
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let ns = (t * 1e9) as u64;
        return Ok(ReplayTarget::Timestamp(ns));
    }
    if let Some(t) = time_ns {
        return Ok(ReplayTarget::Timestamp(t));
    }
    Ok(ReplayTarget::End)
}

/// A live MMSB bus: pages changed only by deltas, a write-ahead log, dependencies,
/// checkpoints and replay. Open with `Bus.start(dir)`; close with `close()` or a `with` block.
///
/// Every method releases the GIL while the bus works (log appends, fsync, replay), and takes it
/// back only to run a Python recompute function. One thread at a time uses the bus (others
/// wait, without the GIL).
#[pyclass(module = "memsys.mmsb", frozen, name = "Bus")]
pub(crate) struct Bus {
    pub(crate) shared: Arc<Shared>,
    /// What `start` found (recovery of the log, checkpoint restored from).
    start_report: Py<PyDict>,
    /// The durability the bus was started with.
    durability: Durability,
}

impl Bus {
    fn page_obj(&self, py: Python<'_>, id: PageId, size: usize) -> PyResult<Py<Page>> {
        Py::new(
            py,
            Page {
                shared: Arc::clone(&self.shared),
                id,
                size,
            },
        )
    }
}

#[pymethods]
impl Bus {
    /// Opens (or creates) the log in `dir`, recovers it and restores the state (newest usable
    /// checkpoint plus the committed log after it). Dependencies and recompute functions are
    /// code, not data: register them again after a restart.
    ///
    /// `durability`: `"buffered"`, `"flush"` (default), `"fsync"`, `"fsync:N"`, `"group"` or
    /// `"group:MS"`. `lock_timeout` in seconds.
    #[staticmethod]
    #[pyo3(signature = (dir, durability = "flush", *, segment_bytes = None, buffer_bytes = None,
        lock_timeout = 1.0, create = true, timings = true, prune_after_checkpoint = false))]
    #[allow(clippy::too_many_arguments)]
    fn start(
        py: Python<'_>,
        dir: PathBuf,
        durability: &str,
        segment_bytes: Option<u64>,
        buffer_bytes: Option<usize>,
        lock_timeout: f64,
        create: bool,
        timings: bool,
        prune_after_checkpoint: bool,
    ) -> PyResult<Bus> {
        let durability = parse_durability(durability)?;
        let mut config = Config::new(dir).durability(durability);
        if let Some(n) = segment_bytes {
            config.segment_bytes = n;
        }
        if let Some(n) = buffer_bytes {
            config.buffer_bytes = n;
        }
        config.lock_timeout = Duration::try_from_secs_f64(lock_timeout)
            .map_err(|_| PyValueError::new_err("lock_timeout is seconds, >= 0"))?;
        config.create = create;
        config.timings = timings;
        config.prune_after_checkpoint = prune_after_checkpoint;
        let started = py.detach(|| Mmsb::start_reporting(config));
        let (bus, report) = started.map_err(super::errors::err(py))?;
        let start_report = dicts::start_report(py, &report)?;
        Ok(Bus {
            shared: Arc::new(Shared::new(bus)),
            start_report,
            durability,
        })
    }

    /// What `start` found: `{"last_lsn", "segments", "frames", "truncated" (dict or None),
    /// "checkpoint_lsn" (int or None), "skipped_checkpoints" ([(path, message)]), "pages"}`.
    #[getter]
    fn start_report(&self, py: Python<'_>) -> Py<PyDict> {
        self.start_report.clone_ref(py)
    }

    /// The durability, in the form `start` takes (`"flush"`, `"fsync:1"`, `"group:5"`, ...).
    #[getter]
    fn durability(&self) -> String {
        durability_name(self.durability)
    }

    /// The log directory.
    #[getter]
    fn dir(&self) -> PathBuf {
        self.shared.dir.clone()
    }

    /// True once `close()` ran.
    #[getter]
    fn closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// LSN of the last frame written.
    #[getter]
    fn last_lsn(&self, py: Python<'_>) -> PyResult<u64> {
        self.shared.op(py, |b| Ok(b.state().last_lsn().0))
    }

    /// Creates a zeroed page of `size` bytes (epoch 0), logged before it exists.
    fn create_page(&self, py: Python<'_>, size: usize) -> PyResult<Py<Page>> {
        let id = self.shared.op(py, |b| Ok(b.create_page(size)?))?;
        self.page_obj(py, id, size)
    }

    /// The page with id `id`.
    fn page(&self, py: Python<'_>, id: u64) -> PyResult<Py<Page>> {
        let id = PageId(id);
        let size = self.shared.op(py, |b| Ok(b.query_page(id)?.size()))?;
        self.page_obj(py, id, size)
    }

    /// Every page, in id order.
    fn pages(&self, py: Python<'_>) -> PyResult<Vec<Py<Page>>> {
        let all = self.shared.op(py, |b| {
            Ok(b.state()
                .pages()
                .map(|p| (p.id(), p.size()))
                .collect::<Vec<_>>())
        })?;
        all.into_iter()
            .map(|(id, size)| self.page_obj(py, id, size))
            .collect()
    }

    /// Adds the dependency `parent -> child` (pages or ids). `kind="data"`: the child's recompute
    /// function reads the parent; `"control"`: a change of the parent marks the child stale.
    #[pyo3(signature = (parent, child, kind = "data"))]
    fn add_dependency(
        &self,
        py: Python<'_>,
        parent: &Bound<'_, PyAny>,
        child: &Bound<'_, PyAny>,
        kind: &str,
    ) -> PyResult<()> {
        let (parent, child, kind) = (page_id(parent)?, page_id(child)?, parse_edge(kind)?);
        let shared = Arc::clone(&self.shared);
        self.shared.op(py, move |b| {
            b.add_dependency(parent, child, kind)?;
            // Mirror of `Graph::data_parents` (same order; a repeated edge is a no-op there).
            let parents = b.graph().data_parents(child).iter().map(|p| p.0).collect();
            lock(&shared.data_parents).insert(child.0, parents);
            Ok(())
        })
    }

    /// Makes `page` derived: after every commit that changes one of its data parents, the bus
    /// calls `fn(parents)` with the GIL held, where `parents` is a list of read-only
    /// memoryviews of the data parents' bytes in edge order (valid during the call; keeping a
    /// view derived from them pins those pages as `Page` views do). `fn` returns a bytes-like
    /// object of at most the page's size (it overwrites the start of the page; the rest is
    /// kept) or None (no change). An exception raised by `fn` is re-raised by the call that
    /// triggered the recompute; that call's writes are already logged and committed, and the
    /// derived page keeps its previous bytes (call `recompute_now` to retry). Writing a derived
    /// page directly raises `DerivedError`.
    #[pyo3(signature = (page, r#fn))]
    fn register_recompute(
        &self,
        py: Python<'_>,
        page: &Bound<'_, PyAny>,
        r#fn: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        if !r#fn.is_callable() {
            return Err(PyTypeError::new_err("fn must be callable"));
        }
        let id = page_id(page)?;
        let closure = recompute::closure(&self.shared, id);
        let shared = Arc::clone(&self.shared);
        let func = r#fn.unbind();
        self.shared.op(py, move |b| {
            b.register_recompute(id, closure)?;
            lock(&shared.funcs).insert(id.0, func);
            Ok(())
        })
    }

    /// Recomputes `pages` (and what depends on them) in one wave and commits; returns the
    /// number of deltas written. Use after registering a function or a restart.
    fn recompute_now(&self, py: Python<'_>, pages: Vec<Bound<'_, PyAny>>) -> PyResult<usize> {
        let ids = pages.iter().map(page_id).collect::<PyResult<Vec<_>>>()?;
        let shared = Arc::clone(&self.shared);
        self.shared.op(py, move |b| {
            shared.check_writable(b, &ids)?;
            Ok(b.recompute_now(&ids)?)
        })
    }

    /// A new batch: use it as a context manager (`with bus.batch() as b: b.write_range(...)`).
    /// Its writes are kept aside and applied, as one commit with one propagation wave, when
    /// the block ends normally; an exception in the block discards them (nothing is applied
    /// or logged).
    fn batch(&self) -> Batch {
        Batch {
            shared: Arc::clone(&self.shared),
            ops: Vec::new(),
            done: false,
            commit: None,
        }
    }

    /// Writes a checkpoint of every page at the current LSN (after syncing the log): returns
    /// `{"path", "lsn", "pages", "bytes"}`.
    fn checkpoint(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        let info = self.shared.op(py, |b| Ok(b.checkpoint()?))?;
        dicts::checkpoint(py, &info)
    }

    /// Writes buffered log frames to the file (not fsynced), so readers see them.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        self.shared.op(py, |b| Ok(b.flush()?))
    }

    /// Writes and fsyncs the log.
    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        self.shared.op(py, |b| Ok(b.sync()?))
    }

    /// Replays this bus's log into a detached `State` (the live state is untouched): to
    /// `lsn=` (every frame with LSN <= it), to `epoch=` of `page=` (up to the frame that brings
    /// the page to that epoch), to `time=` (float seconds since the Unix epoch) or `time_ns=`
    /// (every frame with a timestamp <= it), or to the end.
    #[pyo3(signature = (*, lsn = None, page = None, epoch = None, time = None, time_ns = None))]
    fn replay_to(
        &self,
        py: Python<'_>,
        lsn: Option<u64>,
        page: Option<&Bound<'_, PyAny>>,
        epoch: Option<u64>,
        time: Option<f64>,
        time_ns: Option<u64>,
    ) -> PyResult<State> {
        let t = target(lsn, page, epoch, time, time_ns)?;
        let s = self.shared.op(py, move |b| Ok(b.replay_to(t)?))?;
        Ok(State::new(s))
    }

    /// Replays the whole log and checks every page's epoch and bytes against the live ones.
    fn verify_consistency(&self, py: Python<'_>) -> PyResult<()> {
        self.shared.op(py, |b| Ok(b.verify_consistency()?))
    }

    /// Counters, graph shape and latency percentiles: a dict of ints, with `delta_apply`,
    /// `log_append` and `propagation` each `{"count", "p50_ns", "p99_ns", "p999_ns",
    /// "max_ns", "sum_ns"}`. `durable_lsn` is at most `last_lsn` (equal after `sync()`);
    /// `log_write_errors`, `recovery_truncated_frames` and `recovery_truncated_bytes` are 0 for
    /// a healthy bus that started from a clean log.
    fn stats(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        let s = self.shared.op(py, |b| Ok(b.stats()))?;
        dicts::stats(py, &s)
    }

    /// Commits nothing more: syncs the log, releases the directory lock and frees the pages.
    /// Raises `BufferError` while a view of a page is alive. Closing twice does nothing.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.shared.close(py)
    }

    /// `with Bus.start(...) as bus:` closes the bus at the end of the block.
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Closes the bus (an exception in the block propagates).
    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    /// A one-line description for debugging.
    fn __repr__(&self) -> String {
        let state = if self.shared.is_closed() {
            "closed"
        } else {
            "open"
        };
        format!("<memsys.mmsb.Bus {} ({state})>", self.shared.dir.display())
    }

    /// Lets the cycle collector see the recompute functions (a function that refers to its bus
    /// makes a cycle through Rust).
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // Never block in the collector: a locked map is skipped this round.
        if let Ok(funcs) = self.shared.funcs.try_lock() {
            for f in funcs.values() {
                visit.call(f)?;
            }
        }
        Ok(())
    }

    /// Breaks such a cycle: drops the recompute functions.
    fn __clear__(&self) {
        if let Ok(mut funcs) = self.shared.funcs.try_lock() {
            funcs.clear();
        }
    }
}

/// A page of a live bus: `size` bytes, an epoch, metadata. Reads return the current bytes;
/// `memoryview(page)` (or `page.view()`) is a zero-copy read-only view of them, and while one
/// is alive every write that would change the page raises `BufferError` (as `mmap` does for
/// resize), so a view never sees bytes change or go away.
#[pyclass(module = "memsys.mmsb", frozen, name = "Page")]
pub(crate) struct Page {
    shared: Arc<Shared>,
    id: PageId,
    size: usize,
}

#[pymethods]
impl Page {
    /// The page id (ids start at 1 and are never reused).
    #[getter]
    fn id(&self) -> u64 {
        self.id.0
    }

    /// Size in bytes, fixed at creation.
    #[getter]
    fn size(&self) -> usize {
        self.size
    }

    /// Number of deltas applied to the page (0 when new).
    #[getter]
    fn epoch(&self, py: Python<'_>) -> PyResult<u64> {
        let id = self.id;
        self.shared.op(py, move |b| Ok(b.query_page(id)?.epoch()))
    }

    /// True when a control parent changed since the page was last written.
    #[getter]
    fn stale(&self, py: Python<'_>) -> PyResult<bool> {
        let id = self.id;
        self.shared
            .op(py, move |b| Ok(b.query_page(id)?.is_stale()))
    }

    /// XXH3-64 of the bytes.
    #[getter]
    fn hash(&self, py: Python<'_>) -> PyResult<u64> {
        let id = self.id;
        self.shared.op(py, move |b| Ok(b.query_page(id)?.hash()))
    }

    /// A copy of the page's bytes.
    fn read<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let id = self.id;
        let v = self
            .shared
            .op(py, move |b| Ok(b.query_page(id)?.bytes().to_vec()))?;
        Ok(PyBytes::new(py, &v))
    }

    /// A zero-copy, read-only memoryview of the page's bytes (`memoryview(page)`).
    fn view<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyMemoryView>> {
        PyMemoryView::from(slf.as_any())
    }

    /// The page's metadata, `{key: bytes}`.
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let id = self.id;
        let m = self.shared.op(py, move |b| {
            Ok(b.query_page(id)?
                .metadata()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Vec<_>>())
        })?;
        let d = PyDict::new(py);
        for (k, v) in m {
            d.set_item(k, PyBytes::new(py, &v))?;
        }
        Ok(d)
    }

    /// Sets (`value` bytes-like) or removes (`None`) a metadata key, logged; returns the LSN.
    fn set_metadata(
        &self,
        py: Python<'_>,
        key: String,
        value: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let value = value.map(bytes_of).transpose()?;
        let id = self.id;
        self.shared.op(py, move |b| {
            Ok(b.set_metadata(id, &key, value.as_deref())?.0)
        })
    }

    /// Writes `data` (bytes-like) at `offset`; only the bytes that differ go into the delta.
    /// Returns the delta's LSN, or None when nothing changed. Propagates and commits. Raises
    /// `BufferError` while a view of this page, or of a page derived from it, is alive.
    fn write_range(
        &self,
        py: Python<'_>,
        offset: usize,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<Option<u64>> {
        let data = bytes_of(data)?;
        let id = self.id;
        let shared = Arc::clone(&self.shared);
        self.shared.op(py, move |b| {
            shared.check_writable(b, &[id])?;
            Ok(b.write_range(id, offset, &data)?.map(|l| l.0))
        })
    }

    /// Replaces the whole page with `data` (exactly `size` bytes, else `SizeMismatchError`).
    /// Returns the delta's LSN, or None when nothing changed. Same view rule as `write_range`.
    fn update(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
        let data = bytes_of(data)?;
        let id = self.id;
        let shared = Arc::clone(&self.shared);
        self.shared.op(py, move |b| {
            shared.check_writable(b, &[id])?;
            Ok(b.update_page(id, &data)?.map(|l| l.0))
        })
    }

    /// The page size in bytes.
    fn __len__(&self) -> usize {
        self.size
    }

    /// A one-line description for debugging.
    fn __repr__(&self) -> String {
        format!("<memsys.mmsb.Page {} ({} bytes)>", self.id.0, self.size)
    }

    /// Exports the page's bytes read-only and counts the export (see the class doc).
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
        let id = me.id;
        let shared = Arc::clone(&me.shared);
        // The pointer and the new export are taken under the bus lock, so no write can run in
        // between (writes check the count under the same lock).
        let (ptr, len) = me.shared.op(slf.py(), move |b| {
            let page = b.query_page(id)?;
            let bytes = page.bytes();
            shared.export(id.0);
            Ok((bytes.as_ptr() as usize, bytes.len()))
        })?;
        // SAFETY: `view` is valid (CPython's call, checked non-null). The bytes are the page's
        // boxed slice in the bus's state: it is never reallocated, it is only changed by
        // writes to this page or its parents and freed by `close` or dropping the `Shared`,
        // and all of those are refused (BufferError) until `__releasebuffer__` removes the
        // export counted above; the view's `obj` (this page) keeps the `Shared` alive.
        unsafe { buffer::fill(view, flags, ptr as *const u8, len, true, slf.into_any()) };
        Ok(())
    }

    /// Removes the export counted by `__getbuffer__`.
    ///
    /// # Safety
    /// Called by CPython once per successful `__getbuffer__`.
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        self.shared.unexport(self.id.0);
    }
}

/// One write kept by a batch until it commits.
#[derive(Debug)]
enum BatchOp {
    WriteRange(PageId, usize, Vec<u8>),
    Update(PageId, Vec<u8>),
}

impl BatchOp {
    fn page(&self) -> PageId {
        match self {
            BatchOp::WriteRange(p, ..) | BatchOp::Update(p, _) => *p,
        }
    }
}

/// Checks every write of a batch against the bus before any is applied, so that a batch either
/// applies entirely or not at all: the page exists, is not derived, and the write fits.
fn validate(shared: &Shared, b: &Mmsb, ops: &[BatchOp]) -> Result<(), OpError> {
    let derived = lock(&shared.funcs).keys().copied().collect::<Vec<_>>();
    for op in ops {
        let id = op.page();
        let page = b.query_page(id)?;
        if derived.contains(&id.0) {
            return Err(mmsb::Error::Derived(id).into());
        }
        let size = page.size();
        match op {
            BatchOp::WriteRange(_, offset, data) => {
                let end = offset.saturating_add(data.len());
                if end > size {
                    return Err(mmsb::Error::OutOfBounds {
                        page: id,
                        offset: *offset,
                        end,
                        size,
                    }
                    .into());
                }
            }
            BatchOp::Update(_, data) => {
                if data.len() != size {
                    return Err(mmsb::Error::SizeMismatch {
                        page: id,
                        expected: size,
                        found: data.len(),
                    }
                    .into());
                }
            }
        }
    }
    let mut roots: Vec<PageId> = ops.iter().map(BatchOp::page).collect();
    roots.sort_unstable();
    roots.dedup();
    shared.check_writable(b, &roots)
}

/// A batch of writes applied as one commit (one propagation wave). As a context manager it
/// commits when the block ends normally and discards its writes when the block raises. Writes
/// are kept aside until then: reads inside the block see the bus as it was before the batch.
#[pyclass(module = "memsys.mmsb", name = "Batch")]
pub(crate) struct Batch {
    shared: Arc<Shared>,
    ops: Vec<BatchOp>,
    done: bool,
    commit: Option<mmsb::Commit>,
}

impl Batch {
    fn open(&self) -> PyResult<()> {
        if self.done {
            return Err(super::errors::misuse(
                "the batch is already committed or aborted",
            ));
        }
        Ok(())
    }
}

#[pymethods]
impl Batch {
    /// Adds a `write_range(page, offset, data)` to the batch.
    fn write_range(
        &mut self,
        page: &Bound<'_, PyAny>,
        offset: usize,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.open()?;
        self.ops
            .push(BatchOp::WriteRange(page_id(page)?, offset, bytes_of(data)?));
        Ok(())
    }

    /// Adds an `update(page, data)` (the whole page) to the batch.
    fn update(&mut self, page: &Bound<'_, PyAny>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        self.open()?;
        self.ops
            .push(BatchOp::Update(page_id(page)?, bytes_of(data)?));
        Ok(())
    }

    /// Number of writes kept.
    fn __len__(&self) -> usize {
        self.ops.len()
    }

    /// Applies the writes as one commit: every write is checked first (page, size, bounds,
    /// views), so on error nothing is applied. Returns `{"lsn", "deltas", "propagated"}`.
    fn commit(&mut self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        self.open()?;
        self.done = true;
        let ops = std::mem::take(&mut self.ops);
        let shared = Arc::clone(&self.shared);
        let c = self.shared.op(py, move |b| {
            validate(&shared, b, &ops)?;
            b.begin_batch()?;
            for op in &ops {
                let r = match op {
                    BatchOp::WriteRange(p, off, data) => b.write_range(*p, *off, data),
                    BatchOp::Update(p, data) => b.update_page(*p, data),
                };
                // Only a log write can fail here (validated above), and that poisons the bus.
                r?;
            }
            Ok(b.commit()?)
        })?;
        self.commit = Some(c);
        dicts::commit(py, &c)
    }

    /// Discards the writes (nothing is applied).
    fn abort(&mut self) {
        self.ops.clear();
        self.done = true;
    }

    /// What `commit` did (`{"lsn", "deltas", "propagated"}`), or None before it.
    #[getter]
    fn result(&self, py: Python<'_>) -> PyResult<Option<Py<PyDict>>> {
        self.commit
            .as_ref()
            .map(|c| dicts::commit(py, c))
            .transpose()
    }

    /// `with bus.batch() as b:` commits at the end of the block, or discards on an exception.
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Commits when the block ended normally, discards the writes when it raised; never
    /// swallows the exception.
    fn __exit__(
        &mut self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if self.done {
            return Ok(false);
        }
        match exc_type {
            Some(t) if !t.is_none() => self.abort(),
            _ => {
                self.commit(py)?;
            }
        }
        Ok(false)
    }
}
