//! A parent tier's view of its child: subtrees handed over and followed
//! by generation, through the typed client against a fake engine.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::support::*;
use homestak_api::v1::{ManifestStatus, SubtreeRequest};
use homestak_api::{Client, Mode, Outcome, Reason};
use homestak_core::site::Secret;
use serde_json::json;

/// A subtree named `name` with one VM (`vm` names it, so contents differ).
fn subtree(name: &str, vm: &str) -> SubtreeRequest {
    SubtreeRequest {
        host: "father".into(),
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

/// A daemon whose startup run (of the git-managed `demo`) is done.
async fn tier() -> Tier {
    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    site_config(site.path());
    let (engine, mut calls) = FakeEngine::new();
    let d = start(config(site.path(), state.path()), engine.clone()).await;
    assert_eq!(next_call(&mut calls).await.manifest, "demo");
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
    t.d.stop().await.unwrap();
}
