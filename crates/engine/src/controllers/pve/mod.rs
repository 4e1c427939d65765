//! The `pve` node controller: a VM that becomes a Proxmox VE host, with a
//! child homestak daemon on it that converges the node's subtree.
//!
//! Its VM is converged by the VM controller's steps (see
//! [`super::TierController`]); then these steps, each idempotent (it looks
//! first, over SSH or at the child's API, and acts only on a difference)
//! and resumable after a crash (what it learns is flushed to the node's
//! [`Delegation`] record before it is relied on):
//!
//! | step | does | timeout |
//! |---|---|---|
//! | `wait_ssh` | SSH answers with our key | `ssh` |
//! | `bootstrap_host` | the same homestak binary (SCP) and the child's SSH key | `bootstrap` |
//! | `configure_bridge` | the site's bridge (`vmbr0`) when the image lacks it | `configure_bridge` |
//! | `create_api_token` | `pveum user token add root@pam homestak --privsep 0` | `bootstrap` |
//! | `write_node_config` | the inner PVE's fingerprint (`openssl`), datastore and the inner site-config ([`inner`]) | `bootstrap` |
//! | `start_daemon` | the child daemon as a systemd unit with a token the parent minted; brought back when gone | `bootstrap` |
//! | `delegate_subtree` | `PUT /v1/subtree` (pinned TLS), then follow the child's run | `subtree_delegation` |
//! | `destroy_subtree` | `DELETE /v1/subtree/{name}`, before the VM goes | `subtree_delegation` |
//!
//! Following never holds a worker: each look at the child is one short
//! request, then a requeue.

mod child;
mod host;
pub mod inner;
mod over_ssh;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::vm::SshCheck;
use crate::store::Store;
use homestak_api::step::Step;
use homestak_core::model::Manifest;
use homestak_core::plan::DesiredVm;
use homestak_core::site::Site;
use homestak_ssh as ssh;

pub use child::{ChildStatus, child_plan, child_status};
pub use over_ssh::SshTo;

/// The child daemons' port (`homestak serve`'s default).
pub const DAEMON_PORT: u16 = 44443;

/// How the parent runs the child tier (`--delegate daemon|ssh`).
pub use homestak_core::model::Delegate;

/// The lifecycle's timeouts (the Python tool's), overridable in
/// `settings.timeouts` and by flag.
#[derive(Debug, Clone)]
pub struct Timeouts {
    pub bootstrap: Duration,
    pub configure_bridge: Duration,
    pub subtree_delegation: Duration,
}

impl Timeouts {
    /// The defaults with what `set` sets (seconds).
    pub fn with(set: &homestak_core::model::Timeouts) -> Timeouts {
        let d = Timeouts::default();
        let secs = |v: Option<u32>, default: Duration| {
            v.map_or(default, |s| Duration::from_secs(u64::from(s)))
        };
        Timeouts {
            bootstrap: secs(set.bootstrap, d.bootstrap),
            configure_bridge: secs(set.configure_bridge, d.configure_bridge),
            subtree_delegation: secs(set.subtree_delegation, d.subtree_delegation),
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            bootstrap: Duration::from_secs(600),
            configure_bridge: Duration::from_secs(120),
            subtree_delegation: Duration::from_secs(1200),
        }
    }
}

/// What the `pve` nodes of one tier need.
pub struct Lifecycle {
    /// SSH to the inner hosts (a `pve` node is set up over SSH), or why
    /// there is none (no usable key).
    pub ssh: Result<SshCheck, String>,
    /// The homestak binary installed on inner hosts (this one, by default).
    pub binary: PathBuf,
    /// This tier's host name, for what it writes on the child.
    pub parent: String,
    pub site: Arc<Site>,
    pub manifest: String,
    pub store: Arc<dyn Store>,
    /// The bridge inner VMs attach to.
    pub bridge: String,
    /// The child daemon's port.
    pub daemon_port: u16,
    pub timeouts: Timeouts,
    pub poll_min: Duration,
    pub poll_max: Duration,
    /// How child tiers run unless a node's `execution.delegate` says.
    pub delegate: Delegate,
}

/// A `pve` step as planned.
#[derive(Debug, Clone)]
pub enum PveStep {
    WaitSsh(Arc<DesiredVm>),
    BootstrapHost(Arc<DesiredVm>),
    ConfigureBridge(Arc<DesiredVm>),
    CreateApiToken(Arc<DesiredVm>),
    WriteNodeConfig(Arc<DesiredVm>),
    StartDaemon(Arc<DesiredVm>),
    DelegateSubtree(Arc<DesiredVm>, Arc<Manifest>, Delegate),
    /// With the subtree when the manifest still has it (a child run over
    /// SSH is told what to destroy).
    DestroySubtree(Option<Arc<Manifest>>),
}

impl PveStep {
    pub fn as_step(&self) -> Step {
        match self {
            PveStep::WaitSsh(_) => Step::WaitSsh,
            PveStep::BootstrapHost(_) => Step::BootstrapHost,
            PveStep::ConfigureBridge(_) => Step::ConfigureBridge,
            PveStep::CreateApiToken(_) => Step::CreateApiToken,
            PveStep::WriteNodeConfig(_) => Step::WriteNodeConfig,
            PveStep::StartDaemon(_) => Step::StartDaemon,
            PveStep::DelegateSubtree(..) => Step::DelegateSubtree,
            PveStep::DestroySubtree(_) => Step::DestroySubtree,
        }
    }
}

/// Per-node scratch state of the `pve` steps.
#[derive(Default)]
pub struct Memory {
    /// One SSH session for the node's steps in this run.
    session: Option<Arc<dyn ssh::Session>>,
    deadline: Option<Instant>,
    poll: Option<Duration>,
    /// The inner PVE node's name (its hostname).
    pve_node: Option<homestak_base::id::PveNode>,
    /// What `bootstrap_host` and `write_node_config` installed this run
    /// (markers `start_daemon` restarts the daemon on).
    binary_id: Option<String>,
    site_id: Option<String>,
    /// The child's generation being followed.
    generation: Option<u64>,
    /// `start_daemon` installed or (re)started the unit this run; what is
    /// left is waiting for it to answer.
    daemon_checked: bool,
    /// The child's run over SSH (`--delegate ssh`), while it runs.
    ssh_run: Option<tokio::task::JoinHandle<Result<ssh::ExecOutput, ssh::Error>>>,
}

impl Memory {
    fn next_poll(&mut self, lifecycle: &Lifecycle) -> Duration {
        super::next_poll(&mut self.poll, lifecycle.poll_min, lifecycle.poll_max)
    }

    /// Starts (or continues) a wait of at most `limit`; true once it passed.
    fn expired(&mut self, limit: Duration) -> bool {
        let deadline = *self.deadline.get_or_insert_with(|| Instant::now() + limit);
        Instant::now() >= deadline
    }

    fn reset_wait(&mut self) {
        self.deadline = None;
        self.poll = None;
    }
}
