//! homestak's pure core: what a site-config declares and what should change.
//! No async runtime, no network, no file writes; files are only read (the
//! site-config and manifests).
//!
//! # Tour (the data flows top to bottom)
//!
//! - [`model`]: manifest types (schema v1 levels, v2 node trees), validation,
//!   conversion, JSON round trip.
//! - [`graph`]: the petgraph DAG of a manifest: create and destroy order,
//!   depth, subtree extraction for delegation.
//! - [`site`]: site-config discovery and loading, the ConfigResolver
//!   (tofu-shaped and ansible-shaped outputs), specs, postures, secrets,
//!   nodes and hosts.
//! - [`plan`]: the pure planner: desired vs observed state → actions, with
//!   human and JSON renderings.
//! - [`crds`]: JSON Schemas generated from these types.

pub mod crds;
pub mod graph;
pub mod model;
pub mod plan;
pub mod site;
