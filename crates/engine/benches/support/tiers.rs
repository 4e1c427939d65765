//! The nested measurement, shared by `--bench nested` and `--bench perf`:
//! a three-tier tree (a root `pve` node holding a VM and another `pve`
//! node, which holds a VM) against the simulator, every run on a fresh
//! simulator, child tiers real `homestak` daemons.
//!
//! - `tree`: the whole tree converged by one root `reconcile --once`;
//! - `one after another`: the same nodes added one at a time, each by its
//!   own root run (hv, then app, then hv2, then deep), as a tool that walks
//!   the tree node by node would: the sum of those runs' wall times;
//! - `no-op`: a second root run of the converged tree, with the write
//!   requests each tier received.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use homestak_api::{Mode, Reason};
use homestak_core::model::Manifest;
use homestak_core::site::Site;
use homestak_engine::reconcile::{self, Engine, Request, Setup};
use homestak_sim::{Handle, TierView};

use super::{binary, write};

/// What one measurement saw.
pub struct Figures {
    /// The whole tree by one root run.
    pub tree: Duration,
    /// Each node added by its own root run, in order.
    pub steps: Vec<Duration>,
    /// A second root run of the converged tree.
    pub noop: Duration,
    /// Write requests each tier received during the no-op run, root first.
    pub noop_writes: Vec<(String, u64)>,
}

impl Figures {
    /// The sum of the one-after-another runs.
    pub fn one_by_one(&self) -> Duration {
        self.steps.iter().sum()
    }
}

/// Measures the tree at time scale `scale` (two fresh simulators).
pub async fn measure(scale: f64) -> Figures {
    let w = world(scale).await;
    let tree = run(&w, NODES.len()).await;
    reset(&w.sim);
    let noop = run(&w, NODES.len()).await;
    let noop_writes = writes(&w.sim);
    let _ = w.sim.shutdown().await;

    let w = world(scale).await;
    let mut steps = Vec::new();
    for n in 1..=NODES.len() {
        steps.push(run(&w, n).await);
    }
    let _ = w.sim.shutdown().await;
    Figures {
        tree,
        steps,
        noop,
        noop_writes,
    }
}

const NODES: [&str; 4] = [
    "  - { name: hv, type: pve, preset: vm-large, image: debian-13-pve, vmid: 99901 }\n",
    "  - { name: app, type: vm, parent: hv, preset: vm-small, image: debian-12, vmid: 99902 }\n",
    "  - { name: hv2, type: pve, parent: hv, preset: vm-large, image: debian-13-pve, vmid: 99903 }\n",
    "  - { name: deep, type: vm, parent: hv2, preset: vm-small, image: debian-12, vmid: 99904 }\n",
];

/// The tree's first `n` nodes.
fn manifest(n: usize) -> Manifest {
    let mut text = String::from("schema_version: 2\nname: bench-tiers\nnodes:\n");
    for node in &NODES[..n] {
        text.push_str(node);
    }
    text.push_str("settings:\n  verify_ssh: false\n");
    Manifest::from_yaml_str(&text, Path::new("bench-tiers.yaml")).expect("manifest")
}

/// A fresh simulator and an engine whose site-config points at it.
struct World {
    _dir: tempfile::TempDir,
    sim: Handle,
    site: Arc<Site>,
    engine: Engine,
}

async fn world(scale: f64) -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("site-config");
    write(
        &root.join("site.yaml"),
        "defaults:\n  automation_user: homestak\n  bridge: vmbr0\n",
    );
    let key_path = dir.path().join("id_ed25519");
    let key = homestak_ssh::Identity::generate_to(&key_path).expect("key");
    write(
        &root.join("secrets.yaml"),
        &format!(
            "api_tokens: {{}}\nssh_keys:\n  bench: {:?}\n",
            key.public_key_openssh()
        ),
    );
    write(
        &root.join("v2/presets/vm-small.yaml"),
        "cores: 1\nmemory: 1024\ndisk: 8\n",
    );
    write(
        &root.join("v2/presets/vm-large.yaml"),
        "cores: 4\nmemory: 8192\ndisk: 32\n",
    );
    let mut config = homestak_sim::Config::with_defaults();
    config.listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.time_scale = scale;
    config.seed = Some(1);
    config.ssh_port = 2222;
    config.work_dir = Some(dir.path().join("sim"));
    let sim = homestak_sim::Simulator::start(config)
        .await
        .expect("simulator starts");
    homestak_sim::site_config::update(&root, &sim.ready_info(), "local-zfs", 2222)
        .expect("site-config update");
    let site = Arc::new(Site::load(&root).expect("site loads"));
    let engine = Engine::open(Setup {
        state_dir: dir.path().join("state"),
        open_store: true,
        ssh_key: Some(key_path),
        binary: Some(binary()),
        ..Setup::default()
    })
    .expect("engine");
    World {
        _dir: dir,
        sim,
        site,
        engine,
    }
}

/// One root run of the tree's first `n` nodes; its wall time.
async fn run(w: &World, n: usize) -> Duration {
    let request = Request {
        manifest: Arc::new(manifest(n)),
        host: "pve".to_string(),
        site: w.site.clone(),
        revision: None,
        reason: Reason::Cli,
        mode: Mode::Apply,
        options: reconcile::Options::default(),
        generation: 0,
    };
    let started = Instant::now();
    let run = w
        .engine
        .run_once(request, std::future::pending(), &())
        .await
        .expect("plan");
    let wall = started.elapsed();
    let report = run.report.expect("the run applied its plan");
    assert!(report.success(), "bench converge failed: {report:?}");
    wall
}

/// Write requests (not GET) each tier received, root first.
fn writes(sim: &Handle) -> Vec<(String, u64)> {
    let count = |t: &TierView| {
        t.requests()
            .iter()
            .filter(|(k, _)| !k.starts_with("GET "))
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    let root = sim.view();
    let mut out = vec![("pve".to_string(), count(&root))];
    if let Some(hv) = root.nested(99901) {
        out.push(("hv".to_string(), count(&hv)));
        if let Some(hv2) = hv.nested(99903) {
            out.push(("hv2".to_string(), count(&hv2)));
        }
    }
    out
}

fn reset(sim: &Handle) {
    let root = sim.view();
    root.reset_requests();
    if let Some(hv) = root.nested(99901) {
        hv.reset_requests();
        if let Some(hv2) = hv.nested(99903) {
            hv2.reset_requests();
        }
    }
}
