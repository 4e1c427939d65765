//! Desired state for one tier: a manifest resolved through the site-config
//! for one target host.
//!
//! - v2: root nodes (no parent) are this tier's VMs; every descendant of a
//!   `pve` node is delegated to the child reconciler on that inner host.
//! - v1: the first level is this tier; deeper levels are delegated. An `env`
//!   level brings the env's VMs; a `template`/`vm_preset` level one VM.
//!
//! Sizes come from the node's v2 preset (`v2/presets/`), then the node's own
//! `disk`; network, user and keys from the site-config as the Python tool
//! resolved them (`resolve_inline_vm` / `resolve_env`).

use std::collections::BTreeMap;
use std::sync::Arc;

use homestak_core::graph::ManifestGraph;
use homestak_core::model::{
    Delegate, ExecutionMode, InvalidNodeName, InvalidVmId, Manifest, NodeName, NodeType, VmId,
};
use homestak_core::plan::{Desired, DesiredVm, IpConfig, Kind, SpecDelivery};
use homestak_core::site::{self, InlineVm, Site, TofuVars, VmSettings};

/// Resolving the manifest for this tier failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("node {node}: type {kind} is not supported yet (only vm and pve)")]
    Unsupported { node: NodeName, kind: NodeType },
    #[error("node {node}: no image; set `image:` on the node or in its preset or template")]
    NoImage { node: NodeName },
    #[error(
        "node {node}: preset {preset:?} not found in v2/presets/ or vms/presets/ of the site-config"
    )]
    PresetNotFound { node: NodeName, preset: String },
    #[error("node {node}: cannot resolve it for host {host}")]
    Resolve {
        node: NodeName,
        host: String,
        #[source]
        source: site::resolver::Error,
    },
    #[error("node {node}: {what} is missing after resolution")]
    Incomplete { node: NodeName, what: &'static str },
    #[error("VM {node:?} of the resolved env cannot be a node; rename it in the env file")]
    Name {
        node: String,
        #[source]
        source: InvalidNodeName,
    },
    #[error(
        "level {level} hosts the levels after it, so it must be one VM (the PVE host); its env \
         makes {vms}"
    )]
    LevelHost { level: NodeName, vms: usize },
    #[error("level {level}: cannot take the levels after it for its child tier")]
    Levels {
        level: NodeName,
        #[source]
        source: Box<homestak_core::model::Error>,
    },
    #[error("node {node}: cannot extract the subtree its child tier converges")]
    Subtree {
        node: NodeName,
        #[source]
        source: Box<homestak_core::graph::Error>,
    },
    #[error(
        "node {node}: spec {identity} cannot be resolved; fix v2/specs/{identity}.yaml or the node's spec:"
    )]
    Spec {
        node: NodeName,
        identity: String,
        #[source]
        source: site::spec::Error,
    },
    #[error(
        "node {node}: no token for spec {identity} under its posture; fix secrets.yaml auth or the posture"
    )]
    SpecToken {
        node: NodeName,
        identity: String,
        #[source]
        source: site::auth::Error,
    },
    #[error(
        "node {node}: execution mode pull needs a spec server; set defaults.spec_server in site.yaml \
         (the URL of `homestak serve` the VM reaches)"
    )]
    NoSpecServer { node: NodeName },
    #[error("VM {node}: its resolved vmid cannot be used; fix vmid_base or vmid in the env file")]
    VmId {
        node: NodeName,
        #[source]
        source: InvalidVmId,
    },
}

/// This tier's part of a manifest.
#[derive(Debug, Clone)]
pub struct Tier {
    pub desired: Desired,
    /// Child → parent, among this tier's nodes.
    pub parents: BTreeMap<NodeName, NodeName>,
    /// Nodes converged by child reconcilers on inner hosts: each with its
    /// parent in the manifest and the `pve` node of this tier below which it
    /// sits.
    pub delegated: Vec<Delegated>,
    /// The subtree each `pve` node of this tier hands to its child tier
    /// (the manifest below it, its children as roots).
    pub subtrees: BTreeMap<NodeName, Arc<Manifest>>,
    /// `pve` nodes whose `execution.delegate` says how their child tier
    /// runs (the others follow `--delegate`).
    pub delegates: BTreeMap<NodeName, Delegate>,
}

/// A node another tier converges.
#[derive(Debug, Clone)]
pub struct Delegated {
    pub node: NodeName,
    /// Its parent in the manifest.
    pub parent: NodeName,
    /// The `pve` node of this tier whose child tier (or a deeper one)
    /// converges it.
    pub via: NodeName,
}

/// Resolves `manifest` for target `host` (a `nodes/<host>.yaml`).
pub fn resolve(site: &Site, manifest: &Manifest, host: &str) -> Result<Tier, Error> {
    let mut vms = Vec::new();
    let mut delegated = Vec::new();
    let mut subtrees = BTreeMap::new();
    let mut delegates = BTreeMap::new();
    if let Some(nodes) = manifest.nodes_in_creation_order() {
        // The root above a nested node: the `pve` node of this tier that
        // hosts it. Validation made every parent a node of the manifest.
        let root_of = |name: &NodeName| -> Option<NodeName> {
            let mut current = manifest.node(name.as_str())?;
            while let Some(parent) = &current.parent {
                current = manifest.node(parent.as_str())?;
            }
            Some(current.name.clone())
        };
        for node in nodes {
            if let Some(parent) = &node.parent {
                if let Some(via) = root_of(&node.name) {
                    delegated.push(Delegated {
                        node: node.name.clone(),
                        parent: parent.clone(),
                        via,
                    });
                }
                continue;
            }
            if let Some(delegate) = node.execution.delegate {
                delegates.insert(node.name.clone(), delegate);
            }
            let mut vm = resolve_v2_node(site, node, host)?;
            if let Some(identity) = &node.spec {
                let mode = manifest.execution_mode(node);
                vm.spec = Some(spec_delivery(site, &node.name, identity, mode)?);
            }
            vms.push(vm);
        }
        let has_children: Vec<&NodeName> = vms
            .iter()
            .filter(|v| v.kind == Kind::Pve)
            .map(|v| &v.name)
            .filter(|name| delegated.iter().any(|d| &d.parent == *name))
            .collect();
        if !has_children.is_empty() {
            let wrap = |node: &NodeName| {
                let node = node.clone();
                move |source| Error::Subtree {
                    node,
                    source: Box::new(source),
                }
            };
            let graph = ManifestGraph::new(manifest).map_err(wrap(has_children[0]))?;
            for name in has_children {
                let subtree = graph.subtree(name.as_str()).map_err(wrap(name))?;
                subtrees.insert(name.clone(), Arc::new(subtree));
            }
        }
    } else if let Some((first, rest)) = manifest.levels().split_first() {
        // A level with `post_scenario: pve-setup`, or hosting further
        // levels, becomes a PVE host: the next level is its child tier's.
        let pve = !rest.is_empty() || first.post_scenario.as_deref() == Some("pve-setup");
        let level = resolve_v1_level(site, first, host, pve)?;
        if !rest.is_empty() {
            let [host_vm] = level.as_slice() else {
                return Err(Error::LevelHost {
                    level: first.name.clone(),
                    vms: level.len(),
                });
            };
            let subtree = manifest
                .levels_below_first()
                .map_err(|source| Error::Levels {
                    level: first.name.clone(),
                    source: Box::new(source),
                })?;
            subtrees.insert(host_vm.name.clone(), Arc::new(subtree));
        }
        vms.extend(level);
        let mut parent = first.name.clone();
        for level in rest {
            delegated.push(Delegated {
                node: level.name.clone(),
                parent: parent.clone(),
                via: first.name.clone(),
            });
            parent = level.name.clone();
        }
    }
    Ok(Tier {
        desired: Desired {
            manifest: manifest.name().to_string(),
            host: host.to_string(),
            vms,
        },
        // Only roots are on this tier, so no tier-local parents yet; nested
        // tiers bring their own.
        parents: BTreeMap::new(),
        delegated,
        subtrees,
        delegates,
    })
}

/// The node's spec as `homestak serve` would answer it, and what the VM
/// needs to fetch it (pull) or what homestak writes to it (push).
fn spec_delivery(
    site: &Site,
    node: &NodeName,
    identity: &str,
    mode: ExecutionMode,
) -> Result<SpecDelivery, Error> {
    let resolved = site.resolve_spec(identity).map_err(|source| Error::Spec {
        node: node.clone(),
        identity: identity.to_string(),
        source,
    })?;
    // Byte for byte what `GET /spec/{identity}` answers (the daemon ends
    // its JSON bodies with a newline), so push and pull leave the same file.
    let document = format!("{}\n", resolved.served());
    let digest = homestak_base::digest::sha256(document.as_bytes());
    // The site answers an empty token for network trust (the reference's
    // shape); here that is no token.
    let token = site
        .auth_token(resolved.posture_name(), identity)
        .map_err(|source| Error::SpecToken {
            node: node.clone(),
            identity: identity.to_string(),
            source,
        })?;
    let token = Some(token).filter(|t| !t.is_empty());
    let server = site
        .defaults()
        .spec_server
        .clone()
        .filter(|s| !s.is_empty());
    if mode == ExecutionMode::Pull && server.is_none() {
        return Err(Error::NoSpecServer { node: node.clone() });
    }
    let root_password = site
        .secrets()
        .strict()
        .ok()
        .flatten()
        .and_then(|s| s.vm_root_password())
        .filter(|p| !p.is_empty())
        .cloned();
    Ok(SpecDelivery {
        identity: identity.to_string(),
        mode,
        server,
        digest: homestak_base::digest::hex(&digest),
        document,
        token,
        root_password,
    })
}

fn resolve_v2_node(
    site: &Site,
    node: &homestak_core::model::Node,
    host: &str,
) -> Result<DesiredVm, Error> {
    let name = &node.name;
    let kind = match node.kind {
        NodeType::Vm => Kind::Vm,
        NodeType::Pve => Kind::Pve,
        other => {
            return Err(Error::Unsupported {
                node: name.clone(),
                kind: other,
            });
        }
    };
    let mut overrides = VmSettings::default();
    if let Some(preset) = &node.preset {
        let found = site
            .presets_v2()
            .get(preset)
            .or_else(|| {
                site.presets()
                    .get(preset.strip_prefix("vm-").unwrap_or(preset))
            })
            .and_then(|entry| entry.doc.as_ref().ok())
            .and_then(|doc| doc.clone());
        let Some(p) = found else {
            return Err(Error::PresetNotFound {
                node: name.clone(),
                preset: preset.clone(),
            });
        };
        overrides = p;
    }
    if let Some(disk) = node.disk {
        overrides.disk = Some(u64::from(disk));
    }
    let vmid = node.vmid.map(|v| v.get());
    let vars = site
        .resolve_manifest_node_vm(&InlineVm {
            node: host.to_string(),
            vm_name: name.to_string(),
            vmid,
            template: None,
            vm_preset: None,
            image: node.image.clone(),
            posture: None,
            overrides,
        })
        .map_err(|source| Error::Resolve {
            node: name.clone(),
            host: host.to_string(),
            source,
        })?;
    let mut vms = to_desired(&vars, kind)?;
    let mut vm = vms.pop().ok_or(Error::Incomplete {
        node: name.clone(),
        what: "the VM",
    })?;
    vm.name = node.name.clone();
    vm.vmid = node.vmid;
    Ok(vm)
}

fn resolve_v1_level(
    site: &Site,
    level: &homestak_core::model::Level,
    host: &str,
    pve: bool,
) -> Result<Vec<DesiredVm>, Error> {
    let name = &level.name;
    let wrap = |source| Error::Resolve {
        node: name.clone(),
        host: host.to_string(),
        source,
    };
    let vars = if let Some(env) = &level.env {
        site.resolve_env(env, host).map_err(wrap)?
    } else {
        site.resolve_inline_vm(&InlineVm {
            node: host.to_string(),
            vm_name: name.to_string(),
            vmid: level.vmid.map(|v| v.get()),
            template: level.template.clone(),
            vm_preset: level.vm_preset.clone(),
            image: level.image.clone(),
            posture: None,
            overrides: VmSettings::default(),
        })
        .map_err(wrap)?
    };
    to_desired(&vars, if pve { Kind::Pve } else { Kind::Vm })
}

/// Turns resolved tofu variables into the planner's desired VMs.
fn to_desired(vars: &TofuVars, kind: Kind) -> Result<Vec<DesiredVm>, Error> {
    vars.vms
        .iter()
        .map(|vm| {
            let node = vm.name.clone().unwrap_or_default();
            let name = NodeName::new(node.as_str()).map_err(|source| Error::Name {
                node: node.clone(),
                source,
            })?;
            let vmid = vm
                .vmid()
                .map(|v| VmId::new(v.into()))
                .transpose()
                .map_err(|source| Error::VmId {
                    node: name.clone(),
                    source,
                })?;
            let image = vm
                .image
                .clone()
                .filter(|i| !i.is_empty())
                .ok_or_else(|| Error::NoImage { node: name.clone() })?;
            let ip = match vm.ip_config() {
                site::IpConfig::Static { address, prefix } => IpConfig::Static {
                    cidr: format!("{address}/{prefix}"),
                    gateway: vm.gateway.clone(),
                },
                site::IpConfig::Dhcp | site::IpConfig::Unset => IpConfig::Dhcp,
            };
            let missing = |what| Error::Incomplete {
                node: name.clone(),
                what,
            };
            let cores = vm.cores.ok_or_else(|| missing("cores (set a preset)"))?;
            let memory_mib = vm.memory.ok_or_else(|| missing("memory (set a preset)"))?;
            let disk_gib = vm
                .disk
                .ok_or_else(|| missing("disk (set a preset or disk:)"))?;
            Ok(DesiredVm {
                name,
                kind,
                parent: None,
                vmid,
                cores,
                memory_mib,
                disk_gib,
                image,
                storage: vars.datastore.clone(),
                bridge: vm.bridge.clone(),
                ip,
                nameserver: None,
                searchdomain: None,
                user: vars.automation_user.clone(),
                ssh_keys: vars.ssh_keys.clone(),
                spec: None,
            })
        })
        .collect()
}
