//! `homestak preflight -H HOST [-M NAME | --manifest-file PATH |
//! --manifest-json JSON] [--json]`: checks what a run on HOST needs (see
//! [`homestak_engine::preflight`]) and changes nothing. Exit 0 when every
//! check passed or was skipped, 1 when one failed.

use std::path::PathBuf;
use std::sync::Arc;

use super::manifest::Source;
use super::target::{read_manifest, state_dir};
use super::{GlobalArgs, Outcome};
use homestak_core::site::Site;
use homestak_engine::preflight::{self, Input};
use homestak_engine::reconcile::Setup;

/// Arguments of `homestak preflight`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The host to check: nodes/HOST.yaml in the site-config.
    #[arg(short = 'H', long = "host", value_name = "HOST")]
    pub host: String,
    /// The manifest a run would converge (enables the images and nested
    /// virtualization checks).
    #[command(flatten)]
    pub source: Source,
    /// Accept any TLS certificate from a PVE API without `api_fingerprint:`.
    #[arg(long)]
    pub insecure: bool,
    /// Where homestak keeps its known SSH host keys.
    #[arg(long, value_name = "DIR", value_hint = clap::ValueHint::DirPath, env = "HOMESTAK_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Private key for SSH to the host (default: ssh_key in nodes/HOST.yaml,
    /// else ~/.ssh/id_rsa).
    #[arg(long, value_name = "PATH", value_hint = clap::ValueHint::FilePath, env = "HOMESTAK_SSH_KEY")]
    pub ssh_key: Option<PathBuf>,
}

/// Runs `homestak preflight`.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let root = homestak_core::site::discover::find(global.site_config.as_deref())?;
    let site = Arc::new(Site::load(&root)?);
    let manifest = if args.source.is_empty() {
        None
    } else {
        Some(read_manifest(&args.source, &root)?)
    };
    let setup = Setup {
        insecure: args.insecure,
        state_dir: state_dir(args.state_dir.as_ref()),
        open_store: false,
        ssh_key: args.ssh_key.clone(),
        ..Setup::default()
    };
    let report = preflight::run(Input {
        site,
        host: &args.host,
        manifest: manifest.as_ref(),
        setup: &setup,
    })
    .await;
    if global.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(if report.ok {
        Outcome::Converged
    } else {
        Outcome::Failed
    })
}

/// The preflight a verb runs before it starts (`--skip-preflight` skips
/// it, as a dry run does).
pub async fn gate(target: &super::target::TargetArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let root = homestak_core::site::discover::find(global.site_config.as_deref())?;
    let manifest = super::target::adjust(read_manifest(&target.source, &root)?, target)?;
    let setup = Setup {
        insecure: target.insecure,
        state_dir: state_dir(target.state_dir.as_ref()),
        open_store: false,
        ssh_key: target.ssh_key.clone(),
        ..Setup::default()
    };
    gate_on(&root, &target.host, Some(&manifest), &setup).await
}

/// Runs the checks on `host`; on a failure, their table on stderr and an
/// error naming the failed checks and their fixes (it ends in the run's
/// report).
pub async fn gate_on(
    root: &std::path::Path,
    host: &str,
    manifest: Option<&homestak_core::model::Manifest>,
    setup: &Setup,
) -> anyhow::Result<()> {
    let site = Arc::new(Site::load(root)?);
    let report = preflight::run(Input {
        site,
        host,
        manifest,
        setup,
    })
    .await;
    if report.ok {
        return Ok(());
    }
    eprint!("{}", report.text());
    let failed: Vec<String> = report
        .failures()
        .map(|c| match &c.fix {
            Some(fix) => format!("{} ({}; fix: {fix})", c.name, c.detail),
            None => format!("{} ({})", c.name, c.detail),
        })
        .collect();
    anyhow::bail!(
        "preflight failed for host {host}: {}; --skip-preflight runs anyway",
        failed.join("; ")
    )
}
