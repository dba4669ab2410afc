//! The `allocator_api2::alloc::Allocator` impl: collections that allocate in an epoch.

use std::alloc::Layout;
use std::ptr::NonNull;

use allocator_api2::alloc::{AllocError, Allocator, Global};

use crate::class::{CLASS_SIZES, OBJECT_ALIGN, class_for_size};
use crate::{EpochId, MAX_OBJECT_SIZE, SlabAllocator};

/// An epoch of an allocator, usable as an `allocator_api2` allocator:
/// `allocator_api2::vec::Vec::new_in(&epoch)` or `hashbrown::HashMap::new_in(&epoch)`.
///
/// Requests of at most 768 bytes and at most 16-byte alignment go to the slabs of the epoch;
/// larger ones go to the system allocator and are counted in
/// [`crate::StatsSnapshot::system_fallback_allocs`]. Allocation in a CLOSING or stale epoch
/// fails with `AllocError` (collections then call `handle_alloc_error`, which aborts: close an
/// epoch after the collections that use it are done growing).
#[derive(Clone, Copy, Debug)]
pub struct Epoch<'a> {
    alloc: &'a SlabAllocator,
    id: EpochId,
}

impl SlabAllocator {
    /// `epoch` as an [`Epoch`], for the `Allocator` trait.
    pub fn epoch(&self, id: EpochId) -> Epoch<'_> {
        Epoch { alloc: self, id }
    }
}

impl<'a> Epoch<'a> {
    /// The epoch's id.
    pub fn id(&self) -> EpochId {
        self.id
    }
    /// The allocator the epoch belongs to.
    pub fn allocator(&self) -> &'a SlabAllocator {
        self.alloc
    }
}

#[inline]
fn in_slab(layout: Layout) -> bool {
    layout.size() <= MAX_OBJECT_SIZE && layout.align() <= OBJECT_ALIGN
}

// SAFETY: blocks handed out stay valid until deallocated (slab objects are never moved or
// reused while live; closing an epoch never frees live objects) or until the SlabAllocator is
// dropped, which the `'a` borrow prevents while any `Epoch` exists. Copies of an `Epoch` share the
// allocator, so a block may be freed through any copy. Slab blocks are 16-byte aligned and as
// large as the size class, which is at least the requested size; routing by (size <= 768 and
// align <= 16) is a function of the layout, and any layout that "fits" a block (same align, size
// between the requested and the returned size) routes the same way.
unsafe impl Allocator for Epoch<'_> {
    #[inline]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if in_slab(layout) {
            let ptr = self
                .alloc
                .alloc_ptr(layout.size(), self.id)
                .map_err(|_| AllocError)?;
            let class = class_for_size(layout.size()).ok_or(AllocError)?;
            Ok(NonNull::slice_from_raw_parts(ptr, CLASS_SIZES[class]))
        } else {
            self.alloc.count_fallback(layout.size());
            Global.allocate(layout)
        }
    }

    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if in_slab(layout) {
            let freed = self.alloc.free_ptr(ptr);
            debug_assert!(
                freed.is_ok(),
                "deallocate of a block this epoch never handed out"
            );
        } else {
            // SAFETY: the caller guarantees `ptr` came from `allocate` with a layout that fits;
            // such layouts route here only if `allocate` sent them to `Global`.
            unsafe { Global.deallocate(ptr, layout) }
        }
    }
}
