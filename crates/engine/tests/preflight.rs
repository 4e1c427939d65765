//! Preflight against the simulator (real HTTPS API, the node's own SSH on
//! loopback): a ready site passes every check; each broken piece fails its
//! check with a fix, and only that one.

use crate::lab::write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use homestak_core::model::Manifest;
use homestak_core::site::Site;
use homestak_engine::preflight::{self, Input, PreflightReport, Status};
use homestak_engine::reconcile::{self, Engine, Setup};

/// A site pointed at a running simulator whose node accepts `key`.
struct Lab {
    _dir: tempfile::TempDir,
    site_dir: PathBuf,
    sim_dir: PathBuf,
    node: String,
    setup: Setup,
    sim: homestak_sim::Handle,
}

async fn lab() -> Lab {
    homestak_tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let site_dir = dir.path().join("site-config");
    let key = dir.path().join("id_ed25519");
    let identity = homestak_ssh::Identity::generate_to(&key).unwrap();
    write(
        &site_dir.join("site.yaml"),
        "defaults: {automation_user: homestak, bridge: vmbr0}\n",
    );
    write(
        &site_dir.join("secrets.yaml"),
        &format!(
            "api_tokens: {{}}\nssh_keys:\n  ops: \"{}\"\n",
            identity.public_key_openssh()
        ),
    );
    write(
        &site_dir.join("v2/presets/small.yaml"),
        "cores: 1\nmemory: 1024\ndisk: 8\n",
    );
    let mut config = homestak_sim::Config::with_defaults();
    config.listen = Some("127.0.0.1:0".parse().unwrap());
    config.host_ssh_port = Some(0);
    config.host_ssh_keys.push(identity.public_key_openssh());
    let sim_dir = dir.path().join("sim");
    config.work_dir = Some(sim_dir.clone());
    let sim = homestak_sim::Simulator::start(config).await.unwrap();
    homestak_sim::site_config::update(&site_dir, &sim.ready_info(), "local-zfs", 22).unwrap();
    let node = sim.node().to_string();
    let setup = Setup {
        state_dir: dir.path().join("state"),
        ssh_key: Some(key),
        ..Setup::default()
    };
    Lab {
        _dir: dir,
        site_dir,
        sim_dir,
        node,
        setup,
        sim,
    }
}

impl Lab {
    async fn run(&self, manifest: Option<&Manifest>) -> PreflightReport {
        let site = Arc::new(Site::load(&self.site_dir).unwrap());
        preflight::run(Input {
            site,
            host: &self.node,
            manifest,
            setup: &self.setup,
        })
        .await
    }
}

fn tiered() -> Manifest {
    Manifest::from_yaml_str(
        "schema_version: 2\nname: pf\nnodes:\n\
         - {name: hv, type: pve, preset: small, image: debian-13-pve}\n\
         - {name: web, type: vm, preset: small, image: debian-12, parent: hv}\n",
        Path::new("pf.yaml"),
    )
    .unwrap()
}

fn status(report: &PreflightReport, name: &str) -> Status {
    report
        .checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name}: {report:#?}"))
        .status
}

fn failed(report: &PreflightReport) -> Vec<&str> {
    report.failures().map(|c| c.name).collect()
}

#[tokio::test]
async fn a_ready_site_passes_every_check() {
    let lab = lab().await;
    let manifest = tiered();
    let report = lab.run(Some(&manifest)).await;
    assert!(report.ok, "{}", report.text());
    for name in ["site_init", "ssh_keys", "pve_api", "images", "nested_virt"] {
        assert_eq!(status(&report, name), Status::Pass, "{}", report.text());
    }
    let api = report.checks.iter().find(|c| c.name == "pve_api").unwrap();
    assert!(
        api.detail
            .contains("with VM.Allocate, Datastore.AllocateSpace, Sys.Audit"),
        "{}",
        api.detail
    );
    // Without a manifest there is nothing to look up images or tiers for.
    let bare = lab.run(None).await;
    assert!(bare.ok, "{}", bare.text());
    assert_eq!(status(&bare, "images"), Status::Skip);
    assert_eq!(status(&bare, "nested_virt"), Status::Skip);
}

#[tokio::test]
async fn each_broken_piece_fails_its_check_with_a_fix() {
    let lab = lab().await;
    let manifest = tiered();
    let secrets = lab.site_dir.join("secrets.yaml");
    let good = std::fs::read_to_string(&secrets).unwrap();

    // A mistyped key: named, and the rest of the site still checks out.
    std::fs::write(
        &secrets,
        good.replace(
            "ssh_keys:\n",
            "ssh_keys:\n  typo: \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 typo@x\"\n",
        ),
    )
    .unwrap();
    let report = lab.run(Some(&manifest)).await;
    assert_eq!(failed(&report), ["ssh_keys"], "{}", report.text());
    let check = report.failures().next().unwrap();
    assert!(check.detail.contains("ssh_keys.typo"), "{}", check.detail);
    assert!(check.fix.as_deref().unwrap().contains("typo"), "{check:?}");

    // A sops-encrypted secrets.yaml.
    std::fs::write(
        &secrets,
        format!("{good}sops:\n  version: 3.8.1\n  mac: ENC[AES256_GCM,data:xx,type:str]\n"),
    )
    .unwrap();
    let report = lab.run(None).await;
    assert_eq!(failed(&report), ["site_init"], "{}", report.text());
    assert!(report.text().contains("sops -d"), "{}", report.text());
    std::fs::write(&secrets, &good).unwrap();

    // Only the encrypted file: told to decrypt it (the token is gone with
    // it, so the API check fails too).
    std::fs::remove_file(&secrets).unwrap();
    std::fs::write(
        lab.site_dir.join("secrets.yaml.enc"),
        "sops-encrypted bytes",
    )
    .unwrap();
    let report = lab.run(None).await;
    assert!(failed(&report).contains(&"site_init"), "{}", report.text());
    assert!(report.text().contains("make decrypt"), "{}", report.text());
    std::fs::remove_file(lab.site_dir.join("secrets.yaml.enc")).unwrap();
    std::fs::write(&secrets, &good).unwrap();

    // A wrong token: 401 from the API, told to replace the token.
    let node_file = lab.site_dir.join(format!("nodes/{}.yaml", lab.node));
    let node_text = std::fs::read_to_string(&node_file).unwrap();
    let token_secrets = std::fs::read_to_string(&secrets).unwrap();
    let wrong = token_secrets.replace("api_tokens:\n", "api_tokens:\n  __placeholder: x\n");
    let site = Site::load(&lab.site_dir).unwrap();
    let real = site
        .secrets()
        .lenient()
        .api_token(&lab.node)
        .unwrap()
        .expose()
        .to_string();
    let (id, _) = real.split_once('=').unwrap();
    std::fs::write(
        &secrets,
        wrong.replace(&real, &format!("{id}=00000000-0000-0000-0000-000000000000")),
    )
    .unwrap();
    let report = lab.run(Some(&manifest)).await;
    assert_eq!(failed(&report), ["pve_api"], "{}", report.text());
    assert!(
        report.text().contains("wrong or revoked"),
        "{}",
        report.text()
    );
    assert_eq!(status(&report, "images"), Status::Skip);
    std::fs::write(&secrets, &token_secrets).unwrap();

    // Nested guests not allowed on the host.
    let nested = lab
        .sim_dir
        .join("host")
        .join(&lab.node)
        .join("root")
        .join(homestak_sim::host::NESTED_PARAMETER.trim_start_matches('/'));
    std::fs::write(&nested, "N\n").unwrap();
    let report = lab.run(Some(&manifest)).await;
    assert_eq!(failed(&report), ["nested_virt"], "{}", report.text());
    assert!(report.text().contains("nested=1"), "{}", report.text());
    std::fs::write(&nested, "Y\n").unwrap();

    // The node file gone, the host only in hosts/: told to run pve-setup.
    std::fs::remove_file(&node_file).unwrap();
    write(
        &lab.site_dir.join(format!("hosts/{}.yaml", lab.node)),
        "ip: 127.0.0.1\n",
    );
    let report = lab.run(Some(&manifest)).await;
    assert!(failed(&report).contains(&"site_init"), "{}", report.text());
    assert!(
        report
            .text()
            .contains(&format!("homestak scenario pve-setup --host {}", lab.node)),
        "{}",
        report.text()
    );
    assert_eq!(status(&report, "pve_api"), Status::Skip);
    std::fs::write(&node_file, node_text).unwrap();
}

/// A bad key stops a plan before PVE is asked anything: the simulator sees
/// no request, and the error names the key.
#[tokio::test]
async fn a_bad_key_stops_the_plan_before_pve() {
    let lab = lab().await;
    let secrets = lab.site_dir.join("secrets.yaml");
    let good = std::fs::read_to_string(&secrets).unwrap();
    std::fs::write(
        &secrets,
        good.replace("ssh_keys:\n", "ssh_keys:\n  fake: \"fake-key-for-tests\"\n"),
    )
    .unwrap();
    let site = Arc::new(Site::load(&lab.site_dir).unwrap());
    let engine = Engine::open(Setup {
        state_dir: lab.setup.state_dir.clone(),
        ..Setup::default()
    })
    .unwrap();
    let tier = engine.tier(site, &lab.node).unwrap();
    lab.sim.reset_requests();
    let manifest = tiered();
    let Err(err) = tier.plan(&manifest, &reconcile::Options::default()).await else {
        panic!("a bad key refuses the plan");
    };
    assert!(matches!(err, reconcile::Error::SshKeys { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("ssh_keys.fake") && text.contains("fix or remove them in secrets.yaml"),
        "{text}"
    );
    assert!(lab.sim.requests().is_empty(), "{:?}", lab.sim.requests());
}
