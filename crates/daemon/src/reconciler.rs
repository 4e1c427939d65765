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
//!
//! A subtree a parent asked to destroy (`DELETE /v1/subtree/{name}`) runs
//! [`Mode::Destroy`] until a run converges; then it is forgotten. The
//! mark is kept with the subtree, so a restart resumes it.
//!
//! Each request of a parent bumps the manifest's generation after it
//! changed the subtree, and a run reads the generation before the entry:
//! a run that records generation G saw what request G asked for.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use serde_json::Value;
use tokio::sync::Notify;

use super::engine::{Engine, StatusRequest};
use super::events::EventLog;
use super::metrics::Metrics;
use super::reply::ApiError;
use super::shutdown::Shutdown;
use super::site_cell::SiteCell;
use super::source::{self, Snapshot, Source, short};
use homestak_api::v1::{ManifestStatus, Origin, Running, StatusResponse};
use homestak_api::{
    Applied, DriftPolicy, Event, Kind, Level, ManifestRecord, Mode, Outcome, Reason, Subtree,
};
use homestak_base::time::Timestamp;
use homestak_core::model::{Manifest, Origin as ManifestOrigin};
use homestak_engine::reconcile::{self, Options, Request, RunOf, RunOutcome};
use homestak_engine::store::{Durability, Store};

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
    /// A delegated manifest its parent asked to destroy.
    pub destroying: bool,
}

/// A manifest the daemon manages is known by one name: its records, events,
/// metrics and `homestak status` all use it, and so do the marks on its
/// VMs. So `manifests/NAME.yaml` must say `name: NAME`.
fn named_like_its_file(file: &str, manifest: Arc<Manifest>) -> Result<Arc<Manifest>, String> {
    if manifest.name() == file {
        Ok(manifest)
    } else {
        Err(format!(
            "manifests/{file}.yaml names itself '{}'; the daemon knows a manifest by one name, \
             so rename the file to {}.yaml or set `name: {file}`",
            manifest.name(),
            manifest.name()
        ))
    }
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
    /// Read every VM's config (the every-Nth-resync deep check).
    deep: bool,
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
    store: Arc<dyn Store>,
    events: EventLog,
    metrics: Arc<Metrics>,
    site: SiteCell,
    source: Source,
    extra_manifests: Vec<String>,
    host_override: Option<String>,
    /// The certificate this daemon serves (PEM): pull-mode VMs of its runs
    /// trust it when they fetch their spec from it.
    spec_ca: Option<String>,
    desired: RwLock<Desired>,
    queue: Queue,
    running: Mutex<Option<Running>>,
    /// Held while a parent's request (or forgetting a destroyed subtree)
    /// changes a subtree, so the store and the entries move together.
    subtree_change: Mutex<()>,
    shutdown: Shutdown,
    deep_every: u64,
    /// Resyncs queued so far, for `deep_every`.
    resyncs: AtomicU64,
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
    pub store: Arc<dyn Store>,
    pub events: EventLog,
    pub metrics: Arc<Metrics>,
    pub site: SiteCell,
    pub source: Source,
    pub extra_manifests: Vec<String>,
    pub host_override: Option<String>,
    /// The certificate the daemon serves (PEM), for pull-mode VMs.
    pub spec_ca: Option<String>,
    pub shutdown: Shutdown,
    /// Every Nth resync observes deep (every VM's config); 0: never.
    pub deep_every: u64,
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
            spec_ca: parts.spec_ca,
            desired: RwLock::new(Desired::default()),
            queue: Queue::default(),
            running: Mutex::new(None),
            subtree_change: Mutex::new(()),
            shutdown: parts.shutdown,
            deep_every: parts.deep_every,
            resyncs: AtomicU64::new(0),
        }
    }

    pub fn source(&self) -> &Source {
        &self.source
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
                        .emit(Event::error(Kind::SourceError, message.clone()));
                }
                return Err(err);
            }
        };
        let mut d = self.write_desired();
        let changed = d.snapshot.as_ref().map(|s| &s.revision) != Some(&snapshot.revision);
        if changed {
            self.events.emit(Event::info(
                Kind::Revision,
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
            .retain_manifests(|name| entries.contains_key(name));
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
                    .unwrap_or_else(|| Err(format!("manifest '{name}' was not read")))
                    .and_then(|m| named_like_its_file(&name, m));
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
                        destroying: false,
                    },
                );
            }
        }
        let subtrees = self.store.list_subtrees().unwrap_or_else(|err| {
            tracing::error!(error = %error_chain(&err), "cannot read the subtrees kept in the store");
            Vec::new()
        });
        for sub in subtrees {
            let name = sub.name.clone();
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
                    destroying: sub.destroy,
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

    /// Stores a delegated subtree (replacing one of its name, even one
    /// being destroyed) and queues it. Returns the manifest's new
    /// generation.
    pub fn accept_subtree(&self, subtree: Subtree) -> Result<u64, ApiError> {
        let name = subtree.name.clone();
        let _one = self
            .subtree_change
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.refuse_git_managed(&name)?;
        let revision = subtree.revision.clone();
        let from = subtree.from.clone();
        let subtree = Subtree {
            destroy: false,
            ..subtree
        };
        self.keep_subtree(&subtree)?;
        self.reload_entries();
        let generation = self.bump_generation(&name)?;
        self.events.emit(
            Event::info(
                Kind::SubtreeAccepted,
                format!("subtree {} from '{from}'", short(&revision)),
            )
            .manifest(&name),
        );
        self.enqueue(&name, Reason::Subtree)?;
        Ok(generation)
    }

    /// Marks the delegated subtree `name` for destruction and queues its
    /// destroy run (again, if one failed). Returns the manifest's new
    /// generation.
    pub fn destroy_subtree(&self, name: &str, from: &str) -> Result<u64, ApiError> {
        let _one = self
            .subtree_change
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.refuse_git_managed(name)?;
        let kept = self.store.get_subtree(name).map_err(|e| {
            tracing::error!(error = %error_chain(&e), manifest = name, "cannot read a subtree");
            ApiError::internal("Cannot read the subtree")
        })?;
        let Some(subtree) = kept else {
            return Err(ApiError::not_found(format!("No subtree here: {name}")));
        };
        if !subtree.destroy {
            self.keep_subtree(&Subtree {
                destroy: true,
                ..subtree
            })?;
            self.reload_entries();
        }
        let generation = self.bump_generation(name)?;
        self.events.emit(
            Event::info(
                Kind::SubtreeDestroyRequested,
                format!("destroy asked by '{from}'"),
            )
            .manifest(name),
        );
        self.enqueue(name, Reason::Subtree)?;
        Ok(generation)
    }

    fn refuse_git_managed(&self, name: &str) -> Result<(), ApiError> {
        if self.is_git_managed(name) {
            return Err(ApiError::new(
                409,
                "E103",
                format!("Manifest '{name}' is managed from this tier's site-config"),
            ));
        }
        Ok(())
    }

    fn keep_subtree(&self, subtree: &Subtree) -> Result<(), ApiError> {
        self.store
            .put_subtree(subtree, Durability::Flush)
            .map_err(|e| {
                tracing::error!(error = %error_chain(&e), "cannot store a subtree");
                ApiError::internal("Cannot store the subtree")
            })
    }

    /// Durably counts a parent's request; returns the new generation.
    fn bump_generation(&self, name: &str) -> Result<u64, ApiError> {
        self.store
            .update_manifest(name, Durability::Flush, &mut |r| {
                r.generation = r.generation.saturating_add(1);
            })
            .map(|r| r.generation)
            .map_err(|e| {
                tracing::error!(error = %error_chain(&e), manifest = name, "cannot record a request");
                ApiError::internal("Cannot record the request")
            })
    }

    /// Re-reads the subtrees into the entries.
    fn reload_entries(&self) {
        let mut d = self.write_desired();
        d.entries = self.entries_of(d.snapshot.as_ref());
        let entries = &d.entries;
        self.metrics
            .retain_manifests(|name| entries.contains_key(name));
    }

    /// Forgets a subtree whose destroy run converged, unless a request
    /// came after the run started (its own run is queued).
    fn forget_destroyed(&self, name: &str, generation: u64) {
        let _one = self
            .subtree_change
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if self.record(name).generation != generation {
            return;
        }
        match self.store.get_subtree(name) {
            Ok(Some(subtree)) if subtree.destroy => {}
            Ok(_) => return,
            Err(err) => {
                tracing::error!(error = %error_chain(&err), manifest = name, "cannot read a destroyed subtree; it is kept");
                return;
            }
        }
        // Kept on failure: the next resync destroys (nothing) and tries again.
        if let Err(err) = self.store.delete_subtree(name, Durability::Flush) {
            tracing::error!(error = %error_chain(&err), manifest = name, "cannot forget a destroyed subtree");
            return;
        }
        self.reload_entries();
        tracing::info!(manifest = name, "destroyed subtree forgotten");
        self.events
            .emit(Event::info(Kind::SubtreeForgotten, "destroyed").manifest(name));
    }

    /// Queues every managed, unsuspended manifest. Returns the names.
    pub fn enqueue_all(&self, reason: Reason) -> Vec<String> {
        // Every Nth resync reads every VM's config: what the fast path
        // cannot see (network, cloud-init) is found at least that often,
        // and so does the startup run (drift while the daemon was down).
        let deep = self.deep_every > 0
            && match reason {
                Reason::Startup => true,
                Reason::Resync => (self.resyncs.fetch_add(1, Ordering::Relaxed) + 1)
                    .is_multiple_of(self.deep_every),
                _ => false,
            };
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
                deep,
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
                    deep: false,
                });
                Ok(())
            }
        }
    }

    fn push(&self, job: Job) {
        let mut items = self.queue.items.lock().unwrap_or_else(|e| e.into_inner());
        match items.iter_mut().find(|j| j.name == job.name) {
            // Already queued: keep its place, keep the stronger reason.
            Some(queued) => {
                queued.reason = queued.reason.max(job.reason);
                queued.deep |= job.deep;
            }
            None => {
                self.events.emit(
                    Event::info(Kind::ReconcileQueued, job.reason.as_str()).manifest(&job.name),
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
        // The record (and its generation) before the entry: see the module docs.
        let record = self.record(&job.name);
        let Some(entry) = self.read_desired().entries.get(&job.name).cloned() else {
            self.events
                .emit(Event::info(Kind::ReconcileSkipped, "no longer managed").manifest(&job.name));
            return;
        };
        if entry.suspended {
            self.events
                .emit(Event::info(Kind::ReconcileSkipped, "suspended").manifest(&job.name));
            return;
        }
        let generation = record.generation;
        let mode = if entry.destroying {
            Mode::Destroy
        } else {
            decide_mode(
                job.reason,
                entry.drift,
                &entry.revision,
                record.last_applied.as_ref(),
            )
        };
        let started = Timestamp::now();
        let clock = Instant::now();
        let ran = match (&entry.manifest, &entry.host) {
            (Err(problem), _) => Err(problem.clone()),
            (Ok(_), None) => Err(format!(
                "no target host for '{}': set `host` in controller.yaml or pass --host",
                entry.name
            )),
            (Ok(manifest), Some(host)) => {
                self.events.emit(
                    Event::info(
                        Kind::ReconcileStarted,
                        format!(
                            "{} at {} on {host} ({})",
                            mode.verb(),
                            short(&entry.revision),
                            job.reason.as_str()
                        ),
                    )
                    .manifest(&entry.name),
                );
                *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(Running {
                    manifest: entry.name.clone(),
                    since: started,
                });
                let request = Request {
                    manifest: Arc::clone(manifest),
                    host: host.clone(),
                    site: self.site.get(),
                    revision: Some(entry.revision.clone()),
                    reason: job.reason,
                    mode,
                    options: Options {
                        spec_ca: self.spec_ca.clone(),
                        deep: job.deep,
                        ..Options::default()
                    },
                    generation,
                };
                // On its own task, so a panicking engine fails this job
                // instead of killing the worker.
                let engine = Arc::clone(&self.engine);
                let shutdown = self.shutdown.clone();
                let result =
                    tokio::spawn(async move { engine.reconcile(request, shutdown).await }).await;
                *self.running.lock().unwrap_or_else(|e| e.into_inner()) = None;
                match result {
                    Ok(Ok(run)) => Ok(run),
                    Ok(Err(err)) => Err(error_chain(&err)),
                    Err(join) => {
                        tracing::error!(manifest = %entry.name, error = %join, "the engine panicked");
                        Err("the engine panicked; see the daemon's log".to_string())
                    }
                }
            }
        };
        let (outcome, changed, drifted, message) = match &ran {
            Ok(run) => (
                run.outcome,
                run.changed_nodes,
                run.drifted_nodes,
                run.message.clone(),
            ),
            Err(why) => (Outcome::Failed, 0, 0, Some(why.clone())),
        };
        if let Err(why) = &ran {
            // The engine records the runs it makes; this one never got there.
            let what = RunOf {
                manifest: &entry.name,
                revision: Some(&entry.revision),
                reason: job.reason,
                mode,
                generation,
            };
            let run = RunOutcome::failed(why.clone(), started, clock.elapsed());
            if let Err(err) = reconcile::record_run(self.store.as_ref(), &what, &run) {
                tracing::error!(error = %error_chain(&err), "cannot record a reconcile");
            }
        }
        self.metrics.reconciled(
            &entry.name,
            outcome,
            clock.elapsed().as_secs_f64(),
            ran.as_ref().ok(),
        );
        let level = match outcome {
            Outcome::Converged => Level::Info,
            Outcome::Drifted | Outcome::Interrupted => Level::Warning,
            Outcome::Failed => Level::Error,
        };
        let mut text = format!("{outcome}: {changed} changed, {drifted} drifted");
        if let Some(why) = &message {
            text.push_str(": ");
            text.push_str(why);
        }
        tracing::info!(manifest = %entry.name, outcome = outcome.as_str(), "reconcile finished");
        self.events
            .emit(Event::new(level, Kind::ReconcileFinished, text).manifest(&entry.name));
        if mode == Mode::Destroy && outcome == Outcome::Converged {
            self.forget_destroyed(&entry.name, generation);
        }
    }

    /// What the store keeps about `manifest` (nothing, if it cannot be read:
    /// logged, and the run applies as if nothing was applied yet).
    fn record(&self, manifest: &str) -> ManifestRecord {
        match self.store.get_manifest(manifest) {
            Ok(record) => record.unwrap_or_default(),
            Err(err) => {
                tracing::error!(error = %error_chain(&err), manifest, "cannot read the manifest's record");
                ManifestRecord::default()
            }
        }
    }

    /// `GET /v1/status`: every managed manifest (or `only`), with its
    /// records and, when `observe`, a fresh drift report.
    pub async fn status(
        &self,
        only: Option<&str>,
        observe: bool,
    ) -> Result<StatusResponse, ApiError> {
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
        let mut manifests = Vec::new();
        for entry in entries
            .values()
            .filter(|e| only.is_none_or(|n| n == e.name))
        {
            let record = self.record(&entry.name);
            manifests.push(self.entry_status(entry, record, observe).await);
        }
        let running = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(StatusResponse {
            source: self.source.mode().as_str().to_string(),
            revision,
            source_error: error,
            queue_depth: self.queue_depth() as u64,
            running,
            manifests,
        })
    }

    async fn entry_status(
        &self,
        entry: &Entry,
        record: ManifestRecord,
        observe: bool,
    ) -> ManifestStatus {
        let (mut status, mut error) = (None, None);
        match (&entry.manifest, &entry.host) {
            // Records only: PVE is not asked.
            _ if !observe => {}
            (Err(problem), _) => error = Some(problem.clone()),
            (Ok(_), None) => error = Some("no target host".to_string()),
            (Ok(manifest), Some(host)) => {
                let request = StatusRequest {
                    manifest: Arc::clone(manifest),
                    host: host.clone(),
                    site: self.site.get(),
                };
                match self.engine.status(request).await {
                    Ok(report) => {
                        self.metrics.observed(&entry.name, &report);
                        status = Some(report);
                    }
                    Err(err) => error = Some(error_chain(&err)),
                }
            }
        }
        ManifestStatus {
            name: entry.name.clone(),
            origin: entry.origin,
            host: entry.host.clone(),
            drift: entry.drift,
            suspended: entry.suspended,
            revision: entry.revision.clone(),
            in_sync: status.as_ref().map(|s| s.in_sync),
            record,
            destroying: entry.destroying,
            status,
            error,
        }
    }

    fn read_desired(&self) -> std::sync::RwLockReadGuard<'_, Desired> {
        self.desired.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_desired(&self) -> std::sync::RwLockWriteGuard<'_, Desired> {
        self.desired.write().unwrap_or_else(|e| e.into_inner())
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
            at: Timestamp::EPOCH,
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
    fn a_managed_manifest_is_named_like_its_file() {
        let manifest = |name: &str| {
            let text =
                format!("schema_version: 2\nname: {name}\nnodes:\n  - {{name: a, type: vm}}\n");
            Arc::new(Manifest::from_yaml_str(&text, std::path::Path::new("m.yaml")).unwrap())
        };
        assert!(named_like_its_file("demo", manifest("demo")).is_ok());
        let err = named_like_its_file("demo", manifest("other")).unwrap_err();
        assert!(
            err.contains("manifests/demo.yaml names itself 'other'"),
            "{err}"
        );
    }

    #[test]
    fn subtree_revisions_are_stable_digests() {
        let a = subtree_revision(&serde_json::json!({"name": "x"}));
        assert_eq!(a, subtree_revision(&serde_json::json!({"name": "x"})));
        assert_ne!(a, subtree_revision(&serde_json::json!({"name": "y"})));
        assert!(a.starts_with("subtree:"));
    }
}
