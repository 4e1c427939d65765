//! SSH client: run commands and upload files on the hosts homestak converges.
//!
//! After a VM boots, homestak waits for its SSH server and, for nested PVE
//! tiers, bootstraps the inner host over SSH: it uploads the homestak binary,
//! runs commands and starts a child daemon. Controllers only see the traits
//! here, so they are tested against `fake::ScriptedTransport` (feature
//! `testing`) and run against [`RusshTransport`] (russh) in production and
//! against the simulator.
//!
//! # Pieces
//!
//! - [`Transport`] connects to a [`Target`] (where, as whom, with which key,
//!   trusting which host key) and returns a [`Session`]; its
//!   [`Transport::wait_for_ssh`] retries with backoff until a deadline.
//! - [`Session`] runs a [`Command`] with output streamed to a callback and
//!   collected in an [`ExecOutput`], and uploads files ([`Upload`]).
//! - [`Identity`] is a private key loaded from an OpenSSH key file; it never
//!   shows its secret in `Debug` output or errors.
//! - [`HostKeyPolicy`] says which server keys are trusted: a known-hosts file
//!   we manage ([`KnownHosts`]), trust on first use, a pinned
//!   [`Fingerprint`], or nothing at all by explicit opt-in.
//! - [`Error`] names `user@host:port` and the command (as shown by
//!   [`Command`], with secrets masked); the cause is only in `source()`.
//!
//! # Guarantees
//!
//! - A host key is checked before authentication, so the private key never
//!   signs anything for a server that fails the policy.
//! - Uploads are atomic on the remote side: the file is written to a
//!   temporary name next to its destination, given its mode, then renamed,
//!   so a running binary is replaced, never overwritten in place.
//! - Uploads and downloads use the SCP protocol (`scp -t`, `scp -f`) over
//!   an exec channel, which every OpenSSH host and the simulator speak; no
//!   SFTP subsystem needed. A download is written to a temporary name next
//!   to its destination and renamed, like an upload.

mod client;
mod command;
mod error;
#[cfg(feature = "testing")]
pub mod fake;
mod hostkey;
mod identity;
mod scp;
mod wait;

use std::fmt;
use std::sync::Arc;

pub use client::{ClientOptions, RusshTransport};
pub use command::{
    Command, Download, ExecOutput, ExitStatus, LineBuffer, Stream, Upload, UploadSource, quote,
};
pub use error::{Error, ErrorKind, TrustedKey};
pub use hostkey::{Fingerprint, FingerprintParseError, HostKeyPolicy, KnownHosts};
pub use identity::Identity;
pub use wait::{WaitOptions, wait_for_ssh};

pub use homestak_base::BoxFuture;

/// The callback that receives output as it arrives, chunk by chunk, in the
/// order the remote side wrote it. Use [`LineBuffer`] to get whole lines.
pub type OutputSink<'a> = dyn FnMut(Stream, &[u8]) + Send + 'a;

/// Where to connect and as whom: `user@host:port`. Cheap to clone (every
/// error carries one).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    /// A host name or an IP address (IPv6 without brackets).
    pub host: Arc<str>,
    pub port: u16,
    pub user: Arc<str>,
}

impl Destination {
    pub fn new(host: &str, port: u16, user: &str) -> Self {
        Destination {
            host: host.into(),
            port,
            user: user.into(),
        }
    }

    /// `host:port`, bracketing IPv6 addresses.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.user, self.host_port())
    }
}

impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Destination({self})")
    }
}

/// Everything needed to open one SSH connection.
#[derive(Clone, Debug)]
pub struct Target {
    pub destination: Destination,
    /// The private key to authenticate with.
    pub identity: Identity,
    /// Which server host keys to trust.
    pub host_key: HostKeyPolicy,
}

impl Target {
    pub fn new(destination: Destination, identity: Identity, host_key: HostKeyPolicy) -> Self {
        Target {
            destination,
            identity,
            host_key,
        }
    }
}

/// Opens SSH sessions. Implemented by [`RusshTransport`] and by the scripted
/// fake; controllers hold an `Arc<dyn Transport>`.
pub trait Transport: Send + Sync {
    /// Connects, checks the host key against the target's policy and
    /// authenticates with its identity. One attempt, bounded by the
    /// implementation's connect timeout.
    fn connect<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<Box<dyn Session>, Error>>;

    /// Retries [`connect`](Transport::connect) with exponential backoff and
    /// jitter until it succeeds or `options.timeout` has passed. Transient
    /// failures (port closed, unreachable, handshake cut short, key not yet
    /// authorized) are retried; a host key that fails the policy or an
    /// unusable private key end the wait at once. See [`wait_for_ssh`].
    fn wait_for_ssh<'a>(
        &'a self,
        target: &'a Target,
        options: &'a WaitOptions,
    ) -> BoxFuture<'a, Result<Box<dyn Session>, Error>> {
        Box::pin(wait_for_ssh(self, target, options))
    }
}

/// An authenticated SSH connection. Several commands may run on it at once
/// (each on its own channel).
pub trait Session: Send + Sync {
    /// Who we are connected to.
    fn destination(&self) -> &Destination;

    /// The fingerprint of the host key the server presented.
    fn host_key(&self) -> &Fingerprint;

    /// Runs `command`, passing output to `sink` as it arrives and collecting
    /// it. The command's stdin holds [`Command::stdin`] (or nothing), then
    /// EOF. A non-zero exit status is not an error here: it is in
    /// [`ExecOutput::status`]. Errors are transport failures, a refused exec
    /// request, a lost exit status or the command's timeout.
    fn exec<'a>(
        &'a self,
        command: &'a Command,
        sink: &'a mut OutputSink<'_>,
    ) -> BoxFuture<'a, Result<ExecOutput, Error>>;

    /// Writes a file on the remote host, atomically, with the given mode.
    fn upload<'a>(&'a self, upload: &'a Upload) -> BoxFuture<'a, Result<(), Error>>;

    /// Copies a remote file here (SCP, `scp -f`), atomically: the local
    /// file appears whole or not at all. Returns its size in bytes.
    fn download<'a>(&'a self, download: &'a Download) -> BoxFuture<'a, Result<u64, Error>>;

    /// Closes the connection politely. Dropping a session also closes it.
    fn close(&self) -> BoxFuture<'_, Result<(), Error>>;

    /// Runs `command` without streaming, and turns a non-zero exit status
    /// into [`Error::CommandFailed`] (with the end of its stderr).
    fn exec_ok<'a>(&'a self, command: &'a Command) -> BoxFuture<'a, Result<ExecOutput, Error>> {
        Box::pin(async move {
            let output = self.exec(command, &mut |_, _| {}).await?;
            output.check(self.destination(), command)
        })
    }
}
