//! Lenient decoding for PVE's loosely typed JSON.
//!
//! PVE does not coerce return values to their declared types: numbers come
//! as strings in old versions (`"vmid":"100"`, `"ctime":"1606311524"`),
//! nextid is always a string, flags are `0`/`1`, sometimes `""`. These
//! helpers accept every spelling seen in recordings and map the empty string
//! to "absent".

use serde::Deserialize;
use serde::de::{Deserializer, Error as _};
use serde_json::Value;

fn to_u64(value: &Value) -> Option<Option<u64>> {
    match value {
        Value::Null => Some(None),
        Value::Number(n) => n
            .as_u64()
            // Some counters arrive as floats (`1.0`); keep whole values.
            .or_else(|| {
                n.as_f64()
                    .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                    .map(|f| f as u64)
            })
            .map(Some),
        Value::String(s) if s.trim().is_empty() => Some(None),
        Value::String(s) => s.trim().parse().ok().map(Some),
        Value::Bool(b) => Some(Some(u64::from(*b))),
        _ => None,
    }
}

/// `Option<u64>` from a number, numeric string, bool, `""` or null.
pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let value = Value::deserialize(d)?;
    to_u64(&value)
        .ok_or_else(|| D::Error::custom(format!("expected an unsigned number, got {value}")))
}

/// `Option<u32>` like [`opt_u64`].
pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let value = opt_u64(d)?;
    value
        .map(|v| u32::try_from(v).map_err(|_| D::Error::custom(format!("{v} is out of range"))))
        .transpose()
}

/// `u64` like [`opt_u64`]; absent is an error.
pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    opt_u64(d)?.ok_or_else(|| D::Error::custom("missing number"))
}

/// `u32` like [`opt_u32`]; absent is an error.
pub fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    opt_u32(d)?.ok_or_else(|| D::Error::custom("missing number"))
}

/// A vmid from a number or numeric string, in PVE's range.
pub fn vmid<'de, D: Deserializer<'de>>(d: D) -> Result<homestak_base::id::VmId, D::Error> {
    let n = u32(d)?;
    homestak_base::id::VmId::new(n.into()).map_err(D::Error::custom)
}

/// `Option<f64>` from a number or numeric string.
pub fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let value = Value::deserialize(d)?;
    match &value {
        Value::Null => Ok(None),
        Value::Number(n) => Ok(n.as_f64()),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("expected a number, got {value}"))),
        _ => Err(D::Error::custom(format!("expected a number, got {value}"))),
    }
}

/// `bool` from `0`/`1`, `"0"`/`"1"`, `true`/`false`, `""` or null (false).
pub fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let value = Value::deserialize(d)?;
    match &value {
        Value::Null => Ok(false),
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.is_empty() => Ok(false),
        _ => match to_u64(&value) {
            Some(Some(n)) => Ok(n != 0),
            Some(None) => Ok(false),
            None => Err(D::Error::custom(format!(
                "expected a 0/1 flag, got {value}"
            ))),
        },
    }
}

/// `Option<String>` that also accepts numbers (stringified) and maps `""`
/// to `None`.
pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let value = Value::deserialize(d)?;
    match value {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(if b { "1" } else { "0" }.to_string())),
        other => Err(D::Error::custom(format!("expected a string, got {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    struct Probe {
        #[serde(default, deserialize_with = "opt_u64")]
        n: Option<u64>,
        #[serde(default, deserialize_with = "flag")]
        f: bool,
        #[serde(default, deserialize_with = "opt_string")]
        s: Option<String>,
        #[serde(default, deserialize_with = "opt_f64")]
        x: Option<f64>,
    }

    fn probe(json: &str) -> Probe {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn numbers_accept_strings_and_empty() {
        assert_eq!(probe(r#"{"n":100}"#).n, Some(100));
        assert_eq!(probe(r#"{"n":"100"}"#).n, Some(100));
        assert_eq!(probe(r#"{"n":""}"#).n, None);
        assert_eq!(probe(r#"{"n":2.0}"#).n, Some(2));
        assert_eq!(probe(r#"{}"#).n, None);
        assert!(serde_json::from_str::<Probe>(r#"{"n":"abc"}"#).is_err());
        assert!(serde_json::from_str::<Probe>(r#"{"n":-1}"#).is_err());
    }

    #[test]
    fn flags_accept_every_spelling() {
        for (json, want) in [
            (r#"{"f":1}"#, true),
            (r#"{"f":"1"}"#, true),
            (r#"{"f":true}"#, true),
            (r#"{"f":0}"#, false),
            (r#"{"f":""}"#, false),
            (r#"{"f":null}"#, false),
            (r#"{}"#, false),
        ] {
            assert_eq!(probe(json).f, want, "{json}");
        }
    }

    #[test]
    fn strings_accept_numbers() {
        assert_eq!(probe(r#"{"s":8}"#).s.as_deref(), Some("8"));
        assert_eq!(probe(r#"{"s":""}"#).s, None);
        assert_eq!(probe(r#"{"x":"0.5"}"#).x, Some(0.5));
    }
}
