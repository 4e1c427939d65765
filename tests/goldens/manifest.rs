//! Checkers for the manifest kinds: manifest_load, manifest_graph,
//! manifest_subtree, manifest_depth, manifest_remaining,
//! manifest_json_roundtrip, manifest_from_json, and `list` cases of
//! `ManifestLoader.list_manifests`.
//!
//! Outputs are rebuilt from homestak's public API in the shape the goldens
//! README describes (the "summary": to_dict, levels with their derived
//! flags, depth, is_leaf, has_nodes), then compared with `common::compare`.

use homestak_core::graph::ManifestGraph;
use homestak_core::model::{Level, Loader, Manifest};
use serde_json::{Value, json};

use super::common::{self, Case, Expected, Verdict};

/// Checks `case` if its kind belongs here; `None` otherwise.
pub fn check(case: &Case) -> Option<Verdict> {
    let function = case.inputs.get("function").and_then(Value::as_str);
    let actual = match case.kind.as_str() {
        "manifest_load" => load(case).map(|m| summary(&m)),
        "manifest_graph" => load(case).and_then(|m| graph(&m)),
        "manifest_subtree" => load(case).and_then(|m| subtree(case, &m)),
        "manifest_depth" => load(case).and_then(|m| {
            let depth = input_usize(case, "depth")?;
            Ok(summary(&m.limit_depth(depth)))
        }),
        "manifest_remaining" => load(case).and_then(|m| {
            m.remaining()
                .map(|r| summary(&r))
                .map_err(|e| e.to_string())
        }),
        "manifest_json_roundtrip" => load(case).and_then(|m| roundtrip(case, &m)),
        "manifest_from_json" => input_str(case, "json").and_then(|text| {
            Manifest::from_json(&text)
                .map(|m| summary(&m))
                .map_err(|e| e.to_string())
        }),
        "list" if function == Some("ManifestLoader.list_manifests") => {
            Loader::new(&case.site_config)
                .list()
                .map(|names| json!(names))
                .map_err(|e| e.to_string())
        }
        _ => return None,
    };
    Some(Verdict::from_result(judge(case, actual)))
}

/// Compares our result with the golden: outputs as JSON, errors by message.
fn judge(case: &Case, actual: Result<Value, String>) -> Result<(), String> {
    match (&case.expected, actual) {
        (Expected::Output(expected), Ok(actual)) => common::compare(expected, &actual),
        (Expected::Output(_), Err(err)) => Err(format!("expected output, got error: {err}")),
        (Expected::Error { message, .. }, Ok(actual)) => {
            Err(format!("expected error {message:?}, got output {actual}"))
        }
        (expected @ Expected::Error { message, .. }, Err(err)) => {
            if expected.is_crash() {
                return Ok(());
            }
            let ours = common::normalise_message(&err, &case.site_config);
            let (theirs, ours) = match parser_prefix(message) {
                // Only the text before the parser's own description counts.
                Some(prefix) => (prefix, ours.get(..prefix.len()).unwrap_or(&ours)),
                None => (message.as_str(), ours.as_str()),
            };
            if theirs == ours {
                Ok(())
            } else {
                Err(format!("expected error {theirs:?}, got {ours:?}"))
            }
        }
    }
}

/// For messages that end in a parser's description (PyYAML's or Python
/// json's wording, not a contract), the part before it.
fn parser_prefix(message: &str) -> Option<&str> {
    if message.starts_with("Invalid YAML in manifest ") {
        // "Invalid YAML in manifest {path}: <PyYAML description>"
        message.find(": ").map(|end| &message[..end])
    } else if message.starts_with("Invalid manifest JSON: ") {
        Some("Invalid manifest JSON")
    } else {
        None
    }
}

fn input_str(case: &Case, key: &str) -> Result<String, String> {
    case.inputs
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("case has no string input {key:?}"))
}

fn input_usize(case: &Case, key: &str) -> Result<usize, String> {
    case.inputs
        .get(key)
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("case has no integer input {key:?}"))
}

/// Loads `inputs.manifest`, or the default manifest when the case says so.
fn load(case: &Case) -> Result<Manifest, String> {
    let loader = Loader::new(&case.site_config);
    let function = case.inputs.get("function").and_then(Value::as_str);
    let result = if function == Some("ManifestLoader.get_default") {
        loader.load_default()
    } else {
        loader.load(&input_str(case, "manifest")?)
    };
    result.map_err(|e| e.to_string())
}

/// The summary shape of the goldens README.
fn summary(m: &Manifest) -> Value {
    json!({
        "to_dict": m.to_value(),
        "levels": m.levels().iter().map(level).collect::<Vec<_>>(),
        "depth": m.depth(),
        "is_leaf": m.is_leaf(),
        "has_nodes": m.has_nodes(),
    })
}

/// A level with every field, set or not, plus the derived flags.
fn level(l: &Level) -> Value {
    json!({
        "name": l.name,
        "vm_preset": l.vm_preset,
        "template": l.template,
        "vmid": l.vmid,
        "env": l.env,
        "image": l.image,
        "vmid_offset": l.vmid_offset,
        "post_scenario": l.post_scenario,
        "post_scenario_args": l.post_scenario_args,
        "is_inline": l.is_inline(),
        "is_vm_preset_mode": l.is_vm_preset_mode(),
    })
}

fn graph(m: &Manifest) -> Result<Value, String> {
    let g = ManifestGraph::new(m).map_err(|e| e.to_string())?;
    let mut create = Vec::new();
    for node in g.create_order() {
        let name = node.name.as_str();
        let children: Vec<String> = g
            .children(name)
            .map_err(|e| e.to_string())?
            .iter()
            .map(|c| c.name.to_string())
            .collect();
        let parent = g.parent(name).map_err(|e| e.to_string())?;
        create.push(json!({
            "name": name,
            "type": node.kind,
            "depth": g.depth(name).map_err(|e| e.to_string())?,
            "parent": parent.map(|p| p.name.to_string()),
            "children": children,
            "is_root": g.is_root(name).map_err(|e| e.to_string())?,
            "is_leaf": g.is_leaf(name).map_err(|e| e.to_string())?,
            "parent_ip_key": g.parent_ip_key(name).map_err(|e| e.to_string())?,
        }));
    }
    let names = |nodes: Vec<&homestak_core::model::Node>| -> Vec<String> {
        nodes.iter().map(|n| n.name.to_string()).collect()
    };
    Ok(json!({
        "roots": names(g.roots()),
        "max_depth": g.max_depth(),
        "create_order": create,
        "destroy_order": names(g.destroy_order()),
    }))
}

fn subtree(case: &Case, m: &Manifest) -> Result<Value, String> {
    let node = input_str(case, "node")?;
    let g = ManifestGraph::new(m).map_err(|e| e.to_string())?;
    g.subtree(&node)
        .map(|s| summary(&s))
        .map_err(|e| e.to_string())
}

/// Serialises (after `inputs.transform`), then rebuilds from the JSON. A
/// failed rebuild is the case's error, as the reference records it.
fn roundtrip(case: &Case, m: &Manifest) -> Result<Value, String> {
    let transformed = match case.inputs.get("transform").and_then(Value::as_str) {
        None => m.clone(),
        Some("remaining") => m.remaining().map_err(|e| e.to_string())?,
        Some(t) => match t.strip_prefix("depth=").and_then(|d| d.parse().ok()) {
            Some(depth) => m.limit_depth(depth),
            None => return Err(format!("unknown transform {t:?}")),
        },
    };
    let text = transformed.to_json();
    let json: Value =
        serde_json::from_str(&text).map_err(|e| format!("our JSON is invalid: {e}"))?;
    let reloaded = Manifest::from_json(&text).map_err(|e| e.to_string())?;
    Ok(json!({ "json": json, "reloaded": summary(&reloaded) }))
}
