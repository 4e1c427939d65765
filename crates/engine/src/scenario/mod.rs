//! Scenarios: the Python tool's standalone workflows (`pve-setup`,
//! `user-setup`, `packer-*`, …) as named lists of verb_noun phases.
//!
//! A scenario is data ([`ScenarioDef`]): its phases are plain async
//! functions over a [`Ctx`], run in order by [`run`]. Phases may be
//! skipped (`--skip`), the overall timeout is checked between phases (as
//! the Python tool did), and what a phase learns goes into the
//! [`Context`], which `--context-file` carries to the next run.
//!
//! - [`registry`]: every scenario, and the retired names with their
//!   migration hints.
//! - [`context`]: the string-keyed values phases share and chained runs
//!   save and load.
//! - [`shell`]: where a scenario's commands run (this machine, or a host
//!   over SSH).
//! - One module per scenario: [`bootstrap_install`], [`packer`] (the five
//!   `packer-*`), [`pve_setup`], [`spec_vm`], [`user_setup`].

pub mod bootstrap_install;
pub mod context;
pub mod packer;
pub mod pve_setup;
pub mod registry;
pub mod shell;
pub mod spec_vm;
pub mod user_setup;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use homestak_api::Outcome;
use homestak_base::BoxFuture;
use homestak_base::id::{NodeName, VmId};

pub use context::{Context, ContextFileError};
/// How a phase ended: the executor's steps end the same way.
pub use homestak_api::PhaseStatus;
pub use registry::{Lookup, SCENARIOS, find};
pub use shell::{Shell, ShellError, Where};

/// What a phase returns: the message shown in the report.
pub type PhaseFuture<'a> = BoxFuture<'a, Result<String, PhaseError>>;

/// One step of a scenario.
pub struct PhaseDef {
    /// verb_noun: `ensure_pve`, `create_api_token`.
    pub name: &'static str,
    pub description: &'static str,
    pub run: for<'a> fn(&'a mut Ctx) -> PhaseFuture<'a>,
}

impl std::fmt::Debug for PhaseDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhaseDef")
            .field("name", &self.name)
            .finish()
    }
}

/// What the scenario acts on, checked before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// `--local`, `--remote IP` or `--host NAME`.
    Target,
    /// `--host NAME` (a PVE node with an API).
    Host,
    /// `--vm-ip IP`.
    VmIp,
    /// Nothing beyond the site-config.
    Nothing,
}

/// A named workflow.
#[derive(Debug)]
pub struct ScenarioDef {
    /// noun-verb: `pve-setup`.
    pub name: &'static str,
    /// The runtime estimate `--list` shows.
    pub runtime: Duration,
    pub description: &'static str,
    pub needs: Needs,
    pub phases: fn() -> Vec<PhaseDef>,
}

impl ScenarioDef {
    /// The runtime estimate as the Python tool printed it: `~30s`, `~3m`.
    pub fn runtime_label(&self) -> String {
        let secs = self.runtime.as_secs();
        if secs < 60 {
            format!("~{secs}s")
        } else {
            format!("~{}m", secs.div_ceil(60))
        }
    }
}

/// The run's inputs: the command line's flags, typed.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// `--host NAME`: nodes/NAME.yaml, else hosts/NAME.yaml.
    pub host: Option<String>,
    /// `--local`: run on this machine.
    pub local: bool,
    /// `--remote IP`: a host by address (SSH as `--ssh-user`, default root).
    pub remote: Option<String>,
    /// `--vm-ip IP` (bootstrap-install).
    pub vm_ip: Option<String>,
    /// `--source URL`: the `homestak serve` to install from.
    pub source: Option<String>,
    /// `--templates a,b` (packer).
    pub templates: Vec<String>,
    /// `--homestak-user NAME`.
    pub homestak_user: Option<String>,
    /// `--packer-release TAG`.
    pub packer_release: Option<String>,
    /// `--env NAME`.
    pub env: Option<String>,
    /// `--vm-id NAME=ID`, repeatable.
    pub vm_ids: Vec<(NodeName, VmId)>,
    /// `-M NAME`: a manifest of the site-config (spec-vm-push-roundtrip).
    pub manifest: Option<String>,
    /// `--manifest-file PATH`: a manifest file.
    pub manifest_file: Option<PathBuf>,
    /// The site-config directory, when one was found.
    pub site_root: Option<PathBuf>,
    /// Where homestak keeps its store and known hosts.
    pub state_dir: PathBuf,
    /// `--ssh-key`: the private key for SSH (default: the host's `ssh_key`,
    /// else `~/.ssh/id_rsa`).
    pub ssh_key: Option<PathBuf>,
    /// `--ssh-user` for `--remote` and `--vm-ip` (default root).
    pub ssh_user: Option<String>,
    /// `--ssh-port` for `--remote` and `--vm-ip` (default 22).
    pub ssh_port: Option<u16>,
    /// Accept any PVE certificate (explicit opt-in).
    pub insecure: bool,
    /// `--yes`: no confirmation for destructive phases.
    pub yes: bool,
}

/// What a phase sees: the inputs, the shared context, and the target's
/// shell once opened.
pub struct Ctx {
    pub inputs: Inputs,
    pub context: Context,
    /// Secrets phases hand to later phases (a token made in one, written
    /// in the next): never saved, printed or reported.
    pub secrets: std::collections::BTreeMap<&'static str, homestak_base::secret::Secret>,
    shell: Option<Arc<Shell>>,
}

impl Ctx {
    pub fn new(inputs: Inputs, context: Context) -> Ctx {
        Ctx {
            inputs,
            context,
            secrets: Default::default(),
            shell: None,
        }
    }

    /// The shell of the scenario's target (`--local`, `--remote`, `--host`,
    /// else `--vm-ip`), opened on first use and kept for later phases.
    pub async fn shell(&mut self) -> Result<Arc<Shell>, PhaseError> {
        if let Some(shell) = &self.shell {
            return Ok(Arc::clone(shell));
        }
        let place = Where::of(&self.inputs).map_err(PhaseError::Target)?;
        let shell = shell::open(&place, &self.inputs).await?;
        self.shell = Some(Arc::clone(&shell));
        Ok(shell)
    }

    /// Drops the open shell (after a reboot, the next phase reconnects).
    pub fn forget_shell(&mut self) {
        self.shell = None;
    }

    /// Replaces the shell (feature `testing`: phases open their own).
    #[cfg(any(test, feature = "testing"))]
    pub fn set_shell(&mut self, shell: Arc<Shell>) {
        self.shell = Some(shell);
    }

    /// The site-config directory, or why a phase cannot go on without one.
    pub fn site_root(&self) -> Result<&std::path::Path, PhaseError> {
        self.inputs
            .site_root
            .as_deref()
            .ok_or(PhaseError::NoSiteConfig)
    }
}

/// Why a phase failed. Each says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum PhaseError {
    #[error("no target: {0}")]
    Target(String),
    #[error("no site-config found: pass --site-config DIR or set HOMESTAK_SITE_CONFIG")]
    NoSiteConfig,
    #[error(transparent)]
    Shell(Box<ShellError>),
    /// A phase's own failure: what failed, and what to do next.
    #[error("{what}{}", hint.as_deref().map(|h| format!("; {h}")).unwrap_or_default())]
    Failed {
        what: String,
        hint: Option<String>,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl From<ShellError> for PhaseError {
    fn from(err: ShellError) -> Self {
        PhaseError::Shell(Box::new(err))
    }
}

impl PhaseError {
    /// A failure with no underlying error.
    pub fn failed(what: impl Into<String>, hint: impl Into<Option<String>>) -> PhaseError {
        PhaseError::Failed {
            what: what.into(),
            hint: hint.into(),
            source: None,
        }
    }

    /// A failure caused by `source`.
    pub fn caused(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> PhaseError {
        PhaseError::Failed {
            what: what.into(),
            hint: None,
            source: Some(Box::new(source)),
        }
    }
}

/// One phase's result, in run order.
#[derive(Debug, Clone)]
pub struct PhaseResult {
    pub name: &'static str,
    pub status: PhaseStatus,
    pub duration: Duration,
    pub message: String,
}

/// How a run goes.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Phases not to run (`--skip`), by name.
    pub skip: Vec<String>,
    /// The whole run's bound, checked before each phase starts.
    pub timeout: Option<Duration>,
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct ScenarioRun {
    pub scenario: &'static str,
    /// Converged when every phase passed or was skipped; Failed; or
    /// Interrupted by a signal.
    pub outcome: Outcome,
    pub duration: Duration,
    pub phases: Vec<PhaseResult>,
    /// The first failure, in a line (with its causes).
    pub error: Option<String>,
}

/// `--skip` names that are no phase of `def`: the run refuses them rather
/// than running a phase the user meant to skip.
pub fn unknown_skips(def: &ScenarioDef, skip: &[String]) -> Vec<String> {
    let phases = (def.phases)();
    skip.iter()
        .filter(|s| !phases.iter().any(|p| p.name == s.as_str()))
        .cloned()
        .collect()
}

/// Checks the scenario's target flags before anything runs.
pub fn check_needs(def: &ScenarioDef, inputs: &Inputs) -> Result<(), String> {
    let named = |flag: &str| format!("scenario {} needs {flag}", def.name);
    match def.needs {
        Needs::Nothing => Ok(()),
        Needs::Host if inputs.host.is_none() => Err(named("--host NAME")),
        Needs::VmIp if inputs.vm_ip.is_none() && inputs.remote.is_none() => {
            Err(named("--vm-ip IP"))
        }
        Needs::Target => Where::of(inputs)
            .map(|_| ())
            .map_err(|why| format!("{}: {why}", named("--local, --remote IP or --host NAME"))),
        _ => Ok(()),
    }
}

/// Runs `def`'s phases in order; `on_phase` hears each as it starts
/// (`None`) and ends. Stops at the first failure, at the timeout, or when
/// `cancel` resolves (the phase in flight is dropped at its next await).
pub async fn run(
    def: &ScenarioDef,
    ctx: &mut Ctx,
    options: &RunOptions,
    cancel: impl Future<Output = ()>,
    on_phase: &mut (dyn FnMut(&'static str, Option<&PhaseResult>) + Send),
) -> ScenarioRun {
    let started = Instant::now();
    let mut cancel = std::pin::pin!(cancel);
    let mut out = ScenarioRun {
        scenario: def.name,
        outcome: Outcome::Converged,
        duration: Duration::ZERO,
        phases: Vec::new(),
        error: None,
    };
    for phase in (def.phases)() {
        let elapsed = started.elapsed();
        if let Some(limit) = options.timeout
            && elapsed >= limit
        {
            let message = format!(
                "timeout exceeded ({:.1}s >= {}s) before phase {}; raise --timeout",
                elapsed.as_secs_f64(),
                limit.as_secs(),
                phase.name
            );
            let result = PhaseResult {
                name: phase.name,
                status: PhaseStatus::Failed,
                duration: Duration::ZERO,
                message: message.clone(),
            };
            on_phase(phase.name, Some(&result));
            out.phases.push(result);
            out.outcome = Outcome::Failed;
            out.error = Some(message);
            break;
        }
        if options.skip.iter().any(|s| s == phase.name) {
            let result = PhaseResult {
                name: phase.name,
                status: PhaseStatus::Skipped,
                duration: Duration::ZERO,
                message: "skipped (--skip)".into(),
            };
            on_phase(phase.name, Some(&result));
            out.phases.push(result);
            continue;
        }
        on_phase(phase.name, None);
        let began = Instant::now();
        let outcome = tokio::select! {
            result = (phase.run)(ctx) => Some(result),
            () = &mut cancel => None,
        };
        let interrupted = outcome.is_none();
        let (status, message) = match outcome {
            Some(Ok(message)) => (PhaseStatus::Passed, message),
            Some(Err(err)) => (PhaseStatus::Failed, homestak_base::error_chain(&err)),
            None => (PhaseStatus::Failed, "interrupted".to_string()),
        };
        let result = PhaseResult {
            name: phase.name,
            status,
            duration: began.elapsed(),
            message,
        };
        on_phase(phase.name, Some(&result));
        let failed = status == PhaseStatus::Failed;
        if failed {
            out.outcome = if interrupted {
                Outcome::Interrupted
            } else {
                Outcome::Failed
            };
            out.error = Some(format!("{}: {}", phase.name, result.message));
        }
        out.phases.push(result);
        if failed {
            break;
        }
    }
    out.duration = started.elapsed();
    out
}

#[cfg(test)]
mod tests;
