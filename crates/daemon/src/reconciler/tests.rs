use super::desired::named_like_its_file;
use super::*;
use homestak_base::time::Timestamp;

fn applied(rev: &str) -> Applied {
    Applied {
        revision: rev.into(),
        at: Timestamp::EPOCH,
    }
}

#[test]
fn mode_applies_new_revisions_and_follows_policy_otherwise() {
    use DriftPolicy::{Correct, Report};
    use Reason::*;
    let a = applied("r1");
    assert_eq!(decide_mode(Resync, Report, "r2", Some(&a)), Mode::Apply);
    assert_eq!(decide_mode(Startup, Report, "r1", None), Mode::Apply);
    assert_eq!(
        decide_mode(Resync, Report, "r1", Some(&a)),
        Mode::ReportOnly
    );
    assert_eq!(
        decide_mode(Reload, Report, "r1", Some(&a)),
        Mode::ReportOnly
    );
    assert_eq!(decide_mode(Resync, Correct, "r1", Some(&a)), Mode::Apply);
    assert_eq!(decide_mode(Api, Report, "r1", Some(&a)), Mode::Apply);
}

#[test]
fn a_managed_manifest_is_named_like_its_file() {
    let manifest = |name: &str| {
        let text = format!("schema_version: 2\nname: {name}\nnodes:\n  - {{name: a, type: vm}}\n");
        Arc::new(Manifest::from_yaml_str(&text, std::path::Path::new("m.yaml")).unwrap())
    };
    assert!(named_like_its_file("demo", manifest("demo")).is_ok());
    let err = named_like_its_file("demo", manifest("other")).unwrap_err();
    assert!(
        err.contains("manifests/demo.yaml names itself 'other'"),
        "{err}"
    );
}

#[test]
fn subtree_revisions_are_stable_digests() {
    let a = subtree_revision(&serde_json::json!({"name": "x"}));
    assert_eq!(a, subtree_revision(&serde_json::json!({"name": "x"})));
    assert_ne!(a, subtree_revision(&serde_json::json!({"name": "y"})));
    assert!(a.starts_with("subtree:"));
}
