//! The integration tests of homestak-sim: one binary, one module per concern.

// Test code: a failed unwrap is a failed test (clippy.toml says the same for #[test]s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod control;
mod create_order;
mod guest;
mod host;
mod nested;
mod packer;
mod pve_install;
mod replay;
mod scale;
mod support;
mod users;
mod vm;
