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
    /// Nodes whose child tier runs otherwise than the lifecycle's default.
    pub delegates: BTreeMap<NodeName, super::pve::Delegate>,
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
        let mode = match self.delegates.get(&node.node) {
            Some(mode) => *mode,
            None => self.pve.as_ref().map(|l| l.delegate).unwrap_or_default(),
        };
        if mode == super::pve::Delegate::Daemon {
            steps.push(PveStep::StartDaemon(want.clone()));
        }
        if let Some(subtree) = self.subtrees.get(&node.node) {
            steps.push(PveStep::DelegateSubtree(want, subtree.clone(), mode));
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
                // The lifecycle's own wait_ssh opens the session its steps use.
                steps.retain(|s| !matches!(s.work, TierStep::Vm(VmStep::WaitSsh(_))));
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::controllers::pve::{Delegate, Timeouts};
    use crate::controllers::vm::tests::{controller, want};
    use crate::store::{self, Delegation, Durability, NodeKey, Store};
    use homestak_core::site::Site;
    use homestak_pve::fake::Scripted;

    fn plan(action: Action) -> NodePlan {
        NodePlan {
            node: "web".parse().unwrap(),
            action,
            vmid: Some(homestak_base::id::VmId::new(100).unwrap()),
            changes: Vec::new(),
            reason: None,
            blocked: None,
            pve_node: None,
            foreign: false,
        }
    }

    /// A tier whose node `web` is a `pve` node (or a VM) with a subtree.
    fn tier(
        kind: Kind,
        delegate: Delegate,
        store: Arc<dyn Store>,
    ) -> (TierController, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let site = Arc::new(Site::load(dir.path()).unwrap());
        let mut node = want(None);
        node.kind = kind;
        let script = Arc::new(Scripted::new());
        let subtree = Manifest::from_json(
            r#"{"schema_version": 2, "name": "web-subtree", "nodes": [{"name": "app", "type": "vm"}]}"#,
        )
        .unwrap();
        let controller = TierController {
            vm: controller(&script, node),
            pve: Some(Lifecycle {
                ssh: Err("no key in this test".into()),
                binary: "/nonexistent".into(),
                parent: "pve".into(),
                site,
                manifest: "demo".into(),
                store,
                bridge: "vmbr0".into(),
                daemon_port: crate::controllers::pve::DAEMON_PORT,
                timeouts: Timeouts::default(),
                poll_min: Duration::from_millis(1),
                poll_max: Duration::from_millis(5),
                delegate,
            }),
            subtrees: BTreeMap::from([("web".parse().unwrap(), Arc::new(subtree))]),
            delegates: BTreeMap::new(),
        };
        (controller, dir)
    }

    fn names(c: &TierController, node: &NodePlan) -> Vec<&'static str> {
        c.steps(node)
            .iter()
            .map(|s| s.work.as_step().as_str())
            .collect()
    }

    const LIFECYCLE: [&str; 7] = [
        "wait_ssh",
        "bootstrap_host",
        "configure_bridge",
        "create_api_token",
        "write_node_config",
        "start_daemon",
        "delegate_subtree",
    ];

    #[test]
    fn a_pve_node_runs_its_lifecycle_before_it_is_marked_converged() {
        let (c, _dir) = tier(Kind::Pve, Delegate::Daemon, Arc::new(store::memory()));
        let mut want: Vec<&str> = vec![
            "ensure_image",
            "create_vm",
            "resize_disk",
            "start_vm",
            "wait_agent_ip",
        ];
        want.extend(LIFECYCLE);
        want.push("mark_converged");
        assert_eq!(names(&c, &plan(Action::Create)), want);
        // A no-op still looks: the child tier converges what is below.
        let mut noop = vec!["wait_agent_ip"];
        noop.extend(LIFECYCLE);
        assert_eq!(names(&c, &plan(Action::NoOp)), noop);
        // A replace asks the child to destroy its subtree first.
        assert_eq!(
            names(&c, &plan(Action::Replace))[..3],
            ["destroy_subtree", "stop_vm", "destroy_vm"]
        );
    }

    #[test]
    fn over_ssh_no_daemon_is_started_by_flag_or_per_node() {
        let (c, _dir) = tier(Kind::Pve, Delegate::Ssh, Arc::new(store::memory()));
        let steps = names(&c, &plan(Action::NoOp));
        assert!(!steps.contains(&"start_daemon"), "{steps:?}");
        assert_eq!(steps.last(), Some(&"delegate_subtree"));
        // A node's own `execution.delegate` wins over the flag.
        let (mut c, _dir) = tier(Kind::Pve, Delegate::Daemon, Arc::new(store::memory()));
        c.delegates.insert("web".parse().unwrap(), Delegate::Ssh);
        assert!(!names(&c, &plan(Action::NoOp)).contains(&"start_daemon"));
        let (mut c, _dir) = tier(Kind::Pve, Delegate::Ssh, Arc::new(store::memory()));
        c.delegates.insert("web".parse().unwrap(), Delegate::Daemon);
        assert!(names(&c, &plan(Action::NoOp)).contains(&"start_daemon"));
    }

    #[test]
    fn a_vm_gets_no_lifecycle_and_a_deleted_host_destroys_its_subtree_first() {
        let (c, _dir) = tier(Kind::Vm, Delegate::Daemon, Arc::new(store::memory()));
        assert!(names(&c, &plan(Action::NoOp)).is_empty());
        assert!(!names(&c, &plan(Action::Create)).contains(&"bootstrap_host"));

        // Deleted (no longer desired): known as a host by its record.
        let store: Arc<dyn Store> = Arc::new(store::memory());
        let (mut c, _dir) = tier(Kind::Pve, Delegate::Daemon, store.clone());
        c.vm.desired.clear();
        assert_eq!(names(&c, &plan(Action::Delete))[0], "stop_vm");
        store
            .update_node(
                &NodeKey::new("demo", &"web".parse().unwrap()),
                Durability::Flush,
                &mut |r| r.delegation = Some(Delegation::default()),
            )
            .unwrap();
        assert_eq!(
            names(&c, &plan(Action::Delete)),
            ["destroy_subtree", "stop_vm", "destroy_vm", "forget_vm"]
        );
    }
}
