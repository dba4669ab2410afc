//! Which checkpoint a state is rebuilt from, and the verdict on a whole log directory.
//!
//! One rule, used by readers ([`State::restore`], [`State::replay`]) and the writer
//! ([`crate::Mmsb::start`]) alike, so that every command gives one verdict for one directory:
//!
//! * A checkpoint is **usable** when it passes every check of [`checkpoint::read`], belongs to
//!   the directory's log ([`crate::logdir::DirKind::owns`]: it records the directory's log id),
//!   and the log still holds the frames after it (its LSN + 1 is at or after the first LSN of
//!   the oldest segment).
//! * A state is rebuilt from the newest usable checkpoint at or below the target (for a
//!   replay to an LSN; restore and replay to the end take the newest usable one), plus the log
//!   after it. Without one, from the empty state, which needs the log from LSN 1: when older
//!   segments were pruned that is [`Error::StateUnrecoverable`], naming the missing range.
//! * A checkpoint of this log that covers more than the log holds (the log lost committed
//!   frames it covers) is [`Error::StateUnrecoverable`] too, for readers and the writer alike;
//!   the writer could otherwise hand out LSNs the checkpoint already covers.
//! * Checkpoints that were not used are reported ([`RestoreReport::skipped`]), as is what a
//!   reader ignored at the end of the log ([`RestoreReport::tail`]): nothing is skipped silently.
//!
//! [`verify_dir`] applies the same rule to a directory without rebuilding the state and lists
//! every problem.

use std::path::{Path, PathBuf};

use crate::checkpoint::{self, Checkpoint, Skipped};
use crate::error::{Error, Result};
use crate::logdir::{self, DirKind};
use crate::page::Lsn;
use crate::state::{ReplayTarget, State};
use crate::tlog::{self, Truncation, VerifyReport};

/// Most skipped checkpoints named in one error message.
const NAMED_IN_ERROR: usize = 3;

/// What a restore or replay of a log directory used and left out.
#[derive(Debug, Default)]
pub struct RestoreReport {
    /// The checkpoint the state was rebuilt from (`None`: from the empty state).
    pub checkpoint: Option<(Lsn, PathBuf)>,
    /// Checkpoints that were not used, newest first, with why (corrupt, another log's,
    /// unreadable). Checkpoints above a replay target are not listed.
    pub skipped: Vec<Skipped>,
    /// What was ignored after the last committed frame: a torn write and/or an uncommitted
    /// batch (a reader never modifies the log; the writer would cut this).
    pub tail: Option<Truncation>,
}

/// The base a state is rebuilt from.
pub(crate) struct Base {
    pub(crate) checkpoint: Option<(Checkpoint, PathBuf)>,
    pub(crate) skipped: Vec<Skipped>,
}

fn summary(skipped: &[Skipped]) -> String {
    if skipped.is_empty() {
        return String::new();
    }
    let mut s = String::from("; checkpoints not usable: ");
    for (i, (_, e)) in skipped.iter().take(NAMED_IN_ERROR).enumerate() {
        if i > 0 {
            s.push_str("; ");
        }
        s.push_str(&e.to_string());
    }
    if skipped.len() > NAMED_IN_ERROR {
        s.push_str(&format!("; and {} more", skipped.len() - NAMED_IN_ERROR));
    }
    s
}

/// Chooses the checkpoint to rebuild the state of `dir` (of kind `kind`) from: the newest
/// usable one with LSN `<= at_most` (any LSN if `None`). See the module docs.
pub(crate) fn choose_base(dir: &Path, kind: &DirKind, at_most: Option<Lsn>) -> Result<Base> {
    let first_seg = tlog::list_segments(dir)?.first().map(|s| s.0);
    let mut skipped = Vec::new();
    let mut suffix_gone = false;
    for (lsn, path) in checkpoint::list(dir)?.into_iter().rev() {
        if at_most.is_some_and(|t| lsn > t) {
            continue;
        }
        let c = match checkpoint::read(&path) {
            Ok(c) => c,
            Err(e) => {
                skipped.push((path, e));
                continue;
            }
        };
        if !kind.owns(c.log_id) {
            let expected = match kind {
                DirKind::Log(ident) => ident.id.to_string(),
                _ => "a log without a log id".to_string(),
            };
            let found = c
                .log_id
                .map_or("a log of format version 1".into(), |id| id.to_string());
            skipped.push((
                path.clone(),
                Error::ForeignCheckpoint {
                    file: path,
                    found,
                    expected,
                },
            ));
            continue;
        }
        if first_seg.is_some_and(|f| c.lsn.next() < f) {
            // This one and every older one lack the log after them.
            suffix_gone = true;
            break;
        }
        return Ok(Base {
            checkpoint: Some((c, path)),
            skipped,
        });
    }
    if let Some(f) = first_seg
        && f > Lsn(1)
    {
        let below = at_most.map_or(String::new(), |t| {
            if t == Lsn::ZERO {
                " (this replay target starts from the empty state)".into()
            } else {
                format!(" at or below the target {t}")
            }
        });
        let why = if suffix_gone {
            " (the newest one left is older than the oldest segment)"
        } else {
            ""
        };
        return Err(Error::StateUnrecoverable {
            dir: dir.to_path_buf(),
            reason: format!(
                "the segments holding LSN 1..={} were pruned and no usable checkpoint covers them{below}{why}{}",
                f.0 - 1,
                summary(&skipped)
            ),
        });
    }
    Ok(Base {
        checkpoint: None,
        skipped,
    })
}

impl State {
    /// The state the log directory `dir` holds, by the rule of [`crate::restore`], with what was
    /// used and left out. Reads only; takes no lock.
    ///
    /// # Errors
    /// [`Error::NotALog`], [`Error::StateUnrecoverable`], the errors of the log reader
    /// ([`Error::CorruptFrame`], [`Error::DamagedTail`], ...), [`Error::ReplayMismatch`].
    pub fn restore_reporting(dir: &Path) -> Result<(State, RestoreReport)> {
        State::rebuild(dir, ReplayTarget::End)
    }

    /// [`State::replay`], also returning what was used and left out.
    ///
    /// # Errors
    /// As [`State::replay`].
    pub fn replay_reporting(path: &Path, target: ReplayTarget) -> Result<(State, RestoreReport)> {
        if path.is_dir() {
            return State::rebuild(path, target);
        }
        let (s, tail) = State::new().replay_log_reporting(path, target)?;
        Ok((
            s,
            RestoreReport {
                tail,
                ..RestoreReport::default()
            },
        ))
    }

    /// The state whatever is at `path` holds, for tools that take "a state" from the user:
    ///
    /// * a checkpoint file (name ending `.ckpt`): its pages, read with every check of
    ///   [`checkpoint::read`];
    /// * a directory that holds no log ([`Error::NotALog`]) but checkpoints (what a detached
    ///   `checkpoint::write` of a replay leaves, e.g. `mmsb replay --out`): the newest one;
    /// * a log directory: [`State::restore`]; a segment file: [`State::replay`] to its end.
    ///
    /// Reads only; takes no lock. [`State::load_reporting`] also says what was used.
    ///
    /// # Errors
    /// As [`checkpoint::read`] for a checkpoint; [`Error::NotALog`] for a directory holding
    /// neither a log nor a checkpoint; otherwise as [`State::replay`].
    pub fn load(path: &Path) -> Result<State> {
        Ok(State::load_reporting(path)?.0)
    }

    /// [`State::load`], also returning what was used (the checkpoint, when one was) and left
    /// out (skipped checkpoints, an ignored tail).
    ///
    /// # Errors
    /// As [`State::load`].
    pub fn load_reporting(path: &Path) -> Result<(State, RestoreReport)> {
        if !path.is_dir() && path.extension().is_some_and(|e| e == "ckpt") {
            let s = State::from_checkpoint(checkpoint::read(path)?)?;
            return Ok((s, RestoreReport::default()));
        }
        if path.is_dir()
            && matches!(logdir::probe(path), Err(Error::NotALog { .. }))
            && let Some((_, newest)) = checkpoint::list(path)?.pop()
        {
            let s = State::from_checkpoint(checkpoint::read(&newest)?)?;
            let report = RestoreReport {
                checkpoint: Some((s.last_lsn(), newest)),
                ..RestoreReport::default()
            };
            return Ok((s, report));
        }
        State::replay_reporting(path, ReplayTarget::End)
    }

    fn rebuild(dir: &Path, target: ReplayTarget) -> Result<(State, RestoreReport)> {
        let kind = logdir::probe_log(dir)?;
        let at_most = match target {
            ReplayTarget::End => None,
            ReplayTarget::Lsn(l) => Some(l),
            // A checkpoint records no timestamps or per-frame epochs: start from empty.
            ReplayTarget::PageEpoch(..) | ReplayTarget::Timestamp(_) => Some(Lsn::ZERO),
        };
        let base = choose_base(dir, &kind, at_most)?;
        let (state, checkpoint) = match base.checkpoint {
            Some((c, path)) => {
                let lsn = c.lsn;
                (State::from_checkpoint(c)?, Some((lsn, path)))
            }
            None => (State::new(), None),
        };
        let (state, tail) = state.replay_log_reporting(dir, target)?;
        Ok((
            state,
            RestoreReport {
                checkpoint,
                skipped: base.skipped,
                tail,
            },
        ))
    }
}

/// One checkpoint as [`verify_dir`] saw it.
#[derive(Debug)]
pub struct CheckpointCheck {
    /// The file.
    pub file: PathBuf,
    /// The LSN in its name.
    pub lsn: Lsn,
    /// Why it cannot be restored from, if it cannot (`None`: it is sound and this log's).
    pub problem: Option<String>,
}

/// The verdict of [`verify_dir`].
#[derive(Debug, Default)]
pub struct DirVerifyReport {
    /// Every frame of every segment ([`tlog::verify`]).
    pub log: VerifyReport,
    /// Every checkpoint file, oldest first.
    pub checkpoints: Vec<CheckpointCheck>,
    /// The checkpoint a restore would start from.
    pub restore_from: Option<Lsn>,
    /// Why the state cannot be rebuilt, if it cannot.
    pub unrecoverable: Option<String>,
}

impl DirVerifyReport {
    /// No problem in the log, no unusable checkpoint, and the state can be rebuilt.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.log.is_ok()
            && self.unrecoverable.is_none()
            && self.checkpoints.iter().all(|c| c.problem.is_none())
    }
}

/// Checks a log directory (or one segment file) read-only: every frame ([`tlog::verify`]),
/// every checkpoint (checksums, that it belongs to this log, that the log holds what it
/// covers), and that the state can be rebuilt (the newest usable checkpoint plus the segments
/// after it reach the end of the log, or the segments start at LSN 1).
///
/// # Errors
/// [`Error::NotALog`] for a directory that holds no log (see [`logdir::probe`]); I/O errors
/// listing it. Defects are in the report.
pub fn verify_dir(path: &Path) -> Result<DirVerifyReport> {
    if !path.is_dir() {
        return Ok(DirVerifyReport {
            log: tlog::verify(path)?,
            ..DirVerifyReport::default()
        });
    }
    let kind = logdir::probe_log(path)?;
    let log = tlog::verify(path)?;
    let first_seg = log.segments.first().map(|s| s.first_lsn);
    // The last committed LSN; a log whose segments hold no frame yet (pruned up to a
    // checkpoint, or a replica built from one) ends just before its first segment.
    let end = (log.last_lsn.0 - log.segments.last().map_or(0, |s| s.uncommitted))
        .max(first_seg.map_or(0, |f| f.0.saturating_sub(1)));
    let mut rep = DirVerifyReport {
        log,
        ..DirVerifyReport::default()
    };
    for (lsn, file) in checkpoint::list(path)? {
        let problem = match checkpoint::read(&file) {
            Err(e) => Some(e.to_string()),
            Ok(c) if !kind.owns(c.log_id) => Some(format!(
                "belongs to {}, not to this log",
                c.log_id
                    .map_or("a log of format version 1".into(), |id| id.to_string())
            )),
            Ok(c) if c.lsn.0 > end => Some(format!(
                "covers {} but the log ends at LSN {end}: committed frames it covers are missing",
                c.lsn
            )),
            // Sound, but older than the oldest segment: not needed, and not usable.
            Ok(c) if first_seg.is_some_and(|f| c.lsn.next() < f) => None,
            Ok(c) => {
                rep.restore_from = Some(c.lsn);
                None
            }
        };
        rep.checkpoints.push(CheckpointCheck { file, lsn, problem });
    }
    if let Some(f) = first_seg
        && f > Lsn(1)
        && rep.restore_from.is_none()
    {
        rep.unrecoverable = Some(format!(
            "the segments holding LSN 1..={} were pruned and no usable checkpoint covers them",
            f.0 - 1
        ));
    }
    if first_seg.is_none() && end == 0 && rep.checkpoints.iter().any(|c| c.lsn.0 > 0) {
        rep.unrecoverable
            .get_or_insert_with(|| "checkpoints exist but the log has no segments".into());
    }
    Ok(rep)
}
