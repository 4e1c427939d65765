//! `homestak sim`: runs the built-in Proxmox VE 8.4 API simulator until
//! SIGINT or SIGTERM.
//!
//! `--site-config DIR` (the global flag) writes `nodes/<node>.yaml` and the
//! token into `secrets.yaml` of that site-config so homestak can use the
//! simulator at once, and gives it an SSH key that the simulated VMs and
//! the node's own SSH server accept.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

use super::{GlobalArgs, Outcome};
use homestak_sim::{self as sim, Simulator};

/// Arguments of `homestak sim`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to serve HTTPS on (loopback only; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8006", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Write {"url","node","token","fingerprint","root_password"} here once
    /// the simulator accepts connections (mode 0600; removed on exit).
    #[arg(long, value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub ready_file: Option<PathBuf>,
    /// YAML file declaring nodes, storages, images, latency, SSH port, faults.
    #[arg(long, value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub config: Option<PathBuf>,
    /// Multiply every latency (1.0 = realistic, 0.01 = 100× faster).
    #[arg(long, default_value_t = 1.0, value_name = "F")]
    pub time_scale: f64,
    /// Persist the world in this file and reload it on start.
    #[arg(long, value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub state: Option<PathBuf>,
    /// Seed for reproducible faults.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
}

/// Where `--site-config` keeps the SSH key for the simulated VMs.
const DEMO_KEY: &str = ".homestak-sim/id_ed25519";

/// The SSH key `--site-config` gives the site-config for the simulated
/// VMs and the node itself (generated once, kept in `.homestak-sim/` of
/// the site-config, which ignores itself in git), so `verify_ssh` and
/// joining split images work against the simulator out of the box.
fn demo_identity(dir: &std::path::Path) -> anyhow::Result<(homestak_ssh::Identity, PathBuf)> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot find the site-config {}", dir.display()))?;
    let path = dir.join(DEMO_KEY);
    if path.exists() {
        return Ok((homestak_ssh::Identity::load(&path)?, path));
    }
    let identity = homestak_ssh::Identity::generate_to(&path)?;
    if let Some(parent) = path.parent() {
        let ignore = parent.join(".gitignore");
        std::fs::write(&ignore, "*\n")
            .with_context(|| format!("cannot write {}", ignore.display()))?;
    }
    Ok((identity, path))
}

/// Puts the demo key in the site-config: `ssh_keys` (cloud-init installs
/// it in new VMs) and the node's `ssh_key`.
fn grant_demo_ssh(
    dir: &std::path::Path,
    node: &str,
    identity: &homestak_ssh::Identity,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("site-config {}", dir.display()))?;
    sim::site_config::grant_ssh(
        &dir,
        node,
        "homestak-sim",
        &identity.public_key_openssh(),
        path,
    )
    .with_context(|| format!("cannot give the site-config {} an SSH key", dir.display()))?;
    Ok(())
}

/// Runs `homestak sim`.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let mut config = match &args.config {
        Some(path) => sim::Config::load(path)?,
        None => sim::Config::with_defaults(),
    };
    config.listen = Some(args.listen);
    config.time_scale = args.time_scale;
    config.seed = args.seed;
    config.state_file = args.state.clone();
    let datastore = config
        .nodes
        .first()
        .and_then(|n| {
            n.storages
                .iter()
                .find(|s| s.content.iter().any(|c| c == "images"))
        })
        .map(|s| s.id.clone())
        .unwrap_or_else(|| "local".into());
    let ssh_port = config.ssh_port;
    // The site-config's key may also log in to the node itself.
    let demo_key = match &global.site_config {
        Some(dir) => {
            let (identity, path) = demo_identity(dir)?;
            config.host_ssh_keys.push(identity.public_key_openssh());
            Some((identity, path))
        }
        None => None,
    };
    let handle = Simulator::start(config).await?;
    let info = handle.ready_info();

    if let Some(dir) = &global.site_config {
        sim::site_config::update(dir, &info, &datastore, ssh_port).with_context(|| {
            format!(
                "cannot point the site-config {} at the simulator",
                dir.display()
            )
        })?;
        if let Some((identity, path)) = &demo_key {
            grant_demo_ssh(dir, &info.node, identity, path)?;
        }
    }
    if let Some(path) = &args.ready_file {
        let text = serde_json::to_vec(&info)?;
        sim::write_private(path, &text)
            .with_context(|| format!("cannot write the ready file {}", path.display()))?;
    }
    let token_id = info.token.rsplit_once('=').map_or("", |(id, _)| id);
    if global.json {
        super::output::print_json(&serde_json::json!({
            "url": info.url, "node": info.node, "fingerprint": info.fingerprint, "token_id": token_id,
            "host_ssh": info.host_ssh,
        }))?;
    } else {
        println!(
            "homestak sim: Proxmox VE 8.4 API on {} (node {})",
            info.url, info.node
        );
        println!("  fingerprint {}", info.fingerprint);
        println!("  VM SSH port {ssh_port} (each VM on its own loopback address, see /_sim/vms)");
        match (handle.host_ssh(), handle.host_ssh_error()) {
            (Some(addr), _) => {
                println!("  node SSH    root@{addr} (storages under /var/lib/vz, see /_sim/host)")
            }
            (None, Some(error)) => println!("  node SSH    not running: {error}"),
            (None, None) => {}
        }
        if args.ready_file.is_none() && global.site_config.is_none() {
            // No other channel carries the credentials of this throwaway host.
            println!("  token       {}", info.token);
            println!("  root@pam password {}", info.root_password);
        } else {
            println!(
                "  token id    {token_id} (secret in the ready file / site-config secrets.yaml)"
            );
        }
        println!("Stop with Ctrl-C.");
    }

    wait_for_signal().await?;
    handle.shutdown().await?;
    if let Some(path) = &args.ready_file {
        let _ = std::fs::remove_file(path);
    }
    Ok(Outcome::Converged)
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}
