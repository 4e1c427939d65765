//! What `--help` says after the flags: examples, the exit codes and the
//! environment variables. The exit codes are defined here once; `main`
//! and the commands use these constants, and `--help` prints the table.

use std::fmt::Write as _;

/// An error: the message says what failed and what to do next.
pub const EXIT_FAILED: u8 = 1;
/// Drift: the world differs from the manifest.
pub const EXIT_DRIFT: u8 = 2;
/// Bad flags or arguments (sysexits EX_USAGE), kept apart from drift.
pub const EXIT_USAGE: u8 = 64;
/// Interrupted by SIGINT or SIGTERM (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Every exit code and what it means.
pub const EXIT_CODES: [(u8, &str); 5] = [
    (0, "success, or in sync"),
    (
        EXIT_FAILED,
        "an error: the message says what failed and what to do next",
    ),
    (
        EXIT_DRIFT,
        "drift: `status` (or `plan --detailed-exitcode`) found the world differs from the manifest",
    ),
    (
        EXIT_USAGE,
        "usage error: bad flags or arguments; `reconcile` without --once",
    ),
    (
        EXIT_INTERRUPTED,
        "interrupted (Ctrl-C or SIGTERM): steps in flight finished and were recorded; \
         a second signal stops at once",
    ),
];

/// The variables every command reads (serve's flags each have their own,
/// shown next to the flag).
const ENVIRONMENT: [(&str, &str); 6] = [
    (
        "HOMESTAK_SITE_CONFIG",
        "site-config directory, when --site-config is not given",
    ),
    (
        "HOMESTAK_STATE_DIR",
        "store, known SSH host keys and reports (default: /var/lib/homestak for root, \
         else ~/.local/state/homestak)",
    ),
    (
        "HOMESTAK_SSH_KEY",
        "private key for SSH to the VMs and hosts",
    ),
    (
        "HOMESTAK_LOG",
        "a tracing filter for log lines on stderr (e.g. homestak_engine=debug); overrides -v",
    ),
    (
        "NO_COLOR",
        "set (not empty): no colour in output nor in log lines",
    ),
    (
        "CLICOLOR_FORCE",
        "set (not empty): plan and status colours even on a pipe (NO_COLOR wins)",
    ),
];

/// A section heading, styled as clap styles its own.
fn heading(out: &mut String, title: &str) {
    let style = anstyle::Style::new().bold().underline();
    let _ = writeln!(out, "{style}{title}:{style:#}");
}

/// Examples, each a command line and what it does.
fn examples(out: &mut String, lines: &[(&str, &str)]) {
    heading(out, "Examples");
    for (command, what) in lines {
        let _ = writeln!(out, "  # {what}");
        let _ = writeln!(out, "  {command}");
    }
}

/// `term` and its description in two columns, the description wrapped
/// under itself so the lines fit 80 columns (clap would wrap them flush left).
fn entry(out: &mut String, term: &str, width: usize, text: &str) {
    let room = 78usize.saturating_sub(width + 3).max(20);
    let mut line = String::new();
    let mut first = true;
    for word in text.split(' ') {
        if !line.is_empty() && line.len() + 1 + word.len() > room {
            let label = if first { term } else { "" };
            let _ = writeln!(out, "  {label:<width$} {line}");
            first = false;
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    let label = if first { term } else { "" };
    let _ = writeln!(out, "  {label:<width$} {line}");
}

fn exit_codes(out: &mut String, codes: &[u8]) {
    let _ = writeln!(out);
    heading(out, "Exit codes");
    for (code, meaning) in EXIT_CODES.iter().filter(|(c, _)| codes.contains(c)) {
        entry(out, &code.to_string(), 4, meaning);
    }
}

fn environment(out: &mut String) {
    let _ = writeln!(out);
    heading(out, "Environment");
    for (name, what) in ENVIRONMENT {
        entry(out, name, 21, what);
    }
}

fn all_codes() -> Vec<u8> {
    EXIT_CODES.iter().map(|(c, _)| *c).collect()
}

/// `homestak --help`.
pub fn top() -> String {
    let mut out = String::new();
    examples(
        &mut out,
        &[
            (
                "homestak manifest validate",
                "check every manifest of the site-config",
            ),
            (
                "homestak plan -M lab -H pve",
                "what a reconcile of manifests/lab.yaml on host pve would change",
            ),
            (
                "homestak reconcile --once -M lab -H pve",
                "converge it, then exit",
            ),
            (
                "homestak status -M lab -H pve --watch",
                "drift, redrawn as it changes",
            ),
            ("homestak serve", "the controller daemon of a tier"),
        ],
    );
    exit_codes(&mut out, &all_codes());
    environment(&mut out);
    out
}

/// `homestak plan --help`.
pub fn plan() -> String {
    let mut out = String::new();
    examples(
        &mut out,
        &[
            ("homestak plan -M lab -H pve", "the plan, terraform-style"),
            (
                "homestak plan -M lab -H pve --detailed-exitcode",
                "in CI: exit 2 when there are changes",
            ),
            ("homestak plan -M lab -H pve --json", "the plan as JSON"),
        ],
    );
    exit_codes(&mut out, &[0, EXIT_FAILED, EXIT_DRIFT, EXIT_USAGE]);
    environment(&mut out);
    out
}

/// `homestak reconcile --help`.
pub fn reconcile() -> String {
    let mut out = String::new();
    examples(
        &mut out,
        &[
            (
                "homestak reconcile --once -M lab -H pve",
                "converge with live progress, then exit",
            ),
            (
                "homestak reconcile --once -M lab -H pve --no-wait",
                "fail at once if another homestak holds the host",
            ),
        ],
    );
    exit_codes(&mut out, &[0, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED]);
    environment(&mut out);
    out
}

/// `homestak status --help`.
pub fn status() -> String {
    let mut out = String::new();
    examples(
        &mut out,
        &[
            ("homestak status -M lab -H pve", "the drift report, once"),
            (
                "homestak status -M lab -H pve --watch --interval 5s",
                "redrawn on a terminal; on a pipe, printed again when it changes",
            ),
        ],
    );
    exit_codes(&mut out, &[0, EXIT_FAILED, EXIT_DRIFT, EXIT_USAGE]);
    let _ = writeln!(
        out,
        "  With --watch: 0 when Ctrl-C or SIGTERM ends it; 1 when the first read fails."
    );
    environment(&mut out);
    out
}

/// `homestak create|destroy|test --help`.
pub fn seed() -> String {
    let mut out = String::new();
    examples(
        &mut out,
        &[
            (
                "homestak create -M lab -H pve --dry-run",
                "the plan only, nothing changes",
            ),
            ("homestak create -M lab -H pve", "create the manifest's VMs"),
            (
                "homestak destroy -M lab -H pve --yes",
                "destroy them without asking",
            ),
        ],
    );
    exit_codes(&mut out, &[0, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED]);
    environment(&mut out);
    out
}

/// `homestak serve --help`.
pub fn serve() -> String {
    let mut out = String::new();
    examples(
        &mut out,
        &[
            (
                "homestak serve --bind 10.0.12.1 --host pve",
                "serve specs and repos on one address, converge host pve on commit",
            ),
            (
                "HOMESTAK_BIND=10.0.12.1 HOMESTAK_HOST=pve homestak serve",
                "the same from the environment (a systemd EnvironmentFile)",
            ),
        ],
    );
    exit_codes(&mut out, &[0, EXIT_FAILED, EXIT_USAGE]);
    let _ = writeln!(
        out,
        "  SIGHUP reloads; SIGINT or SIGTERM shut the daemon down gracefully (exit 0)."
    );
    environment(&mut out);
    out
}

/// `homestak scenario --help`.
pub fn scenario() -> String {
    let mut out = String::new();
    examples(
        &mut out,
        &[
            ("homestak scenario --list", "the scenarios"),
            (
                "homestak scenario pve-setup --host father",
                "install and configure PVE on host father",
            ),
            ("homestak scenario user-setup --local", "on this machine"),
        ],
    );
    exit_codes(&mut out, &[0, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED]);
    environment(&mut out);
    entry(
        &mut out,
        "HOMESTAK_PACKER_DIR",
        21,
        "local packer directory of the packer-* scenarios",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_descriptions_wrap_under_themselves() {
        let mut out = String::new();
        entry(&mut out, "130", 4, &"word ".repeat(30));
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines.len() > 1, "{out}");
        assert!(lines[0].starts_with("  130  word"), "{out}");
        assert!(lines[1].starts_with("       word"), "{out}");
        assert!(lines.iter().all(|l| l.len() <= 78), "{out}");
    }

    #[test]
    fn every_exit_code_appears_once() {
        let codes = all_codes();
        let mut unique = codes.clone();
        unique.dedup();
        assert_eq!(codes, unique);
        assert_eq!(codes, [0, 1, 2, 64, 130]);
    }
}

#[cfg(test)]
mod value_hints {
    use clap::{CommandFactory, ValueHint};

    /// Completions complete paths wherever a path is asked for (not
    /// `NAME=PATH`, which a shell cannot complete as a path).
    fn check(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in command.get_arguments() {
            let names = arg.get_value_names().unwrap_or_default();
            let pathlike = names.iter().any(|n| {
                !n.as_str().contains('=')
                    && ["DIR", "FILE", "PATH", "PEM"]
                        .iter()
                        .any(|kind| n.as_str().ends_with(kind))
            });
            let hinted = matches!(
                arg.get_value_hint(),
                ValueHint::FilePath | ValueHint::DirPath | ValueHint::AnyPath
            );
            if pathlike && !hinted {
                missing.push(format!("{path} --{}", arg.get_id()));
            }
        }
        for sub in command.get_subcommands() {
            check(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }

    #[test]
    fn every_path_argument_has_a_path_value_hint() {
        let command = super::super::Cli::command();
        let mut missing = Vec::new();
        check(&command, "homestak", &mut missing);
        assert!(missing.is_empty(), "no path hint: {missing:#?}");
        let site = command
            .get_arguments()
            .find(|a| a.get_id() == "site_config")
            .map(clap::Arg::get_value_hint);
        assert_eq!(site, Some(ValueHint::DirPath));
    }
}
