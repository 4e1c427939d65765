//! Secrets never reach logs or responses: every log line of the process
//! (all crates, at trace level) is captured while requests present right
//! and wrong tokens, fetch specs, clone repos, hit errors and try
//! traversal; then no secret value may appear in the capture, in any
//! response that is not meant to carry it, or in `Debug` output.
//!
//! One test per binary: it installs the process-wide subscriber.

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::support::*;
use reqwest::Method;
use serde_json::json;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_or_responses() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    site_config(site.path());
    let (engine, mut calls) = FakeEngine::new();
    let mut config = config(site.path(), state.path());
    // Wrong tokens beyond the free ones are held (the tarpit): briefly here.
    config.throttle.max_hold = std::time::Duration::from_millis(10);
    let config_debug = format!("{config:?}");
    let d = start(config, engine).await;
    next_call(&mut calls).await;

    let mut responses = Vec::new();
    // Right and wrong tokens everywhere.
    for token in [
        None,
        Some("wrong-guess"),
        Some(SITE_TOKEN),
        Some(NODE_TOKEN),
    ] {
        for path in [
            "/spec/base",
            "/spec/staged",
            "/spec/prodnode",
            "/specs",
            "/health",
        ] {
            responses.push((path, token, d.get(path, token).await));
        }
    }
    for token in [None, Some("wrong-guess"), Some(REPO_TOKEN)] {
        for path in [
            "/site-config.git/HEAD",
            "/site-config.git/site.yaml",
            "/site-config.git/secrets.yaml",
        ] {
            responses.push((path, token, d.get(path, token).await));
        }
    }
    for token in [
        None,
        Some("wrong-guess"),
        Some(READ_TOKEN),
        Some(WRITE_TOKEN),
    ] {
        for path in ["/v1/status", "/v1/events", "/metrics"] {
            responses.push((path, token, d.get(path, token).await));
        }
    }
    let (code, text) = d
        .send(
            Method::PUT,
            "/v1/subtree",
            Some(WRITE_TOKEN),
            Some(json!({"host": "father", "manifest": {"schema_version": 2, "name": "x", "nodes": [{"name": "a", "type": "vm"}]}})),
        )
        .await;
    responses.push(("/v1/subtree", Some(WRITE_TOKEN), (code, text)));
    // The status page: logins by form (right and wrong), the page by cookie.
    for token in [READ_TOKEN, "wrong-guess"] {
        let answer = d
            .client
            .post(d.url("/ui/login"))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        responses.push((
            "/ui/login",
            Some(token),
            (answer.status().as_u16(), answer.text().await.unwrap()),
        ));
    }
    let answer = d
        .client
        .get(d.url("/ui"))
        .header("Cookie", format!("homestak_ui={READ_TOKEN}"))
        .send()
        .await
        .unwrap();
    responses.push((
        "/ui",
        Some(READ_TOKEN),
        (answer.status().as_u16(), answer.text().await.unwrap()),
    ));
    // Traversal toward secrets.yaml.
    for target in ["/spec/../../secrets", "/spec/..%2F..%2Fsecrets"] {
        responses.push((target, None, d.raw(target, None).await));
    }
    // A site-config whose secrets are unreadable, then a reload.
    std::fs::write(
        site.path().join("secrets.yaml"),
        format!("auth: [{SITE_TOKEN}\n"),
    )
    .unwrap();
    d.control.reload();
    eventually("the reload event", || {
        d.events
            .since(0, usize::MAX)
            .iter()
            .any(|e| e.kind == homestak_api::Kind::Reload)
    })
    .await;
    responses.push((
        "/spec/staged",
        Some(SITE_TOKEN),
        d.get("/spec/staged", Some(SITE_TOKEN)).await,
    ));
    d.stop().await.unwrap();

    // Responses carry a secret only where it is meant to: never here (a
    // spec carries public keys, not tokens).
    let mut served_spec = false;
    for (path, token, (status, body)) in &responses {
        for secret in SECRETS {
            assert!(
                !body.contains(secret),
                "{path} with {token:?} -> {status} leaks a secret: {body}"
            );
        }
        served_spec |= *path == "/spec/base" && body.contains(SSH_KEY);
    }
    assert!(
        served_spec,
        "the network-posture spec was served with its public key"
    );

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("request"),
        "the capture holds the request log"
    );
    assert!(
        logs.contains("wrong token"),
        "failures are logged (without the token)"
    );
    for secret in SECRETS {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
    assert!(
        !logs.contains("wrong-guess"),
        "a presented token reached the logs"
    );
    for secret in SECRETS {
        assert!(
            !config_debug.contains(secret),
            "Config's Debug shows a secret"
        );
    }
    println!(
        "checked {} responses and {} log lines",
        responses.len(),
        logs.lines().count()
    );
}

/// A PVE token in secrets.yaml whose `=` was typed as `-`: the real
/// engine cannot use it, and says so in `/v1/status` and the events, but
/// no answer carries the secret part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_pve_token_never_reaches_status_or_events() {
    use homestak_daemon::converge::ConvergeEngine;
    use homestak_engine::reconcile::Setup;

    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    site_config(site.path());
    std::fs::write(
        site.path().join("secrets.yaml"),
        "api_tokens:\n  father: \"user@pam!tok-SECRETVALUE\"\n",
    )
    .unwrap();
    let engine = ConvergeEngine::open(Setup {
        insecure: false,
        state_dir: state.path().to_path_buf(),
        open_store: true,
        ssh_key: None,
        binary: None,
        lease: Default::default(),
    })
    .unwrap();
    let d = start(config(site.path(), state.path()), Arc::new(engine)).await;

    // Once the daemon has read its manifests.
    let mut text = String::new();
    for _ in 0..600 {
        let (status, body) = d.get("/v1/status", Some(READ_TOKEN)).await;
        assert_eq!(status, 200, "{body}");
        text = body;
        if text.contains("\"error\":\"") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        text.contains("malformed"),
        "the status names the problem: {text}"
    );
    assert!(text.contains("user@pam"), "and whose token it is: {text}");
    assert!(!text.contains("SECRETVALUE"), "{text}");

    eventually("the startup reconcile to finish", || {
        d.events
            .since(0, usize::MAX)
            .iter()
            .any(|e| e.kind == homestak_api::Kind::ReconcileFinished)
    })
    .await;
    let (status, text) = d.get("/v1/events", Some(READ_TOKEN)).await;
    assert_eq!(status, 200, "{text}");
    assert!(!text.contains("SECRETVALUE"), "{text}");
    d.stop().await.unwrap();
}
