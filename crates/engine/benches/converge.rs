//! `make bench`: converge speed against the simulator, as ratios measured in
//! the same run (absolute seconds depend on the machine and time scale).
//!
//! For N independent VMs on one host (default 20) at time scale 0.01:
//! - `one`: converging a single VM: the critical path of a flat manifest
//!   (nothing can make N VMs finish faster than one);
//! - `sequential`: N VMs with `--concurrency 1`;
//! - `default`: N VMs with the default limits.
//!
//! Reported: default/one (how close to the critical-path bound),
//! default/bound (against the storage bound: PVE allocates under the
//! storage's lock, one allocation at a time) and sequential/default (the
//! gain from the DAG executor). Each figure is the
//! median of `BENCH_RUNS` runs (default 3), every run on a fresh simulator.
//!
//! Environment: `BENCH_VMS`, `BENCH_RUNS`, `BENCH_TIME_SCALE`.

// Test code: a failed unwrap is a failed test (clippy.toml says the same for #[test]s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use homestak_api::step::Step;
use homestak_api::{Mode, Reason};
use homestak_core::model::Manifest;
use homestak_core::site::Site;
use homestak_engine::executor;
use homestak_engine::reconcile::{self, Engine, Request, Setup};

mod support;
use support::env;

fn manifest(vms: usize) -> String {
    let mut text = String::from("schema_version: 2\nname: bench\nnodes:\n");
    for i in 0..vms {
        text.push_str(&format!(
            "  - {{name: vm-{i:02}, type: vm, preset: vm-small, image: debian-12}}\n"
        ));
    }
    text.push_str("settings:\n  verify_ssh: false\n");
    text
}

/// How long one allocation holds the VMs' storage lock on the simulator
/// the bench starts (`local-zfs`), in wall time.
fn lock_hold(config: &homestak_sim::Config) -> Duration {
    let hold = config
        .nodes
        .iter()
        .flat_map(|n| &n.storages)
        .find(|s| s.id == "local-zfs")
        .and_then(|s| s.lock_hold)
        .unwrap_or(config.latency.storage_lock_hold);
    Duration::from_secs_f64(hold * config.time_scale)
}

fn sim_config(scale: f64) -> homestak_sim::Config {
    let mut config = homestak_sim::Config::with_defaults();
    config.listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.time_scale = scale;
    config.seed = Some(1);
    config
}

/// One converge of `vms` VMs on a fresh simulator; returns the wall time of
/// plan + apply and the executor's report.
async fn converge(
    vms: usize,
    concurrency: Option<usize>,
    scale: f64,
) -> (Duration, executor::Report) {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = dir.path().join("site-config");
    support::flat_site(&site);
    let sim = homestak_sim::Simulator::start(sim_config(scale))
        .await
        .expect("simulator starts");
    homestak_sim::site_config::update(&site, &sim.ready_info(), "local-zfs", 22)
        .expect("site-config update");
    let site = Arc::new(Site::load(&site).expect("site loads"));
    let setup = Setup {
        state_dir: dir.path().join("state"),
        open_store: true,
        ..Setup::default()
    };
    let engine = Engine::open(setup).expect("engine");
    let manifest =
        Manifest::from_yaml_str(&manifest(vms), Path::new("bench.yaml")).expect("manifest");
    let mut options = reconcile::Options::default();
    if let Some(n) = concurrency {
        options.executor.concurrency = n;
    }
    let request = Request {
        manifest: Arc::new(manifest),
        host: "pve".to_string(),
        site,
        revision: None,
        reason: Reason::Cli,
        mode: Mode::Apply,
        options,
        generation: 0,
    };
    let started = Instant::now();
    let run = engine
        .run_once(request, std::future::pending(), &())
        .await
        .expect("plan");
    let wall = started.elapsed();
    let report = run.report.expect("the run applied its plan");
    assert!(report.success(), "bench converge failed: {report:?}");
    let _ = sim.shutdown().await;
    (wall, report)
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn main() {
    homestak_tls::install_crypto_provider();
    // `cargo test --all-targets` runs this binary without `--bench`: then a
    // quick smoke run proves it still works; figures come from `make bench`.
    let benching = std::env::args().any(|a| a == "--bench");
    let vms: usize = if benching { env("BENCH_VMS", 20) } else { 2 };
    let runs: usize = if benching {
        env("BENCH_RUNS", 3).max(1)
    } else {
        1
    };
    let scale: f64 = env("BENCH_TIME_SCALE", 0.01);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // One VM's path after its create (its last allocation), per run.
    let mut after_create = Vec::new();
    let mut lock_timeouts = 0;
    // The per-storage limits the last run ended with.
    let mut learned = String::new();
    let mut measure = |n: usize, c: Option<usize>| {
        let mut walls = Vec::new();
        for _ in 0..runs {
            let (wall, report) = rt.block_on(converge(n, c, scale));
            lock_timeouts += report
                .storage
                .values()
                .map(|s| s.lock_timeouts)
                .sum::<u64>();
            learned = report
                .storage
                .iter()
                .map(|(id, s)| format!("{id} {}", s.limit))
                .collect::<Vec<_>>()
                .join(", ");
            if n == 1 {
                // The wall time less the steps up to the end of create_vm:
                // what follows its cloud-init drive, the create's last
                // allocation (plus the plan, which every run pays once).
                // The create's own tail after that allocation is left out.
                let upto: Duration = report
                    .phases
                    .iter()
                    .take_while(|p| p.name != Step::ResizeDisk && p.name != Step::StartVm)
                    .map(|p| p.duration)
                    .sum();
                after_create.push(wall.saturating_sub(upto));
            }
            walls.push(wall);
        }
        median(walls)
    };
    let one = measure(1, None);
    let sequential = measure(vms, Some(1));
    let default = measure(vms, None);
    let defaults = executor::Config::default();
    // PVE allocates under the storage's lock, one at a time, and each
    // create allocates twice (the imported disk, the cloud-init drive):
    // N VMs cannot finish before 2N holds of the lock, then the last one's
    // path after its create.
    let hold = lock_hold(&sim_config(scale));
    let after = median(after_create);
    let allocations = 2 * vms as u32;
    let bound = hold * allocations + after;
    println!(
        "converge bench: {vms} VMs, time scale {scale}, median of {runs} runs, defaults: \
         concurrency {} per-storage {:?}",
        defaults.concurrency, defaults.per_storage
    );
    println!("  one VM (critical path)   {:>8.3} s", one.as_secs_f64());
    println!(
        "  storage bound            {:>8.3} s  ({allocations} allocations x lock hold {:.3} s \
         + one VM after its create {:.3} s)",
        bound.as_secs_f64(),
        hold.as_secs_f64(),
        after.as_secs_f64()
    );
    println!(
        "  {vms} VMs, --concurrency 1 {:>8.3} s",
        sequential.as_secs_f64()
    );
    println!(
        "  {vms} VMs, default         {:>8.3} s",
        default.as_secs_f64()
    );
    println!(
        "  default / one VM         {:>8.2}x",
        default.as_secs_f64() / one.as_secs_f64()
    );
    println!(
        "  default / bound          {:>8.2}x  (storage bound)",
        default.as_secs_f64() / bound.as_secs_f64()
    );
    println!("  storage-lock timeouts    {lock_timeouts:>8}  (all runs, each retried)");
    println!("  learned limits           {learned}  (the default run's, at its end)");
    println!(
        "  sequential / default     {:>8.2}x",
        sequential.as_secs_f64() / default.as_secs_f64()
    );
}
