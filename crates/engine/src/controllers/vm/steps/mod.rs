//! The VM controller's steps. Each is idempotent: observe, then act.
//!
//! - this file: dispatch and what every step shares (task tracking,
//!   ownership checks, events);
//! - [`image`]: `ensure_image`, for whole and split images;
//! - [`create`]: `create_vm` (intent first; a placeholder of ours is
//!   followed), `adopt_vm`;
//! - [`change`]: `update_config`, `resize_disk`, `start_vm`, `wait_agent_ip`,
//!   `wait_ssh`, `mark_converged`;
//! - [`delete`]: `stop_vm`, `destroy_vm`, `forget_vm`;
//! - [`spec`]: `write_snippet`, `push_spec`, `verify_spec`.

mod change;
mod create;
mod delete;
mod image;
#[cfg(test)]
mod image_tests;
pub mod spec;

use tokio::time::Instant;

use super::mapping::{self, BOOT_DISK};
use super::{Download, Memory, VmController, VmStep};
use crate::executor::{StepError, StepOutcome};
use crate::store::{
    ConditionStatus, CreateIntent, Durability, InFlight, NodeKey, PowerState, Timestamp,
};
use homestak_api::step::Step;
use homestak_api::{Event, Kind, Level};
use homestak_base::error_chain as chain;
use homestak_base::id::{NodeName, PveNode, VmId};
use homestak_core::plan::{DesiredVm, NodePlan};
use homestak_pve::tasks::{self, Check};
use homestak_pve::{
    self as pve, ConfigUpdate, CreateVm, DeleteVm, DownloadUrl, ErrorKind, PowerAction, Resize,
    TaskQuery, TaskSource, Upid, VmConfig,
};
use homestak_ssh as ssh;

type Outcome = StepOutcome;

fn fail(err: &pve::Error, what: &str) -> Outcome {
    let message = format!("{what}: {}", chain(err));
    if err.is_transient() {
        StepOutcome::Failed(StepError::classified(message))
    } else {
        StepOutcome::Failed(StepError::permanent(message))
    }
}

fn refuse(message: String) -> Outcome {
    StepOutcome::Failed(StepError::permanent(message))
}

/// `vmid 100`, for messages about a VM whose vmid may not be known yet.
fn shown(vmid: Option<VmId>) -> String {
    vmid.map_or_else(
        || "a VM (vmid not known)".to_string(),
        |v| format!("vmid {v}"),
    )
}

impl VmController {
    pub(super) async fn dispatch(&self, node: &NodePlan, step: &VmStep, m: &mut Memory) -> Outcome {
        if !m.seeded {
            m.seeded = true;
            if m.vmid.is_none() {
                m.vmid = node.vmid;
            }
            m.pve_node = node.pve_node.clone();
            m.earlier = self.earlier_task(node, step);
        }
        if let Some(upid) = m.earlier.clone()
            && let Some(requeue) = self.await_earlier(node, &upid, m).await
        {
            return requeue;
        }
        match step {
            VmStep::EnsureImage(w) => self.ensure_image(w, m).await,
            VmStep::CreateVm(w) => self.create_vm(node, w, m).await,
            VmStep::AdoptVm => self.adopt_vm(node, m),
            VmStep::UpdateConfig(w) => self.update_config(node, w, m).await,
            VmStep::ResizeDisk(w) => self.resize_disk(node, w, m).await,
            VmStep::StartVm => self.start_vm(node, m).await,
            VmStep::WaitAgentIp => self.wait_agent_ip(node, m).await,
            VmStep::WaitSsh(w) => self.wait_ssh(node, w, m).await,
            VmStep::MarkConverged(w) => self.mark_converged(node, w, m),
            VmStep::StopVm => self.stop_vm(node, m).await,
            VmStep::DestroyVm => self.destroy_vm(node, m).await,
            VmStep::ForgetVm => self.forget_vm(node, m),
            VmStep::WriteSnippet(w) => self.write_snippet(node, w).await,
            VmStep::PushSpec(w) => self.push_spec(node, w, m).await,
            VmStep::VerifySpec(w) => self.verify_spec(node, w, m).await,
        }
    }

    /// The VM a stop or destroy acts on: the VM this run created (rollback),
    /// else the one being replaced, else the node's VM.
    pub(super) fn victim(node: &NodePlan, m: &Memory) -> Option<VmId> {
        if m.created {
            return m.vmid;
        }
        if node.action == homestak_core::plan::Action::Replace {
            return node
                .change(homestak_core::plan::Field::Vmid)
                .and_then(|c| c.from.parse().ok())
                .or(node.vmid);
        }
        m.vmid
    }

    /// Forgets the SSH host key recorded for a destroyed VM's address.
    /// Runs whether or not this run verifies SSH: a destroy without SSH
    /// must still clear the way for the next VM at that address.
    pub(super) async fn forget_host_key(&self, node: &NodePlan) {
        let (Some(store), Some(known)) = (&self.store, &self.known_hosts) else {
            return;
        };
        let ip = store
            .get_node(&self.key(node))
            .ok()
            .flatten()
            .and_then(|r| r.ip);
        if let Some(ip) = ip {
            let _ = known.file.forget(&ip, known.port).await;
        }
    }

    pub(super) fn key(&self, node: &NodePlan) -> NodeKey {
        NodeKey::new(&self.manifest, &node.node)
    }

    pub(super) fn event(&self, node: &NodeName, level: Level, kind: Kind, message: String) {
        if let Some(store) = &self.store {
            let event = Event::new(level, kind, message)
                .manifest(&self.manifest)
                .node(node);
            if let Err(err) = store.append_event(&event) {
                tracing::warn!(error = %homestak_base::error_chain(&err), "cannot record an event");
            }
        }
    }

    /// Records a started task durably, so a crash resumes instead of
    /// repeating it.
    pub(super) fn record_task(&self, node: &NodePlan, step: Step, upid: &Upid, vmid: Option<VmId>) {
        if let Some(store) = &self.store {
            let _ = store.update_node(&self.key(node), Durability::Flush, &mut |r| {
                r.in_flight = Some(InFlight {
                    upid: upid.to_string(),
                    step: step.into(),
                    started: Timestamp::now(),
                });
                if vmid.is_some() {
                    r.vmid = vmid;
                }
                r.pve_node = Some(self.pve_node.clone());
            });
        }
    }

    pub(super) fn clear_task(&self, node: &NodePlan) {
        if let Some(store) = &self.store {
            let _ = store.update_node(&self.key(node), Durability::Lazy, &mut |r| {
                r.in_flight = None;
            });
        }
    }

    /// The task an earlier run left in flight for `node` under another
    /// step than `first`, the first this run takes for it (which resumes
    /// its own task itself).
    fn earlier_task(&self, node: &NodePlan, first: &VmStep) -> Option<Upid> {
        use crate::executor::AsStep;
        let record = self.store.as_ref()?.get_node(&self.key(node)).ok()??;
        let flight = record.in_flight?;
        if flight.step == first.as_step() {
            return None;
        }
        flight.upid.parse().ok()
    }

    /// Lets an earlier run's task end before this run acts on the VM (PVE
    /// would refuse with "VM is locked", or the plan's view be stale): a
    /// requeue while it runs, `None` once it ended, however it ended (the
    /// steps observe the VM afresh). Bounded by the task timeout.
    async fn await_earlier(&self, node: &NodePlan, upid: &Upid, m: &mut Memory) -> Option<Outcome> {
        let deadline = *m
            .deadline
            .get_or_insert_with(|| Instant::now() + self.timing.task_timeout);
        let running = match tasks::check(self.api.as_ref(), upid, 20).await {
            Ok(Check::Running(_)) => true,
            Err(err) if err.is_transient() => true,
            Ok(_) | Err(_) => false,
        };
        if running && Instant::now() < deadline {
            return Some(StepOutcome::Requeue(m.next_poll(&self.timing)));
        }
        if running {
            m.earlier = None;
            m.reset_wait();
            return Some(refuse(format!(
                "task {upid}, left in flight by an earlier run, still runs after {}; check it in \
                 the PVE task log",
                humantime::format_duration(self.timing.task_timeout)
            )));
        }
        // Ended, failed, or unknown to PVE (its log rotated): done waiting.
        m.earlier = None;
        m.reset_wait();
        self.clear_task(node);
        None
    }

    /// A task this step started in an earlier (crashed) run.
    pub(super) fn resume_task(&self, node: &NodePlan, step: Step, m: &mut Memory) {
        if m.upid.is_some() {
            return;
        }
        let Some(store) = &self.store else { return };
        if let Ok(Some(record)) = store.get_node(&self.key(node))
            && let Some(flight) = record.in_flight.filter(|f| f.step == step)
        {
            m.upid = flight.upid.parse().ok();
            if m.vmid.is_none() {
                m.vmid = record.vmid;
            }
        }
    }

    /// Checks the task in `m.upid`: `Ok(None)` once it succeeded,
    /// `Ok(Some(requeue))` while it runs, `Err` when it failed.
    pub(super) async fn follow(
        &self,
        node: &NodePlan,
        what: &str,
        m: &mut Memory,
    ) -> Result<Option<Outcome>, Outcome> {
        let Some(upid) = m.upid.clone() else {
            return Ok(None);
        };
        let deadline = *m
            .deadline
            .get_or_insert_with(|| Instant::now() + self.timing.task_timeout);
        match tasks::check(self.api.as_ref(), &upid, 20).await {
            Ok(Check::Running(_)) => {
                if Instant::now() >= deadline {
                    m.reset_wait();
                    return Err(refuse(format!(
                        "{what}: task {upid} still running after {}; check it in the PVE task log",
                        humantime::format_duration(self.timing.task_timeout)
                    )));
                }
                Ok(Some(StepOutcome::Requeue(m.next_poll(&self.timing))))
            }
            Ok(Check::Succeeded(_)) => {
                m.reset_wait();
                self.clear_task(node);
                Ok(None)
            }
            Ok(Check::Failed { exitstatus, .. }) => {
                m.reset_wait();
                self.clear_task(node);
                // Worth another attempt after backoff: lock timeouts under
                // load, a failed import, a crashed task. Every step looks at
                // the world again before acting, and the executor bounds the
                // attempts.
                let message = format!("{what}: task failed: {exitstatus}");
                self.event(
                    &node.node,
                    Level::Warning,
                    Kind::TaskFailed,
                    message.clone(),
                );
                // A storage-lock timeout is typed for the executor.
                Err(StepOutcome::Failed(StepError::classified(message)))
            }
            Err(err) => Err(fail(&err, what)),
        }
    }

    /// Reads the VM's config; `Ok(None)` when the VM does not exist.
    pub(super) async fn read_config(&self, vmid: VmId) -> Result<Option<VmConfig>, Outcome> {
        match self.api.qemu_config(&self.pve_node, vmid).await {
            Ok(config) => Ok(Some(config)),
            Err(err) if err.kind() == ErrorKind::VmNotFound => Ok(None),
            Err(err) => Err(fail(&err, &format!("read config of vmid {vmid}"))),
        }
    }

    /// True when `config` (the VM at `vmid`) is ours for this manifest and
    /// node: marks bound to this vmid under the site's key, not a template
    /// (legacy marks only where the store remembers this vmid).
    pub(super) fn is_ours(&self, node: &NodePlan, vmid: VmId, config: &VmConfig) -> bool {
        let remembered = |name: &NodeName| {
            let store = self.store.as_ref()?;
            let key = NodeKey::new(&self.manifest, name);
            store.get_node(&key).ok().flatten().and_then(|r| r.vmid)
        };
        mapping::claim(&self.owner_key, vmid, config, &remembered)
            .as_ref()
            .and_then(|c| c.owned())
            .is_some_and(|m| m.manifest == self.manifest && m.node == node.node)
    }

    pub(super) fn not_ours(&self, node: &NodePlan, vmid: VmId) -> Outcome {
        refuse(format!(
            "vmid {vmid} no longer carries homestak's marks for {}/{}; it is left \
             untouched (run plan again)",
            self.manifest, node.node
        ))
    }

    /// The PVE node an existing VM's calls go to.
    pub(super) fn at<'a>(&'a self, m: &'a Memory) -> &'a PveNode {
        m.pve_node.as_ref().unwrap_or(&self.pve_node)
    }

    /// Where `vmid` sits in the cluster now, from `/cluster/resources`.
    async fn locate(&self, vmid: VmId) -> Result<Option<PveNode>, Outcome> {
        let resources = self
            .api
            .cluster_resources(Some(pve::ResourceKind::Vm))
            .await
            .map_err(|err| fail(&err, &format!("find vmid {vmid} in the cluster")))?;
        Ok(resources
            .iter()
            .find(|r| r.vmid == Some(vmid.get()))
            .and_then(|r| r.node.clone())
            .and_then(|n| PveNode::new(n).ok()))
    }

    /// Reads the VM's config and proves it is still ours. `Ok(None)` when
    /// the VM does not exist anywhere in the cluster: a VM missing on the
    /// node it was seen on is looked for on the others (it may have
    /// migrated), and later calls go where it is (`m.pve_node`).
    pub(super) async fn owned_config(
        &self,
        node: &NodePlan,
        vmid: VmId,
        m: &mut Memory,
    ) -> Result<Option<VmConfig>, Outcome> {
        let read = |at: PveNode| async move {
            match self.api.qemu_config(&at, vmid).await {
                Ok(config) => Ok(Some((at, config))),
                Err(err) if err.kind() == ErrorKind::VmNotFound => Ok(None),
                Err(err) => Err(fail(&err, &format!("read config of vmid {vmid}"))),
            }
        };
        let mut found = read(self.at(m).clone()).await?;
        if found.is_none()
            && let Some(elsewhere) = self.locate(vmid).await?
            && elsewhere != *self.at(m)
        {
            found = read(elsewhere).await?;
        }
        match found {
            Some((at, config)) if self.is_ours(node, vmid, &config) => {
                m.pve_node = Some(at);
                Ok(Some(config))
            }
            Some(_) => Err(self.not_ours(node, vmid)),
            None => Ok(None),
        }
    }
}
