//! The status page, `GET /ui`: a read-only HTML view of every manifest the
//! daemon holds (the tier tree with each node's state, vmid, IP, power and
//! field diffs), the last reconcile of each, and recent events, which a
//! small script ([`APP_JS`]) keeps up to date from `GET /v1/events`.
//!
//! # Auth
//! The page needs a `read` API token, checked by
//! [`super::auth::ApiTokens::authorize`] like the API's:
//! - `GET /ui` without a session answers a login form; `POST /ui/login`
//!   (form field `token`, at most [`MAX_LOGIN_BODY`] bytes) checks the
//!   token and sets the session cookie [`COOKIE`] (`HttpOnly; Secure;
//!   SameSite=Strict; Path=/`), then redirects (303) to `/ui`;
//! - `/ui#token=…`: the script posts the fragment's token to `/ui/login`
//!   and reloads, so the token never appears in a request line or a log;
//! - `POST /ui/logout` clears the cookie.
//!
//! The cookie holds the token itself (percent-encoded), so it is checked
//! on every request with the same constant-time code, a token removed from
//! the token file stops working at the next reload, and the daemon keeps
//! no sessions. It is accepted only on `GET`/`HEAD` of `/ui` and of the
//! read endpoints the page's script uses ([`cookie_authorization`]),
//! never for a write. A wrong token, in the form or in the cookie, is a
//! wrong token for the auth-failure throttle and its tarpit like a wrong
//! `Bearer` one ([`super::http`]).
//!
//! Every answer carries a strict CSP (no inline script or style), `nosniff`
//! and `no-referrer` ([`security_headers`]); every value on the page is
//! HTML-escaped ([`render::esc`]).

pub mod render;

use axum::http::Method;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use super::api::{Api, Unread, param};
use super::auth::Scope;
use super::reply::{ApiError, Reply};

/// The session cookie's name.
pub const COOKIE: &str = "homestak_ui";
/// Largest `POST /ui/login` body: a form with one token.
pub const MAX_LOGIN_BODY: usize = 4096;
/// Events the page shows when it loads.
pub const RECENT_EVENTS: u64 = 50;

/// The page's script (no framework, no build step).
pub const APP_JS: &str = include_str!("app.js");
/// The page's style sheet.
pub const APP_CSS: &str = include_str!("app.css");

/// The Content-Security-Policy of every `/ui` answer: nothing inline,
/// everything from this origin.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Headers a handler adds to its [`Reply`].
pub type Headers = Vec<(HeaderName, HeaderValue)>;

/// Whether `path` (normalised) is the status page's.
pub fn is_ui_path(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// Whether `path` is `POST /ui/login`, the one UI request whose body
/// presents a token (so the throttle admits it as a guess).
pub fn is_login(method: &Method, path: &str) -> bool {
    *method == Method::POST && path == "/ui/login"
}

/// The `Authorization` value the session cookie stands for, when the
/// request may use it: `GET` or `HEAD` of `/ui` or of `GET /v1/status` and
/// `GET /v1/events` (what the page's script reads). Never for anything
/// else, so the cookie can never write.
pub fn cookie_authorization(method: &Method, path: &str, headers: &HeaderMap) -> Option<String> {
    let readable = is_ui_path(path) || path == "/v1/status" || path == "/v1/events";
    if !(readable && (*method == Method::GET || *method == Method::HEAD)) {
        return None;
    }
    session_token(headers).map(|token| format!("Bearer {token}"))
}

/// The token in the session cookie, decoded.
fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE).then(|| percent_decode_str(value).decode_utf8_lossy().into_owned())
        })
        .filter(|t| !t.is_empty())
}

/// The headers of every `/ui` answer.
pub fn security_headers() -> Headers {
    vec![
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ]
}

/// A `Set-Cookie` holding `token`, or clearing the cookie when `None`.
fn set_cookie(token: Option<&str>) -> (HeaderName, HeaderValue) {
    let value = match token {
        Some(t) => format!(
            "{COOKIE}={}; HttpOnly; Secure; SameSite=Strict; Path=/",
            utf8_percent_encode(t, NON_ALPHANUMERIC)
        ),
        None => format!("{COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0"),
    };
    // Percent-encoded, so always a valid header value.
    let value = HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static(""));
    (header::SET_COOKIE, value)
}

/// A 303 to `/ui`.
fn see_ui(mut headers: Headers) -> (Reply, Headers) {
    let mut reply = Reply::bytes(HTML, Vec::new());
    reply.status = 303;
    headers.push((header::LOCATION, HeaderValue::from_static("/ui")));
    (reply, headers)
}

fn html(status: u16, page: String) -> Reply {
    let mut reply = Reply::bytes(HTML, page.into_bytes());
    reply.status = status;
    reply
}

/// A request under `/ui`.
pub struct UiRequest<'a> {
    pub path: &'a str,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    /// `Authorization`, or what the session cookie stands for.
    pub authorization: Option<&'a str>,
    /// Whether `authorization` came from the cookie.
    pub from_cookie: bool,
    pub body: Unread,
}

/// Answers a request under `/ui`: the reply and the headers to add to it.
pub async fn handle(api: &Api, request: UiRequest<'_>) -> (Reply, Headers) {
    let (reply, mut headers) = route(api, request).await;
    headers.extend(security_headers());
    (reply, headers)
}

async fn route(api: &Api, request: UiRequest<'_>) -> (Reply, Headers) {
    let method = request.method;
    let get = *method == Method::GET || *method == Method::HEAD;
    match request.path {
        "/ui/app.js" if get => (Reply::bytes(JS, APP_JS.as_bytes().to_vec()), Vec::new()),
        "/ui/app.css" if get => (Reply::bytes(CSS, APP_CSS.as_bytes().to_vec()), Vec::new()),
        "/ui" if get => page(api, request.authorization, request.from_cookie).await,
        "/ui/login" if *method == Method::POST => login(api, request).await,
        "/ui/logout" if *method == Method::POST => {
            if !same_origin(request.headers) {
                return (cross_origin(), Vec::new());
            }
            see_ui(vec![set_cookie(None)])
        }
        "/ui" | "/ui/app.js" | "/ui/app.css" | "/ui/login" | "/ui/logout" => {
            (ApiError::method_not_allowed(method).reply(), Vec::new())
        }
        _ => (
            ApiError::not_found("No such page under /ui").reply(),
            Vec::new(),
        ),
    }
}

/// `GET /ui`: the page with a valid session, else the login form (a
/// wrong cookie is a wrong token: marked for the throttle, and cleared).
async fn page(api: &Api, authorization: Option<&str>, from_cookie: bool) -> (Reply, Headers) {
    if authorization.is_none() {
        return (html(200, render::login(None)), Vec::new());
    }
    match api.tokens.authorize(authorization, Scope::Read) {
        Ok(_) => {}
        Err(err) => {
            let clear = if from_cookie {
                vec![set_cookie(None)]
            } else {
                Vec::new()
            };
            let mut reply = html(err.status, render::login(Some(&login_error(&err))));
            reply.bad_token = err.code == "E301";
            return (reply, clear);
        }
    }
    let status = match api.reconciler.status(None, true).await {
        Ok(status) => status,
        Err(err) => return (html(err.status, render::failure(&err.message)), Vec::new()),
    };
    let last = api.events.last_seq();
    let events = api.events.since(
        last.saturating_sub(RECENT_EVENTS),
        usize::try_from(RECENT_EVENTS).unwrap_or(usize::MAX),
    );
    (html(200, render::page(&status, &events, last)), Vec::new())
}

/// What the login form says after a refused token.
fn login_error(err: &ApiError) -> String {
    match err.code {
        "E301" => "That token is not valid.".to_string(),
        "E302" => "That token is valid but cannot read (it needs the read or write scope).".into(),
        _ => err.message.clone(),
    }
}

/// `POST /ui/login`: checks the form's token (read scope), then sets the
/// cookie and goes back to the page.
async fn login(api: &Api, request: UiRequest<'_>) -> (Reply, Headers) {
    if !same_origin(request.headers) {
        return (cross_origin(), Vec::new());
    }
    let unread = Unread {
        max: request.body.max.min(MAX_LOGIN_BODY),
        ..request.body
    };
    let body = match unread.read().await {
        Ok(body) => body,
        Err(err) => return (err.reply(), Vec::new()),
    };
    let form = String::from_utf8_lossy(&body);
    let token = param(Some(&form), "token").unwrap_or_default();
    let authorization = format!("Bearer {}", token.trim());
    match api.tokens.authorize(Some(&authorization), Scope::Read) {
        Ok(caller) => {
            tracing::info!(caller = %caller.name, "status page login");
            see_ui(vec![set_cookie(Some(token.trim()))])
        }
        Err(err) => {
            let mut reply = html(err.status, render::login(Some(&login_error(&err))));
            reply.bad_token = err.code == "E301";
            (reply, Vec::new())
        }
    }
}

/// A form posted from another site is refused. Browsers say where a
/// request comes from in `Sec-Fetch-Site`; without it, `Origin`, when
/// sent and not `null` (what `Referrer-Policy: no-referrer` makes some
/// browsers send for their own forms), must be this host.
/// (`SameSite=Strict` already keeps the cookie off such requests.)
fn same_origin(headers: &HeaderMap) -> bool {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site") {
        return site == "same-origin" || site == "none";
    }
    match get("origin") {
        None | Some("null") => true,
        Some(origin) => origin.strip_prefix("https://") == Some(get("host").unwrap_or_default()),
    }
}

fn cross_origin() -> Reply {
    ApiError::bad_request("Cross-origin form posts are refused").reply()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_cookie_stands_for_a_token_only_on_reads_of_the_page_and_its_feeds() {
        let headers = with_cookie("a=1; homestak_ui=t%20k%3B; b=2");
        let auth = |m: Method, p: &str| cookie_authorization(&m, p, &headers);
        assert_eq!(auth(Method::GET, "/ui").as_deref(), Some("Bearer t k;"));
        assert!(auth(Method::HEAD, "/v1/status").is_some());
        assert!(auth(Method::GET, "/v1/events").is_some());
        for (method, path) in [
            (Method::POST, "/v1/reconcile"),
            (Method::PUT, "/v1/subtree"),
            (Method::DELETE, "/v1/subtree/x"),
            (Method::POST, "/v1/plan"),
            (Method::GET, "/metrics"),
            (Method::GET, "/site-config.git/info/refs"),
            (Method::POST, "/ui/login"),
            (Method::POST, "/ui/logout"),
        ] {
            assert_eq!(auth(method.clone(), path), None, "{method} {path}");
        }
        assert_eq!(
            cookie_authorization(&Method::GET, "/ui", &with_cookie("homestak_ui=")),
            None
        );
    }

    #[test]
    fn cookies_are_locked_down_and_round_trip() {
        let (_, set) = set_cookie(Some("a b;c"));
        let set = set.to_str().unwrap();
        for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(set.contains(flag), "{set}");
        }
        let pair = set.split(';').next().unwrap();
        assert_eq!(session_token(&with_cookie(pair)).as_deref(), Some("a b;c"));
        let (_, clear) = set_cookie(None);
        assert!(clear.to_str().unwrap().contains("Max-Age=0"));
    }

    #[test]
    fn forms_from_elsewhere_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:44443"));
        assert!(same_origin(&headers));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://127.0.0.1:44443"),
        );
        assert!(same_origin(&headers));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&headers));
        headers.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        headers.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&headers));
        headers.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&headers));
    }
}
