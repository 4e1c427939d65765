//! Packages in a simulated Debian VM: `apt-get`, `dpkg`, `dpkg-query`,
//! `pveversion` and `wget` of Proxmox's archive keys, strict enough that
//! installing Proxmox VE on Debian in the wrong order fails as on a real
//! host.
//!
//! What is kept, in the VM's root (so it survives restarts):
//!
//! - `/var/lib/dpkg/status`: the installed packages, as dpkg's stanzas
//!   (`Package`, `Status: install ok installed`, `Version`). First boot
//!   writes the cloud image's few that matter here; a PVE image also has
//!   `proxmox-ve`.
//! - `/etc/os-release`: the release (`VERSION_CODENAME=trixie` for Debian
//!   13, `bookworm` for a `debian-12` image).
//! - `/var/lib/apt/lists/<host>_<path>_dists_<suite>_InRelease`: what
//!   `apt-get update` fetched.
//!
//! Repositories are read from `/etc/apt/sources.list` and
//! `/etc/apt/sources.list.d/*.list` (one-line `deb [signed-by=…] URI SUITE
//! COMPONENT…`) and `*.sources` (deb822: `Types`, `URIs`, `Suites`,
//! `Components`, `Signed-By`). The Debian archive is always configured, as
//! on the cloud images. The Proxmox VE repository must be
//! `http://download.proxmox.com/debian/pve`, the VM's suite, component
//! `pve-no-subscription`, and signed by Proxmox's key: the `Signed-By` file,
//! or without one, `/etc/apt/trusted.gpg.d/proxmox-release-<suite>.gpg`.
//! The convention homestak follows is Proxmox's own for Debian 13 (deb822
//! `pve-install-repo.sources`, key in
//! `/usr/share/keyrings/proxmox-archive-keyring.gpg`). Key files are checked
//! against the simulated key `wget` fetches from
//! `https://enterprise.proxmox.com/debian/…` (the simulator has no network:
//! these URLs are all `wget` knows).
//!
//! `apt-get install proxmox-ve` needs root, `-y` (no terminal answers the
//! prompt), a prior `apt-get update` of the Proxmox repository, and the
//! host name resolving to the VM's address in `/etc/hosts` (pve-cluster's
//! postinst fails otherwise). It writes the enterprise repository the real
//! package ships (`pve-enterprise.sources` on trixie, `.list` on bookworm),
//! which makes the next `apt-get update` fail with 401 until it is removed.
//! The nested PVE tier starts at the next boot (the guest module reads
//! [`pve_installed`]).

use std::collections::BTreeMap;
use std::sync::Weak;

use super::shims::Shim;
use crate::runtime::Shared;
use crate::ssh::{Context, Program, VmRoot};
use homestak_ssh::BoxFuture;

mod sources;
use sources::{Repo, is_pve_repo, list_file, repos, signed};

pub const STATUS: &str = "/var/lib/dpkg/status";
pub const OS_RELEASE: &str = "/etc/os-release";
const LISTS: &str = "/var/lib/apt/lists";
const SOURCES_D: &str = "/etc/apt/sources.list.d";
pub const PVE_REPO: &str = "http://download.proxmox.com/debian/pve";
const ENTERPRISE_REPO: &str = "https://enterprise.proxmox.com/debian/pve";
const DEBIAN_REPO: &str = "http://deb.debian.org/debian";
pub const KEYRING: &str = "/usr/share/keyrings/proxmox-archive-keyring.gpg";

/// What a cloud image has installed (of what matters here).
const BASE: &[(&str, &str)] = &[
    ("base-files", "13.8"),
    ("ca-certificates", "20250419"),
    ("cloud-init", "25.1.4-1"),
    ("openssh-server", "1:10.0p1-7"),
    ("openssl", "3.5.1-1"),
    ("qemu-guest-agent", "1:10.0.2+ds-2"),
    ("sudo", "1.9.16p2-3"),
    ("wget", "1.25.0-2"),
];

/// Packages of the Debian archive `apt-get install` finds (besides BASE).
const DEBIAN: &[&str] = &[
    "chrony",
    "curl",
    "git",
    "gnupg",
    "jq",
    "open-iscsi",
    "postfix",
    "python3",
];

/// Packages only the Proxmox VE repository has.
const PVE: &[&str] = &["proxmox-ve", "pve-manager", "proxmox-default-kernel"];

/// The simulated Proxmox release key of `suite`, as `wget` fetches it: an
/// OpenPGP public-key packet header followed by a name (keys have no
/// real signatures to check here).
pub fn release_key(suite: &str) -> Vec<u8> {
    let mut key = vec![0x99, 0x02, 0x0d, 0x04];
    key.extend_from_slice(format!("homestak-sim Proxmox {suite} Release Key").as_bytes());
    key
}

/// The URLs `wget` serves, and the suite of each key.
fn known_url(url: &str) -> Option<&'static str> {
    match url {
        "https://enterprise.proxmox.com/debian/proxmox-archive-keyring-trixie.gpg" => {
            Some("trixie")
        }
        "https://enterprise.proxmox.com/debian/proxmox-release-bookworm.gpg" => Some("bookworm"),
        _ => None,
    }
}

async fn read(root: &VmRoot, guest: &str) -> Option<String> {
    let path = root.resolve("/", guest).ok()?;
    tokio::fs::read_to_string(&path.host).await.ok()
}

async fn write(root: &VmRoot, guest: &str, text: &[u8]) -> std::io::Result<()> {
    let path = root
        .resolve("/", guest)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e.to_string()))?;
    if let Some(dir) = path.host.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    tokio::fs::write(&path.host, text).await
}

/// Installed packages and versions, from dpkg's status file.
async fn installed(root: &VmRoot) -> BTreeMap<String, String> {
    let text = read(root, STATUS).await.unwrap_or_default();
    let mut out = BTreeMap::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        };
        if let (Some(p), Some(s)) = (field("Package"), field("Status"))
            && s == "install ok installed"
        {
            out.insert(p, field("Version").unwrap_or_default());
        }
    }
    out
}

async fn save_installed(root: &VmRoot, packages: &BTreeMap<String, String>) -> std::io::Result<()> {
    let mut text = String::new();
    for (p, v) in packages {
        text.push_str(&format!(
            "Package: {p}\nStatus: install ok installed\nArchitecture: amd64\nVersion: {v}\n\n"
        ));
    }
    write(root, STATUS, text.as_bytes()).await
}

/// Whether `proxmox-ve` is installed in the VM rooted at `root`.
pub async fn pve_installed(root: &VmRoot) -> bool {
    installed(root).await.contains_key("proxmox-ve")
}

/// First boot: the image's release and packages (kept afterwards).
pub(crate) async fn prepare(root: &VmRoot, image: Option<&str>, pve: bool, pve_version: &str) {
    let suite = if image.is_some_and(|i| i.contains("debian-12")) {
        "bookworm"
    } else {
        "trixie"
    };
    for dir in [
        SOURCES_D,
        "/etc/apt/trusted.gpg.d",
        "/usr/share/keyrings",
        LISTS,
    ] {
        if let Ok(path) = root.resolve("/", dir) {
            let _ = tokio::fs::create_dir_all(&path.host).await;
        }
    }
    if read(root, OS_RELEASE).await.is_none() {
        let version = if suite == "bookworm" { "12" } else { "13" };
        let text = format!(
            "PRETTY_NAME=\"Debian GNU/Linux {version} ({suite})\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"{version}\"\nVERSION_CODENAME={suite}\nID=debian\n"
        );
        let _ = write(root, OS_RELEASE, text.as_bytes()).await;
    }
    if read(root, STATUS).await.is_none() {
        let mut packages: BTreeMap<String, String> = BASE
            .iter()
            .map(|(p, v)| (p.to_string(), v.to_string()))
            .collect();
        if pve {
            packages.insert("proxmox-ve".into(), pve_package_version(pve_version));
            packages.insert("pve-manager".into(), pve_version.to_string());
        }
        let _ = save_installed(root, &packages).await;
    }
}

fn pve_package_version(pve_version: &str) -> String {
    let mut parts = pve_version.split('.');
    format!(
        "{}.{}.0",
        parts.next().unwrap_or("8"),
        parts.next().unwrap_or("4")
    )
}

/// The VM's release codename.
async fn codename(root: &VmRoot) -> String {
    read(root, OS_RELEASE)
        .await
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "trixie".into())
}

/// `apt-get`.
pub(crate) struct AptGet(pub Shim);

/// Options `apt-get` takes here.
struct AptArgs {
    yes: bool,
    command: Option<String>,
    packages: Vec<String>,
}

fn parse_apt(args: &[String]) -> Result<AptArgs, String> {
    let mut out = AptArgs {
        yes: false,
        command: None,
        packages: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-y" | "--yes" | "--assume-yes" => out.yes = true,
            "-q" | "-qq" | "--quiet" | "--no-install-recommends" => {}
            "-o" => match it.next().map(String::as_str) {
                Some(
                    "Dpkg::Options::=--force-confdef"
                    | "Dpkg::Options::=--force-confold"
                    | "Dpkg::Options::=--force-confnew",
                ) => {}
                Some(other) => {
                    return Err(format!(
                        "E: The simulated apt-get does not take the option {other}"
                    ));
                }
                None => return Err("E: Option -o requires an argument.".into()),
            },
            flag if flag.starts_with('-') => {
                return Err(format!(
                    "E: Command line option {flag} is not understood in combination with the other options"
                ));
            }
            word if out.command.is_none() => out.command = Some(word.to_string()),
            word => out.packages.push(word.to_string()),
        }
    }
    Ok(out)
}

impl Program for AptGet {
    fn run<'a>(&'a self, args: &'a [String], cx: &'a mut Context) -> BoxFuture<'a, u32> {
        Box::pin(async move {
            let parsed = match parse_apt(args) {
                Ok(p) => p,
                Err(e) => {
                    cx.err(format!("{e}\n")).await;
                    return 100;
                }
            };
            match parsed.command.as_deref() {
                Some("update") if parsed.packages.is_empty() => self.update(cx).await,
                Some("install") if !parsed.packages.is_empty() => {
                    self.install(&parsed.packages, parsed.yes, cx).await
                }
                Some("install") => 0,
                Some(
                    other @ ("update" | "upgrade" | "remove" | "purge" | "dist-upgrade"
                    | "full-upgrade"),
                ) => {
                    cx.err(format!(
                        "E: the simulated apt-get runs only `update` and `install PACKAGE…` (not `{other}` with these operands)\n"
                    ))
                    .await;
                    100
                }
                Some(other) => {
                    cx.err(format!("E: Invalid operation {other}\n")).await;
                    100
                }
                None => {
                    cx.err("E: No operation given (see apt-get(8))\n").await;
                    100
                }
            }
        })
    }
}

impl AptGet {
    fn root(&self) -> &VmRoot {
        &self.0.0.root
    }

    async fn update(&self, cx: &mut Context) -> u32 {
        if cx.user != "root" {
            cx.err("Reading package lists...\nE: Could not open lock file /var/lib/apt/lists/lock - open (13: Permission denied)\nE: Unable to lock directory /var/lib/apt/lists/\n").await;
            return 100;
        }
        let suite = codename(self.root()).await;
        let repos = match repos(self.root(), &suite).await {
            Ok(r) => r,
            Err(e) => {
                cx.err(format!("{e}\nE: The list of sources could not be read.\n"))
                    .await;
                return 100;
            }
        };
        let mut out = String::new();
        let mut errors = String::new();
        for (i, repo) in repos.iter().enumerate() {
            let n = i + 1;
            let release = format!("{} {} InRelease", repo.uri, repo.suite);
            if repo.uri == ENTERPRISE_REPO {
                out.push_str(&format!(
                    "Err:{n} {release}\n  401  Unauthorized [IP: 170.130.165.90 443]\n"
                ));
                errors.push_str(&format!("E: Failed to fetch {}/dists/{}/InRelease  401  Unauthorized [IP: 170.130.165.90 443]\nE: The repository '{} {} InRelease' is not signed.\n", repo.uri, repo.suite, repo.uri, repo.suite));
                continue;
            }
            let known = repo.uri == DEBIAN_REPO || repo.uri == PVE_REPO;
            if !known || (repo.uri == PVE_REPO && repo.suite != suite) {
                out.push_str(&format!(
                    "Ign:{n} {release}\nErr:{n} {} {} Release\n  404  Not Found\n",
                    repo.uri, repo.suite
                ));
                errors.push_str(&format!(
                    "E: The repository '{} {} Release' does not have a Release file.\n",
                    repo.uri, repo.suite
                ));
                continue;
            }
            if repo.uri == PVE_REPO && !signed(self.root(), repo).await {
                out.push_str(&format!("Get:{n} {release} [2,771 B]\nErr:{n} {release}\n  The following signatures couldn't be verified because the public key is not available: NO_PUBKEY 1140AF8F639E0C39\n"));
                errors.push_str(&format!("W: GPG error: {release}: The following signatures couldn't be verified because the public key is not available: NO_PUBKEY 1140AF8F639E0C39\nE: The repository '{} {} InRelease' is not signed.\n", repo.uri, repo.suite));
                continue;
            }
            let _ = write(self.root(), &list_file(repo), release.as_bytes()).await;
            out.push_str(&format!("Get:{n} {release} [2,771 B]\n"));
        }
        out.push_str("Reading package lists...\n");
        cx.out(out).await;
        if errors.is_empty() {
            0
        } else {
            cx.err(format!("{errors}N: Updating from such a repository can't be done securely, and is therefore disabled by default.\n")).await;
            100
        }
    }

    /// Whether `package` can be found: in the fetched lists of a
    /// configured repository that has it.
    async fn locate(&self, package: &str, repos: &[Repo], suite: &str) -> bool {
        let fetched = |repo: &Repo| {
            let file = list_file(repo);
            async move {
                match self.root().resolve("/", &file) {
                    Ok(p) => tokio::fs::metadata(&p.host).await.is_ok(),
                    Err(_) => false,
                }
            }
        };
        for repo in repos {
            let has = if PVE.contains(&package) {
                is_pve_repo(repo, suite)
            } else {
                repo.uri == DEBIAN_REPO
                    && (DEBIAN.contains(&package) || BASE.iter().any(|(p, _)| *p == package))
            };
            if has && fetched(repo).await {
                return true;
            }
        }
        false
    }

    async fn install(&self, packages: &[String], yes: bool, cx: &mut Context) -> u32 {
        if cx.user != "root" {
            cx.err("E: Could not open lock file /var/lib/dpkg/lock-frontend - open (13: Permission denied)\nE: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), are you root?\n").await;
            return 100;
        }
        let suite = codename(self.root()).await;
        let repos = match repos(self.root(), &suite).await {
            Ok(r) => r,
            Err(e) => {
                cx.err(format!("{e}\nE: The list of sources could not be read.\n"))
                    .await;
                return 100;
            }
        };
        cx.out(
            "Reading package lists...\nBuilding dependency tree...\nReading state information...\n",
        )
        .await;
        for p in packages {
            if !self.locate(p, &repos, &suite).await {
                cx.err(format!("E: Unable to locate package {p}\n")).await;
                return 100;
            }
        }
        let mut have = installed(self.root()).await;
        let pve_version = self.pve_version();
        let mut new: Vec<(String, String)> = Vec::new();
        for p in packages {
            if have.contains_key(p) {
                cx.out(format!("{p} is already the newest version.\n"))
                    .await;
                continue;
            }
            let version = match p.as_str() {
                "proxmox-ve" => pve_package_version(&pve_version),
                "pve-manager" => pve_version.clone(),
                _ => "1.0".into(),
            };
            new.push((p.clone(), version));
        }
        if new.iter().any(|(p, _)| p == "proxmox-ve") {
            for dep in ["pve-manager", "proxmox-default-kernel"] {
                if !have.contains_key(dep) && !new.iter().any(|(p, _)| p == dep) {
                    let v = if dep == "pve-manager" {
                        pve_version.clone()
                    } else {
                        "1.1.0".into()
                    };
                    new.push((dep.to_string(), v));
                }
            }
        }
        if new.is_empty() {
            cx.out("0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n")
                .await;
            return 0;
        }
        let names: Vec<&str> = new.iter().map(|(p, _)| p.as_str()).collect();
        cx.out(format!(
            "The following NEW packages will be installed:\n  {}\n0 upgraded, {} newly installed, 0 to remove and 0 not upgraded.\n",
            names.join(" "),
            new.len()
        ))
        .await;
        if !yes {
            cx.out("Do you want to continue? [Y/n] Abort.\n").await;
            return 1;
        }
        if names.contains(&"proxmox-ve")
            && let Err(why) = self.hostname_resolves(cx).await
        {
            cx.out("Setting up pve-cluster ...\n").await;
            cx.err(format!("{why}\ndpkg: error processing package pve-cluster (--configure):\n installed pve-cluster package post-installation script subprocess returned error exit status 255\nErrors were encountered while processing:\n pve-cluster\n pve-manager\n proxmox-ve\nE: Sub-process /usr/bin/dpkg returned an error code (1)\n")).await;
            return 100;
        }
        for (p, v) in &new {
            cx.out(format!("Setting up {p} ({v}) ...\n")).await;
            have.insert(p.clone(), v.clone());
        }
        if names.contains(&"proxmox-ve") {
            // What pve-manager ships: the enterprise repository.
            let (file, text) = if suite == "bookworm" {
                (
                    format!("{SOURCES_D}/pve-enterprise.list"),
                    format!("deb {ENTERPRISE_REPO} {suite} pve-enterprise\n"),
                )
            } else {
                (
                    format!("{SOURCES_D}/pve-enterprise.sources"),
                    format!(
                        "Types: deb\nURIs: {ENTERPRISE_REPO}\nSuites: {suite}\nComponents: pve-enterprise\nSigned-By: {KEYRING}\n"
                    ),
                )
            };
            let _ = write(self.root(), &file, text.as_bytes()).await;
        }
        if let Err(e) = save_installed(self.root(), &have).await {
            cx.err(format!("dpkg: error: cannot write {STATUS}: {e}\n"))
                .await;
            return 100;
        }
        0
    }

    fn pve_version(&self) -> String {
        pve_version(&self.0.0.shared)
    }

    /// pve-cluster's check: the host name maps to the VM's address in
    /// `/etc/hosts`.
    async fn hostname_resolves(&self, cx: &mut Context) -> Result<(), String> {
        let name = read(self.root(), "/etc/hostname")
            .await
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| cx.hostname.clone());
        let hosts = read(self.root(), "/etc/hosts").await.unwrap_or_default();
        let ip = hosts.lines().find_map(|l| {
            let l = l.split('#').next().unwrap_or("");
            let mut words = l.split_whitespace();
            let ip = words.next()?;
            words
                .any(|w| w == name || w.split('.').next() == Some(name.as_str()))
                .then(|| ip.to_string())
        });
        let address = cx.address.map(|a| a.to_string());
        match ip {
            None => Err(format!(
                "hostname lookup '{name}' failed - failed to get address info for: {name}: No address associated with hostname"
            )),
            Some(ip) if Some(&ip) != address.as_ref() => Err(format!(
                "resolved node IP '{ip}' not configured or active for '{name}'"
            )),
            Some(_) => Ok(()),
        }
    }
}

/// The PVE version a tier reports.
fn pve_version(shared: &Weak<Shared>) -> String {
    shared
        .upgrade()
        .map_or_else(|| "8.4.1".to_string(), |s| s.config.pve_version.clone())
}

/// `dpkg -s PKG…` (and `dpkg -l`'s absence: other options fail).
pub(crate) struct Dpkg(pub Shim);

impl Program for Dpkg {
    fn run<'a>(&'a self, args: &'a [String], cx: &'a mut Context) -> BoxFuture<'a, u32> {
        Box::pin(async move {
            let (flag, packages) = match args.split_first() {
                Some((f, rest)) if (f == "-s" || f == "--status") && !rest.is_empty() => (f, rest),
                _ => {
                    cx.err("dpkg: error: the simulated dpkg takes only -s PACKAGE…\n")
                        .await;
                    return 2;
                }
            };
            let _ = flag;
            let have = installed(&self.0.0.root).await;
            let mut status = 0;
            for p in packages {
                match have.get(p) {
                    Some(v) => {
                        cx.out(format!("Package: {p}\nStatus: install ok installed\nArchitecture: amd64\nVersion: {v}\n\n")).await;
                    }
                    None => {
                        cx.err(format!("dpkg-query: package '{p}' is not installed and no information is available\nUse dpkg --info (= dpkg-deb --info) to examine archive files.\n")).await;
                        status = 1;
                    }
                }
            }
            status
        })
    }
}

/// `dpkg-query -W [-f FORMAT] PKG…` with `${Package}`, `${Version}`,
/// `${Status}` (and `\n`) in the format.
pub(crate) struct DpkgQuery(pub Shim);

impl Program for DpkgQuery {
    fn run<'a>(&'a self, args: &'a [String], cx: &'a mut Context) -> BoxFuture<'a, u32> {
        Box::pin(async move {
            let mut show = false;
            let mut format = "${Package}\t${Version}\n".to_string();
            let mut packages = Vec::new();
            let mut it = args.iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "-W" | "--show" => show = true,
                    "-f" => match it.next() {
                        Some(f) => format = f.clone(),
                        None => {
                            cx.err("dpkg-query: error: --showformat needs a value\n")
                                .await;
                            return 2;
                        }
                    },
                    f if f.starts_with("--showformat=") || f.starts_with("-f") && f.len() > 2 => {
                        format = f
                            .strip_prefix("--showformat=")
                            .or_else(|| f.strip_prefix("-f"))
                            .unwrap_or_default()
                            .to_string();
                    }
                    f if f.starts_with('-') => {
                        cx.err(format!("dpkg-query: error: unknown option {f}\n"))
                            .await;
                        return 2;
                    }
                    p => packages.push(p.to_string()),
                }
            }
            if !show || packages.is_empty() {
                cx.err("dpkg-query: error: the simulated dpkg-query takes only -W [-f FORMAT] PACKAGE…\n")
                    .await;
                return 2;
            }
            let have = installed(&self.0.0.root).await;
            let mut status = 0;
            for p in packages {
                match have.get(&p) {
                    Some(v) => {
                        let line = format
                            .replace("${Package}", &p)
                            .replace("${Version}", v)
                            .replace("${Status}", "install ok installed")
                            .replace("\\n", "\n");
                        cx.out(line).await;
                    }
                    None => {
                        cx.err(format!("dpkg-query: no packages found matching {p}\n"))
                            .await;
                        status = 1;
                    }
                }
            }
            status
        })
    }
}

/// `pveversion`: the PVE manager version once `proxmox-ve` is installed.
pub(crate) struct Pveversion(pub Shim);

impl Program for Pveversion {
    fn run<'a>(&'a self, args: &'a [String], cx: &'a mut Context) -> BoxFuture<'a, u32> {
        Box::pin(async move {
            if !pve_installed(&self.0.0.root).await {
                cx.err(format!("sh: 1: {}: not found\n", cx.program)).await;
                return 127;
            }
            if let Some(a) = args.first() {
                cx.err(format!(
                    "Unknown option: {a}\nUSAGE: pveversion [--verbose]\n"
                ))
                .await;
                return 255;
            }
            let version = pve_version(&self.0.0.shared);
            cx.out(format!(
                "pve-manager/{version}/2a5fa54a8503f96d (running kernel: {})\n",
                cx.kernel
            ))
            .await;
            0
        })
    }
}

/// `wget [-q] -O FILE URL`: only Proxmox's release keys (no network).
pub(crate) struct Wget;

impl Program for Wget {
    fn run<'a>(&'a self, args: &'a [String], cx: &'a mut Context) -> BoxFuture<'a, u32> {
        Box::pin(async move {
            let mut output = None;
            let mut url = None;
            let mut it = args.iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "-q" | "--quiet" | "-nv" => {}
                    "-O" | "-qO" => output = it.next().cloned(),
                    a if a.starts_with("--output-document=") => {
                        output = a.strip_prefix("--output-document=").map(String::from);
                    }
                    a if a.starts_with('-') => {
                        cx.err(format!(
                            "wget: unrecognized option '{a}'\nUsage: wget [OPTION]... [URL]...\n"
                        ))
                        .await;
                        return 2;
                    }
                    a if url.is_none() => url = Some(a.to_string()),
                    _ => {
                        cx.err("wget: the simulated wget fetches one URL\n").await;
                        return 2;
                    }
                }
            }
            let Some(url) = url else {
                cx.err("wget: missing URL\n").await;
                return 1;
            };
            let Some(suite) = known_url(&url) else {
                let host = url
                    .split("://")
                    .nth(1)
                    .and_then(|r| r.split('/').next())
                    .unwrap_or(&url);
                cx.err(format!("wget: unable to resolve host address '{host}'\n"))
                    .await;
                return 4;
            };
            let name = url.rsplit('/').next().unwrap_or("index.html").to_string();
            let target = output.unwrap_or(name);
            if target == "-" {
                cx.out(release_key(suite)).await;
                return 0;
            }
            let path = match cx.resolve(&target) {
                Ok(p) => p,
                Err(e) => {
                    cx.err(format!("{target}: {e}\n")).await;
                    return 3;
                }
            };
            if cx.user != "root" && root_only(&path.guest) {
                cx.err(format!("{target}: Permission denied\n")).await;
                return 3;
            }
            if let Some(dir) = path.host.parent()
                && !dir.is_dir()
            {
                cx.err(format!("{target}: No such file or directory\n"))
                    .await;
                return 3;
            }
            match tokio::fs::write(&path.host, release_key(suite)).await {
                Ok(()) => 0,
                Err(e) => {
                    cx.err(format!("{target}: {e}\n")).await;
                    3
                }
            }
        })
    }
}

/// Paths only root may write (the simulator models ownership nowhere
/// else).
pub(crate) fn root_only(guest: &str) -> bool {
    ["/etc/", "/usr/", "/var/lib/", "/boot/", "/root/"]
        .iter()
        .any(|p| guest.starts_with(p))
}

/// Adds `apt-get`, `dpkg`, `dpkg-query`, `pveversion` and `wget`.
pub(crate) fn install(shell: crate::ssh::Shell, shim: &Shim) -> crate::ssh::Shell {
    shell
        .with_program("apt-get", std::sync::Arc::new(AptGet(shim.clone())))
        .with_program("dpkg", std::sync::Arc::new(Dpkg(shim.clone())))
        .with_program("dpkg-query", std::sync::Arc::new(DpkgQuery(shim.clone())))
        .with_program("pveversion", std::sync::Arc::new(Pveversion(shim.clone())))
        .with_program("wget", std::sync::Arc::new(Wget))
}

#[cfg(test)]
mod tests {
    use super::sources::{parse_list, parse_sources};
    use super::*;

    #[test]
    fn one_line_and_deb822_sources_parse() {
        let list = parse_list(
            "# pve\ndeb [arch=amd64 signed-by=/k.gpg] http://download.proxmox.com/debian/pve trixie pve-no-subscription\n",
            "x.list",
        )
        .unwrap();
        assert_eq!(list[0].uri, PVE_REPO);
        assert_eq!(list[0].signed_by.as_deref(), Some("/k.gpg"));
        assert!(is_pve_repo(&list[0], "trixie"));
        assert!(!is_pve_repo(&list[0], "bookworm"));
        let sources = parse_sources(
            "Types: deb\nURIs: http://download.proxmox.com/debian/pve\nSuites: trixie\nComponents: pve-no-subscription\nSigned-By: /usr/share/keyrings/proxmox-archive-keyring.gpg\n",
            "x.sources",
        )
        .unwrap();
        assert!(is_pve_repo(&sources[0], "trixie"));
        assert!(parse_list("deb http://x trixie\n", "y.list").is_err());
        assert!(parse_sources("Types: deb\nURIs: http://x\n", "y.sources").is_err());
    }

    #[test]
    fn apt_get_refuses_unknown_flags() {
        let args: Vec<String> = ["install", "--force-yes", "x"].map(String::from).into();
        assert!(parse_apt(&args).is_err());
        let args: Vec<String> = ["-y", "-q", "install", "proxmox-ve"]
            .map(String::from)
            .into();
        let parsed = parse_apt(&args).unwrap();
        assert!(parsed.yes);
        assert_eq!(parsed.packages, ["proxmox-ve"]);
    }
}
