//! The broker's registry and liveness state machine: pure (no sockets, no clock of its own).
//!
//! [`Registry::handle`] takes one message as the ROUTER received it (identity frame first) and
//! the current time; [`Registry::tick`] takes the time alone. Both return the messages to send
//! ([`Outgoing`]) and what changed ([`Event`], for logs). Time is a [`Duration`] since any fixed
//! origin, supplied by the caller, so tests drive it by hand.
//!
//! # Liveness (per registration: a channel's producer, each consumer)
//! - A producer's registration starts **Pending** (no heartbeat yet); its first heartbeat makes
//!   it **Live**. A consumer's starts **Live** (its registration is its first sign of life).
//! - After `pending_after` ([`HeartbeatConfig::pending_after`]) without a heartbeat it is
//!   Pending again; after `dead_after` it is **Dead** and removed: a dead consumer is reported
//!   to its producer (`CONSUMER_DIED_NOTIFY`), a dead producer to its consumers
//!   (`CHANNEL_CLOSING_NOTIFY`), both with `reason: "heartbeat_timeout"`.
//! - `DISC_REQ` answers `DISC_ACK` only while the producer is Live, `DISC_PENDING` otherwise.
//!
//! # Invariants
//! - At most one producer per channel; a `REG_REQ` for a registered channel is accepted only
//!   from the same role uid with the same fingerprint (a re-registration).
//! - Every consumer registration belongs to a registered channel, and its fingerprint (if it
//!   cited one) is the channel's; removing a channel removes its consumers.
//! - Nothing here blocks or grows without bound: channels and consumers per channel are capped
//!   ([`Limits`]); every accepted string is bounded ([`super::wire`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::wire::{
    self, ChannelInfo, ChannelOnly, ChannelSummary, ConsumerRegReq, Counters, DiscReq, ErrorCode,
    HandoverReq, HeartbeatConfig, HeartbeatReq, MAGIC, MAX_CHANNEL_NAME, MAX_CORRELATION_ID,
    MAX_ERROR_MESSAGE, MAX_MSG_TYPE, PROTOCOL_MAJOR, Role, msg,
};
use crate::schema::Fingerprint;

/// Caps on what one broker holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most channels (default 4096).
    pub max_channels: usize,
    /// Most consumer registrations per channel (default 256).
    pub max_consumers_per_channel: usize,
    /// Largest `REG_REQ` body, bytes (default 256 KiB, `schema.fields` included): a bigger
    /// one is `INVALID_REQUEST`.
    pub max_registration_bytes: usize,
    /// Most bytes of `REG_REQ` bodies the registry keeps over all channels (default 64 MiB):
    /// a registration past it is `REGISTRY_FULL`. With the other limits this bounds what
    /// hostile registrations can make the broker hold.
    pub max_registry_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_channels: 4096,
            max_consumers_per_channel: 256,
            max_registration_bytes: 256 << 10,
            max_registry_bytes: 64 << 20,
        }
    }
}

/// A registration's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// Heartbeats arrive.
    Live,
    /// No heartbeat yet (a new producer), or none for `pending_after`.
    Pending,
    /// None for `dead_after`: removed.
    Dead,
}

/// One message to send: ROUTER frames `[identity, 'C', msg_type, correlation_id, body]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Destination routing id.
    pub identity: Vec<u8>,
    /// Message type.
    pub msg_type: &'static str,
    /// Correlation id of the request answered (empty for notifications).
    pub correlation_id: Vec<u8>,
    /// The JSON body.
    pub body: Value,
}

impl Outgoing {
    /// The five ROUTER frames.
    pub fn frames(&self) -> [Vec<u8>; 5] {
        [
            self.identity.clone(),
            MAGIC.to_vec(),
            self.msg_type.as_bytes().to_vec(),
            self.correlation_id.clone(),
            serde_json::to_vec(&self.body).expect("a JSON value serializes"),
        ]
    }
}

/// What changed in the registry (one log line each).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A producer registered a channel (`again`: the same uid re-registered).
    ChannelRegistered {
        /// Channel.
        channel: String,
        /// Producer uid.
        uid: String,
        /// Producer pid.
        pid: u32,
        /// A re-registration.
        again: bool,
    },
    /// A producer's liveness changed.
    ChannelLiveness {
        /// Channel.
        channel: String,
        /// New state (Live or Pending).
        to: Liveness,
    },
    /// A channel was removed (`reason`: `producer_deregistered`, `heartbeat_timeout`).
    ChannelRemoved {
        /// Channel.
        channel: String,
        /// Why.
        reason: &'static str,
    },
    /// A producer moved its channel to a successor block (protocol 1.2).
    ChannelHandedOver {
        /// Channel.
        channel: String,
        /// The old block.
        old: String,
        /// The new block.
        new: String,
        /// First sequence number in the new block.
        cutover_seq: u64,
    },
    /// A consumer registered.
    ConsumerRegistered {
        /// Channel.
        channel: String,
        /// Consumer uid.
        uid: String,
        /// Consumer pid.
        pid: u32,
    },
    /// A consumer's liveness changed.
    ConsumerLiveness {
        /// Channel.
        channel: String,
        /// Consumer uid.
        uid: String,
        /// New state.
        to: Liveness,
    },
    /// A consumer was removed (`consumer_deregistered`, `heartbeat_timeout`,
    /// `channel_removed`).
    ConsumerRemoved {
        /// Channel.
        channel: String,
        /// Consumer uid.
        uid: String,
        /// Why.
        reason: &'static str,
    },
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::ChannelRegistered {
                channel,
                uid,
                pid,
                again,
            } => write!(
                f,
                "channel {channel:?}: producer {uid:?} (pid {pid}) {}",
                if *again {
                    "re-registered"
                } else {
                    "registered"
                }
            ),
            Event::ChannelLiveness { channel, to } => {
                write!(f, "channel {channel:?}: producer {}", name(*to))
            }
            Event::ChannelRemoved { channel, reason } => {
                write!(f, "channel {channel:?}: removed ({reason})")
            }
            Event::ChannelHandedOver {
                channel,
                old,
                new,
                cutover_seq,
            } => write!(
                f,
                "channel {channel:?}: handed over from block {old:?} to {new:?} at seq {cutover_seq}"
            ),
            Event::ConsumerRegistered { channel, uid, pid } => {
                write!(
                    f,
                    "channel {channel:?}: consumer {uid:?} (pid {pid}) registered"
                )
            }
            Event::ConsumerLiveness { channel, uid, to } => {
                write!(f, "channel {channel:?}: consumer {uid:?} {}", name(*to))
            }
            Event::ConsumerRemoved {
                channel,
                uid,
                reason,
            } => write!(
                f,
                "channel {channel:?}: consumer {uid:?} removed ({reason})"
            ),
        }
    }
}

fn name(l: Liveness) -> &'static str {
    match l {
        Liveness::Live => "live",
        Liveness::Pending => "pending",
        Liveness::Dead => "dead",
    }
}

/// What one call produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Step {
    /// Messages to send, in order.
    pub out: Vec<Outgoing>,
    /// What changed.
    pub events: Vec<Event>,
}

#[derive(Debug, Clone)]
struct Alive {
    last_seen: Duration,
    heard: bool,
    state: Liveness,
}

impl Alive {
    fn at(now: Duration, heard: bool) -> Alive {
        Alive {
            last_seen: now,
            heard,
            state: if heard {
                Liveness::Live
            } else {
                Liveness::Pending
            },
        }
    }

    fn due(&self, now: Duration, hb: &HeartbeatConfig) -> Liveness {
        let silent = now.saturating_sub(self.last_seen);
        if silent >= hb.dead_after() {
            Liveness::Dead
        } else if silent >= hb.pending_after() || !self.heard {
            Liveness::Pending
        } else {
            Liveness::Live
        }
    }
}

#[derive(Debug, Clone)]
struct ConsumerReg {
    pid: u32,
    alive: Alive,
}

#[derive(Debug, Clone)]
struct Channel {
    info: ChannelInfo,
    /// Size of the `REG_REQ` body it was registered with (counted against
    /// [`Limits::max_registry_bytes`]).
    bytes: usize,
    fingerprint: Fingerprint,
    producer: Alive,
    consumers: BTreeMap<String, ConsumerReg>,
}

/// The registry: channels, their consumers, liveness and counters.
#[derive(Debug, Clone)]
pub struct Registry {
    hb: HeartbeatConfig,
    limits: Limits,
    channels: BTreeMap<String, Channel>,
    counters: Counters,
    started: Duration,
    /// When [`Registry::tick`] last ran: [`Registry::handle`] runs it again only after
    /// [`Registry::granularity`], so a message costs O(1) and not O(registrations).
    last_tick: Duration,
}

/// A refusal on its way to an `ERROR` reply.
struct Refusal {
    code: ErrorCode,
    message: String,
    extra: Value,
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
        extra: Value::Null,
    }
}

fn invalid(message: impl Into<String>) -> Refusal {
    refuse(ErrorCode::InvalidRequest, message)
}

type Reply = Result<(&'static str, Value), Refusal>;

impl Registry {
    /// An empty registry; `now` is its start (for `uptime_ms`).
    pub fn new(hb: HeartbeatConfig, limits: Limits, now: Duration) -> Registry {
        Registry {
            hb: hb.normalized(),
            limits,
            channels: BTreeMap::new(),
            counters: Counters::default(),
            started: now,
            last_tick: now,
        }
    }

    /// How stale liveness may be when a message is handled: a quarter of the heartbeat
    /// interval, at most 20 ms (the ZeroMQ loop also ticks this often).
    pub fn granularity(&self) -> Duration {
        (self.hb.interval() / 4).clamp(Duration::from_millis(1), Duration::from_millis(20))
    }

    /// The heartbeat timing every `_ACK` carries.
    pub fn heartbeat(&self) -> HeartbeatConfig {
        self.hb
    }

    /// The counters so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Counts replies the transport could not deliver.
    pub fn note_send(&mut self, delivered: bool) {
        if delivered {
            self.counters.sent += 1;
        } else {
            self.counters.send_dropped += 1;
        }
    }

    /// Registered channels.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// A channel's producer liveness (None: not registered).
    pub fn channel_state(&self, channel: &str) -> Option<Liveness> {
        self.channels.get(channel).map(|c| c.producer.state)
    }

    /// A consumer's liveness (None: not registered).
    pub fn consumer_state(&self, channel: &str, uid: &str) -> Option<Liveness> {
        self.channels
            .get(channel)?
            .consumers
            .get(uid)
            .map(|c| c.alive.state)
    }

    /// Liveness transitions due at `now`: Pending and Dead registrations, removals and their
    /// notifications.
    pub fn tick(&mut self, now: Duration) -> Step {
        self.last_tick = now;
        let mut step = Step::default();
        let hb = self.hb;
        let mut dead_channels = Vec::new();
        for (name, ch) in self.channels.iter_mut() {
            let mut dead_consumers = Vec::new();
            for (uid, c) in ch.consumers.iter_mut() {
                let to = c.alive.due(now, &hb);
                if to == c.alive.state {
                    continue;
                }
                c.alive.state = to;
                if to == Liveness::Dead {
                    dead_consumers.push(uid.clone());
                } else {
                    step.events.push(Event::ConsumerLiveness {
                        channel: name.clone(),
                        uid: uid.clone(),
                        to,
                    });
                }
            }
            for uid in dead_consumers {
                let c = ch.consumers.remove(&uid).expect("listed above");
                self.counters.consumers_died += 1;
                step.out.push(consumer_note(
                    ch,
                    msg::CONSUMER_DIED_NOTIFY,
                    &uid,
                    c.pid,
                    Some(wire::REASON_HEARTBEAT_TIMEOUT),
                ));
                step.events.push(Event::ConsumerRemoved {
                    channel: name.clone(),
                    uid,
                    reason: wire::REASON_HEARTBEAT_TIMEOUT,
                });
            }
            let to = ch.producer.due(now, &hb);
            if to != ch.producer.state {
                ch.producer.state = to;
                if to == Liveness::Dead {
                    dead_channels.push(name.clone());
                } else {
                    step.events.push(Event::ChannelLiveness {
                        channel: name.clone(),
                        to,
                    });
                }
            }
        }
        for name in dead_channels {
            self.counters.producers_died += 1;
            self.remove_channel(&name, wire::REASON_HEARTBEAT_TIMEOUT, &mut step);
        }
        step
    }

    /// Removes a channel, telling its consumers why.
    fn remove_channel(&mut self, name: &str, reason: &'static str, step: &mut Step) {
        let Some(ch) = self.channels.remove(name) else {
            return;
        };
        for uid in ch.consumers.keys() {
            step.out.push(Outgoing {
                identity: uid.as_bytes().to_vec(),
                msg_type: msg::CHANNEL_CLOSING_NOTIFY,
                correlation_id: Vec::new(),
                body: wire::body(json!({
                    "channel_name": name,
                    "role_uid": ch.info.role_uid,
                    "reason": reason,
                })),
            });
            step.events.push(Event::ConsumerRemoved {
                channel: name.to_owned(),
                uid: uid.clone(),
                reason: "channel_removed",
            });
        }
        step.events.push(Event::ChannelRemoved {
            channel: name.to_owned(),
            reason,
        });
    }

    /// Handles one message as a ROUTER received it: `frames[0]` is the sender's identity, then
    /// `['C', msg_type, correlation_id, body]`. Anything else gets `ERROR INVALID_REQUEST`
    /// (with an empty correlation id when frame 3 is missing or too long); a message without
    /// an identity frame is dropped. Liveness is brought up to date first when the last
    /// [`Registry::tick`] is older than [`Registry::granularity`].
    pub fn handle(&mut self, now: Duration, frames: &[Vec<u8>]) -> Step {
        let mut step = if now.saturating_sub(self.last_tick) >= self.granularity() {
            self.tick(now)
        } else {
            Step::default()
        };
        self.counters.received += 1;
        let Some(identity) = frames.first().filter(|i| !i.is_empty()) else {
            return step;
        };
        let correlation_id = frames
            .get(3)
            .filter(|c| c.len() <= MAX_CORRELATION_ID)
            .cloned()
            .unwrap_or_default();
        let reply = self.dispatch(now, identity, frames, &mut step);
        match reply {
            Ok(("", _)) => {}
            Ok((msg_type, body)) => step.out.push(Outgoing {
                identity: identity.clone(),
                msg_type,
                correlation_id,
                body,
            }),
            Err(r) => {
                self.counters.errors += 1;
                if r.code == ErrorCode::InvalidRequest {
                    self.counters.invalid_requests += 1;
                }
                let mut body = json!({
                    "status": "error",
                    "error_code": r.code.as_str(),
                    "message": wire::clip(&r.message, MAX_ERROR_MESSAGE),
                });
                if let (Value::Object(b), Value::Object(extra)) = (&mut body, r.extra) {
                    b.extend(extra);
                }
                step.out.push(Outgoing {
                    identity: identity.clone(),
                    msg_type: msg::ERROR,
                    correlation_id,
                    body: wire::body(body),
                });
            }
        }
        step
    }

    fn ok(&self, mut v: Value) -> Value {
        if let Value::Object(m) = &mut v {
            m.insert("status".into(), json!("ok"));
            m.insert("heartbeat".into(), json!(self.hb));
        }
        wire::body(v)
    }

    fn dispatch(
        &mut self,
        now: Duration,
        identity: &[u8],
        frames: &[Vec<u8>],
        step: &mut Step,
    ) -> Reply {
        if frames.len() != 5 {
            return Err(invalid(format!(
                "a message has 4 frames ['C', msg_type, correlation_id, body], not {}",
                frames.len().saturating_sub(1)
            )));
        }
        if frames[1] != MAGIC {
            return Err(invalid("the first frame is not 'C'"));
        }
        if frames[3].len() > MAX_CORRELATION_ID {
            return Err(invalid(format!(
                "correlation_id is longer than {MAX_CORRELATION_ID} bytes"
            )));
        }
        let msg_type = std::str::from_utf8(&frames[2])
            .ok()
            .filter(|t| !t.is_empty() && t.len() <= MAX_MSG_TYPE && wire::printable(t))
            .ok_or_else(|| invalid("msg_type is not 1..=32 printable ASCII bytes"))?;
        let body: Value = serde_json::from_slice(&frames[4])
            .map_err(|e| invalid(format!("body is not JSON: {e}")))?;
        if !body.is_object() {
            return Err(invalid("body is not a JSON object"));
        }
        check_protocol(&body)?;
        let uid = std::str::from_utf8(identity).unwrap_or("");
        match msg_type {
            msg::REG_REQ => {
                let bytes = frames[4].len();
                if bytes > self.limits.max_registration_bytes {
                    return Err(invalid(format!(
                        "a REG_REQ body of {bytes} bytes is over the broker's {} (schema.fields included)",
                        self.limits.max_registration_bytes
                    )));
                }
                self.register(now, identity, parse(body)?, bytes, step)
            }
            msg::DEREG_REQ => self.deregister(uid, parse(body)?, step),
            msg::HANDOVER_REQ => self.handover(identity, parse(body)?, step),
            msg::DISC_REQ => self.discover(parse(body)?),
            msg::CONSUMER_REG_REQ => self.consumer_register(now, uid, parse(body)?, step),
            msg::CONSUMER_DEREG_REQ => self.consumer_deregister(uid, parse(body)?, step),
            msg::HEARTBEAT_NOTIFY => self.heartbeat_of(now, uid, parse(body)?, step),
            msg::CHANNEL_LIST_REQ => Ok((msg::CHANNEL_LIST_ACK, self.list())),
            msg::SCHEMA_REQ => self.schema(parse(body)?),
            msg::METRICS_REQ => Ok((msg::METRICS_ACK, self.metrics(now))),
            other => Err(refuse(
                ErrorCode::UnknownMsgType,
                format!("unknown msg_type {other:?}"),
            )),
        }
    }

    fn register(
        &mut self,
        now: Duration,
        identity: &[u8],
        info: ChannelInfo,
        bytes: usize,
        step: &mut Step,
    ) -> Reply {
        let fp = info.validate(identity).map_err(invalid)?;
        let name = info.channel_name.clone();
        let held: usize = self
            .channels
            .iter()
            .filter(|(n, _)| **n != name)
            .map(|(_, c)| c.bytes)
            .sum();
        if held.saturating_add(bytes) > self.limits.max_registry_bytes {
            return Err(refuse(
                ErrorCode::RegistryFull,
                format!(
                    "the broker holds {held} bytes of registrations; {bytes} more is over its {}",
                    self.limits.max_registry_bytes
                ),
            ));
        }
        let again = match self.channels.get_mut(&name) {
            Some(ch) if ch.fingerprint != fp => {
                return Err(refuse(
                    ErrorCode::SchemaMismatch,
                    format!(
                        "channel {name:?} is registered with schema {}, not {fp}",
                        ch.fingerprint
                    ),
                ));
            }
            Some(ch) if ch.info.role_uid != info.role_uid => {
                return Err(refuse(
                    ErrorCode::ChannelExists,
                    format!(
                        "channel {name:?} has a live producer {:?} (pid {})",
                        ch.info.role_uid, ch.info.producer_pid
                    ),
                ));
            }
            Some(ch) => {
                // The same producer again: a restarted process waits for its first
                // heartbeat; the same process keeps its liveness.
                if (ch.info.producer_pid, ch.info.producer_start_time)
                    != (info.producer_pid, info.producer_start_time)
                {
                    ch.producer = Alive::at(now, false);
                }
                ch.info = info;
                ch.bytes = bytes;
                true
            }
            None => {
                if self.channels.len() >= self.limits.max_channels {
                    return Err(refuse(
                        ErrorCode::RegistryFull,
                        format!("the broker holds {} channels", self.channels.len()),
                    ));
                }
                self.channels.insert(
                    name.clone(),
                    Channel {
                        info,
                        bytes,
                        fingerprint: fp,
                        producer: Alive::at(now, false),
                        consumers: BTreeMap::new(),
                    },
                );
                false
            }
        };
        self.counters.registrations += 1;
        let ch = &self.channels[&name];
        step.events.push(Event::ChannelRegistered {
            channel: name.clone(),
            uid: ch.info.role_uid.clone(),
            pid: ch.info.producer_pid,
            again,
        });
        Ok((msg::REG_ACK, self.ok(json!({ "channel_name": name }))))
    }

    fn deregister(&mut self, uid: &str, req: ChannelOnly, step: &mut Step) -> Reply {
        match self.channels.get(&req.channel_name) {
            Some(ch) if ch.info.role_uid == uid => {}
            _ => return Err(not_registered(&req.channel_name, Role::Producer)),
        }
        self.remove_channel(&req.channel_name, wire::REASON_DEREGISTERED, step);
        self.counters.deregistrations += 1;
        Ok((
            msg::DEREG_ACK,
            self.ok(json!({ "channel_name": req.channel_name })),
        ))
    }

    /// `HANDOVER_REQ`: the channel's producer moved it to block `new_block` from
    /// `old_block` (the one registered); the registration now names the new block (and, with
    /// `channel`, its new layout and schema) and every registered consumer gets
    /// `HANDOVER_NOTIFY`.
    fn handover(&mut self, identity: &[u8], req: HandoverReq, step: &mut Step) -> Reply {
        let uid = std::str::from_utf8(identity).unwrap_or("");
        wire::check_channel_name(&req.channel_name).map_err(invalid)?;
        for (what, b) in [("old_block", &req.old_block), ("new_block", &req.new_block)] {
            if crate::segment::check_name(b).is_err() || !wire::printable(b) {
                return Err(invalid(format!(
                    "{what} {:?} is not a block name",
                    wire::clip(b, MAX_CHANNEL_NAME)
                )));
            }
        }
        let ch = match self.channels.get(&req.channel_name) {
            Some(ch) if ch.info.role_uid == uid => ch,
            _ => return Err(not_registered(&req.channel_name, Role::Producer)),
        };
        if ch.info.block_name != req.old_block {
            return Err(invalid(format!(
                "channel {:?} is on block {:?}, not {:?}",
                req.channel_name, ch.info.block_name, req.old_block
            )));
        }
        let replacement = match req.channel {
            Some(info) => {
                if info.channel_name != req.channel_name || info.block_name != req.new_block {
                    return Err(invalid(
                        "channel.channel_name / channel.block_name differ from the request",
                    ));
                }
                let fp = info.validate(identity).map_err(invalid)?;
                Some((info, fp))
            }
            None => None,
        };
        let ch = self
            .channels
            .get_mut(&req.channel_name)
            .expect("looked up above");
        match replacement {
            Some((info, fp)) => {
                ch.info = info;
                ch.fingerprint = fp;
            }
            None => ch.info.block_name = req.new_block.clone(),
        }
        for cuid in ch.consumers.keys() {
            step.out.push(Outgoing {
                identity: cuid.as_bytes().to_vec(),
                msg_type: msg::HANDOVER_NOTIFY,
                correlation_id: Vec::new(),
                body: wire::body(json!({
                    "channel_name": req.channel_name,
                    "old_block": req.old_block,
                    "new_block": req.new_block,
                    "cutover_seq": req.cutover_seq,
                })),
            });
        }
        step.events.push(Event::ChannelHandedOver {
            channel: req.channel_name.clone(),
            old: req.old_block.clone(),
            new: req.new_block.clone(),
            cutover_seq: req.cutover_seq,
        });
        Ok((
            msg::HANDOVER_ACK,
            self.ok(json!({
                "channel_name": req.channel_name,
                "block_name": req.new_block,
                "cutover_seq": req.cutover_seq,
            })),
        ))
    }

    fn channel(&self, name: &str) -> Result<&Channel, Refusal> {
        wire::check_channel_name(name).map_err(invalid)?;
        self.channels.get(name).ok_or_else(|| {
            refuse(
                ErrorCode::ChannelNotFound,
                format!("no channel {name:?} is registered"),
            )
        })
    }

    fn check_citation(ch: &Channel, cited: Option<&str>) -> Result<(), Refusal> {
        let Some(cited) = cited else { return Ok(()) };
        let fp = wire::parse_fingerprint("schema_fingerprint", cited).map_err(invalid)?;
        if fp != ch.fingerprint {
            return Err(refuse(
                ErrorCode::SchemaMismatch,
                format!(
                    "channel {:?} has schema {}, not {fp}",
                    ch.info.channel_name, ch.fingerprint
                ),
            ));
        }
        Ok(())
    }

    fn discover(&mut self, req: DiscReq) -> Reply {
        let ch = self.channel(&req.channel_name)?;
        Self::check_citation(ch, req.schema_fingerprint.as_deref())?;
        if ch.producer.state != Liveness::Live {
            self.counters.discoveries_pending += 1;
            return Ok((
                msg::DISC_PENDING,
                self.ok(json!({ "channel_name": req.channel_name })),
            ));
        }
        let v = serde_json::to_value(&ch.info).expect("ChannelInfo serializes");
        self.counters.discoveries += 1;
        Ok((msg::DISC_ACK, self.ok(v)))
    }

    fn consumer_register(
        &mut self,
        now: Duration,
        uid: &str,
        req: ConsumerRegReq,
        step: &mut Step,
    ) -> Reply {
        wire::check_role_uid(uid).map_err(invalid)?;
        let max = self.limits.max_consumers_per_channel;
        let ch = self.channel(&req.channel_name)?;
        Self::check_citation(ch, req.schema_fingerprint.as_deref())?;
        if req.consumer_pid == 0 {
            return Err(invalid("consumer_pid must not be 0"));
        }
        let _ = req.consumer_start_time;
        let ch = self
            .channels
            .get_mut(&req.channel_name)
            .expect("found above");
        let known = ch.consumers.get(uid).map(|c| c.pid);
        if known.is_none() && ch.consumers.len() >= max {
            return Err(refuse(
                ErrorCode::RegistryFull,
                format!("channel {:?} has {max} consumers", req.channel_name),
            ));
        }
        ch.consumers.insert(
            uid.to_owned(),
            ConsumerReg {
                pid: req.consumer_pid,
                alive: Alive::at(now, true),
            },
        );
        // The producer hears of a new consumer (or of a uid now held by another process), not
        // of a re-registration after a broker restart or a repeated request.
        if known != Some(req.consumer_pid) {
            step.out.push(consumer_note(
                ch,
                msg::CONSUMER_JOINED_NOTIFY,
                uid,
                req.consumer_pid,
                None,
            ));
        }
        self.counters.consumer_registrations += 1;
        step.events.push(Event::ConsumerRegistered {
            channel: req.channel_name.clone(),
            uid: uid.to_owned(),
            pid: req.consumer_pid,
        });
        Ok((
            msg::CONSUMER_REG_ACK,
            self.ok(json!({ "channel_name": req.channel_name, "role_uid": ch_uid(self, &req.channel_name) })),
        ))
    }

    fn consumer_deregister(&mut self, uid: &str, req: ChannelOnly, step: &mut Step) -> Reply {
        let Some(ch) = self.channels.get_mut(&req.channel_name) else {
            return Err(not_registered(&req.channel_name, Role::Consumer));
        };
        let Some(removed) = ch.consumers.remove(uid) else {
            return Err(not_registered(&req.channel_name, Role::Consumer));
        };
        step.out.push(consumer_note(
            ch,
            msg::CONSUMER_LEFT_NOTIFY,
            uid,
            removed.pid,
            Some(wire::REASON_CONSUMER_DEREGISTERED),
        ));
        self.counters.consumer_deregistrations += 1;
        step.events.push(Event::ConsumerRemoved {
            channel: req.channel_name.clone(),
            uid: uid.to_owned(),
            reason: wire::REASON_CONSUMER_DEREGISTERED,
        });
        Ok((
            msg::CONSUMER_DEREG_ACK,
            self.ok(json!({ "channel_name": req.channel_name })),
        ))
    }

    fn heartbeat_of(
        &mut self,
        now: Duration,
        uid: &str,
        req: HeartbeatReq,
        step: &mut Step,
    ) -> Reply {
        let ch = self.channels.get_mut(&req.channel_name);
        let (alive, event) = match (ch, req.role) {
            (Some(ch), Role::Producer) if ch.info.role_uid == uid => (
                &mut ch.producer,
                Event::ChannelLiveness {
                    channel: req.channel_name.clone(),
                    to: Liveness::Live,
                },
            ),
            (Some(ch), Role::Consumer) if ch.consumers.contains_key(uid) => (
                &mut ch.consumers.get_mut(uid).expect("checked").alive,
                Event::ConsumerLiveness {
                    channel: req.channel_name.clone(),
                    uid: uid.to_owned(),
                    to: Liveness::Live,
                },
            ),
            _ => return Err(not_registered(&req.channel_name, req.role)),
        };
        alive.last_seen = now;
        alive.heard = true;
        if alive.state != Liveness::Live {
            alive.state = Liveness::Live;
            step.events.push(event);
        }
        self.counters.heartbeats += 1;
        Ok(("", Value::Null))
    }

    fn list(&self) -> Value {
        let channels: Vec<ChannelSummary> = self
            .channels
            .values()
            .map(|ch| ChannelSummary {
                channel_name: ch.info.channel_name.clone(),
                role_uid: ch.info.role_uid.clone(),
                block_name: ch.info.block_name.clone(),
                attach_socket: ch.info.attach_socket.clone(),
                policy: ch.info.policy,
                state: name(ch.producer.state).to_owned(),
                consumers: ch.consumers.len() as u32,
                schema: wire::SchemaInfo {
                    fields: None,
                    ..ch.info.schema.clone()
                },
                producer_pid: ch.info.producer_pid,
            })
            .collect();
        self.ok(json!({ "channels": channels }))
    }

    fn schema(&self, req: ChannelOnly) -> Reply {
        let ch = self.channel(&req.channel_name)?;
        Ok((
            msg::SCHEMA_ACK,
            self.ok(json!({ "channel_name": req.channel_name, "schema": ch.info.schema })),
        ))
    }

    fn metrics(&self, now: Duration) -> Value {
        self.ok(json!(wire::BrokerMetrics {
            counters: self.counters,
            channels: self.channels.len() as u64,
            consumers: self
                .channels
                .values()
                .map(|c| c.consumers.len() as u64)
                .sum(),
            uptime_ms: now.saturating_sub(self.started).as_millis() as u64,
            auth: None,
        }))
    }
}

/// A notification to `ch`'s producer about consumer `uid`: `CONSUMER_JOINED_NOTIFY` (no
/// reason), `CONSUMER_LEFT_NOTIFY` or `CONSUMER_DIED_NOTIFY`, with the consumer count after it.
fn consumer_note(
    ch: &Channel,
    msg_type: &'static str,
    uid: &str,
    pid: u32,
    reason: Option<&str>,
) -> Outgoing {
    let mut body = json!({
        "channel_name": ch.info.channel_name,
        "consumer_uid": uid,
        "consumer_pid": pid,
        "consumers": ch.consumers.len(),
    });
    if let Some(r) = reason {
        body["reason"] = json!(r);
    }
    Outgoing {
        identity: ch.info.role_uid.as_bytes().to_vec(),
        msg_type,
        correlation_id: Vec::new(),
        body: wire::body(body),
    }
}

fn ch_uid(r: &Registry, channel: &str) -> String {
    r.channels
        .get(channel)
        .map(|c| c.info.role_uid.clone())
        .unwrap_or_default()
}

fn not_registered(channel: &str, role: Role) -> Refusal {
    Refusal {
        code: ErrorCode::NotRegistered,
        message: format!(
            "no {} registration of channel {:?} from this role uid",
            role.as_str(),
            wire::clip(channel, 64)
        ),
        extra: json!({ "channel_name": wire::clip(channel, wire::MAX_CHANNEL_NAME), "role": role }),
    }
}

fn check_protocol(body: &Value) -> Result<(), Refusal> {
    let p = body
        .get("protocol")
        .ok_or_else(|| invalid("body has no protocol {major, minor}"))?;
    let v: wire::ProtocolVersion =
        serde_json::from_value(p.clone()).map_err(|e| invalid(format!("protocol: {e}")))?;
    if v.major != PROTOCOL_MAJOR {
        return Err(refuse(
            ErrorCode::ProtocolVersion,
            format!(
                "protocol {}.{} is not supported: this broker speaks {PROTOCOL_MAJOR}.x",
                v.major, v.minor
            ),
        ));
    }
    Ok(())
}

fn parse<T: DeserializeOwned>(body: Value) -> Result<T, Refusal> {
    serde_json::from_value(body).map_err(|e| invalid(format!("body: {e}")))
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
