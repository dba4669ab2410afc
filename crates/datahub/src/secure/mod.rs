//! Secure attach (Linux): a block in a sealed memfd, handed to authenticated consumers over a
//! Unix socket instead of being named in `/dev/shm`.
//!
//! A named block can be opened, overwritten or truncated by any process of the producer's
//! user, and a truncated block makes every peer fault. A secure producer
//! ([`crate::Producer::create_secure`]) instead creates its block with
//! `memfd_create(MFD_CLOEXEC | MFD_ALLOW_SEALING)`, sizes it and seals it
//! `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL` (nobody, the producer included, can resize it
//! or remove the seals), and serves it on an `AF_UNIX` stream socket in a directory only its
//! user can enter. A consumer ([`crate::Consumer::attach_secure`]) connects, proves it holds
//! the block's 32-byte key ([`read_key_file`]), checks that the producer holds it too, and
//! receives the descriptor (`SCM_RIGHTS`); it refuses one that is not sealed
//! ([`crate::Error::NotSealed`]).
//!
//! # Handshake
//! Frames are 8 bytes of header (`b"DHSA"`, version 1, kind, payload length) and a fixed
//! payload: HELLO (consumer nonce, 32 bytes) → CHALLENGE (producer nonce) → PROOF (consumer
//! MAC) → ACCEPT (producer MAC, with the descriptor) or REFUSE (one reason byte). Each MAC is
//! BLAKE2b-256 keyed with the block's key over the two nonces, both pids (as `SO_PEERCRED`
//! reports them) and a direction label, so neither MAC can be replayed in another connection
//! or reflected to the other side; the key never crosses the socket. Before reading anything
//! the producer checks the peer's credentials against its [`AttachPolicy`]. Any malformed
//! frame, timeout ([`AttachPolicy::handshake_timeout`]) or I/O error drops the connection and
//! counts it ([`AttachStats`]). The byte-level specification and the threat model are in
//! `docs/datahub-format.md`, "Secure attach".

pub(crate) mod client;
pub(crate) mod frame;
pub(crate) mod server;

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use crate::Error;

/// Connects to a secure producer's socket, runs the handshake with `key` within `timeout`,
/// and returns the block's descriptor, checked to be a memfd sealed at least
/// `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`, without mapping or registering anything
/// ([`crate::Consumer::attach_secure`] does this, then attaches). For tools and tests.
///
/// # Errors
/// As [`crate::Consumer::attach_secure`]'s socket and handshake errors:
/// [`Error::SocketDirUnsafe`], [`Error::NotFound`], [`Error::AttachRefused`],
/// [`Error::AttachFailed`], [`Error::NotSealed`], [`Error::Io`].
pub fn receive_block_fd(
    socket_path: impl AsRef<Path>,
    key: &[u8; KEY_LEN],
    timeout: Duration,
) -> Result<std::fs::File, Error> {
    client::fetch_block_fd(socket_path.as_ref(), key, timeout)
}

/// Length of the block's key, bytes.
pub const KEY_LEN: usize = 32;

/// Default [`AttachPolicy::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Default [`AttachPolicy::max_handshakes`].
pub const DEFAULT_MAX_HANDSHAKES: usize = 8;

/// Who may attach to a secure producer, and how long a handshake may take.
///
/// A peer is allowed when its uid (from `SO_PEERCRED`) is the producer's effective uid, is in
/// `uids`, or its gid is in `gids`. A peer whose pid reads as 0 (another pid namespace) is
/// always refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct AttachPolicy {
    /// Further uids allowed besides the producer's own.
    pub uids: Vec<u32>,
    /// Gids (the peer's primary gid, as `SO_PEERCRED` reports it) allowed.
    pub gids: Vec<u32>,
    /// Longest a handshake may take, from accept to the descriptor sent.
    pub handshake_timeout: Duration,
    /// Most handshakes in progress at once; a connection beyond them is refused at once
    /// (REFUSE busy) and counted in [`AttachStats::busy`]. At least 1.
    pub max_handshakes: usize,
}

impl Default for AttachPolicy {
    fn default() -> AttachPolicy {
        AttachPolicy {
            uids: Vec::new(),
            gids: Vec::new(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
        }
    }
}

impl AttachPolicy {
    /// The default policy (the producer's uid only) plus `uid`.
    pub fn allow_uid(mut self, uid: u32) -> AttachPolicy {
        self.uids.push(uid);
        self
    }

    /// The policy plus `gid`.
    pub fn allow_gid(mut self, gid: u32) -> AttachPolicy {
        self.gids.push(gid);
        self
    }

    /// The policy with another handshake timeout.
    pub fn handshake_timeout(mut self, t: Duration) -> AttachPolicy {
        self.handshake_timeout = t;
        self
    }

    /// The policy with another bound on concurrent handshakes (at least 1).
    pub fn max_handshakes(mut self, n: usize) -> AttachPolicy {
        self.max_handshakes = n.max(1);
        self
    }

    /// Whether the policy allows anyone besides the producer's own uid.
    pub fn allows_others(&self) -> bool {
        !self.uids.is_empty() || !self.gids.is_empty()
    }

    /// Whether a peer with these credentials may attach to a producer running as `my_uid`.
    pub fn allows(&self, my_uid: u32, uid: u32, gid: u32) -> bool {
        uid == my_uid || self.uids.contains(&uid) || self.gids.contains(&gid)
    }
}

/// A secure producer's handshake counters ([`crate::Producer::attach_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct AttachStats {
    /// Handshakes that ended with the descriptor sent.
    pub accepted: u64,
    /// Connections refused by the peer-credential check (or from another pid namespace).
    pub refused_peer: u64,
    /// Handshakes refused because the consumer's MAC was wrong (it does not hold the key).
    pub refused_key: u64,
    /// Connections dropped for a malformed frame or an I/O error.
    pub failed: u64,
    /// Connections dropped because the handshake ran out of time.
    pub timeouts: u64,
    /// Connections refused because `max_handshakes` were in progress.
    pub busy: u64,
}

/// Largest key file read, bytes (a key is 32 raw bytes or 64 hex characters and a newline).
pub const MAX_KEY_FILE: u64 = 256;

/// Reads a block key: exactly 32 raw bytes, or 64 hexadecimal characters (either case)
/// optionally followed by one newline (`\n` or `\r\n`). The file is opened with `O_NOFOLLOW`
/// (a symbolic link is refused), must be a regular file, must not be readable, writable or
/// executable by group or other (`chmod 600`), and at most [`MAX_KEY_FILE`] bytes are read.
///
/// (`datahub keygen` writes CURVE certificates for the broker, not block keys; a block key
/// is written with, for example, `head -c 32 /dev/urandom | xxd -p -c 64 > KEY; chmod 600 KEY`.)
///
/// # Errors
/// [`Error::Io`] (op `open key file`, `read key file`) when it cannot be opened or read;
/// [`Error::InvalidConfig`] naming the file when it is not a regular file, its mode lets
/// group or other use it, or its content is neither form.
pub fn read_key_file(path: impl AsRef<Path>) -> Result<[u8; KEY_LEN], Error> {
    let path = path.as_ref();
    let shown = crate::error::clip(&path.display().to_string());
    let bad = |why: String| Error::InvalidConfig {
        what: format!("key file {shown}: {why}"),
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                bad("is a symbolic link (refused)".into())
            } else {
                crate::segment::io_err("open key file", &shown, e)
            }
        })?;
    let m = f
        .metadata()
        .map_err(|e| crate::segment::io_err("fstat key file", &shown, e))?;
    if !m.is_file() {
        return Err(bad("not a regular file".into()));
    }
    let mode = m.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(bad(format!(
            "has mode {mode:04o} (group or other may use it); run chmod 600 on it"
        )));
    }
    let mut buf = Vec::new();
    f.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| crate::segment::io_err("read key file", &shown, e))?;
    parse_key(&buf).map_err(bad)
}

/// A key from a key file's bytes (see [`read_key_file`]).
pub(crate) fn parse_key(buf: &[u8]) -> Result<[u8; KEY_LEN], String> {
    if buf.len() as u64 > MAX_KEY_FILE {
        return Err(format!("longer than {MAX_KEY_FILE} bytes"));
    }
    let text = buf
        .strip_suffix(b"\r\n")
        .or_else(|| buf.strip_suffix(b"\n"))
        .unwrap_or(buf);
    if text.len() == 2 * KEY_LEN && text.iter().all(u8::is_ascii_hexdigit) {
        let mut k = [0u8; KEY_LEN];
        for (i, pair) in text.chunks_exact(2).enumerate() {
            let s = std::str::from_utf8(pair).expect("hex digits are ASCII");
            k[i] = u8::from_str_radix(s, 16).expect("checked hex");
        }
        return Ok(k);
    }
    if buf.len() == KEY_LEN {
        let mut k = [0u8; KEY_LEN];
        k.copy_from_slice(buf);
        return Ok(k);
    }
    Err(format!(
        "expected 64 hex characters or 32 raw bytes, found {} bytes",
        buf.len()
    ))
}

fn unsafe_path(path: &Path, why: impl Into<String>) -> Error {
    Error::SocketDirUnsafe {
        path: crate::error::clip(&path.display().to_string()),
        why: why.into(),
    }
}

/// The directory holding socket path `path` (`.` for a bare name).
pub(crate) fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Producer side: the socket's directory must be a directory (not a symbolic link: `lstat`),
/// owned by this process's effective uid, with no permission bits for group or other (0700).
/// With `others` (a policy that allowlists other uids or gids, who must be able to reach the
/// socket) group and other may have read and search bits, never write (for example 0711).
pub(crate) fn check_producer_dir(socket: &Path, others: bool) -> Result<(), Error> {
    if socket.file_name().is_none() {
        return Err(unsafe_path(socket, "has no file name"));
    }
    let dir = parent_of(socket);
    let m = std::fs::symlink_metadata(dir).map_err(|e| unsafe_path(dir, format!("lstat: {e}")))?;
    if m.file_type().is_symlink() {
        return Err(unsafe_path(dir, "is a symbolic link"));
    }
    if !m.is_dir() {
        return Err(unsafe_path(dir, "is not a directory"));
    }
    let me = rustix::process::geteuid().as_raw();
    if m.uid() != me {
        return Err(unsafe_path(
            dir,
            format!(
                "is owned by uid {}, not by this process (uid {me})",
                m.uid()
            ),
        ));
    }
    let mode = m.mode() & 0o7777;
    if !others && mode & 0o077 != 0 {
        return Err(unsafe_path(
            dir,
            format!("has mode {mode:04o}; a socket directory must be 0700 (chmod 700)"),
        ));
    }
    if others && mode & 0o022 != 0 {
        return Err(unsafe_path(
            dir,
            format!("has mode {mode:04o}: group or other may replace the socket (chmod go-w)"),
        ));
    }
    Ok(())
}

/// Consumer side: the socket path must be a socket (`lstat`: not a symbolic link), and its
/// directory a directory (not a link) that group and other cannot write.
pub(crate) fn check_consumer_path(socket: &Path) -> Result<(), Error> {
    let dir = parent_of(socket);
    let d = std::fs::symlink_metadata(dir).map_err(|e| unsafe_path(dir, format!("lstat: {e}")))?;
    if d.file_type().is_symlink() {
        return Err(unsafe_path(dir, "is a symbolic link"));
    }
    if !d.is_dir() {
        return Err(unsafe_path(dir, "is not a directory"));
    }
    let mode = d.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(unsafe_path(
            dir,
            format!("has mode {mode:04o}: group or other may replace the socket"),
        ));
    }
    match std::fs::symlink_metadata(socket) {
        Ok(m) if m.file_type().is_symlink() => Err(unsafe_path(socket, "is a symbolic link")),
        Ok(m) if !m.file_type().is_socket() => Err(unsafe_path(socket, "is not a socket")),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotFound {
            name: crate::error::clip(&socket.display().to_string()),
        }),
        Err(e) => Err(unsafe_path(socket, format!("lstat: {e}"))),
    }
}

/// The peer's credentials: `(pid, uid, gid)` from `SO_PEERCRED` (pid 0: the peer is in
/// another pid namespace).
pub(crate) fn peer_cred(fd: impl AsFd) -> std::io::Result<(u32, u32, u32)> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `fd` is an open descriptor borrowed for the call; `cred` and `len` are valid
    // for writes of `size_of::<ucred>()` bytes, the size SO_PEERCRED writes. (libc rather
    // than rustix: rustix's `UCred` holds a non-zero pid, and the kernel reports 0 for a
    // peer in another pid namespace.)
    let r = unsafe {
        libc::getsockopt(
            fd.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((cred.pid.max(0) as u32, cred.uid, cred.gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_take_hex_with_or_without_newline_and_raw_bytes() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let k = parse_key(hex.as_bytes()).unwrap();
        assert_eq!(k[1], 0x11);
        assert_eq!(k[31], 0xff);
        assert_eq!(parse_key(format!("{hex}\n").as_bytes()).unwrap(), k);
        assert_eq!(parse_key(format!("{hex}\r\n").as_bytes()).unwrap(), k);
        assert_eq!(parse_key(&[5; 32]).unwrap(), [5; 32]);
        assert!(parse_key(&[5; 31]).is_err());
        assert!(parse_key(&hex.as_bytes()[..63]).is_err());
        assert!(parse_key(format!("{hex}\n\n").as_bytes()).is_err());
        assert!(parse_key(&[b'a'; 300]).is_err());
    }

    #[test]
    fn default_policy_allows_only_the_same_uid() {
        let p = AttachPolicy::default();
        assert!(p.allows(1000, 1000, 5));
        assert!(!p.allows(1000, 1001, 5));
        assert!(p.clone().allow_uid(1001).allows(1000, 1001, 5));
        assert!(p.allow_gid(5).allows(1000, 1001, 5));
    }
}
