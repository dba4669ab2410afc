//! The broker's client: a DEALER whose routing id is the role uid, driven by one I/O thread.
//!
//! ZeroMQ sockets are not thread-safe, so one thread owns the DEALER. API calls hand it a
//! command through a channel and wake it through an `inproc` PUSH/PULL pair; it sends the
//! request, matches the reply by correlation id, and hands it back. The same thread sends the
//! heartbeats of every registration this client made, delivers broker notifications to
//! [`Client::next_notification`], and, when the broker answers a heartbeat with
//! `ERROR NOT_REGISTERED` (it restarted and lost its registry), sends the registration again.
//! Every call takes a timeout.
//!
//! With [`ClientOptions::curve`] the DEALER is a CURVE client, and the I/O thread also reads
//! the DEALER's socket monitor: `ZMQ_EVENT_HANDSHAKE_FAILED_AUTH` (the broker's ZAP handler
//! refused this key) fails the requests in flight and every later one with
//! [`BrokerError::AuthRefused`] until a handshake succeeds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::BrokerError;
use super::endpoint;
use super::keys::ClientKeys;
use super::wire::{
    self, BrokerMetrics, ChannelInfo, ChannelSummary, ErrorCode, HeartbeatConfig, MAGIC, Role,
    SchemaInfo, msg,
};
use crate::schema::Fingerprint;

/// A reply: its message type and body.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// `REG_ACK`, `DISC_PENDING`, ...
    pub msg_type: String,
    /// The JSON body.
    pub body: Value,
}

/// Something the broker (or this client's I/O thread) said without being asked.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Notification {
    /// A consumer of this producer's channel is gone.
    ConsumerDied {
        /// Channel.
        channel_name: String,
        /// The consumer's uid.
        consumer_uid: String,
        /// Its pid.
        consumer_pid: u32,
        /// `heartbeat_timeout`.
        reason: String,
        /// Consumers still registered with the channel (`None` from a 1.0 broker).
        consumers: Option<u32>,
    },
    /// A consumer registered with this producer's channel (protocol 1.1).
    ConsumerJoined {
        /// Channel.
        channel_name: String,
        /// The consumer's uid.
        consumer_uid: String,
        /// Its pid.
        consumer_pid: u32,
        /// Consumers registered with the channel now.
        consumers: u32,
    },
    /// A consumer of this producer's channel deregistered (protocol 1.1).
    ConsumerLeft {
        /// Channel.
        channel_name: String,
        /// The consumer's uid.
        consumer_uid: String,
        /// Its pid.
        consumer_pid: u32,
        /// `consumer_deregistered`.
        reason: String,
        /// Consumers still registered with the channel.
        consumers: u32,
    },
    /// A channel this consumer registered with moved to a successor block (protocol 1.2,
    /// [`crate::Producer::handover`]). A consumer attached to the old block follows on its
    /// own at the cutover; this tells a client that only discovered the channel.
    HandedOver {
        /// Channel.
        channel_name: String,
        /// The old block.
        old_block: String,
        /// The block the channel is on now.
        new_block: String,
        /// The new block's first sequence number.
        cutover_seq: u64,
    },
    /// A channel this consumer registered with is going away.
    ChannelClosing {
        /// Channel.
        channel_name: String,
        /// `heartbeat_timeout` or `producer_deregistered`.
        reason: String,
    },
    /// The broker had forgotten a registration (`NOT_REGISTERED`); it was sent again.
    Reregistered {
        /// Channel.
        channel_name: String,
        /// Which registration.
        role: Role,
        /// `None`: accepted; else the broker's error code and message.
        error: Option<(ErrorCode, String)>,
    },
    /// Another message without a correlation id.
    Other(Reply),
}

/// How a [`Client`] behaves.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Heartbeat interval until a broker's `_ACK` gives its own (default 500 ms).
    pub heartbeat: Duration,
    /// First discovery retry delay (default 5 ms); doubles up to `backoff_max`.
    pub backoff_start: Duration,
    /// Longest discovery retry delay (default 200 ms).
    pub backoff_max: Duration,
    /// CURVE: this client's key pair and the broker's public key (default `None`: plain
    /// ZMTP, `ipc://` only). Required for `tcp://`.
    pub curve: Option<ClientKeys>,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            heartbeat: Duration::from_millis(500),
            backoff_start: Duration::from_millis(5),
            backoff_max: Duration::from_millis(200),
            curve: None,
        }
    }
}

type ReplyTx = Sender<Result<Reply, BrokerError>>;

enum Cmd {
    Request {
        msg_type: String,
        body: Value,
        reply: ReplyTx,
        deadline: Instant,
    },
    /// Heartbeat `key` every `interval`; re-send `reg` on `NOT_REGISTERED`.
    Keep {
        key: (String, Role),
        reg: (String, Value),
        interval: Duration,
    },
    Forget {
        key: (String, Role),
    },
    Stop,
}

/// A connection to a broker. Cheap calls from any thread (`&self`).
pub struct Client {
    uid: String,
    endpoint: String,
    cmds: Mutex<Sender<Cmd>>,
    wake: Mutex<zmq::Socket>,
    notes: Mutex<Receiver<Notification>>,
    thread: Option<JoinHandle<()>>,
    options: ClientOptions,
    _ctx: zmq::Context,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("uid", &self.uid)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

fn zmq_err(what: &'static str) -> impl Fn(zmq::Error) -> BrokerError {
    move |source| BrokerError::Zmq { what, source }
}

/// Notifications kept for [`Client::next_notification`]; newer ones are dropped while it is
/// full.
pub const NOTIFICATION_QUEUE: usize = 1024;

static WAKE_N: AtomicU64 = AtomicU64::new(0);

impl Client {
    /// Connects to `endpoint` (`None`: [`endpoint::default_endpoint`]) as `role_uid`. ZeroMQ
    /// connects in the background: this succeeds before a broker listens, and requests wait
    /// (up to their timeouts) until one does.
    ///
    /// # Errors
    /// [`BrokerError::Endpoint`] for an unsupported endpoint (`tcp://` without
    /// [`ClientOptions::curve`] included), [`BrokerError::InvalidArgument`] for a role uid
    /// that is not 1..=128 printable ASCII bytes, [`BrokerError::Zmq`].
    pub fn connect(
        endpoint: Option<&str>,
        role_uid: &str,
        options: ClientOptions,
    ) -> Result<Client, BrokerError> {
        wire::check_role_uid(role_uid).map_err(BrokerError::InvalidArgument)?;
        let endpoint = match endpoint {
            Some(e) => e.to_owned(),
            None => endpoint::default_endpoint()?,
        };
        endpoint::transport(&endpoint, options.curve.is_some())?;
        let ctx = zmq::Context::new();
        let dealer = ctx.socket(zmq::DEALER).map_err(zmq_err("socket"))?;
        let n = WAKE_N.fetch_add(1, Ordering::Relaxed);
        let mut monitor = None;
        if let Some(keys) = &options.curve {
            dealer
                .set_curve_serverkey(keys.server.as_bytes())
                .map_err(zmq_err("ZMQ_CURVE_SERVERKEY"))?;
            dealer
                .set_curve_publickey(keys.pair.public().as_bytes())
                .map_err(zmq_err("ZMQ_CURVE_PUBLICKEY"))?;
            dealer
                .set_curve_secretkey(keys.pair.secret_bytes())
                .map_err(zmq_err("ZMQ_CURVE_SECRETKEY"))?;
            let mon_ep = format!("inproc://datahub-client-monitor-{n}");
            let events = zmq::SocketEvent::HANDSHAKE_FAILED_AUTH.to_raw()
                | zmq::SocketEvent::HANDSHAKE_SUCCEEDED.to_raw();
            dealer
                .monitor(&mon_ep, i32::from(events))
                .map_err(zmq_err("zmq_socket_monitor"))?;
            let pair = ctx.socket(zmq::PAIR).map_err(zmq_err("socket"))?;
            pair.set_linger(0).map_err(zmq_err("ZMQ_LINGER"))?;
            pair.connect(&mon_ep)
                .map_err(zmq_err("connect (monitor)"))?;
            monitor = Some(pair);
        }
        dealer
            .set_identity(role_uid.as_bytes())
            .map_err(zmq_err("ZMQ_ROUTING_ID"))?;
        dealer.set_linger(0).map_err(zmq_err("ZMQ_LINGER"))?;
        dealer
            .set_reconnect_ivl(10)
            .map_err(zmq_err("ZMQ_RECONNECT_IVL"))?;
        dealer
            .set_reconnect_ivl_max(200)
            .map_err(zmq_err("ZMQ_RECONNECT_IVL_MAX"))?;
        dealer
            .set_maxmsgsize(wire::MAX_BODY as i64 * 8)
            .map_err(zmq_err("ZMQ_MAXMSGSIZE"))?;
        dealer.connect(&endpoint).map_err(zmq_err("connect"))?;
        let wake_ep = format!("inproc://datahub-client-wake-{n}");
        let pull = ctx.socket(zmq::PULL).map_err(zmq_err("socket"))?;
        pull.bind(&wake_ep).map_err(zmq_err("bind"))?;
        let push = ctx.socket(zmq::PUSH).map_err(zmq_err("socket"))?;
        push.set_linger(0).map_err(zmq_err("ZMQ_LINGER"))?;
        push.connect(&wake_ep).map_err(zmq_err("connect"))?;
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let (note_tx, note_rx) = mpsc::sync_channel(NOTIFICATION_QUEUE);
        let io = Io {
            dealer,
            pull,
            monitor,
            auth_refused: None,
            endpoint: endpoint.clone(),
            cmds: cmd_rx,
            notes: note_tx,
            pending: HashMap::new(),
            rereg: HashMap::new(),
            keep: HashMap::new(),
            next_id: 0,
            default_interval: options.heartbeat,
        };
        let thread = std::thread::Builder::new()
            .name("datahub-broker-client".into())
            .spawn(move || io.run())
            .map_err(|e| BrokerError::Io {
                what: "spawning the client thread",
                source: e,
            })?;
        Ok(Client {
            uid: role_uid.to_owned(),
            endpoint,
            cmds: Mutex::new(cmd_tx),
            wake: Mutex::new(push),
            notes: Mutex::new(note_rx),
            thread: Some(thread),
            options,
            _ctx: ctx,
        })
    }

    /// This client's role uid.
    pub fn role_uid(&self) -> &str {
        &self.uid
    }

    /// The endpoint it connects to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn send_cmd(&self, c: Cmd) -> Result<(), BrokerError> {
        self.cmds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(c)
            .map_err(|_| BrokerError::Closed("the client's I/O thread stopped"))?;
        let _ = self
            .wake
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(&b""[..], zmq::DONTWAIT);
        Ok(())
    }

    /// Sends `msg_type` with `body` (`protocol` is added) and waits up to `timeout` for the
    /// reply. An `ERROR` reply is returned as a reply, not as an error.
    ///
    /// # Errors
    /// [`BrokerError::Timeout`], [`BrokerError::Closed`].
    pub fn request_raw(
        &self,
        msg_type: &str,
        body: Value,
        timeout: Duration,
    ) -> Result<Reply, BrokerError> {
        let (tx, rx) = mpsc::channel();
        self.send_cmd(Cmd::Request {
            msg_type: msg_type.to_owned(),
            body: wire::body(body),
            reply: tx,
            deadline: Instant::now() + timeout,
        })?;
        match rx.recv_timeout(timeout + Duration::from_millis(50)) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                Err(BrokerError::Timeout {
                    what: format!("a reply to {msg_type}"),
                    after: timeout,
                })
            }
        }
    }

    /// As [`Client::request_raw`], with an `ERROR` reply turned into
    /// [`BrokerError::Refused`] and a reply of another type than `expect` into
    /// [`BrokerError::BadReply`].
    ///
    /// # Errors
    /// Those, and [`Client::request_raw`]'s.
    pub fn request(
        &self,
        msg_type: &str,
        body: Value,
        expect: &[&str],
        timeout: Duration,
    ) -> Result<Reply, BrokerError> {
        let r = self.request_raw(msg_type, body, timeout)?;
        if r.msg_type == msg::ERROR {
            return Err(refused(&r.body));
        }
        if !expect.contains(&r.msg_type.as_str()) {
            return Err(BrokerError::BadReply(format!(
                "{msg_type} was answered with {}",
                wire::clip(&r.msg_type, 32)
            )));
        }
        Ok(r)
    }

    /// Registers `info` as this client's channel (`role_uid` is set to this client's) and
    /// starts heartbeating it; the first heartbeat goes out at once, which makes the channel
    /// discoverable. Call it once the block exists.
    ///
    /// # Errors
    /// [`BrokerError::Refused`] with `CHANNEL_EXISTS`, `SCHEMA_MISMATCH`, `INVALID_REQUEST`,
    /// ...; [`BrokerError::Timeout`].
    pub fn register(
        &self,
        info: &ChannelInfo,
        timeout: Duration,
    ) -> Result<HeartbeatConfig, BrokerError> {
        let mut info = info.clone();
        info.role_uid = self.uid.clone();
        let body = serde_json::to_value(&info).expect("ChannelInfo serializes");
        let r = self.request(msg::REG_REQ, body.clone(), &[msg::REG_ACK], timeout)?;
        let hb = heartbeat_of(&r)?;
        self.send_cmd(Cmd::Keep {
            key: (info.channel_name.clone(), Role::Producer),
            reg: (msg::REG_REQ.to_owned(), wire::body(body)),
            interval: hb.interval(),
        })?;
        Ok(hb)
    }

    /// Removes this client's channel (its consumers get `CHANNEL_CLOSING_NOTIFY`) and stops
    /// its heartbeats.
    ///
    /// # Errors
    /// [`BrokerError::Refused`] (`NOT_REGISTERED`), [`BrokerError::Timeout`].
    pub fn deregister(&self, channel: &str, timeout: Duration) -> Result<(), BrokerError> {
        self.send_cmd(Cmd::Forget {
            key: (channel.to_owned(), Role::Producer),
        })?;
        self.request(
            msg::DEREG_REQ,
            json!({ "channel_name": channel }),
            &[msg::DEREG_ACK],
            timeout,
        )?;
        Ok(())
    }

    /// Tells the broker that this client's channel moved to a successor block
    /// ([`crate::Producer::handover`]): `info` is the successor's registration (its
    /// `block_name` is `handover.new`; [`ChannelInfo::from_producer`] after the handover gives
    /// it). The broker answers `HANDOVER_ACK`, names the new block in later discoveries and
    /// sends `HANDOVER_NOTIFY` to the channel's registered consumers; this client's
    /// re-registrations (after a broker restart) use `info` from now on. Protocol 1.2.
    ///
    /// # Errors
    /// [`BrokerError::Refused`] (`NOT_REGISTERED`: not this client's channel;
    /// `INVALID_REQUEST`: the broker's block is not `handover.old`, or a bad name);
    /// [`BrokerError::Timeout`].
    pub fn handover(
        &self,
        info: &ChannelInfo,
        handover: &crate::Handover,
        timeout: Duration,
    ) -> Result<(), BrokerError> {
        let mut info = info.clone();
        info.role_uid = self.uid.clone();
        let body = json!({
            "channel_name": info.channel_name,
            "old_block": handover.old,
            "new_block": handover.new,
            "cutover_seq": handover.cutover_seq,
            "channel": serde_json::to_value(&info).expect("ChannelInfo serializes"),
        });
        let r = self.request(msg::HANDOVER_REQ, body, &[msg::HANDOVER_ACK], timeout)?;
        let hb = heartbeat_of(&r)?;
        let reg = serde_json::to_value(&info).expect("ChannelInfo serializes");
        self.send_cmd(Cmd::Keep {
            key: (info.channel_name.clone(), Role::Producer),
            reg: (msg::REG_REQ.to_owned(), wire::body(reg)),
            interval: hb.interval(),
        })?;
        Ok(())
    }

    /// Asks for `channel` until it is live, for at most `deadline` in all: `DISC_PENDING`,
    /// `CHANNEL_NOT_FOUND` and unanswered requests are retried after a delay that starts at
    /// [`ClientOptions::backoff_start`] and doubles up to [`ClientOptions::backoff_max`].
    /// With `schema`, the broker refuses a channel of another fingerprint.
    ///
    /// # Errors
    /// [`BrokerError::Refused`] with `SCHEMA_MISMATCH` (or another code that retrying cannot
    /// change) at once; [`BrokerError::Timeout`] at the deadline, naming the last answer.
    pub fn discover(
        &self,
        channel: &str,
        schema: Option<Fingerprint>,
        deadline: Duration,
    ) -> Result<ChannelInfo, BrokerError> {
        let end = Instant::now() + deadline;
        let mut delay = self.options.backoff_start.max(Duration::from_millis(1));
        let mut body = json!({ "channel_name": channel });
        if let Some(fp) = schema {
            body["schema_fingerprint"] = json!(fp.to_string());
        }
        let mut last = String::from("no reply");
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(BrokerError::Timeout {
                    what: format!("channel {channel:?} to be live (last answer: {last})"),
                    after: deadline,
                });
            }
            match self.request(
                msg::DISC_REQ,
                body.clone(),
                &[msg::DISC_ACK, msg::DISC_PENDING],
                left,
            ) {
                Ok(r) if r.msg_type == msg::DISC_ACK => return decode(&r),
                Ok(_) => last = msg::DISC_PENDING.to_owned(),
                Err(BrokerError::Refused {
                    code: ErrorCode::ChannelNotFound,
                    ..
                }) => last = "CHANNEL_NOT_FOUND".to_owned(),
                Err(BrokerError::Timeout { .. }) => last = "no reply".to_owned(),
                Err(e) => return Err(e),
            }
            let left = end.saturating_duration_since(Instant::now());
            std::thread::sleep(delay.min(left));
            delay = (delay * 2).min(self.options.backoff_max.max(delay));
        }
    }

    /// Registers this client as a consumer of `channel` (process `pid`, start time
    /// `start_time` from `/proc/PID/stat`) and starts heartbeating it. With `schema`, the
    /// broker refuses a channel of another fingerprint.
    ///
    /// # Errors
    /// [`BrokerError::Refused`] (`CHANNEL_NOT_FOUND`, `SCHEMA_MISMATCH`, ...),
    /// [`BrokerError::Timeout`].
    pub fn register_consumer(
        &self,
        channel: &str,
        schema: Option<Fingerprint>,
        timeout: Duration,
    ) -> Result<HeartbeatConfig, BrokerError> {
        let (pid, start) = crate::proc::me();
        let mut body = json!({
            "channel_name": channel,
            "consumer_pid": pid,
            "consumer_start_time": start,
        });
        if let Some(fp) = schema {
            body["schema_fingerprint"] = json!(fp.to_string());
        }
        let r = self.request(
            msg::CONSUMER_REG_REQ,
            body.clone(),
            &[msg::CONSUMER_REG_ACK],
            timeout,
        )?;
        let hb = heartbeat_of(&r)?;
        self.send_cmd(Cmd::Keep {
            key: (channel.to_owned(), Role::Consumer),
            reg: (msg::CONSUMER_REG_REQ.to_owned(), wire::body(body)),
            interval: hb.interval(),
        })?;
        Ok(hb)
    }

    /// Leaves `channel` as a consumer and stops its heartbeats.
    ///
    /// # Errors
    /// [`BrokerError::Refused`] (`NOT_REGISTERED`), [`BrokerError::Timeout`].
    pub fn deregister_consumer(&self, channel: &str, timeout: Duration) -> Result<(), BrokerError> {
        self.send_cmd(Cmd::Forget {
            key: (channel.to_owned(), Role::Consumer),
        })?;
        self.request(
            msg::CONSUMER_DEREG_REQ,
            json!({ "channel_name": channel }),
            &[msg::CONSUMER_DEREG_ACK],
            timeout,
        )?;
        Ok(())
    }

    /// The registered channels.
    ///
    /// # Errors
    /// [`BrokerError::Timeout`], [`BrokerError::BadReply`].
    pub fn channels(&self, timeout: Duration) -> Result<Vec<ChannelSummary>, BrokerError> {
        let r = self.request(
            msg::CHANNEL_LIST_REQ,
            json!({}),
            &[msg::CHANNEL_LIST_ACK],
            timeout,
        )?;
        field(&r, "channels")
    }

    /// A channel's schema, with the field list its producer gave.
    ///
    /// # Errors
    /// [`BrokerError::Refused`] (`CHANNEL_NOT_FOUND`), [`BrokerError::Timeout`].
    pub fn schema(&self, channel: &str, timeout: Duration) -> Result<SchemaInfo, BrokerError> {
        let r = self.request(
            msg::SCHEMA_REQ,
            json!({ "channel_name": channel }),
            &[msg::SCHEMA_ACK],
            timeout,
        )?;
        field(&r, "schema")
    }

    /// The broker's counters.
    ///
    /// # Errors
    /// [`BrokerError::Timeout`], [`BrokerError::BadReply`].
    pub fn metrics(&self, timeout: Duration) -> Result<BrokerMetrics, BrokerError> {
        let r = self.request(msg::METRICS_REQ, json!({}), &[msg::METRICS_ACK], timeout)?;
        decode(&r)
    }

    /// The next notification, waiting up to `timeout`.
    pub fn next_notification(&self, timeout: Duration) -> Option<Notification> {
        self.notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .recv_timeout(timeout)
            .ok()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.send_cmd(Cmd::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn refused(body: &Value) -> BrokerError {
    let code = body
        .get("error_code")
        .and_then(Value::as_str)
        .map(ErrorCode::parse)
        .unwrap_or(ErrorCode::Other(String::new()));
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .map(|m| wire::clip(m, wire::MAX_ERROR_MESSAGE).to_owned())
        .unwrap_or_default();
    BrokerError::Refused { code, message }
}

fn decode<T: DeserializeOwned>(r: &Reply) -> Result<T, BrokerError> {
    serde_json::from_value(r.body.clone())
        .map_err(|e| BrokerError::BadReply(format!("{}: {e}", r.msg_type)))
}

fn field<T: DeserializeOwned>(r: &Reply, name: &str) -> Result<T, BrokerError> {
    let v = r
        .body
        .get(name)
        .cloned()
        .ok_or_else(|| BrokerError::BadReply(format!("{} has no {name}", r.msg_type)))?;
    serde_json::from_value(v)
        .map_err(|e| BrokerError::BadReply(format!("{}.{name}: {e}", r.msg_type)))
}

fn heartbeat_of(r: &Reply) -> Result<HeartbeatConfig, BrokerError> {
    let hb: HeartbeatConfig = field(r, "heartbeat")?;
    Ok(hb.normalized())
}

struct Kept {
    reg: (String, Value),
    interval: Duration,
    due: Instant,
    /// When the re-registration in flight was sent (one at a time; retried when its reply
    /// has not come within four intervals).
    reregistering: Option<Instant>,
}

struct Pending {
    reply: ReplyTx,
    deadline: Instant,
}

/// The I/O thread's state.
struct Io {
    dealer: zmq::Socket,
    pull: zmq::Socket,
    /// The DEALER's monitor (CURVE only).
    monitor: Option<zmq::Socket>,
    /// The ZAP status of the last refused handshake, until one succeeds.
    auth_refused: Option<u32>,
    endpoint: String,
    cmds: Receiver<Cmd>,
    notes: SyncSender<Notification>,
    pending: HashMap<Vec<u8>, Pending>,
    rereg: HashMap<Vec<u8>, (String, Role)>,
    keep: HashMap<(String, Role), Kept>,
    next_id: u64,
    default_interval: Duration,
}

impl Io {
    fn id(&mut self) -> Vec<u8> {
        self.next_id += 1;
        self.next_id.to_string().into_bytes()
    }

    fn send(&self, msg_type: &str, corr: &[u8], body: &Value) -> bool {
        let b = serde_json::to_vec(body).expect("a JSON value serializes");
        let frames: [&[u8]; 4] = [MAGIC, msg_type.as_bytes(), corr, &b];
        self.dealer.send_multipart(frames, zmq::DONTWAIT).is_ok()
    }

    fn run(mut self) {
        loop {
            let now = Instant::now();
            let mut wait = Duration::from_millis(100);
            for k in self.keep.values() {
                wait = wait.min(k.due.saturating_duration_since(now));
            }
            for p in self.pending.values() {
                wait = wait.min(p.deadline.saturating_duration_since(now));
            }
            let (dealer_ready, pull_ready, monitor_ready) = {
                let mut items = vec![
                    self.dealer.as_poll_item(zmq::POLLIN),
                    self.pull.as_poll_item(zmq::POLLIN),
                ];
                if let Some(m) = &self.monitor {
                    items.push(m.as_poll_item(zmq::POLLIN));
                }
                match zmq::poll(&mut items, wait.as_millis() as i64) {
                    Ok(_) => (
                        items[0].is_readable(),
                        items[1].is_readable(),
                        items.get(2).is_some_and(zmq::PollItem::is_readable),
                    ),
                    Err(_) => (false, false, false),
                }
            };
            if monitor_ready {
                self.monitor_events();
            }
            if pull_ready {
                while self.pull.recv_bytes(zmq::DONTWAIT).is_ok() {}
            }
            loop {
                match self.cmds.try_recv() {
                    Ok(Cmd::Stop) | Err(mpsc::TryRecvError::Disconnected) => return,
                    Ok(c) => self.command(c),
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            if dealer_ready {
                for _ in 0..1024 {
                    match self.dealer.recv_multipart(zmq::DONTWAIT) {
                        Ok(frames) => self.incoming(frames),
                        Err(_) => break,
                    }
                }
            }
            self.heartbeats();
            let now = Instant::now();
            self.pending.retain(|_, p| p.deadline > now);
        }
    }

    /// Reads the monitor's events: `[event u16, value u32]` (native byte order), endpoint.
    fn monitor_events(&mut self) {
        let Some(m) = &self.monitor else { return };
        let mut events = Vec::new();
        for _ in 0..64 {
            let Ok(frames) = m.recv_multipart(zmq::DONTWAIT) else {
                break;
            };
            if let Some(f) = frames.first().filter(|f| f.len() == 6) {
                let event = u16::from_ne_bytes([f[0], f[1]]);
                let value = u32::from_ne_bytes([f[2], f[3], f[4], f[5]]);
                events.push((event, value));
            }
        }
        for (event, value) in events {
            if event == zmq::SocketEvent::HANDSHAKE_FAILED_AUTH.to_raw() {
                self.auth_refused = Some(value);
                let endpoint = &self.endpoint;
                for (_, p) in self.pending.drain() {
                    let _ = p.reply.send(Err(BrokerError::AuthRefused {
                        endpoint: endpoint.clone(),
                        status: value,
                    }));
                }
            } else if event == zmq::SocketEvent::HANDSHAKE_SUCCEEDED.to_raw() {
                self.auth_refused = None;
            }
        }
    }

    fn refusal(&self, status: u32) -> BrokerError {
        BrokerError::AuthRefused {
            endpoint: self.endpoint.clone(),
            status,
        }
    }

    fn command(&mut self, c: Cmd) {
        match c {
            Cmd::Request { reply, .. } if self.auth_refused.is_some() => {
                let status = self.auth_refused.unwrap_or(0);
                let _ = reply.send(Err(self.refusal(status)));
            }
            Cmd::Request {
                msg_type,
                body,
                reply,
                deadline,
            } => {
                let corr = self.id();
                if self.send(&msg_type, &corr, &body) {
                    self.pending.insert(corr, Pending { reply, deadline });
                } else {
                    // Not connected yet (or the queue is full): the caller retries or
                    // times out; keep the request until its deadline by resending later
                    // would reorder it, so say so now.
                    let _ = reply.send(Err(BrokerError::Timeout {
                        what: format!("sending {msg_type} (no broker connected)"),
                        after: Duration::ZERO,
                    }));
                }
            }
            Cmd::Keep { key, reg, interval } => {
                let interval = if interval.is_zero() {
                    self.default_interval
                } else {
                    interval
                };
                self.keep.insert(
                    key,
                    Kept {
                        reg,
                        interval,
                        due: Instant::now(),
                        reregistering: None,
                    },
                );
            }
            Cmd::Forget { key } => {
                self.keep.remove(&key);
            }
            Cmd::Stop => {}
        }
    }

    fn heartbeats(&mut self) {
        let now = Instant::now();
        let mut due = Vec::new();
        for (key, k) in self.keep.iter_mut() {
            if k.due <= now {
                due.push(key.clone());
                k.due = now + k.interval;
            }
        }
        for (channel, role) in due {
            let body = wire::body(json!({ "channel_name": channel, "role": role }));
            self.send(msg::HEARTBEAT_NOTIFY, b"", &body);
        }
    }

    fn incoming(&mut self, frames: Vec<Vec<u8>>) {
        let [magic, t, corr, body] = match <[Vec<u8>; 4]>::try_from(frames) {
            Ok(f) => f,
            Err(_) => return,
        };
        if magic != MAGIC {
            return;
        }
        let msg_type = String::from_utf8_lossy(&t).into_owned();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let reply = Reply { msg_type, body };
        if let Some(p) = self.pending.remove(&corr) {
            let _ = p.reply.send(Ok(reply));
            return;
        }
        if let Some(key) = self.rereg.remove(&corr) {
            let error = (reply.msg_type == msg::ERROR).then(|| match refused(&reply.body) {
                BrokerError::Refused { code, message } => (code, message),
                _ => unreachable!("refused builds Refused"),
            });
            if let Some(k) = self.keep.get_mut(&key) {
                k.reregistering = None;
                if error.is_none() {
                    // Live again at once.
                    k.due = Instant::now();
                }
            }
            let _ = self.notes.try_send(Notification::Reregistered {
                channel_name: key.0,
                role: key.1,
                error,
            });
            return;
        }
        if !corr.is_empty() {
            return; // a reply nobody waits for any more
        }
        let s = |k: &str| {
            reply
                .body
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let n = |k: &str| {
            reply
                .body
                .get(k)
                .and_then(Value::as_u64)
                .map(|v| v.min(u64::from(u32::MAX)) as u32)
        };
        let note = match reply.msg_type.as_str() {
            msg::CONSUMER_DIED_NOTIFY => Notification::ConsumerDied {
                channel_name: s("channel_name"),
                consumer_uid: s("consumer_uid"),
                consumer_pid: n("consumer_pid").unwrap_or(0),
                reason: s("reason"),
                consumers: n("consumers"),
            },
            msg::CONSUMER_JOINED_NOTIFY => Notification::ConsumerJoined {
                channel_name: s("channel_name"),
                consumer_uid: s("consumer_uid"),
                consumer_pid: n("consumer_pid").unwrap_or(0),
                consumers: n("consumers").unwrap_or(0),
            },
            msg::CONSUMER_LEFT_NOTIFY => Notification::ConsumerLeft {
                channel_name: s("channel_name"),
                consumer_uid: s("consumer_uid"),
                consumer_pid: n("consumer_pid").unwrap_or(0),
                reason: s("reason"),
                consumers: n("consumers").unwrap_or(0),
            },
            msg::HANDOVER_NOTIFY => Notification::HandedOver {
                channel_name: s("channel_name"),
                old_block: s("old_block"),
                new_block: s("new_block"),
                cutover_seq: reply
                    .body
                    .get("cutover_seq")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
            },
            msg::CHANNEL_CLOSING_NOTIFY => {
                let channel_name = s("channel_name");
                self.keep.remove(&(channel_name.clone(), Role::Consumer));
                Notification::ChannelClosing {
                    channel_name,
                    reason: s("reason"),
                }
            }
            msg::ERROR if s("error_code") == "NOT_REGISTERED" => {
                let role = match s("role").as_str() {
                    "producer" => Role::Producer,
                    "consumer" => Role::Consumer,
                    _ => return,
                };
                let key = (s("channel_name"), role);
                self.reregister(key);
                return;
            }
            _ => Notification::Other(reply),
        };
        let _ = self.notes.try_send(note);
    }

    fn reregister(&mut self, key: (String, Role)) {
        let Some(k) = self.keep.get_mut(&key) else {
            return;
        };
        if k.reregistering
            .is_some_and(|t| t.elapsed() < k.interval.max(Duration::from_millis(50)) * 4)
        {
            return;
        }
        k.reregistering = Some(Instant::now());
        let (t, body) = k.reg.clone();
        let corr = self.id();
        if self.send(&t, &corr, &body) {
            self.rereg.insert(corr, key);
        } else if let Some(k) = self.keep.get_mut(&key) {
            k.reregistering = None;
        }
        // Replies that never came.
        if self.rereg.len() > 64 {
            self.rereg.clear();
        }
    }
}
