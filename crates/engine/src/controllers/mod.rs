//! Controllers, one per node kind. Each turns a node's plan into idempotent
//! steps the [`crate::executor`] runs.
//!
//! - [`vm`]: a VM on one PVE tier (also the VM part of a `pve` node).

pub mod vm;
