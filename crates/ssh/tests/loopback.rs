//! Our SSH client against our simulated SSH server, over loopback only.
//!
//! Keys are generated in each run; servers listen on port 0 of 127.0.0.0/8
//! addresses. Timeouts below are hang guards, never assertions.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use homestak_sim::ssh::{self as simssh, Context, Program, Server, Shell, VmRoot};
use homestak_ssh::{
    BoxFuture, ClientOptions, Command, Destination, Error, ErrorKind, ExitStatus, Fingerprint,
    HostKeyPolicy, Identity, KnownHosts, RusshTransport, Session, Stream, Target, Transport,
    Upload, WaitOptions,
};
use russh::keys::ssh_key::private::{EcdsaKeypair, RsaKeypair};
use russh::keys::{Algorithm, EcdsaCurve, PrivateKey};
use tokio::sync::Notify;

const GUARD: Duration = Duration::from_secs(60);

fn ed25519() -> PrivateKey {
    PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519).unwrap()
}

/// RSA generation is slow in debug builds: one key per test binary.
fn rsa() -> PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        RsaKeypair::random(&mut russh::keys::key::safe_rng(), 2048)
            .unwrap()
            .into()
    })
    .clone()
}

fn ecdsa() -> PrivateKey {
    EcdsaKeypair::random(&mut russh::keys::key::safe_rng(), EcdsaCurve::NistP256)
        .unwrap()
        .into()
}

struct Vm {
    server: Server,
    dir: tempfile::TempDir,
}

impl Vm {
    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("root").canonicalize().unwrap()
    }
}

async fn start_vm_with(
    ip: &str,
    user: &str,
    keys: &[&PrivateKey],
    shell: impl FnOnce(Shell) -> Shell,
) -> Vm {
    let dir = tempfile::tempdir().unwrap();
    let root = VmRoot::create(&dir.path().join("root")).unwrap();
    let shell = shell(Shell::new(root, "vm-test").with_address(ip.parse().unwrap()));
    let listen: SocketAddr = format!("{ip}:0").parse().unwrap();
    let config = simssh::Config::new(
        listen,
        user,
        keys.iter().map(|k| k.public_key().clone()).collect(),
        Arc::new(shell),
    );
    let server = Server::start(config).await.unwrap();
    Vm { server, dir }
}

async fn start_vm(ip: &str, user: &str, keys: &[&PrivateKey]) -> Vm {
    start_vm_with(ip, user, keys, |s| s).await
}

fn target(addr: SocketAddr, user: &str, key: &PrivateKey, policy: HostKeyPolicy) -> Target {
    Target::new(
        Destination::new(&addr.ip().to_string(), addr.port(), user),
        Identity::from_private_key(key.clone(), "test key"),
        policy,
    )
}

fn pinned(vm: &Vm) -> HostKeyPolicy {
    HostKeyPolicy::Pinned(vm.server.host_key_fingerprint())
}

async fn connect(vm: &Vm, user: &str, key: &PrivateKey) -> Box<dyn Session> {
    let t = target(vm.server.local_addr(), user, key, pinned(vm));
    RusshTransport::default().connect(&t).await.unwrap()
}

async fn run(session: &dyn Session, line: &str) -> homestak_ssh::ExecOutput {
    tokio::time::timeout(GUARD, session.exec(&Command::shell(line), &mut |_, _| {}))
        .await
        .expect("hang guard")
        .unwrap()
}

#[tokio::test]
async fn ed25519_rsa_and_ecdsa_keys_log_in_and_run_commands() {
    let (ed, rsa, ec) = (ed25519(), rsa(), ecdsa());
    let vm = start_vm("127.0.0.11", "debian", &[&ed, &rsa, &ec]).await;
    for key in [&ed, &rsa, &ec] {
        let session = connect(&vm, "debian", key).await;
        assert_eq!(session.host_key(), &vm.server.host_key_fingerprint());
        let out = run(&*session, "id -un && hostname && hostname -I").await;
        assert_eq!(out.status, ExitStatus::Code(0));
        assert_eq!(out.stdout_text(), "debian\nvm-test\n127.0.0.11 \n");
        session.close().await.unwrap();
    }
}

#[tokio::test]
async fn exit_codes_and_command_sequencing_follow_the_shell() {
    let key = ed25519();
    let vm = start_vm("127.0.0.12", "root", &[&key]).await;
    let session = connect(&vm, "root", &key).await;
    for (line, code, stdout) in [
        ("true", 0, ""),
        ("false", 1, ""),
        ("exit 3", 3, ""),
        ("false && echo no", 1, ""),
        ("false || echo yes", 0, "yes\n"),
        ("false; echo after", 0, "after\n"),
        ("echo a && false && echo b || echo c", 0, "a\nc\n"),
        ("id -u; uname -s", 0, "0\nLinux\n"),
        ("cloud-init status --wait", 0, "status: done\n"),
        ("no-such-tool --help", 127, ""),
        ("echo $HOME", 2, ""),
        ("echo a | cat", 2, ""),
    ] {
        let out = run(&*session, line).await;
        assert_eq!(out.status, ExitStatus::Code(code), "{line}: {out:?}");
        assert_eq!(out.stdout_text(), stdout, "{line}");
    }
    let out = run(&*session, "no-such-tool").await;
    assert_eq!(
        out.stderr_text(),
        "sh: 1: no-such-tool: command not found\n"
    );
}

#[tokio::test]
async fn output_is_streamed_in_the_order_it_was_written() {
    let key = ed25519();
    let vm = start_vm("127.0.0.13", "root", &[&key]).await;
    let session = connect(&vm, "root", &key).await;
    let mut seen: Vec<(Stream, String)> = Vec::new();
    let command = Command::shell("echo one; cat /missing; echo two; test -q x; echo three");
    let out = session
        .exec(&command, &mut |stream, data| {
            seen.push((stream, String::from_utf8_lossy(data).into_owned()))
        })
        .await
        .unwrap();
    assert!(out.success());
    // Merge consecutive chunks of one stream: chunking is not part of the contract.
    let mut merged: Vec<(Stream, String)> = Vec::new();
    for (stream, text) in seen {
        match merged.last_mut() {
            Some((s, t)) if *s == stream => t.push_str(&text),
            _ => merged.push((stream, text)),
        }
    }
    assert_eq!(
        merged,
        [
            (Stream::Stdout, "one\n".to_string()),
            (
                Stream::Stderr,
                "cat: /missing: No such file or directory\n".to_string()
            ),
            (Stream::Stdout, "two\n".to_string()),
            (
                Stream::Stderr,
                "sh: 1: test: unsupported expression: -q x\n".to_string()
            ),
            (Stream::Stdout, "three\n".to_string()),
        ]
    );
    assert_eq!(out.stdout_text(), "one\ntwo\nthree\n");
}

#[tokio::test]
async fn stdin_reaches_the_command() {
    let key = ed25519();
    let vm = start_vm("127.0.0.14", "root", &[&key]).await;
    let session = connect(&vm, "root", &key).await;
    let big = "line\n".repeat(100_000);
    let out = session
        .exec(&Command::new("cat").stdin(big.clone()), &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), big);
    // A command that ignores stdin still finishes.
    let out = session
        .exec(&Command::new("true").stdin(big), &mut |_, _| {})
        .await
        .unwrap();
    assert!(out.success());
}

#[tokio::test]
async fn wrong_key_and_wrong_user_are_refused() {
    let (good, bad) = (ed25519(), ed25519());
    let vm = start_vm("127.0.0.15", "debian", &[&good]).await;
    let transport = RusshTransport::default();
    for (user, key) in [("debian", &bad), ("root", &good)] {
        let t = target(vm.server.local_addr(), user, key, pinned(&vm));
        let err = transport.connect(&t).await.err().unwrap();
        assert!(matches!(err, Error::AuthRefused { .. }), "{err}");
        assert_eq!(err.kind(), ErrorKind::AuthRefused);
        let text = err.to_string();
        assert!(text.contains(&format!("{user}@127.0.0.15:")), "{text}");
        assert!(
            text.contains(
                &Identity::from_private_key(key.clone(), "k")
                    .fingerprint()
                    .to_string()
            )
        );
    }
}

#[tokio::test]
async fn passwords_are_refused() {
    struct Accept;
    impl russh::client::Handler for Accept {
        type Error = russh::Error;
        async fn check_server_key(
            &mut self,
            _: &russh::keys::PublicKeyOrCertificate,
        ) -> Result<bool, Self::Error> {
            Ok(true)
        }
    }
    let key = ed25519();
    let vm = start_vm("127.0.0.16", "root", &[&key]).await;
    let config = Arc::new(russh::client::Config::default());
    let mut handle = russh::client::connect(config, vm.server.local_addr(), Accept)
        .await
        .unwrap();
    let result = handle.authenticate_password("root", "root").await.unwrap();
    assert!(!result.success());
    let result = handle.authenticate_none("root").await.unwrap();
    assert!(!result.success());
}

#[tokio::test]
async fn host_key_policies_pin_record_and_refuse_changes() {
    let key = ed25519();
    let vm = start_vm("127.0.0.17", "root", &[&key]).await;
    let addr = vm.server.local_addr();
    let transport = RusshTransport::default();

    // Pinned: the right fingerprint connects, any other is refused.
    transport
        .connect(&target(addr, "root", &key, pinned(&vm)))
        .await
        .unwrap();
    let wrong = HostKeyPolicy::Pinned(Fingerprint::of(ed25519().public_key()));
    let err = transport
        .connect(&target(addr, "root", &key, wrong))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::HostKeyMismatch { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&vm.server.host_key_fingerprint().to_string())
    );

    // Strict refuses a host it does not know.
    let dir = tempfile::tempdir().unwrap();
    let known = KnownHosts::new(dir.path().join("known_hosts"));
    let err = transport
        .connect(&target(
            addr,
            "root",
            &key,
            HostKeyPolicy::Strict(known.clone()),
        ))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::HostKeyUnknown { .. }), "{err}");

    // Accept-new records it; strict then accepts it.
    let accept_new = HostKeyPolicy::AcceptNew(known.clone());
    transport
        .connect(&target(addr, "root", &key, accept_new.clone()))
        .await
        .unwrap();
    transport
        .connect(&target(
            addr,
            "root",
            &key,
            HostKeyPolicy::Strict(known.clone()),
        ))
        .await
        .unwrap();
    assert_eq!(
        known.recorded("127.0.0.17", addr.port()).await.unwrap(),
        [vm.server.host_key_fingerprint()]
    );

    // The VM is "reinstalled": same address and port, new host key.
    let old = vm.server.host_key_fingerprint();
    vm.server.shutdown().await;
    let root = VmRoot::create(&vm.dir.path().join("root")).unwrap();
    let config = simssh::Config::new(
        addr,
        "root",
        vec![key.public_key().clone()],
        Arc::new(Shell::new(root, "vm")),
    );
    let reborn = Server::start(config).await.unwrap();
    assert_ne!(reborn.host_key_fingerprint(), old);
    let err = transport
        .connect(&target(addr, "root", &key, accept_new))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::HostKeyMismatch { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::HostKey);
    assert!(!err.is_transient());
    // Nothing new was recorded.
    assert_eq!(
        known
            .recorded("127.0.0.17", addr.port())
            .await
            .unwrap()
            .len(),
        1
    );
    reborn.shutdown().await;
}

#[tokio::test]
async fn uploads_land_atomically_with_their_mode_and_read_back() {
    let key = ed25519();
    let vm = start_vm("127.0.0.18", "root", &[&key]).await;
    let session = connect(&vm, "root", &key).await;

    let binary: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let local = vm.dir.path().join("homestak-local");
    std::fs::write(&local, &binary).unwrap();
    run(&*session, "mkdir -p /usr/local/bin").await;
    session
        .upload(&Upload::file(&local, "/usr/local/bin/homestak", 0o755))
        .await
        .unwrap();
    let on_host = vm.root().join("usr/local/bin/homestak");
    assert_eq!(std::fs::read(&on_host).unwrap(), binary);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&on_host).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    assert!(
        run(&*session, "test -x /usr/local/bin/homestak")
            .await
            .success()
    );

    // Replacing keeps no temporary file behind and applies the new mode.
    session
        .upload(&Upload::bytes(
            "token: secret\n",
            "/usr/local/bin/homestak",
            0o600,
        ))
        .await
        .unwrap();
    let out = run(&*session, "cat /usr/local/bin/homestak").await;
    assert_eq!(out.stdout_text(), "token: secret\n");
    assert_eq!(
        std::fs::metadata(&on_host).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    let leftovers: Vec<_> = std::fs::read_dir(on_host.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, [std::ffi::OsString::from("homestak")]);

    // Names that need quoting survive the trip through the remote shell.
    run(&*session, "mkdir -p '/opt/my app'").await;
    session
        .upload(&Upload::bytes("q", "/opt/my app/it's here.txt", 0o644))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(vm.root().join("opt/my app/it's here.txt")).unwrap(),
        "q"
    );

    // Relative paths land in the user's home.
    session
        .upload(&Upload::bytes("x", "notes.txt", 0o644))
        .await
        .unwrap();
    assert_eq!(
        run(&*session, "cat /root/notes.txt").await.stdout_text(),
        "x"
    );
}

#[tokio::test]
async fn paths_cannot_escape_the_vm_directory() {
    let key = ed25519();
    let vm = start_vm("127.0.0.19", "root", &[&key]).await;
    let session = connect(&vm, "root", &key).await;
    // Something outside the VM root that an escape would reach.
    std::fs::write(vm.dir.path().join("outside.txt"), "host secret").unwrap();
    std::os::unix::fs::symlink(vm.dir.path(), vm.root().join("hostlink")).unwrap();

    for line in [
        "cat ../../outside.txt",
        "cat /../outside.txt",
        "cat /hostlink/outside.txt",
        "mkdir -p /hostlink/evil",
        "rm -f ../../outside.txt",
        "mv /root /../moved",
    ] {
        let out = run(&*session, line).await;
        assert_eq!(out.status, ExitStatus::Code(1), "{line}: {out:?}");
        assert!(
            out.stderr_text().contains("Permission denied"),
            "{line}: {out:?}"
        );
        assert!(out.stdout.is_empty(), "{line}");
    }
    assert!(
        !run(&*session, "test -e /hostlink/outside.txt")
            .await
            .success()
    );

    for remote in ["/../escaped", "/hostlink/escaped"] {
        let err = session
            .upload(&Upload::bytes("x", remote, 0o644))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Upload, "{remote}: {err}");
    }
    let entries: Vec<_> = std::fs::read_dir(vm.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        entries.iter().all(|e| e == "root" || e == "outside.txt"),
        "{entries:?}"
    );
    assert_eq!(
        std::fs::read_to_string(vm.dir.path().join("outside.txt")).unwrap(),
        "host secret"
    );
}

/// A program that blocks until the test releases it.
struct Gate(Arc<Notify>);

impl Program for Gate {
    fn run<'a>(&'a self, _args: &'a [String], cx: &'a mut Context) -> BoxFuture<'a, u32> {
        Box::pin(async move {
            cx.out("waiting\n").await;
            self.0.notified().await;
            cx.out("released\n").await;
            0
        })
    }
}

#[tokio::test]
async fn a_long_command_does_not_hold_up_other_channels_or_sessions() {
    let key = ed25519();
    let gate = Arc::new(Notify::new());
    let program = Arc::new(Gate(Arc::clone(&gate)));
    let vm = start_vm_with("127.0.0.20", "root", &[&key], |s| {
        s.with_program("gate", program)
    })
    .await;
    let session: Arc<dyn Session> = Arc::from(connect(&vm, "root", &key).await);
    let other: Arc<dyn Session> = Arc::from(connect(&vm, "root", &key).await);

    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let blocked = tokio::spawn({
        let session = Arc::clone(&session);
        async move {
            let mut started_tx = Some(started_tx);
            session
                .exec(&Command::new("gate"), &mut |_, data| {
                    if data.starts_with(b"waiting")
                        && let Some(tx) = started_tx.take()
                    {
                        let _ = tx.send(());
                    }
                })
                .await
        }
    });
    tokio::time::timeout(GUARD, started_rx)
        .await
        .expect("hang guard")
        .unwrap();

    // While the gate holds its channel, eight more commands run to the end
    // on the same session and on another one.
    let mut others = tokio::task::JoinSet::new();
    for i in 0..8 {
        let s = Arc::clone(if i % 2 == 0 { &session } else { &other });
        others.spawn(async move { (i, run(&*s, &format!("echo {i}")).await) });
    }
    let mut done = 0;
    while let Some(joined) = tokio::time::timeout(GUARD, others.join_next())
        .await
        .expect("hang guard")
    {
        let (i, out) = joined.unwrap();
        assert_eq!(out.stdout_text(), format!("{i}\n"));
        done += 1;
    }
    assert_eq!(done, 8);
    assert!(!blocked.is_finished());

    gate.notify_one();
    let out = tokio::time::timeout(GUARD, blocked)
        .await
        .expect("hang guard")
        .unwrap()
        .unwrap();
    assert_eq!(out.stdout_text(), "waiting\nreleased\n");
}

#[tokio::test]
async fn wait_for_ssh_succeeds_once_the_server_starts_and_the_key_is_installed() {
    let key = ed25519();
    // Reserve a port, then free it: nothing listens there yet.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.21:0").unwrap();
        l.local_addr().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let host_key = ed25519();
    let fingerprint = Fingerprint::of(host_key.public_key());
    let t = target(addr, "debian", &key, HostKeyPolicy::Pinned(fingerprint));
    let options = WaitOptions {
        timeout: Duration::from_secs(30),
        initial_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
    };
    let transport = RusshTransport::default();
    let waiting = transport.wait_for_ssh(&t, &options);
    let boot = async {
        // The VM boots a little later, and cloud-init installs the key later still.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let root = VmRoot::create(&dir.path().join("root")).unwrap();
        let mut config =
            simssh::Config::new(addr, "debian", Vec::new(), Arc::new(Shell::new(root, "vm")));
        config.host_key = Some(host_key.clone());
        let server = Server::start(config).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.authorize("debian", vec![key.public_key().clone()]);
        server
    };
    let (session, server) = tokio::time::timeout(GUARD, async { tokio::join!(waiting, boot) })
        .await
        .expect("hang guard");
    let session = session.unwrap();
    assert!(run(&*session, "true").await.success());
    server.shutdown().await;
}

#[tokio::test]
async fn wait_for_ssh_gives_up_cleanly_when_nothing_listens() {
    let key = ed25519();
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.22:0").unwrap();
        l.local_addr().unwrap()
    };
    let t = target(addr, "root", &key, HostKeyPolicy::InsecureAcceptAny);
    let options = WaitOptions {
        timeout: Duration::from_millis(300),
        initial_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(50),
    };
    let err = tokio::time::timeout(GUARD, RusshTransport::default().wait_for_ssh(&t, &options))
        .await
        .expect("hang guard")
        .err()
        .unwrap();
    let Error::WaitTimedOut {
        attempts,
        last_kind,
        ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(*last_kind, ErrorKind::PortClosed);
    assert!(*attempts >= 2, "{attempts}");
    let last = std::error::Error::source(&err).unwrap();
    assert!(last.to_string().contains("port closed"), "{last}");
}

#[tokio::test]
async fn failures_name_destination_and_command_but_never_secrets() {
    let key = ed25519();
    let vm = start_vm("127.0.0.23", "root", &[&key]).await;
    let session = connect(&vm, "root", &key).await;
    let command = Command::new("cat")
        .arg("/etc/missing")
        .secret_arg("hunter2");
    let err = session.exec_ok(&command).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("root@127.0.0.23:"), "{text}");
    assert!(text.contains("cat /etc/missing ***"), "{text}");
    assert!(text.contains("No such file or directory"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!format!("{err:?}").contains("hunter2"));
}

#[tokio::test]
async fn commands_time_out_and_shutdown_ends_running_commands() {
    let key = ed25519();
    let vm = start_vm("127.0.0.24", "root", &[&key]).await;
    let session = connect(&vm, "root", &key).await;
    let err = session
        .exec_ok(
            &Command::new("sleep")
                .arg("600")
                .timeout(Duration::from_millis(200)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    // The session is still usable afterwards.
    assert!(run(&*session, "true").await.success());

    let addr = vm.server.local_addr();
    let sleeping = Command::new("sleep").arg("600");
    let mut ignore = |_: Stream, _: &[u8]| {};
    let running = session.exec(&sleeping, &mut ignore);
    let stop = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        vm.server.shutdown().await;
    };
    let (result, ()) = tokio::time::timeout(GUARD, async { tokio::join!(running, stop) })
        .await
        .expect("hang guard");
    assert!(result.is_err(), "{result:?}");
    let t = target(addr, "root", &key, HostKeyPolicy::InsecureAcceptAny);
    let err = RusshTransport::new(ClientOptions::default())
        .connect(&t)
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::PortClosed, "{err}");
}
