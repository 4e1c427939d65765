//! Manifest model: schema v1 levels and v2 node trees.
//!
//! A manifest says what to build: in v1 an ordered list of levels, each
//! nested in the one before; in v2 a tree of nodes (`vm`, `ct`, `pve`)
//! linked by `parent`, where a `pve` node's children run on the PVE host it
//! becomes. Loading follows the Python iac-driver (the reference):
//!
//! 1. read the file ([`Loader`] finds `<site-config>/manifests/NAME.yaml`)
//!    or take JSON (`--manifest-json`);
//! 2. parse the mapping into a typed [`v1::Document`] or [`v2::Document`],
//!    checking fields in the reference's order;
//! 3. build a [`Manifest`]: for v2, reject duplicate names, unknown parents
//!    and cycles, and derive the levels breadth-first.
//!
//! Messages the reference also produces keep its wording. Where it crashed
//! or accepted nonsense (wrong types, unknown keywords, unknown fields, VM
//! ids PVE refuses, names that are not DNS names), we give our own clear
//! error instead. The petgraph view (create/destroy order, subtrees for
//! delegation) lives in [`crate::graph`].

mod error;
mod loader;
mod manifest;
mod parse;
mod types;
pub mod v1;
pub mod v2;

pub use error::{Error, Located, Origin, Problem};
pub use homestak_base::id::{InvalidNodeName, InvalidVmId, NodeName, PveNode, VmId};
pub use loader::{DEFAULT_MANIFEST, Loader};
pub use manifest::{Manifest, SchemaVersion};
pub use types::{
    Delegate, Execution, ExecutionMode, NodeExecution, NodeType, OnError, Pattern, Settings,
    Timeouts, Version,
};
pub use v1::Level;
pub use v2::Node;

/// JSON Schemas of the manifest documents, by the file stem they get in
/// `crds/` (`manifest-v2.schema.json`, ...). Newest first.
pub fn json_schemas() -> Vec<(&'static str, schemars::Schema)> {
    vec![
        ("manifest-v2", schemars::schema_for!(v2::Document)),
        ("manifest-v1", schemars::schema_for!(v1::Document)),
    ]
}
