//! Textual edits of small YAML files that keep their comments and layout:
//! top-level `key: value` lines and entries of a top-level block mapping
//! (`api_tokens:` / `  name: "value"`). Callers parse the result again and
//! compare it with the data they meant ([`verify`]) before writing, so an
//! unusual layout fails instead of being damaged.

use std::path::Path;

use serde_json::Value;

/// A section that is not a block mapping (a flow mapping, a scalar).
#[derive(Debug, thiserror::Error)]
#[error(
    "{section} is not a block mapping; write it as `{section}:` with one `name: value` per line"
)]
pub struct NotBlock {
    pub section: String,
}

/// The edited text does not parse to what was meant.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the edited text does not parse")]
    Yaml(#[source] crate::yaml::Error),
    #[error("the file's layout defeated a safe textual edit; set the keys by hand")]
    Differs,
}

/// A double-quoted YAML scalar.
pub fn quote(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Whether `line` is the top-level key `key`.
pub fn is_top_key(line: &str, key: &str) -> bool {
    line.strip_prefix(key).is_some_and(|r| r.starts_with(':'))
}

/// Parses `text` (empty is an empty mapping).
pub fn parse(text: &str, origin: &Path) -> Result<Value, crate::yaml::Error> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    crate::yaml::from_str(text, origin)
}

/// Sets top-level `key: value` lines (values as written), appending
/// missing ones.
pub fn set_top_level(text: &str, pairs: &[(&str, String)]) -> String {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    for (key, value) in pairs {
        let line = format!("{key}: {value}");
        match lines.iter().position(|l| is_top_key(l, key)) {
            Some(i) => lines[i] = line,
            None => lines.push(line),
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// Sets `section.name: "value"` in a top-level block mapping of `text`,
/// keeping every other line; adds the section when missing.
pub fn set_entry(text: &str, section: &str, name: &str, value: &str) -> Result<String, NotBlock> {
    let entry = |indent: &str| format!("{indent}{name}: {}", quote(value));
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let Some(start) = lines.iter().position(|l| is_top_key(l, section)) else {
        if lines.last().is_some_and(|l| !l.trim().is_empty()) {
            lines.push(String::new());
        }
        lines.push(format!("{section}:"));
        lines.push(entry("  "));
        return Ok(lines.join("\n") + "\n");
    };
    let rest = lines[start][section.len() + 1..].trim();
    if rest == "{}" || rest.starts_with("{}") {
        lines[start] = format!("{section}:");
        lines.insert(start + 1, entry("  "));
        return Ok(lines.join("\n") + "\n");
    }
    if !(rest.is_empty() || rest.starts_with('#')) {
        return Err(NotBlock {
            section: section.to_string(),
        });
    }
    // The block: following lines that are indented, blank or comments.
    let mut end = start + 1;
    let mut indent = String::from("  ");
    let mut last_entry = start;
    while end < lines.len() {
        let l = &lines[end];
        if !l.trim().is_empty()
            && !l.starts_with(' ')
            && !l.starts_with('\t')
            && !l.starts_with('#')
        {
            break;
        }
        if !l.trim().is_empty() && !l.trim_start().starts_with('#') {
            indent = l[..l.len() - l.trim_start().len()].to_string();
            last_entry = end;
            let key = l
                .trim_start()
                .split(':')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches(['"', '\'']);
            if key == name {
                lines[end] = entry(&indent);
                return Ok(lines.join("\n") + "\n");
            }
        }
        end += 1;
    }
    lines.insert(last_entry + 1, entry(&indent));
    Ok(lines.join("\n") + "\n")
}

/// Checks that `after` parses to `before` changed by `expect`.
pub fn verify(
    origin: &Path,
    before: &Value,
    after: &str,
    expect: impl FnOnce(&mut Value),
) -> Result<(), VerifyError> {
    let mut want = before.clone();
    expect(&mut want);
    let got = parse(after, origin).map_err(VerifyError::Yaml)?;
    if got != want {
        return Err(VerifyError::Differs);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_set_in_place_keeping_comments() {
        let text = "# secrets\napi_tokens:\n  # the lab\n  a: \"x\"\nssh_keys: {}\n";
        let out = set_entry(text, "api_tokens", "b", "y").unwrap();
        assert_eq!(
            out,
            "# secrets\napi_tokens:\n  # the lab\n  a: \"x\"\n  b: \"y\"\nssh_keys: {}\n"
        );
        let out = set_entry(&out, "api_tokens", "a", "z").unwrap();
        assert!(out.contains("  a: \"z\"\n"), "{out}");
        assert!(set_entry("api_tokens: x\n", "api_tokens", "a", "b").is_err());
        let added = set_entry("", "api_tokens", "a", "b").unwrap();
        assert_eq!(added, "api_tokens:\n  a: \"b\"\n");
    }
}
