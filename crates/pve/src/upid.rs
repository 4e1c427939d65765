//! PVE task ids (UPIDs).
//!
//! `UPID:<node>:<pid %08X>:<pstart %08X>:<starttime %08X>:<type>:<id>:<user>:`
//! with a trailing colon (pve-common `upid_decode`). `pstart` may have nine
//! hex digits, `id` may be empty, and `user` carries `!tokenid` for tasks a
//! token started. The original text is kept verbatim: it is the key PVE
//! knows the task by, so it must round-trip byte for byte.

use std::fmt;
use std::str::FromStr;

use homestak_base::id::VmId;

/// A parsed UPID.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Upid {
    raw: String,
    node: String,
    pid: u32,
    pstart: u64,
    starttime: u32,
    kind: String,
    id: String,
    user: String,
}

impl Upid {
    /// The node that runs the task; its status lives under `/nodes/<node>/tasks`.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The worker process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The worker's process start time (clock ticks since boot).
    pub fn pstart(&self) -> u64 {
        self.pstart
    }

    /// Task start, seconds since the epoch.
    pub fn starttime(&self) -> u32 {
        self.starttime
    }

    /// The task type (`qmcreate`, `qmstart`, `download`, …).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The task's object id (a vmid for `qm*` tasks; may be empty).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The user that started the task, including `!tokenid` for tokens.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The token name, when a token started the task.
    pub fn tokenid(&self) -> Option<&str> {
        self.user.split_once('!').map(|(_, t)| t)
    }

    /// The vmid, when the id is one (`qm*` and `resize` tasks). For
    /// `qmclone` it is the *source* vmid, as PVE records it.
    pub fn vmid(&self) -> Option<VmId> {
        self.id.parse().ok()
    }

    /// The UPID text exactly as PVE issued it.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Upid({})", self.raw)
    }
}

/// A string is not a UPID.
#[derive(Debug, thiserror::Error)]
#[error("invalid PVE task id {text:?}: {problem}")]
pub struct ParseError {
    text: String,
    problem: &'static str,
}

fn hex_field(field: &str, min: usize, max: usize) -> Option<u64> {
    if field.len() < min || field.len() > max || !field.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(field, 16).ok()
}

/// A field of `[^:\s/]` characters (the decoder's class for type/id/user).
fn plain_field(field: &str) -> bool {
    !field
        .chars()
        .any(|c| c == ':' || c == '/' || c.is_whitespace())
}

fn valid_node(node: &str) -> bool {
    let bytes = node.as_bytes();
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

impl FromStr for Upid {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |problem| ParseError {
            text: s.to_string(),
            problem,
        };
        let body = s
            .strip_prefix("UPID:")
            .ok_or_else(|| err("missing 'UPID:' prefix"))?;
        let body = body
            .strip_suffix(':')
            .ok_or_else(|| err("missing trailing ':'"))?;
        let fields: Vec<&str> = body.split(':').collect();
        let [node, pid, pstart, starttime, kind, id, user] = fields.as_slice() else {
            return Err(err("expected 8 ':'-separated fields after 'UPID'"));
        };
        if !valid_node(node) {
            return Err(err("bad node name"));
        }
        let pid = hex_field(pid, 8, 8).ok_or_else(|| err("pid is not 8 hex digits"))?;
        let pstart = hex_field(pstart, 8, 9).ok_or_else(|| err("pstart is not 8-9 hex digits"))?;
        let starttime =
            hex_field(starttime, 8, 8).ok_or_else(|| err("starttime is not 8 hex digits"))?;
        if kind.is_empty() || !plain_field(kind) {
            return Err(err("bad task type"));
        }
        if !plain_field(id) {
            return Err(err("bad task id"));
        }
        if user.is_empty() || !plain_field(user) {
            return Err(err("bad user"));
        }
        Ok(Upid {
            raw: s.to_string(),
            node: node.to_string(),
            // 8 hex digits always fit in u32.
            pid: pid as u32,
            pstart,
            starttime: starttime as u32,
            kind: kind.to_string(),
            id: id.to_string(),
            user: user.to_string(),
        })
    }
}

impl serde::Serialize for Upid {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.raw)
    }
}

impl<'de> serde::Deserialize<'de> for Upid {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_recorded_upid() {
        let text = "UPID:pve:00000A72:0000C9CC:5FBE5E5C:qmcreate:100:root@pam:";
        let upid: Upid = text.parse().unwrap();
        assert_eq!(upid.node(), "pve");
        assert_eq!(upid.pid(), 0xA72);
        assert_eq!(upid.pstart(), 0xC9CC);
        assert_eq!(upid.starttime(), 0x5FBE5E5C);
        assert_eq!(upid.kind(), "qmcreate");
        assert_eq!(upid.id(), "100");
        assert_eq!(upid.vmid(), VmId::new(100).ok());
        assert_eq!(upid.user(), "root@pam");
        assert_eq!(upid.tokenid(), None);
        assert_eq!(upid.to_string(), text);
    }

    #[test]
    fn token_user_nine_digit_pstart_and_empty_id() {
        let text = "UPID:proxmox-noris:00011DE0:10022900B:645CE78E:aptupdate::root@pam!ci:";
        let upid: Upid = text.parse().unwrap();
        assert_eq!(upid.node(), "proxmox-noris");
        assert_eq!(upid.pstart(), 0x1_0022_900B);
        assert_eq!(upid.id(), "");
        assert_eq!(upid.vmid(), None);
        assert_eq!(upid.user(), "root@pam!ci");
        assert_eq!(upid.tokenid(), Some("ci"));
    }

    #[test]
    fn non_vmid_ids_are_kept() {
        let upid: Upid = "UPID:pve:00000798:000096A1:5FBE5DD9:imgdel:100@local:root@pam:"
            .parse()
            .unwrap();
        assert_eq!(upid.id(), "100@local");
        assert_eq!(upid.vmid(), None);
    }

    #[test]
    fn malformed_upids_are_refused() {
        for bad in [
            "",
            "UPID:pve:00000A72:0000C9CC:5FBE5E5C:qmcreate:100:root@pam",
            "XPID:pve:00000A72:0000C9CC:5FBE5E5C:qmcreate:100:root@pam:",
            "UPID:pve:A72:0000C9CC:5FBE5E5C:qmcreate:100:root@pam:",
            "UPID:pve:00000A72:0000C9CC0A:5FBE5E5C:qmcreate:100:root@pam:",
            "UPID:-pve:00000A72:0000C9CC:5FBE5E5C:qmcreate:100:root@pam:",
            "UPID:pve:00000A72:0000C9CC:5FBE5E5C::100:root@pam:",
            "UPID:pve:00000A72:0000C9CC:5FBE5E5C:qmcreate:100::",
            "UPID:pve:00000A72:0000C9CC:5FBE5E5C:qm create:100:root@pam:",
            "UPID:pve:00000A72:0000C9CC:5FBE5E5C:qmcreate:1/0:root@pam:",
            "UPID:pve:0000ZZ72:0000C9CC:5FBE5E5C:qmcreate:100:root@pam:",
            "UPID:pve:00000A72:0000C9CC:5FBE5E5C:qmcreate:100:root@pam:extra:",
        ] {
            assert!(bad.parse::<Upid>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn serde_round_trip_keeps_text() {
        let text = "\"UPID:pve:00000A72:0000c9cc:5FBE5E5C:qmstart:100:root@pam!t:\"";
        let upid: Upid = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&upid).unwrap(), text);
        assert!(serde_json::from_str::<Upid>("\"nope\"").is_err());
    }
}
