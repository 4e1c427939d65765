//! The production [`Transport`]: russh over TCP.
//!
//! One TCP connection per [`Session`]; each command or upload gets its own
//! channel, so several can run at once on one session. The TCP connect,
//! the key exchange (with the host-key check) and authentication are bounded
//! together by [`ClientOptions::connect_timeout`]. Commands are not bounded
//! unless they ask ([`Command::timeout`]); keepalives notice a dead server
//! during a long quiet command.

use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Handle, Msg};
use russh::keys::{PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Disconnect};
use tokio::io::AsyncRead;
use tokio::net::TcpStream;

use super::command::Stream;
use super::scp::{self, signal_name_of};
use super::{
    BoxFuture, Command, Destination, Download, Error, ExecOutput, ExitStatus, Fingerprint,
    HostKeyPolicy, OutputSink, Session, Target, Transport, Upload, UploadSource, quote,
};
use std::os::unix::fs::PermissionsExt;

/// Tunables of [`RusshTransport`].
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Bound on TCP connect + key exchange + authentication.
    pub connect_timeout: Duration,
    /// Send a keepalive after this much silence from the server.
    pub keepalive_interval: Duration,
    /// Drop the connection after this many unanswered keepalives.
    pub keepalive_max: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(15),
            keepalive_interval: Duration::from_secs(15),
            keepalive_max: 4,
        }
    }
}

/// SSH over russh.
#[derive(Clone, Debug, Default)]
pub struct RusshTransport {
    options: ClientOptions,
}

impl RusshTransport {
    pub fn new(options: ClientOptions) -> Self {
        RusshTransport { options }
    }

    async fn open(&self, target: &Target) -> Result<RusshSession, Error> {
        let destination = &target.destination;
        let after = self.options.connect_timeout;
        let attempt = async {
            let socket = TcpStream::connect((&*destination.host, destination.port))
                .await
                .map_err(|source| match source.kind() {
                    std::io::ErrorKind::ConnectionRefused => Error::PortClosed {
                        destination: destination.clone(),
                        source,
                    },
                    _ => Error::Connect {
                        destination: destination.clone(),
                        source,
                    },
                })?;
            // Nagle only delays our small protocol messages.
            let _ = socket.set_nodelay(true);
            let config = Arc::new(client::Config {
                inactivity_timeout: None,
                keepalive_interval: Some(self.options.keepalive_interval),
                keepalive_max: self.options.keepalive_max,
                ..client::Config::default()
            });
            let handler = HostKeyCheck {
                destination: destination.clone(),
                policy: target.host_key.clone(),
                seen: Arc::new(std::sync::Mutex::new(None)),
            };
            let seen = Arc::clone(&handler.seen);
            let mut handle = client::connect_stream(config, socket, handler)
                .await
                .map_err(|e| match e {
                    HandlerError::HostKey(e) => *e,
                    HandlerError::Russh(source) => Error::Handshake {
                        destination: destination.clone(),
                        source: Box::new(source),
                    },
                })?;
            authenticate(&mut handle, target).await?;
            let host_key = seen
                .lock()
                .ok()
                .and_then(|g| *g)
                .ok_or_else(|| Error::Handshake {
                    destination: destination.clone(),
                    source: Box::new(russh::Error::UnknownKey),
                })?;
            Ok(RusshSession {
                handle,
                destination: destination.clone(),
                host_key,
            })
        };
        tokio::time::timeout(after, attempt)
            .await
            .map_err(|_| Error::ConnectTimeout {
                destination: destination.clone(),
                after,
            })?
    }
}

impl Transport for RusshTransport {
    fn connect<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<Box<dyn Session>, Error>> {
        Box::pin(async move {
            let session = self.open(target).await?;
            Ok(Box::new(session) as Box<dyn Session>)
        })
    }
}

async fn authenticate(handle: &mut Handle<HostKeyCheck>, target: &Target) -> Result<(), Error> {
    let destination = &target.destination;
    let auth_err = |source| Error::Auth {
        destination: destination.clone(),
        source: Box::new(source),
    };
    let key = target.identity.private_key();
    // RSA keys sign with the best hash the server announces (rsa-sha2-512,
    // then -256); servers that announce nothing get the legacy ssh-rsa.
    let hash = if key.algorithm().is_rsa() {
        handle
            .best_supported_rsa_hash()
            .await
            .map_err(auth_err)?
            .flatten()
    } else {
        None
    };
    let result = handle
        .authenticate_publickey(&*destination.user, PrivateKeyWithHashAlg::new(key, hash))
        .await
        .map_err(auth_err)?;
    if result.success() {
        Ok(())
    } else {
        Err(Error::AuthRefused {
            destination: destination.clone(),
            key: target.identity.fingerprint(),
        })
    }
}

/// Checks the server's host key against the policy during key exchange.
struct HostKeyCheck {
    destination: Destination,
    policy: HostKeyPolicy,
    /// The accepted key's fingerprint, read once the handshake is done.
    seen: Arc<std::sync::Mutex<Option<Fingerprint>>>,
}

/// The russh handler's error: a protocol error, or our host-key verdict.
#[derive(Debug)]
enum HandlerError {
    Russh(russh::Error),
    HostKey(Box<Error>),
}

impl From<russh::Error> for HandlerError {
    fn from(e: russh::Error) -> Self {
        HandlerError::Russh(e)
    }
}

impl client::Handler for HostKeyCheck {
    type Error = HandlerError;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // A host certificate's CA is not trusted by anything here; the
        // certified key itself must satisfy the policy.
        let key = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(cert) => PublicKey::from(cert.public_key().clone()),
        };
        self.policy
            .verify(&self.destination, &key)
            .await
            .map_err(|e| HandlerError::HostKey(Box::new(e)))?;
        let fingerprint = Fingerprint::of(&key);
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(fingerprint);
        }
        Ok(true)
    }
}

/// An authenticated russh connection.
pub(crate) struct RusshSession {
    handle: Handle<HostKeyCheck>,
    destination: Destination,
    host_key: Fingerprint,
}

impl RusshSession {
    async fn open_channel(&self) -> Result<(ChannelReadHalf, ChannelWriteHalf<Msg>), Error> {
        let channel =
            self.handle
                .channel_open_session()
                .await
                .map_err(|source| Error::Channel {
                    destination: self.destination.clone(),
                    source: Box::new(source),
                })?;
        Ok(channel.split())
    }

    async fn run(&self, command: &Command, sink: &mut OutputSink<'_>) -> Result<ExecOutput, Error> {
        let shown = command.to_string();
        let exec_err = |source| Error::Exec {
            destination: self.destination.clone(),
            command: shown.clone(),
            source: Box::new(source),
        };
        let (mut rx, tx) = self.open_channel().await?;
        tx.exec(true, command.line()).await.map_err(exec_err)?;
        let body = async {
            let feed = async {
                if let Some(data) = command.stdin_data() {
                    tx.data_bytes(data.to_vec()).await?;
                }
                tx.eof().await
            };
            let read = collect(&mut rx, sink);
            tokio::pin!(feed, read);
            let mut feeding = true;
            // Stop feeding stdin once the command is over: it may exit
            // without reading it, and the window would never reopen.
            loop {
                tokio::select! {
                    result = &mut read => break result,
                    _ = &mut feed, if feeding => feeding = false,
                }
            }
        };
        let outcome = match command.timeout_after() {
            None => body.await,
            Some(after) => match tokio::time::timeout(after, body).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    let _ = tx.close().await;
                    return Err(Error::ExecTimeout {
                        destination: self.destination.clone(),
                        command: shown,
                        after,
                    });
                }
            },
        };
        match outcome {
            Collected::Done(output) => Ok(output),
            Collected::Refused => Err(Error::ExecRefused {
                destination: self.destination.clone(),
                command: shown,
            }),
            Collected::NoStatus => Err(Error::NoExitStatus {
                destination: self.destination.clone(),
                command: shown,
            }),
        }
    }

    async fn put(&self, upload: &Upload) -> Result<(), Error> {
        let remote = upload.remote_path.as_str();
        let path_err = |reason| Error::UploadPath {
            destination: self.destination.clone(),
            remote_path: remote.to_string(),
            reason,
        };
        if remote.is_empty() || remote.ends_with('/') {
            return Err(path_err("it names no file"));
        }
        if remote.contains(['\n', '\0']) {
            return Err(path_err(
                "it contains a newline or NUL, which SCP cannot carry",
            ));
        }
        let (mut reader, len) = self.open_source(upload).await?;
        let tmp = format!("{remote}.homestak-upload-{:08x}", rand::random::<u32>());
        let name = tmp.rsplit('/').next().unwrap_or(&tmp).to_string();
        let wrap = |source: Error| Error::Upload {
            destination: self.destination.clone(),
            remote_path: remote.to_string(),
            source: Box::new(source),
        };

        let sink = Command::new("scp").args(["-t", "--", &tmp]);
        let (mut rx, tx) = self.open_channel().await.map_err(wrap)?;
        tx.exec(true, sink.line()).await.map_err(|source| {
            wrap(Error::Exec {
                destination: self.destination.clone(),
                command: sink.to_string(),
                source: Box::new(source),
            })
        })?;
        // The temporary file is private until it has its final mode.
        let sent = scp::send(&mut rx, &tx, &name, len, 0o600, &mut *reader).await;
        let _ = tx.close().await;
        if let Err(failure) = sent {
            self.remove_quietly(&tmp).await;
            return Err(match failure {
                scp::Failure::Refused(message) => Error::UploadRefused {
                    destination: self.destination.clone(),
                    remote_path: remote.to_string(),
                    message,
                },
                scp::Failure::Channel(source) => wrap(Error::Exec {
                    destination: self.destination.clone(),
                    command: sink.to_string(),
                    source: Box::new(source),
                }),
                scp::Failure::Source(source) | scp::Failure::Local(source) => Error::UploadRead {
                    destination: self.destination.clone(),
                    path: source_path(upload),
                    remote_path: remote.to_string(),
                    source,
                },
                scp::Failure::Short { sent, expected } => Error::UploadRead {
                    destination: self.destination.clone(),
                    path: source_path(upload),
                    remote_path: remote.to_string(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("file shrank while uploading: {sent} of {expected} bytes"),
                    ),
                },
            });
        }
        // Give the file its mode, then rename it over the destination: a
        // running binary is replaced, never rewritten in place.
        let finish = Command::shell(format!(
            "chmod {:04o} {tmp_q} && mv -f {tmp_q} {dest_q}",
            upload.mode & 0o7777,
            tmp_q = quote(&tmp),
            dest_q = quote(remote),
        ));
        if let Err(e) = self.exec_ok(&finish).await {
            self.remove_quietly(&tmp).await;
            return Err(wrap(e));
        }
        Ok(())
    }

    async fn get(&self, download: &Download) -> Result<u64, Error> {
        let remote = download.remote_path.as_str();
        let local = &download.local_path;
        let refused = |message: String| Error::DownloadRefused {
            destination: self.destination.clone(),
            remote_path: remote.to_string(),
            message,
        };
        if remote.is_empty() || remote.contains(['\n', '\0']) {
            return Err(refused(
                "the remote path is empty or has a newline or NUL".into(),
            ));
        }
        let write_err = |path: &std::path::Path, source| Error::DownloadWrite {
            destination: self.destination.clone(),
            remote_path: remote.to_string(),
            path: path.to_path_buf(),
            source,
        };
        let file_name = local
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                write_err(
                    local,
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "it names no file"),
                )
            })?;
        let tmp = local.with_file_name(format!(
            ".{file_name}.homestak-download-{:08x}",
            rand::random::<u32>()
        ));
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| write_err(&tmp, e))?;
        let source_cmd = Command::new("scp").args(["-f", "--", remote]);
        let wrap = |source: Error| Error::Download {
            destination: self.destination.clone(),
            remote_path: remote.to_string(),
            source: Box::new(source),
        };
        let received = async {
            let (mut rx, tx) = self.open_channel().await.map_err(wrap)?;
            tx.exec(true, source_cmd.line()).await.map_err(|source| {
                wrap(Error::Exec {
                    destination: self.destination.clone(),
                    command: source_cmd.to_string(),
                    source: Box::new(source),
                })
            })?;
            let got = scp::receive(&mut rx, &tx, &mut file).await;
            let _ = tx.close().await;
            got.map_err(|failure| match failure {
                scp::Failure::Refused(message) => refused(message),
                scp::Failure::Channel(source) => wrap(Error::Exec {
                    destination: self.destination.clone(),
                    command: source_cmd.to_string(),
                    source: Box::new(source),
                }),
                scp::Failure::Local(source) | scp::Failure::Source(source) => {
                    write_err(&tmp, source)
                }
                scp::Failure::Short { sent, expected } => refused(format!(
                    "the connection ended after {sent} of {expected} bytes"
                )),
            })
        };
        let finished = match received.await {
            Ok(got) => {
                drop(file);
                let mode = std::fs::Permissions::from_mode(got.mode & 0o777 & !0o022);
                let placed = async {
                    tokio::fs::set_permissions(&tmp, mode).await?;
                    tokio::fs::rename(&tmp, local).await
                };
                placed
                    .await
                    .map(|()| got.size)
                    .map_err(|e| write_err(local, e))
            }
            Err(e) => Err(e),
        };
        if finished.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        finished
    }

    async fn open_source(
        &self,
        upload: &Upload,
    ) -> Result<(Box<dyn AsyncRead + Unpin + Send>, u64), Error> {
        match &upload.source {
            UploadSource::Bytes(data) => Ok((
                Box::new(std::io::Cursor::new(data.clone())),
                data.len() as u64,
            )),
            UploadSource::File(path) => {
                let read_err = |source| Error::UploadRead {
                    destination: self.destination.clone(),
                    path: path.clone(),
                    remote_path: upload.remote_path.clone(),
                    source,
                };
                let file = tokio::fs::File::open(path).await.map_err(read_err)?;
                let len = file.metadata().await.map_err(read_err)?.len();
                Ok((Box::new(file), len))
            }
        }
    }

    async fn remove_quietly(&self, path: &str) {
        let rm = Command::new("rm").args(["-f", "--", path]);
        let _ = self.exec(&rm, &mut |_, _| {}).await;
    }
}

fn source_path(upload: &Upload) -> std::path::PathBuf {
    match &upload.source {
        UploadSource::File(path) => path.clone(),
        UploadSource::Bytes(_) => "<bytes in memory>".into(),
    }
}

enum Collected {
    Done(ExecOutput),
    Refused,
    NoStatus,
}

/// Reads a command's channel to its end, streaming output to `sink`.
async fn collect(rx: &mut ChannelReadHalf, sink: &mut OutputSink<'_>) -> Collected {
    let mut output = ExecOutput::new(ExitStatus::Code(0));
    let mut status = None;
    while let Some(msg) = rx.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                sink(Stream::Stdout, &data);
                output.collect(Stream::Stdout, &data);
            }
            // Extended data type 1 is stderr (RFC 4254 §5.2); no other is defined.
            ChannelMsg::ExtendedData { data, ext: 1 } => {
                sink(Stream::Stderr, &data);
                output.collect(Stream::Stderr, &data);
            }
            ChannelMsg::ExitStatus { exit_status } => {
                status = Some(ExitStatus::Code(exit_status));
            }
            ChannelMsg::ExitSignal { signal_name, .. } => {
                status = Some(ExitStatus::Signal(signal_name_of(&signal_name)));
            }
            ChannelMsg::Failure => return Collected::Refused,
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    match status {
        Some(status) => {
            output.status = status;
            Collected::Done(output)
        }
        None => Collected::NoStatus,
    }
}

impl Session for RusshSession {
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
        Box::pin(self.run(command, sink))
    }

    fn upload<'a>(&'a self, upload: &'a Upload) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.put(upload))
    }

    fn download<'a>(&'a self, download: &'a Download) -> BoxFuture<'a, Result<u64, Error>> {
        Box::pin(self.get(download))
    }

    fn close(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            self.handle
                .disconnect(Disconnect::ByApplication, "", "en")
                .await
                .map_err(|source| Error::Channel {
                    destination: self.destination.clone(),
                    source: Box::new(source),
                })
        })
    }
}
