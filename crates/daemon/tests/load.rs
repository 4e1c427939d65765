//! Proof R4, load: mixed requests at many concurrent connections with 0
//! errors, while idle connections are held open, then `/health` from a
//! new client. It prints its figures.
//!
//! Sizes: in CI 1,000 requests at 50 connections with 200 idle ones;
//! `HOMESTAK_LOAD=full` (`make reliability-load`) 10,000 requests at 200
//! connections with 1,100 idle ones. An error is any status the request
//! may not get, a connection failure, or no answer within 30 s. The only
//! time asserted is `/health` from a new client while the idle connections
//! are open: within 1 s at full size; in CI within 10 s, a bound for a
//! loaded shared machine that still fails if the daemon stops answering
//! new clients (it would then wait for the idle connections' timeouts).
//!
//! Clients come from many loopback addresses (127.0.1.x for the load,
//! 127.0.2.x for idle connections, 127.0.3.1 for the probe) so the
//! per-address cap (64 by default, kept) is not what this measures. The
//! first-request and idle timeouts are raised to 10 min so the idle
//! connections stay open for the whole run; those timeouts have their own
//! tests (`hardening`). The daemon raises this process's open-file limit
//! at start (it runs in-process).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use homestak_daemon::conn::Limits;
use homestak_daemon::throttle::Policy;
use reqwest::Method;
use serde_json::{Value, json};

struct Size {
    name: &'static str,
    requests: usize,
    connections: usize,
    idle: usize,
    health_bound: Duration,
}

fn size() -> Size {
    if std::env::var("HOMESTAK_LOAD").as_deref() == Ok("full") {
        Size {
            name: "full",
            requests: 10_000,
            connections: 200,
            idle: 1_100,
            health_bound: Duration::from_secs(1),
        }
    } else {
        Size {
            name: "ci",
            requests: 1_000,
            connections: 50,
            idle: 200,
            health_bound: Duration::from_secs(10),
        }
    }
}

/// One kind of request of the mix, and the statuses it may get.
struct Kind {
    method: Method,
    path: &'static str,
    token: Option<&'static str>,
    body: Option<Value>,
    expect: &'static [u16],
}

fn kind(
    method: Method,
    path: &'static str,
    token: Option<&'static str>,
    expect: &'static [u16],
) -> Kind {
    Kind {
        method,
        path,
        token,
        body: None,
        expect,
    }
}

fn child() -> Value {
    json!({
        "host": "father",
        "manifest": {"schema_version": 2, "name": "child", "nodes": [{"name": "inner", "type": "vm"}]},
    })
}

/// The mix: public, spec, API reads (status, a subtree's status, events,
/// metrics, plan), repo reads, and refusals (no token, a wrong token, too
/// small a scope). A wrong token may be told to wait (429, after the
/// tarpit's hold) once its address is locked; nothing else may.
fn mix() -> Vec<Kind> {
    let get = Method::GET;
    let mut plan = kind(Method::POST, "/v1/plan", Some(READ_TOKEN), &[200]);
    plan.body = Some(child());
    vec![
        kind(get.clone(), "/health", None, &[200]),
        kind(get.clone(), "/specs", None, &[200]),
        kind(get.clone(), "/spec/base", None, &[200]),
        kind(get.clone(), "/spec/staged", Some(SITE_TOKEN), &[200]),
        kind(get.clone(), "/spec/staged", None, &[401]),
        kind(get.clone(), "/spec/staged", Some("wrong"), &[403, 429]),
        kind(get.clone(), "/v1/status", Some(READ_TOKEN), &[200]),
        kind(
            get.clone(),
            "/v1/status?manifest=child",
            Some(READ_TOKEN),
            &[200],
        ),
        kind(get.clone(), "/v1/events?limit=20", Some(READ_TOKEN), &[200]),
        kind(get.clone(), "/metrics", Some(READ_TOKEN), &[200]),
        plan,
        kind(get.clone(), "/v1/status", None, &[401]),
        kind(get.clone(), "/v1/status", Some("wrong"), &[403, 429]),
        kind(Method::POST, "/v1/reconcile", Some(READ_TOKEN), &[403]),
        kind(
            get.clone(),
            "/site-config.git/HEAD",
            Some(REPO_TOKEN),
            &[200],
        ),
        kind(
            get.clone(),
            "/site-config.git/info/refs",
            Some(REPO_TOKEN),
            &[200],
        ),
        kind(get, "/site-config.git/HEAD", None, &[401]),
    ]
}

/// Workers walk the mix with a stride prime to its length (17), so each
/// sees every kind and neighbours differ.
const STRIDE: usize = 7;

fn loopback(third: u8, n: usize) -> IpAddr {
    IpAddr::from([127, 0, third, (n % 250 + 1) as u8])
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

async fn open_metric(d: &Running, series: &str) -> f64 {
    let (_, text) = d.get("/metrics", Some(READ_TOKEN)).await;
    metric(&text, series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_load_mixed_requests_while_idle_connections_are_held() {
    let size = size();
    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    site_config(site.path());
    let mut config = config(site.path(), state.path());
    config.limits = Limits {
        first_request_timeout: Duration::from_secs(600),
        idle_timeout: Duration::from_secs(600),
        ..Limits::default()
    };
    // The mix's wrong tokens lock their addresses: the tarpit holds them
    // (kept short so no hold nears the 30 s error bound).
    config.throttle = Policy {
        max_hold: Duration::from_millis(100),
        ..Policy::default()
    };
    let (engine, _calls) = FakeEngine::new();
    let d = Arc::new(start(config, engine).await);
    let (status, text) = d
        .send(Method::PUT, "/v1/subtree", Some(WRITE_TOKEN), Some(child()))
        .await;
    assert_eq!(status, 202, "{text}");

    // Idle connections: TLS done, no request; 50 per address.
    let opened = Instant::now();
    let mut idle = Vec::with_capacity(size.idle);
    for batch in (0..size.idle).collect::<Vec<_>>().chunks(50) {
        let connects = batch.iter().map(|n| {
            let d = Arc::clone(&d);
            let from = loopback(2, n / 50);
            async move { tls_from(d.addr, d.fingerprint, from).await }
        });
        for c in futures_join(connects).await {
            idle.push(c.expect("an idle connection is accepted"));
        }
    }
    let opened = opened.elapsed();
    let held = open_metric(&d, "homestak_connections_open").await;
    assert!(held >= size.idle as f64, "{held} connections open");

    // The load, while they are held.
    let kinds = Arc::new(mix());
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..size.connections {
        let (d, kinds) = (Arc::clone(&d), Arc::clone(&kinds));
        let count =
            size.requests / size.connections + usize::from(w < size.requests % size.connections);
        workers.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .use_preconfigured_tls(homestak_tls::pinned_client_config(d.fingerprint))
                .local_address(loopback(1, w / 2))
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            let mut latencies = Vec::with_capacity(count);
            let mut errors = Vec::new();
            for i in 0..count {
                let k = &kinds[(w + i * STRIDE) % kinds.len()];
                let mut request = client.request(k.method.clone(), d.url(k.path));
                if let Some(t) = k.token {
                    request = request.bearer_auth(t);
                }
                if let Some(b) = &k.body {
                    request = request.json(b);
                }
                let sent = Instant::now();
                match request.send().await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let body = resp.bytes().await;
                        latencies.push(sent.elapsed());
                        if !k.expect.contains(&status) || body.is_err() {
                            errors.push(format!("{} {} -> {status}", k.method, k.path));
                        }
                    }
                    Err(err) => errors.push(format!("{} {}: {err}", k.method, k.path)),
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    for w in workers {
        let (l, e) = w.await.unwrap();
        latencies.extend(l);
        errors.extend(e);
    }
    let elapsed = started.elapsed();

    // A new client, from an address of its own, while the idle ones are
    // still held.
    let probe = reqwest::Client::builder()
        .use_preconfigured_tls(homestak_tls::pinned_client_config(d.fingerprint))
        .local_address(loopback(3, 0))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let asked = Instant::now();
    let health = probe
        .get(d.url("/health"))
        .send()
        .await
        .map(|r| r.status().as_u16());
    let health_took = asked.elapsed();
    let still_held = open_metric(&d, "homestak_connections_open").await;

    latencies.sort();
    println!(
        "R4 load ({}): {} requests at {} connections in {:.2?} ({:.0} req/s), {} errors; latency p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        size.name,
        latencies.len(),
        size.connections,
        elapsed,
        latencies.len() as f64 / elapsed.as_secs_f64(),
        errors.len(),
        percentile(&latencies, 50),
        percentile(&latencies, 99),
        latencies.last().copied().unwrap_or_default(),
    );
    println!(
        "R4 idle ({}): {} idle connections opened in {:.2?}; {} open at the probe; /health from a new client: {:?} in {:.2?} (bound {:?})",
        size.name,
        size.idle,
        opened,
        still_held,
        health.as_ref().map_err(ToString::to_string),
        health_took,
        size.health_bound
    );
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );
    assert_eq!(latencies.len(), size.requests);
    assert_eq!(health.ok(), Some(200));
    assert!(
        still_held >= size.idle as f64,
        "the idle connections were closed during the run ({still_held} open)"
    );
    assert!(
        health_took <= size.health_bound,
        "/health took {health_took:?} with {} idle connections open",
        size.idle
    );
    drop(idle);
    let d = Arc::into_inner(d).expect("no task holds the daemon");
    d.stop().await.unwrap();
}

/// Awaits every future of `futures`, concurrently.
async fn futures_join<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
