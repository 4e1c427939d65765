//! `user-setup` (the Python tool's "Create homestak user"): the homestak
//! user on a host (`--local`, `--remote IP`, `--host NAME`), named by
//! `--homestak-user` (default `homestak`), with password-less sudo and the
//! site's SSH keys (`secrets.yaml` `ssh_keys`). The phases are
//! [`crate::onboard::user`]'s functions; a second run changes nothing.

use std::time::Duration;

use homestak_ssh as ssh;

use super::{Ctx, Needs, PhaseDef, PhaseError, PhaseFuture, ScenarioDef, Where};
use crate::onboard::user::{self, DEFAULT_USER};

pub const USER_SETUP: ScenarioDef = ScenarioDef {
    name: "user-setup",
    runtime: Duration::from_secs(30),
    description: "Create homestak user",
    needs: Needs::Target,
    phases,
};

fn phases() -> Vec<PhaseDef> {
    vec![
        PhaseDef {
            name: "ensure_user",
            description: "the user exists with a home, a login shell, in group sudo",
            run: ensure_user,
        },
        PhaseDef {
            name: "setup_sudo",
            description: "password-less sudo through /etc/sudoers.d/<user> (checked by visudo)",
            run: setup_sudo,
        },
        PhaseDef {
            name: "setup_ssh_keys",
            description: "the site's SSH keys in ~<user>/.ssh/authorized_keys",
            run: setup_ssh_keys,
        },
        PhaseDef {
            name: "verify_user",
            description: "log in as the user and run sudo -n true",
            run: verify_user,
        },
    ]
}

fn name(ctx: &Ctx) -> String {
    ctx.inputs
        .homestak_user
        .clone()
        .unwrap_or_else(|| DEFAULT_USER.to_string())
}

fn failed(name: &str, err: user::Error) -> PhaseError {
    PhaseError::caused(format!("user {name}"), err)
}

/// `done`'s list, or that nothing changed.
fn report(name: &str, host: &str, done: &[String], unchanged: &str) -> String {
    if done.is_empty() {
        format!("{unchanged} on {host} (no change)")
    } else {
        format!("user {name} on {host}: {}", done.join("; "))
    }
}

pub(super) fn ensure_user(ctx: &mut Ctx) -> PhaseFuture<'_> {
    Box::pin(async move {
        let name = name(ctx);
        user::check_name(&name).map_err(|e| failed(&name, e))?;
        let shell = ctx.shell().await?;
        let dest = shell.destination().clone();
        let done = user::ensure_user(&*shell, &dest.user, &name)
            .await
            .map_err(|e| failed(&name, e))?;
        ctx.context.set("homestak_user", name.clone());
        ctx.context.set("remote_ip", dest.host.to_string());
        Ok(report(
            &name,
            &dest.host,
            &done,
            &format!("user {name} exists"),
        ))
    })
}

pub(super) fn setup_sudo(ctx: &mut Ctx) -> PhaseFuture<'_> {
    Box::pin(async move {
        let name = name(ctx);
        let shell = ctx.shell().await?;
        let dest = shell.destination().clone();
        let changed = user::setup_sudo(&*shell, &dest.user, &name)
            .await
            .map_err(|e| failed(&name, e))?;
        let path = user::sudoers_path(&name);
        Ok(if changed {
            format!("wrote {path} on {} (checked by visudo -cf)", dest.host)
        } else {
            format!("{path} is in place on {} (no change)", dest.host)
        })
    })
}

/// The site's SSH keys, each checked.
fn site_keys(ctx: &Ctx) -> Result<Vec<String>, PhaseError> {
    let root = ctx.site_root()?;
    let site = homestak_core::site::Site::load(root)
        .map_err(|e| PhaseError::caused("loading the site-config", e))?;
    let secrets = site.secrets();
    let values = secrets.strict().map_err(|e| PhaseError::Failed {
        what: format!("{} is unreadable", secrets.path().display()),
        hint: Some("fix its YAML, or decrypt it (sops -d -i secrets.yaml)".to_string()),
        source: Some(Box::new(SharedError(e))),
    })?;
    let Some(values) = values else {
        return Err(PhaseError::failed(
            format!("{} is missing", secrets.path().display()),
            Some("decrypt or create it, with the site's public keys under ssh_keys".to_string()),
        ));
    };
    let named: Vec<(String, String)> = values
        .ssh_keys
        .iter()
        .map(|(n, k)| (n.to_string(), k.clone()))
        .collect();
    user::site_keys(&named).map_err(|e| PhaseError::caused("secrets.yaml ssh_keys", e))
}

pub(super) fn setup_ssh_keys(ctx: &mut Ctx) -> PhaseFuture<'_> {
    Box::pin(async move {
        let name = name(ctx);
        let keys = site_keys(ctx)?;
        let shell = ctx.shell().await?;
        let dest = shell.destination().clone();
        let done = user::setup_ssh_keys(&*shell, &dest.user, &name, &keys)
            .await
            .map_err(|e| failed(&name, e))?;
        Ok(report(
            &name,
            &dest.host,
            &done,
            &format!("the site's {} SSH keys are in place for {name}", keys.len()),
        ))
    })
}

fn verify_user(ctx: &mut Ctx) -> PhaseFuture<'_> {
    Box::pin(async move {
        let name = name(ctx);
        let place = Where::of(&ctx.inputs).map_err(PhaseError::Target)?;
        let (destination, key) = match place {
            Where::Local => {
                // No SSH to oneself: switch to the user, then ask sudo.
                let shell = ctx.shell().await?;
                let line = format!("sudo -n -u {} sudo -n true", ssh::quote(&name));
                shell
                    .exec_ok(&super::super::onboard::remote::as_root(
                        &shell.destination().user,
                        &line,
                    ))
                    .await
                    .map_err(|e| {
                        PhaseError::caused(format!("user {name}: sudo -n true as {name}"), e)
                    })?;
                return Ok(format!("{name} runs sudo -n true here"));
            }
            Where::Ssh { destination, key } => (destination, key),
        };
        let identity = ssh::Identity::load(&key).map_err(|source| {
            PhaseError::from(super::ShellError::Key {
                path: key.clone(),
                source,
            })
        })?;
        let keys = site_keys(ctx)?;
        if !user::has_key(&keys, &identity.public_key_openssh()) {
            return Err(failed(
                &name,
                user::Error::KeyNotInSite {
                    key: key.display().to_string(),
                    user: name.clone(),
                },
            ));
        }
        let known = ssh::KnownHosts::new(ctx.inputs.state_dir.join("known_hosts"));
        let target = ssh::Target::new(
            ssh::Destination::new(&destination.host, destination.port, &name),
            identity,
            ssh::HostKeyPolicy::AcceptNew(known),
        );
        let transport = ssh::RusshTransport::new(ssh::ClientOptions::default());
        user::verify_user(&transport, &target)
            .await
            .map_err(|e| failed(&name, e))?;
        Ok(format!(
            "logged in to {} as {name}; sudo -n true works",
            destination.host
        ))
    })
}

/// A shared YAML error as a `source` (the site keeps it behind an `Arc`).
#[derive(Debug)]
struct SharedError(std::sync::Arc<homestak_base::yaml::Error>);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedError {}
