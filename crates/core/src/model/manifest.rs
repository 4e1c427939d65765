//! The validated manifest: what every later stage consumes.
//!
//! A [`Manifest`] is either v1 (levels) or v2 (a node tree plus the levels
//! derived from it breadth-first). Depth-limiting or taking the "remaining"
//! levels of a v2 manifest keeps only levels, as the reference does: such a
//! manifest serialises as schema_version 2 with `levels` and cannot be
//! rebuilt from its own JSON ("Manifest v2 missing required field: nodes").

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;

use serde_json::{Value, json};

use super::error::{Error, Origin, Problem};
use super::parse::{self, Document};
use super::types::{Execution, ExecutionMode, NodeType, Pattern, Settings, Version};
use super::v1::{self, Level};
use super::v2::{self, Node};
use homestak_base::id::{NodeName, VmId};

/// Manifest schema version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaVersion {
    /// Levels.
    V1,
    /// Node tree.
    V2,
}

impl SchemaVersion {
    /// The number written in manifests.
    pub fn number(self) -> u8 {
        match self {
            SchemaVersion::V1 => 1,
            SchemaVersion::V2 => 2,
        }
    }
}

/// A validated manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    schema_version: SchemaVersion,
    name: String,
    description: String,
    settings: Settings,
    /// v1 levels, or the levels derived from the tree, in run order.
    levels: Vec<Level>,
    /// The node tree of a v2 manifest; `None` for v1 and for v2 manifests
    /// reduced to levels.
    tree: Option<Tree>,
}

/// The validated node tree of a v2 manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tree {
    pattern: Pattern,
    execution: Execution,
    /// In document order.
    nodes: Vec<Node>,
    /// Indices into `nodes`, parents before children, breadth-first.
    order: Vec<usize>,
}

impl Manifest {
    /// Reads and validates a YAML manifest file.
    pub fn from_file(path: &Path) -> Result<Manifest, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Manifest::from_yaml_str(&text, path)
    }

    /// Parses and validates YAML text read from `path` (named in errors).
    pub fn from_yaml_str(text: &str, path: &Path) -> Result<Manifest, Error> {
        let value: Value = homestak_base::yaml::from_str(text, path).map_err(|err| match err {
            homestak_base::yaml::Error::Parse {
                path,
                position,
                source,
            } => Error::Yaml {
                path,
                position,
                source,
            },
            homestak_base::yaml::Error::Read { path, source } => Error::Read { path, source },
            other => Error::YamlOther(other),
        })?;
        Manifest::from_value(&value, Origin::File(path.to_path_buf())).map_err(|err| match err {
            // Point at the offending value when the problem names one.
            Error::Invalid {
                origin,
                problem,
                position: None,
            } => {
                let position = problem
                    .path()
                    .and_then(|path| homestak_base::yaml::locate(text, &path));
                Error::Invalid {
                    origin,
                    problem,
                    position,
                }
            }
            other => other,
        })
    }

    /// Parses and validates a manifest serialised as JSON (the
    /// `--manifest-json` form, as produced by [`Manifest::to_json`]).
    pub fn from_json(text: &str) -> Result<Manifest, Error> {
        let value: Value = serde_json::from_str(text).map_err(|source| Error::Json { source })?;
        Manifest::from_value(&value, Origin::Json)
    }

    /// Validates an already parsed document.
    pub fn from_value(value: &Value, origin: Origin) -> Result<Manifest, Error> {
        let map = match value {
            Value::Object(map) => map,
            Value::Null => return Err(Error::Empty { origin }),
            other => {
                return Err(Error::NotAMapping {
                    origin,
                    found: parse::kind_of(other),
                });
            }
        };
        let invalid = |problem| Error::Invalid {
            origin: origin.clone(),
            problem: Box::new(problem),
            position: None,
        };
        match parse::document(map).map_err(invalid)? {
            Document::V1(doc) => Ok(Manifest::from_v1(doc)),
            Document::V2(doc) => Manifest::from_v2(doc).map_err(invalid),
        }
    }

    /// A v1 manifest from its (already typed) document.
    pub fn from_v1(doc: v1::Document) -> Manifest {
        Manifest {
            schema_version: SchemaVersion::V1,
            name: doc.name,
            description: doc.description,
            settings: doc.settings,
            levels: doc.levels,
            tree: None,
        }
    }

    /// A v2 manifest from its document, after the tree checks, in the
    /// reference's order (duplicate names, unknown parents, cycles), then
    /// ours (only `pve` nodes have children).
    pub fn from_v2(doc: v2::Document) -> Result<Manifest, Problem> {
        if doc.nodes.is_empty() {
            return Err(Problem::NoNodes);
        }
        let order = creation_order(&doc.nodes)?;
        let levels = order.iter().map(|&i| doc.nodes[i].to_level()).collect();
        Ok(Manifest {
            schema_version: SchemaVersion::V2,
            name: doc.name,
            description: doc.description,
            settings: doc.settings,
            levels,
            tree: Some(Tree {
                pattern: doc.pattern,
                execution: doc.execution,
                nodes: doc.nodes,
                order,
            }),
        })
    }

    /// Schema version (2 also for a v2 manifest reduced to levels).
    pub fn schema_version(&self) -> SchemaVersion {
        self.schema_version
    }

    /// Manifest identifier.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Human-readable description ("" when none).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Execution settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Levels in run order: v1 levels, or v2 nodes breadth-first.
    pub fn levels(&self) -> &[Level] {
        &self.levels
    }

    /// Number of levels (not the depth of the tree).
    pub fn depth(&self) -> usize {
        self.levels.len()
    }

    /// One level or none: nothing below to recurse into.
    pub fn is_leaf(&self) -> bool {
        self.depth() <= 1
    }

    /// True for a v2 manifest with its node tree.
    pub fn has_nodes(&self) -> bool {
        self.tree.is_some()
    }

    /// The nodes in document order (v2 with a tree only).
    pub fn nodes(&self) -> Option<&[Node]> {
        self.tree.as_ref().map(|t| t.nodes.as_slice())
    }

    /// The nodes parents first, breadth-first, siblings in document order.
    pub fn nodes_in_creation_order(&self) -> Option<Vec<&Node>> {
        self.tree
            .as_ref()
            .map(|t| t.order.iter().map(|&i| &t.nodes[i]).collect())
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes()?.iter().find(|n| n.name == name)
    }

    /// Topology pattern (v2 with a tree only).
    pub fn pattern(&self) -> Option<Pattern> {
        self.tree.as_ref().map(|t| t.pattern)
    }

    /// Manifest-wide execution defaults (v2 with a tree only).
    pub fn execution(&self) -> Option<&Execution> {
        self.tree.as_ref().map(|t| &t.execution)
    }

    /// How `node` is configured: its own mode, else the manifest default,
    /// else push.
    pub fn execution_mode(&self, node: &Node) -> ExecutionMode {
        let default = Execution::default();
        node.execution_mode(self.execution().unwrap_or(&default))
    }

    /// Gives node (or level) `name` the vmid `vmid` (`--vm-id NAME=ID`).
    pub fn set_vmid(&mut self, name: &NodeName, vmid: VmId) -> Result<(), Error> {
        let mut found = false;
        if let Some(tree) = self.tree.as_mut() {
            for node in tree.nodes.iter_mut().filter(|n| n.name == *name) {
                node.vmid = Some(vmid);
                found = true;
            }
        }
        for level in self.levels.iter_mut().filter(|l| l.name == *name) {
            level.vmid = Some(vmid);
            found = true;
        }
        if found {
            return Ok(());
        }
        Err(Error::UnknownNode {
            manifest: self.name.clone(),
            name: name.clone(),
            known: self.levels.iter().map(|l| l.name.to_string()).collect(),
        })
    }

    /// The v2 document of a manifest with a tree.
    pub fn to_v2_document(&self) -> Option<v2::Document> {
        let tree = self.tree.as_ref()?;
        Some(v2::Document {
            schema_version: Version,
            name: self.name.clone(),
            description: self.description.clone(),
            pattern: tree.pattern,
            nodes: tree.nodes.clone(),
            settings: self.settings.clone(),
            execution: tree.execution.clone(),
        })
    }

    /// The first `depth` levels, named `NAME[:depth]`; the manifest itself
    /// when `depth` is 0 or covers every level. A v2 manifest that is cut
    /// loses its node tree (reference behaviour).
    pub fn limit_depth(&self, depth: usize) -> Manifest {
        if depth == 0 || depth >= self.levels.len() {
            return self.clone();
        }
        self.levels_only(
            format!("{}[:{depth}]", self.name),
            self.levels[..depth].to_vec(),
        )
    }

    /// Every level after the first, named `NAME[1:]`, as used when a level
    /// recurses into the host it created. Loses a v2 node tree.
    pub fn remaining(&self) -> Result<Manifest, Error> {
        if self.is_leaf() {
            return Err(Error::AlreadyLeaf {
                name: self.name.clone(),
            });
        }
        Ok(self.levels_only(format!("{}[1:]", self.name), self.levels[1..].to_vec()))
    }

    /// The levels after the first, as the manifest the first level's host
    /// converges (`FIRST-subtree`, a name a child tier can key it by).
    pub fn levels_below_first(&self) -> Result<Manifest, Error> {
        if self.is_leaf() {
            return Err(Error::AlreadyLeaf {
                name: self.name.clone(),
            });
        }
        Ok(self.levels_only(
            format!("{}-subtree", self.levels[0].name),
            self.levels[1..].to_vec(),
        ))
    }

    fn levels_only(&self, name: String, levels: Vec<Level>) -> Manifest {
        Manifest {
            schema_version: self.schema_version,
            name,
            description: self.description.clone(),
            settings: self.settings.clone(),
            levels,
            tree: None,
        }
    }

    /// The reference's `to_dict`: a v2 manifest with a tree as its v2
    /// document, anything else as levels. The levels form drops
    /// `settings.on_error` (reference behaviour).
    pub fn to_value(&self) -> Value {
        if let Some(doc) = self.to_v2_document() {
            // Plain data; serialising it cannot fail.
            return serde_json::to_value(doc).unwrap_or(Value::Null);
        }
        let levels: Vec<Value> = self
            .levels
            .iter()
            .map(|l| serde_json::to_value(l).unwrap_or(Value::Null))
            .collect();
        json!({
            "schema_version": self.schema_version.number(),
            "name": self.name,
            "description": self.description,
            "levels": levels,
            "settings": {
                "verify_ssh": self.settings.verify_ssh,
                "cleanup_on_failure": self.settings.cleanup_on_failure,
                "timeout_buffer": self.settings.timeout_buffer,
            },
        })
    }

    /// [`Manifest::to_value`] as compact JSON, the form `--manifest-json`
    /// takes.
    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }
}

impl serde::Serialize for Manifest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

/// Checks the tree (the reference's checks, then ours: a parent must be a
/// `pve` node) and returns node indices parents first, breadth-first,
/// roots and siblings in document order.
fn creation_order(nodes: &[Node]) -> Result<Vec<usize>, Problem> {
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        if index.insert(node.name.as_str(), i).is_some() {
            return Err(Problem::DuplicateName {
                name: node.name.to_string(),
            });
        }
    }
    let mut parent_of: Vec<Option<usize>> = Vec::with_capacity(nodes.len());
    for node in nodes {
        parent_of.push(match &node.parent {
            None => None,
            Some(parent) => {
                Some(
                    *index
                        .get(parent.as_str())
                        .ok_or_else(|| Problem::UnknownParent {
                            node: node.name.to_string(),
                            parent: parent.to_string(),
                        })?,
                )
            }
        });
    }
    check_acyclic(nodes, &parent_of)?;
    for (node, parent) in nodes.iter().zip(&parent_of) {
        if let Some(p) = parent
            && nodes[*p].kind != NodeType::Pve
        {
            return Err(Problem::ParentNotPve {
                node: node.name.to_string(),
                parent: nodes[*p].name.to_string(),
                parent_type: nodes[*p].kind,
            });
        }
    }

    let mut children: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    let mut queue = VecDeque::new();
    for (i, parent) in parent_of.iter().enumerate() {
        match parent {
            Some(p) => children[*p].push(i),
            None => queue.push_back(i),
        }
    }
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(i) = queue.pop_front() {
        order.push(i);
        queue.extend(children[i].iter().copied());
    }
    Ok(order)
}

/// Walks up from each node in document order; revisiting a node of the
/// current walk means a cycle, reported at that node (a node that is its own
/// parent is the smallest cycle).
fn check_acyclic(nodes: &[Node], parent_of: &[Option<usize>]) -> Result<(), Problem> {
    let mut known_acyclic: HashSet<usize> = HashSet::new();
    for start in 0..nodes.len() {
        let mut walk: Vec<usize> = Vec::new();
        let mut on_walk: HashSet<usize> = HashSet::new();
        let mut current = Some(start);
        while let Some(i) = current {
            if known_acyclic.contains(&i) {
                break;
            }
            if !on_walk.insert(i) {
                return Err(Problem::Cycle {
                    node: nodes[i].name.to_string(),
                });
            }
            walk.push(i);
            current = parent_of[i];
        }
        known_acyclic.extend(walk);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
