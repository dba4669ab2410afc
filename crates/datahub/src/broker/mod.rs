//! The hub's broker: discovery, schema negotiation and liveness over ZeroMQ (feature
//! `broker`; links the system libzmq). The wire protocol is specified in
//! `docs/datahub-broker.md`; a client in any language can be written from it.
//!
//! The broker is the control plane only: producers register where their block is and what it
//! holds, consumers discover it and check it before mapping it, and both heartbeat so the
//! broker can tell a producer its consumer died and consumers their channel is closing. Data
//! never passes through it, and the block header stays the authority for slot recovery. A
//! broker restart loses nothing that matters: clients re-register when the new broker answers
//! their heartbeat with `NOT_REGISTERED`, and the registry is rebuilt from them.
//!
//! ```no_run
//! use std::time::Duration;
//! use datahub::broker::{Broker, BrokerConfig, Client, ClientOptions};
//! use datahub::{Config, Consumer, Expectations, Policy, Producer};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ep = "ipc:///run/user/1000/datahub/broker.sock";
//! let _broker = Broker::spawn(BrokerConfig::at(ep))?; // stops and joins on drop
//!
//! let p = Producer::create("quotes", Config::new(Policy::Latest))?;
//! let producer = Client::connect(Some(ep), "quotes-producer", ClientOptions::default())?;
//! p.register(&producer, "quotes", "raw", None, Duration::from_secs(1))?; // heartbeated from now on
//!
//! let consumer = Client::connect(Some(ep), "ui-1", ClientOptions::default())?;
//! // Discovers, checks the header against the announcement, attaches, registers.
//! let (c, found) =
//!     Consumer::discover(&consumer, "quotes", None, Expectations::new(), Duration::from_secs(5))?;
//! # drop((c, found)); Ok(()) }
//! ```
//!
//! # Pieces
//! - [`wire`]: frames, message names, bodies, error codes, limits.
//! - [`state`]: the registry and liveness state machine, pure (time is passed in).
//! - [`Broker`] (`server.rs`): the ROUTER loop around the registry.
//! - [`Client`]: a DEALER with an I/O thread (requests, heartbeats, notifications,
//!   re-registration).
//! - [`ChannelInfo::from_producer`], [`ChannelInfo::check_block`], [`ChannelInfo::attach`]:
//!   between blocks and registrations; [`crate::Producer::register`] and
//!   [`crate::Consumer::discover`], the two steps each side takes, in one call.
//!
//! # Security
//! Without keys, endpoints are `ipc://` only, by default in a directory only this user can
//! enter ([`default_endpoint`]); the socket file is made 0600, so the file system decides who
//! may connect.
//!
//! `tcp://` needs CURVE (ZeroMQ RFC 26: every frame encrypted and authenticated): the broker
//! is given [`ServerKeys`] ([`BrokerConfig::curve`], loaded from a key directory holding
//! `server.key_secret` and `allowed/*.key`), each client [`ClientKeys`]
//! ([`ClientOptions::curve`]: its own pair and the broker's public key). A ZAP handler
//! (RFC 27) on the broker's context admits exactly the client public keys of the allowlist;
//! a refused client gets [`BrokerError::AuthRefused`] (its DEALER's monitor sees
//! `ZMQ_EVENT_HANDSHAKE_FAILED_AUTH`), a client holding the wrong server key gets no answer
//! (its requests time out). Key files are the ZPL certificates of czmq and pyzmq
//! ([`keys`]), so a Python client can use `zmq.auth.load_certificate` on them. CURVE also
//! works over `ipc://`. What CURVE does not give: no key rotation or revocation while the
//! broker runs (the allowlist is read at start), no per-channel authorisation (an admitted
//! client may register or discover any channel), and no forward secrecy against a stolen
//! broker secret key beyond CURVE's own per-connection keys.
//!
//! Nothing the broker stores or sends is a key or derived from one (the ZAP user id, the
//! client's public key in Z85, is used only to tell authenticated connections apart).

mod channel;
mod client;
mod endpoint;
pub mod keys;
mod server;
pub mod state;
pub mod wire;

pub use client::{Client, ClientOptions, NOTIFICATION_QUEUE, Notification, Reply};
pub use endpoint::{
    MAX_IPC_PATH, MAX_TCP_ENDPOINT, SOCKET_NAME, default_dir, default_endpoint, ipc_path,
    private_dir, transport,
};
pub use keys::{ClientKeys, KeyFileError, KeyPair, PublicKey, ServerKeys};
pub use server::{BATCH, Broker, BrokerConfig, BrokerHandle, EventSink, STOP_POLL, StopHandle};
pub use state::{Event, Limits, Liveness};
pub use wire::{
    AuthCounters, BrokerMetrics, ChannelInfo, ChannelSummary, Counters, ErrorCode, FormatVersion,
    HeartbeatConfig, ProtocolVersion, Role, SchemaFields, SchemaInfo,
};

use std::time::Duration;

/// What a broker or client operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// A ZeroMQ call failed.
    #[error("zeromq {what}: {source}")]
    Zmq {
        /// The call.
        what: &'static str,
        /// libzmq's error.
        source: zmq::Error,
    },
    /// An endpoint that is unsupported, unsafe or in use.
    #[error("endpoint {endpoint}: {reason}")]
    Endpoint {
        /// The endpoint or path.
        endpoint: String,
        /// What is wrong.
        reason: String,
    },
    /// An I/O call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        after: Duration,
    },
    /// The broker answered `ERROR`.
    #[error("broker refused: {code}: {message}")]
    Refused {
        /// `error_code`.
        code: ErrorCode,
        /// `message`.
        message: String,
    },
    /// The broker's answer is not what protocol 1 says.
    #[error("unexpected reply: {0}")]
    BadReply(String),
    /// An argument out of bounds.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A block operation failed.
    #[error("block: {0}")]
    Block(crate::Error),
    /// A block's header does not match its announcement.
    #[error(
        "block does not match the broker's announcement: {field} is {block} in the header, {broker} at the broker"
    )]
    BlockMismatch {
        /// The field.
        field: &'static str,
        /// What the broker said.
        broker: String,
        /// What the header says.
        block: String,
    },
    /// The client's I/O thread or the broker thread is gone.
    #[error("closed: {0}")]
    Closed(&'static str),
    /// A key file could not be used.
    #[error("{0}")]
    Keys(#[from] KeyFileError),
    /// The broker's ZAP handler refused this client's CURVE key (it is not in the broker's
    /// allowlist).
    #[error(
        "the broker at {endpoint} refused this client's CURVE key (ZAP status {status}): add its public key to the broker's allowed/ directory"
    )]
    AuthRefused {
        /// The endpoint.
        endpoint: String,
        /// The ZAP status code libzmq reported (400: not allowed).
        status: u32,
    },
}

impl BrokerError {
    /// The broker's error code, for [`BrokerError::Refused`].
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            BrokerError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}
