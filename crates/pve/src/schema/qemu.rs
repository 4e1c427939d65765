//! Specs of the `/nodes/{node}/qemu` endpoints and of the VM configuration
//! options the simulator stores. A subset of PVE's options: the ones a
//! reconciler, proxmoxer scripts and ansible's `proxmox_kvm` send. Anything
//! else is refused as an unknown parameter.

use std::sync::LazyLock;

use super::formats::{Dict, Named, SubKey};
use super::{Endpoint, Method, Op, P, Param, Pattern, Schema, Type};

/// Every disk key, in PVE's order (the `disk` enum of resize and template).
pub const DISK_KEYS: &[&str] = &[
    "ide0",
    "ide1",
    "ide2",
    "ide3",
    "scsi0",
    "scsi1",
    "scsi2",
    "scsi3",
    "scsi4",
    "scsi5",
    "scsi6",
    "scsi7",
    "scsi8",
    "scsi9",
    "scsi10",
    "scsi11",
    "scsi12",
    "scsi13",
    "scsi14",
    "scsi15",
    "scsi16",
    "scsi17",
    "scsi18",
    "scsi19",
    "scsi20",
    "scsi21",
    "scsi22",
    "scsi23",
    "scsi24",
    "scsi25",
    "scsi26",
    "scsi27",
    "scsi28",
    "scsi29",
    "scsi30",
    "virtio0",
    "virtio1",
    "virtio2",
    "virtio3",
    "virtio4",
    "virtio5",
    "virtio6",
    "virtio7",
    "virtio8",
    "virtio9",
    "virtio10",
    "virtio11",
    "virtio12",
    "virtio13",
    "virtio14",
    "virtio15",
    "sata0",
    "sata1",
    "sata2",
    "sata3",
    "sata4",
    "sata5",
    "efidisk0",
    "tpmstate0",
];

const NET_MODELS: &[&str] = &[
    "e1000",
    "e1000-82540em",
    "e1000-82544gc",
    "e1000-82545em",
    "e1000e",
    "i82551",
    "i82557b",
    "i82559er",
    "ne2k_isa",
    "ne2k_pci",
    "pcnet",
    "rtl8139",
    "virtio",
    "vmxnet3",
];
const DISK_FORMATS: &[&str] = &["raw", "qcow", "qed", "qcow2", "vmdk", "cloop"];
const CACHE_MODES: &[&str] = &["none", "writethrough", "writeback", "unsafe", "directsync"];

fn key(name: &'static str, ty: Type) -> SubKey {
    SubKey {
        name,
        schema: Schema::of(ty),
        required: false,
        default_key: false,
        alias: None,
        key_alias: None,
    }
}

trait SubKeyExt {
    fn required(self) -> Self;
    fn default_key(self) -> Self;
    fn named(self, f: Named) -> Self;
    fn enumeration(self, e: &'static [&'static str]) -> Self;
    fn range(self, lo: Option<i64>, hi: Option<i64>) -> Self;
    fn max_len(self, n: usize) -> Self;
}

impl SubKeyExt for SubKey {
    fn required(mut self) -> Self {
        self.required = true;
        self
    }
    fn default_key(mut self) -> Self {
        self.default_key = true;
        self
    }
    fn named(mut self, f: Named) -> Self {
        self.schema.format = Some(super::Format::Named(f));
        self
    }
    fn enumeration(mut self, e: &'static [&'static str]) -> Self {
        self.schema.enumeration = Some(e);
        self
    }
    fn range(mut self, lo: Option<i64>, hi: Option<i64>) -> Self {
        self.schema.minimum = lo;
        self.schema.maximum = hi;
        self
    }
    fn max_len(mut self, n: usize) -> Self {
        self.schema.max_length = Some(n);
        self
    }
}

fn alias(name: &'static str, to: &'static str) -> SubKey {
    SubKey {
        alias: Some(to),
        ..key(name, Type::String)
    }
}

/// Keys every disk bus shares.
fn drive_common() -> Vec<SubKey> {
    vec![
        key("file", Type::String)
            .required()
            .default_key()
            .named(Named::PveVolumeIdOrQmPath),
        alias("volume", "file"),
        key("media", Type::String).enumeration(&["cdrom", "disk"]),
        key("size", Type::String).named(Named::DiskSize),
        key("import-from", Type::String).named(Named::PveVolumeIdOrAbsolutePath),
        key("format", Type::String).enumeration(DISK_FORMATS),
        key("cache", Type::String).enumeration(CACHE_MODES),
        key("discard", Type::String).enumeration(&["ignore", "on"]),
        key("aio", Type::String).enumeration(&["native", "threads", "io_uring"]),
        key("backup", Type::Boolean),
        key("replicate", Type::Boolean),
        key("snapshot", Type::Boolean),
        key("shared", Type::Boolean),
        key("detect_zeroes", Type::Boolean),
        key("serial", Type::String)
            .named(Named::Urlencoded)
            .max_len(60),
    ]
}

fn drive(extra: Vec<SubKey>) -> Dict {
    let mut keys = drive_common();
    keys.extend(extra);
    Dict { keys }
}

static IDE: LazyLock<Dict> = LazyLock::new(|| {
    drive(vec![
        key("ssd", Type::Boolean),
        key("model", Type::String)
            .named(Named::Urlencoded)
            .max_len(120),
    ])
});
static SATA: LazyLock<Dict> = LazyLock::new(|| drive(vec![key("ssd", Type::Boolean)]));
static SCSI: LazyLock<Dict> = LazyLock::new(|| {
    drive(vec![
        key("ssd", Type::Boolean),
        key("iothread", Type::Boolean),
        key("ro", Type::Boolean),
    ])
});
static VIRTIO: LazyLock<Dict> = LazyLock::new(|| {
    drive(vec![
        key("iothread", Type::Boolean),
        key("ro", Type::Boolean),
    ])
});

static EFIDISK: LazyLock<Dict> = LazyLock::new(|| Dict {
    keys: vec![
        key("file", Type::String)
            .required()
            .default_key()
            .named(Named::PveVolumeIdOrQmPath),
        alias("volume", "file"),
        key("efitype", Type::String).enumeration(&["2m", "4m"]),
        key("format", Type::String).enumeration(DISK_FORMATS),
        key("import-from", Type::String).named(Named::PveVolumeIdOrAbsolutePath),
        key("pre-enrolled-keys", Type::Boolean),
        key("size", Type::String).named(Named::DiskSize),
    ],
});

static TPMSTATE: LazyLock<Dict> = LazyLock::new(|| Dict {
    keys: vec![
        key("file", Type::String)
            .required()
            .default_key()
            .named(Named::PveVolumeIdOrQmPath),
        alias("volume", "file"),
        key("import-from", Type::String).named(Named::PveVolumeIdOrAbsolutePath),
        key("size", Type::String).named(Named::DiskSize),
        key("version", Type::String).enumeration(&["v1.2", "v2.0"]),
    ],
});

static NET: LazyLock<Dict> = LazyLock::new(|| {
    let mut keys = vec![
        key("model", Type::String)
            .required()
            .default_key()
            .enumeration(NET_MODELS),
        key("macaddr", Type::String).named(Named::MacAddr),
        key("bridge", Type::String).named(Named::PveBridgeId),
        key("firewall", Type::Boolean),
        key("link_down", Type::Boolean),
        key("mtu", Type::Integer).range(Some(1), Some(65520)),
        key("queues", Type::Integer).range(Some(0), Some(64)),
        key("rate", Type::Number).range(Some(0), None),
        key("tag", Type::Integer).range(Some(1), Some(4094)),
    ];
    for model in NET_MODELS {
        keys.push(SubKey {
            key_alias: Some("model"),
            ..alias(model, "macaddr")
        });
    }
    Dict { keys }
});

static AGENT: LazyLock<Dict> = LazyLock::new(|| Dict {
    keys: vec![
        key("enabled", Type::Boolean).required().default_key(),
        key("freeze-fs-on-backup", Type::Boolean),
        key("fstrim_cloned_disks", Type::Boolean),
        key("type", Type::String).enumeration(&["virtio", "isa"]),
    ],
});

static MEMORY: LazyLock<Dict> = LazyLock::new(|| Dict {
    keys: vec![
        key("current", Type::Integer)
            .required()
            .default_key()
            .range(Some(16), None),
    ],
});

const VGA_TYPES: &[&str] = &[
    "cirrus",
    "qxl",
    "qxl2",
    "qxl3",
    "qxl4",
    "none",
    "serial0",
    "serial1",
    "serial2",
    "serial3",
    "std",
    "virtio",
    "virtio-gl",
    "vmware",
];

static VGA: LazyLock<Dict> = LazyLock::new(|| Dict {
    keys: vec![
        key("type", Type::String)
            .default_key()
            .enumeration(VGA_TYPES),
        key("memory", Type::Integer).range(Some(4), Some(512)),
        key("clipboard", Type::String).enumeration(&["vnc"]),
    ],
});

static IPCONFIG: LazyLock<Dict> = LazyLock::new(|| Dict {
    keys: vec![
        key("ip", Type::String).named(Named::PveIpv4Config),
        key("gw", Type::String).named(Named::Ipv4),
        key("ip6", Type::String).named(Named::PveIpv6Config),
        key("gw6", Type::String).named(Named::Ipv6),
    ],
});

static BOOT: LazyLock<Dict> = LazyLock::new(|| Dict {
    keys: vec![
        key("legacy", Type::String)
            .default_key()
            .named(Named::BootLegacy),
        key("order", Type::String).named(Named::BootOrder),
    ],
});

static CPU: LazyLock<Dict> = LazyLock::new(|| Dict {
    keys: vec![
        key("cputype", Type::String).default_key(),
        key("flags", Type::String),
        key("hidden", Type::Boolean),
        key("hv-vendor-id", Type::String),
        key("phys-bits", Type::String),
        key("reported-model", Type::String),
    ],
});

static CICUSTOM: LazyLock<Dict> = LazyLock::new(|| Dict {
    keys: vec![
        key("meta", Type::String).named(Named::PveVolumeId),
        key("network", Type::String).named(Named::PveVolumeId),
        key("user", Type::String).named(Named::PveVolumeId),
        key("vendor", Type::String).named(Named::PveVolumeId),
    ],
});

static STARTUP: LazyLock<Dict> = LazyLock::new(|| Dict {
    keys: vec![
        key("order", Type::Integer)
            .default_key()
            .range(Some(0), None),
        key("up", Type::Integer).range(Some(0), None),
        key("down", Type::Integer).range(Some(0), None),
    ],
});

static SMBIOS1: LazyLock<Dict> = LazyLock::new(|| Dict {
    keys: vec![
        key("uuid", Type::String),
        key("base64", Type::Boolean),
        key("family", Type::String),
        key("manufacturer", Type::String),
        key("product", Type::String),
        key("serial", Type::String),
        key("sku", Type::String),
        key("version", Type::String),
    ],
});

static WATCHDOG: LazyLock<Dict> = LazyLock::new(|| Dict {
    keys: vec![
        key("model", Type::String)
            .default_key()
            .enumeration(&["i6300esb", "ib700"]),
        key("action", Type::String)
            .enumeration(&["reset", "shutdown", "poweroff", "pause", "debug", "none"]),
    ],
});

static RNG: LazyLock<Dict> = LazyLock::new(|| Dict {
    keys: vec![
        key("source", Type::String)
            .required()
            .default_key()
            .enumeration(&["/dev/urandom", "/dev/random", "/dev/hwrng"]),
        key("max_bytes", Type::Integer),
        key("period", Type::Integer),
    ],
});

/// The property-string dict of a disk key, for the handlers.
pub fn drive_dict(key: &str) -> Option<&'static Dict> {
    match super::formats::disk_bus(key)?.0 {
        "ide" => Some(&IDE),
        "sata" => Some(&SATA),
        "scsi" => Some(&SCSI),
        "virtio" => Some(&VIRTIO),
        _ => None,
    }
}

/// Dicts the handlers parse values with.
pub fn net_dict() -> &'static Dict {
    &NET
}
pub fn agent_dict() -> &'static Dict {
    &AGENT
}
pub fn memory_dict() -> &'static Dict {
    &MEMORY
}
pub fn ipconfig_dict() -> &'static Dict {
    &IPCONFIG
}
pub fn efidisk_dict() -> &'static Dict {
    &EFIDISK
}
pub fn tpmstate_dict() -> &'static Dict {
    &TPMSTATE
}

fn options() -> Vec<P> {
    vec![
        P::bool("acpi"),
        P::string("agent").dict(&AGENT),
        P::bool("autostart"),
        P::int("balloon").min(0),
        P::string("bios").enumeration(&["seabios", "ovmf"]),
        P::string("boot").named_dict("pve-qm-boot", &BOOT),
        P::string("bootdisk")
            .named(Named::PveQmBootdisk)
            .pattern(Pattern::BootDisk),
        P::string("cdrom").named(Named::PveQmIde),
        P::string("cicustom").named_dict("pve-qm-cicustom", &CICUSTOM),
        P::string("cipassword"),
        P::string("citype").enumeration(&["configdrive2", "nocloud", "opennebula"]),
        P::bool("ciupgrade"),
        P::string("ciuser"),
        P::int("cores").min(1),
        P::string("cpu").named_dict("pve-vm-cpu-conf", &CPU),
        P::number("cpulimit").min(0).max(128),
        P::int("cpuunits").min(1).max(262144),
        P::string("description").max_len(8192),
        P::string("efidisk0").dict(&EFIDISK),
        P::string("hotplug").named(Named::PveHotplugFeatures),
        P::string("ide").indexed(0, 3).dict(&IDE),
        P::string("ipconfig")
            .indexed(0, 31)
            .named_dict("pve-qm-ipconfig", &IPCONFIG),
        P::bool("kvm"),
        P::bool("localtime"),
        P::string("memory").dict(&MEMORY),
        P::string("name").named(Named::DnsName),
        P::string("nameserver").named(Named::AddressList),
        P::string("net").indexed(0, 31).dict(&NET),
        P::bool("numa"),
        P::bool("onboot"),
        P::string("ostype").enumeration(&[
            "other", "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10", "win11",
            "l24", "l26", "solaris",
        ]),
        P::bool("protection"),
        P::string("rng0").named_dict("pve-qm-rng", &RNG),
        P::string("sata").indexed(0, 5).dict(&SATA),
        P::string("scsi").indexed(0, 30).dict(&SCSI),
        P::string("scsihw").enumeration(&[
            "lsi",
            "lsi53c810",
            "virtio-scsi-pci",
            "virtio-scsi-single",
            "megasas",
            "pvscsi",
        ]),
        P::string("searchdomain"),
        P::string("serial").indexed(0, 3).pattern(Pattern::Serial),
        P::int("shares").min(0).max(50000),
        P::string("smbios1")
            .named_dict("pve-qm-smbios1", &SMBIOS1)
            .max_len(512),
        P::int("sockets").min(1),
        P::string("sshkeys").named(Named::Urlencoded),
        P::string("startup").named_dict("pve-startup-order", &STARTUP),
        P::bool("tablet"),
        P::string("tags").named(Named::PveTagList),
        P::bool("template"),
        P::string("tpmstate0").dict(&TPMSTATE),
        P::int("vcpus").min(1),
        P::string("vga").dict(&VGA),
        P::string("virtio").indexed(0, 15).dict(&VIRTIO),
        P::string("vmgenid").pattern(Pattern::VmGenId),
        P::string("watchdog").named_dict("pve-qm-watchdog", &WATCHDOG),
    ]
}

pub(super) fn vm_options() -> &'static [Param] {
    static OPTS: LazyLock<Vec<Param>> =
        LazyLock::new(|| options().into_iter().map(P::done).collect());
    &OPTS
}

fn node() -> P {
    P::string("node").required().named(Named::PveNode)
}

fn vmid() -> P {
    P::int("vmid")
        .required()
        .named(Named::PveVmid)
        .min(100)
        .max(999_999_999)
}

pub(super) fn endpoints() -> Vec<Endpoint> {
    use Method::*;
    let base = "/nodes/{node}/qemu/{vmid}";
    let mut create = vec![
        node(),
        vmid(),
        P::bool("start"),
        P::string("storage").named(Named::PveStorageId),
    ];
    create.extend(options());
    let mut put = vec![
        node(),
        vmid(),
        P::string("delete").named(Named::PveConfigidList),
        P::string("digest").max_len(40),
        P::string("revert").named(Named::PveConfigidList),
        P::bool("force").requires("delete"),
        P::bool("skiplock"),
    ];
    put.extend(options());
    let mut post = vec![
        node(),
        vmid(),
        P::string("delete").named(Named::PveConfigidList),
        P::string("digest").max_len(40),
        P::string("revert").named(Named::PveConfigidList),
        P::bool("force").requires("delete"),
        P::bool("skiplock"),
        P::int("background_delay").min(1).max(30),
    ];
    post.extend(options());
    let p = |s: &str| -> &'static str { Box::leak(format!("{base}{s}").into_boxed_str()) };
    vec![
        Endpoint::new(
            Get,
            "/nodes/{node}/qemu",
            Op::QemuList,
            vec![node(), P::bool("full")],
        ),
        Endpoint::new(Post, "/nodes/{node}/qemu", Op::QemuCreate, create),
        Endpoint::new(Get, base, Op::QemuIndex, vec![node(), vmid()]),
        Endpoint::new(
            Delete,
            base,
            Op::QemuDelete,
            vec![
                node(),
                vmid(),
                P::bool("purge"),
                P::bool("destroy-unreferenced-disks"),
                P::bool("skiplock"),
            ],
        ),
        Endpoint::new(
            Get,
            p("/config"),
            Op::ConfigGet,
            vec![
                node(),
                vmid(),
                P::bool("current"),
                P::string("snapshot").named(Named::PveConfigid).max_len(40),
            ],
        ),
        Endpoint::new(Put, p("/config"), Op::ConfigPut, put),
        Endpoint::new(Post, p("/config"), Op::ConfigPost, post),
        Endpoint::new(
            Put,
            p("/resize"),
            Op::Resize,
            vec![
                node(),
                vmid(),
                P::string("disk").required().enumeration(DISK_KEYS),
                P::string("size").required().pattern(Pattern::ResizeSize),
                P::string("digest").max_len(40),
                P::bool("skiplock"),
            ],
        ),
        Endpoint::new(Get, p("/status"), Op::StatusIndex, vec![node(), vmid()]),
        Endpoint::new(
            Get,
            p("/status/current"),
            Op::StatusCurrent,
            vec![node(), vmid()],
        ),
        Endpoint::new(
            Post,
            p("/status/start"),
            Op::Start,
            vec![
                node(),
                vmid(),
                P::bool("skiplock"),
                P::int("timeout").min(0),
            ],
        ),
        Endpoint::new(
            Post,
            p("/status/stop"),
            Op::Stop,
            vec![
                node(),
                vmid(),
                P::bool("skiplock"),
                P::int("timeout").min(0),
                P::bool("keepActive"),
                P::bool("overrule-shutdown"),
            ],
        ),
        Endpoint::new(
            Post,
            p("/status/shutdown"),
            Op::Shutdown,
            vec![
                node(),
                vmid(),
                P::bool("skiplock"),
                P::int("timeout").min(0),
                P::bool("forceStop"),
                P::bool("keepActive"),
            ],
        ),
        Endpoint::new(
            Post,
            p("/status/reboot"),
            Op::Reboot,
            vec![node(), vmid(), P::int("timeout").min(0)],
        ),
        Endpoint::new(
            Post,
            p("/clone"),
            Op::Clone,
            vec![
                node(),
                vmid(),
                P::int("newid")
                    .required()
                    .named(Named::PveVmid)
                    .min(100)
                    .max(999_999_999),
                P::string("name").named(Named::DnsName),
                P::string("description"),
                P::bool("full"),
                P::string("storage").named(Named::PveStorageId),
                P::string("format").enumeration(&["raw", "qcow2", "vmdk"]),
                P::string("target").named(Named::PveNode),
                P::int("bwlimit").min(0),
            ],
        ),
        Endpoint::new(
            Post,
            p("/template"),
            Op::Template,
            vec![node(), vmid(), P::string("disk").enumeration(DISK_KEYS)],
        ),
        Endpoint::new(Get, p("/agent"), Op::AgentIndex, vec![node(), vmid()]),
        Endpoint::new(
            Get,
            p("/agent/network-get-interfaces"),
            Op::AgentNetwork,
            vec![node(), vmid()],
        ),
    ]
}
