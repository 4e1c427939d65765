//! `pve-setup`: a Debian host becomes a PVE host homestak can use. Proxmox
//! VE is installed when missing (with a reboot), the host configured, the
//! API token made, and `nodes/<host>.yaml` written from its `hosts/` entry
//! ([`crate::onboard`], the same code the `pve` node controller runs).
//!
//! The host is `--host NAME` (its address from `hosts/NAME.yaml` or
//! `nodes/NAME.yaml`) or `--remote IP` (named after its host name). Not
//! `--local`: the install reboots the machine the scenario runs on.

use std::sync::Arc;
use std::time::Duration;

use homestak_base::secret::Secret;
use homestak_core::site::Site;
use homestak_ssh as ssh;

use super::{Ctx, Needs, PhaseDef, PhaseError, PhaseFuture, ScenarioDef, Where};
use crate::onboard::{self, Changed, Remote, node_config, pve, token};

pub const PVE_SETUP: ScenarioDef = ScenarioDef {
    name: "pve-setup",
    runtime: Duration::from_secs(180),
    description: "Install PVE (if needed), configure the host, create the API token, write nodes/<host>.yaml",
    needs: Needs::Target,
    phases,
};

fn phases() -> Vec<PhaseDef> {
    vec![
        PhaseDef {
            name: "ensure_pve",
            description: "Ensure PVE is installed and running (installs and reboots when missing)",
            run: ensure_pve,
        },
        PhaseDef {
            name: "setup_pve",
            description: "Configure the host (no enterprise repository)",
            run: setup_pve,
        },
        PhaseDef {
            name: "create_api_token",
            description: "Create homestak's API token (root@pam!homestak), or keep the site's working one",
            run: create_api_token,
        },
        PhaseDef {
            name: "generate_node_config",
            description: "Write nodes/<host>.yaml and the token in secrets.yaml",
            run: generate_node_config,
        },
    ]
}

/// How long an install with its reboot may take (the Python tool's
/// "Extended" tier).
const INSTALL_WAIT: Duration = Duration::from_secs(1200);

/// The secret `create_api_token` hands to `generate_node_config`.
const TOKEN: &str = "pve-setup.token";

/// The host as onboarding reaches it.
fn remote(ctx: &Ctx) -> Result<Remote, PhaseError> {
    let place = Where::of(&ctx.inputs).map_err(PhaseError::Target)?;
    let Where::Ssh { destination, key } = place else {
        return Err(PhaseError::failed(
            "pve-setup cannot run with --local: installing PVE reboots the machine it runs on",
            Some("run it from another machine with --host NAME or --remote IP".to_string()),
        ));
    };
    let identity = ssh::Identity::load(&key)
        .map_err(|source| PhaseError::from(super::ShellError::Key { path: key, source }))?;
    let known = ssh::KnownHosts::new(ctx.inputs.state_dir.join("known_hosts"));
    Ok(Remote {
        host: ctx
            .inputs
            .host
            .clone()
            .unwrap_or_else(|| destination.host.to_string()),
        transport: Arc::new(ssh::RusshTransport::new(ssh::ClientOptions::default())),
        target: ssh::Target::new(destination, identity, ssh::HostKeyPolicy::AcceptNew(known)),
    })
}

fn failed(err: onboard::Error) -> PhaseError {
    PhaseError::caused("onboarding the host failed", err)
}

fn changed(c: Changed, yes: &str, no: &str) -> String {
    match c {
        Changed::Yes => yes.to_string(),
        Changed::No => no.to_string(),
    }
}

fn ensure_pve(ctx: &mut Ctx) -> PhaseFuture<'_> {
    Box::pin(async move {
        let remote = remote(ctx)?;
        ctx.context.set("remote_ip", remote.address().to_string());
        let done = pve::ensure_pve(&remote, INSTALL_WAIT)
            .await
            .map_err(failed)?;
        Ok(changed(
            done,
            "Proxmox VE installed; rebooted into it",
            "PVE already installed and running - skipped",
        ))
    })
}

fn setup_pve(ctx: &mut Ctx) -> PhaseFuture<'_> {
    Box::pin(async move {
        let remote = remote(ctx)?;
        let session = remote.connect().await.map_err(failed)?;
        let done = pve::setup_pve(&remote, &session).await.map_err(failed)?;
        Ok(changed(
            done,
            "enterprise repository removed",
            "already configured",
        ))
    })
}

/// The host's name in the site-config: `--host`, else its PVE node name.
async fn host_name(ctx: &Ctx, s: &dyn ssh::Session, user: &str) -> Result<String, PhaseError> {
    if let Some(host) = &ctx.inputs.host {
        return Ok(host.clone());
    }
    match token::node_name(s, user).await {
        Ok(name) => Ok(name.into()),
        Err(e @ token::Error::NodeName { .. }) => Err(PhaseError::Failed {
            what: "the host has no usable host name".into(),
            hint: Some("set one with hostnamectl, or pass --host NAME".into()),
            source: Some(Box::new(e)),
        }),
        Err(e) => Err(PhaseError::caused("cannot read the host's name", e)),
    }
}

fn create_api_token(ctx: &mut Ctx) -> PhaseFuture<'_> {
    Box::pin(async move {
        let remote = remote(ctx)?;
        let s = remote.connect().await.map_err(failed)?;
        let user = remote.user().to_string();
        let host = host_name(ctx, &*s, &user).await?;
        let exists = token::exists(&*s, &user)
            .await
            .map_err(|e| PhaseError::caused("cannot list the host's API tokens", e))?;
        // A token the site already holds and the host still has is kept:
        // other tools may use it.
        let known = ctx
            .inputs
            .site_root
            .as_deref()
            .and_then(|root| Site::load(root).ok())
            .and_then(|site| site.secrets().lenient().api_token(&host).cloned());
        if exists && let Some(secret) = known {
            ctx.secrets.insert(TOKEN, secret);
            return Ok(format!(
                "token root@pam!homestak kept (secrets.yaml api_tokens.{host})"
            ));
        }
        let secret: Secret = token::create(&*s, &user, exists)
            .await
            .map_err(|e| PhaseError::caused("cannot create the API token", e))?;
        ctx.secrets.insert(TOKEN, secret);
        Ok(if exists {
            "token root@pam!homestak replaced (the site had no value for it)".into()
        } else {
            "token root@pam!homestak created".into()
        })
    })
}

fn generate_node_config(ctx: &mut Ctx) -> PhaseFuture<'_> {
    Box::pin(async move {
        let root = ctx.site_root()?.to_path_buf();
        let remote = remote(ctx)?;
        let s = remote.connect().await.map_err(failed)?;
        let user = remote.user().to_string();
        let host = host_name(ctx, &*s, &user).await?;
        let Some(secret) = ctx.secrets.get(TOKEN).cloned() else {
            return Err(PhaseError::failed(
                "no API token to write",
                Some("run the create_api_token phase (do not --skip it)".to_string()),
            ));
        };
        let node = token::node_name(&*s, &user)
            .await
            .map_err(|e| PhaseError::caused("cannot read the PVE node name", e))?;
        let fingerprint = token::fingerprint(&*s, &user)
            .await
            .map_err(|e| PhaseError::caused("cannot read the API certificate's fingerprint", e))?;
        let storages = token::pvesh_get(&*s, &user, &format!("/nodes/{node}/storage"))
            .await
            .map_err(|e| PhaseError::caused("cannot list the host's storages", e))?;
        let datastore = token::pick_datastore(&storages, "local-zfs").ok_or_else(|| {
            PhaseError::failed(
                "the host has no storage for VM disks",
                Some("add a storage with `images` content, then run again".to_string()),
            )
        })?;
        let facts = node_config::NodeFacts {
            node,
            ip: remote.address().to_string(),
            fingerprint,
            datastore,
            ssh_user: user,
            ssh_port: remote.target.destination.port,
        };
        let wrote = node_config::write_node_config(&root, &host, &facts, &secret)
            .map_err(|e| PhaseError::caused("cannot write the node config", e))?;
        let file = root.join("nodes").join(format!("{host}.yaml"));
        ctx.context
            .set("generated_node_config", file.display().to_string());
        ctx.context.set("pve_host", host.clone());
        Ok(if wrote {
            format!("wrote nodes/{host}.yaml and api_tokens.{host}")
        } else {
            format!("nodes/{host}.yaml already up to date")
        })
    })
}
