//! The integration tests of homestak-daemon: one binary, one module per concern.

mod api;
mod reconcile_loop;
mod repos;
mod secrets;
mod support;
