//! The daemon state an older homestak kept beside the store,
//! `<state>/controller.json` (the last applied revision and last run of
//! each manifest, and the subtrees parent tiers handed over). At start it
//! is imported into the store once — what the store already has wins —
//! and renamed `controller.json.imported`, kept for reference.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use homestak_api::{ManifestRecord, Subtree};
use homestak_engine::store::{self, Durability, Store};
use serde::Deserialize;

/// The file name, in the state directory.
pub const FILE: &str = "controller.json";

/// Importing failed; the daemon does not start rather than forget a
/// subtree.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read it; move it aside to start without what it holds")]
    Read(#[source] std::io::Error),
    #[error("it is not the state file of an older homestak; move it aside")]
    Parse(#[source] serde_json::Error),
    #[error("cannot write what it holds to the store")]
    Store(#[source] store::Error),
    #[error("cannot rename it to {}", to.display())]
    Rename {
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Deserialize)]
struct StateFile {
    #[serde(default)]
    manifests: BTreeMap<String, ManifestRecord>,
    #[serde(default)]
    subtrees: BTreeMap<String, Subtree>,
}

/// Imports `<state>/controller.json` into `store`, if it is there.
/// Returns whether there was one.
pub fn import(state: &Path, store: &dyn Store) -> Result<bool, Error> {
    let path = state.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::Read(e)),
    };
    let old: StateFile = serde_json::from_slice(&bytes).map_err(Error::Parse)?;
    for (name, record) in &old.manifests {
        store
            .update_manifest(name, Durability::Lazy, &mut |kept| {
                kept.last_applied = kept.last_applied.take().or(record.last_applied.clone());
                kept.last_reconcile = kept.last_reconcile.take().or(record.last_reconcile.clone());
            })
            .map_err(Error::Store)?;
    }
    let kept: Vec<String> = store
        .list_subtrees()
        .map_err(Error::Store)?
        .into_iter()
        .map(|s| s.name)
        .collect();
    for subtree in old.subtrees.values() {
        if !kept.contains(&subtree.name) {
            store
                .put_subtree(subtree, Durability::Lazy)
                .map_err(Error::Store)?;
        }
    }
    store.flush().map_err(Error::Store)?;
    let to = state.join(format!("{FILE}.imported"));
    std::fs::rename(&path, &to).map_err(|source| Error::Rename { to, source })?;
    tracing::info!(
        manifests = old.manifests.len(),
        subtrees = old.subtrees.len(),
        "imported {FILE} into the store"
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use homestak_api::{Applied, Mode, Outcome, Reason};
    use homestak_base::time::Timestamp;

    /// What homestak wrote before the store held the daemon's state.
    const OLD: &str = r#"{
      "schema_version": 1,
      "manifests": {
        "demo": {
          "last_applied": {"revision": "abc123", "at": "2026-01-01T00:00:00Z"},
          "last_reconcile": {"revision": "abc123", "at": "2026-01-01T00:00:00Z",
            "reason": "commit", "mode": "apply", "outcome": "converged", "duration_ms": 812,
            "changed_nodes": 1, "drifted_nodes": 0}
        }
      },
      "subtrees": {
        "inner": {"name": "inner", "host": "pve", "manifest": {"schema_version": 2},
          "revision": "subtree:1", "received_at": "2026-01-02T00:00:00Z", "from": "parent"}
      }
    }"#;

    #[test]
    fn the_old_state_moves_into_the_store_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), OLD).unwrap();
        let store = store::memory();
        // The store's own record of `demo` wins over the file's.
        let newer = Applied {
            revision: "def456".into(),
            at: Timestamp::from_millis(1),
        };
        store
            .update_manifest("demo", Durability::Lazy, &mut |r| {
                r.last_applied = Some(newer.clone())
            })
            .unwrap();
        assert!(import(dir.path(), &store).unwrap());
        let demo = store.get_manifest("demo").unwrap().unwrap();
        assert_eq!(demo.last_applied, Some(newer));
        let last = demo.last_reconcile.unwrap();
        assert_eq!(
            (last.reason, last.mode, last.outcome),
            (Reason::Commit, Mode::Apply, Outcome::Converged)
        );
        let subtrees = store.list_subtrees().unwrap();
        assert_eq!(subtrees.len(), 1);
        assert_eq!(subtrees[0].host, "pve");
        assert!(!dir.path().join(FILE).exists());
        assert!(dir.path().join("controller.json.imported").exists());
        // Nothing left to import.
        assert!(!import(dir.path(), &store).unwrap());
    }

    #[test]
    fn a_damaged_file_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "{not json").unwrap();
        assert!(matches!(
            import(dir.path(), &store::memory()),
            Err(Error::Parse(_))
        ));
    }
}
