//! Drift reports: how far the world is from a manifest, node by node.
//! `homestak status --json` prints a [`Status`]; the daemon serves the same
//! document per manifest in `GET /v1/status`.

use homestak_base::id::{NodeName, VmId};
use homestak_core::plan::{Change, Power};
use serde::{Deserialize, Serialize};

/// Where one node stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    InSync,
    Drifted,
    Missing,
    /// Its vmid is held by a VM homestak does not own.
    Conflict,
    /// An owned VM whose node left the manifest.
    Orphan,
    /// Not observed: a delegated node whose child tier did not answer
    /// (unreachable, not yet bootstrapped, or failing). Never "in sync".
    /// Older daemons said `delegated` for the same thing.
    #[serde(alias = "delegated")]
    Unknown,
    /// A VM carrying the manifest's marks that is not homestak's (a clone,
    /// a restore, a template, forged marks): left untouched, not drift.
    Foreign,
}

impl State {
    /// The word in the human table.
    pub fn label(self) -> &'static str {
        match self {
            State::InSync => "in sync",
            State::Drifted => "drifted",
            State::Missing => "missing",
            State::Conflict => "conflict",
            State::Orphan => "orphan",
            State::Unknown => "unknown",
            State::Foreign => "foreign",
        }
    }

    /// True when this node counts as drift for the exit code: anything
    /// not observed to match, except VMs that are not ours.
    pub fn is_drift(self) -> bool {
        !matches!(self, State::InSync | State::Foreign)
    }
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: NodeName,
    /// `pve` node hosting it, for delegated nodes.
    pub parent: Option<NodeName>,
    /// The host whose tier observed it (`nodes/<host>.yaml` there); `None`
    /// when no tier did.
    #[serde(default)]
    pub tier: Option<String>,
    pub vmid: Option<VmId>,
    pub ip: Option<String>,
    pub power: Option<Power>,
    pub state: State,
    pub changes: Vec<Change>,
    pub reason: Option<String>,
}

/// The whole report for one manifest on one tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub manifest: String,
    pub host: String,
    pub in_sync: bool,
    pub nodes: Vec<NodeStatus>,
    /// The revision the daemon last applied (a commit, `worktree:…` or
    /// `subtree:…`), when known.
    pub last_applied_commit: Option<String>,
}

impl Status {
    /// Nodes that count as drift.
    pub fn drifted_nodes(&self) -> u64 {
        self.nodes.iter().filter(|n| n.state.is_drift()).count() as u64
    }
}
