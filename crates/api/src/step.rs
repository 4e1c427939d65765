//! The steps controllers carry out, by name: the executor reports them in
//! events and phases, the store keeps the one a PVE task belongs to.
//!
//! One vocabulary for every node kind, named verb_noun like the seed's
//! phases; a kind's controller plans the steps it needs from it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One idempotent step of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    EnsureImage,
    CreateVm,
    AdoptVm,
    UpdateConfig,
    ResizeDisk,
    StartVm,
    WaitAgentIp,
    WaitSsh,
    MarkConverged,
    StopVm,
    DestroyVm,
    ForgetVm,
    BootstrapHost,
    ConfigureBridge,
    CreateApiToken,
    WriteNodeConfig,
    StartDaemon,
    DelegateSubtree,
    DestroySubtree,
    WriteSnippet,
    PushSpec,
    VerifySpec,
}

impl Step {
    pub const ALL: [Step; 22] = [
        Step::EnsureImage,
        Step::CreateVm,
        Step::AdoptVm,
        Step::UpdateConfig,
        Step::ResizeDisk,
        Step::StartVm,
        Step::WaitAgentIp,
        Step::WaitSsh,
        Step::MarkConverged,
        Step::StopVm,
        Step::DestroyVm,
        Step::ForgetVm,
        Step::BootstrapHost,
        Step::ConfigureBridge,
        Step::CreateApiToken,
        Step::WriteNodeConfig,
        Step::StartDaemon,
        Step::DelegateSubtree,
        Step::DestroySubtree,
        Step::WriteSnippet,
        Step::PushSpec,
        Step::VerifySpec,
    ];

    /// The verb_noun name, as in reports, events and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::EnsureImage => "ensure_image",
            Step::CreateVm => "create_vm",
            Step::AdoptVm => "adopt_vm",
            Step::UpdateConfig => "update_config",
            Step::ResizeDisk => "resize_disk",
            Step::StartVm => "start_vm",
            Step::WaitAgentIp => "wait_agent_ip",
            Step::WaitSsh => "wait_ssh",
            Step::MarkConverged => "mark_converged",
            Step::StopVm => "stop_vm",
            Step::DestroyVm => "destroy_vm",
            Step::ForgetVm => "forget_vm",
            Step::BootstrapHost => "bootstrap_host",
            Step::ConfigureBridge => "configure_bridge",
            Step::CreateApiToken => "create_api_token",
            Step::WriteNodeConfig => "write_node_config",
            Step::StartDaemon => "start_daemon",
            Step::DelegateSubtree => "delegate_subtree",
            Step::DestroySubtree => "destroy_subtree",
            Step::WriteSnippet => "write_snippet",
            Step::PushSpec => "push_spec",
            Step::VerifySpec => "verify_spec",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step name read back from storage. Another version of homestak may
/// have written a step this build does not know: the record stays
/// readable, and the name is kept verbatim when the record is written back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StepName {
    Known(Step),
    Unknown(String),
}

impl StepName {
    pub fn step(&self) -> Option<Step> {
        match self {
            StepName::Known(step) => Some(*step),
            StepName::Unknown(_) => None,
        }
    }
}

/// Empty, as a record without a step name reads: it matches no step.
impl Default for StepName {
    fn default() -> Self {
        StepName::Unknown(String::new())
    }
}

impl From<Step> for StepName {
    fn from(step: Step) -> Self {
        StepName::Known(step)
    }
}

impl PartialEq<Step> for StepName {
    fn eq(&self, other: &Step) -> bool {
        self.step() == Some(*other)
    }
}

impl fmt::Display for StepName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepName::Known(step) => fmt::Display::fmt(step, f),
            StepName::Unknown(name) => f.write_str(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_uses_the_verb_noun_names() {
        for step in Step::ALL {
            let json = serde_json::to_value(step).unwrap();
            assert_eq!(json, serde_json::json!(step.as_str()));
            assert_eq!(serde_json::from_value::<Step>(json).unwrap(), step);
            assert_eq!(step.to_string(), step.as_str());
        }
    }

    #[test]
    fn a_stored_name_this_build_does_not_know_reads_and_writes_back_as_is() {
        let known: StepName = serde_json::from_str(r#""create_vm""#).unwrap();
        assert_eq!(known, Step::CreateVm);
        let unknown: StepName = serde_json::from_str(r#""install_pve""#).unwrap();
        assert_eq!(unknown, StepName::Unknown("install_pve".into()));
        assert_eq!(unknown.step(), None);
        assert_eq!(serde_json::to_string(&unknown).unwrap(), r#""install_pve""#);
        assert_eq!(StepName::default().step(), None);
    }
}
