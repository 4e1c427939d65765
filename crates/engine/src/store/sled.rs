//! The sled backend: one sled database per store directory, one sled tree
//! per [`Tree`].
//!
//! sled makes each single-key write atomic and recovers to a consistent
//! prefix of writes after a crash; a record is one key, so a torn write
//! cannot leave half a record. sled flushes on its own every 500 ms;
//! [`Durability::Flush`](super::Durability) writes and [`Drop`] flush
//! explicitly. sled locks the directory, so one process opens a store at a
//! time.

use std::path::{Path, PathBuf};

use super::Error;
use super::backend::{Backend, Tree, Visit};
use super::records::{KvStore, Options};

/// A store on disk.
pub type SledStore = KvStore<SledBackend>;

/// sled trees for the store's keyspaces.
pub struct SledBackend {
    path: PathBuf,
    db: sled::Db,
    trees: Vec<sled::Tree>,
}

impl std::fmt::Debug for SledBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledBackend")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Opens the sled database, waiting briefly for a lock that a store closed
/// a moment ago in this process may still hold (sled's flusher thread
/// releases it asynchronously after drop).
fn open_db(dir: &Path) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut pause = std::time::Duration::from_millis(5);
    loop {
        match sled::Config::new().path(dir).open() {
            Err(sled::Error::Io(err))
                if is_lock_error(&err) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// sled reports a held lock as `Other` with this text (sled 0.34).
pub(crate) fn is_lock_error(err: &std::io::Error) -> bool {
    err.to_string().contains("could not acquire lock")
}

/// Opens (creating if needed) the store in `dir`. The directory is made
/// private (0700): the store names hosts, VMs and addresses.
pub fn open(dir: &Path, options: Options) -> Result<SledStore, Error> {
    crate::state_dir::create_private(dir).map_err(|source| Error::Directory {
        path: dir.to_path_buf(),
        source,
    })?;
    let db = open_db(dir).map_err(|source| Error::Open {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut trees = Vec::with_capacity(Tree::ALL.len());
    for tree in Tree::ALL {
        trees.push(db.open_tree(tree.name()).map_err(|source| Error::Open {
            path: dir.to_path_buf(),
            source,
        })?);
    }
    KvStore::open(
        SledBackend {
            path: dir.to_path_buf(),
            db,
            trees,
        },
        options,
    )
}

impl SledBackend {
    fn tree(&self, tree: Tree) -> &sled::Tree {
        // Tree::ALL and `trees` are built in the same order.
        &self.trees[tree as usize]
    }

    fn fail(&self, op: &'static str, source: sled::Error) -> Error {
        Error::Backend {
            op,
            location: self.path.display().to_string(),
            source: Box::new(source),
        }
    }
}

impl Backend for SledBackend {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.tree(tree)
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| self.fail("read", e))
    }

    fn insert(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), Error> {
        self.tree(tree)
            .insert(key, value)
            .map(|_| ())
            .map_err(|e| self.fail("write", e))
    }

    fn remove(&self, tree: Tree, key: &[u8]) -> Result<bool, Error> {
        self.tree(tree)
            .remove(key)
            .map(|old| old.is_some())
            .map_err(|e| self.fail("remove", e))
    }

    fn compare_and_swap(
        &self,
        tree: Tree,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, Error> {
        self.tree(tree)
            .compare_and_swap(key, old, new)
            .map(|swapped| swapped.is_ok())
            .map_err(|e| self.fail("compare-and-swap", e))
    }

    fn scan(
        &self,
        tree: Tree,
        prefix: &[u8],
        reverse: bool,
        visit: Visit<'_>,
    ) -> Result<(), Error> {
        let iter = self.tree(tree).scan_prefix(prefix);
        let iter: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = if reverse {
            Box::new(iter.rev())
        } else {
            Box::new(iter)
        };
        for item in iter {
            let (k, v) = item.map_err(|e| self.fail("scan", e))?;
            if !visit(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    fn scan_from(&self, tree: Tree, start: &[u8], visit: Visit<'_>) -> Result<(), Error> {
        for item in self.tree(tree).range(start..) {
            let (k, v) = item.map_err(|e| self.fail("scan", e))?;
            if !visit(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), Error> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(|e| self.fail("flush", e))
    }
}

impl Drop for SledBackend {
    /// Flushes on shutdown, so even lazy writes of a clean exit persist.
    fn drop(&mut self) {
        if let Err(err) = self.db.flush() {
            tracing::warn!(path = %self.path.display(), error = %homestak_base::error_chain(&err), "flushing the store on close failed");
        }
    }
}
