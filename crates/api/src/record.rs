//! What a tier remembers about its manifests, as kept in the store and
//! served by `GET /v1/status`.

use homestak_base::time::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{Mode, Outcome, Reason};

/// The last revision of a manifest that converged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// A commit id, `worktree:<digest>` or `subtree:<digest>`.
    pub revision: String,
    pub at: Timestamp,
}

/// The last run of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastReconcile {
    /// What was applied, when the run came from a revision (the daemon);
    /// `None` for a command line run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// When it started.
    pub at: Timestamp,
    pub reason: Reason,
    pub mode: Mode,
    pub outcome: Outcome,
    pub duration_ms: u64,
    /// Nodes created, changed or deleted.
    pub changed_nodes: u64,
    /// Nodes that differ from the manifest after the run.
    pub drifted_nodes: u64,
    /// Node counts by how they ended (`3 converged, 1 failed`); `None`
    /// for a run that ended before it had nodes to count (`""` on the
    /// wire and on disk, as before it was an `Option`).
    #[serde(default, with = "homestak_base::empty")]
    pub summary: Option<String>,
    /// Why it did not converge, in a line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The manifest's [`ManifestRecord::generation`] when the run started:
    /// a parent that was answered generation G waits for a run with
    /// `generation >= G`.
    #[serde(default)]
    pub generation: u64,
}

/// What is kept per manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ManifestRecord {
    /// Bumped each time a parent tier asks for a change of the manifest
    /// (`PUT /v1/subtree`, `DELETE /v1/subtree/{name}`); 0 until then.
    pub generation: u64,
    pub last_applied: Option<Applied>,
    pub last_reconcile: Option<LastReconcile>,
}

/// A subtree a parent tier handed over (`PUT /v1/subtree`), as kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subtree {
    /// The manifest's name.
    pub name: String,
    /// The target node on this tier.
    pub host: String,
    /// The manifest as received (validated before it was kept).
    pub manifest: serde_json::Value,
    /// `subtree:<digest>` of the manifest.
    pub revision: String,
    pub received_at: Timestamp,
    /// The API token name that sent it.
    pub from: String,
    /// The parent asked for it to be destroyed (`DELETE /v1/subtree/{name}`):
    /// runs remove its VMs until one converges, then it is forgotten.
    #[serde(default)]
    pub destroy: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_written_before_generations_read_as_generation_0() {
        let old = r#"{"last_reconcile": {"at": "1970-01-01T00:00:01Z", "reason": "subtree",
            "mode": "apply", "outcome": "converged", "duration_ms": 3,
            "changed_nodes": 1, "drifted_nodes": 0}}"#;
        let record: ManifestRecord = serde_json::from_str(old).unwrap();
        assert_eq!(record.generation, 0);
        assert_eq!(record.last_reconcile.as_ref().unwrap().generation, 0);
        assert_eq!(record.last_reconcile.as_ref().unwrap().summary, None);

        let record = ManifestRecord {
            generation: 7,
            last_reconcile: record.last_reconcile.map(|last| LastReconcile {
                generation: 6,
                ..last
            }),
            ..ManifestRecord::default()
        };
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["generation"], 7);
        assert_eq!(json["last_reconcile"]["generation"], 6);
        assert_eq!(
            serde_json::from_value::<ManifestRecord>(json).unwrap(),
            record
        );
    }

    #[test]
    fn an_absent_summary_is_an_empty_string_on_the_wire() {
        let text = r#"{"at": "1970-01-01T00:00:01Z", "reason": "api", "mode": "apply",
            "outcome": "failed", "duration_ms": 3, "changed_nodes": 0, "drifted_nodes": 0,
            "summary": "", "message": "cannot load the manifest", "generation": 2}"#;
        let last: LastReconcile = serde_json::from_str(text).unwrap();
        assert_eq!(last.summary, None);
        let json = serde_json::to_value(&last).unwrap();
        assert_eq!(json["summary"], "");
        assert_eq!(
            json,
            serde_json::from_str::<serde_json::Value>(text).unwrap()
        );
        let counted = LastReconcile {
            summary: Some("1 converged, 1 failed".into()),
            ..last
        };
        let json = serde_json::to_value(&counted).unwrap();
        assert_eq!(json["summary"], "1 converged, 1 failed");
        assert_eq!(
            serde_json::from_value::<LastReconcile>(json).unwrap(),
            counted
        );
    }

    #[test]
    fn a_subtree_kept_before_destroy_existed_is_not_being_destroyed() {
        let old = r#"{"name": "inner", "host": "pve", "manifest": {}, "revision": "subtree:1",
            "received_at": "1970-01-01T00:00:00Z", "from": "parent"}"#;
        let subtree: Subtree = serde_json::from_str(old).unwrap();
        assert!(!subtree.destroy);
        let json = serde_json::to_value(Subtree {
            destroy: true,
            ..subtree
        })
        .unwrap();
        assert_eq!(json["destroy"], true);
    }
}
