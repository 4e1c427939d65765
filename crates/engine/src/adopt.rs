//! Taking over VMs homestak did not make (`homestak adopt`).
//!
//! A VM made by the Python iac-driver (OpenTofu) or by hand carries no
//! ownership marks, so the planner treats its vmid as someone else's for
//! ever. Adoption writes the marks a VM homestak created would carry — the
//! tag `homestak`, the keyed owner tag and the description lines bound to
//! the vmid — onto VMs whose name *and* vmid match a node of the manifest,
//! and records the vmid in the store. Nothing else changes: the VM's own
//! tags and description text stay (the marks are appended), and the write
//! is a config PUT conditional on the digest read just before, so a change
//! made meanwhile is re-read and judged again rather than overwritten.
//!
//! What the next reconcile will then change (the VM's real drift) is
//! predicted by planning over the world as it will look once adopted; an
//! adoption after which the VM would be replaced is refused.

use std::collections::BTreeSet;

use homestak_base::id::{NodeName, PveNode, VmId};
use homestak_core::model::Manifest;
use homestak_core::plan::marks::{self, Claim, Marks, OwnerKey, TAG};
use homestak_core::plan::{self, Action, Change, DesiredVm, Observed, ObservedVm, Remembered};
use homestak_pve::{self as pve, ConfigUpdate, ErrorKind, VmConfig, VmOptions};
use serde::Serialize;

use crate::controllers::vm::mapping;
use crate::reconcile::{self, Tier};
use crate::store::{Durability, NodeKey};

/// The spec mark of an adopted VM whose cloud-init settings differ from
/// the manifest: never a real hash, so the next reconcile rewrites them.
pub const UNVERIFIED_SPEC: &str = "adopted";

/// How often a write that lost a digest race is re-read and retried.
const ATTEMPTS: usize = 3;

/// What adoption would do, node by node.
#[derive(Debug, Clone, Serialize)]
pub struct AdoptionPlan {
    pub manifest: String,
    pub host: String,
    pub rows: Vec<Row>,
}

impl AdoptionPlan {
    /// The rows that will be adopted.
    pub fn to_adopt(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.verdict == Verdict::Adopt)
    }
}

/// One manifest node and what adoption does with it.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub node: NodeName,
    /// The vmid the manifest names (or where a VM of the node's name sits).
    pub vmid: Option<VmId>,
    /// The VM's name in PVE, when a VM was found.
    pub name: Option<String>,
    /// The PVE node the VM sits on.
    pub pve_node: Option<PveNode>,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Tags added (the VM's own tags stay).
    pub add_tags: Vec<String>,
    /// The lines appended to the description (the VM's own text stays).
    pub add_description: Vec<String>,
    /// What the next reconcile changes on the adopted VM (its real drift).
    pub then: Vec<Change>,
    /// Cloud-init settings (user, SSH keys, DNS) the VM's config holds
    /// differently from the manifest: the next reconcile rewrites them.
    pub cloud_init_differs: Vec<String>,
    #[serde(skip)]
    want: Option<DesiredVm>,
}

/// The decision for one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Marks are written.
    Adopt,
    /// Already homestak's for this node: nothing to do.
    Owned,
    /// No VM for the node: reconcile creates it.
    Absent,
    /// Left alone, and why.
    Refused { why: String },
}

impl Verdict {
    fn refused(why: impl Into<String>) -> Verdict {
        Verdict::Refused { why: why.into() }
    }
}

/// What happened to one VM of an applied adoption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub node: NodeName,
    pub vmid: VmId,
    #[serde(flatten)]
    pub result: AppliedResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum AppliedResult {
    /// Marks written and the vmid recorded in the store.
    Adopted,
    /// The VM changed since the table was shown and may no longer be
    /// adopted (or kept changing): left alone.
    Refused { why: String },
    /// A request or the store failed.
    Failed { why: String },
}

/// Adoption could not be planned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot plan the adoption")]
    Plan {
        #[source]
        source: reconcile::Error,
    },
    #[error(
        "cannot read the config of vmid {vmid}; check the host is reachable and run adopt again"
    )]
    ReadConfig {
        vmid: VmId,
        #[source]
        source: pve::Error,
    },
}

/// Looks at every node of `manifest` on `tier` and decides what adoption
/// would do. Reads PVE only (the store may record what it saw in sync).
pub async fn plan_adoption(tier: &Tier, manifest: &Manifest) -> Result<AdoptionPlan, Error> {
    let options = reconcile::Options {
        lease: None,
        ..reconcile::Options::default()
    };
    let planned = tier
        .plan(manifest, &options)
        .await
        .map_err(|source| Error::Plan { source })?;
    let desired = &planned.tier.desired;
    let observed = &planned.observed;
    let name = desired.manifest.as_str();

    let mut rows = Vec::new();
    for want in &desired.vms {
        let row = match decide(tier, name, want, observed).await? {
            Decided::Row(row) => *row,
            Decided::Candidate(found) => candidate(&tier.owner_key, name, want, &found.0, &found.1),
        };
        rows.push(row);
    }
    predict(desired, observed, &tier.owner_key, &mut rows);
    Ok(AdoptionPlan {
        manifest: desired.manifest.clone(),
        host: desired.host.clone(),
        rows,
    })
}

enum Decided {
    Row(Box<Row>),
    Candidate(Box<(ObservedVm, VmConfig)>),
}

fn row(want: &DesiredVm, vm: Option<&ObservedVm>, verdict: Verdict) -> Row {
    Row {
        node: want.name.clone(),
        vmid: vm.map(|v| v.vmid).or(want.vmid),
        name: vm.and_then(|v| v.name.clone()),
        pve_node: vm.map(|v| v.node.clone()),
        verdict,
        add_tags: Vec::new(),
        add_description: Vec::new(),
        then: Vec::new(),
        cloud_init_differs: Vec::new(),
        want: None,
    }
}

async fn decide(
    tier: &Tier,
    manifest: &str,
    want: &DesiredVm,
    observed: &Observed,
) -> Result<Decided, Error> {
    if let Some(vm) = observed
        .vms
        .iter()
        .find(|v| v.owned_by(manifest, &want.name))
    {
        return Ok(Decided::Row(Box::new(row(want, Some(vm), Verdict::Owned))));
    }
    let named = observed
        .vms
        .iter()
        .find(|v| v.name.as_deref() == Some(want.name.as_str()) && v.claim.is_none());
    let Some(vmid) = want.vmid else {
        // A name alone is no proof of identity: the manifest must name the vmid.
        return Ok(Decided::Row(Box::new(match named {
            Some(vm) => row(
                want,
                Some(vm),
                Verdict::refused(format!(
                    "the node names no vmid; to adopt this VM set `vmid: {}` on node {} in \
                     the manifest",
                    vm.vmid, want.name
                )),
            ),
            None => row(want, None, Verdict::Absent),
        })));
    };
    let Some(holder) = observed.vms.iter().find(|v| v.vmid == vmid) else {
        return Ok(Decided::Row(Box::new(match named {
            Some(vm) => row(
                want,
                Some(vm),
                Verdict::refused(format!(
                    "the VM named {} is at vmid {}, the manifest says {vmid}; fix the vmid in \
                     the manifest to adopt it",
                    want.name, vm.vmid
                )),
            ),
            None => row(want, None, Verdict::Absent),
        })));
    };
    // The config again, for the digest and the description as they are now.
    let config = tier
        .api
        .qemu_config(&holder.node, vmid)
        .await
        .map_err(|source| Error::ReadConfig { vmid, source })?;
    if let Some(why) = refusal(&tier.owner_key, manifest, want, vmid, &config) {
        return Ok(Decided::Row(Box::new(row(
            want,
            Some(holder),
            Verdict::refused(why),
        ))));
    }
    Ok(Decided::Candidate(Box::new((holder.clone(), config))))
}

/// Why the VM at `vmid` with `config` may not be adopted for `want`.
fn refusal(
    key: &OwnerKey,
    manifest: &str,
    want: &DesiredVm,
    vmid: VmId,
    config: &VmConfig,
) -> Option<String> {
    if config.get("template").as_deref() == Some("1") {
        return Some("is a template; templates are never adopted".into());
    }
    if let Some(lock) = config.get("lock").filter(|l| !l.is_empty()) {
        return Some(format!(
            "is locked ({lock}): a task is working on it; wait for it and run adopt again"
        ));
    }
    // No store vouching here: legacy marks stay unproven.
    if let Some(claim) = mapping::claim(key, vmid, config, &|_| None) {
        let marks = claim.marks();
        return Some(match claim.why_foreign() {
            None if marks.manifest == manifest => format!(
                "already homestak's, for node {} of this manifest",
                marks.node
            ),
            None => format!(
                "already homestak's, for node {} of manifest {}",
                marks.node, marks.manifest
            ),
            Some(why) => format!("{why}; not adopted"),
        });
    }
    let name = config.name();
    if name.as_deref() != Some(want.name.as_str()) {
        return Some(format!(
            "vmid matches but the VM is named {}, not {}; adopt only takes a VM whose name and \
             vmid both match",
            name.as_deref()
                .map_or("(none)".to_string(), |n| format!("{n:?}")),
            want.name
        ));
    }
    None
}

/// The row of a VM that will be adopted.
fn candidate(
    key: &OwnerKey,
    manifest: &str,
    want: &DesiredVm,
    vm: &ObservedVm,
    config: &VmConfig,
) -> Row {
    let update = marks_update(key, manifest, want, vm.vmid, config);
    let before = config.tag_set();
    let add_tags = update
        .options
        .tags
        .iter()
        .flatten()
        .filter(|t| !before.contains(&t.to_lowercase()))
        .cloned()
        .collect();
    let differs = cloud_init_differences(want, config);
    let marks_text = marks_for(manifest, want, differs.is_empty()).to_description(key, vm.vmid);
    let mut out = row(want, Some(vm), Verdict::Adopt);
    out.add_tags = add_tags;
    out.add_description = marks_text.lines().map(str::to_string).collect();
    out.cloud_init_differs = differs;
    out.want = Some(want.clone());
    out
}

/// The marks written on an adopted VM. The image is the manifest's (which
/// image a VM was made from cannot be read back); the spec hash is the
/// manifest's only when the cloud-init settings PVE holds match it.
fn marks_for(manifest: &str, want: &DesiredVm, cloud_init_matches: bool) -> Marks {
    let mut marks = mapping::marks_for(manifest, want);
    if !cloud_init_matches {
        marks.spec_hash = UNVERIFIED_SPEC.to_string();
    }
    marks
}

/// The cloud-init settings in `config` that differ from `want` (those the
/// planner cannot see and the spec hash vouches for).
fn cloud_init_differences(want: &DesiredVm, config: &VmConfig) -> Vec<String> {
    let mut out = Vec::new();
    if config.get("ciuser").as_deref() != Some(want.user.as_str()) {
        out.push("ciuser".to_string());
    }
    let keys: BTreeSet<String> = config
        .sshkeys()
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let wanted: BTreeSet<String> = want.ssh_keys.iter().map(|k| k.trim().to_string()).collect();
    if keys != wanted {
        out.push("sshkeys".to_string());
    }
    if config.get("nameserver") != want.nameserver {
        out.push("nameserver".to_string());
    }
    if config.get("searchdomain") != want.searchdomain {
        out.push("searchdomain".to_string());
    }
    out
}

/// The conditional PUT that adds the marks to `config` and nothing else:
/// its own tags kept (stale keyed tags of another vmid dropped), its own
/// description text kept with the marks appended.
pub fn marks_update(
    key: &OwnerKey,
    manifest: &str,
    want: &DesiredVm,
    vmid: VmId,
    config: &VmConfig,
) -> ConfigUpdate {
    let owner = marks::owner_tag(key, vmid, manifest, &want.name);
    let mut tags: Vec<String> = config
        .get("tags")
        .unwrap_or_default()
        .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        // A keyed tag that is not this VM's is a stale copy of ours.
        .filter(|t| !marks::is_managed_tag(t) || t.eq_ignore_ascii_case(TAG))
        .map(str::to_string)
        .collect();
    for tag in [TAG.to_string(), owner] {
        if !tags.iter().any(|t| t.eq_ignore_ascii_case(&tag)) {
            tags.push(tag);
        }
    }
    let matches = cloud_init_differences(want, config).is_empty();
    let marks = marks_for(manifest, want, matches).to_description(key, vmid);
    let description = match config.description() {
        Some(text) if !text.trim().is_empty() => format!("{}\n\n{marks}", text.trim_end()),
        _ => marks,
    };
    ConfigUpdate {
        options: VmOptions {
            tags: Some(tags),
            description: Some(description),
            ..VmOptions::default()
        },
        delete: Vec::new(),
        digest: config.digest.clone(),
        background_delay: None,
    }
}

/// Plans over the world as it will look once the candidates are adopted:
/// the drift each shows then; a candidate that would then be replaced is
/// refused instead.
fn predict(desired: &plan::Desired, observed: &Observed, key: &OwnerKey, rows: &mut [Row]) {
    let mut after = observed.clone();
    for row in rows.iter().filter(|r| r.verdict == Verdict::Adopt) {
        let (Some(want), Some(vmid)) = (&row.want, row.vmid) else {
            continue;
        };
        let Some(vm) = after.vms.iter_mut().find(|v| v.vmid == vmid) else {
            continue;
        };
        let spec_matches = row.cloud_init_differs.is_empty();
        vm.claim = Some(Claim::Owned(marks_for(
            &desired.manifest,
            want,
            spec_matches,
        )));
        vm.owner_tag = Some(marks::owner_tag(key, vmid, &desired.manifest, &want.name));
        vm.tags
            .extend(row.add_tags.iter().map(|t| t.to_lowercase()));
        vm.tags
            .retain(|t| !marks::is_managed_tag(t) || t == TAG || Some(t) == vm.owner_tag.as_ref());
        after.remembered.retain(|r| r.node != want.name);
        after.remembered.push(Remembered {
            node: want.name.clone(),
            vmid,
            spec_hash: None,
            intent: None,
        });
    }
    let next = plan::plan(
        desired,
        &after,
        plan::Options {
            allow_replace: false,
            prune: false,
            prune_duplicates: false,
        },
    );
    for row in rows.iter_mut().filter(|r| r.verdict == Verdict::Adopt) {
        let Some(node) = next.nodes.iter().find(|n| n.node == row.node) else {
            continue;
        };
        match node.action {
            Action::Replace => {
                let what: Vec<String> = node
                    .changes
                    .iter()
                    .map(|c| format!("{} {} -> {}", c.field, c.from, c.to))
                    .collect();
                row.verdict = Verdict::refused(format!(
                    "reconcile would then replace it ({}); change the manifest to match the VM \
                     first",
                    what.join(", ")
                ));
                row.add_tags.clear();
                row.add_description.clear();
            }
            _ => row.then = node.changes.clone(),
        }
    }
}

/// Writes the marks on every row `plan` adopts and records each vmid in the
/// store. Each VM's config is read again first and judged again: one that
/// changed so it may no longer be adopted is left alone.
pub async fn apply(tier: &Tier, plan: &AdoptionPlan) -> Vec<Applied> {
    let mut out = Vec::new();
    for row in plan.to_adopt() {
        let (Some(want), Some(vmid), Some(at)) = (&row.want, row.vmid, &row.pve_node) else {
            continue;
        };
        let result = match tier.api.qemu_config(at, vmid).await {
            Err(err) => AppliedResult::Failed {
                why: format!("read the config of vmid {vmid}: {}", chain(&err)),
            },
            Ok(config) => adopt_vm(tier, &plan.manifest, want, at, vmid, config).await,
        };
        out.push(Applied {
            node: row.node.clone(),
            vmid,
            result,
        });
    }
    out
}

/// Adopts the VM at `vmid` for `want`, starting from `config` (read
/// earlier; a stale one loses the digest race and is read again).
pub async fn adopt_vm(
    tier: &Tier,
    manifest: &str,
    want: &DesiredVm,
    at: &PveNode,
    vmid: VmId,
    mut config: VmConfig,
) -> AppliedResult {
    for _ in 0..ATTEMPTS {
        if let Some(why) = refusal(&tier.owner_key, manifest, want, vmid, &config) {
            return AppliedResult::Refused { why };
        }
        if config.digest.is_none() {
            return AppliedResult::Refused {
                why: "PVE gave no config digest, so the write could not be made conditional".into(),
            };
        }
        let update = marks_update(&tier.owner_key, manifest, want, vmid, &config);
        match tier.api.qemu_config_put(at, vmid, &update).await {
            Ok(()) => return record(tier, manifest, want, at, vmid),
            Err(err) if err.kind() == ErrorKind::DigestMismatch => {
                config = match tier.api.qemu_config(at, vmid).await {
                    Ok(c) => c,
                    Err(err) => {
                        return AppliedResult::Failed {
                            why: format!("read the config of vmid {vmid}: {}", chain(&err)),
                        };
                    }
                };
            }
            Err(err) => {
                return AppliedResult::Failed {
                    why: format!("write the marks on vmid {vmid}: {}", chain(&err)),
                };
            }
        }
    }
    AppliedResult::Refused {
        why: format!(
            "its config changed under each of {ATTEMPTS} writes; run adopt again once it is quiet"
        ),
    }
}

/// Records the adopted vmid for the node, as the reconciler's own
/// adoption step does: the next plan sees a VM it knows, not one to adopt.
fn record(
    tier: &Tier,
    manifest: &str,
    want: &DesiredVm,
    at: &PveNode,
    vmid: VmId,
) -> AppliedResult {
    let Some(store) = &tier.store else {
        // The marks alone make it ours; the next reconcile records it.
        return AppliedResult::Adopted;
    };
    let key = NodeKey::new(manifest, &want.name);
    match store.update_node(&key, Durability::Flush, &mut |r| {
        r.vmid = Some(vmid);
        r.pve_node = Some(at.clone());
        r.create_intent = None;
    }) {
        Ok(_) => AppliedResult::Adopted,
        Err(err) => AppliedResult::Failed {
            why: format!(
                "marks written on vmid {vmid}, but the store could not record it ({}); the next \
                 reconcile records it",
                chain(&err)
            ),
        },
    }
}

fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
