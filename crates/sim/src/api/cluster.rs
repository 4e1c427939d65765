//! `/version`, `/nodes`, `/nodes/{node}/status`, `/cluster/resources`,
//! `/cluster/nextid`.

use serde_json::{Value, json};

use super::{Ctx, Error, Reply};
use crate::runtime::Clock;
use crate::world::{Node, World};
use homestak_pve::schema::Params;

pub fn version(ctx: &Ctx) -> Result<Reply, Error> {
    let v = &ctx.shared.config.pve_version;
    let release = v.split('.').take(2).collect::<Vec<_>>().join(".");
    Ok(Reply::Data(json!({
        "version": v,
        "release": release,
        "repoid": "2a55feb9a8d7b5a8",
        "console": "xtermjs",
    })))
}

/// Memory in use and CPU load of `node`, from its running VMs (one pass).
fn node_load(w: &World, node: &Node) -> (u64, f64) {
    let (mem, running) = w
        .vms
        .values()
        .filter(|v| v.node == node.name && v.running())
        .fold((0u64, 0u64), |(mem, n), v| {
            (mem + (v.memory_mib() << 20), n + 1)
        });
    (mem / 4 + (2 << 30), 0.01 + 0.002 * running as f64)
}

/// A node's entry in `/nodes` and `/cluster/resources`. Takes the locked
/// world: cloning nodes would copy every volume of their storages.
fn node_json(w: &World, node: &Node, fingerprint: Option<String>) -> Value {
    let (mem, cpu) = node_load(w, node);
    let uptime = Clock::now() - w.booted_at;
    let mut v = json!({
        "id": format!("node/{}", node.name),
        "type": "node",
        "node": node.name,
        "status": "online",
        "level": "",
        "cpu": cpu,
        "maxcpu": node.cpus,
        "mem": mem,
        "maxmem": node.memory,
        "disk": 4u64 << 30,
        "maxdisk": 100u64 << 30,
        "uptime": uptime.max(0),
    });
    if let Some(fp) = fingerprint {
        v["ssl_fingerprint"] = json!(fp);
    }
    v
}

pub fn nodes(ctx: &Ctx) -> Result<Reply, Error> {
    let fp = ctx.shared.fingerprint().map(|f| f.to_string());
    let w = ctx.shared.world();
    Ok(Reply::Data(Value::Array(
        w.nodes
            .values()
            .map(|n| node_json(&w, n, fp.clone()))
            .collect(),
    )))
}

pub fn node_status(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let w = ctx.shared.world();
    let node = w.node(ctx.node(p))?;
    let (mem, cpu) = node_load(&w, node);
    let uptime = (Clock::now() - w.booted_at).max(0);
    let version = &ctx.shared.config.pve_version;
    Ok(Reply::Data(json!({
        "uptime": uptime,
        "cpu": cpu,
        "wait": 0,
        "loadavg": ["0.05", "0.10", "0.08"],
        "kversion": "Linux 6.8.12-9-pve #1 SMP PREEMPT_DYNAMIC PMX 6.8.12-9 (2025-03-16T19:18Z)",
        "pveversion": format!("pve-manager/{version}/2a55feb9a8d7b5a8"),
        "cpuinfo": {"cpus": node.cpus, "cores": node.cpus, "sockets": 1, "model": "homestak simulated CPU", "mhz": "2400.000", "hvm": "1", "flags": "", "user_hz": 100},
        "memory": {"total": node.memory, "used": mem, "free": node.memory.saturating_sub(mem)},
        "swap": {"total": 0, "used": 0, "free": 0},
        "rootfs": {"total": 100u64 << 30, "used": 4u64 << 30, "free": 96u64 << 30, "avail": 96u64 << 30},
        "ksm": {"shared": 0},
        "boot-info": {"mode": "efi", "secureboot": 0},
        "current-kernel": {"sysname": "Linux", "release": "6.8.12-9-pve", "version": "#1 SMP PREEMPT_DYNAMIC PMX 6.8.12-9", "machine": "x86_64"},
    })))
}

pub fn resources(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let kind = p.str("type");
    let now = Clock::now_ms();
    let mut out = Vec::new();
    let w = ctx.shared.world();
    if kind.is_none() || kind == Some("vm") {
        out.extend(w.vms.values().map(|v| v.resource_json(now)));
    }
    if kind.is_none() || kind == Some("node") {
        for n in w.nodes.values() {
            let mut v = node_json(&w, n, None);
            v["cgroup-mode"] = json!(2);
            out.push(v);
        }
    }
    if kind.is_none() || kind == Some("storage") {
        for n in w.nodes.values() {
            for s in n.storages.values() {
                out.push(json!({
                    "id": format!("storage/{}/{}", n.name, s.id),
                    "type": "storage",
                    "storage": s.id,
                    "node": n.name,
                    "status": "available",
                    "plugintype": s.kind.pve_name(),
                    "content": s.content.join(","),
                    "shared": u8::from(s.shared),
                    "disk": s.used(),
                    "maxdisk": s.total,
                }));
            }
        }
    }
    Ok(Reply::Data(Value::Array(out)))
}

pub fn next_id(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let w = ctx.shared.world();
    match p.int("vmid") {
        Some(id) => {
            if w.vms.contains_key(&(id as u32)) {
                return Err(Error::param("vmid", format!("VM {id} already exists")));
            }
            // PVE returns the parameter as it came: a string.
            Ok(Reply::Data(json!(id.to_string())))
        }
        None => Ok(Reply::Data(json!(w.next_free_vmid().to_string()))),
    }
}
