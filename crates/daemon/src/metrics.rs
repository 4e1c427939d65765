//! `GET /metrics`: a tiny hand-written registry (counters, gauges,
//! histograms) and the Prometheus text exposition format 0.0.4.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `homestak_build_info` | gauge (1) | `version` |
//! | `homestak_reconciles_total` | counter | `result` (converged, drifted, interrupted, failed) |
//! | `homestak_reconcile_duration_seconds` | histogram | |
//! | `homestak_last_reconcile_timestamp_seconds` | gauge | `manifest`, `outcome` |
//! | `homestak_drifted_nodes` | gauge | `manifest` |
//! | `homestak_nodes` | gauge | `manifest` |
//! | `homestak_nodes_in_sync` | gauge | `manifest` |
//! | `homestak_reconcile_queue_depth` | gauge | |
//! | `homestak_source_checks_total` | counter | `result` (changed, unchanged, error) |
//! | `homestak_pve_requests_total` | counter | `method`, `route` (template), `status` |
//! | `homestak_pve_request_duration_seconds` | histogram | `method`, `route` |
//! | `homestak_storage_lock_timeouts_total` | counter | `storage` ([`storage`]) |
//! | `homestak_storage_concurrency` | gauge | `storage` |
//! | `homestak_http_requests_total` | counter | `route`, `code` |
//! | `homestak_auth_failures_total` | counter | |
//! | `homestak_auth_throttled_total` | counter | |
//! | `homestak_connections_open` | gauge | |
//! | `homestak_connections_limit` | gauge | |
//! | `homestak_connections_refused_total` | counter | `reason` (max_connections, max_per_address) |
//! | `homestak_connections_timed_out_total` | counter | `phase` (first_request, header, idle, write) |
//! | `process_*` ([`process`], Linux only) | | |
//!
//! Label values are bounded: routes and endpoints are templates, results
//! and outcomes enums, statuses HTTP codes, manifests the managed set.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use homestak_api::{Outcome, State, Status};
use homestak_base::time::Timestamp;
use homestak_engine::executor::NodeState;
use homestak_engine::reconcile::RunOutcome;

#[cfg(target_os = "linux")]
mod process;
mod pve;
mod storage;

pub use pve::PveMetrics;
pub use storage::StorageMetrics;

/// Metric kinds, as written in `# TYPE`.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// A counter or gauge family with fixed label names.
#[derive(Debug)]
pub struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, f64>>,
}

impl Family {
    const fn new(
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &'static [&'static str],
    ) -> Family {
        Family {
            name,
            help,
            kind,
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    /// A counter family.
    pub const fn counter(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Family {
        Family::new(name, help, Kind::Counter, labels)
    }

    /// A gauge family.
    pub const fn gauge(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Family {
        Family::new(name, help, Kind::Gauge, labels)
    }

    fn key(&self, labels: &[&str]) -> Vec<String> {
        debug_assert_eq!(labels.len(), self.labels.len(), "{}", self.name);
        labels.iter().map(|s| (*s).to_string()).collect()
    }

    /// Adds `by` to the series (counters).
    pub fn add(&self, labels: &[&str], by: f64) {
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        *values.entry(self.key(labels)).or_insert(0.0) += by;
    }

    /// Adds one.
    pub fn inc(&self, labels: &[&str]) {
        self.add(labels, 1.0);
    }

    /// Sets the series (gauges).
    pub fn set(&self, labels: &[&str], value: f64) {
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        values.insert(self.key(labels), value);
    }

    /// Keeps only the series whose first label value passes `keep` (a
    /// gauge per manifest, when manifests leave the managed set).
    pub fn retain_first_label(&self, keep: impl Fn(&str) -> bool) {
        self.values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|key, _| key.first().is_none_or(|v| keep(v)));
    }

    /// The current value of a series.
    pub fn get(&self, labels: &[&str]) -> f64 {
        let values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        values.get(&self.key(labels)).copied().unwrap_or(0.0)
    }

    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, self.kind.as_str());
        let values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        for (key, value) in values.iter() {
            sample(out, self.name, self.labels, key, *value);
        }
    }
}

/// A histogram family with fixed label names.
#[derive(Debug)]
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    /// Upper bounds, ascending; `+Inf` is implicit.
    bounds: &'static [f64],
    series: Mutex<BTreeMap<Vec<String>, HistogramState>>,
}

#[derive(Debug, Default)]
struct HistogramState {
    /// Per bucket (not cumulative), plus one for `+Inf`.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        bounds: &'static [f64],
    ) -> Histogram {
        Histogram {
            name,
            help,
            labels,
            bounds,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records one observation in the series of `labels`.
    pub fn observe(&self, labels: &[&str], value: f64) {
        debug_assert_eq!(labels.len(), self.labels.len(), "{}", self.name);
        let key = labels.iter().map(|s| (*s).to_string()).collect();
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let s = series.entry(key).or_default();
        if s.counts.is_empty() {
            s.counts = vec![0; self.bounds.len() + 1];
        }
        let bucket = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        s.counts[bucket] += 1;
        s.sum += value;
        s.count += 1;
    }

    /// Observations so far, over every series.
    pub fn count(&self) -> u64 {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        series.values().map(|s| s.count).sum()
    }

    /// `_bucket` (cumulative), `_sum` and `_count` per series; a histogram
    /// without labels shows its empty series from the start.
    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "histogram");
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        if series.is_empty() && self.labels.is_empty() {
            self.render_series(out, &[], &HistogramState::default());
        }
        for (key, state) in series.iter() {
            self.render_series(out, key, state);
        }
    }

    fn render_series(&self, out: &mut String, key: &[String], s: &HistogramState) {
        let bucket = format!("{}_bucket", self.name);
        let mut names: Vec<&str> = self.labels.to_vec();
        names.push("le");
        let mut values = key.to_vec();
        let mut cumulative = 0;
        let bounds = self.bounds.iter().map(|b| format_value(*b));
        for (i, le) in bounds.chain(["+Inf".to_string()]).enumerate() {
            cumulative += s.counts.get(i).copied().unwrap_or(0);
            values.push(le);
            sample(out, &bucket, &names, &values, cumulative as f64);
            values.pop();
        }
        let sum = format!("{}_sum", self.name);
        sample(out, &sum, self.labels, key, s.sum);
        let count = format!("{}_count", self.name);
        sample(out, &count, self.labels, key, s.count as f64);
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[&str], values: &[String], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, v)) in labels.iter().zip(values).enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{label}=\"{}\"", escape_label(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {}", format_value(value));
}

/// Label values escape `\`, `"` and newlines.
fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn format_value(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.is_nan() {
        "NaN".to_string()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Reconcile durations: a no-op is sub-second, a fresh VM tree minutes.
const DURATION_BOUNDS: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// The daemon's metrics.
#[derive(Debug)]
pub struct Metrics {
    pub reconciles: Family,
    pub reconcile_duration: Histogram,
    /// When each manifest's last reconcile of each outcome ended.
    pub last_reconcile: Family,
    pub drifted_nodes: Family,
    /// Nodes in a manifest's last run or drift report.
    pub nodes: Family,
    pub nodes_in_sync: Family,
    pub queue_depth: AtomicU64,
    pub source_checks: Family,
    pub http_requests: Family,
    pub auth_failures: AtomicU64,
    /// Wrong tokens from a locked address, answered 429.
    pub auth_throttled: AtomicU64,
    /// Wrong tokens being held by the tarpit now, hung-up ones included.
    pub auth_held: AtomicU64,
    /// Wrong tokens held by the tarpit before their answer.
    pub auth_held_total: AtomicU64,
    /// Held wrong tokens whose client hung up before the answer.
    pub auth_held_abandoned: AtomicU64,
    /// Connections held now (accepted and under the caps).
    pub connections_open: AtomicU64,
    /// The connection cap in force (after the file-descriptor headroom).
    pub connections_limit: AtomicU64,
    pub connections_refused: Family,
    pub connections_timed_out: Family,
    /// PVE storage-lock timeouts and learned per-storage limits.
    pub storage: StorageMetrics,
}

/// `reason` values of `homestak_connections_refused_total`.
pub const REFUSED_REASONS: [&str; 2] = ["max_connections", "max_per_address"];
/// `result` values of `homestak_source_checks_total`.
pub const SOURCE_CHECK_RESULTS: [&str; 3] = ["changed", "unchanged", "error"];
/// `phase` values of `homestak_connections_timed_out_total`.
pub const TIMEOUT_PHASES: [&str; 4] = ["first_request", "header", "idle", "write"];

impl Default for Metrics {
    fn default() -> Self {
        let reconciles = Family::counter(
            "homestak_reconciles_total",
            "Reconciles finished, by result.",
            &["result"],
        );
        // Every result is exported from the start, so rate() works at once.
        for outcome in Outcome::ALL {
            reconciles.add(&[outcome.as_str()], 0.0);
        }
        let source_checks = Family::counter(
            "homestak_source_checks_total",
            "Checks of the site-config for a new revision (after a change or a resync), by result.",
            &["result"],
        );
        for result in SOURCE_CHECK_RESULTS {
            source_checks.add(&[result], 0.0);
        }
        let connections_refused = Family::counter(
            "homestak_connections_refused_total",
            "Connections closed at accept, before TLS, because a cap was reached.",
            &["reason"],
        );
        for reason in REFUSED_REASONS {
            connections_refused.add(&[reason], 0.0);
        }
        let connections_timed_out = Family::counter(
            "homestak_connections_timed_out_total",
            "Connections closed by a timeout, by the phase they were in.",
            &["phase"],
        );
        for phase in TIMEOUT_PHASES {
            connections_timed_out.add(&[phase], 0.0);
        }
        Metrics {
            reconciles,
            reconcile_duration: Histogram::new(
                "homestak_reconcile_duration_seconds",
                "Wall time of one manifest's reconcile.",
                &[],
                DURATION_BOUNDS,
            ),
            last_reconcile: Family::gauge(
                "homestak_last_reconcile_timestamp_seconds",
                "When the manifest's last reconcile with this outcome ended, in Unix seconds.",
                &["manifest", "outcome"],
            ),
            drifted_nodes: Family::gauge(
                "homestak_drifted_nodes",
                "Nodes that differ from their manifest, after the last reconcile or status.",
                &["manifest"],
            ),
            nodes: Family::gauge(
                "homestak_nodes",
                "Nodes in the manifest's last run or drift report (orphans included).",
                &["manifest"],
            ),
            nodes_in_sync: Family::gauge(
                "homestak_nodes_in_sync",
                "Nodes in sync with their manifest, after the last run or drift report.",
                &["manifest"],
            ),
            queue_depth: AtomicU64::new(0),
            source_checks,
            http_requests: Family::counter(
                "homestak_http_requests_total",
                "HTTP requests served, by route and status code.",
                &["route", "code"],
            ),
            auth_failures: AtomicU64::new(0),
            auth_throttled: AtomicU64::new(0),
            auth_held: AtomicU64::new(0),
            auth_held_total: AtomicU64::new(0),
            auth_held_abandoned: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            connections_limit: AtomicU64::new(0),
            connections_refused,
            connections_timed_out,
            storage: StorageMetrics::default(),
        }
    }
}

impl Metrics {
    /// A reconcile of `manifest` ended with `outcome` after `seconds`;
    /// `run` is what the engine said (`None` when it was never reached).
    pub fn reconciled(
        &self,
        manifest: &str,
        outcome: Outcome,
        seconds: f64,
        run: Option<&RunOutcome>,
    ) {
        self.reconciles.inc(&[outcome.as_str()]);
        self.reconcile_duration.observe(&[], seconds);
        let now = Timestamp::now().as_millis() as f64 / 1000.0;
        self.last_reconcile.set(&[manifest, outcome.as_str()], now);
        let drifted = run.map_or(0, |r| r.drifted_nodes);
        self.drifted_nodes.set(&[manifest], drifted as f64);
        let counts = run.and_then(|r| match (&r.report, &r.status) {
            (_, Some(status)) => Some(status_counts(status)),
            (Some(report), None) => {
                let in_sync = report
                    .nodes
                    .values()
                    .filter(|s| matches!(s, NodeState::Converged | NodeState::Unchanged))
                    .count();
                Some((report.nodes.len(), in_sync))
            }
            (None, None) => None,
        });
        if let Some((total, in_sync)) = counts {
            self.set_nodes(manifest, total, in_sync);
        }
        if let Some(report) = run.and_then(|r| r.report.as_ref()) {
            self.storage.ran(report);
        }
    }

    /// A drift report of `manifest` (a status query).
    pub fn observed(&self, manifest: &str, status: &Status) {
        self.drifted_nodes
            .set(&[manifest], status.drifted_nodes() as f64);
        let (total, in_sync) = status_counts(status);
        self.set_nodes(manifest, total, in_sync);
    }

    fn set_nodes(&self, manifest: &str, total: usize, in_sync: usize) {
        self.nodes.set(&[manifest], total as f64);
        self.nodes_in_sync.set(&[manifest], in_sync as f64);
    }

    /// Drops the per-manifest series of manifests no longer managed.
    pub fn retain_manifests(&self, keep: impl Fn(&str) -> bool) {
        for family in [
            &self.last_reconcile,
            &self.drifted_nodes,
            &self.nodes,
            &self.nodes_in_sync,
        ] {
            family.retain_first_label(&keep);
        }
    }

    /// The exposition text, with the PVE client's counters and this
    /// process's `process_*` metrics.
    pub fn render(&self, pve: &PveMetrics) -> String {
        let mut out = String::new();
        let build = Family::gauge(
            "homestak_build_info",
            "The running homestak build; always 1.",
            &["version"],
        );
        build.set(&[env!("CARGO_PKG_VERSION")], 1.0);
        build.render(&mut out);
        self.reconciles.render(&mut out);
        self.reconcile_duration.render(&mut out);
        self.last_reconcile.render(&mut out);
        self.drifted_nodes.render(&mut out);
        self.nodes.render(&mut out);
        self.nodes_in_sync.render(&mut out);
        let queue = Family::gauge(
            "homestak_reconcile_queue_depth",
            "Manifests waiting for a reconcile.",
            &[],
        );
        queue.set(&[], self.queue_depth.load(Ordering::Relaxed) as f64);
        queue.render(&mut out);
        self.source_checks.render(&mut out);
        pve.render(&mut out);
        self.storage.render(&mut out);
        self.http_requests.render(&mut out);
        let auth = Family::counter(
            "homestak_auth_failures_total",
            "Requests that presented a wrong token.",
            &[],
        );
        auth.set(&[], self.auth_failures.load(Ordering::Relaxed) as f64);
        auth.render(&mut out);
        let throttled = Family::counter(
            "homestak_auth_throttled_total",
            "Wrong tokens from an address locked after repeated failures (answered 429).",
            &[],
        );
        throttled.set(&[], self.auth_throttled.load(Ordering::Relaxed) as f64);
        throttled.render(&mut out);
        let held = Family::gauge(
            "homestak_auth_held",
            "Wrong tokens held now before their answer (tarpit), each keeping its connection's place in the per-address cap.",
            &[],
        );
        held.set(&[], self.auth_held.load(Ordering::Relaxed) as f64);
        held.render(&mut out);
        let held_total = Family::counter(
            "homestak_auth_held_total",
            "Wrong tokens held before their answer until their address's lock passed (tarpit).",
            &[],
        );
        held_total.set(&[], self.auth_held_total.load(Ordering::Relaxed) as f64);
        held_total.render(&mut out);
        let abandoned = Family::counter(
            "homestak_auth_held_abandoned_total",
            "Held wrong tokens whose client hung up before the answer (the hold kept its place to the end).",
            &[],
        );
        abandoned.set(&[], self.auth_held_abandoned.load(Ordering::Relaxed) as f64);
        abandoned.render(&mut out);
        let open = Family::gauge(
            "homestak_connections_open",
            "HTTPS connections held now.",
            &[],
        );
        open.set(&[], self.connections_open.load(Ordering::Relaxed) as f64);
        open.render(&mut out);
        let limit = Family::gauge(
            "homestak_connections_limit",
            "Most HTTPS connections held at once (the cap after file-descriptor headroom).",
            &[],
        );
        limit.set(&[], self.connections_limit.load(Ordering::Relaxed) as f64);
        limit.render(&mut out);
        self.connections_refused.render(&mut out);
        self.connections_timed_out.render(&mut out);
        #[cfg(target_os = "linux")]
        process::render(&mut out);
        out
    }
}

/// Nodes in a drift report, and those in sync.
fn status_counts(status: &Status) -> (usize, usize) {
    let in_sync = status
        .nodes
        .iter()
        .filter(|n| n.state == State::InSync)
        .count();
    (status.nodes.len(), in_sync)
}

#[cfg(test)]
mod tests {
    use super::*;
    use homestak_api::NodeStatus;
    use std::time::Duration;

    #[test]
    fn exposition_has_every_family_in_text_format() {
        let m = Metrics::default();
        m.reconciles.inc(&["converged"]);
        m.reconcile_duration.observe(&[], 0.3);
        m.reconcile_duration.observe(&[], 42.0);
        m.reconcile_duration.observe(&[], 1e9);
        m.drifted_nodes.set(&["n2-quick"], 2.0);
        m.drifted_nodes.set(&["gone"], 1.0);
        m.last_reconcile.set(&["gone", "failed"], 1.0);
        m.retain_manifests(|m| m != "gone");
        m.queue_depth.store(3, Ordering::Relaxed);
        m.http_requests.inc(&["spec", "200"]);
        let text = m.render(&PveMetrics::new());
        for line in [
            "# TYPE homestak_build_info gauge",
            &format!(
                "homestak_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            ),
            "homestak_reconciles_total{result=\"converged\"} 1",
            "homestak_reconciles_total{result=\"failed\"} 0",
            "# TYPE homestak_reconcile_duration_seconds histogram",
            "homestak_reconcile_duration_seconds_bucket{le=\"0.5\"} 1",
            "homestak_reconcile_duration_seconds_bucket{le=\"60\"} 2",
            "homestak_reconcile_duration_seconds_bucket{le=\"+Inf\"} 3",
            "homestak_reconcile_duration_seconds_count 3",
            "# TYPE homestak_last_reconcile_timestamp_seconds gauge",
            "homestak_drifted_nodes{manifest=\"n2-quick\"} 2",
            "# TYPE homestak_nodes gauge",
            "# TYPE homestak_nodes_in_sync gauge",
            "homestak_reconcile_queue_depth 3",
            "homestak_source_checks_total{result=\"unchanged\"} 0",
            "# TYPE homestak_pve_requests_total counter",
            "# TYPE homestak_pve_request_duration_seconds histogram",
            "homestak_http_requests_total{route=\"spec\",code=\"200\"} 1",
            "homestak_auth_failures_total 0",
            "homestak_auth_throttled_total 0",
            "# TYPE homestak_auth_held gauge",
            "homestak_auth_held 0",
            "# TYPE homestak_auth_held_total counter",
            "homestak_auth_held_total 0",
            "homestak_auth_held_abandoned_total 0",
            "homestak_connections_open 0",
            "homestak_connections_refused_total{reason=\"max_per_address\"} 0",
            "homestak_connections_timed_out_total{phase=\"header\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("gone"), "{text}");
        if cfg!(target_os = "linux") {
            assert!(text.contains("\n# TYPE process_cpu_seconds_total counter\n"));
        }
        // Every sample line is `name[{labels}] value`.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let value = l.rsplit(' ').next().unwrap();
            assert!(
                value.parse::<f64>().is_ok() || value == "+Inf",
                "bad sample {l:?}"
            );
        }
    }

    #[test]
    fn an_empty_histogram_without_labels_shows_zero_buckets() {
        let h = Histogram::new("h_seconds", "A test.", &[], &[0.5, 1.0]);
        let mut out = String::new();
        h.render(&mut out);
        assert_eq!(
            out,
            "# HELP h_seconds A test.\n# TYPE h_seconds histogram\n\
             h_seconds_bucket{le=\"0.5\"} 0\nh_seconds_bucket{le=\"1\"} 0\n\
             h_seconds_bucket{le=\"+Inf\"} 0\nh_seconds_sum 0\nh_seconds_count 0\n"
        );
        // With labels, a series appears with its first observation.
        let h = Histogram::new("h_seconds", "A test.", &["route"], &[0.5, 1.0]);
        let mut out = String::new();
        h.render(&mut out);
        assert_eq!(out.lines().count(), 2, "{out}");
        h.observe(&["/a\"b"], 0.75);
        h.observe(&["/a\"b"], 0.5);
        h.observe(&["/c"], 7.0);
        out.clear();
        h.render(&mut out);
        for line in [
            "h_seconds_bucket{route=\"/a\\\"b\",le=\"0.5\"} 1",
            "h_seconds_bucket{route=\"/a\\\"b\",le=\"1\"} 2",
            "h_seconds_bucket{route=\"/a\\\"b\",le=\"+Inf\"} 2",
            "h_seconds_sum{route=\"/a\\\"b\"} 1.25",
            "h_seconds_count{route=\"/a\\\"b\"} 2",
            "h_seconds_bucket{route=\"/c\",le=\"1\"} 0",
            "h_seconds_bucket{route=\"/c\",le=\"+Inf\"} 1",
            "h_seconds_count{route=\"/c\"} 1",
        ] {
            assert!(out.lines().any(|l| l == line), "no {line:?} in\n{out}");
        }
        assert_eq!(h.count(), 3);
    }

    fn node(name: &str, state: State) -> NodeStatus {
        NodeStatus {
            node: homestak_core::model::NodeName::new(name.to_string()).unwrap(),
            parent: None,
            tier: None,
            vmid: None,
            ip: None,
            power: None,
            state,
            changes: Vec::new(),
            reason: None,
        }
    }

    fn timestamp(text: &str, manifest: &str, outcome: &str) -> Option<f64> {
        let series = format!(
            "homestak_last_reconcile_timestamp_seconds{{manifest=\"{manifest}\",outcome=\"{outcome}\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&series)?.parse().ok())
    }

    #[test]
    fn a_reconcile_sets_its_timestamp_and_the_drift_gauges() {
        let m = Metrics::default();
        let before = Timestamp::now().as_millis() as f64 / 1000.0;
        let mut run = RunOutcome::failed("x".into(), Timestamp::now(), Duration::ZERO);
        run.outcome = Outcome::Drifted;
        run.drifted_nodes = 2;
        run.status = Some(Status {
            manifest: "demo".into(),
            host: "pve".into(),
            in_sync: false,
            nodes: vec![
                node("a", State::InSync),
                node("b", State::Drifted),
                node("c", State::Missing),
            ],
            last_applied_commit: None,
            deep: false,
        });
        m.reconciled("demo", Outcome::Drifted, 1.5, Some(&run));
        let after = Timestamp::now().as_millis() as f64 / 1000.0;
        let text = m.render(&PveMetrics::new());
        let at = timestamp(&text, "demo", "drifted").unwrap();
        assert!(before <= at && at <= after, "{before} <= {at} <= {after}");
        assert_eq!(timestamp(&text, "demo", "converged"), None);
        for line in [
            "homestak_reconciles_total{result=\"drifted\"} 1",
            "homestak_reconcile_duration_seconds_count 1",
            "homestak_drifted_nodes{manifest=\"demo\"} 2",
            "homestak_nodes{manifest=\"demo\"} 3",
            "homestak_nodes_in_sync{manifest=\"demo\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }

        // A run that never reached the engine: failed, no drift known, the
        // node counts kept from before; the drifted timestamp stays.
        m.reconciled("demo", Outcome::Failed, 0.1, None);
        let text = m.render(&PveMetrics::new());
        assert!(timestamp(&text, "demo", "failed").unwrap() >= at);
        assert_eq!(timestamp(&text, "demo", "drifted"), Some(at));
        assert!(text.contains("\nhomestak_drifted_nodes{manifest=\"demo\"} 0\n"));
        assert!(text.contains("\nhomestak_nodes{manifest=\"demo\"} 3\n"));

        // A status query updates the gauges too.
        let status = Status {
            nodes: vec![node("a", State::InSync), node("b", State::InSync)],
            in_sync: true,
            ..run.status.clone().unwrap()
        };
        m.observed("demo", &status);
        let text = m.render(&PveMetrics::new());
        for line in [
            "homestak_drifted_nodes{manifest=\"demo\"} 0",
            "homestak_nodes{manifest=\"demo\"} 2",
            "homestak_nodes_in_sync{manifest=\"demo\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(3.0), "3");
    }
}
