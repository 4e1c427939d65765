//! PVE worker tasks: UPIDs in PVE's exact format, the task records behind
//! `GET /nodes/{node}/tasks…`, and their JSON shapes (NOTES §6).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The parts of a UPID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upid {
    pub node: String,
    pub pid: u32,
    pub pstart: u64,
    pub starttime: i64,
    pub kind: String,
    pub id: String,
    /// `root@pam` or `root@pam!tokenid`.
    pub user: String,
}

impl Upid {
    /// `UPID:<node>:<pid %08X>:<pstart %08X>:<starttime %08X>:<type>:<id>:<user>:`
    pub fn encode(&self) -> String {
        format!(
            "UPID:{}:{:08X}:{:08X}:{:08X}:{}:{}:{}:",
            self.node, self.pid, self.pstart, self.starttime, self.kind, self.id, self.user
        )
    }

    /// PVE's `upid_decode` regex, by hand.
    pub fn decode(s: &str) -> Option<Upid> {
        let rest = s.strip_prefix("UPID:")?.strip_suffix(':')?;
        let parts: Vec<&str> = rest.split(':').collect();
        if parts.len() != 7 {
            return None;
        }
        let hex = |p: &str, lens: &[usize]| -> Option<u64> {
            (lens.contains(&p.len()) && p.bytes().all(|c| c.is_ascii_hexdigit()))
                .then(|| u64::from_str_radix(p, 16).ok())
                .flatten()
        };
        let node = parts[0];
        if !homestak_pve::schema::formats::is_node_name(node) {
            return None;
        }
        let clean = |p: &str| !p.chars().any(|c| c.is_whitespace() || c == '/');
        if parts[4].is_empty()
            || !clean(parts[4])
            || !clean(parts[5])
            || parts[6].is_empty()
            || !clean(parts[6])
        {
            return None;
        }
        Some(Upid {
            node: node.to_string(),
            pid: u32::try_from(hex(parts[1], &[8])?).ok()?,
            pstart: hex(parts[2], &[8, 9])?,
            starttime: i64::try_from(hex(parts[3], &[8])?).ok()?,
            kind: parts[4].to_string(),
            id: parts[5].to_string(),
            user: parts[6].to_string(),
        })
    }
}

/// PVE's `encode_text` for task ids (download-url file names): `:`, `%`,
/// control characters and every non-ASCII byte become `%XX`.
pub fn encode_text(s: &str) -> String {
    const ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b':').add(b'%');
    percent_encoding::utf8_percent_encode(s, ESCAPED).to_string()
}

/// One task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Task {
    pub upid: Upid,
    /// `None` while running; `OK`, `WARNINGS: n` or the error once stopped.
    pub exitstatus: Option<String>,
    pub endtime: Option<i64>,
    pub log: Vec<String>,
}

impl Task {
    pub fn running(&self) -> bool {
        self.exitstatus.is_none()
    }

    /// `GET …/tasks/{upid}/status`: no `endtime`; `exitstatus` only when
    /// stopped; `tokenid` split off for token tasks.
    pub fn status_json(&self) -> Value {
        let mut v = self.identity_json();
        v["status"] = json!(if self.running() { "running" } else { "stopped" });
        self.add_tokenid(&mut v);
        if let Some(e) = &self.exitstatus {
            v["exitstatus"] = json!(e);
        }
        v
    }

    /// An entry of `GET /nodes/{node}/tasks`: `status` is the exit status,
    /// `endtime` is set once stopped.
    pub fn list_json(&self) -> Value {
        let mut v = self.identity_json();
        self.add_tokenid(&mut v);
        if let Some(e) = &self.exitstatus {
            v["status"] = json!(e);
        }
        if let Some(t) = self.endtime {
            v["endtime"] = json!(t);
        }
        v
    }

    /// The fields both task views share, in PVE's order; `user` without
    /// the token part.
    fn identity_json(&self) -> Value {
        let u = &self.upid;
        json!({
            "upid": u.encode(),
            "node": u.node,
            "pid": u.pid,
            "pstart": u.pstart,
            "starttime": u.starttime,
            "type": u.kind,
            "id": u.id,
            "user": split_token(&u.user).0,
        })
    }

    /// `tokenid` for a task a token started.
    fn add_tokenid(&self, v: &mut Value) {
        if let Some(t) = split_token(&self.upid.user).1 {
            v["tokenid"] = json!(t);
        }
    }

    /// Log lines with the final `TASK OK` / `TASK ERROR: …` once stopped.
    pub fn log_lines(&self) -> Vec<String> {
        let mut lines = self.log.clone();
        match self.exitstatus.as_deref() {
            None => {}
            Some("OK") => lines.push("TASK OK".into()),
            Some(w) if w.starts_with("WARNINGS") => lines.push(format!("TASK {w}")),
            Some(e) => lines.push(format!("TASK ERROR: {e}")),
        }
        lines
    }
}

/// `root@pam!t` → (`root@pam`, Some(`t`)).
pub fn split_token(user: &str) -> (&str, Option<&str>) {
    match user.split_once('!') {
        Some((u, t)) => (u, Some(t)),
        None => (user, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upid_round_trips_in_pve_format() {
        let real = "UPID:pve:00000A72:0000C9CC:5FBE5E5C:qmcreate:100:root@pam:";
        let u = Upid::decode(real).unwrap();
        assert_eq!(u.pid, 0xA72);
        assert_eq!(u.kind, "qmcreate");
        assert_eq!(u.encode(), real);
        let token = "UPID:pve:00001234:00ABCDEF:67000000:qmcreate:100:root@pam!t:";
        assert_eq!(Upid::decode(token).unwrap().user, "root@pam!t");
        let empty_id = "UPID:pve:00000798:000096A1:5FBE5DD9:imgdel::root@pam:";
        assert_eq!(Upid::decode(empty_id).unwrap().id, "");
        for bad in [
            "UPID:pve:1:2:3:x:y:z:",
            "pve:00000A72",
            "UPID:pve:00000A72:0000C9CC:5FBE5E5C:qmcreate:100:root@pam",
        ] {
            assert!(Upid::decode(bad).is_none(), "{bad}");
        }
        // proxmoxer requires exactly nine `:`-separated fields before the end.
        assert_eq!(real.split(':').count(), 9);
    }

    #[test]
    fn status_json_has_pve_shape() {
        let mut t = Task {
            upid: Upid {
                node: "pve".into(),
                pid: 1,
                pstart: 2,
                starttime: 3,
                kind: "qmstart".into(),
                id: "100".into(),
                user: "root@pam!homestak".into(),
            },
            exitstatus: None,
            endtime: None,
            log: vec![],
        };
        let v = t.status_json();
        assert_eq!(v["status"], "running");
        assert_eq!(v["user"], "root@pam");
        assert_eq!(v["tokenid"], "homestak");
        assert!(v.get("exitstatus").is_none());
        t.exitstatus = Some("OK".into());
        t.endtime = Some(9);
        let v = t.status_json();
        assert_eq!(v["exitstatus"], "OK");
        assert!(v.get("endtime").is_none());
        assert_eq!(t.list_json()["endtime"], 9);
        assert_eq!(t.log_lines().last().unwrap(), "TASK OK");
    }

    #[test]
    fn encode_text_escapes_colons() {
        assert_eq!(encode_text("a:b%c.qcow2"), "a%3Ab%25c.qcow2");
        assert_eq!(encode_text("é\t\x7f ~"), "%C3%A9%09%7F ~");
    }
}
