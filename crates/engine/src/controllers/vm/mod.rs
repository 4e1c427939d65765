//! The VM controller: carries out one node's plan on one PVE tier.
//!
//! Steps ([`VmStep`]s, named by their [`Step`] verb_noun like the seed's
//! phases), each idempotent — safe to run again after a crash, a timeout or
//! a retry, because each first looks at the world and only then acts:
//!
//! | step | does |
//! |---|---|
//! | `ensure_image` | the image is on the import storage, else `download-url`: whole, or in parts (found by asking the source, see [`source`]) joined over SSH on the host (see [`host`]) |
//! | `create_vm` | records the create intent (vmid, flushed), then `import-from` + cloud-init (user, keys, ip, DNS), marks; PVE's `lock: create` placeholder at the intended vmid is our create in progress: its task is followed |
//! | `adopt_vm` | record an owned VM the store did not know |
//! | `update_config` | cores, memory, name, tags, network, cloud-init, marks |
//! | `resize_disk` | grow the boot disk |
//! | `start_vm` | power on |
//! | `wait_agent_ip` | the guest agent reports an address |
//! | `wait_ssh` | SSH answers and accepts our key |
//! | `mark_converged` | record the applied spec in the store |
//! | `write_snippet` | pull: cloud-init user-data on a snippets storage of the host (over its SSH), for `cicustom` |
//! | `push_spec` | push: the resolved spec to `/etc/homestak/spec.json` in the VM over SSH (digest compared first) |
//! | `verify_spec` | pull: the VM fetched its spec at first boot (its result file, over SSH) |
//! | `stop_vm`, `destroy_vm`, `forget_vm` | delete (owned VMs only; `destroy_vm` removes our snippet) |
//!
//! A step that starts a PVE task records its UPID (in memory and, flushed,
//! in the store) and returns `Requeue`; the next run of the step checks the
//! task. Before changing or deleting an existing VM, a step re-reads its
//! config and refuses unless the VM still carries our marks.

pub mod host;
pub mod mapping;
pub mod source;
mod steps;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_intent;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::executor::{AsStep, BoxFuture, Controller, Planned, StepOutcome};
use crate::store::Store;
use homestak_api::step::Step;
use homestak_base::id::{NodeName, PveNode, VmId};
use homestak_core::model::ExecutionMode;
use homestak_core::plan::marks::OwnerKey;
use homestak_core::plan::{Action, DesiredVm, Field, NodePlan};
use homestak_pve::{Api, Upid};
use homestak_ssh as ssh;

pub use host::HostSsh;
pub use steps::spec::SPEC_PATH;

/// SSH verification settings (`settings.verify_ssh`).
#[derive(Clone)]
pub struct SshCheck {
    pub transport: Arc<dyn ssh::Transport>,
    pub identity: ssh::Identity,
    pub host_key: ssh::HostKeyPolicy,
    pub port: u16,
}

/// The known-hosts file SSH checks record VM host keys in, and the VMs'
/// SSH port: a destroyed VM's entry is dropped so its successor at the same
/// address is not taken for an impostor.
#[derive(Clone)]
pub struct KnownHostsFile {
    pub file: ssh::KnownHosts,
    pub port: u16,
}

/// Where images come from when a storage lacks them (see [`source`]).
#[derive(Debug, Clone)]
pub struct ImageSource {
    /// URL prefix; `<image>.qcow2` (or `<image>.qcow2.partaa`, …) is
    /// appended.
    pub base_url: String,
    /// Images whose number of parts the site-config gives (`image_parts`):
    /// name → number of parts. The source is not asked about these.
    pub parts: HashMap<String, u32>,
    /// SHA-256 digests the site-config gives (`image_sha256`): name →
    /// lowercase hex. The source's checksum file is not asked for these.
    pub sha256: HashMap<String, String>,
}

/// Waits and polls.
#[derive(Debug, Clone)]
pub struct Timing {
    /// First poll of a task; later polls back off to `poll_max`.
    pub poll_min: Duration,
    pub poll_max: Duration,
    /// How long the guest agent may take to report an address.
    pub agent_timeout: Duration,
    /// How long SSH may take to answer after the agent did.
    pub ssh_timeout: Duration,
    /// How long a PVE task may run before we give up on it.
    pub task_timeout: Duration,
    /// How long an image may take to reach the import storage
    /// (`download_images`).
    pub download_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            // Short first polls cost little on a real host (a GET each) and
            // keep fast tasks (and the simulator's scaled ones) snappy.
            poll_min: Duration::from_millis(25),
            poll_max: Duration::from_secs(2),
            agent_timeout: Duration::from_secs(300),
            ssh_timeout: Duration::from_secs(180),
            task_timeout: Duration::from_secs(1800),
            download_timeout: Duration::from_secs(300),
        }
    }
}

/// Everything the controller needs for one tier.
pub struct VmController {
    pub api: Arc<dyn Api>,
    /// PVE node name for API paths.
    pub pve_node: PveNode,
    pub manifest: String,
    pub image_storage: String,
    /// The host's datastore: where VMs without a desired entry (deletions)
    /// keep their disks, for the per-storage limit.
    pub default_storage: String,
    pub images: ImageSource,
    /// Desired VMs by node name.
    pub desired: HashMap<NodeName, DesiredVm>,
    pub store: Option<Arc<dyn Store>>,
    pub ssh: Option<SshCheck>,
    pub known_hosts: Option<KnownHostsFile>,
    /// SSH to the PVE host, for joining images shipped in parts.
    pub host_ssh: Option<HostSsh>,
    /// The site's key for ownership marks.
    pub owner_key: OwnerKey,
    /// The spec server's certificate (PEM) pull-mode VMs trust when they
    /// fetch their spec over HTTPS.
    pub spec_ca: Option<String>,
    pub timing: Timing,
    /// What the nodes of one run share; start with `RunState::default()`.
    pub shared: RunState,
}

/// What the nodes of one run share.
#[derive(Default)]
pub struct RunState {
    /// Downloads (and joins) in flight by volume, shared by the nodes
    /// needing the same image.
    downloads: Mutex<HashMap<String, Download>>,
    /// vmids handed out by this run, so parallel creates never collide.
    reserved: Mutex<HashSet<VmId>>,
    /// What the image source holds, by image: asked once per run however
    /// many nodes need the image (a failed question is not kept).
    layouts: Mutex<HashMap<String, Arc<OnceCell<source::Layout>>>>,
    /// The SHA-256 each image is downloaded against, by image (`None`:
    /// unverified, warned once): found once per run.
    checksums: Mutex<HashMap<String, Arc<OnceCell<Option<String>>>>>,
    /// The client that asks, made when first needed.
    http: OnceCell<reqwest::Client>,
}

/// A download of an image, shared by the nodes that need it.
#[derive(Debug, Clone)]
enum Download {
    /// A node is asking PVE for it right now.
    Starting,
    Task(Upid),
    /// The task succeeded at this moment: a storage listing made before
    /// it may still lack the file; one made after it that lacks the file
    /// means the file went away (and is fetched again).
    Done(Instant),
    /// A node is joining the image's parts on the host (or removing parts
    /// left over from an interrupted join).
    Joining,
}

impl VmController {
    /// Keeps `vmids` out of the vmids this run hands out: those the plan
    /// already points nodes at (explicit or remembered), so a node picking
    /// PVE's next free vmid never takes the one another node will create.
    pub fn reserve(&self, vmids: impl IntoIterator<Item = VmId>) {
        if let Ok(mut reserved) = self.shared.reserved.lock() {
            reserved.extend(vmids);
        }
    }
}

/// Per-node scratch state between steps.
#[derive(Debug, Default)]
pub struct Memory {
    pub vmid: Option<VmId>,
    /// The PVE node the VM sits on, when not the tier's own (a migrated
    /// VM): seeded from the plan, corrected when a read finds it moved.
    pub pve_node: Option<PveNode>,
    /// The task the current step waits for.
    pub upid: Option<Upid>,
    pub poll: Option<Duration>,
    /// When the current wait gives up.
    pub deadline: Option<Instant>,
    pub ip: Option<Ipv4Addr>,
    /// This run created the VM (rollback may destroy it).
    pub created: bool,
    /// The vmid of the create intent this run recorded (before its POST).
    pub intent: Option<VmId>,
    /// `vmid` was seeded from the plan. Only once: a step may give the
    /// plan's vmid up (taken by someone else, or replaced) for a fresh one.
    pub seeded: bool,
    /// A task an earlier, interrupted run left in flight for this node
    /// under a step this run does not resume (its create, when this run
    /// plans an update): it must end before any step acts on the VM.
    pub earlier: Option<Upid>,
    /// The `cicustom` user-data volume of the VM being destroyed.
    pub snippet: Option<String>,
}

impl Memory {
    fn next_poll(&mut self, timing: &Timing) -> Duration {
        super::next_poll(&mut self.poll, timing.poll_min, timing.poll_max)
    }

    fn reset_wait(&mut self) {
        self.upid = None;
        self.poll = None;
        self.deadline = None;
    }
}

/// A VM step as planned. The node's desired VM is looked up once, when its
/// steps are planned, and carried by the steps that act on it: a step that
/// needs it cannot be planned without it.
#[derive(Debug, Clone)]
pub enum VmStep {
    EnsureImage(Arc<DesiredVm>),
    CreateVm(Arc<DesiredVm>),
    AdoptVm,
    UpdateConfig(Arc<DesiredVm>),
    ResizeDisk(Arc<DesiredVm>),
    StartVm,
    WaitAgentIp,
    WaitSsh(Arc<DesiredVm>),
    MarkConverged(Arc<DesiredVm>),
    StopVm,
    DestroyVm,
    ForgetVm,
    WriteSnippet(Arc<DesiredVm>),
    PushSpec(Arc<DesiredVm>),
    VerifySpec(Arc<DesiredVm>),
}

impl AsStep for VmStep {
    fn as_step(&self) -> Step {
        match self {
            VmStep::EnsureImage(_) => Step::EnsureImage,
            VmStep::CreateVm(_) => Step::CreateVm,
            VmStep::AdoptVm => Step::AdoptVm,
            VmStep::UpdateConfig(_) => Step::UpdateConfig,
            VmStep::ResizeDisk(_) => Step::ResizeDisk,
            VmStep::StartVm => Step::StartVm,
            VmStep::WaitAgentIp => Step::WaitAgentIp,
            VmStep::WaitSsh(_) => Step::WaitSsh,
            VmStep::MarkConverged(_) => Step::MarkConverged,
            VmStep::StopVm => Step::StopVm,
            VmStep::DestroyVm => Step::DestroyVm,
            VmStep::ForgetVm => Step::ForgetVm,
            VmStep::WriteSnippet(_) => Step::WriteSnippet,
            VmStep::PushSpec(_) => Step::PushSpec,
            VmStep::VerifySpec(_) => Step::VerifySpec,
        }
    }
}

impl VmController {
    fn create_steps(&self, want: &Arc<DesiredVm>, verify_ssh: bool) -> Vec<Planned<VmStep>> {
        let mode = want.spec.as_ref().map(|s| s.mode);
        let mut steps = vec![Planned::on_storage(
            VmStep::EnsureImage(want.clone()),
            &self.image_storage,
        )];
        if mode == Some(ExecutionMode::Pull) {
            steps.push(Planned::new(VmStep::WriteSnippet(want.clone())));
        }
        steps.extend([
            Planned::on_storage(VmStep::CreateVm(want.clone()), &want.storage),
            // A resize does not take the storage lock (PVE's
            // `volume_resize` runs outside `cluster_lock_storage`): only
            // steps that allocate or free volumes hold a storage slot.
            Planned::new(VmStep::ResizeDisk(want.clone())),
            Planned::new(VmStep::StartVm),
            Planned::new(VmStep::WaitAgentIp),
        ]);
        if verify_ssh || mode == Some(ExecutionMode::Push) {
            steps.push(Planned::new(VmStep::WaitSsh(want.clone())));
        }
        steps.extend(self.spec_steps(want, verify_ssh));
        steps.push(Planned::new(VmStep::MarkConverged(want.clone())));
        steps
    }

    /// After SSH answers: push the spec, or check that the VM fetched it
    /// (only when SSH is verified: without it nothing can look).
    fn spec_steps(&self, want: &Arc<DesiredVm>, verify_ssh: bool) -> Vec<Planned<VmStep>> {
        match want.spec.as_ref().map(|s| s.mode) {
            Some(ExecutionMode::Push) => vec![Planned::new(VmStep::PushSpec(want.clone()))],
            Some(ExecutionMode::Pull) if verify_ssh => {
                vec![Planned::new(VmStep::VerifySpec(want.clone()))]
            }
            _ => Vec::new(),
        }
    }
}

impl Controller for VmController {
    type Memory = Memory;
    type Work = VmStep;

    fn steps(&self, node: &NodePlan) -> Vec<Planned<VmStep>> {
        let verify_ssh = self.ssh.is_some();
        let want = self.desired.get(&node.node).cloned().map(Arc::new);
        match (node.action, want) {
            (Action::Create, Some(want)) => self.create_steps(&want, verify_ssh),
            (Action::Replace, Some(want)) => {
                let mut steps = vec![
                    Planned::new(VmStep::StopVm),
                    Planned::on_storage(VmStep::DestroyVm, &want.storage),
                ];
                steps.extend(self.create_steps(&want, verify_ssh));
                steps
            }
            (Action::Update | Action::Adopt, Some(want)) => {
                let mut steps = Vec::new();
                if node.action == Action::Adopt {
                    steps.push(Planned::new(VmStep::AdoptVm));
                }
                let config_change = node
                    .changes
                    .iter()
                    .any(|c| !matches!(c.field, Field::Disk | Field::Power));
                if config_change {
                    steps.push(Planned::new(VmStep::UpdateConfig(want.clone())));
                }
                if node.change(Field::Disk).is_some() {
                    steps.push(Planned::new(VmStep::ResizeDisk(want.clone())));
                }
                if node.change(Field::Power).is_some() {
                    steps.push(Planned::new(VmStep::StartVm));
                    steps.push(Planned::new(VmStep::WaitAgentIp));
                }
                // A changed spec goes to a push-mode VM again (a pull-mode
                // VM fetched its spec at first boot).
                if want
                    .spec
                    .as_ref()
                    .is_some_and(|s| s.mode == ExecutionMode::Push)
                {
                    steps.push(Planned::new(VmStep::PushSpec(want.clone())));
                }
                steps.push(Planned::new(VmStep::MarkConverged(want)));
                steps
            }
            (Action::Delete, _) => vec![
                Planned::new(VmStep::StopVm),
                Planned::on_storage(VmStep::DestroyVm, &self.default_storage),
                Planned::new(VmStep::ForgetVm),
            ],
            // No desired entry for a create/update: nothing safe to do.
            _ => Vec::new(),
        }
    }

    fn run<'a>(
        &'a self,
        node: &'a NodePlan,
        step: &'a VmStep,
        memory: &'a mut Memory,
    ) -> BoxFuture<'a, StepOutcome> {
        Box::pin(self.dispatch(node, step, memory))
    }

    fn undo_steps(&self, node: &NodePlan, memory: &Memory) -> Vec<Planned<VmStep>> {
        if memory.created {
            let storage = self
                .desired
                .get(&node.node)
                .map_or(&self.default_storage, |w| &w.storage);
            vec![
                Planned::new(VmStep::StopVm),
                Planned::on_storage(VmStep::DestroyVm, storage),
                Planned::new(VmStep::ForgetVm),
            ]
        } else {
            Vec::new()
        }
    }
}
