//! Live progress: one line per node with its current step, on a terminal
//! only (never with `--json` or when stderr is not a TTY). Every event also
//! goes to the log (`-v`), so CI output keeps a trace. While a display
//! draws, log lines go through its `suspend` ([`LogWriter`]): the spinners
//! are cleared, the line is written, and they are drawn again below it.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
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

/// The display drawing now, if any: log lines go through its `suspend`.
static DRAWING: Mutex<Option<MultiProgress>> = Mutex::new(None);

fn drawing() -> std::sync::MutexGuard<'static, Option<MultiProgress>> {
    DRAWING.lock().unwrap_or_else(|e| e.into_inner())
}

/// The tracing subscriber's writer: each event is collected whole and
/// written when dropped, through the drawing display's `suspend` if there
/// is one, else straight to the sink (stderr).
#[derive(Debug, Clone, Copy)]
pub struct LogWriter<F = fn() -> std::io::Stderr> {
    sink: F,
}

impl LogWriter {
    /// Log lines to stderr.
    pub fn stderr() -> LogWriter {
        LogWriter {
            sink: std::io::stderr,
        }
    }
}

impl<'a, F, W> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter<F>
where
    F: Fn() -> W + 'static,
    W: Write,
{
    type Writer = LogLine<W>;

    fn make_writer(&'a self) -> LogLine<W> {
        LogLine {
            text: Vec::new(),
            sink: (self.sink)(),
        }
    }
}

/// One log event on its way out (see [`LogWriter`]).
pub struct LogLine<W: Write> {
    text: Vec<u8>,
    sink: W,
}

impl<W: Write> Write for LogLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for LogLine<W> {
    fn drop(&mut self) {
        if self.text.is_empty() {
            return;
        }
        let multi = drawing().clone();
        let mut write = || {
            let _ = self
                .sink
                .write_all(&self.text)
                .and_then(|()| self.sink.flush());
        };
        match multi {
            Some(multi) => multi.suspend(write),
            None => write(),
        }
    }
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
        Progress::drawn_on(ProgressDrawTarget::stderr(), nodes)
    }

    /// A display for `nodes` drawn on `target`; log lines go through it
    /// until it finishes.
    fn drawn_on(target: ProgressDrawTarget, nodes: &[NodeName]) -> Progress {
        let multi = MultiProgress::with_draw_target(target);
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
        *drawing() = Some(multi.clone());
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
        if self.multi.is_some() {
            *drawing() = None;
        }
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

    /// A line on stderr that does not garble the display (the
    /// interruption and host-lease notes).
    pub fn eprintln(text: &str) {
        let mut line = LogWriter::stderr().make_line();
        let _ = writeln!(line, "{text}");
    }
}

impl LogWriter {
    fn make_line(&self) -> LogLine<std::io::Stderr> {
        tracing_subscriber::fmt::MakeWriter::make_writer(self)
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.multi.is_some() {
            *drawing() = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use indicatif::TermLike;

    use super::*;

    /// What reached the "terminal", in order: the display's drawing and
    /// the log lines, one entry per operation.
    type Screen = Arc<Mutex<Vec<String>>>;

    #[derive(Debug)]
    struct Recorder(Screen);

    impl Recorder {
        fn push(&self, op: String) -> std::io::Result<()> {
            self.0.lock().unwrap().push(op);
            Ok(())
        }
    }

    impl TermLike for Recorder {
        fn width(&self) -> u16 {
            80
        }
        fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
            self.push(format!("up {n}"))
        }
        fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
            self.push(format!("down {n}"))
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.push(format!("draw {s}"))
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.push(format!("draw {s}"))
        }
        fn clear_line(&self) -> std::io::Result<()> {
            self.push("clear".into())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A log sink writing into the same record as the display.
    struct Sink(Screen);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let text = String::from_utf8_lossy(buf).trim_end().to_string();
            self.0.lock().unwrap().push(format!("log {text}"));
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_log_line_during_progress_is_written_between_clearing_and_redrawing() {
        let screen: Screen = Arc::default();
        let nodes = [NodeName::new("web").unwrap()];
        let progress = Progress::drawn_on(
            ProgressDrawTarget::term_like(Box::new(Recorder(Arc::clone(&screen)))),
            &nodes,
        );
        progress.set(&nodes[0], "create_vm".into(), false);
        let sink = Arc::clone(&screen);
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(LogWriter {
                sink: move || Sink(Arc::clone(&sink)),
            })
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!("disk almost full");
        });
        let ops = screen.lock().unwrap().clone();
        let log = ops
            .iter()
            .position(|op| op.starts_with("log ") && op.contains("disk almost full"))
            .unwrap_or_else(|| panic!("no log line: {ops:#?}"));
        let drawn = |op: &String| op.starts_with("draw ") && op.contains("web");
        let before = ops[..log].iter().rposition(drawn);
        let cleared = ops[..log].iter().rposition(|op| op == "clear");
        assert!(
            before.is_some() && cleared > before,
            "the bar was not drawn, then cleared, before the log line: {ops:#?}"
        );
        assert!(
            ops[log + 1..].iter().any(drawn),
            "the bar was not drawn again after the log line: {ops:#?}"
        );
        progress.finish();
        assert!(
            drawing().is_none(),
            "a finished display still takes log lines"
        );
    }
}
