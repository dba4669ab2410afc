//! The DataHub side: one `Producer` per sending end, one `Consumer` per receiving end.
//!
//! Every channel is `Policy::Sequential` (lossless, one reader, the writer waits while the ring
//! is full) with `slot_size = size`, `slot_count = depth`, and a spin of [`SPIN`] for the
//! producer (`Config::spin`) and the consumer (`Expectations::spin`), so that every wait
//! busy-spins (like the iceoryx2 side's busy loop) rather than sleeping on a futex. `datahub_enforced` also sets `ChecksumPolicy::Enforced` (BLAKE2b of
//! the payload at commit, verified on read). A message is sent with `write()`, a copy of the
//! full payload into the slot, the sequence number over its first 8 bytes, and
//! `commit(size)`; it is read with `read()` and released by dropping the guard. The slot order
//! is `SlotOrder::Auto` unless `bench datahub --slot-order` says otherwise.

use std::time::Duration;

use datahub::{ChecksumPolicy, Config, Consumer, Expectations, Policy, Producer, SlotOrder};

use super::System;
use super::child::{self, ChildArgs, ChildError, Role, Rx, Tx, WAIT_TIMEOUT};

/// How long DataHub's waits busy-spin before they sleep.
pub const SPIN: Duration = Duration::from_secs(1);

/// A producer.
#[derive(Debug)]
pub struct DhTx(Producer);

/// A consumer.
#[derive(Debug)]
pub struct DhRx(Consumer);

impl Tx for DhTx {
    fn send(&mut self, src: &[u8], seq: u64) -> Result<(), ChildError> {
        let mut w = self.0.write(WAIT_TIMEOUT)?;
        DhTx::stamp(&mut w, src, seq);
        w.commit(src.len())?;
        Ok(())
    }

    /// One `write_batch(n)`: each slot a copy of `src` with its seq, one commit.
    fn send_batch(&mut self, src: &[u8], first: u64, n: usize) -> Result<(), ChildError> {
        let mut b = self.0.write_batch(n, WAIT_TIMEOUT)?;
        debug_assert_eq!(b.first_seq(), first);
        for k in 0..n {
            DhTx::stamp(b.slot_mut(k), src, first + k as u64);
            b.set_len(k, src.len());
        }
        b.commit()?;
        Ok(())
    }
}

impl DhTx {
    fn stamp(dst: &mut [u8], src: &[u8], seq: u64) {
        dst[..src.len()].copy_from_slice(src);
        dst[..8].copy_from_slice(&seq.to_le_bytes());
    }
}

impl Rx for DhRx {
    fn recv<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<R, ChildError> {
        let r = self.0.read(WAIT_TIMEOUT)?;
        let out = f(&r);
        drop(r);
        Ok(out)
    }

    /// One `read_batch(max)`: `f` on each message of the committed run, one release.
    fn recv_batch(
        &mut self,
        max: usize,
        f: &mut dyn FnMut(&[u8]) -> Result<(), ChildError>,
    ) -> Result<usize, ChildError> {
        let b = self.0.read_batch(max, WAIT_TIMEOUT)?;
        for k in 0..b.len() {
            f(b.get(k))?;
        }
        let n = b.len();
        b.release()?;
        Ok(n)
    }
}

fn config(
    system: System,
    size: usize,
    depth: usize,
    order: SlotOrder,
) -> Result<Config, ChildError> {
    let checksum = if system == System::DatahubEnforced {
        ChecksumPolicy::Enforced
    } else {
        ChecksumPolicy::None
    };
    Ok(Config::new(Policy::Sequential)
        .slot_size(u32::try_from(size)?)
        .slot_count(u32::try_from(depth)?)
        .checksum(checksum)
        .slot_order(order)
        .spin(SPIN))
}

/// The sending end of channel `name`: a block of `depth` slots of `size` bytes.
pub(super) fn tx(
    system: System,
    name: &str,
    size: usize,
    depth: usize,
    order: SlotOrder,
) -> Result<DhTx, ChildError> {
    Ok(DhTx(Producer::create(
        name,
        config(system, size, depth, order)?,
    )?))
}

/// The receiving end of channel `name` (waits for its block).
pub(super) fn rx(name: &str) -> Result<DhRx, ChildError> {
    let expect = Expectations::new().policy(Policy::Sequential).spin(SPIN);
    Ok(DhRx(Consumer::attach_wait(name, expect, WAIT_TIMEOUT)?))
}

/// Runs one DataHub child; returns its JSON line.
pub fn run(system: System, a: &ChildArgs) -> Result<String, ChildError> {
    let (ping, pong, data) = (
        child::channel(&a.name, "ping"),
        child::channel(&a.name, "pong"),
        child::channel(&a.name, "data"),
    );
    let order = a.slot_order.into();
    // Both latency children create their producer before they wait to attach to the other's.
    match a.role {
        Role::Ping => {
            let t = tx(system, &ping, a.size, a.depth, order)?;
            let r = rx(&pong)?;
            child::drive(a, Some(t), Some(r))
        }
        Role::Pong => {
            let t = tx(system, &pong, a.size, a.depth, order)?;
            let r = rx(&ping)?;
            child::drive(a, Some(t), Some(r))
        }
        Role::Producer => child::drive(
            a,
            Some(tx(system, &data, a.size, a.depth, order)?),
            None::<DhRx>,
        ),
        Role::Consumer => child::drive(a, None::<DhTx>, Some(rx(&data)?)),
    }
}

/// Removes the shared-memory files of a pair whose children have exited (a child that died
/// never dropped its producer). Names are unique to the pair, so nothing else is touched.
pub fn remove_segments(base: &str) {
    for which in ["ping", "pong", "data"] {
        let path = std::path::Path::new("/dev/shm").join(child::channel(base, which));
        let _ = std::fs::remove_file(path);
    }
}
