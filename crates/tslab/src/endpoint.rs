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
//!
//! ## Hostile clients and resource exhaustion
//! The server is the workspace's one metrics server, [`metrics_endpoint`] (also behind
//! `datahub exporter`): `hyper` (HTTP/1.1) on a single-threaded `tokio` runtime owned by the
//! endpoint's thread, so no client can hold up another; snapshots are taken and rendered on a
//! small blocking pool ([`RENDER_THREADS`]). Its bounds (re-exported here):
//!
//! - at most [`MAX_CONNECTIONS`] connections at once. A connection beyond that closes the
//!   connection that has been idle longest (waiting for a request head for at least
//!   [`EVICT_MIN_IDLE`]) and takes its place, so idle connections cannot lock scrapers out;
//!   when none is idle, it is sent a best-effort `503` and closed at once;
//! - a request head must arrive within [`HEADER_READ_TIMEOUT`] of the connection becoming idle
//!   (the same timer bounds an idle keep-alive connection) and fit in [`MAX_REQUEST_HEAD`]
//!   bytes;
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
//! `docs/failure-model/tslab.md` has the whole failure model.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use metrics_endpoint::{Reply, Request};
use temporal_slab::SlabAllocator;

pub use metrics_endpoint::{
    ACCEPT_BACKOFF, ACCEPT_ERROR_REPORT, CONNECTION_LIFETIME, EVICT_MIN_IDLE, EVICT_WAIT, Endpoint,
    HEADER_READ_TIMEOUT, MAX_CONNECTIONS, MAX_REQUEST_HEAD, MAX_REQUESTS_PER_CONNECTION,
    RENDER_THREADS, SHUTDOWN_GRACE, WRITE_STALL_TIMEOUT,
};

use crate::exposition::{self, CONTENT_TYPE, TEXT_CONTENT_TYPE};
use crate::snapshot::Snapshot;

/// What the endpoint serves: a fresh snapshot per request, or an error text (HTTP 503).
pub type SnapshotFn = dyn Fn() -> Result<Snapshot, String> + Send + Sync;

/// Serves `alloc`'s stats on `addr` (port 0 picks a free port; see [`Endpoint::local_addr`]).
///
/// # Errors
/// The address cannot be bound (in use, not local, no permission): `io::ErrorKind::AddrInUse`
/// or another kind, with the address in the message; the runtime or the thread cannot be
/// created (no file descriptors or threads left).
pub fn serve(addr: SocketAddr, alloc: Arc<SlabAllocator>) -> io::Result<Endpoint> {
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
) -> io::Result<Endpoint> {
    metrics_endpoint::serve(
        addr,
        "tslab",
        Box::new(move |req: &Request| respond(req, &prefix, &*source)),
    )
}

/// `/metrics` in the format the client asked for, `/stats.json`, an index at `/`; 404 else.
fn respond(req: &Request, prefix: &str, source: &SnapshotFn) -> Reply {
    match (req.get, req.path.as_str()) {
        (true, path @ ("/metrics" | "/stats.json")) => {
            let snap = std::panic::catch_unwind(std::panic::AssertUnwindSafe(source));
            match snap {
                Ok(Ok(snap)) if path == "/metrics" && req.openmetrics => {
                    Reply::ok(CONTENT_TYPE, exposition::render(&snap, prefix))
                }
                Ok(Ok(snap)) if path == "/metrics" => {
                    Reply::ok(TEXT_CONTENT_TYPE, exposition::render_text(&snap, prefix))
                }
                Ok(Ok(snap)) => Reply::ok("application/json", snap.to_json_pretty()),
                Ok(Err(e)) => Reply::text(
                    503,
                    format!("no snapshot: {}\n", crate::clip(&e, crate::MAX_QUOTED)),
                ),
                Err(_) => Reply::text(
                    500,
                    "no snapshot: the snapshot function panicked\n".to_owned(),
                ),
            }
        }
        (true, "/") => Reply::text(
            200,
            "temporal-slab stats: /metrics (Prometheus), /stats.json (schema v1)\n".to_owned(),
        ),
        _ => Reply::not_found(),
    }
}
