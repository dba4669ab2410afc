//! Proves the Grafana dashboard (`dashboards/temporal-slab.json`) and the Prometheus alert rules
//! (`alerts/temporal-slab.rules.yml`) with the real `promtool`:
//!
//! - the rule file passes `promtool check rules`;
//! - every dashboard query, with its template variables substituted, parses as PromQL (written
//!   out as recording rules and checked by `promtool check rules`), and the dashboard has the
//!   expected variables, rows and data-source references;
//! - every metric name in the dashboard and the rules is documented in `docs/metrics.md`;
//! - `promtool test rules` unit tests show the alerts fire (and stay quiet) on synthetic series,
//!   and the dashboard's join queries return the right rows when two processes share epoch
//!   numbers.
//!
//! Without `promtool` on `PATH` the promtool parts are skipped with a note, unless
//! `REQUIRE_PROMETHEUS=1` (set in CI), which turns a missing `promtool` into a failure.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const DASHBOARD: &str = "dashboards/temporal-slab.json";
const RULES: &str = "alerts/temporal-slab.rules.yml";
const METRICS_DOC: &str = "docs/metrics.md";

/// Rows of the dashboard, in order.
const ROWS: [&str; 5] = [
    "Overview",
    "Size classes",
    "Contention",
    "Epochs",
    "Kernel cooperation",
];

/// Alerts of the rule file, in order.
const ALERTS: [&str; 8] = [
    "EpochLeak",
    "EpochRefcountLeak",
    "EpochRingExhausted",
    "EpochMemoryLeak",
    "HighLockContention",
    "HighCASRetryRate",
    "MadviseFailures",
    "SlowPathRateHigh",
];

// ------------------------------------------------------------------------------------------
// Plumbing

fn repo_root() -> PathBuf {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    root.canonicalize()
        .unwrap_or_else(|e| panic!("repository root {}: {e}", root.display()))
}

fn read(rel: &str) -> String {
    let path = repo_root().join(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD))
        .unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

/// `promtool` from `PATH`; `None` (with a note) when it is missing, unless
/// `REQUIRE_PROMETHEUS=1`, in which case a missing `promtool` fails the test.
fn promtool(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("REQUIRE_PROMETHEUS").is_ok_and(|v| v == "1") {
            panic!(
                "{test}: promtool is not on PATH but REQUIRE_PROMETHEUS=1; install Prometheus \
                 (Debian/Ubuntu: apt-get install prometheus) or put promtool on PATH"
            );
        }
        eprintln!(
            "note: {test}: promtool not on PATH, skipping (set REQUIRE_PROMETHEUS=1 to fail)"
        );
    }
    found
}

/// Runs `promtool args...` from the repository root; returns (success, stdout + stderr).
fn run_promtool(promtool: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", promtool.display()));
    let text = format!(
        "$ promtool {}\n--- stdout ---\n{}--- stderr ---\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A scratch directory under the system temp dir, unique per process and test. Removed when the
/// test passes, kept (for inspection) when it panics.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tslab-promql-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        Scratch(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept scratch files in {}", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// A YAML double-quoted scalar (JSON strings are valid YAML double-quoted scalars).
fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("string serializes")
}

// ------------------------------------------------------------------------------------------
// Dashboard walking

#[derive(Debug)]
struct Target {
    panel: String,
    ref_id: String,
    expr: String,
}

/// Every `targets[].expr` anywhere in the dashboard (including panels nested in rows).
fn targets(dash: &Value) -> Vec<Target> {
    fn walk(v: &Value, out: &mut Vec<Target>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::Array(ts)) = map.get("targets") {
                    let panel = map.get("title").and_then(Value::as_str).unwrap_or("?");
                    for t in ts {
                        if let Some(expr) = t.get("expr").and_then(Value::as_str) {
                            out.push(Target {
                                panel: panel.to_owned(),
                                ref_id: t
                                    .get("refId")
                                    .and_then(Value::as_str)
                                    .unwrap_or("?")
                                    .to_owned(),
                                expr: expr.to_owned(),
                            });
                        }
                    }
                }
                map.values().for_each(|v| walk(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dash, &mut out);
    out
}

/// Every panel (objects with a `type` and a `gridPos`), rows included, nested ones too.
fn panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
        if let Some(items) = v.get("panels").and_then(Value::as_array) {
            for p in items {
                out.push(p);
                walk(p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dash, &mut out);
    out
}

fn template_vars(dash: &Value) -> &[Value] {
    dash.pointer("/templating/list")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// What a template variable stands for when the query is checked: Grafana's interval and range
/// variables get concrete durations; dashboard variables with an "All" option their `allValue`
/// (a regex, they are used with `=~`). Anything else is an unknown variable.
fn variable_value(dash: &Value, name: &str) -> String {
    match name {
        "__rate_interval" | "__range" => return "5m".to_owned(),
        "__interval" => return "1m".to_owned(),
        "__interval_ms" => return "60000".to_owned(),
        "__range_s" => return "300".to_owned(),
        "__range_ms" => return "300000".to_owned(),
        _ => {}
    }
    let var = template_vars(dash)
        .iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
        .unwrap_or_else(|| panic!("query uses ${name}, which is not a dashboard variable"));
    match var.get("type").and_then(Value::as_str) {
        Some("query" | "custom") => {
            assert_eq!(
                var.get("includeAll"),
                Some(&Value::Bool(true)),
                "variable {name} should have an All option"
            );
            var.get("allValue")
                .and_then(Value::as_str)
                .unwrap_or(".*")
                .to_owned()
        }
        other => panic!("variable {name} of type {other:?} should not appear in a query"),
    }
}

/// Replaces `$name`, `${name}` and `${name:format}` with their values.
fn substitute(dash: &Value, expr: &str) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let (name, consumed) = if let Some(inner) = after.strip_prefix('{') {
            let end = inner
                .find('}')
                .unwrap_or_else(|| panic!("unterminated ${{ in {expr:?}"));
            let name = inner[..end].split(':').next().unwrap_or_default();
            (name, end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        assert!(!name.is_empty(), "stray $ in {expr:?}");
        out.push_str(&variable_value(dash, name));
        rest = &after[consumed..];
    }
    out.push_str(rest);
    out
}

/// The substituted query of the panel titled `title`, target `ref_id`.
fn panel_expr(dash: &Value, title: &str, ref_id: &str) -> String {
    let t = targets(dash)
        .into_iter()
        .find(|t| t.panel == title && t.ref_id == ref_id)
        .unwrap_or_else(|| panic!("no panel {title:?} with target {ref_id} in {DASHBOARD}"));
    substitute(dash, &t.expr)
}

// ------------------------------------------------------------------------------------------
// Rule-file reading (no YAML crate: the file's layout is ours)

/// The `expr` of every rule: `expr: <one line>` or a block scalar (`expr: |` / `>`) made of the
/// following lines indented deeper than `expr:`.
fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        i += 1;
        let Some(value) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if value.starts_with('|') || value.starts_with('>') {
            let indent = line.len() - trimmed.len();
            let mut body = Vec::new();
            while i < lines.len() {
                let l = lines[i];
                let ind = l.len() - l.trim_start().len();
                if !l.trim().is_empty() && ind <= indent {
                    break;
                }
                body.push(l.trim());
                i += 1;
            }
            out.push(body.join("\n").trim().to_owned());
        } else {
            out.push(value.trim_matches(|c| c == '\'' || c == '"').to_owned());
        }
    }
    out
}

/// `(alert name, text of its rule)` for every `- alert:` entry.
fn alert_blocks(yaml: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in yaml.lines() {
        if let Some(name) = line.trim_start().strip_prefix("- alert:") {
            out.push((name.trim().to_owned(), String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

// ------------------------------------------------------------------------------------------
// Expression lint

/// Text of `expr` outside double-quoted strings (quoted text replaced by `""`).
fn outside_strings(expr: &str) -> String {
    let mut out = String::new();
    let mut chars = expr.chars();
    while let Some(c) = chars.next() {
        if c == '"' {
            out.push_str("\"\"");
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => break,
                    _ => {}
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Problems with one expression: a label matcher that compares numbers (`{x > 3}`, matched like
/// the regex `\{[^}]*[<>]`), or a division whose denominator is not `clamp_min(...)`.
fn lint(expr: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let code = outside_strings(expr);
    let mut rest = code.as_str();
    while let Some(open) = rest.find('{') {
        let inner = &rest[open + 1..];
        let close = inner.find('}').unwrap_or(inner.len());
        if inner[..close].contains(['<', '>']) {
            problems.push(format!(
                "label matcher compares numbers: {{{}}}",
                &inner[..close]
            ));
        }
        rest = &inner[close..];
    }
    for (pos, _) in code.match_indices('/') {
        if !code[pos + 1..].trim_start().starts_with("clamp_min(") {
            problems.push(format!(
                "division without a clamp_min(..., 1e-9) guard at {:?}",
                &code[pos..(pos + 40).min(code.len())]
            ));
        }
    }
    problems
}

// ------------------------------------------------------------------------------------------
// Metric names

/// Maximal `[A-Za-z0-9_]` words of `text` (our metric names have no `:`).
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
}

/// Metric names documented in docs/metrics.md: every `temporal_slab_...` word, plus the
/// `_class_...` shorthand with the `temporal_slab` prefix.
fn documented_metrics() -> BTreeSet<String> {
    let doc = read(METRICS_DOC);
    let mut names = BTreeSet::new();
    for w in words(&doc) {
        if w.starts_with("temporal_slab_") {
            names.insert(w.to_owned());
        } else if w.starts_with("_class_") {
            names.insert(format!("temporal_slab{w}"));
        }
    }
    names
}

/// Words of `text` that look like our metrics: start with `temporal_slab` (so a misspelt
/// `temporal_slabs_...` is caught too) but are not the bare prefix or crate name.
fn used_metrics(text: &str) -> BTreeSet<String> {
    words(text)
        .filter(|w| w.starts_with("temporal_slab") && *w != "temporal_slab")
        .map(str::to_owned)
        .collect()
}

// ------------------------------------------------------------------------------------------
// (a) The rule file

#[test]
fn alert_rules_have_expected_alerts_and_metadata() {
    let yaml = read(RULES);
    assert!(
        yaml.contains("- name: temporal-slab\n"),
        "{RULES} should have the group temporal-slab"
    );
    assert_eq!(
        yaml.matches("- name:").count(),
        1,
        "{RULES} should have exactly one group"
    );
    let blocks = alert_blocks(&yaml);
    let names: Vec<&str> = blocks.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ALERTS, "alert names in {RULES}");
    for (name, body) in &blocks {
        for key in ["expr:", "for:", "severity:", "summary:", "description:"] {
            assert!(body.contains(key), "alert {name} has no {key}");
        }
        assert!(
            body.contains("{{ $labels.") && body.contains("$value"),
            "alert {name}: annotations should use {{{{ $labels.* }}}} and $value"
        );
    }
    let exprs = rule_exprs(&yaml);
    assert_eq!(exprs.len(), ALERTS.len(), "one expr per alert: {exprs:#?}");
    for expr in &exprs {
        let problems = lint(expr);
        assert!(problems.is_empty(), "alert expr {expr:?}: {problems:#?}");
    }
}

#[test]
fn alert_rules_pass_promtool_check() {
    let Some(promtool) = promtool("alert_rules_pass_promtool_check") else {
        return;
    };
    let (ok, out) = run_promtool(&promtool, &["check", "rules", RULES]);
    assert!(ok, "promtool check rules {RULES} failed:\n{out}");
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", ALERTS.len())),
        "unexpected promtool output:\n{out}"
    );
}

// ------------------------------------------------------------------------------------------
// (b) The dashboard

#[test]
fn dashboard_structure() {
    let dash = dashboard();
    assert!(
        dash.get("schemaVersion")
            .and_then(Value::as_u64)
            .is_some_and(|v| v >= 36),
        "schemaVersion should be recent"
    );
    assert!(
        dash.get("title").and_then(Value::as_str).is_some(),
        "dashboard needs a title"
    );
    assert!(
        dash.get("uid").and_then(Value::as_str).is_some(),
        "dashboard needs a uid"
    );

    let vars = template_vars(&dash);
    let var = |name: &str| {
        vars.iter()
            .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
            .unwrap_or_else(|| panic!("dashboard has no template variable {name}"))
    };
    let ds = var("datasource");
    assert_eq!(ds.get("type").and_then(Value::as_str), Some("datasource"));
    assert_eq!(ds.get("query").and_then(Value::as_str), Some("prometheus"));
    let instance = var("instance");
    assert_eq!(instance.get("type").and_then(Value::as_str), Some("query"));
    let instance_query = instance
        .get("definition")
        .and_then(Value::as_str)
        .expect("instance variable has a definition");
    assert!(
        instance_query.starts_with("label_values(temporal_slab_rss_bytes")
            && instance_query.ends_with(", instance)"),
        "instance variable query: {instance_query}"
    );

    let all = panels(&dash);
    let rows: Vec<&str> = all
        .iter()
        .filter(|p| p.get("type").and_then(Value::as_str) == Some("row"))
        .map(|p| p.get("title").and_then(Value::as_str).unwrap_or_default())
        .collect();
    assert_eq!(rows, ROWS, "dashboard rows");

    let wanted_ds = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});
    let mut ids = BTreeSet::new();
    for p in &all {
        let title = p.get("title").and_then(Value::as_str).unwrap_or("?");
        assert!(
            p.get("id")
                .and_then(Value::as_u64)
                .is_some_and(|id| ids.insert(id)),
            "panel {title:?} needs a unique id"
        );
        assert!(p.get("gridPos").is_some(), "panel {title:?} has no gridPos");
        if p.get("type").and_then(Value::as_str) == Some("row") {
            continue;
        }
        assert_eq!(
            p.get("datasource"),
            Some(&wanted_ds),
            "panel {title:?} datasource"
        );
        let ts = p
            .get("targets")
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("panel {title:?} has no targets"));
        assert!(!ts.is_empty(), "panel {title:?} has no targets");
        for t in ts {
            assert_eq!(
                t.get("datasource"),
                Some(&wanted_ds),
                "panel {title:?} target datasource"
            );
        }
    }

    // Every data-source reference anywhere (rows, variables, panels, targets) except Grafana's
    // built-in annotation source.
    fn check_datasources(v: &Value, wanted: &Value, path: &str) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    let here = format!("{path}/{k}");
                    if k == "datasource"
                        && child.get("type").and_then(Value::as_str) != Some("grafana")
                    {
                        assert_eq!(child, wanted, "data source at {here}");
                    }
                    check_datasources(child, wanted, &here);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    check_datasources(child, wanted, &format!("{path}/{i}"));
                }
            }
            _ => {}
        }
    }
    check_datasources(
        &dash.get("panels").cloned().unwrap_or_default(),
        &wanted_ds,
        "/panels",
    );
    for v in vars
        .iter()
        .filter(|v| v.get("type").and_then(Value::as_str) == Some("query"))
    {
        assert_eq!(
            v.get("datasource"),
            Some(&wanted_ds),
            "variable {:?} data source",
            v.get("name")
        );
    }

    let ts = targets(&dash);
    assert!(ts.len() >= 25, "only {} queries in the dashboard", ts.len());
    for t in &ts {
        assert!(
            t.expr.contains(r#"instance=~"$instance""#),
            "panel {:?} {}: query does not filter on $instance: {}",
            t.panel,
            t.ref_id,
            t.expr
        );
        let problems = lint(&substitute(&dash, &t.expr));
        assert!(
            problems.is_empty(),
            "panel {:?} {}: {problems:#?}\n{}",
            t.panel,
            t.ref_id,
            t.expr
        );
    }
}

#[test]
fn dashboard_queries_pass_promtool_check() {
    let Some(promtool) = promtool("dashboard_queries_pass_promtool_check") else {
        return;
    };
    let dash = dashboard();
    let ts = targets(&dash);
    let mut rules = String::from("groups:\n  - name: tslab-dashboard-queries\n    rules:\n");
    for (i, t) in ts.iter().enumerate() {
        rules.push_str(&format!(
            "      # {} / {}\n      - record: tslab_dashboard:query_{i}\n        expr: {}\n",
            t.panel.replace('\n', " "),
            t.ref_id,
            yaml_str(&substitute(&dash, &t.expr))
        ));
    }
    let scratch = Scratch::new("dashboard_check");
    let file = scratch.write("dashboard-queries.rules.yml", &rules);
    let (ok, out) = run_promtool(&promtool, &["check", "rules", &file.to_string_lossy()]);
    assert!(
        ok,
        "dashboard queries do not parse:\n{out}\n--- rules ---\n{rules}"
    );
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", ts.len())),
        "unexpected promtool output:\n{out}"
    );
}

// ------------------------------------------------------------------------------------------
// (c) Metric names

#[test]
fn metric_names_are_documented() {
    let documented = documented_metrics();
    // The doc parse itself: a few names from each section, shorthand expanded.
    for name in [
        "temporal_slab_rss_bytes",
        "temporal_slab_epoch_close_seconds_total",
        "temporal_slab_class_allocs_total",
        "temporal_slab_class_net_slabs",
        "temporal_slab_class_lock_contended_by_label_total",
        "temporal_slab_epoch_info",
        "temporal_slab_epoch_rss_after_close_bytes",
    ] {
        assert!(
            documented.contains(name),
            "{METRICS_DOC} parse missed {name}"
        );
    }
    assert!(
        documented.len() >= 50,
        "only {} metric names parsed from {METRICS_DOC}",
        documented.len()
    );

    let dash_text = read(DASHBOARD);
    let rules_text = read(RULES);
    let in_dashboard = used_metrics(&dash_text);
    let in_rules = used_metrics(&rules_text);
    assert!(
        in_dashboard.len() >= 30,
        "dashboard uses only {in_dashboard:?}"
    );
    assert!(in_rules.len() >= 10, "rules use only {in_rules:?}");
    for (file, used) in [(DASHBOARD, &in_dashboard), (RULES, &in_rules)] {
        let unknown: Vec<&String> = used.difference(&documented).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metric names not in {METRICS_DOC}: {unknown:?}"
        );
    }
    // Every query names at least one documented metric.
    let dash = dashboard();
    for t in targets(&dash) {
        assert!(
            !used_metrics(&t.expr).is_empty(),
            "panel {:?} {} uses no temporal_slab metric: {}",
            t.panel,
            t.ref_id,
            t.expr
        );
    }
}

// ------------------------------------------------------------------------------------------
// (d) Alert unit tests

/// `promtool test rules` input; `@RULES@` becomes the absolute path of the rule file.
/// Series are sampled every minute; `a+bxN` is N+1 samples a, a+b, ...
const ALERT_TESTS: &str = r#"rule_files:
  - "@RULES@"
evaluation_interval: 1m
tests:
  # Epoch 3 era 7 on a:9100 is CLOSING with refcount 1 and its age passes 300 s at 6m, so the
  # alert is pending from 6m and fires (for: 5m) from 11m. Epoch 4 has refcount 0. b:9100 also
  # has an epoch 3 era 7 with refcount 1, but it is young: the join must not borrow a:9100's age.
  - name: EpochRefcountLeak fires for a CLOSING epoch with refcount 1 once older than 300 s
    interval: 1m
    input_series:
      - series: 'temporal_slab_epoch_refcount{job="tslab",instance="a:9100",epoch="3",era="7",state="CLOSING"}'
        values: '1x30'
      - series: 'temporal_slab_epoch_age_seconds{job="tslab",instance="a:9100",epoch="3",era="7",state="CLOSING"}'
        values: '0+60x30'
      - series: 'temporal_slab_epoch_info{job="tslab",instance="a:9100",epoch="3",era="7",state="CLOSING",label="worker-3"}'
        values: '1x30'
      - series: 'temporal_slab_epoch_refcount{job="tslab",instance="a:9100",epoch="4",era="2",state="CLOSING"}'
        values: '0x30'
      - series: 'temporal_slab_epoch_age_seconds{job="tslab",instance="a:9100",epoch="4",era="2",state="CLOSING"}'
        values: '0+60x30'
      - series: 'temporal_slab_epoch_refcount{job="tslab",instance="b:9100",epoch="3",era="7",state="CLOSING"}'
        values: '1x30'
      - series: 'temporal_slab_epoch_age_seconds{job="tslab",instance="b:9100",epoch="3",era="7",state="CLOSING"}'
        values: '30x30'
    alert_rule_test:
      - eval_time: 5m
        alertname: EpochRefcountLeak
        exp_alerts: []
      - eval_time: 10m
        alertname: EpochRefcountLeak
        exp_alerts: []
      - eval_time: 12m
        alertname: EpochRefcountLeak
        exp_alerts:
          - exp_labels:
              severity: critical
              job: tslab
              instance: "a:9100"
              epoch: "3"
              era: "7"
              state: CLOSING
            exp_annotations:
              summary: "temporal-slab epoch 3 (era 7) on a:9100 is CLOSING with refcount 1"
              description: "Epoch 3 era 7 (label \"worker-3\") on a:9100 was closed but its domain refcount is still 1 more than 300 s after the era opened: a domain was entered and never exited (missing domain_exit), so its slabs stay pinned (see temporal_slab::diag::leak_report)."

  - name: EpochRefcountLeak stays quiet for refcount 0 and for ACTIVE epochs
    interval: 1m
    input_series:
      - series: 'temporal_slab_epoch_refcount{job="tslab",instance="a:9100",epoch="3",era="7",state="CLOSING"}'
        values: '0x60'
      - series: 'temporal_slab_epoch_age_seconds{job="tslab",instance="a:9100",epoch="3",era="7",state="CLOSING"}'
        values: '0+60x60'
      - series: 'temporal_slab_epoch_refcount{job="tslab",instance="a:9100",epoch="5",era="1",state="ACTIVE"}'
        values: '2x60'
      - series: 'temporal_slab_epoch_age_seconds{job="tslab",instance="a:9100",epoch="5",era="1",state="ACTIVE"}'
        values: '0+60x60'
    alert_rule_test:
      - eval_time: 30m
        alertname: EpochRefcountLeak
        exp_alerts: []
      - eval_time: 60m
        alertname: EpochRefcountLeak
        exp_alerts: []

  # a:9100 is refused 2 epoch advances at 5m: pending from 5m, firing (for: 1m) from 6m, and
  # resolved once the refusals leave the 5m window. b:9100 is never refused.
  - name: EpochRingExhausted fires on a refused epoch advance and resolves
    interval: 1m
    input_series:
      - series: 'temporal_slab_epoch_advance_refused_total{job="tslab",instance="a:9100"}'
        values: '0 0 0 0 0 2 2 2 2 2 2 2 2 2 2 2 2 2 2 2'
      - series: 'temporal_slab_epoch_advance_refused_total{job="tslab",instance="b:9100"}'
        values: '0x20'
    alert_rule_test:
      - eval_time: 4m
        alertname: EpochRingExhausted
        exp_alerts: []
      - eval_time: 5m
        alertname: EpochRingExhausted
        exp_alerts: []
      - eval_time: 7m
        alertname: EpochRingExhausted
        exp_alerts:
          - exp_labels:
              severity: critical
              job: tslab
              instance: "a:9100"
            exp_annotations:
              summary: "temporal-slab on a:9100 refused 2 epoch advance(s): the epoch ring is full"
              description: "epoch_advance on a:9100 was refused (EpochRingFull) about 2 time(s) in the last 5 minutes: every other slot of the 16-slot epoch ring is held by an epoch that has not drained (a domain still inside, an explicit reference, or live objects), so no new epoch could be opened and the current one stays current. Find the holders with `tslab top --epochs --by refcount http://a:9100` and see EpochRefcountLeak for epochs closed with a domain never exited."
      - eval_time: 12m
        alertname: EpochRingExhausted
        exp_alerts: []

  # ACTIVE for 3000 s at 0m: over 3600 s from 11m, firing (for: 5m) from 16m. The CLOSING epoch
  # is just as old but is not ACTIVE.
  - name: EpochLeak fires for an epoch ACTIVE longer than an hour
    interval: 1m
    input_series:
      - series: 'temporal_slab_epoch_age_seconds{job="tslab",instance="a:9100",epoch="1",era="4",state="ACTIVE"}'
        values: '3000+60x30'
      - series: 'temporal_slab_epoch_info{job="tslab",instance="a:9100",epoch="1",era="4",state="ACTIVE",label="ingest"}'
        values: '1x30'
      - series: 'temporal_slab_epoch_age_seconds{job="tslab",instance="a:9100",epoch="2",era="4",state="CLOSING"}'
        values: '3000+60x30'
      - series: 'temporal_slab_epoch_age_seconds{job="tslab",instance="a:9100",epoch="6",era="9",state="ACTIVE"}'
        values: '0+60x30'
    alert_rule_test:
      - eval_time: 15m
        alertname: EpochLeak
        exp_alerts: []
      - eval_time: 20m
        alertname: EpochLeak
        exp_alerts:
          - exp_labels:
              severity: warning
              job: tslab
              instance: "a:9100"
              epoch: "1"
              era: "4"
              state: ACTIVE
            exp_annotations:
              summary: "temporal-slab epoch 1 (era 4) on a:9100 has been ACTIVE for 1h 10m 0s"
              description: "Epoch 1 era 4 (label \"ingest\") on a:9100 has been ACTIVE for 4200 s (> 3600 s). Its slabs cannot be recycled until it is closed: check that the owning domain calls epoch_close, or advance epochs more often."

  - name: EpochMemoryLeak fires for a CLOSING epoch holding more than 64 MiB for 15 minutes
    interval: 1m
    input_series:
      - series: 'temporal_slab_epoch_estimated_rss_bytes{job="tslab",instance="a:9100",epoch="2",era="3",state="CLOSING"}'
        values: '100000000x30'
      - series: 'temporal_slab_epoch_info{job="tslab",instance="a:9100",epoch="2",era="3",state="CLOSING",label=""}'
        values: '1x30'
      - series: 'temporal_slab_epoch_estimated_rss_bytes{job="tslab",instance="a:9100",epoch="3",era="3",state="CLOSING"}'
        values: '1048576x30'
      - series: 'temporal_slab_epoch_estimated_rss_bytes{job="tslab",instance="a:9100",epoch="4",era="3",state="ACTIVE"}'
        values: '900000000x30'
    alert_rule_test:
      - eval_time: 14m
        alertname: EpochMemoryLeak
        exp_alerts: []
      - eval_time: 16m
        alertname: EpochMemoryLeak
        exp_alerts:
          - exp_labels:
              severity: warning
              job: tslab
              instance: "a:9100"
              epoch: "2"
              era: "3"
              state: CLOSING
            exp_annotations:
              summary: "temporal-slab CLOSING epoch 2 (era 3) on a:9100 still holds 95.37MiB"
              description: "Epoch 2 era 3 (label \"\") on a:9100 has been CLOSING for 15 minutes while its slabs still hold 95.37MiB (> 64 MiB): live objects of a finished epoch are not being freed."

  # Class 2 fails one madvise at 5m: firing (for: 1m) from 6m until the failure leaves the 10m
  # window. Class 3 never fails.
  - name: MadviseFailures fires on a failed madvise and resolves
    interval: 1m
    input_series:
      - series: 'temporal_slab_class_madvise_failures_total{job="tslab",instance="a:9100",class="2",object_size="128"}'
        values: '0 0 0 0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1'
      - series: 'temporal_slab_class_madvise_failures_total{job="tslab",instance="a:9100",class="3",object_size="192"}'
        values: '0x30'
    alert_rule_test:
      - eval_time: 4m
        alertname: MadviseFailures
        exp_alerts: []
      - eval_time: 8m
        alertname: MadviseFailures
        exp_alerts:
          - exp_labels:
              severity: warning
              job: tslab
              instance: "a:9100"
              class: "2"
              object_size: "128"
            exp_annotations:
              summary: "temporal-slab madvise failures in class 2 on a:9100"
              description: "madvise(MADV_DONTNEED) failed about 1 time(s) in the last 10 minutes for size class 2 (128-byte objects) on a:9100. Recycled slabs keep their pages, so RSS will not drop after epoch_close; check the process's logs and memory limits."
      - eval_time: 25m
        alertname: MadviseFailures
        exp_alerts: []

  # a:9100: 4000 slow-path hits / (6000 allocations + 2000 epoch-closed refusals) a minute = 50%.
  # b:9100: 10%. c:9100: 100%, but under one allocation a second.
  - name: SlowPathRateHigh fires above 30% with traffic
    interval: 1m
    input_series:
      - series: 'temporal_slab_class_allocs_total{job="tslab",instance="a:9100",class="0",object_size="64"}'
        values: '0+3000x40'
      - series: 'temporal_slab_class_slow_path_hits_total{job="tslab",instance="a:9100",class="0",object_size="64"}'
        values: '0+1500x40'
      - series: 'temporal_slab_class_slow_path_epoch_closed_total{job="tslab",instance="a:9100",class="0",object_size="64"}'
        values: '0x40'
      - series: 'temporal_slab_class_allocs_total{job="tslab",instance="a:9100",class="1",object_size="96"}'
        values: '0+3000x40'
      - series: 'temporal_slab_class_slow_path_hits_total{job="tslab",instance="a:9100",class="1",object_size="96"}'
        values: '0+2500x40'
      - series: 'temporal_slab_class_slow_path_epoch_closed_total{job="tslab",instance="a:9100",class="1",object_size="96"}'
        values: '0+2000x40'
      - series: 'temporal_slab_class_allocs_total{job="tslab",instance="b:9100",class="0",object_size="64"}'
        values: '0+6000x40'
      - series: 'temporal_slab_class_slow_path_hits_total{job="tslab",instance="b:9100",class="0",object_size="64"}'
        values: '0+600x40'
      - series: 'temporal_slab_class_slow_path_epoch_closed_total{job="tslab",instance="b:9100",class="0",object_size="64"}'
        values: '0x40'
      - series: 'temporal_slab_class_allocs_total{job="tslab",instance="c:9100",class="0",object_size="64"}'
        values: '0+30x40'
      - series: 'temporal_slab_class_slow_path_hits_total{job="tslab",instance="c:9100",class="0",object_size="64"}'
        values: '0+30x40'
      - series: 'temporal_slab_class_slow_path_epoch_closed_total{job="tslab",instance="c:9100",class="0",object_size="64"}'
        values: '0x40'
    alert_rule_test:
      - eval_time: 10m
        alertname: SlowPathRateHigh
        exp_alerts: []
      - eval_time: 20m
        alertname: SlowPathRateHigh
        exp_alerts:
          - exp_labels:
              severity: warning
              job: tslab
              instance: "a:9100"
            exp_annotations:
              summary: "temporal-slab slow path on 50% of allocations on a:9100"
              description: "50% of allocation attempts on a:9100 took the slow path over the last 5 minutes (> 30%; one hit per slab-full of objects is at most 20%, for the 768-byte class). Check the attribution panel: cache misses mean epochs are closed or advanced before their slabs fill, epoch-closed hits mean the application allocates into CLOSING epochs."

  # Class 2: 20% of 100 acquisitions/s contended. Class 3: 1%. Class 4: 100% of 0.5/s.
  - name: HighLockContention fires above 10% with traffic
    interval: 1m
    input_series:
      - series: 'temporal_slab_class_lock_acquisitions_total{job="tslab",instance="a:9100",class="2",object_size="128"}'
        values: '0+6000x30'
      - series: 'temporal_slab_class_lock_contended_total{job="tslab",instance="a:9100",class="2",object_size="128"}'
        values: '0+1200x30'
      - series: 'temporal_slab_class_lock_acquisitions_total{job="tslab",instance="a:9100",class="3",object_size="192"}'
        values: '0+6000x30'
      - series: 'temporal_slab_class_lock_contended_total{job="tslab",instance="a:9100",class="3",object_size="192"}'
        values: '0+60x30'
      - series: 'temporal_slab_class_lock_acquisitions_total{job="tslab",instance="a:9100",class="4",object_size="256"}'
        values: '0+30x30'
      - series: 'temporal_slab_class_lock_contended_total{job="tslab",instance="a:9100",class="4",object_size="256"}'
        values: '0+30x30'
    alert_rule_test:
      - eval_time: 5m
        alertname: HighLockContention
        exp_alerts: []
      - eval_time: 15m
        alertname: HighLockContention
        exp_alerts:
          - exp_labels:
              severity: warning
              job: tslab
              instance: "a:9100"
              class: "2"
              object_size: "128"
            exp_annotations:
              summary: "temporal-slab class 2 (128 B) on a:9100: 20% of lock acquisitions contended"
              description: "20% of the class-lock acquisitions of size class 2 (128-byte objects) on a:9100 blocked over the last 5 minutes (> 10%). Threads turn slabs over in the same class and epoch: give threads their own epochs or batch allocations."

  # Class 2: 0.5 retries per attempt. Class 3: 0.01.
  - name: HighCASRetryRate fires above 0.2 retries per attempt
    interval: 1m
    input_series:
      - series: 'temporal_slab_class_bitmap_alloc_attempts_total{job="tslab",instance="a:9100",class="2",object_size="128"}'
        values: '0+6000x30'
      - series: 'temporal_slab_class_bitmap_alloc_cas_retries_total{job="tslab",instance="a:9100",class="2",object_size="128"}'
        values: '0+3000x30'
      - series: 'temporal_slab_class_bitmap_alloc_attempts_total{job="tslab",instance="a:9100",class="3",object_size="192"}'
        values: '0+6000x30'
      - series: 'temporal_slab_class_bitmap_alloc_cas_retries_total{job="tslab",instance="a:9100",class="3",object_size="192"}'
        values: '0+60x30'
    alert_rule_test:
      - eval_time: 5m
        alertname: HighCASRetryRate
        exp_alerts: []
      - eval_time: 15m
        alertname: HighCASRetryRate
        exp_alerts:
          - exp_labels:
              severity: warning
              job: tslab
              instance: "a:9100"
              class: "2"
              object_size: "128"
            exp_annotations:
              summary: "temporal-slab class 2 (128 B) on a:9100: 0.50 bitmap CAS retries per allocation"
              description: "Bitmap allocations of size class 2 (128-byte objects) on a:9100 retried their compare-and-swap 0.50 times per attempt over the last 5 minutes (> 0.2): many threads allocate from the same slab at once."
"#;

#[test]
fn alert_rules_unit_tests() {
    let Some(promtool) = promtool("alert_rules_unit_tests") else {
        return;
    };
    // Every alert has a unit test.
    for alert in ALERTS {
        assert!(
            ALERT_TESTS.contains(&format!("alertname: {alert}\n")),
            "no unit test for alert {alert}"
        );
    }
    let rules = repo_root().join(RULES);
    let scratch = Scratch::new("alert_tests");
    let tests = ALERT_TESTS.replace("@RULES@", &rules.to_string_lossy());
    let file = scratch.write("alerts.test.yml", &tests);
    let (ok, out) = run_promtool(&promtool, &["test", "rules", &file.to_string_lossy()]);
    assert!(ok, "promtool test rules failed:\n{out}");
    assert!(
        out.contains("SUCCESS"),
        "unexpected promtool output:\n{out}"
    );
}

// ------------------------------------------------------------------------------------------
// Dashboard queries on synthetic series

/// Two processes (a:9100 and b:9100) that both have an epoch 3 era 7: the joins must match on
/// job and instance too, or Prometheus refuses them (many-to-many) or mixes the processes up.
const DASHBOARD_SERIES: &str = r#"      - series: 'temporal_slab_epoch_refcount{job="tslab",instance="a:9100",epoch="3",era="7",state="CLOSING"}'
        values: '2x20'
      - series: 'temporal_slab_epoch_age_seconds{job="tslab",instance="a:9100",epoch="3",era="7",state="CLOSING"}'
        values: '0+60x20'
      - series: 'temporal_slab_epoch_reclaimable_bytes{job="tslab",instance="a:9100",epoch="3",era="7",state="CLOSING"}'
        values: '8192x20'
      - series: 'temporal_slab_epoch_rss_before_close_bytes{job="tslab",instance="a:9100",epoch="3",era="7",state="CLOSING"}'
        values: '10485760x20'
      - series: 'temporal_slab_epoch_rss_after_close_bytes{job="tslab",instance="a:9100",epoch="3",era="7",state="CLOSING"}'
        values: '6291456x20'
      - series: 'temporal_slab_epoch_info{job="tslab",instance="a:9100",epoch="3",era="7",state="CLOSING",label="worker-3"}'
        values: '1x20'
      - series: 'temporal_slab_epoch_refcount{job="tslab",instance="a:9100",epoch="5",era="1",state="ACTIVE"}'
        values: '1x20'
      - series: 'temporal_slab_epoch_age_seconds{job="tslab",instance="a:9100",epoch="5",era="1",state="ACTIVE"}'
        values: '0+60x20'
      - series: 'temporal_slab_epoch_reclaimable_bytes{job="tslab",instance="a:9100",epoch="5",era="1",state="ACTIVE"}'
        values: '0x20'
      - series: 'temporal_slab_epoch_rss_before_close_bytes{job="tslab",instance="a:9100",epoch="5",era="1",state="ACTIVE"}'
        values: '0x20'
      - series: 'temporal_slab_epoch_rss_after_close_bytes{job="tslab",instance="a:9100",epoch="5",era="1",state="ACTIVE"}'
        values: '0x20'
      - series: 'temporal_slab_epoch_info{job="tslab",instance="a:9100",epoch="5",era="1",state="ACTIVE",label=""}'
        values: '1x20'
      - series: 'temporal_slab_epoch_refcount{job="tslab",instance="b:9100",epoch="3",era="7",state="CLOSING"}'
        values: '0x20'
      - series: 'temporal_slab_epoch_age_seconds{job="tslab",instance="b:9100",epoch="3",era="7",state="CLOSING"}'
        values: '0+60x20'
      - series: 'temporal_slab_epoch_reclaimable_bytes{job="tslab",instance="b:9100",epoch="3",era="7",state="CLOSING"}'
        values: '4096x20'
      - series: 'temporal_slab_epoch_rss_before_close_bytes{job="tslab",instance="b:9100",epoch="3",era="7",state="CLOSING"}'
        values: '0x20'
      - series: 'temporal_slab_epoch_rss_after_close_bytes{job="tslab",instance="b:9100",epoch="3",era="7",state="CLOSING"}'
        values: '0x20'
      - series: 'temporal_slab_epoch_info{job="tslab",instance="b:9100",epoch="3",era="7",state="CLOSING",label="req"}'
        values: '1x20'
      - series: 'temporal_slab_epoch_advance_refused_total{job="tslab",instance="a:9100"}'
        values: '0 0 0 0 0 0 0 3 3 3 3 3 3 3 3 3 3 3 3 3 3'
      - series: 'temporal_slab_epoch_advance_refused_total{job="tslab",instance="b:9100"}'
        values: '0x20'
      - series: 'temporal_slab_label_info{job="tslab",instance="a:9100",label_id="1",label="request"}'
        values: '1x20'
      - series: 'temporal_slab_label_info{job="tslab",instance="b:9100",label_id="1",label="frame"}'
        values: '1x20'
      - series: 'temporal_slab_class_lock_fast_acquire_by_label_total{job="tslab",instance="a:9100",class="0",object_size="64",label_id="1"}'
        values: '0+540x20'
      - series: 'temporal_slab_class_lock_contended_by_label_total{job="tslab",instance="a:9100",class="0",object_size="64",label_id="1"}'
        values: '0+60x20'
      - series: 'temporal_slab_class_lock_fast_acquire_by_label_total{job="tslab",instance="a:9100",class="1",object_size="96",label_id="1"}'
        values: '0+540x20'
      - series: 'temporal_slab_class_lock_contended_by_label_total{job="tslab",instance="a:9100",class="1",object_size="96",label_id="1"}'
        values: '0+60x20'
      - series: 'temporal_slab_class_lock_fast_acquire_by_label_total{job="tslab",instance="a:9100",class="0",object_size="64",label_id="0"}'
        values: '0+420x20'
      - series: 'temporal_slab_class_lock_contended_by_label_total{job="tslab",instance="a:9100",class="0",object_size="64",label_id="0"}'
        values: '0+180x20'
"#;

/// (panel title, refId, expected `exp_samples` YAML at 10m).
const DASHBOARD_EXPECTATIONS: [(&str, &str, &str); 5] = [
    (
        "Epoch advances refused (ring full)",
        "A",
        r#"          - labels: '{job="tslab",instance="a:9100"}'
            value: 3
          - labels: '{job="tslab",instance="b:9100"}'
            value: 0
"#,
    ),
    (
        "Refcount leaks (CLOSING, refcount > 0, age > 300 s)",
        "A",
        r#"          - labels: '{job="tslab",instance="a:9100",epoch="3",era="7",state="CLOSING",label="worker-3"}'
            value: 2
"#,
    ),
    (
        "Reclaimable bytes by epoch",
        "A",
        r#"          - labels: '{job="tslab",instance="a:9100",epoch="3",era="7",state="CLOSING",label="worker-3"}'
            value: 8192
          - labels: '{job="tslab",instance="b:9100",epoch="3",era="7",state="CLOSING",label="req"}'
            value: 4096
          - labels: '{job="tslab",instance="a:9100",epoch="5",era="1",state="ACTIVE"}'
            value: 0
"#,
    ),
    (
        "RSS drop at last close by epoch",
        "A",
        r#"          - labels: '{job="tslab",instance="a:9100",epoch="3",era="7",state="CLOSING",label="worker-3"}'
            value: 4194304
"#,
    ),
    (
        "Lock contention by label (label-contention feature)",
        "A",
        r#"          - labels: '{job="tslab",instance="a:9100",label_id="1",label="request"}'
            value: 0.1
          - labels: '{job="tslab",instance="a:9100",label_id="0"}'
            value: 0.3
"#,
    ),
];

#[test]
fn dashboard_joins_evaluate_on_synthetic_series() {
    let Some(promtool) = promtool("dashboard_joins_evaluate_on_synthetic_series") else {
        return;
    };
    let dash = dashboard();
    let mut tests = String::from(
        "evaluation_interval: 1m\ntests:\n  - name: dashboard joins\n    interval: 1m\n    input_series:\n",
    );
    tests.push_str(DASHBOARD_SERIES);
    tests.push_str("    promql_expr_test:\n");
    for (title, ref_id, samples) in DASHBOARD_EXPECTATIONS {
        tests.push_str(&format!(
            "      # {title}\n      - expr: {}\n        eval_time: 10m\n        exp_samples:\n{samples}",
            yaml_str(&panel_expr(&dash, title, ref_id))
        ));
    }
    let scratch = Scratch::new("dashboard_eval");
    let file = scratch.write("dashboard.test.yml", &tests);
    let (ok, out) = run_promtool(&promtool, &["test", "rules", &file.to_string_lossy()]);
    assert!(
        ok,
        "dashboard queries gave unexpected results:\n{out}\n--- test ---\n{tests}"
    );
}
