//! What the daemon itself keeps across restarts, behind a small trait so
//! the sled store (`homestak_engine::store`) can take over:
//! - the reconciler lease: one reconciler per tier;
//! - per manifest, the last applied revision and the last reconcile;
//! - subtrees handed over by a parent tier.
//!
//! [`FileStore`] is the implementation for now: an exclusive `flock` on
//! `<state>/reconciler.lock` (released by the kernel if the process dies,
//! so a crash never leaves a stale lease) and a JSON file
//! `<state>/controller.json` rewritten atomically on every change.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::engine::{Mode, Outcome, Reason};
use super::state_dir::{self, SECRET_MODE};

/// Version of `controller.json`.
const SCHEMA_VERSION: u32 = 1;

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another reconciler holds the lease for this state directory.
    #[error(
        "another homestak reconciler holds the lease {} ({holder}); stop it, or give this one its own --state-dir",
        path.display()
    )]
    LeaseHeld { path: PathBuf, holder: String },
    /// The lock file could not be opened or locked.
    #[error("cannot take the reconciler lease {}", path.display())]
    Lease {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The state file is unreadable or of another version.
    #[error("cannot read daemon state {}; move it aside to start afresh", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The state file could not be written.
    #[error("cannot save daemon state")]
    Write {
        #[source]
        source: state_dir::Error,
    },
}

/// The last revision of a manifest that converged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    pub revision: String,
    /// RFC 3339.
    pub at: String,
}

/// The last reconcile of a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastReconcile {
    pub revision: String,
    pub at: String,
    pub reason: Reason,
    pub mode: Mode,
    pub outcome: Outcome,
    pub duration_ms: u64,
    pub changed_nodes: u64,
    pub drifted_nodes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What is kept per manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ManifestRecord {
    #[serde(default)]
    pub last_applied: Option<Applied>,
    #[serde(default)]
    pub last_reconcile: Option<LastReconcile>,
}

/// A subtree handed over by a parent tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subtree {
    /// The manifest's name.
    pub name: String,
    /// Target host on this tier.
    pub host: String,
    /// The manifest, as received (validated before it is stored).
    pub manifest: Value,
    /// `subtree:<digest>` of the manifest.
    pub revision: String,
    pub received_at: String,
    /// The API token name that sent it.
    pub from: String,
}

/// Who holds the lease; dropping it releases the lease.
pub trait LeaseGuard: Send + Sync + std::fmt::Debug {
    /// A description of the holder (pid, host, since).
    fn holder(&self) -> &str;
}

/// The daemon's durable state.
pub trait ControllerStore: Send + Sync + 'static {
    /// Takes the reconciler lease, or fails with [`Error::LeaseHeld`].
    fn acquire_lease(&self, holder: &str) -> Result<Box<dyn LeaseGuard>, Error>;
    fn records(&self) -> BTreeMap<String, ManifestRecord>;
    fn record(&self, manifest: &str) -> ManifestRecord {
        self.records().remove(manifest).unwrap_or_default()
    }
    fn put_record(&self, manifest: &str, record: ManifestRecord) -> Result<(), Error>;
    fn subtrees(&self) -> BTreeMap<String, Subtree>;
    fn put_subtree(&self, subtree: Subtree) -> Result<(), Error>;
    /// Makes everything durable (shutdown).
    fn flush(&self) -> Result<(), Error>;
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    schema_version: u32,
    #[serde(default)]
    manifests: BTreeMap<String, ManifestRecord>,
    #[serde(default)]
    subtrees: BTreeMap<String, Subtree>,
}

/// The file-backed store.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    state: Mutex<StateFile>,
}

impl FileStore {
    /// Opens (or starts) the state in `dir`, which must exist.
    pub fn open(dir: &Path) -> Result<FileStore, Error> {
        let path = dir.join("controller.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => {
                let state: StateFile =
                    serde_json::from_slice(&bytes).map_err(|source| Error::Read {
                        path: path.clone(),
                        source: Box::new(source),
                    })?;
                if state.schema_version != SCHEMA_VERSION {
                    return Err(Error::Read {
                        path,
                        source: format!(
                            "schema_version {} is not {SCHEMA_VERSION}",
                            state.schema_version
                        )
                        .into(),
                    });
                }
                state
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StateFile {
                schema_version: SCHEMA_VERSION,
                ..StateFile::default()
            },
            Err(source) => {
                return Err(Error::Read {
                    path,
                    source: Box::new(source),
                });
            }
        };
        Ok(FileStore {
            dir: dir.to_path_buf(),
            state: Mutex::new(state),
        })
    }

    fn save(&self, state: &StateFile) -> Result<(), Error> {
        let mut bytes = serde_json::to_vec_pretty(state).unwrap_or_default();
        bytes.push(b'\n');
        state_dir::write_atomic(&self.dir.join("controller.json"), &bytes, SECRET_MODE)
            .map_err(|source| Error::Write { source })
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut StateFile) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state)
    }
}

#[derive(Debug)]
struct FileLease {
    _file: File,
    holder: String,
}

impl LeaseGuard for FileLease {
    fn holder(&self) -> &str {
        &self.holder
    }
}

impl ControllerStore for FileStore {
    fn acquire_lease(&self, holder: &str) -> Result<Box<dyn LeaseGuard>, Error> {
        let path = self.dir.join("reconciler.lock");
        let lease_err = |source| Error::Lease {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(lease_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path)
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default();
                return Err(Error::LeaseHeld { path, holder });
            }
            Err(std::fs::TryLockError::Error(source)) => return Err(lease_err(source)),
        }
        // Who holds it, for the error another instance prints.
        file.set_len(0).map_err(lease_err)?;
        file.write_all(holder.as_bytes()).map_err(lease_err)?;
        Ok(Box::new(FileLease {
            _file: file,
            holder: holder.to_string(),
        }))
    }

    fn records(&self) -> BTreeMap<String, ManifestRecord> {
        self.with_state(|s| s.manifests.clone())
    }

    fn put_record(&self, manifest: &str, record: ManifestRecord) -> Result<(), Error> {
        self.with_state(|s| {
            s.manifests.insert(manifest.to_string(), record);
            self.save(s)
        })
    }

    fn subtrees(&self) -> BTreeMap<String, Subtree> {
        self.with_state(|s| s.subtrees.clone())
    }

    fn put_subtree(&self, subtree: Subtree) -> Result<(), Error> {
        self.with_state(|s| {
            s.subtrees.insert(subtree.name.clone(), subtree);
            self.save(s)
        })
    }

    fn flush(&self) -> Result<(), Error> {
        self.with_state(|s| self.save(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileStore::open(dir.path()).unwrap();
        let b = FileStore::open(dir.path()).unwrap();
        let lease = a.acquire_lease("pid 1").unwrap();
        assert_eq!(lease.holder(), "pid 1");
        match b.acquire_lease("pid 2") {
            Err(Error::LeaseHeld { holder, .. }) => assert_eq!(holder, "pid 1"),
            other => panic!("expected LeaseHeld, got {other:?}"),
        }
        drop(lease);
        // Another test thread forking a process at this moment holds a copy
        // of the lock's descriptor until its exec; wait that out.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match b.acquire_lease("pid 2") {
                Ok(_) => break,
                Err(Error::LeaseHeld { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(other) => panic!("lease not free after release: {other:?}"),
            }
        }
    }

    #[test]
    fn records_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let record = ManifestRecord {
            last_applied: Some(Applied {
                revision: "abc".into(),
                at: "2026-01-01T00:00:00Z".into(),
            }),
            last_reconcile: None,
        };
        store.put_record("m", record.clone()).unwrap();
        store
            .put_subtree(Subtree {
                name: "s".into(),
                host: "h".into(),
                manifest: serde_json::json!({"x": 1}),
                revision: "subtree:1".into(),
                received_at: "now".into(),
                from: "parent".into(),
            })
            .unwrap();
        let again = FileStore::open(dir.path()).unwrap();
        assert_eq!(again.record("m"), record);
        assert_eq!(again.record("other"), ManifestRecord::default());
        assert_eq!(again.subtrees()["s"].host, "h");

        std::fs::write(
            dir.path().join("controller.json"),
            "{\"schema_version\": 9}",
        )
        .unwrap();
        assert!(matches!(
            FileStore::open(dir.path()),
            Err(Error::Read { .. })
        ));
    }
}
