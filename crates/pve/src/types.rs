//! Typed PVE responses.
//!
//! Shapes follow NOTES §7 and the recorded exchanges; every numeric field
//! goes through the `de` helpers because PVE's JSON types follow Perl scalar
//! state. Unknown fields are ignored, so newer PVE versions decode too.
//! Only fields a controller reads are typed; a VM config keeps all its
//! entries in a map since keys are open-ended (`scsi0`…`scsi30`, `net0`…).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::auth::Secret;
use super::de;
use super::form::{PropertyString, decode_sshkeys, tag_set};
use super::upid::Upid;

/// `GET /version`.
#[derive(Clone, Debug, Deserialize)]
pub struct Version {
    /// Full pve-manager version, e.g. `8.4.1` (`6.2-4` on old hosts).
    pub version: String,
    /// `major.minor`.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub release: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub repoid: Option<String>,
}

impl Version {
    /// The major version (`8` for `8.4.1`).
    pub fn major(&self) -> Option<u32> {
        self.version
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|m| m.parse().ok())
    }
}

/// One entry of `GET /nodes`.
#[derive(Clone, Debug, Deserialize)]
pub struct NodeEntry {
    pub node: String,
    /// `online`, `offline` or `unknown`.
    #[serde(default)]
    pub status: String,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub cpu: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub maxcpu: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub mem: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub maxmem: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub uptime: Option<u64>,
    /// The node certificate's SHA-256 fingerprint, `AA:BB:…`.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub ssl_fingerprint: Option<String>,
}

/// `GET /nodes/{node}/status` (the fields a reconciler uses).
#[derive(Clone, Debug, Deserialize)]
pub struct NodeStatus {
    #[serde(default, deserialize_with = "de::opt_string")]
    pub pveversion: Option<String>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub cpu: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub uptime: Option<u64>,
    #[serde(default)]
    pub cpuinfo: Option<CpuInfo>,
    #[serde(default)]
    pub memory: Option<Usage>,
    #[serde(default)]
    pub rootfs: Option<Usage>,
}

/// CPU facts of a node.
#[derive(Clone, Debug, Deserialize)]
pub struct CpuInfo {
    #[serde(default, deserialize_with = "de::opt_u32")]
    pub cores: Option<u32>,
    #[serde(default, deserialize_with = "de::opt_u32")]
    pub cpus: Option<u32>,
    #[serde(default, deserialize_with = "de::opt_u32")]
    pub sockets: Option<u32>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub model: Option<String>,
}

/// Total/used/free bytes.
#[derive(Clone, Debug, Deserialize)]
pub struct Usage {
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub total: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub used: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub free: Option<u64>,
}

/// The `type=` filter of `GET /cluster/resources`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    /// QEMU and LXC guests.
    Vm,
    Storage,
    Node,
    Sdn,
}

impl ResourceKind {
    /// The query value.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Vm => "vm",
            ResourceKind::Storage => "storage",
            ResourceKind::Node => "node",
            ResourceKind::Sdn => "sdn",
        }
    }
}

/// One entry of `GET /cluster/resources`: a guest, node, storage, pool or
/// SDN zone; which fields are set depends on `kind`.
#[derive(Clone, Debug, Deserialize)]
pub struct ClusterResource {
    /// `qemu/100`, `lxc/101`, `node/pve`, `storage/pve/local`, …
    pub id: String,
    /// `qemu`, `lxc`, `node`, `storage`, `pool`, `sdn`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub node: Option<String>,
    #[serde(default, deserialize_with = "de::opt_u32")]
    pub vmid: Option<u32>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub name: Option<String>,
    /// Guests: `running`/`stopped`; nodes: `online`/…; storage: `available`/…
    #[serde(default, deserialize_with = "de::opt_string")]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "de::flag")]
    pub template: bool,
    /// `;`-joined, normalized by PVE.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub tags: Option<String>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub maxcpu: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub maxmem: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub mem: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub maxdisk: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub disk: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub uptime: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub lock: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub pool: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub hastate: Option<String>,
    /// Storage entries: the storage id.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub storage: Option<String>,
    /// Storage entries: allowed content, comma-separated.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub content: Option<String>,
    /// Storage entries: the plugin type (`dir`, `lvmthin`, …).
    #[serde(default, deserialize_with = "de::opt_string")]
    pub plugintype: Option<String>,
    #[serde(default, deserialize_with = "de::flag")]
    pub shared: bool,
}

impl ClusterResource {
    /// Whether this is a QEMU VM.
    pub fn is_qemu(&self) -> bool {
        self.kind == "qemu"
    }

    /// The tags as a normalized set.
    pub fn tag_set(&self) -> BTreeSet<String> {
        self.tags.as_deref().map(tag_set).unwrap_or_default()
    }
}

/// One entry of `GET /nodes/{node}/qemu`.
#[derive(Clone, Debug, Deserialize)]
pub struct QemuListEntry {
    #[serde(deserialize_with = "de::u32")]
    pub vmid: u32,
    #[serde(default)]
    pub status: String,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub tags: Option<String>,
    #[serde(default, deserialize_with = "de::flag")]
    pub template: bool,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub lock: Option<String>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub maxmem: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub maxdisk: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub cpus: Option<f64>,
}

/// Power state of a VM as the reconciler sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PowerState {
    Running,
    /// The QEMU process runs but the guest is paused or suspended.
    Paused,
    Stopped,
    Unknown,
}

/// `GET /nodes/{node}/qemu/{vmid}/status/current`.
#[derive(Clone, Debug, Deserialize)]
pub struct VmStatus {
    #[serde(default, deserialize_with = "de::opt_u32")]
    pub vmid: Option<u32>,
    /// The process state: `running` or `stopped`.
    pub status: String,
    /// The guest state as QMP reports it (`running`, `paused`, `prelaunch`, …).
    #[serde(default, deserialize_with = "de::opt_string")]
    pub qmpstatus: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub uptime: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u32")]
    pub pid: Option<u32>,
    /// Whether the config enables the guest agent.
    #[serde(default, deserialize_with = "de::flag")]
    pub agent: bool,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub cpus: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub maxmem: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub maxdisk: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub lock: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub tags: Option<String>,
    #[serde(default, deserialize_with = "de::flag")]
    pub template: bool,
}

impl VmStatus {
    /// Running, paused or stopped, from `status` and `qmpstatus`.
    pub fn power(&self) -> PowerState {
        match (self.status.as_str(), self.qmpstatus.as_deref()) {
            ("running", Some("paused" | "suspended" | "prelaunch")) => PowerState::Paused,
            ("running", _) => PowerState::Running,
            ("stopped", _) => PowerState::Stopped,
            _ => PowerState::Unknown,
        }
    }
}

/// `GET /nodes/{node}/config`: the node's options (`/etc/pve/nodes/<node>/config`).
///
/// PVE answers `{}` for a node whose config file is empty or missing: no
/// `digest` then, and a write without one is unconditional (NOTES on
/// `PVE::NodeConfig`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct NodeConfig {
    /// SHA1 of the config file; pass it back to make a write conditional.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub digest: Option<String>,
    /// The node's notes: every line ends with `\n` (PVE stores them as
    /// `#` comment lines and reads them back that way).
    #[serde(default, deserialize_with = "de::opt_string")]
    pub description: Option<String>,
}

/// `GET /nodes/{node}/qemu/{vmid}/config`: the `digest` plus every entry.
#[derive(Clone, Debug, Default)]
pub struct VmConfig {
    /// SHA1 of the config file; pass it back to make a write conditional.
    pub digest: Option<String>,
    entries: Map<String, Value>,
}

impl<'de> Deserialize<'de> for VmConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut entries = Map::<String, Value>::deserialize(d)?;
        let digest = match entries.remove("digest") {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        Ok(VmConfig { digest, entries })
    }
}

impl VmConfig {
    /// A config from raw entries (fakes and tests; feature `testing`).
    #[cfg(feature = "testing")]
    pub fn from_entries(digest: Option<String>, entries: Map<String, Value>) -> Self {
        VmConfig { digest, entries }
    }

    /// An entry as text (flags arrive as numbers, everything else as text).
    pub fn get(&self, key: &str) -> Option<String> {
        match self.entries.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(if *b { "1" } else { "0" }.to_string()),
            _ => None,
        }
    }

    /// All keys in PVE's order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// An entry parsed as a number.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.trim().parse().ok()
    }

    pub fn name(&self) -> Option<String> {
        self.get("name")
    }

    pub fn description(&self) -> Option<String> {
        self.get("description")
    }

    pub fn cores(&self) -> Option<u64> {
        self.get_u64("cores")
    }

    pub fn sockets(&self) -> Option<u64> {
        self.get_u64("sockets")
    }

    /// Memory in MiB; 8.x stores `[current=]<MiB>`.
    pub fn memory_mib(&self) -> Option<u64> {
        let text = self.get("memory")?;
        let prop = PropertyString::parse(&text);
        prop.get("current")
            .or(prop.default_value())
            .and_then(|v| v.parse().ok())
    }

    /// The tags as a normalized set.
    pub fn tag_set(&self) -> BTreeSet<String> {
        self.get("tags").map(|t| tag_set(&t)).unwrap_or_default()
    }

    /// The ssh keys, decoded from PVE's stored URL-encoded form.
    pub fn sshkeys(&self) -> Option<String> {
        self.get("sshkeys").map(|k| decode_sshkeys(&k))
    }

    /// A property-string entry parsed (`net0`, `scsi0`, `ipconfig0`, …).
    pub fn property(&self, key: &str) -> Option<PropertyString> {
        self.get(key).map(|v| PropertyString::parse(&v))
    }

    /// A disk entry: its volume and size in bytes (`local-lvm:vm-100-disk-0,size=32G`).
    pub fn disk(&self, key: &str) -> Option<DiskInfo> {
        let prop = self.property(key)?;
        Some(DiskInfo {
            volume: prop
                .get("file")
                .or(prop.default_value())
                .unwrap_or_default()
                .to_string(),
            size_bytes: prop.get("size").and_then(parse_size),
            cdrom: prop.get("media") == Some("cdrom"),
        })
    }
}

/// A disk as a VM config shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskInfo {
    /// `storage:volume` (or `none` for an empty drive).
    pub volume: String,
    pub size_bytes: Option<u64>,
    /// A CD-ROM (e.g. the cloud-init drive).
    pub cdrom: bool,
}

/// Parses a PVE size (`32G`, `512M`, `1T`, `4096` bytes, `1.5G`) into bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_uppercase()),
        _ => (text, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        'T' => 40,
        _ => return None,
    };
    if let Ok(whole) = number.parse::<u64>() {
        return whole.checked_mul(1u64 << shift);
    }
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then(|| (value * (1u64 << shift) as f64) as u64)
}

/// One entry of `GET /nodes/{node}/storage`.
#[derive(Clone, Debug, Deserialize)]
pub struct StorageEntry {
    pub storage: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Allowed content types, comma-separated (`images,rootdir`, `iso,import`).
    #[serde(default)]
    pub content: String,
    #[serde(default, deserialize_with = "de::flag")]
    pub active: bool,
    #[serde(default, deserialize_with = "de::flag")]
    pub enabled: bool,
    #[serde(default, deserialize_with = "de::flag")]
    pub shared: bool,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub total: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub used: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub avail: Option<u64>,
}

impl StorageEntry {
    /// Whether the storage accepts a content type (`images`, `import`, …).
    pub fn allows(&self, content: &str) -> bool {
        self.content.split(',').any(|c| c.trim() == content)
    }
}

/// One entry of `GET /nodes/{node}/storage/{storage}/content`.
#[derive(Clone, Debug, Deserialize)]
pub struct StorageContent {
    /// `local:import/noble.qcow2`, `local-lvm:vm-100-disk-0`, …
    pub volid: String,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub content: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub format: Option<String>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub size: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub ctime: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u32")]
    pub vmid: Option<u32>,
}

/// Whether a task is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Running,
    Stopped,
}

/// `GET /nodes/{node}/tasks/{upid}/status`. There is no `endtime`;
/// `exitstatus` appears only once stopped.
#[derive(Clone, Debug, Deserialize)]
pub struct TaskStatus {
    pub upid: Upid,
    pub status: TaskState,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub exitstatus: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub node: Option<String>,
    #[serde(rename = "type", default, deserialize_with = "de::opt_string")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub user: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub tokenid: Option<String>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub starttime: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub pid: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub pstart: Option<u64>,
}

/// One entry of `GET /nodes/{node}/tasks`. Its `status` is the exit
/// status of a finished task (absent while it runs, in PVE's list of active
/// tasks); ask [`crate::Api::task_status`] for the authoritative state.
#[derive(Clone, Debug, Deserialize)]
pub struct TaskListEntry {
    pub upid: Upid,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub endtime: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub starttime: Option<u64>,
}

/// How a stopped task ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskExit {
    Ok,
    /// `WARNINGS: n`: succeeded, with n warnings in the log.
    Warnings(u32),
    /// Anything else: the error text.
    Failed(String),
}

impl TaskExit {
    /// Parses an `exitstatus`.
    pub fn parse(exitstatus: &str) -> Self {
        if exitstatus == "OK" {
            return TaskExit::Ok;
        }
        if let Some(n) = exitstatus.strip_prefix("WARNINGS:") {
            return TaskExit::Warnings(n.trim().parse().unwrap_or(0));
        }
        TaskExit::Failed(exitstatus.to_string())
    }
}

impl TaskStatus {
    /// The outcome, once stopped. A stopped task without an exit status
    /// (never seen, but not ruled out) counts as failed.
    pub fn exit(&self) -> Option<TaskExit> {
        match self.status {
            TaskState::Running => None,
            TaskState::Stopped => Some(match &self.exitstatus {
                Some(status) => TaskExit::parse(status),
                None => TaskExit::Failed("task stopped without an exit status".into()),
            }),
        }
    }
}

/// One line of a task log.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct TaskLogLine {
    /// Line number, from 1.
    #[serde(deserialize_with = "de::u64")]
    pub n: u64,
    pub t: String,
}

/// A page of a task log plus the total line count.
#[derive(Clone, Debug, Default)]
pub struct TaskLog {
    pub total: Option<u64>,
    pub lines: Vec<TaskLogLine>,
}

/// `{"result":[…]}` of `agent/network-get-interfaces`.
#[derive(Clone, Debug, Deserialize)]
pub struct AgentResult<T> {
    pub result: T,
}

/// One guest interface as the QEMU guest agent reports it.
#[derive(Clone, Debug, Deserialize)]
pub struct AgentInterface {
    pub name: String,
    #[serde(rename = "hardware-address", default)]
    pub hardware_address: Option<String>,
    #[serde(rename = "ip-addresses", default)]
    pub ip_addresses: Vec<AgentIpAddress>,
}

/// An address of a guest interface.
#[derive(Clone, Debug, Deserialize)]
pub struct AgentIpAddress {
    #[serde(rename = "ip-address")]
    pub ip_address: String,
    /// `ipv4` or `ipv6`.
    #[serde(rename = "ip-address-type")]
    pub ip_address_type: String,
    #[serde(default, deserialize_with = "de::opt_u32")]
    pub prefix: Option<u32>,
}

/// The first IPv4 address a guest can be reached on, in the agent's order:
/// interfaces other than `lo`, addresses neither link-local nor
/// unspecified. A loopback address on a real interface is kept on purpose:
/// the simulator gives every VM its own 127.0.0.0/8 address.
pub fn reachable_ipv4(interfaces: &[AgentInterface]) -> Option<Ipv4Addr> {
    interfaces
        .iter()
        .filter(|i| i.name != "lo")
        .flat_map(|i| &i.ip_addresses)
        .filter(|a| a.ip_address_type == "ipv4")
        .filter_map(|a| a.ip_address.parse::<Ipv4Addr>().ok())
        .find(|ip| !ip.is_link_local() && !ip.is_unspecified())
}

/// `POST /access/users/{userid}/token/{tokenid}`. The secret is returned
/// only here.
#[derive(Clone, Debug, Deserialize)]
pub struct CreatedToken {
    #[serde(rename = "full-tokenid")]
    pub full_tokenid: String,
    pub value: Secret,
    #[serde(default)]
    pub info: Option<TokenInfo>,
}

/// A token's settings.
#[derive(Clone, Debug, Deserialize)]
pub struct TokenInfo {
    #[serde(default, deserialize_with = "de::flag")]
    pub privsep: bool,
    /// Epoch seconds; 0 or absent = never.
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub expire: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub comment: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_pve() {
        assert_eq!(parse_size("32G"), Some(32 << 30));
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("1T"), Some(1 << 40));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("12X"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("G"), None);
    }

    #[test]
    fn task_exit_parses_ok_warnings_and_errors() {
        assert_eq!(TaskExit::parse("OK"), TaskExit::Ok);
        assert_eq!(TaskExit::parse("WARNINGS: 3"), TaskExit::Warnings(3));
        assert_eq!(
            TaskExit::parse("VM 100 already running"),
            TaskExit::Failed("VM 100 already running".into())
        );
    }

    #[test]
    fn config_accessors_read_pve_values() {
        let cfg: VmConfig = serde_json::from_value(serde_json::json!({
            "digest": "abc",
            "cores": 2,
            "memory": "current=4096",
            "onboot": 1,
            "tags": "m-demo;homestak",
            "scsi0": "local-lvm:vm-100-disk-0,discard=on,size=32G",
            "ide2": "local-lvm:vm-100-cloudinit,media=cdrom",
            "sshkeys": "ssh-ed25519%20AAAA%20me%40host",
            "net0": "virtio=F2:1A:5C:65:0F:38,bridge=vmbr0"
        }))
        .unwrap();
        assert_eq!(cfg.digest.as_deref(), Some("abc"));
        assert!(cfg.keys().all(|k| k != "digest"));
        assert_eq!(cfg.cores(), Some(2));
        assert_eq!(cfg.memory_mib(), Some(4096));
        assert_eq!(cfg.get("onboot").as_deref(), Some("1"));
        assert_eq!(
            cfg.tag_set().into_iter().collect::<Vec<_>>(),
            ["homestak", "m-demo"]
        );
        let disk = cfg.disk("scsi0").unwrap();
        assert_eq!(disk.volume, "local-lvm:vm-100-disk-0");
        assert_eq!(disk.size_bytes, Some(32 << 30));
        assert!(!disk.cdrom);
        assert!(cfg.disk("ide2").unwrap().cdrom);
        assert_eq!(cfg.sshkeys().as_deref(), Some("ssh-ed25519 AAAA me@host"));
        assert_eq!(cfg.property("net0").unwrap().get("bridge"), Some("vmbr0"));
    }

    #[test]
    fn power_state_follows_qmpstatus() {
        let status = |s: &str, q: Option<&str>| VmStatus {
            vmid: Some(100),
            status: s.into(),
            qmpstatus: q.map(Into::into),
            name: None,
            uptime: None,
            pid: None,
            agent: false,
            cpus: None,
            maxmem: None,
            maxdisk: None,
            lock: None,
            tags: None,
            template: false,
        };
        assert_eq!(
            status("running", Some("running")).power(),
            PowerState::Running
        );
        assert_eq!(
            status("running", Some("paused")).power(),
            PowerState::Paused
        );
        assert_eq!(status("stopped", None).power(), PowerState::Stopped);
        assert_eq!(status("weird", None).power(), PowerState::Unknown);
    }

    #[test]
    fn reachable_ipv4_skips_lo_and_link_local() {
        let ifaces: Vec<AgentInterface> = serde_json::from_value(serde_json::json!([
            {"name":"lo","ip-addresses":[{"ip-address":"127.0.0.1","ip-address-type":"ipv4","prefix":8}]},
            {"name":"eth0","hardware-address":"02:0c:21:fc:c7:9b","ip-addresses":[
                {"ip-address":"fe80::1","ip-address-type":"ipv6","prefix":64},
                {"ip-address":"169.254.1.2","ip-address-type":"ipv4","prefix":16}]},
            {"name":"eth1","ip-addresses":[{"ip-address":"127.1.0.5","ip-address-type":"ipv4","prefix":24}]}
        ]))
        .unwrap();
        assert_eq!(reachable_ipv4(&ifaces), Some(Ipv4Addr::new(127, 1, 0, 5)));
        assert_eq!(reachable_ipv4(&ifaces[..2]), None);
    }
}
