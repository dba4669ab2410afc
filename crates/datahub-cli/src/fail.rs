//! How a command fails: an exit code and one line naming what was wrong.

use std::fmt;

/// Exit code: a check failed (problems found, a digest did not match, a refusal).
pub const CHECK_FAILED: u8 = 1;
/// Exit code: usage or input error (bad arguments, missing or malformed block, I/O, timeout).
pub const USAGE: u8 = 2;

/// A failed command.
#[derive(Debug)]
pub struct Fail {
    /// Process exit code.
    pub code: u8,
    /// What was wrong, one line.
    msg: String,
}

impl Fail {
    /// Exit 2 with `msg`.
    pub fn usage(msg: impl Into<String>) -> Fail {
        Fail::new(USAGE, msg)
    }

    /// Exit 128 + `signal` (the shell's convention for a program a signal stopped, as
    /// `mmsb trace` does) with `msg`: the command caught SIGINT/SIGTERM and cleaned up.
    pub fn interrupted(signal: i32, msg: impl Into<String>) -> Fail {
        Fail::new(u8::try_from(128 + signal).unwrap_or(130), msg)
    }

    /// Exit 1 with `msg`.
    pub fn check(msg: impl Into<String>) -> Fail {
        Fail::new(CHECK_FAILED, msg)
    }

    fn new(code: u8, msg: impl Into<String>) -> Fail {
        // One line, whatever the source error printed, and `main` adds the one prefix.
        let mut msg = msg.into().replace(['\n', '\r'], " ");
        while let Some(rest) = msg.strip_prefix("datahub: ") {
            msg = rest.to_owned();
        }
        Fail { code, msg }
    }

    /// A library error on block `name`: integrity failures exit 1, everything else 2.
    pub fn block(name: &str, e: datahub::Error) -> Fail {
        use datahub::Error as E;
        match e {
            E::BadMagic { expected, found } => Fail::usage(format!(
                "block {name:?}: bad magic {found:#018x} (expected {expected:#018x}): not a DataHub block"
            )),
            // These name the block themselves.
            E::NotFound { .. }
            | E::NotReady { .. }
            | E::AlreadyExists { .. }
            | E::NotRegular { .. }
            | E::NoSpace { .. }
            | E::Busy { .. }
            | E::BlockTruncated { .. }
            | E::InvalidName { .. } => Fail::usage(e.to_string()),
            E::ChecksumMismatch { .. }
            | E::ChecksumMissing { .. }
            | E::ValidationFailed { .. }
            | E::Overrun { .. } => Fail::check(format!("block {name:?}: {e}")),
            E::OwnerAlive { .. } => Fail::check(format!("block {name:?}: {e}")),
            other => Fail::usage(format!("block {name:?}: {other}")),
        }
    }
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

/// Result of a command.
pub type Result<T = ()> = std::result::Result<T, Fail>;

/// Longest piece of outside data (a name or reason from a message, a journal) quoted in a
/// message, characters.
pub const CLIP: usize = 64;

/// `s` cut to [`CLIP`] characters (with `...` when cut): messages never quote unbounded data.
pub fn clip(s: &str) -> String {
    match s.char_indices().nth(CLIP) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}
