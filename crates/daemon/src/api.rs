//! The reconciler API and `/metrics`. Every endpoint needs an API token
//! (`Authorization: Bearer`, see [`super::auth::ApiTokens`]):
//!
//! | endpoint | scope | what |
//! |---|---|---|
//! | `GET /v1/status[?manifest=NAME]` | read | managed manifests, last applied revision, last reconcile, the engine's status (drift) |
//! | `GET /v1/events[?since=SEQ&limit=N]` | read | the event log after `SEQ` |
//! | `GET /metrics` | read | Prometheus text |
//! | `POST /v1/reconcile[?manifest=NAME]` | write | queue a reconcile of one or all manifests (202) |
//! | `PUT /v1/subtree` | write | a parent tier hands over a subtree (202) |
//!
//! `PUT /v1/subtree` takes `{"host": "<node on this tier>", "manifest":
//! <manifest JSON as homestak serialises it>}`; the manifest is validated
//! with [`homestak_core::model::Manifest`] and must have a node tree.

use std::sync::Arc;

use axum::http::Method;
use serde_json::{Value, json};

use super::auth::{ApiTokens, Caller, Scope};
use super::engine::{Engine, Reason};
use super::events::{EventLog, now_rfc3339};
use super::metrics::Metrics;
use super::reconciler::{Reconciler, subtree_revision};
use super::reply::{self, ApiError, Reply};
use super::site_cell::SiteCell;
use super::store::Subtree;
use homestak_core::model::{Manifest, NodeName, Origin};

/// Most events returned by one `GET /v1/events`.
const MAX_EVENTS: usize = 500;

/// What the API needs.
#[derive(Clone)]
pub struct Api {
    pub tokens: Arc<ApiTokens>,
    pub reconciler: Arc<Reconciler>,
    pub engine: Arc<dyn Engine>,
    pub metrics: Arc<Metrics>,
    pub events: EventLog,
    pub site: SiteCell,
}

/// An API endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Status,
    Events,
    Metrics,
    Reconcile,
    Subtree,
}

impl Endpoint {
    /// The endpoint a path names.
    pub fn of(path: &str) -> Option<Endpoint> {
        Some(match path {
            "/v1/status" => Endpoint::Status,
            "/v1/events" => Endpoint::Events,
            "/metrics" => Endpoint::Metrics,
            "/v1/reconcile" => Endpoint::Reconcile,
            "/v1/subtree" => Endpoint::Subtree,
            _ => return None,
        })
    }

    /// The method it answers (GET endpoints also answer HEAD).
    pub fn method(self) -> Method {
        match self {
            Endpoint::Status | Endpoint::Events | Endpoint::Metrics => Method::GET,
            Endpoint::Reconcile => Method::POST,
            Endpoint::Subtree => Method::PUT,
        }
    }

    /// The minimum token scope.
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

impl Api {
    /// Answers a request to `endpoint`: method, token and scope first,
    /// then the endpoint itself.
    pub async fn handle(
        &self,
        endpoint: Endpoint,
        method: &Method,
        query: Option<&str>,
        authorization: Option<&str>,
        body: &[u8],
    ) -> Reply {
        let allowed = endpoint.method();
        if *method != allowed && !(allowed == Method::GET && *method == Method::HEAD) {
            return ApiError::method_not_allowed(method).reply();
        }
        let caller = match self.tokens.authorize(authorization, endpoint.scope()) {
            Ok(caller) => caller,
            Err(err) => return err.reply(),
        };
        let result = match endpoint {
            Endpoint::Status => {
                self.reconciler
                    .status(param(query, "manifest").as_deref())
                    .await
            }
            Endpoint::Events => self.events(query),
            Endpoint::Metrics => {
                let text = self.metrics.render(&self.engine.metrics());
                return Reply::bytes(reply::PROMETHEUS, text.into_bytes());
            }
            Endpoint::Reconcile => self.reconcile(query, &caller),
            Endpoint::Subtree => self.subtree(body, &caller),
        };
        match result {
            Ok(value) if matches!(endpoint, Endpoint::Reconcile | Endpoint::Subtree) => {
                Reply::json_status(202, value)
            }
            Ok(value) => Reply::json(value),
            Err(err) => err.reply(),
        }
    }

    fn events(&self, query: Option<&str>) -> Result<Value, ApiError> {
        let number = |key: &str| -> Result<Option<u64>, ApiError> {
            param(query, key)
                .map(|v| {
                    v.parse::<u64>().map_err(|_| {
                        ApiError::bad_request(format!("{key} must be a non-negative integer"))
                    })
                })
                .transpose()
        };
        let since = number("since")?.unwrap_or(0);
        let limit = number("limit")?
            .map_or(MAX_EVENTS, |l| usize::try_from(l).unwrap_or(MAX_EVENTS))
            .min(MAX_EVENTS);
        let events = self.events.since(since, limit);
        let next = events.last().map_or(since, |e| e.seq);
        Ok(json!({"events": events, "next": next, "last": self.events.last_seq()}))
    }

    fn reconcile(&self, query: Option<&str>, caller: &Caller) -> Result<Value, ApiError> {
        let queued = match param(query, "manifest") {
            Some(name) => {
                self.reconciler.enqueue(&name, Reason::Api)?;
                vec![name]
            }
            None => self.reconciler.enqueue_all(Reason::Api),
        };
        tracing::info!(caller = %caller.name, count = queued.len(), "reconcile requested");
        Ok(json!({"queued": queued}))
    }

    fn subtree(&self, body: &[u8], caller: &Caller) -> Result<Value, ApiError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("Request body is not JSON: {e}")))?;
        let object = value.as_object().ok_or_else(|| {
            ApiError::bad_request("Request body must be {\"host\": …, \"manifest\": {…}}")
        })?;
        if let Some(key) = object
            .keys()
            .find(|k| !matches!(k.as_str(), "host" | "manifest"))
        {
            return Err(ApiError::bad_request(format!("Unknown field: {key}")));
        }
        let host = object
            .get("host")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::bad_request("Missing field: host (a node of this tier)"))?;
        NodeName::new(host).map_err(|e| ApiError::bad_request(format!("Invalid host: {e}")))?;
        let site = self.site.get();
        if !site.nodes().contains(host) {
            return Err(ApiError::bad_request(format!(
                "Unknown host {host}: no nodes/{host}.yaml in this tier's site-config"
            )));
        }
        let raw = object
            .get("manifest")
            .ok_or_else(|| ApiError::bad_request("Missing field: manifest"))?;
        let manifest = Manifest::from_value(raw, Origin::Json)
            .map_err(|e| ApiError::bad_request(format!("Invalid manifest: {}", e.located())))?;
        if !manifest.has_nodes() {
            return Err(ApiError::bad_request(
                "Invalid manifest: a subtree must be a schema v2 manifest with nodes",
            ));
        }
        let name = manifest.name().to_string();
        let revision = subtree_revision(raw);
        self.reconciler.accept_subtree(Subtree {
            name: name.clone(),
            host: host.to_string(),
            manifest: raw.clone(),
            revision: revision.clone(),
            received_at: now_rfc3339(),
            from: caller.name.clone(),
        })?;
        tracing::info!(caller = %caller.name, manifest = %name, "subtree accepted");
        Ok(json!({"accepted": name, "host": host, "revision": revision, "queued": true}))
    }
}

/// A query parameter, percent-decoded.
pub fn param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_and_endpoints() {
        assert_eq!(
            param(Some("a=1&manifest=n2%2Dquick"), "manifest").as_deref(),
            Some("n2-quick")
        );
        assert_eq!(param(Some("a=1"), "manifest"), None);
        assert_eq!(param(None, "x"), None);
        assert_eq!(Endpoint::of("/v1/subtree"), Some(Endpoint::Subtree));
        assert_eq!(Endpoint::Subtree.scope(), Scope::Write);
        assert_eq!(Endpoint::Metrics.scope(), Scope::Read);
        assert_eq!(Endpoint::of("/v1/other"), None);
    }
}
