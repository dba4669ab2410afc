//! Pages: fixed-size byte arrays with an epoch, metadata and a location.

use std::collections::BTreeMap;
use std::fmt;

/// Identifies a page. Ids are assigned by [`crate::Mmsb::create_page`] in increasing order,
/// starting at 1, and are never reused.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PageId(pub u64);

impl fmt::Display for PageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "page {}", self.0)
    }
}

/// Log sequence number: the global, strictly increasing position of a frame in the write-ahead
/// log. The first frame of a new log has LSN 1; [`Lsn::ZERO`] means "before everything".
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Lsn(pub u64);

impl Lsn {
    /// Before the first frame.
    pub const ZERO: Lsn = Lsn(0);

    /// The next LSN.
    #[must_use]
    pub fn next(self) -> Lsn {
        Lsn(self.0 + 1)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LSN {}", self.0)
    }
}

/// Where a page's bytes live.
///
/// Only [`Location::Cpu`] exists on the machines this crate targets. A device backend (CUDA
/// unified memory, say) would add a variant here and implement the two operations the bus needs
/// from a page's storage, `bytes()`/`bytes_mut()` after a synchronisation point, in
/// [`Page`]; the log, checkpoints and propagation only ever see host bytes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Location {
    /// Host memory.
    #[default]
    Cpu,
}

impl Location {
    /// The on-disk code of this location (log frames, checkpoints).
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            Location::Cpu => 0,
        }
    }

    /// The location with on-disk code `code`, if this build knows it.
    #[must_use]
    pub fn from_code(code: u8) -> Option<Location> {
        match code {
            0 => Some(Location::Cpu),
            _ => None,
        }
    }
}

/// The largest page this crate creates: 1 GiB. Sizes travel as `u32` on disk.
pub const MAX_PAGE_SIZE: usize = 1 << 30;

/// A page: `size` bytes fixed at creation, an epoch that counts the deltas applied to it, string
/// keyed metadata and a location.
#[derive(Clone, PartialEq, Eq)]
pub struct Page {
    pub(crate) id: PageId,
    pub(crate) epoch: u64,
    pub(crate) bytes: Box<[u8]>,
    pub(crate) metadata: BTreeMap<String, Vec<u8>>,
    pub(crate) location: Location,
    pub(crate) stale: bool,
}

impl fmt::Debug for Page {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Page")
            .field("id", &self.id)
            .field("epoch", &self.epoch)
            .field("size", &self.bytes.len())
            .field("metadata_keys", &self.metadata.keys().collect::<Vec<_>>())
            .field("location", &self.location)
            .field("stale", &self.stale)
            .finish()
    }
}

impl Page {
    pub(crate) fn new(id: PageId, size: usize, location: Location) -> Page {
        Page {
            id,
            epoch: 0,
            bytes: vec![0u8; size].into_boxed_slice(),
            metadata: BTreeMap::new(),
            location,
            stale: false,
        }
    }

    /// The page's id.
    #[must_use]
    pub fn id(&self) -> PageId {
        self.id
    }

    /// Number of deltas applied to this page since it was created (a new page has epoch 0).
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The page's bytes; the length is the size fixed at creation.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Size in bytes.
    #[must_use]
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// Metadata, ordered by key.
    #[must_use]
    pub fn metadata(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.metadata
    }

    /// Where the bytes live.
    #[must_use]
    pub fn location(&self) -> Location {
        self.location
    }

    /// True when a `Control` parent changed since this page was last written (see
    /// [`crate::EdgeKind::Control`]). Not persisted: a restored page is never stale.
    #[must_use]
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// XXH3-64 of the bytes (the hash checkpoints record and `verify_consistency` compares).
    #[must_use]
    pub fn hash(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&self.bytes)
    }
}
