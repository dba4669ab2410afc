//! How a command fails: an exit code and one line naming what was wrong.

use std::fmt;

/// Exit code: a check failed (problems found, a digest did not match, a refusal).
pub const CHECK_FAILED: u8 = cli_support::exit::CHECK_FAILED;
/// Exit code: usage or input error (bad arguments, missing or malformed block, I/O, timeout).
pub const USAGE: u8 = cli_support::exit::BAD_INPUT;

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
        Fail::new(cli_support::exit::signal(signal), msg)
    }

    /// Whether `main` prints nothing: standard output was closed by its reader (exit 0).
    pub fn is_quiet(&self) -> bool {
        self.msg.is_empty() && self.code == cli_support::exit::OK
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

impl From<cli_support::StdoutError> for Fail {
    /// A closed standard output ends the command quietly with 0; any other write error is 2.
    fn from(e: cli_support::StdoutError) -> Fail {
        if e.is_closed() {
            Fail {
                code: e.exit_code(),
                msg: String::new(),
            }
        } else {
            Fail::new(e.exit_code(), e.to_string())
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
/// message, bytes.
pub const CLIP: usize = cli_support::QUOTE_MAX;

/// `s` cut to [`CLIP`] bytes ([`cli_support::clip`]): messages never quote unbounded data.
pub fn clip(s: &str) -> String {
    cli_support::clip(s, CLIP).into_owned()
}
