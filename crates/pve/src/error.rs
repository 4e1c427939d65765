//! Errors of the PVE client.
//!
//! Every error that came from a request names the host, the method and path,
//! and the vmid when the call concerns one ([`Target`]). PVE's own words come
//! from the JSON `message` (http-server ≥ 5.2.0, i.e. PVE 8.4), else from the
//! HTTP reason phrase (every version puts the first line of the message
//! there), plus the per-parameter `errors` map of a 400. [`Error::kind`]
//! sorts the messages controllers branch on (missing VM, agent not running,
//! digest mismatch, …) so callers never match on text themselves.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use reqwest::Method;

use super::upid::Upid;
use homestak_base::id::VmId;

/// Where a request went: host, method, path and the vmid it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `host:port` of the PVE API.
    pub host: String,
    pub method: Method,
    /// The API path below `/api2/json`, unescaped (`/nodes/pve/qemu/100/config`).
    pub path: String,
    pub vmid: Option<VmId>,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} on {}", self.method, self.path, self.host)?;
        if let Some(vmid) = self.vmid {
            write!(f, " (vmid {vmid})")?;
        }
        Ok(())
    }
}

/// A failed PVE call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// PVE answered with an error status.
    #[error("PVE refused {target}: HTTP {status}: {message}{}", render_errors(.errors))]
    Api {
        target: Box<Target>,
        status: u16,
        /// PVE's message without the trailing newline.
        message: String,
        /// Per-parameter messages of a 400 `Parameter verification failed.`.
        errors: BTreeMap<String, String>,
    },

    /// No HTTP answer: connection refused, TLS rejected, reset, …
    #[error("cannot reach PVE for {target}; check the host, port and TLS trust settings")]
    Unreachable {
        target: Box<Target>,
        #[source]
        source: reqwest::Error,
    },

    /// The request did not complete in time.
    #[error("PVE did not answer {target} within {}", humantime::format_duration(*.timeout))]
    Timeout {
        target: Box<Target>,
        timeout: Duration,
    },

    /// A 2xx answer whose body was not what the API documents.
    #[error("unexpected response body from PVE for {target}")]
    Decode {
        target: Box<Target>,
        #[source]
        source: serde_json::Error,
    },

    /// The answer's body is larger than the client reads (see
    /// [`super::Config::max_body`]): not a PVE answer homestak can use.
    #[error(
        "PVE's answer to {target} is larger than {limit} bytes, far beyond any real PVE answer; \
         homestak stopped reading it: check that the address is a PVE API"
    )]
    TooLarge { target: Box<Target>, limit: usize },

    /// A task ended with an error exit status.
    #[error(
        "PVE task {} on node {}{} failed: {exitstatus}",
        upid.kind(), upid.node(), vmid_suffix(*.vmid)
    )]
    TaskFailed {
        upid: Box<Upid>,
        vmid: Option<VmId>,
        /// The task's exit status, e.g. `cannot import from '…' - …`.
        exitstatus: String,
        /// The last lines of the task log, oldest first.
        log_tail: Vec<String>,
    },

    /// A task was still running when the wait gave up. It may still finish:
    /// re-observe before acting again.
    #[error(
        "PVE task {} on node {}{} still running after {}; it may still finish, re-check before retrying",
        upid.kind(), upid.node(), vmid_suffix(*.vmid), humantime::format_duration(*.waited)
    )]
    TaskTimeout {
        upid: Box<Upid>,
        vmid: Option<VmId>,
        waited: Duration,
    },

    /// The [`Api`](super::Api) implementation does not provide this call
    /// (fakes implement only what a test needs).
    #[error("PVE call {op} is not implemented by this client")]
    NotImplemented { op: &'static str },

    /// The client configuration is unusable.
    #[error("invalid PVE client configuration: {problem}")]
    Config {
        problem: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

fn render_errors(errors: &BTreeMap<String, String>) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let items: Vec<String> = errors
        .iter()
        .map(|(k, v)| format!("{k}: {}", v.trim_end()))
        .collect();
    format!(" ({})", items.join("; "))
}

fn vmid_suffix(vmid: Option<VmId>) -> String {
    vmid.map(|v| format!(" (vmid {v})")).unwrap_or_default()
}

/// What kind of failure an [`Error`] is, for callers that branch on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// 401: token missing, wrong, expired or disabled.
    Unauthorized,
    /// 403: the token lacks a privilege.
    Forbidden,
    /// 400: a parameter failed PVE's schema check.
    InvalidParameters,
    /// The VM (its config file) does not exist.
    VmNotFound,
    /// The vmid (or object) already exists.
    AlreadyExists,
    /// The VM is running where that is not allowed (e.g. destroy).
    VmRunning,
    /// The VM is not running (agent calls, …).
    VmNotRunning,
    /// The VM has no `agent` option.
    AgentNotConfigured,
    /// The guest agent did not answer yet: normal while a guest boots.
    AgentNotRunning,
    /// The config changed since it was read (`digest` mismatch).
    DigestMismatch,
    /// 501: unknown path or method.
    NotImplemented,
    /// 595-599: pveproxy could not reach the target node or daemon.
    ProxyFailure,
    /// Any other 5xx.
    Server,
    /// No HTTP answer.
    Unreachable,
    /// The request timed out.
    Timeout,
    /// The response body did not decode.
    Protocol,
    /// A task failed.
    TaskFailed,
    /// A task outlived the wait.
    TaskTimeout,
    /// Bad client configuration.
    Config,
}

impl Error {
    /// Classifies the error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Api {
                status,
                message,
                errors,
                ..
            } => classify(*status, message, errors),
            Error::Unreachable { .. } => ErrorKind::Unreachable,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Decode { .. } | Error::TooLarge { .. } => ErrorKind::Protocol,
            Error::TaskFailed { .. } => ErrorKind::TaskFailed,
            Error::TaskTimeout { .. } => ErrorKind::TaskTimeout,
            Error::NotImplemented { .. } => ErrorKind::NotImplemented,
            Error::Config { .. } => ErrorKind::Config,
        }
    }

    /// The HTTP status, when PVE answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// PVE's message, when PVE answered (HTTP error or failed task).
    pub fn pve_message(&self) -> Option<&str> {
        match self {
            Error::Api { message, .. } => Some(message),
            Error::TaskFailed { exitstatus, .. } => Some(exitstatus),
            _ => None,
        }
    }

    /// The request this error belongs to.
    pub fn target(&self) -> Option<&Target> {
        match self {
            Error::Api { target, .. }
            | Error::Unreachable { target, .. }
            | Error::Timeout { target, .. }
            | Error::Decode { target, .. }
            | Error::TooLarge { target, .. } => Some(target),
            _ => None,
        }
    }

    /// Whether repeating the same safe (read-only) request may succeed:
    /// transport failures, timeouts, proxy failures and 5xx that are not a
    /// definite answer about the VM.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Unreachable
                | ErrorKind::Timeout
                | ErrorKind::ProxyFailure
                | ErrorKind::Server
        )
    }

    pub(crate) fn config(problem: impl Into<String>) -> Self {
        Error::Config {
            problem: problem.into(),
            source: None,
        }
    }

    pub(crate) fn config_with(
        problem: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Config {
            problem: problem.into(),
            source: Some(Box::new(source)),
        }
    }
}

/// The storage whose lock PVE gave up waiting for, when `message` (an
/// error or a task's exit status) is PVE's storage-lock timeout: the flock
/// of a local storage (`can't lock file
/// '/var/lock/pve-manager/pve-storage-ID' - got timeout`) or the cluster
/// lock of a shared one (`cfs-lock 'storage-ID' error: got lock request
/// timeout`). Allocations and frees queue on this lock
/// (`cluster_lock_storage`); a timeout means too many at once, never a
/// refusal, so the caller retries.
pub fn storage_lock_timeout(message: &str) -> Option<&str> {
    const FLOCK: &str = "can't lock file '/var/lock/pve-manager/pve-storage-";
    const CFS: &str = "cfs-lock 'storage-";
    if let Some(at) = message.find(FLOCK) {
        let rest = &message[at + FLOCK.len()..];
        let (id, tail) = rest.split_once('\'')?;
        return (tail.contains("got timeout") && !id.is_empty()).then_some(id);
    }
    let at = message.find(CFS)?;
    let rest = &message[at + CFS.len()..];
    let (id, tail) = rest.split_once('\'')?;
    (tail.contains("got lock request timeout") && !id.is_empty()).then_some(id)
}

fn classify(status: u16, message: &str, errors: &BTreeMap<String, String>) -> ErrorKind {
    let any =
        |needle: &str| message.contains(needle) || errors.values().any(|v| v.contains(needle));
    match status {
        401 => ErrorKind::Unauthorized,
        403 => ErrorKind::Forbidden,
        // nextid?vmid=N answers 400 {"vmid":"VM N already exists"}.
        400 if any("already exists") => ErrorKind::AlreadyExists,
        400 => ErrorKind::InvalidParameters,
        501 => ErrorKind::NotImplemented,
        595..=599 => ErrorKind::ProxyFailure,
        500 => {
            if message.starts_with("Configuration file") && message.contains("does not exist") {
                ErrorKind::VmNotFound
            } else if message.contains("already exists") {
                ErrorKind::AlreadyExists
            } else if message.contains("QEMU guest agent is not running") {
                ErrorKind::AgentNotRunning
            } else if message.contains("No QEMU guest agent configured") {
                ErrorKind::AgentNotConfigured
            } else if message.contains("checksum mismatch")
                || message.starts_with("detected modified configuration")
            {
                // qemu-server's words, and PVE::Tools::assert_if_modified's
                // (node, storage and other section configs).
                ErrorKind::DigestMismatch
            } else if message.contains("is running - destroy failed") {
                ErrorKind::VmRunning
            } else if message.contains("is not running") {
                ErrorKind::VmNotRunning
            } else {
                ErrorKind::Server
            }
        }
        502..=594 => ErrorKind::Server,
        _ => ErrorKind::InvalidParameters,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, message: &str) -> Error {
        Error::Api {
            target: Box::new(Target {
                host: "pve.test:8006".into(),
                method: Method::POST,
                path: "/nodes/pve/qemu".into(),
                vmid: VmId::new(100).ok(),
            }),
            status,
            message: message.into(),
            errors: BTreeMap::new(),
        }
    }

    #[test]
    fn storage_lock_timeouts_name_their_storage() {
        assert_eq!(
            storage_lock_timeout(
                "unable to create VM 100 - can't lock file \
                 '/var/lock/pve-manager/pve-storage-local-zfs' - got timeout"
            ),
            Some("local-zfs")
        );
        assert_eq!(
            storage_lock_timeout("cfs-lock 'storage-nfs1' error: got lock request timeout"),
            Some("nfs1")
        );
        // A VM's config lock is not a storage lock; other failures neither.
        assert_eq!(
            storage_lock_timeout(
                "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout"
            ),
            None
        );
        assert_eq!(
            storage_lock_timeout(
                "can't lock file '/var/lock/pve-manager/pve-storage-x' - permission denied"
            ),
            None
        );
        assert_eq!(
            storage_lock_timeout("cfs-lock 'storage-x' error: no quorum"),
            None
        );
    }

    #[test]
    fn message_names_host_path_vmid_and_pve_text() {
        let err = api(
            500,
            "unable to create VM 100 - VM 100 already exists on node 'pve'",
        );
        assert_eq!(
            err.to_string(),
            "PVE refused POST /nodes/pve/qemu on pve.test:8006 (vmid 100): HTTP 500: \
             unable to create VM 100 - VM 100 already exists on node 'pve'"
        );
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    }

    #[test]
    fn parameter_errors_are_listed() {
        let mut err = api(400, "Parameter verification failed.");
        if let Error::Api { errors, .. } = &mut err {
            errors.insert(
                "vmid".into(),
                "invalid format - value does not look like a valid VM ID\n".into(),
            );
        }
        assert!(
            err.to_string().ends_with(
                "HTTP 400: Parameter verification failed. \
                 (vmid: invalid format - value does not look like a valid VM ID)"
            ),
            "{err}"
        );
        assert_eq!(err.kind(), ErrorKind::InvalidParameters);
    }

    #[test]
    fn known_pve_messages_are_classified() {
        let cases = [
            (
                500,
                "Configuration file 'nodes/pve/qemu-server/100.conf' does not exist",
                ErrorKind::VmNotFound,
            ),
            (
                500,
                "QEMU guest agent is not running",
                ErrorKind::AgentNotRunning,
            ),
            (
                500,
                "No QEMU guest agent configured",
                ErrorKind::AgentNotConfigured,
            ),
            (500, "VM 100 is not running", ErrorKind::VmNotRunning),
            (
                500,
                "VM 100 is running - destroy failed",
                ErrorKind::VmRunning,
            ),
            (
                500,
                "checksum mismatch (file change by other user?)",
                ErrorKind::DigestMismatch,
            ),
            (
                500,
                "detected modified configuration - file changed by other user? Try again.",
                ErrorKind::DigestMismatch,
            ),
            (500, "got timeout", ErrorKind::Server),
            (596, "", ErrorKind::ProxyFailure),
            (401, "Authentication failed!", ErrorKind::Unauthorized),
            (
                403,
                "Permission check failed (/vms/100, VM.Audit)",
                ErrorKind::Forbidden,
            ),
            (
                501,
                "Method 'GET /x' not implemented",
                ErrorKind::NotImplemented,
            ),
        ];
        for (status, message, kind) in cases {
            assert_eq!(api(status, message).kind(), kind, "{status} {message}");
        }
        assert!(api(500, "got timeout").is_transient());
        assert!(api(595, "").is_transient());
        assert!(!api(500, "QEMU guest agent is not running").is_transient());
        assert!(!api(400, "Parameter verification failed.").is_transient());
    }

    #[test]
    fn task_errors_name_node_and_vmid() {
        let upid: Upid = "UPID:pve:00000A72:0000C9CC:5FBE5E5C:qmcreate:100:root@pam:"
            .parse()
            .unwrap();
        let err = Error::TaskFailed {
            upid: Box::new(upid),
            vmid: VmId::new(100).ok(),
            exitstatus: "cannot import from 'local:import/x.qcow2' - no such volume".into(),
            log_tail: vec![],
        };
        assert_eq!(
            err.to_string(),
            "PVE task qmcreate on node pve (vmid 100) failed: \
             cannot import from 'local:import/x.qcow2' - no such volume"
        );
    }
}
