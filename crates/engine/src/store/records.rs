//! The [`Store`] semantics over any [`Backend`]: versioned JSON values,
//! record generations, event sequence and retention, leases, and the
//! schema check at open.
//!
//! Writes that read first (generation bump, lease takeover) use
//! compare-and-swap loops, so concurrent writers in one process cannot lose
//! an update; events are appended under a mutex so sequence numbers are
//! contiguous, which makes retention a simple "drop keys below seq − N".

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::backend::{Backend, Tree};
use super::types::{Durability, EventFilter, Lease, LeaseOutcome, NodeKey, NodeRecord, Timestamp};
use super::{Error, Result, Store, migrate};
use homestak_api::{Event, ManifestRecord, Subtree};
use homestak_base::id::NodeName;

/// The store layout this build writes. Bump it (and add a migration in
/// [`super::migrate`]) when a change cannot be read by older code paths.
pub const SCHEMA_VERSION: u32 = 2;

/// Version of the JSON envelope around each value.
const RECORD_VERSION: u32 = 1;

const SCHEMA_KEY: &[u8] = b"schema_version";

/// Tunables of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Events kept; older ones are dropped as new ones arrive.
    pub event_retention: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            event_retention: 10_000,
        }
    }
}

/// [`Store`] over a [`Backend`].
pub struct KvStore<B> {
    backend: B,
    options: Options,
    /// Serializes event appends (sequence assignment and pruning).
    append: Mutex<()>,
}

impl<B: Backend> std::fmt::Debug for KvStore<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStore")
            .field("location", &self.backend.location())
            .field("options", &self.options)
            .finish()
    }
}

#[derive(Serialize)]
struct EnvelopeOut<'a, T> {
    v: u32,
    data: &'a T,
}

#[derive(serde::Deserialize)]
struct EnvelopeIn {
    v: u32,
    data: serde_json::Value,
}

fn encode<T: Serialize>(what: &'static str, key: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(&EnvelopeOut {
        v: RECORD_VERSION,
        data: value,
    })
    .map_err(|source| Error::Encode {
        what,
        key: key.to_string(),
        source,
    })
}

fn decode<T: DeserializeOwned>(what: &'static str, key: &str, bytes: &[u8]) -> Result<T> {
    let corrupt = |source| Error::Corrupt {
        what,
        key: key.to_string(),
        source,
    };
    let envelope: EnvelopeIn = serde_json::from_slice(bytes).map_err(corrupt)?;
    if envelope.v > RECORD_VERSION {
        return Err(Error::NewerRecord {
            what,
            key: key.to_string(),
            version: envelope.v,
            supported: RECORD_VERSION,
        });
    }
    serde_json::from_value(envelope.data).map_err(corrupt)
}

/// An event as stored; a damaged one is skipped (history is advisory).
fn decode_event(key: &[u8], bytes: &[u8]) -> Option<Event> {
    let label = seq_of(key).map(|s| s.to_string()).unwrap_or_default();
    decode::<Event>("event", &label, bytes)
        .inspect_err(|err| tracing::warn!(error = %homestak_base::error_chain(err), "skipping an unreadable event"))
        .ok()
}

fn check_name(what: &'static str, value: &str) -> Result<()> {
    if value.is_empty() || value.contains('\0') {
        return Err(Error::InvalidName {
            what,
            value: value.to_string(),
        });
    }
    Ok(())
}

fn node_key(key: &NodeKey) -> Result<Vec<u8>> {
    check_name("manifest name", &key.manifest)?;
    let mut bytes = manifest_prefix(&key.manifest);
    bytes.extend_from_slice(key.node.as_str().as_bytes());
    Ok(bytes)
}

fn manifest_prefix(manifest: &str) -> Vec<u8> {
    let mut bytes = manifest.as_bytes().to_vec();
    bytes.push(0);
    bytes
}

fn seq_of(key: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(key).ok().map(u64::from_be_bytes)
}

impl<B: Backend> KvStore<B> {
    /// Opens a store over `backend`, checking (or, for an empty backend,
    /// writing) the schema version. A newer schema is refused: this build
    /// would misread it.
    pub fn open(backend: B, options: Options) -> Result<Self> {
        let location = backend.location();
        match backend.get(Tree::Meta, SCHEMA_KEY)? {
            Some(bytes) => {
                let found: u32 =
                    serde_json::from_slice(&bytes).map_err(|source| Error::Corrupt {
                        what: "schema version",
                        key: String::from_utf8_lossy(SCHEMA_KEY).into_owned(),
                        source,
                    })?;
                match found {
                    SCHEMA_VERSION => {}
                    1 => {
                        migrate::v1_to_v2(&backend, |data| {
                            // Encoding a JSON value cannot fail.
                            serde_json::to_vec(&EnvelopeOut {
                                v: RECORD_VERSION,
                                data,
                            })
                            .unwrap_or_default()
                        })?;
                        backend.insert(
                            Tree::Meta,
                            SCHEMA_KEY,
                            SCHEMA_VERSION.to_string().as_bytes(),
                        )?;
                        backend.flush()?;
                        tracing::info!(%location, "store migrated to schema version {SCHEMA_VERSION}");
                    }
                    newer if newer > SCHEMA_VERSION => {
                        return Err(Error::NewerSchema {
                            location,
                            found,
                            supported: SCHEMA_VERSION,
                        });
                    }
                    // Version 1 was the first; older numbers were never written.
                    _ => {
                        return Err(Error::UnknownSchema {
                            location,
                            found,
                            supported: SCHEMA_VERSION,
                        });
                    }
                }
            }
            None => {
                for tree in Tree::ALL {
                    if !backend.is_empty(tree)? {
                        return Err(Error::Unversioned { location });
                    }
                }
                backend.insert(
                    Tree::Meta,
                    SCHEMA_KEY,
                    SCHEMA_VERSION.to_string().as_bytes(),
                )?;
                backend.flush()?;
            }
        }
        Ok(KvStore {
            backend,
            options,
            append: Mutex::new(()),
        })
    }

    fn done(&self, durability: Durability) -> Result<()> {
        match durability {
            Durability::Flush => self.backend.flush(),
            Durability::Lazy => Ok(()),
        }
    }

    /// Read-modify-write of a node record with a generation bump.
    fn write_node(
        &self,
        key: &NodeKey,
        durability: Durability,
        change: &mut dyn FnMut(&mut NodeRecord),
    ) -> Result<NodeRecord> {
        let raw_key = node_key(key)?;
        let label = key.to_string();
        loop {
            let old = self.backend.get(Tree::Nodes, &raw_key)?;
            let mut record = match old
                .as_deref()
                .map(|b| decode::<NodeRecord>("node record", &label, b))
            {
                Some(Ok(record)) => record,
                None => NodeRecord::default(),
                // A damaged record is replaced rather than blocking the node
                // forever; PVE is re-observed anyway.
                Some(Err(err)) => {
                    tracing::warn!(error = %homestak_base::error_chain(&err), node = %label, "replacing an unreadable node record");
                    NodeRecord::default()
                }
            };
            let generation = record.generation;
            change(&mut record);
            record.generation = generation + 1;
            record.updated = Timestamp::now();
            let bytes = encode("node record", &label, &record)?;
            if self
                .backend
                .compare_and_swap(Tree::Nodes, &raw_key, old.as_deref(), Some(&bytes))?
            {
                self.done(durability)?;
                return Ok(record);
            }
        }
    }

    /// The newest event's sequence number (0 when there is none).
    fn last_seq(&self) -> Result<u64> {
        let mut last = 0;
        self.backend.scan(Tree::Events, &[], true, &mut |k, _| {
            last = seq_of(k).unwrap_or(0);
            false
        })?;
        Ok(last)
    }

    fn read_lease(&self, name: &str) -> Result<(Option<Vec<u8>>, Option<Lease>)> {
        let old = self.backend.get(Tree::Leases, name.as_bytes())?;
        let lease = old
            .as_deref()
            .map(|b| decode::<Lease>("lease", name, b))
            .transpose()?;
        Ok((old, lease))
    }
}

impl<B: Backend> Store for KvStore<B> {
    fn location(&self) -> String {
        self.backend.location()
    }

    fn schema_version(&self) -> u32 {
        SCHEMA_VERSION
    }

    fn get_node(&self, key: &NodeKey) -> Result<Option<NodeRecord>> {
        let raw_key = node_key(key)?;
        self.backend
            .get(Tree::Nodes, &raw_key)?
            .map(|b| decode("node record", &key.to_string(), &b))
            .transpose()
    }

    fn put_node(&self, key: &NodeKey, record: &NodeRecord, durability: Durability) -> Result<u64> {
        let written = self.write_node(key, durability, &mut |stored| *stored = record.clone())?;
        Ok(written.generation)
    }

    fn update_node(
        &self,
        key: &NodeKey,
        durability: Durability,
        change: &mut dyn FnMut(&mut NodeRecord),
    ) -> Result<NodeRecord> {
        self.write_node(key, durability, change)
    }

    fn delete_node(&self, key: &NodeKey, durability: Durability) -> Result<bool> {
        let existed = self.backend.remove(Tree::Nodes, &node_key(key)?)?;
        self.done(durability)?;
        Ok(existed)
    }

    fn list_nodes(&self, manifest: &str) -> Result<Vec<(NodeName, NodeRecord)>> {
        check_name("manifest name", manifest)?;
        let prefix = manifest_prefix(manifest);
        let mut out = Vec::new();
        self.backend
            .scan(Tree::Nodes, &prefix, false, &mut |k, v| {
                let text = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                let Ok(node) = NodeName::new(text.as_str()) else {
                    // Not a key this store writes; nothing can ask for it.
                    tracing::warn!(key = %text, "skipping a node record under a name no node has");
                    return true;
                };
                match decode("node record", &format!("{manifest}/{node}"), v) {
                    Ok(record) => out.push((node, record)),
                    // One damaged record does not hide the others; PVE is
                    // observed anyway and the next write replaces it.
                    Err(err) => tracing::warn!(error = %homestak_base::error_chain(&err), "skipping an unreadable node record"),
                }
                true
            })?;
        Ok(out)
    }

    fn append_event(&self, event: &Event) -> Result<Event> {
        if let Some(manifest) = &event.manifest {
            check_name("manifest name", manifest)?;
        }
        let _guard = self.append.lock().unwrap_or_else(PoisonError::into_inner);
        let seq = self.last_seq()? + 1;
        let recorded = Event {
            seq,
            ..event.clone()
        };
        let bytes = encode("event", &seq.to_string(), &recorded)?;
        self.backend
            .insert(Tree::Events, &seq.to_be_bytes(), &bytes)?;
        let retention = self.options.event_retention.max(1);
        if seq > retention {
            let cut = seq - retention;
            let mut old = Vec::new();
            self.backend
                .scan(Tree::Events, &[], false, &mut |k, _| match seq_of(k) {
                    Some(s) if s <= cut => {
                        old.push(k.to_vec());
                        true
                    }
                    _ => false,
                })?;
            for key in old {
                self.backend.remove(Tree::Events, &key)?;
            }
        }
        Ok(recorded)
    }

    fn list_events(&self, filter: &EventFilter, limit: usize) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.backend.scan(Tree::Events, &[], true, &mut |k, v| {
            if let Some(event) = decode_event(k, v) {
                let wanted = filter
                    .manifest
                    .as_ref()
                    .is_none_or(|m| event.manifest.as_ref() == Some(m))
                    && filter
                        .node
                        .as_ref()
                        .is_none_or(|n| event.node.as_ref() == Some(n));
                if wanted {
                    out.push(event);
                }
            }
            out.len() < limit
        })?;
        Ok(out)
    }

    fn events_since(&self, since: u64, limit: usize) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let start = since.saturating_add(1).to_be_bytes();
        self.backend.scan_from(Tree::Events, &start, &mut |k, v| {
            if let Some(event) = decode_event(k, v) {
                out.push(event);
            }
            out.len() < limit
        })?;
        Ok(out)
    }

    fn last_event_seq(&self) -> Result<u64> {
        self.last_seq()
    }

    fn get_manifest(&self, name: &str) -> Result<Option<ManifestRecord>> {
        check_name("manifest name", name)?;
        self.backend
            .get(Tree::Manifests, name.as_bytes())?
            .map(|b| decode("manifest record", name, &b))
            .transpose()
    }

    fn put_manifest(
        &self,
        name: &str,
        record: &ManifestRecord,
        durability: Durability,
    ) -> Result<()> {
        check_name("manifest name", name)?;
        let bytes = encode("manifest record", name, record)?;
        self.backend
            .insert(Tree::Manifests, name.as_bytes(), &bytes)?;
        self.done(durability)
    }

    fn update_manifest(
        &self,
        name: &str,
        durability: Durability,
        change: &mut dyn FnMut(&mut ManifestRecord),
    ) -> Result<ManifestRecord> {
        check_name("manifest name", name)?;
        loop {
            let old = self.backend.get(Tree::Manifests, name.as_bytes())?;
            let mut record = match old
                .as_deref()
                .map(|b| decode::<ManifestRecord>("manifest record", name, b))
            {
                Some(Ok(record)) => record,
                None => ManifestRecord::default(),
                // Replaced rather than blocking every later run's record;
                // the next run writes what it applies.
                Some(Err(err)) => {
                    tracing::warn!(error = %homestak_base::error_chain(&err), manifest = name, "replacing an unreadable manifest record");
                    ManifestRecord::default()
                }
            };
            change(&mut record);
            let bytes = encode("manifest record", name, &record)?;
            if self.backend.compare_and_swap(
                Tree::Manifests,
                name.as_bytes(),
                old.as_deref(),
                Some(&bytes),
            )? {
                self.done(durability)?;
                return Ok(record);
            }
        }
    }

    fn list_manifests(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        self.backend
            .scan(Tree::Manifests, &[], false, &mut |k, _| {
                names.push(String::from_utf8_lossy(k).into_owned());
                true
            })?;
        Ok(names)
    }

    fn put_subtree(&self, subtree: &Subtree, durability: Durability) -> Result<()> {
        check_name("subtree name", &subtree.name)?;
        let bytes = encode("subtree", &subtree.name, subtree)?;
        self.backend
            .insert(Tree::Subtrees, subtree.name.as_bytes(), &bytes)?;
        self.done(durability)
    }

    fn get_subtree(&self, name: &str) -> Result<Option<Subtree>> {
        check_name("subtree name", name)?;
        self.backend
            .get(Tree::Subtrees, name.as_bytes())?
            .map(|b| decode("subtree", name, &b))
            .transpose()
    }

    fn delete_subtree(&self, name: &str, durability: Durability) -> Result<bool> {
        check_name("subtree name", name)?;
        let existed = self.backend.remove(Tree::Subtrees, name.as_bytes())?;
        self.done(durability)?;
        Ok(existed)
    }

    fn list_subtrees(&self) -> Result<Vec<Subtree>> {
        let mut out = Vec::new();
        let mut failure = None;
        self.backend
            .scan(Tree::Subtrees, &[], false, &mut |k, v| match decode(
                "subtree",
                &String::from_utf8_lossy(k),
                v,
            ) {
                Ok(subtree) => {
                    out.push(subtree);
                    true
                }
                Err(err) => {
                    failure = Some(err);
                    false
                }
            })?;
        match failure {
            Some(err) => Err(err),
            None => Ok(out),
        }
    }

    fn storage_limits(&self, tier: &str) -> Result<BTreeMap<String, usize>> {
        check_name("tier", tier)?;
        let prefix = manifest_prefix(tier);
        let mut out = BTreeMap::new();
        self.backend
            .scan(Tree::StorageLimits, &prefix, false, &mut |k, v| {
                let storage = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                // A damaged limit is relearned: it is only a starting point.
                match decode::<usize>("storage limit", &format!("{tier}/{storage}"), v) {
                    Ok(limit) => {
                        out.insert(storage, limit);
                    }
                    Err(err) => tracing::warn!(error = %homestak_base::error_chain(&err), "skipping an unreadable storage limit"),
                }
                true
            })?;
        Ok(out)
    }

    fn put_storage_limits(
        &self,
        tier: &str,
        limits: &BTreeMap<String, usize>,
        durability: Durability,
    ) -> Result<()> {
        check_name("tier", tier)?;
        for (storage, limit) in limits {
            check_name("storage id", storage)?;
            let mut key = manifest_prefix(tier);
            key.extend_from_slice(storage.as_bytes());
            let bytes = encode("storage limit", &format!("{tier}/{storage}"), limit)?;
            self.backend.insert(Tree::StorageLimits, &key, &bytes)?;
        }
        self.done(durability)
    }

    fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<LeaseOutcome> {
        check_name("lease name", name)?;
        check_name("lease holder", holder)?;
        loop {
            let (old, current) = self.read_lease(name)?;
            let lease = match current {
                Some(held) if held.holder != holder && !held.expired(now) => {
                    return Ok(LeaseOutcome::Held(held));
                }
                Some(ours) if ours.holder == holder => Lease {
                    renewed: now,
                    expires: now.plus(ttl),
                    ..ours
                },
                _ => Lease {
                    name: name.to_string(),
                    holder: holder.to_string(),
                    acquired: now,
                    renewed: now,
                    expires: now.plus(ttl),
                },
            };
            let bytes = encode("lease", name, &lease)?;
            if self.backend.compare_and_swap(
                Tree::Leases,
                name.as_bytes(),
                old.as_deref(),
                Some(&bytes),
            )? {
                return Ok(LeaseOutcome::Acquired(lease));
            }
        }
    }

    fn renew_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Lease> {
        check_name("lease name", name)?;
        loop {
            let (old, current) = self.read_lease(name)?;
            // Still ours even if expired, as long as nobody took it since.
            let lease = match current {
                Some(ours) if ours.holder == holder => Lease {
                    renewed: now,
                    expires: now.plus(ttl),
                    ..ours
                },
                other => {
                    return Err(Error::LeaseLost {
                        name: name.to_string(),
                        claimant: holder.to_string(),
                        holder: other.map(|l| l.holder),
                    });
                }
            };
            let bytes = encode("lease", name, &lease)?;
            if self.backend.compare_and_swap(
                Tree::Leases,
                name.as_bytes(),
                old.as_deref(),
                Some(&bytes),
            )? {
                return Ok(lease);
            }
        }
    }

    fn release_lease(&self, name: &str, holder: &str) -> Result<bool> {
        check_name("lease name", name)?;
        loop {
            let (old, current) = self.read_lease(name)?;
            match current {
                Some(ours) if ours.holder == holder => {
                    if self.backend.compare_and_swap(
                        Tree::Leases,
                        name.as_bytes(),
                        old.as_deref(),
                        None,
                    )? {
                        return Ok(true);
                    }
                }
                _ => return Ok(false),
            }
        }
    }

    fn get_lease(&self, name: &str) -> Result<Option<Lease>> {
        check_name("lease name", name)?;
        Ok(self.read_lease(name)?.1)
    }

    fn flush(&self) -> Result<()> {
        self.backend.flush()
    }
}
