//! The executor: runs a plan's nodes as a DAG through a [`Controller`].
//!
//! Flow: every actionable node has an ordered list of [`Planned`] steps
//! (each names a [`Step`]) from its controller. A node is ready once its
//! parent (if on this tier) is done. Ready steps run on a bounded pool of
//! workers; each step does a short, bounded piece of work and returns
//! [`StepOutcome`]:
//! - `Done`: the node advances to its next step (or completes);
//! - `Requeue(after)`: run the same step again later (a PVE task is still
//!   running, an agent is not up yet) — the worker is released meanwhile;
//! - `Failed(err)`: retried with exponential backoff and jitter when the
//!   error is transient, else the node fails and `on_error` applies.
//!
//! Guarantees:
//! - **No worker is held across a PVE task**: waiting is a requeue.
//! - **Bounded**: at most `concurrency` nodes are in progress at once
//!   (`--concurrency 1` converges one node after the other), and at most
//!   `workers` steps run at once. A step that allocates or frees volumes
//!   holds a slot of its storage from its first run until it completes
//!   (across requeues): PVE's storage lock is held for each allocation
//!   only, but a task allocates at points the executor cannot see. The
//!   per-storage limit is learned ([`storage`]) or fixed.
//! - **Storage-lock timeouts** are retried without counting as an attempt
//!   (bounded by `lock_retry_for`), reported as `storage_lock_timeout`
//!   events and counted in the report.
//! - **`on_error`**: `stop` starts no new node after a failure (started
//!   nodes finish their steps: a safe point); `continue` skips only the
//!   failed node's descendants; `rollback` stops, then runs the controller's
//!   undo steps for nodes this run created, children first.
//! - **Cancellation-safe**: when `cancel` fires, no new step starts, running
//!   steps finish, and the report says which nodes were interrupted. Steps
//!   record in-flight task ids durably (the controller's job), so the next
//!   run resumes instead of repeating work.

mod run;
mod scheduler;
pub mod storage;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

pub use run::execute;
pub use storage::{PerStorage, StorageStats};

use homestak_api::PhaseStatus;
use homestak_api::step::Step;
/// What the executor reports as it goes: [`Event`]s of kinds
/// `step_started`, `step_requeued`, `step_done`, `step_retry`,
/// `storage_lock_timeout` and `node_finished`, each naming its node (and
/// step, or end state).
pub use homestak_api::{Event, NodeState};
use homestak_base::id::NodeName;
pub use homestak_core::model::OnError;
use homestak_core::plan::NodePlan;

/// Controllers return it, so they stay object-safe.
pub use homestak_base::BoxFuture;

/// What a controller's planned step carries to its run; it names the
/// [`Step`] it is.
pub trait AsStep {
    fn as_step(&self) -> Step;
}

/// A step that needs nothing planned with it.
impl AsStep for Step {
    fn as_step(&self) -> Step {
        *self
    }
}

/// One step of a node as its controller planned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned<W> {
    pub work: W,
    /// Storage whose concurrency limit this step counts against.
    pub storage: Option<String>,
}

impl<W> Planned<W> {
    pub fn new(work: W) -> Planned<W> {
        Planned {
            work,
            storage: None,
        }
    }

    pub fn on_storage(work: W, storage: impl Into<String>) -> Planned<W> {
        Planned {
            work,
            storage: Some(storage.into()),
        }
    }
}

/// A step failed.
#[derive(Debug, Clone, Serialize)]
pub struct StepError {
    /// What to show the user: what failed and what to do next.
    pub message: String,
    /// Worth retrying (5xx, connection reset, lock timeout), as opposed to a
    /// refusal that will not change by itself (bad config, conflict).
    pub transient: bool,
    /// What the executor does about it beyond retrying.
    pub kind: StepErrorKind,
}

/// Failures the executor treats apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepErrorKind {
    Other,
    /// PVE gave up waiting for the storage's lock (too many allocations
    /// queued): retried without counting as an attempt, and a signal to
    /// run fewer steps on that storage at once.
    StorageLockTimeout {
        storage: String,
    },
}

impl StepError {
    pub fn transient(message: impl Into<String>) -> StepError {
        StepError {
            message: message.into(),
            transient: true,
            kind: StepErrorKind::Other,
        }
    }

    pub fn permanent(message: impl Into<String>) -> StepError {
        StepError {
            message: message.into(),
            transient: false,
            kind: StepErrorKind::Other,
        }
    }

    /// A transient error, typed as a storage-lock timeout when `message`
    /// is PVE's (see [`homestak_pve::storage_lock_timeout`]).
    pub fn classified(message: impl Into<String>) -> StepError {
        let message = message.into();
        let kind = match homestak_pve::storage_lock_timeout(&message) {
            Some(storage) => StepErrorKind::StorageLockTimeout {
                storage: storage.to_string(),
            },
            None => StepErrorKind::Other,
        };
        StepError {
            message,
            transient: true,
            kind,
        }
    }
}

/// What a step run reports back.
#[derive(Debug)]
pub enum StepOutcome {
    Done,
    Requeue(Duration),
    Failed(StepError),
}

/// Per-node kind logic the executor drives.
pub trait Controller: Send + Sync + 'static {
    /// Scratch state carried between a node's steps (vmid chosen, task in
    /// flight, …).
    type Memory: Default + Send + 'static;

    /// A planned step: what running it needs, looked up when it is planned,
    /// so a step cannot be planned without it.
    type Work: AsStep + Clone + Send + Sync + 'static;

    /// The ordered steps that carry out `node`'s plan.
    fn steps(&self, node: &NodePlan) -> Vec<Planned<Self::Work>>;

    /// Runs one step once. Must be short and bounded: a long wait is a
    /// `Requeue`, never a sleep.
    fn run<'a>(
        &'a self,
        node: &'a NodePlan,
        step: &'a Self::Work,
        memory: &'a mut Self::Memory,
    ) -> BoxFuture<'a, StepOutcome>;

    /// Steps that undo what a run created for `node` (for `on_error:
    /// rollback`); empty when there is nothing to undo.
    fn undo_steps(&self, node: &NodePlan, memory: &Self::Memory) -> Vec<Planned<Self::Work>>;
}

/// Executor settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Nodes in progress at once.
    pub concurrency: usize,
    /// Steps running at once (API calls in flight), across all nodes.
    pub workers: usize,
    /// Steps holding one storage at once: learned or fixed.
    pub per_storage: PerStorage,
    /// Limits earlier runs learned, by storage: where learning starts.
    pub learned_storage: BTreeMap<String, usize>,
    pub on_error: OnError,
    /// Attempts of one step on transient failures before the node fails.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, with jitter.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How long a step keeps being retried after PVE's storage-lock
    /// timeouts before its node fails (a storage wedged for good).
    pub lock_retry_for: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            // More nodes in progress were no faster on the converge bench:
            // the storage lock is the bound, and nodes waiting for their
            // agent hold a node slot but no storage slot.
            concurrency: 8,
            workers: 16,
            // Starts at 2 per storage (a create allocates twice, and PVE's
            // storage lock times out after about 10 s) and learns from there.
            per_storage: PerStorage::default(),
            learned_storage: BTreeMap::new(),
            on_error: OnError::Stop,
            max_attempts: 5,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            // As long as a PVE task may run (`Timing::task_timeout`).
            lock_retry_for: Duration::from_secs(1800),
        }
    }
}

/// One step as it ran, for reports (`--json-output` phases).
#[derive(Debug, Clone, Serialize)]
pub struct PhaseRecord {
    pub node: NodeName,
    pub name: Step,
    /// Passed or failed (the executor skips no step).
    pub status: PhaseStatus,
    pub duration: Duration,
    pub attempts: u32,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub nodes: BTreeMap<NodeName, NodeState>,
    pub phases: Vec<PhaseRecord>,
    pub cancelled: bool,
    /// Each storage the run used: its limit at the end, lock timeouts.
    pub storage: BTreeMap<String, StorageStats>,
}

impl Report {
    /// True when every node converged or had nothing to do.
    pub fn success(&self) -> bool {
        !self.cancelled
            && self
                .nodes
                .values()
                .all(|s| matches!(s, NodeState::Converged | NodeState::Unchanged))
    }
}
