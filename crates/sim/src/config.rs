//! The simulator's configuration: the world it starts with (nodes, storages,
//! images), its latency model, SSH port and faults, read from YAML; plus the
//! runtime options the CLI or a test sets (listen address, time scale, seed,
//! state file).
//!
//! ```yaml
//! nodes:
//!   - name: pve
//!     cpus: 16
//!     memory: 64G
//!     storages:
//!       - { id: local, type: dir, content: [iso, vztmpl, import, snippets], size: 100G }
//!       - { id: local-zfs, type: zfspool, content: [images, rootdir], size: 500G, lock_hold: 2.0 }
//! images:
//!   - { volid: "local:import/debian-12.qcow2", size: 330M, virtual_size: 2G }
//! latency: { start: 1.5, agent_boot: 15 }
//! ssh_port: 22
//! host_ssh_port: 2222            # the node's own SSH (default: ssh_port)
//! host_ssh_keys: ["ssh-ed25519 AAAA… me@laptop"]   # may log in as root
//! faults: { read_error_rate: 0.01 }
//! hostile: { answer: truncated_json }  # spoiled answers (see `hostile`)
//! nested:                      # what a VM booted from a PVE image serves
//!   storages: [ { id: local, type: dir, content: [import, iso], size: 50G } ]
//!   images: []                 # default: the same images as this tier
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::faults::FaultRates;
use homestak_pve::schema::formats::parse_size;

/// A byte size written as `32G`, `512M` or a plain number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Size(n)),
            Raw::Text(t) => parse_size(&t).map(Size).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid size {t:?}: use bytes or a number with K, M, G or T"
                ))
            }),
        }
    }
}

/// Storage backends the simulator knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    Dir,
    Zfspool,
    Lvmthin,
    Lvm,
    Nfs,
    Cifs,
    Cephfs,
    Rbd,
}

impl StorageKind {
    /// Volumes are files (`vm-100-disk-0.qcow2` under `<vmid>/`).
    pub fn file_based(self) -> bool {
        matches!(
            self,
            StorageKind::Dir | StorageKind::Nfs | StorageKind::Cifs | StorageKind::Cephfs
        )
    }

    pub fn pve_name(self) -> &'static str {
        match self {
            StorageKind::Dir => "dir",
            StorageKind::Zfspool => "zfspool",
            StorageKind::Lvmthin => "lvmthin",
            StorageKind::Lvm => "lvm",
            StorageKind::Nfs => "nfs",
            StorageKind::Cifs => "cifs",
            StorageKind::Cephfs => "cephfs",
            StorageKind::Rbd => "rbd",
        }
    }
}

/// One storage of a node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: StorageKind,
    pub content: Vec<String>,
    #[serde(default = "default_storage_size")]
    pub size: Size,
    #[serde(default)]
    pub shared: bool,
    /// Seconds (at time scale 1) one allocation holds the storage lock;
    /// default `latency.storage_lock_hold`.
    #[serde(default)]
    pub lock_hold: Option<f64>,
}

fn default_storage_size() -> Size {
    Size(500 << 30)
}

/// One node of the simulated cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub name: String,
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    #[serde(default = "default_memory")]
    pub memory: Size,
    /// Storages; the default pair `local` + `local-zfs` when empty.
    #[serde(default)]
    pub storages: Vec<StorageConfig>,
}

fn default_cpus() -> u32 {
    16
}
fn default_memory() -> Size {
    Size(64 << 30)
}

/// An image already present in a storage.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// `local:import/debian-12.qcow2`
    pub volid: String,
    /// Node holding it (default: every node, since `local` is per node).
    #[serde(default)]
    pub node: Option<String>,
    /// File size.
    pub size: Size,
    /// Disk size a VM gets when it imports the image.
    #[serde(default)]
    pub virtual_size: Option<Size>,
    /// A Proxmox VE image: a VM made from it can become a nested PVE host.
    /// Default: the file name contains `-pve`.
    #[serde(default)]
    pub pve: Option<bool>,
}

/// Durations in seconds at time scale 1.0 (roughly a small real host).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Latency {
    /// How long every API answer takes (0: at once); a slow link or a
    /// loaded host.
    pub answer: f64,
    pub create: f64,
    pub config: f64,
    pub resize: f64,
    pub start: f64,
    pub stop: f64,
    pub shutdown: f64,
    pub reboot: f64,
    pub destroy: f64,
    pub template: f64,
    pub clone_linked: f64,
    pub download: f64,
    /// Copy throughput for imports and full clones, MiB/s.
    pub copy_mib_per_s: f64,
    /// Download throughput for download-url, MiB/s.
    pub download_mib_per_s: f64,
    /// From `start` until the guest agent answers.
    pub agent_boot: f64,
    /// pveproxy waits this long before any 401.
    pub auth_failure_delay: f64,
    /// How long an operation waits for a storage or VM lock.
    pub lock_timeout: f64,
    /// How long one allocation holds its storage's lock.
    pub storage_lock_hold: f64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            answer: 0.0,
            create: 1.0,
            config: 0.3,
            resize: 0.5,
            start: 1.5,
            stop: 1.0,
            shutdown: 4.0,
            reboot: 6.0,
            destroy: 1.0,
            template: 1.0,
            clone_linked: 1.0,
            download: 1.0,
            copy_mib_per_s: 200.0,
            download_mib_per_s: 50.0,
            agent_boot: 15.0,
            auth_failure_delay: 3.0,
            lock_timeout: 10.0,
            storage_lock_hold: 2.0,
        }
    }
}

/// Sizes the simulator assumes for download-url, since it never fetches.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Downloads {
    /// Size of a downloaded file whose URL is not listed.
    pub default_size: Size,
    /// Virtual size of a downloaded disk image.
    pub default_virtual_size: Size,
    /// Exact sizes by URL.
    pub sizes: std::collections::BTreeMap<String, Size>,
    /// The SHA-256 (hex) of a downloaded file, by the URL's file name: a
    /// download-url whose `checksum` differs fails as PVE's does and keeps
    /// no file. A file not listed passes any checksum.
    pub sha256: std::collections::BTreeMap<String, String>,
}

impl Default for Downloads {
    fn default() -> Self {
        Downloads {
            default_size: Size(400 << 20),
            default_virtual_size: Size(3 << 30),
            sizes: Default::default(),
            sha256: Default::default(),
        }
    }
}

/// The PVE host a VM booted from a PVE image becomes (a nested tier). Its
/// node is named after the VM and has the VM's CPUs and memory; latency,
/// downloads, SSH port, version and time scale are this tier's, and so are
/// faults unless `faults` is given.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NestedConfig {
    /// Storages of the inner node; the default pair `local` + `local-zfs`
    /// when empty.
    pub storages: Vec<StorageConfig>,
    /// Images present on the inner node. Default: the images of this tier
    /// (so a PVE image can nest again); `[]` starts the inner host empty.
    pub images: Option<Vec<ImageConfig>>,
    /// Fault rates inside (and deeper); default: this tier's.
    pub faults: Option<FaultRates>,
}

/// Where a simulator keeps its TLS certificate, as PVE keeps
/// `/etc/pve/local/pve-ssl.pem` and `pve-ssl.key`: loaded when both exist,
/// otherwise generated and written there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Everything a simulator starts from.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub nodes: Vec<NodeConfig>,
    pub images: Vec<ImageConfig>,
    pub latency: Latency,
    pub downloads: Downloads,
    /// Port of each VM's SSH server on its address.
    pub ssh_port: u16,
    /// Port of the node's own SSH server on the simulator's address
    /// (default `ssh_port`; 0 picks a free port).
    pub host_ssh_port: Option<u16>,
    /// Public keys (`TYPE BASE64 [comment]`) that may log in to the node
    /// as root.
    pub host_ssh_keys: Vec<String>,
    pub faults: FaultRates,
    /// Token the simulator trusts: `user@realm!tokenid`.
    pub token_id: String,
    /// `GET /version`'s version.
    pub pve_version: String,
    /// What VMs booted from a PVE image serve.
    pub nested: NestedConfig,
    /// Spoiled answers, for clients' robustness tests.
    pub hostile: super::hostile::Hostile,

    /// Where to listen (loopback only).
    #[serde(skip)]
    pub listen: Option<SocketAddr>,
    /// Multiplies every latency (0.01 = 100× faster).
    #[serde(skip)]
    pub time_scale: f64,
    /// Seed for reproducible faults and identifiers.
    #[serde(skip)]
    pub seed: Option<u64>,
    /// Persist the world here and reload it on start.
    #[serde(skip)]
    pub state_file: Option<PathBuf>,
    /// Per-VM working directories live under this (default: a temporary
    /// directory removed on shutdown).
    #[serde(skip)]
    pub work_dir: Option<PathBuf>,
    /// Create the `token_id` token in a fresh world. A nested tier starts
    /// without one, as a freshly installed PVE host does.
    #[serde(skip)]
    pub initial_token: bool,
    /// Keep the certificate in these files (default: a fresh one per start).
    #[serde(skip)]
    pub tls_files: Option<TlsFiles>,
    /// An empty `images` list means "no images", not "the defaults".
    #[serde(skip)]
    pub images_exact: bool,
    /// The host was powered off since the state was saved: VMs come back
    /// stopped, except those with `onboot: 1`, which start again.
    #[serde(skip)]
    pub cold_boot: bool,
    /// Serve the node's own SSH (a nested tier has none: its host is the
    /// VM, with the VM's SSH server).
    #[serde(skip)]
    pub host_ssh: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            nodes: Vec::new(),
            images: Vec::new(),
            latency: Latency::default(),
            downloads: Downloads::default(),
            ssh_port: 22,
            host_ssh_port: None,
            host_ssh_keys: Vec::new(),
            faults: FaultRates::default(),
            token_id: "root@pam!homestak".into(),
            pve_version: "8.4.1".into(),
            nested: NestedConfig::default(),
            hostile: Default::default(),
            listen: None,
            time_scale: 1.0,
            seed: None,
            state_file: None,
            work_dir: None,
            initial_token: true,
            tls_files: None,
            images_exact: false,
            cold_boot: false,
            host_ssh: true,
        }
    }
}

/// The configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot load the simulator configuration")]
    Load(#[source] homestak_base::yaml::Error),
    #[error("invalid simulator configuration {}: {problem}", path.display())]
    Invalid { path: PathBuf, problem: String },
}

impl Config {
    /// Reads a YAML file and fills in defaults.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let config: Config = homestak_base::yaml::read_file(path).map_err(Error::Load)?;
        config.finish().map_err(|problem| Error::Invalid {
            path: path.to_path_buf(),
            problem,
        })
    }

    /// The default world: node `pve`, storages `local` and `local-zfs`, and
    /// three Debian images.
    pub fn with_defaults() -> Config {
        // Defaults are valid by construction.
        Config::default().finish().unwrap_or_default()
    }

    /// Fills defaults and checks consistency.
    pub fn finish(mut self) -> Result<Config, String> {
        if self.nodes.is_empty() {
            self.nodes.push(NodeConfig {
                name: "pve".into(),
                cpus: default_cpus(),
                memory: default_memory(),
                storages: Vec::new(),
            });
        }
        for node in &mut self.nodes {
            if !homestak_pve::schema::formats::is_node_name(&node.name) {
                return Err(format!(
                    "node name {:?} is not a valid PVE node name",
                    node.name
                ));
            }
            if node.storages.is_empty() {
                node.storages = default_storages();
            }
            check_storages(&node.storages)?;
        }
        check_storages(&self.nested.storages)?;
        if let Some(images) = &self.nested.images {
            let storages = if self.nested.storages.is_empty() {
                default_storages()
            } else {
                self.nested.storages.clone()
            };
            for img in images {
                let storage = img.volid.split_once(':').map_or("", |(s, _)| s);
                if !storages.iter().any(|s| s.id == storage) {
                    return Err(format!(
                        "nested image {:?}: the nested node has no storage {storage:?}",
                        img.volid
                    ));
                }
            }
        }
        if self.images.is_empty() && !self.images_exact {
            self.images = default_images();
        }
        for img in &self.images {
            let Some((storage, name)) = img.volid.split_once(':') else {
                return Err(format!(
                    "image {:?} is not a volume ID (storage:import/file)",
                    img.volid
                ));
            };
            let known = self.nodes.iter().any(|n| {
                img.node.as_ref().is_none_or(|want| *want == n.name)
                    && n.storages.iter().any(|s| s.id == storage)
            });
            if !known {
                return Err(format!(
                    "image {:?}: no node has storage {storage:?}",
                    img.volid
                ));
            }
            if !(name.starts_with("import/") || name.starts_with("iso/")) {
                return Err(format!(
                    "image {:?}: only import/ and iso/ volumes can be preset",
                    img.volid
                ));
            }
        }
        for (i, key) in self.host_ssh_keys.iter().enumerate() {
            if let Err(e) = super::ssh::parse_authorized_keys(key) {
                return Err(format!("host_ssh_keys[{i}]: {e}"));
            }
        }
        if !(self.time_scale.is_finite() && self.time_scale >= 0.0) {
            return Err(format!(
                "time scale {} must be a number ≥ 0",
                self.time_scale
            ));
        }
        if self.token_id.split_once('!').is_none_or(|(u, t)| {
            !homestak_pve::schema::formats::is_userid(u)
                || !homestak_pve::schema::Pattern::TokenId.matches(t)
        }) {
            return Err(format!(
                "token_id {:?} must look like user@realm!tokenid",
                self.token_id
            ));
        }
        Ok(self)
    }

    /// The first node: the one the ready file and site-config name.
    pub fn primary_node(&self) -> &str {
        self.nodes.first().map_or("pve", |n| n.name.as_str())
    }
}

fn check_storages(storages: &[StorageConfig]) -> Result<(), String> {
    for s in storages {
        if !homestak_pve::schema::formats::is_storage_id(&s.id) {
            return Err(format!(
                "storage id {:?} is not a valid PVE storage ID",
                s.id
            ));
        }
        for c in &s.content {
            if !homestak_pve::schema::formats::CONTENT_TYPES.contains(&c.as_str()) {
                return Err(format!("storage {}: unknown content type {c:?}", s.id));
            }
        }
    }
    Ok(())
}

/// The storages a node gets when its config names none.
pub fn default_storages() -> Vec<StorageConfig> {
    vec![
        StorageConfig {
            id: "local".into(),
            kind: StorageKind::Dir,
            content: ["iso", "vztmpl", "import", "snippets"]
                .map(String::from)
                .to_vec(),
            size: Size(100 << 30),
            shared: false,
            lock_hold: None,
        },
        StorageConfig {
            id: "local-zfs".into(),
            kind: StorageKind::Zfspool,
            content: ["images", "rootdir"].map(String::from).to_vec(),
            size: Size(500 << 30),
            shared: false,
            lock_hold: None,
        },
    ]
}

fn default_images() -> Vec<ImageConfig> {
    let img = |file: &str, size: u64, virt: u64| ImageConfig {
        volid: format!("local:import/{file}"),
        node: None,
        size: Size(size),
        virtual_size: Some(Size(virt)),
        pve: None,
    };
    vec![
        img("debian-12.qcow2", 330 << 20, 2 << 30),
        img("debian-13.qcow2", 420 << 20, 3 << 30),
        img("debian-13-pve.qcow2", 1536 << 20, 12 << 30),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_issue() {
        let c = Config::with_defaults();
        assert_eq!(c.primary_node(), "pve");
        let ids: Vec<_> = c.nodes[0].storages.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["local", "local-zfs"]);
        assert_eq!(
            c.nodes[0].storages[0].content,
            ["iso", "vztmpl", "import", "snippets"]
        );
        assert_eq!(c.images.len(), 3);
        assert!(
            c.images
                .iter()
                .any(|i| i.volid == "local:import/debian-13-pve.qcow2")
        );
    }

    #[test]
    fn yaml_config_parses_and_is_checked() {
        let text = "nodes:\n  - name: father\n    storages:\n      - { id: local, type: dir, content: [import], size: 10G }\n      - { id: local-lvm, type: lvmthin, content: [images], lock_hold: 0.5 }\nimages:\n  - { volid: 'local:import/x.qcow2', size: 1G, virtual_size: 8G }\nlatency: { start: 0.5 }\nfaults: { write_error_rate: 0.5 }\n";
        let c: Config = homestak_base::yaml::from_str(text, Path::new("sim.yaml")).unwrap();
        let c = c.finish().unwrap();
        assert_eq!(c.primary_node(), "father");
        assert_eq!(c.nodes[0].storages[0].size, Size(10 << 30));
        assert_eq!(c.latency.start, 0.5);
        assert_eq!(c.latency.stop, Latency::default().stop);
        assert_eq!(c.faults.write_error_rate, 0.5);

        let bad = "images:\n  - { volid: 'nosuch:import/x.qcow2', size: 1G }\n";
        let c: Config = homestak_base::yaml::from_str(bad, Path::new("sim.yaml")).unwrap();
        assert!(c.finish().unwrap_err().contains("no node has storage"));
        let unknown = "bogus: 1\n";
        assert!(homestak_base::yaml::from_str::<Config>(unknown, Path::new("sim.yaml")).is_err());
    }

    #[test]
    fn nested_tiers_are_configured_and_checked() {
        let c = Config::with_defaults();
        assert!(c.nested.storages.is_empty() && c.nested.images.is_none());
        let text = "ssh_port: 2222\nnested:\n  storages:\n    - { id: local, type: dir, content: [import] }\n  images: []\n";
        let c: Config = homestak_base::yaml::from_str(text, Path::new("sim.yaml")).unwrap();
        let c = c.finish().unwrap();
        assert_eq!(c.ssh_port, 2222);
        assert_eq!(c.nested.storages[0].id, "local");
        assert_eq!(c.nested.images.as_deref().map(<[_]>::len), Some(0));
        let bad = "nested:\n  images:\n    - { volid: 'nfs:import/x.qcow2', size: 1G }\n";
        let c: Config = homestak_base::yaml::from_str(bad, Path::new("sim.yaml")).unwrap();
        assert!(
            c.finish()
                .unwrap_err()
                .contains("the nested node has no storage \"nfs\"")
        );
        // An exact empty image list stays empty (a nested host starts bare).
        let mut c = Config {
            images_exact: true,
            ..Config::default()
        };
        c = c.finish().unwrap();
        assert!(c.images.is_empty());
    }
}
