//! The client against real recorded PVE exchanges (`../shared/pve-api/
//! responses/fog-proxmox`, PVE 6.2 and 7.4), replayed byte for byte by a
//! local HTTPS server: status, reason phrase, body, content type.
//!
//! For every recording the client makes the call the recording shows
//! (typed where the [`Api`] has it, raw otherwise) and the test checks
//! that (1) the request PVE would have seen has the recorded path and
//! parameters, and (2) the answer decodes: data into the typed response,
//! errors into status + PVE's message. A few recordings get field-level
//! checks for the quirks NOTES §4 lists (string numbers, nextid string,
//! `total`, failed task exit status, 6.x synchronous resize).
//!
//! Runs when `../shared` (or `$HOMESTAK_SHARED_DIR`) exists; otherwise
//! prints SKIPPED.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::support::{Canned, Seen};
use homestak_pve::{
    self as pve, Api, ApiToken, Client, Config, ConfigUpdate, CreateVm, DeleteVm, PowerAction,
    PowerState, Request, Resize, ResourceKind, TaskExit, TokenOptions, Trust, Upid, VmOptions,
};
use homestak_tls::Fingerprint;
use serde_json::Value;

use crate::ids::pn;

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

struct Recording {
    file: String,
    method: String,
    /// Below `/api2/json`, with fog's stray `//` collapsed.
    path: String,
    query: Vec<(String, String)>,
    body: Vec<(String, String)>,
    status: u16,
    reason: String,
    response_body: String,
    content_type: Option<String>,
    json: Value,
}

fn params(value: &Value) -> Vec<(String, String)> {
    value
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn load(dir: &PathBuf) -> Vec<Recording> {
    let mut files: Vec<PathBuf> = ["pve6.2", "pve7.4"]
        .iter()
        .flat_map(|v| std::fs::read_dir(dir.join(v)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            let req = &v["request"];
            let resp = &v["response"];
            let mut api_path = req["path"]
                .as_str()
                .unwrap()
                .strip_prefix("/api2/json")
                .unwrap()
                .to_string();
            while api_path.contains("//") {
                api_path = api_path.replace("//", "/");
            }
            Recording {
                file: path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                method: req["method"].as_str().unwrap().to_string(),
                path: api_path,
                query: params(&req["query_params"]),
                body: params(&req["body_params"]),
                status: resp["status"].as_u64().unwrap() as u16,
                reason: resp["reason"].as_str().unwrap_or_default().to_string(),
                response_body: resp["body"].as_str().unwrap_or_default().to_string(),
                content_type: resp["headers"]["Content-Type"].as_str().map(str::to_string),
                json: resp["json"].clone(),
            }
        })
        .collect()
}

fn segments(path: &str) -> Vec<&str> {
    path.trim_start_matches('/').split('/').collect()
}

/// The request a recording shows, for calls the typed API does not cover:
/// its route's template when the route table knows the path, else the path
/// itself (leaked; a handful per run).
fn raw_request(rec: &Recording) -> Request {
    let method = rec.method.parse().unwrap();
    let routed =
        pve::schema::Method::parse(&rec.method).and_then(|m| pve::schema::route(m, &rec.path));
    match routed {
        Some((endpoint, vars)) => {
            let args: Vec<&str> = vars.iter().map(|(_, v)| v.as_str()).collect();
            Request::new(method, endpoint.path, &args)
        }
        None => Request::new(method, Box::leak(rec.path.clone().into_boxed_str()), &[]),
    }
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// What the typed call returned, reduced to something printable.
type Outcome = Result<String, pve::Error>;

/// Makes the call a recording shows. Returns `None` for calls the typed
/// API does not cover, and whether query parameters are expected to match.
async fn typed(client: &Client, rec: &Recording) -> Option<(Outcome, bool)> {
    let seg = segments(&rec.path);
    let vmid = |i: usize| seg[i].parse::<homestak_pve::VmId>().unwrap();
    let dbg = |v: &dyn std::fmt::Debug| format!("{v:?}");
    let outcome: Outcome = match (rec.method.as_str(), seg.as_slice()) {
        ("GET", ["version"]) => client.version().await.map(|v| dbg(&v)),
        ("GET", ["nodes"]) => client.nodes().await.map(|v| dbg(&v)),
        ("GET", ["cluster", "resources"]) => {
            let kind = match param(&rec.query, "type") {
                Some("node") => Some(ResourceKind::Node),
                Some(other) => panic!("unmapped type {other}"),
                None => None,
            };
            client.cluster_resources(kind).await.map(|v| dbg(&v))
        }
        ("GET", ["cluster", "nextid"]) => {
            let wanted = match param(&rec.query, "vmid").map(str::parse) {
                Some(Ok(vmid)) => Some(vmid),
                // A vmid out of PVE's range cannot be sent: `VmId` refuses
                // it before PVE could.
                Some(Err(_)) => return None,
                None => None,
            };
            client.next_vmid(wanted).await.map(|v| v.to_string())
        }
        ("GET", ["nodes", node, "qemu"]) => client.qemu_list(&pn(node)).await.map(|v| dbg(&v)),
        ("POST", ["nodes", node, "qemu"]) => {
            let create = CreateVm {
                vmid: param(&rec.body, "vmid").unwrap().parse().unwrap(),
                options: VmOptions::default(),
                start: None,
                pool: None,
            };
            client
                .qemu_create(&pn(node), &create)
                .await
                .map(|v| v.to_string())
        }
        ("GET", ["nodes", node, "qemu", _, "config"]) => client
            .qemu_config(&pn(node), vmid(3))
            .await
            .map(|v| dbg(&v)),
        ("POST", ["nodes", node, "qemu", _, "config"]) => {
            let mut update = ConfigUpdate::default();
            for (k, v) in &rec.body {
                if k == "delete" {
                    update.delete = v.split(',').map(str::to_string).collect();
                } else {
                    update.options.extra.push((k.clone(), v.clone()));
                }
            }
            client
                .qemu_config_post(&pn(node), vmid(3), &update)
                .await
                .map(|v| dbg(&v))
        }
        ("PUT", ["nodes", node, "qemu", _, "resize"]) => {
            let resize = Resize {
                disk: param(&rec.body, "disk").unwrap().into(),
                size: param(&rec.body, "size").unwrap().into(),
                digest: None,
            };
            client
                .qemu_resize(&pn(node), vmid(3), &resize)
                .await
                .map(|v| dbg(&v))
        }
        ("GET", ["nodes", node, "qemu", _, "status", "current"]) => client
            .qemu_status(&pn(node), vmid(3))
            .await
            .map(|v| dbg(&v)),
        ("POST", ["nodes", node, "qemu", _, "status", verb]) => {
            let action = match *verb {
                "start" => PowerAction::Start,
                "stop" => PowerAction::Stop {
                    timeout: None,
                    overrule_shutdown: None,
                },
                other => panic!("unmapped power verb {other}"),
            };
            client
                .qemu_power(&pn(node), vmid(3), &action)
                .await
                .map(|v| v.to_string())
        }
        ("DELETE", ["nodes", node, "qemu", _]) => client
            .qemu_delete(&pn(node), vmid(3), &DeleteVm::default())
            .await
            .map(|v| v.to_string()),
        ("GET", ["nodes", node, "storage"]) => {
            client.storage_list(&pn(node), None).await.map(|v| dbg(&v))
        }
        ("GET", ["nodes", node, "storage", storage, "content"]) => {
            let vmid = param(&rec.query, "vmid").map(|v| v.parse().unwrap());
            client
                .storage_content(&pn(node), storage, None, vmid)
                .await
                .map(|v| dbg(&v))
        }
        ("GET", ["nodes", _, "tasks", upid, "status"]) => {
            let upid: Upid = upid.parse().unwrap();
            client.task_status(&upid).await.map(|v| dbg(&v))
        }
        ("GET", ["nodes", _, "tasks", upid, "log"]) => {
            let upid: Upid = upid.parse().unwrap();
            // We always page explicitly (start/limit); fog did not.
            return Some((client.task_log(&upid, 0, 50).await.map(|v| dbg(&v)), false));
        }
        ("POST", ["access", "users", user, "token", tokenid]) => client
            .token_create(user, tokenid, &TokenOptions::default())
            .await
            .map(|v| dbg(&v)),
        _ => return None,
    };
    Some((outcome, true))
}

fn sorted(mut pairs: Vec<(String, String)>) -> Vec<(String, String)> {
    pairs.sort();
    pairs
}

#[tokio::test]
async fn recorded_exchanges_round_trip() {
    let dir = shared_dir().join("pve-api/responses/fog-proxmox");
    if !dir.is_dir() {
        println!(
            "pve_recorded: SKIPPED, no recordings at {} (set HOMESTAK_SHARED_DIR or provide ../shared)",
            dir.display()
        );
        return;
    }
    let recordings = load(&dir);
    assert!(
        recordings.len() >= 60,
        "only {} recordings",
        recordings.len()
    );
    let server = crate::support::start(Arc::new(|_: &Seen| Canned::data(Value::Null))).await;
    let mut config = Config::new(
        &server.host(),
        ApiToken::parse("root@pam!root1=00000000-0000-0000-0000-000000000000").unwrap(),
        Trust::Pinned(server.cert.fingerprint),
    )
    .unwrap();
    config.retry.attempts = 1;
    config.rate = None;
    let client = Client::new(config).unwrap();

    let mut typed_count = 0;
    let mut raw_count = 0;
    for rec in &recordings {
        let canned = Canned {
            status: rec.status,
            reason: Some(rec.reason.clone()),
            body: rec.response_body.clone(),
            content_type: rec.content_type.clone(),
            delay: None,
        };
        server.set_handler(Arc::new(move |_: &Seen| canned.clone()));
        server.clear();

        let (outcome, check_query) = match typed(&client, rec).await {
            Some(result) => {
                typed_count += 1;
                result
            }
            None => {
                raw_count += 1;
                let mut request = raw_request(rec);
                let mut form = pve::Form::new();
                for (k, v) in rec.query.iter().chain(&rec.body) {
                    form.push(k.clone(), v.clone());
                }
                request.form = form;
                let outcome = client.raw(&request).await.map(|env| {
                    assert_eq!(env.data, rec.json["data"], "{}: data", rec.file);
                    format!("{env:?}")
                });
                (outcome, true)
            }
        };

        // (1) the request PVE would have seen.
        let seen = server.seen();
        assert_eq!(seen.len(), 1, "{}: one request, no retries", rec.file);
        let seen = &seen[0];
        assert_eq!(seen.method.as_str(), rec.method, "{}", rec.file);
        assert_eq!(seen.path, format!("/api2/json{}", rec.path), "{}", rec.file);
        if check_query {
            assert_eq!(
                sorted(seen.query.clone()),
                sorted(rec.query.clone()),
                "{}: query",
                rec.file
            );
        }
        assert_eq!(
            sorted(seen.body.clone()),
            sorted(rec.body.clone()),
            "{}: body",
            rec.file
        );

        // (2) the answer.
        match (&outcome, rec.status) {
            (Ok(_), 200..=299) => {}
            (Err(err), status) if status >= 400 => {
                assert_eq!(err.status(), Some(status), "{}", rec.file);
                let body_message = rec.json.get("message").and_then(Value::as_str);
                let want = body_message.map(str::trim_end).unwrap_or(&rec.reason);
                assert_eq!(err.pve_message(), Some(want), "{}", rec.file);
            }
            (outcome, status) => panic!("{}: HTTP {status} gave {outcome:?}", rec.file),
        }
    }
    println!("pve_recorded: {typed_count} typed and {raw_count} raw exchanges replayed");
    assert!(typed_count >= 50, "only {typed_count} typed calls");
}

/// Field-level checks of the quirks, straight from the recorded bodies.
#[test]
fn recorded_quirks_decode() {
    let dir = shared_dir().join("pve-api/responses/fog-proxmox");
    if !dir.is_dir() {
        println!("pve_recorded: SKIPPED, no recordings at {}", dir.display());
        return;
    }
    let data = |file: &str| -> Value {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap();
        v["response"]["json"]["data"].clone()
    };

    // nextid is a JSON string.
    assert_eq!(data("pve6.2/12-nextid.json"), Value::String("100".into()));

    // 6.2 status/current: vmid and pid as strings, template "".
    let running: pve::VmStatus =
        serde_json::from_value(data("pve6.2/33-status-current-running.json")).unwrap();
    assert_eq!(running.vmid, Some(100));
    assert_eq!(running.pid, Some(2947));
    assert!(!running.template);
    assert_eq!(running.power(), PowerState::Running);
    let stopped: pve::VmStatus =
        serde_json::from_value(data("pve7.4/06-status-current-stopped.json")).unwrap();
    assert_eq!(stopped.vmid, Some(101));
    assert_eq!(stopped.power(), PowerState::Stopped);

    // A failed task's exit status is the error text.
    let failed: pve::TaskStatus =
        serde_json::from_value(data("pve6.2/57-task-status-failed-vzcreate.json")).unwrap();
    assert!(
        matches!(failed.exit(), Some(TaskExit::Failed(text)) if text.starts_with("unable to create CT 100"))
    );
    let running: pve::TaskStatus =
        serde_json::from_value(data("pve7.4/04-task-status-running-qmcreate.json")).unwrap();
    assert_eq!(running.exit(), None);
    assert_eq!(running.upid.kind(), "qmcreate");

    // Storage content ctime as string in one recording, number in another.
    let images: Vec<pve::StorageContent> =
        serde_json::from_value(data("pve6.2/37-storage-content-images.json")).unwrap();
    assert_eq!(images[0].ctime, Some(1606311524));
    let backups: Vec<pve::StorageContent> =
        serde_json::from_value(data("pve6.2/38-storage-content-backup.json")).unwrap();
    assert_eq!(backups[0].ctime, Some(1606311516));

    // Node list carries a fingerprint in PVE's format, which we can pin.
    let nodes: Vec<pve::NodeEntry> = serde_json::from_value(data("pve6.2/11-nodes.json")).unwrap();
    let fp = nodes[0].ssl_fingerprint.as_deref().unwrap();
    assert_eq!(fp.parse::<Fingerprint>().unwrap().to_string(), fp);

    // Config after `net0=virtio,bridge=vmbr0` has a generated MAC.
    let config: pve::VmConfig =
        serde_json::from_value(data("pve6.2/24-config-get-net0-mac.json")).unwrap();
    let net0 = config.property("net0").unwrap();
    assert_eq!(net0.get("bridge"), Some("vmbr0"));
    assert!(net0.get("virtio").is_some_and(|mac| mac.len() == 17));
    assert!(config.digest.is_some());

    // Config after allocating `local-lvm:1` shows the disk with its size.
    let config: pve::VmConfig =
        serde_json::from_value(data("pve6.2/20-config-get-after-alloc.json")).unwrap();
    let disk = config.disk("virtio0").unwrap();
    assert_eq!(disk.volume, "local-lvm:vm-100-disk-0");
    assert_eq!(disk.size_bytes, Some(1 << 30));

    // 6.x resize answered null (8.x answers a UPID).
    assert_eq!(data("pve6.2/29-resize-sync-pve6.json"), Value::Null);

    // Storage list flags are numbers.
    let storages: Vec<pve::StorageEntry> =
        serde_json::from_value(data("pve6.2/36-node-storage-list.json")).unwrap();
    let lvm = storages.iter().find(|s| s.storage == "local-lvm").unwrap();
    assert!(lvm.active && lvm.enabled && !lvm.shared && lvm.allows("images"));

    // The token secret decodes into the redacting type.
    let token: pve::CreatedToken =
        serde_json::from_value(data("pve6.2/06-token-post.json")).unwrap();
    assert_eq!(token.full_tokenid, "bobsinclar@pve!bobsinclar1");
    assert!(!format!("{token:?}").contains(token.value.expose()));

    // go-proxmox's (unverified) PVE 8 cluster resources decode too.
    let go = shared_dir().join("pve-api/responses/go-proxmox/cluster-resources-all.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(go).unwrap()).unwrap();
    let resources: Vec<pve::ClusterResource> =
        serde_json::from_value(v["response"]["json"]["data"].clone()).unwrap();
    let vms: BTreeMap<u32, &pve::ClusterResource> = resources
        .iter()
        .filter(|r| r.is_qemu())
        .map(|r| (r.vmid.unwrap(), r))
        .collect();
    assert!(vms[&101].template);
    assert_eq!(vms[&100].status.as_deref(), Some("running"));
    assert!(
        resources
            .iter()
            .any(|r| r.kind == "storage" && r.storage.is_some())
    );
}
