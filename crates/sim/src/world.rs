//! The simulated world: nodes with storages and network, VMs, tasks and API
//! tokens. Plain data (serializable for `--state`), mutated under one short
//! `std::sync::Mutex` that is never held across an await.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::Secret;
use super::api::Error;
use super::config::Config;
use super::storage::{Storage, split_volid};
use super::tasks::{Task, Upid};
use super::vm::Vm;

/// Tasks kept for the task list (PVE keeps an archive; we keep the newest).
const TASK_HISTORY: usize = 4000;
/// How far the list may grow past [`TASK_HISTORY`] before it is trimmed.
const TASK_SLACK: usize = 500;

/// One node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub cpus: u32,
    pub memory: u64,
    pub storages: BTreeMap<String, Storage>,
    /// Active interfaces (`/etc/network/interfaces`).
    pub network: BTreeMap<String, Map<String, Value>>,
    /// Pending interfaces (`interfaces.new`), applied by `PUT …/network`.
    pub network_pending: Option<BTreeMap<String, Map<String, Value>>>,
    /// The text of `/etc/pve/nodes/<node>/config` (notes and options; see
    /// [`crate::nodeconfig`]); empty on a fresh node.
    #[serde(default)]
    pub config: String,
}

/// An API token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Token {
    /// Persisted in the state file (mode 0600), as PVE keeps its tokens.
    #[serde(serialize_with = "Secret::serialize_exposed")]
    pub secret: Secret,
    pub comment: Option<String>,
    pub expire: i64,
    pub privsep: bool,
}

/// Everything a simulator remembers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct World {
    pub nodes: BTreeMap<String, Node>,
    pub vms: BTreeMap<u32, Vm>,
    pub tasks: Vec<Task>,
    /// Keyed by full token id `user@realm!tokenid`.
    pub tokens: BTreeMap<String, Token>,
    #[serde(serialize_with = "Secret::serialize_exposed")]
    pub root_password: Secret,
    /// Key signing tickets and CSRF tokens (hex).
    #[serde(serialize_with = "Secret::serialize_exposed")]
    pub ticket_key: Secret,
    pub next_pid: u32,
    /// Epoch seconds when the simulated nodes booted.
    pub booted_at: i64,
}

fn iface(kind: &str, extra: Value) -> Map<String, Value> {
    let mut m = match json!({
        "type": kind, "active": 1, "autostart": 1, "method": "manual", "method6": "manual",
        "families": ["inet"], "priority": 3,
    }) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    if let Value::Object(e) = extra {
        m.extend(e);
    }
    m
}

impl World {
    /// A fresh world from the configuration.
    pub fn from_config(
        config: &Config,
        now: i64,
        token_secret: Secret,
        root_password: Secret,
        ticket_key: Secret,
    ) -> World {
        let mut nodes = BTreeMap::new();
        for n in &config.nodes {
            let mut storages: BTreeMap<String, Storage> = n
                .storages
                .iter()
                .map(|s| (s.id.clone(), Storage::from_config(s)))
                .collect();
            for img in &config.images {
                if img.node.as_ref().is_some_and(|want| *want != n.name) {
                    continue;
                }
                let Some((sid, name)) = split_volid(&img.volid) else {
                    continue;
                };
                if let Some(s) = storages.get_mut(sid) {
                    let pve = img.pve.unwrap_or_else(|| {
                        name.rsplit('/').next().is_some_and(|f| f.contains("-pve"))
                    });
                    s.add_file(
                        name,
                        super::storage::vtype_of(name),
                        img.size.0,
                        img.virtual_size.map(|v| v.0),
                        pve,
                        now,
                    );
                }
            }
            let mut network = BTreeMap::new();
            network.insert(
                "ens18".to_string(),
                iface("eth", json!({"iface": "ens18", "exists": 1})),
            );
            network.insert(
                "vmbr0".to_string(),
                iface(
                    "bridge",
                    json!({"iface": "vmbr0", "method": "static", "cidr": "192.0.2.10/24",
                           "address": "192.0.2.10", "netmask": "24", "gateway": "192.0.2.1",
                           "bridge_ports": "ens18", "bridge_stp": "off", "bridge_fd": "0"}),
                ),
            );
            nodes.insert(
                n.name.clone(),
                Node {
                    name: n.name.clone(),
                    cpus: n.cpus,
                    memory: n.memory.0,
                    storages,
                    network,
                    network_pending: None,
                    config: String::new(),
                },
            );
        }
        let mut tokens = BTreeMap::new();
        if config.initial_token {
            tokens.insert(
                config.token_id.clone(),
                Token {
                    secret: token_secret,
                    comment: Some("homestak sim".into()),
                    expire: 0,
                    privsep: false,
                },
            );
        }
        World {
            nodes,
            vms: BTreeMap::new(),
            tasks: Vec::new(),
            tokens,
            root_password,
            ticket_key,
            next_pid: 1000,
            booted_at: now,
        }
    }

    /// Reads a persisted world.
    pub fn load(path: &Path) -> Result<World, super::Error> {
        let text = std::fs::read(path).map_err(|source| super::Error::ReadState {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|source| super::Error::ParseState {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Writes the world atomically (temporary file + rename).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        super::write_private(path, &text)
    }

    /// The node, or PVE's answer for a node name it cannot resolve.
    pub fn node(&self, name: &str) -> Result<&Node, Error> {
        self.nodes.get(name).ok_or_else(|| unknown_node(name))
    }

    pub fn node_mut(&mut self, name: &str) -> Result<&mut Node, Error> {
        self.nodes.get_mut(name).ok_or_else(|| unknown_node(name))
    }

    /// The VM `vmid` on `node`, or PVE's missing-config error.
    pub fn vm(&self, node: &str, vmid: u32) -> Result<&Vm, Error> {
        self.node(node)?;
        self.vms
            .get(&vmid)
            .filter(|v| v.node == node)
            .ok_or_else(|| missing_config(node, vmid))
    }

    pub fn vm_mut(&mut self, node: &str, vmid: u32) -> Result<&mut Vm, Error> {
        self.node(node)?;
        self.vms
            .get_mut(&vmid)
            .filter(|v| v.node == node)
            .ok_or_else(|| missing_config(node, vmid))
    }

    pub fn storage(&self, node: &str, id: &str) -> Result<&Storage, Error> {
        self.node(node)?
            .storages
            .get(id)
            .ok_or_else(|| Error::internal(format!("storage '{id}' does not exist")))
    }

    pub fn storage_mut(&mut self, node: &str, id: &str) -> Result<&mut Storage, Error> {
        self.node_mut(node)?
            .storages
            .get_mut(id)
            .ok_or_else(|| Error::internal(format!("storage '{id}' does not exist")))
    }

    /// The lowest free VMID from 100: the first gap in the ordered ids,
    /// one walk of the keys without lookups.
    pub fn next_free_vmid(&self) -> u32 {
        let mut id = 100;
        for &taken in self.vms.range(100..).map(|(k, _)| k) {
            if taken != id {
                break;
            }
            id += 1;
        }
        id
    }

    /// Whether a VM has address `ip` (a scan, but without allocating).
    pub fn address_in_use(&self, ip: Ipv4Addr) -> bool {
        self.vms.values().any(|v| v.address == ip)
    }

    /// A free address for a new VM from `pool`, next to the last one
    /// handed out when it is free.
    pub fn allocate_address(
        &self,
        pool: &mut super::addr::AddrPool,
    ) -> Result<Ipv4Addr, super::addr::ClaimError> {
        pool.allocate_next(|ip| self.address_in_use(ip), || self.used_addresses())
    }

    pub fn used_addresses(&self) -> BTreeSet<Ipv4Addr> {
        self.vms.values().map(|v| v.address).collect()
    }

    /// Registers a running task and returns its UPID.
    pub fn new_task(&mut self, node: &str, kind: &str, id: &str, user: &str, now: i64) -> String {
        self.next_pid = self.next_pid.wrapping_add(1).max(1000);
        // pstart counts clock ticks (100/s) since boot.
        let pstart = ((now - self.booted_at).max(0) as u64) * 100 + u64::from(self.next_pid % 100);
        let upid = Upid {
            node: node.to_string(),
            pid: self.next_pid,
            pstart,
            starttime: now,
            kind: kind.to_string(),
            id: id.to_string(),
            user: user.to_string(),
        };
        let text = upid.encode();
        self.tasks.push(Task {
            upid,
            exitstatus: None,
            endtime: None,
            log: Vec::new(),
        });
        // Trimmed in batches, so that a full history costs one pass per
        // TASK_SLACK new tasks rather than one per task.
        if self.tasks.len() > TASK_HISTORY + TASK_SLACK {
            // Drop the oldest finished tasks first.
            let excess = self.tasks.len() - TASK_HISTORY;
            let mut dropped = 0;
            self.tasks.retain(|t| {
                if dropped < excess && !t.running() {
                    dropped += 1;
                    false
                } else {
                    true
                }
            });
        }
        text
    }

    pub fn task(&self, upid: &str) -> Option<&Task> {
        self.task_index(upid).map(|i| &self.tasks[i])
    }

    pub fn task_mut(&mut self, upid: &str) -> Option<&mut Task> {
        self.task_index(upid).map(|i| &mut self.tasks[i])
    }

    /// Where task `upid` is in the list. Tasks are appended in the order
    /// of their (start time, pid), so a binary search finds one; a list
    /// out of that order (a clock set back, a pid wrap) falls back to a
    /// scan. Either way without encoding every UPID; the one found must
    /// spell `upid` exactly (PVE looks tasks up by the text).
    fn task_index(&self, upid: &str) -> Option<usize> {
        let Some(want) = Upid::decode(upid) else {
            // Not in PVE's format (a test world booted at epoch 0 has
            // 10-digit pstarts): compare the text.
            return self.tasks.iter().rposition(|t| t.upid.encode() == upid);
        };
        let key = |u: &Upid| (u.starttime, u.pid);
        let i = match self
            .tasks
            .binary_search_by_key(&key(&want), |t| key(&t.upid))
        {
            Ok(i) if self.tasks[i].upid == want => i,
            _ => self.tasks.iter().rposition(|t| t.upid == want)?,
        };
        (self.tasks[i].upid.encode() == upid).then_some(i)
    }

    /// Marks tasks that were running when the world was saved as PVE does
    /// after a crash.
    pub fn interrupt_running_tasks(&mut self, now: i64) {
        for t in self.tasks.iter_mut().filter(|t| t.running()) {
            t.exitstatus = Some("unexpected status".into());
            t.endtime = Some(now);
        }
    }

    /// After the host lost power: every VM is off, then those with
    /// `onboot: 1` start again (their guest boots `boot_ms` later), as
    /// PVE's `pve-guests` service does at boot.
    pub fn power_cycle(&mut self, now_ms: i64, boot_ms: i64) {
        let mut pid = self.next_pid;
        for vm in self.vms.values_mut() {
            vm.power = super::vm::Power::Stopped;
            vm.started_at = None;
            vm.pid = None;
            vm.agent_ready_at = None;
            if vm.config.get("onboot").is_some_and(|v| v == "1") && !vm.is_template() {
                pid = pid.wrapping_add(1).max(1000);
                vm.power = super::vm::Power::Running;
                vm.started_at = Some(now_ms);
                vm.pid = Some(pid);
                vm.agent_ready_at = Some(now_ms + boot_ms);
            }
        }
        self.next_pid = pid;
    }

    /// Removes a volume from its storage; unknown volumes are ignored.
    pub fn free_volume(&mut self, node: &str, volid: &str) {
        if let Some((sid, name)) = split_volid(volid)
            && let Ok(s) = self.storage_mut(node, sid)
        {
            s.volumes.remove(name);
        }
    }
}

/// A missing VM config, as PVE words it.
pub fn missing_config(node: &str, vmid: u32) -> Error {
    Error::internal(format!(
        "Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist"
    ))
}

/// A node name PVE cannot resolve falls back to DNS and fails.
fn unknown_node(name: &str) -> Error {
    Error::internal(format!(
        "hostname lookup '{name}' failed - failed to get address info for: {name}: Name or service not known"
    ))
}
