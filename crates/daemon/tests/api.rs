//! The daemon over real TLS on loopback: traversal attempts, the
//! auth-failure backoff, and the reconciler API against a fake engine (the
//! auth matrix is `matrix`).

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use homestak_api::Reason;
use homestak_daemon::throttle::{ManualClock, Policy};
use reqwest::Method;
use serde_json::{Value, json};

fn code(body: &str) -> Option<String> {
    serde_json::from_str::<Value>(body)
        .ok()?
        .pointer("/error/code")?
        .as_str()
        .map(str::to_string)
}

#[tokio::test]
async fn traversal_is_refused_on_specs_and_repos() {
    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    site_config(site.path());
    let (engine, _calls) = FakeEngine::new();
    let d = start(config(site.path(), state.path()), engine).await;
    let repo = format!("Bearer {REPO_TOKEN}");
    let attempts: &[(&str, Option<&str>)] = &[
        ("/spec/../../secrets", None),
        ("/spec/..%2F..%2Fsecrets", None),
        ("/spec/%2e%2e%2f%2e%2e%2fsecrets", None),
        ("/spec/%2E%2E/%2E%2E/secrets", None),
        ("/spec/....//....//secrets", None),
        ("/spec/../secrets.yaml", None),
        ("/spec/.hidden", None),
        ("/../../../etc/passwd", None),
        ("/%2e%2e/%2e%2e/etc/passwd", None),
        ("/site-config.git/../../secrets.yaml", Some(&repo)),
        ("/site-config.git/%2e%2e/%2e%2e/secrets.yaml", Some(&repo)),
        (
            "/site-config.git/objects/../../../secrets.yaml",
            Some(&repo),
        ),
        ("/site-config.git//etc/passwd", Some(&repo)),
        ("/site-config.git/HEAD/../../../../etc/passwd", Some(&repo)),
        ("/site-config.git/./HEAD", Some(&repo)),
        ("/../site-config.git/HEAD", Some(&repo)),
        // Ignored by .gitignore, so never in the served snapshot.
        ("/site-config.git/secrets.yaml", Some(&repo)),
        ("/site-config.git/config", Some(&repo)),
    ];
    for (target, auth) in attempts {
        let (status, body) = d.raw(target, auth.as_deref()).await;
        assert!(
            (400..500).contains(&status),
            "{target}: expected a refusal, got {status} {body}"
        );
        for secret in SECRETS {
            assert!(!body.contains(secret), "{target} leaked a secret: {body}");
        }
        assert!(!body.contains("root:x:0:0"), "{target}: {body}");
    }
    // The same requests work when they name what they may.
    assert_eq!(d.raw("/spec/base", None).await.0, 200);
    assert_eq!(d.raw("/site-config.git/HEAD", Some(&repo)).await.0, 200);
    println!("traversal attempts refused: {}", attempts.len());
    d.stop().await.unwrap();
}

#[tokio::test]
async fn repeated_wrong_tokens_are_slowed_down_per_address() {
    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    site_config(site.path());
    let clock = ManualClock::default();
    let mut config = config(site.path(), state.path());
    config.clock = Arc::new(clock.clone());
    config.throttle = Policy::default();
    let (engine, _calls) = FakeEngine::new();
    let d = start(config, engine).await;

    let get = |token: Option<&'static str>| {
        let mut req = d.client.get(d.url("/spec/staged"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let resp = req.send().await.unwrap();
            let retry = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
            (resp.status().as_u16(), retry)
        }
    };
    // The free failures answer 403 at once.
    for _ in 0..5 {
        assert_eq!(get(Some("guess")).await, (403, None));
    }
    // The first counted one locks the address for 1 s and is held until
    // the lock has passed (the tarpit); another guess while locked grows
    // the lock to 2 s and is held for that.
    let mut sixth = tokio::spawn(get(Some("guess")));
    wait_metric(&d, "homestak_auth_held", 1.0).await;
    let mut seventh = tokio::spawn(get(Some("guess")));
    wait_metric(&d, "homestak_auth_held", 2.0).await;
    // Meanwhile the right token, from the same address, is served at once,
    // and requests without a token are not held back.
    assert_eq!(
        get(Some(SITE_TOKEN)).await,
        (200, None),
        "a valid token is served while its address is locked"
    );
    assert_eq!(d.get("/v1/status", Some(READ_TOKEN)).await.0, 200);
    assert_eq!(d.get("/health", None).await.0, 200);
    assert_eq!(d.get("/spec/base", None).await.0, 200);
    assert_eq!(get(None).await.0, 401);
    let chance = Duration::from_millis(300);
    assert!(tokio::time::timeout(chance, &mut sixth).await.is_err());

    clock.advance(Duration::from_secs(1));
    // Judged while unlocked: the 403 it always got, only later.
    assert_eq!(sixth.await.unwrap(), (403, None));
    assert!(tokio::time::timeout(chance, &mut seventh).await.is_err());
    clock.advance(Duration::from_secs(1));
    // Came while locked: 429, `Retry-After` never 0.
    assert_eq!(seventh.await.unwrap(), (429, Some(1)));

    // The lock has passed; the next failure doubles it, and is held as long.
    let mut eighth = tokio::spawn(get(Some("guess")));
    wait_metric(&d, "homestak_auth_held", 1.0).await;
    clock.advance(Duration::from_secs(3));
    assert!(tokio::time::timeout(chance, &mut eighth).await.is_err());
    clock.advance(Duration::from_secs(1));
    assert_eq!(eighth.await.unwrap(), (403, None), "unlocked, still wrong");

    let metrics = wait_metric(&d, "homestak_auth_held", 0.0).await;
    assert!(
        metrics.contains("homestak_auth_failures_total 8"),
        "{metrics}"
    );
    assert!(
        metrics.contains("homestak_auth_throttled_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("homestak_auth_held_total 3"), "{metrics}");
    d.stop().await.unwrap();
}

#[tokio::test]
async fn reconciler_api_drives_the_engine() {
    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    site_config(site.path());
    let head = git(site.path(), &["rev-parse", "HEAD"]);
    let (engine, mut calls) = FakeEngine::new();
    let d = start(config(site.path(), state.path()), engine.clone()).await;

    // The startup reconcile of the one managed manifest.
    let call = next_call(&mut calls).await;
    assert_eq!(call.manifest, "demo");
    assert_eq!(call.host, "father");
    assert_eq!(call.revision, head);
    assert_eq!(call.reason, Reason::Startup);

    let demo_applied =
        |status: &Value| status["manifests"][0]["last_applied"]["revision"] == json!(head);
    let mut status = Value::Null;
    for _ in 0..600 {
        let (code, text) = d.get("/v1/status", Some(READ_TOKEN)).await;
        assert_eq!(code, 200, "{text}");
        status = serde_json::from_str(&text).unwrap();
        if demo_applied(&status) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(demo_applied(&status), "{status:#}");
    let demo = &status["manifests"][0];
    assert_eq!(demo["name"], "demo");
    assert_eq!(demo["origin"], "git");
    assert_eq!(demo["drift"], "correct");
    assert_eq!(demo["in_sync"], true);
    assert_eq!(demo["status"]["host"], "father");
    assert_eq!(demo["last_reconcile"]["outcome"], "converged");
    assert_eq!(status["source"], "git-head");
    assert_eq!(status["revision"], json!(head));

    // One manifest, on demand.
    let (code, text) = d
        .send(
            Method::POST,
            "/v1/reconcile?manifest=demo",
            Some(WRITE_TOKEN),
            None,
        )
        .await;
    assert_eq!(code, 202, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["queued"],
        json!(["demo"])
    );
    let call = next_call(&mut calls).await;
    assert_eq!((call.manifest.as_str(), call.reason), ("demo", Reason::Api));
    let (code, text) = d
        .send(
            Method::POST,
            "/v1/reconcile?manifest=ghost",
            Some(WRITE_TOKEN),
            None,
        )
        .await;
    assert_eq!((code, code_of(&text)), (404, "E200".into()));

    // A parent tier hands over a subtree.
    let subtree = json!({
        "host": "father",
        "manifest": {"schema_version": 2, "name": "child", "nodes": [
            {"name": "inner", "type": "pve"},
            {"name": "leaf", "type": "vm", "parent": "inner"}
        ]},
    });
    let (code, text) = d
        .send(Method::PUT, "/v1/subtree", Some(WRITE_TOKEN), Some(subtree))
        .await;
    assert_eq!(code, 202, "{text}");
    let call = next_call(&mut calls).await;
    assert_eq!(call.manifest, "child");
    assert_eq!(call.reason, Reason::Subtree);
    assert!(call.revision.starts_with("subtree:"), "{}", call.revision);

    for (body, expect) in [
        (json!("not an object"), "E101"),
        (json!({"host": "father"}), "E101"),
        (json!({"host": "nowhere", "manifest": {}}), "E101"),
        (
            json!({"host": "father", "manifest": {"schema_version": 2, "name": "x", "nodes": [{"name": "a", "type": "vm", "parent": "ghost"}]}}),
            "E101",
        ),
        (
            // v1 subtrees are accepted (levels nest); an empty one is not.
            json!({"host": "father", "manifest": {"schema_version": 1, "name": "x", "levels": []}}),
            "E101",
        ),
        (
            json!({"host": "father", "manifest": {"schema_version": 2, "name": "x", "nodes": []}, "extra": 1}),
            "E101",
        ),
        (
            json!({"host": "father", "manifest": {"schema_version": 2, "name": "demo", "nodes": [{"name": "a", "type": "vm"}]}}),
            "E103",
        ),
    ] {
        let (code, text) = d
            .send(
                Method::PUT,
                "/v1/subtree",
                Some(WRITE_TOKEN),
                Some(body.clone()),
            )
            .await;
        assert_eq!(code_of(&text), expect, "{body} -> {code} {text}");
    }

    // Events, in order, with a cursor.
    let (code, text) = d
        .get("/v1/events?since=0&limit=500", Some(READ_TOKEN))
        .await;
    assert_eq!(code, 200);
    let events: Value = serde_json::from_str(&text).unwrap();
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "started",
        "revision",
        "reconcile_queued",
        "reconcile_started",
        "reconcile_finished",
        "subtree_accepted",
    ] {
        assert!(kinds.contains(&kind), "no {kind} event in {kinds:?}");
    }
    let next = events["next"].as_u64().unwrap();
    let (_, text) = d
        .get(&format!("/v1/events?since={next}"), Some(READ_TOKEN))
        .await;
    let later: Value = serde_json::from_str(&text).unwrap();
    assert!(
        later["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["seq"].as_u64().unwrap() > next)
    );
    let (code, text) = d.get("/v1/events?since=x", Some(READ_TOKEN)).await;
    assert_eq!((code, code_of(&text)), (400, "E101".into()));

    // Metrics reflect what happened.
    eventually("three converged reconciles", || {
        engine.calls.lock().unwrap().len() >= 3
    })
    .await;
    let (code, metrics) = d.get("/metrics", Some(READ_TOKEN)).await;
    assert_eq!(code, 200);
    for needle in [
        "homestak_reconciles_total{result=\"converged\"}",
        "homestak_reconcile_duration_seconds_count",
        "homestak_drifted_nodes{manifest=\"demo\"} 0",
        "homestak_reconcile_queue_depth",
        "homestak_pve_requests_total{method=\"GET\",route=\"/cluster/resources\",status=\"200\"}",
        "homestak_pve_request_duration_seconds_bucket{method=\"GET\",route=\"/cluster/resources\",le=\"0.025\"}",
        "homestak_last_reconcile_timestamp_seconds{manifest=\"demo\",outcome=\"converged\"}",
        "homestak_build_info{version=",
        "homestak_http_requests_total{route=\"v1_status\",code=\"200\"}",
    ] {
        assert!(metrics.contains(needle), "no {needle} in\n{metrics}");
    }

    // Methods and unknown paths.
    let (code, text) = d
        .send(Method::DELETE, "/v1/status", Some(READ_TOKEN), None)
        .await;
    assert_eq!((code, code_of(&text)), (405, "E102".into()));
    let (code, text) = d.send(Method::POST, "/health", None, None).await;
    assert_eq!((code, code_of(&text)), (405, "E102".into()));
    let (code, text) = d.get("/v2/nothing", Some(READ_TOKEN)).await;
    assert_eq!((code, code_of(&text)), (400, "E100".into()));
    let head = d.client.head(d.url("/health")).send().await.unwrap();
    assert_eq!(head.status().as_u16(), 200);
    assert_eq!(head.headers()["content-length"], "16");
    assert!(head.bytes().await.unwrap().is_empty(), "HEAD has no body");

    d.stop().await.unwrap();
}

fn code_of(text: &str) -> String {
    code(text).unwrap_or_default()
}

/// The typed client of `homestak_api` against the daemon: every endpoint
/// it speaks answers with the types the daemon serves, and refusals come
/// back as the daemon's error codes.
#[tokio::test]
async fn the_typed_client_speaks_the_daemons_api() {
    use homestak_api::v1::SubtreeRequest;
    use homestak_api::{Client, Kind, Outcome, client};
    use homestak_core::site::Secret;

    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    site_config(site.path());
    let head = git(site.path(), &["rev-parse", "HEAD"]);
    let (engine, mut calls) = FakeEngine::new();
    let d = start(config(site.path(), state.path()), engine.clone()).await;
    let reader = Client::new(&d.url, d.fingerprint, &Secret::new(READ_TOKEN)).unwrap();
    let writer = Client::new(&d.url, d.fingerprint, &Secret::new(WRITE_TOKEN)).unwrap();
    next_call(&mut calls).await;

    let status = loop {
        let status = reader.status(Some("demo"), true).await.unwrap();
        if status.manifests[0].record.last_applied.is_some() {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let demo = &status.manifests[0];
    assert_eq!(demo.name, "demo");
    assert_eq!(demo.record.last_applied.as_ref().unwrap().revision, head);
    assert_eq!(
        demo.record.last_reconcile.as_ref().unwrap().outcome,
        Outcome::Converged
    );
    assert_eq!(demo.in_sync, Some(true));
    // Records only: the same records, no drift report.
    let records = reader.status(Some("demo"), false).await.unwrap();
    assert_eq!(records.manifests[0].record, demo.record);
    assert!(records.manifests[0].status.is_none() && records.manifests[0].in_sync.is_none());

    let queued = writer.reconcile(Some("demo")).await.unwrap();
    assert_eq!(queued.queued, ["demo"]);
    let accepted = writer
        .put_subtree(&SubtreeRequest {
            host: "father".parse().unwrap(),
            manifest: json!({"schema_version": 2, "name": "child", "nodes": [
                {"name": "inner", "type": "pve"}
            ]}),
        })
        .await
        .unwrap();
    assert_eq!(accepted.accepted, "child");
    assert!(accepted.revision.starts_with("subtree:"));
    assert_eq!(accepted.generation, 1);

    let events = reader.events(0, 500).await.unwrap();
    assert!(
        events
            .events
            .iter()
            .any(|e| e.kind == Kind::SubtreeAccepted)
    );
    assert_eq!(events.next, events.events.last().unwrap().seq);

    // A read token may not write; the daemon's code comes back typed.
    match reader.reconcile(None).await {
        Err(client::Error::Refused { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (403, "E302"));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    match reader.status(Some("ghost"), false).await {
        Err(client::Error::Refused { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (404, "E200"));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Another certificate than the pinned one is never talked to.
    let other = homestak_tls::self_signed(&["127.0.0.1".into()]).unwrap();
    let stranger = Client::new(&d.url, other.fingerprint, &Secret::new(READ_TOKEN)).unwrap();
    assert!(matches!(
        stranger.status(None, false).await,
        Err(client::Error::Unreachable { .. })
    ));
    d.stop().await.unwrap();
}
