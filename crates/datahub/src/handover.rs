//! Handover: a stream moving from one block to a successor block without loss.
//!
//! The producer ([`crate::Producer::handover`]) creates the successor with its indexes, floors
//! and `first_seq` at the cutover (the old block's next sequence number) and, in lossless
//! modes, a registration for every consumer registered on the old block (same entry, pid and
//! start time, position = cutover; bit set in `reserved_mask`). Then it writes the successor
//! record into the old block's handover area, publishes its `state` last (Release) and sets
//! the old block's `end_of_stream = cutover`. A consumer that reaches the cutover reads the
//! record (Acquire), checks it ([`read_record`]), opens the successor, checks that it is the
//! block the record names ([`check_successor`]), adopts its reserved entry (or registers anew),
//! and only then leaves the old block. The byte layout is in `docs/datahub-format.md`,
//! "Handover".
//!
//! Invariants:
//! - A published record never changes (the producer refuses to take over a handed-over block).
//! - While a reservation is pending its position (the cutover) is part of the successor's read
//!   floor, so the successor's producer never overwrites what a follower has yet to read.
//! - A reservation is dropped when its consumer left the old block without following, or died
//!   (the successor's usual dead-consumer recovery: the entry carries the consumer's pid).
#![cfg_attr(loom, allow(dead_code))]

use crate::Error;
#[cfg(not(loom))]
use crate::block::Block;
use crate::error::clip;
use crate::layout::{HANDOVER_NAME_CAP, HandoverArea, successor_check, successor_state};
use crate::sync::Ordering::{Acquire, Relaxed, Release};

/// Longest block name (`crate::MAX_NAME_LEN`).
const MAX_NAME: usize = 200;

/// The rules of `segment::check_name` (1..=200 bytes, no `/` or NUL, not `.` or `..`), here so
/// the record check also runs under loom.
fn is_block_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.contains('/')
        && !name.contains('\0')
        && name != "."
        && name != ".."
}

/// What [`crate::Producer::handover`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Handover {
    /// The old block's name (closed at `cutover_seq`, removed once its consumers have left or
    /// after [`crate::Config::handover_grace`]).
    pub old: String,
    /// The successor's name: the producer writes there now.
    pub new: String,
    /// The successor's first sequence number, the old block's end of stream.
    pub cutover_seq: u64,
}

/// A checked successor record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub name: String,
    pub cutover_seq: u64,
    pub layout_hash: u64,
    pub created_unix_ns: u64,
}

/// Writes and publishes the successor record (the caller then sets `end_of_stream`).
pub(crate) fn publish_record(area: &HandoverArea, r: &Record) {
    let name = r.name.as_bytes();
    debug_assert!(name.len() <= HANDOVER_NAME_CAP);
    area.state.store(successor_state::WRITING, Release);
    let mut padded = [0u8; HANDOVER_NAME_CAP];
    padded[..name.len()].copy_from_slice(name);
    for (w, chunk) in area.name.iter().zip(padded.chunks(8)) {
        w.store(
            u64::from_le_bytes(chunk.try_into().expect("8 bytes")),
            Relaxed,
        );
    }
    area.name_len.store(name.len() as u32, Relaxed);
    area.cutover_seq.store(r.cutover_seq, Relaxed);
    area.layout_hash.store(r.layout_hash, Relaxed);
    area.created_unix_ns.store(r.created_unix_ns, Relaxed);
    area.check.store(
        successor_check(name, r.cutover_seq, r.layout_hash, r.created_unix_ns),
        Relaxed,
    );
    // SYNC POINT: a reader's Acquire load of `state` in `read_record`: every field above is
    // visible to a reader that sees PUBLISHED.
    area.state.store(successor_state::PUBLISHED, Release);
}

/// Whether a record has been published (one Acquire load).
#[inline]
pub(crate) fn published(area: &HandoverArea) -> bool {
    area.state.load(Acquire) == successor_state::PUBLISHED
}

/// The block's successor record: `Ok(None)` if there is none (or it is still being written).
/// Nothing read from shared memory is trusted: the name must be 1..=200 printable bytes, a
/// valid block name (no `/`, not `.`/`..`), and the check word must match.
///
/// # Errors
/// [`Error::InvalidSuccessor`].
pub(crate) fn read_record(area: &HandoverArea) -> Result<Option<Record>, Error> {
    let bad = |why: String| Err(Error::InvalidSuccessor { why });
    // SYNC POINT: the producer's Release store of PUBLISHED in `publish_record`.
    match area.state.load(Acquire) {
        successor_state::NONE | successor_state::WRITING => return Ok(None),
        successor_state::PUBLISHED => {}
        s => return bad(format!("state word {s} is none of 0, 1, 2")),
    }
    let len = area.name_len.load(Relaxed) as usize;
    if len == 0 || len > MAX_NAME {
        return bad(format!("name length {len} outside 1..={MAX_NAME}"));
    }
    let mut bytes = [0u8; HANDOVER_NAME_CAP];
    for (w, chunk) in area.name.iter().zip(bytes.chunks_mut(8)) {
        chunk.copy_from_slice(&w.load(Relaxed).to_le_bytes());
    }
    let bytes = &bytes[..len];
    let cutover_seq = area.cutover_seq.load(Relaxed);
    let layout_hash = area.layout_hash.load(Relaxed);
    let created_unix_ns = area.created_unix_ns.load(Relaxed);
    let stored = area.check.load(Relaxed);
    let Ok(name) = std::str::from_utf8(bytes) else {
        return bad("name is not UTF-8".into());
    };
    if name.chars().any(|c| c.is_control()) {
        return bad(format!("name {:?} has control characters", clip(name)));
    }
    if !is_block_name(name) {
        return bad(format!(
            "name {:?} is not a block name (no '/', not '.' or '..')",
            clip(name)
        ));
    }
    let want = successor_check(bytes, cutover_seq, layout_hash, created_unix_ns);
    if stored != want {
        return bad(format!(
            "check word {stored:#018x}, expected {want:#018x} (damaged or forged record)"
        ));
    }
    Ok(Some(Record {
        name: name.to_owned(),
        cutover_seq,
        layout_hash,
        created_unix_ns,
    }))
}

#[cfg(not(loom))]
/// Checks that `succ` is the block `r` names: its layout hash, creation time and first
/// sequence number.
///
/// # Errors
/// [`Error::InvalidSuccessor`].
pub(crate) fn check_successor(r: &Record, succ: &Block) -> Result<(), Error> {
    let first = succ.header().handover.first_seq.load(Relaxed);
    if succ.info.layout_hash != r.layout_hash
        || succ.info.created_unix_ns != r.created_unix_ns
        || first != r.cutover_seq
    {
        return Err(Error::InvalidSuccessor {
            why: format!(
                "block {:?} is not the successor recorded (layout {:#x}, created {}, first seq {first}; record: {:#x}, {}, {})",
                clip(&r.name),
                succ.info.layout_hash,
                succ.info.created_unix_ns,
                r.layout_hash,
                r.created_unix_ns,
                r.cutover_seq
            ),
        });
    }
    Ok(())
}

#[cfg(all(test, not(loom)))]
mod tests {
    #[test]
    fn the_record_name_rules_are_the_segment_name_rules() {
        for n in [
            "a",
            "..",
            ".",
            "a/b",
            "a\0b",
            "",
            &"x".repeat(200),
            &"x".repeat(201),
        ] {
            assert_eq!(
                super::is_block_name(n),
                crate::segment::check_name(n).is_ok(),
                "{n:?}"
            );
        }
        assert_eq!(super::MAX_NAME, crate::segment::MAX_NAME_LEN);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! The successor record is published with a Release store of its state word before the
    //! end of stream: a reader that sees the end (or the state) reads a complete record.
    use super::*;
    use crate::layout::NO_SEQ;
    use crate::sync::Ordering::SeqCst;
    use crate::sync::{AtomicU32, AtomicU64};
    use loom::sync::Arc;
    use loom::thread;

    fn area() -> HandoverArea {
        HandoverArea {
            first_seq: AtomicU64::new(0),
            reserved_mask: AtomicU64::new(0),
            state: AtomicU32::new(successor_state::NONE),
            name_len: AtomicU32::new(0),
            cutover_seq: AtomicU64::new(0),
            layout_hash: AtomicU64::new(0),
            created_unix_ns: AtomicU64::new(0),
            check: AtomicU64::new(0),
            _pad: 0,
            name: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn record() -> Record {
        Record {
            name: "successor-block".into(),
            cutover_seq: 7,
            layout_hash: 0x1234_5678,
            created_unix_ns: 99,
        }
    }

    #[test]
    fn loom_a_reader_that_sees_the_end_of_stream_reads_the_whole_successor_record() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(2);
        b.check(|| {
            let shared = Arc::new((area(), AtomicU64::new(NO_SEQ)));
            let w = {
                let s = shared.clone();
                thread::spawn(move || {
                    publish_record(&s.0, &record());
                    // SYNC POINT: the reader's SeqCst load of the end of stream.
                    s.1.store(7, SeqCst);
                })
            };
            let eos = shared.1.load(SeqCst);
            let got = read_record(&shared.0).expect("a record being published is never invalid");
            if eos == 7 {
                assert_eq!(got, Some(record()), "end of stream seen before the record");
            } else if let Some(r) = got {
                assert_eq!(r, record(), "a torn record");
            }
            w.join().unwrap();
        });
    }
}
