//! The ConfigResolver: tofu-shaped and ansible-shaped resolution.
//!
//! - [`Site::resolve_env`]: an env's VMs on a target node, as the flat
//!   tfvars mapping ([`TofuVars`]).
//! - [`Site::resolve_inline_vm`]: one VM described inline (a manifest node),
//!   same shape with a one-element `vms` list. The planner calls this per
//!   manifest node.
//! - [`Site::resolve_ansible_vars`]: site defaults merged with the env's v1
//!   posture ([`AnsibleVars`]).
//!
//! Compatibility notes (the reference's answers, kept on purpose): a missing
//! env file resolves to no VMs with the default posture (we log a warning);
//! a missing or unreadable `secrets.yaml` resolves to empty tokens, password
//! and keys.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use super::auth::token_for;
use super::loader::{Catalog, Site};
use super::posture::{DEFAULT_POSTURE, PostureV1, PostureV2};
use super::vm::{Env, EnvVm, ResolvedVm, VmSettings};
use homestak_base::secret::Secret;
use homestak_base::yaml;

/// A resolution failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An inline VM names neither a template nor a preset (the
    /// reference's wording; the fix is to give the VM one of them).
    #[error("resolve_inline_vm requires either template or vm_preset")]
    InlineVmUnderspecified { vm: String },
    /// No (or an empty) `nodes/<node>.yaml`.
    #[error("Node config not found: nodes/{node}.yaml")]
    NodeNotFound { node: String },
    /// The node file has no `datastore`.
    #[error(
        "Node '{node}' missing required 'datastore' in nodes/{node}.yaml. Run 'make node-config FORCE=1' in site-config to regenerate."
    )]
    MissingDatastore { node: String },
    /// A VM names a `vm_preset` with no file.
    #[error("Preset not found: vms/presets/{name}.yaml")]
    PresetNotFound { name: String },
    /// A VM's `ip` is not a string.
    #[error("Invalid IP type for VM '{vm}': expected string, got {found}")]
    InvalidIpType { vm: String, found: &'static str },
    /// A VM's `ip` is neither `dhcp` nor IPv4 CIDR.
    #[error(
        "Invalid IP format for VM '{vm}': '{ip}'. Static IPs must use CIDR notation (e.g., '10.0.12.124/24'). Use 'dhcp' for dynamic assignment."
    )]
    InvalidIp { vm: String, ip: String },
    /// A VM's CIDR prefix is over 32.
    #[error("Invalid CIDR prefix for VM '{vm}': /{prefix}. Must be between 0 and 32.")]
    InvalidPrefix { vm: String, prefix: u8 },
    /// `vms:` is present with no value.
    #[error(
        "env '{env}' has `vms:` with no value in {}; list the VMs or remove the key",
        path.display()
    )]
    VmsNull { env: String, path: PathBuf },
    /// `packages:` is present with no value (site defaults or a posture).
    #[error("`packages:` has no value in {}; write `packages: []` for none", path.display())]
    PackagesNull { path: PathBuf },
    /// `vmid_base + index` does not fit a VM ID.
    #[error("env '{env}': vmid_base {base} + index {index} is not a valid VM ID")]
    VmidOverflow {
        env: String,
        base: u32,
        index: usize,
    },
    /// A document needed by this resolution is invalid.
    #[error("{kind} '{name}' cannot be loaded; fix the file")]
    Document {
        kind: &'static str,
        name: String,
        #[source]
        source: Arc<yaml::Error>,
    },
}

impl Error {
    /// The reference's E-code; config resolver errors carry none.
    pub fn code(&self) -> Option<&'static str> {
        None
    }
}

/// The tofu-shaped resolution of an env (or one inline VM) on a node.
///
/// Serialises to the reference's tfvars object; secrets appear in clear
/// there only (Debug redacts them).
#[derive(Debug, Clone, Serialize)]
pub struct TofuVars {
    /// PVE node name (`node:` in the node file, else the file name).
    pub node: String,
    /// PVE API URL.
    pub api_endpoint: String,
    /// PVE API token (`secrets.api_tokens[<node api_token or file name>]`).
    #[serde(serialize_with = "Secret::serialize_exposed")]
    pub api_token: Secret,
    /// User for SSH to the PVE host.
    pub ssh_user: String,
    /// User cloud-init creates in VMs.
    pub automation_user: String,
    /// Address for SSH to the PVE host: 127.0.0.1 when the endpoint is local,
    /// else the node's `ip`, else empty.
    pub ssh_host: String,
    /// PVE storage for VM disks.
    pub datastore: String,
    /// Root password hash for VMs (`secrets.passwords.vm_root`).
    #[serde(serialize_with = "Secret::serialize_exposed")]
    pub root_password: Secret,
    /// SSH public keys for VMs, in `secrets.yaml` order.
    pub ssh_keys: Vec<String>,
    /// Spec server URL VMs fetch from; empty when disabled.
    pub spec_server: String,
    /// The resolved VMs.
    pub vms: Vec<ResolvedVm>,
}

/// The ansible-shaped resolution of an env.
#[derive(Debug, Clone, Serialize)]
pub struct AnsibleVars {
    /// Site `timezone` (default UTC).
    pub timezone: String,
    /// Site `pve_remove_subscription_nag` (default true).
    pub pve_remove_subscription_nag: bool,
    /// Site packages then posture packages, first occurrence kept.
    pub packages: Vec<String>,
    /// The rest come from the env's v1 posture, with the reference's
    /// defaults: 22, "prohibit-password", "no", false, false.
    pub ssh_port: u16,
    pub ssh_permit_root_login: String,
    pub ssh_password_authentication: String,
    pub sudo_nopasswd: bool,
    pub fail2ban_enabled: bool,
    /// The env asked for.
    pub env_name: String,
    /// The env's posture (default `dev`).
    pub posture_name: String,
    /// Every SSH public key in `secrets.yaml`, in file order.
    pub ssh_authorized_keys: Vec<String>,
}

/// One VM described inline (a manifest node), for
/// [`Site::resolve_inline_vm`].
#[derive(Debug, Clone, Default)]
pub struct InlineVm {
    /// Target PVE node (`nodes/<node>.yaml`).
    pub node: String,
    /// VM name (hostname; identity for node tokens).
    pub vm_name: String,
    /// VM ID; `None` lets PVE choose (resolves to `vmid: null`).
    pub vmid: Option<u32>,
    /// Template (`vms/<template>.yaml`); wins over `vm_preset`.
    pub template: Option<String>,
    /// Preset (`vms/presets/<vm_preset>.yaml`); must exist when used.
    pub vm_preset: Option<String>,
    /// Image override.
    pub image: Option<String>,
    /// Posture for the auth token (`v2/postures/`); default `dev`.
    pub posture: Option<String>,
    /// Further instance keys (e.g. a manifest node's `disk`), applied on
    /// top like an env entry's keys.
    pub overrides: VmSettings,
}

impl TofuVars {
    /// The first VM (the only one for an inline resolution).
    pub fn vm(&self) -> Option<&ResolvedVm> {
        self.vms.first()
    }
}

impl Site {
    /// Resolves env `env` for target node `node` (tofu shape).
    pub fn resolve_env(&self, env: &str, node: &str) -> Result<TofuVars, Error> {
        let mut vars = self.target_node(node)?;
        let doc = self.env_or_default(env)?;
        let vms = match &doc.vms {
            None => &[][..],
            Some(Some(vms)) => vms.as_slice(),
            Some(None) => {
                return Err(Error::VmsNull {
                    env: env.to_string(),
                    path: self
                        .envs
                        .get(env)
                        .map(|e| e.path.clone())
                        .unwrap_or_default(),
                });
            }
        };
        let posture = doc.posture.as_deref().unwrap_or(DEFAULT_POSTURE);
        for (index, vm) in vms.iter().enumerate() {
            let default_vmid = match doc.vmid_base {
                None => None,
                Some(base) => Some(
                    u32::try_from(index)
                        .ok()
                        .and_then(|i| base.checked_add(i))
                        .ok_or_else(|| Error::VmidOverflow {
                            env: env.to_string(),
                            base,
                            index,
                        })?,
                ),
            };
            let token = self.vm_auth_token(posture, vm.name.as_deref())?;
            vars.vms.push(self.layer_vm(vm, default_vmid, token)?);
        }
        Ok(vars)
    }

    /// Resolves one inline VM on its node (tofu shape, one VM).
    ///
    /// As in the reference, the VM must name a `template` or a `vm_preset`
    /// (an empty name counts as none), checked before the node file.
    pub fn resolve_inline_vm(&self, inline: &InlineVm) -> Result<TofuVars, Error> {
        let named = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
        if !named(&inline.template) && !named(&inline.vm_preset) {
            return Err(Error::InlineVmUnderspecified {
                vm: inline.vm_name.clone(),
            });
        }
        let mut inline = inline.clone();
        inline.template = inline.template.filter(|s| !s.is_empty());
        inline.vm_preset = inline.vm_preset.filter(|s| !s.is_empty());
        self.resolve_manifest_node_vm(&inline)
    }

    /// Resolves one VM whose settings the caller layered already (a v2
    /// manifest node: its preset is applied into `overrides`), so neither
    /// `template` nor `vm_preset` is required. Same shape as
    /// [`Site::resolve_inline_vm`].
    pub fn resolve_manifest_node_vm(&self, inline: &InlineVm) -> Result<TofuVars, Error> {
        let mut vars = self.target_node(&inline.node)?;
        let mut settings = VmSettings {
            vmid: Some(inline.vmid),
            image: inline.image.clone(),
            ..VmSettings::default()
        };
        settings.overlay(&inline.overrides);
        let vm = EnvVm {
            name: Some(inline.vm_name.clone()),
            template: inline.template.clone(),
            vm_preset: inline.vm_preset.clone(),
            settings,
        };
        let posture = inline.posture.as_deref().unwrap_or(DEFAULT_POSTURE);
        let token = self.vm_auth_token(posture, Some(&inline.vm_name))?;
        vars.vms.push(self.layer_vm(&vm, None, token)?);
        Ok(vars)
    }

    /// Resolves the ansible variables of env `env`.
    pub fn resolve_ansible_vars(&self, env: &str) -> Result<AnsibleVars, Error> {
        let doc = self.env_or_default(env)?;
        let posture_name = doc.posture.as_deref().unwrap_or(DEFAULT_POSTURE);
        let default = PostureV1::default();
        let posture = self
            .doc(&self.postures, "posture", posture_name)?
            .unwrap_or(&default);
        let site_packages = match &self.defaults.packages {
            None => &[][..],
            Some(Some(p)) => p.as_slice(),
            Some(None) => {
                return Err(Error::PackagesNull {
                    path: self.root.join("site.yaml"),
                });
            }
        };
        let posture_packages = match &posture.packages {
            None => &[][..],
            Some(Some(p)) => p.as_slice(),
            Some(None) => {
                return Err(Error::PackagesNull {
                    path: self
                        .postures
                        .get(posture_name)
                        .map(|e| e.path.clone())
                        .unwrap_or_default(),
                });
            }
        };
        let mut packages: Vec<String> = Vec::new();
        for p in site_packages.iter().chain(posture_packages) {
            if !packages.contains(p) {
                packages.push(p.clone());
            }
        }
        let d = &self.defaults;
        Ok(AnsibleVars {
            timezone: d.timezone.clone().unwrap_or_else(|| "UTC".to_string()),
            pve_remove_subscription_nag: d.pve_remove_subscription_nag.unwrap_or(true),
            packages,
            ssh_port: posture.ssh_port.unwrap_or(22),
            ssh_permit_root_login: posture
                .ssh_permit_root_login
                .clone()
                .unwrap_or_else(|| "prohibit-password".to_string()),
            ssh_password_authentication: posture
                .ssh_password_authentication
                .clone()
                .unwrap_or_else(|| "no".to_string()),
            sudo_nopasswd: posture.sudo_nopasswd.unwrap_or(false),
            fail2ban_enabled: posture.fail2ban_enabled.unwrap_or(false),
            env_name: env.to_string(),
            posture_name: posture_name.to_string(),
            ssh_authorized_keys: self.secrets.lenient().ssh_key_list(),
        })
    }

    /// Env names (`envs/*.yaml`), sorted.
    pub fn list_envs(&self) -> Vec<String> {
        self.envs.names()
    }

    /// v1 posture names (`postures/*.yaml`), sorted.
    pub fn list_postures(&self) -> Vec<String> {
        self.postures.names()
    }

    /// Template names (`vms/*.yaml`), sorted.
    pub fn list_templates(&self) -> Vec<String> {
        self.templates.names()
    }

    /// Preset names (`vms/presets/*.yaml`), sorted.
    pub fn list_presets(&self) -> Vec<String> {
        self.presets.names()
    }

    /// The v2 preset `name` (`v2/presets/<name>.yaml`), as named by v2
    /// manifest nodes; `None` when missing. The reference's inline
    /// resolution reads `vms/presets/` only, so a caller holding a v2 preset
    /// passes its settings in [`InlineVm::overrides`].
    pub fn preset_v2(&self, name: &str) -> Result<Option<&VmSettings>, Error> {
        self.doc(&self.presets_v2, "v2 preset", name)
    }

    /// The v2 posture `name` (`v2/postures/<name>.yaml`); `None` when
    /// missing.
    pub fn posture_v2(&self, name: &str) -> Result<Option<&PostureV2>, Error> {
        self.doc(&self.postures_v2, "v2 posture", name)
    }

    /// The document `name` of `catalog`: `Ok(None)` when the file is missing
    /// or empty, an error when it is invalid.
    pub(super) fn doc<'a, T>(
        &'a self,
        catalog: &'a Catalog<T>,
        kind: &'static str,
        name: &str,
    ) -> Result<Option<&'a T>, Error> {
        match catalog.get(name) {
            None => Ok(None),
            Some(entry) => match &entry.doc {
                Ok(doc) => Ok(doc.as_ref()),
                Err(source) => Err(Error::Document {
                    kind,
                    name: name.to_string(),
                    source: Arc::clone(source),
                }),
            },
        }
    }

    /// The env, or an empty one (with a warning) when its file is missing.
    fn env_or_default(&self, env: &str) -> Result<Env, Error> {
        if !self.envs.contains(env) {
            tracing::warn!(
                env,
                dir = %self.root.join("envs").display(),
                "no such env file; resolving with no VMs and the default posture"
            );
        }
        Ok(self
            .doc(&self.envs, "env", env)?
            .cloned()
            .unwrap_or_default())
    }

    /// The node-level fields of the tofu shape, with no VMs yet.
    fn target_node(&self, node: &str) -> Result<TofuVars, Error> {
        let config = self
            .doc(&self.nodes, "node", node)?
            .ok_or_else(|| Error::NodeNotFound {
                node: node.to_string(),
            })?;
        let datastore = config
            .datastore
            .clone()
            .ok_or_else(|| Error::MissingDatastore {
                node: node.to_string(),
            })?;
        let secrets = self.secrets.lenient();
        let token_key = config.api_token.as_deref().unwrap_or(node);
        let api_endpoint = config.api_endpoint.clone().unwrap_or_default();
        // The reference's shortcut: a local endpoint means SSH to loopback.
        let ssh_host = if api_endpoint.contains("localhost") || api_endpoint.contains("127.0.0.1") {
            "127.0.0.1".to_string()
        } else {
            config.ip.clone().unwrap_or_default()
        };
        let d = &self.defaults;
        Ok(TofuVars {
            node: config.node.clone().unwrap_or_else(|| node.to_string()),
            api_endpoint,
            api_token: secrets.api_token(token_key).cloned().unwrap_or_default(),
            ssh_user: config
                .ssh_user
                .clone()
                .or_else(|| d.ssh_user.clone())
                .unwrap_or_else(|| "root".to_string()),
            automation_user: d
                .automation_user
                .clone()
                .unwrap_or_else(|| "homestak".to_string()),
            ssh_host,
            datastore,
            root_password: secrets.vm_root_password().cloned().unwrap_or_default(),
            ssh_keys: secrets.ssh_key_list(),
            spec_server: d.spec_server.clone().unwrap_or_default(),
            vms: Vec::new(),
        })
    }

    /// Per-VM auth token by v2 posture, with the config resolver's lenient
    /// secrets. A missing posture means no token.
    fn vm_auth_token(&self, posture: &str, identity: Option<&str>) -> Result<Secret, Error> {
        Ok(match self.doc(&self.postures_v2, "posture", posture)? {
            None => Secret::empty(),
            Some(p) => token_for(
                &p.auth_method(),
                identity.unwrap_or_default(),
                self.secrets.lenient(),
            ),
        })
    }
}
