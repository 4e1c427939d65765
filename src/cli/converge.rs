//! `homestak plan`, `homestak reconcile --once` and `homestak status`.

use std::path::PathBuf;

use super::progress::Progress;
use super::report::RunReport;
use super::target::{Purpose, SshUse, TargetArgs, prepare};
use super::{GlobalArgs, Outcome, output};
use homestak_core::plan::{Style, render_human};
use homestak_engine::executor::{self, NodeState};
use homestak_engine::reconcile::{self, status};

/// Arguments of `homestak plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Plan destroy-and-recreate for changes PVE cannot make in place.
    #[arg(long)]
    pub allow_replace: bool,
    /// Keep owned VMs whose node left the manifest.
    #[arg(long)]
    pub no_prune: bool,
    /// Exit 2 when the plan has changes (like `terraform plan -detailed-exitcode`).
    #[arg(long)]
    pub detailed_exitcode: bool,
}

/// Arguments of `homestak reconcile`.
#[derive(Debug, clap::Args)]
pub struct ReconcileArgs {
    /// Converge once and exit (continuous reconciling is `homestak serve`).
    #[arg(long)]
    pub once: bool,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Steps running at once across all nodes.
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Allow destroy-and-recreate for changes PVE cannot make in place.
    #[arg(long)]
    pub allow_replace: bool,
    /// Keep owned VMs whose node left the manifest.
    #[arg(long)]
    pub no_prune: bool,
    /// Directory for run reports.
    #[arg(long, value_name = "DIR", default_value = "reports")]
    pub report_dir: PathBuf,
    /// Do not write report files.
    #[arg(long)]
    pub no_report: bool,
}

/// Arguments of `homestak status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: TargetArgs,
}

fn options(allow_replace: bool, no_prune: bool, concurrency: Option<usize>) -> reconcile::Options {
    let mut options = reconcile::Options {
        allow_replace,
        prune: !no_prune,
        ..reconcile::Options::default()
    };
    if let Some(n) = concurrency {
        options.executor.concurrency = n.max(1);
    }
    options
}

/// Runs `homestak plan`.
pub async fn plan(args: PlanArgs, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let prepared = prepare(&args.target, global, Purpose::Read)?;
    let options = options(args.allow_replace, args.no_prune, None);
    let planned = prepared.tier.plan(&prepared.manifest, &options).await?;
    if global.json {
        output::print_json(&planned.plan.to_json())?;
    } else {
        output::print_text(&render_human(
            &planned.plan,
            &planned.tier.desired,
            Style::for_stdout(),
        ));
    }
    Ok(if args.detailed_exitcode && !planned.plan.is_converged() {
        Outcome::Drift
    } else {
        Outcome::Success
    })
}

/// Runs `homestak reconcile --once`.
pub async fn reconcile(args: ReconcileArgs, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    if !args.once {
        anyhow::bail!(
            "continuous reconciling is the daemon's job: run `homestak serve`, or pass --once"
        );
    }
    let options = options(args.allow_replace, args.no_prune, args.concurrency);
    let mut report = RunReport::new("reconcile");
    let run = Run {
        mode: Mode::Apply,
        dry_run: false,
        force_ssh: false,
        confirm: false,
    };
    let outcome = converge(&args.target, global, &options, run, &mut report).await?;
    finish_report(
        &report,
        global,
        (!args.no_report).then_some(&args.report_dir),
    )?;
    Ok(outcome)
}

/// What [`converge`] does with the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Converge to the manifest.
    Apply,
    /// Remove everything the manifest owns.
    Destroy,
}

/// How [`converge`] runs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Run {
    pub mode: Mode,
    /// Print the plan and stop.
    pub dry_run: bool,
    /// Verify SSH even when the manifest's `verify_ssh` is off (`test`).
    pub force_ssh: bool,
    /// Ask before destroying (skipped by `--yes`).
    pub confirm: bool,
}

/// Plan, show, apply with live progress, record. Shared by `reconcile` and
/// the seed verbs.
pub(super) async fn converge(
    target: &TargetArgs,
    global: &GlobalArgs,
    options: &reconcile::Options,
    run: Run,
    report: &mut RunReport,
) -> anyhow::Result<Outcome> {
    let began = std::time::Instant::now();
    let started = homestak_engine::store::Timestamp::now();
    let purpose = match (run.dry_run, run.mode, run.force_ssh) {
        (true, _, _) => Purpose::Read,
        (false, Mode::Apply, true) => Purpose::Converge {
            ssh: SshUse::Always,
        },
        (false, Mode::Apply, false) => Purpose::Converge {
            ssh: SshUse::AsManifest,
        },
        (false, Mode::Destroy, _) => Purpose::Converge { ssh: SshUse::Never },
    };
    let prepared = prepare(target, global, purpose)?;
    report
        .context
        .insert("manifest".into(), prepared.manifest.name().into());
    report
        .context
        .insert("host".into(), target.host.clone().into());
    let mut planned = match run.mode {
        Mode::Apply => prepared.tier.plan(&prepared.manifest, options).await?,
        Mode::Destroy => prepared.tier.plan_destroy(&prepared.manifest).await?,
    };
    if run.force_ssh {
        planned.settings.verify_ssh = true;
    }
    if global.json {
        // One JSON document per run: the plan travels in the report.
        report.context.insert("plan".into(), planned.plan.to_json());
    } else {
        output::print_text(&render_human(
            &planned.plan,
            &planned.tier.desired,
            Style::for_stdout(),
        ));
    }
    if run.dry_run {
        report.duration = began.elapsed();
        report.context.insert("dry_run".into(), true.into());
        return Ok(Outcome::Success);
    }
    if run.confirm
        && planned.plan.nodes.iter().any(|n| n.is_actionable())
        && !confirm_destroy(&planned.plan)?
    {
        anyhow::bail!("destroy cancelled: nothing was changed");
    }
    let names: Vec<String> = planned
        .plan
        .nodes
        .iter()
        .filter(|n| n.is_actionable())
        .map(|n| n.node.clone())
        .collect();
    let progress = Progress::new(!global.json, &names);
    let result = prepared
        .tier
        .apply(
            &planned,
            options,
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
            &|event| progress.on_event(&event),
        )
        .await;
    progress.finish();
    prepared
        .tier
        .record_run(prepared.manifest.name(), started, &result, None);
    report.absorb(&result);
    report.duration = began.elapsed();
    report
        .context
        .insert("summary".into(), reconcile::summarize(&result).into());
    if !global.json {
        print_outcome(&result, run.mode);
    }
    Ok(if result.cancelled {
        Outcome::Interrupted
    } else if result.success() {
        Outcome::Success
    } else {
        Outcome::Failed
    })
}

/// Asks on the terminal; refuses without one (scripts pass `--yes`).
fn confirm_destroy(plan: &homestak_core::plan::Plan) -> anyhow::Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("destroy needs confirmation: pass --yes (stdin is not a terminal)");
    }
    let doomed: Vec<String> = plan
        .nodes
        .iter()
        .filter(|n| n.is_actionable())
        .map(|n| match n.vmid {
            Some(v) => format!("{} (vmid {v})", n.node),
            None => n.node.clone(),
        })
        .collect();
    eprint!(
        "Destroy {} VM{} on host {}: {}?\nType yes to continue: ",
        doomed.len(),
        if doomed.len() == 1 { "" } else { "s" },
        plan.host,
        doomed.join(", ")
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

fn print_outcome(result: &executor::Report, mode: Mode) {
    let mut text = String::new();
    for (node, state) in &result.nodes {
        let line = match state {
            NodeState::Failed(e) => format!("  ✗ {node}: {e}"),
            NodeState::Refused(e) => format!("  ! {node}: {e}"),
            NodeState::Skipped(e) => format!("  - {node}: skipped ({e})"),
            NodeState::Interrupted => format!("  - {node}: interrupted"),
            NodeState::RolledBack => format!("  ↺ {node}: rolled back"),
            NodeState::Converged | NodeState::Unchanged => continue,
        };
        text.push_str(&line);
        text.push('\n');
    }
    let summary = reconcile::summarize(result);
    if result.success() && mode == Mode::Destroy {
        // A finished destroy step list means the VM is gone.
        let gone = result
            .nodes
            .values()
            .filter(|s| matches!(s, NodeState::Converged))
            .count();
        text.push_str(&format!(
            "\nDestroyed: {gone} VM{}.\n",
            if gone == 1 { "" } else { "s" }
        ));
    } else if result.success() {
        text.push_str(&format!("\nConverged: {summary}.\n"));
    } else if result.cancelled {
        text.push_str(&format!(
            "\nInterrupted: {summary}. Run again to finish; tasks in flight are resumed.\n"
        ));
    } else {
        text.push_str(&format!("\nNot converged: {summary}.\n"));
    }
    output::print_text(&text);
}

/// Prints `--json` output and writes report files.
pub(super) fn finish_report(
    report: &RunReport,
    global: &GlobalArgs,
    dir: Option<&PathBuf>,
) -> anyhow::Result<()> {
    if let Some(dir) = dir {
        match report.write(dir) {
            Ok((md, _)) if !global.json => {
                eprintln!("report: {}", md.display());
            }
            Ok(_) => {}
            Err(err) => eprintln!(
                "warning: cannot write the report in {}: {err}",
                dir.display()
            ),
        }
    }
    if global.json {
        output::print_json(&report.to_json())?;
    }
    Ok(())
}

/// Runs `homestak status`.
pub async fn status(args: StatusArgs, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let prepared = prepare(&args.target, global, Purpose::Read)?;
    let mut report = prepared.tier.status(&prepared.manifest).await?;
    if report.last_applied_commit.is_none() {
        // The daemon keeps the commits it applied in its own records,
        // readable while it runs (unlike the store it holds).
        use homestak_daemon::store::ControllerStore as _;
        let dir = super::target::state_dir(args.target.state_dir.as_ref());
        report.last_applied_commit = homestak_daemon::store::FileStore::open(&dir)
            .ok()
            .and_then(|s| s.record(prepared.manifest.name()).last_applied)
            .map(|a| a.revision);
    }
    if global.json {
        output::print_json(&report)?;
    } else {
        output::print_text(&status::render_human(&report, Style::for_stdout()));
    }
    Ok(if report.in_sync {
        Outcome::Success
    } else {
        Outcome::Drift
    })
}
