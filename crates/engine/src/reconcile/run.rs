//! [`Engine::run_once`]: one run of one manifest on one tier, the one path
//! every caller takes — `reconcile --once` and the seed verbs, the daemon's
//! worker, and a child daemon converging the subtree its parent handed over:
//!
//! resolve → observe → plan → ask the [`Observer`] → apply → record →
//! [`RunOutcome`].
//!
//! The [`Engine`] keeps what outlives one run: the store, one PVE client
//! per host (so per-host limits hold across runs), and the observer those
//! clients report each PVE request to (the daemon's `/metrics`).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use homestak_api::{Applied, Event, Kind, LastReconcile, Mode, Outcome, Reason, Status};
use homestak_base::id::PveNode;
use homestak_base::time::Timestamp;
use homestak_core::model::Manifest;
use homestak_core::site::{HostConfig, Site};
use homestak_pve as pve;

use super::{Error, Options, Planned, Setup, Tier, connect, host_ssh, known_hosts, ssh_check};
use crate::executor::{NodeState, Report};
use crate::hostlease::{self, HostLease};
use crate::store::{self, Store};

/// One run: which manifest, where, and what it may do.
#[derive(Debug, Clone)]
pub struct Request {
    pub manifest: Arc<Manifest>,
    /// The target node, like `-H` (`nodes/<host>.yaml`).
    pub host: String,
    /// The site-config as loaded now.
    pub site: Arc<Site>,
    /// What is being applied (a commit id, `worktree:<digest>`,
    /// `subtree:<digest>`); kept as the last applied revision when the run
    /// converges. `None` for a command line run.
    pub revision: Option<String>,
    pub reason: Reason,
    pub mode: Mode,
    pub options: Options,
    /// The manifest's generation as read when the run was asked for (a
    /// delegated manifest's, see `ManifestRecord::generation`); kept in
    /// its last run. 0 where none applies (the command line).
    pub generation: u64,
}

/// Sees a run as it goes. Every method has a default, so an observer
/// implements only what it uses; `()` observes nothing.
pub trait Observer: Send + Sync {
    /// The plan is ready. Returning `false` ends the run before anything
    /// changes (a dry run, a declined confirmation, `homestak plan`).
    fn planned(&self, _planned: &Planned) -> bool {
        true
    }

    /// Progress of the executor (`step_*` and `node_finished` events).
    fn progress(&self, _event: &Event) {}

    /// Another homestak holds the host lease and the run waits for it
    /// (called once per holder).
    fn lease_wait(&self, _held: &hostlease::Held) {}
}

impl Observer for () {}

/// How a run went (the plan went to [`Observer::planned`]).
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub outcome: Outcome,
    /// What the executor did; `None` when the run stopped after planning
    /// (`Mode::ReportOnly`, or the observer said so).
    pub report: Option<Report>,
    /// The drift report of a `Mode::ReportOnly` run.
    pub status: Option<Status>,
    /// Nodes created, changed or deleted.
    pub changed_nodes: u64,
    /// Nodes that differ from the manifest after the run.
    pub drifted_nodes: u64,
    /// Node counts by how they ended.
    pub summary: String,
    /// Why it did not converge, in a line.
    pub message: Option<String>,
    pub started: Timestamp,
    pub duration: Duration,
}

impl RunOutcome {
    /// A run that started at `started` and has done nothing yet.
    fn begun(outcome: Outcome, started: Timestamp) -> RunOutcome {
        RunOutcome {
            outcome,
            report: None,
            status: None,
            changed_nodes: 0,
            drifted_nodes: 0,
            summary: String::new(),
            message: None,
            started,
            duration: Duration::ZERO,
        }
    }

    /// A run that failed before it could plan (`why` says what failed).
    pub fn failed(why: String, started: Timestamp, duration: Duration) -> RunOutcome {
        RunOutcome {
            message: Some(why),
            duration,
            ..RunOutcome::begun(Outcome::Failed, started)
        }
    }
}

/// A client and the (endpoint, fingerprint, token) it was built for.
struct CachedClient {
    identity: String,
    api: Arc<dyn pve::Api>,
}

/// The engine of a process: what outlives one run.
pub struct Engine {
    setup: Setup,
    store: Option<Arc<dyn Store>>,
    clients: Mutex<HashMap<String, CachedClient>>,
    /// Sees every PVE request of every client this engine builds.
    pve_observer: Option<Arc<dyn pve::Observer>>,
    /// Host leases held, by PVE endpoint and node.
    leases: tokio::sync::Mutex<HashMap<LeaseKey, HostLease>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("setup", &self.setup)
            .field("store", &self.store.as_ref().map(|s| s.location()))
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine as `setup` says: the store in `<state_dir>/store` when
    /// `setup.open_store` (sled locks it to this process).
    pub fn open(setup: Setup) -> Result<Engine, Error> {
        let store = match setup.open_store {
            true => Some(open_store(&setup.state_dir)?),
            false => None,
        };
        Ok(Engine::with_store(setup, store))
    }

    /// An engine over `store` (tests, embedding).
    pub fn with_store(setup: Setup, store: Option<Arc<dyn Store>>) -> Engine {
        Engine {
            setup,
            store,
            clients: Mutex::new(HashMap::new()),
            pve_observer: None,
            leases: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The store, when the engine has one.
    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.as_ref()
    }

    /// Has every PVE client this engine builds report its requests to
    /// `observer` (method, path template, status, latency).
    pub fn observe_pve(mut self, observer: Arc<dyn pve::Observer>) -> Engine {
        self.pve_observer = Some(observer);
        self
    }

    /// The client for `host`, reused while its endpoint, pin and token stay
    /// the same (a reloaded site-config may change them).
    fn api(&self, host: &HostConfig) -> Result<Arc<dyn pve::Api>, Error> {
        // The token only as a digest: the cache key is a plain string.
        let token = host.api_token().map(|t| t.expose()).unwrap_or_default();
        let identity = format!(
            "{}|{}|{}",
            host.api_endpoint.as_deref().unwrap_or_default(),
            host.api_fingerprint.as_deref().unwrap_or_default(),
            homestak_base::digest::hex(&homestak_base::digest::sha256(token.as_bytes()))
        );
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cached) = clients.get(&host.name)
            && cached.identity == identity
        {
            return Ok(cached.api.clone());
        }
        let api = connect(host, self.setup.insecure, self.pve_observer.clone())?;
        clients.insert(
            host.name.clone(),
            CachedClient {
                identity,
                api: api.clone(),
            },
        );
        Ok(api)
    }

    /// The tier of target `host`, without the SSH check of VMs (a run adds
    /// it once its plan is approved).
    pub fn tier(&self, site: Arc<Site>, host: &str) -> Result<Tier, Error> {
        let host_config = site.host_config(host).map_err(|source| Error::Host {
            host: host.to_string(),
            source,
        })?;
        let api = self.api(&host_config)?;
        let pve_node = super::pve_node(&host_config)?;
        let owner_key = super::owner_key(&site)?;
        Ok(Tier {
            owner_key,
            ssh: None,
            ssh_error: None,
            binary: self.setup.binary(),
            known_hosts: Some(known_hosts(&host_config, &self.setup)),
            host_ssh: host_ssh(&host_config, &self.setup),
            site,
            host: host_config,
            pve_node,
            api,
            store: self.store.clone(),
        })
    }

    /// The drift report of `manifest` on `host`; `deep` reads every
    /// candidate VM's config. Changes nothing in PVE.
    pub async fn status(
        &self,
        site: Arc<Site>,
        manifest: &Manifest,
        host: &str,
        deep: bool,
    ) -> Result<Status, Error> {
        let mut tier = self.tier(site, host)?;
        self.ssh_for_children(&mut tier, manifest);
        tier.status(manifest, deep).await
    }

    /// The child tiers' plans of the subtrees `planned` hands over (to any
    /// depth), in node order.
    pub async fn child_plans(&self, planned: &Planned) -> Vec<homestak_api::v1::ChildPlan> {
        let mut out = Vec::new();
        for (node, subtree) in &planned.tier.subtrees {
            out.push(match &self.store {
                Some(store) => {
                    crate::controllers::pve::child_plan(
                        store.as_ref(),
                        &planned.plan.manifest,
                        node,
                        subtree,
                    )
                    .await
                }
                None => homestak_api::v1::ChildPlan {
                    node: node.clone(),
                    tree: None,
                    note: Some("no store to find the child tier in".into()),
                },
            });
        }
        out
    }

    /// This tier's plan of `manifest` and its child tiers', for `POST
    /// /v1/plan` (nothing changes on PVE).
    pub async fn plan_tree(
        &self,
        site: Arc<Site>,
        manifest: &Manifest,
        host: &str,
    ) -> Result<homestak_api::v1::PlanTree, Error> {
        let tier = self.tier(site, host)?;
        let planned = tier.plan(manifest, &super::Options::default()).await?;
        let text = homestak_core::plan::render_human(
            &planned.plan,
            &planned.tier.desired,
            homestak_core::plan::Style { color: false },
        );
        Ok(homestak_api::v1::PlanTree {
            host: host.to_string(),
            children: self.child_plans(&planned).await,
            plan: planned.plan,
            text,
        })
    }

    /// A child tier run over SSH is asked over SSH: the key is loaded when
    /// the manifest nests, and a key that cannot be loaded leaves those
    /// children unknown (with why), not the report failed.
    fn ssh_for_children(&self, tier: &mut Tier, manifest: &Manifest) {
        let nests = manifest
            .nodes()
            .is_some_and(|nodes| nodes.iter().any(|n| n.parent.is_some()));
        if nests && tier.ssh.is_none() {
            tier.ssh = ssh_check(&tier.host, &self.setup).ok();
        }
    }

    /// Runs `request` once. `cancel` resolving winds the run down at a
    /// safe point (its outcome is then [`Outcome::Interrupted`]).
    ///
    /// A run that changes the host (apply, destroy) first takes the host
    /// lease ([`hostlease`]) as `request.options.lease` says, and gives it
    /// back at its end unless the engine holds leases (the daemon). Losing
    /// the lease mid-run winds the run down like `cancel`.
    pub async fn run_once(
        &self,
        request: Request,
        cancel: impl Future<Output = ()>,
        observer: &dyn Observer,
    ) -> Result<RunOutcome, Error> {
        let began = Began {
            at: Timestamp::now(),
            clock: Instant::now(),
        };
        let mut request = request;
        // Pull-mode VMs fetching over HTTPS trust the given certificate,
        // else the one `homestak serve` of this state directory serves.
        if request.options.spec_ca.is_none() {
            request.options.spec_ca = crate::state_dir::daemon_cert(&self.setup.state_dir);
        }
        let mut cancel = std::pin::pin!(cancel);
        let tier = self.tier(request.site.clone(), &request.host)?;
        let converging = matches!(request.mode, Mode::Apply | Mode::Destroy);
        let Some(wait) = request.options.lease.filter(|_| converging) else {
            return self
                .run_in(&request, tier, None, cancel, None, observer, began)
                .await;
        };
        let key = LeaseKey::of(&tier);
        // A one-shot run with nothing to do writes nothing, so it needs no
        // lease: it plans first and takes the lease only for work (then
        // plans again under it). A no-op costs the observe alone, not the
        // lease's reads and writes. A daemon (which keeps its leases) takes
        // it on its first run whatever the plan: it is the host's
        // reconciler from then on.
        if request.mode == Mode::Apply && !self.setup.lease.hold {
            let planned = tier.plan(&request.manifest, &request.options).await?;
            if nothing_to_do(&planned) {
                return self
                    .run_in(&request, tier, Some(planned), cancel, None, observer, began)
                    .await;
            }
        }
        let lost = tokio::select! {
            taken = self.take_lease(&key, &tier, wait, observer) => taken?,
            () = &mut cancel => {
                let mut run = RunOutcome::begun(Outcome::Interrupted, began.at);
                run.message = Some(format!(
                    "interrupted while waiting for the lease of host {}",
                    request.host
                ));
                run.duration = began.clock.elapsed();
                self.record(&request, &run);
                return Ok(run);
            }
        };
        let result = self
            .run_in(&request, tier, None, cancel, Some(lost), observer, began)
            .await;
        if !self.setup.lease.hold {
            self.give_back(&key).await;
        }
        result
    }

    /// The lost-signal of the lease at `key`, taken now unless this engine
    /// holds it already.
    async fn take_lease(
        &self,
        key: &LeaseKey,
        tier: &Tier,
        wait: hostlease::Wait,
        observer: &dyn Observer,
    ) -> Result<hostlease::Lost, Error> {
        let mut leases = self.leases.lock().await;
        if let Some(lease) = leases.get(key) {
            if !lease.is_lost() {
                return Ok(lease.lost());
            }
            // Someone else has it now: nothing to give back.
            leases.remove(key);
        }
        let lease = HostLease::acquire(
            tier.api.clone(),
            &tier.host.name,
            tier.pve_node.clone(),
            &self.setup.lease,
            &self.setup.state_dir,
            wait,
            &|held| observer.lease_wait(held),
        )
        .await?;
        let lost = lease.lost();
        leases.insert(key.clone(), lease);
        Ok(lost)
    }

    /// Gives back the lease at `key` (errors are logged: the run is over,
    /// and an unreleased lease lapses or is taken over).
    async fn give_back(&self, key: &LeaseKey) {
        let lease = self.leases.lock().await.remove(key);
        if let Some(lease) = lease
            && !lease.is_lost()
            && let Err(err) = lease.release().await
        {
            tracing::warn!(error = %homestak_base::error_chain(&err), "cannot give the host lease back; it lapses by itself");
        }
    }

    /// Gives back every host lease this engine holds (the daemon, as it
    /// stops).
    pub async fn release_leases(&self) {
        let leases: Vec<LeaseKey> = self.leases.lock().await.keys().cloned().collect();
        for key in leases {
            self.give_back(&key).await;
        }
    }

    /// The run itself, under the lease when `lost` is given, from
    /// `planned` when the plan was made already.
    #[allow(clippy::too_many_arguments)]
    async fn run_in(
        &self,
        request: &Request,
        mut tier: Tier,
        planned: Option<Planned>,
        cancel: std::pin::Pin<&mut impl Future<Output = ()>>,
        lost: Option<hostlease::Lost>,
        observer: &dyn Observer,
        began: Began,
    ) -> Result<RunOutcome, Error> {
        let (started, clock) = (began.at, began.clock);
        let manifest = &request.manifest;
        let ssh = request.mode == Mode::Apply
            && request
                .options
                .verify_ssh
                .unwrap_or(manifest.settings().verify_ssh);
        // The SSH key is loaded only once the plan is approved: a plan, a
        // dry run or a declined destroy never needs it.
        let mut planned = match (planned, request.mode) {
            (Some(planned), _) => planned,
            (None, Mode::Apply | Mode::ReportOnly) => tier.plan(manifest, &request.options).await?,
            (None, Mode::Destroy) => tier.plan_destroy(manifest).await?,
        };
        planned.settings.verify_ssh = ssh;
        let mut run = RunOutcome::begun(Outcome::Converged, started);
        if request.mode == Mode::ReportOnly {
            self.ssh_for_children(&mut tier, manifest);
            let status = tier.report(manifest, &planned).await?;
            run.drifted_nodes = status.drifted_nodes();
            run.outcome = if status.in_sync {
                Outcome::Converged
            } else {
                Outcome::Drifted
            };
            run.summary = format!("{} drifted", run.drifted_nodes);
            run.status = Some(status);
        } else if !observer.planned(&planned) {
            run.outcome = if planned.plan.is_converged() {
                Outcome::Converged
            } else {
                Outcome::Drifted
            };
            run.duration = clock.elapsed();
            return Ok(run);
        } else {
            // A `pve` node is set up over SSH whatever verify_ssh says.
            let pve = request.mode == Mode::Apply && has_pve(&planned);
            if ssh || pve {
                match ssh_check(&tier.host, &self.setup) {
                    Ok(check) => tier.ssh = Some(check),
                    Err(err) if ssh => return Err(err),
                    Err(err) => tier.ssh_error = Some(homestak_base::error_chain(&err)),
                }
            }
            let name = manifest.name();
            let progress = |event: Event| {
                self.history(name, &event);
                observer.progress(&event);
            };
            let lost_why: Mutex<Option<String>> = Mutex::new(None);
            let stop = async {
                match lost {
                    Some(mut lost) => tokio::select! {
                        () = cancel => {}
                        why = lost.wait() => {
                            *lost_why.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                        }
                    },
                    None => cancel.await,
                }
            };
            let report = tier
                .apply(&planned, &request.options, stop, &progress)
                .await;
            let lost_why = lost_why.into_inner().unwrap_or_else(|e| e.into_inner());
            run.outcome = if report.cancelled {
                Outcome::Interrupted
            } else if report.success() {
                Outcome::Converged
            } else {
                Outcome::Failed
            };
            run.changed_nodes = report
                .nodes
                .values()
                .filter(|s| matches!(s, NodeState::Converged | NodeState::RolledBack))
                .count() as u64;
            run.drifted_nodes = report
                .nodes
                .values()
                .filter(|s| !matches!(s, NodeState::Converged | NodeState::Unchanged))
                .count() as u64;
            run.summary = summarize(&report);
            run.message = match lost_why {
                Some(why) => Some(format!(
                    "stopped: lost the lease of host {}: {why}",
                    request.host
                )),
                None => (!report.success()).then(|| why_not(&report, &run.summary)),
            };
            // What converged is observed once more (its config only), so
            // the next run can take it from the store without reading it.
            if request.mode == Mode::Apply && run.changed_nodes > 0 && !report.cancelled {
                let fast = Options {
                    deep: false,
                    ..request.options.clone()
                };
                if let Err(err) = tier.plan(manifest, &fast).await {
                    tracing::warn!(error = %homestak_base::error_chain(&err), manifest = manifest.name(), "cannot observe what the run converged");
                }
            }
            run.report = Some(report);
        }
        run.duration = clock.elapsed();
        self.record(request, &run);
        Ok(run)
    }

    /// Keeps the notable progress of a run in the store's history: steps
    /// done and retried, nodes finished (not every start and poll).
    fn history(&self, manifest: &str, event: &Event) {
        let Some(store) = &self.store else { return };
        if matches!(event.kind, Kind::StepStarted | Kind::StepRequeued) {
            return;
        }
        if let Err(err) = store.append_event(&event.clone().manifest(manifest)) {
            tracing::warn!(error = %homestak_base::error_chain(&err), manifest, "cannot record an event");
        }
    }

    /// Records how a run ended: the manifest's last run, its last applied
    /// revision when it converged, and each failed node's error. Errors are
    /// logged, not returned: the world already changed.
    fn record(&self, request: &Request, run: &RunOutcome) {
        let Some(store) = &self.store else { return };
        let name = request.manifest.name();
        let what = RunOf {
            manifest: name,
            revision: request.revision.as_deref(),
            reason: request.reason,
            mode: request.mode,
            generation: request.generation,
        };
        if let Err(err) = record_run(store.as_ref(), &what, run) {
            tracing::warn!(error = %homestak_base::error_chain(&err), manifest = name, "cannot record the run");
        }
        let Some(report) = &run.report else { return };
        for (node, state) in &report.nodes {
            if let NodeState::Failed(message) = state {
                let key = store::NodeKey::new(name, node);
                let kept = store.update_node(&key, store::Durability::Lazy, &mut |r| {
                    r.last_error = Some(message.clone());
                    r.consecutive_failures += 1;
                    r.set_condition(
                        "Ready",
                        store::ConditionStatus::False,
                        "StepFailed",
                        message,
                        Timestamp::now(),
                    );
                });
                if let Err(err) = kept {
                    tracing::warn!(error = %homestak_base::error_chain(&err), manifest = name, %node, "cannot record a node's failure");
                }
            }
        }
    }
}

/// When a run began, by the wall clock (recorded) and the monotonic one
/// (its duration).
#[derive(Clone, Copy)]
struct Began {
    at: Timestamp,
    clock: Instant,
}

/// True when applying `planned` would change nothing: every node is in
/// sync and none is a `pve` node (whose child tier may have work).
fn nothing_to_do(planned: &Planned) -> bool {
    planned.plan.is_converged() && !has_pve(planned)
}

/// True when the tier has a `pve` node (set up over SSH, with a child tier).
fn has_pve(planned: &Planned) -> bool {
    planned
        .tier
        .desired
        .vms
        .iter()
        .any(|v| v.kind == homestak_core::plan::Kind::Pve)
}

/// Which lease a tier's host has: one per PVE endpoint and node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LeaseKey {
    /// The host's `api_endpoint`, when its config names one.
    endpoint: Option<String>,
    node: PveNode,
}

impl LeaseKey {
    fn of(tier: &Tier) -> LeaseKey {
        LeaseKey {
            endpoint: tier.host.api_endpoint.clone(),
            node: tier.pve_node.clone(),
        }
    }
}

/// Opens the tier's store, `<state_dir>/store`.
pub fn open_store(state_dir: &std::path::Path) -> Result<Arc<dyn Store>, Error> {
    let dir = state_dir.join("store");
    let opened = store::open(&dir, store::Options::default())
        .map_err(|source| Error::StoreOpen { dir, source })?;
    Ok(Arc::new(opened))
}

/// Which run of which manifest [`record_run`] keeps.
#[derive(Debug, Clone, Copy)]
pub struct RunOf<'a> {
    pub manifest: &'a str,
    pub revision: Option<&'a str>,
    pub reason: Reason,
    pub mode: Mode,
    /// The manifest's generation when the run started.
    pub generation: u64,
}

/// Keeps `run` as the manifest's last run and, when it converged applying
/// a revision, that revision as the last applied, durably. Every run ends
/// here: the engine's, and the daemon's runs that failed before they
/// reached an engine.
pub fn record_run(
    store: &dyn Store,
    what: &RunOf<'_>,
    run: &RunOutcome,
) -> Result<(), store::Error> {
    let last = LastReconcile {
        revision: what.revision.map(str::to_string),
        at: run.started,
        reason: what.reason,
        mode: what.mode,
        outcome: run.outcome,
        duration_ms: u64::try_from(run.duration.as_millis()).unwrap_or(u64::MAX),
        changed_nodes: run.changed_nodes,
        drifted_nodes: run.drifted_nodes,
        summary: Some(run.summary.clone()).filter(|s| !s.is_empty()),
        message: run.message.clone(),
        generation: what.generation,
    };
    let applied = (what.mode == Mode::Apply && run.outcome == Outcome::Converged)
        .then_some(what.revision)
        .flatten()
        .map(|revision| Applied {
            revision: revision.to_string(),
            at: Timestamp::now(),
        });
    store
        .update_manifest(what.manifest, store::Durability::Flush, &mut |record| {
            if let Some(applied) = &applied {
                record.last_applied = Some(applied.clone());
            }
            record.last_reconcile = Some(last.clone());
        })
        .map(|_| ())
}

/// Why a run did not converge: its summary and each failed node's error
/// (a parent tier shows this for its child).
fn why_not(report: &Report, summary: &str) -> String {
    let failed: Vec<String> = report
        .nodes
        .iter()
        .filter_map(|(node, state)| match state {
            NodeState::Failed(why) => Some(format!("{node}: {why}")),
            _ => None,
        })
        .collect();
    if failed.is_empty() {
        summary.to_string()
    } else {
        format!("{summary} ({})", failed.join("; "))
    }
}

/// One line summing up a run, for the store and logs.
pub fn summarize(report: &Report) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for state in report.nodes.values() {
        *counts.entry(state.label()).or_default() += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    if parts.is_empty() {
        "nothing to do".to_string()
    } else {
        parts.join(", ")
    }
}
