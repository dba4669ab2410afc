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
//! use datahub::broker::{Broker, BrokerConfig, ChannelInfo, Client, ClientOptions};
//! use datahub::{Config, Expectations, Policy, Producer};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ep = "ipc:///run/user/1000/datahub/broker.sock";
//! let _broker = Broker::spawn(BrokerConfig::at(ep))?; // stops and joins on drop
//!
//! let p = Producer::create("quotes", Config::new(Policy::Latest))?;
//! let producer = Client::connect(Some(ep), "quotes-producer", ClientOptions::default())?;
//! producer.register(&ChannelInfo::from_producer("quotes", &p, "raw", None)?, Duration::from_secs(1))?;
//!
//! let consumer = Client::connect(Some(ep), "ui-1", ClientOptions::default())?;
//! let found = consumer.discover("quotes", None, Duration::from_secs(5))?;
//! consumer.register_consumer("quotes", None, Duration::from_secs(1))?;
//! let c = found.attach(Expectations::new())?; // checks the header against `found`
//! # drop(c); Ok(()) }
//! ```
//!
//! # Pieces
//! - [`wire`]: frames, message names, bodies, error codes, limits.
//! - [`state`]: the registry and liveness state machine, pure (time is passed in).
//! - [`Broker`] (`server.rs`): the ROUTER loop around the registry.
//! - [`Client`]: a DEALER with an I/O thread (requests, heartbeats, notifications,
//!   re-registration).
//! - [`ChannelInfo::from_producer`], [`ChannelInfo::check_block`], [`ChannelInfo::attach`]:
//!   between blocks and registrations.
//!
//! # Security
//! Endpoints are `ipc://` only, by default in a directory only this user can enter
//! ([`default_endpoint`]); the socket file is made 0600. `tcp://` is refused until CURVE
//! authentication is added. Nothing the broker stores or sends is a key or derived from one.

mod channel;
mod client;
mod endpoint;
mod server;
pub mod state;
pub mod wire;

pub use client::{Client, ClientOptions, NOTIFICATION_QUEUE, Notification, Reply};
pub use endpoint::{
    MAX_IPC_PATH, SOCKET_NAME, default_dir, default_endpoint, ipc_path, private_dir,
};
pub use server::{BATCH, Broker, BrokerConfig, BrokerHandle, EventSink, STOP_POLL, StopHandle};
pub use state::{Event, Limits, Liveness};
pub use wire::{
    BrokerMetrics, ChannelInfo, ChannelSummary, Counters, ErrorCode, FormatVersion,
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
