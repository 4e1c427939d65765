//! R2, faults: a flat manifest converges on a hostile host about as fast
//! as on a healthy one, and never makes a VM twice.
//!
//! Each seed converges the same manifest twice on fresh simulators: once
//! fault-free, once with
//! - 10 % of reads and 10 % of writes answered 503 (before the work),
//! - 5 % of connections reset before the work and 5 % after it (the work
//!   done, the answer lost: a create's task runs, its UPID never arrives),
//! - 5 % of tasks failed.
//!
//! "Converged" is what an unattended daemon sees: runs one after the other
//! until one succeeds (every node converged), then a fault-free plan with
//! nothing to do. The figures are the wall time of those runs, their ratio
//! (measured in the same process, one seed after the other), the VMs per
//! manifest node in the simulator's world, the VMs carrying marks for no
//! node of the manifest, and the faults injected by kind.
//!
//! It fails when the faulty converge takes more than 3x the fault-free one,
//! when a node has any number of VMs but one, when a marked VM serves no
//! node, or when the faulty run does not converge within `FAULTS_MAX_RUNS`.
//!
//! Time: the simulator runs `FAULTS_TIME_SCALE` times real speed, and the
//! reconciler's own waits (executor backoff, task polls, the client's read
//! retries and rate limit) are scaled by the same factor, so the ratio is
//! what a real host would show.
//!
//! Sizes: `make reliability-faults` (`cargo bench --bench faults`) runs 12
//! VMs over `FAULTS_SEEDS` seeds (default 5); `cargo test --all-targets`
//! (CI) runs this binary without `--bench`: the same 12 VMs and checks for
//! one fixed seed. Environment: `FAULTS_VMS`, `FAULTS_SEEDS`,
//! `FAULTS_TIME_SCALE`, `FAULTS_MAX_RUNS`.

// Test code: a failed unwrap is a failed test (clippy.toml says the same for #[test]s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use homestak_base::id::VmId;
use homestak_core::model::Manifest;
use homestak_core::plan::marks::Claim;
use homestak_core::site::Site;
use homestak_engine::executor;
use homestak_engine::reconcile::{self, Engine, Setup, Tier};
use homestak_pve::{self as pve, ApiToken, Backoff, RateLimit, RetryPolicy, Trust};
use homestak_sim::faults::{FaultRates, Injected};
use std::collections::BTreeSet;

mod support;
use support::env;

/// The faulty converge may take at most this many times the fault-free one.
const MAX_RATIO: f64 = 3.0;

const MANIFEST: &str = "r2";

/// R2's fault mix.
fn hostile() -> FaultRates {
    FaultRates {
        read_error_rate: 0.10,
        write_error_rate: 0.10,
        error_status: 503,
        reset_rate: 0.05,
        reset_after_rate: 0.05,
        task_failure_rate: 0.05,
        ..FaultRates::default()
    }
}

fn manifest(vms: usize) -> Manifest {
    let mut text = format!("schema_version: 2\nname: {MANIFEST}\nnodes:\n");
    for i in 0..vms {
        text.push_str(&format!(
            "  - {{name: vm-{i:02}, type: vm, preset: vm-small, image: debian-12}}\n"
        ));
    }
    text.push_str("settings:\n  verify_ssh: false\n  on_error: continue\n");
    Manifest::from_yaml_str(&text, Path::new("r2.yaml")).expect("manifest")
}

/// The reconciler's waits at `scale` times their real length.
fn options(scale: f64) -> reconcile::Options {
    let defaults = reconcile::Options::default();
    let timing = homestak_engine::controllers::vm::Timing {
        poll_min: defaults.timing.poll_min.mul_f64(scale),
        poll_max: defaults.timing.poll_max.mul_f64(scale),
        ..defaults.timing.clone()
    };
    let executor = executor::Config {
        backoff_base: defaults.executor.backoff_base.mul_f64(scale),
        backoff_max: defaults.executor.backoff_max.mul_f64(scale),
        ..executor::Config::default()
    };
    reconcile::Options {
        executor,
        timing,
        ..defaults
    }
}

/// The PVE client with its read retries and rate limit scaled like the
/// simulator.
fn client(sim: &homestak_sim::Handle, scale: f64) -> Arc<dyn pve::Api> {
    let token = ApiToken::parse(sim.token()).expect("token");
    let mut config =
        pve::Config::new(sim.url(), token, Trust::Pinned(sim.fingerprint())).expect("config");
    let retry = RetryPolicy::default();
    config.retry = RetryPolicy {
        attempts: retry.attempts,
        backoff: Backoff::new(
            retry.backoff.initial.mul_f64(scale),
            retry.backoff.max.mul_f64(scale),
        ),
    };
    let rate = RateLimit::default();
    config.rate = Some(RateLimit {
        per_second: rate.per_second / scale,
        burst: rate.burst,
    });
    Arc::new(pve::Client::new(config).expect("client"))
}

/// What one converge showed.
struct Converge {
    wall: Duration,
    runs: usize,
    /// What a fault-free plan after the converge would still do.
    unsettled: Vec<String>,
    /// Manifest node → VMs whose marks name it.
    per_node: BTreeMap<String, usize>,
    /// VMs marked for this manifest whose node it does not have.
    strays: usize,
    /// VMs still locked (a create never finished).
    locked: usize,
    vms: usize,
    injected: Injected,
}

impl Converge {
    fn duplicates(&self) -> usize {
        self.per_node.values().map(|n| n.saturating_sub(1)).sum()
    }

    fn missing(&self) -> usize {
        self.per_node.values().filter(|n| **n == 0).count()
    }
}

/// Converges `vms` VMs on a fresh simulator with `faults`: runs until one
/// succeeds (at most `max_runs`), then checks with the faults off that
/// nothing is left to do.
async fn converge(
    vms: usize,
    faults: FaultRates,
    seed: u64,
    scale: f64,
    max_runs: usize,
) -> Result<Converge, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = dir.path().join("site-config");
    support::flat_site(&site);
    let mut config = homestak_sim::Config::with_defaults();
    config.listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.time_scale = scale;
    config.seed = Some(seed);
    config.faults = faults;
    config.work_dir = Some(dir.path().join("sim"));
    let sim = homestak_sim::Simulator::start(config)
        .await
        .expect("simulator starts");
    homestak_sim::site_config::update(&site, &sim.ready_info(), "local-zfs", 22)
        .expect("site-config update");
    let site = Arc::new(Site::load(&site).expect("site loads"));
    let key = reconcile::owner_key(&site).expect("the site's ownership key");
    let engine = Engine::open(Setup {
        state_dir: dir.path().join("state"),
        open_store: true,
        ..Setup::default()
    })
    .expect("engine");
    let tier = Tier {
        api: client(&sim, scale),
        ..engine.tier(site.clone(), "pve").expect("tier")
    };
    let manifest = manifest(vms);
    let options = options(scale);

    let started = Instant::now();
    let mut runs = 0;
    let mut last = String::new();
    loop {
        if runs == max_runs {
            let _ = sim.shutdown().await;
            return Err(format!(
                "not converged after {max_runs} runs; the last: {last}"
            ));
        }
        runs += 1;
        // Planning reads PVE too: under faults it may fail, like a run.
        let planned = match tier.plan(&manifest, &options).await {
            Ok(p) => p,
            Err(err) => {
                last = homestak_base::error_chain(&err);
                continue;
            }
        };
        let report = tier
            .apply(&planned, &options, std::future::pending(), &|_| {})
            .await;
        if report.success() {
            break;
        }
        last = format!("{report:?}");
    }
    let wall = started.elapsed();
    let injected = sim.faults_injected();

    sim.set_faults(FaultRates::default()).expect("faults off");
    let check = tier
        .plan(&manifest, &options)
        .await
        .map_err(|err| homestak_base::error_chain(&err))?;
    let world = sim.world();
    let _ = sim.shutdown().await;
    let unsettled = check
        .plan
        .nodes
        .iter()
        .filter(|n| n.action != homestak_core::plan::Action::NoOp)
        .map(|n| {
            format!(
                "{} {} vmid {}{}",
                n.node,
                n.label(),
                n.vmid.map_or("-".to_string(), |v| v.to_string()),
                n.reason
                    .as_deref()
                    .map_or(String::new(), |r| format!(" ({r})"))
            )
        })
        .collect();
    let mut per_node: BTreeMap<String, usize> =
        (0..vms).map(|i| (format!("vm-{i:02}"), 0)).collect();
    let mut strays = 0;
    for vm in world.vms.values() {
        // Every claim counts, not only verified ones: a second VM with
        // this node's marks is a duplicate whatever it claims.
        let tags: BTreeSet<String> = vm
            .config
            .get("tags")
            .map(|t| t.split(';').map(String::from).collect())
            .unwrap_or_default();
        let claim = VmId::new(vm.vmid.into()).ok().and_then(|vmid| {
            Claim::read(
                &key,
                vmid,
                vm.config.get("description").map(String::as_str),
                &tags,
                vm.is_template(),
            )
        });
        if let Some(marks) = claim.as_ref().map(Claim::marks) {
            if marks.manifest != MANIFEST {
                continue;
            }
            match per_node.get_mut(marks.node.as_str()) {
                Some(n) => *n += 1,
                None => strays += 1,
            }
        }
    }
    Ok(Converge {
        wall,
        runs,
        unsettled,
        per_node,
        strays,
        locked: world.vms.values().filter(|v| v.lock().is_some()).count(),
        vms: world.vms.len(),
        injected,
    })
}

fn main() -> ExitCode {
    homestak_tls::install_crypto_provider();
    // `cargo test --all-targets` runs this binary without `--bench`: the
    // reduced size, one fixed seed; `make reliability-faults` every seed.
    let benching = std::env::args().any(|a| a == "--bench");
    let vms: usize = env("FAULTS_VMS", 12);
    let seeds: u64 = if benching {
        env("FAULTS_SEEDS", 5).max(1)
    } else {
        1
    };
    let scale: f64 = env("FAULTS_TIME_SCALE", 0.05);
    let max_runs: usize = env("FAULTS_MAX_RUNS", 10);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let rates = hostile();
    println!(
        "R2 faults: {vms} VMs, time scale {scale}, {seeds} seed(s); faults: {:.0} % reads and \
         {:.0} % writes answer {}, {:.0} % resets before and {:.0} % after the work, {:.0} % \
         tasks fail",
        rates.read_error_rate * 100.0,
        rates.write_error_rate * 100.0,
        rates.error_status,
        rates.reset_rate * 100.0,
        rates.reset_after_rate * 100.0,
        rates.task_failure_rate * 100.0,
    );
    println!(
        "  {:>4}  {:>10}  {:>10}  {:>6}  {:>4}  {:>10}  {:>6}  {:>6}  injected faults",
        "seed", "clean s", "faulty s", "ratio", "runs", "duplicates", "strays", "missing"
    );
    let mut problems = Vec::new();
    let mut ratios = Vec::new();
    for seed in 1..=seeds {
        let clean = rt.block_on(converge(vms, FaultRates::default(), seed, scale, 1));
        let faulty = rt.block_on(converge(vms, rates.clone(), seed, scale, max_runs));
        let (clean, faulty) = match (clean, faulty) {
            (Ok(c), Ok(f)) => (c, f),
            (Err(err), _) => {
                problems.push(format!(
                    "seed {seed}: the fault-free converge failed: {err}"
                ));
                continue;
            }
            (_, Err(err)) => {
                problems.push(format!("seed {seed}: {err}"));
                continue;
            }
        };
        let ratio = faulty.wall.as_secs_f64() / clean.wall.as_secs_f64();
        ratios.push(ratio);
        let i = faulty.injected;
        println!(
            "  {seed:>4}  {:>10.3}  {:>10.3}  {ratio:>5.2}x  {:>4}  {:>10}  {:>6}  {:>6}  {} \
             (errors {} reads / {} writes, resets {} before / {} after, failed tasks {})",
            clean.wall.as_secs_f64(),
            faulty.wall.as_secs_f64(),
            faulty.runs,
            faulty.duplicates(),
            faulty.strays,
            faulty.missing(),
            i.total(),
            i.read_errors,
            i.write_errors,
            i.resets,
            i.resets_after,
            i.failed_tasks,
        );
        for (what, c) in [("fault-free", &clean), ("faulty", &faulty)] {
            if !c.unsettled.is_empty() {
                problems.push(format!(
                    "seed {seed}, {what}: a run succeeded, but a fault-free plan still has: {}",
                    c.unsettled.join("; ")
                ));
            }
            if c.duplicates() > 0 || c.strays > 0 || c.missing() > 0 || c.locked > 0 {
                problems.push(format!(
                    "seed {seed}, {what}: VMs per node {:?}, {} marked for no node, {} locked, \
                     {} VMs in all",
                    c.per_node, c.strays, c.locked, c.vms
                ));
            }
        }
        if ratio > MAX_RATIO {
            problems.push(format!(
                "seed {seed}: the faulty converge took {ratio:.2}x the fault-free one (at most \
                 {MAX_RATIO}x)"
            ));
        }
        if faulty.injected.resets_after == 0 || faulty.injected.total() == 0 {
            problems.push(format!(
                "seed {seed}: too few faults were injected to prove anything: {:?}",
                faulty.injected
            ));
        }
    }
    if let Some(worst) = ratios.iter().copied().reduce(f64::max) {
        let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
        println!("  ratio: mean {mean:.2}x, worst {worst:.2}x (at most {MAX_RATIO}x)");
    }
    if problems.is_empty() {
        println!("R2 faults: passed");
        ExitCode::SUCCESS
    } else {
        for p in &problems {
            eprintln!("R2 faults: {p}");
        }
        ExitCode::FAILURE
    }
}
