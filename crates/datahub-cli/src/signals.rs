//! SIGINT/SIGTERM as a flag: what `pub`, `sub`, `broker` and `exporter` poll to stop cleanly.

use std::sync::atomic::{AtomicI32, Ordering};

/// The signal that asked the command to stop (0: none).
static SIGNALLED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNALLED.store(sig, Ordering::SeqCst);
}

/// Installs the SIGINT/SIGTERM handler (no SA_RESTART: a blocking read of standard input
/// returns EINTR and the flag is seen).
pub fn catch() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: an all-zero sigaction is valid (empty mask, no flags); the handler only
        // stores to an atomic, which is async-signal-safe.
        unsafe {
            let mut a: libc::sigaction = std::mem::zeroed();
            a.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut a.sa_mask);
            libc::sigaction(sig, &a, std::ptr::null_mut());
        }
    }
}

/// The signal caught so far (0: none).
pub fn caught() -> i32 {
    SIGNALLED.load(Ordering::SeqCst)
}

/// `"SIGINT"` or `"SIGTERM"` (the two signals [`catch`] handles), for messages.
pub fn name(sig: i32) -> &'static str {
    if sig == libc::SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    }
}
