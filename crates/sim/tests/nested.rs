//! Nested PVE tiers: a VM made from a PVE image serves its own PVE API on
//! `<its address>:8006` once booted, set up over SSH the way a parent tier
//! does (`openssl` for the fingerprint, `pveum` for a token, `pvesh` for a
//! bridge), usable by our `pve::Client` with the pinned fingerprint, to any
//! depth. Loopback only; timeouts are hang guards.

use crate::support::Sim;
use crate::support::guest::{self, GUARD, Tier, key, nested_tier, run, run_ok, ssh};
use homestak_pve::{Api, ApiToken, CreateVm, Disk, PowerAction, VmOptions};
use serde_json::{Value, json};

#[tokio::test]
async fn a_pve_image_vm_serves_a_nested_tier_our_client_can_drive() {
    let sim = Sim::start_with(guest::config(0.001)).await;
    let top = Tier::of(&sim);
    let k = key("parent");
    let view = top.boot_vm(100, "pve1", "debian-13-pve", "root", &k).await;
    let address = top.sim_vm(100).await["address"]
        .as_str()
        .unwrap()
        .to_string();
    let nested = top.nested_view(100).await;
    assert_eq!(nested["url"], format!("https://{address}:8006"));
    assert_eq!(nested["node"], "pve1");
    assert_eq!(view["pve"]["running"], true);

    // A fresh host: no token yet, so the parent's token means nothing here,
    // but root@pam can log in with a ticket.
    let no_token = Tier::new(
        nested["url"].as_str().unwrap(),
        "pve1",
        nested["fingerprint"].as_str().unwrap(),
        sim.handle.token(),
    );
    let (status, _) = no_token.call("GET", "/version", &[]).await;
    assert_eq!(status, 401);
    let (status, body) = no_token
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
    assert!(
        body["data"]["ticket"]
            .as_str()
            .unwrap()
            .starts_with("PVE:root@pam:")
    );

    // The parent's bootstrap over SSH: fingerprint, token, bridge.
    let inner = nested_tier(&top, 100, &view, "root", &k).await;
    assert!(ApiToken::parse(&inner.token).is_ok());
    let session = ssh(&view, "root", &k).await.unwrap();
    let version: Value =
        serde_json::from_str(&run_ok(&*session, "pvesh get /version --output-format json").await)
            .unwrap();
    assert_eq!(version["version"], "8.4.1");
    let pretty = run_ok(&*session, "pvesh get /version --output-format json-pretty").await;
    assert!(pretty.contains("\n   \"release\" : \"8.4\",\n"), "{pretty}");
    run_ok(
        &*session,
        "pvesh create /nodes/pve1/network --iface vmbr1 --type bridge --autostart 1 --comments 'homestak inner'",
    )
    .await;
    run_ok(&*session, "pvesh set /nodes/pve1/network").await;
    let bridge = inner.ok("GET", "/nodes/pve1/network/vmbr1", &[]).await;
    assert_eq!(bridge["type"], "bridge");
    // Errors come back as PVE's CLI prints them.
    let out = run(
        &*session,
        "pvesh create /nodes/pve1/network --iface vmbr1 --type bogus",
    )
    .await;
    assert_eq!(out.status.code(), Some(255));
    assert!(
        out.stderr_text()
            .starts_with("400 Parameter verification failed.\n"),
        "{}",
        out.stderr_text()
    );
    let out = run(&*session, "pvesh get /nosuch").await;
    assert_eq!(out.status.code(), Some(255));
    assert!(
        out.stderr_text().contains("No 'get' handler"),
        "{}",
        out.stderr_text()
    );
    let tokens = run_ok(
        &*session,
        "pveum user token list root@pam --output-format json",
    )
    .await;
    assert!(tokens.contains("\"tokenid\":\"homestak\""), "{tokens}");
    assert_eq!(
        run_ok(&*session, "systemctl is-active pveproxy").await,
        "active\n"
    );

    // Our PVE client, pinned to the fingerprint read over SSH.
    let api = inner.api();
    let v = tokio::time::timeout(GUARD, api.version())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v.version, "8.4.1");
    let nodes = api.nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].node, "pve1");
    let inner_key = key("inner");
    let (pve1, vmid) = (
        "pve1".parse::<homestak_pve::PveNode>().unwrap(),
        homestak_pve::VmId::new(200).unwrap(),
    );
    let create = CreateVm {
        vmid,
        options: VmOptions {
            name: Some("app1".into()),
            cores: Some(1),
            memory: Some(1024),
            disks: vec![
                (
                    "scsi0".into(),
                    Disk::import("local-zfs", "local:import/debian-12.qcow2"),
                ),
                ("ide2".into(), Disk::cloudinit("local-zfs")),
            ],
            ciuser: Some("debian".into()),
            sshkeys: Some(inner_key.line.clone()),
            agent: Some("1".into()),
            ..VmOptions::default()
        },
        start: None,
        pool: None,
    };
    let wait = homestak_pve::tasks::WaitOptions {
        poll: homestak_pve::Backoff::new(
            std::time::Duration::from_millis(5),
            std::time::Duration::from_millis(50),
        ),
        timeout: GUARD,
        ..Default::default()
    };
    let upid = api.qemu_create(&pve1, &create).await.unwrap();
    homestak_pve::tasks::wait(&api, &upid, &wait).await.unwrap();
    let upid = api
        .qemu_power(&pve1, vmid, &PowerAction::Start)
        .await
        .unwrap();
    homestak_pve::tasks::wait(&api, &upid, &wait).await.unwrap();

    // Depth 2: the inner VM boots, on its own address block, with SSH.
    let inner_view = inner.wait_booted(200).await;
    let inner_addr = inner.sim_vm(200).await["address"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(
        inner_addr.rsplit_once('.').map(|x| x.0),
        address.rsplit_once('.').map(|x| x.0)
    );
    let inner_session = ssh(&inner_view, "debian", &inner_key).await.unwrap();
    assert_eq!(
        run_ok(&*inner_session, "hostname; hostname -I").await,
        format!("app1\n{inner_addr} \n")
    );
    // Not a PVE image: no PVE tools, no nested tier.
    let out = run(&*inner_session, "pveum user token list root@pam").await;
    assert_eq!(out.status.code(), Some(127));
    let (status, _) = inner.control("GET", "/_sim/vms/200/nested", None).await;
    assert_eq!(status, 409);

    sim.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_pve_tools_need_root_and_sudo_gives_it() {
    let sim = Sim::start_with(guest::config(0.001)).await;
    let top = Tier::of(&sim);
    let k = key("parent");
    let view = top
        .boot_vm(110, "pve2", "debian-13-pve", "debian", &k)
        .await;
    let session = ssh(&view, "debian", &k).await.unwrap();
    let out = run(&*session, "pveum user token add root@pam x").await;
    assert_eq!(out.status.code(), Some(255));
    assert!(
        out.stderr_text().contains("must run as root"),
        "{}",
        out.stderr_text()
    );
    let inner = nested_tier(&top, 110, &view, "debian", &k).await;
    let (status, body) = inner.call("GET", "/nodes", &[]).await;
    assert_eq!(status, 200, "{body}");
    // The default text output is PVE's table.
    let table = run_ok(&*session, "sudo pvesh get /version").await;
    assert!(table.starts_with("┌"), "{table}");
    assert!(table.contains("│ version │ 8.4.1"), "{table}");

    // The inner host's storages are directories of the VM, backed by the
    // nested tier's volumes: what a child homestak joins there, the inner
    // API lists.
    let dir = run_ok(&*session, "sudo pvesm path local:import/joined.qcow2").await;
    assert_eq!(dir, "/var/lib/vz/import/joined.qcow2\n");
    let listed = run_ok(&*session, "ls /var/lib/vz/import").await;
    assert_eq!(
        listed,
        "debian-12.qcow2\ndebian-13-pve.qcow2\ndebian-13.qcow2\n"
    );
    let out = run(
        &*session,
        "cat /var/lib/vz/import/debian-12.qcow2 > /var/lib/vz/import/joined.qcow2",
    )
    .await;
    assert!(
        out.stderr_text().contains("Permission denied"),
        "{}",
        out.stderr_text()
    );
    run_ok(
        &*session,
        "sudo -n sh -c 'cd /var/lib/vz/import && cat debian-12.qcow2 debian-13.qcow2 > joined.qcow2'",
    )
    .await;
    let content = inner
        .ok(
            "GET",
            &format!("/nodes/{}/storage/local/content", inner.node),
            &[],
        )
        .await;
    let joined = content
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["volid"] == "local:import/joined.qcow2")
        .unwrap_or_else(|| panic!("{content}"));
    assert_eq!(joined["size"], (330u64 + 420) << 20, "{content}");
    sim.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_nested_tier_keeps_its_state_across_a_vm_restart() {
    let sim = Sim::start_with(guest::config(0.001)).await;
    let top = Tier::of(&sim);
    let k = key("parent");
    let view = top.boot_vm(120, "pve3", "debian-13-pve", "root", &k).await;
    let inner = nested_tier(&top, 120, &view, "root", &k).await;
    let ik = key("inner");
    inner
        .create_vm(300, "keep", "debian-12", "debian", &ik)
        .await;
    inner
        .create_vm(301, "auto", "debian-12", "debian", &ik)
        .await;
    inner
        .ok("PUT", "/nodes/pve3/qemu/301/config", &[("onboot", "1")])
        .await;
    inner.power(300, "start").await;
    inner.power(301, "start").await;
    let booted = inner.wait_booted(300).await;

    top.power(120, "shutdown").await;
    top.wait_down(120).await;
    // The inner API and the inner VMs' SSH went down with the host.
    let (status, _) = top.control("GET", "/_sim/vms/120/nested", None).await;
    assert_eq!(status, 409);
    assert!(
        inner
            .client
            .get(format!("{}/api2/json/version", inner.url))
            .send()
            .await
            .is_err()
    );
    let err = ssh(&booted, "debian", &ik)
        .await
        .err()
        .expect("inner VM down");
    assert_eq!(err.kind(), homestak_ssh::ErrorKind::PortClosed, "{err}");

    top.power(120, "start").await;
    top.wait_booted(120).await;
    let again = top.nested_view(120).await;
    assert_eq!(again["fingerprint"], json!(inner.fingerprint));
    // Same token, same VMs; after the power cycle only onboot VMs run.
    let vms = inner.ok("GET", "/nodes/pve3/qemu", &[]).await;
    let power = |vmid: u64| {
        vms.as_array()
            .unwrap()
            .iter()
            .find(|v| v["vmid"] == vmid)
            .map(|v| v["status"].clone())
    };
    assert_eq!(power(300), Some(json!("stopped")));
    assert_eq!(power(301), Some(json!("running")));
    inner.wait_booted(301).await;
    sim.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn tiers_nest_three_deep() {
    let sim = Sim::start_with(guest::config(0.001)).await;
    let top = Tier::of(&sim);
    let k = key("ops");
    let mut tier = top;
    let mut blocks = Vec::new();
    for depth in 1..=3u32 {
        let name = format!("pve-d{depth}");
        let view = tier
            .boot_vm(100 + depth, &name, "debian-13-pve", "root", &k)
            .await;
        let address = tier.sim_vm(100 + depth).await["address"]
            .as_str()
            .unwrap()
            .to_string();
        blocks.push(address.rsplit_once('.').unwrap().0.to_string());
        let next = nested_tier(&tier, 100 + depth, &view, "root", &k).await;
        assert_eq!(next.node, name);
        let nodes = next.ok("GET", "/nodes", &[]).await;
        assert_eq!(nodes[0]["node"], json!(name));
        tier = next;
    }
    // Each tier's VMs live in their own address block.
    let mut unique = blocks.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), blocks.len(), "{blocks:?}");
    // The deepest tier works like any other.
    let version = tier.ok("GET", "/version", &[]).await;
    assert_eq!(version["version"], "8.4.1");
    // Shutting the top down stops every tier below it.
    let deepest = tier.url.clone();
    sim.handle.shutdown().await.unwrap();
    assert!(
        tier.client
            .get(format!("{deepest}/api2/json/version"))
            .send()
            .await
            .is_err()
    );
}
