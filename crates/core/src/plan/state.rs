//! The planner's inputs: desired and observed state, in the planner's own
//! types. Adapters elsewhere build them from the manifest plus site-config
//! (desired) and from PVE reads plus the store (observed), so planning stays
//! pure and testable from plain values.

use std::collections::BTreeSet;
use std::fmt;

use homestak_base::id::{NodeName, PveNode, VmId};
use serde::{Deserialize, Serialize};

use super::marks::{Claim, Marks};

/// What kind of manifest node a VM backs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A plain VM.
    Vm,
    /// A VM that becomes a nested Proxmox VE host.
    Pve,
}

/// How the VM's first NIC gets its address (cloud-init `ipconfig0`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "mode")]
pub enum IpConfig {
    Dhcp,
    Static {
        /// Address with prefix, e.g. `10.0.12.50/24`.
        cidr: String,
        gateway: Option<String>,
    },
}

impl IpConfig {
    /// The `ipconfig0` value PVE stores (`ip=dhcp` or `ip=…,gw=…`).
    pub fn to_pve(&self) -> String {
        match self {
            IpConfig::Dhcp => "ip=dhcp".to_string(),
            IpConfig::Static {
                cidr,
                gateway: Some(gw),
            } => format!("ip={cidr},gw={gw}"),
            IpConfig::Static {
                cidr,
                gateway: None,
            } => format!("ip={cidr}"),
        }
    }
}

impl fmt::Display for IpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpConfig::Dhcp => f.write_str("dhcp"),
            IpConfig::Static { cidr, .. } => f.write_str(cidr),
        }
    }
}

/// One VM as the manifest and site-config want it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredVm {
    /// Manifest node name; also the VM name in PVE.
    pub name: NodeName,
    pub kind: Kind,
    /// Manifest parent, when the node is nested under a `pve` node.
    pub parent: Option<NodeName>,
    /// Explicit vmid from the manifest, if any.
    pub vmid: Option<VmId>,
    pub cores: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    /// Image name, e.g. `debian-12` (a file `<image>.qcow2` on import storage).
    pub image: String,
    /// Storage for the VM's disks.
    pub storage: String,
    pub bridge: String,
    pub ip: IpConfig,
    pub nameserver: Option<String>,
    pub searchdomain: Option<String>,
    /// cloud-init user.
    pub user: String,
    pub ssh_keys: Vec<String>,
    /// How the VM gets its spec (a node with `spec:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<SpecDelivery>,
}

/// A node's spec and how it reaches the VM (`execution.mode`).
///
/// The hash of [`DesiredVm`] covers the identity, mode, server and the
/// spec's digest, never the token or password (they are not serialised).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecDelivery {
    /// The spec's name (`v2/specs/<identity>.yaml`, `GET /spec/{identity}`).
    pub identity: String,
    pub mode: crate::model::ExecutionMode,
    /// `defaults.spec_server` of `site.yaml`, when set (pull: where the VM
    /// fetches; pull needs one). Serialised as `""` when unset, as every
    /// earlier version did, so the spec hash of a VM does not change.
    #[serde(default, with = "homestak_base::empty")]
    pub server: Option<String>,
    /// SHA-256 (hex) of [`document`](Self::document).
    pub digest: String,
    /// The resolved spec as `homestak serve` answers it (JSON text).
    #[serde(skip)]
    pub document: String,
    /// The token the spec's posture gives this identity (`None` for
    /// network trust).
    #[serde(skip)]
    pub token: Option<homestak_base::secret::Secret>,
    /// `passwords.vm_root` of `secrets.yaml` (a crypt hash), when set.
    #[serde(skip)]
    pub root_password: Option<homestak_base::secret::Secret>,
}

impl DesiredVm {
    /// Hash of everything that shapes the VM, recorded in its marks. A
    /// change here that no observable field shows (say, new SSH keys) still
    /// makes the plan update the VM.
    pub fn spec_hash(&self) -> String {
        // serde_json of a struct is deterministic (field order is fixed).
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        let digest = homestak_base::digest::sha256(&bytes);
        format!("sha256:{}", homestak_base::digest::short_hex(&digest))
    }
}

/// Everything one reconcile of one manifest on one PVE tier should achieve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub manifest: String,
    /// The PVE host (site-config node name) this tier converges.
    pub host: String,
    /// VMs on this tier, parents before children.
    pub vms: Vec<DesiredVm>,
}

/// Power state as PVE reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Power {
    Running,
    Stopped,
    /// Anything else PVE may report (paused, prelaunch, …).
    Other,
}

impl fmt::Display for Power {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Power::Running => "running",
            Power::Stopped => "stopped",
            Power::Other => "other",
        })
    }
}

/// One VM as PVE shows it (bulk read, plus its config where a decision
/// needed it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedVm {
    pub vmid: VmId,
    pub name: Option<String>,
    /// PVE node the VM lives on.
    pub node: PveNode,
    pub power: Power,
    /// A PVE lock (`create`, `clone`, …) means a task is working on it.
    pub lock: Option<String>,
    pub template: bool,
    /// Normalised (lowercase, sorted, unique).
    pub tags: BTreeSet<String>,
    /// What the tags and description claim, checked against the vmid and
    /// the site's key (and, for legacy marks, the store); `None` for a VM
    /// without homestak's tag and marks, or whose config was not read.
    pub claim: Option<Claim>,
    /// The keyed tag ([`super::marks::owner_tag`]) this VM should carry
    /// when it is ours.
    pub owner_tag: Option<String>,
    pub cores: Option<u32>,
    pub memory_mib: Option<u64>,
    pub disk_gib: Option<u64>,
    pub bridge: Option<String>,
    pub ip: Option<IpConfig>,
}

impl ObservedVm {
    /// Our marks, when the VM is ours (see [`Claim::owned`]).
    pub fn marks(&self) -> Option<&Marks> {
        self.claim.as_ref().and_then(Claim::owned)
    }

    /// True when this VM is ours for `manifest`/`node`. A vmid or name
    /// match alone never counts, nor do copied, forged or template marks.
    pub fn owned_by(&self, manifest: &str, node: &NodeName) -> bool {
        self.marks()
            .is_some_and(|m| m.manifest == manifest && m.node == *node)
    }

    /// True when the VM is ours for `manifest` (any node).
    pub fn owned_by_manifest(&self, manifest: &str) -> bool {
        self.marks().is_some_and(|m| m.manifest == manifest)
    }

    /// A VM carrying marks for `manifest` that are not ours: the marks and
    /// why (a clone, a restore, a template, forged marks).
    pub fn stray_of(&self, manifest: &str) -> Option<(&Marks, String)> {
        let claim = self.claim.as_ref()?;
        let marks = claim.marks();
        (marks.manifest == manifest)
            .then(|| claim.why_foreign().map(|why| (marks, why)))
            .flatten()
    }

    /// True when this is PVE's placeholder of a create in progress: a
    /// config holding `lock: create` and nothing that names an owner (no
    /// tags, no marks). PVE writes every option only once the disks are
    /// imported, so whose create it is cannot be read from the VM: only a
    /// recorded create intent for this vmid makes it ours.
    pub fn is_create_placeholder(&self) -> bool {
        self.lock.as_deref() == Some("create") && self.tags.is_empty() && self.claim.is_none()
    }
}

/// What the store remembers about a node; absence means "never applied
/// here" (or the store was lost, which adoption repairs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    pub node: NodeName,
    pub vmid: VmId,
    pub spec_hash: Option<String>,
    /// The vmid of a create recorded before it was sent and not yet seen
    /// through: PVE's placeholder there is this node's create in progress.
    #[serde(default)]
    pub intent: Option<VmId>,
}

/// The world as observed for one tier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    pub vms: Vec<ObservedVm>,
    pub remembered: Vec<Remembered>,
}
