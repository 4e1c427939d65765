//! One reconciler per PVE host whatever the state directory: two engines
//! with different stores against one simulator take turns through the
//! lease in the node's notes, and the user's notes around it stay.

use crate::lab::write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use homestak_api::{Mode, Outcome, Reason};
use homestak_core::model::Manifest;
use homestak_core::site::Site;
use homestak_engine::hostlease::{self, Held, Policy, Wait};
use homestak_engine::reconcile::{self, Engine, Error, Observer, Request, Setup};
use homestak_pve::{NodeConfigUpdate, PveNode};

const MANIFEST: &str = "schema_version: 2\nname: lease\nnodes:\n\
    - {name: a, type: vm, preset: small, image: debian-12, vmid: 4200}\n\
    settings: {verify_ssh: false}\n";

const USER_NOTES: &str = "Rack 2, shelf 3.\n\nDo not reboot: the NAS mounts from here.\n";

/// Hears the lease waits of a run.
#[derive(Default)]
struct Waits(Mutex<Vec<String>>);

impl Observer for Waits {
    fn lease_wait(&self, held: &Held) {
        self.0.lock().unwrap().push(held.holder());
    }
}

struct World {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    site: Arc<Site>,
    sim: homestak_sim::Handle,
}

async fn world(time_scale: f64) -> World {
    homestak_tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let site_dir = dir.path().join("site-config");
    write(
        &site_dir.join("site.yaml"),
        "defaults: {automation_user: homestak}\n",
    );
    write(
        &site_dir.join("secrets.yaml"),
        "ssh_keys:\n  me: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@example\n",
    );
    write(
        &site_dir.join("v2/presets/small.yaml"),
        "cores: 1\nmemory: 1024\ndisk: 8\n",
    );
    let mut config = homestak_sim::Config::with_defaults();
    config.listen = Some("127.0.0.1:0".parse().unwrap());
    config.time_scale = time_scale;
    let sim = homestak_sim::Simulator::start(config).await.unwrap();
    homestak_sim::site_config::update(&site_dir, &sim.ready_info(), "local-zfs", 22).unwrap();
    World {
        root: dir.path().to_path_buf(),
        site: Arc::new(Site::load(&site_dir).unwrap()),
        _dir: dir,
        sim,
    }
}

/// An engine with its own state directory, holding leases as `policy`.
fn engine(world: &World, name: &str, policy: Policy) -> Engine {
    Engine::open(Setup {
        state_dir: world.root.join(name),
        open_store: true,
        lease: policy,
        ..Setup::default()
    })
    .unwrap()
}

fn request(world: &World, wait: Wait) -> Request {
    Request {
        manifest: Arc::new(Manifest::from_yaml_str(MANIFEST, Path::new("lease.yaml")).unwrap()),
        host: "pve".into(),
        site: world.site.clone(),
        revision: None,
        reason: Reason::Cli,
        mode: Mode::Apply,
        options: reconcile::Options {
            lease: Some(wait),
            ..reconcile::Options::default()
        },
        generation: 0,
    }
}

fn daemon_policy() -> Policy {
    Policy {
        hold: true,
        command: "serve".into(),
        ..Policy::default()
    }
}

fn command_policy() -> Policy {
    Policy {
        command: "reconcile".into(),
        ..Policy::default()
    }
}

/// The node's notes, read through the engine's client.
async fn notes(engine: &Engine, world: &World) -> String {
    let tier = engine.tier(world.site.clone(), "pve").unwrap();
    tier.api
        .node_config(&PveNode::new("pve").unwrap())
        .await
        .unwrap()
        .description
        .unwrap_or_default()
}

#[tokio::test]
async fn a_second_homestak_with_its_own_state_dir_waits_or_fails_naming_the_holder() {
    let world = world(0.01).await;
    let daemon = engine(&world, "root-state", daemon_policy());
    // The user's notes on the node, written before any homestak came.
    let tier = daemon.tier(world.site.clone(), "pve").unwrap();
    tier.api
        .node_config_put(
            &PveNode::new("pve").unwrap(),
            &NodeConfigUpdate {
                description: Some(USER_NOTES.into()),
                ..NodeConfigUpdate::default()
            },
        )
        .await
        .unwrap();

    // The "daemon" converges and keeps the lease while it serves.
    let run = daemon
        .run_once(request(&world, Wait::No), std::future::pending(), &())
        .await
        .unwrap();
    assert_eq!(run.outcome, Outcome::Converged, "{:?}", run.message);

    // Another user's `reconcile --once --no-wait`, its own state dir.
    let other = engine(&world, "user-state", command_policy());
    let err = other
        .run_once(request(&world, Wait::No), std::future::pending(), &())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(&err, Error::HostLease(held) if matches!(**held, hostlease::Error::Held { .. })),
        "{text}"
    );
    let root_state = world.root.join("root-state").display().to_string();
    for part in [
        "host pve is being converged by another homestak",
        "`serve`",
        &format!("pid {}", std::process::id()),
        &format!("state dir {root_state}"),
    ] {
        assert!(text.contains(part), "{part:?} missing in: {text}");
    }

    // Waiting: told who holds it, then gives up after the timeout.
    let waits = Waits::default();
    let err = other
        .run_once(
            request(&world, Wait::For(Duration::from_millis(500))),
            std::future::pending(),
            &waits,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("still after waiting"), "{err}");
    let heard = waits.0.lock().unwrap().clone();
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert!(heard[0].contains(&root_state), "{heard:?}");

    // The notes show the holder, after the user's text.
    let held = notes(&daemon, &world).await;
    assert!(held.starts_with(USER_NOTES), "{held}");
    assert!(
        held.contains("lease: held") && held.contains("command: serve"),
        "{held}"
    );

    // The daemon stops: the lease goes back, and the other one converges
    // (adopting the VM, no second one).
    daemon.release_leases().await;
    let run = other
        .run_once(request(&world, Wait::No), std::future::pending(), &())
        .await
        .unwrap();
    assert_eq!(run.outcome, Outcome::Converged, "{:?}", run.message);
    assert_eq!(world.sim.world().vms.len(), 1);

    // A command gives the lease back when its run ends; the notes keep
    // the user's text exactly, with the block marked free.
    let after = notes(&other, &world).await;
    assert!(after.starts_with(USER_NOTES), "{after}");
    assert!(
        after.contains("lease: free") && after.contains("command: reconcile"),
        "{after}"
    );
    let _ = world.sim.shutdown().await;
}

#[tokio::test]
async fn a_run_in_flight_keeps_the_other_one_waiting_until_it_ends() {
    // Slow enough that the first run is still converging when the second
    // one asks.
    let world = world(0.2).await;
    let first = engine(&world, "first", command_policy());
    let second = engine(&world, "second", command_policy());
    let waits = Waits::default();
    let (a, b) = tokio::join!(
        first.run_once(request(&world, Wait::No), std::future::pending(), &()),
        async {
            // Once the first one holds the lease.
            while !notes(&second, &world).await.contains("lease: held") {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            second
                .run_once(
                    request(&world, Wait::For(Duration::from_secs(120))),
                    std::future::pending(),
                    &waits,
                )
                .await
        }
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        (a.outcome, b.outcome),
        (Outcome::Converged, Outcome::Converged)
    );
    let heard = waits.0.lock().unwrap().clone();
    assert_eq!(
        heard.len(),
        1,
        "the second run waited for the first: {heard:?}"
    );
    assert!(heard[0].contains("`reconcile`"), "{heard:?}");
    // One after the other: the second found (and adopted) the VM the
    // first made, and made none of its own.
    assert_eq!(world.sim.world().vms.len(), 1);
    let _ = world.sim.shutdown().await;
}

#[tokio::test]
async fn plans_and_reports_take_no_lease() {
    let world = world(0.01).await;
    let daemon = engine(&world, "root-state", daemon_policy());
    daemon
        .run_once(request(&world, Wait::No), std::future::pending(), &())
        .await
        .unwrap();
    let other = engine(&world, "user-state", command_policy());
    // `homestak plan` (no lease asked, stops once planned) and a drift
    // report run beside it.
    struct PlanOnly;
    impl Observer for PlanOnly {
        fn planned(&self, _planned: &reconcile::Planned) -> bool {
            false
        }
    }
    let mut plan = request(&world, Wait::No);
    plan.options.lease = None;
    let run = other
        .run_once(plan, std::future::pending(), &PlanOnly)
        .await
        .unwrap();
    assert!(run.report.is_none(), "stopped once planned");
    let mut report = request(&world, Wait::No);
    report.mode = Mode::ReportOnly;
    let run = other
        .run_once(report, std::future::pending(), &())
        .await
        .unwrap();
    assert!(run.status.is_some());
    daemon.release_leases().await;
    let _ = world.sim.shutdown().await;
}
