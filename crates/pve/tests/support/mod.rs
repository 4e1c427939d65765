//! A tiny HTTPS server on 127.0.0.1:0 for PVE client tests.
//!
//! It records every request (method, unescaped path, parameters decoded the
//! way PVE's HTTP server decodes them, headers of interest) and answers with
//! whatever the test's handler returns: status, reason phrase, body, and an
//! optional delay. It also tracks how many requests are in flight at once.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use homestak_tls::{self as tls, SelfSigned};
use percent_encoding::percent_decode_str;

/// A request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    /// Unescaped path, with `/api2/json` kept.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Vec<(String, String)>,
    pub raw_body: String,
    pub content_type: Option<String>,
    pub authorization: Option<String>,
}

/// What to answer.
#[derive(Clone, Debug)]
pub struct Canned {
    pub status: u16,
    pub reason: Option<String>,
    pub body: String,
    pub content_type: Option<String>,
    pub delay: Option<Duration>,
}

impl Canned {
    /// `200 {"data": data}`.
    pub fn data(data: serde_json::Value) -> Self {
        Canned {
            status: 200,
            reason: None,
            body: serde_json::json!({ "data": data }).to_string(),
            content_type: Some("application/json;charset=UTF-8".into()),
            delay: None,
        }
    }

    /// An error status with PVE's reason phrase and `{"data":null}`.
    pub fn error(status: u16, reason: &str) -> Self {
        Canned {
            status,
            reason: Some(reason.into()),
            body: r#"{"data":null}"#.into(),
            content_type: Some("application/json;charset=UTF-8".into()),
            delay: None,
        }
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }
}

pub type Handler = Arc<dyn Fn(&Seen) -> Canned + Send + Sync>;

pub struct ServerState {
    handler: Mutex<Handler>,
    pub seen: Mutex<Vec<Seen>>,
    in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
}

/// A running test server; dropped with the test's runtime.
pub struct TestServer {
    pub addr: SocketAddr,
    pub cert: SelfSigned,
    pub state: Arc<ServerState>,
}

impl TestServer {
    /// `127.0.0.1:port`, as the client's host.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn set_handler(&self, handler: Handler) {
        *self.state.handler.lock().unwrap() = handler;
    }

    pub fn clear(&self) {
        self.state.seen.lock().unwrap().clear();
    }
}

/// PVE's `decode_urlencoded`: pairs split on `&` and `;`, two `=` fields
/// kept, `+` is a space, then percent-decoding.
pub fn pve_decode(text: &str) -> Vec<(String, String)> {
    text.split(['&', ';'])
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let mut fields = pair.split('=');
            let k = fields.next().unwrap_or("");
            let v = fields.next().unwrap_or("");
            let dec = |s: &str| {
                percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

async fn handle(
    State(state): State<Arc<ServerState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let raw_body = String::from_utf8_lossy(&body).into_owned();
    let seen = Seen {
        method,
        path: percent_decode_str(uri.path())
            .decode_utf8_lossy()
            .into_owned(),
        query: uri.query().map(pve_decode).unwrap_or_default(),
        body: pve_decode(&raw_body),
        raw_body,
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    state.seen.lock().unwrap().push(seen.clone());
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let handler = state.handler.lock().unwrap().clone();
    let canned = handler(&seen);
    if let Some(delay) = canned.delay {
        tokio::time::sleep(delay).await;
    }
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut response = Response::new(Body::from(canned.body));
    *response.status_mut() = StatusCode::from_u16(canned.status).unwrap();
    if let Some(ct) = canned.content_type {
        response
            .headers_mut()
            .insert("content-type", ct.parse().unwrap());
    }
    if let Some(reason) = canned.reason {
        // hyper writes a non-canonical reason phrase from this extension,
        // which is how PVE carries its error message.
        response
            .extensions_mut()
            .insert(hyper::ext::ReasonPhrase::try_from(reason.into_bytes()).unwrap());
    }
    response
}

/// Starts a server with a fresh self-signed certificate for 127.0.0.1.
pub async fn start(handler: Handler) -> TestServer {
    tls::install_crypto_provider();
    let cert = tls::self_signed(&["127.0.0.1".to_string()]).unwrap();
    let state = Arc::new(ServerState {
        handler: Mutex::new(handler),
        seen: Mutex::new(Vec::new()),
        in_flight: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
    });
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(state.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = axum_server::tls_rustls::RustlsConfig::from_pem(
        cert.cert_pem.clone().into_bytes(),
        cert.key_pem.clone().into_bytes(),
    )
    .await
    .unwrap();
    let server = axum_server::tls_rustls::from_tcp_rustls(listener, config).unwrap();
    tokio::spawn(async move {
        let _ = server.serve(app.into_make_service()).await;
    });
    TestServer { addr, cert, state }
}
