//! Prometheus metrics of a bus (feature `metrics`): [`render`] writes a [`Stats`] (and,
//! optionally, a replica's [`ReplicationStats`]) as exposition text; [`serve`] answers
//! `/metrics` from any source of them; [`Mmsb::serve_metrics`](crate::Mmsb::serve_metrics)
//! serves a live bus.
//!
//! Every name starts with [`PREFIX`] (`mmsb_`); `docs/metrics.md` ("MMSB") lists them with
//! their types, labels and units. Counters count since the bus started (a restart resets them,
//! which `rate()` handles). Latencies are summaries in seconds (quantiles 0.5, 0.99, 0.999 of
//! the bus's hdrhistograms, `_sum` and `_count`); a summary with no observations (timings off,
//! or nothing measured yet) has `NaN` quantiles, the Prometheus convention. Replication series
//! carry the label `role`. Nothing user-written becomes a label, so cardinality is fixed.
//!
//! Rendered with prometheus-client through [`prom_text`] (summaries by
//! [`prom_text::Builder::summary`]: prometheus-client 0.24 has no summary type).
//!
//! ```
//! let text = mmsb::metrics::render(&mmsb::Stats::default(), None, false);
//! assert!(text.contains("# TYPE mmsb_commits_total counter\nmmsb_commits_total 0\n"));
//! ```

use std::io;
use std::net::SocketAddr;

use metrics_endpoint::{Reply, Request};
use prom_text::{
    Builder, LabelValue, Labels, OPENMETRICS_CONTENT_TYPE, Summary, TEXT_CONTENT_TYPE,
};
use serde::Serialize;

use crate::stats::{Percentiles, Stats};

pub use crate::bus::{METRICS_PUBLISH_INTERVAL, MetricsHandle, Published};
pub use metrics_endpoint::Endpoint;

/// The prefix of every metric name.
pub const PREFIX: &str = "mmsb";

/// [`ReplicationStats::role`] of the bus whose log others follow.
pub const ROLE_LEADER: &str = "leader";
/// [`ReplicationStats::role`] of a replica applying a leader's stream.
pub const ROLE_FOLLOWER: &str = "follower";
/// [`ReplicationStats::role`] of the process copying a log to the stream.
pub const ROLE_SHIPPER: &str = "shipper";

/// A replica's (or shipper's) figures, filled by the replication code and rendered as
/// `mmsb_replication_*`, every series with the label `role`.
///
/// (Serializable whenever this module exists: the `metrics` feature enables `serde`.)
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReplicationStats {
    /// [`ROLE_LEADER`], [`ROLE_FOLLOWER`] or [`ROLE_SHIPPER`] (any other text is escaped, but
    /// keep to these: it is a label on every series).
    pub role: &'static str,
    /// The last LSN known to be in the stream (the leader's last shipped frame).
    pub leader_lsn: u64,
    /// The last LSN applied (follower) or shipped (shipper).
    pub applied_lsn: u64,
    /// Frames behind: `leader_lsn - applied_lsn`, as the replication code measures it.
    pub lag_frames: u64,
    /// Seconds behind: the age of the newest frame applied or shipped, against the stream.
    pub lag_seconds: f64,
    /// Frames shipped or applied since start.
    pub frames_total: u64,
    /// Bytes of those frames.
    pub bytes_total: u64,
    /// Reconnections to the stream since start.
    pub reconnects_total: u64,
    /// Errors (stream, decode, apply) since start.
    pub errors_total: u64,
    /// Checkpoints published (leader, shipper) or restored (follower) since start.
    pub checkpoints_total: u64,
}

/// `/stats.json`: the bus's stats and, for a replica, its replication figures (`null`
/// otherwise).
#[derive(Debug, Serialize)]
pub struct StatsJson<'a> {
    /// [`crate::Mmsb::stats`], as last published (`null` for a shipper, which has no bus).
    pub stats: Option<&'a Stats>,
    /// The replication figures, if any.
    pub replication: Option<&'a ReplicationStats>,
}

fn v(s: &str) -> LabelValue {
    LabelValue(s.to_owned())
}

/// Nanoseconds as seconds.
fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// A latency distribution as one summary series, seconds.
fn summary(p: &Percentiles) -> Summary {
    let q = |ns: u64| if p.count == 0 { f64::NAN } else { secs(ns) };
    Summary {
        labels: Vec::new(),
        quantiles: vec![
            (0.5, q(p.p50_ns)),
            (0.99, q(p.p99_ns)),
            (0.999, q(p.p999_ns)),
        ],
        sum: secs(p.sum_ns),
        count: p.count,
    }
}

/// `stats` (and `repl`, if given) as exposition text: OpenMetrics 1.0 (`# EOF`-terminated,
/// [`OPENMETRICS_CONTENT_TYPE`]) when `openmetrics`, else the Prometheus text format 0.0.4
/// ([`TEXT_CONTENT_TYPE`]). Names, types, labels and units: `docs/metrics.md`.
///
/// The deltas are split by `source`: `propagation` is what recompute functions wrote
/// ([`Stats::propagation_deltas`], [`Stats::propagation_delta_bytes`]), `user` the rest.
/// Counts above `i64::MAX` show as `i64::MAX` in gauges.
pub fn render(stats: &Stats, repl: Option<&ReplicationStats>, openmetrics: bool) -> String {
    render_parts(Some(stats), repl, openmetrics)
}

/// [`render`] of what there is: a shipper reading a log directory has replication figures and
/// no bus (`stats` `None`: the bus families are left out).
pub fn render_parts(
    stats: Option<&Stats>,
    repl: Option<&ReplicationStats>,
    openmetrics: bool,
) -> String {
    let mut b = Builder::with_prefix(PREFIX);
    if let Some(stats) = stats {
        bus(&mut b, stats);
    }
    if let Some(r) = repl {
        replication(&mut b, r);
    }
    if openmetrics {
        b.into_openmetrics()
    } else {
        b.into_text()
    }
}

fn bus(b: &mut Builder, s: &Stats) {
    let user_deltas = s.deltas.saturating_sub(s.propagation_deltas);
    let user_bytes = s.delta_bytes.saturating_sub(s.propagation_delta_bytes);
    let deltas = b.counters::<Labels>("deltas", "Deltas applied, by source (user or propagation)");
    let bytes = b.counters::<Labels>(
        "delta_bytes",
        "Bytes the applied deltas changed (selected bytes, not encoded size), by source",
    );
    for (source, n, nb) in [
        ("user", user_deltas, user_bytes),
        (
            "propagation",
            s.propagation_deltas,
            s.propagation_delta_bytes,
        ),
    ] {
        deltas.get_or_create(&vec![("source", v(source))]).inc_by(n);
        bytes.get_or_create(&vec![("source", v(source))]).inc_by(nb);
    }
    let counters: [(&str, &str, u64); 9] = [
        (
            "commits",
            "Commits (single changes outside a batch, and batches)",
            s.commits,
        ),
        ("propagation_waves", "Propagation waves run", s.waves),
        ("recomputes", "Recompute functions called", s.recomputes),
        (
            "cutoffs",
            "Recomputes whose output equalled the page (early cutoff)",
            s.cutoffs,
        ),
        ("stale_marks", "Pages marked stale", s.stale_marks),
        ("log_frames", "Frames appended to the log", s.log_frames),
        ("log_bytes", "Frame bytes appended to the log", s.log_bytes),
        ("log_fsyncs", "fdatasync calls on the log", s.log_syncs),
        (
            "log_write_errors",
            "Log appends, flushes and syncs that failed with an I/O error (the first poisons the bus)",
            s.log_write_errors,
        ),
    ];
    for (name, help, value) in counters {
        b.counter(name, help, value);
    }
    // The recovery figures are gauges: they are fixed when the bus starts, and a counter
    // would claim they grow.
    let gauges: [(&str, &str, u64); 9] = [
        ("pages", "Pages that exist", s.pages as u64),
        ("page_bytes", "Sum of the page sizes", s.page_bytes as u64),
        (
            "graph_nodes",
            "Pages with at least one edge",
            s.graph_nodes as u64,
        ),
        ("graph_edges", "Dependency edges", s.graph_edges as u64),
        (
            "graph_depth",
            "Longest dependency path, in edges",
            s.graph_depth as u64,
        ),
        ("last_lsn", "LSN of the last frame appended", s.last_lsn),
        (
            "durable_lsn",
            "Highest LSN known to be on stable storage",
            s.durable_lsn,
        ),
        (
            "recovery_truncated_frames",
            "Complete frames of an uncommitted batch that recovery dropped when the bus started",
            s.recovery_truncated_frames,
        ),
        (
            "recovery_truncated_bytes",
            "Bytes recovery cut off the end of the log when the bus started",
            s.recovery_truncated_bytes,
        ),
    ];
    for (name, help, value) in gauges {
        b.gauge(name, help, value);
    }
    for (name, help, p) in [
        (
            "delta_apply_seconds",
            "Applying one delta to its page (logging excluded)",
            &s.delta_apply,
        ),
        (
            "log_append_seconds",
            "Appending one frame to the log (with the write or fsync the durability mode asks for)",
            &s.log_append,
        ),
        (
            "propagation_seconds",
            "One propagation wave (all recomputes of one commit, with their logging)",
            &s.propagation,
        ),
    ] {
        b.summary(name, help, vec![summary(p)]);
    }
}

fn replication(b: &mut Builder, r: &ReplicationStats) {
    let role: Labels = vec![("role", v(r.role))];
    let gauges: [(&str, &str, u64); 3] = [
        (
            "replication_leader_lsn",
            "Last LSN known to be in the replication stream",
            r.leader_lsn,
        ),
        (
            "replication_applied_lsn",
            "Last LSN applied (follower) or shipped (shipper)",
            r.applied_lsn,
        ),
        (
            "replication_lag_frames",
            "Frames the follower or shipper is behind the stream",
            r.lag_frames,
        ),
    ];
    for (name, help, value) in gauges {
        b.int_gauges::<Labels>(name, help)
            .get_or_create(&role)
            .set(prom_text::clamp_i64(value));
    }
    b.float_gauges::<Labels>(
        "replication_lag_seconds",
        "Seconds the follower or shipper is behind the stream",
    )
    .get_or_create(&role)
    .set(r.lag_seconds);
    let counters: [(&str, &str, u64); 5] = [
        (
            "replication_frames",
            "Frames shipped or applied",
            r.frames_total,
        ),
        (
            "replication_bytes",
            "Bytes of the frames shipped or applied",
            r.bytes_total,
        ),
        (
            "replication_reconnects",
            "Reconnections to the replication stream",
            r.reconnects_total,
        ),
        (
            "replication_errors",
            "Replication errors (stream, decode, apply)",
            r.errors_total,
        ),
        (
            "replication_checkpoints",
            "Checkpoints published (leader, shipper) or restored (follower)",
            r.checkpoints_total,
        ),
    ];
    for (name, help, value) in counters {
        b.counters::<Labels>(name, help)
            .get_or_create(&role)
            .inc_by(value);
    }
}

/// What [`serve`] answers from: the bus's stats (`None` when there is no bus, as for a shipper)
/// and replication figures of the moment, or why there are none (HTTP 503).
pub type MetricsSource =
    dyn Fn() -> Result<(Option<Stats>, Option<ReplicationStats>), String> + Send + Sync;

/// Serves what `source` returns on `addr` (port 0 picks a free port:
/// [`Endpoint::local_addr`]): `GET /metrics` ([`render`], OpenMetrics when the client's
/// `Accept` asks for it, else text 0.0.4), `GET /stats.json` ([`StatsJson`]), `GET /` an
/// index; anything else 404. `source` runs on the server's render threads, once per request;
/// its error is a 503 with the text, its panic a 500. The server is [`metrics_endpoint`]
/// (bounded connections, timeouts; see its docs). Dropping the endpoint stops it.
///
/// # Errors
/// The address cannot be bound (in use, not local, no permission), or the server's thread or
/// runtime cannot be created; the message names the address.
pub fn serve(addr: SocketAddr, source: Box<MetricsSource>) -> io::Result<Endpoint> {
    metrics_endpoint::serve(
        addr,
        "mmsb",
        Box::new(move |req: &Request| respond(req, &*source)),
    )
}

/// Longest source error quoted in a 503, bytes.
const MAX_ERROR: usize = 512;

fn clip(s: &str) -> &str {
    if s.len() <= MAX_ERROR {
        return s;
    }
    let mut end = MAX_ERROR;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn respond(req: &Request, source: &MetricsSource) -> Reply {
    match (req.get, req.path.as_str()) {
        (true, path @ ("/metrics" | "/stats.json")) => {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(source)) {
                Ok(Ok((stats, repl))) if path == "/metrics" => {
                    let ct = if req.openmetrics {
                        OPENMETRICS_CONTENT_TYPE
                    } else {
                        TEXT_CONTENT_TYPE
                    };
                    Reply::ok(
                        ct,
                        render_parts(stats.as_ref(), repl.as_ref(), req.openmetrics),
                    )
                }
                Ok(Ok((stats, repl))) => {
                    let json = StatsJson {
                        stats: stats.as_ref(),
                        replication: repl.as_ref(),
                    };
                    match serde_json::to_string_pretty(&json) {
                        Ok(mut body) => {
                            body.push('\n');
                            Reply::ok("application/json", body)
                        }
                        Err(e) => Reply::text(500, format!("no stats: {e}\n")),
                    }
                }
                Ok(Err(e)) => Reply::text(503, format!("no stats: {}\n", clip(&e))),
                Err(_) => Reply::text(500, "no stats: the stats source panicked\n".to_owned()),
            }
        }
        (true, "/") => Reply::text(
            200,
            "mmsb stats: /metrics (Prometheus), /stats.json\n".to_owned(),
        ),
        _ => Reply::not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Stats {
        Stats {
            pages: 4,
            page_bytes: 4096,
            deltas: 10,
            delta_bytes: 1000,
            propagation_deltas: 3,
            propagation_delta_bytes: 300,
            commits: 7,
            waves: 5,
            recomputes: 6,
            cutoffs: 2,
            stale_marks: 1,
            graph_nodes: 3,
            graph_edges: 2,
            graph_depth: 1,
            last_lsn: 42,
            durable_lsn: 40,
            log_frames: 42,
            log_bytes: 5000,
            log_syncs: 9,
            log_write_errors: 1,
            recovery_truncated_frames: 2,
            recovery_truncated_bytes: 77,
            delta_apply: Percentiles {
                count: 10,
                p50_ns: 500,
                p99_ns: 2_000,
                p999_ns: 3_000,
                max_ns: 4_000,
                sum_ns: 8_000,
            },
            log_append: Percentiles::default(),
            propagation: Percentiles {
                count: 5,
                p50_ns: 1_000_000,
                p99_ns: 250_000_000,
                p999_ns: 250_000_000,
                max_ns: 250_000_000,
                sum_ns: 1_500_000_000,
            },
        }
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn render_of_known_stats_has_exact_names_and_values() {
        let text = render(&known(), None, false);
        let got = lines(&text);
        for want in [
            r#"mmsb_deltas_total{source="user"} 7"#,
            r#"mmsb_deltas_total{source="propagation"} 3"#,
            r#"mmsb_delta_bytes_total{source="user"} 700"#,
            r#"mmsb_delta_bytes_total{source="propagation"} 300"#,
            "mmsb_commits_total 7",
            "mmsb_propagation_waves_total 5",
            "mmsb_recomputes_total 6",
            "mmsb_cutoffs_total 2",
            "mmsb_stale_marks_total 1",
            "mmsb_log_frames_total 42",
            "mmsb_log_bytes_total 5000",
            "mmsb_log_fsyncs_total 9",
            "mmsb_log_write_errors_total 1",
            "mmsb_pages 4",
            "mmsb_page_bytes 4096",
            "mmsb_graph_nodes 3",
            "mmsb_graph_edges 2",
            "mmsb_graph_depth 1",
            "mmsb_last_lsn 42",
            "mmsb_durable_lsn 40",
            "mmsb_recovery_truncated_frames 2",
            "mmsb_recovery_truncated_bytes 77",
            r#"mmsb_delta_apply_seconds{quantile="0.5"} 0.0000005"#,
            r#"mmsb_delta_apply_seconds{quantile="0.99"} 0.000002"#,
            r#"mmsb_delta_apply_seconds{quantile="0.999"} 0.000003"#,
            "mmsb_delta_apply_seconds_sum 0.000008",
            "mmsb_delta_apply_seconds_count 10",
            r#"mmsb_propagation_seconds{quantile="0.99"} 0.25"#,
            "mmsb_propagation_seconds_sum 1.5",
            "mmsb_propagation_seconds_count 5",
        ] {
            assert!(got.contains(&want), "missing {want:?} in\n{text}");
        }
        assert!(
            text.contains("# TYPE mmsb_commits_total counter\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE mmsb_durable_lsn gauge\n"), "{text}");
        assert!(
            text.contains("# TYPE mmsb_delta_apply_seconds summary\n"),
            "{text}"
        );
        assert!(!text.contains("replication"), "no replication without it");
        assert!(!text.contains("# EOF"), "0.0.4 has no EOF");
    }

    #[test]
    fn summary_without_observations_has_nan_quantiles_and_zero_count() {
        let text = render(&known(), None, false);
        let got = lines(&text);
        for q in ["0.5", "0.99", "0.999"] {
            let want = format!(r#"mmsb_log_append_seconds{{quantile="{q}"}} NaN"#);
            assert!(got.contains(&want.as_str()), "missing {want} in\n{text}");
        }
        assert!(got.contains(&"mmsb_log_append_seconds_count 0"), "{text}");
    }

    #[test]
    fn source_split_user_is_deltas_minus_propagation_and_never_underflows() {
        let mut s = known();
        s.deltas = 2;
        s.propagation_deltas = 2;
        s.delta_bytes = 5;
        s.propagation_delta_bytes = 9; // inconsistent input: user saturates at 0
        let text = render(&s, None, false);
        let got = lines(&text);
        assert!(
            got.contains(&r#"mmsb_deltas_total{source="user"} 0"#),
            "{text}"
        );
        assert!(
            got.contains(&r#"mmsb_deltas_total{source="propagation"} 2"#),
            "{text}"
        );
        assert!(
            got.contains(&r#"mmsb_delta_bytes_total{source="user"} 0"#),
            "{text}"
        );
    }

    #[test]
    fn replication_series_carry_the_role_label() {
        let r = ReplicationStats {
            role: ROLE_FOLLOWER,
            leader_lsn: 100,
            applied_lsn: 90,
            lag_frames: 10,
            lag_seconds: 1.25,
            frames_total: 90,
            bytes_total: 9000,
            reconnects_total: 2,
            errors_total: 1,
            checkpoints_total: 3,
        };
        let text = render(&known(), Some(&r), false);
        let got = lines(&text);
        for want in [
            r#"mmsb_replication_leader_lsn{role="follower"} 100"#,
            r#"mmsb_replication_applied_lsn{role="follower"} 90"#,
            r#"mmsb_replication_lag_frames{role="follower"} 10"#,
            r#"mmsb_replication_lag_seconds{role="follower"} 1.25"#,
            r#"mmsb_replication_frames_total{role="follower"} 90"#,
            r#"mmsb_replication_bytes_total{role="follower"} 9000"#,
            r#"mmsb_replication_reconnects_total{role="follower"} 2"#,
            r#"mmsb_replication_errors_total{role="follower"} 1"#,
            r#"mmsb_replication_checkpoints_total{role="follower"} 3"#,
        ] {
            assert!(got.contains(&want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn role_label_is_escaped() {
        let r = ReplicationStats {
            role: "a\"b\\c\nd",
            ..ReplicationStats::default()
        };
        let text = render(&Stats::default(), Some(&r), false);
        assert!(
            text.contains(r#"mmsb_replication_lag_frames{role="a\"b\\c\nd"} 0"#),
            "{text}"
        );
        assert!(!text.contains("c\nd"), "a raw line feed in a label: {text}");
    }

    #[test]
    fn openmetrics_ends_with_eof_and_names_counter_families_without_total() {
        let text = render(&known(), None, true);
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains("# TYPE mmsb_commits counter\nmmsb_commits_total 7\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE mmsb_propagation_seconds summary\n"),
            "{text}"
        );
    }

    #[test]
    fn respond_answers_503_for_a_source_error_500_for_a_panic_and_404_else() {
        let get = |path: &str| Request {
            get: true,
            path: path.to_owned(),
            openmetrics: false,
        };
        let err: Box<MetricsSource> = Box::new(|| Err("bus \"x\" gone".to_owned()));
        let r = respond(&get("/metrics"), &*err);
        assert_eq!(
            (r.status, r.body.as_str()),
            (503, "no stats: bus \"x\" gone\n")
        );
        let panics: Box<MetricsSource> = Box::new(|| panic!("boom"));
        assert_eq!(respond(&get("/stats.json"), &*panics).status, 500);
        let ok: Box<MetricsSource> = Box::new(|| Ok((Some(known()), None)));
        assert_eq!(respond(&get("/nope"), &*ok).status, 404);
        let json = respond(&get("/stats.json"), &*ok);
        assert_eq!(json.status, 200);
        let v: serde_json::Value = serde_json::from_str(&json.body).unwrap();
        assert_eq!(v["stats"]["commits"], 7);
        assert!(v["replication"].is_null(), "{v}");
        let m = respond(&get("/metrics"), &*ok);
        assert_eq!((m.status, m.content_type), (200, TEXT_CONTENT_TYPE));
    }
}
