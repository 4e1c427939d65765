//! The in-memory backend: ordered maps behind a mutex, for tests that must
//! not touch disk (feature `testing`: no release code path uses it).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::Error;
use super::backend::{Backend, Tree, Visit};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// Ordered maps per tree; nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    trees: Mutex<BTreeMap<Tree, Map>>,
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        MemoryBackend::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Tree, Map>> {
        self.trees.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Backend for MemoryBackend {
    fn location(&self) -> String {
        "memory".to_string()
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.lock().get(&tree).and_then(|t| t.get(key)).cloned())
    }

    fn insert(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), Error> {
        self.lock()
            .entry(tree)
            .or_default()
            .insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn remove(&self, tree: Tree, key: &[u8]) -> Result<bool, Error> {
        Ok(self
            .lock()
            .get_mut(&tree)
            .and_then(|t| t.remove(key))
            .is_some())
    }

    fn compare_and_swap(
        &self,
        tree: Tree,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, Error> {
        let mut trees = self.lock();
        let map = trees.entry(tree).or_default();
        if map.get(key).map(Vec::as_slice) != old {
            return Ok(false);
        }
        match new {
            Some(value) => map.insert(key.to_vec(), value.to_vec()),
            None => map.remove(key),
        };
        Ok(true)
    }

    fn scan(
        &self,
        tree: Tree,
        prefix: &[u8],
        reverse: bool,
        visit: Visit<'_>,
    ) -> Result<(), Error> {
        let trees = self.lock();
        let Some(map) = trees.get(&tree) else {
            return Ok(());
        };
        let matching = map
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix));
        if reverse {
            let all: Vec<_> = matching.collect();
            for (k, v) in all.into_iter().rev() {
                if !visit(k, v) {
                    break;
                }
            }
        } else {
            for (k, v) in matching {
                if !visit(k, v) {
                    break;
                }
            }
        }
        Ok(())
    }

    fn scan_from(&self, tree: Tree, start: &[u8], visit: Visit<'_>) -> Result<(), Error> {
        let trees = self.lock();
        if let Some(map) = trees.get(&tree) {
            for (k, v) in map.range(start.to_vec()..) {
                if !visit(k, v) {
                    break;
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), Error> {
        Ok(())
    }
}
