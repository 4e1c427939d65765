//! A storage too slow for many creates at once, against the simulator
//! (real HTTPS, PVE's storage lock: each allocation holds it, a waiter
//! gives up after the lock timeout). Starting from a limit far above what
//! the storage takes, the run meets PVE's storage-lock timeouts, retries
//! them and learns a lower limit: every node converges, none twice.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use homestak_api::{Event, Kind, Mode, Reason};
use homestak_core::model::Manifest;
use homestak_core::site::Site;
use homestak_engine::executor::{self, NodeState, PerStorage};
use homestak_engine::reconcile::{self, Engine, Observer, Request, Setup};

const VMS: usize = 12;

fn manifest() -> Manifest {
    let mut text = String::from("schema_version: 2\nname: locks\nnodes:\n");
    for i in 0..VMS {
        text.push_str(&format!(
            "  - {{name: vm-{i:02}, type: vm, preset: small, image: debian-12}}\n"
        ));
    }
    text.push_str("settings: {verify_ssh: false}\n");
    Manifest::from_yaml_str(&text, Path::new("locks.yaml")).unwrap()
}

/// Keeps the run's events.
#[derive(Default)]
struct Seen(Mutex<Vec<Event>>);

impl Observer for Seen {
    fn progress(&self, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}

#[tokio::test]
async fn a_slow_storage_times_out_some_allocations_and_every_node_converges_once() {
    homestak_tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let site_dir = dir.path().join("site-config");
    crate::lab::small_site(&site_dir);
    let mut config = homestak_sim::Config::with_defaults();
    config.listen = Some("127.0.0.1:0".parse().unwrap());
    config.time_scale = 0.01;
    config.seed = Some(1);
    // Each allocation holds the lock 2 s and a waiter gives up after 6 s:
    // more than three allocations queued at once time out. Twelve creates
    // at once (two allocations each) queue 24.
    config.latency.storage_lock_hold = 2.0;
    config.latency.lock_timeout = 6.0;
    let sim = homestak_sim::Simulator::start(config).await.unwrap();
    homestak_sim::site_config::update(&site_dir, &sim.ready_info(), "local-zfs", 22).unwrap();
    let site = Arc::new(Site::load(&site_dir).unwrap());
    let engine = Engine::open(Setup {
        state_dir: dir.path().join("state"),
        open_store: true,
        ..Setup::default()
    })
    .unwrap();
    let mut options = reconcile::Options {
        executor: executor::Config {
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_millis(200),
            concurrency: VMS,
            per_storage: PerStorage::Learn {
                initial: VMS,
                ceiling: 16,
            },
            ..executor::Config::default()
        },
        ..reconcile::Options::default()
    };
    options.timing.poll_max = Duration::from_millis(200);
    let request = Request {
        manifest: Arc::new(manifest()),
        host: "pve".into(),
        site: site.clone(),
        revision: None,
        reason: Reason::Cli,
        mode: Mode::Apply,
        options,
        generation: 0,
    };
    let seen = Seen::default();
    let run = engine
        .run_once(request, std::future::pending(), &seen)
        .await
        .unwrap();
    let report = run.report.expect("the run applied its plan");

    let failed: Vec<_> = report
        .nodes
        .iter()
        .filter(|(_, s)| !matches!(s, NodeState::Converged))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    let stats = report.storage["local-zfs"];
    assert!(
        stats.lock_timeouts > 0,
        "the storage never timed out: {stats:?}"
    );
    assert!(stats.limit < VMS, "the limit did not come down: {stats:?}");
    let timeouts = seen
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.kind == Kind::StorageLockTimeout)
        .count() as u64;
    assert_eq!(timeouts, stats.lock_timeouts);

    // One VM per node, no placeholder or stray volume left by a failed
    // create, no create intent left in the store.
    let world = sim.world();
    let names: BTreeSet<String> = world
        .vms
        .values()
        .filter_map(|v| v.config.get("name").cloned())
        .collect();
    assert_eq!(world.vms.len(), VMS, "{:?}", world.vms.keys());
    assert_eq!(names.len(), VMS);
    let failed_creates = world
        .tasks
        .iter()
        .filter(|t| t.upid.kind == "qmcreate")
        .filter(|t| t.exitstatus.as_deref().is_some_and(|s| s != "OK"))
        .count() as u64;
    assert!(failed_creates > 0 && failed_creates <= stats.lock_timeouts);
    let zfs = world.storage("pve", "local-zfs").unwrap();
    let owners: BTreeSet<u32> = world.vms.keys().copied().collect();
    for volume in zfs.volumes.keys() {
        let owner: Option<u32> = volume
            .strip_prefix("vm-")
            .and_then(|v| v.split('-').next())
            .and_then(|v| v.parse().ok());
        assert!(
            owner.is_some_and(|o| owners.contains(&o)),
            "stray volume {volume}"
        );
    }
    let store = engine.store().unwrap();
    for (node, record) in store.list_nodes("locks").unwrap() {
        assert!(record.create_intent.is_none(), "{node}: {record:?}");
    }
    // The learned limit is kept for the next run on this host.
    let tier = engine.tier(site, "pve").unwrap();
    let kept: BTreeMap<String, usize> = store.storage_limits(&tier.storage_tier()).unwrap();
    assert_eq!(kept.get("local-zfs"), Some(&stats.limit));
    drop(engine);
    sim.shutdown().await.unwrap();
}
