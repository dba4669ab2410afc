//! The epoch ring: 16 slots, each holding one era at a time, and their labels.

use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// Number of epoch slots in the ring.
pub const EPOCH_COUNT: usize = 16;

/// Longest label kept, in bytes; longer labels are cut at the last char boundary that fits.
pub const MAX_LABEL_LEN: usize = 31;

/// Largest number of distinct labels with their own id; id 0 means "unlabeled or overflow".
pub const MAX_LABELS: usize = 16;

/// Names one epoch: a ring slot and the era it held when the id was taken. An `EpochId` whose
/// slot has since been re-opened is stale and rejected with [`crate::Error::StaleEpoch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct EpochId {
    pub(crate) index: u8,
    pub(crate) era: u64,
}

impl EpochId {
    /// Ring slot, `0..EPOCH_COUNT`.
    pub fn index(self) -> usize {
        usize::from(self.index)
    }
    /// Era: a number unique to this opening of the slot, increasing across the whole allocator.
    pub fn era(self) -> u64 {
        self.era
    }

    /// The id as one `u64`, for crossing an ABI: `era << 4 | index` (the ring index in the low
    /// 4 bits, [`EPOCH_COUNT`] = 16). Eras are at least 1, so a valid id is never 0. Eras
    /// below 2^60 round-trip through [`EpochId::from_bits`]; an allocator reaches 2^60 eras
    /// only after 2^60 `epoch_advance` calls.
    pub fn to_bits(self) -> u64 {
        self.era << 4 | u64::from(self.index)
    }

    /// The id [`EpochId::to_bits`] packed, or `None` for a word with era 0 (no epoch has era 0:
    /// it means "never opened"). Any other word gives an id; one that names no epoch the
    /// allocator opened, or a stale one, is refused by every call that takes it
    /// ([`crate::Error::StaleEpoch`]), never undefined behaviour.
    pub fn from_bits(bits: u64) -> Option<EpochId> {
        let era = bits >> 4;
        (era != 0).then_some(EpochId {
            index: (bits & 0xF) as u8,
            era,
        })
    }
}

const _: () = assert!(
    EPOCH_COUNT == 16,
    "EpochId::to_bits packs the index in 4 bits"
);

/// Lifecycle state of an epoch.
///
/// An epoch stays in its ring slot, with its label, refcount and live objects, until it
/// **drains** (CLOSING, refcount 0, no slab holds its objects): only then can
/// [`crate::SlabAllocator::epoch_advance`] reopen the slot for a new era.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "SCREAMING_SNAKE_CASE"))]
pub enum EpochState {
    /// Accepting allocations.
    Active,
    /// Closed: no new allocations; live objects stay valid, slabs are recycled as they empty.
    Closing,
}

impl EpochState {
    /// `"ACTIVE"` or `"CLOSING"`, as in the stats JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            EpochState::Active => "ACTIVE",
            EpochState::Closing => "CLOSING",
        }
    }
}

/// Bits of the era tag in [`EpochSlot::refs`].
pub(crate) const REF_ERA_BITS: u32 = 40;
/// Bits of the count in [`EpochSlot::refs`].
pub(crate) const REF_COUNT_BITS: u32 = 64 - REF_ERA_BITS;
/// Largest domain refcount.
pub(crate) const MAX_REFCOUNT: u64 = (1 << REF_COUNT_BITS) - 1;

/// `refs` word of `era` with `count` references: the era's low 40 bits, then the count.
#[inline]
pub(crate) fn pack_refs(era: u64, count: u64) -> u64 {
    (era << REF_COUNT_BITS) | (count & MAX_REFCOUNT)
}

/// The count of a `refs` word whose era tag matches `era`, or `None`.
#[inline]
pub(crate) fn refs_count(refs: u64, era: u64) -> Option<u64> {
    (refs >> REF_COUNT_BITS == era & ((1 << REF_ERA_BITS) - 1)).then_some(refs & MAX_REFCOUNT)
}

/// `era << 1 | closing`, one word so the fast path checks era and state in one load.
#[inline]
pub(crate) fn pack_state(era: u64, closing: bool) -> u64 {
    era << 1 | u64::from(closing)
}

/// One ring slot. A cache line of its own: the fast path reads `state` on every allocation.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct EpochSlot {
    /// [`pack_state`] of the era the slot holds; 0 = never opened.
    pub state: AtomicU64,
    /// Domain refcount with the era it counts for: [`pack_refs`]. Threads inside the epoch's
    /// domain plus explicit `inc_refcount`s. Changed only by CAS that checks the era tag, so a
    /// domain of an older era can never change a newer era's count, and the slot is reopened only
    /// by a CAS from "this era, count 0".
    pub refs: AtomicU64,
    /// Slabs assigned to this era and not yet recycled (published in a run, on a partial list,
    /// counted full). The era has drained when this is 0 (and it is CLOSING with refcount 0).
    pub slabs: AtomicU64,
    /// Monotonic nanoseconds (since the allocator was created) when the era was opened.
    pub opened_ns: AtomicU64,
    /// Process RSS before / after the last `epoch_close` of this era, bytes (0 = never closed).
    pub rss_before_close: AtomicU64,
    pub rss_after_close: AtomicU64,
    /// Monotonic nanoseconds when the era was closed (0 = not closed).
    pub closed_ns: AtomicU64,
    /// Label id in the allocator's registry (0 = unlabeled or over the registry's capacity).
    pub label_id: AtomicU32,
}

impl EpochSlot {
    pub(crate) fn new() -> EpochSlot {
        EpochSlot {
            state: AtomicU64::new(0),
            refs: AtomicU64::new(0),
            slabs: AtomicU64::new(0),
            opened_ns: AtomicU64::new(0),
            rss_before_close: AtomicU64::new(0),
            rss_after_close: AtomicU64::new(0),
            closed_ns: AtomicU64::new(0),
            label_id: AtomicU32::new(0),
        }
    }

    /// The refcount, whatever era it counts for (for snapshots).
    pub(crate) fn refcount_any(&self) -> u64 {
        self.refs.load(Ordering::Relaxed) & MAX_REFCOUNT
    }

    pub(crate) fn era_state(&self) -> (u64, EpochState) {
        let w = self.state.load(Ordering::Acquire);
        (
            w >> 1,
            if w & 1 == 1 {
                EpochState::Closing
            } else {
                EpochState::Active
            },
        )
    }
}

/// A label of at most [`MAX_LABEL_LEN`] bytes, stored inline (no allocation under the lock).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Label {
    len: u8,
    bytes: [u8; MAX_LABEL_LEN],
}

impl Label {
    /// Cuts `text` to at most [`MAX_LABEL_LEN`] bytes at a char boundary.
    pub(crate) fn new(text: &str) -> Label {
        let mut end = text.len().min(MAX_LABEL_LEN);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0; MAX_LABEL_LEN];
        bytes[..end].copy_from_slice(&text.as_bytes()[..end]);
        Label {
            len: end as u8,
            bytes,
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        // Built from a &str cut at a char boundary, so always valid UTF-8.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

/// Labels of the ring and the id registry, behind the allocator's own lock (never a global one).
#[derive(Debug, Default)]
pub(crate) struct Labels {
    /// Registry: id `i + 1` is `registry[i]`.
    pub registry: [Label; MAX_LABELS],
    pub registry_len: usize,
    /// The label text of each ring slot (empty = unlabeled).
    pub epoch: [Label; EPOCH_COUNT],
}

impl Labels {
    /// Id of `label`, registering it if there is room; 0 when the registry is full or the label
    /// is empty.
    pub(crate) fn intern(&mut self, label: &Label) -> u32 {
        if label.len == 0 {
            return 0;
        }
        if let Some(i) = self.registry[..self.registry_len]
            .iter()
            .position(|l| l == label)
        {
            return i as u32 + 1;
        }
        if self.registry_len == MAX_LABELS {
            return 0;
        }
        self.registry[self.registry_len] = *label;
        self.registry_len += 1;
        self.registry_len as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_ids_round_trip_through_bits_and_era_zero_is_refused() {
        let id = EpochId {
            index: 13,
            era: 123_456_789,
        };
        assert_eq!(EpochId::from_bits(id.to_bits()), Some(id));
        assert_eq!(id.to_bits() & 0xF, 13);
        assert_eq!(EpochId::from_bits(0), None);
        assert_eq!(
            EpochId::from_bits(0xF),
            None,
            "era 0 in any slot is refused"
        );
        assert_eq!(EpochId::from_bits(0x1F).map(EpochId::index), Some(15));
    }

    #[test]
    fn labels_are_cut_at_a_char_boundary_within_31_bytes() {
        assert_eq!(Label::new("short").as_str(), "short");
        let long = "a".repeat(40);
        assert_eq!(Label::new(&long).as_str().len(), 31);
        // 30 ASCII bytes then a 3-byte char: 33 bytes, the char must be dropped whole.
        let text = format!("{}€", "x".repeat(30));
        assert_eq!(Label::new(&text).as_str(), "x".repeat(30));
    }

    #[test]
    fn the_seventeenth_distinct_label_maps_to_zero() {
        let mut labels = Labels::default();
        for i in 0..MAX_LABELS {
            assert_eq!(labels.intern(&Label::new(&format!("l{i}"))), i as u32 + 1);
        }
        assert_eq!(labels.intern(&Label::new("one-too-many")), 0);
        assert_eq!(
            labels.intern(&Label::new("l3")),
            4,
            "known labels keep their id"
        );
        assert_eq!(labels.intern(&Label::new("")), 0);
    }
}
