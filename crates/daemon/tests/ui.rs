//! The status page over real TLS: the login form and its cookie (right,
//! wrong, read and write tokens), the security headers, escaping of
//! hostile values, and a cookie that never authorizes a write.

use std::sync::Arc;

use crate::support::*;
use homestak_api::{Event, Kind, NodeStatus, State, Status};
use homestak_core::plan::Change;
use homestak_daemon::engine::{BoxFuture, Error as EngineError};
use homestak_daemon::shutdown::Shutdown;
use homestak_daemon::{Engine, StatusRequest};
use homestak_engine::reconcile::{Request, RunOutcome};
use homestak_engine::store::Store;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};

const HOSTILE: &str = "<script>alert(1)</script>";

/// The fake engine, whose reports carry a two-tier tree with hostile
/// values wherever a report has free text.
struct HostileEngine(Arc<FakeEngine>);

impl Engine for HostileEngine {
    fn store(&self) -> Arc<dyn Store> {
        self.0.store()
    }

    fn reconcile(
        &self,
        request: Request,
        shutdown: Shutdown,
    ) -> BoxFuture<'_, Result<RunOutcome, EngineError>> {
        self.0.reconcile(request, shutdown)
    }

    fn status(&self, request: StatusRequest) -> BoxFuture<'_, Result<Status, EngineError>> {
        Box::pin(async move {
            let name = |n: &str| homestak_core::model::NodeName::new(n).unwrap();
            let node = |n: &str, parent: Option<&str>, tier: &str| NodeStatus {
                node: name(n),
                parent: parent.map(name),
                tier: Some(tier.to_string()),
                vmid: Some(homestak_base::id::VmId::new(99001).unwrap()),
                ip: Some("10.0.0.5".into()),
                power: None,
                state: State::InSync,
                changes: Vec::new(),
                reason: None,
            };
            let mut inner = node("inner-vm", Some("hv"), HOSTILE);
            inner.state = State::Drifted;
            inner.changes = vec![Change {
                field: homestak_core::plan::Field::Memory,
                from: HOSTILE.into(),
                to: "\"quoted\" & 'single'".into(),
            }];
            Ok(Status {
                manifest: request.manifest.name().to_string(),
                host: request.host,
                in_sync: false,
                nodes: vec![node("hv", None, "father"), inner],
                last_applied_commit: None,
                deep: false,
            })
        })
    }
}

/// A client that does not follow redirects (to see the 303 and its cookie).
fn no_redirects(d: &Running) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(homestak_tls::pinned_client_config(d.fingerprint))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn login(d: &Running, token: &str) -> (u16, HeaderMap, String) {
    let answer = no_redirects(d)
        .post(d.url("/ui/login"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    let (status, headers) = (answer.status().as_u16(), answer.headers().clone());
    (status, headers, answer.text().await.unwrap())
}

/// GET `path` with the session cookie holding `token`.
async fn with_cookie(d: &Running, path: &str, token: &str) -> (u16, HeaderMap, String) {
    let answer = no_redirects(d)
        .get(d.url(path))
        .header("Cookie", format!("other=1; homestak_ui={token}"))
        .send()
        .await
        .unwrap();
    let (status, headers) = (answer.status().as_u16(), answer.headers().clone());
    (status, headers, answer.text().await.unwrap())
}

fn assert_locked_down(headers: &HeaderMap) {
    let csp = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_logs_in_with_a_read_token_and_escapes_what_it_shows() {
    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    site_config(site.path());
    let (fake, mut calls) = FakeEngine::new();
    let d = start(
        config(site.path(), state.path()),
        Arc::new(HostileEngine(fake)),
    )
    .await;
    next_call(&mut calls).await;
    d.events
        .emit(Event::warning(Kind::SourceError, format!("bad {HOSTILE}")).manifest("demo"));

    // No session: the login form, locked down, with its script and style.
    let (status, headers, body) = with_cookie(&d, "/ui", "").await;
    assert_eq!(status, 200);
    assert_locked_down(&headers);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(body.contains("action=\"/ui/login\""), "{body}");
    for asset in ["/ui/app.js", "/ui/app.css"] {
        let (status, headers, text) = with_cookie(&d, asset, "").await;
        assert_eq!(status, 200, "{asset}");
        assert_locked_down(&headers);
        assert!(!text.is_empty());
    }

    // The right read token: 303 to /ui with a locked-down cookie.
    let (status, headers, _) = login(&d, READ_TOKEN).await;
    assert_eq!(status, 303);
    assert_eq!(headers[LOCATION], "/ui");
    let cookie = headers[SET_COOKIE].to_str().unwrap();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    let value = cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("homestak_ui=")
        .unwrap();

    // The page with that cookie: the tree nested by tier, the last
    // reconcile, the event; hostile text escaped everywhere, no inline
    // script or style, no token.
    let (status, headers, page) = with_cookie(&d, "/ui", value).await;
    assert_eq!(status, 200, "{page}");
    assert_locked_down(&headers);
    assert!(page.contains("data-manifest=\"demo\""), "{page}");
    let hv = page.find("data-node=\"hv\"").unwrap();
    let inner = page.find("data-node=\"inner-vm\"").unwrap();
    assert!(hv < inner);
    assert!(
        page[hv..inner].contains("<ul>"),
        "the child tier's node is nested under its host"
    );
    assert!(page.contains("99001") && page.contains("10.0.0.5"));
    assert!(page.contains("outcome-converged"), "{page}");
    assert!(!page.contains(HOSTILE), "hostile text reached the page raw");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.contains("&quot;quoted&quot; &amp; &#39;single&#39;"));
    assert!(page.contains("bad &lt;script&gt;"), "the event is escaped");
    assert_eq!(
        page.matches("<script").count(),
        1,
        "only the page's own script tag"
    );
    assert!(page.contains("<script src=\"/ui/app.js\" defer></script>"));
    assert!(!page.contains("style="));
    for secret in SECRETS {
        assert!(!page.contains(secret), "the page carries a secret");
    }

    // The cookie reads what the script reads...
    for path in ["/v1/events?since=0", "/v1/status?observe=false"] {
        let (status, _, text) = with_cookie(&d, path, value).await;
        assert_eq!(status, 200, "{path}: {text}");
    }
    // ...and nothing else: no write, no metrics.
    let (status, _, _) = with_cookie(&d, "/metrics", value).await;
    assert_eq!(status, 401, "the cookie is not a token for /metrics");
    let write_cookie = {
        let (_, headers, _) = login(&d, WRITE_TOKEN).await;
        headers[SET_COOKIE]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string()
    };
    let answer = d
        .client
        .post(d.url("/v1/reconcile"))
        .header("Cookie", &write_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.status().as_u16(),
        401,
        "a cookie never authorizes a write, even a write token's"
    );

    // A write token may read: it logs in too.
    let (status, headers, _) = login(&d, WRITE_TOKEN).await;
    assert_eq!((status, &headers[LOCATION]), (303, &"/ui".parse().unwrap()));

    // Wrong tokens, by form and by cookie: refused, no cookie set (the
    // stale one cleared), and counted by the auth-failure throttle.
    let (status, headers, body) = login(&d, "wrong-guess").await;
    assert_eq!(status, 403);
    assert!(headers.get(SET_COOKIE).is_none());
    assert_locked_down(&headers);
    assert!(body.contains("not valid"), "{body}");
    wait_metric(&d, "homestak_auth_failures_total", 1.0).await;
    let (status, headers, body) = with_cookie(&d, "/ui", "stale-guess").await;
    assert_eq!(status, 403);
    assert!(headers[SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    assert!(body.contains("action=\"/ui/login\""));
    wait_metric(&d, "homestak_auth_failures_total", 2.0).await;

    // A form posted from another site is refused.
    let answer = no_redirects(&d)
        .post(d.url("/ui/login"))
        .header("Origin", "https://evil.example")
        .form(&[("token", READ_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 400);
    assert!(answer.headers().get(SET_COOKIE).is_none());

    // A login body past its cap is refused before it is read whole.
    let answer = no_redirects(&d)
        .post(d.url("/ui/login"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("token={}", "x".repeat(10_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 413);

    // Logout clears the cookie.
    let answer = no_redirects(&d)
        .post(d.url("/ui/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 303);
    assert!(
        answer.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );

    d.stop().await.unwrap();
}
