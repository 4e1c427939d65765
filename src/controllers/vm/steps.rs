//! The VM controller's steps. Each is idempotent: observe, then act.

use tokio::time::Instant;

use super::mapping::{self, BOOT_DISK};
use super::{Download, Memory, VmController};
use crate::executor::{StepError, StepOutcome};
use crate::plan::marks::Marks;
use crate::plan::{DesiredVm, NodePlan};
use crate::pve::tasks::{self, Check};
use crate::pve::{
    self, ConfigUpdate, CreateVm, DeleteVm, DownloadUrl, ErrorKind, PowerAction, Resize, Upid,
    VmConfig,
};
use crate::ssh;
use crate::store::{
    ConditionStatus, Durability, EventKind, InFlight, NewEvent, NodeKey, PowerState, Timestamp,
};

type Outcome = StepOutcome;

fn fail(err: &pve::Error, what: &str) -> Outcome {
    let message = format!("{what}: {}", chain(err));
    if err.is_transient() {
        StepOutcome::Failed(StepError::transient(message))
    } else {
        StepOutcome::Failed(StepError::permanent(message))
    }
}

/// An error and its causes on one line, for step reports.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn refuse(message: String) -> Outcome {
    StepOutcome::Failed(StepError::permanent(message))
}

impl VmController {
    pub(super) async fn dispatch(
        &self,
        node: &NodePlan,
        step: &crate::executor::Step,
        m: &mut Memory,
    ) -> Outcome {
        if !m.seeded {
            m.seeded = true;
            if m.vmid.is_none() {
                m.vmid = node.vmid;
            }
        }
        let want = self.desired.get(&node.node);
        match (step.name, want) {
            ("ensure_image", Some(w)) => self.ensure_image(w, m).await,
            ("create_vm", Some(w)) => self.create_vm(node, w, m).await,
            ("adopt_vm", Some(_)) => self.adopt_vm(node, m),
            ("update_config", Some(w)) => self.update_config(node, w, m).await,
            ("resize_disk", Some(w)) => self.resize_disk(node, w, m).await,
            ("start_vm", _) => self.start_vm(node, m).await,
            ("wait_agent_ip", _) => self.wait_agent_ip(node, m).await,
            ("wait_ssh", Some(w)) => self.wait_ssh(node, w, m).await,
            ("mark_converged", Some(w)) => self.mark_converged(node, w, m),
            ("stop_vm", _) => self.stop_vm(node, m).await,
            ("destroy_vm", _) => self.destroy_vm(node, m).await,
            ("forget_vm", _) => self.forget_vm(node, m),
            (name, _) => refuse(format!("internal error: step {name} has no desired VM")),
        }
    }

    /// The VM a stop or destroy acts on: the VM this run created (rollback),
    /// else the one being replaced, else the node's VM.
    fn victim(node: &NodePlan, m: &Memory) -> Option<u32> {
        if m.created {
            return m.vmid;
        }
        if node.action == crate::plan::Action::Replace {
            return node
                .change(crate::plan::Field::Vmid)
                .and_then(|c| c.from.parse().ok())
                .or(node.vmid);
        }
        m.vmid
    }

    /// Forgets the SSH host key recorded for a destroyed VM's address.
    async fn forget_host_key(&self, node: &NodePlan) {
        let (Some(store), Some(check)) = (&self.store, &self.ssh) else {
            return;
        };
        let ip = store
            .get_node(&self.key(node))
            .ok()
            .flatten()
            .and_then(|r| r.ip);
        let known = match &check.host_key {
            ssh::HostKeyPolicy::AcceptNew(k) | ssh::HostKeyPolicy::Strict(k) => k,
            _ => return,
        };
        if let Some(ip) = ip {
            let _ = known.forget(&ip, check.port).await;
        }
    }

    fn key(&self, node: &NodePlan) -> NodeKey {
        NodeKey::new(&self.manifest, &node.node)
    }

    fn event(&self, node: &str, kind: EventKind, reason: &str, message: String) {
        if let Some(store) = &self.store {
            let _ = store.append_event(&NewEvent {
                at: Timestamp::now(),
                manifest: self.manifest.clone(),
                node: Some(node.to_string()),
                kind,
                reason: reason.to_string(),
                message,
            });
        }
    }

    /// Records a started task durably, so a crash resumes instead of
    /// repeating it.
    fn record_task(&self, node: &NodePlan, step: &str, upid: &Upid, vmid: Option<u32>) {
        if let Some(store) = &self.store {
            let _ = store.update_node(&self.key(node), Durability::Flush, &mut |r| {
                r.in_flight = Some(InFlight {
                    upid: upid.to_string(),
                    step: step.to_string(),
                    started: Timestamp::now(),
                });
                if vmid.is_some() {
                    r.vmid = vmid;
                }
                r.pve_node = Some(self.pve_node.clone());
            });
        }
    }

    fn clear_task(&self, node: &NodePlan) {
        if let Some(store) = &self.store {
            let _ = store.update_node(&self.key(node), Durability::Lazy, &mut |r| {
                r.in_flight = None;
            });
        }
    }

    /// A task this step started in an earlier (crashed) run.
    fn resume_task(&self, node: &NodePlan, step: &str, m: &mut Memory) {
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
    async fn follow(
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
                    EventKind::Warning,
                    "TaskFailed",
                    message.clone(),
                );
                Err(StepOutcome::Failed(StepError::transient(message)))
            }
            Err(err) => Err(fail(&err, what)),
        }
    }

    /// Reads the VM's config; `Ok(None)` when the VM does not exist.
    async fn read_config(&self, vmid: u32) -> Result<Option<VmConfig>, Outcome> {
        match self.api.qemu_config(&self.pve_node, vmid).await {
            Ok(config) => Ok(Some(config)),
            Err(err) if err.kind() == ErrorKind::VmNotFound => Ok(None),
            Err(err) => Err(fail(&err, &format!("read config of vmid {vmid}"))),
        }
    }

    /// True when `config` carries our marks for this manifest and node.
    fn is_ours(&self, node: &NodePlan, config: &VmConfig) -> bool {
        let marks = config
            .description()
            .as_deref()
            .and_then(Marks::from_description);
        config.tag_set().contains(crate::plan::marks::TAG)
            && marks.is_some_and(|m| m.manifest == self.manifest && m.node == node.node)
    }

    fn not_ours(&self, node: &NodePlan, vmid: u32) -> Outcome {
        refuse(format!(
            "vmid {vmid} no longer carries homestak's marks for {}/{}; it is left \
             untouched (run plan again)",
            self.manifest, node.node
        ))
    }

    /// Reads the VM's config and proves it is still ours. `Ok(None)` when
    /// the VM does not exist.
    async fn owned_config(&self, node: &NodePlan, vmid: u32) -> Result<Option<VmConfig>, Outcome> {
        match self.read_config(vmid).await? {
            Some(config) if self.is_ours(node, &config) => Ok(Some(config)),
            Some(_) => Err(self.not_ours(node, vmid)),
            None => Ok(None),
        }
    }

    fn release_download(&self, volume: &str) {
        if let Ok(mut d) = self.downloads.lock() {
            d.remove(volume);
        }
    }

    pub(super) async fn ensure_image(&self, want: &DesiredVm, m: &mut Memory) -> Outcome {
        let volume = mapping::image_volume(&self.image_storage, &want.image);
        let content = match self
            .api
            .storage_content(&self.pve_node, &self.image_storage, Some("import"), None)
            .await
        {
            Ok(c) => c,
            Err(err) => return fail(&err, &format!("list storage {}", self.image_storage)),
        };
        if content.iter().any(|c| c.volid == volume) {
            m.reset_wait();
            return StepOutcome::Done;
        }
        // One download per image, shared by every node that needs it: the
        // first node claims the slot (atomically) before it asks PVE.
        let claimed = {
            let Ok(mut downloads) = self.downloads.lock() else {
                return refuse("download table lock poisoned".into());
            };
            match downloads.get(&volume) {
                Some(Download::Task(upid)) => Err(Some(upid.clone())),
                Some(Download::Starting) => Err(None),
                None => {
                    downloads.insert(volume.clone(), Download::Starting);
                    Ok(())
                }
            }
        };
        match claimed {
            Ok(()) => {}
            Err(None) => return StepOutcome::Requeue(m.next_poll(&self.timing)),
            Err(Some(upid)) => {
                return match tasks::check(self.api.as_ref(), &upid, 20).await {
                    Ok(Check::Running(_)) => StepOutcome::Requeue(m.next_poll(&self.timing)),
                    Ok(Check::Succeeded(_)) => StepOutcome::Requeue(self.timing.poll_min),
                    Ok(Check::Failed { exitstatus, .. }) => {
                        self.release_download(&volume);
                        StepOutcome::Failed(StepError::transient(format!(
                            "download of {volume} failed: {exitstatus}"
                        )))
                    }
                    Err(err) => fail(&err, &format!("check download of {volume}")),
                };
            }
        }
        if self.images.parts.contains_key(&want.image) {
            self.release_download(&volume);
            return refuse(format!(
                "image {} ships in parts; joining parts on the PVE host is not implemented yet: \
                 put {volume} on the storage by hand",
                want.image
            ));
        }
        let request = DownloadUrl {
            url: format!(
                "{}{}",
                self.images.base_url,
                mapping::image_file(&want.image)
            ),
            content: "import".into(),
            filename: mapping::image_file(&want.image),
            checksum: None,
            verify_certificates: Some(true),
        };
        match self
            .api
            .download_url(&self.pve_node, &self.image_storage, &request)
            .await
        {
            Ok(upid) => {
                if let Ok(mut d) = self.downloads.lock() {
                    d.insert(volume, Download::Task(upid));
                }
                StepOutcome::Requeue(m.next_poll(&self.timing))
            }
            Err(err) => {
                self.release_download(&volume);
                fail(&err, &format!("download {}", request.url))
            }
        }
    }

    /// Picks the vmid for a create: explicit, remembered, or PVE's next
    /// free one not already handed out in this run.
    async fn allocate_vmid(&self) -> Result<u32, Outcome> {
        let mut wanted = None;
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
                    wanted = wanted.map(|w: u32| w + 1);
                    continue;
                }
                Err(err) => return Err(fail(&err, "allocate a vmid")),
            };
            let mut reserved = self
                .reserved
                .lock()
                .map_err(|_| refuse("vmid lock poisoned".into()))?;
            if reserved.insert(vmid) {
                return Ok(vmid);
            }
            wanted = Some(vmid + 1);
        }
        Err(refuse("could not find a free vmid after 64 tries".into()))
    }

    pub(super) async fn create_vm(
        &self,
        node: &NodePlan,
        want: &DesiredVm,
        m: &mut Memory,
    ) -> Outcome {
        self.resume_task(node, "create_vm", m);
        if m.upid.is_some() {
            return match self.follow(node, "create VM", m).await {
                Ok(Some(requeue)) => requeue,
                Ok(None) => {
                    m.created = true;
                    self.event(
                        &node.node,
                        EventKind::Normal,
                        "Created",
                        format!("created vmid {}", m.vmid.unwrap_or_default()),
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
            Ok(Some(config)) if self.is_ours(node, &config) => {
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
            options: mapping::create_options(&self.manifest, want, &self.image_storage),
            start: None,
            pool: None,
        };
        match self.api.qemu_create(&self.pve_node, &create).await {
            Ok(upid) => {
                self.record_task(node, "create_vm", &upid, Some(vmid));
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
            let pve_node = self.pve_node.clone();
            if let Err(err) = store.update_node(&self.key(node), Durability::Flush, &mut |r| {
                r.vmid = vmid;
                r.pve_node = Some(pve_node.clone());
            }) {
                return refuse(format!("record adoption in the store: {}", chain(&err)));
            }
        }
        self.event(
            &node.node,
            EventKind::Normal,
            "Adopted",
            format!("adopted vmid {} by its marks", m.vmid.unwrap_or_default()),
        );
        StepOutcome::Done
    }

    pub(super) async fn update_config(
        &self,
        node: &NodePlan,
        want: &DesiredVm,
        m: &mut Memory,
    ) -> Outcome {
        let Some(vmid) = m.vmid else {
            return refuse("update: no vmid".into());
        };
        let config = match self.owned_config(node, vmid).await {
            Ok(Some(c)) => c,
            Ok(None) => return refuse(format!("vmid {vmid} disappeared; run reconcile again")),
            Err(out) => return out,
        };
        let mut options = mapping::managed_options(&self.manifest, want);
        let current_net = config.get("net0");
        let current_bridge = config
            .property("net0")
            .and_then(|p| p.get("bridge").map(str::to_string));
        if current_bridge.as_deref() != Some(want.bridge.as_str()) {
            options.extra.push((
                "net0".into(),
                mapping::net_update(current_net.as_deref(), &want.bridge),
            ));
        }
        let update = ConfigUpdate {
            options,
            delete: Vec::new(),
            digest: config.digest.clone(),
            background_delay: None,
        };
        match self
            .api
            .qemu_config_put(&self.pve_node, vmid, &update)
            .await
        {
            Ok(()) => StepOutcome::Done,
            Err(err) if err.kind() == ErrorKind::DigestMismatch => StepOutcome::Failed(
                StepError::transient(format!("update vmid {vmid}: changed meanwhile; retrying")),
            ),
            Err(err) => fail(&err, &format!("update vmid {vmid}")),
        }
    }

    pub(super) async fn resize_disk(
        &self,
        node: &NodePlan,
        want: &DesiredVm,
        m: &mut Memory,
    ) -> Outcome {
        if m.upid.is_some() {
            return match self.follow(node, "resize disk", m).await {
                Ok(Some(requeue)) => requeue,
                Ok(None) => StepOutcome::Done,
                Err(failed) => failed,
            };
        }
        let Some(vmid) = m.vmid else {
            return refuse("resize: no vmid".into());
        };
        let config = match self.owned_config(node, vmid).await {
            Ok(Some(c)) => c,
            Ok(None) => return refuse(format!("vmid {vmid} disappeared; run reconcile again")),
            Err(out) => return out,
        };
        let current = config
            .disk(BOOT_DISK)
            .and_then(|d| d.size_bytes)
            .map(mapping::bytes_to_gib)
            .unwrap_or(0);
        if current >= want.disk_gib {
            return StepOutcome::Done;
        }
        let mut resize = Resize::to_gib(BOOT_DISK, want.disk_gib);
        resize.digest = config.digest.clone();
        match self.api.qemu_resize(&self.pve_node, vmid, &resize).await {
            Ok(Some(upid)) => {
                self.record_task(node, "resize_disk", &upid, None);
                m.upid = Some(upid);
                StepOutcome::Requeue(m.next_poll(&self.timing))
            }
            Ok(None) => StepOutcome::Done,
            Err(err) if err.kind() == ErrorKind::DigestMismatch => StepOutcome::Failed(
                StepError::transient(format!("resize vmid {vmid}: changed meanwhile; retrying")),
            ),
            Err(err) => fail(&err, &format!("resize disk of vmid {vmid}")),
        }
    }

    pub(super) async fn start_vm(&self, node: &NodePlan, m: &mut Memory) -> Outcome {
        self.resume_task(node, "start_vm", m);
        if m.upid.is_some() {
            return match self.follow(node, "start VM", m).await {
                Ok(Some(requeue)) => requeue,
                Ok(None) => StepOutcome::Done,
                Err(StepOutcome::Failed(e)) if e.message.contains("already running") => {
                    StepOutcome::Done
                }
                Err(failed) => failed,
            };
        }
        let Some(vmid) = m.vmid else {
            return refuse("start: no vmid".into());
        };
        match self.owned_config(node, vmid).await {
            Ok(Some(_)) => {}
            Ok(None) => return refuse(format!("vmid {vmid} disappeared; run reconcile again")),
            Err(out) => return out,
        }
        match self.api.qemu_status(&self.pve_node, vmid).await {
            Ok(status) if status.power() == pve::PowerState::Running => return StepOutcome::Done,
            Ok(_) => {}
            Err(err) => return fail(&err, &format!("status of vmid {vmid}")),
        }
        match self
            .api
            .qemu_power(&self.pve_node, vmid, &PowerAction::Start)
            .await
        {
            Ok(upid) => {
                self.record_task(node, "start_vm", &upid, None);
                m.upid = Some(upid);
                StepOutcome::Requeue(m.next_poll(&self.timing))
            }
            Err(err) => fail(&err, &format!("start vmid {vmid}")),
        }
    }

    pub(super) async fn wait_agent_ip(&self, node: &NodePlan, m: &mut Memory) -> Outcome {
        let Some(vmid) = m.vmid else {
            return refuse("wait for agent: no vmid".into());
        };
        let deadline = *m
            .deadline
            .get_or_insert_with(|| Instant::now() + self.timing.agent_timeout);
        match self
            .api
            .agent_network_interfaces(&self.pve_node, vmid)
            .await
        {
            Ok(interfaces) => {
                if let Some(ip) = pve::types::reachable_ipv4(&interfaces) {
                    m.ip = Some(ip);
                    m.reset_wait();
                    return StepOutcome::Done;
                }
            }
            Err(err)
                if matches!(
                    err.kind(),
                    ErrorKind::AgentNotRunning | ErrorKind::VmNotRunning
                ) || err.is_transient() => {}
            Err(err) => return fail(&err, &format!("ask the guest agent of vmid {vmid}")),
        }
        if Instant::now() >= deadline {
            m.reset_wait();
            return refuse(format!(
                "the guest agent of vmid {vmid} ({}) reported no address within {}; check that \
                 the image runs qemu-guest-agent",
                node.node,
                humantime::format_duration(self.timing.agent_timeout)
            ));
        }
        StepOutcome::Requeue(m.next_poll(&self.timing))
    }

    pub(super) async fn wait_ssh(
        &self,
        node: &NodePlan,
        want: &DesiredVm,
        m: &mut Memory,
    ) -> Outcome {
        let Some(check) = &self.ssh else {
            return StepOutcome::Done;
        };
        let Some(ip) = m.ip else {
            return refuse("wait for SSH: the VM's address is unknown".into());
        };
        let deadline = *m
            .deadline
            .get_or_insert_with(|| Instant::now() + self.timing.ssh_timeout);
        let target = ssh::Target::new(
            ssh::Destination::new(&ip.to_string(), check.port, &want.user),
            check.identity.clone(),
            check.host_key.clone(),
        );
        match check.transport.connect(&target).await {
            Ok(session) => {
                let _ = session.close().await;
                m.reset_wait();
                StepOutcome::Done
            }
            Err(err) if err.is_transient() && Instant::now() < deadline => {
                StepOutcome::Requeue(m.next_poll(&self.timing))
            }
            Err(err) => {
                m.reset_wait();
                refuse(format!("SSH to {} ({ip}): {}", node.node, chain(&err)))
            }
        }
    }

    pub(super) fn mark_converged(
        &self,
        node: &NodePlan,
        want: &DesiredVm,
        m: &mut Memory,
    ) -> Outcome {
        if let Some(store) = &self.store {
            let vmid = m.vmid;
            let ip = m.ip.map(|ip| ip.to_string());
            let hash = want.spec_hash();
            let pve_node = self.pve_node.clone();
            let result = store.update_node(&self.key(node), Durability::Flush, &mut |r| {
                r.vmid = vmid;
                r.pve_node = Some(pve_node.clone());
                if ip.is_some() {
                    r.ip.clone_from(&ip);
                }
                r.power = PowerState::Running;
                r.spec_hash = Some(hash.clone());
                r.last_error = None;
                r.consecutive_failures = 0;
                r.in_flight = None;
                r.set_condition(
                    "Ready",
                    ConditionStatus::True,
                    "Converged",
                    "",
                    Timestamp::now(),
                );
            });
            if let Err(err) = result {
                return refuse(format!("record the result in the store: {}", chain(&err)));
            }
        }
        self.event(
            &node.node,
            EventKind::Normal,
            "Converged",
            format!("vmid {} matches the manifest", m.vmid.unwrap_or_default()),
        );
        StepOutcome::Done
    }

    pub(super) async fn stop_vm(&self, node: &NodePlan, m: &mut Memory) -> Outcome {
        if m.upid.is_some() {
            return match self.follow(node, "stop VM", m).await {
                Ok(Some(requeue)) => requeue,
                Ok(None) => StepOutcome::Done,
                Err(failed) => failed,
            };
        }
        let Some(vmid) = Self::victim(node, m) else {
            return StepOutcome::Done;
        };
        match self.owned_config(node, vmid).await {
            Ok(Some(_)) => {}
            Ok(None) => return StepOutcome::Done,
            Err(out) => return out,
        }
        match self.api.qemu_status(&self.pve_node, vmid).await {
            Ok(status) if status.power() == pve::PowerState::Stopped => return StepOutcome::Done,
            Ok(_) => {}
            Err(err) if err.kind() == ErrorKind::VmNotFound => return StepOutcome::Done,
            Err(err) => return fail(&err, &format!("status of vmid {vmid}")),
        }
        let stop = PowerAction::Stop {
            timeout: None,
            overrule_shutdown: None,
        };
        match self.api.qemu_power(&self.pve_node, vmid, &stop).await {
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
                        EventKind::Normal,
                        "Deleted",
                        format!(
                            "destroyed vmid {}",
                            Self::victim(node, m).unwrap_or_default()
                        ),
                    );
                    self.forget_host_key(node).await;
                    // A replacement is created next: at the manifest's vmid,
                    // else a fresh one.
                    if node.action == crate::plan::Action::Replace && !m.created {
                        m.vmid = self.desired.get(&node.node).and_then(|w| w.vmid);
                    }
                    m.created = false;
                    StepOutcome::Done
                }
                Err(failed) => failed,
            };
        }
        let Some(vmid) = Self::victim(node, m) else {
            return StepOutcome::Done;
        };
        match self.owned_config(node, vmid).await {
            Ok(Some(_)) => {}
            Ok(None) => return StepOutcome::Done,
            Err(out) => return out,
        }
        let delete = DeleteVm {
            purge: true,
            destroy_unreferenced_disks: true,
        };
        match self.api.qemu_delete(&self.pve_node, vmid, &delete).await {
            Ok(upid) => {
                m.upid = Some(upid);
                StepOutcome::Requeue(m.next_poll(&self.timing))
            }
            Err(err) if err.kind() == ErrorKind::VmNotFound => StepOutcome::Done,
            Err(err) => fail(&err, &format!("destroy vmid {vmid}")),
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
