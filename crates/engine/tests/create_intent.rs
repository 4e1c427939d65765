//! A create sent by a process that died before it saw the answer, against
//! the simulator (real HTTPS, PVE's create order): the store holds the
//! create intent, PVE holds the `lock: create` placeholder while the disk
//! imports. The next run follows that create instead of making a second VM,
//! also when the manifest names the vmid (no lasting conflict).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use homestak_api::{Mode, Reason};
use homestak_core::model::Manifest;
use homestak_core::site::Site;
use homestak_engine::controllers::vm::mapping;
use homestak_engine::executor;
use homestak_engine::reconcile::{self, Engine, Request, Setup};
use homestak_engine::store::{CreateIntent, Durability, Timestamp};
use homestak_pve::CreateVm;

use crate::ids::{node_key, vmid};

fn manifest(fixed: Option<u32>) -> Manifest {
    let vmid = fixed.map(|v| format!(", vmid: {v}")).unwrap_or_default();
    let text = format!(
        "schema_version: 2\nname: intent\nnodes:\n\
         - {{name: web, type: vm, preset: small, image: debian-12{vmid}}}\n\
         settings: {{verify_ssh: false}}\n"
    );
    Manifest::from_yaml_str(&text, Path::new("intent.yaml")).unwrap()
}

/// Options for a simulator 100× faster than a real host.
fn options() -> reconcile::Options {
    let mut options = reconcile::Options {
        executor: executor::Config {
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_millis(200),
            ..executor::Config::default()
        },
        ..reconcile::Options::default()
    };
    options.timing.poll_max = Duration::from_millis(200);
    options
}

/// The dead process's create of `at`, sent for `manifest`'s node with
/// the intent recorded first; the simulator keeps the placeholder for about
/// a second.
async fn crash_after_sending(fixed: Option<u32>, at: u32) {
    homestak_tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let site_dir = dir.path().join("site-config");
    crate::lab::small_site(&site_dir);
    let mut config = homestak_sim::Config::with_defaults();
    config.listen = Some("127.0.0.1:0".parse().unwrap());
    config.time_scale = 0.01;
    // 100 simulated seconds before the import: the placeholder is there
    // when the next run looks.
    config.latency.create = 100.0;
    let sim = homestak_sim::Simulator::start(config).await.unwrap();
    homestak_sim::site_config::update(&site_dir, &sim.ready_info(), "local-zfs", 22).unwrap();
    let site = Arc::new(Site::load(&site_dir).unwrap());
    let engine = Engine::open(Setup {
        state_dir: dir.path().join("state"),
        open_store: true,
        ..Setup::default()
    })
    .unwrap();
    let manifest = Arc::new(manifest(fixed));

    // The dead process: intent recorded (flushed), POST sent, then nothing.
    let tier = engine.tier(site.clone(), "pve").unwrap();
    let planned = tier.plan(&manifest, &options()).await.unwrap();
    let want = planned.tier.desired.vms[0].clone();
    let store = engine.store().unwrap();
    store
        .update_node(&node_key("intent", "web"), Durability::Flush, &mut |r| {
            r.vmid = Some(vmid(at));
            r.create_intent = Some(CreateIntent {
                vmid: Some(vmid(at)),
                pve_node: Some(tier.pve_node.clone()),
                recorded: Timestamp::now(),
                name: Some(want.name.clone()),
                spec_hash: Some(want.spec_hash()),
            });
        })
        .unwrap();
    let create = CreateVm {
        vmid: vmid(at),
        options: mapping::create_options(
            "intent",
            &want,
            &tier.host.image_storage,
            &reconcile::owner_key(&site).unwrap(),
            vmid(at),
        ),
        start: None,
        pool: None,
    };
    tier.api.qemu_create(&tier.pve_node, &create).await.unwrap();
    let placeholder = sim.world().vms[&at].config.clone();
    assert_eq!(placeholder.len(), 1, "{placeholder:?}");
    sim.reset_requests();

    // The next process.
    let request = Request {
        manifest,
        host: "pve".into(),
        site,
        revision: None,
        reason: Reason::Cli,
        mode: Mode::Apply,
        options: options(),
        generation: 0,
    };
    let run = engine
        .run_once(request, std::future::pending(), &())
        .await
        .unwrap();
    let report = run.report.expect("the run applied its plan");
    assert!(report.success(), "{report:#?}");

    let world = sim.world();
    let named: Vec<u32> = world
        .vms
        .values()
        .filter(|v| v.config.get("name").map(String::as_str) == Some("web"))
        .map(|v| v.vmid)
        .collect();
    assert_eq!(named, [at], "one VM, where the dead process created it");
    assert_eq!(world.vms.len(), 1);
    let creates = world
        .tasks
        .iter()
        .filter(|t| t.upid.kind == "qmcreate")
        .count();
    assert_eq!(creates, 1);
    let posts = sim
        .requests()
        .get("POST /nodes/{node}/qemu")
        .copied()
        .unwrap_or(0);
    assert_eq!(posts, 0, "the next run sent no create of its own");
    let record = store.get_node(&node_key("intent", "web")).unwrap().unwrap();
    assert_eq!(record.vmid, Some(vmid(at)));
    assert!(record.create_intent.is_none(), "{record:?}");
    drop(engine);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_create_sent_before_a_crash_is_followed_at_the_vmid_pve_picked() {
    crash_after_sending(None, 100).await;
}

#[tokio::test]
async fn a_create_sent_before_a_crash_at_the_manifests_vmid_is_no_conflict() {
    crash_after_sending(Some(4321), 4321).await;
}
