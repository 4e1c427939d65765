//! Spec delivery end to end, through the real binary: `homestak sim`, a
//! real `homestak serve` answering `/spec/{identity}`, and `homestak
//! create` / `reconcile --once` converging a node with `spec:`.
//!
//! - pull: the VM fetches its spec from the daemon at first boot (over
//!   HTTPS, trusting the daemon's certificate given with `--spec-ca`), and
//!   `verify_spec` passes;
//! - push: `/etc/homestak/spec.json` arrives over SSH, and a second
//!   reconcile leaves it alone;
//! - a token the daemon refuses fails the pull at `verify_spec`, with a
//!   message that names the spec and server, never the token;
//! - `homestak scenario spec-vm-push-roundtrip`: provision_vm, verify_spec
//!   and destroy_vm pass, chained runs with `--context-file` find a
//!   tampered spec.json, and a spec the site lacks fails provision_vm.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use serde_json::Value;

use crate::daemon_support::{client, git};
use crate::support::{BIN, Guard, demo_sim, text};

const SITE_TOKEN: &str = "spec-test-site-token-8e21";
const WRONG_TOKEN: &str = "spec-test-wrong-token-5d07";

/// The simulator, the site-config, and a `homestak serve` on it.
struct World {
    _sim: Guard,
    _serve: Guard,
    site: PathBuf,
    /// The daemon's state directory (its `tls/daemon.crt`).
    serve_state: PathBuf,
    /// The CLI's own state directory.
    state: PathBuf,
    sim: Value,
    serve_url: String,
    serve: reqwest::Client,
    dir: tempfile::TempDir,
}

fn append(path: &Path, text: &str) {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    std::fs::write(path, format!("{old}\n{text}")).unwrap();
}

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Starts the world; `spec` is the v2/specs/web.yaml posture (`dev`:
/// network trust, `stage`: the site token).
fn start(posture: &str) -> World {
    homestak_tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/sim.yaml");
    let (sim_guard, site, sim) = demo_sim(dir.path(), "0.01", Some(&config));
    write(&site, "v2/postures/dev.yaml", "auth:\n  method: network\n");
    write(
        &site,
        "v2/postures/stage.yaml",
        "auth:\n  method: site_token\n",
    );
    write(
        &site,
        "v2/specs/web.yaml",
        &format!(
            "schema_version: 1\naccess:\n  posture: {posture}\nplatform:\n  packages: [curl, nginx]\n"
        ),
    );
    append(
        &site.join("secrets.yaml"),
        &format!(
            "auth:\n  site_token: \"{SITE_TOKEN}\"\npasswords:\n  vm_root: \"$6$spectest$HASHHASH\"\n"
        ),
    );
    write(&site, ".gitignore", "secrets.yaml\n");
    git(&site, &["init", "-q", "-b", "main"]);
    git(&site, &["add", "-A"]);
    git(&site, &["commit", "-q", "-m", "site-config"]);

    let serve_state = dir.path().join("serve-state");
    let tokens = dir.path().join("tokens.yaml");
    std::fs::write(
        &tokens,
        "tokens:\n  - name: reader\n    scope: read\n    token: spec-test-read-token\n",
    )
    .unwrap();
    let (serve_guard, info) = crate::support::start_serve(
        &site,
        &serve_state,
        &[std::ffi::OsStr::new("--api-token-file"), tokens.as_os_str()],
        &[("HOMESTAK_REPO_TOKEN", "spec-test-repo-token")],
    );
    let serve_url = info["url"].as_str().unwrap().to_string();
    let fingerprint: homestak_tls::Fingerprint =
        info["fingerprint"].as_str().unwrap().parse().unwrap();
    // The VMs fetch from this daemon (the CLI reads site.yaml per run).
    append(
        &site.join("site.yaml"),
        &format!("  spec_server: {serve_url}\n"),
    );
    World {
        _sim: sim_guard,
        _serve: serve_guard,
        state: dir.path().join("state"),
        site,
        serve_state,
        sim,
        serve_url,
        serve: client(fingerprint),
        dir,
    }
}

impl World {
    /// A one-node manifest `spec-demo` with `spec: web` in `mode`.
    fn manifest(&self, mode: &str) -> PathBuf {
        let path = self.dir.path().join(format!("spec-{mode}.yaml"));
        std::fs::write(
            &path,
            format!(
                "schema_version: 2\nname: spec-demo\nnodes:\n  - name: web\n    type: vm\n    \
                 preset: vm-small\n    image: debian-12\n    vmid: 99201\n    spec: web\n    \
                 execution: {{mode: {mode}}}\nsettings:\n  verify_ssh: true\n"
            ),
        )
        .unwrap();
        path
    }

    fn homestak(&self, manifest: &Path, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--site-config")
            .arg(&self.site)
            .args(args)
            .arg("--manifest-file")
            .arg(manifest)
            .args(["-H", "pve"])
            .env("HOMESTAK_STATE_DIR", &self.state)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `homestak scenario ARGS` with the CLI's state directory.
    fn scenario(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--site-config")
            .arg(&self.site)
            .arg("scenario")
            .args(args)
            .env("HOMESTAK_STATE_DIR", &self.state)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// The simulator's answer (status code) about VM `vmid`.
    async fn sim_vm_status(&self, vmid: u32) -> u16 {
        let url = self.sim["url"].as_str().unwrap();
        let token = self.sim["token"].as_str().unwrap();
        let fingerprint: homestak_tls::Fingerprint =
            self.sim["fingerprint"].as_str().unwrap().parse().unwrap();
        client(fingerprint)
            .get(format!("{url}/_sim/vms/{vmid}"))
            .header("Authorization", format!("PVEAPIToken={token}"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    fn spec_ca(&self) -> String {
        self.serve_state
            .join("tls/daemon.crt")
            .to_string_lossy()
            .into_owned()
    }

    /// What the daemon answers at `GET /spec/web` with `token`.
    async fn served(&self, token: Option<&str>) -> (u16, String) {
        let mut request = self.serve.get(format!("{}/spec/web", self.serve_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// The VM's root directory in the simulator.
    async fn vm_root(&self, vmid: u32) -> PathBuf {
        let url = self.sim["url"].as_str().unwrap();
        let token = self.sim["token"].as_str().unwrap();
        let fingerprint: homestak_tls::Fingerprint =
            self.sim["fingerprint"].as_str().unwrap().parse().unwrap();
        let body: Value = client(fingerprint)
            .get(format!("{url}/_sim/vms/{vmid}"))
            .header("Authorization", format!("PVEAPIToken={token}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        PathBuf::from(body["data"]["workdir"].as_str().unwrap()).join("root")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_mode_vm_fetches_its_spec_from_serve_at_first_boot() {
    let started = Instant::now();
    let w = start("dev");
    let manifest = w.manifest("pull");
    let ca = w.spec_ca();
    let out = w.homestak(&manifest, &["create", "--spec-ca", &ca, "--json-output"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let phases: Vec<&str> = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for step in ["web:write_snippet", "web:verify_spec"] {
        assert!(phases.contains(&step), "{step} missing: {phases:?}");
    }
    let (code, served) = w.served(None).await;
    assert_eq!(code, 200, "{served}");
    let root = w.vm_root(99201).await;
    let fetched = std::fs::read_to_string(root.join("etc/homestak/spec.json")).unwrap();
    assert_eq!(fetched, served, "the VM holds what the daemon serves");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/homestak/spec.status"))
            .unwrap()
            .trim(),
        "fetched"
    );
    // The destroy removes the VM and its snippet.
    let out = w.homestak(&manifest, &["destroy", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    println!(
        "pull roundtrip (create, fetch, verify, destroy): {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_servers_certificate_an_https_pull_is_refused_before_create() {
    let w = start("dev");
    let manifest = w.manifest("pull");
    // The CLI's own state directory holds no daemon certificate.
    let out = w.homestak(&manifest, &["create"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("--spec-ca"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_mode_vm_gets_its_spec_over_ssh_once() {
    let started = Instant::now();
    let w = start("dev");
    let manifest = w.manifest("push");
    let out = w.homestak(&manifest, &["create"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (code, served) = w.served(None).await;
    assert_eq!(code, 200, "{served}");
    let path = w.vm_root(99201).await.join("etc/homestak/spec.json");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), served);
    let before = std::fs::metadata(&path).unwrap();
    // A second run finds the same digest and writes nothing (a write goes
    // through a temporary file and a rename: a new inode).
    let out = w.homestak(&manifest, &["reconcile", "--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let after = std::fs::metadata(&path).unwrap();
    assert_eq!(
        (before.ino(), before.mtime_nsec()),
        (after.ino(), after.mtime_nsec())
    );
    println!(
        "push roundtrip (create, push, reconcile once more): {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_fails_the_pull_at_verify_spec_without_the_secret() {
    let w = start("stage");
    // The daemon holds SITE_TOKEN; the CLI now hands the VM another.
    let secrets = w.site.join("secrets.yaml");
    let text_now = std::fs::read_to_string(&secrets).unwrap();
    std::fs::write(&secrets, text_now.replace(SITE_TOKEN, WRONG_TOKEN)).unwrap();
    let (code, _) = w.served(Some(WRONG_TOKEN)).await;
    assert!(
        code == 401 || code == 403,
        "the daemon refuses the wrong token: {code}"
    );
    let (code, _) = w.served(Some(SITE_TOKEN)).await;
    assert_eq!(code, 200, "and takes its own");

    let manifest = w.manifest("pull");
    let ca = w.spec_ca();
    let out = w.homestak(&manifest, &["create", "--spec-ca", &ca, "--json-output"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let all = text(&out);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed: Vec<&Value> = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{report:#}");
    assert_eq!(failed[0]["name"], "web:verify_spec", "{report:#}");
    let message = report["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("could not fetch spec web") && message.contains(&w.serve_url),
        "{message}"
    );
    for secret in [WRONG_TOKEN, SITE_TOKEN] {
        assert!(!all.contains(secret), "a token leaked: {all}");
    }
    let root = w.vm_root(99201).await;
    assert!(!root.join("etc/homestak/spec.json").exists());
    let log = std::fs::read_to_string(root.join("var/log/cloud-init-output.log")).unwrap();
    assert!(log.contains("curl: (22)"), "{log}");
}

/// The phases of a scenario's JSON report: (name, status).
fn phases(report: &Value) -> Vec<(String, String)> {
    report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_vm_push_roundtrip_creates_verifies_and_destroys_the_vm() {
    let started = Instant::now();
    let w = start("dev");
    // The built-in manifest: VM `test` with the site's only spec, `web`.
    let out = w.scenario(&[
        "spec-vm-push-roundtrip",
        "--host",
        "pve",
        "--vm-id",
        "test=99202",
        "--json-output",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["success"], true, "{report:#}");
    assert!(report.get("error").is_none(), "{report:#}");
    assert_eq!(
        phases(&report),
        owned(&[
            ("provision_vm", "passed"),
            ("verify_spec", "passed"),
            ("destroy_vm", "passed"),
        ]),
        "{report:#}"
    );
    let context = &report["context"];
    assert_eq!(context["vm_id"], 99202, "{report:#}");
    assert_eq!(context["test_vmid"], 99202, "{report:#}");
    let ip = context["vm_ip"].as_str().unwrap_or_default();
    assert!(ip.starts_with("127."), "{report:#}");
    assert_eq!(context["test_ip"], ip, "{report:#}");
    assert_eq!(context["spec"], "web", "{report:#}");
    assert_eq!(w.sim_vm_status(99202).await, 404, "the VM is gone");
    println!(
        "spec-vm-push-roundtrip (provision_vm, verify_spec, destroy_vm): {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_vm_push_roundtrip_finds_a_spec_json_that_differs_from_the_served_spec() {
    let w = start("dev");
    let manifest = w.manifest("push");
    let manifest = manifest.to_str().unwrap();
    let context = w.dir.path().join("context.json");
    let context = context.to_str().unwrap();
    let run = |skip: &[&str]| {
        let mut args = vec![
            "spec-vm-push-roundtrip",
            "-H",
            "pve",
            "--manifest-file",
            manifest,
            "--context-file",
            context,
            "--json-output",
        ];
        for s in skip {
            args.extend(["--skip", s]);
        }
        w.scenario(&args)
    };
    let out = run(&["verify_spec", "destroy_vm"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // What arrived is what the daemon serves at GET /spec/web.
    let (code, served) = w.served(None).await;
    assert_eq!(code, 200, "{served}");
    let path = w.vm_root(99201).await.join("etc/homestak/spec.json");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), served);

    // One byte more, and the chained verify_spec (vm_ip from the context
    // file) refuses it.
    std::fs::write(&path, format!("{served} ")).unwrap();
    let out = run(&["provision_vm", "destroy_vm"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        phases(&report),
        owned(&[("provision_vm", "skipped"), ("verify_spec", "failed"),]),
        "{report:#}"
    );
    let error = report["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("verify_spec: ") && error.contains("is not spec web as served"),
        "{error}"
    );

    let out = run(&["provision_vm", "verify_spec"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(w.sim_vm_status(99201).await, 404, "the VM is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_vm_push_roundtrip_with_a_spec_the_site_lacks_fails_at_provision_vm() {
    let w = start("dev");
    let path = w.manifest("push");
    let text_now = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text_now.replace("spec: web", "spec: nosuch")).unwrap();
    let out = w.scenario(&[
        "spec-vm-push-roundtrip",
        "-H",
        "pve",
        "--manifest-file",
        path.to_str().unwrap(),
        "--json-output",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["success"], false, "{report:#}");
    assert_eq!(
        phases(&report),
        owned(&[("provision_vm", "failed")]),
        "{report:#}"
    );
    let error = report["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("provision_vm: ") && error.contains("spec nosuch"),
        "{error}"
    );
    assert!(report["context"].get("vm_ip").is_none(), "{report:#}");
    assert_eq!(w.sim_vm_status(99201).await, 404, "no VM was made");
}
