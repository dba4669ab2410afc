//! `datahub`: inspect, diagnose and recover DataHub blocks, and move files through them.
//!
//! The inspection commands (`list`, `inspect`, `diagnose`, `metrics`, `validate`) map a block
//! read-only through [`datahub::Inspector`] without registering, so they change nothing and
//! work on a block the caller may only read; `recover`, `reset-slot` and `validate --repair`
//! use [`datahub::Admin`] and say what they did; `remove` deletes a block whose producer is
//! dead. Names that are links, FIFOs or directories are refused by the library's opener
//! (`docs/failure-model/datahub.md`). `pub`/`sub` stream files through a lossless block with
//! the framing of [`frame`]. `pub --secure-socket PATH --key-file KEY` puts the block in a
//! sealed memfd served on a Unix socket (secure attach: no `/dev/shm` name, nobody can
//! truncate it) and `sub --socket PATH --key-file KEY` attaches through it proving the key;
//! `--key-file` alone gives a named block keyed checksums.
//!
//! The hub (`docs/datahub-broker.md`): `broker` runs the ZeroMQ broker in the foreground
//! (`ipc://` under a 0700 directory, or `tcp://` only with CURVE keys, `--keys DIR`);
//! `keygen` writes CURVE key pairs in the format pyzmq's `zmq.auth` reads; `channels` lists
//! what is registered. With `--channel CHANNEL [--broker EP]`, `pub` registers its block as a
//! channel (schema `datahub.files` v1), heartbeats it, logs consumers joining, leaving and
//! dying, and deregisters on exit (also on SIGINT/SIGTERM); `sub --broker EP CHANNEL` (or
//! `--channel`) discovers the channel, checks the block against the announcement, registers as
//! a consumer, and fails (exit 2) naming the channel if it closes before the end of the
//! stream. `--key FILE --server-key FILE` authenticate a client to a CURVE broker.
//! `exporter` serves Prometheus `/metrics` for every block it can see (and a broker's
//! counters), for `dashboards/datahub.json` and `alerts/datahub.rules.yml`.
//!
//! Exit codes: 0 ok; 1 a check failed (`diagnose`/`validate` found problems, a received file's
//! digest did not match, `reset-slot`/`recover` refused to touch a live owner); 2 usage or input
//! error (bad arguments, no such block, not a DataHub block, I/O, timeouts). Errors are one line
//! on standard error, `datahub: <what was wrong>`.

mod broker;
mod exporter;
mod exposition;
mod fail;
mod frame;
mod keygen;
mod outdir;
mod publish;
mod report;
mod signals;
mod subscribe;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use datahub::{Action, Admin, Inspector};
use serde::Serialize;

use fail::{Fail, Result};

/// Inspect, diagnose and recover DataHub shared-memory blocks (in /dev/shm), and move files
/// through them.
#[derive(Debug, Parser)]
#[command(name = "datahub", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Blocks in /dev/shm: owner (producer pid, alive), size, policy, slots, consumers; entries
    /// that cannot be opened (with the reason) or are not regular files (skipped, never opened).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A block's identity (version, layout hash, schema, policy, slots, regions), producer,
    /// consumers and indices.
    Inspect {
        /// Block name.
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Every slot (state, seq, length, readers, dead readers, age) and the problems seen;
    /// exit 1 when there are problems.
    Diagnose {
        /// Block name.
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Safe recovery: retire dead consumers, evict their reader bits, clean up after a dead
    /// producer. Prints the actions.
    Recover {
        /// Block name.
        name: String,
        /// Only say what would be done.
        #[arg(long)]
        dry_run: bool,
        /// Also reset slots held by live consumers whose heartbeat is stale (stalled), when no
        /// other consumer still needs the message in them; the stalled consumer's read then
        /// fails validation. Other slots and live producers are never touched.
        #[arg(long)]
        force: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove a block whose producer is dead (a killed `pub` leaves its block behind).
    /// Refused (exit 1) while its producer is alive or another process is creating it.
    Remove {
        /// Block name.
        name: String,
    },
    /// Force one slot back to free, evicting its readers. Refused (exit 1) while the block's
    /// producer is alive, or the slot is held by a live process, unless --force.
    ResetSlot {
        /// Block name.
        name: String,
        /// Slot index.
        slot: usize,
        /// Reset even though a live process owns the block or the slot (its message is lost).
        #[arg(long)]
        force: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check the block's invariants; exit 1 when problems are found (with --repair: when
    /// problems remain after repairing).
    Validate {
        /// Block name.
        name: String,
        /// Fix what can be fixed without a live owner (zombie reader bits, the active mask, a
        /// dead producer's indices).
        #[arg(long)]
        repair: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The block's counters: a table, JSON, or Prometheus exposition.
    Metrics {
        /// Block name.
        name: String,
        /// Print JSON instead of a table.
        #[arg(long, conflicts_with_all = ["prometheus", "openmetrics"])]
        json: bool,
        /// Prometheus text format 0.0.4 (`datahub_slot_writes_total{block="NAME"}`, ...).
        #[arg(long, conflicts_with = "openmetrics")]
        prometheus: bool,
        /// OpenMetrics 1.0 text.
        #[arg(long)]
        openmetrics: bool,
    },
    /// Create a block and stream files through it (lossless), then wait until the consumers
    /// have read everything.
    Pub(publish::PubArgs),
    /// Receive the files of a `pub` block, verifying each one's BLAKE2b-256 digest.
    Sub(subscribe::SubArgs),
    /// Run a broker (discovery, schema negotiation, liveness) in the foreground; one log line
    /// per registration change on stderr; SIGINT/SIGTERM stop it.
    Broker(broker::BrokerArgs),
    /// The channels registered with a broker.
    Channels(broker::ChannelsArgs),
    /// Write a CURVE key pair (for a `tcp://` broker and the clients it allows).
    Keygen(keygen::KeygenArgs),
    /// Serve Prometheus `/metrics` for every block in /dev/shm (and a broker's counters).
    Exporter(exporter::ExporterArgs),
}

/// Prints `text`; a closed standard output ends the command quietly (exit 0).
fn out(text: &str) -> Result {
    Ok(cli_support::stdout::print(text)?)
}

fn print_json<T: Serialize + ?Sized>(v: &T) -> Result {
    let text = serde_json::to_string_pretty(v).expect("report types serialize");
    out(&format!("{text}\n"))
}

/// Opens `name` for recovery (read-write).
fn open(name: &str) -> Result<Admin> {
    Admin::open(name).map_err(|e| Fail::block(name, e))
}

/// Opens `name` for a read-only command (`O_RDONLY`, mapped read-only: works on a block this
/// user may only read, and cannot change it).
fn open_ro(name: &str) -> Result<Inspector> {
    Inspector::open(name).map_err(|e| Fail::block(name, e))
}

/// After a report: a block truncated while it was read gave zeros, not its state.
fn intact(name: &str, i: &Inspector) -> Result {
    i.check_intact().map_err(|e| Fail::block(name, e))
}

/// `remove`: [`datahub::remove_dead`].
fn remove(name: &str) -> Result<String> {
    use datahub::Error as E;
    match datahub::remove_dead(name) {
        Ok(0) => Ok(format!("block {name}: removed (it had no producer)\n")),
        Ok(pid) => Ok(format!(
            "block {name}: removed (its producer pid {pid} is gone)\n"
        )),
        Err(E::AlreadyExists { pid, .. }) => Err(Fail::check(format!(
            "refused: block {name:?} is owned by live producer pid {pid}"
        ))),
        Err(e @ E::Busy { .. }) => Err(Fail::check(format!("refused: {e}"))),
        Err(e) => Err(Fail::block(name, e)),
    }
}

fn ok_or_check(failed: bool, what: String) -> Result<ExitCode> {
    if failed {
        // The report is already printed; the line says why the exit code is 1.
        eprintln!("datahub: {what}");
        Ok(ExitCode::from(fail::CHECK_FAILED))
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Serialize)]
struct Actions<'a> {
    block: &'a str,
    dry_run: bool,
    actions: &'a [Action],
}

/// `recover`: [`Admin::auto_recover`], then with `force` [`Admin::reset_stalled_readers`].
fn recover(name: &str, dry_run: bool, force: bool) -> Result<Vec<Action>> {
    let a = open(name)?;
    let mut actions = a.auto_recover(dry_run);
    if force {
        actions.extend(
            a.reset_stalled_readers(dry_run)
                .map_err(|e| Fail::block(name, e))?,
        );
    }
    // Actions taken on zero pages (a block truncated meanwhile) did nothing.
    intact(name, &a)?;
    Ok(actions)
}

/// After "nothing to recover": a block whose producer is gone can only be removed.
fn hint_dead_producer(name: &str) {
    if let Ok(i) = Inspector::open(name) {
        let p = i.info().producer;
        if !p.alive {
            let who = if p.pid == 0 {
                "it has no producer".to_owned()
            } else {
                format!("its producer pid {} is gone", p.pid)
            };
            eprintln!("datahub: note: block {name:?}: {who}; `datahub remove {name}` deletes it");
        }
    }
}

/// `reset-slot`: [`Admin::reset_slot`] (refused while the producer lives, unless `force`).
fn reset_slot(name: &str, slot: usize, force: bool) -> Result<Action> {
    let a = open(name)?;
    let action = a.reset_slot(slot, force).map_err(|e| match e {
        datahub::Error::OutOfRange { .. } => Fail::usage(format!("block {name:?}: {e}")),
        datahub::Error::ProducerAlive { slot, pid } => Fail::check(format!(
            "refused: block {name:?} is owned by live producer pid {pid} (slot {slot} may hold an unread message; use --force)"
        )),
        e => Fail::block(name, e),
    })?;
    intact(name, &a)?;
    Ok(action)
}

#[derive(Serialize)]
struct Validated<'a> {
    block: &'a str,
    #[serde(flatten)]
    validation: &'a datahub::Validation,
    /// With `--repair`: problems still there afterwards.
    remaining: Option<&'a [String]>,
}

#[derive(Serialize)]
struct NamedMetrics<'a> {
    block: &'a str,
    #[serde(flatten)]
    metrics: &'a datahub::Metrics,
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::List { json } => {
            let entries = datahub::list_all().map_err(|e| Fail::usage(e.to_string()))?;
            let rows: Vec<report::ListEntry> = entries
                .into_iter()
                .map(|l| match l {
                    datahub::Listed::Block { name } => {
                        match Inspector::open(&name).and_then(|a| {
                            let info = a.info();
                            a.check_intact().map(|()| info)
                        }) {
                            Ok(info) => report::ListEntry::of(&info),
                            Err(e) => {
                                let why = Fail::block(&name, e).to_string();
                                report::ListEntry::failed(name, why)
                            }
                        }
                    }
                    datahub::Listed::Unreadable { name, reason } => {
                        report::ListEntry::failed(name, format!("cannot open: {reason}"))
                    }
                    datahub::Listed::Skipped { name, what } => {
                        report::ListEntry::skipped(name, what)
                    }
                    other => report::ListEntry::failed(String::new(), format!("{other:?}")),
                })
                .collect();
            if json {
                print_json(&rows)?
            } else {
                out(&report::list(&rows))?
            }
        }
        Command::Inspect { name, json } => {
            let i = open_ro(&name)?;
            let info = i.info();
            intact(&name, &i)?;
            if json {
                print_json(&info)?
            } else {
                out(&report::info(&info))?
            }
        }
        Command::Diagnose { name, json } => {
            let i = open_ro(&name)?;
            let d = i.diagnose();
            intact(&name, &i)?;
            if json {
                print_json(&d)?
            } else {
                out(&report::diagnosis(&d))?
            }
            return ok_or_check(
                !d.problems.is_empty(),
                format!("block {name:?}: {} problem(s)", d.problems.len()),
            );
        }
        Command::Recover {
            name,
            dry_run,
            force,
            json,
        } => {
            let actions = recover(&name, dry_run, force)?;
            if json {
                print_json(&Actions {
                    block: &name,
                    dry_run,
                    actions: &actions,
                })?;
            } else {
                out(&report::actions(&name, &actions, dry_run))?;
                if actions.is_empty() {
                    hint_dead_producer(&name);
                }
            }
        }
        Command::Remove { name } => out(&remove(&name)?)?,
        Command::ResetSlot {
            name,
            slot,
            force,
            json,
        } => {
            let action = reset_slot(&name, slot, force)?;
            let actions = [action];
            if json {
                print_json(&Actions {
                    block: &name,
                    dry_run: false,
                    actions: &actions,
                })?;
            } else {
                out(&report::actions(&name, &actions, false))?;
            }
        }
        Command::Validate { name, repair, json } => {
            let (v, remaining) = if repair {
                let a = open(&name)?;
                let v = a.validate(true);
                let remaining = a.validate(false).problems;
                intact(&name, &a)?;
                (v, Some(remaining))
            } else {
                let i = open_ro(&name)?;
                let v = i.validate();
                intact(&name, &i)?;
                (v, None)
            };
            if json {
                print_json(&Validated {
                    block: &name,
                    validation: &v,
                    remaining: remaining.as_deref(),
                })?;
            } else {
                let mut text = report::validation(&name, &v);
                if let Some(r) = &remaining {
                    text.push_str(&if r.is_empty() {
                        "after repair: valid\n".to_owned()
                    } else {
                        format!("after repair: {} problem(s) remain\n", r.len())
                    });
                }
                out(&text)?;
            }
            let left = remaining.as_ref().map_or(v.problems.len(), Vec::len);
            return ok_or_check(left > 0, format!("block {name:?}: {left} problem(s)"));
        }
        Command::Metrics {
            name,
            json,
            prometheus,
            openmetrics,
        } => {
            let a = open_ro(&name)?;
            let m = a.metrics();
            intact(&name, &a)?;
            if json {
                print_json(&NamedMetrics {
                    block: &name,
                    metrics: &m,
                })?;
            } else if prometheus {
                out(&exposition::render_text(&name, &m, Some(&a.info())))?;
            } else if openmetrics {
                out(&exposition::render(&name, &m, Some(&a.info())))?;
            } else {
                out(&report::metrics(&name, &m))?;
            }
        }
        Command::Pub(args) => {
            let summary = publish::run(&args)?;
            if args.json {
                print_json(&summary)?
            } else {
                out(&summary.to_string())?
            }
        }
        Command::Broker(args) => broker::run_broker(&args)?,
        Command::Channels(args) => out(&broker::run_channels(&args)?)?,
        Command::Keygen(args) => out(&keygen::run(&args)?)?,
        Command::Exporter(args) => exporter::run(&args)?,
        Command::Sub(args) => {
            let summary = subscribe::run(&args)?;
            if args.out.is_some() {
                if args.json {
                    print_json(&summary)?
                } else {
                    out(&summary.to_string())?
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print and exit 0; usage errors exit 2 (a rejected value, such
        // as a malformed duration, in one line).
        Err(e) => return ExitCode::from(cli_support::usage_error("datahub", &e)),
    };
    match run(cli) {
        Ok(code) => code,
        Err(f) => {
            if !f.is_quiet() {
                eprintln!("datahub: {f}");
            }
            ExitCode::from(f.code)
        }
    }
}
