//! The monitoring files in contrib/ against the real `/metrics`: the
//! Prometheus alert rules and the Grafana dashboard parse, and every
//! `homestak_*` or `process_*` series their queries name is in a scrape of
//! a daemon (real engine, on the simulator) that has run a reconcile. With
//! promtool on the PATH, `promtool check rules` passes too, and so do the
//! rules' unit tests (contrib/prometheus/homestak-alerts.test.yml).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use crate::daemon_converge::{converging_on_the_simulator, wait_in_sync};
use crate::daemon_support::{READ_TOKEN, git, metric};

fn contrib(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(rel)
}

/// A Prometheus rule file (unknown keys refused, so a typo fails here).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<Group>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_: Option<String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

/// The `homestak_*` and `process_*` names a PromQL expression uses.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(start) = rest.find(|c: char| is_name(c)) {
        let word_start = &rest[start..];
        let end = word_start
            .find(|c: char| !is_name(c))
            .unwrap_or(word_start.len());
        let word = &word_start[..end];
        // A name starts a word: `$__rate_interval` or `x_process_y` do not count.
        let before = rest[..start].chars().last();
        if before != Some('$') && (word.starts_with("homestak_") || word.starts_with("process_")) {
            names.insert(word.to_string());
        }
        rest = &word_start[end..];
    }
    names
}

/// The sample names of an exposition (`name{…} value` or `name value`).
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// Every `expr` in a dashboard, and checks that every panel and query
/// takes its data source from the `datasource` variable.
fn dashboard_exprs(value: &Value, exprs: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(ds) = map.get("datasource") {
                assert_eq!(ds["uid"], "${datasource}", "a fixed data source: {ds}");
            }
            if let Some(Value::String(expr)) = map.get("expr") {
                exprs.push(expr.clone());
            }
            map.values().for_each(|v| dashboard_exprs(v, exprs));
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, exprs)),
        _ => {}
    }
}

#[test]
fn names_are_found_as_promql_words() {
    assert_eq!(
        metric_names(
            "sum by (le) (rate(homestak_pve_request_duration_seconds_bucket{job=\"$job\"}[$__rate_interval])) / process_max_fds"
        ),
        BTreeSet::from([
            "homestak_pve_request_duration_seconds_bucket".to_string(),
            "process_max_fds".to_string()
        ])
    );
    assert!(metric_names("up{job=\"homestak\"} == 0 and $process_x").is_empty());
    let scrape = "# TYPE a counter\na_total{x=\"1\"} 2\nb 3\n";
    assert_eq!(
        sample_names(scrape),
        BTreeSet::from(["a_total".to_string(), "b".to_string()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_and_dashboard_use_metrics_the_daemon_exports() {
    // The files parse, with the shapes Prometheus and Grafana expect.
    let rules: RuleFile =
        homestak_base::yaml::read_file(&contrib("prometheus/homestak-alerts.yml")).unwrap();
    let mut referenced: BTreeMap<String, String> = BTreeMap::new();
    let mut alerts = Vec::new();
    for group in &rules.groups {
        assert!(!group.name.is_empty());
        for rule in &group.rules {
            assert!(rule.for_.is_some(), "{} fires without a `for`", rule.alert);
            assert!(rule.labels.contains_key("severity"), "{}", rule.alert);
            assert!(rule.annotations.contains_key("summary"), "{}", rule.alert);
            alerts.push(rule.alert.clone());
            for name in metric_names(&rule.expr) {
                referenced.insert(name, format!("alert {}", rule.alert));
            }
        }
    }
    for wanted in [
        "HomestakDown",
        "HomestakReconcileFailing",
        "HomestakNoConvergedReconcile",
        "HomestakDriftPersists",
        "HomestakPveErrors",
        "HomestakPveSlow",
    ] {
        assert!(
            alerts.iter().any(|a| a == wanted),
            "no {wanted} in {alerts:?}"
        );
    }
    let text = std::fs::read_to_string(contrib("grafana/homestak-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "the data source is a template variable"
    );
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard["panels"], &mut exprs);
    assert!(exprs.len() >= 10, "{exprs:?}");
    for expr in &exprs {
        for name in metric_names(expr) {
            referenced
                .entry(name)
                .or_insert_with(|| "the dashboard".into());
        }
    }
    // What alerting is about is covered.
    for name in [
        "homestak_last_reconcile_timestamp_seconds",
        "homestak_drifted_nodes",
        "homestak_pve_requests_total",
        "homestak_pve_request_duration_seconds_bucket",
        "process_open_fds",
    ] {
        assert!(referenced.contains_key(name), "{name} is never used");
    }

    // A daemon that has reconciled: every name is in its scrape.
    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (sim, d) = converging_on_the_simulator(site.path(), state.path()).await;
    let head = git(site.path(), &["rev-parse", "HEAD"]);
    wait_in_sync(&d, 1, &head).await;
    // The store has the run before the daemon counts it: wait for both.
    let converged = "homestak_reconciles_total{result=\"converged\"}";
    let deadline = Instant::now() + Duration::from_secs(60);
    let scrape = loop {
        let (code, scrape) = d.get("/metrics", Some(READ_TOKEN)).await;
        assert_eq!(code, 200, "{scrape}");
        if metric(&scrape, converged) >= 1.0 {
            break scrape;
        }
        assert!(
            Instant::now() < deadline,
            "never counted (hang guard)\n{scrape}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let exported = sample_names(&scrape);
    let missing: Vec<String> = referenced
        .iter()
        .filter(|(name, _)| !exported.contains(*name))
        .map(|(name, by)| format!("{name} (used by {by})"))
        .collect();
    assert!(missing.is_empty(), "not in /metrics: {missing:?}\n{scrape}");
    // The reconcile and its PVE requests are in it, by template.
    assert!(
        scrape.contains(
            "homestak_last_reconcile_timestamp_seconds{manifest=\"demo\",outcome=\"converged\"} "
        ),
        "{scrape}"
    );
    assert!(
        scrape.contains("homestak_pve_requests_total{method=\"GET\",route=\"/cluster/resources\",status=\"200\"} "),
        "{scrape}"
    );
    assert!(
        !scrape.contains("route=\"/nodes/pve/"),
        "a concrete path as a label:\n{scrape}"
    );
    d.stop().await.unwrap();
    let _ = sim.shutdown().await;
}

/// Runs promtool in contrib/prometheus; `None` when it is not installed.
fn promtool(args: &[&str]) -> Option<std::process::Output> {
    match std::process::Command::new("promtool")
        .args(args)
        .current_dir(contrib("prometheus"))
        .output()
    {
        Ok(out) => Some(out),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => panic!("promtool: {err}"),
    }
}

/// `promtool check rules`, and its unit tests of when each alert fires
/// (homestak-alerts.test.yml), when promtool is installed (.ci/run
/// unpacks it and sets HOMESTAK_REQUIRE_PROMTOOL, so there it never skips).
#[test]
fn promtool_accepts_the_rules_and_their_tests_when_installed() {
    for args in [
        ["check", "rules", "homestak-alerts.yml"],
        ["test", "rules", "homestak-alerts.test.yml"],
    ] {
        let Some(out) = promtool(&args) else {
            assert!(
                std::env::var_os("HOMESTAK_REQUIRE_PROMTOOL").is_none(),
                "HOMESTAK_REQUIRE_PROMTOOL is set (CI) but promtool is not on the PATH"
            );
            println!(
                "SKIPPED: promtool is not installed (the parse-and-reference test still runs)"
            );
            return;
        };
        assert!(
            out.status.success(),
            "promtool {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
