//! The controller a run executes: the VM controller's steps for every node,
//! and for a `pve` node the host lifecycle after them (before
//! `mark_converged`, so the node converges only once its subtree did), with
//! `destroy_subtree` before its VM is destroyed, replaced or rolled back:
//! children first.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::pve::{Lifecycle, PveStep};
use super::vm::{self, VmController, VmStep};
use crate::executor::{AsStep, BoxFuture, Controller, Planned, StepOutcome};
use homestak_api::step::Step;
use homestak_base::id::NodeName;
use homestak_core::model::Manifest;
use homestak_core::plan::{Action, Kind, NodePlan};

/// A step of either kind.
#[derive(Debug, Clone)]
pub enum TierStep {
    Vm(VmStep),
    Pve(PveStep),
}

impl AsStep for TierStep {
    fn as_step(&self) -> Step {
        match self {
            TierStep::Vm(s) => s.as_step(),
            TierStep::Pve(s) => s.as_step(),
        }
    }
}

/// Per-node scratch state of both kinds.
#[derive(Default)]
pub struct TierMemory {
    pub vm: vm::Memory,
    pub pve: super::pve::Memory,
}

/// Every node kind of one tier.
pub struct TierController {
    pub vm: VmController,
    /// `None` when the tier has no store: `pve` nodes then fail (their
    /// delegation must be remembered).
    pub pve: Option<Lifecycle>,
    /// The subtree each `pve` node hands to its child tier.
    pub subtrees: BTreeMap<NodeName, Arc<Manifest>>,
}

fn wrap(steps: Vec<Planned<VmStep>>) -> Vec<Planned<TierStep>> {
    steps
        .into_iter()
        .map(|p| Planned {
            work: TierStep::Vm(p.work),
            storage: p.storage,
        })
        .collect()
}

impl TierController {
    /// Whether `node` is (or, being deleted, was set up as) a PVE host.
    fn is_pve(&self, node: &NodePlan) -> bool {
        if let Some(want) = self.vm.desired.get(&node.node) {
            return want.kind == Kind::Pve;
        }
        let Some(lifecycle) = &self.pve else {
            return false;
        };
        lifecycle
            .store
            .get_node(&lifecycle.key(node))
            .ok()
            .flatten()
            .is_some_and(|r| r.delegation.is_some())
    }

    fn destroy_first(&self, node: &NodePlan) -> Planned<TierStep> {
        let subtree = self.subtrees.get(&node.node).cloned();
        Planned::new(TierStep::Pve(PveStep::DestroySubtree(subtree)))
    }

    fn lifecycle_steps(&self, node: &NodePlan) -> Vec<Planned<TierStep>> {
        let Some(want) = self.vm.desired.get(&node.node).cloned().map(Arc::new) else {
            return Vec::new();
        };
        let mut steps = vec![
            PveStep::WaitSsh(want.clone()),
            PveStep::BootstrapHost(want.clone()),
            PveStep::ConfigureBridge(want.clone()),
            PveStep::CreateApiToken(want.clone()),
            PveStep::WriteNodeConfig(want.clone()),
        ];
        let by_ssh = self
            .pve
            .as_ref()
            .is_some_and(|l| l.delegate == super::pve::Delegate::Ssh);
        if !by_ssh {
            steps.push(PveStep::StartDaemon(want.clone()));
        }
        if let Some(subtree) = self.subtrees.get(&node.node) {
            steps.push(PveStep::DelegateSubtree(want, subtree.clone()));
        }
        steps
            .into_iter()
            .map(|s| Planned::new(TierStep::Pve(s)))
            .collect()
    }
}

impl Controller for TierController {
    type Memory = TierMemory;
    type Work = TierStep;

    fn steps(&self, node: &NodePlan) -> Vec<Planned<TierStep>> {
        let mut steps = wrap(self.vm.steps(node));
        if !self.is_pve(node) {
            return steps;
        }
        let destroy_first = self.destroy_first(node);
        match node.action {
            Action::Delete => steps.insert(0, destroy_first),
            Action::Conflict => {}
            _ if node.blocked.is_some() || !self.vm.desired.contains_key(&node.node) => {}
            action => {
                if action == Action::Replace {
                    steps.insert(0, destroy_first);
                }
                let mark = steps
                    .last()
                    .is_some_and(|s| s.work.as_step() == Step::MarkConverged)
                    .then(|| steps.pop())
                    .flatten();
                if !steps.iter().any(|s| s.work.as_step() == Step::WaitAgentIp) {
                    steps.push(Planned::new(TierStep::Vm(VmStep::WaitAgentIp)));
                }
                steps.extend(self.lifecycle_steps(node));
                steps.extend(mark);
            }
        }
        steps
    }

    fn run<'a>(
        &'a self,
        node: &'a NodePlan,
        step: &'a TierStep,
        memory: &'a mut TierMemory,
    ) -> BoxFuture<'a, StepOutcome> {
        match step {
            TierStep::Vm(s) => self.vm.run(node, s, &mut memory.vm),
            TierStep::Pve(s) => Box::pin(async move {
                let Some(lifecycle) = &self.pve else {
                    return StepOutcome::Failed(crate::executor::StepError::permanent(
                        "a pve node needs the state directory's store (its delegation is kept there)",
                    ));
                };
                lifecycle.run(node, s, &memory.vm, &mut memory.pve).await
            }),
        }
    }

    fn undo_steps(&self, node: &NodePlan, memory: &TierMemory) -> Vec<Planned<TierStep>> {
        let mut steps = wrap(self.vm.undo_steps(node, &memory.vm));
        if !steps.is_empty() && self.is_pve(node) {
            steps.insert(0, self.destroy_first(node));
        }
        steps
    }
}
