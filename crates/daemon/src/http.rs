//! The HTTP front: one axum handler that routes by hand, because the seed's
//! path rules (no decoding, trailing slashes stripped, `/{repo}.git/...`)
//! are not a router's. Around every request it applies the auth-failure
//! throttle, counts the request, and logs method, path (never the query or
//! any header), status and peer address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::Response;

use super::api::{Api, Endpoint};
use super::auth::RepoAuth;
use super::metrics::Metrics;
use super::reply::{self, ApiError, Reply};
use super::repos::RepoSet;
use super::seed::{self, Route};
use super::site_cell::SiteCell;
use super::throttle::Throttle;

/// Everything a request may touch.
pub struct App {
    pub site: SiteCell,
    pub repos: Option<Arc<RepoSet>>,
    pub repo_auth: RepoAuth,
    pub api: Api,
    pub throttle: Throttle,
    pub metrics: Arc<Metrics>,
}

/// The axum router: every path goes to one handler, which routes by itself.
pub fn router(app: Arc<App>) -> Router {
    Router::new().fallback(entry).with_state(app)
}

async fn entry(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let path = seed::normalise(target);
    let endpoint = Endpoint::of(path);
    let label = endpoint.map_or_else(|| seed_label(&seed::route(path)), Endpoint::label);

    let reply = match app.throttle.check(peer.ip()) {
        // Only requests that present a token are held back: the others
        // cannot be guessing.
        Err(wait) if authorization.is_some() => {
            let mut reply = ApiError::throttled(wait).reply();
            reply.retry_after = Some(reply::retry_after_secs(wait));
            reply
        }
        _ => {
            dispatch(
                &app,
                endpoint,
                &method,
                target,
                uri.query(),
                authorization,
                &body,
            )
            .await
        }
    };

    if reply.bad_token {
        let lock = app.throttle.record_failure(peer.ip());
        app.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(peer = %peer.ip(), route = label, lock_secs = lock.as_secs(), "wrong token");
    }
    app.metrics
        .http_requests
        .inc(&[label, &reply.status.to_string()]);
    tracing::info!(
        method = %method,
        path = %uri.path(),
        status = reply.status,
        peer = %peer.ip(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    reply.into_response(&method)
}

async fn dispatch(
    app: &App,
    endpoint: Option<Endpoint>,
    method: &Method,
    target: &str,
    query: Option<&str>,
    authorization: Option<&str>,
    body: &[u8],
) -> Reply {
    let path = seed::normalise(target);
    if let Some(endpoint) = endpoint {
        return app
            .api
            .handle(endpoint, path, method, query, authorization, body)
            .await;
    }
    let route = seed::route(path);
    if matches!(route, Route::Unknown(_)) {
        return seed::unknown_endpoint(target);
    }
    if *method != Method::GET && *method != Method::HEAD {
        return ApiError::method_not_allowed(method).reply();
    }
    let ctx = seed::Context {
        site: app.site.get(),
        repos: app.repos.clone(),
        repo_auth: app.repo_auth.clone(),
    };
    seed::handle(&ctx, target, authorization)
        .await
        .unwrap_or_else(|| seed::unknown_endpoint(target))
}

fn seed_label(route: &Route<'_>) -> &'static str {
    match route {
        Route::Health => "health",
        Route::Specs => "specs",
        Route::Spec(_) => "spec",
        Route::Repo(_) => "repo",
        Route::Unknown(_) => "unknown",
    }
}
