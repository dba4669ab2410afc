//! The live metrics endpoint both `tslab` and `datahub exporter` serve: a small HTTP/1.1
//! server that answers every request from one render callback, run on a background thread.
//!
//! The caller gives a [`Handler`]: a function from a [`Request`] (method, path, whether the
//! client asked for OpenMetrics) to a [`Reply`] (status, content type, body). The handler runs
//! on a small blocking pool ([`RENDER_THREADS`]), never on the thread that serves connections,
//! so a slow render (reading shared memory, asking a broker) holds a render thread and no
//! client. A handler that panics answers `500`.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use metrics_endpoint::{Reply, Request};
//! let endpoint = metrics_endpoint::serve(
//!     "127.0.0.1:0".parse().unwrap(),
//!     "demo",
//!     Box::new(|req: &Request| match (req.get, req.path.as_str()) {
//!         (true, "/metrics") => Reply::ok("text/plain; version=0.0.4", "up 1\n".into()),
//!         _ => Reply::not_found(),
//!     }),
//! )?;
//! println!("metrics on http://{}/metrics", endpoint.local_addr());
//! // ... work; dropping `endpoint` stops the server thread.
//! # Ok(()) }
//! ```
//!
//! ## Hostile clients and resource exhaustion
//! The server is `hyper` (HTTP/1.1) on a single-threaded `tokio` runtime owned by the
//! endpoint's thread, so no client can hold up another: every connection is its own task, and
//! replies are rendered on a small blocking pool ([`RENDER_THREADS`]). Its bounds:
//!
//! - at most [`MAX_CONNECTIONS`] connections at once. A connection beyond that closes the
//!   connection that has been idle longest (waiting for a request head for at least
//!   [`EVICT_MIN_IDLE`]) and takes its place, so idle connections cannot lock scrapers out;
//!   when none is idle, it is sent a best-effort `503` and closed at once;
//! - a request head must arrive within [`HEADER_READ_TIMEOUT`] of the connection becoming idle
//!   (the same timer bounds an idle keep-alive connection) and fit in [`MAX_REQUEST_HEAD`]
//!   bytes; request bodies are never read;
//! - a write that makes no progress for [`WRITE_STALL_TIMEOUT`] (a client that pipelines
//!   requests and never reads) fails and closes the connection;
//! - a connection serves at most [`MAX_REQUESTS_PER_CONNECTION`] requests (the last response
//!   says `Connection: close`) and lives at most [`CONNECTION_LIFETIME`], then is shut down
//!   gracefully (hard-closed [`SHUTDOWN_GRACE`] later);
//! - an `accept` error (`EMFILE`/`ENFILE` when file descriptors run out, `ENOBUFS`, ...) never
//!   ends the accept loop: it is reported on stderr at most once per [`ACCEPT_ERROR_REPORT`],
//!   the connection idle longest is closed to free a descriptor, and the accept is retried
//!   after [`ACCEPT_BACKOFF`], so the endpoint serves again as soon as descriptors are free.
//!   Nothing in the endpoint panics on descriptor exhaustion.
//!
//! `docs/failure-model/tslab.md` has the whole failure model (the same for both tools).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, Semaphore};

/// Connections served at once (see [`EVICT_MIN_IDLE`] for what happens to one more).
pub const MAX_CONNECTIONS: usize = 64;
/// A connection waiting this long for its next request head is idle: a new connection at the
/// cap (or an `accept` out of descriptors) closes the one idle longest.
pub const EVICT_MIN_IDLE: Duration = Duration::from_millis(100);
/// How long a connection that closed an idle one waits for its place.
pub const EVICT_WAIT: Duration = Duration::from_secs(1);
/// Time a connection may take to send a request head, counted from when it became idle.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a response write may make no progress before the connection is closed.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests served on one keep-alive connection.
pub const MAX_REQUESTS_PER_CONNECTION: u64 = 1000;
/// Longest life of one connection before it is shut down gracefully.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
/// Time a connection shut down at [`CONNECTION_LIFETIME`] gets to finish its response.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Largest request head (request line and headers) read, bytes.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// Wait before retrying a failed `accept`.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// At most one stderr line about failing `accept`s per this period.
pub const ACCEPT_ERROR_REPORT: Duration = Duration::from_secs(10);
/// Threads that run the handler (a slow render holds one of them, never the connections).
pub const RENDER_THREADS: usize = 4;

/// What the handler is asked: one request's method, path and preferred format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method is `GET`.
    pub get: bool,
    /// The path, without the query string.
    pub path: String,
    /// The `Accept` header names `application/openmetrics-text` (what Prometheus sends);
    /// everyone else (curl, promtool, older scrapers) should get the text format 0.0.4.
    pub openmetrics: bool,
}

/// The handler's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code (an invalid one is sent as `500`).
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

impl Reply {
    /// `200` with `body`.
    pub fn ok(content_type: &'static str, body: String) -> Reply {
        Reply {
            status: 200,
            content_type,
            body,
        }
    }

    /// `status` with a plain-text `body`.
    pub fn text(status: u16, body: String) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body,
        }
    }

    /// `404 not found`.
    pub fn not_found() -> Reply {
        Reply::text(404, "not found\n".to_owned())
    }
}

/// What the endpoint answers every request with; it runs on the render pool.
pub type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// A running endpoint. Dropping it (or [`Endpoint::shutdown`]) stops and joins the thread.
pub struct Endpoint {
    addr: SocketAddr,
    stop: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

/// Serves `handler`'s replies on `addr` (port 0 picks a free port; see
/// [`Endpoint::local_addr`]). `name` names the threads (`NAME-endpoint`,
/// `NAME-endpoint-render`) and starts the endpoint's stderr lines (`NAME: endpoint: ...`).
///
/// # Errors
/// The address cannot be bound (in use, not local, no permission): `io::ErrorKind::AddrInUse`
/// or another kind, with the address in the message; the runtime or the thread cannot be
/// created (no file descriptors or threads left).
pub fn serve(addr: SocketAddr, name: &str, handler: Box<Handler>) -> io::Result<Endpoint> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(RENDER_THREADS)
        .thread_name(format!("{name}-endpoint-render"))
        .build()
        .map_err(|e| io::Error::new(e.kind(), format!("{local}: cannot start the server: {e}")))?;
    let listener = {
        let _guard = runtime.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    let stop = Arc::new(Notify::new());
    let server = Server {
        name: name.into(),
        handler: Arc::from(handler),
    };
    let thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name(format!("{name}-endpoint"))
            .spawn(move || {
                runtime.block_on(accept_loop(listener, server, stop));
                // In-flight connections are dropped (closed); a render still running gets a
                // moment to finish, then is left to end on its own.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?
    };
    Ok(Endpoint {
        addr: local,
        stop,
        thread: Some(thread),
    })
}

/// What every connection task shares.
#[derive(Clone)]
struct Server {
    /// Names the threads and starts the stderr lines.
    name: Arc<str>,
    handler: Arc<Handler>,
}

async fn accept_loop(listener: tokio::net::TcpListener, server: Server, stop: Arc<Notify>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Connections that closed an idle one and wait for its permit: at most as many again.
    let waiting = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let registry = Arc::new(Registry::default());
    let mut errors = AcceptErrors::default();
    loop {
        let accepted = tokio::select! {
            () = stop.notified() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _)) => {
                let (server, registry) = (server.clone(), registry.clone());
                if let Ok(permit) = permits.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        connection(stream, server, &registry).await;
                        drop(permit);
                    });
                    continue;
                }
                let wait = match waiting.clone().try_acquire_owned() {
                    Ok(w) if registry.evict_idlest() => w,
                    _ => {
                        refuse(&stream);
                        continue;
                    }
                };
                let permits = permits.clone();
                tokio::spawn(async move {
                    let permit = tokio::time::timeout(EVICT_WAIT, permits.acquire_owned()).await;
                    drop(wait);
                    match permit {
                        Ok(Ok(permit)) => {
                            connection(stream, server, &registry).await;
                            drop(permit);
                        }
                        _ => refuse(&stream),
                    }
                });
            }
            Err(e) => {
                errors.report(&server.name, &e);
                // Free a descriptor for the connections waiting in the backlog.
                registry.evict_idlest();
                // EMFILE and friends persist until a descriptor is freed: back off instead of
                // spinning on a listener that stays readable.
                tokio::select! {
                    () = stop.notified() => return,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
}

/// Best effort: the socket buffer of a fresh connection has room for this.
fn refuse(stream: &tokio::net::TcpStream) {
    let _ = stream.try_write(
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    );
}

/// The live connections, for closing the one idle longest.
#[derive(Default)]
struct Registry {
    next_id: AtomicU64,
    conns: std::sync::Mutex<std::collections::BTreeMap<u64, Arc<ConnState>>>,
}

/// One connection's idleness, and the signal that closes it.
struct ConnState {
    /// When the connection last became idle (connected, or returned a response); `None` while a
    /// request is being served.
    idle_since: std::sync::Mutex<Option<Instant>>,
    evict: Notify,
}

impl ConnState {
    fn set_idle(&self, idle: bool) {
        *self
            .idle_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = idle.then(Instant::now);
    }
}

/// A registered connection; dropping it unregisters it.
struct Registered<'a> {
    registry: &'a Registry,
    id: u64,
    state: Arc<ConnState>,
}

impl Registry {
    fn conns(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u64, Arc<ConnState>>> {
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn register(&self) -> Registered<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            idle_since: std::sync::Mutex::new(Some(Instant::now())),
            evict: Notify::new(),
        });
        self.conns().insert(id, state.clone());
        Registered {
            registry: self,
            id,
            state,
        }
    }

    /// Signals the connection idle longest (at least [`EVICT_MIN_IDLE`]) to close and
    /// unregisters it; false when none is idle.
    fn evict_idlest(&self) -> bool {
        let now = Instant::now();
        let mut conns = self.conns();
        let idlest = conns
            .iter()
            .filter_map(|(&id, c)| {
                let since = (*c
                    .idle_since
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner))?;
                (now.duration_since(since) >= EVICT_MIN_IDLE).then_some((since, id))
            })
            .min();
        match idlest.and_then(|(_, id)| conns.remove(&id)) {
            Some(c) => {
                c.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.registry.conns().remove(&self.id);
    }
}

/// Rate-limited reports of failing `accept`s.
#[derive(Default)]
struct AcceptErrors {
    last_report: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    fn report(&mut self, name: &str, e: &io::Error) {
        let now = Instant::now();
        if self
            .last_report
            .is_some_and(|t| now.duration_since(t) < ACCEPT_ERROR_REPORT)
        {
            self.suppressed += 1;
            return;
        }
        let more = if self.suppressed > 0 {
            format!(" ({} more since the last report)", self.suppressed)
        } else {
            String::new()
        };
        eprintln!(
            "{name}: endpoint: cannot accept a connection: {e}{more}; retrying every {}ms",
            ACCEPT_BACKOFF.as_millis()
        );
        self.last_report = Some(now);
        self.suppressed = 0;
    }
}

async fn connection(stream: tokio::net::TcpStream, server: Server, registry: &Registry) {
    let _ = stream.set_nodelay(true);
    let registered = registry.register();
    let served = Arc::new(AtomicU64::new(0));
    let state = registered.state.clone();
    let service = hyper::service::service_fn(move |req| {
        let n = served.fetch_add(1, Ordering::Relaxed) + 1;
        let (server, state) = (server.clone(), state.clone());
        state.set_idle(false);
        async move {
            let response = respond(req, server, n >= MAX_REQUESTS_PER_CONNECTION).await;
            state.set_idle(true);
            response
        }
    });
    let io = hyper_util::rt::TokioIo::new(WriteStall::new(stream, WRITE_STALL_TIMEOUT));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        // Idle and chosen to make room: nothing is in flight, close it.
        () = registered.state.evict.notified() => return,
        () = tokio::time::sleep(CONNECTION_LIFETIME) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
}

async fn respond(
    req: hyper::Request<Incoming>,
    server: Server,
    last: bool,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let request = Request {
        get: req.method() == Method::GET,
        path: req.uri().path().to_owned(),
        openmetrics: req
            .headers()
            .get_all(hyper::header::ACCEPT)
            .iter()
            .any(|v| {
                v.to_str()
                    .is_ok_and(|s| s.contains("application/openmetrics-text"))
            }),
    };
    let handler = server.handler.clone();
    let reply = match tokio::task::spawn_blocking(move || handler(&request)).await {
        Ok(r) => r,
        Err(_) => Reply::text(
            500,
            "internal error: the request handler panicked\n".to_owned(),
        ),
    };
    let mut response = hyper::Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    if last {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(response)
}

/// A stream whose writes fail with `TimedOut` after making no progress for `timeout`.
struct WriteStall<S> {
    inner: S,
    timeout: Duration,
    /// Armed while a write (or flush) is pending; disarmed by any progress.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteStall<S> {
    fn new(inner: S, timeout: Duration) -> WriteStall<S> {
        WriteStall {
            inner,
            timeout,
            stalled: None,
        }
    }

    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let sleep = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if sleep.as_mut().poll(cx).is_ready() {
                    self.stalled = None;
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client read nothing for the whole write timeout",
                    )))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteStall<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteStall<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// The bound address (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server thread and waits for it: the listener and every connection are closed
    /// when it returns.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        // `notify_one` stores a permit when the loop is not waiting, so the stop is never lost.
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}
