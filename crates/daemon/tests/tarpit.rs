//! The tarpit, over real TLS: a wrong token that leaves its address locked
//! is answered only once the lock has passed, a valid token from that
//! address is served meanwhile, hanging up does not give the guesser its
//! connection's place back, and shutdown does not wait for held guesses.
//!
//! Time is a hand-moved clock: a hold ends only when the test moves it,
//! so "not answered yet" is a fact of the daemon's logic, not of how fast
//! the machine is. Where a test checks that something has not happened,
//! it gives it a short real-time chance to (it could only miss a bug on a
//! very slow machine, never fail a correct daemon).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use homestak_daemon::conn::Limits;
use homestak_daemon::throttle::{ManualClock, Policy};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

/// Every hold here: each failure locks for at least this long (no free
/// failures), and no hold is longer.
const HOLD: Duration = Duration::from_secs(5);
/// Real time given to something that must not happen.
const CHANCE: Duration = Duration::from_millis(300);
/// Hang guard.
const GUARD: Duration = Duration::from_secs(30);
const HELD: &str = "homestak_auth_held";

fn guesser() -> IpAddr {
    "127.0.0.2".parse().unwrap()
}

fn policy() -> Policy {
    Policy {
        free_failures: 0,
        base_delay: HOLD,
        max_delay: Duration::from_secs(3600),
        max_hold: HOLD,
        ..Policy::default()
    }
}

/// A daemon and its directories (bind them all: a dropped one is deleted).
struct Setup {
    d: Running,
    clock: ManualClock,
    _site: tempfile::TempDir,
    _state: tempfile::TempDir,
}

async fn start_tarpit(limits: Limits, grace: Duration) -> Setup {
    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    site_config(site.path());
    let clock = ManualClock::default();
    let mut config = config(site.path(), state.path());
    config.clock = Arc::new(clock.clone());
    config.throttle = policy();
    config.limits = limits;
    config.shutdown_grace = grace;
    let (engine, _calls) = FakeEngine::new();
    Setup {
        d: start(config, engine).await,
        clock,
        _site: site,
        _state: state,
    }
}

/// A wrong guess from `client`, answered (status) on a task.
fn guess(d: &Running, client: &reqwest::Client, n: usize) -> JoinHandle<u16> {
    let request = client
        .get(d.url("/v1/status"))
        .bearer_auth(format!("guess-{n}"));
    tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
}

async fn not_answered(answer: &mut JoinHandle<u16>) -> bool {
    tokio::time::timeout(CHANCE, answer).await.is_err()
}

async fn answered(answer: JoinHandle<u16>) -> u16 {
    tokio::time::timeout(GUARD, answer)
        .await
        .expect("a held guess is answered once its hold passed (hang guard)")
        .unwrap()
}

/// From a locked address, N wrong guesses one after the other take at
/// least N × the hold of the test clock: none is answered before the
/// clock has passed its hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_wrong_guesses_each_wait_out_the_lock() {
    let Setup {
        d,
        clock,
        _site,
        _state,
    } = start_tarpit(Limits::default(), Duration::from_secs(10)).await;
    let client = client_from(d.fingerprint, guesser());
    let n = 4;
    let mut moved = Duration::ZERO;
    let mut statuses = Vec::new();
    for i in 0..n {
        let mut answer = guess(&d, &client, i);
        wait_metric(&d, HELD, 1.0).await;
        clock.advance(HOLD - Duration::from_millis(1));
        moved += HOLD - Duration::from_millis(1);
        assert!(
            not_answered(&mut answer).await,
            "guess {i} was answered before its hold passed"
        );
        clock.advance(Duration::from_millis(1));
        moved += Duration::from_millis(1);
        statuses.push(answered(answer).await);
        wait_metric(&d, HELD, 0.0).await;
    }
    println!("{n} sequential wrong guesses: {statuses:?} after {moved:?} of the test clock");
    assert!(moved >= HOLD * n as u32);
    // The first ones are judged while the address was unlocked (403);
    // once failures come faster than locks pass, the address stays locked.
    assert!(
        statuses.iter().all(|s| matches!(s, 403 | 429)),
        "{statuses:?}"
    );
    assert_eq!(statuses[..2], [403, 403]);
    assert_eq!(statuses[2..], [429, 429]);
    let text = wait_metric(&d, HELD, 0.0).await;
    assert_eq!(metric(&text, "homestak_auth_held_total"), n as f64);
    assert_eq!(metric(&text, "homestak_auth_failures_total"), n as f64);
    d.stop().await.unwrap();
}

/// While wrong guesses from an address are held, valid tokens from that
/// same address are answered at once (the clock does not move).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_is_served_at_once_while_guesses_are_held() {
    let Setup {
        d,
        clock,
        _site,
        _state,
    } = start_tarpit(Limits::default(), Duration::from_secs(10)).await;
    let client = client_from(d.fingerprint, guesser());
    let mut pending: Vec<_> = (0..3).map(|i| guess(&d, &client, i)).collect();
    wait_metric(&d, HELD, 3.0).await;

    let served = async {
        for (path, token) in [
            ("/v1/status", READ_TOKEN),
            ("/spec/staged", SITE_TOKEN),
            ("/site-config.git/HEAD", REPO_TOKEN),
        ] {
            let resp = client
                .get(d.url(path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            assert_eq!(status, 200, "{path} with a valid token: {text}");
        }
        // And requests without a token are not held back either.
        let health = client.get(d.url("/health")).send().await.unwrap();
        assert_eq!(health.status().as_u16(), 200);
    };
    tokio::time::timeout(GUARD, served)
        .await
        .expect("valid tokens from the locked address are answered without the clock moving");
    for answer in &mut pending {
        assert!(not_answered(answer).await, "a guess was not held");
    }
    let text = wait_metric(&d, HELD, 3.0).await;
    assert_eq!(metric(&text, "homestak_auth_failures_total"), 3.0);

    clock.advance(HOLD);
    for answer in pending {
        assert!(matches!(answered(answer).await, 403 | 429));
    }
    wait_metric(&d, HELD, 0.0).await;
    d.stop().await.unwrap();
}

/// Stopping the daemon answers held guesses at once: the graceful
/// shutdown (whose grace is far above the hang guard of `stop`) does not
/// wait for their holds, which the clock would never end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_held_guesses() {
    let Setup {
        d, _site, _state, ..
    } = start_tarpit(Limits::default(), Duration::from_secs(600)).await;
    let client = client_from(d.fingerprint, guesser());
    let mut pending: Vec<_> = (0..3).map(|i| guess(&d, &client, i)).collect();
    wait_metric(&d, HELD, 3.0).await;
    for answer in &mut pending {
        assert!(not_answered(answer).await, "a guess was not held");
    }
    // `stop` gives up (panics) after 60 s, well below the 600 s grace.
    d.stop().await.unwrap();
    for answer in pending {
        let status = tokio::time::timeout(GUARD, answer)
            .await
            .expect("a held guess is released at shutdown (hang guard)")
            .unwrap();
        assert!(matches!(status, 403 | 429), "{status}");
    }
}

/// A guesser that hangs up instead of waiting does not get its places
/// back: each held guess keeps its connection's place in the per-address
/// cap until the hold ends, so new connections from that address are
/// refused at accept, while other addresses connect as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_up_does_not_free_a_held_guess_place() {
    let limits = Limits {
        max_connections_per_address: 2,
        ..Limits::default()
    };
    let Setup {
        d,
        clock,
        _site,
        _state,
    } = start_tarpit(limits, Duration::from_secs(10)).await;
    for n in 1..=2 {
        let mut stream = tls_from(d.addr, d.fingerprint, guesser()).await.unwrap();
        stream
            .write_all(
                format!(
                    "GET /v1/status HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer guess-{n}\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        wait_metric(&d, HELD, f64::from(n)).await;
        drop(stream);
        // hyper dropped the request as its client went, with the
        // connection: only the hold keeps the place now.
        wait_metric(&d, "homestak_auth_held_abandoned_total", f64::from(n)).await;
    }
    wait_metric(&d, HELD, 2.0).await;
    assert!(
        tls_from(d.addr, d.fingerprint, guesser()).await.is_err(),
        "hanging up freed a held guess's place"
    );
    let other: IpAddr = "127.0.0.3".parse().unwrap();
    assert!(
        tls_from(d.addr, d.fingerprint, other).await.is_ok(),
        "another address is not affected"
    );

    clock.advance(HOLD);
    wait_metric(&d, HELD, 0.0).await;
    let mut again = None;
    for _ in 0..100 {
        if let Ok(s) = tls_from(d.addr, d.fingerprint, guesser()).await {
            again = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        again.is_some(),
        "the places were not given back at the end of the holds"
    );
    drop(again);
    let text = wait_metric(&d, HELD, 0.0).await;
    assert!(
        metric(
            &text,
            "homestak_connections_refused_total{reason=\"max_per_address\"}"
        ) >= 1.0,
        "{text}"
    );
    d.stop().await.unwrap();
}

/// The status page's wrong tokens, in its login form or its cookie, are
/// held and counted like wrong `Bearer` tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_status_page_tokens_are_held_like_api_guesses() {
    let Setup {
        d,
        clock,
        _site,
        _state,
    } = start_tarpit(Limits::default(), Duration::from_secs(10)).await;
    let client = client_from(d.fingerprint, guesser());
    let by_form = client
        .post(d.url("/ui/login"))
        .form(&[("token", "form-guess")]);
    let mut form = tokio::spawn(async move { by_form.send().await.unwrap().status().as_u16() });
    wait_metric(&d, HELD, 1.0).await;
    let by_cookie = client
        .get(d.url("/ui"))
        .header("Cookie", "homestak_ui=cookie-guess");
    let mut cookie = tokio::spawn(async move { by_cookie.send().await.unwrap().status().as_u16() });
    wait_metric(&d, HELD, 2.0).await;
    assert!(
        not_answered(&mut form).await,
        "a wrong login was answered at once"
    );
    assert!(
        not_answered(&mut cookie).await,
        "a wrong cookie was answered at once"
    );
    clock.advance(HOLD * 4);
    assert_eq!(answered(form).await, 403);
    assert!(matches!(answered(cookie).await, 403 | 429));
    let text = wait_metric(&d, HELD, 0.0).await;
    assert_eq!(metric(&text, "homestak_auth_failures_total"), 2.0);
    d.stop().await.unwrap();
}
