//! `pvesm path VOLUME` on a simulated PVE host: the file behind a volume,
//! as PVE's storage layer computes it (whether the file exists or not).
//! Other `pvesm` commands are not simulated.

use crate::ssh::{Context, Program};
use crate::storage::split_volid;
use homestak_ssh::BoxFuture;

use super::storagefs::{StorageFs, volume_path};

/// The `pvesm` command of a host whose storages `0` shows.
pub struct Pvesm(pub StorageFs);

impl Program for Pvesm {
    fn run<'a>(&'a self, args: &'a [String], cx: &'a mut Context) -> BoxFuture<'a, u32> {
        Box::pin(async move {
            if cx.user != "root" {
                cx.err("pvesm: permission denied - this command must run as root (use sudo)\n")
                    .await;
                return 255;
            }
            match args {
                [command, volid] if command == "path" => match self.path(volid) {
                    Ok(path) => {
                        cx.out(format!("{path}\n")).await;
                        0
                    }
                    Err(message) => {
                        cx.err(format!("{message}\n")).await;
                        255
                    }
                },
                [command] if command == "path" => {
                    cx.err("400 not enough arguments\npvesm path <volume>\n")
                        .await;
                    255
                }
                _ => {
                    cx.err("pvesm: only `pvesm path VOLUME` is simulated\n")
                        .await;
                    255
                }
            }
        })
    }
}

impl Pvesm {
    fn path(&self, volid: &str) -> Result<String, String> {
        let (shared, node) = self
            .0
            .world()
            .ok_or("pvesm: the PVE services of this host are not running")?;
        let (sid, name) =
            split_volid(volid).ok_or_else(|| format!("unable to parse volume ID '{volid}'"))?;
        let world = shared.world();
        let storage = world
            .nodes
            .get(&node)
            .and_then(|n| n.storages.get(sid))
            .ok_or_else(|| format!("storage '{sid}' does not exist"))?;
        volume_path(storage, name).ok_or_else(|| {
            format!(
                "storage '{sid}' ({}) has no file paths in the simulated host",
                storage.kind.pve_name()
            )
        })
    }
}
