//! The command-line vocabulary `tslab`, `datahub`, `mmsb` and `bench` share, in one place so
//! the four tools cannot drift apart.
//!
//! - **Durations** ([`parse_duration`]): every duration flag takes a humantime string (`500ms`,
//!   `20s`, `5m`, `1m 30s`) or a bare number of seconds (`20`, `0.5`), so a number that worked
//!   before still works. Between 0 and [`MAX_DURATION_SECS`] seconds: a wait added to
//!   `Instant::now()` can never overflow.
//! - **Exit codes** ([`exit`]): 0 ok; 1 a check failed; 2 bad input (arguments, files, blocks,
//!   logs that cannot be read, output that cannot be written); 128 + signal when SIGINT or
//!   SIGTERM stopped a command that cleaned up first ([`exit::signal`]).
//! - **Standard output** ([`stdout`]): writes that report a closed pipe
//!   ([`StdoutError::Closed`]) apart from any other failure, so `tool ... | head -1` ends the
//!   tool quietly with exit 0, after its destructors ran, rather than with a panic or a message.
//! - **Messages** ([`quote`], [`one_line`]): user data quoted in a message is cut to a bounded
//!   length and escaped to one line.
//! - **Usage errors** ([`usage_error`]): clap's errors mapped to the exit codes, a rejected value
//!   (a malformed duration) as one line.
//!
//! - **Tests** ([`testing`]): the pipe and closed-stdout fixtures the tools' end-to-end tests
//!   of this vocabulary share.
//!
//! The crate holds no policy of any tool; it is the vocabulary, not the commands.

use std::borrow::Cow;
use std::time::Duration;

pub mod stdout;
pub mod testing;

pub use stdout::StdoutError;

/// Exit codes, the same in every tool.
pub mod exit {
    /// The command did what it was asked and every check passed.
    pub const OK: u8 = 0;
    /// A check failed: problems found, a digest or a comparison did not match, a refusal.
    pub const CHECK_FAILED: u8 = 1;
    /// Bad input: arguments, a missing or malformed file, block or log, an output that cannot
    /// be written, a timeout.
    pub const BAD_INPUT: u8 = 2;

    /// The exit code of a command SIGINT or SIGTERM stopped after it cleaned up: 128 + signal,
    /// the shell's convention (130 for SIGINT, 143 for SIGTERM). A number outside 1..=127 gives
    /// 130.
    ///
    /// # Examples
    /// ```
    /// assert_eq!(cli_support::exit::signal(2), 130);
    /// assert_eq!(cli_support::exit::signal(15), 143);
    /// ```
    pub fn signal(signal: i32) -> u8 {
        match u8::try_from(signal) {
            Ok(s @ 1..=127) => 128 + s,
            _ => 130,
        }
    }
}

/// Longest duration a flag accepts, seconds (about 31 years).
pub const MAX_DURATION_SECS: f64 = 1e9;

/// Parses a duration flag: a humantime string (`500ms`, `20s`, `5m`, `1h 30m`) or a bare,
/// possibly fractional, number of seconds (`20`, `0.5`). For clap's `value_parser`.
///
/// # Errors
/// A one-line message quoting the input (bounded) for anything else, a negative number, or
/// more than [`MAX_DURATION_SECS`].
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use cli_support::parse_duration;
/// assert_eq!(parse_duration("20"), Ok(Duration::from_secs(20)));
/// assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
/// assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
/// assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
/// assert!(parse_duration("20 parsecs").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let too_long = || {
        format!(
            "{} is longer than {MAX_DURATION_SECS} seconds",
            quote(s, QUOTE_MAX)
        )
    };
    if let Ok(secs) = t.parse::<f64>() {
        if !secs.is_finite() || secs < 0.0 {
            return Err(format!(
                "{} is not a duration (a negative or infinite number)",
                quote(s, QUOTE_MAX)
            ));
        }
        if secs > MAX_DURATION_SECS {
            return Err(too_long());
        }
        return Ok(Duration::from_secs_f64(secs));
    }
    match humantime::parse_duration(t) {
        Ok(d) if d.as_secs_f64() > MAX_DURATION_SECS => Err(too_long()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!(
            "{} is not a duration like 500ms, 20s or 5m, or a number of seconds: {}",
            quote(s, QUOTE_MAX),
            one_line(&e.to_string())
        )),
    }
}

/// Longest piece of user data [`parse_duration`] and the tools quote in a message, bytes.
pub const QUOTE_MAX: usize = 64;

/// `s` cut to at most `max` bytes (at a character boundary) with `...(N more bytes)` when cut.
///
/// # Examples
/// ```
/// assert_eq!(cli_support::clip("abcdef", 3), "abc...(3 more bytes)");
/// assert_eq!(cli_support::clip("abc", 3), "abc");
/// ```
pub fn clip(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}...({} more bytes)", &s[..end], s.len() - end))
}

/// `s` in double quotes, [`clip`]ped to `max` bytes, with quotes, backslashes and control
/// characters (line feeds included) escaped: user data in a message stays one bounded line.
///
/// # Examples
/// ```
/// assert_eq!(cli_support::quote("a\nb", 64), r#""a\nb""#);
/// ```
pub fn quote(s: &str, max: usize) -> String {
    match clip(s, max) {
        Cow::Borrowed(b) => format!("{b:?}"),
        Cow::Owned(_) => {
            let mut end = max;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            format!("{:?}...({} more bytes)", &s[..end], s.len() - end)
        }
    }
}

/// `msg` on one line: line feeds and carriage returns become spaces.
pub fn one_line(msg: &str) -> String {
    msg.replace(['\n', '\r'], " ")
}

/// What `main` does with a [`clap::Error`]: prints it and returns the exit code. `--help` and
/// `--version` print to standard output and give 0; a rejected value (a malformed duration, a
/// number out of range) is one line, `TOOL: <what was wrong>`, exit 2; other usage errors keep
/// clap's usage hint, exit 2.
pub fn usage_error(tool: &str, e: &clap::Error) -> u8 {
    use clap::error::ErrorKind;
    if !e.use_stderr() {
        // Help and version: a closed standard output is no error either.
        let _ = e.print();
        return exit::OK;
    }
    if matches!(
        e.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or("invalid arguments");
        let first = first.strip_prefix("error: ").unwrap_or(first);
        eprintln!("{tool}: {}", clip(first, 2048));
        return exit::BAD_INPUT;
    }
    let _ = e.print();
    exit::BAD_INPUT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_numbers_are_seconds_and_humantime_is_accepted() {
        assert_eq!(parse_duration("20"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration(" 20 "), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
    }

    #[test]
    fn malformed_negative_and_huge_durations_are_refused_in_one_bounded_line() {
        for bad in [
            "",
            "-1",
            "NaN",
            "inf",
            "1e10",
            "20 parsecs",
            "5 fortnights",
            "ms",
            "10000000000h",
        ] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(!e.contains('\n'), "{e}");
        }
        let long = "x".repeat(10_000);
        let e = parse_duration(&long).unwrap_err();
        assert!(e.len() < 300, "{}", e.len());
        assert!(parse_duration("a\nb").unwrap_err().lines().count() == 1);
    }

    #[test]
    fn signal_codes_follow_the_shell() {
        assert_eq!(exit::signal(2), 130);
        assert_eq!(exit::signal(15), 143);
        assert_eq!(exit::signal(0), 130);
        assert_eq!(exit::signal(300), 130);
    }

    #[test]
    fn quote_is_bounded_and_one_line() {
        let q = quote(&"é".repeat(100), 65);
        assert!(q.starts_with('"') && q.contains("more bytes"), "{q}");
        assert_eq!(quote("a\"b", 10), r#""a\"b""#);
    }
}
