//! Schema v2: a manifest is a tree of nodes linked by `parent`. Roots run on
//! the target host; a `pve` node's children run on the PVE host it becomes.

use schemars::JsonSchema;
use serde::Serialize;

use super::types::{Execution, ExecutionMode, NodeExecution, NodeType, Pattern, Settings, Version};
use super::v1::Level;
use homestak_base::id::{NodeName, VmId};

/// A v2 manifest document as written in YAML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "homestak manifest (schema v2)")]
pub struct Document {
    /// Schema version; must be 2 for the node-graph format.
    pub schema_version: Version<2>,
    /// Manifest identifier.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Human-readable description.
    #[serde(default)]
    pub description: String,
    /// Topology shape: flat (all on the target host) or tiered (nesting).
    #[serde(default)]
    pub pattern: Pattern,
    /// Nodes to deploy. A node without a parent runs on the target host.
    #[schemars(length(min = 1))]
    pub nodes: Vec<Node>,
    /// Execution settings.
    #[serde(default)]
    pub settings: Settings,
    /// Default execution settings.
    #[serde(default, skip_serializing_if = "Execution::is_empty")]
    pub execution: Execution,
}

/// One node of a v2 manifest: a VM, a container, or a VM that becomes a
/// Proxmox VE host for its children.
// Serialises the way the reference's `to_dict` does: `name` and `type`
// always, the rest only when set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Node identifier: VM hostname and context key prefix.
    pub name: NodeName,
    /// vm (KVM), ct (LXC) or pve (a VM that becomes a Proxmox VE host).
    #[serde(rename = "type")]
    pub kind: NodeType,
    /// What the node should become: v2/specs/NAME.yaml.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<String>,
    /// Size preset: v2/presets/NAME.yaml (`vm-` prefixed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// Cloud image name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Explicit PVE VM id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmid: Option<VmId>,
    /// Disk size in GB (overrides the preset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub disk: Option<u32>,
    /// Name of the parent node; none (or null) means a root on the target host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<NodeName>,
    /// Per-node execution overrides.
    #[serde(default, skip_serializing_if = "NodeExecution::is_empty")]
    pub execution: NodeExecution,
}

/// Scenario the reference runs on a `pve` node once its VM is up.
pub const PVE_POST_SCENARIO: &str = "pve-setup";
/// Arguments of [`PVE_POST_SCENARIO`].
pub const PVE_POST_SCENARIO_ARGS: [&str; 2] = ["--local", "--skip-preflight"];

impl Node {
    /// A node with a name and type; the other fields empty.
    pub fn new(name: NodeName, kind: NodeType) -> Node {
        Node {
            name,
            kind,
            spec: None,
            preset: None,
            image: None,
            vmid: None,
            disk: None,
            parent: None,
            execution: NodeExecution::default(),
        }
    }

    /// The node's execution mode, falling back to the manifest default.
    pub fn execution_mode(&self, manifest_default: &Execution) -> ExecutionMode {
        self.execution
            .mode
            .or(manifest_default.default_mode)
            .unwrap_or_default()
    }

    /// The v1 level the reference derives from this node: the preset loses
    /// its `vm-` prefix (v2 presets are v1 presets renamed), and a `pve` node
    /// gets the `pve-setup` post scenario.
    pub fn to_level(&self) -> Level {
        let mut level = Level::named(self.name.clone());
        level.vm_preset = self
            .preset
            .as_deref()
            .map(|p| p.strip_prefix("vm-").unwrap_or(p).to_string());
        level.vmid = self.vmid;
        level.image = self.image.clone();
        if self.kind == NodeType::Pve {
            level.post_scenario = Some(PVE_POST_SCENARIO.to_string());
            level.post_scenario_args = PVE_POST_SCENARIO_ARGS.map(String::from).to_vec();
        }
        level
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, kind: NodeType) -> Node {
        Node::new(NodeName::new(name).unwrap(), kind)
    }

    #[test]
    fn level_conversion_strips_vm_prefix_and_adds_pve_setup() {
        let mut pve = node("root", NodeType::Pve);
        pve.preset = Some("vm-large".into());
        pve.vmid = Some(VmId::new(99011).unwrap());
        let level = pve.to_level();
        assert_eq!(level.vm_preset.as_deref(), Some("large"));
        assert_eq!(level.post_scenario.as_deref(), Some("pve-setup"));
        assert_eq!(level.post_scenario_args, ["--local", "--skip-preflight"]);

        let mut vm = node("edge", NodeType::Vm);
        vm.preset = Some("large".into());
        let level = vm.to_level();
        assert_eq!(level.vm_preset.as_deref(), Some("large"));
        assert_eq!(level.post_scenario, None);

        let spec_only = node("c", NodeType::Ct).to_level();
        assert!(!spec_only.is_inline());
    }

    #[test]
    fn execution_mode_falls_back_to_default_then_push() {
        let mut n = node("a", NodeType::Vm);
        let pull = Execution {
            default_mode: Some(ExecutionMode::Pull),
        };
        assert_eq!(n.execution_mode(&Execution::default()), ExecutionMode::Push);
        assert_eq!(n.execution_mode(&pull), ExecutionMode::Pull);
        n.execution.mode = Some(ExecutionMode::Push);
        assert_eq!(n.execution_mode(&pull), ExecutionMode::Push);
    }

    #[test]
    fn serialises_like_to_dict() {
        let mut n = node("mid-b", NodeType::Pve);
        n.parent = Some(NodeName::new("root-b").unwrap());
        n.execution.mode = Some(ExecutionMode::Push);
        assert_eq!(
            serde_json::to_value(&n).unwrap(),
            serde_json::json!({
                "name": "mid-b", "type": "pve", "parent": "root-b",
                "execution": {"mode": "push"}
            })
        );
    }
}
