//! Prometheus exposition of a block's counters, rendered with `prometheus-client`.
//!
//! Every series carries the label `block` (the block's name: block names are chosen by
//! whoever runs the producers, so their number stays bounded). Names follow
//! `datahub_<thing>_<unit>`, counters end in `_total`:
//!
//! | metric | type | from [`datahub::Metrics`] / [`datahub::BlockInfo`] |
//! |---|---|---|
//! | `datahub_slot_writes_total` | counter | `slots_written` |
//! | `datahub_slot_reads_total` | counter | `slots_read` |
//! | `datahub_bytes_written_total` | counter | `bytes_written` |
//! | `datahub_bytes_read_total` | counter | `bytes_read` |
//! | `datahub_aborted_writes_total` | counter | `aborted_writes` |
//! | `datahub_writer_timeouts_total{cause}` | counter | `writer_timeouts_ring_full` (`ring_full`), `writer_timeouts_readers` (`readers_active`) |
//! | `datahub_reader_timeouts_total` | counter | `reader_timeouts` |
//! | `datahub_reader_races_total` | counter | `reader_races` |
//! | `datahub_validation_failures_total` | counter | `validation_failures` |
//! | `datahub_checksum_failures_total` | counter | `checksum_failures` |
//! | `datahub_checksums_verified_total` | counter | `checksums_verified` |
//! | `datahub_recovery_actions_total` | counter | `recovery_actions` |
//! | `datahub_consumers_reclaimed_total` | counter | `consumers_reclaimed` |
//! | `datahub_overruns_total` | counter | `overruns` |
//! | `datahub_consumer_attaches_total` | counter | `attaches` |
//! | `datahub_consumer_detaches_total` | counter | `detaches` |
//! | `datahub_consumers` | gauge | `consumers` (registered now) |
//! | `datahub_commit_index` | gauge | `commit_index` (one past the newest committed message) |
//! | `datahub_peak_readers` | gauge | `peak_readers` |
//! | `datahub_last_error_code` | gauge | `last_error_code` (0: none) |
//! | `datahub_last_error_timestamp_seconds` | gauge | `last_error_unix_ns` / 1e9 (0: none) |
//! | `datahub_producer_alive` | gauge | 1 if the producer process is alive |
//! | `datahub_slots` | gauge | slots in the ring |
//! | `datahub_slot_size_bytes` | gauge | payload bytes per slot |
//! | `datahub_block_info{policy,checksum,version}` | gauge (1) | identity |
//!
//! [`render`] writes OpenMetrics text (what prometheus-client writes); [`render_text`] writes
//! the classic text format 0.0.4 (what `promtool check metrics` and the node_exporter textfile
//! collector read): prometheus-client names a counter family `x` with samples `x_total`, the
//! 0.0.4 format names the family `x_total`, so the descriptor lines are renamed and `# EOF`
//! dropped; samples, labels and escaping stay prometheus-client's.

use datahub::{BlockInfo, Metrics};
use prom_text::{Builder, LabelValue as Value, Labels};

/// The families of one render: every series carries the `block` label.
struct BlockBuilder {
    families: Builder,
    block: Labels,
}

impl BlockBuilder {
    /// A counter (name without `_total`; prometheus-client appends it).
    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.families
            .counters(name, help)
            .get_or_create(&self.block)
            .inc_by(value);
    }
    /// An `i64` gauge, [clamped](prom_text::clamp_i64) to `i64::MAX`.
    fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.families
            .int_gauges(name, help)
            .get_or_create(&self.block)
            .set(prom_text::clamp_i64(value));
    }
}

/// Renders `m` (and, when given, identity figures from `info`) for block `block` as OpenMetrics
/// text.
pub fn render(block: &str, m: &Metrics, info: Option<&BlockInfo>) -> String {
    let mut b = BlockBuilder {
        families: Builder::with_prefix("datahub"),
        block: vec![("block", Value(block.to_owned()))],
    };
    let counters: [(&str, &str, u64); 15] = [
        ("slot_writes", "Messages committed", m.slots_written),
        (
            "slot_reads",
            "Messages released by readers, summed over consumers",
            m.slots_read,
        ),
        ("bytes_written", "Payload bytes committed", m.bytes_written),
        (
            "bytes_read",
            "Payload bytes released by readers",
            m.bytes_read,
        ),
        (
            "aborted_writes",
            "Writes abandoned before commit",
            m.aborted_writes,
        ),
        ("reader_timeouts", "Reads that timed out", m.reader_timeouts),
        (
            "reader_races",
            "Reader attempts that found the slot changed and retried",
            m.reader_races,
        ),
        (
            "validation_failures",
            "Read guards whose slot was reset under them",
            m.validation_failures,
        ),
        (
            "checksum_failures",
            "Checksums that did not match or were missing",
            m.checksum_failures,
        ),
        (
            "checksums_verified",
            "Checksums verified",
            m.checksums_verified,
        ),
        (
            "recovery_actions",
            "Recovery actions taken (takeovers, evictions, resets)",
            m.recovery_actions,
        ),
        (
            "consumers_reclaimed",
            "Consumers retired because their process died",
            m.consumers_reclaimed,
        ),
        (
            "overruns",
            "Lossless readers that found their message overwritten",
            m.overruns,
        ),
        ("consumer_attaches", "Consumer attaches", m.attaches),
        ("consumer_detaches", "Clean consumer detaches", m.detaches),
    ];
    for (name, help, value) in counters {
        b.counter(name, help, value);
    }
    let timeouts = b
        .families
        .counters("writer_timeouts", "Producer waits that timed out, by cause");
    for (cause, n) in [
        ("ring_full", m.writer_timeouts_ring_full),
        ("readers_active", m.writer_timeouts_readers),
    ] {
        let mut l = b.block.clone();
        l.push(("cause", Value(cause.to_owned())));
        timeouts.get_or_create(&l).inc_by(n);
    }

    b.gauge("consumers", "Registered consumers", u64::from(m.consumers));
    b.gauge(
        "commit_index",
        "One past the newest committed sequence number",
        m.commit_index,
    );
    b.gauge(
        "peak_readers",
        "Most readers seen holding one slot at once",
        m.peak_readers,
    );
    b.gauge(
        "last_error_code",
        "Code of the last error recorded in the block (0: none)",
        m.last_error_code,
    );
    b.families
        .float_gauges(
            "last_error_timestamp_seconds",
            "Wall-clock time of the last error, seconds since the Unix epoch (0: none)",
        )
        .get_or_create(&b.block)
        .set(m.last_error_unix_ns as f64 / 1e9);
    if let Some(i) = info {
        b.gauge(
            "producer_alive",
            "1 if the block's producer process is alive",
            u64::from(i.producer.alive),
        );
        b.gauge("slots", "Slots in the ring", u64::from(i.slot_count));
        b.gauge(
            "slot_size_bytes",
            "Payload bytes per slot",
            u64::from(i.slot_size),
        );
        let mut l = b.block.clone();
        l.push(("policy", Value(i.policy.to_string())));
        l.push(("checksum", Value(i.checksum.to_string())));
        l.push(("version", Value(i.version.clone())));
        b.families
            .int_gauges("block_info", "Block identity (value 1)")
            .get_or_create(&l)
            .set(1);
    }
    b.families.into_openmetrics()
}

/// Like [`render`], in the Prometheus text format 0.0.4.
pub fn render_text(block: &str, m: &Metrics, info: Option<&BlockInfo>) -> String {
    prom_text::openmetrics_to_text(&render(block, m, info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_labels_and_escaping() {
        let m = Metrics {
            slots_written: 3,
            bytes_written: 30,
            consumers: 1,
            commit_index: 3,
            ..Metrics::default()
        };
        let text = render_text("a\"b\\c", &m, None);
        assert!(
            text.contains("# TYPE datahub_slot_writes_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("datahub_slot_writes_total{block=\"a\\\"b\\\\c\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("datahub_bytes_written_total{block=\"a\\\"b\\\\c\"} 30\n"),
            "{text}"
        );
        assert!(
            text.contains("datahub_consumers{block=\"a\\\"b\\\\c\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "datahub_writer_timeouts_total{block=\"a\\\"b\\\\c\",cause=\"ring_full\"} 0\n"
            ),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
        assert!(render("x", &m, None).ends_with("# EOF\n"));
    }
}
