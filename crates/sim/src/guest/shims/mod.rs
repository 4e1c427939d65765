//! The commands a simulated VM has beyond the shell's builtins.
//!
//! Every VM: `systemctl` and `journalctl` ([`systemctl`]), `openssl x509`
//! ([`openssl`]), and `homestak` ([`homestak`], the real binary once a
//! parent uploaded it). PVE images also have `pveum` and `pvesh`
//! ([`pvecli`]) and `pvesm path`, acting on the VM's nested tier, whose
//! file-based storages show as directories (`/var/lib/vz/import`, …; see
//! [`crate::host::storagefs`]). Administrative commands
//! need root: log in as root or prefix `sudo` (the cloud-init user has
//! password-less sudo, as on Debian cloud images).

mod homestak;
mod openssl;
pub mod pvecli;
mod systemctl;

use std::sync::Arc;

use super::GuestCtx;
use crate::host::pvesm::Pvesm;
use crate::host::storagefs::StorageFs;
use crate::runtime::Shared;
use crate::ssh::{Context, Shell};

/// What every shim holds: its VM.
#[derive(Clone)]
pub struct Shim(pub(crate) Arc<GuestCtx>);

impl Shim {
    /// The nested tier's state, or an error on stderr (as PVE's tools fail
    /// when the cluster filesystem is not up).
    pub(crate) async fn nested(&self, cx: &mut Context, tool: &str) -> Option<Arc<Shared>> {
        let shared = self.0.pve.as_ref().and_then(|p| p.shared());
        if shared.is_none() {
            cx.err(format!(
                "{tool}: the PVE services of this host are not running (see `systemctl status pveproxy`)\n"
            ))
            .await;
        }
        shared
    }
}

/// Refuses a command for a non-root user; the exit status to return.
pub(crate) async fn need_root(cx: &mut Context, tool: &str) -> Option<u32> {
    if cx.user == "root" {
        return None;
    }
    cx.err(format!(
        "{tool}: permission denied - this command must run as root (use sudo)\n"
    ))
    .await;
    Some(if tool.starts_with("pve") { 255 } else { 1 })
}

/// Adds the VM's commands to its shell.
pub(crate) fn install(shell: Shell, ctx: &Arc<GuestCtx>) -> Shell {
    let shim = Shim(ctx.clone());
    let shell = shell
        .with_program("systemctl", Arc::new(systemctl::Systemctl(shim.clone())))
        .with_program("journalctl", Arc::new(systemctl::Journalctl(shim.clone())))
        .with_program("openssl", Arc::new(openssl::Openssl))
        .with_program("homestak", Arc::new(homestak::Homestak))
        .with_program("reboot", Arc::new(super::power::Reboot(shim.clone())))
        .with_program("shutdown", Arc::new(super::power::Reboot(shim.clone())));
    let mut shell = super::apt::install(shell, &shim);
    if let Some(pve) = &ctx.pve {
        let fs = StorageFs::nested(pve.clone());
        shell = shell
            .with_program("pveum", Arc::new(pvecli::Pveum(shim.clone())))
            .with_program("pvesh", Arc::new(pvecli::Pvesh(shim)))
            .with_program("pvesm", Arc::new(Pvesm(fs.clone())))
            .with_mounts(Arc::new(fs));
    }
    shell
}
