//! `user-setup` end to end against the in-process simulator: on a plain
//! debian-13 VM reached as its cloud-init user (with sudo), the scenario
//! creates the homestak user in group sudo, its NOPASSWD drop-in and the
//! site's key in its authorized_keys; the user then logs in and runs
//! `sudo -n true`. A second run changes nothing; a third repairs what was
//! broken in between. Loopback only.

use std::time::{Duration, Instant};

use homestak_api::Outcome;
use homestak_engine::scenario::{self, Context, Ctx, Inputs, RunOptions, ScenarioRun, registry};
use homestak_ssh::{
    Command, Destination, HostKeyPolicy, Identity, RusshTransport, Session, Target, Transport,
};

const SSH_PORT: u16 = 2222;

async fn call(
    sim: &homestak_sim::Handle,
    method: &str,
    path: &str,
    form: &[(&str, &str)],
) -> serde_json::Value {
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let resp = client
        .request(method.parse().unwrap(), format!("{}{path}", sim.url()))
        .header("Authorization", format!("PVEAPIToken={}", sim.token()))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    assert!(status.is_success(), "{method} {path}: {status} {body}");
    body
}

/// A booted debian-13 VM whose cloud-init user `debian` takes `key`; its
/// `/_sim/vms` view.
async fn debian_vm(sim: &homestak_sim::Handle, key: &str) -> serde_json::Value {
    let keys = homestak_pve::form::encode_component(key);
    call(
        sim,
        "POST",
        "/api2/json/nodes/pve/qemu",
        &[
            ("vmid", "100"),
            ("name", "box"),
            (
                "scsi0",
                "local-zfs:0,import-from=local:import/debian-13.qcow2",
            ),
            ("ide2", "local-zfs:cloudinit"),
            ("ciuser", "debian"),
            ("sshkeys", &keys),
            ("net0", "virtio,bridge=vmbr0"),
            ("agent", "1"),
            ("start", "1"),
        ],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let vm = call(sim, "GET", "/_sim/vms/100", &[]).await;
        if vm["data"]["guest"]["booted"] == true {
            return vm["data"].clone();
        }
        assert!(Instant::now() < deadline, "hang guard: {vm}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn login(vm: &serde_json::Value, user: &str, key: &Identity) -> Box<dyn Session> {
    let host_key = vm["guest"]["ssh"]["host_key"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let target = Target::new(
        Destination::new(vm["address"].as_str().unwrap(), SSH_PORT, user),
        key.clone(),
        HostKeyPolicy::Pinned(host_key),
    );
    RusshTransport::default().connect(&target).await.unwrap()
}

async fn out(s: &dyn Session, line: &str) -> String {
    s.exec_ok(&Command::shell(line))
        .await
        .unwrap()
        .stdout_text()
}

async fn run(inputs: &Inputs) -> ScenarioRun {
    let registry::Lookup::Found(def) = registry::find("user-setup") else {
        panic!("user-setup is not registered");
    };
    let mut ctx = Ctx::new(inputs.clone(), Context::new());
    let run = tokio::time::timeout(
        Duration::from_secs(120),
        scenario::run(
            def,
            &mut ctx,
            &RunOptions::default(),
            std::future::pending(),
            &mut |_, _| {},
        ),
    )
    .await
    .expect("hang guard");
    assert_eq!(run.outcome, Outcome::Converged, "{:?}", run.error);
    assert_eq!(
        ctx.context.get_str("homestak_user").as_deref(),
        Some("homestak")
    );
    run
}

fn messages(run: &ScenarioRun) -> Vec<(&'static str, String)> {
    run.phases
        .iter()
        .map(|p| (p.name, p.message.clone()))
        .collect()
}

/// What the scenario leaves on the VM, read as the cloud-init user.
async fn state(s: &dyn Session) -> String {
    out(
        s,
        "getent passwd homestak; id -nG homestak; sudo cat /etc/sudoers.d/homestak; \
         sudo stat -c '%U:%G %a %n' /home/homestak /home/homestak/.ssh /home/homestak/.ssh/authorized_keys /etc/sudoers.d/homestak; \
         sudo cat /home/homestak/.ssh/authorized_keys; ls -a /etc/sudoers.d",
    )
    .await
}

#[tokio::test]
async fn user_setup_creates_the_user_and_a_second_run_changes_nothing() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let site_dir = dir.path().join("site");
    std::fs::create_dir_all(&site_dir).unwrap();
    let key_path = dir.path().join("id_ed25519");
    let identity = Identity::generate_to(&key_path).unwrap();
    let line = format!("{} ops@lab", identity.public_key_openssh());
    std::fs::write(site_dir.join("site.yaml"), "defaults: {}\n").unwrap();
    std::fs::write(
        site_dir.join("secrets.yaml"),
        format!("ssh_keys:\n  ops: \"{line}\"\n"),
    )
    .unwrap();
    let mut config = homestak_sim::Config::with_defaults();
    config.listen = Some("127.0.0.1:0".parse().unwrap());
    config.time_scale = 0.002;
    config.ssh_port = SSH_PORT;
    let sim = homestak_sim::Simulator::start(config).await.unwrap();
    let vm = debian_vm(&sim, &line).await;
    let admin = login(&vm, "debian", &identity).await;
    let inputs = Inputs {
        remote: vm["address"].as_str().map(String::from),
        ssh_user: Some("debian".into()),
        ssh_port: Some(SSH_PORT),
        ssh_key: Some(key_path.clone()),
        site_root: Some(site_dir.clone()),
        state_dir: dir.path().join("state"),
        ..Inputs::default()
    };

    // Before: no such user, and the key does not log in as it.
    assert!(admin.exec_ok(&Command::shell("id homestak")).await.is_err());
    let first = run(&inputs).await;
    let names: Vec<&str> = first.phases.iter().map(|p| p.name).collect();
    assert_eq!(
        names,
        ["ensure_user", "setup_sudo", "setup_ssh_keys", "verify_user"]
    );
    let after = state(&*admin).await;
    let expected = format!(
        "homestak:x:1001:1001::/home/homestak:/bin/bash\n\
         homestak sudo\n\
         # homestak: password-less sudo for homestak\nhomestak ALL=(ALL) NOPASSWD:ALL\n\
         homestak:homestak 700 /home/homestak\n\
         homestak:homestak 700 /home/homestak/.ssh\n\
         homestak:homestak 600 /home/homestak/.ssh/authorized_keys\n\
         root:root 440 /etc/sudoers.d/homestak\n\
         {line}\n"
    );
    assert!(after.starts_with(&expected), "{after}");
    // The staged drop-in is gone.
    assert!(!after.contains("homestak-new"), "{after}");

    // The new user logs in with the site's key and has sudo.
    let user = login(&vm, "homestak", &identity).await;
    assert_eq!(out(&*user, "id -un").await, "homestak\n");
    out(&*user, "sudo -n true").await;
    let first_took = started.elapsed();

    // A second run changes nothing.
    let second_started = Instant::now();
    let second = run(&inputs).await;
    for (phase, message) in &messages(&second)[..3] {
        assert!(message.ends_with("(no change)"), "{phase}: {message}");
    }
    assert_eq!(state(&*admin).await, after);
    let second_took = second_started.elapsed();

    // Broken in between: the drop-in removed, the keys file opened up and
    // emptied. A third run repairs exactly that.
    out(&*admin, "sudo rm /etc/sudoers.d/homestak").await;
    out(
        &*admin,
        "sudo sh -c 'echo \"# kept\" > /home/homestak/.ssh/authorized_keys'",
    )
    .await;
    out(
        &*admin,
        "sudo chmod 644 /home/homestak/.ssh/authorized_keys",
    )
    .await;
    let third = run(&inputs).await;
    let m = messages(&third);
    assert!(m[0].1.ends_with("(no change)"), "{:?}", m[0]);
    assert!(
        m[1].1.starts_with("wrote /etc/sudoers.d/homestak"),
        "{:?}",
        m[1]
    );
    assert!(m[2].1.contains("1 keys added"), "{:?}", m[2]);
    let repaired = state(&*admin).await;
    assert_eq!(
        repaired,
        after.replacen(&format!("{line}\n"), &format!("# kept\n{line}\n"), 1)
    );

    // A key that is not the site's cannot verify the user: named, with the fix.
    let stranger_path = dir.path().join("stranger");
    Identity::generate_to(&stranger_path).unwrap();
    let mut stranger = inputs.clone();
    stranger.ssh_key = Some(stranger_path);
    let registry::Lookup::Found(def) = registry::find("user-setup") else {
        unreachable!()
    };
    let verify = (def.phases)()
        .into_iter()
        .find(|p| p.name == "verify_user")
        .unwrap();
    let mut ctx = Ctx::new(stranger, Context::new());
    let err = (verify.run)(&mut ctx).await.unwrap_err();
    let err = homestak_base::error_chain(&err);
    assert!(err.contains("not among secrets.yaml ssh_keys"), "{err}");

    println!(
        "user-setup: first run {:.2}s (with VM boot {:.2}s), second run {:.2}s",
        first.duration.as_secs_f64(),
        first_took.as_secs_f64(),
        second_took.as_secs_f64()
    );
    sim.shutdown().await.unwrap();
}
