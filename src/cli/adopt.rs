//! `homestak adopt`: take over VMs homestak did not make (by the Python
//! iac-driver, or by hand) whose name and vmid match a manifest node.

use std::fmt::Write as _;

use super::target::{Purpose, TargetArgs, prepare};
use super::{GlobalArgs, Outcome, output};
use homestak_engine::adopt::{self, AdoptionPlan, Applied, AppliedResult, Verdict};
use serde::Serialize;

/// Arguments of `homestak adopt`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Show what would be adopted and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// What `--json` prints.
#[derive(Serialize)]
struct Printed<'a> {
    #[serde(flatten)]
    plan: &'a AdoptionPlan,
    dry_run: bool,
    applied: &'a [Applied],
}

/// Runs `homestak adopt`.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let purpose = if args.dry_run {
        Purpose::Read
    } else {
        Purpose::Converge
    };
    let prepared = prepare(&args.target, global, purpose, "adopt")?;
    let tier = prepared
        .engine
        .tier(prepared.site.clone(), &args.target.host)?;
    let plan = adopt::plan_adoption(&tier, &prepared.manifest).await?;
    let count = plan.to_adopt().count();
    if !global.json {
        output::print_text(&render(&plan));
    }
    if args.dry_run || count == 0 {
        if global.json {
            output::print_json(&Printed {
                plan: &plan,
                dry_run: args.dry_run,
                applied: &[],
            })?;
        } else if count == 0 {
            output::print_text("Nothing to adopt.\n");
        }
        return Ok(Outcome::Converged);
    }
    if !args.yes && !tokio::task::block_in_place(|| confirm(&plan, count))? {
        anyhow::bail!("not confirmed: nothing was adopted");
    }
    let applied = adopt::apply(&tier, &plan).await;
    if global.json {
        output::print_json(&Printed {
            plan: &plan,
            dry_run: false,
            applied: &applied,
        })?;
    } else {
        output::print_text(&render_applied(&applied));
    }
    let failed = applied
        .iter()
        .any(|a| !matches!(a.result, AppliedResult::Adopted));
    Ok(if failed {
        Outcome::Failed
    } else {
        Outcome::Converged
    })
}

/// Asks on the terminal; refuses without one (scripts pass `--yes`).
fn confirm(plan: &AdoptionPlan, count: usize) -> anyhow::Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("adopt needs confirmation: pass --yes (stdin is not a terminal)");
    }
    eprint!(
        "Write homestak's marks on {count} VM{} on host {}?\nType yes to continue: ",
        if count == 1 { "" } else { "s" },
        plan.host
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

/// The table of what adoption takes, and what it refuses and why.
fn render(plan: &AdoptionPlan) -> String {
    let mut out = format!(
        "Adoption of manifest {} on host {}:\n\n{:<16} {:>6}  {:<16} {:<8} DETAIL\n",
        plan.manifest, plan.host, "NODE", "VMID", "NAME", "ACTION"
    );
    for row in &plan.rows {
        let vmid = row.vmid.map_or("-".to_string(), |v| v.to_string());
        let name = row.name.as_deref().unwrap_or("-");
        let (action, detail) = match &row.verdict {
            Verdict::Adopt => ("adopt", marks_written(row)),
            Verdict::Owned => ("owned", "already homestak's".to_string()),
            Verdict::Absent => ("absent", "no VM; reconcile creates it".to_string()),
            Verdict::Refused { why } => ("refuse", why.clone()),
        };
        let _ = writeln!(
            out,
            "{:<16} {vmid:>6}  {name:<16} {action:<8} {detail}",
            row.node.as_str()
        );
        if row.verdict == Verdict::Adopt {
            let indent = " ".repeat(59);
            if !row.cloud_init_differs.is_empty() {
                let _ = writeln!(
                    out,
                    "{indent}cloud-init differs from the manifest: {}",
                    row.cloud_init_differs.join(", ")
                );
            }
            let then = if row.then.is_empty() {
                "nothing (in sync)".to_string()
            } else {
                row.then
                    .iter()
                    .map(|c| format!("{} {} -> {}", c.field, c.from, c.to))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(out, "{indent}then reconcile changes: {then}");
        }
    }
    out.push_str(
        "\nAdoption writes only tags and description (the VM's own are kept); \
         cores, memory, disks and power are not touched.\n",
    );
    out
}

fn marks_written(row: &adopt::Row) -> String {
    let tags: Vec<String> = row.add_tags.iter().map(|t| format!("+{t}")).collect();
    format!(
        "tags {}; description +{} homestak.* lines",
        if tags.is_empty() {
            "unchanged".to_string()
        } else {
            tags.join(" ")
        },
        row.add_description
            .iter()
            .filter(|l| l.starts_with("homestak."))
            .count()
    )
}

fn render_applied(applied: &[Applied]) -> String {
    let mut out = String::from("\n");
    for a in applied {
        let _ = match &a.result {
            AppliedResult::Adopted => writeln!(out, "adopted {} (vmid {})", a.node, a.vmid),
            AppliedResult::Refused { why } => {
                writeln!(out, "left {} (vmid {}) alone: {why}", a.node, a.vmid)
            }
            AppliedResult::Failed { why } => {
                writeln!(out, "failed {} (vmid {}): {why}", a.node, a.vmid)
            }
        };
    }
    out
}
