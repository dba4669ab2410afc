//! `mmsb replay`, `mmsb checkpoint`, `mmsb diff` and `mmsb stats`.
//!
//! The verdicts are the library's ([`mmsb::restore`]): every command rebuilds a directory's
//! state by the same rule and says what it left out. Only `checkpoint` opens a log as its writer;
//! the others never modify the directory they read.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use mmsb::logdir;
use mmsb::tlog::{LOCK_FILE, LogReader};
use mmsb::{Config, Mmsb, PageId, ReplayTarget, State, checkpoint};
use serde::Serialize;

use crate::out::{CheckpointRef, Notes, Skipped, TailJson};
use crate::{Fail, input_error, out};

#[derive(Serialize)]
struct PageHash {
    page: u64,
    epoch: u64,
    xxh3: String,
}

/// `mmsb replay --json`.
#[derive(Serialize)]
struct Replayed {
    target: String,
    lsn: u64,
    pages: usize,
    checkpoint: String,
    hashes: Vec<PageHash>,
    notes: Notes,
}

#[derive(Serialize)]
struct Recovery {
    discarded_tail: Option<TailJson>,
    restored_from: Option<u64>,
    skipped_checkpoints: Vec<Skipped>,
}

/// `mmsb checkpoint --json`.
#[derive(Serialize)]
struct Checkpointed {
    path: String,
    lsn: u64,
    pages: u64,
    bytes: u64,
    recovery: Recovery,
}

#[derive(Serialize)]
struct Resized {
    page: u64,
    size_a: usize,
    size_b: usize,
}

/// `mmsb diff --json` when the page sets differ.
#[derive(Serialize)]
struct ShapeDiffers {
    a: String,
    b: String,
    same: bool,
    only_in_a: Vec<u64>,
    only_in_a_count: usize,
    only_in_b: Vec<u64>,
    only_in_b_count: usize,
    resized: Vec<Resized>,
    resized_count: usize,
    notes_a: Notes,
    notes_b: Notes,
}

#[derive(Serialize)]
struct PageDiff {
    page: u64,
    changed_bytes: usize,
    runs: usize,
    dense: bool,
}

/// `mmsb diff --json` on two states with the same page set.
#[derive(Serialize)]
struct Compared {
    a: String,
    b: String,
    same: bool,
    pages: Vec<PageDiff>,
    notes_a: Notes,
    notes_b: Notes,
}

#[derive(Serialize)]
struct PageStat<'a> {
    page: u64,
    size: usize,
    epoch: u64,
    xxh3: String,
    metadata_keys: Vec<&'a String>,
}

/// `mmsb stats --json`.
#[derive(Serialize)]
struct Stats<'a> {
    pages: usize,
    page_bytes: usize,
    last_lsn: u64,
    next_page_id: u64,
    max_epoch: u64,
    sum_of_epochs: u64,
    segments: usize,
    log_bytes: u64,
    checkpoints: Vec<CheckpointRef>,
    page_list: Vec<PageStat<'a>>,
    notes: Notes,
}

/// Most pages listed per side when two states have different page sets.
const PAGES_LISTED: usize = 20;

/// Refuses `out` when it is not a directory, or is a live log directory (a replayed state is
/// written as a detached checkpoint file into an empty or new directory, or one holding other
/// files; never among another log's segments, where a writer or reader could take it).
fn check_out_dir(out: &Path) -> Result<(), Fail> {
    match std::fs::symlink_metadata(out) {
        Ok(m) if !m.is_dir() => {
            return Err(input_error(format!(
                "{}: is not a directory (--out names the directory that receives the checkpoint file)",
                out.display()
            )));
        }
        Ok(_) => {}
        Err(_) => return Ok(()),
    }
    let live = match logdir::probe(out) {
        Ok(k) => k.is_log(),
        // A damaged LOGID is still a log directory.
        Err(mmsb::Error::NotALog { .. }) => false,
        Err(_) => true,
    };
    if live || out.join(LOCK_FILE).exists() {
        return Err(input_error(format!(
            "{}: is a log directory (it holds a LOGID file, segments or a LOCK); replay writes into an empty or new directory",
            out.display()
        )));
    }
    Ok(())
}

/// Creates `path` for writing without following a link at it.
fn create_nofollow(path: &Path, bytes: &[u8]) -> Result<(), Fail> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| input_error(format!("{}: {e}", path.display())))
}

fn mkdir(dir: &Path) -> Result<(), Fail> {
    if std::fs::symlink_metadata(dir).is_ok_and(|m| !m.is_dir()) {
        return Err(input_error(format!(
            "{}: is not a directory",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| input_error(format!("{}: {e}", dir.display())))
}

pub(crate) fn replay(
    path: &Path,
    target: ReplayTarget,
    out: &Path,
    raw: bool,
    json: bool,
) -> Result<(), Fail> {
    crate::exists(path)?;
    check_out_dir(out)?;
    let (s, report) = State::replay_reporting(path, target)?;
    let notes = out::restore_notes(path, &report);
    mkdir(out)?;
    let info = checkpoint::write(out, s.last_lsn(), s.next_page_id(), s.pages())?;
    if raw {
        let dir = out.join("pages");
        mkdir(&dir)?;
        for p in s.pages() {
            create_nofollow(&dir.join(format!("{}.bin", p.id().0)), p.bytes())?;
        }
    }
    if json {
        out::json_out(&Replayed {
            target: target.to_string(),
            lsn: s.last_lsn().0,
            pages: s.len(),
            checkpoint: info.path.display().to_string(),
            hashes: s
                .hashes()
                .iter()
                .map(|(p, e, h)| PageHash {
                    page: p.0,
                    epoch: *e,
                    xxh3: format!("{h:016x}"),
                })
                .collect(),
            notes,
        })?;
    } else {
        outln!(
            "replayed to {} ({}): {} pages -> {}",
            target,
            s.last_lsn(),
            s.len(),
            info.path.display()
        );
    }
    Ok(())
}

pub(crate) fn take_checkpoint(dir: &Path, prune: bool, json: bool) -> Result<(), Fail> {
    crate::exists(dir)?;
    let mut c = Config::new(dir);
    c.prune_after_checkpoint = prune;
    // Maintain an existing log; never create one here.
    c.create = false;
    let (mut bus, start) = Mmsb::start_reporting(c)?;
    if let Some(t) = &start.log.truncated {
        out::note(&format!(
            "{}: recovery {}",
            dir.display(),
            out::tail_sentence(t, "discarded")
        ));
    }
    for (file, e) in &start.skipped_checkpoints {
        out::note(&format!("{}: checkpoint not used: {e}", file.display()));
    }
    let info = bus.checkpoint()?;
    bus.stop()?;
    if json {
        out::json_out(&Checkpointed {
            path: info.path.display().to_string(),
            lsn: info.lsn.0,
            pages: info.pages as u64,
            bytes: info.bytes,
            recovery: Recovery {
                discarded_tail: start.log.truncated.as_ref().map(out::tail_json),
                restored_from: start.checkpoint_lsn.map(|l| l.0),
                skipped_checkpoints: out::skipped_json(&start.skipped_checkpoints),
            },
        })?;
    } else {
        outln!(
            "checkpoint {} covers {}: {} pages, {} bytes",
            info.path.display(),
            info.lsn,
            info.pages,
            info.bytes
        );
    }
    Ok(())
}

/// A state from whatever `path` is ([`State::load_reporting`]), with what was left out.
fn load_state(path: &Path) -> Result<(State, Notes), Fail> {
    crate::exists(path)?;
    let (s, report) = State::load_reporting(path)?;
    let notes = out::restore_notes(path, &report);
    Ok((s, notes))
}

fn ids(v: &[PageId]) -> String {
    let mut s: Vec<String> = v
        .iter()
        .take(PAGES_LISTED)
        .map(|p| p.0.to_string())
        .collect();
    if v.len() > PAGES_LISTED {
        s.push(format!("... {} more", v.len() - PAGES_LISTED));
    }
    s.join(", ")
}

pub(crate) fn diff(a: &Path, b: &Path, json: bool) -> Result<(), Fail> {
    let (sa, na) = load_state(a)?;
    let (sb, nb) = load_state(b)?;
    let shape = mmsb::page_set_diff(&sa, &sb);
    if !shape.is_empty() {
        if json {
            out::json_out(&ShapeDiffers {
                a: a.display().to_string(),
                b: b.display().to_string(),
                same: false,
                only_in_a: shape
                    .only_in_a
                    .iter()
                    .take(PAGES_LISTED)
                    .map(|p| p.0)
                    .collect(),
                only_in_a_count: shape.only_in_a.len(),
                only_in_b: shape
                    .only_in_b
                    .iter()
                    .take(PAGES_LISTED)
                    .map(|p| p.0)
                    .collect(),
                only_in_b_count: shape.only_in_b.len(),
                resized: shape
                    .resized
                    .iter()
                    .take(PAGES_LISTED)
                    .map(|(p, x, y)| Resized {
                        page: p.0,
                        size_a: *x,
                        size_b: *y,
                    })
                    .collect(),
                resized_count: shape.resized.len(),
                notes_a: na,
                notes_b: nb,
            })?;
        } else {
            if !shape.only_in_a.is_empty() {
                outln!(
                    "pages only in a ({}): {}",
                    shape.only_in_a.len(),
                    ids(&shape.only_in_a)
                );
            }
            if !shape.only_in_b.is_empty() {
                outln!(
                    "pages only in b ({}): {}",
                    shape.only_in_b.len(),
                    ids(&shape.only_in_b)
                );
            }
            for (p, x, y) in shape.resized.iter().take(PAGES_LISTED) {
                outln!("{p}: {x} bytes in a, {y} bytes in b");
            }
            if shape.resized.len() > PAGES_LISTED {
                outln!(
                    "... {} more pages differ in size",
                    shape.resized.len() - PAGES_LISTED
                );
            }
        }
        return Err(Fail {
            code: 1,
            msg: format!(
                "the page sets differ: {} pages only in a, {} only in b, {} of different sizes",
                shape.only_in_a.len(),
                shape.only_in_b.len(),
                shape.resized.len()
            ),
        });
    }
    let deltas = mmsb::diff(&sa, &sb)?;
    let rows: Vec<_> = deltas
        .iter()
        .map(|d| {
            let (changed, runs) = match d.mask() {
                Some(m) => (m.count(), m.runs().len()),
                None => {
                    let pa = sa.page(d.page).map(|p| p.bytes()).unwrap_or_default();
                    let n = pa.iter().zip(d.payload()).filter(|(x, y)| x != y).count();
                    (n, 0)
                }
            };
            (d.page, changed, runs, d.is_dense())
        })
        .collect();
    if json {
        out::json_out(&Compared {
            a: a.display().to_string(),
            b: b.display().to_string(),
            same: rows.is_empty(),
            pages: rows
                .iter()
                .map(|(p, c, r, dense)| PageDiff {
                    page: p.0,
                    changed_bytes: *c,
                    runs: *r,
                    dense: *dense,
                })
                .collect(),
            notes_a: na,
            notes_b: nb,
        })?;
    } else if rows.is_empty() {
        outln!("same: {} pages", sa.len());
    } else {
        for (p, c, r, dense) in &rows {
            outln!(
                "{p}: {c} bytes differ{}",
                if *dense {
                    " (most of the page)".to_string()
                } else {
                    format!(" in {r} runs")
                }
            );
        }
    }
    if rows.is_empty() {
        Ok(())
    } else {
        Err(Fail {
            code: 1,
            msg: format!("{} pages differ", rows.len()),
        })
    }
}

pub(crate) fn stats(path: &Path, json: bool) -> Result<(), Fail> {
    crate::exists(path)?;
    let (s, report) = State::replay_reporting(path, ReplayTarget::End)?;
    let notes = out::restore_notes(path, &report);
    let reader = LogReader::open(path)?;
    let segments = reader.segments()?;
    let log_bytes: u64 = segments
        .iter()
        .filter_map(|(_, p)| std::fs::symlink_metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let ckpts = if path.is_dir() {
        checkpoint::list(path)?
    } else {
        Vec::new()
    };
    let max_epoch = s.pages().map(|p| p.epoch()).max().unwrap_or(0);
    let total_epochs: u64 = s.pages().map(|p| p.epoch()).sum();
    if json {
        out::json_out(&Stats {
            pages: s.len(),
            page_bytes: s.bytes(),
            last_lsn: s.last_lsn().0,
            next_page_id: s.next_page_id(),
            max_epoch,
            sum_of_epochs: total_epochs,
            segments: segments.len(),
            log_bytes,
            checkpoints: ckpts
                .iter()
                .map(|(l, p)| CheckpointRef {
                    lsn: l.0,
                    file: p.display().to_string(),
                })
                .collect(),
            page_list: s
                .pages()
                .map(|p| PageStat {
                    page: p.id().0,
                    size: p.size(),
                    epoch: p.epoch(),
                    xxh3: format!("{:016x}", p.hash()),
                    metadata_keys: p.metadata().keys().collect(),
                })
                .collect(),
            notes,
        })?;
    } else {
        outln!("pages        {} ({} bytes)", s.len(), s.bytes());
        outln!("last LSN     {}", s.last_lsn().0);
        outln!("epochs       max {max_epoch}, total {total_epochs}");
        outln!("segments     {} ({log_bytes} bytes)", segments.len());
        outln!("checkpoints  {}", ckpts.len());
        for (l, p) in &ckpts {
            outln!("  {} covers {}", p.display(), l);
        }
        if let Some((l, p)) = &report.checkpoint {
            outln!("restored from {} ({l})", p.display());
        }
    }
    Ok(())
}
