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

use datahub::{ChecksumPolicy, Config, Consumer, Expectations, Policy, Producer};
use iceoryx2::port::update_connections::UpdateConnections as _;
use iceoryx2::prelude::*;
use serde::{Deserialize, Serialize};

use super::System;
use super::child::{self, ChildError, WAIT_TIMEOUT};
use super::dh;

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

/// One side's ends: send a message, receive one (returning its sequence number).
trait Ends {
    fn send(&mut self, src: &[u8], seq: u64) -> Result<(), ChildError>;
    fn recv(&mut self) -> Result<u64, ChildError>;
}

fn seq_of(b: &[u8]) -> Result<u64, ChildError> {
    let head: [u8; 8] = b
        .get(..8)
        .and_then(|h| h.try_into().ok())
        .ok_or("message shorter than 8 bytes")?;
    Ok(u64::from_le_bytes(head))
}

struct DhEnds(Producer, Consumer);

impl Ends for DhEnds {
    fn send(&mut self, src: &[u8], seq: u64) -> Result<(), ChildError> {
        let mut w = self.0.write(WAIT_TIMEOUT)?;
        w[..src.len()].copy_from_slice(src);
        w[..8].copy_from_slice(&seq.to_le_bytes());
        w.commit(src.len())?;
        Ok(())
    }
    fn recv(&mut self) -> Result<u64, ChildError> {
        let r = self.1.read(WAIT_TIMEOUT)?;
        seq_of(&r)
    }
}

fn dh_ends(system: System, tx: &str, rx: &str, size: usize) -> Result<DhEnds, ChildError> {
    let checksum = if system == System::DatahubEnforced {
        ChecksumPolicy::Enforced
    } else {
        ChecksumPolicy::None
    };
    let config = Config::new(Policy::Sequential)
        .slot_size(u32::try_from(size)?)
        .slot_count(1)
        .checksum(checksum)
        .spin(dh::SPIN);
    let p = Producer::create(tx, config)?;
    let expect = Expectations::new()
        .policy(Policy::Sequential)
        .spin(dh::SPIN);
    let c = Consumer::attach_wait(rx, expect, WAIT_TIMEOUT)?;
    Ok(DhEnds(p, c))
}

type IoxFactory =
    iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, [u8], ()>;

// Field order: ports before their services, services before the node.
struct IoxEnds {
    publisher: iceoryx2::port::publisher::Publisher<ipc::Service, [u8], ()>,
    subscriber: iceoryx2::port::subscriber::Subscriber<ipc::Service, [u8], ()>,
    _services: (IoxFactory, IoxFactory),
    _node: Node<ipc::Service>,
}

impl Ends for IoxEnds {
    fn send(&mut self, src: &[u8], seq: u64) -> Result<(), ChildError> {
        let sample = self.publisher.loan_slice_uninit(src.len())?;
        let mut sample = sample.write_from_slice(src);
        sample.payload_mut()[..8].copy_from_slice(&seq.to_le_bytes());
        sample.send()?;
        Ok(())
    }
    fn recv(&mut self) -> Result<u64, ChildError> {
        let mut polls: u32 = 0;
        let mut start: Option<Instant> = None;
        loop {
            if let Some(sample) = self.subscriber.receive()? {
                return seq_of(sample.payload());
            }
            polls = polls.wrapping_add(1);
            if polls & 0xffff == 0 {
                let t = *start.get_or_insert_with(Instant::now);
                if t.elapsed() > WAIT_TIMEOUT {
                    return Err(format!("iceoryx2: no message within {WAIT_TIMEOUT:?}").into());
                }
            }
        }
    }
}

fn iox_service(node: &Node<ipc::Service>, name: &str) -> Result<IoxFactory, ChildError> {
    Ok(node
        .service_builder(&ServiceName::new(name)?)
        .publish_subscribe::<[u8]>()
        .history_size(0)
        .subscriber_max_buffer_size(1)
        .enable_safe_overflow(true)
        .max_publishers(1)
        .max_subscribers(1)
        .open_or_create()?)
}

fn iox_ends(tx: &str, rx: &str, size: usize) -> Result<IoxEnds, ChildError> {
    let node = NodeBuilder::new().create::<ipc::Service>()?;
    let (tx_service, rx_service) = (iox_service(&node, tx)?, iox_service(&node, rx)?);
    let publisher = tx_service
        .publisher_builder()
        .initial_max_slice_len(size)
        .create()?;
    let subscriber = rx_service.subscriber_builder().create()?;
    // A sample sent before the peer's end is connected would be lost: connect both first.
    child::wait_until("an iceoryx2 subscriber", || {
        tx_service.dynamic_config().number_of_subscribers() >= 1
    })?;
    child::wait_until("an iceoryx2 publisher", || {
        rx_service.dynamic_config().number_of_publishers() >= 1
    })?;
    publisher.update_connections()?;
    subscriber.update_connections()?;
    Ok(IoxEnds {
        publisher,
        subscriber,
        _services: (tx_service, rx_service),
        _node: node,
    })
}

fn ends(system: System, tx: &str, rx: &str, size: usize) -> Result<Box<dyn Ends>, ChildError> {
    Ok(match system {
        System::Iceoryx2 => Box::new(iox_ends(tx, rx, size)?),
        System::Datahub | System::DatahubEnforced => Box::new(dh_ends(system, tx, rx, size)?),
    })
}

fn expect(got: u64, want: u64) -> Result<(), ChildError> {
    if got == want {
        Ok(())
    } else {
        Err(format!("received message {got}, expected {want}").into())
    }
}

/// One side's whole run; A returns the timed interval.
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
    let mut e = ends(system, tx, rx, size)?;
    let src = vec![0x5a_u8; size];
    let round = |e: &mut Box<dyn Ends>, i: u64| -> Result<(), ChildError> {
        if a {
            e.send(&src, i)?;
            expect(e.recv()?, i)
        } else {
            expect(e.recv()?, i)?;
            e.send(&src, i)
        }
    };
    meet(met, 1)?;
    for i in 0..warmup {
        round(&mut e, i)?;
    }
    meet(met, 2)?;
    let start = Instant::now();
    for i in warmup..warmup + iterations {
        round(&mut e, i)?;
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
