//! What the converging commands share: which manifest, which host, and the
//! set-up of site-config, PVE client, store and SSH for that tier.

use std::path::PathBuf;
use std::sync::Arc;

use super::GlobalArgs;
use super::manifest::Source;
use crate::model::{Loader, Manifest};
use crate::reconcile::{Setup, Tier};
use crate::site::Site;

/// Manifest and host flags of `plan`, `reconcile`, `status` and the seed
/// verbs.
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    #[command(flatten)]
    pub source: Source,
    /// The PVE host to converge: nodes/HOST.yaml in the site-config.
    #[arg(short = 'H', long = "host", value_name = "HOST")]
    pub host: String,
    /// Accept any TLS certificate from the PVE API. For throw-away labs
    /// only; prefer `api_fingerprint:` in nodes/HOST.yaml.
    #[arg(long)]
    pub insecure: bool,
    /// Where homestak keeps its store and known SSH host keys.
    #[arg(long, value_name = "DIR", env = "HOMESTAK_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Private key for SSH to the VMs (default: ssh_key in nodes/HOST.yaml,
    /// else ~/.ssh/id_rsa).
    #[arg(long, value_name = "PATH", env = "HOMESTAK_SSH_KEY")]
    pub ssh_key: Option<PathBuf>,
}

/// The state directory: `--state-dir`, `$HOMESTAK_STATE_DIR`, then
/// `/var/lib/homestak` for root, else `$XDG_STATE_HOME/homestak` or
/// `~/.local/state/homestak`.
pub fn state_dir(explicit: Option<&PathBuf>) -> PathBuf {
    if let Some(dir) = explicit {
        return dir.clone();
    }
    crate::store::default_state_dir()
}

/// A tier ready to plan or converge, and the manifest for it.
pub struct Prepared {
    pub tier: Tier,
    pub manifest: Manifest,
}

/// Loads site-config and manifest and sets up the tier. `with_store`:
/// open the store (it is locked by one process at a time); `with_ssh`:
/// load the SSH key (needed only to converge with `verify_ssh`).
pub fn prepare(
    args: &TargetArgs,
    global: &GlobalArgs,
    with_store: bool,
    with_ssh: bool,
    force_ssh: bool,
) -> anyhow::Result<Prepared> {
    let root = crate::site::discover::find(global.site_config.as_deref())?;
    let site = Arc::new(Site::load(&root)?);
    let manifest = read_manifest(&args.source, &root)?;
    let setup = Setup {
        insecure: args.insecure,
        state_dir: state_dir(args.state_dir.as_ref()),
        open_store: with_store,
        ssh: with_ssh && (force_ssh || manifest.settings().verify_ssh),
        ssh_key: args.ssh_key.clone(),
    };
    let tier = Tier::open(site, &args.host, &setup)?;
    Ok(Prepared { tier, manifest })
}

/// Reads the manifest named by `-M`, `--manifest-file` or `--manifest-json`.
pub fn read_manifest(source: &Source, site_root: &std::path::Path) -> anyhow::Result<Manifest> {
    let manifest = match (&source.name, &source.manifest_file, &source.manifest_json) {
        (Some(name), _, _) => Loader::new(site_root).load(name)?,
        (None, Some(path), _) => Manifest::from_file(path)?,
        (None, None, Some(json)) => Manifest::from_json(json)?,
        (None, None, None) => {
            anyhow::bail!(
                "name a manifest with -M NAME, --manifest-file PATH or --manifest-json JSON"
            )
        }
    };
    Ok(manifest)
}
