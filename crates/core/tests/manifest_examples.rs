//! The examples in `manifests-examples/` and the JSON Schemas of our
//! manifest types.
//!
//! - every example carries the yaml-language-server modeline, loads with our
//!   model and builds a graph;
//! - every example validates against the upstream v2 schema
//!   (`../shared/site-config-fixture/v2/defs/manifest.schema.json`, skipped
//!   with a message when `../shared` is absent) and against our own;
//! - the real manifests of the shared fixture validate against our schemas.

use std::path::{Path, PathBuf};

use homestak_core::graph::ManifestGraph;
use homestak_core::model::{self, Manifest};
use serde_json::Value;

const MODELINE: &str = "# yaml-language-server: $schema=../crds/manifest-v2.schema.json";

fn crate_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn shared_dir() -> PathBuf {
    std::env::var_os("HOMESTAK_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate_dir().join("../shared"))
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn examples() -> Vec<PathBuf> {
    let files = yaml_files(&crate_dir().join("manifests-examples"));
    assert!(files.len() >= 2, "expected several examples");
    files
}

fn read_yaml(path: &Path) -> Value {
    homestak_base::yaml::read_file(path).unwrap_or_else(|e| panic!("{e}"))
}

/// A compiled schema, ready to validate instances.
struct Validator {
    schemas: boon::Schemas,
    index: boon::SchemaIndex,
}

impl Validator {
    fn new(url: &str, schema: Value) -> Validator {
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler.add_resource(url, schema).unwrap();
        let index = compiler
            .compile(url, &mut schemas)
            .unwrap_or_else(|e| panic!("{url} does not compile: {e:#}"));
        Validator { schemas, index }
    }

    fn ours(name: &str) -> Validator {
        let schema = model::json_schemas()
            .into_iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no schema {name}"))
            .1;
        Validator::new(
            &format!("file:///homestak/{name}.schema.json"),
            schema.to_value(),
        )
    }

    fn check(&self, instance: &Value) -> Result<(), String> {
        self.schemas
            .validate(instance, self.index)
            .map_err(|e| format!("{e}"))
    }
}

#[test]
fn examples_have_the_modeline_and_load() {
    for path in examples() {
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.lines().next(),
            Some(MODELINE),
            "{} must start with the schema modeline",
            path.display()
        );
        let manifest = Manifest::from_file(&path).unwrap_or_else(|e| panic!("{}", e.located()));
        assert!(
            manifest.has_nodes(),
            "{} should be a v2 manifest",
            path.display()
        );
        let stem = path.file_stem().unwrap().to_string_lossy();
        assert_eq!(manifest.name(), stem, "name matches the file");
        ManifestGraph::new(&manifest).unwrap();
    }
}

#[test]
fn examples_validate_against_the_upstream_schema() {
    let upstream = shared_dir().join("site-config-fixture/v2/defs/manifest.schema.json");
    if !upstream.is_file() {
        println!(
            "manifest_examples: SKIPPED upstream schema check, {} not found",
            upstream.display()
        );
        return;
    }
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&upstream).unwrap()).unwrap();
    let validator = Validator::new("file:///upstream/manifest.schema.json", schema);
    for path in examples() {
        if let Err(e) = validator.check(&read_yaml(&path)) {
            panic!("{} fails the upstream schema: {e}", path.display());
        }
    }
}

#[test]
fn examples_validate_against_our_schema() {
    let validator = Validator::ours("manifest-v2");
    for path in examples() {
        if let Err(e) = validator.check(&read_yaml(&path)) {
            panic!("{} fails our v2 schema: {e}", path.display());
        }
    }
}

#[test]
fn our_schemas_reject_what_the_model_rejects() {
    let v2 = Validator::ours("manifest-v2");
    let base = read_yaml(&crate_dir().join("manifests-examples/demo-flat.yaml"));
    let mutate = |f: &dyn Fn(&mut Value)| {
        let mut v = base.clone();
        f(&mut v);
        v
    };
    let bad = [
        mutate(&|v| v["schema_version"] = 3.into()),
        mutate(&|v| v["name"] = "".into()),
        mutate(&|v| v["nodes"] = Value::Array(vec![])),
        mutate(&|v| v["nodes"][0]["type"] = "lxc".into()),
        mutate(&|v| v["nodes"][0]["vmid"] = 42.into()),
        mutate(&|v| v["nodes"][0]["name"] = "bad name".into()),
        mutate(&|v| v["nodes"][0]["parnet"] = "x".into()),
        mutate(&|v| v["settings"]["on_error"] = "panic".into()),
        mutate(&|v| v["execution"] = serde_json::json!({"default_mode": "later"})),
    ];
    for instance in bad {
        assert!(v2.check(&instance).is_err(), "schema accepted {instance}");
        assert!(
            Manifest::from_value(&instance, model::Origin::Memory).is_err(),
            "model accepted {instance}"
        );
    }
}

#[test]
fn shared_fixture_manifests_validate_against_our_schemas() {
    let dir = shared_dir().join("site-config-fixture/manifests");
    if !dir.is_dir() {
        println!(
            "manifest_examples: SKIPPED fixture schema check, {} not found",
            dir.display()
        );
        return;
    }
    let v1 = Validator::ours("manifest-v1");
    let v2 = Validator::ours("manifest-v2");
    let files = yaml_files(&dir);
    assert!(!files.is_empty());
    for path in files {
        let instance = read_yaml(&path);
        let validator = match instance.get("schema_version").and_then(Value::as_u64) {
            Some(2) => &v2,
            _ => &v1,
        };
        if let Err(e) = validator.check(&instance) {
            panic!("{} fails our schema: {e}", path.display());
        }
    }
}
