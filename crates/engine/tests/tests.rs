//! The integration tests of homestak-engine: one binary, one module per concern.

// Test code: a failed unwrap is a failed test (clippy.toml says the same for #[test]s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod adopt;
mod client_schema;
mod create_intent;
mod fast_observe;
mod host_lease;
mod onboard;
mod packer;
mod preflight;
mod storage_lock;
mod store_sled;
mod store_suite;
mod trust;
mod user_setup;

/// Checked identities from test literals.
mod ids {
    use homestak_base::id::VmId;
    use homestak_engine::store::NodeKey;

    pub fn node_key(manifest: &str, node: &str) -> NodeKey {
        NodeKey::new(manifest, &node.parse().expect("a node name"))
    }

    pub fn vmid(id: u32) -> VmId {
        VmId::new(id.into()).expect("a vmid in PVE's range")
    }
}
