//! What `tslab` and `datahub` need on top of prometheus-client 0.24 to write exposition text
//! that Prometheus and `promtool` accept. Metrics are still registered and encoded by
//! prometheus-client; this crate adds three things:
//!
//! - [`LabelValue`]: a label value escaped as the exposition formats require.
//! - [`openmetrics_to_text`]: prometheus-client's OpenMetrics output converted to the classic
//!   text format 0.0.4.
//! - [`Builder`]: a [`Registry`] with one-call helpers for the shapes both tools render (a
//!   counter or gauge without labels, a family per metric), [`clamp_i64`] for `u64` figures
//!   shown as `i64` gauges, and the two encodings.
//! - [`Summary`]: a summary family (quantiles, `_sum`, `_count`) of figures computed elsewhere
//!   (an hdrhistogram's percentiles). prometheus-client 0.24 has no summary type (its
//!   `MetricType` stops at histogram and info), so [`Builder::summary`] writes these families
//!   itself, after the registry's, in the same line syntax and escaping.
//!
//! Both tools render a point-in-time copy of their counters: every render builds a fresh
//! [`Builder`], fills it and encodes it once.
//!
//! # Examples
//! ```
//! let mut b = prom_text::Builder::with_prefix("demo");
//! b.counter("requests", "Requests served", 3);
//! b.gauge("queue_depth", "Requests waiting", u64::MAX);
//! let sizes = b.int_gauges("pool_size", "Objects in each pool");
//! sizes
//!     .get_or_create(&vec![("pool", prom_text::LabelValue("a\"b".into()))])
//!     .set(2);
//! assert_eq!(
//!     b.into_text().lines().collect::<Vec<_>>(),
//!     [
//!         "# HELP demo_requests_total Requests served.",
//!         "# TYPE demo_requests_total counter",
//!         "demo_requests_total 3",
//!         "# HELP demo_queue_depth Requests waiting.",
//!         "# TYPE demo_queue_depth gauge",
//!         "demo_queue_depth 9223372036854775807",
//!         "# HELP demo_pool_size Objects in each pool.",
//!         "# TYPE demo_pool_size gauge",
//!         r#"demo_pool_size{pool="a\"b"} 2"#,
//!     ]
//! );
//! ```

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};

/// A label value escaped as both exposition formats require (`\` → `\\`, `"` → `\"`, line feed
/// → `\n`): prometheus-client 0.24 writes label values verbatim (prometheus/client_rust#151),
/// so one value containing `"` would make the whole scrape unparseable.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct LabelValue(pub String);

impl EncodeLabelValue for LabelValue {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        escape_label_value(&self.0, encoder)
    }
}

/// Writes `s` to `out` escaped as a label value (`\`, `"` and line feed).
fn escape_label_value(s: &str, out: &mut impl std::fmt::Write) -> std::fmt::Result {
    for c in s.chars() {
        match c {
            '\\' => out.write_str("\\\\")?,
            '"' => out.write_str("\\\"")?,
            '\n' => out.write_str("\\n")?,
            c => out.write_char(c)?,
        }
    }
    Ok(())
}

/// Converts prometheus-client's OpenMetrics output to the Prometheus text format 0.0.4.
///
/// prometheus-client names a counter family `x` (`# HELP x`, `# TYPE x counter`) with samples
/// `x_total` (prometheus/client_rust#51, #194); the 0.0.4 format names the family `x_total`,
/// and `promtool check metrics` reads the OpenMetrics form as counters without help text. This
/// renames the descriptor lines of counter families and drops `# UNIT` and `# EOF`; samples,
/// labels and escaping are prometheus-client's, untouched.
pub fn openmetrics_to_text(open: &str) -> String {
    let lines: Vec<&str> = open.lines().collect();
    let mut out = String::with_capacity(open.len() + 1024);
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line == "# EOF" || line.starts_with("# UNIT ") {
            i += 1;
            continue;
        }
        if let (Some(help), Some(next)) = (line.strip_prefix("# HELP "), lines.get(i + 1)) {
            let name = help.split(' ').next().unwrap_or("");
            if *next == format!("# TYPE {name} counter") {
                out.push_str(&format!("# HELP {name}_total{}\n", &help[name.len()..]));
                out.push_str(&format!("# TYPE {name}_total counter\n"));
                i += 2;
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
        i += 1;
    }
    out
}

/// `Content-Type` of the Prometheus text format 0.0.4 ([`Builder::into_text`]).
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// `Content-Type` of OpenMetrics 1.0 text ([`Builder::into_openmetrics`]).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The label set the workspace's tools use: `(name, escaped value)` pairs, in output order.
pub type Labels = Vec<(&'static str, LabelValue)>;

/// What a family's label set must be to be registered: prometheus-client's bounds on
/// [`Family`], named once. Every `Vec<(&'static str, LabelValue)>` ([`Labels`]) is one.
pub trait LabelSet: Clone + Hash + Eq + EncodeLabelSet + Debug + Send + Sync + 'static {}

impl<T> LabelSet for T where T: Clone + Hash + Eq + EncodeLabelSet + Debug + Send + Sync + 'static {}

/// A family of `i64` gauges, one per label set.
pub type IntGauges<S = Labels> = Family<S, Gauge>;
/// A family of `f64` gauges, one per label set.
pub type FloatGauges<S = Labels> = Family<S, Gauge<f64, AtomicU64>>;
/// A family of `u64` counters, one per label set.
pub type Counters<S = Labels> = Family<S, Counter>;

/// `v` as an `i64`, saturating at `i64::MAX`: prometheus-client's default gauge is `i64`, the
/// counters it shows are `u64`.
///
/// # Examples
/// ```
/// assert_eq!(prom_text::clamp_i64(7), 7);
/// assert_eq!(prom_text::clamp_i64(u64::MAX), i64::MAX);
/// ```
pub fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The families of one render: a [`Registry`] with helpers that register and fill a metric
/// in one call.
///
/// Metrics are encoded in the order they were registered; the series of one family in
/// prometheus-client's order (a hash map's, which differs between processes). Names are given
/// without the prefix (the registry prepends `prefix_`) and counter names without `_total`
/// (prometheus-client appends it). prometheus-client appends `.` to every help text, so help
/// is given without a final period. A family returned by [`int_gauges`](Self::int_gauges),
/// [`float_gauges`](Self::float_gauges) or [`counters`](Self::counters) shares its series with
/// the registry: fill it after the call, before encoding.
///
/// Registering the same name twice writes two families of that name (prometheus-client does
/// not check), which Prometheus rejects; callers register each name once.
///
/// [Summaries](Self::summary) are written after every registered metric, in the order they
/// were added.
#[derive(Debug, Default)]
pub struct Builder {
    registry: Registry,
    prefix: Option<String>,
    summaries: Vec<(String, String, Vec<Summary>)>,
}

/// One series of a summary family ([`Builder::summary`]): figures computed elsewhere, in the
/// family's unit (seconds, for a `_seconds` family).
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// The series' labels (without `quantile`, which each quantile line adds).
    pub labels: Labels,
    /// `(quantile, value)` pairs, quantiles in `0..=1`, written in this order. Prometheus'
    /// convention for a summary without observations is a `NaN` value.
    pub quantiles: Vec<(f64, f64)>,
    /// Sum of the observations (`_sum`).
    pub sum: f64,
    /// Number of observations (`_count`).
    pub count: u64,
}

/// A float sample value as both formats write it (`NaN`, `+Inf`, `-Inf`, or a decimal).
fn write_float(out: &mut String, v: f64) {
    use std::fmt::Write;
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

/// `{k="v",...}` (escaped), with `extra` last; nothing for no labels at all.
fn write_labels(out: &mut String, labels: &Labels, extra: Option<(&str, f64)>) {
    if labels.is_empty() && extra.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        let _ = escape_label_value(&v.0, out);
        out.push('"');
    }
    if let Some((k, q)) = extra {
        if !first {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        write_float(out, q);
        out.push('"');
    }
    out.push('}');
}

impl Builder {
    /// An empty builder whose metric names are used as given.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty builder whose metric names all start with `prefix_`.
    ///
    /// `prefix` must be a valid metric name prefix (`[a-zA-Z_:][a-zA-Z0-9_:]*`); it is not
    /// checked here.
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            registry: Registry::with_prefix(prefix),
            prefix: Some(prefix.to_owned()),
            summaries: Vec::new(),
        }
    }

    /// Registers any prometheus-client metric (for the shapes the helpers do not cover, such
    /// as an `f64` counter).
    pub fn register(&mut self, name: &str, help: &str, metric: impl Metric) {
        self.registry.register(name, help, metric);
    }

    /// A counter without labels, with value `value`.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        let c = Counter::<u64>::default();
        c.inc_by(value);
        self.registry.register(name, help, c);
    }

    /// An `i64` gauge without labels, with value `value` [clamped](clamp_i64) to `i64::MAX`.
    pub fn gauge(&mut self, name: &str, help: &str, value: u64) {
        let g = Gauge::<i64>::default();
        g.set(clamp_i64(value));
        self.registry.register(name, help, g);
    }

    /// An `f64` gauge without labels, with value `value`.
    pub fn float_gauge(&mut self, name: &str, help: &str, value: f64) {
        let g = Gauge::<f64, AtomicU64>::default();
        g.set(value);
        self.registry.register(name, help, g);
    }

    /// A family of `i64` gauges, registered now and filled by the caller.
    pub fn int_gauges<S: LabelSet>(&mut self, name: &str, help: &str) -> IntGauges<S> {
        let f = IntGauges::<S>::default();
        self.registry.register(name, help, f.clone());
        f
    }

    /// A family of `f64` gauges, registered now and filled by the caller.
    pub fn float_gauges<S: LabelSet>(&mut self, name: &str, help: &str) -> FloatGauges<S> {
        let f = FloatGauges::<S>::default();
        self.registry.register(name, help, f.clone());
        f
    }

    /// A family of `u64` counters, registered now and filled by the caller.
    pub fn counters<S: LabelSet>(&mut self, name: &str, help: &str) -> Counters<S> {
        let f = Counters::<S>::default();
        self.registry.register(name, help, f.clone());
        f
    }

    /// A summary family `name` (prefixed, as every name) with `series`: `# TYPE name
    /// summary`, then per series one `name{...,quantile="q"}` line per quantile, `name_sum` and
    /// `name_count`. Written after the registry's families (see the type's docs).
    ///
    /// # Examples
    /// ```
    /// let mut b = prom_text::Builder::with_prefix("demo");
    /// b.summary("wait_seconds", "Time waited", vec![prom_text::Summary {
    ///     labels: vec![],
    ///     quantiles: vec![(0.5, 0.25), (0.99, 1.5)],
    ///     sum: 3.0,
    ///     count: 8,
    /// }]);
    /// assert_eq!(
    ///     b.into_text().lines().collect::<Vec<_>>(),
    ///     [
    ///         "# HELP demo_wait_seconds Time waited.",
    ///         "# TYPE demo_wait_seconds summary",
    ///         r#"demo_wait_seconds{quantile="0.5"} 0.25"#,
    ///         r#"demo_wait_seconds{quantile="0.99"} 1.5"#,
    ///         "demo_wait_seconds_sum 3",
    ///         "demo_wait_seconds_count 8",
    ///     ]
    /// );
    /// ```
    pub fn summary(&mut self, name: &str, help: &str, series: Vec<Summary>) {
        let full = match &self.prefix {
            Some(p) => format!("{p}_{name}"),
            None => name.to_owned(),
        };
        self.summaries.push((full, help.to_owned(), series));
    }

    /// The OpenMetrics 1.0 text of everything registered, as prometheus-client writes it
    /// (`# EOF`-terminated), with the [summaries](Self::summary) before the `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        if self.summaries.is_empty() {
            return out;
        }
        if out.ends_with("# EOF\n") {
            out.truncate(out.len() - "# EOF\n".len());
        }
        for (name, help, series) in &self.summaries {
            out.push_str(&format!("# HELP {name} {help}.\n# TYPE {name} summary\n"));
            for s in series {
                for &(q, v) in &s.quantiles {
                    out.push_str(name);
                    write_labels(&mut out, &s.labels, Some(("quantile", q)));
                    out.push(' ');
                    write_float(&mut out, v);
                    out.push('\n');
                }
                out.push_str(name);
                out.push_str("_sum");
                write_labels(&mut out, &s.labels, None);
                out.push(' ');
                write_float(&mut out, s.sum);
                out.push('\n');
                out.push_str(&format!("{name}_count"));
                write_labels(&mut out, &s.labels, None);
                out.push_str(&format!(" {}\n", s.count));
            }
        }
        out.push_str("# EOF\n");
        out
    }

    /// [`encode`](Self::encode), consuming the builder.
    pub fn into_openmetrics(self) -> String {
        self.encode()
    }

    /// The Prometheus text format 0.0.4 of everything registered: [`encode`](Self::encode)
    /// through [`openmetrics_to_text`].
    pub fn into_text(self) -> String {
        openmetrics_to_text(&self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_descriptors_renamed_eof_dropped() {
        let open = "# HELP a_b Things.\n# TYPE a_b counter\na_b_total 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n# EOF\n";
        assert_eq!(
            openmetrics_to_text(open),
            "# HELP a_b_total Things.\n# TYPE a_b_total counter\na_b_total 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n"
        );
    }
    fn labels(pairs: &[(&'static str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (*k, LabelValue((*v).to_owned())))
            .collect()
    }

    #[test]
    fn clamp_i64_saturates_at_i64_max() {
        assert_eq!(clamp_i64(0), 0);
        assert_eq!(clamp_i64(i64::MAX as u64), i64::MAX);
        assert_eq!(clamp_i64(i64::MAX as u64 + 1), i64::MAX);
        assert_eq!(clamp_i64(u64::MAX), i64::MAX);
    }

    #[test]
    fn builder_writes_metrics_in_registration_order_with_prefix() {
        let mut b = Builder::with_prefix("p");
        b.gauge("g", "A gauge", u64::MAX);
        b.counter("c", "A counter", 5);
        let f = b.float_gauges("f", "Floats");
        f.get_or_create(&labels(&[("k", "v")])).set(1.5);
        let n = b.counters("n", "Counted");
        n.get_or_create(&labels(&[("k", "a\"b\\c\nd")])).inc_by(2);
        let i = b.int_gauges("i", "Ints");
        i.get_or_create(&labels(&[("x", "1"), ("y", "2")])).set(-3);
        assert_eq!(
            b.encode(),
            "# HELP p_g A gauge.\n# TYPE p_g gauge\np_g 9223372036854775807\n\
             # HELP p_c A counter.\n# TYPE p_c counter\np_c_total 5\n\
             # HELP p_f Floats.\n# TYPE p_f gauge\np_f{k=\"v\"} 1.5\n\
             # HELP p_n Counted.\n# TYPE p_n counter\np_n_total{k=\"a\\\"b\\\\c\\nd\"} 2\n\
             # HELP p_i Ints.\n# TYPE p_i gauge\np_i{x=\"1\",y=\"2\"} -3\n\
             # EOF\n"
        );
    }

    #[test]
    fn summary_follows_the_registry_with_escaped_labels_and_nan() {
        let mut b = Builder::with_prefix("p");
        b.summary(
            "s_seconds",
            "Waits",
            vec![
                Summary {
                    labels: labels(&[("k", "a\"b\\c\nd")]),
                    quantiles: vec![(0.5, 0.000_001), (0.999, f64::NAN)],
                    sum: 2.5,
                    count: 3,
                },
                Summary {
                    labels: labels(&[("k", "e")]),
                    quantiles: vec![],
                    sum: 0.0,
                    count: 0,
                },
            ],
        );
        b.counter("c", "A counter", 1);
        let open = b.encode();
        assert_eq!(
            open,
            "# HELP p_c A counter.\n# TYPE p_c counter\np_c_total 1\n\
             # HELP p_s_seconds Waits.\n# TYPE p_s_seconds summary\n\
             p_s_seconds{k=\"a\\\"b\\\\c\\nd\",quantile=\"0.5\"} 0.000001\n\
             p_s_seconds{k=\"a\\\"b\\\\c\\nd\",quantile=\"0.999\"} NaN\n\
             p_s_seconds_sum{k=\"a\\\"b\\\\c\\nd\"} 2.5\n\
             p_s_seconds_count{k=\"a\\\"b\\\\c\\nd\"} 3\n\
             p_s_seconds_sum{k=\"e\"} 0\np_s_seconds_count{k=\"e\"} 0\n\
             # EOF\n"
        );
        // The 0.0.4 text leaves summaries as they are.
        assert_eq!(
            b.into_text(),
            openmetrics_to_text(&open),
            "text = converted OpenMetrics"
        );
    }

    #[test]
    fn builder_text_is_the_openmetrics_converted() {
        let fill = |b: &mut Builder| {
            b.counter("c", "A counter", 1);
            b.gauge("g", "A gauge", 2);
        };
        let mut open = Builder::new();
        fill(&mut open);
        let mut text = Builder::new();
        fill(&mut text);
        let open = open.into_openmetrics();
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert_eq!(text.into_text(), openmetrics_to_text(&open));
    }
}
