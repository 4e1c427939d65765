//! The integration tests of homestak-pve: one binary, one module per concern.

mod fake;
mod http;
mod recorded;
mod schema;
mod support;
