//! VM lifecycle over real HTTPS: create with import-from and cloud-init,
//! the state machine, the agent's three errors, config/digest/delete,
//! resize, template and clone.

use crate::support::{Sim, ssh_key};
use homestak_pve::form::encode_component;
use serde_json::Value;

fn create_form(vmid: &str, keys: &str) -> Vec<(String, String)> {
    vec![
        ("vmid".into(), vmid.into()),
        ("name".into(), format!("vm{vmid}")),
        ("cores".into(), "2".into()),
        ("memory".into(), "2048".into()),
        (
            "scsi0".into(),
            "local-zfs:0,import-from=local:import/debian-12.qcow2,discard=on".into(),
        ),
        ("ide2".into(), "local-zfs:cloudinit".into()),
        ("ciuser".into(), "debian".into()),
        ("cipassword".into(), "hunter2".into()),
        ("sshkeys".into(), encode_component(keys)),
        ("ipconfig0".into(), "ip=dhcp".into()),
        ("net0".into(), "virtio,bridge=vmbr0".into()),
        ("agent".into(), "1".into()),
        ("serial0".into(), "socket".into()),
        ("vga".into(), "serial0".into()),
        ("tags".into(), "Homestak,web;alpha".into()),
        (
            "description".into(),
            "managed by homestak\nspec: 1\n\n".into(),
        ),
    ]
}

fn pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

#[tokio::test]
async fn vm_lifecycle_with_import_cloud_init_and_agent() {
    let sim = Sim::start(0.001).await;
    let keys = format!("{}\n{}", ssh_key("a@b"), ssh_key("c@d"));
    let form = create_form("100", &keys);
    let upid = sim.ok("POST", "/nodes/pve/qemu", &pairs(&form)).await;
    let upid = upid.as_str().unwrap().to_string();
    assert!(
        upid.starts_with("UPID:pve:") && upid.ends_with(":qmcreate:100:root@pam!homestak:"),
        "{upid}"
    );
    // Locked while the task runs; duplicate vmid is a synchronous 500.
    let dup = sim
        .call("POST", "/nodes/pve/qemu", &[("vmid", "100")])
        .await;
    assert_eq!(
        (dup.status, dup.reason.as_str()),
        (
            500,
            "unable to create VM 100 - VM 100 already exists on node 'pve'"
        )
    );
    let status = sim.wait_task(&upid).await;
    assert_eq!(status["exitstatus"], "OK", "{status}");
    assert_eq!(status["tokenid"], "homestak");
    assert_eq!(status["user"], "root@pam");
    assert!(status.get("endtime").is_none());

    let cfg = sim.get("/nodes/pve/qemu/100/config").await;
    assert_eq!(cfg["tags"], "alpha;homestak;web");
    assert_eq!(cfg["description"], "managed by homestak\nspec: 1");
    assert_eq!(cfg["cipassword"], "**********");
    assert_eq!(cfg["sshkeys"], encode_component(&keys));
    assert_eq!(cfg["cores"], 2);
    assert_eq!(cfg["memory"], "2048");
    assert_eq!(cfg["scsi0"], "local-zfs:vm-100-disk-0,discard=on,size=2G");
    assert_eq!(cfg["ide2"], "local-zfs:vm-100-cloudinit,media=cdrom");
    assert_eq!(cfg["boot"], "order=scsi0;net0");
    assert!(
        cfg["net0"]
            .as_str()
            .unwrap()
            .starts_with("virtio=BC:24:11:"),
        "{}",
        cfg["net0"]
    );
    assert!(cfg.get("lock").is_none());
    assert_eq!(cfg["digest"].as_str().unwrap().len(), 40);
    let content = sim.get("/nodes/pve/storage/local-zfs/content").await;
    assert_eq!(content.as_array().unwrap().len(), 2);

    // Agent: configured but VM stopped, then not running, then ready.
    let a = sim
        .call(
            "GET",
            "/nodes/pve/qemu/100/agent/network-get-interfaces",
            &[],
        )
        .await;
    assert_eq!(
        (a.status, a.reason.as_str()),
        (500, "VM 100 is not running")
    );
    sim.task_ok("POST", "/nodes/pve/qemu/100/status/start", &[])
        .await;
    let cur = sim.get("/nodes/pve/qemu/100/status/current").await;
    assert_eq!(
        (
            cur["status"].as_str(),
            cur["qmpstatus"].as_str(),
            cur["agent"].as_i64()
        ),
        (Some("running"), Some("running"), Some(1))
    );
    assert_eq!(cur["vmid"], 100);
    let ip = loop {
        let a = sim
            .call(
                "GET",
                "/nodes/pve/qemu/100/agent/network-get-interfaces",
                &[],
            )
            .await;
        if a.status == 200 {
            break a.data()["result"][1]["ip-addresses"][0]["ip-address"]
                .as_str()
                .unwrap()
                .to_string();
        }
        assert_eq!(
            (a.status, a.reason.as_str()),
            (500, "QEMU guest agent is not running")
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    };
    assert!(ip.starts_with("127.") && !ip.starts_with("127.0."), "{ip}");

    // start while running: the task fails; delete while running: sync 500.
    let upid = sim
        .ok("POST", "/nodes/pve/qemu/100/status/start", &[])
        .await;
    let s = sim.wait_task(upid.as_str().unwrap()).await;
    assert_eq!(s["exitstatus"], "VM 100 already running");
    let del = sim.call("DELETE", "/nodes/pve/qemu/100", &[]).await;
    assert_eq!(
        (del.status, del.reason.as_str()),
        (500, "VM 100 is running - destroy failed")
    );

    sim.task_ok(
        "POST",
        "/nodes/pve/qemu/100/status/shutdown",
        &[("forceStop", "1"), ("timeout", "30")],
    )
    .await;
    sim.task_ok("POST", "/nodes/pve/qemu/100/status/stop", &[])
        .await;
    sim.task_ok("DELETE", "/nodes/pve/qemu/100", &[("purge", "1")])
        .await;
    let gone = sim.call("GET", "/nodes/pve/qemu/100/config", &[]).await;
    assert_eq!(
        (gone.status, gone.reason.as_str()),
        (
            500,
            "Configuration file 'nodes/pve/qemu-server/100.conf' does not exist"
        )
    );
    assert!(
        sim.get("/nodes/pve/storage/local-zfs/content")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    let log = sim
        .call(
            "GET",
            &format!("/nodes/pve/tasks/{upid}/log", upid = upid.as_str().unwrap()),
            &[],
        )
        .await;
    assert_eq!(log.json["total"], 1);
    assert_eq!(log.data()[0]["t"], "TASK ERROR: VM 100 already running");
    sim.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn create_checks_import_rules_and_keys() {
    let sim = Sim::start(0.001).await;
    let a = sim
        .call(
            "POST",
            "/nodes/pve/qemu",
            &[
                ("vmid", "100"),
                (
                    "scsi0",
                    "local-zfs:8,import-from=local:import/debian-12.qcow2",
                ),
            ],
        )
        .await;
    assert_eq!(
        a.json["errors"]["scsi0"],
        "'import-from' requires special syntax - use <storage ID>:0,import-from=<source>"
    );
    let a = sim
        .call(
            "POST",
            "/nodes/pve/qemu",
            &[
                ("vmid", "100"),
                ("scsi0", "local-zfs:0,import-from=local:iso/x.img"),
            ],
        )
        .await;
    assert_eq!(
        a.json["errors"]["scsi0"],
        "local:iso/x.img has wrong type 'iso' - needs to be 'images' or 'import'"
    );
    let a = sim
        .call(
            "POST",
            "/nodes/pve/qemu",
            &[("vmid", "100"), ("scsi0", "local:4")],
        )
        .await;
    assert_eq!(
        a.json["errors"]["scsi0"],
        "storage 'local' does not support vm images"
    );
    // sshkeys: single-encoded with `+` is not urlencoded; a bad key is a 500.
    let a = sim
        .call(
            "POST",
            "/nodes/pve/qemu",
            &[("vmid", "100"), ("sshkeys", "ssh-ed25519+AAAA")],
        )
        .await;
    assert!(
        a.json["errors"]["sshkeys"]
            .as_str()
            .unwrap()
            .starts_with("invalid format - invalid urlencoded string")
    );
    let a = sim
        .call(
            "POST",
            "/nodes/pve/qemu",
            &[
                ("vmid", "100"),
                ("sshkeys", &encode_component("ssh-ed25519 AAAA x")),
            ],
        )
        .await;
    assert_eq!(
        (a.status, a.reason.as_str()),
        (500, "SSH public key validation error")
    );
    // A missing image fails the task and leaves no VM behind.
    let upid = sim
        .ok(
            "POST",
            "/nodes/pve/qemu",
            &[
                ("vmid", "100"),
                ("scsi0", "local-zfs:0,import-from=local:import/nope.qcow2"),
            ],
        )
        .await;
    let s = sim.wait_task(upid.as_str().unwrap()).await;
    assert_eq!(
        s["exitstatus"],
        "unable to create VM 100 - cannot import from 'local:import/nope.qcow2' - volume 'local:import/nope.qcow2' does not exist"
    );
    assert_eq!(
        sim.call("GET", "/nodes/pve/qemu/100/config", &[])
            .await
            .status,
        500
    );
    assert!(
        sim.get("/nodes/pve/storage/local-zfs/content")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    sim.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn config_digest_delete_resize_clone_template() {
    let sim = Sim::start(0.001).await;
    sim.task_ok(
        "POST",
        "/nodes/pve/qemu",
        &[
            ("vmid", "100"),
            ("scsi0", "local-zfs:1"),
            ("net0", "virtio,bridge=vmbr0"),
        ],
    )
    .await;
    let cfg = sim.get("/nodes/pve/qemu/100/config").await;
    let digest = cfg["digest"].as_str().unwrap().to_string();
    assert_eq!(
        sim.ok(
            "PUT",
            "/nodes/pve/qemu/100/config",
            &[("memory", "1024"), ("digest", &digest)]
        )
        .await,
        Value::Null
    );
    let a = sim
        .call(
            "PUT",
            "/nodes/pve/qemu/100/config",
            &[("cores", "4"), ("digest", &digest)],
        )
        .await;
    assert_eq!(
        (a.status, a.reason.as_str()),
        (500, "checksum mismatch (file change by other user?)")
    );
    let a = sim.call("PUT", "/nodes/pve/qemu/100/config", &[]).await;
    assert_eq!((a.status, a.reason.as_str()), (500, "no options specified"));
    let a = sim
        .call(
            "PUT",
            "/nodes/pve/qemu/100/config",
            &[("cores", "4"), ("delete", "cores")],
        )
        .await;
    assert_eq!(a.status, 400);
    // POST is asynchronous and allocates in its task.
    sim.task_ok(
        "POST",
        "/nodes/pve/qemu/100/config",
        &[("scsi1", "local-zfs:2")],
    )
    .await;
    sim.ok("PUT", "/nodes/pve/qemu/100/config", &[("delete", "scsi1")])
        .await;
    let cfg = sim.get("/nodes/pve/qemu/100/config").await;
    assert_eq!(cfg["unused0"], "local-zfs:vm-100-disk-1");
    assert!(cfg.get("scsi1").is_none());
    // Resize: a task in 8.x; shrinking fails in the task.
    sim.task_ok(
        "PUT",
        "/nodes/pve/qemu/100/resize",
        &[("disk", "scsi0"), ("size", "+1G")],
    )
    .await;
    assert_eq!(
        sim.get("/nodes/pve/qemu/100/config").await["scsi0"],
        "local-zfs:vm-100-disk-0,size=2G"
    );
    let upid = sim
        .ok(
            "PUT",
            "/nodes/pve/qemu/100/resize",
            &[("disk", "scsi0"), ("size", "1G")],
        )
        .await;
    assert_eq!(
        sim.wait_task(upid.as_str().unwrap()).await["exitstatus"],
        "shrinking disks is not supported"
    );
    // Template, then a linked clone; the UPID id is the source vmid.
    sim.task_ok("POST", "/nodes/pve/qemu/100/template", &[])
        .await;
    let cfg = sim.get("/nodes/pve/qemu/100/config").await;
    assert_eq!(cfg["template"], 1);
    assert_eq!(cfg["scsi0"], "local-zfs:base-100-disk-0,size=2G");
    let a = sim
        .call(
            "POST",
            "/nodes/pve/qemu/100/clone",
            &[("newid", "101"), ("full", "0"), ("storage", "local-zfs")],
        )
        .await;
    assert_eq!(
        a.json["errors"]["storage"],
        "parameter 'storage' not allowed for linked clones"
    );
    let s = sim
        .task_ok("POST", "/nodes/pve/qemu/100/clone", &[("newid", "101")])
        .await;
    assert_eq!(s["id"], "100");
    assert_eq!(s["type"], "qmclone");
    let clone = sim.get("/nodes/pve/qemu/101/config").await;
    assert_eq!(clone["name"], "Copy-of-VM-100");
    assert_ne!(clone["net0"], cfg["net0"]);
    let a = sim
        .call("POST", "/nodes/pve/qemu/100/clone", &[("newid", "101")])
        .await;
    assert_eq!(
        (a.status, a.reason.as_str()),
        (500, "unable to create VM 101: config file already exists")
    );
    let a = sim
        .call("POST", "/nodes/pve/qemu/100/status/start", &[])
        .await;
    let s = sim.wait_task(a.data().as_str().unwrap()).await;
    assert_eq!(s["exitstatus"], "you can't start a vm if it's a template");
    sim.handle.shutdown().await.unwrap();
}
