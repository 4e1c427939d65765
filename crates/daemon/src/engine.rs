//! The seam between the daemon and the converge engine.
//!
//! The daemon decides *when* and *what* to reconcile (commits, resyncs,
//! API triggers, delegated subtrees, drift policy, suspension, one
//! reconcile at a time per tier); the [`Engine`] decides *how*: plan
//! against the observed PVE state and execute. The daemon never looks
//! inside a plan; it records the [`ReconcileSummary`] and serves the
//! engine's status JSON as is.
//!
//! Methods return boxed futures so the daemon can hold an
//! `Arc<dyn Engine>`; implement them with `Box::pin(async move { ... })`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::events::EventSink;
use super::shutdown::Shutdown;
use homestak_core::model::Manifest;
use homestak_core::site::Site;

pub use homestak_base::BoxFuture;

/// Why a reconcile runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Periodic resync (drift detection).
    Resync,
    /// The daemon started.
    Startup,
    /// SIGHUP or a reload request.
    Reload,
    /// A new commit (or, with `--working-tree`, a changed file).
    Commit,
    /// A parent tier handed over a subtree.
    Subtree,
    /// `POST /v1/reconcile`.
    Api,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Resync => "resync",
            Reason::Startup => "startup",
            Reason::Reload => "reload",
            Reason::Commit => "commit",
            Reason::Subtree => "subtree",
            Reason::Api => "api",
        }
    }
}

/// What the engine may do about differences it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Converge: create, update, start, prune (owned objects only).
    Apply,
    /// Observe and report drift; change nothing.
    ReportOnly,
}

/// One reconcile of one manifest on this tier.
#[derive(Debug, Clone)]
pub struct ReconcileRequest {
    /// The manifest's name (file stem, or the delegated subtree's name).
    pub manifest_name: String,
    pub manifest: Arc<Manifest>,
    /// The target PVE node (`nodes/<host>.yaml`), like `-H`.
    pub host: String,
    /// The site-config as loaded now (reloaded on SIGHUP and on commits).
    pub site: Arc<Site>,
    /// What is being applied: a commit id, `worktree:<digest>` or
    /// `subtree:<digest>`. The engine may record it as provenance.
    pub revision: String,
    pub reason: Reason,
    pub mode: Mode,
    /// Fires when the daemon shuts down: stop at the next safe point
    /// (never in the middle of a PVE task: record its UPID and return).
    pub shutdown: Shutdown,
    /// Node-level events go here (they appear in `GET /v1/events`).
    pub events: EventSink,
}

/// How a reconcile ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The tier matches the manifest.
    Converged,
    /// Drift was found and, by policy, left alone (`Mode::ReportOnly`).
    Drifted,
    /// Stopped early by shutdown; the next run continues.
    Interrupted,
    /// Something failed; `message` says what.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Converged => "converged",
            Outcome::Drifted => "drifted",
            Outcome::Interrupted => "interrupted",
            Outcome::Failed => "failed",
        }
    }

    /// Every outcome, for metrics that list each with a value.
    pub const ALL: [Outcome; 4] = [
        Outcome::Converged,
        Outcome::Drifted,
        Outcome::Interrupted,
        Outcome::Failed,
    ];
}

/// What a reconcile did.
#[derive(Debug, Clone, Serialize)]
pub struct ReconcileSummary {
    pub outcome: Outcome,
    /// Nodes created, changed or deleted.
    pub changed_nodes: u64,
    /// Nodes that differ from the manifest after the run.
    pub drifted_nodes: u64,
    /// A one-line explanation (failures, interruptions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The engine's report (plan and results), served as is.
    pub report: Value,
}

/// A status query for one manifest.
#[derive(Debug, Clone)]
pub struct StatusRequest {
    pub manifest_name: String,
    pub manifest: Arc<Manifest>,
    pub host: String,
    pub site: Arc<Site>,
}

/// The engine's answer to a status query.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub in_sync: bool,
    pub drifted_nodes: u64,
    /// The same JSON as `homestak status --json`.
    pub report: Value,
}

/// PVE API requests made, by method and endpoint template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PveRequestCount {
    pub method: String,
    /// A path template such as `/nodes/{node}/qemu/{vmid}/status/current`,
    /// never a concrete path (bounded label cardinality).
    pub endpoint: String,
    pub count: u64,
}

/// Counters the engine keeps and the daemon exposes at `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct EngineMetrics {
    pub pve_requests: Vec<PveRequestCount>,
}

/// An engine call failed outright (as opposed to a reconcile that ran and
/// ended [`Outcome::Failed`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This build has no converge engine wired in.
    #[error(
        "no converge engine is available: this daemon serves specs and repos, and cannot reconcile yet"
    )]
    Unavailable,
    /// The engine could not run.
    #[error("the engine could not {action}")]
    Engine {
        action: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The converge engine, as the daemon uses it.
pub trait Engine: Send + Sync + 'static {
    /// Reconciles one manifest. Called by one worker, one manifest at a
    /// time per tier; must be level-triggered (reads desired and observed
    /// state, ignores `reason` except for reporting).
    fn reconcile(
        &self,
        request: ReconcileRequest,
    ) -> BoxFuture<'_, Result<ReconcileSummary, Error>>;

    /// Observes one manifest's nodes and compares them with the manifest
    /// (no changes). May run concurrently with a reconcile.
    fn status(&self, request: StatusRequest) -> BoxFuture<'_, Result<StatusReport, Error>>;

    /// A snapshot of the engine's counters.
    fn metrics(&self) -> EngineMetrics {
        EngineMetrics::default()
    }
}

/// The engine of a build without the converge code: every call is
/// [`Error::Unavailable`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Unavailable;

impl Engine for Unavailable {
    fn reconcile(&self, _: ReconcileRequest) -> BoxFuture<'_, Result<ReconcileSummary, Error>> {
        Box::pin(async { Err(Error::Unavailable) })
    }

    fn status(&self, _: StatusRequest) -> BoxFuture<'_, Result<StatusReport, Error>> {
        Box::pin(async { Err(Error::Unavailable) })
    }
}
