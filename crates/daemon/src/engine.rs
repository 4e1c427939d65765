//! The seam between the daemon and the converge engine.
//!
//! The daemon decides *when* and *what* to reconcile (commits, resyncs,
//! API triggers, delegated subtrees, drift policy, suspension, one
//! reconcile at a time per tier); the [`Engine`] decides *how*:
//! [`homestak_engine::reconcile::Engine::run_once`], the same path as
//! `homestak reconcile --once` (see [`super::converge`]). The daemon never
//! looks inside a plan; it reads the [`RunOutcome`] and the store.
//!
//! Tests put a fake behind the trait; methods return boxed futures so the
//! daemon can hold an `Arc<dyn Engine>`.

use std::sync::Arc;

use homestak_api::Status;
use homestak_core::model::Manifest;
use homestak_core::site::Site;
use homestak_engine::reconcile::{Request, RunOutcome};
use homestak_engine::store::Store;

use super::metrics::PveMetrics;
use super::shutdown::Shutdown;

use homestak_api::v1::PlanTree;
pub use homestak_base::BoxFuture;

/// A status query for one manifest.
#[derive(Debug, Clone)]
pub struct StatusRequest {
    pub manifest: Arc<Manifest>,
    pub host: String,
    pub site: Arc<Site>,
}

/// An engine call failed outright (as opposed to a run that ended
/// [`homestak_api::Outcome::Failed`]).
#[derive(Debug, thiserror::Error)]
#[error("the engine could not {action}")]
pub struct Error {
    pub action: &'static str,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// The converge engine, as the daemon uses it.
pub trait Engine: Send + Sync + 'static {
    /// The tier's one store: the daemon keeps its records, subtrees, lease
    /// and events there too.
    fn store(&self) -> Arc<dyn Store>;

    /// Runs one manifest once. Called by one worker, one manifest at a time
    /// per tier; level-triggered (the request's reason is only recorded).
    /// `shutdown` firing stops the run at a safe point (never in the
    /// middle of a PVE task: its UPID is recorded and resumed next run).
    fn reconcile(
        &self,
        request: Request,
        shutdown: Shutdown,
    ) -> BoxFuture<'_, Result<RunOutcome, Error>>;

    /// Observes one manifest's nodes and compares them with the manifest
    /// (no changes). May run concurrently with a reconcile.
    fn status(&self, request: StatusRequest) -> BoxFuture<'_, Result<Status, Error>>;

    /// What converging one manifest would do on this tier and its child
    /// tiers (no changes).
    fn plan(&self, request: StatusRequest) -> BoxFuture<'_, Result<PlanTree, Error>> {
        let _ = request;
        Box::pin(async {
            Err(Error {
                action: "plan",
                source: "this engine cannot plan".into(),
            })
        })
    }

    /// The counters and latencies of the engine's PVE requests, when it
    /// makes any.
    fn pve_metrics(&self) -> Option<&PveMetrics> {
        None
    }

    /// Gives back the host leases the engine holds (the daemon keeps each
    /// host's from its first run until it stops).
    fn release_leases(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
