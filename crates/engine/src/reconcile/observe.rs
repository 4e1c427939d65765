//! Observed state for one tier: one bulk read, then targeted reads only
//! where a decision needs them.
//!
//! `/cluster/resources?type=vm` lists every guest with its tags. A VM's
//! config (description marks, disk, network) is read only when the VM is a
//! candidate: it carries the homestak tag, or holds a vmid the manifest or
//! the store points at (including the vmid of a create intent). Every other guest is kept from the bulk read alone,
//! which is enough to see that its vmid is taken.
//!
//! A fast observe skips the config read of a candidate the store saw in
//! sync and whose bulk entry still shows the same summary with its keyed
//! owner tag ([`super::seen`]); a deep observe reads every candidate.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::task::JoinSet;

use super::seen::{self, Known};
use crate::controllers::vm::mapping;
use crate::store::Summary;
use homestak_base::id::VmId;
use homestak_core::plan::marks::{OwnerKey, TAG};
use homestak_core::plan::{Desired, Observed, Remembered};
use homestak_pve::{self as pve, Api, ErrorKind, ResourceKind};

/// What one observe saw.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub observed: Observed,
    /// The bulk entries' summaries of the VMs whose config was read.
    pub summaries: HashMap<VmId, Summary>,
    /// Candidates taken from the store's record without a config read.
    pub fast: usize,
}

/// Reads the tier. `remembered` comes from the store; `known` (the VMs
/// the store saw in sync) allows the fast path, `None` reads every
/// candidate's config (a deep observe).
pub async fn observe(
    api: Arc<dyn Api>,
    desired: &Desired,
    remembered: Vec<Remembered>,
    key: &OwnerKey,
    known: Option<&Known>,
) -> Result<Observation, pve::Error> {
    let vouched = |node: &homestak_base::id::NodeName| {
        remembered.iter().find(|r| r.node == *node).map(|r| r.vmid)
    };
    let resources = api.cluster_resources(Some(ResourceKind::Vm)).await?;
    let interesting: HashSet<VmId> = desired
        .vms
        .iter()
        .filter_map(|v| v.vmid)
        .chain(remembered.iter().map(|r| r.vmid))
        // A create in progress shows as PVE's bare placeholder: only its
        // config (`lock: create`, no marks) tells it from someone's VM.
        .chain(remembered.iter().filter_map(|r| r.intent))
        .collect();

    let mut reads = JoinSet::new();
    let mut vms = Vec::new();
    let mut summaries = HashMap::new();
    let mut fast = 0;
    for (index, resource) in resources.into_iter().enumerate() {
        // Without a vmid and node PVE could have made it is nothing of ours.
        let Some(vm) = mapping::observed(&resource, None, key, &vouched) else {
            continue;
        };
        let candidate = resource.is_qemu()
            && (resource.tag_set().contains(TAG) || interesting.contains(&vm.vmid));
        if candidate {
            // `Known` leaves out create intents and shared vmids.
            let quick = known.and_then(|k| k.fast(&resource, &vm, key, &desired.manifest));
            if let Some(quick) = quick {
                fast += 1;
                vms.push((index, quick));
                continue;
            }
            if let Some(summary) = seen::summary(&resource) {
                summaries.insert(vm.vmid, summary);
            }
            let api = api.clone();
            reads.spawn(async move {
                let config = api.qemu_config(&vm.node, vm.vmid).await;
                (index, resource, config)
            });
        } else {
            vms.push((index, vm));
        }
    }
    while let Some(joined) = reads.join_next().await {
        let Ok((index, resource, config)) = joined else {
            continue;
        };
        match config {
            Ok(config) => vms.extend(
                mapping::observed(&resource, Some(&config), key, &vouched).map(|vm| (index, vm)),
            ),
            // Deleted between the two reads: it is gone.
            Err(err) if err.kind() == ErrorKind::VmNotFound => {}
            Err(err) => return Err(err),
        }
    }
    // Keep PVE's order: deterministic plans from deterministic input.
    vms.sort_by_key(|(index, _)| *index);
    Ok(Observation {
        observed: Observed {
            vms: vms.into_iter().map(|(_, vm)| vm).collect(),
            remembered,
        },
        summaries,
        fast,
    })
}
