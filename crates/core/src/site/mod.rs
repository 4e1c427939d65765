//! Site-config: discovery, loading, and the resolvers.
//!
//! A site-config directory holds `site.yaml` (defaults), `secrets.yaml`,
//! `nodes/` and `hosts/`, `envs/`, `vms/` (templates) with `vms/presets/`,
//! `postures/` (v1, ansible) and `v2/` (`postures/`, `presets/`, `specs/`).
//!
//! [`Site::load`] reads it once; every resolver call afterwards is a pure
//! function of the [`Site`]:
//! - [`Site::resolve_env`], [`Site::resolve_inline_vm`] → [`TofuVars`];
//!   [`Site::resolve_ansible_vars`] → [`AnsibleVars`] ([`resolver`]);
//! - [`Site::resolve_spec`] → [`ResolvedSpec`] ([`spec`]);
//! - [`Site::auth_token`], [`Site::required_token`] ([`auth`]);
//! - [`Site::host_config`], [`Site::list_hosts`] ([`host`]);
//! - `list_envs`, `list_postures`, `list_templates`, `list_presets`,
//!   `list_specs`.
//!
//! The answers follow the Python iac-driver's (the reference goldens),
//! except where the reference crashed (we return a typed error) or had a
//! defect (spec identities are checked before any path is built).
//! Secrets are held in [`Secret`], which never prints its value.

pub mod auth;
pub mod discover;
pub mod host;
pub mod loader;
pub mod posture;
pub mod resolver;
pub mod secrets;
mod serde_util;
pub mod spec;
pub mod sshkey;
pub mod vm;

pub use homestak_base::secret::Secret;
pub use host::{HostConfig, HostFile, NodeConfig};
pub use loader::{Catalog, Entry, ImageDigest, Site, SiteDefaults, SiteFile};
pub use posture::{AuthMethod, PostureV1, PostureV2};
pub use resolver::{AnsibleVars, InlineVm, TofuVars};
pub use secrets::{Secrets, SecretsFile, SecretsStatus};
pub use serde_util::OrderedMap;
pub use spec::{ResolvedSpec, Spec};
pub use sshkey::{BadSshKey, KeyProblem, check_public_key};
pub use vm::{Env, EnvVm, IpConfig, Preset, ResolvedVm, Template, VmSettings};

/// JSON Schemas of the site-config documents, generated from the types that
/// parse them, for `crds/`. Names are file-name stems.
pub fn json_schemas() -> Vec<(&'static str, schemars::Schema)> {
    vec![
        ("site", schemars::schema_for!(SiteFile)),
        ("node", schemars::schema_for!(NodeConfig)),
        ("host", schemars::schema_for!(HostFile)),
        ("env", schemars::schema_for!(Env)),
        ("template", schemars::schema_for!(Template)),
        ("preset", schemars::schema_for!(Preset)),
        ("posture-v1", schemars::schema_for!(PostureV1)),
        ("posture", schemars::schema_for!(PostureV2)),
        ("spec", schemars::schema_for!(Spec)),
    ]
}
