//! A plain Debian VM becomes a PVE host the way a real one does: the
//! Proxmox repository and its key, `apt-get update`, `apt-get install -y
//! proxmox-ve` with the host name resolving to the VM's address, then a
//! reboot. Each step out of order fails as on a real host.

use crate::support::Sim;
use crate::support::guest::{self, Tier, key, nested_tier, run, run_ok, ssh};
use serde_json::Value;

const SOURCES: &str = "Types: deb\nURIs: http://download.proxmox.com/debian/pve\nSuites: trixie\nComponents: pve-no-subscription\nSigned-By: /usr/share/keyrings/proxmox-archive-keyring.gpg\n";
const INSTALL: &str =
    "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y proxmox-ve postfix open-iscsi chrony";

fn stderr_of(out: &homestak_ssh::ExecOutput) -> String {
    out.stderr_text()
}

#[tokio::test]
async fn debian_becomes_a_pve_tier_only_by_the_real_sequence() {
    let sim = Sim::start_with(guest::config(0.001)).await;
    let top = Tier::of(&sim);
    let k = key("ops");
    let view = top.boot_vm(100, "hv1", "debian-13", "debian", &k).await;
    assert!(view["pve"].is_null(), "{view}");
    let (status, _) = top.control("GET", "/_sim/vms/100/nested", None).await;
    assert_eq!(status, 409);
    let s = ssh(&view, "debian", &k).await.unwrap();
    let address = top.sim_vm(100).await["address"]
        .as_str()
        .unwrap()
        .to_string();

    // Not installed; no pveversion.
    let out = run(&*s, "dpkg -s proxmox-ve").await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(run(&*s, "pveversion").await.status.code(), Some(127));
    assert_eq!(
        run_ok(&*s, "dpkg-query -W -f '${Status}' sudo").await,
        "install ok installed"
    );

    // Without root, and without the repository.
    let out = run(&*s, "apt-get install -y proxmox-ve").await;
    assert_eq!(out.status.code(), Some(100));
    assert!(
        stderr_of(&out).contains("are you root?"),
        "{}",
        stderr_of(&out)
    );
    run_ok(&*s, "sudo apt-get update").await;
    let out = run(&*s, INSTALL).await;
    assert_eq!(out.status.code(), Some(100));
    assert!(
        stderr_of(&out).contains("E: Unable to locate package proxmox-ve"),
        "{}",
        stderr_of(&out)
    );
    // Unknown flags fail.
    let out = run(&*s, "sudo apt-get install --force-yes proxmox-ve").await;
    assert_eq!(out.status.code(), Some(100));

    // The repository without its key: update refuses it.
    for line in SOURCES.lines() {
        run_ok(
            &*s,
            &format!(
                "sudo sh -c 'echo \"{line}\" >> /etc/apt/sources.list.d/pve-install-repo.sources'"
            ),
        )
        .await;
    }
    let out = run(&*s, "sudo apt-get update").await;
    assert_eq!(out.status.code(), Some(100));
    assert!(stderr_of(&out).contains("NO_PUBKEY"), "{}", stderr_of(&out));
    // The key: only root writes /usr/share/keyrings.
    let wget = "wget -q https://enterprise.proxmox.com/debian/proxmox-archive-keyring-trixie.gpg -O /usr/share/keyrings/proxmox-archive-keyring.gpg";
    assert_ne!(run(&*s, wget).await.status.code(), Some(0));
    run_ok(&*s, "sudo mkdir -p /usr/share/keyrings").await;
    run_ok(&*s, &format!("sudo {wget}")).await;
    // Repository and key, but no update yet.
    let out = run(&*s, INSTALL).await;
    assert!(stderr_of(&out).contains("Unable to locate package proxmox-ve"));
    run_ok(&*s, "sudo apt-get update").await;
    // Without -y nobody answers the prompt.
    let out = run(&*s, "sudo apt-get install proxmox-ve").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout_text().contains("Abort."));
    // The host name resolves to 127.0.1.1 (cloud-init's /etc/hosts).
    let out = run(&*s, INSTALL).await;
    assert_eq!(out.status.code(), Some(100));
    assert!(
        stderr_of(&out).contains("resolved node IP '127.0.1.1'"),
        "{}",
        stderr_of(&out)
    );
    run_ok(&*s, "sudo rm /etc/hosts").await;
    run_ok(&*s, "sudo sh -c 'echo 127.0.0.1 localhost > /etc/hosts'").await;
    run_ok(
        &*s,
        &format!("sudo sh -c 'echo {address} hv1.example hv1 >> /etc/hosts'"),
    )
    .await;
    let out = run_ok(&*s, INSTALL).await;
    assert!(out.contains("Setting up proxmox-ve"), "{out}");
    assert!(
        run_ok(&*s, "dpkg-query -W proxmox-ve")
            .await
            .starts_with("proxmox-ve\t8.4.0")
    );
    assert!(
        run_ok(&*s, "pveversion")
            .await
            .starts_with("pve-manager/8.4.1/")
    );
    // The enterprise repository came with it: update fails until removed.
    let out = run(&*s, "sudo apt-get update").await;
    assert_eq!(out.status.code(), Some(100));
    assert!(stderr_of(&out).contains("401"), "{}", stderr_of(&out));
    run_ok(
        &*s,
        "sudo rm /etc/apt/sources.list.d/pve-enterprise.sources",
    )
    .await;
    run_ok(&*s, "sudo apt-get update").await;

    // No reboot: no API yet.
    let (status, _) = top.control("GET", "/_sim/vms/100/nested", None).await;
    assert_eq!(status, 409);
    assert_eq!(
        run(&*s, "pveum user token list root@pam")
            .await
            .status
            .code(),
        Some(127)
    );
    // reboot needs root; with it the session goes away.
    assert_eq!(run(&*s, "reboot").await.status.code(), Some(1));
    let _ = tokio::time::timeout(
        guest::GUARD,
        s.exec(&homestak_ssh::Command::shell("sudo reboot"), &mut |_, _| {}),
    )
    .await;
    let deadline = tokio::time::Instant::now() + guest::GUARD;
    while top.control("GET", "/_sim/vms/100/nested", None).await.0 != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "hang guard: no tier after the reboot"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let view = top.wait_booted(100).await;
    assert_eq!(view["pve"]["running"], true, "{view}");

    // Now a PVE host: ticket login, and a token made over SSH.
    let nested = top.nested_view(100).await;
    assert_eq!(nested["node"], "hv1");
    let fresh = Tier::new(
        nested["url"].as_str().unwrap(),
        "hv1",
        nested["fingerprint"].as_str().unwrap(),
        sim.handle.token(),
    );
    let (status, body) = fresh
        .call(
            "POST",
            "/access/ticket",
            &[
                ("username", "root@pam"),
                ("password", nested["root_password"].as_str().unwrap()),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let inner = nested_tier(&top, 100, &view, "debian", &k).await;
    let version: Value = inner.ok("GET", "/version", &[]).await;
    assert_eq!(version["version"], "8.4.1");
    let s = ssh(&view, "debian", &k).await.unwrap();
    assert!(run_ok(&*s, "uname -r").await.contains("-pve"));

    // Kept across a restart: still a PVE host, the token still valid.
    top.power(100, "stop").await;
    top.wait_down(100).await;
    top.power(100, "start").await;
    let view = top.wait_booted(100).await;
    assert_eq!(view["pve"]["running"], true, "{view}");
    let again = top.nested_view(100).await;
    let inner = Tier::new(
        again["url"].as_str().unwrap(),
        "hv1",
        again["fingerprint"].as_str().unwrap(),
        &inner.token,
    );
    let nodes = inner.ok("GET", "/nodes", &[]).await;
    assert_eq!(nodes[0]["node"], "hv1");
}

#[tokio::test]
async fn a_bookworm_vm_needs_the_bookworm_suite_and_key() {
    let sim = Sim::start_with(guest::config(0.001)).await;
    let top = Tier::of(&sim);
    let k = key("ops");
    let view = top.boot_vm(101, "hv2", "debian-12", "root", &k).await;
    let s = ssh(&view, "root", &k).await.unwrap();
    // A trixie repository on bookworm has no Release file.
    run_ok(&*s, "echo 'deb http://download.proxmox.com/debian/pve trixie pve-no-subscription' > /etc/apt/sources.list.d/pve-install-repo.list").await;
    run_ok(&*s, "wget https://enterprise.proxmox.com/debian/proxmox-release-bookworm.gpg -O /etc/apt/trusted.gpg.d/proxmox-release-bookworm.gpg").await;
    let out = run(&*s, "apt-get update").await;
    assert_eq!(out.status.code(), Some(100));
    assert!(
        out.stderr_text().contains("does not have a Release file"),
        "{}",
        out.stderr_text()
    );
    run_ok(&*s, "echo 'deb http://download.proxmox.com/debian/pve bookworm pve-no-subscription' > /etc/apt/sources.list.d/pve-install-repo.list").await;
    run_ok(&*s, "apt-get update").await;
    // An unknown URL: the simulator has no network.
    assert_eq!(
        run(&*s, "wget -O /tmp/x https://example.org/x")
            .await
            .status
            .code(),
        Some(4)
    );
}
