//! `crds/` and the demo site-config's `.schemas/` must match what our
//! types generate; regenerate both with `make crds`. Every YAML file of the
//! demo site-config names its schema in a `yaml-language-server` modeline,
//! as a user's site-config would, and validates against it.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).to_path_buf()
}

fn assert_current(dir: &Path) {
    let stale = homestak_core::crds::check(dir).expect("the schema directory is readable");
    let list: Vec<String> = stale.iter().map(ToString::to_string).collect();
    assert!(
        stale.is_empty(),
        "{} is stale; run `make crds` and commit:\n{}",
        dir.display(),
        list.join("\n")
    );
}

#[test]
fn committed_crds_are_current() {
    assert_current(&repo().join("crds"));
}

#[test]
fn the_demo_site_configs_schemas_are_current() {
    assert_current(&repo().join("demo/site-config/.schemas"));
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

#[test]
fn every_demo_site_config_file_names_a_schema_it_validates_against() {
    const PREFIX: &str = "# yaml-language-server: $schema=";
    let root = repo().join("demo/site-config");
    let mut files = Vec::new();
    yaml_files(&root, &mut files);
    files.sort();
    let mut checked = 0;
    for path in &files {
        // Secrets have no schema: they hold what the loader never prints.
        if path.file_name().is_some_and(|n| n == "secrets.yaml") {
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap();
        let first = text.lines().next().unwrap_or_default();
        let rel = first
            .strip_prefix(PREFIX)
            .unwrap_or_else(|| panic!("{} must start with `{PREFIX}...`", path.display()));
        let schema_path = path
            .parent()
            .unwrap()
            .join(rel)
            .canonicalize()
            .unwrap_or_else(|e| panic!("{}: {rel} not found: {e}", path.display()));
        assert!(
            schema_path.starts_with(root.join(".schemas").canonicalize().unwrap()),
            "{} points outside the site-config's .schemas/",
            path.display()
        );
        let schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&schema_path).unwrap_or_else(|e| {
                panic!(
                    "{}: {} unreadable: {e}",
                    path.display(),
                    schema_path.display()
                )
            }))
            .unwrap();
        let url = "file:///demo/schema.json";
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler.add_resource(url, schema).unwrap();
        let index = compiler.compile(url, &mut schemas).unwrap();
        let instance: serde_json::Value = homestak_base::yaml::read_file(path).unwrap();
        if let Err(e) = schemas.validate(&instance, index) {
            panic!("{} does not validate against {rel}: {e}", path.display());
        }
        checked += 1;
    }
    assert!(
        checked >= 4,
        "expected the site file and the presets, checked {checked}"
    );
}

/// What `homestak crds --out DIR` writes (core only renders).
fn write_all(dir: &Path) {
    for doc in homestak_core::crds::documents() {
        std::fs::write(dir.join(doc.file_name), doc.text).unwrap();
    }
}

#[test]
fn documents_are_one_named_schema_file_each() {
    let docs = homestak_core::crds::documents();
    let stems: Vec<&str> = homestak_core::crds::all()
        .into_iter()
        .map(|(stem, _)| stem)
        .collect();
    assert_eq!(docs.len(), stems.len());
    for (doc, stem) in docs.iter().zip(&stems) {
        assert_eq!(doc.file_name, format!("{stem}.schema.json"));
        assert!(!doc.file_name.contains('/'), "{}", doc.file_name);
        assert!(doc.text.ends_with("}\n"), "{}", doc.file_name);
        let schema: serde_json::Value = serde_json::from_str(&doc.text).unwrap();
        assert!(schema.is_object(), "{}", doc.file_name);
    }
    let mut names: Vec<&str> = docs.iter().map(|d| d.file_name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), docs.len(), "file names repeat");
    assert!(names.contains(&"manifest-v2.schema.json"), "{names:?}");
}

#[test]
fn check_notices_a_changed_file() {
    let tmp = tempfile::tempdir().unwrap();
    write_all(tmp.path());
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
