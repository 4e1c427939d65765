//! `homestak adopt` through the real binary against `homestak sim`: a VM
//! made without homestak (as the Python iac-driver's OpenTofu leaves one)
//! is a conflict pointing to `adopt`; `--dry-run` changes nothing; without
//! `--yes` and without a terminal it refuses to ask; `--yes` adopts, and
//! the plan then sees the VM as ours.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

use crate::support::{BIN, demo_sim, text};

const MANIFEST: &str = r#"{"schema_version": 2, "name": "legacy",
  "nodes": [{"name": "legacy-1", "type": "vm", "preset": "vm-small", "image": "debian-12", "vmid": 99201}],
  "settings": {"verify_ssh": false}}"#;

fn homestak(site: &Path, state: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--site-config")
        .arg(site)
        .args(args)
        .args(["--manifest-json", MANIFEST, "-H", "pve"])
        .env("HOMESTAK_STATE_DIR", state)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A `/_sim` control request (loopback, the simulator's own certificate).
async fn control(info: &Value, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    homestak_tls::install_crypto_provider();
    let client = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let mut request = client
        .request(
            method,
            format!(
                "{}/_sim{path}",
                info["url"].as_str().unwrap().trim_end_matches('/')
            ),
        )
        .header(
            "Authorization",
            format!("PVEAPIToken={}", info["token"].as_str().unwrap()),
        );
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer: Value = request.send().await.unwrap().json().await.unwrap();
    answer["data"].clone()
}

fn plan_json(site: &Path, state: &Path) -> Value {
    let out = homestak(site, state, &["--json", "plan"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

#[tokio::test(flavor = "multi_thread")]
async fn adopt_asks_dry_runs_and_takes_over_a_vm_made_without_homestak() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (_sim, site, info) = demo_sim(dir.path(), "0.01", None);
    control(
        &info,
        reqwest::Method::POST,
        "/vms",
        Some(
            json!({"vmid": 99201, "name": "legacy-1", "cores": 1, "memory": 1024,
                    "tags": "tofu", "running": true, "disk_size": "8G"}),
        ),
    )
    .await;
    // The VM as the simulator shows it, less what time alone changes.
    let vm = || async {
        let mut view = control(&info, reqwest::Method::GET, "/vms/99201", None).await;
        view.as_object_mut().unwrap().remove("agent_ready");
        view
    };
    let before = vm().await;

    // The plan: a conflict that says what to do.
    let plan = plan_json(&site, &state);
    let node = &plan["nodes"][0];
    assert_eq!(node["action"], "conflict", "{plan:#}");
    let reason = node["reason"].as_str().unwrap();
    assert!(
        reason.contains("homestak adopt -M legacy -H pve"),
        "{reason}"
    );

    // --dry-run: the table, nothing written.
    let out = homestak(&site, &state, &["adopt", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("legacy-1") && shown.contains("adopt"),
        "{shown}"
    );
    assert_eq!(vm().await, before, "a dry run changed the VM");

    // Without --yes and without a terminal: refuses to ask.
    let out = homestak(&site, &state, &["adopt"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pass --yes"),
        "{}",
        text(&out)
    );
    assert_eq!(vm().await, before, "an unconfirmed adopt changed the VM");

    // --yes --json: adopted, and the plan sees it as ours.
    let out = homestak(&site, &state, &["--json", "adopt", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let result: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(result["rows"][0]["verdict"], "adopt", "{result:#}");
    assert_eq!(result["applied"][0]["result"], "adopted", "{result:#}");
    let after = vm().await;
    let tags = after["tags"].as_str().unwrap();
    assert!(tags.contains("tofu") && tags.contains("homestak"), "{tags}");
    assert_eq!(after["power"], before["power"]);
    let plan = plan_json(&site, &state);
    let action = plan["nodes"][0]["action"].as_str().unwrap();
    assert!(action == "update" || action == "no_op", "{plan:#}");
}
