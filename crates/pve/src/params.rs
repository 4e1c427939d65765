//! Typed request parameters for the calls a VM controller makes.
//!
//! Each type renders itself into a [`Form`] in a fixed order, so requests
//! are deterministic and recordings comparable. Property-string values
//! (`scsi0`, `net0`, `ipconfig0`, …) are built by small typed helpers; the
//! `extra` escape hatch takes any other option verbatim.

use super::auth::Secret;
use super::form::{Form, PropertyString, encode_sshkeys, join_tags};
use homestak_base::id::VmId;

/// A disk (or drive) option value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disk {
    /// Import an existing volume: `<storage>:0,import-from=<source>`. The
    /// size must be `0`; the source is a volume of content `import` or
    /// `images` (e.g. `local:import/noble.qcow2`), never an `iso` volume.
    Import {
        storage: String,
        source: String,
        options: Vec<(String, String)>,
    },
    /// Allocate a new volume of `size_gib` GiB: `<storage>:<size>`.
    New {
        storage: String,
        size_gib: u64,
        options: Vec<(String, String)>,
    },
    /// The cloud-init drive: `<storage>:cloudinit`.
    CloudInit { storage: String },
    /// Any other value, verbatim.
    Raw(String),
}

impl Disk {
    /// `Disk::Import` without extra options.
    pub fn import(storage: impl Into<String>, source: impl Into<String>) -> Self {
        Disk::Import {
            storage: storage.into(),
            source: source.into(),
            options: Vec::new(),
        }
    }

    /// `Disk::CloudInit`.
    pub fn cloudinit(storage: impl Into<String>) -> Self {
        Disk::CloudInit {
            storage: storage.into(),
        }
    }

    /// The option value.
    pub fn render(&self) -> String {
        let with_options = |mut prop: PropertyString, options: &[(String, String)]| {
            for (k, v) in options {
                prop = prop.kv(k, v);
            }
            prop.to_string()
        };
        match self {
            Disk::Import {
                storage,
                source,
                options,
            } => with_options(
                PropertyString::new()
                    .value(format!("{storage}:0"))
                    .kv("import-from", source),
                options,
            ),
            Disk::New {
                storage,
                size_gib,
                options,
            } => with_options(
                PropertyString::new().value(format!("{storage}:{size_gib}")),
                options,
            ),
            Disk::CloudInit { storage } => format!("{storage}:cloudinit"),
            Disk::Raw(text) => text.clone(),
        }
    }
}

/// A network device: `<model>[=<mac>],bridge=<bridge>[,tag=…][,firewall=…]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Net {
    /// `virtio`, `e1000`, …
    pub model: String,
    /// Fixed MAC; PVE generates one when absent.
    pub mac: Option<String>,
    pub bridge: String,
    pub vlan: Option<u16>,
    pub firewall: Option<bool>,
    pub extra: Vec<(String, String)>,
}

impl Net {
    /// A virtio NIC on `bridge`.
    pub fn virtio(bridge: impl Into<String>) -> Self {
        Net {
            model: "virtio".into(),
            mac: None,
            bridge: bridge.into(),
            vlan: None,
            firewall: None,
            extra: Vec::new(),
        }
    }

    /// The option value.
    pub fn render(&self) -> String {
        let model = match &self.mac {
            Some(mac) => format!("{}={mac}", self.model),
            None => self.model.clone(),
        };
        let mut prop = PropertyString::new()
            .value(model)
            .kv("bridge", &self.bridge)
            .kv_opt("tag", self.vlan)
            .flag_opt("firewall", self.firewall);
        for (k, v) in &self.extra {
            prop = prop.kv(k, v);
        }
        prop.to_string()
    }
}

/// IPv4 setting of a cloud-init interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ipv4 {
    Dhcp,
    /// An address in CIDR form (`10.0.0.5/24`) and an optional gateway.
    Static {
        cidr: String,
        gateway: Option<String>,
    },
}

/// A cloud-init `ipconfigN` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpConfig {
    pub ipv4: Option<Ipv4>,
    /// `dhcp`, `auto` or a CIDR.
    pub ipv6: Option<String>,
    pub gateway6: Option<String>,
}

impl IpConfig {
    /// `ip=dhcp`.
    pub fn dhcp() -> Self {
        IpConfig {
            ipv4: Some(Ipv4::Dhcp),
            ipv6: None,
            gateway6: None,
        }
    }

    /// `ip=<cidr>[,gw=<gateway>]`.
    pub fn static_v4(cidr: impl Into<String>, gateway: Option<String>) -> Self {
        IpConfig {
            ipv4: Some(Ipv4::Static {
                cidr: cidr.into(),
                gateway,
            }),
            ipv6: None,
            gateway6: None,
        }
    }

    /// The option value.
    pub fn render(&self) -> String {
        let mut prop = PropertyString::new();
        match &self.ipv4 {
            Some(Ipv4::Dhcp) => prop = prop.kv("ip", "dhcp"),
            Some(Ipv4::Static { cidr, gateway }) => {
                prop = prop.kv("ip", cidr).kv_opt("gw", gateway.as_ref());
            }
            None => {}
        }
        prop.kv_opt("ip6", self.ipv6.as_ref())
            .kv_opt("gw6", self.gateway6.as_ref())
            .to_string()
    }
}

/// VM options shared by create and config updates. Unset fields are not
/// sent.
#[derive(Clone, Debug, Default)]
pub struct VmOptions {
    pub name: Option<String>,
    pub description: Option<String>,
    /// Sent `;`-joined; PVE lowercases, sorts and deduplicates.
    pub tags: Option<Vec<String>>,
    pub cores: Option<u32>,
    pub sockets: Option<u32>,
    /// MiB.
    pub memory: Option<u64>,
    /// `host`, `x86-64-v2-AES`, …
    pub cpu: Option<String>,
    /// `l26`, …
    pub ostype: Option<String>,
    /// `virtio-scsi-pci`, `virtio-scsi-single`, …
    pub scsihw: Option<String>,
    pub bios: Option<String>,
    pub machine: Option<String>,
    pub onboot: Option<bool>,
    /// `1`, or a property string like `enabled=1,fstrim_cloned_disks=1`.
    pub agent: Option<String>,
    /// `socket` for a serial console.
    pub serial0: Option<String>,
    /// `serial0`, `std`, …
    pub vga: Option<String>,
    /// Boot order devices, sent as `order=scsi0;net0`.
    pub boot_order: Option<Vec<String>>,
    /// Disks by key (`scsi0`, `ide2`, `virtio1`, …), in this order.
    pub disks: Vec<(String, Disk)>,
    /// NICs by index (`net0`, …).
    pub nets: Vec<(u8, Net)>,
    /// cloud-init interface settings by index (`ipconfig0`, …).
    pub ipconfigs: Vec<(u8, IpConfig)>,
    pub ciuser: Option<String>,
    pub cipassword: Option<Secret>,
    /// OpenSSH public keys, one per line; encoded as PVE requires.
    pub sshkeys: Option<String>,
    pub nameserver: Option<String>,
    pub searchdomain: Option<String>,
    pub ciupgrade: Option<bool>,
    /// Any other option, verbatim, after the typed ones.
    pub extra: Vec<(String, String)>,
}

impl VmOptions {
    /// Appends the set options to `form`.
    pub fn write(&self, form: &mut Form) {
        form.push_opt("name", self.name.as_ref())
            .push_opt("cores", self.cores)
            .push_opt("sockets", self.sockets)
            .push_opt("memory", self.memory)
            .push_opt("cpu", self.cpu.as_ref())
            .push_opt("ostype", self.ostype.as_ref())
            .push_opt("scsihw", self.scsihw.as_ref())
            .push_opt("bios", self.bios.as_ref())
            .push_opt("machine", self.machine.as_ref())
            .push_opt_bool("onboot", self.onboot)
            .push_opt("agent", self.agent.as_ref());
        for (key, disk) in &self.disks {
            form.push(key.clone(), disk.render());
        }
        for (index, net) in &self.nets {
            form.push(format!("net{index}"), net.render());
        }
        form.push_opt("serial0", self.serial0.as_ref())
            .push_opt("vga", self.vga.as_ref());
        if let Some(order) = &self.boot_order {
            form.push("boot", format!("order={}", order.join(";")));
        }
        form.push_opt("ciuser", self.ciuser.as_ref());
        if let Some(password) = &self.cipassword {
            form.push_secret("cipassword", password);
        }
        if let Some(keys) = &self.sshkeys {
            form.push("sshkeys", encode_sshkeys(keys));
        }
        for (index, ip) in &self.ipconfigs {
            form.push(format!("ipconfig{index}"), ip.render());
        }
        form.push_opt("nameserver", self.nameserver.as_ref())
            .push_opt("searchdomain", self.searchdomain.as_ref())
            .push_opt_bool("ciupgrade", self.ciupgrade);
        if let Some(tags) = &self.tags {
            form.push("tags", join_tags(tags));
        }
        form.push_opt("description", self.description.as_ref());
        for (k, v) in &self.extra {
            form.push(k.clone(), v.clone());
        }
    }
}

/// `POST /nodes/{node}/qemu`.
#[derive(Clone, Debug)]
pub struct CreateVm {
    pub vmid: VmId,
    pub options: VmOptions,
    /// Start the VM once created (inside the same `qmcreate` task).
    pub start: Option<bool>,
    pub pool: Option<String>,
}

impl CreateVm {
    pub(crate) fn form(&self) -> Form {
        let mut form = Form::new();
        form.push("vmid", self.vmid.to_string());
        self.options.write(&mut form);
        form.push_opt_bool("start", self.start)
            .push_opt("pool", self.pool.as_ref());
        form
    }
}

/// `PUT|POST /nodes/{node}/qemu/{vmid}/config`.
#[derive(Clone, Debug, Default)]
pub struct ConfigUpdate {
    pub options: VmOptions,
    /// Option names to remove.
    pub delete: Vec<String>,
    /// Apply only if the config still has this digest.
    pub digest: Option<String>,
    /// POST only: wait up to this many seconds (1-30) and return `null` if
    /// the task finished by then.
    pub background_delay: Option<u8>,
}

impl ConfigUpdate {
    pub(crate) fn form(&self, post: bool) -> Form {
        let mut form = Form::new();
        self.options.write(&mut form);
        if !self.delete.is_empty() {
            form.push("delete", self.delete.join(","));
        }
        form.push_opt("digest", self.digest.as_ref());
        if post {
            form.push_opt("background_delay", self.background_delay);
        }
        form
    }
}

/// `PUT /nodes/{node}/config`: the node's notes, conditional on `digest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeConfigUpdate {
    /// The new notes (PVE keeps up to 64 KiB).
    pub description: Option<String>,
    /// Option names to remove.
    pub delete: Vec<String>,
    /// Apply only if the config file still has this SHA1; PVE checks it
    /// under the node config lock.
    pub digest: Option<String>,
}

impl NodeConfigUpdate {
    pub(crate) fn form(&self) -> Form {
        let mut form = Form::new();
        form.push_opt("description", self.description.as_ref());
        if !self.delete.is_empty() {
            form.push("delete", self.delete.join(","));
        }
        form.push_opt("digest", self.digest.as_ref());
        form
    }
}

/// `PUT /nodes/{node}/qemu/{vmid}/resize`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resize {
    /// `scsi0`, …
    pub disk: String,
    /// `32G` (absolute) or `+2G` (relative).
    pub size: String,
    pub digest: Option<String>,
}

impl Resize {
    /// Grow to an absolute size in GiB. Idempotent: PVE treats resizing to
    /// the current size as a no-op (and refuses to shrink).
    pub fn to_gib(disk: impl Into<String>, gib: u64) -> Self {
        Resize {
            disk: disk.into(),
            size: format!("{gib}G"),
            digest: None,
        }
    }

    pub(crate) fn form(&self) -> Form {
        let mut form = Form::new();
        form.push("disk", self.disk.clone())
            .push("size", self.size.clone())
            .push_opt("digest", self.digest.as_ref());
        form
    }
}

/// A power action on a VM; each returns a task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PowerAction {
    /// `status/start` (`qmstart`). Starting a running VM fails the task.
    Start,
    /// `status/stop`, a hard stop (`qmstop`). Stopping a stopped VM is OK.
    Stop {
        timeout: Option<u32>,
        /// Abort a running `qmshutdown` task first.
        overrule_shutdown: Option<bool>,
    },
    /// `status/shutdown`, ACPI or agent (`qmshutdown`).
    Shutdown {
        timeout: Option<u32>,
        /// Hard-stop after the timeout instead of failing.
        force_stop: Option<bool>,
    },
    /// `status/reboot` (`qmreboot`).
    Reboot { timeout: Option<u32> },
}

impl PowerAction {
    /// The last path segment.
    pub fn verb(&self) -> &'static str {
        match self {
            PowerAction::Start => "start",
            PowerAction::Stop { .. } => "stop",
            PowerAction::Shutdown { .. } => "shutdown",
            PowerAction::Reboot { .. } => "reboot",
        }
    }

    pub(crate) fn form(&self) -> Form {
        let mut form = Form::new();
        match self {
            PowerAction::Start => {}
            PowerAction::Stop {
                timeout,
                overrule_shutdown,
            } => {
                form.push_opt("timeout", *timeout)
                    .push_opt_bool("overrule-shutdown", *overrule_shutdown);
            }
            PowerAction::Shutdown {
                timeout,
                force_stop,
            } => {
                form.push_opt("timeout", *timeout)
                    .push_opt_bool("forceStop", *force_stop);
            }
            PowerAction::Reboot { timeout } => {
                form.push_opt("timeout", *timeout);
            }
        }
        form
    }
}

/// `DELETE /nodes/{node}/qemu/{vmid}` (query parameters).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteVm {
    /// Also remove the vmid from backup jobs, replication and HA.
    pub purge: bool,
    /// Also delete disks matching the vmid that are not in the config.
    pub destroy_unreferenced_disks: bool,
}

impl DeleteVm {
    pub(crate) fn form(&self) -> Form {
        let mut form = Form::new();
        if self.purge {
            form.push_bool("purge", true);
        }
        if self.destroy_unreferenced_disks {
            form.push_bool("destroy-unreferenced-disks", true);
        }
        form
    }
}

/// Which tasks `GET /nodes/{node}/tasks` lists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TaskSource {
    /// Finished tasks only (PVE's default).
    #[default]
    Archive,
    /// Running tasks only.
    Active,
    /// Both.
    All,
}

impl TaskSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskSource::Archive => "archive",
            TaskSource::Active => "active",
            TaskSource::All => "all",
        }
    }
}

/// `GET /nodes/{node}/tasks` (query parameters): the node's task list,
/// newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskQuery {
    /// `None` is PVE's default, finished tasks only: a running create is
    /// found only with [`TaskSource::Active`] or [`TaskSource::All`].
    pub source: Option<TaskSource>,
    /// Only tasks of this VM.
    pub vmid: Option<VmId>,
    /// Only tasks of this type (`qmcreate`, `qmstart`, …).
    pub typefilter: Option<String>,
    /// Only tasks started at or after this UNIX time.
    pub since: Option<i64>,
    /// At most this many (PVE's default is 50).
    pub limit: Option<u32>,
}

impl TaskQuery {
    pub(crate) fn form(&self) -> Form {
        let mut form = Form::new();
        form.push_opt("source", self.source.map(TaskSource::as_str))
            .push_opt("vmid", self.vmid)
            .push_opt("typefilter", self.typefilter.as_deref())
            .push_opt("since", self.since)
            .push_opt("limit", self.limit);
        form
    }
}

/// `POST /nodes/{node}/storage/{storage}/download-url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadUrl {
    pub url: String,
    /// `iso`, `vztmpl` or `import` (8.3+). Cloud images for `import-from`
    /// must be `import` with a `.qcow2`/`.raw`/`.vmdk` file name.
    pub content: String,
    pub filename: String,
    /// `(algorithm, hex digest)`, algorithm one of md5, sha1, sha224,
    /// sha256, sha384, sha512.
    pub checksum: Option<(String, String)>,
    pub verify_certificates: Option<bool>,
}

impl DownloadUrl {
    pub(crate) fn form(&self) -> Form {
        let mut form = Form::new();
        form.push("url", self.url.clone())
            .push("content", self.content.clone())
            .push("filename", self.filename.clone());
        if let Some((algorithm, digest)) = &self.checksum {
            form.push("checksum", digest.clone())
                .push("checksum-algorithm", algorithm.clone());
        }
        form.push_opt_bool("verify-certificates", self.verify_certificates);
        form
    }
}

/// `POST /access/users/{userid}/token/{tokenid}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenOptions {
    pub comment: Option<String>,
    /// Epoch seconds; 0 = never.
    pub expire: Option<u64>,
    /// Restrict the token to its own ACLs (PVE's default is 1).
    pub privsep: Option<bool>,
}

impl TokenOptions {
    pub(crate) fn form(&self) -> Form {
        let mut form = Form::new();
        form.push_opt("comment", self.comment.as_ref())
            .push_opt("expire", self.expire)
            .push_opt_bool("privsep", self.privsep);
        form
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_renders_the_controller_options_in_order() {
        let create = CreateVm {
            vmid: VmId::new(100).unwrap(),
            options: VmOptions {
                name: Some("vm1".into()),
                cores: Some(2),
                memory: Some(2048),
                agent: Some("1".into()),
                disks: vec![
                    (
                        "scsi0".into(),
                        Disk::import("local-lvm", "local:import/noble.qcow2"),
                    ),
                    ("ide2".into(), Disk::cloudinit("local-lvm")),
                ],
                nets: vec![(0, Net::virtio("vmbr0"))],
                serial0: Some("socket".into()),
                vga: Some("serial0".into()),
                boot_order: Some(vec!["scsi0".into()]),
                ciuser: Some("homestak".into()),
                cipassword: Some(Secret::new("pw")),
                sshkeys: Some("ssh-ed25519 AAAA me@host".into()),
                ipconfigs: vec![
                    (0, IpConfig::dhcp()),
                    (
                        1,
                        IpConfig::static_v4("10.0.0.5/24", Some("10.0.0.1".into())),
                    ),
                ],
                tags: Some(vec!["homestak".into(), "m-demo".into()]),
                ..VmOptions::default()
            },
            start: Some(false),
            pool: None,
        };
        let pairs = create.form().redacted_pairs();
        let got: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            got,
            [
                "vmid=100",
                "name=vm1",
                "cores=2",
                "memory=2048",
                "agent=1",
                "scsi0=local-lvm:0,import-from=local:import/noble.qcow2",
                "ide2=local-lvm:cloudinit",
                "net0=virtio,bridge=vmbr0",
                "serial0=socket",
                "vga=serial0",
                "boot=order=scsi0",
                "ciuser=homestak",
                "cipassword=<redacted>",
                "sshkeys=ssh-ed25519%20AAAA%20me%40host",
                "ipconfig0=ip=dhcp",
                "ipconfig1=ip=10.0.0.5/24,gw=10.0.0.1",
                "tags=homestak;m-demo",
                "start=0",
            ]
        );
    }

    #[test]
    fn config_update_sends_delete_and_digest() {
        let update = ConfigUpdate {
            options: VmOptions {
                cores: Some(4),
                ..VmOptions::default()
            },
            delete: vec!["serial0".into(), "vga".into()],
            digest: Some("0123abcd".into()),
            background_delay: Some(5),
        };
        let put: Vec<_> = update.form(false).redacted_pairs();
        assert_eq!(
            put,
            [
                ("cores".to_string(), "4".to_string()),
                ("delete".into(), "serial0,vga".into()),
                ("digest".into(), "0123abcd".into()),
            ]
        );
        assert_eq!(update.form(true).get("background_delay"), Some("5"));
    }

    #[test]
    fn small_forms() {
        assert_eq!(Resize::to_gib("scsi0", 32).form().get("size"), Some("32G"));
        assert!(DeleteVm::default().form().is_empty());
        let delete = DeleteVm {
            purge: true,
            destroy_unreferenced_disks: true,
        };
        assert_eq!(
            delete.form().encode(),
            "purge=1&destroy-unreferenced-disks=1"
        );
        let shutdown = PowerAction::Shutdown {
            timeout: Some(30),
            force_stop: Some(true),
        };
        assert_eq!(shutdown.verb(), "shutdown");
        assert_eq!(shutdown.form().encode(), "timeout=30&forceStop=1");
        let dl = DownloadUrl {
            url: "https://example.invalid/noble.img".into(),
            content: "import".into(),
            filename: "noble.qcow2".into(),
            checksum: Some(("sha256".into(), "ab12".into())),
            verify_certificates: None,
        };
        assert_eq!(dl.form().get("checksum-algorithm"), Some("sha256"));
        let net = Net {
            mac: Some("BC:24:11:00:00:01".into()),
            vlan: Some(20),
            firewall: Some(false),
            ..Net::virtio("vmbr1")
        };
        assert_eq!(
            net.render(),
            "virtio=BC:24:11:00:00:01,bridge=vmbr1,tag=20,firewall=0"
        );
        let disk = Disk::New {
            storage: "local-lvm".into(),
            size_gib: 8,
            options: vec![("discard".into(), "on".into())],
        };
        assert_eq!(disk.render(), "local-lvm:8,discard=on");
    }
}
