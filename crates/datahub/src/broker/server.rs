//! The broker's ZeroMQ loop: a ROUTER socket in front of the [`Registry`].
//!
//! One thread owns the socket and the registry. It polls with a timeout no longer than the
//! tick period (a quarter of the heartbeat interval, at most [`STOP_POLL`]), handles at most
//! [`BATCH`] messages per wake-up, and sends replies with `DONTWAIT`: a client that does not
//! read (or is gone) loses its replies and never blocks the loop. Parts bigger than
//! [`BrokerConfig::max_body`] are refused by libzmq (`ZMQ_MAXMSGSIZE`: the peer is
//! disconnected before the part is buffered); a message with more than 5 frames is read to its
//! end and answered `ERROR INVALID_REQUEST`, keeping only its first frames.
//!
//! # CURVE
//! With [`BrokerConfig::curve`], the ROUTER is a CURVE server (`tcp://` endpoints are allowed
//! then) and a ZAP handler (ZeroMQ RFC 27) runs on its own thread: a REP socket bound to
//! `inproc://zeromq.zap.01` on the broker's context, answering `200` for a client key in the
//! allowlist and `400` otherwise. libzmq's I/O thread asks it during each handshake; the
//! ROUTER loop never waits for it. It is bound before the ROUTER and stopped only after the
//! ROUTER is closed, because libzmq accepts a CURVE client without asking when no ZAP
//! handler is bound. As a second guard, the loop drops any message whose connection carries
//! no ZAP `User-Id` (counted in `METRICS_ACK.auth.unauthenticated`). A socket monitor on the
//! ROUTER counts the handshakes that fail before ZAP is asked (a wrong server key, a
//! plaintext peer: `METRICS_ACK.auth.handshake_failed`).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::BrokerError;
use super::endpoint;
use super::keys::ServerKeys;
use super::state::{Event, Limits, Registry};
use super::wire::{AuthCounters, HeartbeatConfig, MAX_BODY, msg};

/// Longest poll; a stop request is seen within this.
pub const STOP_POLL: Duration = Duration::from_millis(20);
/// Most messages handled per wake-up before liveness is checked again.
pub const BATCH: usize = 256;
/// Frames kept of one message (identity + 4); further frames are read and dropped.
const KEEP_FRAMES: usize = 6;

/// A callback for registry changes (one call per [`Event`]).
pub type EventSink = Arc<dyn Fn(&Event) + Send + Sync>;

/// How to run a broker.
#[derive(Clone)]
pub struct BrokerConfig {
    /// Where to listen: `ipc://PATH` (default: [`endpoint::default_endpoint`]), or
    /// `tcp://HOST:PORT` with [`BrokerConfig::curve`].
    pub endpoint: Option<String>,
    /// Liveness timing (default: 500 ms, 10 + 10 misses).
    pub heartbeat: HeartbeatConfig,
    /// Registry caps.
    pub limits: Limits,
    /// Largest message part accepted, bytes (default [`MAX_BODY`], 1 MiB).
    pub max_body: usize,
    /// Called for every registry change (the CLI logs them).
    pub on_event: Option<EventSink>,
    /// CURVE: the broker's key pair and the client keys allowed in (`None`: no
    /// authentication, `ipc://` only).
    pub curve: Option<ServerKeys>,
}

impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("endpoint", &self.endpoint)
            .field("heartbeat", &self.heartbeat)
            .field("limits", &self.limits)
            .field("max_body", &self.max_body)
            .field("on_event", &self.on_event.is_some())
            .field(
                "curve",
                &self
                    .curve
                    .as_ref()
                    .map(|k| (k.pair.public(), k.allowed.len())),
            )
            .finish()
    }
}

impl Default for BrokerConfig {
    fn default() -> BrokerConfig {
        BrokerConfig {
            endpoint: None,
            heartbeat: HeartbeatConfig::default(),
            limits: Limits::default(),
            max_body: MAX_BODY,
            on_event: None,
            curve: None,
        }
    }
}

impl BrokerConfig {
    /// The default config listening on `endpoint`.
    pub fn at(endpoint: &str) -> BrokerConfig {
        BrokerConfig {
            endpoint: Some(endpoint.to_owned()),
            ..BrokerConfig::default()
        }
    }

    /// With this liveness timing.
    #[must_use]
    pub fn heartbeat(mut self, hb: HeartbeatConfig) -> BrokerConfig {
        self.heartbeat = hb;
        self
    }

    /// With CURVE authentication by these keys (see [`ServerKeys::load_dir`]).
    #[must_use]
    pub fn curve(mut self, keys: ServerKeys) -> BrokerConfig {
        self.curve = Some(keys);
        self
    }

    /// With this event callback.
    #[must_use]
    pub fn on_event(mut self, f: impl Fn(&Event) + Send + Sync + 'static) -> BrokerConfig {
        self.on_event = Some(Arc::new(f));
        self
    }
}

/// Stops a running [`Broker`] (cloneable, usable from any thread).
#[derive(Debug, Clone)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// Asks the loop to return; it does within [`STOP_POLL`].
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The ZAP handler's decisions, shared with the ROUTER loop for `METRICS_ACK`.
#[derive(Debug, Default)]
struct ZapCounts {
    allowed: AtomicU64,
    refused: AtomicU64,
}

/// The ZAP handler thread (see the module docs).
struct Zap {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    counts: Arc<ZapCounts>,
}

/// The endpoint libzmq asks for ZAP decisions (RFC 27).
const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";
/// Where the ROUTER's socket monitor publishes failed handshakes (one broker per context).
const MONITOR_ENDPOINT: &str = "inproc://datahub-broker-monitor";
/// The ZAP domain the ROUTER sets.
const ZAP_DOMAIN: &str = "datahub";

impl Zap {
    /// Binds the handler on `ctx` (before the ROUTER is bound) and starts its thread.
    fn start(ctx: &zmq::Context, allowed: HashSet<[u8; 32]>) -> Result<Zap, BrokerError> {
        let rep = ctx.socket(zmq::REP).map_err(zmq_err("socket"))?;
        rep.set_linger(0).map_err(zmq_err("ZMQ_LINGER"))?;
        rep.set_maxmsgsize(4096)
            .map_err(zmq_err("ZMQ_MAXMSGSIZE"))?;
        rep.bind(ZAP_ENDPOINT)
            .map_err(zmq_err("bind (ZAP handler)"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(ZapCounts::default());
        let thread = {
            let (stop, counts) = (stop.clone(), counts.clone());
            std::thread::Builder::new()
                .name("datahub-broker-zap".into())
                .spawn(move || zap_loop(&rep, &allowed, &stop, &counts))
                .map_err(|e| BrokerError::Io {
                    what: "spawning the ZAP thread",
                    source: e,
                })?
        };
        Ok(Zap {
            stop,
            thread: Some(thread),
            counts,
        })
    }
}

impl Drop for Zap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers ZAP requests until `stop`; every wait is bounded by [`STOP_POLL`].
fn zap_loop(rep: &zmq::Socket, allowed: &HashSet<[u8; 32]>, stop: &AtomicBool, counts: &ZapCounts) {
    // A REP must answer before it can receive again: a reply libzmq did not take at once is
    // retried until it does (or the broker stops).
    let mut unsent: Option<[Vec<u8>; 6]> = None;
    while !stop.load(Ordering::SeqCst) {
        if let Some(reply) = &unsent {
            match rep.send_multipart(reply.iter(), zmq::DONTWAIT) {
                Ok(()) => unsent = None,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
            }
        }
        let readable = {
            let mut items = [rep.as_poll_item(zmq::POLLIN)];
            matches!(zmq::poll(&mut items, STOP_POLL.as_millis() as i64), Ok(n) if n > 0)
        };
        if !readable {
            continue;
        }
        let Ok(frames) = rep.recv_multipart(zmq::DONTWAIT) else {
            continue;
        };
        let (reply, ok) = zap_answer(&frames, allowed);
        if ok {
            counts.allowed.fetch_add(1, Ordering::Relaxed);
        } else {
            counts.refused.fetch_add(1, Ordering::Relaxed);
        }
        unsent = Some(reply);
    }
}

/// The reply to one ZAP request `[version, request_id, domain, address, identity,
/// mechanism, credentials...]`: `[version, request_id, status, text, user_id, metadata]`,
/// and whether it admits the client. The user id of an admitted client is its key in Z85.
fn zap_answer(frames: &[Vec<u8>], allowed: &HashSet<[u8; 32]>) -> ([Vec<u8>; 6], bool) {
    let id = frames.get(1).cloned().unwrap_or_default();
    let reply = |status: &str, text: &str, user: String| {
        [
            b"1.0".to_vec(),
            id.clone(),
            status.as_bytes().to_vec(),
            text.as_bytes().to_vec(),
            user.into_bytes(),
            Vec::new(),
        ]
    };
    if frames.len() < 6 || frames[0] != b"1.0" {
        return (reply("500", "malformed ZAP request", String::new()), false);
    }
    if frames[5] != b"CURVE" {
        return (reply("400", "only CURVE is accepted", String::new()), false);
    }
    match frames
        .get(6)
        .and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok())
    {
        Some(k) if allowed.contains(&k) => {
            let user = super::keys::PublicKey::from_bytes(k).z85();
            (reply("200", "OK", user), true)
        }
        _ => (reply("400", "client key not allowed", String::new()), false),
    }
}

/// A bound broker, not yet running.
pub struct Broker {
    // Declared before `zap` and `_ctx`: dropped (closed) first, so no handshake is ever
    // completed without the ZAP handler.
    socket: zmq::Socket,
    /// The ROUTER's monitor (CURVE only): failed handshakes.
    monitor: Option<zmq::Socket>,
    zap: Option<Zap>,
    unauthenticated: u64,
    handshake_failed: u64,
    // Kept alive for the socket's sake.
    _ctx: zmq::Context,
    endpoint: String,
    registry: Registry,
    on_event: Option<EventSink>,
    stop: StopHandle,
    origin: Instant,
    tick: Duration,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("endpoint", &self.endpoint)
            .field("channels", &self.registry.channel_count())
            .finish()
    }
}

fn zmq_err(what: &'static str) -> impl Fn(zmq::Error) -> BrokerError {
    move |source| BrokerError::Zmq { what, source }
}

impl Broker {
    /// Binds a ROUTER to the config's endpoint (the default one when unset); with
    /// [`BrokerConfig::curve`], as a CURVE server behind a ZAP handler.
    ///
    /// # Errors
    /// [`BrokerError::Endpoint`] for an unsupported endpoint (`tcp://` without CURVE keys
    /// included), one where another broker listens, or an unsafe default directory;
    /// [`BrokerError::Zmq`] when binding fails (a `tcp://` port in use: `EADDRINUSE`).
    pub fn bind(config: BrokerConfig) -> Result<Broker, BrokerError> {
        let endpoint = match config.endpoint {
            Some(e) => e,
            None => endpoint::default_endpoint()?,
        };
        let path = endpoint::transport(&endpoint, config.curve.is_some())?;
        if let Some(path) = &path {
            endpoint::check_bindable(path)?;
        }
        let ctx = zmq::Context::new();
        let mut zap = None;
        let mut monitor = None;
        let socket = ctx.socket(zmq::ROUTER).map_err(zmq_err("socket"))?;
        if let Some(keys) = &config.curve {
            let allowed = keys.allowed.iter().map(|k| *k.as_bytes()).collect();
            zap = Some(Zap::start(&ctx, allowed)?);
            socket
                .set_curve_server(true)
                .map_err(zmq_err("ZMQ_CURVE_SERVER"))?;
            socket
                .set_curve_secretkey(keys.pair.secret_bytes())
                .map_err(zmq_err("ZMQ_CURVE_SECRETKEY"))?;
            socket
                .set_zap_domain(ZAP_DOMAIN)
                .map_err(zmq_err("ZMQ_ZAP_DOMAIN"))?;
            let events = zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL.to_raw()
                | zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL.to_raw();
            socket
                .monitor(MONITOR_ENDPOINT, i32::from(events))
                .map_err(zmq_err("zmq_socket_monitor"))?;
            let pair = ctx.socket(zmq::PAIR).map_err(zmq_err("socket"))?;
            pair.set_linger(0).map_err(zmq_err("ZMQ_LINGER"))?;
            pair.connect(MONITOR_ENDPOINT)
                .map_err(zmq_err("connect (monitor)"))?;
            monitor = Some(pair);
        }
        socket
            .set_maxmsgsize(config.max_body as i64)
            .map_err(zmq_err("ZMQ_MAXMSGSIZE"))?;
        socket.set_linger(0).map_err(zmq_err("ZMQ_LINGER"))?;
        socket.set_sndhwm(10_000).map_err(zmq_err("ZMQ_SNDHWM"))?;
        socket.set_rcvhwm(10_000).map_err(zmq_err("ZMQ_RCVHWM"))?;
        socket.bind(&endpoint).map_err(zmq_err("bind"))?;
        if let Some(path) = &path {
            endpoint::restrict(path);
        }
        // `tcp://HOST:0` binds a free port: report the one bound.
        let endpoint = match socket.get_last_endpoint() {
            Ok(Ok(e)) if path.is_none() => e,
            _ => endpoint,
        };
        let registry = Registry::new(config.heartbeat, config.limits, Duration::ZERO);
        let tick = registry.granularity().min(STOP_POLL);
        Ok(Broker {
            socket,
            monitor,
            zap,
            unauthenticated: 0,
            handshake_failed: 0,
            _ctx: ctx,
            endpoint,
            registry,
            on_event: config.on_event,
            stop: StopHandle(Arc::new(AtomicBool::new(false))),
            origin: Instant::now(),
            tick,
        })
    }

    /// The endpoint it listens on.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A handle that stops [`Broker::run`].
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Serves until [`StopHandle::stop`]; removes the socket file when it returns.
    ///
    /// # Errors
    /// [`BrokerError::Zmq`] if polling fails for a reason other than a signal.
    pub fn run(mut self) -> Result<(), BrokerError> {
        let result = self.serve();
        if let Ok(p) = endpoint::ipc_path(&self.endpoint) {
            let _ = std::fs::remove_file(p);
        }
        // Fields drop in order: the ROUTER closes, then the ZAP thread is stopped and joined.
        result
    }

    fn serve(&mut self) -> Result<(), BrokerError> {
        let mut next_tick = self.now() + self.tick;
        while !self.stop.is_stopped() {
            let wait = next_tick.saturating_sub(self.now()).min(STOP_POLL);
            let (ready, events) = {
                let mut items = vec![self.socket.as_poll_item(zmq::POLLIN)];
                if let Some(m) = &self.monitor {
                    items.push(m.as_poll_item(zmq::POLLIN));
                }
                match zmq::poll(&mut items, wait.as_millis().max(1) as i64) {
                    Ok(_) => (
                        items[0].is_readable(),
                        items.get(1).is_some_and(zmq::PollItem::is_readable),
                    ),
                    Err(zmq::Error::EINTR) => (false, false),
                    Err(e) => {
                        return Err(BrokerError::Zmq {
                            what: "poll",
                            source: e,
                        });
                    }
                }
            };
            if events && let Some(m) = &self.monitor {
                // Two frames per event; each one a failed handshake.
                for _ in 0..BATCH {
                    match m.recv_multipart(zmq::DONTWAIT) {
                        Ok(_) => self.handshake_failed += 1,
                        Err(_) => break,
                    }
                }
            }
            if ready {
                for _ in 0..BATCH {
                    match self.recv() {
                        Some((_, false)) => self.unauthenticated += 1,
                        Some((frames, true)) => {
                            let step = self.registry.handle(self.now(), &frames);
                            self.emit(step);
                        }
                        None => break,
                    }
                }
            }
            let now = self.now();
            if now >= next_tick {
                let step = self.registry.tick(now);
                self.emit(step);
                next_tick = now + self.tick;
            }
        }
        Ok(())
    }

    /// One whole message, its first [`KEEP_FRAMES`] frames kept (a 7th frame stands in for
    /// all the dropped ones so the count check still fails), and whether its connection
    /// passed ZAP (always, without CURVE). `None`: nothing to read.
    fn recv(&self) -> Option<(Vec<Vec<u8>>, bool)> {
        let mut frames = Vec::new();
        // The identity frame is the ROUTER's own; the peer's first frame carries the
        // connection's properties.
        let mut authed = self.zap.is_none();
        loop {
            let flags = if frames.is_empty() { zmq::DONTWAIT } else { 0 };
            let mut m = zmq::Message::new();
            match self.socket.recv(&mut m, flags) {
                Ok(()) => {}
                Err(_) if frames.is_empty() => return None,
                Err(_) => return Some((frames, authed)),
            }
            if frames.len() == 1 && !authed {
                authed = m.gets("User-Id").is_some_and(|u| !u.is_empty());
            }
            if frames.len() < KEEP_FRAMES {
                frames.push(m.to_vec());
            } else if frames.len() == KEEP_FRAMES {
                frames.push(Vec::new());
            }
            if !m.get_more() {
                return Some((frames, authed));
            }
        }
    }

    fn emit(&mut self, mut step: super::state::Step) {
        for out in &mut step.out {
            if out.msg_type == msg::METRICS_ACK
                && let Some(zap) = &self.zap
            {
                out.body["auth"] = serde_json::json!(AuthCounters {
                    allowed: zap.counts.allowed.load(Ordering::Relaxed),
                    refused: zap.counts.refused.load(Ordering::Relaxed),
                    unauthenticated: self.unauthenticated,
                    handshake_failed: self.handshake_failed,
                });
            }
            let frames = out.frames();
            let ok = self
                .socket
                .send_multipart(frames.iter(), zmq::DONTWAIT)
                .is_ok();
            self.registry.note_send(ok);
        }
        if let Some(f) = &self.on_event {
            for e in &step.events {
                f(e);
            }
        }
    }

    /// Binds and runs the broker on a new thread; the handle stops and joins it on drop.
    ///
    /// # Errors
    /// As [`Broker::bind`].
    pub fn spawn(config: BrokerConfig) -> Result<BrokerHandle, BrokerError> {
        let b = Broker::bind(config)?;
        let stop = b.stop_handle();
        let endpoint = b.endpoint.clone();
        let thread = std::thread::Builder::new()
            .name("datahub-broker".into())
            .spawn(move || b.run())
            .map_err(|e| BrokerError::Io {
                what: "spawning the broker thread",
                source: e,
            })?;
        Ok(BrokerHandle {
            stop,
            endpoint,
            thread: Some(thread),
        })
    }
}

/// A broker running on its own thread ([`Broker::spawn`]); dropping it stops and joins it.
#[derive(Debug)]
pub struct BrokerHandle {
    stop: StopHandle,
    endpoint: String,
    thread: Option<JoinHandle<Result<(), BrokerError>>>,
}

impl BrokerHandle {
    /// The endpoint it listens on.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Its stop handle.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Stops it and waits for its thread.
    ///
    /// # Errors
    /// What [`Broker::run`] returned.
    pub fn join(mut self) -> Result<(), BrokerError> {
        self.stop.stop();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(BrokerError::Closed("the broker thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for BrokerHandle {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
