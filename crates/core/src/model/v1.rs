//! Schema v1: a manifest is an ordered list of levels, each nested inside the
//! previous one. v2 manifests are also converted to levels (breadth-first),
//! which is how the reference runs them.

use schemars::JsonSchema;
use serde::Serialize;

use super::types::{Settings, Version};
use homestak_base::id::{NodeName, VmId};

/// A v1 manifest document as written in YAML (`schema_version` 1 or absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "homestak manifest (schema v1)")]
pub struct Document {
    /// Schema version; 1 when omitted.
    #[serde(default)]
    pub schema_version: Version<1>,
    /// Manifest identifier.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Human-readable description.
    #[serde(default)]
    pub description: String,
    /// Levels, outermost first: each level runs inside the one before it.
    #[schemars(length(min = 1))]
    pub levels: Vec<Level>,
    /// Execution settings.
    #[serde(default)]
    pub settings: Settings,
}

/// One level of a v1 manifest: a VM described by an env, a template or a
/// preset. Each level runs inside the one before it.
// Also what a v2 node converts to. Serialises the way the reference's
// `to_dict` does: `name`, `post_scenario` and `post_scenario_args` always,
// the rest only when set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Level {
    /// Level name, used as the VM name.
    pub name: NodeName,
    /// Scenario run on the VM once it is up (e.g. `pve-setup`).
    #[serde(default)]
    pub post_scenario: Option<String>,
    /// Arguments of `post_scenario`.
    #[serde(default)]
    pub post_scenario_args: Vec<String>,
    /// Environment (envs/NAME.yaml) whose VMs make up this level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// VM template (vms/NAME.yaml) of an inline VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Size preset (vms/presets/NAME.yaml) of an inline VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_preset: Option<String>,
    /// Explicit VM id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmid: Option<VmId>,
    /// Cloud image name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Added to the env's VM ids (env mode).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub vmid_offset: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Level {
    /// A level with only a name; the other fields empty.
    pub fn named(name: NodeName) -> Level {
        Level {
            name,
            post_scenario: None,
            post_scenario_args: Vec::new(),
            env: None,
            template: None,
            vm_preset: None,
            vmid: None,
            image: None,
            vmid_offset: 0,
        }
    }

    /// The VM is described right here (template or preset), not by an env.
    pub fn is_inline(&self) -> bool {
        self.template.is_some() || self.vm_preset.is_some()
    }

    /// The VM is sized by a preset alone (a template, when also given, wins).
    pub fn is_vm_preset_mode(&self) -> bool {
        self.vm_preset.is_some() && self.template.is_none()
    }

    /// Has one of the three ways to describe its VM (v1 requires it).
    pub fn has_mode(&self) -> bool {
        self.is_inline() || self.env.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        let mut level = Level::named(NodeName::new("a").unwrap());
        assert!(!level.has_mode() && !level.is_inline());
        level.env = Some("dev".into());
        assert!(level.has_mode() && !level.is_inline());
        level.vm_preset = Some("small".into());
        assert!(level.is_inline() && level.is_vm_preset_mode());
        level.template = Some("t".into());
        assert!(level.is_inline() && !level.is_vm_preset_mode());
    }

    #[test]
    fn serialises_like_to_dict() {
        let mut level = Level::named(NodeName::new("by-env").unwrap());
        level.env = Some("dev".into());
        level.vmid_offset = 5;
        assert_eq!(
            serde_json::to_value(&level).unwrap(),
            serde_json::json!({
                "name": "by-env", "post_scenario": null, "post_scenario_args": [],
                "env": "dev", "vmid_offset": 5
            })
        );
    }
}
