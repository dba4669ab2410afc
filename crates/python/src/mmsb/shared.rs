//! What a bus, its page objects and its buffer exports share: the `Mmsb` behind a mutex, the
//! export count of every page, and the Python recompute functions.
//!
//! # Locks and the GIL
//! - `bus` is only ever locked with the GIL released (inside `py.detach`), so a thread waiting
//!   for it never blocks a thread that needs the GIL (a recompute function) while holding it.
//! - The small maps (`exports`, `funcs`, `data_parents`, `pending`) are locked for a few
//!   instructions at a time, never while waiting for `bus` or the GIL; lock order is always
//!   `bus` then one small map.
//! - A thread that holds `bus` (inside an operation) has `IN_OP` set: a call into the bus from a
//!   recompute function would lock `bus` twice, so it is refused with `MmsbError` instead.
//!
//! # Export rule (the one of CPython's `mmap`)
//! `exports[page]` counts the live buffer exports of `page`'s bytes (from `Page`, and from the
//! parent views a recompute function kept). An operation that would change a page's bytes in
//! place (a write to it, or to a page it is derived from) or free them (`close`) first checks
//! the count of every page it can touch, under the `bus` lock, and raises `BufferError` when one
//! is not zero. New exports are only made under the `bus` lock, so the check cannot race one.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use mmsb::{EdgeKind, Mmsb, PageId};
use pyo3::exceptions::PyBufferError;
use pyo3::prelude::*;

use super::errors::{misuse, to_py};

thread_local! {
    /// True while this thread holds a bus lock (inside an operation).
    static IN_OP: Cell<bool> = const { Cell::new(false) };
}

/// Locks `m`, taking the data of a mutex poisoned by a panic (the bus state is only changed
/// through `mmsb`, which leaves it consistent or poisons itself).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why an operation failed, before it is turned into a Python exception (with the GIL).
#[derive(Debug)]
pub(crate) enum OpError {
    /// The crate's error.
    Mmsb(mmsb::Error),
    /// The export rule refused the operation.
    Buffer(String),
    /// The bus was closed.
    Closed,
    /// Misuse that no `mmsb::Error` names.
    Misuse(String),
}

impl From<mmsb::Error> for OpError {
    fn from(e: mmsb::Error) -> OpError {
        OpError::Mmsb(e)
    }
}

impl OpError {
    pub(crate) fn into_py(self, py: Python<'_>) -> PyErr {
        match self {
            OpError::Mmsb(e) => to_py(py, &e),
            OpError::Buffer(m) => PyBufferError::new_err(m),
            OpError::Closed => misuse("the bus is closed"),
            OpError::Misuse(m) => misuse(m),
        }
    }
}

/// Clears `IN_OP` when the operation ends, also by a panic.
struct InOp;

impl InOp {
    fn enter() -> Result<InOp, OpError> {
        if IN_OP.get() {
            return Err(OpError::Misuse(
                "the bus is in use by this thread: a recompute function cannot call into its bus \
                 (it gets its parents' bytes as arguments)"
                    .into(),
            ));
        }
        IN_OP.set(true);
        Ok(InOp)
    }
}

impl Drop for InOp {
    fn drop(&mut self) {
        IN_OP.set(false);
    }
}

/// State shared by a `Bus`, its `Page` objects, their buffer exports and recompute closures.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The bus; `None` once closed.
    pub(crate) bus: Mutex<Option<Mmsb>>,
    /// Live buffer exports per page id (absent: 0).
    pub(crate) exports: Mutex<HashMap<u64, usize>>,
    /// The Python recompute function of each derived page (the only strong reference to it;
    /// `Bus.__traverse__` visits them).
    pub(crate) funcs: Mutex<HashMap<u64, Py<PyAny>>>,
    /// Data parents of each page in edge order, as `mmsb::Graph::data_parents` has them (the
    /// recompute closure runs while the graph is borrowed by the bus, so it reads this copy).
    pub(crate) data_parents: Mutex<HashMap<u64, Vec<u64>>>,
    /// The first exception a recompute function raised in the running operation.
    pub(crate) pending: Mutex<Option<PyErr>>,
    /// The log directory.
    pub(crate) dir: PathBuf,
    /// Set once `close` took the bus (readable without the bus lock, so with the GIL held).
    /// Informational only (`closed`, `repr`): the bus mutex decides, so `Relaxed` suffices.
    pub(crate) closed: AtomicBool,
}

impl Shared {
    pub(crate) fn new(bus: Mmsb) -> Shared {
        let dir = bus.dir().to_path_buf();
        Shared {
            bus: Mutex::new(Some(bus)),
            exports: Mutex::new(HashMap::new()),
            funcs: Mutex::new(HashMap::new()),
            data_parents: Mutex::new(HashMap::new()),
            pending: Mutex::new(None),
            dir,
            closed: AtomicBool::new(false),
        }
    }

    /// Runs `f` on the bus with the GIL released and the bus locked; then raises the first
    /// exception a recompute function raised during `f`, if any (the operation's own result is
    /// dropped then: what it wrote is logged and committed, see `register_recompute`).
    pub(crate) fn op<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Mmsb) -> Result<T, OpError> + Send,
    ) -> PyResult<T> {
        let (r, pending) = py.detach(|| {
            let _in_op = match InOp::enter() {
                Ok(g) => g,
                Err(e) => return (Err(e), None),
            };
            let mut g = lock(&self.bus);
            // Taken while the bus is still locked, so it is this operation's exception.
            *lock(&self.pending) = None;
            let r = match g.as_mut() {
                Some(bus) => f(bus),
                None => Err(OpError::Closed),
            };
            let pending = lock(&self.pending).take();
            (r, pending)
        });
        if let Some(e) = pending {
            return Err(e);
        }
        r.map_err(|e| e.into_py(py))
    }

    /// Takes the bus out and stops it (commit, fsync, unlock), with the GIL released; refused
    /// while a page has a live export, and from inside an operation. Idempotent.
    pub(crate) fn close(&self, py: Python<'_>) -> PyResult<()> {
        let r = py.detach(|| {
            let _in_op = InOp::enter()?;
            let mut g = lock(&self.bus);
            if g.is_none() {
                return Ok(());
            }
            self.check_closable()?;
            self.closed.store(true, Ordering::Relaxed);
            match g.take() {
                Some(bus) => bus.stop().map_err(OpError::Mmsb),
                None => Ok(()),
            }
        });
        if self.closed.load(Ordering::Relaxed) {
            lock(&self.funcs).clear();
        }
        r.map_err(|e| e.into_py(py))
    }

    /// True once `close` took the bus.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Adds one export of `page`.
    pub(crate) fn export(&self, page: u64) {
        *lock(&self.exports).entry(page).or_insert(0) += 1;
    }

    /// Removes one export of `page`.
    pub(crate) fn unexport(&self, page: u64) {
        let mut ex = lock(&self.exports);
        if let Some(n) = ex.get_mut(&page) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                ex.remove(&page);
            }
        }
    }

    /// The export rule for a write to `roots`: every page whose bytes the write can change
    /// (the roots and every page reachable from them through `Data` edges) must have no live
    /// export.
    pub(crate) fn check_writable(&self, bus: &Mmsb, roots: &[PageId]) -> Result<(), OpError> {
        let ex = lock(&self.exports);
        if ex.is_empty() {
            return Ok(());
        }
        let mut seen: HashSet<PageId> = HashSet::new();
        let mut stack: Vec<(PageId, PageId)> = roots.iter().map(|&r| (r, r)).collect();
        while let Some((p, root)) = stack.pop() {
            if !seen.insert(p) {
                continue;
            }
            if let Some(n) = ex.get(&p.0)
                && *n > 0
            {
                let how = if p == root {
                    String::new()
                } else {
                    format!(" (derived from page {}, which is written)", root.0)
                };
                return Err(OpError::Buffer(format!(
                    "page {} has {n} live buffer export(s){how}: release every memoryview of it \
                     before writing",
                    p.0
                )));
            }
            for &(c, kind) in bus.graph().children(p) {
                if kind == EdgeKind::Data {
                    stack.push((c, root));
                }
            }
        }
        Ok(())
    }

    /// The export rule for `close`: no page may have a live export.
    pub(crate) fn check_closable(&self) -> Result<(), OpError> {
        let ex = lock(&self.exports);
        match ex.iter().find(|(_, n)| **n > 0) {
            None => Ok(()),
            Some((p, n)) => Err(OpError::Buffer(format!(
                "cannot close the bus: page {p} has {n} live buffer export(s); release every \
                 memoryview of its pages first"
            ))),
        }
    }
}
