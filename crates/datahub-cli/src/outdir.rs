//! `sub --out DIR`: the output directory, treated as a place other users may have planted
//! things in.
//!
//! - DIR is opened once (`O_DIRECTORY`); every file in it is reached with `openat`/`renameat`/
//!   `unlinkat` relative to that descriptor, by a single path component, with `O_NOFOLLOW`.
//!   A symbolic link planted at the partial-file or journal name is removed (`unlinkat`
//!   removes the link, not its target) before the file is created `O_CREAT | O_EXCL`, and a
//!   link or non-regular file found when reopening is refused. So nothing outside DIR is
//!   written, whatever DIR holds.
//! - The journal is data from disk: read at most [`MAX_JOURNAL`] bytes from a regular file,
//!   and the file name in it must pass [`frame::check_name`] (one path component, no `..`, not
//!   absolute, not reserved) before anything is done with it; otherwise it is refused with a
//!   message, not used.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use blake2::Digest;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use crate::fail::{Fail, Result, clip};
use crate::frame::{self, Blake2b256};

/// Largest journal read (a real one is under 400 bytes).
pub const MAX_JOURNAL: u64 = 4096;

/// The resume journal: which file of which stream the partial file holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct Journal {
    pub stream: u64,
    pub index: u32,
    pub name: String,
    pub done: bool,
}

/// What [`OutDir::read_journal`] found.
pub enum Found {
    /// No journal.
    None,
    /// A journal that passed the checks.
    Valid(Journal),
    /// A journal that is not usable, and why (never acted on).
    Invalid(String),
}

/// The output directory.
pub struct OutDir {
    dir: PathBuf,
    fd: OwnedFd,
    data: String,
    journal: String,
    tmp: String,
    pub file: Option<File>,
}

fn io_fail(what: &Path, e: impl Into<std::io::Error>) -> Fail {
    Fail::usage(format!("{}: {}", what.display(), e.into()))
}

impl OutDir {
    /// Creates DIR if missing and opens it; files for block `block` get reserved names.
    pub fn new(dir: &Path, block: &str) -> Result<OutDir> {
        match std::fs::metadata(dir) {
            Ok(m) if !m.is_dir() => {
                return Err(Fail::usage(format!(
                    "--out {}: exists and is not a directory",
                    dir.display()
                )));
            }
            Ok(_) => {}
            Err(_) => std::fs::create_dir_all(dir).map_err(|e| io_fail(dir, e))?,
        }
        let fd = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_fail(dir, e))?;
        Ok(OutDir {
            dir: dir.to_owned(),
            fd,
            data: format!("{}.{block}.data", frame::RESERVED_PREFIX),
            journal: format!("{}.{block}.json", frame::RESERVED_PREFIX),
            tmp: format!("{}.{block}.json.tmp", frame::RESERVED_PREFIX),
            file: None,
        })
    }

    /// `DIR/name`, for messages and the summary.
    pub fn shown(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The partial file's path, for messages.
    pub fn data_path(&self) -> PathBuf {
        self.shown(&self.data)
    }

    fn final_name(name: &str) -> &str {
        if name.is_empty() { "stdin" } else { name }
    }

    /// Removes `name` in DIR (a link itself, never its target); a missing file is fine.
    fn remove(&self, name: &str) -> Result<()> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(io_fail(&self.shown(name), e)),
        }
    }

    /// Creates `name` in DIR afresh: whatever was there (a planted link) is removed first,
    /// then `O_CREAT | O_EXCL | O_NOFOLLOW`.
    fn create(&self, name: &str) -> Result<File> {
        self.remove(name)?;
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR | Mode::RGRP | Mode::ROTH,
        )
        .map_err(|e| io_fail(&self.shown(name), e))?;
        Ok(File::from(fd))
    }

    /// Opens an existing regular file `name` in DIR without following a link or blocking on
    /// a FIFO. `Ok(None)`: there is none.
    fn open_existing(&self, name: &str, flags: OFlags) -> Result<Option<File>> {
        let fd = match rustix::fs::openat(
            &self.fd,
            name,
            flags | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP) => {
                return Err(Fail::usage(format!(
                    "{}: is a symbolic link, refused",
                    self.shown(name).display()
                )));
            }
            Err(e) => return Err(io_fail(&self.shown(name), e)),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| io_fail(&self.shown(name), e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(Fail::usage(format!(
                "{}: is not a regular file, refused",
                self.shown(name).display()
            )));
        }
        Ok(Some(File::from(fd)))
    }

    /// Writes the journal (to a fresh temporary file, renamed over the old one).
    pub fn write_journal(&self, j: &Journal) -> Result<()> {
        let text = serde_json::to_vec(j).expect("journal serializes");
        let mut f = self.create(&self.tmp)?;
        f.write_all(&text)
            .map_err(|e| io_fail(&self.shown(&self.tmp), e))?;
        drop(f);
        rustix::fs::renameat(&self.fd, self.tmp.as_str(), &self.fd, self.journal.as_str())
            .map_err(|e| io_fail(&self.shown(&self.journal), e))
    }

    /// Reads and checks the journal (bounded; see the module doc).
    pub fn read_journal(&self) -> Found {
        let f = match self.open_existing(&self.journal, OFlags::RDONLY) {
            Ok(Some(f)) => f,
            Ok(None) => return Found::None,
            Err(e) => return Found::Invalid(e.to_string()),
        };
        let mut text = Vec::new();
        if let Err(e) = f.take(MAX_JOURNAL + 1).read_to_end(&mut text) {
            return Found::Invalid(format!("cannot read it: {e}"));
        }
        if text.len() as u64 > MAX_JOURNAL {
            return Found::Invalid(format!("it is longer than {MAX_JOURNAL} bytes"));
        }
        let j: Journal = match serde_json::from_slice(&text) {
            Ok(j) => j,
            Err(e) => return Found::Invalid(format!("it is not a journal: {e}")),
        };
        if let Err(why) = frame::check_name(&j.name) {
            return Found::Invalid(format!("it names an unusable file: {why}"));
        }
        Found::Valid(j)
    }

    /// Starts file `j`: journal first, then a fresh partial file.
    pub fn start(&mut self, j: &Journal) -> Result<()> {
        self.write_journal(j)?;
        self.file = Some(self.create(&self.data)?);
        Ok(())
    }

    /// Whether a partial file exists (a regular file; a link is refused).
    pub fn has_data(&self) -> Result<bool> {
        Ok(self.open_existing(&self.data, OFlags::RDONLY)?.is_some())
    }

    /// Reopens the partial file, cut back to `len` bytes; returns the hasher over them.
    pub fn reopen(&mut self, len: u64) -> Result<Blake2b256> {
        let path = self.data_path();
        let mut f = self
            .open_existing(&self.data, OFlags::RDWR)?
            .ok_or_else(|| Fail::usage(format!("{}: partial file missing", path.display())))?;
        let have = f.metadata().map_err(|e| io_fail(&path, e))?.len();
        if have < len {
            return Err(Fail::usage(format!(
                "{}: partial file has {have} bytes, the stream continues at {len}",
                path.display()
            )));
        }
        f.set_len(len).map_err(|e| io_fail(&path, e))?;
        let mut hasher = Blake2b256::new();
        let mut buf = vec![0u8; 1 << 16];
        f.seek(SeekFrom::Start(0)).map_err(|e| io_fail(&path, e))?;
        loop {
            let n = f.read(&mut buf).map_err(|e| io_fail(&path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        f.seek(SeekFrom::End(0)).map_err(|e| io_fail(&path, e))?;
        self.file = Some(f);
        Ok(hasher)
    }

    /// Marks file `j` done and moves it to its name.
    pub fn finish(&mut self, j: &Journal) -> Result<PathBuf> {
        self.file = None;
        self.write_journal(j)?;
        self.publish(&j.name)
    }

    /// Renames the partial file to `name` (already checked by `frame::check_name`). A link at
    /// the destination is replaced, not followed.
    pub fn publish(&self, name: &str) -> Result<PathBuf> {
        frame::check_name(name)
            .map_err(|e| Fail::usage(format!("refusing to publish: {}", clip(&e))))?;
        let to = Self::final_name(name);
        rustix::fs::renameat(&self.fd, self.data.as_str(), &self.fd, to)
            .map_err(|e| io_fail(&self.shown(to), e))?;
        Ok(self.shown(to))
    }

    /// Removes the partial file and the journal.
    pub fn discard(&mut self) {
        self.file = None;
        let _ = self.remove(&self.data);
        let _ = self.remove(&self.journal);
    }

    /// Removes the journal (the stream ended cleanly).
    pub fn end(&self) {
        let _ = self.remove(&self.journal);
    }

    /// Appends to the open partial file.
    pub fn write(&mut self, chunk: &[u8]) -> Result<()> {
        let path = self.data_path();
        let f = self
            .file
            .as_mut()
            .expect("a file is open while one is being received");
        f.write_all(chunk).map_err(|e| io_fail(&path, e))
    }
}
