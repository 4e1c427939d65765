//! Typed PVE REST client.
//!
//! Controllers hold an `Arc<dyn Api>`: one [`Client`] per PVE host in
//! production (or against the simulator), a `fake::Scripted` client (with
//! the `testing` feature) or a hand-written fake in tests. Every [`Api`] method has a default body that
//! returns [`Error::NotImplemented`], so a fake overrides only the calls its
//! test needs.
//!
//! Layers, top to bottom:
//! - [`Api`]: typed calls ([`params`] in, [`types`] out).
//! - [`Client`]: implements [`Api`] by building a [`Request`] (path
//!   template and its values, [`Form`] parameters, retry safety) and
//!   decoding the `data` envelope.
//! - [`Transport`]: [`Http`] (reqwest + rustls: token auth, TLS trust,
//!   timeouts, per-host concurrency and rate limits, retries for reads) or
//!   `fake::Scripted`.
//! - [`tasks`]: waiting on UPIDs with backoff, or checking once without
//!   holding a worker.
//!
//! Facts about PVE's wire behaviour come from `pve-api/NOTES.md` in the
//! shared folder; section numbers in comments refer to it.

pub mod auth;
mod client;
mod de;
pub mod error;
#[cfg(feature = "testing")]
pub mod fake;
pub mod form;
mod http;
pub mod limits;
pub mod params;
pub mod recorder;
pub mod schema;
pub mod tasks;
mod transport;
pub mod types;
pub mod upid;

pub use auth::{ApiToken, Secret, TokenId};
pub use client::Client;
pub use error::{Error, ErrorKind, Target, storage_lock_timeout};
pub use form::{Form, PropertyString};
pub use homestak_base::id::{PveNode, VmId};
pub use http::{Config, DEFAULT_PORT, Http, Trust};
pub use limits::{Backoff, HostLimits, RateLimit, RetryPolicy};
pub use params::{
    ConfigUpdate, CreateVm, DeleteVm, Disk, DownloadUrl, IpConfig, Ipv4, Net, NodeConfigUpdate,
    PowerAction, Resize, TaskQuery, TaskSource, TokenOptions, VmOptions,
};
pub use recorder::{Answered, Observer, RecordedRequest};
#[cfg(feature = "testing")]
pub use recorder::{RecordedAnswer, Recorder};
pub use transport::{BoxFuture, Envelope, Request, Transport};
pub use types::{
    AgentInterface, ClusterResource, CreatedToken, NodeConfig, NodeEntry, NodeStatus, PowerState,
    QemuListEntry, ResourceKind, StorageContent, StorageEntry, TaskExit, TaskListEntry, TaskLog,
    TaskStatus, Version, VmConfig, VmStatus,
};
pub use upid::Upid;

/// What `GET /access/permissions` answers: path → privilege → propagate
/// flag (`1`/`0`).
pub type Permissions =
    std::collections::BTreeMap<String, std::collections::BTreeMap<String, serde_json::Value>>;

/// Result of a PVE call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The default body of every [`Api`] method.
fn not_implemented<'a, T: Send + 'a>(op: &'static str) -> BoxFuture<'a, Result<T>> {
    Box::pin(std::future::ready(Err(Error::NotImplemented { op })))
}

/// The PVE calls a VM controller makes. Dyn-compatible: methods return
/// boxed futures. `node` is a [`PveNode`] (`pve` in API paths), never a
/// manifest node; vmids are [`VmId`]s, in PVE's range by construction.
pub trait Api: Send + Sync {
    /// `GET /version`: also a cheap token check.
    fn version(&self) -> BoxFuture<'_, Result<Version>> {
        not_implemented("version")
    }

    /// `GET /access/permissions[?path=…]`: the calling token's privileges,
    /// path → privilege → propagate flag.
    fn permissions<'a>(&'a self, _path: Option<&'a str>) -> BoxFuture<'a, Result<Permissions>> {
        not_implemented("permissions")
    }

    /// `GET /nodes`.
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeEntry>>> {
        not_implemented("nodes")
    }

    /// `GET /nodes/{node}/status`.
    fn node_status<'a>(&'a self, _node: &'a PveNode) -> BoxFuture<'a, Result<NodeStatus>> {
        not_implemented("node_status")
    }

    /// `GET /nodes/{node}/config`: the node's notes and the config digest.
    fn node_config<'a>(&'a self, _node: &'a PveNode) -> BoxFuture<'a, Result<NodeConfig>> {
        not_implemented("node_config")
    }

    /// `PUT /nodes/{node}/config`: synchronous. With a `digest`, PVE
    /// refuses (500, [`ErrorKind::DigestMismatch`]) when the file changed
    /// since it was read.
    fn node_config_put<'a>(
        &'a self,
        _node: &'a PveNode,
        _update: &'a NodeConfigUpdate,
    ) -> BoxFuture<'a, Result<()>> {
        not_implemented("node_config_put")
    }

    /// `GET /cluster/resources[?type=…]`: the one bulk read per tier.
    fn cluster_resources(
        &self,
        _kind: Option<ResourceKind>,
    ) -> BoxFuture<'_, Result<Vec<ClusterResource>>> {
        not_implemented("cluster_resources")
    }

    /// `GET /cluster/nextid[?vmid=N]`: the next free vmid, or `wanted` if it
    /// is free (a taken one is an [`ErrorKind::AlreadyExists`] error).
    fn next_vmid(&self, _wanted: Option<VmId>) -> BoxFuture<'_, Result<VmId>> {
        not_implemented("next_vmid")
    }

    /// `GET /nodes/{node}/qemu`.
    fn qemu_list<'a>(&'a self, _node: &'a PveNode) -> BoxFuture<'a, Result<Vec<QemuListEntry>>> {
        not_implemented("qemu_list")
    }

    /// `POST /nodes/{node}/qemu` → `qmcreate` task.
    fn qemu_create<'a>(
        &'a self,
        _node: &'a PveNode,
        _vm: &'a CreateVm,
    ) -> BoxFuture<'a, Result<Upid>> {
        not_implemented("qemu_create")
    }

    /// `GET /nodes/{node}/qemu/{vmid}/config` (with pending changes applied).
    fn qemu_config<'a>(
        &'a self,
        _node: &'a PveNode,
        _vmid: VmId,
    ) -> BoxFuture<'a, Result<VmConfig>> {
        not_implemented("qemu_config")
    }

    /// `PUT /nodes/{node}/qemu/{vmid}/config`: synchronous.
    fn qemu_config_put<'a>(
        &'a self,
        _node: &'a PveNode,
        _vmid: VmId,
        _update: &'a ConfigUpdate,
    ) -> BoxFuture<'a, Result<()>> {
        not_implemented("qemu_config_put")
    }

    /// `POST /nodes/{node}/qemu/{vmid}/config` → `qmconfig` task, or `None`
    /// when `background_delay` was given and the task finished in time.
    fn qemu_config_post<'a>(
        &'a self,
        _node: &'a PveNode,
        _vmid: VmId,
        _update: &'a ConfigUpdate,
    ) -> BoxFuture<'a, Result<Option<Upid>>> {
        not_implemented("qemu_config_post")
    }

    /// `PUT /nodes/{node}/qemu/{vmid}/resize` → `resize` task (8.x; `None`
    /// on 6.x, which resized synchronously).
    fn qemu_resize<'a>(
        &'a self,
        _node: &'a PveNode,
        _vmid: VmId,
        _resize: &'a Resize,
    ) -> BoxFuture<'a, Result<Option<Upid>>> {
        not_implemented("qemu_resize")
    }

    /// `GET /nodes/{node}/qemu/{vmid}/status/current`.
    fn qemu_status<'a>(
        &'a self,
        _node: &'a PveNode,
        _vmid: VmId,
    ) -> BoxFuture<'a, Result<VmStatus>> {
        not_implemented("qemu_status")
    }

    /// `POST /nodes/{node}/qemu/{vmid}/status/{start|stop|shutdown|reboot}`.
    fn qemu_power<'a>(
        &'a self,
        _node: &'a PveNode,
        _vmid: VmId,
        _action: &'a PowerAction,
    ) -> BoxFuture<'a, Result<Upid>> {
        not_implemented("qemu_power")
    }

    /// `DELETE /nodes/{node}/qemu/{vmid}` → `qmdestroy` task.
    fn qemu_delete<'a>(
        &'a self,
        _node: &'a PveNode,
        _vmid: VmId,
        _options: &'a DeleteVm,
    ) -> BoxFuture<'a, Result<Upid>> {
        not_implemented("qemu_delete")
    }

    /// `GET /nodes/{node}/storage[?content=…]`.
    fn storage_list<'a>(
        &'a self,
        _node: &'a PveNode,
        _content: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<StorageEntry>>> {
        not_implemented("storage_list")
    }

    /// `GET /nodes/{node}/storage/{storage}/content[?content=…&vmid=…]`.
    fn storage_content<'a>(
        &'a self,
        _node: &'a PveNode,
        _storage: &'a str,
        _content: Option<&'a str>,
        _vmid: Option<VmId>,
    ) -> BoxFuture<'a, Result<Vec<StorageContent>>> {
        not_implemented("storage_content")
    }

    /// `POST /nodes/{node}/storage/{storage}/download-url` → `download` task.
    fn download_url<'a>(
        &'a self,
        _node: &'a PveNode,
        _storage: &'a str,
        _download: &'a DownloadUrl,
    ) -> BoxFuture<'a, Result<Upid>> {
        not_implemented("download_url")
    }

    /// `GET /nodes/{node}/tasks[?source=…&vmid=…&typefilter=…]`: the node's
    /// tasks, newest first.
    fn node_tasks<'a>(
        &'a self,
        _node: &'a PveNode,
        _query: &'a TaskQuery,
    ) -> BoxFuture<'a, Result<Vec<TaskListEntry>>> {
        not_implemented("node_tasks")
    }

    /// `GET /nodes/{upid.node}/tasks/{upid}/status`.
    fn task_status<'a>(&'a self, _upid: &'a Upid) -> BoxFuture<'a, Result<TaskStatus>> {
        not_implemented("task_status")
    }

    /// `GET /nodes/{upid.node}/tasks/{upid}/log?start=&limit=`.
    fn task_log<'a>(
        &'a self,
        _upid: &'a Upid,
        _start: u64,
        _limit: u64,
    ) -> BoxFuture<'a, Result<TaskLog>> {
        not_implemented("task_log")
    }

    /// `GET /nodes/{node}/qemu/{vmid}/agent/network-get-interfaces`. Fails
    /// with [`ErrorKind::AgentNotRunning`] while the guest boots.
    fn agent_network_interfaces<'a>(
        &'a self,
        _node: &'a PveNode,
        _vmid: VmId,
    ) -> BoxFuture<'a, Result<Vec<AgentInterface>>> {
        not_implemented("agent_network_interfaces")
    }

    /// `POST /access/users/{userid}/token/{tokenid}`: the only answer that
    /// carries the token secret.
    fn token_create<'a>(
        &'a self,
        _userid: &'a str,
        _tokenid: &'a str,
        _options: &'a TokenOptions,
    ) -> BoxFuture<'a, Result<CreatedToken>> {
        not_implemented("token_create")
    }
}
