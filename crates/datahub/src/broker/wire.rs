//! Wire protocol 1.2: frames, message names, bodies and their limits (`docs/datahub-broker.md`
//! is the specification; this module is its Rust half).
//!
//! A client (ZeroMQ DEALER, `routing_id` = its role uid) sends four frames
//! `['C', msg_type, correlation_id, body]`; the broker (ROUTER) sees the sender's identity
//! first and answers to it with the same four frames. `body` is one UTF-8 JSON object that
//! carries `protocol: {major, minor}`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::layout::{ChecksumPolicy, Policy};
use crate::schema::{Field, Fingerprint, Scalar, SchemaLayout, ZoneLayout};

/// The first frame of every message (after the ROUTER's identity frame).
pub const MAGIC: &[u8] = b"C";
/// Protocol major version: a body with another major is refused (`PROTOCOL_VERSION`).
pub const PROTOCOL_MAJOR: u32 = 1;
/// Protocol minor version: any minor of the same major is accepted. 1.1 added
/// `CONSUMER_JOINED_NOTIFY`, `CONSUMER_LEFT_NOTIFY` and the `consumers` count of the consumer
/// notifications (a 1.0 client ignores them). 1.2 added the optional `attach_socket` of a
/// channel (secure attach: the block is reached through a Unix socket, `block_name` is empty)
/// and `HANDOVER_REQ` / `HANDOVER_ACK` / `HANDOVER_NOTIFY` (a producer moved its channel to a
/// successor block; older clients ignore the notification and still follow through the
/// block's header).
pub const PROTOCOL_MINOR: u32 = 2;
/// Longest `attach_socket` path, bytes (a Unix socket address holds 107 and a NUL).
pub const MAX_ATTACH_SOCKET: usize = 107;
/// Default largest message part the broker accepts, bytes (`ZMQ_MAXMSGSIZE`: a peer sending
/// a bigger one is disconnected by libzmq before the part is buffered).
pub const MAX_BODY: usize = 1 << 20;
/// Longest channel name, bytes.
pub const MAX_CHANNEL_NAME: usize = 200;
/// Longest role uid (the DEALER's routing id), bytes.
pub const MAX_ROLE_UID: usize = 128;
/// Longest correlation id, bytes.
pub const MAX_CORRELATION_ID: usize = 64;
/// Longest message type, bytes.
pub const MAX_MSG_TYPE: usize = 32;
/// Longest free text (schema id, reason), bytes.
pub const MAX_TEXT: usize = 256;
/// Longest error message the broker sends, bytes.
pub const MAX_ERROR_MESSAGE: usize = 512;

/// Message type names (frame 2).
pub mod msg {
    /// Producer registers a channel.
    pub const REG_REQ: &str = "REG_REQ";
    /// Reply to `REG_REQ`.
    pub const REG_ACK: &str = "REG_ACK";
    /// Producer removes its channel.
    pub const DEREG_REQ: &str = "DEREG_REQ";
    /// Reply to `DEREG_REQ`.
    pub const DEREG_ACK: &str = "DEREG_ACK";
    /// Consumer asks for a channel's block.
    pub const DISC_REQ: &str = "DISC_REQ";
    /// Reply to `DISC_REQ`: the channel is live.
    pub const DISC_ACK: &str = "DISC_ACK";
    /// Reply to `DISC_REQ`: registered, not live yet (or stale); ask again.
    pub const DISC_PENDING: &str = "DISC_PENDING";
    /// Consumer registers with a channel.
    pub const CONSUMER_REG_REQ: &str = "CONSUMER_REG_REQ";
    /// Reply to `CONSUMER_REG_REQ`.
    pub const CONSUMER_REG_ACK: &str = "CONSUMER_REG_ACK";
    /// Consumer leaves a channel.
    pub const CONSUMER_DEREG_REQ: &str = "CONSUMER_DEREG_REQ";
    /// Reply to `CONSUMER_DEREG_REQ`.
    pub const CONSUMER_DEREG_ACK: &str = "CONSUMER_DEREG_ACK";
    /// A registration is alive (producer or consumer); no reply unless it is unknown.
    pub const HEARTBEAT_NOTIFY: &str = "HEARTBEAT_NOTIFY";
    /// Broker to producer: one of its consumers is gone.
    pub const CONSUMER_DIED_NOTIFY: &str = "CONSUMER_DIED_NOTIFY";
    /// Broker to producer: a consumer registered with its channel (protocol 1.1).
    pub const CONSUMER_JOINED_NOTIFY: &str = "CONSUMER_JOINED_NOTIFY";
    /// Broker to producer: a consumer deregistered from its channel (protocol 1.1).
    pub const CONSUMER_LEFT_NOTIFY: &str = "CONSUMER_LEFT_NOTIFY";
    /// Producer: its channel moved to a successor block (protocol 1.2).
    pub const HANDOVER_REQ: &str = "HANDOVER_REQ";
    /// Reply to `HANDOVER_REQ` (protocol 1.2).
    pub const HANDOVER_ACK: &str = "HANDOVER_ACK";
    /// Broker to consumers: the channel's block was handed over (protocol 1.2).
    pub const HANDOVER_NOTIFY: &str = "HANDOVER_NOTIFY";
    /// Broker to consumers: the channel is going away.
    pub const CHANNEL_CLOSING_NOTIFY: &str = "CHANNEL_CLOSING_NOTIFY";
    /// List the registered channels.
    pub const CHANNEL_LIST_REQ: &str = "CHANNEL_LIST_REQ";
    /// Reply to `CHANNEL_LIST_REQ`.
    pub const CHANNEL_LIST_ACK: &str = "CHANNEL_LIST_ACK";
    /// A channel's schema (with its field list, when the producer gave one).
    pub const SCHEMA_REQ: &str = "SCHEMA_REQ";
    /// Reply to `SCHEMA_REQ`.
    pub const SCHEMA_ACK: &str = "SCHEMA_ACK";
    /// The broker's counters.
    pub const METRICS_REQ: &str = "METRICS_REQ";
    /// Reply to `METRICS_REQ`.
    pub const METRICS_ACK: &str = "METRICS_ACK";
    /// Any refused request.
    pub const ERROR: &str = "ERROR";
}

/// `reason` of a `CONSUMER_DIED_NOTIFY` / `CHANNEL_CLOSING_NOTIFY` after missed heartbeats.
pub const REASON_HEARTBEAT_TIMEOUT: &str = "heartbeat_timeout";
/// `reason` of a `CHANNEL_CLOSING_NOTIFY` after the producer's `DEREG_REQ`.
pub const REASON_DEREGISTERED: &str = "producer_deregistered";
/// `reason` of a `CONSUMER_LEFT_NOTIFY` after the consumer's `CONSUMER_DEREG_REQ`.
pub const REASON_CONSUMER_DEREGISTERED: &str = "consumer_deregistered";

/// Why a request was refused: `error_code` of an `ERROR` body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Wrong frames, not JSON, a missing or mistyped field, a value out of bounds.
    InvalidRequest,
    /// The body's `protocol.major` is not 1.
    ProtocolVersion,
    /// No such channel.
    ChannelNotFound,
    /// Another live producer owns the channel.
    ChannelExists,
    /// The cited schema fingerprint is not the channel's.
    SchemaMismatch,
    /// The heartbeat's or deregistration's registration is unknown (re-register).
    NotRegistered,
    /// `msg_type` is not one of protocol 1's.
    UnknownMsgType,
    /// The broker holds as many channels (or consumers of this channel) as it allows.
    RegistryFull,
    /// A code this library does not know (from a newer broker).
    Other(String),
}

impl ErrorCode {
    /// The code as sent (`INVALID_REQUEST`, ...).
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::ProtocolVersion => "PROTOCOL_VERSION",
            ErrorCode::ChannelNotFound => "CHANNEL_NOT_FOUND",
            ErrorCode::ChannelExists => "CHANNEL_EXISTS",
            ErrorCode::SchemaMismatch => "SCHEMA_MISMATCH",
            ErrorCode::NotRegistered => "NOT_REGISTERED",
            ErrorCode::UnknownMsgType => "UNKNOWN_MSG_TYPE",
            ErrorCode::RegistryFull => "REGISTRY_FULL",
            ErrorCode::Other(s) => s,
        }
    }

    /// The code named `s` (unknown names give [`ErrorCode::Other`]).
    pub fn parse(s: &str) -> ErrorCode {
        match s {
            "INVALID_REQUEST" => ErrorCode::InvalidRequest,
            "PROTOCOL_VERSION" => ErrorCode::ProtocolVersion,
            "CHANNEL_NOT_FOUND" => ErrorCode::ChannelNotFound,
            "CHANNEL_EXISTS" => ErrorCode::ChannelExists,
            "SCHEMA_MISMATCH" => ErrorCode::SchemaMismatch,
            "NOT_REGISTERED" => ErrorCode::NotRegistered,
            "UNKNOWN_MSG_TYPE" => ErrorCode::UnknownMsgType,
            "REGISTRY_FULL" => ErrorCode::RegistryFull,
            other => ErrorCode::Other(clip(other, MAX_TEXT).to_owned()),
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `protocol` of every body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolVersion {
    /// Major: must be [`PROTOCOL_MAJOR`].
    pub major: u32,
    /// Minor: any.
    pub minor: u32,
}

impl ProtocolVersion {
    /// This library's version, 1.2.
    pub const CURRENT: ProtocolVersion = ProtocolVersion {
        major: PROTOCOL_MAJOR,
        minor: PROTOCOL_MINOR,
    };
}

/// Liveness timing, in every `_ACK`: a registration is Pending after `pending_after_misses`
/// intervals without a heartbeat and Dead (removed, notified) after `dead_after_misses` more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatConfig {
    /// Heartbeat period a client keeps, ms (≥ 1).
    pub interval_ms: u64,
    /// Missed intervals before a registration is Pending (≥ 1).
    pub pending_after_misses: u32,
    /// Further missed intervals before it is Dead (≥ 1).
    pub dead_after_misses: u32,
}

impl Default for HeartbeatConfig {
    /// pylabhub's: 500 ms, Pending after 10 misses (5 s), Dead after 10 more (10 s).
    fn default() -> HeartbeatConfig {
        HeartbeatConfig {
            interval_ms: 500,
            pending_after_misses: 10,
            dead_after_misses: 10,
        }
    }
}

impl HeartbeatConfig {
    /// A config with this interval and the default miss counts.
    pub fn every(interval: std::time::Duration) -> HeartbeatConfig {
        HeartbeatConfig {
            interval_ms: (interval.as_millis() as u64).max(1),
            ..HeartbeatConfig::default()
        }
    }

    /// The interval as a duration.
    pub fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.interval_ms)
    }

    /// Silence after which a registration is Pending.
    pub fn pending_after(&self) -> std::time::Duration {
        self.interval()
            .saturating_mul(self.pending_after_misses.max(1))
    }

    /// Silence after which a registration is Dead.
    pub fn dead_after(&self) -> std::time::Duration {
        self.interval().saturating_mul(
            self.pending_after_misses
                .max(1)
                .saturating_add(self.dead_after_misses.max(1)),
        )
    }

    pub(crate) fn normalized(self) -> HeartbeatConfig {
        HeartbeatConfig {
            interval_ms: self.interval_ms.clamp(1, 3_600_000),
            pending_after_misses: self.pending_after_misses.clamp(1, 1_000_000),
            dead_after_misses: self.dead_after_misses.clamp(1, 1_000_000),
        }
    }
}

/// A block's format version, `{major, minor}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormatVersion {
    /// Major.
    pub major: u16,
    /// Minor.
    pub minor: u16,
}

/// One field of a zone, as sent: `{name, type, offset, count}` ([`crate::schema::Field`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldDesc {
    /// Field name.
    pub name: String,
    /// `u8`, `i8`, ..., `f64`.
    #[serde(rename = "type")]
    pub ty: String,
    /// Byte offset in the zone.
    pub offset: u64,
    /// Elements (1 for a scalar).
    pub count: u64,
}

/// A zone's layout, as sent: `{size, align, fields}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneDesc {
    /// Zone bytes.
    pub size: u64,
    /// Zone alignment, bytes.
    pub align: u64,
    /// Fields.
    pub fields: Vec<FieldDesc>,
}

/// A schema's field list per zone: `{slot, flex}`, either may be absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SchemaFields {
    /// What a slot holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<ZoneDesc>,
    /// What the flexible zone holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flex: Option<ZoneDesc>,
}

impl ZoneDesc {
    fn of(z: &ZoneLayout) -> ZoneDesc {
        ZoneDesc {
            size: z.size,
            align: z.align,
            fields: z
                .fields
                .iter()
                .map(|f| FieldDesc {
                    name: f.name.clone(),
                    ty: f.ty.name().to_owned(),
                    offset: f.offset,
                    count: f.count,
                })
                .collect(),
        }
    }

    fn layout(&self) -> Result<ZoneLayout, String> {
        let mut fields = Vec::with_capacity(self.fields.len());
        for f in &self.fields {
            let ty = Scalar::from_name(&f.ty)
                .ok_or_else(|| format!("field type {:?} is not a scalar type", clip(&f.ty, 16)))?;
            fields.push(Field {
                name: f.name.clone(),
                ty,
                offset: f.offset,
                count: f.count,
            });
        }
        Ok(ZoneLayout {
            size: self.size,
            align: self.align,
            fields,
        })
    }
}

impl SchemaFields {
    /// The field lists of `layout`.
    pub fn of(layout: &SchemaLayout) -> SchemaFields {
        SchemaFields {
            slot: layout.slot.as_ref().map(ZoneDesc::of),
            flex: layout.flex.as_ref().map(ZoneDesc::of),
        }
    }

    /// Back to a [`SchemaLayout`] (unchecked; its fingerprint checks it).
    ///
    /// # Errors
    /// A field type that is not a scalar name.
    pub fn layout(&self) -> Result<SchemaLayout, String> {
        Ok(SchemaLayout {
            slot: self.slot.as_ref().map(ZoneDesc::layout).transpose()?,
            flex: self.flex.as_ref().map(ZoneDesc::layout).transpose()?,
        })
    }
}

/// A channel's schema: `{id, version, fingerprint, fields?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaInfo {
    /// Free text naming the schema (for example `lab.Pose`), at most [`MAX_TEXT`] bytes; not
    /// compared.
    pub id: String,
    /// The block header's schema version.
    pub version: u32,
    /// The block header's 32-byte schema hash as `DHS01_<64 hex>` ([`Fingerprint`]); the only
    /// thing negotiation compares.
    pub fingerprint: String,
    /// The field lists whose fingerprint this is, if the producer gave them (the broker checks
    /// that they hash to `fingerprint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<SchemaFields>,
}

/// What a producer registers and a consumer discovers: everything needed to find a block and
/// check it before mapping it. Never a key or anything derived from one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelInfo {
    /// Channel name: 1..=200 printable ASCII bytes, no space.
    pub channel_name: String,
    /// The producer's role uid (its DEALER routing id).
    pub role_uid: String,
    /// The block's shared-memory name; empty for a secure channel (`attach_socket`).
    pub block_name: String,
    /// Secure attach (protocol 1.2): the absolute path of the Unix socket the producer serves
    /// its sealed memfd block on ([`crate::Producer::create_secure`]); absent for a named block.
    /// The block key never passes through the broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach_socket: Option<String>,
    /// Slot policy: `latest`, `sequential`, `sequential_sync`.
    pub policy: Policy,
    /// Payload bytes per slot.
    pub slot_size: u32,
    /// Slots in the ring.
    pub slot_count: u32,
    /// Flexible zone bytes.
    pub flex_zone_size: u64,
    /// Most consumers at once (1..=64).
    pub max_consumers: u32,
    /// Checksum policy: `none`, `manual`, `enforced`.
    pub checksum: ChecksumPolicy,
    /// Checksums are keyed (a consumer needs the key, which never passes through the broker).
    pub keyed: bool,
    /// The block's format version.
    pub format_version: FormatVersion,
    /// The header's layout hash, 16 lower-case hex digits (a u64: JSON numbers lose bits).
    pub layout_hash: String,
    /// The payload schema.
    pub schema: SchemaInfo,
    /// The producer's process id.
    pub producer_pid: u32,
    /// The producer's start time: field 22 of `/proc/PID/stat`, clock ticks since boot.
    pub producer_start_time: u64,
}

/// A channel in a `CHANNEL_LIST_ACK`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSummary {
    /// Channel name.
    pub channel_name: String,
    /// Producer role uid.
    pub role_uid: String,
    /// Block name (empty for a secure channel).
    pub block_name: String,
    /// The secure channel's socket path (protocol 1.2; absent for a named block).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach_socket: Option<String>,
    /// Slot policy.
    pub policy: Policy,
    /// `live` or `pending` (the producer's liveness).
    pub state: String,
    /// Registered consumers.
    pub consumers: u32,
    /// Schema id, version and fingerprint (no fields).
    pub schema: SchemaInfo,
    /// Producer pid.
    pub producer_pid: u32,
}

/// The broker's counters (`METRICS_ACK.counters`); every one counts since the broker started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Messages received (any shape).
    pub received: u64,
    /// Replies and notifications handed to ZeroMQ.
    pub sent: u64,
    /// Replies or notifications ZeroMQ refused (peer gone or its queue full).
    pub send_dropped: u64,
    /// `ERROR` replies.
    pub errors: u64,
    /// `ERROR INVALID_REQUEST` replies.
    pub invalid_requests: u64,
    /// Accepted `REG_REQ`s (re-registrations included).
    pub registrations: u64,
    /// Accepted `DEREG_REQ`s.
    pub deregistrations: u64,
    /// `DISC_ACK`s.
    pub discoveries: u64,
    /// `DISC_PENDING`s.
    pub discoveries_pending: u64,
    /// Accepted `CONSUMER_REG_REQ`s.
    pub consumer_registrations: u64,
    /// Accepted `CONSUMER_DEREG_REQ`s.
    pub consumer_deregistrations: u64,
    /// Heartbeats of known registrations.
    pub heartbeats: u64,
    /// Producers removed after missed heartbeats.
    pub producers_died: u64,
    /// Consumers removed after missed heartbeats.
    pub consumers_died: u64,
}

/// `METRICS_ACK`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerMetrics {
    /// Counters.
    pub counters: Counters,
    /// Registered channels now.
    pub channels: u64,
    /// Registered consumers now (all channels).
    pub consumers: u64,
    /// Milliseconds since the broker started.
    pub uptime_ms: u64,
    /// CURVE handshakes, on a broker with keys (absent otherwise; an optional field since
    /// protocol 1.1, so 1.0 readers ignore it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthCounters>,
}

/// `METRICS_ACK.auth`: what the broker's ZAP handler decided, since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AuthCounters {
    /// Handshakes of a client whose key is allowed (answered 200).
    pub allowed: u64,
    /// Handshakes refused (answered 400: a key not in the allowlist, or not CURVE).
    pub refused: u64,
    /// Messages dropped because their connection carried no ZAP user id (never expected;
    /// a guard should the ZAP handler be missing).
    pub unauthenticated: u64,
    /// Handshakes that failed before ZAP was asked: a client holding another server key, a
    /// plaintext or malformed peer (as libzmq's monitor reports them).
    #[serde(default)]
    pub handshake_failed: u64,
}

/// `role` of a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The channel's producer.
    Producer,
    /// One of its consumers.
    Consumer,
}

impl Role {
    /// `producer` / `consumer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
        }
    }
}

// ---- request bodies the broker parses ----

#[derive(Debug, Deserialize)]
pub(crate) struct ChannelOnly {
    pub channel_name: String,
}

/// `HANDOVER_REQ` body (protocol 1.2).
#[derive(Debug, Deserialize)]
pub(crate) struct HandoverReq {
    pub channel_name: String,
    pub old_block: String,
    pub new_block: String,
    pub cutover_seq: u64,
    /// The successor's registration (its layout, schema, ...); `block_name` must be
    /// `new_block`. Without it only the block name changes.
    #[serde(default)]
    pub channel: Option<ChannelInfo>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct DiscReq {
    pub channel_name: String,
    #[serde(default)]
    pub schema_fingerprint: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ConsumerRegReq {
    pub channel_name: String,
    pub consumer_pid: u32,
    #[serde(default)]
    pub consumer_start_time: u64,
    #[serde(default)]
    pub schema_fingerprint: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct HeartbeatReq {
    pub channel_name: String,
    pub role: Role,
}

/// A body as a JSON object with `protocol` added.
pub(crate) fn body(v: Value) -> Value {
    let mut m = match v {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    m.insert("protocol".into(), json!(ProtocolVersion::CURRENT));
    Value::Object(m)
}

/// The first `max` bytes of `s` (cut at a character boundary).
pub(crate) fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Printable ASCII, no space: channel names and role uids.
pub(crate) fn printable(s: &str) -> bool {
    s.bytes().all(|c| (0x21..=0x7e).contains(&c))
}

/// Checks a channel name.
pub(crate) fn check_channel_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_CHANNEL_NAME || !printable(s) {
        return Err(format!(
            "channel_name {:?} is not 1..={MAX_CHANNEL_NAME} printable ASCII bytes without spaces",
            clip(s, 64)
        ));
    }
    Ok(())
}

/// Checks a role uid.
pub(crate) fn check_role_uid(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_ROLE_UID || !printable(s) {
        return Err(format!(
            "role uid {:?} is not 1..={MAX_ROLE_UID} printable ASCII bytes without spaces",
            clip(s, 64)
        ));
    }
    Ok(())
}

/// Checks free text: at most [`MAX_TEXT`] bytes, no control characters.
pub(crate) fn check_text(what: &str, s: &str) -> Result<(), String> {
    if s.len() > MAX_TEXT || s.chars().any(char::is_control) {
        return Err(format!(
            "{what} is longer than {MAX_TEXT} bytes or has control characters"
        ));
    }
    Ok(())
}

/// Checks an `attach_socket` path: absolute, 2..=[`MAX_ATTACH_SOCKET`] bytes, no control
/// characters.
pub(crate) fn check_attach_socket(s: &str) -> Result<(), String> {
    if !s.starts_with('/')
        || s.len() < 2
        || s.len() > MAX_ATTACH_SOCKET
        || s.chars().any(char::is_control)
    {
        return Err(format!(
            "attach_socket {:?} is not an absolute path of at most {MAX_ATTACH_SOCKET} bytes without control characters",
            clip(s, 64)
        ));
    }
    Ok(())
}

/// Parses a `DHS01_...` fingerprint field.
pub(crate) fn parse_fingerprint(what: &str, s: &str) -> Result<Fingerprint, String> {
    s.parse::<Fingerprint>()
        .map_err(|e| format!("{what} {:?}: {e}", clip(s, 80)))
}

impl ChannelInfo {
    /// Checks every field's bounds and, when `schema.fields` is present, that it hashes to
    /// `schema.fingerprint`. `identity` is the sender's routing id (the `role_uid` must be it).
    pub(crate) fn validate(&self, identity: &[u8]) -> Result<Fingerprint, String> {
        check_channel_name(&self.channel_name)?;
        check_role_uid(&self.role_uid)?;
        if self.role_uid.as_bytes() != identity {
            return Err("role_uid is not the sender's routing id".into());
        }
        if let Some(sock) = &self.attach_socket {
            check_attach_socket(sock)?;
            if !self.block_name.is_empty() {
                return Err("a channel with attach_socket has an empty block_name".into());
            }
        } else {
            crate::segment::check_name(&self.block_name).map_err(|_| {
                format!(
                    "block_name {:?} is not a block name",
                    clip(&self.block_name, 64)
                )
            })?;
            if !printable(&self.block_name) {
                return Err("block_name has characters outside printable ASCII".into());
            }
        }
        if self.slot_size == 0 || self.slot_count == 0 {
            return Err("slot_size and slot_count must be at least 1".into());
        }
        if !(1..=crate::layout::MAX_CONSUMERS as u32).contains(&self.max_consumers) {
            return Err(format!(
                "max_consumers {} is not 1..={}",
                self.max_consumers,
                crate::layout::MAX_CONSUMERS
            ));
        }
        if self.layout_hash.len() != 16
            || !self
                .layout_hash
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        {
            return Err("layout_hash is not 16 lower-case hex digits".into());
        }
        if self.producer_pid == 0 {
            return Err("producer_pid must not be 0".into());
        }
        check_text("schema.id", &self.schema.id)?;
        let fp = parse_fingerprint("schema.fingerprint", &self.schema.fingerprint)?;
        if let Some(fields) = &self.schema.fields {
            let got = fields
                .layout()?
                .fingerprint()
                .map_err(|e| format!("schema.fields: {e}"))?;
            if got != fp {
                return Err(format!(
                    "schema.fields hash to {got}, not to schema.fingerprint {fp}"
                ));
            }
        }
        Ok(fp)
    }
}
