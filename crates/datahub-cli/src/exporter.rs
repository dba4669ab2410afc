//! `datahub exporter`: serves `/metrics` for every block it can see, and a broker's counters.
//!
//! Each scrape lists the shared-memory directory ([`datahub::list_where`], filtered by
//! `--prefix` before anything is opened: links, FIFOs and directories are never opened, at
//! most 8 bytes of each file are read), opens each block
//! read-only ([`datahub::Inspector`]: `O_RDONLY`, `PROT_READ`, never registers, so the scrape
//! changes nothing in any block) and renders, for every block, the families of
//! [`crate::exposition`] (what `datahub metrics --prometheus` prints, plus per-consumer lag,
//! heartbeat ages and liveness). The mappings are dropped when the scrape ends.
//!
//! A scrape never fails because of what is in the directory: an entry that cannot be shown is
//! counted in `datahub_exporter_block_errors{reason}` (reasons in [`Reason`]) and the scrape
//! goes on. Its work is bounded: at most `--max-blocks` blocks (default
//! [`DEFAULT_MAX_BLOCKS`]) are opened per scrape, and none after [`SCRAPE_BUDGET`] has passed
//! (an opener waits up to 100 ms for a block whose magic is not yet published); the rest are
//! counted as `over_limit` and `deadline`.
//!
//! With `--broker EP` every scrape also asks the broker `METRICS_REQ`
//! ([`datahub::broker::Client::metrics`]) and waits at most `--broker-timeout`; a broker that
//! does not answer gives `datahub_broker_up 0` and no other `datahub_broker_*` series.
//!
//! The HTTP server is the workspace's one metrics server ([`metrics_endpoint`]: bounded
//! connections, header and write timeouts). `/metrics` answers OpenMetrics when the client
//! asks for it (Prometheus does) and the text format 0.0.4 otherwise; `/` a one-line index;
//! anything else 404. SIGINT/SIGTERM stop it (exit 0). Metric names are listed in
//! `docs/metrics.md` ("DataHub exporter").

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Args;
use datahub::broker::{BrokerMetrics, Client};
use datahub::{Inspector, Listed};
use metrics_endpoint::{Reply, Request};
use prom_text::{Builder, LabelValue, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};

use crate::exposition::Families;
use crate::fail::{Fail, Result};

/// Blocks opened per scrape unless `--max-blocks` says otherwise.
pub const DEFAULT_MAX_BLOCKS: usize = 256;
/// After this much of a scrape no further block is opened (each is counted as `deadline`).
pub const SCRAPE_BUDGET: Duration = Duration::from_secs(2);
/// How often the main thread checks for SIGINT/SIGTERM.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// `datahub exporter` arguments.
#[derive(Debug, Args)]
pub struct ExporterArgs {
    /// Address to serve /metrics on (port 0: any free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:9464", value_name = "ADDR:PORT")]
    pub listen: String,
    /// Also export this broker's counters as datahub_broker_* (ipc://PATH, or tcp://HOST:PORT
    /// with --key and --server-key).
    #[arg(long, value_name = "EP")]
    pub broker: Option<String>,
    /// CURVE keys for a tcp:// broker.
    #[command(flatten)]
    pub auth: crate::broker::ClientAuthArgs,
    /// How long a scrape waits for the broker's METRICS_ACK (e.g. 300ms).
    #[arg(long, default_value = "500ms", value_parser = cli_support::parse_duration)]
    pub broker_timeout: Duration,
    /// Only blocks whose name starts with P (every entry of the directory when not given);
    /// other entries are not opened.
    #[arg(long, value_name = "P")]
    pub prefix: Option<String>,
    /// Most blocks opened per scrape; the rest are counted as errors (reason="over_limit").
    #[arg(long, default_value_t = DEFAULT_MAX_BLOCKS, value_parser = parse_max_blocks)]
    pub max_blocks: usize,
}

fn parse_max_blocks(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=65_536).contains(&n) => Ok(n),
        _ => Err("expected a number of blocks from 1 to 65536".to_owned()),
    }
}

/// Why an entry of the directory is not in the scrape (`datahub_exporter_block_errors{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// The directory could not be read at all.
    ListFailed,
    /// Not a regular file (a link, FIFO, directory) or not a valid block name: never opened.
    NotRegular,
    /// A regular file this user cannot open.
    Unreadable,
    /// Starts with the magic but the opener refused it (bad header, not ready, truncated).
    OpenFailed,
    /// Truncated while it was being read: its figures are not trustworthy and are left out.
    Truncated,
    /// More blocks than `--max-blocks`.
    OverLimit,
    /// Not opened: the scrape had used its [`SCRAPE_BUDGET`].
    Deadline,
}

impl Reason {
    /// Every reason, in output order (each is shown, 0 when nothing happened).
    pub const ALL: [Reason; 7] = [
        Reason::ListFailed,
        Reason::NotRegular,
        Reason::Unreadable,
        Reason::OpenFailed,
        Reason::Truncated,
        Reason::OverLimit,
        Reason::Deadline,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ListFailed => "list_failed",
            Reason::NotRegular => "not_regular",
            Reason::Unreadable => "unreadable",
            Reason::OpenFailed => "open_failed",
            Reason::Truncated => "truncated",
            Reason::OverLimit => "over_limit",
            Reason::Deadline => "deadline",
        }
    }
}

/// What every scrape needs.
struct Exporter {
    prefix: Option<String>,
    max_blocks: usize,
    broker: Option<(Client, Duration)>,
}

impl Exporter {
    /// One scrape: every block, the errors, the broker; OpenMetrics text.
    fn scrape(&self) -> String {
        let started = Instant::now();
        let mut b = Builder::with_prefix("datahub");
        let families = Families::register(&mut b, true);
        let mut errors: BTreeMap<Reason, u64> = Reason::ALL.iter().map(|&r| (r, 0)).collect();
        let mut count = |r: Reason| *errors.entry(r).or_default() += 1;
        let mut shown = 0usize;
        let mut opened = 0usize;
        let wanted = |name: &str| self.prefix.as_deref().is_none_or(|p| name.starts_with(p));
        // Entries outside the prefix are not even opened, nor listed.
        match datahub::list_where(wanted) {
            Err(_) => count(Reason::ListFailed),
            Ok(entries) => {
                for entry in entries {
                    match entry {
                        Listed::Skipped { .. } => count(Reason::NotRegular),
                        Listed::Unreadable { .. } => count(Reason::Unreadable),
                        Listed::Block { name } => {
                            if opened >= self.max_blocks {
                                count(Reason::OverLimit);
                                continue;
                            }
                            if started.elapsed() >= SCRAPE_BUDGET {
                                count(Reason::Deadline);
                                continue;
                            }
                            opened += 1;
                            let Ok(insp) = Inspector::open(&name) else {
                                count(Reason::OpenFailed);
                                continue;
                            };
                            let (info, m) = (insp.info(), insp.metrics());
                            if insp.check_intact().is_err() {
                                count(Reason::Truncated);
                                continue;
                            }
                            families.add(&name, &m, Some(&info));
                            shown += 1;
                        }
                        _ => {}
                    }
                }
            }
        }
        let errs = b.int_gauges::<Vec<(&'static str, LabelValue)>>(
            "exporter_block_errors",
            "Directory entries left out of this scrape, by reason",
        );
        for (r, n) in &errors {
            errs.get_or_create(&vec![("reason", LabelValue(r.as_str().to_owned()))])
                .set(prom_text::clamp_i64(*n));
        }
        b.gauge(
            "exporter_blocks",
            "Blocks shown in this scrape",
            shown as u64,
        );
        if let Some((client, timeout)) = &self.broker {
            broker_families(&mut b, client.metrics(*timeout).ok().as_ref());
        }
        b.float_gauge(
            "exporter_scrape_duration_seconds",
            "Time this scrape took to list and read the blocks and ask the broker",
            started.elapsed().as_secs_f64(),
        );
        b.into_openmetrics()
    }

    fn respond(&self, req: &Request) -> Reply {
        match (req.get, req.path.as_str()) {
            (true, "/metrics") => {
                let open = self.scrape();
                if req.openmetrics {
                    Reply::ok(OPENMETRICS_CONTENT_TYPE, open)
                } else {
                    Reply::ok(TEXT_CONTENT_TYPE, prom_text::openmetrics_to_text(&open))
                }
            }
            (true, "/") => Reply::text(
                200,
                "datahub exporter: /metrics (every DataHub block in the shared-memory directory)\n"
                    .to_owned(),
            ),
            _ => Reply::not_found(),
        }
    }
}

/// `datahub_broker_up`, and with `m` the broker's counters and gauges.
fn broker_families(b: &mut Builder, m: Option<&BrokerMetrics>) {
    b.gauge(
        "broker_up",
        "1 if the broker answered METRICS_REQ within the timeout",
        u64::from(m.is_some()),
    );
    let Some(m) = m else { return };
    let c = &m.counters;
    let counters: [(&str, &str, u64); 14] = [
        (
            "broker_received_messages",
            "Messages the broker received (any shape)",
            c.received,
        ),
        (
            "broker_sent_messages",
            "Replies and notifications the broker sent",
            c.sent,
        ),
        (
            "broker_send_dropped_messages",
            "Replies or notifications ZeroMQ refused (peer gone or its queue full)",
            c.send_dropped,
        ),
        ("broker_errors", "ERROR replies", c.errors),
        (
            "broker_invalid_requests",
            "ERROR INVALID_REQUEST replies",
            c.invalid_requests,
        ),
        ("broker_registrations", "Accepted REG_REQs", c.registrations),
        (
            "broker_deregistrations",
            "Accepted DEREG_REQs",
            c.deregistrations,
        ),
        ("broker_discoveries", "DISC_ACKs", c.discoveries),
        (
            "broker_discoveries_pending",
            "DISC_PENDINGs",
            c.discoveries_pending,
        ),
        (
            "broker_consumer_registrations",
            "Accepted CONSUMER_REG_REQs",
            c.consumer_registrations,
        ),
        (
            "broker_consumer_deregistrations",
            "Accepted CONSUMER_DEREG_REQs",
            c.consumer_deregistrations,
        ),
        (
            "broker_heartbeats",
            "Heartbeats of known registrations",
            c.heartbeats,
        ),
        (
            "broker_producers_died",
            "Producers removed after missed heartbeats",
            c.producers_died,
        ),
        (
            "broker_consumers_died",
            "Consumers removed after missed heartbeats",
            c.consumers_died,
        ),
    ];
    for (name, help, v) in counters {
        b.counter(name, help, v);
    }
    b.gauge(
        "broker_channels",
        "Channels registered with the broker",
        m.channels,
    );
    b.gauge(
        "broker_consumers",
        "Consumers registered with the broker (all channels)",
        m.consumers,
    );
    b.float_gauge(
        "broker_uptime_seconds",
        "Time since the broker started",
        m.uptime_ms as f64 / 1e3,
    );
    // A CURVE broker's handshakes (absent from a broker without keys).
    if let Some(a) = &m.auth {
        let f = b.counters::<Vec<(&'static str, LabelValue)>>(
            "broker_auth_handshakes",
            "CURVE handshakes by outcome: allowed (ZAP 200), refused (ZAP 400: a key not in the allowlist), failed (before ZAP: another server key, a plaintext or malformed peer)",
        );
        for (outcome, v) in [
            ("allowed", a.allowed),
            ("refused", a.refused),
            ("failed", a.handshake_failed),
        ] {
            f.get_or_create(&vec![("outcome", LabelValue(outcome.to_owned()))])
                .inc_by(v);
        }
        b.counter(
            "broker_auth_unauthenticated_messages",
            "Messages dropped because their connection had no ZAP user id (a guard; never expected)",
            a.unauthenticated,
        );
    }
}

/// Serves until SIGINT or SIGTERM.
pub fn run(args: &ExporterArgs) -> Result {
    let addr: SocketAddr = args.listen.parse().map_err(|_| {
        Fail::usage(format!(
            "--listen {:?}: expected ADDR:PORT, e.g. 127.0.0.1:9464",
            crate::fail::clip(&args.listen)
        ))
    })?;
    let broker = match &args.broker {
        None => None,
        Some(ep) => {
            let uid = crate::publish::role_uid("exporter");
            let c = Client::connect(Some(ep), &uid, args.auth.options()?)
                .map_err(|e| Fail::usage(format!("broker: {e}")))?;
            Some((c, args.broker_timeout))
        }
    };
    let exporter = Exporter {
        prefix: args.prefix.clone(),
        max_blocks: args.max_blocks,
        broker,
    };
    crate::signals::catch();
    let endpoint = metrics_endpoint::serve(
        addr,
        "datahub-exporter",
        Box::new(move |req: &Request| exporter.respond(req)),
    )
    .map_err(|e| Fail::usage(format!("exporter: {e}")))?;
    eprintln!(
        "datahub exporter: serving http://{}/metrics",
        endpoint.local_addr()
    );
    loop {
        let sig = crate::signals::caught();
        if sig != 0 {
            endpoint.shutdown();
            eprintln!("datahub exporter: stopped (signal {sig})");
            return Ok(());
        }
        std::thread::sleep(SIGNAL_POLL);
    }
}
