//! Run reports in the seed's format: `--json-output` on stdout, and files
//! `reports/YYYYMMDD-HHMMSS.{passed|failed}.{md,json}` (UTC time).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use homestak_api::{Outcome, PhaseReport, PhaseStatus};
use homestak_engine::executor::{NodeState, Report};

/// One scenario run (`create`, `destroy`, `test`, `reconcile`).
#[derive(Debug, Clone)]
pub struct RunReport {
    pub scenario: String,
    /// Converged (passed), Failed or Interrupted; the document's
    /// `success` is whether it converged.
    pub outcome: Outcome,
    pub duration: Duration,
    /// `(name, status, duration)`, in the order they ran.
    pub phases: Vec<(String, PhaseStatus, Duration)>,
    pub context: Map<String, Value>,
    pub error: Option<String>,
}

impl RunReport {
    pub fn new(scenario: &str) -> RunReport {
        RunReport {
            scenario: scenario.to_string(),
            outcome: Outcome::Converged,
            duration: Duration::ZERO,
            phases: Vec::new(),
            context: Map::new(),
            error: None,
        }
    }

    /// The run passed: every node converged, every phase passed or was
    /// skipped.
    pub fn passed(&self) -> bool {
        self.outcome == Outcome::Converged
    }

    /// `passed` or `failed`, as the report's title and file names say.
    pub fn verdict(&self) -> &'static str {
        if self.passed() { "passed" } else { "failed" }
    }

    /// Adds an executor report's steps as phases (`node:step`) and its
    /// failures as the error.
    pub fn absorb(&mut self, report: &Report) {
        for p in &report.phases {
            self.phases
                .push((format!("{}:{}", p.node, p.name), p.status, p.duration));
        }
        if !report.success() {
            let mut problems: Vec<String> = report
                .nodes
                .iter()
                .filter_map(|(node, state)| match state {
                    NodeState::Failed(e) => Some(format!("{node}: {e}")),
                    NodeState::Refused(e) => Some(format!("{node}: refused: {e}")),
                    NodeState::Skipped(e) => Some(format!("{node}: skipped: {e}")),
                    NodeState::Interrupted => Some(format!("{node}: interrupted")),
                    _ => None,
                })
                .collect();
            if report.cancelled {
                problems.insert(0, "cancelled".to_string());
            }
            self.fail(problems.join("; "));
            if report.cancelled {
                self.outcome = Outcome::Interrupted;
            }
        }
    }

    /// The run failed (an interrupted run stays interrupted); `error`
    /// says why, after what was said before.
    pub fn fail(&mut self, error: String) {
        if self.outcome != Outcome::Interrupted {
            self.outcome = Outcome::Failed;
        }
        self.error = Some(match self.error.take() {
            Some(previous) if !error.is_empty() => format!("{previous}; {error}"),
            Some(previous) => previous,
            None => error,
        });
    }

    /// The document in the seed's JSON schema; `error` only on failure,
    /// as the Python tool documents it.
    pub fn to_document(&self) -> homestak_api::RunReport {
        let success = self.passed();
        homestak_api::RunReport {
            scenario: self.scenario.clone(),
            success,
            duration_seconds: round(self.duration.as_secs_f64()),
            phases: self
                .phases
                .iter()
                .map(|(name, status, d)| PhaseReport {
                    name: name.clone(),
                    status: *status,
                    duration: round(d.as_secs_f64()),
                })
                .collect(),
            context: self.context.clone(),
            error: self.error.clone().filter(|_| !success),
        }
    }

    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "# {} — {}\n\n- duration: {:.1} s\n",
            self.scenario,
            self.verdict(),
            self.duration.as_secs_f64()
        );
        for (k, v) in &self.context {
            let shown = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            out.push_str(&format!("- {k}: {shown}\n"));
        }
        if let Some(error) = &self.error {
            out.push_str(&format!("\n**Error:** {error}\n"));
        }
        out.push_str("\n| phase | status | duration (s) |\n|---|---|---|\n");
        for (name, status, d) in &self.phases {
            out.push_str(&format!("| {name} | {status} | {:.2} |\n", d.as_secs_f64()));
        }
        out
    }

    /// Writes the `.md` and `.json` files into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)?;
        let format = time::macros::format_description!("[year][month][day]-[hour][minute][second]");
        let stamp = time::OffsetDateTime::now_utc()
            .format(&format)
            .unwrap_or_else(|_| "00000000-000000".to_string());
        let outcome = self.verdict();
        let base = dir.join(format!("{stamp}.{outcome}"));
        let md = base.with_extension(format!("{outcome}.md"));
        let js = base.with_extension(format!("{outcome}.json"));
        std::fs::write(&md, self.to_markdown())?;
        let mut text = serde_json::to_string_pretty(&self.to_document()).unwrap_or_default();
        text.push('\n');
        std::fs::write(&js, text)?;
        Ok((md, js))
    }
}

fn round(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The document as the report built it by hand before it was typed:
    /// the typed one must print the same bytes.
    fn by_hand(report: &RunReport) -> Value {
        let phases: Vec<Value> = report
            .phases
            .iter()
            .map(|(name, status, d)| {
                json!({"name": name, "status": status.to_string(), "duration": round(d.as_secs_f64())})
            })
            .collect();
        let success = report.passed();
        let mut doc = json!({
            "scenario": report.scenario,
            "success": success,
            "duration_seconds": round(report.duration.as_secs_f64()),
            "phases": phases,
            "context": report.context,
        });
        if let Some(error) = report.error.as_ref().filter(|_| !success) {
            doc["error"] = json!(error);
        }
        doc
    }

    fn to_json(report: &RunReport) -> Value {
        serde_json::to_value(report.to_document()).unwrap()
    }

    #[test]
    fn files_are_named_by_time_and_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let mut report = RunReport::new("test");
        report.phases.push((
            "a:create_vm".into(),
            PhaseStatus::Passed,
            Duration::from_millis(1500),
        ));
        report.fail("a: boom".into());
        let (md, js) = report.write(dir.path()).unwrap();
        let name = js.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name.ends_with(".failed.json") && name.len() == "YYYYMMDD-HHMMSS.failed.json".len(),
            "{name}"
        );
        assert!(md.to_string_lossy().ends_with(".failed.md"));
        let json: Value = serde_json::from_str(&std::fs::read_to_string(&js).unwrap()).unwrap();
        assert_eq!(json["success"], json!(false));
        assert_eq!(json["phases"][0]["duration"], json!(1.5));
        assert_eq!(json["error"], json!("a: boom"));
        for key in [
            "scenario",
            "success",
            "duration_seconds",
            "phases",
            "context",
            "error",
        ] {
            assert!(json.get(key).is_some(), "{key} missing");
        }
    }

    #[test]
    fn error_appears_only_on_failure() {
        let mut report = RunReport::new("create");
        assert_eq!(to_json(&report).get("error"), None);
        report.fail("a: boom".into());
        assert_eq!(to_json(&report)["error"], json!("a: boom"));
    }

    #[test]
    fn the_typed_document_prints_the_bytes_the_hand_built_one_did() {
        let mut passed = RunReport::new("pve-setup");
        passed.duration = Duration::from_micros(2_345_678);
        passed.phases = vec![
            ("ensure_pve".into(), PhaseStatus::Passed, Duration::ZERO),
            (
                "create_api_token".into(),
                PhaseStatus::Skipped,
                Duration::from_millis(7),
            ),
        ];
        passed.context.insert("host".into(), json!("father"));
        passed.context.insert("vm_id".into(), json!(99001));
        let mut failed = passed.clone();
        failed.scenario = "create".into();
        failed.phases.push((
            "a:start_vm".into(),
            PhaseStatus::Failed,
            Duration::from_millis(1),
        ));
        failed.fail("a: boom".into());
        let mut interrupted = RunReport::new("reconcile");
        interrupted.outcome = Outcome::Interrupted;
        interrupted.fail("interrupted".into());
        for report in [&passed, &failed, &interrupted] {
            let hand = serde_json::to_string_pretty(&by_hand(report)).unwrap();
            let typed = serde_json::to_string_pretty(&report.to_document()).unwrap();
            assert_eq!(typed, hand);
            let back: homestak_api::RunReport = serde_json::from_str(&typed).unwrap();
            assert_eq!(back, report.to_document());
        }
        assert!(to_json(&passed)["success"].as_bool().unwrap());
        assert_eq!(to_json(&interrupted)["success"], json!(false));
    }

    #[test]
    fn a_failure_after_an_interruption_keeps_the_run_interrupted() {
        let mut report = RunReport::new("pve-setup");
        assert_eq!(report.verdict(), "passed");
        report.outcome = Outcome::Interrupted;
        report.fail("context file: disk full".into());
        assert_eq!(report.outcome, Outcome::Interrupted);
        assert_eq!(report.verdict(), "failed");
        let mut report = RunReport::new("create");
        report.fail(String::new());
        assert_eq!(report.outcome, Outcome::Failed);
        assert_eq!(to_json(&report)["error"], json!(""));
    }
}
