//! [`Secret`]: a string that never shows itself, the one redacting type for
//! every secret homestak handles: site-config tokens and passwords, PVE API
//! token secrets and cloud-init passwords, the daemon's tokens, and the
//! simulator's token, root password and ticket key.
//!
//! Secrets live in this type from the moment they are read. `Debug` and
//! `Display` print a placeholder, the type has no `Serialize` impl (an
//! output that must carry the value opts in per field with
//! [`Secret::serialize_exposed`], or [`exposed_or_empty`] for an optional
//! one), and comparison is constant-time.

use std::fmt;

use serde::{Deserialize, Deserializer, Serializer};
use subtle::ConstantTimeEq;

/// A secret string (token, password). Empty means "not configured".
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The empty secret ("not configured").
    pub fn empty() -> Secret {
        Secret(String::new())
    }

    /// True when no value is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value in clear. Call only where the value leaves the process on
    /// purpose (tfvars for tofu, an API header, a cloud-init payload).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with a presented value (e.g. a bearer
    /// token). Only the length can be learnt from timing.
    pub fn ct_eq(&self, presented: &str) -> bool {
        bool::from(self.0.as_bytes().ct_eq(presented.as_bytes()))
    }

    /// `serialize_with` helper for output fields that are meant to carry the
    /// value (the tofu-shaped resolver output).
    pub fn serialize_exposed<S: Serializer>(secret: &Secret, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&secret.0)
    }
}

/// `#[serde(default, with = "...")]` for an optional secret kept in clear
/// (a private store), written as `""` when absent: records from before the
/// field was an `Option` held `""` for "not yet made", and read as `None`.
pub mod exposed_or_empty {
    use serde::{Deserializer, Serializer};

    use super::Secret;

    pub fn serialize<S: Serializer>(secret: &Option<Secret>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(secret.as_ref().map_or("", Secret::expose))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
        crate::empty::deserialize(d)
    }
}

impl PartialEq for Secret {
    /// Constant-time, like [`Secret::ct_eq`].
    fn eq(&self, other: &Secret) -> bool {
        self.ct_eq(other.expose())
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            f.write_str("Secret(<empty>)")
        } else {
            f.write_str("Secret(<redacted>)")
        }
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_empty() {
            "<unset>"
        } else {
            "<redacted>"
        })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2-token");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(s.to_string(), "<redacted>");
        assert_eq!(format!("{:?}", Secret::empty()), "Secret(<empty>)");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            token: Secret,
        }
        let text = format!("{:?}", Holder { token: s.clone() });
        assert!(!text.contains("hunter2"), "{text}");
        assert_eq!(s.expose(), "hunter2-token");
    }

    #[test]
    fn an_optional_secret_is_kept_as_an_empty_string_when_absent() {
        #[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(default)]
        struct Record {
            #[serde(with = "exposed_or_empty")]
            token: Option<Secret>,
        }
        let old: Record = serde_json::from_str(r#"{"token":""}"#).unwrap();
        assert_eq!(old.token, None);
        assert_eq!(serde_json::to_string(&old).unwrap(), r#"{"token":""}"#);
        let kept = Record {
            token: Some(Secret::new("root@pam!homestak=abc")),
        };
        let json = serde_json::to_string(&kept).unwrap();
        assert_eq!(json, r#"{"token":"root@pam!homestak=abc"}"#);
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), kept);
    }

    #[test]
    fn constant_time_comparison_matches_only_equal_values() {
        let s = Secret::new("abc");
        assert!(s.ct_eq("abc"));
        assert!(!s.ct_eq("abd"));
        assert!(!s.ct_eq("ab"));
        assert!(!s.ct_eq(""));
    }
}
