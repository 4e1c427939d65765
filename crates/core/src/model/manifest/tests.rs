//! Tests of the manifest model on our own fixtures (`tests/fixtures/manifests`).

use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;
use crate::model::{NodeType, OnError};

fn fixture(name: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .join("tests/fixtures/manifests")
        .join(name)
}

fn load(name: &str) -> Manifest {
    Manifest::from_file(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {}", e.located()))
}

fn names<'a>(levels: impl IntoIterator<Item = &'a Level>) -> Vec<&'a str> {
    levels.into_iter().map(|l| l.name.as_str()).collect()
}

#[test]
fn every_invalid_fixture_fails_with_its_expected_message() {
    let dir = fixture("");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if !file.starts_with("invalid-") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let expected = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{file} has no '# expect:' first line"))
            .replace("{file}", &path.display().to_string());
        let err = Manifest::from_file(&path).expect_err(&file);
        assert_eq!(err.to_string(), expected, "{file}");
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} invalid fixtures found");
}

#[test]
fn bad_names_are_refused_at_their_line_and_column() {
    // A name the marks would trim never matched its own VMs: every
    // reconcile made another. It is refused where it is written.
    let path = fixture("invalid-manifest-name.yaml");
    let err = Manifest::from_file(&path).unwrap_err();
    assert!(matches!(
        err.problem(),
        Some(Problem::InvalidManifestName { name }) if name == " demo"
    ));
    let shown = err.located().to_string();
    assert!(
        shown.starts_with(&format!("{}:3:7: manifest name \" demo\"", path.display())),
        "{shown}"
    );
    let path = fixture("invalid-node-name.yaml");
    let shown = Manifest::from_file(&path)
        .unwrap_err()
        .located()
        .to_string();
    assert!(
        shown.starts_with(&format!("{}:5:11: Node 0 (my_vm)", path.display())),
        "{shown}"
    );
    // JSON has no lines: the message alone.
    let err = Manifest::from_json(
        r#"{"schema_version":2,"name":"a b","nodes":[{"name":"x","type":"vm"}]}"#,
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::Invalid { position: None, .. }),
        "{err:?}"
    );
}

#[test]
fn validation_errors_carry_the_file_for_located_messages() {
    let path = fixture("invalid-duplicate.yaml");
    let err = Manifest::from_file(&path).unwrap_err();
    assert_eq!(err.path(), Some(path.as_path()));
    assert_eq!(
        err.located().to_string(),
        format!("{}: Duplicate node name: 'web'", path.display())
    );
    assert!(matches!(
        err.problem(),
        Some(Problem::DuplicateName { name }) if name == "web"
    ));
}

#[test]
fn yaml_errors_have_line_and_column_and_the_parser_cause() {
    let path = fixture("invalid-yaml.yaml");
    let err = Manifest::from_file(&path).unwrap_err();
    let Error::Yaml { position, .. } = &err else {
        panic!("expected a YAML error, got {err:?}");
    };
    assert_eq!(*position, Some((6, 4)));
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn v1_levels_and_settings() {
    let m = load("valid-v1.yaml");
    assert_eq!(m.schema_version(), SchemaVersion::V1);
    assert_eq!(names(m.levels()), ["outer", "middle", "inner"]);
    assert_eq!(m.depth(), 3);
    assert!(!m.is_leaf() && !m.has_nodes());
    assert!(m.nodes().is_none() && m.pattern().is_none());
    assert_eq!(m.settings().timeout_buffer, 45);
    assert_eq!(m.settings().on_error, OnError::Rollback);
    let [outer, middle, inner] = m.levels() else {
        panic!("three levels");
    };
    assert!(!outer.is_inline() && outer.vmid_offset == 10);
    assert!(middle.is_inline() && !middle.is_vm_preset_mode());
    assert!(inner.is_inline() && inner.is_vm_preset_mode());
}

#[test]
fn v1_serialisation_drops_on_error_like_the_reference() {
    let m = load("valid-v1.yaml");
    let value = m.to_value();
    assert_eq!(
        value["settings"],
        json!({"verify_ssh": true, "cleanup_on_failure": true, "timeout_buffer": 45})
    );
    assert_eq!(
        value["levels"][0],
        json!({"name": "outer", "post_scenario": null, "post_scenario_args": [], "env": "dev", "vmid_offset": 10})
    );
    let back = Manifest::from_json(&m.to_json()).unwrap();
    assert_eq!(back.levels(), m.levels());
    assert_eq!(back.settings().on_error, OnError::Stop);
}

#[test]
fn v2_levels_are_breadth_first_with_document_order_siblings() {
    let m = load("valid-v2-tree.yaml");
    assert_eq!(m.schema_version(), SchemaVersion::V2);
    assert!(m.has_nodes());
    // Roots hv, solo (document order); then hv's children web, cache,
    // inner-hv; then inner-hv's child leaf.
    assert_eq!(
        names(m.levels()),
        ["hv", "solo", "web", "cache", "inner-hv", "leaf"]
    );
    let order: Vec<&str> = m
        .nodes_in_creation_order()
        .unwrap()
        .iter()
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(order, names(m.levels()));
    let hv = &m.levels()[0];
    assert_eq!(hv.vm_preset.as_deref(), Some("large"));
    assert_eq!(hv.post_scenario.as_deref(), Some("pve-setup"));
    let cache = &m.levels()[3];
    assert!(!cache.is_inline(), "a spec-only node has no inline VM");
}

#[test]
fn v2_execution_modes() {
    let m = load("valid-v2-tree.yaml");
    let mode = |name: &str| m.execution_mode(m.node(name).unwrap());
    assert_eq!(mode("hv"), ExecutionMode::Push);
    assert_eq!(mode("web"), ExecutionMode::Pull);
    assert_eq!(m.node("cache").unwrap().kind, NodeType::Ct);
    let minimal = load("valid-v2-minimal.yaml");
    assert_eq!(
        minimal.execution_mode(minimal.node("only").unwrap()),
        ExecutionMode::Push
    );
}

#[test]
fn v2_serialisation_round_trips() {
    let m = load("valid-v2-tree.yaml");
    let value = m.to_value();
    assert_eq!(value["execution"], json!({"default_mode": "pull"}));
    assert_eq!(
        value["settings"],
        json!({"verify_ssh": false, "cleanup_on_failure": true, "timeout_buffer": 60, "on_error": "continue"})
    );
    assert_eq!(value["nodes"][2]["execution"], json!({"mode": "push"}));
    let back = Manifest::from_json(&m.to_json()).unwrap();
    assert_eq!(back, m);

    let minimal = load("valid-v2-minimal.yaml");
    let value = minimal.to_value();
    assert_eq!(value["schema_version"], json!(2));
    assert_eq!(value["description"], json!(""));
    assert_eq!(value["pattern"], json!("flat"));
    assert!(
        value.get("execution").is_none(),
        "empty execution is omitted"
    );
}

#[test]
fn depth_limit() {
    let m = load("valid-v2-tree.yaml");
    assert_eq!(m.limit_depth(0), m);
    assert_eq!(m.limit_depth(6), m);
    let cut = m.limit_depth(2);
    assert_eq!(cut.name(), "lab-tree[:2]");
    assert_eq!(names(cut.levels()), ["hv", "solo"]);
    assert!(!cut.has_nodes(), "a cut v2 manifest keeps only levels");
    let value = cut.to_value();
    assert_eq!(value["schema_version"], json!(2));
    assert!(value.get("nodes").is_none() && value.get("pattern").is_none());
    let err = Manifest::from_json(&cut.to_json()).unwrap_err();
    assert_eq!(err.to_string(), "Manifest v2 missing required field: nodes");
}

#[test]
fn remaining() {
    let m = load("valid-v1.yaml");
    let rest = m.remaining().unwrap();
    assert_eq!(rest.name(), "lab-v1[1:]");
    assert_eq!(names(rest.levels()), ["middle", "inner"]);
    let last = rest.remaining().unwrap();
    assert_eq!(
        last.remaining().unwrap_err().to_string(),
        "Cannot get remaining manifest: already at leaf level"
    );
}

#[test]
fn json_input_errors() {
    let err = Manifest::from_json("{\"schema_version\": 2,").unwrap_err();
    assert!(matches!(err, Error::Json { .. }));
    assert!(err.to_string().starts_with("Invalid manifest JSON"));
    let err = Manifest::from_json("[1, 2]").unwrap_err();
    assert_eq!(
        err.to_string(),
        "Manifest JSON must be a JSON object, got a list"
    );
    let err = Manifest::from_json("null").unwrap_err();
    assert!(matches!(err, Error::Empty { .. }));
}

#[test]
fn from_v2_checks_the_tree_in_reference_order() {
    let node = |name: &str, parent: Option<&str>| {
        let mut n = Node::new(crate::model::NodeName::new(name).unwrap(), NodeType::Vm);
        n.parent = parent.map(|p| crate::model::NodeName::new(p).unwrap());
        n
    };
    let doc = |nodes| v2::Document {
        schema_version: Version,
        name: "t".into(),
        description: String::new(),
        pattern: Pattern::Flat,
        nodes,
        settings: Settings::default(),
        execution: Execution::default(),
    };
    assert_eq!(
        Manifest::from_v2(doc(vec![node("a", Some("zz")), node("a", None)])),
        Err(Problem::DuplicateName { name: "a".into() })
    );
    assert_eq!(
        Manifest::from_v2(doc(vec![node("a", None), node("b", Some("zz"))])),
        Err(Problem::UnknownParent {
            node: "b".into(),
            parent: "zz".into()
        })
    );
    // w leads into the cycle x -> y -> z -> x; the report names x, the
    // first node of the cycle reached.
    assert_eq!(
        Manifest::from_v2(doc(vec![
            node("w", Some("x")),
            node("x", Some("y")),
            node("y", Some("z")),
            node("z", Some("x")),
        ])),
        Err(Problem::Cycle { node: "x".into() })
    );
    assert_eq!(Manifest::from_v2(doc(vec![])), Err(Problem::NoNodes));
}

#[test]
fn vm_id_overrides_set_the_node_and_its_level_and_unknown_names_are_refused() {
    let mut manifest = load("valid-v2-tree.yaml");
    let first = manifest.levels()[0].name.clone();
    let vmid = VmId::new(99990).unwrap();
    manifest.set_vmid(&first, vmid).unwrap();
    assert_eq!(manifest.levels()[0].vmid, Some(vmid));
    assert_eq!(
        manifest.node(first.as_str()).and_then(|n| n.vmid),
        Some(vmid)
    );
    let nobody = NodeName::new("no-such-node").unwrap();
    let err = manifest.set_vmid(&nobody, vmid).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("no node no-such-node") && text.contains(first.as_str()),
        "{text}"
    );
    let mut v1 = load("valid-v1.yaml");
    let name = v1.levels()[1].name.clone();
    v1.set_vmid(&name, vmid).unwrap();
    assert_eq!(v1.levels()[1].vmid, Some(vmid));
}
