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

use std::time::Duration;

/// The next poll delay after `last`: growing by a fifth from `min` to
/// `max`, so a task is seen done at most about a fifth of its time after it
/// ends (growing by half, the delay reached ¾ of the time waited: a create
/// held its storage slot up to 75 % longer than its task ran, which kept
/// the storage's allocations from following each other closely) without
/// polling a long one often.
pub(crate) fn next_poll(last: &mut Option<Duration>, min: Duration, max: Duration) -> Duration {
    let next = match *last {
        None => min,
        Some(p) => (p * 6 / 5).min(max),
    };
    *last = Some(next);
    next
}
