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
//! | `DELETE /v1/subtree/{name}` | write | [`SubtreeDeleteResponse`] (202) |
//! | `POST /v1/plan` | read | [`SubtreeRequest`] → [`PlanTree`]: what converging it would do here and below (changes nothing) |
//!
//! Every endpoint needs `Authorization: Bearer <token>` (the daemon's
//! status page, `/ui`, may present a read token as its session cookie on
//! the two `GET` reads, `status` and `events`); errors answer
//! [`ErrorBody`].
//!
//! A parent follows its requests by generation: `PUT` and `DELETE` of a
//! subtree answer the manifest's new [`ManifestRecord::generation`] G; the
//! run that saw the request is the first whose
//! [`crate::LastReconcile::generation`] is at least G. A destroyed subtree
//! is forgotten, so `GET /v1/status?manifest=NAME` then answers 404.

use homestak_base::id::NodeName;
use homestak_base::time::Timestamp;
use serde::{Deserialize, Deserializer, Serialize};

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
    /// `DELETE /v1/subtree/{name}`.
    DeleteSubtree,
    /// `POST /v1/plan`.
    Plan,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Endpoint; 7] = [
        Endpoint::Status,
        Endpoint::Events,
        Endpoint::Metrics,
        Endpoint::Reconcile,
        Endpoint::Subtree,
        Endpoint::DeleteSubtree,
        Endpoint::Plan,
    ];

    /// The endpoint a path (no query, no trailing `/`) names, whatever
    /// the method: a wrong method is then told so (405), not sent away.
    pub fn of(path: &str) -> Option<Endpoint> {
        Endpoint::ALL.into_iter().find(|e| {
            if e.path().contains('{') {
                e.name_in(path).is_some()
            } else {
                e.path() == path
            }
        })
    }

    /// The path, as a template when it carries a name (`{name}`).
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Status => "/v1/status",
            Endpoint::Events => "/v1/events",
            Endpoint::Metrics => "/metrics",
            Endpoint::Reconcile => "/v1/reconcile",
            Endpoint::Subtree => "/v1/subtree",
            Endpoint::DeleteSubtree => "/v1/subtree/{name}",
            Endpoint::Plan => "/v1/plan",
        }
    }

    /// The `{name}` segment of `path`, verbatim (not decoded), when this
    /// endpoint's path has one and `path` is that path. Check it with
    /// [`is_manifest_name`] before use.
    pub fn name_in(self, path: &str) -> Option<&str> {
        let (before, after) = self.path().split_once("{name}")?;
        let name = path.strip_prefix(before)?.strip_suffix(after)?;
        (!name.is_empty() && !name.contains('/')).then_some(name)
    }

    /// The method it answers (GET endpoints also answer HEAD).
    pub fn method(self) -> &'static str {
        match self {
            Endpoint::Status | Endpoint::Events | Endpoint::Metrics => "GET",
            Endpoint::Reconcile | Endpoint::Plan => "POST",
            Endpoint::Subtree => "PUT",
            Endpoint::DeleteSubtree => "DELETE",
        }
    }

    /// The smallest scope that may call it.
    pub fn scope(self) -> Scope {
        match self {
            Endpoint::Status | Endpoint::Events | Endpoint::Metrics | Endpoint::Plan => Scope::Read,
            Endpoint::Reconcile | Endpoint::Subtree | Endpoint::DeleteSubtree => Scope::Write,
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
            Endpoint::DeleteSubtree => "v1_subtree_delete",
            Endpoint::Plan => "v1_plan",
        }
    }

    /// True for the endpoints that queue work and answer 202.
    pub fn accepts(self) -> bool {
        matches!(
            self,
            Endpoint::Reconcile | Endpoint::Subtree | Endpoint::DeleteSubtree
        )
    }
}

/// Whether `name` can name a delegated manifest, in a path
/// (`/v1/subtree/{name}`) as in a [`SubtreeRequest`]: a node name's rules
/// (letters, digits, `-`, `.`), which a parent's subtree names
/// (`NODE-subtree`) follow. Such a name needs no escaping anywhere.
pub fn is_manifest_name(name: &str) -> bool {
    NodeName::new(name).is_ok()
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
    /// A delegated manifest being destroyed (`DELETE /v1/subtree/{name}`):
    /// its runs remove its VMs; once one converges it is forgotten.
    #[serde(default)]
    pub destroying: bool,
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
    #[serde(deserialize_with = "host_field")]
    pub host: NodeName,
    /// The manifest as homestak writes it in JSON (schema v2, with nodes).
    pub manifest: serde_json::Value,
}

/// A node name whose error says which field held it: serde's own
/// message for a refused value names no field.
fn host_field<'de, D: Deserializer<'de>>(d: D) -> Result<NodeName, D::Error> {
    NodeName::new(String::deserialize(d)?)
        .map_err(|e| serde::de::Error::custom(format_args!("host: {e}")))
}

/// The answer to [`SubtreeRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtreeResponse {
    /// The manifest's name.
    pub accepted: String,
    pub host: NodeName,
    /// `subtree:<digest>` of the manifest.
    pub revision: String,
    pub queued: bool,
    /// The manifest's generation after this request: the run that applies
    /// it records a `last_reconcile.generation` at least this.
    pub generation: u64,
}

/// The answer to `DELETE /v1/subtree/{name}`: the subtree is marked for
/// destruction and a destroy run is queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtreeDeleteResponse {
    /// The manifest's name.
    pub name: String,
    /// The manifest's generation after this request. The destroy is done
    /// when its status answers 404; a run with `last_reconcile.generation`
    /// at least this that ended otherwise (`failed`, `interrupted`) left
    /// the subtree in place, still being destroyed.
    pub generation: u64,
    pub queued: bool,
}

/// `POST /v1/plan`: a tier's plan of a manifest and its child tiers'
/// plans of their subtrees, to any depth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanTree {
    /// The tier's host (`nodes/<host>.yaml` there).
    pub host: String,
    pub plan: homestak_core::plan::Plan,
    /// The plan as `homestak plan` prints it (no colour).
    pub text: String,
    pub children: Vec<ChildPlan>,
}

/// A `pve` node's child tier in a [`PlanTree`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildPlan {
    pub node: homestak_base::id::NodeName,
    /// The child's plan, when it could be asked.
    pub tree: Option<Box<PlanTree>>,
    /// Why there is none, or what it will do once it can plan.
    pub note: Option<String>,
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

/// `GET /health` (a seed endpoint, outside `/v1`, no token):
/// `{"status": "ok"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResponse {
    pub status: Health,
}

impl HealthResponse {
    /// The only answer a serving daemon gives.
    pub fn ok() -> HealthResponse {
        HealthResponse { status: Health::Ok }
    }
}

/// What `/health` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Ok,
}

/// `GET /specs` (a seed endpoint, outside `/v1`, no token): the names of
/// the site-config's specs (`v2/specs/<name>.yaml`), sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecsResponse {
    pub specs: Vec<String>,
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
        assert_eq!(Endpoint::DeleteSubtree.method(), "DELETE");
        assert_eq!(Endpoint::DeleteSubtree.scope(), Scope::Write);
        let labels: std::collections::HashSet<_> =
            Endpoint::ALL.iter().map(|e| e.label()).collect();
        assert_eq!(labels.len(), Endpoint::ALL.len(), "one label per endpoint");
    }

    #[test]
    fn a_subtree_is_deleted_by_its_name_in_the_path() {
        let path = "/v1/subtree/hv-subtree";
        assert_eq!(Endpoint::of(path), Some(Endpoint::DeleteSubtree));
        assert_eq!(Endpoint::DeleteSubtree.name_in(path), Some("hv-subtree"));
        // PUT keeps its own path.
        assert_eq!(Endpoint::of("/v1/subtree"), Some(Endpoint::Subtree));
        assert_eq!(Endpoint::DeleteSubtree.name_in("/v1/subtree"), None);
        assert_eq!(Endpoint::Subtree.name_in(path), None);
        // One segment, not empty; anything else is no endpoint of the API.
        for path in [
            "/v1/subtree/",
            "/v1/subtree/a/b",
            "/v1/subtreex",
            "/v1/subtree//",
        ] {
            assert_eq!(Endpoint::of(path), None, "{path}");
        }
        // The segment is not decoded; the name check refuses what is not
        // a plain name.
        let odd = "/v1/subtree/%2e%2e";
        assert_eq!(Endpoint::of(odd), Some(Endpoint::DeleteSubtree));
        assert!(!is_manifest_name(
            Endpoint::DeleteSubtree.name_in(odd).unwrap()
        ));
        assert!(is_manifest_name("hv-subtree"));
        for bad in ["", "..", ".hidden", "a b", "a/b", "-a", "x%2F"] {
            assert!(!is_manifest_name(bad), "{bad:?}");
        }
        assert!(Endpoint::DeleteSubtree.accepts() && !Endpoint::Status.accepts());
    }

    #[test]
    fn subtree_answers_carry_generations() {
        let put = SubtreeResponse {
            accepted: "child".into(),
            host: "pve".parse().unwrap(),
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

        let delete: SubtreeDeleteResponse =
            serde_json::from_str(r#"{"name": "child", "generation": 4, "queued": true}"#).unwrap();
        assert_eq!(
            delete,
            SubtreeDeleteResponse {
                name: "child".into(),
                generation: 4,
                queued: true
            }
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
            destroying: true,
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
        assert_eq!(json["destroying"], true);
        assert_eq!(
            serde_json::from_value::<ManifestStatus>(json.clone()).unwrap(),
            status
        );
        // From a daemon that predates generations and destroys.
        let mut old = json;
        let map = old.as_object_mut().unwrap();
        map.remove("generation");
        map.remove("destroying");
        let read = serde_json::from_value::<ManifestStatus>(old).unwrap();
        assert_eq!((read.record.generation, read.destroying), (0, false));
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

    #[test]
    fn a_subtree_request_names_a_host_that_is_no_node_name() {
        let err = serde_json::from_str::<SubtreeRequest>(r#"{"host": "a b", "manifest": {}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("host: 'a b' is not a valid node name"),
            "{err}"
        );
        let request = SubtreeRequest {
            host: "pve".parse().unwrap(),
            manifest: serde_json::json!({"name": "x"}),
        };
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"host":"pve","manifest":{"name":"x"}}"#
        );
    }
}
