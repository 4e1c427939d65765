//! The fast path of observe: a VM whose `/cluster/resources` summary is
//! what the store saw when the VM was last in sync is taken from that
//! record, without reading its config.
//!
//! The summary holds name, tags, CPUs, memory, boot disk size, power and
//! the PVE node. What only the config shows (network, cloud-init, marks,
//! other keys) is the record's: an edit there that leaves the summary as
//! it was is seen only by a deep observe (`--deep`, the daemon's every
//! Nth resync). Ownership is checked again on every fast read: the keyed
//! tag for the vmid, manifest and node must be in the resource's tags, so
//! a copy at another vmid, or a VM whose tags were rewritten, is read in
//! full as today.

use std::collections::HashMap;

use homestak_base::id::{NodeName, PveNode, VmId};
use homestak_core::plan::marks::{self, Claim, OwnerKey};
use homestak_core::plan::{Action, ObservedVm, Plan};
use homestak_pve::ClusterResource;

use crate::store::{self, NodeKey, NodeRecord, Seen, SeenConfig, Store, Summary};

/// A VM the store saw in sync, by vmid: its node and what was seen.
#[derive(Debug, Clone, Default)]
pub struct Known {
    vms: HashMap<VmId, (NodeName, Seen)>,
}

impl Known {
    /// The VMs of `records` a fast read may use: recorded in sync, with no
    /// create in progress, and each vmid claimed by one record only (also
    /// not as another record's create intent).
    pub fn from_records(records: &[(NodeName, NodeRecord)]) -> Known {
        let mut vms: HashMap<VmId, (NodeName, Seen)> = HashMap::new();
        let mut taken: HashMap<VmId, usize> = HashMap::new();
        for (_, record) in records {
            let intent = record.create_intent.as_ref().and_then(|i| i.vmid);
            for vmid in record.vmid.into_iter().chain(intent) {
                *taken.entry(vmid).or_default() += 1;
            }
        }
        for (node, record) in records {
            let (Some(vmid), Some(seen)) = (record.vmid, &record.seen) else {
                continue;
            };
            if record.create_intent.is_none() && taken.get(&vmid) == Some(&1) {
                vms.insert(vmid, (node.clone(), seen.clone()));
            }
        }
        Known { vms }
    }

    /// The observed VM for `resource` built from the record, when the
    /// record may stand for a config read (see the module docs). `bulk` is
    /// the VM as the bulk read alone shows it.
    pub fn fast(
        &self,
        resource: &ClusterResource,
        bulk: &ObservedVm,
        key: &OwnerKey,
        manifest: &str,
    ) -> Option<ObservedVm> {
        let (node, seen) = self.vms.get(&bulk.vmid)?;
        if bulk.lock.is_some() || bulk.template || summary(resource)? != seen.summary {
            return None;
        }
        let marks = seen.config.marks.as_ref()?;
        if marks.manifest != manifest || marks.node != *node {
            return None;
        }
        let tag = marks::owner_tag(key, bulk.vmid, manifest, node);
        if !resource.tag_set().contains(&tag) {
            return None;
        }
        let c = &seen.config;
        Some(ObservedVm {
            name: c.name.clone(),
            tags: c.tags.clone(),
            claim: Some(Claim::Owned(marks.clone())),
            owner_tag: Some(tag),
            cores: c.cores,
            memory_mib: c.memory_mib,
            disk_gib: c.disk_gib,
            bridge: c.bridge.clone(),
            ip: c.ip.clone(),
            ..bulk.clone()
        })
    }
}

/// The summary of a VM's `/cluster/resources` entry; `None` when it lacks
/// a vmid or node, or shows a fractional CPU count (never taken fast).
pub fn summary(resource: &ClusterResource) -> Option<Summary> {
    let maxcpu = match resource.maxcpu {
        None => None,
        Some(c) if c.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&c) => Some(c as u32),
        Some(_) => return None,
    };
    Some(Summary {
        vmid: Some(VmId::new(resource.vmid?.into()).ok()?),
        pve_node: Some(PveNode::new(resource.node.clone()?).ok()?),
        name: resource.name.clone(),
        tags: resource.tag_set(),
        maxcpu,
        maxmem: resource.maxmem,
        maxdisk: resource.maxdisk,
        status: resource.status.clone(),
    })
}

/// What a deep read of `vm` gave, when it may stand for a later config
/// read: ours by keyed marks, not locked, not a template.
fn seen_config(vm: &ObservedVm) -> Option<SeenConfig> {
    let Some(Claim::Owned(marks)) = &vm.claim else {
        return None;
    };
    if vm.lock.is_some() || vm.template {
        return None;
    }
    Some(SeenConfig {
        name: vm.name.clone(),
        tags: vm.tags.clone(),
        marks: Some(marks.clone()),
        cores: vm.cores,
        memory_mib: vm.memory_mib,
        disk_gib: vm.disk_gib,
        bridge: vm.bridge.clone(),
        ip: vm.ip.clone(),
    })
}

/// Keeps, for every node `plan` leaves as it is, what its deep read saw
/// (`summaries`: the bulk entries of the VMs whose config was read). Only
/// changed records are written. Errors are logged: this is a cache.
pub fn remember(
    store: &dyn Store,
    plan: &Plan,
    vms: &[ObservedVm],
    summaries: &HashMap<VmId, Summary>,
) {
    for node in &plan.nodes {
        let in_sync = node.action == Action::NoOp
            && node.changes.is_empty()
            && node.reason.is_none()
            && !node.foreign;
        let Some(vmid) = node.vmid.filter(|_| in_sync) else {
            continue;
        };
        let Some(summary) = summaries.get(&vmid) else {
            continue;
        };
        let Some(vm) = vms.iter().find(|v| v.vmid == vmid) else {
            continue;
        };
        if !vm.owned_by(&plan.manifest, &node.node) {
            continue;
        }
        let Some(config) = seen_config(vm) else {
            continue;
        };
        let seen = Seen {
            summary: summary.clone(),
            config,
        };
        let key = NodeKey::new(plan.manifest.as_str(), &node.node);
        match store.get_node(&key) {
            Ok(Some(record))
                if record.vmid == Some(vmid) && record.seen.as_ref() != Some(&seen) => {}
            Ok(_) => continue,
            Err(err) => {
                tracing::warn!(error = %homestak_base::error_chain(&err), %key, "cannot read a node's record");
                continue;
            }
        }
        let kept = store.update_node(&key, store::Durability::Lazy, &mut |r| {
            if r.vmid == Some(vmid) {
                r.seen = Some(seen.clone());
            }
        });
        if let Err(err) = kept {
            tracing::warn!(error = %homestak_base::error_chain(&err), %key, "cannot record what a node looked like");
        }
    }
}

/// Drops what was seen of every node `plan` acts on: once a step changes
/// the VM, the record no longer stands for it (the next observe reads the
/// config, and records it again once in sync).
pub fn forget(store: &dyn Store, plan: &Plan) {
    for node in plan.nodes.iter().filter(|n| n.action != Action::NoOp) {
        let key = NodeKey::new(plan.manifest.as_str(), &node.node);
        let seen = match store.get_node(&key) {
            Ok(record) => record.is_some_and(|r| r.seen.is_some()),
            Err(err) => {
                tracing::warn!(error = %homestak_base::error_chain(&err), %key, "cannot read a node's record");
                true
            }
        };
        if !seen {
            continue;
        }
        // Flushed: a crash mid-run must not leave a record that vouches
        // for a VM a step already changed.
        let kept = store.update_node(&key, store::Durability::Flush, &mut |r| r.seen = None);
        if let Err(err) = kept {
            tracing::warn!(error = %homestak_base::error_chain(&err), %key, "cannot drop what a node looked like");
        }
    }
}
