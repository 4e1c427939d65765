//! The client and the route table agree: every request the typed client
//! builds carries a path template that is a route of `pve::schema` for its
//! method, and the template filled with the request's arguments is the
//! concrete path, which routes back to that same template. With
//! `schema.rs` checking the route table against PVE's real schema, every
//! path the client sends exists in PVE.
//!
//! The client is driven through every [`Api`] method (every power action)
//! over a transport that keeps the requests and answers nothing useful.

use std::collections::BTreeSet;
use std::sync::Mutex;

use homestak_pve::schema::{self, endpoints};
use homestak_pve::{
    self as pve, Api, BoxFuture, Client, ConfigUpdate, CreateVm, DeleteVm, DownloadUrl, Envelope,
    NodeConfigUpdate, PowerAction, Request, Resize, ResourceKind, TaskQuery, TaskSource,
    TokenOptions, Transport, Upid, VmOptions,
};

use crate::ids::{pn, vmid};

/// Keeps every request; answers `{"data":null}` (decoding may fail, the
/// request is what matters here).
#[derive(Default)]
struct Capture(Mutex<Vec<Request>>);

impl Transport for Capture {
    fn host(&self) -> &str {
        "capture:8006"
    }

    fn send<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Envelope, pve::Error>> {
        self.0.lock().unwrap().push(request.clone());
        Box::pin(std::future::ready(Ok(Envelope::default())))
    }
}

/// `template` with each `{name}` replaced by the value of `name`.
fn fill(template: &str, vars: &[(String, String)]) -> String {
    template
        .split('/')
        .map(|segment| {
            let name = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}'));
            match name.and_then(|n| vars.iter().find(|(k, _)| k == n)) {
                Some((_, value)) => value.as_str(),
                None => segment,
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Calls every [`Api`] method once (`qemu_power` once per action).
async fn call_everything(client: &Client) -> usize {
    let (node, vmid, storage) = (&pn("pve"), vmid(4100), "local");
    let upid: Upid = "UPID:pve:00000A72:0000C9CC:5FBE5E5C:qmcreate:4100:root@pam!homestak:"
        .parse()
        .unwrap();
    let create = CreateVm {
        vmid,
        options: VmOptions::default(),
        start: None,
        pool: None,
    };
    let resize = Resize {
        disk: "scsi0".into(),
        size: "+8G".into(),
        digest: None,
    };
    let download = DownloadUrl {
        url: "https://example.com/debian-12.qcow2".into(),
        content: "import".into(),
        filename: "debian-12.qcow2".into(),
        checksum: None,
        verify_certificates: None,
    };
    let actions = [
        PowerAction::Start,
        PowerAction::Stop {
            timeout: None,
            overrule_shutdown: None,
        },
        PowerAction::Shutdown {
            timeout: None,
            force_stop: None,
        },
        PowerAction::Reboot { timeout: None },
    ];
    // Answers are `null`: most calls fail to decode, which is fine here.
    let _ = client.version().await;
    let _ = client.nodes().await;
    let _ = client.node_status(node).await;
    let _ = client.node_config(node).await;
    let _ = client
        .node_config_put(node, &NodeConfigUpdate::default())
        .await;
    let _ = client.cluster_resources(Some(ResourceKind::Vm)).await;
    let _ = client.next_vmid(Some(vmid)).await;
    let _ = client.qemu_list(node).await;
    let _ = client.qemu_create(node, &create).await;
    let _ = client.qemu_config(node, vmid).await;
    let _ = client
        .qemu_config_put(node, vmid, &ConfigUpdate::default())
        .await;
    let _ = client
        .qemu_config_post(node, vmid, &ConfigUpdate::default())
        .await;
    let _ = client.qemu_resize(node, vmid, &resize).await;
    let _ = client.qemu_status(node, vmid).await;
    for action in &actions {
        let _ = client.qemu_power(node, vmid, action).await;
    }
    let _ = client.qemu_delete(node, vmid, &DeleteVm::default()).await;
    let _ = client.storage_list(node, Some("images")).await;
    let _ = client
        .storage_content(node, storage, Some("import"), Some(vmid))
        .await;
    let _ = client.download_url(node, storage, &download).await;
    let tasks = TaskQuery {
        source: Some(TaskSource::All),
        vmid: Some(vmid),
        typefilter: Some("qmcreate".into()),
        since: Some(1_700_000_000),
        limit: Some(10),
    };
    let _ = client.node_tasks(node, &tasks).await;
    let _ = client.task_status(&upid).await;
    let _ = client.task_log(&upid, 0, 50).await;
    let _ = client.agent_network_interfaces(node, vmid).await;
    let _ = client
        .token_create("root@pam", "homestak", &TokenOptions::default())
        .await;
    // 23 methods besides `qemu_power`.
    23 + actions.len()
}

#[tokio::test]
async fn every_client_template_is_a_route_and_fills_to_its_path() {
    let capture = std::sync::Arc::new(Capture::default());
    let client = Client::with_transport(capture.clone());
    let calls = call_everything(&client).await;
    let requests = capture.0.lock().unwrap().clone();
    assert_eq!(requests.len(), calls, "one request per call");

    let mut problems = Vec::new();
    let mut routes = BTreeSet::new();
    for request in &requests {
        let (template, path) = (request.template(), request.path());
        let what = format!("{} {template} ({path})", request.method);
        let method = schema::Method::parse(request.method.as_str()).unwrap();
        routes.insert(format!("{} {template}", method.as_str()));
        if !endpoints()
            .iter()
            .any(|e| e.method == method && e.path == template)
        {
            problems.push(format!("{what}: the template is not a route"));
        }
        match schema::route(method, &path) {
            Some((endpoint, vars)) => {
                if endpoint.path != template {
                    problems.push(format!("{what}: the path routes to {}", endpoint.path));
                }
                let filled = fill(template, &vars);
                if filled != path {
                    problems.push(format!("{what}: the template fills to {filled}"));
                }
            }
            None => problems.push(format!("{what}: the path routes nowhere")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Each call has its own endpoint; none shares a template by mistake.
    assert_eq!(routes.len(), calls, "{routes:#?}");
}
