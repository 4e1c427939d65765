//! `homestak scenario NAME`: the Python tool's standalone workflows
//! (`./run.sh --scenario NAME`), run by [`homestak_engine::scenario`], with
//! the same report, `--json-output` and `--context-file` as the verbs.

use std::path::PathBuf;
use std::time::Duration;

use super::report::RunReport;
use super::{GlobalArgs, Outcome, output};
use homestak_base::id::{NodeName, VmId};
use homestak_engine::scenario::{
    self, Context, Ctx, Inputs, Lookup, PhaseStatus, RunOptions, SCENARIOS, ScenarioDef,
};

/// Arguments of `homestak scenario`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The scenario to run (`--list` shows them).
    #[arg(value_name = "NAME", required_unless_present = "list")]
    pub name: Option<String>,
    /// List the scenarios: name, runtime estimate, description.
    #[arg(long, alias = "list-scenarios")]
    pub list: bool,
    /// List the scenario's phases and stop.
    #[arg(long)]
    pub list_phases: bool,
    /// Print the phases that would run, and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// A phase not to run (repeatable).
    #[arg(short = 's', long, value_name = "PHASE")]
    pub skip: Vec<String>,
    /// Give up when this many seconds have passed (checked between phases).
    #[arg(short = 't', long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Load the context from FILE before the run and save it after, for
    /// chained runs.
    #[arg(short = 'C', long, value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub context_file: Option<PathBuf>,
    /// Print the run report as JSON on stdout (logs stay on stderr).
    #[arg(long)]
    pub json_output: bool,
    /// Directory for run reports (default: reports/ in the state directory).
    #[arg(short = 'r', long, value_name = "DIR", value_hint = clap::ValueHint::DirPath)]
    pub report_dir: Option<PathBuf>,
    /// Do not run the preflight checks first.
    #[arg(long)]
    pub skip_preflight: bool,
    #[command(flatten)]
    pub inputs: InputArgs,
}

/// What a scenario acts on.
#[derive(Debug, Clone, clap::Args)]
pub struct InputArgs {
    /// The host: nodes/HOST.yaml, else hosts/HOST.yaml (a Debian host
    /// without PVE yet).
    #[arg(short = 'H', long, value_name = "HOST")]
    pub host: Option<String>,
    /// Run on this machine.
    #[arg(long, conflicts_with_all = ["remote", "host"])]
    pub local: bool,
    /// A host by address, over SSH.
    #[arg(long, value_name = "IP")]
    pub remote: Option<String>,
    /// The VM to act on (bootstrap-install).
    #[arg(long, value_name = "IP")]
    pub vm_ip: Option<String>,
    /// The `homestak serve` to install from (bootstrap-install).
    #[arg(long, value_name = "URL", env = "HOMESTAK_SOURCE")]
    pub source: Option<String>,
    /// Packer templates to build, comma-separated.
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub templates: Vec<String>,
    /// The user bootstrap-install and user-setup create.
    #[arg(long, value_name = "USER")]
    pub homestak_user: Option<String>,
    /// Packer release tag for image downloads (default: site.yaml
    /// `defaults.packer_release`, else `latest`).
    #[arg(long, value_name = "TAG")]
    pub packer_release: Option<String>,
    /// Environment (overrides the scenario's default).
    #[arg(short = 'E', long, value_name = "ENV")]
    pub env: Option<String>,
    /// Override a VM's id, NAME=ID (repeatable).
    #[arg(long, value_name = "NAME=ID", value_parser = super::target::vm_id)]
    pub vm_id: Vec<(NodeName, VmId)>,
    /// A manifest of the site-config (spec-vm-push-roundtrip; default: a
    /// built-in one-VM manifest).
    #[arg(
        short = 'M',
        long = "manifest",
        value_name = "NAME",
        conflicts_with = "manifest_file"
    )]
    pub manifest: Option<String>,
    /// A manifest file (spec-vm-push-roundtrip).
    #[arg(long, value_name = "PATH", value_hint = clap::ValueHint::FilePath)]
    pub manifest_file: Option<PathBuf>,
    /// SSH user for --remote and --vm-ip (default root).
    #[arg(long, value_name = "USER")]
    pub ssh_user: Option<String>,
    /// SSH port for --remote and --vm-ip (default 22).
    #[arg(long, value_name = "PORT")]
    pub ssh_port: Option<u16>,
    /// Private key for SSH (default: the host's ssh_key, else ~/.ssh/id_rsa).
    #[arg(long, value_name = "PATH", value_hint = clap::ValueHint::FilePath, env = "HOMESTAK_SSH_KEY")]
    pub ssh_key: Option<PathBuf>,
    /// Where homestak keeps its store and known SSH host keys.
    #[arg(long, value_name = "DIR", value_hint = clap::ValueHint::DirPath, env = "HOMESTAK_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Accept any TLS certificate from a PVE API without a pinned
    /// fingerprint (throw-away labs only).
    #[arg(long)]
    pub insecure: bool,
    /// Do not ask before destructive phases.
    #[arg(short = 'y', long)]
    pub yes: bool,
}

impl InputArgs {
    fn inputs(&self, global: &GlobalArgs) -> Inputs {
        Inputs {
            host: self.host.clone(),
            local: self.local,
            remote: self.remote.clone(),
            vm_ip: self.vm_ip.clone(),
            source: self.source.clone(),
            templates: self.templates.clone(),
            homestak_user: self.homestak_user.clone(),
            packer_release: self.packer_release.clone(),
            env: self.env.clone(),
            vm_ids: self.vm_id.clone(),
            manifest: self.manifest.clone(),
            manifest_file: self.manifest_file.clone(),
            site_root: homestak_core::site::discover::find(global.site_config.as_deref()).ok(),
            state_dir: super::target::state_dir(self.state_dir.as_ref()),
            ssh_key: self.ssh_key.clone(),
            ssh_user: self.ssh_user.clone(),
            ssh_port: self.ssh_port,
            insecure: self.insecure,
            yes: self.yes,
        }
    }
}

/// Runs `homestak scenario`.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let json = global.json || args.json_output;
    if args.list {
        list(json)?;
        return Ok(Outcome::Converged);
    }
    let name = args.name.clone().unwrap_or_default();
    let def = match scenario::find(&name) {
        Lookup::Found(def) => def,
        Lookup::Retired(hint) => {
            anyhow::bail!("scenario {name} was retired (iac-driver v0.47); run instead: {hint}")
        }
        Lookup::Unknown => anyhow::bail!(
            "unknown scenario {name:?}; `homestak scenario --list` shows them ({})",
            scenario::registry::names().join(", ")
        ),
    };
    if args.list_phases {
        list_phases(def, json)?;
        return Ok(Outcome::Converged);
    }
    let unknown = scenario::unknown_skips(def, &args.skip);
    if !unknown.is_empty() {
        anyhow::bail!(
            "--skip names no phase of {}: {}; `homestak scenario {} --list-phases` shows them",
            def.name,
            unknown.join(", "),
            def.name
        );
    }
    if args.dry_run {
        dry_run(def, &args, json)?;
        return Ok(Outcome::Converged);
    }
    let inputs = args.inputs.inputs(global);
    let mut report = RunReport::new(def.name);
    let outcome = execute(def, &args, inputs, json, &mut report).await;
    if let Err(err) = outcome {
        // A failure before the first phase still gets its report.
        report.fail(homestak_base::error_chain(err.as_ref()));
        if !json {
            output::print_error(&err);
        }
    }
    let dir = super::target::report_dir(args.report_dir.as_ref(), args.inputs.state_dir.as_ref());
    super::converge::finish_report(&report, &json_global(global, json), Some(&dir))?;
    Ok(report.outcome)
}

fn json_global(global: &GlobalArgs, json: bool) -> GlobalArgs {
    let mut g = global.clone();
    g.json = json;
    g
}

async fn execute(
    def: &'static ScenarioDef,
    args: &Args,
    inputs: Inputs,
    json: bool,
    report: &mut RunReport,
) -> anyhow::Result<()> {
    scenario::check_needs(def, &inputs).map_err(anyhow::Error::msg)?;
    // Scenarios that use a node's API check it first, as the verbs do.
    if def.needs == scenario::Needs::Host
        && !args.skip_preflight
        && let (Some(host), Some(root)) = (&inputs.host, &inputs.site_root)
    {
        let setup = homestak_engine::reconcile::Setup {
            insecure: inputs.insecure,
            state_dir: inputs.state_dir.clone(),
            open_store: false,
            ssh_key: inputs.ssh_key.clone(),
            ..Default::default()
        };
        super::preflight::gate_on(root, host, None, &setup).await?;
    }
    let mut context = match &args.context_file {
        Some(path) => Context::load(path)?,
        None => Context::new(),
    };
    if let Some(host) = &inputs.host {
        context.set("host", host.clone());
    }
    let options = RunOptions {
        skip: args.skip.clone(),
        timeout: args.timeout.map(Duration::from_secs),
    };
    let mut ctx = Ctx::new(inputs, context);
    let (cancel, signals) = super::converge::interruption()?;
    let mut show = |name: &'static str, done: Option<&scenario::PhaseResult>| {
        if json {
            return;
        }
        match done {
            None => eprintln!("▸ {name} …"),
            Some(r) => eprintln!(
                "  {name}: {} ({:.1}s){}",
                r.status,
                r.duration.as_secs_f64(),
                if r.message.is_empty() {
                    String::new()
                } else {
                    format!(" — {}", r.message)
                }
            ),
        }
    };
    let run = scenario::run(def, &mut ctx, &options, cancel, &mut show).await;
    signals.abort();
    for phase in &run.phases {
        report
            .phases
            .push((phase.name.to_string(), phase.status, phase.duration));
    }
    report.duration = run.duration;
    report.context = ctx.context.as_map().clone();
    if let Some(error) = &run.error {
        report.fail(error.clone());
    }
    if run.outcome == Outcome::Interrupted {
        report.outcome = Outcome::Interrupted;
    }
    if let Some(path) = &args.context_file {
        ctx.context.save(path)?;
    }
    if !json {
        eprintln!(
            "scenario {} {} in {:.1}s",
            def.name,
            report.verdict(),
            run.duration.as_secs_f64()
        );
    }
    Ok(())
}

fn list(json: bool) -> anyhow::Result<()> {
    if json {
        let rows: Vec<_> = SCENARIOS
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "runtime": s.runtime_label(),
                    "expected_runtime_seconds": s.runtime.as_secs(),
                    "description": s.description,
                })
            })
            .collect();
        return output::print_json(&rows);
    }
    let mut text = String::from("Available scenarios:\n");
    let width = SCENARIOS.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in SCENARIOS {
        text.push_str(&format!(
            "  {:<width$}  {:>5}  {}\n",
            s.name,
            s.runtime_label(),
            s.description
        ));
    }
    text.push_str("\nUsage: homestak scenario NAME [--host HOST | --remote IP | --local]\n");
    output::print_text(&text);
    Ok(())
}

fn list_phases(def: &ScenarioDef, json: bool) -> anyhow::Result<()> {
    let phases = (def.phases)();
    if json {
        let rows: Vec<_> = phases
            .iter()
            .map(|p| serde_json::json!({"name": p.name, "description": p.description}))
            .collect();
        return output::print_json(&rows);
    }
    let mut text = format!("Phases for scenario '{}':\n", def.name);
    for p in &phases {
        text.push_str(&format!("  {}: {}\n", p.name, p.description));
    }
    output::print_text(&text);
    Ok(())
}

fn dry_run(def: &ScenarioDef, args: &Args, json: bool) -> anyhow::Result<()> {
    let phases = (def.phases)();
    let skipped = |name: &str| args.skip.iter().any(|s| s == name);
    if json {
        let rows: Vec<_> = phases
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name,
                    "description": p.description,
                    "status": if skipped(p.name) { PhaseStatus::Skipped.to_string() } else { "would_run".into() },
                })
            })
            .collect();
        return output::print_json(&serde_json::json!({
            "scenario": def.name,
            "dry_run": true,
            "timeout_seconds": args.timeout,
            "phases": rows,
        }));
    }
    let mut text = format!("DRY-RUN: {}\n\nPhases to execute:\n", def.name);
    let mut run = 0;
    for p in &phases {
        if skipped(p.name) {
            text.push_str(&format!("  [SKIP] {}: {}\n", p.name, p.description));
        } else {
            run += 1;
            text.push_str(&format!("  [ OK ] {}: {}\n", p.name, p.description));
        }
    }
    text.push_str(&format!(
        "\nSummary: {run} phases to execute, {} to skip\n",
        phases.len() - run
    ));
    if let Some(t) = args.timeout {
        text.push_str(&format!("Timeout: {t}s\n"));
    }
    text.push_str("Mode: DRY-RUN (no changes made). Remove --dry-run to execute the scenario.\n");
    output::print_text(&text);
    Ok(())
}
