//! Setting up a [`Tier`] from a site-config: PVE client, store, SSH check,
//! SSH to the host.
//! The CLI, the daemon and the reconciler tests all go through here.

use std::path::PathBuf;
use std::sync::Arc;

use super::{Error, Tier, connect};
use crate::controllers::vm::{HostSsh, KnownHostsFile, SshCheck};
use crate::store;
use homestak_core::site::{HostConfig, Site};
use homestak_ssh as ssh;

/// How to set up a tier.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// Accept any PVE certificate (explicit opt-in only).
    pub insecure: bool,
    /// Store and known SSH host keys live here.
    pub state_dir: PathBuf,
    /// Open the store (one process at a time may hold it).
    pub open_store: bool,
    /// Load an SSH key to verify VMs answer on SSH.
    pub ssh: bool,
    /// The private key; default: the node's `ssh_key`, else `~/.ssh/id_rsa`.
    pub ssh_key: Option<PathBuf>,
}

impl Tier {
    /// Sets up the tier of target `host` (`nodes/<host>.yaml`).
    pub fn open(site: Arc<Site>, host: &str, setup: &Setup) -> Result<Tier, Error> {
        let host_config = site.host_config(host).map_err(|source| Error::Host {
            host: host.to_string(),
            source,
        })?;
        let api = connect(&host_config, setup.insecure, None)?;
        let store: Option<Arc<dyn store::Store>> = if setup.open_store {
            let dir = setup.state_dir.join("store");
            let opened = store::open(&dir, store::Options::default())
                .map_err(|source| Error::StoreOpen { dir, source })?;
            Some(Arc::new(opened))
        } else {
            None
        };
        let ssh = ssh_check(&host_config, setup)?;
        let known_hosts = Some(known_hosts(&host_config, setup));
        let host_ssh = Some(host_ssh(&host_config, setup));
        Ok(Tier {
            site,
            host: host_config,
            api,
            store,
            ssh,
            known_hosts,
            host_ssh,
        })
    }
}

/// The known-hosts file of the VMs on `host` (in the state directory).
pub fn known_hosts(host: &HostConfig, setup: &Setup) -> KnownHostsFile {
    KnownHostsFile {
        file: ssh::KnownHosts::new(setup.state_dir.join("known_hosts")),
        port: host.vm_ssh_port,
    }
}

/// The SSH check of VMs on `host`, when `setup.ssh` asks for one.
pub fn ssh_check(host: &HostConfig, setup: &Setup) -> Result<Option<SshCheck>, Error> {
    if !setup.ssh {
        return Ok(None);
    }
    let key = setup
        .ssh_key
        .clone()
        .unwrap_or_else(|| host.ssh_key.clone());
    let identity = ssh::Identity::load(&key).map_err(|source| Error::SshKey {
        path: key,
        source: Box::new(source),
    })?;
    Ok(Some(SshCheck {
        transport: Arc::new(ssh::RusshTransport::new(ssh::ClientOptions::default())),
        identity,
        host_key: ssh::HostKeyPolicy::AcceptNew(known_hosts(host, setup).file),
        port: host.vm_ssh_port,
    }))
}

/// SSH to `host` itself (`ssh_user@ssh_host:ssh_port`), for joining images
/// shipped in parts. Nothing is loaded or contacted until a join needs it;
/// the host key is trusted on first use and kept with the VMs' keys.
pub fn host_ssh(host: &HostConfig, setup: &Setup) -> HostSsh {
    HostSsh {
        transport: Arc::new(ssh::RusshTransport::new(ssh::ClientOptions::default())),
        destination: ssh::Destination::new(&host.ssh_host, host.ssh_port, &host.ssh_user),
        key: setup
            .ssh_key
            .clone()
            .unwrap_or_else(|| host.ssh_key.clone()),
        host_key: ssh::HostKeyPolicy::AcceptNew(known_hosts(host, setup).file),
        host: host.name.clone(),
    }
}
