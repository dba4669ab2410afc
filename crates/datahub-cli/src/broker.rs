//! `datahub broker` (run a broker in the foreground) and `datahub channels` (list a broker's
//! channels), over [`datahub::broker`].
//!
//! `broker` logs one line per registration change on standard error
//! (`datahub broker: channel "x": producer "p" (pid 7) registered`); SIGINT and SIGTERM stop
//! it within [`datahub::broker::STOP_POLL`], remove its socket file, and exit 0.
//!
//! `broker --keys DIR` turns CURVE on (`DIR/server.key_secret`, `DIR/allowed/*.key`; see
//! `datahub keygen`), which `tcp://` endpoints require; clients then pass
//! [`ClientAuthArgs`] (`--key FILE --server-key FILE`).

use std::path::PathBuf;

use std::time::Duration;

use clap::Args;
use datahub::broker::{
    Broker, BrokerConfig, BrokerError, ChannelSummary, Client, ClientKeys, ClientOptions,
    HeartbeatConfig, ServerKeys,
};
use serde::Serialize;

use crate::fail::{Fail, Result};

/// `datahub broker` arguments.
#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Endpoint to listen on, ipc://PATH (default: $XDG_RUNTIME_DIR/datahub/broker.sock, else
    /// /tmp/datahub-UID/broker.sock) or tcp://HOST:PORT (only with --keys).
    #[arg(long, value_name = "EP")]
    pub listen: Option<String>,
    /// CURVE keys: DIR/server.key_secret and the allowed clients' DIR/allowed/*.key.
    #[arg(long, value_name = "DIR")]
    pub keys: Option<PathBuf>,
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

/// CURVE keys of a broker client (required for a `tcp://` broker).
#[derive(Debug, Clone, Args)]
pub struct ClientAuthArgs {
    /// This client's secret key file (NAME.key_secret from `datahub keygen`, mode 0600).
    #[arg(long, value_name = "FILE", requires = "server_key")]
    pub key: Option<PathBuf>,
    /// The broker's public key file (its server.key).
    #[arg(long, value_name = "FILE", requires = "key")]
    pub server_key: Option<PathBuf>,
}

impl ClientAuthArgs {
    /// [`ClientOptions`] with these keys (the defaults otherwise).
    ///
    /// # Errors
    /// A key file that cannot be used (exit 2), or only one of the two flags.
    pub fn options(&self) -> Result<ClientOptions> {
        let curve = match (&self.key, &self.server_key) {
            (None, None) => None,
            (Some(k), Some(s)) => {
                Some(ClientKeys::load(k, s).map_err(|e| Fail::usage(e.to_string()))?)
            }
            _ => return Err(Fail::usage("--key and --server-key go together")),
        };
        Ok(ClientOptions {
            curve,
            ..ClientOptions::default()
        })
    }
}

/// `datahub channels` arguments.
#[derive(Debug, Args)]
pub struct ChannelsArgs {
    /// Broker endpoint, ipc://PATH (default as for `datahub broker`) or tcp://HOST:PORT
    /// (with --key and --server-key).
    #[arg(long, value_name = "EP")]
    pub broker: Option<String>,
    #[command(flatten)]
    pub auth: ClientAuthArgs,
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

/// One log line on standard error, `datahub broker: ...`. A closed standard error (the log
/// piped into `head`) is ignored: the broker keeps serving, unlike `eprintln!`, which panics.
fn log(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "datahub broker: {line}");
}

/// A value's name on the wire and in `--json` (`latest`, `sequential_sync`, ...).
fn wire_name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
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
    let curve = match &args.keys {
        Some(dir) => Some(ServerKeys::load_dir(dir).map_err(|e| Fail::usage(e.to_string()))?),
        None => None,
    };
    let allowed = curve.as_ref().map(|k| k.allowed.len());
    let config = BrokerConfig {
        endpoint: args.listen.clone(),
        heartbeat: hb,
        curve,
        ..BrokerConfig::default()
    }
    .on_event(|e| log(format_args!("{e}")));
    let broker = Broker::bind(config).map_err(broker_fail)?;
    crate::signals::catch();
    let stop = broker.stop_handle();
    let auth = match allowed {
        Some(n) => format!("CURVE, {n} allowed client key(s)"),
        None => "no CURVE keys".to_owned(),
    };
    log(format_args!(
        "listening on {} (heartbeat {} ms, pending after {}, dead after {} more; {auth})",
        broker.endpoint(),
        hb.interval_ms,
        hb.pending_after_misses,
        hb.dead_after_misses
    ));
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
    log(format_args!("stopped (signal {sig})"));
    Ok(())
}

#[derive(Serialize)]
struct Listing<'a> {
    broker: &'a str,
    channels: &'a [ChannelSummary],
}

/// Lists the broker's channels.
pub fn run_channels(args: &ChannelsArgs) -> Result<String> {
    let uid = crate::publish::role_uid("channels");
    let c =
        Client::connect(args.broker.as_deref(), &uid, args.auth.options()?).map_err(broker_fail)?;
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
            wire_name(&ch.policy),
            ch.block_name,
            ch.schema.id,
            ch.schema.version,
            ch.schema.fingerprint
        ));
    }
    Ok(out)
}
