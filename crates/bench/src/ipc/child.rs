//! The child side of `bench datahub`: one process of a ping/pong or producer/consumer pair.
//!
//! Both systems run the same loops, written once against [`Tx`] and [`Rx`]; only the endpoint
//! types differ ([`super::iox`], [`super::dh`]). The protocol with the parent:
//!
//! 1. set up the endpoints (sending side first, then receiving side) and wait until the peer's
//!    side of every channel is there;
//! 2. print `ready` on stdout, then wait for a `go` line on stdin (the parent sends it once
//!    both children are ready, so neither starts before the other is connected);
//! 3. run the role;
//! 4. the passive roles (`pong`, `producer`) then wait for stdin to close before tearing their
//!    endpoints down, so the active side can read its last message from a live peer; the parent
//!    closes it once the active side has exited;
//! 5. print one JSON line (the result) and exit.

use std::io::{BufRead as _, Write as _};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use super::System;

/// How long any wait of a child (peer to appear, next message, free slot) may take before the
/// child gives up with an error, so a broken peer never hangs the benchmark.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The error of a child.
pub type ChildError = Box<dyn std::error::Error>;

/// A channel's sending end.
pub trait Tx {
    /// Takes a free slot (waiting while the queue is full), copies all of `src` into it, stamps
    /// `seq` (little endian) over its first 8 bytes and publishes `src.len()` bytes.
    fn send(&mut self, src: &[u8], seq: u64) -> Result<(), ChildError>;

    /// Sends `n` messages `first..first + n` (each a copy of `src` with its seq stamped). The
    /// default sends them one at a time; DataHub claims and commits them as one batch.
    fn send_batch(&mut self, src: &[u8], first: u64, n: usize) -> Result<(), ChildError> {
        for k in 0..n as u64 {
            self.send(src, first + k)?;
        }
        Ok(())
    }
}

/// A channel's receiving end.
pub trait Rx {
    /// Busy-waits for the next message, calls `f` with its bytes, then releases it.
    fn recv<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<R, ChildError>;

    /// Busy-waits for the next message and takes up to `max` (at least 1), calling `f` on each
    /// in order; returns how many. The default takes one; DataHub takes the committed run.
    fn recv_batch(
        &mut self,
        max: usize,
        f: &mut dyn FnMut(&[u8]) -> Result<(), ChildError>,
    ) -> Result<usize, ChildError> {
        let _ = max;
        self.recv(|d| f(d))??;
        Ok(1)
    }
}

/// The role of a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Latency, side A: sends on `ping`, receives on `pong`, times every round trip.
    Ping,
    /// Latency, side B: receives on `ping`, sends every message back on `pong`.
    Pong,
    /// Throughput: sends `warmup + messages` messages on `data` as fast as it can.
    Producer,
    /// Throughput: receives them and times the last `messages`.
    Consumer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ping => "ping",
            Role::Pong => "pong",
            Role::Producer => "producer",
            Role::Consumer => "consumer",
        }
    }
}

/// Arguments of the hidden `child-ipc` subcommand.
#[derive(Debug, Args)]
pub struct ChildArgs {
    #[arg(long)]
    pub system: System,
    #[arg(long)]
    pub role: Role,
    /// Payload bytes per message (at least 8: the sequence number).
    #[arg(long)]
    pub size: usize,
    /// Measured round trips (ping/pong) or messages (producer/consumer).
    #[arg(long)]
    pub messages: u64,
    /// Unmeasured round trips or messages before them (at least 1).
    #[arg(long)]
    pub warmup: u64,
    /// Slots of each channel's queue.
    #[arg(long)]
    pub depth: usize,
    /// Base name of the channels, unique to this pair of children.
    #[arg(long)]
    pub name: String,
    /// Messages per batch (producer and consumer; 1: one at a time). Throughput only.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// DataHub's slot order (`Config::slot_order`).
    #[arg(long, value_enum, default_value_t = super::DhSlotOrder::Auto)]
    pub slot_order: super::DhSlotOrder,
}

/// Channel names of a pair.
pub fn channel(base: &str, which: &str) -> String {
    format!("{base}-{which}")
}

/// One latency run (printed by `ping`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyRun {
    pub size: usize,
    pub round_trips: u64,
    pub warmup_round_trips: u64,
    /// One-way latency = round trip / 2, ns.
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    pub mean_ns: f64,
}

/// One throughput run (printed by `consumer`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThroughputRun {
    pub size: usize,
    /// Slots of the queue (DataHub `slot_count`, iceoryx2 `subscriber_max_buffer_size`).
    #[serde(default)]
    pub depth: usize,
    /// Messages per batch (1: one at a time).
    #[serde(default = "one")]
    pub batch: usize,
    pub messages: u64,
    pub warmup_messages: u64,
    /// From the consumer's receipt of the last warm-up message to its receipt of the last one.
    pub elapsed_ns: u64,
    pub msgs_per_sec: f64,
    /// Payload bytes / 1e9 per second.
    pub gb_per_sec: f64,
}

fn one() -> usize {
    1
}

/// What the passive roles print.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PassiveRun {
    pub role: String,
    pub messages_sent: u64,
}

/// The payload every sender copies into its slots: a fixed byte pattern (the first 8 bytes are
/// overwritten by the sequence number in the slot).
pub fn payload(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(7))
        .collect()
}

/// Reads a received message: its sequence number (first 8 bytes) and its last byte, which
/// must be the pattern's.
fn check(d: &[u8], size: usize, last: u8) -> Result<u64, String> {
    if d.len() != size {
        return Err(format!("received {} bytes, expected {size}", d.len()));
    }
    if d[size - 1] != last {
        return Err(format!(
            "last payload byte is {:#04x}, expected {last:#04x}",
            d[size - 1]
        ));
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&d[..8]);
    Ok(u64::from_le_bytes(seq))
}

fn expect_seq(got: u64, want: u64) -> Result<(), ChildError> {
    if got == want {
        Ok(())
    } else {
        Err(format!("received message #{got}, expected #{want} (lost or reordered)").into())
    }
}

/// Prints `ready`, then waits for the parent's `go`.
pub fn ready_then_wait_go() -> Result<(), ChildError> {
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready")?;
        out.flush()?;
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() != "go" {
        return Err(format!("expected `go` from the parent, got {:?}", line.trim()).into());
    }
    Ok(())
}

/// Waits until stdin is closed (the parent's signal that the active side is done).
pub fn wait_stdin_closed() -> Result<(), ChildError> {
    let mut sink = String::new();
    let mut stdin = std::io::stdin().lock();
    while stdin.read_line(&mut sink)? != 0 {
        sink.clear();
    }
    Ok(())
}

/// `ping`: `warmup + round_trips` round trips, each timed from before the send to after the
/// reply was read and released.
pub fn run_ping(
    tx: &mut impl Tx,
    rx: &mut impl Rx,
    a: &ChildArgs,
) -> Result<LatencyRun, ChildError> {
    let src = payload(a.size);
    let last = src[a.size - 1];
    let mut hist = crate::workload::new_histogram()?;
    for i in 0..a.warmup + a.messages {
        let t0 = Instant::now();
        tx.send(&src, i)?;
        let seq = rx.recv(|d| check(d, a.size, last))??;
        let rtt = t0.elapsed();
        expect_seq(seq, i)?;
        if i >= a.warmup {
            let ns = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX);
            hist.saturating_record((ns / 2).max(1));
        }
    }
    Ok(LatencyRun {
        size: a.size,
        round_trips: a.messages,
        warmup_round_trips: a.warmup,
        p50_ns: hist.value_at_quantile(0.50),
        p99_ns: hist.value_at_quantile(0.99),
        p999_ns: hist.value_at_quantile(0.999),
        max_ns: hist.max(),
        mean_ns: hist.mean(),
    })
}

/// `pong`: receives every ping and, while still holding it, copies it into a `pong` slot and
/// publishes that.
pub fn run_pong(
    tx: &mut impl Tx,
    rx: &mut impl Rx,
    a: &ChildArgs,
) -> Result<PassiveRun, ChildError> {
    let last = payload(a.size)[a.size - 1];
    let total = a.warmup + a.messages;
    for i in 0..total {
        let seq = rx.recv(|d| -> Result<u64, ChildError> {
            let seq = check(d, a.size, last)?;
            tx.send(d, seq)?;
            Ok(seq)
        })??;
        expect_seq(seq, i)?;
    }
    Ok(PassiveRun {
        role: Role::Pong.as_str().to_owned(),
        messages_sent: total,
    })
}

/// `producer`: `warmup + messages` sends of the whole payload, back to back.
pub fn run_producer(tx: &mut impl Tx, a: &ChildArgs) -> Result<PassiveRun, ChildError> {
    let src = payload(a.size);
    let total = a.warmup + a.messages;
    if a.batch > 1 {
        let mut i = 0;
        while i < total {
            let n = (a.batch as u64).min(total - i);
            tx.send_batch(&src, i, n as usize)?;
            i += n;
        }
    } else {
        for i in 0..total {
            tx.send(&src, i)?;
        }
    }
    Ok(PassiveRun {
        role: Role::Producer.as_str().to_owned(),
        messages_sent: total,
    })
}

/// `consumer`: receives every message (sequence number and last byte checked) and times the
/// `messages` after the warm-up.
pub fn run_consumer(rx: &mut impl Rx, a: &ChildArgs) -> Result<ThroughputRun, ChildError> {
    let last = payload(a.size)[a.size - 1];
    let total = a.warmup + a.messages;
    let mut start = Instant::now();
    if a.batch > 1 {
        // The timer starts after the batch that holds the last warm-up message: `validate`
        // makes the warm-up a multiple of the batch, so that batch ends exactly there.
        let mut i = 0u64;
        while i < total {
            let max = (a.batch as u64).min(total - i) as usize;
            let got = rx.recv_batch(max, &mut |d| {
                expect_seq(check(d, a.size, last)?, i)?;
                i += 1;
                Ok(())
            })?;
            debug_assert!(got >= 1);
            if i == a.warmup {
                start = Instant::now();
            }
        }
    } else {
        for i in 0..total {
            let seq = rx.recv(|d| check(d, a.size, last))??;
            expect_seq(seq, i)?;
            if i + 1 == a.warmup {
                start = Instant::now();
            }
        }
    }
    let elapsed = start.elapsed();
    let secs = elapsed.as_secs_f64();
    let msgs_per_sec = a.messages as f64 / secs;
    Ok(ThroughputRun {
        size: a.size,
        depth: a.depth,
        batch: a.batch,
        messages: a.messages,
        warmup_messages: a.warmup,
        elapsed_ns: u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
        msgs_per_sec,
        gb_per_sec: msgs_per_sec * a.size as f64 / 1e9,
    })
}

/// Runs a role with its endpoints (`None` where the role has no such end): `ready`/`go`, the
/// loop, the passive side's wait for stdin to close. The endpoints are dropped after that.
/// Returns the JSON line to print.
pub fn drive<T: Tx, R: Rx>(
    a: &ChildArgs,
    tx: Option<T>,
    rx: Option<R>,
) -> Result<String, ChildError> {
    let (mut tx, mut rx) = (tx, rx);
    let (tx, rx) = (tx.as_mut(), rx.as_mut());
    let missing = || -> ChildError { "endpoint missing for this role".into() };
    ready_then_wait_go()?;
    let line = match a.role {
        Role::Ping => {
            let (tx, rx) = (tx.ok_or_else(missing)?, rx.ok_or_else(missing)?);
            serde_json::to_string(&run_ping(tx, rx, a)?)?
        }
        Role::Pong => {
            let (tx, rx) = (tx.ok_or_else(missing)?, rx.ok_or_else(missing)?);
            let r = run_pong(tx, rx, a)?;
            wait_stdin_closed()?;
            serde_json::to_string(&r)?
        }
        Role::Producer => {
            let r = run_producer(tx.ok_or_else(missing)?, a)?;
            wait_stdin_closed()?;
            serde_json::to_string(&r)?
        }
        Role::Consumer => serde_json::to_string(&run_consumer(rx.ok_or_else(missing)?, a)?)?,
    };
    Ok(line)
}

/// Checks the arguments every system relies on.
pub fn validate(a: &ChildArgs) -> Result<(), ChildError> {
    if a.size < 8 {
        return Err("--size must be at least 8 (the sequence number)".into());
    }
    if a.warmup == 0 {
        return Err("--warmup must be at least 1".into());
    }
    if a.depth == 0 {
        return Err("--depth must be at least 1".into());
    }
    if a.batch == 0 || a.batch > a.depth {
        return Err("--batch must be 1..=--depth".into());
    }
    if a.warmup % a.batch as u64 != 0 {
        return Err("--warmup must be a multiple of --batch".into());
    }
    Ok(())
}

/// Polls `cond` until it holds or [`WAIT_TIMEOUT`] passes (`what` names it in the error).
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) -> Result<(), ChildError> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > WAIT_TIMEOUT {
            return Err(format!("timed out after {WAIT_TIMEOUT:?} waiting for {what}").into());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}
