//! `make bench`, nested part: a three-tier tree (a root `pve` node holding
//! a VM and another `pve` node, which holds a VM) against the simulator,
//! every run on a fresh simulator, child tiers real `homestak` daemons.
//!
//! - `tree`: the whole tree converged by one root `reconcile --once`;
//! - `one after another`: the same nodes added one at a time, each by its
//!   own root run (hv, then app, then hv2, then deep), as a tool that walks
//!   the tree node by node would: the sum of those runs' wall times;
//! - `no-op`: a second root run of the converged tree, with the write
//!   requests each tier received.
//!
//! Environment: `BENCH_TIME_SCALE` (default 0.01), `HOMESTAK_BIN` (default
//! `target/<profile>/homestak` beside this executable).

// Test code: a failed unwrap is a failed test (clippy.toml says the same for #[test]s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use homestak_api::{Mode, Reason};
use homestak_core::model::Manifest;
use homestak_core::site::Site;
use homestak_engine::reconcile::{self, Engine, Request, Setup};
use homestak_sim::{Handle, TierView};

const NODES: [&str; 4] = [
    "  - { name: hv, type: pve, preset: vm-large, image: debian-13-pve, vmid: 99901 }\n",
    "  - { name: app, type: vm, parent: hv, preset: vm-small, image: debian-12, vmid: 99902 }\n",
    "  - { name: hv2, type: pve, parent: hv, preset: vm-large, image: debian-13-pve, vmid: 99903 }\n",
    "  - { name: deep, type: vm, parent: hv2, preset: vm-small, image: debian-12, vmid: 99904 }\n",
];

mod support;
use support::{env, write};

/// The tree's first `n` nodes.
fn manifest(n: usize) -> Manifest {
    let mut text = String::from("schema_version: 2\nname: bench-tiers\nnodes:\n");
    for node in &NODES[..n] {
        text.push_str(node);
    }
    text.push_str("settings:\n  verify_ssh: false\n");
    Manifest::from_yaml_str(&text, Path::new("bench-tiers.yaml")).expect("manifest")
}

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("HOMESTAK_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("exe");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("homestak");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p homestak` first",
        path.display()
    );
    path
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

fn main() {
    homestak_tls::install_crypto_provider();
    // `cargo test --all-targets` runs this without `--bench`: skip the
    // minute of real work there; figures come from `make bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("nested bench: run with `make bench`");
        return;
    }
    let scale: f64 = env("BENCH_TIME_SCALE", 0.01);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
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
        let one_by_one: Duration = steps.iter().sum();

        println!("nested bench: three tiers (pve > hv > {{app, hv2 > deep}}), time scale {scale}");
        println!("  tree, one root run       {:>8.3} s", tree.as_secs_f64());
        println!(
            "  one node after another   {:>8.3} s  ({})",
            one_by_one.as_secs_f64(),
            steps
                .iter()
                .map(|d| format!("{:.3}", d.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(" + ")
        );
        println!(
            "  one after another / tree {:>8.2}x",
            one_by_one.as_secs_f64() / tree.as_secs_f64()
        );
        println!("  no-op root run           {:>8.3} s", noop.as_secs_f64());
        let per_tier: Vec<String> = noop_writes
            .iter()
            .map(|(tier, n)| format!("{tier} {n}"))
            .collect();
        println!("  no-op writes per tier    {}", per_tier.join(", "));
    });
}
