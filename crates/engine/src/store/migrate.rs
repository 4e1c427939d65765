//! Schema migrations, run by [`super::KvStore::open`] before the store is
//! used. Each is idempotent, so a crash halfway is finished by the next
//! open (the schema version is written last).
//!
//! - 1 → 2: events and manifest records take the shapes the daemon's API
//!   serves (`homestak_api`): an event's `kind: Normal|Warning` and
//!   CamelCase `reason` become `level` and a snake_case `kind`; a
//!   manifest's `last_applied_commit` becomes `last_applied` (its time is the
//!   end of the manifest's last run, the nearest version 1 kept). A version 1
//!   `last_reconcile` carried no reason or mode and is dropped; the next run
//!   writes a new one. Timestamps stay numbers: they read as they are.

use serde::Deserialize;
use serde_json::{Value, json};

use super::Result;
use super::backend::{Backend, Tree};
use homestak_api::{Applied, Event, Kind, Level, ManifestRecord};
use homestak_base::id::NodeName;
use homestak_base::time::Timestamp;

/// Version 1's event, as it was stored.
#[derive(Deserialize)]
struct EventV1 {
    seq: u64,
    #[serde(default)]
    at: Timestamp,
    #[serde(default)]
    manifest: String,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
}

/// Version 1's manifest record, as it was stored.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ManifestV1 {
    last_applied_commit: Option<String>,
    last_reconcile: Option<ReconcileV1>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ReconcileV1 {
    started: Timestamp,
    finished: Timestamp,
}

/// Rewrites version 1 data as version 2.
pub(super) fn v1_to_v2<B: Backend>(backend: &B, encode: impl Fn(&Value) -> Vec<u8>) -> Result<()> {
    let mut rewrites: Vec<(Tree, Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    backend.scan(Tree::Events, &[], false, &mut |k, v| {
        let new = envelope_data(v).and_then(event_v2);
        rewrites.push((Tree::Events, k.to_vec(), new.map(|e| encode(&e))));
        true
    })?;
    backend.scan(Tree::Manifests, &[], false, &mut |k, v| {
        if let Some(new) = envelope_data(v).and_then(manifest_v2) {
            rewrites.push((Tree::Manifests, k.to_vec(), Some(encode(&new))));
        }
        true
    })?;
    for (tree, key, value) in rewrites {
        match value {
            Some(bytes) => backend.insert(tree, &key, &bytes)?,
            // History is advisory: what cannot be read is dropped.
            None => {
                backend.remove(tree, &key)?;
            }
        }
    }
    Ok(())
}

fn envelope_data(bytes: &[u8]) -> Option<Value> {
    let value: Value = serde_json::from_slice(bytes).ok()?;
    value.get("data").cloned()
}

/// A version 2 event for `data`: converted from version 1, or as it is
/// when an interrupted migration already converted it.
fn event_v2(data: Value) -> Option<Value> {
    if serde_json::from_value::<Event>(data.clone()).is_ok() {
        return Some(data);
    }
    let old: EventV1 = serde_json::from_value(data).ok()?;
    let kind: Kind = serde_json::from_value(json!(snake_case(&old.reason))).ok()?;
    let event = Event {
        seq: old.seq,
        at: old.at,
        level: if old.kind == "Warning" {
            Level::Warning
        } else {
            Level::Info
        },
        kind,
        manifest: Some(old.manifest).filter(|m| !m.is_empty()),
        node: old.node.and_then(|n| NodeName::new(n).ok()),
        step: None,
        state: None,
        message: old.message,
    };
    serde_json::to_value(event).ok()
}

/// A version 2 record for version 1 `data`; `None` when it is already
/// version 2 (nothing to rewrite).
fn manifest_v2(data: Value) -> Option<Value> {
    let object = data.as_object()?;
    let v1 = object.contains_key("last_applied_commit")
        || object
            .get("last_reconcile")
            .and_then(Value::as_object)
            .is_some_and(|r| r.contains_key("started"));
    if !v1 {
        return None;
    }
    let old: ManifestV1 = serde_json::from_value(data).unwrap_or_default();
    let at = old
        .last_reconcile
        .map_or(Timestamp::EPOCH, |r| r.finished.max(r.started));
    let record = ManifestRecord {
        generation: 0,
        last_applied: old
            .last_applied_commit
            .map(|revision| Applied { revision, at }),
        last_reconcile: None,
    };
    serde_json::to_value(record).ok()
}

fn snake_case(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_events_take_the_new_shape() {
        let old = json!({"seq": 7, "at": 1_700_000_000_000u64, "manifest": "m", "node": "vm1",
            "kind": "Warning", "reason": "TaskFailed", "message": "create_vm: task failed"});
        let new: Event = serde_json::from_value(event_v2(old).unwrap()).unwrap();
        assert_eq!(new.seq, 7);
        assert_eq!(new.level, Level::Warning);
        assert_eq!(new.kind, Kind::TaskFailed);
        assert_eq!(new.manifest.as_deref(), Some("m"));
        assert_eq!(new.at, Timestamp::from_millis(1_700_000_000_000));
        // Converted once, it stays as it is.
        let again = event_v2(serde_json::to_value(&new).unwrap()).unwrap();
        assert_eq!(serde_json::from_value::<Event>(again).unwrap(), new);
        // A reason no kind matches is dropped.
        assert!(event_v2(json!({"seq": 1, "reason": "Mystery"})).is_none());
    }

    #[test]
    fn version_1_manifest_records_keep_their_applied_commit() {
        let old = json!({"last_applied_commit": "abc123",
            "last_reconcile": {"started": 1000, "finished": 5000, "outcome": "partial", "summary": "x"}});
        let new: ManifestRecord = serde_json::from_value(manifest_v2(old).unwrap()).unwrap();
        let applied = new.last_applied.unwrap();
        assert_eq!(applied.revision, "abc123");
        assert_eq!(applied.at, Timestamp::from_millis(5000));
        assert!(new.last_reconcile.is_none());
        assert!(manifest_v2(json!({"last_applied": null})).is_none());
        assert_eq!(snake_case("ImageJoined"), "image_joined");
    }
}
