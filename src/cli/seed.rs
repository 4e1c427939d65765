//! The iac-driver verbs kept for its users: `create`, `destroy`, `test`.
//! They run the same reconcile path as `reconcile --once`; only the intent
//! and the report differ.

use std::path::PathBuf;

use super::converge::{self, Run};
use super::lifecycle::LifecycleArgs;
use super::report::RunReport;
use super::target::TargetArgs;
use super::{GlobalArgs, Outcome};
use homestak_api::Mode;
use homestak_engine::reconcile;

/// Flags every seed verb takes.
#[derive(Debug, Clone, clap::Args)]
pub struct SeedArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Show the plan and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the run report as JSON on stdout (the iac-driver schema).
    #[arg(long)]
    pub json_output: bool,
    /// Directory for run reports (default: reports/ in the state directory).
    #[arg(long, value_name = "DIR", value_hint = clap::ValueHint::DirPath)]
    pub report_dir: Option<PathBuf>,
    /// Do not run the preflight checks first (`homestak preflight`).
    #[arg(long)]
    pub skip_preflight: bool,
    #[command(flatten)]
    pub lifecycle: LifecycleArgs,
}

impl SeedArgs {
    /// The preflight checks, unless skipped or a dry run (which changes
    /// nothing).
    async fn preflight(&self, global: &GlobalArgs) -> anyhow::Result<()> {
        if self.skip_preflight || self.dry_run {
            return Ok(());
        }
        super::preflight::gate(&self.target, global).await
    }
}

/// Arguments of `homestak create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub seed: SeedArgs,
}

/// Arguments of `homestak destroy`.
#[derive(Debug, clap::Args)]
pub struct DestroyArgs {
    #[command(flatten)]
    pub seed: SeedArgs,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// Arguments of `homestak test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub seed: SeedArgs,
    /// Leave the VMs in place afterwards (for debugging).
    #[arg(long)]
    pub keep: bool,
}

fn json_global(global: &GlobalArgs, seed: &SeedArgs) -> GlobalArgs {
    let mut g = global.clone();
    g.json = global.json || seed.json_output;
    g
}

/// `create`: converge without pruning (the verb only adds).
pub async fn create(args: CreateArgs, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let global = json_global(global, &args.seed);
    let options = args.seed.lifecycle.options(reconcile::Options {
        prune: false,
        ..reconcile::Options::default()
    });
    let mut report = RunReport::new("create");
    let run = Run {
        mode: Mode::Apply,
        dry_run: args.seed.dry_run,
        confirm: false,
    };
    let result = match args.seed.preflight(&global).await {
        Ok(()) => converge::converge(&args.seed.target, &global, options, run, &mut report).await,
        Err(err) => Err(err),
    };
    let outcome = converge::settle(result, &mut report, &global);
    finish(&report, &global, &args.seed)?;
    Ok(outcome)
}

/// `destroy`: remove every VM the manifest owns on the host.
pub async fn destroy(args: DestroyArgs, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let global = json_global(global, &args.seed);
    let mut report = RunReport::new("destroy");
    let run = Run {
        mode: Mode::Destroy,
        dry_run: args.seed.dry_run,
        confirm: !args.yes,
    };
    let result = match args.seed.preflight(&global).await {
        Ok(()) => {
            converge::converge(
                &args.seed.target,
                &global,
                args.seed.lifecycle.options(reconcile::Options::default()),
                run,
                &mut report,
            )
            .await
        }
        Err(err) => Err(err),
    };
    let outcome = converge::settle(result, &mut report, &global);
    finish(&report, &global, &args.seed)?;
    Ok(outcome)
}

/// `test`: create (SSH verified), then destroy; destroy also runs after a
/// failed create unless `cleanup_on_failure: false` or `--keep`.
pub async fn test(args: TestArgs, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let global = json_global(global, &args.seed);
    let mut report = RunReport::new("test");
    let create = Run {
        mode: Mode::Apply,
        dry_run: args.seed.dry_run,
        confirm: false,
    };
    let options = args.seed.lifecycle.options(reconcile::Options {
        prune: false,
        // `test` checks SSH whatever the manifest says.
        verify_ssh: Some(true),
        ..reconcile::Options::default()
    });
    if let Err(err) = args.seed.preflight(&global).await {
        let outcome = converge::settle(Err(err), &mut report, &global);
        finish(&report, &global, &args.seed)?;
        return Ok(outcome);
    }
    let created =
        converge::converge(&args.seed.target, &global, options, create, &mut report).await;
    let created_ok = matches!(created, Ok(Outcome::Converged));
    if args.seed.dry_run {
        let outcome = converge::settle(created, &mut report, &global);
        finish(&report, &global, &args.seed)?;
        return Ok(outcome);
    }
    let cleanup = created_ok || cleanup_on_failure(&args.seed.target, &global);
    if !args.keep && cleanup {
        let destroy = Run {
            mode: Mode::Destroy,
            dry_run: false,
            confirm: false,
        };
        let mut destroy_report = RunReport::new("destroy");
        let destroyed = converge::converge(
            &args.seed.target,
            &global,
            args.seed.lifecycle.options(reconcile::Options::default()),
            destroy,
            &mut destroy_report,
        )
        .await;
        report.phases.extend(
            destroy_report
                .phases
                .into_iter()
                .map(|(name, status, d)| (format!("destroy/{name}"), status, d)),
        );
        report.duration += destroy_report.duration;
        match destroyed {
            Ok(Outcome::Converged) => {}
            Ok(_) => report.fail(format!(
                "destroy: {}",
                destroy_report.error.unwrap_or_default()
            )),
            Err(err) => report.fail(format!("destroy: {err:#}")),
        }
    }
    if let Err(err) = &created {
        report.fail(format!("create: {err:#}"));
        if !global.json {
            super::output::print_error(err);
        }
    }
    finish(&report, &global, &args.seed)?;
    // Whether both halves passed; an interrupted half fails the test.
    Ok(if report.passed() {
        Outcome::Converged
    } else {
        Outcome::Failed
    })
}

fn cleanup_on_failure(target: &TargetArgs, global: &GlobalArgs) -> bool {
    homestak_core::site::discover::find(global.site_config.as_deref())
        .ok()
        .and_then(|root| super::target::read_manifest(&target.source, &root).ok())
        .is_none_or(|m| m.settings().cleanup_on_failure)
}

fn finish(report: &RunReport, global: &GlobalArgs, seed: &SeedArgs) -> anyhow::Result<()> {
    let dir = super::target::report_dir(seed.report_dir.as_ref(), seed.target.state_dir.as_ref());
    converge::finish_report(report, global, Some(&dir))
}
