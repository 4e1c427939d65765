//! `homestak preflight` as users run it, against `homestak sim` on the demo
//! site-config: exit 0 and every check passed on a ready site, exit 1 with
//! the failed check and its fix when a key is bad or the host unknown.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::support::{BIN, demo_sim, text};

fn preflight(site: &Path, state: &Path, args: &[&str]) -> Output {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests-examples/demo-flat.yaml");
    Command::new(BIN)
        .arg("--site-config")
        .arg(site)
        .arg("preflight")
        .args(args)
        .arg("--manifest-file")
        .arg(&manifest)
        .env("HOMESTAK_STATE_DIR", state)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn failed(out: &Output) -> Vec<String> {
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn preflight_passes_a_ready_host_and_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/sim.yaml");
    let (_sim, site, _) = demo_sim(dir.path(), "0.01", Some(&config));
    let state = dir.path().join("state");

    let out = preflight(&site, &state, &["-H", "pve", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(failed(&out).is_empty(), "{}", text(&out));
    let human = preflight(&site, &state, &["-H", "pve"]);
    assert_eq!(human.status.code(), Some(0), "{}", text(&human));
    assert!(
        String::from_utf8_lossy(&human.stdout).contains("preflight passed for host pve"),
        "{}",
        text(&human)
    );

    // A mistyped key in secrets.yaml: exit 1, the key named, the fix given.
    let secrets = site.join("secrets.yaml");
    let good = std::fs::read_to_string(&secrets).unwrap();
    let broken = if good.contains("ssh_keys: {}") {
        good.replace(
            "ssh_keys: {}",
            "ssh_keys:\n  laptop: \"ssh-ed25519 AAAAoops me@laptop\"",
        )
    } else {
        good.replace(
            "ssh_keys:\n",
            "ssh_keys:\n  laptop: \"ssh-ed25519 AAAAoops me@laptop\"\n",
        )
    };
    std::fs::write(&secrets, broken).unwrap();
    let out = preflight(&site, &state, &["-H", "pve", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(failed(&out), ["ssh_keys"], "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ssh_keys.laptop") && stdout.contains("fix or remove laptop"),
        "{stdout}"
    );
    std::fs::write(&secrets, &good).unwrap();

    // An unknown host: site_init fails with the paths tried.
    let out = preflight(&site, &state, &["-H", "ghost"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FAIL site_init") && stdout.contains("nodes/ghost.yaml"),
        "{}",
        text(&out)
    );
    // Nothing else can be checked there, so nothing else fails.
    assert!(!stdout.contains("FAIL images"), "{}", text(&out));
}
