//! The SSH client's error type.
//!
//! Every variant names where it happened (`user@host:port`, a file, a remote
//! path) and, for commands, the command as [`Command`](super::Command)
//! displays it, with secret arguments masked. The underlying cause is only
//! reachable through `source()`, never repeated in the message.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::{Destination, ExitStatus, Fingerprint};

/// What went wrong with SSH.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The private key file could not be read.
    #[error("cannot read SSH private key {path}")]
    KeyRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A generated private key could not be written.
    #[error("cannot write SSH private key {path}")]
    KeyWrite {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The private key is protected by a passphrase.
    #[error(
        "SSH private key {origin} is encrypted with a passphrase, which homestak cannot prompt \
         for: give it a key without a passphrase (for example a dedicated deploy key)"
    )]
    KeyEncrypted { origin: String },

    /// The private key file is not a key we can read.
    #[error(
        "SSH private key {origin} is not a usable private key: expected an OpenSSH \
         (\"BEGIN OPENSSH PRIVATE KEY\"), PKCS#1 RSA or PKCS#8 key of type ed25519, RSA or ECDSA"
    )]
    KeyParse {
        origin: String,
        #[source]
        source: Box<russh::keys::Error>,
    },

    /// The known-hosts file could not be read.
    #[error("cannot read known-hosts file {path}")]
    KnownHostsRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A line of the known-hosts file holds a key we cannot parse.
    #[error("known-hosts file {path}:{line} holds a malformed key: fix or delete that line")]
    KnownHostsParse {
        path: PathBuf,
        line: usize,
        #[source]
        source: Box<russh::keys::Error>,
    },

    /// A new host key could not be recorded.
    #[error("cannot record the host key of {host_port} in known-hosts file {path}")]
    KnownHostsWrite {
        path: PathBuf,
        host_port: String,
        #[source]
        source: io::Error,
    },

    /// Nothing listens on the port (yet).
    #[error("cannot connect to {destination}: port closed (connection refused)")]
    PortClosed {
        destination: Destination,
        #[source]
        source: io::Error,
    },

    /// The TCP connection failed for another reason (unreachable, reset, DNS).
    #[error("cannot connect to {destination}")]
    Connect {
        destination: Destination,
        #[source]
        source: io::Error,
    },

    /// Connecting, key exchange and authentication took too long.
    #[error("connecting to {destination} timed out after {after:?}")]
    ConnectTimeout {
        destination: Destination,
        after: Duration,
    },

    /// The SSH handshake (version exchange, key exchange) failed.
    #[error("SSH handshake with {destination} failed")]
    Handshake {
        destination: Destination,
        #[source]
        source: Box<russh::Error>,
    },

    /// The host key differs from the one we trust.
    #[error(
        "host key of {destination} is {presented}, but {trusted}: refusing to connect (possible \
         man-in-the-middle; if the host was really reinstalled, remove the old entry)"
    )]
    HostKeyMismatch {
        destination: Destination,
        presented: Fingerprint,
        trusted: Box<TrustedKey>,
    },

    /// Strict checking and the host is not in the known-hosts file.
    #[error(
        "host key {presented} of {destination} is not in known-hosts file {path}, and strict \
         checking refuses unknown hosts: add it there, pin its fingerprint, or use accept-new"
    )]
    HostKeyUnknown {
        destination: Destination,
        presented: Fingerprint,
        path: PathBuf,
    },

    /// The host key is marked `@revoked` in the known-hosts file.
    #[error("host key {presented} of {destination} is revoked in known-hosts file {path}:{line}")]
    HostKeyRevoked {
        destination: Destination,
        presented: Fingerprint,
        path: PathBuf,
        line: usize,
    },

    /// The server did not accept our key for this user.
    #[error(
        "{destination} refused public key {key} for user {user}: check that the key is in \
         that user's authorized_keys (cloud-init sshkeys/ciuser)",
        user = destination.user
    )]
    AuthRefused {
        destination: Destination,
        key: Fingerprint,
    },

    /// Authentication failed at the protocol level.
    #[error("authenticating to {destination} failed")]
    Auth {
        destination: Destination,
        #[source]
        source: Box<russh::Error>,
    },

    /// A session channel could not be opened.
    #[error("cannot open an SSH channel on {destination}")]
    Channel {
        destination: Destination,
        #[source]
        source: Box<russh::Error>,
    },

    /// The server refused to run a command.
    #[error("{destination} refused to run `{command}`")]
    ExecRefused {
        destination: Destination,
        command: String,
    },

    /// The channel broke while a command was running.
    #[error("running `{command}` on {destination} failed")]
    Exec {
        destination: Destination,
        command: String,
        #[source]
        source: Box<russh::Error>,
    },

    /// A command run on this machine (a scenario's `--local`) could not be
    /// started or read.
    #[error("running `{command}` on this machine failed")]
    Local {
        destination: Destination,
        command: String,
        #[source]
        source: io::Error,
    },

    /// The command did not finish within its timeout.
    #[error("`{command}` on {destination} did not finish within {after:?}")]
    ExecTimeout {
        destination: Destination,
        command: String,
        after: Duration,
    },

    /// The channel closed without an exit status.
    #[error("`{command}` on {destination} ended without an exit status (connection lost?)")]
    NoExitStatus {
        destination: Destination,
        command: String,
    },

    /// The command exited non-zero (from [`Session::exec_ok`](super::Session::exec_ok)).
    #[error(
        "`{command}` on {destination} failed with {status}{}",
        stderr_suffix(stderr)
    )]
    CommandFailed {
        destination: Destination,
        command: String,
        status: ExitStatus,
        /// The last lines of the command's stderr.
        stderr: String,
    },

    /// A local file to upload could not be read.
    #[error("cannot read {path} to upload it to {remote_path} on {destination}")]
    UploadRead {
        destination: Destination,
        path: PathBuf,
        remote_path: String,
        #[source]
        source: io::Error,
    },

    /// The remote path cannot be used for an upload.
    #[error("cannot upload to {remote_path:?} on {destination}: {reason}")]
    UploadPath {
        destination: Destination,
        remote_path: String,
        reason: &'static str,
    },

    /// The remote `scp -t` reported an error or went away.
    #[error("uploading {remote_path} to {destination} failed: remote scp said {message:?}")]
    UploadRefused {
        destination: Destination,
        remote_path: String,
        message: String,
    },

    /// The upload failed below the SCP protocol.
    #[error("uploading {remote_path} to {destination} failed")]
    Upload {
        destination: Destination,
        remote_path: String,
        #[source]
        source: Box<Error>,
    },

    /// The remote `scp -f` reported an error (no such file, …) or went away.
    #[error("downloading {remote_path} from {destination} failed: remote scp said {message:?}")]
    DownloadRefused {
        destination: Destination,
        remote_path: String,
        message: String,
    },

    /// The downloaded file could not be written locally.
    #[error("cannot write {path}, downloading {remote_path} from {destination}")]
    DownloadWrite {
        destination: Destination,
        remote_path: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The download failed below the SCP protocol.
    #[error("downloading {remote_path} from {destination} failed")]
    Download {
        destination: Destination,
        remote_path: String,
        #[source]
        source: Box<Error>,
    },

    /// `wait_for_ssh` gave up.
    #[error(
        "{destination} did not accept SSH within {waited:?} ({attempts} attempts, last: {last_kind})"
    )]
    WaitTimedOut {
        destination: Destination,
        waited: Duration,
        attempts: u32,
        last_kind: ErrorKind,
        #[source]
        last: Box<Error>,
    },

    /// The scripted fake was asked to run a command it has no answer for.
    #[error("the scripted SSH fake has no expectation for `{command}` on {destination}")]
    Unscripted {
        destination: Destination,
        command: String,
    },
}

/// The key we trusted instead of the one presented, and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedKey {
    pub fingerprint: Fingerprint,
    /// `known-hosts file F line N`, `the pinned fingerprint`, …
    pub from: String,
}

impl fmt::Display for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} says {}", self.from, self.fingerprint)
    }
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; stderr ends with: {stderr}")
    }
}

/// A coarse classification of [`Error`], for retry decisions and reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The private key is unreadable, encrypted or malformed.
    Key,
    /// The known-hosts file is unreadable, malformed or not writable.
    KnownHosts,
    /// Connection refused.
    PortClosed,
    /// Unreachable, reset or timed out before SSH got going.
    Unreachable,
    /// The SSH handshake failed.
    Handshake,
    /// The host key failed the policy (changed, unknown under strict, revoked).
    HostKey,
    /// Our key was refused.
    AuthRefused,
    /// Channel, exec or protocol failure after authentication.
    Session,
    /// A command timed out.
    Timeout,
    /// A command exited non-zero.
    CommandFailed,
    /// An upload failed.
    Upload,
    /// A download failed.
    Download,
    /// `wait_for_ssh` gave up.
    WaitTimedOut,
    /// The fake had no script for a command.
    Unscripted,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Key => "private key unusable",
            ErrorKind::KnownHosts => "known-hosts file unusable",
            ErrorKind::PortClosed => "port closed",
            ErrorKind::Unreachable => "host unreachable",
            ErrorKind::Handshake => "SSH handshake failed",
            ErrorKind::HostKey => "host key refused",
            ErrorKind::AuthRefused => "public key refused",
            ErrorKind::Session => "SSH session failed",
            ErrorKind::Timeout => "command timed out",
            ErrorKind::CommandFailed => "command failed",
            ErrorKind::Upload => "upload failed",
            ErrorKind::Download => "download failed",
            ErrorKind::WaitTimedOut => "gave up waiting",
            ErrorKind::Unscripted => "unscripted command",
        })
    }
}

impl Error {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::KeyRead { .. }
            | Error::KeyWrite { .. }
            | Error::KeyEncrypted { .. }
            | Error::KeyParse { .. } => ErrorKind::Key,
            Error::KnownHostsRead { .. }
            | Error::KnownHostsParse { .. }
            | Error::KnownHostsWrite { .. } => ErrorKind::KnownHosts,
            Error::PortClosed { .. } => ErrorKind::PortClosed,
            Error::Connect { .. } | Error::ConnectTimeout { .. } => ErrorKind::Unreachable,
            Error::Handshake { .. } => ErrorKind::Handshake,
            Error::HostKeyMismatch { .. }
            | Error::HostKeyUnknown { .. }
            | Error::HostKeyRevoked { .. } => ErrorKind::HostKey,
            Error::AuthRefused { .. } => ErrorKind::AuthRefused,
            Error::Auth { .. }
            | Error::Channel { .. }
            | Error::ExecRefused { .. }
            | Error::Exec { .. }
            | Error::NoExitStatus { .. }
            | Error::Local { .. } => ErrorKind::Session,
            Error::ExecTimeout { .. } => ErrorKind::Timeout,
            Error::CommandFailed { .. } => ErrorKind::CommandFailed,
            Error::UploadRead { .. }
            | Error::UploadPath { .. }
            | Error::UploadRefused { .. }
            | Error::Upload { .. } => ErrorKind::Upload,
            Error::DownloadRefused { .. }
            | Error::DownloadWrite { .. }
            | Error::Download { .. } => ErrorKind::Download,
            Error::WaitTimedOut { .. } => ErrorKind::WaitTimedOut,
            Error::Unscripted { .. } => ErrorKind::Unscripted,
        }
    }

    /// Whether waiting and trying again may help: the host may still be
    /// booting (port closed, handshake cut short) or cloud-init may not have
    /// installed the key yet (auth refused). Host-key and key-file problems
    /// never fix themselves.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::PortClosed
                | ErrorKind::Unreachable
                | ErrorKind::Handshake
                | ErrorKind::AuthRefused
                | ErrorKind::Session
        )
    }
}
