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
//!
//! By concern: `desired` (the entries, re-read on each revision),
//! `queue` (one pending job per manifest), `worker` (runs them),
//! `subtrees` (parents' requests) and `status` (`GET /v1/status`).

mod desired;
mod queue;
mod status;
mod subtrees;
#[cfg(test)]
mod tests;
mod worker;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use serde_json::Value;

use super::engine::Engine;
use super::events::EventLog;
use super::metrics::Metrics;
use super::shutdown::Shutdown;
use super::site_cell::SiteCell;
use super::source::{Snapshot, Source};
use homestak_api::v1::{Origin, Running};
use homestak_api::{Applied, DriftPolicy, ManifestRecord, Mode, Reason};
use homestak_core::model::Manifest;
use homestak_engine::store::Store;
use queue::Queue;

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

#[derive(Debug, Clone, Default)]
struct Desired {
    /// The last snapshot read successfully.
    snapshot: Option<Snapshot>,
    /// Why the last read failed, if it did.
    error: Option<String>,
    entries: BTreeMap<String, Entry>,
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
}

/// For status and events (the errors reaching here carry no secret values).
pub use homestak_base::error_chain;
