//! The simulator over real HTTPS: wire protocol, auth, lifecycle, state
//! machine, locks, faults and control endpoints.

mod sim_support;

use homestak::sim::form::encode_component;
use serde_json::{Value, json};
use sim_support::{Sim, config, ssh_key};

#[tokio::test]
async fn version_and_envelope() {
    let sim = Sim::start(0.001).await;
    let a = sim.call("GET", "/version", &[]).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.content_type.as_deref(),
        Some("application/json;charset=UTF-8")
    );
    assert_eq!(a.data()["release"], "8.4");
    assert!(a.data()["version"].as_str().unwrap().starts_with("8.4."));
    let nodes = sim.get("/nodes").await;
    assert_eq!(nodes[0]["node"], "pve");
    assert_eq!(
        nodes[0]["ssl_fingerprint"],
        sim.handle.fingerprint().to_string()
    );
    sim.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn pveproxy_errors_for_paths_methods_and_auth() {
    let sim = Sim::start(0.001).await;
    let a = sim.call("GET", "/foo", &[]).await;
    assert_eq!(
        (a.status, a.reason.as_str()),
        (501, "Method 'GET /foo' not implemented")
    );
    assert_eq!(a.json["message"], "Method 'GET /foo' not implemented\n");
    let a = sim.call("PUT", "/version", &[]).await;
    assert_eq!(a.status, 501);

    let head = sim
        .client
        .head(sim.url("/version"))
        .header("Authorization", sim.auth())
        .send()
        .await
        .unwrap();
    assert_eq!(head.status().as_u16(), 501);
    let body = sim
        .client
        .get(sim.url("/version"))
        .header("Authorization", sim.auth())
        .body("a=1")
        .send()
        .await
        .unwrap();
    let a = Sim::answer(body).await;
    assert_eq!(
        (a.status, a.reason.as_str()),
        (501, "Unexpected content for method 'GET'")
    );
    let extjs = sim
        .client
        .get(format!("{}/api2/extjs/version", sim.handle.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(extjs.status().as_u16(), 501);

    // 401: empty body, no content type, PVE 8.4's reason phrases.
    let none = Sim::answer(sim.client.get(sim.url("/version")).send().await.unwrap()).await;
    assert_eq!(
        (none.status, none.reason.as_str(), none.body.as_str()),
        (401, "No ticket", "")
    );
    assert_eq!(none.content_type, None);
    let bad = sim
        .client
        .get(sim.url("/version"))
        .header("Authorization", "PVEAPIToken=root@pam!homestak=nope");
    let bad = Sim::answer(bad.send().await.unwrap()).await;
    assert_eq!(
        (bad.status, bad.reason.as_str(), bad.body.as_str()),
        (401, "Authentication failed!", "")
    );
    // The space variant of the header is accepted too.
    let space = sim
        .client
        .get(sim.url("/version"))
        .header(
            "Authorization",
            format!("PVEAPIToken {}", sim.handle.token()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(space.status().as_u16(), 200);
    sim.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn nextid_and_parameter_errors() {
    let sim = Sim::start(0.001).await;
    assert_eq!(sim.get("/cluster/nextid").await, json!("100"));
    let a = sim.call("GET", "/cluster/nextid", &[("vmid", "99")]).await;
    assert_eq!(
        (a.status, a.reason.as_str()),
        (400, "Parameter verification failed.")
    );
    assert_eq!(
        a.json["errors"]["vmid"],
        "invalid format - value does not look like a valid VM ID\n"
    );
    assert_eq!(a.json["message"], "Parameter verification failed.\n");
    assert_eq!(a.json["data"], Value::Null);
    let a = sim
        .call(
            "POST",
            "/nodes/pve/qemu",
            &[("vmid", "100"), ("bogus", "1"), ("cores", "x")],
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(
        a.json["errors"]["bogus"]
            .as_str()
            .unwrap()
            .starts_with("property is not defined in schema")
    );
    assert_eq!(
        a.json["errors"]["cores"],
        "type check ('integer') failed - got 'x'"
    );
    // A raw `;` in a value splits the pair, as in PVE.
    let raw = sim
        .client
        .post(sim.url("/nodes/pve/qemu"))
        .header("Authorization", sim.auth())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("vmid=100&tags=a;b")
        .send()
        .await
        .unwrap();
    let a = Sim::answer(raw).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(
        a.json["errors"]["b"]
            .as_str()
            .unwrap()
            .starts_with("property is not defined in schema")
    );
    sim.handle.shutdown().await.unwrap();
}

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

#[tokio::test]
async fn ticket_auth_needs_csrf_for_writes() {
    let sim = Sim::start(0.001).await;
    let bad = sim
        .client
        .post(sim.url("/access/ticket"))
        .form(&[("username", "root@pam"), ("password", "wrong")]);
    let bad = Sim::answer(bad.send().await.unwrap()).await;
    assert_eq!(
        (bad.status, bad.reason.as_str()),
        (401, "authentication failure")
    );
    let t = sim.client.post(sim.url("/access/ticket")).form(&[
        ("username", "root@pam"),
        ("password", sim.handle.root_password()),
    ]);
    let t = Sim::answer(t.send().await.unwrap()).await;
    assert_eq!(t.status, 200);
    let ticket = t.data()["ticket"].as_str().unwrap().to_string();
    let csrf = t.data()["CSRFPreventionToken"]
        .as_str()
        .unwrap()
        .to_string();
    let cookie = format!("PVEAuthCookie={}", encode_component(&ticket));
    let get = sim
        .client
        .get(sim.url("/nodes"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status().as_u16(), 200);
    let post = sim
        .client
        .post(sim.url("/nodes/pve/qemu"))
        .header("Cookie", &cookie)
        .form(&[("vmid", "100")]);
    let a = Sim::answer(post.send().await.unwrap()).await;
    assert_eq!(
        (a.status, a.reason.as_str()),
        (401, "Permission denied - invalid csrf token")
    );
    let post = sim
        .client
        .post(sim.url("/nodes/pve/qemu"))
        .header("Cookie", &cookie)
        .header("CSRFPreventionToken", &csrf)
        .form(&[("vmid", "100")]);
    let a = Sim::answer(post.send().await.unwrap()).await;
    assert_eq!(a.status, 200);
    assert!(
        a.data()
            .as_str()
            .unwrap()
            .ends_with(":qmcreate:100:root@pam:")
    );
    sim.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn upids_route_raw_or_percent_encoded() {
    let sim = Sim::start(0.001).await;
    let s = sim
        .task_ok("POST", "/nodes/pve/qemu", &[("vmid", "100")])
        .await;
    let upid = s["upid"].as_str().unwrap();
    let raw = format!(
        "{}/api2/json/nodes/pve/tasks/{upid}/status",
        sim.handle.url()
    );
    let enc = format!(
        "{}/api2/json/nodes/pve/tasks/{}/status",
        sim.handle.url(),
        encode_component(upid)
    );
    for url in [raw, enc] {
        let a = Sim::answer(
            sim.client
                .get(&url)
                .header("Authorization", sim.auth())
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(a.data()["upid"], upid, "{url}");
    }
    let a = sim
        .call("GET", "/nodes/pve/tasks/UPID:nope/status", &[])
        .await;
    assert_eq!(a.json["errors"]["upid"], "unable to parse worker upid");
    let list = sim.call("GET", "/nodes/pve/tasks", &[]).await;
    assert_eq!(list.json["total"], 1);
    assert_eq!(list.data()[0]["status"], "OK");
    assert!(list.data()[0]["endtime"].is_i64());
    sim.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn storage_lock_times_out_under_contention() {
    let mut c = config(0.01);
    // Each allocation holds local-zfs for 4 s of a 10 s lock timeout: the
    // fourth queued create cannot get the lock in time.
    c.latency.storage_lock_hold = 4.0;
    let sim = Sim::start_with(c).await;
    let mut upids = Vec::new();
    for vmid in 100..106 {
        let id = vmid.to_string();
        let u = sim
            .ok(
                "POST",
                "/nodes/pve/qemu",
                &[("vmid", id.as_str()), ("scsi0", "local-zfs:1")],
            )
            .await;
        upids.push(u.as_str().unwrap().to_string());
    }
    let mut failed = Vec::new();
    for u in &upids {
        let s = sim.wait_task(u).await;
        if s["exitstatus"] != "OK" {
            failed.push(s["exitstatus"].as_str().unwrap().to_string());
        }
    }
    assert!(
        !failed.is_empty(),
        "six parallel allocations should not all get the lock"
    );
    assert!(failed.len() < 6);
    for f in failed {
        assert!(
            f.ends_with(
                "can't lock file '/var/lock/pve-manager/pve-storage-local-zfs' - got timeout"
            ),
            "{f}"
        );
    }
    sim.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn control_counters_faults_and_out_of_band_changes() {
    let sim = Sim::start(0.001).await;
    sim.get("/version").await;
    sim.get("/nodes/pve/qemu").await;
    let r = sim.control("GET", "/_sim/requests", None).await;
    assert_eq!(r.data()["requests"]["GET /version"], 1);
    assert_eq!(r.data()["requests"]["GET /nodes/{node}/qemu"], 1);
    assert_eq!(
        sim.control("DELETE", "/_sim/requests", None).await.status,
        200
    );
    assert!(sim.handle.requests().is_empty());

    // Writes fail, reads pass.
    sim.control(
        "PUT",
        "/_sim/faults",
        Some(json!({"write_error_rate": 1.0, "error_status": 503})),
    )
    .await;
    let a = sim
        .call("POST", "/nodes/pve/qemu", &[("vmid", "100")])
        .await;
    assert_eq!(a.status, 503);
    assert_eq!(sim.call("GET", "/version", &[]).await.status, 200);
    // Every connection dropped.
    sim.control("PUT", "/_sim/faults", Some(json!({"reset_rate": 1.0})))
        .await;
    let err = sim
        .client
        .get(sim.url("/version"))
        .header("Authorization", sim.auth())
        .send()
        .await;
    assert!(err.is_err(), "the connection should be dropped");
    sim.control("PUT", "/_sim/faults", Some(json!({}))).await;

    // A foreign VM appears at once; out-of-band edits show in the API.
    let f = sim
        .control(
            "POST",
            "/_sim/vms",
            Some(json!({"vmid": 200, "name": "legacy", "running": true, "disk_size": "4G"})),
        )
        .await;
    assert_eq!(f.status, 200, "{}", f.body);
    let list = sim.get("/cluster/resources").await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == "qemu/200" && r["status"] == "running")
    );
    sim.control(
        "PATCH",
        "/_sim/vms/200",
        Some(json!({"cores": 8, "memory": 4096, "power": "stopped"})),
    )
    .await;
    let cfg = sim.get("/nodes/pve/qemu/200/config").await;
    assert_eq!(
        (cfg["cores"].as_i64(), cfg["memory"].as_str()),
        (Some(8), Some("4096"))
    );
    assert_eq!(
        sim.get("/nodes/pve/qemu/200/status/current").await["status"],
        "stopped"
    );
    // Per-VM faults: this VM's agent never comes up, its tasks fail.
    sim.control(
        "PUT",
        "/_sim/faults/vms/200",
        Some(json!({"agent_never_ready_rate": 1.0})),
    )
    .await;
    sim.ok("PUT", "/nodes/pve/qemu/200/config", &[("agent", "1")])
        .await;
    sim.task_ok("POST", "/nodes/pve/qemu/200/status/start", &[])
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let a = sim
        .call(
            "GET",
            "/nodes/pve/qemu/200/agent/network-get-interfaces",
            &[],
        )
        .await;
    assert_eq!(a.reason, "QEMU guest agent is not running");
    let view = sim.control("GET", "/_sim/vms/200", None).await;
    assert_eq!(view.data()["agent_ready"], false);
    assert!(view.data()["address"].as_str().unwrap().starts_with("127."));
    assert_eq!(
        sim.control("DELETE", "/_sim/vms/200", None).await.status,
        200
    );
    assert_eq!(
        sim.call("GET", "/nodes/pve/qemu/200/config", &[])
            .await
            .status,
        500
    );
    // The control endpoints need the token too.
    let anon = sim
        .client
        .get(format!("{}/_sim/requests", sim.handle.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status().as_u16(), 401);
    sim.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn failed_tasks_by_injected_fault_clean_up() {
    let mut c = config(0.001);
    c.faults.task_failure_rate = 1.0;
    let sim = Sim::start_with(c).await;
    let u = sim
        .ok(
            "POST",
            "/nodes/pve/qemu",
            &[("vmid", "100"), ("scsi0", "local-zfs:1")],
        )
        .await;
    let s = sim.wait_task(u.as_str().unwrap()).await;
    assert!(
        s["exitstatus"]
            .as_str()
            .unwrap()
            .starts_with("unable to create VM 100 - injected fault"),
        "{s}"
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
async fn addresses_are_unique_across_simulators() {
    let a = Sim::start(0.001).await;
    let b = Sim::start(0.001).await;
    for sim in [&a, &b] {
        for vmid in ["100", "101"] {
            sim.task_ok("POST", "/nodes/pve/qemu", &[("vmid", vmid)])
                .await;
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for sim in [&a, &b] {
        for vm in sim
            .control("GET", "/_sim/vms", None)
            .await
            .data()
            .as_array()
            .unwrap()
        {
            assert!(
                seen.insert(vm["address"].as_str().unwrap().to_string()),
                "duplicate {vm}"
            );
        }
    }
    assert_eq!(seen.len(), 4);
    a.handle.shutdown().await.unwrap();
    b.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(0.001);
    c.state_file = Some(dir.path().join("state.json"));
    let sim = Sim::start_with(c.clone()).await;
    let token = sim.handle.token().to_string();
    sim.task_ok(
        "POST",
        "/nodes/pve/qemu",
        &[("vmid", "100"), ("name", "keep"), ("tags", "b,a")],
    )
    .await;
    sim.handle.shutdown().await.unwrap();
    let sim = Sim::start_with(c).await;
    assert_eq!(sim.handle.token(), token);
    let cfg = sim.get("/nodes/pve/qemu/100/config").await;
    assert_eq!(
        (cfg["name"].as_str(), cfg["tags"].as_str()),
        (Some("keep"), Some("a;b"))
    );
    sim.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn download_url_tokens_and_network() {
    let sim = Sim::start(0.001).await;
    let a = sim
        .call(
            "POST",
            "/nodes/pve/storage/local/download-url",
            &[
                ("url", "https://example.invalid/x.img"),
                ("content", "import"),
                ("filename", "x.img"),
            ],
        )
        .await;
    assert_eq!(a.json["errors"]["filename"], "wrong file extension");
    let s = sim
        .task_ok(
            "POST",
            "/nodes/pve/storage/local/download-url",
            &[
                ("url", "https://example.invalid/noble.qcow2"),
                ("content", "import"),
                ("filename", "noble.qcow2"),
            ],
        )
        .await;
    assert_eq!(s["type"], "download");
    let content = sim
        .call(
            "GET",
            "/nodes/pve/storage/local/content",
            &[("content", "import")],
        )
        .await;
    assert!(
        content
            .data()
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["volid"] == "local:import/noble.qcow2")
    );
    let a = sim
        .call(
            "POST",
            "/nodes/pve/storage/local-zfs/download-url",
            &[
                ("url", "https://x/y.qcow2"),
                ("content", "import"),
                ("filename", "y.qcow2"),
            ],
        )
        .await;
    assert_eq!(
        a.reason,
        "can't upload to storage type 'zfspool', not a file based storage!"
    );

    let created = sim
        .ok(
            "POST",
            "/access/users/root@pam/token/ci",
            &[("privsep", "0")],
        )
        .await;
    assert_eq!(created["full-tokenid"], "root@pam!ci");
    let value = created["value"].as_str().unwrap();
    let again = sim
        .call("POST", "/access/users/root@pam/token/ci", &[])
        .await;
    assert_eq!(again.json["errors"]["tokenid"], "Token already exists.");
    let with_new = sim
        .client
        .get(sim.url("/access/users/root@pam/token/ci"))
        .header("Authorization", format!("PVEAPIToken=root@pam!ci={value}"))
        .send()
        .await
        .unwrap();
    assert_eq!(Sim::answer(with_new).await.data()["privsep"], 0);
    assert_eq!(
        sim.ok(
            "PUT",
            "/access/users/root@pam/token/ci",
            &[("comment", "x"), ("expire", "0")]
        )
        .await,
        json!({"comment": "x", "expire": "0"})
    );
    sim.ok("DELETE", "/access/users/root@pam/token/ci", &[])
        .await;

    sim.ok(
        "POST",
        "/nodes/pve/network",
        &[
            ("iface", "vmbr1"),
            ("type", "bridge"),
            ("cidr", "10.10.0.1/24"),
            ("autostart", "1"),
        ],
    )
    .await;
    let pending = sim
        .call("GET", "/nodes/pve/network", &[("type", "bridge")])
        .await;
    assert!(pending.json["changes"].as_str().unwrap().contains("vmbr1"));
    sim.task_ok("PUT", "/nodes/pve/network", &[]).await;
    let applied = sim.call("GET", "/nodes/pve/network/vmbr1", &[]).await;
    assert_eq!(applied.data()["active"], 1);
    assert!(
        sim.call("GET", "/nodes/pve/network", &[])
            .await
            .json
            .get("changes")
            .is_none()
    );
    sim.handle.shutdown().await.unwrap();
}
