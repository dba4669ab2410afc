//! Typed event subscriptions, per bus. There is no global registry and nothing is logged per
//! event: an event is only built when some subscription on this bus asked for its kind.

use crate::delta::Source;
use crate::page::{Lsn, PageId};

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A page was created.
    PageCreated {
        /// The new page.
        page: PageId,
        /// Its size in bytes.
        size: usize,
    },
    /// A delta was logged and applied.
    DeltaApplied {
        /// The page.
        page: PageId,
        /// The delta's LSN.
        lsn: Lsn,
        /// The page's epoch after the delta.
        epoch: u64,
        /// Who wrote it.
        source: Source,
        /// Number of bytes the delta selects.
        bytes: usize,
    },
    /// At the end of a commit, once per page whose bytes changed in it (directly or by
    /// propagation).
    PageChanged {
        /// The page.
        page: PageId,
        /// Its epoch at the end of the commit.
        epoch: u64,
    },
    /// A derived page is about to be recomputed because a data parent changed.
    PageInvalidated {
        /// The derived page.
        page: PageId,
    },
    /// A page became stale: a `Control` parent changed, or a `Data` parent changed and the page
    /// has no recompute function.
    PageStale {
        /// The page.
        page: PageId,
    },
}

/// The kind of an [`Event`], for filtering.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EventKind {
    /// [`Event::PageCreated`].
    PageCreated = 1,
    /// [`Event::DeltaApplied`].
    DeltaApplied = 2,
    /// [`Event::PageChanged`].
    PageChanged = 4,
    /// [`Event::PageInvalidated`].
    PageInvalidated = 8,
    /// [`Event::PageStale`].
    PageStale = 16,
}

impl Event {
    /// This event's kind.
    #[must_use]
    pub fn kind(&self) -> EventKind {
        match self {
            Event::PageCreated { .. } => EventKind::PageCreated,
            Event::DeltaApplied { .. } => EventKind::DeltaApplied,
            Event::PageChanged { .. } => EventKind::PageChanged,
            Event::PageInvalidated { .. } => EventKind::PageInvalidated,
            Event::PageStale { .. } => EventKind::PageStale,
        }
    }
}

/// Identifies a subscription, for [`crate::Mmsb::unsubscribe`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct SubscriptionId(pub(crate) u64);

type Callback = Box<dyn FnMut(&Event) + Send>;

/// The subscriptions of one bus.
#[derive(Default)]
pub(crate) struct Subscribers {
    subs: Vec<(SubscriptionId, u8, Callback)>,
    wanted: u8,
    next: u64,
}

impl std::fmt::Debug for Subscribers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscribers")
            .field("count", &self.subs.len())
            .field("wanted", &self.wanted)
            .finish()
    }
}

impl Subscribers {
    pub(crate) fn add(&mut self, kinds: &[EventKind], f: Callback) -> SubscriptionId {
        let mask = kinds.iter().fold(0u8, |m, k| m | *k as u8);
        self.next += 1;
        let id = SubscriptionId(self.next);
        self.subs.push((id, mask, f));
        self.wanted |= mask;
        id
    }

    pub(crate) fn remove(&mut self, id: SubscriptionId) -> bool {
        let before = self.subs.len();
        self.subs.retain(|s| s.0 != id);
        self.wanted = self.subs.iter().fold(0, |m, s| m | s.1);
        before != self.subs.len()
    }

    /// True when some subscription wants `kind` (check before building the event).
    #[inline]
    pub(crate) fn wants(&self, kind: EventKind) -> bool {
        self.wanted & kind as u8 != 0
    }

    pub(crate) fn emit(&mut self, event: &Event) {
        let k = event.kind() as u8;
        for (_, mask, f) in &mut self.subs {
            if *mask & k != 0 {
                f(event);
            }
        }
    }
}
