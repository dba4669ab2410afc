//! The stats JSON (schema version 1, `schemas/stats_v1.schema.json`, the document `tslab`
//! reads): rendered by [`tslab::Snapshot`] from the process-wide allocator's
//! [`temporal_slab::StatsSnapshot`], written to a caller's buffer, a file descriptor or the
//! `TSLAB_STATS_FILE` at exit. Every allocation here goes through
//! [`crate::next::LibcAlloc`] (glibc), not through the slab it describes.

use std::ffi::CStr;
use std::io::{self, Write};
use std::os::fd::{FromRawFd, OwnedFd};

use temporal_slab::global;

/// The stats JSON of the process-wide allocator, pretty-printed, or `None` when there is no
/// allocator (disabled, or its creation failed).
pub(crate) fn render() -> Option<Vec<u8>> {
    let alloc = global::instance()?;
    let snapshot = tslab::Snapshot::of(alloc);
    // A Snapshot holds only numbers and strings: serializing it cannot fail, but an error
    // still becomes `None` rather than a panic across the C boundary.
    let mut json = serde_json::to_vec_pretty(&snapshot).ok()?;
    json.push(b'\n');
    Some(json)
}

/// Writes all of `bytes` to `fd`, retrying on `EINTR` and short writes.
pub(crate) fn write_all_fd(fd: libc::c_int, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a live slice of `bytes.len()` bytes; `fd` is the caller's.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

/// Writes the stats JSON to `path`: created (mode 0644 before the umask) or truncated, never
/// through a symbolic link in its last component (`O_NOFOLLOW`: the open fails with `ELOOP`).
pub(crate) fn write_file(path: &CStr) -> io::Result<()> {
    let json = render().ok_or_else(|| io::Error::other("no allocator"))?;
    // SAFETY: `path` is NUL-terminated; the flags ask for a new descriptor we own.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o644 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and nothing else owns it; OwnedFd closes it once.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    write_all_fd(std::os::fd::AsRawFd::as_raw_fd(&fd), &json)
}

/// One line on stderr, `tslab_malloc: <message>`, ignoring a failed write (never a panic:
/// `eprintln!` panics when stderr is closed).
pub(crate) fn stderr_line(message: std::fmt::Arguments<'_>) {
    let mut line = Vec::with_capacity(128);
    let _ = writeln!(line, "tslab_malloc: {message}");
    let _ = write_all_fd(libc::STDERR_FILENO, &line);
}
