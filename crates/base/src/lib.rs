//! What every homestak crate shares, and nothing else: the leaf of the
//! workspace, so a change above it never rebuilds it.
//!
//! - [`yaml`]: YAML loading with `file:line:column` errors (serde-saphyr,
//!   strict booleans, alias-bomb limits). Every YAML read goes through it.
//! - [`secret`]: [`secret::Secret`], the one redacting type for tokens and
//!   passwords (constant-time comparison, never in `Debug` or logs).
//! - [`digest`]: SHA-256 and hex for fingerprints, token digests and short
//!   revision ids.
//! - [`fsutil`]: atomic file replacement with a given mode.
//! - [`empty`]: serde for `Option` fields a format keeps as `""` when absent.
//! - [`id`]: checked identities: [`id::NodeName`] (a manifest node),
//!   [`id::VmId`], [`id::PveNode`] (a Proxmox VE node).
//! - [`time`]: [`time::Timestamp`], the one timestamp type (RFC 3339 on the
//!   wire and on disk).
//! - [`BoxFuture`] and [`error_chain`]: the dyn-async return type of the
//!   workspace's traits and the one-line rendering of an error with its
//!   causes.

pub mod digest;
pub mod empty;
pub mod fsutil;
pub mod id;
pub mod secret;
pub mod time;
pub mod yaml;
pub mod yaml_edit;

/// A boxed, sendable future: what the workspace's dyn-compatible async
/// traits (PVE API, SSH, controllers, the daemon's engine) return.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An error and its causes on one line, joined with `: `, for places that
/// keep a message rather than the error (step results, status, events,
/// logs). A cause whose text the line already holds is not repeated.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}
