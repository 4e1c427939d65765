//! A node's config file, `/etc/pve/nodes/<node>/config`, as
//! `PVE::NodeConfig` reads and writes it: the notes (`description`) as `#`
//! comment lines first, each line through `PVE::Tools::encode_text`, then
//! `key: value` lines sorted by key. The `digest` is the SHA-1 of the file
//! text; an empty (or missing) file reads as `{}`, without a digest.
//!
//! The simulator keeps the file text itself, so the digest changes exactly
//! when PVE's would.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// PVE's answer to a write whose `digest` is stale
/// (`PVE::Tools::assert_if_modified`), a 500.
pub const MODIFIED: &str =
    "detected modified configuration - file changed by other user? Try again.";

/// A parsed node config: the notes and the other keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    /// Every line followed by `\n`, as PVE reads comments back.
    pub description: Option<String>,
    pub options: BTreeMap<String, String>,
}

/// SHA-1 hex of the file text.
pub fn digest(raw: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, raw.as_bytes());
    homestak_base::digest::hex(d.as_ref())
}

/// `parse_node_config`: comment lines (and a legacy `description:` line)
/// make the notes; `key: value` lines the options; other lines are
/// skipped (PVE warns and goes on).
pub fn parse(raw: &str) -> NodeConfig {
    let mut description = String::new();
    let mut options = BTreeMap::new();
    for line in raw.split('\n') {
        if let Some(text) = line.strip_prefix('#') {
            description.push_str(&decode_text(text));
            description.push('\n');
            continue;
        }
        if let Some(rest) = line.strip_prefix("description:") {
            let text = rest.trim();
            if !text.is_empty() {
                description.push_str(&decode_text(text));
                description.push('\n');
                continue;
            }
        }
        if let Some((key, value)) = line.split_once(':')
            && is_key(key)
            && !value.trim_start().is_empty()
        {
            options.insert(key.to_string(), value.trim_start().to_string());
        }
    }
    NodeConfig {
        description: (!description.is_empty()).then_some(description),
        options,
    }
}

/// `[a-z][a-z_]*\d*`.
fn is_key(key: &str) -> bool {
    let letters = key.trim_end_matches(|c: char| c.is_ascii_digit());
    letters.starts_with(|c: char| c.is_ascii_lowercase())
        && letters.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

/// `write_node_config`: the notes split on `\n` the way Perl's `split`
/// does (trailing empty lines dropped), then the options by key.
pub fn render(config: &NodeConfig) -> String {
    let mut raw = String::new();
    let notes = config.description.as_deref().unwrap_or_default();
    let mut lines: Vec<&str> = notes.split('\n').collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    for line in lines {
        raw.push('#');
        raw.push_str(&encode_text(line));
        raw.push('\n');
    }
    for (key, value) in &config.options {
        raw.push_str(&format!("{key}: {value}\n"));
    }
    raw
}

/// `GET /nodes/{node}/config[?property=…]`: `{}` for an empty file; one
/// property (without the digest) when asked for.
pub fn to_json(raw: &str, property: Option<&str>) -> Value {
    if raw.is_empty() {
        return json!({});
    }
    let config = parse(raw);
    let mut all = Map::new();
    all.insert("digest".into(), json!(digest(raw)));
    if let Some(d) = &config.description {
        all.insert("description".into(), json!(d));
    }
    for (k, v) in &config.options {
        all.insert(k.clone(), json!(v));
    }
    match property {
        None => Value::Object(all),
        Some(p) => match all.get(p) {
            Some(v) if p != "digest" => json!({ p: v }),
            _ => json!({}),
        },
    }
}

/// `PVE::Tools::encode_text`: every byte outside `\x20-\x39` and
/// `\x3b-\x7e` (controls, `:` and non-ASCII) as `%XX`. `%` itself is kept.
pub fn encode_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x39).contains(&b) || (0x3b..=0x7e).contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `PVE::Tools::decode_text`: `%XX` decoded (malformed ones kept), then
/// UTF-8.
pub fn decode_text(text: &str) -> String {
    String::from_utf8_lossy(&percent_encoding::percent_decode_str(text).collect::<Vec<u8>>())
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notes(text: &str) -> NodeConfig {
        NodeConfig {
            description: Some(text.into()),
            options: BTreeMap::new(),
        }
    }

    #[test]
    fn notes_are_comment_lines_and_read_back_with_a_newline_each() {
        let raw = render(&notes("Lab host: rack 2\n\nDo not reboot"));
        assert_eq!(raw, "#Lab host%3A rack 2\n#\n#Do not reboot\n");
        assert_eq!(
            to_json(&raw, None)["description"],
            "Lab host: rack 2\n\nDo not reboot\n"
        );
        // Trailing empty lines go, as Perl's split drops them.
        assert_eq!(render(&notes("a\n\n\n")), "#a\n");
        assert_eq!(render(&notes("")), "");
    }

    #[test]
    fn the_digest_is_the_sha1_of_the_file_and_an_empty_file_has_none() {
        assert_eq!(to_json("", None), json!({}));
        let raw = "#x\n";
        // `printf '#x\n' | sha1sum`
        assert_eq!(
            to_json(raw, None)["digest"],
            "c9bd01156ee593522d3720104765689a79ef04d0"
        );
        assert_ne!(digest(raw), digest("#y\n"));
        assert_eq!(
            to_json(raw, Some("description")),
            json!({"description": "x\n"})
        );
        assert_eq!(to_json(raw, Some("wakeonlan")), json!({}));
    }

    #[test]
    fn encode_text_escapes_like_pve_and_decoding_undoes_it() {
        assert_eq!(encode_text("a:b%c é\t"), "a%3Ab%c %C3%A9%09");
        assert_eq!(decode_text("a%3Ab%c %C3%A9%09"), "a:b%c é\t");
        // PVE keeps `%` on write but decodes on read: `%41` comes back `A`.
        assert_eq!(decode_text(&encode_text("100%41")), "100A");
    }

    #[test]
    fn options_and_a_legacy_description_line_parse() {
        let config = parse("#one\ndescription: two\nwakeonlan: aa:bb:cc:dd:ee:ff\nbogus line\n");
        assert_eq!(config.description.as_deref(), Some("one\ntwo\n"));
        assert_eq!(
            config.options.get("wakeonlan").map(String::as_str),
            Some("aa:bb:cc:dd:ee:ff")
        );
        assert_eq!(
            render(&config),
            "#one\n#two\nwakeonlan: aa:bb:cc:dd:ee:ff\n"
        );
    }
}
