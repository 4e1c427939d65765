//! The records the store keeps.
//!
//! All are serde types stored as JSON inside a versioned envelope; every
//! field has a default so a record written by an older homestak of the same
//! schema version still reads. PVE remains the source of truth for what
//! exists: these records say what homestak applied, what it is waiting on
//! and what happened.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use homestak_base::time::Timestamp;

use homestak_api::step::StepName;
use homestak_base::id::{NodeName, PveNode, VmId};
use homestak_base::secret::Secret;
use homestak_core::model::Delegate;
use homestak_core::plan::IpConfig;
use homestak_core::plan::marks::Marks;

/// Identifies a node record: the manifest and the node's name in it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeKey {
    pub manifest: String,
    pub node: NodeName,
}

impl NodeKey {
    pub fn new(manifest: impl Into<String>, node: &NodeName) -> Self {
        NodeKey {
            manifest: manifest.into(),
            node: node.clone(),
        }
    }
}

impl fmt::Display for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.manifest, self.node)
    }
}

/// A VM's power state as last observed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    Running,
    Paused,
    Stopped,
    #[default]
    Unknown,
}

/// Kubernetes-style condition status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConditionStatus {
    True,
    False,
    #[default]
    Unknown,
}

/// A Kubernetes-style condition (`Ready`, `Provisioned`, …).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: ConditionStatus,
    /// CamelCase machine-readable cause (`TaskFailed`, `Converged`).
    pub reason: String,
    pub message: String,
    /// When `status` last changed (not when the condition was last written).
    pub last_transition: Timestamp,
}

/// A PVE task homestak started and has not seen finish yet. Recording it
/// before requeueing is what lets a restarted reconciler pick the task up
/// instead of starting the work twice.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InFlight {
    /// The UPID, verbatim.
    pub upid: String,
    /// The controller step that started it (`create_vm`, `start_vm`, …).
    pub step: StepName,
    pub started: Timestamp,
}

/// A create homestak is about to ask PVE for, recorded (flushed) before
/// the POST: a crash or a lost answer between the POST and the recorded
/// task would otherwise leave a VM nobody remembers making. The next
/// attempt, in this process or the next, looks at this vmid first: PVE's
/// `lock: create` placeholder there is our create in progress.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CreateIntent {
    pub vmid: Option<VmId>,
    /// The PVE node the create was sent to.
    pub pve_node: Option<PveNode>,
    /// When the intent was recorded (before the POST).
    pub recorded: Timestamp,
    /// What was asked for: the VM name and the hash of its spec.
    pub name: Option<NodeName>,
    pub spec_hash: Option<String>,
}

/// What homestak knows about one manifest node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeRecord {
    pub vmid: Option<VmId>,
    /// The PVE node the VM lives on.
    pub pve_node: Option<PveNode>,
    pub ip: Option<String>,
    pub power: PowerState,
    /// Hash of the spec last applied successfully.
    pub spec_hash: Option<String>,
    /// Bumped by the store on every write of this record; callers' values
    /// are ignored. Lets readers tell whether a record changed.
    pub generation: u64,
    pub conditions: Vec<Condition>,
    pub last_error: Option<String>,
    /// Failures in a row, reset on success; drives backoff across restarts.
    pub consecutive_failures: u32,
    pub in_flight: Option<InFlight>,
    /// A create asked for (or about to be) and not yet seen through.
    pub create_intent: Option<CreateIntent>,
    /// A `pve` node's inner host and the child tier running on it.
    pub delegation: Option<Delegation>,
    /// The VM as last seen in sync (after a converge, or a deep observe
    /// that planned nothing for it): lets a later observe skip its config
    /// read while `/cluster/resources` shows the same summary.
    pub seen: Option<Seen>,
    /// Set by the store on every write.
    pub updated: Timestamp,
}

/// A VM as homestak last saw it in sync: its `/cluster/resources` entry
/// and what its config gave the planner.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Seen {
    pub summary: Summary,
    pub config: SeenConfig,
}

/// What `/cluster/resources` shows of a VM; compared exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    pub vmid: Option<VmId>,
    pub pve_node: Option<PveNode>,
    pub name: Option<String>,
    /// Normalised (lowercase, sorted, unique).
    pub tags: BTreeSet<String>,
    /// `maxcpu` (cores × sockets, or vcpus), in whole CPUs.
    pub maxcpu: Option<u32>,
    /// `maxmem`, bytes.
    pub maxmem: Option<u64>,
    /// `maxdisk` (the boot disk), bytes.
    pub maxdisk: Option<u64>,
    /// `status` (`running`, `stopped`, …).
    pub status: Option<String>,
}

/// What a VM's config read gave the planner, beyond the summary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SeenConfig {
    pub name: Option<String>,
    pub tags: BTreeSet<String>,
    /// The marks, verified as ours (keyed, bound to this vmid).
    pub marks: Option<Marks>,
    pub cores: Option<u32>,
    pub memory_mib: Option<u64>,
    pub disk_gib: Option<u64>,
    pub bridge: Option<String>,
    pub ip: Option<IpConfig>,
}

/// What a parent tier set up on a `pve` node's inner host, and the subtree
/// it handed to the child daemon there. Kept so a restarted parent resumes
/// following instead of starting over, and reaches the child with the
/// pinned fingerprints and the token it minted. Tokens are stored here (the
/// state directory is private) and never printed: `Debug` redacts them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Delegation {
    /// The VM this was set up on: a new VM starts the lifecycle over.
    pub vmid: Option<VmId>,
    /// How the child tier is run.
    pub mode: Delegate,
    /// The inner host's address and the SSH user set it up with (a
    /// destroy, which plans no agent read, reaches it there).
    pub address: Option<String>,
    pub user: Option<String>,
    /// The inner PVE API token (`root@pam!homestak=…`), from `pveum`;
    /// `None` until made (stored as `""`, as before it was an `Option`).
    #[serde(with = "homestak_base::secret::exposed_or_empty")]
    pub pve_token: Option<Secret>,
    /// The inner PVE certificate's SHA-256 fingerprint, read over SSH.
    pub pve_fingerprint: Option<String>,
    /// The child daemon: its URL and certificate fingerprint (from its
    /// ready file, read over SSH) and the write token the parent minted.
    pub daemon_url: Option<String>,
    pub daemon_fingerprint: Option<String>,
    /// `None` until minted (stored as `""`).
    #[serde(with = "homestak_base::secret::exposed_or_empty")]
    pub daemon_token: Option<Secret>,
    /// The subtree handed over: its manifest name, the digest of what was
    /// sent, the generation the child answered, and how it went.
    pub subtree: Option<String>,
    pub digest: Option<String>,
    pub generation: Option<u64>,
    pub state: DelegationState,
    /// Why the last delegation did not converge.
    pub message: Option<String>,
}

/// Where a delegation stands.
///
/// Stored as one word: the phase, or the child run's
/// [`Outcome`](homestak_api::Outcome) once it ended (`converged` and
/// `failed`, as records before [`DelegationState::Ended`] have them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DelegationState {
    /// The inner host is being set up; nothing handed over yet.
    #[default]
    Bootstrapping,
    /// The subtree was handed over; the parent follows the child's run.
    Following,
    /// The child was asked to destroy the subtree.
    Destroying,
    /// The child's run ended so (or the parent gave up: `failed`).
    #[serde(untagged)]
    Ended(homestak_api::Outcome),
}

impl NodeRecord {
    /// The condition of `kind`.
    pub fn condition(&self, kind: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }

    /// Sets a condition with Kubernetes semantics: `last_transition` moves
    /// only when the status changes. Returns whether anything changed.
    pub fn set_condition(
        &mut self,
        kind: &str,
        status: ConditionStatus,
        reason: &str,
        message: &str,
        now: Timestamp,
    ) -> bool {
        match self.conditions.iter_mut().find(|c| c.kind == kind) {
            Some(existing) => {
                let changed = existing.status != status
                    || existing.reason != reason
                    || existing.message != message;
                if existing.status != status {
                    existing.last_transition = now;
                }
                existing.status = status;
                existing.reason = reason.to_string();
                existing.message = message.to_string();
                changed
            }
            None => {
                self.conditions.push(Condition {
                    kind: kind.to_string(),
                    status,
                    reason: reason.to_string(),
                    message: message.to_string(),
                    last_transition: now,
                });
                true
            }
        }
    }
}

/// Which events to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub manifest: Option<String>,
    pub node: Option<NodeName>,
}

/// A lease: one holder at a time until it expires.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    /// When the current holder first acquired it.
    pub acquired: Timestamp,
    pub renewed: Timestamp,
    pub expires: Timestamp,
}

impl Lease {
    /// Whether the lease has expired at `now`.
    pub fn expired(&self, now: Timestamp) -> bool {
        now >= self.expires
    }
}

/// The result of trying to take a lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// Ours now (newly, after expiry of another holder's, or renewed).
    Acquired(Lease),
    /// Someone else holds it and it has not expired.
    Held(Lease),
}

/// When a write must be on disk before the call returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Flushed before returning: use after recording an in-flight UPID and
    /// after a node converges, so a crash cannot forget either.
    Flush,
    /// Written now, flushed by the background flusher (~0.5 s) or shutdown.
    Lazy,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_keep_transition_time_while_status_holds() {
        let mut record = NodeRecord::default();
        let t1 = Timestamp::from_millis(1_000);
        let t2 = Timestamp::from_millis(2_000);
        let t3 = Timestamp::from_millis(3_000);
        assert!(record.set_condition("Ready", ConditionStatus::False, "Creating", "", t1));
        assert!(record.set_condition("Ready", ConditionStatus::False, "Starting", "x", t2));
        assert_eq!(record.condition("Ready").unwrap().last_transition, t1);
        assert!(!record.set_condition("Ready", ConditionStatus::False, "Starting", "x", t3));
        assert!(record.set_condition("Ready", ConditionStatus::True, "Converged", "", t3));
        let ready = record.condition("Ready").unwrap();
        assert_eq!(ready.last_transition, t3);
        assert_eq!(ready.reason, "Converged");
        assert_eq!(record.conditions.len(), 1);
    }

    #[test]
    fn records_read_with_missing_fields() {
        let record: NodeRecord = serde_json::from_str(r#"{"vmid":100}"#).unwrap();
        assert_eq!(record.vmid.map(VmId::get), Some(100));
        assert_eq!(record.power, PowerState::Unknown);
    }

    #[test]
    fn a_delegation_stored_before_options_and_outcomes_still_reads() {
        use homestak_api::Outcome;
        // As an older homestak wrote it: empty tokens, `failed` state.
        let old = r#"{"vmid":99001,"mode":"daemon","address":null,"user":null,
            "pve_token":"","pve_fingerprint":null,"daemon_url":null,
            "daemon_fingerprint":null,"daemon_token":"","subtree":null,
            "digest":null,"generation":null,"state":"failed","message":"x"}"#;
        let d: Delegation = serde_json::from_str(old).unwrap();
        assert_eq!((d.pve_token.clone(), d.daemon_token.clone()), (None, None));
        assert_eq!(d.state, DelegationState::Ended(Outcome::Failed));
        // Written back the same way.
        let back = serde_json::to_value(&d).unwrap();
        let old: serde_json::Value = serde_json::from_str(old).unwrap();
        assert_eq!(back, old);

        for (word, state) in [
            ("bootstrapping", DelegationState::Bootstrapping),
            ("following", DelegationState::Following),
            ("destroying", DelegationState::Destroying),
            ("converged", DelegationState::Ended(Outcome::Converged)),
            ("drifted", DelegationState::Ended(Outcome::Drifted)),
        ] {
            let json = format!("\"{word}\"");
            assert_eq!(
                serde_json::from_str::<DelegationState>(&json).unwrap(),
                state
            );
            assert_eq!(serde_json::to_string(&state).unwrap(), json);
        }
        assert!(serde_json::from_str::<DelegationState>("\"done\"").is_err());

        let minted = Delegation {
            pve_token: Some(Secret::new("root@pam!homestak=abc")),
            daemon_token: Some(Secret::new("t0k")),
            ..Delegation::default()
        };
        let json = serde_json::to_value(&minted).unwrap();
        assert_eq!(json["pve_token"], "root@pam!homestak=abc");
        assert_eq!(json["daemon_token"], "t0k");
        assert_eq!(serde_json::from_value::<Delegation>(json).unwrap(), minted);
        let text = format!("{minted:?}");
        assert!(!text.contains("t0k") && !text.contains("abc"), "{text}");
    }

    #[test]
    fn an_in_flight_task_keeps_its_stored_form() {
        let json = r#"{"upid":"UPID:pve:1:2:3:qmcreate:100:root@pam:","step":"create_vm","started":1704067200000}"#;
        let flight: InFlight = serde_json::from_str(json).unwrap();
        assert_eq!(flight.step, homestak_api::Step::CreateVm);
        let back = serde_json::to_value(&flight).unwrap();
        assert_eq!(back["step"], "create_vm");
    }
}
