//! P2: a no-op reconcile and `status` of N converged VMs: requests by
//! method and wall time, for the fast path and for deep, against one bare
//! `GET /cluster/resources` round trip at that size.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use homestak_api::Mode;
use homestak_engine::reconcile::{self, Engine};

use crate::table::{Table, ratio, secs, x};
use crate::world::{self, World};

/// The observe depth a variant runs with.
#[derive(Clone, Copy)]
pub struct Depth {
    pub label: &'static str,
    pub deep: bool,
}

pub const FAST: Depth = Depth {
    label: "fast",
    deep: false,
};
pub const DEEP: Depth = Depth {
    label: "deep",
    deep: true,
};

/// A reconcile with the variant's observe depth.
fn reconcile_options(depth: Depth) -> reconcile::Options {
    reconcile::Options {
        deep: depth.deep,
        ..reconcile::Options::default()
    }
}

/// `homestak status` (`--deep` for the deep variant).
async fn status(w: &World, engine: &Engine, depth: Depth, vms: usize) {
    let report = engine
        .status(w.site.clone(), &world::manifest(vms), "pve", depth.deep)
        .await
        .expect("status");
    assert!(report.in_sync, "status of converged VMs is not in sync");
}

/// One measured call: wall time and requests by method.
pub struct Call {
    pub wall: Duration,
    pub requests: BTreeMap<String, u64>,
}

impl Call {
    pub fn count(&self, method: &str) -> u64 {
        self.requests.get(method).copied().unwrap_or(0)
    }

    pub fn writes(&self) -> u64 {
        self.requests
            .iter()
            .filter(|(m, _)| m.as_str() != "GET")
            .map(|(_, n)| n)
            .sum()
    }

    fn methods(&self) -> String {
        ["GET", "POST", "PUT", "DELETE"]
            .map(|m| format!("{m} {}", self.count(m)))
            .join(", ")
    }
}

pub struct Size {
    pub vms: usize,
    /// (depth, no-op reconcile, status)
    pub variants: Vec<(Depth, Call, Call)>,
    /// Fastest of a few bare `GET /cluster/resources`.
    pub round_trip: Duration,
}

/// Measures `w`, on which `vms` VMs have converged.
pub async fn measure(w: &World, vms: usize) -> Size {
    crate::progress(&format!("p2: no-op and status of {vms} VMs"));
    let round_trip = cluster_resources(w).await;
    let mut variants = Vec::new();
    for depth in [FAST, DEEP] {
        let engine = w.engine();
        w.sim.reset_requests();
        let request = w.request(world::manifest(vms), Mode::Apply, reconcile_options(depth));
        let started = Instant::now();
        let run = engine
            .run_once(request, std::future::pending(), &())
            .await
            .expect("no-op run");
        let noop = Call {
            wall: started.elapsed(),
            requests: w.requests_by_method(),
        };
        if std::env::var_os("BENCH_VERBOSE").is_some() {
            eprintln!(
                "p2: {vms} VMs, no-op {}: {:?}",
                depth.label,
                w.sim.requests()
            );
        }
        let report = run.report.expect("the no-op run applied its plan");
        assert!(report.success(), "no-op run failed: {report:?}");
        assert_eq!(run.changed_nodes, 0, "the no-op run changed nodes");
        w.sim.reset_requests();
        let started = Instant::now();
        status(w, &engine, depth, vms).await;
        let st = Call {
            wall: started.elapsed(),
            requests: w.requests_by_method(),
        };
        variants.push((depth, noop, st));
    }
    Size {
        vms,
        variants,
        round_trip,
    }
}

/// The fastest of 5 `GET /cluster/resources` on a warm connection.
async fn cluster_resources(w: &World) -> Duration {
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(homestak_tls::pinned_client_config(w.sim.fingerprint()))
        .build()
        .expect("client");
    let url = format!("{}/api2/json/cluster/resources", w.sim.url());
    let auth = format!("PVEAPIToken={}", w.sim.token());
    let mut best = Duration::MAX;
    // The first opens the connection; it does not count.
    for i in 0..6 {
        let started = Instant::now();
        let answer = client
            .get(&url)
            .header("Authorization", &auth)
            .send()
            .await
            .expect("GET /cluster/resources");
        assert!(answer.status().is_success(), "{}", answer.status());
        let _ = answer.bytes().await.expect("body");
        if i > 0 {
            best = best.min(started.elapsed());
        }
    }
    best
}

pub fn rows(s: &Size, t: &mut Table) {
    let n = s.vms;
    let row = "P2";
    t.add(
        row,
        format!("{n} VMs: one GET /cluster/resources"),
        secs(s.round_trip),
    );
    for (depth, noop, st) in &s.variants {
        let l = depth.label;
        let over = ratio(noop.wall.as_secs_f64(), s.round_trip.as_secs_f64());
        if depth.deep {
            t.add(
                row,
                format!("{n} VMs: no-op reconcile, {l}"),
                secs(noop.wall),
            );
            t.add(
                row,
                format!("{n} VMs: no-op, {l}: requests"),
                noop.methods(),
            );
            t.add(row, format!("{n} VMs: no-op, {l} / round trip"), x(over));
        } else {
            t.add(
                row,
                format!("{n} VMs: no-op reconcile, {l}"),
                secs(noop.wall),
            );
            t.goal(
                row,
                format!("{n} VMs: no-op, {l}: requests"),
                noop.methods(),
                "1 GET per tier, 0 writes",
                noop.count("GET") <= 1 && noop.writes() == 0,
            );
            t.goal(
                row,
                format!("{n} VMs: no-op, {l} / round trip"),
                x(over),
                "<= 2.00x",
                over <= 2.0,
            );
        }
        t.add(row, format!("{n} VMs: status, {l}"), secs(st.wall));
        t.add(row, format!("{n} VMs: status, {l}: requests"), st.methods());
    }
}
