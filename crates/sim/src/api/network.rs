//! `/nodes/{node}/network`: list (with pending `changes`), create a
//! bridge or other interface (pending until applied), apply (`PUT`, a
//! `srvreload` task), revert, get and delete one interface.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{Ctx, Error, Reply};
use homestak_pve::schema::{Endpoint, Params};

type Ifaces = BTreeMap<String, Map<String, Value>>;

fn current(ctx: &Ctx, node: &str) -> Result<(Ifaces, bool), Error> {
    let w = ctx.shared.world();
    let n = w.node(node)?;
    Ok(match &n.network_pending {
        Some(p) => (p.clone(), true),
        None => (n.network.clone(), false),
    })
}

/// A unified-diff-like summary of pending changes, like PVE's `changes`.
fn changes(active: &Ifaces, pending: &Ifaces) -> String {
    let mut out = String::new();
    for (name, cfg) in pending {
        if active.get(name) != Some(cfg) {
            out.push_str(&format!("+iface {name}\n"));
        }
    }
    for name in active.keys().filter(|n| !pending.contains_key(*n)) {
        out.push_str(&format!("-iface {name}\n"));
    }
    out
}

pub fn list(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let node = ctx.node(p);
    let (ifaces, pending) = current(ctx, node)?;
    let kind = p.str("type");
    let data: Vec<Value> = ifaces
        .values()
        .filter(|m| match kind {
            None => true,
            Some("any_bridge") | Some("any_local_bridge") => {
                matches!(
                    m.get("type").and_then(Value::as_str),
                    Some("bridge" | "OVSBridge")
                )
            }
            Some(k) => m.get("type").and_then(Value::as_str) == Some(k),
        })
        .map(|m| Value::Object(m.clone()))
        .collect();
    if pending {
        let active = ctx.shared.world().node(node)?.network.clone();
        return Ok(Reply::WithChanges(
            Value::Array(data),
            changes(&active, &ifaces),
        ));
    }
    Ok(Reply::Data(Value::Array(data)))
}

pub fn create(ctx: &Ctx, endpoint: &Endpoint, p: &Params) -> Result<Reply, Error> {
    let node = ctx.node(p).to_string();
    let iface = p.str("iface").unwrap_or_default().to_string();
    let (mut ifaces, _) = current(ctx, &node)?;
    if ifaces.contains_key(&iface) {
        return Err(Error::param(
            "iface",
            "interface already exists".to_string(),
        ));
    }
    let mut m = Map::new();
    for (k, v) in p.options(endpoint) {
        if k == "iface" {
            continue;
        }
        let value = match k {
            "autostart" | "bridge_vlan_aware" => json!(u8::from(p.flag(k))),
            "mtu" | "netmask6" => p.int(k).map_or(json!(v), |n| json!(n)),
            _ => json!(v),
        };
        m.insert(k.to_string(), value);
    }
    m.insert("iface".into(), json!(iface));
    let static_v4 = m.contains_key("cidr") || m.contains_key("address");
    m.insert(
        "method".into(),
        json!(if static_v4 { "static" } else { "manual" }),
    );
    m.insert("families".into(), json!(["inet"]));
    ifaces.insert(iface, m);
    ctx.shared.world_mut().node_mut(&node)?.network_pending = Some(ifaces);
    Ok(Reply::Data(Value::Null))
}

/// Applies pending changes: a `srvreload` task (id `networking`).
pub fn apply(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let node = ctx.node(p).to_string();
    ctx.shared.world().node(&node)?;
    let n = node.clone();
    let upid = ctx.shared.spawn_task(
        &node,
        "srvreload",
        "networking",
        &ctx.user,
        None,
        move |shared, _upid, inject| async move {
            shared.clock.sleep(shared.config.latency.config).await;
            if inject {
                return Err("ifreload failed (injected fault, homestak sim)".into());
            }
            let mut w = shared.world_mut();
            let node = w.node_mut(&n).map_err(|e| e.message)?;
            if let Some(mut pending) = node.network_pending.take() {
                for m in pending.values_mut() {
                    m.insert("active".into(), json!(1));
                }
                node.network = pending;
            }
            Ok(())
        },
    );
    Ok(Reply::Data(Value::String(upid)))
}

pub fn revert(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    ctx.shared
        .world_mut()
        .node_mut(ctx.node(p))?
        .network_pending = None;
    Ok(Reply::Data(Value::Null))
}

pub fn get(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let (ifaces, _) = current(ctx, ctx.node(p))?;
    let iface = p.str("iface").unwrap_or_default();
    ifaces
        .get(iface)
        .map(|m| Reply::Data(Value::Object(m.clone())))
        .ok_or_else(|| Error::internal(format!("network interface '{iface}' does not exist")))
}

pub fn delete(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let node = ctx.node(p).to_string();
    let iface = p.str("iface").unwrap_or_default();
    let (mut ifaces, _) = current(ctx, &node)?;
    if ifaces.remove(iface).is_none() {
        return Err(Error::internal(format!(
            "network interface '{iface}' does not exist"
        )));
    }
    ctx.shared.world_mut().node_mut(&node)?.network_pending = Some(ifaces);
    Ok(Reply::Data(Value::Null))
}
