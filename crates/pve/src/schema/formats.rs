//! Named formats and property strings, checked the way PVE's JSONSchema
//! checks them (`check_format`, `parse_property_string`), with PVE's texts.
//!
//! Error texts that end in `\n` are PVE `die` messages (they keep the
//! newline on the wire); the others are `add_error` texts without one.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::{Schema, Type, check_value};

/// A format PVE registers by name and checks with code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Named {
    PveVmid,
    PveNode,
    DnsName,
    PveStorageId,
    PveConfigid,
    PveConfigidList,
    PveTagList,
    Urlencoded,
    AddressList,
    PveUserid,
    PveRealm,
    PveIface,
    PveIfaceList,
    PveBridgeId,
    Ipv4,
    Ipv6,
    Ipv4Mask,
    CidrV4,
    CidrV6,
    MacAddr,
    PveStorageContent,
    PveStorageContentList,
    PveVolumeId,
    PveVolumeIdOrQmPath,
    PveVolumeIdOrAbsolutePath,
    PveQmIde,
    PveQmBootdisk,
    PveHotplugFeatures,
    DiskSize,
    PvePrivList,
    PveIpv4Config,
    PveIpv6Config,
    BootLegacy,
    BootOrder,
}

impl Named {
    /// The name PVE's schema uses for this format.
    pub fn pve_name(self) -> &'static str {
        match self {
            Named::PveVmid => "pve-vmid",
            Named::PveNode => "pve-node",
            Named::DnsName => "dns-name",
            Named::PveStorageId => "pve-storage-id",
            Named::PveConfigid => "pve-configid",
            Named::PveConfigidList => "pve-configid-list",
            Named::PveTagList => "pve-tag-list",
            Named::Urlencoded => "urlencoded",
            Named::AddressList => "address-list",
            Named::PveUserid => "pve-userid",
            Named::PveRealm => "pve-realm",
            Named::PveIface => "pve-iface",
            Named::PveIfaceList => "pve-iface-list",
            Named::PveBridgeId => "pve-bridge-id",
            Named::Ipv4 => "ipv4",
            Named::Ipv6 => "ipv6",
            Named::Ipv4Mask => "ipv4mask",
            Named::CidrV4 => "CIDRv4",
            Named::CidrV6 => "CIDRv6",
            Named::MacAddr => "mac-addr",
            Named::PveStorageContent => "pve-storage-content",
            Named::PveStorageContentList => "pve-storage-content-list",
            Named::PveVolumeId => "pve-volume-id",
            Named::PveVolumeIdOrQmPath => "pve-volume-id-or-qm-path",
            Named::PveVolumeIdOrAbsolutePath => "pve-volume-id-or-absolute-path",
            Named::PveQmIde => "pve-qm-ide",
            Named::PveQmBootdisk => "pve-qm-bootdisk",
            Named::PveHotplugFeatures => "pve-hotplug-features",
            Named::DiskSize => "disk-size",
            Named::PvePrivList => "pve-priv-list",
            Named::PveIpv4Config => "pve-ipv4-config",
            Named::PveIpv6Config => "pve-ipv6-config",
            Named::BootLegacy => "pve-qm-boot-legacy",
            Named::BootOrder => "pve-qm-bootdev-list",
        }
    }

    /// Checks `value`; the error is PVE's `die` text.
    pub fn check(self, value: &str) -> Result<(), String> {
        let ok = match self {
            Named::PveVmid => is_vmid(value),
            Named::PveNode => is_node_name(value),
            Named::DnsName => is_dns_name(value),
            Named::PveStorageId => {
                return if is_storage_id(value) {
                    Ok(())
                } else {
                    Err(format!(
                        "storage ID '{value}' contains illegal characters\n"
                    ))
                };
            }
            Named::PveConfigid => {
                return if is_configid(value) {
                    Ok(())
                } else {
                    Err(format!("invalid configuration ID '{value}'\n"))
                };
            }
            Named::PveConfigidList => {
                for id in split_list(value) {
                    if !is_configid(id) {
                        return Err(format!("invalid configuration ID '{id}'\n"));
                    }
                }
                return Ok(());
            }
            Named::PveTagList => {
                for tag in split_list(value) {
                    if !is_tag(tag) {
                        return Err("invalid characters in tag\n".into());
                    }
                }
                return Ok(());
            }
            Named::Urlencoded => {
                return if is_urlencoded(value) {
                    Ok(())
                } else {
                    Err(format!("invalid urlencoded string: {value}\n"))
                };
            }
            Named::AddressList => {
                for addr in split_list(value) {
                    if addr.parse::<std::net::IpAddr>().is_err() {
                        return Err(format!("unable to parse address '{addr}'\n"));
                    }
                }
                return Ok(());
            }
            Named::PveUserid => {
                return if is_userid(value) {
                    Ok(())
                } else {
                    Err(format!(
                        "value '{value}' does not look like a valid user name\n"
                    ))
                };
            }
            Named::PveRealm => is_realm(value),
            Named::PveIface => {
                return if is_iface(value) {
                    Ok(())
                } else {
                    Err(format!("invalid network interface name '{value}'\n"))
                };
            }
            Named::PveIfaceList => {
                for iface in split_list(value) {
                    if !is_iface(iface) {
                        return Err(format!("invalid network interface name '{iface}'\n"));
                    }
                }
                return Ok(());
            }
            Named::PveBridgeId => {
                return if is_bridge(value) {
                    Ok(())
                } else {
                    Err(format!("invalid bridge ID '{value}'\n"))
                };
            }
            Named::Ipv4 => {
                return if value.parse::<Ipv4Addr>().is_ok() {
                    Ok(())
                } else {
                    Err("value does not look like a valid IPv4 address\n".into())
                };
            }
            Named::Ipv6 => {
                return if value.parse::<Ipv6Addr>().is_ok() {
                    Ok(())
                } else {
                    Err("value does not look like a valid IPv6 address\n".into())
                };
            }
            Named::Ipv4Mask => is_ipv4_mask(value),
            Named::CidrV4 => {
                return if is_cidr_v4(value) {
                    Ok(())
                } else {
                    Err("value does not look like a valid IPv4 CIDR network\n".into())
                };
            }
            Named::CidrV6 => {
                return if is_cidr_v6(value) {
                    Ok(())
                } else {
                    Err("value does not look like a valid IPv6 CIDR network\n".into())
                };
            }
            Named::MacAddr => {
                return if is_unicast_mac(value) {
                    Ok(())
                } else {
                    Err("value does not look like a valid unicast MAC address\n".into())
                };
            }
            Named::PveStorageContent => {
                return if CONTENT_TYPES.contains(&value) {
                    Ok(())
                } else {
                    Err(format!("invalid content type '{value}'\n"))
                };
            }
            Named::PveStorageContentList => {
                for c in split_list(value) {
                    if !CONTENT_TYPES.contains(&c) {
                        return Err(format!("invalid content type '{c}'\n"));
                    }
                }
                return Ok(());
            }
            Named::PveVolumeId => return check_volume_id(value),
            Named::PveVolumeIdOrQmPath => {
                if value == "none" || value == "cdrom" || value.starts_with('/') {
                    return Ok(());
                }
                return check_volume_id(value);
            }
            Named::PveVolumeIdOrAbsolutePath => {
                if value.starts_with('/') {
                    return Ok(());
                }
                return check_volume_id(value);
            }
            Named::PveQmIde => {
                if value == "none" || value == "cdrom" || value.starts_with('/') {
                    return Ok(());
                }
                return check_volume_id(value);
            }
            Named::PveQmBootdisk => is_disk_key(value),
            Named::PveHotplugFeatures => {
                value == "0"
                    || value == "1"
                    || split_list(value).all(|f| {
                        ["network", "disk", "cpu", "memory", "usb", "cloudinit"].contains(&f)
                    })
            }
            Named::DiskSize => parse_size(value).is_some(),
            Named::PvePrivList => split_list(value)
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')),
            Named::PveIpv4Config => {
                return if value == "dhcp" || value == "manual" || is_cidr_v4(value) {
                    Ok(())
                } else {
                    Err("value does not look like a valid ipv4 network configuration\n".into())
                };
            }
            Named::PveIpv6Config => {
                return if ["dhcp", "auto", "manual"].contains(&value) || is_cidr_v6(value) {
                    Ok(())
                } else {
                    Err("value does not look like a valid ipv6 network configuration\n".into())
                };
            }
            Named::BootLegacy => {
                return if (1..=4).contains(&value.len())
                    && value
                        .bytes()
                        .all(|c| matches!(c, b'a' | b'c' | b'd' | b'n'))
                {
                    Ok(())
                } else {
                    Err("value does not match the regex pattern".into())
                };
            }
            Named::BootOrder => {
                for dev in value.split(';') {
                    if !is_boot_device(dev) {
                        return Err(format!("invalid boot device '{dev}'\n"));
                    }
                }
                return Ok(());
            }
        };
        if ok {
            Ok(())
        } else {
            Err(match self {
                Named::PveVmid => "value does not look like a valid VM ID\n".to_string(),
                Named::PveNode => "value does not look like a valid node name\n".to_string(),
                Named::DnsName => "value does not look like a valid DNS name\n".to_string(),
                Named::PveQmBootdisk => format!("invalid boot disk '{value}'\n"),
                Named::DiskSize => format!("unable to parse size '{value}'\n"),
                Named::Ipv4Mask => "value does not look like a valid IP netmask\n".to_string(),
                other => format!("value does not match format '{}'\n", other.pve_name()),
            })
        }
    }
}

/// Storage content types PVE knows.
pub const CONTENT_TYPES: &[&str] = &[
    "images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import", "none",
];

/// One key of a property string.
#[derive(Clone, Debug)]
pub struct SubKey {
    pub name: &'static str,
    pub schema: Schema,
    pub required: bool,
    /// The key a value without `key=` belongs to.
    pub default_key: bool,
    /// `name` is another spelling of this key (`volume` → `file`).
    pub alias: Option<&'static str>,
    /// `virtio=MAC`: the key names a value of this key (`model`), the value
    /// goes to `alias` (`macaddr`).
    pub key_alias: Option<&'static str>,
}

/// The keys of a property string.
#[derive(Clone, Debug)]
pub struct Dict {
    pub keys: Vec<SubKey>,
}

impl Dict {
    pub fn key(&self, name: &str) -> Option<&SubKey> {
        self.keys.iter().find(|k| k.name == name)
    }
}

/// A parsed property string: keys in the order given, aliases resolved.
pub type Props = BTreeMap<String, String>;

/// Parses `value` as PVE's `parse_property_string` does; `path` names the
/// parameter in nested error texts (`ipconfig0.gw: …`).
pub fn parse_property_string(dict: &Dict, value: &str, path: &str) -> Result<Props, String> {
    let mut res = Props::new();
    let mut default_used = false;
    for part in value.split(',') {
        if part.trim().is_empty() {
            continue;
        }
        if let Some((k, v)) = part
            .split_once('=')
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        {
            if res.contains_key(k) {
                return Err(format!(
                    "duplicate key in comma-separated list property: {k}\n"
                ));
            }
            let mut key = k;
            let mut spec = dict.key(k);
            if let Some(alias) = spec.and_then(|s| s.alias) {
                if let Some(key_alias) = spec.and_then(|s| s.key_alias) {
                    if res.contains_key(key_alias) {
                        return Err(format!("key alias '{key_alias}' is already defined\n"));
                    }
                    res.insert(key_alias.to_string(), k.to_string());
                }
                key = alias;
                spec = dict.key(alias);
            }
            let Some(spec) = spec else {
                return Err(format!(
                    "invalid key in comma-separated list property: {key}\n"
                ));
            };
            let v = if spec.schema.ty == Type::Boolean {
                parse_boolean(v).map(|b| if b { "1" } else { "0" }.to_string())
            } else {
                None
            }
            .unwrap_or_else(|| v.to_string());
            res.insert(key.to_string(), v);
        } else if !part.contains('=') {
            let Some(default) = dict.keys.iter().find(|k| k.default_key) else {
                return Err("value without key, but schema does not define a default key\n".into());
            };
            if default_used || res.contains_key(default.name) {
                return Err(format!(
                    "duplicate key in comma-separated list property: {}\n",
                    default.name
                ));
            }
            default_used = true;
            res.insert(default.name.to_string(), part.to_string());
        } else {
            return Err("missing key in comma-separated list property\n".into());
        }
    }
    let mut errors = BTreeMap::new();
    for key in &dict.keys {
        if key.alias.is_some() {
            continue;
        }
        let sub_path = format!("{path}.{}", key.name);
        match res.get(key.name) {
            None if key.required => {
                errors.insert(
                    sub_path,
                    "property is missing and it is not optional".into(),
                );
            }
            None => {}
            Some(v) => {
                if let Err(e) = check_value(&key.schema, v) {
                    errors.insert(sub_path, e);
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(res)
    } else {
        let mut text = String::from("format error\n");
        for (k, e) in errors {
            text.push_str(&format!("{k}: {e}\n"));
        }
        Err(text)
    }
}

/// PVE's `parse_boolean`.
pub fn parse_boolean(v: &str) -> Option<bool> {
    let l = v.to_ascii_lowercase();
    match l.as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// PVE's `split_list`: items separated by `,`, `;`, whitespace or NUL.
pub fn split_list(v: &str) -> impl Iterator<Item = &str> {
    v.split(|c: char| c == ',' || c == ';' || c == '\0' || c.is_whitespace())
        .filter(|s| !s.is_empty())
}

/// `^[1-9][0-9]{2,8}$`
pub fn is_vmid(v: &str) -> bool {
    let b = v.as_bytes();
    (3..=9).contains(&b.len()) && b[0] != b'0' && b.iter().all(u8::is_ascii_digit)
}

use homestak_base::id::is_label;

pub fn is_node_name(v: &str) -> bool {
    is_label(v)
}

pub fn is_dns_name(v: &str) -> bool {
    !v.is_empty() && v.split('.').all(is_label)
}

/// `^[a-z][a-z0-9\-\_\.]*[a-z0-9]$`, case-insensitive.
pub fn is_storage_id(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphabetic()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// `^[a-z][a-z0-9_]+$`, case-insensitive (config keys such as `scsi0`).
pub fn is_configid(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphabetic()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-'))
}

/// `[a-z0-9_][a-z0-9_\-\+\.]*`, case-insensitive.
pub fn is_tag(v: &str) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'+' | b'.'))
}

/// `^[-%a-zA-Z0-9_.!~*'()]*$`
pub fn is_urlencoded(v: &str) -> bool {
    v.bytes().all(|c| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'%' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
            )
    })
}

/// `user@realm`, with user free of `@`, `:` and control characters.
pub fn is_userid(v: &str) -> bool {
    match v.rsplit_once('@') {
        Some((user, realm)) => {
            !user.is_empty()
                && user.len() <= 60
                && !user
                    .chars()
                    .any(|c| c == ':' || c == '@' || c == '/' || c.is_control())
                && is_realm(realm)
        }
        None => false,
    }
}

/// `[A-Za-z][A-Za-z0-9\.\-_]+`
pub fn is_realm(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() >= 2
        && b.len() <= 32
        && b[0].is_ascii_alphabetic()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'))
}

/// `[a-zA-Z][a-zA-Z0-9_]{1,20}([:\.]\d+)?`
pub fn is_iface(v: &str) -> bool {
    let (base, suffix) = match v.find([':', '.']) {
        Some(i) => (&v[..i], Some(&v[i + 1..])),
        None => (v, None),
    };
    let b = base.as_bytes();
    (2..=21).contains(&b.len())
        && b[0].is_ascii_alphabetic()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
        && suffix.is_none_or(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
}

/// `[-_.\w\d]+`
pub fn is_bridge(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_ipv4_mask(v: &str) -> bool {
    match v.parse::<Ipv4Addr>() {
        Ok(ip) => {
            let bits = u32::from(ip);
            bits.leading_ones() + bits.trailing_zeros() == 32
        }
        Err(_) => false,
    }
}

pub fn is_cidr_v4(v: &str) -> bool {
    match v.split_once('/') {
        Some((ip, len)) => {
            ip.parse::<Ipv4Addr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 32)
        }
        None => false,
    }
}

pub fn is_cidr_v6(v: &str) -> bool {
    match v.split_once('/') {
        Some((ip, len)) => {
            ip.parse::<Ipv6Addr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 128)
        }
        None => false,
    }
}

/// Six hex octets with the multicast bit of the first one clear.
pub fn is_unicast_mac(v: &str) -> bool {
    let parts: Vec<&str> = v.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|c| c.is_ascii_hexdigit()))
        && u8::from_str_radix(parts[0], 16).is_ok_and(|b| b & 1 == 0)
}

/// `storage:volname`, as PVE's `parse_volume_id`.
pub fn check_volume_id(v: &str) -> Result<(), String> {
    match v.split_once(':') {
        Some((storage, name)) if is_storage_id(storage) && !name.is_empty() => Ok(()),
        _ => Err(format!("unable to parse volume ID '{v}'\n")),
    }
}

/// `ide0`…`ide3`, `sata0`…`sata5`, `scsi0`…`scsi30`, `virtio0`…`virtio15`.
pub fn is_disk_key(v: &str) -> bool {
    disk_bus(v).is_some()
}

/// A device `boot: order=` may name: a disk, a NIC, a PCI or USB device.
pub fn is_boot_device(v: &str) -> bool {
    is_disk_key(v)
        || v == "efidisk0"
        || ["net", "hostpci", "usb"].iter().any(|p| {
            v.strip_prefix(p)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
        })
}

/// The bus and index of a disk key.
pub fn disk_bus(v: &str) -> Option<(&'static str, u32)> {
    for (bus, max) in [("ide", 3), ("sata", 5), ("scsi", 30), ("virtio", 15)] {
        if let Some(n) = v.strip_prefix(bus)
            && !n.is_empty()
            && n.bytes().all(|c| c.is_ascii_digit())
            && (n == "0" || !n.starts_with('0'))
        {
            let i: u32 = n.parse().ok()?;
            if i <= max {
                return Some((bus, i));
            }
        }
    }
    None
}

/// Parses a PVE size (`32`, `32G`, `1.5T`, `512M`) to bytes; no unit = bytes.
pub fn parse_size(v: &str) -> Option<u64> {
    let (num, unit) = match v.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&v[..i], Some(c)),
        _ => (v, None),
    };
    if num.is_empty() || !num.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit {
        None => 1.0,
        Some('K') => 1024.0,
        Some('M') => 1024.0 * 1024.0,
        Some('G') => 1024.0 * 1024.0 * 1024.0,
        Some('T') => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        Some(_) => return None,
    };
    let bytes = n * mult;
    (bytes.is_finite() && (0.0..1.0e18).contains(&bytes)).then_some(bytes as u64)
}

/// Renders bytes as PVE writes disk sizes (`32G`, `512M`, `1536K`).
pub fn format_size(bytes: u64) -> String {
    const K: u64 = 1024;
    for (unit, mult) in [
        ('T', K * K * K * K),
        ('G', K * K * K),
        ('M', K * K),
        ('K', K),
    ] {
        if bytes >= mult && bytes.is_multiple_of(mult) {
            return format!("{}{unit}", bytes / mult);
        }
    }
    if bytes.is_multiple_of(K) {
        format!("{}K", bytes / K)
    } else {
        bytes.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmid_format_matches_pve() {
        for ok in ["100", "999999999", "4242"] {
            assert!(is_vmid(ok), "{ok}");
        }
        for bad in ["99", "0100", "1000000000", "abc", ""] {
            assert!(!is_vmid(bad), "{bad}");
        }
    }

    #[test]
    fn sizes_round_trip() {
        assert_eq!(parse_size("32G"), Some(32 << 30));
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("1Q"), None);
        assert_eq!(format_size(32 << 30), "32G");
        assert_eq!(format_size(3 << 29), "1536M");
        assert_eq!(format_size(4 << 40), "4T");
    }

    #[test]
    fn disk_keys_have_pve_ranges() {
        assert_eq!(disk_bus("scsi30"), Some(("scsi", 30)));
        assert_eq!(disk_bus("scsi31"), None);
        assert_eq!(disk_bus("ide3"), Some(("ide", 3)));
        assert_eq!(disk_bus("ide4"), None);
        assert_eq!(disk_bus("virtio01"), None);
        assert_eq!(disk_bus("net0"), None);
    }

    #[test]
    fn tags_and_macs() {
        assert!(is_tag("homestak"));
        assert!(is_tag("a+b.c-d_e"));
        assert!(!is_tag("-x"));
        assert!(!is_tag("a/b"));
        assert!(is_unicast_mac("F2:1A:5C:65:0F:38"));
        assert!(!is_unicast_mac("F3:1A:5C:65:0F:38"));
        assert!(!is_unicast_mac("F2:1A:5C:65:0F"));
    }

    #[test]
    fn urlencoded_rejects_plus_and_space() {
        assert!(is_urlencoded("ssh-ed25519%20AAAA%2B%2F%3D%20me%40host"));
        assert!(!is_urlencoded("ssh-ed25519+AAAA"));
        assert!(!is_urlencoded("ssh-ed25519 AAAA"));
    }
}
