//! Host onboarding end to end against the in-process simulator: a plain
//! debian-13 VM, reached over SSH with its cloud-init key, becomes a PVE
//! host (`ensure_pve`, `setup_pve`), gets homestak's API token, and its
//! `nodes/<host>.yaml` is written into a scratch site-config from which
//! the engine reaches its API. A second run changes nothing and does not
//! reboot. Loopback only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use homestak_core::site::Site;
use homestak_engine::onboard::{Changed, Remote, node_config, pve, token};
use homestak_engine::reconcile::{self, Engine, Setup};
use homestak_ssh::{Destination, HostKeyPolicy, Identity, RusshTransport, Target};

const SSH_PORT: u16 = 2222;

async fn call(
    sim: &homestak_sim::Handle,
    method: &str,
    path: &str,
    form: &[(&str, &str)],
) -> serde_json::Value {
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let url = format!("{}/api2/json{path}", sim.url());
    let resp = client
        .request(method.parse().unwrap(), url)
        .header("Authorization", format!("PVEAPIToken={}", sim.token()))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    assert!(status.is_success(), "{method} {path}: {status} {body}");
    body
}

async fn sim_get(sim: &homestak_sim::Handle, path: &str) -> serde_json::Value {
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let resp = client
        .get(format!("{}{path}", sim.url()))
        .header("Authorization", format!("PVEAPIToken={}", sim.token()))
        .send()
        .await
        .unwrap();
    resp.json().await.unwrap_or_default()
}

async fn wait_task(sim: &homestak_sim::Handle, upid: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = call(sim, "GET", &format!("/nodes/pve/tasks/{upid}/status"), &[]).await;
        if st["data"]["status"] == "stopped" {
            assert_eq!(st["data"]["exitstatus"], "OK", "{st}");
            return;
        }
        assert!(Instant::now() < deadline, "hang guard");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_plain_debian_vm_is_onboarded_and_usable() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let site_dir = dir.path().join("site");
    std::fs::create_dir_all(site_dir.join("hosts")).unwrap();
    std::fs::write(site_dir.join("site.yaml"), "defaults: {}\n").unwrap();
    std::fs::write(
        site_dir.join("secrets.yaml"),
        "# the lab's secrets\napi_tokens: {}\nssh_keys: {}\nownership_key: \"0123456789abcdef0123456789abcdef\"\n",
    )
    .unwrap();
    let mut config = homestak_sim::Config::with_defaults();
    config.listen = Some("127.0.0.1:0".parse().unwrap());
    config.time_scale = 0.002;
    config.ssh_port = SSH_PORT;
    let sim = homestak_sim::Simulator::start(config).await.unwrap();

    // A plain Debian 13 VM with our key for the cloud-init user.
    let identity = Identity::generate_to(&dir.path().join("id_ed25519")).unwrap();
    let line = format!("{} ops", identity.public_key_openssh());
    let keys = homestak_pve::form::encode_component(&line);
    let upid = call(
        &sim,
        "POST",
        "/nodes/pve/qemu",
        &[
            ("vmid", "100"),
            ("name", "hv1"),
            ("cores", "2"),
            ("memory", "4096"),
            (
                "scsi0",
                "local-zfs:0,import-from=local:import/debian-13.qcow2",
            ),
            ("ide2", "local-zfs:cloudinit"),
            ("ciuser", "debian"),
            ("sshkeys", &keys),
            ("net0", "virtio,bridge=vmbr0"),
            ("agent", "1"),
            ("start", "1"),
        ],
    )
    .await;
    wait_task(&sim, upid["data"].as_str().unwrap()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let guest = loop {
        let vm = sim_get(&sim, "/_sim/vms/100").await;
        if vm["data"]["guest"]["booted"] == true {
            break vm["data"].clone();
        }
        assert!(Instant::now() < deadline, "hang guard: {vm}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let ip = guest["address"].as_str().unwrap().to_string();
    let host_key = guest["guest"]["ssh"]["host_key"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    std::fs::write(
        site_dir.join("hosts/hv1.yaml"),
        format!("ip: {ip}\naccess:\n  ssh_user: debian\n"),
    )
    .unwrap();
    let remote = Remote {
        host: "hv1".into(),
        transport: Arc::new(RusshTransport::default()),
        target: Target::new(
            Destination::new(&ip, SSH_PORT, "debian"),
            identity,
            HostKeyPolicy::Pinned(host_key),
        ),
    };

    // Not usable yet: no PVE API.
    let site = Arc::new(Site::load(&site_dir).unwrap());
    let engine = Engine::open(Setup {
        state_dir: dir.path().join("state"),
        ..Setup::default()
    })
    .unwrap();
    let err = engine
        .tier(site, "hv1")
        .err()
        .expect("a host without PVE fails");
    assert!(
        err.to_string()
            .contains("homestak scenario pve-setup --host hv1"),
        "{err}"
    );

    let onboard = |remote: Remote| async move {
        let installed = pve::ensure_pve(&remote, Duration::from_secs(60))
            .await
            .unwrap();
        let s = remote.connect().await.unwrap();
        let setup = pve::setup_pve(&remote, &s).await.unwrap();
        let user = remote.user().to_string();
        let exists = token::exists(&*s, &user).await.unwrap();
        assert!(!exists, "a fresh host has no token");
        let secret = token::create(&*s, &user, false).await.unwrap();
        let fingerprint = token::fingerprint(&*s, &user).await.unwrap();
        let node = token::node_name(&*s, &user).await.unwrap();
        let storages = token::pvesh_get(&*s, &user, &format!("/nodes/{node}/storage"))
            .await
            .unwrap();
        let datastore = token::pick_datastore(&storages, "local-zfs").unwrap();
        let facts = node_config::NodeFacts {
            node,
            ip: remote.address().to_string(),
            fingerprint,
            datastore,
            ssh_user: user,
            ssh_port: SSH_PORT,
        };
        (installed, setup, facts, secret)
    };
    let (installed, setup, facts, secret) = onboard(remote.clone()).await;
    assert_eq!((installed, setup), (Changed::Yes, Changed::Yes));
    assert!(node_config::write_node_config(&site_dir, "hv1", &facts, &secret).unwrap());
    let onboarded_in = started.elapsed();

    // The host is now a node the engine reaches with the pinned token.
    let site = Arc::new(Site::load(&site_dir).unwrap());
    let secrets = std::fs::read_to_string(site_dir.join("secrets.yaml")).unwrap();
    assert!(secrets.starts_with("# the lab's secrets\n"), "{secrets}");
    let tier = engine.tier(site, "hv1").unwrap();
    let api = reconcile::connect(&tier.host, false, None).unwrap();
    let version = api.version().await.unwrap();
    assert_eq!(version.version, "8.4.1");
    assert_eq!(api.nodes().await.unwrap()[0].node, "hv1");

    // Again: no reboot, nothing to remove, the same files.
    let before = sim_get(&sim, "/_sim/vms/100").await["data"]["guest"]["ssh"]["host_key"].clone();
    let again = pve::ensure_pve(&remote, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(again, Changed::No);
    let s = remote.connect().await.unwrap();
    assert_eq!(pve::setup_pve(&remote, &s).await.unwrap(), Changed::No);
    assert!(token::exists(&*s, "debian").await.unwrap());
    assert!(!node_config::write_node_config(&site_dir, "hv1", &facts, &secret).unwrap());
    // The token made first still works: nothing was replaced.
    api.version().await.unwrap();
    let up = sim_get(&sim, "/_sim/vms/100").await["data"]["guest"].clone();
    assert_eq!(up["booted"], true);
    assert_eq!(up["ssh"]["host_key"], before);
    println!(
        "onboard: plain debian-13 VM to PVE node in {:.2}s (time scale 0.002), whole test {:.2}s",
        onboarded_in.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    sim.shutdown().await.unwrap();
}
