//! The PVE client's requests in `/metrics`: [`PveMetrics`] is the
//! [`homestak_pve::Observer`] the daemon's engine gives every client it
//! builds, counting attempts by method, path template and status, and
//! timing them.
//!
//! Labels stay bounded: the route is the endpoint's template
//! (`/nodes/{node}/qemu/{vmid}/config`, never a path with ids), the status
//! an HTTP code or one of two words for attempts that got no answer.

use std::borrow::Cow;

use homestak_pve::{Answered, ErrorKind, Observer, RecordedRequest};

use super::{Family, Histogram};

/// PVE latencies: most calls answer in milliseconds, a loaded host or a
/// large list in seconds; the client gives up at 30 s.
const LATENCY_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// PVE request counters and latencies, fed by the PVE clients.
#[derive(Debug)]
pub struct PveMetrics {
    requests: Family,
    duration: Histogram,
}

impl Default for PveMetrics {
    fn default() -> Self {
        PveMetrics::new()
    }
}

impl PveMetrics {
    /// No requests yet.
    pub const fn new() -> PveMetrics {
        PveMetrics {
            requests: Family::counter(
                "homestak_pve_requests_total",
                "PVE API request attempts, by method, endpoint template and HTTP status (timeout or unreachable when none came).",
                &["method", "route", "status"],
            ),
            duration: Histogram::new(
                "homestak_pve_request_duration_seconds",
                "Time from sending a PVE API request to the end of its answer, by method and endpoint template.",
                &["method", "route"],
                LATENCY_BOUNDS,
            ),
        }
    }

    pub(super) fn render(&self, out: &mut String) {
        self.requests.render(out);
        self.duration.render(out);
    }
}

impl Observer for PveMetrics {
    fn on_request(&self, _request: &RecordedRequest) {}

    fn on_answer(&self, answer: &Answered<'_>) {
        let method = answer.method.as_str();
        let status = status_label(answer);
        self.requests.inc(&[method, answer.template, &status]);
        self.duration
            .observe(&[method, answer.template], answer.elapsed.as_secs_f64());
    }
}

/// The `status` label: the HTTP code PVE (or its proxy) answered, else
/// `timeout` or `unreachable`. Codes outside HTTP's range are `other`.
fn status_label(answer: &Answered<'_>) -> Cow<'static, str> {
    match answer.status {
        Some(code @ 100..=599) => Cow::Owned(code.to_string()),
        Some(_) => Cow::Borrowed("other"),
        None if answer.error.map(homestak_pve::Error::kind) == Some(ErrorKind::Timeout) => {
            Cow::Borrowed("timeout")
        }
        None => Cow::Borrowed("unreachable"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    static GET: reqwest::Method = reqwest::Method::GET;
    const ROUTE: &str = "/nodes/{node}/qemu/{vmid}/config";

    fn answer(status: Option<u16>, elapsed_ms: u64) -> Answered<'static> {
        Answered {
            method: &GET,
            template: ROUTE,
            attempt: 1,
            status,
            error: None,
            elapsed: Duration::from_millis(elapsed_ms),
        }
    }

    #[test]
    fn answers_are_counted_by_template_and_status_and_timed() {
        let m = PveMetrics::new();
        m.on_answer(&answer(Some(200), 3));
        m.on_answer(&answer(Some(200), 40));
        m.on_answer(&answer(Some(500), 2_000));
        m.on_answer(&answer(None, 31_000));
        m.on_answer(&answer(Some(700), 1));
        let timeout = homestak_pve::Error::Timeout {
            target: homestak_pve::Request::get("/version", &[]).target("pve:8006"),
            timeout: Duration::from_secs(30),
        };
        m.on_answer(&Answered {
            error: Some(&timeout),
            ..answer(None, 30_000)
        });
        let mut out = String::new();
        m.render(&mut out);
        let series = |labels: &str| format!("{{method=\"GET\",route=\"{ROUTE}\"{labels}}}");
        for (name, labels, value) in [
            ("homestak_pve_requests_total", ",status=\"200\"", 2),
            ("homestak_pve_requests_total", ",status=\"500\"", 1),
            ("homestak_pve_requests_total", ",status=\"unreachable\"", 1),
            ("homestak_pve_requests_total", ",status=\"timeout\"", 1),
            ("homestak_pve_requests_total", ",status=\"other\"", 1),
            (
                "homestak_pve_request_duration_seconds_bucket",
                ",le=\"0.005\"",
                2,
            ),
            (
                "homestak_pve_request_duration_seconds_bucket",
                ",le=\"0.05\"",
                3,
            ),
            (
                "homestak_pve_request_duration_seconds_bucket",
                ",le=\"2.5\"",
                4,
            ),
            (
                "homestak_pve_request_duration_seconds_bucket",
                ",le=\"30\"",
                5,
            ),
            (
                "homestak_pve_request_duration_seconds_bucket",
                ",le=\"+Inf\"",
                6,
            ),
            ("homestak_pve_request_duration_seconds_count", "", 6),
        ] {
            let line = format!("{name}{} {value}", series(labels));
            assert!(out.lines().any(|l| l == line), "no {line:?} in\n{out}");
        }
        let sum: f64 = out
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "homestak_pve_request_duration_seconds_sum{} ",
                    series("")
                ))
            })
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 63.044).abs() < 1e-9, "{sum}");
        assert!(out.contains("# TYPE homestak_pve_requests_total counter\n"));
        assert!(out.contains("# TYPE homestak_pve_request_duration_seconds histogram\n"));
    }
}
