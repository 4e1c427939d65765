//! `homestak sim` as users run it: ready file, site-config update, and a
//! clean stop on SIGTERM.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn sim_writes_ready_file_and_site_config_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site-config");
    std::fs::create_dir_all(site.join("nodes")).unwrap();
    std::fs::write(
        site.join("secrets.yaml"),
        "# keep me\napi_tokens:\n  other: \"x\"\nssh_keys:\n  me: \"ssh-ed25519 AAAA me\"\n",
    )
    .unwrap();
    let ready = dir.path().join("ready.json");
    // VMs serve SSH on a port that needs no root; the site-config learns it.
    let config = dir.path().join("sim.yaml");
    std::fs::write(&config, "ssh_port: 2222\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_homestak"))
        .args([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--time-scale",
            "0.01",
            "--ready-file",
        ])
        .arg(&ready)
        .arg("--config")
        .arg(&config)
        .arg("--site-config")
        .arg(&site)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "no ready file (hang guard)");
        assert!(
            child.try_wait().unwrap().is_none(),
            "homestak sim exited early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(&ready).unwrap()).unwrap();
    for key in ["url", "node", "token", "fingerprint", "root_password"] {
        assert!(info[key].is_string(), "{key} missing in {info}");
    }
    assert!(
        info["url"]
            .as_str()
            .unwrap()
            .starts_with("https://127.0.0.1:")
    );
    assert_eq!(info["node"], "pve");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&ready).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    let secrets: serde_json::Value =
        homestak_base::yaml::read_file(&site.join("secrets.yaml")).unwrap();
    assert_eq!(secrets["api_tokens"]["pve"], info["token"]);
    assert_eq!(secrets["api_tokens"]["other"], "x");
    assert_eq!(secrets["ssh_keys"]["me"], "ssh-ed25519 AAAA me");
    assert!(
        std::fs::read_to_string(site.join("secrets.yaml"))
            .unwrap()
            .starts_with("# keep me\n")
    );
    let node: serde_json::Value =
        homestak_base::yaml::read_file(&site.join("nodes/pve.yaml")).unwrap();
    assert_eq!(node["api_endpoint"], info["url"]);
    assert_eq!(node["api_token"], "pve");
    assert_eq!(node["datastore"], "local-zfs");
    assert_eq!(node["api_fingerprint"], info["fingerprint"]);
    assert_eq!(node["vm_ssh_port"], 2222);
    // The node's own SSH: root, with the key the site-config got.
    let host_ssh: std::net::SocketAddr = info["host_ssh"].as_str().unwrap().parse().unwrap();
    assert_eq!(node["ip"], host_ssh.ip().to_string());
    assert_eq!(node["ssh_user"], "root");
    assert_eq!(node["ssh_port"], host_ssh.port());
    let key = node["ssh_key"].as_str().unwrap();
    assert!(key.ends_with(".homestak-sim/id_ed25519"), "{key}");
    let host = homestak_core::site::Site::load(&site)
        .unwrap()
        .host_config("pve")
        .unwrap();
    assert_eq!(
        (host.ssh_host.as_deref().unwrap_or_default(), host.ssh_port),
        ("127.0.0.1", host_ssh.port())
    );

    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "homestak sim did not stop on SIGTERM (hang guard)"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "exit {exit:?}");
    assert!(
        !Path::new(&ready).exists(),
        "the ready file is removed on exit"
    );
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("homestak sim: Proxmox VE 8.4 API on https://127.0.0.1:"),
        "{stdout}"
    );
    assert!(
        !stdout.contains(info["token"].as_str().unwrap()),
        "the token secret is not printed when a ready file is written"
    );
}

#[test]
fn sim_refuses_non_loopback_addresses() {
    let out = Command::new(env!("CARGO_BIN_EXE_homestak"))
        .args(["sim", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("loopback addresses only"), "{stderr}");
}
