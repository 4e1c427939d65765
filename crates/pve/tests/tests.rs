//! The integration tests of homestak-pve: one binary, one module per concern.

// Test code: a failed unwrap is a failed test (clippy.toml says the same for #[test]s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_routes;
mod fake;
mod http;
mod recorded;
mod schema;
mod support;
