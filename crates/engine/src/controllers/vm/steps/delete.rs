//! Deleting an owned VM.

use super::*;

impl VmController {
    pub(super) async fn stop_vm(&self, node: &NodePlan, m: &mut Memory) -> Outcome {
        if m.upid.is_some() {
            return match self.follow(node, "stop VM", m).await {
                Ok(Some(requeue)) => requeue,
                Ok(None) => StepOutcome::Done,
                Err(failed) => failed,
            };
        }
        let vmid = match self.owned_victim(node, m).await {
            Ok(vmid) => vmid,
            Err(out) => return out,
        };
        match self.api.qemu_status(self.at(m), vmid).await {
            Ok(status) if status.power() == pve::PowerState::Stopped => return StepOutcome::Done,
            Ok(_) => {}
            Err(err) if err.kind() == ErrorKind::VmNotFound => return StepOutcome::Done,
            Err(err) => return fail(&err, &format!("status of vmid {vmid}")),
        }
        let stop = PowerAction::Stop {
            timeout: None,
            overrule_shutdown: None,
        };
        match self.api.qemu_power(self.at(m), vmid, &stop).await {
            Ok(upid) => {
                m.upid = Some(upid);
                StepOutcome::Requeue(m.next_poll(&self.timing))
            }
            Err(err) => fail(&err, &format!("stop vmid {vmid}")),
        }
    }

    pub(super) async fn destroy_vm(&self, node: &NodePlan, m: &mut Memory) -> Outcome {
        if m.upid.is_some() {
            return match self.follow(node, "destroy VM", m).await {
                Ok(Some(requeue)) => requeue,
                Ok(None) => {
                    self.event(
                        &node.node,
                        Level::Info,
                        Kind::Deleted,
                        format!("destroyed {}", shown(Self::victim(node, m))),
                    );
                    self.forget_host_key(node).await;
                    if let Some(volid) = m.snippet.take() {
                        self.remove_snippet(node, &volid).await;
                    }
                    // A replacement is created next: at the manifest's vmid,
                    // else a fresh one.
                    if node.action == homestak_core::plan::Action::Replace && !m.created {
                        m.vmid = self.desired.get(&node.node).and_then(|w| w.vmid);
                    }
                    m.created = false;
                    // A replacement is made on the tier's own node.
                    m.pve_node = None;
                    StepOutcome::Done
                }
                Err(failed) => failed,
            };
        }
        let vmid = match self.owned_victim(node, m).await {
            Ok(vmid) => vmid,
            Err(out) => return out,
        };
        let delete = DeleteVm {
            purge: true,
            destroy_unreferenced_disks: true,
        };
        match self.api.qemu_delete(self.at(m), vmid, &delete).await {
            Ok(upid) => {
                m.upid = Some(upid);
                StepOutcome::Requeue(m.next_poll(&self.timing))
            }
            Err(err) if err.kind() == ErrorKind::VmNotFound => StepOutcome::Done,
            Err(err) => fail(&err, &format!("destroy vmid {vmid}")),
        }
    }

    /// The vmid of the owned VM to delete, or the outcome that ends the
    /// step: nothing to delete (done), or a VM that is not ours (refused).
    async fn owned_victim(&self, node: &NodePlan, m: &mut Memory) -> Result<VmId, Outcome> {
        let Some(vmid) = Self::victim(node, m) else {
            return Err(StepOutcome::Done);
        };
        match self.owned_config(node, vmid, m).await? {
            Some(config) => {
                m.snippet = config.get("cicustom").and_then(|c| {
                    c.split(',')
                        .find_map(|p| p.strip_prefix("user=").map(String::from))
                });
                Ok(vmid)
            }
            None => Err(StepOutcome::Done),
        }
    }

    pub(super) fn forget_vm(&self, node: &NodePlan, m: &mut Memory) -> Outcome {
        if let Some(store) = &self.store {
            // A pruned duplicate is not the VM the record is about: the
            // node (still in the manifest) keeps its record.
            let victim = Self::victim(node, m);
            let elsewhere = store
                .get_node(&self.key(node))
                .ok()
                .flatten()
                .and_then(|r| r.vmid)
                .is_some_and(|vmid| victim.is_some_and(|v| v != vmid));
            if !elsewhere && let Err(err) = store.delete_node(&self.key(node), Durability::Flush) {
                return refuse(format!("remove the record from the store: {}", chain(&err)));
            }
        }
        m.created = false;
        StepOutcome::Done
    }
}
