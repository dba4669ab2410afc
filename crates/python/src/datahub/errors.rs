//! `datahub::Error` and `datahub::broker::BrokerError` as Python exceptions, one class per
//! variant, every class a subclass of `DataHubError` (itself a `memsys.MemsysError`).
//!
//! Every instance has `code` (the Rust error's stable number, `datahub::Error::code`; 0 for
//! the binding's own and the broker's classes) and, where the variant has them, the fields a
//! caller acts on (`name`, `seq`, `slot`, `cause`, `waited_ms`, `expected`, `found`, ...).

use pyo3::prelude::*;
use pyo3::types::PyType;

use datahub::Error;
use datahub::broker::BrokerError as RustBrokerError;

use crate::errors::{MemsysError, obj, raise_with};

pyo3::create_exception!(
    memsys.datahub,
    DataHubError,
    MemsysError,
    "Base of every DataHub exception. `code` is the Rust error's stable number (docs/datahub-format.md), 0 for the binding's own errors."
);

macro_rules! exceptions {
    ($($variant:ident => $doc:literal),+ $(,)?) => {
        $(pyo3::create_exception!(memsys.datahub, $variant, DataHubError, $doc);)+

        /// The class of `e`.
        fn class_of<'py>(py: Python<'py>, e: &Error) -> Bound<'py, PyType> {
            match e {
                $(Error::$variant { .. } => py.get_type::<$variant>(),)+
                // `Error` is non-exhaustive: a variant added later reaches Python as the base
                // class until it gets its own (the code attribute still tells it apart).
                #[allow(unreachable_patterns)]
                _ => py.get_type::<DataHubError>(),
            }
        }

        /// Adds every class to the module.
        fn add_classes(m: &Bound<'_, PyModule>) -> PyResult<()> {
            let py = m.py();
            m.add("DataHubError", py.get_type::<DataHubError>())?;
            $(m.add(stringify!($variant), py.get_type::<$variant>())?;)+
            Ok(())
        }
    };
}

exceptions! {
    Io => "A system call on the segment failed (attributes: op, name, errno).",
    InvalidName => "A block name is not 1..=200 bytes without '/' or NUL, or is '.' or '..'.",
    NotFound => "No block of that name exists.",
    NotReady => "The block exists but was never published (or is empty).",
    NotRegular => "The name is not a regular shared-memory file (a symlink, FIFO, ...): refused.",
    NoSpace => "The shared-memory file system cannot hold the block.",
    Busy => "Another process is creating or removing the block right now.",
    BlockTruncated => "The segment was shrunk while mapped: nothing read from it is trusted.",
    InvalidSlotState => "A slot's state word holds no protocol value (a damaged block).",
    InvalidSlotIndex => "A position line names a slot beyond the block (a damaged block).",
    InvalidSuccessor => "A block's successor record (handover) is malformed.",
    HandedOver => "The block was handed over and this operation cannot follow it.",
    AlreadyExists => "A live producer owns a block of that name.",
    BadMagic => "Not a DataHub block.",
    UnsupportedVersion => "The block's format major version is not this library's.",
    LayoutMismatch => "The stored layout hash differs from the header's parameters.",
    Truncated => "The segment is shorter than its header says.",
    InvalidHeader => "A header field holds an impossible value.",
    InvalidConfig => "A configuration value is out of range.",
    SchemaMismatch => "The block's schema is not the expected one (attributes: expected, found, expected_version, found_version).",
    ExpectationMismatch => "The block's policy or slot size is not what the consumer expects.",
    KeyMismatch => "Keyed checksums: the consumer's key is not the producer's.",
    Timeout => "A wait ran out of time (attributes: op, cause, waited_ms).",
    ChecksumMismatch => "A slot's bytes do not match its stored checksum (attributes: slot, seq).",
    ChecksumMissing => "Enforced checksums: a committed slot has no checksum.",
    TooManyConsumers => "Every consumer entry of the block is taken.",
    PayloadTooLarge => "More bytes than the slot holds (attributes: len, slot_size).",
    ValidationFailed => "The slot changed under a reader (it was overwritten while read).",
    Overrun => "A reader's message was overwritten before it was read.",
    Discarded => "The producer discarded the message (aborted or evicted).",
    SeqUnavailable => "The requested sequence number is no longer (or not yet) in the ring.",
    EndOfStream => "The producer closed the stream and every message has been read.",
    Closed => "The producer or consumer is closed.",
    OwnerAlive => "The owner of what was to be recovered is alive.",
    ProducerAlive => "The producer that holds the slot is alive.",
    WouldDeadlock => "The spinlock is already held by this process.",
    OutOfRange => "An index is out of range.",
    HugePagesUnavailable => "Huge pages were required and the system cannot give them.",
    SocketDirUnsafe => "The secure-attach socket's directory is not private to this user.",
    AttachRefused => "The secure-attach producer refused this consumer (peer credentials or key).",
    NotSealed => "A secure-attach descriptor lacks the required seals.",
    AttachFailed => "The secure-attach handshake failed.",
}

pyo3::create_exception!(
    memsys.datahub,
    SlotInUse,
    DataHubError,
    "The producer or consumer has a slot open (commit or release it first), or another Python thread is using it right now."
);
pyo3::create_exception!(
    memsys.datahub,
    InvalidSchema,
    DataHubError,
    "A layout (for example a numpy dtype) that a DataHub schema cannot describe (attribute: reason)."
);
pyo3::create_exception!(
    memsys.datahub,
    BrokerError,
    DataHubError,
    "Base of the broker client's errors."
);
pyo3::create_exception!(
    memsys.datahub,
    BrokerTimeout,
    BrokerError,
    "The broker did not answer in time (attributes: what, after_s)."
);
pyo3::create_exception!(
    memsys.datahub,
    BrokerRefused,
    BrokerError,
    "The broker answered ERROR (attributes: error_code, message)."
);
pyo3::create_exception!(
    memsys.datahub,
    BrokerEndpoint,
    BrokerError,
    "An endpoint that is unsupported, unsafe or in use."
);
pyo3::create_exception!(
    memsys.datahub,
    BrokerBadReply,
    BrokerError,
    "The broker's answer is not what the protocol says."
);
pyo3::create_exception!(
    memsys.datahub,
    BrokerInvalidArgument,
    BrokerError,
    "An argument out of the protocol's bounds (a role uid, a channel name, ...)."
);
pyo3::create_exception!(
    memsys.datahub,
    BlockMismatch,
    BrokerError,
    "A block's header does not match the broker's announcement."
);
pyo3::create_exception!(
    memsys.datahub,
    BrokerClosed,
    BrokerError,
    "The client's I/O thread is gone."
);
pyo3::create_exception!(
    memsys.datahub,
    KeyFileError,
    BrokerError,
    "A CURVE key file could not be used."
);
pyo3::create_exception!(
    memsys.datahub,
    AuthRefused,
    BrokerError,
    "The broker refused this client's CURVE key."
);
pyo3::create_exception!(
    memsys.datahub,
    BrokerTransport,
    BrokerError,
    "A ZeroMQ or I/O call of the broker client failed."
);

/// Adds the exception classes to `memsys.datahub`.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    add_classes(m)?;
    let py = m.py();
    m.add("SlotInUse", py.get_type::<SlotInUse>())?;
    m.add("InvalidSchema", py.get_type::<InvalidSchema>())?;
    m.add("BrokerError", py.get_type::<BrokerError>())?;
    m.add("BrokerTimeout", py.get_type::<BrokerTimeout>())?;
    m.add("BrokerRefused", py.get_type::<BrokerRefused>())?;
    m.add("BrokerEndpoint", py.get_type::<BrokerEndpoint>())?;
    m.add("BrokerBadReply", py.get_type::<BrokerBadReply>())?;
    m.add(
        "BrokerInvalidArgument",
        py.get_type::<BrokerInvalidArgument>(),
    )?;
    m.add("BlockMismatch", py.get_type::<BlockMismatch>())?;
    m.add("BrokerClosed", py.get_type::<BrokerClosed>())?;
    m.add("KeyFileError", py.get_type::<KeyFileError>())?;
    m.add("AuthRefused", py.get_type::<AuthRefused>())?;
    m.add("BrokerTransport", py.get_type::<BrokerTransport>())?;
    Ok(())
}

/// The attributes of `e` besides `code`.
fn fields(py: Python<'_>, e: &Error) -> Vec<(&'static str, Py<PyAny>)> {
    match e {
        Error::Io { op, name, source } => vec![
            ("op", obj(py, *op)),
            ("name", obj(py, name.as_str())),
            ("errno", obj(py, source.raw_os_error())),
        ],
        Error::InvalidName { name }
        | Error::NotFound { name }
        | Error::NotReady { name, .. }
        | Error::NotRegular { name, .. }
        | Error::NoSpace { name, .. }
        | Error::Busy { name }
        | Error::BlockTruncated { name, .. } => vec![("name", obj(py, name.as_str()))],
        Error::AlreadyExists { name, pid } => {
            vec![("name", obj(py, name.as_str())), ("pid", obj(py, *pid))]
        }
        Error::HandedOver { successor } => vec![("successor", obj(py, successor.as_str()))],
        Error::SchemaMismatch {
            expected,
            expected_version,
            found,
            found_version,
        } => vec![
            ("expected", obj(py, expected.as_str())),
            ("expected_version", obj(py, *expected_version)),
            ("found", obj(py, found.as_str())),
            ("found_version", obj(py, *found_version)),
        ],
        Error::ExpectationMismatch {
            what,
            expected,
            found,
        } => vec![
            ("what", obj(py, *what)),
            ("expected", obj(py, expected.as_str())),
            ("found", obj(py, found.as_str())),
        ],
        Error::Timeout {
            op,
            cause,
            waited_ms,
        } => vec![
            ("op", obj(py, *op)),
            ("cause", obj(py, cause.to_string())),
            ("waited_ms", obj(py, *waited_ms)),
        ],
        Error::ChecksumMismatch { slot, seq, .. }
        | Error::ChecksumMissing { slot, seq }
        | Error::ValidationFailed { slot, seq }
        | Error::Discarded { slot, seq } => {
            vec![("slot", obj(py, *slot)), ("seq", obj(py, *seq))]
        }
        Error::PayloadTooLarge { len, slot_size } => {
            vec![("len", obj(py, *len)), ("slot_size", obj(py, *slot_size))]
        }
        Error::Overrun { expected, found } => {
            vec![("expected", obj(py, *expected)), ("found", obj(py, *found))]
        }
        Error::SeqUnavailable {
            requested,
            oldest,
            next,
        } => vec![
            ("requested", obj(py, *requested)),
            ("oldest", obj(py, *oldest)),
            ("next", obj(py, *next)),
        ],
        _ => Vec::new(),
    }
}

/// `e` as its Python exception.
pub(crate) fn to_py(e: Error) -> PyErr {
    Python::attach(|py| {
        let mut attrs = fields(py, &e);
        attrs.push(("code", obj(py, e.code())));
        raise_with(py, class_of(py, &e), e.to_string(), &attrs)
    })
}

/// A broker client error as its Python exception (a block error as the block's class).
pub(crate) fn broker_to_py(e: RustBrokerError) -> PyErr {
    Python::attach(|py| {
        let msg = e.to_string();
        let (ty, attrs): (Bound<'_, PyType>, Vec<(&str, Py<PyAny>)>) = match e {
            RustBrokerError::Block(inner) => return to_py(inner),
            RustBrokerError::Timeout { what, after } => (
                py.get_type::<BrokerTimeout>(),
                vec![
                    ("what", obj(py, what)),
                    ("after_s", obj(py, after.as_secs_f64())),
                ],
            ),
            RustBrokerError::Refused { code, message } => (
                py.get_type::<BrokerRefused>(),
                vec![
                    ("error_code", obj(py, code.to_string())),
                    ("message", obj(py, message)),
                ],
            ),
            RustBrokerError::Endpoint { endpoint, .. } => (
                py.get_type::<BrokerEndpoint>(),
                vec![("endpoint", obj(py, endpoint))],
            ),
            RustBrokerError::BadReply(_) => (py.get_type::<BrokerBadReply>(), Vec::new()),
            RustBrokerError::InvalidArgument(_) => {
                (py.get_type::<BrokerInvalidArgument>(), Vec::new())
            }
            RustBrokerError::BlockMismatch { field, .. } => (
                py.get_type::<BlockMismatch>(),
                vec![("field", obj(py, field))],
            ),
            RustBrokerError::Closed(_) => (py.get_type::<BrokerClosed>(), Vec::new()),
            RustBrokerError::Keys(_) => (py.get_type::<KeyFileError>(), Vec::new()),
            RustBrokerError::AuthRefused { endpoint, status } => (
                py.get_type::<AuthRefused>(),
                vec![("endpoint", obj(py, endpoint)), ("status", obj(py, status))],
            ),
            RustBrokerError::Zmq { .. } | RustBrokerError::Io { .. } => {
                (py.get_type::<BrokerTransport>(), Vec::new())
            }
            #[allow(unreachable_patterns)]
            _ => (py.get_type::<BrokerError>(), Vec::new()),
        };
        let mut attrs = attrs;
        attrs.push(("code", obj(py, 0u32)));
        raise_with(py, ty, msg, &attrs)
    })
}

/// A binding-level "slot open / in use" error.
pub(crate) fn slot_in_use(what: &str) -> PyErr {
    Python::attach(|py| {
        raise_with(
            py,
            py.get_type::<SlotInUse>(),
            what.to_owned(),
            &[("code", obj(py, 0u32))],
        )
    })
}

/// A schema that cannot be described.
pub(crate) fn invalid_schema(reason: String) -> PyErr {
    Python::attach(|py| {
        raise_with(
            py,
            py.get_type::<InvalidSchema>(),
            reason.clone(),
            &[("code", obj(py, 0u32)), ("reason", obj(py, reason))],
        )
    })
}
