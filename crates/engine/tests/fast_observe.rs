//! The fast observe against the simulator: what it reads, what it cannot
//! see (a config edit that leaves `/cluster/resources` as it was) and
//! what `--deep` sees; records of an older homestak (no summary) fall back
//! to config reads.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use homestak_api::status::State;
use homestak_api::{Mode, Reason, Status};
use homestak_core::model::Manifest;
use homestak_core::site::Site;
use homestak_engine::executor;
use homestak_engine::reconcile::{self, Engine, Request, Setup};
use homestak_engine::store::Durability;
use homestak_pve::{ConfigUpdate, IpConfig, VmOptions};
use homestak_sim::{Handle, Simulator};

use crate::ids::{node_key, vmid};

const CONFIG_READ: &str = "GET /nodes/{node}/qemu/{vmid}/config";
const NODES: [(&str, u32); 3] = [("fa", 99451), ("fb", 99452), ("fc", 99453)];

struct Lab {
    _dir: tempfile::TempDir,
    sim: Handle,
    site: Arc<Site>,
    engine: Engine,
    manifest: Arc<Manifest>,
}

impl Lab {
    /// A simulator, and the three VMs of [`NODES`] converged.
    async fn converged() -> Lab {
        homestak_tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let site_dir = dir.path().join("site-config");
        crate::lab::small_site(&site_dir);
        let mut config = homestak_sim::Config::with_defaults();
        config.listen = Some("127.0.0.1:0".parse().unwrap());
        config.time_scale = 0.01;
        let sim = Simulator::start(config).await.unwrap();
        homestak_sim::site_config::update(&site_dir, &sim.ready_info(), "local-zfs", 22).unwrap();
        let site = Arc::new(Site::load(&site_dir).unwrap());
        let engine = Engine::open(Setup {
            state_dir: dir.path().join("state"),
            open_store: true,
            ..Setup::default()
        })
        .unwrap();
        let mut text = "schema_version: 2\nname: fast\nnodes:\n".to_string();
        for (node, id) in NODES {
            text.push_str(&format!(
                "- {{name: {node}, type: vm, preset: small, image: debian-12, vmid: {id}}}\n"
            ));
        }
        text.push_str("settings: {verify_ssh: false}\n");
        let manifest = Arc::new(Manifest::from_yaml_str(&text, Path::new("m.yaml")).unwrap());
        let lab = Lab {
            _dir: dir,
            sim,
            site,
            engine,
            manifest,
        };
        lab.reconcile(false).await;
        lab
    }

    async fn reconcile(&self, deep: bool) -> reconcile::RunOutcome {
        let mut options = reconcile::Options {
            executor: executor::Config {
                backoff_base: Duration::from_millis(20),
                backoff_max: Duration::from_millis(200),
                ..executor::Config::default()
            },
            deep,
            ..reconcile::Options::default()
        };
        options.timing.poll_max = Duration::from_millis(200);
        let request = Request {
            manifest: self.manifest.clone(),
            host: "pve".into(),
            site: self.site.clone(),
            revision: None,
            reason: Reason::Cli,
            mode: Mode::Apply,
            options,
            generation: 0,
        };
        let run = self
            .engine
            .run_once(request, std::future::pending(), &())
            .await
            .unwrap();
        assert!(run.report.as_ref().unwrap().success(), "{run:#?}");
        run
    }

    /// A status, and the config reads it made.
    async fn status(&self, deep: bool) -> (Status, u64) {
        self.sim.reset_requests();
        let status = self
            .engine
            .status(self.site.clone(), &self.manifest, "pve", deep)
            .await
            .unwrap();
        assert_eq!(status.deep, deep, "the report says how it observed");
        let requests = self.sim.requests();
        assert_eq!(requests.get("GET /cluster/resources"), Some(&1));
        let writes = requests.keys().filter(|k| !k.starts_with("GET ")).count();
        assert_eq!(writes, 0, "{requests:?}");
        (status, requests.get(CONFIG_READ).copied().unwrap_or(0))
    }
}

fn state_of(status: &Status, node: &str) -> State {
    status
        .nodes
        .iter()
        .find(|n| n.node.as_str() == node)
        .unwrap()
        .state
}

/// `ipconfig0` is not in `/cluster/resources`: the fast path keeps what
/// it saw, the deep observe reports the drift, and a deep reconcile puts
/// it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_only_edit_is_seen_by_the_deep_observe() {
    let lab = Lab::converged().await;
    let (status, reads) = lab.status(false).await;
    assert!(status.in_sync, "{status:#?}");
    assert_eq!(reads, 0);

    // Behind homestak's back: a static address instead of DHCP.
    let tier = lab.engine.tier(lab.site.clone(), "pve").unwrap();
    let update = ConfigUpdate {
        options: VmOptions {
            ipconfigs: vec![(0, IpConfig::static_v4("10.9.9.9/24", None))],
            ..VmOptions::default()
        },
        ..ConfigUpdate::default()
    };
    tier.api
        .qemu_config_put(&tier.pve_node, vmid(99452), &update)
        .await
        .unwrap();

    let (status, reads) = lab.status(false).await;
    assert!(status.in_sync, "the fast path cannot see ipconfig0");
    assert_eq!(reads, 0);
    let (status, reads) = lab.status(true).await;
    assert_eq!(reads, NODES.len() as u64);
    assert_eq!(state_of(&status, "fb"), State::Drifted, "{status:#?}");
    let fb = status
        .nodes
        .iter()
        .find(|n| n.node.as_str() == "fb")
        .unwrap();
    let fields: Vec<String> = fb.changes.iter().map(|c| c.field.to_string()).collect();
    assert_eq!(fields, ["ip"]);
    assert_eq!(state_of(&status, "fa"), State::InSync);

    // A fast reconcile leaves it; a deep one puts it back.
    let run = lab.reconcile(false).await;
    assert_eq!(run.changed_nodes, 0);
    let run = lab.reconcile(true).await;
    assert_eq!(run.changed_nodes, 1);
    let (status, reads) = lab.status(true).await;
    assert!(status.in_sync, "{status:#?}");
    assert_eq!(reads, NODES.len() as u64);
    assert_eq!(lab.status(false).await.1, 0);
}

/// Records written before the summary existed read as none: each such VM
/// is read in full once, then recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_without_a_summary_read_the_config() {
    let lab = Lab::converged().await;
    let store = lab.engine.store().unwrap().clone();
    for (node, _) in NODES {
        let key = node_key("fast", node);
        let record = store.get_node(&key).unwrap().unwrap();
        assert!(record.seen.is_some(), "a converge records what it saw");
        // As an older homestak wrote it: no `seen` key at all.
        let mut json = serde_json::to_value(&record).unwrap();
        json.as_object_mut().unwrap().remove("seen");
        let old: homestak_engine::store::NodeRecord = serde_json::from_value(json).unwrap();
        assert!(old.seen.is_none());
        store
            .update_node(&key, Durability::Flush, &mut |r| r.seen = old.seen.clone())
            .unwrap();
    }
    let (status, reads) = lab.status(false).await;
    assert!(status.in_sync, "{status:#?}");
    assert_eq!(reads, NODES.len() as u64);
    let (status, reads) = lab.status(false).await;
    assert!(status.in_sync);
    assert_eq!(reads, 0, "the first status recorded what it saw");
}
