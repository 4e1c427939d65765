//! Live progress: one line per node with its current step, on a terminal
//! only (never with `--json` or when stderr is not a TTY). Every event also
//! goes to the log (`-v`), so CI output keeps a trace.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use homestak_engine::executor::{Event, NodeState};

/// The progress display of one run.
pub struct Progress {
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Progress {
    /// A display for `nodes`, drawn only when `enabled` and stderr is a TTY.
    pub fn new(enabled: bool, nodes: &[String]) -> Progress {
        let draw = enabled && std::io::stderr().is_terminal();
        if !draw {
            return Progress {
                multi: None,
                bars: Mutex::new(HashMap::new()),
            };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let width = nodes.iter().map(String::len).max().unwrap_or(4);
        let style = ProgressStyle::with_template(&format!(
            "{{spinner}} {{prefix:<{width}}}  {{elapsed:>4}}  {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let mut bars = HashMap::new();
        for node in nodes {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(style.clone());
            bar.set_prefix(node.clone());
            bar.set_message("waiting");
            bar.enable_steady_tick(Duration::from_millis(120));
            bars.insert(node.clone(), bar);
        }
        Progress {
            multi: Some(multi),
            bars: Mutex::new(bars),
        }
    }

    fn set(&self, node: &str, message: String, done: bool) {
        let Ok(bars) = self.bars.lock() else { return };
        if let Some(bar) = bars.get(node) {
            if done {
                bar.finish_with_message(message);
            } else {
                bar.set_message(message);
            }
        }
    }

    /// Feeds one executor event.
    pub fn on_event(&self, event: &Event) {
        match event {
            Event::StepStarted { node, step } => {
                tracing::info!(%node, %step, "step started");
                self.set(node, (*step).to_string(), false);
            }
            Event::StepRequeued { node, step, after } => {
                tracing::debug!(%node, %step, ?after, "step waiting");
                self.set(node, format!("{step} (waiting)"), false);
            }
            Event::StepDone {
                node,
                step,
                duration,
            } => {
                tracing::info!(%node, %step, ?duration, "step done");
            }
            Event::StepRetry {
                node,
                step,
                attempt,
                error,
            } => {
                tracing::warn!(%node, %step, attempt, %error, "step will be retried");
                self.set(node, format!("{step} (retry {attempt}: {error})"), false);
            }
            Event::NodeFinished { node, state } => {
                tracing::info!(%node, ?state, "node finished");
                let text = match state {
                    NodeState::Converged => "✓ converged".to_string(),
                    NodeState::Unchanged => "✓ unchanged".to_string(),
                    NodeState::Failed(e) => format!("✗ failed: {e}"),
                    NodeState::Skipped(why) => format!("- skipped: {why}"),
                    NodeState::Interrupted => "- interrupted".to_string(),
                    NodeState::RolledBack => "↺ rolled back".to_string(),
                    NodeState::Refused(why) => format!("! refused: {why}"),
                };
                self.set(node, text, true);
            }
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
