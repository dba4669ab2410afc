//! The live endpoint: `/metrics` (Prometheus exposition) and `/stats.json` (the stats JSON)
//! served from a background thread.
//!
//! Each request takes one [`Snapshot`] through the snapshot function and renders it. For an
//! allocator that is [`SlabAllocator::stats`]: it reads relaxed counters and walks slab lists
//! under the per-shard locks the slow path already takes, so a scrape never touches the
//! allocation fast path (no lock, no shared cache line is added to it). A scrape every few
//! seconds costs the slow path a few short lock holds.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use std::sync::Arc;
//! let alloc = Arc::new(temporal_slab::SlabAllocator::new().expect("reserve"));
//! let endpoint = tslab::endpoint::serve("127.0.0.1:2112".parse().unwrap(), alloc.clone())?;
//! println!("metrics on http://{}/metrics", endpoint.local_addr());
//! // ... work; dropping `endpoint` stops the server thread.
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use temporal_slab::SlabAllocator;

use crate::exposition::{self, CONTENT_TYPE, TEXT_CONTENT_TYPE};
use crate::snapshot::Snapshot;

/// What the endpoint serves: a fresh snapshot per request, or an error text (HTTP 503).
pub type SnapshotFn = dyn Fn() -> Result<Snapshot, String> + Send + Sync;

/// A running endpoint. Dropping it (or [`Endpoint::shutdown`]) stops and joins the thread.
pub struct Endpoint {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

/// Serves `alloc`'s stats on `addr` (port 0 picks a free port; see [`Endpoint::local_addr`]).
///
/// # Errors
/// The address cannot be bound (in use, not local, no permission): `io::ErrorKind::AddrInUse`
/// or another kind, with the address in the message.
pub fn serve(addr: SocketAddr, alloc: Arc<SlabAllocator>) -> std::io::Result<Endpoint> {
    serve_with(
        addr,
        exposition::DEFAULT_PREFIX.to_owned(),
        Box::new(move || Ok(Snapshot::of(&alloc))),
    )
}

/// Serves the snapshots `source` returns, with metric prefix `prefix`. `tslab serve` uses it to
/// re-serve a file, stdin or another endpoint.
///
/// # Errors
/// As [`serve`].
pub fn serve_with(
    addr: SocketAddr,
    prefix: String,
    source: Box<SnapshotFn>,
) -> std::io::Result<Endpoint> {
    let server = tiny_http::Server::http(addr).map_err(|e| {
        let kind = e
            .downcast_ref::<std::io::Error>()
            .map_or(std::io::ErrorKind::Other, std::io::Error::kind);
        std::io::Error::new(kind, format!("cannot listen on {addr}: {e}"))
    })?;
    let server = Arc::new(server);
    let local = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| std::io::Error::other("not an IP listener"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let (server, stop) = (server.clone(), stop.clone());
        std::thread::Builder::new()
            .name("tslab-endpoint".into())
            .spawn(move || run(&server, &stop, &prefix, &*source))?
    };
    Ok(Endpoint {
        addr: local,
        stop,
        server,
        thread: Some(thread),
    })
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("static header names and values are valid")
}

fn run(server: &tiny_http::Server, stop: &AtomicBool, prefix: &str, source: &SnapshotFn) {
    while !stop.load(Ordering::Acquire) {
        let request = match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(_) => break,
        };
        let path = request.url().split('?').next().unwrap_or("").to_owned();
        // Prometheus asks for OpenMetrics in its Accept header; everyone else (curl, promtool,
        // older scrapers) gets the classic text format.
        let openmetrics = request.headers().iter().any(|h| {
            h.field.equiv("Accept") && h.value.as_str().contains("application/openmetrics-text")
        });
        let response = match (request.method(), path.as_str()) {
            (tiny_http::Method::Get, "/metrics" | "/stats.json") => match source() {
                Ok(snap) if path == "/metrics" && openmetrics => {
                    tiny_http::Response::from_string(exposition::render(&snap, prefix))
                        .with_header(header("Content-Type", CONTENT_TYPE))
                }
                Ok(snap) if path == "/metrics" => {
                    tiny_http::Response::from_string(exposition::render_text(&snap, prefix))
                        .with_header(header("Content-Type", TEXT_CONTENT_TYPE))
                }
                Ok(snap) => tiny_http::Response::from_string(snap.to_json_pretty())
                    .with_header(header("Content-Type", "application/json")),
                Err(e) => tiny_http::Response::from_string(format!("no snapshot: {e}\n"))
                    .with_status_code(503),
            },
            (tiny_http::Method::Get, "/") => tiny_http::Response::from_string(
                "temporal-slab stats: /metrics (Prometheus), /stats.json (schema v1)\n",
            ),
            _ => tiny_http::Response::from_string("not found\n").with_status_code(404),
        };
        // A client that went away is not our problem.
        let _ = request.respond(response);
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

    /// Stops the server thread and waits for it.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.server.unblock();
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
