//! Frees: handle and pointer checks, the slot-word protocol, and the list fix-ups a free
//! triggers (full -> partial, and recycling a slab a free emptied in a closed epoch).

use std::ptr::NonNull;

use super::{SHARDS, Shard, SlabAllocator};
use crate::class::SHAPES;
use crate::epoch::EPOCH_COUNT;
use crate::handle::Handle;
use crate::slab::{FULL, ListKind, empty_bitmap, free_any, free_generation, is_live};
use crate::sync::Ordering;
use crate::{Error, Result, SLAB_SIZE};

#[cfg(feature = "fast-path-counters")]
use super::count_one;

impl SlabAllocator {
    /// Frees the object of `handle`.
    ///
    /// # Errors
    /// [`Error::WrongAllocator`] for another allocator's handle, [`Error::InvalidHandle`] for a
    /// handle naming no slot, [`Error::DoubleFree`] when the slot was already freed, and
    /// [`Error::StaleHandle`] when it was freed and reused since. None of them changes anything.
    #[inline]
    pub fn free(&self, handle: Handle) -> Result<()> {
        let (class, slab, slot) = self.locate(handle)?;
        let generation = handle.generation();
        if let Err(found) = free_generation(self.slot_word(slab, slot), generation) {
            self.counters.handle_errors.inc();
            let raw = handle.to_raw();
            let meta = self.meta(slab);
            // A recycled slab (cache or overflow, page discarded so its words read zero) has
            // handed out nothing since its last object was freed: the handle's object was freed.
            let recycled = meta.list() >= ListKind::Cache;
            let next = crate::slab::next_generation(generation);
            return Err(if found == next << 1 || recycled {
                Error::DoubleFree { handle: raw }
            } else {
                Error::StaleHandle {
                    handle: raw,
                    current: meta.generation_of(found),
                    found: generation,
                }
            });
        }
        let (shard_ix, owner) = super::thread_shard();
        let shard = &self.classes[class].shards[shard_ix];
        self.release_slot(class, slab, slot, shard, Some(owner));
        Ok(())
    }

    /// The object of `handle`, or `None` when the handle is not live (freed, stale, invalid, or
    /// another allocator's). The pointer is valid until the object is freed.
    #[inline]
    pub fn get(&self, handle: Handle) -> Option<NonNull<u8>> {
        let (class, slab, slot) = self.locate(handle).ok()?;
        is_live(self.slot_word(slab, slot), handle.generation())
            .then(|| self.object(slab, slot, &SHAPES[class]))
    }

    /// Checks a handle's tag, slab and slot; returns `(class, slab, slot)`.
    #[inline]
    fn locate(&self, handle: Handle) -> Result<(usize, u32, u32)> {
        if handle.tag() != self.tag {
            self.counters.handle_errors.inc();
            return Err(Error::WrongAllocator {
                handle: handle.to_raw(),
                expected: self.tag,
                found: handle.tag(),
            });
        }
        let (slab, slot) = (handle.slab(), handle.slot());
        let invalid = || {
            self.counters.handle_errors.inc();
            Error::InvalidHandle {
                handle: handle.to_raw(),
            }
        };
        if slab >= self.committed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(invalid());
        }
        if self.meta(slab).list() == ListKind::Fresh {
            return Err(invalid());
        }
        let (class, shape) = self.shape_of(slab);
        if slot as usize >= shape.slots {
            return Err(invalid());
        }
        Ok((class, slab, slot))
    }

    /// Frees the object at `ptr`, which must have come from [`SlabAllocator::alloc_ptr`] (or
    /// the `Allocator` impl) of this allocator.
    ///
    /// # Errors
    /// [`Error::InvalidPointer`] when `ptr` is outside this allocator, not the start of an
    /// object, or not live (a double free). Nothing changes then. A pointer freed, then handed
    /// out again, then freed through its old copy cannot be told from a legitimate free.
    #[inline]
    pub fn free_ptr(&self, ptr: NonNull<u8>) -> Result<()> {
        let addr = ptr.as_ptr() as usize;
        let reject = |reason| {
            self.counters.pointer_errors.inc();
            Error::InvalidPointer { addr, reason }
        };
        let (class, slab, slot) = self.decode_ptr(addr).map_err(reject)?;
        if !free_any(self.slot_word(slab, slot)) {
            return Err(reject("not live: double free or never allocated"));
        }
        let (shard_ix, owner) = super::thread_shard();
        let shard = &self.classes[class].shards[shard_ix];
        self.release_slot(class, slab, slot, shard, Some(owner));
        Ok(())
    }

    /// The size class, in bytes, of the live object that starts at `ptr` (what a
    /// `malloc_usable_size` reports: the object may be used up to this size), or `None` when
    /// `ptr` is not the start of a live object of this allocator. Reads only metadata, never
    /// the object; changes nothing and counts nothing.
    #[inline]
    pub fn usable_size(&self, ptr: *const u8) -> Option<usize> {
        let (class, slab, slot) = self.decode_ptr(ptr as usize).ok()?;
        // SYNC POINT: Acquire pairs with the Release store in `mark_allocated`.
        let word = self.slot_word(slab, slot).load(Ordering::Acquire);
        (word & 1 == 1).then_some(SHAPES[class].size)
    }

    /// Whether `ptr` lies inside this allocator's slab reservation (every object it ever hands
    /// out does; nothing else does, the range is mapped for as long as the allocator lives).
    /// Says nothing about whether an object is live there: see [`SlabAllocator::usable_size`].
    #[inline]
    pub fn contains(&self, ptr: *const u8) -> bool {
        (ptr as usize).wrapping_sub(self.data.base() as usize) < self.data.len()
    }

    /// The slab reservation's first address and length in bytes (fixed for the allocator's
    /// life).
    pub(crate) fn data_range(&self) -> (usize, usize) {
        (self.data.base() as usize, self.data.len())
    }

    /// `(class, slab, slot)` of the object that starts at `addr`, or why there is none.
    #[inline]
    fn decode_ptr(&self, addr: usize) -> std::result::Result<(usize, u32, u32), &'static str> {
        let base = self.data.base() as usize;
        let offset = addr.wrapping_sub(base);
        // SYNC POINT: Acquire pairs with the Release store of `committed` in `carve`.
        let committed = self.committed.load(std::sync::atomic::Ordering::Acquire) as usize;
        if addr < base || offset >= committed * SLAB_SIZE {
            return Err("outside the allocator's slabs");
        }
        let slab = (offset / SLAB_SIZE) as u32;
        if self.meta(slab).list() == ListKind::Fresh {
            return Err("in a slab never used");
        }
        let (class, shape) = self.shape_of(slab);
        let within = offset % SLAB_SIZE;
        if within < shape.header {
            return Err("not the start of an object");
        }
        let (slot, rest) = crate::class::div_by_size(class, within - shape.header);
        if rest != 0 {
            return Err("not the start of an object");
        }
        if slot >= shape.slots {
            return Err("past the last object of its slab");
        }
        Ok((class, slab, slot as u32))
    }

    /// Gives a claimed slot back to its slab's bitmap, and fixes up the slab's list when the
    /// free made a full slab partial, or emptied a slab of a closed epoch.
    ///
    /// `counted` is `Some(owner)` for a real free (counted as one, see
    /// [`super::thread_shard`]), `None` for a slot claimed and given back before it was handed
    /// out (not an allocation either).
    #[inline]
    pub(super) fn release_slot(
        &self,
        class: usize,
        slab: u32,
        slot: u32,
        shard: &Shard,
        counted: Option<bool>,
    ) {
        let meta = self.meta(slab);
        let slots = self.classes[class].shape.slots;
        let (before, after, retries) = meta.release(slot);
        #[cfg(feature = "fast-path-counters")]
        {
            if let Some(owner) = counted {
                count_one(&shard.frees_owned, &shard.frees_shared, owner);
            }
            if retries > 0 {
                shard.free_retries.add(u64::from(retries));
            }
        }
        let _ = (shard, retries, counted);
        if before == FULL || (after == empty_bitmap(slots) && !self.slab_era_live(meta)) {
            self.fixup(class, slab);
        }
    }

    /// Under the slab's home-shard lock: moves a full slab that a free made partial to the
    /// partial list, and takes off its list a slab that a free emptied in a closed epoch; the
    /// latter is then recycled with no lock held.
    #[cold]
    fn fixup(&self, class: usize, slab: u32) {
        let meta = self.meta(slab);
        let label = {
            let epoch = usize::from(meta.epoch.load(Ordering::Relaxed)) % EPOCH_COUNT;
            self.epochs[epoch].label_id.load(Ordering::Relaxed)
        };
        let slots = self.classes[class].shape.slots;
        let sealed = loop {
            let home = usize::from(meta.home.load(Ordering::Relaxed)) % SHARDS;
            let mut sl = self.lock_shard(class, home, label);
            if usize::from(meta.home.load(Ordering::Relaxed)) % SHARDS != home {
                continue; // stolen and republished by another shard while we waited
            }
            let epoch = usize::from(meta.epoch.load(Ordering::Relaxed)) % EPOCH_COUNT;
            match meta.list() {
                ListKind::Full => {
                    if !self.slab_era_live(meta) && meta.seal(slots) {
                        sl.full[epoch] -= 1;
                        meta.set_list(ListKind::Current);
                        break true;
                    }
                    if meta.bitmap.load(Ordering::Relaxed) != FULL {
                        sl.full[epoch] -= 1;
                        self.push(&mut sl.partial[epoch], ListKind::Partial, slab);
                        // Under the home shard's lock: a single-writer bump.
                        self.classes[class].shards[home]
                            .slow
                            .moves_to_partial
                            .bump_single_writer();
                    }
                }
                ListKind::Partial if !self.slab_era_live(meta) && meta.seal(slots) => {
                    self.unlink(&mut sl.partial[epoch], slab);
                    break true;
                }
                // Current: whoever retires it files it; Cache/Overflow: already recycled.
                _ => {}
            }
            break false;
        };
        if sealed {
            self.recycle_slabs(class, &mut [slab]);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{CLASS_SIZES, SlabAllocator};

    #[test]
    fn usable_size_is_the_class_size_of_a_live_object_start_and_none_elsewhere() {
        let slab = SlabAllocator::new().unwrap();
        let e = slab.epoch_current();
        let p = slab.alloc_ptr(100, e).unwrap();
        let inside = p.as_ptr().wrapping_add(16);
        assert_eq!(slab.usable_size(p.as_ptr()), Some(CLASS_SIZES[2]));
        assert_eq!(slab.usable_size(inside), None, "not the start of an object");
        let other = Box::new([0u8; 100]);
        assert_eq!(slab.usable_size(other.as_ptr()), None);
        assert!(slab.contains(p.as_ptr()) && slab.contains(inside));
        assert!(!slab.contains(other.as_ptr()));
        let pointer_errors = slab.stats().pointer_errors;
        slab.free_ptr(p).unwrap();
        assert_eq!(slab.usable_size(p.as_ptr()), None, "freed");
        assert_eq!(
            slab.stats().pointer_errors,
            pointer_errors,
            "usable_size counts nothing"
        );
        assert!(
            slab.free_ptr(p).is_err(),
            "free_ptr still refuses a double free"
        );
    }
}
