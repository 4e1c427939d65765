//! Run reports: how each phase (an executor step, a scenario phase) ended,
//! and the JSON document a run prints (`--json`, `--json-output`) and keeps
//! in `reports/*.{passed|failed}.json`, in the seed's schema.
//!
//! A parent tier that runs its child over SSH (`--delegate ssh`) reads the
//! same document back, so both sides use [`RunReport`].

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How one phase of a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseStatus {
    Passed,
    Failed,
    /// Not run (`--skip`).
    Skipped,
}

impl PhaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseStatus::Passed => "passed",
            PhaseStatus::Failed => "failed",
            PhaseStatus::Skipped => "skipped",
        }
    }
}

impl fmt::Display for PhaseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One run's report, as printed and written: the seed's schema. Fields
/// are in the order the document has always had; a reader tolerates
/// fields it does not know (a newer writer) and missing lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The verb or scenario: `create`, `reconcile`, `pve-setup`.
    #[serde(default)]
    pub scenario: String,
    /// True when the run passed (converged).
    pub success: bool,
    #[serde(default)]
    pub duration_seconds: f64,
    /// In the order they ran.
    #[serde(default)]
    pub phases: Vec<PhaseReport>,
    /// What the run learned (`vm_id`, `<node>_ip`, the plan, …).
    #[serde(default)]
    pub context: Map<String, Value>,
    /// Why the run failed; only on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a parent reads of a child's [`RunReport`]: only whether it passed
/// and why not, so phases or statuses a newer child adds never make its
/// report unreadable.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RunVerdict {
    pub success: bool,
    #[serde(default)]
    pub error: Option<String>,
}

/// One phase of a [`RunReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseReport {
    /// `node:step` for executor steps, the phase name for scenarios.
    pub name: String,
    pub status: PhaseStatus,
    /// Seconds.
    pub duration: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_reads_a_report_with_phases_this_build_does_not_know() {
        let text = r#"{"scenario":"create","success":false,"duration_seconds":1.5,
            "phases":[{"name":"a:new_step","status":"deferred","duration":0.1}],
            "context":{},"error":"a: refused"}"#;
        assert!(serde_json::from_str::<RunReport>(text).is_err());
        let verdict: RunVerdict = serde_json::from_str(text).unwrap();
        assert_eq!(
            verdict,
            RunVerdict {
                success: false,
                error: Some("a: refused".into())
            }
        );
    }

    #[test]
    fn phase_status_reads_and_writes_its_name() {
        for status in [
            PhaseStatus::Passed,
            PhaseStatus::Failed,
            PhaseStatus::Skipped,
        ] {
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{status}\""));
            assert_eq!(serde_json::from_str::<PhaseStatus>(&json).unwrap(), status);
        }
        assert!(serde_json::from_str::<PhaseStatus>("\"would_run\"").is_err());
    }

    /// A failed run, as `reconcile --once --json` has always printed it.
    const FAILED: &str = r#"{
  "scenario": "reconcile",
  "success": false,
  "duration_seconds": 2.5,
  "phases": [
    {
      "name": "a:create_vm",
      "status": "passed",
      "duration": 1.5
    },
    {
      "name": "a:start_vm",
      "status": "failed",
      "duration": 0.0
    }
  ],
  "context": {
    "manifest": "m",
    "vm_id": 99001
  },
  "error": "a: boom"
}"#;

    #[test]
    fn a_report_round_trips_byte_for_byte() {
        let report: RunReport = serde_json::from_str(FAILED).unwrap();
        assert!(!report.success);
        assert_eq!(report.error.as_deref(), Some("a: boom"));
        assert_eq!(report.phases[1].status, PhaseStatus::Failed);
        assert_eq!(report.context["vm_id"], 99001);
        assert_eq!(serde_json::to_string_pretty(&report).unwrap(), FAILED);
    }

    #[test]
    fn error_is_left_out_when_there_is_none() {
        let report = RunReport {
            scenario: "create".into(),
            success: true,
            duration_seconds: 0.25,
            phases: Vec::new(),
            context: Map::new(),
            error: None,
        };
        assert_eq!(
            serde_json::to_string(&report).unwrap(),
            r#"{"scenario":"create","success":true,"duration_seconds":0.25,"phases":[],"context":{}}"#
        );
    }

    #[test]
    fn a_newer_writer_and_a_bare_document_still_read() {
        let newer: RunReport = serde_json::from_str(
            r#"{"scenario": "reconcile", "success": true, "duration_seconds": 1.0,
                "phases": [{"name": "a:create_vm", "status": "passed", "duration": 1.0, "attempts": 2}],
                "context": {}, "outcome": "converged"}"#,
        )
        .unwrap();
        assert!(newer.success);
        assert_eq!(newer.phases.len(), 1);
        let bare: RunReport = serde_json::from_str(r#"{"success": false, "error": null}"#).unwrap();
        assert!(!bare.success);
        assert_eq!(bare.error, None);
        assert!(serde_json::from_str::<RunReport>(r#"{"error": "x"}"#).is_err());
    }
}
