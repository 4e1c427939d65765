//! Downloads (SCP `scp -f`): our client against the simulated server, and
//! the real OpenSSH `scp -O` against the simulated server (skipped with a
//! message when OpenSSH is not installed). Loopback only.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use homestak_sim::ssh::{self as simssh, Server, Shell, VmRoot};
use homestak_ssh::{
    Destination, Download, Error, ErrorKind, HostKeyPolicy, Identity, RusshTransport, Session,
    Target, Transport,
};
use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey};

const GUARD: Duration = Duration::from_secs(60);

struct Vm {
    server: Server,
    dir: tempfile::TempDir,
    key: PrivateKey,
}

impl Vm {
    async fn start(ip: &str) -> Vm {
        let key =
            PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = VmRoot::create(&dir.path().join("root")).unwrap();
        let config = simssh::Config::new(
            format!("{ip}:0").parse().unwrap(),
            "root",
            vec![key.public_key().clone()],
            Arc::new(Shell::new(root, "vm-download")),
        );
        let server = Server::start(config).await.unwrap();
        Vm { server, dir, key }
    }

    /// Writes `data` at guest path `guest` (absolute) in the VM root.
    fn put(&self, guest: &str, data: &[u8], mode: u32) {
        let host = self
            .dir
            .path()
            .join("root")
            .join(guest.trim_start_matches('/'));
        std::fs::create_dir_all(host.parent().unwrap()).unwrap();
        std::fs::write(&host, data).unwrap();
        std::fs::set_permissions(&host, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    async fn session(&self) -> Box<dyn Session> {
        let addr = self.server.local_addr();
        let target = Target::new(
            Destination::new(&addr.ip().to_string(), addr.port(), "root"),
            Identity::from_private_key(self.key.clone(), "test key"),
            HostKeyPolicy::Pinned(self.server.host_key_fingerprint()),
        );
        RusshTransport::default().connect(&target).await.unwrap()
    }
}

fn payload(len: u32) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

async fn download(
    session: &dyn Session,
    remote: &str,
    local: &std::path::Path,
) -> Result<u64, Error> {
    let d = Download::new(remote, local);
    tokio::time::timeout(GUARD, session.download(&d))
        .await
        .expect("hang guard")
}

#[tokio::test]
async fn downloads_arrive_whole_with_their_mode() {
    let vm = Vm::start("127.0.0.41").await;
    // Bigger than the SSH window, so flow control is exercised.
    let data = payload(3_000_000);
    vm.put("/opt/images/debian-12/debian-12-custom.qcow2", &data, 0o640);
    vm.put("/root/empty", b"", 0o644);
    let session = vm.session().await;
    let out = tempfile::tempdir().unwrap();

    let local = out.path().join("image.qcow2");
    let size = download(
        &*session,
        "/opt/images/debian-12/debian-12-custom.qcow2",
        &local,
    )
    .await
    .unwrap();
    assert_eq!(size, data.len() as u64);
    assert_eq!(std::fs::read(&local).unwrap(), data);
    let mode = std::fs::metadata(&local).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);

    // Relative to the home directory; an empty file.
    let empty = out.path().join("empty");
    assert_eq!(download(&*session, "empty", &empty).await.unwrap(), 0);
    assert_eq!(std::fs::read(&empty).unwrap(), b"");

    // Nothing but the two files: no temporary left behind.
    let mut names: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["empty", "image.qcow2"]);
}

#[tokio::test]
async fn a_missing_file_a_directory_or_an_escape_fail_and_leave_nothing() {
    let vm = Vm::start("127.0.0.42").await;
    vm.put("/opt/x/file", b"x", 0o644);
    let session = vm.session().await;
    let out = tempfile::tempdir().unwrap();
    let local = out.path().join("got");
    // An old copy stays as it was when the download fails.
    std::fs::write(&local, b"old").unwrap();

    for (remote, expected) in [
        ("/opt/x/nope", "No such file or directory"),
        ("/opt/x", "not a regular file"),
        ("/../../etc/passwd", "leaves the VM root"),
    ] {
        let err = download(&*session, remote, &local).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Download, "{err}");
        match &err {
            Error::DownloadRefused { message, .. } => {
                assert!(message.contains(expected), "{remote}: {message}")
            }
            other => panic!("{remote}: {other:?}"),
        }
        assert!(err.to_string().contains(remote), "{err}");
    }
    assert_eq!(std::fs::read(&local).unwrap(), b"old");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 1);

    // A local directory that does not exist: a local write error.
    let err = download(&*session, "/opt/x/file", &out.path().join("no/such/dir/f"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DownloadWrite { .. }), "{err:?}");
}

fn tool(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

#[tokio::test]
async fn openssh_scp_downloads_from_the_simulated_server() {
    if !tool("scp") || !tool("ssh") {
        println!("SKIPPED: `scp` is not installed; this test needs the real OpenSSH tools");
        return;
    }
    let vm = Vm::start("127.0.0.43").await;
    let data = payload(700_000);
    vm.put("/opt/images/a.qcow2", &data, 0o644);
    let key_file = vm.dir.path().join("id_ed25519");
    std::fs::write(
        &key_file,
        vm.key.to_openssh(LineEnding::LF).unwrap().as_bytes(),
    )
    .unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let addr = vm.server.local_addr();
    let known = vm.dir.path().join("known_hosts");
    let host_key = vm.server.host_key().to_openssh().unwrap();
    std::fs::write(
        &known,
        format!("[{}]:{} {host_key}\n", addr.ip(), addr.port()),
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();

    let scp = |remote: &str, local: &std::path::Path| {
        let mut cmd = tokio::process::Command::new("scp");
        // -O: the SCP protocol (OpenSSH 9 defaults to SFTP, which we do not serve).
        cmd.args([
            "-O",
            "-p",
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
        .args(["-P", &addr.port().to_string()])
        .arg(format!("root@{}:{remote}", addr.ip()))
        .arg(local)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
        cmd
    };
    let local = out.path().join("a.qcow2");
    let got = tokio::time::timeout(GUARD, scp("/opt/images/a.qcow2", &local).output())
        .await
        .expect("hang guard")
        .unwrap();
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(std::fs::read(&local).unwrap(), data);

    let got = tokio::time::timeout(
        GUARD,
        scp("/opt/images/none", &out.path().join("n")).output(),
    )
    .await
    .expect("hang guard")
    .unwrap();
    assert!(!got.status.success());
    let stderr = String::from_utf8_lossy(&got.stderr);
    assert!(stderr.contains("No such file or directory"), "{stderr}");
}
