//! `mmsb`: inspect and verify MMSB write-ahead logs, replay them, checkpoint, diff states, and
//! apply real editing traces.
//!
//! Exit codes: 0 ok; 1 a check failed (`log verify` found corruption, a checkpoint that cannot
//! be used or a state that cannot be rebuilt; `diff` found differences, in bytes or in the page
//! sets; `trace` output differs from `endContent`); 2 usage or input error (including a log that
//! `stats`, `replay`, `diff` or `checkpoint` cannot read: the same finding `verify` reports with
//! 1); `trace` interrupted by SIGINT or SIGTERM: 130 or 143, after removing its temporary log.
//! Errors are one line, bounded in length; notes about what a command skipped (a torn tail, a
//! checkpoint not used) go to standard error as `mmsb: note: ...` and into `--json` output.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mmsb::{Lsn, PageId, ReplayTarget};

/// Prints one formatted line to standard output, returning a [`Fail`] from the enclosing
/// function when standard output fails (other than a closed pipe).
macro_rules! outln {
    ($($t:tt)*) => {
        $crate::out::line(&format!($($t)*))?
    };
}

mod log_cmd;
mod out;
mod replicate_cmd;
mod state_cmd;
mod trace_cmd;

#[derive(Parser, Debug)]
#[command(
    name = "mmsb",
    version,
    about = "Inspect, verify, replay and checkpoint MMSB logs; apply editing traces"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Write-ahead log commands.
    Log {
        #[command(subcommand)]
        cmd: LogCmd,
    },
    /// Replay a log into a detached state and write it as a checkpoint file into DIR (never
    /// into a log directory).
    Replay {
        /// Log directory or one segment file.
        path: PathBuf,
        /// Stop after this LSN.
        #[arg(long, group = "target")]
        to_lsn: Option<u64>,
        /// Stop when PAGE reaches EPOCH (`PAGE:EPOCH`).
        #[arg(long, group = "target", value_parser = parse_epoch)]
        to_epoch: Option<(u64, u64)>,
        /// Stop after the last frame with a timestamp <= this (ns since the Unix epoch).
        #[arg(long, group = "target")]
        to_time: Option<u64>,
        /// Output directory (created; must not be a log directory); receives
        /// `checkpoint-<lsn>.ckpt`.
        #[arg(long)]
        out: PathBuf,
        /// Also write each page's bytes to `DIR/pages/<id>.bin`.
        #[arg(long)]
        pages: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Take a checkpoint of an existing log directory (as its writer: fails if another writer
    /// has it; refuses a damaged log, reports a torn tail it discards).
    Checkpoint {
        /// Log directory.
        dir: PathBuf,
        /// Delete the log segments the checkpoint covers.
        #[arg(long)]
        prune: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Compare two states (log directory, segment file or checkpoint file); exit 1 if they differ.
    Diff {
        /// The first state.
        a: PathBuf,
        /// The second state.
        b: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Summary of a log directory: pages, sizes, epochs, LSN range, segments, checkpoints.
    Stats {
        /// Log directory or one segment file.
        path: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Apply an editing trace (josephg/editing-traces `.json.gz`) through MMSB and check the
    /// result against `endContent` (exit 1 if it differs). Without FILE, an embedded trace.
    Trace(trace_cmd::TraceArgs),
    /// Ship a log's committed frames (and checkpoints) to a NATS JetStream stream, until
    /// SIGINT/SIGTERM or --until-lsn. One shipper per stream (a lease); exit 1 when fenced.
    Ship(replicate_cmd::ShipArgs),
    /// Follow a JetStream stream into a read-only replica directory (built from the newest
    /// checkpoint when new, resumed when not); exit 2 on a corrupt or hostile frame, naming
    /// its LSN, 1 when the stream no longer holds what the replica needs.
    Follow(replicate_cmd::FollowArgs),
    /// Make a caught-up replica the stream's writer, fencing the old leader off.
    Promote(replicate_cmd::PromoteArgs),
}

#[derive(Subcommand, Debug)]
enum LogCmd {
    /// Frames, LSN range, pages and sizes of a log.
    Inspect {
        /// Log directory or one segment file.
        path: PathBuf,
        /// List every frame (or `--limit` of them).
        #[arg(long)]
        frames: bool,
        /// First LSN to list with `--frames`.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Most frames to list with `--frames`.
        #[arg(long)]
        limit: Option<usize>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check every frame (CRC, LSN order), every checkpoint, and that the state can be rebuilt;
    /// exit 1 on a problem, naming file and offset.
    Verify {
        /// Log directory or one segment file.
        path: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn parse_epoch(s: &str) -> Result<(u64, u64), String> {
    let (p, e) = s
        .split_once(':')
        .ok_or_else(|| format!("expected PAGE:EPOCH, got {}", out::quote(s)))?;
    Ok((
        p.parse()
            .map_err(|_| format!("bad page id {}", out::quote(p)))?,
        e.parse()
            .map_err(|_| format!("bad epoch {}", out::quote(e)))?,
    ))
}

/// A failure: exit code 1 (a check failed) or 2 (usage or input error), with its message.
#[derive(Debug)]
pub(crate) struct Fail {
    pub(crate) code: u8,
    pub(crate) msg: String,
}

impl From<mmsb::Error> for Fail {
    fn from(e: mmsb::Error) -> Fail {
        input_error(e.to_string())
    }
}

impl From<cli_support::StdoutError> for Fail {
    /// A closed standard output ends the command quietly with 0; any other write error is 2.
    fn from(e: cli_support::StdoutError) -> Fail {
        Fail {
            code: e.exit_code(),
            msg: if e.is_closed() {
                String::new()
            } else {
                e.to_string()
            },
        }
    }
}

pub(crate) fn input_error(msg: impl Into<String>) -> Fail {
    Fail {
        code: cli_support::exit::BAD_INPUT,
        msg: msg.into(),
    }
}

/// A failed check (exit 1) with its message.
pub(crate) fn check_failed(msg: impl Into<String>) -> Fail {
    Fail {
        code: cli_support::exit::CHECK_FAILED,
        msg: msg.into(),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help, --version: not errors.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One bounded line: clap's message quotes the offending value in full.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("mmsb: {} (see mmsb --help)", out::bound(first));
            return ExitCode::from(cli_support::exit::BAD_INPUT);
        }
    };
    let r = match cli.cmd {
        Cmd::Log {
            cmd:
                LogCmd::Inspect {
                    path,
                    frames,
                    from,
                    limit,
                    json,
                },
        } => log_cmd::inspect(&path, frames, from, limit, json),
        Cmd::Log {
            cmd: LogCmd::Verify { path, json },
        } => log_cmd::verify(&path, json),
        Cmd::Replay {
            path,
            to_lsn,
            to_epoch,
            to_time,
            out,
            pages,
            json,
        } => {
            let target = match (to_lsn, to_epoch, to_time) {
                (Some(l), _, _) => ReplayTarget::Lsn(Lsn(l)),
                (_, Some((p, e)), _) => ReplayTarget::PageEpoch(PageId(p), e),
                (_, _, Some(t)) => ReplayTarget::Timestamp(t),
                _ => ReplayTarget::End,
            };
            state_cmd::replay(&path, target, &out, pages, json)
        }
        Cmd::Checkpoint { dir, prune, json } => state_cmd::take_checkpoint(&dir, prune, json),
        Cmd::Diff { a, b, json } => state_cmd::diff(&a, &b, json),
        Cmd::Stats { path, json } => state_cmd::stats(&path, json),
        Cmd::Trace(args) => trace_cmd::run(&args),
        Cmd::Ship(args) => replicate_cmd::ship(&args),
        Cmd::Follow(args) => replicate_cmd::follow(&args),
        Cmd::Promote(args) => replicate_cmd::promote(&args),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            // A closed standard output: exit 0 and say nothing.
            if !f.msg.is_empty() {
                eprintln!("mmsb: {}", out::bound(&f.msg));
            }
            ExitCode::from(f.code)
        }
    }
}

pub(crate) fn exists(path: &Path) -> Result<(), Fail> {
    if std::fs::symlink_metadata(path).is_ok() {
        Ok(())
    } else {
        Err(input_error(format!(
            "{}: no such file or directory",
            path.display()
        )))
    }
}
