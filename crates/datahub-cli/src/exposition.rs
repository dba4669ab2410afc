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
//! | `datahub_block_huge_pages{backing}` | gauge | 1 if the block is on verified huge pages (`backing` `thp` or `hugetlb`), 0 otherwise (`small`, `thp_requested`, `unknown`); the label is the backing its creator recorded |
//! | `datahub_heartbeat_timeout_seconds` | gauge | `heartbeat_timeout_ms` / 1e3 (a peer whose heartbeat is older is stalled) |
//! | `datahub_producer_heartbeat_age_seconds` | gauge | `producer.heartbeat_age_ms` / 1e3 (absent while no producer ever registered) |
//! | `datahub_consumer_lag_messages{consumer}` | gauge | `commit_index` − the consumer's `position` (0 when it is ahead) |
//! | `datahub_consumer_heartbeat_age_seconds{consumer}` | gauge | the consumer's `heartbeat_age_ms` / 1e3 |
//! | `datahub_consumer_alive{consumer}` | gauge | 1 if the consumer's process is alive (pid and start time) |
//!
//! The per-consumer series carry `consumer="ENTRY:PID"`: the consumer's entry in the header's
//! consumer table (0..64) and its pid. The entry alone is reused by the next consumer and the
//! pid alone by the next process, so together they name one registration; a consumer that
//! re-attaches starts a new series. Lag counts messages committed that the consumer has not
//! read: for the lossless policies that is its backlog (at most `datahub_slots`), for `latest`
//! the messages it has not seen yet (it skips to the newest when it reads).
//!
//! [`render`] writes OpenMetrics text (what prometheus-client writes); [`render_text`] writes
//! the classic text format 0.0.4 (what `promtool check metrics` and the node_exporter textfile
//! collector read): prometheus-client names a counter family `x` with samples `x_total`, the
//! 0.0.4 format names the family `x_total`, so the descriptor lines are renamed and `# EOF`
//! dropped; samples, labels and escaping stay prometheus-client's.

use datahub::{BlockInfo, Metrics};
use prom_text::{Builder, Counters, FloatGauges, IntGauges, LabelValue as Value, Labels};

/// A counter of [`Metrics`]: name (without `datahub_` and `_total`), help, value.
type CounterDef = (&'static str, &'static str, fn(&Metrics) -> u64);

/// The counters of [`Metrics`], in output order.
const COUNTERS: [CounterDef; 15] = [
    ("slot_writes", "Messages committed", |m| m.slots_written),
    (
        "slot_reads",
        "Messages released by readers, summed over consumers",
        |m| m.slots_read,
    ),
    ("bytes_written", "Payload bytes committed", |m| {
        m.bytes_written
    }),
    ("bytes_read", "Payload bytes released by readers", |m| {
        m.bytes_read
    }),
    ("aborted_writes", "Writes abandoned before commit", |m| {
        m.aborted_writes
    }),
    ("reader_timeouts", "Reads that timed out", |m| {
        m.reader_timeouts
    }),
    (
        "reader_races",
        "Reader attempts that found the slot changed and retried",
        |m| m.reader_races,
    ),
    (
        "validation_failures",
        "Read guards whose slot was reset under them",
        |m| m.validation_failures,
    ),
    (
        "checksum_failures",
        "Checksums that did not match or were missing",
        |m| m.checksum_failures,
    ),
    ("checksums_verified", "Checksums verified", |m| {
        m.checksums_verified
    }),
    (
        "recovery_actions",
        "Recovery actions taken (takeovers, evictions, resets)",
        |m| m.recovery_actions,
    ),
    (
        "consumers_reclaimed",
        "Consumers retired because their process died",
        |m| m.consumers_reclaimed,
    ),
    (
        "overruns",
        "Lossless readers that found their message overwritten",
        |m| m.overruns,
    ),
    ("consumer_attaches", "Consumer attaches", |m| m.attaches),
    ("consumer_detaches", "Clean consumer detaches", |m| {
        m.detaches
    }),
];

/// Every block family of one render, registered once in a [`Builder`] and filled with
/// [`Families::add`] for as many blocks as the render shows (what `datahub exporter` does
/// with every block it sees; `datahub metrics` with one).
pub struct Families {
    counters: Vec<Counters>,
    writer_timeouts: Counters,
    consumers: IntGauges,
    commit_index: IntGauges,
    peak_readers: IntGauges,
    last_error_code: IntGauges,
    last_error_timestamp: FloatGauges,
    info: Option<InfoFamilies>,
}

/// The families read from [`BlockInfo`].
struct InfoFamilies {
    producer_alive: IntGauges,
    slots: IntGauges,
    slot_size: IntGauges,
    block_info: IntGauges,
    huge_pages: IntGauges,
    heartbeat_timeout: FloatGauges,
    producer_heartbeat_age: FloatGauges,
    consumer_lag: IntGauges,
    consumer_heartbeat_age: FloatGauges,
    consumer_alive: IntGauges,
}

impl Families {
    /// Registers the families in `b` (which should have the prefix `datahub`); with
    /// `with_info`, also those [`Families::add`] fills from a [`BlockInfo`].
    pub fn register(b: &mut Builder, with_info: bool) -> Families {
        let counters = COUNTERS
            .iter()
            .map(|(name, help, _)| b.counters(name, help))
            .collect();
        let writer_timeouts =
            b.counters("writer_timeouts", "Producer waits that timed out, by cause");
        let consumers = b.int_gauges("consumers", "Registered consumers");
        let commit_index = b.int_gauges(
            "commit_index",
            "One past the newest committed sequence number",
        );
        let peak_readers =
            b.int_gauges("peak_readers", "Most readers seen holding one slot at once");
        let last_error_code = b.int_gauges(
            "last_error_code",
            "Code of the last error recorded in the block (0: none)",
        );
        let last_error_timestamp = b.float_gauges(
            "last_error_timestamp_seconds",
            "Wall-clock time of the last error, seconds since the Unix epoch (0: none)",
        );
        let info = with_info.then(|| InfoFamilies {
            producer_alive: b.int_gauges(
                "producer_alive",
                "1 if the block's producer process is alive",
            ),
            slots: b.int_gauges("slots", "Slots in the ring"),
            slot_size: b.int_gauges("slot_size_bytes", "Payload bytes per slot"),
            block_info: b.int_gauges("block_info", "Block identity (value 1)"),
            huge_pages: b.int_gauges(
                "block_huge_pages",
                "1 if the block is on verified huge pages; the backing label says which pages",
            ),
            heartbeat_timeout: b.float_gauges(
                "heartbeat_timeout_seconds",
                "A peer whose heartbeat is older than this is stalled",
            ),
            producer_heartbeat_age: b.float_gauges(
                "producer_heartbeat_age_seconds",
                "Time since the producer's last heartbeat",
            ),
            consumer_lag: b.int_gauges(
                "consumer_lag_messages",
                "Messages committed that the consumer has not read yet",
            ),
            consumer_heartbeat_age: b.float_gauges(
                "consumer_heartbeat_age_seconds",
                "Time since the consumer's last heartbeat",
            ),
            consumer_alive: b.int_gauges("consumer_alive", "1 if the consumer's process is alive"),
        });
        Families {
            counters,
            writer_timeouts,
            consumers,
            commit_index,
            peak_readers,
            last_error_code,
            last_error_timestamp,
            info,
        }
    }

    /// Adds block `block`'s series: `m`, and `info` when the families were registered for it
    /// (`info` is ignored otherwise).
    pub fn add(&self, block: &str, m: &Metrics, info: Option<&BlockInfo>) {
        let labels: Labels = vec![("block", Value(block.to_owned()))];
        let with = |k: &'static str, v: String| {
            let mut l = labels.clone();
            l.push((k, Value(v)));
            l
        };
        for (family, (_, _, value)) in self.counters.iter().zip(COUNTERS.iter()) {
            family.get_or_create(&labels).inc_by(value(m));
        }
        for (cause, n) in [
            ("ring_full", m.writer_timeouts_ring_full),
            ("readers_active", m.writer_timeouts_readers),
        ] {
            self.writer_timeouts
                .get_or_create(&with("cause", cause.to_owned()))
                .inc_by(n);
        }
        let set = |f: &IntGauges, l: &Labels, v: u64| {
            f.get_or_create(l).set(prom_text::clamp_i64(v));
        };
        set(&self.consumers, &labels, u64::from(m.consumers));
        set(&self.commit_index, &labels, m.commit_index);
        set(&self.peak_readers, &labels, m.peak_readers);
        set(&self.last_error_code, &labels, m.last_error_code);
        self.last_error_timestamp
            .get_or_create(&labels)
            .set(m.last_error_unix_ns as f64 / 1e9);
        let (Some(f), Some(i)) = (&self.info, info) else {
            return;
        };
        let secs = |ms: u64| ms as f64 / 1e3;
        set(&f.producer_alive, &labels, u64::from(i.producer.alive));
        set(&f.slots, &labels, u64::from(i.slot_count));
        set(&f.slot_size, &labels, u64::from(i.slot_size));
        let mut l = labels.clone();
        l.push(("policy", Value(i.policy.to_string())));
        l.push(("checksum", Value(i.checksum.to_string())));
        l.push(("version", Value(i.version.clone())));
        f.block_info.get_or_create(&l).set(1);
        let huge = matches!(i.backing, datahub::Backing::Thp | datahub::Backing::Hugetlb);
        set(
            &f.huge_pages,
            &with("backing", i.backing.name().to_owned()),
            u64::from(huge),
        );
        f.heartbeat_timeout
            .get_or_create(&labels)
            .set(secs(i.heartbeat_timeout_ms));
        if i.producer.pid != 0 {
            f.producer_heartbeat_age
                .get_or_create(&labels)
                .set(secs(i.producer.heartbeat_age_ms));
        }
        for c in &i.consumers {
            let l = with("consumer", consumer_label(c));
            let lag = i
                .commit_index
                .saturating_sub(c.position.unwrap_or(i.commit_index));
            set(&f.consumer_lag, &l, lag);
            f.consumer_heartbeat_age
                .get_or_create(&l)
                .set(secs(c.heartbeat_age_ms));
            set(&f.consumer_alive, &l, u64::from(c.alive));
        }
    }
}

/// `ENTRY:PID`, the `consumer` label of a consumer's series.
pub fn consumer_label(c: &datahub::PeerInfo) -> String {
    format!("{}:{}", c.entry.unwrap_or(0), c.pid)
}

/// Renders `m` (and, when given, identity figures, peers and lag from `info`) for block
/// `block` as OpenMetrics text.
pub fn render(block: &str, m: &Metrics, info: Option<&BlockInfo>) -> String {
    let mut b = Builder::with_prefix("datahub");
    Families::register(&mut b, info.is_some()).add(block, m, info);
    b.into_openmetrics()
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
