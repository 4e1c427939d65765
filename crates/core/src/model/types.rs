//! Small value types shared by v1 and v2 manifests: keyword enums, settings
//! and execution preferences.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Declares a keyword enum: serde and JSON Schema use the lowercase keyword,
/// and `KEYWORDS` lists them for error messages.
macro_rules! keyword_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident => $kw:literal, )+ }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $kw)] $variant, )+
        }

        impl $name {
            /// Every keyword, in declaration order.
            pub const KEYWORDS: &'static [&'static str] = &[$($kw),+];

            /// The keyword as written in a manifest.
            pub fn as_str(self) -> &'static str {
                match self { $( $name::$variant => $kw, )+ }
            }

            /// Parses a keyword; `None` when it is not one of [`Self::KEYWORDS`].
            pub fn parse(keyword: &str) -> Option<Self> {
                match keyword { $( $kw => Some($name::$variant), )+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

keyword_enum! {
    /// What a v2 node becomes.
    pub enum NodeType {
        /// A KVM virtual machine.
        Vm => "vm",
        /// An LXC container.
        Ct => "ct",
        /// A VM turned into a Proxmox VE host; its children run on it.
        Pve => "pve",
    }
}

keyword_enum! {
    /// What to do when a node fails.
    #[derive(Default)]
    pub enum OnError {
        /// Halt at the first failure.
        #[default]
        Stop => "stop",
        /// Destroy what was created, then halt.
        Rollback => "rollback",
        /// Skip the failed node (and what depends on it) and go on.
        Continue => "continue",
    }
}

keyword_enum! {
    /// How a node is configured once it exists.
    #[derive(Default)]
    pub enum ExecutionMode {
        /// The controller connects over SSH and drives it.
        #[default]
        Push => "push",
        /// The node fetches its spec itself (deferred).
        Pull => "pull",
    }
}

keyword_enum! {
    /// How a `pve` node's child tier is run (`--delegate`, or per node in
    /// `execution.delegate`).
    #[derive(Default)]
    pub enum Delegate {
        /// A child daemon (`homestak serve`) is handed the subtree.
        #[default]
        Daemon => "daemon",
        /// `homestak reconcile --once --manifest-json … --json` over SSH.
        Ssh => "ssh",
    }
}

keyword_enum! {
    /// Topology shape of a v2 manifest (informative).
    #[derive(Default)]
    pub enum Pattern {
        /// Everything on the target host.
        #[default]
        Flat => "flat",
        /// Parent-child nesting.
        Tiered => "tiered",
    }
}

/// The literal schema version `N` of a document type: serialises as the
/// number and describes itself as `const: N` in JSON Schema.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Version<const N: u8>;

impl<const N: u8> Serialize for Version<N> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(N)
    }
}

impl<const N: u8> JsonSchema for Version<N> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        format!("SchemaVersion{N}").into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "integer",
            "const": N,
            "description": format!("Manifest schema version; must be {N}")
        })
    }

    fn inline_schema() -> bool {
        true
    }
}

/// Execution settings of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Verify SSH access at each node.
    pub verify_ssh: bool,
    /// Destroy created nodes on failure.
    pub cleanup_on_failure: bool,
    /// Extra timeout seconds per nesting level.
    pub timeout_buffer: u32,
    /// Error handling: stop (halt), rollback (destroy created), continue
    /// (skip failed).
    // Kept for v1 manifests too, although the reference's v1 serialisation
    // drops it.
    pub on_error: OnError,
    /// Lifecycle timeouts in seconds; unset ones keep their defaults
    /// (flags override both).
    #[serde(skip_serializing_if = "Timeouts::is_empty")]
    pub timeouts: Timeouts,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            verify_ssh: true,
            cleanup_on_failure: true,
            timeout_buffer: 60,
            on_error: OnError::Stop,
            timeouts: Timeouts::default(),
        }
    }
}

/// The lifecycle timeouts a manifest may set, in seconds (the Python
/// tool's phases: `wait_ip` 300, `bootstrap` 600, `configure_bridge` 120,
/// `download_images` 300, `subtree_delegation` 1200).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_ip: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configure_bridge: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_images: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subtree_delegation: Option<u32>,
}

impl Timeouts {
    /// True when none is set.
    pub fn is_empty(&self) -> bool {
        *self == Timeouts::default()
    }

    /// Each one `other` sets replaces this one's.
    pub fn overridden_by(&self, other: &Timeouts) -> Timeouts {
        Timeouts {
            wait_ip: other.wait_ip.or(self.wait_ip),
            bootstrap: other.bootstrap.or(self.bootstrap),
            configure_bridge: other.configure_bridge.or(self.configure_bridge),
            download_images: other.download_images.or(self.download_images),
            subtree_delegation: other.subtree_delegation.or(self.subtree_delegation),
        }
    }
}

impl Settings {
    /// [`Settings::timeout_buffer`] as a duration.
    pub fn timeout_buffer_duration(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.timeout_buffer))
    }
}

/// Manifest-wide execution defaults (v2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Execution {
    /// Default execution mode of every node (push when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_mode: Option<ExecutionMode>,
}

impl Execution {
    /// True when nothing is set (the reference then omits the mapping).
    pub fn is_empty(&self) -> bool {
        self.default_mode.is_none()
    }
}

/// Per-node execution overrides (v2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NodeExecution {
    /// Overrides the manifest's default mode for this node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<ExecutionMode>,
    /// For a `pve` node: how its child tier is run (default: the
    /// `--delegate` flag's, itself `daemon` by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
}

impl NodeExecution {
    /// True when nothing is set (the reference then omits the mapping).
    pub fn is_empty(&self) -> bool {
        self.mode.is_none() && self.delegate.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_round_trip() {
        for kw in NodeType::KEYWORDS {
            assert_eq!(NodeType::parse(kw).map(NodeType::as_str), Some(*kw));
        }
        assert_eq!(OnError::parse("rollback"), Some(OnError::Rollback));
        assert_eq!(OnError::parse("Stop"), None, "keywords are case-sensitive");
        assert_eq!(
            serde_json::to_value(ExecutionMode::Pull).unwrap(),
            serde_json::json!("pull")
        );
    }

    #[test]
    fn settings_defaults_match_the_reference() {
        let s = Settings::default();
        assert!(s.verify_ssh && s.cleanup_on_failure);
        assert_eq!(s.timeout_buffer, 60);
        assert_eq!(s.on_error, OnError::Stop);
        assert_eq!(s.timeout_buffer_duration().as_secs(), 60);
    }
}
