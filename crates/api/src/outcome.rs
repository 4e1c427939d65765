//! How a run ended, why it ran, and what it was allowed to do.

use serde::{Deserialize, Serialize};

/// How a run of one manifest on one tier ended: the one outcome type of
/// `reconcile --once`, the seed verbs, `status`, the daemon and its API.
/// A scenario run ends Converged when every phase passed or was skipped,
/// else Failed or Interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The tier matches the manifest (nothing was left to do).
    Converged,
    /// The tier differs from the manifest and was left so: a status or
    /// plan found changes, or the drift policy only reports.
    Drifted,
    /// Some node did not converge; the summary says which and why.
    Failed,
    /// Stopped at a safe point (shutdown, Ctrl-C); the next run resumes.
    Interrupted,
}

impl Outcome {
    /// Every outcome, for metrics that list each with a value.
    pub const ALL: [Outcome; 4] = [
        Outcome::Converged,
        Outcome::Drifted,
        Outcome::Failed,
        Outcome::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Converged => "converged",
            Outcome::Drifted => "drifted",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a run started. Reconciles are level-triggered: the reason is
/// recorded and reported, never acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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
    /// A command line: `reconcile --once`, `create`, `destroy`, `test`.
    Cli,
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
            Reason::Cli => "cli",
        }
    }
}

/// What a run may do about the differences it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Converge: create, update, start, prune (owned objects only).
    Apply,
    /// Observe and report drift; change nothing.
    ReportOnly,
    /// Remove every VM the manifest owns on the tier.
    Destroy,
}

impl Mode {
    /// The verb in human messages (`apply at 1a2b3c on pve`).
    pub fn verb(self) -> &'static str {
        match self {
            Mode::Apply => "apply",
            Mode::ReportOnly => "report",
            Mode::Destroy => "destroy",
        }
    }
}

/// What the daemon does about drift found between commits
/// (`controller.yaml`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftPolicy {
    /// Converge it back (GitOps: the repository wins).
    #[default]
    Correct,
    /// Report it (status, events, metrics) and change nothing.
    Report,
}

impl DriftPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DriftPolicy::Correct => "correct",
            DriftPolicy::Report => "report",
        }
    }
}

/// How one node ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum NodeState {
    /// Nothing to do.
    Unchanged,
    /// All steps done.
    Converged,
    Failed(String),
    /// Not started: a dependency failed, or `on_error` stopped the run.
    Skipped(String),
    /// Started, then cancelled before finishing.
    Interrupted,
    /// Created by this run, then removed by `on_error: rollback`.
    RolledBack,
    /// Not runnable: a conflict or a blocked replace.
    Refused(String),
}

impl NodeState {
    /// How it ended, in a word or two (`rolled back`).
    pub fn label(&self) -> &'static str {
        match self {
            NodeState::Unchanged => "unchanged",
            NodeState::Converged => "converged",
            NodeState::Failed(_) => "failed",
            NodeState::Skipped(_) => "skipped",
            NodeState::Interrupted => "interrupted",
            NodeState::RolledBack => "rolled back",
            NodeState::Refused(_) => "refused",
        }
    }
}

impl std::fmt::Display for NodeState {
    /// The label, and the detail when there is one (`failed: create_vm: …`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeState::Failed(why) | NodeState::Skipped(why) | NodeState::Refused(why) => {
                write!(f, "{}: {why}", self.label())
            }
            _ => f.write_str(self.label()),
        }
    }
}
