//! CURVE key files: the ZPL certificates that czmq's `zcert` and pyzmq's
//! `zmq.auth.create_certificates` write and `zmq.auth.load_certificate` reads.
//!
//! A key pair is two files:
//!
//! ```text
//! NAME.key         (public; mode 0644)      NAME.key_secret   (secret; mode 0600)
//! #   comment lines ...                     #   comment lines ...
//!                                           
//! metadata                                  metadata
//! curve                                     curve
//!     public-key = "<40 Z85 characters>"        public-key = "<40 Z85 characters>"
//!                                               secret-key = "<40 Z85 characters>"
//! ```
//!
//! The parser is strict and bounded, and reads only that shape:
//! - at most [`MAX_KEY_FILE`] bytes of UTF-8, opened with `O_NOFOLLOW` (a symbolic link is
//!   refused) and checked to be a regular file;
//! - lines are blank, comments (`#` after optional indentation), a top-level section name
//!   (`metadata` or `curve`, each at most once), or an indented `name = value` entry inside a
//!   section; `\r\n` line ends are accepted;
//! - `metadata` entries are checked for shape and otherwise ignored; `curve` holds exactly
//!   `public-key` and, in a secret file, `secret-key`, each once, each 40 Z85 characters
//!   (quoted with `"` or `'`, or bare), which decode to 32 bytes;
//! - a file holding a `secret-key` must not be readable, writable or executable by group or
//!   other (as ssh refuses a private key others can read): `chmod 600 FILE`.
//!
//! pyzmq's `create_certificates` leaves the secret file at the umask's mode (usually 0644);
//! `chmod 600` it before giving it to datahub. Every error is one line naming the file.
//!
//! A broker's key directory ([`ServerKeys::load_dir`]) holds `server.key_secret` (the
//! broker's pair) and `allowed/*.key` (one public key per client allowed in); neither the
//! directory nor `allowed/` may be writable by group or other.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Largest key file read, bytes.
pub const MAX_KEY_FILE: u64 = 4096;
/// Most client keys an allowlist directory may hold.
pub const MAX_ALLOWED_KEYS: usize = 10_000;
/// The broker's key pair in a key directory.
pub const SERVER_SECRET_FILE: &str = "server.key_secret";
/// The directory of allowed client public keys in a key directory.
pub const ALLOWED_DIR: &str = "allowed";
/// Suffix of a public key file.
pub const PUBLIC_SUFFIX: &str = ".key";
/// Suffix of a secret key file.
pub const SECRET_SUFFIX: &str = ".key_secret";

const Z85: &[u8; 85] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/// Z85 text of `bytes` (ZeroMQ RFC 32); `bytes.len()` must be a multiple of 4.
fn z85_encode(bytes: &[u8]) -> String {
    debug_assert_eq!(bytes.len() % 4, 0);
    let mut out = String::with_capacity(bytes.len() / 4 * 5);
    for chunk in bytes.chunks_exact(4) {
        let mut v = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let mut digits = [0u8; 5];
        for d in digits.iter_mut().rev() {
            *d = Z85[(v % 85) as usize];
            v /= 85;
        }
        out.extend(digits.iter().map(|&c| c as char));
    }
    out
}

/// The 32 bytes of a 40-character Z85 key, or what is wrong with it.
fn z85_decode_key(text: &str) -> Result<[u8; 32], String> {
    if text.len() != 40 {
        return Err(format!(
            "a key is 40 Z85 characters, found {} bytes",
            text.len()
        ));
    }
    let mut out = [0u8; 32];
    for (i, chunk) in text.as_bytes().chunks_exact(5).enumerate() {
        let mut v: u64 = 0;
        for &c in chunk {
            let Some(d) = Z85.iter().position(|&z| z == c) else {
                return Err(format!(
                    "{:?} is not a Z85 character",
                    char::from(c).escape_default().to_string()
                ));
            };
            v = v * 85 + d as u64;
        }
        let v = u32::try_from(v).map_err(|_| "a Z85 group is out of range".to_owned())?;
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_be_bytes());
    }
    Ok(out)
}

/// A CURVE public key (32 bytes; shown as 40 Z85 characters).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// From its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> PublicKey {
        PublicKey(bytes)
    }

    /// From its 40 Z85 characters.
    ///
    /// # Errors
    /// What is wrong with `text`, one line.
    pub fn from_z85(text: &str) -> Result<PublicKey, String> {
        z85_decode_key(text).map(PublicKey)
    }

    /// Its 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Its 40 Z85 characters.
    pub fn z85(&self) -> String {
        z85_encode(&self.0)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.z85())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.z85())
    }
}

/// A CURVE key pair. `Debug` shows the public half only.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    public: PublicKey,
    secret: [u8; 32],
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .field("secret", &"<hidden>")
            .finish()
    }
}

impl KeyPair {
    /// A new pair from libzmq's `zmq_curve_keypair` (its random source).
    ///
    /// # Errors
    /// libzmq's error (`ENOTSUP` when it was built without CURVE).
    pub fn generate() -> Result<KeyPair, zmq::Error> {
        let p = zmq::CurveKeyPair::new()?;
        Ok(KeyPair {
            public: PublicKey(p.public_key),
            secret: p.secret_key,
        })
    }

    /// From both halves' bytes. Whether they belong together is not checked: a mismatched
    /// pair fails every CURVE handshake.
    pub fn from_bytes(public: [u8; 32], secret: [u8; 32]) -> KeyPair {
        KeyPair {
            public: PublicKey(public),
            secret,
        }
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The secret half's bytes (for `ZMQ_CURVE_SECRETKEY`).
    pub(crate) fn secret_bytes(&self) -> &[u8; 32] {
        &self.secret
    }
}

/// What reading or writing a key file failed with; every message names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The file could not be opened, read, created or written.
    #[error("key file {}: {what}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operation.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// A symbolic link, directory, FIFO, ... where a key file was expected.
    #[error("key file {}: {found} (expected a regular file, not a symbolic link)", path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is.
        found: &'static str,
    },
    /// Larger than [`MAX_KEY_FILE`].
    #[error("key file {}: larger than {MAX_KEY_FILE} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A secret key file others may read.
    #[error(
        "key file {}: holds a secret key but has mode {mode:04o} (group or other may use it); run chmod 600 on it",
        path.display()
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Not the certificate format.
    #[error("key file {}: line {line}: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// 1-based line (0: the file as a whole).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A well-formed file without the key asked for.
    #[error("key file {}: no {what} (expected a `curve` section with `{what} = \"...\"`)", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// `public-key` or `secret-key`.
        what: &'static str,
    },
    /// `write_key_pair` would overwrite it.
    #[error("key file {}: already exists (refusing to overwrite it)", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A key directory or allowlist that is unusable.
    #[error("key directory {}: {reason}", path.display())]
    Directory {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The keys of one certificate file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// `curve.public-key`.
    pub public: PublicKey,
    /// `curve.secret-key`, in a secret file.
    secret: Option<[u8; 32]>,
}

impl Certificate {
    /// Whether it holds a secret key.
    pub fn has_secret(&self) -> bool {
        self.secret.is_some()
    }

    /// The pair, when it holds a secret key.
    pub fn key_pair(&self) -> Option<KeyPair> {
        self.secret.map(|s| KeyPair {
            public: self.public,
            secret: s,
        })
    }
}

#[derive(PartialEq)]
enum Section {
    None,
    Metadata,
    Curve,
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
}

/// Parses certificate text (the format in the module docs). Errors are `(line, reason)`,
/// line 0 for the text as a whole.
///
/// # Errors
/// The first line that is not of the format, a duplicate section or key, a bad key, or a
/// missing `public-key`.
pub fn parse_certificate(text: &str) -> Result<Certificate, (usize, String)> {
    let mut section = Section::None;
    let (mut seen_meta, mut seen_curve) = (false, false);
    let mut public: Option<[u8; 32]> = None;
    let mut secret: Option<[u8; 32]> = None;
    for (i, raw) in text.split('\n').enumerate() {
        let n = i + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.chars().any(|c| c.is_control() && c != '\t') {
            return Err((n, "a control character".into()));
        }
        let body = line.trim_start_matches([' ', '\t']);
        let indented = body.len() != line.len();
        let body = body.trim_end_matches([' ', '\t']);
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        if !indented {
            match body {
                "metadata" if !seen_meta => {
                    seen_meta = true;
                    section = Section::Metadata;
                }
                "curve" if !seen_curve => {
                    seen_curve = true;
                    section = Section::Curve;
                }
                "metadata" | "curve" => return Err((n, format!("a second `{body}` section"))),
                _ => {
                    return Err((
                        n,
                        format!(
                            "expected a `metadata` or `curve` section, found {:?}",
                            crate::broker::wire::clip(body, 40)
                        ),
                    ));
                }
            }
            continue;
        }
        let (name, value) = match body.split_once('=') {
            Some((k, v)) => (k.trim_end_matches([' ', '\t']), Some(v.trim_start())),
            None => (body, None),
        };
        if !is_name(name) {
            return Err((n, "expected `name = value`".into()));
        }
        match section {
            Section::None => return Err((n, "an entry before any section".into())),
            // Any well-formed entry (or nested section name) of any value.
            Section::Metadata => {}
            Section::Curve => {
                let slot = match name {
                    "public-key" => &mut public,
                    "secret-key" => &mut secret,
                    _ => {
                        return Err((
                            n,
                            format!(
                                "unknown curve entry {name:?} (expected public-key, secret-key)"
                            ),
                        ));
                    }
                };
                let Some(v) = value else {
                    return Err((n, format!("{name} has no value")));
                };
                let v = unquote(v).ok_or_else(|| (n, format!("{name}: unbalanced quotes")))?;
                if slot.is_some() {
                    return Err((n, format!("a second {name}")));
                }
                *slot = Some(z85_decode_key(v).map_err(|e| (n, format!("{name}: {e}")))?);
            }
        }
    }
    let Some(public) = public else {
        return Err((0, "no public-key".into()));
    };
    Ok(Certificate {
        public: PublicKey(public),
        secret,
    })
}

fn unquote(v: &str) -> Option<&str> {
    for q in ['"', '\''] {
        if let Some(rest) = v.strip_prefix(q) {
            return rest.strip_suffix(q);
        }
    }
    if v.contains(['"', '\'']) {
        return None;
    }
    Some(v)
}

/// `KeyFileError::Io` for a failed `what` on `path`, as a `map_err` argument.
fn io_error<'a>(
    path: &'a Path,
    what: &'static str,
) -> impl FnOnce(std::io::Error) -> KeyFileError + 'a {
    move |source| KeyFileError::Io {
        path: path.to_owned(),
        what,
        source,
    }
}

fn file_kind(m: &std::fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// Reads and parses a key file: `O_NOFOLLOW`, a regular file, at most [`MAX_KEY_FILE`]
/// bytes, UTF-8, the certificate format, and owner-only permissions when it holds a secret.
///
/// # Errors
/// Each of those conditions as a [`KeyFileError`].
pub fn read_certificate(path: &Path) -> Result<Certificate, KeyFileError> {
    let io = |what| io_error(path, what);
    let mut f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(KeyFileError::NotRegular {
                path: path.to_owned(),
                found: "a symbolic link",
            });
        }
        Err(e) => return Err(io("cannot open")(e)),
    };
    let m = f.metadata().map_err(io("cannot stat"))?;
    if !m.is_file() {
        return Err(KeyFileError::NotRegular {
            path: path.to_owned(),
            found: file_kind(&m),
        });
    }
    if m.len() > MAX_KEY_FILE {
        return Err(KeyFileError::TooLarge {
            path: path.to_owned(),
        });
    }
    let mut bytes = Vec::with_capacity(m.len() as usize);
    (&mut f)
        .take(MAX_KEY_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(io("cannot read"))?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(KeyFileError::TooLarge {
            path: path.to_owned(),
        });
    }
    let format = |line, reason: String| KeyFileError::Format {
        path: path.to_owned(),
        line,
        reason,
    };
    let text = std::str::from_utf8(&bytes).map_err(|e| format(0, format!("not UTF-8 ({e})")))?;
    let cert = parse_certificate(text).map_err(|(l, r)| match (l, r.as_str()) {
        (0, "no public-key") => KeyFileError::Missing {
            path: path.to_owned(),
            what: "public-key",
        },
        _ => format(l, r),
    })?;
    let mode = m.permissions().mode() & 0o7777;
    if cert.has_secret() && mode & 0o077 != 0 {
        return Err(KeyFileError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(cert)
}

/// The public key in a key file (a `.key` file, or the public half of a `.key_secret`).
///
/// # Errors
/// As [`read_certificate`].
pub fn load_public_key(path: &Path) -> Result<PublicKey, KeyFileError> {
    read_certificate(path).map(|c| c.public)
}

/// The key pair in a `.key_secret` file.
///
/// # Errors
/// As [`read_certificate`]; [`KeyFileError::Missing`] for a file without `secret-key`.
pub fn load_key_pair(path: &Path) -> Result<KeyPair, KeyFileError> {
    read_certificate(path)?
        .key_pair()
        .ok_or_else(|| KeyFileError::Missing {
            path: path.to_owned(),
            what: "secret-key",
        })
}

/// The text of a public (`secret: false`) or secret certificate for `pair`, in pyzmq's
/// layout.
pub fn certificate_text(pair: &KeyPair, secret: bool) -> String {
    let mut t = String::from("#   ****  Generated by datahub keygen  ****\n");
    if secret {
        t.push_str(
            "#   ZeroMQ CURVE **Secret** Certificate\n\
             #   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n",
        );
    } else {
        t.push_str(
            "#   ZeroMQ CURVE Public Certificate\n\
             #   Exchange securely, or use a secure mechanism to verify the contents\n\
             #   of this file after exchange.\n",
        );
    }
    t.push_str("\nmetadata\ncurve\n");
    t.push_str(&format!("    public-key = \"{}\"\n", pair.public.z85()));
    if secret {
        t.push_str(&format!(
            "    secret-key = \"{}\"\n",
            z85_encode(&pair.secret)
        ));
    }
    t
}

/// The two files [`write_key_pair`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct KeyFiles {
    /// `DIR/NAME.key`, mode 0644.
    pub public: PathBuf,
    /// `DIR/NAME.key_secret`, mode 0600.
    pub secret: PathBuf,
}

/// Whether `name` is usable as a key file name: 1..=64 bytes of `A-Za-z0-9._-`, not
/// starting with `.`.
pub fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn create_new(path: &Path, mode: u32, text: &str) -> Result<File, KeyFileError> {
    let io = |what| io_error(path, what);
    let mut f = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(KeyFileError::Exists {
                path: path.to_owned(),
            });
        }
        Err(e) => return Err(io("cannot create")(e)),
    };
    // The umask may have taken bits away; set exactly `mode`.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io("cannot chmod"))?;
    f.write_all(text.as_bytes()).map_err(io("cannot write"))?;
    f.sync_all().map_err(io("cannot sync"))?;
    Ok(f)
}

/// Writes `pair` as `DIR/NAME.key` (mode 0644) and `DIR/NAME.key_secret` (mode 0600), both
/// created with `O_EXCL`: an existing file is never overwritten. `dir` must exist.
///
/// # Errors
/// [`KeyFileError::Exists`] when either file exists (neither is written then),
/// [`KeyFileError::Directory`] for a bad `name`, [`KeyFileError::Io`].
pub fn write_key_pair(dir: &Path, name: &str, pair: &KeyPair) -> Result<KeyFiles, KeyFileError> {
    if !valid_key_name(name) {
        return Err(KeyFileError::Directory {
            path: dir.to_owned(),
            reason: format!(
                "key name {:?} is not 1-64 characters of A-Za-z0-9._- (not starting with .)",
                crate::broker::wire::clip(name, 80)
            ),
        });
    }
    let files = KeyFiles {
        public: dir.join(format!("{name}{PUBLIC_SUFFIX}")),
        secret: dir.join(format!("{name}{SECRET_SUFFIX}")),
    };
    for p in [&files.public, &files.secret] {
        if std::fs::symlink_metadata(p).is_ok() {
            return Err(KeyFileError::Exists { path: p.clone() });
        }
    }
    create_new(&files.secret, 0o600, &certificate_text(pair, true))?;
    if let Err(e) = create_new(&files.public, 0o644, &certificate_text(pair, false)) {
        // Not half a pair: the secret was ours (O_EXCL).
        let _ = std::fs::remove_file(&files.secret);
        return Err(e);
    }
    Ok(files)
}

fn check_dir(dir: &Path) -> Result<(), KeyFileError> {
    let bad = |reason: String| KeyFileError::Directory {
        path: dir.to_owned(),
        reason,
    };
    let m = std::fs::symlink_metadata(dir).map_err(|e| bad(format!("cannot stat: {e}")))?;
    if !m.is_dir() {
        return Err(bad(format!("is {} (expected a directory)", file_kind(&m))));
    }
    if m.mode() & 0o022 != 0 {
        return Err(bad(format!(
            "has mode {:04o}: group or other may add keys (run chmod go-w on it)",
            m.mode() & 0o7777
        )));
    }
    // Its owner may add keys whatever the mode: only this user or root.
    let me = rustix::process::geteuid().as_raw();
    if m.uid() != me && m.uid() != 0 {
        return Err(bad(format!(
            "is owned by uid {}, not by this user (uid {me}) or root: its owner may add keys",
            m.uid()
        )));
    }
    Ok(())
}

/// The public keys in every `*.key` file of `dir` (other names are ignored), sorted and
/// without duplicates. `dir` must be a directory (not a symbolic link) that group and
/// other cannot write.
///
/// # Errors
/// [`KeyFileError::Directory`] for an unusable directory, more than [`MAX_ALLOWED_KEYS`]
/// files or none; the first bad file's error (a symbolic link among them included).
pub fn load_allowlist(dir: &Path) -> Result<Vec<PublicKey>, KeyFileError> {
    check_dir(dir)?;
    let bad = |reason: String| KeyFileError::Directory {
        path: dir.to_owned(),
        reason,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| bad(format!("cannot list: {e}")))? {
        let entry = entry.map_err(|e| bad(format!("cannot list: {e}")))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(PUBLIC_SUFFIX) && !name.starts_with('.') {
            names.push(entry.path());
            if names.len() > MAX_ALLOWED_KEYS {
                return Err(bad(format!("more than {MAX_ALLOWED_KEYS} key files")));
            }
        }
    }
    names.sort();
    let mut keys = BTreeSet::new();
    for p in &names {
        keys.insert(load_public_key(p)?);
    }
    if keys.is_empty() {
        return Err(bad(format!(
            "holds no *{PUBLIC_SUFFIX} file: no client could connect"
        )));
    }
    Ok(keys.into_iter().collect())
}

/// A broker's CURVE identity and the clients it lets in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerKeys {
    /// The broker's pair.
    pub pair: KeyPair,
    /// Client public keys allowed in (sorted, distinct).
    pub allowed: Vec<PublicKey>,
}

impl ServerKeys {
    /// Loads `DIR/server.key_secret` and `DIR/allowed/*.key`.
    ///
    /// # Errors
    /// [`KeyFileError::Directory`] when `dir` or `dir/allowed` is not a directory, is
    /// writable by group or other, or `allowed/` holds no key; the first bad file's error.
    pub fn load_dir(dir: &Path) -> Result<ServerKeys, KeyFileError> {
        check_dir(dir)?;
        let pair = load_key_pair(&dir.join(SERVER_SECRET_FILE))?;
        let allowed = load_allowlist(&dir.join(ALLOWED_DIR))?;
        Ok(ServerKeys { pair, allowed })
    }
}

/// A client's CURVE identity and the broker's public key it expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKeys {
    /// This client's pair (its public half must be in the broker's allowlist).
    pub pair: KeyPair,
    /// The broker's public key (`server.key`).
    pub server: PublicKey,
}

impl ClientKeys {
    /// Loads this client's `.key_secret` and the broker's `.key`.
    ///
    /// # Errors
    /// As [`load_key_pair`] and [`load_public_key`].
    pub fn load(secret_file: &Path, server_public_file: &Path) -> Result<ClientKeys, KeyFileError> {
        Ok(ClientKeys {
            pair: load_key_pair(secret_file)?,
            server: load_public_key(server_public_file)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn z85_matches_the_rfc_32_test_vector() {
        let bytes = [0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B];
        assert_eq!(z85_encode(&bytes), "HelloWorld");
    }

    #[test]
    fn z85_agrees_with_libzmq_both_ways() {
        for _ in 0..50 {
            let p = KeyPair::generate().unwrap();
            let ours = p.public.z85();
            assert_eq!(ours, zmq::z85_encode(p.public.as_bytes()).unwrap());
            assert_eq!(z85_decode_key(&ours).unwrap(), p.public.0);
            let s = z85_encode(&p.secret);
            assert_eq!(z85_decode_key(&s).unwrap(), p.secret);
        }
    }

    #[test]
    fn z85_refuses_foreign_characters_and_overflow() {
        assert!(z85_decode_key(&"\"".repeat(40)).is_err());
        assert!(z85_decode_key(&"~".repeat(40)).is_err());
        // "#####" is 85^5 - 1 > u32::MAX.
        assert!(z85_decode_key(&"#".repeat(40)).is_err());
        assert!(z85_decode_key(&"0".repeat(39)).is_err());
        assert_eq!(z85_decode_key(&"0".repeat(40)).unwrap(), [0; 32]);
    }

    #[test]
    fn written_text_parses_back() {
        let p = KeyPair::generate().unwrap();
        let c = parse_certificate(&certificate_text(&p, true)).unwrap();
        assert_eq!(c.key_pair(), Some(p.clone()));
        let c = parse_certificate(&certificate_text(&p, false)).unwrap();
        assert_eq!(c.public, p.public);
        assert!(!c.has_secret());
    }

    #[test]
    fn malformed_certificates_name_the_line() {
        let k = KeyPair::generate().unwrap().public.z85();
        let cases = [
            (
                format!("curve\n    public-key = \"{k}\"\n    public-key = \"{k}\"\n"),
                3,
            ),
            (format!("    public-key = \"{k}\"\n"), 1),
            (format!("curve\n    public-key = \"{k}\n"), 2),
            (format!("curve\n    colour = \"{k}\"\n"), 2),
            (format!("curve\ncurve\n    public-key = \"{k}\"\n"), 2),
            (format!("curve\n    public-key = \"{}\"\n", &k[..39]), 2),
            (format!("keys\n    public-key = \"{k}\"\n"), 1),
            ("curve\n    public-key\n".to_owned(), 2),
            (format!("curve\n    public-key = \"{k}\"\u{0}\n"), 2),
        ];
        for (text, line) in cases {
            let e = parse_certificate(&text).unwrap_err();
            assert_eq!(e.0, line, "{text:?}: {e:?}");
        }
        assert_eq!(parse_certificate("metadata\n").unwrap_err().0, 0);
        assert_eq!(parse_certificate("").unwrap_err().0, 0);
    }
}
