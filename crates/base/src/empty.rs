//! `Option` fields that a format keeps as an empty string when absent: the
//! reference's JSON, and stored records written before the field was an
//! `Option`. Use with `#[serde(default, with = "homestak_base::empty")]`:
//! `None` is written as `""`, and `""` (or `null`, or no field) reads as
//! `None`, so the bytes on the wire and on disk stay what they were.

use std::fmt::Display;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};

/// Writes the value, or `""` for `None`.
pub fn serialize<T: AsRef<str>, S: Serializer>(value: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(value.as_ref().map_or("", AsRef::as_ref))
}

/// Reads `""` and `null` as `None`; any other string is checked by `T`.
pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
where
    T: TryFrom<String>,
    T::Error: Display,
    D: Deserializer<'de>,
{
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(text) if text.is_empty() => Ok(None),
        Some(text) => T::try_from(text).map(Some).map_err(D::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use crate::id::PveNode;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default)]
    struct Record {
        #[serde(with = "crate::empty")]
        text: Option<String>,
        #[serde(with = "crate::empty")]
        node: Option<PveNode>,
    }

    #[test]
    fn absent_values_are_written_and_read_as_empty_strings() {
        let none = Record::default();
        assert_eq!(
            serde_json::to_string(&none).unwrap(),
            r#"{"text":"","node":""}"#
        );
        for old in [r#"{"text":"","node":""}"#, r#"{"text":null}"#, "{}"] {
            assert_eq!(serde_json::from_str::<Record>(old).unwrap(), none, "{old}");
        }
        let some = Record {
            text: Some("3 converged".into()),
            node: Some(PveNode::new("pve").unwrap()),
        };
        let json = serde_json::to_string(&some).unwrap();
        assert_eq!(json, r#"{"text":"3 converged","node":"pve"}"#);
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), some);
    }

    #[test]
    fn a_present_value_is_still_checked() {
        let err = serde_json::from_str::<Record>(r#"{"node":"a.b"}"#).unwrap_err();
        assert!(
            err.to_string().contains("not a valid PVE node name"),
            "{err}"
        );
    }
}
