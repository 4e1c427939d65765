//! Identifier newtypes: a manifest node's name, a PVE VM id, and the name of
//! a Proxmox VE node (a host in a PVE cluster, `pve` in API paths).
//!
//! Each is checked once, where it enters the program, so the rest of the
//! workspace never sees a VM id PVE would refuse or a name it could not use
//! as a hostname, and never mixes a manifest node up with a PVE node.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Regex of a DNS name as PVE's `dns-name` format accepts it (dot-separated
/// labels of letters, digits and inner hyphens). Kept as a string for the
/// JSON Schema; [`is_dns_name`] is the code that enforces it.
const DNS_NAME_PATTERN: &str =
    r"^([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?\.)*[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$";

/// Longest name a DNS host name may have.
const DNS_NAME_MAX: usize = 253;

/// The name of a manifest node (v2) or level (v1).
///
/// It becomes the VM's name and hostname in PVE, whose `name` parameter has
/// the `dns-name` format, so it is checked against that format up front:
/// a bad name fails at validation instead of halfway through a converge.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeName(String);

/// A string that is not a valid node name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not a valid node name: use letters, digits, '-' and '.', starting and ending with a letter or digit (PVE uses it as a DNS name)"
)]
pub struct InvalidNodeName(pub String);

impl NodeName {
    /// Checks `name` against PVE's `dns-name` format.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidNodeName> {
        let name = name.into();
        if is_dns_name(&name) {
            Ok(NodeName(name))
        } else {
            Err(InvalidNodeName(name))
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One DNS label: letters, digits and inner hyphens.
pub fn is_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        }
        _ => false,
    }
}

fn is_dns_name(name: &str) -> bool {
    name.len() <= DNS_NAME_MAX && name.split('.').all(is_label)
}

impl std::str::FromStr for NodeName {
    type Err = InvalidNodeName;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        NodeName::new(text)
    }
}

impl TryFrom<String> for NodeName {
    type Error = InvalidNodeName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        NodeName::new(value)
    }
}

impl From<NodeName> for String {
    fn from(value: NodeName) -> Self {
        value.0
    }
}

impl AsRef<str> for NodeName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for NodeName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    /// The name, padded as the format asks (`{:<8}` lines up tables).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl PartialEq<str> for NodeName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for NodeName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for NodeName {
    fn eq(&self, other: &String) -> bool {
        self.0 == *other
    }
}

impl JsonSchema for NodeName {
    fn schema_name() -> Cow<'static, str> {
        "NodeName".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DNS_NAME_PATTERN,
            "maxLength": DNS_NAME_MAX,
            "description": "Node name, used as the VM name and hostname (a DNS name)"
        })
    }
}

/// A Proxmox VE VM id (`vmid`), within the range PVE accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u32")]
pub struct VmId(u32);

/// A number outside the range of PVE VM ids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("vmid {0} is out of range: PVE accepts {min} to {max}", min = VmId::MIN, max = VmId::MAX)]
pub struct InvalidVmId(pub i128);

impl VmId {
    /// Smallest id PVE accepts (lower ids are reserved).
    pub const MIN: u32 = 100;
    /// Largest id PVE accepts.
    pub const MAX: u32 = 999_999_999;

    /// Checks `id` against PVE's range.
    pub fn new(id: i128) -> Result<Self, InvalidVmId> {
        match u32::try_from(id) {
            Ok(v) if (Self::MIN..=Self::MAX).contains(&v) => Ok(VmId(v)),
            _ => Err(InvalidVmId(id)),
        }
    }

    /// The id as a number.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The id after this one, if PVE accepts it.
    pub fn next(self) -> Option<VmId> {
        VmId::new(i128::from(self.0) + 1).ok()
    }
}

impl TryFrom<u64> for VmId {
    type Error = InvalidVmId;
    fn try_from(value: u64) -> Result<Self, Self::Error> {
        VmId::new(i128::from(value))
    }
}

impl From<VmId> for u32 {
    fn from(value: VmId) -> Self {
        value.0
    }
}

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl JsonSchema for VmId {
    fn schema_name() -> Cow<'static, str> {
        "VmId".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "integer",
            "minimum": VmId::MIN,
            "maximum": VmId::MAX,
            "description": "Explicit PVE VM id"
        })
    }
}

impl PartialEq<u32> for VmId {
    fn eq(&self, other: &u32) -> bool {
        self.0 == *other
    }
}

impl From<VmId> for u64 {
    fn from(value: VmId) -> Self {
        u64::from(value.0)
    }
}

/// Text that is not a vmid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a vmid: PVE accepts whole numbers from {min} to {max}", min = VmId::MIN, max = VmId::MAX)]
pub struct ParseVmIdError {
    pub text: String,
}

impl std::str::FromStr for VmId {
    type Err = ParseVmIdError;

    /// A decimal number in PVE's range.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.trim()
            .parse::<i128>()
            .ok()
            .and_then(|n| VmId::new(n).ok())
            .ok_or_else(|| ParseVmIdError {
                text: text.to_string(),
            })
    }
}

/// The name of a Proxmox VE node: the host in `/nodes/{node}/…` paths
/// (`pve-node` format: one DNS label).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PveNode(String);

/// A string that is not a PVE node name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not a valid PVE node name: use letters, digits and inner '-' (one DNS label, as `hostname -s` prints)"
)]
pub struct InvalidPveNode(pub String);

impl PveNode {
    /// Checks `name` against PVE's `pve-node` format.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidPveNode> {
        let name = name.into();
        if is_label(&name) && name.len() <= 63 {
            Ok(PveNode(name))
        } else {
            Err(InvalidPveNode(name))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for PveNode {
    type Err = InvalidPveNode;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        PveNode::new(text)
    }
}

impl TryFrom<String> for PveNode {
    type Error = InvalidPveNode;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        PveNode::new(value)
    }
}

impl From<PveNode> for String {
    fn from(value: PveNode) -> Self {
        value.0
    }
}

impl AsRef<str> for PveNode {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PveNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl PartialEq<str> for PveNode {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for PveNode {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl JsonSchema for PveNode {
    fn schema_name() -> Cow<'static, str> {
        "PveNode".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": LABEL_PATTERN,
            "maxLength": 63,
            "description": "Proxmox VE node name (the host in API paths)"
        })
    }
}

/// Regex of one DNS label, as PVE's `pve-node` format accepts it.
const LABEL_PATTERN: &str = r"^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_follow_pve_dns_name() {
        for ok in ["edge", "root-pve", "d0", "a.b-c", "X1", "n2-quick"] {
            assert!(NodeName::new(ok).is_ok(), "{ok} should be valid");
        }
        for bad in ["", "-a", "a-", "a b", "a_b", "a..b", ".a", "a/b", "é"] {
            assert!(NodeName::new(bad).is_err(), "{bad:?} should be invalid");
        }
        assert!(NodeName::new("a".repeat(254)).is_err());
    }

    #[test]
    fn vmids_are_in_pve_range() {
        assert_eq!(VmId::new(100).unwrap().get(), 100);
        assert_eq!(VmId::new(999_999_999).unwrap().get(), 999_999_999);
        for bad in [-1, 0, 99, 1_000_000_000, i128::from(u64::MAX)] {
            assert!(VmId::new(bad).is_err(), "{bad}");
        }
        assert_eq!(
            VmId::new(5).unwrap_err().to_string(),
            "vmid 5 is out of range: PVE accepts 100 to 999999999"
        );
    }

    #[test]
    fn display_honours_width() {
        let name = NodeName::new("a").unwrap();
        assert_eq!(format!("[{name:<4}]"), "[a   ]");
        let id = VmId::new(100).unwrap();
        assert_eq!(format!("[{id:>5}]"), "[  100]");
    }

    #[test]
    fn pve_node_names_are_one_label() {
        for ok in ["pve", "father", "pve-1", "X1"] {
            assert_eq!(PveNode::new(ok).unwrap(), ok);
        }
        for bad in ["", "a.b", "-a", "a_b", "a b"] {
            assert!(PveNode::new(bad).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<PveNode>("\"a.b\"").is_err());
        assert_eq!("99001".parse::<VmId>().unwrap().get(), 99001);
        assert!("99".parse::<VmId>().is_err());
        assert!("x".parse::<VmId>().is_err());
    }

    #[test]
    fn serde_round_trip_checks_values() {
        let id: VmId = serde_json::from_str("99001").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "99001");
        assert!(serde_json::from_str::<VmId>("42").is_err());
        let name: NodeName = serde_json::from_str("\"edge\"").unwrap();
        assert_eq!(name, "edge");
        assert!(serde_json::from_str::<NodeName>("\"bad name\"").is_err());
    }
}
