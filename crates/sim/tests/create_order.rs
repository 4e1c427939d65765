//! PVE's create order and answers lost after the work: the POST reserves
//! the vmid with a config holding only `lock: create`, the task writes every
//! option once the import is done (or removes the placeholder when it
//! fails), and an answer dropped after the work leaves that work done.

use serde_json::{Value, json};

use crate::support::{Sim, config};

fn create_form(vmid: &str) -> Vec<(&'static str, String)> {
    vec![
        ("vmid", vmid.to_string()),
        ("name", format!("vm{vmid}")),
        ("cores", "2".into()),
        (
            "scsi0",
            "local-zfs:0,import-from=local:import/debian-12.qcow2".into(),
        ),
        ("ide2", "local-zfs:cloudinit".into()),
        ("net0", "virtio,bridge=vmbr0".into()),
        ("tags", "homestak".into()),
        ("description", "homestak.manifest: demo".into()),
    ]
}

fn pairs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(a, b)| (*a, b.as_str())).collect()
}

/// A simulator whose creates take 10 simulated seconds before the import:
/// long enough to look at the placeholder.
async fn slow_creates() -> Sim {
    let mut c = config(0.01);
    c.latency.create = 10.0;
    Sim::start_with(c).await
}

/// The keys of a JSON object, sorted.
fn keys(v: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

fn resource(list: &Value, vmid: u64) -> Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|r| r["vmid"] == vmid)
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_create_shows_only_its_lock_until_the_import_is_done() {
    let sim = slow_creates().await;
    let upid = sim
        .ok("POST", "/nodes/pve/qemu", &pairs(&create_form("100")))
        .await;
    let upid = upid.as_str().unwrap().to_string();

    // At once: the placeholder, nothing but the lock (and the digest).
    let cfg = sim.get("/nodes/pve/qemu/100/config").await;
    assert_eq!(keys(&cfg), ["digest", "lock"], "{cfg}");
    assert_eq!(cfg["lock"], "create");
    let listed = resource(&sim.get("/cluster/resources?type=vm").await, 100);
    assert_eq!(listed["lock"], "create", "{listed}");
    assert_eq!(listed["name"], "VM 100");
    assert!(listed.get("tags").is_none(), "{listed}");
    // Its task is in the node's list of running tasks, and only there.
    let active = sim
        .ok(
            "GET",
            "/nodes/pve/tasks",
            &[
                ("source", "active"),
                ("vmid", "100"),
                ("typefilter", "qmcreate"),
            ],
        )
        .await;
    assert_eq!(active.as_array().unwrap().len(), 1, "{active}");
    assert_eq!(active[0]["upid"], upid.as_str());
    let archive = sim.ok("GET", "/nodes/pve/tasks", &[("vmid", "100")]).await;
    assert!(archive.as_array().unwrap().is_empty(), "{archive}");

    // Once the task is done: every option at once, the lock gone.
    let status = sim.wait_task(&upid).await;
    assert_eq!(status["exitstatus"], "OK", "{status}");
    let cfg = sim.get("/nodes/pve/qemu/100/config").await;
    assert!(cfg.get("lock").is_none(), "{cfg}");
    assert_eq!(cfg["name"], "vm100");
    assert_eq!(cfg["tags"], "homestak");
    assert_eq!(cfg["description"], "homestak.manifest: demo");
    assert_eq!(cfg["scsi0"], "local-zfs:vm-100-disk-0,size=2G");
    assert!(
        cfg["net0"].as_str().unwrap().contains("bridge=vmbr0"),
        "{cfg}"
    );
    assert!(
        cfg.get("smbios1").is_some() && cfg.get("meta").is_some(),
        "{cfg}"
    );
    let listed = resource(&sim.get("/cluster/resources?type=vm").await, 100);
    assert!(listed.get("lock").is_none(), "{listed}");
    assert_eq!(listed["name"], "vm100");
    sim.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_failed_create_removes_its_placeholder() {
    let sim = slow_creates().await;
    sim.control(
        "PUT",
        "/_sim/faults/vms/100",
        Some(json!({"task_failure_rate": 1.0})),
    )
    .await;
    let upid = sim
        .ok("POST", "/nodes/pve/qemu", &pairs(&create_form("100")))
        .await;
    assert_eq!(
        sim.get("/nodes/pve/qemu/100/config").await["lock"],
        "create"
    );
    let status = sim.wait_task(upid.as_str().unwrap()).await;
    assert_ne!(status["exitstatus"], "OK");
    let gone = sim.call("GET", "/nodes/pve/qemu/100/config", &[]).await;
    assert_eq!(gone.status, 500, "{}", gone.body);
    let faults = sim.control("GET", "/_sim/faults", None).await;
    assert_eq!(
        faults.data()["injected"]["failed_tasks"],
        1,
        "{}",
        faults.body
    );
    sim.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_answer_dropped_after_the_work_leaves_the_work_done() {
    let sim = slow_creates().await;
    sim.control(
        "PUT",
        "/_sim/faults",
        Some(json!({"reset_after_rate": 1.0})),
    )
    .await;
    let sent = sim
        .client
        .post(sim.url("/nodes/pve/qemu"))
        .header("Authorization", sim.auth())
        .form(&pairs(&create_form("100")))
        .send()
        .await;
    assert!(sent.is_err(), "the connection should be dropped: {sent:?}");
    sim.control("PUT", "/_sim/faults", Some(json!({}))).await;
    // The create went through: its placeholder and its running task.
    assert_eq!(
        sim.get("/nodes/pve/qemu/100/config").await["lock"],
        "create"
    );
    let tasks = sim
        .ok(
            "GET",
            "/nodes/pve/tasks",
            &[
                ("source", "all"),
                ("vmid", "100"),
                ("typefilter", "qmcreate"),
            ],
        )
        .await;
    let upid = tasks[0]["upid"].as_str().unwrap().to_string();
    assert_eq!(sim.wait_task(&upid).await["exitstatus"], "OK");
    assert_eq!(sim.get("/nodes/pve/qemu/100/config").await["name"], "vm100");

    // An error in place of the answer: the same, for writes and reads.
    sim.control(
        "PUT",
        "/_sim/faults",
        Some(json!({"write_error_after_rate": 1.0, "read_error_after_rate": 1.0, "error_status": 503})),
    )
    .await;
    let a = sim
        .call("POST", "/nodes/pve/qemu", &pairs(&create_form("101")))
        .await;
    assert_eq!(a.status, 503, "{}", a.body);
    let a = sim.call("GET", "/nodes/pve/qemu/101/config", &[]).await;
    assert_eq!(a.status, 503, "{}", a.body);
    let faults = sim.control("GET", "/_sim/faults", None).await;
    let injected = &faults.data()["injected"];
    assert_eq!(injected["resets_after"], 1, "{injected}");
    assert_eq!(injected["write_errors_after"], 1, "{injected}");
    assert!(
        injected["read_errors_after"].as_u64().unwrap() >= 1,
        "{injected}"
    );
    assert_eq!(injected["resets"], 0, "{injected}");
    sim.control("PUT", "/_sim/faults", Some(json!({}))).await;
    assert_eq!(
        sim.get("/nodes/pve/qemu/101/config").await["lock"],
        "create"
    );
    sim.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_foreign_placeholder_holds_only_the_lock() {
    let sim = Sim::start(0.001).await;
    let a = sim
        .control(
            "POST",
            "/_sim/vms",
            Some(json!({"vmid": 300, "placeholder": true})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let cfg = sim.get("/nodes/pve/qemu/300/config").await;
    assert_eq!(keys(&cfg), ["digest", "lock"], "{cfg}");
    let refused = sim
        .control(
            "POST",
            "/_sim/vms",
            Some(json!({"vmid": 301, "placeholder": true, "name": "x"})),
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    sim.handle.shutdown().await.unwrap();
}
