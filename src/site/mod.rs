//! Site-config discovery, loading and the ConfigResolver.

pub mod discover;

/// JSON Schemas of the site-config documents (filled in with the resolver).
pub fn json_schemas() -> Vec<(&'static str, schemars::Schema)> {
    Vec::new()
}
