//! homestak: a declarative reconciler for Proxmox VE.
//!
//! A site-config repository declares VMs and nested PVE hosts as a tree;
//! homestak observes the PVE API and its own store, plans the difference and
//! converges the world to match. This library holds all of it; the binary in
//! `main.rs` only calls [`cli::main`].
//!
//! # Tour of the modules (the data flows top to bottom)
//!
//! - [`yaml`]: YAML loading with `file:line:column` errors (serde-saphyr,
//!   strict booleans, alias-bomb limits). Every YAML read goes through it.
//! - [`model`]: manifest types (schema v1 levels, v2 node trees), validation,
//!   conversion, JSON round trip. No I/O beyond reading a named file.
//! - [`graph`]: the petgraph DAG of a manifest: create and destroy order,
//!   depth, subtree extraction for delegation.
//! - [`site`]: site-config discovery and loading, the ConfigResolver
//!   (tofu-shaped and ansible-shaped outputs), specs, postures, secrets,
//!   nodes and hosts.
//! - [`pve`]: the typed PVE REST client (reqwest + rustls) behind a trait.
//! - [`ssh`]: the russh client (exec, upload, wait-for-ssh) behind a trait.
//! - [`store`]: durable records (sled behind a small trait): node records,
//!   conditions, events, leases.
//! - [`plan`]: the pure planner: desired vs observed state → actions, with
//!   human and JSON renderings.
//! - [`executor`]: runs a plan as a DAG with bounded concurrency, backoff and
//!   requeue instead of holding workers across PVE tasks.
//! - [`controllers`]: one per node kind; idempotent verb_noun steps.
//! - [`reconcile`]: one reconcile of one manifest on one tier (resolve
//!   desired, observe, plan, apply, record), the same path for the CLI and
//!   the daemon; also `status`.
//! - [`daemon`]: `homestak serve`: specs, repos, reconciler API, metrics,
//!   watch loop, signals.
//! - [`sim`]: the PVE 8.4 simulator served over HTTPS, with nested tiers,
//!   SSH and injected faults.
//! - [`crds`]: JSON Schemas generated from our types.
//! - [`cli`]: clap front end; one exit code per kind of outcome.
//!
//! Shared by many of the above:
//!
//! - [`tls`]: the ring crypto provider, self-signed certificates, PVE-style
//!   `AA:BB:…` fingerprints and the pinned-fingerprint verifier.
//! - [`secret`]: [`secret::Secret`], the one redacting type for tokens and
//!   passwords (constant-time comparison, never in `Debug` or logs).
//! - [`digest`]: SHA-256 and hex for fingerprints, token digests and short
//!   revision ids.
//! - [`fsutil`]: atomic file replacement with a given mode.
//! - [`BoxFuture`] and [`error_chain`]: the crate's dyn-async return type
//!   and its one-line rendering of an error with its causes.

#![forbid(unsafe_code)]

pub mod cli;
pub mod controllers;
pub mod crds;
pub mod daemon;
pub mod digest;
pub mod executor;
pub mod fsutil;
pub mod graph;
pub mod model;
pub mod plan;
pub mod pve;
pub mod reconcile;
pub mod secret;
pub mod sim;
pub mod site;
pub mod ssh;
pub mod store;
pub mod tls;
pub mod yaml;

/// A boxed, sendable future: what the crate's dyn-compatible async traits
/// (PVE API, SSH, controllers, the daemon's engine) return. Each of those
/// modules re-exports it.
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
