//! Drift reports: the plan read as "how far is the world from the manifest".
//!
//! `homestak status` and the daemon's `GET /v1/status` print the same
//! document. A node is `in_sync`, `drifted` (with field diffs), `missing`,
//! `conflict` (its vmid is held by a VM we do not own), `orphan` (an owned
//! VM whose node left the manifest) or `delegated` (converged by a child
//! reconciler on an inner host).

use std::collections::HashMap;
use std::fmt::Write as _;

use super::Planned;
use crate::store::NodeRecord;
pub use homestak_api::status::{NodeStatus, State, Status};
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
            vmid: n.vmid,
            ip: records.get(&n.node).and_then(|r| r.ip.clone()),
            power: vm.map(|vm| vm.power),
            state,
            changes: n.changes.clone(),
            reason: n.reason.clone(),
        });
    }
    for (node, host_node) in &planned.tier.delegated {
        nodes.push(NodeStatus {
            node: node.clone(),
            parent: Some(host_node.clone()),
            vmid: None,
            ip: None,
            power: None,
            state: State::Delegated,
            changes: Vec::new(),
            reason: Some(format!("converged by the reconciler on {host_node}")),
        });
    }
    Status {
        manifest: planned.plan.manifest.clone(),
        host: planned.plan.host.clone(),
        in_sync: nodes.iter().all(|n| !n.state.is_drift()),
        nodes,
        last_applied_commit: None,
    }
}

/// The report as a table, nested nodes under their host.
pub fn render_human(status: &Status, style: Style) -> String {
    let mut rows: Vec<[String; 5]> = Vec::new();
    let mut details: Vec<Vec<String>> = Vec::new();
    let roots = status.nodes.iter().filter(|n| n.parent.is_none());
    for root in roots {
        push_row(&mut rows, &mut details, root, "");
        let children: Vec<&NodeStatus> = status
            .nodes
            .iter()
            .filter(|n| n.parent.as_ref() == Some(&root.node))
            .collect();
        for (i, child) in children.iter().enumerate() {
            let glyph = if i + 1 == children.len() {
                "└─ "
            } else {
                "├─ "
            };
            push_row(&mut rows, &mut details, child, glyph);
        }
    }
    let header = ["NODE", "VMID", "IP", "POWER", "STATUS"];
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
    let line = |cells: &[String; 5]| {
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
    let _ = writeln!(out, "{}", line(&header.map(String::from)).trim_end());
    for (row, extra) in rows.iter().zip(&details) {
        let text = line(row);
        let calm = row[4] == State::InSync.label() || row[4] == State::Delegated.label();
        let painted = if style.color && !calm {
            format!("\x1b[33m{text}\x1b[0m")
        } else {
            text
        };
        let _ = writeln!(out, "{}", painted.trim_end());
        for d in extra {
            let _ = writeln!(out, "      {d}");
        }
    }
    let drifted = status.nodes.iter().filter(|n| n.state.is_drift()).count();
    let _ = writeln!(out);
    if status.in_sync {
        let _ = writeln!(out, "In sync.");
    } else {
        let _ = writeln!(
            out,
            "{drifted} node{} not in sync; `homestak plan` shows the changes, `homestak reconcile --once` applies them.",
            if drifted == 1 { "" } else { "s" }
        );
    }
    out
}

fn push_row(
    rows: &mut Vec<[String; 5]>,
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
    ]);
    let mut extra: Vec<String> = n
        .changes
        .iter()
        .map(|c| format!("{}: {} (manifest: {})", c.field, c.from, c.to))
        .collect();
    if matches!(n.state, State::Conflict | State::Orphan)
        && let Some(reason) = &n.reason
    {
        extra.push(reason.clone());
    }
    details.push(extra);
}
