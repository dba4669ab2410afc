//! `memsys.datahub.Producer`.

use std::time::Duration;

use pyo3::prelude::*;

use datahub::{Config, Producer, WriteGuard};

use super::broker::PyBroker;
use super::lend::Lendable;
use super::schema::PySchema;
use super::slot::WriteSlot;
use super::{errors, finish, to_python, wait, wait_until_ready};

/// Creates the block `name` (in /dev/shm, or $DATAHUB_SHM_DIR) and becomes its producer.
///
/// - policy: "latest" (readers see the newest message, the producer never waits),
///   "sequential" (lossless, one consumer group), "sequential_sync" (lossless, every consumer).
/// - slot_size: bytes per slot; slot_count: slots in the ring.
/// - checksum: "none", "manual" (`WriteSlot.commit_with_checksum`), "enforced" (every commit).
/// - checksum_key: 32 bytes: keyed BLAKE2b checksums; consumers must hold the same key.
/// - schema: a `Schema` (for example `Schema.from_dtype(dtype)`) consumers must match.
/// - heartbeat_timeout: seconds of silence after which peers count this producer dead.
/// - take_over: take over a block whose producer died instead of raising AlreadyExists.
///
/// The block is removed when the producer is freed (or the `with` block ends), unless
/// unlink_on_drop is False.
///
/// Raises: AlreadyExists, InvalidName, InvalidConfig, NoSpace, Busy, Io, ValueError.
#[pyclass(module = "memsys.datahub", name = "Producer", frozen)]
pub(crate) struct PyProducer {
    inner: Lendable<Producer>,
    name: String,
    slot_size: usize,
    /// Keeps a broker client (and so a channel registration) alive as long as the producer.
    broker: std::sync::Mutex<Option<Py<PyBroker>>>,
}

impl PyProducer {
    pub(crate) fn lendable(&self) -> &Lendable<Producer> {
        &self.inner
    }
}

/// Whether a claim would not wait now.
fn writable_now(p: &Producer) -> bool {
    p.wait_writable(Duration::ZERO).is_ok()
}

#[pymethods]
impl PyProducer {
    #[new]
    #[pyo3(signature = (name, policy = "sequential", slot_size = 4096, slot_count = 8,
        checksum = "none", *, checksum_key = None, schema = None, flex_zone_size = 0,
        max_consumers = None, heartbeat_timeout = 1.0, unlink_on_drop = true, take_over = false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: &str,
        policy: &str,
        slot_size: u32,
        slot_count: u32,
        checksum: &str,
        checksum_key: Option<&[u8]>,
        schema: Option<PyRef<'_, PySchema>>,
        flex_zone_size: u64,
        max_consumers: Option<u32>,
        heartbeat_timeout: f64,
        unlink_on_drop: bool,
        take_over: bool,
    ) -> PyResult<PyProducer> {
        let mut config = Config::new(super::policy(policy)?)
            .slot_size(slot_size)
            .slot_count(slot_count)
            .checksum(super::checksum(checksum)?)
            .flex_zone_size(flex_zone_size)
            .heartbeat_timeout(super::seconds("heartbeat_timeout", heartbeat_timeout)?)
            .unlink_on_drop(unlink_on_drop);
        if let Some(k) = checksum_key {
            config = config.checksum_key(super::key(k)?);
        }
        if let Some(s) = schema {
            config = config.schema(s.schema());
        }
        if let Some(n) = max_consumers {
            config = config.max_consumers(n);
        }
        let owned = name.to_owned();
        let p = py
            .detach(move || {
                if take_over {
                    Producer::create_or_take_over(&owned, config).map(|(p, _)| p)
                } else {
                    Producer::create(&owned, config)
                }
            })
            .map_err(errors::to_py)?;
        Ok(PyProducer {
            slot_size: p.slot_size(),
            name: name.to_owned(),
            inner: Lendable::new(p, "producer"),
            broker: std::sync::Mutex::new(None),
        })
    }

    /// The block's name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// Bytes per slot.
    #[getter]
    fn slot_size(&self) -> usize {
        self.slot_size
    }

    /// The sequence number the next message gets.
    #[getter]
    fn next_seq(&self) -> PyResult<u64> {
        self.inner.with(|p| Ok(p.next_seq()))
    }

    /// Consumers attached now.
    #[getter]
    fn consumers(&self) -> PyResult<u32> {
        self.inner.with(|p| Ok(p.consumers()))
    }

    /// Claims the next slot, waiting up to `timeout` seconds (None: no limit) for room in the
    /// ring (lossless policies) or for readers to leave it. The GIL is released while waiting.
    ///
    /// Raises: Timeout (cause "ring full" or "readers hold the slot"), Closed, SlotInUse (a
    /// slot is open already), BlockTruncated.
    #[pyo3(signature = (timeout = None))]
    fn write(slf: Bound<'_, Self>, timeout: Option<f64>) -> PyResult<WriteSlot> {
        let py = slf.py();
        let t = super::timeout(timeout)?;
        let this = slf.get();
        let lent = this.inner.lend()?;
        // SAFETY: the producer is lent to this call (and then to the slot) until
        // `give_back`; the slot keeps `slf` (its owner) alive while the guard lives. The
        // shared borrow for the wait ends before the mutable one for the claim starts.
        let shared: &Producer = unsafe { lent.shared() };
        let r: PyResult<WriteGuard<'static>> =
            wait_until_ready(py, t, writable_now(shared), |slice| {
                shared.wait_writable(slice)
            })
            .and_then(|started| {
                // SAFETY: as above; `shared` is not used any more.
                let exclusive: &'static mut Producer = unsafe { lent.get() };
                finish(exclusive.write(Duration::ZERO), started)
            });
        match r {
            Ok(g) => Ok(WriteSlot::new(g, slf.clone().unbind())),
            Err(e) => {
                this.inner.give_back();
                Err(e)
            }
        }
    }

    /// Copies `data` (any bytes-like object) into the next slot and commits it; returns its
    /// sequence number.
    ///
    /// Raises: as `write`; PayloadTooLarge if `data` is longer than a slot.
    #[pyo3(signature = (data, timeout = None))]
    fn send(&self, py: Python<'_>, data: &[u8], timeout: Option<f64>) -> PyResult<u64> {
        let t = super::timeout(timeout)?;
        self.inner.with(|p| {
            let started = wait_until_ready(py, t, writable_now(p), |slice| p.wait_writable(slice))?;
            finish(p.send(data, Duration::ZERO), started)
        })
    }

    /// Waits until at least `n` consumers are attached. Raises: Timeout.
    #[pyo3(signature = (n = 1, timeout = None))]
    fn wait_for_consumers(&self, py: Python<'_>, n: u32, timeout: Option<f64>) -> PyResult<()> {
        let t = super::timeout(timeout)?;
        self.inner
            .with(|p| wait(py, t, |slice| p.wait_for_consumers(n, slice)))
    }

    /// Waits until every consumer has read every message (lossless policies). Raises: Timeout
    /// (cause "consumers have not drained the stream").
    #[pyo3(signature = (timeout = None))]
    fn wait_drained(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let t = super::timeout(timeout)?;
        self.inner
            .with(|p| wait(py, t, |slice| p.wait_drained(slice)))
    }

    /// Ends the stream: consumers read what is left, then get EndOfStream (their iterators
    /// stop). The block stays until the producer is freed. Raises: SlotInUse.
    fn close(&self) -> PyResult<()> {
        self.inner.with(|p| {
            p.close();
            Ok(())
        })
    }

    /// Marks the producer alive now (writes and waits do this on their own).
    fn heartbeat(&self) -> PyResult<()> {
        self.inner.with(|p| {
            p.heartbeat();
            Ok(())
        })
    }

    /// The block's counters (slots_written, bytes_written, reader_timeouts, ...; counts and
    /// bytes), each read atomically.
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let m = self.inner.with(|p| Ok(p.metrics()))?;
        to_python(py, &m)
    }

    /// The block's header and peers (`datahub inspect --json`'s block part).
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let i = self.inner.with(|p| Ok(p.info()))?;
        to_python(py, &i)
    }

    /// Registers this block with a broker as `channel`; the broker client heartbeats it while
    /// the producer lives. Returns the registration (the broker's view of the channel).
    ///
    /// Raises: BrokerRefused (CHANNEL_EXISTS, SCHEMA_MISMATCH, ...), BrokerTimeout.
    #[pyo3(signature = (broker, channel, schema_id = "python.bytes", timeout = 5.0))]
    fn register<'py>(
        &self,
        py: Python<'py>,
        broker: Bound<'py, PyBroker>,
        channel: &str,
        schema_id: &str,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let t = super::seconds("timeout", timeout)?;
        let client = broker.get().client();
        let info = self.inner.with(|p| {
            let p = &*p;
            py.detach(|| p.register(client, channel, schema_id, None, t))
                .map_err(errors::broker_to_py)
        })?;
        *self.broker.lock().unwrap_or_else(|e| e.into_inner()) = Some(broker.clone().unbind());
        to_python(py, &info)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Ends the stream and removes the block (unless unlink_on_drop was False).
    fn __exit__(
        &self,
        _exc_type: Option<Bound<'_, PyAny>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if !self.inner.is_closed() {
            self.close()?;
            self.inner.close()?;
        }
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "<Producer block={:?} slot_size={}{}>",
            self.name,
            self.slot_size,
            if self.inner.is_closed() {
                " closed"
            } else {
                ""
            }
        )
    }
}
