//! Epoch domains: an RAII guard a thread holds while it works inside an epoch.

use std::cell::RefCell;
use std::marker::PhantomData;

use crate::{EpochId, EpochState, Error, Result, SlabAllocator};

/// One (allocator, epoch) this thread is inside, and how deeply.
#[derive(Debug)]
struct Depth {
    uid: u64,
    epoch: EpochId,
    depth: u32,
}

thread_local! {
    static DEPTHS: RefCell<Vec<Depth>> = const { RefCell::new(Vec::new()) };
}

/// Proof that the current thread is inside an epoch's domain; leaving is dropping it.
///
/// Domains nest per thread: the epoch's refcount rises on this thread's first enter and falls on
/// its last exit, so the refcount counts threads inside the epoch (plus explicit
/// [`SlabAllocator::inc_refcount`] calls). With auto-close, the guard whose exit brings the
/// refcount to 0 closes the epoch, but only if the ring slot still holds the same era.
/// The guard is neither `Send` nor `Sync`: it must be dropped on the thread that made it.
#[derive(Debug)]
#[must_use = "the domain is left as soon as the guard is dropped"]
pub struct EpochDomain<'a> {
    alloc: &'a SlabAllocator,
    epoch: EpochId,
    auto_close: bool,
    _not_send: PhantomData<*const ()>,
}

impl SlabAllocator {
    /// Enters `epoch`'s domain on this thread.
    ///
    /// # Errors
    /// [`Error::StaleEpoch`]; [`Error::EpochClosed`] when the epoch is CLOSING.
    pub fn enter(&self, epoch: EpochId) -> Result<EpochDomain<'_>> {
        self.enter_with(epoch, false)
    }

    /// Enters `epoch`'s domain; the last exit (refcount back to 0) closes the epoch.
    ///
    /// # Errors
    /// As [`SlabAllocator::enter`].
    pub fn enter_auto_close(&self, epoch: EpochId) -> Result<EpochDomain<'_>> {
        self.enter_with(epoch, true)
    }

    fn enter_with(&self, epoch: EpochId, auto_close: bool) -> Result<EpochDomain<'_>> {
        match self.epoch_state(epoch) {
            Some(EpochState::Active) => {}
            Some(EpochState::Closing) => {
                return Err(Error::EpochClosed {
                    epoch: epoch.index,
                    era: epoch.era,
                });
            }
            None => {
                self.refcount(epoch)?; // builds and counts the StaleEpoch error
            }
        }
        let first = DEPTHS.with(|d| {
            let mut d = d.borrow_mut();
            match d
                .iter_mut()
                .find(|x| x.uid == self.uid() && x.epoch == epoch)
            {
                Some(x) => {
                    x.depth += 1;
                    false
                }
                None => {
                    d.push(Depth {
                        uid: self.uid(),
                        epoch,
                        depth: 1,
                    });
                    true
                }
            }
        });
        if first {
            if let Err(e) = self.inc_refcount(epoch) {
                DEPTHS.with(|d| {
                    d.borrow_mut()
                        .retain(|x| !(x.uid == self.uid() && x.epoch == epoch))
                });
                return Err(e);
            }
        }
        Ok(EpochDomain {
            alloc: self,
            epoch,
            auto_close,
            _not_send: PhantomData,
        })
    }

    /// How deeply this thread is inside `epoch`'s domain (0 = not inside).
    pub fn domain_depth(&self, epoch: EpochId) -> u32 {
        DEPTHS.with(|d| {
            d.borrow()
                .iter()
                .find(|x| x.uid == self.uid() && x.epoch == epoch)
                .map_or(0, |x| x.depth)
        })
    }
}

impl EpochDomain<'_> {
    /// The epoch this domain is in.
    pub fn epoch(&self) -> EpochId {
        self.epoch
    }
}

impl Drop for EpochDomain<'_> {
    fn drop(&mut self) {
        let uid = self.alloc.uid();
        let last = DEPTHS.with(|d| {
            let mut d = d.borrow_mut();
            let Some(pos) = d.iter().position(|x| x.uid == uid && x.epoch == self.epoch) else {
                return false;
            };
            d[pos].depth -= 1;
            if d[pos].depth == 0 {
                d.swap_remove(pos);
                true
            } else {
                false
            }
        });
        if !last {
            return;
        }
        // A stale epoch (slot re-opened meanwhile) has nothing left to release or close.
        if let Ok(0) = self.alloc.dec_refcount(self.epoch) {
            if self.auto_close {
                let _ = self.alloc.epoch_close(self.epoch);
            }
        }
    }
}
