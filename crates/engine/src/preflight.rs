//! Preflight: what a run on `--host HOST` needs, checked before anything is
//! changed. Each check has a name, passes, fails (with the fix) or is
//! skipped (with why); [`run`] never fails itself, it reports.
//!
//! - `site_init`: `secrets.yaml` present and decrypted (not a sops file),
//!   `nodes/HOST.yaml` present (a host only in `hosts/` still needs PVE);
//! - `ssh_keys`: every key of `secrets.yaml` `ssh_keys` is an OpenSSH
//!   public key (PVE would refuse it at create time without naming it);
//! - `pve_api`: the API answers `GET /version` with the token (a wrong
//!   token is 401), and `GET /access/permissions` lists `VM.Allocate`,
//!   `Datastore.AllocateSpace` and `Sys.Audit` on some path (an API that
//!   does not answer that call only gets the token checked);
//! - `images`: with a manifest, every image its VMs on this tier use is on
//!   the image storage, or its source holds it (the run downloads it);
//! - `nested_virt`: with a manifest that has `pve` nodes, the host's KVM
//!   allows nested guests (`/sys/module/kvm_{intel,amd}/parameters/nested`
//!   reads `Y` or `1`, over SSH).

use std::sync::Arc;

use serde::Serialize;

use crate::controllers::vm::{mapping, source};
use crate::reconcile::{self, Setup, desired};
use homestak_core::model::Manifest;
use homestak_core::plan::Kind;
use homestak_core::site::{HostConfig, SecretsStatus, Site};
use homestak_pve::Api;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `site_init`, `ssh_keys`, `pve_api`, `images` or `nested_virt`.
    pub name: &'static str,
    pub status: Status,
    /// What was found (for a skip: why it was skipped).
    pub detail: String,
    /// What to do, on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn pass(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Pass,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn skip(name: &'static str, why: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Skip,
            detail: why.into(),
            fix: None,
        }
    }
}

/// Every check, in the order run.
#[derive(Debug, Clone, Serialize)]
pub struct PreflightReport {
    pub host: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// True when no check failed.
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl PreflightReport {
    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status == Status::Fail)
    }

    /// One line per check, then the fix of each failure under it.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for check in &self.checks {
            let mark = match check.status {
                Status::Pass => "ok  ",
                Status::Fail => "FAIL",
                Status::Skip => "skip",
            };
            out.push_str(&format!("{mark} {:<12} {}\n", check.name, check.detail));
            if let Some(fix) = &check.fix {
                out.push_str(&format!("     {:<12} fix: {fix}\n", ""));
            }
        }
        let failed = self.failures().count();
        if failed == 0 {
            out.push_str(&format!("preflight passed for host {}\n", self.host));
        } else {
            out.push_str(&format!(
                "preflight failed for host {}: {failed} check(s) failed\n",
                self.host
            ));
        }
        out
    }
}

/// What to check.
pub struct Input<'a> {
    pub site: Arc<Site>,
    pub host: &'a str,
    /// The manifest a run would converge: enables `images` and
    /// `nested_virt`.
    pub manifest: Option<&'a Manifest>,
    /// `insecure` (TLS) and `ssh_key` (SSH to the host) are used.
    pub setup: &'a Setup,
}

/// Runs every check on `input.host`.
pub async fn run(input: Input<'_>) -> PreflightReport {
    let site = &input.site;
    let mut checks = Vec::new();
    let host = site_init(site, input.host, &mut checks);
    checks.push(ssh_keys(site));
    let api = match &host {
        Some(host) => pve_api(host, input.setup, &mut checks).await,
        None => {
            checks.push(Check::skip("pve_api", "no node config to reach it with"));
            None
        }
    };
    // The manifest's VMs on this host: only worth working out for a node.
    let tier = match (&host, input.manifest) {
        (Some(_), Some(m)) => Some(desired::resolve(site, m, input.host)),
        _ => None,
    };
    match (&host, &api, &tier) {
        (None, _, _) => checks.push(Check::skip("images", "no node config to look on")),
        (_, _, None) => checks.push(Check::skip("images", "no manifest given (-M)")),
        (Some(host), Some(api), Some(Ok(tier))) => checks.push(images(site, host, api, tier).await),
        (_, _, Some(Err(err))) => checks.push(Check::fail(
            "images",
            format!(
                "cannot work out the manifest's VMs on {}: {}",
                input.host,
                homestak_base::error_chain(err)
            ),
            "fix the manifest or the site-config it names (presets, templates, images)",
        )),
        _ => checks.push(Check::skip("images", "the PVE API is not usable")),
    }
    let tiered = matches!(&tier, Some(Ok(t)) if t.desired.vms.iter().any(|v| v.kind == Kind::Pve));
    match (&host, tiered) {
        (None, _) => checks.push(Check::skip(
            "nested_virt",
            "no node config to reach it with",
        )),
        (Some(_), false) => checks.push(Check::skip(
            "nested_virt",
            "the manifest has no pve nodes (or none was given)",
        )),
        (Some(host), true) => checks.push(nested_virt(host, input.setup).await),
    }
    PreflightReport {
        host: input.host.to_string(),
        manifest: input.manifest.map(|m| m.name().to_string()),
        ok: !checks.iter().any(|c| c.status == Status::Fail),
        checks,
    }
}

/// `site_init`; the host's config when it names a PVE node.
fn site_init(site: &Site, host: &str, checks: &mut Vec<Check>) -> Option<HostConfig> {
    const NAME: &str = "site_init";
    let secrets = site.secrets();
    let path = secrets.path().display().to_string();
    let secrets_problem = match secrets.status() {
        SecretsStatus::Missing { encrypted: true } => Some((
            format!("{path} is missing; only secrets.yaml.enc is there"),
            format!("decrypt it: cd {} && make decrypt", site.root().display()),
        )),
        SecretsStatus::Missing { encrypted: false } => Some((
            format!("{path} is missing"),
            "create secrets.yaml (api_tokens, ssh_keys, ownership_key), or decrypt the \
             site-config's: make decrypt"
                .to_string(),
        )),
        SecretsStatus::Unreadable(err) => Some((
            format!("{path} cannot be read: {err}"),
            "fix the YAML of secrets.yaml".to_string(),
        )),
        SecretsStatus::Loaded if sops_encrypted(secrets.path()) => Some((
            format!("{path} is still sops-encrypted (sops: metadata, ENC[…] values)"),
            format!(
                "decrypt it in place: cd {} && sops -d -i secrets.yaml (or make decrypt)",
                site.root().display()
            ),
        )),
        SecretsStatus::Loaded => None,
    };
    let (config, host_problem) = match site.host_config(host) {
        Ok(config) if config.is_host_only => (
            None,
            Some((
                format!(
                    "{host} is known only by {} (PVE not installed?)",
                    config.config_file.display()
                ),
                format!(
                    "install PVE and write nodes/{host}.yaml: homestak scenario pve-setup --host {host}"
                ),
            )),
        ),
        Ok(config) => (Some(config), None),
        Err(err) => (
            None,
            Some((format!("no node config for {host}"), err.to_string())),
        ),
    };
    match (secrets_problem, host_problem) {
        (None, None) => checks.push(Check::pass(
            NAME,
            format!("secrets.yaml decrypted, nodes/{host}.yaml present"),
        )),
        (a, b) => {
            let (details, fixes): (Vec<String>, Vec<String>) = a.into_iter().chain(b).unzip();
            checks.push(Check::fail(NAME, details.join("; "), fixes.join("; ")));
        }
    }
    config
}

/// True when the file carries sops metadata or sops-encrypted values.
fn sops_encrypted(path: &std::path::Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    text.lines().any(|l| l.starts_with("sops:")) || text.contains("ENC[")
}

fn ssh_keys(site: &Site) -> Check {
    const NAME: &str = "ssh_keys";
    let count = site.secrets().lenient().ssh_keys.len();
    let problems = site.ssh_key_problems();
    if problems.is_empty() {
        return Check::pass(NAME, format!("{count} key(s) parse"));
    }
    let names: Vec<String> = problems.iter().map(|p| p.name.clone()).collect();
    Check::fail(
        NAME,
        problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
        format!(
            "fix or remove {} in secrets.yaml ssh_keys: one OpenSSH public key line each \
             (TYPE BASE64 [COMMENT], as in a .pub file)",
            names.join(", ")
        ),
    )
}

/// Privileges a run needs on some path: create VMs, allocate their disks,
/// read the node and cluster state.
const REQUIRED_PRIVILEGES: &[&str] = &["VM.Allocate", "Datastore.AllocateSpace", "Sys.Audit"];

/// The [`REQUIRED_PRIVILEGES`] granted on no path.
fn missing_privileges(granted: &homestak_pve::Permissions) -> Vec<&'static str> {
    REQUIRED_PRIVILEGES
        .iter()
        .copied()
        .filter(|p| !granted.values().any(|privs| privs.contains_key(*p)))
        .collect()
}

async fn pve_api(
    host: &HostConfig,
    setup: &Setup,
    checks: &mut Vec<Check>,
) -> Option<Arc<dyn Api>> {
    const NAME: &str = "pve_api";
    let api = match reconcile::connect(host, setup.insecure, None) {
        Ok(api) => api,
        Err(err) => {
            checks.push(Check::fail(
                NAME,
                homestak_base::error_chain(&err),
                format!(
                    "complete nodes/{}.yaml (api_endpoint, api_fingerprint) and secrets.yaml \
                     api_tokens",
                    host.name
                ),
            ));
            return None;
        }
    };
    match api.version().await {
        Ok(version) => {
            let answers = format!(
                "{} answers with the token (PVE {})",
                host.api_endpoint.as_deref().unwrap_or_default(),
                version.version
            );
            checks.push(match api.permissions(None).await {
                Ok(granted) => {
                    let missing = missing_privileges(&granted);
                    if missing.is_empty() {
                        Check::pass(
                            NAME,
                            format!("{answers}, with {}", REQUIRED_PRIVILEGES.join(", ")),
                        )
                    } else {
                        Check::fail(
                            NAME,
                            format!("{answers}, without {}", missing.join(", ")),
                            format!(
                                "grant the token {} (e.g. pveum acl modify / --tokens TOKENID \
                                 --roles PVEVMAdmin,PVEDatastoreUser,PVEAuditor), or make it \
                                 without privilege separation (--privsep 0)",
                                missing.join(", ")
                            ),
                        )
                    }
                }
                // An API without /access/permissions: the token works, its
                // privileges show at the first call short of one.
                Err(err) => Check::pass(
                    NAME,
                    format!(
                        "{answers}; privileges not listed ({})",
                        homestak_base::error_chain(&err)
                    ),
                ),
            });
            Some(api)
        }
        Err(err) => {
            let fix = if err.kind() == homestak_pve::ErrorKind::Unauthorized {
                format!(
                    "the API token for {} is wrong or revoked: put a valid one in secrets.yaml \
                     api_tokens (pveum user token add …)",
                    host.name
                )
            } else {
                format!(
                    "make {} reachable (is pveproxy running? a firewall?) or fix api_endpoint in \
                     nodes/{}.yaml",
                    host.api_endpoint.as_deref().unwrap_or_default(),
                    host.name
                )
            };
            checks.push(Check::fail(NAME, homestak_base::error_chain(&err), fix));
            None
        }
    }
}

async fn images(site: &Site, host: &HostConfig, api: &Arc<dyn Api>, tier: &desired::Tier) -> Check {
    const NAME: &str = "images";
    let mut wanted: Vec<&str> = tier.desired.vms.iter().map(|v| v.image.as_str()).collect();
    wanted.sort_unstable();
    wanted.dedup();
    if wanted.is_empty() {
        return Check::skip(NAME, "the manifest has no VMs on this host");
    }
    let node = match reconcile::pve_node(host) {
        Ok(node) => node,
        Err(err) => {
            return Check::fail(
                NAME,
                homestak_base::error_chain(&err),
                format!("fix node: in nodes/{}.yaml", host.name),
            );
        }
    };
    let storage = &host.image_storage;
    let listed = match api
        .storage_content(&node, storage, Some("import"), None)
        .await
    {
        Ok(content) => content,
        Err(err) => {
            return Check::fail(
                NAME,
                format!(
                    "cannot list storage {storage}: {}",
                    homestak_base::error_chain(&err)
                ),
                format!(
                    "give image_storage in nodes/{}.yaml a storage with content `import`",
                    host.name
                ),
            );
        }
    };
    let source = reconcile::image_source(site, None);
    let client = source::client().ok();
    let (mut present, mut fetchable, mut missing) = (Vec::new(), Vec::new(), Vec::new());
    for image in wanted {
        let volume = mapping::image_volume(storage, image);
        if listed.iter().any(|c| c.volid == volume) {
            present.push(image);
            continue;
        }
        if source.parts.contains_key(image) {
            fetchable.push(image);
            continue;
        }
        let layout = match &client {
            Some(client) => source::discover(client, &source.base_url, image).await.ok(),
            None => None,
        };
        match layout {
            Some(source::Layout::Missing(tried)) => {
                missing.push(format!("{image} ({})", tried.join(", ")))
            }
            _ => fetchable.push(image),
        }
    }
    let mut detail = format!("on {storage}: {}", list_or_none(&present));
    if !fetchable.is_empty() {
        detail.push_str(&format!(
            "; downloaded by the run from {}: {}",
            source.base_url,
            fetchable.join(", ")
        ));
    }
    if missing.is_empty() {
        Check::pass(NAME, detail)
    } else {
        Check::fail(
            NAME,
            format!("{detail}; nowhere: {}", missing.join("; ")),
            "publish the images (homestak scenario packer-build-publish) or fix image_source / \
             packer_release in site.yaml, or the image names",
        )
    }
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// Files that say whether KVM allows nested guests, Intel then AMD.
const NESTED_FILES: [&str; 2] = [
    "/sys/module/kvm_intel/parameters/nested",
    "/sys/module/kvm_amd/parameters/nested",
];

async fn nested_virt(host: &HostConfig, setup: &Setup) -> Check {
    const NAME: &str = "nested_virt";
    let Some(ssh) = reconcile::host_ssh(host, setup) else {
        return Check::fail(
            NAME,
            format!("no SSH address for {}", host.name),
            format!("set ip (and ssh_user) in nodes/{}.yaml", host.name),
        );
    };
    let key_fix = format!(
        "make SSH to {} work with the key {} (pass --ssh-key or set ssh_key in nodes/{}.yaml)",
        ssh.destination,
        ssh.key.display(),
        host.name
    );
    let identity = match homestak_ssh::Identity::load(&ssh.key) {
        Ok(identity) => identity,
        Err(err) => return Check::fail(NAME, homestak_base::error_chain(&err), key_fix),
    };
    let target = homestak_ssh::Target::new(ssh.destination.clone(), identity, ssh.host_key.clone());
    let session = match ssh.transport.connect(&target).await {
        Ok(session) => session,
        Err(err) => return Check::fail(NAME, homestak_base::error_chain(&err), key_fix),
    };
    let mut answer = None;
    for file in NESTED_FILES {
        let command = homestak_ssh::Command::new("cat").arg(file);
        if let Ok(out) = session.exec(&command, &mut |_, _| {}).await
            && out.success()
        {
            answer = Some((file, out.stdout_text().trim().to_string()));
            break;
        }
    }
    let _ = session.close().await;
    let fix = "enable nested virtualization on the host: echo 'options kvm_intel nested=1' > \
               /etc/modprobe.d/kvm-nested.conf (kvm_amd on AMD), then reload the module or reboot";
    match answer {
        Some((file, value)) if value == "Y" || value == "1" => {
            Check::pass(NAME, format!("{file} is {value}"))
        }
        Some((file, value)) => Check::fail(NAME, format!("{file} is {value:?}"), fix),
        None => Check::fail(
            NAME,
            format!(
                "neither {} nor {} can be read: is KVM loaded?",
                NESTED_FILES[0], NESTED_FILES[1]
            ),
            fix,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A privilege counts on whatever path PVE lists it; one granted
    /// nowhere is named.
    #[test]
    fn privileges_are_looked_up_on_every_path() {
        let granted: homestak_pve::Permissions = serde_json::from_value(serde_json::json!({
            "/vms": {"VM.Allocate": 1, "VM.Audit": 1},
            "/storage/local": {"Datastore.AllocateSpace": 0},
        }))
        .unwrap();
        assert_eq!(missing_privileges(&granted), ["Sys.Audit"]);
        let none = homestak_pve::Permissions::new();
        assert_eq!(missing_privileges(&none), REQUIRED_PRIVILEGES);
    }

    #[test]
    fn sops_files_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.yaml");
        std::fs::write(
            &path,
            "api_tokens:\n  pve: ENC[AES256_GCM,data:x,type:str]\n",
        )
        .unwrap();
        assert!(sops_encrypted(&path));
        std::fs::write(&path, "api_tokens: {}\nsops:\n  version: 3.8.1\n").unwrap();
        assert!(sops_encrypted(&path));
        std::fs::write(&path, "api_tokens:\n  pve: \"root@pam!h=x\"\n").unwrap();
        assert!(!sops_encrypted(&path));
    }
}
