//! The crate's one error type.

/// Everything that can go wrong in `temporal_slab`. Messages are lowercase and name what was
/// expected and what was found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request is larger than the largest size class.
    #[error("object of {size} bytes is larger than the largest size class ({max} bytes)")]
    TooLarge {
        /// Requested size in bytes.
        size: usize,
        /// Largest size the slab APIs serve.
        max: usize,
    },
    /// The epoch is CLOSING: no new objects may be allocated in it.
    #[error("epoch {epoch} (era {era}) is closing: no new allocations")]
    EpochClosed {
        /// Ring index of the epoch.
        epoch: u8,
        /// Era of the epoch.
        era: u64,
    },
    /// The ring slot was re-opened under a newer era since this [`crate::EpochId`] was taken.
    #[error("epoch {epoch} era {era} is gone: the ring slot now holds era {current_era}")]
    StaleEpoch {
        /// Ring index of the epoch.
        epoch: u8,
        /// Era the caller named.
        era: u64,
        /// Era the slot holds now.
        current_era: u64,
    },
    /// Every other ring slot still holds an epoch that has not drained (it is ACTIVE or CLOSING
    /// with a domain inside it, or its slabs still hold live objects), so
    /// [`crate::SlabAllocator::epoch_advance`] could only open a new epoch by erasing what is known
    /// about one of them. Nothing changed; the current epoch stays current. Counted in
    /// [`crate::StatsSnapshot::epoch_advance_refused`]; [`crate::diag::leak_report`] names the
    /// epochs that hold the ring.
    #[error(
        "cannot advance the epoch: all {held} other ring slots hold epochs that have not drained \
         (a domain is still inside, or objects are still live)"
    )]
    EpochRingFull {
        /// Ring slots that are held (the ring size minus the current one).
        held: u32,
    },
    /// The epoch's domain refcount is at its limit (2^24 - 1).
    #[error("epoch {epoch} (era {era}) refcount is at its limit of {max}")]
    RefcountOverflow {
        /// Ring index of the epoch.
        epoch: u8,
        /// Era of the epoch.
        era: u64,
        /// The limit.
        max: u64,
    },
    /// The address-space reservation is used up.
    #[error("address-space reservation of {reserved_bytes} bytes is exhausted")]
    OutOfMemory {
        /// Size of the reservation in bytes (see [`crate::Config::max_bytes`]).
        reserved_bytes: usize,
    },
    /// mmap, mprotect or munmap failed.
    #[error("{op} failed: {source}")]
    Map {
        /// The system call that failed.
        op: &'static str,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// The handle was made by another allocator (its allocator tag differs).
    #[error(
        "handle {handle:#018x} belongs to allocator tag {found}, not this allocator's tag {expected}"
    )]
    WrongAllocator {
        /// The handle.
        handle: u64,
        /// This allocator's tag.
        expected: u16,
        /// The tag in the handle.
        found: u16,
    },
    /// The handle names a slab or slot that never existed.
    #[error("handle {handle:#018x} names no slot of this allocator")]
    InvalidHandle {
        /// The handle.
        handle: u64,
    },
    /// The handle's slot was freed and has not been reused: a double free.
    #[error("double free of handle {handle:#018x}")]
    DoubleFree {
        /// The handle.
        handle: u64,
    },
    /// The handle's slot was freed and reused since (its generation moved on): a use after free.
    #[error("stale handle {handle:#018x}: slot generation is {current}, handle carries {found}")]
    StaleHandle {
        /// The handle.
        handle: u64,
        /// Generation the slot holds now.
        current: u32,
        /// Generation the handle carries.
        found: u32,
    },
    /// The pointer is not the start of a live object of this allocator.
    #[error("pointer {addr:#x} is not a live object of this allocator ({reason})")]
    InvalidPointer {
        /// The address.
        addr: usize,
        /// Why it was rejected.
        reason: &'static str,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
