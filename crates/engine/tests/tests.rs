//! The integration tests of homestak-engine: one binary, one module per concern.

mod client_schema;
mod store_sled;
mod store_suite;
