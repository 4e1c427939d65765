//! One suite, run on both stores: every test is a generic function over
//! `&dyn Store`, instantiated for the in-memory and the sled store.

use std::sync::Arc;
use std::time::Duration;

use homestak_api::step::Step;
use homestak_api::{
    Applied, Event, Kind, LastReconcile, Level, ManifestRecord, Mode, Outcome, Reason, Subtree,
};
use homestak_engine::store::{
    self, ConditionStatus, Durability, Error, EventFilter, InFlight, LeaseOutcome, NodeRecord,
    Options, PowerState, Store, Timestamp,
};

use crate::ids::{node_key, vmid};

/// A store plus whatever must outlive it (the sled temp dir).
struct Fixture {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

fn memory(options: Options) -> Fixture {
    let store = store::KvStore::open(store::memory::MemoryBackend::new(), options).unwrap();
    Fixture {
        store: Arc::new(store),
        _dir: None,
    }
}

fn sled(options: Options) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = store::open(&dir.path().join("store"), options).unwrap();
    Fixture {
        store: Arc::new(store),
        _dir: Some(dir),
    }
}

/// Instantiates `$test(&dyn Store)` for both stores.
macro_rules! both {
    ($test:ident) => {
        both!($test, Options::default());
    };
    ($test:ident, $options:expr) => {
        mod $test {
            use super::*;
            #[test]
            fn memory() {
                let fixture = super::memory($options);
                super::$test(fixture.store.as_ref());
            }
            #[test]
            fn sled() {
                let fixture = super::sled($options);
                super::$test(fixture.store.as_ref());
            }
        }
    };
}

fn record(id: u32) -> NodeRecord {
    let mut record = NodeRecord {
        vmid: Some(vmid(id)),
        pve_node: Some("pve".parse().unwrap()),
        ip: Some("127.1.0.5".into()),
        power: PowerState::Running,
        spec_hash: Some("sha256:abc".into()),
        last_error: None,
        ..NodeRecord::default()
    };
    record.set_condition(
        "Ready",
        ConditionStatus::True,
        "Converged",
        "",
        Timestamp::from_millis(5),
    );
    record
}

fn node_round_trip(store: &dyn Store) {
    let key = node_key("n2-quick", "vm1");
    assert_eq!(store.get_node(&key).unwrap(), None);
    assert_eq!(
        store
            .put_node(&key, &record(100), Durability::Flush)
            .unwrap(),
        1
    );
    let stored = store.get_node(&key).unwrap().unwrap();
    assert_eq!(stored.generation, 1);
    assert!(stored.updated > Timestamp::from_millis(0));
    assert_eq!(
        NodeRecord {
            generation: 0,
            updated: Timestamp::from_millis(0),
            ..stored.clone()
        },
        record(100)
    );
    // The store owns the generation: a caller's value is ignored.
    let stale = NodeRecord {
        generation: 77,
        ..record(101)
    };
    assert_eq!(store.put_node(&key, &stale, Durability::Lazy).unwrap(), 2);
    assert_eq!(store.get_node(&key).unwrap().unwrap().vmid, Some(vmid(101)));

    // Listing is per manifest; "n2" must not see "n2-quick" (key prefixes).
    store
        .put_node(&node_key("n2-quick", "vm0"), &record(102), Durability::Lazy)
        .unwrap();
    store
        .put_node(&node_key("n2", "vm9"), &record(103), Durability::Lazy)
        .unwrap();
    let names: Vec<String> = store
        .list_nodes("n2-quick")
        .unwrap()
        .into_iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(names, ["vm0", "vm1"]);
    assert_eq!(store.list_nodes("n2").unwrap().len(), 1);
    assert!(store.list_nodes("n").unwrap().is_empty());

    assert!(store.delete_node(&key, Durability::Flush).unwrap());
    assert!(!store.delete_node(&key, Durability::Flush).unwrap());
    assert_eq!(store.get_node(&key).unwrap(), None);
}
both!(node_round_trip);

fn update_node_records_in_flight_tasks(store: &dyn Store) {
    let key = node_key("m", "vm1");
    let written = store
        .update_node(&key, Durability::Flush, &mut |r| {
            r.vmid = Some(vmid(100));
            r.in_flight = Some(InFlight {
                upid: "UPID:pve:00000A72:0000C9CC:5FBE5E5C:qmcreate:100:root@pam:".into(),
                step: Step::CreateVm.into(),
                started: Timestamp::from_millis(10),
            });
        })
        .unwrap();
    assert_eq!(written.generation, 1);
    let read = store.get_node(&key).unwrap().unwrap();
    assert_eq!(read, written);
    assert_eq!(read.in_flight.as_ref().unwrap().step, Step::CreateVm);
    let cleared = store
        .update_node(&key, Durability::Flush, &mut |r| {
            r.in_flight = None;
            r.consecutive_failures = 0;
        })
        .unwrap();
    assert_eq!(cleared.generation, 2);
    assert_eq!(cleared.vmid, Some(vmid(100)), "untouched fields survive");
    assert!(cleared.in_flight.is_none());
}
both!(update_node_records_in_flight_tasks);

fn concurrent_updates_lose_nothing(store: &dyn Store) {
    let key = node_key("m", "busy");
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..50 {
                    store
                        .update_node(&key, Durability::Lazy, &mut |r| r.consecutive_failures += 1)
                        .unwrap();
                }
            });
        }
    });
    let record = store.get_node(&key).unwrap().unwrap();
    assert_eq!(record.consecutive_failures, 200);
    assert_eq!(record.generation, 200);
}
both!(concurrent_updates_lose_nothing);

fn event(manifest: &str, node: Option<&str>, i: u64) -> Event {
    Event {
        seq: 0,
        at: Timestamp::from_millis(i),
        level: if i.is_multiple_of(2) {
            Level::Info
        } else {
            Level::Warning
        },
        kind: Kind::Created,
        manifest: Some(manifest.into()),
        node: node.map(|n| n.parse().unwrap()),
        step: None,
        state: None,
        message: format!("event {i}"),
    }
}

fn events_are_newest_first_and_bounded(store: &dyn Store) {
    for i in 1..=25u64 {
        let node = if i.is_multiple_of(3) {
            Some("vm3")
        } else {
            Some("vm1")
        };
        let manifest = if i.is_multiple_of(5) { "other" } else { "m" };
        let recorded = store.append_event(&event(manifest, node, i)).unwrap();
        assert_eq!(recorded.seq, i);
    }
    let all = store.list_events(&EventFilter::default(), 100).unwrap();
    // Retention is 10 in this instantiation: events 16..=25 remain.
    let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (16..=25).rev().collect::<Vec<_>>());
    assert_eq!(all[0].message, "event 25");
    // The live feed reads forward from a number.
    let feed: Vec<u64> = store
        .events_since(20, 3)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(feed, [21, 22, 23]);
    assert_eq!(store.events_since(0, 100).unwrap().len(), 10);
    assert!(store.events_since(25, 100).unwrap().is_empty());
    assert_eq!(store.last_event_seq().unwrap(), 25);
    // Events about no manifest (the daemon's own) are kept too.
    let own = store
        .append_event(&Event::info(Kind::Started, "serving"))
        .unwrap();
    assert_eq!(own.seq, 26);

    let filter = EventFilter {
        manifest: Some("m".into()),
        node: Some("vm3".parse().unwrap()),
    };
    let seqs: Vec<u64> = store
        .list_events(&filter, 100)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, [24, 21, 18]);
    let limited = store
        .list_events(
            &EventFilter {
                manifest: Some("m".into()),
                node: None,
            },
            3,
        )
        .unwrap();
    assert_eq!(
        limited.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [24, 23, 22]
    );
    assert!(
        store
            .list_events(&EventFilter::default(), 0)
            .unwrap()
            .is_empty()
    );
    // Sequence numbers continue after pruning; they are never reused.
    assert_eq!(store.append_event(&event("m", None, 27)).unwrap().seq, 27);
}
both!(
    events_are_newest_first_and_bounded,
    Options {
        event_retention: 10
    }
);

fn leases_have_one_holder_until_expiry(store: &dyn Store) {
    let ttl = Duration::from_secs(15);
    let t0 = Timestamp::from_millis(1_000_000);
    let LeaseOutcome::Acquired(lease) = store.acquire_lease("tier/father", "a", ttl, t0).unwrap()
    else {
        panic!("free lease not acquired");
    };
    assert_eq!(lease.expires, t0.plus(ttl));

    // Contention: b cannot take it, nor renew it, while it is live.
    let t1 = t0.plus(Duration::from_secs(5));
    match store.acquire_lease("tier/father", "b", ttl, t1).unwrap() {
        LeaseOutcome::Held(held) => assert_eq!(held.holder, "a"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.renew_lease("tier/father", "b", ttl, t1),
        Err(Error::LeaseLost { .. })
    ));
    let renewed = store.renew_lease("tier/father", "a", ttl, t1).unwrap();
    assert_eq!(renewed.acquired, t0);
    assert_eq!(renewed.expires, t1.plus(ttl));
    // Re-acquiring one's own lease renews it.
    assert!(matches!(
        store.acquire_lease("tier/father", "a", ttl, t1).unwrap(),
        LeaseOutcome::Acquired(_)
    ));

    // Expiry: b takes over, and a finds it lost.
    let t2 = t1.plus(ttl);
    match store.acquire_lease("tier/father", "b", ttl, t2).unwrap() {
        LeaseOutcome::Acquired(l) => {
            assert_eq!(l.holder, "b");
            assert_eq!(l.acquired, t2);
        }
        other => panic!("{other:?}"),
    }
    let err = store.renew_lease("tier/father", "a", ttl, t2).unwrap_err();
    assert!(err.to_string().contains("holder: b"), "{err}");

    // Release only by the holder.
    assert!(!store.release_lease("tier/father", "a").unwrap());
    assert!(store.release_lease("tier/father", "b").unwrap());
    assert_eq!(store.get_lease("tier/father").unwrap(), None);
    assert!(store.renew_lease("tier/father", "b", ttl, t2).is_err());
    // Other lease names are independent.
    assert!(matches!(
        store.acquire_lease("tier/child", "a", ttl, t2).unwrap(),
        LeaseOutcome::Acquired(_)
    ));
}
both!(leases_have_one_holder_until_expiry);

fn manifest_records_round_trip(store: &dyn Store) {
    assert_eq!(store.get_manifest("n2-quick").unwrap(), None);
    let record = ManifestRecord {
        generation: 4,
        last_applied: Some(Applied {
            revision: "0123abcd".into(),
            at: Timestamp::from_millis(2),
        }),
        last_reconcile: Some(LastReconcile {
            revision: Some("0123abcd".into()),
            at: Timestamp::from_millis(1),
            reason: Reason::Commit,
            mode: Mode::Apply,
            outcome: Outcome::Failed,
            duration_ms: 1,
            changed_nodes: 1,
            drifted_nodes: 1,
            summary: Some("1 converged, 1 failed".into()),
            message: Some("1 converged, 1 failed".into()),
            generation: 3,
        }),
    };
    store
        .put_manifest("n2-quick", &record, Durability::Flush)
        .unwrap();
    store
        .put_manifest("a-first", &ManifestRecord::default(), Durability::Lazy)
        .unwrap();
    assert_eq!(
        store.get_manifest("n2-quick").unwrap(),
        Some(record.clone())
    );
    assert_eq!(store.list_manifests().unwrap(), ["a-first", "n2-quick"]);
    // A change reads what is there and keeps what it does not touch.
    let changed = store
        .update_manifest("n2-quick", Durability::Flush, &mut |r| {
            r.last_applied = None
        })
        .unwrap();
    assert_eq!(changed.last_reconcile, record.last_reconcile);
    assert_eq!(changed.generation, 4);
    assert_eq!(store.get_manifest("n2-quick").unwrap(), Some(changed));
    // A generation bump, as a parent's request makes one.
    let bumped = store
        .update_manifest("n2-quick", Durability::Flush, &mut |r| r.generation += 1)
        .unwrap();
    assert_eq!(bumped.generation, 5);
    assert_eq!(
        store.get_manifest("n2-quick").unwrap().unwrap().generation,
        5
    );
    let fresh = store
        .update_manifest("new", Durability::Lazy, &mut |_| {})
        .unwrap();
    assert_eq!(fresh, ManifestRecord::default());
}
both!(manifest_records_round_trip);

fn subtrees_are_kept_by_name(store: &dyn Store) {
    assert!(store.list_subtrees().unwrap().is_empty());
    let subtree = |name: &str, revision: &str| Subtree {
        name: name.into(),
        host: "pve".into(),
        manifest: serde_json::json!({"schema_version": 2, "name": name}),
        revision: revision.into(),
        received_at: Timestamp::from_millis(7),
        from: "parent".into(),
        destroy: false,
    };
    store
        .put_subtree(&subtree("inner", "subtree:1"), Durability::Flush)
        .unwrap();
    store
        .put_subtree(&subtree("another", "subtree:2"), Durability::Flush)
        .unwrap();
    // Handing a subtree over again replaces it.
    store
        .put_subtree(&subtree("inner", "subtree:3"), Durability::Flush)
        .unwrap();
    let kept = store.list_subtrees().unwrap();
    assert_eq!(
        kept.iter()
            .map(|s| (s.name.as_str(), s.revision.as_str()))
            .collect::<Vec<_>>(),
        [("another", "subtree:2"), ("inner", "subtree:3")]
    );
    assert_eq!(
        store.get_subtree("inner").unwrap().unwrap().revision,
        "subtree:3"
    );
    // Marked for destruction: the mark is kept with it.
    let doomed = Subtree {
        destroy: true,
        ..subtree("inner", "subtree:3")
    };
    store.put_subtree(&doomed, Durability::Flush).unwrap();
    assert_eq!(store.get_subtree("inner").unwrap(), Some(doomed));
    assert!(store.delete_subtree("inner", Durability::Flush).unwrap());
    assert!(!store.delete_subtree("inner", Durability::Flush).unwrap());
    assert_eq!(store.get_subtree("inner").unwrap(), None);
    assert_eq!(store.list_subtrees().unwrap().len(), 1);
    assert!(store.get_subtree("").is_err());
    assert!(
        store
            .put_subtree(&subtree("", "subtree:4"), Durability::Lazy)
            .is_err()
    );
}
both!(subtrees_are_kept_by_name);

fn bad_names_are_refused(store: &dyn Store) {
    for key in [
        // (An empty or NUL node name cannot be built: NodeName checks it.)
        node_key("", "vm"),
        node_key("m\0x", "vm"),
    ] {
        let err = store
            .put_node(&key, &NodeRecord::default(), Durability::Lazy)
            .unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }), "{err}");
        assert!(store.get_node(&key).is_err());
    }
    assert!(store.list_nodes("").is_err());
    assert!(
        store
            .append_event(&Event::info(Kind::Created, "x").manifest(""))
            .is_err()
    );
    assert!(
        store
            .acquire_lease("l", "", Duration::from_secs(1), Timestamp::from_millis(0))
            .is_err()
    );
    assert_eq!(store.schema_version(), store::SCHEMA_VERSION);
    store.flush().unwrap();
}
both!(bad_names_are_refused);

fn storage_limits_round_trip_per_tier(store: &dyn Store) {
    use std::collections::BTreeMap;
    assert!(store.storage_limits("pve@a:8006").unwrap().is_empty());
    let limits = BTreeMap::from([("local-zfs".to_string(), 6), ("local".to_string(), 2)]);
    store
        .put_storage_limits("pve@a:8006", &limits, Durability::Lazy)
        .unwrap();
    // Another tier's storage of the same name is its own.
    store
        .put_storage_limits(
            "pve@b:8006",
            &BTreeMap::from([("local-zfs".to_string(), 1)]),
            Durability::Flush,
        )
        .unwrap();
    // A later run replaces the storages it used and keeps the others.
    store
        .put_storage_limits(
            "pve@a:8006",
            &BTreeMap::from([("local-zfs".to_string(), 9)]),
            Durability::Flush,
        )
        .unwrap();
    assert_eq!(
        store.storage_limits("pve@a:8006").unwrap(),
        BTreeMap::from([("local".to_string(), 2), ("local-zfs".to_string(), 9)])
    );
    assert_eq!(
        store.storage_limits("pve@b:8006").unwrap(),
        BTreeMap::from([("local-zfs".to_string(), 1)])
    );
    assert!(store.storage_limits("").is_err());
}
both!(storage_limits_round_trip_per_tier);
