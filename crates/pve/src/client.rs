//! [`Client`]: the [`Api`] over any [`Transport`].
//!
//! Each method builds one [`Request`] (its endpoint's path template and the
//! values for it, parameters in a [`Form`], the vmid for error messages)
//! and decodes `data` into the typed response. The same code runs against
//! real PVE, the simulator and the scripted fake, so request shapes are
//! tested once.

use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::error::Error;
use super::form::Form;
use super::http::{Config, Http};
use super::params::{
    ConfigUpdate, CreateVm, DeleteVm, DownloadUrl, NodeConfigUpdate, PowerAction, Resize,
    TaskQuery, TokenOptions,
};
use super::transport::{BoxFuture, Envelope, Request, Transport};
use super::types::{
    AgentInterface, AgentResult, ClusterResource, CreatedToken, NodeConfig, NodeEntry, NodeStatus,
    QemuListEntry, ResourceKind, StorageContent, StorageEntry, TaskListEntry, TaskLog, TaskLogLine,
    TaskStatus, Version, VmConfig, VmStatus,
};
use super::upid::Upid;
use super::{Api, Permissions, Result};
use homestak_base::id::{PveNode, VmId};

/// A PVE API client for one host. Cheap to clone; clones share the
/// transport and with it the host's concurrency and rate limits.
#[derive(Clone)]
pub struct Client {
    transport: Arc<dyn Transport>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("host", &self.transport.host())
            .finish()
    }
}

/// nextid's `data` is a JSON string (`"100"`) although declared integer.
#[derive(serde::Deserialize)]
struct LenientVmId(#[serde(deserialize_with = "super::de::vmid")] VmId);

impl Client {
    /// A client over HTTPS.
    pub fn new(config: Config) -> Result<Self> {
        Ok(Client::with_transport(Arc::new(Http::new(config)?)))
    }

    /// A client over any transport (the scripted fake, a test double).
    pub fn with_transport(transport: Arc<dyn Transport>) -> Self {
        Client { transport }
    }

    /// `host:port` of the PVE API.
    pub fn host(&self) -> &str {
        self.transport.host()
    }

    /// Sends a request and returns the raw envelope. For calls the typed
    /// API does not cover yet.
    pub async fn raw(&self, request: &Request) -> Result<Envelope> {
        self.transport.send(request).await
    }

    async fn call<T: DeserializeOwned>(&self, request: Request) -> Result<T> {
        let envelope = self.transport.send(&request).await?;
        self.decode(&request, envelope.data)
    }

    fn decode<T: DeserializeOwned>(&self, request: &Request, data: serde_json::Value) -> Result<T> {
        serde_json::from_value(data).map_err(|source| Error::Decode {
            target: request.target(self.transport.host()),
            source,
        })
    }
}

/// `qemu_power`'s endpoint: PVE routes each action separately.
fn power_template(action: &PowerAction) -> &'static str {
    match action {
        PowerAction::Start => "/nodes/{node}/qemu/{vmid}/status/start",
        PowerAction::Stop { .. } => "/nodes/{node}/qemu/{vmid}/status/stop",
        PowerAction::Shutdown { .. } => "/nodes/{node}/qemu/{vmid}/status/shutdown",
        PowerAction::Reboot { .. } => "/nodes/{node}/qemu/{vmid}/status/reboot",
    }
}

impl Api for Client {
    fn version(&self) -> BoxFuture<'_, Result<Version>> {
        Box::pin(self.call(Request::get("/version", &[])))
    }

    fn permissions<'a>(&'a self, path: Option<&'a str>) -> BoxFuture<'a, Result<Permissions>> {
        let mut form = Form::new();
        form.push_opt("path", path);
        Box::pin(self.call(Request::get("/access/permissions", &[]).with_form(form)))
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeEntry>>> {
        Box::pin(self.call(Request::get("/nodes", &[])))
    }

    fn node_status<'a>(&'a self, node: &'a PveNode) -> BoxFuture<'a, Result<NodeStatus>> {
        Box::pin(self.call(Request::get("/nodes/{node}/status", &[node.as_str()])))
    }

    fn node_config<'a>(&'a self, node: &'a PveNode) -> BoxFuture<'a, Result<NodeConfig>> {
        Box::pin(self.call(Request::get("/nodes/{node}/config", &[node.as_str()])))
    }

    fn node_config_put<'a>(
        &'a self,
        node: &'a PveNode,
        update: &'a NodeConfigUpdate,
    ) -> BoxFuture<'a, Result<()>> {
        let req = Request::put("/nodes/{node}/config", &[node.as_str()]).with_form(update.form());
        Box::pin(async move {
            // PUT answers {"data":null}.
            self.transport.send(&req).await.map(|_| ())
        })
    }

    fn cluster_resources(
        &self,
        kind: Option<ResourceKind>,
    ) -> BoxFuture<'_, Result<Vec<ClusterResource>>> {
        let mut form = Form::new();
        form.push_opt("type", kind.map(ResourceKind::as_str));
        Box::pin(self.call(Request::get("/cluster/resources", &[]).with_form(form)))
    }

    fn next_vmid(&self, wanted: Option<VmId>) -> BoxFuture<'_, Result<VmId>> {
        let mut form = Form::new();
        form.push_opt("vmid", wanted);
        let mut req = Request::get("/cluster/nextid", &[]).with_form(form);
        req.vmid = wanted;
        Box::pin(async move {
            let LenientVmId(vmid) = self.call(req).await?;
            Ok(vmid)
        })
    }

    fn qemu_list<'a>(&'a self, node: &'a PveNode) -> BoxFuture<'a, Result<Vec<QemuListEntry>>> {
        Box::pin(self.call(Request::get("/nodes/{node}/qemu", &[node.as_str()])))
    }

    fn qemu_create<'a>(
        &'a self,
        node: &'a PveNode,
        vm: &'a CreateVm,
    ) -> BoxFuture<'a, Result<Upid>> {
        let req = Request::post("/nodes/{node}/qemu", &[node.as_str()])
            .with_form(vm.form())
            .for_vmid(vm.vmid);
        Box::pin(self.call(req))
    }

    fn qemu_config<'a>(&'a self, node: &'a PveNode, vmid: VmId) -> BoxFuture<'a, Result<VmConfig>> {
        let req = Request::get(
            "/nodes/{node}/qemu/{vmid}/config",
            &[node.as_str(), &vmid.to_string()],
        )
        .for_vmid(vmid);
        Box::pin(self.call(req))
    }

    fn qemu_config_put<'a>(
        &'a self,
        node: &'a PveNode,
        vmid: VmId,
        update: &'a ConfigUpdate,
    ) -> BoxFuture<'a, Result<()>> {
        let req = Request::put(
            "/nodes/{node}/qemu/{vmid}/config",
            &[node.as_str(), &vmid.to_string()],
        )
        .with_form(update.form(false))
        .for_vmid(vmid);
        Box::pin(async move {
            // PUT answers {"data":null}; anything else is ignored on purpose.
            self.transport.send(&req).await.map(|_| ())
        })
    }

    fn qemu_config_post<'a>(
        &'a self,
        node: &'a PveNode,
        vmid: VmId,
        update: &'a ConfigUpdate,
    ) -> BoxFuture<'a, Result<Option<Upid>>> {
        let req = Request::post(
            "/nodes/{node}/qemu/{vmid}/config",
            &[node.as_str(), &vmid.to_string()],
        )
        .with_form(update.form(true))
        .for_vmid(vmid);
        Box::pin(self.call(req))
    }

    fn qemu_resize<'a>(
        &'a self,
        node: &'a PveNode,
        vmid: VmId,
        resize: &'a Resize,
    ) -> BoxFuture<'a, Result<Option<Upid>>> {
        let req = Request::put(
            "/nodes/{node}/qemu/{vmid}/resize",
            &[node.as_str(), &vmid.to_string()],
        )
        .with_form(resize.form())
        .for_vmid(vmid);
        Box::pin(self.call(req))
    }

    fn qemu_status<'a>(&'a self, node: &'a PveNode, vmid: VmId) -> BoxFuture<'a, Result<VmStatus>> {
        let req = Request::get(
            "/nodes/{node}/qemu/{vmid}/status/current",
            &[node.as_str(), &vmid.to_string()],
        )
        .for_vmid(vmid);
        Box::pin(self.call(req))
    }

    fn qemu_power<'a>(
        &'a self,
        node: &'a PveNode,
        vmid: VmId,
        action: &'a PowerAction,
    ) -> BoxFuture<'a, Result<Upid>> {
        let req = Request::post(power_template(action), &[node.as_str(), &vmid.to_string()])
            .with_form(action.form())
            .for_vmid(vmid);
        Box::pin(self.call(req))
    }

    fn qemu_delete<'a>(
        &'a self,
        node: &'a PveNode,
        vmid: VmId,
        options: &'a DeleteVm,
    ) -> BoxFuture<'a, Result<Upid>> {
        let req = Request::delete(
            "/nodes/{node}/qemu/{vmid}",
            &[node.as_str(), &vmid.to_string()],
        )
        .with_form(options.form())
        .for_vmid(vmid);
        Box::pin(self.call(req))
    }

    fn storage_list<'a>(
        &'a self,
        node: &'a PveNode,
        content: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<StorageEntry>>> {
        let mut form = Form::new();
        form.push_opt("content", content);
        Box::pin(self.call(Request::get("/nodes/{node}/storage", &[node.as_str()]).with_form(form)))
    }

    fn storage_content<'a>(
        &'a self,
        node: &'a PveNode,
        storage: &'a str,
        content: Option<&'a str>,
        vmid: Option<VmId>,
    ) -> BoxFuture<'a, Result<Vec<StorageContent>>> {
        let mut form = Form::new();
        form.push_opt("content", content).push_opt("vmid", vmid);
        let req = Request::get(
            "/nodes/{node}/storage/{storage}/content",
            &[node.as_str(), storage],
        )
        .with_form(form);
        Box::pin(self.call(req))
    }

    fn download_url<'a>(
        &'a self,
        node: &'a PveNode,
        storage: &'a str,
        download: &'a DownloadUrl,
    ) -> BoxFuture<'a, Result<Upid>> {
        let req = Request::post(
            "/nodes/{node}/storage/{storage}/download-url",
            &[node.as_str(), storage],
        )
        .with_form(download.form());
        Box::pin(self.call(req))
    }

    fn node_tasks<'a>(
        &'a self,
        node: &'a PveNode,
        query: &'a TaskQuery,
    ) -> BoxFuture<'a, Result<Vec<TaskListEntry>>> {
        let mut req = Request::get("/nodes/{node}/tasks", &[node.as_str()]).with_form(query.form());
        req.vmid = query.vmid;
        Box::pin(self.call(req))
    }

    fn task_status<'a>(&'a self, upid: &'a Upid) -> BoxFuture<'a, Result<TaskStatus>> {
        let mut req = Request::get(
            "/nodes/{node}/tasks/{upid}/status",
            &[upid.node(), upid.as_str()],
        );
        req.vmid = upid.vmid();
        Box::pin(self.call(req))
    }

    fn task_log<'a>(
        &'a self,
        upid: &'a Upid,
        start: u64,
        limit: u64,
    ) -> BoxFuture<'a, Result<TaskLog>> {
        let mut form = Form::new();
        form.push("start", start.to_string())
            .push("limit", limit.to_string());
        let mut req = Request::get(
            "/nodes/{node}/tasks/{upid}/log",
            &[upid.node(), upid.as_str()],
        )
        .with_form(form);
        req.vmid = upid.vmid();
        Box::pin(async move {
            let envelope = self.transport.send(&req).await?;
            let lines: Vec<TaskLogLine> = self.decode(&req, envelope.data)?;
            Ok(TaskLog {
                total: envelope.total,
                lines,
            })
        })
    }

    fn agent_network_interfaces<'a>(
        &'a self,
        node: &'a PveNode,
        vmid: VmId,
    ) -> BoxFuture<'a, Result<Vec<AgentInterface>>> {
        let req = Request::get(
            "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces",
            &[node.as_str(), &vmid.to_string()],
        )
        .for_vmid(vmid);
        Box::pin(async move {
            let AgentResult { result } = self.call(req).await?;
            Ok(result)
        })
    }

    fn token_create<'a>(
        &'a self,
        userid: &'a str,
        tokenid: &'a str,
        options: &'a TokenOptions,
    ) -> BoxFuture<'a, Result<CreatedToken>> {
        let req = Request::post("/access/users/{userid}/token/{tokenid}", &[userid, tokenid])
            .with_form(options.form());
        Box::pin(self.call(req))
    }
}
