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
    /// Every candidate VM's config was read (`--deep`); `false`: the fast
    /// observe, which reads only VMs whose `/cluster/resources` summary
    /// changed since they were last seen in sync.
    #[serde(default)]
    pub deep: bool,
}

/// A node of [`Status::tree`] and the nodes it hosts.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeNode<'a> {
    pub node: &'a NodeStatus,
    pub children: Vec<TreeNode<'a>>,
}

/// Deepest nesting [`Status::tree`] follows.
const MAX_DEPTH: usize = 64;

impl Status {
    /// Nodes that count as drift.
    pub fn drifted_nodes(&self) -> u64 {
        self.nodes.iter().filter(|n| n.state.is_drift()).count() as u64
    }

    /// The nodes as a forest, in report order: each child tier's nodes
    /// under the node that hosts them (`parent`), to any depth. Reports
    /// come from other tiers, so it is never trusted to be a tree: a node
    /// whose parent is not in the report, or that sits in a loop or deeper
    /// than 64 levels, becomes a root at the end rather than being lost.
    /// Each node appears once.
    pub fn tree(&self) -> Vec<TreeNode<'_>> {
        let mut placed = vec![false; self.nodes.len()];
        let mut roots = self.branch(None, &mut placed, 0);
        for i in 0..self.nodes.len() {
            if !placed[i] {
                placed[i] = true;
                let node = &self.nodes[i];
                let children = self.branch(Some(&node.node), &mut placed, 1);
                roots.push(TreeNode { node, children });
            }
        }
        roots
    }

    fn branch(
        &self,
        parent: Option<&NodeName>,
        placed: &mut [bool],
        depth: usize,
    ) -> Vec<TreeNode<'_>> {
        let mut out = Vec::new();
        if depth > MAX_DEPTH {
            return out;
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if placed[i] || node.parent.as_ref() != parent {
                continue;
            }
            placed[i] = true;
            let children = self.branch(Some(&node.node), placed, depth + 1);
            out.push(TreeNode { node, children });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, parent: Option<&str>) -> NodeStatus {
        NodeStatus {
            node: NodeName::new(name).unwrap(),
            parent: parent.map(|p| NodeName::new(p).unwrap()),
            tier: None,
            vmid: None,
            ip: None,
            power: None,
            state: State::InSync,
            changes: Vec::new(),
            reason: None,
        }
    }

    fn names(forest: &[TreeNode<'_>]) -> String {
        forest
            .iter()
            .map(|t| {
                let below = names(&t.children);
                if below.is_empty() {
                    t.node.node.to_string()
                } else {
                    format!("{}({below})", t.node.node)
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn the_tree_nests_child_tiers_and_loses_nothing() {
        let status = Status {
            manifest: "m".into(),
            host: "pve".into(),
            in_sync: true,
            nodes: vec![
                node("app", Some("hv")),
                node("hv", None),
                node("deep", Some("app")),
                node("edge", None),
                node("stray", Some("gone")),
                node("a", Some("b")),
                node("b", Some("a")),
            ],
            last_applied_commit: None,
            deep: false,
        };
        assert_eq!(names(&status.tree()), "hv(app(deep)) edge stray a(b)");
        // A chain deeper than the limit: cut, every node still there once.
        let chain = Status {
            nodes: (0..100)
                .map(|i| {
                    let parent = (i > 0).then(|| format!("n{}", i - 1));
                    node(&format!("n{i}"), parent.as_deref())
                })
                .collect(),
            ..status
        };
        fn count(forest: &[TreeNode<'_>]) -> usize {
            forest.iter().map(|t| 1 + count(&t.children)).sum()
        }
        let forest = chain.tree();
        assert_eq!(count(&forest), 100);
        assert_eq!(forest.len(), 2, "cut once below the limit");
    }
}
