//! `GET /metrics`: a tiny hand-written registry (counters, gauges, one
//! histogram) and the Prometheus text exposition format 0.0.4.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `homestak_build_info` | gauge (1) | `version` |
//! | `homestak_reconciles_total` | counter | `result` (converged, drifted, interrupted, failed) |
//! | `homestak_reconcile_duration_seconds` | histogram | |
//! | `homestak_drifted_nodes` | gauge | `manifest` |
//! | `homestak_reconcile_queue_depth` | gauge | |
//! | `homestak_source_checks_total` | counter | `result` (changed, unchanged, error) |
//! | `homestak_pve_api_requests_total` | counter | `method`, `endpoint` (template) |
//! | `homestak_http_requests_total` | counter | `route`, `code` |
//! | `homestak_auth_failures_total` | counter | |
//! | `homestak_auth_throttled_total` | counter | |
//! | `homestak_connections_open` | gauge | |
//! | `homestak_connections_limit` | gauge | |
//! | `homestak_connections_refused_total` | counter | `reason` (max_connections, max_per_address) |
//! | `homestak_connections_timed_out_total` | counter | `phase` (first_request, header, idle, write) |
//!
//! Label values are bounded: routes and endpoints are templates, results
//! an enum, manifests the managed set.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use homestak_api::Outcome;
use homestak_engine::reconcile::Metrics as EngineMetrics;

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

/// A histogram without labels.
#[derive(Debug)]
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    /// Upper bounds, ascending; `+Inf` is implicit.
    bounds: &'static [f64],
    state: Mutex<HistogramState>,
}

#[derive(Debug, Default)]
struct HistogramState {
    /// Per bucket (not cumulative), plus one for `+Inf`.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub const fn new(name: &'static str, help: &'static str, bounds: &'static [f64]) -> Histogram {
        Histogram {
            name,
            help,
            bounds,
            state: Mutex::new(HistogramState {
                counts: Vec::new(),
                sum: 0.0,
                count: 0,
            }),
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: f64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
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

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).count
    }

    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "histogram");
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = format!("{}_bucket", self.name);
        let mut cumulative = 0;
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += s.counts.get(i).copied().unwrap_or(0);
            sample(
                out,
                &bucket,
                &["le"],
                &[format_value(*bound)],
                cumulative as f64,
            );
        }
        sample(out, &bucket, &["le"], &["+Inf".to_string()], s.count as f64);
        sample(out, &format!("{}_sum", self.name), &[], &[], s.sum);
        sample(
            out,
            &format!("{}_count", self.name),
            &[],
            &[],
            s.count as f64,
        );
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
    pub drifted_nodes: Family,
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
}

/// `reason` values of `homestak_connections_refused_total`.
pub const REFUSED_REASONS: [&str; 2] = ["max_connections", "max_per_address"];
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
                DURATION_BOUNDS,
            ),
            drifted_nodes: Family::gauge(
                "homestak_drifted_nodes",
                "Nodes that differ from their manifest, after the last reconcile or status.",
                &["manifest"],
            ),
            queue_depth: AtomicU64::new(0),
            source_checks: Family::counter(
                "homestak_source_checks_total",
                "Checks of the site-config for a new revision (after a change or a resync), by result.",
                &["result"],
            ),
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
        }
    }
}

impl Metrics {
    /// The exposition text, with the engine's counters.
    pub fn render(&self, engine: &EngineMetrics) -> String {
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
        self.drifted_nodes.render(&mut out);
        let queue = Family::gauge(
            "homestak_reconcile_queue_depth",
            "Manifests waiting for a reconcile.",
            &[],
        );
        queue.set(&[], self.queue_depth.load(Ordering::Relaxed) as f64);
        queue.render(&mut out);
        self.source_checks.render(&mut out);
        let pve = Family::counter(
            "homestak_pve_api_requests_total",
            "PVE API requests made by the engine, by method and endpoint template.",
            &["method", "endpoint"],
        );
        for r in &engine.pve_requests {
            pve.add(&[&r.method, &r.endpoint], r.count as f64);
        }
        pve.render(&mut out);
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
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use homestak_engine::reconcile::PveRequestCount;

    #[test]
    fn exposition_has_every_family_in_text_format() {
        let m = Metrics::default();
        m.reconciles.inc(&["converged"]);
        m.reconcile_duration.observe(0.3);
        m.reconcile_duration.observe(42.0);
        m.reconcile_duration.observe(1e9);
        m.drifted_nodes.set(&["n2-quick"], 2.0);
        m.drifted_nodes.set(&["gone"], 1.0);
        m.drifted_nodes.retain_first_label(|m| m != "gone");
        m.queue_depth.store(3, Ordering::Relaxed);
        m.http_requests.inc(&["spec", "200"]);
        let text = m.render(&EngineMetrics {
            pve_requests: vec![PveRequestCount {
                method: "GET".into(),
                endpoint: "/cluster/resources".into(),
                count: 7,
            }],
        });
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
            "homestak_drifted_nodes{manifest=\"n2-quick\"} 2",
            "homestak_reconcile_queue_depth 3",
            "homestak_pve_api_requests_total{method=\"GET\",endpoint=\"/cluster/resources\"} 7",
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
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(3.0), "3");
    }
}
