//! Drift reports: the plan read as "how far is the world from the manifest".
//!
//! `homestak status` and the daemon's `GET /v1/status` print the same
//! document. A node is `in_sync`, `drifted` (with field diffs), `missing`,
//! `conflict` (its vmid is held by a VM we do not own), `orphan` (an owned
//! VM whose node left the manifest) or `unknown` (a node of a child tier
//! that did not answer). A child tier's nodes come from its own report
//! ([`children`]), so the tree is one view, each row saying which tier
//! observed it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use super::Planned;
use super::desired::Delegated;
use crate::controllers::pve::{ChildStatus, child_status};
use crate::controllers::vm::SshCheck;
use crate::store::{NodeRecord, Store};
pub use homestak_api::status::{NodeStatus, State, Status, TreeNode};
use homestak_base::id::{NodeName, VmId};
use homestak_core::plan::{Action, Style};

/// Builds the report from a plan and the store's records (for addresses).
pub fn report(planned: &Planned, records: &HashMap<NodeName, NodeRecord>) -> Status {
    let observed = |vmid: Option<VmId>| {
        vmid.and_then(|id| planned.observed.vms.iter().find(|vm| vm.vmid == id))
    };
    let mut nodes = Vec::new();
    for n in &planned.plan.nodes {
        let state = match n.action {
            Action::NoOp if n.foreign => State::Foreign,
            Action::NoOp if n.reason.is_some() => State::Orphan,
            Action::NoOp => State::InSync,
            Action::Adopt if n.changes.is_empty() => State::InSync,
            Action::Create => State::Missing,
            Action::Conflict => State::Conflict,
            Action::Delete => State::Orphan,
            Action::Adopt | Action::Update | Action::Replace => State::Drifted,
        };
        let vm = if state == State::Conflict || state == State::Missing {
            None
        } else {
            observed(n.vmid)
        };
        nodes.push(NodeStatus {
            node: n.node.clone(),
            parent: None,
            tier: Some(planned.plan.host.clone()),
            vmid: n.vmid,
            ip: records.get(&n.node).and_then(|r| r.ip.clone()),
            power: vm.map(|vm| vm.power),
            state,
            changes: n.changes.clone(),
            reason: n.reason.clone(),
        });
    }
    for d in &planned.tier.delegated {
        nodes.push(unknown(d, format!("the tier on {} was not asked", d.via)));
    }
    Status {
        manifest: planned.plan.manifest.clone(),
        host: planned.plan.host.clone(),
        in_sync: nodes.iter().all(|n| !n.state.is_drift()),
        nodes,
        last_applied_commit: None,
        deep: planned.deep,
    }
}

/// A delegated node no tier observed.
fn unknown(d: &Delegated, reason: String) -> NodeStatus {
    NodeStatus {
        node: d.node.clone(),
        parent: Some(d.parent.clone()),
        tier: None,
        vmid: None,
        ip: None,
        power: None,
        state: State::Unknown,
        changes: Vec::new(),
        reason: Some(reason),
    }
}

/// What the child tiers report replaces the placeholders for their nodes:
/// each `pve` node's child tier is asked for its subtree's report (which
/// holds the deeper tiers); a tier that cannot answer leaves its nodes
/// `unknown`, with why.
pub async fn children(
    status: &mut Status,
    planned: &Planned,
    store: Option<Arc<dyn Store>>,
    ssh: Option<&SshCheck>,
) {
    // Sibling tiers are asked at the same time.
    let mut asks = tokio::task::JoinSet::new();
    for (i, (via, subtree)) in planned.tier.subtrees.iter().enumerate() {
        let user = planned
            .tier
            .desired
            .vms
            .iter()
            .find(|v| &v.name == via)
            .map(|v| v.user.clone());
        let ssh = ssh.cloned().zip(user);
        let (store, manifest) = (store.clone(), planned.plan.manifest.clone());
        let (via, subtree) = (via.clone(), subtree.clone());
        asks.spawn(async move {
            let answer = match &store {
                Some(store) => {
                    let ssh = ssh.as_ref().map(|(c, u)| (c, u.as_str()));
                    child_status(store.as_ref(), &manifest, &via, &subtree, ssh).await
                }
                None => ChildStatus::Unknown("no store to find the child tier in".into()),
            };
            (i, via, answer)
        });
    }
    let mut answers = Vec::new();
    while let Some(joined) = asks.join_next().await {
        match joined {
            Ok(answer) => answers.push(answer),
            Err(e) => tracing::warn!(error = %e, "asking a child tier failed"),
        }
    }
    answers.sort_by_key(|(i, _, _)| *i);
    for (_, via, answer) in answers {
        let below: Vec<&Delegated> = planned
            .tier
            .delegated
            .iter()
            .filter(|d| d.via == via)
            .collect();
        status
            .nodes
            .retain(|n| !below.iter().any(|d| d.node == n.node && n.tier.is_none()));
        match answer {
            ChildStatus::Observed(child) => {
                for mut n in child.nodes {
                    if n.parent.is_none() {
                        n.parent = Some(via.clone());
                    }
                    status.nodes.push(n);
                }
            }
            ChildStatus::Unknown(why) => {
                for d in below {
                    status.nodes.push(unknown(d, why.clone()));
                }
            }
        }
    }
    status.in_sync = status.nodes.iter().all(|n| !n.state.is_drift());
}

const BOLD: anstyle::Style = anstyle::Style::new().bold();
const GREEN: anstyle::Style = anstyle::AnsiColor::Green.on_default();
const YELLOW: anstyle::Style = anstyle::AnsiColor::Yellow.on_default();

/// The report as a table, nested nodes under their host, any depth.
pub fn render_human(status: &Status, style: Style) -> String {
    let mut rows: Vec<[String; 6]> = Vec::new();
    let mut details: Vec<Vec<String>> = Vec::new();
    for root in status.tree() {
        walk(&root, "", "", &mut rows, &mut details);
    }
    let header = ["NODE", "VMID", "IP", "POWER", "STATUS", "TIER"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Manifest {} on host {}{}\n",
        status.manifest,
        status.host,
        status
            .last_applied_commit
            .as_deref()
            .map(|c| format!(" (last applied {c})"))
            .unwrap_or_default()
    );
    let line = |cells: &[String; 6]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            text.push_str(cell);
            if i + 1 < cells.len() {
                text.push_str(&" ".repeat(pad + 2));
            }
        }
        text
    };
    let header_line = line(&header.map(String::from));
    let _ = writeln!(out, "{}", style.paint(BOLD, header_line.trim_end()));
    for (row, extra) in rows.iter().zip(&details) {
        let text = line(row);
        let calm = row[4] == State::InSync.label();
        let text = text.trim_end();
        let painted = if calm {
            text.to_string()
        } else {
            style.paint(YELLOW, text)
        };
        let _ = writeln!(out, "{painted}");
        for d in extra {
            let _ = writeln!(out, "      {d}");
        }
    }
    let drifted = status.nodes.iter().filter(|n| n.state.is_drift()).count();
    let _ = writeln!(out);
    if status.in_sync {
        let _ = writeln!(out, "{}", style.paint(GREEN, "In sync."));
    } else {
        let line = format!(
            "{drifted} node{} not in sync; `homestak plan` shows the changes, `homestak reconcile --once` applies them.",
            if drifted == 1 { "" } else { "s" }
        );
        let _ = writeln!(out, "{}", style.paint(YELLOW, &line));
    }
    out
}

/// The rows of `tree`'s node and the nodes below it, depth first.
fn walk(
    tree: &TreeNode<'_>,
    glyph: &str,
    prefix: &str,
    rows: &mut Vec<[String; 6]>,
    details: &mut Vec<Vec<String>>,
) {
    push_row(rows, details, tree.node, glyph);
    for (k, child) in tree.children.iter().enumerate() {
        let (glyph, next) = if k + 1 == tree.children.len() {
            (format!("{prefix}└─ "), format!("{prefix}   "))
        } else {
            (format!("{prefix}├─ "), format!("{prefix}│  "))
        };
        walk(child, &glyph, &next, rows, details);
    }
}

fn push_row(
    rows: &mut Vec<[String; 6]>,
    details: &mut Vec<Vec<String>>,
    n: &NodeStatus,
    glyph: &str,
) {
    rows.push([
        format!("{glyph}{}", n.node),
        n.vmid.map_or("-".into(), |v| v.to_string()),
        n.ip.clone().unwrap_or_else(|| "-".into()),
        n.power.map_or("-".into(), |p| p.to_string()),
        n.state.label().to_string(),
        n.tier.clone().unwrap_or_else(|| "-".into()),
    ]);
    let mut extra: Vec<String> = n
        .changes
        .iter()
        .map(|c| format!("{}: {} (manifest: {})", c.field, c.from, c.to))
        .collect();
    if matches!(n.state, State::Conflict | State::Orphan | State::Unknown)
        && let Some(reason) = &n.reason
    {
        extra.push(reason.clone());
    }
    details.push(extra);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, parent: Option<&str>) -> NodeStatus {
        NodeStatus {
            node: NodeName::new(name).unwrap(),
            parent: parent.map(|p| NodeName::new(p).unwrap()),
            tier: Some("pve".into()),
            vmid: None,
            ip: None,
            power: None,
            state: State::InSync,
            changes: Vec::new(),
            reason: None,
        }
    }

    #[test]
    fn the_table_draws_child_tiers_under_their_host() {
        let status = Status {
            manifest: "m".into(),
            host: "pve".into(),
            in_sync: true,
            nodes: vec![
                node("hv", None),
                node("app", Some("hv")),
                node("deep", Some("app")),
                node("worker", Some("hv")),
                node("edge", None),
            ],
            last_applied_commit: None,
            deep: false,
        };
        let text = render_human(&status, Style { color: false });
        let names: Vec<&str> = text
            .lines()
            .skip(3)
            .take(5)
            .map(|l| l.split(" -").next().unwrap_or_default().trim_end())
            .collect();
        assert_eq!(
            names,
            ["hv", "├─ app", "│  └─ deep", "└─ worker", "edge"],
            "{text}"
        );
    }
}
