//! The `pve` steps done over SSH on the inner host: `wait_ssh`,
//! `bootstrap_host`, `configure_bridge`, `create_api_token` and
//! `write_node_config`. Commands that need root run through `sudo -n sh -c`
//! unless the cloud-init user is root; files are uploaded to a staging
//! directory, then moved into place in one root command, so a file is
//! either old or complete.

use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};

use serde_json::Value;

use super::inner::{self, File};
use super::{Lifecycle, Memory, PveStep};
use crate::controllers::vm;
use crate::executor::{StepError, StepOutcome};
pub(super) use crate::onboard::remote::{as_root, install, marker, root};
use crate::onboard::token;
use crate::store::{Delegation, DelegationState, Durability, NodeKey};
use homestak_api::Outcome as RunEnd;
use homestak_base::error_chain as chain;
use homestak_base::id::PveNode;
use homestak_core::plan::{DesiredVm, NodePlan};
use homestak_ssh::{self as ssh, quote};

type Outcome = StepOutcome;
/// A step's end: `Err` is an early end (a failure or a requeue), so the
/// steps read top to bottom with `?`.
pub(super) type Step = Result<Outcome, Outcome>;

fn refuse(message: String) -> Outcome {
    StepOutcome::Failed(StepError::permanent(message))
}

/// A failed onboarding call: retried when the connection was the problem.
fn onboard_failed(err: &token::Error) -> Outcome {
    match err.ssh() {
        Some(e) => ssh_failed(e, &err.to_string()),
        None => refuse(chain(err)),
    }
}

/// A failed SSH call: retried when the connection was the problem.
pub(super) fn ssh_failed(err: &ssh::Error, what: &str) -> Outcome {
    let message = format!("{what}: {}", chain(err));
    if matches!(
        err.kind(),
        ssh::ErrorKind::Session | ssh::ErrorKind::Timeout | ssh::ErrorKind::Unreachable
    ) {
        StepOutcome::Failed(StepError::transient(message))
    } else {
        StepOutcome::Failed(StepError::permanent(message))
    }
}

/// Identifies the binary to install: version, size and modification time
/// (hashing tens of megabytes on every run would cost more than it saves).
fn binary_id(path: &std::path::Path) -> Result<String, std::io::Error> {
    static CACHE: OnceLock<std::sync::Mutex<Vec<(std::path::PathBuf, String)>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Ok(known) = cache.lock()
        && let Some((_, id)) = known.iter().find(|(p, _)| p == path)
    {
        return Ok(id.clone());
    }
    let meta = std::fs::metadata(path)?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let id = format!("{} {} {modified}", env!("CARGO_PKG_VERSION"), meta.len());
    if let Ok(mut known) = cache.lock() {
        known.push((path.to_path_buf(), id.clone()));
    }
    Ok(id)
}

impl Lifecycle {
    pub(crate) fn key(&self, node: &NodePlan) -> NodeKey {
        NodeKey::new(&self.manifest, &node.node)
    }

    /// The node's delegation record (a fresh one when the VM changed).
    pub(super) fn delegation(
        &self,
        node: &NodePlan,
        vm: &vm::Memory,
    ) -> Result<Delegation, Outcome> {
        let record = self
            .store
            .get_node(&self.key(node))
            .map_err(|e| refuse(format!("read the store: {}", chain(&e))))?;
        let found = record.and_then(|r| r.delegation).unwrap_or_default();
        Ok(if found.vmid.is_some() && found.vmid != vm.vmid {
            Delegation {
                vmid: vm.vmid,
                ..Delegation::default()
            }
        } else {
            Delegation {
                vmid: vm.vmid.or(found.vmid),
                ..found
            }
        })
    }

    /// Writes the node's delegation record durably.
    pub(super) fn save(&self, node: &NodePlan, delegation: &Delegation) -> Result<(), Outcome> {
        self.store
            .update_node(&self.key(node), Durability::Flush, &mut |r| {
                r.delegation = Some(delegation.clone());
            })
            .map(|_| ())
            .map_err(|e| refuse(format!("record the delegation in the store: {}", chain(&e))))
    }

    /// The address of the node's VM, as the guest agent reported it.
    fn address(vm: &vm::Memory) -> Result<Ipv4Addr, Outcome> {
        vm.ip
            .ok_or_else(|| refuse("the inner host's address is unknown".into()))
    }

    /// The node's SSH session, connecting (waiting up to the bootstrap
    /// timeout) unless already connected.
    pub(super) async fn connect(
        &self,
        want: &DesiredVm,
        vm: &vm::Memory,
        m: &mut Memory,
    ) -> Result<Arc<dyn ssh::Session>, Outcome> {
        let ip = Self::address(vm)?;
        self.connect_to(&ip.to_string(), &want.user, m).await
    }

    /// The node's SSH session to `user@ip`, connecting unless connected.
    pub(super) async fn connect_to(
        &self,
        ip: &str,
        user: &str,
        m: &mut Memory,
    ) -> Result<Arc<dyn ssh::Session>, Outcome> {
        if let Some(session) = &m.session {
            return Ok(session.clone());
        }
        let check = match &self.ssh {
            Ok(check) => check,
            Err(why) => return Err(refuse(format!("a pve node is set up over SSH: {why}"))),
        };
        let target = ssh::Target::new(
            ssh::Destination::new(ip, check.port, user),
            check.identity.clone(),
            check.host_key.clone(),
        );
        match check.transport.connect(&target).await {
            Ok(session) => {
                let session: Arc<dyn ssh::Session> = Arc::from(session);
                m.session = Some(session.clone());
                m.reset_wait();
                Ok(session)
            }
            Err(err) if err.is_transient() && !m.expired(self.timeouts.bootstrap) => {
                Err(StepOutcome::Requeue(m.next_poll(self)))
            }
            Err(err) => {
                m.reset_wait();
                Err(refuse(format!(
                    "SSH to the inner host {ip}: {}",
                    chain(&err)
                )))
            }
        }
    }
}

impl Lifecycle {
    /// `wait_ssh`: the inner host answers SSH and takes our key.
    pub(super) async fn wait_ssh(&self, want: &DesiredVm, vm: &vm::Memory, m: &mut Memory) -> Step {
        self.connect(want, vm, m).await?;
        Ok(StepOutcome::Done)
    }

    /// `bootstrap_host`: the homestak binary (when not the same build) and
    /// the child's own SSH key (made once, kept on the host).
    pub(super) async fn bootstrap_host(
        &self,
        node: &NodePlan,
        want: &DesiredVm,
        vm: &vm::Memory,
        m: &mut Memory,
    ) -> Step {
        let s = self.connect(want, vm, m).await?;
        let user = want.user.as_str();
        let unreadable = |e: std::io::Error| {
            refuse(format!(
                "read the homestak binary {} to install on {}: {e}",
                self.binary.display(),
                node.node
            ))
        };
        let id = binary_id(&self.binary).map_err(unreadable)?;
        let installed = marker(&*s, user, inner::BINARY_MARK)
            .await
            .map_err(|e| ssh_failed(&e, "read what is installed on the inner host"))?;
        if installed.as_deref() != Some(id.as_str()) {
            let files = [
                File {
                    path: inner::BINARY.into(),
                    bytes: std::fs::read(&self.binary).map_err(unreadable)?,
                    mode: 0o755,
                },
                File {
                    path: inner::BINARY_MARK.into(),
                    bytes: id.clone().into_bytes(),
                    mode: 0o644,
                },
            ];
            install(&*s, user, &files)
                .await
                .map_err(|e| ssh_failed(&e, "install homestak on the inner host"))?;
        }
        m.binary_id = Some(id);
        let mut d = self.delegation(node, vm)?;
        let address = vm.ip.map(|ip| ip.to_string());
        if d.address != address || d.user.as_deref() != Some(user) {
            d.address = address;
            d.user = Some(user.to_string());
            self.save(node, &d)?;
        }
        let line = format!("test -f {0}.pub && cat {0}.pub || true", inner::CHILD_KEY);
        let key = root(&*s, user, &line)
            .await
            .map_err(|e| ssh_failed(&e, "read the child's SSH key"))?;
        if key.trim().is_empty() {
            self.make_child_key(&*s, user).await?;
        }
        Ok(StepOutcome::Done)
    }

    /// A fresh key pair for the child tier, made here and installed there
    /// (the host may have no `ssh-keygen`); the private half is not kept.
    async fn make_child_key(&self, s: &dyn ssh::Session, user: &str) -> Result<(), Outcome> {
        let dir =
            tempfile::tempdir().map_err(|e| refuse(format!("make a temporary directory: {e}")))?;
        let path = dir.path().join("id_ed25519");
        let identity = ssh::Identity::generate_to(&path)
            .map_err(|e| refuse(format!("make the child's SSH key: {}", chain(&e))))?;
        let private =
            std::fs::read(&path).map_err(|e| refuse(format!("read the new SSH key: {e}")))?;
        let files = [
            File {
                path: inner::CHILD_KEY.into(),
                bytes: private,
                mode: 0o600,
            },
            File {
                path: format!("{}.pub", inner::CHILD_KEY),
                bytes: format!("{}\n", identity.public_key_openssh()).into_bytes(),
                mode: 0o644,
            },
        ];
        install(s, user, &files)
            .await
            .map_err(|e| ssh_failed(&e, "install the child's SSH key"))
    }

    /// The inner PVE node's name.
    async fn pve_node(
        &self,
        s: &dyn ssh::Session,
        user: &str,
        m: &mut Memory,
    ) -> Result<PveNode, Outcome> {
        if let Some(name) = &m.pve_node {
            return Ok(name.clone());
        }
        let name = token::node_name(s, user)
            .await
            .map_err(|e| onboard_failed(&e))?;
        m.pve_node = Some(name.clone());
        Ok(name)
    }

    /// `configure_bridge`: the site's bridge exists on the inner host.
    pub(super) async fn configure_bridge(
        &self,
        want: &DesiredVm,
        vm: &vm::Memory,
        m: &mut Memory,
    ) -> Step {
        let s = self.connect(want, vm, m).await?;
        let user = want.user.as_str();
        let pve_node = self.pve_node(&*s, user, m).await?;
        let path = format!("/nodes/{pve_node}/network");
        let listing = match token::pvesh_get(&*s, user, &path).await {
            Ok(v) => v,
            // The inner PVE may still be starting.
            Err(_) if !m.expired(self.timeouts.configure_bridge) => {
                return Err(StepOutcome::Requeue(m.next_poll(self)));
            }
            Err(e) => return Err(onboard_failed(&e)),
        };
        m.reset_wait();
        let has = listing.as_array().is_some_and(|ifaces| {
            ifaces
                .iter()
                .any(|i| i.get("iface").and_then(Value::as_str) == Some(self.bridge.as_str()))
        });
        if !has {
            let line = format!(
                "pvesh create {0} --iface {1} --type bridge --autostart 1 && pvesh set {0}",
                quote(&path),
                quote(&self.bridge)
            );
            root(&*s, user, &line).await.map_err(|e| {
                ssh_failed(
                    &e,
                    &format!("create bridge {} on the inner host", self.bridge),
                )
            })?;
        }
        Ok(StepOutcome::Done)
    }

    /// `create_api_token`: the inner PVE API token homestak uses there,
    /// kept in the store; made again when the host lost it.
    pub(super) async fn create_api_token(
        &self,
        node: &NodePlan,
        want: &DesiredVm,
        vm: &vm::Memory,
        m: &mut Memory,
    ) -> Step {
        let s = self.connect(want, vm, m).await?;
        let user = want.user.as_str();
        let mut delegation = self.delegation(node, vm)?;
        let exists = match token::exists(&*s, user).await {
            Ok(exists) => exists,
            Err(_) if !m.expired(self.timeouts.bootstrap) => {
                return Err(StepOutcome::Requeue(m.next_poll(self)));
            }
            Err(e) => return Err(onboard_failed(&e)),
        };
        m.reset_wait();
        if exists && delegation.pve_token.is_some() {
            return Ok(StepOutcome::Done);
        }
        // A token whose secret we lost cannot be read back: make it anew.
        let made = token::create(&*s, user, exists)
            .await
            .map_err(|e| onboard_failed(&e))?;
        delegation.pve_token = Some(made);
        self.save(node, &delegation)?;
        Ok(StepOutcome::Done)
    }

    /// `write_node_config`: the inner PVE's fingerprint and datastore, then
    /// the inner site-config with its `nodes/<host>.yaml`.
    pub(super) async fn write_node_config(
        &self,
        node: &NodePlan,
        want: &DesiredVm,
        vm: &vm::Memory,
        m: &mut Memory,
    ) -> Step {
        let s = self.connect(want, vm, m).await?;
        let user = want.user.as_str();
        let ip = Self::address(vm)?.to_string();
        let mut delegation = self.delegation(node, vm)?;
        // create_api_token, the step before, made it.
        let pve_token = delegation.pve_token.clone().ok_or_else(|| {
            refuse(format!(
                "no API token for the inner host {} yet: the create_api_token step makes it",
                node.node
            ))
        })?;
        let fingerprint = token::fingerprint(&*s, user)
            .await
            .map_err(|e| onboard_failed(&e))?;
        let pve_node = self.pve_node(&*s, user, m).await?;
        let storages = token::pvesh_get(&*s, user, &format!("/nodes/{pve_node}/storage"))
            .await
            .map_err(|e| onboard_failed(&e))?;
        let Some(datastore) = token::pick_datastore(&storages, &want.storage) else {
            return Err(refuse(format!(
                "the inner host {} has no storage for VM disks (content `images`)",
                node.node
            )));
        };
        let key = root(&*s, user, &format!("cat {}.pub", inner::CHILD_KEY))
            .await
            .map_err(|e| ssh_failed(&e, "read the child's SSH key"))?
            .trim()
            .to_string();
        let file = inner::NodeFile {
            host: &node.node,
            pve_node: &pve_node,
            address: &ip,
            fingerprint: &fingerprint,
            datastore: &datastore,
            vm_ssh_port: self.ssh.as_ref().map_or(22, |c| c.port),
        };
        let mut files = inner::site_files(&self.site, &file, &pve_token, &key, &self.parent)
            .map_err(|e| refuse(chain(&e)))?;
        let id = inner::identity(&files);
        let current = marker(&*s, user, inner::SITE_MARK)
            .await
            .map_err(|e| ssh_failed(&e, "read the inner site-config's marker"))?;
        if current.as_deref() != Some(id.as_str()) {
            files.push(File {
                path: inner::SITE_MARK.into(),
                bytes: id.clone().into_bytes(),
                mode: 0o644,
            });
            install(&*s, user, &files)
                .await
                .map_err(|e| ssh_failed(&e, "write the inner site-config"))?;
        }
        m.site_id = Some(id);
        if delegation.pve_fingerprint.as_deref() != Some(fingerprint.as_str()) {
            delegation.pve_fingerprint = Some(fingerprint);
            self.save(node, &delegation)?;
        }
        Ok(StepOutcome::Done)
    }

    /// Runs one `pve` step.
    pub(crate) async fn run(
        &self,
        node: &NodePlan,
        step: &PveStep,
        vm: &vm::Memory,
        m: &mut Memory,
    ) -> Outcome {
        let ran = match step {
            PveStep::WaitSsh(w) => self.wait_ssh(w, vm, m).await,
            PveStep::BootstrapHost(w) => self.bootstrap_host(node, w, vm, m).await,
            PveStep::ConfigureBridge(w) => self.configure_bridge(w, vm, m).await,
            PveStep::CreateApiToken(w) => self.create_api_token(node, w, vm, m).await,
            PveStep::WriteNodeConfig(w) => self.write_node_config(node, w, vm, m).await,
            PveStep::StartDaemon(w) => self.start_daemon(node, w, vm, m).await,
            PveStep::DelegateSubtree(want, subtree, mode) => match mode {
                super::Delegate::Daemon => self.delegate_subtree(node, subtree, vm, m).await,
                super::Delegate::Ssh => self.delegate_over_ssh(node, want, subtree, vm, m).await,
            },
            PveStep::DestroySubtree(subtree) => {
                self.destroy_subtree(node, subtree.as_deref(), m).await
            }
        };
        ran.unwrap_or_else(|early| early)
    }

    /// Marks the delegation as failed with `why` (kept for `status`).
    pub(super) fn record_failure(&self, node: &NodePlan, vm: &vm::Memory, why: &str) {
        if let Ok(mut d) = self.delegation(node, vm) {
            d.state = DelegationState::Ended(RunEnd::Failed);
            d.message = Some(why.to_string());
            let _ = self.save(node, &d);
        }
    }
}
