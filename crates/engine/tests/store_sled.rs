//! What only the on-disk store has: persistence across reopen, schema
//! refusal, damaged data, the private directory, the process lock.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use homestak_api::{Event, Kind};
use homestak_engine::store::backend::{Backend, Tree};
use homestak_engine::store::memory::MemoryBackend;
use homestak_engine::store::{
    self, Durability, Error, EventFilter, NodeRecord, Options, PowerState, Store,
};

use crate::ids::{node_key, vmid};

fn raw_insert(dir: &Path, tree: &str, key: &[u8], value: &[u8]) {
    // A store dropped a moment ago may still hold sled's lock briefly.
    let mut tries = 0;
    let db = loop {
        match sled::open(dir) {
            Ok(db) => break db,
            Err(e) if tries < 100 => {
                tries += 1;
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    };
    db.open_tree(tree).unwrap().insert(key, value).unwrap();
    db.flush().unwrap();
}

#[test]
fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let key = node_key("m", "vm1");
    {
        let store = store::open(&path, Options::default()).unwrap();
        let record = NodeRecord {
            vmid: Some(vmid(100)),
            power: PowerState::Stopped,
            ..NodeRecord::default()
        };
        store.put_node(&key, &record, Durability::Lazy).unwrap();
        store
            .append_event(&Event::info(Kind::Created, "created").manifest("m"))
            .unwrap();
        let limits = std::collections::BTreeMap::from([("local-zfs".to_string(), 5)]);
        store
            .put_storage_limits("pve", &limits, Durability::Lazy)
            .unwrap();
        // Dropped without an explicit flush: close flushes.
    }
    let store = store::open(&path, Options::default()).unwrap();
    let record = store.get_node(&key).unwrap().unwrap();
    assert_eq!(record.vmid, Some(vmid(100)));
    assert_eq!(record.power, PowerState::Stopped);
    assert_eq!(record.generation, 1);
    assert_eq!(store.storage_limits("pve").unwrap()["local-zfs"], 5);
    let events = store.list_events(&EventFilter::default(), 10).unwrap();
    assert_eq!(events.len(), 1);
    // Sequence numbers continue from disk.
    let next = store
        .append_event(&Event::info(Kind::Deleted, "deleted").manifest("m"))
        .unwrap();
    assert_eq!(next.seq, 2);
    assert_eq!(store.put_node(&key, &record, Durability::Flush).unwrap(), 2);
}

#[test]
fn store_directory_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("a/b/store");
    drop(store::open(&fresh, Options::default()).unwrap());
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);

    let existing = dir.path().join("loose");
    std::fs::create_dir(&existing).unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o755)).unwrap();
    drop(store::open(&existing, Options::default()).unwrap());
    let mode = std::fs::metadata(&existing).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "an existing directory is tightened");
}

#[test]
fn newer_schema_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    drop(store::open(&path, Options::default()).unwrap());
    raw_insert(&path, "meta", b"schema_version", b"99");
    let err = store::open(&path, Options::default()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NewerSchema {
                found: 99,
                supported,
                ..
            } if supported == store::SCHEMA_VERSION
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("schema version 99") && text.contains("upgrade homestak"),
        "{text}"
    );

    // The same rule on the in-memory backend.
    let backend = MemoryBackend::new();
    backend.insert(Tree::Meta, b"schema_version", b"3").unwrap();
    let err = store::KvStore::open(backend, Options::default()).unwrap_err();
    assert!(
        matches!(err, Error::NewerSchema { found: 3, .. }),
        "{err:?}"
    );
}

#[test]
fn a_version_1_store_is_migrated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    // What homestak wrote before events and manifest records took the
    // API's shapes.
    raw_insert(&path, "meta", b"schema_version", b"1");
    let event = br#"{"v":1,"data":{"seq":1,"at":1700000000000,"manifest":"m","node":"vm1","kind":"Normal","reason":"Created","message":"created vmid 100"}}"#;
    raw_insert(&path, "events", &1u64.to_be_bytes(), event);
    let manifest = br#"{"v":1,"data":{"last_applied_commit":"abc123","last_reconcile":{"started":1000,"finished":2000,"outcome":"converged","summary":"1 converged"}}}"#;
    raw_insert(&path, "manifests", b"m", manifest);
    let node = br#"{"v":1,"data":{"vmid":100,"updated":1000}}"#;
    raw_insert(&path, "nodes", b"m\0vm1", node);

    let store = store::open(&path, Options::default()).unwrap();
    assert_eq!(store.schema_version(), store::SCHEMA_VERSION);
    let events = store.list_events(&EventFilter::default(), 10).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, Kind::Created);
    assert_eq!(events[0].manifest.as_deref(), Some("m"));
    let record = store.get_manifest("m").unwrap().unwrap();
    assert_eq!(record.last_applied.unwrap().revision, "abc123");
    let node = store.get_node(&node_key("m", "vm1")).unwrap().unwrap();
    assert_eq!(node.vmid, Some(vmid(100)));
    drop(store);
    // Migrated once: a reopen finds version 2 and the same data.
    let store = store::open(&path, Options::default()).unwrap();
    assert_eq!(
        store.list_events(&EventFilter::default(), 10).unwrap(),
        events
    );
}

#[test]
fn foreign_or_damaged_stores_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let unversioned = dir.path().join("unversioned");
    raw_insert(&unversioned, "nodes", b"m\0vm1", b"{}");
    let err = store::open(&unversioned, Options::default()).unwrap_err();
    assert!(matches!(err, Error::Unversioned { .. }), "{err:?}");

    let zero = dir.path().join("zero");
    raw_insert(&zero, "meta", b"schema_version", b"0");
    assert!(matches!(
        store::open(&zero, Options::default()).unwrap_err(),
        Error::UnknownSchema { found: 0, .. }
    ));

    let garbage = dir.path().join("garbage");
    raw_insert(&garbage, "meta", b"schema_version", b"one");
    assert!(matches!(
        store::open(&garbage, Options::default()).unwrap_err(),
        Error::Corrupt { .. }
    ));
}

#[test]
fn damaged_records_error_on_read_and_heal_on_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    drop(store::open(&path, Options::default()).unwrap());
    raw_insert(&path, "nodes", b"m\0torn", b"{\"v\":1,\"data\":{\"vmid\":");
    raw_insert(&path, "nodes", b"m\0future", b"{\"v\":2,\"data\":{}}");
    raw_insert(
        &path,
        "manifests",
        b"m",
        b"{\"v\":1,\"data\":{\"last_applied\":",
    );
    let store = store::open(&path, Options::default()).unwrap();

    let torn = node_key("m", "torn");
    let err = store.get_node(&torn).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("\"m/torn\""), "{err}");
    // A damaged record does not hide the others from a listing.
    assert!(store.list_nodes("m").unwrap().is_empty());

    let future = store.get_node(&node_key("m", "future")).unwrap_err();
    assert!(
        matches!(future, Error::NewerRecord { version: 2, .. }),
        "{future:?}"
    );

    // Writing replaces the damaged value; PVE is re-observed anyway.
    store
        .put_node(&torn, &NodeRecord::default(), Durability::Flush)
        .unwrap();
    assert_eq!(store.get_node(&torn).unwrap().unwrap().generation, 1);
    // So does recording a run over a damaged manifest record.
    assert!(store.get_manifest("m").is_err());
    store
        .update_manifest("m", Durability::Flush, &mut |r| r.last_applied = None)
        .unwrap();
    assert!(store.get_manifest("m").unwrap().is_some());
}

#[test]
fn records_from_before_options_and_child_outcomes_still_read() {
    use homestak_engine::store::DelegationState;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    drop(store::open(&path, Options::default()).unwrap());
    // As earlier versions wrote them: tokens not yet made as "", a child
    // run that did not converge as "failed", an absent summary as "".
    let node = br#"{"v":1,"data":{"vmid":99001,"delegation":{"vmid":99001,"mode":"daemon","pve_token":"","daemon_token":"","state":"failed","message":"why"}}}"#;
    raw_insert(&path, "nodes", b"m\0inner", node);
    let manifest = br#"{"v":1,"data":{"generation":2,"last_reconcile":{"at":"1970-01-01T00:00:01Z","reason":"subtree","mode":"apply","outcome":"failed","duration_ms":3,"changed_nodes":0,"drifted_nodes":0,"summary":"","message":"cannot load","generation":2}}}"#;
    raw_insert(&path, "manifests", b"child", manifest);

    let store = store::open(&path, Options::default()).unwrap();
    let record = store.get_node(&node_key("m", "inner")).unwrap().unwrap();
    let d = record.delegation.unwrap();
    assert!(d.pve_token.is_none() && d.daemon_token.is_none(), "{d:?}");
    assert_eq!(
        d.state,
        DelegationState::Ended(homestak_api::Outcome::Failed)
    );
    assert_eq!(d.message.as_deref(), Some("why"));
    let last = store
        .get_manifest("child")
        .unwrap()
        .unwrap()
        .last_reconcile
        .unwrap();
    assert_eq!(last.summary, None);
    assert_eq!(last.message.as_deref(), Some("cannot load"));
}

#[test]
fn a_second_open_of_the_same_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let _first = store::open(&path, Options::default()).unwrap();
    let err = store::open(&path, Options::default()).unwrap_err();
    assert!(matches!(err, Error::Open { .. }), "{err:?}");
    assert!(
        err.to_string().contains("another homestak process"),
        "{err}"
    );
}

#[test]
fn memory_store_starts_empty_with_the_current_schema() {
    let store = store::memory();
    assert_eq!(store.location(), "memory");
    assert_eq!(store.schema_version(), store::SCHEMA_VERSION);
    assert!(store.list_manifests().unwrap().is_empty());
}
