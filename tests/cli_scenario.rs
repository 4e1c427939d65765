//! `homestak scenario` through the real binary against `homestak sim`:
//! `pve-setup` turns a plain Debian VM (known only by `hosts/hv1.yaml`)
//! into a PVE host that `create` then converges a VM on; a second run
//! changes nothing. Also `--list`, `--list-phases`, `--dry-run`, `--skip`,
//! `--context-file`, the `./run.sh` spellings and the retired names.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use serde_json::Value;

use crate::support::{BIN, demo_sim, text};

fn homestak(site: &Path, state: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--site-config")
        .arg(site)
        .args(args)
        .env("HOMESTAK_STATE_DIR", state)
        .current_dir(state.parent().unwrap_or(state))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

/// A report's phases as `(name, status)`, in run order.
fn phases(report: &Value) -> Vec<(&str, &str)> {
    report["phases"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap_or_default(),
                        p["status"].as_str().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A plain Debian 13 VM `name` created on the demo host with the site's
/// key (SSH checked); its address.
fn debian_vm(site: &Path, state: &Path, name: &str, preset: &str, vmid: u32) -> String {
    let manifest = write(
        &state.with_file_name(format!("{name}.yaml")),
        &format!(
            "schema_version: 2\nname: {name}-host\nnodes:\n  - {{name: {name}, type: vm, preset: {preset}, image: debian-13, vmid: {vmid}}}\nsettings: {{verify_ssh: true}}\n"
        ),
    );
    let out = homestak(
        site,
        state,
        &[
            "create",
            "--json-output",
            "--manifest-file",
            manifest.to_str().unwrap(),
            "-H",
            "pve",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    json(&out)["context"][format!("{name}_ip")]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn listing_phases_dry_runs_and_the_python_spellings() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    crate::support::copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/site-config"),
        &site,
    );
    let state = dir.path().join("state");
    let out = homestak(&site, &state, &["--list-scenarios"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    for name in ["pve-setup", "packer-build-fetch", "packer-sync"] {
        assert!(listed.contains(name), "{listed}");
    }
    assert!(listed.contains("~3m"), "{listed}");
    let out = homestak(&site, &state, &["scenario", "--list", "--json"]);
    let rows = json(&out);
    let names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "listed by name");

    let out = homestak(&site, &state, &["-S", "pve-setup", "--list-phases"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let phases = String::from_utf8_lossy(&out.stdout).to_string();
    for phase in [
        "ensure_pve",
        "setup_pve",
        "create_api_token",
        "generate_node_config",
    ] {
        assert!(phases.contains(&format!("  {phase}: ")), "{phases}");
    }

    let out = homestak(
        &site,
        &state,
        &[
            "scenario",
            "pve-setup",
            "--dry-run",
            "--skip",
            "ensure_pve",
            "--timeout",
            "60",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        shown.contains("[SKIP] ensure_pve") && shown.contains("[ OK ] setup_pve"),
        "{shown}"
    );
    assert!(shown.contains("3 phases to execute, 1 to skip"), "{shown}");

    // A mistyped phase is refused before anything runs.
    let out = homestak(
        &site,
        &state,
        &["scenario", "pve-setup", "--skip", "ensure_pvee"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ensure_pvee"),
        "{}",
        text(&out)
    );

    // Retired and unknown names.
    let out = homestak(&site, &state, &["--scenario", "vm-roundtrip"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("homestak test"),
        "{}",
        text(&out)
    );
    let out = homestak(&site, &state, &["scenario", "no-such"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // A scenario without its target fails with a report all the same.
    let reports = dir.path().join("reports");
    let out = homestak(
        &site,
        &state,
        &[
            "scenario",
            "pve-setup",
            "--json-output",
            "--report-dir",
            reports.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = json(&out);
    assert_eq!(report["success"], false);
    assert!(
        report["error"]
            .as_str()
            .unwrap_or_default()
            .contains("--host NAME"),
        "{report:#}"
    );
    assert!(std::fs::read_dir(&reports).unwrap().count() >= 2);
}

#[test]
fn pve_setup_turns_a_debian_vm_into_a_host_create_then_uses() {
    homestak_tls::install_crypto_provider();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/sim.yaml");
    let (_sim, site, _) = demo_sim(dir.path(), "0.01", Some(&config));
    let key = site.join(".homestak-sim/id_ed25519");

    // A plain Debian 13 VM: the host to be.
    let ip = debian_vm(&site, &state, "hv1", "vm-medium", 99200);
    write(
        &site.join("hosts/hv1.yaml"),
        &format!("ip: {ip}\naccess:\n  ssh_user: homestak\n"),
    );

    // Known only by hosts/: create refuses and says what to run.
    let inner = write(
        &dir.path().join("inner.yaml"),
        "schema_version: 2\nname: inner\nnodes:\n  - {name: in1, type: vm, preset: vm-small, image: debian-12, vmid: 99300}\nsettings: {verify_ssh: false}\n",
    );
    let inner_args = [
        "create",
        "--manifest-file",
        inner.to_str().unwrap(),
        "-H",
        "hv1",
    ];
    let out = homestak(&site, &state, &inner_args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("homestak scenario pve-setup --host hv1"),
        "{}",
        text(&out)
    );

    let context = dir.path().join("ctx.json");
    let reports = dir.path().join("reports");
    let setup = [
        "scenario",
        "pve-setup",
        "--host",
        "hv1",
        "--ssh-port",
        "2222",
        "--ssh-key",
        key.to_str().unwrap(),
        "--json-output",
        "--context-file",
        context.to_str().unwrap(),
        "--report-dir",
        reports.to_str().unwrap(),
    ];
    let first = Instant::now();
    let out = homestak(&site, &state, &setup);
    let first = first.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = json(&out);
    assert_eq!(report["success"], true, "{report:#}");
    assert_eq!(report.get("error"), None, "{report:#}");
    let phases = phases(&report);
    assert_eq!(
        phases,
        [
            ("ensure_pve", "passed"),
            ("setup_pve", "passed"),
            ("create_api_token", "passed"),
            ("generate_node_config", "passed")
        ]
    );
    assert_eq!(report["context"]["pve_host"], "hv1");
    let node = std::fs::read_to_string(site.join("nodes/hv1.yaml")).unwrap();
    assert!(
        node.contains(&format!("https://{ip}:8006")) && node.contains("api_fingerprint"),
        "{node}"
    );
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&context).unwrap()).unwrap();
    assert_eq!(saved["pve_host"], "hv1");
    assert_eq!(saved["remote_ip"], ip.as_str());
    let secrets = std::fs::read_to_string(site.join("secrets.yaml")).unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("root@pam!homestak="));
    assert!(secrets.contains("hv1:"), "the token is in secrets.yaml");

    // The new host is usable: a VM is created inside it.
    let out = homestak(&site, &state, &inner_args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = homestak(
        &site,
        &state,
        &[
            "status",
            "--manifest-file",
            inner.to_str().unwrap(),
            "-H",
            "hv1",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // Again: nothing to install, the same token kept, nothing rewritten.
    let again = Instant::now();
    let out = homestak(&site, &state, &setup);
    let again = again.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = json(&out);
    let messages: Vec<&str> = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(messages.len(), 4, "{report:#}");
    assert_eq!(
        std::fs::read_to_string(site.join("nodes/hv1.yaml")).unwrap(),
        node
    );
    assert_eq!(
        std::fs::read_to_string(site.join("secrets.yaml")).unwrap(),
        secrets
    );
    let out = homestak(
        &site,
        &state,
        &[
            "status",
            "--manifest-file",
            inner.to_str().unwrap(),
            "-H",
            "hv1",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "token kept: {}", text(&out));
    println!(
        "pve-setup: first run {:.2}s, second {:.2}s, whole test {:.2}s (time scale 0.01)",
        first.as_secs_f64(),
        again.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// `bootstrap-install`: a plain Debian VM gets homestak from this
/// machine's `homestak serve` (its /install.sh, the binary, the site-config
/// over the authenticated repos), checked by running it there. Again:
/// still passes (the clone is brought up to date). A daemon that is not
/// there fails the first phase.
#[test]
fn bootstrap_install_installs_homestak_from_serve() {
    homestak_tls::install_crypto_provider();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/sim.yaml");
    let (_sim, site, _) = demo_sim(dir.path(), "0.01", Some(&config));
    let key = site.join(".homestak-sim/id_ed25519");
    write(&site.join(".gitignore"), "secrets.yaml\n.homestak-sim/\n");
    crate::daemon_support::git(&site, &["init", "-q", "-b", "main"]);
    crate::daemon_support::git(&site, &["add", "-A"]);
    crate::daemon_support::git(&site, &["commit", "-q", "-m", "site-config"]);

    let serve_state = dir.path().join("serve-state");
    let (_serve, info) = crate::support::start_serve(&site, &serve_state, &[], &[]);
    let url = info["url"].as_str().unwrap().to_string();

    let ip = debian_vm(&site, &state, "boot1", "vm-small", 99400);

    let install = |source: &str| {
        homestak(
            &site,
            &state,
            &[
                "scenario",
                "bootstrap-install",
                "--vm-ip",
                &ip,
                "--ssh-user",
                "homestak",
                "--ssh-port",
                "2222",
                "--ssh-key",
                key.to_str().unwrap(),
                "--source",
                source,
                "--homestak-user",
                "ops",
                "--state-dir",
                serve_state.to_str().unwrap(),
                "--json-output",
                "--report-dir",
                dir.path().join("reports").to_str().unwrap(),
            ],
        )
    };
    let first = Instant::now();
    let out = install(&url);
    let first = first.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = json(&out);
    let phases = phases(&report);
    assert_eq!(
        phases,
        [
            ("verify_source", "passed"),
            ("push_credentials", "passed"),
            ("run_installer", "passed"),
            ("create_user", "passed"),
            ("verify_install", "passed")
        ],
        "{report:#}"
    );
    assert_eq!(report["context"]["vm_ip"], ip.as_str());
    assert_eq!(report["context"]["homestak_user"], "ops");
    // The repo token never shows in the report.
    let token = std::fs::read_to_string(serve_state.join("repo-token")).unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains(token.trim()));
    assert!(!String::from_utf8_lossy(&out.stderr).contains(token.trim()));

    let out = install(&url);
    assert_eq!(out.status.code(), Some(0), "second run: {}", text(&out));

    // The install endpoints: the token is needed, only GET (and HEAD)
    // answer, and the binary streams whole.
    let fingerprint: homestak_tls::Fingerprint =
        info["fingerprint"].as_str().unwrap().parse().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = crate::daemon_support::client(fingerprint);
        let no_token = client
            .get(format!("{url}/install.sh"))
            .send()
            .await
            .unwrap();
        assert_eq!(no_token.status().as_u16(), 401);
        let post = client
            .post(format!("{url}/install.sh"))
            .bearer_auth(token.trim())
            .send()
            .await
            .unwrap();
        assert_eq!(post.status().as_u16(), 405);
        let binary = client
            .get(format!("{url}/bin/homestak"))
            .bearer_auth(token.trim())
            .send()
            .await
            .unwrap();
        assert_eq!(binary.status().as_u16(), 200);
        let body = binary.bytes().await.unwrap();
        assert_eq!(body.len() as u64, std::fs::metadata(BIN).unwrap().len());
    });

    let out = install("https://127.0.0.1:9");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = json(&out);
    assert_eq!(report["phases"][0]["name"], "verify_source");
    assert_eq!(report["phases"][0]["status"], "failed");
    println!(
        "bootstrap-install: first run {:.2}s, whole test {:.2}s (time scale 0.01)",
        first.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// `user-setup` through the CLI, as the Python tool's `--scenario
/// user-setup --remote IP` ran: the user is made with sudo and the site's
/// keys, and logs in; a second run changes nothing and still passes.
#[test]
fn user_setup_makes_a_user_that_logs_in_with_the_sites_key() {
    homestak_tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/sim.yaml");
    let (_sim, site, _) = demo_sim(dir.path(), "0.01", Some(&config));
    let key = site.join(".homestak-sim/id_ed25519");
    let ip = debian_vm(&site, &state, "users1", "vm-small", 99500);
    let reports = dir.path().join("reports");
    let setup = [
        "--scenario",
        "user-setup",
        "--remote",
        &ip,
        "--ssh-user",
        "homestak",
        "--ssh-port",
        "2222",
        "--ssh-key",
        key.to_str().unwrap(),
        "--homestak-user",
        "ops",
        "--json-output",
        "--report-dir",
        reports.to_str().unwrap(),
    ];
    for run in ["first", "second"] {
        let out = homestak(&site, &state, &setup);
        assert_eq!(out.status.code(), Some(0), "{run}: {}", text(&out));
        let report = json(&out);
        let phases = phases(&report);
        assert_eq!(
            phases,
            [
                ("ensure_user", "passed"),
                ("setup_sudo", "passed"),
                ("setup_ssh_keys", "passed"),
                ("verify_user", "passed")
            ],
            "{run}: {report:#}"
        );
    }
    // A user name sudo would not take is refused before anything runs on
    // the host.
    let mut bad = setup;
    bad[11] = "Bad User";
    let out = homestak(&site, &state, &bad);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(json(&out)["phases"][0]["status"], "failed");
}
