//! The per-thread scope stack: which epoch this thread's requests go to.
//!
//! A `thread_local!` with `const` initialisation and no destructor (every field is a `Cell` of
//! `Copy` data): on Linux it is a plain `#[thread_local]` static, so reading or writing it
//! never allocates, never registers a destructor, and works at any point of a thread's life,
//! including while other thread-locals' destructors run at thread exit.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::EpochId;

/// Deepest scope nesting a thread can have that routes to an epoch. Entering deeper is
/// counted ([`scope_overflows`]) and, until the stack is back at this depth, routes every
/// request to the fallback (never to a wrong epoch); exits still pair with enters.
pub const MAX_SCOPE_DEPTH: usize = 64;

/// What this thread's innermost scope says, cached so routing reads one cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Innermost {
    /// No scope open.
    Outside,
    /// The innermost scope's epoch.
    Epoch(EpochId),
    /// Deeper than [`MAX_SCOPE_DEPTH`]: the fallback.
    Overflowed,
}

struct Scopes {
    /// Scopes open on this thread, including those past [`MAX_SCOPE_DEPTH`].
    depth: Cell<usize>,
    /// What `stack[depth - 1]` routes to (kept equal to it by every change).
    innermost: Cell<Innermost>,
    /// `stack[i]` is the epoch of the scope at depth `i + 1`, for `i < depth`.
    stack: [Cell<EpochId>; MAX_SCOPE_DEPTH],
}

const NO_EPOCH: EpochId = EpochId { index: 0, era: 0 };

thread_local! {
    static SCOPES: Scopes = const {
        Scopes {
            depth: Cell::new(0),
            innermost: Cell::new(Innermost::Outside),
            stack: [const { Cell::new(NO_EPOCH) }; MAX_SCOPE_DEPTH],
        }
    };
}

/// Enters overflowing [`MAX_SCOPE_DEPTH`], process-wide.
static OVERFLOWS: AtomicU64 = AtomicU64::new(0);

#[inline]
pub(super) fn innermost() -> Innermost {
    SCOPES.with(|s| s.innermost.get())
}

/// Opens a scope of `epoch` on this thread: until the matching [`scope_exit`], requests of at
/// most 768 bytes and 16-byte alignment made on this thread go to `epoch` (see the routing
/// table in [`crate::global`]). Nests: the innermost scope wins.
///
/// `epoch` should come from [`crate::global::instance`] (an id of another allocator names a
/// ring slot of the global one; if its era does not match there, requests are refused and go
/// to the fallback). Entering does not take a reference on the epoch (its refcount is
/// unchanged), so a scope does not keep the epoch from being closed: once it is, requests in
/// the scope go to the fallback. Hold an [`crate::EpochDomain`] as well for that.
///
/// Past [`MAX_SCOPE_DEPTH`] open scopes, the enter is counted in [`scope_overflows`] and
/// requests go to the fallback until enough scopes are exited. Never allocates, never panics.
#[inline]
pub fn scope_enter(epoch: EpochId) {
    SCOPES.with(|s| {
        let depth = s.depth.get();
        if depth < MAX_SCOPE_DEPTH {
            s.stack[depth].set(epoch);
            s.innermost.set(Innermost::Epoch(epoch));
        } else {
            OVERFLOWS.fetch_add(1, Ordering::Relaxed);
            s.innermost.set(Innermost::Overflowed);
        }
        s.depth.set(depth.saturating_add(1));
    });
}

/// Closes this thread's innermost scope (the one the last unmatched [`scope_enter`] opened).
/// With no scope open it does nothing. Never allocates, never panics.
#[inline]
pub fn scope_exit() {
    SCOPES.with(|s| {
        let depth = s.depth.get();
        if depth > 0 {
            truncate(s, depth - 1);
        }
    });
}

/// How many scopes are open on this thread (including any past [`MAX_SCOPE_DEPTH`]).
pub fn scope_depth() -> usize {
    SCOPES.with(|s| s.depth.get())
}

/// The epoch this thread's innermost scope routes to, or `None` outside every scope (and past
/// [`MAX_SCOPE_DEPTH`]).
pub fn current_scope() -> Option<EpochId> {
    match innermost() {
        Innermost::Epoch(e) => Some(e),
        Innermost::Outside | Innermost::Overflowed => None,
    }
}

/// Scope enters that went past [`MAX_SCOPE_DEPTH`], all threads, since the process started.
pub fn scope_overflows() -> u64 {
    OVERFLOWS.load(Ordering::Relaxed)
}

fn truncate(s: &Scopes, depth: usize) {
    s.depth.set(depth);
    s.innermost.set(match depth {
        0 => Innermost::Outside,
        d if d <= MAX_SCOPE_DEPTH => Innermost::Epoch(s.stack[d - 1].get()),
        _ => Innermost::Overflowed,
    });
}

/// An open scope (see [`scope_enter`]); dropping it closes the scope and every scope opened
/// inside it that is still open (so dropping guards out of order never leaves a dropped
/// guard's epoch in effect). Made by [`enter`]. Neither `Send` nor `Sync`: the scope belongs
/// to the thread that opened it:
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<temporal_slab::global::ScopeGuard>();
/// ```
#[derive(Debug)]
#[must_use = "the scope closes as soon as the guard is dropped"]
pub struct ScopeGuard {
    /// The depth this guard's scope has (1 = outermost).
    level: usize,
    epoch: EpochId,
    _not_send: PhantomData<*const ()>,
}

impl ScopeGuard {
    /// The epoch of this scope.
    pub fn epoch(&self) -> EpochId {
        self.epoch
    }
}

/// Opens a scope of `epoch` on this thread (as [`scope_enter`]) and returns the guard that
/// closes it.
///
/// # Examples
/// ```
/// use temporal_slab::global;
///
/// let slab = global::instance().expect("reserve address space");
/// let epoch = slab.epoch_advance()?;
/// {
///     let _scope = global::enter(epoch);
///     assert_eq!(global::current_scope(), Some(epoch));
/// }
/// assert_eq!(global::current_scope(), None);
/// # Ok::<(), temporal_slab::Error>(())
/// ```
#[inline]
pub fn enter(epoch: EpochId) -> ScopeGuard {
    scope_enter(epoch);
    ScopeGuard {
        level: scope_depth(),
        epoch,
        _not_send: PhantomData,
    }
}

impl Drop for ScopeGuard {
    #[inline]
    fn drop(&mut self) {
        SCOPES.with(|s| {
            if s.depth.get() >= self.level {
                truncate(s, self.level - 1);
            }
        });
    }
}

/// Runs `f` inside a scope of `epoch` on this thread; the scope closes when `f` returns or
/// unwinds.
///
/// # Examples
/// ```
/// use temporal_slab::global;
///
/// let slab = global::instance().expect("reserve address space");
/// let epoch = slab.epoch_advance()?;
/// let inside = global::scope(epoch, global::current_scope);
/// assert_eq!(inside, Some(epoch));
/// # Ok::<(), temporal_slab::Error>(())
/// ```
#[inline]
pub fn scope<R>(epoch: EpochId, f: impl FnOnce() -> R) -> R {
    let _guard = enter(epoch);
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(index: u8, era: u64) -> EpochId {
        EpochId { index, era }
    }

    #[test]
    fn the_innermost_scope_wins_and_exits_restore_the_outer_one() {
        assert_eq!(current_scope(), None);
        scope_enter(id(1, 10));
        scope_enter(id(2, 20));
        assert_eq!(current_scope(), Some(id(2, 20)));
        scope_exit();
        assert_eq!(current_scope(), Some(id(1, 10)));
        scope_exit();
        assert_eq!(current_scope(), None);
        scope_exit(); // unmatched: nothing happens
        assert_eq!(scope_depth(), 0);
    }

    #[test]
    fn past_the_maximum_depth_requests_fall_back_until_the_stack_is_back() {
        let before = scope_overflows();
        for i in 0..MAX_SCOPE_DEPTH {
            scope_enter(id(3, i as u64 + 1));
        }
        assert_eq!(current_scope(), Some(id(3, MAX_SCOPE_DEPTH as u64)));
        scope_enter(id(4, 99));
        scope_enter(id(4, 100));
        assert_eq!(innermost(), Innermost::Overflowed);
        assert!(scope_overflows() >= before + 2);
        scope_exit();
        assert_eq!(
            innermost(),
            Innermost::Overflowed,
            "still one level too deep"
        );
        scope_exit();
        assert_eq!(current_scope(), Some(id(3, MAX_SCOPE_DEPTH as u64)));
        for _ in 0..MAX_SCOPE_DEPTH {
            scope_exit();
        }
        assert_eq!(current_scope(), None);
    }

    #[test]
    fn dropping_a_guard_closes_the_scopes_opened_inside_it() {
        let outer = enter(id(5, 1));
        let inner = enter(id(6, 2));
        drop(outer);
        assert_eq!(
            current_scope(),
            None,
            "the outer guard took the inner scope with it"
        );
        drop(inner);
        assert_eq!(scope_depth(), 0);
        let r = std::panic::catch_unwind(|| scope(id(7, 3), || panic!("inside")));
        assert!(r.is_err());
        assert_eq!(
            current_scope(),
            None,
            "an unwinding closure closes its scope"
        );
    }
}
