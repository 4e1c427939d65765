//! Ownership marks: how a VM proves "homestak made me, for this manifest
//! node, at this vmid".
//!
//! A VM is ours only when all of these hold:
//! - it carries the PVE tag [`TAG`] (visible in the bulk
//!   `/cluster/resources` read, so candidates are found without reading
//!   every config), plus the keyed tag [`owner_tag`];
//! - its description (PVE "notes") holds the structured marks: manifest,
//!   node, image, spec hash, the vmid they were written for, and a keyed
//!   MAC over (vmid, manifest, node) under the site's [`OwnerKey`];
//! - the vmid in the marks is the VM's own, and the VM is not a template.
//!
//! PVE copies `tags` and `description` on clone and on restore to a new
//! vmid, and anyone with `VM.Config.Options` can write them. The vmid
//! binding makes a copy foreign ([`Claim::Copied`]); the MAC makes
//! hand-written marks foreign ([`Claim::Forged`]). Only a [`Claim::Owned`]
//! VM (or a [`Claim::Legacy`] one the store vouches for) is ever changed or
//! deleted.

use std::collections::BTreeSet;
use std::fmt;

use homestak_base::digest;
use homestak_base::id::{NodeName, VmId};
use homestak_base::secret::Secret;
use serde::{Deserialize, Serialize};

/// The tag every homestak-owned VM carries.
pub const TAG: &str = "homestak";

/// The prefix of the keyed tag (`homestak-<16 hex>`).
const TAG_PREFIX: &str = "homestak-";

const HEADER: &str =
    "Managed by homestak: changes made here are overwritten; edit the manifest instead.";
const PREFIX: &str = "homestak.";
/// Version of the MAC input; a new layout gets a new version.
const MAC_VERSION: &str = "homestak-owner/v1";
/// The shortest key accepted: 32 characters (`openssl rand -hex 32` gives 64).
pub const MIN_KEY_LEN: usize = 32;

/// The site's ownership key (`ownership_key` in `secrets.yaml`). Never
/// printed.
#[derive(Clone)]
pub struct OwnerKey(Secret);

impl fmt::Debug for OwnerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OwnerKey(<redacted>)")
    }
}

/// An `ownership_key` too short to be a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "secrets.yaml ownership_key has {len} characters; it needs at least {MIN_KEY_LEN} \
     (make one with `openssl rand -hex 32`)"
)]
pub struct WeakOwnerKey {
    pub len: usize,
}

impl OwnerKey {
    /// The key from its `secrets.yaml` value.
    pub fn new(secret: &Secret) -> Result<OwnerKey, WeakOwnerKey> {
        let len = secret.expose().trim().chars().count();
        if len < MIN_KEY_LEN {
            return Err(WeakOwnerKey { len });
        }
        Ok(OwnerKey(Secret::new(secret.expose().trim())))
    }

    /// The MAC input: unambiguous whatever the names hold.
    fn input(vmid: VmId, manifest: &str, node: &NodeName) -> Vec<u8> {
        serde_json::to_vec(&(MAC_VERSION, vmid.get(), manifest, node.as_str())).unwrap_or_default()
    }

    fn mac(&self, vmid: VmId, manifest: &str, node: &NodeName) -> [u8; 32] {
        digest::hmac_sha256(
            self.0.expose().as_bytes(),
            &Self::input(vmid, manifest, node),
        )
    }

    fn verify(&self, vmid: VmId, manifest: &str, node: &NodeName, mac: &[u8]) -> bool {
        digest::hmac_sha256_verify(
            self.0.expose().as_bytes(),
            &Self::input(vmid, manifest, node),
            mac,
        )
    }
}

/// The keyed tag of the VM at `vmid` for `manifest`/`node`: `homestak-`
/// and the first 8 bytes of its MAC. Visible in `/cluster/resources`, so
/// a bulk read tells our VMs from copies without reading configs.
pub fn owner_tag(key: &OwnerKey, vmid: VmId, manifest: &str, node: &NodeName) -> String {
    let mac = key.mac(vmid, manifest, node);
    format!("{TAG_PREFIX}{}", digest::hex(&mac[..8]))
}

/// True for tags homestak manages (`homestak`, `homestak-<mac>`).
pub fn is_managed_tag(tag: &str) -> bool {
    tag == TAG
        || tag
            .strip_prefix(TAG_PREFIX)
            .is_some_and(|rest| rest.len() == 16 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The structured part of a description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marks {
    pub manifest: String,
    pub node: NodeName,
    pub image: String,
    pub spec_hash: String,
}

/// What a description says about the vmid binding.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Binding {
    vmid: Option<VmId>,
    mac: Vec<u8>,
}

impl Marks {
    /// The description text to store in PVE for the VM at `vmid`.
    pub fn to_description(&self, key: &OwnerKey, vmid: VmId) -> String {
        let mac = key.mac(vmid, &self.manifest, &self.node);
        format!(
            "{HEADER}\n{PREFIX}manifest: {}\n{PREFIX}node: {}\n{PREFIX}image: {}\n{PREFIX}spec: {}\n\
             {PREFIX}vmid: {vmid}\n{PREFIX}owner: v1:{}\n",
            self.manifest,
            self.node,
            self.image,
            self.spec_hash,
            digest::hex(&mac)
        )
    }

    /// Reads marks and their binding from a description; `None` unless
    /// every content field is present. Other text around them is ignored.
    fn parse(description: &str) -> Option<(Marks, Option<Binding>)> {
        let mut manifest = None;
        let mut node = None;
        let mut image = None;
        let mut spec_hash = None;
        let mut vmid = None;
        let mut owner = None;
        for line in description.lines() {
            let Some(rest) = line.trim().strip_prefix(PREFIX) else {
                continue;
            };
            let Some((key, value)) = rest.split_once(':') else {
                continue;
            };
            let value = Some(value.trim().to_string());
            match key.trim() {
                "manifest" => manifest = value,
                "node" => node = value,
                "image" => image = value,
                "spec" => spec_hash = value,
                "vmid" => vmid = value,
                "owner" => owner = value,
                _ => {}
            }
        }
        let marks = Marks {
            manifest: manifest.filter(|s| !s.is_empty())?,
            // A node no manifest could name marks nothing of ours.
            node: node.and_then(|s| NodeName::new(s).ok())?,
            image: image?,
            spec_hash: spec_hash?,
        };
        let binding = match (vmid, owner) {
            (None, None) => None,
            (vmid, owner) => Some(Binding {
                // A binding that does not parse binds to nothing: it can
                // never verify, and it is not a legacy (unbound) mark.
                vmid: vmid
                    .and_then(|v| v.parse::<u32>().ok())
                    .and_then(|v| VmId::new(i128::from(v)).ok()),
                mac: owner
                    .as_deref()
                    .and_then(|o| o.strip_prefix("v1:"))
                    .and_then(digest::parse_hex::<32>)
                    .map(|m| m.to_vec())
                    .unwrap_or_default(),
            }),
        };
        Some((marks, binding))
    }
}

/// What a VM's tags and description claim, checked against its vmid and
/// the site's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "claim", rename_all = "snake_case")]
pub enum Claim {
    /// Marks written for this vmid under this site's key: ours.
    Owned(Marks),
    /// Marks of an older homestak, bound to no vmid. Ours only where the
    /// store remembers this vmid for the node (see [`Claim::vouch`]); the
    /// next update rewrites them keyed.
    Legacy(Marks),
    /// Legacy marks the store does not vouch for: not ours.
    Unproven(Marks),
    /// Valid marks written for another vmid: a clone, or a backup restored
    /// to a new vmid. Not ours.
    Copied { marks: Marks, written_for: VmId },
    /// Marks whose MAC does not verify under this site's key (written by
    /// hand, or by another site). Not ours.
    Forged(Marks),
    /// One of ours turned into a template; linked clones may hang off it.
    /// Not ours to change or delete.
    Template(Marks),
}

impl Claim {
    /// Reads the claim of the VM at `vmid`; `None` for a VM without the
    /// homestak tag or without marks (simply someone else's).
    pub fn read(
        key: &OwnerKey,
        vmid: VmId,
        description: Option<&str>,
        tags: &BTreeSet<String>,
        template: bool,
    ) -> Option<Claim> {
        if !tags.contains(TAG) {
            return None;
        }
        let (marks, binding) = Marks::parse(description?)?;
        let claim = match binding {
            None => Claim::Legacy(marks),
            Some(Binding {
                vmid: Some(bound),
                mac,
            }) if key.verify(bound, &marks.manifest, &marks.node, &mac) => {
                if bound == vmid {
                    Claim::Owned(marks)
                } else {
                    Claim::Copied {
                        marks,
                        written_for: bound,
                    }
                }
            }
            Some(_) => Claim::Forged(marks),
        };
        Some(match claim {
            Claim::Owned(marks) | Claim::Legacy(marks) if template => Claim::Template(marks),
            other => other,
        })
    }

    /// Settles a legacy claim: kept when the store remembers `vmid` for the
    /// node (`remembered` gives the node's remembered vmid), else unproven.
    pub fn vouch(self, vmid: VmId, remembered: impl Fn(&NodeName) -> Option<VmId>) -> Claim {
        match self {
            Claim::Legacy(marks) if remembered(&marks.node) != Some(vmid) => Claim::Unproven(marks),
            other => other,
        }
    }

    /// The marks, whatever the verdict.
    pub fn marks(&self) -> &Marks {
        match self {
            Claim::Owned(m)
            | Claim::Legacy(m)
            | Claim::Unproven(m)
            | Claim::Forged(m)
            | Claim::Template(m)
            | Claim::Copied { marks: m, .. } => m,
        }
    }

    /// The marks of a VM that is ours (owned, or legacy vouched for).
    pub fn owned(&self) -> Option<&Marks> {
        match self {
            Claim::Owned(m) | Claim::Legacy(m) => Some(m),
            _ => None,
        }
    }

    /// Why a VM with marks is not ours; `None` when it is.
    pub fn why_foreign(&self) -> Option<String> {
        Some(match self {
            Claim::Owned(_) | Claim::Legacy(_) => return None,
            Claim::Unproven(_) => "carries marks of an older homestak that the store does not \
                 vouch for (restore the store, or delete the VM by hand)"
                .to_string(),
            Claim::Copied { written_for, .. } => format!(
                "carries marks written for vmid {written_for}: a clone or a restored backup"
            ),
            Claim::Forged(_) => "carries homestak marks that do not verify under this site's \
                 ownership_key (written by hand, or by another site)"
                .to_string(),
            Claim::Template(_) => "is a template made from a homestak VM".to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> OwnerKey {
        OwnerKey::new(&Secret::new("0123456789abcdef0123456789abcdef")).unwrap()
    }

    fn other_key() -> OwnerKey {
        OwnerKey::new(&Secret::new("fedcba9876543210fedcba9876543210")).unwrap()
    }

    fn marks() -> Marks {
        Marks {
            manifest: "n2-quick".into(),
            node: NodeName::new("edge").unwrap(),
            image: "debian-12".into(),
            spec_hash: "sha256:0011".into(),
        }
    }

    fn vmid(v: i128) -> VmId {
        VmId::new(v).unwrap()
    }

    fn tagged() -> BTreeSet<String> {
        BTreeSet::from([TAG.to_string()])
    }

    fn read(description: &str, at: i128, template: bool) -> Option<Claim> {
        Claim::read(&key(), vmid(at), Some(description), &tagged(), template)
    }

    #[test]
    fn marks_written_for_a_vmid_are_owned_there_only() {
        let text = marks().to_description(&key(), vmid(101));
        assert_eq!(read(&text, 101, false), Some(Claim::Owned(marks())));
        // The same notes on a clone at 105.
        assert_eq!(
            read(&text, 105, false),
            Some(Claim::Copied {
                marks: marks(),
                written_for: vmid(101)
            })
        );
        assert_eq!(read(&text, 101, true), Some(Claim::Template(marks())));
        assert!(read(&text, 105, false).unwrap().owned().is_none());
    }

    #[test]
    fn marks_under_another_key_or_edited_are_forged() {
        let text = marks().to_description(&other_key(), vmid(101));
        assert_eq!(read(&text, 101, false), Some(Claim::Forged(marks())));
        // Rebinding by hand: the vmid line changed, the MAC did not.
        let text = marks()
            .to_description(&key(), vmid(101))
            .replace("homestak.vmid: 101", "homestak.vmid: 105");
        assert_eq!(read(&text, 105, false), Some(Claim::Forged(marks())));
        // A node renamed by hand.
        let text = marks()
            .to_description(&key(), vmid(101))
            .replace("homestak.node: edge", "homestak.node: core");
        assert!(matches!(read(&text, 101, false), Some(Claim::Forged(_))));
        // A MAC line alone, or garbage in it.
        let text = marks()
            .to_description(&key(), vmid(101))
            .replace("homestak.vmid: 101\n", "");
        assert!(matches!(read(&text, 101, false), Some(Claim::Forged(_))));
        let text = marks()
            .to_description(&key(), vmid(101))
            .replace("owner: v1:", "owner: v1:zz");
        assert!(matches!(read(&text, 101, false), Some(Claim::Forged(_))));
    }

    #[test]
    fn legacy_marks_are_ours_only_where_the_store_vouches() {
        let legacy = format!(
            "{HEADER}\nhomestak.manifest: n2-quick\nhomestak.node: edge\nhomestak.image: debian-12\nhomestak.spec: sha256:0011\n"
        );
        let claim = read(&legacy, 101, false).unwrap();
        assert_eq!(claim, Claim::Legacy(marks()));
        let at_101 = |_: &NodeName| Some(vmid(101));
        assert_eq!(
            claim.clone().vouch(vmid(101), at_101),
            Claim::Legacy(marks())
        );
        assert_eq!(
            claim.clone().vouch(vmid(105), at_101),
            Claim::Unproven(marks())
        );
        assert_eq!(claim.vouch(vmid(101), |_| None), Claim::Unproven(marks()));
    }

    #[test]
    fn no_tag_or_no_marks_is_no_claim() {
        let text = marks().to_description(&key(), vmid(101));
        assert_eq!(
            Claim::read(&key(), vmid(101), Some(&text), &BTreeSet::new(), false),
            None
        );
        assert_eq!(read("", 101, false), None);
        assert_eq!(read("homestak.manifest: x\n", 101, false), None);
        let empty_node = text.replace("homestak.node: edge", "homestak.node:");
        assert_eq!(read(&empty_node, 101, false), None);
        assert_eq!(Claim::read(&key(), vmid(101), None, &tagged(), false), None);
    }

    #[test]
    fn surrounding_notes_are_ignored() {
        let text = format!(
            "my own note\n\n{}\nmore",
            marks().to_description(&key(), vmid(107))
        );
        assert_eq!(read(&text, 107, false), Some(Claim::Owned(marks())));
    }

    #[test]
    fn owner_tags_are_keyed_per_vmid_and_recognised() {
        let node = NodeName::new("edge").unwrap();
        let a = owner_tag(&key(), vmid(101), "m", &node);
        assert!(is_managed_tag(&a) && a.len() == TAG_PREFIX.len() + 16);
        assert_ne!(a, owner_tag(&key(), vmid(102), "m", &node));
        assert_ne!(a, owner_tag(&other_key(), vmid(101), "m", &node));
        assert_ne!(a, owner_tag(&key(), vmid(101), "n", &node));
        assert!(is_managed_tag(TAG));
        assert!(!is_managed_tag("homestak-x"));
        assert!(!is_managed_tag("prod"));
    }

    #[test]
    fn short_keys_are_refused_and_keys_never_print() {
        assert_eq!(
            OwnerKey::new(&Secret::new("short")).unwrap_err(),
            WeakOwnerKey { len: 5 }
        );
        let k = key();
        assert!(!format!("{k:?}").contains("0123"));
    }
}
