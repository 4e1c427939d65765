//! Real OpenSSH tools (`ssh`, `scp`, `ssh-keygen`) against our server and
//! with our client: implementations no one here wrote. Each test prints a
//! SKIPPED line and returns when a tool is not installed.
//!
//! Loopback only; OpenSSH is isolated from the user's configuration
//! (`-F /dev/null`, no agent, our own known-hosts file).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use homestak_sim::ssh::{self as simssh, Server, Shell, VmRoot, parse_authorized_keys};
use homestak_ssh::{
    Command, Destination, Error, HostKeyPolicy, Identity, KnownHosts, RusshTransport, Target,
    Transport,
};
use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey, PublicKey};

const GUARD: Duration = Duration::from_secs(60);

fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

macro_rules! require {
    ($($name:literal),+) => {
        $(
            if tool($name).is_none() {
                println!("SKIPPED: `{}` is not installed; this test needs the real OpenSSH tools", $name);
                return;
            }
        )+
    };
}

struct Vm {
    server: Server,
    dir: tempfile::TempDir,
}

async fn start_vm(ip: &str, user: &str, keys: Vec<PublicKey>) -> Vm {
    let dir = tempfile::tempdir().unwrap();
    let root = VmRoot::create(&dir.path().join("root")).unwrap();
    let config = simssh::Config::new(
        format!("{ip}:0").parse().unwrap(),
        user,
        keys,
        Arc::new(Shell::new(root, "vm-openssh")),
    );
    Vm {
        server: Server::start(config).await.unwrap(),
        dir,
    }
}

impl Vm {
    fn root(&self) -> PathBuf {
        self.dir.path().join("root").canonicalize().unwrap()
    }

    /// A known-hosts file holding the server's key, for OpenSSH.
    fn known_hosts(&self) -> PathBuf {
        let addr = self.server.local_addr();
        let path = self.dir.path().join("known_hosts");
        let key = self.server.host_key().to_openssh().unwrap();
        std::fs::write(&path, format!("[{}]:{} {key}\n", addr.ip(), addr.port())).unwrap();
        path
    }
}

/// Writes a private key where OpenSSH accepts it (mode 0600).
fn write_key(dir: &Path, name: &str, key: &PrivateKey) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, key.to_openssh(LineEnding::LF).unwrap().as_bytes()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn isolated_options(known_hosts: &Path) -> Vec<String> {
    [
        "-F",
        "/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("UserKnownHostsFile={}", known_hosts.display())])
    .collect()
}

async fn ssh(vm: &Vm, key: &Path, user: &str, known_hosts: &Path, command: &str) -> Output {
    let addr = vm.server.local_addr();
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.args(isolated_options(known_hosts))
        .arg("-i")
        .arg(key)
        .args(["-p", &addr.port().to_string()])
        .arg(format!("{user}@{}", addr.ip()))
        .arg(command)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(GUARD, cmd.output())
        .await
        .expect("hang guard")
        .unwrap()
}

async fn scp(
    vm: &Vm,
    key: &Path,
    user: &str,
    known_hosts: &Path,
    local: &Path,
    remote: &str,
) -> Output {
    let addr = vm.server.local_addr();
    let mut cmd = tokio::process::Command::new("scp");
    // -O: the SCP protocol (OpenSSH 9 defaults to SFTP, which we do not serve).
    cmd.arg("-O")
        .args(isolated_options(known_hosts))
        .arg("-i")
        .arg(key)
        .args(["-P", &addr.port().to_string()])
        .arg(local)
        .arg(format!("{user}@{}:{remote}", addr.ip()))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(GUARD, cmd.output())
        .await
        .expect("hang guard")
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn openssh_ssh_runs_commands_with_their_exit_codes() {
    require!("ssh");
    let key = PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519).unwrap();
    let vm = start_vm("127.0.0.31", "debian", vec![key.public_key().clone()]).await;
    let key_file = write_key(vm.dir.path(), "id_ed25519", &key);
    let known = vm.known_hosts();

    let out = ssh(
        &vm,
        &key_file,
        "debian",
        &known,
        "echo hello; id -un; cat /nope; exit 7",
    )
    .await;
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello\ndebian\n");
    assert!(text(&out.stderr).contains("cat: /nope: No such file or directory"));

    let out = ssh(&vm, &key_file, "debian", &known, "unknown-cmd").await;
    assert_eq!(out.status.code(), Some(127));
    assert!(text(&out.stderr).contains("command not found"));
}

#[tokio::test]
async fn openssh_is_refused_a_wrong_key_a_wrong_user_and_a_changed_host_key() {
    require!("ssh");
    let good = PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519).unwrap();
    let bad = PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519).unwrap();
    let vm = start_vm("127.0.0.32", "debian", vec![good.public_key().clone()]).await;
    let good_file = write_key(vm.dir.path(), "good", &good);
    let bad_file = write_key(vm.dir.path(), "bad", &bad);
    let known = vm.known_hosts();

    for (key, user) in [(&bad_file, "debian"), (&good_file, "root")] {
        let out = ssh(&vm, key, user, &known, "true").await;
        assert_eq!(out.status.code(), Some(255));
        assert!(
            text(&out.stderr).contains("Permission denied (publickey)"),
            "{}",
            text(&out.stderr)
        );
    }

    // A known-hosts entry with another key: OpenSSH must refuse the server.
    let other = PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519).unwrap();
    let addr = vm.server.local_addr();
    std::fs::write(
        &known,
        format!(
            "[{}]:{} {}\n",
            addr.ip(),
            addr.port(),
            other.public_key().to_openssh().unwrap()
        ),
    )
    .unwrap();
    let out = ssh(&vm, &good_file, "debian", &known, "true").await;
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("HOST IDENTIFICATION HAS CHANGED"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn openssh_scp_uploads_files_into_the_vm_and_cannot_escape_it() {
    require!("ssh", "scp");
    let key = PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519).unwrap();
    let vm = start_vm("127.0.0.33", "root", vec![key.public_key().clone()]).await;
    let key_file = write_key(vm.dir.path(), "id_ed25519", &key);
    let known = vm.known_hosts();

    let local = vm.dir.path().join("payload.bin");
    let payload: Vec<u8> = (0..500_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&local, &payload).unwrap();
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o755)).unwrap();

    let out = ssh(&vm, &key_file, "root", &known, "mkdir -p /opt/app").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    // To a file path, then into a directory.
    let out = scp(&vm, &key_file, "root", &known, &local, "/opt/app/tool").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = scp(&vm, &key_file, "root", &known, &local, "/opt/app/").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    for name in ["tool", "payload.bin"] {
        let on_host = vm.root().join("opt/app").join(name);
        assert_eq!(std::fs::read(&on_host).unwrap(), payload, "{name}");
        let mode = std::fs::metadata(&on_host).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755, "{name}");
    }
    let out = ssh(
        &vm,
        &key_file,
        "root",
        &known,
        "test -x /opt/app/tool && echo yes",
    )
    .await;
    assert_eq!(text(&out.stdout), "yes\n");

    let out = scp(&vm, &key_file, "root", &known, &local, "/../../escaped").await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("leaves the VM root"),
        "{}",
        text(&out.stderr)
    );
    assert!(!vm.dir.path().join("escaped").exists());
    assert!(!vm.dir.path().parent().unwrap().join("escaped").exists());
}

#[tokio::test]
async fn our_fingerprints_and_known_hosts_agree_with_openssh() {
    require!("ssh", "ssh-keygen");
    let key = PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519).unwrap();
    let vm = start_vm("127.0.0.34", "root", vec![key.public_key().clone()]).await;

    // ssh-keygen prints the same fingerprint as the server reports.
    let pubfile = vm.dir.path().join("host.pub");
    std::fs::write(&pubfile, vm.server.host_key().to_openssh().unwrap()).unwrap();
    let out = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&pubfile)
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).contains(&vm.server.host_key_fingerprint().to_string()),
        "{}",
        text(&out.stdout)
    );

    // A known-hosts file written by our accept-new policy satisfies
    // OpenSSH's strict checking.
    let known_path = vm.dir.path().join("ours_known_hosts");
    let addr = vm.server.local_addr();
    let target = Target::new(
        Destination::new(&addr.ip().to_string(), addr.port(), "root"),
        Identity::from_private_key(key.clone(), "test"),
        HostKeyPolicy::AcceptNew(KnownHosts::new(&known_path)),
    );
    RusshTransport::default().connect(&target).await.unwrap();
    let key_file = write_key(vm.dir.path(), "id", &key);
    let out = ssh(
        &vm,
        &key_file,
        "root",
        &known_path,
        "echo via-our-known-hosts",
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "via-our-known-hosts\n");
}

#[tokio::test]
async fn keys_made_by_ssh_keygen_work_with_our_client() {
    require!("ssh-keygen");
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str])] = &[
        ("id_ed25519", &["-t", "ed25519"]),
        ("id_rsa", &["-t", "rsa", "-b", "2048"]),
        ("id_rsa_pem", &["-t", "rsa", "-b", "2048", "-m", "PEM"]),
        ("id_ecdsa", &["-t", "ecdsa", "-b", "256"]),
    ];
    let mut identities = Vec::new();
    let mut authorized = String::new();
    for (name, args) in cases {
        let path = dir.path().join(name);
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-N", "", "-C", name, "-f"])
            .arg(&path)
            .args(*args)
            .status()
            .unwrap();
        assert!(status.success(), "{name}");
        identities.push(Identity::load(&path).unwrap_or_else(|e| panic!("{name}: {e}")));
        authorized.push_str(&std::fs::read_to_string(format!("{}.pub", path.display())).unwrap());
    }
    // The .pub files, as cloud-init's sshkeys would carry them.
    let keys = parse_authorized_keys(&authorized).unwrap();
    assert_eq!(keys.len(), cases.len());
    let vm = start_vm("127.0.0.35", "debian", keys).await;
    let addr = vm.server.local_addr();
    for identity in identities {
        let target = Target::new(
            Destination::new(&addr.ip().to_string(), addr.port(), "debian"),
            identity.clone(),
            HostKeyPolicy::Pinned(vm.server.host_key_fingerprint()),
        );
        let session = RusshTransport::default()
            .connect(&target)
            .await
            .unwrap_or_else(|e| panic!("{identity:?}: {e}"));
        let out = session.exec_ok(&Command::new("whoami")).await.unwrap();
        assert_eq!(out.stdout_text(), "debian\n");
    }

    // A passphrase-protected key gets a clear error.
    let locked = dir.path().join("id_locked");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "correct horse", "-f"])
        .arg(&locked)
        .status()
        .unwrap();
    assert!(status.success());
    let err = Identity::load(&locked).unwrap_err();
    assert!(matches!(err, Error::KeyEncrypted { .. }), "{err}");
}
