//! The PVE client over real HTTPS against a local axum server: TLS trust
//! modes, the token header, wire encoding, retries, timeouts and the
//! per-host concurrency limit. Loopback only.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::{Canned, Seen, TestServer, start};
use homestak_pve::{
    self as pve, Api, ApiToken, Backoff, Client, Config, CreateVm, Disk, ErrorKind, PowerAction,
    Recorder, RetryPolicy, Trust, VmOptions,
};
use homestak_tls::Fingerprint;
use serde_json::json;

use crate::ids::{pn, vmid};

/// Hang guard only; nothing here asserts on time.
const GUARD: Duration = Duration::from_secs(30);

fn token() -> ApiToken {
    ApiToken::parse("root@pam!ci=5e3c1f6a-0000-4000-8000-feedfacecafe").unwrap()
}

fn config(server: &TestServer, trust: Trust) -> Config {
    let mut config = Config::new(&server.host(), token(), trust).unwrap();
    config.retry = RetryPolicy {
        attempts: 4,
        backoff: Backoff::new(Duration::from_millis(1), Duration::from_millis(5)),
    };
    config.rate = None;
    config
}

fn pinned(server: &TestServer) -> Client {
    Client::new(config(server, Trust::Pinned(server.cert.fingerprint))).unwrap()
}

fn version_handler() -> crate::support::Handler {
    Arc::new(|_: &Seen| {
        Canned::data(json!({"version":"8.4.1","release":"8.4","repoid":"2a5fa54a"}))
    })
}

async fn guarded<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(GUARD, fut).await.expect("test hung")
}

#[tokio::test]
async fn pinned_fingerprint_accepts_the_right_certificate() {
    let server = start(version_handler()).await;
    let version = guarded(pinned(&server).version()).await.unwrap();
    assert_eq!(version.version, "8.4.1");
    assert_eq!(version.major(), Some(8));
}

#[tokio::test]
async fn pinned_fingerprint_rejects_another_certificate() {
    let server = start(version_handler()).await;
    let wrong = Fingerprint::of_der(b"some other certificate");
    let client = Client::new(config(&server, Trust::Pinned(wrong))).unwrap();
    let err = guarded(client.version()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
    assert!(server.seen().is_empty(), "a request got through");
}

#[tokio::test]
async fn self_signed_is_refused_unless_insecure_is_asked_for() {
    let server = start(version_handler()).await;
    let system = Client::new(config(&server, Trust::System)).unwrap();
    let err = guarded(system.version()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
    assert!(server.seen().is_empty());

    let insecure = Client::new(config(&server, Trust::Insecure)).unwrap();
    guarded(insecure.version()).await.unwrap();
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn ca_bundle_trust_accepts_its_certificate() {
    let server = start(version_handler()).await;
    let pem = server.cert.cert_pem.clone().into_bytes();
    let client = Client::new(config(&server, Trust::CaOnly { pem })).unwrap();
    guarded(client.version()).await.unwrap();
    let bad = Client::new(config(
        &server,
        Trust::CaOnly {
            pem: b"not a pem".to_vec(),
        },
    ));
    assert_eq!(bad.unwrap_err().kind(), ErrorKind::Config);
}

#[tokio::test]
async fn token_header_and_form_encoding_reach_the_wire() {
    let server = start(Arc::new(|seen: &Seen| {
        if seen.method == "POST" {
            Canned::data(json!(
                "UPID:pve:00000A72:0000C9CC:5FBE5E5C:qmcreate:100:root@pam!ci:"
            ))
        } else {
            Canned::data(json!("100"))
        }
    }))
    .await;
    let client = pinned(&server);
    let vmid = guarded(client.next_vmid(None)).await.unwrap();
    assert_eq!(vmid, 100, "nextid's string data decodes as a number");
    let create = CreateVm {
        vmid,
        options: VmOptions {
            name: Some("vm1".into()),
            disks: vec![(
                "scsi0".into(),
                Disk::import("local-lvm", "local:import/noble.qcow2"),
            )],
            boot_order: Some(vec!["scsi0".into(), "net0".into()]),
            sshkeys: Some("ssh-ed25519 AAAAC3+/= me@host".into()),
            tags: Some(vec!["homestak".into(), "m-demo".into()]),
            ..VmOptions::default()
        },
        start: None,
        pool: None,
    };
    let upid = guarded(client.qemu_create(&pn("pve"), &create))
        .await
        .unwrap();
    assert_eq!(upid.kind(), "qmcreate");
    assert_eq!(upid.tokenid(), Some("ci"));

    let seen = server.seen();
    let get = &seen[0];
    assert_eq!(get.path, "/api2/json/cluster/nextid");
    assert_eq!(
        get.authorization.as_deref(),
        Some("PVEAPIToken=root@pam!ci=5e3c1f6a-0000-4000-8000-feedfacecafe")
    );
    assert!(get.raw_body.is_empty(), "GET must carry no body");
    let post = &seen[1];
    assert_eq!(post.path, "/api2/json/nodes/pve/qemu");
    assert_eq!(
        post.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    // Decoded the way PVE decodes (split on & and ;, two = fields), every
    // value arrives whole.
    let param = |k: &str| {
        post.body
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(param("vmid").as_deref(), Some("100"));
    assert_eq!(
        param("scsi0").as_deref(),
        Some("local-lvm:0,import-from=local:import/noble.qcow2")
    );
    assert_eq!(param("boot").as_deref(), Some("order=scsi0;net0"));
    assert_eq!(param("tags").as_deref(), Some("homestak;m-demo"));
    assert_eq!(
        param("sshkeys").as_deref(),
        Some("ssh-ed25519%20AAAAC3%2B%2F%3D%20me%40host")
    );
    assert!(
        post.raw_body
            .contains("sshkeys=ssh-ed25519%2520AAAAC3%252B")
    );
}

#[tokio::test]
async fn delete_sends_parameters_in_the_query() {
    let server = start(Arc::new(|_: &Seen| {
        Canned::data(json!(
            "UPID:pve:00000A72:0000C9CC:5FBE5E5C:qmdestroy:100:root@pam:"
        ))
    }))
    .await;
    let options = pve::DeleteVm {
        purge: true,
        destroy_unreferenced_disks: true,
    };
    guarded(pinned(&server).qemu_delete(&pn("pve"), vmid(100), &options))
        .await
        .unwrap();
    let seen = &server.seen()[0];
    assert_eq!(seen.method, "DELETE");
    assert_eq!(seen.path, "/api2/json/nodes/pve/qemu/100");
    assert!(seen.raw_body.is_empty());
    assert_eq!(
        seen.query,
        [
            ("purge".to_string(), "1".to_string()),
            ("destroy-unreferenced-disks".into(), "1".into())
        ]
    );
}

/// Fails the first `failures` requests with `status`, then answers.
fn flaky(status: u16, failures: usize) -> (crate::support::Handler, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let handler = Arc::new(move |_: &Seen| {
        if seen.fetch_add(1, Ordering::SeqCst) < failures {
            Canned {
                status,
                reason: None,
                body: String::new(),
                content_type: None,
                delay: None,
            }
        } else {
            Canned::data(json!(
                "UPID:pve:00000A72:0000C9CC:5FBE5E5C:qmstart:100:root@pam:"
            ))
        }
    });
    (handler, count)
}

#[tokio::test]
async fn reads_are_retried_on_500_and_595() {
    for status in [500, 595, 596] {
        let (handler, count) = flaky(status, 2);
        let server = start(handler).await;
        let recorder = Recorder::new();
        let mut config = config(&server, Trust::Pinned(server.cert.fingerprint));
        config.observer = Some(Arc::new(recorder.clone()));
        let client = Client::new(config).unwrap();
        let upid: pve::Upid = "UPID:pve:00000A72:0000C9CC:5FBE5E5C:qmstart:100:root@pam:"
            .parse()
            .unwrap();
        // A read of anything that answers a string; the body shape does not matter here.
        let result = guarded(client.raw(&pve::Request::get(
            "/nodes/{node}/tasks/{upid}/status",
            &["pve", upid.as_str()],
        )))
        .await;
        assert!(result.is_ok(), "status {status}: {result:?}");
        assert_eq!(count.load(Ordering::SeqCst), 3, "status {status}");
        let attempts: Vec<u32> = recorder.requests().iter().map(|r| r.attempt).collect();
        assert_eq!(attempts, [1, 2, 3]);
        // Each attempt's end is seen too, with its status and route.
        let answers = recorder.answers();
        let statuses: Vec<Option<u16>> = answers.iter().map(|a| a.status).collect();
        assert_eq!(statuses, [Some(status), Some(status), Some(200)]);
        assert!(answers[0].error.is_some(), "{answers:?}");
        assert_eq!(answers[2].error, None);
        assert!(
            answers
                .iter()
                .all(|a| a.template == "/nodes/{node}/tasks/{upid}/status"
                    && a.method == reqwest::Method::GET)
        );
    }
}

#[tokio::test]
async fn writes_are_never_retried() {
    for status in [500, 595] {
        let (handler, count) = flaky(status, 1);
        let server = start(handler).await;
        let err = guarded(pinned(&server).qemu_power(&pn("pve"), vmid(100), &PowerAction::Start))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(status));
        assert_eq!(count.load(Ordering::SeqCst), 1, "POST retried on {status}");
    }
}

#[tokio::test]
async fn definite_answers_are_not_retried() {
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let server = start(Arc::new(move |_: &Seen| {
        counter.fetch_add(1, Ordering::SeqCst);
        Canned::error(
            500,
            "Configuration file 'nodes/pve/qemu-server/101.conf' does not exist",
        )
    }))
    .await;
    let err = guarded(pinned(&server).qemu_status(&pn("pve"), vmid(101)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::VmNotFound);
    assert_eq!(count.load(Ordering::SeqCst), 1);
    let text = err.to_string();
    assert!(
        text.contains("GET /nodes/pve/qemu/101/status/current")
            && text.contains("(vmid 101)")
            && text.contains(&server.host())
            && text.contains("HTTP 500: Configuration file"),
        "{text}"
    );
}

#[tokio::test]
async fn connection_errors_are_retried_for_reads() {
    // A port with nothing listening: bind, learn the port, close.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let recorder = Recorder::new();
    let mut config = Config::new(
        &format!("127.0.0.1:{port}"),
        token(),
        Trust::Pinned(Fingerprint::of_der(b"x")),
    )
    .unwrap();
    config.retry = RetryPolicy {
        attempts: 3,
        backoff: Backoff::new(Duration::from_millis(1), Duration::from_millis(2)),
    };
    config.observer = Some(Arc::new(recorder.clone()));
    let client = Client::new(config).unwrap();
    let err = guarded(client.nodes()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
    assert_eq!(recorder.requests().len(), 3);
    let answers = recorder.answers();
    assert_eq!(answers.len(), 3);
    assert!(
        answers
            .iter()
            .all(|a| a.status.is_none() && a.error == Some(ErrorKind::Unreachable)),
        "{answers:?}"
    );
    // The cause is a source, not repeated in the message.
    assert!(std::error::Error::source(&err).is_some());
}

#[tokio::test]
async fn timeouts_fire() {
    let server = start(Arc::new(|_: &Seen| {
        Canned::data(json!([])).delayed(Duration::from_secs(60))
    }))
    .await;
    let mut config = config(&server, Trust::Pinned(server.cert.fingerprint));
    config.timeout = Duration::from_millis(200);
    config.retry.attempts = 2;
    let client = Client::new(config).unwrap();
    let err = guarded(client.nodes()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(
        err.to_string().contains("did not answer GET /nodes"),
        "{err}"
    );
    // Reads retry after a timeout too.
    assert_eq!(server.seen().len(), 2);
}

#[tokio::test]
async fn concurrency_limit_holds_per_host() {
    let server = start(Arc::new(|_: &Seen| {
        // Long enough that unlimited requests would overlap.
        Canned::data(json!([])).delayed(Duration::from_millis(100))
    }))
    .await;
    let mut config = config(&server, Trust::Pinned(server.cert.fingerprint));
    config.max_concurrent = 2;
    let client = Client::new(config).unwrap();
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.nodes().await })
        })
        .collect();
    for call in calls {
        guarded(call).await.unwrap().unwrap();
    }
    assert_eq!(server.seen().len(), 8);
    let max = server.state.max_in_flight.load(Ordering::SeqCst);
    assert!((1..=2).contains(&max), "{max} requests in flight at once");
}

#[tokio::test]
async fn pve_messages_come_from_json_or_reason_phrase() {
    let server = start(Arc::new(|seen: &Seen| match seen.path.as_str() {
        "/api2/json/nodes/pve/qemu/100/agent/network-get-interfaces" => Canned {
            status: 500,
            reason: Some("QEMU guest agent is not running".into()),
            body: r#"{"data":null,"message":"QEMU guest agent is not running\n"}"#.into(),
            content_type: Some("application/json;charset=UTF-8".into()),
            delay: None,
        },
        // PVE's auth failures: reason phrase only, empty body, no type.
        _ => Canned {
            status: 401,
            reason: Some("Authentication failed!".into()),
            body: String::new(),
            content_type: None,
            delay: None,
        },
    }))
    .await;
    let client = pinned(&server);
    let err = guarded(client.agent_network_interfaces(&pn("pve"), vmid(100)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AgentNotRunning);
    assert_eq!(err.pve_message(), Some("QEMU guest agent is not running"));
    let err = guarded(client.version()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    assert_eq!(err.pve_message(), Some("Authentication failed!"));
    // The token secret is in no message.
    assert!(!err.to_string().contains("feedfacecafe"));
    assert!(!format!("{err:?}").contains("feedfacecafe"));
}

#[tokio::test]
async fn rate_limit_spaces_requests_without_failing_them() {
    let server = start(version_handler()).await;
    let mut config = config(&server, Trust::Pinned(server.cert.fingerprint));
    config.rate = Some(pve::RateLimit {
        per_second: 200.0,
        burst: 1,
    });
    let client = Client::new(config).unwrap();
    for _ in 0..5 {
        guarded(client.version()).await.unwrap();
    }
    assert_eq!(server.seen().len(), 5);
}
