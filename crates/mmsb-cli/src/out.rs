//! Output and messages: standard output that survives a closed pipe, bounded error messages,
//! quoted user input cut to a readable length, and the notes a read command prints about what
//! it skipped.

use std::path::Path;

use mmsb::RestoreReport;
use mmsb::tlog::Truncation;
use serde::Serialize;

use crate::Fail;

/// Longest quoted piece of user input in a message, in bytes.
const QUOTE_MAX: usize = cli_support::QUOTE_MAX;
/// Longest error message, in bytes (the rest is cut and counted).
const MESSAGE_MAX: usize = 2048;

/// Prints one line to standard output. A closed pipe (`mmsb ... | head -1`) ends the command
/// quietly with exit 0 (a [`Fail`] with code 0 and no message, so destructors still run); any
/// other write error is exit 2, naming "standard output".
pub(crate) fn line(s: &str) -> Result<(), Fail> {
    Ok(cli_support::stdout::line(s)?)
}

/// Prints `v` (a `Serialize` report type) as pretty JSON.
pub(crate) fn json_out<T: serde::Serialize + ?Sized>(v: &T) -> Result<(), Fail> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| crate::input_error(format!("cannot serialise the report: {e}")))?;
    line(&text)
}

/// `s` quoted for a message, cut to [`QUOTE_MAX`] bytes (with its full length) when longer.
pub(crate) fn quote(s: &str) -> String {
    cli_support::quote(s, QUOTE_MAX)
}

/// A message cut to [`MESSAGE_MAX`] bytes and to one line, whatever it quotes.
pub(crate) fn bound(msg: &str) -> String {
    let one: String = msg
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    if one.len() <= MESSAGE_MAX {
        return one;
    }
    let mut end = MESSAGE_MAX;
    while !one.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes in all)", &one[..end], one.len())
}

/// A note on standard error (`mmsb: note: ...`), bounded like errors.
pub(crate) fn note(msg: &str) {
    eprintln!("mmsb: note: {}", bound(msg));
}

/// The sentence for a tail that recovery cut or a reader ignored.
pub(crate) fn tail_sentence(t: &Truncation, verb: &str) -> String {
    format!(
        "{verb} {} bytes ({} complete uncommitted frames) at the end of {} from byte offset {}: {}",
        t.bytes_dropped,
        t.frames_dropped,
        t.file.display(),
        t.offset,
        t.reason
    )
}

/// JSON of a tail that recovery cut or a reader ignored.
#[derive(Debug, Serialize)]
pub(crate) struct TailJson {
    file: String,
    offset: u64,
    bytes: u64,
    frames: u64,
    reason: String,
}

/// JSON of a tail.
pub(crate) fn tail_json(t: &Truncation) -> TailJson {
    TailJson {
        file: t.file.display().to_string(),
        offset: t.offset,
        bytes: t.bytes_dropped,
        frames: t.frames_dropped,
        reason: t.reason.clone(),
    }
}

/// A checkpoint file and its LSN.
#[derive(Debug, Serialize)]
pub(crate) struct CheckpointRef {
    pub(crate) lsn: u64,
    pub(crate) file: String,
}

/// A checkpoint a reader did not use, and why.
#[derive(Debug, Serialize)]
pub(crate) struct Skipped {
    file: String,
    reason: String,
}

/// `(file, error)` pairs of checkpoints not used, for JSON.
pub(crate) fn skipped_json<E: std::fmt::Display>(
    skipped: &[(std::path::PathBuf, E)],
) -> Vec<Skipped> {
    skipped
        .iter()
        .map(|(p, e)| Skipped {
            file: p.display().to_string(),
            reason: e.to_string(),
        })
        .collect()
}

/// What a read command left out, as its `--json` output says it.
#[derive(Debug, Serialize)]
pub(crate) struct Notes {
    restored_from: Option<CheckpointRef>,
    skipped_checkpoints: Vec<Skipped>,
    ignored_tail: Option<TailJson>,
}

/// Prints what a read command skipped (standard error) and returns it for `--json`:
/// `{"restored_from": .., "skipped_checkpoints": [..], "ignored_tail": ..}`.
pub(crate) fn restore_notes(path: &Path, r: &RestoreReport) -> Notes {
    for (file, e) in &r.skipped {
        note(&format!("{}: checkpoint not used: {e}", file.display()));
    }
    if let Some(t) = &r.tail {
        note(&format!(
            "{}: {} (read-only: nothing was changed)",
            path.display(),
            tail_sentence(t, "ignored")
        ));
    }
    Notes {
        restored_from: r.checkpoint.as_ref().map(|(l, p)| CheckpointRef {
            lsn: l.0,
            file: p.display().to_string(),
        }),
        skipped_checkpoints: skipped_json(&r.skipped),
        ignored_tail: r.tail.as_ref().map(tail_json),
    }
}
