//! Parameter specifications for every endpoint the simulator serves, written
//! by us from PVE 8.4's documentation and source, and the request validator
//! that enforces them the way PVE's JSONSchema does.
//!
//! The specs are the simulator's routing table too: a request is served only
//! when a spec matches its method and path. A test
//! (`crates/pve/tests/schema.rs`) checks every spec against the real 8.4 API
//! schema, so the simulator can be no more lenient than PVE on anything it
//! accepts.
//!
//! The validator is public so that the PVE client's tests can check their
//! own requests: `check_wire` (feature `testing`) takes exactly what goes
//! on the wire (method, path, query, body), decodes it as pveproxy does and
//! validates it.

pub mod formats;
mod node;
mod qemu;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use formats::{Dict, Named};

use wire::{Input, Value};

/// HTTP methods PVE routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }

    pub fn parse(s: &str) -> Option<Method> {
        match s {
            "GET" => Some(Method::Get),
            "POST" => Some(Method::Post),
            "PUT" => Some(Method::Put),
            "DELETE" => Some(Method::Delete),
            _ => None,
        }
    }

    /// Whether PVE reads parameters from a body for this method.
    pub fn has_body(self) -> bool {
        matches!(self, Method::Post | Method::Put)
    }
}

/// JSON-Schema type of a parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    String,
    Integer,
    Number,
    Boolean,
}

impl Type {
    pub fn pve_name(self) -> &'static str {
        match self {
            Type::String => "string",
            Type::Integer => "integer",
            Type::Number => "number",
            Type::Boolean => "boolean",
        }
    }
}

/// How a string parameter's format is checked.
#[derive(Clone, Copy, Debug)]
pub enum Format {
    /// A format PVE registers by name and checks with code.
    Named(Named),
    /// A property string whose keys the schema lists inline (`scsi[n]`).
    Dict(&'static Dict),
    /// A property string PVE registers by name (`pve-qm-ipconfig`).
    NamedDict(&'static str, &'static Dict),
}

/// A regular expression from PVE's schema, matched by hand-written code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// `(/dev/.+|socket)`
    Serial,
    /// `\+?\d+(\.\d+)?[KMGT]?`
    ResizeSize,
    /// `https?://.*`
    HttpUrl,
    /// `[A-Za-z][A-Za-z0-9\.\-_]+`
    TokenId,
    /// `(?:[a-fA-F0-9]{8}(?:-[a-fA-F0-9]{4}){3}-[a-fA-F0-9]{12}|[01])`
    VmGenId,
    /// `(ide|sata|scsi|virtio)\d+`
    BootDisk,
}

impl Pattern {
    /// The pattern text as PVE's schema spells it (without `(?^:…)`).
    pub fn pve(self) -> &'static str {
        match self {
            Pattern::Serial => r"(/dev/.+|socket)",
            Pattern::ResizeSize => r"\+?\d+(\.\d+)?[KMGT]?",
            Pattern::HttpUrl => r"https?://.*",
            Pattern::TokenId => r"[A-Za-z][A-Za-z0-9\.\-_]+",
            Pattern::VmGenId => r"(?:[a-fA-F0-9]{8}(?:-[a-fA-F0-9]{4}){3}-[a-fA-F0-9]{12}|[01])",
            Pattern::BootDisk => r"(ide|sata|scsi|virtio)\d+",
        }
    }

    /// Whole-value match, as PVE anchors every pattern.
    pub fn matches(self, v: &str) -> bool {
        match self {
            Pattern::Serial => {
                v == "socket"
                    || v.strip_prefix("/dev/")
                        .is_some_and(|r| !r.is_empty() && !r.contains('\n'))
            }
            Pattern::ResizeSize => {
                let v = v.strip_prefix('+').unwrap_or(v);
                let v = v.strip_suffix(['K', 'M', 'G', 'T']).unwrap_or(v);
                let (int, frac) = match v.split_once('.') {
                    Some((i, f)) => (i, Some(f)),
                    None => (v, None),
                };
                !int.is_empty()
                    && int.bytes().all(|c| c.is_ascii_digit())
                    && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|c| c.is_ascii_digit()))
            }
            Pattern::HttpUrl => v.starts_with("http://") || v.starts_with("https://"),
            Pattern::TokenId => {
                let b = v.as_bytes();
                b.len() >= 2
                    && b[0].is_ascii_alphabetic()
                    && b.iter()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'))
            }
            Pattern::VmGenId => {
                if v == "0" || v == "1" {
                    return true;
                }
                let groups: Vec<&str> = v.split('-').collect();
                groups.len() == 5
                    && groups
                        .iter()
                        .zip([8, 4, 4, 4, 12])
                        .all(|(g, n)| g.len() == n && g.bytes().all(|c| c.is_ascii_hexdigit()))
            }
            Pattern::BootDisk => ["ide", "sata", "scsi", "virtio"].iter().any(|bus| {
                v.strip_prefix(bus)
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
            }),
        }
    }
}

/// Constraints on one value.
#[derive(Clone, Debug)]
pub struct Schema {
    pub ty: Type,
    pub format: Option<Format>,
    pub pattern: Option<Pattern>,
    pub enumeration: Option<&'static [&'static str]>,
    pub minimum: Option<i64>,
    pub maximum: Option<i64>,
    pub min_length: Option<usize>,
    pub max_length: Option<usize>,
    /// Another parameter that must be given with this one.
    pub requires: Option<&'static str>,
}

impl Schema {
    pub const fn of(ty: Type) -> Self {
        Schema {
            ty,
            format: None,
            pattern: None,
            enumeration: None,
            minimum: None,
            maximum: None,
            min_length: None,
            max_length: None,
            requires: None,
        }
    }
}

/// One parameter of an endpoint.
#[derive(Clone, Debug)]
pub struct Param {
    /// The name, without the index for indexed options (`scsi` for `scsi[n]`).
    pub name: &'static str,
    /// Inclusive index range of an indexed option (`scsi[n]`, n is 0 to 30).
    pub index: Option<(u32, u32)>,
    pub required: bool,
    pub schema: Schema,
}

impl Param {
    /// The name as PVE's schema writes it (`scsi[n]`).
    pub fn schema_name(&self) -> String {
        match self.index {
            Some(_) => format!("{}[n]", self.name),
            None => self.name.to_string(),
        }
    }

    /// Whether the concrete parameter `key` (`scsi3`) is this one.
    pub fn matches(&self, key: &str) -> bool {
        match self.index {
            None => key == self.name,
            Some((lo, hi)) => key.strip_prefix(self.name).is_some_and(|n| {
                !n.is_empty()
                    && n.bytes().all(|c| c.is_ascii_digit())
                    && (n == "0" || !n.starts_with('0'))
                    && n.parse::<u32>().is_ok_and(|i| (lo..=hi).contains(&i))
            }),
        }
    }
}

/// Builder shorthand used by the spec files.
pub(crate) struct P(Param);

impl P {
    pub fn string(name: &'static str) -> P {
        P(Param {
            name,
            index: None,
            required: false,
            schema: Schema::of(Type::String),
        })
    }
    pub fn int(name: &'static str) -> P {
        P(Param {
            name,
            index: None,
            required: false,
            schema: Schema::of(Type::Integer),
        })
    }
    pub fn number(name: &'static str) -> P {
        P(Param {
            name,
            index: None,
            required: false,
            schema: Schema::of(Type::Number),
        })
    }
    pub fn bool(name: &'static str) -> P {
        P(Param {
            name,
            index: None,
            required: false,
            schema: Schema::of(Type::Boolean),
        })
    }
    pub fn indexed(mut self, lo: u32, hi: u32) -> P {
        self.0.index = Some((lo, hi));
        self
    }
    pub fn required(mut self) -> P {
        self.0.required = true;
        self
    }
    pub fn named(mut self, f: Named) -> P {
        self.0.schema.format = Some(Format::Named(f));
        self
    }
    pub fn dict(mut self, d: &'static Dict) -> P {
        self.0.schema.format = Some(Format::Dict(d));
        self
    }
    pub fn named_dict(mut self, name: &'static str, d: &'static Dict) -> P {
        self.0.schema.format = Some(Format::NamedDict(name, d));
        self
    }
    pub fn pattern(mut self, p: Pattern) -> P {
        self.0.schema.pattern = Some(p);
        self
    }
    pub fn enumeration(mut self, e: &'static [&'static str]) -> P {
        self.0.schema.enumeration = Some(e);
        self
    }
    pub fn min(mut self, v: i64) -> P {
        self.0.schema.minimum = Some(v);
        self
    }
    pub fn max(mut self, v: i64) -> P {
        self.0.schema.maximum = Some(v);
        self
    }
    pub fn max_len(mut self, v: usize) -> P {
        self.0.schema.max_length = Some(v);
        self
    }
    pub fn min_len(mut self, v: usize) -> P {
        self.0.schema.min_length = Some(v);
        self
    }
    pub fn requires(mut self, other: &'static str) -> P {
        self.0.schema.requires = Some(other);
        self
    }
    pub fn done(self) -> Param {
        self.0
    }
}

/// Which handler serves an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Version,
    Permissions,
    Nodes,
    NodeStatus,
    NodeConfigGet,
    NodeConfigPut,
    ClusterResources,
    NextId,
    QemuList,
    QemuCreate,
    QemuIndex,
    QemuDelete,
    ConfigGet,
    ConfigPut,
    ConfigPost,
    Resize,
    StatusIndex,
    StatusCurrent,
    Start,
    Stop,
    Shutdown,
    Reboot,
    Clone,
    Template,
    AgentIndex,
    AgentNetwork,
    StorageList,
    StorageStatus,
    StorageContent,
    DownloadUrl,
    TaskList,
    TaskIndex,
    TaskStatus,
    TaskLog,
    TaskStop,
    TicketGet,
    TicketPost,
    TokenList,
    TokenGet,
    TokenCreate,
    TokenUpdate,
    TokenDelete,
    NetworkList,
    NetworkCreate,
    NetworkApply,
    NetworkRevert,
    NetworkIfaceGet,
    NetworkIfaceDelete,
}

/// One (method, path) the simulator serves.
#[derive(Debug)]
pub struct Endpoint {
    pub method: Method,
    /// Path template under `/api2/json`, e.g. `/nodes/{node}/qemu/{vmid}`.
    pub path: &'static str,
    pub op: Op,
    /// Parameters, path parameters included (as in PVE's schema).
    pub params: Vec<Param>,
    /// Served without authentication (PVE's short list, §3.2 of NOTES).
    pub no_auth: bool,
}

impl Endpoint {
    pub(crate) fn new(method: Method, path: &'static str, op: Op, params: Vec<P>) -> Self {
        Endpoint {
            method,
            path,
            op,
            params: params.into_iter().map(P::done).collect(),
            no_auth: false,
        }
    }

    pub(crate) fn without_auth(mut self) -> Self {
        self.no_auth = true;
        self
    }

    /// Finds the spec of a concrete parameter name.
    pub fn param(&self, key: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.matches(key))
    }

    /// `GET /nodes/{node}/qemu`: the key used by request counters.
    pub fn key(&self) -> String {
        format!("{} {}", self.method.as_str(), self.path)
    }
}

/// Every endpoint the simulator serves.
pub fn endpoints() -> &'static [Endpoint] {
    static ALL: LazyLock<Vec<Endpoint>> = LazyLock::new(|| {
        let mut all = node::endpoints();
        all.extend(qemu::endpoints());
        all
    });
    &ALL
}

/// Property-string dicts the handlers parse stored values with.
pub mod qemu_dicts {
    pub use super::qemu::{
        agent_dict as agent, drive_dict as drive, efidisk_dict as efidisk,
        ipconfig_dict as ipconfig, memory_dict as memory, net_dict as net,
        tpmstate_dict as tpmstate,
    };
}

/// The VM configuration options the simulator stores (create and config).
pub fn vm_options() -> &'static [Param] {
    qemu::vm_options()
}

/// Matches a concrete path (without `/api2/json`) against a template.
fn match_template(template: &str, path: &str) -> Option<Vec<(String, String)>> {
    let want: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
    let have: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if want.len() != have.len() {
        return None;
    }
    let mut vars = Vec::new();
    for (w, h) in want.iter().zip(have.iter()) {
        if let Some(name) = w.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
            vars.push((name.to_string(), (*h).to_string()));
        } else if w != h {
            return None;
        }
    }
    Some(vars)
}

/// Finds the endpoint for `method path`; the path is already unescaped.
pub fn route(method: Method, path: &str) -> Option<(&'static Endpoint, Vec<(String, String)>)> {
    endpoints()
        .iter()
        .filter(|e| e.method == method)
        .find_map(|e| match_template(e.path, path).map(|vars| (e, vars)))
}

/// Why a request was refused before reaching a handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// 501: no handler for this method and path (PVE's text).
    NotImplemented(String),
    /// 400 `Parameter verification failed.`, with the text per parameter.
    Params(BTreeMap<String, String>),
}

/// Validated parameters of a request, path parameters included.
#[derive(Clone, Debug, Default)]
pub struct Params {
    values: BTreeMap<String, String>,
}

impl Params {
    pub fn str(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }
    pub fn int(&self, key: &str) -> Option<i64> {
        self.str(key).and_then(|v| v.trim().parse().ok())
    }
    pub fn bool(&self, key: &str) -> Option<bool> {
        self.str(key).and_then(formats::parse_boolean)
    }
    pub fn flag(&self, key: &str) -> bool {
        self.bool(key).unwrap_or(false)
    }
    pub fn has(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    /// Parameters that are not path parameters of `endpoint`.
    pub fn options<'a>(
        &'a self,
        endpoint: &'a Endpoint,
    ) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.iter()
            .filter(move |(k, _)| !endpoint.path.contains(&format!("{{{k}}}")))
    }
}

/// Checks one value against a schema; the error is PVE's text.
pub fn check_value(schema: &Schema, value: &str) -> Result<(), String> {
    match schema.ty {
        Type::Boolean => {
            if formats::parse_boolean(value).is_none() {
                return Err(format!("type check ('boolean') failed - got '{value}'"));
            }
        }
        Type::Integer => {
            let digits = value.strip_prefix(['-', '+']).unwrap_or(value);
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return Err(format!("type check ('integer') failed - got '{value}'"));
            }
        }
        Type::Number => {
            if value.parse::<f64>().map(|f| !f.is_finite()).unwrap_or(true) {
                return Err(format!("type check ('number') failed - got '{value}'"));
            }
        }
        Type::String => {}
    }
    if let Some(format) = schema.format {
        let res = match format {
            Format::Named(n) => n.check(value),
            Format::Dict(d) | Format::NamedDict(_, d) => {
                formats::parse_property_string(d, value, "").map(|_| ())
            }
        };
        if let Err(e) = res {
            return Err(format!("invalid format - {e}"));
        }
    }
    if matches!(schema.ty, Type::Integer | Type::Number) {
        let n: f64 = value.parse().unwrap_or(0.0);
        if let Some(min) = schema.minimum
            && n < min as f64
        {
            return Err(format!("value must have a minimum value of {min}"));
        }
        if let Some(max) = schema.maximum
            && n > max as f64
        {
            return Err(format!("value must have a maximum value of {max}"));
        }
    }
    if let Some(max) = schema.max_length
        && value.chars().count() > max
    {
        return Err(format!("value may only be {max} characters long"));
    }
    if let Some(min) = schema.min_length
        && value.chars().count() < min
    {
        return Err(format!("value must be at least {min} characters long"));
    }
    if let Some(e) = schema.enumeration
        && !e.contains(&value)
    {
        return Err(format!(
            "value '{value}' does not have a value in the enumeration '{}'",
            e.join(", ")
        ));
    }
    if let Some(p) = schema.pattern
        && !p.matches(value)
    {
        return Err("value does not match the regex pattern".into());
    }
    Ok(())
}

/// Checks a parameter value, giving nested property-string errors their
/// parameter path (`ipconfig0.gw: …`).
fn check_param(param: &Param, key: &str, value: &str) -> Result<(), String> {
    if let Some(Format::Dict(d) | Format::NamedDict(_, d)) = param.schema.format {
        // Type and length first, then the property string with its path.
        let mut plain = param.schema.clone();
        plain.format = None;
        check_value(&plain, value)?;
        return formats::parse_property_string(d, value, key)
            .map(|_| ())
            .map_err(|e| format!("invalid format - {e}"));
    }
    check_value(&param.schema, value)
}

/// PVE's text for a parameter the schema does not list.
const UNKNOWN: &str =
    "property is not defined in schema and the schema does not allow additional properties";

/// Validates decoded parameters for `method path` (path unescaped, without
/// `/api2/json`). Path parameters are merged in as PVE does.
pub fn validate(
    method: Method,
    path: &str,
    input: &Input,
) -> Result<(&'static Endpoint, Params), Rejection> {
    let Some((endpoint, vars)) = route(method, path) else {
        return Err(Rejection::NotImplemented(format!(
            "Method '{} {}' not implemented",
            method.as_str(),
            path
        )));
    };
    let mut errors = BTreeMap::new();
    let mut values = BTreeMap::new();
    for (k, v) in input.iter() {
        match v {
            // `k` or `k=`: no value, but the key still has to be known.
            Value::Absent => {
                if endpoint.param(k).is_none() {
                    errors.insert(k.to_string(), UNKNOWN.into());
                }
            }
            Value::Str(s) => {
                values.insert(k.to_string(), s.clone());
            }
            Value::List(_) => {
                let ty = endpoint
                    .param(k)
                    .map_or("string", |p| p.schema.ty.pve_name());
                errors.insert(
                    k.to_string(),
                    format!("type check ('{ty}') failed - got ARRAY"),
                );
            }
            Value::Invalid(what) => {
                let ty = endpoint
                    .param(k)
                    .map_or("string", |p| p.schema.ty.pve_name());
                errors.insert(
                    k.to_string(),
                    format!("type check ('{ty}') failed - got {what}"),
                );
            }
        }
    }
    for (k, v) in vars {
        match values.get(&k) {
            Some(existing) if *existing != v => {
                errors.insert(
                    k.clone(),
                    "duplicate parameter (already defined in URI) with conflicting values!".into(),
                );
            }
            _ => {
                values.insert(k, v);
            }
        }
    }
    if !errors.is_empty() {
        return Err(Rejection::Params(errors));
    }
    for (k, v) in &values {
        match endpoint.param(k) {
            None => {
                errors.insert(k.clone(), UNKNOWN.into());
            }
            Some(p) => {
                if let Err(e) = check_param(p, k, v) {
                    errors.insert(k.clone(), e);
                }
                if let Some(other) = p.schema.requires
                    && !values.contains_key(other)
                {
                    errors.insert(
                        other.to_string(),
                        format!("property is missing and it is required by '{k}'"),
                    );
                }
            }
        }
    }
    for p in &endpoint.params {
        if p.required && p.index.is_none() && !values.contains_key(p.name) {
            errors.insert(
                p.name.to_string(),
                "property is missing and it is not optional".into(),
            );
        }
    }
    if errors.is_empty() {
        Ok((endpoint, Params { values }))
    } else {
        Err(Rejection::Params(errors))
    }
}

/// Validates a request exactly as it would go on the wire: `path` as sent
/// (with `/api2/json`, possibly percent-encoded), the raw query string, and
/// for POST/PUT the body with its content type. For the PVE client's tests
/// (feature `testing`).
#[cfg(feature = "testing")]
pub fn check_wire(
    method: &str,
    path: &str,
    query: Option<&str>,
    body: Option<(&str, &[u8])>,
) -> Result<Params, Rejection> {
    let Some(m) = Method::parse(method) else {
        return Err(Rejection::NotImplemented(format!(
            "method '{method}' not available"
        )));
    };
    let unescaped = wire::unescape_path(path);
    let Some(rel) = unescaped.strip_prefix("/api2/json") else {
        return Err(Rejection::NotImplemented("no such uri".into()));
    };
    let input = wire::collect(m, query, body)
        .map_err(|e| Rejection::Params(BTreeMap::from([("body".to_string(), e)])))?;
    validate(m, rel, &input).map(|(_, p)| p)
}

#[cfg(test)]
mod tests;
