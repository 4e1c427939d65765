//! Errors of the manifest model.
//!
//! Messages the reference (iac-driver) also produces keep its exact wording,
//! so users see what they know and the goldens can compare text. Errors about
//! a file name it; a [`Problem`] found inside a manifest does not repeat the
//! file in its text (the reference doesn't), but carries it as an
//! [`Origin`] so [`Error::located`] can print `file: problem`.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a manifest came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A YAML file.
    File(PathBuf),
    /// A JSON string (e.g. `--manifest-json`).
    Json,
    /// Built in code (a subtree, a depth-limited copy).
    Memory,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Json => f.write_str("manifest JSON"),
            Origin::Memory => f.write_str("manifest (built in memory)"),
        }
    }
}

/// A manifest could not be loaded, or an operation on it is impossible.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read manifest {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML.
    #[error("Invalid YAML in manifest {}{}", path.display(), Position(*position))]
    Yaml {
        path: PathBuf,
        /// 1-based `(line, column)` when the parser knows it.
        position: Option<(u64, u64)>,
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    /// Another YAML-level refusal (a duplicate key).
    #[error(transparent)]
    YamlOther(homestak_base::yaml::Error),
    /// The string is not valid JSON.
    #[error("Invalid manifest JSON")]
    Json {
        #[source]
        source: serde_json::Error,
    },
    /// The document is empty (or only comments, or `null`). From a file,
    /// the reference's wording: to it, an empty document is not a mapping.
    #[error("{}", empty(origin))]
    Empty { origin: Origin },
    /// The document is a list or a scalar instead of a mapping.
    #[error("{}", not_a_mapping(origin, found))]
    NotAMapping {
        origin: Origin,
        /// What the document is instead ("a list", "a string", ...).
        found: &'static str,
    },
    /// No manifest of that name in the site-config.
    #[error(
        "Manifest '{name}' not found at {}. Available: {}",
        path.display(),
        available_list(available)
    )]
    NotFound {
        name: String,
        path: PathBuf,
        /// Names of the manifests that do exist, sorted.
        available: Vec<String>,
    },
    /// A manifest name that is not a plain file name.
    #[error(
        "invalid manifest name '{name}': use the file name in manifests/ without .yaml (no '/', not starting with '.')"
    )]
    BadName { name: String },
    /// `--vm-id NAME=ID` names no node of the manifest.
    #[error("--vm-id {name}=…: manifest {manifest} has no node {name} (it has: {})", known.join(", "))]
    UnknownNode {
        manifest: String,
        name: homestak_base::id::NodeName,
        known: Vec<String>,
    },
    /// The manifests directory could not be listed.
    #[error("cannot list manifests in {}", dir.display())]
    List {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The document parsed but is not a valid manifest. `position` is the
    /// 1-based `(line, column)` of the offending value, when the problem
    /// names one and the manifest came from a file.
    #[error("{problem}")]
    Invalid {
        origin: Origin,
        /// Boxed: a problem carries names and places, and errors travel
        /// in `Result`s everywhere.
        problem: Box<Problem>,
        position: Option<(u64, u64)>,
    },
    /// `remaining()` on a manifest with a single level.
    #[error("Cannot get remaining manifest: already at leaf level")]
    AlreadyLeaf { name: String },
}

impl Error {
    /// The file this error is about, when there is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Error::Read { path, .. } | Error::Yaml { path, .. } | Error::NotFound { path, .. } => {
                Some(path)
            }
            Error::YamlOther(err) => Some(err.path()),
            Error::Empty { origin }
            | Error::NotAMapping { origin, .. }
            | Error::Invalid { origin, .. } => match origin {
                Origin::File(path) => Some(path),
                Origin::Json | Origin::Memory => None,
            },
            Error::Json { .. }
            | Error::BadName { .. }
            | Error::List { .. }
            | Error::AlreadyLeaf { .. }
            | Error::UnknownNode { .. } => None,
        }
    }

    /// The problem inside the manifest, for validation errors.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Error::Invalid { problem, .. } => Some(problem),
            _ => None,
        }
    }

    /// The message with the manifest's origin in front when the message
    /// itself does not name it (validation problems): what a CLI prints.
    pub fn located(&self) -> Located<'_> {
        Located(self)
    }
}

/// Display adapter returned by [`Error::located`].
pub struct Located<'a>(&'a Error);

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Error::Invalid {
                origin,
                problem,
                position,
            } => write!(f, "{origin}{}: {problem}", Position(*position)),
            other => write!(f, "{other}"),
        }
    }
}

fn not_a_mapping(origin: &Origin, found: &str) -> String {
    match origin {
        // The reference's wording, byte for byte.
        Origin::File(path) => format!("Manifest {} must be a YAML object (dict)", path.display()),
        Origin::Json => format!("Manifest JSON must be a JSON object, got {found}"),
        Origin::Memory => format!("Manifest must be a mapping, got {found}"),
    }
}

fn empty(origin: &Origin) -> String {
    match origin {
        Origin::File(_) => not_a_mapping(origin, "nothing"),
        Origin::Json | Origin::Memory => format!(
            "Manifest {origin} is empty: it must be a mapping with schema_version, name and nodes (v2) or levels (v1)"
        ),
    }
}

fn available_list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// Renders `:line:column` when known.
struct Position(Option<(u64, u64)>);

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some((line, column)) => write!(f, ":{line}:{column}"),
            None => Ok(()),
        }
    }
}

/// What is wrong inside a manifest document.
///
/// `place` fields read like "Node 1 (edge)", "Level 0", "settings" or
/// "manifest"; indices are 0-based, as in the reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// `schema_version` is neither 1 nor 2. `shown` is the value as the
    /// reference prints it (a quoted "2" shows as 2).
    #[error("Unsupported manifest schema version: {shown}. Supported versions: [1, 2]")]
    UnsupportedSchemaVersion { shown: String },
    #[error("Manifest missing required field: name")]
    MissingName,
    /// A manifest name the ownership marks cannot carry as it is (our
    /// check): refused, never trimmed, so a VM's marks always name the
    /// manifest that made it.
    #[error("manifest name {name:?} is not valid: {MANIFEST_NAME_RULE}")]
    InvalidManifestName { name: String },
    #[error("Manifest missing required field: levels")]
    MissingLevels,
    #[error("Manifest must have at least one level")]
    NoLevels,
    #[error("Level {index} missing required field: name")]
    LevelMissingName { index: usize },
    #[error("Level {index} ({name}) requires 'vm_preset', 'template', or 'env'")]
    LevelWithoutMode { index: usize, name: String },
    #[error("Manifest v2 missing required field: nodes")]
    MissingNodes,
    #[error("Manifest v2 must have at least one node")]
    NoNodes,
    #[error("Node {index} missing required field: name")]
    NodeMissingName { index: usize },
    #[error("Node {index} ({name}) missing required field: type")]
    NodeMissingType { index: usize, name: String },
    #[error("Duplicate node name: '{name}'")]
    DuplicateName { name: String },
    #[error("Node '{node}' references unknown parent '{parent}'")]
    UnknownParent { node: String, parent: String },
    /// Also reported for a node that is its own parent, as the reference does.
    #[error("Cycle detected in node graph involving '{node}'")]
    Cycle { node: String },
    /// Only a `pve` node becomes a host that can run children (our check;
    /// the reference accepted this and failed later).
    #[error(
        "Node '{node}' has parent '{parent}' of type {parent_type}: only pve nodes can have children"
    )]
    ParentNotPve {
        node: String,
        parent: String,
        parent_type: crate::model::NodeType,
    },
    /// An entry of `nodes`/`levels` that is not a mapping.
    #[error("{place} must be a mapping, got {found}")]
    NotAMapping { place: String, found: &'static str },
    #[error("{place}: field '{field}' must be {expected}, got {found}")]
    WrongType {
        place: String,
        field: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{place}: field '{field}' has unknown value '{value}'; expected one of: {}", expected.join(", "))]
    UnknownValue {
        place: String,
        field: String,
        value: String,
        expected: &'static [&'static str],
    },
    #[error("{place}: unknown field '{field}'; known fields: {}", known.join(", "))]
    UnknownField {
        place: String,
        field: String,
        known: &'static [&'static str],
    },
    /// A node's `name` or `parent` that is not a DNS name (PVE's VM name).
    #[error("{place}: {reason}")]
    InvalidNodeName {
        place: String,
        /// Where the value is: `nodes`/`levels`, the index, `name`/`parent`.
        list: &'static str,
        index: usize,
        field: &'static str,
        reason: homestak_base::id::InvalidNodeName,
    },
    /// A value the format or PVE refuses (a vmid out of range, a zero
    /// disk); `reason` says why.
    #[error("{place}: {reason}")]
    InvalidValue { place: String, reason: String },
}

/// What a manifest name may be, as [`Problem::InvalidManifestName`] says it.
pub const MANIFEST_NAME_RULE: &str = "use 1 to 64 letters, digits and '.', '_', '-', ':', '[', \
     ']', starting with a letter or digit (the name is written into every VM's ownership marks, \
     which carry no spaces or other characters)";

/// Longest manifest name.
pub const MANIFEST_NAME_MAX: usize = 64;

/// Whether `name` follows [`MANIFEST_NAME_RULE`]. `:`, `[` and `]` are
/// there for the names the reference gives a part of a manifest
/// (`NAME[:2]`, `NAME[1:]`), which travel as JSON; the marks carry them.
pub fn is_manifest_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.len() <= MANIFEST_NAME_MAX
        && bytes.iter().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'[' | b']')
        })
}

impl Problem {
    /// Where in the document the offending value is, for problems about
    /// one value.
    pub fn path(&self) -> Option<Vec<homestak_base::yaml::Step>> {
        use homestak_base::yaml::Step;
        match self {
            Problem::InvalidManifestName { .. } => Some(vec![Step::Key("name".into())]),
            Problem::InvalidNodeName {
                list, index, field, ..
            } => Some(vec![
                Step::Key((*list).into()),
                Step::Index(*index),
                Step::Key((*field).into()),
            ]),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_names_are_what_marks_carry() {
        for ok in [
            "n2-quick",
            "demo",
            "a",
            "site_1.v2",
            "X",
            "lab[:2]",
            "lab[1:]",
        ] {
            assert!(is_manifest_name(ok), "{ok:?}");
        }
        for bad in [
            "", " demo", "demo ", "-x", ".x", "_x", "a b", "a\tb", "a\nb", "é", "a/b", "[x]",
        ] {
            assert!(!is_manifest_name(bad), "{bad:?}");
        }
        assert!(is_manifest_name(&"a".repeat(64)));
        assert!(!is_manifest_name(&"a".repeat(65)));
    }

    #[test]
    fn located_prefixes_only_problems() {
        let invalid = Error::Invalid {
            origin: Origin::File(PathBuf::from("/s/manifests/x.yaml")),
            problem: Box::new(Problem::DuplicateName { name: "a".into() }),
            position: None,
        };
        assert_eq!(invalid.to_string(), "Duplicate node name: 'a'");
        assert_eq!(
            invalid.located().to_string(),
            "/s/manifests/x.yaml: Duplicate node name: 'a'"
        );
        let placed = Error::Invalid {
            origin: Origin::File(PathBuf::from("/s/m.yaml")),
            problem: Box::new(Problem::InvalidManifestName {
                name: " demo".into(),
            }),
            position: Some((2, 7)),
        };
        assert!(
            placed
                .located()
                .to_string()
                .starts_with("/s/m.yaml:2:7: manifest name \" demo\" is not valid: use 1 to 64"),
            "{}",
            placed.located()
        );
        let not_map = Error::NotAMapping {
            origin: Origin::File(PathBuf::from("/s/m.yaml")),
            found: "a list",
        };
        assert_eq!(
            not_map.located().to_string(),
            "Manifest /s/m.yaml must be a YAML object (dict)"
        );
    }

    /// An empty manifest file gets the reference's "must be a YAML object"
    /// (PyYAML reads it as None); JSON keeps the explanation.
    #[test]
    fn an_empty_file_is_not_a_mapping() {
        let empty = Error::Empty {
            origin: Origin::File(PathBuf::from("/s/manifests/e.yaml")),
        };
        assert_eq!(
            empty.to_string(),
            "Manifest /s/manifests/e.yaml must be a YAML object (dict)"
        );
        let json = Error::Empty {
            origin: Origin::Json,
        };
        assert!(json.to_string().contains("is empty"), "{json}");
    }

    #[test]
    fn not_found_lists_available_or_none() {
        let err = Error::NotFound {
            name: "n2-quick".into(),
            path: PathBuf::from("/s/manifests/n2-quick.yaml"),
            available: vec![],
        };
        assert_eq!(
            err.to_string(),
            "Manifest 'n2-quick' not found at /s/manifests/n2-quick.yaml. Available: none"
        );
    }
}
