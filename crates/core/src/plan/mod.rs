//! The pure planner: desired state vs observed state → one action per node.
//!
//! Guarantees (relied on by the executor, the CLI and the tests):
//! - **Pure and deterministic.** [`plan`] does no I/O; the same inputs give
//!   the same plan, in the same order.
//! - **Ownership first.** A VM is changed or deleted only when it carries
//!   homestak's marks for that manifest and node ([`marks`]). A vmid held by
//!   anything else is a [`Action::Conflict`], and that VM is left alone.
//! - **Replacement is opt-in.** Changes PVE cannot apply in place (image,
//!   disk shrink, vmid) plan a [`Action::Replace`], which stays blocked unless
//!   [`Options::allow_replace`] is set.
//! - **Order.** Desired nodes come in manifest create order (parents first),
//!   then deletions.

mod decide;
pub mod marks;
mod render;
pub mod state;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_intent;
#[cfg(test)]
mod tests_spec;

use std::fmt;

use homestak_base::id::{NodeName, PveNode, VmId};
use serde::{Deserialize, Serialize};

pub use decide::plan;
pub use render::{Style, render_human};
pub use state::{
    Desired, DesiredVm, IpConfig, Kind, Observed, ObservedVm, Power, Remembered, SpecDelivery,
};

/// Planner switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// Allow destroy-and-recreate for changes PVE cannot make in place.
    pub allow_replace: bool,
    /// Delete owned VMs whose node is no longer in the manifest.
    pub prune: bool,
    /// Also delete a second VM of ours for a node that already has one (a
    /// duplicate left by a lost store). Off by default: duplicates are
    /// reported and kept.
    pub prune_duplicates: bool,
}

/// What happens to one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Already as desired.
    #[serde(rename = "noop")]
    NoOp,
    /// No VM exists for the node: create it.
    Create,
    /// A VM carries our marks but the store does not know it (lost store,
    /// crash after create): take it over, then apply any changes.
    Adopt,
    /// Change the VM in place (config, disk growth, power); see `changes`.
    Update,
    /// Destroy and recreate: the change cannot be made in place.
    Replace,
    /// An owned VM whose node left the manifest (or `destroy`).
    Delete,
    /// The node cannot be converged without touching something we do not
    /// own; nothing is done.
    Conflict,
}

/// A managed field the plan compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Vmid,
    Name,
    Image,
    Cores,
    Memory,
    Disk,
    Tags,
    Bridge,
    Ip,
    Spec,
    Power,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Vmid => "vmid",
            Field::Name => "name",
            Field::Image => "image",
            Field::Cores => "cores",
            Field::Memory => "memory",
            Field::Disk => "disk",
            Field::Tags => "tags",
            Field::Bridge => "bridge",
            Field::Ip => "ip",
            Field::Spec => "spec",
            Field::Power => "power",
        })
    }
}

/// One field difference, rendered for people and JSON alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub field: Field,
    pub from: String,
    pub to: String,
}

/// The decision for one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlan {
    pub node: NodeName,
    pub action: Action,
    /// The VM concerned: observed, explicit, remembered, or `None` when PVE
    /// will pick one at create time.
    pub vmid: Option<VmId>,
    pub changes: Vec<Change>,
    /// Why a conflict, delete or replace was planned.
    pub reason: Option<String>,
    /// Set when the action will not run (a replace without
    /// `--allow-replace`); says what to do.
    pub blocked: Option<String>,
    /// The PVE node the VM sits on, as `/cluster/resources` showed it
    /// (it may have migrated off the tier's own node); `None` before the
    /// VM exists. Steps on an existing VM act there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pve_node: Option<PveNode>,
    /// A VM carrying this manifest's marks that is not ours (a clone, a
    /// restore, a template, forged marks): shown, never touched, not drift.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub foreign: bool,
}

impl NodePlan {
    /// Short label, e.g. "grow disk" for an update that only grows the disk.
    pub fn label(&self) -> &'static str {
        match self.action {
            Action::NoOp => "no-op",
            Action::Create => "create",
            Action::Adopt => "adopt",
            Action::Replace => "replace",
            Action::Delete => "delete",
            Action::Conflict => "conflict",
            // A spec line next to a disk growth or a start only refreshes
            // the marks; it does not change what the label says.
            Action::Update => {
                let visible: Vec<Field> = self
                    .changes
                    .iter()
                    .map(|c| c.field)
                    .filter(|f| *f != Field::Spec)
                    .collect();
                match visible.as_slice() {
                    [Field::Power] => "start",
                    [Field::Disk] => "grow disk",
                    _ => "update",
                }
            }
        }
    }

    /// The change of `field`, if planned.
    pub fn change(&self, field: Field) -> Option<&Change> {
        self.changes.iter().find(|c| c.field == field)
    }

    /// True when the executor has something to do for this node.
    pub fn is_actionable(&self) -> bool {
        self.blocked.is_none() && !matches!(self.action, Action::NoOp | Action::Conflict)
    }
}

/// Counts per kind of action, for summaries and exit codes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: usize,
    pub adopt: usize,
    pub update: usize,
    pub replace: usize,
    pub delete: usize,
    pub noop: usize,
    pub conflict: usize,
    pub blocked: usize,
}

/// A whole plan for one manifest on one tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub manifest: String,
    pub host: String,
    pub nodes: Vec<NodePlan>,
}

impl Plan {
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for n in &self.nodes {
            if n.blocked.is_some() {
                s.blocked += 1;
            }
            match n.action {
                Action::NoOp => s.noop += 1,
                Action::Create => s.create += 1,
                Action::Adopt => s.adopt += 1,
                Action::Update => s.update += 1,
                Action::Replace => s.replace += 1,
                Action::Delete => s.delete += 1,
                Action::Conflict => s.conflict += 1,
            }
        }
        s
    }

    /// True when nothing needs doing and nothing is in the way.
    pub fn is_converged(&self) -> bool {
        self.nodes
            .iter()
            .all(|n| n.action == Action::NoOp && n.blocked.is_none())
    }

    /// The plan as the stable JSON document `homestak plan --json` prints.
    pub fn to_json(&self) -> serde_json::Value {
        let nodes: Vec<serde_json::Value> = self
            .nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "node": n.node,
                    "action": n.action,
                    "label": n.label(),
                    "vmid": n.vmid,
                    "changes": n.changes,
                    "reason": n.reason,
                    "blocked": n.blocked,
                    "pve_node": n.pve_node,
                    "foreign": n.foreign,
                })
            })
            .collect();
        serde_json::json!({
            "manifest": self.manifest,
            "host": self.host,
            "converged": self.is_converged(),
            "summary": self.summary(),
            "nodes": nodes,
        })
    }
}
