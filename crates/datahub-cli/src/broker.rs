//! `datahub broker` (run a broker in the foreground) and `datahub channels` (list a broker's
//! channels), over [`datahub::broker`].
//!
//! `broker` logs one line per registration change on standard error
//! (`datahub broker: channel "x": producer "p" (pid 7) registered`); SIGINT and SIGTERM stop
//! it within [`datahub::broker::STOP_POLL`], remove its socket file, and exit 0.

use std::time::Duration;

use clap::Args;
use datahub::broker::{
    Broker, BrokerConfig, BrokerError, ChannelSummary, Client, ClientOptions, HeartbeatConfig,
};
use serde::Serialize;

use crate::fail::{Fail, Result};

/// `datahub broker` arguments.
#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Endpoint to listen on, ipc://PATH (default: $XDG_RUNTIME_DIR/datahub/broker.sock, else
    /// /tmp/datahub-UID/broker.sock; tcp:// is not supported yet).
    #[arg(long, value_name = "EP")]
    pub listen: Option<String>,
    /// Heartbeat interval clients keep (e.g. 500ms, 1s).
    #[arg(long, default_value = "500ms", value_parser = cli_support::parse_duration)]
    pub heartbeat: Duration,
    /// Missed heartbeats before a registration is pending.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub pending_after: u32,
    /// Further missed heartbeats before it is dead and removed.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub dead_after: u32,
}

/// `datahub channels` arguments.
#[derive(Debug, Args)]
pub struct ChannelsArgs {
    /// Broker endpoint, ipc://PATH (default as for `datahub broker`).
    #[arg(long, value_name = "EP")]
    pub broker: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for the broker's answer.
    #[arg(long, default_value = "2s", value_parser = cli_support::parse_duration)]
    pub timeout: Duration,
}

fn broker_fail(e: BrokerError) -> Fail {
    Fail::usage(format!("broker: {e}"))
}

/// Runs a broker until SIGINT or SIGTERM.
pub fn run_broker(args: &BrokerArgs) -> Result {
    if args.heartbeat < Duration::from_millis(1) {
        return Err(Fail::usage("--heartbeat must be at least 1ms"));
    }
    let hb = HeartbeatConfig {
        interval_ms: args.heartbeat.as_millis().min(3_600_000) as u64,
        pending_after_misses: args.pending_after,
        dead_after_misses: args.dead_after,
    };
    let config = BrokerConfig {
        endpoint: args.listen.clone(),
        heartbeat: hb,
        ..BrokerConfig::default()
    }
    .on_event(|e| eprintln!("datahub broker: {e}"));
    let broker = Broker::bind(config).map_err(broker_fail)?;
    crate::signals::catch();
    let stop = broker.stop_handle();
    eprintln!(
        "datahub broker: listening on {} (heartbeat {} ms, pending after {}, dead after {} more)",
        broker.endpoint(),
        hb.interval_ms,
        hb.pending_after_misses,
        hb.dead_after_misses
    );
    let watcher = std::thread::spawn(move || {
        while crate::signals::caught() == 0 && !stop.is_stopped() {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.stop();
    });
    let result = broker.run();
    let _ = watcher.join();
    let sig = crate::signals::caught();
    result.map_err(broker_fail)?;
    eprintln!("datahub broker: stopped (signal {sig})");
    Ok(())
}

#[derive(Serialize)]
struct Listing<'a> {
    broker: &'a str,
    channels: &'a [ChannelSummary],
}

/// Lists the broker's channels.
pub fn run_channels(args: &ChannelsArgs) -> Result<String> {
    let uid = format!("datahub-cli-{}", std::process::id());
    let c = Client::connect(args.broker.as_deref(), &uid, ClientOptions::default())
        .map_err(broker_fail)?;
    let list = c.channels(args.timeout).map_err(|e| match e {
        BrokerError::Timeout { .. } => Fail::usage(format!(
            "broker {}: no answer within {:?} (is `datahub broker` running there?)",
            c.endpoint(),
            args.timeout
        )),
        e => broker_fail(e),
    })?;
    if args.json {
        let text = serde_json::to_string_pretty(&Listing {
            broker: c.endpoint(),
            channels: &list,
        })
        .expect("listings serialize");
        return Ok(format!("{text}\n"));
    }
    let mut out = format!(
        "{:<24} {:<8} {:>9} {:<16} {:<24} {}\n",
        "CHANNEL", "STATE", "CONSUMERS", "POLICY", "BLOCK", "SCHEMA"
    );
    for ch in &list {
        out.push_str(&format!(
            "{:<24} {:<8} {:>9} {:<16} {:<24} {} v{} {}\n",
            ch.channel_name,
            ch.state,
            ch.consumers,
            format!("{:?}", ch.policy),
            ch.block_name,
            ch.schema.id,
            ch.schema.version,
            ch.schema.fingerprint
        ));
    }
    Ok(out)
}
