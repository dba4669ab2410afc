//! Size classes: the object sizes a slab can hold, and the O(1) size -> class lookup.

use crate::SLAB_SIZE;

/// Object sizes of the eight size classes, in bytes. Every size is a multiple of 16, and objects
/// start at 16-byte aligned offsets, so every object is at least 16-byte aligned.
pub const CLASS_SIZES: [usize; 8] = [64, 96, 128, 192, 256, 384, 512, 768];

/// Number of size classes.
pub const CLASS_COUNT: usize = CLASS_SIZES.len();

/// Largest request the slab APIs serve, in bytes; larger ones are [`crate::Error::TooLarge`].
pub const MAX_OBJECT_SIZE: usize = CLASS_SIZES[CLASS_COUNT - 1];

/// Alignment every slab object has, in bytes.
pub const OBJECT_ALIGN: usize = 16;

/// `LOOKUP[(size + 15) / 16]` is the class of `size`: one table read, no search.
const LOOKUP: [u8; MAX_OBJECT_SIZE / 16 + 1] = {
    let mut table = [0u8; MAX_OBJECT_SIZE / 16 + 1];
    let mut granule = 0;
    let mut class = 0;
    while granule < table.len() {
        while CLASS_SIZES[class] < granule * 16 {
            class += 1;
        }
        table[granule] = class as u8;
        granule += 1;
    }
    table
};

/// The class serving `size` bytes, or `None` when `size > MAX_OBJECT_SIZE`. A size of 0 is
/// served by the smallest class.
#[inline]
pub fn class_for_size(size: usize) -> Option<usize> {
    LOOKUP.get(size.div_ceil(16)).map(|&c| c as usize)
}

/// Shape of a slab of one class: `slots` objects of `size` bytes from the start of the 4 KiB
/// page. The slots' generation words live out of line (in the allocator's slot-word table), so
/// the page holds nothing but objects and allocating never touches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabShape {
    /// Object size in bytes.
    pub size: usize,
    /// Objects per slab (at most 64: one bitmap word).
    pub slots: usize,
    /// Byte offset of the first object in the page (0: the page holds only objects).
    pub header: usize,
}

const fn shape_of(size: usize) -> SlabShape {
    let mut slots = SLAB_SIZE / size;
    if slots > 64 {
        slots = 64;
    }
    SlabShape {
        size,
        slots,
        header: 0,
    }
}

/// The slab shape of every class, computed at compile time.
pub const SHAPES: [SlabShape; CLASS_COUNT] = {
    let mut shapes = [SlabShape {
        size: 0,
        slots: 0,
        header: 0,
    }; CLASS_COUNT];
    let mut i = 0;
    while i < CLASS_COUNT {
        shapes[i] = shape_of(CLASS_SIZES[i]);
        i += 1;
    }
    shapes
};

/// `floor(2^32 / size) + 1` per class: `x / size == (x * RECIP) >> 32` for every `x` below
/// 4096 (the error of the multiplier is below `1 / size` for such `x`), so finding an object's
/// slot from its offset in the page costs a multiply, not a division.
const RECIP: [u64; CLASS_COUNT] = {
    let mut r = [0u64; CLASS_COUNT];
    let mut i = 0;
    while i < CLASS_COUNT {
        r[i] = (1u64 << 32) / CLASS_SIZES[i] as u64 + 1;
        i += 1;
    }
    r
};

/// `(offset / size, offset % size)` for the object size of `class`, for `offset < 4096`.
#[inline]
pub(crate) fn div_by_size(class: usize, offset: usize) -> (usize, usize) {
    debug_assert!(offset < SLAB_SIZE);
    let q = ((offset as u64 * RECIP[class]) >> 32) as usize;
    (q, offset - q * CLASS_SIZES[class])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_maps_to_the_smallest_class_that_fits() {
        for size in 0..=MAX_OBJECT_SIZE {
            let class = class_for_size(size).expect("in range");
            assert!(CLASS_SIZES[class] >= size, "size {size} class {class}");
            if class > 0 {
                assert!(
                    CLASS_SIZES[class - 1] < size.max(1),
                    "size {size} not tightest"
                );
            }
        }
        assert_eq!(class_for_size(MAX_OBJECT_SIZE + 1), None);
        assert_eq!(class_for_size(usize::MAX / 2), None);
    }

    #[test]
    fn division_by_multiplication_is_exact_for_every_offset_in_a_slab() {
        for (class, &size) in CLASS_SIZES.iter().enumerate() {
            for x in 0..SLAB_SIZE {
                assert_eq!(
                    div_by_size(class, x),
                    (x / size, x % size),
                    "class {class}, {x}"
                );
            }
        }
    }

    #[test]
    fn shapes_fit_a_slab_and_keep_16_byte_alignment() {
        for s in SHAPES {
            assert!(s.slots >= 5 && s.slots <= 64, "{s:?}");
            assert_eq!(s.header % 16, 0, "{s:?}");
            assert!(s.header + s.slots * s.size <= SLAB_SIZE, "{s:?}");
            assert_eq!(s.size % 16, 0);
        }
        assert_eq!(SHAPES[2].slots, 32, "128-byte class");
        assert_eq!(SHAPES[0].slots, 64, "64-byte class");
    }
}
