//! The values a scenario's phases share (`vm_ip`, `inner_ip`, `pve_host`,
//! …), printed as the report's `context` and carried between chained runs
//! by `--context-file` (a JSON object; a missing file is an empty context).
//! Phases keep secrets out of it: the file and the report are not secret.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// String-keyed JSON values, in insertion order of first set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context(Map<String, Value>);

/// Why a context file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ContextFileError {
    #[error("cannot read the context file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the context file {path} is not a JSON object; fix or remove it (a chained run writes it)"
    )]
    NotObject {
        path: PathBuf,
        #[source]
        source: Option<serde_json::Error>,
    },
    #[error("cannot write the context file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Context {
    pub fn new() -> Context {
        Context::default()
    }

    /// Loads `path`; a file that does not exist yet is an empty context.
    pub fn load(path: &Path) -> Result<Context, ContextFileError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Context::new()),
            Err(source) => {
                return Err(ContextFileError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => Ok(Context(map)),
            Ok(_) => Err(ContextFileError::NotObject {
                path: path.to_path_buf(),
                source: None,
            }),
            Err(source) => Err(ContextFileError::NotObject {
                path: path.to_path_buf(),
                source: Some(source),
            }),
        }
    }

    /// Writes the context to `path` atomically (mode 0600).
    pub fn save(&self, path: &Path) -> Result<(), ContextFileError> {
        let mut text = serde_json::to_string_pretty(&self.0).unwrap_or_else(|_| "{}".into());
        text.push('\n');
        homestak_base::fsutil::write_atomic(path, text.as_bytes(), 0o600).map_err(|source| {
            ContextFileError::Write {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    pub fn set(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        self.0.insert(key.into(), value.into());
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// A string value (numbers are given as text).
    pub fn get_str(&self, key: &str) -> Option<String> {
        match self.0.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// Adds every value of `other`, replacing ours.
    pub fn merge(&mut self, other: &Context) {
        for (k, v) in &other.0 {
            self.0.insert(k.clone(), v.clone());
        }
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }
}
