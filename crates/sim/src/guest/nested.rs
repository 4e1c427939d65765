//! Nested PVE tiers: a VM made from a PVE image is itself a PVE host.
//!
//! When such a VM boots, pveproxy "starts with the image": another
//! [`Simulator`] serves `https://<VM address>:8006` with one node named
//! after the VM (its CPUs and memory), the storages and images of the
//! parent's `nested:` config, and the parent's latency model, time scale,
//! SSH port and fault rates (with a seed derived from the parent's and the
//! VMID). Its VMs get their own loopback blocks, so any depth works: a VM
//! in it made from a PVE image nests again.
//!
//! Like a freshly installed host, it starts with **no API token**: only
//! `root@pam` ticket auth (a random root password, shown to tests under
//! `/_sim/vms/{vmid}/nested`) until a token is created over SSH with
//! `pveum user token add`. What it stores lives on the VM's "disk":
//!
//! - its world in `<VM workdir>/pve/state.json` (kept across VM restarts;
//!   after a restart its VMs are off, except `onboot: 1` ones, which start);
//! - its certificate and key in the VM's root at
//!   `/etc/pve/local/pve-ssl.pem` and `pve-ssl.key`, so the fingerprint is
//!   stable and readable over SSH (`openssl x509 -noout -fingerprint
//!   -sha256 -in /etc/pve/local/pve-ssl.pem`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::Boot;
use crate::config::{Config, NodeConfig, Size, TlsFiles};
use crate::runtime::Shared;
use crate::ssh::VmRoot;
use crate::{Handle, Simulator};
use homestak_ssh::BoxFuture;

/// PVE's API port.
pub const API_PORT: u16 = 8006;

/// Where the nested tier keeps its certificate, as a guest path.
pub const CERT_PATH: &str = "/etc/pve/local/pve-ssl.pem";
/// Where the nested tier keeps its private key, as a guest path.
pub const KEY_PATH: &str = "/etc/pve/local/pve-ssl.key";

/// The configuration of the tier inside the VM `boot`.
pub(crate) fn inner_config(parent: &Config, boot: &Boot, root: &VmRoot) -> Config {
    let host = |guest: &str| {
        root.resolve("/", guest)
            .map(|p| p.host)
            .unwrap_or_else(|_| root.host_dir().join(guest.trim_start_matches('/')))
    };
    let mut images = parent
        .nested
        .images
        .clone()
        .unwrap_or_else(|| parent.images.clone());
    for img in &mut images {
        // Node names of the parent tier mean nothing inside.
        img.node = None;
    }
    let state_dir = boot.workdir.join("pve");
    let state_file = state_dir.join("state.json");
    // A host keeps its node name even if the VM was renamed since.
    let node = crate::world::World::load(&state_file)
        .ok()
        .and_then(|w| w.nodes.keys().next().cloned())
        .unwrap_or_else(|| boot.hostname.clone());
    Config {
        nodes: vec![NodeConfig {
            name: node,
            cpus: boot.cpus.max(1),
            memory: Size(boot.memory),
            storages: parent.nested.storages.clone(),
        }],
        images,
        latency: parent.latency.clone(),
        downloads: parent.downloads.clone(),
        ssh_port: parent.ssh_port,
        host_ssh_port: None,
        host_ssh_keys: Vec::new(),
        faults: parent
            .nested
            .faults
            .clone()
            .unwrap_or_else(|| parent.faults.clone()),
        token_id: parent.token_id.clone(),
        pve_version: parent.pve_version.clone(),
        nested: parent.nested.clone(),
        // Inner tiers answer honestly: the test aims at one client.
        hostile: Default::default(),
        listen: Some(SocketAddr::from((boot.address, API_PORT))),
        time_scale: parent.time_scale,
        seed: parent.seed.map(|s| {
            s.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(u64::from(boot.vmid))
        }),
        state_file: Some(state_file),
        work_dir: Some(state_dir.join("state.d")),
        initial_token: false,
        tls_files: Some(TlsFiles {
            cert: host(CERT_PATH),
            key: host(KEY_PATH),
        }),
        images_exact: true,
        cold_boot: true,
        host_ssh: false,
    }
}

/// What `/_sim/` shows about a running nested tier.
#[derive(Clone, Debug, Default)]
struct Status {
    url: Option<String>,
    node: String,
    fingerprint: Option<String>,
    root_password: Option<crate::Secret>,
    error: Option<String>,
}

/// The nested PVE tier of one booted VM.
pub struct Pve {
    config: Config,
    handle: tokio::sync::Mutex<Option<Handle>>,
    shared: Mutex<Option<Arc<Shared>>>,
    status: Mutex<Status>,
}

impl std::fmt::Debug for Pve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pve")
            .field("listen", &self.config.listen)
            .finish_non_exhaustive()
    }
}

impl Pve {
    pub(crate) fn new(config: Config) -> Self {
        Pve {
            handle: tokio::sync::Mutex::new(None),
            shared: Mutex::new(None),
            status: Mutex::new(Status {
                node: config.primary_node().to_string(),
                ..Status::default()
            }),
            config,
        }
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The inner simulator's state, while it runs (for the shims).
    pub(crate) fn shared(&self) -> Option<Arc<Shared>> {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The node name of the inner host.
    pub fn node(&self) -> String {
        self.status().node.clone()
    }

    /// Starts the inner API unless it runs. The error is also kept for
    /// `/_sim/`.
    pub fn start(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let mut handle = self.handle.lock().await;
            if handle.is_some() {
                return Ok(());
            }
            if let Some(dir) = self.config.state_file.as_ref().and_then(|p| p.parent()) {
                std::fs::create_dir_all(dir).map_err(|e| self.failed(e.to_string()))?;
            }
            // Boxed: a nested simulator supervises guests that may nest again.
            let started: BoxFuture<'_, Result<Handle, crate::Error>> =
                Box::pin(Simulator::start(self.config.clone()));
            let started = started
                .await
                .map_err(|e| self.failed(homestak_base::error_chain(&e)))?;
            tracing::debug!(url = started.url(), "nested PVE tier up");
            *self.shared.lock().unwrap_or_else(|e| e.into_inner()) = Some(started.shared().clone());
            {
                let mut status = self.status();
                status.url = Some(started.url().to_string());
                status.node = started.node().to_string();
                status.fingerprint = Some(started.fingerprint().to_string());
                status.root_password = Some(crate::Secret::new(started.root_password()));
                status.error = None;
            }
            *handle = Some(started);
            Ok(())
        })
    }

    fn failed(&self, error: String) -> String {
        tracing::warn!(listen = ?self.config.listen, %error, "the nested PVE tier cannot start");
        self.status().error = Some(error.clone());
        error
    }

    /// Whether the inner API is up.
    pub fn running(&self) -> bool {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Stops the inner API and everything inside it, saving its state.
    pub fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let mut handle = self.handle.lock().await;
            *self.shared.lock().unwrap_or_else(|e| e.into_inner()) = None;
            if let Some(h) = handle.take() {
                let url = h.url().to_string();
                if let Err(e) = h.shutdown().await {
                    // The VM was destroyed under it: nothing left to save.
                    tracing::debug!(%url, error = %e, "nested PVE tier stopped uncleanly");
                }
            }
            let mut status = self.status();
            status.url = None;
            status.root_password = None;
        })
    }

    /// `{url, node, fingerprint, root_password, error, running}`.
    pub fn view(&self) -> Value {
        let status = self.status().clone();
        json!({
            "running": status.url.is_some(),
            "url": status.url,
            "node": status.node,
            "fingerprint": status.fingerprint,
            "root_password": status.root_password.as_ref().map(|s| s.expose()),
            "error": status.error,
        })
    }
}
