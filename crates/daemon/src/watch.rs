//! Watching the site-config directory (its `.git` included, so a commit is
//! seen even when no tracked file changes on disk). Changes are debounced
//! (notify-debouncer-full): a burst of writes (a commit, a rebase, an
//! editor's save) becomes one notification once it has settled, and the
//! loop then checks whether the revision actually changed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;

/// The watch could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {} for changes", path.display())]
pub struct Error {
    path: PathBuf,
    #[source]
    source: notify::Error,
}

/// A running watch; dropping it stops watching.
pub struct Watch {
    _debouncer: Debouncer<RecommendedWatcher, RecommendedCache>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watch")
    }
}

/// Watches `root` recursively; sends `()` on `tx` after each settled burst
/// of changes, `debounce` after the last one.
pub fn start(
    root: &Path,
    debounce: Duration,
    tx: mpsc::UnboundedSender<()>,
) -> Result<Watch, Error> {
    let handler = move |result: DebounceEventResult| match result {
        Ok(events) => {
            if events.iter().any(|e| is_change(&e.event.kind)) {
                let _ = tx.send(());
            }
        }
        Err(errors) => {
            for err in errors {
                tracing::warn!(error = %err, "file watch error");
            }
            // Something may have been missed: let the loop look.
            let _ = tx.send(());
        }
    };
    let err = |source| Error {
        path: root.to_path_buf(),
        source,
    };
    let mut debouncer = new_debouncer(debounce, None, handler).map_err(err)?;
    debouncer
        .watch(root, RecursiveMode::Recursive)
        .map_err(err)?;
    Ok(Watch {
        _debouncer: debouncer,
    })
}

/// Reads (opening, reading, closing a file read-only) change nothing; git
/// reading the repository must not wake the loop.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind};

    #[test]
    fn reads_are_not_changes() {
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Read
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_change(&EventKind::Create(CreateKind::File)));
        assert!(is_change(&EventKind::Modify(ModifyKind::Any)));
    }

    #[tokio::test]
    async fn a_write_is_reported_once_settled() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _watch = start(dir.path(), Duration::from_millis(50), tx).unwrap();
        std::fs::write(dir.path().join("a.yaml"), "x").unwrap();
        // A hang guard, not a timing assertion.
        tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("a change notification")
            .expect("channel open");
    }
}
