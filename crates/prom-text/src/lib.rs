//! What `tslab` and `datahub` need on top of prometheus-client 0.24 to write exposition text
//! that Prometheus and `promtool` accept. Metrics are still registered and encoded by
//! prometheus-client; this crate only escapes label values and converts its OpenMetrics output
//! to the classic text format.

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// A label value escaped as both exposition formats require (`\` → `\\`, `"` → `\"`, line feed
/// → `\n`): prometheus-client 0.24 writes label values verbatim (prometheus/client_rust#151),
/// so one value containing `"` would make the whole scrape unparseable.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct LabelValue(pub String);

impl EncodeLabelValue for LabelValue {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
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
}
