//! The decision rules, one node at a time.

use std::collections::{BTreeSet, HashSet};

use homestak_base::id::VmId;

use super::marks::TAG;
use super::state::{Desired, DesiredVm, Observed, ObservedVm, Power};
use super::{Action, Change, Field, NodePlan, Options, Plan};

/// The tag set homestak manages on `vm` when it is ours: the plain tag
/// and the VM's keyed tag.
pub(crate) fn desired_tags(vm: &ObservedVm) -> BTreeSet<String> {
    let mut tags = BTreeSet::from([TAG.to_string()]);
    tags.extend(vm.owner_tag.clone());
    tags
}

/// Decides one action per desired node, then deletions for owned VMs that
/// left the manifest. Pure: no I/O, deterministic.
pub fn plan(desired: &Desired, observed: &Observed, options: Options) -> Plan {
    let mut nodes = Vec::with_capacity(desired.vms.len());
    // vmids the desired nodes account for; the rest of our VMs are prunable.
    let mut claimed: HashSet<VmId> = HashSet::new();

    for want in &desired.vms {
        let node_plan = plan_node(desired, want, observed, options, &mut claimed);
        nodes.push(node_plan);
    }

    let wanted: HashSet<&str> = desired.vms.iter().map(|v| v.name.as_str()).collect();
    let mut leftovers: Vec<&ObservedVm> = observed
        .vms
        .iter()
        .filter(|vm| vm.owned_by_manifest(&desired.manifest) && !claimed.contains(&vm.vmid))
        .collect();
    leftovers.sort_by_key(|vm| std::cmp::Reverse(vm.vmid));
    for vm in leftovers {
        // Owned by the manifest means marked, so marks are there.
        let Some(node) = vm.marks().map(|m| m.node.clone()) else {
            continue;
        };
        // A second VM for a node that has one is reported, and destroyed
        // only on request: a lost store, not the manifest, made it.
        let (reason, delete, kept) = if wanted.contains(node.as_str()) {
            (
                format!("duplicate VM for node {node}: another VM already serves it"),
                options.prune_duplicates,
                "kept (destroy it with --prune-duplicates)",
            )
        } else {
            (
                format!("node {node} is no longer in manifest {}", desired.manifest),
                options.prune,
                "kept (pruning is off)",
            )
        };
        nodes.push(NodePlan {
            node,
            action: if delete { Action::Delete } else { Action::NoOp },
            vmid: Some(vm.vmid),
            changes: Vec::new(),
            reason: Some(if delete {
                reason
            } else {
                format!("{reason}; {kept}")
            }),
            blocked: None,
            pve_node: Some(vm.node.clone()),
            foreign: false,
        });
    }

    // VMs carrying this manifest's marks that are not ours (clones,
    // restores, templates, forged marks): shown, never touched.
    for vm in &observed.vms {
        let Some((marks, why)) = vm.stray_of(&desired.manifest) else {
            continue;
        };
        nodes.push(NodePlan {
            node: marks.node.clone(),
            action: Action::NoOp,
            vmid: Some(vm.vmid),
            changes: Vec::new(),
            reason: Some(format!(
                "vmid {} {why}; not homestak's, left untouched",
                vm.vmid
            )),
            blocked: None,
            pve_node: Some(vm.node.clone()),
            foreign: true,
        });
    }

    Plan {
        manifest: desired.manifest.clone(),
        host: desired.host.clone(),
        nodes,
    }
}

fn plan_node(
    desired: &Desired,
    want: &DesiredVm,
    observed: &Observed,
    options: Options,
    claimed: &mut HashSet<VmId>,
) -> NodePlan {
    let manifest = desired.manifest.as_str();
    let remembered = observed.remembered.iter().find(|r| r.node == want.name);
    let mut owned: Vec<&ObservedVm> = observed
        .vms
        .iter()
        .filter(|vm| vm.owned_by(manifest, &want.name))
        .collect();
    // Prefer the VM the manifest or the store points at, then the lowest vmid.
    owned.sort_by_key(|vm| {
        let preferred = Some(vm.vmid) == want.vmid || Some(vm.vmid) == remembered.map(|r| r.vmid);
        (!preferred, vm.vmid)
    });
    let current = owned.first().copied();
    // PVE's placeholder at the vmid this node's create intent names: our
    // own create, still importing. Not someone else's VM.
    let in_progress = remembered.and_then(|r| r.intent).filter(|id| {
        observed
            .vms
            .iter()
            .any(|vm| vm.vmid == *id && vm.is_create_placeholder())
    });

    let mut base = NodePlan {
        node: want.name.clone(),
        action: Action::NoOp,
        vmid: want.vmid.or(remembered.map(|r| r.vmid)),
        changes: Vec::new(),
        reason: None,
        blocked: None,
        pve_node: None,
        foreign: false,
    };

    // A vmid the manifest asks for but someone else holds.
    if let Some(vmid) = want.vmid
        && let Some(holder) = observed.vms.iter().find(|vm| vm.vmid == vmid)
        && !holder.owned_by(manifest, &want.name)
        && in_progress != Some(vmid)
    {
        base.action = Action::Conflict;
        base.reason = Some(match &holder.name {
            // No marks at all, and the node's name: most likely made by the
            // Python iac-driver or by hand for this very node.
            Some(name) if adoptable(holder, want) => format!(
                "vmid {vmid} is held by VM {name:?}, which carries no homestak marks; it is \
                 left untouched. If it is this node's VM, take it over with `homestak adopt \
                 -M {manifest} -H {host}`; else free the vmid or pick another in the manifest",
                host = desired.host
            ),
            Some(name) => format!(
                "vmid {vmid} is held by VM {name:?}, which homestak does not own; \
                         it is left untouched. Free the vmid or pick another in the manifest"
            ),
            None => format!(
                "vmid {vmid} is held by a VM homestak does not own; it is left \
                         untouched. Free the vmid or pick another in the manifest"
            ),
        });
        // Our own VM for this node (at another vmid) is not pruned.
        if let Some(vm) = current {
            claimed.insert(vm.vmid);
        }
        return base;
    }

    let Some(vm) = current else {
        base.action = Action::Create;
        if let Some(id) = in_progress.filter(|id| want.vmid.is_none_or(|w| w == *id)) {
            // The create step follows the running task instead of sending
            // another create.
            base.vmid = Some(id);
            base.reason = Some(format!(
                "the create of vmid {id} is in progress (PVE's `lock: create` placeholder); \
                 its task is followed"
            ));
            return base;
        }
        // A remembered vmid that now holds someone else's VM is not reused.
        if want.vmid.is_none()
            && base
                .vmid
                .is_some_and(|id| observed.vms.iter().any(|vm| vm.vmid == id))
        {
            base.vmid = None;
        }
        return base;
    };
    claimed.insert(vm.vmid);
    base.vmid = Some(vm.vmid);
    base.pve_node = Some(vm.node.clone());

    let replace_reasons = replace_reasons(want, vm);
    if !replace_reasons.is_empty() {
        base.action = Action::Replace;
        base.reason = Some("PVE cannot make these changes in place".to_string());
        base.changes = replace_reasons;
        if want.vmid.is_some_and(|id| id != vm.vmid) {
            base.vmid = want.vmid;
        }
        if !options.allow_replace {
            base.blocked = Some("replacing destroys the VM; rerun with --allow-replace".into());
        }
        return base;
    }

    base.changes = in_place_changes(want, vm);
    let known = remembered.is_some_and(|r| r.vmid == vm.vmid);
    base.action = if !known {
        Action::Adopt
    } else if base.changes.is_empty() {
        Action::NoOp
    } else {
        Action::Update
    };
    base
}

/// True when `holder` could be taken over for `want` by `homestak adopt`:
/// its name is the node's and it carries no homestak marks (not a
/// template, which is never adopted).
fn adoptable(holder: &ObservedVm, want: &DesiredVm) -> bool {
    holder.claim.is_none() && !holder.template && holder.name.as_deref() == Some(want.name.as_str())
}

/// Differences PVE cannot apply in place.
fn replace_reasons(want: &DesiredVm, vm: &ObservedVm) -> Vec<Change> {
    let mut out = Vec::new();
    if let Some(vmid) = want.vmid
        && vmid != vm.vmid
    {
        out.push(change(Field::Vmid, vm.vmid, vmid));
    }
    if let Some(marks) = vm.marks()
        && marks.image != want.image
    {
        out.push(change(Field::Image, &marks.image, &want.image));
    }
    if let Some(disk) = vm.disk_gib
        && disk > want.disk_gib
    {
        out.push(Change {
            field: Field::Disk,
            from: format!("{disk} GiB"),
            to: format!("{} GiB (shrink)", want.disk_gib),
        });
    }
    out
}

/// Differences applied in place, in a stable field order.
fn in_place_changes(want: &DesiredVm, vm: &ObservedVm) -> Vec<Change> {
    let mut out = Vec::new();
    if vm.name.as_deref() != Some(want.name.as_str()) {
        out.push(change(
            Field::Name,
            vm.name.as_deref().unwrap_or("(none)"),
            &want.name,
        ));
    }
    if vm.cores != Some(want.cores) {
        out.push(change(Field::Cores, opt(vm.cores), want.cores));
    }
    if vm.memory_mib != Some(want.memory_mib) {
        out.push(Change {
            field: Field::Memory,
            from: vm
                .memory_mib
                .map_or("?".to_string(), |m| format!("{m} MiB")),
            to: format!("{} MiB", want.memory_mib),
        });
    }
    match vm.disk_gib {
        Some(disk) if disk < want.disk_gib => out.push(Change {
            field: Field::Disk,
            from: format!("{disk} GiB"),
            to: format!("{} GiB", want.disk_gib),
        }),
        // Our VM shows no boot disk size: its create is still in flight (an
        // interrupted run), or the disk went. The resize step looks again
        // and grows it once PVE lets it; skipping it would leave the disk
        // at the image's size.
        None => out.push(Change {
            field: Field::Disk,
            from: "(none)".to_string(),
            to: format!("{} GiB", want.disk_gib),
        }),
        Some(_) => {}
    }
    let tags = desired_tags(vm);
    if vm.tags != tags {
        out.push(change(Field::Tags, join(&vm.tags), join(&tags)));
    }
    if vm.bridge.as_deref() != Some(want.bridge.as_str()) {
        out.push(change(
            Field::Bridge,
            vm.bridge.as_deref().unwrap_or("(none)"),
            &want.bridge,
        ));
    }
    if vm.ip.as_ref() != Some(&want.ip) {
        out.push(change(
            Field::Ip,
            vm.ip
                .as_ref()
                .map_or("(none)".to_string(), |ip| ip.to_string()),
            &want.ip,
        ));
    }
    // The spec hash in the marks also covers what PVE does not show back
    // (cloud-init user, keys, DNS) and the disk size. A config change
    // rewrites the whole config and the marks with it; disk growth and a
    // start do not, so without one a stale hash is a change of its own
    // (else the marks stay behind and the next run sees drift).
    let hash = want.spec_hash();
    let seen = vm.marks().map(|m| m.spec_hash.as_str());
    let rewrites_config = out
        .iter()
        .any(|c| !matches!(c.field, Field::Disk | Field::Power));
    if seen != Some(hash.as_str()) && !rewrites_config {
        out.push(change(Field::Spec, seen.unwrap_or("(none)"), hash));
    }
    if vm.power != Power::Running {
        out.push(change(Field::Power, vm.power, Power::Running));
    }
    out
}

fn change(field: Field, from: impl ToString, to: impl ToString) -> Change {
    Change {
        field,
        from: from.to_string(),
        to: to.to_string(),
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or("?".to_string(), |v| v.to_string())
}

fn join(tags: &BTreeSet<String>) -> String {
    if tags.is_empty() {
        "(none)".to_string()
    } else {
        tags.iter().cloned().collect::<Vec<_>>().join(";")
    }
}
