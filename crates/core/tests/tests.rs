//! The integration tests of homestak-core: one binary, one module per concern.

// Test code: a failed unwrap is a failed test (clippy.toml says the same for #[test]s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod crds;
mod fuzz;
mod manifest_examples;
mod manifest_robustness;
mod site_resolver;
