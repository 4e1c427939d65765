//! A VM's users: `useradd`, `usermod`, `id`, `getent`, `chown`, `install
//! -d`, `stat -c` and `visudo -cf` as strict as on Debian; a user made
//! this way logs in with the keys of their `authorized_keys` (under sshd's
//! StrictModes) and gets `sudo` from a NOPASSWD drop-in only.

use crate::support::Sim;
use crate::support::guest::{self, Tier, key, run, run_ok, ssh};

fn code(out: &homestak_ssh::ExecOutput) -> Option<u32> {
    out.status.code()
}

#[tokio::test]
async fn user_commands_are_strict_and_a_new_user_logs_in_and_sudoes_by_drop_in() {
    let sim = Sim::start_with(guest::config(0.001)).await;
    let top = Tier::of(&sim);
    let k = key("ops");
    let view = top.boot_vm(100, "u1", "debian-13", "debian", &k).await;
    let s = ssh(&view, "debian", &k).await.unwrap();

    // The cloud-init user is in the databases, in group sudo.
    assert_eq!(run_ok(&*s, "id -nG debian").await.trim(), "debian sudo");
    assert!(
        run_ok(&*s, "getent passwd root")
            .await
            .starts_with("root:x:0:0:")
    );

    // useradd: root only, options checked, names checked, groups checked.
    let out = run(&*s, "useradd -m homestak").await;
    assert_eq!(code(&out), Some(1), "{}", out.stderr_text());
    assert_eq!(code(&run(&*s, "sudo useradd -x homestak").await), Some(2));
    assert_eq!(code(&run(&*s, "sudo useradd").await), Some(2));
    assert_eq!(code(&run(&*s, "sudo useradd Bad.Name").await), Some(3));
    let out = run(&*s, "sudo useradd -G wheel homestak").await;
    assert_eq!(code(&out), Some(6));
    assert!(out.stderr_text().contains("group 'wheel' does not exist"));
    assert_eq!(code(&run(&*s, "id homestak").await), Some(1));
    assert_eq!(code(&run(&*s, "getent passwd homestak").await), Some(2));

    run_ok(&*s, "sudo useradd -m -s /bin/bash homestak").await;
    let out = run(&*s, "sudo useradd -m -s /bin/bash homestak").await;
    assert_eq!(code(&out), Some(9));
    assert_eq!(
        out.stderr_text(),
        "useradd: user 'homestak' already exists\n"
    );
    let entry = run_ok(&*s, "getent passwd homestak").await;
    assert_eq!(entry, "homestak:x:1001:1001::/home/homestak:/bin/bash\n");
    assert_eq!(
        run_ok(&*s, "stat -c '%U:%G %a' /home/homestak").await,
        "homestak:homestak 700\n"
    );
    assert_eq!(run_ok(&*s, "id -nG homestak").await.trim(), "homestak");

    // usermod: -a only with -G, users and groups must exist.
    assert_eq!(code(&run(&*s, "sudo usermod -a homestak").await), Some(2));
    assert_eq!(
        code(&run(&*s, "sudo usermod -aG sudo ghost").await),
        Some(6)
    );
    assert_eq!(
        code(&run(&*s, "sudo usermod -aG wheel homestak").await),
        Some(6)
    );
    assert_eq!(code(&run(&*s, "usermod -aG sudo homestak").await), Some(1));
    run_ok(&*s, "sudo usermod -aG sudo homestak").await;
    run_ok(&*s, "sudo usermod -aG sudo homestak").await;
    assert_eq!(run_ok(&*s, "id -nG homestak").await.trim(), "homestak sudo");
    assert!(
        run_ok(&*s, "getent group sudo")
            .await
            .starts_with("sudo:x:27:debian,homestak")
    );

    // install -d and chown: owners and groups must exist; root only.
    let dir = "/home/homestak/.ssh";
    assert_eq!(
        code(&run(&*s, &format!("sudo install -d -m 700 -o ghost {dir}")).await),
        Some(1)
    );
    assert_eq!(
        code(&run(&*s, &format!("install -d -m 700 -o homestak {dir}")).await),
        Some(1)
    );
    assert_eq!(code(&run(&*s, "sudo install -m 600 a b").await), Some(1));
    run_ok(
        &*s,
        &format!("sudo install -d -m 700 -o homestak -g homestak {dir}"),
    )
    .await;
    assert_eq!(
        run_ok(&*s, &format!("stat -c '%U:%G %a' {dir}")).await,
        "homestak:homestak 700\n"
    );
    let keys = format!("{dir}/authorized_keys");
    let k2 = key("homestak");
    run_ok(&*s, &format!("sudo sh -c 'echo \"{}\" > {keys}'", k2.line)).await;
    run_ok(&*s, &format!("sudo chmod 600 {keys}")).await;
    assert_eq!(run_ok(&*s, &format!("stat -c %U {keys}")).await, "root\n");
    assert_eq!(
        code(&run(&*s, &format!("sudo chown ghost {keys}")).await),
        Some(1)
    );
    assert_eq!(
        code(&run(&*s, "sudo chown homestak /nowhere").await),
        Some(1)
    );
    assert_eq!(
        code(&run(&*s, &format!("chown homestak {keys}")).await),
        Some(1)
    );
    run_ok(&*s, &format!("sudo chown homestak: {keys}")).await;
    assert_eq!(
        run_ok(&*s, &format!("stat -c '%U:%G %a %n' {keys}")).await,
        format!("homestak:homestak 600 {keys}\n")
    );

    // The new user logs in with that key, and only that key.
    assert!(ssh(&view, "homestak", &k).await.is_err());
    let h = ssh(&view, "homestak", &k2).await.unwrap();
    assert_eq!(run_ok(&*h, "id -un").await, "homestak\n");
    assert_eq!(run_ok(&*h, "pwd").await, "/home/homestak\n");
    // No sudo without a drop-in.
    let out = run(&*h, "sudo -n true").await;
    assert_eq!(code(&out), Some(1));
    assert!(out.stderr_text().contains("a password is required"));

    // visudo -cf: the NOPASSWD line and comments parse, anything else not.
    run_ok(&*s, "echo 'homestak ALL=(ALL) NOPASSWD: ALL' > stage").await;
    assert_eq!(run_ok(&*s, "visudo -cf stage").await, "stage: parsed OK\n");
    run_ok(&*s, "echo 'homestak ALL=(ALL) PASSWD ALL' > bad").await;
    let out = run(&*s, "visudo -cf bad").await;
    assert_eq!(code(&out), Some(1));
    assert!(out.stderr_text().contains("parse error in bad near line 1"));
    assert_eq!(code(&run(&*s, "visudo -c nothing").await), Some(1));
    assert_eq!(code(&run(&*s, "visudo -cf /missing").await), Some(1));

    // A drop-in sudo skips (a dot in the name, or world-writable) grants nothing.
    run_ok(
        &*s,
        "sudo mkdir -p /etc/sudoers.d && sudo mv stage /etc/sudoers.d/homestak.conf",
    )
    .await;
    assert_eq!(code(&run(&*h, "sudo -n true").await), Some(1));
    run_ok(&*s, "sudo mv /etc/sudoers.d/homestak.conf /etc/sudoers.d/homestak && sudo chmod 666 /etc/sudoers.d/homestak").await;
    assert_eq!(code(&run(&*h, "sudo -n true").await), Some(1));
    run_ok(&*s, "sudo chmod 440 /etc/sudoers.d/homestak").await;
    run_ok(&*h, "sudo -n true").await;
    assert_eq!(run_ok(&*h, "sudo id -un").await, "root\n");

    // StrictModes: a world-writable authorized_keys is ignored.
    run_ok(&*s, &format!("sudo chmod 666 {keys}")).await;
    assert!(ssh(&view, "homestak", &k2).await.is_err());
    run_ok(&*s, &format!("sudo chmod 600 {keys}")).await;
    assert!(ssh(&view, "homestak", &k2).await.is_ok());

    // The users survive a restart (text files in the VM's root).
    drop(s);
    drop(h);
    top.power(100, "stop").await;
    top.wait_down(100).await;
    top.power(100, "start").await;
    let view = top.wait_booted(100).await;
    let h = ssh(&view, "homestak", &k2).await.unwrap();
    assert_eq!(
        run_ok(&*h, "sudo -n id -nG homestak").await.trim(),
        "homestak sudo"
    );
}
