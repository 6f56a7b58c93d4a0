//! docs/grafana-dashboard.json checked against the code: the file parses, imports cleanly (a
//! `DS_PROMETHEUS` datasource input that every panel and target uses), every panel has a title,
//! every query panel has targets and every target an `expr`, and every metric family named in an
//! `expr` (or in a template variable's query; `gavel_*` and `process_*` names) is one Gavel exports (`gavel::metrics::metric_names`).
//! A renamed or removed metric therefore breaks this test instead of leaving an empty panel.
//!
//! When `promtool` is on PATH (scripts/install-test-deps.sh installs it), every `expr` is also
//! parsed by Prometheus itself: the expressions are written out as recording rules and checked
//! with `promtool check rules`. Without promtool that part is skipped with a note on stderr, unless
//! `GAVEL_REQUIRE_PROMTOOL=1` (set by `.ci/run`) makes it a failure.

// A test, not a core: writing the temporary rules file with std::fs is fine.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;

use serde_json::Value;

/// The dashboard, embedded at compile time so cargo rebuilds this test whenever it changes.
const DASHBOARD_JSON: &str = include_str!("../docs/grafana-dashboard.json");

/// The datasource every panel and target must use: the import-time input `DS_PROMETHEUS`.
const DATASOURCE_UID: &str = "${DS_PROMETHEUS}";

/// Suffixes Prometheus adds to a histogram's (or summary's) family name for its series.
const SERIES_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

fn dashboard() -> Value {
    serde_json::from_str(DASHBOARD_JSON).expect("docs/grafana-dashboard.json is not valid JSON")
}

/// Every panel, rows included, with the panels nested inside (collapsed) rows.
fn all_panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a [Value], out: &mut Vec<&'a Value>) {
        for p in panels {
            out.push(p);
            if let Some(inner) = p.get("panels").and_then(Value::as_array) {
                walk(inner, out);
            }
        }
    }
    let top = dash["panels"]
        .as_array()
        .expect("dashboard has no `panels` list");
    let mut out = Vec::new();
    walk(top, &mut out);
    out
}

fn is_row(panel: &Value) -> bool {
    panel["type"].as_str() == Some("row")
}

fn title(panel: &Value) -> &str {
    panel["title"].as_str().unwrap_or("<untitled>")
}

/// Every target's `expr` of every query panel, with the title of its panel.
fn exprs(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in all_panels(dash) {
        if let Some(targets) = p.get("targets").and_then(Value::as_array) {
            for t in targets {
                let expr = t["expr"].as_str().unwrap_or("");
                out.push((title(p).to_string(), expr.to_string()));
            }
        }
    }
    out
}

/// The queries of the template variables (`label_values(...)` and the like).
fn variable_queries(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let vars = dash["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for v in vars {
        let name = format!("variable ${}", v["name"].as_str().unwrap_or("?"));
        for q in [&v["definition"], &v["query"], &v["query"]["query"]] {
            if let Some(s) = q.as_str() {
                out.push((name.clone(), s.to_string()));
            }
        }
    }
    out
}

/// The metric families an expression names: every identifier starting with `gavel_` or
/// `process_` (the standard process metrics Gavel also exports) at an identifier boundary, with a
/// histogram series suffix (`_bucket`, `_sum`, `_count`) removed.
fn metric_families(expr: &str) -> BTreeSet<String> {
    const PREFIXES: [&[u8]; 2] = [b"gavel_", b"process_"];
    let bytes = expr.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < bytes.len() {
        let at_boundary = i == 0 || !is_ident(bytes[i - 1]);
        let prefix = PREFIXES.iter().find(|p| bytes[i..].starts_with(p));
        if let (true, Some(prefix)) = (at_boundary, prefix) {
            let mut end = i + prefix.len();
            while end < bytes.len()
                && (bytes[end].is_ascii_lowercase()
                    || bytes[end].is_ascii_digit()
                    || bytes[end] == b'_')
            {
                end += 1;
            }
            let name = &expr[i..end];
            let family = SERIES_SUFFIXES
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            out.insert(family.to_string());
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn scanner_finds_families_and_strips_series_suffixes() {
    let expr = "histogram_quantile(0.99, sum by (le) (rate(gavel_post_duration_seconds_bucket\
                {instance=~\"$instance\", le=\"0.25\"}[5m]))) / sum(rate(gavel_post_duration_seconds_count[5m])) \
                + gavel_core_connections_open + xgavel_not_a_metric + rate(gavel_store_commits_total[1m]) \
                / rate(process_cpu_seconds_total[1m])";
    let got: Vec<String> = metric_families(expr).into_iter().collect();
    assert_eq!(
        got,
        [
            "gavel_core_connections_open",
            "gavel_post_duration_seconds",
            "gavel_store_commits_total",
            "process_cpu_seconds_total",
        ]
    );
}

#[test]
fn dashboard_imports_cleanly() {
    let dash = dashboard();
    assert!(
        dash["title"].as_str().is_some_and(|t| !t.is_empty()),
        "dashboard has no title"
    );
    assert!(dash["schemaVersion"].as_u64().is_some(), "no schemaVersion");
    let inputs = dash["__inputs"].as_array().expect("no __inputs list");
    assert!(
        inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS"
            && i["type"] == "datasource"
            && i["pluginId"] == "prometheus"),
        "__inputs lacks the DS_PROMETHEUS prometheus datasource"
    );
    let mut ids = BTreeSet::new();
    for p in all_panels(&dash) {
        if let Some(id) = p["id"].as_u64() {
            assert!(ids.insert(id), "panel id {id} used twice");
        }
        if is_row(p) {
            continue;
        }
        let ds = &p["datasource"];
        assert_eq!(
            ds["uid"],
            DATASOURCE_UID,
            "panel {:?}: datasource",
            title(p)
        );
        for t in p["targets"].as_array().into_iter().flatten() {
            assert_eq!(
                t["datasource"]["uid"],
                DATASOURCE_UID,
                "panel {:?}: target datasource",
                title(p)
            );
        }
    }
}

#[test]
fn every_panel_has_a_title_and_every_target_an_expr() {
    let dash = dashboard();
    let panels = all_panels(&dash);
    assert!(!panels.is_empty(), "dashboard `panels` is empty");
    assert!(
        panels.iter().any(|p| !is_row(p)),
        "dashboard has rows but no panels"
    );
    for p in &panels {
        let t = p["title"].as_str().unwrap_or("");
        assert!(!t.trim().is_empty(), "a panel has no title: {p}");
        if is_row(p) {
            continue;
        }
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("panel {t:?} has no `targets` list"));
        assert!(!targets.is_empty(), "panel {t:?} has no targets");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or("");
            assert!(
                !expr.trim().is_empty(),
                "panel {t:?}: a target has no expr: {target}"
            );
        }
    }
}

#[test]
fn every_metric_in_the_dashboard_is_exported() {
    let dash = dashboard();
    let known: BTreeSet<&str> = gavel::metrics::metric_names().collect();
    let mut used = BTreeSet::new();
    let mut unknown = Vec::new();
    for (where_, expr) in exprs(&dash).into_iter().chain(variable_queries(&dash)) {
        for family in metric_families(&expr) {
            if !known.contains(family.as_str()) {
                unknown.push(format!("{where_}: {family}"));
            }
            used.insert(family);
        }
    }
    assert!(
        unknown.is_empty(),
        "the dashboard uses metrics Gavel does not export (gavel::metrics::metric_names):\n  {}",
        unknown.join("\n  ")
    );
    // Guard against a scanner that silently finds nothing: the SLO panels must be there, and so
    // must the CPU-per-auction panel.
    for needed in [
        "gavel_post_duration_seconds",
        "gavel_engine_overhead_seconds",
        "process_cpu_seconds_total",
        "gavel_thread_cpu_seconds_total",
    ] {
        assert!(used.contains(needed), "the dashboard does not use {needed}");
    }
}

/// Grafana variables replaced by something Prometheus parses: intervals by a duration, any other
/// variable (used in label matchers like `instance=~"$instance"`) by a match-all regex.
fn substitute_variables(expr: &str) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let (name, consumed) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').map_or(braced.len(), |e| e + 1);
            (braced[..end.saturating_sub(1)].to_string(), end + 1)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (after[..end].to_string(), end)
        };
        out.push_str(match name.as_str() {
            "__rate_interval" | "__interval" | "__range" => "5m",
            _ => ".*",
        });
        rest = &after[consumed.min(after.len())..];
    }
    out.push_str(rest);
    out
}

#[test]
fn every_expr_parses_with_promtool() {
    let Some(promtool) = gavel_testkit::require_tool("promtool", "GAVEL_REQUIRE_PROMTOOL") else {
        return;
    };
    let dash = dashboard();
    let rules: Vec<Value> = exprs(&dash)
        .into_iter()
        .enumerate()
        .map(|(i, (_, expr))| {
            serde_json::json!({ "record": format!("gavel_dashboard:expr_{i}"), "expr": substitute_variables(&expr) })
        })
        .collect();
    // JSON is YAML, so promtool reads this as a rules file.
    let file = serde_json::json!({ "groups": [{ "name": "grafana-dashboard", "rules": rules }] });
    let path =
        std::env::temp_dir().join(format!("gavel-dashboard-rules-{}.json", std::process::id()));
    std::fs::write(&path, file.to_string()).expect("write rules file");
    let result = std::process::Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(&path)
        .output();
    let _ = std::fs::remove_file(&path);
    let output = result.expect("run promtool");
    assert!(
        output.status.success(),
        "promtool check rules rejected a dashboard expr:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
