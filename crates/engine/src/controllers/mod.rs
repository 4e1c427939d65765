//! Controllers, one per node kind. Each turns a node's plan into idempotent
//! steps the [`crate::executor`] runs.
//!
//! - [`vm`]: a VM on one PVE tier (also the VM part of a `pve` node).
//! - [`pve`]: a `pve` node's host lifecycle and its child tier.
//! - [`tier`]: both behind one [`crate::executor::Controller`], the one a
//!   run executes.

pub mod pve;
pub mod tier;
pub mod vm;
