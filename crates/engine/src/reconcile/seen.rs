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
//! a copy at another vmid, or a VM whose tags were rewritten, has its
//! config read.

use std::collections::HashMap;

use homestak_base::id::{NodeName, PveNode, VmId};
use homestak_core::plan::marks::{self, Claim, OwnerKey};
use homestak_core::plan::{Action, ObservedVm, Plan};
use homestak_pve::ClusterResource;

use crate::controllers::vm::mapping;
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

/// True when the bulk entry shows what the config says. PVE fills a
/// resource's name, CPUs, memory and disk from status data that can lag
/// the config by seconds: a summary from before a change must not be
/// recorded with the config from after it, or the old summary coming back
/// would pass for the new config.
fn agrees(summary: &Summary, vm: &ObservedVm) -> bool {
    summary.name == vm.name
        && summary.maxcpu == vm.cores
        && summary.maxmem.map(|m| m >> 20) == vm.memory_mib
        && (vm.disk_gib.is_none() || summary.maxdisk.map(mapping::bytes_to_gib) == vm.disk_gib)
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
        let Some(config) = seen_config(vm).filter(|_| agrees(summary, vm)) else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::vm::mapping;
    use homestak_base::secret::Secret;
    use homestak_core::plan::marks::Marks;

    fn key() -> OwnerKey {
        OwnerKey::new(&Secret::new("0123456789abcdef0123456789abcdef")).unwrap()
    }

    fn vmid(v: i128) -> VmId {
        VmId::new(v).unwrap()
    }

    fn node() -> NodeName {
        NodeName::new("web").unwrap()
    }

    /// The bulk entry of our `web` at `id`, with `tags`.
    fn resource(id: u32, tags: &str) -> ClusterResource {
        serde_json::from_value(serde_json::json!({
            "id": format!("qemu/{id}"), "type": "qemu", "node": "pve", "vmid": id,
            "name": "web", "status": "running", "tags": tags,
            "maxcpu": 2, "maxmem": 2u64 << 30, "maxdisk": 8u64 << 30,
        }))
        .unwrap()
    }

    fn our_tags(id: u32) -> String {
        format!(
            "homestak;{}",
            marks::owner_tag(&key(), vmid(id.into()), "m", &node())
        )
    }

    /// A record of `web` at `id` that saw `seen_at`'s entry.
    fn record(id: u32, seen_at: &ClusterResource) -> NodeRecord {
        NodeRecord {
            vmid: Some(vmid(id.into())),
            seen: Some(Seen {
                summary: summary(seen_at).unwrap(),
                config: SeenConfig {
                    name: Some("web".into()),
                    marks: Some(Marks {
                        manifest: "m".into(),
                        node: node(),
                        image: "debian-12".into(),
                        spec_hash: "sha256:00".into(),
                    }),
                    cores: Some(2),
                    bridge: Some("vmbr0".into()),
                    ..SeenConfig::default()
                },
            }),
            ..NodeRecord::default()
        }
    }

    fn fast(known: &Known, r: &ClusterResource, manifest: &str) -> Option<ObservedVm> {
        let bulk = mapping::observed(r, None, &key(), &|_| None).unwrap();
        known.fast(r, &bulk, &key(), manifest)
    }

    #[test]
    fn a_matching_summary_with_the_keyed_tag_is_taken_from_the_record() {
        let r = resource(100, &our_tags(100));
        let known = Known::from_records(&[(node(), record(100, &r))]);
        let vm = fast(&known, &r, "m").unwrap();
        assert!(vm.owned_by("m", &node()));
        assert_eq!(vm.bridge.as_deref(), Some("vmbr0"));
        assert_eq!(vm.cores, Some(2));
        // Another manifest's observe does not take it.
        assert!(fast(&known, &r, "other").is_none());
    }

    #[test]
    fn copies_forged_tags_locks_and_changed_summaries_are_read_in_full() {
        let ours = resource(100, &our_tags(100));
        let known = Known::from_records(&[(node(), record(100, &ours))]);
        // A copy at another vmid: no record there.
        assert!(fast(&known, &resource(101, &our_tags(100)), "m").is_none());
        // A record that saw tags whose keyed tag does not verify.
        let forged = resource(100, "homestak;homestak-0000000000000000");
        let known_forged = Known::from_records(&[(node(), record(100, &forged))]);
        assert!(fast(&known_forged, &forged, "m").is_none());
        // Another summary, a lock, a template.
        let mut moved = ours.clone();
        moved.maxmem = Some(4 << 30);
        assert!(fast(&known, &moved, "m").is_none());
        let mut locked = ours.clone();
        locked.lock = Some("backup".into());
        assert!(fast(&known, &locked, "m").is_none());
        let mut template = ours.clone();
        template.template = true;
        assert!(fast(&known, &template, "m").is_none());
    }

    #[test]
    fn shared_vmids_intents_and_old_records_are_not_known() {
        let r = resource(100, &our_tags(100));
        let mut old = record(100, &r);
        old.seen = None;
        assert!(fast(&Known::from_records(&[(node(), old)]), &r, "m").is_none());
        let other = NodeName::new("other").unwrap();
        let twice = Known::from_records(&[(node(), record(100, &r)), (other, record(100, &r))]);
        assert!(fast(&twice, &r, "m").is_none());
        let mut intent = record(100, &r);
        intent.create_intent = Some(crate::store::CreateIntent {
            vmid: Some(vmid(100)),
            ..Default::default()
        });
        assert!(fast(&Known::from_records(&[(node(), intent)]), &r, "m").is_none());
    }

    #[test]
    fn a_summary_lagging_its_config_is_not_recorded() {
        let r = resource(100, &our_tags(100));
        let summary = summary(&r).unwrap();
        // What the config read gave: 2 cores, 2 GiB, 8 GiB, as the entry.
        let mut vm = mapping::observed(&r, None, &key(), &|_| None).unwrap();
        vm.disk_gib = Some(8);
        assert!(agrees(&summary, &vm));
        // The config already has 4 GiB; PVE's status data still says 2.
        vm.memory_mib = Some(4096);
        assert!(!agrees(&summary, &vm));
        vm.memory_mib = Some(2048);
        vm.cores = Some(4);
        assert!(!agrees(&summary, &vm));
        vm.cores = Some(2);
        vm.disk_gib = Some(16);
        assert!(!agrees(&summary, &vm));
        vm.disk_gib = Some(8);
        vm.name = Some("renamed".into());
        assert!(!agrees(&summary, &vm));
    }

    #[test]
    fn a_fractional_cpu_count_has_no_summary() {
        let mut r = resource(100, "homestak");
        r.maxcpu = Some(1.5);
        assert!(summary(&r).is_none());
        r.maxcpu = Some(f64::NAN);
        assert!(summary(&r).is_none());
    }
}
