//! Prometheus exposition of a [`Snapshot`], rendered with `prometheus-client`.
//!
//! [`render`] writes the OpenMetrics text format (`# EOF`-terminated, [`CONTENT_TYPE`]), which
//! Prometheus asks for when it scrapes. [`render_text`] writes the classic Prometheus text format
//! 0.0.4 ([`TEXT_CONTENT_TYPE`]) that `promtool check metrics`, node_exporter's textfile collector
//! and older scrapers read. Metric names, types and labels are listed in `docs/metrics.md`. A
//! snapshot is a point-in-time copy, so every render builds a fresh registry from it: nothing is
//! shared with the allocator's counters.

use prom_text::{Builder, IntGauges, LabelValue as Value, Labels, clamp_i64};
use prometheus_client::metrics::counter::Counter;
use std::sync::atomic::AtomicU64;

use crate::snapshot::{ClassSnapshot, Snapshot};

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of [`render_text`]'s output.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The default metric name prefix.
pub const DEFAULT_PREFIX: &str = "temporal_slab";

fn v(s: impl Into<String>) -> Value {
    Value(s.into())
}

/// Renders `snap` as exposition text, every metric name starting with `prefix_`.
///
/// `prefix` must be a valid metric name prefix (`[a-zA-Z_:][a-zA-Z0-9_:]*`); the CLI checks it
/// with [`valid_prefix`].
pub fn render(snap: &Snapshot, prefix: &str) -> String {
    let mut b = Builder::with_prefix(prefix);
    global(&mut b, snap);
    classes(&mut b, snap);
    epochs(&mut b, snap);
    b.into_openmetrics()
}

/// Renders `snap` in the classic Prometheus text format 0.0.4.
///
/// prometheus-client writes only OpenMetrics; [`prom_text::openmetrics_to_text`] renames the
/// counter families' descriptor lines and drops `# EOF`.
pub fn render_text(snap: &Snapshot, prefix: &str) -> String {
    prom_text::openmetrics_to_text(&render(snap, prefix))
}

/// Whether `prefix` can start a metric name.
pub fn valid_prefix(prefix: &str) -> bool {
    let mut chars = prefix.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn global(b: &mut Builder, s: &Snapshot) {
    b.gauge(
        "rss_bytes",
        "Process resident set size (/proc/self/statm)",
        s.rss_bytes,
    );
    b.gauge(
        "estimated_slab_rss_bytes",
        "Pages held by slabs (partial + full + orphan) of all size classes",
        s.estimated_slab_rss_bytes(),
    );
    b.gauge(
        "reserved_bytes",
        "Address space reserved for slabs",
        s.reserved_bytes,
    );
    b.gauge(
        "current_epoch",
        "Ring index of the current epoch",
        u64::from(s.current_epoch),
    );
    b.gauge("current_era", "Era of the current epoch", s.current_era);
    b.gauge(
        "labels_registered",
        "Entries in the epoch label registry",
        u64::from(s.label_registry.count),
    );
    let counters: [(&str, &str, u64); 12] = [
        (
            "slabs_carved",
            "Slabs carved from the reservation",
            s.slabs_carved,
        ),
        (
            "epoch_advances",
            "Epochs opened by epoch_advance",
            s.epoch_advances,
        ),
        (
            "epoch_advance_refused",
            "epoch_advance calls refused because every other ring slot held an epoch that had not drained",
            s.epoch_advance_refused,
        ),
        ("epoch_close", "epoch_close calls.", s.epoch_close_calls),
        (
            "epoch_close_scanned_slabs",
            "Slabs examined by epoch_close",
            s.epoch_close_scanned_slabs,
        ),
        (
            "epoch_close_recycled_slabs",
            "Slabs recycled by epoch_close",
            s.epoch_close_recycled_slabs,
        ),
        (
            "epoch_closed_errors",
            "Allocations refused because their epoch was CLOSING",
            s.epoch_closed_errors,
        ),
        (
            "stale_epoch_errors",
            "Operations refused because their epoch id was stale",
            s.stale_epoch_errors,
        ),
        (
            "handle_errors",
            "Bad, stale or double-freed handles",
            s.handle_errors,
        ),
        ("pointer_errors", "Refused free_ptr calls", s.pointer_errors),
        (
            "system_fallback_allocs",
            "Requests sent to the system allocator (too large or over-aligned)",
            s.system_fallback_allocs,
        ),
        (
            "system_fallback_bytes",
            "Bytes of requests sent to the system allocator",
            s.system_fallback_bytes,
        ),
    ];
    for (name, help, value) in counters {
        b.counter(name, help, value);
    }
    let close_seconds = Counter::<f64, AtomicU64>::default();
    close_seconds.inc_by(s.epoch_close_total_ns as f64 / 1e9);
    b.register(
        "epoch_close_seconds",
        "Time spent in epoch_close",
        close_seconds,
    );

    let info = b.int_gauges("label_info", "Epoch label registry: id to text (value 1)");
    for (i, text) in s.label_registry.labels.iter().enumerate() {
        info.get_or_create(&vec![
            ("label_id", v((i + 1).to_string())),
            ("label", v(text.clone())),
        ])
        .set(1);
    }
}

fn class_labels(c: &ClassSnapshot) -> Labels {
    vec![
        ("class", v(c.class.to_string())),
        ("object_size", v(c.object_size.to_string())),
    ]
}

type ClassField = fn(&ClassSnapshot) -> u64;
type ClassGauge = fn(&ClassSnapshot) -> i64;
type LabelField = fn(&crate::snapshot::LabelContention) -> u64;
type EpochField = fn(&crate::EpochSnapshot, u32) -> u64;

fn classes(b: &mut Builder, s: &Snapshot) {
    let counters: [(&str, &str, ClassField); 20] = [
        ("class_allocs", "Objects allocated", |c| c.allocs),
        ("class_frees", "Objects freed", |c| c.frees),
        (
            "class_slow_path_hits",
            "Allocations that took the slow path",
            |c| c.slow_path_hits,
        ),
        (
            "class_slow_path_cache_miss",
            "Slow-path allocations because no current slab had room",
            |c| c.slow_path_cache_miss,
        ),
        (
            "class_slow_path_epoch_closed",
            "Allocations refused because the epoch was CLOSING or stale",
            |c| c.slow_path_epoch_closed,
        ),
        ("class_new_slabs", "Slabs carved fresh", |c| {
            c.new_slab_count
        }),
        (
            "class_cache_reuses",
            "Slabs reused from the empty cache or overflow list",
            |c| c.cache_reuses,
        ),
        (
            "class_empty_slab_recycled",
            "Empty slabs recycled (pages returned)",
            |c| c.empty_slab_recycled,
        ),
        (
            "class_empty_slab_overflowed",
            "Recycled slabs sent to the overflow list because the cache was full",
            |c| c.empty_slab_overflowed,
        ),
        (
            "class_madvise_calls",
            "madvise(MADV_DONTNEED) calls.",
            |c| c.madvise_calls,
        ),
        (
            "class_madvise_bytes",
            "Bytes given back with madvise",
            |c| c.madvise_bytes,
        ),
        ("class_madvise_failures", "Failed madvise calls", |c| {
            c.madvise_failures
        }),
        (
            "class_bitmap_alloc_attempts",
            "Allocation-side bitmap CAS attempts",
            |c| c.bitmap_alloc_attempts,
        ),
        (
            "class_bitmap_alloc_cas_retries",
            "Allocation-side bitmap CAS failures",
            |c| c.bitmap_alloc_cas_retries,
        ),
        (
            "class_bitmap_free_attempts",
            "Free-side bitmap CAS attempts",
            |c| c.bitmap_free_attempts,
        ),
        (
            "class_bitmap_free_cas_retries",
            "Free-side bitmap CAS failures",
            |c| c.bitmap_free_cas_retries,
        ),
        (
            "class_current_partial_cas_attempts",
            "Current-partial CAS attempts",
            |c| c.current_partial_cas_attempts,
        ),
        (
            "class_current_partial_cas_failures",
            "Current-partial CAS failures",
            |c| c.current_partial_cas_failures,
        ),
        (
            "class_lock_fast_acquire",
            "Slab-list lock acquisitions won on the first try",
            |c| c.lock_fast_acquire,
        ),
        (
            "class_lock_contended",
            "Slab-list lock acquisitions that blocked",
            |c| c.lock_contended,
        ),
    ];
    for (name, help, field) in counters {
        let family = b.counters(name, help);
        for c in &s.classes {
            family.get_or_create(&class_labels(c)).inc_by(field(c));
        }
    }
    let acquisitions = b.counters(
        "class_lock_acquisitions",
        "Slab-list lock acquisitions (fast + contended)",
    );
    let moves = b.counters("class_list_moves", "Slab list moves, by kind of move");
    for c in &s.classes {
        acquisitions
            .get_or_create(&class_labels(c))
            .inc_by(c.lock_fast_acquire.saturating_add(c.lock_contended));
        for (kind, n) in [
            ("partial_to_full", c.list_move_partial_to_full),
            ("full_to_partial", c.list_move_full_to_partial),
            ("to_orphan", c.list_move_to_orphan),
        ] {
            let mut l = class_labels(c);
            l.push(("move", v(kind)));
            moves.get_or_create(&l).inc_by(n);
        }
    }
    let gauges: [(&str, &str, ClassGauge); 7] = [
        ("class_partial_slabs", "Slabs with room", |c| {
            clamp_i64(c.total_partial_slabs)
        }),
        ("class_full_slabs", "Full slabs", |c| {
            clamp_i64(c.total_full_slabs)
        }),
        (
            "class_orphan_slabs",
            "Slabs of re-opened ring slots still holding objects",
            |c| clamp_i64(c.total_orphan_slabs),
        ),
        ("class_live_objects", "Live objects", |c| {
            clamp_i64(c.live_objects)
        }),
        (
            "class_net_slabs",
            "Slabs held: new + reused - recycled",
            |c| c.net_slabs,
        ),
        (
            "class_empty_slab_cache_size",
            "Slabs in the empty cache",
            |c| clamp_i64(c.empty_slab_cache_size),
        ),
        (
            "class_empty_slab_overflow_size",
            "Slabs on the overflow list",
            |c| clamp_i64(c.empty_slab_overflow_size),
        ),
    ];
    for (name, help, field) in gauges {
        let family = b.int_gauges(name, help);
        for c in &s.classes {
            family.get_or_create(&class_labels(c)).set(field(c));
        }
    }
    if s.classes.iter().any(|c| !c.by_label.is_empty()) {
        let per_label: [(&str, &str, LabelField); 3] = [
            (
                "class_lock_fast_acquire_by_label",
                "Lock acquisitions won on the first try, by label id",
                |l| l.lock_fast_acquire,
            ),
            (
                "class_lock_contended_by_label",
                "Lock acquisitions that blocked, by label id",
                |l| l.lock_contended,
            ),
            (
                "class_bitmap_alloc_cas_retries_by_label",
                "Allocation-side bitmap CAS failures, by label id",
                |l| l.bitmap_alloc_cas_retries,
            ),
        ];
        for (name, help, field) in per_label {
            let family = b.counters(name, help);
            for c in &s.classes {
                for l in &c.by_label {
                    let mut labels = class_labels(c);
                    labels.push(("label_id", v(l.label_id.to_string())));
                    family.get_or_create(&labels).inc_by(field(l));
                }
            }
        }
    }
}

fn epochs(b: &mut Builder, s: &Snapshot) {
    let Some(epochs) = &s.epochs else {
        return;
    };
    let by_state = b.int_gauges("epochs", "Opened ring slots, by state");
    for state in ["ACTIVE", "CLOSING"] {
        let n = epochs.iter().filter(|e| e.state.as_str() == state).count();
        by_state
            .get_or_create(&vec![("state", v(state))])
            .set(n as i64);
    }
    let info = b.int_gauges(
        "epoch_info",
        "Epoch metadata; carries the label text (value 1)",
    );
    let age = b.float_gauges("epoch_age_seconds", "Whole seconds since the era opened");
    let fields: [(&str, &str, EpochField); 6] = [
        ("epoch_refcount", "Domain refcount", |e, _| e.refcount),
        (
            "epoch_estimated_rss_bytes",
            "Pages the epoch's slabs hold",
            |e, _| e.estimated_rss_bytes,
        ),
        (
            "epoch_reclaimable_bytes",
            "Bytes of the epoch's slabs with no live object, not yet recycled",
            |e, page| e.reclaimable_bytes(page),
        ),
        ("epoch_live_objects", "Live objects", |e, _| e.live_objects),
        (
            "epoch_rss_before_close_bytes",
            "Process RSS before the era's last epoch_close (0 = not closed)",
            |e, _| e.rss_before_close,
        ),
        (
            "epoch_rss_after_close_bytes",
            "Process RSS after the era's last epoch_close (0 = not closed)",
            |e, _| e.rss_after_close,
        ),
    ];
    let families: Vec<(IntGauges, EpochField)> = fields
        .into_iter()
        .map(|(name, help, f)| (b.int_gauges(name, help), f))
        .collect();
    for e in epochs {
        let labels: Labels = vec![
            ("epoch", v(e.epoch_id.to_string())),
            ("era", v(e.epoch_era.to_string())),
            ("state", v(e.state.as_str())),
        ];
        let mut with_text = labels.clone();
        with_text.push(("label", v(e.label.clone())));
        info.get_or_create(&with_text).set(1);
        age.get_or_create(&labels).set(e.age_sec as f64);
        for (family, f) in &families {
            family
                .get_or_create(&labels)
                .set(clamp_i64(f(e, s.page_size)));
        }
    }
}
