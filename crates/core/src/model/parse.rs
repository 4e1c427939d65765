//! From a parsed YAML/JSON value to a typed v1 or v2 document.
//!
//! Hand-written rather than derived, because the checks must run in the
//! reference's order and say what the reference says: the schema version
//! before the name, the name before the body, a node's name before its type.
//! Checks of our own (types, keywords, unknown fields) come after the
//! reference's for the same item, so a manifest the reference rejects gets
//! the reference's message. Tree checks (duplicates, parents, cycles) run
//! when a [`super::Manifest`] is built from the document.

use serde_json::{Map, Value};

use super::error::{Problem, is_manifest_name};
use super::types::{
    Delegate, Execution, ExecutionMode, NodeExecution, NodeType, OnError, Pattern, Settings,
    Timeouts, Version,
};
use super::v1::{self, Level};
use super::v2::{self, Node};
use homestak_base::id::{NodeName, VmId};

/// A typed document of either schema version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    V1(v1::Document),
    V2(v2::Document),
}

const V1_FIELDS: &[&str] = &[
    "schema_version",
    "name",
    "description",
    "levels",
    "settings",
];
const V2_FIELDS: &[&str] = &[
    "schema_version",
    "name",
    "description",
    "pattern",
    "execution",
    "nodes",
    "settings",
];
const LEVEL_FIELDS: &[&str] = &[
    "name",
    "env",
    "template",
    "vm_preset",
    "vmid",
    "image",
    "vmid_offset",
    "post_scenario",
    "post_scenario_args",
];
const NODE_FIELDS: &[&str] = &[
    "name",
    "type",
    "spec",
    "preset",
    "image",
    "vmid",
    "disk",
    "parent",
    "execution",
];
const SETTINGS_FIELDS: &[&str] = &[
    "verify_ssh",
    "cleanup_on_failure",
    "timeout_buffer",
    "on_error",
    "timeouts",
];
const EXECUTION_FIELDS: &[&str] = &["default_mode"];
const NODE_EXECUTION_FIELDS: &[&str] = &["mode", "delegate"];

/// Parses a manifest mapping (the caller has checked it is one).
pub fn document(map: &Map<String, Value>) -> Result<Document, Problem> {
    let version = schema_version(map.get("schema_version"))?;
    let top = Fields::new("manifest".to_string(), map);
    let name = match top.string("name")? {
        Some(name) if !name.is_empty() => name,
        _ => return Err(Problem::MissingName),
    };
    if version == 1 {
        let levels = levels(map.get("levels"))?;
        let doc = v1::Document {
            schema_version: Version,
            name,
            description: top.string("description")?.unwrap_or_default(),
            levels,
            settings: settings(top.mapping("settings")?)?,
        };
        top.only(V1_FIELDS)?;
        checked_name(&doc.name)?;
        Ok(Document::V1(doc))
    } else {
        let nodes = nodes(map.get("nodes"))?;
        let doc = v2::Document {
            schema_version: Version,
            name,
            description: top.string("description")?.unwrap_or_default(),
            pattern: top
                .keyword("pattern", Pattern::parse, Pattern::KEYWORDS)?
                .unwrap_or_default(),
            nodes,
            settings: settings(top.mapping("settings")?)?,
            execution: execution(top.mapping("execution")?)?,
        };
        top.only(V2_FIELDS)?;
        checked_name(&doc.name)?;
        Ok(Document::V2(doc))
    }
}

/// Our check of the manifest name, after the reference's checks of the
/// whole document: refused, never trimmed (see [`is_manifest_name`]).
fn checked_name(name: &str) -> Result<(), Problem> {
    if is_manifest_name(name) {
        Ok(())
    } else {
        Err(Problem::InvalidManifestName {
            name: name.to_string(),
        })
    }
}

/// 1 when absent. Integral floats count (`2.0` is 2, as in the reference);
/// strings don't, but print bare in the message (a quoted "2" shows as 2).
fn schema_version(value: Option<&Value>) -> Result<u8, Problem> {
    let Some(value) = value else { return Ok(1) };
    if let Value::Number(n) = value {
        for version in [1u8, 2] {
            let float = n.is_f64() && n.as_f64() == Some(f64::from(version));
            if n.as_u64() == Some(u64::from(version)) || float {
                return Ok(version);
            }
        }
    }
    let shown = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Err(Problem::UnsupportedSchemaVersion { shown })
}

fn levels(value: Option<&Value>) -> Result<Vec<Level>, Problem> {
    let items = match value {
        None | Some(Value::Null) => return Err(Problem::MissingLevels),
        Some(Value::Array(items)) if items.is_empty() => return Err(Problem::NoLevels),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(Problem::WrongType {
                place: "manifest".into(),
                field: "levels".into(),
                expected: "a list of levels",
                found: kind_of(other),
            });
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| level(index, item))
        .collect()
}

fn level(index: usize, item: &Value) -> Result<Level, Problem> {
    let map = entry_mapping(item, || format!("Level {index}"))?;
    let fields = Fields::new(format!("Level {index}"), map);
    let name = match fields.string("name")? {
        Some(name) if !name.is_empty() => name,
        _ => return Err(Problem::LevelMissingName { index }),
    };
    let fields = Fields::new(format!("Level {index} ({name})"), map).at("levels", index);
    let has_mode = ["vm_preset", "template", "env"]
        .iter()
        .any(|k| fields.get(k).is_some());
    if !has_mode {
        return Err(Problem::LevelWithoutMode { index, name });
    }
    let level = Level {
        name: fields.node_name("name", name)?,
        post_scenario: fields.string("post_scenario")?,
        post_scenario_args: fields.strings("post_scenario_args")?.unwrap_or_default(),
        env: fields.string("env")?,
        template: fields.string("template")?,
        vm_preset: fields.string("vm_preset")?,
        vmid: fields.vmid("vmid")?,
        image: fields.string("image")?,
        vmid_offset: fields.count("vmid_offset")?.unwrap_or(0),
    };
    fields.only(LEVEL_FIELDS)?;
    Ok(level)
}

fn nodes(value: Option<&Value>) -> Result<Vec<Node>, Problem> {
    let items = match value {
        None | Some(Value::Null) => return Err(Problem::MissingNodes),
        Some(Value::Array(items)) if items.is_empty() => return Err(Problem::NoNodes),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(Problem::WrongType {
                place: "manifest".into(),
                field: "nodes".into(),
                expected: "a list of nodes",
                found: kind_of(other),
            });
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| node(index, item))
        .collect()
}

fn node(index: usize, item: &Value) -> Result<Node, Problem> {
    let map = entry_mapping(item, || format!("Node {index}"))?;
    let fields = Fields::new(format!("Node {index}"), map);
    let name = match fields.string("name")? {
        Some(name) if !name.is_empty() => name,
        _ => return Err(Problem::NodeMissingName { index }),
    };
    let fields = Fields::new(format!("Node {index} ({name})"), map).at("nodes", index);
    if fields.string("type")?.is_none_or(|t| t.is_empty()) {
        return Err(Problem::NodeMissingType { index, name });
    }
    let kind = fields
        .keyword("type", NodeType::parse, NodeType::KEYWORDS)?
        .ok_or(Problem::NodeMissingType {
            index,
            name: name.clone(),
        })?;
    let parent = match fields.string("parent")? {
        Some(parent) if !parent.is_empty() => Some(fields.node_name("parent", parent)?),
        _ => None,
    };
    let disk = match fields.count("disk")? {
        Some(0) => {
            return Err(Problem::InvalidValue {
                place: fields.place.clone(),
                reason: "disk must be at least 1 (GB)".into(),
            });
        }
        other => other,
    };
    let node = Node {
        name: fields.node_name("name", name)?,
        kind,
        spec: fields.string("spec")?,
        preset: fields.string("preset")?,
        image: fields.string("image")?,
        vmid: fields.vmid("vmid")?,
        disk,
        parent,
        execution: node_execution(&fields)?,
    };
    fields.only(NODE_FIELDS)?;
    Ok(node)
}

fn node_execution(node: &Fields<'_>) -> Result<NodeExecution, Problem> {
    let Some(map) = node.mapping("execution")? else {
        return Ok(NodeExecution::default());
    };
    let fields = Fields::new(format!("{} execution", node.place), map);
    let execution = NodeExecution {
        mode: fields.keyword("mode", ExecutionMode::parse, ExecutionMode::KEYWORDS)?,
        delegate: fields.keyword("delegate", Delegate::parse, Delegate::KEYWORDS)?,
    };
    fields.only(NODE_EXECUTION_FIELDS)?;
    Ok(execution)
}

fn execution(map: Option<&Map<String, Value>>) -> Result<Execution, Problem> {
    let Some(map) = map else {
        return Ok(Execution::default());
    };
    let fields = Fields::new("execution".into(), map);
    let execution = Execution {
        default_mode: fields.keyword(
            "default_mode",
            ExecutionMode::parse,
            ExecutionMode::KEYWORDS,
        )?,
    };
    fields.only(EXECUTION_FIELDS)?;
    Ok(execution)
}

fn settings(map: Option<&Map<String, Value>>) -> Result<Settings, Problem> {
    let defaults = Settings::default();
    let Some(map) = map else { return Ok(defaults) };
    let fields = Fields::new("settings".into(), map);
    let settings = Settings {
        verify_ssh: fields.boolean("verify_ssh")?.unwrap_or(defaults.verify_ssh),
        cleanup_on_failure: fields
            .boolean("cleanup_on_failure")?
            .unwrap_or(defaults.cleanup_on_failure),
        timeout_buffer: fields
            .count("timeout_buffer")?
            .unwrap_or(defaults.timeout_buffer),
        on_error: fields
            .keyword("on_error", OnError::parse, OnError::KEYWORDS)?
            .unwrap_or(defaults.on_error),
        timeouts: timeouts(fields.mapping("timeouts")?)?,
    };
    fields.only(SETTINGS_FIELDS)?;
    Ok(settings)
}

const TIMEOUT_FIELDS: &[&str] = &[
    "wait_ip",
    "bootstrap",
    "configure_bridge",
    "download_images",
    "subtree_delegation",
];

fn timeouts(map: Option<&Map<String, Value>>) -> Result<Timeouts, Problem> {
    let Some(map) = map else {
        return Ok(Timeouts::default());
    };
    let fields = Fields::new("settings.timeouts".into(), map);
    let timeouts = Timeouts {
        wait_ip: fields.count("wait_ip")?,
        bootstrap: fields.count("bootstrap")?,
        configure_bridge: fields.count("configure_bridge")?,
        download_images: fields.count("download_images")?,
        subtree_delegation: fields.count("subtree_delegation")?,
    };
    fields.only(TIMEOUT_FIELDS)?;
    Ok(timeouts)
}

fn entry_mapping(item: &Value, place: impl Fn() -> String) -> Result<&Map<String, Value>, Problem> {
    item.as_object().ok_or_else(|| Problem::NotAMapping {
        place: place(),
        found: kind_of(item),
    })
}

/// How a value reads in a message ("a list", "a string", ...).
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Typed access to the fields of one mapping; errors name `place`.
/// A field set to null counts as absent, as in the reference.
struct Fields<'a> {
    place: String,
    map: &'a Map<String, Value>,
    /// The list and index of a node or level, for locating bad names.
    entry: Option<(&'static str, usize)>,
}

impl<'a> Fields<'a> {
    fn new(place: String, map: &'a Map<String, Value>) -> Self {
        Fields {
            place,
            map,
            entry: None,
        }
    }

    fn at(self, list: &'static str, index: usize) -> Self {
        Fields {
            entry: Some((list, index)),
            ..self
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn wrong(&self, key: &str, expected: &'static str, found: &Value) -> Problem {
        Problem::WrongType {
            place: self.place.clone(),
            field: key.to_string(),
            expected,
            found: kind_of(found),
        }
    }

    fn string(&self, key: &str) -> Result<Option<String>, Problem> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.wrong(key, "a string", other)),
        }
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, Problem> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.wrong(key, "true or false", other)),
        }
    }

    fn integer(&self, key: &str) -> Result<Option<i128>, Problem> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from))
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a whole number", &Value::Number(n.clone()))),
            Some(other) => Err(self.wrong(key, "a whole number", other)),
        }
    }

    /// A whole number from 0 to `u32::MAX`.
    fn count(&self, key: &str) -> Result<Option<u32>, Problem> {
        match self.integer(key)? {
            None => Ok(None),
            Some(n) => u32::try_from(n)
                .map(Some)
                .map_err(|_| Problem::InvalidValue {
                    place: self.place.clone(),
                    reason: format!("{key} {n} is out of range (0 to {})", u32::MAX),
                }),
        }
    }

    fn vmid(&self, key: &str) -> Result<Option<VmId>, Problem> {
        match self.integer(key)? {
            None => Ok(None),
            Some(n) => VmId::new(n).map(Some).map_err(|e| Problem::InvalidValue {
                place: self.place.clone(),
                reason: e.to_string(),
            }),
        }
    }

    fn keyword<T>(
        &self,
        key: &str,
        parse: fn(&str) -> Option<T>,
        expected: &'static [&'static str],
    ) -> Result<Option<T>, Problem> {
        match self.string(key)? {
            None => Ok(None),
            Some(value) => match parse(&value) {
                Some(v) => Ok(Some(v)),
                None => Err(Problem::UnknownValue {
                    place: self.place.clone(),
                    field: key.to_string(),
                    value,
                    expected,
                }),
            },
        }
    }

    fn strings(&self, key: &str) -> Result<Option<Vec<String>>, Problem> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.wrong(key, "a list of strings", other)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(self.wrong(key, "a list of strings", other)),
        }
    }

    fn mapping(&self, key: &str) -> Result<Option<&'a Map<String, Value>>, Problem> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map)),
            Some(other) => Err(self.wrong(key, "a mapping", other)),
        }
    }

    /// `field` (`name` or `parent`) of a node or level as a node name.
    fn node_name(&self, field: &'static str, name: String) -> Result<NodeName, Problem> {
        let (list, index) = self.entry.unwrap_or(("nodes", 0));
        NodeName::new(name).map_err(|reason| Problem::InvalidNodeName {
            place: self.place.clone(),
            list,
            index,
            field,
            reason,
        })
    }

    /// Fails on the first key not in `known` (in document order).
    fn only(&self, known: &'static [&'static str]) -> Result<(), Problem> {
        match self.map.keys().find(|k| !known.contains(&k.as_str())) {
            None => Ok(()),
            Some(field) => Err(Problem::UnknownField {
                place: self.place.clone(),
                field: field.clone(),
                known,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<Document, Problem> {
        document(value.as_object().expect("test documents are mappings"))
    }

    #[test]
    fn schema_version_rules() {
        assert!(matches!(
            parse(
                json!({"schema_version": 2.0, "name": "x", "nodes": [{"name": "a", "type": "vm"}]})
            ),
            Ok(Document::V2(_))
        ));
        assert!(matches!(
            parse(json!({"name": "x", "levels": [{"name": "a", "env": "dev"}]})),
            Ok(Document::V1(_))
        ));
        for (version, shown) in [
            (json!("2"), "2"),
            (json!(3), "3"),
            (json!(2.5), "2.5"),
            (json!(true), "true"),
            (json!(null), "null"),
        ] {
            assert_eq!(
                parse(json!({"schema_version": version, "name": "x"})),
                Err(Problem::UnsupportedSchemaVersion {
                    shown: shown.into()
                })
            );
        }
    }

    #[test]
    fn version_is_checked_before_name() {
        assert_eq!(
            parse(json!({"schema_version": 3})),
            Err(Problem::UnsupportedSchemaVersion { shown: "3".into() })
        );
        assert_eq!(
            parse(json!({"schema_version": 2, "name": ""})),
            Err(Problem::MissingName)
        );
    }

    #[test]
    fn node_checks_in_reference_order() {
        let err = parse(json!({"schema_version": 2, "name": "x", "nodes": [
            {"name": "ok", "type": "vm"}, {"type": "vm", "bogus": 1}
        ]}))
        .unwrap_err();
        assert_eq!(err.to_string(), "Node 1 missing required field: name");
        let err = parse(json!({"schema_version": 2, "name": "x", "nodes": [
            {"name": "ok", "type": "vm"}, {"name": "typeless", "preset": "vm-small"}
        ]}))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Node 1 (typeless) missing required field: type"
        );
    }

    #[test]
    fn our_own_checks_name_the_place() {
        let cases = [
            (
                json!({"name": "a", "type": "lxc"}),
                "Node 0 (a): field 'type' has unknown value 'lxc'; expected one of: vm, ct, pve",
            ),
            (
                json!({"name": "a", "type": "vm", "vmid": "99001"}),
                "Node 0 (a): field 'vmid' must be a whole number, got a string",
            ),
            (
                json!({"name": "a", "type": "vm", "vmid": 5}),
                "Node 0 (a): vmid 5 is out of range: PVE accepts 100 to 999999999",
            ),
            (
                json!({"name": "a", "type": "vm", "parnet": "b"}),
                "Node 0 (a): unknown field 'parnet'; known fields: name, type, spec, preset, image, vmid, disk, parent, execution",
            ),
            (
                json!({"name": "a b", "type": "vm"}),
                "Node 0 (a b): 'a b' is not a valid node name: use letters, digits, '-' and '.', starting and ending with a letter or digit (PVE uses it as a DNS name)",
            ),
            (
                json!({"name": "a", "type": "vm", "execution": {"mode": "later"}}),
                "Node 0 (a) execution: field 'mode' has unknown value 'later'; expected one of: push, pull",
            ),
            (
                json!({"name": "a", "type": "vm", "disk": 0}),
                "Node 0 (a): disk must be at least 1 (GB)",
            ),
            (json!("a"), "Node 0 must be a mapping, got a string"),
        ];
        for (node, message) in cases {
            let err =
                parse(json!({"schema_version": 2, "name": "x", "nodes": [node]})).unwrap_err();
            assert_eq!(err.to_string(), message);
        }
    }

    #[test]
    fn settings_are_typed_and_defaulted() {
        let Document::V1(doc) = parse(json!({
            "name": "x", "levels": [{"name": "a", "vm_preset": "small"}],
            "settings": {"timeout_buffer": 30, "on_error": "continue"}
        }))
        .unwrap() else {
            panic!("expected v1");
        };
        assert_eq!(doc.settings.timeout_buffer, 30);
        assert_eq!(doc.settings.on_error, OnError::Continue);
        assert!(doc.settings.verify_ssh);
        let err = parse(json!({
            "name": "x", "levels": [{"name": "a", "vm_preset": "small"}],
            "settings": {"verify_ssh": "yes"}
        }))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "settings: field 'verify_ssh' must be true or false, got a string"
        );
    }

    #[test]
    fn a_node_may_say_how_its_child_tier_runs() {
        let Document::V2(doc) = parse(json!({
            "schema_version": 2, "name": "x", "nodes": [
                {"name": "hv", "type": "pve", "execution": {"delegate": "ssh"}}
            ]
        }))
        .unwrap() else {
            panic!("expected v2");
        };
        assert_eq!(doc.nodes[0].execution.delegate, Some(Delegate::Ssh));
        let err = parse(json!({
            "schema_version": 2, "name": "x", "nodes": [
                {"name": "hv", "type": "pve", "execution": {"delegate": "pigeon"}}
            ]
        }))
        .unwrap_err();
        assert!(err.to_string().contains("daemon"), "{err}");
    }

    #[test]
    fn lifecycle_timeouts_are_seconds_and_checked() {
        let Document::V2(doc) = parse(json!({
            "schema_version": 2, "name": "x", "nodes": [{"name": "a", "type": "vm"}],
            "settings": {"timeouts": {"bootstrap": 900, "subtree_delegation": 3600}}
        }))
        .unwrap() else {
            panic!("expected v2");
        };
        assert_eq!(doc.settings.timeouts.bootstrap, Some(900));
        assert_eq!(doc.settings.timeouts.subtree_delegation, Some(3600));
        assert_eq!(doc.settings.timeouts.wait_ip, None);
        let flags = Timeouts {
            bootstrap: Some(60),
            ..Timeouts::default()
        };
        let both = doc.settings.timeouts.overridden_by(&flags);
        assert_eq!(both.bootstrap, Some(60));
        assert_eq!(both.subtree_delegation, Some(3600));
        let err = parse(json!({
            "schema_version": 2, "name": "x", "nodes": [{"name": "a", "type": "vm"}],
            "settings": {"timeouts": {"bootstrapp": 900}}
        }))
        .unwrap_err();
        assert!(err.to_string().contains("bootstrapp"), "{err}");
    }

    #[test]
    fn null_fields_count_as_absent() {
        let Document::V2(doc) = parse(json!({
            "schema_version": 2, "name": "x", "settings": null, "execution": {},
            "nodes": [{"name": "a", "type": "vm", "parent": null, "execution": {}}]
        }))
        .unwrap() else {
            panic!("expected v2");
        };
        assert_eq!(doc.nodes[0].parent, None);
        assert!(doc.execution.is_empty() && doc.nodes[0].execution.is_empty());
        assert_eq!(doc.settings, Settings::default());
    }
}
