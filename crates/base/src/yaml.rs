//! YAML loading for every file homestak reads.
//!
//! serde_yaml is deprecated upstream, so we use serde-saphyr: maintained,
//! pure Rust, and bounded against alias bombs. Two settings differ from its
//! defaults on purpose:
//! - strict booleans (YAML 1.2: only `true`/`false`), so `no` stays a string
//!   (the "Norway problem");
//! - a replay limit on aliases well below the crate default, because
//!   site-config files are small and a billion-laughs document must fail fast.
//!
//! Errors carry the file and, when the parser knows it, `line:column`.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A YAML file could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read at all.
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A mapping repeats a key. PyYAML silently kept the last value; we
    /// refuse, because one of the two values is a mistake.
    #[error(
        "duplicate key {key:?} in {}{}: remove one of the two",
        path.display(),
        Position(*position)
    )]
    DuplicateKey {
        path: PathBuf,
        key: String,
        position: Option<(u64, u64)>,
    },
    /// The text is not valid YAML, or does not have the expected shape.
    #[error("invalid YAML in {}{}", path.display(), Position(*position))]
    Parse {
        path: PathBuf,
        /// 1-based line and column, when the parser reported one.
        position: Option<(u64, u64)>,
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    /// A file that holds secrets could not be parsed. What the parser said
    /// is dropped, since it may quote a value; the position stays.
    #[error(
        "invalid YAML in {}{} (the parser's message is not shown: the file holds secrets)",
        path.display(),
        Position(*position)
    )]
    Redacted {
        path: PathBuf,
        position: Option<(u64, u64)>,
    },
}

impl Error {
    /// The file this error is about.
    pub fn path(&self) -> &Path {
        match self {
            Error::Read { path, .. }
            | Error::Parse { path, .. }
            | Error::DuplicateKey { path, .. }
            | Error::Redacted { path, .. } => path,
        }
    }

    /// `(line, column)` of a parse error, 1-based.
    pub fn position(&self) -> Option<(u64, u64)> {
        match self {
            Error::Read { .. } => None,
            Error::Parse { position, .. }
            | Error::DuplicateKey { position, .. }
            | Error::Redacted { position, .. } => *position,
        }
    }

    /// The same error without anything the file said (a value or a key),
    /// for files that hold secrets.
    pub fn redacted(self) -> Error {
        match self {
            Error::Parse { path, position, .. } | Error::DuplicateKey { path, position, .. } => {
                Error::Redacted { path, position }
            }
            other => other,
        }
    }
}

/// Renders `:line:column` when known.
struct Position(Option<(u64, u64)>);

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some((line, column)) => write!(f, ":{line}:{column}"),
            None => Ok(()),
        }
    }
}

/// The parser options every homestak YAML read uses.
pub fn options() -> serde_saphyr::Options {
    // `Options` is non-exhaustive, so set fields on the default.
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    options.with_snippet = false;
    options.alias_limits.max_total_replayed_events = 100_000;
    options
}

/// Parses `text`, naming `origin` in errors.
pub fn from_str<T: DeserializeOwned>(text: &str, origin: &Path) -> Result<T, Error> {
    serde_saphyr::from_str_with_options(text, options()).map_err(|source| {
        let position = source
            .location()
            .filter(|l| l.line() > 0)
            .map(|l| (l.line(), l.column()));
        if let serde_saphyr::Error::DuplicateMappingKey { key, .. } = &source {
            return Error::DuplicateKey {
                path: origin.to_path_buf(),
                key: key.clone().unwrap_or_else(|| "?".to_string()),
                position,
            };
        }
        Error::Parse {
            path: origin.to_path_buf(),
            position,
            source: Box::new(source),
        }
    })
}

/// Reads and parses a file.
pub fn read_file<T: DeserializeOwned>(path: &Path) -> Result<T, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    from_str(&text, path)
}

/// One step of a path into a document: a mapping key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// The 1-based `(line, column)` of the value at `path` in YAML `text`,
/// when the text parses and the path exists. Validation runs on a plain
/// value tree; this second, span-aware read lets an error about a value
/// point at it without carrying spans through every check.
pub fn locate(text: &str, path: &[Step]) -> Option<(u64, u64)> {
    let tree: serde_saphyr::Spanned<Tree> =
        serde_saphyr::from_str_with_options(text, options()).ok()?;
    let mut here = &tree;
    for step in path {
        here = match (&here.value, step) {
            (Tree::Map(entries), Step::Key(key)) => {
                entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)?
            }
            (Tree::Seq(items), Step::Index(index)) => items.get(*index)?,
            _ => return None,
        };
    }
    let at = here.referenced;
    (at.line() > 0).then(|| (at.line(), at.column()))
}

/// A document with the location of every value (for [`locate`]).
enum Tree {
    Map(Vec<(String, serde_saphyr::Spanned<Tree>)>),
    Seq(Vec<serde_saphyr::Spanned<Tree>>),
    Leaf,
}

impl<'de> serde::Deserialize<'de> for Tree {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Tree, D::Error> {
        d.deserialize_any(TreeVisitor)
    }
}

struct TreeVisitor;

/// Any scalar key as text (`1:` and `true:` are keys too).
struct Key(String);

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        Ok(Key(match value {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        }))
    }
}

impl<'de> serde::de::Visitor<'de> for TreeVisitor {
    type Value = Tree;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
        let mut entries = Vec::new();
        while let Some(Key(key)) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Tree::Map(entries))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Tree::Seq(items))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_i128<E>(self, _: i128) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_u128<E>(self, _: u128) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_str<E>(self, _: &str) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_bytes<E>(self, _: &[u8]) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_unit<E>(self) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_none<E>(self) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Tree, D::Error> {
        d.deserialize_any(TreeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_line_and_column() {
        let err = from_str::<serde_json::Value>("a: 1\nb: [1, 2\n", Path::new("m.yaml"))
            .expect_err("unterminated flow sequence must fail");
        let (line, _column) = err.position().expect("parser reports a position");
        assert!(
            line >= 2,
            "error should point at or after line 2, got {line}"
        );
        let text = err.to_string();
        assert!(text.starts_with("invalid YAML in m.yaml:"), "{text}");
    }

    #[test]
    fn duplicate_keys_are_named() {
        let err =
            from_str::<serde_json::Value>("a: 1\nb: 2\na: 3\n", Path::new("d.yaml")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("duplicate key \"a\" in d.yaml:3:"),
            "{err}"
        );
    }

    #[test]
    fn booleans_are_strict() {
        let v: serde_json::Value = from_str("a: no\nb: true\n", Path::new("x")).unwrap();
        assert_eq!(v["a"], serde_json::json!("no"));
        assert_eq!(v["b"], serde_json::json!(true));
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let p = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(from_str::<serde_json::Value>(&doc, Path::new("bomb.yaml")).is_err());
    }

    #[test]
    fn locate_points_at_values_by_path() {
        let text = "schema_version: 2\nname: \" demo\"\nnodes:\n  - name: a\n    type: vm\n  - name: \"b c\"\n";
        let key = |k: &str| Step::Key(k.to_string());
        assert_eq!(locate(text, &[key("name")]), Some((2, 7)));
        assert_eq!(
            locate(text, &[key("nodes"), Step::Index(1), key("name")]),
            Some((6, 11))
        );
        assert_eq!(locate(text, &[key("nodes"), Step::Index(5)]), None);
        assert_eq!(locate(text, &[key("name"), key("x")]), None);
        assert_eq!(locate("a: [", &[key("a")]), None);
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = read_file::<serde_json::Value>(Path::new("/nonexistent/x.yaml")).unwrap_err();
        assert_eq!(err.to_string(), "cannot read /nonexistent/x.yaml");
    }
}
