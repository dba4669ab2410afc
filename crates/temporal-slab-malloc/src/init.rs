//! One-time set-up: the environment, the process-wide allocator, the exit hook.
//!
//! [`init`] runs once, from this library's constructor (an `.init_array` entry, so before
//! `main` and, under `LD_PRELOAD`, before the constructors of the program's own libraries).
//! Until it has finished, [`ready`] is false and every request goes to glibc; afterwards
//! requests that fit go to temporal-slab. Frees route by address, so a block glibc gave before
//! (or during) the set-up is always freed by glibc. `init` reads the environment with
//! `libc::getenv` on static C strings (no allocation), and whatever it allocates itself (the
//! `SlabAllocator`'s `Box`, the copy of the stats path) goes through [`crate::next::LibcAlloc`],
//! never through our `malloc`; a `calloc` that glibc's `atexit` makes meanwhile finds
//! [`ready`] false and goes to glibc.

use std::ffi::{CStr, CString};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

use temporal_slab::global::{self, Outside};

const UNINIT: u8 = 0;
const RUNNING: u8 = 1;
const READY: u8 = 2;
const OFF: u8 = 3;

/// [`UNINIT`] -> [`RUNNING`] (one caller wins the CAS) -> [`READY`] or [`OFF`] (disabled, or
/// the allocator could not be created). Never goes back.
static STATE: AtomicU8 = AtomicU8::new(UNINIT);

/// `TSLAB_STATS_FILE` as it was at [`init`], and the process that read it.
static STATS_FILE: OnceLock<(CString, libc::pid_t)> = OnceLock::new();

/// True once [`init`] finished and temporal-slab serves requests.
#[inline]
pub(crate) fn ready() -> bool {
    // SYNC POINT: Acquire pairs with the Release store of READY in `init`, so a thread that
    // sees READY also sees `set_outside_scope`. (Routing itself does not depend on it: the
    // global module synchronises its own instance.)
    STATE.load(Ordering::Acquire) == READY
}

/// The value of environment variable `name`, if set (borrowed from `environ`: read it before
/// anything can call `setenv`).
fn env(name: &CStr) -> Option<&'static CStr> {
    // SAFETY: `name` is NUL-terminated; getenv returns null or a pointer into `environ`, which
    // we read at once, in the constructor, before the program can change its environment.
    let v = unsafe { libc::getenv(name.as_ptr()) };
    // SAFETY: non-null getenv results are NUL-terminated strings.
    (!v.is_null()).then(|| unsafe { CStr::from_ptr(v) })
}

/// True for a set, non-empty value other than `0`.
fn flag(value: Option<&CStr>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v.to_bytes() != b"0")
}

/// Runs the set-up once; later calls (and calls while it runs) return at once.
///
/// `TSLAB_DISABLE` set (to anything but empty or `0`) leaves every request to glibc and creates
/// nothing. Otherwise requests outside any scope go to the allocator's current epoch, the
/// allocator is created, and with `TSLAB_STATS_FILE` set an `atexit` hook writes the stats JSON
/// there. An allocator that cannot be created (its address-space reservation refused, say
/// under `ulimit -v`) leaves every request to glibc, with one line on stderr.
pub(crate) fn init() {
    if STATE
        .compare_exchange(UNINIT, RUNNING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    if flag(env(c"TSLAB_DISABLE")) {
        STATE.store(OFF, Ordering::Release);
        return;
    }
    global::set_outside_scope(Outside::CurrentEpoch);
    if global::instance().is_none() {
        crate::stats::stderr_line(format_args!(
            "the allocator could not be created; every allocation goes to glibc"
        ));
        STATE.store(OFF, Ordering::Release);
        return;
    }
    if let Some(path) = env(c"TSLAB_STATS_FILE").filter(|p| !p.is_empty()) {
        // SAFETY: getpid has no precondition.
        let pid = unsafe { libc::getpid() };
        if STATS_FILE.set((absolute(path), pid)).is_ok() {
            // SAFETY: `write_stats_at_exit` is an `extern "C" fn()` that never unwinds.
            if unsafe { libc::atexit(write_stats_at_exit) } != 0 {
                crate::stats::stderr_line(format_args!(
                    "cannot register the exit hook; TSLAB_STATS_FILE will not be written"
                ));
            }
        }
    }
    // SYNC POINT: Release pairs with the Acquire load in `ready`.
    STATE.store(READY, Ordering::Release);
}

/// `path` made absolute against the working directory now, so a program that changes
/// directory still writes where it was started; unchanged if the directory cannot be read.
fn absolute(path: &CStr) -> CString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let bytes = path.to_bytes();
    if bytes.starts_with(b"/") {
        return path.to_owned();
    }
    std::env::current_dir()
        .ok()
        .and_then(|d| {
            CString::new(
                d.join(std::ffi::OsStr::from_bytes(bytes))
                    .into_os_string()
                    .into_vec(),
            )
            .ok()
        })
        .unwrap_or_else(|| path.to_owned())
}

/// The `atexit` hook: the stats JSON to `TSLAB_STATS_FILE`, by the process that read the
/// variable only (a forked child that exits without `exec` writes nothing; a program it
/// `exec`s reads the variable again and writes its own).
extern "C" fn write_stats_at_exit() {
    let Some((path, pid)) = STATS_FILE.get() else {
        return;
    };
    // SAFETY: getpid has no precondition.
    if unsafe { libc::getpid() } != *pid {
        return;
    }
    if let Err(e) = crate::stats::write_file(path) {
        crate::stats::stderr_line(format_args!(
            "cannot write the stats to {}: {e}",
            path.to_string_lossy()
        ));
    }
}

/// The library's constructor: [`init`] before `main`.
#[cfg(not(test))]
#[used]
#[unsafe(link_section = ".init_array")]
static CONSTRUCTOR: extern "C" fn() = {
    extern "C" fn constructor() {
        init();
    }
    constructor
};
