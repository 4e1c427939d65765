//! The converge engine behind the daemon: [`Engine`] over
//! [`homestak_engine::reconcile`], the same code path as `homestak reconcile --once`.
//!
//! It keeps what outlives one reconcile: the store (sled, one per process),
//! one PVE client per host (so per-host limits hold across reconciles), and
//! counters of PVE requests by endpoint template for `/metrics`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::engine::{
    BoxFuture, Engine, EngineMetrics, Error, Mode, Outcome, PveRequestCount, ReconcileRequest,
    ReconcileSummary, StatusReport, StatusRequest,
};
use super::events::NewEvent;
use homestak_core::site::{HostConfig, Site};
use homestak_engine::executor::{Event, NodeState};
use homestak_engine::reconcile::{self, Setup, Tier, status};
use homestak_engine::store::{self, Store};
use homestak_pve::{self as pve, Observer, RecordedRequest};

/// Counts PVE requests by method and endpoint template.
#[derive(Default)]
struct Counts(Mutex<BTreeMap<(String, String), u64>>);

impl Observer for Counts {
    fn on_request(&self, request: &RecordedRequest) {
        let method = request.method.as_str().to_string();
        // The simulator's route table is our typed map of PVE's paths; it
        // turns `/nodes/pve/qemu/100` into a bounded label.
        let template = homestak_pve::schema::Method::parse(&method)
            .and_then(|m| homestak_pve::schema::route(m, &request.path))
            .map_or_else(|| "(other)".to_string(), |(e, _)| e.path.to_string());
        if let Ok(mut counts) = self.0.lock() {
            *counts.entry((method, template)).or_default() += 1;
        }
    }
}

/// A client and the (endpoint, fingerprint, token) it was built for.
struct CachedClient {
    identity: String,
    api: Arc<dyn pve::Api>,
}

/// The engine the daemon runs.
pub struct ConvergeEngine {
    setup: Setup,
    store: Arc<dyn Store>,
    options: reconcile::Options,
    clients: Mutex<HashMap<String, CachedClient>>,
    counts: Arc<Counts>,
}

impl ConvergeEngine {
    /// Opens the store under `state_dir`. `insecure` and `ssh_key` as the
    /// CLI's flags.
    pub fn new(
        state_dir: PathBuf,
        insecure: bool,
        ssh_key: Option<PathBuf>,
    ) -> Result<ConvergeEngine, reconcile::Error> {
        let dir = state_dir.join("store");
        let store = store::open(&dir, store::Options::default())
            .map_err(|source| reconcile::Error::StoreOpen { dir, source })?;
        Ok(ConvergeEngine {
            setup: Setup {
                insecure,
                state_dir,
                open_store: true,
                ssh: false,
                ssh_key,
            },
            store: Arc::new(store),
            options: reconcile::Options::default(),
            clients: Mutex::new(HashMap::new()),
            counts: Arc::new(Counts::default()),
        })
    }

    /// The client for `host`, reused while its endpoint, pin and token stay
    /// the same (a reloaded site-config may change them).
    fn api(&self, host: &HostConfig) -> Result<Arc<dyn pve::Api>, reconcile::Error> {
        let identity = format!(
            "{}|{}|{}",
            host.api_endpoint,
            host.api_fingerprint.as_deref().unwrap_or(""),
            host.api_token().expose()
        );
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cached) = clients.get(&host.name)
            && cached.identity == identity
        {
            return Ok(cached.api.clone());
        }
        let observer: Arc<dyn Observer> = self.counts.clone();
        let api = reconcile::connect(host, self.setup.insecure, Some(observer))?;
        clients.insert(
            host.name.clone(),
            CachedClient {
                identity,
                api: api.clone(),
            },
        );
        Ok(api)
    }

    fn tier(&self, site: Arc<Site>, host: &str, ssh: bool) -> Result<Tier, reconcile::Error> {
        let host_config = site
            .host_config(host)
            .map_err(|source| reconcile::Error::Host {
                host: host.to_string(),
                source,
            })?;
        let api = self.api(&host_config)?;
        let setup = Setup {
            ssh,
            ..self.setup.clone()
        };
        let ssh = reconcile::ssh_check(&host_config, &setup)?;
        let known_hosts = Some(reconcile::known_hosts(&host_config, &setup));
        let host_ssh = Some(reconcile::host_ssh(&host_config, &setup));
        Ok(Tier {
            site,
            host: host_config,
            api,
            store: Some(self.store.clone()),
            ssh,
            known_hosts,
            host_ssh,
        })
    }
}

fn engine_error(action: &'static str, err: reconcile::Error) -> Error {
    Error::Engine {
        action,
        source: Box::new(err),
    }
}

fn drifted(status: &status::Status) -> u64 {
    status.nodes.iter().filter(|n| n.state.is_drift()).count() as u64
}

impl Engine for ConvergeEngine {
    fn reconcile(
        &self,
        request: ReconcileRequest,
    ) -> BoxFuture<'_, Result<ReconcileSummary, Error>> {
        Box::pin(async move {
            let manifest = request.manifest.clone();
            let verify_ssh = request.mode == Mode::Apply && manifest.settings().verify_ssh;
            let tier = self
                .tier(request.site.clone(), &request.host, verify_ssh)
                .map_err(|e| engine_error("set up the tier", e))?;
            if request.mode == Mode::ReportOnly {
                let report = tier
                    .status(&manifest)
                    .await
                    .map_err(|e| engine_error("observe", e))?;
                let drifted = drifted(&report);
                return Ok(ReconcileSummary {
                    outcome: if report.in_sync {
                        Outcome::Converged
                    } else {
                        Outcome::Drifted
                    },
                    changed_nodes: 0,
                    drifted_nodes: drifted,
                    message: None,
                    report: serde_json::to_value(&report).unwrap_or_default(),
                });
            }
            let started = store::Timestamp::now();
            let planned = tier
                .plan(&manifest, &self.options)
                .await
                .map_err(|e| engine_error("plan", e))?;
            let name = manifest.name().to_string();
            let sink = request.events.clone();
            let events = move |event: Event| {
                let emitted = match event {
                    Event::StepDone { node, step, .. } => {
                        NewEvent::info("step", format!("{step} done")).node(&node)
                    }
                    Event::StepRetry {
                        node,
                        step,
                        attempt,
                        error,
                    } => NewEvent::warning("retry", format!("{step} attempt {attempt}: {error}"))
                        .node(&node),
                    Event::NodeFinished { node, state } => match state {
                        NodeState::Failed(e) => NewEvent::error("node", e).node(&node),
                        NodeState::Converged => NewEvent::info("node", "converged").node(&node),
                        other => NewEvent::info("node", format!("{other:?}")).node(&node),
                    },
                    Event::StepStarted { .. } | Event::StepRequeued { .. } => return,
                };
                sink.emit(emitted.manifest(&name));
            };
            let mut shutdown = request.shutdown.clone();
            let result = tier
                .apply(
                    &planned,
                    &self.options,
                    async move { shutdown.triggered().await },
                    &events,
                )
                .await;
            tier.record_run(
                manifest.name(),
                started,
                &result,
                Some(request.revision.clone()),
            );
            let changed = result
                .nodes
                .values()
                .filter(|s| matches!(s, NodeState::Converged | NodeState::RolledBack))
                .count() as u64;
            let failed = result
                .nodes
                .values()
                .filter(|s| !matches!(s, NodeState::Converged | NodeState::Unchanged))
                .count() as u64;
            let outcome = if result.cancelled {
                Outcome::Interrupted
            } else if result.success() {
                Outcome::Converged
            } else {
                Outcome::Failed
            };
            Ok(ReconcileSummary {
                outcome,
                changed_nodes: changed,
                drifted_nodes: failed,
                message: (!result.success()).then(|| reconcile::summarize(&result)),
                report: serde_json::json!({
                    "plan": planned.plan.to_json(),
                    "result": result,
                }),
            })
        })
    }

    fn status(&self, request: StatusRequest) -> BoxFuture<'_, Result<StatusReport, Error>> {
        Box::pin(async move {
            let tier = self
                .tier(request.site.clone(), &request.host, false)
                .map_err(|e| engine_error("set up the tier", e))?;
            let report = tier
                .status(&request.manifest)
                .await
                .map_err(|e| engine_error("observe", e))?;
            Ok(StatusReport {
                in_sync: report.in_sync,
                drifted_nodes: drifted(&report),
                report: serde_json::to_value(&report).unwrap_or_default(),
            })
        })
    }

    fn metrics(&self) -> EngineMetrics {
        let counts = self.counts.0.lock().unwrap_or_else(|e| e.into_inner());
        EngineMetrics {
            pve_requests: counts
                .iter()
                .map(|((method, endpoint), count)| PveRequestCount {
                    method: method.clone(),
                    endpoint: endpoint.clone(),
                    count: *count,
                })
                .collect(),
        }
    }
}
