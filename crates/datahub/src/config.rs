//! Producer configuration, consumer expectations and schemas.

use std::time::Duration;

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};

use crate::huge::HugePages;
use crate::layout::{ChecksumPolicy, FLAG_KEYED, FLAG_RECENT_SLOTS, MAX_CONSUMERS, Params, Policy};
use crate::schema::{Described, Fingerprint, LayoutError, SchemaLayout};
use crate::{Error, checksum};

/// A payload schema: a 32-byte hash and a version, stored in the header and checked at attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Schema {
    /// BLAKE2b-256 of the schema's description: for [`Schema::of`] and [`Schema::from_layout`],
    /// the layout fingerprint ([`crate::schema`]).
    pub hash: [u8; 32],
    /// The schema's version.
    pub version: u32,
}

impl Schema {
    /// A schema named by free text (for example a message type's name and field list).
    pub fn named(description: &str, version: u32) -> Schema {
        Schema {
            hash: Blake2b::<U32>::digest(description.as_bytes()).into(),
            version,
        }
    }

    /// The schema of a described `Pod` type ([`crate::describe!`]): its layout's fingerprint
    /// ([`crate::schema`]), so two programs agree when their types have the same fields at the
    /// same offsets, whatever the types are called or which compiler or language built them.
    ///
    /// # Errors
    /// A description that does not match the type ([`LayoutError`]).
    pub fn of<T: Described>(version: u32) -> Result<Schema, LayoutError> {
        Schema::from_layout(&SchemaLayout::slots(T::zone_layout()?), version)
    }

    /// The schema of a layout (slots and, optionally, the flexible zone): its fingerprint.
    ///
    /// # Errors
    /// A zone that fails [`crate::schema::ZoneLayout::check`].
    pub fn from_layout(layout: &SchemaLayout, version: u32) -> Result<Schema, LayoutError> {
        Ok(Schema {
            hash: layout.fingerprint()?.0,
            version,
        })
    }

    /// The hash as a [`Fingerprint`] (`DHS01_...` when it is a layout's).
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint(self.hash)
    }

    /// No schema: all-zero hash, version 0.
    pub const NONE: Schema = Schema {
        hash: [0; 32],
        version: 0,
    };

    /// The hash in hex.
    pub fn hex(&self) -> String {
        checksum::hex(&self.hash)
    }
}

/// Ready-made shapes from the design review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// One slot, [`Policy::Latest`]: a shared "current value".
    Single,
    /// Two slots, [`Policy::Latest`]: the producer writes one while readers read the other.
    DoubleBuffer,
    /// `n` slots, [`Policy::Sequential`]: a lossless FIFO.
    RingBuffer(u32),
}

/// Which slot a lossless producer writes next ([`Config::slot_order`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SlotOrder {
    /// [`SlotOrder::Recent`] for a lossless policy whose ring (`slot_count × slot_size`) is at
    /// least [`SlotOrder::AUTO_RECENT_RING_BYTES`], else [`SlotOrder::Ring`].
    #[default]
    Auto,
    /// Message `seq` goes to slot `seq % slot_count`: every slot is written in turn, so a deep
    /// ring of large slots streams `slot_count × slot_size` bytes through the cache.
    Ring,
    /// Lossless policies only: the producer writes the slot its consumers released most
    /// recently (a last-in-first-out free list), so while the queue is shallow it keeps reusing
    /// the same few cache-hot slots, as iceoryx2's sample pool does. Readers find a message's
    /// slot through a per-position index word in the block (format 1.2, flag
    /// [`crate::layout::FLAG_RECENT_SLOTS`]; `docs/datahub-format.md`). Costs each message one
    /// more shared cache line on each side, which only pays off when the ring does not fit in
    /// cache: `docs/results/datahub-large-messages.md` has the measurements.
    Recent,
}

impl SlotOrder {
    /// The ring size from which [`SlotOrder::Auto`] picks [`SlotOrder::Recent`]: 512 KiB.
    pub const AUTO_RECENT_RING_BYTES: u64 = 512 << 10;

    fn recent(self, policy: Policy, slot_size: u32, slot_count: u32) -> bool {
        match self {
            SlotOrder::Ring => false,
            SlotOrder::Recent => true,
            SlotOrder::Auto => {
                policy.is_lossless()
                    && u64::from(slot_size) * u64::from(slot_count)
                        >= SlotOrder::AUTO_RECENT_RING_BYTES
            }
        }
    }
}

/// How a producer creates a block. Built with [`Config::new`] or [`Config::preset`] and the
/// setters; checked by [`crate::Producer::create`].
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) policy: Policy,
    pub(crate) slot_size: u32,
    pub(crate) slot_count: u32,
    pub(crate) flex_zone_size: u64,
    pub(crate) max_consumers: Option<u32>,
    pub(crate) checksum: ChecksumPolicy,
    pub(crate) key: Option<[u8; 32]>,
    pub(crate) schema: Schema,
    pub(crate) heartbeat_timeout: Duration,
    pub(crate) spin: Duration,
    pub(crate) unlink_on_drop: bool,
    pub(crate) huge_pages: HugePages,
    pub(crate) slot_order: SlotOrder,
    pub(crate) handover_grace: Duration,
}

impl Config {
    /// Defaults: 4096-byte slots, 8 of them, no flexible zone, no checksums, no schema,
    /// heartbeat timeout 1 s, 20 µs of spinning before a futex sleep, block removed when the
    /// producer is dropped, 4 KiB pages ([`HugePages::Off`]), [`SlotOrder::Auto`], handover
    /// grace 5 s.
    pub fn new(policy: Policy) -> Config {
        Config {
            policy,
            slot_size: 4096,
            slot_count: 8,
            flex_zone_size: 0,
            max_consumers: None,
            checksum: ChecksumPolicy::None,
            key: None,
            schema: Schema::NONE,
            heartbeat_timeout: Duration::from_secs(1),
            spin: Duration::from_micros(20),
            unlink_on_drop: true,
            huge_pages: HugePages::Off,
            slot_order: SlotOrder::Auto,
            handover_grace: Duration::from_secs(5),
        }
    }

    /// A [`Preset`]'s policy and slot count.
    pub fn preset(p: Preset) -> Config {
        match p {
            Preset::Single => Config::new(Policy::Latest).slot_count(1),
            Preset::DoubleBuffer => Config::new(Policy::Latest).slot_count(2),
            Preset::RingBuffer(n) => Config::new(Policy::Sequential).slot_count(n),
        }
    }

    /// The policy.
    pub fn policy(mut self, p: Policy) -> Config {
        self.policy = p;
        self
    }
    /// Payload capacity of a slot in bytes (rounded up to a multiple of 64; at most 1 GiB).
    pub fn slot_size(mut self, bytes: u32) -> Config {
        self.slot_size = bytes;
        self
    }
    /// Slots in the ring (1..=2^24).
    pub fn slot_count(mut self, n: u32) -> Config {
        self.slot_count = n;
        self
    }
    /// Bytes of the flexible zone (shared, spinlock-guarded metadata; 0 for none).
    pub fn flex_zone_size(mut self, bytes: u64) -> Config {
        self.flex_zone_size = bytes;
        self
    }
    /// Most consumers at once: 1 for `Sequential` (the default there), up to 64 otherwise
    /// (default 64 for `Latest`, 8 for `SequentialSync`).
    pub fn max_consumers(mut self, n: u32) -> Config {
        self.max_consumers = Some(n);
        self
    }
    /// The checksum policy.
    pub fn checksum(mut self, c: ChecksumPolicy) -> Config {
        self.checksum = c;
        self
    }
    /// Keyed checksums (BLAKE2b MAC): consumers must present the same key. Needs a checksum
    /// policy other than `None`.
    pub fn checksum_key(mut self, key: [u8; 32]) -> Config {
        self.key = Some(key);
        self
    }
    /// The payload schema.
    pub fn schema(mut self, s: Schema) -> Config {
        self.schema = s;
        self
    }
    /// A peer whose heartbeat is older than this is reported as stalled; waits look after dead
    /// peers at least 4 times per timeout.
    pub fn heartbeat_timeout(mut self, t: Duration) -> Config {
        self.heartbeat_timeout = t;
        self
    }
    /// How long a producer wait spins before it sleeps on a futex.
    pub fn spin(mut self, t: Duration) -> Config {
        self.spin = t;
        self
    }
    /// Whether dropping the producer removes the block's name from `/dev/shm` (default true).
    pub fn unlink_on_drop(mut self, yes: bool) -> Config {
        self.unlink_on_drop = yes;
        self
    }

    /// Whether to back the block with huge pages (default [`HugePages::Off`]).
    ///
    /// For a named `/dev/shm` block, [`HugePages::Try`] advises transparent huge pages
    /// (`madvise(MADV_HUGEPAGE)`) when the kernel allows them for the segment's tmpfs mount
    /// (its `huge=` option, or `shmem_enabled` set to `force`), sizes the segment file up to a
    /// multiple of the huge page size, and otherwise uses 4 KiB pages;
    /// [`HugePages::Require`] makes [`crate::Producer::create`] fail with
    /// [`Error::HugePagesUnavailable`] unless huge pages are seen mapped. `MAP_HUGETLB` is never
    /// tried (it fails on a `/dev/shm` descriptor); `memfd_create(MFD_HUGETLB)` belongs to the
    /// unnamed memfd mode, which records [`crate::Backing::Hugetlb`] and is not built yet.
    /// What was obtained is in [`crate::Producer::huge_pages`], the header
    /// ([`crate::BlockInfo::backing`]) and the metrics.
    pub fn huge_pages(mut self, mode: HugePages) -> Config {
        self.huge_pages = mode;
        self
    }

    /// Which slot the producer writes next (default [`SlotOrder::Auto`]).
    /// [`SlotOrder::Recent`] with [`Policy::Latest`] is an [`Error::InvalidConfig`]: a latest
    /// reader must find the newest message without asking which slot it went to.
    pub fn slot_order(mut self, order: SlotOrder) -> Config {
        self.slot_order = order;
        self
    }

    /// After [`crate::Producer::handover`] away from this block, how long the old block's name
    /// is kept in `/dev/shm` at most while consumers are still attached to it (default 5 s; a
    /// plain [`Duration`], so `humantime::parse_duration("5s")` gives one). It is removed
    /// earlier once no consumer remains attached. Consumers already attached keep their mapping
    /// and still follow after the name is gone; a consumer attaching the old name after that
    /// gets [`Error::NotFound`].
    pub fn handover_grace(mut self, grace: Duration) -> Config {
        self.handover_grace = grace;
        self
    }

    pub(crate) fn params(&self) -> Result<Params, Error> {
        let slot_size = self
            .slot_size
            .checked_add(63)
            .map(|s| s / 64 * 64)
            .filter(|&s| s > 0)
            .ok_or_else(|| Error::InvalidConfig {
                what: format!("slot_size {}", self.slot_size),
            })?;
        let max_consumers = self.max_consumers.unwrap_or(match self.policy {
            Policy::Sequential => 1,
            Policy::SequentialSync => 8,
            Policy::Latest => MAX_CONSUMERS as u32,
        });
        if self.key.is_some() && self.checksum == ChecksumPolicy::None {
            return Err(Error::InvalidConfig {
                what: "a checksum key needs a checksum policy (Manual or Enforced)".into(),
            });
        }
        if self.heartbeat_timeout.is_zero() {
            return Err(Error::InvalidConfig {
                what: "heartbeat_timeout must be > 0".into(),
            });
        }
        if self.slot_order == SlotOrder::Recent && !self.policy.is_lossless() {
            return Err(Error::InvalidConfig {
                what: format!(
                    "slot order Recent needs a lossless policy, not {}",
                    self.policy
                ),
            });
        }
        let mut flags = if self.key.is_some() { FLAG_KEYED } else { 0 };
        if self
            .slot_order
            .recent(self.policy, slot_size, self.slot_count)
        {
            flags |= FLAG_RECENT_SLOTS;
        }
        let p = Params {
            policy: self.policy,
            checksum: self.checksum,
            flags,
            slot_size,
            slot_count: self.slot_count,
            flex_zone_size: self.flex_zone_size,
            max_consumers,
        };
        p.check().map_err(|e| match e {
            Error::InvalidHeader { field, value } => Error::InvalidConfig {
                what: format!("{field} = {value} for policy {}", self.policy),
            },
            other => other,
        })?;
        p.regions().ok_or_else(|| Error::InvalidConfig {
            what: "slot_size × slot_count overflows".into(),
        })?;
        Ok(p)
    }
}

/// What a consumer requires of the block it attaches to. Everything is optional.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    pub(crate) policy: Option<Policy>,
    pub(crate) schema: Option<Schema>,
    pub(crate) min_slot_size: Option<u32>,
    pub(crate) key: Option<[u8; 32]>,
    pub(crate) spin: Option<Duration>,
    pub(crate) no_follow: bool,
}

impl Expectations {
    /// No requirements.
    pub fn new() -> Expectations {
        Expectations::default()
    }
    /// Require this policy.
    pub fn policy(mut self, p: Policy) -> Expectations {
        self.policy = Some(p);
        self
    }
    /// Require this schema (hash and version).
    pub fn schema(mut self, s: Schema) -> Expectations {
        self.schema = Some(s);
        self
    }
    /// Require slots of at least this many bytes.
    pub fn min_slot_size(mut self, bytes: u32) -> Expectations {
        self.min_slot_size = Some(bytes);
        self
    }
    /// The checksum key (keyed blocks).
    pub fn checksum_key(mut self, key: [u8; 32]) -> Expectations {
        self.key = Some(key);
        self
    }
    /// Whether the consumer follows a handover ([`crate::Producer::handover`]) to the
    /// successor block (default true). With `false`, attaching a handed-over block and
    /// reading at its cutover give [`Error::HandedOver`] naming the successor.
    pub fn follow_handover(mut self, yes: bool) -> Expectations {
        self.no_follow = !yes;
        self
    }
    /// How long reads spin before sleeping on a futex (default 20 µs).
    pub fn spin(mut self, t: Duration) -> Expectations {
        self.spin = Some(t);
        self
    }
}
