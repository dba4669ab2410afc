//! Packed object handles.
//!
//! ```text
//!  63        52 51                  28 27                      6 5     0
//! +------------+----------------------+-------------------------+-------+
//! | tag (12)   | generation (24)      | slab index (22)         | slot  |
//! +------------+----------------------+-------------------------+-------+
//! ```
//! The tag identifies the allocator (1..=4095, never 0, so `0` is never a valid handle), the slab
//! index is the slab's position in the allocator's reservation, the slot its position in the slab,
//! and the generation the slot's generation when the object was handed out. Every free of a slot
//! advances its generation, so a handle kept past its free no longer matches.
//!
//! Limits: a handle that waits for exactly 2^24 (16,777,216) reuses of its slot before being
//! used again matches again (the generation wraps); with more than 4095 allocators alive at once,
//! two of them share a tag and their handles are not told apart.

/// Bits of the slot field.
pub(crate) const SLOT_BITS: u32 = 6;
/// Bits of the slab-index field.
pub(crate) const SLAB_BITS: u32 = 22;
/// Bits of the generation field.
pub(crate) const GEN_BITS: u32 = 24;
/// Mask of a generation.
pub(crate) const GEN_MASK: u32 = (1 << GEN_BITS) - 1;
/// Largest number of slabs one allocator can address.
pub(crate) const MAX_SLABS: usize = 1 << SLAB_BITS;

/// An opaque reference to a slab object: allocator tag, slab index, slot and the slot's
/// generation packed into a `u64` (layout in the module docs). Copy it freely; it is checked on
/// every use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(transparent)]
pub struct Handle(u64);

impl Handle {
    pub(crate) fn pack(tag: u16, slab: u32, slot: u32, generation: u32) -> Handle {
        debug_assert!(tag != 0 && tag < 4096 && (slab as usize) < MAX_SLABS && slot < 64);
        Handle(
            (u64::from(tag) << 52)
                | (u64::from(generation & GEN_MASK) << 28)
                | (u64::from(slab) << SLOT_BITS)
                | u64::from(slot),
        )
    }

    /// The raw `u64`.
    pub fn to_raw(self) -> u64 {
        self.0
    }

    /// Rebuilds a handle from [`Handle::to_raw`]. Any value is accepted; a value that was never a
    /// handle of the allocator it is used with is rejected there with a typed error.
    pub fn from_raw(raw: u64) -> Handle {
        Handle(raw)
    }

    pub(crate) fn tag(self) -> u16 {
        (self.0 >> 52) as u16
    }
    pub(crate) fn generation(self) -> u32 {
        ((self.0 >> 28) as u32) & GEN_MASK
    }
    pub(crate) fn slab(self) -> u32 {
        ((self.0 >> SLOT_BITS) as u32) & ((1 << SLAB_BITS) - 1)
    }
    pub(crate) fn slot(self) -> u32 {
        (self.0 as u32) & ((1 << SLOT_BITS) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_at_their_extremes() {
        for (tag, slab, slot, generation) in [
            (1, 0, 0, 0),
            (4095, (MAX_SLABS - 1) as u32, 63, GEN_MASK),
            (7, 12345, 17, 999),
        ] {
            let h = Handle::pack(tag, slab, slot, generation);
            assert_eq!(
                (h.tag(), h.slab(), h.slot(), h.generation()),
                (tag, slab, slot, generation)
            );
            assert_eq!(Handle::from_raw(h.to_raw()), h);
        }
    }

    #[test]
    fn generation_is_truncated_to_24_bits() {
        let h = Handle::pack(3, 1, 1, GEN_MASK + 5);
        assert_eq!(h.generation(), 4);
        assert_eq!(h.tag(), 3);
    }
}
