//! The daemon's [`Engine`] over [`homestak_engine::reconcile::Engine`]:
//! nothing but the seam, so a daemon run and `homestak reconcile --once`
//! are one code path.

use std::sync::Arc;

use homestak_api::Status;
use homestak_engine::reconcile::{self, Request, RunOutcome};
use homestak_engine::store::Store;

use super::engine::{BoxFuture, Engine, Error, StatusRequest};
use super::metrics::PveMetrics;
use super::shutdown::Shutdown;
use homestak_api::v1::PlanTree;

/// The engine the daemon runs: a [`reconcile::Engine`] with a store,
/// whose PVE clients report their requests to `/metrics`.
pub struct ConvergeEngine {
    engine: reconcile::Engine,
    store: Arc<dyn Store>,
    pve: Arc<PveMetrics>,
}

impl ConvergeEngine {
    /// Opens the store in `<setup.state_dir>/store`: the daemon keeps its
    /// own records there, so it is opened whatever `setup.open_store` says.
    pub fn open(setup: reconcile::Setup) -> Result<ConvergeEngine, reconcile::Error> {
        let store = reconcile::open_store(&setup.state_dir)?;
        let pve = Arc::new(PveMetrics::new());
        let engine = reconcile::Engine::with_store(setup, Some(Arc::clone(&store)))
            .observe_pve(Arc::clone(&pve) as Arc<dyn homestak_pve::Observer>);
        Ok(ConvergeEngine { engine, store, pve })
    }
}

fn failed(action: &'static str, err: reconcile::Error) -> Error {
    Error {
        action,
        source: Box::new(err),
    }
}

impl Engine for ConvergeEngine {
    fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    fn reconcile(
        &self,
        request: Request,
        shutdown: Shutdown,
    ) -> BoxFuture<'_, Result<RunOutcome, Error>> {
        Box::pin(async move {
            let mut shutdown = shutdown;
            self.engine
                .run_once(request, async move { shutdown.triggered().await }, &())
                .await
                .map_err(|e| failed("reconcile", e))
        })
    }

    fn status(&self, request: StatusRequest) -> BoxFuture<'_, Result<Status, Error>> {
        Box::pin(async move {
            self.engine
                .status(request.site, &request.manifest, &request.host, false)
                .await
                .map_err(|e| failed("report drift", e))
        })
    }

    fn plan(&self, request: StatusRequest) -> BoxFuture<'_, Result<PlanTree, Error>> {
        Box::pin(async move {
            self.engine
                .plan_tree(request.site, &request.manifest, &request.host)
                .await
                .map_err(|e| failed("plan", e))
        })
    }

    fn pve_metrics(&self) -> Option<&PveMetrics> {
        Some(&self.pve)
    }

    fn release_leases(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.engine.release_leases())
    }
}
