//! `crds/` must match what our types generate; regenerate with `make crds`.

use std::path::Path;

#[test]
fn committed_crds_are_current() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("crds");
    let stale = homestak_core::crds::check(&dir).expect("crds/ is readable");
    let list: Vec<String> = stale.iter().map(ToString::to_string).collect();
    assert!(
        stale.is_empty(),
        "crds/ is stale; run `make crds` and commit:\n{}",
        list.join("\n")
    );
}

#[test]
fn check_notices_a_changed_file() {
    let tmp = tempfile::tempdir().unwrap();
    homestak_core::crds::write(tmp.path()).unwrap();
    assert!(homestak_core::crds::check(tmp.path()).unwrap().is_empty());
    let victim = tmp.path().join("spec.schema.json");
    std::fs::write(&victim, "{}\n").unwrap();
    std::fs::write(tmp.path().join("old.schema.json"), "{}\n").unwrap();
    let stale = homestak_core::crds::check(tmp.path()).unwrap();
    assert_eq!(
        stale,
        vec![
            homestak_core::crds::Stale::Outdated(victim),
            homestak_core::crds::Stale::Extra(tmp.path().join("old.schema.json")),
        ]
    );
}
