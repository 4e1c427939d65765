//! SIGTERM during `homestak reconcile --once` winds the run down instead of
//! killing it mid-step: exit 130, the store still opens, the report says
//! the run was interrupted, and the next run converges without making any
//! VM twice. A second signal stops at once.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{BIN, Guard, demo_sim, text};

/// `homestak sim` in real time with slow tasks (a create takes 3 s), on a
/// scratch copy of demo/site-config; `answer` seconds per API answer.
/// Returns the simulator, the site and the ready file's contents.
fn slow_sim(dir: &Path, answer: f64) -> (Guard, PathBuf, Value) {
    let config = dir.join("sim.yaml");
    std::fs::write(
        &config,
        format!(
            "ssh_port: 2222\nlatency: {{create: 3.0, start: 2.0, config: 0.5, answer: {answer}}}\n"
        ),
    )
    .unwrap();
    demo_sim(dir, "1", Some(&config))
}

fn reconcile(site: &Path, state: &Path, reports: &Path) -> Command {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests-examples/demo-flat.yaml");
    let mut command = Command::new(BIN);
    command
        .arg("--site-config")
        .arg(site)
        .args(["--json", "reconcile", "--once"])
        .arg("--manifest-file")
        .arg(&manifest)
        .args(["-H", "pve", "--report-dir"])
        .arg(reports)
        .env("HOMESTAK_STATE_DIR", state)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The VMs named `demo-*` the simulator holds.
async fn demo_vms(info: &Value) -> Vec<String> {
    homestak_tls::install_crypto_provider();
    let client = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let url = format!(
        "{}/api2/json/cluster/resources?type=vm",
        info["url"].as_str().unwrap().trim_end_matches('/')
    );
    let body: Value = client
        .get(url)
        .header(
            "Authorization",
            format!("PVEAPIToken={}", info["token"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut names: Vec<String> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|vm| vm["name"].as_str())
        .filter(|name| name.starts_with("demo-"))
        .map(String::from)
        .collect();
    names.sort();
    names
}

/// Waits until the simulator has been asked to create a VM.
async fn until_creating(info: &Value) {
    homestak_tls::install_crypto_provider();
    let client = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let url = format!(
        "{}/_sim/requests",
        info["url"].as_str().unwrap().trim_end_matches('/')
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body: Value = client
            .get(&url)
            .header(
                "Authorization",
                format!("PVEAPIToken={}", info["token"].as_str().unwrap()),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if body["data"]["requests"]["POST /nodes/{node}/qemu"].as_u64() > Some(0) {
            return;
        }
        assert!(Instant::now() < deadline, "no create within the hang guard");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_winds_a_converge_down_and_the_next_run_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (state, reports) = (dir.path().join("state"), dir.path().join("reports"));
    let (_sim, site, info) = slow_sim(dir.path(), 0.0);

    let child = reconcile(&site, &state, &reports).spawn().unwrap();
    // Mid-run: planning is quick, the creates take seconds.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal(&child, "TERM");
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the wind-down took {:?}",
        started.elapsed()
    );
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(report["success"], false, "{report:#}");
    assert!(
        report.to_string().contains("interrupted"),
        "the report names the interruption: {report:#}"
    );
    let files: Vec<String> = std::fs::read_dir(&reports)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with(".failed.json")),
        "{files:?}"
    );
    // The store opens (the run closed it properly) and the next run
    // converges what the first started, making no VM twice.
    let out = reconcile(&site, &state, &reports).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(demo_vms(&info).await, ["demo-1", "demo-2", "demo-3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (state, reports) = (dir.path().join("state"), dir.path().join("reports"));
    // Every answer takes a second: the steps in flight at the first
    // signal take that long to reach their safe point.
    let (_sim, site, info) = slow_sim(dir.path(), 1.0);
    let mut child = reconcile(&site, &state, &reports).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    // Once a create is in flight (the host lease and the plan take a few
    // of those one-second answers first).
    until_creating(&info).await;
    signal(&child, "TERM");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.iter().any(|l: &String| l.starts_with("interrupted:")) {
        assert!(Instant::now() < deadline, "no wind-down message: {seen:?}");
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
            seen.push(line);
        }
    }
    signal(&child, "INT");
    let out = child.wait_with_output().unwrap();
    reader.join().unwrap();
    seen.extend(lines.try_iter());
    assert_eq!(out.status.code(), Some(130), "{}\n{seen:?}", text(&out));
    assert!(
        seen.iter().any(|l| l.starts_with("stopped at once")),
        "{seen:?}"
    );
    assert!(out.stdout.is_empty(), "no report after a hard stop");
    // Even so, the next run converges without duplicates.
    let out = reconcile(&site, &state, &reports).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(demo_vms(&info).await, ["demo-1", "demo-2", "demo-3"]);
}
