//! Owning a Rust object that a slot guard borrows from another Python object.
//!
//! `datahub::Producer::write` returns a `WriteGuard<'_>` that borrows the producer mutably, and
//! `Consumer::read` a `ReadGuard<'_>`. In Python the guard lives in a slot object beside the
//! producer object, so the borrow cannot be checked by the compiler. [`Lendable`] checks it at
//! run time instead: the value lives in its own heap allocation, reached only through a raw
//! pointer (so no `&mut` to the Python object aliases it), and is either here (usable through
//! [`Lendable::with`]), lent to exactly one open slot, or closed. While it is lent, every use
//! from Python raises `SlotInUse`; the slot gives it back when it commits, releases or is
//! dropped. The slot holds a strong reference to the object that owns the `Lendable`, so the
//! value is never freed while a guard borrows it.

use std::ptr::NonNull;
use std::sync::Mutex;

use pyo3::PyResult;

use super::errors;

enum State<T> {
    /// Usable from Python.
    Here(NonNull<T>),
    /// Borrowed by one open slot's guard.
    Lent(NonNull<T>),
    /// Freed by `close`.
    Closed,
}

/// A `T` that one slot at a time may borrow (module docs).
pub(crate) struct Lendable<T> {
    state: Mutex<State<T>>,
    what: &'static str,
}

// SAFETY: the pointer is the unique owner of a `Box<T>` (like a `Box`, it is only dereferenced
// by whoever holds the state in `Here`, under the mutex, or by the one guard it is lent to);
// `T: Send` lets that happen on any thread.
unsafe impl<T: Send> Send for Lendable<T> {}
// SAFETY: all access to the pointer goes through the mutex (or through the single borrower
// recorded as `Lent`), so shared references to a `Lendable` never give two threads `&mut T`.
unsafe impl<T: Send> Sync for Lendable<T> {}

/// A lent pointer, sent into `Python::detach` closures.
pub(crate) struct Lent<T>(pub(crate) NonNull<T>);

// SAFETY: the pointer is borrowed exclusively by the holder of this value (the state is
// `Lent`), and `T: Send`.
unsafe impl<T: Send> Send for Lent<T> {}

impl<T> Lent<T> {
    /// The value, shared, for a wait that only reads it.
    ///
    /// # Safety
    /// As [`Lent::get`], and no `&mut` from `get` may be alive while the result is used.
    pub(crate) unsafe fn shared<'a>(&self) -> &'a T {
        // SAFETY: the caller's contract: live, and not mutably borrowed meanwhile.
        unsafe { &*self.0.as_ptr() }
    }

    /// The value, for the lifetime the caller's guard needs.
    ///
    /// # Safety
    /// The [`Lendable`] must stay in the `Lent` state, and its owner alive, for as long as the
    /// returned reference (or anything borrowing it) is used.
    pub(crate) unsafe fn get<'a>(&self) -> &'a mut T {
        // SAFETY: the caller's contract: exclusive, live.
        unsafe { &mut *self.0.as_ptr() }
    }
}

impl<T> Lendable<T> {
    /// Owns `value`; `what` names it in errors ("producer", "consumer").
    pub(crate) fn new(value: T, what: &'static str) -> Lendable<T> {
        let p = NonNull::from(Box::leak(Box::new(value)));
        Lendable {
            state: Mutex::new(State::Here(p)),
            what,
        }
    }

    fn in_use(&self) -> pyo3::PyErr {
        errors::slot_in_use(&format!(
            "the {} is in use: a slot is open (commit or release it first) or another thread is using it",
            self.what
        ))
    }

    /// Runs `f` on the value. Never blocks: a value lent to a slot, or used by another thread
    /// right now, raises `SlotInUse`; a closed one `Closed`.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> PyResult<R>) -> PyResult<R> {
        let guard = self.state.try_lock().map_err(|_| self.in_use())?;
        match &*guard {
            // SAFETY: `Here` under the mutex: nothing else references the value.
            State::Here(p) => f(unsafe { &mut *p.as_ptr() }),
            State::Lent(_) => Err(self.in_use()),
            State::Closed => Err(errors::to_py(datahub::Error::Closed)),
        }
    }

    /// Lends the value to a slot until [`Lendable::give_back`].
    pub(crate) fn lend(&self) -> PyResult<Lent<T>> {
        let mut guard = self.state.try_lock().map_err(|_| self.in_use())?;
        match *guard {
            State::Here(p) => {
                *guard = State::Lent(p);
                Ok(Lent(p))
            }
            State::Lent(_) => Err(self.in_use()),
            State::Closed => Err(errors::to_py(datahub::Error::Closed)),
        }
    }

    /// Ends a lending: the borrower must not use the value any more. Blocks only for the
    /// instant another thread's [`Lendable::with`] takes to see the value is lent (it never
    /// waits while holding the state then).
    pub(crate) fn give_back(&self) {
        // Poisoning cannot happen (no code panics while holding the lock); recover anyway.
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let State::Lent(p) = *guard {
            *guard = State::Here(p);
        }
    }

    /// Frees the value. Raises `SlotInUse` while it is lent; closing twice is a no-op.
    pub(crate) fn close(&self) -> PyResult<()> {
        let mut guard = self.state.try_lock().map_err(|_| self.in_use())?;
        match *guard {
            State::Here(p) => {
                *guard = State::Closed;
                drop(guard);
                // SAFETY: `p` came from `Box::leak` and was `Here`: no borrower exists, and
                // the state is `Closed` now, so it is freed once.
                drop(unsafe { Box::from_raw(p.as_ptr()) });
                Ok(())
            }
            State::Lent(_) => Err(self.in_use()),
            State::Closed => Ok(()),
        }
    }

    /// Whether `close` ran. Never blocks: a thread that holds the state is using the value
    /// (perhaps waiting with the GIL released, which a blocking lock here, under the GIL,
    /// would deadlock against), so it is not closed.
    pub(crate) fn is_closed(&self) -> bool {
        match self.state.try_lock() {
            Ok(g) => matches!(*g, State::Closed),
            Err(std::sync::TryLockError::Poisoned(g)) => matches!(*g.into_inner(), State::Closed),
            Err(std::sync::TryLockError::WouldBlock) => false,
        }
    }
}

impl<T> Drop for Lendable<T> {
    fn drop(&mut self) {
        let state = std::mem::replace(
            self.state.get_mut().unwrap_or_else(|e| e.into_inner()),
            State::Closed,
        );
        match state {
            // SAFETY: from `Box::leak`; a borrower holds a strong reference to our owner, so
            // when we are dropped none is left (`Lent` here means a slot was leaked without
            // giving back, which its `Drop` never does) and the value is freed once.
            State::Here(p) | State::Lent(p) => drop(unsafe { Box::from_raw(p.as_ptr()) }),
            State::Closed => {}
        }
    }
}
