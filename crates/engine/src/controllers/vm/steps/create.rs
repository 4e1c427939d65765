//! Creating: the VM, adopting one we already own.

use super::*;

impl VmController {
    /// Picks the vmid for a create: explicit, remembered, or PVE's next
    /// free one not already handed out in this run.
    async fn allocate_vmid(&self) -> Result<VmId, Outcome> {
        let mut wanted: Option<VmId> = None;
        for _ in 0..64 {
            let vmid = match self.api.next_vmid(wanted).await {
                Ok(v) => v,
                // `nextid?vmid=N` answers 400 "already exists" for a taken N.
                Err(err)
                    if wanted.is_some()
                        && matches!(
                            err.kind(),
                            ErrorKind::InvalidParameters | ErrorKind::AlreadyExists
                        ) =>
                {
                    wanted = wanted.and_then(VmId::next);
                    continue;
                }
                Err(err) => return Err(fail(&err, "allocate a vmid")),
            };
            let mut reserved = self
                .shared
                .reserved
                .lock()
                .map_err(|_| refuse("vmid lock poisoned".into()))?;
            if reserved.insert(vmid) {
                return Ok(vmid);
            }
            wanted = vmid.next();
        }
        Err(refuse("could not find a free vmid after 64 tries".into()))
    }

    pub(super) async fn create_vm(
        &self,
        node: &NodePlan,
        want: &DesiredVm,
        m: &mut Memory,
    ) -> Outcome {
        self.resume_task(node, Step::CreateVm, m);
        if m.upid.is_some() {
            return match self.follow(node, "create VM", m).await {
                Ok(Some(requeue)) => requeue,
                Ok(None) => {
                    m.created = true;
                    self.event(
                        &node.node,
                        Level::Info,
                        Kind::Created,
                        format!("created {}", shown(m.vmid)),
                    );
                    StepOutcome::Done
                }
                Err(failed) => failed,
            };
        }
        // A vmid chosen by an earlier attempt is checked first: that attempt
        // may have created the VM even though its answer got lost.
        let vmid = match m.vmid {
            Some(v) => v,
            None => match self.allocate_vmid().await {
                Ok(v) => v,
                Err(out) => return out,
            },
        };
        m.vmid = Some(vmid);
        match self.read_config(vmid).await {
            Ok(Some(config)) if self.is_ours(node, vmid, &config) => {
                m.created = true;
                return StepOutcome::Done;
            }
            // Someone else's VM holds the vmid: never touch it. A vmid
            // the manifest names is a conflict; one PVE picked or the
            // store remembered is given up for another.
            Ok(Some(_)) if want.vmid.is_some() => return self.not_ours(node, vmid),
            Ok(Some(_)) => {
                m.vmid = None;
                return StepOutcome::Failed(StepError::transient(format!(
                    "vmid {vmid} was taken by a VM homestak does not own; picking another"
                )));
            }
            Ok(None) => {}
            // Keep the vmid: an earlier attempt may have created the VM
            // even though its answer got lost; the next attempt looks again.
            Err(out) => return out,
        }
        let create = CreateVm {
            vmid,
            options: mapping::create_options(
                &self.manifest,
                want,
                &self.image_storage,
                &self.owner_key,
                vmid,
            ),
            start: None,
            pool: None,
        };
        match self.api.qemu_create(&self.pve_node, &create).await {
            Ok(upid) => {
                self.record_task(node, Step::CreateVm, &upid, Some(vmid));
                m.upid = Some(upid);
                StepOutcome::Requeue(m.next_poll(&self.timing))
            }
            // Lost race or lost answer: the next attempt re-checks ownership.
            Err(err) if err.kind() == ErrorKind::AlreadyExists => StepOutcome::Failed(
                StepError::transient(format!("create vmid {vmid}: {}", chain(&err))),
            ),
            Err(err) => fail(&err, &format!("create vmid {vmid}")),
        }
    }

    pub(super) fn adopt_vm(&self, node: &NodePlan, m: &mut Memory) -> Outcome {
        if let Some(store) = &self.store {
            let vmid = m.vmid;
            let pve_node = self.at(m).clone();
            if let Err(err) = store.update_node(&self.key(node), Durability::Flush, &mut |r| {
                r.vmid = vmid;
                r.pve_node = Some(pve_node.clone());
            }) {
                return refuse(format!("record adoption in the store: {}", chain(&err)));
            }
        }
        self.event(
            &node.node,
            Level::Info,
            Kind::Adopted,
            format!("adopted {} by its marks", shown(m.vmid)),
        );
        StepOutcome::Done
    }
}
