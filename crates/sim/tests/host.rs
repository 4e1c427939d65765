//! The simulated node's own SSH server: root logs in with a configured
//! key, `pvesm path` names a volume's file, the storages are directories
//! whose files are the volumes the API lists, and `cat a b > c` there makes
//! a real volume as big as its parts. Loopback only; timeouts are hang
//! guards.

use crate::support::Sim;
use crate::support::guest::{self, GUARD, Key, Tier, key, run, run_ok};
use homestak_sim::config::{Size, StorageConfig, StorageKind};
use homestak_ssh::{Destination, ErrorKind, HostKeyPolicy, Identity, Target, Transport};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const SOURCE: &str = "https://127.0.0.1:9/rel/big.qcow2";

/// A node whose `local` holds 1 GiB, no preset images, three 100 MiB
/// parts to download, and `key` allowed in as root on a free port.
fn config(key: &Key) -> homestak_sim::Config {
    let mut c = guest::config(0.001);
    c.images.clear();
    c.images_exact = true;
    c.host_ssh_port = Some(0);
    c.host_ssh_keys = vec![key.line.clone()];
    c.nodes = vec![homestak_sim::config::NodeConfig {
        name: "pve".into(),
        cpus: 16,
        memory: Size(64 << 30),
        storages: vec![
            StorageConfig {
                id: "local".into(),
                kind: StorageKind::Dir,
                content: vec!["import".into(), "iso".into()],
                size: Size(1 << 30),
                shared: false,
                lock_hold: None,
            },
            StorageConfig {
                id: "local-zfs".into(),
                kind: StorageKind::Zfspool,
                content: vec!["images".into()],
                size: Size(100 << 30),
                shared: false,
                lock_hold: None,
            },
        ],
    }];
    c.downloads.default_virtual_size = Size(8 << 30);
    for i in 0..3 {
        c.downloads
            .sizes
            .insert(format!("{SOURCE}.part0{i}"), Size(100 * MIB));
    }
    c
}

async fn login(
    sim: &Sim,
    key: &Key,
) -> Result<Box<dyn homestak_ssh::Session>, homestak_ssh::Error> {
    let addr = sim.handle.host_ssh().expect("the node serves SSH");
    let view = Tier::of(sim).control("GET", "/_sim/host", None).await.1;
    let host_key = view["data"]["ssh"]["host_key"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let target = Target::new(
        Destination::new(&addr.ip().to_string(), addr.port(), "root"),
        Identity::from_private_key(key.private.clone(), "test key"),
        HostKeyPolicy::Pinned(host_key),
    );
    tokio::time::timeout(
        GUARD,
        homestak_ssh::RusshTransport::default().connect(&target),
    )
    .await
    .expect("hang guard")
}

/// The import files the API lists: volid → size.
async fn imports(tier: &Tier) -> Vec<(String, u64)> {
    let listed = tier
        .ok(
            "GET",
            "/nodes/pve/storage/local/content",
            &[("content", "import")],
        )
        .await;
    let mut out: Vec<(String, u64)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["volid"].as_str().unwrap().to_string(),
                v["size"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn parts_are_joined_on_the_node_into_a_volume_the_api_lists() {
    let root_key = key("ops@laptop");
    let sim = Sim::start_with(config(&root_key)).await;
    let tier = Tier::of(&sim);
    assert!(sim.handle.host_ssh_error().is_none());
    assert_eq!(
        sim.handle.ready_info().host_ssh,
        sim.handle.host_ssh().map(|a| a.to_string())
    );
    for i in 0..3 {
        let url = format!("{SOURCE}.part0{i}");
        let filename = format!("big.part0{i}.raw");
        tier.task_ok(
            "POST",
            "/nodes/pve/storage/local/download-url",
            &[
                ("url", &url),
                ("content", "import"),
                ("filename", &filename),
            ],
        )
        .await;
    }

    let session = login(&sim, &root_key).await.unwrap();
    assert_eq!(
        run_ok(&*session, "whoami; pvesm path local:import/big.qcow2").await,
        "root\n/var/lib/vz/import/big.qcow2\n"
    );
    assert_eq!(
        run_ok(&*session, "ls /var/lib/vz; ls /var/lib/vz/import").await,
        "import\ntemplate\nbig.part00.raw\nbig.part01.raw\nbig.part02.raw\n"
    );

    // The half-written file is a volume, but not an image PVE lists.
    let dir = "/var/lib/vz/import";
    run_ok(
        &*session,
        &format!("cat {dir}/big.part00.raw {dir}/big.part01.raw {dir}/big.part02.raw > {dir}/big.qcow2.tmp"),
    )
    .await;
    let world = sim.handle.world();
    let local = &world.nodes["pve"].storages["local"];
    assert_eq!(local.volumes["import/big.qcow2.tmp"].size, 300 * MIB);
    assert!(!imports(&tier).await.iter().any(|(v, _)| v.contains("tmp")));

    run_ok(
        &*session,
        &format!("mv -f {dir}/big.qcow2.tmp {dir}/big.qcow2 && rm -f {dir}/big.part00.raw {dir}/big.part01.raw {dir}/big.part02.raw"),
    )
    .await;
    assert_eq!(
        imports(&tier).await,
        [("local:import/big.qcow2".to_string(), 300 * MIB)]
    );
    let listed = tier
        .ok("GET", "/nodes/pve/storage/local/content", &[])
        .await;
    assert_eq!(listed[0]["format"], "qcow2", "{listed}");

    // A VM imports it, at the virtual size the first part's header gave.
    let vm_key = key("vm");
    tier.create_vm(100, "joined", "big", "debian", &vm_key)
        .await;
    let config = tier.ok("GET", "/nodes/pve/qemu/100/config", &[]).await;
    assert!(
        config["scsi0"].as_str().unwrap().contains("size=8G"),
        "{config}"
    );

    // What does not work says so.
    let out = run(&*session, &format!("cat {dir}/big.qcow2")).await;
    assert!(!out.success());
    assert!(
        out.stderr_text().contains("sizes of storage volumes"),
        "{}",
        out.stderr_text()
    );
    let out = run(
        &*session,
        &format!("cat {dir}/big.qcow2 {dir}/big.qcow2 {dir}/big.qcow2 > {dir}/huge.raw"),
    )
    .await;
    assert!(!out.success());
    assert!(
        out.stderr_text().contains("No space left on device"),
        "{}",
        out.stderr_text()
    );
    let out = run(
        &*session,
        "cat /var/lib/vz/import/big.qcow2 > /var/lib/vz/images/100/x.raw",
    )
    .await;
    assert!(!out.success());
    assert!(
        out.stderr_text().contains("cannot create"),
        "{}",
        out.stderr_text()
    );
    let out = run(&*session, "pvesm path local-zfs:vm-100-disk-0").await;
    assert_eq!(out.status, homestak_ssh::ExitStatus::Code(255));
    session.close().await.unwrap();

    // The host remembers what it ran (for tests and /_sim/host).
    let commands = sim.handle.host_commands();
    assert!(
        commands.iter().any(|c| c.starts_with("cat ")),
        "{commands:?}"
    );

    // Only the configured key gets in.
    let err = login(&sim, &key("intruder")).await.err().unwrap();
    assert_eq!(err.kind(), ErrorKind::AuthRefused, "{err}");
    sim.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_node_reports_why_it_has_no_ssh() {
    // Port 22 needs root; tests never have it.
    if nix_is_root() {
        eprintln!("SKIPPED: running as root, port 22 can be bound");
        return;
    }
    let mut c = guest::config(0.001);
    c.host_ssh_port = Some(22);
    let sim = Sim::start_with(c).await;
    assert!(sim.handle.host_ssh().is_none());
    let error = sim.handle.host_ssh_error().unwrap();
    assert!(error.contains("ports below 1024"), "{error}");
    let view: Value = Tier::of(&sim).control("GET", "/_sim/host", None).await.1;
    assert!(view["data"]["ssh"]["error"].is_string(), "{view}");
    sim.handle.shutdown().await.unwrap();
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
