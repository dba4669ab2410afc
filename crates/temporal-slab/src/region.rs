//! The address-space reservation that slabs and their metadata are carved from.
//!
//! A [`Region`] reserves `len` bytes with `mmap(PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS |
//! MAP_NORESERVE)`: address space only, no memory, no commit charge. [`Region::commit`] makes a
//! prefix readable and writable with `mprotect`; pages still cost nothing until first touched.
//! The mapping never moves, so an address finds its slab by subtraction and a shift.

use std::ptr::NonNull;

use crate::{Error, Result};

/// A reserved, never-moving range of address space, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Region {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: a Region is a range of addresses owned by this value; the pointer is never
// dereferenced by Region itself, and the memory behind it is plain bytes with no thread affinity.
unsafe impl Send for Region {}
// SAFETY: as above; &Region only exposes the base address and system calls on the range.
unsafe impl Sync for Region {}

fn map_error(op: &'static str, e: rustix::io::Errno) -> Error {
    Error::Map {
        op,
        source: std::io::Error::from_raw_os_error(e.raw_os_error()),
    }
}

impl Region {
    /// Reserves `len` bytes (a multiple of the page size) of inaccessible address space.
    pub(crate) fn reserve(len: usize) -> Result<Region> {
        use rustix::mm::{MapFlags, ProtFlags};
        // SAFETY: a fresh anonymous mapping at an address the kernel chooses aliases nothing.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }
        .map_err(|e| map_error("mmap", e))?;
        let base = NonNull::new(ptr.cast::<u8>()).ok_or(Error::Map {
            op: "mmap",
            source: std::io::Error::other("kernel returned a null mapping"),
        })?;
        Ok(Region { base, len })
    }

    pub(crate) fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Makes `[offset, offset + len)` readable and writable. The range must lie inside the
    /// reservation and be page aligned.
    pub(crate) fn commit(&self, offset: usize, len: usize) -> Result<()> {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "commit out of range"
        );
        use rustix::mm::MprotectFlags;
        // SAFETY: the range is inside our own mapping (asserted above); nothing else maps it.
        unsafe {
            rustix::mm::mprotect(
                self.base().add(offset).cast(),
                len,
                MprotectFlags::READ | MprotectFlags::WRITE,
            )
        }
        .map_err(|e| map_error("mprotect", e))
    }

    /// Returns the pages of `[offset, offset + len)` to the kernel with `madvise(MADV_DONTNEED)`.
    /// The range stays mapped; the next touch reads zeros.
    ///
    /// # Safety
    /// No live reference may point into the range: its contents become zero.
    pub(crate) unsafe fn discard(&self, offset: usize, len: usize) -> Result<()> {
        debug_assert!(offset + len <= self.len);
        // SAFETY: the range is inside our committed mapping; the caller guarantees nobody holds
        // references into it, so zeroing it behind their back is not observable as UB.
        unsafe {
            rustix::mm::madvise(
                self.base().add(offset).cast(),
                len,
                rustix::mm::Advice::LinuxDontNeed,
            )
        }
        .map_err(|e| map_error("madvise", e))
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: we own the mapping; after drop no pointer derived from it may be used (the
        // allocator's lifetime rules guarantee this for every pointer it handed out).
        let _ = unsafe { rustix::mm::munmap(self.base().cast(), self.len) };
    }
}
