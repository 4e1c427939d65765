//! The manifest DAG: a v2 manifest's nodes as a petgraph graph with an edge
//! from each parent to each child.
//!
//! It answers the questions the executor and delegation ask: create order
//! (parents first, breadth-first, siblings in document order, like the
//! reference), destroy order (children first: the reverse), each node's
//! depth, roots and leaves, the context key under which a node finds its
//! parent's address, and the subtree a `pve` node hands to the child
//! reconciler running on it.
//!
//! The [`Manifest`] has already rejected duplicates, unknown parents and
//! cycles, so building the graph cannot fail except on a v1 manifest (or a
//! v2 manifest reduced to levels), which has no nodes.

use std::collections::{HashMap, VecDeque};

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::model::{self, Manifest, Node, Version};

/// The graph could not be built, or a query on it is impossible.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// v1 manifests (and v2 manifests reduced to levels) have no node tree.
    #[error("ManifestGraph requires a v2 manifest with nodes")]
    NotV2 { manifest: String },
    /// No node of that name.
    #[error("Node '{node}' not found in manifest '{manifest}'")]
    UnknownNode { manifest: String, node: String },
    /// Subtree extraction of a leaf.
    #[error("Node '{node}' has no children to extract")]
    NoChildren { node: String },
    /// The extracted subtree failed validation (a bug: a subtree of a valid
    /// tree is valid).
    #[error("the subtree below '{node}' is not a valid manifest: {problem}")]
    InvalidSubtree {
        node: String,
        problem: model::Problem,
    },
}

/// Context key of the address a root node is reached through (the target
/// host's SSH address).
pub const ROOT_PARENT_IP_KEY: &str = "ssh_host";

/// The DAG of a v2 manifest.
#[derive(Debug, Clone)]
pub struct ManifestGraph {
    manifest: Manifest,
    /// Node weights are indices into `manifest.nodes()`; petgraph indices
    /// equal them because nodes are added in document order.
    graph: DiGraph<usize, ()>,
    by_name: HashMap<String, NodeIndex>,
    /// Breadth-first from the roots, parents before children.
    order: Vec<NodeIndex>,
    depth: Vec<usize>,
}

impl ManifestGraph {
    /// Builds the graph of a v2 manifest with nodes.
    pub fn new(manifest: &Manifest) -> Result<ManifestGraph, Error> {
        let nodes = manifest.nodes().ok_or_else(|| Error::NotV2 {
            manifest: manifest.name().to_string(),
        })?;
        let mut graph = DiGraph::with_capacity(nodes.len(), nodes.len());
        let mut by_name = HashMap::with_capacity(nodes.len());
        for (i, node) in nodes.iter().enumerate() {
            let ix = graph.add_node(i);
            by_name.insert(node.name.to_string(), ix);
        }
        for (i, node) in nodes.iter().enumerate() {
            if let Some(parent) = &node.parent {
                // The manifest guarantees the parent exists.
                if let Some(&p) = by_name.get(parent.as_str()) {
                    graph.add_edge(p, NodeIndex::new(i), ());
                }
            }
        }
        let mut this = ManifestGraph {
            manifest: manifest.clone(),
            graph,
            by_name,
            order: Vec::new(),
            depth: vec![0; nodes.len()],
        };
        let mut queue: VecDeque<NodeIndex> = this.root_indices().into();
        while let Some(ix) = queue.pop_front() {
            this.order.push(ix);
            for child in this.child_indices(ix) {
                this.depth[child.index()] = this.depth[ix.index()] + 1;
                queue.push_back(child);
            }
        }
        Ok(this)
    }

    /// The manifest this graph was built from.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn node_at(&self, ix: NodeIndex) -> &Node {
        let nodes = self.manifest.nodes().unwrap_or_default();
        &nodes[self.graph[ix]]
    }

    fn index_of(&self, name: &str) -> Result<NodeIndex, Error> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| Error::UnknownNode {
                manifest: self.manifest.name().to_string(),
                node: name.to_string(),
            })
    }

    fn root_indices(&self) -> Vec<NodeIndex> {
        self.graph
            .node_indices()
            .filter(|&ix| {
                self.graph
                    .neighbors_directed(ix, Direction::Incoming)
                    .next()
                    .is_none()
            })
            .collect()
    }

    /// Children in edge order (document order). petgraph lists neighbours
    /// newest edge first, so sort by index, which is document order.
    fn child_indices(&self, ix: NodeIndex) -> Vec<NodeIndex> {
        let mut children: Vec<NodeIndex> = self
            .graph
            .neighbors_directed(ix, Direction::Outgoing)
            .collect();
        children.sort();
        children
    }

    fn parent_index(&self, ix: NodeIndex) -> Option<NodeIndex> {
        self.graph
            .neighbors_directed(ix, Direction::Incoming)
            .next()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    /// Never true for a built graph (a v2 manifest has at least one node).
    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.by_name.get(name).map(|&ix| self.node_at(ix))
    }

    /// Nodes without a parent, in document order.
    pub fn roots(&self) -> Vec<&Node> {
        self.root_indices()
            .into_iter()
            .map(|ix| self.node_at(ix))
            .collect()
    }

    /// Parents before children, breadth-first, siblings in document order.
    pub fn create_order(&self) -> Vec<&Node> {
        self.order.iter().map(|&ix| self.node_at(ix)).collect()
    }

    /// Children before parents: the create order reversed.
    pub fn destroy_order(&self) -> Vec<&Node> {
        self.order
            .iter()
            .rev()
            .map(|&ix| self.node_at(ix))
            .collect()
    }

    /// Depth of `name`: 0 for a root.
    pub fn depth(&self, name: &str) -> Result<usize, Error> {
        Ok(self.depth[self.index_of(name)?.index()])
    }

    /// Greatest depth of any node (0 when every node is a root).
    pub fn max_depth(&self) -> usize {
        self.depth.iter().copied().max().unwrap_or(0)
    }

    /// The parent of `name`, `None` for a root.
    pub fn parent(&self, name: &str) -> Result<Option<&Node>, Error> {
        let ix = self.index_of(name)?;
        Ok(self.parent_index(ix).map(|p| self.node_at(p)))
    }

    /// The children of `name` in document order.
    pub fn children(&self, name: &str) -> Result<Vec<&Node>, Error> {
        let ix = self.index_of(name)?;
        Ok(self
            .child_indices(ix)
            .into_iter()
            .map(|c| self.node_at(c))
            .collect())
    }

    /// True when `name` has no parent.
    pub fn is_root(&self, name: &str) -> Result<bool, Error> {
        Ok(self.parent(name)?.is_none())
    }

    /// True when `name` has no children.
    pub fn is_leaf(&self, name: &str) -> Result<bool, Error> {
        Ok(self.children(name)?.is_empty())
    }

    /// The context key holding the address `name` is reached through:
    /// [`ROOT_PARENT_IP_KEY`] for a root, `PARENT_ip` otherwise.
    pub fn parent_ip_key(&self, name: &str) -> Result<String, Error> {
        Ok(match self.parent(name)? {
            None => ROOT_PARENT_IP_KEY.to_string(),
            Some(parent) => format!("{}_ip", parent.name),
        })
    }

    /// Every node below `name`, breadth-first, siblings in document order.
    pub fn descendants(&self, name: &str) -> Result<Vec<&Node>, Error> {
        let start = self.index_of(name)?;
        let mut out = Vec::new();
        let mut queue: VecDeque<NodeIndex> = self.child_indices(start).into();
        while let Some(ix) = queue.pop_front() {
            out.push(self.node_at(ix));
            queue.extend(self.child_indices(ix));
        }
        Ok(out)
    }

    /// The manifest a `pve` node hands to the reconciler running on it: its
    /// descendants, breadth-first, with its children as roots. Named
    /// `NODE-subtree`; pattern and settings are kept. As in the reference,
    /// the manifest-wide `execution` defaults are not carried over (nodes
    /// keep their own `execution`).
    pub fn subtree(&self, name: &str) -> Result<Manifest, Error> {
        let start = self.index_of(name)?;
        let direct: Vec<NodeIndex> = self.child_indices(start);
        if direct.is_empty() {
            return Err(Error::NoChildren {
                node: name.to_string(),
            });
        }
        let nodes: Vec<Node> = self
            .descendants(name)?
            .into_iter()
            .map(|node| {
                let mut node = node.clone();
                if node.parent.as_ref().is_some_and(|p| p == name) {
                    node.parent = None;
                }
                node
            })
            .collect();
        let doc = model::v2::Document {
            schema_version: Version,
            name: format!("{name}-subtree"),
            description: format!(
                "Subtree of {} rooted at children of {name}",
                self.manifest.name()
            ),
            pattern: self.manifest.pattern().unwrap_or_default(),
            nodes,
            settings: self.manifest.settings().clone(),
            execution: model::Execution::default(),
        };
        Manifest::from_v2(doc).map_err(|problem| Error::InvalidSubtree {
            node: name.to_string(),
            problem,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn graph(fixture: &str) -> ManifestGraph {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .join("tests/fixtures/manifests")
            .join(fixture);
        let manifest = Manifest::from_file(&path).unwrap();
        ManifestGraph::new(&manifest).unwrap()
    }

    fn names(nodes: Vec<&Node>) -> Vec<&str> {
        nodes.into_iter().map(|n| n.name.as_str()).collect()
    }

    #[test]
    fn orders_roots_depths() {
        let g = graph("valid-v2-tree.yaml");
        assert_eq!(names(g.roots()), ["hv", "solo"]);
        assert_eq!(
            names(g.create_order()),
            ["hv", "solo", "web", "cache", "inner-hv", "leaf"]
        );
        assert_eq!(
            names(g.destroy_order()),
            ["leaf", "inner-hv", "cache", "web", "solo", "hv"]
        );
        assert_eq!(g.depth("hv").unwrap(), 0);
        assert_eq!(g.depth("inner-hv").unwrap(), 1);
        assert_eq!(g.depth("leaf").unwrap(), 2);
        assert_eq!(g.max_depth(), 2);
        assert_eq!(g.len(), 6);
    }

    #[test]
    fn relations_and_parent_ip_keys() {
        let g = graph("valid-v2-tree.yaml");
        assert_eq!(
            names(g.children("hv").unwrap()),
            ["web", "cache", "inner-hv"]
        );
        assert_eq!(g.parent("web").unwrap().unwrap().name, "hv");
        assert!(g.is_root("solo").unwrap() && g.is_leaf("solo").unwrap());
        assert!(!g.is_leaf("inner-hv").unwrap());
        assert_eq!(g.parent_ip_key("solo").unwrap(), "ssh_host");
        assert_eq!(g.parent_ip_key("leaf").unwrap(), "inner-hv_ip");
        assert!(matches!(
            g.depth("nope"),
            Err(Error::UnknownNode { node, .. }) if node == "nope"
        ));
    }

    #[test]
    fn subtree_for_delegation() {
        let g = graph("valid-v2-tree.yaml");
        let sub = g.subtree("hv").unwrap();
        assert_eq!(sub.name(), "hv-subtree");
        assert_eq!(
            sub.description(),
            "Subtree of lab-tree rooted at children of hv"
        );
        let nodes = sub.nodes().unwrap();
        assert_eq!(
            nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            ["web", "cache", "inner-hv", "leaf"]
        );
        assert_eq!(nodes[0].parent, None, "children of hv become roots");
        assert_eq!(nodes[3].parent.as_ref().unwrap(), "inner-hv");
        assert_eq!(sub.settings(), g.manifest().settings());
        assert!(sub.execution().unwrap().is_empty());
        assert_eq!(
            g.subtree("solo").unwrap_err().to_string(),
            "Node 'solo' has no children to extract"
        );
    }

    #[test]
    fn v1_and_cut_manifests_are_refused() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .join("tests/fixtures/manifests/valid-v1.yaml");
        let v1 = Manifest::from_file(&path).unwrap();
        assert_eq!(
            ManifestGraph::new(&v1).unwrap_err().to_string(),
            "ManifestGraph requires a v2 manifest with nodes"
        );
        let cut = graph("valid-v2-tree.yaml").manifest().limit_depth(1);
        assert!(matches!(ManifestGraph::new(&cut), Err(Error::NotV2 { .. })));
    }
}
