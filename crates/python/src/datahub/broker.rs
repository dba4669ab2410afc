//! `memsys.datahub.Broker`: a client of `datahub broker`.

use std::path::PathBuf;

use pyo3::prelude::*;

use datahub::broker::{Client, ClientKeys, ClientOptions};

use super::{errors, seconds, to_python};

/// A connection to a `datahub broker` at `endpoint` (`ipc://PATH`, or `tcp://HOST:PORT` with
/// CURVE keys; None: the default endpoint, as `datahub channels` uses). `role` is this
/// client's role uid (1..=128 printable ASCII bytes). For CURVE, `key` is this client's
/// secret key file (`NAME.key_secret`, see `datahub keygen`) and `server_key` the broker's
/// public key file (`server.key`).
///
/// ZeroMQ connects in the background: this succeeds before a broker listens; requests wait up
/// to their timeouts. Producers registered and consumers discovered through this object keep
/// it alive; its thread heartbeats their registrations.
///
/// Raises: BrokerEndpoint, BrokerInvalidArgument, KeyFileError, BrokerTransport.
#[pyclass(module = "memsys.datahub", name = "Broker", frozen)]
pub(crate) struct PyBroker {
    client: Client,
}

impl PyBroker {
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }
}

#[pymethods]
impl PyBroker {
    #[new]
    #[pyo3(signature = (endpoint = None, role = "python", *, key = None, server_key = None))]
    fn new(
        py: Python<'_>,
        endpoint: Option<&str>,
        role: &str,
        key: Option<PathBuf>,
        server_key: Option<PathBuf>,
    ) -> PyResult<PyBroker> {
        let mut options = ClientOptions::default();
        match (key, server_key) {
            (Some(k), Some(s)) => {
                options.curve =
                    Some(ClientKeys::load(&k, &s).map_err(|e| {
                        errors::broker_to_py(datahub::broker::BrokerError::Keys(e))
                    })?);
            }
            (None, None) => {}
            _ => {
                return Err(pyo3::exceptions::PyValueError::new_err(
                    "CURVE needs both key (this client's secret key file) and server_key (the broker's public key file)",
                ));
            }
        }
        let client = py
            .detach(|| Client::connect(endpoint, role, options))
            .map_err(errors::broker_to_py)?;
        Ok(PyBroker { client })
    }

    /// The endpoint connected to.
    #[getter]
    fn endpoint(&self) -> String {
        self.client.endpoint().to_string()
    }

    /// The registered channels (name, block, policy, state, consumers, ...).
    ///
    /// Raises: BrokerTimeout, BrokerBadReply.
    #[pyo3(signature = (timeout = 5.0))]
    fn channels<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
        let t = seconds("timeout", timeout)?;
        let c = py
            .detach(|| self.client.channels(t))
            .map_err(errors::broker_to_py)?;
        to_python(py, &c)
    }

    /// The broker's counters. Raises: BrokerTimeout, BrokerBadReply.
    #[pyo3(signature = (timeout = 5.0))]
    fn metrics<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Bound<'py, PyAny>> {
        let t = seconds("timeout", timeout)?;
        let m = py
            .detach(|| self.client.metrics(t))
            .map_err(errors::broker_to_py)?;
        to_python(py, &m)
    }

    /// Removes a channel this client registered. Raises: BrokerRefused, BrokerTimeout.
    #[pyo3(signature = (channel, timeout = 5.0))]
    fn deregister(&self, py: Python<'_>, channel: &str, timeout: f64) -> PyResult<()> {
        let t = seconds("timeout", timeout)?;
        py.detach(|| self.client.deregister(channel, t))
            .map_err(errors::broker_to_py)
    }

    fn __repr__(&self) -> String {
        format!("<Broker {}>", self.client.endpoint())
    }
}
