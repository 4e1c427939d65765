//! The host lease as a user meets it: `reconcile --once` against a host
//! another homestak holds says who holds it, fails at once with
//! `--no-wait`, gives up after `--lease-timeout`, and stops on SIGTERM
//! while it waits (exit 130), having changed nothing.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use homestak_base::time::Timestamp;
use homestak_engine::hostlease::{Holder, Record, State};
use serde_json::Value;

use crate::support::{BIN, demo_sim, text};

fn reconcile(site: &Path, dir: &Path, extra: &[&str]) -> Command {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests-examples/demo-flat.yaml");
    let mut command = Command::new(BIN);
    command
        .arg("--site-config")
        .arg(site)
        .args(["--json", "reconcile", "--once", "--manifest-file"])
        .arg(&manifest)
        .args(["-H", "pve", "--report-dir"])
        .arg(dir.join("reports"))
        .args(extra)
        .env("HOMESTAK_STATE_DIR", dir.join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn client() -> reqwest::Client {
    homestak_tls::install_crypto_provider();
    reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap()
}

async fn api(info: &Value, method: reqwest::Method, path: &str, form: &[(&str, &str)]) -> Value {
    let url = format!(
        "{}/api2/json{path}",
        info["url"].as_str().unwrap().trim_end_matches('/')
    );
    let token = format!("PVEAPIToken={}", info["token"].as_str().unwrap());
    let request = client()
        .request(method.clone(), url)
        .header("Authorization", token);
    let request = if method == reqwest::Method::GET {
        request.query(form)
    } else {
        request.form(form)
    };
    let answer = request.send().await.unwrap();
    assert!(answer.status().is_success(), "{path}: {}", answer.status());
    answer.json().await.unwrap()
}

/// A `serve` on another machine holds the lease for ten more minutes.
async fn hold_elsewhere(info: &Value) {
    let now = Timestamp::now();
    let record = Record {
        state: State::Held,
        holder: Holder {
            command: Some("serve".into()),
            host: "build-02.example".into(),
            pid: 777,
            state_dir: Some("/var/lib/homestak".into()),
            version: Some("0.0.9".into()),
            nonce: "feedface".into(),
            machine: Some("another-machine".into()),
            boot: Some("another-boot".into()),
            pid_start: Some(1),
        },
        acquired: now,
        renewed: now,
        expires: now.plus(Duration::from_secs(600)),
    };
    let notes = format!("Rack 2: keep.\n{}", record.render());
    api(
        info,
        reqwest::Method::PUT,
        "/nodes/pve/config",
        &[("description", &notes)],
    )
    .await;
}

async fn vm_count(info: &Value) -> usize {
    let body = api(
        info,
        reqwest::Method::GET,
        "/cluster/resources",
        &[("type", "vm")],
    )
    .await;
    body["data"].as_array().unwrap().len()
}

const HOLDER: &str =
    "`serve` (pid 777 on build-02.example, state dir /var/lib/homestak, homestak 0.0.9)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_host_makes_reconcile_wait_naming_the_holder_or_fail_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_sim, site, info) = demo_sim(dir.path(), "0.01", None);
    hold_elsewhere(&info).await;

    // --no-wait: fails at once, naming the holder and when it lapses.
    let out = reconcile(&site, dir.path(), &["--no-wait"])
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("host pve is being converged by another homestak"),
        "{all}"
    );
    assert!(all.contains(HOLDER), "{all}");

    // --lease-timeout: says it waits, then gives up with the same words.
    let out = reconcile(&site, dir.path(), &["--lease-timeout", "1s"])
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("waiting for host pve:"), "{all}");
    assert!(all.contains("still after waiting 1s"), "{all}");

    // Waiting (the default 5 min), SIGTERM stops it: exit 130, a report
    // that says so, nothing created.
    let mut child = reconcile(&site, dir.path(), &[]).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let waiting = loop {
        let line = lines.next().expect("stderr open").unwrap();
        if line.starts_with("waiting for host pve:") {
            break line;
        }
    };
    assert!(waiting.contains(HOLDER), "{waiting}");
    assert!(waiting.contains("--no-wait"), "{waiting}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(130), "{all}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["success"], false, "{report:#}");
    assert!(
        report["error"]
            .as_str()
            .unwrap_or_default()
            .contains("interrupted while waiting for the lease of host pve"),
        "{report:#}"
    );
    assert_eq!(report["context"]["dry_run"], Value::Null, "{report:#}");
    assert_eq!(vm_count(&info).await, 0, "nothing was created");
    // The holder's lease and the user's notes are as they were.
    let config = api(&info, reqwest::Method::GET, "/nodes/pve/config", &[]).await;
    let notes = config["data"]["description"].as_str().unwrap();
    assert!(notes.starts_with("Rack 2: keep.\n"), "{notes}");
    assert!(notes.contains("nonce: feedface"), "{notes}");
}
