//! Live progress: one line per node with its current step, on a terminal
//! only (never with `--json` or when stderr is not a TTY). Every event also
//! goes to the log (`-v`), so CI output keeps a trace.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use homestak_api::{Event, Kind, NodeState};
use homestak_base::id::NodeName;

/// The progress display of one run.
pub struct Progress {
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<NodeName, ProgressBar>>,
}

impl Progress {
    /// A display for `nodes`, drawn only when `enabled` and stderr is a TTY.
    pub fn new(enabled: bool, nodes: &[NodeName]) -> Progress {
        let draw = enabled && std::io::stderr().is_terminal();
        if !draw {
            return Progress {
                multi: None,
                bars: Mutex::new(HashMap::new()),
            };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let width = nodes.iter().map(|n| n.as_str().len()).max().unwrap_or(4);
        let style = ProgressStyle::with_template(&format!(
            "{{spinner}} {{prefix:<{width}}}  {{elapsed:>4}}  {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let mut bars = HashMap::new();
        for node in nodes {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(style.clone());
            bar.set_prefix(node.to_string());
            bar.set_message("waiting");
            bar.enable_steady_tick(Duration::from_millis(120));
            bars.insert(node.clone(), bar);
        }
        Progress {
            multi: Some(multi),
            bars: Mutex::new(bars),
        }
    }

    fn set(&self, node: &NodeName, message: String, done: bool) {
        let Ok(bars) = self.bars.lock() else { return };
        if let Some(bar) = bars.get(node) {
            if done {
                bar.finish_with_message(message);
            } else {
                bar.set_message(message);
            }
        }
    }

    /// Feeds one event of the run.
    pub fn on_event(&self, event: &Event) {
        let Some(node) = &event.node else {
            return;
        };
        let step = event.step.map(|s| s.as_str()).unwrap_or_default();
        match event.kind {
            Kind::StepStarted => {
                tracing::info!(%node, step, "step started");
                self.set(node, step.to_string(), false);
            }
            Kind::StepRequeued => {
                tracing::debug!(%node, message = %event.message, "step waiting");
                self.set(node, format!("{step} (waiting)"), false);
            }
            Kind::StepDone => tracing::info!(%node, message = %event.message, "step done"),
            Kind::StepRetry => {
                tracing::warn!(%node, message = %event.message, "step will be retried");
                self.set(node, format!("{} (retry)", event.message), false);
            }
            Kind::NodeFinished => {
                tracing::info!(%node, state = %event.message, "node finished");
                let text = match &event.state {
                    Some(NodeState::Converged) => "✓ converged".to_string(),
                    Some(NodeState::Unchanged) => "✓ unchanged".to_string(),
                    Some(NodeState::Failed(e)) => format!("✗ failed: {e}"),
                    Some(NodeState::Skipped(why)) => format!("- skipped: {why}"),
                    Some(NodeState::Interrupted) => "- interrupted".to_string(),
                    Some(NodeState::RolledBack) => "↺ rolled back".to_string(),
                    Some(NodeState::Refused(why)) => format!("! refused: {why}"),
                    None => event.message.clone(),
                };
                self.set(node, text, true);
            }
            _ => {}
        }
    }

    /// Stops drawing, leaving the final lines on screen.
    pub fn finish(&self) {
        if let Ok(bars) = self.bars.lock() {
            for bar in bars.values() {
                if !bar.is_finished() {
                    bar.finish();
                }
            }
        }
        // Dropping the MultiProgress leaves the finished lines on screen.
        let _ = &self.multi;
    }
}
