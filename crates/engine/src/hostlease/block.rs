//! The lease as text: a marked block in the PVE node's notes, between two
//! HTML comments (invisible in the rendered notes) around a fenced block
//! of `key: value` lines (visible, so an operator sees who converges the
//! host). The user's own notes before and after the block are kept byte
//! for byte.
//!
//! ````text
//! <!-- homestak:lease begin (written by homestak; do not edit) -->
//! ```text
//! lease: held
//! command: reconcile
//! host: build-01
//! pid: 4242
//! state_dir: /home/ops/.local/state/homestak
//! version: 0.1.0
//! acquired: 2026-03-01T10:00:00Z
//! renewed: 2026-03-01T10:00:40Z
//! expires: 2026-03-01T10:01:40Z
//! nonce: 6f1c…
//! machine: 3e8a…
//! boot: 0b5c…
//! pid_start: 123456
//! format: 1
//! ```
//! <!-- homestak:lease end -->
//! ````
//!
//! A released lease stays as a `lease: free` block: the node's config file
//! then never goes back to empty, and an empty file is the one state in
//! which PVE checks no `digest`.

use std::fmt::Write as _;

use homestak_base::time::Timestamp;

/// The first line of the block (matched by its prefix).
const BEGIN: &str = "<!-- homestak:lease begin (written by homestak; do not edit) -->";
const BEGIN_PREFIX: &str = "<!-- homestak:lease begin";
const END: &str = "<!-- homestak:lease end -->";
const FENCE: &str = "```";
/// The block format this homestak writes and reads.
pub const FORMAT: u32 = 1;

/// Whether the lease is held or was given back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Held,
    Free,
}

/// Who holds (or last held) the lease. In the block an absent value is
/// an empty line value (`pid_start: 0` for the start time), as every
/// homestak writes and reads it; `Some("")` and `Some(0)` would read back
/// as `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// What runs: `reconcile`, `serve`, `create`, …
    pub command: Option<String>,
    /// The holder's hostname.
    pub host: String,
    pub pid: u32,
    pub state_dir: Option<String>,
    /// The holder's homestak version.
    pub version: Option<String>,
    /// Random, one per lease taken: tells two holders with the same pid
    /// (PID 1 in containers, two engines in one process) apart.
    pub nonce: String,
    /// `/etc/machine-id`, when readable.
    pub machine: Option<String>,
    /// The kernel's boot id, when readable: a different one means the
    /// holder's machine rebooted since.
    pub boot: Option<String>,
    /// The process's start time (clock ticks after boot), when readable: a
    /// reused pid has another.
    pub pid_start: Option<u64>,
}

/// One lease record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub state: State,
    pub holder: Holder,
    pub acquired: Timestamp,
    pub renewed: Timestamp,
    /// When a held lease lapses; when a free one was given back.
    pub expires: Timestamp,
}

/// A block that is there but cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("the begin marker has no end marker after it")]
    Unterminated,
    #[error("line {line:?} is not `key: value`")]
    Line { line: String },
    #[error("`{key}` is missing")]
    Missing { key: &'static str },
    #[error("`{key}: {value}` is not valid")]
    Value { key: &'static str, value: String },
    #[error("it was written in format {format} by a newer homestak; upgrade this one")]
    Newer { format: u32 },
}

/// The node's notes split around the block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notes {
    /// The user's text before the block (all of it when there is none).
    pub before: String,
    pub record: Option<Record>,
    /// The user's text after the block.
    pub after: String,
}

impl Notes {
    /// Finds the block in `notes`.
    pub fn parse(notes: &str) -> Result<Notes, Problem> {
        let Some(start) = line_start(notes, BEGIN_PREFIX) else {
            return Ok(Notes {
                before: notes.to_string(),
                record: None,
                after: String::new(),
            });
        };
        let body_start = line_end(notes, start);
        let Some(end) = line_start(&notes[body_start..], END).map(|i| i + body_start) else {
            return Err(Problem::Unterminated);
        };
        let after_start = line_end(notes, end);
        let record = Record::parse(&notes[body_start..end])?;
        Ok(Notes {
            before: notes[..start].to_string(),
            record: Some(record),
            after: notes[after_start..].to_string(),
        })
    }

    /// The notes with `record` as the block, the user's text untouched.
    pub fn with(&self, record: &Record) -> String {
        let mut out = self.before.clone();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&record.render());
        out.push_str(&self.after);
        out
    }
}

/// Where the first line starting with `prefix` starts.
fn line_start(text: &str, prefix: &str) -> Option<usize> {
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if line.starts_with(prefix) {
            return Some(at);
        }
        at += line.len();
    }
    None
}

/// Where the line that starts at `start` ends (after its `\n`).
fn line_end(text: &str, start: usize) -> usize {
    text[start..]
        .find('\n')
        .map_or(text.len(), |i| start + i + 1)
}

/// A value as it may appear on one line of the notes: no line breaks, no
/// `%` (PVE decodes `%XX` in notes on every read), nothing but printable
/// ASCII.
fn clean(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '%' || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

impl Record {
    /// The block, markers included, ending in `\n`.
    pub fn render(&self) -> String {
        let h = &self.holder;
        let mut out = String::new();
        let _ = writeln!(out, "{BEGIN}");
        let _ = writeln!(out, "{FENCE}text");
        let state = match self.state {
            State::Held => "held",
            State::Free => "free",
        };
        // Absent values keep their line, empty (`0` for pid_start): the
        // block other homestak versions read.
        let optional = |value: &Option<String>| clean(value.as_deref().unwrap_or_default());
        let lines: [(&str, String); 14] = [
            ("lease", state.to_string()),
            ("command", optional(&h.command)),
            ("host", clean(&h.host)),
            ("pid", h.pid.to_string()),
            ("state_dir", optional(&h.state_dir)),
            ("version", optional(&h.version)),
            ("acquired", self.acquired.to_string()),
            ("renewed", self.renewed.to_string()),
            ("expires", self.expires.to_string()),
            ("nonce", clean(&h.nonce)),
            ("machine", optional(&h.machine)),
            ("boot", optional(&h.boot)),
            ("pid_start", h.pid_start.unwrap_or(0).to_string()),
            ("format", FORMAT.to_string()),
        ];
        for (key, value) in lines {
            let _ = writeln!(out, "{key}: {value}");
        }
        let _ = writeln!(out, "{FENCE}");
        let _ = writeln!(out, "{END}");
        out
    }

    /// The record from the lines between the markers. Unknown keys are
    /// skipped (a later format may add some).
    fn parse(body: &str) -> Result<Record, Problem> {
        let mut fields = std::collections::BTreeMap::new();
        for line in body.lines() {
            let line = line.trim_end();
            if line.is_empty() || line.starts_with(FENCE) {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                return Err(Problem::Line { line: line.into() });
            };
            fields.insert(key.trim().to_string(), value.trim().to_string());
        }
        let text = |key: &'static str| -> Result<String, Problem> {
            fields.get(key).cloned().ok_or(Problem::Missing { key })
        };
        // Missing or empty: absent.
        let optional = |key: &str| fields.get(key).filter(|v| !v.is_empty()).cloned();
        let number = |key: &'static str| -> Result<u64, Problem> {
            let value = text(key)?;
            value.parse().map_err(|_| Problem::Value { key, value })
        };
        let time = |key: &'static str| -> Result<Timestamp, Problem> {
            let value = text(key)?;
            value.parse().map_err(|_| Problem::Value { key, value })
        };
        let format = number("format")?;
        if format > u64::from(FORMAT) {
            return Err(Problem::Newer {
                format: u32::try_from(format).unwrap_or(u32::MAX),
            });
        }
        let state = match text("lease")?.as_str() {
            "held" => State::Held,
            "free" => State::Free,
            other => {
                return Err(Problem::Value {
                    key: "lease",
                    value: other.into(),
                });
            }
        };
        let pid = number("pid")?;
        let nonce = text("nonce")?;
        if nonce.is_empty() {
            return Err(Problem::Missing { key: "nonce" });
        }
        Ok(Record {
            state,
            holder: Holder {
                command: optional("command"),
                host: text("host")?,
                pid: u32::try_from(pid).map_err(|_| Problem::Value {
                    key: "pid",
                    value: pid.to_string(),
                })?,
                state_dir: optional("state_dir"),
                version: optional("version"),
                nonce,
                machine: optional("machine"),
                boot: optional("boot"),
                // `0` (or anything not a number): not known.
                pid_start: optional("pid_start")
                    .and_then(|v| v.parse().ok())
                    .filter(|&start| start != 0),
            },
            acquired: time("acquired")?,
            renewed: time("renewed")?,
            expires: time("expires")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            state: State::Held,
            holder: Holder {
                command: Some("reconcile".into()),
                host: "build-01".into(),
                pid: 4242,
                state_dir: Some("/home/ops/.local/state/homestak".into()),
                version: Some("0.1.0".into()),
                nonce: "6f1c00aa".into(),
                machine: Some("3e8a".into()),
                boot: Some("0b5c".into()),
                pid_start: Some(123_456),
            },
            acquired: "2026-03-01T10:00:00Z".parse().unwrap(),
            renewed: "2026-03-01T10:00:40Z".parse().unwrap(),
            expires: "2026-03-01T10:01:40Z".parse().unwrap(),
        }
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let text = Notes {
            before: String::new(),
            record: None,
            after: String::new(),
        }
        .with(&record());
        assert!(text.starts_with(BEGIN), "{text}");
        assert!(text.contains("\nlease: held\n") && text.contains("\npid: 4242\n"));
        let notes = Notes::parse(&text).unwrap();
        assert_eq!(notes.record, Some(record()));
        assert_eq!((notes.before.as_str(), notes.after.as_str()), ("", ""));
    }

    #[test]
    fn the_users_notes_around_the_block_are_kept_exactly() {
        let before = "# Rack 2\n\nDo not reboot: the NAS mounts from here.\n";
        let after = "Contact: ops@example.org\n";
        let text = format!("{before}{}{after}", record().render());
        let notes = Notes::parse(&text).unwrap();
        assert_eq!(notes.before, before);
        assert_eq!(notes.after, after);
        let mut free = record();
        free.state = State::Free;
        let rewritten = notes.with(&free);
        let again = Notes::parse(&rewritten).unwrap();
        assert_eq!(
            (again.before.as_str(), again.after.as_str()),
            (before, after)
        );
        assert_eq!(again.record, Some(free));
        // Notes without a block get it at the end, after a line break.
        let plain = Notes::parse("no newline at the end").unwrap();
        assert_eq!(plain.record, None);
        let with = plain.with(&record());
        assert!(with.starts_with("no newline at the end\n<!-- homestak:lease begin"));
        assert_eq!(
            Notes::parse(&with).unwrap().before,
            "no newline at the end\n"
        );
    }

    #[test]
    fn damaged_and_newer_blocks_are_refused() {
        let text = record().render();
        let cut = text.replace(END, "");
        assert_eq!(Notes::parse(&cut), Err(Problem::Unterminated));
        let missing = text.replace("nonce: 6f1c00aa\n", "");
        assert_eq!(
            Notes::parse(&missing),
            Err(Problem::Missing { key: "nonce" })
        );
        let bad_time = text.replace("2026-03-01T10:01:40Z", "soon");
        assert!(matches!(
            Notes::parse(&bad_time),
            Err(Problem::Value { key: "expires", .. })
        ));
        let newer = text.replace("format: 1", "format: 2");
        assert_eq!(Notes::parse(&newer), Err(Problem::Newer { format: 2 }));
        // Unknown keys of the same format are skipped.
        let extra = text.replace("format: 1", "format: 1\nshoe_size: 44");
        assert!(Notes::parse(&extra).is_ok());
    }

    #[test]
    fn an_old_block_with_empty_values_reads_them_as_absent_and_renders_the_same() {
        // A holder that could read neither /etc/machine-id nor /proc.
        let text = concat!(
            "<!-- homestak:lease begin (written by homestak; do not edit) -->\n",
            "```text\n",
            "lease: held\n",
            "command: \n",
            "host: build-01\n",
            "pid: 4242\n",
            "state_dir: \n",
            "version: \n",
            "acquired: 2026-03-01T10:00:00Z\n",
            "renewed: 2026-03-01T10:00:40Z\n",
            "expires: 2026-03-01T10:01:40Z\n",
            "nonce: 6f1c00aa\n",
            "machine: \n",
            "boot: \n",
            "pid_start: 0\n",
            "format: 1\n",
            "```\n",
            "<!-- homestak:lease end -->\n",
        );
        let read = Notes::parse(text).unwrap().record.unwrap();
        let h = &read.holder;
        assert_eq!(h.command, None);
        assert_eq!((&h.state_dir, &h.version), (&None, &None));
        assert_eq!((&h.machine, &h.boot, h.pid_start), (&None, &None, None));
        assert_eq!((h.host.as_str(), h.pid), ("build-01", 4242));
        assert_eq!(read.render(), text);
        // Lines an older format left out read as absent too.
        let short = text
            .replace("machine: \n", "")
            .replace("pid_start: 0\n", "");
        let read = Notes::parse(&short).unwrap().record.unwrap();
        assert_eq!((read.holder.machine, read.holder.pid_start), (None, None));
        // A full record renders every value as written.
        assert_eq!(
            record().render(),
            text.replace("command: \n", "command: reconcile\n")
                .replace(
                    "state_dir: \n",
                    "state_dir: /home/ops/.local/state/homestak\n"
                )
                .replace("version: \n", "version: 0.1.0\n")
                .replace("machine: \n", "machine: 3e8a\n")
                .replace("boot: \n", "boot: 0b5c\n")
                .replace("pid_start: 0\n", "pid_start: 123456\n")
        );
    }

    #[test]
    fn values_stay_on_one_line_and_free_of_percent_signs() {
        let mut r = record();
        r.holder.state_dir = Some("/tmp/100%\nlease: free".into());
        let text = r.render();
        assert!(
            text.contains("state_dir: /tmp/100??lease: free\n"),
            "{text}"
        );
        assert_eq!(
            Notes::parse(&text).unwrap().record.unwrap().state,
            State::Held
        );
    }
}
