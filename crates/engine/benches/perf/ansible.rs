//! P1 Ansible: the same N VMs made by a `community.proxmox.proxmox_kvm`
//! playbook (ansible_create.yml beside this file) on the same kind of fresh
//! simulator, one inventory host per VM, run locally with F forks.
//!
//! Ansible comes from the project's venv (`make venv`): `BENCH_VENV`, else
//! `.venv` at the workspace root. Its files stay in the run's temporary
//! directory (as conformance/ansible_lifecycle.py keeps them), and TLS is
//! verified against the simulator's certificate.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::world::{self, is_storage_lock_timeout};

const PLAYBOOK: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/benches/perf/ansible_create.yml"
);

/// The venv's directory when it has ansible-playbook.
pub fn venv() -> Option<PathBuf> {
    let dir = std::env::var_os("BENCH_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv"));
    dir.join("bin/ansible-playbook").is_file().then_some(dir)
}

/// One playbook run.
pub struct Run {
    pub forks: usize,
    pub wall: Duration,
    /// Hosts the recap shows failed or unreachable.
    pub failed: usize,
    /// Failed tasks whose error was a storage-lock timeout.
    pub lock_timeouts: usize,
    /// ansible-playbook exited 0 and every host is in the recap.
    pub complete: bool,
}

impl Run {
    pub fn clean(&self) -> bool {
        self.complete && self.failed == 0
    }
}

/// Runs the playbook for `vms` VMs with `forks` forks on a fresh simulator
/// at time scale `scale`.
pub async fn run(venv: &Path, vms: usize, scale: f64, forks: usize) -> Run {
    let w = world::fresh(scale).await;
    let info = w.sim.ready_info();
    let (user_token, secret) = info.token.rsplit_once('=').expect("token id=secret");
    let (user, token_name) = user_token.split_once('!').expect("user!token");
    let url: reqwest::Url = info.url.parse().expect("simulator url");
    let work = w.dir.path().join("ansible");
    std::fs::create_dir_all(work.join("home")).expect("ansible dir");
    let key = homestak_ssh::Identity::generate_to(&work.join("id_ed25519")).expect("key");
    let vars = serde_json::json!({
        "api_host": url.host_str().expect("host"),
        "api_port": url.port().expect("port"),
        "api_user": user,
        "api_token_id": token_name,
        "api_token_secret": secret,
        "node": info.node,
        "sshkey": key.public_key_openssh(),
    });
    std::fs::write(work.join("vars.json"), vars.to_string()).expect("vars");
    let mut inventory = String::from("[vms]\n");
    for i in 0..vms {
        inventory.push_str(&format!("vm-{i:04} vmid={}\n", 200 + i));
    }
    std::fs::write(work.join("inventory.ini"), inventory).expect("inventory");
    let config = work.join("home/ansible.cfg");
    std::fs::write(&config, "[defaults]\n").expect("ansible.cfg");
    let python = venv.join("bin/python");
    let mut command = Command::new(venv.join("bin/ansible-playbook"));
    command
        .arg("-i")
        .arg(work.join("inventory.ini"))
        .arg("-e")
        .arg(format!("@{}", work.join("vars.json").display()))
        .arg("--forks")
        .arg(forks.to_string())
        .arg(PLAYBOOK)
        .current_dir(&work);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ANSIBLE_") {
            command.env_remove(k);
        }
    }
    command
        .env("ANSIBLE_CONFIG", &config)
        .env("ANSIBLE_HOME", work.join("home"))
        .env("ANSIBLE_LOCAL_TEMP", work.join("home/tmp"))
        .env("ANSIBLE_REMOTE_TEMP", work.join("home/remote-tmp"))
        .env("ANSIBLE_PYTHON_INTERPRETER", &python)
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_NOCOWS", "1")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
        .env("ANSIBLE_LOCALHOST_WARNING", "0")
        .env("ANSIBLE_HOST_KEY_CHECKING", "0")
        .env("REQUESTS_CA_BUNDLE", &w.cert)
        .env_remove("CURL_CA_BUNDLE");
    crate::progress(&format!(
        "ansible: {vms} VMs, forks {forks}, time scale {scale}"
    ));
    let started = Instant::now();
    // The simulator serves on this runtime: wait for the child off it.
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("ansible-playbook runs");
    let wall = started.elapsed();
    w.shutdown().await;
    let text = String::from_utf8_lossy(&out.stdout);
    let (recap_hosts, failed) = recap(&text);
    let lock_timeouts = text
        .lines()
        .filter(|l| l.starts_with("fatal: [") && is_storage_lock_timeout(l))
        .count();
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        eprintln!(
            "ansible-playbook output:\n{}\n{}",
            text.replace(secret, "<secret>"),
            String::from_utf8_lossy(&out.stderr).replace(secret, "<secret>")
        );
    }
    Run {
        forks,
        wall,
        failed,
        lock_timeouts,
        complete: out.status.success() && recap_hosts == vms,
    }
}

/// Hosts in the PLAY RECAP, and how many of them failed or were
/// unreachable.
fn recap(text: &str) -> (usize, usize) {
    let Some((_, tail)) = text.split_once("PLAY RECAP") else {
        return (0, 0);
    };
    let mut hosts = 0;
    let mut failed = 0;
    for line in tail.lines() {
        let Some((_, counts)) = line.split_once(" : ") else {
            continue;
        };
        hosts += 1;
        let bad = counts.split_whitespace().any(|kv| {
            kv.split_once('=').is_some_and(|(k, v)| {
                (k == "failed" || k == "unreachable") && v.parse::<u64>().is_ok_and(|n| n > 0)
            })
        });
        if bad {
            failed += 1;
        }
    }
    (hosts, failed)
}

/// Forks 10, then fewer (`forks`, first to last) until a run completes
/// with no failure: every run made, the clean one last if any.
pub async fn search(venv: &Path, vms: usize, scale: f64, forks: &[usize]) -> Vec<Run> {
    let mut runs = Vec::new();
    for &f in forks {
        let r = run(venv, vms, scale, f).await;
        let clean = r.clean();
        runs.push(r);
        if clean {
            break;
        }
    }
    runs
}
