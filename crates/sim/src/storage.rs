//! Storages and their volumes: allocation names as PVE makes them
//! (`vm-100-disk-0`, `100/vm-100-disk-0.qcow2`, `base-…`, `…-cloudinit`),
//! images for `import-from`, and the JSON of the storage endpoints.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::config::{StorageConfig, StorageKind};

/// One volume.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Volume {
    /// The part after `storage:`.
    pub name: String,
    /// `images`, `rootdir`, `import`, `iso`, `vztmpl`, `snippets`, …
    pub content: String,
    pub format: String,
    /// Bytes (for disks: the virtual size).
    pub size: u64,
    /// Disk size a VM gets when importing this image.
    #[serde(default)]
    pub virtual_size: Option<u64>,
    pub vmid: Option<u32>,
    pub ctime: i64,
    /// A Proxmox VE image (nested tiers).
    #[serde(default)]
    pub pve_image: bool,
    /// What a snippet holds (cloud-init user-data): volumes otherwise have
    /// sizes, not contents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// One storage of a node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Storage {
    pub id: String,
    pub kind: StorageKind,
    pub content: Vec<String>,
    pub total: u64,
    pub shared: bool,
    pub lock_hold: Option<f64>,
    pub volumes: BTreeMap<String, Volume>,
}

impl Storage {
    pub fn from_config(c: &StorageConfig) -> Self {
        Storage {
            id: c.id.clone(),
            kind: c.kind,
            content: c.content.clone(),
            total: c.size.0,
            shared: c.shared,
            lock_hold: c.lock_hold,
            volumes: BTreeMap::new(),
        }
    }

    pub fn supports(&self, content: &str) -> bool {
        self.content.iter().any(|c| c == content)
    }

    pub fn used(&self) -> u64 {
        self.volumes.values().map(|v| v.size).sum()
    }

    pub fn avail(&self) -> u64 {
        self.total.saturating_sub(self.used())
    }

    /// `/var/lib/vz` for `local`, `/mnt/pve/<id>` for other file storages.
    pub fn path(&self) -> String {
        if self.id == "local" {
            "/var/lib/vz".into()
        } else {
            format!("/mnt/pve/{}", self.id)
        }
    }

    /// The error PVE gives when this storage's lock times out: a flock on
    /// local storage, a cluster-filesystem lock on shared storage.
    pub fn lock_timeout_message(&self) -> String {
        if self.shared {
            format!(
                "cfs-lock 'storage-{}' error: got lock request timeout",
                self.id
            )
        } else {
            format!(
                "can't lock file '/var/lock/pve-manager/pve-storage-{}' - got timeout",
                self.id
            )
        }
    }

    /// Default disk format: qcow2 on file storages, raw on block storages.
    pub fn default_format(&self) -> &'static str {
        if self.kind.file_based() {
            "qcow2"
        } else {
            "raw"
        }
    }

    /// Allocates a disk for `vmid`, named as PVE would; returns its volid.
    pub fn alloc_disk(&mut self, vmid: u32, size: u64, format: Option<&str>, now: i64) -> String {
        let format = format.unwrap_or(self.default_format()).to_string();
        // Like PVE's find_free_diskname: a number is taken whatever the
        // format or prefix (`vm-`/`base-`) of the existing volume.
        let stem = |name: &str| -> String {
            let file = name.rsplit('/').next().unwrap_or(name);
            let file = file.split('.').next().unwrap_or(file);
            file.replacen("base-", "vm-", 1)
        };
        // Only the volumes named after `vmid` can hold its numbers: look at
        // those (by name prefix) instead of every volume of the storage.
        let prefixes = if self.kind.file_based() {
            [format!("{vmid}/vm-{vmid}-"), format!("{vmid}/base-{vmid}-")]
        } else {
            [format!("vm-{vmid}-"), format!("base-{vmid}-")]
        };
        let taken: std::collections::BTreeSet<String> = prefixes
            .iter()
            .flat_map(|p| {
                self.volumes
                    .range::<str, _>((Bound::Included(p.as_str()), Bound::Unbounded))
                    .map(|(k, _)| k)
                    .take_while(move |k| k.starts_with(p.as_str()))
            })
            .map(|k| stem(k))
            .collect();
        let mut n = 0;
        let name = loop {
            let candidate = self.disk_name(vmid, &format!("disk-{n}"), &format, "vm");
            if !taken.contains(&stem(&candidate)) {
                break candidate;
            }
            n += 1;
        };
        self.insert_disk(&name, vmid, size, &format, now)
    }

    /// Allocates the cloud-init drive of `vmid`.
    pub fn alloc_cloudinit(&mut self, vmid: u32, now: i64) -> String {
        let format = if self.kind.file_based() {
            "qcow2"
        } else {
            "raw"
        };
        let name = self.disk_name(vmid, "cloudinit", format, "vm");
        self.insert_disk(&name, vmid, 4 << 20, format, now)
    }

    fn disk_name(&self, vmid: u32, what: &str, format: &str, prefix: &str) -> String {
        if self.kind.file_based() {
            format!("{vmid}/{prefix}-{vmid}-{what}.{format}")
        } else {
            format!("{prefix}-{vmid}-{what}")
        }
    }

    fn insert_disk(&mut self, name: &str, vmid: u32, size: u64, format: &str, now: i64) -> String {
        self.volumes.insert(
            name.to_string(),
            Volume {
                name: name.to_string(),
                content: "images".into(),
                format: format.to_string(),
                size,
                virtual_size: None,
                vmid: Some(vmid),
                ctime: now,
                pve_image: false,
                text: None,
            },
        );
        format!("{}:{name}", self.id)
    }

    /// Renames `vm-N-disk-M` to `base-N-disk-M` (template conversion).
    pub fn make_base(&mut self, name: &str) -> Option<String> {
        let vol = self.volumes.remove(name)?;
        let base = name.replacen("vm-", "base-", 1);
        let base = if self.kind.file_based() {
            // `100/vm-100-disk-0.qcow2`: only the file part changes.
            match name.split_once('/') {
                Some((dir, file)) => format!("{dir}/{}", file.replacen("vm-", "base-", 1)),
                None => base,
            }
        } else {
            base
        };
        self.volumes.insert(
            base.clone(),
            Volume {
                name: base.clone(),
                ..vol
            },
        );
        Some(format!("{}:{base}", self.id))
    }

    /// Adds a preset or downloaded file volume (`import/x.qcow2`).
    pub fn add_file(
        &mut self,
        name: &str,
        content: &str,
        size: u64,
        virtual_size: Option<u64>,
        pve: bool,
        now: i64,
    ) {
        let format = name.rsplit('.').next().unwrap_or("raw").to_string();
        self.volumes.insert(
            name.to_string(),
            Volume {
                name: name.to_string(),
                content: content.to_string(),
                format,
                size,
                virtual_size,
                vmid: None,
                ctime: now,
                pve_image: pve,
                text: None,
            },
        );
    }

    /// Whether PVE lists `v` in the storage's content: files in content
    /// directories count only with the extensions PVE looks for (a
    /// half-written `x.qcow2.tmp` in `import/` is not an image).
    pub fn listed(&self, v: &Volume) -> bool {
        let file = v.name.rsplit('/').next().unwrap_or(&v.name);
        let lower = file.to_ascii_lowercase();
        let ends = |exts: &[&str]| exts.iter().any(|e| lower.ends_with(e));
        match v.content.as_str() {
            "import" => {
                file.bytes().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'+' | b'=' | b'_')
                }) && ends(&[".ova", ".ovf", ".qcow2", ".raw", ".vmdk"])
            }
            "iso" => ends(&[".iso", ".img"]),
            "vztmpl" => ends(&[".tar.gz", ".tar.xz", ".tar.zst", ".tar.bz2"]),
            _ => true,
        }
    }

    /// `GET /nodes/{node}/storage` entry.
    pub fn list_json(&self) -> Value {
        let used = self.used();
        json!({
            "storage": self.id,
            "type": self.kind.pve_name(),
            "content": self.content.join(","),
            "active": 1,
            "enabled": 1,
            "shared": u8::from(self.shared),
            "total": self.total,
            "used": used,
            "avail": self.avail(),
            "used_fraction": if self.total == 0 { 0.0 } else { used as f64 / self.total as f64 },
        })
    }

    /// `GET …/storage/{storage}/content` entry.
    pub fn volume_json(&self, v: &Volume) -> Value {
        let mut j = json!({
            "volid": format!("{}:{}", self.id, v.name),
            "content": v.content,
            "format": v.format,
            "size": v.size,
            "ctime": v.ctime,
        });
        if let Some(vmid) = v.vmid {
            j["vmid"] = json!(vmid);
        }
        if v.content == "images" {
            j["used"] = json!(v.size);
        }
        j
    }
}

/// Splits `storage:name`.
pub fn split_volid(volid: &str) -> Option<(&str, &str)> {
    volid
        .split_once(':')
        .filter(|(s, n)| !s.is_empty() && !n.is_empty())
}

/// The vtype PVE derives from a volume name (`images`, `import`, `iso`, …).
pub fn vtype_of(name: &str) -> &'static str {
    if name.starts_with("import/") {
        "import"
    } else if name.starts_with("iso/") {
        "iso"
    } else if name.starts_with("vztmpl/") {
        "vztmpl"
    } else if name.starts_with("snippets/") {
        "snippets"
    } else if name.starts_with("backup/") {
        "backup"
    } else {
        "images"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Size;

    fn storage(kind: StorageKind) -> Storage {
        Storage::from_config(&StorageConfig {
            id: "s".into(),
            kind,
            content: vec!["images".into()],
            size: Size(100 << 30),
            shared: false,
            lock_hold: None,
        })
    }

    #[test]
    fn disk_names_follow_pve() {
        let mut zfs = storage(StorageKind::Zfspool);
        assert_eq!(zfs.alloc_disk(100, 1 << 30, None, 0), "s:vm-100-disk-0");
        assert_eq!(zfs.alloc_disk(100, 1 << 30, None, 0), "s:vm-100-disk-1");
        assert_eq!(zfs.alloc_cloudinit(100, 0), "s:vm-100-cloudinit");
        assert_eq!(zfs.make_base("vm-100-disk-0").unwrap(), "s:base-100-disk-0");
        // The base name blocks reuse of disk-0.
        assert_eq!(zfs.alloc_disk(100, 1, None, 0), "s:vm-100-disk-2");
        let mut dir = storage(StorageKind::Dir);
        assert_eq!(dir.alloc_disk(101, 1, None, 0), "s:101/vm-101-disk-0.qcow2");
        assert_eq!(
            dir.alloc_disk(101, 1, Some("raw"), 0),
            "s:101/vm-101-disk-1.raw"
        );
        assert_eq!(
            dir.make_base("101/vm-101-disk-0.qcow2").unwrap(),
            "s:101/base-101-disk-0.qcow2"
        );
    }

    #[test]
    fn lock_messages_depend_on_sharing() {
        let mut s = storage(StorageKind::Zfspool);
        assert_eq!(
            s.lock_timeout_message(),
            "can't lock file '/var/lock/pve-manager/pve-storage-s' - got timeout"
        );
        s.shared = true;
        assert_eq!(
            s.lock_timeout_message(),
            "cfs-lock 'storage-s' error: got lock request timeout"
        );
    }

    #[test]
    fn vtypes() {
        assert_eq!(vtype_of("import/x.qcow2"), "import");
        assert_eq!(vtype_of("iso/x.img"), "iso");
        assert_eq!(vtype_of("vm-100-disk-0"), "images");
    }
}
