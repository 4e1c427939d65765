//! The integration tests of homestak-core: one binary, one module per concern.

mod crds;
mod manifest_examples;
mod manifest_robustness;
mod site_resolver;
