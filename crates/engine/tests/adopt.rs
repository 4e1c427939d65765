//! `homestak adopt` against the simulator: VMs made without homestak's
//! marks (by the Python iac-driver's OpenTofu, or by hand) whose name and
//! vmid match a manifest node are taken over; only their tags and
//! description change; the next plan sees them as ours.

use crate::lab::write;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use homestak_api::{Mode, Reason};
use homestak_core::model::Manifest;
use homestak_core::plan::Action;
use homestak_core::site::Site;
use homestak_engine::adopt::{self, AppliedResult, Verdict};
use homestak_engine::executor;
use homestak_engine::reconcile::{self, Engine, Request, Setup, Tier};
use homestak_sim::{Handle, Simulator};
use serde_json::{Value, json};

use crate::ids::{node_key, vmid};

/// A manifest `name` with `nodes` given as `(node, vmid)`.
fn manifest(name: &str, nodes: &[(&str, Option<u32>)]) -> Arc<Manifest> {
    let mut text = format!("schema_version: 2\nname: {name}\nnodes:\n");
    for (node, id) in nodes {
        let id = id.map(|v| format!(", vmid: {v}")).unwrap_or_default();
        text.push_str(&format!(
            "- {{name: {node}, type: vm, preset: small, image: debian-12{id}}}\n"
        ));
    }
    text.push_str("settings: {verify_ssh: false}\n");
    Arc::new(Manifest::from_yaml_str(&text, Path::new("m.yaml")).unwrap())
}

struct Lab {
    _dir: tempfile::TempDir,
    sim: Handle,
    site: Arc<Site>,
    engine: Engine,
    http: reqwest::Client,
}

impl Lab {
    async fn start() -> Lab {
        homestak_tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let site_dir = dir.path().join("site-config");
        write(
            &site_dir.join("site.yaml"),
            "defaults: {automation_user: homestak, bridge: vmbr0}\n",
        );
        write(
            &site_dir.join("secrets.yaml"),
            "api_tokens: {}\nssh_keys: {}\n",
        );
        write(
            &site_dir.join("v2/presets/small.yaml"),
            "cores: 2\nmemory: 2048\ndisk: 8\n",
        );
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
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(homestak_tls::pinned_client_config(sim.fingerprint()))
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Lab {
            _dir: dir,
            sim,
            site,
            engine,
            http,
        }
    }

    fn tier(&self) -> Tier {
        self.engine.tier(self.site.clone(), "pve").unwrap()
    }

    /// A `/_sim` control request.
    async fn control(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let response = self
            .http
            .request(method, format!("{}/_sim{path}", self.sim.url()))
            .header("Authorization", format!("PVEAPIToken={}", self.sim.token()))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let json: Value = response.json().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {json}");
        json["data"].clone()
    }

    /// A VM as the Python tool's OpenTofu leaves one: no homestak marks.
    async fn foreign(&self, body: Value) {
        self.control(reqwest::Method::POST, "/vms", body).await;
    }

    fn config(&self, id: u32) -> BTreeMap<String, String> {
        self.sim.world().vms[&id].config.clone()
    }

    async fn reconcile(&self, manifest: &Arc<Manifest>) {
        let mut options = reconcile::Options {
            executor: executor::Config {
                backoff_base: Duration::from_millis(20),
                backoff_max: Duration::from_millis(200),
                ..executor::Config::default()
            },
            ..reconcile::Options::default()
        };
        options.timing.poll_max = Duration::from_millis(200);
        let request = Request {
            manifest: manifest.clone(),
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
        let report = run.report.expect("the run applied its plan");
        assert!(report.success(), "{report:#?}");
    }
}

fn no_lease() -> reconcile::Options {
    reconcile::Options {
        lease: None,
        ..reconcile::Options::default()
    }
}

/// The config without the two keys adoption writes.
fn untouched(mut config: BTreeMap<String, String>) -> BTreeMap<String, String> {
    config.remove("tags");
    config.remove("description");
    config
}

#[tokio::test]
async fn a_vm_that_lost_its_marks_is_adopted_and_then_in_sync() {
    let lab = Lab::start().await;
    let m = manifest("lost", &[("web", Some(4200))]);
    lab.reconcile(&m).await;
    // The store lost, the marks wiped by hand: a VM homestak cannot tell
    // from someone else's.
    let store = lab.engine.store().unwrap();
    store
        .delete_node(
            &node_key("lost", "web"),
            homestak_engine::store::Durability::Flush,
        )
        .unwrap();
    lab.control(
        reqwest::Method::PATCH,
        "/vms/4200",
        json!({"tags": "", "description": "kept by hand"}),
    )
    .await;
    let tier = lab.tier();
    let before = tier.plan(&m, &no_lease()).await.unwrap();
    assert_eq!(before.plan.nodes[0].action, Action::Conflict);
    let reason = before.plan.nodes[0].reason.clone().unwrap();
    assert!(reason.contains("homestak adopt -M lost -H pve"), "{reason}");
    let config_before = lab.config(4200);

    let plan = adopt::plan_adoption(&tier, &m).await.unwrap();
    assert_eq!(plan.rows.len(), 1);
    let row = &plan.rows[0];
    assert_eq!(row.verdict, Verdict::Adopt, "{row:?}");
    assert!(row.then.is_empty(), "{:?}", row.then);
    assert!(row.cloud_init_differs.is_empty(), "{row:?}");
    let applied = adopt::apply(&tier, &plan).await;
    assert_eq!(applied.len(), 1);
    assert_eq!(applied[0].result, AppliedResult::Adopted);

    let config_after = lab.config(4200);
    assert_eq!(untouched(config_after.clone()), untouched(config_before));
    let description = &config_after["description"];
    assert!(description.starts_with("kept by hand\n\n"), "{description}");
    assert!(description.contains("homestak.owner: v1:"), "{description}");
    let record = store.get_node(&node_key("lost", "web")).unwrap().unwrap();
    assert_eq!(record.vmid, Some(vmid(4200)));

    let after = tier.plan(&m, &no_lease()).await.unwrap();
    assert_eq!(after.plan.nodes.len(), 1, "{:?}", after.plan);
    assert_eq!(after.plan.nodes[0].action, Action::NoOp, "{:?}", after.plan);
    // Adopting again finds it ours and writes nothing.
    let again = adopt::plan_adoption(&tier, &m).await.unwrap();
    assert_eq!(again.rows[0].verdict, Verdict::Owned);
    lab.sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_foreign_vm_is_adopted_and_keeps_only_its_real_drift() {
    let lab = Lab::start().await;
    lab.foreign(json!({
        "vmid": 4300, "name": "web", "cores": 4, "memory": 2048,
        "tags": "prod;tofu", "description": "Managed by OpenTofu", "running": true,
        "disk_size": "8G"
    }))
    .await;
    let m = manifest("tofu", &[("web", Some(4300))]);
    let tier = lab.tier();
    let config_before = lab.config(4300);
    let plan = adopt::plan_adoption(&tier, &m).await.unwrap();
    let row = &plan.rows[0];
    assert_eq!(row.verdict, Verdict::Adopt, "{row:?}");
    assert_eq!(row.add_tags.len(), 2, "{row:?}");
    assert!(row.add_tags.contains(&"homestak".to_string()));
    // The tofu VM holds no cloud-init user or keys of the manifest's.
    assert!(row.cloud_init_differs.contains(&"ciuser".to_string()));
    assert!(!row.then.is_empty());
    let applied = adopt::apply(&tier, &plan).await;
    assert_eq!(applied[0].result, AppliedResult::Adopted);

    let config_after = lab.config(4300);
    assert_eq!(untouched(config_after.clone()), untouched(config_before));
    let tags: Vec<&str> = config_after["tags"].split(';').collect();
    assert!(tags.contains(&"prod") && tags.contains(&"tofu"), "{tags:?}");
    assert!(config_after["description"].starts_with("Managed by OpenTofu\n\n"));

    let after = tier.plan(&m, &no_lease()).await.unwrap();
    let node = &after.plan.nodes[0];
    assert_eq!(node.action, Action::Update, "{node:?}");
    assert_eq!(node.changes, row.then, "the drift adopt predicted");
    lab.sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn vms_that_are_not_the_nodes_are_refused_and_left_alone() {
    let lab = Lab::start().await;
    // Already homestak's, under another manifest.
    lab.reconcile(&manifest("first", &[("owned", Some(4400))]))
        .await;
    lab.foreign(json!({"vmid": 4401, "name": "someone-else", "running": true}))
        .await;
    lab.foreign(json!({"vmid": 4402, "name": "tmpl", "template": true}))
        .await;
    lab.foreign(json!({"vmid": 4403, "name": "loose", "running": true}))
        .await;
    let m = manifest(
        "second",
        &[
            ("owned", Some(4400)),
            ("named", Some(4401)),
            ("tmpl", Some(4402)),
            ("loose", None),
            ("fresh", Some(4404)),
        ],
    );
    let world_before = lab.sim.world().vms;
    let tier = lab.tier();
    let plan = adopt::plan_adoption(&tier, &m).await.unwrap();
    let why = |node: &str| match &plan
        .rows
        .iter()
        .find(|r| r.node.as_str() == node)
        .unwrap()
        .verdict
    {
        Verdict::Refused { why } => why.clone(),
        other => panic!("{node}: {other:?}"),
    };
    assert!(why("owned").contains("manifest first"), "{}", why("owned"));
    assert!(why("named").contains("not named"), "{}", why("named"));
    assert!(why("tmpl").contains("template"), "{}", why("tmpl"));
    assert!(why("loose").contains("vmid: 4403"), "{}", why("loose"));
    let fresh = plan
        .rows
        .iter()
        .find(|r| r.node.as_str() == "fresh")
        .unwrap();
    assert_eq!(fresh.verdict, Verdict::Absent);
    assert_eq!(plan.to_adopt().count(), 0);
    assert!(adopt::apply(&tier, &plan).await.is_empty());
    let world_after = lab.sim.world().vms;
    for (id, vm) in &world_before {
        assert_eq!(world_after[id].config, vm.config, "vmid {id} changed");
    }
    lab.sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_digest_race_is_read_again_and_judged_again() {
    let lab = Lab::start().await;
    for id in [4500, 4501] {
        lab.foreign(json!({"vmid": id, "name": format!("web{id}"), "running": true}))
            .await;
    }
    let m = manifest("race", &[("web4500", Some(4500)), ("web4501", Some(4501))]);
    let tier = lab.tier();
    let plan = adopt::plan_adoption(&tier, &m).await.unwrap();
    let want = |id: u32| {
        let desired = reconcile::desired::resolve(&lab.site, &m, "pve").unwrap();
        desired
            .desired
            .vms
            .into_iter()
            .find(|v| v.vmid == Some(vmid(id)))
            .unwrap()
    };

    // A concurrent change the adoption must not overwrite.
    let old = stale(&tier, 4500).await;
    lab.control(reqwest::Method::PATCH, "/vms/4500", json!({"cores": 3}))
        .await;
    lab.sim.reset_requests();
    let result = adopt::adopt_vm(&tier, "race", &want(4500), &tier.pve_node, vmid(4500), old).await;
    assert_eq!(result, AppliedResult::Adopted);
    let puts = lab.sim.requests()["PUT /nodes/{node}/qemu/{vmid}/config"];
    assert_eq!(puts, 2, "the stale write lost the race, the second one won");
    let config = lab.config(4500);
    assert_eq!(config["cores"], "3", "the concurrent change is kept");
    assert!(config["description"].contains("homestak.vmid: 4500"));

    // A concurrent rename: judged again, no longer the node's VM.
    let old = stale(&tier, 4501).await;
    lab.control(
        reqwest::Method::PATCH,
        "/vms/4501",
        json!({"name": "renamed"}),
    )
    .await;
    let before = lab.config(4501);
    let result = adopt::adopt_vm(&tier, "race", &want(4501), &tier.pve_node, vmid(4501), old).await;
    assert!(
        matches!(&result, AppliedResult::Refused { why } if why.contains("renamed")),
        "{result:?}"
    );
    assert_eq!(lab.config(4501), before);
    assert_eq!(plan.to_adopt().count(), 2);
    lab.sim.shutdown().await.unwrap();
}

/// The config as read before a concurrent change.
async fn stale(tier: &Tier, id: u32) -> homestak_pve::VmConfig {
    tier.api
        .qemu_config(&tier.pve_node, vmid(id))
        .await
        .unwrap()
}
