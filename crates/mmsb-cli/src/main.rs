//! `mmsb`: inspect and verify MMSB write-ahead logs, replay them, checkpoint, diff states, and
//! apply real editing traces.
//!
//! Exit codes: 0 ok; 1 a check failed (`log verify` found corruption, `diff` found differences,
//! `trace` output differs from `endContent`); 2 usage or input error. Errors are one line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mmsb::checkpoint;
use mmsb::frame::FrameBody;
use mmsb::tlog::{self, LogReader};
use mmsb::{Config, Lsn, Mmsb, PageId, ReplayTarget, State};
use serde_json::json;

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
    /// Replay a log into a detached state and write it as a checkpoint file into DIR.
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
        /// Output directory (created); receives `checkpoint-<lsn>.ckpt`.
        #[arg(long)]
        out: PathBuf,
        /// Also write each page's bytes to `DIR/pages/<id>.bin`.
        #[arg(long)]
        pages: bool,
        #[arg(long)]
        json: bool,
    },
    /// Take a checkpoint of a log directory (as its writer: fails if another writer has it).
    Checkpoint {
        /// Log directory.
        dir: PathBuf,
        /// Delete the log segments the checkpoint covers.
        #[arg(long)]
        prune: bool,
        #[arg(long)]
        json: bool,
    },
    /// Compare two states (log directory, segment file or checkpoint file); exit 1 if they differ.
    Diff {
        a: PathBuf,
        b: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Summary of a log directory: pages, sizes, epochs, LSN range, segments, checkpoints.
    Stats {
        /// Log directory or one segment file.
        path: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Apply an editing trace (josephg/editing-traces `.json.gz`) through MMSB and check the
    /// result against `endContent` (exit 1 if it differs). Without FILE, an embedded trace.
    Trace(trace_cmd::TraceArgs),
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
        #[arg(long)]
        json: bool,
    },
    /// Check the CRC and LSN order of every frame; exit 1 on corruption, naming file and offset.
    Verify {
        /// Log directory or one segment file.
        path: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn parse_epoch(s: &str) -> Result<(u64, u64), String> {
    let (p, e) = s.split_once(':').ok_or("expected PAGE:EPOCH")?;
    Ok((
        p.parse().map_err(|_| format!("bad page id {p:?}"))?,
        e.parse().map_err(|_| format!("bad epoch {e:?}"))?,
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
        Fail {
            code: 2,
            msg: e.to_string(),
        }
    }
}

pub(crate) fn input_error(msg: impl Into<String>) -> Fail {
    Fail {
        code: 2,
        msg: msg.into(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        } => inspect(&path, frames, from, limit, json),
        Cmd::Log {
            cmd: LogCmd::Verify { path, json },
        } => verify(&path, json),
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
            replay(&path, target, &out, pages, json)
        }
        Cmd::Checkpoint { dir, prune, json } => take_checkpoint(&dir, prune, json),
        Cmd::Diff { a, b, json } => diff(&a, &b, json),
        Cmd::Stats { path, json } => stats(&path, json),
        Cmd::Trace(args) => trace_cmd::run(&args),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("mmsb: {}", f.msg);
            ExitCode::from(f.code)
        }
    }
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn exists(path: &Path) -> Result<(), Fail> {
    if path.exists() {
        Ok(())
    } else {
        Err(input_error(format!(
            "{}: no such file or directory",
            path.display()
        )))
    }
}

#[derive(Default)]
struct PageTally {
    deltas: u64,
    dense: u64,
    bytes: u64,
    last_epoch: u64,
}

fn inspect(
    path: &Path,
    list: bool,
    from: u64,
    limit: Option<usize>,
    json: bool,
) -> Result<(), Fail> {
    exists(path)?;
    let reader = LogReader::open(path)?.with_uncommitted(true);
    let segments = reader.segments()?;
    let mut kinds: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut sources: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut pages: BTreeMap<u64, PageTally> = BTreeMap::new();
    let (mut first, mut last, mut frames, mut frame_bytes, mut payload) =
        (None, None, 0u64, 0u64, 0u64);
    let (mut first_ts, mut last_ts) = (None, 0u64);
    let mut listed = Vec::new();
    let mut iter = reader.frames()?;
    for item in iter.by_ref() {
        let at = item?;
        let f = &at.frame;
        first.get_or_insert(f.lsn);
        last = Some(f.lsn);
        first_ts.get_or_insert(f.timestamp_ns);
        last_ts = f.timestamp_ns;
        frames += 1;
        frame_bytes += u64::from(at.len);
        *kinds.entry(f.kind().name()).or_default() += 1;
        if let FrameBody::Delta(body) = &f.body {
            *sources.entry(f.source.name()).or_default() += 1;
            let t = pages.entry(f.page.0).or_default();
            t.deltas += 1;
            let n = match body {
                mmsb::Body::Dense(b) => {
                    t.dense += 1;
                    b.len()
                }
                mmsb::Body::Sparse { payload, .. } => payload.len(),
            } as u64;
            t.bytes += n;
            t.last_epoch = f.epoch;
            payload += n;
        } else if let FrameBody::CreatePage { .. } = &f.body {
            pages.entry(f.page.0).or_default();
        }
        if list && f.lsn.0 >= from && limit.is_none_or(|l| listed.len() < l) {
            let changed = match &f.body {
                FrameBody::Delta(b) => Some(match b {
                    mmsb::Body::Dense(d) => d.len(),
                    mmsb::Body::Sparse { payload, .. } => payload.len(),
                }),
                _ => None,
            };
            listed.push(json!({
                "lsn": f.lsn.0, "file": at.file.display().to_string(), "offset": at.offset, "len": at.len,
                "kind": f.kind().name(), "page": f.page.0, "epoch": f.epoch, "source": f.source.name(),
                "commit": f.commit, "timestamp_ns": f.timestamp_ns, "changed_bytes": changed,
                "dense": matches!(&f.body, FrameBody::Delta(mmsb::Body::Dense(_))),
            }));
        }
    }
    let tail = iter.tail().cloned();
    if json {
        print_json(&json!({
            "path": path.display().to_string(),
            "segments": segments.iter().map(|(l, p)| json!({"file": p.display().to_string(), "first_lsn": l.0})).collect::<Vec<_>>(),
            "frames": frames, "frame_bytes": frame_bytes, "payload_bytes": payload,
            "first_lsn": first.map(|l| l.0), "last_lsn": last.map(|l| l.0),
            "first_timestamp_ns": first_ts, "last_timestamp_ns": last_ts,
            "kinds": kinds, "delta_sources": sources,
            "pages": pages.iter().map(|(id, t)| json!({"page": id, "deltas": t.deltas, "dense": t.dense, "bytes": t.bytes, "last_epoch": t.last_epoch})).collect::<Vec<_>>(),
            "tail": tail.map(|t| json!({"file": t.file.display().to_string(), "offset": t.offset, "bytes": t.bytes_dropped, "reason": t.reason})),
            "frame_list": if list { Some(listed) } else { None },
        }));
        return Ok(());
    }
    println!("log {}", path.display());
    println!("  segments   {}", segments.len());
    for (l, p) in &segments {
        println!("    {}  first {}", p.display(), l);
    }
    match (first, last) {
        (Some(a), Some(b)) => println!("  LSN        {} ..= {}", a.0, b.0),
        _ => println!("  LSN        (empty)"),
    }
    println!("  frames     {frames} ({frame_bytes} bytes; {payload} payload bytes)");
    for (k, n) in &kinds {
        println!("    {k:<12} {n}");
    }
    for (s, n) in &sources {
        println!("    deltas from {s:<12} {n}");
    }
    println!("  pages      {}", pages.len());
    for (id, t) in pages.iter().take(20) {
        println!(
            "    page {id:<6} deltas {:<8} dense {:<6} bytes {:<10} epoch {}",
            t.deltas, t.dense, t.bytes, t.last_epoch
        );
    }
    if pages.len() > 20 {
        println!("    ... {} more (use --json)", pages.len() - 20);
    }
    if let Some(t) = tail {
        println!(
            "  tail       {} at offset {}: {} ({} bytes)",
            t.file.display(),
            t.offset,
            t.reason,
            t.bytes_dropped
        );
    }
    for f in listed {
        println!(
            "  {:>8}  {:<11} page {:<5} epoch {:<7} {:<11} {:>8} B{}{}",
            f["lsn"],
            f["kind"].as_str().unwrap_or(""),
            f["page"],
            f["epoch"],
            f["source"].as_str().unwrap_or(""),
            f["changed_bytes"]
                .as_u64()
                .map_or(String::from("-"), |n| n.to_string()),
            if f["dense"] == true { " dense" } else { "" },
            if f["commit"] == true { " commit" } else { "" },
        );
    }
    Ok(())
}

fn verify(path: &Path, json: bool) -> Result<(), Fail> {
    exists(path)?;
    let r = tlog::verify(path)?;
    if json {
        print_json(&json!({
            "ok": r.is_ok(), "frames": r.frames, "last_lsn": r.last_lsn.0,
            "segments": r.segments.iter().map(|s| json!({"file": s.file.display().to_string(), "first_lsn": s.first_lsn.0, "frames": s.frames, "bytes": s.bytes, "uncommitted": s.uncommitted})).collect::<Vec<_>>(),
            "problems": r.problems.iter().map(|p| json!({"file": p.file.display().to_string(), "offset": p.offset, "reason": p.reason, "tail": p.tail})).collect::<Vec<_>>(),
        }));
    } else {
        for s in &r.segments {
            println!(
                "{}: {} frames, {} bytes, first {}",
                s.file.display(),
                s.frames,
                s.bytes,
                s.first_lsn
            );
        }
        for p in &r.problems {
            println!(
                "{}: {} at byte offset {}: {}",
                p.file.display(),
                if p.tail { "torn tail" } else { "CORRUPT" },
                p.offset,
                p.reason
            );
        }
        println!(
            "{} frames, last {}: {}",
            r.frames,
            r.last_lsn,
            if r.is_ok() { "ok" } else { "problems found" }
        );
    }
    if r.is_ok() {
        Ok(())
    } else {
        let p = &r.problems[0];
        Err(Fail {
            code: 1,
            msg: format!(
                "{}: corrupt at byte offset {}: {}",
                p.file.display(),
                p.offset,
                p.reason
            ),
        })
    }
}

fn replay(
    path: &Path,
    target: ReplayTarget,
    out: &Path,
    raw: bool,
    json: bool,
) -> Result<(), Fail> {
    exists(path)?;
    let s = State::replay(path, target)?;
    std::fs::create_dir_all(out).map_err(|e| input_error(format!("{}: {e}", out.display())))?;
    let info = checkpoint::write(out, s.last_lsn(), s.next_page_id(), s.pages())?;
    if raw {
        let dir = out.join("pages");
        std::fs::create_dir_all(&dir)
            .map_err(|e| input_error(format!("{}: {e}", dir.display())))?;
        for p in s.pages() {
            let f = dir.join(format!("{}.bin", p.id().0));
            std::fs::write(&f, p.bytes())
                .map_err(|e| input_error(format!("{}: {e}", f.display())))?;
        }
    }
    if json {
        print_json(&json!({
            "target": target.to_string(), "lsn": s.last_lsn().0, "pages": s.len(), "checkpoint": info.path.display().to_string(),
            "hashes": s.hashes().iter().map(|(p, e, h)| json!({"page": p.0, "epoch": e, "xxh3": format!("{h:016x}")})).collect::<Vec<_>>(),
        }));
    } else {
        println!(
            "replayed to {} ({}): {} pages -> {}",
            target,
            s.last_lsn(),
            s.len(),
            info.path.display()
        );
    }
    Ok(())
}

fn take_checkpoint(dir: &Path, prune: bool, json: bool) -> Result<(), Fail> {
    exists(dir)?;
    let mut c = Config::new(dir);
    c.prune_after_checkpoint = prune;
    let mut bus = Mmsb::start(c)?;
    let info = bus.checkpoint()?;
    bus.stop()?;
    if json {
        print_json(
            &json!({"path": info.path.display().to_string(), "lsn": info.lsn.0, "pages": info.pages, "bytes": info.bytes}),
        );
    } else {
        println!(
            "checkpoint {} covers {}: {} pages, {} bytes",
            info.path.display(),
            info.lsn,
            info.pages,
            info.bytes
        );
    }
    Ok(())
}

/// A state from a log directory (restore), a checkpoint file or a segment file (replay).
fn load_state(path: &Path) -> Result<State, Fail> {
    exists(path)?;
    if path.is_dir() {
        return Ok(State::restore(path)?);
    }
    if path.extension().is_some_and(|e| e == "ckpt") {
        return Ok(State::from_checkpoint(checkpoint::read(path)?)?);
    }
    Ok(State::replay(path, ReplayTarget::End)?)
}

fn diff(a: &Path, b: &Path, json: bool) -> Result<(), Fail> {
    let sa = load_state(a)?;
    let sb = load_state(b)?;
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
        print_json(&json!({
            "a": a.display().to_string(), "b": b.display().to_string(), "same": rows.is_empty(),
            "pages": rows.iter().map(|(p, c, r, dense)| json!({"page": p.0, "changed_bytes": c, "runs": r, "dense": dense})).collect::<Vec<_>>(),
        }));
    } else if rows.is_empty() {
        println!("same: {} pages", sa.len());
    } else {
        for (p, c, r, dense) in &rows {
            println!(
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

fn stats(path: &Path, json: bool) -> Result<(), Fail> {
    exists(path)?;
    let s = if path.is_dir() {
        State::restore(path)?
    } else {
        State::replay(path, ReplayTarget::End)?
    };
    let reader = LogReader::open(path)?;
    let segments = reader.segments()?;
    let log_bytes: u64 = segments
        .iter()
        .filter_map(|(_, p)| std::fs::metadata(p).ok())
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
        print_json(&json!({
            "pages": s.len(), "page_bytes": s.bytes(), "last_lsn": s.last_lsn().0, "next_page_id": s.next_page_id(),
            "max_epoch": max_epoch, "sum_of_epochs": total_epochs,
            "segments": segments.len(), "log_bytes": log_bytes,
            "checkpoints": ckpts.iter().map(|(l, p)| json!({"lsn": l.0, "file": p.display().to_string()})).collect::<Vec<_>>(),
            "page_list": s.pages().map(|p| json!({"page": p.id().0, "size": p.size(), "epoch": p.epoch(), "xxh3": format!("{:016x}", p.hash()), "metadata_keys": p.metadata().keys().collect::<Vec<_>>()})).collect::<Vec<_>>(),
        }));
    } else {
        println!("pages        {} ({} bytes)", s.len(), s.bytes());
        println!("last LSN     {}", s.last_lsn().0);
        println!("epochs       max {max_epoch}, total {total_epochs}");
        println!("segments     {} ({log_bytes} bytes)", segments.len());
        println!("checkpoints  {}", ckpts.len());
        for (l, p) in &ckpts {
            println!("  {} covers {}", p.display(), l);
        }
    }
    Ok(())
}
