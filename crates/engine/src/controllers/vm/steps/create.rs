//! Creating: the VM, adopting one we already own.
//!
//! A create is recorded (flushed) as an intent before the POST. PVE answers
//! the POST once it has reserved the vmid with a placeholder config holding
//! only `lock: create`; the options (name, tags, marks) come when the disk
//! import is done, minutes later on a real host. A placeholder at the vmid
//! of our intent is therefore our own create in progress, whether its
//! answer was lost or the process that sent it died: its `qmcreate` task is
//! found in the node's task list and followed. A placeholder anywhere else
//! is someone else's and never touched.

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
                Ok(None) => self.created(node, want, m).await,
                // PVE removed the placeholder: the next attempt creates
                // again at the same vmid.
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
                self.clear_intent(node);
                return StepOutcome::Done;
            }
            // Our create, still importing: its answer was lost, or the
            // process that sent it died. Follow its task; never send a
            // second create.
            Ok(Some(config)) if is_placeholder(&config) && self.intended(node, m) == Some(vmid) => {
                return self.follow_placeholder(node, want, vmid, m).await;
            }
            // Someone else's VM holds the vmid: never touch it. A vmid
            // the manifest names is a conflict; one PVE picked or the
            // store remembered is given up for another.
            Ok(Some(_)) => return self.taken(node, want, vmid, m),
            Ok(None) => {}
            // Keep the vmid: an earlier attempt may have created the VM
            // even though its answer got lost; the next attempt looks again.
            Err(out) => return out,
        }
        if let Err(out) = self.record_intent(node, want, vmid, m) {
            return out;
        }
        let mut options = mapping::create_options(
            &self.manifest,
            want,
            &self.image_storage,
            &self.owner_key,
            vmid,
        );
        // pull: the user-data `write_snippet` put on the host replaces
        // what PVE would generate from ciuser/sshkeys.
        if let Some(cicustom) = self.cicustom(node, want).await {
            options.extra.push(("cicustom".into(), cicustom));
        }
        let create = CreateVm {
            vmid,
            options,
            start: None,
            pool: None,
        };
        match self.api.qemu_create(&self.pve_node, &create).await {
            Ok(upid) => {
                self.record_task(node, Step::CreateVm, &upid, Some(vmid));
                m.upid = Some(upid);
                StepOutcome::Requeue(m.next_poll(&self.timing))
            }
            // Lost race or lost answer: the next attempt looks at the vmid
            // again (our placeholder there is followed).
            Err(err) if err.kind() == ErrorKind::AlreadyExists => StepOutcome::Failed(
                StepError::transient(format!("create vmid {vmid}: {}", chain(&err))),
            ),
            Err(err) => fail(&err, &format!("create vmid {vmid}")),
        }
    }

    /// The create task succeeded: the VM is ours once it carries our marks
    /// (a task found by its placeholder could, in theory, have been
    /// someone else's create at the vmid).
    async fn created(&self, node: &NodePlan, want: &DesiredVm, m: &mut Memory) -> Outcome {
        let Some(vmid) = m.vmid else {
            return refuse("a create task finished for a VM whose vmid is not known".into());
        };
        match self.read_config(vmid).await {
            Ok(Some(config)) if self.is_ours(node, vmid, &config) => {
                m.created = true;
                self.clear_intent(node);
                self.event(
                    &node.node,
                    Level::Info,
                    Kind::Created,
                    format!("created {}", shown(m.vmid)),
                );
                StepOutcome::Done
            }
            Ok(Some(_)) => self.taken(node, want, vmid, m),
            Ok(None) => StepOutcome::Failed(StepError::transient(format!(
                "vmid {vmid} is gone right after its create succeeded; creating it again"
            ))),
            Err(out) => out,
        }
    }

    /// Someone else's VM holds `vmid`: refused when the manifest names
    /// the vmid, else given up for another (the VM is never touched).
    fn taken(&self, node: &NodePlan, want: &DesiredVm, vmid: VmId, m: &mut Memory) -> Outcome {
        if m.intent == Some(vmid) || self.intended(node, m) == Some(vmid) {
            self.clear_intent(node);
        }
        m.intent = None;
        if want.vmid.is_some() {
            return self.not_ours(node, vmid);
        }
        m.vmid = None;
        StepOutcome::Failed(StepError::transient(format!(
            "vmid {vmid} was taken by a VM homestak does not own; picking another"
        )))
    }

    /// Finds the `qmcreate` task behind our placeholder at `vmid` and
    /// follows it as if its answer had arrived.
    async fn follow_placeholder(
        &self,
        node: &NodePlan,
        want: &DesiredVm,
        vmid: VmId,
        m: &mut Memory,
    ) -> Outcome {
        let query = TaskQuery {
            source: Some(TaskSource::All),
            vmid: Some(vmid),
            typefilter: Some("qmcreate".into()),
            since: None,
            limit: Some(20),
        };
        let listed = match self.api.node_tasks(&self.pve_node, &query).await {
            Ok(listed) => listed,
            Err(err) => return fail(&err, &format!("list the create tasks of vmid {vmid}")),
        };
        // The placeholder is held by the one create running at the vmid
        // (PVE refuses a second while it exists): a running one first, then
        // the newest; PVE lists newest first, so the first of equals.
        let Some((_, entry)) = listed
            .into_iter()
            .filter(|t| t.upid.kind() == "qmcreate" && t.upid.vmid() == Some(vmid))
            .enumerate()
            .max_by_key(|(index, t)| {
                let running = t.status.is_none() && t.endtime.is_none();
                (running, t.upid.starttime(), std::cmp::Reverse(*index))
            })
        else {
            return StepOutcome::Failed(StepError::transient(format!(
                "vmid {vmid} holds the `lock: create` placeholder of our create, but PVE lists \
                 no create task for it on node {}; looking again",
                self.pve_node
            )));
        };
        let upid = entry.upid;
        match tasks::check(self.api.as_ref(), &upid, 20).await {
            Ok(Check::Running(_)) => {
                tracing::info!(%upid, vmid = vmid.get(), node = %node.node, "following a create in progress");
                self.record_task(node, Step::CreateVm, &upid, Some(vmid));
                m.upid = Some(upid);
                StepOutcome::Requeue(m.next_poll(&self.timing))
            }
            Ok(Check::Succeeded(_)) => self.created(node, want, m).await,
            Ok(Check::Failed { exitstatus, .. }) => {
                // A failed create removes its placeholder; one still there
                // was left behind (the worker killed, the host rebooted).
                match self.read_config(vmid).await {
                    Ok(Some(config)) if is_placeholder(&config) => refuse(format!(
                        "vmid {vmid} still holds the `lock: create` placeholder of create task \
                         {upid}, which ended with: {exitstatus}. PVE did not remove it: check \
                         the task log, remove it (`qm unlock {vmid} && qm destroy {vmid}` on \
                         the host), then run again"
                    )),
                    Ok(_) => StepOutcome::Failed(StepError::classified(format!(
                        "create VM: task {upid} failed: {exitstatus}"
                    ))),
                    Err(out) => out,
                }
            }
            Err(err) => fail(&err, &format!("check create task {upid}")),
        }
    }

    /// The vmid this node's create intent names: recorded by this run, or
    /// (read from the store) by an earlier one.
    fn intended(&self, node: &NodePlan, m: &Memory) -> Option<VmId> {
        m.intent.or_else(|| {
            let store = self.store.as_ref()?;
            store
                .get_node(&self.key(node))
                .ok()
                .flatten()
                .and_then(|r| r.create_intent)
                .and_then(|i| i.vmid)
        })
    }

    /// Records, flushed, that `vmid` is about to be created for `node`,
    /// before the POST: whatever happens to the answer, the next attempt
    /// (or process) knows the vmid to look at.
    fn record_intent(
        &self,
        node: &NodePlan,
        want: &DesiredVm,
        vmid: VmId,
        m: &mut Memory,
    ) -> Result<(), Outcome> {
        m.intent = Some(vmid);
        let Some(store) = &self.store else {
            return Ok(());
        };
        let intent = CreateIntent {
            vmid: Some(vmid),
            pve_node: Some(self.pve_node.clone()),
            recorded: Timestamp::now(),
            name: Some(want.name.clone()),
            spec_hash: Some(want.spec_hash()),
        };
        store
            .update_node(&self.key(node), Durability::Flush, &mut |r| {
                r.vmid = Some(vmid);
                r.pve_node = Some(self.pve_node.clone());
                r.create_intent = Some(intent.clone());
            })
            .map(|_| ())
            .map_err(|err| {
                refuse(format!(
                    "record the create of vmid {vmid} in the store before sending it: {}",
                    chain(&err)
                ))
            })
    }

    /// The create was seen through (or given up): nothing to look for any
    /// more.
    pub(super) fn clear_intent(&self, node: &NodePlan) {
        if let Some(store) = &self.store {
            let _ = store.update_node(&self.key(node), Durability::Lazy, &mut |r| {
                r.create_intent = None;
            });
        }
    }

    pub(super) fn adopt_vm(&self, node: &NodePlan, m: &mut Memory) -> Outcome {
        if let Some(store) = &self.store {
            let vmid = m.vmid;
            let pve_node = self.at(m).clone();
            if let Err(err) = store.update_node(&self.key(node), Durability::Flush, &mut |r| {
                r.vmid = vmid;
                r.pve_node = Some(pve_node.clone());
                r.create_intent = None;
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

/// PVE's placeholder of a create in progress: `lock: create` and no
/// option yet (no name, tags or description). Whose create it is cannot be
/// read from it; only a recorded intent for its vmid makes it ours.
fn is_placeholder(config: &VmConfig) -> bool {
    config.get("lock").as_deref() == Some("create")
        && config.tag_set().is_empty()
        && config.description().is_none()
        && config.name().is_none()
}
