//! Services in simulated VMs: a parent tier uploads the real homestak
//! binary over SCP, writes a unit, and `systemctl enable --now` spawns it
//! as a real child process (working directory and paths in the VM root,
//! bound to the VM's address). It is stopped with SIGTERM when the VM
//! stops, started again at boot when enabled, and killed when the VM is
//! destroyed or the simulator shuts down. Loopback only; timeouts are hang
//! guards.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::sim_support::Sim;
use crate::sim_support::guest::{self, GUARD, Tier, key, run, run_ok, ssh};
use homestak_ssh::{Session, Upload};
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_homestak");

fn alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

async fn wait_gone(pid: u64) {
    let deadline = tokio::time::Instant::now() + GUARD;
    while alive(pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "hang guard: {pid} lives"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `line` over SSH until it exits 0; its stdout.
async fn wait_for(session: &dyn Session, line: &str) -> String {
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        let out = run(session, line).await;
        if out.success() {
            return out.stdout_text();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "hang guard: {line}: {}",
            out.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The VM's root directory on the host.
async fn vm_root(tier: &Tier, vmid: u32) -> PathBuf {
    let vm = tier.sim_vm(vmid).await;
    PathBuf::from(vm["workdir"].as_str().unwrap())
        .join("root")
        .canonicalize()
        .unwrap()
}

/// Puts the binary in the VM without SSH (the SCP path has its own test).
fn install_directly(root: &Path) {
    let bin = root.join("usr/local/bin/homestak");
    std::fs::copy(BINARY, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn sim_unit(address: &str) -> String {
    format!(
        "[Unit]\nDescription=homestak child (test)\n\n[Service]\n\
         ExecStart=/usr/local/bin/homestak sim --listen {address}:8443 \\\n  --ready-file /run/inner-sim.json --time-scale 0.001\n\
         WorkingDirectory=/root\nEnvironment=RUST_LOG=warn\n\n[Install]\nWantedBy=multi-user.target\n"
    )
}

#[tokio::test]
async fn systemctl_runs_the_uploaded_homestak_until_the_vm_goes() {
    let sim = Sim::start_with(guest::config(0.001)).await;
    let top = Tier::of(&sim);
    let k = key("parent");
    let view = top.boot_vm(100, "host1", "debian-13", "root", &k).await;
    let address = top.sim_vm(100).await["address"]
        .as_str()
        .unwrap()
        .to_string();
    let root = vm_root(&top, 100).await;
    let session = ssh(&view, "root", &k).await.unwrap();

    // Install over SCP, as a parent tier does, then run it in the foreground.
    tokio::time::timeout(
        GUARD,
        session.upload(&Upload::file(BINARY, "/usr/local/bin/homestak", 0o755)),
    )
    .await
    .expect("hang guard")
    .unwrap();
    assert_eq!(
        std::fs::metadata(root.join("usr/local/bin/homestak"))
            .unwrap()
            .len(),
        std::fs::metadata(BINARY).unwrap().len()
    );
    let version = run_ok(&*session, "homestak --version").await;
    assert!(version.starts_with("homestak "), "{version}");
    let out = run(&*session, "/usr/local/bin/homestak --no-such-flag").await;
    assert_eq!(out.status.code(), Some(64), "EX_USAGE");
    assert!(
        out.stderr_text().contains("--no-such-flag"),
        "{}",
        out.stderr_text()
    );

    session
        .upload(&Upload::bytes(
            sim_unit(&address),
            "/etc/systemd/system/homestak.service",
            0o644,
        ))
        .await
        .unwrap();
    let out = run(
        &*session,
        "systemctl daemon-reload && systemctl enable --now homestak",
    )
    .await;
    assert!(out.success(), "{}", out.stderr_text());
    assert!(
        out.stderr_text().contains("Created symlink"),
        "{}",
        out.stderr_text()
    );
    assert_eq!(
        run_ok(&*session, "systemctl is-active homestak").await,
        "active\n"
    );
    assert_eq!(
        run_ok(&*session, "systemctl is-enabled homestak").await,
        "enabled\n"
    );
    let pid: u64 = run_ok(&*session, "systemctl show homestak -p MainPID --value")
        .await
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pid));
    // A real child: its working directory is the guest's /root.
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        root.join("root")
    );
    // The child writes its ready file into the VM and serves on the VM's
    // address.
    let ready: Value =
        serde_json::from_str(&wait_for(&*session, "cat /run/inner-sim.json").await).unwrap();
    assert_eq!(ready["url"], format!("https://{address}:8443"));
    let child = Tier::new(
        ready["url"].as_str().unwrap(),
        ready["node"].as_str().unwrap(),
        ready["fingerprint"].as_str().unwrap(),
        ready["token"].as_str().unwrap(),
    );
    assert_eq!(child.ok("GET", "/version", &[]).await["release"], "8.4");
    let journal = run_ok(&*session, "journalctl -u homestak --no-pager").await;
    assert!(
        journal.contains(&format!("Proxmox VE 8.4 API on https://{address}:8443")),
        "{journal}"
    );

    // VM stop: SIGTERM, so the child shuts down cleanly and removes its
    // ready file.
    top.power(100, "stop").await;
    wait_gone(pid).await;
    assert!(!root.join("run/inner-sim.json").exists());

    // Enabled: it comes back when the VM boots again.
    top.power(100, "start").await;
    let view = top.wait_booted(100).await;
    let service = &view["services"]["homestak.service"];
    assert_eq!(service["active"], "active", "{view}");
    let pid = service["pid"].as_u64().unwrap();
    assert!(alive(pid));

    // Destroyed at once: the process is killed.
    let (status, _) = top.control("DELETE", "/_sim/vms/100", None).await;
    assert_eq!(status, 200);
    wait_gone(pid).await;
    sim.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn simulator_shutdown_kills_every_service() {
    let sim = Sim::start_with(guest::config(0.001)).await;
    let top = Tier::of(&sim);
    let k = key("parent");
    let view = top.boot_vm(101, "host2", "debian-12", "root", &k).await;
    let address = top.sim_vm(101).await["address"]
        .as_str()
        .unwrap()
        .to_string();
    install_directly(&vm_root(&top, 101).await);
    let session = ssh(&view, "root", &k).await.unwrap();
    session
        .upload(&Upload::bytes(
            sim_unit(&address),
            "/etc/systemd/system/child.service",
            0o644,
        ))
        .await
        .unwrap();
    run_ok(&*session, "systemctl start child").await;
    let pid: u64 = run_ok(&*session, "systemctl show child --property=MainPID --value")
        .await
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pid));
    drop(session);
    sim.handle.shutdown().await.unwrap();
    assert!(!alive(pid), "service {pid} outlived the simulator");
}

#[tokio::test]
async fn units_fail_restart_and_refuse_like_systemd() {
    let sim = Sim::start_with(guest::config(0.001)).await;
    let top = Tier::of(&sim);
    let k = key("op");
    let view = top.boot_vm(102, "host3", "debian-12", "debian", &k).await;
    let root = vm_root(&top, 102).await;
    install_directly(&root);
    // Any other executable in the VM, even the same bytes, is not run.
    std::fs::copy(BINARY, root.join("usr/local/bin/tool")).unwrap();
    std::fs::set_permissions(
        root.join("usr/local/bin/tool"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let session = ssh(&view, "debian", &k).await.unwrap();
    let units = [
        (
            "once",
            "[Service]\nExecStart=/usr/local/bin/homestak --no-such-flag\n",
        ),
        (
            "flappy",
            "[Service]\nExecStart=/usr/local/bin/homestak --no-such-flag\nRestart=on-failure\nRestartSec=20ms\n",
        ),
        ("shell", "[Service]\nExecStart=/bin/sh -c 'echo hi'\n"),
        (
            "tool",
            "[Service]\nExecStart=/usr/local/bin/tool --version\n",
        ),
    ];
    for (name, text) in units {
        session
            .upload(&Upload::bytes(
                text,
                format!("/home/debian/{name}.service"),
                0o644,
            ))
            .await
            .unwrap();
        run_ok(
            &*session,
            &format!("sudo mv /home/debian/{name}.service /etc/systemd/system/{name}.service"),
        )
        .await;
    }

    // Only root changes services.
    let out = run(&*session, "systemctl start once").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr_text().contains("permission denied"),
        "{}",
        out.stderr_text()
    );

    // A service whose process exits non-zero ends up failed.
    run_ok(&*session, "sudo systemctl start once").await;
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        let out = run(&*session, "systemctl is-active once").await;
        if out.stdout_text() == "failed\n" {
            assert_eq!(out.status.code(), Some(3));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "hang guard");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        run_ok(&*session, "systemctl show once -p Result -p ExecMainStatus").await,
        "Result=exit-code\nExecMainStatus=64\n"
    );
    let journal = run_ok(&*session, "journalctl -u once -n 5").await;
    assert!(journal.contains("--no-such-flag"), "{journal}");

    // Restart=on-failure starts it again and again until stopped.
    run_ok(&*session, "sudo systemctl start flappy").await;
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        let n: u32 = run_ok(&*session, "systemctl show flappy -p NRestarts --value")
            .await
            .trim()
            .parse()
            .unwrap();
        if n >= 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "hang guard");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    run_ok(&*session, "sudo systemctl stop flappy").await;
    let out = run(&*session, "systemctl is-active flappy").await;
    assert_eq!(
        (out.status.code(), out.stdout_text().as_str()),
        (Some(3), "inactive\n")
    );

    // Missing units and host programs are refused with systemd's words.
    let out = run(&*session, "sudo systemctl start nope").await;
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(
        out.stderr_text(),
        "Failed to start nope.service: Unit nope.service not found.\n"
    );
    let out = run(&*session, "sudo systemctl start shell").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr_text()
            .starts_with("Job for shell.service failed"),
        "{}",
        out.stderr_text()
    );
    let journal = run_ok(&*session, "journalctl -u shell").await;
    assert!(
        journal.contains("/bin/sh: No such file or directory"),
        "{journal}"
    );
    let out = run(&*session, "sudo systemctl start tool").await;
    assert_eq!(out.status.code(), Some(1));
    let journal = run_ok(&*session, "journalctl -u tool").await;
    assert!(journal.contains("only the homestak binary"), "{journal}");
    let out = run(&*session, "systemctl is-enabled once").await;
    assert_eq!(
        (out.status.code(), out.stdout_text().as_str()),
        (Some(1), "disabled\n")
    );
    assert_eq!(
        run_ok(&*session, "systemctl is-active ssh").await,
        "active\n"
    );
    sim.handle.shutdown().await.unwrap();
}
