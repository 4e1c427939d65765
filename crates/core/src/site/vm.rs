//! VM definitions: presets, templates, env entries, and their layering into
//! a [`ResolvedVm`].
//!
//! Layering (the reference's semantics, all captured by goldens):
//! - preset keys, then template keys, then instance keys, each overriding
//!   the one below key by key; lists are replaced, not merged;
//! - `template` wins over `vm_preset` when both are given;
//! - a missing template, or a missing preset named by a template, is
//!   ignored; a missing direct `vm_preset` is an error;
//! - the default vmid is `vmid_base + index` (the index counts every entry,
//!   overriding ones included); `vmid: null` stays null; a template's vmid
//!   suppresses the default; no base means no vmid key;
//! - the site `bridge` (else "vmbr0") and `gateway` defaults apply unless
//!   a layer sets them;
//! - IPs must be `dhcp`, null or IPv4 CIDR with a prefix of at most 32
//!   (octets are not range-checked, case matters).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::loader::Site;
use super::resolver::Error;
use super::serde_util::double_option;
use homestak_base::secret::Secret;

/// Keys that select layers or are computed; never passed through.
const RESERVED: &[&str] = &["name", "template", "vm_preset", "preset", "auth_token"];

/// VM settings shared by presets, templates and env entries.
///
/// Unknown keys (`cpu_type`, `tags`, `packages`, …) pass through to the
/// resolved VM, as they do in the reference (tofu reads them).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct VmSettings {
    /// Image name (e.g. `debian-12`).
    pub image: Option<String>,
    /// vCPU cores.
    pub cores: Option<u32>,
    /// Memory in MiB.
    pub memory: Option<u64>,
    /// Disk size in GiB.
    pub disk: Option<u64>,
    /// Explicit VM ID; `null` means "let PVE choose" and suppresses the
    /// env's `vmid_base + index` default.
    #[serde(default, deserialize_with = "double_option")]
    #[schemars(with = "Option<u32>")]
    pub vmid: Option<Option<u32>>,
    /// `dhcp`, null, or IPv4 CIDR (`10.0.12.124/24`). Kept as read so that a
    /// wrong type is reported at resolution, naming the VM.
    #[serde(default, deserialize_with = "double_option")]
    #[schemars(with = "Option<String>")]
    pub ip: Option<Option<Value>>,
    /// Bridge (default: site `bridge`, else `vmbr0`).
    pub bridge: Option<String>,
    /// Gateway (default: site `gateway`).
    pub gateway: Option<String>,
    /// Keys homestak does not interpret, passed through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A VM size preset (`vms/presets/*.yaml`, `v2/presets/*.yaml`).
pub type Preset = VmSettings;

impl VmSettings {
    /// True when the document sets nothing (the reference treats an empty
    /// preset like a missing one).
    pub fn is_empty(&self) -> bool {
        self.image.is_none()
            && self.cores.is_none()
            && self.memory.is_none()
            && self.disk.is_none()
            && self.vmid.is_none()
            && self.ip.is_none()
            && self.bridge.is_none()
            && self.gateway.is_none()
            && self.extra.is_empty()
    }

    /// Overrides `self` with every key `upper` sets.
    pub(super) fn overlay(&mut self, upper: &VmSettings) {
        fn set<T: Clone>(slot: &mut Option<T>, upper: &Option<T>) {
            if upper.is_some() {
                slot.clone_from(upper);
            }
        }
        set(&mut self.image, &upper.image);
        set(&mut self.cores, &upper.cores);
        set(&mut self.memory, &upper.memory);
        set(&mut self.disk, &upper.disk);
        set(&mut self.vmid, &upper.vmid);
        set(&mut self.ip, &upper.ip);
        set(&mut self.bridge, &upper.bridge);
        set(&mut self.gateway, &upper.gateway);
        for (k, v) in &upper.extra {
            if !RESERVED.contains(&k.as_str()) {
                self.extra.insert(k.clone(), v.clone());
            }
        }
    }
}

/// A VM template (`vms/<name>.yaml`): a preset reference plus settings.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct Template {
    /// Preset (`vms/presets/<preset>.yaml`) applied below the template; a
    /// missing one is ignored.
    pub preset: Option<String>,
    /// The template's own settings.
    #[serde(flatten)]
    pub settings: VmSettings,
}

/// One entry of an env's `vms` list, or an inline VM.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct EnvVm {
    /// VM name (hostname); also the identity for per-VM auth tokens.
    pub name: Option<String>,
    /// Template (`vms/<template>.yaml`); wins over `vm_preset`.
    pub template: Option<String>,
    /// Preset used when no template is named; must exist.
    pub vm_preset: Option<String>,
    /// Instance overrides.
    #[serde(flatten)]
    pub settings: VmSettings,
}

/// An environment (`envs/<name>.yaml`).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct Env {
    /// Posture name (`postures/` for ansible, `v2/postures/` for tokens);
    /// default `dev`.
    pub posture: Option<String>,
    /// First VM ID; VM `i` gets `vmid_base + i` unless it sets `vmid`.
    pub vmid_base: Option<u32>,
    /// The VMs. Absent means none; `vms:` with no value is an error.
    #[serde(default, deserialize_with = "double_option")]
    #[schemars(with = "Option<Vec<EnvVm>>")]
    pub vms: Option<Option<Vec<EnvVm>>>,
}

/// A fully resolved VM, in the tofu-shaped output.
///
/// Serialises to exactly the object the reference writes into tfvars
/// (optional keys absent when unset; `vmid`/`ip` may be `null`).
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedVm {
    /// vCPU cores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// Memory in MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Disk size in GiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<u64>,
    /// Image name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// VM name; absent when the entry has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Validated IP setting: absent, `null`, `dhcp` or CIDR.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<Option<String>>,
    /// VM ID: absent (no base), `null` (PVE chooses) or a number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vmid: Option<Option<u32>>,
    /// Bridge.
    pub bridge: String,
    /// Gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Pass-through keys.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// Token the VM presents when it fetches its spec; empty for network
    /// trust or when none is configured.
    #[serde(serialize_with = "Secret::serialize_exposed")]
    pub auth_token: Secret,
}

/// A VM's network address setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpConfig {
    /// Not set (or `null`): PVE/cloud-init default, which is DHCP.
    Unset,
    /// `dhcp`.
    Dhcp,
    /// Static IPv4 address with prefix length.
    Static { address: String, prefix: u8 },
}

impl ResolvedVm {
    /// The VM ID, when one is set.
    pub fn vmid(&self) -> Option<u32> {
        self.vmid.flatten()
    }

    /// The IP setting in typed form.
    pub fn ip_config(&self) -> IpConfig {
        match self.ip.as_ref().and_then(|ip| ip.as_deref()) {
            None => IpConfig::Unset,
            Some("dhcp") => IpConfig::Dhcp,
            Some(cidr) => match parse_cidr(cidr) {
                Some((address, prefix)) => IpConfig::Static {
                    address: address.to_string(),
                    prefix,
                },
                // Only validated values get here.
                None => IpConfig::Unset,
            },
        }
    }
}

impl Site {
    /// Layers presets, template and instance for one VM and validates it.
    /// `default_vmid` is `vmid_base + index` when the env has a base.
    pub(super) fn layer_vm(
        &self,
        vm: &EnvVm,
        default_vmid: Option<u32>,
        auth_token: Secret,
    ) -> Result<ResolvedVm, Error> {
        let mut merged = VmSettings::default();
        if let Some(name) = &vm.template {
            if let Some(template) = self.doc(&self.templates, "template", name)? {
                if let Some(preset) = &template.preset
                    && let Some(preset) = self.doc(&self.presets, "preset", preset)?
                {
                    merged.overlay(preset);
                }
                merged.overlay(&template.settings);
            }
        } else if let Some(name) = &vm.vm_preset {
            match self.doc(&self.presets, "preset", name)? {
                Some(preset) if !preset.is_empty() => merged.overlay(preset),
                _ => return Err(Error::PresetNotFound { name: name.clone() }),
            }
        }
        merged.overlay(&vm.settings);
        if merged.vmid.is_none()
            && let Some(vmid) = default_vmid
        {
            merged.vmid = Some(Some(vmid));
        }
        let label = vm.name.as_deref().unwrap_or("unknown");
        let ip = match merged.ip {
            None => None,
            Some(None) => Some(None),
            Some(Some(raw)) => Some(validate_ip(&raw, label)?),
        };
        Ok(ResolvedVm {
            cores: merged.cores,
            memory: merged.memory,
            disk: merged.disk,
            image: merged.image,
            name: vm.name.clone(),
            ip,
            vmid: merged.vmid,
            bridge: merged
                .bridge
                .or_else(|| self.defaults.bridge.clone())
                .unwrap_or_else(|| "vmbr0".to_string()),
            gateway: merged.gateway.or_else(|| self.defaults.gateway.clone()),
            extra: merged.extra,
            auth_token,
        })
    }
}

/// Validates an IP setting the way the reference does; returns the value to
/// pass on (`None` for null).
fn validate_ip(raw: &Value, vm: &str) -> Result<Option<String>, Error> {
    let text = match raw {
        Value::Null => return Ok(None),
        Value::String(s) => s,
        other => {
            return Err(Error::InvalidIpType {
                vm: vm.to_string(),
                found: python_type_name(other),
            });
        }
    };
    if text == "dhcp" {
        return Ok(Some(text.clone()));
    }
    let Some((_, prefix_text)) = text.split_once('/').filter(|_| shape_ok(text)) else {
        return Err(Error::InvalidIp {
            vm: vm.to_string(),
            ip: text.clone(),
        });
    };
    // Shape check guarantees one or two ASCII digits.
    let prefix: u8 = prefix_text.parse().unwrap_or(u8::MAX);
    if prefix > 32 {
        return Err(Error::InvalidPrefix {
            vm: vm.to_string(),
            prefix,
        });
    }
    Ok(Some(text.clone()))
}

/// `d{1,3}.d{1,3}.d{1,3}.d{1,3}/d{1,2}`, ASCII digits only.
fn shape_ok(text: &str) -> bool {
    let digits = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
    };
    let Some((address, prefix)) = text.split_once('/') else {
        return false;
    };
    let octets: Vec<&str> = address.split('.').collect();
    octets.len() == 4 && octets.iter().all(|o| digits(o, 3)) && digits(prefix, 2)
}

/// Splits a validated CIDR into address and prefix.
fn parse_cidr(text: &str) -> Option<(&str, u8)> {
    if !shape_ok(text) {
        return None;
    }
    let (address, prefix) = text.split_once('/')?;
    let prefix: u8 = prefix.parse().ok()?;
    (prefix <= 32).then_some((address, prefix))
}

/// The reference names value types in Python's words.
fn python_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ip_validation_follows_the_reference() {
        assert_eq!(validate_ip(&json!(null), "v").unwrap(), None);
        assert_eq!(
            validate_ip(&json!("dhcp"), "v").unwrap().as_deref(),
            Some("dhcp")
        );
        assert!(validate_ip(&json!("999.300.256.1/32"), "v").is_ok());
        assert!(validate_ip(&json!("0.0.0.0/0"), "v").is_ok());
        let err = validate_ip(&json!("DHCP"), "unknown")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("Invalid IP format for VM 'unknown': 'DHCP'."),
            "{err}"
        );
        let err = validate_ip(&json!("10.0.0.5/33"), "w")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "Invalid CIDR prefix for VM 'w': /33. Must be between 0 and 32."
        );
        let err = validate_ip(&json!(167772165), "i").unwrap_err().to_string();
        assert_eq!(err, "Invalid IP type for VM 'i': expected string, got int");
        assert!(validate_ip(&json!("10.0.0.5"), "n").is_err());
        assert!(validate_ip(&json!("10.0.0.5/24/1"), "n").is_err());
        assert!(validate_ip(&json!("1.2.3/24"), "n").is_err());
    }

    #[test]
    fn ip_config_types_the_value() {
        let mut vm = ResolvedVm {
            cores: None,
            memory: None,
            disk: None,
            image: None,
            name: None,
            ip: Some(Some("10.0.0.5/24".into())),
            vmid: Some(None),
            bridge: "vmbr0".into(),
            gateway: None,
            extra: Map::new(),
            auth_token: Secret::empty(),
        };
        assert_eq!(
            vm.ip_config(),
            IpConfig::Static {
                address: "10.0.0.5".into(),
                prefix: 24
            }
        );
        assert_eq!(vm.vmid(), None);
        vm.ip = Some(None);
        assert_eq!(vm.ip_config(), IpConfig::Unset);
        vm.ip = Some(Some("dhcp".into()));
        assert_eq!(vm.ip_config(), IpConfig::Dhcp);
    }
}
