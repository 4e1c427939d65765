//! [`Event`], the one event type: what the daemon's live feed serves
//! (`GET /v1/events`), what the store keeps as history, and what a run
//! reports as it goes.

use homestak_base::id::NodeName;
use homestak_base::time::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{NodeState, Step};

/// How notable an event is.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    Info,
    Warning,
    Error,
}

/// What happened, machine-readable (`snake_case` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    // The daemon.
    /// It serves.
    Started,
    /// It was asked to stop.
    Stopping,
    /// The site-config was reloaded (SIGHUP), or could not be.
    Reload,
    /// Desired state moved to a new revision.
    Revision,
    /// Desired state could not be read.
    SourceError,
    ReconcileQueued,
    ReconcileStarted,
    ReconcileSkipped,
    ReconcileFinished,
    /// A parent tier handed over a subtree.
    SubtreeAccepted,
    /// A parent tier asked for a subtree to be destroyed.
    SubtreeDestroyRequested,
    /// A destroyed subtree was forgotten.
    SubtreeForgotten,
    // A run, as the executor drives it.
    /// A step of a node started.
    StepStarted,
    /// A step waits (a PVE task runs, the agent is not up yet) and will
    /// be run again.
    StepRequeued,
    /// A step of a node finished.
    StepDone,
    /// A step failed and will be retried.
    StepRetry,
    /// PVE timed out waiting for a storage's lock; the step is retried
    /// (not counted as an attempt) with fewer steps on that storage.
    StorageLockTimeout,
    /// A node converged, failed, or was skipped, refused or interrupted.
    NodeFinished,
    // A node's VM, as its controller changed it.
    Created,
    Adopted,
    Converged,
    Deleted,
    /// A PVE task failed (it is retried).
    TaskFailed,
    /// Parts of a split image were left behind.
    PartsLeft,
    /// A split image was joined on the host.
    ImageJoined,
    /// The image source gave no clear answer whether an image ships whole
    /// or in parts; PVE was asked for the whole asset.
    ImageUnchecked,
    /// An image was downloaded without a checksum to check it against.
    ImageUnverified,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Started => "started",
            Kind::Stopping => "stopping",
            Kind::Reload => "reload",
            Kind::Revision => "revision",
            Kind::SourceError => "source_error",
            Kind::ReconcileQueued => "reconcile_queued",
            Kind::ReconcileStarted => "reconcile_started",
            Kind::ReconcileSkipped => "reconcile_skipped",
            Kind::ReconcileFinished => "reconcile_finished",
            Kind::SubtreeAccepted => "subtree_accepted",
            Kind::SubtreeDestroyRequested => "subtree_destroy_requested",
            Kind::SubtreeForgotten => "subtree_forgotten",
            Kind::StepStarted => "step_started",
            Kind::StepRequeued => "step_requeued",
            Kind::StepDone => "step_done",
            Kind::StepRetry => "step_retry",
            Kind::StorageLockTimeout => "storage_lock_timeout",
            Kind::NodeFinished => "node_finished",
            Kind::Created => "created",
            Kind::Adopted => "adopted",
            Kind::Converged => "converged",
            Kind::Deleted => "deleted",
            Kind::TaskFailed => "task_failed",
            Kind::PartsLeft => "parts_left",
            Kind::ImageJoined => "image_joined",
            Kind::ImageUnchecked => "image_unchecked",
            Kind::ImageUnverified => "image_unverified",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the log that holds it, from 1; 0 until it is logged.
    #[serde(default)]
    pub seq: u64,
    pub at: Timestamp,
    pub level: Level,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeName>,
    /// The step a `step_*` event is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<Step>,
    /// How the node ended, for `node_finished` (`"state": "failed",
    /// "detail": "…"`).
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub state: Option<NodeState>,
    pub message: String,
}

impl Event {
    /// An event of `kind` at `level`, now.
    pub fn new(level: Level, kind: Kind, message: impl Into<String>) -> Event {
        Event {
            seq: 0,
            at: Timestamp::now(),
            level,
            kind,
            manifest: None,
            node: None,
            step: None,
            state: None,
            message: message.into(),
        }
    }

    pub fn info(kind: Kind, message: impl Into<String>) -> Event {
        Event::new(Level::Info, kind, message)
    }

    pub fn warning(kind: Kind, message: impl Into<String>) -> Event {
        Event::new(Level::Warning, kind, message)
    }

    pub fn error(kind: Kind, message: impl Into<String>) -> Event {
        Event::new(Level::Error, kind, message)
    }

    /// The same event about `manifest`.
    pub fn manifest(mut self, manifest: &str) -> Event {
        self.manifest = Some(manifest.to_string());
        self
    }

    /// The same event about `node`.
    pub fn node(mut self, node: &NodeName) -> Event {
        self.node = Some(node.clone());
        self
    }

    /// The same event about `step`.
    pub fn step(mut self, step: Step) -> Event {
        self.step = Some(step);
        self
    }

    /// `node_finished`: `node` ended `state`; failures are errors.
    pub fn node_finished(node: &NodeName, state: NodeState) -> Event {
        let level = match state {
            NodeState::Failed(_) => Level::Error,
            NodeState::Refused(_) | NodeState::Skipped(_) | NodeState::Interrupted => {
                Level::Warning
            }
            NodeState::Unchanged | NodeState::Converged | NodeState::RolledBack => Level::Info,
        };
        let mut event = Event::new(level, Kind::NodeFinished, state.to_string()).node(node);
        event.state = Some(state);
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_shape_is_flat_and_reads_back() {
        let vm1 = NodeName::new("vm1").unwrap();
        let done = Event::info(Kind::StepDone, "create_vm done")
            .manifest("m")
            .node(&vm1)
            .step(Step::CreateVm);
        let json = serde_json::to_value(&done).unwrap();
        assert_eq!(json["kind"], "step_done");
        assert_eq!(json["step"], "create_vm");
        assert!(json.get("state").is_none());
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), done);

        let failed = Event::node_finished(&vm1, NodeState::Failed("create_vm: boom".into()));
        let json = serde_json::to_value(&failed).unwrap();
        assert_eq!(json["level"], "error");
        assert_eq!(json["state"], "failed");
        assert_eq!(json["detail"], "create_vm: boom");
        assert_eq!(json["message"], "failed: create_vm: boom");
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), failed);
    }
}
