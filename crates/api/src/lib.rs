//! The vocabulary homestak's reconcilers speak, shared by every side of
//! the daemon's API: the daemon serves it, the CLI and parent tiers read
//! it, the engine and its store produce and keep it.
//!
//! - [`outcome`]: [`Outcome`] (how a run ended), [`NodeState`] (how one
//!   node ended), [`Reason`] (why it ran), [`Mode`] (what it may do),
//!   [`DriftPolicy`].
//! - [`step`]: [`Step`], the verb_noun steps controllers carry out.
//! - [`event`]: [`Event`], the one event type (live feed, history, progress).
//! - [`record`]: what a tier remembers per manifest ([`ManifestRecord`])
//!   and the subtrees parents handed over ([`Subtree`]).
//! - [`status`]: drift reports ([`Status`]).
//! - [`report`]: run reports ([`RunReport`], the `--json` document of a
//!   run; [`RunVerdict`], what a parent reads of one) and how each phase
//!   ended ([`PhaseStatus`]).
//! - [`v1`]: the HTTP API: endpoints, scopes, request and answer bodies.
//! - [`ready`]: how to reach a daemon running on this machine.
//! - [`client`]: a typed client over HTTPS pinned to the daemon's
//!   certificate.

pub mod client;
pub mod event;
pub mod outcome;
pub mod ready;
pub mod record;
pub mod report;
pub mod status;
pub mod step;
pub mod v1;

pub use client::Client;
pub use event::{Event, Kind, Level};
pub use outcome::{DriftPolicy, Mode, NodeState, Outcome, Reason};
pub use record::{Applied, LastReconcile, ManifestRecord, Subtree};
pub use report::{PhaseReport, PhaseStatus, RunReport, RunVerdict};
pub use status::{NodeStatus, State, Status, TreeNode};
pub use step::{Step, StepName};
