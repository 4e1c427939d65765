//! The key-value engine under the record logic.
//!
//! [`super::records::KvStore`] implements the [`super::Store`] semantics once
//! (generations, retention, leases, schema checks) over this small trait;
//! [`super::sled::SledBackend`] and the tests' `memory::MemoryBackend` only
//! move bytes. Single-key writes must be atomic: a record is one key, so a
//! crash can lose a write but never leave half of one.

use super::Error;

/// The trees (keyspaces) of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tree {
    /// Schema version and other store-wide keys.
    Meta,
    /// Node records, keyed `manifest \0 node`.
    Nodes,
    /// Events, keyed by big-endian sequence number.
    Events,
    /// Leases, keyed by name.
    Leases,
    /// Per-manifest records, keyed by manifest name.
    Manifests,
    /// Subtrees handed over by a parent tier, keyed by manifest name.
    Subtrees,
    /// Per-storage limits the executor learned, keyed `tier \0 storage`.
    /// Added without a schema bump: a build that does not know it ignores
    /// it, and an older store simply has it empty.
    StorageLimits,
}

impl Tree {
    /// All trees.
    pub const ALL: [Tree; 7] = [
        Tree::Meta,
        Tree::Nodes,
        Tree::Events,
        Tree::Leases,
        Tree::Manifests,
        Tree::Subtrees,
        Tree::StorageLimits,
    ];

    /// The tree's name on disk.
    pub fn name(self) -> &'static str {
        match self {
            Tree::Meta => "meta",
            Tree::Nodes => "nodes",
            Tree::Events => "events",
            Tree::Leases => "leases",
            Tree::Manifests => "manifests",
            Tree::Subtrees => "subtrees",
            Tree::StorageLimits => "storage_limits",
        }
    }
}

/// Called for each entry of a scan; return `false` to stop.
pub type Visit<'a> = &'a mut dyn FnMut(&[u8], &[u8]) -> bool;

/// An ordered key-value store with atomic single-key operations.
pub trait Backend: Send + Sync {
    /// Where the data lives, for messages (a path, or `memory`).
    fn location(&self) -> String;

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, Error>;

    fn insert(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), Error>;

    /// Removes a key; returns whether it existed.
    fn remove(&self, tree: Tree, key: &[u8]) -> Result<bool, Error>;

    /// Sets `key` to `new` (or removes it for `None`) only if its current
    /// value is `old` (`None`: absent). Returns whether it swapped.
    fn compare_and_swap(
        &self,
        tree: Tree,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, Error>;

    /// Visits the keys starting with `prefix` in key order (or reverse).
    fn scan(&self, tree: Tree, prefix: &[u8], reverse: bool, visit: Visit<'_>)
    -> Result<(), Error>;

    /// Visits the keys from `start` on, in key order.
    fn scan_from(&self, tree: Tree, start: &[u8], visit: Visit<'_>) -> Result<(), Error>;

    /// Whether the tree has no keys.
    fn is_empty(&self, tree: Tree) -> Result<bool, Error> {
        let mut empty = true;
        self.scan(tree, &[], false, &mut |_, _| {
            empty = false;
            false
        })?;
        Ok(empty)
    }

    /// Makes every completed write durable.
    fn flush(&self) -> Result<(), Error>;
}
