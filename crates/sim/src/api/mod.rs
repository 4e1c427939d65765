//! The `/api2/json` handlers, one file per concern. A handler gets
//! validated parameters (see [`homestak_pve::schema`]) and returns data for the
//! `{"data": …}` envelope or an [`Error`] with PVE's status and message.

mod access;
mod cluster;
mod disks;
mod network;
mod nodeconfig;
mod power;
mod qemu;
mod storage;
mod tasks;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::runtime::Shared;
use homestak_pve::schema::{Endpoint, Op, Params};

/// An API error: HTTP status, PVE's message (the reason phrase is its
/// first line), and per-parameter texts for 400s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub status: u16,
    pub message: String,
    pub errors: Option<BTreeMap<String, String>>,
}

impl Error {
    /// A handler `die`: 500 with the message.
    pub fn internal(message: impl Into<String>) -> Self {
        Error {
            status: 500,
            message: message.into(),
            errors: None,
        }
    }

    /// 400 `Parameter verification failed.` with texts per parameter.
    pub fn params(errors: BTreeMap<String, String>) -> Self {
        Error {
            status: 400,
            message: "Parameter verification failed.".into(),
            errors: Some(errors),
        }
    }

    /// 400 for one parameter (`raise_param_exc`).
    pub fn param(name: &str, text: impl Into<String>) -> Self {
        Self::params(BTreeMap::from([(name.to_string(), text.into())]))
    }

    pub fn status(status: u16, message: impl Into<String>) -> Self {
        Error {
            status,
            message: message.into(),
            errors: None,
        }
    }
}

/// What a handler answers.
#[derive(Debug)]
pub enum Reply {
    Data(Value),
    /// Data plus the envelope's `total` (task lists, task logs).
    WithTotal(Value, u64),
    /// Data plus the envelope's `changes` (pending network changes).
    WithChanges(Value, String),
}

/// Who is calling, for UPIDs and token endpoints.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub shared: Arc<Shared>,
    /// `root@pam` (ticket) or `root@pam!homestak` (token).
    pub user: String,
}

impl Ctx {
    pub fn node<'a>(&self, p: &'a Params) -> &'a str {
        p.str("node").unwrap_or_default()
    }

    pub fn vmid(&self, p: &Params) -> u32 {
        p.int("vmid")
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or_default()
    }
}

/// Serves one validated request.
pub async fn handle(ctx: &Ctx, endpoint: &'static Endpoint, p: &Params) -> Result<Reply, Error> {
    match endpoint.op {
        Op::Version => cluster::version(ctx),
        Op::Permissions => access::permissions(ctx, p),
        Op::Nodes => cluster::nodes(ctx),
        Op::NodeStatus => cluster::node_status(ctx, p),
        Op::NodeConfigGet => nodeconfig::get(ctx, p),
        Op::NodeConfigPut => nodeconfig::put(ctx, p),
        Op::ClusterResources => cluster::resources(ctx, p),
        Op::NextId => cluster::next_id(ctx, p),
        Op::QemuList => qemu::list(ctx, p),
        Op::QemuCreate => qemu::create(ctx, endpoint, p).await,
        Op::QemuIndex => qemu::index(ctx, p),
        Op::QemuDelete => qemu::destroy(ctx, p),
        Op::ConfigGet => qemu::config_get(ctx, p),
        Op::ConfigPut => qemu::config_update(ctx, endpoint, p, true).await,
        Op::ConfigPost => qemu::config_update(ctx, endpoint, p, false).await,
        Op::Resize => disks::resize(ctx, p),
        Op::Clone => disks::clone(ctx, p),
        Op::Template => disks::template(ctx, p),
        Op::StatusIndex => power::index(ctx, p),
        Op::StatusCurrent => power::current(ctx, p),
        Op::Start => power::start(ctx, p),
        Op::Stop => power::stop(ctx, p),
        Op::Shutdown => power::shutdown(ctx, p),
        Op::Reboot => power::reboot(ctx, p),
        Op::AgentIndex => power::agent_index(ctx, p),
        Op::AgentNetwork => power::agent_network(ctx, p),
        Op::StorageList => storage::list(ctx, p),
        Op::StorageStatus => storage::status(ctx, p),
        Op::StorageContent => storage::content(ctx, p),
        Op::DownloadUrl => storage::download_url(ctx, p),
        Op::TaskList => tasks::list(ctx, p),
        Op::TaskIndex => tasks::index(ctx, p),
        Op::TaskStatus => tasks::status(ctx, p),
        Op::TaskLog => tasks::log(ctx, p),
        Op::TaskStop => tasks::stop(ctx, p),
        Op::TicketGet => Ok(Reply::Data(Value::Null)),
        Op::TicketPost => access::ticket(ctx, p),
        Op::TokenList => access::token_list(ctx, p),
        Op::TokenGet => access::token_get(ctx, p),
        Op::TokenCreate => access::token_create(ctx, p),
        Op::TokenUpdate => access::token_update(ctx, p),
        Op::TokenDelete => access::token_delete(ctx, p),
        Op::NetworkList => network::list(ctx, p),
        Op::NetworkCreate => network::create(ctx, endpoint, p),
        Op::NetworkApply => network::apply(ctx, p),
        Op::NetworkRevert => network::revert(ctx, p),
        Op::NetworkIfaceGet => network::get(ctx, p),
        Op::NetworkIfaceDelete => network::delete(ctx, p),
    }
}

/// `[{"subdir": …}]` for index endpoints.
fn subdirs(names: &[&str]) -> Reply {
    Reply::Data(Value::Array(
        names
            .iter()
            .map(|n| serde_json::json!({ "subdir": n }))
            .collect(),
    ))
}
