//! What the converging commands share: which manifest, which host, and the
//! engine (site-config, store, PVE clients) that runs it.

use std::path::PathBuf;
use std::sync::Arc;

use super::GlobalArgs;
use super::manifest::Source;
use homestak_base::id::{NodeName, VmId};
use homestak_core::model::{Loader, Manifest};
use homestak_core::site::Site;
use homestak_engine::hostlease::Policy;
use homestak_engine::reconcile::{Engine, Setup};

/// Manifest and host flags of `plan`, `reconcile`, `status` and the seed
/// verbs.
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    #[command(flatten)]
    pub source: Source,
    /// The PVE host to converge: nodes/HOST.yaml in the site-config.
    #[arg(short = 'H', long = "host", value_name = "HOST")]
    pub host: String,
    /// Accept any TLS certificate from the PVE API of a host without
    /// `api_fingerprint:` (a pin is always checked). For throw-away labs
    /// only; prefer `api_fingerprint:` in nodes/HOST.yaml.
    #[arg(long)]
    pub insecure: bool,
    /// Where homestak keeps its store and known SSH host keys.
    #[arg(long, value_name = "DIR", value_hint = clap::ValueHint::DirPath, env = "HOMESTAK_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Private key for SSH to the VMs and to the host (joining split
    /// images) (default: ssh_key in nodes/HOST.yaml, else ~/.ssh/id_rsa).
    #[arg(long, value_name = "PATH", value_hint = clap::ValueHint::FilePath, env = "HOMESTAK_SSH_KEY")]
    pub ssh_key: Option<PathBuf>,
    /// Override a node's vmid, NAME=ID (repeatable), e.g. `--vm-id test=99990`.
    #[arg(long, value_name = "NAME=ID", value_parser = vm_id)]
    pub vm_id: Vec<(NodeName, VmId)>,
    /// Only the first N levels of the manifest.
    #[arg(long, value_name = "N")]
    pub depth: Option<usize>,
}

/// `NAME=ID` of `--vm-id`: a node name and a vmid PVE accepts.
pub fn vm_id(text: &str) -> Result<(NodeName, VmId), String> {
    let (name, id) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=ID (e.g. test=99990)"))?;
    let id: u32 = id
        .trim()
        .parse()
        .map_err(|_| format!("{id:?} in {text:?} is not a vmid"))?;
    let id = VmId::new(i128::from(id)).map_err(|e| e.to_string())?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("{text:?} names no node"));
    }
    let name = NodeName::new(name).map_err(|e| e.to_string())?;
    Ok((name, id))
}

/// The manifest with `--depth` and `--vm-id` applied.
pub fn adjust(manifest: Manifest, args: &TargetArgs) -> anyhow::Result<Manifest> {
    let mut manifest = match args.depth {
        Some(depth) => manifest.limit_depth(depth),
        None => manifest,
    };
    for (name, vmid) in &args.vm_id {
        manifest.set_vmid(name, *vmid)?;
    }
    Ok(manifest)
}

/// The state directory: `--state-dir`, else the one `homestak serve` uses
/// ([`homestak_engine::state_dir::default`]), so every command agrees.
pub fn state_dir(explicit: Option<&PathBuf>) -> PathBuf {
    explicit
        .cloned()
        .unwrap_or_else(homestak_engine::state_dir::default)
}

/// Where run reports go: `--report-dir`, else `reports/` in the state
/// directory (not wherever the command happened to run).
pub fn report_dir(explicit: Option<&PathBuf>, state: Option<&PathBuf>) -> PathBuf {
    explicit
        .cloned()
        .unwrap_or_else(|| state_dir(state).join("reports"))
}

/// An engine ready to run the manifest, and what it runs it on.
pub struct Prepared {
    pub engine: Engine,
    pub site: Arc<Site>,
    pub manifest: Arc<Manifest>,
}

/// What a command does with the tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Plan or report: the store is read when available.
    Read,
    /// Change the world: the store is required.
    Converge,
}

/// Whether the store-in-use note was printed.
static STORE_NOTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Loads site-config and manifest and opens the engine for `command` (the
/// verb, named in the host lease a converging run takes).
pub fn prepare(
    args: &TargetArgs,
    global: &GlobalArgs,
    purpose: Purpose,
    command: &str,
) -> anyhow::Result<Prepared> {
    let root = homestak_core::site::discover::find(global.site_config.as_deref())?;
    let site = Arc::new(Site::load(&root)?);
    let manifest = Arc::new(adjust(read_manifest(&args.source, &root)?, args)?);
    let setup = Setup {
        insecure: args.insecure,
        state_dir: state_dir(args.state_dir.as_ref()),
        open_store: true,
        ssh_key: args.ssh_key.clone(),
        binary: None,
        lease: Policy {
            command: command.to_string(),
            ..Policy::default()
        },
    };
    let engine = match Engine::open(setup.clone()) {
        // Plan and status only read the store; when the daemon holds it,
        // go on without (addresses and adoption state are then unknown).
        Err(homestak_engine::reconcile::Error::StoreOpen { source, dir })
            if source.is_locked() && purpose == Purpose::Read =>
        {
            // Once per process: `status --watch` prepares on every read.
            if !STORE_NOTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                eprintln!(
                    "note: the store in {} is in use by another homestak process (the daemon?); \
                     answering without it",
                    dir.display()
                );
            }
            Engine::open(Setup {
                open_store: false,
                ..setup
            })?
        }
        other => other?,
    };
    Ok(Prepared {
        engine,
        site,
        manifest,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_id_gives_a_typed_node_and_vmid() {
        let (name, id) = vm_id(" test = 99990").unwrap();
        assert_eq!(name, "test");
        assert_eq!(id.get(), 99990);
    }

    #[test]
    fn vm_id_refuses_what_the_manifest_or_pve_would() {
        let err = |text: &str| vm_id(text).unwrap_err();
        assert_eq!(err("test"), "\"test\" is not NAME=ID (e.g. test=99990)");
        assert_eq!(err("test=x"), "\"x\" in \"test=x\" is not a vmid");
        assert_eq!(
            err("test=5"),
            "vmid 5 is out of range: PVE accepts 100 to 999999999"
        );
        assert_eq!(err(" =100"), "\" =100\" names no node");
        // Once a lookup that failed later; now refused as it is parsed.
        let bad = err("a_b=100");
        assert!(bad.starts_with("'a_b' is not a valid node name"), "{bad}");
    }
}
