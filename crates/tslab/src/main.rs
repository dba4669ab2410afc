//! `tslab`: observe temporal-slab allocators, live or from saved snapshots.
//!
//! Exit codes: 0 success; 1 a failed check (`diff` found a regression, `validate` found the
//! document invalid); 2 bad input (unreadable, too large or not a regular file, malformed JSON,
//! unknown schema version or schema violation outside `validate`, unreachable URL, bad
//! arguments) or an output that could not be written.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use cli_support::StdoutError;
use tslab::report::{ClassMetric, Diff, EpochMetric, Rates, Summary};
use tslab::source::Source;
use tslab::{Error, Snapshot, exposition};

/// temporal-slab's global allocator: outside a scope (everything but `demo --alloc global`'s
/// requests) it passes every request to the system allocator.
#[global_allocator]
static GLOBAL: temporal_slab::global::EpochGlobal = temporal_slab::global::EpochGlobal::new();

/// Observability for temporal-slab: stats, rates, rankings, Prometheus export, diff, validation,
/// and the demo workload.
///
/// A SOURCE is a file path, `-` for standard input, or `http://host:port` for a live endpoint
/// (its `/stats.json`).
#[derive(Debug, Parser)]
#[command(name = "tslab", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The main job: JSON requests parsed into epoch-allocated trees by worker threads, with
    /// labeled epoch domains, per-batch epoch closes, a live /metrics and /stats.json endpoint,
    /// and a final report (requests/s, latency percentiles, RSS over time, top epochs).
    Demo(tslab::demo::DemoArgs),
    /// Summary: RSS, slabs, slow path and its causes, madvise, contention, epochs.
    Stats {
        /// Snapshot source.
        source: Source,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Per-second rates between successive samples of a file or URL.
    Watch {
        /// Snapshot source (a file is re-read each interval; stdin cannot be watched).
        source: Source,
        /// Time between samples (`500ms`, `2s`, or bare seconds).
        #[arg(long, default_value = "1s", value_parser = cli_support::parse_duration)]
        interval: Duration,
        /// Rate lines to print, then exit (default: until interrupted).
        #[arg(long)]
        count: Option<u64>,
        /// Print one JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Rank size classes or epochs.
    Top(TopArgs),
    /// Convert a snapshot to another format.
    Export {
        #[command(subcommand)]
        format: ExportFormat,
    },
    /// Re-serve a snapshot source as /metrics and /stats.json.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:2112")]
        listen: SocketAddr,
        /// Metric name prefix.
        #[arg(long, default_value = exposition::DEFAULT_PREFIX)]
        prefix: String,
        /// Snapshot source (files and URLs are re-read on every scrape; stdin is read once).
        source: Source,
    },
    /// Compare two snapshots; exit 1 when a figure got worse by more than the threshold.
    Diff {
        /// The older snapshot.
        before: Source,
        /// The newer snapshot.
        after: Source,
        /// Percent a figure may grow before it counts as a regression (finite, >= 0).
        #[arg(
            long,
            default_value_t = 10.0,
            allow_hyphen_values = true,
            value_parser = tslab::report::parse_threshold
        )]
        threshold: f64,
        /// When to exit 1.
        #[arg(long, value_enum, default_value_t = FailOn::Regression)]
        fail_on: FailOn,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check a snapshot against schemas/stats_v1.schema.json (exit 1 when it is invalid, 2 when
    /// it cannot be read).
    Validate {
        /// Snapshot file (or `-`).
        file: Source,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum FailOn {
    /// Exit 1 when any figure regressed.
    Regression,
    /// Always exit 0 (report only).
    Never,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ExpositionFormat {
    /// Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics 1.0 text.
    Openmetrics,
}

#[derive(Debug, Subcommand)]
enum ExportFormat {
    /// Prometheus exposition text.
    Prometheus {
        /// Snapshot source.
        source: Source,
        /// Metric name prefix.
        #[arg(long, default_value = exposition::DEFAULT_PREFIX)]
        prefix: String,
        /// `text`: Prometheus text format 0.0.4 (promtool, textfile collector);
        /// `openmetrics`: OpenMetrics 1.0 (what /metrics serves to Prometheus).
        #[arg(long, value_enum, default_value_t = ExpositionFormat::Text)]
        format: ExpositionFormat,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["classes", "epochs"])))]
struct TopArgs {
    /// Rank size classes (by slow_path_hits, new_slab_count, madvise_bytes, net_slabs,
    /// lock_contended, bitmap_alloc_cas_retries).
    #[arg(long)]
    classes: bool,
    /// Rank epochs (by rss_bytes, age_sec, refcount, reclaimable_bytes).
    #[arg(long)]
    epochs: bool,
    /// The metric to rank by (default slow_path_hits for classes, rss_bytes for epochs).
    #[arg(long)]
    by: Option<String>,
    /// Rows to show.
    #[arg(long, default_value_t = 5)]
    n: usize,
    /// Smallest first.
    #[arg(long)]
    asc: bool,
    /// Take two samples this far apart (`500ms`, `2s`, or bare seconds) and rank by
    /// per-second rate.
    #[arg(long, value_parser = cli_support::parse_duration)]
    window: Option<Duration>,
    /// Snapshot source.
    source: Source,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Why a command stopped: a library error (exit 2), or standard output (closed by its reader:
/// exit 0, nothing printed; any other write error: exit 2).
#[derive(Debug)]
enum Fail {
    Tslab(Error),
    Stdout(StdoutError),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail::Tslab(e)
    }
}

impl From<StdoutError> for Fail {
    fn from(e: StdoutError) -> Fail {
        Fail::Stdout(e)
    }
}

type Result<T> = std::result::Result<T, Fail>;

fn print_json<T: Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("report types always serialize");
    out(&format!("{text}\n"))
}

/// Prints `text`; a closed standard output ends the command quietly (exit 0).
fn out(text: &str) -> Result<()> {
    Ok(cli_support::stdout::print(text)?)
}

/// `tslab top --json` when the source has no epoch data.
#[derive(Serialize)]
struct NoEpochs {
    by: EpochMetric,
    epochs: Option<()>,
    note: &'static str,
}

/// `tslab validate --json` on a document that could not be read or is invalid.
#[derive(Serialize)]
struct Invalid {
    ok: bool,
    valid: bool,
    source: String,
    error: String,
}

/// `tslab validate --json` on a valid document.
#[derive(Serialize)]
struct Valid<'a> {
    ok: bool,
    valid: bool,
    source: &'a str,
    schema_version: u32,
    classes: usize,
    epochs: Option<usize>,
}

fn show<T: Serialize + std::fmt::Display>(value: &T, json: bool) -> Result<()> {
    if json {
        print_json(value)
    } else {
        out(&value.to_string())
    }
}

fn check_prefix(prefix: &str) -> tslab::Result<()> {
    if exposition::valid_prefix(prefix) {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "--prefix {prefix:?} is not a valid metric name prefix ([a-zA-Z_:][a-zA-Z0-9_:]*)"
        )))
    }
}

/// Samples `source` twice, `window` apart.
fn two_samples(source: &Source, window: Duration) -> tslab::Result<(Snapshot, Snapshot)> {
    if !source.can_resample() {
        return Err(Error::Usage(
            "a window needs two samples: give a file or URL source, not stdin".into(),
        ));
    }
    let before = source.snapshot_retrying_torn(TORN_READ_RETRY)?;
    std::thread::sleep(window);
    Ok((before, source.snapshot_retrying_torn(TORN_READ_RETRY)?))
}

fn top(args: &TopArgs) -> Result<()> {
    let (before, after) = match args.window {
        Some(w) => {
            let (b, a) = two_samples(&args.source, w)?;
            (Some(b), a)
        }
        None => (None, args.source.snapshot()?),
    };
    let bad_metric = |kind: &str, list: &str| {
        Error::Usage(format!(
            "--by {:?} is not a {kind} metric (one of {list})",
            args.by.as_deref().unwrap_or("")
        ))
    };
    if args.classes {
        let by = match &args.by {
            None => ClassMetric::SlowPathHits,
            Some(s) => ClassMetric::from_str(s, false).map_err(|_| {
                bad_metric(
                    "class",
                    "slow_path_hits, new_slab_count, madvise_bytes, net_slabs, lock_contended, bitmap_alloc_cas_retries",
                )
            })?,
        };
        let top = tslab::report::top_classes(&after, before.as_ref(), by, args.n, args.asc);
        return show(&top, args.json);
    }
    let by = match &args.by {
        None => EpochMetric::RssBytes,
        Some(s) => EpochMetric::from_str(s, false)
            .map_err(|_| bad_metric("epoch", "rss_bytes, age_sec, refcount, reclaimable_bytes"))?,
    };
    match tslab::report::top_epochs(&after, before.as_ref(), by, args.n, args.asc) {
        Some(top) => show(&top, args.json),
        None if args.json => print_json(&NoEpochs {
            by,
            epochs: None,
            note: "the source has no epoch data",
        }),
        None => out(&format!(
            "{}: the source has no epoch data (snapshot written before Phase 2.3)\n",
            args.source
        )),
    }
}

/// How long the commands that re-sample a file (`watch`, `top --window`, `serve`) wait before
/// re-reading a sample that did not parse (a writer that does not replace the file atomically
/// may have been caught half-way).
const TORN_READ_RETRY: Duration = Duration::from_millis(200);

fn watch(source: &Source, interval: Duration, count: Option<u64>, json: bool) -> Result<()> {
    if !source.can_resample() {
        return Err(Error::Usage("watch needs a file or URL source, not stdin".into()).into());
    }
    let mut before = source.snapshot_retrying_torn(TORN_READ_RETRY)?;
    if !json {
        out(&format!("{}\n", Rates::HEADER))?;
    }
    let mut printed = 0u64;
    while count.is_none_or(|n| printed < n) {
        std::thread::sleep(interval);
        let after = source.snapshot_retrying_torn(TORN_READ_RETRY)?;
        let rates = Rates::between(&before, &after);
        if json {
            out(&format!(
                "{}\n",
                serde_json::to_string(&rates).expect("rates serialize")
            ))?;
        } else {
            out(&format!("{rates}\n"))?;
        }
        before = after;
        printed += 1;
    }
    Ok(())
}

fn serve(listen: SocketAddr, prefix: String, source: Source) -> Result<()> {
    check_prefix(&prefix)?;
    let fetch: Box<tslab::endpoint::SnapshotFn> = if source.can_resample() {
        source.snapshot()?; // fail now, not on the first scrape, when the source is bad
        Box::new(move || {
            source
                .snapshot_retrying_torn(TORN_READ_RETRY)
                .map_err(|e| e.to_string())
        })
    } else {
        let snap = source.snapshot()?;
        Box::new(move || Ok(snap.clone()))
    };
    let endpoint =
        tslab::endpoint::serve_with(listen, prefix, fetch).map_err(|source| Error::Io {
            path: listen.to_string(),
            source,
        })?;
    eprintln!(
        "tslab: serving http://{0}/metrics and http://{0}/stats.json (Ctrl-C to stop)",
        endpoint.local_addr()
    );
    loop {
        std::thread::park();
    }
}

/// `tslab validate`: exit 0 valid, 1 invalid (malformed, wrong version, schema violation), 2
/// unreadable. With `--json` a verdict object is printed in every case.
fn validate(file: &Source, json: bool) -> Result<ExitCode> {
    let origin = file.to_string();
    let checked = file
        .read_text()
        .map_err(|e| (e, ExitCode::from(cli_support::exit::BAD_INPUT)))
        .and_then(|text| {
            tslab::source::validate(&text, &origin)
                .map_err(|e| (e, ExitCode::from(cli_support::exit::CHECK_FAILED)))
        });
    let snap = match checked {
        Ok(snap) => snap,
        Err((e, code)) => {
            if json {
                print_json(&Invalid {
                    ok: false,
                    valid: false,
                    source: tslab::quote_bounded(&origin, tslab::MAX_QUOTED),
                    error: e.to_string(),
                })?;
            }
            eprintln!("tslab: {e}");
            return Ok(code);
        }
    };
    let epochs = snap.epochs.as_ref().map(Vec::len);
    if json {
        print_json(&Valid {
            ok: true,
            valid: true,
            source: &origin,
            schema_version: snap.schema_version,
            classes: snap.classes.len(),
            epochs,
        })?;
    } else {
        out(&format!(
            "{origin}: valid (schema version {}, {} classes, {})\n",
            snap.schema_version,
            snap.classes.len(),
            epochs.map_or_else(|| "no epoch data".to_owned(), |n| format!("{n} epochs"))
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Demo(args) => {
            let report = tslab::demo::run(&args)?;
            if args.json {
                print_json(&report)?;
            } else {
                let mut text = Vec::new();
                report
                    .print_human(&mut text)
                    .expect("writing to a Vec cannot fail");
                out(&String::from_utf8_lossy(&text))?;
            }
            // The report is out; a snapshot that could not be saved still fails the run.
            if let Some(e) = &report.json_out_error {
                eprintln!("tslab: {e}");
                return Ok(ExitCode::from(cli_support::exit::BAD_INPUT));
            }
        }
        Command::Stats { source, json } => show(&Summary::of(&source.snapshot()?), json)?,
        Command::Watch {
            source,
            interval,
            count,
            json,
        } => watch(&source, interval, count, json)?,
        Command::Top(args) => top(&args)?,
        Command::Export {
            format:
                ExportFormat::Prometheus {
                    source,
                    prefix,
                    format,
                },
        } => {
            check_prefix(&prefix)?;
            let snap = source.snapshot()?;
            out(&match format {
                ExpositionFormat::Text => exposition::render_text(&snap, &prefix),
                ExpositionFormat::Openmetrics => exposition::render(&snap, &prefix),
            })?;
        }
        Command::Serve {
            listen,
            prefix,
            source,
        } => serve(listen, prefix, source)?,
        Command::Diff {
            before,
            after,
            threshold,
            fail_on,
            json,
        } => {
            let diff = Diff::between(&before.snapshot()?, &after.snapshot()?, threshold);
            show(&diff, json)?;
            if fail_on == FailOn::Regression && diff.regressed() {
                return Ok(ExitCode::from(cli_support::exit::CHECK_FAILED));
            }
        }
        Command::Validate { file, json } => return validate(&file, json),
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A rejected value (a malformed duration) is one line, like every other error; other
        // usage errors keep clap's usage hints. --help and --version print and exit 0; usage
        // errors exit 2.
        Err(e) => return ExitCode::from(cli_support::usage_error("tslab", &e)),
    };
    match run(cli) {
        Ok(code) => code,
        Err(Fail::Stdout(e)) if e.is_closed() => ExitCode::from(e.exit_code()),
        Err(Fail::Stdout(e)) => {
            eprintln!("tslab: {e}");
            ExitCode::from(e.exit_code())
        }
        Err(Fail::Tslab(e)) => {
            eprintln!("tslab: {e}");
            ExitCode::from(cli_support::exit::BAD_INPUT)
        }
    }
}
