//! `ensure_pve` and `setup_pve` over SSH.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::remote::{install, root};
use super::{Changed, Error, Remote};
use crate::controllers::pve::inner::File;
use homestak_ssh::{self as ssh, quote};

/// Proxmox's repository for Debian, and the packages Proxmox's guide
/// installs with it.
const PVE_REPO: &str = "http://download.proxmox.com/debian/pve";
const PACKAGES: &str = "proxmox-ve postfix open-iscsi chrony";
/// Where the repository goes (Proxmox's file names).
const SOURCES_TRIXIE: &str = "/etc/apt/sources.list.d/pve-install-repo.sources";
const LIST_BOOKWORM: &str = "/etc/apt/sources.list.d/pve-install-repo.list";
const KEYRING_TRIXIE: &str = "/usr/share/keyrings/proxmox-archive-keyring.gpg";
const KEY_TRIXIE_URL: &str =
    "https://enterprise.proxmox.com/debian/proxmox-archive-keyring-trixie.gpg";
const KEY_BOOKWORM: &str = "/etc/apt/trusted.gpg.d/proxmox-release-bookworm.gpg";
const KEY_BOOKWORM_URL: &str = "https://enterprise.proxmox.com/debian/proxmox-release-bookworm.gpg";
/// What the package ships and `setup_pve` removes.
const ENTERPRISE: [&str; 2] = [
    "/etc/apt/sources.list.d/pve-enterprise.list",
    "/etc/apt/sources.list.d/pve-enterprise.sources",
];

/// What the host runs now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// `proxmox-ve` is installed.
    pub installed: bool,
    /// The running kernel is Proxmox's (the host booted since).
    pub pve_kernel: bool,
    /// The Debian release (`trixie`, `bookworm`).
    pub codename: String,
}

fn ssh_err(remote: &Remote, action: &str) -> impl FnOnce(ssh::Error) -> Error {
    let (host, action) = (remote.host.clone(), action.to_string());
    move |source| Error::Ssh {
        host,
        action,
        source,
    }
}

/// Looks at the host: package, kernel, release.
pub async fn look(remote: &Remote, s: &dyn ssh::Session) -> Result<Found, Error> {
    let line =
        "dpkg-query -W -f '${Status}' proxmox-ve || true; echo; uname -r; cat /etc/os-release";
    let out = s
        .exec_ok(&ssh::Command::shell(line))
        .await
        .map_err(ssh_err(remote, "look for Proxmox VE"))?
        .stdout_text();
    let mut lines = out.lines();
    let installed = lines
        .next()
        .is_some_and(|l| l.trim() == "install ok installed");
    let pve_kernel = lines.next().is_some_and(|l| l.trim().ends_with("-pve"));
    let codename = lines
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|c| c.trim().trim_matches('"').to_string())
        .unwrap_or_default();
    Ok(Found {
        installed,
        pve_kernel,
        codename,
    })
}

/// `/etc/hosts` with `name` on `ip` (and on no other address).
pub fn hosts_with(text: &str, name: &str, ip: &str) -> String {
    let mut out = String::new();
    let mut done = false;
    for line in text.lines() {
        let body = line.split('#').next().unwrap_or("");
        let mut words = body.split_whitespace();
        let addr = words.next();
        let names: Vec<&str> = words.collect();
        let ours = names
            .iter()
            .any(|w| *w == name || w.split('.').next() == Some(name));
        match addr {
            Some(a) if a == ip && ours => {
                done = true;
                out.push_str(line);
            }
            Some(a) if ours => {
                let kept: Vec<&str> = names
                    .iter()
                    .copied()
                    .filter(|w| *w != name && w.split('.').next() != Some(name))
                    .collect();
                if kept.is_empty() {
                    continue;
                }
                out.push_str(&format!("{a} {}", kept.join(" ")));
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    if !done {
        out.push_str(&format!("{ip} {name}\n"));
    }
    out
}

/// Installs Proxmox VE unless it runs; reboots into it and waits up to
/// `wait` for SSH and the API. `Changed::No` on a host that runs PVE.
pub async fn ensure_pve(remote: &Remote, wait: Duration) -> Result<Changed, Error> {
    let s = remote.connect().await?;
    let user = remote.user().to_string();
    let found = look(remote, &*s).await?;
    if found.installed && found.pve_kernel {
        return Ok(Changed::No);
    }
    if !found.installed {
        install_pve(remote, &*s, &user, &found.codename).await?;
    }
    // Into the Proxmox kernel; the session drops with the reboot.
    let _ = s
        .exec(&super::remote::as_root(&user, "reboot"), &mut |_, _| {})
        .await;
    let _ = s.close().await;
    drop(s);
    wait_back(remote, wait).await?;
    Ok(Changed::Yes)
}

async fn install_pve(
    remote: &Remote,
    s: &dyn ssh::Session,
    user: &str,
    codename: &str,
) -> Result<(), Error> {
    let (repo_file, repo, key, url) = match codename {
        "trixie" => (
            SOURCES_TRIXIE,
            format!(
                "Types: deb\nURIs: {PVE_REPO}\nSuites: trixie\nComponents: pve-no-subscription\nSigned-By: {KEYRING_TRIXIE}\n"
            ),
            KEYRING_TRIXIE,
            KEY_TRIXIE_URL,
        ),
        "bookworm" => (
            LIST_BOOKWORM,
            format!("deb [arch=amd64] {PVE_REPO} bookworm pve-no-subscription\n"),
            KEY_BOOKWORM,
            KEY_BOOKWORM_URL,
        ),
        other => {
            return Err(Error::Host {
                host: remote.host.clone(),
                what: format!("runs Debian {other:?}"),
                hint: "Proxmox VE installs on Debian 13 (trixie) or 12 (bookworm)",
            });
        }
    };
    // pve-cluster needs the host name on the host's address.
    let name = super::token::node_name(s, user)
        .await
        .map_err(|source| Error::Token {
            host: remote.host.clone(),
            source,
        })?;
    let hosts = root(s, user, "cat /etc/hosts")
        .await
        .map_err(ssh_err(remote, "read /etc/hosts"))?;
    let fixed = hosts_with(&hosts, name.as_str(), remote.address());
    let mut files = vec![File {
        path: repo_file.into(),
        bytes: repo.into_bytes(),
        mode: 0o644,
    }];
    if fixed != hosts {
        files.push(File {
            path: "/etc/hosts".into(),
            bytes: fixed.into_bytes(),
            mode: 0o644,
        });
    }
    install(s, user, &files)
        .await
        .map_err(ssh_err(remote, "write the Proxmox repository"))?;
    let line = format!(
        "mkdir -p {dir} && wget -q {url} -O {key} && apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y {PACKAGES}",
        dir = quote(key.rsplit_once('/').map_or("/", |(d, _)| d)),
        url = quote(url),
        key = quote(key),
    );
    root(s, user, &line)
        .await
        .map_err(ssh_err(remote, "install proxmox-ve"))?;
    Ok(())
}

/// Waits for SSH with the Proxmox kernel, then for the API's port.
async fn wait_back(remote: &Remote, wait: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(20);
    let timeout = |what| Error::Timeout {
        host: remote.host.clone(),
        what,
        waited: wait,
    };
    loop {
        if let Ok(s) = remote.connect().await {
            let booted = look(remote, &*s).await.is_ok_and(|f| f.pve_kernel);
            let _ = s.close().await;
            if booted {
                break;
            }
        }
        if Instant::now() >= deadline {
            return Err(timeout("SSH with the Proxmox kernel"));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
    let api = format!("{}:8006", remote.address());
    while tokio::net::TcpStream::connect(&api).await.is_err() {
        if Instant::now() >= deadline {
            return Err(timeout("the PVE API"));
        }
        tokio::time::sleep(pause).await;
    }
    Ok(())
}

/// Configures an installed host for homestak: no enterprise repository
/// (it fails `apt-get update` without a subscription). `Changed::No` when
/// there was nothing to do.
pub async fn setup_pve(remote: &Remote, s: &Arc<dyn ssh::Session>) -> Result<Changed, Error> {
    let user = remote.user().to_string();
    let test = ENTERPRISE
        .iter()
        .map(|f| format!("test -e {f}"))
        .collect::<Vec<_>>()
        .join(" || ");
    let present = s
        .exec(&ssh::Command::shell(test), &mut |_, _| {})
        .await
        .map_err(ssh_err(remote, "look for the enterprise repository"))?
        .success();
    if !present {
        return Ok(Changed::No);
    }
    let line = format!("rm -f {} && apt-get update", ENTERPRISE.join(" "));
    root(&**s, &user, &line)
        .await
        .map_err(ssh_err(remote, "remove the enterprise repository"))?;
    Ok(Changed::Yes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_name_moves_to_the_hosts_address() {
        let cloud = "127.0.0.1 localhost\n127.0.1.1 hv1.localdomain hv1\n::1 localhost\n";
        assert_eq!(
            hosts_with(cloud, "hv1", "192.0.2.5"),
            "127.0.0.1 localhost\n::1 localhost\n192.0.2.5 hv1\n"
        );
        let done = "127.0.0.1 localhost\n192.0.2.5 hv1\n";
        assert_eq!(hosts_with(done, "hv1", "192.0.2.5"), done);
    }
}
