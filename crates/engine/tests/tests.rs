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

/// What many tests set up: files and a minimal site-config.
mod lab {
    use std::path::Path;

    pub fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// A site-config with defaults (bridge `vmbr0`), no secrets and a
    /// `small` preset (1 core, 1 GiB, 8 GiB); the simulator's
    /// `site_config::update` adds its host.
    pub fn small_site(dir: &Path) {
        write(
            &dir.join("site.yaml"),
            "defaults: {automation_user: homestak, bridge: vmbr0}\n",
        );
        write(&dir.join("secrets.yaml"), "api_tokens: {}\nssh_keys: {}\n");
        write(
            &dir.join("v2/presets/small.yaml"),
            "cores: 1\nmemory: 1024\ndisk: 8\n",
        );
    }
}
