//! What the binary's process tests share: the binary, a child process
//! killed when the test ends, and `homestak sim` started on a scratch copy
//! of demo/site-config.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_homestak");

/// A child process, killed and reaped when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Copies the directory tree `from` to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `homestak sim` at `time_scale` (with the simulator config `config`, if
/// any) on a scratch copy of demo/site-config under `dir`, once it is
/// ready: the simulator, the site-config and the ready file's contents.
pub fn demo_sim(dir: &Path, time_scale: &str, config: Option<&Path>) -> (Guard, PathBuf, Value) {
    let site = dir.join("site-config");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/site-config"),
        &site,
    );
    let ready = dir.join("ready.json");
    let mut command = Command::new(BIN);
    command.arg("--site-config").arg(&site).args([
        "sim",
        "--listen",
        "127.0.0.1:0",
        "--time-scale",
        time_scale,
    ]);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let child = command
        .arg("--ready-file")
        .arg(&ready)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sim = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    // The ready file is written whole once the simulator serves.
    let info = loop {
        assert!(Instant::now() < deadline, "simulator never became ready");
        if let Ok(bytes) = std::fs::read(&ready)
            && let Ok(info) = serde_json::from_slice::<Value>(&bytes)
        {
            break info;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (sim, site, info)
}

/// A finished command's exit status and output, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Starts `homestak serve` on 127.0.0.1 (a free port, no watching) for
/// `site` with state directory `state`, plus `extra` arguments and `env`;
/// waits for its ready file and returns the guard and that file's JSON
/// (`url`, `fingerprint`, …).
pub fn start_serve(
    site: &Path,
    state: &Path,
    extra: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
) -> (Guard, Value) {
    let ready = state.with_extension("ready.json");
    let mut command = Command::new(BIN);
    command
        .arg("--site-config")
        .arg(site)
        .args(["serve", "--bind", "127.0.0.1", "--port", "0", "--no-watch"])
        .arg("--state-dir")
        .arg(state)
        .arg("--ready-file")
        .arg(&ready)
        .args(extra)
        .env_remove("HOMESTAK_REPO_TOKEN");
    for (k, v) in env {
        command.env(k, v);
    }
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(120);
    let info = loop {
        assert!(
            Instant::now() < deadline,
            "homestak serve never became ready"
        );
        if let Ok(text) = std::fs::read_to_string(&ready)
            && let Ok(info) = serde_json::from_str::<Value>(&text)
        {
            break info;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (guard, info)
}

/// A daemon's report of `manifest` from `GET /v1/status` (`Null` while it
/// does not answer or has none).
pub async fn manifest_status(
    client: &reqwest::Client,
    url: &str,
    manifest: &str,
    token: &str,
) -> serde_json::Value {
    let Ok(answer) = client
        .get(format!("{url}/v1/status?manifest={manifest}"))
        .bearer_auth(token)
        .send()
        .await
    else {
        return serde_json::Value::Null;
    };
    let body: serde_json::Value = answer.json().await.unwrap_or_default();
    body["manifests"][0].clone()
}
