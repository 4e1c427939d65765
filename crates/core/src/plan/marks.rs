//! Ownership marks: how a VM says "homestak made me, for this manifest node".
//!
//! Two marks, both required to prove ownership:
//! - the PVE tag [`TAG`], visible in the bulk `/cluster/resources` read, so
//!   candidates are found without reading every VM's config;
//! - structured lines in the VM description (PVE "notes"), naming the
//!   manifest, node, image and spec hash.
//!
//! PVE reuses vmids, so a vmid match alone proves nothing; a VM without both
//! marks is never modified or deleted.

use homestak_base::id::NodeName;
use serde::{Deserialize, Serialize};

/// The tag every homestak-owned VM carries.
pub const TAG: &str = "homestak";

const HEADER: &str =
    "Managed by homestak: changes made here are overwritten; edit the manifest instead.";
const PREFIX: &str = "homestak.";

/// The structured part of a description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marks {
    pub manifest: String,
    pub node: NodeName,
    pub image: String,
    pub spec_hash: String,
}

impl Marks {
    /// The description text to store in PVE.
    pub fn to_description(&self) -> String {
        format!(
            "{HEADER}\n{PREFIX}manifest: {}\n{PREFIX}node: {}\n{PREFIX}image: {}\n{PREFIX}spec: {}\n",
            self.manifest, self.node, self.image, self.spec_hash
        )
    }

    /// Reads marks from a description; `None` unless every field is present.
    /// Other text around the marks is ignored.
    pub fn from_description(description: &str) -> Option<Marks> {
        let mut manifest = None;
        let mut node = None;
        let mut image = None;
        let mut spec_hash = None;
        for line in description.lines() {
            let Some(rest) = line.trim().strip_prefix(PREFIX) else {
                continue;
            };
            let Some((key, value)) = rest.split_once(':') else {
                continue;
            };
            let value = Some(value.trim().to_string());
            match key.trim() {
                "manifest" => manifest = value,
                "node" => node = value,
                "image" => image = value,
                "spec" => spec_hash = value,
                _ => {}
            }
        }
        Some(Marks {
            manifest: manifest.filter(|s| !s.is_empty())?,
            // A node no manifest could name marks nothing of ours.
            node: node.and_then(|s| NodeName::new(s).ok())?,
            image: image?,
            spec_hash: spec_hash?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks() -> Marks {
        Marks {
            manifest: "n2-quick".into(),
            node: NodeName::new("edge").unwrap(),
            image: "debian-12".into(),
            spec_hash: "sha256:0011".into(),
        }
    }

    #[test]
    fn description_round_trips() {
        let m = marks();
        assert_eq!(Marks::from_description(&m.to_description()), Some(m));
    }

    #[test]
    fn surrounding_notes_are_ignored() {
        let text = format!("my own note\n\n{}\nmore", marks().to_description());
        assert_eq!(Marks::from_description(&text), Some(marks()));
    }

    #[test]
    fn partial_or_foreign_descriptions_are_not_marks() {
        assert_eq!(Marks::from_description(""), None);
        assert_eq!(Marks::from_description("homestak.manifest: x\n"), None);
        let no_node = marks()
            .to_description()
            .replace("homestak.node: edge\n", "");
        assert_eq!(Marks::from_description(&no_node), None);
        let empty_node = marks()
            .to_description()
            .replace("homestak.node: edge", "homestak.node:");
        assert_eq!(Marks::from_description(&empty_node), None);
    }
}
