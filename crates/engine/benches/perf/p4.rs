//! P4: homestak with 10,000 nodes (homestak issue 13), against the built-in
//! simulator at time scale 0:
//!
//! - `plan`: `homestak plan` of a manifest of `nodes` flat VMs, as a child
//!   process, on an empty simulator and an empty state directory (every
//!   node a create). Wall time and peak RSS. Goals: < 1 s, < 64 MiB.
//! - `daemon_rss`: `homestak serve` (no manifest to reconcile) whose store
//!   holds `nodes` node records, written through the engine's store API
//!   before it starts; VmRSS from `/proc/<pid>/status` once it has served
//!   its ready file and idled [`SETTLE`]. Goal: < 64 MiB.
//! - `status`: `homestak status` of the same manifest once the simulator
//!   holds `nodes` running VMs (added through `/_sim/vms`, named as the
//!   nodes, without homestak's tags and marks) and the store a record per
//!   node pointing at its VM: every config is read. Wall time and the
//!   simulator's request counters, by method.
//!
//! Call [`measure`] from outside an async runtime (it runs its own), as
//! `mod p4;` from the perf bench's `main.rs`; `homestak_bin` is the binary
//! to run (`target/release/homestak` for figures that mean something) and
//! [`P4::rows`] gives the table lines. With the debug binary the plan is
//! about twice as slow and 20 MiB bigger.

// Bench code: a failed expect is a failed bench.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use homestak_base::id::{NodeName, PveNode, VmId};
use homestak_engine::store::{self, Durability, NodeKey, NodeRecord, PowerState, Store};
use serde_json::json;

#[allow(dead_code)]
use crate::serve::Serve;
use crate::support;
use crate::table::{Table, secs};

/// How long the daemon idles after it is ready before its RSS is read.
pub const SETTLE: Duration = Duration::from_secs(2);
/// Goal for `plan` wall time.
pub const PLAN_WALL_GOAL: Duration = Duration::from_secs(1);
/// Goal for `plan` peak RSS and the daemon's RSS.
pub const RSS_GOAL: u64 = 64 << 20;

/// The manifest's name (the store keys its records by it).
const MANIFEST: &str = "p4";
/// The first VMID the simulator's VMs get.
const FIRST_VMID: usize = 1000;

/// One child process run to completion.
#[derive(Clone, Debug)]
pub struct ChildRun {
    pub wall: Duration,
    /// Peak resident set size in bytes.
    pub peak_rss: u64,
    /// Whether `peak_rss` is the kernel's own figure for this child
    /// (`getrusage(RUSAGE_CHILDREN)` grew over it). Otherwise an earlier
    /// child of this process peaked higher and `peak_rss` is the child's
    /// VmHWM polled every millisecond while it ran: exact unless it grew
    /// in its last millisecond.
    pub rss_exact: bool,
    pub exit_code: Option<i32>,
}

/// `homestak status` of all nodes.
#[derive(Clone, Debug)]
pub struct StatusRun {
    pub run: ChildRun,
    /// Simulator requests during the run, by method (`GET`, `POST`, …).
    pub by_method: BTreeMap<String, u64>,
}

/// The P4 figures.
#[derive(Clone, Debug)]
pub struct P4 {
    pub nodes: usize,
    pub plan: ChildRun,
    /// VmRSS of the idle daemon, bytes.
    pub daemon_rss: u64,
    pub status: StatusRun,
}

/// P4's lines in the table.
pub fn rows(p: &P4, t: &mut Table) {
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20));
    let n = p.nodes;
    t.goal(
        "P4",
        format!("plan, {n} nodes: wall"),
        secs(p.plan.wall),
        format!("< {} s", PLAN_WALL_GOAL.as_secs()),
        p.plan.wall < PLAN_WALL_GOAL,
    );
    t.goal(
        "P4",
        format!("plan, {n} nodes: peak RSS"),
        format!(
            "{}{}",
            mib(p.plan.peak_rss),
            if p.plan.rss_exact { "" } else { " (polled)" }
        ),
        "< 64 MiB",
        p.plan.peak_rss < RSS_GOAL,
    );
    t.goal(
        "P4",
        format!("daemon RSS, {n} node records"),
        mib(p.daemon_rss),
        "< 64 MiB",
        p.daemon_rss < RSS_GOAL,
    );
    t.add(
        "P4",
        format!("status, {n} VMs not made by homestak [p4]"),
        format!("{}, {}", secs(p.status.run.wall), methods(&p.status)),
    );
    t.note(
        "p4",
        "P4: the VMs are added through the simulator's control API without homestak's \
         tags and marks, and the store's records point at them: status reads every \
         config (the fast path needs VMs homestak converged, see P2), at the client's \
         200 requests per second",
    );
}

/// `GET 1, POST 0` …: a status run's requests by method.
fn methods(run: &StatusRun) -> String {
    run.by_method
        .iter()
        .map(|(m, c)| format!("{m} {c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Node `i`'s name.
fn node_name(i: usize) -> String {
    format!("n{i:05}")
}

fn manifest(nodes: usize) -> String {
    let mut text = format!("schema_version: 2\nname: {MANIFEST}\nnodes:\n");
    for i in 0..nodes {
        text.push_str(&format!(
            "  - {{name: {}, type: vm, preset: vm-small, image: debian-12}}\n",
            node_name(i)
        ));
    }
    text.push_str("settings:\n  verify_ssh: false\n");
    text
}

/// Measures P4 with `nodes` nodes (10,000 in the full run).
pub fn measure(homestak_bin: &Path, nodes: usize) -> P4 {
    homestak_tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let site = dir.path().join("site-config");
    support::flat_site(&site);
    let manifest_file = dir.path().join("p4.yaml");
    support::write(&manifest_file, &manifest(nodes));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut config = homestak_sim::Config::with_defaults();
    config.listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.time_scale = 0.0;
    config.seed = Some(1);
    let sim = rt
        .block_on(homestak_sim::Simulator::start(config))
        .expect("simulator starts");
    homestak_sim::site_config::update(&site, &sim.ready_info(), "local-zfs", 22)
        .expect("site-config update");
    let command = |state: &Path, args: &[&str]| {
        let mut c = Command::new(homestak_bin);
        c.arg("--site-config")
            .arg(&site)
            .args(args)
            .arg("--manifest-file")
            .arg(&manifest_file)
            .args(["-H", "pve"])
            .env("HOMESTAK_STATE_DIR", state)
            .env("NO_COLOR", "1");
        c
    };

    let plan = run_child(command(&dir.path().join("plan-state"), &["plan"]));
    assert_eq!(plan.exit_code, Some(0), "homestak plan failed");

    rt.block_on(add_vms(&sim, nodes));
    let state = dir.path().join("state");
    write_records(&state, nodes, sim.node());
    sim.reset_requests();
    let run = run_child(command(&state, &["status"]));
    let mut by_method = BTreeMap::new();
    for (route, count) in &sim.requests() {
        let method = route.split(' ').next().unwrap_or_default().to_string();
        *by_method.entry(method).or_insert(0) += count;
    }
    let status = StatusRun { run, by_method };

    let daemon_rss = daemon_rss(homestak_bin, &site, &state);
    let _ = rt.block_on(sim.shutdown());
    P4 {
        nodes,
        plan,
        daemon_rss,
        status,
    }
}

/// Runs `command` with its output discarded (a pipe nobody reads would
/// stall it); wall time and peak RSS.
fn run_child(mut command: Command) -> ChildRun {
    use nix::sys::resource::{UsageWho, getrusage};
    let before = getrusage(UsageWho::RUSAGE_CHILDREN).map_or(0, |u| u.max_rss());
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn homestak");
    let mut hwm = 0;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        hwm = hwm.max(proc_status_kib(child.id(), "VmHWM:").unwrap_or(0));
        std::thread::sleep(Duration::from_millis(1));
    };
    let wall = started.elapsed();
    let after = getrusage(UsageWho::RUSAGE_CHILDREN).map_or(0, |u| u.max_rss());
    let rss_exact = after > before;
    let kib = if rss_exact {
        u64::try_from(after).unwrap_or(0)
    } else {
        hwm
    };
    ChildRun {
        wall,
        peak_rss: kib << 10,
        rss_exact,
        exit_code: status.code(),
    }
}

/// A `kB` field of `/proc/<pid>/status`.
fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// `nodes` running VMs named as the manifest's nodes, VMIDs from
/// [`FIRST_VMID`], eight requests at a time.
async fn add_vms(sim: &homestak_sim::Handle, nodes: usize) {
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(homestak_tls::pinned_client_config(sim.fingerprint()))
        .build()
        .expect("client");
    let auth = format!("PVEAPIToken={}", sim.token());
    let url = format!("{}/_sim/vms", sim.url());
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..8 {
        let (client, auth, url) = (client.clone(), auth.clone(), url.clone());
        workers.spawn(async move {
            for i in (w..nodes).step_by(8) {
                let body = json!({
                    "vmid": FIRST_VMID + i, "name": node_name(i), "running": true,
                    "cores": 1, "memory": 1024, "disk_size": "8G",
                });
                let r = client
                    .post(&url)
                    .header("Authorization", &auth)
                    .json(&body)
                    .send()
                    .await
                    .expect("POST /_sim/vms");
                assert!(r.status().is_success(), "POST /_sim/vms: {}", r.status());
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.expect("worker");
    }
}

/// A store in `state` with a record per node: its VM, running.
fn write_records(state: &Path, nodes: usize, pve_node: &str) {
    let store = store::open(&state.join("store"), store::Options::default()).expect("store");
    let pve_node = PveNode::new(pve_node).expect("pve node name");
    for i in 0..nodes {
        let name = NodeName::new(node_name(i)).expect("node name");
        let record = NodeRecord {
            vmid: Some(VmId::new((FIRST_VMID + i) as i128).expect("vmid")),
            pve_node: Some(pve_node.clone()),
            power: PowerState::Running,
            ..NodeRecord::default()
        };
        store
            .put_node(&NodeKey::new(MANIFEST, &name), &record, Durability::Lazy)
            .expect("put node");
    }
    store.flush().expect("flush");
}

/// VmRSS of `homestak serve` on `state` once ready and idle for [`SETTLE`].
fn daemon_rss(homestak_bin: &Path, site: &Path, state: &Path) -> u64 {
    let mut serve = Serve::spawn(homestak_bin, site, state, &["--no-watch"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while serve.ready_info().is_none() {
        assert!(
            Instant::now() < deadline,
            "homestak serve never became ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(SETTLE);
    proc_status_kib(serve.child.id(), "VmRSS:").expect("daemon VmRSS") << 10
}
