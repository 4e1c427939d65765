//! The integration tests of homestak-ssh: one binary, one module per concern.

// Test code: a failed unwrap is a failed test (clippy.toml says the same for #[test]s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod download;
mod fuzz;
mod loopback;
mod openssh;
