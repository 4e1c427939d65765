//! `homestak plan`, `homestak reconcile --once` and `homestak status`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::lifecycle::LifecycleArgs;
use super::progress::Progress;
use super::report::RunReport;
use super::target::{Prepared, Purpose, TargetArgs, prepare};
use super::{GlobalArgs, Outcome, output};
use homestak_api::v1::ChildPlan;
use homestak_api::{Event, Mode, Reason};
use homestak_base::id::NodeName;
use homestak_core::plan::render_human;
use homestak_engine::executor::{self, NodeState};
use homestak_engine::hostlease;
use homestak_engine::reconcile::{self, Observer, Planned, Request, status};

/// Arguments of `homestak plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub changes: ChangeArgs,
    /// Exit 2 when the plan has changes (like `terraform plan -detailed-exitcode`).
    #[arg(long)]
    pub detailed_exitcode: bool,
}

/// Arguments of `homestak reconcile`.
#[derive(Debug, clap::Args)]
pub struct ReconcileArgs {
    /// Converge once and exit. Required: continuous reconciling is
    /// `homestak serve`, so `reconcile` without it is a usage error (64).
    #[arg(long, required = true)]
    pub once: bool,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Steps running at once across all nodes.
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    #[command(flatten)]
    pub changes: ChangeArgs,
    /// Directory for run reports (default: reports/ in the state directory).
    #[arg(long, value_name = "DIR", value_hint = clap::ValueHint::DirPath)]
    pub report_dir: Option<PathBuf>,
    /// Do not write report files.
    #[arg(long)]
    pub no_report: bool,
    #[command(flatten)]
    pub lifecycle: LifecycleArgs,
    /// Read every VM's config, not only those whose summary in
    /// /cluster/resources changed since they were last seen in sync.
    #[arg(long)]
    pub deep: bool,
}

/// What a plan may do beyond in-place changes (`plan`, `reconcile`).
#[derive(Debug, Clone, clap::Args)]
pub struct ChangeArgs {
    /// Allow destroy-and-recreate for changes PVE cannot make in place.
    #[arg(long)]
    pub allow_replace: bool,
    /// Keep owned VMs whose node left the manifest.
    #[arg(long)]
    pub no_prune: bool,
    /// Also destroy a second VM of ours for a node that already has one
    /// (left by a lost store); without it duplicates are reported and kept.
    #[arg(long)]
    pub prune_duplicates: bool,
}

/// Arguments of `homestak status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Keep watching, like `kubectl get -w`: re-read every --interval and
    /// redraw in place on a terminal; elsewhere print the report again when
    /// it changed, after a timestamp line. Ctrl-C ends it (exit 0).
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// How often --watch re-reads the status (2s, 500ms, 1m).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "2s",
        value_parser = humantime::parse_duration,
        requires = "watch"
    )]
    pub interval: std::time::Duration,
    /// Read every VM's config, not only those whose summary in
    /// /cluster/resources changed since they were last seen in sync.
    #[arg(long)]
    pub deep: bool,
}

fn options(changes: &ChangeArgs, concurrency: Option<usize>) -> reconcile::Options {
    let mut options = reconcile::Options {
        allow_replace: changes.allow_replace,
        prune: !changes.no_prune,
        prune_duplicates: changes.prune_duplicates,
        ..reconcile::Options::default()
    };
    if let Some(n) = concurrency {
        options.executor.concurrency = n.max(1);
    }
    options
}

/// Runs `homestak plan`: a run that stops once the plan is made.
pub async fn plan(args: PlanArgs, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let prepared = prepare(&args.target, global, Purpose::Read, "plan")?;
    // The run stops once planned: it never loads the SSH key nor talks to
    // VMs, and it changes nothing, so it takes no host lease.
    let mut options = options(&args.changes, None);
    options.lease = None;
    let request = request(&prepared, &args.target, Mode::Apply, options);
    /// Keeps the plan and stops the run there.
    struct Keep(Mutex<Option<Planned>>);
    impl Observer for Keep {
        fn planned(&self, planned: &Planned) -> bool {
            *lock(&self.0) = Some(planned.clone());
            false
        }
    }
    let keep = Keep(Mutex::new(None));
    let run = prepared
        .engine
        .run_once(request, std::future::pending(), &keep)
        .await?;
    let planned = lock(&keep.0).take();
    if let Some(planned) = planned {
        // The child tiers' plans too: a tree is planned from its root.
        let children = prepared.engine.child_plans(&planned).await;
        show_plan(&planned, &children, global.json)?;
    }
    Ok(
        if args.detailed_exitcode && run.outcome == Outcome::Drifted {
            Outcome::Drifted
        } else {
            Outcome::Converged
        },
    )
}

fn show_plan(planned: &Planned, children: &[ChildPlan], json: bool) -> anyhow::Result<()> {
    if json {
        let mut doc = planned.plan.to_json();
        if !children.is_empty() {
            doc["children"] = serde_json::to_value(children)?;
        }
        output::print_json(&doc)
    } else {
        let mut text = render_human(&planned.plan, &planned.tier.desired, output::STYLED);
        render_children(&mut text, children, 1);
        output::print_text(&text);
        Ok(())
    }
}

/// The child tiers' plans under the parent's, indented by tier.
fn render_children(out: &mut String, children: &[ChildPlan], depth: usize) {
    use std::fmt::Write as _;
    let pad = "    ".repeat(depth);
    for child in children {
        let _ = writeln!(out);
        match (&child.tree, &child.note) {
            (Some(tree), _) => {
                let _ = writeln!(out, "{pad}Tier on {} (child of this tier):", child.node);
                for line in tree.text.lines() {
                    let _ = writeln!(out, "{pad}{line}");
                }
                render_children(out, &tree.children, depth + 1);
            }
            (None, note) => {
                let _ = writeln!(
                    out,
                    "{pad}Tier on {}: {}",
                    child.node,
                    note.as_deref().unwrap_or("no plan")
                );
            }
        }
    }
}

/// The run of `prepared`'s manifest on `target`'s host.
fn request(
    prepared: &Prepared,
    target: &TargetArgs,
    mode: Mode,
    options: reconcile::Options,
) -> Request {
    Request {
        manifest: Arc::clone(&prepared.manifest),
        host: target.host.clone(),
        site: Arc::clone(&prepared.site),
        revision: None,
        reason: Reason::Cli,
        mode,
        options,
        generation: 0,
    }
}

/// Runs `homestak reconcile --once`.
pub async fn reconcile(args: ReconcileArgs, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let mut options = args
        .lifecycle
        .options(options(&args.changes, args.concurrency));
    options.deep = args.deep;
    let mut report = RunReport::new("reconcile");
    let run = Run {
        mode: Mode::Apply,
        dry_run: false,
        confirm: false,
    };
    let result = converge(&args.target, global, options, run, &mut report).await;
    let outcome = settle(result, &mut report, global);
    finish_report(
        &report,
        global,
        (!args.no_report)
            .then(|| {
                super::target::report_dir(args.report_dir.as_ref(), args.target.state_dir.as_ref())
            })
            .as_ref(),
    )?;
    Ok(outcome)
}

/// How [`converge`] runs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Run {
    /// Apply or destroy.
    pub mode: Mode,
    /// Print the plan and stop.
    pub dry_run: bool,
    /// Ask before destroying (skipped by `--yes`).
    pub confirm: bool,
}

/// What the command line shows of a run: the plan, a confirmation when
/// asked for, then live progress.
struct Terminal {
    run: Run,
    json: bool,
    /// The plan, for the one JSON document a `--json` run prints.
    plan: Mutex<Option<serde_json::Value>>,
    progress: Mutex<Option<Progress>>,
    /// Why the run stopped after planning, when it was not a dry run.
    refused: Mutex<Option<anyhow::Error>>,
}

impl Observer for Terminal {
    fn planned(&self, planned: &Planned) -> bool {
        if self.json {
            *lock(&self.plan) = Some(planned.plan.to_json());
        } else if let Err(err) = show_plan(planned, &[], false) {
            *lock(&self.refused) = Some(err);
            return false;
        }
        if self.run.dry_run {
            return false;
        }
        if self.run.confirm && planned.plan.nodes.iter().any(|n| n.is_actionable()) {
            // A terminal read blocks: off the async workers while it waits.
            let answer =
                tokio::task::block_in_place(|| confirm_destroy(&planned.plan)).and_then(|yes| {
                    if yes {
                        Ok(())
                    } else {
                        Err(anyhow::anyhow!("destroy cancelled: nothing was changed"))
                    }
                });
            if let Err(err) = answer {
                *lock(&self.refused) = Some(err);
                return false;
            }
        }
        let names: Vec<NodeName> = planned
            .plan
            .nodes
            .iter()
            .filter(|n| n.is_actionable())
            .map(|n| n.node.clone())
            .collect();
        *lock(&self.progress) = Some(Progress::new(!self.json, &names));
        true
    }

    fn progress(&self, event: &Event) {
        if let Some(progress) = lock(&self.progress).as_ref() {
            progress.on_event(event);
        }
    }

    fn lease_wait(&self, held: &hostlease::Held) {
        // On stderr, so a `--json` document on stdout stays whole.
        Progress::eprintln(&format!(
            "waiting for host {}: {} holds its lease (notes of PVE node {}) until {}; \
             --lease-timeout bounds the wait, --no-wait fails at once",
            held.host,
            held.holder(),
            held.node,
            held.until()
        ));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Plan, show, apply with live progress: [`reconcile::Engine::run_once`]
/// with the terminal watching. Shared by `reconcile` and the seed verbs.
pub(super) async fn converge(
    target: &TargetArgs,
    global: &GlobalArgs,
    options: reconcile::Options,
    run: Run,
    report: &mut RunReport,
) -> anyhow::Result<Outcome> {
    let purpose = if run.dry_run {
        Purpose::Read
    } else {
        Purpose::Converge
    };
    let prepared = prepare(target, global, purpose, &report.scenario)?;
    let mut options = options;
    if run.dry_run {
        // Only plans: no host lease.
        options.lease = None;
    }
    report
        .context
        .insert("manifest".into(), prepared.manifest.name().into());
    report
        .context
        .insert("host".into(), target.host.clone().into());
    let terminal = Terminal {
        run,
        json: global.json,
        plan: Mutex::new(None),
        progress: Mutex::new(None),
        refused: Mutex::new(None),
    };
    let request = request(&prepared, target, run.mode, options);
    let (cancel, signals) = interruption()?;
    let result = prepared.engine.run_once(request, cancel, &terminal).await;
    signals.abort();
    if let Some(progress) = lock(&terminal.progress).take() {
        progress.finish();
    }
    let result = result?;
    if let Some(plan) = lock(&terminal.plan).take() {
        // One JSON document per run: the plan travels in the report.
        report.context.insert("plan".into(), plan);
    }
    report.duration = result.duration;
    if let Some(err) = lock(&terminal.refused).take() {
        return Err(err);
    }
    let Some(executed) = &result.report else {
        if result.outcome == Outcome::Interrupted {
            // Stopped while waiting for the host lease: nothing ran.
            let why = result.message.clone().unwrap_or_default();
            if !global.json {
                output::print_text(&format!("\nInterrupted: {why}.\n"));
            }
            report.fail(why);
            report.outcome = Outcome::Interrupted;
            return Ok(Outcome::Interrupted);
        }
        report.context.insert("dry_run".into(), true.into());
        return Ok(Outcome::Converged);
    };
    report.absorb(executed);
    report
        .context
        .insert("summary".into(), result.summary.clone().into());
    if run.mode == Mode::Apply {
        add_vm_context(&prepared, report);
    }
    if !global.json {
        print_outcome(executed, &result.summary, run.mode);
    }
    Ok(result.outcome)
}

/// What the Python tool's context carried after a create: `<name>_vmid`
/// and `<name>_ip` per VM of this tier, and `vm_id` / `vm_ip` of the first
/// (in creation order), from the store's records of what the run made.
fn add_vm_context(prepared: &Prepared, report: &mut RunReport) {
    let Some(store) = prepared.engine.store() else {
        return;
    };
    let Ok(records) = store.list_nodes(prepared.manifest.name()) else {
        return;
    };
    let mut first = true;
    for level in prepared.manifest.levels() {
        let Some((_, record)) = records.iter().find(|(name, _)| *name == level.name) else {
            continue;
        };
        let Some(vmid) = record.vmid else { continue };
        let name = level.name.as_str();
        report
            .context
            .insert(format!("{name}_vmid"), u32::from(vmid).into());
        if let Some(ip) = &record.ip {
            report
                .context
                .insert(format!("{name}_ip"), ip.clone().into());
        }
        if first {
            report
                .context
                .insert("vm_id".into(), u32::from(vmid).into());
            if let Some(ip) = &record.ip {
                report.context.insert("vm_ip".into(), ip.clone().into());
            }
            first = false;
        }
    }
}

/// SIGINT or SIGTERM winds the run down: no step starts after it, the
/// steps in flight reach their safe point and are recorded, and the report
/// is written (exit 130). A second signal exits at once, as a kill would:
/// the store is made to survive that, and the next run resumes. Listening
/// starts here, before planning, so a signal then is not the default kill.
/// Returns what resolves on the first signal, and the listener to stop
/// once the run is over.
pub(super) fn interruption() -> anyhow::Result<(
    impl std::future::Future<Output = ()>,
    tokio::task::JoinHandle<()>,
)> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let listener = tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Progress::eprintln(
            "interrupted: no new step starts; waiting for the steps in flight (signal again to \
             stop at once)",
        );
        let _ = tx.send(true);
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("stopped at once: run again to resume where this run stopped");
        std::process::exit(i32::from(super::help::EXIT_INTERRUPTED));
    });
    let cancel = async move {
        let _ = rx.wait_for(|fired| *fired).await;
    };
    Ok((cancel, listener))
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
            None => n.node.to_string(),
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

fn print_outcome(result: &executor::Report, summary: &str, mode: Mode) {
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

/// A run's outcome, with a failure before or outside the run (an unknown
/// host, a manifest that does not load) turned into a failed report: the
/// JSON document and the report files are written all the same.
pub(super) fn settle(
    result: anyhow::Result<Outcome>,
    report: &mut RunReport,
    global: &GlobalArgs,
) -> Outcome {
    match result {
        Ok(outcome) => outcome,
        Err(err) => {
            let mut text = err.to_string();
            for cause in err.chain().skip(1) {
                let cause = cause.to_string();
                if !text.contains(&cause) {
                    text.push_str(": ");
                    text.push_str(&cause);
                }
            }
            report.fail(text);
            if !global.json {
                output::print_error(&err);
            }
            Outcome::Failed
        }
    }
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
        output::print_json(&report.to_document())?;
    }
    Ok(())
}

/// Runs `homestak status`.
pub async fn status(args: StatusArgs, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    if args.watch {
        return super::watch::run(&args, global).await;
    }
    let report = read_status(&args.target, global, args.deep).await?;
    if global.json {
        output::print_json(&report)?;
    } else {
        output::print_text(&status::render_human(&report, output::STYLED));
    }
    Ok(if report.in_sync {
        Outcome::Converged
    } else {
        Outcome::Drifted
    })
}

/// The drift report of `target`'s manifest on its host. The engine (and
/// the store, when free) is held only while reading.
pub(super) async fn read_status(
    target: &TargetArgs,
    global: &GlobalArgs,
    deep: bool,
) -> anyhow::Result<status::Status> {
    let prepared = prepare(target, global, Purpose::Read, "status")?;
    let mut report = prepared
        .engine
        .status(
            Arc::clone(&prepared.site),
            &prepared.manifest,
            &target.host,
            deep,
        )
        .await?;
    // Plan and status go on without the store while the daemon holds it.
    if prepared.engine.store().is_none() {
        // The daemon holds the store: ask it what it applied.
        let dir = super::target::state_dir(target.state_dir.as_ref());
        report.last_applied_commit = super::daemon::applied_revision(&dir, &report.manifest).await;
    }
    Ok(report)
}
