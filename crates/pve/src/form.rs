//! Request parameter encoding, exactly as PVE's HTTP server parses it.
//!
//! PVE (`decode_urlencoded` in pve-http-server) splits pairs on **both** `&`
//! and `;`, and keeps only the first two fields of `split(/=/, $pair)`, so a
//! raw `;` splits a value and a raw `=` truncates it
//! (`scsi0=local-lvm:0,import-from=…` would arrive as `local-lvm:0,import-from`).
//! We therefore percent-encode every byte outside `A-Za-z0-9-._~`; `:`, `,`,
//! `;`, `=`, `+`, `/` and space all travel as `%XX`.
//!
//! Two PVE value syntaxes live here as well:
//! - property strings (`virtio,bridge=vmbr0,tag=10`): [`PropertyString`];
//! - `sshkeys`, whose schema format is `urlencoded`: the value PVE sees after
//!   form decoding must itself be percent-encoded (space as `%20`, never
//!   `+`), so the wire shows `%2520` ([`encode_sshkeys`]).

use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use super::auth::Secret;

/// Bytes sent as-is in a form value or query: the RFC 3986 unreserved set.
const FORM_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Path segments may also carry `:`, `@` and `!` raw (valid pchars), which
/// keeps UPIDs and token ids readable; PVE unescapes the path either way.
const PATH_ESCAPE: &AsciiSet = &FORM_ESCAPE.remove(b':').remove(b'@').remove(b'!');

/// Percent-encodes one form key or value.
pub fn encode_component(text: &str) -> String {
    utf8_percent_encode(text, FORM_ESCAPE).to_string()
}

/// Percent-encodes one path segment.
pub fn encode_path_segment(text: &str) -> String {
    utf8_percent_encode(text, PATH_ESCAPE).to_string()
}

/// The value PVE expects for `sshkeys` after form decoding: the keys
/// (one per line) percent-encoded like Python's `quote(keys, safe='')`.
/// The form layer encodes it once more.
pub fn encode_sshkeys(keys: &str) -> String {
    encode_component(keys)
}

/// Decodes an `sshkeys` value as `GET …/config` returns it (stored encoded).
pub fn decode_sshkeys(stored: &str) -> String {
    percent_decode_str(stored).decode_utf8_lossy().into_owned()
}

/// Joins tags the way PVE stores them (`a;b`). The `;` is escaped on the
/// wire like every other delimiter.
pub fn join_tags<S: AsRef<str>>(tags: &[S]) -> String {
    tags.iter()
        .map(|t| t.as_ref())
        .collect::<Vec<_>>()
        .join(";")
}

/// Splits a tag list as PVE does (on `,`, `;` and whitespace), lowercased,
/// sorted and deduplicated: the form to compare against.
pub fn tag_set(text: &str) -> std::collections::BTreeSet<String> {
    text.split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// One form value: plain or secret.
#[derive(Clone, Debug)]
enum Value {
    Plain(String),
    Secret(Secret),
}

/// The text recorders and logs see in place of a secret.
pub const REDACTED: &str = "<redacted>";

/// An ordered list of request parameters.
///
/// Order is kept (deterministic requests, readable recordings); booleans are
/// `0`/`1` as PVE's schema expects.
#[derive(Clone, Debug, Default)]
pub struct Form {
    pairs: Vec<(String, Value)>,
}

impl Form {
    /// An empty form.
    pub fn new() -> Self {
        Form::default()
    }

    /// Appends `key=value`.
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.pairs.push((key.into(), Value::Plain(value.into())));
        self
    }

    /// Appends `key=value` when `value` is set.
    pub fn push_opt<V: ToString>(&mut self, key: &str, value: Option<V>) -> &mut Self {
        if let Some(value) = value {
            self.push(key, value.to_string());
        }
        self
    }

    /// Appends a boolean as `0`/`1`.
    pub fn push_bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.push(key, if value { "1" } else { "0" })
    }

    /// Appends a boolean when set.
    pub fn push_opt_bool(&mut self, key: &str, value: Option<bool>) -> &mut Self {
        if let Some(value) = value {
            self.push_bool(key, value);
        }
        self
    }

    /// Appends a secret value; it is redacted everywhere but on the wire.
    pub fn push_secret(&mut self, key: &str, value: &Secret) -> &mut Self {
        self.pairs
            .push((key.to_string(), Value::Secret(value.clone())));
        self
    }

    /// Whether the form has no parameters.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The value of the first `key`, redacted if secret.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| match v {
                Value::Plain(s) => s.as_str(),
                Value::Secret(_) => REDACTED,
            })
    }

    /// The parameters as PVE sees them after form decoding, secrets replaced
    /// by [`REDACTED`]. This is what recorders and validators get.
    pub fn redacted_pairs(&self) -> Vec<(String, String)> {
        self.pairs
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::Plain(s) => s.clone(),
                    Value::Secret(_) => REDACTED.to_string(),
                };
                (k.clone(), v)
            })
            .collect()
    }

    /// The `application/x-www-form-urlencoded` text, secrets included. Only
    /// the transport calls this, to put it on the wire.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        for (i, (k, v)) in self.pairs.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            out.push_str(&encode_component(k));
            out.push('=');
            out.push_str(&encode_component(match v {
                Value::Plain(s) => s,
                Value::Secret(s) => s.expose(),
            }));
        }
        out
    }
}

/// Builds a PVE property string: an optional leading default value, then
/// `key=value` items joined by `,` (`virtio=AA:…,bridge=vmbr0`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PropertyString {
    items: Vec<(Option<String>, String)>,
}

impl PropertyString {
    /// An empty property string.
    pub fn new() -> Self {
        PropertyString::default()
    }

    /// Appends the value of the default key (written without `key=`).
    pub fn value(mut self, value: impl Into<String>) -> Self {
        self.items.push((None, value.into()));
        self
    }

    /// Appends `key=value`.
    pub fn kv(mut self, key: &str, value: impl Into<String>) -> Self {
        self.items.push((Some(key.to_string()), value.into()));
        self
    }

    /// Appends `key=value` when set.
    pub fn kv_opt<V: ToString>(self, key: &str, value: Option<V>) -> Self {
        match value {
            Some(v) => self.kv(key, v.to_string()),
            None => self,
        }
    }

    /// Appends `key=0|1` when set.
    pub fn flag_opt(self, key: &str, value: Option<bool>) -> Self {
        self.kv_opt(key, value.map(|b| if b { "1" } else { "0" }))
    }

    /// Parses `a,k=v,k2=v2`. Items without `=` have no key. Values cannot
    /// contain `,` (PVE's own parser has the same limit).
    pub fn parse(text: &str) -> Self {
        let items = text
            .split(',')
            .filter(|item| !item.is_empty())
            .map(|item| match item.split_once('=') {
                Some((k, v)) => (Some(k.to_string()), v.to_string()),
                None => (None, item.to_string()),
            })
            .collect();
        PropertyString { items }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.items
            .iter()
            .find(|(k, _)| k.as_deref() == Some(key))
            .map(|(_, v)| v.as_str())
    }

    /// The first value written without a key (the default key's value).
    pub fn default_value(&self) -> Option<&str> {
        self.items
            .iter()
            .find(|(k, _)| k.is_none())
            .map(|(_, v)| v.as_str())
    }

    /// All items in order.
    pub fn items(&self) -> impl Iterator<Item = (Option<&str>, &str)> {
        self.items.iter().map(|(k, v)| (k.as_deref(), v.as_str()))
    }
}

impl fmt::Display for PropertyString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.items.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match k {
                Some(k) => write!(f, "{k}={v}")?,
                None => f.write_str(v)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal model of PVE's `decode_urlencoded`: split on `&` and `;`,
    /// keep two `=` fields, `+` is space, then percent-decode.
    fn pve_decode(body: &str) -> Vec<(String, String)> {
        body.split(['&', ';'])
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let mut fields = pair.split('=');
                let k = fields.next().unwrap_or("");
                let v = fields.next().unwrap_or("");
                let dec = |s: &str| {
                    percent_decode_str(&s.replace('+', " "))
                        .decode_utf8()
                        .unwrap()
                        .into_owned()
                };
                (dec(k), dec(v))
            })
            .collect()
    }

    #[test]
    fn delimiters_survive_pve_form_parsing() {
        let mut form = Form::new();
        form.push("scsi0", "local-lvm:0,import-from=local:import/noble.qcow2")
            .push("boot", "order=scsi0;net0")
            .push("tags", join_tags(&["homestak", "m-demo"]))
            .push("description", "a+b c&d=e\nline2 ünï");
        let wire = form.encode();
        assert_eq!(
            wire,
            "scsi0=local-lvm%3A0%2Cimport-from%3Dlocal%3Aimport%2Fnoble.qcow2\
             &boot=order%3Dscsi0%3Bnet0&tags=homestak%3Bm-demo\
             &description=a%2Bb%20c%26d%3De%0Aline2%20%C3%BCn%C3%AF"
        );
        assert_eq!(pve_decode(&wire), form.redacted_pairs());
    }

    #[test]
    fn raw_delimiters_would_break_which_is_why_we_escape() {
        // The failure mode NOTES §2 describes, shown against the model.
        let broken = pve_decode("scsi0=local-lvm:0,import-from=local:import/x.qcow2&tags=a;b");
        assert_eq!(broken[0].1, "local-lvm:0,import-from");
        assert_eq!(broken[1], ("tags".into(), "a".into()));
    }

    #[test]
    fn sshkeys_are_double_encoded_like_proxmoxer() {
        let keys = "ssh-ed25519 AAAAC3Nza+/= me@host\nssh-rsa AAAB x@y";
        let mut form = Form::new();
        form.push("sshkeys", encode_sshkeys(keys));
        let wire = form.encode();
        assert_eq!(
            wire,
            "sshkeys=ssh-ed25519%2520AAAAC3Nza%252B%252F%253D%2520me%2540host\
             %250Assh-rsa%2520AAAB%2520x%2540y"
        );
        // After PVE's form decoding the value is valid `urlencoded`…
        let seen = &pve_decode(&wire)[0].1;
        assert!(
            seen.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-%_.!~*'()".contains(c)),
            "{seen}"
        );
        // …and decodes back to the keys.
        assert_eq!(decode_sshkeys(seen), keys);
    }

    #[test]
    fn secrets_are_on_the_wire_but_redacted_elsewhere() {
        let mut form = Form::new();
        form.push_secret("cipassword", &Secret::new("hunter2;x"));
        assert_eq!(form.encode(), "cipassword=hunter2%3Bx");
        assert_eq!(form.get("cipassword"), Some(REDACTED));
        assert_eq!(form.redacted_pairs()[0].1, REDACTED);
        assert!(!format!("{form:?}").contains("hunter2"));
    }

    #[test]
    fn booleans_are_zero_and_one() {
        let mut form = Form::new();
        form.push_bool("purge", true)
            .push_opt_bool("start", Some(false))
            .push_opt_bool("x", None)
            .push_opt("cores", Some(2));
        assert_eq!(form.encode(), "purge=1&start=0&cores=2");
    }

    #[test]
    fn path_segments_keep_upid_readable() {
        assert_eq!(
            encode_path_segment("UPID:pve:0000A:0000B:6700:qmcreate:100:root@pam!t:"),
            "UPID:pve:0000A:0000B:6700:qmcreate:100:root@pam!t:"
        );
        assert_eq!(encode_path_segment("a/b c?"), "a%2Fb%20c%3F");
    }

    #[test]
    fn property_strings_build_and_parse() {
        let net = PropertyString::new()
            .value("virtio")
            .kv("bridge", "vmbr0")
            .kv_opt("tag", Some(10))
            .flag_opt("firewall", Some(true))
            .kv_opt::<u8>("mtu", None);
        assert_eq!(net.to_string(), "virtio,bridge=vmbr0,tag=10,firewall=1");
        let parsed = PropertyString::parse("virtio=F2:1A:5C:65:0F:38,bridge=vmbr0");
        assert_eq!(parsed.get("virtio"), Some("F2:1A:5C:65:0F:38"));
        assert_eq!(parsed.get("bridge"), Some("vmbr0"));
        let disk = PropertyString::parse("local-lvm:vm-100-disk-0,size=32G");
        assert_eq!(disk.default_value(), Some("local-lvm:vm-100-disk-0"));
        assert_eq!(disk.get("size"), Some("32G"));
    }

    #[test]
    fn tags_compare_as_normalized_sets() {
        assert_eq!(
            tag_set("B;a,c  a"),
            ["a", "b", "c"].iter().map(|s| s.to_string()).collect()
        );
    }
}
