//! Every scenario by name, and the Python tool's retired names with the
//! command that replaced each.

use super::ScenarioDef;

/// The scenarios, sorted by name (`--list` prints them in this order).
pub const SCENARIOS: &[ScenarioDef] = &[
    super::bootstrap_install::BOOTSTRAP_INSTALL,
    super::packer::PACKER_BUILD,
    super::packer::PACKER_BUILD_FETCH,
    super::packer::PACKER_BUILD_PUBLISH,
    super::packer::PACKER_SYNC,
    super::packer::PACKER_SYNC_BUILD_FETCH,
    super::pve_setup::PVE_SETUP,
    super::spec_vm::SPEC_VM_PUSH_ROUNDTRIP,
    super::user_setup::USER_SETUP,
];

/// Retired scenario names (by prefix when ending in `-`), and what to run
/// instead. They were replaced by the verbs in iac-driver v0.47.
const RETIRED: &[(&str, &str)] = &[
    (
        "vm-constructor",
        "homestak create -M MANIFEST -H HOST (a manifest names the VMs)",
    ),
    ("vm-destructor", "homestak destroy -M MANIFEST -H HOST"),
    (
        "vm-roundtrip",
        "homestak test -M MANIFEST -H HOST (create, verify SSH, destroy)",
    ),
    (
        "nested-pve-",
        "homestak create|destroy|test -M MANIFEST -H HOST with a tiered manifest (a `pve` node \
         with children, e.g. n2-quick): the child tier is converged by a child reconciler",
    ),
    (
        "recursive-pve-",
        "homestak create|destroy|test -M MANIFEST -H HOST with a tiered manifest (e.g. n3-full): \
         every tier is converged by its own reconciler",
    ),
    (
        "simple-vm-",
        "homestak create|destroy|test -M MANIFEST -H HOST",
    ),
    (
        "pve-configure",
        "homestak scenario pve-setup (it installs PVE only when missing)",
    ),
];

/// What a scenario name refers to.
#[derive(Debug)]
pub enum Lookup {
    Found(&'static ScenarioDef),
    /// A retired scenario: what replaced it.
    Retired(&'static str),
    Unknown,
}

/// Looks `name` up among the scenarios, then the retired names.
pub fn find(name: &str) -> Lookup {
    if let Some(def) = SCENARIOS.iter().find(|s| s.name == name) {
        return Lookup::Found(def);
    }
    RETIRED
        .iter()
        .find(|(old, _)| {
            if old.ends_with('-') {
                name.starts_with(old)
            } else {
                name == *old
            }
        })
        .map_or(Lookup::Unknown, |(_, hint)| Lookup::Retired(hint))
}

/// The names `--list` shows, for error messages.
pub fn names() -> Vec<&'static str> {
    SCENARIOS.iter().map(|s| s.name).collect()
}
