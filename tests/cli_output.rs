//! What reaches a non-terminal stderr (journald, CI logs): log lines
//! without ANSI colour escapes; plan and status colours on a pipe only
//! with `CLICOLOR_FORCE`, never with `NO_COLOR`; `status --watch`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{BIN, Guard, demo_sim, text};

#[test]
fn no_colour_escape_reaches_a_stderr_that_is_not_a_terminal() {
    let site = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/site-config");
    let out = Command::new(BIN)
        .arg("--site-config")
        .arg(&site)
        .args(["manifest", "list"])
        .env("HOMESTAK_LOG", "trace")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TRACE"),
        "trace logging produced no line: {stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "escape codes on a pipe: {stderr:?}"
    );
}

/// `homestak ARGS` on the demo-flat manifest and host `pve` of `site`,
/// with `env` set and the colour variables otherwise unset.
pub(crate) fn demo_command(
    site: &Path,
    state: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Command {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests-examples/demo-flat.yaml");
    let mut command = Command::new(BIN);
    command
        .arg("--site-config")
        .arg(site)
        .args(args)
        .arg("--manifest-file")
        .arg(&manifest)
        .args(["-H", "pve"])
        .env("HOMESTAK_STATE_DIR", state)
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("CLICOLOR")
        .stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    command
}

#[test]
fn plan_and_status_colour_a_pipe_only_with_clicolor_force_and_never_with_no_color() {
    homestak_tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/sim.yaml");
    let (_sim, site, _) = demo_sim(dir.path(), "0.01", Some(&config));
    let state = dir.path().join("state");
    for (args, code, heading) in [
        (&["plan"][..], 0, "Plan for manifest"),
        (&["status"][..], 2, "not in sync"),
    ] {
        for (env, colour) in [
            (&[][..], false),
            (&[("CLICOLOR_FORCE", "1")][..], true),
            (&[("NO_COLOR", "1")][..], false),
            (&[("NO_COLOR", "1"), ("CLICOLOR_FORCE", "1")][..], false),
        ] {
            let out = demo_command(&site, &state, args, env).output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(code),
                "{args:?} {env:?}: {}",
                text(&out)
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.contains(heading), "{args:?} {env:?}: {stdout}");
            assert_eq!(
                stdout.contains("\u{1b}["),
                colour,
                "{args:?} {env:?}: colour on a pipe should be {colour}: {stdout:?}"
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.contains('\u{1b}'), "{args:?} {env:?}: {stderr:?}");
        }
    }
}

/// Lines of a child's stdout, as they come.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads lines into `seen` until one contains `needle`.
fn wait_for(rx: &std::sync::mpsc::Receiver<String>, seen: &mut Vec<String>, needle: &str) {
    // A hang guard, not a timing assertion.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return;
                }
            }
            Err(e) => panic!("no line with {needle:?} ({e}); saw:\n{}", seen.join("\n")),
        }
    }
}

#[test]
fn status_watch_prints_the_report_again_when_the_world_changes_and_ends_on_ctrl_c() {
    homestak_tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/sim.yaml");
    let (_sim, site, _) = demo_sim(dir.path(), "0.01", Some(&config));
    // The watch and the create keep separate stores: each holds its own
    // only while it reads or runs.
    let watch_state = dir.path().join("watch-state");
    let mut watch = Guard(
        demo_command(
            &site,
            &watch_state,
            &["status", "--watch", "--interval", "100ms"],
            &[],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let rx = lines_of(&mut watch.0);
    let mut seen = Vec::new();
    wait_for(&rx, &mut seen, "3 nodes not in sync");
    assert!(seen[0].starts_with("--- "), "{seen:#?}");

    let out = demo_command(
        &site,
        &dir.path().join("create-state"),
        &["create", "--skip-preflight"],
        &[],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    wait_for(&rx, &mut seen, "In sync.");
    let frames = seen.iter().filter(|l| l.starts_with("--- ")).count();
    let reports = seen.iter().filter(|l| l.starts_with("Manifest ")).count();
    assert!(frames >= 2 && frames == reports, "{seen:#?}");
    assert!(
        seen.iter().all(|l| !l.contains('\u{1b}')),
        "escapes on a pipe: {seen:#?}"
    );

    let pid = watch.0.id().to_string();
    let killed = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(killed.success());
    let status = watch.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "Ctrl-C ends a watch with exit 0");
}

#[test]
fn help_lists_examples_exit_codes_and_environment() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    for needed in [
        "Examples:",
        "homestak plan -M lab -H pve",
        "Exit codes:",
        "64   usage error",
        "130  interrupted",
        "Environment:",
        "HOMESTAK_STATE_DIR",
        "NO_COLOR",
    ] {
        assert!(help.contains(needed), "{needed:?} missing:\n{help}");
    }
    assert!(!help.contains('\u{1b}'), "escapes on a pipe: {help:?}");
    let out = Command::new(BIN)
        .args(["status", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--watch") && help.contains("2    drift"),
        "{help}"
    );
}
