//! The daemon's HTTP API, version 1: endpoints, scopes, and the body of
//! every request and answer. The daemon serves these types and the
//! [`crate::Client`] reads them, so both sides agree by construction.
//!
//! | endpoint | scope | answer |
//! |---|---|---|
//! | `GET /v1/status[?manifest=NAME][&observe=false]` | read | [`StatusResponse`] (records only, PVE not asked, with `observe=false`) |
//! | `GET /v1/events[?since=SEQ&limit=N]` | read | [`EventsResponse`] |
//! | `GET /metrics` | read | Prometheus text |
//! | `POST /v1/reconcile[?manifest=NAME]` | write | [`ReconcileResponse`] (202) |
//! | `PUT /v1/subtree` | write | [`SubtreeRequest`] → [`SubtreeResponse`] (202) |
//!
//! Every endpoint needs `Authorization: Bearer <token>`; errors answer
//! [`ErrorBody`].

use homestak_base::time::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{DriftPolicy, ManifestRecord, Status};

/// Most events one `GET /v1/events` returns.
pub const MAX_EVENTS: usize = 500;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Status, events, metrics.
    Read,
    /// Also trigger reconciles and hand over subtrees.
    Write,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
        }
    }
}

/// An endpoint of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Status,
    Events,
    Metrics,
    Reconcile,
    Subtree,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Endpoint; 5] = [
        Endpoint::Status,
        Endpoint::Events,
        Endpoint::Metrics,
        Endpoint::Reconcile,
        Endpoint::Subtree,
    ];

    /// The endpoint a path names.
    pub fn of(path: &str) -> Option<Endpoint> {
        Endpoint::ALL.into_iter().find(|e| e.path() == path)
    }

    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Status => "/v1/status",
            Endpoint::Events => "/v1/events",
            Endpoint::Metrics => "/metrics",
            Endpoint::Reconcile => "/v1/reconcile",
            Endpoint::Subtree => "/v1/subtree",
        }
    }

    /// The method it answers (GET endpoints also answer HEAD).
    pub fn method(self) -> &'static str {
        match self {
            Endpoint::Status | Endpoint::Events | Endpoint::Metrics => "GET",
            Endpoint::Reconcile => "POST",
            Endpoint::Subtree => "PUT",
        }
    }

    /// The smallest scope that may call it.
    pub fn scope(self) -> Scope {
        match self {
            Endpoint::Status | Endpoint::Events | Endpoint::Metrics => Scope::Read,
            Endpoint::Reconcile | Endpoint::Subtree => Scope::Write,
        }
    }

    /// The `route` label of `homestak_http_requests_total`.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Status => "v1_status",
            Endpoint::Events => "v1_events",
            Endpoint::Metrics => "metrics",
            Endpoint::Reconcile => "v1_reconcile",
            Endpoint::Subtree => "v1_subtree",
        }
    }
}

/// Where a managed manifest comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// `manifests/NAME.yaml`, listed in `controller.yaml` or `--manifest`.
    Git,
    /// Handed over by a parent tier (`PUT /v1/subtree`).
    Delegated,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Git => "git",
            Origin::Delegated => "delegated",
        }
    }
}

/// The reconcile in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    pub manifest: String,
    pub since: Timestamp,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusResponse {
    /// `git-head` or `working-tree`.
    pub source: String,
    /// The revision of desired state last read.
    pub revision: Option<String>,
    /// Why desired state could not be read, if it could not.
    pub source_error: Option<String>,
    pub queue_depth: u64,
    pub running: Option<Running>,
    pub manifests: Vec<ManifestStatus>,
}

/// One managed manifest in [`StatusResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestStatus {
    pub name: String,
    pub origin: Origin,
    /// The target node; `None` when nothing names one.
    pub host: Option<String>,
    pub drift: DriftPolicy,
    pub suspended: bool,
    /// The revision applying it would apply.
    pub revision: String,
    /// From a fresh observation; `None` when it could not be made.
    pub in_sync: Option<bool>,
    #[serde(flatten)]
    pub record: ManifestRecord,
    /// The drift report.
    pub status: Option<Status>,
    /// Why there is no report.
    pub error: Option<String>,
}

/// `GET /v1/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsResponse {
    pub events: Vec<crate::Event>,
    /// Pass as `since` to get what follows.
    pub next: u64,
    /// The newest sequence number in the log.
    pub last: u64,
}

/// `POST /v1/reconcile`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileResponse {
    /// The manifests queued.
    pub queued: Vec<String>,
}

/// `PUT /v1/subtree`: a parent tier hands over the manifest restricted to
/// a `pve` node's descendants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubtreeRequest {
    /// The node of this tier to converge it on (`nodes/<host>.yaml`).
    pub host: String,
    /// The manifest as homestak writes it in JSON (schema v2, with nodes).
    pub manifest: serde_json::Value,
}

/// The answer to [`SubtreeRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtreeResponse {
    /// The manifest's name.
    pub accepted: String,
    pub host: String,
    /// `subtree:<digest>` of the manifest.
    pub revision: String,
    pub queued: bool,
    /// The manifest's generation after this request: the run that applies
    /// it records a `last_reconcile.generation` at least this.
    pub generation: u64,
}

/// Every error answer: `{"error": {"code": "E…", "message": "…"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// E100 … E503 (the daemon's reply module lists them).
    pub code: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Applied, ManifestRecord};
    use homestak_base::time::Timestamp;

    #[test]
    fn endpoints_name_their_paths_methods_and_scopes() {
        for endpoint in Endpoint::ALL {
            assert_eq!(Endpoint::of(endpoint.path()), Some(endpoint));
        }
        assert_eq!(Endpoint::of("/v1/other"), None);
        assert_eq!(Endpoint::Subtree.method(), "PUT");
        assert_eq!(Endpoint::Subtree.scope(), Scope::Write);
        assert_eq!(Endpoint::Metrics.scope(), Scope::Read);
    }

    #[test]
    fn subtree_answers_carry_generations() {
        let put = SubtreeResponse {
            accepted: "child".into(),
            host: "pve".into(),
            revision: "subtree:1".into(),
            queued: true,
            generation: 3,
        };
        let json = serde_json::to_value(&put).unwrap();
        assert_eq!(json["generation"], 3);
        assert_eq!(
            serde_json::from_value::<SubtreeResponse>(json).unwrap(),
            put
        );
    }

    #[test]
    fn a_manifests_record_sits_beside_its_status() {
        let status = ManifestStatus {
            name: "demo".into(),
            origin: Origin::Git,
            host: Some("pve".into()),
            drift: DriftPolicy::Report,
            suspended: false,
            revision: "abc".into(),
            in_sync: None,
            record: ManifestRecord {
                generation: 2,
                last_applied: Some(Applied {
                    revision: "abc".into(),
                    at: Timestamp::from_millis(1_000),
                }),
                last_reconcile: None,
            },
            status: None,
            error: Some("cannot observe".into()),
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["last_applied"]["revision"], "abc");
        assert_eq!(json["last_applied"]["at"], "1970-01-01T00:00:01Z");
        assert!(json["last_reconcile"].is_null());
        assert_eq!(json["drift"], "report");
        assert_eq!(json["origin"], "git");
        assert_eq!(json["generation"], 2);
        assert_eq!(
            serde_json::from_value::<ManifestStatus>(json).unwrap(),
            status
        );
    }

    #[test]
    fn a_subtree_request_refuses_unknown_fields() {
        let ok: SubtreeRequest =
            serde_json::from_str(r#"{"host": "pve", "manifest": {"name": "x"}}"#).unwrap();
        assert_eq!(ok.host, "pve");
        assert!(
            serde_json::from_str::<SubtreeRequest>(r#"{"host": "pve", "manifest": {}, "x": 1}"#)
                .is_err()
        );
    }
}
