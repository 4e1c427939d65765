//! `homestak completions` and `homestak man` as a user runs them. The
//! commands expected are read from `--help`, so a new subcommand is
//! covered without touching this file.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::support::{BIN, text};

/// The subcommand names in the "Commands:" list of `homestak ARGS --help`,
/// without clap's `help`.
fn subcommands_of(path: &[String]) -> Vec<String> {
    let out = Command::new(BIN).args(path).arg("--help").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let help = String::from_utf8(out.stdout).unwrap();
    let Some((_, list)) = help.split_once("Commands:\n") else {
        return Vec::new();
    };
    list.lines()
        .take_while(|line| !line.trim().is_empty())
        // A name is indented two spaces; wrapped descriptions are deeper.
        .filter(|line| line.starts_with("  ") && !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// Every command path below `homestak`, at every depth (`["config", "list"]`, …).
fn command_paths() -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut pending = vec![Vec::new()];
    while let Some(path) = pending.pop() {
        for name in subcommands_of(&path) {
            let mut sub = path.clone();
            sub.push(name);
            pending.push(sub.clone());
            paths.push(sub);
        }
    }
    paths
}

#[test]
fn bash_completion_names_every_subcommand() {
    let out = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(script.contains("complete -F _homestak"), "{script}");
    let paths = command_paths();
    assert!(paths.len() > 15, "{paths:?}");
    for path in paths {
        // The script dispatches on "parent,word" pairs.
        let parent = if path.len() == 1 {
            "homestak".to_string()
        } else {
            format!(
                "homestak__subcmd__{}",
                path[..path.len() - 1].join("__subcmd__")
            )
        };
        let pair = format!("{parent},{})", path[path.len() - 1]);
        assert!(script.contains(&pair), "no {pair} in the bash completion");
    }
}

#[test]
fn zsh_and_fish_completions_and_an_unknown_shell() {
    for (shell, marker) in [
        ("zsh", "#compdef homestak"),
        ("fish", "complete -c homestak"),
    ] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("reconcile"), "{shell}: {script}");
    }
    let out = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
}

/// The checks every page passes: a roff page whose title names it, with
/// NAME and SYNOPSIS sections.
fn assert_roff_page(path: &Path) {
    let page = std::fs::read_to_string(path).unwrap();
    let name = path.file_stem().unwrap().to_str().unwrap();
    let title = page
        .lines()
        .find(|line| line.starts_with(".TH "))
        .unwrap_or_else(|| panic!("{}: no .TH line", path.display()));
    // Every page, a subcommand's too, is from "homestak VERSION".
    assert!(
        title.starts_with(&format!(".TH {name} 1 "))
            && title.contains(&format!("\"homestak {}\"", env!("CARGO_PKG_VERSION"))),
        "{}: {title}",
        path.display()
    );
    let macros: Vec<&str> = page.lines().filter(|l| l.starts_with('.')).collect();
    let th = macros.iter().position(|l| l.starts_with(".TH ")).unwrap();
    let name_at = macros.iter().position(|l| *l == ".SH NAME");
    let synopsis_at = macros.iter().position(|l| *l == ".SH SYNOPSIS");
    assert!(
        matches!((name_at, synopsis_at), (Some(n), Some(s)) if th < n && n < s),
        "{}: .TH, NAME, SYNOPSIS out of place",
        path.display()
    );
    // roff escapes the dashes of the page's own name under NAME.
    assert!(
        page.contains(&format!(".SH NAME\n{} \\- ", name.replace('-', "\\-"))),
        "{}: NAME does not name the command",
        path.display()
    );
}

#[test]
fn man_writes_a_roff_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man/pages");
    let out = Command::new(BIN)
        .arg("man")
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let mut expected: BTreeSet<String> = command_paths()
        .iter()
        .map(|path| format!("homestak-{}.1", path.join("-")))
        .collect();
    expected.insert("homestak.1".into());
    let written: BTreeSet<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(written, expected);
    assert!(written.contains("homestak-config-list.1"), "{written:?}");
    for name in &written {
        assert_roff_page(&out_dir.join(name));
    }
    let listed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(listed.lines().count(), written.len(), "{listed}");

    // man-db renders it without a groff warning, where it is installed.
    let has_man = Command::new("man")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_man {
        eprintln!("man -l: SKIPPED, man (man-db) is not installed");
        return;
    }
    let out = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(out_dir.join("homestak-serve.1"))
        .env("MANWIDTH", "80")
        .env_remove("MAN_KEEP_FORMATTING")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(out.stderr.is_empty(), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    for heading in ["NAME", "SYNOPSIS", "OPTIONS"] {
        assert!(shown.lines().any(|l| l == heading), "{shown}");
    }
    assert!(shown.contains("homestak serve"), "{shown}");
}
