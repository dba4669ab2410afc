//! `bench mmsb` replication: a bus's log shipped through a real NATS JetStream server on
//! loopback to a follower in the same process, against the same writes with no replication.
//!
//! Per delta shape (8-byte sparse writes, 1 KiB dense deltas), three passes on fresh
//! directories, each write its own commit, log `Durability::Flush` (a shipper sees a commit
//! once it is `write(2)`n):
//!
//! 1. **local**: the writes alone, timed (deltas/s).
//! 2. **shipped, unthrottled**: the same writes with `mmsb::replicate::ship` tailing the log and
//!    `follow` applying the stream to a replica; deltas/s end to end = writes / (first write to
//!    the follower applying the last LSN). The lag of each LSN here is mostly queueing (the
//!    writer outruns the pipeline).
//! 3. **shipped, paced**: writes at a fixed rate well under that throughput; the lag of each
//!    LSN (leader commit to follower applied) is then the pipeline's latency.
//!
//! The lag of LSN `l` is measured by a sampler thread that polls the follower's applied LSN
//! every 50 µs: `lag(l) = (first sample with applied >= l) - (commit of l returned)`; resolution
//! about 0.1 ms. Everything (bus, shipper, follower, sampler, nats-server) shares the machine's
//! cores, as a one-host deployment would.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mmsb::replicate::{Control, FollowOptions, ShipOptions, follow_blocking, ship_blocking};
use mmsb::tlog::Durability;
use mmsb::{Config, Mmsb};
use serde::Serialize;

use super::{Ctx, R};

/// One delta shape's numbers.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct ReplicationResult {
    /// Writes (commits) per pass.
    pub(super) writes: u64,
    /// Bytes of one log frame of this shape.
    pub(super) frame_bytes: u64,
    /// Pass 1: writes per second with no replication.
    pub(super) local_deltas_per_sec: Option<f64>,
    /// Pass 2: writes per second, leader commit to follower applied, end to end.
    pub(super) shipped_deltas_per_sec: Option<f64>,
    /// shipped / local.
    pub(super) shipped_over_local: Option<f64>,
    /// Pass 2 lag percentiles (mostly queueing), milliseconds.
    pub(super) unthrottled_lag_p50_ms: Option<f64>,
    pub(super) unthrottled_lag_p99_ms: Option<f64>,
    /// Pass 3: the write rate, per second.
    pub(super) paced_rate_per_sec: Option<f64>,
    /// Pass 3 lag percentiles, milliseconds.
    pub(super) paced_lag_p50_ms: Option<f64>,
    pub(super) paced_lag_p99_ms: Option<f64>,
    pub(super) paced_lag_max_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) note: Option<String>,
}

/// The nats-server the tests use: `$NATS_SERVER`, else the venv `.ci/run` installs
/// (`target/venv/bin/nats-server` of the workspace), else `nats-server` on PATH.
fn nats_server_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return Some(PathBuf::from(p));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/venv/bin/nats-server");
    if venv.is_file() {
        return Some(venv);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    })
}

/// A `nats-server -js` on 127.0.0.1, killed on drop.
struct Server {
    child: Child,
    url: String,
    _store: tempfile::TempDir,
}

impl Server {
    fn start(bin: &Path, parent: &Path) -> R<Server> {
        let store = tempfile::tempdir_in(parent).ctx("nats store dir")?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .ctx("free port")?
            .port();
        let child = Command::new(bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ctx(&format!("cannot start {}", bin.display()))?;
        let mut server = Server {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _store: store,
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            if Instant::now() > deadline || server.child.try_wait().ok().flatten().is_some() {
                return Err(format!("nats-server did not listen on {addr}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one write is.
#[derive(Clone, Copy)]
enum Shape {
    /// 8 bytes at a moving offset of a 4 KiB page (a sparse delta).
    Sparse8,
    /// A whole 1 KiB page, every byte changed (a dense delta).
    Dense1k,
}

impl Shape {
    fn page(self) -> usize {
        match self {
            Shape::Sparse8 => 4096,
            Shape::Dense1k => 1024,
        }
    }

    fn write(self, bus: &mut Mmsb, page: mmsb::PageId, i: u64) -> R<()> {
        let r = match self {
            Shape::Sparse8 => {
                let off = (i as usize * 8) % (4096 - 8);
                bus.write_range(page, off, &(i + 1).to_le_bytes())
            }
            Shape::Dense1k => bus.update_page(page, &[(i % 255) as u8 + 1; 1024]),
        };
        match r {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("a benchmark write changed nothing".into()),
            Err(e) => Err(format!("write: {e}")),
        }
    }
}

fn config(dir: &Path) -> Config {
    let mut c = Config::new(dir).durability(Durability::Flush);
    c.timings = false;
    c
}

/// Pass 1: `n` writes on a fresh bus, no replication; writes per second.
fn local(parent: &Path, shape: Shape, n: u64) -> R<f64> {
    let dir = tempfile::tempdir_in(parent).ctx("temp dir")?;
    let mut bus = Mmsb::start(config(dir.path())).ctx("start")?;
    let page = bus.create_page(shape.page()).ctx("create_page")?;
    let t = Instant::now();
    for i in 0..n {
        shape.write(&mut bus, page, i)?;
    }
    let s = t.elapsed().as_secs_f64();
    bus.stop().ctx("stop")?;
    Ok(n as f64 / s)
}

/// What a shipped pass measured.
struct Shipped {
    deltas_per_sec: f64,
    lag: Histogram<u64>,
    frame_bytes: u64,
}

/// Passes 2 and 3: `n` writes (paced at `rate` per second when given) shipped through `url`
/// to a follower; returns throughput and the lag of every write.
fn shipped(parent: &Path, url: &str, shape: Shape, n: u64, rate: Option<f64>) -> R<Shipped> {
    static STREAMS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let stream = format!("bench{}", STREAMS.fetch_add(1, Ordering::Relaxed));
    let ld = tempfile::tempdir_in(parent).ctx("temp dir")?;
    let fd = tempfile::tempdir_in(parent).ctx("temp dir")?;
    let replica = fd.path().join("replica");
    let mut bus = Mmsb::start(config(ld.path())).ctx("start")?;
    let page = bus.create_page(shape.page()).ctx("create_page")?;
    let first = bus.stats().last_lsn + 1;

    let ship_ctl = Control::new();
    let follow_ctl = Control::new();
    let shipper = {
        let (dir, url, ctl) = (
            ld.path().to_path_buf(),
            url.to_owned(),
            Arc::clone(&ship_ctl),
        );
        let opts = ShipOptions::new(stream.clone());
        std::thread::spawn(move || ship_blocking(&dir, &url, &opts, &ctl))
    };
    let follower = {
        let (url, ctl) = (url.to_owned(), Arc::clone(&follow_ctl));
        let opts = FollowOptions::new(stream.clone());
        let replica = replica.clone();
        std::thread::spawn(move || follow_blocking(&replica, &url, &opts, &ctl))
    };
    // Both sides running: the page creation has reached the follower.
    wait_applied(&follow_ctl, first - 1, Duration::from_secs(30))?;

    // The sampler: when each LSN was first seen applied.
    let seen: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (seen, done, ctl) = (
            Arc::clone(&seen),
            Arc::clone(&done),
            Arc::clone(&follow_ctl),
        );
        std::thread::spawn(move || {
            let mut last = 0u64;
            while !done.load(Ordering::Relaxed) {
                let a = ctl.stats().applied_lsn;
                if a > last {
                    last = a;
                    seen.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((a, Instant::now()));
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        })
    };

    let mut committed = Vec::with_capacity(n as usize);
    let t0 = Instant::now();
    for i in 0..n {
        if let Some(r) = rate {
            let due = t0 + Duration::from_secs_f64(i as f64 / r);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        shape.write(&mut bus, page, i)?;
        committed.push(Instant::now());
    }
    let last = bus.stats().last_lsn;
    let r = wait_applied(&follow_ctl, last, Duration::from_secs(300));
    let end = Instant::now();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    ship_ctl.stop();
    follow_ctl.stop();
    let _ = shipper.join();
    let _ = follower.join();
    r?;
    let frame_bytes = bus.stats().log_bytes / bus.stats().log_frames.max(1);
    bus.stop().ctx("stop")?;

    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut lag = Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3).ctx("histogram")?;
    let mut j = 0usize;
    for (i, c) in committed.iter().enumerate() {
        let lsn = first + i as u64;
        while j < seen.len() && seen[j].0 < lsn {
            j += 1;
        }
        // The sample that first showed this LSN applied (the end of the wait if none did).
        let at = seen.get(j).map_or(end, |s| s.1);
        let ns = at.saturating_duration_since(*c).as_nanos();
        lag.saturating_record(u64::try_from(ns).unwrap_or(u64::MAX).max(1));
    }
    Ok(Shipped {
        deltas_per_sec: n as f64 / end.duration_since(t0).as_secs_f64(),
        lag,
        frame_bytes,
    })
}

/// Waits until the follower has applied `lsn`.
fn wait_applied(ctl: &Control, lsn: u64, limit: Duration) -> R<()> {
    let deadline = Instant::now() + limit;
    while ctl.stats().applied_lsn < lsn {
        if Instant::now() > deadline {
            return Err(format!(
                "the follower did not apply LSN {lsn} within {limit:?} (it has {})",
                ctl.stats().applied_lsn
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn ms(h: &Histogram<u64>, q: f64) -> Option<f64> {
    Some(h.value_at_quantile(q) as f64 / 1e6)
}

/// Runs the three passes for both shapes; `quick` runs a tenth. Without a nats-server every
/// result says so in `note` (numbers `null`).
pub(super) fn run(
    parent: &Path,
    quick: bool,
    progress: &dyn Fn(&str),
) -> Vec<(String, ReplicationResult)> {
    let shapes = [("sparse_8b", Shape::Sparse8), ("dense_1kb", Shape::Dense1k)];
    let Some(bin) = nats_server_binary() else {
        return shapes
            .iter()
            .map(|(name, _)| {
                (
                    (*name).to_owned(),
                    ReplicationResult {
                        note: Some(
                            "not run: no nats-server ($NATS_SERVER, target/venv, PATH)".into(),
                        ),
                        ..ReplicationResult::default()
                    },
                )
            })
            .collect();
    };
    let server = match Server::start(&bin, parent) {
        Ok(s) => s,
        Err(e) => {
            return shapes
                .iter()
                .map(|(name, _)| {
                    (
                        (*name).to_owned(),
                        ReplicationResult {
                            note: Some(format!("not run: {e}")),
                            ..ReplicationResult::default()
                        },
                    )
                })
                .collect();
        }
    };
    let n: u64 = if quick { 5_000 } else { 50_000 };
    let paced_n: u64 = if quick { 1_000 } else { 5_000 };
    let rate = 1_000.0;
    let mut out = Vec::new();
    for (name, shape) in shapes {
        progress(&format!("replication/{name}"));
        let mut r = ReplicationResult {
            writes: n,
            ..ReplicationResult::default()
        };
        let res: R<()> = (|| {
            let l = local(parent, shape, n)?;
            r.local_deltas_per_sec = Some(l);
            let s = shipped(parent, &server.url, shape, n, None)?;
            r.frame_bytes = s.frame_bytes;
            r.shipped_deltas_per_sec = Some(s.deltas_per_sec);
            r.shipped_over_local = Some(s.deltas_per_sec / l);
            r.unthrottled_lag_p50_ms = ms(&s.lag, 0.5);
            r.unthrottled_lag_p99_ms = ms(&s.lag, 0.99);
            let p = shipped(parent, &server.url, shape, paced_n, Some(rate))?;
            r.paced_rate_per_sec = Some(rate);
            r.paced_lag_p50_ms = ms(&p.lag, 0.5);
            r.paced_lag_p99_ms = ms(&p.lag, 0.99);
            r.paced_lag_max_ms = Some(p.lag.max() as f64 / 1e6);
            Ok(())
        })();
        if let Err(e) = res {
            r.note = Some(format!("failed: {e}"));
        }
        out.push((format!("replication/{name}"), r));
    }
    drop(server);
    out
}
