//! A parent tier's view of its child: subtrees handed over and destroyed,
//! followed by generation, through the typed client against a fake engine.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::support::*;
use homestak_api::v1::{ManifestStatus, SubtreeRequest};
use homestak_api::{Client, Kind, Mode, Outcome, Reason};
use homestak_core::site::Secret;
use reqwest::Method;
use serde_json::{Value, json};

/// A subtree named `name` with one VM (`vm` names it, so contents differ).
fn subtree(name: &str, vm: &str) -> SubtreeRequest {
    SubtreeRequest {
        host: "father".parse().unwrap(),
        manifest: json!({"schema_version": 2, "name": name, "nodes": [
            {"name": vm, "type": "vm"}
        ]}),
    }
}

struct Tier {
    d: Running,
    engine: Arc<FakeEngine>,
    calls: tokio::sync::mpsc::UnboundedReceiver<Call>,
    writer: Client,
    reader: Client,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// A daemon whose startup run (of the git-managed `demo`) is over.
async fn tier() -> Tier {
    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    site_config(site.path());
    let (engine, mut calls) = FakeEngine::new();
    let d = start(config(site.path(), state.path()), engine.clone()).await;
    assert_eq!(next_call(&mut calls).await.manifest, "demo");
    // Over, not only called: a test may gate the runs that follow.
    eventually("demo's startup run on record", || {
        engine
            .store
            .get_manifest("demo")
            .unwrap()
            .is_some_and(|r| r.last_reconcile.is_some())
    })
    .await;
    let writer = Client::new(&d.url, d.fingerprint, &Secret::new(WRITE_TOKEN)).unwrap();
    let reader = Client::new(&d.url, d.fingerprint, &Secret::new(READ_TOKEN)).unwrap();
    Tier {
        d,
        engine,
        calls,
        writer,
        reader,
        _dirs: (site, state),
    }
}

impl Tier {
    /// The manifest's records (no PVE look).
    async fn records(&self, name: &str) -> Option<ManifestStatus> {
        self.reader.manifest_status(name, false).await.unwrap()
    }

    /// Waits for a finished run at generation `at_least` or later.
    async fn run_at(&self, name: &str, at_least: u64) -> ManifestStatus {
        for _ in 0..600 {
            if let Some(status) = self.records(name).await
                && status
                    .record
                    .last_reconcile
                    .as_ref()
                    .is_some_and(|l| l.generation >= at_least)
            {
                return status;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("no run of {name} at generation {at_least}");
    }

    /// Waits until the daemon no longer holds `name` (its status is 404).
    async fn gone(&self, name: &str) {
        for _ in 0..600 {
            if self.records(name).await.is_none() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("{name} was never forgotten");
    }

    fn kinds(&self) -> Vec<Kind> {
        self.d
            .events
            .since(0, usize::MAX)
            .iter()
            .map(|e| e.kind)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_answer_increasing_generations_and_runs_keep_the_one_they_started_with() {
    let mut t = tier().await;
    t.engine.gated.store(true, Ordering::SeqCst);

    let first = t.writer.put_subtree(&subtree("child", "a")).await.unwrap();
    assert_eq!(first.generation, 1);
    let call = next_call(&mut t.calls).await;
    assert_eq!((call.manifest.as_str(), call.mode), ("child", Mode::Apply));
    assert_eq!((call.reason, call.generation), (Reason::Subtree, 1));

    // A new version arrives while the first run is under way.
    let second = t.writer.put_subtree(&subtree("child", "b")).await.unwrap();
    assert_eq!(second.generation, 2);
    assert_ne!(second.revision, first.revision);
    t.engine.gate.add_permits(1);
    let status = t.run_at("child", 1).await;
    let last = status.record.last_reconcile.as_ref().unwrap();
    // The run started at generation 1 says so: a parent waiting for 2
    // keeps waiting.
    assert_eq!((last.generation, status.record.generation), (1, 2));
    assert_eq!(last.revision.as_deref(), Some(first.revision.as_str()));

    let call = next_call(&mut t.calls).await;
    assert_eq!(
        (call.generation, call.revision.as_str()),
        (2, second.revision.as_str())
    );
    t.engine.gate.add_permits(1);
    let status = t.run_at("child", 2).await;
    let last = status.record.last_reconcile.as_ref().unwrap();
    assert_eq!(last.outcome, Outcome::Converged);
    assert_eq!(last.revision.as_deref(), Some(second.revision.as_str()));
    assert_eq!(
        status.record.last_applied.as_ref().unwrap().revision,
        second.revision
    );
    assert!(!status.destroying);
    t.d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_subtree_is_destroyed_then_forgotten() {
    let mut t = tier().await;
    let put = t.writer.put_subtree(&subtree("child", "a")).await.unwrap();
    next_call(&mut t.calls).await;
    t.run_at("child", put.generation).await;

    let deleted = t.writer.delete_subtree("child").await.unwrap();
    assert_eq!(deleted.name, "child");
    assert_eq!(deleted.generation, put.generation + 1);
    assert!(deleted.queued);
    let call = next_call(&mut t.calls).await;
    assert_eq!(call.manifest, "child");
    assert_eq!(
        (call.mode, call.generation),
        (Mode::Destroy, deleted.generation)
    );

    t.gone("child").await;
    let (code, text) = t.d.get("/v1/status?manifest=child", Some(READ_TOKEN)).await;
    assert_eq!((code, error_code(&text)), (404, "E200".into()));
    assert_eq!(t.engine.store.get_subtree("child").unwrap(), None);
    // The destroy run is on record; the generation goes on from there.
    let kept = t.engine.store.get_manifest("child").unwrap().unwrap();
    let last = kept.last_reconcile.unwrap();
    assert_eq!(
        (last.mode, last.outcome),
        (Mode::Destroy, Outcome::Converged)
    );
    assert_eq!(last.generation, deleted.generation);
    let kinds = t.kinds();
    for kind in [Kind::SubtreeDestroyRequested, Kind::SubtreeForgotten] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }

    // Gone means gone: deleting it again is not found.
    match t.writer.delete_subtree("child").await {
        Err(err) => assert_eq!((err.status(), err.code()), (Some(404), Some("E200"))),
        Ok(answer) => panic!("deleted twice: {answer:?}"),
    }
    // Handed over again, it starts after the generations it had.
    let again = t.writer.put_subtree(&subtree("child", "a")).await.unwrap();
    assert_eq!(again.generation, deleted.generation + 1);
    let call = next_call(&mut t.calls).await;
    assert_eq!(
        (call.mode, call.generation),
        (Mode::Apply, again.generation)
    );
    t.d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_destroy_is_kept_reported_and_retried() {
    let mut t = tier().await;
    t.writer.put_subtree(&subtree("child", "a")).await.unwrap();
    next_call(&mut t.calls).await;
    t.engine.fail_destroy.store(true, Ordering::SeqCst);

    let deleted = t.writer.delete_subtree("child").await.unwrap();
    assert_eq!(next_call(&mut t.calls).await.mode, Mode::Destroy);
    let status = t.run_at("child", deleted.generation).await;
    let last = status.record.last_reconcile.as_ref().unwrap();
    assert_eq!((last.mode, last.outcome), (Mode::Destroy, Outcome::Failed));
    assert_eq!(last.generation, deleted.generation);
    assert_eq!(last.message.as_deref(), Some("cannot delete a VM"));
    assert!(status.destroying, "{status:?}");
    assert!(
        t.engine
            .store
            .get_subtree("child")
            .unwrap()
            .unwrap()
            .destroy
    );

    // A later DELETE tries again, at a new generation.
    let retried = t.writer.delete_subtree("child").await.unwrap();
    assert_eq!(retried.generation, deleted.generation + 1);
    let call = next_call(&mut t.calls).await;
    assert_eq!(
        (call.mode, call.generation),
        (Mode::Destroy, retried.generation)
    );
    let status = t.run_at("child", retried.generation).await;
    assert_eq!(
        status.record.last_reconcile.as_ref().unwrap().outcome,
        Outcome::Failed
    );

    // A PUT of the same name replaces it: no longer being destroyed.
    let put = t.writer.put_subtree(&subtree("child", "b")).await.unwrap();
    assert_eq!(put.generation, retried.generation + 1);
    let call = next_call(&mut t.calls).await;
    assert_eq!((call.mode, call.generation), (Mode::Apply, put.generation));
    let status = t.run_at("child", put.generation).await;
    assert!(!status.destroying);
    assert_eq!(
        status.record.last_reconcile.as_ref().unwrap().outcome,
        Outcome::Converged
    );
    assert!(
        !t.engine
            .store
            .get_subtree("child")
            .unwrap()
            .unwrap()
            .destroy
    );
    t.d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_resumes_a_pending_destroy() {
    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    site_config(site.path());
    let (engine, mut calls) = FakeEngine::new();
    let d = start(config(site.path(), state.path()), engine.clone()).await;
    next_call(&mut calls).await;
    let writer = Client::new(&d.url, d.fingerprint, &Secret::new(WRITE_TOKEN)).unwrap();
    writer.put_subtree(&subtree("child", "a")).await.unwrap();
    next_call(&mut calls).await;
    engine.fail_destroy.store(true, Ordering::SeqCst);
    let deleted = writer.delete_subtree("child").await.unwrap();
    assert_eq!(next_call(&mut calls).await.mode, Mode::Destroy);
    eventually("the failed destroy on record", || {
        engine
            .store
            .get_manifest("child")
            .unwrap()
            .and_then(|r| r.last_reconcile)
            .is_some_and(|l| l.generation == deleted.generation)
    })
    .await;
    d.stop().await.unwrap();

    // The same store, a new process: the destroy is still asked for.
    engine.fail_destroy.store(false, Ordering::SeqCst);
    let d = start(config(site.path(), state.path()), engine.clone()).await;
    let mut resumed = None;
    for _ in 0..2 {
        let call = next_call(&mut calls).await;
        if call.manifest == "child" {
            resumed = Some(call);
        }
    }
    let resumed = resumed.expect("the subtree ran at startup");
    assert_eq!(
        (resumed.mode, resumed.reason),
        (Mode::Destroy, Reason::Startup)
    );
    assert_eq!(resumed.generation, deleted.generation);
    let reader = Client::new(&d.url, d.fingerprint, &Secret::new(READ_TOKEN)).unwrap();
    eventually("the subtree forgotten", || {
        engine.store.get_subtree("child").unwrap().is_none()
    })
    .await;
    assert!(
        reader
            .manifest_status("child", false)
            .await
            .unwrap()
            .is_none()
    );
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_during_a_destroy_run_is_not_forgotten() {
    let mut t = tier().await;
    let first = t.writer.put_subtree(&subtree("child", "a")).await.unwrap();
    next_call(&mut t.calls).await;
    // Gated only once that run is over (it checks the gate after its call).
    t.run_at("child", first.generation).await;
    t.engine.gated.store(true, Ordering::SeqCst);

    let deleted = t.writer.delete_subtree("child").await.unwrap();
    assert_eq!(next_call(&mut t.calls).await.mode, Mode::Destroy);
    // The parent changes its mind while the destroy runs.
    let put = t.writer.put_subtree(&subtree("child", "b")).await.unwrap();
    assert_eq!(put.generation, deleted.generation + 1);
    t.engine.gate.add_permits(1);
    let call = next_call(&mut t.calls).await;
    assert_eq!((call.mode, call.generation), (Mode::Apply, put.generation));
    t.engine.gate.add_permits(1);
    let status = t.run_at("child", put.generation).await;
    assert!(!status.destroying);
    assert_eq!(
        status
            .record
            .last_reconcile
            .as_ref()
            .unwrap()
            .revision
            .as_deref(),
        Some(put.revision.as_str())
    );
    assert!(!t.kinds().contains(&Kind::SubtreeForgotten));
    t.d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_refuses_what_it_may_not_destroy() {
    let mut t = tier().await;
    t.writer.put_subtree(&subtree("child", "a")).await.unwrap();
    next_call(&mut t.calls).await;

    let delete = |path: &'static str, token: &'static str| {
        let d = &t.d;
        async move { d.send(Method::DELETE, path, Some(token), None).await }
    };
    for (path, token, status, code) in [
        // Not held here.
        ("/v1/subtree/ghost", WRITE_TOKEN, 404, "E200"),
        // The site-config's own manifest.
        ("/v1/subtree/demo", WRITE_TOKEN, 409, "E103"),
        // A read token may look, not destroy.
        ("/v1/subtree/child", READ_TOKEN, 403, "E302"),
        ("/v1/subtree/-x", WRITE_TOKEN, 400, "E101"),
    ] {
        let (got, text) = delete(path, token).await;
        assert_eq!(
            (got, error_code(&text)),
            (status, code.into()),
            "{path}: {text}"
        );
    }
    // Not a name: never looked up. Sent byte for byte (a URL library
    // would resolve `%2e%2e`).
    let bearer = format!("Bearer {WRITE_TOKEN}");
    for path in ["/v1/subtree/%2e%2e", "/v1/subtree/a%2Fb", "/v1/subtree/.."] {
        let (got, text) =
            raw_request(t.d.addr, t.d.fingerprint, "DELETE", path, Some(&bearer)).await;
        assert_eq!(got, 400, "{path}: {text}");
        assert!(
            t.engine
                .store
                .get_subtree("child")
                .unwrap()
                .is_some_and(|s| !s.destroy)
        );
    }
    // The path names a subtree, whatever the method; only DELETE is served.
    let (got, text) =
        t.d.send(Method::GET, "/v1/subtree/child", Some(READ_TOKEN), None)
            .await;
    assert_eq!((got, error_code(&text)), (405, "E102".into()));
    // A PUT must name its subtree so a DELETE can.
    let (got, text) =
        t.d.send(
            Method::PUT,
            "/v1/subtree",
            Some(WRITE_TOKEN),
            Some(json!({"host": "father", "manifest": {"schema_version": 2,
                "name": "two words", "nodes": [{"name": "a", "type": "vm"}]}})),
        )
        .await;
    assert_eq!((got, error_code(&text)), (400, "E101".into()), "{text}");
    // A host that is no node name is refused as the body, naming the field.
    let (got, text) =
        t.d.send(
            Method::PUT,
            "/v1/subtree",
            Some(WRITE_TOKEN),
            Some(json!({"host": "fa ther", "manifest": {"schema_version": 2,
                "name": "child", "nodes": [{"name": "a", "type": "vm"}]}})),
        )
        .await;
    assert_eq!((got, error_code(&text)), (400, "E101".into()), "{text}");
    let message = serde_json::from_str::<Value>(&text).unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.starts_with("Invalid request body: host: 'fa ther' is not a valid node name"),
        "{message}"
    );

    // The typed client tells a refused token from a missing daemon.
    let err = t.reader.delete_subtree("child").await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(403), Some("E302")));
    assert!(t.engine.store.get_subtree("child").unwrap().is_some());
    assert!(t.records("child").await.is_some_and(|s| !s.destroying));
    let (_, metrics) = t.d.get("/metrics", Some(READ_TOKEN)).await;
    assert!(
        metrics.contains("homestak_http_requests_total{route=\"v1_subtree_delete\",code=\"404\"}"),
        "{metrics}"
    );
    t.d.stop().await.unwrap();
}

fn error_code(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.pointer("/error/code")?.as_str().map(str::to_string))
        .unwrap_or_default()
}
