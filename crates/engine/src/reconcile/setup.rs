//! What a [`super::Tier`] is built from besides its PVE client: the SSH
//! check of VMs, the known-hosts file, SSH to the host. [`super::Engine`]
//! builds tiers with these for every caller.

use std::path::PathBuf;
use std::sync::Arc;

use super::Error;
use crate::controllers::vm::{HostSsh, KnownHostsFile, SshCheck};
use homestak_core::site::HostConfig;
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
    /// The private key; default: the node's `ssh_key`, else `~/.ssh/id_rsa`.
    pub ssh_key: Option<PathBuf>,
    /// The homestak binary to install on inner PVE hosts; default: this
    /// process's own executable.
    pub binary: Option<PathBuf>,
    /// How this process holds host leases (the daemon keeps them while it
    /// serves; a command gives each back when its run ends).
    pub lease: crate::hostlease::Policy,
}

impl Setup {
    /// The binary inner PVE hosts get.
    pub fn binary(&self) -> PathBuf {
        self.binary.clone().unwrap_or_else(|| {
            std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/local/bin/homestak"))
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

/// The SSH check of VMs on `host`: loads the key (`setup.ssh_key`, else
/// the node's).
pub fn ssh_check(host: &HostConfig, setup: &Setup) -> Result<SshCheck, Error> {
    let key = setup
        .ssh_key
        .clone()
        .unwrap_or_else(|| host.ssh_key.clone());
    let identity = ssh::Identity::load(&key).map_err(|source| Error::SshKey {
        path: key,
        source: Box::new(source),
    })?;
    Ok(SshCheck {
        transport: Arc::new(ssh::RusshTransport::new(ssh::ClientOptions::default())),
        identity,
        host_key: ssh::HostKeyPolicy::AcceptNew(known_hosts(host, setup).file),
        port: host.vm_ssh_port,
    })
}

/// SSH to `host` itself (`ssh_user@ssh_host:ssh_port`), for joining images
/// shipped in parts; `None` when the site-config gives the host no address.
/// Nothing is loaded or contacted until a join needs it; the host key is
/// trusted on first use and kept with the VMs' keys.
pub fn host_ssh(host: &HostConfig, setup: &Setup) -> Option<HostSsh> {
    let address = host.ssh_host.as_deref()?;
    Some(HostSsh {
        transport: Arc::new(ssh::RusshTransport::new(ssh::ClientOptions::default())),
        destination: ssh::Destination::new(address, host.ssh_port, &host.ssh_user),
        key: setup
            .ssh_key
            .clone()
            .unwrap_or_else(|| host.ssh_key.clone()),
        host_key: ssh::HostKeyPolicy::AcceptNew(known_hosts(host, setup).file),
        host: host.name.clone(),
    })
}
