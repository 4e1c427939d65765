//! The integration tests of homestak-pve: one binary, one module per concern.

// Test code: a failed unwrap is a failed test (clippy.toml says the same for #[test]s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_routes;
mod fake;
mod fuzz;
mod http;
mod recorded;
mod schema;
mod support;

/// Checked identities from test literals.
mod ids {
    use homestak_pve::{PveNode, VmId};

    /// A PVE node name.
    pub fn pn(name: &str) -> PveNode {
        name.parse().expect("a PVE node name")
    }

    pub fn vmid(id: u32) -> VmId {
        VmId::new(id.into()).expect("a vmid in PVE's range")
    }
}
