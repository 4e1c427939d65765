//! SSH per simulated VM: once a VM boots, `<its address>:<ssh_port>`
//! accepts the cloud-init key for `ciuser` (our client and real OpenSSH),
//! runs commands with streamed output and exit status, takes SCP uploads,
//! and goes away when the VM stops; its host key and files survive a
//! restart. Loopback only; timeouts are hang guards.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;

use crate::support::Sim;
use crate::support::guest::{self, GUARD, Tier, key, run, run_ok, ssh};
use homestak_ssh::{ErrorKind, ExitStatus, Stream, Upload};
use russh::keys::ssh_key::LineEnding;

#[tokio::test]
async fn a_booted_vm_accepts_its_cloud_init_key_and_nothing_else() {
    let sim = Sim::start_with(guest::config(0.001)).await;
    let tier = Tier::of(&sim);
    let (good, other) = (key("op@laptop"), key("intruder"));
    let view = tier
        .boot_vm(100, "web1", "debian-12", "debian", &good)
        .await;
    let vm = tier.sim_vm(100).await;
    let address = vm["address"].as_str().unwrap();
    assert_eq!(
        view["ssh"]["address"],
        format!("{address}:{}", guest::SSH_PORT)
    );
    assert_eq!(view["ssh"]["user"], "debian");
    assert!(view["ssh"]["error"].is_null(), "{view}");

    let session = ssh(&view, "debian", &good).await.unwrap();
    assert_eq!(
        run_ok(&*session, "id -un; hostname; hostname -I").await,
        format!("debian\nweb1\n{address} \n")
    );
    // Output is streamed per stream, and the exit status comes through.
    let mut chunks = Vec::new();
    let out = session
        .exec(
            &homestak_ssh::Command::shell("echo out; cat /nope; exit 3"),
            &mut |stream, data| chunks.push((stream, data.to_vec())),
        )
        .await
        .unwrap();
    assert_eq!(out.status, ExitStatus::Code(3));
    assert_eq!(out.stdout_text(), "out\n");
    assert!(
        out.stderr_text()
            .contains("cat: /nope: No such file or directory")
    );
    assert!(chunks.iter().any(|(s, _)| *s == Stream::Stdout));
    assert!(chunks.iter().any(|(s, _)| *s == Stream::Stderr));

    // SCP upload, read back.
    session
        .upload(&Upload::bytes("hello vm\n", "/home/debian/note.txt", 0o640))
        .await
        .unwrap();
    assert_eq!(
        run_ok(&*session, "cat /home/debian/note.txt").await,
        "hello vm\n"
    );
    session.close().await.unwrap();

    // Another key, or the right key for another user, is refused.
    for (user, k) in [("debian", &other), ("root", &good)] {
        let err = ssh(&view, user, k).await.err().expect("refused");
        assert_eq!(err.kind(), ErrorKind::AuthRefused, "{user}: {err}");
    }
    sim.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn stopping_a_vm_ends_its_ssh_and_starting_brings_back_the_same_host() {
    let sim = Sim::start_with(guest::config(0.001)).await;
    let tier = Tier::of(&sim);
    let k = key("op");
    let first = tier.boot_vm(101, "db1", "debian-13", "root", &k).await;
    let session = ssh(&first, "root", &k).await.unwrap();
    run_ok(&*session, "mkdir -p /srv/data && cd /srv/data && pwd").await;
    session
        .upload(&Upload::bytes("42", "/srv/data/answer", 0o644))
        .await
        .unwrap();

    tier.power(101, "stop").await;
    tier.wait_down(101).await;
    // The open session is gone and nothing listens any more.
    let cut = tokio::time::timeout(
        GUARD,
        session.exec(&homestak_ssh::Command::shell("true"), &mut |_, _| {}),
    )
    .await
    .expect("hang guard");
    assert!(cut.is_err(), "a session outlived its VM: {cut:?}");
    let err = ssh(&first, "root", &k).await.err().expect("no SSH");
    assert_eq!(err.kind(), ErrorKind::PortClosed, "{err}");

    tier.power(101, "start").await;
    let second = tier.wait_booted(101).await;
    assert_eq!(second["ssh"]["host_key"], first["ssh"]["host_key"]);
    let session = ssh(&second, "root", &k).await.unwrap();
    assert_eq!(run_ok(&*session, "cat /srv/data/answer").await, "42");
    assert_eq!(
        run_ok(&*session, "cloud-init status").await,
        "status: done\n"
    );

    // A reboot is a new boot: the guest goes down and up again.
    tier.power(101, "reboot").await;
    let third = tier.wait_booted(101).await;
    assert_eq!(third["ssh"]["host_key"], first["ssh"]["host_key"]);
    sim.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn destroying_a_vm_removes_its_guest_and_its_disk() {
    let sim = Sim::start_with(guest::config(0.001)).await;
    let tier = Tier::of(&sim);
    let k = key("op");
    let view = tier.boot_vm(102, "tmp1", "debian-12", "debian", &k).await;
    let workdir = tier.sim_vm(102).await["workdir"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        std::path::Path::new(&workdir)
            .join("root/etc/ssh/ssh_host_ed25519_key")
            .is_file()
    );
    // Removing a running VM out of band stops its guest too.
    let (status, _) = tier.control("DELETE", "/_sim/vms/102", None).await;
    assert_eq!(status, 200);
    tier.wait_down(102).await;
    let err = ssh(&view, "debian", &k).await.err().expect("no SSH");
    assert_eq!(err.kind(), ErrorKind::PortClosed, "{err}");
    assert!(!std::path::Path::new(&workdir).exists());
    sim.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_port_that_cannot_be_bound_is_reported_not_fatal() {
    let sim = Sim::start_with(guest::config(0.001)).await;
    let tier = Tier::of(&sim);
    let k = key("op");
    tier.create_vm(103, "busy", "debian-12", "debian", &k).await;
    let address = tier.sim_vm(103).await["address"]
        .as_str()
        .unwrap()
        .to_string();
    // Something else holds the VM's SSH port.
    let squatter = std::net::TcpListener::bind(format!("{address}:{}", guest::SSH_PORT)).unwrap();
    tier.power(103, "start").await;
    let view = tier.wait_booted(103).await;
    let error = view["ssh"]["error"].as_str().unwrap();
    assert!(error.contains("cannot listen for SSH"), "{error}");
    assert!(view["ssh"]["host_key"].is_null());
    // The VM itself runs on.
    let status = tier
        .ok("GET", "/nodes/pve/qemu/103/status/current", &[])
        .await;
    assert_eq!(status["status"], "running");
    drop(squatter);
    sim.handle.shutdown().await.unwrap();
}

fn tool(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
}

#[tokio::test]
async fn real_openssh_logs_in_and_copies_files() {
    if !tool("ssh") || !tool("scp") {
        println!("SKIPPED: OpenSSH `ssh`/`scp` not installed");
        return;
    }
    let sim = Sim::start_with(guest::config(0.001)).await;
    let tier = Tier::of(&sim);
    let k = key("op");
    let view = tier.boot_vm(104, "ossh", "debian-13", "debian", &k).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("id_ed25519");
    std::fs::write(
        &key_file,
        k.private.to_openssh(LineEnding::LF).unwrap().as_bytes(),
    )
    .unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let addr: SocketAddr = view["ssh"]["address"].as_str().unwrap().parse().unwrap();
    let workdir = tier.sim_vm(104).await["workdir"]
        .as_str()
        .unwrap()
        .to_string();
    let host_pub =
        std::fs::read_to_string(format!("{workdir}/root/etc/ssh/ssh_host_ed25519_key.pub"))
            .unwrap();
    let known = dir.path().join("known_hosts");
    std::fs::write(
        &known,
        format!("[{}]:{} {host_pub}", addr.ip(), addr.port()),
    )
    .unwrap();
    let options = |cmd: &mut tokio::process::Command| {
        cmd.args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .args([
            "-o",
            "IdentityAgent=none",
            "-o",
            "StrictHostKeyChecking=yes",
        ])
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known.display()))
        .arg("-i")
        .arg(&key_file)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    };
    let local = dir.path().join("payload.txt");
    std::fs::write(&local, "from openssh\n").unwrap();
    let mut scp = tokio::process::Command::new("scp");
    scp.arg("-O");
    options(&mut scp);
    scp.args(["-P", &addr.port().to_string()])
        .arg(&local)
        .arg(format!("debian@{}:/home/debian/payload.txt", addr.ip()));
    let out = tokio::time::timeout(GUARD, scp.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut ssh = tokio::process::Command::new("ssh");
    options(&mut ssh);
    ssh.args(["-p", &addr.port().to_string()])
        .arg(format!("debian@{}", addr.ip()))
        .arg("cat payload.txt; whoami; exit 4");
    let out = tokio::time::timeout(GUARD, ssh.output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "from openssh\ndebian\n"
    );
    sim.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn sudo_runs_as_root_for_the_cloud_init_user() {
    let sim = Sim::start_with(guest::config(0.001)).await;
    let tier = Tier::of(&sim);
    let k = key("op");
    let view = tier.boot_vm(105, "s1", "debian-12", "debian", &k).await;
    let session = ssh(&view, "debian", &k).await.unwrap();
    assert_eq!(
        run_ok(
            &*session,
            "whoami; sudo whoami; sudo -n -u root id -u; whoami"
        )
        .await,
        "debian\nroot\n0\ndebian\n"
    );
    let out = run(&*session, "sudo -u nobody true").await;
    assert_eq!(out.status, ExitStatus::Code(1));
    sim.handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_restarted_simulator_boots_its_running_vms_with_the_same_host_keys() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("sim.json");
    let config = || {
        let mut c = guest::config(0.001);
        c.state_file = Some(state.clone());
        c
    };
    let k = key("op");
    let sim = Sim::start_with(config()).await;
    let first = Tier::of(&sim)
        .boot_vm(106, "keep1", "debian-12", "debian", &k)
        .await;
    sim.handle.shutdown().await.unwrap();

    let sim = Sim::start_with(config()).await;
    let tier = Tier::of(&sim);
    let again = tier.wait_booted(106).await;
    assert_eq!(again["ssh"]["host_key"], first["ssh"]["host_key"]);
    let session = ssh(&again, "debian", &k).await.unwrap();
    assert_eq!(run_ok(&*session, "whoami").await, "debian\n");
    sim.handle.shutdown().await.unwrap();
}
