//! Durable store: what homestak applied, is waiting on, and saw happen.
//!
//! PVE is the source of truth for what exists; the store remembers what the
//! reconciler did. It is the one durable store of a tier: per-node records
//! (vmid, address, power, applied spec hash, conditions, last error, the
//! in-flight task), the event history (the daemon's live feed reads it),
//! per-manifest records (last applied revision, last run), subtrees a
//! parent tier handed over, and leases so one reconciler runs per tier.
//!
//! - [`Store`] is the small trait the rest of the crate uses (held as
//!   `Arc<dyn Store>`; one writer task and many readers is the intended use,
//!   but concurrent writers are safe: read-modify-writes use
//!   compare-and-swap).
//! - [`open`] gives the sled store on disk; `memory()` an in-memory one for
//!   tests (feature `testing`, never in a release build). Both are
//!   [`KvStore`] over a [`backend::Backend`], so they share every rule and
//!   the same test suite.
//! - Values are JSON in a versioned envelope; the store carries a schema
//!   version and refuses to open one newer than this build understands.
//! - Durability: [`Durability::Flush`] for the writes a crash must not lose
//!   (an in-flight UPID, a converge); everything else is flushed within
//!   ~0.5 s and on close.
//!
//! The sled database is locked by the process that opened it: a second
//! process (e.g. `homestak status` while the daemon runs) cannot open the
//! same store and must ask the daemon instead.

pub mod backend;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
mod migrate;
mod records;
pub mod sled;
pub mod types;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use homestak_api::{Event, ManifestRecord, Subtree};
use homestak_base::id::NodeName;

pub use self::sled::{SledStore, open};
pub use records::{KvStore, Options, SCHEMA_VERSION};
pub use types::{
    Condition, ConditionStatus, CreateIntent, Delegation, DelegationState, Durability, EventFilter,
    InFlight, Lease, LeaseOutcome, NodeKey, NodeRecord, PowerState, Seen, SeenConfig, Summary,
    Timestamp,
};

/// The in-memory store (feature `testing`).
#[cfg(any(test, feature = "testing"))]
pub type MemoryStore = KvStore<memory::MemoryBackend>;

/// A fresh in-memory store (feature `testing`).
#[cfg(any(test, feature = "testing"))]
pub fn memory() -> MemoryStore {
    // An empty backend always opens: there is no schema to disagree with.
    match KvStore::open(memory::MemoryBackend::new(), Options::default()) {
        Ok(store) => store,
        Err(err) => unreachable!("an empty in-memory store failed to open: {err}"),
    }
}

/// Result of a store operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store directory could not be created or made private.
    #[error("cannot prepare the store directory {}", path.display())]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// sled could not open the database.
    #[error(
        "cannot open the store in {}; if another homestak process uses it, stop it or use its API",
        path.display()
    )]
    Open {
        path: PathBuf,
        #[source]
        source: ::sled::Error,
    },

    /// The store was written by a newer homestak.
    #[error(
        "the store at {location} has schema version {found}, newer than this homestak supports \
         ({supported}); upgrade homestak, or use another store directory"
    )]
    NewerSchema {
        location: String,
        found: u32,
        supported: u32,
    },

    /// The schema version is one no homestak ever wrote.
    #[error(
        "the store at {location} has unknown schema version {found} (this homestak writes \
         {supported}); it is damaged or not a homestak store"
    )]
    UnknownSchema {
        location: String,
        found: u32,
        supported: u32,
    },

    /// Data without a schema version: not a homestak store.
    #[error(
        "the store at {location} holds data but no schema version; it is not a homestak store \
         or is damaged. Move it aside; the next run re-observes PVE and adopts owned VMs"
    )]
    Unversioned { location: String },

    /// A value could not be decoded.
    #[error(
        "stored {what} {key:?} is unreadable; delete it (homestak re-observes PVE) or restore \
         the store from a backup"
    )]
    Corrupt {
        what: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },

    /// A value was written by a newer homestak.
    #[error(
        "stored {what} {key:?} has record version {version}, newer than supported ({supported}); upgrade homestak"
    )]
    NewerRecord {
        what: &'static str,
        key: String,
        version: u32,
        supported: u32,
    },

    /// A value could not be encoded.
    #[error("cannot encode {what} {key:?} for the store")]
    Encode {
        what: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },

    /// A name used as a key is empty or contains a NUL byte.
    #[error("invalid {what} {value:?}: it must be non-empty and contain no NUL byte")]
    InvalidName { what: &'static str, value: String },

    /// A lease is not held by the claimant.
    #[error(
        "lease {name:?} is not held by {claimant:?} (holder: {}); stop working on what it guards",
        holder.as_deref().unwrap_or("nobody")
    )]
    LeaseLost {
        name: String,
        claimant: String,
        holder: Option<String>,
    },

    /// The storage engine failed.
    #[error("store {op} failed at {location}")]
    Backend {
        op: &'static str,
        location: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The store, as the rest of homestak uses it.
pub trait Store: Send + Sync {
    /// Where the data lives (a directory, or `memory`).
    fn location(&self) -> String;

    /// The schema version of the store.
    fn schema_version(&self) -> u32;

    /// The record of a manifest node.
    fn get_node(&self, key: &NodeKey) -> Result<Option<NodeRecord>>;

    /// Writes a node record; returns its new generation (the store sets
    /// `generation` and `updated`, ignoring the values passed).
    fn put_node(&self, key: &NodeKey, record: &NodeRecord, durability: Durability) -> Result<u64>;

    /// Atomically changes a node record (a default one if absent) and
    /// returns the stored result. `change` may run more than once if
    /// another writer races; it must only modify the record it is given.
    fn update_node(
        &self,
        key: &NodeKey,
        durability: Durability,
        change: &mut dyn FnMut(&mut NodeRecord),
    ) -> Result<NodeRecord>;

    /// Removes a node record; returns whether it existed.
    fn delete_node(&self, key: &NodeKey, durability: Durability) -> Result<bool>;

    /// All node records of a manifest, by node name.
    fn list_nodes(&self, manifest: &str) -> Result<Vec<(NodeName, NodeRecord)>>;

    /// Appends an event, numbering it; old events beyond the retention are
    /// dropped. Returns it as recorded.
    fn append_event(&self, event: &Event) -> Result<Event>;

    /// Events matching `filter`, newest first, at most `limit`.
    fn list_events(&self, filter: &EventFilter, limit: usize) -> Result<Vec<Event>>;

    /// Events numbered after `since`, oldest first, at most `limit` (the
    /// daemon's live feed polls with it).
    fn events_since(&self, since: u64, limit: usize) -> Result<Vec<Event>>;

    /// The newest event's number (0 when there is none).
    fn last_event_seq(&self) -> Result<u64>;

    /// A manifest's record.
    fn get_manifest(&self, name: &str) -> Result<Option<ManifestRecord>>;

    /// Writes a manifest's record.
    fn put_manifest(
        &self,
        name: &str,
        record: &ManifestRecord,
        durability: Durability,
    ) -> Result<()>;

    /// Atomically changes a manifest's record (a default one if absent)
    /// and returns the stored result; `change` may run more than once.
    fn update_manifest(
        &self,
        name: &str,
        durability: Durability,
        change: &mut dyn FnMut(&mut ManifestRecord),
    ) -> Result<ManifestRecord>;

    /// Names of manifests with a record.
    fn list_manifests(&self) -> Result<Vec<String>>;

    /// Keeps a subtree a parent tier handed over (replacing one of that
    /// name).
    fn put_subtree(&self, subtree: &Subtree, durability: Durability) -> Result<()>;

    /// The subtree kept under `name`.
    fn get_subtree(&self, name: &str) -> Result<Option<Subtree>>;

    /// Forgets a subtree; returns whether it was kept.
    fn delete_subtree(&self, name: &str, durability: Durability) -> Result<bool>;

    /// Every kept subtree, by name.
    fn list_subtrees(&self) -> Result<Vec<Subtree>>;

    /// The per-storage limits the executor learned on `tier` (a PVE host
    /// and its endpoint), by storage id.
    fn storage_limits(&self, tier: &str) -> Result<BTreeMap<String, usize>>;

    /// Keeps the limits learned on `tier`, replacing those of the same
    /// storages (others stay).
    fn put_storage_limits(
        &self,
        tier: &str,
        limits: &BTreeMap<String, usize>,
        durability: Durability,
    ) -> Result<()>;

    /// Takes the lease if it is free, expired, or already `holder`'s.
    fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<LeaseOutcome>;

    /// Extends `holder`'s lease; [`Error::LeaseLost`] if another holder took
    /// it or it was released.
    fn renew_lease(&self, name: &str, holder: &str, ttl: Duration, now: Timestamp)
    -> Result<Lease>;

    /// Gives the lease up; returns whether `holder` held it.
    fn release_lease(&self, name: &str, holder: &str) -> Result<bool>;

    /// The lease, if anyone holds or held it.
    fn get_lease(&self, name: &str) -> Result<Option<Lease>>;

    /// Makes every write so far durable (also done on close).
    fn flush(&self) -> Result<()>;
}

impl Error {
    /// True when another process holds the store (sled locks its
    /// directory): typically the daemon, while the CLI asks.
    pub fn is_locked(&self) -> bool {
        matches!(self, Error::Open { source: ::sled::Error::Io(io), .. } if self::sled::is_lock_error(io))
    }
}
