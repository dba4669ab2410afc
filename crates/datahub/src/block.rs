//! A mapped DataBlock: the POSIX shared-memory segment, typed views of its regions, and the
//! bookkeeping every role shares (consumer liveness, reclaiming dead consumers, the read floor).

use std::time::{Duration, Instant};

use memmap2::{MmapOptions, MmapRaw};

use crate::Error;
use crate::huge::{Backing, HugePages};
use crate::layout::{
    self, ChecksumEntry, ConsumerEntry, Decoded, FLAG_RECENT_SLOTS, HEADER_SIZE, Header,
    IDENTITY_SIZE, MAGIC, MAX_CONSUMERS, NO_SEQ, Params, SlotCtl, reg,
};
use crate::proc::{self, Liveness};
use crate::segment::{self, Access, Segment, io_err};
use crate::sync::Ordering::{Acquire, Relaxed, Release, SeqCst};

/// Spinlock that serialises consumer registration changes and producer takeover.
pub(crate) const REGISTRATION_LOCK: usize = 1;

/// A mapped block.
#[derive(Debug)]
pub(crate) struct Block {
    /// Declared before `map`: unregisters the range from the SIGBUS table before the mapping
    /// goes away.
    sigbus: Option<crate::sigbus::Guard>,
    map: MmapRaw,
    /// The segment's file (producers hold the producer lock on it; see `segment`).
    seg: Segment,
    /// Mapped `PROT_READ | PROT_WRITE` (else `PROT_READ`: nothing may store through it).
    writable: bool,
    pub name: String,
    pub info: Decoded,
    /// A `/dev/shm` segment with a name (`false`: a memfd of secure attach, whose `name` is
    /// only a label; nothing to unlink).
    named: bool,
}

/// The pages a new block gets (see `crate::huge`).
pub(crate) enum Pages {
    /// Transparent huge pages of this PMD size, to advise and verify.
    Thp(u64),
    /// 4 KiB pages, and why.
    Small(String),
    /// A hugetlb memfd, and how it was obtained.
    Hugetlb(String),
}

/// What [`Block::create`] found.
pub(crate) enum Created {
    /// A new block, initialised and published, and the pages that back it.
    New(Box<Block>, crate::HugePageOutcome),
    /// A segment of that name already exists.
    Exists,
}

impl Block {
    /// Creates segment `/name` (mode 0600, `O_EXCL`), sizes it, initialises the header with
    /// `init` (which sees zeroed memory) and publishes the magic last (Release).
    ///
    /// `huge` decides the pages (`crate::huge`): when huge pages are attempted the segment file
    /// is sized up to a multiple of the huge page size (the header's `total_size` stays the
    /// layout's), the mapping is advised and checked, and the backing is recorded in the header
    /// before the magic is published.
    pub(crate) fn create(
        name: &str,
        params: Params,
        huge: HugePages,
        init: impl FnOnce(&Block),
        identity: impl FnOnce(&mut [u8]),
    ) -> Result<Created, Error> {
        params.check()?;
        let regions = params.regions().ok_or(Error::InvalidConfig {
            what: "slot_size × slot_count overflows".into(),
        })?;
        let (pmd, why_small) = crate::huge::plan(huge, segment::shm_dir())?;
        let file_len = match pmd {
            Some(p) => {
                regions
                    .total_size
                    .checked_next_multiple_of(p)
                    .ok_or(Error::InvalidConfig {
                        what: "block size rounded to the huge page size overflows".into(),
                    })?
            }
            None => regions.total_size,
        };
        let Some(seg) = segment::create(name, file_len)? else {
            return Ok(Created::Exists);
        };
        let (dev, ino) = (seg.dev, seg.ino);
        let undo = |e: Error| {
            segment::unlink_if_same(name, dev, ino);
            e
        };
        let pages = match pmd {
            Some(p) => Pages::Thp(p),
            None => Pages::Small(why_small),
        };
        let (block, outcome) = Self::init_new(
            name,
            seg,
            file_len,
            regions.total_size,
            huge,
            pages,
            true,
            init,
            identity,
        )
        .map_err(undo)?;
        Ok(Created::New(block, outcome))
    }

    /// Maps a new, private segment `seg` (`file_len` bytes, of which the layout uses
    /// `total_size`), records its backing (`pages`), writes the identity and `init`, and
    /// publishes the magic last (Release). Shared by named segments and memfds; the caller
    /// undoes the segment on error.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn init_new(
        name: &str,
        seg: Segment,
        file_len: u64,
        total_size: u64,
        huge: HugePages,
        pages: Pages,
        named: bool,
        init: impl FnOnce(&Block),
        identity: impl FnOnce(&mut [u8]),
    ) -> Result<(Box<Block>, crate::HugePageOutcome), Error> {
        let map = MmapOptions::new()
            .len(file_len as usize)
            .map_raw(&seg.file)
            .map_err(|e| io_err("mmap", name, e))?;
        let (backing, reason) = match pages {
            Pages::Thp(p) => crate::huge::advise_and_verify(map.as_mut_ptr(), map.len(), p),
            Pages::Small(why) => (Backing::Small, why),
            Pages::Hugetlb(why) => (Backing::Hugetlb, why),
        };
        if huge == HugePages::Require && !matches!(backing, Backing::Thp | Backing::Hugetlb) {
            return Err(Error::HugePagesUnavailable { why: reason });
        }
        let outcome = crate::HugePageOutcome {
            requested: huge,
            backing,
            reason,
        };
        // The identity bytes are written through a byte view before anyone can see the block
        // (the magic is still 0), then decoded back as an opener would.
        {
            // SAFETY: the mapping is `total_size` ≥ HEADER_SIZE bytes long, writable, and no
            // other process uses it yet (the magic is 0, so openers wait).
            let bytes = unsafe { std::slice::from_raw_parts_mut(map.as_mut_ptr(), IDENTITY_SIZE) };
            identity(bytes);
            bytes[..8].copy_from_slice(&0u64.to_le_bytes());
        }
        let mut copy = [0u8; IDENTITY_SIZE];
        // SAFETY: as above; reading our own private writes.
        unsafe { std::ptr::copy_nonoverlapping(map.as_ptr(), copy.as_mut_ptr(), IDENTITY_SIZE) };
        copy[..8].copy_from_slice(&MAGIC.to_le_bytes());
        let info = layout::decode(&copy, total_size)?;
        let block = Block {
            sigbus: crate::sigbus::register(map.as_ptr(), map.len()),
            map,
            seg,
            writable: true,
            name: name.to_owned(),
            info,
            named,
        };
        block.header().backing.store(backing.code(), Relaxed);
        init(&block);
        // SYNC POINT: the opener's Acquire load of the magic (Block::open); it publishes the
        // identity, the backing code and everything `init` wrote.
        block.header().id.magic.store(MAGIC, Release);
        Ok((Box::new(block), outcome))
    }

    /// Maps an open segment (a named one, or a memfd received over a socket) and decodes its
    /// header: `Ok(None)` while it is empty or its magic is still 0 (not published yet).
    pub(crate) fn from_segment(
        name: &str,
        seg: Segment,
        access: Access,
        named: bool,
    ) -> Result<Option<Block>, Error> {
        let len = seg.len;
        if len == 0 {
            return Ok(None);
        }
        if len < HEADER_SIZE as u64 {
            return Err(Error::Truncated {
                expected: HEADER_SIZE as u64,
                found: len,
            });
        }
        let mut opts = MmapOptions::new();
        opts.len(len as usize);
        let map = match access {
            Access::ReadOnly => opts.map_raw_read_only(&seg.file),
            Access::ReadWrite => opts.map_raw(&seg.file),
        }
        .map_err(|e| io_err("mmap", name, e))?;
        let sigbus = crate::sigbus::register(map.as_ptr(), map.len());
        // SAFETY: the mapping is at least HEADER_SIZE bytes and 8-aligned (page), so
        // the magic word is in bounds; it is only accessed atomically (a load, which
        // a read-only mapping allows).
        let magic = unsafe { &*(map.as_ptr() as *const crate::sync::AtomicU64) };
        if magic.load(Acquire) == 0 {
            return Ok(None);
        }
        let mut copy = [0u8; IDENTITY_SIZE];
        // SAFETY: IDENTITY_SIZE < HEADER_SIZE ≤ len; the identity bytes do not
        // change after the magic is published (Acquire above).
        unsafe { std::ptr::copy_nonoverlapping(map.as_ptr(), copy.as_mut_ptr(), IDENTITY_SIZE) };
        if sigbus.as_ref().is_some_and(|g| g.truncated()) {
            return Err(Error::BlockTruncated {
                name: name.to_owned(),
                expected: len,
                found: segment_len(&seg),
            });
        }
        let info = layout::decode(&copy, len)?;
        Ok(Some(Block {
            sigbus,
            map,
            seg,
            writable: access == Access::ReadWrite,
            name: name.to_owned(),
            info,
            named,
        }))
    }

    /// Opens an existing block (`access` decides the mapping's protection). A block whose
    /// magic is still 0 (being created) or whose size is still 0 is waited for until
    /// `ready_timeout`; then [`Error::NotReady`].
    pub(crate) fn open(
        name: &str,
        ready_timeout: Duration,
        access: Access,
    ) -> Result<Block, Error> {
        let deadline = Instant::now() + ready_timeout;
        loop {
            let seg = segment::open(name, access)?;
            let len = seg.len;
            if let Some(block) = Self::from_segment(name, seg, access, true)? {
                return Ok(block);
            }
            if Instant::now() >= deadline {
                return Err(Error::NotReady {
                    name: name.to_owned(),
                    len,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The segment's open file (a memfd for secure attach).
    pub(crate) fn file(&self) -> &std::fs::File {
        &self.seg.file
    }

    /// Whether the mapping is writable.
    pub(crate) fn writable(&self) -> bool {
        self.writable
    }

    /// Tries the producer lock on the segment (see `segment`): `false` if another process
    /// (a live producer, a creator or a remover) holds it.
    pub(crate) fn try_lock(&self) -> Result<bool, Error> {
        segment::try_lock(&self.name, &self.seg.file)
    }

    /// Fast check (one atomic load): whether the SIGBUS handler found this mapping truncated.
    #[inline]
    pub(crate) fn truncated(&self) -> bool {
        self.sigbus.as_ref().is_some_and(|g| g.truncated())
    }

    /// [`Error::BlockTruncated`] if the segment was truncated under this mapping: the SIGBUS
    /// handler saw it (fast), or, with `stat`, the file is now shorter than the block (one
    /// `fstat`; catches a truncation only the kernel has touched so far).
    pub(crate) fn check_intact(&self, stat: bool) -> Result<(), Error> {
        let expected = self.info.regions.total_size;
        if self.truncated() {
            return Err(Error::BlockTruncated {
                name: self.name.clone(),
                expected,
                found: segment_len(&self.seg),
            });
        }
        if stat {
            let found = segment_len(&self.seg);
            if found < expected {
                return Err(Error::BlockTruncated {
                    name: self.name.clone(),
                    expected,
                    found,
                });
            }
        }
        Ok(())
    }

    /// The header.
    #[inline]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: the mapping is at least HEADER_SIZE bytes, page-aligned, and `Header` is
        // repr(C) of atomics and plain integers (any bit pattern valid); the identity fields
        // are not written after the magic is published.
        unsafe { &*(self.map.as_ptr() as *const Header) }
    }

    /// The backing recorded by the block's creator ([`Backing::Unknown`] for a 1.0 block).
    pub(crate) fn backing(&self) -> Backing {
        Backing::from_code(self.header().backing.load(Relaxed))
    }

    pub(crate) fn params(&self) -> &Params {
        &self.info.params
    }

    pub(crate) fn slot_count(&self) -> u64 {
        u64::from(self.info.params.slot_count)
    }

    pub(crate) fn slot_size(&self) -> usize {
        self.info.params.slot_size as usize
    }

    /// Coordination line of slot `i` (< slot_count).
    #[inline]
    pub(crate) fn slot(&self, i: usize) -> &SlotCtl {
        debug_assert!(i < self.info.params.slot_count as usize);
        // SAFETY: decode() checked slot_state_offset + slot_count × 64 ≤ total_size ≤ the
        // mapping's length; the offset is 64-aligned and SlotCtl is repr(C) of atomics.
        unsafe {
            &*(self
                .map
                .as_ptr()
                .add(self.info.regions.slot_state_offset as usize) as *const SlotCtl)
                .add(i)
        }
    }

    /// Whether the block hands out recently released slots first ([`FLAG_RECENT_SLOTS`]):
    /// message `seq` is then in the slot named by position line `seq % slot_count`.
    #[inline]
    pub(crate) fn recent_slots(&self) -> bool {
        self.info.params.flags & FLAG_RECENT_SLOTS != 0
    }

    /// The slot that holds (or is to hold) message `seq`: `seq % slot_count`, or in a
    /// recent-slots block the index in position line `seq % slot_count` (Acquire: a reader that
    /// saw the commit index pass `seq` sees the producer's store for `seq` or a later one).
    ///
    /// # Errors
    /// [`Error::InvalidSlotIndex`] if the stored index is out of range (a damaged block).
    #[inline]
    pub(crate) fn slot_of(&self, seq: u64) -> Result<usize, Error> {
        let n = self.slot_count();
        let p = (seq % n) as usize;
        if !self.recent_slots() {
            return Ok(p);
        }
        let v = self.slot(p).position_slot.load(Acquire);
        if u64::from(v) < n {
            Ok(v as usize)
        } else {
            Err(Error::InvalidSlotIndex {
                position: p,
                value: v,
                slots: n,
            })
        }
    }

    /// With the producer dead: how many messages from the commit index on it published but did
    /// not announce. Its claimed run is `commit_index .. write_index` (one message, or a batch);
    /// the answer is the run's length if every message of it is `COMMITTED` in its slot, else 0.
    ///
    /// # Errors
    /// [`Error::InvalidSlotIndex`] (a damaged position line).
    pub(crate) fn unannounced_run(&self) -> Result<u64, Error> {
        let h = self.header();
        let commit = h.commit.commit_index.load(SeqCst);
        let run = h
            .producer
            .write_index
            .load(SeqCst)
            .saturating_sub(commit)
            .min(self.slot_count());
        for k in 0..run {
            let seq = commit.wrapping_add(k);
            let s = self.slot(self.slot_of(seq)?);
            if s.state.load(Acquire) != layout::state::COMMITTED || s.seq.load(Acquire) != seq {
                return Ok(0);
            }
        }
        Ok(run)
    }

    /// Checksum entry of slot `i` (raw: it is plain bytes, guarded by the slot protocol).
    #[inline]
    pub(crate) fn checksum_entry(&self, i: usize) -> *mut ChecksumEntry {
        debug_assert!(i < self.info.params.slot_count as usize);
        // SAFETY: in bounds as for `slot`.
        unsafe {
            (self
                .map
                .as_mut_ptr()
                .add(self.info.regions.checksum_offset as usize) as *mut ChecksumEntry)
                .add(i)
        }
    }

    /// First byte of slot `i`'s payload.
    #[inline]
    pub(crate) fn payload(&self, i: usize) -> *mut u8 {
        debug_assert!(i < self.info.params.slot_count as usize);
        // SAFETY: ring_offset + slot_count × slot_size ≤ total_size (decode()).
        unsafe {
            self.map
                .as_mut_ptr()
                .add(self.info.regions.ring_offset as usize + i * self.slot_size())
        }
    }

    /// The flexible zone's first byte and length.
    pub(crate) fn flex_zone(&self) -> (*mut u8, usize) {
        // SAFETY: flex_offset + flex_zone_size ≤ ring_offset ≤ total_size (decode()).
        let p = unsafe {
            self.map
                .as_mut_ptr()
                .add(self.info.regions.flex_offset as usize)
        };
        (p, self.info.params.flex_zone_size as usize)
    }

    /// Consumer entry `i` (< MAX_CONSUMERS).
    #[inline]
    pub(crate) fn consumer(&self, i: usize) -> &ConsumerEntry {
        &self.header().consumers[i]
    }

    /// Liveness of consumer entry `i` (an entry that is not ACTIVE counts as dead).
    pub(crate) fn consumer_liveness(&self, i: usize) -> Liveness {
        let e = self.consumer(i);
        if e.state.load(Acquire) != reg::ACTIVE {
            return Liveness::Dead;
        }
        proc::liveness(e.pid.load(Relaxed), e.start_time.load(Relaxed))
    }

    /// Liveness of the producer.
    pub(crate) fn producer_liveness(&self) -> Liveness {
        let p = &self.header().producer;
        proc::liveness(p.pid.load(Acquire), p.start_time.load(Relaxed))
    }

    /// Lossless modes: the lowest position among registered consumers, or the retained floor
    /// when none is registered. The producer may claim `seq` while `seq < floor + slot_count`.
    #[inline]
    pub(crate) fn read_floor(&self, except: Option<usize>) -> u64 {
        let h = self.header();
        let mut mask = h.release.active_mask.load(SeqCst);
        if let Some(i) = except {
            mask &= !(1u64 << i);
        }
        if mask == 0 {
            return h.release.retained_floor.load(SeqCst);
        }
        let mut floor = u64::MAX;
        while mask != 0 {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            floor = floor.min(h.consumers[i].position.load(SeqCst));
        }
        floor
    }

    /// Removes consumer entry `i`: evicts its reader bits from every slot, keeps its position as
    /// the retained floor if it was the last registered consumer (lossless), folds its counters
    /// into the block's, and frees the entry. Returns the slots it was evicted from.
    pub(crate) fn retire_consumer(&self, i: usize) -> Vec<usize> {
        let h = self.header();
        let e = &h.consumers[i];
        let bit = 1u64 << i;
        let mut evicted = Vec::new();
        for s in 0..self.slot_count() as usize {
            if self.slot(s).reader_mask() & bit != 0 && self.slot(s).evict(bit) != 0 {
                evicted.push(s);
            }
        }
        let remaining = h.release.active_mask.fetch_and(!bit, SeqCst) & !bit;
        if remaining == 0 && self.params().policy.is_lossless() {
            h.release
                .retained_floor
                .fetch_max(e.position.load(SeqCst), SeqCst);
        }
        h.metrics
            .reads_retired
            .fetch_add(e.reads.swap(0, Relaxed), Relaxed);
        h.metrics
            .bytes_read_retired
            .fetch_add(e.bytes_read.swap(0, Relaxed), Relaxed);
        e.held_seq.store(NO_SEQ, Relaxed);
        e.pid.store(0, Relaxed);
        e.state.store(reg::FREE, Release);
        // A producer waiting for this consumer's slots or position can go on.
        crate::wait::wake_all(&h.release.release_word, &h.release.release_waiters);
        evicted
    }

    /// Retires every registered consumer whose process is dead, and every entry left half
    /// claimed or half retired (`CLAIMING`) by a process that died inside the registration
    /// lock. Returns (entry, pid) pairs. Takes the registration lock (re-entrant; a lock held
    /// by a dead process is taken over); if a live process holds it for more than 50 ms this
    /// round does nothing.
    pub(crate) fn reclaim_dead_consumers(&self) -> Vec<(usize, u32)> {
        let mut out = Vec::new();
        let Ok(lock) = crate::flex::SharedSpinlock::new(self, REGISTRATION_LOCK) else {
            return out;
        };
        let Ok(_guard) = lock.lock(Duration::from_millis(50)) else {
            return out;
        };
        let h = self.header();
        for i in 0..MAX_CONSUMERS {
            let e = &h.consumers[i];
            let st = e.state.load(SeqCst);
            // Every ACTIVE→CLAIMING and FREE→CLAIMING transition happens under the lock we
            // hold, so a CLAIMING entry seen here belongs to a process that died holding it.
            let stale = st == reg::CLAIMING;
            let dead = st == reg::ACTIVE
                && self.consumer_liveness(i) == Liveness::Dead
                && e.state
                    .compare_exchange(reg::ACTIVE, reg::CLAIMING, SeqCst, Relaxed)
                    .is_ok();
            if stale || dead {
                let pid = e.pid.load(Relaxed);
                self.retire_consumer(i);
                h.metrics.consumers_reclaimed.fetch_add(1, Relaxed);
                h.metrics.recovery_actions.fetch_add(1, Relaxed);
                out.push((i, pid));
            }
        }
        out
    }

    /// Reader bits in `mask` whose consumers are dead (or not registered).
    pub(crate) fn dead_readers(&self, mut mask: u64) -> u64 {
        let mut dead = 0;
        while mask != 0 {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if i >= MAX_CONSUMERS || self.consumer_liveness(i) == Liveness::Dead {
                dead |= 1 << i;
            }
        }
        dead
    }

    /// Records an error in the block's metrics (code and wall-clock time).
    pub(crate) fn note_error(&self, e: &Error) {
        let m = &self.header().metrics;
        m.last_error_code.store(u64::from(e.code()), Relaxed);
        m.last_error_unix_ns.store(proc::unix_ns(), Relaxed);
    }

    /// Wakes readers sleeping for a commit.
    #[inline]
    pub(crate) fn notify_commit(&self) {
        let c = &self.header().commit;
        crate::wait::wake_all(&c.commit_word, &c.commit_waiters);
    }

    /// Wakes a producer sleeping for a release.
    #[inline]
    pub(crate) fn notify_release(&self) {
        let r = &self.header().release;
        crate::wait::wake_all(&r.release_word, &r.release_waiters);
    }

    /// Removes the segment's name if it still refers to this block's file (the mapping stays
    /// valid for whoever has it).
    pub(crate) fn unlink(&self) -> Result<(), Error> {
        if !self.named {
            return Ok(()); // a memfd: it goes away with its last descriptor and mapping
        }
        if segment::unlink_if_same(&self.name, self.seg.dev, self.seg.ino) {
            Ok(())
        } else {
            Err(Error::NotFound {
                name: self.name.clone(),
            })
        }
    }
}

/// The segment's current size (`u64::MAX` if fstat fails: nothing is concluded from it).
fn segment_len(seg: &Segment) -> u64 {
    rustix::fs::fstat(&seg.file).map_or(u64::MAX, |st| st.st_size as u64)
}
