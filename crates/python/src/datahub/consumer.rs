//! `memsys.datahub.Consumer` and its slot iterator.

use std::time::Duration;

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;

use datahub::{Consumer, Expectations, ReadGuard};

use super::broker::PyBroker;
use super::lend::Lendable;
use super::schema::PySchema;
use super::slot::ReadSlot;
use super::{errors, finish, to_python, wait, wait_until_ready};

/// A consumer of a DataHub block. Made by `Consumer.attach`, `Consumer.attach_secure` or
/// `Consumer.discover`; detaches when freed, on `close()` or at the end of a `with` block.
#[pyclass(module = "memsys.datahub", name = "Consumer", frozen)]
pub(crate) struct PyConsumer {
    inner: Lendable<Consumer>,
    name: String,
    /// The broker client of a discovered consumer: it heartbeats the registration.
    _broker: Option<Py<PyBroker>>,
}

impl PyConsumer {
    pub(crate) fn lendable(&self) -> &Lendable<Consumer> {
        &self.inner
    }

    fn wrap(c: Consumer, broker: Option<Py<PyBroker>>) -> PyConsumer {
        PyConsumer {
            name: c.name().to_owned(),
            inner: Lendable::new(c, "consumer"),
            _broker: broker,
        }
    }

    /// Reads the next message into a slot object, waiting up to `t` (`None`: no limit).
    fn read_slot(slf: &Bound<'_, Self>, t: Option<std::time::Duration>) -> PyResult<ReadSlot> {
        let py = slf.py();
        let this = slf.get();
        let lent = this.inner.lend()?;
        // SAFETY: the consumer is lent to this call, then to the slot, until `give_back`;
        // the slot keeps its owner alive while the guard lives. The shared borrow for the
        // wait ends before the mutable one for the read starts.
        let shared: &Consumer = unsafe { lent.shared() };
        let r: PyResult<ReadGuard<'static>> = wait_until_ready(py, t, shared.readable(), |slice| {
            shared.wait_readable(slice)
        })
        .and_then(|started| {
            // SAFETY: as above; `shared` is not used any more.
            let exclusive: &'static mut Consumer = unsafe { lent.get() };
            finish(exclusive.read(Duration::ZERO), started)
        });
        match r {
            Ok(g) => Ok(ReadSlot::new(g, slf.clone().unbind())),
            Err(e) => {
                this.inner.give_back();
                Err(e)
            }
        }
    }
}

/// Expectations from keyword arguments.
fn expectations(
    policy: Option<&str>,
    schema: Option<PyRef<'_, PySchema>>,
    min_slot_size: Option<u32>,
    checksum_key: Option<&[u8]>,
    follow_handover: bool,
) -> PyResult<Expectations> {
    let mut exp = Expectations::new().follow_handover(follow_handover);
    if let Some(p) = policy {
        exp = exp.policy(super::policy(p)?);
    }
    if let Some(s) = schema {
        exp = exp.schema(s.schema());
    }
    if let Some(n) = min_slot_size {
        exp = exp.min_slot_size(n);
    }
    if let Some(k) = checksum_key {
        exp = exp.checksum_key(super::key(k)?);
    }
    Ok(exp)
}

#[pymethods]
impl PyConsumer {
    /// Attaches to block `name`, checking what is given: policy ("latest", "sequential",
    /// "sequential_sync"), schema (a `Schema`), min_slot_size (bytes), checksum_key (32
    /// bytes). With timeout > 0 (seconds; None: no limit), waits for the block to appear.
    ///
    /// Raises: NotFound, NotReady, SchemaMismatch, ExpectationMismatch, KeyMismatch,
    /// TooManyConsumers, BadMagic, UnsupportedVersion, LayoutMismatch, Truncated,
    /// InvalidHeader, NotRegular, Timeout, ValueError.
    #[staticmethod]
    #[pyo3(signature = (name, *, policy = None, schema = None, min_slot_size = None,
        checksum_key = None, follow_handover = true, timeout = Some(0.0)))]
    #[allow(clippy::too_many_arguments)]
    fn attach(
        py: Python<'_>,
        name: &str,
        policy: Option<&str>,
        schema: Option<PyRef<'_, PySchema>>,
        min_slot_size: Option<u32>,
        checksum_key: Option<&[u8]>,
        follow_handover: bool,
        timeout: Option<f64>,
    ) -> PyResult<PyConsumer> {
        let exp = expectations(policy, schema, min_slot_size, checksum_key, follow_handover)?;
        let t = super::timeout(timeout)?;
        let c = match t {
            Some(d) if d.is_zero() => py
                .detach(|| Consumer::attach(name, exp))
                .map_err(errors::to_py)?,
            _ => wait(py, t, |slice| {
                Consumer::attach_wait(name, exp.clone(), slice)
            })?,
        };
        Ok(PyConsumer::wrap(c, None))
    }

    /// Secure attach: proves it holds `key` (32 bytes, or a path to a key file, see
    /// `read_key_file`) to the producer serving the sealed block on the AF_UNIX `socket`, and
    /// maps the descriptor it sends. With timeout > 0, waits for the socket to appear.
    ///
    /// Raises: AttachRefused, AttachFailed, NotSealed, SocketDirUnsafe, KeyMismatch, Timeout,
    /// and the errors of `attach`.
    #[staticmethod]
    #[pyo3(signature = (socket, key, *, policy = None, schema = None, min_slot_size = None,
        timeout = Some(0.0)))]
    fn attach_secure(
        py: Python<'_>,
        socket: std::path::PathBuf,
        key: &[u8],
        policy: Option<&str>,
        schema: Option<PyRef<'_, PySchema>>,
        min_slot_size: Option<u32>,
        timeout: Option<f64>,
    ) -> PyResult<PyConsumer> {
        let key = super::key(key)?;
        let exp = expectations(policy, schema, min_slot_size, None, true)?;
        let t = super::timeout(timeout)?;
        let c = match t {
            Some(d) if d.is_zero() => py
                .detach(|| Consumer::attach_secure(&socket, &key, exp))
                .map_err(errors::to_py)?,
            _ => wait(py, t, |slice| {
                Consumer::attach_secure_wait(&socket, &key, exp.clone(), slice)
            })?,
        };
        Ok(PyConsumer::wrap(c, None))
    }

    /// Asks the broker (a `Broker`) for `channel`, attaches to its block (the header checked
    /// against the announcement), and registers as its consumer; the broker client heartbeats
    /// the registration while the consumer lives. `schema`, when given, is cited at discovery
    /// (another fingerprint is refused with BrokerRefused SCHEMA_MISMATCH) and checked at
    /// attach.
    ///
    /// Raises: BrokerTimeout (the channel is not live in time), BrokerRefused, BlockMismatch,
    /// and the errors of `attach`.
    #[staticmethod]
    #[pyo3(signature = (channel, broker, *, schema = None, policy = None, min_slot_size = None,
        timeout = 5.0))]
    fn discover(
        py: Python<'_>,
        channel: &str,
        broker: Bound<'_, PyBroker>,
        schema: Option<PyRef<'_, PySchema>>,
        policy: Option<&str>,
        min_slot_size: Option<u32>,
        timeout: f64,
    ) -> PyResult<PyConsumer> {
        let deadline = super::seconds("timeout", timeout)?;
        let fp = schema.as_ref().map(|s| s.schema().fingerprint());
        let exp = expectations(policy, schema, min_slot_size, None, true)?;
        let client = broker.get().client();
        let (c, _info) = py
            .detach(|| Consumer::discover(client, channel, fp, exp, deadline))
            .map_err(errors::broker_to_py)?;
        Ok(PyConsumer::wrap(c, Some(broker.unbind())))
    }

    /// The block's name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The sequence number of the next message this consumer reads.
    #[getter]
    fn position(&self) -> PyResult<u64> {
        self.inner.with(|c| Ok(c.position()))
    }

    /// The block's policy ("latest", "sequential", "sequential_sync").
    #[getter]
    fn policy(&self) -> PyResult<String> {
        self.inner.with(|c| Ok(c.policy().to_string()))
    }

    /// Handovers this consumer followed.
    #[getter]
    fn handovers(&self) -> PyResult<u64> {
        self.inner.with(|c| Ok(c.handovers()))
    }

    /// Whether the producer's process is alive (heartbeat and pid check).
    #[getter]
    fn producer_alive(&self) -> PyResult<bool> {
        self.inner.with(|c| Ok(c.producer_alive()))
    }

    /// Waits up to `timeout` seconds (None: no limit) for the next message and holds it as a
    /// read-only slot until released. The GIL is released while waiting.
    ///
    /// Raises: Timeout (cause "no new message" or "... the producer is dead"), EndOfStream,
    /// ChecksumMismatch (enforced checksums), Overrun, SlotInUse (a slot is open already),
    /// BlockTruncated, Closed.
    #[pyo3(signature = (timeout = None))]
    fn read(slf: Bound<'_, Self>, timeout: Option<f64>) -> PyResult<ReadSlot> {
        let t = super::timeout(timeout)?;
        Self::read_slot(&slf, t)
    }

    /// The next message if one is there now, else None. Raises as `read`, but never Timeout.
    fn try_read(slf: Bound<'_, Self>) -> PyResult<Option<ReadSlot>> {
        // Nothing there: say so without a read that would count a timeout.
        if !slf.get().inner.with(|c| Ok(c.readable()))? {
            return Ok(None);
        }
        match Self::read_slot(&slf, Some(std::time::Duration::ZERO)) {
            Err(e) if e.is_instance_of::<errors::Timeout>(slf.py()) => Ok(None),
            r => r.map(Some),
        }
    }

    /// Reads the next message, copies it and releases the slot: `(seq, data)`. Raises as
    /// `read`.
    #[pyo3(signature = (timeout = None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<(u64, Vec<u8>)> {
        let t = super::timeout(timeout)?;
        self.inner.with(|c| {
            let started = wait_until_ready(py, t, c.readable(), |slice| c.wait_readable(slice))?;
            let g = finish(c.read(Duration::ZERO), started)?;
            let out = (g.seq(), g.to_vec());
            g.release().map_err(errors::to_py)?;
            Ok(out)
        })
    }

    /// Iterates over incoming messages until the end of the stream. Each step releases the
    /// previous slot if it is still open (BufferError if a view of it is alive), then reads
    /// the next with `timeout` (Timeout is raised, not swallowed).
    #[pyo3(signature = (timeout = None))]
    fn slots(slf: Bound<'_, Self>, timeout: Option<f64>) -> PyResult<SlotIter> {
        Ok(SlotIter {
            consumer: slf.unbind(),
            timeout: super::timeout(timeout)?,
            prev: std::sync::Mutex::new(None),
        })
    }

    /// Skips to the newest committed message.
    fn seek_latest(&self) -> PyResult<()> {
        self.inner.with(|c| {
            c.seek_latest();
            Ok(())
        })
    }

    /// Moves to message `seq`. Raises: SeqUnavailable.
    fn seek_to(&self, seq: u64) -> PyResult<()> {
        self.inner.with(|c| c.seek_to(seq).map_err(errors::to_py))
    }

    /// Marks the consumer alive now (reads and waits do this on their own).
    fn heartbeat(&self) -> PyResult<()> {
        self.inner.with(|c| {
            c.heartbeat();
            Ok(())
        })
    }

    /// The block's counters (see `Producer.metrics`).
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let m = self.inner.with(|c| Ok(c.metrics()))?;
        to_python(py, &m)
    }

    /// The block's header and peers.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let i = self.inner.with(|c| Ok(c.info()))?;
        to_python(py, &i)
    }

    /// Detaches (frees the consumer's entry). Raises: SlotInUse while a slot is open.
    fn close(&self) -> PyResult<()> {
        self.inner.close()
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
        self.inner.close()?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "<Consumer block={:?}{}>",
            self.name,
            if self.inner.is_closed() {
                " closed"
            } else {
                ""
            }
        )
    }
}

/// The iterator of `Consumer.slots`.
#[pyclass(module = "memsys.datahub", frozen)]
pub(crate) struct SlotIter {
    consumer: Py<PyConsumer>,
    timeout: Option<std::time::Duration>,
    prev: std::sync::Mutex<Option<Py<ReadSlot>>>,
}

#[pymethods]
impl SlotIter {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Py<ReadSlot>> {
        let prev = self.prev.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(p) = prev {
            let p = p.bind(py).get();
            if !p.is_released() {
                p.release()?;
            }
        }
        let c = self.consumer.bind(py);
        match PyConsumer::read_slot(c, self.timeout) {
            Ok(s) => {
                let s = Py::new(py, s)?;
                *self.prev.lock().unwrap_or_else(|e| e.into_inner()) = Some(s.clone_ref(py));
                Ok(s)
            }
            Err(e) if e.is_instance_of::<errors::EndOfStream>(py) => {
                Err(PyStopIteration::new_err(()))
            }
            Err(e) => Err(e),
        }
    }
}
