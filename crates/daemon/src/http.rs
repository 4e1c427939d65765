//! The HTTP front: one axum handler that routes by hand, because the seed's
//! path rules (no decoding, trailing slashes stripped, `/{repo}.git/...`)
//! are not a router's. Around every request it applies the auth-failure
//! throttle and its tarpit (a wrong token that leaves its address locked
//! is answered only when the lock has passed, [`super::tarpit`]), counts
//! the request, and logs method, path (never the query or
//! any header), status and peer address. The status page's tokens (its
//! login form and session cookie, [`super::ui`]) are guesses like
//! `Bearer` ones.
//!
//! The body is never read here: it goes unread to the handler, and only
//! the API reads it, once the token proved valid for the endpoint and
//! within [`super::conn::Limits::max_body`] (see [`super::api::Unread`]).
//! So a client without a valid token cannot make the daemon buffer
//! anything.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::Response;

use super::api::{Api, Endpoint, Unread};
use super::auth::RepoAuth;
use super::conn::Place;
use super::install;
use super::metrics::Metrics;
use super::reply::{self, ApiError, Reply};
use super::repos::RepoSet;
use super::seed::{self, Route};
use super::site_cell::SiteCell;
use super::tarpit::Tarpit;
use super::throttle::{Admission, Throttle};
use super::ui;

/// Everything a request may touch.
pub struct App {
    pub site: SiteCell,
    pub repos: Option<Arc<RepoSet>>,
    pub repo_auth: RepoAuth,
    pub api: Api,
    pub throttle: Throttle,
    pub tarpit: Tarpit,
    pub metrics: Arc<Metrics>,
    /// Largest request body read, in bytes.
    pub max_body: usize,
    /// Time a request body has to arrive in.
    pub body_timeout: Duration,
}

/// The axum router: every path goes to one handler, which routes by itself.
pub fn router(app: Arc<App>) -> Router {
    Router::new().fallback(entry).with_state(app)
}

async fn entry(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let (method, uri) = (&parts.method, &parts.uri);
    let header_authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let path = seed::normalise(target);
    // The status page's session cookie stands for a token on the reads
    // it may make, never beside a header (module docs of `ui`).
    let cookie_authorization = header_authorization
        .is_none()
        .then(|| ui::cookie_authorization(method, path, &parts.headers))
        .flatten();
    let authorization = header_authorization.or(cookie_authorization.as_deref());
    let endpoint = Endpoint::of(path);
    let label = match endpoint {
        Some(endpoint) => endpoint.label(),
        None if install::is_install_path(path) => "install",
        None if ui::is_ui_path(path) => "ui",
        None => seed_label(&seed::route(path)),
    };
    // The connection's place in its address's cap (absent when served
    // without the `conn` acceptor): a held guess keeps it to the end.
    let place = parts.extensions.get::<Place>().cloned();

    // Only requests that present a token can guess; the others are never
    // held back. Admitting reserves the guess before the token is checked.
    // A login form presents its token in the body.
    let presents_token = authorization.is_some() || ui::is_login(method, path);
    let admission = presents_token.then(|| app.throttle.admit(peer.ip()));
    let body = Unread {
        body,
        declared: declared_length(&parts.headers),
        max: app.max_body,
        timeout: app.body_timeout,
    };
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    let mut extra_headers = ui::Headers::new();
    let mut reply = if ui::is_ui_path(path) {
        let request = ui::UiRequest {
            path,
            method,
            headers: &parts.headers,
            authorization,
            from_cookie: cookie_authorization.is_some(),
            body,
        };
        let (reply, headers) = ui::handle(&app.api, request).await;
        extra_headers = headers;
        reply
    } else if install::is_install_path(path) {
        if *method == Method::GET || *method == Method::HEAD {
            install::handle(path, host, &app.repo_auth, authorization)
        } else {
            ApiError::method_not_allowed(method).reply()
        }
    } else {
        dispatch(
            &app,
            endpoint,
            method,
            target,
            uri.query(),
            authorization,
            body,
        )
        .await
    };

    // A valid token is served at once whatever the lock. A wrong one that
    // leaves its address locked is held until that lock has passed (the
    // tarpit), then answered: 403 when it was judged unlocked, 429 when
    // it came while locked.
    match admission {
        Some(Admission::Guess(guess)) if reply.bad_token => {
            let lock = guess.failed();
            app.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
            let hold = app.throttle.policy().hold(lock);
            tracing::warn!(peer = %peer.ip(), route = label, lock_secs = lock.as_secs(), hold_ms = hold.as_millis() as u64, "wrong token");
            app.tarpit.hold(hold, place).await;
        }
        Some(Admission::Guess(guess)) => guess.valid(),
        Some(Admission::Locked(_)) if reply.bad_token => {
            let lock = app.throttle.failed_while_locked(peer.ip());
            app.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
            app.metrics.auth_throttled.fetch_add(1, Ordering::Relaxed);
            let hold = app.throttle.policy().hold(lock);
            tracing::warn!(peer = %peer.ip(), route = label, lock_secs = lock.as_secs(), hold_ms = hold.as_millis() as u64, "wrong token from a locked address");
            app.tarpit.hold(hold, place).await;
            // What is left of the lock now (other guesses may have grown
            // it); at least a second, never "retry after 0".
            let left = app
                .throttle
                .check(peer.ip())
                .err()
                .unwrap_or_default()
                .max(Duration::from_secs(1));
            reply = ApiError::throttled(left).reply();
            reply.retry_after = Some(reply::retry_after_secs(left));
        }
        Some(Admission::Locked(_)) | None => {}
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
    let mut response = reply.into_response(method);
    for (name, value) in extra_headers {
        response.headers_mut().append(name, value);
    }
    response
}

/// `Content-Length`, when given and a number.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

async fn dispatch(
    app: &App,
    endpoint: Option<Endpoint>,
    method: &Method,
    target: &str,
    query: Option<&str>,
    authorization: Option<&str>,
    body: Unread,
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
