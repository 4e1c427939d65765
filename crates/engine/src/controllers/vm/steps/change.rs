//! Changing a VM in place, and waiting for it to come up.

use super::*;

impl VmController {
    pub(super) async fn update_config(
        &self,
        node: &NodePlan,
        want: &DesiredVm,
        m: &mut Memory,
    ) -> Outcome {
        let Some(vmid) = m.vmid else {
            return refuse("update: no vmid".into());
        };
        let config = match self.owned_config(node, vmid, m).await {
            Ok(Some(c)) => c,
            Ok(None) => return refuse(format!("vmid {vmid} disappeared; run reconcile again")),
            Err(out) => return out,
        };
        let mut options = mapping::managed_options(&self.manifest, want, &self.owner_key, vmid);
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
        match self.api.qemu_config_put(self.at(m), vmid, &update).await {
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
        let config = match self.owned_config(node, vmid, m).await {
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
        match self.api.qemu_resize(self.at(m), vmid, &resize).await {
            Ok(Some(upid)) => {
                self.record_task(node, Step::ResizeDisk, &upid, None);
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
        self.resume_task(node, Step::StartVm, m);
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
        match self.owned_config(node, vmid, m).await {
            Ok(Some(_)) => {}
            Ok(None) => return refuse(format!("vmid {vmid} disappeared; run reconcile again")),
            Err(out) => return out,
        }
        match self.api.qemu_status(self.at(m), vmid).await {
            Ok(status) if status.power() == pve::PowerState::Running => return StepOutcome::Done,
            Ok(_) => {}
            Err(err) => return fail(&err, &format!("status of vmid {vmid}")),
        }
        match self
            .api
            .qemu_power(self.at(m), vmid, &PowerAction::Start)
            .await
        {
            Ok(upid) => {
                self.record_task(node, Step::StartVm, &upid, None);
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
        match self.api.agent_network_interfaces(self.at(m), vmid).await {
            Ok(interfaces) => {
                if let Some(ip) = pve::types::reachable_ipv4(&interfaces) {
                    m.ip = Some(ip);
                    m.reset_wait();
                    return self.remember_ip(node, ip);
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

    /// Keeps the address in the store, durably, before anything trusts a
    /// host key at it (`wait_ssh`, the `pve` node's steps): a destroy
    /// forgets the key of the address the store has, and a run killed
    /// before `mark_converged` must not leave a key no destroy can forget
    /// (the next VM given that address would be refused as a
    /// man-in-the-middle).
    fn remember_ip(&self, node: &NodePlan, ip: std::net::Ipv4Addr) -> Outcome {
        let Some(store) = &self.store else {
            return StepOutcome::Done;
        };
        let text = ip.to_string();
        match store.update_node(&self.key(node), Durability::Flush, &mut |r| {
            r.ip = Some(text.clone());
        }) {
            Ok(_) => StepOutcome::Done,
            Err(err) => refuse(format!(
                "record the address {ip} in the store: {}",
                chain(&err)
            )),
        }
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
            let pve_node = self.at(m).clone();
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
                r.create_intent = None;
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
            Level::Info,
            Kind::Converged,
            format!("vmid {} matches the manifest", shown(m.vmid)),
        );
        StepOutcome::Done
    }
}
