//! `mmsb trace`: apply an editing trace through MMSB and check it.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use mmsb::tlog::Durability;
use mmsb::{ReplayTarget, State};
use mmsb_cli::trace::doc::logical_text;
use mmsb_cli::trace::{self, RunOptions};
use serde_json::json;

use crate::{Fail, input_error};

#[derive(Args, Debug)]
pub(crate) struct TraceArgs {
    /// The trace (`.json.gz` or `.json`, josephg/editing-traces format). Without it, an
    /// embedded trace generated in code (deterministic, with multi-byte characters).
    file: Option<PathBuf>,
    /// Log directory (must be missing or empty); default: a temporary directory, removed at
    /// the end.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Take a checkpoint every N transactions.
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Write the final document here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Transactions per commit (one propagation wave each) [default: 100].
    #[arg(long, default_value_t = trace::run::DEFAULT_WAVE_EVERY)]
    wave_every: usize,
    /// Log durability: buffered, flush, fsync:N (every N commits), group:MS.
    #[arg(long, default_value = "flush", value_parser = parse_durability)]
    durability: Durability,
    /// Skip the checks that replay the log from empty and restore from the mid-trace checkpoint.
    #[arg(long)]
    no_verify: bool,
    #[arg(long)]
    json: bool,
}

fn parse_durability(s: &str) -> Result<Durability, String> {
    match s.split_once(':') {
        None if s == "buffered" => Ok(Durability::Buffered),
        None if s == "flush" => Ok(Durability::Flush),
        Some(("fsync", n)) => n
            .parse()
            .map(Durability::FsyncEvery)
            .map_err(|_| format!("bad count {n:?}")),
        Some(("group", ms)) => ms
            .parse()
            .map(|m| Durability::GroupCommit(Duration::from_millis(m)))
            .map_err(|_| format!("bad interval {ms:?}")),
        _ => Err(format!(
            "unknown durability {s:?} (buffered, flush, fsync:N, group:MS)"
        )),
    }
}

pub(crate) fn run(a: &TraceArgs) -> Result<(), Fail> {
    let t = match &a.file {
        Some(p) => trace::load(p).map_err(|e| input_error(e.to_string()))?,
        None => trace::default_trace(),
    };
    let opts = RunOptions {
        trace: a.file.clone(),
        log_dir: a.log.clone(),
        wave_every: a.wave_every.max(1),
        checkpoint_every: a.checkpoint_every,
        mid_checkpoint: !a.no_verify,
        durability: a.durability,
        timings: true,
    };
    let report = trace::run::run_trace(&t, &opts).map_err(|e| input_error(e.to_string()))?;
    // The final document, read back from what the log directory holds.
    let state = State::replay(&report.log_dir, ReplayTarget::End)
        .or_else(|_| State::restore(&report.log_dir))
        .map_err(|e| input_error(e.to_string()))?;
    let header = state
        .page(report.pages.header)
        .map(|p| p.bytes())
        .unwrap_or_default();
    let doc = state
        .page(report.pages.document)
        .map(|p| p.bytes())
        .unwrap_or_default();
    let text = logical_text(header, doc).unwrap_or_default();
    if let Some(out) = &a.out {
        std::fs::write(out, text.as_bytes())
            .map_err(|e| input_error(format!("{}: {e}", out.display())))?;
    }
    let matches = text == t.end_content();
    let verified = if a.no_verify || !matches {
        None
    } else {
        Some(trace::run::verify(&t, &report))
    };
    let verify_error = match &verified {
        Some(Err(e)) => Some(e.to_string()),
        _ => None,
    };
    if a.json {
        let v = verified.as_ref().and_then(|r| r.as_ref().ok());
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "report": &report,
                "matches_end_content": matches,
                "checks": v.map(|v| &v.checks),
                "replay_seconds": v.map(|v| v.replay_seconds),
                "restore_seconds": v.map(|v| v.restore_seconds),
                "verify_error": verify_error,
            }))
            .unwrap_or_default()
        );
    } else {
        println!(
            "trace {}: {} transactions, {} patches",
            report.trace, report.txns, report.patches
        );
        println!(
            "  applied in {:.3} s ({} commits, {} user deltas, {} log bytes); checkpoints {:.3} s",
            report.apply_seconds,
            report.commits,
            report.user_deltas,
            report.log_file_bytes,
            report.checkpoint_seconds
        );
        println!(
            "  document {} bytes, {} chars, {} words, {} lines",
            report.doc_bytes, report.doc_chars, report.word_count, report.line_starts
        );
        println!(
            "  endContent: {}",
            if matches { "identical" } else { "DIFFERENT" }
        );
        if let Some(Ok(v)) = &verified {
            for c in &v.checks {
                println!("  ok: {c}");
            }
            println!(
                "  replay from empty {:.3} s, restore from checkpoint {:.3} s",
                v.replay_seconds, v.restore_seconds
            );
        }
    }
    if !matches {
        let at = text
            .bytes()
            .zip(t.end_content().bytes())
            .position(|(x, y)| x != y)
            .unwrap_or(text.len().min(t.end_content().len()));
        return Err(Fail {
            code: 1,
            msg: format!(
                "{}: final document differs from endContent at byte {at}",
                report.trace
            ),
        });
    }
    if let Some(e) = verify_error {
        return Err(Fail {
            code: 1,
            msg: format!("{}: {e}", report.trace),
        });
    }
    Ok(())
}
