//! The reconciler API and `/metrics`, serving the types of
//! [`homestak_api::v1`] (its docs list the endpoints). Every endpoint needs
//! an API token (`Authorization: Bearer`, see [`super::auth::ApiTokens`]).
//!
//! `PUT /v1/subtree` takes a [`SubtreeRequest`]; the manifest is validated
//! with [`homestak_core::model::Manifest`], must have a node tree, and
//! must be named so that `DELETE /v1/subtree/{name}` can name it
//! ([`is_manifest_name`]).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::Method;

use super::auth::{ApiTokens, Caller};
use super::engine::{Engine, StatusRequest};
use super::events::EventLog;
use super::metrics::{Metrics, PveMetrics};
use super::reconciler::{Reconciler, error_chain, subtree_revision};
use super::reply::{self, ApiError, Reply, to_body as body};
use super::site_cell::SiteCell;
pub use homestak_api::v1::Endpoint;
use homestak_api::v1::{
    EventsResponse, MAX_EVENTS, PlanTree, ReconcileResponse, SubtreeDeleteResponse, SubtreeRequest,
    SubtreeResponse, is_manifest_name,
};
use homestak_api::{Reason, Subtree};
use homestak_base::time::Timestamp;
use homestak_core::model::{Manifest, Origin};

/// A request body not read yet. Only [`Api::handle`] reads it, after the
/// token proved valid for the endpoint, and only for the endpoints that
/// take one: at most `max` bytes, within `timeout`.
#[derive(Debug)]
pub struct Unread {
    pub body: Body,
    /// `Content-Length`, when the client gave one.
    pub declared: Option<u64>,
    pub max: usize,
    pub timeout: Duration,
}

impl Unread {
    /// Reads the whole body: 413 `E104` past `max` bytes (at once when
    /// `Content-Length` says so), 408 `E105` when it does not arrive in
    /// time.
    pub async fn read(self) -> Result<Bytes, ApiError> {
        let too_large = || {
            ApiError::new(
                413,
                "E104",
                format!("Request body larger than {} bytes", self.max),
            )
        };
        if self.declared.is_some_and(|n| n > self.max as u64) {
            return Err(too_large());
        }
        match tokio::time::timeout(self.timeout, axum::body::to_bytes(self.body, self.max)).await {
            Ok(Ok(bytes)) => Ok(bytes),
            // Over the limit, or the client stopped sending: either way
            // there is no request to answer.
            Ok(Err(_)) => Err(too_large()),
            Err(_) => Err(ApiError::new(
                408,
                "E105",
                format!(
                    "The request body did not arrive within {} s",
                    self.timeout.as_secs()
                ),
            )),
        }
    }
}

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

impl Api {
    /// Answers a request to `endpoint` at `path` (normalised, as
    /// [`Endpoint::of`] matched it): method, token and scope first, then
    /// the body (only for the endpoints that take one), then the endpoint.
    pub async fn handle(
        &self,
        endpoint: Endpoint,
        path: &str,
        method: &Method,
        query: Option<&str>,
        authorization: Option<&str>,
        unread: Unread,
    ) -> Reply {
        let allowed = endpoint.method();
        if method.as_str() != allowed && !(allowed == "GET" && *method == Method::HEAD) {
            return ApiError::method_not_allowed(method).reply();
        }
        let caller = match self.tokens.authorize(authorization, endpoint.scope()) {
            Ok(caller) => caller,
            Err(err) => return err.reply(),
        };
        let body_bytes = if matches!(endpoint, Endpoint::Subtree | Endpoint::Plan) {
            match unread.read().await {
                Ok(bytes) => bytes,
                Err(err) => return err.reply(),
            }
        } else {
            Bytes::new()
        };
        let result = match endpoint {
            Endpoint::Status => match flag(query, "observe") {
                Ok(observe) => self
                    .reconciler
                    .status(param(query, "manifest").as_deref(), observe.unwrap_or(true))
                    .await
                    .and_then(|r| body(&r)),
                Err(err) => Err(err),
            },
            Endpoint::Events => self.events(query).and_then(|r| body(&r)),
            Endpoint::Metrics => {
                // An engine that asks no PVE still shows the families.
                static NO_PVE: PveMetrics = PveMetrics::new();
                let pve = self.engine.pve_metrics().unwrap_or(&NO_PVE);
                let text = self.metrics.render(pve);
                return Reply::bytes(reply::PROMETHEUS, text.into_bytes());
            }
            Endpoint::Reconcile => self.reconcile(query, &caller).and_then(|r| body(&r)),
            Endpoint::Subtree => self.subtree(&body_bytes, &caller).and_then(|r| body(&r)),
            Endpoint::DeleteSubtree => self
                .delete_subtree(endpoint.name_in(path), &caller)
                .and_then(|r| body(&r)),
            Endpoint::Plan => self.plan(&body_bytes).await.and_then(|r| body(&r)),
        };
        match result {
            Ok(value) if endpoint.accepts() => Reply::json_status(202, value),
            Ok(value) => Reply::json(value),
            Err(err) => err.reply(),
        }
    }

    fn events(&self, query: Option<&str>) -> Result<EventsResponse, ApiError> {
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
        Ok(EventsResponse {
            events,
            next,
            last: self.events.last_seq(),
        })
    }

    fn reconcile(
        &self,
        query: Option<&str>,
        caller: &Caller,
    ) -> Result<ReconcileResponse, ApiError> {
        let queued = match param(query, "manifest") {
            Some(name) => {
                self.reconciler.enqueue(&name, Reason::Api)?;
                vec![name]
            }
            None => self.reconciler.enqueue_all(Reason::Api),
        };
        tracing::info!(caller = %caller.name, count = queued.len(), "reconcile requested");
        Ok(ReconcileResponse { queued })
    }

    /// A subtree request's body, checked: its host has a node file here
    /// and its manifest is a valid v2 manifest with nodes and a usable name.
    fn subtree_request(&self, body: &[u8]) -> Result<(SubtreeRequest, Manifest), ApiError> {
        let request: SubtreeRequest = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "Invalid request body: {e}; send {{\"host\": NODE, \"manifest\": {{…}}}}"
            ))
        })?;
        let host = &request.host;
        if !self.site.get().nodes().contains(host.as_str()) {
            return Err(ApiError::bad_request(format!(
                "Unknown host {host}: no nodes/{host}.yaml in this tier's site-config"
            )));
        }
        let manifest = Manifest::from_value(&request.manifest, Origin::Json)
            .map_err(|e| ApiError::bad_request(format!("Invalid manifest: {}", e.located())))?;
        if !manifest.has_nodes() && manifest.levels().is_empty() {
            return Err(ApiError::bad_request(
                "Invalid manifest: a subtree must have nodes (schema v2) or levels (schema v1)",
            ));
        }
        let name = manifest.name().to_string();
        if !is_manifest_name(&name) {
            return Err(ApiError::bad_request(format!(
                "Invalid manifest: a subtree's name ('{name}') must be letters, digits, '-' \
                 and '.', starting and ending with a letter or digit"
            )));
        }
        Ok((request, manifest))
    }

    /// `POST /v1/plan`: the plan of a subtree here and below; no change.
    async fn plan(&self, body: &[u8]) -> Result<PlanTree, ApiError> {
        let (request, manifest) = self.subtree_request(body)?;
        let status = StatusRequest {
            manifest: Arc::new(manifest),
            host: request.host.into(),
            site: self.site.get(),
        };
        self.engine
            .plan(status)
            .await
            .map_err(|e| ApiError::internal(format!("Cannot plan: {}", error_chain(&e))))
    }

    fn subtree(&self, body: &[u8], caller: &Caller) -> Result<SubtreeResponse, ApiError> {
        let (request, manifest) = self.subtree_request(body)?;
        let name = manifest.name().to_string();
        let revision = subtree_revision(&request.manifest);
        let generation = self.reconciler.accept_subtree(Subtree {
            name: name.clone(),
            host: request.host.to_string(),
            manifest: request.manifest,
            revision: revision.clone(),
            received_at: Timestamp::now(),
            from: caller.name.clone(),
            destroy: false,
        })?;
        tracing::info!(caller = %caller.name, manifest = %name, generation, "subtree accepted");
        Ok(SubtreeResponse {
            accepted: name,
            host: request.host,
            revision,
            queued: true,
            generation,
        })
    }

    fn delete_subtree(
        &self,
        name: Option<&str>,
        caller: &Caller,
    ) -> Result<SubtreeDeleteResponse, ApiError> {
        // Never used as a path: checked, then only a key of the store.
        let name = name
            .filter(|n| is_manifest_name(n))
            .ok_or_else(|| ApiError::bad_request("Invalid subtree name in the path"))?;
        let generation = self.reconciler.destroy_subtree(name, &caller.name)?;
        tracing::info!(caller = %caller.name, manifest = %name, generation, "subtree destroy requested");
        Ok(SubtreeDeleteResponse {
            name: name.to_string(),
            generation,
            queued: true,
        })
    }
}

/// A `true`/`false` query parameter, `None` when absent.
fn flag(query: Option<&str>, key: &str) -> Result<Option<bool>, ApiError> {
    match param(query, key).as_deref() {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(ApiError::bad_request(format!(
            "{key} must be true or false"
        ))),
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
        assert_eq!(Endpoint::Subtree.scope(), homestak_api::v1::Scope::Write);
        assert_eq!(Endpoint::Metrics.scope(), homestak_api::v1::Scope::Read);
        assert_eq!(Endpoint::of("/v1/other"), None);
        assert_eq!(
            Endpoint::of("/v1/subtree/child"),
            Some(Endpoint::DeleteSubtree)
        );
    }
}
