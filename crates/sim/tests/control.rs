//! Simulator behaviour beyond single requests: storage lock contention,
//! `/_sim/` control endpoints and faults, address uniqueness across
//! simulators, `--state` persistence, download-url, tokens and network.

use crate::support::{Sim, config};
use serde_json::{Value, json};

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
async fn a_download_whose_checksum_differs_fails_and_keeps_nothing() {
    let good = "ab".repeat(32);
    let mut config = config(0.001);
    config
        .downloads
        .sha256
        .insert("noble.qcow2".into(), good.clone());
    let sim = Sim::start_with(config).await;
    let download = |digest: String| {
        let sim = &sim;
        async move {
            let upid = sim
                .ok(
                    "POST",
                    "/nodes/pve/storage/local/download-url",
                    &[
                        ("url", "https://example.invalid/rel/noble.qcow2"),
                        ("content", "import"),
                        ("filename", "noble.qcow2"),
                        ("checksum", &digest),
                        ("checksum-algorithm", "sha256"),
                    ],
                )
                .await;
            sim.wait_task(upid.as_str().unwrap()).await
        }
    };
    let status = download("cd".repeat(32)).await;
    let exit = status["exitstatus"].as_str().unwrap();
    assert!(
        exit.starts_with(&format!("checksum mismatch: got '{good}' != expect '")),
        "{exit}"
    );
    let listed = |content: &Value| {
        content
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["volid"] == "local:import/noble.qcow2")
    };
    let content = sim
        .call(
            "GET",
            "/nodes/pve/storage/local/content",
            &[("content", "import")],
        )
        .await;
    assert!(!listed(content.data()), "no file is kept");
    // The right digest (either case) passes.
    let status = download(good.to_uppercase()).await;
    assert_eq!(status["exitstatus"], "OK");
    let content = sim
        .call(
            "GET",
            "/nodes/pve/storage/local/content",
            &[("content", "import")],
        )
        .await;
    assert!(listed(content.data()));
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
