//! Endpoints: `ipc://PATH` (the default one in a private directory), and `tcp://HOST:PORT`
//! only with CURVE keys.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::BrokerError;

/// The socket file's name in the default directory.
pub const SOCKET_NAME: &str = "broker.sock";
/// Longest ipc path (`sockaddr_un.sun_path` holds 108 bytes with the NUL).
pub const MAX_IPC_PATH: usize = 107;

/// The default endpoint, `ipc://DIR/broker.sock`, where DIR is `$XDG_RUNTIME_DIR/datahub`
/// when that variable names an absolute path, else `/tmp/datahub-UID`. DIR is created mode
/// 0700 if missing, and checked to be a directory (not a link) owned by this user and
/// inaccessible to others.
///
/// # Errors
/// [`BrokerError::Endpoint`] when DIR cannot be created or fails a check.
pub fn default_endpoint() -> Result<String, BrokerError> {
    let dir = default_dir();
    private_dir(&dir)?;
    let path = dir.join(SOCKET_NAME);
    Ok(format!("ipc://{}", path.display()))
}

/// DIR of [`default_endpoint`], not created.
pub fn default_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if Path::new(&d).is_absolute() => Path::new(&d).join("datahub"),
        _ => PathBuf::from(format!(
            "/tmp/datahub-{}",
            rustix::process::geteuid().as_raw()
        )),
    }
}

fn endpoint_err(endpoint: &Path, reason: impl Into<String>) -> BrokerError {
    BrokerError::Endpoint {
        endpoint: endpoint.display().to_string(),
        reason: reason.into(),
    }
}

/// Creates `dir` mode 0700 if missing; checks it is a directory (not a symbolic link) owned
/// by the effective uid with no group or other permissions.
///
/// # Errors
/// [`BrokerError::Endpoint`] naming what was found.
pub fn private_dir(dir: &Path) -> Result<(), BrokerError> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(endpoint_err(
                dir,
                format!("cannot create the directory: {e}"),
            ));
        }
    }
    let m = std::fs::symlink_metadata(dir)
        .map_err(|e| endpoint_err(dir, format!("cannot stat the directory: {e}")))?;
    if m.file_type().is_symlink() || !m.is_dir() {
        return Err(endpoint_err(
            dir,
            "is not a directory (or is a symbolic link)",
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    if m.uid() != me {
        return Err(endpoint_err(
            dir,
            format!("is owned by uid {}, not by this user (uid {me})", m.uid()),
        ));
    }
    if m.permissions().mode() & 0o077 != 0 {
        return Err(endpoint_err(
            dir,
            format!(
                "has mode {:o}: others may use it (expected 0700)",
                m.permissions().mode() & 0o777
            ),
        ));
    }
    Ok(())
}

/// The path of an `ipc://` endpoint.
///
/// # Errors
/// [`BrokerError::Endpoint`] for another transport (`tcp://` needs CURVE keys: see
/// [`transport`]), an empty, relative or too long path.
pub fn ipc_path(endpoint: &str) -> Result<PathBuf, BrokerError> {
    let e = Path::new(endpoint);
    let Some(path) = endpoint.strip_prefix("ipc://") else {
        let reason = if endpoint.starts_with("tcp://") {
            "tcp:// needs CURVE keys (the broker's --keys DIR, a client's --key and --server-key); without them use ipc://PATH"
        } else {
            "only ipc://PATH and tcp://HOST:PORT (with CURVE keys) endpoints are supported"
        };
        return Err(endpoint_err(e, reason));
    };
    if !path.starts_with('/') {
        return Err(endpoint_err(e, "the ipc path must be absolute"));
    }
    if path.len() > MAX_IPC_PATH {
        return Err(endpoint_err(
            e,
            format!("the ipc path is longer than {MAX_IPC_PATH} bytes"),
        ));
    }
    Ok(PathBuf::from(path))
}

/// Longest `tcp://` endpoint accepted, bytes.
pub const MAX_TCP_ENDPOINT: usize = 300;

/// Checks an endpoint for a socket with (`curve: true`) or without CURVE keys: `Some(path)`
/// for `ipc://PATH` (with or without keys), `None` for `tcp://HOST:PORT` (only with keys;
/// libzmq parses the rest when binding or connecting).
///
/// # Errors
/// [`BrokerError::Endpoint`]: `tcp://` without keys, a `tcp://` endpoint without a port or
/// longer than [`MAX_TCP_ENDPOINT`], and [`ipc_path`]'s errors.
pub fn transport(endpoint: &str, curve: bool) -> Result<Option<PathBuf>, BrokerError> {
    let Some(rest) = endpoint.strip_prefix("tcp://").filter(|_| curve) else {
        return ipc_path(endpoint).map(Some);
    };
    let e = Path::new(endpoint);
    if endpoint.len() > MAX_TCP_ENDPOINT {
        return Err(endpoint_err(
            e,
            format!("longer than {MAX_TCP_ENDPOINT} bytes"),
        ));
    }
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !port.is_empty() => Ok(None),
        _ => Err(endpoint_err(e, "expected tcp://HOST:PORT")),
    }
}

/// Before binding `path`: refuses when another broker listens there (a connect succeeds) or
/// something other than a socket is in the way; a stale socket file is left for libzmq to
/// replace.
pub(crate) fn check_bindable(path: &Path) -> Result<(), BrokerError> {
    match std::fs::symlink_metadata(path) {
        Err(_) => Ok(()),
        Ok(m) => {
            use std::os::unix::fs::FileTypeExt;
            if !m.file_type().is_socket() {
                return Err(endpoint_err(path, "exists and is not a socket"));
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(endpoint_err(path, "another broker is listening there"));
            }
            Ok(())
        }
    }
}

/// After binding: the socket file readable and writable by its owner only. Only a socket is
/// changed: something else put at the path meanwhile (a symbolic link to another file) is
/// left alone rather than followed.
pub(crate) fn restrict(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
}
