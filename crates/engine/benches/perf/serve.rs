//! `homestak serve` as a child of the bench (P3's GitOps loop, P4's idle
//! daemon): started on loopback with its own state dir, killed and reaped
//! when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running `homestak serve`.
pub struct Serve {
    pub child: Child,
    ready: PathBuf,
}

impl Serve {
    /// Starts `bin serve` for `site` with `state` as its state dir, plus
    /// `extra` serve flags.
    pub fn spawn(bin: &Path, site: &Path, state: &Path, extra: &[&str]) -> Serve {
        let ready = state.with_extension("ready.json");
        let child = Command::new(bin)
            .arg("--site-config")
            .arg(site)
            .args(["serve", "--bind", "127.0.0.1", "--port", "0"])
            .args(extra)
            .arg("--state-dir")
            .arg(state)
            .arg("--ready-file")
            .arg(&ready)
            .env_remove("HOMESTAK_REPO_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("homestak serve starts");
        Serve { child, ready }
    }

    /// Its ready file, once written whole; panics when it exited first.
    pub fn ready_info(&mut self) -> Option<serde_json::Value> {
        if let Some(status) = self.child.try_wait().expect("wait") {
            panic!("homestak serve exited before it was ready: {status}");
        }
        let text = std::fs::read_to_string(&self.ready).ok()?;
        serde_json::from_str(&text).ok()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
