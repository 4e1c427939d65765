//! The integration tests of the `homestak` binary: the CLI as users run it,
//! the daemon and the simulator as processes, real clients against
//! `homestak sim`, and the differential goldens against the Python
//! iac-driver's recorded outputs.

// Test code: a failed unwrap is a failed test (clippy.toml says the same for #[test]s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The simulator's and the daemon's test helpers, shared with their crates.
#[path = "../crates/daemon/tests/support/mod.rs"]
mod daemon_support;
#[path = "../crates/sim/tests/support/mod.rs"]
mod sim_support;

mod bad_input;
mod cli_adopt;
mod cli_completions_man;
mod cli_crds;
mod cli_interrupt;
mod cli_observe;
mod cli_output;
mod cli_preflight;
mod cli_scenario;
mod cli_seed;
mod contrib_metrics;
mod daemon_converge;
mod daemon_process;
mod deb_package;
mod goldens;
mod host_lease_cli;
mod reliability_crash;
mod sim_cli;
mod sim_conformance;
mod sim_services;
mod spec_delivery;
mod support;
mod ui_browser;
