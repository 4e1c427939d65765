//! Power state and the guest agent: `status/current`, `start`, `stop`,
//! `shutdown`, `reboot`, `agent/network-get-interfaces`.
//!
//! State machine: stopped → (qmstart) → running → (qmstop | qmshutdown) →
//! stopped. Workers hold the VM's config lock while they run, as PVE's
//! `lock_config` does, so a second operation on a busy VM waits up to the
//! lock timeout and then fails with PVE's flock error.

use std::sync::Arc;

use serde_json::Value;

use super::{Ctx, Error, Reply};
use crate::runtime::{Clock, Shared};
use crate::vm::Power;
use homestak_pve::schema::Params;

pub fn index(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    ctx.shared.world().vm(ctx.node(p), ctx.vmid(p))?;
    Ok(super::subdirs(&[
        "current", "start", "stop", "reset", "shutdown", "suspend", "reboot",
    ]))
}

pub fn current(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let w = ctx.shared.world();
    Ok(Reply::Data(
        w.vm(ctx.node(p), ctx.vmid(p))?.status_json(Clock::now_ms()),
    ))
}

/// Starts a `qmstart` task (also used by create with `start=1`).
pub fn spawn_start(
    shared: &Arc<Shared>,
    node: &str,
    vmid: u32,
    user: &str,
    skiplock: bool,
) -> String {
    let n = node.to_string();
    shared.spawn_task(
        node,
        "qmstart",
        &vmid.to_string(),
        user,
        Some(vmid),
        move |shared, _upid, inject| async move {
            let _lock = shared.lock_vm(vmid).await?;
            {
                let w = shared.world();
                let vm = w.vm(&n, vmid).map_err(|e| e.message)?;
                if vm.is_template() {
                    return Err("you can't start a vm if it's a template".into());
                }
                if let (Some(l), false) = (vm.lock(), skiplock) {
                    return Err(format!("VM is locked ({l})"));
                }
                if vm.running() {
                    return Err(format!("VM {vmid} already running"));
                }
                // PVE builds the cloud-init drive at start, reading the
                // user-data snippet `cicustom` names.
                if let Some(volid) = vm
                    .config
                    .get("cicustom")
                    .and_then(|c| crate::guest::userdata::user_volume(c))
                {
                    crate::guest::userdata::snippet_text(&w, &n, volid)?;
                }
            }
            shared.clock.sleep(shared.config.latency.start).await;
            if inject {
                return Err(
                    "start failed: QEMU exited with code 1 (injected fault, homestak sim)"
                        .to_string(),
                );
            }
            let agent = shared.faults.agent(vmid);
            let boot = shared
                .clock
                .scaled(shared.config.latency.agent_boot * agent.delay_factor);
            let now = Clock::now_ms();
            let mut w = shared.world_mut();
            let pid = {
                w.next_pid = w.next_pid.wrapping_add(1).max(1000);
                w.next_pid
            };
            let vm = w.vm_mut(&n, vmid).map_err(|e| e.message)?;
            vm.power = Power::Running;
            vm.started_at = Some(now);
            vm.pid = Some(pid);
            vm.agent_ready_at = (!agent.never_ready).then(|| now + boot.as_millis() as i64);
            Ok(())
        },
    )
}

pub fn start(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let (node, vmid) = (ctx.node(p), ctx.vmid(p));
    ctx.shared.world().vm(node, vmid)?;
    Ok(Reply::Data(Value::String(spawn_start(
        &ctx.shared,
        node,
        vmid,
        &ctx.user,
        p.flag("skiplock"),
    ))))
}

fn set_stopped(shared: &Shared, node: &str, vmid: u32) -> Result<(), String> {
    let mut w = shared.world_mut();
    let vm = w.vm_mut(node, vmid).map_err(|e| e.message)?;
    vm.power = Power::Stopped;
    vm.started_at = None;
    vm.pid = None;
    vm.agent_ready_at = None;
    Ok(())
}

fn check_lock(shared: &Shared, node: &str, vmid: u32, skiplock: bool) -> Result<bool, String> {
    let w = shared.world();
    let vm = w.vm(node, vmid).map_err(|e| e.message)?;
    if let (Some(l), false) = (vm.lock(), skiplock) {
        return Err(format!("VM is locked ({l})"));
    }
    Ok(vm.running())
}

/// Hard stop; stopping a stopped VM is a successful no-op.
pub fn stop(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let (node, vmid) = (ctx.node(p).to_string(), ctx.vmid(p));
    ctx.shared.world().vm(&node, vmid)?;
    let skiplock = p.flag("skiplock");
    let n = node.clone();
    let upid = ctx.shared.spawn_task(
        &n,
        "qmstop",
        &vmid.to_string(),
        &ctx.user,
        Some(vmid),
        move |shared, _upid, inject| async move {
            let _lock = shared.lock_vm(vmid).await?;
            if !check_lock(&shared, &node, vmid, skiplock)? {
                return Ok(());
            }
            shared.clock.sleep(shared.config.latency.stop).await;
            if inject {
                return Err("VM quit/powerdown failed (injected fault, homestak sim)".into());
            }
            set_stopped(&shared, &node, vmid)
        },
    );
    Ok(Reply::Data(Value::String(upid)))
}

/// ACPI shutdown: fails with `got timeout` when the guest takes longer
/// than `timeout`, unless `forceStop` kills it.
pub fn shutdown(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let (node, vmid) = (ctx.node(p).to_string(), ctx.vmid(p));
    ctx.shared.world().vm(&node, vmid)?;
    let skiplock = p.flag("skiplock");
    let force = p.flag("forceStop");
    let timeout = p.int("timeout").map(|t| t.max(0) as f64).unwrap_or(60.0);
    let n = node.clone();
    let upid = ctx.shared.spawn_task(
        &n,
        "qmshutdown",
        &vmid.to_string(),
        &ctx.user,
        Some(vmid),
        move |shared, _upid, inject| async move {
            let _lock = shared.lock_vm(vmid).await?;
            if !check_lock(&shared, &node, vmid, skiplock)? {
                return Ok(());
            }
            let needed = if inject {
                f64::INFINITY
            } else {
                shared.config.latency.shutdown
            };
            if needed > timeout {
                shared.clock.sleep(timeout).await;
                if !force {
                    return Err("VM quit/powerdown failed - got timeout".into());
                }
            } else {
                shared.clock.sleep(needed).await;
            }
            set_stopped(&shared, &node, vmid)
        },
    );
    Ok(Reply::Data(Value::String(upid)))
}

pub fn reboot(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let (node, vmid) = (ctx.node(p).to_string(), ctx.vmid(p));
    ctx.shared.world().vm(&node, vmid)?;
    let n = node.clone();
    let upid = ctx.shared.spawn_task(
        &n,
        "qmreboot",
        &vmid.to_string(),
        &ctx.user,
        Some(vmid),
        move |shared, _upid, inject| async move {
            let _lock = shared.lock_vm(vmid).await?;
            if !check_lock(&shared, &node, vmid, false)? {
                return Err(format!("VM {vmid} not running"));
            }
            {
                // The agent goes away while the guest reboots.
                let mut w = shared.world_mut();
                if let Ok(vm) = w.vm_mut(&node, vmid) {
                    vm.agent_ready_at = None;
                }
            }
            shared.clock.sleep(shared.config.latency.reboot).await;
            if inject {
                return Err(
                    "VM quit/powerdown failed - got timeout (injected fault, homestak sim)".into(),
                );
            }
            let agent = shared.faults.agent(vmid);
            let boot = shared
                .clock
                .scaled(shared.config.latency.agent_boot * agent.delay_factor);
            let now = Clock::now_ms();
            let mut w = shared.world_mut();
            let vm = w.vm_mut(&node, vmid).map_err(|e| e.message)?;
            vm.started_at = Some(now);
            vm.agent_ready_at = (!agent.never_ready).then(|| now + boot.as_millis() as i64);
            Ok(())
        },
    );
    Ok(Reply::Data(Value::String(upid)))
}

pub fn agent_index(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    ctx.shared.world().vm(ctx.node(p), ctx.vmid(p))?;
    Ok(super::subdirs(&[
        "fsfreeze-status",
        "get-osinfo",
        "info",
        "network-get-interfaces",
        "ping",
    ]))
}

/// The three distinct 500s of `agent_available`, in PVE's order.
pub fn agent_network(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let vmid = ctx.vmid(p);
    let w = ctx.shared.world();
    let vm = w.vm(ctx.node(p), vmid)?;
    if !vm.config.contains_key("agent") {
        return Err(Error::internal("No QEMU guest agent configured"));
    }
    if !vm.running() {
        return Err(Error::internal(format!("VM {vmid} is not running")));
    }
    let ready = vm.agent_enabled() && vm.agent_ready_at.is_some_and(|t| Clock::now_ms() >= t);
    if !ready {
        return Err(Error::internal("QEMU guest agent is not running"));
    }
    Ok(Reply::Data(vm.agent_interfaces_json()))
}
