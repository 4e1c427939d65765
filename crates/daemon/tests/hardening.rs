//! A daemon that cannot be starved without a login: connections that
//! never finish a request are closed on time, caps refuse floods at
//! accept, bodies are read only after auth, the throttle reserves each
//! guess before judging it and never refuses a valid token (its tarpit
//! has tests of its own, `tarpit`), and a
//! malformed PVE token never reaches an answer.
//!
//! Timeouts here are short (1 to 2 s) so the tests are quick; every wait
//! has a generous hang guard and no test asserts how fast the daemon was.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use homestak_daemon::conn::Limits;
use homestak_daemon::throttle::{ManualClock, Policy};
use tokio::io::AsyncWriteExt;

/// Hang guard for "the daemon closed it": far above every timeout set here.
const GUARD: Duration = Duration::from_secs(20);

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn short_limits() -> Limits {
    Limits {
        // Long enough for the test's own client on a loaded machine.
        first_request_timeout: Duration::from_secs(2),
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        ..Limits::default()
    }
}

async fn start_with(limits: Limits) -> (Running, tempfile::TempDir, tempfile::TempDir) {
    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    site_config(site.path());
    let mut config = config(site.path(), state.path());
    config.limits = limits;
    let (engine, _calls) = FakeEngine::new();
    (start(config, engine).await, site, state)
}

fn timed_out(text: &str, phase: &str) -> f64 {
    metric(
        text,
        &format!("homestak_connections_timed_out_total{{phase=\"{phase}\"}}"),
    )
}

async fn metrics(d: &Running) -> String {
    let (status, text) = d.get("/metrics", Some(READ_TOKEN)).await;
    assert_eq!(status, 200, "{text}");
    text
}

/// Slowloris: a head sent a header line at a time, forever. The first
/// request is cut at the first-request timeout (counted from accept), a
/// later one at the header timeout (counted from its first byte), while
/// the idle timeout is long enough not to be the one that fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_heads_are_cut_at_their_timeout() {
    let (d, _site, _state) = start_with(Limits {
        idle_timeout: Duration::from_secs(120),
        ..short_limits()
    })
    .await;

    async fn trickle(
        stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    ) -> Option<Duration> {
        let started = tokio::time::Instant::now();
        if stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
            .await
            .is_err()
        {
            return Some(started.elapsed());
        }
        while started.elapsed() < GUARD {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let line = stream.write_all(b"X-Slow: a\r\n").await;
            let flushed = stream.flush().await;
            if line.is_err() || flushed.is_err() {
                return Some(started.elapsed());
            }
            // The daemon closes by sending close_notify or FIN: see it.
            if let Some(took) = closed_within(stream, Duration::from_millis(1)).await {
                return Some(took.max(started.elapsed()));
            }
        }
        None
    }

    // The first request.
    let mut first = tls_from(d.addr, d.fingerprint, ip("127.0.0.2"))
        .await
        .unwrap();
    let took = trickle(&mut first).await;
    assert!(took.is_some(), "a slow first head was never cut");
    println!("slow first head cut after {:?}", took.unwrap());

    // A later request on a kept-alive connection.
    let mut later = tls_from(d.addr, d.fingerprint, ip("127.0.0.3"))
        .await
        .unwrap();
    later
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut later).await.unwrap().0, 200);
    let took = trickle(&mut later).await;
    assert!(took.is_some(), "a slow later head was never cut");
    println!("slow later head cut after {:?}", took.unwrap());

    let text = metrics(&d).await;
    assert!(timed_out(&text, "first_request") >= 1.0, "{text}");
    assert!(timed_out(&text, "header") >= 1.0, "{text}");
    assert_eq!(timed_out(&text, "idle"), 0.0, "{text}");
    d.stop().await.unwrap();
}

/// A TCP connection that never starts TLS, one that finished TLS but
/// sends nothing, and a kept-alive one that goes quiet are all closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed() {
    let (d, _site, _state) = start_with(short_limits()).await;

    let mut no_tls = tcp_from(d.addr, ip("127.0.0.2")).await.unwrap();
    let took = closed_within(&mut no_tls, GUARD).await;
    assert!(
        took.is_some(),
        "a connection without a TLS handshake stayed open"
    );

    let mut no_request = tls_from(d.addr, d.fingerprint, ip("127.0.0.2"))
        .await
        .unwrap();
    assert!(
        closed_within(&mut no_request, GUARD).await.is_some(),
        "a connection without a request stayed open"
    );

    let mut kept = tls_from(d.addr, d.fingerprint, ip("127.0.0.2"))
        .await
        .unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut kept).await.unwrap().0, 200);
    let idle = closed_within(&mut kept, GUARD).await;
    assert!(idle.is_some(), "an idle kept-alive connection stayed open");
    println!(
        "closed: no TLS after {:?}, idle keep-alive after {:?}",
        took.unwrap(),
        idle.unwrap()
    );

    let text = metrics(&d).await;
    assert!(timed_out(&text, "first_request") >= 2.0, "{text}");
    assert!(timed_out(&text, "idle") >= 1.0, "{text}");
    d.stop().await.unwrap();
}

/// Idle connections over the per-address cap are closed at accept, and
/// the daemon still answers a new client; over the total cap too, and a
/// closed connection frees its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_refuse_floods_and_serve_new_clients() {
    let (d, _site, _state) = start_with(Limits {
        first_request_timeout: Duration::from_secs(120),
        idle_timeout: Duration::from_secs(120),
        max_connections: 6,
        max_connections_per_address: 4,
        ..Limits::default()
    })
    .await;
    let flooder = ip("127.0.0.2");
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tls_from(d.addr, d.fingerprint, flooder).await.unwrap());
    }
    // The fifth from the same address: closed before TLS completes.
    assert!(
        tls_from(d.addr, d.fingerprint, flooder).await.is_err(),
        "a connection over the per-address cap got through"
    );
    // A new client is answered (from its own address, and over a fresh
    // connection of the test's client from 127.0.0.1).
    let mut other = tls_from(d.addr, d.fingerprint, ip("127.0.0.3"))
        .await
        .unwrap();
    other
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut other).await.unwrap().0, 200);
    drop(other);
    assert_eq!(d.get("/health", None).await.0, 200);

    // Total cap: 4 held + the test client's pooled connection + one more.
    held.push(
        tls_from(d.addr, d.fingerprint, ip("127.0.0.4"))
            .await
            .unwrap(),
    );
    assert!(
        tls_from(d.addr, d.fingerprint, ip("127.0.0.5"))
            .await
            .is_err(),
        "a connection over the total cap got through"
    );
    held.remove(0);
    let mut freed = None;
    for _ in 0..100 {
        if let Ok(s) = tls_from(d.addr, d.fingerprint, ip("127.0.0.5")).await {
            freed = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        freed.is_some(),
        "a closed connection did not free its place"
    );
    drop(freed);
    drop(held);

    let mut text = String::new();
    for _ in 0..100 {
        // The places free as the daemon sees the closes.
        if let Ok(resp) = d
            .client
            .get(d.url("/metrics"))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
        {
            text = resp.text().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metric(
            &text,
            "homestak_connections_refused_total{reason=\"max_per_address\"}"
        ),
        1.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "homestak_connections_refused_total{reason=\"max_connections\"}"
        ) >= 1.0,
        "{text}"
    );
    assert_eq!(metric(&text, "homestak_connections_limit"), 6.0);
    d.stop().await.unwrap();
}

/// Sends a request head with a huge declared body and none of it, and
/// reads the answer: a daemon that read the body first would never
/// answer.
async fn declared_but_unsent(d: &Running, authorization: Option<&str>) -> (u16, String) {
    let mut stream = tls_from(d.addr, d.fingerprint, ip("127.0.0.2"))
        .await
        .unwrap();
    let mut head = String::from(
        "PUT /v1/subtree HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n",
    );
    if let Some(a) = authorization {
        head.push_str(&format!("Authorization: {a}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::time::timeout(GUARD, read_response(&mut stream))
        .await
        .expect("answered without the body (hang guard)")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_read_only_after_auth_and_within_limits() {
    let (d, _site, _state) = start_with(Limits {
        max_body: 1024,
        idle_timeout: Duration::from_secs(1),
        ..Limits::default()
    })
    .await;
    let code = |text: &str| -> String {
        serde_json::from_str::<serde_json::Value>(text).unwrap()["error"]["code"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (status, text) = declared_but_unsent(&d, Some("Bearer wrong")).await;
    assert_eq!((status, code(&text).as_str()), (403, "E301"));
    let (status, text) = declared_but_unsent(&d, None).await;
    assert_eq!((status, code(&text).as_str()), (401, "E300"));
    let (status, text) = declared_but_unsent(&d, Some(&format!("Bearer {READ_TOKEN}"))).await;
    assert_eq!((status, code(&text).as_str()), (403, "E302"));
    // A valid token: refused on the declared size, still without reading.
    let (status, text) = declared_but_unsent(&d, Some(&format!("Bearer {WRITE_TOKEN}"))).await;
    assert_eq!((status, code(&text).as_str()), (413, "E104"));

    // A body over the cap without a declared length (chunked).
    let mut stream = tls_from(d.addr, d.fingerprint, ip("127.0.0.2"))
        .await
        .unwrap();
    let chunk = "x".repeat(4096);
    stream
        .write_all(
            format!(
                "PUT /v1/subtree HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {WRITE_TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
                chunk.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let (status, text) = tokio::time::timeout(GUARD, read_response(&mut stream))
        .await
        .expect("an oversized chunked body is answered (hang guard)")
        .unwrap();
    assert_eq!((status, code(&text).as_str()), (413, "E104"));

    // A body that stops coming: 408 after the idle timeout.
    let mut stream = tls_from(d.addr, d.fingerprint, ip("127.0.0.2"))
        .await
        .unwrap();
    stream
        .write_all(
            format!(
                "PUT /v1/subtree HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {WRITE_TOKEN}\r\nContent-Length: 100\r\n\r\n{{\"host\""
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let (status, text) = tokio::time::timeout(GUARD, read_response(&mut stream))
        .await
        .expect("a stalled body is answered (hang guard)")
        .unwrap();
    assert_eq!((status, code(&text).as_str()), (408, "E105"));

    // And a body within the cap is read.
    let (status, text) = d
        .send(
            reqwest::Method::PUT,
            "/v1/subtree",
            Some(WRITE_TOKEN),
            Some(serde_json::json!({"host": "father", "manifest": {"schema_version": 2, "name": "child", "nodes": [{"name": "a", "type": "vm"}]}})),
        )
        .await;
    assert_eq!(status, 202, "{text}");
    d.stop().await.unwrap();
}

/// Check and record are one step: 50 wrong guesses sent at once from one
/// address get at most `free_failures + 1` judged (403); the rest wait
/// (429). Those that leave the address locked are held until the clock
/// moves, while a valid token from that address is served at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_guesses_cannot_pass_the_throttle_together() {
    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    site_config(site.path());
    let mut config = config(site.path(), state.path());
    // The clock moves only when the test says: no lock or hold expires
    // on its own.
    let clock = ManualClock::default();
    config.clock = Arc::new(clock.clone());
    config.throttle = Policy::default();
    let free = config.throttle.free_failures;
    let max_hold = config.throttle.max_hold;
    let (engine, _calls) = FakeEngine::new();
    let d = Arc::new(start(config, engine).await);

    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for n in 0..50 {
        let (d, barrier, answered) = (Arc::clone(&d), Arc::clone(&barrier), Arc::clone(&answered));
        tasks.push(tokio::spawn(async move {
            // Its own connection each, so all are in flight at once.
            let client = client(d.fingerprint);
            let request = client
                .get(d.url("/v1/status?observe=false"))
                .bearer_auth(format!("guess-{n}"));
            barrier.wait().await;
            let status = request.send().await.unwrap().status().as_u16();
            answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            status
        }));
    }
    // Every guess is either answered (a free failure) or held.
    let mut held = 0.0;
    for _ in 0..600 {
        held = metric(&metrics(&d).await, "homestak_auth_held");
        let done = answered.load(std::sync::atomic::Ordering::SeqCst);
        if held + done as f64 == 50.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        held >= 44.0,
        "{held} guesses held; every one that came while locked must be"
    );
    assert_eq!(
        d.get("/v1/status?observe=false", Some(READ_TOKEN)).await.0,
        200,
        "a valid token is served from the locked address while guesses are held"
    );
    clock.advance(max_hold);
    let mut judged = 0;
    let mut waited = 0;
    for t in tasks {
        match t.await.unwrap() {
            403 => judged += 1,
            429 => waited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    println!(
        "50 parallel guesses: {judged} judged (403), {waited} told to wait (429), {held} of them held"
    );
    assert!(
        judged <= free + 1,
        "{judged} guesses reached a verdict; at most {} may",
        free + 1
    );
    assert_eq!(judged + waited, 50);
    let text = metrics(&d).await;
    assert_eq!(
        metric(&text, "homestak_auth_throttled_total"),
        f64::from(waited)
    );
    assert_eq!(metric(&text, "homestak_auth_held_total"), held);
    let d = Arc::into_inner(d).expect("no task holds the daemon");
    d.stop().await.unwrap();
}
