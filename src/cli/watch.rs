//! `homestak status --watch`: the drift report again and again, like
//! `kubectl get -w`.
//!
//! Every `--interval` the status is read anew (the engine, and the store
//! when it is free, are held only while reading). On a terminal the report
//! is redrawn in place under a header with the time of the read; elsewhere
//! (a pipe, a file) a report is printed only when it differs from the one
//! before, after a `--- TIME` line; with `--json`, each changed report is
//! one line of JSON. A read that fails after the first is shown the same
//! way and the watch goes on; a first read that fails ends the command as
//! `status` would. Ctrl-C or SIGTERM ends the watch with exit 0: stopping
//! is how a watch ends, not a failure.

use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime};

use super::converge::{StatusArgs, read_status};
use super::{GlobalArgs, Outcome, output};
use homestak_api::status::Status;
use homestak_core::plan::Style;
use homestak_engine::reconcile::status;

/// How frames reach stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A terminal: every read redraws the screen in place.
    Redraw,
    /// Anything else: a changed report after a timestamp line.
    Append,
    /// `--json`: a changed report as one line of JSON.
    Json,
}

/// Cursor home, then the whole screen cleared (the first frame only).
const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";
/// Cursor home: later frames overwrite the one before without flicker.
const HOME: &str = "\x1b[H";
/// Clears the rest of a line the frame before may have made longer.
const CLEAR_LINE: &str = "\x1b[K";
/// Clears what the frame before left below this one.
const CLEAR_BELOW: &str = "\x1b[J";

/// What was shown last, to tell a changed report from the same one.
struct Screen {
    mode: Mode,
    interval: Duration,
    last: Option<String>,
}

impl Screen {
    fn new(mode: Mode, interval: Duration) -> Screen {
        Screen {
            mode,
            interval,
            last: None,
        }
    }

    /// What to write for a read that produced `body` at `at`, if anything.
    fn frame(&mut self, body: &str, at: SystemTime) -> Option<String> {
        let changed = self.last.as_deref() != Some(body);
        let first = self.last.is_none();
        let stamp = humantime::format_rfc3339_seconds(at);
        self.last = Some(body.to_string());
        match self.mode {
            Mode::Redraw => {
                let mut out = String::from(if first { CLEAR_SCREEN } else { HOME });
                let header = format!(
                    "Every {}: homestak status   {stamp}   (Ctrl-C ends)",
                    humantime::format_duration(self.interval)
                );
                for line in std::iter::once(header.as_str())
                    .chain([""])
                    .chain(body.lines())
                {
                    out.push_str(line);
                    out.push_str(CLEAR_LINE);
                    out.push('\n');
                }
                out.push_str(CLEAR_BELOW);
                Some(out)
            }
            Mode::Append if changed => Some(format!("--- {stamp}\n{body}")),
            Mode::Json if changed => Some(format!("{body}\n")),
            Mode::Append | Mode::Json => None,
        }
    }
}

/// A report (or the error of reading it) as the mode shows it.
fn body(read: &anyhow::Result<Status>, mode: Mode, style: Style) -> String {
    match (read, mode) {
        (Ok(report), Mode::Json) => serde_json::to_string(report)
            .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string()),
        (Err(err), Mode::Json) => {
            serde_json::json!({ "error": output::error_text(err) }).to_string()
        }
        (Ok(report), _) => status::render_human(report, style),
        (Err(err), _) => format!("{}\n", output::error_text(err)),
    }
}

/// Resolves on the first SIGINT or SIGTERM.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Writes a frame as is (colour was settled when rendering, the cursor
/// codes must pass); false once stdout is closed.
fn write(frame: &str) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(frame.as_bytes())
        .and_then(|()| out.flush())
        .is_ok()
}

/// Runs `homestak status --watch` until a signal ends it.
pub async fn run(args: &StatusArgs, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let mode = if global.json {
        Mode::Json
    } else if std::io::stdout().is_terminal() {
        Mode::Redraw
    } else {
        Mode::Append
    };
    // The same choice anstream makes for `status` (NO_COLOR, CLICOLOR_FORCE).
    let style = Style {
        color: anstream::AutoStream::choice(&std::io::stdout()) != anstream::ColorChoice::Never,
    };
    let stop = stop_signal()?;
    tokio::pin!(stop);
    let mut screen = Screen::new(mode, args.interval);
    let mut first = true;
    loop {
        let mut read = tokio::select! {
            () = &mut stop => break,
            read = read_status(&args.target, global, args.deep) => read,
        };
        if first {
            // Nothing to watch: end as `status` would.
            read = Ok(read?);
            first = false;
        }
        if let Some(frame) = screen.frame(&body(&read, mode, style), SystemTime::now())
            && !write(&frame)
        {
            break;
        }
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(args.interval) => {}
        }
    }
    Ok(Outcome::Converged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    #[test]
    fn a_pipe_gets_a_report_only_when_it_changed_after_a_timestamp() {
        let mut screen = Screen::new(Mode::Append, Duration::from_secs(2));
        assert_eq!(
            screen.frame("a\n", at(0)).as_deref(),
            Some("--- 2027-01-15T08:00:00Z\na\n")
        );
        assert_eq!(screen.frame("a\n", at(2)), None);
        assert_eq!(
            screen.frame("b\n", at(4)).as_deref(),
            Some("--- 2027-01-15T08:00:04Z\nb\n")
        );
        assert_eq!(screen.frame("b\n", at(6)), None);
    }

    #[test]
    fn json_gets_one_line_per_changed_report() {
        let mut screen = Screen::new(Mode::Json, Duration::from_secs(2));
        assert_eq!(screen.frame("{}", at(0)).as_deref(), Some("{}\n"));
        assert_eq!(screen.frame("{}", at(2)), None);
        assert_eq!(
            screen.frame("{\"a\":1}", at(4)).as_deref(),
            Some("{\"a\":1}\n")
        );
    }

    #[test]
    fn a_terminal_is_cleared_once_then_redrawn_in_place_on_every_read() {
        let mut screen = Screen::new(Mode::Redraw, Duration::from_secs(2));
        let first = screen.frame("a\nb\n", at(0)).unwrap();
        assert!(first.starts_with(CLEAR_SCREEN), "{first:?}");
        assert!(first.contains("Every 2s"), "{first:?}");
        assert!(first.contains("a\x1b[K\nb\x1b[K\n"), "{first:?}");
        assert!(first.ends_with(CLEAR_BELOW), "{first:?}");
        let same = screen.frame("a\nb\n", at(2)).unwrap();
        assert!(
            same.starts_with(HOME) && !same.contains("\x1b[2J"),
            "{same:?}"
        );
        assert!(same.contains("08:00:02Z"), "the time moves on: {same:?}");
    }
}
