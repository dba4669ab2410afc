//! The broker's ZeroMQ loop: a ROUTER socket in front of the [`Registry`].
//!
//! One thread owns the socket and the registry. It polls with a timeout no longer than the
//! tick period (a quarter of the heartbeat interval, at most [`STOP_POLL`]), handles at most
//! [`BATCH`] messages per wake-up, and sends replies with `DONTWAIT`: a client that does not
//! read (or is gone) loses its replies and never blocks the loop. Parts bigger than
//! [`BrokerConfig::max_body`] are refused by libzmq (`ZMQ_MAXMSGSIZE`: the peer is
//! disconnected before the part is buffered); a message with more than 5 frames is read to its
//! end and answered `ERROR INVALID_REQUEST`, keeping only its first frames.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::BrokerError;
use super::endpoint;
use super::state::{Event, Limits, Registry};
use super::wire::{HeartbeatConfig, MAX_BODY};

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
    /// Where to listen: `ipc://PATH` (default: [`endpoint::default_endpoint`]).
    pub endpoint: Option<String>,
    /// Liveness timing (default: 500 ms, 10 + 10 misses).
    pub heartbeat: HeartbeatConfig,
    /// Registry caps.
    pub limits: Limits,
    /// Largest message part accepted, bytes (default [`MAX_BODY`], 1 MiB).
    pub max_body: usize,
    /// Called for every registry change (the CLI logs them).
    pub on_event: Option<EventSink>,
}

impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("endpoint", &self.endpoint)
            .field("heartbeat", &self.heartbeat)
            .field("limits", &self.limits)
            .field("max_body", &self.max_body)
            .field("on_event", &self.on_event.is_some())
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

/// A bound broker, not yet running.
pub struct Broker {
    socket: zmq::Socket,
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
    /// Binds a ROUTER to the config's endpoint (the default one when unset).
    ///
    /// # Errors
    /// [`BrokerError::Endpoint`] for an unsupported endpoint, one where another broker
    /// listens, or an unsafe default directory; [`BrokerError::Zmq`] when binding fails.
    pub fn bind(config: BrokerConfig) -> Result<Broker, BrokerError> {
        let endpoint = match config.endpoint {
            Some(e) => e,
            None => endpoint::default_endpoint()?,
        };
        let path = endpoint::ipc_path(&endpoint)?;
        endpoint::check_bindable(&path)?;
        let ctx = zmq::Context::new();
        let socket = ctx.socket(zmq::ROUTER).map_err(zmq_err("socket"))?;
        socket
            .set_maxmsgsize(config.max_body as i64)
            .map_err(zmq_err("ZMQ_MAXMSGSIZE"))?;
        socket.set_linger(0).map_err(zmq_err("ZMQ_LINGER"))?;
        socket.set_sndhwm(10_000).map_err(zmq_err("ZMQ_SNDHWM"))?;
        socket.set_rcvhwm(10_000).map_err(zmq_err("ZMQ_RCVHWM"))?;
        socket.bind(&endpoint).map_err(zmq_err("bind"))?;
        endpoint::restrict(&path);
        let registry = Registry::new(config.heartbeat, config.limits, Duration::ZERO);
        let tick = registry.granularity().min(STOP_POLL);
        Ok(Broker {
            socket,
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
        result
    }

    fn serve(&mut self) -> Result<(), BrokerError> {
        let mut next_tick = self.now() + self.tick;
        while !self.stop.is_stopped() {
            let wait = next_tick.saturating_sub(self.now()).min(STOP_POLL);
            let ready = {
                let mut items = [self.socket.as_poll_item(zmq::POLLIN)];
                match zmq::poll(&mut items, wait.as_millis().max(1) as i64) {
                    Ok(n) => n > 0,
                    Err(zmq::Error::EINTR) => false,
                    Err(e) => {
                        return Err(BrokerError::Zmq {
                            what: "poll",
                            source: e,
                        });
                    }
                }
            };
            if ready {
                for _ in 0..BATCH {
                    match self.recv() {
                        Some(frames) => {
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
    /// all the dropped ones so the count check still fails). `None`: nothing to read.
    fn recv(&self) -> Option<Vec<Vec<u8>>> {
        let mut frames = Vec::new();
        loop {
            let flags = if frames.is_empty() { zmq::DONTWAIT } else { 0 };
            let mut m = zmq::Message::new();
            match self.socket.recv(&mut m, flags) {
                Ok(()) => {}
                Err(_) if frames.is_empty() => return None,
                Err(_) => return Some(frames),
            }
            if frames.len() < KEEP_FRAMES {
                frames.push(m.to_vec());
            } else if frames.len() == KEEP_FRAMES {
                frames.push(Vec::new());
            }
            if !m.get_more() {
                return Some(frames);
            }
        }
    }

    fn emit(&mut self, step: super::state::Step) {
        for out in &step.out {
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
