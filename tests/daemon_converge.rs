//! GitOps end to end: a manifest change committed in a git site-config is
//! converged by the daemon (real engine) against the simulator, and
//! `homestak status` then shows it in sync. Prints the time from commit to
//! converged (a figure, not an assertion: performance is for benchmarks).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::daemon_support::*;
use homestak_core::site::Secret;
use homestak_daemon::auth::{ApiTokens, Scope};
use homestak_daemon::converge::ConvergeEngine;
use homestak_daemon::server::ApiTokenSource;
use homestak_engine::reconcile::Setup;
use serde_json::Value;

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

const VALID_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@test";
const ONE: &str = "schema_version: 2\nname: demo\nnodes:\n  - {name: edge, type: vm, preset: vm-small, image: debian-12, vmid: 99001}\nsettings: {verify_ssh: false}\n";
const TWO: &str = "schema_version: 2\nname: demo\nnodes:\n  - {name: edge, type: vm, preset: vm-small, image: debian-12, vmid: 99001}\n  - {name: extra, type: vm, preset: vm-small, image: debian-12, vmid: 99002}\nsettings: {verify_ssh: false}\n";

/// The demo manifest's status from `GET /v1/status` (`Null` until the
/// daemon has read the site-config).
async fn demo_status(d: &Running) -> Value {
    let (code, text) = d.get("/v1/status?manifest=demo", Some(READ_TOKEN)).await;
    if code == 404 {
        return Value::Null;
    }
    assert_eq!(code, 200, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    body["manifests"][0].clone()
}

/// Waits (hang guard 60 s) until the demo manifest is in sync with `nodes`
/// nodes and the daemon recorded `revision` as applied.
pub async fn wait_in_sync(d: &Running, nodes: usize, revision: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = demo_status(d).await;
        let count = status["status"]["nodes"].as_array().map_or(0, Vec::len);
        let applied = status["last_applied"]["revision"].as_str() == Some(revision);
        if status["in_sync"] == Value::Bool(true) && count == nodes && applied {
            return status;
        }
        if Instant::now() >= deadline {
            let (_, events) = d.get("/v1/events", Some(READ_TOKEN)).await;
            panic!("not converged within the hang guard: {status:#}\nevents: {events}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The simulator, and a daemon (real engine) on it converging the
/// committed git site-config in `site` (one VM, `demo.yaml`, watched)
/// with its state in `state`.
pub async fn converging_on_the_simulator(
    site: &Path,
    state: &Path,
) -> (homestak_sim::Handle, Running) {
    converging_with(site, state, |_| {}).await
}

/// As [`converging_on_the_simulator`], with `tweak` applied to the
/// daemon's configuration.
pub async fn converging_with(
    site: &Path,
    state: &Path,
    tweak: impl FnOnce(&mut homestak_daemon::server::Config),
) -> (homestak_sim::Handle, Running) {
    homestak_tls::install_crypto_provider();
    site_config(site);

    let mut sim_config = homestak_sim::Config::with_defaults();
    sim_config.listen = Some("127.0.0.1:0".parse().unwrap());
    sim_config.time_scale = 0.01;
    let sim = homestak_sim::Simulator::start(sim_config).await.unwrap();
    homestak_sim::site_config::update(site, &sim.ready_info(), "local-zfs", 22).unwrap();
    // PVE validates cloud-init keys: give the VMs a well-formed one.
    let secrets = std::fs::read_to_string(site.join("secrets.yaml")).unwrap();
    write(site, "secrets.yaml", &secrets.replace(SSH_KEY, VALID_KEY));
    write(
        site,
        "v2/presets/vm-small.yaml",
        "cores: 1\nmemory: 1024\ndisk: 8\n",
    );
    write(site, "manifests/demo.yaml", ONE);
    write(
        site,
        "controller.yaml",
        "host: pve\nmanifests:\n  demo: {}\n",
    );
    git(site, &["add", "-A"]);
    git(site, &["commit", "-q", "-m", "target the simulator"]);

    let mut config = config(site, state);
    // As `homestak serve` keeps them: the tokens file and the token it
    // generated beside it, which `homestak status` uses to ask the daemon.
    write(
        state,
        "api-tokens.yaml",
        &ApiTokens::file_text("reader", Scope::Read, &Secret::new(READ_TOKEN)),
    );
    write(state, "api-token", READ_TOKEN);
    config.api_tokens = ApiTokenSource::Default;
    config.watch = true;
    config.debounce = Duration::from_millis(100);
    tweak(&mut config);
    let engine = Arc::new(
        ConvergeEngine::open(Setup {
            state_dir: state.to_path_buf(),
            ..Setup::default()
        })
        .unwrap(),
    );
    (sim, start(config, engine).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_change_converges_and_status_is_in_sync() {
    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (sim, d) = converging_on_the_simulator(site.path(), state.path()).await;

    let head = git(site.path(), &["rev-parse", "HEAD"]);
    let first = wait_in_sync(&d, 1, &head).await;
    assert_eq!(first["status"]["nodes"][0]["node"], "edge");

    // The change: a second VM, committed.
    write(site.path(), "manifests/demo.yaml", TWO);
    git(site.path(), &["commit", "-q", "-am", "add extra"]);
    let committed = Instant::now();
    let new_head = git(site.path(), &["rev-parse", "HEAD"]);
    let second = wait_in_sync(&d, 2, &new_head).await;
    let elapsed = committed.elapsed();
    println!(
        "commit to converged (debounce 100 ms, time scale 0.01): {:.3} s",
        elapsed.as_secs_f64()
    );
    let new_head = git(site.path(), &["rev-parse", "HEAD"]);
    assert_ne!(head, new_head);
    assert_eq!(
        second["last_applied"]["revision"],
        Value::String(new_head.clone())
    );

    // The world really has both VMs, once each, owned by homestak.
    let world = sim.world();
    assert_eq!(world.vms.len(), 2, "{:?}", world.vms.keys());
    for (vmid, name) in [(99001, "edge"), (99002, "extra")] {
        let vm = world
            .vms
            .get(&vmid)
            .unwrap_or_else(|| panic!("vmid {vmid} missing"));
        assert_eq!(vm.config.get("name").map(String::as_str), Some(name));
        let tags = vm.config.get("tags").cloned().unwrap_or_default();
        assert!(
            tags.split(';').any(|t| t == "homestak"),
            "{vmid} not tagged: {tags}"
        );
    }

    // `homestak status` (the CLI) agrees while the daemon holds the store.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_homestak"))
        .arg("--site-config")
        .arg(site.path())
        .args(["status", "-M", "demo", "-H", "pve", "--json"])
        .env("HOMESTAK_STATE_DIR", state.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "status: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["in_sync"], Value::Bool(true));
    assert_eq!(report["nodes"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        report["last_applied_commit"],
        Value::String(new_head.clone()),
        "status shows the commit the daemon applied"
    );

    d.stop().await.unwrap();
    let _ = sim.shutdown().await;
}

/// An edit the fast observe cannot see (`ipconfig0` is not in
/// `/cluster/resources`) is found and put back by the daemon's deep
/// check, every Nth resync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deep_resync_finds_a_config_only_edit() {
    use homestak_pve::{self as pve, Api as _};
    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (sim, d) = converging_with(site.path(), state.path(), |config| {
        config.resync = Duration::from_millis(200);
        config.deep_every = 3;
    })
    .await;
    let head = git(site.path(), &["rev-parse", "HEAD"]);
    wait_in_sync(&d, 1, &head).await;
    let ipconfig =
        |sim: &homestak_sim::Handle| sim.world().vms[&99001].config.get("ipconfig0").cloned();
    let converged = ipconfig(&sim);
    assert!(converged.is_some());

    let info = sim.ready_info();
    let token = pve::ApiToken::parse(&info.token).unwrap();
    let trust = pve::Trust::Pinned(info.fingerprint.parse().unwrap());
    let client = pve::Client::new(pve::Config::new(&info.url, token, trust).unwrap()).unwrap();
    let update = pve::ConfigUpdate {
        options: pve::VmOptions {
            ipconfigs: vec![(0, pve::IpConfig::static_v4("10.9.9.9/24", None))],
            ..pve::VmOptions::default()
        },
        ..pve::ConfigUpdate::default()
    };
    let node: homestak_base::id::PveNode = sim.node().parse().unwrap();
    let vmid = homestak_base::id::VmId::new(99001).unwrap();
    client.qemu_config_put(&node, vmid, &update).await.unwrap();
    assert_ne!(ipconfig(&sim), converged);

    let deadline = Instant::now() + Duration::from_secs(60);
    while ipconfig(&sim) != converged {
        assert!(
            Instant::now() < deadline,
            "the deep resync never put ipconfig0 back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.stop().await.unwrap();
}
