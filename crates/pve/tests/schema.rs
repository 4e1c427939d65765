//! Every (endpoint, method, parameter) the simulator accepts must exist in
//! the real PVE 8.4 API schema with a compatible type, the same required
//! flag, and constraints no looser than PVE's. Property-string keys
//! (`scsi[n]`'s `import-from`, …) are checked the same way.
//!
//! Reads `../shared/pve-api/pve-8.4-apischema.json`; prints SKIPPED when the
//! shared folder is absent.

use std::collections::BTreeMap;
use std::path::PathBuf;

use homestak_pve::schema::formats::Dict;
use homestak_pve::schema::{Format, Param, Schema, endpoints};
use serde_json::Value;

/// `../shared` next to the crate, or `$HOMESTAK_SHARED_DIR`.
fn schema_path() -> PathBuf {
    let shared = std::env::var_os("HOMESTAK_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                concat!(env!("CARGO_MANIFEST_DIR"), "/../.."),
                "/../shared"
            ))
        });
    shared.join("pve-api/pve-8.4-apischema.json")
}

fn index(nodes: &[Value], out: &mut BTreeMap<String, Value>) {
    for n in nodes {
        if let Some(p) = n["path"].as_str() {
            out.insert(p.to_string(), n.clone());
        }
        if let Some(children) = n["children"].as_array() {
            index(children, out);
        }
    }
}

fn strip_pattern(p: &str) -> &str {
    p.strip_prefix("(?^:")
        .and_then(|p| p.strip_suffix(')'))
        .unwrap_or(p)
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// Compares one value schema; returns problems.
fn compare(
    ours: &Schema,
    theirs: &Value,
    what: &str,
    problems: &mut Vec<String>,
    subkeys: &mut usize,
) {
    let their_type = theirs["type"].as_str().unwrap_or("");
    if ours.ty.pve_name() != their_type {
        problems.push(format!(
            "{what}: type {} vs schema {their_type}",
            ours.ty.pve_name()
        ));
    }
    match (&ours.format, &theirs["format"]) {
        (None, Value::Null) => {}
        (None, f) => problems.push(format!("{what}: schema has format {f}, we check none")),
        (Some(Format::Named(n)), Value::String(f)) if n.pve_name() == f => {}
        (Some(Format::NamedDict(n, _)), Value::String(f)) if n == f => {}
        (Some(Format::Dict(d)), Value::Object(f)) => compare_dict(d, f, what, problems, subkeys),
        (Some(f), theirs) => problems.push(format!("{what}: format {f:?} vs schema {theirs}")),
    }
    match (ours.pattern, theirs["pattern"].as_str()) {
        (None, None) => {}
        (Some(p), Some(t)) if p.pve() == strip_pattern(t) => {}
        (p, t) => problems.push(format!(
            "{what}: pattern {:?} vs schema {t:?}",
            p.map(|p| p.pve())
        )),
    }
    match (ours.enumeration, theirs["enum"].as_array()) {
        (_, None) => {}
        (None, Some(_)) => problems.push(format!("{what}: schema has an enum, we do not")),
        (Some(e), Some(t)) => {
            for v in e {
                if !t.iter().any(|x| x.as_str() == Some(v)) {
                    problems.push(format!("{what}: enum value {v} not in schema"));
                }
            }
        }
    }
    if let Some(min) = num(&theirs["minimum"])
        && ours.minimum.is_none_or(|m| (m as f64) < min)
    {
        problems.push(format!(
            "{what}: minimum {:?} looser than schema {min}",
            ours.minimum
        ));
    }
    if let Some(max) = num(&theirs["maximum"])
        && ours.maximum.is_none_or(|m| (m as f64) > max)
    {
        problems.push(format!(
            "{what}: maximum {:?} looser than schema {max}",
            ours.maximum
        ));
    }
    if let Some(max) = theirs["maxLength"].as_u64()
        && ours.max_length.is_none_or(|m| m as u64 > max)
    {
        problems.push(format!(
            "{what}: maxLength {:?} looser than schema {max}",
            ours.max_length
        ));
    }
    if ours.requires != theirs["requires"].as_str() {
        problems.push(format!(
            "{what}: requires {:?} vs schema {:?}",
            ours.requires, theirs["requires"]
        ));
    }
}

fn compare_dict(
    ours: &Dict,
    theirs: &serde_json::Map<String, Value>,
    what: &str,
    problems: &mut Vec<String>,
    subkeys: &mut usize,
) {
    for key in &ours.keys {
        *subkeys += 1;
        let sub = format!("{what}.{}", key.name);
        let Some(t) = theirs.get(key.name) else {
            problems.push(format!("{sub}: key not in schema"));
            continue;
        };
        if let Some(alias) = key.alias {
            if t["alias"].as_str() != Some(alias) || t["keyAlias"].as_str() != key.key_alias {
                problems.push(format!(
                    "{sub}: alias {alias} / {:?} vs schema {t}",
                    key.key_alias
                ));
            }
            continue;
        }
        let their_required = t["optional"].as_u64().unwrap_or(0) == 0;
        if key.required != their_required {
            problems.push(format!(
                "{sub}: required {} vs schema {their_required}",
                key.required
            ));
        }
        let their_default = t["default_key"].as_u64().unwrap_or(0) == 1;
        if key.default_key != their_default {
            problems.push(format!(
                "{sub}: default_key {} vs schema {their_default}",
                key.default_key
            ));
        }
        compare(&key.schema, t, &sub, problems, subkeys);
    }
}

fn index_range(description: &str) -> Option<(u32, u32)> {
    let rest = &description[description.find("n is ")? + 5..];
    let mut words = rest.split_whitespace();
    let lo = words.next()?.parse().ok()?;
    (words.next()? == "to").then_some(())?;
    let hi = words
        .next()?
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()?;
    Some((lo, hi))
}

#[test]
fn every_accepted_parameter_exists_in_the_pve_84_schema() {
    let path = schema_path();
    if !path.exists() {
        println!("SKIPPED: {} not found (../shared absent)", path.display());
        return;
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let root: Vec<Value> = serde_json::from_str(&text).unwrap();
    let mut by_path = BTreeMap::new();
    index(&root, &mut by_path);

    let mut problems = Vec::new();
    let (mut pairs, mut subkeys, mut ranges) = (0usize, 0usize, 0usize);
    for e in endpoints() {
        let what = format!("{} {}", e.method.as_str(), e.path);
        let Some(info) = by_path.get(e.path).map(|n| &n["info"][e.method.as_str()]) else {
            problems.push(format!("{what}: path not in schema"));
            continue;
        };
        if info.is_null() {
            problems.push(format!("{what}: method not in schema"));
            continue;
        }
        if !e.no_auth && info["allowtoken"].as_u64() != Some(1) {
            problems.push(format!("{what}: schema does not allow API tokens"));
        }
        let props = info["parameters"]["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for p in &e.params {
            pairs += 1;
            check_param(p, &props, &what, &mut problems, &mut subkeys, &mut ranges);
        }
        for (name, t) in &props {
            let required = t["optional"].as_u64().unwrap_or(0) == 0;
            if required && !e.params.iter().any(|p| p.schema_name() == *name) {
                problems.push(format!(
                    "{what}: schema requires {name}, we do not accept it"
                ));
            }
        }
    }
    println!(
        "checked {} endpoints, {pairs} (endpoint, method, parameter) triples, {subkeys} property-string keys and {ranges} index ranges against the PVE 8.4 schema",
        endpoints().len()
    );
    assert!(
        problems.is_empty(),
        "{} mismatches:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

fn check_param(
    p: &Param,
    props: &serde_json::Map<String, Value>,
    what: &str,
    problems: &mut Vec<String>,
    subkeys: &mut usize,
    ranges: &mut usize,
) {
    let name = p.schema_name();
    let what = format!("{what} {name}");
    let Some(t) = props.get(&name) else {
        problems.push(format!("{what}: parameter not in schema"));
        return;
    };
    let their_required = t["optional"].as_u64().unwrap_or(0) == 0;
    if p.required != their_required {
        problems.push(format!(
            "{what}: required {} vs schema {their_required}",
            p.required
        ));
    }
    if let Some((lo, hi)) = p.index {
        match t["description"].as_str().and_then(index_range) {
            Some(range) if range == (lo, hi) => *ranges += 1,
            Some(range) => problems.push(format!("{what}: index {lo}..={hi} vs schema {range:?}")),
            // The description of net[n], ipconfig[n] gives no range.
            None => {}
        }
    }
    compare(&p.schema, t, &what, problems, subkeys);
}
