//! Where snapshots come from: a file, standard input, or a live endpoint.
//!
//! A SOURCE on the command line is `-` (stdin), `http://host:port[/path]` (a live endpoint;
//! `/stats.json` is fetched when no path is given) or a file path. Standard input can be read
//! only once, so commands that sample repeatedly (`watch`, `top --window`, `serve`) re-read files
//! and URLs but reuse the one stdin document.
//!
//! ## Bounded reads
//! Every input goes through one bounded reader ([`read_bounded`]): a document larger than
//! [`MAX_INPUT_BYTES`] is refused with [`Error::TooLarge`] after reading at most one byte past
//! the bound, whatever it is (`/dev/zero`, `yes |`, a 10 GB file, an endpoint that never stops
//! sending). Files are opened by [`open_regular`]: non-blocking (so a FIFO named as a file
//! cannot block the open), then `fstat`-checked, and anything but a regular file is refused
//! with [`Error::NotRegularFile`]. The last component of a path is opened with `O_NOFOLLOW`: a
//! symbolic link is refused, not followed (name its target instead), as every tool of this
//! workspace does (`docs/failure-model/README.md`). Standard input is read to its end with the
//! same bound, and fails when no byte arrives for [`STDIN_IDLE_TIMEOUT`]: `sleep 1000 | tslab
//! stats -` ends with an error instead of waiting for ever.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::snapshot::{SCHEMA_JSON, Snapshot};
use crate::{Error, Result, STDIN_NAME};

/// How long an HTTP fetch may take, connect to last byte.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest snapshot document read from a file, standard input or a URL, bytes (64 MiB; a
/// snapshot is a few hundred KiB).
pub const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;

/// Longest wait for the next byte of standard input.
pub const STDIN_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A reader that waits at most `idle` for each read to have data (`poll(2)` on its descriptor).
#[derive(Debug)]
pub struct IdleTimeout<R> {
    inner: R,
    idle: Duration,
}

impl<R> IdleTimeout<R> {
    /// Wraps `inner`.
    pub fn new(inner: R, idle: Duration) -> IdleTimeout<R> {
        IdleTimeout { inner, idle }
    }
}

impl<R: Read + std::os::fd::AsRawFd> Read for IdleTimeout<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut fds = libc::pollfd {
            fd: self.inner.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(self.idle.as_millis()).unwrap_or(libc::c_int::MAX);
        loop {
            // SAFETY: `fds` is one valid, initialised pollfd and we pass a count of 1.
            let n = unsafe { libc::poll(&mut fds, 1, ms) };
            match n {
                0 => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "no input for {} (timed out)",
                            humantime::format_duration(self.idle)
                        ),
                    ));
                }
                n if n > 0 => return self.inner.read(buf),
                _ => {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
    }
}

/// Reads `reader` to its end, refusing more than `limit` bytes.
///
/// # Errors
/// [`Error::TooLarge`] past `limit` (having read `limit + 1` bytes at most), [`Error::Io`]
/// naming `origin` when a read fails.
pub fn read_bounded(reader: impl Read, limit: u64, origin: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| Error::Io {
            path: origin.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > limit {
        return Err(Error::TooLarge {
            origin: origin.to_owned(),
            limit,
        });
    }
    Ok(bytes)
}

/// What a file type is called in [`Error::NotRegularFile`].
fn kind_name(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_socket() {
        "socket"
    } else if t.is_symlink() {
        "symbolic link"
    } else {
        "special file"
    }
}

/// How [`open_regular`] treats a final symbolic link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Symlinks {
    /// Follow it (for a library user whose paths are trusted; tslab itself never does).
    Follow,
    /// Refuse it (`O_NOFOLLOW`), with [`Error::NotRegularFile`].
    Refuse,
}

/// Opens `path` for reading without blocking (`O_NONBLOCK`, so opening a FIFO returns at once)
/// and checks with `fstat` that it is a regular file.
///
/// # Errors
/// [`Error::Io`] when it cannot be opened, [`Error::NotRegularFile`] for anything but a regular
/// file (a symbolic link too, with [`Symlinks::Refuse`]).
pub fn open_regular(path: &Path, symlinks: Symlinks) -> Result<File> {
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    if symlinks == Symlinks::Refuse {
        flags |= libc::O_NOFOLLOW;
    }
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if symlinks == Symlinks::Refuse && e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Error::NotRegularFile {
                path: path.display().to_string(),
                kind: "symbolic link, not followed",
            });
        }
        Err(e) => return Err(io(e)),
    };
    let meta = file.metadata().map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(Error::NotRegularFile {
            path: path.display().to_string(),
            kind: kind_name(meta.file_type()),
        });
    }
    Ok(file)
}

/// Reads the regular file `path` ([`open_regular`]), refusing more than `limit` bytes (by its
/// size before reading, and by [`read_bounded`] should it grow meanwhile).
///
/// # Errors
/// As [`open_regular`] and [`read_bounded`].
pub fn read_file_bounded(path: &Path, symlinks: Symlinks, limit: u64) -> Result<Vec<u8>> {
    let file = open_regular(path, symlinks)?;
    let origin = path.display().to_string();
    let len = file
        .metadata()
        .map_err(|source| Error::Io {
            path: origin.clone(),
            source,
        })?
        .len();
    if len > limit {
        return Err(Error::TooLarge { origin, limit });
    }
    read_bounded(file, limit, &origin)
}

fn utf8(bytes: Vec<u8>, origin: &str) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| Error::Io {
        path: origin.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not valid UTF-8"),
    })
}

/// A parsed SOURCE argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `-`
    Stdin,
    /// `http://...`: the full URL of the stats JSON.
    Url(String),
    /// Anything else.
    File(PathBuf),
}

impl std::str::FromStr for Source {
    type Err = Error;
    fn from_str(s: &str) -> Result<Source> {
        if s == "-" {
            return Ok(Source::Stdin);
        }
        if let Some(rest) = s.strip_prefix("http://") {
            let url = if rest.contains('/') && !rest.ends_with('/') {
                s.to_owned()
            } else {
                format!("http://{}/stats.json", rest.trim_end_matches('/'))
            };
            return Ok(Source::Url(url));
        }
        if s.starts_with("https://") {
            return Err(Error::Usage(format!(
                "{s}: https is not supported; live endpoints serve plain http on a local address"
            )));
        }
        Ok(Source::File(PathBuf::from(s)))
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Stdin => f.write_str(STDIN_NAME),
            Source::Url(u) => f.write_str(u),
            Source::File(p) => write!(f, "{}", p.display()),
        }
    }
}

impl Source {
    /// Whether reading again can give a newer snapshot (files and URLs can, stdin can't).
    pub fn can_resample(&self) -> bool {
        !matches!(self, Source::Stdin)
    }

    /// Reads the raw document.
    ///
    /// # Errors
    /// [`Error::Io`] for unreadable files or stdin, [`Error::NotRegularFile`] for a path that
    /// is not a regular file, [`Error::TooLarge`] past [`MAX_INPUT_BYTES`], [`Error::Http`] for
    /// an unreachable URL, a non-200 status or a timeout ([`HTTP_TIMEOUT`]).
    pub fn read_text(&self) -> Result<String> {
        let origin = self.to_string();
        match self {
            Source::Stdin => utf8(
                read_bounded(
                    IdleTimeout::new(std::io::stdin().lock(), STDIN_IDLE_TIMEOUT),
                    MAX_INPUT_BYTES,
                    &origin,
                )?,
                &origin,
            ),
            Source::File(path) => utf8(
                read_file_bounded(path, Symlinks::Refuse, MAX_INPUT_BYTES)?,
                &origin,
            ),
            Source::Url(url) => fetch(url),
        }
    }

    /// Reads and parses one snapshot.
    ///
    /// # Errors
    /// As [`Source::read_text`] and [`Snapshot::from_json`].
    pub fn snapshot(&self) -> Result<Snapshot> {
        Snapshot::from_json(&self.read_text()?, &self.to_string())
    }

    /// As [`Source::snapshot`], but a file whose text does not parse is read once more after
    /// `delay` before the error is reported: a writer that rewrites the file in place (rather
    /// than by rename, as tslab's own outputs are written) can be caught half-way. `watch` uses it.
    ///
    /// # Errors
    /// As [`Source::snapshot`], from the second read.
    pub fn snapshot_retrying_torn(&self, delay: Duration) -> Result<Snapshot> {
        let file = matches!(self, Source::File(_));
        retry_once_if_torn(|| self.snapshot(), file, delay)
    }
}

/// Calls `read`; when it fails with a parse error and `retry` is set, sleeps `delay` and
/// returns a second call's result instead.
fn retry_once_if_torn(
    mut read: impl FnMut() -> Result<Snapshot>,
    retry: bool,
    delay: Duration,
) -> Result<Snapshot> {
    match read() {
        Err(Error::Json { .. } | Error::MissingSchemaVersion { .. }) if retry => {
            std::thread::sleep(delay);
            read()
        }
        r => r,
    }
}

fn fetch(url: &str) -> Result<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(HTTP_TIMEOUT))
        .build()
        .into();
    let http = |message: String| Error::Http {
        url: url.to_owned(),
        message,
    };
    let mut response = agent.get(url).call().map_err(|e| http(e.to_string()))?;
    response
        .body_mut()
        .with_config()
        .limit(MAX_INPUT_BYTES)
        .read_to_string()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => Error::TooLarge {
                origin: url.to_owned(),
                limit: MAX_INPUT_BYTES,
            },
            e => http(format!("reading the body: {e}")),
        })
}

/// Checks `text` against `schemas/stats_v1.schema.json`, then parses it.
///
/// # Errors
/// [`Error::Json`] for malformed JSON, [`Error::Schema`] with the JSON pointer of the first
/// failing value, and the version errors of [`Snapshot::from_json`].
pub fn validate(text: &str, origin: &str) -> Result<Snapshot> {
    let instance: serde_json::Value = serde_json::from_str(text).map_err(|source| Error::Json {
        origin: origin.to_owned(),
        source,
    })?;
    if instance
        .get("schema_version")
        .and_then(serde_json::Value::as_u64)
        != Some(u64::from(crate::snapshot::SCHEMA_VERSION))
    {
        // Missing or unknown version: the parser's error says which.
        return Snapshot::from_json(text, origin);
    }
    let schema: serde_json::Value =
        serde_json::from_str(SCHEMA_JSON).expect("the embedded schema is valid JSON");
    let validator = jsonschema::validator_for(&schema).expect("the embedded schema compiles");
    if let Some(err) = validator.iter_errors(&instance).next() {
        return Err(Error::Schema {
            origin: origin.to_owned(),
            instance_path: err.instance_path().to_string(),
            message: err.to_string(),
        });
    }
    Snapshot::from_json(text, origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn torn() -> Error {
        Error::Json {
            origin: "f".into(),
            source: serde_json::from_str::<serde_json::Value>("{").unwrap_err(),
        }
    }

    fn good() -> Snapshot {
        let alloc = temporal_slab::SlabAllocator::new().expect("reserve");
        Snapshot::of(&alloc)
    }

    #[test]
    fn a_torn_file_read_is_retried_once() {
        let mut calls = 0;
        let snap = good();
        let r = retry_once_if_torn(
            || {
                calls += 1;
                if calls == 1 {
                    Err(torn())
                } else {
                    Ok(snap.clone())
                }
            },
            true,
            Duration::ZERO,
        );
        assert!(r.is_ok());
        assert_eq!(calls, 2);
        // Only once: a document that stays broken is reported.
        let mut calls = 0;
        let r = retry_once_if_torn(
            || {
                calls += 1;
                Err(torn())
            },
            true,
            Duration::ZERO,
        );
        assert!(matches!(r, Err(Error::Json { .. })));
        assert_eq!(calls, 2);
        // Not for sources that are not files, nor for errors that are not parse errors.
        let mut calls = 0;
        let _ = retry_once_if_torn(
            || {
                calls += 1;
                Err(torn())
            },
            false,
            Duration::ZERO,
        );
        assert_eq!(calls, 1);
    }

    #[test]
    fn bounded_read_refuses_one_byte_past_the_limit() {
        assert_eq!(read_bounded(&b"abcd"[..], 4, "x").unwrap(), b"abcd");
        let e = read_bounded(std::io::repeat(b'y'), 1000, "x").unwrap_err();
        assert_eq!(e.to_string(), "x: input larger than 1000 bytes");
    }
}
