//! Property-based fuzzing of the manifest and site-config parsers: no input
//! panics, and a manifest that loads survives its JSON round trip. The
//! budget is `PROPTEST_CASES` (256 by default, as CI runs it; `make fuzz`
//! runs 100 000).

use std::path::Path;

use homestak_core::model::Manifest;
use homestak_core::site::{
    Env, HostFile, NodeConfig, PostureV1, PostureV2, Preset, Secrets, Site, SiteFile, Spec,
    Template,
};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text made of what shapes YAML most, plus any character.
fn yamlish() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            8 => proptest::sample::select(vec![
                "\n", "  ", "- ", ": ", "name", "nodes", "type", "vm", "pve", "parent",
                "schema_version", "2", "1", "vmid", "99001", "[", "]", "{", "}", ",",
                "\"", "'", "&a ", "*a", "#", "~", "null", "true", "levels", "env", "<<",
                "!!str ", "|", ">", "\t", "é", "\u{0}", "-1", "1e999", "settings",
            ])
            .prop_map(String::from),
            1 => any::<char>().prop_map(String::from),
        ],
        0..60,
    )
    .prop_map(|parts| parts.concat())
}

/// A structurally plausible v2 manifest with hostile values in places.
fn manifest_text() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("c".to_string()),
        Just(" a".to_string()),
        Just("x_y".to_string()),
        "[a-z][a-z0-9-]{0,8}",
        ".{0,6}",
    ];
    let node = (
        name.clone(),
        prop_oneof![Just("vm"), Just("pve"), Just("ct"), Just("lxc")],
        proptest::option::of(name.clone()),
        proptest::option::of(prop_oneof![Just(0i64), Just(99), Just(100), any::<i64>()]),
    );
    (name, proptest::collection::vec(node, 0..6)).prop_map(|(manifest, nodes)| {
        let mut text = format!("schema_version: 2\nname: {manifest:?}\nnodes:\n");
        for (name, kind, parent, vmid) in nodes {
            text.push_str(&format!("  - name: {name:?}\n    type: {kind}\n"));
            if let Some(parent) = parent {
                text.push_str(&format!("    parent: {parent:?}\n"));
            }
            if let Some(vmid) = vmid {
                text.push_str(&format!("    vmid: {vmid}\n"));
            }
        }
        text
    })
}

fn load_and_round_trip(text: &str) {
    let Ok(manifest) = Manifest::from_yaml_str(text, Path::new("fuzz.yaml")) else {
        return;
    };
    if manifest.has_nodes() {
        let back = Manifest::from_json(&manifest.to_json()).expect("a loaded manifest reloads");
        assert_eq!(back, manifest);
    }
    let _ = homestak_core::graph::ManifestGraph::new(&manifest);
}

/// Parses `text` as every site-config document type.
fn parse_every_document(text: &str) {
    let path = Path::new("fuzz.yaml");
    let _ = homestak_base::yaml::from_str::<Option<SiteFile>>(text, path);
    let _ = homestak_base::yaml::from_str::<Option<NodeConfig>>(text, path);
    let _ = homestak_base::yaml::from_str::<Option<HostFile>>(text, path);
    let _ = homestak_base::yaml::from_str::<Option<Env>>(text, path);
    let _ = homestak_base::yaml::from_str::<Option<Template>>(text, path);
    let _ = homestak_base::yaml::from_str::<Option<Preset>>(text, path);
    let _ = homestak_base::yaml::from_str::<Option<PostureV1>>(text, path);
    let _ = homestak_base::yaml::from_str::<Option<PostureV2>>(text, path);
    let _ = homestak_base::yaml::from_str::<Option<Spec>>(text, path);
    let _ = homestak_base::yaml::from_str::<Option<Secrets>>(text, path);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_manifest_text(text in yamlish()) {
        load_and_round_trip(&text);
    }

    #[test]
    fn fuzz_manifest_structure(text in manifest_text()) {
        load_and_round_trip(&text);
    }

    #[test]
    fn fuzz_site_config_documents(text in yamlish()) {
        parse_every_document(&text);
    }

    #[test]
    fn fuzz_whole_site(
        site in yamlish(),
        node in yamlish(),
        secrets in yamlish(),
        preset in yamlish(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        for (file, text) in [
            ("site.yaml", &site),
            ("nodes/pve.yaml", &node),
            ("secrets.yaml", &secrets),
            ("v2/presets/small.yaml", &preset),
        ] {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        if let Ok(site) = Site::load(dir.path()) {
            let _ = site.problems();
            let _ = site.host_config("pve");
            let _ = site.list_hosts();
        }
    }
}
