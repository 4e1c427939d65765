//! The HTTPS front: pveproxy's request handling in front of the handlers.
//!
//! Order, as pveproxy: path unescaping and format (`/api2/json`), HEAD and
//! bodies on GET/DELETE refused (501), authentication (401 with empty body
//! after the scaled delay), then routing (501 for unknown method+path),
//! parameter validation (400) and the handler. Injected faults strike after
//! authentication, before the handler (nothing done) or after it (the work
//! done, the answer lost). Replies carry PVE's headers, reason phrases and
//! `{"data": …}` envelopes; errors carry `message` (http-server ≥ 5.2.0).
//!
//! The service is a plain `tower_service::Service` so that an injected
//! "connection reset" can end the connection without any answer.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, header};
use serde_json::{Map, Value, json};

use super::api::{self, Ctx, Reply};
use super::auth::{self, Headers};
use super::faults::RequestFault;
use super::runtime::{Clock, Shared};
use homestak_pve::schema::wire as form;
use homestak_pve::schema::{self as params, Method, Rejection};

/// Largest request body read (pveproxy refuses far smaller form posts).
const BODY_LIMIT: usize = 1 << 20;

/// The connection was dropped on purpose (injected fault).
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by an injected fault")]
pub struct Dropped;

/// The per-connection service.
#[derive(Clone)]
pub struct SimService {
    pub shared: Arc<Shared>,
}

impl tower_service::Service<Request<Incoming>> for SimService {
    type Response = Response<Body>;
    type Error = Dropped;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Dropped>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Dropped>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move { serve(shared, req).await })
    }
}

/// Makes one [`SimService`] per connection.
#[derive(Clone)]
pub struct MakeSim {
    pub shared: Arc<Shared>,
}

impl tower_service::Service<SocketAddr> for MakeSim {
    type Response = SimService;
    type Error = Infallible;
    type Future = Ready<Result<SimService, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _peer: SocketAddr) -> Self::Future {
        ready(Ok(SimService {
            shared: self.shared.clone(),
        }))
    }
}

/// `Wed, 25 Nov 2020 13:31:07 GMT`
fn http_date() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    now.format(&fmt).unwrap_or_default()
}

/// A response with PVE's headers; `reason` becomes the status line text.
fn respond(status: u16, reason: &str, body: Option<Value>) -> Response<Body> {
    let date = http_date();
    let mut b = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::SERVER, "pve-api-daemon/3.0")
        .header(header::CACHE_CONTROL, "max-age=0")
        .header(header::PRAGMA, "no-cache")
        .header(header::EXPIRES, &date)
        .header(header::DATE, &date);
    let body = match body {
        Some(v) => {
            b = b.header(header::CONTENT_TYPE, "application/json;charset=UTF-8");
            Body::from(serde_json::to_vec(&v).unwrap_or_default())
        }
        None => Body::empty(),
    };
    let mut resp = b
        .body(body)
        .unwrap_or_else(|_| Response::new(Body::empty()));
    // The reason phrase is the message's first line (if it is valid text).
    let first = reason.lines().next().unwrap_or("");
    if let Ok(r) = hyper::ext::ReasonPhrase::try_from(first.as_bytes().to_vec()) {
        resp.extensions_mut().insert(r);
    }
    resp
}

/// An error with a JSON body: `message` (with PVE's trailing newline),
/// `errors` for 400s, `data: null`.
fn error_response(e: &api::Error) -> Response<Body> {
    let mut m = Map::new();
    let text = if e.message.ends_with('\n') {
        e.message.clone()
    } else {
        format!("{}\n", e.message)
    };
    m.insert("message".into(), json!(text));
    if let Some(errors) = &e.errors {
        m.insert("errors".into(), json!(errors));
    }
    m.insert("data".into(), Value::Null);
    respond(e.status, &e.message, Some(Value::Object(m)))
}

fn reply_json(r: Reply) -> Value {
    match r {
        Reply::Data(d) => json!({ "data": d }),
        Reply::WithTotal(d, total) => json!({ "data": d, "total": total }),
        Reply::WithChanges(d, changes) => json!({ "data": d, "changes": changes }),
    }
}

fn reply_response(r: Reply) -> Response<Body> {
    respond(200, "OK", Some(reply_json(r)))
}

/// A successful answer as a hostile server sends it (`hostile:`).
fn spoiled(answer: super::hostile::Answer, r: Reply) -> Response<Body> {
    let (mut parts, _) = respond(200, "OK", None).into_parts();
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    Response::from_parts(parts, super::hostile::body(answer, reply_json(r)))
}

/// 501 without a body (errors raised before the API handler layer).
fn bare_501(reason: &str) -> Response<Body> {
    respond(501, reason, None)
}

async fn unauthorized(shared: &Shared, reason: &str) -> Response<Body> {
    shared
        .clock
        .sleep(shared.config.latency.auth_failure_delay)
        .await;
    respond(401, reason, None)
}

fn header_str<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn serve(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Dropped> {
    let raw_path = req.uri().path().to_string();
    let query = req.uri().query().map(String::from);
    if raw_path == "/_sim" || raw_path.starts_with("/_sim/") {
        return Ok(super::control::serve(shared, req).await);
    }
    let path = form::unescape_path(&raw_path);
    let Some(rest) = path.strip_prefix("/api2/") else {
        return Ok(bare_501("no such uri"));
    };
    let (format, rel) = match rest.split_once('/') {
        Some((f, r)) => (f, format!("/{r}")),
        None => (rest, "/".to_string()),
    };
    if format != "json" {
        return Ok(bare_501("no such uri"));
    }
    let Some(method) = Method::parse(req.method().as_str()) else {
        return Ok(bare_501(&format!(
            "method '{}' not available",
            req.method()
        )));
    };
    let content_length: u64 = header_str(&req, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if !method.has_body() && content_length > 0 {
        return Ok(bare_501(&format!(
            "Unexpected content for method '{}'",
            method.as_str()
        )));
    }
    let route = params::route(method, &rel);
    let no_auth = route.as_ref().is_some_and(|(e, _)| e.no_auth);
    let identity = if no_auth {
        None
    } else {
        let h = Headers {
            authorization: header_str(&req, "authorization"),
            cookie: header_str(&req, "cookie"),
            csrf: header_str(&req, "csrfpreventiontoken"),
        };
        let res = auth::authenticate(&shared.world(), &h, method != Method::Get, Clock::now());
        match res {
            Ok(i) => Some(i),
            Err(f) => return Ok(unauthorized(&shared, f.0).await),
        }
    };
    shared.counters.record(&match &route {
        Some((e, _)) => e.key(),
        None => format!("{} (unmatched)", method.as_str()),
    });
    let vmid: Option<u32> = route
        .as_ref()
        .and_then(|(_, vars)| vars.iter().find(|(k, _)| k == "vmid"))
        .and_then(|(_, v)| v.parse().ok());
    let write = method != Method::Get;
    if !no_auth {
        match shared.faults.request(write, vmid) {
            Some(RequestFault::Reset) => return Err(Dropped),
            Some(RequestFault::Error(status)) => return Ok(injected(status)),
            None => {}
        }
    }
    let content_type = header_str(&req, "content-type")
        .unwrap_or("application/x-www-form-urlencoded")
        .to_string();
    let body = if method.has_body() {
        match axum::body::to_bytes(Body::new(req.into_body()), BODY_LIMIT).await {
            Ok(b) => b,
            Err(_) => {
                return Ok(error_response(&api::Error::status(
                    413,
                    "request too large",
                )));
            }
        }
    } else {
        Default::default()
    };
    let input = match form::collect(method, query.as_deref(), Some((&content_type, &body))) {
        Ok(i) => i,
        Err(e) => return Ok(error_response(&api::Error::status(400, e))),
    };
    let (endpoint, p) = match params::validate(method, &rel, &input) {
        Ok(v) => v,
        Err(Rejection::NotImplemented(msg)) => {
            return Ok(error_response(&api::Error::status(501, msg)));
        }
        Err(Rejection::Params(errors)) => return Ok(error_response(&api::Error::params(errors))),
    };
    let ctx = Ctx {
        shared: shared.clone(),
        user: identity.map(|i| i.user).unwrap_or_default(),
    };
    shared.clock.sleep(shared.config.latency.answer).await;
    let result = api::handle(&ctx, endpoint, &p).await;
    // The work is done (a create's task is running): the answer may still
    // be lost on the way back.
    if !no_auth {
        // A create names its vmid in the body, not the path.
        let vmid = vmid.or_else(|| p.int("vmid").and_then(|v| u32::try_from(v).ok()));
        match shared.faults.answer(write, vmid) {
            Some(RequestFault::Reset) => return Err(Dropped),
            Some(RequestFault::Error(status)) => return Ok(injected(status)),
            None => {}
        }
    }
    Ok(match result {
        Ok(r) => match shared.config.hostile.answer.filter(|_| !no_auth) {
            Some(answer) => spoiled(answer, r),
            None => reply_response(r),
        },
        Err(e) if e.status == 401 => {
            shared
                .clock
                .sleep(shared.config.latency.auth_failure_delay)
                .await;
            error_response(&e)
        }
        Err(e) => error_response(&e),
    })
}

/// An injected error answer: 5xx with a message, or pveproxy's 595/596
/// proxy failures with an empty body.
fn injected(status: u16) -> Response<Body> {
    match status {
        595 => respond(
            595,
            "Errors during connection establishment, proxy handshake",
            None,
        ),
        596 => respond(596, "Connection timed out", None),
        s => error_response(&api::Error::status(s, "injected fault (homestak sim)")),
    }
}
