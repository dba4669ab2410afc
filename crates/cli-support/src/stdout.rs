//! Standard output for a tool whose reader may go away (`tool ... | head -1`).
//!
//! Rust ignores SIGPIPE, so a write to a closed pipe fails with `EPIPE` and `println!` panics
//! (exit 101). These functions return [`StdoutError::Closed`] instead; a tool's error type maps
//! it to a quiet exit 0 ([`StdoutError::exit_code`]: no message), and the command unwinds
//! normally, so whatever it holds (a temporary log, a block registration) is cleaned up by its
//! destructors. Every other write error is [`StdoutError::Write`], whose message names
//! "standard output", exit 2.
//!
//! After the first `Closed`, later writes return `Closed` again without touching the
//! descriptor.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::exit;

/// Name of standard output in messages.
pub const NAME: &str = "standard output";

/// Set once a write found the pipe closed.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// A write to standard output that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StdoutError {
    /// The reader closed the pipe: not a failure of the command, which ends quietly with 0.
    #[error("standard output closed")]
    Closed,
    /// Any other write error.
    #[error("standard output: {0}")]
    Write(#[source] std::io::Error),
}

impl StdoutError {
    /// 0 for [`StdoutError::Closed`] (nothing is printed), 2 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            StdoutError::Closed => exit::OK,
            StdoutError::Write(_) => exit::BAD_INPUT,
        }
    }

    /// Whether this is [`StdoutError::Closed`]: the tool prints no message.
    pub fn is_closed(&self) -> bool {
        matches!(self, StdoutError::Closed)
    }

    /// Classifies an I/O error of a write to standard output.
    pub fn from_io(e: std::io::Error) -> StdoutError {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            // Relaxed: a sticky flag; no other memory depends on it.
            CLOSED.store(true, Ordering::Relaxed);
            StdoutError::Closed
        } else {
            StdoutError::Write(e)
        }
    }
}

/// Writes `bytes` to standard output and flushes.
///
/// # Errors
/// [`StdoutError::Closed`] when the reader is gone, [`StdoutError::Write`] otherwise.
pub fn write(bytes: &[u8]) -> Result<(), StdoutError> {
    // Relaxed: see `from_io`.
    if CLOSED.load(Ordering::Relaxed) {
        return Err(StdoutError::Closed);
    }
    let mut o = std::io::stdout().lock();
    o.write_all(bytes)
        .and_then(|()| o.flush())
        .map_err(StdoutError::from_io)
}

/// Writes `text` to standard output.
///
/// # Errors
/// As [`write()`].
pub fn print(text: &str) -> Result<(), StdoutError> {
    write(text.as_bytes())
}

/// Writes `text` and a line feed to standard output.
///
/// # Errors
/// As [`write()`].
pub fn line(text: &str) -> Result<(), StdoutError> {
    let mut buf = String::with_capacity(text.len() + 1);
    buf.push_str(text);
    buf.push('\n');
    write(buf.as_bytes())
}

/// Whether a write already found standard output closed.
pub fn closed() -> bool {
    // Relaxed: see `from_io`.
    CLOSED.load(Ordering::Relaxed)
}

/// For code that prints with `println!` and cannot be routed through [`print()`]: a panic hook
/// that ends the process quietly with exit 0 when the panic is `println!`'s "failed printing to
/// stdout" on a closed pipe, and leaves every other panic to the previous hook. Destructors do
/// not run (the process exits from the hook), so a tool uses it only where its output comes
/// after its work, as `bench` prints its tables at the end.
pub fn exit_quietly_on_println_broken_pipe() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        let broken = std::io::Error::from(std::io::ErrorKind::BrokenPipe).to_string();
        if text.starts_with("failed printing to stdout")
            && (text.contains(&broken) || text.contains("os error 32"))
        {
            std::process::exit(i32::from(exit::OK));
        }
        previous(info);
    }));
}
