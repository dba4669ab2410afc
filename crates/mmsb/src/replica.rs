//! Replicas: a directory that follows another bus's log, frame for frame.
//!
//! A replica is a log directory like any other (its own `LOGID`, segments, checkpoints) that also
//! holds the [`MARKER`] file. Its log holds its leader's frames byte for byte at the same LSNs
//! (CRC and timestamps included), so every reader ([`crate::State::restore`],
//! [`crate::State::replay`] to an LSN, a page epoch or a time, `mmsb diff`) gives the same
//! answers on the replica as on the leader at the same LSN. It changes only through
//! [`crate::Mmsb::apply_replicated`]; [`crate::Mmsb::start`] refuses to open it as a writer
//! ([`Error::IsReplica`]) until it is promoted ([`crate::Mmsb::promote`], or [`promote_local`]).
//!
//! Where the frames come from (a log shipped through NATS JetStream, a file, a test) is not this
//! module's business: see `mmsb::replicate` (feature `replicate`).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::checkpoint;
use crate::error::{Error, Result};
use crate::page::Lsn;
use crate::tlog::{LogConfig, TLog, sync_dir};

/// Name of the file that makes a log directory a replica. It holds one line of text for people
/// (`mmsb replica`); only its existence matters.
pub const MARKER: &str = "REPLICA";

/// `dir` holds the [`MARKER`] file (a regular file; a link or anything else there is refused).
///
/// # Errors
/// [`Error::NotRegularFile`] for a marker that is not a regular file; [`Error::Io`].
pub fn is_replica(dir: &Path) -> Result<bool> {
    let p = dir.join(MARKER);
    match fs::symlink_metadata(&p) {
        Ok(m) if m.file_type().is_file() => Ok(true),
        Ok(m) => Err(Error::NotRegularFile {
            file: p,
            found: if m.file_type().is_symlink() {
                "a symbolic link"
            } else if m.is_dir() {
                "a directory"
            } else {
                "a special file"
            },
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(&p, e)),
    }
}

/// Creates the marker in `dir` durably (file fsynced, then the directory).
pub(crate) fn mark(dir: &Path) -> Result<()> {
    let p = dir.join(MARKER);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .map_err(|e| Error::io(&p, e))?;
    f.write_all(b"mmsb replica: changed only by its leader's frames; `mmsb promote` to write\n")
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(&p, e))?;
    sync_dir(dir)
}

/// Makes `dir` a normal, writable log directory by removing its marker durably. Call it only
/// once the leader has been fenced off (for a replica of a JetStream stream: after the promote
/// marker was accepted by the stream), or two writers will each believe they own the history
/// after the last shared LSN. [`crate::Mmsb::promote`] does the same for an open replica.
///
/// # Errors
/// [`Error::NotALog`] when `dir` is not a replica; [`Error::Io`].
pub fn promote_local(dir: &Path) -> Result<()> {
    if !is_replica(dir)? {
        return Err(Error::NotALog {
            dir: dir.to_path_buf(),
            reason: format!("it is not a replica (no {MARKER} file)"),
        });
    }
    let p = dir.join(MARKER);
    fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
    sync_dir(dir)
}

/// Creates the replica directory `dir` (missing, or an empty directory) from a checkpoint of the
/// leader (`checkpoint_bytes`: a checkpoint file's bytes, as written by
/// [`crate::checkpoint::write_for_log`]). The replica's log starts at the checkpoint's LSN + 1,
/// with a checkpoint of its own holding the same pages, so it can follow the leader's frames from
/// there. Returns the checkpoint's LSN.
///
/// Atomic: everything is built in a temporary directory next to `dir` (fsynced) and renamed into
/// place, so a crash leaves either no replica or a complete one (and possibly a leftover
/// `.<name>.bootstrap-<pid>` directory, which a later bootstrap of the same name removes).
///
/// # Errors
/// [`Error::NotALog`] when `dir` exists and is not an empty directory; [`Error::BadMagic`],
/// [`Error::CorruptCheckpoint`] and the other errors of [`checkpoint::read`] for bytes that are
/// not a sound checkpoint; [`Error::Io`].
pub fn bootstrap(dir: &Path, checkpoint_bytes: &[u8]) -> Result<Lsn> {
    if !is_fresh(dir)? {
        return Err(Error::NotALog {
            dir: dir.to_path_buf(),
            reason: "a replica is bootstrapped only into a missing or empty directory".into(),
        });
    }
    let tmp = temp_sibling(dir)?;
    if fs::symlink_metadata(&tmp).is_ok() {
        fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let r = build(&tmp, checkpoint_bytes).and_then(|lsn| {
        fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(lsn)
    });
    if r.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    r
}

/// `dir` is missing or an empty directory: where [`bootstrap`] may build a replica. Not
/// followed through a link.
///
/// # Errors
/// [`Error::NotALog`] when `dir` is something other than a directory; [`Error::Io`].
pub fn is_fresh(dir: &Path) -> Result<bool> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {
            let mut it = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
            Ok(it.next().is_none())
        }
        Ok(_) => Err(Error::NotALog {
            dir: dir.to_path_buf(),
            reason: "not a directory".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// `.<name>.bootstrap-<pid>` next to `dir`.
fn temp_sibling(dir: &Path) -> Result<PathBuf> {
    let name = dir.file_name().ok_or_else(|| Error::NotALog {
        dir: dir.to_path_buf(),
        reason: "the path has no final component".into(),
    })?;
    let mut t = std::ffi::OsString::from(".");
    t.push(name);
    t.push(format!(".bootstrap-{}", std::process::id()));
    Ok(dir.with_file_name(t))
}

fn build(tmp: &Path, checkpoint_bytes: &[u8]) -> Result<Lsn> {
    // Read the checkpoint through its own checks (CRC, page hashes, sizes).
    let incoming = tmp.join("incoming.ckpt");
    fs::write(&incoming, checkpoint_bytes).map_err(|e| Error::io(&incoming, e))?;
    let ckpt = checkpoint::read(&incoming)?;
    fs::remove_file(&incoming).map_err(|e| Error::io(&incoming, e))?;
    let lsn = ckpt.lsn;
    let mut lc = LogConfig::new(tmp);
    lc.first_lsn = lsn.next();
    let (log, _) = TLog::open(lc)?;
    let id = log.identity().id;
    log.close()?;
    checkpoint::write_for_log(tmp, id, lsn, ckpt.next_page_id, &ckpt.pages)?;
    mark(tmp)?;
    sync_dir(tmp)?;
    Ok(lsn)
}
