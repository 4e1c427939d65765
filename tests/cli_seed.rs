//! The iac-driver verbs through the real binary against `homestak sim`:
//! `test` (create, verify SSH, destroy) with `--json-output` in the seed's
//! schema and report files; `create --dry-run` changes nothing; `destroy`
//! refuses to run unattended without `--yes`; exit codes of `status`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::support::{BIN, Guard, demo_sim, text};

/// A scratch copy of demo/site-config with `homestak sim` pointed at it.
fn start(dir: &Path) -> (Guard, PathBuf) {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/sim.yaml");
    let (sim, site, _) = demo_sim(dir, "0.01", Some(&config));
    (sim, site)
}

fn homestak(site: &Path, state: &Path, args: &[&str]) -> Output {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests-examples/demo-flat.yaml");
    Command::new(BIN)
        .arg("--site-config")
        .arg(site)
        .args(args)
        .arg("--manifest-file")
        .arg(&manifest)
        .args(["-H", "pve"])
        .env("HOMESTAK_STATE_DIR", state)
        // Runs without --report-dir write reports into the state directory.
        .current_dir(state.parent().unwrap_or(state))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn test_verb_creates_verifies_ssh_and_destroys() {
    homestak_tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let reports = dir.path().join("reports");
    let (_sim, site) = start(dir.path());

    // Nothing exists yet: status reports three missing nodes, exit 2.
    let out = homestak(&site, &state, &["status"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // A dry run plans three creates and changes nothing.
    let out = homestak(&site, &state, &["create", "--dry-run", "--json-output"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(plan["context"]["plan"]["summary"]["create"], 3, "{plan:#}");
    let out = homestak(&site, &state, &["status"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "dry run changed the world: {}",
        text(&out)
    );
    // A dry run never loads the SSH key, not even for `test`, which
    // checks SSH: the key is read only once a plan is to be applied.
    let missing = dir.path().join("no-such-key");
    let out = homestak(
        &site,
        &state,
        &["test", "--dry-run", "--ssh-key", missing.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let out = homestak(
        &site,
        &state,
        &[
            "test",
            "--json-output",
            "--report-dir",
            reports.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    for key in [
        "scenario",
        "success",
        "duration_seconds",
        "phases",
        "context",
    ] {
        assert!(report.get(key).is_some(), "{key} missing: {report:#}");
    }
    // `error` only on failure, as the Python tool's schema says.
    assert_eq!(report.get("error"), None, "{report:#}");
    assert_eq!(report["scenario"], "test");
    assert_eq!(report["success"], true, "{report:#}");
    let phases: Vec<String> = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    for node in ["demo-1", "demo-2", "demo-3"] {
        assert!(phases.contains(&format!("{node}:wait_ssh")), "{phases:?}");
        assert!(
            phases.contains(&format!("destroy/{node}:destroy_vm")),
            "{phases:?}"
        );
    }
    let files: Vec<String> = std::fs::read_dir(&reports)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with(".passed.json"))
            && files.iter().any(|f| f.ends_with(".passed.md")),
        "{files:?}"
    );

    // Everything is gone again.
    let out = homestak(&site, &state, &["plan", "--json"]);
    let plan: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(plan["summary"]["create"], 3, "{plan:#}");

    // destroy without --yes and without a terminal refuses. The create
    // before it puts each VM's vmid and address in the context, the first
    // as vm_id / vm_ip, and --vm-id picks a node's vmid.
    let out = homestak(
        &site,
        &state,
        &["create", "--json-output", "--vm-id", "demo-2=4242"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let context = &report["context"];
    assert_eq!(context["demo-2_vmid"], 4242, "{report:#}");
    // Without --report-dir, reports go to the state directory.
    let kept: Vec<String> = std::fs::read_dir(state.join("reports"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    assert!(kept.iter().any(|f| f.ends_with(".passed.json")), "{kept:?}");
    for node in ["demo-1", "demo-2", "demo-3"] {
        let ip = context[format!("{node}_ip")].as_str().unwrap_or_default();
        assert!(ip.starts_with("127."), "{node}: {report:#}");
        assert!(context[format!("{node}_vmid")].is_u64(), "{report:#}");
    }
    assert_eq!(context["vm_id"], context["demo-1_vmid"], "{report:#}");
    assert_eq!(context["vm_ip"], context["demo-1_ip"], "{report:#}");
    let out = homestak(&site, &state, &["create", "--vm-id", "nope=4243"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no node nope"),
        "{}",
        text(&out)
    );
    let out = homestak(&site, &state, &["destroy", "--vm-id", "demo-2=4242"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--yes"),
        "{}",
        text(&out)
    );
    let out = homestak(&site, &state, &["status", "--vm-id", "demo-2=4242"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "destroy without --yes touched the world: {}",
        text(&out)
    );
    let out = homestak(
        &site,
        &state,
        &["destroy", "--yes", "--vm-id", "demo-2=4242"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// A failure before the run starts (a host the site-config does not know)
/// still prints the JSON document and writes the report files.
#[test]
fn a_failure_before_the_run_still_reports() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    crate::support::copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/site-config"),
        &site,
    );
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests-examples/demo-flat.yaml");
    for verb in [&["create"][..], &["test"], &["destroy", "--yes"]] {
        let reports = dir.path().join(format!("reports-{}", verb[0]));
        let out = Command::new(BIN)
            .arg("--site-config")
            .arg(&site)
            .args(verb)
            .args(["--json-output", "-H", "no-such-host"])
            .arg("--manifest-file")
            .arg(&manifest)
            .arg("--report-dir")
            .arg(&reports)
            .env("HOMESTAK_STATE_DIR", dir.path().join("state"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let report: Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
        assert_eq!(report["scenario"], verb[0], "{report:#}");
        assert_eq!(report["success"], false, "{report:#}");
        let error = report["error"].as_str().unwrap_or_default();
        assert!(error.contains("no-such-host"), "{report:#}");
        let files: Vec<String> = std::fs::read_dir(&reports)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert!(
            files.iter().any(|f| f.ends_with(".failed.json"))
                && files.iter().any(|f| f.ends_with(".failed.md")),
            "{files:?}"
        );
    }
}

/// The verbs run the preflight checks first: a site-config whose secrets
/// are still sops-encrypted stops `create` before anything changes, with
/// the check and its fix in the report; `--skip-preflight` goes ahead.
#[test]
fn the_verbs_run_preflight_first_unless_skipped() {
    homestak_tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (_sim, site) = start(dir.path());
    let secrets = site.join("secrets.yaml");
    let old = std::fs::read_to_string(&secrets).unwrap();
    std::fs::write(&secrets, format!("{old}\nsops:\n  version: 3.9.0\n")).unwrap();
    let out = homestak(&site, &state, &["create", "--json-output"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let error = report["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("preflight failed")
            && error.contains("site_init")
            && error.contains("--skip-preflight"),
        "{report:#}"
    );
    assert_eq!(
        report["phases"].as_array().map(Vec::len),
        Some(0),
        "nothing ran"
    );
    let out = homestak(&site, &state, &["status"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "nothing was created: {}",
        text(&out)
    );
    let out = homestak(&site, &state, &["create", "--skip-preflight"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = homestak(&site, &state, &["destroy", "--yes", "--skip-preflight"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
