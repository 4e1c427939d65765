//! A scripted [`Transport`] for controller tests: expected commands get
//! canned output and exit codes, uploads are recorded, and connection
//! attempts can be made to fail first (to exercise `wait_for_ssh`).
//!
//! ```
//! use homestak_ssh::fake::{Reply, ScriptedTransport};
//! use homestak_ssh::{Command, Transport};
//! # async fn demo(target: homestak_ssh::Target) -> Result<(), homestak_ssh::Error> {
//! let fake = ScriptedTransport::new();
//! fake.expect("cloud-init status --wait", Reply::ok("status: done\n"));
//! let session = fake.connect(&target).await?;
//! session.exec_ok(&Command::shell("cloud-init status --wait")).await?;
//! assert!(fake.unmet().is_empty());
//! # Ok(()) }
//! ```
//!
//! Matching: a command first matches the oldest unused [`expect`]ation with
//! the same line (each is used once), then any [`stub`] (used any number of
//! times). A command matching nothing fails with [`Error::Unscripted`] and
//! is still recorded, so a test sees what was attempted.
//!
//! [`expect`]: ScriptedTransport::expect
//! [`stub`]: ScriptedTransport::stub

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use russh::keys::{Algorithm, PrivateKey, PublicKey};

use super::command::Stream;
use super::{
    BoxFuture, Command, Destination, Download, Error, ExecOutput, ExitStatus, Fingerprint,
    OutputSink, Session, Target, Transport, TrustedKey, Upload, UploadSource,
};

/// A canned answer to a command.
#[derive(Clone, Debug)]
pub struct Reply {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: ExitStatus,
}

impl Reply {
    /// Exit 0 with this stdout.
    pub fn ok(stdout: impl Into<Vec<u8>>) -> Self {
        Reply {
            stdout: stdout.into(),
            stderr: Vec::new(),
            status: ExitStatus::Code(0),
        }
    }

    /// Exit `code` with this stderr.
    pub fn fail(code: u32, stderr: impl Into<Vec<u8>>) -> Self {
        Reply {
            stdout: Vec::new(),
            stderr: stderr.into(),
            status: ExitStatus::Code(code),
        }
    }
}

/// How a scripted connection attempt fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectFailure {
    PortClosed,
    Timeout,
    AuthRefused,
    HostKeyMismatch,
}

/// A command the fake was asked to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Executed {
    pub destination: Destination,
    /// The line as sent (secrets included: this is test memory).
    pub line: String,
    pub stdin: Option<Vec<u8>>,
}

/// A file the fake was asked to upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedUpload {
    pub destination: Destination,
    pub remote_path: String,
    pub mode: u32,
    pub data: Vec<u8>,
}

#[derive(Default)]
struct State {
    connect_failures: VecDeque<ConnectFailure>,
    connect_attempts: u32,
    expectations: Vec<(String, Reply, bool)>,
    stubs: Vec<(Match, Reply)>,
    executed: Vec<Executed>,
    uploads: Vec<RecordedUpload>,
    /// Files a download can fetch: remote path → contents.
    remote_files: Vec<(String, Vec<u8>)>,
}

enum Match {
    Exact(String),
    Prefix(String),
}

/// The scripted fake. Clones share the same script and records.
#[derive(Clone)]
pub struct ScriptedTransport {
    state: Arc<Mutex<State>>,
    host_key: PublicKey,
}

impl Default for ScriptedTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl ScriptedTransport {
    /// A fake whose server presents a freshly generated ed25519 host key.
    pub fn new() -> Self {
        let host_key = PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519)
            .map(|k| k.public_key().clone());
        // Ed25519 generation has no failure mode; fall back to a fixed key
        // rather than panic if that ever changes.
        let host_key = host_key.unwrap_or_else(|_| fixed_key());
        Self::with_host_key(host_key)
    }

    /// A fake whose server presents `host_key` (checked against the
    /// target's host-key policy like a real server's).
    pub fn with_host_key(host_key: PublicKey) -> Self {
        ScriptedTransport {
            state: Arc::default(),
            host_key,
        }
    }

    /// The host key the fake server presents.
    pub fn host_key(&self) -> &PublicKey {
        &self.host_key
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic in another test thread must not hide this test's records.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Expects `line` once, answering `reply`.
    pub fn expect(&self, line: &str, reply: Reply) -> &Self {
        self.state()
            .expectations
            .push((line.to_string(), reply, false));
        self
    }

    /// Answers `line` with `reply` any number of times.
    pub fn stub(&self, line: &str, reply: Reply) -> &Self {
        self.state()
            .stubs
            .push((Match::Exact(line.to_string()), reply));
        self
    }

    /// Answers every line starting with `prefix` with `reply`.
    pub fn stub_prefix(&self, prefix: &str, reply: Reply) -> &Self {
        self.state()
            .stubs
            .push((Match::Prefix(prefix.to_string()), reply));
        self
    }

    /// Makes the next connection attempts fail, in this order.
    pub fn fail_connects(&self, failures: impl IntoIterator<Item = ConnectFailure>) -> &Self {
        self.state().connect_failures.extend(failures);
        self
    }

    /// How many times `connect` was called.
    pub fn connect_attempts(&self) -> u32 {
        self.state().connect_attempts
    }

    /// Every command run, in order.
    pub fn executed(&self) -> Vec<Executed> {
        self.state().executed.clone()
    }

    /// Just the lines of [`executed`](Self::executed).
    pub fn executed_lines(&self) -> Vec<String> {
        self.state()
            .executed
            .iter()
            .map(|e| e.line.clone())
            .collect()
    }

    /// Every upload, in order.
    pub fn uploads(&self) -> Vec<RecordedUpload> {
        self.state().uploads.clone()
    }

    /// Makes `remote_path` downloadable with these contents.
    pub fn remote_file(&self, remote_path: &str, data: impl Into<Vec<u8>>) {
        self.state()
            .remote_files
            .push((remote_path.to_string(), data.into()));
    }

    /// Expectations that were never used.
    pub fn unmet(&self) -> Vec<String> {
        self.state()
            .expectations
            .iter()
            .filter(|(_, _, used)| !used)
            .map(|(line, _, _)| line.clone())
            .collect()
    }
}

impl Transport for ScriptedTransport {
    fn connect<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<Box<dyn Session>, Error>> {
        Box::pin(async move {
            let destination = target.destination.clone();
            let failure = {
                let mut state = self.state();
                state.connect_attempts += 1;
                state.connect_failures.pop_front()
            };
            match failure {
                None => {}
                Some(ConnectFailure::PortClosed) => {
                    return Err(Error::PortClosed {
                        destination,
                        source: std::io::ErrorKind::ConnectionRefused.into(),
                    });
                }
                Some(ConnectFailure::Timeout) => {
                    return Err(Error::ConnectTimeout {
                        destination,
                        after: Duration::from_secs(15),
                    });
                }
                Some(ConnectFailure::AuthRefused) => {
                    return Err(Error::AuthRefused {
                        destination,
                        key: target.identity.fingerprint(),
                    });
                }
                Some(ConnectFailure::HostKeyMismatch) => {
                    return Err(Error::HostKeyMismatch {
                        destination,
                        presented: Fingerprint::from_bytes([0xee; 32]),
                        trusted: Box::new(TrustedKey {
                            fingerprint: Fingerprint::of(&self.host_key),
                            from: "the scripted fake".to_string(),
                        }),
                    });
                }
            }
            target.host_key.verify(&destination, &self.host_key).await?;
            Ok(Box::new(FakeSession {
                destination,
                host_key: Fingerprint::of(&self.host_key),
                transport: self.clone(),
            }) as Box<dyn Session>)
        })
    }
}

struct FakeSession {
    destination: Destination,
    host_key: Fingerprint,
    transport: ScriptedTransport,
}

impl FakeSession {
    fn answer(&self, command: &Command) -> Option<Reply> {
        let mut state = self.transport.state();
        state.executed.push(Executed {
            destination: self.destination.clone(),
            line: command.line().to_string(),
            stdin: command.stdin_data().map(<[u8]>::to_vec),
        });
        let line = command.line();
        if let Some((_, reply, used)) = state
            .expectations
            .iter_mut()
            .find(|(expected, _, used)| !used && expected == line)
        {
            *used = true;
            return Some(reply.clone());
        }
        state.stubs.iter().find_map(|(m, reply)| {
            let hit = match m {
                Match::Exact(exact) => exact == line,
                Match::Prefix(prefix) => line.starts_with(prefix.as_str()),
            };
            hit.then(|| reply.clone())
        })
    }
}

impl Session for FakeSession {
    fn destination(&self) -> &Destination {
        &self.destination
    }

    fn host_key(&self) -> &Fingerprint {
        &self.host_key
    }

    fn exec<'a>(
        &'a self,
        command: &'a Command,
        sink: &'a mut OutputSink<'_>,
    ) -> BoxFuture<'a, Result<ExecOutput, Error>> {
        Box::pin(async move {
            let reply = self.answer(command).ok_or_else(|| Error::Unscripted {
                destination: self.destination.clone(),
                command: command.to_string(),
            })?;
            let mut output = ExecOutput::new(reply.status);
            // Streamed line by line, like a real command's output.
            for (stream, data) in [
                (Stream::Stdout, &reply.stdout),
                (Stream::Stderr, &reply.stderr),
            ] {
                for chunk in data.split_inclusive(|b| *b == b'\n') {
                    sink(stream, chunk);
                    output.collect(stream, chunk);
                }
            }
            Ok(output)
        })
    }

    fn upload<'a>(&'a self, upload: &'a Upload) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let data = match &upload.source {
                UploadSource::Bytes(data) => data.clone(),
                UploadSource::File(path) => {
                    tokio::fs::read(path)
                        .await
                        .map_err(|source| Error::UploadRead {
                            destination: self.destination.clone(),
                            path: path.clone(),
                            remote_path: upload.remote_path.clone(),
                            source,
                        })?
                }
            };
            self.transport.state().uploads.push(RecordedUpload {
                destination: self.destination.clone(),
                remote_path: upload.remote_path.clone(),
                mode: upload.mode,
                data,
            });
            Ok(())
        })
    }

    fn download<'a>(&'a self, download: &'a Download) -> BoxFuture<'a, Result<u64, Error>> {
        Box::pin(async move {
            let found = self
                .transport
                .state()
                .remote_files
                .iter()
                .find(|(path, _)| *path == download.remote_path)
                .map(|(_, data)| data.clone());
            let Some(data) = found else {
                return Err(Error::DownloadRefused {
                    destination: self.destination.clone(),
                    remote_path: download.remote_path.clone(),
                    message: format!("{}: No such file or directory", download.remote_path),
                });
            };
            tokio::fs::write(&download.local_path, &data)
                .await
                .map_err(|source| Error::DownloadWrite {
                    destination: self.destination.clone(),
                    remote_path: download.remote_path.clone(),
                    path: download.local_path.clone(),
                    source,
                })?;
            Ok(data.len() as u64)
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }
}

/// A valid ed25519 public key, used only if key generation ever fails.
fn fixed_key() -> PublicKey {
    PublicKey::from(russh::keys::ssh_key::public::Ed25519PublicKey([7u8; 32]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HostKeyPolicy, Identity, KnownHosts, WaitOptions};

    fn target(policy: HostKeyPolicy) -> Target {
        let key =
            PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519).unwrap();
        Target::new(
            Destination::new("127.0.0.3", 22, "root"),
            Identity::from_private_key(key, "test"),
            policy,
        )
    }

    #[tokio::test]
    async fn scripted_commands_stream_and_unscripted_ones_fail_but_are_recorded() {
        let fake = ScriptedTransport::new();
        fake.expect("uname -a", Reply::ok("Linux vm 6.8\n"))
            .stub_prefix("test -f ", Reply::fail(1, ""));
        let session = fake
            .connect(&target(HostKeyPolicy::InsecureAcceptAny))
            .await
            .unwrap();
        let mut chunks = Vec::new();
        let out = session
            .exec(&Command::shell("uname -a"), &mut |s, d| {
                chunks.push((s, d.to_vec()))
            })
            .await
            .unwrap();
        assert_eq!(out.stdout_text(), "Linux vm 6.8\n");
        assert_eq!(chunks, [(Stream::Stdout, b"Linux vm 6.8\n".to_vec())]);
        // Used once: a second call is unscripted.
        let err = session
            .exec_ok(&Command::shell("uname -a"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unscripted { .. }), "{err}");
        let err = session
            .exec_ok(&Command::new("test").args(["-f", "/x"]))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::CommandFailed { .. }), "{err}");
        assert_eq!(
            fake.executed_lines(),
            ["uname -a", "uname -a", "test -f /x"]
        );
        assert!(fake.unmet().is_empty());
    }

    #[tokio::test]
    async fn uploads_are_recorded_with_mode_and_bytes() {
        let fake = ScriptedTransport::new();
        let session = fake
            .connect(&target(HostKeyPolicy::InsecureAcceptAny))
            .await
            .unwrap();
        session
            .upload(&Upload::bytes("abc", "/usr/local/bin/x", 0o755))
            .await
            .unwrap();
        let uploads = fake.uploads();
        assert_eq!(uploads.len(), 1);
        assert_eq!(
            (uploads[0].remote_path.as_str(), uploads[0].mode),
            ("/usr/local/bin/x", 0o755)
        );
        assert_eq!(uploads[0].data, b"abc");
    }

    /// Short real delays: these tests count attempts, they do not time them.
    fn quick(timeout: Duration) -> WaitOptions {
        WaitOptions {
            timeout,
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
        }
    }

    #[tokio::test]
    async fn wait_for_ssh_retries_transient_failures_then_connects() {
        let fake = ScriptedTransport::new();
        fake.fail_connects([
            ConnectFailure::PortClosed,
            ConnectFailure::Timeout,
            ConnectFailure::AuthRefused,
        ]);
        let session = fake
            .wait_for_ssh(
                &target(HostKeyPolicy::InsecureAcceptAny),
                &quick(Duration::from_secs(60)),
            )
            .await
            .unwrap();
        assert_eq!(&*session.destination().host, "127.0.0.3");
        assert_eq!(fake.connect_attempts(), 4);
    }

    #[tokio::test]
    async fn wait_for_ssh_stops_at_once_on_a_host_key_mismatch() {
        let fake = ScriptedTransport::new();
        fake.fail_connects([ConnectFailure::PortClosed, ConnectFailure::HostKeyMismatch]);
        let err = fake
            .wait_for_ssh(
                &target(HostKeyPolicy::InsecureAcceptAny),
                &quick(Duration::from_secs(60)),
            )
            .await
            .err()
            .unwrap();
        assert!(matches!(err, Error::HostKeyMismatch { .. }), "{err}");
        assert_eq!(fake.connect_attempts(), 2);
    }

    #[tokio::test]
    async fn wait_for_ssh_times_out_naming_the_last_failure() {
        let fake = ScriptedTransport::new();
        fake.fail_connects(std::iter::repeat_n(ConnectFailure::PortClosed, 100_000));
        let options = quick(Duration::from_millis(100));
        let err = fake
            .wait_for_ssh(&target(HostKeyPolicy::InsecureAcceptAny), &options)
            .await
            .err()
            .unwrap();
        let Error::WaitTimedOut {
            attempts,
            last_kind,
            waited,
            ..
        } = &err
        else {
            panic!("{err}");
        };
        assert_eq!(*last_kind, crate::ErrorKind::PortClosed);
        assert!(*attempts > 1, "{attempts}");
        assert_eq!(*attempts, fake.connect_attempts());
        assert!(*waited >= options.timeout, "{waited:?}");
        assert!(err.to_string().contains("last: port closed"), "{err}");
        assert!(std::error::Error::source(&err).is_some());
    }

    #[tokio::test]
    async fn the_fake_server_key_goes_through_the_host_key_policy() {
        let fake = ScriptedTransport::new();
        let dir = tempfile::tempdir().unwrap();
        let known = KnownHosts::new(dir.path().join("known_hosts"));
        fake.connect(&target(HostKeyPolicy::AcceptNew(known.clone())))
            .await
            .unwrap();
        assert_eq!(
            known.recorded("127.0.0.3", 22).await.unwrap(),
            [Fingerprint::of(fake.host_key())]
        );
        let other = ScriptedTransport::new();
        let err = other
            .connect(&target(HostKeyPolicy::Strict(known)))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, Error::HostKeyMismatch { .. }), "{err}");
    }
}
