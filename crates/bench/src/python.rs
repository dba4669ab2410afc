//! `bench python [--quick] [--json] [--out PATH] [--python PATH]`: what a DataHub slot costs
//! from Python (the `memsys` package, crates/python) against the same loop in Rust, in one run.
//!
//! # What is timed
//! For 64 B and 4 KiB payloads: one Sequential block of 64 slots and a consumer in the same
//! process and thread (no second process: this measures the per-call cost of each language's
//! binding, not IPC). N messages in phases of 64: 64 writes (claim a slot, copy the payload
//! into it, commit), then 64 reads (take the slot, check its last byte, release it); each
//! phase timed with a monotonic clock, ns/op = phase time / 64, summed over phases, one
//! untimed warm-up phase first. Rust: `Producer::write` + `copy_from_slice` + `commit`,
//! `Consumer::read` + `release`. Python (`crates/python/bench/roundtrip.py`, run as a child
//! with `--python`, default `target/venv/bin/python`, which must import `memsys`): `with
//! producer.write(t) as s`, the copy through `memoryview(s)`, `s.commit(n)`; `with
//! consumer.read(t) as r`, the byte through `memoryview(r)`; plus `send`/`recv` (the copying
//! shortcuts). The report gives each figure and the ratio Python / Rust.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Args;
use serde::{Deserialize, Serialize};

use datahub::{Config, Consumer, Expectations, Policy, Producer};

use crate::machine::Machine;

/// Slots per block, and messages per timed phase.
const K: usize = 64;
/// Payload sizes measured.
const SIZES: [usize; 2] = [64, 4096];

/// Arguments of `bench python`.
#[derive(Debug, Args)]
pub struct PythonArgs {
    /// Short run (20k messages per size instead of 500k).
    #[arg(long)]
    quick: bool,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// The interpreter that imports `memsys` (default: target/venv/bin/python of the
    /// workspace, where `scripts/python-tests.sh` installs it).
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
}

/// One size's costs, ns per message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Costs {
    /// Payload bytes.
    pub size: usize,
    /// Messages timed.
    pub messages: usize,
    /// Claim, copy in, commit.
    pub write_commit_ns: f64,
    /// Take, touch the last byte, release.
    pub read_release_ns: f64,
    /// Python only: `Producer.send` (copy of a bytes object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_ns: Option<f64>,
    /// Python only: `Consumer.recv` (a copy out as bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recv_ns: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct PythonOut {
    python: String,
    implementation: String,
    results: Vec<Costs>,
}

/// One size: both sides and the ratios.
#[derive(Debug, Serialize)]
pub struct Row {
    /// Payload bytes.
    pub size: usize,
    /// The Rust loop.
    pub rust: Costs,
    /// The Python loop.
    pub python: Costs,
    /// Python write_commit_ns / Rust write_commit_ns.
    pub write_ratio: f64,
    /// Python read_release_ns / Rust read_release_ns.
    pub read_ratio: f64,
}

/// The report of `bench python`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// CPython version of the child.
    pub python: String,
    /// `platform.python_implementation()`.
    pub python_implementation: String,
    /// Messages per size.
    pub messages: usize,
    /// One row per size.
    pub rows: Vec<Row>,
    /// How it was measured.
    pub method: &'static str,
}

fn rust_costs(name: &str, n: usize, size: usize) -> Result<Costs, String> {
    let e = |e: datahub::Error| format!("rust loop, {size} B: {e}");
    let config = Config::new(Policy::Sequential)
        .slot_size(size as u32)
        .slot_count(K as u32);
    let mut p = Producer::create(name, config).map_err(e)?;
    let mut c = Consumer::attach(name, Expectations::new()).map_err(e)?;
    let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let t = Duration::from_secs(1);
    let phases = (n / K).max(1);
    let (mut tw, mut tr) = (Duration::ZERO, Duration::ZERO);
    for phase in 0..=phases {
        let t0 = Instant::now();
        for _ in 0..K {
            let mut g = p.write(t).map_err(e)?;
            g[..size].copy_from_slice(&payload);
            g.commit(size).map_err(e)?;
        }
        let t1 = Instant::now();
        for _ in 0..K {
            let r = c.read(t).map_err(e)?;
            if r[size - 1] != payload[size - 1] {
                return Err(format!("rust loop, {size} B: wrong byte read"));
            }
            r.release().map_err(e)?;
        }
        let t2 = Instant::now();
        if phase > 0 {
            tw += t1 - t0;
            tr += t2 - t1;
        }
    }
    let ops = phases * K;
    Ok(Costs {
        size,
        messages: ops,
        write_commit_ns: tw.as_nanos() as f64 / ops as f64,
        read_release_ns: tr.as_nanos() as f64 / ops as f64,
        send_ns: None,
        recv_ns: None,
    })
}

/// Runs `bench python`.
pub fn run(args: &PythonArgs) -> Result<(), String> {
    let machine = Machine::detect();
    let n = if args.quick { 20_000 } else { 500_000 };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = args
        .python
        .clone()
        .unwrap_or_else(|| root.join("target/venv/bin/python"));
    let script = root.join("crates/python/bench/roundtrip.py");
    let prefix = format!("bench-python-{}", std::process::id());
    let mut rust = Vec::new();
    for size in SIZES {
        rust.push(rust_costs(&format!("{prefix}-rust-{size}"), n, size)?);
    }
    let out = Command::new(&python)
        .arg(&script)
        .arg(format!("{prefix}-py"))
        .arg(n.to_string())
        .args(SIZES.map(|s| s.to_string()))
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "{} {} failed ({}): {} (install the package: scripts/python-tests.sh)",
            python.display(),
            script.display(),
            out.status,
            err.lines().last().unwrap_or("")
        ));
    }
    let py: PythonOut = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("cannot parse the Python side's JSON: {e}"))?;
    let rows = rust
        .into_iter()
        .zip(py.results)
        .map(|(rust, python)| Row {
            size: rust.size,
            write_ratio: python.write_commit_ns / rust.write_commit_ns,
            read_ratio: python.read_release_ns / rust.read_release_ns,
            rust,
            python,
        })
        .collect();
    let report = Report {
        machine,
        python: py.python,
        python_implementation: py.implementation,
        messages: n,
        rows,
        method: "one process and thread, Sequential block of 64 slots; phases of 64 writes then 64 reads, each phase timed, ns/op = phase / 64; one warm-up phase",
    };
    crate::emit_report(&report, args.out.as_deref(), args.json, print_table)
}

fn print_table(r: &Report) {
    println!("{}", r.machine.summary());
    println!(
        "DataHub slot costs from {} {} against Rust, {} messages per size (ns per message)",
        r.python_implementation, r.python, r.messages
    );
    println!(
        "{:>6} {:>12} {:>12} {:>7} {:>12} {:>12} {:>7} {:>9} {:>9}",
        "size",
        "rust write",
        "py write",
        "ratio",
        "rust read",
        "py read",
        "ratio",
        "py send",
        "py recv"
    );
    for row in &r.rows {
        println!(
            "{:>6} {:>12.0} {:>12.0} {:>6.1}x {:>12.0} {:>12.0} {:>6.1}x {:>9.0} {:>9.0}",
            row.size,
            row.rust.write_commit_ns,
            row.python.write_commit_ns,
            row.write_ratio,
            row.rust.read_release_ns,
            row.python.read_release_ns,
            row.read_ratio,
            row.python.send_ns.unwrap_or(f64::NAN),
            row.python.recv_ns.unwrap_or(f64::NAN),
        );
    }
}
