//! Host onboarding: a Debian host reachable over SSH becomes a PVE host
//! homestak can use (`homestak scenario pve-setup`).
//!
//! - [`pve::ensure_pve`]: looks first (`proxmox-ve` installed and the
//!   Proxmox kernel running); otherwise the host name on its address in
//!   `/etc/hosts`, Proxmox's release key and `pve-no-subscription`
//!   repository, `apt-get update`, `apt-get install -y proxmox-ve postfix
//!   open-iscsi chrony`, a reboot, then waits for SSH and the API.
//! - [`pve::setup_pve`]: removes the enterprise repository the package
//!   ships (it answers 401 without a subscription) and checks apt again.
//! - [`token`]: the API token, certificate fingerprint and datastore, the
//!   same code the `pve` node controller's steps run.
//! - [`node_config::write_node_config`]: `nodes/<host>.yaml` and the token
//!   in `secrets.yaml`.
//!
//! - [`user`]: the homestak user, its sudo drop-in and the site's SSH
//!   keys (`homestak scenario user-setup`).
//!
//! Every step is idempotent: a second run on a set-up host changes nothing
//! and does not reboot.

pub mod node_config;
pub mod pve;
pub mod remote;
pub mod token;
pub mod user;

use std::sync::Arc;

use homestak_ssh as ssh;

/// How to reach the host: transport, target (address, user, key, host key
/// policy).
#[derive(Clone)]
pub struct Remote {
    /// The host's name in the site-config (for messages).
    pub host: String,
    pub transport: Arc<dyn ssh::Transport>,
    pub target: ssh::Target,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("host", &self.host)
            .field("destination", &self.target.destination)
            .finish_non_exhaustive()
    }
}

impl Remote {
    /// The SSH user.
    pub fn user(&self) -> &str {
        &self.target.destination.user
    }

    /// The host's address.
    pub fn address(&self) -> &str {
        &self.target.destination.host
    }

    /// One connection attempt.
    pub async fn connect(&self) -> Result<Arc<dyn ssh::Session>, Error> {
        self.transport
            .connect(&self.target)
            .await
            .map(Arc::from)
            .map_err(|source| Error::Ssh {
                host: self.host.clone(),
                action: "connect".into(),
                source,
            })
    }
}

/// Onboarding a host failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("host {host}: {action} over SSH")]
    Ssh {
        host: String,
        action: String,
        #[source]
        source: ssh::Error,
    },
    #[error("host {host}: {what}; {hint}")]
    Host {
        host: String,
        what: String,
        hint: &'static str,
    },
    #[error("host {host}: {what} did not come back within {}s after the reboot; check the host's console", waited.as_secs())]
    Timeout {
        host: String,
        what: &'static str,
        waited: std::time::Duration,
    },
    #[error("host {host}")]
    Token {
        host: String,
        #[source]
        source: token::Error,
    },
    #[error("host {host}: cannot write its node config")]
    NodeConfig {
        host: String,
        #[source]
        source: node_config::Error,
    },
}

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    /// It was already so.
    No,
    Yes,
}
