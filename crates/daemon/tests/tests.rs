//! The integration tests of homestak-daemon: one binary, one module per concern.

// Test code: a failed unwrap is a failed test (clippy.toml says the same for #[test]s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod bodies;
mod hardening;
mod load;
mod matrix;
mod reconcile_loop;
mod repos;
mod secrets;
mod subtrees;
mod support;
mod tarpit;
mod ui;
