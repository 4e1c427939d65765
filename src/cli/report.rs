//! Run reports in the seed's format: `--json-output` on stdout, and files
//! `reports/YYYYMMDD-HHMMSS.{passed|failed}.{md,json}` (UTC time).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value, json};

use homestak_engine::executor::{NodeState, Report};

/// One scenario run (`create`, `destroy`, `test`, `reconcile`).
#[derive(Debug, Clone)]
pub struct RunReport {
    pub scenario: String,
    pub success: bool,
    pub duration: Duration,
    /// `(name, status, duration)`, in the order they ran.
    pub phases: Vec<(String, String, Duration)>,
    pub context: Map<String, Value>,
    pub error: Option<String>,
    /// Stopped by a signal.
    pub interrupted: bool,
}

impl RunReport {
    pub fn new(scenario: &str) -> RunReport {
        RunReport {
            scenario: scenario.to_string(),
            success: true,
            duration: Duration::ZERO,
            phases: Vec::new(),
            context: Map::new(),
            error: None,
            interrupted: false,
        }
    }

    /// Adds an executor report's steps as phases (`node:step`) and its
    /// failures as the error.
    pub fn absorb(&mut self, report: &Report) {
        for p in &report.phases {
            self.phases.push((
                format!("{}:{}", p.node, p.name),
                p.status.to_string(),
                p.duration,
            ));
        }
        if !report.success() {
            self.success = false;
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
        }
    }

    pub fn fail(&mut self, error: String) {
        self.success = false;
        self.error = Some(match self.error.take() {
            Some(previous) if !error.is_empty() => format!("{previous}; {error}"),
            Some(previous) => previous,
            None => error,
        });
    }

    /// The seed's JSON schema; `error` only on failure, as the Python tool
    /// documents it.
    pub fn to_json(&self) -> Value {
        let phases: Vec<Value> = self
            .phases
            .iter()
            .map(|(name, status, d)| {
                json!({"name": name, "status": status, "duration": round(d.as_secs_f64())})
            })
            .collect();
        let mut doc = json!({
            "scenario": self.scenario,
            "success": self.success,
            "duration_seconds": round(self.duration.as_secs_f64()),
            "phases": phases,
            "context": self.context,
        });
        if let Some(error) = self.error.as_ref().filter(|_| !self.success) {
            doc["error"] = json!(error);
        }
        doc
    }

    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "# {} — {}\n\n- duration: {:.1} s\n",
            self.scenario,
            if self.success { "passed" } else { "failed" },
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
        let outcome = if self.success { "passed" } else { "failed" };
        let base = dir.join(format!("{stamp}.{outcome}"));
        let md = base.with_extension(format!("{outcome}.md"));
        let js = base.with_extension(format!("{outcome}.json"));
        std::fs::write(&md, self.to_markdown())?;
        let mut text = serde_json::to_string_pretty(&self.to_json()).unwrap_or_default();
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

    #[test]
    fn files_are_named_by_time_and_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let mut report = RunReport::new("test");
        report.phases.push((
            "a:create_vm".into(),
            "passed".into(),
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
        assert_eq!(report.to_json().get("error"), None);
        report.fail("a: boom".into());
        assert_eq!(report.to_json()["error"], json!("a: boom"));
    }
}
