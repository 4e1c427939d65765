//! PVE nodes (`nodes/*.yaml`) and SSH-only hosts (`hosts/*.yaml`), and the
//! [`HostConfig`] a command targeting `--host NAME` works with.
//!
//! A name is looked up in `nodes/` first (a PVE node with API access, even
//! when its file is empty), then in `hosts/` (a machine before PVE is
//! installed: SSH only, no API fields).
//!
//! `ssh_host` rules (the reference's): for a node, the host part of
//! `api_endpoint`; for a host, its `ip`, else the address of its `vmbr0`
//! interface without the prefix length. (The tofu-shaped resolution uses a
//! different rule; see [`super::resolver`].)

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::loader::Site;
use homestak_base::secret::Secret;
use homestak_base::yaml;

/// VM ID the reference reserves for an inner PVE VM.
pub const INNER_VM_ID: u32 = 99800;
/// VM ID the reference reserves for a test VM.
pub const TEST_VM_ID: u32 = 99900;

/// A host lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Neither `nodes/<name>.yaml` nor `hosts/<name>.yaml` exists. The
    /// reference's text: both paths tried, the hosts there are, and how to
    /// provision a new one.
    #[error(
        "Host '{name}' not found.\n  - No node config: {} (PVE not installed?)\n  - No host config: {} (physical machine)\n\nAvailable hosts: {}\n\nTo provision a new host, create {}:\n  ssh root@<ip> \"cd /usr/local/etc/homestak && make host-config\"",
        root.join("nodes").join(format!("{name}.yaml")).display(),
        root.join("hosts").join(format!("{name}.yaml")).display(),
        if available.is_empty() { "none configured".to_string() } else { available.join(", ") },
        root.join("hosts").join(format!("{name}.yaml")).display(),
    )]
    NotFound {
        name: String,
        root: PathBuf,
        available: Vec<String>,
    },
    /// The node or host file is invalid.
    #[error("host '{name}' cannot be loaded; fix the file")]
    Document {
        name: String,
        #[source]
        source: Arc<yaml::Error>,
    },
}

impl Error {
    /// Host errors carry no E-code.
    pub fn code(&self) -> Option<&'static str> {
        None
    }
}

/// A PVE node (`nodes/<name>.yaml`; the file name is the primary key).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct NodeConfig {
    /// PVE node name, when it differs from the file name.
    pub node: Option<String>,
    /// The physical host this node runs on (`hosts/<host>.yaml`).
    pub host: Option<String>,
    /// PVE API URL, e.g. `https://10.0.12.5:8006`.
    pub api_endpoint: Option<String>,
    /// Key into `secrets.yaml` `api_tokens` (default: the file name).
    pub api_token: Option<String>,
    /// Storage for VM disks; required to resolve VMs on this node.
    pub datastore: Option<String>,
    /// SHA-256 fingerprint of the API certificate (`AA:BB:…`, as
    /// `pvenode cert info` prints it). When set, homestak trusts exactly
    /// that certificate instead of the CA chain.
    pub api_fingerprint: Option<String>,
    /// Storage holding import images (content `import`; default `local`).
    pub image_storage: Option<String>,
    /// Private key homestak uses for SSH to this node's VMs (default
    /// `~/.ssh/id_rsa`); its public half must be in `secrets.yaml` `ssh_keys`.
    pub ssh_key: Option<PathBuf>,
    /// SSH port of the VMs on this node (default 22).
    pub vm_ssh_port: Option<u16>,
    /// SSH port of the node itself (default 22): homestak logs in to the
    /// host for what its API cannot do, such as joining an image shipped
    /// in parts.
    pub ssh_port: Option<u16>,
    /// Address for SSH when the endpoint is not local.
    pub ip: Option<String>,
    /// User for SSH to this node (default: site `ssh_user`, else root).
    pub ssh_user: Option<String>,
    /// Keys homestak does not interpret.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A machine reachable over SSH before PVE is installed
/// (`hosts/<name>.yaml`).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct HostFile {
    /// SSH address.
    pub ip: Option<String>,
    /// SSH access.
    pub access: Option<HostAccess>,
    /// Network configuration (its `vmbr0` address is the SSH fallback).
    pub network: Option<HostNetwork>,
    /// Keys homestak does not interpret.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `access` of a host file.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct HostAccess {
    /// SSH user.
    pub ssh_user: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `network` of a host file.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct HostNetwork {
    /// Interfaces by name.
    #[serde(default)]
    pub interfaces: Option<BTreeMap<String, HostInterface>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One interface of a host file.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct HostInterface {
    /// CIDR address, e.g. `192.0.2.61/24`.
    pub address: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The configuration of a target host or node.
///
/// Serialises every field but the API token (take it with
/// [`HostConfig::api_token`]).
#[derive(Debug, Clone, Serialize)]
pub struct HostConfig {
    /// The name asked for.
    pub name: String,
    /// The file it came from.
    pub config_file: PathBuf,
    /// PVE API URL (`None` for a host without PVE yet).
    #[serde(serialize_with = "homestak_base::empty::serialize")]
    pub api_endpoint: Option<String>,
    /// PVE node name (`None` for a host without PVE yet). Checked as a
    /// [`homestak_base::id::PveNode`] where the API is used.
    #[serde(serialize_with = "homestak_base::empty::serialize")]
    pub node_name: Option<String>,
    /// SSH address (`None` when unknown).
    #[serde(serialize_with = "homestak_base::empty::serialize")]
    pub ssh_host: Option<String>,
    pub inner_vm_id: u32,
    pub test_vm_id: u32,
    /// User for SSH to the host.
    pub ssh_user: String,
    /// User cloud-init creates in VMs.
    pub automation_user: String,
    /// SSH private key used to reach hosts.
    pub ssh_key: PathBuf,
    /// Storage for VM disks.
    pub datastore: String,
    pub packer_release_repo: String,
    pub packer_release: String,
    pub packer_image: String,
    /// Loaded from `hosts/` (no PVE API yet).
    pub is_host_only: bool,
    /// PVE API token; `None` for a host without PVE or when not configured.
    #[serde(skip)]
    pub api_token: Option<Secret>,
    /// Pinned API certificate fingerprint (`nodes/<name>.yaml`
    /// `api_fingerprint`). Not part of the reference's host config output.
    #[serde(skip)]
    pub api_fingerprint: Option<String>,
    /// Storage for import images (`image_storage`, default `local`).
    #[serde(skip)]
    pub image_storage: String,
    /// SSH port of the VMs on this node (`vm_ssh_port`, default 22).
    #[serde(skip)]
    pub vm_ssh_port: u16,
    /// SSH port of the host itself (`ssh_port`, default 22).
    #[serde(skip)]
    pub ssh_port: u16,
}

impl HostConfig {
    /// The PVE API token, when one is configured.
    pub fn api_token(&self) -> Option<&Secret> {
        self.api_token.as_ref()
    }
}

impl Site {
    /// The configuration of host or node `name`.
    pub fn host_config(&self, name: &str) -> Result<HostConfig, Error> {
        let d = &self.defaults;
        let mut config = HostConfig {
            name: name.to_string(),
            config_file: PathBuf::new(),
            api_endpoint: None,
            node_name: None,
            ssh_host: None,
            inner_vm_id: INNER_VM_ID,
            test_vm_id: TEST_VM_ID,
            // The reference falls back to $USER here; we use root, the PVE
            // default, so the answer does not depend on who runs homestak.
            ssh_user: d.ssh_user.clone().unwrap_or_else(|| "root".to_string()),
            automation_user: d
                .automation_user
                .clone()
                .unwrap_or_else(|| "homestak".to_string()),
            ssh_key: self.default_ssh_key.clone(),
            datastore: "local-zfs".to_string(),
            packer_release_repo: d
                .packer_release_repo
                .clone()
                .unwrap_or_else(|| "homestak-dev/packer".to_string()),
            packer_release: d
                .packer_release
                .clone()
                .unwrap_or_else(|| "latest".to_string()),
            packer_image: d
                .packer_image
                .clone()
                .unwrap_or_else(|| "debian-12-custom.qcow2".to_string()),
            is_host_only: false,
            api_token: None,
            api_fingerprint: None,
            image_storage: "local".to_string(),
            vm_ssh_port: 22,
            ssh_port: 22,
        };
        let document = |source: &Arc<yaml::Error>| Error::Document {
            name: name.to_string(),
            source: Arc::clone(source),
        };
        if let Some(entry) = self.nodes.get(name) {
            let node = entry
                .doc
                .as_ref()
                .map_err(document)?
                .clone()
                .unwrap_or_default();
            config.config_file.clone_from(&entry.path);
            config.ssh_host = node
                .api_endpoint
                .as_deref()
                .map(endpoint_host)
                .filter(|h| !h.is_empty());
            config.api_endpoint = node.api_endpoint.filter(|e| !e.is_empty());
            config.node_name = Some(node.node.unwrap_or_else(|| name.to_string()));
            let token_key = node.api_token.as_deref().unwrap_or(name);
            config.api_token = self
                .secrets
                .lenient()
                .api_token(token_key)
                .filter(|t| !t.is_empty())
                .cloned();
            if let Some(datastore) = node.datastore.or_else(|| d.datastore.clone()) {
                config.datastore = datastore;
            }
            if let Some(user) = node.ssh_user {
                config.ssh_user = user;
            }
            config.api_fingerprint = node.api_fingerprint;
            if let Some(key) = node.ssh_key {
                config.ssh_key = key;
            }
            if let Some(port) = node.vm_ssh_port {
                config.vm_ssh_port = port;
            }
            if let Some(port) = node.ssh_port {
                config.ssh_port = port;
            }
            if let Some(storage) = node.image_storage {
                config.image_storage = storage;
            }
            return Ok(config);
        }
        if let Some(entry) = self.hosts.get(name) {
            let host = entry
                .doc
                .as_ref()
                .map_err(document)?
                .clone()
                .unwrap_or_default();
            config.config_file.clone_from(&entry.path);
            config.is_host_only = true;
            config.ssh_host = host
                .ip
                .clone()
                .or_else(|| vmbr0_address(&host))
                .filter(|h| !h.is_empty());
            if let Some(user) = host.access.and_then(|a| a.ssh_user) {
                config.ssh_user = user;
            }
            return Ok(config);
        }
        Err(Error::NotFound {
            name: name.to_string(),
            root: self.root.clone(),
            available: self.list_hosts(),
        })
    }

    /// Names in `nodes/` and `hosts/`, merged, sorted, without duplicates.
    pub fn list_hosts(&self) -> Vec<String> {
        let mut names = self.nodes.names();
        names.extend(self.hosts.names());
        names.sort();
        names.dedup();
        names
    }
}

/// `vmbr0`'s address without its prefix length.
fn vmbr0_address(host: &HostFile) -> Option<String> {
    let address = host
        .network
        .as_ref()?
        .interfaces
        .as_ref()?
        .get("vmbr0")?
        .address
        .as_deref()?;
    Some(address.split('/').next().unwrap_or(address).to_string())
}

/// The host part of a URL (lower-cased, IPv6 brackets removed), or empty
/// when the text has no `scheme://authority`.
pub fn endpoint_host(url: &str) -> String {
    let Some((_, rest)) = url.split_once("://") else {
        return String::new();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    host.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_host_takes_the_host_part() {
        assert_eq!(endpoint_host("https://localhost:8006"), "localhost");
        assert_eq!(
            endpoint_host("https://127.0.0.3:8006/api2/json"),
            "127.0.0.3"
        );
        assert_eq!(
            endpoint_host("https://user@PVE.example:8006"),
            "pve.example"
        );
        assert_eq!(endpoint_host("https://[::1]:8006"), "::1");
        assert_eq!(endpoint_host("127.0.0.1:8006"), "");
        assert_eq!(endpoint_host(""), "");
    }
}
