//! A simulated QEMU VM: its stored configuration (as PVE writes it), power
//! state, guest agent and loopback address, and the JSON shapes PVE gives
//! for it (config, status/current, qemu list, cluster resources, agent).
//!
//! What the guest needs when it boots ([`super::guest`]): `ciuser`,
//! `sshkeys` (decoded by [`Vm::ssh_keys`]), `address`, `workdir` (its root
//! and state) and `pve_image` (whether it becomes a nested PVE tier).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use homestak_pve::schema::formats::{self, Props};
use homestak_pve::schema::{Type, vm_options};

/// Power state of the QEMU process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Power {
    Stopped,
    Running,
}

/// One VM.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Vm {
    pub vmid: u32,
    pub node: String,
    /// Options as stored in `qemu-server/<vmid>.conf` (description decoded).
    pub config: BTreeMap<String, String>,
    pub power: Power,
    /// Epoch milliseconds of the last start.
    pub started_at: Option<i64>,
    pub pid: Option<u32>,
    /// Unique loopback address where the guest "lives".
    pub address: Ipv4Addr,
    /// Epoch milliseconds when the agent answers; `None` = never.
    pub agent_ready_at: Option<i64>,
    /// Per-VM working directory (SSH sessions, nested tier state).
    pub workdir: Option<PathBuf>,
    /// Image the boot disk was imported from.
    pub image: Option<String>,
    /// The image is a PVE image: the VM can become a nested PVE host.
    #[serde(default)]
    pub pve_image: bool,
    /// Epoch milliseconds of the last reboot from inside the guest
    /// (`reboot` over SSH): a new guest boot while QEMU keeps running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_boot_at: Option<i64>,
}

impl Vm {
    pub fn new(vmid: u32, node: &str, address: Ipv4Addr) -> Self {
        Vm {
            vmid,
            node: node.to_string(),
            config: BTreeMap::new(),
            power: Power::Stopped,
            started_at: None,
            pid: None,
            address,
            agent_ready_at: None,
            workdir: None,
            image: None,
            pve_image: false,
            guest_boot_at: None,
        }
    }

    pub fn running(&self) -> bool {
        self.power == Power::Running
    }

    pub fn lock(&self) -> Option<&str> {
        self.config.get("lock").map(String::as_str)
    }

    pub fn is_template(&self) -> bool {
        self.config.get("template").is_some_and(|t| t == "1")
    }

    pub fn name(&self) -> String {
        self.config
            .get("name")
            .cloned()
            .unwrap_or_else(|| format!("VM {}", self.vmid))
    }

    /// Memory in MiB (`memory: [current=]<MiB>`, default 512).
    pub fn memory_mib(&self) -> u64 {
        self.config
            .get("memory")
            .and_then(|m| {
                formats::parse_property_string(
                    homestak_pve::schema::qemu_dicts::memory(),
                    m,
                    "memory",
                )
                .ok()
            })
            .and_then(|p| p.get("current").and_then(|c| c.parse().ok()))
            .unwrap_or(512)
    }

    pub fn cpus(&self) -> u64 {
        if let Some(v) = self.config.get("vcpus").and_then(|v| v.parse().ok()) {
            return v;
        }
        let cores: u64 = self
            .config
            .get("cores")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let sockets: u64 = self
            .config
            .get("sockets")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        cores * sockets
    }

    /// Whether `agent` is set and enabled.
    pub fn agent_enabled(&self) -> bool {
        self.config
            .get("agent")
            .and_then(|a| {
                formats::parse_property_string(
                    homestak_pve::schema::qemu_dicts::agent(),
                    a,
                    "agent",
                )
                .ok()
            })
            .is_some_and(|p| p.get("enabled").is_some_and(|e| e == "1"))
    }

    /// Disk keys and parsed values (`scsi0` → `{file, size, …}`), in key order.
    pub fn disks(&self) -> Vec<(String, Props)> {
        self.config
            .iter()
            .filter_map(|(k, v)| {
                let dict = homestak_pve::schema::qemu_dicts::drive(k)?;
                formats::parse_property_string(dict, v, k)
                    .ok()
                    .map(|p| (k.clone(), p))
            })
            .collect()
    }

    /// Every volume the config references (disks, cloud-init, unused).
    pub fn volumes(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .disks()
            .into_iter()
            .filter_map(|(_, p)| p.get("file").cloned())
            .filter(|f| f.contains(':'))
            .collect();
        for (k, v) in &self.config {
            if (k.starts_with("unused") || k == "efidisk0" || k == "tpmstate0")
                && let Some(file) = v.split(',').next().map(|f| f.trim_start_matches("file="))
                && file.contains(':')
            {
                out.push(file.to_string());
            }
        }
        out
    }

    /// Size of the boot disk: the first disk of `boot: order=`, else the
    /// first of scsi0/virtio0/sata0/ide0 that is not a CD-ROM.
    pub fn maxdisk(&self) -> u64 {
        let disks = self.disks();
        let size_of = |key: &str| {
            disks
                .iter()
                .find(|(k, p)| k == key && p.get("media").is_none_or(|m| m != "cdrom"))
                .and_then(|(_, p)| p.get("size").and_then(|s| formats::parse_size(s)))
        };
        let order = self.config.get("boot").and_then(|b| {
            b.split(',')
                .find_map(|part| part.strip_prefix("order="))
                .map(|o| o.split(';').map(String::from).collect::<Vec<_>>())
        });
        if let Some(order) = order {
            for dev in order {
                if let Some(s) = size_of(&dev) {
                    return s;
                }
            }
        }
        disks
            .iter()
            .filter(|(_, p)| p.get("media").is_none_or(|m| m != "cdrom"))
            .find_map(|(k, _)| size_of(k))
            .unwrap_or(0)
    }

    /// The decoded cloud-init public keys (one per line).
    pub fn ssh_keys(&self) -> Vec<String> {
        self.config
            .get("sshkeys")
            .map(|k| {
                homestak_pve::schema::wire::decode_component(k)
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn ciuser(&self) -> Option<&str> {
        self.config.get("ciuser").map(String::as_str)
    }

    /// The config file text PVE would write: description as `#` lines,
    /// then `key: value` sorted by key. Its SHA-1 is the `digest`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some(d) = self.config.get("description") {
            for line in d.split('\n') {
                out.push('#');
                out.push_str(&encode_comment(line));
                out.push('\n');
            }
        }
        for (k, v) in &self.config {
            if k != "description" {
                out.push_str(&format!("{k}: {v}\n"));
            }
        }
        out
    }

    pub fn digest(&self) -> String {
        let d = ring::digest::digest(
            &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            self.render().as_bytes(),
        );
        homestak_base::digest::hex(d.as_ref())
    }

    /// `GET …/config`: integers and booleans as numbers, the rest as
    /// strings, `cipassword` masked, plus `digest`.
    pub fn config_json(&self) -> Value {
        let mut m = Map::new();
        for (k, v) in &self.config {
            let value = if k == "cipassword" {
                json!("**********")
            } else {
                typed(k, v)
            };
            m.insert(k.clone(), value);
        }
        m.insert("digest".into(), json!(self.digest()));
        Value::Object(m)
    }

    fn uptime(&self, now_ms: i64) -> i64 {
        match (self.power, self.started_at) {
            (Power::Running, Some(t)) => (now_ms - t).max(0) / 1000,
            _ => 0,
        }
    }

    /// Common fields of the qemu list, status/current and resources.
    fn base_json(&self, now_ms: i64) -> Map<String, Value> {
        let running = self.running();
        let maxmem = self.memory_mib() << 20;
        let mut m = Map::new();
        m.insert("vmid".into(), json!(self.vmid));
        m.insert("name".into(), json!(self.name()));
        m.insert(
            "status".into(),
            json!(if running { "running" } else { "stopped" }),
        );
        m.insert("cpus".into(), json!(self.cpus()));
        m.insert("maxmem".into(), json!(maxmem));
        m.insert("mem".into(), json!(if running { maxmem / 4 } else { 0 }));
        m.insert("maxdisk".into(), json!(self.maxdisk()));
        m.insert("disk".into(), json!(0));
        m.insert("cpu".into(), json!(if running { 0.01 } else { 0.0 }));
        m.insert("uptime".into(), json!(self.uptime(now_ms)));
        for k in ["netin", "netout", "diskread", "diskwrite"] {
            m.insert(k.into(), json!(0));
        }
        if running {
            m.insert("pid".into(), json!(self.pid.unwrap_or(0)));
        }
        if let Some(t) = self.config.get("tags") {
            m.insert("tags".into(), json!(t));
        }
        if self.is_template() {
            m.insert("template".into(), json!(1));
        }
        if let Some(l) = self.lock() {
            m.insert("lock".into(), json!(l));
        }
        m
    }

    /// `GET /nodes/{node}/qemu` entry.
    pub fn list_json(&self, now_ms: i64, full: bool) -> Value {
        let mut m = self.base_json(now_ms);
        if full && self.running() {
            m.insert("qmpstatus".into(), json!("running"));
        }
        if self.config.contains_key("serial0") {
            m.insert("serial".into(), json!(1));
        }
        Value::Object(m)
    }

    /// `GET …/status/current`.
    pub fn status_json(&self, now_ms: i64) -> Value {
        let mut m = self.base_json(now_ms);
        let running = self.running();
        m.insert(
            "qmpstatus".into(),
            json!(if running { "running" } else { "stopped" }),
        );
        m.insert("ha".into(), json!({"managed": 0}));
        if self.agent_enabled() {
            m.insert("agent".into(), json!(1));
        }
        if self.config.contains_key("serial0") {
            m.insert("serial".into(), json!(1));
        }
        if running {
            m.insert("running-machine".into(), json!("pc-i440fx-9.2+pve1"));
            m.insert("running-qemu".into(), json!("9.2.0"));
            let mut nics = Map::new();
            for k in self.config.keys().filter(|k| k.starts_with("net")) {
                let idx = &k[3..];
                nics.insert(
                    format!("tap{}i{idx}", self.vmid),
                    json!({"netin": 0, "netout": 0}),
                );
            }
            m.insert("nics".into(), Value::Object(nics));
            let maxmem = self.memory_mib() << 20;
            m.insert("balloon".into(), json!(maxmem));
            let shares: u64 = self
                .config
                .get("shares")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            m.insert("shares".into(), json!(shares));
            if let Some(b) = self
                .config
                .get("balloon")
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|b| *b > 0)
            {
                m.insert("balloon_min".into(), json!(b << 20));
            }
            if self.config.get("vga").is_some_and(|v| v.starts_with("qxl")) {
                m.insert("spice".into(), json!(1));
            }
            m.insert("freemem".into(), json!(maxmem / 2));
            m.insert(
                "ballooninfo".into(),
                json!({"actual": maxmem, "max_mem": maxmem, "free_mem": maxmem / 2, "total_mem": maxmem,
                       "major_page_faults": 0, "minor_page_faults": 0, "mem_swapped_in": 0, "mem_swapped_out": 0,
                       "last_update": now_ms / 1000}),
            );
            let mut blockstat = Map::new();
            for (k, _) in self.disks() {
                blockstat.insert(k, block_stats());
            }
            m.insert("blockstat".into(), Value::Object(blockstat));
            m.insert(
                "proxmox-support".into(),
                json!({"backup-max-workers": true, "pbs-dirty-bitmap": true, "pbs-dirty-bitmap-migration": true,
                       "pbs-dirty-bitmap-savevm": true, "pbs-library-version": "1.5.1 (UNKNOWN)",
                       "pbs-masterkey": true, "query-bitmap-info": true}),
            );
        }
        Value::Object(m)
    }

    /// `GET /cluster/resources` entry.
    pub fn resource_json(&self, now_ms: i64) -> Value {
        let mut m = self.base_json(now_ms);
        m.remove("cpus");
        m.remove("pid");
        m.insert("id".into(), json!(format!("qemu/{}", self.vmid)));
        m.insert("type".into(), json!("qemu"));
        m.insert("node".into(), json!(self.node));
        m.insert("maxcpu".into(), json!(self.cpus()));
        m.insert("template".into(), json!(u8::from(self.is_template())));
        Value::Object(m)
    }

    /// `GET …/agent/network-get-interfaces` result (QGA shape).
    pub fn agent_interfaces_json(&self) -> Value {
        let stats = json!({"rx-bytes": 0, "rx-packets": 0, "rx-errs": 0, "rx-dropped": 0,
                           "tx-bytes": 0, "tx-packets": 0, "tx-errs": 0, "tx-dropped": 0});
        let mut ifaces = vec![json!({
            "name": "lo",
            "hardware-address": "00:00:00:00:00:00",
            "ip-addresses": [
                {"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8},
                {"ip-address": "::1", "ip-address-type": "ipv6", "prefix": 128},
            ],
            "statistics": stats,
        })];
        let nets: Vec<(u32, String)> = self
            .config
            .iter()
            .filter_map(|(k, v)| {
                let idx: u32 = k.strip_prefix("net")?.parse().ok()?;
                let props =
                    formats::parse_property_string(homestak_pve::schema::qemu_dicts::net(), v, k)
                        .ok()?;
                Some((
                    idx,
                    props
                        .get("macaddr")
                        .cloned()
                        .unwrap_or_default()
                        .to_lowercase(),
                ))
            })
            .collect();
        for (i, (idx, mac)) in nets.iter().enumerate() {
            let mut addrs = Vec::new();
            if i == 0 {
                addrs.push(json!({"ip-address": self.address.to_string(), "ip-address-type": "ipv4", "prefix": 24}));
            }
            addrs.push(
                json!({"ip-address": link_local(mac), "ip-address-type": "ipv6", "prefix": 64}),
            );
            ifaces.push(json!({
                "name": format!("ens{}", 18 + idx),
                "hardware-address": mac,
                "ip-addresses": addrs,
                "statistics": stats,
            }));
        }
        json!({ "result": ifaces })
    }
}

/// QEMU's per-drive counters (`query-blockstats`), all zero.
fn block_stats() -> Value {
    let mut m = Map::new();
    for k in [
        "rd_bytes",
        "wr_bytes",
        "rd_operations",
        "wr_operations",
        "flush_operations",
        "unmap_operations",
        "rd_merged",
        "wr_merged",
        "unmap_merged",
        "rd_total_time_ns",
        "wr_total_time_ns",
        "flush_total_time_ns",
        "unmap_total_time_ns",
        "wr_highest_offset",
        "unmap_bytes",
        "idle_time_ns",
        "failed_rd_operations",
        "failed_wr_operations",
        "failed_flush_operations",
        "failed_unmap_operations",
        "invalid_rd_operations",
        "invalid_wr_operations",
        "invalid_flush_operations",
        "invalid_unmap_operations",
    ] {
        m.insert(k.into(), json!(0));
    }
    m.insert("account_failed".into(), json!(true));
    m.insert("account_invalid".into(), json!(true));
    m.insert("timed_stats".into(), json!([]));
    Value::Object(m)
}

/// A config value typed as PVE's `parse_vm_config` + JSON encoding give it.
fn typed(key: &str, value: &str) -> Value {
    let ty = vm_options()
        .iter()
        .find(|p| p.matches(key))
        .map(|p| p.schema.ty);
    match ty {
        Some(Type::Integer) => value
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| json!(value)),
        Some(Type::Boolean) => match formats::parse_boolean(value) {
            Some(b) => json!(u8::from(b)),
            None => json!(value),
        },
        _ => json!(value),
    }
}

/// `%`, control characters and high bytes are `%XX` in config comments.
fn encode_comment(line: &str) -> String {
    let mut out = String::new();
    for c in line.chars() {
        if c == '%' || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn link_local(mac: &str) -> String {
    let b: Vec<u8> = mac
        .split(':')
        .filter_map(|p| u8::from_str_radix(p, 16).ok())
        .collect();
    if b.len() != 6 {
        return "fe80::1".into();
    }
    format!(
        "fe80::{:02x}{:02x}:{:02x}ff:fe{:02x}:{:02x}{:02x}",
        b[0] ^ 2,
        b[1],
        b[2],
        b[3],
        b[4],
        b[5]
    )
}

/// Normalizes a tag list as PVE stores it: lowercase, sorted, unique, `;`.
pub fn normalize_tags(tags: &str) -> String {
    let mut list: Vec<String> = formats::split_list(tags).map(str::to_lowercase).collect();
    list.sort();
    list.dedup();
    list.join(";")
}

/// PVE keeps a description without trailing whitespace.
pub fn normalize_description(d: &str) -> String {
    d.trim_end().to_string()
}

/// Validates decoded public keys the way `ssh-keygen -l` would accept them.
pub fn validate_ssh_keys(text: &str) -> bool {
    const TYPES: &[&str] = &[
        "ssh-ed25519",
        "ssh-rsa",
        "ssh-dss",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .all(|line| {
            let mut parts = line.split_whitespace();
            let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
                return false;
            };
            if !TYPES.contains(&kind) {
                return false;
            }
            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(blob) else {
                return false;
            };
            // The blob starts with the key type as an SSH string.
            match bytes.split_first_chunk::<4>() {
                Some((len, rest)) => usize::try_from(u32::from_be_bytes(*len))
                    .is_ok_and(|len| rest.get(..len) == Some(kind.as_bytes())),
                None => false,
            }
        })
}

/// A locally administered MAC in Proxmox's OUI `BC:24:11`, from 24 bits.
pub fn mac_from(bits: u64) -> String {
    format!(
        "BC:24:11:{:02X}:{:02X}:{:02X}",
        (bits >> 16) & 0xff,
        (bits >> 8) & 0xff,
        bits & 0xff
    )
}

/// A version 4 UUID from 128 random bits.
pub fn uuid_from(hi: u64, lo: u64) -> String {
    let hi = (hi & 0xffff_ffff_ffff_0fff) | 0x4000;
    let lo = (lo & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm() -> Vm {
        Vm::new(100, "pve", Ipv4Addr::new(127, 40, 1, 1))
    }

    #[test]
    fn tags_are_normalized_like_pve() {
        assert_eq!(normalize_tags("Zeta,alpha;beta alpha"), "alpha;beta;zeta");
        assert_eq!(normalize_tags(""), "");
    }

    #[test]
    fn config_json_types_and_masks() {
        let mut v = vm();
        for (k, val) in [
            ("cores", "2"),
            ("memory", "2048"),
            ("onboot", "1"),
            ("cipassword", "$5$x"),
            ("name", "web"),
            ("agent", "1"),
        ] {
            v.config.insert(k.into(), val.into());
        }
        let j = v.config_json();
        assert_eq!(j["cores"], json!(2));
        assert_eq!(j["memory"], json!("2048"));
        assert_eq!(j["onboot"], json!(1));
        assert_eq!(j["agent"], json!("1"));
        assert_eq!(j["cipassword"], json!("**********"));
        assert_eq!(j["digest"].as_str().unwrap().len(), 40);
        assert!(v.agent_enabled());
        assert_eq!(v.memory_mib(), 2048);
    }

    #[test]
    fn digest_changes_with_config_and_description_renders_as_comments() {
        let mut v = vm();
        let d0 = v.digest();
        v.config.insert(
            "description".into(),
            "managed by homestak\nspec: abc%".into(),
        );
        assert!(
            v.render()
                .starts_with("#managed by homestak\n#spec: abc%25\n")
        );
        assert_ne!(v.digest(), d0);
    }

    #[test]
    fn maxdisk_follows_boot_order() {
        let mut v = vm();
        v.config
            .insert("scsi0".into(), "local-zfs:vm-100-disk-0,size=3G".into());
        v.config
            .insert("scsi1".into(), "local-zfs:vm-100-disk-1,size=10G".into());
        v.config.insert(
            "ide2".into(),
            "local-zfs:vm-100-cloudinit,media=cdrom".into(),
        );
        assert_eq!(v.maxdisk(), 3 << 30);
        v.config.insert("boot".into(), "order=scsi1;scsi0".into());
        assert_eq!(v.maxdisk(), 10 << 30);
        assert_eq!(v.volumes().len(), 3);
    }

    #[test]
    fn ssh_keys_are_validated_by_structure() {
        // A syntactically valid ed25519 public key blob (type + 32 bytes).
        let mut blob = Vec::new();
        blob.extend_from_slice(&11u32.to_be_bytes());
        blob.extend_from_slice(b"ssh-ed25519");
        blob.extend_from_slice(&32u32.to_be_bytes());
        blob.extend_from_slice(&[7u8; 32]);
        let key = format!(
            "ssh-ed25519 {} me@host",
            base64::engine::general_purpose::STANDARD.encode(&blob)
        );
        assert!(validate_ssh_keys(&key));
        assert!(validate_ssh_keys(&format!("{key}\n\n{key}\n")));
        assert!(!validate_ssh_keys("ssh-ed25519 AAAA"));
        assert!(!validate_ssh_keys("ssh-rsa QUFBQQ== x"));
        let mut v = vm();
        v.config
            .insert("sshkeys".into(), homestak_pve::form::encode_component(&key));
        assert_eq!(v.ssh_keys(), vec![key]);
    }

    #[test]
    fn identifiers_have_pve_shapes() {
        assert_eq!(mac_from(0x0a0b0c), "BC:24:11:0A:0B:0C");
        let u = uuid_from(u64::MAX, u64::MAX);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(formats::is_unicast_mac(&mac_from(0xffffff)));
    }
}
