//! `packer` on the simulated node's own SSH: it builds an image from a
//! template uploaded there only after `packer init`, refuses wrong
//! invocations as packer does, and a built image copied into a storage
//! directory is a volume the API lists with the template's disk size.
//! Loopback only; timeouts are hang guards.

use crate::support::Sim;
use crate::support::guest::{self, GUARD, Key, Tier, key, run, run_ok};
use homestak_ssh::{Destination, HostKeyPolicy, Identity, Session, Target, Transport, Upload};

const TEMPLATE: &str = r#"
packer {
  required_plugins {
    qemu = {
      version = ">= 1.1.0"
      source  = "github.com/hashicorp/qemu"
    }
  }
}

variable "version" {
  type    = string
  default = "12"
}

source "qemu" "debian" {
  output_directory = "images/debian-${var.version}"
  vm_name          = "debian-${var.version}-custom.qcow2"
  disk_size        = "3G"
  format           = "qcow2"
}

build {
  sources = ["source.qemu.debian"]
  provisioner "shell" {
    scripts = ["scripts/cleanup.sh"]
  }
}
"#;

fn config(key: &Key) -> homestak_sim::Config {
    let mut c = guest::config(0.001);
    c.host_ssh_port = Some(0);
    c.host_ssh_keys = vec![key.line.clone()];
    c
}

async fn login(sim: &Sim, key: &Key) -> Box<dyn Session> {
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
    .unwrap()
}

/// Runs `line`, expecting exit status 1 and `needle` in stderr.
async fn fails(session: &dyn Session, line: &str, needle: &str) {
    let out = run(session, line).await;
    assert_eq!(out.status.code(), Some(1), "{line}: {}", out.stdout_text());
    let text = format!("{}{}", out.stdout_text(), out.stderr_text());
    assert!(text.contains(needle), "{line}: {text}");
}

#[tokio::test]
async fn packer_builds_only_when_invoked_as_packer_wants() {
    let root = key("ops@laptop");
    let sim = Sim::start_with(config(&root)).await;
    let s = login(&sim, &root).await;
    let s = &*s;
    let dir = "/opt/homestak/packer";
    run_ok(s, &format!("mkdir -p {dir}/templates {dir}/scripts")).await;
    s.upload(&Upload::bytes(
        TEMPLATE,
        format!("{dir}/templates/debian-12-custom.pkr.hcl"),
        0o644,
    ))
    .await
    .unwrap();
    let cd = format!("cd {dir} && ");
    let build = format!("{cd}packer build -force templates/debian-12-custom.pkr.hcl");

    assert!(run_ok(s, "packer version").await.starts_with("Packer v1."));
    // Before init the qemu builder is unknown.
    fails(s, &build, "packer init").await;
    fails(
        s,
        &format!("{cd}packer init templates/nope.pkr.hcl"),
        "no such file",
    )
    .await;
    let out = run_ok(
        s,
        &format!("{cd}packer init templates/debian-12-custom.pkr.hcl"),
    )
    .await;
    assert!(
        out.contains("Installed plugin github.com/hashicorp/qemu"),
        "{out}"
    );
    // Init again installs nothing new.
    let again = run_ok(
        s,
        &format!("{cd}packer init templates/debian-12-custom.pkr.hcl"),
    )
    .await;
    assert!(again.is_empty(), "{again}");

    // The provisioner script must be there.
    fails(s, &build, "scripts/cleanup.sh").await;
    run_ok(s, &format!("echo '#!/bin/sh' > {dir}/scripts/cleanup.sh")).await;
    fails(
        s,
        &format!("{cd}packer build -frobnicate templates/debian-12-custom.pkr.hcl"),
        "flag provided but not defined",
    )
    .await;
    fails(
        s,
        &format!("{cd}packer build -var nope=1 templates/debian-12-custom.pkr.hcl"),
        "does not declare",
    )
    .await;
    fails(
        s,
        &format!("{cd}packer build templates/missing.pkr.hcl"),
        "no such file",
    )
    .await;
    fails(
        s,
        &format!("{cd}packer build -only=qemu.other templates/debian-12-custom.pkr.hcl"),
        "no build matches",
    )
    .await;
    let out = run_ok(
        s,
        &format!("{cd}packer validate templates/debian-12-custom.pkr.hcl"),
    )
    .await;
    assert_eq!(out, "The configuration is valid.\n");

    let out = run_ok(
        s,
        &format!("{cd}packer build templates/debian-12-custom.pkr.hcl"),
    )
    .await;
    assert!(
        out.contains("--> qemu.debian: VM files in directory: images/debian-12"),
        "{out}"
    );
    let image = format!("{dir}/images/debian-12/debian-12-custom.qcow2");
    run_ok(s, &format!("test -s {image}")).await;
    // A second build without -force refuses to overwrite; -force rebuilds.
    fails(
        s,
        &format!("{cd}packer build templates/debian-12-custom.pkr.hcl"),
        "Output directory exists",
    )
    .await;
    run_ok(s, &build).await;
    // A variable from the command line names another output.
    run_ok(
        s,
        &format!("{cd}packer build -var version=13 templates/debian-12-custom.pkr.hcl"),
    )
    .await;
    run_ok(
        s,
        &format!("test -f {dir}/images/debian-13/debian-13-custom.qcow2"),
    )
    .await;

    // Copied into a storage directory, the image is a volume the API lists,
    // with the template's disk size as its virtual size.
    run_ok(
        s,
        &format!("cat {image} > /var/lib/vz/import/debian-12-custom.qcow2"),
    )
    .await;
    let tier = Tier::of(&sim);
    let listed = tier
        .ok(
            "GET",
            "/nodes/pve/storage/local/content",
            &[("content", "import")],
        )
        .await;
    let volume = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["volid"] == "local:import/debian-12-custom.qcow2")
        .unwrap_or_else(|| panic!("not listed: {listed}"))
        .clone();
    assert_eq!(volume["size"].as_u64(), Some(4 << 16), "{volume}");
}
