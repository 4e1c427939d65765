//! The real `homestak serve` process and real signals: it prints its
//! fingerprint and writes the ready file, SIGHUP reloads the site-config
//! (a spec edited on disk is served only after it), and SIGTERM stops it
//! cleanly (exit 0, ready file and temporary repos removed, lease free).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::daemon_support::*;
use serde_json::Value;

fn signal(pid: u32, name: &str) {
    // The shell's builtin `kill`: no procps needed on a minimal machine.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("kill -{name} {pid}"))
        .status()
        .expect("sh runs");
    assert!(status.success(), "kill -{name} {pid}");
}

async fn wait_for_file(path: &Path) -> String {
    for _ in 0..1200 {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.is_empty()
        {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never appeared", path.display());
}

async fn timezone(client: &reqwest::Client, url: &str) -> String {
    let body: Value = client
        .get(format!("{url}/spec/base"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["config"]["timezone"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_sigterm_stops_cleanly() {
    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    site_config(site.path());
    let ready = scratch.path().join("ready.json");
    let tokens = scratch.path().join("tokens.yaml");
    std::fs::write(
        &tokens,
        format!("tokens:\n  - name: reader\n    scope: read\n    token: {READ_TOKEN}\n"),
    )
    .unwrap();

    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_homestak"))
        .arg("--site-config")
        .arg(site.path())
        .args(["serve", "--bind", "127.0.0.1", "--port", "0", "--no-watch"])
        .arg("--state-dir")
        .arg(state.path())
        .arg("--ready-file")
        .arg(&ready)
        .arg("--api-token-file")
        .arg(&tokens)
        .env("HOMESTAK_REPO_TOKEN", REPO_TOKEN)
        .env("HOMESTAK_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("homestak serve starts");
    let pid = child.id().expect("pid");

    let info: Value = serde_json::from_str(&wait_for_file(&ready).await).unwrap();
    let url = info["url"].as_str().unwrap().to_string();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let fingerprint: homestak_tls::Fingerprint =
        info["fingerprint"].as_str().unwrap().parse().unwrap();
    assert_eq!(info["pid"], pid);
    let client = client(fingerprint);
    assert_eq!(timezone(&client, &url).await, "UTC");

    // Edited on disk: not served until SIGHUP.
    std::fs::write(
        site.path().join("site.yaml"),
        "defaults:\n  timezone: Europe/Paris\n  domain: test.invalid\n",
    )
    .unwrap();
    assert_eq!(timezone(&client, &url).await, "UTC", "cached until reload");
    signal(pid, "HUP");
    let mut reloaded = false;
    for _ in 0..1200 {
        if timezone(&client, &url).await == "Europe/Paris" {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reloaded, "SIGHUP did not reload the site-config");
    let events: Value = client
        .get(format!("{url}/v1/events"))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "reload"),
        "{events:#}"
    );
    assert!(
        std::fs::read_dir(state.path())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("repos.")),
        "repos are prepared while serving"
    );

    signal(pid, "TERM");
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("exits after SIGTERM (hang guard)")
        .expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains(&format!("certificate SHA-256 fingerprint: {fingerprint}")),
        "{stdout}"
    );
    assert!(stderr.contains("SIGHUP"), "{stderr}");
    assert!(stderr.contains("shutting down"), "{stderr}");
    assert!(!ready.exists(), "the ready file is removed on exit");
    let leftovers: Vec<_> = std::fs::read_dir(state.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("repos."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    wait_lease_free(state.path()).await;
    for secret in SECRETS {
        assert!(!stderr.contains(secret) && !stdout.contains(secret));
    }
}
