//! Site-config discovery, loading and the ConfigResolver.

pub mod discover;
