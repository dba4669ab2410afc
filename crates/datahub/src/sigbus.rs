//! Surviving a block that is truncated while mapped.
//!
//! Anyone who may write a segment's file may also `ftruncate` it. Pages of a shared mapping
//! beyond the file's new end raise `SIGBUS` when touched, which kills the process. Named
//! blocks cannot be sealed (the later secure-attach mode seals its memfd instead), so this
//! module does what libwayland's `wl_shm` does for client buffers:
//!
//! - A process-wide `SIGBUS` handler (installed once, `SA_SIGINFO | SA_NODEFER`) looks the
//!   faulting address (`si_addr`) up in a fixed table of the mapped blocks' address ranges.
//! - Inside a registered range, it maps anonymous zero pages over the **whole** mapping
//!   (`mmap(MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS)`), marks the range truncated and returns:
//!   the faulting access runs again on zero pages and succeeds. From then on this process sees
//!   a private, zeroed copy of the block; the library checks the mark after every operation and
//!   returns [`crate::Error::BlockTruncated`], so nothing read from the zero pages is trusted.
//! - Outside every range, the fault is not ours: the previously installed handler is called if
//!   there was one (Rust's runtime installs one for stack overflows), else the default action
//!   is restored and the handler returns, so the access faults again and the process dies of
//!   `SIGBUS` as it would have without this module.
//!
//! The table is an array of atomics, so the handler takes no lock and allocates nothing; its
//! only system call is `mmap` (not on POSIX's async-signal-safe list, but a plain system call
//! on Linux; libwayland relies on the same). At most [`RANGES`] blocks are protected at once;
//! a block mapped beyond that works but is not protected.

use std::ffi::c_void;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// Most mappings protected at once.
pub(crate) const RANGES: usize = 256;

const FREE: u32 = 0;
const CLAIMING: u32 = 1;
const ACTIVE: u32 = 2;
const FIXING: u32 = 3;
const ZEROED: u32 = 4;

/// One registered mapping. Invariant: `start`/`len` are only written while `state` is
/// `CLAIMING` by the registering thread, and read by the handler only after it saw `ACTIVE`,
/// `FIXING` or `ZEROED` (Acquire, paired with the Release store of `ACTIVE`).
struct Range {
    state: AtomicU32,
    start: AtomicUsize,
    len: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Range = Range {
    state: AtomicU32::new(FREE),
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
};

static TABLE: [Range; RANGES] = [EMPTY; RANGES];

/// The action that was installed before ours (read by the handler for faults not ours).
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// The registration of one mapping; unregisters on drop (before the mapping is unmapped: the
/// owner declares it before its mapping).
#[derive(Debug)]
pub(crate) struct Guard {
    index: usize,
}

impl Guard {
    /// Whether the handler replaced this mapping with zero pages.
    #[inline]
    pub(crate) fn truncated(&self) -> bool {
        // SYNC POINT: the handler's Release store of ZEROED.
        TABLE[self.index].state.load(Ordering::Acquire) == ZEROED
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let r = &TABLE[self.index];
        // A handler may be zeroing this range in another thread right now: let it finish, so
        // the entry is not reused (and the range unmapped) under it.
        while r.state.load(Ordering::Acquire) == FIXING {
            std::hint::spin_loop();
        }
        r.state.store(FREE, Ordering::Release);
    }
}

/// Protects the mapping `[start, start + len)` (installing the handler on first use). `None`
/// when the table is full or the handler could not be installed: the mapping then works
/// unprotected.
pub(crate) fn register(start: *const u8, len: usize) -> Option<Guard> {
    if !install() {
        return None;
    }
    for (index, r) in TABLE.iter().enumerate() {
        if r.state
            .compare_exchange(FREE, CLAIMING, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            r.start.store(start as usize, Ordering::Relaxed);
            r.len.store(len, Ordering::Relaxed);
            // SYNC POINT: the handler's Acquire load of the state.
            r.state.store(ACTIVE, Ordering::Release);
            return Some(Guard { index });
        }
    }
    None
}

/// Installs the handler once; whether it is installed.
fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        // SAFETY: an all-zero sigaction is a valid value (SIG_DFL, empty mask, no flags).
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: reading the current action into a valid, writable struct.
        if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) } != 0 {
            return false;
        }
        let _ = PREVIOUS.set(old);
        PAGE_SIZE.store(rustix::param::page_size(), Ordering::Relaxed);
        // SAFETY: as above, zero is a valid starting value.
        let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
        new.sa_sigaction = handler as *const () as usize;
        new.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER | libc::SA_ONSTACK;
        // SAFETY: `sa_mask` is a valid sigset_t inside `new`.
        unsafe { libc::sigemptyset(&mut new.sa_mask) };
        // SAFETY: `new` is fully initialised and `handler` has the SA_SIGINFO signature.
        unsafe { libc::sigaction(libc::SIGBUS, &new, std::ptr::null_mut()) == 0 }
    })
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo_t for an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let page = PAGE_SIZE.load(Ordering::Relaxed);
    for r in &TABLE {
        let st = r.state.load(Ordering::Acquire);
        if st < ACTIVE {
            continue;
        }
        let (start, len) = (
            r.start.load(Ordering::Relaxed),
            r.len.load(Ordering::Relaxed),
        );
        if addr < start || addr - start >= len {
            continue;
        }
        if st == ACTIVE
            && r.state
                .compare_exchange(ACTIVE, FIXING, Ordering::Acquire, Ordering::Acquire)
                .is_ok()
        {
            let len = len.div_ceil(page) * page;
            // SAFETY: [start, start+len) is a mapping this process owns (registered by its
            // Block, which unregisters before unmapping, waiting out FIXING); replacing it with
            // private zero pages of the same size keeps every pointer into it valid.
            let p = unsafe {
                libc::mmap(
                    start as *mut c_void,
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                // Cannot repair: fall back to dying of SIGBUS.
                r.state.store(ACTIVE, Ordering::Release);
                break;
            }
            // SYNC POINT: `Guard::truncated` and `Guard::drop` (Acquire).
            r.state.store(ZEROED, Ordering::Release);
            return;
        }
        // Another thread is zeroing it (or has): wait, then let the access run again.
        while r.state.load(Ordering::Acquire) == FIXING {
            std::hint::spin_loop();
        }
        return;
    }
    chain(sig, info, ctx);
}

/// The page size, stored by `install` before the handler can run.
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(4096);

/// A fault that is not ours: the previous handler, or death by the default action.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    if let Some(old) = PREVIOUS.get() {
        let h = old.sa_sigaction;
        if h != libc::SIG_DFL && h != libc::SIG_IGN {
            if old.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: the previous owner installed `h` with SA_SIGINFO, so it has this
                // signature; we pass it the kernel's arguments unchanged.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void) =
                    unsafe { std::mem::transmute(h) };
                f(sig, info, ctx);
            } else {
                // SAFETY: installed without SA_SIGINFO: the one-argument form.
                let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
                f(sig);
            }
            return;
        }
    }
    // SAFETY: an all-zero sigaction is SIG_DFL with an empty mask.
    let mut dfl: libc::sigaction = unsafe { std::mem::zeroed() };
    dfl.sa_sigaction = libc::SIG_DFL;
    // SAFETY: restoring the default action; returning re-runs the access, which faults again
    // and kills the process as if no handler had been installed.
    unsafe { libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut()) };
}
