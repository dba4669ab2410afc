//! Output files tslab writes (`tslab demo --json-out`): checked before the work, replaced
//! atomically.
//!
//! [`AtomicFile::create`] makes the temporary file beside the target at once, so a target whose
//! directory is missing or not writable fails before any work is done. [`AtomicFile::commit`]
//! writes the bytes to it, `fsync`s it, renames it over the target and `fsync`s the directory:
//! a reader (`tslab watch FILE`, a textfile collector) sees the old file or the new one, never
//! a torn one, and a crash at any point leaves the old file (or none) plus at most a stray
//! `.NAME.*.tmp` beside it. An existing target that is not a regular file (a device, a FIFO, a
//! directory, a symbolic link) is refused: renaming over it would replace the link or device
//! node rather than write through it.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A pending replacement of `path`: its temporary file exists; [`AtomicFile::commit`] fills and
/// renames it; dropping it uncommitted removes the temporary file.
#[derive(Debug)]
pub struct AtomicFile {
    path: PathBuf,
    temp: tempfile::NamedTempFile,
}

impl AtomicFile {
    /// Checks that `path` can be replaced and creates its temporary file in `path`'s directory.
    ///
    /// # Errors
    /// [`Error::NotRegularFile`] when `path` exists and is not a regular file; [`Error::Io`]
    /// naming `path` when its directory is missing or the temporary file cannot be created.
    pub fn create(path: &Path) -> Result<AtomicFile> {
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_file() => {
                return Err(Error::NotRegularFile {
                    path: path.display().to_string(),
                    kind: if meta.file_type().is_symlink() {
                        "symbolic link"
                    } else if meta.is_dir() {
                        "directory"
                    } else {
                        "special file"
                    },
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let name = path.file_name().ok_or_else(|| {
            io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no file name",
            ))
        })?;
        let dir = parent_dir(path);
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(".tmp")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .tempfile_in(dir)
            .map_err(|e| {
                // tempfile appends the random temporary name; the directory says enough.
                let text = e.to_string();
                let cause = text.split(" at path ").next().unwrap_or(&text);
                io(std::io::Error::new(
                    e.kind(),
                    format!("cannot create a file in {}: {cause}", dir.display()),
                ))
            })?;
        Ok(AtomicFile {
            path: path.to_owned(),
            temp,
        })
    }

    /// The target path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `bytes`, syncs, and renames the temporary file over the target.
    ///
    /// # Errors
    /// [`Error::Io`] naming the target when a write, the sync or the rename fails (the target
    /// is then untouched).
    pub fn commit(mut self, bytes: &[u8]) -> Result<()> {
        let path = self.path.display().to_string();
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        self.temp.write_all(bytes).map_err(io)?;
        self.temp.as_file().sync_all().map_err(io)?;
        self.temp.persist(&self.path).map_err(|e| io(e.error))?;
        // The rename is durable once the directory is synced; a failure here leaves the new
        // file in place, so it is not reported.
        if let Ok(d) = std::fs::File::open(parent_dir(&self.path)) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}
