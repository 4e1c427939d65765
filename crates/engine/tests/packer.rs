//! The packer phases against the in-process simulator's own SSH: a packer
//! tree written here is synced to the node, built, fetched to a temporary
//! directory and published; the PVE API then lists the image and a VM
//! created from it gets the template's disk size. Loopback only.

use crate::lab::write;
use std::sync::Arc;

use homestak_engine::packer as pk;
use homestak_engine::scenario::{Context, Ctx, Inputs, registry};
use homestak_pve::{CreateVm, Disk, VmId, VmOptions};
use homestak_ssh::{Destination, HostKeyPolicy, Identity, Target, Transport};

const TEMPLATE: &str = r#"
packer {
  required_plugins {
    qemu = {
      version = ">= 1.1.0"
      source  = "github.com/hashicorp/qemu"
    }
  }
}

source "qemu" "debian-12" {
  output_directory = "images/debian-12"
  vm_name          = "debian-12-custom.qcow2"
  disk_size        = "5G"
}

build {
  sources = ["source.qemu.debian-12"]
  provisioner "shell" {
    scripts = ["scripts/cleanup.sh"]
  }
}
"#;

#[tokio::test]
async fn a_packer_tree_is_synced_built_fetched_and_published_into_a_usable_image() {
    homestak_tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let identity = Identity::generate_to(&dir.path().join("id_ed25519")).unwrap();
    let mut config = homestak_sim::Config::with_defaults();
    config.listen = Some("127.0.0.1:0".parse().unwrap());
    config.time_scale = 0.01;
    config.host_ssh_port = Some(0);
    config.host_ssh_keys = vec![identity.public_key_openssh()];
    let sim = homestak_sim::Simulator::start(config).await.unwrap();

    // The site-config names the node (with its API) at the SSH address.
    let site_dir = dir.path().join("site-config");
    write(&site_dir.join("site.yaml"), "defaults: {bridge: vmbr0}\n");
    write(
        &site_dir.join("secrets.yaml"),
        "api_tokens: {}\nssh_keys: {}\n",
    );
    homestak_sim::site_config::update(&site_dir, &sim.ready_info(), "local-zfs", 22).unwrap();

    // A packer tree of our own, with something that must not be synced.
    let tree = dir.path().join("packer");
    write(&tree.join("templates/debian-12-custom.pkr.hcl"), TEMPLATE);
    write(
        &tree.join("scripts/cleanup.sh"),
        "#!/bin/sh\ncloud-init clean\n",
    );
    write(&tree.join("images/old/stale.qcow2"), "stale");

    let addr = sim.host_ssh().expect("the node serves SSH");
    let target = Target::new(
        Destination::new(&addr.ip().to_string(), addr.port(), "root"),
        identity,
        HostKeyPolicy::AcceptNew(homestak_ssh::KnownHosts::new(
            dir.path().join("known_hosts"),
        )),
    );
    let session = homestak_ssh::RusshTransport::default()
        .connect(&target)
        .await
        .unwrap();
    let shell: Arc<homestak_engine::scenario::Shell> = Arc::from(session);

    let output = dir.path().join("fetched");
    let mut context = Context::new();
    context.set("packer_dir", tree.to_string_lossy().into_owned());
    context.set("images_dir", output.to_string_lossy().into_owned());
    let node = sim.ready_info().node.clone();
    let mut ctx = Ctx::new(
        Inputs {
            host: Some(node.clone()),
            site_root: Some(site_dir.clone()),
            state_dir: dir.path().join("state"),
            ..Inputs::default()
        },
        context,
    );
    ctx.set_shell(shell.clone());

    // packer-sync-build-fetch, then publish and verify (packer-build-publish).
    let mut phases = Vec::new();
    for name in ["packer-sync-build-fetch", "packer-build-publish"] {
        let registry::Lookup::Found(def) = registry::find(name) else {
            panic!("{name} is not registered");
        };
        phases.extend((def.phases)().into_iter().map(|p| (name, p)));
    }
    for (scenario, phase) in phases {
        let started = std::time::Instant::now();
        let message = (phase.run)(&mut ctx)
            .await
            .unwrap_or_else(|e| panic!("{scenario} {}: {e:?}", phase.name));
        println!(
            "{scenario} {}: {message} ({:?})",
            phase.name,
            started.elapsed()
        );
    }

    // Synced without images/; built on the node; fetched whole.
    let out = shell
        .exec_ok(&homestak_ssh::Command::shell(
            "test -e /opt/homestak/packer/images/old && echo stale || echo clean",
        ))
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "clean\n");
    let fetched = std::fs::read(output.join("debian-12-custom.qcow2")).unwrap();
    assert_eq!(&fetched[..4], b"QFI\xfb");
    assert_eq!(
        ctx.context.get_str("built_images"),
        None,
        "built_images is a list"
    );
    assert_eq!(
        ctx.context.get("built_images").unwrap(),
        &serde_json::json!(["debian-12-custom"])
    );

    // The API lists the published image, and a VM can be made from it.
    let site = homestak_core::site::Site::load(&site_dir).unwrap();
    let host = site.host_config(&node).unwrap();
    let api = homestak_engine::reconcile::connect(&host, false, None).unwrap();
    let pve_node = homestak_engine::reconcile::pve_node(&host).unwrap();
    let volid = pk::published_volid(&host.image_storage, "debian-12-custom");
    let listed = api
        .storage_content(&pve_node, &host.image_storage, Some("import"), None)
        .await
        .unwrap();
    let entry = listed.iter().find(|c| c.volid == volid).expect("listed");
    assert_eq!(entry.size, Some(fetched.len() as u64));
    let vmid = VmId::new(4242).unwrap();
    let create = CreateVm {
        vmid,
        options: VmOptions {
            name: Some("from-packer".into()),
            disks: vec![("scsi0".into(), Disk::import("local-zfs", volid.clone()))],
            ..VmOptions::default()
        },
        start: None,
        pool: None,
    };
    let upid = api.qemu_create(&pve_node, &create).await.unwrap();
    homestak_pve::tasks::wait(&*api, &upid, &homestak_pve::tasks::WaitOptions::default())
        .await
        .unwrap();
    let vm = api.qemu_config(&pve_node, vmid).await.unwrap();
    let disk = format!("{vm:?}");
    assert!(disk.contains("size=5G"), "{disk}");
    sim.shutdown().await.unwrap();
}
