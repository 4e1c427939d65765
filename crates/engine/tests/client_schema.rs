//! Every request the PVE client makes while converging is valid under the
//! simulator's parameter specs (`homestak_pve::schema`), which
//! `crates/pve/tests/schema.rs` proves against
//! the real PVE 8.4 schema. The run covers create (with a download),
//! update, disk growth, start, and destroy, and the host lease.

use crate::lab::write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use homestak_core::model::Manifest;
use homestak_core::site::Site;
use homestak_engine::hostlease;
use homestak_engine::reconcile::{self, Engine, Setup, Tier};
use homestak_pve::{self as pve, Observer, RecordedRequest};

#[derive(Default)]
struct Collect(Mutex<Vec<RecordedRequest>>);

impl Observer for Collect {
    fn on_request(&self, request: &RecordedRequest) {
        self.0.lock().unwrap().push(request.clone());
    }
}

fn manifest(disk: u32) -> Manifest {
    let text = format!(
        "schema_version: 2\nname: schema\nnodes:\n\
         - {{name: a, type: vm, preset: small, image: debian-12, vmid: 4100}}\n\
         - {{name: b, type: vm, preset: small, image: ubuntu-24, disk: {disk}}}\n\
         settings: {{verify_ssh: false}}\n"
    );
    Manifest::from_yaml_str(&text, Path::new("schema.yaml")).unwrap()
}

async fn converge(tier: &Tier, manifest: &Manifest, destroy: bool) {
    let options = reconcile::Options::default();
    let planned = if destroy {
        tier.plan_destroy(manifest).await.unwrap()
    } else {
        tier.plan(manifest, &options).await.unwrap()
    };
    let report = tier
        .apply(&planned, &options, std::future::pending(), &|_| {})
        .await;
    assert!(report.success(), "{report:?}");
}

#[tokio::test]
async fn every_client_request_passes_the_schema_checked_specs() {
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
    let preset = |cores: u32| format!("cores: {cores}\nmemory: 1024\ndisk: 8\n");
    write(&site_dir.join("v2/presets/small.yaml"), &preset(1));

    let mut config = homestak_sim::Config::with_defaults();
    config.listen = Some("127.0.0.1:0".parse().unwrap());
    config.time_scale = 0.01;
    let sim = homestak_sim::Simulator::start(config).await.unwrap();
    homestak_sim::site_config::update(&site_dir, &sim.ready_info(), "local-zfs", 22).unwrap();

    let site = Arc::new(Site::load(&site_dir).unwrap());
    let setup = Setup {
        state_dir: dir.path().join("state"),
        open_store: true,
        ..Setup::default()
    };
    let mut tier = Engine::open(setup).unwrap().tier(site, "pve").unwrap();
    // The same client, with an observer on every request.
    let seen = Arc::new(Collect::default());
    let host = tier.host.clone();
    let token = pve::ApiToken::parse(host.api_token().unwrap().expose()).unwrap();
    let trust = pve::Trust::Pinned(host.api_fingerprint.as_deref().unwrap().parse().unwrap());
    let endpoint = host.api_endpoint.as_deref().unwrap();
    let mut client_config = pve::Config::new(endpoint, token, trust).unwrap();
    client_config.observer = Some(seen.clone());
    tier.api = Arc::new(pve::Client::new(client_config).unwrap());

    converge(&tier, &manifest(8), false).await;
    // Grow: new preset size and a bigger disk for b.
    write(&site_dir.join("v2/presets/small.yaml"), &preset(2));
    tier.site = Arc::new(Site::load(&site_dir).unwrap());
    converge(&tier, &manifest(16), false).await;
    converge(&tier, &manifest(16), true).await;
    // The host lease, taken and given back through the same client.
    let lease = hostlease::HostLease::acquire(
        tier.api.clone(),
        "pve",
        tier.pve_node.clone(),
        &hostlease::Policy::default(),
        dir.path(),
        hostlease::Wait::No,
        &|_| {},
    )
    .await
    .unwrap();
    lease.release().await.unwrap();
    let _ = sim.shutdown().await;

    let requests = seen.0.lock().unwrap().clone();
    let mut paths = std::collections::BTreeSet::new();
    let mut bad = Vec::new();
    for r in &requests {
        let encoded: Vec<String> = r
            .params
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    homestak_pve::form::encode_component(k),
                    homestak_pve::form::encode_component(v)
                )
            })
            .collect();
        let form = encoded.join("&");
        let method = r.method.as_str();
        let wire_path = format!("/api2/json{}", r.path);
        let result = if matches!(method, "GET" | "DELETE") {
            homestak_pve::schema::check_wire(method, &wire_path, Some(&form), None)
        } else {
            homestak_pve::schema::check_wire(
                method,
                &wire_path,
                None,
                Some(("application/x-www-form-urlencoded", form.as_bytes())),
            )
        };
        match result {
            Ok(_) => {}
            Err(rejection) => {
                bad.push(format!("{method} {} {:?}: {rejection:?}", r.path, r.params))
            }
        }
        // The template the request carries is the route its path takes.
        match homestak_pve::schema::route(
            homestak_pve::schema::Method::parse(method).unwrap(),
            &r.path,
        ) {
            Some((endpoint, _)) if endpoint.path == r.template => {}
            routed => bad.push(format!(
                "{method} {}: carries {}, routes to {:?}",
                r.path,
                r.template,
                routed.map(|(e, _)| e.path)
            )),
        }
        paths.insert(format!("{method} {}", r.template));
    }
    println!(
        "{} requests checked, {} distinct endpoints:",
        requests.len(),
        paths.len()
    );
    for p in &paths {
        println!("  {p}");
    }
    assert!(
        bad.is_empty(),
        "requests the specs refuse:\n{}",
        bad.join("\n")
    );
    for needed in [
        "POST /nodes/{node}/qemu",
        "PUT /nodes/{node}/qemu/{vmid}/config",
        "PUT /nodes/{node}/qemu/{vmid}/resize",
        "POST /nodes/{node}/qemu/{vmid}/status/start",
        "DELETE /nodes/{node}/qemu/{vmid}",
        "POST /nodes/{node}/storage/{storage}/download-url",
        "GET /nodes/{node}/qemu/{vmid}/agent/network-get-interfaces",
        "GET /cluster/resources",
        "GET /nodes/{node}/config",
        "PUT /nodes/{node}/config",
    ] {
        assert!(paths.contains(needed), "the run never exercised {needed}");
    }
}
