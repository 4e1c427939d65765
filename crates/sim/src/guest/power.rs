//! A reboot from inside the guest: `reboot`, `systemctl reboot` and
//! `shutdown -r now`. They need root. The command returns at once; the
//! guest then goes down (its SSH sessions drop, its services and nested
//! tier stop) and boots again after the reboot latency and the agent's
//! boot time. QEMU keeps running (PVE sees no task); the boot counts as a
//! new one, so what is installed since (`proxmox-ve`) takes effect.

use std::sync::Weak;

use super::shims::Shim;
use crate::runtime::{Clock, Shared};
use crate::ssh::{Context, Program};
use homestak_ssh::BoxFuture;

/// Marks the running VM `vmid` as rebooting: its guest is stopped by the
/// supervisor now and booted again when the agent answers.
pub(crate) fn reboot(shared: &Shared, vmid: u32) -> Result<(), String> {
    let agent = shared.faults.agent(vmid);
    let delay = shared.clock.scaled(
        shared.config.latency.reboot + shared.config.latency.agent_boot * agent.delay_factor,
    );
    let now = Clock::now_ms();
    let mut w = shared.world_mut();
    let vm = w
        .vms
        .get_mut(&vmid)
        .ok_or_else(|| format!("VM {vmid} is gone"))?;
    if !vm.running() {
        return Err(format!("VM {vmid} is not running"));
    }
    vm.guest_boot_at = Some(now);
    vm.agent_ready_at = (!agent.never_ready).then(|| now + delay.as_millis() as i64);
    Ok(())
}

/// `reboot` (also `shutdown -r now|+0`).
pub(crate) struct Reboot(pub Shim);

impl Reboot {
    /// Reboots this guest; the exit status.
    pub(crate) async fn now(shared: &Weak<Shared>, vmid: u32, cx: &mut Context) -> u32 {
        if cx.user != "root" {
            cx.err("Call to Reboot failed: Interactive authentication required.\n")
                .await;
            return 1;
        }
        let Some(shared) = shared.upgrade() else {
            return 1;
        };
        match reboot(&shared, vmid) {
            Ok(()) => 0,
            Err(e) => {
                cx.err(format!("Failed to reboot: {e}\n")).await;
                1
            }
        }
    }
}

impl Program for Reboot {
    fn run<'a>(&'a self, args: &'a [String], cx: &'a mut Context) -> BoxFuture<'a, u32> {
        Box::pin(async move {
            let ok = match cx.program.rsplit('/').next() {
                Some("reboot") => args.is_empty(),
                _ => {
                    matches!(
                        args.iter().map(String::as_str).collect::<Vec<_>>()[..],
                        ["-r", "now" | "+0"]
                    )
                }
            };
            if !ok {
                cx.err(format!(
                    "{}: the simulated VM reboots only with `reboot` or `shutdown -r now`\n",
                    cx.program
                ))
                .await;
                return 1;
            }
            let ctx = &self.0.0;
            Reboot::now(&ctx.shared, ctx.boot.vmid, cx).await
        })
    }
}
