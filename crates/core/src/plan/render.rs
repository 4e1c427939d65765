//! Human rendering of a plan, in the spirit of `terraform plan`.

use std::fmt::Write as _;

use super::state::Desired;
use super::{Action, NodePlan, Plan};

/// Output styling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// ANSI colours. The CLI renders with them on and writes through
    /// anstream, which strips them off a colour terminal (pipes,
    /// `NO_COLOR`) and keeps them with `CLICOLOR_FORCE`; snapshots and
    /// reports render without.
    pub color: bool,
}

impl Style {
    /// `text` in `paint` when colours are on.
    pub fn paint(&self, paint: anstyle::Style, text: &str) -> String {
        if self.color {
            format!("{paint}{text}{paint:#}")
        } else {
            text.to_string()
        }
    }
}

const GREEN: anstyle::Style = anstyle::AnsiColor::Green.on_default();
const YELLOW: anstyle::Style = anstyle::AnsiColor::Yellow.on_default();
const RED: anstyle::Style = anstyle::AnsiColor::Red.on_default();
const MAGENTA: anstyle::Style = anstyle::AnsiColor::Magenta.on_default();
const CYAN: anstyle::Style = anstyle::AnsiColor::Cyan.on_default();
const DIM: anstyle::Style = anstyle::Style::new().dimmed();
const BOLD: anstyle::Style = anstyle::Style::new().bold();

fn symbol(node: &NodePlan) -> (&'static str, anstyle::Style) {
    match node.action {
        Action::Create => ("+", GREEN),
        Action::Adopt => ("=", CYAN),
        Action::Update => ("~", YELLOW),
        Action::Replace => ("-/+", MAGENTA),
        Action::Delete => ("-", RED),
        Action::Conflict => ("!", RED),
        Action::NoOp => (" ", DIM),
    }
}

/// Renders `plan` for people. `desired` supplies the details of creations.
pub fn render_human(plan: &Plan, desired: &Desired, style: Style) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Plan for manifest {} on host {}:\n",
        plan.manifest, plan.host
    );
    let width = plan
        .nodes
        .iter()
        .map(|n| n.node.as_str().len())
        .max()
        .unwrap_or(4)
        .max(4);
    for node in &plan.nodes {
        let (sym, color) = symbol(node);
        let vmid = node
            .vmid
            .map_or("vmid auto".to_string(), |v| format!("vmid {v}"));
        let detail = match node.action {
            Action::Create => desired
                .vms
                .iter()
                .find(|v| v.name == node.node)
                .map(|v| {
                    format!(
                        "{} cores, {} MiB, {} GiB, {} on {}, ip {}",
                        v.cores, v.memory_mib, v.disk_gib, v.image, v.storage, v.ip
                    )
                })
                .unwrap_or_default(),
            _ => node.reason.clone().unwrap_or_default(),
        };
        let line = format!(
            "{sym:>3} {:<width$}  {:<9}  {:<10}  {detail}",
            node.node,
            node.label(),
            vmid
        );
        let _ = writeln!(out, "{}", style.paint(color, line.trim_end()));
        for c in &node.changes {
            let _ = writeln!(
                out,
                "        {:<8} {} → {}",
                c.field.to_string(),
                c.from,
                c.to
            );
        }
        if let Some(blocked) = &node.blocked {
            let _ = writeln!(
                out,
                "        {}",
                style.paint(RED, &format!("blocked: {blocked}"))
            );
        }
    }
    let s = plan.summary();
    let mut parts = Vec::new();
    let mut push = |n: usize, what: &str| {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    };
    push(s.create, "to create");
    push(s.adopt, "to adopt");
    push(s.update, "to update");
    push(s.replace, "to replace");
    push(s.delete, "to delete");
    push(s.conflict, "in conflict");
    push(s.blocked, "blocked");
    push(s.noop, "unchanged");
    let _ = writeln!(out);
    if plan.is_converged() {
        let line = format!(
            "No changes: the world matches the manifest ({}).",
            parts.join(", ")
        );
        let _ = writeln!(out, "{}", style.paint(GREEN, &line));
    } else {
        let line = format!("Plan: {}.", parts.join(", "));
        let _ = writeln!(out, "{}", style.paint(BOLD, &line));
    }
    out
}
