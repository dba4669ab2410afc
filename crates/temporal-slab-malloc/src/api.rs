//! The `tslab_*` functions of `include/tslab.h`: epochs, scopes, labels and stats for C
//! programs that run on this library (preloaded or linked with `-ltslab_malloc`).
//!
//! # Epoch ids across the ABI
//! A `uint64_t` packs an [`EpochId`] ([`EpochId::to_bits`]): `era << 4 | slot`, the ring slot
//! (0..16) in the low 4 bits and the era (a number that only grows, from 1) above them, so 0
//! is never an id ([`TSLAB_EPOCH_NONE`]). Every call that takes an id checks it against the
//! era its ring slot holds now: an id whose slot was reopened since, or a number that was never
//! an id, is [`TSLAB_ERR_STALE`]. No value of the `uint64_t` is undefined behaviour. Nothing
//! here takes a lock of its own (only the allocator's, which its `fork` handlers cover), so a
//! `fork` child can call every function.
//!
//! # Return codes
//! 0 ([`TSLAB_OK`]) or a negative `TSLAB_ERR_*` (the header lists them); nothing here sets
//! `errno` except [`TSLAB_ERR_IO`]. No function here panics across the boundary: an internal
//! error is a return code.

use std::ffi::{CStr, c_char, c_int};

use temporal_slab::{EpochId, Error, SlabAllocator, global};

/// Success.
pub const TSLAB_OK: c_int = 0;
/// The slab allocator does not serve this process (`TSLAB_DISABLE` is set, it could not be
/// created, or the library is not initialised yet).
pub const TSLAB_ERR_DISABLED: c_int = -1;
/// The epoch id is stale (its ring slot was reopened since) or was never an id.
pub const TSLAB_ERR_STALE: c_int = -2;
/// `tslab_epoch_advance`: every other ring slot holds an epoch that has not drained.
pub const TSLAB_ERR_RING_FULL: c_int = -3;
/// A required pointer argument is null.
pub const TSLAB_ERR_INVALID: c_int = -4;
/// `tslab_scope_enter` with the scope stack full, or `tslab_scope_exit` with no scope open.
pub const TSLAB_ERR_SCOPE: c_int = -5;
/// Writing the stats failed; `errno` says why.
pub const TSLAB_ERR_IO: c_int = -6;
/// An error the allocator reported that none of the above names.
pub const TSLAB_ERR_OTHER: c_int = -7;
/// Never an epoch id.
pub const TSLAB_EPOCH_NONE: u64 = 0;

/// The [`EpochId`] that `bits` packs ([`EpochId::from_bits`]): any word but one with era 0
/// gives an id, and the allocator refuses one that names no open epoch (stale, or made up)
/// with [`Error::StaleEpoch`], which every caller here turns into [`TSLAB_ERR_STALE`].
fn unpack(bits: u64) -> Result<EpochId, c_int> {
    EpochId::from_bits(bits).ok_or(TSLAB_ERR_STALE)
}

/// The process-wide allocator, if the library serves this process.
fn allocator() -> Result<&'static SlabAllocator, c_int> {
    if !crate::init::ready() {
        return Err(TSLAB_ERR_DISABLED);
    }
    global::instance().ok_or(TSLAB_ERR_DISABLED)
}

fn code(e: &Error) -> c_int {
    match e {
        Error::StaleEpoch { .. } => TSLAB_ERR_STALE,
        Error::EpochRingFull { .. } => TSLAB_ERR_RING_FULL,
        _ => TSLAB_ERR_OTHER,
    }
}

/// Writes `id` to `out` as a `uint64_t` ([`EpochId::to_bits`]).
///
/// # Safety
/// `out` is null or valid for one `u64` write.
unsafe fn put(out: *mut u64, id: EpochId) -> c_int {
    if out.is_null() {
        return TSLAB_ERR_INVALID;
    }
    // SAFETY: non-null, and valid for a write by the caller's obligation.
    unsafe { out.write(id.to_bits()) };
    TSLAB_OK
}

fn status(r: Result<(), c_int>) -> c_int {
    r.err().unwrap_or(TSLAB_OK)
}

/// `int tslab_enabled(void)`: 1 when temporal-slab serves this process's small allocations,
/// 0 when everything goes to glibc.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub extern "C" fn tslab_enabled() -> c_int {
    c_int::from(allocator().is_ok())
}

/// `int tslab_epoch_current(uint64_t *out)`: the current epoch's id.
///
/// # Safety
/// `out` is null (an error) or valid for one `uint64_t` write.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn tslab_epoch_current(out: *mut u64) -> c_int {
    match allocator() {
        // SAFETY: the caller's obligation.
        Ok(a) => unsafe { put(out, a.epoch_current()) },
        Err(e) => e,
    }
}

/// `int tslab_epoch_advance(uint64_t *out)`: opens a new epoch, makes it current (requests
/// outside any scope go there from now on) and writes its id.
///
/// # Safety
/// As [`tslab_epoch_current`].
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn tslab_epoch_advance(out: *mut u64) -> c_int {
    if out.is_null() {
        return TSLAB_ERR_INVALID;
    }
    match allocator().and_then(|a| a.epoch_advance().map_err(|e| code(&e))) {
        // SAFETY: the caller's obligation.
        Ok(id) => unsafe { put(out, id) },
        Err(e) => e,
    }
}

/// `int tslab_epoch_close(uint64_t epoch)`: closes the epoch (its empty slabs go back to the
/// kernel; live objects stay valid and are reported as its live objects).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub extern "C" fn tslab_epoch_close(epoch: u64) -> c_int {
    status(allocator().and_then(|a| {
        let id = unpack(epoch)?;
        a.epoch_close(id).map(drop).map_err(|e| code(&e))
    }))
}

/// `int tslab_scope_enter(uint64_t epoch)`: this thread's small requests go to `epoch` until
/// the matching `tslab_scope_exit` (scopes nest up to [`global::MAX_SCOPE_DEPTH`]; the
/// innermost wins). With the stack full nothing is entered ([`TSLAB_ERR_SCOPE`]: do not
/// exit for it). A scope takes no reference: the epoch can still be closed, and requests in
/// the scope then go to glibc.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub extern "C" fn tslab_scope_enter(epoch: u64) -> c_int {
    status(allocator().and_then(|a| {
        let id = unpack(epoch)?;
        if a.epoch_state(id).is_none() {
            return Err(TSLAB_ERR_STALE);
        }
        if global::scope_depth() >= global::MAX_SCOPE_DEPTH {
            return Err(TSLAB_ERR_SCOPE);
        }
        global::scope_enter(id);
        Ok(())
    }))
}

/// `int tslab_scope_exit(void)`: leaves this thread's innermost scope; [`TSLAB_ERR_SCOPE`]
/// when none is open.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub extern "C" fn tslab_scope_exit() -> c_int {
    status(allocator().and_then(|_| {
        if global::scope_depth() == 0 {
            return Err(TSLAB_ERR_SCOPE);
        }
        global::scope_exit();
        Ok(())
    }))
}

/// `int tslab_set_label(uint64_t epoch, const char *label)`: names the epoch in the stats (at
/// most 31 bytes are kept; bytes that are not UTF-8 become U+FFFD).
///
/// # Safety
/// `label` is null (an error) or a NUL-terminated string.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn tslab_set_label(epoch: u64, label: *const c_char) -> c_int {
    if label.is_null() {
        return TSLAB_ERR_INVALID;
    }
    // SAFETY: non-null and NUL-terminated by the caller's obligation.
    let label = unsafe { CStr::from_ptr(label) }.to_string_lossy();
    status(allocator().and_then(|a| {
        let id = unpack(epoch)?;
        a.set_label(id, &label).map_err(|e| code(&e))
    }))
}

/// `int64_t tslab_stats_json(char *buf, size_t cap)`: the stats JSON (schema version 1, as
/// `tslab` reads it). Returns its length `n` in bytes, not counting a NUL. When `n < cap` the
/// document and a terminating NUL are in `buf[0..=n]`; otherwise `buf` is untouched (pass
/// `buf = NULL, cap = 0` to ask for the size, then a buffer with room to spare: the document
/// can grow between calls). The caller owns `buf`; nothing is kept. Negative: an error code.
///
/// # Safety
/// `buf` is null or valid for `cap` bytes of writes.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn tslab_stats_json(buf: *mut c_char, cap: usize) -> i64 {
    let json = match allocator().and_then(|_| crate::stats::render().ok_or(TSLAB_ERR_OTHER)) {
        Ok(j) => j,
        Err(e) => return i64::from(e),
    };
    let n = json.len();
    if !buf.is_null() && n < cap {
        // SAFETY: `buf` is valid for `cap > n` bytes (the caller's obligation): `n` bytes of
        // JSON and the NUL fit.
        unsafe {
            std::ptr::copy_nonoverlapping(json.as_ptr(), buf.cast::<u8>(), n);
            buf.add(n).write(0);
        }
    }
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `int tslab_stats_write_fd(int fd)`: writes the stats JSON to `fd` (all of it, retrying
/// short writes). The descriptor stays the caller's, open.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub extern "C" fn tslab_stats_write_fd(fd: c_int) -> c_int {
    let json = match allocator().and_then(|_| crate::stats::render().ok_or(TSLAB_ERR_OTHER)) {
        Ok(j) => j,
        Err(e) => return e,
    };
    match crate::stats::write_all_fd(fd, &json) {
        Ok(()) => TSLAB_OK,
        Err(e) => {
            // SAFETY: this thread's errno.
            unsafe { *libc::__errno_location() = e.raw_os_error().unwrap_or(libc::EIO) };
            TSLAB_ERR_IO
        }
    }
}
