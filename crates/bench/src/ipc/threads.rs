//! The thread-shape latency run: iceoryx2's own benchmark shape (its
//! `benchmarks/publish-subscribe`), so the numbers compare with iceoryx2's published figures.
//!
//! Two threads of this process, each pinned to its own core (the first two CPUs of the process's
//! affinity mask, with `sched_setaffinity`; unpinned if it has fewer than two), ping-pong over
//! two channels, `a2b` and `b2a`, each with room for one message:
//! * DataHub: two blocks, `Policy::Sequential` (lossless, one reader), `slot_count = 1`,
//!   `slot_size = size`, the same [`dh::SPIN`] as the process runs.
//! * iceoryx2: two `ipc::Service` publish-subscribe services of `[u8]`, history 0,
//!   `subscriber_max_buffer_size = 1`, safe overflow on, one publisher and one subscriber each,
//!   as in iceoryx2's benchmark (only one message is ever in flight, so nothing is overwritten).
//!
//! Every message is a full copy of the payload into the slot or sample (like iceoryx2's
//! `--send-copy`; at 8 B that is the whole message) with the sequence number over its first 8
//! bytes; the receiver busy-polls and checks the sequence number (a lost or repeated message
//! fails the run). Unlike iceoryx2's benchmark, neither side loans its next sample before it
//! waits: both systems run the same loop. Thread A sends, then waits for B's reply; B waits,
//! then replies. After `warmup` round trips both threads meet, and A times `iterations` round
//! trips with `Instant`: **mean one-way latency = elapsed / (2 x iterations)**, iceoryx2's
//! formula. Every wait has a timeout ([`WAIT_TIMEOUT`]).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use iceoryx2::prelude::*;
use serde::{Deserialize, Serialize};

use super::System;
use super::child::{self, ChildError, Rx, Tx, WAIT_TIMEOUT};
use super::{dh, iox};

/// One thread-shape measurement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThreadRun {
    pub size: usize,
    pub iterations: u64,
    pub warmup: u64,
    pub elapsed_s: f64,
    /// elapsed / (2 x iterations), ns.
    pub mean_one_way_ns: f64,
    /// The CPUs the two threads were pinned to (`None`: fewer than two CPUs, not pinned).
    pub cores: Option<[usize; 2]>,
}

/// The first two CPUs this process may run on.
pub fn two_cores() -> Option<[usize; 2]> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is this thread.
    let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return None;
    }
    let mut cores = (0..libc::CPU_SETSIZE as usize).filter(|&c| {
        // SAFETY: `c` is below CPU_SETSIZE and `set` is initialised.
        unsafe { libc::CPU_ISSET(c, &set) }
    });
    Some([cores.next()?, cores.next()?])
}

fn pin(core: usize) -> Result<(), ChildError> {
    // SAFETY: as in `two_cores`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `core` comes from `two_cores`, below CPU_SETSIZE.
    unsafe { libc::CPU_SET(core, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(format!(
            "sched_setaffinity({core}): {}",
            std::io::Error::last_os_error()
        )
        .into());
    }
    Ok(())
}

/// Both threads wait here for each other (a spin with yields, bounded by [`WAIT_TIMEOUT`]).
fn meet(count: &AtomicU32, round: u32) -> Result<(), ChildError> {
    count.fetch_add(1, Ordering::AcqRel);
    let start = Instant::now();
    while count.load(Ordering::Acquire) < 2 * round {
        if start.elapsed() > WAIT_TIMEOUT {
            return Err("the other thread did not arrive".into());
        }
        std::thread::yield_now();
    }
    Ok(())
}

fn seq_of(b: &[u8]) -> Result<u64, ChildError> {
    let head: [u8; 8] = b
        .get(..8)
        .and_then(|h| h.try_into().ok())
        .ok_or("message shorter than 8 bytes")?;
    Ok(u64::from_le_bytes(head))
}

fn expect(got: u64, want: u64) -> Result<(), ChildError> {
    if got == want {
        Ok(())
    } else {
        Err(format!("received message {got}, expected {want}").into())
    }
}

/// One side's whole run; A returns the timed interval. The ends are the process runs' own
/// ([`dh`], [`iox`]): one-slot DataHub blocks, iceoryx2 services in [`iox::Queue::Benchmark`].
#[allow(clippy::too_many_arguments)]
fn side(
    a: bool,
    system: System,
    names: (&str, &str),
    size: usize,
    iterations: u64,
    warmup: u64,
    core: Option<usize>,
    met: &AtomicU32,
) -> Result<Option<Duration>, ChildError> {
    if let Some(c) = core {
        pin(c)?;
    }
    let (tx, rx) = if a { names } else { (names.1, names.0) };
    match system {
        System::Iceoryx2 => {
            // Declared first, dropped last: the ports and services go before their node.
            let node = NodeBuilder::new().create::<ipc::Service>()?;
            let q = iox::Queue::Benchmark;
            // A waits for a subscriber on its channel before it subscribes to B's; B subscribes
            // first: neither waits for the other (as the process roles ping and pong do).
            let (t, r) = if a {
                let t = iox::tx(&node, tx, size, q)?;
                (t, iox::rx(&node, rx, q)?)
            } else {
                let r = iox::rx(&node, rx, q)?;
                (iox::tx(&node, tx, size, q)?, r)
            };
            ping_pong(a, t, r, size, iterations, warmup, met)
        }
        System::Datahub | System::DatahubEnforced => {
            // Both create their block before they wait to attach to the other's.
            let t = dh::tx(system, tx, size, 1, datahub::SlotOrder::Auto)?;
            ping_pong(a, t, dh::rx(rx)?, size, iterations, warmup, met)
        }
    }
}

/// The timed loop of one side over its ends `t` and `r`.
fn ping_pong<T: Tx, R: Rx>(
    a: bool,
    mut t: T,
    mut r: R,
    size: usize,
    iterations: u64,
    warmup: u64,
    met: &AtomicU32,
) -> Result<Option<Duration>, ChildError> {
    let src = vec![0x5a_u8; size];
    let mut round = |i: u64| -> Result<(), ChildError> {
        if a {
            t.send(&src, i)?;
            expect(r.recv(seq_of)??, i)
        } else {
            expect(r.recv(seq_of)??, i)?;
            t.send(&src, i)
        }
    };
    meet(met, 1)?;
    for i in 0..warmup {
        round(i)?;
    }
    meet(met, 2)?;
    let start = Instant::now();
    for i in warmup..warmup + iterations {
        round(i)?;
    }
    let elapsed = start.elapsed();
    // Neither side drops its ends (and the blocks or services) before the other is done.
    meet(met, 3)?;
    Ok(a.then_some(elapsed))
}

/// Runs one thread-shape measurement; `name` is unique to it.
pub fn run(
    system: System,
    size: usize,
    iterations: u64,
    warmup: u64,
    name: &str,
) -> Result<ThreadRun, String> {
    set_log_level(LogLevel::Error);
    let names = match system {
        System::Iceoryx2 => (
            child::channel(name, "a2b").replace('-', "/"),
            child::channel(name, "b2a").replace('-', "/"),
        ),
        System::Datahub | System::DatahubEnforced => {
            (child::channel(name, "ping"), child::channel(name, "pong"))
        }
    };
    let cores = two_cores();
    let met = AtomicU32::new(0);
    let (ra, rb) = std::thread::scope(|s| {
        let side = |a: bool, core: Option<usize>| {
            let (met, names) = (&met, (names.0.as_str(), names.1.as_str()));
            move || {
                side(a, system, names, size, iterations, warmup, core, met)
                    .map_err(|e| e.to_string())
            }
        };
        let ta = s.spawn(side(true, cores.map(|c| c[0])));
        let tb = s.spawn(side(false, cores.map(|c| c[1])));
        let join = |t: std::thread::ScopedJoinHandle<'_, Result<_, String>>| {
            t.join()
                .unwrap_or_else(|_| Err("thread panicked".to_owned()))
        };
        (join(ta), join(tb))
    });
    if system != System::Iceoryx2 {
        dh::remove_segments(name);
    }
    let elapsed = match (ra, rb) {
        (Ok(Some(e)), Ok(_)) => e,
        (Err(e), _) | (_, Err(e)) => return Err(e),
        (Ok(None), Ok(_)) => return Err("thread A returned no time".to_owned()),
    };
    Ok(ThreadRun {
        size,
        iterations,
        warmup,
        elapsed_s: elapsed.as_secs_f64(),
        mean_one_way_ns: elapsed.as_nanos() as f64 / (2.0 * iterations as f64),
        cores,
    })
}
