//! No input makes the manifest model or graph panic: every fixture, cut at
//! every byte and mutated at random, either loads or fails with an error,
//! and whatever loads survives every graph query and a JSON round trip.

use std::path::{Path, PathBuf};

use homestak_core::graph::ManifestGraph;
use homestak_core::model::Manifest;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn fixtures() -> Vec<(PathBuf, String)> {
    let dir =
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("tests/fixtures/manifests");
    let mut out: Vec<(PathBuf, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    out.sort();
    assert!(out.len() > 20, "fixtures missing from {}", dir.display());
    out
}

/// Loads `text` and, when it is a valid manifest, exercises everything
/// downstream. Returns whether it loaded.
fn exercise(text: &str, path: &Path) -> bool {
    let Ok(manifest) = Manifest::from_yaml_str(text, path) else {
        return false;
    };
    let json = manifest.to_json();
    if manifest.has_nodes() {
        let back = Manifest::from_json(&json).expect("a manifest with nodes round-trips");
        assert_eq!(back, manifest);
    }
    let _ = manifest.remaining();
    for depth in 0..=manifest.depth() + 1 {
        let _ = manifest.limit_depth(depth).to_json();
    }
    if let Ok(graph) = ManifestGraph::new(&manifest) {
        assert_eq!(graph.create_order().len(), graph.len());
        for node in graph.create_order() {
            let name = node.name.as_str();
            graph.depth(name).unwrap();
            graph.parent_ip_key(name).unwrap();
            if let Ok(sub) = graph.subtree(name) {
                assert!(sub.has_nodes());
                ManifestGraph::new(&sub).unwrap();
            }
        }
    }
    true
}

#[test]
fn every_prefix_of_every_fixture() {
    for (path, text) in fixtures() {
        for end in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
            exercise(&text[..end], &path);
        }
    }
}

#[test]
fn random_mutations() {
    // Bytes that change YAML structure the most.
    const ALPHABET: &[u8] = b" \n\t:-[]{}#&*!|>'\"%@`,?0129.aZ_";
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut loaded = 0;
    for (path, text) in fixtures() {
        for _ in 0..300 {
            let mut bytes = text.clone().into_bytes();
            for _ in 0..rng.random_range(1..4) {
                if bytes.is_empty() {
                    break;
                }
                let at = rng.random_range(0..bytes.len());
                match rng.random_range(0..3) {
                    0 => bytes[at] = ALPHABET[rng.random_range(0..ALPHABET.len())],
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, ALPHABET[rng.random_range(0..ALPHABET.len())]),
                }
            }
            let mutated = String::from_utf8_lossy(&bytes);
            if exercise(&mutated, &path) {
                loaded += 1;
            }
        }
    }
    // Some mutations (in comments, values) keep the manifest valid; if none
    // did, the downstream half of `exercise` would never have run.
    assert!(loaded > 100, "only {loaded} mutated manifests loaded");
}

#[test]
fn hostile_documents_fail_cleanly() {
    let path = Path::new("hostile.yaml");
    let deep_yaml = "[".repeat(10_000);
    let deep_map = "a:\n".to_string() + &" b:\n".repeat(2_000);
    for text in [
        deep_yaml.as_str(),
        deep_map.as_str(),
        "\u{feff}name: x\nlevels: []\n",
        "schema_version: 99999999999999999999999\nname: x\n",
        "schema_version: 2\nname: x\nnodes: {a: 1}\n",
        "schema_version: 2\nname: x\nnodes: [null, 1, []]\n",
        "schema_version: 2\nname: [x]\nnodes: []\n",
        "name: x\nlevels: [{name: a, env: dev, vmid: -1}]\n",
        "name: x\nlevels: [{name: a, env: dev, vmid_offset: 1.5}]\n",
        "&a [*a]",
    ] {
        assert!(!exercise(text, path), "{text:.40} should not load");
    }
    let deep_json = "[".repeat(100_000);
    assert!(Manifest::from_json(&deep_json).is_err());
}
