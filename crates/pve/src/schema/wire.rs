//! Request decoding exactly as pveproxy does it (libpve-http-server
//! `decode_urlencoded` and `extract_params`, NOTES §2):
//!
//! - pairs split on `&` **and** `;`;
//! - each pair split on `=` keeping two fields, so a raw `=` in a value
//!   truncates it (`a=b=c` → `b`), and `k=` or `k` carry no value;
//! - `+` → space, `%XX` decoded, then UTF-8 (lossy);
//! - a repeated key becomes a list;
//! - POST/PUT bodies are form-encoded unless `Content-Type` is
//!   `application/json`; query parameters override body parameters;
//!   GET/DELETE take only the query string;
//! - the request path is percent-decoded before routing.

use std::collections::BTreeMap;

use super::Method;

/// One decoded parameter value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Str(String),
    /// A key sent more than once.
    List(Vec<String>),
    /// `k` or `k=`: Perl sees `undef`, which validation treats as absent.
    Absent,
    /// A JSON body value PVE cannot take as a scalar (`HASH`).
    Invalid(&'static str),
}

/// Decoded request parameters (body merged with query).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Input {
    values: BTreeMap<String, Value>,
}

impl Input {
    pub fn insert(&mut self, key: &str, value: Value) {
        self.values.insert(key.to_string(), value);
    }

    /// Adds a form value: a repeated key becomes a list.
    fn push(&mut self, key: String, value: Option<String>) {
        match (self.values.get_mut(&key), value) {
            (Some(Value::Str(old)), Some(v)) => {
                let old = std::mem::take(old);
                self.values.insert(key, Value::List(vec![old, v]));
            }
            (Some(Value::List(list)), Some(v)) => list.push(v),
            (_, Some(v)) => {
                self.values.insert(key, Value::Str(v));
            }
            (_, None) => {
                self.values.insert(key, Value::Absent);
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key)
    }

    /// Query parameters override body parameters.
    fn merge_over(&mut self, other: Input) {
        for (k, v) in other.values {
            self.values.insert(k, v);
        }
    }
}

/// Decodes `%XX` sequences; malformed ones stay as they are. A raw `+`
/// becomes a space first when `plus_is_space` (so `%2B` stays a `+`).
fn percent_decode(s: &[u8], plus_is_space: bool) -> Vec<u8> {
    let plus = |b: &u8| {
        if plus_is_space && *b == b'+' {
            b' '
        } else {
            *b
        }
    };
    let raw: Vec<u8> = s.iter().map(plus).collect();
    percent_encoding::percent_decode(&raw).collect()
}

/// PVE's `decode_urlencoded`.
pub fn decode_urlencoded(data: &str) -> Input {
    let mut input = Input::default();
    for pair in data.split(['&', ';']) {
        let mut fields = pair.split('=');
        let k = fields.next().unwrap_or("");
        // Perl's split drops trailing empty fields: `k=` has no value.
        let v = fields.next().filter(|v| !v.is_empty());
        if k.is_empty() && v.is_none() {
            continue;
        }
        let key = String::from_utf8_lossy(&percent_decode(k.as_bytes(), true)).into_owned();
        let value =
            v.map(|v| String::from_utf8_lossy(&percent_decode(v.as_bytes(), true)).into_owned());
        input.push(key, value);
    }
    input
}

/// A JSON request body as PVE takes it (`decode_json`).
pub fn decode_json(body: &[u8]) -> Result<Input, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("unable to parse JSON body - {e}"))?;
    let serde_json::Value::Object(map) = value else {
        return Err("JSON body is not an object".into());
    };
    let mut input = Input::default();
    for (k, v) in map {
        let value = match v {
            serde_json::Value::Null => Value::Absent,
            serde_json::Value::Array(items) => Value::List(
                items
                    .into_iter()
                    .map(|i| scalar(&i).unwrap_or_default())
                    .collect(),
            ),
            serde_json::Value::Object(_) => Value::Invalid("HASH"),
            other => Value::Str(scalar(&other).unwrap_or_default()),
        };
        input.insert(&k, value);
    }
    Ok(input)
}

/// A JSON scalar as Perl would stringify it.
fn scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Bool(b) => Some(if *b { "1" } else { "0" }.into()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Decodes a request's parameters: body (POST/PUT) merged with the query.
pub fn collect(
    method: Method,
    query: Option<&str>,
    body: Option<(&str, &[u8])>,
) -> Result<Input, String> {
    let mut input = Input::default();
    if method.has_body()
        && let Some((content_type, bytes)) = body
    {
        let is_json = content_type
            .split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
        if is_json {
            if !bytes.is_empty() {
                input = decode_json(bytes)?;
            }
        } else {
            input = decode_urlencoded(&String::from_utf8_lossy(bytes));
        }
    }
    if let Some(q) = query {
        input.merge_over(decode_urlencoded(q));
    }
    Ok(input)
}

/// `uri_unescape` of the request path (no `+` handling, as URI::Escape).
pub fn unescape_path(path: &str) -> String {
    String::from_utf8_lossy(&percent_decode(path.as_bytes(), false)).into_owned()
}

/// Decodes a `%XX`-encoded string (sshkeys stored form → key text).
pub fn decode_component(s: &str) -> String {
    String::from_utf8_lossy(&percent_decode(s.as_bytes(), false)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::form::encode_component;

    fn s(v: &str) -> Value {
        Value::Str(v.into())
    }

    #[test]
    fn semicolon_splits_pairs_like_ampersand() {
        let i = decode_urlencoded("tags=a;b&boot=order=scsi0;net0");
        assert_eq!(i.get("tags"), Some(&s("a")));
        // `b` and `net0` are keys without values now.
        assert_eq!(i.get("b"), Some(&Value::Absent));
        assert_eq!(i.get("net0"), Some(&Value::Absent));
        // `order=scsi0` lost everything after the second `=`.
        assert_eq!(i.get("boot"), Some(&s("order")));
    }

    #[test]
    fn raw_equals_truncates_and_escaped_equals_survives() {
        let i = decode_urlencoded("scsi0=local-lvm:0,import-from=local:import/x.qcow2");
        assert_eq!(i.get("scsi0"), Some(&s("local-lvm:0,import-from")));
        let i = decode_urlencoded("scsi0=local-lvm%3A0%2Cimport-from%3Dlocal%3Aimport%2Fx.qcow2");
        assert_eq!(
            i.get("scsi0"),
            Some(&s("local-lvm:0,import-from=local:import/x.qcow2"))
        );
    }

    #[test]
    fn plus_percent_and_utf8() {
        let i = decode_urlencoded("description=hello+world%21&name=caf%C3%A9&bad=%ZZ");
        assert_eq!(i.get("description"), Some(&s("hello world!")));
        assert_eq!(i.get("name"), Some(&s("café")));
        assert_eq!(i.get("bad"), Some(&s("%ZZ")));
    }

    #[test]
    fn repeated_keys_become_lists_and_empty_values_are_absent() {
        let i = decode_urlencoded("command=ls&command=-l&x=&y");
        assert_eq!(
            i.get("command"),
            Some(&Value::List(vec!["ls".into(), "-l".into()]))
        );
        assert_eq!(i.get("x"), Some(&Value::Absent));
        assert_eq!(i.get("y"), Some(&Value::Absent));
    }

    #[test]
    fn sshkeys_double_encoding_survives_one_decode() {
        let key = "ssh-ed25519 AAAA+/= me@host";
        let once = encode_component(key);
        let wire = encode_component(&once);
        let i = decode_urlencoded(&format!("sshkeys={wire}"));
        assert_eq!(i.get("sshkeys"), Some(&s(&once)));
        assert_eq!(decode_component(&once), key);
    }

    #[test]
    fn query_overrides_body_and_json_bodies_work() {
        let i = collect(
            Method::Post,
            Some("memory=2048"),
            Some(("application/x-www-form-urlencoded", b"memory=1024&cores=2")),
        )
        .unwrap();
        assert_eq!(i.get("memory"), Some(&s("2048")));
        assert_eq!(i.get("cores"), Some(&s("2")));
        let i = collect(
            Method::Put,
            None,
            Some((
                "application/json; charset=utf-8",
                br#"{"cores":2,"onboot":true,"x":{"a":1}}"#,
            )),
        )
        .unwrap();
        assert_eq!(i.get("cores"), Some(&s("2")));
        assert_eq!(i.get("onboot"), Some(&s("1")));
        assert_eq!(i.get("x"), Some(&Value::Invalid("HASH")));
        // GET ignores any body.
        let i = collect(
            Method::Get,
            None,
            Some(("application/x-www-form-urlencoded", b"a=1")),
        )
        .unwrap();
        assert_eq!(i, Input::default());
    }

    #[test]
    fn paths_are_unescaped_before_routing() {
        assert_eq!(
            unescape_path("/nodes/pve/tasks/UPID%3Apve%3A0001%3Aroot%40pam%21t%3A/status"),
            "/nodes/pve/tasks/UPID:pve:0001:root@pam!t:/status"
        );
        assert_eq!(unescape_path("/a+b"), "/a+b");
    }
}
