//! The iceoryx2 side: one `ipc::Service` node per child, one publish-subscribe service of
//! `[u8]` slices per channel.
//!
//! Every service is opened or created with the same settings by both children: safe overflow
//! off (a full subscriber queue is never overwritten), `subscriber_max_buffer_size = depth`,
//! history 0, one publisher and one subscriber. Publishers use
//! `BackpressureStrategy::RetryUntilDelivered` (with no handler installed, iceoryx2's own
//! blocking send: it yields in a loop while the subscriber's queue is full, 10,000 times before
//! it starts to sleep), so the throughput test is lossless, like DataHub's `Sequential` policy;
//! a lost message would fail the run (sequence numbers are checked). Publishers have
//! `initial_max_slice_len = size` and `max_loaned_samples(1)`. A message is sent with
//! `loan_slice_uninit(size)` + `write_from_slice` (a full copy into shared memory), the first 8
//! bytes are then overwritten with the sequence number, and `send()`. Receivers busy-poll
//! `receive()` with no pause in between.
//!
//! Before a child reports `ready`, its publisher has seen the peer's subscriber (and its
//! subscriber the peer's publisher) and called `update_connections()`: a sample sent before the
//! subscriber's end of the connection exists is dropped once the queue is full, even with
//! `RetryUntilDelivered`. Nodes of children that died are removed by iceoryx2 itself when the
//! next node is created (its default `cleanup_dead_nodes_on_creation`), and by the parent
//! after a failed pair ([`cleanup_dead_nodes`]).

use std::time::Instant;

use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::port::update_connections::UpdateConnections as _;
use iceoryx2::prelude::*;
use iceoryx2::service::port_factory::publish_subscribe::PortFactory as PubSubFactory;

use super::child::{self, ChildArgs, ChildError, Role, Rx, Tx, WAIT_TIMEOUT};

type Factory = PubSubFactory<ipc::Service, [u8], ()>;

/// A publisher and its service.
#[derive(Debug)]
pub struct IoxTx {
    publisher: Publisher<ipc::Service, [u8], ()>,
    _service: Factory,
}

/// A subscriber and its service.
#[derive(Debug)]
pub struct IoxRx {
    subscriber: Subscriber<ipc::Service, [u8], ()>,
    _service: Factory,
}

impl Tx for IoxTx {
    fn send(&mut self, src: &[u8], seq: u64) -> Result<(), ChildError> {
        let sample = self.publisher.loan_slice_uninit(src.len())?;
        let mut sample = sample.write_from_slice(src);
        sample.payload_mut()[..8].copy_from_slice(&seq.to_le_bytes());
        sample.send()?;
        Ok(())
    }
}

impl Rx for IoxRx {
    fn recv<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<R, ChildError> {
        let mut polls: u32 = 0;
        let mut start: Option<Instant> = None;
        loop {
            if let Some(sample) = self.subscriber.receive()? {
                return Ok(f(sample.payload()));
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

/// How a channel's queue is set up.
#[derive(Debug, Clone, Copy)]
pub(super) enum Queue {
    /// The process runs: `depth` messages, safe overflow off, publishers
    /// `RetryUntilDelivered` with one loan (lossless, see the module doc).
    Lossless(usize),
    /// iceoryx2's own benchmark (the thread-shape run): a subscriber buffer of 1, safe
    /// overflow on, default publisher settings; only one message is ever in flight.
    Benchmark,
}

fn service(node: &Node<ipc::Service>, name: &str, queue: Queue) -> Result<Factory, ChildError> {
    let name = ServiceName::new(name)?;
    let (safe_overflow, buffer) = match queue {
        Queue::Lossless(depth) => (false, depth),
        Queue::Benchmark => (true, 1),
    };
    Ok(node
        .service_builder(&name)
        .publish_subscribe::<[u8]>()
        .enable_safe_overflow(safe_overflow)
        .subscriber_max_buffer_size(buffer)
        .history_size(0)
        .max_publishers(1)
        .max_subscribers(1)
        .open_or_create()?)
}

/// The sending end of channel `name` for messages of `size` bytes; returns once a subscriber
/// is connected.
pub(super) fn tx(
    node: &Node<ipc::Service>,
    name: &str,
    size: usize,
    queue: Queue,
) -> Result<IoxTx, ChildError> {
    let service = service(node, name, queue)?;
    let builder = service.publisher_builder().initial_max_slice_len(size);
    let publisher = match queue {
        Queue::Lossless(_) => builder
            .max_loaned_samples(1)
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .create()?,
        Queue::Benchmark => builder.create()?,
    };
    child::wait_until("an iceoryx2 subscriber", || {
        service.dynamic_config().number_of_subscribers() >= 1
    })?;
    // Connect now (see the module doc).
    publisher.update_connections()?;
    Ok(IoxTx {
        publisher,
        _service: service,
    })
}

/// The receiving end of channel `name`; returns once a publisher is connected.
pub(super) fn rx(node: &Node<ipc::Service>, name: &str, queue: Queue) -> Result<IoxRx, ChildError> {
    let service = service(node, name, queue)?;
    let subscriber = match queue {
        Queue::Lossless(depth) => service.subscriber_builder().buffer_size(depth).create()?,
        Queue::Benchmark => service.subscriber_builder().create()?,
    };
    child::wait_until("an iceoryx2 publisher", || {
        service.dynamic_config().number_of_publishers() >= 1
    })?;
    subscriber.update_connections()?;
    Ok(IoxRx {
        subscriber,
        _service: service,
    })
}

/// Runs one iceoryx2 child; returns its JSON line.
pub fn run(a: &ChildArgs) -> Result<String, ChildError> {
    set_log_level(LogLevel::Error);
    // Declared first, dropped last: the ports and services below go before their node.
    let node = NodeBuilder::new().create::<ipc::Service>()?;
    let q = Queue::Lossless(a.depth);
    let (ping, pong, data) = (
        child::channel(&a.name, "ping"),
        child::channel(&a.name, "pong"),
        child::channel(&a.name, "data"),
    );
    // `ping` waits for a subscriber on `ping` before it subscribes to `pong`; `pong` subscribes
    // to `ping` before it waits for a subscriber on `pong`: neither waits for the other.
    match a.role {
        Role::Ping => {
            let t = tx(&node, &ping, a.size, q)?;
            let r = rx(&node, &pong, q)?;
            child::drive(a, Some(t), Some(r))
        }
        Role::Pong => {
            let r = rx(&node, &ping, q)?;
            let t = tx(&node, &pong, a.size, q)?;
            child::drive(a, Some(t), Some(r))
        }
        Role::Producer => child::drive(a, Some(tx(&node, &data, a.size, q)?), None::<IoxRx>),
        Role::Consumer => child::drive(a, None::<IoxTx>, Some(rx(&node, &data, q)?)),
    }
}

/// Removes what iceoryx2 children that died left behind (their nodes, services and shared
/// memory), by creating a node, which cleans up dead nodes, and asking it to do so again.
pub fn cleanup_dead_nodes() {
    set_log_level(LogLevel::Error);
    if let Ok(node) = NodeBuilder::new().create::<ipc::Service>() {
        let _ = node.try_cleanup_dead_nodes();
    }
}
