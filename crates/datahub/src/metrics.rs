//! A snapshot of a block's counters.

use crate::block::Block;
use crate::layout::reg;
use crate::sync::Ordering::{Relaxed, SeqCst};

/// Counters of one block, read at one moment (each counter atomically, not all together).
/// Totals include consumers that have left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Metrics {
    /// Messages committed.
    pub slots_written: u64,
    /// Payload bytes committed.
    pub bytes_written: u64,
    /// Writes abandoned before commit.
    pub aborted_writes: u64,
    /// Messages released by readers (summed over consumers).
    pub slots_read: u64,
    /// Payload bytes released by readers.
    pub bytes_read: u64,
    /// Producer waits that timed out because the ring was full.
    pub writer_timeouts_ring_full: u64,
    /// Producer waits that timed out because readers held the slot.
    pub writer_timeouts_readers: u64,
    /// Reads that timed out.
    pub reader_timeouts: u64,
    /// Reader attempts that found the slot not (or no longer) holding the message and retried.
    pub reader_races: u64,
    /// Read guards whose slot changed under them (seq/state validation on release).
    pub validation_failures: u64,
    /// Checksums that did not match (or were missing).
    pub checksum_failures: u64,
    /// Checksums verified.
    pub checksums_verified: u64,
    /// Most readers seen holding one slot at once.
    pub peak_readers: u64,
    /// Recovery actions taken (takeovers, evictions, resets).
    pub recovery_actions: u64,
    /// Consumers retired because their process died.
    pub consumers_reclaimed: u64,
    /// Lossless readers that found their message overwritten (after eviction).
    pub overruns: u64,
    /// Consumer attaches and detaches.
    pub attaches: u64,
    /// Clean detaches.
    pub detaches: u64,
    /// [`crate::Error::code`] of the last error recorded, 0 if none.
    pub last_error_code: u64,
    /// Wall-clock time of that error, ns since the Unix epoch (0 if none).
    pub last_error_unix_ns: u64,
    /// One past the newest committed sequence number.
    pub commit_index: u64,
    /// Registered consumers.
    pub consumers: u32,
}

impl Metrics {
    pub(crate) fn read(b: &Block) -> Metrics {
        let h = b.header();
        let m = &h.metrics;
        let (slots_read, bytes_read, consumers) = read_totals(b);
        Metrics {
            slots_written: h.producer.slots_written.load(Relaxed),
            bytes_written: h.producer.bytes_written.load(Relaxed),
            aborted_writes: h.producer.aborted_writes.load(Relaxed),
            slots_read,
            bytes_read,
            writer_timeouts_ring_full: m.writer_timeouts_ring_full.load(Relaxed),
            writer_timeouts_readers: m.writer_timeouts_readers.load(Relaxed),
            reader_timeouts: m.reader_timeouts.load(Relaxed),
            reader_races: m.reader_races.load(Relaxed),
            validation_failures: m.validation_failures.load(Relaxed),
            checksum_failures: m.checksum_failures.load(Relaxed),
            checksums_verified: m.checksums_verified.load(Relaxed),
            peak_readers: m.peak_readers.load(Relaxed),
            recovery_actions: m.recovery_actions.load(Relaxed),
            consumers_reclaimed: m.consumers_reclaimed.load(Relaxed),
            overruns: m.overruns.load(Relaxed),
            attaches: m.attaches.load(Relaxed),
            detaches: m.detaches.load(Relaxed),
            last_error_code: m.last_error_code.load(Relaxed),
            last_error_unix_ns: m.last_error_unix_ns.load(Relaxed),
            commit_index: h.commit.commit_index.load(SeqCst),
            consumers,
        }
    }
}

/// Reads in a row [`read_totals`] tries for a snapshot no retirement ran through.
const TOTALS_ATTEMPTS: u32 = 1000;

/// Messages and bytes read by all consumers (registered ones plus those that left) and the
/// number registered.
///
/// A consumer that leaves moves its counters into the block's retired totals
/// (`Block::retire_consumer`: ACTIVE → CLAIMING, fold, FREE). A sum taken while that runs
/// could miss the consumer (its entry is no longer ACTIVE, its counts not yet folded) or count
/// it twice (seen ACTIVE, then folded), so the sum is taken again while an entry is CLAIMING
/// or the retired totals moved during it. After [`TOTALS_ATTEMPTS`] (an entry left CLAIMING
/// by a process that died inside the registration lock) the last sum is returned.
fn read_totals(b: &Block) -> (u64, u64, u32) {
    let h = b.header();
    let m = &h.metrics;
    let mut last = (0, 0, 0);
    for attempt in 0..TOTALS_ATTEMPTS {
        let reads0 = m.reads_retired.load(SeqCst);
        let bytes0 = m.bytes_read_retired.load(SeqCst);
        let (mut reads, mut bytes, mut consumers, mut retiring) = (reads0, bytes0, 0, false);
        for e in &h.consumers {
            match e.state.load(SeqCst) {
                reg::ACTIVE => {
                    consumers += 1;
                    reads = reads.wrapping_add(e.reads.load(SeqCst));
                    bytes = bytes.wrapping_add(e.bytes_read.load(SeqCst));
                }
                reg::CLAIMING => retiring = true,
                _ => {}
            }
        }
        last = (reads, bytes, consumers);
        let moved =
            m.reads_retired.load(SeqCst) != reads0 || m.bytes_read_retired.load(SeqCst) != bytes0;
        if !retiring && !moved {
            break;
        }
        if attempt % 16 == 15 {
            std::thread::yield_now();
        } else {
            crate::sync::spin_hint();
        }
    }
    last
}
