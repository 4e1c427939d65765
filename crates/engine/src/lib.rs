//! homestak's engine: everything that changes the world on one PVE tier.
//!
//! # Tour (the data flows top to bottom)
//!
//! - [`adopt`]: taking over VMs homestak did not make (name and vmid match
//!   a manifest node): their marks written, nothing else touched.
//! - [`reconcile`]: one reconcile of one manifest on one tier (resolve
//!   desired, observe, plan, apply, record): the one path the CLI and the
//!   daemon share (a subtree a parent tier hands over runs it too); also
//!   `status`, one tree across tiers, and `plan` with the child tiers'.
//! - [`executor`]: runs a plan as a DAG with bounded concurrency, backoff
//!   and requeue instead of holding workers across PVE tasks.
//! - [`controllers`]: one per node kind (`vm`; `pve`: an inner PVE host and
//!   its child tier); idempotent verb_noun steps, named by
//!   [`homestak_api::step::Step`].
//! - [`hostlease`]: the lease on the PVE host itself (a block in the node's
//!   notes, written with compare-and-swap) that keeps every other homestak,
//!   whatever its state directory, off a host one is converging.
//! - [`preflight`]: what a run on a host needs (site-init, SSH keys, API
//!   token and privileges, images, nested virtualization), each check
//!   with its fix.
//! - [`scenario`]: the Python tool's standalone workflows (`pve-setup`,
//!   `packer-*`, …) as named verb_noun phases run in order, with skips, a
//!   timeout between phases and a context chained runs carry.
//! - [`state_dir`]: where a tier keeps its state (store, known hosts, the
//!   daemon's certificate and tokens), decided in one place.
//! - [`store`]: durable records (sled behind a small trait): node records,
//!   conditions, events, leases, and each `pve` node's delegation.

pub mod adopt;
pub mod controllers;
pub mod executor;
pub mod hostlease;
pub mod onboard;
pub mod packer;
pub mod preflight;
pub mod reconcile;
pub mod scenario;
pub mod state_dir;
pub mod store;
