//! `/nodes/{node}/qemu`: list, create, destroy and the VM config
//! (GET, synchronous PUT, asynchronous POST).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::OwnedMutexGuard;

use super::disks::{self, DiskAction, is_disk_option};
use super::{Ctx, Error, Reply};
use crate::runtime::{Clock, Shared};
use crate::storage::split_volid;
use crate::vm::{self, Vm};
use homestak_pve::schema::formats::{self, split_list};
use homestak_pve::schema::wire as form;
use homestak_pve::schema::{Endpoint, Params, Type, qemu_dicts, vm_options};

/// Parameters of create/config that are not VM options.
const CONTROL_PARAMS: &[&str] = &[
    "vmid",
    "start",
    "storage",
    "delete",
    "digest",
    "revert",
    "force",
    "skiplock",
    "background_delay",
];

pub fn list(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let node = ctx.node(p);
    let w = ctx.shared.world();
    w.node(node)?;
    let now = Clock::now_ms();
    let full = p.flag("full");
    Ok(Reply::Data(Value::Array(
        w.vms
            .values()
            .filter(|v| v.node == node)
            .map(|v| v.list_json(now, full))
            .collect(),
    )))
}

pub fn index(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    ctx.shared.world().vm(ctx.node(p), ctx.vmid(p))?;
    Ok(super::subdirs(&[
        "config",
        "pending",
        "status",
        "unlink",
        "vncproxy",
        "termproxy",
        "migrate",
        "resize",
        "move",
        "rrd",
        "rrddata",
        "monitor",
        "agent",
        "snapshot",
        "spiceproxy",
        "sendkey",
        "firewall",
        "mtunnel",
        "remote_migrate",
    ]))
}

pub fn config_get(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let w = ctx.shared.world();
    let vm = w.vm(ctx.node(p), ctx.vmid(p))?;
    if let Some(snap) = p.str("snapshot") {
        if p.has("current") {
            return Err(Error::param(
                "snapshot",
                "cannot use 'snapshot' parameter with 'current'",
            ));
        }
        return Err(Error::internal(format!("snapshot '{snap}' does not exist")));
    }
    Ok(Reply::Data(vm.config_json()))
}

/// Normalizes a non-disk option value as PVE stores it.
fn normalize(key: &str, value: &str) -> Result<String, Error> {
    match key {
        "tags" => Ok(vm::normalize_tags(value)),
        "description" => Ok(vm::normalize_description(value)),
        "sshkeys" => {
            if !vm::validate_ssh_keys(&form::decode_component(value)) {
                return Err(Error::internal("SSH public key validation error"));
            }
            Ok(value.to_string())
        }
        "cipassword" => Ok(hash_password(value)),
        _ => {
            let ty = vm_options()
                .iter()
                .find(|p| p.matches(key))
                .map(|p| p.schema.ty);
            Ok(match (ty, formats::parse_boolean(value)) {
                (Some(Type::Boolean), Some(b)) => u8::from(b).to_string(),
                _ => value.to_string(),
            })
        }
    }
}

/// PVE stores cloud-init passwords as crypt hashes; we store a SHA-256
/// with a random salt in the same `$5$salt$hash` shape.
fn hash_password(pw: &str) -> String {
    use base64::Engine;
    let salt = format!("{:016x}", rand::random::<u64>());
    let d = homestak_base::digest::sha256(format!("{salt}{pw}").as_bytes());
    format!(
        "$5${salt}${}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(d)
    )
}

/// Config key for a parameter (`cdrom` is an alias of `ide2`).
fn config_key(key: &str) -> &str {
    if key == "cdrom" { "ide2" } else { key }
}

/// Planned disk actions by config key, in request order.
type DiskPlans = Vec<(String, DiskAction)>;

/// Splits request options into plain values and planned disk actions.
fn plan_options(
    ctx: &Ctx,
    endpoint: &Endpoint,
    p: &Params,
    node: &str,
) -> Result<(BTreeMap<String, String>, DiskPlans), Error> {
    let w = ctx.shared.world();
    let mut values = BTreeMap::new();
    let mut disks = Vec::new();
    for (k, v) in p.options(endpoint) {
        if CONTROL_PARAMS.contains(&k) {
            continue;
        }
        let key = config_key(k);
        if k == "cdrom" {
            let value = if v.contains("media=") {
                v.to_string()
            } else {
                format!("{v},media=cdrom")
            };
            disks.push((key.to_string(), disks::plan(&w, node, key, &value)?));
        } else if is_disk_option(key) {
            disks.push((key.to_string(), disks::plan(&w, node, key, v)?));
        } else {
            values.insert(key.to_string(), normalize(key, v)?);
        }
    }
    let cloudinit: Vec<&String> = disks
        .iter()
        .filter(|(_, a)| matches!(a, DiskAction::CloudInit { .. }))
        .map(|(k, _)| k)
        .collect();
    if cloudinit.len() > 1 {
        return Err(Error::internal(format!(
            "{} - cloud-init drive is already attached at '{}'",
            cloudinit[1], cloudinit[0]
        )));
    }
    Ok((values, disks))
}

/// Adds a VM to the world with an address and a working directory.
pub fn register_vm(ctx: &Ctx, mut vm: Vm, fresh_ids: bool) -> Result<u32, Error> {
    let shared = &ctx.shared;
    if fresh_ids {
        for (k, v) in vm.config.iter_mut() {
            if k.starts_with("net")
                && let Ok(mut props) = formats::parse_property_string(qemu_dicts::net(), v, k)
            {
                props.remove("macaddr");
                let model = props.remove("model").unwrap_or_else(|| "virtio".into());
                *v = std::iter::once(model)
                    .chain(props.iter().map(|(a, b)| format!("{a}={b}")))
                    .collect::<Vec<_>>()
                    .join(",");
            }
        }
        vm.config.remove("smbios1");
        vm.config.remove("vmgenid");
    }
    disks::fresh_identity(shared, &mut vm.config);
    insert_vm(ctx, vm)
}

/// Adds `vm` to the world as it is, with an address and a working
/// directory; fails like PVE when the vmid is taken.
fn insert_vm(ctx: &Ctx, mut vm: Vm) -> Result<u32, Error> {
    let shared = &ctx.shared;
    let workdir = shared.vm_workdir(vm.vmid);
    let _ = std::fs::create_dir_all(&workdir);
    vm.workdir = Some(workdir);
    let mut w = shared.world_mut();
    if let Some(existing) = w.vms.get(&vm.vmid) {
        return Err(Error::internal(format!(
            "unable to create VM {0} - VM {0} already exists on node '{1}'",
            vm.vmid, existing.node
        )));
    }
    vm.address = w
        .allocate_address(&mut shared.addrs.lock().unwrap_or_else(|e| e.into_inner()))
        .map_err(|e| Error::internal(e.to_string()))?;
    let vmid = vm.vmid;
    w.vms.insert(vmid, vm);
    Ok(vmid)
}

/// PVE's default boot order: disks, then CD-ROMs (not cloud-init), then
/// the first NIC; a single space when there is nothing to boot.
fn default_boot(disks: &[(String, DiskAction)], values: &BTreeMap<String, String>) -> String {
    let mut hd = Vec::new();
    let mut cd = Vec::new();
    for (k, a) in disks {
        match a {
            DiskAction::CloudInit { .. } => {}
            DiskAction::Keep(v) if v.contains("media=cdrom") => cd.push(k.clone()),
            _ if k == "efidisk0" || k == "tpmstate0" => {}
            _ => hd.push(k.clone()),
        }
    }
    let net = values.keys().find(|k| k.starts_with("net")).cloned();
    let order: Vec<String> = hd.into_iter().chain(cd).chain(net).collect();
    if order.is_empty() {
        " ".into()
    } else {
        format!("order={}", order.join(";"))
    }
}

pub async fn create(ctx: &Ctx, endpoint: &Endpoint, p: &Params) -> Result<Reply, Error> {
    let (node, vmid) = (ctx.node(p).to_string(), ctx.vmid(p));
    {
        let w = ctx.shared.world();
        w.node(&node)?;
        if let Some(existing) = w.vms.get(&vmid) {
            return Err(Error::internal(format!(
                "unable to create VM {vmid} - VM {vmid} already exists on node '{}'",
                existing.node
            )));
        }
    }
    let (mut values, disk_plans) = plan_options(ctx, endpoint, p, &node)?;
    if !values.contains_key("boot") {
        values.insert("boot".into(), default_boot(&disk_plans, &values));
    }
    values.insert(
        "meta".into(),
        format!("creation-qemu=9.2.0,ctime={}", Clock::now()),
    );
    // PVE fills in MACs before it reserves the vmid, and the worker adds the
    // SMBIOS UUID and generation id; the VM shows none of them until the
    // worker writes the whole config.
    disks::fresh_identity(&ctx.shared, &mut values);
    // PVE's `create_and_lock_config`: the vmid is taken at once by a config
    // holding only `lock: create` (no name, tags or description), visible in
    // every read while the worker imports the disks.
    let mut new = Vm::new(vmid, &node, std::net::Ipv4Addr::UNSPECIFIED);
    new.config = BTreeMap::from([("lock".to_string(), "create".to_string())]);
    // The boot disk's image decides whether this VM can become a PVE host.
    if let Some(src) = disk_plans.iter().find_map(|(_, a)| match a {
        DiskAction::Import { source, .. } => Some(source.clone()),
        _ => None,
    }) {
        let w = ctx.shared.world();
        new.pve_image = split_volid(&src)
            .and_then(|(s, n)| {
                w.storage(&node, s)
                    .ok()
                    .and_then(|st| st.volumes.get(n))
                    .map(|v| v.pve_image)
            })
            .unwrap_or(false);
        new.image = Some(src);
    }
    insert_vm(ctx, new)?;
    let start = p.flag("start");
    let user = ctx.user.clone();
    let n = node.clone();
    let upid = ctx.shared.spawn_task(
        &node,
        "qmcreate",
        &vmid.to_string(),
        &ctx.user,
        Some(vmid),
        move |shared, upid, inject| async move {
            shared.clock.sleep(shared.config.latency.create).await;
            let res = create_disks(&shared, &n, vmid, disk_plans, &upid, inject).await;
            // Then every option at once, replacing the placeholder and its
            // lock (`write_config` of the request); on failure the
            // placeholder is removed.
            let res = res.map(|(disks, allocated)| {
                if let Some(vm) = shared.world_mut().vms.get_mut(&vmid) {
                    let mut config = values;
                    config.extend(disks);
                    vm.config = config;
                }
                allocated
            });
            disks::finish_new_vm(&shared, &n, vmid, res)
                .map_err(|e| format!("unable to create VM {vmid} - {e}"))?;
            if start {
                super::power::spawn_start(&shared, &n, vmid, &user, false);
            }
            Ok(())
        },
    );
    Ok(Reply::Data(Value::String(upid)))
}

/// The disks' config values and the volumes allocated for them.
type CreatedDisks = (Vec<(String, String)>, Vec<String>);

async fn create_disks(
    shared: &Arc<Shared>,
    node: &str,
    vmid: u32,
    plans: Vec<(String, DiskAction)>,
    upid: &str,
    inject: bool,
) -> Result<CreatedDisks, (String, Vec<String>)> {
    let mut values = Vec::new();
    let mut allocated = Vec::new();
    for (key, action) in plans {
        match disks::realize(shared, node, vmid, &key, action, Some(upid)).await {
            Ok((value, vol)) => {
                allocated.extend(vol);
                values.push((key, value));
            }
            Err(e) => return Err((e, allocated)),
        }
    }
    if inject {
        return Err(("injected fault (homestak sim)".into(), allocated));
    }
    Ok((values, allocated))
}

/// Applies deletions to a config: disks become `unusedN`, cloud-init
/// drives and (with `force`) volumes are freed. Returns volumes to free.
fn apply_deletes(vm: &mut Vm, deletes: &[String], force: bool) -> Vec<String> {
    let mut free = Vec::new();
    for key in deletes {
        let key = config_key(key);
        let Some(value) = vm.config.remove(key) else {
            continue;
        };
        let file = value
            .split(',')
            .next()
            .unwrap_or("")
            .trim_start_matches("file=")
            .to_string();
        let real_volume = split_volid(&file).is_some() && !value.contains("media=cdrom");
        if key.starts_with("unused")
            || (value.contains("cloudinit") && split_volid(&file).is_some())
            || (force && real_volume)
        {
            free.push(file);
        } else if is_disk_option(key) && real_volume {
            let n = (0..)
                .find(|i| !vm.config.contains_key(&format!("unused{i}")))
                .unwrap_or(0);
            vm.config.insert(format!("unused{n}"), file);
        }
    }
    free
}

pub async fn config_update(
    ctx: &Ctx,
    endpoint: &Endpoint,
    p: &Params,
    sync: bool,
) -> Result<Reply, Error> {
    let (node, vmid) = (ctx.node(p).to_string(), ctx.vmid(p));
    ctx.shared.world().vm(&node, vmid)?;
    let guard = ctx.shared.lock_vm(vmid).await.map_err(Error::internal)?;
    let deletes: Vec<String> = p
        .str("delete")
        .map(|d| split_list(d).map(String::from).collect())
        .unwrap_or_default();
    let (values, disk_plans) = plan_options(ctx, endpoint, p, &node)?;
    if values.is_empty() && disk_plans.is_empty() && deletes.is_empty() && !p.has("revert") {
        return Err(Error::internal("no options specified"));
    }
    for d in &deletes {
        if values.contains_key(config_key(d)) || disk_plans.iter().any(|(k, _)| k == config_key(d))
        {
            return Err(Error::param(
                "delete",
                format!("you can't use '-{d}' and -delete {d}' at the same time"),
            ));
        }
    }
    let to_free = {
        let mut w = ctx.shared.world_mut();
        let vm = w.vm_mut(&node, vmid)?;
        if p.str("digest").is_some_and(|d| d != vm.digest()) {
            return Err(Error::internal(
                "checksum mismatch (file change by other user?)",
            ));
        }
        if let (Some(l), false) = (vm.lock(), p.flag("skiplock")) {
            return Err(Error::internal(format!("VM is locked ({l})")));
        }
        let free = apply_deletes(vm, &deletes, p.flag("force"));
        let mut values = values;
        disks::fresh_identity(&ctx.shared, &mut values);
        for (k, v) in values {
            if k == "smbios1" || k == "vmgenid" {
                // Only set when the request gave them.
                if !p.has(&k) {
                    continue;
                }
            }
            vm.config.insert(k, v);
        }
        free
    };
    disks::free_all(&ctx.shared, &node, &to_free);
    if sync {
        apply_disks(&ctx.shared, &node, vmid, disk_plans, None)
            .await
            .map_err(Error::internal)?;
        drop(guard);
        return Ok(Reply::Data(Value::Null));
    }
    let n = node.clone();
    let upid = ctx.shared.spawn_task(
        &node,
        "qmconfig",
        &vmid.to_string(),
        &ctx.user,
        Some(vmid),
        move |shared, upid, inject| async move {
            let _guard: OwnedMutexGuard<()> = guard;
            shared.clock.sleep(shared.config.latency.config).await;
            if inject {
                return Err("injected fault (homestak sim)".into());
            }
            apply_disks(&shared, &n, vmid, disk_plans, Some(&upid)).await
        },
    );
    if let Some(delay) = p.int("background_delay") {
        let deadline = tokio::time::Instant::now() + ctx.shared.clock.scaled(delay as f64);
        loop {
            let status = ctx
                .shared
                .world()
                .task(&upid)
                .and_then(|t| t.exitstatus.clone());
            match status {
                Some(s) if s == "OK" => return Ok(Reply::Data(Value::Null)),
                Some(s) => return Err(Error::internal(format!("failed to update VM {vmid}: {s}"))),
                None if tokio::time::Instant::now() >= deadline => break,
                None => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            }
        }
    }
    Ok(Reply::Data(json!(upid)))
}

async fn apply_disks(
    shared: &Arc<Shared>,
    node: &str,
    vmid: u32,
    plans: Vec<(String, DiskAction)>,
    upid: Option<&str>,
) -> Result<(), String> {
    for (key, action) in plans {
        let (value, _) = disks::realize(shared, node, vmid, &key, action, upid).await?;
        let mut w = shared.world_mut();
        let vm = w.vm_mut(node, vmid).map_err(|e| e.message)?;
        // A replaced disk is kept as unused, as PVE does.
        if let Some(old) = vm.config.insert(key.clone(), value.clone()) {
            let old_file = old.split(',').next().unwrap_or("").to_string();
            let new_file = value.split(',').next().unwrap_or("");
            if old_file != new_file
                && split_volid(&old_file).is_some()
                && !old.contains("media=cdrom")
            {
                let n = (0..)
                    .find(|i| !vm.config.contains_key(&format!("unused{i}")))
                    .unwrap_or(0);
                vm.config.insert(format!("unused{n}"), old_file);
            }
        }
        if let Some(u) = upid {
            drop(w);
            shared.task_log(u, format!("update VM {vmid}: -{key} {value}"));
        }
    }
    Ok(())
}

/// `DELETE /nodes/{node}/qemu/{vmid}`: early checks synchronous, the rest
/// in a `qmdestroy` task.
pub fn destroy(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let (node, vmid) = (ctx.node(p).to_string(), ctx.vmid(p));
    {
        let w = ctx.shared.world();
        let vm = w.vm(&node, vmid)?;
        if let (Some(l), false) = (vm.lock(), p.flag("skiplock")) {
            return Err(Error::internal(format!("VM is locked ({l})")));
        }
        if vm.running() {
            return Err(Error::internal(format!(
                "VM {vmid} is running - destroy failed"
            )));
        }
        if vm.config.get("protection").is_some_and(|v| v == "1") {
            return Err(Error::internal(format!(
                "can't remove VM {vmid} - protection mode enabled"
            )));
        }
    }
    let unreferenced = p.flag("destroy-unreferenced-disks");
    let n = node.clone();
    let upid = ctx.shared.spawn_task(
        &node,
        "qmdestroy",
        &vmid.to_string(),
        &ctx.user,
        Some(vmid),
        move |shared, _upid, inject| async move {
            let _lock = shared.lock_vm(vmid).await?;
            shared.clock.sleep(shared.config.latency.destroy).await;
            if inject {
                return Err("injected fault (homestak sim)".into());
            }
            let volumes = {
                let w = shared.world();
                let vm = w.vm(&n, vmid).map_err(|e| e.message)?;
                if vm.running() {
                    return Err(format!("VM {vmid} is running - destroy failed"));
                }
                let mut vols = vm.volumes();
                if unreferenced && let Ok(node) = w.node(&n) {
                    for s in node.storages.values() {
                        for v in s.volumes.values().filter(|v| v.vmid == Some(vmid)) {
                            vols.push(format!("{}:{}", s.id, v.name));
                        }
                    }
                }
                vols
            };
            let mut by_storage: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for v in volumes {
                if let Some((sid, _)) = split_volid(&v) {
                    by_storage
                        .entry(sid.to_string())
                        .or_default()
                        .push(v.clone());
                }
            }
            for (sid, vols) in by_storage {
                let removable = shared.world().storage(&n, &sid).is_ok();
                if removable {
                    shared
                        .with_storage_lock(&n, &sid, |w| {
                            for v in &vols {
                                w.free_volume(&n, v);
                            }
                            Ok(())
                        })
                        .await?;
                }
            }
            let removed = shared.world_mut().vms.remove(&vmid);
            if let Some(dir) = removed.and_then(|v| v.workdir) {
                let _ = std::fs::remove_dir_all(dir);
            }
            Ok(())
        },
    );
    Ok(Reply::Data(Value::String(upid)))
}
