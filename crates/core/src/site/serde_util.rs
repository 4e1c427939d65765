//! Small serde helpers for site-config documents.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// Deserializes a field that must tell "absent" (`None`, via
/// `#[serde(default)]`) from "present but null" (`Some(None)`). The reference
/// treats the two differently (`vmid: null` stays null, `vms:` null crashes).
pub(crate) fn double_option<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A string-keyed mapping that keeps file order. `secrets.yaml` maps such as
/// `ssh_keys` become lists in file order, and that order is part of the
/// contract (it is the order of `authorized_keys`).
#[derive(Debug, Clone)]
pub struct OrderedMap<V>(Vec<(String, V)>);

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        OrderedMap(Vec::new())
    }
}

impl<V> OrderedMap<V> {
    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&V> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Entries in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Values in file order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = OrderedMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }

            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                // `ssh_keys:` with nothing under it is an empty mapping.
                Ok(OrderedMap::default())
            }

            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(OrderedMap::default())
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut entries: Vec<(String, V)> = Vec::new();
                while let Some((key, value)) = access.next_entry::<String, V>()? {
                    // Python dict semantics: a repeated key keeps its first
                    // position and takes the last value.
                    match entries.iter_mut().find(|(k, _)| *k == key) {
                        Some(slot) => slot.1 = value,
                        None => entries.push((key, value)),
                    }
                }
                Ok(OrderedMap(entries))
            }
        }

        d.deserialize_any(MapVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn ordered_map_keeps_file_order() {
        let m: OrderedMap<String> =
            homestak_base::yaml::from_str("zed: 1\namy: 2\nbob: 3\n", Path::new("t.yaml")).unwrap();
        let keys: Vec<&str> = m.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["zed", "amy", "bob"]);
        assert_eq!(m.get("amy").map(String::as_str), Some("2"));
        let empty: OrderedMap<String> =
            homestak_base::yaml::from_str("{}", Path::new("t.yaml")).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn double_option_tells_null_from_absent() {
        #[derive(Deserialize)]
        struct T {
            #[serde(default, deserialize_with = "double_option")]
            v: Option<Option<u32>>,
        }
        let p = Path::new("t.yaml");
        assert_eq!(homestak_base::yaml::from_str::<T>("{}", p).unwrap().v, None);
        assert_eq!(
            homestak_base::yaml::from_str::<T>("v:\n", p).unwrap().v,
            Some(None)
        );
        assert_eq!(
            homestak_base::yaml::from_str::<T>("v: 7\n", p).unwrap().v,
            Some(Some(7))
        );
    }
}
