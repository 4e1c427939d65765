//! Case loading and comparison shared by the golden checkers.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// One golden case.
#[derive(Debug)]
pub struct Case {
    /// `<kind>/<fixture>/<detail>`.
    pub id: String,
    pub kind: String,
    /// The call arguments, as recorded.
    pub inputs: Value,
    /// Set on cases that record a reference defect we must not copy.
    pub note: Option<String>,
    /// `inputs.site_config` resolved against the shared directory.
    pub site_config: PathBuf,
    pub expected: Expected,
}

/// What the reference did.
#[derive(Debug)]
pub enum Expected {
    Output(Value),
    Error {
        /// The exception text, with absolute paths written as `{site_config}`.
        message: String,
        /// Python exception class.
        error_type: Option<String>,
        /// E-code for resolver errors.
        error_code: Option<String>,
    },
}

impl Expected {
    /// True when the reference crashed (an uncaught Python exception or a
    /// YAML parser error): we must fail too, but the wording is not a contract.
    pub fn is_crash(&self) -> bool {
        matches!(self, Expected::Error { error_type: Some(t), .. }
            if matches!(t.as_str(), "ParserError" | "ScannerError" | "TypeError" | "AttributeError"))
    }
}

/// The result of checking one case.
#[derive(Debug)]
pub enum Verdict {
    Pass,
    Fail(String),
}

impl Verdict {
    /// Pass when `r` is Ok, otherwise fail with its message.
    pub fn from_result(r: Result<(), String>) -> Verdict {
        match r {
            Ok(()) => Verdict::Pass,
            Err(why) => Verdict::Fail(why),
        }
    }
}

pub fn load_cases(dir: &Path, shared: &Path) -> Vec<Case> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            let raw: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            let str_field = |k: &str| raw.get(k).and_then(Value::as_str).map(str::to_string);
            let inputs = raw.get("inputs").cloned().unwrap_or(Value::Null);
            let site_config = shared.join(
                inputs
                    .get("site_config")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            );
            let expected = match raw.get("output") {
                Some(output) if str_field("error").is_none() => Expected::Output(output.clone()),
                _ => Expected::Error {
                    message: str_field("error").unwrap_or_default(),
                    error_type: str_field("error_type"),
                    error_code: str_field("error_code"),
                },
            };
            Case {
                id: str_field("case").unwrap_or_else(|| path.display().to_string()),
                kind: str_field("kind").unwrap_or_default(),
                inputs,
                note: str_field("note"),
                site_config,
                expected,
            }
        })
        .collect()
}

/// Compares JSON the way the goldens README says: objects as maps (key order
/// is informative only), lists in order, numbers by value (Python may write
/// `2.0` where we write `2`). Returns the first difference with its JSON path.
pub fn compare(expected: &Value, actual: &Value) -> Result<(), String> {
    compare_at("$", expected, actual)
}

fn compare_at(path: &str, expected: &Value, actual: &Value) -> Result<(), String> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                match a.get(k) {
                    Some(av) => compare_at(&format!("{path}.{k}"), ev, av)?,
                    None => return Err(format!("{path}.{k}: missing (expected {ev})")),
                }
            }
            if let Some(k) = a.keys().find(|k| !e.contains_key(*k)) {
                return Err(format!("{path}.{k}: unexpected key (value {})", a[k]));
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Err(format!(
                    "{path}: expected {} items, got {}: expected {expected}, got {actual}",
                    e.len(),
                    a.len()
                ));
            }
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                compare_at(&format!("{path}[{i}]"), ev, av)?;
            }
            Ok(())
        }
        (Value::Number(e), Value::Number(a)) if e.as_f64() == a.as_f64() => Ok(()),
        (e, a) if e == a => Ok(()),
        (e, a) => Err(format!("{path}: expected {e}, got {a}")),
    }
}

/// Replaces the absolute site-config path in an error message with
/// `{site_config}`, as the goldens record it.
pub fn normalise_message(message: &str, site_config: &Path) -> String {
    let abs = site_config.to_string_lossy();
    let canonical = site_config
        .canonicalize()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = message.to_string();
    for p in [canonical.as_str(), abs.as_ref()] {
        if !p.is_empty() {
            out = out.replace(p, "{site_config}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compare_ignores_key_order_but_not_list_order() {
        assert!(
            compare(
                &json!({"a": 1, "b": [1, 2]}),
                &json!({"b": [1, 2], "a": 1.0})
            )
            .is_ok()
        );
        assert!(compare(&json!({"b": [1, 2]}), &json!({"b": [2, 1]})).is_err());
        assert!(compare(&json!({"a": 1}), &json!({"a": 1, "c": 2})).is_err());
        assert!(compare(&json!({"a": null}), &json!({})).is_err());
    }
}
