//! Translation between the planner's VM model and PVE's config options:
//! what a VM of ours looks like in PVE, and what a PVE config tells us back.
//! Both directions live here so they cannot drift apart.

use std::collections::BTreeSet;

use homestak_base::id::{NodeName, PveNode, VmId};
use homestak_core::plan::marks::{self, Claim, Marks, OwnerKey, TAG};
use homestak_core::plan::{DesiredVm, IpConfig, ObservedVm, Power};
use homestak_pve::{self as pve, ClusterResource, Disk, Net, VmConfig, VmOptions};

/// The boot disk key every homestak VM uses.
pub const BOOT_DISK: &str = "scsi0";

/// The import volume of an image on `storage`.
pub fn image_volume(storage: &str, image: &str) -> String {
    format!("{storage}:import/{}", image_file(image))
}

/// The file name of an image in an `import` directory.
pub fn image_file(image: &str) -> String {
    format!("{image}.qcow2")
}

/// The marks a VM for `want` carries.
pub fn marks_for(manifest: &str, want: &DesiredVm) -> Marks {
    Marks {
        manifest: manifest.to_string(),
        node: want.name.clone(),
        image: want.image.clone(),
        spec_hash: want.spec_hash(),
    }
}

fn ip_option(ip: &IpConfig) -> pve::IpConfig {
    match ip {
        IpConfig::Dhcp => pve::IpConfig::dhcp(),
        IpConfig::Static { cidr, gateway } => pve::IpConfig::static_v4(cidr, gateway.clone()),
    }
}

/// The tags of our VM at `vmid`: the plain tag and the keyed one.
pub fn tags_for(key: &OwnerKey, vmid: VmId, manifest: &str, want: &DesiredVm) -> Vec<String> {
    vec![
        TAG.to_string(),
        marks::owner_tag(key, vmid, manifest, &want.name),
    ]
}

/// Options every update rewrites: everything managed except disks and NICs
/// (a NIC rewrite would change its MAC; see [`net_update`]). The marks are
/// bound to `vmid` under `key`.
pub fn managed_options(manifest: &str, want: &DesiredVm, key: &OwnerKey, vmid: VmId) -> VmOptions {
    VmOptions {
        name: Some(want.name.to_string()),
        description: Some(marks_for(manifest, want).to_description(key, vmid)),
        tags: Some(tags_for(key, vmid, manifest, want)),
        cores: Some(want.cores),
        memory: Some(want.memory_mib),
        ipconfigs: vec![(0, ip_option(&want.ip))],
        ciuser: Some(want.user.clone()),
        sshkeys: (!want.ssh_keys.is_empty()).then(|| want.ssh_keys.join("\n")),
        nameserver: want.nameserver.clone(),
        searchdomain: want.searchdomain.clone(),
        ..VmOptions::default()
    }
}

/// Options of a new VM: imported boot disk, cloud-init drive, serial
/// console, guest agent, and the managed options.
pub fn create_options(
    manifest: &str,
    want: &DesiredVm,
    image_storage: &str,
    key: &OwnerKey,
    vmid: VmId,
) -> VmOptions {
    let mut options = managed_options(manifest, want, key, vmid);
    options.ostype = Some("l26".into());
    options.scsihw = Some("virtio-scsi-single".into());
    options.agent = Some("1".into());
    options.onboot = Some(true);
    options.serial0 = Some("socket".into());
    options.vga = Some("serial0".into());
    options.boot_order = Some(vec![BOOT_DISK.into()]);
    options.disks = vec![
        (
            BOOT_DISK.to_string(),
            Disk::import(&want.storage, image_volume(image_storage, &want.image)),
        ),
        ("ide2".to_string(), Disk::cloudinit(&want.storage)),
    ];
    options.nets = vec![(0, Net::virtio(&want.bridge))];
    options
}

/// A `net0` value that moves the NIC to `bridge` but keeps its model and
/// MAC (rewriting it without the MAC would give the guest a new NIC).
pub fn net_update(current: Option<&str>, bridge: &str) -> String {
    let Some(current) = current else {
        return Net::virtio(bridge).render();
    };
    let prop = pve::PropertyString::parse(current);
    let mut out = pve::PropertyString::new();
    let mut saw_bridge = false;
    for (key, value) in prop.items() {
        match key {
            Some("bridge") => {
                out = out.kv("bridge", bridge);
                saw_bridge = true;
            }
            Some(k) => out = out.kv(k, value),
            None => out = out.value(value),
        }
    }
    if !saw_bridge {
        out = out.kv("bridge", bridge);
    }
    out.to_string()
}

/// Parses `ipconfig0` back into the planner's form.
pub fn parse_ipconfig(text: &str) -> Option<IpConfig> {
    let prop = pve::PropertyString::parse(text);
    match prop.get("ip")? {
        "dhcp" => Some(IpConfig::Dhcp),
        cidr => Some(IpConfig::Static {
            cidr: cidr.to_string(),
            gateway: prop.get("gw").map(str::to_string),
        }),
    }
}

/// Rounds a size in bytes to whole GiB (PVE sizes disks in GiB steps).
/// Saturates instead of overflowing on an absurd size from PVE.
pub fn bytes_to_gib(bytes: u64) -> u64 {
    bytes.saturating_add(1 << 29) >> 30
}

/// What the store remembers: the vmid of a node, for settling legacy
/// marks ([`Claim::vouch`]).
pub type Remembered<'a> = &'a dyn Fn(&NodeName) -> Option<VmId>;

/// The claim of the VM at `vmid` with `config`, judged under `key`.
pub fn claim(
    key: &OwnerKey,
    vmid: VmId,
    config: &VmConfig,
    remembered: Remembered<'_>,
) -> Option<Claim> {
    let template = config.get("template").as_deref() == Some("1");
    Claim::read(
        key,
        vmid,
        config.description().as_deref(),
        &config.tag_set(),
        template,
    )
    .map(|c| c.vouch(vmid, remembered))
}

/// The observed view of a VM from its bulk entry and, when read, its config
/// (its marks judged under `key`); `None` for an entry without a vmid and
/// node PVE could have made.
pub fn observed(
    resource: &ClusterResource,
    config: Option<&VmConfig>,
    key: &OwnerKey,
    remembered: Remembered<'_>,
) -> Option<ObservedVm> {
    let vmid = VmId::new(resource.vmid?.into()).ok()?;
    let node = PveNode::new(resource.node.clone()?).ok()?;
    let power = match resource.status.as_deref() {
        Some("running") => Power::Running,
        Some("stopped") => Power::Stopped,
        _ => Power::Other,
    };
    let tags: BTreeSet<String> = match config {
        Some(c) => c.tag_set(),
        None => resource.tag_set(),
    };
    let mut vm = ObservedVm {
        vmid,
        name: resource.name.clone(),
        node,
        power,
        lock: resource.lock.clone().filter(|l| !l.is_empty()),
        template: resource.template,
        tags,
        claim: None,
        owner_tag: None,
        // `as` saturates (and maps NaN to 0): a float from PVE cannot wrap.
        cores: resource.maxcpu.map(|c| c as u32),
        memory_mib: resource.maxmem.map(|m| m >> 20),
        disk_gib: None,
        bridge: None,
        ip: None,
    };
    if let Some(config) = config {
        // The config is the later read: a create may have finished (and
        // dropped its lock) since the bulk read.
        vm.lock = config.get("lock").filter(|l| !l.is_empty());
        vm.name = config.name().or(vm.name);
        vm.template |= config.get("template").as_deref() == Some("1");
        vm.claim = claim(key, vmid, config, remembered);
        vm.owner_tag = vm
            .claim
            .as_ref()
            .and_then(Claim::owned)
            .map(|m| marks::owner_tag(key, vmid, &m.manifest, &m.node));
        // PVE's default when `cores` is absent is 1.
        vm.cores = Some(u32::try_from(config.cores().unwrap_or(1)).unwrap_or(u32::MAX));
        vm.memory_mib = config.memory_mib().or(vm.memory_mib);
        vm.disk_gib = config
            .disk(BOOT_DISK)
            .and_then(|d| d.size_bytes)
            .map(bytes_to_gib);
        vm.bridge = config
            .property("net0")
            .and_then(|p| p.get("bridge").map(str::to_string));
        vm.ip = config.get("ipconfig0").as_deref().and_then(parse_ipconfig);
    }
    Some(vm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_update_keeps_model_and_mac() {
        assert_eq!(
            net_update(
                Some("virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1"),
                "vmbr1"
            ),
            "virtio=BC:24:11:00:00:01,bridge=vmbr1,firewall=1"
        );
        assert_eq!(net_update(None, "vmbr2"), Net::virtio("vmbr2").render());
    }

    #[test]
    fn ipconfig_round_trips() {
        for ip in [
            IpConfig::Dhcp,
            IpConfig::Static {
                cidr: "10.0.12.50/24".into(),
                gateway: Some("10.0.12.1".into()),
            },
            IpConfig::Static {
                cidr: "10.0.12.51/24".into(),
                gateway: None,
            },
        ] {
            assert_eq!(parse_ipconfig(&ip_option(&ip).render()), Some(ip.clone()));
            assert_eq!(parse_ipconfig(&ip.to_pve()), Some(ip));
        }
    }

    #[test]
    fn gib_rounding() {
        assert_eq!(bytes_to_gib(10 << 30), 10);
        assert_eq!(bytes_to_gib((10 << 30) - 4096), 10);
        assert_eq!(bytes_to_gib(2361393152), 2);
        assert_eq!(bytes_to_gib(u64::MAX), u64::MAX >> 30);
    }
}
