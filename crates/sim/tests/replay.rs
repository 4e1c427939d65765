//! Replays the requests of the real recorded exchanges in
//! `../shared/pve-api/responses/fog-proxmox/` (PVE 6.2 and 7.4) against
//! the simulator and compares status, reason phrase and the JSON shape
//! (keys and value types) with what the real server answered.
//!
//! The simulator is PVE 8.4; differences that come from the version (or
//! from what the simulator deliberately leaves out) are listed in
//! [`DEVIATIONS`] with a reason. Any other difference fails the test. Keys
//! the simulator adds (fields newer PVE versions return) are reported but
//! do not fail.
//!
//! Setup steps (creating the token the recording used, attaching a disk
//! so that a later `delete` leaves `unused0`, …) recreate the state the
//! recording implies, and requests run in an order that makes each
//! recorded answer possible (the recordings come from several sessions).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::support::{Sim, config};
use homestak_sim::config::{NodeConfig, Size, StorageConfig, StorageKind};
use serde_json::Value;

/// (file, what differs, why). `what` is a JSON path like `data.vmid`, or
/// `reason` / `status` / `data` for the whole answer.
const DEVIATIONS: &[(&str, &str, &str)] = &[
    (
        "pve6.2/01-version.json",
        "data.keyboard",
        "the datacenter `keyboard` key left /version after 6.x",
    ),
    (
        "pve6.2/05-token-auth-401.json",
        "reason",
        "pve-manager >= 8.4.17 answers every auth failure with `Authentication failed!` (commit d3973e63); 6.2 said `invalid token value!`",
    ),
    (
        "pve6.2/17-qemu-list.json",
        "data[].template",
        "6.2 sent `template: \"\"` for non-templates; 7.x/8.x leave the key out",
    ),
    (
        "pve6.2/17-qemu-list.json",
        "data[].vmid",
        "6.2 sent vmid as a string; 7.4+ sends an integer (REC pve7.4/06)",
    ),
    (
        "pve6.2/17-qemu-list.json",
        "data[].pid",
        "6.2 sent `pid: null` for stopped VMs; 7.4+ leaves it out",
    ),
    (
        "pve6.2/27-template.json",
        "data",
        "POST …/template returned null in 6.2; 8.x returns a qmtemplate UPID",
    ),
    (
        "pve6.2/29-resize-sync-pve6.json",
        "data",
        "PUT …/resize returned null in 6.2; 8.x returns a resize UPID",
    ),
    (
        "pve6.2/32-status-current-stopped.json",
        "data.template",
        "6.2 sent `template: \"\"`; 7.4+ leaves it out (REC pve7.4/06)",
    ),
    (
        "pve6.2/32-status-current-stopped.json",
        "data.vmid",
        "6.2 sent vmid as a string; 7.4+ an integer (REC pve7.4/06)",
    ),
    (
        "pve6.2/32-status-current-stopped.json",
        "data.pid",
        "6.2 sent `pid: null`; 7.4+ leaves it out when stopped (REC pve7.4/06)",
    ),
    (
        "pve6.2/33-status-current-running.json",
        "data.template",
        "6.2 sent `template: \"\"`; 7.4+ leaves it out",
    ),
    (
        "pve6.2/33-status-current-running.json",
        "data.vmid",
        "6.2 sent vmid as a string; 7.4+ an integer",
    ),
    (
        "pve6.2/33-status-current-running.json",
        "data.pid",
        "6.2 sent pid as a string; 8.0 sends an integer (go-proxmox PVE 8 capture)",
    ),
    (
        "pve6.2/33-status-current-running.json",
        "data.nics.tap100i0.netin",
        "6.2 sent NIC counters as strings; 8.0 sends integers (go-proxmox PVE 8 capture)",
    ),
    (
        "pve6.2/33-status-current-running.json",
        "data.nics.tap100i0.netout",
        "6.2 sent NIC counters as strings; 8.0 sends integers (go-proxmox PVE 8 capture)",
    ),
    (
        "pve6.2/37-storage-content-images.json",
        "data[].ctime",
        "this 6.2 answer had ctime as a string; the next one (38) and 8.x have an integer (NOTES §4)",
    ),
    (
        "pve6.2/38-storage-content-backup.json",
        "data",
        "backups (vzdump) are not simulated, so local has no backup volume of VM 100",
    ),
];

/// Recorded exchanges not replayed, with the reason.
const NOT_REPLAYED: &[(&str, &str)] = &[
    (
        "pve6.2/57-task-status-failed-vzcreate.json",
        "LXC containers are not simulated (a failed vzcreate task)",
    ),
    (
        "pve6.2/58-task-log-failed-vzcreate.json",
        "LXC containers are not simulated (a failed vzcreate task)",
    ),
];

fn shared_dir() -> PathBuf {
    std::env::var_os("HOMESTAK_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                concat!(env!("CARGO_MANIFEST_DIR"), "/../.."),
                "/../shared"
            ))
        })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Shape differences (recorded vs ours); `extra` collects keys only we send.
fn shape(
    rec: &Value,
    ours: &Value,
    path: &str,
    diffs: &mut Vec<(String, String)>,
    extra: &mut Vec<String>,
) {
    match (rec, ours) {
        (Value::Object(r), Value::Object(o)) => {
            for (k, rv) in r {
                let p = format!("{path}.{k}");
                match o.get(k) {
                    None => diffs.push((p, "missing".into())),
                    Some(ov) => shape(rv, ov, &p, diffs, extra),
                }
            }
            extra.extend(
                o.keys()
                    .filter(|k| !r.contains_key(*k))
                    .map(|k| format!("{path}.{k}")),
            );
        }
        (Value::Array(r), Value::Array(o)) => match (r.first(), o.first()) {
            (Some(rv), Some(ov)) => shape(rv, ov, &format!("{path}[]"), diffs, extra),
            (Some(_), None) => {
                diffs.push((path.to_string(), "empty array, recorded had items".into()))
            }
            _ => {}
        },
        _ if kind(rec) != kind(ours) => diffs.push((
            path.to_string(),
            format!("{} vs ours {}", kind(rec), kind(ours)),
        )),
        _ => {}
    }
}

struct Replay {
    sim: Sim,
    dir: PathBuf,
    /// (type, id) of a task → our UPID.
    tasks: BTreeMap<(String, String), String>,
    /// Secret of the `root1` token the recording authenticates with.
    root1: Option<String>,
    matched: usize,
    with_deviations: usize,
    total: usize,
    unexpected: Vec<String>,
    used_deviations: Vec<(String, String)>,
    extras: BTreeMap<String, Vec<String>>,
}

impl Replay {
    fn load(&self, file: &str) -> Value {
        let text = std::fs::read_to_string(self.dir.join(file)).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn rewrite_path(&self, path: &str) -> String {
        let mut out = Vec::new();
        for seg in path.split('/') {
            if seg.starts_with("UPID:") {
                let parts: Vec<&str> = seg.split(':').collect();
                let key = (parts[5].to_string(), parts[6].to_string());
                let ours = self
                    .tasks
                    .get(&key)
                    .cloned()
                    .or_else(|| self.tasks.values().last().cloned());
                out.push(ours.unwrap_or_else(|| seg.to_string()));
            } else if seg == "bobsinclar@pve" {
                // The simulator has one user, root@pam.
                out.push("root@pam".to_string());
            } else {
                out.push(seg.to_string());
            }
        }
        out.join("/")
    }

    async fn step(&mut self, file: &str) {
        let rec = self.load(file);
        let req = &rec["request"];
        let method = req["method"].as_str().unwrap();
        let path = self.rewrite_path(req["path"].as_str().unwrap());
        let query = req["query"].as_str().unwrap_or("");
        let mut url = format!("{}{path}", self.sim.handle.url());
        if !query.is_empty() {
            url = format!("{url}?{query}");
        }
        let mut body = req["body"].as_str().unwrap_or("").to_string();
        let auth = match file {
            f if f.ends_with("02-ticket-ok.json") => {
                body = format!(
                    "username=root%40pam&password={}",
                    self.sim.handle.root_password()
                );
                None
            }
            f if f.ends_with("03-ticket-401.json") => {
                body = "username=root%40pam&password=wrong".into();
                None
            }
            f if f.ends_with("04-token-auth-ok.json") => Some(format!(
                "PVEAPIToken=root@pam!root1={}",
                self.root1.clone().unwrap()
            )),
            f if f.ends_with("05-token-auth-401.json") => {
                Some("PVEAPIToken=root@pam!root1=00000000-0000-4000-8000-000000000000".into())
            }
            _ => Some(self.sim.auth()),
        };
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self.sim.client.request(m, &url);
        if let Some(a) = auth {
            r = r.header("Authorization", a);
        }
        if !body.is_empty() {
            r = r
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body);
        }
        let ours = Sim::answer(r.send().await.unwrap()).await;
        if let Some(upid) = ours.json["data"]
            .as_str()
            .filter(|s| s.starts_with("UPID:"))
        {
            let parts: Vec<&str> = upid.split(':').collect();
            self.tasks.insert(
                (parts[5].to_string(), parts[6].to_string()),
                upid.to_string(),
            );
        }

        let resp = &rec["response"];
        let mut diffs = Vec::new();
        if resp["status"].as_u64() != Some(u64::from(ours.status)) {
            diffs.push((
                "status".to_string(),
                format!("{} vs ours {}", resp["status"], ours.status),
            ));
        }
        if resp["reason"].as_str() != Some(ours.reason.as_str()) {
            diffs.push((
                "reason".to_string(),
                format!("{:?} vs ours {:?}", resp["reason"], ours.reason),
            ));
        }
        let mut extra = Vec::new();
        let rec_json = &resp["json"];
        if !rec_json.is_null() || !resp["body"].as_str().unwrap_or("").is_empty() {
            shape(rec_json, &ours.json, "", &mut diffs, &mut extra);
        } else if !ours.body.is_empty() {
            diffs.push(("body".into(), format!("recorded empty, ours {}", ours.body)));
        }
        self.total += 1;
        let mut unexpected = Vec::new();
        let mut deviated = false;
        for (p, what) in diffs {
            let p = p.trim_start_matches('.').to_string();
            let p = if p.is_empty() { "data".to_string() } else { p };
            let listed = DEVIATIONS.iter().any(|(f, dp, _)| {
                *f == file
                    && (*dp == p
                        || p.starts_with(&format!("{dp}."))
                        || p.starts_with(&format!("{dp}[")))
            });
            if listed {
                deviated = true;
                self.used_deviations.push((file.to_string(), p));
            } else {
                unexpected.push(format!("{file}: {p}: {what}"));
            }
        }
        if !extra.is_empty() {
            self.extras.insert(file.to_string(), extra);
        }
        if unexpected.is_empty() {
            self.matched += 1;
            if deviated {
                self.with_deviations += 1;
            }
        } else {
            self.unexpected.extend(unexpected);
        }
    }

    /// Waits for our task of (type, id).
    async fn wait(&self, kind: &str, id: &str) {
        let upid = self
            .tasks
            .get(&(kind.to_string(), id.to_string()))
            .unwrap_or_else(|| panic!("no {kind}:{id} task"));
        self.sim.wait_task(upid).await;
    }
}

fn replay_config(node: &str) -> homestak_sim::Config {
    let mut c = config(0.2);
    c.nodes = vec![NodeConfig {
        name: node.into(),
        cpus: 2,
        memory: Size(2 << 30),
        storages: vec![
            StorageConfig {
                id: "local".into(),
                kind: StorageKind::Dir,
                content: ["iso", "vztmpl", "backup", "import", "snippets"]
                    .map(String::from)
                    .to_vec(),
                size: Size(100 << 30),
                shared: false,
                lock_hold: None,
            },
            StorageConfig {
                id: "local-lvm".into(),
                kind: StorageKind::Lvmthin,
                content: ["images", "rootdir"].map(String::from).to_vec(),
                size: Size(100 << 30),
                shared: false,
                lock_hold: Some(0.1),
            },
        ],
    }];
    c.images.clear();
    c.images.push(homestak_sim::config::ImageConfig {
        volid: "local:import/debian-12.qcow2".into(),
        node: None,
        size: Size(330 << 20),
        virtual_size: Some(Size(2 << 30)),
        pve: None,
    });
    c
}

#[tokio::test]
async fn recorded_exchanges_replay() {
    let dir = shared_dir().join("pve-api/responses/fog-proxmox");
    if !dir.exists() {
        println!("SKIPPED: {} not found (../shared absent)", dir.display());
        return;
    }
    let recorded: Vec<String> = std::fs::read_dir(dir.join("pve6.2"))
        .unwrap()
        .chain(std::fs::read_dir(dir.join("pve7.4")).unwrap())
        .map(|e| {
            let p = e.unwrap().path();
            format!(
                "{}/{}",
                p.parent().unwrap().file_name().unwrap().to_string_lossy(),
                p.file_name().unwrap().to_string_lossy()
            )
        })
        .collect();

    // PVE 6.2 session, node `pve`.
    let sim = Sim::start_with(replay_config("pve")).await;
    let created = sim
        .ok(
            "POST",
            "/access/users/root@pam/token/root1",
            &[("privsep", "0")],
        )
        .await;
    let mut r = Replay {
        root1: created["value"].as_str().map(String::from),
        sim,
        dir: dir.clone(),
        tasks: BTreeMap::new(),
        matched: 0,
        with_deviations: 0,
        total: 0,
        unexpected: Vec::new(),
        used_deviations: Vec::new(),
        extras: BTreeMap::new(),
    };
    for n in [
        "01-version",
        "02-ticket-ok",
        "03-ticket-401",
        "04-token-auth-ok",
        "05-token-auth-401",
        "06-token-post",
        "07-token-get",
        "08-token-put",
        "09-token-delete",
        "10-cluster-resources-node",
        "11-nodes",
        "12-nextid",
        "13-nextid-400-format",
        "15-qemu-create",
    ] {
        r.step(&format!("pve6.2/{n}.json")).await;
    }
    r.wait("qmcreate", "100").await;
    for n in [
        "40-task-status-ok-qmcreate",
        "41-task-log-qmcreate",
        "14-nextid-400-exists",
        "16-qemu-create-500-exists",
        "17-qemu-list",
        "18-config-get-fresh",
        "19-config-post-alloc-disk",
        "42-task-status-running-qmconfig",
    ] {
        r.step(&format!("pve6.2/{n}.json")).await;
    }
    r.wait("qmconfig", "100").await;
    for n in [
        "43-task-status-ok-qmconfig",
        "44-task-log-qmconfig",
        "20-config-get-after-alloc",
    ] {
        r.step(&format!("pve6.2/{n}.json")).await;
    }
    // The recording deleted an ide0 disk we never saw being attached.
    r.sim
        .ok(
            "PUT",
            "/nodes/pve/qemu/100/config",
            &[("ide0", "local-lvm:1")],
        )
        .await;
    r.step("pve6.2/21-config-post-delete.json").await;
    r.wait("qmconfig", "100").await;
    r.step("pve6.2/22-config-get-unused.json").await;
    r.sim
        .ok(
            "PUT",
            "/nodes/pve/qemu/100/config",
            &[("ide2", "none,media=cdrom")],
        )
        .await;
    r.step("pve6.2/23-config-post-net0.json").await;
    r.wait("qmconfig", "100").await;
    r.step("pve6.2/24-config-get-net0-mac.json").await;
    r.step("pve6.2/25-config-post-serial0.json").await;
    r.wait("qmconfig", "100").await;
    r.step("pve6.2/26-clone.json").await;
    r.step("pve6.2/45-task-status-running-qmclone.json").await;
    r.wait("qmclone", "100").await;
    for n in [
        "46-task-status-ok-qmclone",
        "47-task-log-qmclone",
        "27-template",
    ] {
        r.step(&format!("pve6.2/{n}.json")).await;
    }
    r.wait("qmtemplate", "101").await;
    r.step("pve6.2/28-config-get-template.json").await;
    r.step("pve6.2/29-resize-sync-pve6.json").await;
    r.wait("resize", "100").await;
    r.step("pve6.2/30-start.json").await;
    r.step("pve6.2/48-task-status-running-qmstart.json").await;
    r.wait("qmstart", "100").await;
    for n in [
        "49-task-status-ok-qmstart",
        "50-task-log-qmstart",
        "33-status-current-running",
        "31-stop",
        "51-task-status-running-qmstop",
    ] {
        r.step(&format!("pve6.2/{n}.json")).await;
    }
    r.wait("qmstop", "100").await;
    for n in [
        "52-task-status-ok-qmstop",
        "53-task-log-qmstop",
        "32-status-current-stopped",
        "36-node-storage-list",
        "37-storage-content-images",
        "38-storage-content-backup",
        "35-destroy",
        "54-task-status-running-qmdestroy",
    ] {
        r.step(&format!("pve6.2/{n}.json")).await;
    }
    r.wait("qmdestroy", "101").await;
    for n in [
        "55-task-status-ok-qmdestroy",
        "56-task-log-qmdestroy",
        "34-status-current-500-missing",
        "39-node-tasks-list",
        "59-task-delete",
    ] {
        r.step(&format!("pve6.2/{n}.json")).await;
    }
    let Replay { sim, .. } = r;
    sim.handle.shutdown().await.unwrap();

    // PVE 7.4 session, node `proxmox-noris`.
    let sim74 = Sim::start_with(replay_config("proxmox-noris")).await;
    let mut r74 = Replay {
        sim: sim74,
        tasks: BTreeMap::new(),
        ..r
    };
    for n in [
        "01-nodes",
        "02-nextid-assert-free",
        "03-qemu-create",
        "04-task-status-running-qmcreate",
    ] {
        r74.step(&format!("pve7.4/{n}.json")).await;
    }
    r74.wait("qmcreate", "101").await;
    for n in [
        "05-task-status-ok-qmcreate",
        "06-status-current-stopped",
        "07-config-get-fresh",
        "08-node-tasks-list",
        "09-destroy",
    ] {
        r74.step(&format!("pve7.4/{n}.json")).await;
    }
    r74.wait("qmdestroy", "101").await;
    r74.step("pve7.4/10-task-status-ok-qmdestroy.json").await;

    let r = r74;
    println!(
        "replayed {} of {} recorded exchanges; {} not replayed:",
        r.total,
        recorded.len(),
        NOT_REPLAYED.len()
    );
    for (f, why) in NOT_REPLAYED {
        println!("  - {f}: {why}");
    }
    println!("expected deviations (PVE 6.2/7.4 vs 8.4, or not simulated):");
    for (f, p, why) in DEVIATIONS {
        let seen = r
            .used_deviations
            .iter()
            .any(|(uf, up)| uf == f && (up == p || up.starts_with(p)));
        println!(
            "  - {f} {p}: {why}{}",
            if seen { "" } else { " [not observed]" }
        );
    }
    println!("keys the simulator adds (newer PVE fields), informational:");
    for (f, keys) in &r.extras {
        println!("  - {f}: {}", keys.join(", "));
    }
    println!(
        "matched {} of {} replayed exchanges ({} of them only with listed deviations); {} recorded in total",
        r.matched,
        r.total,
        r.with_deviations,
        recorded.len()
    );
    assert_eq!(
        r.total + NOT_REPLAYED.len(),
        recorded.len(),
        "every recorded exchange is replayed or listed"
    );
    assert!(
        r.unexpected.is_empty(),
        "unexpected differences:\n{}",
        r.unexpected.join("\n")
    );
    let unobserved: Vec<_> = DEVIATIONS
        .iter()
        .filter(|(f, p, _)| {
            !r.used_deviations
                .iter()
                .any(|(uf, up)| uf == f && up.starts_with(p))
        })
        .collect();
    assert!(
        unobserved.is_empty(),
        "listed deviations that no longer occur: {unobserved:?}"
    );
}

/// The go-proxmox PVE 8.0 captures (unverified, no request recorded):
/// every key they show must be in our answer with the same JSON type.
#[tokio::test]
async fn pve8_captures_match_our_shapes() {
    let dir = shared_dir().join("pve-api/responses/go-proxmox");
    if !dir.exists() {
        println!("SKIPPED: {} not found (../shared absent)", dir.display());
        return;
    }
    let load = |f: &str| -> Value {
        serde_json::from_str::<Value>(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap()["response"]["json"].clone()
    };
    let sim = Sim::start(0.001).await;
    sim.task_ok(
        "POST",
        "/nodes/pve/qemu",
        &[
            ("vmid", "1001"),
            ("net0", "virtio,bridge=vmbr0"),
            ("scsi0", "local-zfs:1"),
            ("ide2", "local-zfs:cloudinit"),
            ("agent", "1"),
            ("balloon", "512"),
            ("vga", "qxl"),
            ("tags", "a"),
        ],
    )
    .await;
    sim.task_ok("POST", "/nodes/pve/qemu/1001/status/start", &[])
        .await;
    let mut diffs = Vec::new();
    let mut extra = Vec::new();
    let nodes = sim.call("GET", "/nodes", &[]).await.json;
    shape(&load("nodes.json"), &nodes, "nodes", &mut diffs, &mut extra);
    let status = sim
        .call("GET", "/nodes/pve/qemu/1001/status/current", &[])
        .await
        .json;
    shape(
        &load("qemu-status-current-running.json"),
        &status,
        "status",
        &mut diffs,
        &mut extra,
    );
    let ours = sim.get("/cluster/resources").await;
    let rec = load("cluster-resources-all.json");
    let mut compared = 0;
    for entry in rec["data"].as_array().unwrap() {
        let kind = entry["type"].as_str().unwrap();
        let mine = ours.as_array().unwrap().iter().find(|o| o["type"] == kind);
        let Some(mine) = mine else {
            diffs.push((format!("resources {kind}"), "no entry of this type".into()));
            continue;
        };
        let mut e = entry.clone();
        // Keys a guest only has in some states (tags set, pool, lock).
        if let Some(m) = e.as_object_mut() {
            m.retain(|k, _| {
                mine.get(k).is_some() || !matches!(k.as_str(), "pool" | "lock" | "hastate")
            });
        }
        shape(
            &e,
            mine,
            &format!("resources {kind}"),
            &mut diffs,
            &mut extra,
        );
        compared += 1;
    }
    println!(
        "compared /nodes, status/current and {compared} /cluster/resources entries with the PVE 8.0 captures"
    );
    println!("keys only we send: {}", extra.join(", "));
    assert!(
        diffs.is_empty(),
        "differences from PVE 8.0 captures: {diffs:?}"
    );
    sim.handle.shutdown().await.unwrap();
}
