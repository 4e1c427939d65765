//! Disks: planning `STORAGE:SIZE`, `STORAGE:0,import-from=…` and
//! `STORAGE:cloudinit` values (synchronous checks, as PVE does before its
//! worker forks), realizing them under the storage lock inside a task, and
//! the resize, clone and template endpoints.

use std::sync::Arc;

use serde_json::Value;

use super::{Ctx, Error, Reply};
use crate::runtime::{Clock, Shared};
use crate::storage::{split_volid, vtype_of};
use crate::vm::{Vm, mac_from, uuid_from};
use crate::world::World;
use homestak_pve::schema::Params;
use homestak_pve::schema::formats::{self, Props, format_size, parse_size};
use homestak_pve::schema::qemu_dicts;

/// What one disk option value asks for.
#[derive(Clone, Debug)]
pub enum DiskAction {
    /// Store the value as given (existing volume, `none`, CD-ROM, path).
    Keep(String),
    Alloc {
        storage: String,
        size: u64,
        opts: Props,
    },
    Import {
        storage: String,
        source: String,
        opts: Props,
    },
    CloudInit {
        storage: String,
        opts: Props,
    },
}

fn dict_for(key: &str) -> Option<&'static formats::Dict> {
    match key {
        "efidisk0" => Some(qemu_dicts::efidisk()),
        "tpmstate0" => Some(qemu_dicts::tpmstate()),
        _ => qemu_dicts::drive(key),
    }
}

/// Whether a config key holds a disk (`scsi0`, `efidisk0`, …).
pub fn is_disk_option(key: &str) -> bool {
    dict_for(key).is_some()
}

fn check_image_storage(w: &World, node: &str, key: &str, storage: &str) -> Result<(), Error> {
    let s = w
        .storage(node, storage)
        .map_err(|_| Error::internal(format!("storage '{storage}' does not exist")))?;
    if !s.supports("images") {
        return Err(Error::param(
            key,
            format!("storage '{storage}' does not support vm images"),
        ));
    }
    Ok(())
}

/// Checks a disk value before any task starts (QS `$check_storage_access`).
pub fn plan(w: &World, node: &str, key: &str, value: &str) -> Result<DiskAction, Error> {
    let Some(dict) = dict_for(key) else {
        return Ok(DiskAction::Keep(value.to_string()));
    };
    let props = formats::parse_property_string(dict, value, key)
        .map_err(|e| Error::param(key, format!("invalid format - {e}")))?;
    let file = props.get("file").cloned().unwrap_or_default();
    let mut opts = props.clone();
    opts.remove("file");
    let import = opts.remove("import-from");
    let special = split_volid(&file).filter(|(s, _)| formats::is_storage_id(s));
    match (special, import) {
        (Some((storage, "cloudinit")), None) => {
            check_image_storage(w, node, key, storage)?;
            Ok(DiskAction::CloudInit {
                storage: storage.to_string(),
                opts,
            })
        }
        (Some((storage, "0")), Some(source)) => {
            check_image_storage(w, node, key, storage)?;
            if !source.starts_with('/') {
                let Some((src_storage, src_name)) = split_volid(&source) else {
                    return Err(Error::param(
                        key,
                        format!("unable to parse volume ID '{source}'"),
                    ));
                };
                w.storage(node, src_storage).map_err(|_| {
                    Error::internal(format!("storage '{src_storage}' does not exist"))
                })?;
                let vtype = vtype_of(src_name);
                if vtype != "images" && vtype != "import" {
                    return Err(Error::param(
                        key,
                        format!(
                            "{source} has wrong type '{vtype}' - needs to be 'images' or 'import'"
                        ),
                    ));
                }
            }
            Ok(DiskAction::Import {
                storage: storage.to_string(),
                source,
                opts,
            })
        }
        (_, Some(_)) => Err(Error::param(
            key,
            "'import-from' requires special syntax - use <storage ID>:0,import-from=<source>",
        )),
        (Some((storage, size)), None) if is_gib(size) => {
            check_image_storage(w, node, key, storage)?;
            let gib: f64 = size.parse().unwrap_or(0.0);
            // efidisk0 and tpmstate0 ignore the size and get a fixed one.
            let bytes = match key {
                "efidisk0" => 528 << 10,
                "tpmstate0" => 4 << 20,
                _ => (gib * 1024.0 * 1024.0 * 1024.0) as u64,
            };
            if bytes == 0 {
                return Err(Error::param(key, "disk size must be greater than zero"));
            }
            Ok(DiskAction::Alloc {
                storage: storage.to_string(),
                size: bytes,
                opts,
            })
        }
        (Some((storage, name)), None) => {
            let exists = w
                .storage(node, storage)
                .is_ok_and(|s| s.volumes.contains_key(name));
            if !exists {
                return Err(Error::internal(format!("volume '{file}' does not exist")));
            }
            Ok(DiskAction::Keep(value.to_string()))
        }
        (None, None) => Ok(DiskAction::Keep(value.to_string())),
    }
}

fn is_gib(s: &str) -> bool {
    let (i, f) = s.split_once('.').unwrap_or((s, "0"));
    !i.is_empty() && !f.is_empty() && i.bytes().chain(f.bytes()).all(|c| c.is_ascii_digit())
}

/// `volid,key=value,…` with keys sorted as PVE prints property strings.
pub fn render_drive(volid: &str, opts: &Props, size: Option<u64>) -> String {
    let mut out = volid.to_string();
    let mut opts = opts.clone();
    opts.remove("volume");
    if let Some(s) = size {
        opts.insert("size".into(), format_size(s));
    }
    for (k, v) in opts {
        out.push_str(&format!(",{k}={v}"));
    }
    out
}

/// Carries out a planned disk action; returns the config value and the
/// volume it allocated (for cleanup on failure).
pub async fn realize(
    shared: &Shared,
    node: &str,
    vmid: u32,
    key: &str,
    action: DiskAction,
    upid: Option<&str>,
) -> Result<(String, Option<String>), String> {
    let now = Clock::now();
    let log = |line: String| {
        if let Some(u) = upid {
            shared.task_log(u, line);
        }
    };
    match action {
        DiskAction::Keep(v) => Ok((v, None)),
        DiskAction::Alloc {
            storage,
            size,
            opts,
        } => {
            let format = opts.get("format").cloned();
            let volid = shared
                .with_storage_lock(node, &storage, |w| {
                    let s = w.storage_mut(node, &storage).map_err(|e| e.message)?;
                    Ok(s.alloc_disk(vmid, size, format.as_deref(), now))
                })
                .await?;
            log(format!(
                "{key}: successfully created disk '{volid},size={}'",
                format_size(size)
            ));
            let mut opts = opts;
            opts.remove("format");
            Ok((render_drive(&volid, &opts, Some(size)), Some(volid)))
        }
        DiskAction::CloudInit { storage, opts } => {
            let volid = shared
                .with_storage_lock(node, &storage, |w| {
                    let s = w.storage_mut(node, &storage).map_err(|e| e.message)?;
                    Ok(s.alloc_cloudinit(vmid, now))
                })
                .await?;
            log(format!(
                "{key}: successfully created disk '{volid},media=cdrom'"
            ));
            let mut opts = opts;
            opts.insert("media".into(), "cdrom".into());
            Ok((render_drive(&volid, &opts, None), Some(volid)))
        }
        DiskAction::Import {
            storage,
            source,
            opts,
        } => {
            let src = {
                let w = shared.world();
                split_volid(&source).and_then(|(s, n)| {
                    w.storage(node, s)
                        .ok()
                        .and_then(|st| st.volumes.get(n).cloned())
                })
            };
            let Some(src) = src else {
                return Err(format!(
                    "cannot import from '{source}' - volume '{source}' does not exist"
                ));
            };
            let size = src.virtual_size.unwrap_or(src.size);
            let format = opts.get("format").cloned();
            let volid = shared
                .with_storage_lock(node, &storage, |w| {
                    let s = w.storage_mut(node, &storage).map_err(|e| e.message)?;
                    Ok(s.alloc_disk(vmid, size, format.as_deref(), now))
                })
                .await?;
            log(format!("importing disk '{source}' to VM {vmid} ..."));
            let secs = src.size as f64
                / (1024.0 * 1024.0)
                / shared.config.latency.copy_mib_per_s.max(0.001);
            shared.clock.sleep(secs).await;
            log(format!(
                "transferred {0} of {0} (100.00%)",
                format_size(src.size)
            ));
            log(format!(
                "{key}: successfully created disk '{volid},size={}'",
                format_size(size)
            ));
            let mut opts = opts;
            opts.remove("format");
            Ok((render_drive(&volid, &opts, Some(size)), Some(volid)))
        }
    }
}

/// Frees volumes allocated by a failed operation.
pub fn free_all(shared: &Shared, node: &str, volids: &[String]) {
    let mut w = shared.world_mut();
    for v in volids {
        w.free_volume(node, v);
    }
}

/// `PUT …/resize`: a `resize` task in 8.x; its checks run in the worker.
pub fn resize(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let (node, vmid) = (ctx.node(p).to_string(), ctx.vmid(p));
    ctx.shared.world().vm(&node, vmid)?;
    let disk = p.str("disk").unwrap_or_default().to_string();
    let size = p.str("size").unwrap_or_default().to_string();
    let digest = p.str("digest").map(String::from);
    let skiplock = p.flag("skiplock");
    let n = node.clone();
    let upid = ctx.shared.spawn_task(
        &node,
        "resize",
        &vmid.to_string(),
        &ctx.user,
        Some(vmid),
        move |shared, upid, inject| async move {
            let _lock = shared.lock_vm(vmid).await?;
            shared.clock.sleep(shared.config.latency.resize).await;
            if inject {
                return Err("disk resize failed: injected fault (homestak sim)".to_string());
            }
            let mut w = shared.world_mut();
            let vm = w.vm_mut(&n, vmid).map_err(|e| e.message)?;
            if digest.as_ref().is_some_and(|d| *d != vm.digest()) {
                return Err("checksum mismatch (file change by other user?)".into());
            }
            if let (Some(l), false) = (vm.lock(), skiplock) {
                return Err(format!("VM is locked ({l})"));
            }
            let value = vm
                .config
                .get(&disk)
                .cloned()
                .ok_or_else(|| format!("disk '{disk}' does not exist"))?;
            let dict = dict_for(&disk).ok_or_else(|| format!("disk '{disk}' does not exist"))?;
            let mut props = formats::parse_property_string(dict, &value, &disk)
                .map_err(|e| e.trim().to_string())?;
            if props.get("media").is_some_and(|m| m == "cdrom") {
                return Err("you can't resize a cdrom".into());
            }
            let file = props.remove("file").unwrap_or_default();
            let old = props.get("size").and_then(|s| parse_size(s)).unwrap_or(0);
            let (relative, amount) = match size.strip_prefix('+') {
                Some(rest) => (true, rest),
                None => (false, size.as_str()),
            };
            // A size without unit is bytes, as in PVE.
            let amount = parse_size(amount).ok_or_else(|| format!("invalid size '{size}'"))?;
            let new = if relative { old + amount } else { amount };
            if new < old {
                return Err("shrinking disks is not supported".into());
            }
            if new == old {
                drop(w);
                shared.task_log(
                    &upid,
                    format!("disk '{disk}' already has size {}", format_size(old)),
                );
                return Ok(());
            }
            vm.config
                .insert(disk.clone(), render_drive(&file, &props, Some(new)));
            if let Some((sid, name)) = split_volid(&file)
                && let Ok(s) = w.storage_mut(&n, sid)
                && let Some(v) = s.volumes.get_mut(name)
            {
                v.size = new;
            }
            drop(w);
            shared.task_log(&upid, format!("Image resized to {}.", format_size(new)));
            Ok(())
        },
    );
    Ok(Reply::Data(Value::String(upid)))
}

/// `POST …/clone`: a `qmclone` task whose id is the source VMID.
pub fn clone(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let (node, vmid) = (ctx.node(p).to_string(), ctx.vmid(p));
    let newid = p
        .int("newid")
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or_default();
    let (source, target_vm, plans) = {
        let w = ctx.shared.world();
        let source = w.vm(&node, vmid)?.clone();
        if w.vms.contains_key(&newid) {
            return Err(Error::internal(format!(
                "unable to create VM {newid}: config file already exists"
            )));
        }
        let template = source.is_template();
        let full = p.bool("full").unwrap_or(!template);
        if !full && p.has("storage") {
            return Err(Error::param(
                "storage",
                "parameter 'storage' not allowed for linked clones",
            ));
        }
        if !full && !template {
            return Err(Error::param(
                "full",
                "linked clone is only possible from a template",
            ));
        }
        if let Some(t) = p.str("target").filter(|t| *t != node) {
            return Err(Error::internal(format!(
                "can't clone VM to node '{t}' (VM uses local storage)"
            )));
        }
        if let Some(s) = p.str("storage") {
            check_image_storage(&w, &node, "storage", s)?;
        }
        let mut target = Vm::new(newid, &node, std::net::Ipv4Addr::UNSPECIFIED);
        let mut plans = Vec::new();
        for (k, v) in &source.config {
            if matches!(k.as_str(), "lock" | "template" | "digest") || k.starts_with("unused") {
                continue;
            }
            if is_disk_option(k) {
                plans.push((k.clone(), v.clone()));
                continue;
            }
            target.config.insert(k.clone(), v.clone());
        }
        let name = p.str("name").map(String::from).unwrap_or_else(|| {
            format!(
                "Copy-of-VM-{}",
                source
                    .config
                    .get("name")
                    .cloned()
                    .unwrap_or_else(|| vmid.to_string())
            )
        });
        target.config.insert("name".into(), name);
        if let Some(d) = p.str("description") {
            target
                .config
                .insert("description".into(), crate::vm::normalize_description(d));
        }
        target.config.insert("lock".into(), "clone".into());
        target.image = source.image.clone();
        target.pve_image = source.pve_image;
        (source, target, (plans, full))
    };
    let target_vm = super::qemu::register_vm(ctx, target_vm, true)?;
    let storage = p.str("storage").map(String::from);
    let n = node.clone();
    let (plans, full) = plans;
    let upid = ctx.shared.spawn_task(
        &node,
        "qmclone",
        &vmid.to_string(),
        &ctx.user,
        Some(vmid),
        move |shared, upid, inject| async move {
            let res = clone_disks(
                &shared,
                &n,
                &source,
                newid,
                &plans,
                full,
                storage.as_deref(),
                &upid,
                inject,
            )
            .await;
            finish_new_vm(&shared, &n, newid, res).map_err(|e| format!("clone failed: {e}"))
        },
    );
    let _ = target_vm;
    Ok(Reply::Data(Value::String(upid)))
}

#[allow(clippy::too_many_arguments)]
async fn clone_disks(
    shared: &Arc<Shared>,
    node: &str,
    source: &Vm,
    newid: u32,
    plans: &[(String, String)],
    full: bool,
    storage: Option<&str>,
    upid: &str,
    inject: bool,
) -> Result<Vec<String>, (String, Vec<String>)> {
    let mut allocated = Vec::new();
    if !full {
        shared.clock.sleep(shared.config.latency.clone_linked).await;
    }
    for (key, value) in plans {
        let Some(dict) = dict_for(key) else { continue };
        let Ok(mut props) = formats::parse_property_string(dict, value, key) else {
            continue;
        };
        let file = props.remove("file").unwrap_or_default();
        let Some((sid, name)) = split_volid(&file) else {
            shared
                .world_mut()
                .vms
                .get_mut(&newid)
                .map(|v| v.config.insert(key.clone(), value.clone()));
            continue;
        };
        let cloudinit = name.contains("cloudinit");
        let (size, format) = {
            let w = shared.world();
            let vol = w
                .storage(node, sid)
                .ok()
                .and_then(|s| s.volumes.get(name).cloned());
            (vol.as_ref().map_or(0, |v| v.size), vol.map(|v| v.format))
        };
        let target = if cloudinit {
            sid
        } else {
            storage.unwrap_or(sid)
        };
        let now = Clock::now();
        let res = shared
            .with_storage_lock(node, target, |w| {
                let s = w.storage_mut(node, target).map_err(|e| e.message)?;
                Ok(if cloudinit {
                    s.alloc_cloudinit(newid, now)
                } else {
                    s.alloc_disk(newid, size, format.as_deref(), now)
                })
            })
            .await;
        let volid = match res {
            Ok(v) => v,
            Err(e) => return Err((e, allocated)),
        };
        allocated.push(volid.clone());
        if full && !cloudinit {
            shared.task_log(upid, format!("create full clone of drive {key} ({file})"));
            let secs =
                size as f64 / (1024.0 * 1024.0) / shared.config.latency.copy_mib_per_s.max(0.001);
            shared.clock.sleep(secs).await;
        } else if !cloudinit {
            shared.task_log(upid, format!("create linked clone of drive {key} ({file})"));
        }
        let value = render_drive(&volid, &props, None);
        if let Some(vm) = shared.world_mut().vms.get_mut(&newid) {
            vm.config.insert(key.clone(), value);
        }
    }
    if inject {
        return Err(("injected fault (homestak sim)".into(), allocated));
    }
    let _ = source;
    Ok(allocated)
}

/// Ends a create or clone: on success drop the lock; on failure remove the
/// new VM and free what was allocated.
pub fn finish_new_vm(
    shared: &Shared,
    node: &str,
    vmid: u32,
    res: Result<Vec<String>, (String, Vec<String>)>,
) -> Result<(), String> {
    match res {
        Ok(_) => {
            if let Some(vm) = shared.world_mut().vms.get_mut(&vmid) {
                vm.config.remove("lock");
            }
            Ok(())
        }
        Err((e, allocated)) => {
            free_all(shared, node, &allocated);
            let removed = shared.world_mut().vms.remove(&vmid);
            if let Some(dir) = removed.and_then(|v| v.workdir) {
                let _ = std::fs::remove_dir_all(dir);
            }
            Err(e)
        }
    }
}

/// `POST …/template`: a `qmtemplate` task renaming disks to `base-…`.
pub fn template(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let (node, vmid) = (ctx.node(p).to_string(), ctx.vmid(p));
    {
        let w = ctx.shared.world();
        let vm = w.vm(&node, vmid)?;
        if vm.running() {
            return Err(Error::internal(
                "you can't convert a VM to template if VM is running",
            ));
        }
        if let Some(l) = vm.lock() {
            return Err(Error::internal(format!("VM is locked ({l})")));
        }
    }
    let n = node.clone();
    let upid = ctx.shared.spawn_task(
        &node,
        "qmtemplate",
        &vmid.to_string(),
        &ctx.user,
        Some(vmid),
        move |shared, _upid, inject| async move {
            let _lock = shared.lock_vm(vmid).await?;
            shared.clock.sleep(shared.config.latency.template).await;
            if inject {
                return Err("injected fault (homestak sim)".into());
            }
            let mut w = shared.world_mut();
            let vm = w.vm(&n, vmid).map_err(|e| e.message)?.clone();
            if vm.is_template() {
                return Ok(());
            }
            let mut config = vm.config.clone();
            for (key, props) in vm.disks() {
                let file = props.get("file").cloned().unwrap_or_default();
                let Some((sid, name)) = split_volid(&file) else {
                    continue;
                };
                if name.contains("cloudinit") || props.get("media").is_some_and(|m| m == "cdrom") {
                    continue;
                }
                if let Some(base) = w.storage_mut(&n, sid).ok().and_then(|s| s.make_base(name)) {
                    let mut rest = props.clone();
                    rest.remove("file");
                    config.insert(key, render_drive(&base, &rest, None));
                }
            }
            config.insert("template".into(), "1".into());
            if let Ok(vm) = w.vm_mut(&n, vmid) {
                vm.config = config;
            }
            Ok(())
        },
    );
    Ok(Reply::Data(Value::String(upid)))
}

/// Fresh identifiers for a new VM: MACs for NICs without one, smbios1 and
/// vmgenid UUIDs.
pub fn fresh_identity(shared: &Shared, config: &mut std::collections::BTreeMap<String, String>) {
    let draw = || rand::random::<u64>();
    for (k, v) in config.iter_mut() {
        if !k.starts_with("net") {
            continue;
        }
        if let Ok(mut props) = formats::parse_property_string(qemu_dicts::net(), v, k) {
            let model = props.remove("model").unwrap_or_else(|| "virtio".into());
            let mac = props.remove("macaddr").unwrap_or_else(|| mac_from(draw()));
            let mut out = format!("{model}={mac}");
            for (pk, pv) in props {
                out.push_str(&format!(",{pk}={pv}"));
            }
            *v = out;
        }
    }
    let _ = shared;
    config
        .entry("smbios1".into())
        .or_insert_with(|| format!("uuid={}", uuid_from(draw(), draw())));
    config
        .entry("vmgenid".into())
        .or_insert_with(|| uuid_from(draw(), draw()));
}
