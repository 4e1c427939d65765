//! Test-only control endpoints under `/_sim/` (like omicron's simulated
//! sled-agent "poke" endpoints), authenticated like the API. Bodies are
//! JSON; answers are `{"data": …}`, errors `{"data": null, "message": …}`.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/_sim/requests` | `{"total": N, "requests": {"GET /version": 3, …}}` |
//! | DELETE | `/_sim/requests` | reset the counters (also `POST /_sim/requests/reset`) |
//! | GET | `/_sim/faults` | `{"global": Rates, "vms": {"100": Rates}, "injected": Injected}` |
//! | PUT | `/_sim/faults` | set global rates (missing fields take defaults) |
//! | PUT / DELETE | `/_sim/faults/vms/{vmid}` | set / clear one VM's rates |
//! | GET | `/_sim/vms`, `/_sim/vms/{vmid}` | VM internals: address, agent, ciuser, keys, workdir, and `guest` (SSH, nested tier, services once booted) |
//! | GET | `/_sim/vms/{vmid}/nested` | the VM's nested PVE tier: `{running, url, node, fingerprint, root_password, error}` |
//! | POST | `/_sim/vms` | create a VM at once, without tasks (`template: true` makes a template; `placeholder: true` leaves someone else's create in progress: only `lock: create`) |
//! | PATCH | `/_sim/vms/{vmid}` | out-of-band change: cores, sockets, memory, name, tags, description, power |
//! | DELETE | `/_sim/vms/{vmid}` | remove a VM and its volumes at once |
//! | POST | `/_sim/images` | add an image (`{"volid": "local:import/x.qcow2", "size": "1G"}`) |
//! | GET | `/_sim/host` | the node's own SSH server `{ssh: {address, user, host_key, error}, commands: [...]}` |
//!
//! `Rates` is [`FaultRates`]: `read_error_rate`, `write_error_rate`,
//! `error_status`, `reset_rate`, `reset_after_rate`,
//! `read_error_after_rate`, `write_error_after_rate`, `task_failure_rate`,
//! `agent_never_ready_rate`, `agent_delay_factor`. `Injected` counts the
//! faults injected so far by kind (`crate::faults::Injected`).

use std::sync::Arc;

use axum::body::Body;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{self, Headers};
use super::config::Size;
use super::faults::FaultRates;
use super::runtime::{Clock, Shared};
use super::storage::{split_volid, vtype_of};
use super::vm::{Power, Vm, normalize_tags};

fn reply(status: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json;charset=UTF-8")
        .body(Body::from(serde_json::to_vec(&body).unwrap_or_default()))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn ok(data: Value) -> Response<Body> {
    reply(StatusCode::OK, json!({ "data": data }))
}

fn fail(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    reply(status, json!({ "data": null, "message": message.into() }))
}

/// The internals a test or the SSH layer may want about a VM.
pub fn vm_view(vm: &Vm, now_ms: i64) -> Value {
    json!({
        "vmid": vm.vmid,
        "node": vm.node,
        "name": vm.name(),
        "power": vm.power,
        "lock": vm.lock(),
        "address": vm.address.to_string(),
        "agent_ready": vm.running() && vm.agent_enabled() && vm.agent_ready_at.is_some_and(|t| now_ms >= t),
        "ciuser": vm.ciuser(),
        "ssh_keys": vm.ssh_keys(),
        "workdir": vm.workdir,
        "image": vm.image,
        "pve_image": vm.pve_image,
        "tags": vm.config.get("tags"),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForeignVm {
    vmid: Option<u32>,
    node: Option<String>,
    name: Option<String>,
    cores: Option<u32>,
    memory: Option<u64>,
    tags: Option<String>,
    description: Option<String>,
    #[serde(default)]
    running: bool,
    /// A template (as `qm template` leaves one): never running.
    #[serde(default)]
    template: bool,
    disk_size: Option<Size>,
    storage: Option<String>,
    /// Someone else's create in progress: a config holding only
    /// `lock: create`, as PVE writes before the import (the other fields
    /// but `vmid` and `node` must be left out).
    #[serde(default)]
    placeholder: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VmPatch {
    cores: Option<u32>,
    sockets: Option<u32>,
    memory: Option<u64>,
    name: Option<String>,
    tags: Option<String>,
    description: Option<String>,
    power: Option<Power>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Image {
    volid: String,
    node: Option<String>,
    size: Size,
    virtual_size: Option<Size>,
    pve: Option<bool>,
}

pub async fn serve(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let h = Headers {
        authorization: req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
        cookie: req.headers().get("cookie").and_then(|v| v.to_str().ok()),
        csrf: req
            .headers()
            .get("csrfpreventiontoken")
            .and_then(|v| v.to_str().ok()),
    };
    let method = req.method().as_str().to_string();
    let authed = auth::authenticate(&shared.world(), &h, method != "GET", Clock::now());
    if authed.is_err() {
        shared
            .clock
            .sleep(shared.config.latency.auth_failure_delay)
            .await;
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .body(Body::empty())
            .unwrap_or_else(|_| Response::new(Body::empty()));
    }
    let path = req.uri().path().trim_end_matches('/').to_string();
    let body = match axum::body::to_bytes(Body::new(req.into_body()), 1 << 20).await {
        Ok(b) => b,
        Err(_) => return fail(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
    };
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["_sim", "requests"]) => {
            let counts = shared.counters.snapshot();
            let total: u64 = counts.values().sum();
            ok(json!({ "total": total, "requests": counts }))
        }
        ("DELETE", ["_sim", "requests"]) | ("POST", ["_sim", "requests", "reset"]) => {
            shared.counters.reset();
            ok(Value::Null)
        }
        ("GET", ["_sim", "faults"]) => ok(faults_json(&shared)),
        ("PUT", ["_sim", "faults"]) => {
            match parse::<FaultRates>(&body).and_then(|r| r.check().map(|_| r)) {
                Ok(r) => {
                    shared.faults.set_global(r);
                    ok(faults_json(&shared))
                }
                Err(e) => fail(StatusCode::BAD_REQUEST, e),
            }
        }
        ("PUT", ["_sim", "faults", "vms", id]) => {
            let Ok(vmid) = id.parse() else {
                return fail(StatusCode::BAD_REQUEST, "bad vmid");
            };
            match parse::<FaultRates>(&body).and_then(|r| r.check().map(|_| r)) {
                Ok(r) => {
                    shared.faults.set_vm(vmid, Some(r));
                    ok(faults_json(&shared))
                }
                Err(e) => fail(StatusCode::BAD_REQUEST, e),
            }
        }
        ("DELETE", ["_sim", "faults", "vms", id]) => {
            let Ok(vmid) = id.parse() else {
                return fail(StatusCode::BAD_REQUEST, "bad vmid");
            };
            shared.faults.set_vm(vmid, None);
            ok(faults_json(&shared))
        }
        ("GET", ["_sim", "vms"]) => {
            let now = Clock::now_ms();
            ok(Value::Array(
                shared
                    .world()
                    .vms
                    .values()
                    .map(|v| with_guest(&shared, vm_view(v, now), v.vmid))
                    .collect(),
            ))
        }
        ("GET", ["_sim", "vms", id]) => with_vm(&shared, id, |v| {
            Ok(with_guest(&shared, vm_view(v, Clock::now_ms()), v.vmid))
        }),
        ("GET", ["_sim", "vms", id, "nested"]) => nested(&shared, id),
        ("POST", ["_sim", "vms"]) => match parse::<ForeignVm>(&body) {
            Ok(f) => foreign_vm(&shared, f),
            Err(e) => fail(StatusCode::BAD_REQUEST, e),
        },
        ("PATCH", ["_sim", "vms", id]) => match parse::<VmPatch>(&body) {
            Ok(patch) => patch_vm(&shared, id, patch),
            Err(e) => fail(StatusCode::BAD_REQUEST, e),
        },
        ("DELETE", ["_sim", "vms", id]) => {
            let Ok(vmid) = id.parse::<u32>() else {
                return fail(StatusCode::BAD_REQUEST, "bad vmid");
            };
            match remove_vm(&shared, vmid) {
                Ok(()) => ok(Value::Null),
                Err(e) => fail(StatusCode::NOT_FOUND, e),
            }
        }
        ("GET", ["_sim", "host"]) => ok(shared.host.view()),
        ("POST", ["_sim", "images"]) => match parse::<Image>(&body) {
            Ok(img) => add_image(&shared, img),
            Err(e) => fail(StatusCode::BAD_REQUEST, e),
        },
        _ => fail(
            StatusCode::NOT_FOUND,
            format!("no control endpoint {method} {path}"),
        ),
    }
}

/// Removes a VM and its volumes at once (out of band).
pub(crate) fn remove_vm(shared: &Shared, vmid: u32) -> Result<(), String> {
    let mut w = shared.world_mut();
    let Some(vm) = w.vms.remove(&vmid) else {
        return Err(format!("VM {vmid} does not exist"));
    };
    for vol in vm.volumes() {
        w.free_volume(&vm.node, &vol);
    }
    if let Some(dir) = &vm.workdir {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(())
}

/// Adds what runs inside the VM (`null` until it has booted).
fn with_guest(shared: &Shared, mut view: Value, vmid: u32) -> Value {
    if let Value::Object(m) = &mut view {
        m.insert("guest".into(), shared.guests.view(vmid));
    }
    view
}

/// The nested tier of a VM: 404 without such a VM, 409 while it has no
/// running tier (not a PVE image, not booted, or failed: see `error`).
fn nested(shared: &Shared, id: &str) -> Response<Body> {
    let Ok(vmid) = id.parse::<u32>() else {
        return fail(StatusCode::BAD_REQUEST, "bad vmid");
    };
    let Some((pve_image, running)) = shared
        .world()
        .vms
        .get(&vmid)
        .map(|v| (v.pve_image, v.running()))
    else {
        return fail(StatusCode::NOT_FOUND, format!("VM {vmid} does not exist"));
    };
    let view = shared
        .guests
        .get(vmid)
        .and_then(|g| g.ctx.pve.as_ref().map(|p| p.view()));
    if !pve_image && view.is_none() {
        return fail(
            StatusCode::CONFLICT,
            format!(
                "VM {vmid} runs no PVE: not made from a PVE image, and not booted with proxmox-ve installed"
            ),
        );
    }
    match view {
        Some(v) if v["running"] == true => ok(v),
        Some(v) => reply(
            StatusCode::CONFLICT,
            json!({"data": v, "message": format!("the nested PVE tier of VM {vmid} is not running")}),
        ),
        None => fail(
            StatusCode::CONFLICT,
            if running {
                format!("VM {vmid} has not booted yet")
            } else {
                format!("VM {vmid} is not running")
            },
        ),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, String> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))
}

fn faults_json(shared: &Shared) -> Value {
    let vms: serde_json::Map<String, Value> = shared
        .faults
        .per_vm()
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                serde_json::to_value(v).unwrap_or(Value::Null),
            )
        })
        .collect();
    json!({
        "global": shared.faults.global(),
        "vms": vms,
        "injected": shared.faults.injected(),
    })
}

fn with_vm(
    shared: &Shared,
    id: &str,
    f: impl FnOnce(&Vm) -> Result<Value, String>,
) -> Response<Body> {
    let Ok(vmid) = id.parse::<u32>() else {
        return fail(StatusCode::BAD_REQUEST, "bad vmid");
    };
    let w = shared.world();
    match w.vms.get(&vmid) {
        Some(vm) => match f(vm) {
            Ok(v) => ok(v),
            Err(e) => fail(StatusCode::BAD_REQUEST, e),
        },
        None => fail(StatusCode::NOT_FOUND, format!("VM {vmid} does not exist")),
    }
}

fn foreign_vm(shared: &Shared, f: ForeignVm) -> Response<Body> {
    let node = f
        .node
        .unwrap_or_else(|| shared.config.primary_node().to_string());
    let mut w = shared.world_mut();
    if w.node(&node).is_err() {
        return fail(StatusCode::BAD_REQUEST, format!("no node {node}"));
    }
    let vmid = f.vmid.unwrap_or_else(|| w.next_free_vmid());
    if w.vms.contains_key(&vmid) {
        return fail(StatusCode::CONFLICT, format!("VM {vmid} already exists"));
    }
    let address =
        match w.allocate_address(&mut shared.addrs.lock().unwrap_or_else(|e| e.into_inner())) {
            Ok(a) => a,
            Err(e) => return fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
    let mut vm = Vm::new(vmid, &node, address);
    if f.placeholder {
        let extra = f.name.is_some()
            || f.cores.is_some()
            || f.memory.is_some()
            || f.tags.is_some()
            || f.description.is_some()
            || f.running
            || f.template
            || f.disk_size.is_some()
            || f.storage.is_some();
        if extra {
            return fail(
                StatusCode::BAD_REQUEST,
                "a placeholder holds only `lock: create`: give just vmid and node",
            );
        }
        vm.config.insert("lock".into(), "create".into());
        let view = vm_view(&vm, Clock::now_ms());
        w.vms.insert(vmid, vm);
        return ok(view);
    }
    let name = f.name.unwrap_or_else(|| format!("foreign-{vmid}"));
    vm.config.insert("name".into(), name);
    vm.config
        .insert("cores".into(), f.cores.unwrap_or(1).to_string());
    vm.config
        .insert("memory".into(), f.memory.unwrap_or(512).to_string());
    vm.config.insert(
        "net0".into(),
        format!(
            "virtio={},bridge=vmbr0",
            super::vm::mac_from(rand::random())
        ),
    );
    if let Some(t) = f.tags {
        vm.config.insert("tags".into(), normalize_tags(&t));
    }
    if let Some(d) = f.description {
        vm.config
            .insert("description".into(), super::vm::normalize_description(&d));
    }
    if f.template {
        vm.config.insert("template".into(), "1".into());
    }
    let storage = f.storage.unwrap_or_else(|| {
        w.node(&node)
            .ok()
            .and_then(|n| {
                n.storages
                    .values()
                    .find(|s| s.supports("images"))
                    .map(|s| s.id.clone())
            })
            .unwrap_or_default()
    });
    if let Some(size) = f.disk_size {
        let now = Clock::now();
        match w.storage_mut(&node, &storage) {
            Ok(s) => {
                let volid = s.alloc_disk(vmid, size.0, None, now);
                vm.config.insert(
                    "scsi0".into(),
                    format!(
                        "{volid},size={}",
                        homestak_pve::schema::formats::format_size(size.0)
                    ),
                );
            }
            Err(e) => return fail(StatusCode::BAD_REQUEST, e.message),
        }
    }
    if f.running {
        vm.power = Power::Running;
        vm.started_at = Some(Clock::now_ms());
        vm.pid = Some(w.next_pid);
    }
    let view = vm_view(&vm, Clock::now_ms());
    w.vms.insert(vmid, vm);
    ok(view)
}

fn patch_vm(shared: &Shared, id: &str, p: VmPatch) -> Response<Body> {
    let Ok(vmid) = id.parse::<u32>() else {
        return fail(StatusCode::BAD_REQUEST, "bad vmid");
    };
    let mut w = shared.world_mut();
    let Some(vm) = w.vms.get_mut(&vmid) else {
        return fail(StatusCode::NOT_FOUND, format!("VM {vmid} does not exist"));
    };
    let mut set = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            vm.config.insert(k.into(), v);
        }
    };
    set("cores", p.cores.map(|c| c.to_string()));
    set("sockets", p.sockets.map(|c| c.to_string()));
    set("memory", p.memory.map(|c| c.to_string()));
    set("name", p.name);
    set("tags", p.tags.map(|t| normalize_tags(&t)));
    set(
        "description",
        p.description.map(|d| super::vm::normalize_description(&d)),
    );
    match p.power {
        Some(Power::Stopped) => {
            vm.power = Power::Stopped;
            vm.started_at = None;
            vm.pid = None;
            vm.agent_ready_at = None;
        }
        Some(Power::Running) if !vm.running() => {
            let now = Clock::now_ms();
            vm.power = Power::Running;
            vm.started_at = Some(now);
            vm.pid = Some(4242);
            vm.agent_ready_at = Some(now);
        }
        _ => {}
    }
    ok(vm_view(vm, Clock::now_ms()))
}

fn add_image(shared: &Shared, img: Image) -> Response<Body> {
    let Some((sid, name)) = split_volid(&img.volid) else {
        return fail(StatusCode::BAD_REQUEST, "volid must be storage:name");
    };
    let node = img
        .node
        .unwrap_or_else(|| shared.config.primary_node().to_string());
    let pve = img.pve.unwrap_or_else(|| name.contains("-pve"));
    let mut w = shared.world_mut();
    match w.storage_mut(&node, sid) {
        Ok(s) => {
            s.add_file(
                name,
                vtype_of(name),
                img.size.0,
                img.virtual_size.map(|v| v.0),
                pve,
                Clock::now(),
            );
            ok(json!({ "volid": img.volid }))
        }
        Err(e) => fail(StatusCode::BAD_REQUEST, e.message),
    }
}
