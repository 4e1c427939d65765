//! `bootstrap-install`: homestak installed on a host (`--vm-ip IP`) from
//! this machine's `homestak serve` (`--source URL`): the daemon's
//! `/install.sh` fetches the binary and clones the site-config over the
//! authenticated repos, then the installation is checked.
//!
//! The repo token (`<state>/repo-token`, or `HOMESTAK_REPO_TOKEN`) and the
//! daemon's certificate (`<state>/tls/daemon.crt`) are the daemon's own,
//! read from the state directory it shares with this command; they reach
//! the host as files (mode 0600 for the token), never on a command line.

use std::time::Duration;

use homestak_base::secret::Secret;
use homestak_ssh::{self as ssh, quote};

use super::{Ctx, Needs, PhaseDef, PhaseError, PhaseFuture, ScenarioDef};
use crate::controllers::pve::inner::File;
use crate::onboard::remote;

pub const BOOTSTRAP_INSTALL: ScenarioDef = ScenarioDef {
    name: "bootstrap-install",
    runtime: Duration::from_secs(120),
    description: "Install homestak on a host from this machine's homestak serve, then verify it",
    needs: Needs::VmIp,
    phases,
};

fn phases() -> Vec<PhaseDef> {
    vec![
        PhaseDef {
            name: "verify_source",
            description: "The daemon at --source answers, with the certificate and repo token in the state directory",
            run: verify_source,
        },
        PhaseDef {
            name: "push_credentials",
            description: "Put the repo token header and the daemon's certificate in /etc/homestak",
            run: push_credentials,
        },
        PhaseDef {
            name: "run_installer",
            description: "Fetch /install.sh from the daemon and run it (binary, site-config clone)",
            run: run_installer,
        },
        PhaseDef {
            name: "create_user",
            description: "With --homestak-user: that user, with sudo and the site's SSH keys (user-setup's phases)",
            run: create_user,
        },
        PhaseDef {
            name: "verify_install",
            description: "The installed homestak runs this version and loads the site-config",
            run: verify_install,
        },
    ]
}

/// Where the install script and the credentials live on the host (the
/// daemon's `install.sh` reads the same paths).
const HEADER_FILE: &str = "/etc/homestak/source.header";
const CA_FILE: &str = "/etc/homestak/source-ca.pem";
const SCRIPT: &str = "/etc/homestak/install.sh";
const BINARY: &str = "/usr/local/bin/homestak";
const SITE_DIR: &str = "/usr/local/etc/homestak";

const TOKEN: &str = "bootstrap.repo-token";

fn source(ctx: &Ctx) -> Result<String, PhaseError> {
    ctx.inputs
        .source
        .clone()
        .or_else(|| ctx.context.get_str("source"))
        .map(|s| s.trim_end_matches('/').to_string())
        .ok_or_else(|| {
            PhaseError::failed(
                "no daemon to install from",
                Some("pass --source https://ADDRESS:44443 (a running homestak serve) or set HOMESTAK_SOURCE".to_string()),
            )
        })
}

/// The daemon's certificate, from the state directory it shares with us.
fn daemon_cert(ctx: &Ctx) -> Result<String, PhaseError> {
    crate::state_dir::daemon_cert(&ctx.inputs.state_dir).ok_or_else(|| {
        PhaseError::failed(
            format!(
                "no daemon certificate in {}",
                ctx.inputs
                    .state_dir
                    .join(crate::state_dir::DAEMON_CERT)
                    .display()
            ),
            Some("run this where `homestak serve` runs, with its --state-dir".to_string()),
        )
    })
}

fn verify_source(ctx: &mut Ctx) -> PhaseFuture<'_> {
    Box::pin(async move {
        let source = source(ctx)?;
        let pem = daemon_cert(ctx)?;
        let token = match std::env::var("HOMESTAK_REPO_TOKEN") {
            Ok(t) if !t.is_empty() => Secret::new(t),
            _ => {
                let path = ctx.inputs.state_dir.join("repo-token");
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    PhaseError::caused(
                        format!("cannot read the daemon's repo token {}", path.display()),
                        e,
                    )
                })?;
                Secret::new(text.trim())
            }
        };
        let fingerprint = homestak_tls::fingerprint_of_pem(&pem).ok_or_else(|| {
            PhaseError::failed("the daemon's certificate file holds no certificate", None)
        })?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(homestak_tls::pinned_client_config(fingerprint))
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| PhaseError::caused("cannot build an HTTPS client", e))?;
        // The repo token opens the installer: check both at once.
        let answer = client
            .get(format!("{source}/install.sh"))
            .bearer_auth(token.expose())
            .send()
            .await
            .map_err(|e| PhaseError::caused(format!("{source} does not answer"), e))?;
        if !answer.status().is_success() {
            return Err(PhaseError::failed(
                format!("{source}/install.sh answered {}", answer.status()),
                Some("check that --source is this machine's homestak serve and the token is its repo token".to_string()),
            ));
        }
        ctx.secrets.insert(TOKEN, token);
        ctx.context.set("source", source.clone());
        Ok(format!(
            "{source} serves the installer (certificate {fingerprint})"
        ))
    })
}

fn push_credentials(ctx: &mut Ctx) -> PhaseFuture<'_> {
    Box::pin(async move {
        let pem = daemon_cert(ctx)?;
        let token = ctx.secrets.get(TOKEN).cloned().ok_or_else(|| {
            PhaseError::failed(
                "no repo token",
                Some("do not --skip verify_source".to_string()),
            )
        })?;
        let shell = ctx.shell().await?;
        let user = shell.destination().user.to_string();
        let files = [
            File {
                path: HEADER_FILE.into(),
                bytes: format!("Authorization: Bearer {}\n", token.expose()).into_bytes(),
                mode: 0o600,
            },
            File {
                path: CA_FILE.into(),
                bytes: pem.into_bytes(),
                mode: 0o644,
            },
        ];
        remote::install(&*shell, &user, &files)
            .await
            .map_err(|e| PhaseError::caused("cannot put the credentials on the host", e))?;
        if let Some(ip) = ctx.inputs.vm_ip.clone().or(ctx.inputs.remote.clone()) {
            ctx.context.set("vm_ip", ip);
        }
        Ok(format!("{HEADER_FILE} (0600) and {CA_FILE} written"))
    })
}

fn run_installer(ctx: &mut Ctx) -> PhaseFuture<'_> {
    Box::pin(async move {
        let source = source(ctx)?;
        let shell = ctx.shell().await?;
        let user = shell.destination().user.to_string();
        let line = format!(
            "curl -fsS --cacert {CA_FILE} -H @{HEADER_FILE} -o {SCRIPT} {url} && sh {SCRIPT}",
            url = quote(&format!("{source}/install.sh")),
        );
        let command = remote::as_root(&user, &line).timeout(Duration::from_secs(600));
        let out = shell
            .exec(&command, &mut |_, _| {})
            .await
            .map_err(|e| PhaseError::caused("cannot run the installer", e))?;
        if !out.success() {
            let stderr = out.stderr_text();
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            return Err(PhaseError::failed(
                format!(
                    "the installer failed ({}): {}",
                    out.status,
                    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                ),
                Some(
                    "run it by hand on the host to see every line: sh /etc/homestak/install.sh"
                        .to_string(),
                ),
            ));
        }
        let said = out.stdout_text();
        Ok(said
            .lines()
            .last()
            .unwrap_or("installed")
            .trim()
            .to_string())
    })
}

fn create_user(ctx: &mut Ctx) -> PhaseFuture<'_> {
    Box::pin(async move {
        if ctx.inputs.homestak_user.is_none() {
            return Ok("no --homestak-user: no user to create".to_string());
        }
        let made = super::user_setup::ensure_user(ctx).await?;
        let sudo = super::user_setup::setup_sudo(ctx).await?;
        let keys = super::user_setup::setup_ssh_keys(ctx).await?;
        Ok(format!("{made}; {sudo}; {keys}"))
    })
}

fn verify_install(ctx: &mut Ctx) -> PhaseFuture<'_> {
    Box::pin(async move {
        let shell = ctx.shell().await?;
        let user = shell.destination().user.to_string();
        let version = shell
            .exec_ok(&remote::as_root(&user, &format!("{BINARY} --version")))
            .await
            .map_err(|e| PhaseError::caused(format!("{BINARY} does not run"), e))?
            .stdout_text();
        let ours = env!("CARGO_PKG_VERSION");
        if !version.contains(ours) {
            return Err(PhaseError::failed(
                format!("{BINARY} is {:?}, not {ours}", version.trim()),
                Some("run the scenario again (run_installer replaces it)".to_string()),
            ));
        }
        shell
            .exec_ok(&ssh::Command::as_root(
                &user,
                &format!("{BINARY} --site-config {SITE_DIR} config list envs"),
            ))
            .await
            .map_err(|e| {
                PhaseError::caused(format!("the site-config in {SITE_DIR} does not load"), e)
            })?;
        ctx.context.set("homestak_version", ours);
        Ok(format!(
            "{} with the site-config in {SITE_DIR}",
            version.trim()
        ))
    })
}
