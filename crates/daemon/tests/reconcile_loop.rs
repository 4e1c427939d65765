//! The GitOps loop against a fake engine: commits converge (and only
//! commits, by default), the working-tree mode, drift policy, suspension,
//! resync, graceful shutdown with a reconcile in flight, the lease, and
//! the state directory's permissions.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::*;
use homestak_api::{Mode, Reason};
use homestak_daemon::server::{ApiTokenSource, Error, RepoToken};
use homestak_daemon::{Daemon, source};
use reqwest::Method;
use serde_json::Value;

async fn metric(d: &Running, line_prefix: &str) -> f64 {
    let (_, text) = d.get("/metrics", Some(READ_TOKEN)).await;
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn status(d: &Running) -> Value {
    let (code, text) = d.get("/v1/status", Some(READ_TOKEN)).await;
    assert_eq!(code, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

fn queued_events(d: &Running) -> usize {
    d.events
        .since(0, usize::MAX)
        .iter()
        .filter(|e| e.kind == homestak_api::Kind::ReconcileQueued)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_committed_changes_converge_by_default() {
    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    site_config(site.path());
    let mut config = config(site.path(), state.path());
    config.watch = true;
    config.debounce = Duration::from_millis(100);
    let (engine, mut calls) = FakeEngine::new();
    let d = start(config, engine.clone()).await;
    let first = next_call(&mut calls).await;
    assert_eq!(first.reason, Reason::Startup);

    // An uncommitted edit: seen, checked, not applied.
    let checks = metric(&d, "homestak_source_checks_total{result=\"unchanged\"}").await;
    let queued = queued_events(&d);
    std::fs::write(
        site.path().join("manifests/demo.yaml"),
        DEMO_MANIFEST.replace("one VM", "edited"),
    )
    .unwrap();
    for _ in 0..1200 {
        if metric(&d, "homestak_source_checks_total{result=\"unchanged\"}").await > checks {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        metric(&d, "homestak_source_checks_total{result=\"unchanged\"}").await > checks,
        "the edit was never checked"
    );
    assert_eq!(
        queued_events(&d),
        queued,
        "an uncommitted edit queued a reconcile"
    );
    assert!(calls.try_recv().is_err());

    // The commit converges, at the new revision.
    git(site.path(), &["commit", "-q", "-am", "edit demo"]);
    let head = git(site.path(), &["rev-parse", "HEAD"]);
    let call = next_call(&mut calls).await;
    assert_eq!(call.reason, Reason::Commit);
    assert_eq!(call.revision, head);
    assert_eq!(call.mode, Mode::Apply);
    eventually("last_applied at the new commit", || {
        engine
            .store
            .get_manifest("demo")
            .unwrap()
            .and_then(|r| r.last_applied)
            .is_some_and(|a| a.revision == head)
    })
    .await;
    let s = status(&d).await;
    assert_eq!(s["manifests"][0]["last_applied"]["revision"], head.as_str());
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn working_tree_mode_converges_saved_files() {
    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    site_config(site.path());
    let mut config = config(site.path(), state.path());
    config.watch = true;
    config.debounce = Duration::from_millis(100);
    config.source = source::Mode::WorkingTree;
    let (engine, mut calls) = FakeEngine::new();
    let d = start(config, engine).await;
    let first = next_call(&mut calls).await;
    assert!(
        first.revision.starts_with("worktree:"),
        "{}",
        first.revision
    );
    std::fs::write(
        site.path().join("manifests/demo.yaml"),
        DEMO_MANIFEST.replace("one VM", "edited"),
    )
    .unwrap();
    let call = next_call(&mut calls).await;
    assert_eq!(call.reason, Reason::Commit);
    assert_ne!(call.revision, first.revision);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_policy_suspend_and_resync() {
    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    site_config(site.path());
    std::fs::write(
        site.path().join("manifests/other.yaml"),
        DEMO_MANIFEST.replace("name: demo", "name: other"),
    )
    .unwrap();
    std::fs::write(
        site.path().join("controller.yaml"),
        "host: father\nmanifests:\n  demo:\n    drift: report\n  other:\n    suspend: true\n",
    )
    .unwrap();
    git(site.path(), &["add", "-A"]);
    git(site.path(), &["commit", "-q", "-m", "policies"]);
    let mut config = config(site.path(), state.path());
    config.resync = Duration::from_millis(200);
    let (engine, mut calls) = FakeEngine::new();
    let d = start(config, engine.clone()).await;

    // A revision never applied is applied, whatever the policy.
    let call = next_call(&mut calls).await;
    assert_eq!((call.manifest.as_str(), call.mode), ("demo", Mode::Apply));
    // Then resyncs only report: drift appears out of band.
    engine.drifted.store(2, Ordering::SeqCst);
    let call = loop {
        let call = next_call(&mut calls).await;
        if call.reason == Reason::Resync {
            break call;
        }
    };
    assert_eq!(call.manifest, "demo");
    assert_eq!(call.mode, Mode::ReportOnly);
    let s = loop {
        let s = status(&d).await;
        if s["manifests"][0]["last_reconcile"]["outcome"] == "drifted" {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let demo = &s["manifests"][0];
    assert_eq!(demo["drift"], "report");
    assert_eq!(demo["in_sync"], false);
    assert_eq!(demo["last_reconcile"]["drifted_nodes"], 2);
    assert_eq!(demo["last_reconcile"]["mode"], "report_only");
    let other = &s["manifests"][1];
    assert_eq!(
        (other["name"].as_str(), other["suspended"].as_bool()),
        (Some("other"), Some(true))
    );
    assert_eq!(
        metric(&d, "homestak_drifted_nodes{manifest=\"demo\"}").await,
        2.0
    );
    // The apply and the drift report each left when they ended.
    let last = |outcome: &str| {
        format!(
            "homestak_last_reconcile_timestamp_seconds{{manifest=\"demo\",outcome=\"{outcome}\"}}"
        )
    };
    let converged = metric(&d, &last("converged")).await;
    let drifted = metric(&d, &last("drifted")).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        now - 600.0 < converged && converged <= drifted && drifted <= now,
        "converged {converged}, drifted {drifted}, now {now}"
    );
    assert_eq!(metric(&d, &last("failed")).await, 0.0, "no failed run");
    assert!(
        engine
            .calls
            .lock()
            .unwrap()
            .iter()
            .all(|c| c.manifest != "other"),
        "a suspended manifest was reconciled"
    );
    let (code, text) = d
        .send(
            Method::POST,
            "/v1/reconcile?manifest=other",
            Some(WRITE_TOKEN),
            None,
        )
        .await;
    assert_eq!(code, 409, "{text}");
    // An explicit trigger applies.
    let (code, _) = d
        .send(
            Method::POST,
            "/v1/reconcile?manifest=demo",
            Some(WRITE_TOKEN),
            None,
        )
        .await;
    assert_eq!(code, 202);
    loop {
        let call = next_call(&mut calls).await;
        if call.reason == Reason::Api {
            assert_eq!(call.mode, Mode::Apply);
            break;
        }
    }
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_manifest_is_reported_not_applied() {
    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    site_config(site.path());
    std::fs::write(
        site.path().join("manifests/demo.yaml"),
        "schema_version: 2\nname: demo\nnodes:\n  - name: a\n    type: vm\n    parent: ghost\n",
    )
    .unwrap();
    git(site.path(), &["commit", "-q", "-am", "broken"]);
    let (engine, _calls) = FakeEngine::new();
    let d = start(config(site.path(), state.path()), engine.clone()).await;
    let s = loop {
        let s = status(&d).await;
        if s["manifests"][0]["last_reconcile"]["outcome"] == "failed" {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let demo = &s["manifests"][0];
    assert!(
        demo["error"].as_str().unwrap().contains("ghost"),
        "{demo:#}"
    );
    assert!(engine.calls.lock().unwrap().is_empty());
    assert_eq!(
        metric(&d, "homestak_reconciles_total{result=\"failed\"}").await,
        1.0
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_reconcile_in_flight_reach_a_safe_point() {
    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    site_config(site.path());
    let (engine, mut calls) = FakeEngine::new();
    engine.hold.store(true, Ordering::SeqCst);
    let d = start(config(site.path(), state.path()), engine.clone()).await;
    next_call(&mut calls).await;
    // The reconcile is in flight and waits for the shutdown signal.
    d.stop().await.unwrap();
    assert!(engine.interrupted_seen.load(Ordering::SeqCst));
    // The store has the outcome, the lease is released, and the temporary
    // repos are removed.
    let record = engine.store.get_manifest("demo").unwrap().unwrap();
    assert_eq!(
        record.last_reconcile.unwrap().outcome,
        homestak_api::Outcome::Interrupted
    );
    assert!(record.last_applied.is_none());
    assert_eq!(engine.store.get_lease(LEASE).unwrap(), None);
    let leftovers: Vec<_> = std::fs::read_dir(state.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("repos."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_reconciler_per_state_directory() {
    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    site_config(site.path());
    let (engine, _calls) = FakeEngine::new();
    let d = start(config(site.path(), state.path()), engine.clone()).await;
    let err = Daemon::start(config(site.path(), state.path()), engine.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Lease(homestak_daemon::lease::Error::Held { .. })
        ),
        "{err:?}"
    );
    let text = homestak_daemon::reconciler::error_chain(&err);
    assert!(
        text.contains("another reconciler in this process holds the lease"),
        "{text}"
    );
    d.stop().await.unwrap();
    assert_eq!(engine.store.get_lease(LEASE).unwrap(), None);
    let again = start(config(site.path(), state.path()), engine).await;
    again.stop().await.unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_directory_and_generated_secrets_are_private() {
    let site = tempfile::tempdir().unwrap();
    let parent = tempfile::tempdir().unwrap();
    let state = parent.path().join("nested/state");
    site_config(site.path());
    let mut config = config(site.path(), &state);
    config.repo_token = RepoToken::Generated;
    config.api_tokens = ApiTokenSource::Default;
    let (engine, _calls) = FakeEngine::new();
    let d = start(config.clone(), Arc::clone(&engine) as _).await;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("tls")), 0o700);
    for file in [
        "tls/daemon.key",
        "api-token",
        "api-tokens.yaml",
        "repo-token",
        "daemon.json",
    ] {
        let path = state.join(file);
        assert_eq!(mode(&path), 0o600, "{file}");
    }
    let api_token = std::fs::read_to_string(state.join("api-token")).unwrap();
    let tokens_file = std::fs::read_to_string(state.join("api-tokens.yaml")).unwrap();
    assert!(
        !tokens_file.contains(api_token.trim()),
        "only a digest is kept"
    );
    assert_eq!(d.get("/v1/status", Some(api_token.trim())).await.0, 200);
    let repo_token = std::fs::read_to_string(state.join("repo-token")).unwrap();
    let auth = format!("Bearer {}", repo_token.trim());
    assert_eq!(d.raw("/site-config.git/HEAD", Some(&auth)).await.0, 200);
    let fingerprint = d.fingerprint;
    d.stop().await.unwrap();
    assert_eq!(engine.store.get_lease(LEASE).unwrap(), None);
    assert!(!state.join("daemon.json").exists(), "removed at stop");

    // A restart reuses the certificate (clients pinned it) and the tokens.
    let d = start(config, engine).await;
    assert_eq!(d.fingerprint, fingerprint);
    assert_eq!(d.get("/v1/status", Some(api_token.trim())).await.0, 200);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chosen_state_directory_is_left_as_its_owner_made_it() {
    use std::os::unix::fs::PermissionsExt;
    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    site_config(site.path());
    std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Entries named like ours that homestak did not make.
    std::fs::create_dir(state.path().join("repos.backup")).unwrap();
    std::fs::write(state.path().join("repos.backup/notes"), "mine").unwrap();
    std::fs::write(state.path().join("repos.list"), "mine").unwrap();
    let (engine, _calls) = FakeEngine::new();
    let d = start(config(site.path(), state.path()), Arc::clone(&engine) as _).await;
    assert_eq!(
        mode(state.path()),
        0o755,
        "a directory the user chose is not chmodded"
    );
    // The clones are in a directory homestak made and marked.
    let ours: Vec<_> = std::fs::read_dir(state.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join(homestak_daemon::repos::MARKER).is_file())
        .collect();
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!(mode(&ours[0]), 0o700);
    d.stop().await.unwrap();
    assert!(!ours[0].exists(), "the clones go at stop");
    // A restart (and its clean-up of stale clones) spares them too.
    let d = start(config(site.path(), state.path()), engine).await;
    d.stop().await.unwrap();
    assert_eq!(
        std::fs::read_to_string(state.path().join("repos.backup/notes")).unwrap(),
        "mine"
    );
    assert!(state.path().join("repos.list").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_directory_inside_the_site_config_is_refused() {
    // Its tokens and keys would be in the served snapshot.
    let site = tempfile::tempdir().unwrap();
    site_config(site.path());
    let state = site.path().join(".homestak");
    let (engine, _calls) = FakeEngine::new();
    let err = Daemon::start(config(site.path(), &state), engine)
        .await
        .map(drop)
        .unwrap_err();
    let text = homestak_daemon::reconciler::error_chain(&err);
    assert!(
        text.contains("inside") && text.contains("--state-dir"),
        "{text}"
    );
    assert!(!state.join("api-token").exists(), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_engine_fails_the_job_not_the_daemon() {
    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    site_config(site.path());
    let (engine, mut calls) = FakeEngine::new();
    engine.panic_next.store(true, Ordering::SeqCst);
    let d = start(config(site.path(), state.path()), engine.clone()).await;
    next_call(&mut calls).await;
    let s = loop {
        let s = status(&d).await;
        if s["manifests"][0]["last_reconcile"]["outcome"] == "failed" {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let message = s["manifests"][0]["last_reconcile"]["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("panicked"), "{message}");
    // The worker lives on.
    let (code, _) = d
        .send(
            Method::POST,
            "/v1/reconcile?manifest=demo",
            Some(WRITE_TOKEN),
            None,
        )
        .await;
    assert_eq!(code, 202);
    assert_eq!(next_call(&mut calls).await.reason, Reason::Api);
    d.stop().await.unwrap();
}

/// The startup run and every Nth resync read every VM's config; the
/// other resyncs take the fast path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_third_resync_is_deep() {
    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    site_config(site.path());
    let mut config = config(site.path(), state.path());
    config.resync = Duration::from_millis(100);
    config.deep_every = 3;
    let (engine, mut calls) = FakeEngine::new();
    let d = start(config, engine.clone()).await;

    let first = next_call(&mut calls).await;
    assert_eq!(first.reason, Reason::Startup);
    assert!(first.deep, "the startup run reads deep: {first:?}");
    let mut resyncs = Vec::new();
    while resyncs.len() < 6 {
        let call = next_call(&mut calls).await;
        if call.reason == Reason::Resync {
            resyncs.push(call.deep);
        }
    }
    assert_eq!(resyncs, [false, false, true, false, false, true]);
    d.stop().await.unwrap();
}
