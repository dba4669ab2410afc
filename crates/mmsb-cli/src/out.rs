//! Output and messages: standard output that survives a closed pipe, bounded error messages,
//! quoted user input cut to a readable length, and the notes a read command prints about what
//! it skipped.

use std::path::Path;

use mmsb::RestoreReport;
use mmsb::tlog::Truncation;
use serde_json::{Value, json};

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

/// JSON of a tail.
pub(crate) fn tail_json(t: &Truncation) -> Value {
    json!({"file": t.file.display().to_string(), "offset": t.offset, "bytes": t.bytes_dropped,
           "frames": t.frames_dropped, "reason": t.reason})
}

/// Prints what a read command skipped (standard error) and returns it as JSON for `--json`:
/// `{"restored_from": .., "skipped_checkpoints": [..], "ignored_tail": ..}`.
pub(crate) fn restore_notes(path: &Path, r: &RestoreReport) -> Value {
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
    json!({
        "restored_from": r.checkpoint.as_ref().map(|(l, p)| json!({"lsn": l.0, "file": p.display().to_string()})),
        "skipped_checkpoints": r.skipped.iter().map(|(p, e)| json!({"file": p.display().to_string(), "reason": e.to_string()})).collect::<Vec<_>>(),
        "ignored_tail": r.tail.as_ref().map(tail_json),
    })
}
