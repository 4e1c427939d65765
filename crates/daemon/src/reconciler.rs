//! The reconcile loop's state: the managed manifests at the current
//! revision, the queue, and the single worker that hands one manifest at a
//! time to the [`Engine`].
//!
//! Triggers only enqueue; the worker decides the [`Mode`] per job:
//! - a revision not yet applied (a new commit, a new subtree) and explicit
//!   API triggers apply;
//! - otherwise (resync, reload, startup on an applied revision) the
//!   manifest's drift policy decides: `correct` applies, `report` only
//!   observes and reports.
//!
//! So a commit is an instruction to converge, and `drift: report` only
//! stops the daemon from undoing out-of-band changes between commits.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use serde_json::{Value, json};
use tokio::sync::Notify;

use super::engine::{
    Engine, Mode, Outcome, Reason, ReconcileRequest, ReconcileSummary, StatusRequest,
};
use super::events::{EventLog, Level, NewEvent, now_rfc3339};
use super::metrics::Metrics;
use super::policy::DriftPolicy;
use super::reply::ApiError;
use super::shutdown::Shutdown;
use super::site_cell::SiteCell;
use super::source::{self, Snapshot, Source, short};
use super::store::{Applied, ControllerStore, LastReconcile, ManifestRecord, Subtree};
use homestak_core::model::{Manifest, Origin as ManifestOrigin};

/// Where a managed manifest comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `manifests/NAME.yaml`, listed in `controller.yaml` or `--manifest`.
    Git,
    /// Handed over by a parent tier (`PUT /v1/subtree`).
    Delegated,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Git => "git",
            Origin::Delegated => "delegated",
        }
    }
}

/// One managed manifest at the current revision.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub origin: Origin,
    pub host: Option<String>,
    pub drift: DriftPolicy,
    pub suspended: bool,
    /// What applying this entry applies.
    pub revision: String,
    /// The manifest, or why it cannot be used.
    pub manifest: Result<Arc<Manifest>, String>,
}

#[derive(Debug, Clone, Default)]
struct Desired {
    /// The last snapshot read successfully.
    snapshot: Option<Snapshot>,
    /// Why the last read failed, if it did.
    error: Option<String>,
    entries: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone)]
struct Job {
    name: String,
    reason: Reason,
}

/// Pending jobs, one per manifest at most.
#[derive(Debug, Default)]
struct Queue {
    items: Mutex<VecDeque<Job>>,
    notify: Notify,
}

/// The reconcile loop.
pub struct Reconciler {
    engine: Arc<dyn Engine>,
    store: Arc<dyn ControllerStore>,
    events: EventLog,
    metrics: Arc<Metrics>,
    site: SiteCell,
    source: Source,
    extra_manifests: Vec<String>,
    host_override: Option<String>,
    desired: RwLock<Desired>,
    queue: Queue,
    running: Mutex<Option<(String, String)>>,
    shutdown: Shutdown,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// What [`Reconciler::new`] needs.
pub struct Parts {
    pub engine: Arc<dyn Engine>,
    pub store: Arc<dyn ControllerStore>,
    pub events: EventLog,
    pub metrics: Arc<Metrics>,
    pub site: SiteCell,
    pub source: Source,
    pub extra_manifests: Vec<String>,
    pub host_override: Option<String>,
    pub shutdown: Shutdown,
}

/// The mode a job runs in (see the module docs).
pub fn decide_mode(
    reason: Reason,
    drift: DriftPolicy,
    revision: &str,
    last_applied: Option<&Applied>,
) -> Mode {
    let applied = last_applied.is_some_and(|a| a.revision == revision);
    if !applied || reason == Reason::Api {
        return Mode::Apply;
    }
    match drift {
        DriftPolicy::Correct => Mode::Apply,
        DriftPolicy::Report => Mode::ReportOnly,
    }
}

/// The revision of a delegated manifest: a digest of its JSON.
pub fn subtree_revision(manifest: &Value) -> String {
    let bytes = serde_json::to_vec(manifest).unwrap_or_default();
    let digest = homestak_base::digest::sha256(&bytes);
    format!("subtree:{}", homestak_base::digest::short_hex(&digest))
}

impl Reconciler {
    pub fn new(parts: Parts) -> Reconciler {
        Reconciler {
            engine: parts.engine,
            store: parts.store,
            events: parts.events,
            metrics: parts.metrics,
            site: parts.site,
            source: parts.source,
            extra_manifests: parts.extra_manifests,
            host_override: parts.host_override,
            desired: RwLock::new(Desired::default()),
            queue: Queue::default(),
            running: Mutex::new(None),
            shutdown: parts.shutdown,
        }
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The current revision of the source (cheap).
    pub async fn current_revision(&self) -> Result<String, source::Error> {
        self.source.revision(&self.extra_manifests).await
    }

    /// The revision of the last snapshot read.
    pub fn known_revision(&self) -> Option<String> {
        self.read_desired()
            .snapshot
            .as_ref()
            .map(|s| s.revision.clone())
    }

    /// Re-reads desired state. `Ok(true)` when the revision changed (or
    /// this is the first read).
    pub async fn refresh(&self) -> Result<bool, source::Error> {
        let snapshot = match self.source.read(&self.extra_manifests).await {
            Ok(s) => s,
            Err(err) => {
                let message = error_chain(&err);
                let changed = {
                    let mut d = self.write_desired();
                    let changed = d.error.as_deref() != Some(message.as_str());
                    d.error = Some(message.clone());
                    changed
                };
                if changed {
                    tracing::warn!(error = %message, "cannot read desired state");
                    self.events
                        .emit(NewEvent::error("source_error", message.clone()));
                }
                return Err(err);
            }
        };
        let mut d = self.write_desired();
        let changed = d.snapshot.as_ref().map(|s| &s.revision) != Some(&snapshot.revision);
        if changed {
            self.events.emit(NewEvent::info(
                "revision",
                format!(
                    "desired state at {} ({})",
                    short(&snapshot.revision),
                    self.source.mode().as_str()
                ),
            ));
        }
        d.error = None;
        d.snapshot = Some(snapshot);
        d.entries = self.entries_of(d.snapshot.as_ref());
        let entries = &d.entries;
        self.metrics
            .drifted_nodes
            .retain_first_label(|name| entries.contains_key(name));
        Ok(changed)
    }

    fn entries_of(&self, snapshot: Option<&Snapshot>) -> BTreeMap<String, Entry> {
        let mut entries = BTreeMap::new();
        if let Some(s) = snapshot {
            let policies = s
                .controller
                .effective(&self.extra_manifests, self.host_override.as_deref());
            for (name, policy) in policies {
                let manifest = s
                    .manifests
                    .get(&name)
                    .cloned()
                    .unwrap_or_else(|| Err(format!("manifest '{name}' was not read")));
                entries.insert(
                    name.clone(),
                    Entry {
                        name,
                        origin: Origin::Git,
                        host: policy.host,
                        drift: policy.drift,
                        suspended: policy.suspend,
                        revision: s.revision.clone(),
                        manifest,
                    },
                );
            }
        }
        for (name, sub) in self.store.subtrees() {
            if entries.contains_key(&name) {
                continue;
            }
            let manifest = Manifest::from_value(&sub.manifest, ManifestOrigin::Json)
                .map(Arc::new)
                .map_err(|e| e.located().to_string());
            entries.insert(
                name.clone(),
                Entry {
                    name,
                    origin: Origin::Delegated,
                    host: self.host_override.clone().or(Some(sub.host)),
                    drift: DriftPolicy::Correct,
                    suspended: false,
                    revision: sub.revision,
                    manifest,
                },
            );
        }
        entries
    }

    /// The managed manifests now.
    pub fn entries(&self) -> BTreeMap<String, Entry> {
        self.read_desired().entries.clone()
    }

    /// True when `name` is a git-managed manifest.
    pub fn is_git_managed(&self, name: &str) -> bool {
        self.read_desired()
            .entries
            .get(name)
            .is_some_and(|e| e.origin == Origin::Git)
    }

    /// Stores a delegated subtree and queues it.
    pub fn accept_subtree(&self, subtree: Subtree) -> Result<(), ApiError> {
        let name = subtree.name.clone();
        if self.is_git_managed(&name) {
            return Err(ApiError::new(
                409,
                "E103",
                format!("Manifest '{name}' is managed from this tier's site-config"),
            ));
        }
        let revision = subtree.revision.clone();
        let from = subtree.from.clone();
        self.store.put_subtree(subtree).map_err(|e| {
            tracing::error!(error = %error_chain(&e), "cannot store a subtree");
            ApiError::internal("Cannot store the subtree")
        })?;
        {
            let mut d = self.write_desired();
            d.entries = self.entries_of(d.snapshot.as_ref());
        }
        self.events.emit(
            NewEvent::info(
                "subtree_accepted",
                format!("subtree {} from '{from}'", short(&revision)),
            )
            .manifest(&name),
        );
        self.enqueue(&name, Reason::Subtree)
    }

    /// Queues every managed, unsuspended manifest. Returns the names.
    pub fn enqueue_all(&self, reason: Reason) -> Vec<String> {
        let names: Vec<String> = self
            .read_desired()
            .entries
            .values()
            .filter(|e| !e.suspended)
            .map(|e| e.name.clone())
            .collect();
        for name in &names {
            self.push(Job {
                name: name.clone(),
                reason,
            });
        }
        names
    }

    /// Queues one manifest.
    pub fn enqueue(&self, name: &str, reason: Reason) -> Result<(), ApiError> {
        let entry = self.read_desired().entries.get(name).cloned();
        match entry {
            None => Err(ApiError::not_found(format!(
                "Manifest not managed here: {name}"
            ))),
            Some(e) if e.suspended => Err(ApiError::new(
                409,
                "E103",
                format!("Manifest '{name}' is suspended in controller.yaml"),
            )),
            Some(_) => {
                self.push(Job {
                    name: name.to_string(),
                    reason,
                });
                Ok(())
            }
        }
    }

    fn push(&self, job: Job) {
        let mut items = self.queue.items.lock().unwrap_or_else(|e| e.into_inner());
        match items.iter_mut().find(|j| j.name == job.name) {
            // Already queued: keep its place, keep the stronger reason.
            Some(queued) => queued.reason = queued.reason.max(job.reason),
            None => {
                self.events.emit(
                    NewEvent::info("reconcile_queued", job.reason.as_str()).manifest(&job.name),
                );
                items.push_back(job);
            }
        }
        self.metrics
            .queue_depth
            .store(items.len() as u64, Ordering::Relaxed);
        drop(items);
        self.queue.notify.notify_one();
    }

    async fn pop(&self) -> Job {
        loop {
            {
                let mut items = self.queue.items.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(job) = items.pop_front() {
                    self.metrics
                        .queue_depth
                        .store(items.len() as u64, Ordering::Relaxed);
                    return job;
                }
            }
            self.queue.notify.notified().await;
        }
    }

    /// Jobs waiting.
    pub fn queue_depth(&self) -> usize {
        self.queue
            .items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Runs jobs one at a time until shutdown. A job in progress when
    /// shutdown starts is left to finish (the engine sees the signal and
    /// stops at a safe point).
    pub async fn run_worker(self: Arc<Self>) {
        let mut shutdown = self.shutdown.clone();
        loop {
            let job = tokio::select! {
                biased;
                () = shutdown.triggered() => break,
                job = self.pop() => job,
            };
            self.run_job(job).await;
        }
        tracing::debug!("reconcile worker stopped");
    }

    async fn run_job(&self, job: Job) {
        let Some(entry) = self.read_desired().entries.get(&job.name).cloned() else {
            self.events
                .emit(NewEvent::info("reconcile_skipped", "no longer managed").manifest(&job.name));
            return;
        };
        if entry.suspended {
            self.events
                .emit(NewEvent::info("reconcile_skipped", "suspended").manifest(&job.name));
            return;
        }
        let mut record = self.store.record(&entry.name);
        let mode = decide_mode(
            job.reason,
            entry.drift,
            &entry.revision,
            record.last_applied.as_ref(),
        );
        let started = Instant::now();
        let summary = match (&entry.manifest, &entry.host) {
            (Err(problem), _) => failed(problem.clone()),
            (Ok(_), None) => failed(format!(
                "no target host for '{}': set `host` in controller.yaml or pass --host",
                entry.name
            )),
            (Ok(manifest), Some(host)) => {
                self.events.emit(
                    NewEvent::info(
                        "reconcile_started",
                        format!(
                            "{} at {} on {host} ({})",
                            mode_str(mode),
                            short(&entry.revision),
                            job.reason.as_str()
                        ),
                    )
                    .manifest(&entry.name),
                );
                *self.running.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((entry.name.clone(), now_rfc3339()));
                let request = ReconcileRequest {
                    manifest_name: entry.name.clone(),
                    manifest: Arc::clone(manifest),
                    host: host.clone(),
                    site: self.site.get(),
                    revision: entry.revision.clone(),
                    reason: job.reason,
                    mode,
                    shutdown: self.shutdown.clone(),
                    events: self.events.clone(),
                };
                // On its own task, so a panicking engine fails this job
                // instead of killing the worker.
                let engine = Arc::clone(&self.engine);
                let result = tokio::spawn(async move { engine.reconcile(request).await }).await;
                *self.running.lock().unwrap_or_else(|e| e.into_inner()) = None;
                match result {
                    Ok(Ok(summary)) => summary,
                    Ok(Err(err)) => failed(error_chain(&err)),
                    Err(join) => {
                        tracing::error!(manifest = %entry.name, error = %join, "the engine panicked");
                        failed("the engine panicked; see the daemon's log".to_string())
                    }
                }
            }
        };
        let elapsed = started.elapsed();
        self.metrics.reconciles.inc(&[summary.outcome.as_str()]);
        self.metrics
            .reconcile_duration
            .observe(elapsed.as_secs_f64());
        self.metrics
            .drifted_nodes
            .set(&[&entry.name], summary.drifted_nodes as f64);
        let at = now_rfc3339();
        if summary.outcome == Outcome::Converged && mode == Mode::Apply {
            record.last_applied = Some(Applied {
                revision: entry.revision.clone(),
                at: at.clone(),
            });
        }
        record.last_reconcile = Some(LastReconcile {
            revision: entry.revision.clone(),
            at,
            reason: job.reason,
            mode,
            outcome: summary.outcome,
            duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            changed_nodes: summary.changed_nodes,
            drifted_nodes: summary.drifted_nodes,
            message: summary.message.clone(),
        });
        if let Err(err) = self.store.put_record(&entry.name, record) {
            tracing::error!(error = %error_chain(&err), "cannot record a reconcile");
        }
        let level = match summary.outcome {
            Outcome::Converged => Level::Info,
            Outcome::Drifted | Outcome::Interrupted => Level::Warning,
            Outcome::Failed => Level::Error,
        };
        let mut message = format!(
            "{}: {} changed, {} drifted",
            summary.outcome.as_str(),
            summary.changed_nodes,
            summary.drifted_nodes
        );
        if let Some(why) = &summary.message {
            message.push_str(": ");
            message.push_str(why);
        }
        tracing::info!(manifest = %entry.name, outcome = summary.outcome.as_str(), "reconcile finished");
        self.events.emit(NewEvent {
            level,
            ..NewEvent::info("reconcile_finished", message).manifest(&entry.name)
        });
    }

    /// `GET /v1/status`: every managed manifest (or `only`), with its
    /// records and the engine's status report.
    pub async fn status(&self, only: Option<&str>) -> Result<Value, ApiError> {
        let (entries, error, revision) = {
            let d = self.read_desired();
            (
                d.entries.clone(),
                d.error.clone(),
                d.snapshot.as_ref().map(|s| s.revision.clone()),
            )
        };
        if let Some(name) = only
            && !entries.contains_key(name)
        {
            return Err(ApiError::not_found(format!(
                "Manifest not managed here: {name}"
            )));
        }
        let records = self.store.records();
        let mut manifests = Vec::new();
        for entry in entries
            .values()
            .filter(|e| only.is_none_or(|n| n == e.name))
        {
            let record = records.get(&entry.name).cloned().unwrap_or_default();
            manifests.push(self.entry_status(entry, &record).await);
        }
        let running = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(json!({
            "source": self.source.mode().as_str(),
            "revision": revision,
            "source_error": error,
            "queue_depth": self.queue_depth(),
            "running": running.map(|(name, since)| json!({"manifest": name, "since": since})),
            "manifests": manifests,
        }))
    }

    async fn entry_status(&self, entry: &Entry, record: &ManifestRecord) -> Value {
        let (mut status, mut in_sync, mut error) = (Value::Null, Value::Null, Value::Null);
        match (&entry.manifest, &entry.host) {
            (Err(problem), _) => error = json!(problem),
            (Ok(_), None) => error = json!("no target host"),
            (Ok(manifest), Some(host)) => {
                let request = StatusRequest {
                    manifest_name: entry.name.clone(),
                    manifest: Arc::clone(manifest),
                    host: host.clone(),
                    site: self.site.get(),
                };
                match self.engine.status(request).await {
                    Ok(report) => {
                        self.metrics
                            .drifted_nodes
                            .set(&[&entry.name], report.drifted_nodes as f64);
                        in_sync = json!(report.in_sync);
                        status = report.report;
                    }
                    Err(err) => error = json!(error_chain(&err)),
                }
            }
        }
        json!({
            "name": entry.name,
            "origin": entry.origin.as_str(),
            "host": entry.host,
            "drift": entry.drift.as_str(),
            "suspended": entry.suspended,
            "revision": entry.revision,
            "in_sync": in_sync,
            "last_applied": record.last_applied,
            "last_reconcile": record.last_reconcile,
            "status": status,
            "error": error,
        })
    }

    fn read_desired(&self) -> std::sync::RwLockReadGuard<'_, Desired> {
        self.desired.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_desired(&self) -> std::sync::RwLockWriteGuard<'_, Desired> {
        self.desired.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn failed(message: String) -> ReconcileSummary {
    ReconcileSummary {
        outcome: Outcome::Failed,
        changed_nodes: 0,
        drifted_nodes: 0,
        message: Some(message),
        report: Value::Null,
    }
}

fn mode_str(mode: Mode) -> &'static str {
    match mode {
        Mode::Apply => "apply",
        Mode::ReportOnly => "report",
    }
}

/// For status and events (the errors reaching here carry no secret values).
pub use homestak_base::error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(rev: &str) -> Applied {
        Applied {
            revision: rev.into(),
            at: String::new(),
        }
    }

    #[test]
    fn mode_applies_new_revisions_and_follows_policy_otherwise() {
        use DriftPolicy::{Correct, Report};
        use Reason::*;
        let a = applied("r1");
        assert_eq!(decide_mode(Resync, Report, "r2", Some(&a)), Mode::Apply);
        assert_eq!(decide_mode(Startup, Report, "r1", None), Mode::Apply);
        assert_eq!(
            decide_mode(Resync, Report, "r1", Some(&a)),
            Mode::ReportOnly
        );
        assert_eq!(
            decide_mode(Reload, Report, "r1", Some(&a)),
            Mode::ReportOnly
        );
        assert_eq!(decide_mode(Resync, Correct, "r1", Some(&a)), Mode::Apply);
        assert_eq!(decide_mode(Api, Report, "r1", Some(&a)), Mode::Apply);
    }

    #[test]
    fn subtree_revisions_are_stable_digests() {
        let a = subtree_revision(&json!({"name": "x"}));
        assert_eq!(a, subtree_revision(&json!({"name": "x"})));
        assert_ne!(a, subtree_revision(&json!({"name": "y"})));
        assert!(a.starts_with("subtree:"));
    }
}
